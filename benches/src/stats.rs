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
