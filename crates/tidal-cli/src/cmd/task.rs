//! `tidal task submit | get | list | cancel | watch | replay`.

use crate::output::{out, outln};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use tidal_proto::v1;

use super::Ctx;
use crate::exit;
use crate::lists;
use crate::opts::ClientOpts;
use crate::output::{self, Table};

// Parsed once per process: the size of the submit variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum TaskCmd {
    /// Submit a task (or --count copies in one batch); prints the task id.
    #[command(
        after_help = "Example: tidal task submit --type t2i --models sdxl --queue vip \
        --payload \"a red fox\" --key fox-1\n\
        The same --key twice returns the same id (and does not create a second task)."
    )]
    Submit(SubmitArgs),
    /// Show one task: state, agent, fencing token, attempt, result or error.
    Get(GetArgs),
    /// Why a pending task is not placed: per reason, on how many agents;
    /// its queue position, its queue's throughput, an estimated start, and
    /// whether it may be forwarded.
    #[command(after_help = "Example: tidal task explain t0000000042 -o json\n\
        Needs cluster format version 5. A task that is not pending answers its state only.")]
    Explain(GetArgs),
    /// List tasks in id order, optionally filtered by state and queue.
    List(ListArgs),
    /// Cancel a task that has not finished; its agent is told to stop.
    Cancel(CancelArgs),
    /// Poll a task until it finishes, printing each state change.
    #[command(after_help = "Exits 0 when the task succeeded, 4 when it failed or was cancelled.")]
    Watch(WatchArgs),
    /// Put dead letters (failed with their attempts used up) back to pending
    /// with a fresh attempt budget; their attempt history is kept.
    #[command(after_help = "Examples: tidal task replay t0000000042 t0000000043\n\
        tidal task replay --dead --queue vip --since 2h\n\
        Exits 1 if any task was not replayed (each refusal is printed).")]
    Replay(ReplayArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnDeadlineArg {
    /// Count it and report it once; the task stays pending.
    Report,
    /// Count it and fail the task.
    Fail,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NoticeArg {
    /// SIGTERM to the worker's process group at once.
    Signal,
    /// The agent writes $TIDAL_PREEMPT_FILE (the deadline); SIGTERM at the grace.
    File,
}

/// `BASE` or `BASE,MAX`, in ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: u64,
    pub max: u64,
}

pub fn parse_backoff(s: &str) -> Result<Backoff, String> {
    let num = |v: &str| {
        v.trim()
            .parse::<u64>()
            .map_err(|_| format!("{v:?} is not a number of ms: use BASE or BASE,MAX"))
    };
    let (base, max) = match s.split_once(',') {
        Some((b, m)) => (num(b)?, num(m)?),
        None => (num(s)?, 0),
    };
    if base == 0 {
        return Err("the base must be at least 1 ms".into());
    }
    if max != 0 && max < base {
        return Err(format!("the cap {max} ms is below the base {base} ms"));
    }
    Ok(Backoff { base, max })
}

/// A duration back from now: `500ms`, `90s`, `30m`, `2h`, `1d`, or plain ms.
pub fn parse_ago(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30m, 2h, 1d, 90s or 500 (ms)"))?;
    let ms = match unit {
        "" | "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => return Err(format!("{s:?}: use ms, s, m, h or d")),
    };
    ms.ok_or_else(|| format!("{s:?} is too long"))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["ids", "dead"]))]
