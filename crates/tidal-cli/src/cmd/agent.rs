//! `tidal agent ... -- COMMAND`: run an agent; `tidal agent list | get ID`:
//! list agents, show one; `tidal agent drain | undrain ID`: drain an agent
//! and end it.

use crate::output::out;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use serde_json::json;
use tidal_agent::AgentConfig;
use tidal_proto::v1::Gpu;

use super::Ctx;
use crate::lists;
use crate::opts::{ClientOpts, TlsOpts, TokenOpts, DEFAULT_ENDPOINT};
use crate::output::{self, Table};
use crate::shutdown;

#[derive(Args, Debug)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Each task runs COMMAND with the task's payload on stdin; exit 0 means success and \
        its stdout is the result.\n\
        Example: tidal agent --id gpu-7 --dc dc1 --task-types t2i,tts --models sdxl --slots 2 \
        --gpus A100:81920 --labels zone=a -- python3 worker.py"
)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub action: Option<AgentCmd>,
    #[command(flatten)]
    pub run: AgentRunArgs,
}

#[derive(Subcommand, Debug)]
pub enum AgentCmd {
    /// List the agents the cluster knows, with their state and load.
    List(AgentListArgs),
    /// Show one agent: state, load, labels, warm models, and each GPU busy or free.
    Get(AgentGetArgs),
    /// Drain an agent: nothing new is placed on it; its tasks finish, or at
    /// the deadline are stopped (SIGTERM, SIGKILL after the agent's grace)
    /// and requeued without spending an attempt. `agent list` shows it
    /// draining, then drained (it holds no task).
    Drain(AgentDrainArgs),
    /// End an agent's drain: it is ready for new tasks again.
    Undrain(AgentUndrainArgs),
}

#[derive(Args, Debug)]
pub struct AgentDrainArgs {
    /// The agent's id.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Stop its tasks this many ms from now (at most 7 days); without it they run to their end.
    #[arg(long, value_name = "MS")]
    pub deadline_ms: Option<u64>,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Args, Debug)]
pub struct AgentUndrainArgs {
    /// The agent's id.
    #[arg(value_name = "ID")]
    pub id: String,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Args, Debug)]
pub struct AgentGetArgs {
    /// The agent's id.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Answer from the node reached, without a read index (may be stale).
    #[arg(long)]
    pub stale: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Args, Debug)]
pub struct AgentListArgs {
    /// Answer from the node reached, without a read index (may be stale).
    #[arg(long)]
    pub stale: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Args, Debug, Default)]
