//! Redirects and the retry policy against in-process tonic servers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidal_proto::v1::{self, cluster_server, tasks_server};
use tidal_proto::{LEADER_ADDR_KEY, NOT_PROPOSED_KEY};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};

use crate::{Client, ClientOptions};

#[derive(Clone, Debug)]
pub(crate) enum Mode {
    /// Answers.
    Lead,
    /// Not the leader (said before proposing); names this address.
    Redirect(String),
    /// Not the leader, named, without the not-proposed mark: openraft's
    /// answer for a write whose entry this node's log dropped.
    DroppedEntry(String),
    /// Names the first address this many times, then the second.
    RedirectThen(String, usize, String),
    /// Not the leader and no leader known, this many times, then answers.
    NoLeader(usize),
    /// The task does not exist.
    NotFound,
    /// What a repeat of an applied cancel gets: the task is cancelled already.
    AlreadyDone,
}

#[derive(Clone)]
pub(crate) struct Fake {
    mode: Arc<Mutex<Mode>>,
    calls: Arc<AtomicUsize>,
    /// Idempotency keys of every submit received.
    keys: Arc<Mutex<Vec<Vec<String>>>>,
    role: &'static str,
    leader_addr: String,
    /// The remote address of every Get.
    peers: Arc<Mutex<Vec<std::net::SocketAddr>>>,
    /// Cancels and replays still to take without ever answering (applied,
    /// their answer lost).
    hang: Arc<AtomicUsize>,
}

impl Fake {
    pub(crate) fn new(mode: Mode) -> Fake {
        Fake {
            mode: Arc::new(Mutex::new(mode)),
            calls: Arc::default(),
            keys: Arc::default(),
            role: "leader",
            leader_addr: String::new(),
            peers: Arc::default(),
            hang: Arc::default(),
        }
    }

    /// The next `n` cancels and replays are counted and never answered.
    pub(crate) fn hang(self, n: usize) -> Fake {
        self.hang.store(n, Ordering::SeqCst);
        self
    }

    /// Counts a call to hang, and hangs it forever, while any are left.
    async fn maybe_hang(&self) {
        let left = self
            .hang
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if left.is_ok() {
            self.calls.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
    }

    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Counts the call and answers per the mode (Ok(()) means: answer).
    #[allow(clippy::result_large_err)] // tonic::Status is what handlers return
    fn gate(&self) -> Result<(), Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut mode = self.mode.lock().unwrap();
        match &mut *mode {
            Mode::Lead => Ok(()),
            Mode::Redirect(addr) => {
                let mut s = Status::unavailable("this node is not the leader");
                s.metadata_mut().insert(
                    LEADER_ADDR_KEY,
                    MetadataValue::try_from(addr.as_str()).unwrap(),
                );
                s.metadata_mut()
                    .insert(NOT_PROPOSED_KEY, MetadataValue::from_static("1"));
                Err(s)
            }
            Mode::DroppedEntry(addr) => {
                let mut s = Status::unavailable("this node is not the leader");
                s.metadata_mut().insert(
                    LEADER_ADDR_KEY,
                    MetadataValue::try_from(addr.as_str()).unwrap(),
                );
                Err(s)
            }
            Mode::RedirectThen(first, n, then) => {
                let addr = if *n == 0 {
                    then.clone()
                } else {
                    *n -= 1;
                    first.clone()
                };
                let mut s = Status::unavailable("this node is not the leader");
                s.metadata_mut().insert(
                    LEADER_ADDR_KEY,
                    MetadataValue::try_from(addr.as_str()).unwrap(),
                );
                s.metadata_mut()
                    .insert(NOT_PROPOSED_KEY, MetadataValue::from_static("1"));
                Err(s)
            }
            Mode::NoLeader(0) => Ok(()),
            Mode::NoLeader(n) => {
                *n -= 1;
                Err(Status::unavailable("no leader is known yet"))
            }
            Mode::NotFound => Err(Status::not_found("task t-404 not found")),
            Mode::AlreadyDone => Err(Status::failed_precondition("task t-1 is cancelled already")),
        }
    }
}

