//! The clients: each submits tasks under unique keys, reads known tasks back
//! and cancels some, recording every operation as `invoke` and then `ok`,
//! `fail` (certainly not applied) or `info` (unknown). After an `info` the
//! client retires its process name and goes on under a new one, as in
//! Jepsen: an operation with an unknown outcome may still take effect.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tidal_client::tidal_tls::rustls::ClientConfig;
use tidal_client::{task_state_name, v1, Client, ClientOptions, Error, Token};
use tokio::task::JoinHandle;
use tonic::Code;

use crate::history::{Event, Recorder};
use crate::link::Peer;
use crate::net::Net;

pub struct Workload {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Ids of acknowledged submits, shared by the clients so they read and
/// cancel each other's tasks.
type Known = Arc<Mutex<Vec<String>>>;

impl Workload {
    /// `remote_share` of the submits are of the task type only the second
    /// DC runs (`tts`, keys ending in `-remote`); 0 with one DC. Client k
    /// dials from `net`'s address of `Peer::Client(k)`, over TLS with `tls`,
    /// presenting `token` (the run's admin token) when there is one.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        clients: usize,
        endpoints: Vec<String>,
        net: &Net,
        history: Recorder,
        seed: u64,
        remote_share: f64,
        tls: Option<Arc<ClientConfig>>,
        token: Option<Token>,
    ) -> anyhow::Result<Workload> {
        let stop = Arc::new(AtomicBool::new(false));
        let known: Known = Arc::default();
        let mut tasks = Vec::new();
        for k in 1..=clients as u8 {
            let client = Client::with_options(
                endpoints.clone(),
                ClientOptions {
                    request_timeout: Duration::from_millis(1500),
                    retry_for: Duration::from_secs(4),
                    connect_timeout: Duration::from_millis(300),
                    source_ip: Some(net.ip(Peer::Client(k))),
                    tls: tls.clone(),
                    token: token.clone(),
                    ..ClientOptions::default()
                },
            )?;
            let (stop, known, history) = (stop.clone(), known.clone(), history.clone());
            let rng =
                rand::rngs::StdRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(u64::from(k)));
            tasks.push(tokio::spawn(run_client(
                k,
                client,
                stop,
                known,
                history,
                rng,
                remote_share,
            )));
        }
        Ok(Workload { stop, tasks })
    }

    /// Stops the clients after their operation in flight.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Errors that say the operation certainly did not take effect.
fn definite(e: &Error) -> bool {
    matches!(
        e.code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::ResourceExhausted
            | Code::OutOfRange
    )
}

fn observed(e: Event, t: &v1::Task) -> Event {
    Event {
        task: Some(t.id.clone()),
        state: Some(task_state_name(t.state).to_string()),
        token: Some(t.token),
        attempt: Some(t.attempt),
        agent: Some(t.agent.clone()),
        remote: (!t.forwarded_to.is_empty()).then(|| format!("{}/{}", t.forwarded_to, t.remote_id)),
        ..e
    }
}

async fn run_client(
    k: u8,
    client: Client,
    stop: Arc<AtomicBool>,
    known: Known,
    history: Recorder,
    mut rng: rand::rngs::StdRng,
    remote_share: f64,
) {
    let mut generation = 0u32;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let proc = format!("c{k}.{generation}");
        let roll: f64 = rng.gen();
        let pick = {
            let known = known.lock().expect("known lock poisoned");
            (!known.is_empty()).then(|| known[rng.gen_range(0..known.len())].clone())
        };
        let unknown = match pick {
            Some(id) if roll < 0.4 => get(&client, &proc, &id, &history).await,
            Some(id) if roll < 0.47 => cancel(&client, &proc, &id, &history).await,
            _ => {
                n += 1;
                let key = if rng.gen_bool(remote_share) {
                    format!("w{k}-{n}{}", crate::check::forwarding::REMOTE_KEY_SUFFIX)
                } else {
                    format!("w{k}-{n}")
                };
                submit(&client, &proc, &key, &history, &known).await
            }
        };
        if unknown {
            generation += 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..60))).await;
    }
}

/// The task type only the second DC's agents run.
pub const REMOTE_TYPE: &str = "tts";

/// Each returns whether the outcome is unknown (the process retires).
async fn submit(client: &Client, proc: &str, key: &str, history: &Recorder, known: &Known) -> bool {
    let inv = history.record(Event {
        key: Some(key.into()),
        ..Event::new(proc, "invoke", "submit")
    });
    let remote = key.ends_with(crate::check::forwarding::REMOTE_KEY_SUFFIX);
    let spec = v1::TaskSpec {
        task_type: if remote { REMOTE_TYPE } else { "t2i" }.into(),
        idempotency_key: key.into(),
        payload: key.as_bytes().to_vec(),
        max_attempts: 20,
        ..Default::default()
    };
    match client.submit_one(spec).await {
        Ok(r) => {
            known
                .lock()
                .expect("known lock poisoned")
                .push(r.id.clone());
            history.record(Event {
                key: inv.key,
                task: Some(r.id),
                log_index: Some(r.log_index),
                existed: Some(r.existed),
                ..Event::new(proc, "ok", "submit")
            });
            false
        }
        Err(e) => done_with_error(proc, "submit", inv, e, history),
    }
}

async fn get(client: &Client, proc: &str, id: &str, history: &Recorder) -> bool {
    let inv = history.record(Event {
        task: Some(id.into()),
        ..Event::new(proc, "invoke", "get")
    });
    match client.get_task(id, false).await {
        Ok(t) => {
            history.record(observed(
                Event {
                    applied: Some(t.read_index),
                    ..Event::new(proc, "ok", "get")
                },
                &t,
            ));
            false
        }
        Err(e) if e.code == Code::NotFound => {
            // A linearizable read that did not find the task: the checkers
            // decide whether it should have.
            history.record(Event {
                task: Some(id.into()),
                state: Some("absent".into()),
                detail: Some(e.message),
                ..Event::new(proc, "ok", "get")
            });
            false
        }
        Err(e) => done_with_error(proc, "get", inv, e, history),
    }
}

async fn cancel(client: &Client, proc: &str, id: &str, history: &Recorder) -> bool {
    let inv = history.record(Event {
        task: Some(id.into()),
        ..Event::new(proc, "invoke", "cancel")
    });
    match client.cancel_task(id).await {
        Ok(t) => {
            history.record(observed(
                Event {
                    log_index: Some(t.read_index),
                    ..Event::new(proc, "ok", "cancel")
                },
                &t,
            ));
            false
        }
        Err(e) => done_with_error(proc, "cancel", inv, e, history),
    }
}

fn done_with_error(proc: &str, f: &str, inv: Event, e: Error, history: &Recorder) -> bool {
    let unknown = !definite(&e);
    history.record(Event {
        task: inv.task,
        key: inv.key,
        detail: Some(format!("{:?}: {}", e.code, e.message)),
        ..Event::new(proc, if unknown { "info" } else { "fail" }, f)
    });
    unknown
}
