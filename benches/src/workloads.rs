//! The workloads. Every client is its own `tidal_client::Client`; agents are
//! real sessions (`Agents/Session`) held by this process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use tidal_client::v1::{self, agent_message::Msg as In, server_message::Msg as Out};
use tidal_client::Client;
use tokio::sync::mpsc;

use crate::stats::{histogram, summary};

fn spec(key: String) -> v1::TaskSpec {
    v1::TaskSpec {
        task_type: "t2i".into(),
        payload: vec![b'x'; 200],
        idempotency_key: key,
        ..Default::default()
    }
}

/// Runs `clients` submitters until `stop`; each records its latencies and,
/// when `started` is given, the submit time of each key.
async fn submitters(
    endpoints: &[String],
    clients: usize,
    batch: usize,
    duration: Duration,
    started: Option<Arc<Mutex<HashMap<String, Instant>>>>,
) -> anyhow::Result<(u64, hdrhistogram::Histogram<u64>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for k in 0..clients {
        let client = Client::new(endpoints.to_vec())?;
        let (stop, started) = (stop.clone(), started.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut ok = 0u64;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let specs: Vec<v1::TaskSpec> = (0..batch)
                    .map(|_| {
                        n += 1;
                        spec(format!("b{k}-{n}"))
                    })
                    .collect();
                let t0 = Instant::now();
                if let Some(s) = &started {
                    let mut s = s.lock().expect("lock");
                    for sp in &specs {
                        s.insert(sp.idempotency_key.clone(), t0);
                    }
                }
                if let Ok(results) = client.submit(specs).await {
                    let _ = h.record(t0.elapsed().as_micros() as u64);
                    ok += results.iter().filter(|r| r.error.is_none()).count() as u64;
                }
            }
            (ok, h)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    let mut all = histogram();
    for t in tasks {
        let (ok, h) = t.await?;
        total += ok;
        all.add(h).context("merging histograms")?;
    }
    Ok((total, all))
}

pub async fn submit(
    endpoints: &[String],
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Value> {
    let t0 = Instant::now();
    let (ok, h) = submitters(endpoints, clients, 1, duration, None).await?;
    let secs = t0.elapsed().as_secs_f64();
    Ok(json!({
        "name": format!("submit, {clients} clients"),
        "submitted_per_s": ok as f64 / secs,
        "submit_latency": summary(&h),
    }))
}

pub async fn e2e(
    endpoints: &[String],
    clients: usize,
    agents: usize,
    slots: u32,
    batch: usize,
    duration: Duration,
) -> anyhow::Result<Value> {
    let started: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let assigned = Arc::new(Mutex::new(histogram()));
    let completed = Arc::new(Mutex::new(histogram()));
    let (n_assigned, n_completed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut sessions = Vec::new();
    for a in 0..agents {
        let client = Client::new(endpoints.to_vec())?;
        let (tx, rx) = mpsc::channel(4096);
        let register = v1::AgentMessage {
            msg: Some(In::Register(v1::Register {
                spec: Some(v1::AgentSpec {
                    id: format!("bench-agent-{a}"),
                    dc: "bench".into(),
                    task_types: vec!["t2i".into()],
                    slots,
                    ..Default::default()
                }),
                running: vec![],
            })),
        };
        let mut session = client
            .open_session(register, rx)
            .await
            .context("opening an agent session")?;
        let hb = tx.clone();
        let beat = tokio::spawn(async move {
            let mut seq = 0;
            loop {
                seq += 1;
                let m = v1::AgentMessage {
                    msg: Some(In::Heartbeat(v1::Heartbeat { seq, free_slots: 0 })),
                };
                if hb.send(m).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let (started, assigned, completed) = (started.clone(), assigned.clone(), completed.clone());
        let (n_assigned, n_completed) = (n_assigned.clone(), n_completed.clone());
        sessions.push((
            beat,
            tokio::spawn(async move {
                let mut keys: HashMap<String, String> = HashMap::new();
                while let Ok(Some(m)) = session.inbound.message().await {
                    match m.msg {
                        Some(Out::Assignment(a)) => {
                            let key = a
                                .spec
                                .as_ref()
                                .map(|s| s.idempotency_key.clone())
                                .unwrap_or_default();
                            if let Some(t0) = started.lock().expect("lock").get(&key) {
                                let _ = assigned
                                    .lock()
                                    .expect("lock")
                                    .record(t0.elapsed().as_micros() as u64);
                            }
                            n_assigned.fetch_add(1, Ordering::Relaxed);
                            keys.insert(a.task_id.clone(), key);
                            let done = v1::AgentMessage {
                                msg: Some(In::Completed(v1::TaskCompleted {
                                    task_id: a.task_id,
                                    token: a.token,
                                    success: true,
                                    ..Default::default()
                                })),
                            };
                            if tx.send(done).await.is_err() {
                                return;
                            }
                        }
                        Some(Out::CompletionAck(ack)) if ack.accepted => {
                            if let Some(key) = keys.remove(&ack.task_id) {
                                if let Some(t0) = started.lock().expect("lock").remove(&key) {
                                    let _ = completed
                                        .lock()
                                        .expect("lock")
                                        .record(t0.elapsed().as_micros() as u64);
                                }
                            }
                            n_completed.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
            }),
        ));
    }
    let t0 = Instant::now();
    let (submitted, submit_h) =
        submitters(endpoints, clients, batch, duration, Some(started.clone())).await?;
    let secs = t0.elapsed().as_secs_f64();
    let (a, c) = (
        n_assigned.load(Ordering::Relaxed),
        n_completed.load(Ordering::Relaxed),
    );
    for (beat, s) in sessions {
        beat.abort();
        s.abort();
    }
    let result = json!({
        "name": format!("e2e, {clients} clients x {batch}, {agents} agents x {slots} slots"),
        "submitted_per_s": submitted as f64 / secs,
        "assigned_per_s": a as f64 / secs,
        "completed_per_s": c as f64 / secs,
        "submit_latency": summary(&submit_h),
        "assign_latency": summary(&assigned.lock().expect("lock")),
        "complete_latency": summary(&completed.lock().expect("lock")),
    });
    Ok(result)
}