#[tonic::async_trait]
impl tasks_server::Tasks for Fake {
    async fn submit(
        &self,
        r: Request<v1::SubmitRequest>,
    ) -> Result<Response<v1::SubmitResponse>, Status> {
        let tasks = r.into_inner().tasks;
        self.keys
            .lock()
            .unwrap()
            .push(tasks.iter().map(|t| t.idempotency_key.clone()).collect());
        self.gate()?;
        let results = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if t.task_type.is_empty() {
                    v1::SubmitResult {
                        error: Some(v1::Error {
                            code: Code::InvalidArgument as i32,
                            message: "task_type is required".into(),
                        }),
                        ..Default::default()
                    }
                } else {
                    v1::SubmitResult {
                        id: format!("t-{i}"),
                        log_index: 7,
                        ..Default::default()
                    }
                }
            })
            .collect();
        Ok(Response::new(v1::SubmitResponse { results }))
    }

    async fn get(&self, r: Request<v1::GetTaskRequest>) -> Result<Response<v1::Task>, Status> {
        self.peers.lock().unwrap().extend(r.remote_addr());
        self.gate()?;
        Ok(Response::new(v1::Task {
            id: r.into_inner().id,
            ..Default::default()
        }))
    }

    async fn list(
        &self,
        _r: Request<v1::ListTasksRequest>,
    ) -> Result<Response<v1::ListTasksResponse>, Status> {
        self.gate()?;
        Ok(Response::new(v1::ListTasksResponse::default()))
    }

    async fn cancel(
        &self,
        r: Request<v1::CancelTaskRequest>,
    ) -> Result<Response<v1::Task>, Status> {
        self.maybe_hang().await;
        self.gate()?;
        Ok(Response::new(v1::Task {
            id: r.into_inner().id,
            state: v1::TaskState::Cancelled as i32,
            ..Default::default()
        }))
    }

    async fn replay(
        &self,
        r: Request<v1::ReplayRequest>,
    ) -> Result<Response<v1::ReplayResponse>, Status> {
        self.maybe_hang().await;
        self.gate()?;
        let results = r
            .into_inner()
            .ids
            .into_iter()
            .map(|id| v1::SubmitResult {
                id,
                log_index: 9,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(v1::ReplayResponse {
            results,
            more: false,
        }))
    }

    async fn explain(
        &self,
        r: Request<v1::ExplainRequest>,
    ) -> Result<Response<v1::TaskExplanation>, Status> {
        self.gate()?;
        Ok(Response::new(v1::TaskExplanation {
            id: r.into_inner().id,
            ..Default::default()
        }))
    }
}

#[tonic::async_trait]
impl cluster_server::Cluster for Fake {
    async fn add_learner(
        &self,
        _r: Request<v1::AddLearnerRequest>,
    ) -> Result<Response<v1::MembersResponse>, Status> {
        self.gate()?;
        Ok(Response::new(v1::MembersResponse::default()))
    }

    async fn promote(
        &self,
        _r: Request<v1::PromoteRequest>,
    ) -> Result<Response<v1::MembersResponse>, Status> {
        self.gate()?;
        Ok(Response::new(v1::MembersResponse::default()))
    }

    async fn transfer_leader(
        &self,
        _r: Request<v1::TransferLeaderRequest>,
    ) -> Result<Response<v1::MembersResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn demote(
        &self,
        _r: Request<v1::ChangeRequest>,
    ) -> Result<Response<v1::MembersResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn remove(
        &self,
        _r: Request<v1::ChangeRequest>,
    ) -> Result<Response<v1::MembersResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn snapshot(
        &self,
        _r: Request<v1::SnapshotRequest>,
    ) -> Result<Response<v1::SnapshotResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    type BackupStream = tokio_stream::Empty<Result<v1::BackupChunk, Status>>;

    async fn backup(
        &self,
        _r: Request<v1::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn members(
        &self,
        _r: Request<v1::MembersRequest>,
    ) -> Result<Response<v1::MembersResponse>, Status> {
        self.gate()?;
        Ok(Response::new(v1::MembersResponse {
            leader_id: 1,
            ..Default::default()
        }))
    }

    async fn status(
        &self,
        _r: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        // Every node answers Status with its own view.
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(v1::StatusResponse {
            role: self.role.into(),
            leader_addr: self.leader_addr.clone(),
            ..Default::default()
        }))
    }
}

/// Serves `fake` on 127.0.0.1:0; returns its address.
pub(crate) async fn serve(fake: Fake) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(tasks_server::TasksServer::new(fake.clone()))
            .add_service(cluster_server::ClusterServer::new(fake))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

