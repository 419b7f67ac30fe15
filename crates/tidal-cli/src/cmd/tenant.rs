//! `tidal tenant set | list`: tenants' limits (max pending, running slots, GPUs, submit rate, weight) and their usage.

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use tidal_proto::v1;

use super::Ctx;
use crate::opts::ClientOpts;
use crate::output::{self, out, Table};

#[derive(Subcommand, Debug)]
pub enum TenantCmd {
    /// Set a tenant's limits, replacing all of them: a limit left out is no limit.
    #[command(
        after_help = "Example: tidal tenant set acme --max-pending 1000 --max-running-slots 16 --max-gpus 8\n\
        A task counts against its --tenant (\"default\" without one). Over max-pending a submit is refused\n\
        (RESOURCE_EXHAUSTED, exit code 1), as is one past the submit rate; at max-running-slots or max-gpus the tenant's tasks wait and\n\
        the capacity goes to other tenants. Lowering a limit stops increases; it takes nothing away."
    )]
    Set(SetArgs),
    /// List tenants with limits or tasks, usage against limits.
    List(ListArgs),
}

#[derive(Args, Debug)]
pub struct SetArgs {
    /// Tenant name.
    pub name: String,
    /// At most this many of the tenant's tasks pending at once.
    #[arg(long, value_name = "N")]
    pub max_pending: Option<u64>,
    /// At most this many slots held by the tenant's assigned and running tasks.
    #[arg(long, value_name = "N")]
    pub max_running_slots: Option<u64>,
    /// At most this many GPUs held by the tenant's assigned and running tasks.
    #[arg(long, value_name = "N")]
    pub max_gpus: Option<u64>,
    /// Submits per second, with an optional burst (default: one second's worth): the leader's token bucket.
    #[arg(long, value_name = "R[/s][:BURST]", value_parser = parse_rate)]
    pub submit_rate: Option<(u32, u32)>,
    /// The tenant's share against other tenants of a queue, 1..=1000.
    #[arg(long, value_name = "W", default_value_t = 1)]
    pub weight: u32,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientOpts,
}

/// `R`, `R/s`, `R:BURST` or `R/s:BURST`, R at least 1; the burst defaults to R.
pub fn parse_rate(s: &str) -> Result<(u32, u32), String> {
    let (rate, burst) = match s.split_once(':') {
        Some((r, b)) => (r, Some(b)),
        None => (s, None),
    };
    let rate = rate.strip_suffix("/s").unwrap_or(rate);
    let bad = || format!("{s:?} is not a submit rate: use R[/s][:BURST], e.g. 100/s:200");
    let rate: u32 = rate.trim().parse().map_err(|_| bad())?;
    if rate == 0 {
        return Err(format!(
            "a submit rate of 0 admits nothing: use at least 1 ({s:?})"
        ));
    }
    let burst = match burst {
        Some(b) => b.trim().parse().map_err(|_| bad())?,
        None => rate,
    };
    if burst == 0 {
        return Err(format!(
            "a burst of 0 admits nothing: use at least 1 ({s:?})"
        ));
    }
    Ok((rate, burst))
}

fn of_max(used: u64, max: Option<u64>) -> String {
    match max {
        Some(m) => format!("{used}/{m}"),
        None => format!("{used}/-"),
    }
}

fn rate(l: &v1::TenantLimits) -> String {
    if l.submit_rate_per_s == 0 {
        "-".to_string()
    } else {
        format!("{}/s:{}", l.submit_rate_per_s, l.submit_burst)
    }
}

/// What the tenant's held GPUs weigh (what max-gpus counts), in GPUs of
/// weight 1; a server that predates weights counts each GPU as 1.
fn gpu_weight(x: &v1::Tenant) -> f64 {
    if x.running_gpu_milli == 0 {
        x.running_gpus as f64
    } else {
        x.running_gpu_milli as f64 / 1000.0
    }
}

/// `1.5/4`: the weighted GPUs in use of the tenant's max-gpus.
fn gpus_of_max(x: &v1::Tenant, max: Option<u64>) -> String {
    match max {
        Some(max) => format!("{}/{max}", gpu_weight(x)),
        None => format!("{}/-", gpu_weight(x)),
    }
}