pub struct ReplayArgs {
    /// The tasks to replay (at most 1000).
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// Replay the dead letters of --queue instead (1000 per request, until none is left).
    #[arg(long, requires = "queue")]
    pub dead: bool,
    /// With --dead: the queue.
    #[arg(long, value_name = "NAME", requires = "dead")]
    pub queue: Option<String>,
    /// With --dead: only those that finished within this long before now
    /// (30m, 2h, 1d, 90s, or ms).
    #[arg(long, value_name = "DURATION", value_parser = parse_ago, requires = "dead")]
    pub since: Option<u64>,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PriorityArg {
    Online,
    Nearline,
    Offline,
}

impl From<PriorityArg> for v1::Priority {
    fn from(p: PriorityArg) -> v1::Priority {
        match p {
            PriorityArg::Online => v1::Priority::Online,
            PriorityArg::Nearline => v1::Priority::Nearline,
            PriorityArg::Offline => v1::Priority::Offline,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    Pending,
    Assigned,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// Handed to another DC that has not reported on it yet.
    Forwarded,
}

impl From<StateArg> for v1::TaskState {
    fn from(s: StateArg) -> v1::TaskState {
        match s {
            StateArg::Pending => v1::TaskState::Pending,
            StateArg::Assigned => v1::TaskState::Assigned,
            StateArg::Running => v1::TaskState::Running,
            StateArg::Succeeded => v1::TaskState::Succeeded,
            StateArg::Failed => v1::TaskState::Failed,
            StateArg::Cancelled => v1::TaskState::Cancelled,
            StateArg::Forwarded => v1::TaskState::Forwarded,
        }
    }
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// Task type (t2i, i2i, sr, tts, train, ...).
    #[arg(long = "type", value_name = "TYPE")]
    pub task_type: String,
    /// Pipeline that implements the type (default: any).
    #[arg(long, value_name = "NAME")]
    pub pipeline: Option<String>,
    /// Models the agent must have, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub models: Vec<String>,
    /// Queue (default: "default"; other queues must be created with `tidal queue set`).
    #[arg(long, value_name = "NAME")]
    pub queue: Option<String>,
    /// Idempotency key: submitting the same key again returns the same task.
    /// With --count N the keys are KEY-1 .. KEY-N.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Payload given to the task's command on stdin.
    #[arg(long, value_name = "STR", conflicts_with = "payload_file")]
    pub payload: Option<String>,
    /// Read the payload from a file (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    pub payload_file: Option<PathBuf>,
    /// Priority class (default nearline).
    #[arg(long, value_enum)]
    pub priority: Option<PriorityArg>,
    /// Attempts before the task fails for good (default: the server's, 3).
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
    /// Task slots it occupies on the agent (default 1).
    #[arg(long, value_name = "N")]
    pub slots: Option<u32>,
    /// GPUs it needs (whole devices; its worker gets them in CUDA_VISIBLE_DEVICES).
    #[arg(long, value_name = "N")]
    pub gpus: Option<u32>,
    /// Minimum memory of each GPU, in MB.
    #[arg(long, value_name = "MB")]
    pub gpu_memory_mb: Option<u64>,
    /// The model each of its --gpus must be (as agents list it, e.g. A100).
    #[arg(long, value_name = "MODEL", requires = "gpus")]
    pub gpu_model: Option<String>,
    /// GPU alternatives in order of preference, COUNTxMODEL[:MEM_MB] separated
    /// by `|` (`any` for any model), e.g. '1xA100|2xA40:40960': the first an
    /// agent can take now wins. Instead of --gpus, --gpu-model, --gpu-memory-mb.
    #[arg(long, value_name = "SHAPES", value_parser = lists::parse_gpu_shapes,
        conflicts_with_all = ["gpus", "gpu_model", "gpu_memory_mb"])]
    pub gpu_shape: Option<lists::GpuShapes>,
    /// A label constraint on the agent (repeatable, all must hold): KEY=V,
    /// KEY!=V, 'KEY in (A,B)', 'KEY notin (A,B)', KEY (present), !KEY (absent).
    #[arg(long, value_name = "EXPR", value_parser = lists::parse_constraint)]
    pub constraint: Vec<String>,
    /// A tag of this task, which tag rules count where it runs (repeatable).
    #[arg(long, value_name = "TAG", value_delimiter = ',')]
    pub tag: Vec<String>,
    /// Only where a task tagged T runs (repeatable; @KEY: its own scope).
    #[arg(long, value_name = "tag=T[@KEY]", value_parser = lists::parse_affinity)]
    pub affinity: Vec<lists::RuleArg>,
    /// Only where no task tagged T runs (repeatable; @KEY: its own scope).
    #[arg(long, value_name = "tag=T[@KEY]", value_parser = lists::parse_anti_affinity)]
    pub anti_affinity: Vec<lists::RuleArg>,
    /// At most N tasks tagged T per scope, this one included (repeatable;
    /// @KEY: its own scope).
    #[arg(long, value_name = "tag=T:N[@KEY]", value_parser = lists::parse_max_per)]
    pub max_per: Vec<lists::RuleArg>,
    /// The scope of its tag rules without @KEY: `agent` (default) or a label
    /// key, whose agents sharing a value count as one (e.g. zone).
    #[arg(long, value_name = "agent|KEY", value_parser = lists::parse_scope)]
    pub scope: Option<String>,
    /// The key of consistent hashing (queues with strategy consistent-hash):
    /// tasks of one key go to the same agent while it lives and has room.
    #[arg(long, value_name = "KEY")]
    pub hash_key: Option<String>,
    /// Tenant (user id) for accounting.
    #[arg(long, value_name = "NAME")]
    pub tenant: Option<String>,
    /// Submit this many copies in one batch (ids printed one per line).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub count: u32,
    /// It must start within MS from now (converted to an absolute time by
    /// this machine's clock); earlier deadlines go first within a class.
    #[arg(long, value_name = "MS")]
    pub deadline_ms: Option<u64>,
    /// What a missed deadline does (default report).
    #[arg(long, value_enum, value_name = "report|fail", requires = "deadline_ms")]
    pub on_deadline: Option<OnDeadlineArg>,
    /// The agent stops an attempt that runs longer (a failed attempt, retried).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_run_ms: Option<u64>,
    /// Retry backoff: BASE ms, doubling per retry up to MAX (default 1000,60000).
    #[arg(long, value_name = "BASE[,MAX]", value_parser = parse_backoff)]
    pub retry_backoff_ms: Option<Backoff>,
    /// Whether online work may preempt it (default true).
    #[arg(long, value_name = "true|false")]
    pub preemptible: Option<bool>,
    /// Preempted by pausing it in place (SIGSTOP, later SIGCONT) instead of stopping it.
    #[arg(long)]
    pub suspendable: bool,
    /// How its worker is told of a preemption (default signal).
    #[arg(long, value_enum, value_name = "signal|file")]
    pub preempt_notice: Option<NoticeArg>,
    /// How long a preempted worker has to checkpoint and exit (default 10000, 1 to 600000;
    /// 0 is refused: on the wire it means the default).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub preempt_grace_ms: Option<u64>,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// The task id.
    pub id: String,
    /// Answer from the node reached, without a read index (may be stale).
    #[arg(long)]
    pub stale: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only tasks in this state.
    #[arg(long, value_enum)]
    pub state: Option<StateArg>,
    /// Only tasks of this queue.
    #[arg(long, value_name = "NAME")]
    pub queue: Option<String>,
    /// At most this many tasks (server default 1000, at most 10000).
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Only ids after this one (paging: pass the `next` id printed by the previous page).
    #[arg(long, value_name = "ID")]
    pub after: Option<String>,
    /// Answer from the node reached, without a read index (may be stale).
    #[arg(long)]
    pub stale: bool,
    /// Only dead letters: failed with their attempts used up (`task replay` takes them).
    #[arg(long)]
    pub dead: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Args, Debug)]