/// An address nothing listens on.
pub(crate) async fn dead_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().to_string()
}

fn fast(endpoints: Vec<String>, retry_for: Duration) -> Client {
    Client::with_options(
        endpoints,
        ClientOptions {
            request_timeout: Duration::from_secs(5),
            retry_for,
            connect_timeout: Duration::from_millis(500),
            source_ip: None,
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

#[tokio::test]
async fn follows_the_leader_address_and_remembers_it() {
    let leader = Fake::new(Mode::Lead);
    let leader_addr = serve(leader.clone()).await;
    let follower = Fake::new(Mode::Redirect(leader_addr.clone()));
    let follower_addr = serve(follower.clone()).await;

    let client = fast(vec![follower_addr.clone()], Duration::from_secs(5));
    let t = client.get_task("t-1", false).await.unwrap();
    assert_eq!(t.id, "t-1");
    assert_eq!((follower.calls(), leader.calls()), (1, 1));
    assert_eq!(client.leader().as_deref(), Some(leader_addr.as_str()));
    assert!(
        client.endpoints().contains(&leader_addr),
        "a learned leader joins the known set"
    );

    // The next call goes straight to the leader.
    client.cancel_task("t-1").await.unwrap();
    assert_eq!((follower.calls(), leader.calls()), (1, 2));
    // A clone shares what was learned.
    client.clone().members().await.unwrap();
    assert_eq!((follower.calls(), leader.calls()), (1, 3));
}

#[tokio::test]
async fn retries_while_no_leader_is_known() {
    let node = Fake::new(Mode::NoLeader(3));
    let addr = serve(node.clone()).await;
    let client = fast(vec![addr], Duration::from_secs(10));
    client.members().await.unwrap();
    assert_eq!(node.calls(), 4);
}

#[tokio::test]
async fn final_answers_are_not_retried() {
    let node = Fake::new(Mode::NotFound);
    let addr = serve(node.clone()).await;
    let client = fast(vec![addr], Duration::from_secs(10));
    let e = client.get_task("t-404", false).await.unwrap_err();
    assert_eq!(e.code, Code::NotFound);
    assert_eq!(e.message, "task t-404 not found");
    assert_eq!(node.calls(), 1);
}

#[tokio::test]
async fn skips_dead_endpoints() {
    let node = Fake::new(Mode::Lead);
    let addr = serve(node.clone()).await;
    let client = fast(
        vec![dead_addr().await, addr.clone()],
        Duration::from_secs(10),
    );
    client.get_task("t-1", true).await.unwrap();
    assert_eq!(node.calls(), 1);
    // A stale read may be served by any node: it does not make it the leader.
    assert_eq!(client.leader(), None);
}

/// A node whose kernel accepts connections but which never answers, as a
/// paused (SIGSTOP) or wedged process: the connections are held open.
async fn silent_addr() -> (String, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_silent_endpoint_is_left_within_the_keepalive_not_the_request_timeout() {
    let node = Fake::new(Mode::Lead);
    let addr = serve(node.clone()).await;
    let (silent, _hold) = silent_addr().await;
    // Each attempt may take 5 s; the silent endpoint comes first.
    let client = fast(vec![silent.clone(), addr.clone()], Duration::from_secs(10));
    let started = tokio::time::Instant::now();
    client.get_task("t-1", false).await.unwrap();
    let took = started.elapsed();
    assert_eq!(node.calls(), 1);
    assert!(
        took < Duration::from_secs(3),
        "the silent endpoint held the call for {took:?}: it must be left once its pings go unanswered"
    );
    assert_eq!(client.leader().as_deref(), Some(addr.as_str()));
}

#[tokio::test]
async fn an_attempt_never_outlives_the_calls_budget() {
    let (silent, _hold) = silent_addr().await;
    let client = Client::with_options(
        vec![silent],
        ClientOptions {
            request_timeout: Duration::from_secs(30),
            retry_for: Duration::from_millis(400),
            // No keepalive to rescue the call: only the budget ends it.
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(60),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let started = tokio::time::Instant::now();
    let e = client.get_task("t-1", false).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}: {e}",
        started.elapsed()
    );
}

/// A node that accepts connections and closes them at once (a transport
/// error for the client, as from a server that just died); counts them.
/// Aborting the task frees the port.
async fn closing_addr() -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((conn, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    (addr, accepted, task)
}

#[tokio::test]
async fn a_leader_named_after_it_failed_is_not_tried_again_in_the_same_call() {
    // The old leader is gone; a follower keeps naming it until its election
    // settles, then names the new leader.
    let (dead, dialed, _closing) = closing_addr().await;
    let leader = Fake::new(Mode::Lead);
    let leader_addr = serve(leader.clone()).await;
    let follower = Fake::new(Mode::RedirectThen(dead.clone(), 6, leader_addr.clone()));
    let follower_addr = serve(follower.clone()).await;

    let client = fast(vec![follower_addr], Duration::from_secs(10));
    client.members().await.unwrap();
    assert_eq!(leader.calls(), 1);
    assert_eq!(
        follower.calls(),
        7,
        "asked again until it named the new leader"
    );
    // Followed once; after it failed, the follower was asked again instead.
    assert!(
        dialed.load(Ordering::SeqCst) <= 2,
        "dialed the dead leader {} times",
        dialed.load(Ordering::SeqCst)
    );
    assert_eq!(client.leader().as_deref(), Some(leader_addr.as_str()));
}

#[tokio::test]
async fn a_named_leader_that_could_not_be_reached_is_tried_again_once_back() {
    // The leader restarts: a follower names it throughout; it refuses
    // connections at first, then serves on the same address.
    let (dead, dialed, closing) = closing_addr().await;
    let follower = Fake::new(Mode::Redirect(dead.clone()));
    let follower_addr = serve(follower.clone()).await;
    let client = fast(vec![follower_addr], Duration::from_secs(10));
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.members().await }
    });
    // Wait until the client has found it unreachable, then bring it back.
    while dialed.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let leader = Fake::new(Mode::Lead);
    closing.abort();
    let back = restart_at(&dead, leader.clone()).await;
    call.await.unwrap().unwrap();
    assert_eq!(
        leader.calls(),
        1,
        "the call reached the leader once it was back"
    );
    assert_eq!(client.leader().as_deref(), Some(back.as_str()));
}

/// Serves `fake` on `addr` once the address is free again.
async fn restart_at(addr: &str, fake: Fake) -> String {
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(tasks_server::TasksServer::new(fake.clone()))
            .add_service(cluster_server::ClusterServer::new(fake))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr.to_string()
}

#[tokio::test]
async fn gives_up_after_the_budget_naming_the_endpoints() {
    let (a, b) = (dead_addr().await, dead_addr().await);
    let client = fast(vec![a.clone(), b.clone()], Duration::from_millis(400));
    let started = std::time::Instant::now();
    let e = client.get_task("t-1", false).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(e.code, Code::Unavailable, "{e}");
    assert!(e.message.contains(&a) && e.message.contains(&b), "{e}");
}

#[tokio::test]
async fn a_retried_submit_reuses_its_idempotency_keys() {
    let node = Fake::new(Mode::NoLeader(1));
    let addr = serve(node.clone()).await;
    let client = fast(vec![addr], Duration::from_secs(10));
    let specs = vec![
        v1::TaskSpec {
            task_type: "t2i".into(),
            ..Default::default()
        },
        v1::TaskSpec {
            task_type: "sr".into(),
            idempotency_key: "mine".into(),
            ..Default::default()
        },
    ];
    let results = client.submit(specs).await.unwrap();
    assert_eq!(results.len(), 2);
    let keys = node.keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 2, "one failed attempt, one retry");
    assert_eq!(keys[0], keys[1], "the retry carries the same keys");
    assert!(
        keys[0][0].starts_with("auto-") && keys[0][0].len() == 37,
        "{:?}",
        keys[0][0]
    );
    assert_eq!(keys[0][1], "mine");
}

#[tokio::test]
async fn submit_one_turns_an_item_error_into_err() {
    let addr = serve(Fake::new(Mode::Lead)).await;
    let client = fast(vec![addr], Duration::from_secs(5));
    let ok = client
        .submit_one(v1::TaskSpec {
            task_type: "tts".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ok.id, "t-0");
    let e = client
        .submit_one(v1::TaskSpec::default())
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument);
    assert_eq!(e.message, "task_type is required");
}

#[tokio::test]
async fn status_follows_to_the_leader_and_status_of_does_not() {
    let mut leader = Fake::new(Mode::Lead);
    leader.role = "leader";
    let leader_addr = serve(leader.clone()).await;
    let mut follower = Fake::new(Mode::Redirect(leader_addr.clone()));
    follower.role = "follower";
    follower.leader_addr = leader_addr.clone();
    let follower_addr = serve(follower.clone()).await;

    let client = fast(vec![follower_addr.clone()], Duration::from_secs(5));
    assert_eq!(client.status().await.unwrap().role, "leader");
    assert_eq!(client.leader().as_deref(), Some(leader_addr.as_str()));
    assert_eq!(
        client.status_of(&follower_addr).await.unwrap().role,
        "follower"
    );
    let e = client.status_of(&dead_addr().await).await.unwrap_err();
    assert_eq!(e.code, Code::Unavailable);
    assert!(client.status_of("not an endpoint").await.is_err());
}

#[test]
fn new_validates_endpoints() {
    assert!(Client::new(vec!["127.0.0.1:7000", "http://10.0.0.2:7000"]).is_ok());
    let e = Client::new(Vec::<String>::new()).unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument);
    let e = Client::new(vec!["127.0.0.1"]).unwrap_err();
    assert!(e.message.contains("missing port"), "{e}");
}

