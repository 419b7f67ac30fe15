//! Group commit: concurrent requests of one kind (submits, completions) are
//! folded into one Raft entry, so throughput is not one fsync per task.
//!
//! A batch is taken from the queue only when an in-flight slot is free; while
//! all slots are busy, requests pile up and the next entry carries them all,
//! up to a number of items and about [`MAX_ENTRY_BYTES`] (a request is never
//! split here: callers keep each request under that size).

use std::sync::Arc;

use tidal_core::command::{Command, Envelope, Response};
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

/// Makes the command of a batch.
pub type Wrap<I> = Arc<dyn Fn(Vec<I>) -> Command + Send + Sync>;
/// Takes the per-item results out of a batch's response, in item order.
pub type Unwrap<O> = Arc<dyn Fn(Response) -> Option<Vec<O>> + Send + Sync>;

pub struct Batcher<I, O> {
    tx: mpsc::UnboundedSender<Job<I, O>>,
    size: fn(&I) -> usize,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
            size: self.size,
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the batching loop. `wrap` makes the command of a batch; `unwrap`
    /// takes the per-item results out of its response (in item order);
    /// `size` tells an item's rough encoded size.
    pub fn spawn(
        raft: Raft,
        gate: WriteGate,
        max_items: usize,
        max_in_flight: usize,
        wrap: Wrap<I>,
        unwrap: Unwrap<O>,
        size: fn(&I) -> usize,
    ) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job<I, O>>();
        let slots = Arc::new(Semaphore::new(max_in_flight));
        tokio::spawn(async move {
            // A job that did not fit in the previous entry goes first.
            let mut held: Option<Job<I, O>> = None;
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
                        Ok(job) if bytes + job.bytes > MAX_ENTRY_BYTES => {
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
                let (raft, gate) = (raft.clone(), gate.clone());
                let (wrap, unwrap) = (wrap.clone(), unwrap.clone());
                tokio::spawn(async move {
                    let _open = gate.read().await;
                    commit(&raft, jobs, count, &*wrap, &*unwrap).await;
                    drop(permit);
                });
            }
        });
        Batcher { tx, size }
    }

    /// Queues `items` for the next entry and waits for their results and the
    /// entry's log index.
    pub async fn call(&self, items: Vec<I>) -> Result<(Vec<O>, u64)> {
        let (reply, rx) = oneshot::channel();
        let bytes = items.iter().map(self.size).sum();
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

async fn commit<I, O>(
    raft: &Raft,
    jobs: Vec<Job<I, O>>,
    count: usize,
    wrap: &(dyn Fn(Vec<I>) -> Command + Send + Sync),
    unwrap: &(dyn Fn(Response) -> Option<Vec<O>> + Send + Sync),
) {
    let mut all = Vec::with_capacity(count);
    let mut replies = Vec::with_capacity(jobs.len());
    for job in jobs {
        replies.push((job.items.len(), job.reply));
        all.extend(job.items);
    }
    let written = raft.client_write(Envelope::new(now_ms(), wrap(all))).await;
    match written {
        Ok(resp) => {
            let index = resp.log_id.index;
            let Some(results) = unwrap(resp.data) else {
                for (_, reply) in replies {
                    let _ = reply.send(Err(ServerError::Internal(
                        "state machine answered a batch with the wrong response kind".into(),
                    )));
                }
                return;
            };
            let mut results = results.into_iter();
            for (n, reply) in replies {
                let mine: Vec<O> = results.by_ref().take(n).collect();
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
        } => ServerError::NotLeader {
            leader_id: *leader_id,
            leader_addr: leader_addr.clone(),
        },
        other => match other.code() {
            tonic::Code::Unavailable => ServerError::Unavailable(other.to_string()),
            tonic::Code::FailedPrecondition => ServerError::FailedPrecondition(other.to_string()),
            _ => ServerError::Internal(other.to_string()),
        },
    }
}
