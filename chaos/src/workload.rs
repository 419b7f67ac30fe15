//! The clients: each submits tasks under unique keys, reads known tasks back
//! and cancels some, recording every operation as `invoke` and then `ok`,
//! `fail` (certainly not applied) or `info` (unknown). After an `info` the
//! client retires its process name and goes on under a new one, as in
//! Jepsen: an operation with an unknown outcome may still take effect.
//!
//! With [`Mix::Classes`] the submits are of every latency class, so that
//! online work preempts offline work while the faults play: a key's
//! suffix says what it is (see [`Kind`]), which the preemption checker
//! reads.

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

/// What the clients submit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// Nearline tasks of the agents' usual work time.
    Plain,
    /// Online, preemptible offline (stopped with notice), suspendable
    /// offline and non-preemptible offline tasks.
    Classes,
}

/// A task of [`Mix::Classes`], named by its key's suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Online, short: the work that preempts.
    Online,
    /// Offline, preempted by a stop with notice (SIGTERM, a grace).
    Stoppable,
    /// Offline, preempted by suspension in place.
    Suspendable,
    /// Offline, `preemptible = false`.
    Unpreemptible,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::Online,
        Kind::Stoppable,
        Kind::Suspendable,
        Kind::Unpreemptible,
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            Kind::Online => ".on",
            Kind::Stoppable => ".stop",
            Kind::Suspendable => ".susp",
            Kind::Unpreemptible => ".keep",
        }
    }

    /// The kind a key names (`None`: a key of [`Mix::Plain`]).
    pub fn of_key(key: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| key.ends_with(k.suffix()))
    }

    /// Whether online work may preempt tasks of this kind.
    pub fn preemptible(self) -> bool {
        matches!(self, Kind::Stoppable | Kind::Suspendable)
    }

    /// How long its worker works (ms): offline work outlasts a few online
    /// tasks, so online submits find the agents full.
    fn work_ms(self) -> u64 {
        match self {
            Kind::Online => 100,
            Kind::Stoppable | Kind::Suspendable => 1500,
            Kind::Unpreemptible => 600,
        }
    }

    fn spec(self, key: &str) -> v1::TaskSpec {
        let offline = self != Kind::Online;
        v1::TaskSpec {
            task_type: "t2i".into(),
            idempotency_key: key.into(),
            payload: format!("{key} work-ms={}", self.work_ms()).into_bytes(),
            max_attempts: 20,
            priority: if offline {
                v1::Priority::Offline
            } else {
                v1::Priority::Online
            } as i32,
            preemptible: (self == Kind::Unpreemptible).then_some(false),
            suspendable: self == Kind::Suspendable,
            preempt_grace_ms: if self == Kind::Stoppable { 300 } else { 0 },
            // Retries come back quickly, so the run settles in time.
            retry_backoff_base_ms: 100,
            retry_backoff_max_ms: 400,
            ..Default::default()
        }
    }
}

/// A weighted pick of a kind: online work often enough to preempt.
fn pick_kind(rng: &mut rand::rngs::StdRng) -> Kind {
    match rng.gen_range(0..100) {
        0..30 => Kind::Online,
        30..60 => Kind::Stoppable,
        60..85 => Kind::Suspendable,
        _ => Kind::Unpreemptible,
    }
}

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
        mix: Mix,
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
                mix,
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
        preempted: Some(t.preempted),
        suspended: t.suspended.then_some(true),
        ..e
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_client(
    mix: Mix,
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
                let key = if mix == Mix::Classes {
                    format!("w{k}-{n}{}", pick_kind(&mut rng).suffix())
                } else if rng.gen_bool(remote_share) {
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
        // The classes' offline work is long: fewer submits keep the
        // backlog one the agents clear soon after the faults end.
        let pause = match mix {
            Mix::Plain => 20..60,
            Mix::Classes => 40..120,
        };
        tokio::time::sleep(Duration::from_millis(rng.gen_range(pause))).await;
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
    let spec = match Kind::of_key(key) {
        Some(kind) => kind.spec(key),
        None => v1::TaskSpec {
            task_type: if remote { REMOTE_TYPE } else { "t2i" }.into(),
            idempotency_key: key.into(),
            payload: key.as_bytes().to_vec(),
            max_attempts: 20,
            // Half the plain tasks take a GPU device (agents have one per
            // slot), for the exclusivity checker's device check.
            gpus: u32::from(key.bytes().last().is_some_and(|b| b % 2 == 0)),
            ..Default::default()
        },
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
