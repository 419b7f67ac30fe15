//! The sink: a stand-in for the external resource a worker writes to (a
//! bucket, a database), which checks fencing tokens the way a user's
//! storage should. It accepts a task's token only if no higher token for
//! that task has been seen, and records every contact in the history.
//!
//! Protocol, one line each way: the worker sends `BEGIN <task> <token>
//! <agent> [gpus=<ids>]` when it starts (`ids`: its `TIDAL_GPU_IDS`, when
//! it was given devices) and `COMMIT <task> <token> <agent>` when its work
//! is done; the sink answers `OK` or `STALE <highest>`. When the worker's
//! connection closes (it exited or was killed) the sink records `end`.
//!
//! A worker process opens one connection, so a connection is one worker
//! run: the sink numbers them, and `begin` (the run's start), `commit` and
//! `end` (the run's end) carry the run's number (`run`), which the
//! one-run-per-token checker reads.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::history::{Event, Recorder};

pub struct Sink {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sink {
    pub async fn start(history: Recorder) -> anyhow::Result<Sink> {
        Sink::start_at(history, IpAddr::V4(Ipv4Addr::LOCALHOST)).await
    }

    /// A sink listening on `ip` (the netns mode: the root namespace's
    /// address on the run's bridge, which the agents' workers reach).
    pub async fn start_at(history: Recorder, ip: IpAddr) -> anyhow::Result<Sink> {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
        let addr = listener.local_addr()?;
        let highest: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let runs = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (history, highest) = (history.clone(), highest.clone());
                let run = runs.fetch_add(1, Ordering::Relaxed) + 1;
                tokio::spawn(async move {
                    let (r, mut w) = stream.into_split();
                    let mut lines = BufReader::new(r).lines();
                    let mut last: Option<(String, u64, String)> = None;
                    while let Ok(Some(line)) = lines.next_line().await {
                        let parts: Vec<&str> = line.split_whitespace().collect();
                        let (verb, task, token, agent, devices) = match parts[..] {
                            [verb @ ("BEGIN" | "COMMIT"), task, token, agent] => {
                                (verb, task, token, agent, None)
                            }
                            [verb @ "BEGIN", task, token, agent, gpus] => {
                                match gpus.strip_prefix("gpus=") {
                                    Some(ids) => (verb, task, token, agent, Some(ids.to_string())),
                                    None => {
                                        let _ = w.write_all(b"ERR bad request\n").await;
                                        break;
                                    }
                                }
                            }
                            _ => {
                                let _ = w.write_all(b"ERR bad request\n").await;
                                break;
                            }
                        };
                        let Ok(token) = token.parse::<u64>() else {
                            break;
                        };
                        // Check and record under one lock, so the history
                        // shows the order in which the sink decided.
                        let reply = {
                            let mut h = highest.lock().expect("sink lock poisoned");
                            let top = h.entry(task.to_string()).or_insert(0);
                            let accepted = token >= *top;
                            if accepted {
                                *top = token;
                            }
                            let reply = if accepted {
                                "OK\n".to_string()
                            } else {
                                format!("STALE {top}\n")
                            };
                            history.record(Event {
                                task: Some(task.to_string()),
                                token: Some(token),
                                agent: Some(agent.to_string()),
                                accepted: Some(accepted),
                                run: Some(run),
                                devices,
                                ..Event::new("sink", "event", &verb.to_lowercase())
                            });
                            reply
                        };
                        last = Some((task.to_string(), token, agent.to_string()));
                        if w.write_all(reply.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                    if let Some((task, token, agent)) = last {
                        history.record(Event {
                            task: Some(task),
                            token: Some(token),
                            agent: Some(agent),
                            run: Some(run),
                            ..Event::new("sink", "event", "end")
                        });
                    }
                });
            }
        });
        Ok(Sink { addr, task })
    }
}

#[cfg(test)]
#[path = "sink_test.rs"]
mod tests;
