//! `tidal cluster add-learner | promote | members`: Raft group membership.

use anyhow::Context;
use clap::{Args, Subcommand};

use super::Ctx;
use crate::cli::ClientOpts;
use crate::output;

#[derive(Subcommand, Debug)]
#[command(
    after_help = "Join a started node: `tidal cluster add-learner --id 2 --addr 127.0.0.1:7002`, \
    then `tidal cluster promote 2` (one node at a time)."
)]
pub enum ClusterCmd {
    /// Add a started, empty node as a learner (it receives the log but does not vote).
    AddLearner(AddLearnerArgs),
    /// Make a learner a voter.
    Promote(PromoteArgs),
    /// List members: id, address, voter or learner, which one leads.
    Members(MembersArgs),
}

#[derive(Args, Debug)]
pub struct AddLearnerArgs {
    /// The new node's id (its --id).
    #[arg(long, value_name = "N")]
    pub id: u64,
    /// The new node's address (its --advertise, or --listen).
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: String,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Args, Debug)]
pub struct PromoteArgs {
    /// The learner's id.
    pub id: u64,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Args, Debug)]
pub struct MembersArgs {
    #[command(flatten)]
    pub client: ClientOpts,
}

pub async fn run(cmd: ClusterCmd) -> anyhow::Result<()> {
    let (ctx, resp) = match cmd {
        ClusterCmd::AddLearner(a) => {
            let ctx = Ctx::new(&a.client)?;
            let r = ctx
                .client
                .add_learner(a.id, &a.addr)
                .await
                .with_context(|| format!("adding node {} at {} as a learner", a.id, a.addr))?;
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
        ClusterCmd::Members(a) => {
            let ctx = Ctx::new(&a.client)?;
            let r = ctx.client.members().await.context("listing members")?;
            (ctx, r)
        }
    };
    if ctx.json() {
        output::print_json(&output::members_json(&resp));
    } else {
        print!("{}", output::members_table(&resp));
    }
    Ok(())
}
