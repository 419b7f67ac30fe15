//! `tidal status`: each endpoint's own view (role, term, indices), then the
//! leader's counts of tasks, agents and queues.

use crate::output::{out, outln};
use anyhow::Context;
use clap::Args;
use serde_json::json;
use tidal_proto::v1;

use super::Ctx;
use crate::opts::ClientOpts;
use crate::output::{self, Table};

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientOpts,
    /// Also show each node's state digest (equal on nodes at the same applied
    /// index). Each node hashes its whole state for it and applies nothing
    /// meanwhile: about half a second per million tasks.
    #[arg(long)]
    pub digest: bool,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let ctx = Ctx::new(&args.client)?;
    let endpoints = ctx.client.endpoints();
    let mut nodes: Vec<(String, Result<v1::StatusResponse, tidal_client::Error>)> = Vec::new();
    for e in &endpoints {
        let s = if args.digest {
            ctx.client.status_digest_of(e).await
        } else {
            ctx.client.status_of(e).await
        };
        nodes.push((e.clone(), s));
    }
    let any_ok = nodes.iter().any(|(_, r)| r.is_ok());
    // The leader's own view; `status` follows the leader named by a follower.
    let leader = if any_ok {
        ctx.client.status().await.ok()
    } else {
        None
    };
    if !any_ok {
        let err = nodes
            .into_iter()
            .find_map(|(_, r)| r.err())
            .context("no endpoints given")?;
        return Err(anyhow::Error::new(err).context("no endpoint answered"));
    }
    if ctx.json() {
        output::print_json(&json!({
            "nodes": nodes.iter().map(|(e, r)| match r {
                Ok(s) => json!({ "endpoint": e, "ok": true, "status": output::status_json(s) }),
                Err(err) => json!({ "endpoint": e, "ok": false, "error": err.message }),
            }).collect::<Vec<_>>(),
            "leader": leader.as_ref().map(output::status_json),
        }));
        return Ok(());
    }
    let mut columns = vec![
        "ENDPOINT", "NODE", "DC", "ROLE", "TERM", "LEADER", "LAST_LOG", "APPLIED", "FORMAT",
        "SUPPORTS", "AUTH", "TLS",
    ];
    if args.digest {
        columns.push("DIGEST");
    }
    let mut t = Table::new(&columns);
    for (e, r) in &nodes {
        match r {
            Ok(s) => t.row({
                let mut row = vec![
                    e.clone(),
                    s.node_id.to_string(),
                    s.dc.clone(),
                    if s.role == "leader" && !s.acting {
                        // Establishing, or stepped down for want of a majority.
                        "leader (not acting)".into()
                    } else {
                        s.role.clone()
                    },
                    s.term.to_string(),
                    if s.leader_id == 0 {
                        "-".into()
                    } else {
                        format!("{} ({})", s.leader_id, s.leader_addr)
                    },
                    s.last_log_index.to_string(),
                    s.applied_index.to_string(),
                    // The cluster's format version as this node applied it,
                    // and the versions this node supports.
                    output::format_version(s.cluster_format_version),
                    output::format_range(s.min_format_version, s.max_format_version),
                    // Empty from a server without --auth (an older build).
                    output::dash(&s.auth),
                    if s.tls { "yes" } else { "no" }.into(),
                ];
                if args.digest {
                    row.push(format!("{:016x}", s.state_digest));
                }
                row
            }),
            Err(err) => t.row(vec![
                e.clone(),
                "-".into(),
                "-".into(),
                format!("unreachable: {}", err.message),
            ]),
        }
    }
    out!("{}", t.render());
    if let Some(l) = leader.filter(|l| l.role == "leader") {
        outln!();
        let by_state: std::collections::BTreeMap<_, _> = l.tasks_by_state.iter().collect();
        let tasks: Vec<String> = by_state.iter().map(|(k, v)| format!("{k} {v}")).collect();
        outln!("leader {} ({}), term {}", l.node_id, l.leader_addr, l.term);
        outln!(
            "cluster format version: {}",
            output::format_version(l.cluster_format_version)
        );
        outln!(
            "tasks: {}",
            if tasks.is_empty() {
                "none".to_string()
            } else {
                tasks.join(", ")
            }
        );
        outln!(
            "agents: {} known, {} connected",
            l.agents,
            l.agents_connected
        );
        outln!("deadlines missed: {}", l.deadlines_missed);
        if let Some(w) = output::gpu_weights_text(&l.gpu_weight_milli) {
            outln!("gpu weights: {w} (any other model 1.0)");
        }
        if !l.queues.is_empty() {
            outln!();
            out!("{}", output::queues_table(&l.queues));
        }
    } else {
        outln!("\nno leader known right now");
    }
    Ok(())
}
