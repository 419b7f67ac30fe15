//! Latency summaries, the machine record and the results table.

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// A histogram of microseconds, 1 us to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// p50/p99/p999/max in milliseconds.
pub fn summary(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

pub fn machine() -> Value {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_string();
    json!({ "cores": cores, "cpu": cpu, "kernel": kernel.trim() })
}

pub fn git_revision() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub fn table(report: &Value) -> String {
    let mut out = format!(
        "machine: {} cores, {} | revision {} | {}\n",
        report["machine"]["cores"],
        report["machine"]["cpu"],
        report["git_revision"],
        report["settings"]
    );
    out.push_str(&format!(
        "{:<28} {:>12} {:>12} {:>12} {:>12}\n",
        "run", "per second", "p50 ms", "p99 ms", "p999 ms"
    ));
    for r in report["results"].as_array().into_iter().flatten() {
        if let Some(f) = r.get("first_assignment_after_kill") {
            out.push_str(&format!(
                "{:<28} {:>12} {:>12} {:>12} {:>12}\n",
                format!("{} (first assignment)", r["name"].as_str().unwrap_or("")),
                format!("lost {}", r["lost"]),
                f["p50_ms"].to_string(),
                f["p99_ms"].to_string(),
                f["max_ms"].to_string()
            ));
            continue;
        }
        if let Some(restarts) = r.get("restarts").and_then(Value::as_array) {
            out.push_str(&format!(
                "{}: {:.0} acknowledged tasks/s, lost {}\n",
                r["name"].as_str().unwrap_or(""),
                r["acknowledged_per_s"].as_f64().unwrap_or(0.0),
                r["lost"]
            ));
            for x in restarts {
                out.push_str(&format!(
                    "  round {} node {}{}: exit code {} after {:.0} ms; longest time without an acknowledged submit {:.0} ms\n",
                    x["round"],
                    x["node"],
                    if x["was_leader"].as_bool() == Some(true) { " (leader)" } else { "" },
                    x["exit_code"],
                    x["exit_ms"].as_f64().unwrap_or(0.0),
                    x["longest_gap_ms"].as_f64().unwrap_or(0.0)
                ));
            }
            continue;
        }
        if let Some(samples) = r.get("samples").and_then(Value::as_array) {
            out.push_str(&format!(
                "{}: submitted {}, completed {}\n",
                r["name"].as_str().unwrap_or(""),
                r["submitted"],
                r["completed"]
            ));
            for x in samples {
                out.push_str(&format!(
                    "  {:>5} s: completed {:>8}, tasks in state {:>7}, leader rss {} MiB (peak {})\n",
                    x["seconds"], x["completed"], x["tasks_in_state"], x["leader_rss_mib"], x["leader_peak_mib"]
                ));
            }
            continue;
        }
        if let Some(h) = r.get("submit_to_worker_start") {
            let l = &r["leader_clock"];
            out.push_str(&format!(
                "{}\n  submit -> worker start: n {}, p50 {} / p99 {} / max {} ms; target under {} ms: {}; victims {}, not preempted (left out) {}\n  submit answered p50 {} / p99 {} ms; leader clock p50 / p99 from submit: victims stopped {} / {}, assigned {} / {}, start reported {} / {} ms; suspended at the end {}\n",
                r["name"].as_str().unwrap_or(""),
                h["count"],
                h["p50_ms"],
                h["p99_ms"],
                h["max_ms"],
                r["target_ms"],
                if r["target_met"].as_bool() == Some(true) { "met" } else { "NOT met" },
                r["victims_total"],
                r["not_preempted"],
                r["submit_acknowledged"]["p50_ms"],
                r["submit_acknowledged"]["p99_ms"],
                l["submit_to_victims_stopped"]["p50_ms"],
                l["submit_to_victims_stopped"]["p99_ms"],
                l["submit_to_assigned"]["p50_ms"],
                l["submit_to_assigned"]["p99_ms"],
                l["submit_to_start_reported"]["p50_ms"],
                l["submit_to_start_reported"]["p99_ms"],
                r["suspended_left_at_end"],
            ));
            continue;
        }
        if let Some(h) = r.get("heartbeat_round_trip") {
            out.push_str(&format!(
                "{:<28} {:>12.0} {:>12} {:>12} {:>12}\n",
                format!("{} (heartbeats)", r["name"].as_str().unwrap_or("")),
                r["heartbeats_per_s"].as_f64().unwrap_or(0.0),
                h["p50_ms"].to_string(),
                h["p99_ms"].to_string(),
                h["p999_ms"].to_string()
            ));
            out.push_str(&format!(
                "  leader CPU {} cores, load generator {} cores, registered in {:.1} s\n",
                r["leader_cpu_cores"],
                r["load_generator_cpu_cores"],
                r["registered_seconds"].as_f64().unwrap_or(0.0)
            ));
            continue;
        }
        if let Some(lines) = r.get("ratios").and_then(Value::as_array) {
            for l in lines {
                out.push_str(&format!(
                    "tidal/etcd: {}: throughput x{}, p99 x{}\n",
                    l["what"].as_str().unwrap_or(""),
                    l["throughput"],
                    l["p99"]
                ));
            }
            continue;
        }
        if r.get("memory_filled").is_some() {
            let mib = |k: &str| {
                r[k].as_array()
                    .into_iter()
                    .flatten()
                    .map(|n| {
                        format!(
                            "node {} {} MiB (peak {})",
                            n["node"], n["rss_mib"], n["peak_mib"]
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.push_str(&format!(
                "{}\n  filled at {:.0} tasks/s; leader node {}\n  memory filled:         {}\n  snapshot: {:.1} s (every server {:.1} s); {}\n  restart to service: {:.1} s; {}\n",
                r["name"].as_str().unwrap_or(""),
                r["fill_tasks_per_s"].as_f64().unwrap_or(0.0),
                r["leader"],
                mib("memory_filled"),
                r["snapshot_seconds"].as_f64().unwrap_or(0.0),
                r["snapshot_every_server_seconds"].as_f64().unwrap_or(0.0),
                mib("memory_after_snapshot"),
                r["restart_to_service_seconds"].as_f64().unwrap_or(0.0),
                mib("memory_after_restart"),
            ));
            let a = &r["snapshot_apply"];
            let pauses = a["apply_pause_max_ms"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| format!("node {} {}", n["node"], n["apply_pause_max_ms"]))
                .collect::<Vec<_>>()
                .join(", ");
            out.push_str(&format!(
                "  longest apply pause during the leader's snapshot: {} ms (apply_pause_max_ms by node: {pauses})\n  probe, no snapshot:        {}\n  probe, leader's snapshot:  {}\n  probe, followers' snapshots: {}\n",
                a["leader_apply_pause_max_ms"],
                describe_probe(&a["probe_without_snapshot"]),
                describe_probe(&a["probe_leader_snapshot"]),
                describe_probe(&a["probe_follower_snapshots"]),
            ));
            continue;
        }
        for (metric, rate, lat) in [
            ("submitted", &r["submitted_per_s"], &r["submit_latency"]),
            ("assigned", &r["assigned_per_s"], &r["assign_latency"]),
            ("completed", &r["completed_per_s"], &r["complete_latency"]),
        ] {
            if rate.is_null() {
                continue;
            }
            out.push_str(&format!(
                "{:<28} {:>12.0} {:>12} {:>12} {:>12}\n",
                format!("{} {metric}", r["name"].as_str().unwrap_or("")),
                rate.as_f64().unwrap_or(0.0),
                lat["p50_ms"].to_string(),
                lat["p99_ms"].to_string(),
                lat["p999_ms"].to_string()
            ));
        }
    }
    out
}

/// A window's summary as one line of the table: `count, p50/p99/max ms`.
pub fn describe_probe(w: &Value) -> String {
    let failed = w["failed"].as_u64().unwrap_or(0);
    format!(
        "{} submits over {:.1} s, p50 {} / p99 {} / max {} ms{}",
        w["count"],
        w["seconds"].as_f64().unwrap_or(0.0),
        w["p50_ms"],
        w["p99_ms"],
        w["max_ms"],
        if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        }
    )
}

/// tidal/etcd ratios of throughput and p99: submit runs against put runs of
/// the same client count, in order; the end-to-end completion rate against
/// etcd's claim rate (and submit -> assigned p99 against claim p99).
pub fn ratios(tidal: &[Value], etcd: &[Value]) -> Value {
    let ratio = |a: &Value, b: &Value| match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => json!((a / b * 100.0).round() / 100.0),
        _ => Value::Null,
    };
    let mut lines = Vec::new();
    let puts = etcd.iter().filter(|e| e.get("submitted_per_s").is_some());
    for (t, e) in tidal
        .iter()
        .filter(|t| t.get("assigned_per_s").is_none())
        .zip(puts)
    {
        lines.push(json!({
            "what": format!("{} vs {}", t["name"].as_str().unwrap_or(""), e["name"].as_str().unwrap_or("")),
            "throughput": ratio(&t["submitted_per_s"], &e["submitted_per_s"]),
            "p99": ratio(&t["submit_latency"]["p99_ms"], &e["submit_latency"]["p99_ms"]),
        }));
    }
    if let (Some(t), Some(e)) = (
        tidal.iter().find(|t| t.get("completed_per_s").is_some()),
        etcd.iter().find(|e| e.get("assigned_per_s").is_some()),
    ) {
        lines.push(json!({
            "what": format!("{} completed vs {}", t["name"].as_str().unwrap_or(""), e["name"].as_str().unwrap_or("")),
            "throughput": ratio(&t["completed_per_s"], &e["assigned_per_s"]),
            "p99": ratio(&t["assign_latency"]["p99_ms"], &e["assign_latency"]["p99_ms"]),
        }));
    }
    json!({ "name": "tidal/etcd", "ratios": lines })
}