pub struct AgentRunArgs {
    /// This agent's id (unique in the DC).
    #[arg(long, required = true, value_name = "NAME")]
    pub id: Option<String>,
    /// The data center this agent belongs to.
    #[arg(long, required = true, value_name = "NAME")]
    pub dc: Option<String>,
    /// Task types this agent runs, comma-separated (e.g. t2i,tts).
    #[arg(long, required = true, value_delimiter = ',', value_name = "TYPE,...")]
    pub task_types: Vec<String>,
    /// Pipelines it implements (empty: any pipeline of its task types).
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub pipelines: Vec<String>,
    /// Models present on this machine.
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub models: Vec<String>,
    /// How many task slots it offers.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub slots: u32,
    /// Relative weight for least-loaded placement (an A100 counts more than an A40).
    #[arg(long, default_value_t = 1, value_name = "W")]
    pub weight: u32,
    /// GPUs, MODEL:MEM_MB each (e.g. A100:81920,A100:81920).
    #[arg(long, value_delimiter = ',', value_parser = lists::parse_gpu, value_name = "MODEL:MEM_MB,...")]
    pub gpus: Vec<Gpu>,
    /// Free-form labels, KEY=VALUE each (shown by `tidal agent list --output json`).
    #[arg(long, value_delimiter = ',', value_parser = lists::parse_label, value_name = "K=V,...")]
    pub labels: Vec<(String, String)>,
    /// Agent-side lease TTL in ms: stop tasks when not renewed for this long (default: derived from the server's).
    #[arg(long, value_name = "MS")]
    pub ttl_ms: Option<u64>,
    /// Longest result (task stdout) reported; longer output is truncated.
    #[arg(long, default_value_t = tidal_agent::DEFAULT_MAX_RESULT_BYTES, value_name = "BYTES")]
    pub max_result_bytes: usize,
    /// Servers of this DC, HOST:PORT,...
    #[arg(long, env = "TIDAL_ENDPOINTS", value_delimiter = ',', default_value = DEFAULT_ENDPOINT, value_name = "HOST:PORT,...")]
    pub endpoints: Vec<String>,
    /// Local IP to open connections to the servers from (default: chosen by the OS).
    #[arg(long, value_name = "IP")]
    pub source_ip: Option<std::net::IpAddr>,
    /// Mutual TLS with the servers (--tls-dir: an agent certificate of --dc).
    #[command(flatten)]
    pub tls: TlsOpts,
    /// The agent's token (`tidal token create --role agent`).
    #[command(flatten)]
    pub token: TokenOpts,
    /// On SIGTERM or SIGINT the agent drains with this deadline: running tasks
    /// get this long to finish, then are stopped and requeued; it then
    /// deregisters and exits 0. A second signal exits at once, killing its tasks.
    #[arg(long, default_value_t = tidal_agent::DEFAULT_DRAIN_TIMEOUT.as_millis() as u64, value_name = "MS")]
    pub drain_timeout_ms: u64,
    /// Time a stopped task's worker gets between SIGTERM and SIGKILL.
    #[arg(long, default_value_t = tidal_agent::DEFAULT_STOP_GRACE.as_millis() as u64, value_name = "MS")]
    pub stop_grace_ms: u64,
    /// A file listing the models loaded on this machine now, one per line:
    /// read again before every heartbeat and reported to the leader, whose
    /// placement prefers agents with a task's models warm. Its workers get
    /// its path as TIDAL_WARM_MODELS_FILE and may rewrite it (write a new
    /// file and rename it into place). Missing: no model is warm.
    #[arg(long, env = "TIDAL_WARM_MODELS_FILE", value_name = "PATH")]
    pub warm_models_file: Option<std::path::PathBuf>,
    /// Serve Prometheus metrics over plain HTTP (GET /metrics) on this
    /// address, with no TLS and no auth: bind loopback or a private network
    /// (default: off). Port 0 binds one of the kernel's choice, logged.
    #[arg(long, env = "TIDAL_AGENT_METRICS_LISTEN", value_name = "IP:PORT")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The command that runs one task (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl AgentRunArgs {
    pub fn to_config(&self) -> anyhow::Result<AgentConfig> {
        let id = self.id.clone().ok_or_else(|| anyhow!("--id is required"))?;
        let dc = self.dc.clone().ok_or_else(|| anyhow!("--dc is required"))?;
        if self.command.is_empty() {
            return Err(anyhow!("the command to run tasks is required after `--`"));
        }
        Ok(AgentConfig {
            id,
            dc,
            task_types: lists::clean("--task-types", self.task_types.clone())
                .map_err(|e| anyhow!(e))?,
            pipelines: lists::clean("--pipelines", self.pipelines.clone())
                .map_err(|e| anyhow!(e))?,
            models: lists::clean("--models", self.models.clone()).map_err(|e| anyhow!(e))?,
            slots: self.slots,
            weight: self.weight,
            gpus: self.gpus.clone(),
            labels: lists::labels_map(self.labels.clone()).map_err(|e| anyhow!(e))?,
            endpoints: lists::clean("--endpoints", self.endpoints.clone())
                .map_err(|e| anyhow!(e))?,
            command: self.command.clone(),
            ttl: self.ttl_ms.map(Duration::from_millis),
            max_result_bytes: self.max_result_bytes,
            source_ip: self.source_ip,
            tls_dir: self.tls.checked()?.map(Into::into),
            insecure: self.tls.insecure == Some(true),
            token: self.token.token()?,
            drain_timeout: Duration::from_millis(self.drain_timeout_ms),
            stop_grace: Duration::from_millis(self.stop_grace_ms),
            warm_models_file: self.warm_models_file.clone(),
            metrics_listen: self.metrics_listen,
        })
    }
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    match args.action {
        Some(AgentCmd::List(a)) => list(a).await,
        Some(AgentCmd::Get(a)) => get(a).await,
        Some(AgentCmd::Drain(a)) => drain(a).await,
        Some(AgentCmd::Undrain(a)) => undrain(a).await,
        None => {
            let config = args
                .run
                .to_config()
                .context("invalid agent configuration")?;
            let signals = shutdown::signal_count()?;
            let (mut first, mut second) = (signals.clone(), signals);
            let drain = async move {
                let _ = first.wait_for(|n| *n >= 1).await;
            };
            let now = async move {
                let _ = second.wait_for(|n| *n >= 2).await;
            };
            tidal_agent::run_draining(config, drain, now).await
        }
    }
}