pub struct CancelArgs {
    /// The task id.
    pub id: String,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The task id.
    pub id: String,
    /// How often to poll, in ms.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub interval_ms: u64,
    #[command(flatten)]
    pub client: ClientOpts,
}

pub async fn run(cmd: TaskCmd) -> anyhow::Result<i32> {
    match cmd {
        TaskCmd::Submit(a) => submit(a).await.map(|()| exit::OK),
        TaskCmd::Get(a) => get(a).await.map(|()| exit::OK),
        TaskCmd::Explain(a) => explain(a).await.map(|()| exit::OK),
        TaskCmd::List(a) => list(a).await.map(|()| exit::OK),
        TaskCmd::Cancel(a) => cancel(a).await.map(|()| exit::OK),
        TaskCmd::Watch(a) => watch(a).await,
        TaskCmd::Replay(a) => replay(a).await.map(|()| exit::OK),
    }
}

impl SubmitArgs {
    /// `--affinity`, `--anti-affinity` and `--max-per`, in that order, with
    /// `--scope` as the scope of those without `@KEY`.
    fn tag_rules(&self) -> anyhow::Result<Vec<v1::TagRule>> {
        let scope = self.scope.clone().unwrap_or_default();
        if self.scope.is_some()
            && self.affinity.is_empty()
            && self.anti_affinity.is_empty()
            && self.max_per.is_empty()
        {
            bail!("--scope is the scope of --affinity, --anti-affinity and --max-per: give one of them");
        }
        self.affinity
            .iter()
            .chain(&self.anti_affinity)
            .chain(&self.max_per)
            .map(|r| r.to_wire(&scope).map_err(|e| anyhow!(e)))
            .collect()
    }

