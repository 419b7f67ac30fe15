//! Group commit: concurrent requests of one kind (submits, completions) are
//! folded into one Raft entry, so throughput is not one fsync per task.
//!
//! A batch is taken from the queue only when an in-flight slot is free; while
//! all slots are busy, requests pile up and the next entry carries them all,
//! up to a number of items and about [`MAX_ENTRY_BYTES`] (a request is never
//! split here: callers keep each request under that size).

use std::sync::Arc;

use tidal_core::command::{Command, Completion, Envelope, Finished, Rejection, Response};
#[cfg(doc)]
use tidal_core::lifecycle::MAX_CHECKPOINT_BYTES;
use tidal_core::model::{FencingToken, TaskId};
use tidal_store::Raft;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::clock::now_ms;
use crate::error::{Result, ServerError};

type Reply<O> = oneshot::Sender<Result<(Vec<O>, u64)>>;

/// About how large one entry may grow by folding requests together.
/// openraft gives each AppendEntries the Raft heartbeat interval to finish
/// (100 ms by default), so entries, like replication messages
/// (`raft::network`), are kept to about a megabyte.
pub const MAX_ENTRY_BYTES: usize = 1 << 20;

struct Job<I, O> {
    items: Vec<I>,
    bytes: usize,
    reply: Reply<O>,
}

/// A queue of requests that become one command per batch.
/// Every proposal holds this for reading while it writes; a leadership
/// transfer holds it for writing, so no new entry refreshes the followers'
/// leader lease while the target campaigns.
pub type WriteGate = Arc<tokio::sync::RwLock<()>>;

/// One kind of request that is batched: how a batch of its items becomes
/// one command, and how the command's response splits into per-item results.
pub trait Fold: Send + Sync + 'static {
    type Item: Send + 'static;
    type Out: Send + 'static;
    /// The command of a batch.
    fn command(&self, items: Vec<Self::Item>) -> Command;
    /// The per-item results in the batch's response, in item order; `None`
    /// if the response is of another kind.
    fn results(&self, response: Response) -> Option<Vec<Self::Out>>;
    /// An item's rough encoded size.
    fn size(item: &Self::Item) -> usize;
    /// Whether a request whose first item is `next` may share an entry with
    /// one whose first item is `first` (all items of one request share an
    /// entry); one that may not waits for the next entry.
    fn joins(_first: &Self::Item, _next: &Self::Item) -> bool {
        true
    }
}

/// Agents' start reports: one `StartedBatch`.
pub struct StartsFold;

impl Fold for StartsFold {
    type Item = (TaskId, u64);
    type Out = Result<(), Rejection>;

    fn command(&self, items: Vec<(TaskId, u64)>) -> Command {
        Command::StartedBatch(items)
    }

    fn results(&self, response: Response) -> Option<Vec<Self::Out>> {
        match response {
            Response::StartedBatch(items) => Some(items),
            _ => None,
        }
    }

    fn size(_: &(TaskId, u64)) -> usize {
        16
    }
}

/// An agent's completion report, in the form the cluster's format version
/// takes: a `Complete` item below version 4, a `Finished` one (which says
/// whether the attempt timed out) from it on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    Complete(Completion),
    Finished(Finished),
}

impl Report {
    fn into_finished(self) -> Finished {
        match self {
            Report::Finished(f) => f,
            Report::Complete(c) => Finished {
                task: c.task,
                token: c.token,
                outcome: c.outcome,
                timed_out: false,
            },
        }
    }

    fn into_completion(self) -> Completion {
        match self {
            Report::Complete(c) => c,
            Report::Finished(f) => Completion {
                task: f.task,
                token: f.token,
                outcome: f.outcome,
            },
        }
    }
}

/// Agents' completion reports: one `Complete`, or from cluster format
/// version 4 one `Finished` (the two kinds never share an entry).
pub struct CompletionsFold;

impl Fold for CompletionsFold {
    type Item = Report;
    type Out = Result<(), Rejection>;

    fn command(&self, items: Vec<Report>) -> Command {
        match items.first() {
            Some(Report::Finished(_)) => {
                Command::Finished(items.into_iter().map(Report::into_finished).collect())
            }
            _ => Command::Complete(items.into_iter().map(Report::into_completion).collect()),
        }
    }

    fn results(&self, response: Response) -> Option<Vec<Self::Out>> {
        match response {
            Response::Completed(items) => Some(items),
            _ => None,
        }
    }

    fn size(item: &Report) -> usize {
        match item {
            Report::Complete(c) => c.approx_bytes(),
            Report::Finished(f) => f.approx_bytes(),
        }
    }

    fn joins(first: &Report, next: &Report) -> bool {
        matches!(
            (first, next),
            (Report::Complete(_), Report::Complete(_)) | (Report::Finished(_), Report::Finished(_))
        )
    }
}

/// The most checkpoints one entry carries: at most
/// [`MAX_CHECKPOINT_BYTES`] each, they fill an entry of about
/// [`MAX_ENTRY_BYTES`] with fewer.
pub const CHECKPOINTS_PER_ENTRY: usize = 16;

/// Agents' checkpoints (the latest of a task, from the token that ran it):
/// one `Checkpoint`, from cluster format version 4.
pub struct CheckpointsFold;

