//! `tidal cluster add-learner | promote | transfer-leader | demote | remove |
//! members | snapshot`: the Raft group's membership and snapshots.

use crate::output::{out, outln};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use tidal_client::v1;

use super::Ctx;
use crate::opts::ClientOpts;
use crate::output;

#[derive(Subcommand, Debug)]
#[command(
    after_help = "Join a started node: `tidal cluster add-learner --id 4 --addr 10.0.0.4:7001 --wait`, \
    then `tidal cluster promote 4` (one change at a time). Take one out: `tidal cluster remove 4`."
)]
pub enum ClusterCmd {
    /// Add a started, empty node as a learner (it receives the log but does not vote).
    AddLearner(AddLearnerArgs),
    /// Make a learner a voter.
    Promote(ChangeArgs),
    /// Hand leadership to another voter (writes pause for about an election timeout).
    TransferLeader(TransferArgs),
    /// Make a voter a learner (refused if it would leave fewer than 3 voters, unless --force).
    Demote(ChangeArgs),
    /// Remove a member (refused if it would leave fewer than 3 voters, unless --force); it stops serving.
    Remove(ChangeArgs),
    /// List members: id, address, role, leader, matched index, lag and last contact.
    Members(MembersArgs),
    /// Take a snapshot now, or `snapshot save FILE`: write a consistent backup.
    Snapshot(SnapshotArgs),
}

#[derive(Args, Debug)]
pub struct AddLearnerArgs {
    /// The new node's id (its --id).
    #[arg(long, value_name = "N")]
    pub id: u64,
    /// The new node's address (its --advertise, or --listen).
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: String,
    /// Where the other servers reach the new node (its --peer-advertise, or
    /// --peer-listen); without it they use --addr.
    #[arg(long, value_name = "HOST:PORT")]
    pub peer_addr: Option<String>,
    /// Wait until the learner has caught up with the leader, showing its progress.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Args, Debug)]
pub struct ChangeArgs {
    /// The member's id.
    pub id: u64,
    /// Skip the safety checks (fewer than 3 voters left, unreachable voters).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Args, Debug)]
pub struct TransferArgs {
    /// The voter that should lead.
    pub id: u64,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Args, Debug)]
pub struct MembersArgs {
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// `save FILE` writes a backup that `tidal server --restore FILE` starts a new cluster from.
    #[arg(value_name = "save FILE", num_args = 0..=2)]
    pub save: Vec<String>,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// A learner counts as caught up within this many entries of the leader.
const CAUGHT_UP_LAG: u64 = 10;

pub async fn run(cmd: ClusterCmd) -> anyhow::Result<()> {
    let (ctx, resp) = match cmd {
        ClusterCmd::AddLearner(a) => {
            let ctx = Ctx::new(&a.client)?;
            let mut r = ctx
                .client
                .add_learner_with_peer(a.id, &a.addr, a.peer_addr.as_deref())
                .await
                .with_context(|| format!("adding node {} at {} as a learner", a.id, a.addr))?;
            if a.wait {
                r = wait_caught_up(&ctx, a.id).await?;
            }
            (ctx, r)
        }
        ClusterCmd::Promote(a) => {
            let ctx = Ctx::new(&a.client)?;
            let r = ctx
                .client
                .promote(a.id)
                .await
                .with_context(|| format!("promoting node {}", a.id))?;
            (ctx, r)
        }
        ClusterCmd::TransferLeader(a) => {
            let ctx = Ctx::new(&a.client)?;
            let r = ctx
                .client
                .transfer_leader(a.id)
                .await
                .with_context(|| format!("transferring leadership to node {}", a.id))?;
            (ctx, r)
        }
        ClusterCmd::Demote(a) => {
            let ctx = Ctx::new(&a.client)?;
            let r = ctx
                .client
                .demote(a.id, a.force)
                .await
                .with_context(|| format!("demoting node {}", a.id))?;
            (ctx, r)
        }
        ClusterCmd::Remove(a) => {
            let ctx = Ctx::new(&a.client)?;
            let r = ctx
                .client
                .remove(a.id, a.force)
                .await
                .with_context(|| format!("removing node {}", a.id))?;
            (ctx, r)
        }
        ClusterCmd::Members(a) => {
            let ctx = Ctx::new(&a.client)?;
            let r = ctx.client.members().await.context("listing members")?;
            (ctx, r)
        }
        ClusterCmd::Snapshot(a) => return snapshot(a).await,
    };
    if ctx.json() {
        output::print_json(&output::members_json(&resp));
    } else {
        out!("{}", output::members_table(&resp));
    }
    Ok(())
}

/// Polls the leader until learner `id` is within [`CAUGHT_UP_LAG`] entries,
/// drawing a progress bar on a terminal (a line per change otherwise).
async fn wait_caught_up(ctx: &Ctx, id: u64) -> anyhow::Result<v1::MembersResponse> {
    let tty = std::io::stderr().is_terminal();
    let mut start_lag: Option<u64> = None;
    let mut last_shown = None;
    loop {
        let r = ctx
            .client
            .members()
            .await
            .context("reading the learner's progress")?;
        let Some(m) = r.members.iter().find(|m| m.id == id) else {
            bail!("node {id} is no longer a member");
        };
        let behind = m.lag;
        let total = *start_lag.get_or_insert(behind.max(1));
        if last_shown != Some(behind) {
            let done = total.saturating_sub(behind).min(total);
            if tty {
                let width = 30;
                let filled = (done * width / total) as usize;
                eprint!(
                    "\r[{}{}] node {id}: {behind} entries behind the leader   ",
                    "#".repeat(filled),
                    " ".repeat(width as usize - filled)
                );
            } else {
                eprintln!(
                    "node {id}: {behind} entries behind the leader (matched {})",
                    m.matched_index
                );
            }
            last_shown = Some(behind);
        }
        if m.matched_index > 0 && behind <= CAUGHT_UP_LAG {
            if tty {
                eprintln!();
            }
            eprintln!(
                "node {id} has caught up (matched index {})",
                m.matched_index
            );
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn snapshot(a: SnapshotArgs) -> anyhow::Result<()> {
    let ctx = Ctx::new(&a.client)?;
    match a.save.as_slice() {
        [] => {
            let r = ctx.client.snapshot().await.context("taking a snapshot")?;
            if ctx.json() {
                output::print_json(&serde_json::json!({
                    "node_id": r.node_id, "snapshot_index": r.snapshot_index, "purged_index": r.purged_index,
                }));
            } else {
                outln!(
                    "node {} took a snapshot at log index {}; the log is purged up to {}",
                    r.node_id,
                    r.snapshot_index,
                    r.purged_index
                );
            }
        }
        [verb, file] if verb == "save" => {
            let path = PathBuf::from(file);
            let (data, index) = ctx
                .client
                .backup()
                .await
                .context("reading a backup from the leader")?;
            let tmp = path.with_extension("partial");
            std::fs::write(&tmp, &data).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("syncing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("renaming to {}", path.display()))?;
            if ctx.json() {
                output::print_json(
                    &serde_json::json!({ "file": file, "log_index": index, "bytes": data.len() }),
                );
            } else {
                outln!(
                    "wrote a backup at log index {index} to {file} ({} bytes)",
                    data.len()
                );
            }
        }
        _ => bail!("use `tidal cluster snapshot` or `tidal cluster snapshot save FILE`"),
    }
    Ok(())
}
