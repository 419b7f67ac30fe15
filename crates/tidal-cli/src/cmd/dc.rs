//! `tidal dc status`: this DC's links to its peer DCs, as its leader sees them.

use crate::output::out;
use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use tidal_proto::v1;

use super::Ctx;
use crate::opts::ClientOpts;
use crate::output::{self, Table};

#[derive(Subcommand, Debug)]
pub enum DcCmd {
    /// Each peer DC: link state, last ack, outbox depth and the age of its
    /// oldest unshipped record, and the peer's last capability summary.
    Status(StatusArgs),
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientOpts,
}

pub async fn run(cmd: DcCmd) -> anyhow::Result<()> {
    match cmd {
        DcCmd::Status(a) => {
            let ctx = Ctx::new(&a.client)?;
            let s = ctx
                .client
                .dc_status()
                .await
                .context("reading the DC links")?;
            if ctx.json() {
                output::print_json(&status_json(&s));
            } else {
                out!("{}", status_text(&s));
            }
        }
    }
    Ok(())
}

fn ago(ms: i64) -> String {
    match ms {
        ..=-1 => "never".to_string(),
        0..=999 => format!("{ms}ms ago"),
        _ => format!("{:.1}s ago", ms as f64 / 1000.0),
    }
}

fn age(ms: i64) -> String {
    match ms {
        ..=-1 => "-".to_string(),
        0..=999 => format!("{ms}ms"),
        _ => format!("{:.1}s", ms as f64 / 1000.0),
    }
}

fn summary_line(g: &v1::CapabilityGroup) -> String {
    let mut s = format!(
        "{} agent(s), {}/{} slots free: types {}",
        g.agents,
        g.free_slots,
        g.slots,
        g.task_types.join(",")
    );
    if !g.pipelines.is_empty() {
        s.push_str(&format!("; pipelines {}", g.pipelines.join(",")));
    }
    if !g.models.is_empty() {
        s.push_str(&format!("; models {}", g.models.join(",")));
    }
    if g.max_gpus > 0 {
        s.push_str(&format!(
            "; up to {} GPUs of {} MB",
            g.max_gpus, g.gpu_memory_mb
        ));
    }
    s
}

pub fn status_text(s: &v1::DcStatusResponse) -> String {
    let mut out = format!("DC {} (leader node {})\n", s.dc, s.leader_id);
    if s.peers.is_empty() {
        out.push_str("no peer DCs configured (add [[peers]] to the server config or --peer)\n");
        return out;
    }
    let mut t = Table::new(&[
        "PEER", "LINK", "LAST_ACK", "OUTBOX", "OLDEST", "ACKED", "INGESTED", "SUMMARY",
    ]);
    for p in &s.peers {
        t.row(vec![
            p.dc.clone(),
            p.link.clone(),
            ago(p.last_ack_ms_ago),
            format!("{}/{}", p.outbox_depth, p.outbox_limit),
            age(p.oldest_unshipped_ms),
            p.acked_seq.to_string(),
            p.inbound_hwm.to_string(),
            ago(p.summary_age_ms),
        ]);
    }
    out.push_str(&t.render());
    for p in &s.peers {
        if !p.last_error.is_empty() {
            out.push_str(&format!("{}: last error: {}\n", p.dc, p.last_error));
        }
        match &p.summary {
            Some(sum) => {
                out.push_str(&format!(
                    "{}: {} task(s) pending there\n",
                    p.dc, sum.pending
                ));
                for g in &sum.groups {
                    out.push_str(&format!("  {}\n", summary_line(g)));
                }
                if sum.groups.is_empty() {
                    out.push_str("  no ready agents\n");
                }
            }
            None => out.push_str(&format!("{}: no capability summary yet\n", p.dc)),
        }
    }
    out
}

pub fn status_json(s: &v1::DcStatusResponse) -> Value {
    json!({
        "dc": s.dc,
        "leader_id": s.leader_id,
        "peers": s.peers.iter().map(|p| json!({
            "dc": p.dc,
            "endpoints": p.endpoints,
            "link": p.link,
            "last_error": p.last_error,
            "last_ack_ms_ago": p.last_ack_ms_ago,
            "outbox_depth": p.outbox_depth,
            "outbox_limit": p.outbox_limit,
            "oldest_unshipped_ms": p.oldest_unshipped_ms,
            "acked_seq": p.acked_seq,
            "next_seq": p.next_seq,
            "inbound_hwm": p.inbound_hwm,
            "summary_age_ms": p.summary_age_ms,
            "summary": p.summary.as_ref().map(|sum| json!({
                "pending": sum.pending,
                "groups": sum.groups.iter().map(|g| json!({
                    "task_types": g.task_types,
                    "pipelines": g.pipelines,
                    "models": g.models,
                    "max_gpus": g.max_gpus,
                    "gpu_memory_mb": g.gpu_memory_mb,
                    "agents": g.agents,
                    "slots": g.slots,
                    "free_slots": g.free_slots,
                })).collect::<Vec<_>>(),
            })),
        })).collect::<Vec<_>>(),
    })
}