impl Fold for CheckpointsFold {
    type Item = (TaskId, FencingToken, Vec<u8>);
    type Out = Result<(), Rejection>;

    fn command(&self, items: Vec<Self::Item>) -> Command {
        Command::Checkpoint(items)
    }

    fn results(&self, response: Response) -> Option<Vec<Self::Out>> {
        match response {
            Response::Items(items) => Some(items),
            _ => None,
        }
    }

    fn size((_, _, data): &Self::Item) -> usize {
        24 + data.len()
    }
}

pub struct Batcher<F: Fold> {
    tx: mpsc::UnboundedSender<Job<F::Item, F::Out>>,
}

impl<F: Fold> Clone for Batcher<F> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
        }
    }
}

impl<F: Fold> Batcher<F> {
    /// Starts the batching loop; `fold` makes each batch's command and splits its response.
    pub fn spawn(
        raft: Raft,
        gate: WriteGate,
        max_items: usize,
        max_in_flight: usize,
        fold: F,
    ) -> Self {
        let fold = Arc::new(fold);
        let (tx, mut rx) = mpsc::unbounded_channel::<Job<F::Item, F::Out>>();
        let slots = Arc::new(Semaphore::new(max_in_flight));
        tokio::spawn(async move {
            // A job that did not fit in the previous entry goes first.
            let mut held: Option<Job<F::Item, F::Out>> = None;
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let first = match held.take() {
                    Some(job) => job,
                    None => match rx.recv().await {
                        Some(job) => job,
                        None => return,
                    },
                };
                let mut count = first.items.len();
                let mut bytes = first.bytes;
                let mut jobs = vec![first];
                while count < max_items && bytes < MAX_ENTRY_BYTES {
                    match rx.try_recv() {
                        Ok(job)
                            if bytes + job.bytes > MAX_ENTRY_BYTES
                                || !joins::<F>(&jobs[0].items, &job.items) =>
                        {
                            held = Some(job);
                            break;
                        }
                        Ok(job) => {
                            count += job.items.len();
                            bytes += job.bytes;
                            jobs.push(job);
                        }
                        Err(_) => break,
                    }
                }
                let (raft, gate, fold) = (raft.clone(), gate.clone(), fold.clone());
                tokio::spawn(async move {
                    let _open = gate.read().await;
                    commit(&raft, jobs, count, &*fold).await;
                    drop(permit);
                });
            }
        });
        Batcher { tx }
    }

    /// Queues `items` for the next entry and waits for their results and the
    /// entry's log index.
    pub async fn call(&self, items: Vec<F::Item>) -> Result<(Vec<F::Out>, u64)> {
        let (reply, rx) = oneshot::channel();
        let bytes = items.iter().map(F::size).sum();
        self.tx
            .send(Job {
                items,
                bytes,
                reply,
            })
            .map_err(|_| ServerError::Unavailable("server is shutting down".into()))?;
        rx.await
            .map_err(|_| ServerError::Unavailable("server is shutting down".into()))?
    }
}

/// Whether a job of `next` may join a batch that starts with `first`.
fn joins<F: Fold>(first: &[F::Item], next: &[F::Item]) -> bool {
    match (first.first(), next.first()) {
        (Some(a), Some(b)) => F::joins(a, b),
        _ => true,
    }
}

async fn commit<F: Fold>(raft: &Raft, jobs: Vec<Job<F::Item, F::Out>>, count: usize, fold: &F) {
    let mut all = Vec::with_capacity(count);
    let mut replies = Vec::with_capacity(jobs.len());
    for job in jobs {
        replies.push((job.items.len(), job.reply));
        all.extend(job.items);
    }
    let written = raft
        .client_write(Envelope::new(now_ms(), fold.command(all)))
        .await;
    match written {
        Ok(resp) => {
            let index = resp.log_id.index;
            let Some(results) = fold.results(resp.data) else {
                for (_, reply) in replies {
                    let _ = reply.send(Err(ServerError::Internal(
                        "state machine answered a batch with the wrong response kind".into(),
                    )));
                }
                return;
            };
            let mut results = results.into_iter();
            for (n, reply) in replies {
                let mine: Vec<F::Out> = results.by_ref().take(n).collect();
                let _ = reply.send(Ok((mine, index)));
            }
        }
        Err(e) => {
            let e = ServerError::from(e);
            for (_, reply) in replies {
                let _ = reply.send(Err(clone_error(&e)));
            }
        }
    }
}

fn clone_error(e: &ServerError) -> ServerError {
    match e {
        ServerError::NotLeader {
            leader_id,
            leader_addr,
            before_proposal,
        } => ServerError::NotLeader {
            leader_id: *leader_id,
            leader_addr: leader_addr.clone(),
            before_proposal: *before_proposal,
        },
        other => match other.code() {
            tonic::Code::Unavailable => ServerError::Unavailable(other.to_string()),
            tonic::Code::FailedPrecondition => ServerError::FailedPrecondition(other.to_string()),
            _ => ServerError::Internal(other.to_string()),
        },
    }
}

#[cfg(test)]
#[path = "batcher_test.rs"]
mod tests;