#[tokio::test]
async fn connections_leave_from_the_source_ip() {
    let fake = Fake::new(Mode::Lead);
    let addr = serve(fake.clone()).await;
    let source: std::net::IpAddr = "127.0.0.7".parse().unwrap();
    let client = Client::with_options(
        vec![addr],
        ClientOptions {
            source_ip: Some(source),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    client.get_task("t-1", false).await.unwrap();
    let peers = fake.peers.lock().unwrap().clone();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].ip(), source);
}

fn quick(endpoints: Vec<String>) -> Client {
    Client::with_options(
        endpoints,
        ClientOptions {
            request_timeout: Duration::from_millis(300),
            retry_for: Duration::from_secs(10),
            connect_timeout: Duration::from_millis(500),
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

#[tokio::test]
async fn a_cancel_or_replay_whose_answer_was_lost_is_not_sent_again() {
    // Applied, its answer lost: a repeat would say FAILED_PRECONDITION for
    // a cancel that worked.
    let node = Fake::new(Mode::AlreadyDone).hang(2);
    let addr = serve(node.clone()).await;
    let client = quick(vec![addr.clone()]);
    let e = client.cancel_task("t-1").await.unwrap_err();
    assert_eq!(e.code, Code::Unavailable, "{e:?}");
    assert!(
        e.message.contains("may or may not have been applied"),
        "{}",
        e.message
    );
    assert_eq!(node.calls(), 1, "sent once");
    let e = client.replay_tasks(vec!["t-1".into()]).await.unwrap_err();
    assert_eq!(e.code, Code::Unavailable, "{e:?}");
    assert_eq!(node.calls(), 2, "sent once");
    // A read is still retried after a lost answer.
    let slow = Fake::new(Mode::Lead);
    let slow_addr = serve(slow.clone()).await;
    quick(vec![slow_addr]).get_task("t-1", false).await.unwrap();
}

#[tokio::test]
async fn a_cancel_is_sent_again_after_a_refused_connection_or_a_redirect() {
    // Neither could have applied it: a dead endpoint, then a follower
    // that names the leader.
    let leader = Fake::new(Mode::Lead);
    let leader_addr = serve(leader.clone()).await;
    let follower = Fake::new(Mode::Redirect(leader_addr.clone()));
    let follower_addr = serve(follower.clone()).await;
    let client = quick(vec![dead_addr().await, follower_addr]);
    let t = client.cancel_task("t-1").await.unwrap();
    assert_eq!(t.id, "t-1");
    assert_eq!((follower.calls(), leader.calls()), (1, 1));
}

#[tokio::test]
async fn a_cancel_whose_entry_may_live_on_is_not_sent_again() {
    // "Not the leader" without the not-proposed mark: the write was in
    // this node's log, and another voter may still commit it.
    let leader = Fake::new(Mode::Lead);
    let leader_addr = serve(leader.clone()).await;
    let old = Fake::new(Mode::DroppedEntry(leader_addr));
    let old_addr = serve(old.clone()).await;
    let e = quick(vec![old_addr]).cancel_task("t-1").await.unwrap_err();
    assert!(
        e.message.contains("may or may not have been applied"),
        "{}",
        e.message
    );
    assert_eq!((old.calls(), leader.calls()), (1, 0));
}