    /// The specs to submit (one per --count), payload read here.
    pub fn specs(&self) -> anyhow::Result<Vec<v1::TaskSpec>> {
        if self.count == 0 {
            bail!("--count must be 1 or more");
        }
        let payload = match (&self.payload, &self.payload_file) {
            (Some(s), _) => s.clone().into_bytes(),
            (None, Some(p)) if p.as_os_str() == "-" => {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                    .context("reading the payload from stdin")?;
                buf
            }
            (None, Some(p)) => std::fs::read(p)
                .with_context(|| format!("reading --payload-file {}", p.display()))?,
            (None, None) => Vec::new(),
        };
        let base = v1::TaskSpec {
            task_type: self.task_type.clone(),
            pipeline: self.pipeline.clone().unwrap_or_default(),
            models: lists::clean("--models", self.models.clone()).map_err(|e| anyhow!(e))?,
            queue: self.queue.clone().unwrap_or_default(),
            idempotency_key: String::new(),
            payload,
            max_attempts: self.max_attempts.unwrap_or(0),
            priority: self
                .priority
                .map(v1::Priority::from)
                .unwrap_or(v1::Priority::Unspecified) as i32,
            slots: self.slots.unwrap_or(0),
            gpus: self.gpus.unwrap_or(0),
            gpu_memory_mb: self.gpu_memory_mb.unwrap_or(0),
            tenant: self.tenant.clone().unwrap_or_default(),
            deadline_ms: self.deadline_ms.map_or(0, |d| now_ms().saturating_add(d)),
            on_deadline: match self.on_deadline {
                None => v1::OnDeadline::Unspecified,
                Some(OnDeadlineArg::Report) => v1::OnDeadline::Report,
                Some(OnDeadlineArg::Fail) => v1::OnDeadline::Fail,
            } as i32,
            max_run_ms: self.max_run_ms.unwrap_or(0),
            retry_backoff_base_ms: self.retry_backoff_ms.map_or(0, |b| b.base),
            retry_backoff_max_ms: self.retry_backoff_ms.map_or(0, |b| b.max),
            preemptible: self.preemptible,
            suspendable: self.suspendable,
            preempt_notice: match self.preempt_notice {
                None => v1::PreemptNotice::Unspecified,
                Some(NoticeArg::Signal) => v1::PreemptNotice::Signal,
                Some(NoticeArg::File) => v1::PreemptNotice::File,
            } as i32,
            preempt_grace_ms: self.preempt_grace_ms.unwrap_or(0),
            constraints: self.constraint.clone(),
            tags: lists::clean("--tag", self.tag.clone()).map_err(|e| anyhow!(e))?,
            tag_rules: self.tag_rules()?,
            gpu_model: self.gpu_model.clone().unwrap_or_default(),
            gpu_shapes: self.gpu_shape.clone().map(|s| s.0).unwrap_or_default(),
            hash_key: self.hash_key.clone().unwrap_or_default(),
        };
        Ok((1..=self.count)
            .map(|i| {
                let mut s = base.clone();
                s.idempotency_key = match &self.key {
                    Some(k) if self.count == 1 => k.clone(),
                    Some(k) => format!("{k}-{i}"),
                    None => String::new(),
                };
                s
            })
            .collect())
    }
}

async fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let ctx = Ctx::new(&args.client)?;
    let specs = args.specs()?;
    if specs.len() == 1 {
        let spec = specs
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no task to submit"))?;
        let r = ctx
            .client
            .submit_one(spec)
            .await
            .context("submitting the task")?;
        if ctx.json() {
            output::print_json(&json!({ "id": r.id, "existed": r.existed }));
        } else {
            outln!("{}", r.id);
        }
        return Ok(());
    }
    let results = ctx
        .client
        .submit(specs)
        .await
        .context("submitting the tasks")?;
    let mut rejected = 0usize;
    let mut items = Vec::with_capacity(results.len());
    for (i, r) in results.iter().enumerate() {
        match &r.error {
            Some(e) if e.code != 0 => {
                rejected += 1;
                eprintln!(
                    "error: task {} of the batch was rejected: {}",
                    i + 1,
                    tidal_client::Error::from_item(e)
                );
                items.push(json!({ "id": null, "error": e.message, "code": e.code }));
            }
            _ => {
                if !ctx.json() {
                    outln!("{}", r.id);
                }
                items.push(json!({ "id": r.id, "existed": r.existed }));
            }
        }
    }
    if ctx.json() {
        output::print_json(&json!(items));
    }
    if rejected > 0 {
        bail!("{rejected} of {} tasks were rejected", results.len());
    }
    Ok(())
}

async fn get(args: GetArgs) -> anyhow::Result<()> {
    let ctx = Ctx::new(&args.client)?;
    let t = ctx
        .client
        .get_task(&args.id, args.stale)
        .await
        .with_context(|| format!("getting task {}", args.id))?;
    if ctx.json() {
        output::print_json(&output::task_json(&t));
    } else {
        out!("{}", output::task_text(&t));
    }
    Ok(())
}

async fn explain(args: GetArgs) -> anyhow::Result<()> {
    let ctx = Ctx::new(&args.client)?;
    let e = ctx
        .client
        .explain_task(&args.id, args.stale)
        .await
        .with_context(|| format!("explaining task {}", args.id))?;
    if ctx.json() {
        output::print_json(&output::explanation_json(&e));
    } else {
        out!("{}", output::explanation_text(&e, now_ms()));
    }
    Ok(())
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let ctx = Ctx::new(&args.client)?;
    let req = v1::ListTasksRequest {
        state: args
            .state
            .map(v1::TaskState::from)
            .unwrap_or(v1::TaskState::Unspecified) as i32,
        queue: args.queue.clone().unwrap_or_default(),
        limit: args.limit.unwrap_or(0),
        after_id: args.after.clone().unwrap_or_default(),
        stale: args.stale,
        dead: args.dead,
    };
    let resp = ctx.client.list_tasks(req).await.context("listing tasks")?;
    if ctx.json() {
        output::print_json(&json!({
            "tasks": resp.tasks.iter().map(output::task_json).collect::<Vec<_>>(),
            "next_after_id": resp.next_after_id,
        }));
        return Ok(());
    }
    out!("{}", tasks_table(&resp.tasks));
    if !resp.next_after_id.is_empty() {
        eprintln!("(more tasks: add --after {})", resp.next_after_id);
    }
    Ok(())
}

/// The list view: one task per line, result or error shortened.
pub fn tasks_table(tasks: &[v1::Task]) -> String {
    let mut t = Table::new(&[
        "ID",
        "STATE",
        "TYPE",
        "QUEUE",
        "PRIORITY",
        "AGENT",
        "ATTEMPT",
        "UPDATED",
        "RESULT/ERROR",
    ]);
    for task in tasks {
        let spec = task.spec.clone().unwrap_or_default();
        let outcome = if !task.error.is_empty() {
            task.error.clone()
        } else {
            output::encode_bytes(&task.result).0
        };
        t.row(vec![
            task.id.clone(),
            output::task_state_name(task.state).to_string(),
            spec.task_type,
            spec.queue,
            output::priority_name(spec.priority).to_string(),
            if task.forwarded_to.is_empty() {
                output::dash(&task.agent)
            } else {
                format!("{}@{}", output::dash(&task.agent), task.forwarded_to)
            },
            task.attempt.to_string(),
            output::ms_to_utc(task.updated_ms),
            output::one_line(&outcome, 60),
        ]);
    }
    t.render()
}

