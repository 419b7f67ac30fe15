//! `tidal queue set | list | headroom`: queue weights and placement strategy, the classes' headroom.

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
    /// List queues with their weight, strategy and pending count, and the
    /// headroom set per class.
    List(ListArgs),
    /// Keep capacity free for a class and the classes above it (admin).
    #[command(
        after_help = "Example: tidal queue headroom online --slots 4 --gpus 2\n\
        Nearline and offline tasks are not placed where they would leave fewer free slots (GPUs) \
        than that. --slots 0 --gpus 0 removes it. Needs cluster format version 4."
    )]
    Headroom(HeadroomArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClassArg {
    Online,
    Nearline,
}

#[derive(Args, Debug)]
pub struct HeadroomArgs {
    /// The class it is kept for (and every class above it).
    #[arg(value_enum)]
    pub class: ClassArg,
    /// Task slots kept free (0..=1000000).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub slots: u32,
    /// GPUs kept free (0..=1000000).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub gpus: u32,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    /// The eligible agent with the fewest tasks in flight per unit of weight.
    LeastLoaded,
    /// Eligible agents in turn, in proportion to their weight.
    WeightedRoundRobin,
    /// The agent left with the least free capacity (GPUs, then slots) after
    /// the task, so whole machines stay free for big tasks.
    BinPack,
    /// Over the values of the label --spread KEY: the group holding the
    /// fewest of the queue's tasks, least-loaded within it.
    Spread,
    /// Rendezvous hashing of the task's --hash-key: one key, one agent while
    /// it lives and has room (tasks without a key: least-loaded).
    ConsistentHash,
}

impl StrategyArg {
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyArg::LeastLoaded => "least-loaded",
            StrategyArg::WeightedRoundRobin => "weighted-round-robin",
            StrategyArg::BinPack => "bin-pack",
            StrategyArg::Spread => "spread",
            StrategyArg::ConsistentHash => "consistent-hash",
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
    /// How an agent is chosen for this queue's tasks (bin-pack, spread and
    /// consistent-hash need cluster format version 5).
    #[arg(long, value_enum, default_value_t = StrategyArg::LeastLoaded)]
    pub strategy: StrategyArg,
    /// With --strategy spread: the label key whose values the queue's tasks
    /// are spread over (e.g. zone).
    #[arg(
        long,
        value_name = "KEY",
        required_if_eq("strategy", "spread"),
        requires = "strategy"
    )]
    pub spread: Option<String>,
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
            if a.spread.is_some() && a.strategy != StrategyArg::Spread {
                anyhow::bail!("--spread KEY goes with --strategy spread");
            }
            let ctx = Ctx::new(&a.client)?;
            let q = ctx
                .client
                .set_queue_with(tidal_proto::v1::SetQueueRequest {
                    name: a.name.clone(),
                    weight: a.weight,
                    strategy: a.strategy.as_str().to_string(),
                    spread_key: a.spread.clone().unwrap_or_default(),
                })
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
            let resp = ctx
                .client
                .list_queues_full()
                .await
                .context("listing queues")?;
            if ctx.json() {
                output::print_json(&json!({
                    "queues": resp.queues.iter().map(output::queue_json).collect::<Vec<_>>(),
                    "headroom": resp.headroom.iter().map(output::headroom_json).collect::<Vec<_>>(),
                }));
            } else {
                out!("{}", output::queues_table(&resp.queues));
                if !resp.headroom.is_empty() {
                    out!("\n{}", output::headroom_table(&resp.headroom));
                }
            }
        }
        QueueCmd::Headroom(a) => {
            let ctx = Ctx::new(&a.client)?;
            let class = match a.class {
                ClassArg::Online => tidal_proto::v1::Priority::Online,
                ClassArg::Nearline => tidal_proto::v1::Priority::Nearline,
            };
            let hs = ctx
                .client
                .set_headroom(class, a.slots, a.gpus)
                .await
                .context("setting the headroom")?;
            if ctx.json() {
                output::print_json(
                    &json!({ "headroom": hs.iter().map(output::headroom_json).collect::<Vec<_>>() }),
                );
            } else {
                out!("{}", output::headroom_table(&hs));
            }
        }
    }
    Ok(())
}