pub fn tenants_table(tenants: &[v1::Tenant]) -> String {
    let mut t = Table::new(&[
        "TENANT",
        "PENDING/MAX",
        "RUNNING_SLOTS/MAX",
        "GPUS/MAX",
        "RATE",
        "WEIGHT",
    ]);
    for x in tenants {
        let l = x.limits.unwrap_or_default();
        t.row(vec![
            x.name.clone(),
            of_max(x.pending, l.max_pending),
            of_max(x.running_slots, l.max_running_slots),
            gpus_of_max(x, l.max_gpus),
            rate(&l),
            l.weight.max(1).to_string(),
        ]);
    }
    t.render()
}

pub fn tenant_json(x: &v1::Tenant) -> Value {
    let l = x.limits.unwrap_or_default();
    json!({
        "name": x.name,
        "limits_set": x.limits_set,
        "pending": x.pending,
        "running_slots": x.running_slots,
        "running_gpus": x.running_gpus,
        "running_gpu_weight": gpu_weight(x),
        "max_pending": l.max_pending,
        "max_running_slots": l.max_running_slots,
        "max_gpus": l.max_gpus,
        "submit_rate_per_s": (l.submit_rate_per_s > 0).then_some(l.submit_rate_per_s),
        "submit_burst": (l.submit_rate_per_s > 0).then_some(l.submit_burst),
        "weight": l.weight.max(1),
    })
}

pub async fn run(cmd: TenantCmd) -> anyhow::Result<()> {
    match cmd {
        TenantCmd::Set(a) => {
            if !(1..=1000).contains(&a.weight) {
                return Err(anyhow!(
                    "--weight {} is out of range: use 1..=1000",
                    a.weight
                ));
            }
            let ctx = Ctx::new(&a.client)?;
            let (per_s, burst) = a.submit_rate.unwrap_or((0, 0));
            let limits = v1::TenantLimits {
                max_pending: a.max_pending,
                max_running_slots: a.max_running_slots,
                max_gpus: a.max_gpus,
                submit_rate_per_s: per_s,
                submit_burst: burst,
                weight: a.weight,
            };
            let t = ctx
                .client
                .set_tenant(&a.name, limits)
                .await
                .with_context(|| format!("setting tenant {}", a.name))?;
            if ctx.json() {
                output::print_json(&tenant_json(&t));
            } else {
                out!("{}", tenants_table(std::slice::from_ref(&t)));
            }
        }
        TenantCmd::List(a) => {
            let ctx = Ctx::new(&a.client)?;
            let ts = ctx.client.list_tenants().await.context("listing tenants")?;
            if ctx.json() {
                output::print_json(
                    &json!({ "tenants": ts.iter().map(tenant_json).collect::<Vec<_>>() }),
                );
            } else {
                out!("{}", tenants_table(&ts));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_and_without_unit_and_burst() {
        assert_eq!(parse_rate("100"), Ok((100, 100)));
        assert_eq!(parse_rate("100/s"), Ok((100, 100)));
        assert_eq!(parse_rate("100/s:250"), Ok((100, 250)));
        assert_eq!(parse_rate("5:1"), Ok((5, 1)));
        for bad in ["", "0", "x/s", "10/m", "10:0", "10:x", "-1"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_table_shows_usage_against_limits() {
        let t = v1::Tenant {
            name: "acme".into(),
            limits: Some(v1::TenantLimits {
                max_pending: Some(10),
                max_gpus: Some(4),
                submit_rate_per_s: 100,
                submit_burst: 200,
                weight: 3,
                ..v1::TenantLimits::default()
            }),
            limits_set: true,
            pending: 2,
            running_slots: 5,
            running_gpus: 3,
            running_gpu_milli: 1500,
        };
        let table = tenants_table(std::slice::from_ref(&t));
        let row = table.lines().nth(1).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        // Three GPUs (one A100, two A40s) weigh 1.5 of max-gpus 4.
        assert_eq!(cells, ["acme", "2/10", "5/-", "1.5/4", "100/s:200", "3"]);
        // A server that predates weights: each GPU weighs 1.
        let old = v1::Tenant {
            running_gpu_milli: 0,
            ..t
        };
        assert_eq!(gpus_of_max(&old, Some(4)), "3/4");
    }
}