async fn drain(args: AgentDrainArgs) -> anyhow::Result<()> {
    let ctx = Ctx::new(&args.client)?;
    let a = ctx
        .client
        .drain_agent(&args.id, args.deadline_ms)
        .await
        .with_context(|| format!("draining agent {}", args.id))?;
    show_one(&ctx, &a);
    Ok(())
}

async fn undrain(args: AgentUndrainArgs) -> anyhow::Result<()> {
    let ctx = Ctx::new(&args.client)?;
    let a = ctx
        .client
        .undrain_agent(&args.id)
        .await
        .with_context(|| format!("undraining agent {}", args.id))?;
    show_one(&ctx, &a);
    Ok(())
}

fn show_one(ctx: &Ctx, a: &tidal_proto::v1::AgentInfo) {
    if ctx.json() {
        output::print_json(&output::agent_json(a));
        return;
    }
    let spec = a.spec.clone().unwrap_or_default();
    let deadline = if a.drain_deadline_ms > 0 {
        format!(
            ", its tasks are stopped at {} (in {} ms)",
            a.drain_deadline_ms,
            a.drain_deadline_ms.saturating_sub(now_ms())
        )
    } else {
        String::new()
    };
    println!(
        "agent {} is {} ({} task(s) held{deadline})",
        spec.id,
        output::agent_state_name(a.state),
        a.in_flight
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn get(args: AgentGetArgs) -> anyhow::Result<()> {
    let ctx = Ctx::new(&args.client)?;
    let agents = ctx
        .client
        .list_agents(args.stale)
        .await
        .with_context(|| format!("getting agent {}", args.id))?;
    let a = agents
        .iter()
        .find(|a| a.spec.as_ref().is_some_and(|s| s.id == args.id))
        .ok_or_else(|| {
            anyhow::Error::new(tidal_client::Error::new(
                tonic::Code::NotFound,
                format!("agent {:?} is not known to the cluster", args.id),
            ))
            .context(format!("getting agent {}", args.id))
        })?;
    if ctx.json() {
        output::print_json(&output::agent_json(a));
    } else {
        out!("{}", output::agent_text(a));
    }
    Ok(())
}

async fn list(args: AgentListArgs) -> anyhow::Result<()> {
    let ctx = Ctx::new(&args.client)?;
    let agents = ctx
        .client
        .list_agents(args.stale)
        .await
        .context("listing agents")?;
    if ctx.json() {
        output::print_json(
            &json!({ "agents": agents.iter().map(output::agent_json).collect::<Vec<_>>() }),
        );
        return Ok(());
    }
    let mut t = Table::new(&[
        "ID",
        "DC",
        "STATE",
        "CONNECTED",
        "SLOTS",
        "GPUS",
        "BUSY_GPUS",
        "IN_FLIGHT",
        "TASK_TYPES",
        "MODELS",
        "WARM",
    ]);
    for a in &agents {
        let spec = a.spec.clone().unwrap_or_default();
        t.row(vec![
            spec.id,
            spec.dc,
            output::agent_state_name(a.state).to_string(),
            if a.connected { "yes" } else { "no" }.to_string(),
            format!("{}/{}", a.slots_in_use, spec.slots),
            format!("{}/{}", a.gpus_in_use, spec.gpus.len()),
            output::devices_text(&a.gpus_busy),
            a.in_flight.to_string(),
            output::dash(&spec.task_types.join(",")),
            output::dash(&spec.models.join(",")),
            output::dash(&a.warm_models.join(",")),
        ]);
    }
    out!("{}", t.render());
    Ok(())
}
