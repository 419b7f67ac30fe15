//! `tidal queue set | list`: queue weights and placement strategy.

use crate::output::out;
use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use super::Ctx;
use crate::opts::ClientOpts;
use crate::output;

#[derive(Subcommand, Debug)]
pub enum QueueCmd {
    /// Create a queue or change its weight and strategy.
    #[command(
        after_help = "Example: tidal queue set vip --weight 8 && tidal queue set normal --weight 2\n\
        Per dispatch round, a queue of weight w gets up to w/sum(weights) of the picks; unused share flows to the others."
    )]
    Set(SetArgs),
    /// List queues with their weight, strategy and pending count.
    List(ListArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    /// The eligible agent with the fewest tasks in flight per unit of weight.
    LeastLoaded,
    /// Eligible agents in turn, in proportion to their weight.
    WeightedRoundRobin,
}

impl StrategyArg {
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyArg::LeastLoaded => "least-loaded",
            StrategyArg::WeightedRoundRobin => "weighted-round-robin",
        }
    }
}

#[derive(Args, Debug)]
pub struct SetArgs {
    /// Queue name.
    pub name: String,
    /// Weight, 1..=1000.
    #[arg(long, value_name = "W")]
    pub weight: u32,
    /// How an agent is chosen for this queue's tasks.
    #[arg(long, value_enum, default_value_t = StrategyArg::LeastLoaded)]
    pub strategy: StrategyArg,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientOpts,
}

pub async fn run(cmd: QueueCmd) -> anyhow::Result<()> {
    match cmd {
        QueueCmd::Set(a) => {
            let ctx = Ctx::new(&a.client)?;
            let q = ctx
                .client
                .set_queue(&a.name, a.weight, a.strategy.as_str())
                .await
                .with_context(|| format!("setting queue {}", a.name))?;
            if ctx.json() {
                output::print_json(&output::queue_json(&q));
            } else {
                out!("{}", output::queues_table(std::slice::from_ref(&q)));
            }
        }
        QueueCmd::List(a) => {
            let ctx = Ctx::new(&a.client)?;
            let qs = ctx.client.list_queues().await.context("listing queues")?;
            if ctx.json() {
                output::print_json(
                    &json!({ "queues": qs.iter().map(output::queue_json).collect::<Vec<_>>() }),
                );
            } else {
                out!("{}", output::queues_table(&qs));
            }
        }
    }
    Ok(())
}