async fn cancel(args: CancelArgs) -> anyhow::Result<()> {
    let ctx = Ctx::new(&args.client)?;
    let t = ctx
        .client
        .cancel_task(&args.id)
        .await
        .with_context(|| format!("cancelling task {}", args.id))?;
    if ctx.json() {
        output::print_json(&output::task_json(&t));
    } else {
        outln!("{} {}", t.id, output::task_state_name(t.state));
    }
    Ok(())
}

async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let ctx = Ctx::new(&args.client)?;
    let results = if args.dead {
        let queue = args.queue.clone().unwrap_or_default();
        let since = args.since.map_or(0, |ago| now_ms().saturating_sub(ago));
        ctx.client
            .replay_dead(&queue, since)
            .await
            .with_context(|| format!("replaying the dead letters of queue {queue}"))?
    } else {
        ctx.client
            .replay_tasks(args.ids.clone())
            .await
            .context("replaying tasks")?
    };
    let mut refused = 0usize;
    let mut items = Vec::with_capacity(results.len());
    for r in &results {
        match &r.error {
            Some(e) if e.code != 0 => {
                refused += 1;
                eprintln!(
                    "error: task {} was not replayed: {}",
                    r.id,
                    tidal_client::Error::from_item(e)
                );
                items.push(
                    json!({ "id": r.id, "replayed": false, "error": e.message, "code": e.code }),
                );
            }
            _ => {
                if !ctx.json() {
                    outln!("{} replayed", r.id);
                }
                items.push(json!({ "id": r.id, "replayed": true, "log_index": r.log_index }));
            }
        }
    }
    if ctx.json() {
        output::print_json(&json!(items));
    } else if results.is_empty() {
        eprintln!("no dead letter to replay");
    }
    if refused > 0 {
        bail!("{refused} of {} tasks were not replayed", results.len());
    }
    Ok(())
}

async fn watch(args: WatchArgs) -> anyhow::Result<i32> {
    let ctx = Ctx::new(&args.client)?;
    let interval = Duration::from_millis(args.interval_ms.max(10));
    let mut last: Option<(i32, String, u32, String)> = None;
    loop {
        let t = ctx
            .client
            .get_task(&args.id, false)
            .await
            .with_context(|| format!("watching task {}", args.id))?;
        let now = (t.state, t.agent.clone(), t.attempt, t.remote_id.clone());
        if last.as_ref() != Some(&now) {
            // A forwarded task has no token here: say where it runs instead.
            let place = if t.forwarded_to.is_empty() {
                format!("token {}", t.token)
            } else {
                format!("in DC {} as {}", t.forwarded_to, output::dash(&t.remote_id))
            };
            let line = format!(
                "{}  {:<9}  agent {}  attempt {}  {place}",
                output::ms_to_utc(t.updated_ms),
                output::task_state_name(t.state),
                output::dash(&t.agent),
                t.attempt,
            );
            // In JSON mode stdout carries only the final document.
            if ctx.json() {
                eprintln!("{line}");
            } else {
                outln!("{line}");
            }
            last = Some(now);
        }
        if output::is_terminal(t.state) {
            if ctx.json() {
                output::print_json(&output::task_json(&t));
            } else if !t.error.is_empty() {
                outln!("error (exit code {}): {}", t.exit_code, t.error);
            } else if !t.result.is_empty() {
                let (r, enc) = output::encode_bytes(&t.result);
                outln!("result ({enc}):\n{}", r.trim_end());
            }
            let succeeded = t.state == v1::TaskState::Succeeded as i32;
            return Ok(if succeeded {
                exit::OK
            } else {
                exit::TASK_NOT_SUCCEEDED
            });
        }
        tokio::time::sleep(interval).await;
    }
}
