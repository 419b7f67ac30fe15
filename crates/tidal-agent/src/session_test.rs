//! Session tests against an in-process fake `Agents` server.

use std::time::Duration;

use tidal_proto::v1::{
    self, agent_message::Msg as FromAgent, agents_server, server_message::Msg as ToAgent,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use crate::session::Agent;
use crate::{AgentConfig, ExecEvent};

/// One session as the fake server sees it.
struct FakeSession {
    inbound: Streaming<v1::AgentMessage>,
    out: mpsc::UnboundedSender<Result<v1::ServerMessage, Status>>,
}

impl FakeSession {
    async fn recv(&mut self) -> Option<FromAgent> {
        let m = tokio::time::timeout(Duration::from_secs(20), self.inbound.message())
            .await
            .expect("agent silent for 20s");
        m.ok().flatten().and_then(|m| m.msg)
    }

    /// The next message that is not a heartbeat (heartbeats are acked when
    /// `ack` is set).
    async fn recv_non_heartbeat(&mut self, ack: bool) -> Option<FromAgent> {
        loop {
            match self.recv().await? {
                FromAgent::Heartbeat(hb) => {
                    if ack {
                        self.send(ToAgent::HeartbeatAck(v1::HeartbeatAck { seq: hb.seq }));
                    }
                }
                other => return Some(other),
            }
        }
    }

    fn send(&self, m: ToAgent) {
        let _ = self.out.send(Ok(v1::ServerMessage { msg: Some(m) }));
    }
}

struct FakeAgents {
    sessions: mpsc::UnboundedSender<FakeSession>,
    /// How `Drain` and `Deregister` answer: `None` is OK. A credentials
    /// code (UNAUTHENTICATED, PERMISSION_DENIED) refuses every `Session` too.
    refuse: Option<tonic::Code>,
    /// How `Drain` alone answers, when set (before `refuse`).
    refuse_drain: Option<Status>,
    /// Each `Drain` request's deadline.
    drains: mpsc::UnboundedSender<Option<u64>>,
}

#[tonic::async_trait]
impl agents_server::Agents for FakeAgents {
    type SessionStream = UnboundedReceiverStream<Result<v1::ServerMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        if let Some(code @ (tonic::Code::Unauthenticated | tonic::Code::PermissionDenied)) =
            self.refuse
        {
            return Err(Status::new(
                code,
                "token tdl_0123456789abcdef is unknown (fake)",
            ));
        }
        let (out, rx) = mpsc::unbounded_channel();
        let _ = self.sessions.send(FakeSession {
            inbound: request.into_inner(),
            out,
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }

    async fn list(
        &self,
        _r: Request<v1::ListAgentsRequest>,
    ) -> Result<Response<v1::ListAgentsResponse>, Status> {
        Ok(Response::new(v1::ListAgentsResponse::default()))
    }

    async fn drain(
        &self,
        r: Request<v1::DrainAgentRequest>,
    ) -> Result<Response<v1::AgentInfo>, Status> {
        let _ = self.drains.send(r.into_inner().deadline_ms);
        if let Some(status) = &self.refuse_drain {
            return Err(status.clone());
        }
        match self.refuse {
            Some(code) => Err(Status::new(
                code,
                "this needs cluster format version 2 (fake)",
            )),
            None => Ok(Response::new(v1::AgentInfo::default())),
        }
    }

    async fn undrain(
        &self,
        _r: Request<v1::UndrainAgentRequest>,
    ) -> Result<Response<v1::AgentInfo>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn deregister(
        &self,
        _r: Request<v1::DeregisterAgentRequest>,
    ) -> Result<Response<v1::DeregisterAgentResponse>, Status> {
        match self.refuse {
            Some(code) => Err(Status::new(code, "agent still holds 1 task(s) (fake)")),
            None => Ok(Response::new(v1::DeregisterAgentResponse::default())),
        }
    }
}

struct Harness {
    sessions: mpsc::UnboundedReceiver<FakeSession>,
    events: mpsc::UnboundedReceiver<ExecEvent>,
    stop: Option<oneshot::Sender<()>>,
    /// Fires the graceful exit (the first SIGTERM).
    drain: Option<oneshot::Sender<()>>,
    drains: mpsc::UnboundedReceiver<Option<u64>>,
    agent: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Harness {
    async fn start(script: &str, ttl: Option<Duration>) -> Harness {
        Harness::start_with(script, ttl, None, |_| {}).await
    }

    async fn start_with(
        script: &str,
        ttl: Option<Duration>,
        refuse: Option<tonic::Code>,
        tweak: impl FnOnce(&mut AgentConfig),
    ) -> Harness {
        Harness::start_full(script, ttl, refuse, None, tweak).await
    }

    async fn start_full(
        script: &str,
        ttl: Option<Duration>,
        refuse: Option<tonic::Code>,
        refuse_drain: Option<Status>,
        tweak: impl FnOnce(&mut AgentConfig),
    ) -> Harness {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (sessions_tx, sessions) = mpsc::unbounded_channel();
        let (drains_tx, drains) = mpsc::unbounded_channel();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(agents_server::AgentsServer::new(FakeAgents {
                    sessions: sessions_tx,
                    refuse,
                    refuse_drain,
                    drains: drains_tx,
                }))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let config = AgentConfig {
            id: "agent-1".into(),
            dc: "dc1".into(),
            task_types: vec!["t2i".into()],
            slots: 2,
            endpoints: vec![addr],
            command: vec!["sh".into(), "-c".into(), script.into()],
            ttl,
            ..AgentConfig::default()
        };
        let mut config = config;
        tweak(&mut config);
        let (events_tx, events) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let (drain, drain_rx) = oneshot::channel::<()>();
        let agent = Agent::new(config, Some(events_tx)).unwrap();
        let agent = tokio::spawn(agent.run_with_drain(
            async move {
                if drain_rx.await.is_err() {
                    std::future::pending::<()>().await;
                }
            },
            async move {
                let _ = stopped.await;
            },
        ));
        Harness {
            sessions,
            events,
            stop: Some(stop),
            drain: Some(drain),
            drains,
            agent,
        }
    }

    fn signal_drain(&mut self) {
        if let Some(d) = self.drain.take() {
            let _ = d.send(());
        }
    }

    async fn session(&mut self) -> FakeSession {
        tokio::time::timeout(Duration::from_secs(20), self.sessions.recv())
            .await
            .expect("no session within 20s")
            .expect("server running")
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), self.agent)
            .await
            .expect("agent stops")
            .expect("no panic")
    }
}

/// Takes the session's Register and answers it (10 s lease, heartbeats
/// every 50 ms).
async fn register(s: &mut FakeSession) {
    let Some(FromAgent::Register(_)) = s.recv().await else {
        panic!("first message must be Register")
    };
    s.send(registered(10_000, 50));
}

/// The next message but heartbeats (acked) is the start of `task_id`.
async fn expect_started(s: &mut FakeSession, task_id: &str, token: u64) {
    match s.recv_non_heartbeat(true).await {
        Some(FromAgent::Started(st)) => {
            assert_eq!((st.task_id.as_str(), st.token), (task_id, token))
        }
        other => panic!("expected Started, got {other:?}"),
    }
}

fn registered(server_ttl_ms: u64, heartbeat_interval_ms: u64) -> ToAgent {
    ToAgent::Registered(v1::Registered {
        agent_id: "agent-1".into(),
        leader_id: 1,
        server_ttl_ms,
        heartbeat_interval_ms,
        displaced_instance: String::new(),
    })
}

fn assignment(task_id: &str, token: u64, payload: &[u8]) -> ToAgent {
    ToAgent::Assignment(v1::Assignment {
        task_id: task_id.into(),
        token,
        attempt: 1,
        spec: Some(v1::TaskSpec {
            task_type: "t2i".into(),
            payload: payload.to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[tokio::test]
async fn runs_an_assignment_and_resends_its_completion_after_reconnect() {
    let mut h = Harness::start("cat", None).await;
    let mut s = h.session().await;
    let Some(FromAgent::Register(reg)) = s.recv().await else {
        panic!("first message must be Register")
    };
    let spec = reg.spec.unwrap();
    assert_eq!(
        (spec.id.as_str(), spec.dc.as_str(), spec.slots),
        ("agent-1", "dc1", 2)
    );
    assert!(reg.running.is_empty());

    s.send(registered(10_000, 50));
    s.send(assignment("t1", 42, b"hello payload"));
    // A duplicate push (as after a reconnect) must not start a second child.
    s.send(assignment("t1", 42, b"hello payload"));
    expect_started(&mut s, "t1", 42).await;
    let done = match s.recv_non_heartbeat(true).await {
        Some(FromAgent::Completed(c)) => c,
        other => panic!("expected Completed, got {other:?}"),
    };
    assert_eq!(
        (
            done.task_id.as_str(),
            done.token,
            done.success,
            done.exit_code
        ),
        ("t1", 42, true, 0)
    );
    assert_eq!(done.result, b"hello payload");

    // The leader goes away before acking: the agent reconnects, reports the
    // task as held, and sends the completion again.
    drop(s);
    let mut s = h.session().await;
    let Some(FromAgent::Register(reg)) = s.recv().await else {
        panic!("first message must be Register")
    };
    assert_eq!(
        reg.running,
        vec![v1::RunningTask {
            task_id: "t1".into(),
            token: 42
        }]
    );
    s.send(registered(10_000, 50));
    match s.recv_non_heartbeat(true).await {
        Some(FromAgent::Completed(c)) => assert_eq!(c, done),
        other => panic!("expected the completion again, got {other:?}"),
    }
    s.send(ToAgent::CompletionAck(v1::CompletionAck {
        task_id: "t1".into(),
        token: 42,
        accepted: true,
        reason: String::new(),
    }));
    // Acked: heartbeats keep flowing and nothing else is sent.
    for _ in 0..3 {
        match s.recv().await {
            Some(FromAgent::Heartbeat(hb)) => {
                assert_eq!(hb.free_slots, 2);
                s.send(ToAgent::HeartbeatAck(v1::HeartbeatAck { seq: hb.seq }));
            }
            other => panic!("expected only heartbeats, got {other:?}"),
        }
    }
    h.stop().await.unwrap();
}

#[tokio::test]
async fn self_fences_when_heartbeats_go_unacked() {
    let agent_ttl = Duration::from_millis(600);
    let server_ttl = Duration::from_millis(1500);
    let mut h = Harness::start("sleep 30", Some(agent_ttl)).await;
    let mut s = h.session().await;
    let Some(FromAgent::Register(_)) = s.recv().await else {
        panic!("first message must be Register")
    };
    s.send(registered(server_ttl.as_millis() as u64, 100));
    s.send(assignment("t1", 7, b""));
    match s.recv_non_heartbeat(true).await {
        Some(FromAgent::Started(st)) => assert_eq!(st.task_id, "t1"),
        other => panic!("expected Started, got {other:?}"),
    }
    // Ack a few heartbeats, then stop acking (a partition the stream does
    // not notice). The server's lease would run from the last ack's receipt.
    let mut last_ack = Instant::now();
    for _ in 0..3 {
        if let Some(FromAgent::Heartbeat(hb)) = s.recv().await {
            last_ack = Instant::now();
            s.send(ToAgent::HeartbeatAck(v1::HeartbeatAck { seq: hb.seq }));
        }
    }
    // Keep reading (without acking) while waiting for the child's death.
    let give_up = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(give_up);
    let mut stream_open = true;
    let mut left_at = None;
    let killed_at = loop {
        tokio::select! {
            ev = h.events.recv() => match ev {
                Some(ExecEvent::Killed { task_id, token }) => {
                    assert_eq!((task_id.as_str(), token), ("t1", 7));
                    break Instant::now();
                }
                other => panic!("expected the child to be killed, got {other:?}"),
            },
            m = s.inbound.message(), if stream_open => match m {
                Ok(Some(v1::AgentMessage { msg: Some(FromAgent::Heartbeat(_)) })) => {}
                Ok(Some(other)) => panic!("nothing but heartbeats expected, got {other:?}"),
                // The agent dropped the silent session.
                Ok(None) | Err(_) => {
                    stream_open = false;
                    left_at = Some(Instant::now());
                }
            },
            _ = &mut give_up => panic!("the child was not killed within 10s"),
        }
    };
    let after = killed_at - last_ack;
    // Invariant 6: dead before the server's lease (from the last ack) ends,
    // and not before the agent's own lease could have ended.
    assert!(
        after < server_ttl,
        "killed {after:?} after the last ack; the server's ttl is {server_ttl:?}"
    );
    assert!(
        after >= agent_ttl - Duration::from_millis(150),
        "killed too early: {after:?}"
    );
    let left = left_at.expect("the agent left the silent session") - last_ack;
    assert!(
        left < agent_ttl,
        "left the silent session {left:?} after the last ack, not before its lease ran out"
    );

    // It left the silent session after two heartbeat intervals and looked
    // for the leader again while its lease lasted, still holding t1 (this
    // fake server never answers those). Once fenced, it reconnects holding
    // nothing: the token was dropped, no completion; it names the run it
    // killed, so the leader counts it as started.
    let mut s2 = loop {
        let mut s = h.session().await;
        match s.recv().await {
            Some(FromAgent::Register(reg)) if reg.running.is_empty() => {
                assert_eq!(
                    reg.fenced,
                    vec![v1::RunningTask {
                        task_id: "t1".into(),
                        token: 7
                    }]
                );
                break s;
            }
            Some(FromAgent::Register(reg)) => assert_eq!(
                reg.running,
                vec![v1::RunningTask {
                    task_id: "t1".into(),
                    token: 7
                }]
            ),
            // A registration aborted by the fence.
            None => {}
            other => panic!("expected Register, got {other:?}"),
        }
    };
    s2.send(registered(server_ttl.as_millis() as u64, 100));
    // A token stopped by the fence never runs again, even if a server sends
    // it; a new token of the same task does.
    s2.send(assignment("t1", 7, b""));
    for _ in 0..2 {
        match s2.recv().await {
            Some(FromAgent::Heartbeat(hb)) => {
                s2.send(ToAgent::HeartbeatAck(v1::HeartbeatAck { seq: hb.seq }))
            }
            other => panic!("no completion or start may follow a fence, got {other:?}"),
        }
    }
    s2.send(assignment("t1", 9, b""));
    match s2.recv_non_heartbeat(true).await {
        Some(FromAgent::Started(st)) => assert_eq!((st.task_id.as_str(), st.token), ("t1", 9)),
        other => panic!("expected the new token to start, got {other:?}"),
    }
    h.stop().await.unwrap();
}

#[tokio::test]
async fn cancel_kills_the_child_without_a_completion() {
    let mut h = Harness::start("sleep 30", None).await;
    let mut s = h.session().await;
    register(&mut s).await;
    s.send(assignment("t1", 3, b""));
    assert!(matches!(
        s.recv_non_heartbeat(true).await,
        Some(FromAgent::Started(_))
    ));
    s.send(ToAgent::Cancel(v1::CancelTask {
        task_id: "t1".into(),
        token: 3,
        reason: "user".into(),
    }));
    let ev = tokio::time::timeout(Duration::from_secs(10), h.events.recv())
        .await
        .unwrap();
    assert_eq!(
        ev,
        Some(ExecEvent::Killed {
            task_id: "t1".into(),
            token: 3
        })
    );
    h.stop().await.unwrap();
}

#[tokio::test]
async fn refuses_an_agent_ttl_not_shorter_than_the_servers() {
    let mut h = Harness::start("cat", Some(Duration::from_secs(2))).await;
    let mut s = h.session().await;
    let Some(FromAgent::Register(_)) = s.recv().await else {
        panic!("first message must be Register")
    };
    s.send(registered(1000, 100));
    let e = tokio::time::timeout(Duration::from_secs(10), &mut h.agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("must be shorter than the server's lease ttl"),
        "{e:#}"
    );
}

#[tokio::test]
async fn shutdown_kills_running_tasks() {
    let mut h = Harness::start("sleep 30", None).await;
    let mut s = h.session().await;
    register(&mut s).await;
    s.send(assignment("t1", 3, b""));
    assert!(matches!(
        s.recv_non_heartbeat(true).await,
        Some(FromAgent::Started(_))
    ));
    let Harness {
        events: mut ev,
        stop,
        agent,
        ..
    } = h;
    let _ = stop.unwrap().send(());
    tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        ev.recv().await,
        Some(ExecEvent::Killed {
            task_id: "t1".into(),
            token: 3
        })
    );
}

#[tokio::test]
async fn a_stop_order_stops_the_child_and_reports_it_stopped_until_acked() {
    let mut h = Harness::start("sleep 30", None).await;
    let mut s = h.session().await;
    register(&mut s).await;
    s.send(assignment("t1", 9, b""));
    expect_started(&mut s, "t1", 9).await;
    s.send(ToAgent::Stop(v1::StopTask {
        task_id: "t1".into(),
        token: 9,
        reason: "the agent's drain deadline passed".into(),
        ..Default::default()
    }));
    let report = match s.recv_non_heartbeat(true).await {
        Some(FromAgent::Completed(c)) => c,
        other => panic!("expected the stop report, got {other:?}"),
    };
    assert!(report.stopped && !report.success, "{report:?}");
    assert_eq!((report.task_id.as_str(), report.token), ("t1", 9));
    assert!(matches!(
        h.events.recv().await,
        Some(ExecEvent::Stopped { .. })
    ));
    // A stop for a task it does not run is not reported stopped (another
    // process may run it), and that token never starts here.
    s.send(ToAgent::Stop(v1::StopTask {
        task_id: "t2".into(),
        token: 11,
        reason: String::new(),
        ..Default::default()
    }));
    s.send(assignment("t2", 11, b""));
    s.send(assignment("t3", 12, b""));
    match s.recv_non_heartbeat(true).await {
        Some(FromAgent::Started(st)) => assert_eq!((st.task_id.as_str(), st.token), ("t3", 12)),
        other => panic!("expected t3 started (nothing about t2), got {other:?}"),
    }
    // Not acked: after a reconnect the stop report is held (with t3, which
    // runs) and reported again.
    drop(s);
    let mut s = h.session().await;
    let Some(FromAgent::Register(reg)) = s.recv().await else {
        panic!("first message must be Register")
    };
    let mut held: Vec<(&str, u64)> = reg
        .running
        .iter()
        .map(|r| (r.task_id.as_str(), r.token))
        .collect();
    held.sort();
    assert_eq!(held, vec![("t1", 9), ("t3", 12)]);
    s.send(registered(10_000, 50));
    // t3 still runs: its start is said again first.
    expect_started(&mut s, "t3", 12).await;
    match s.recv_non_heartbeat(true).await {
        Some(FromAgent::Completed(c)) => assert_eq!(c, report),
        other => panic!("expected the stop report again, got {other:?}"),
    }
    h.stop().await.unwrap();
}

/// Review item 2: a cluster at format version 1 (FAILED_PRECONDITION) or an
/// older server (UNIMPLEMENTED) cannot record a drain: the agent drains by
/// itself (starts nothing new, stops what runs at the deadline, without
/// reporting those stops) and exits, instead of retrying until it gives up.
#[tokio::test]
async fn a_drain_the_cluster_cannot_record_is_done_locally() {
    for code in [tonic::Code::FailedPrecondition, tonic::Code::Unimplemented] {
        let mut h = Harness::start_with("sleep 30", None, Some(code), |c| {
            c.drain_timeout = Duration::from_millis(300);
            c.stop_grace = Duration::from_millis(200);
        })
        .await;
        let mut s = h.session().await;
        let Some(FromAgent::Register(_)) = s.recv().await else {
            panic!("first message must be Register")
        };
        s.send(registered(10_000, 50));
        s.send(assignment("t1", 9, b""));
        match s.recv_non_heartbeat(true).await {
            Some(FromAgent::Started(st)) => assert_eq!(st.task_id, "t1"),
            other => panic!("expected Started, got {other:?}"),
        }
        let signalled = Instant::now();
        h.signal_drain();
        assert_eq!(h.drains.recv().await, Some(Some(300)));
        // Nothing new starts; the running task is stopped at the deadline,
        // and neither is reported (the cluster cannot take them back).
        s.send(assignment("t2", 10, b""));
        let mut seen = Vec::new();
        let watch = tokio::spawn(async move {
            while let Some(m) = s.recv_non_heartbeat(true).await {
                seen.push(m);
            }
            seen
        });
        let exited = tokio::time::timeout(Duration::from_secs(10), &mut h.agent)
            .await
            .expect("the agent exits after its local drain")
            .expect("no panic");
        assert!(exited.is_ok(), "{code:?}: {exited:?}");
        assert!(
            signalled.elapsed() >= Duration::from_millis(300),
            "{code:?}: the running task was given until the deadline"
        );
        let mut stopped = false;
        while let Ok(e) = h.events.try_recv() {
            if matches!(e, ExecEvent::Stopped { task_id, .. } if task_id == "t1") {
                stopped = true;
            }
        }
        assert!(stopped, "{code:?}: t1 stopped at the deadline");
        let seen = watch.await.unwrap();
        assert!(
            seen.iter()
                .all(|m| !matches!(m, FromAgent::Started(_) | FromAgent::Completed(_))),
            "{code:?}: {seen:?}"
        );
    }
}

/// Review item 5: an agent that is leaving takes no new work: an
/// assignment is handed back at once as stopped (requeued without an
/// attempt), and after registering again (it was marked down, which ends a
/// drain) it asks for the drain again with what is left of its deadline.
#[tokio::test]
async fn a_leaving_agent_hands_back_assignments_and_drains_again_after_registering() {
    let mut h = Harness::start_with("sleep 30", None, None, |c| {
        c.drain_timeout = Duration::from_secs(20);
    })
    .await;
    let mut s = h.session().await;
    register(&mut s).await;
    s.send(assignment("t1", 9, b""));
    match s.recv_non_heartbeat(true).await {
        Some(FromAgent::Started(st)) => assert_eq!(st.task_id, "t1"),
        other => panic!("expected Started, got {other:?}"),
    }
    h.signal_drain();
    assert_eq!(h.drains.recv().await, Some(Some(20_000)));
    s.send(assignment("t2", 10, b""));
    match s.recv_non_heartbeat(true).await {
        Some(FromAgent::Completed(c)) => {
            assert!(c.stopped && !c.success, "{c:?}");
            assert_eq!((c.task_id.as_str(), c.token), ("t2", 10));
        }
        other => panic!("expected t2 handed back as stopped, got {other:?}"),
    }
    s.send(ToAgent::CompletionAck(v1::CompletionAck {
        task_id: "t2".into(),
        token: 10,
        accepted: true,
        reason: String::new(),
    }));
    // The session ends (the agent was marked down): on the next one it
    // drains again, with less than the whole deadline left.
    drop(s);
    let mut s = h.session().await;
    let Some(FromAgent::Register(reg)) = s.recv().await else {
        panic!("first message must be Register")
    };
    assert_eq!(reg.running.len(), 1, "{:?}", reg.running);
    s.send(registered(10_000, 50));
    expect_started(&mut s, "t1", 9).await;
    let again = tokio::time::timeout(Duration::from_secs(10), h.drains.recv())
        .await
        .expect("the drain is asked for again")
        .expect("fake running")
        .expect("with a deadline");
    assert!(again <= 20_000, "{again}");
    // The refused token never starts here.
    s.send(assignment("t2", 10, b""));
    s.send(assignment("t3", 11, b""));
    match s.recv_non_heartbeat(true).await {
        // Nothing about t2, and t3 handed back without starting.
        Some(FromAgent::Completed(c)) => assert_eq!((c.task_id.as_str(), c.stopped), ("t3", true)),
        other => panic!("expected t3 handed back, got {other:?}"),
    }
    h.stop().await.unwrap_err();
}

/// The `tidal_client::Error` in an agent's error chain (its code decides
/// `tidal agent`'s exit code).
fn client_error(e: &anyhow::Error) -> &tidal_client::Error {
    e.chain()
        .find_map(|c| c.downcast_ref::<tidal_client::Error>())
        .unwrap_or_else(|| panic!("no client error in {e:#}"))
}

#[tokio::test]
async fn a_session_ended_unauthenticated_stops_every_task_and_ends_the_agent() {
    let mut h = Harness::start("sleep 30", None).await;
    let mut s = h.session().await;
    register(&mut s).await;
    s.send(assignment("t1", 3, b""));
    assert!(matches!(
        s.recv_non_heartbeat(true).await,
        Some(FromAgent::Started(_))
    ));
    let _ = s.out.send(Err(Status::unauthenticated(
        "token tdl_0123456789abcdef was revoked (fake)",
    )));
    let e = tokio::time::timeout(Duration::from_secs(10), &mut h.agent)
        .await
        .expect("the agent ends")
        .expect("no panic")
        .expect_err("credentials refused");
    assert_eq!(client_error(&e).code, tonic::Code::Unauthenticated, "{e:#}");
    assert!(
        format!("{e:#}").contains("refused this agent's credentials"),
        "{e:#}"
    );
    assert!(format!("{e:#}").contains("was revoked"), "{e:#}");
    assert_eq!(
        h.events.recv().await,
        Some(ExecEvent::Killed {
            task_id: "t1".into(),
            token: 3
        })
    );
    // It does not try again.
    assert!(h.sessions.try_recv().is_err());
}

#[tokio::test]
async fn a_refused_registration_ends_the_agent_without_retrying() {
    for code in [tonic::Code::Unauthenticated, tonic::Code::PermissionDenied] {
        let mut h = Harness::start_with("cat", None, Some(code), |_| {}).await;
        let e = tokio::time::timeout(Duration::from_secs(10), &mut h.agent)
            .await
            .expect("the agent ends")
            .expect("no panic")
            .expect_err("credentials refused");
        assert_eq!(client_error(&e).code, code, "{e:#}");
        assert!(format!("{e:#}").contains("is unknown"), "{e:#}");
    }
}

/// A drain refused for good (TLS refused by every server, or the agent's
/// credentials refused) ends the graceful exit at once: the running task is
/// killed and the agent exits with the refusal, instead of retrying until
/// the drain's deadline and the slack have passed.
#[tokio::test]
async fn a_drain_refused_for_good_ends_the_graceful_exit_at_once() {
    for refusal in [
        Status::unauthenticated(
            "TLS with 127.0.0.1:7001 failed: the server speaks TLS and this client does not (fake)",
        ),
        Status::permission_denied("role agent may not call Agents/Drain (fake)"),
    ] {
        let why = refusal.message().to_string();
        let mut h = Harness::start_full("sleep 30", None, None, Some(refusal), |_| {}).await;
        let mut s = h.session().await;
        let Some(FromAgent::Register(_)) = s.recv().await else {
            panic!("first message must be Register")
        };
        s.send(registered(10_000, 50));
        s.send(assignment("t1", 9, b""));
        match s.recv_non_heartbeat(true).await {
            Some(FromAgent::Started(st)) => assert_eq!(st.task_id, "t1"),
            other => panic!("expected Started, got {other:?}"),
        }
        let signalled = Instant::now();
        h.signal_drain();
        assert_eq!(h.drains.recv().await, Some(Some(60_000)));
        let exited = tokio::time::timeout(Duration::from_secs(10), &mut h.agent)
            .await
            .expect("the agent exits at once")
            .expect("no panic");
        let e = exited.expect_err("a graceful exit that could not finish is an error");
        assert!(e.to_string().contains(&why), "{e}");
        assert!(e.to_string().contains("killing 1 running task(s)"), "{e}");
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "{:?}",
            signalled.elapsed()
        );
        assert_eq!(
            h.drains.try_recv().ok(),
            None,
            "the drain was not asked for again"
        );
    }
}

/// The state letter of a process (`/proc/PID/stat`): `T` when stopped.
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

async fn wait_state(pid: i32, want: impl Fn(char) -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if proc_state(pid).is_some_and(&want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: worker {pid} is in state {:?}",
            proc_state(pid)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn read_pid(path: &std::path::Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Ok(p)) = std::fs::read_to_string(path).map(|s| s.trim().parse::<i32>()) {
            return p;
        }
        assert!(Instant::now() < deadline, "no pid in {}", path.display());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn suspend_and_resume_orders_stop_and_continue_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let mut h = Harness::start(
        &format!("echo $$ > {}; exec sleep 30", pidfile.display()),
        None,
    )
    .await;
    let mut s = h.session().await;
    register(&mut s).await;
    s.send(assignment("t1", 9, b""));
    expect_started(&mut s, "t1", 9).await;
    let pid = read_pid(&pidfile).await;
    wait_state(pid, |c| c == 'S', "running").await;
    // Another token: ignored (the next order shows it was not acted on).
    s.send(ToAgent::Suspend(v1::SuspendTask {
        task_id: "t1".into(),
        token: 8,
    }));
    s.send(ToAgent::Resume(v1::ResumeTask {
        task_id: "t1".into(),
        token: 8,
    }));
    s.send(ToAgent::Suspend(v1::SuspendTask {
        task_id: "t1".into(),
        token: 9,
    }));
    wait_state(pid, |c| c == 'T', "suspended").await;
    s.send(ToAgent::Resume(v1::ResumeTask {
        task_id: "t1".into(),
        token: 8,
    }));
    s.send(ToAgent::Resume(v1::ResumeTask {
        task_id: "t1".into(),
        token: 9,
    }));
    wait_state(pid, |c| c != 'T', "resumed").await;
    // Suspended again, then stopped: it is continued to take its SIGTERM.
    s.send(ToAgent::Suspend(v1::SuspendTask {
        task_id: "t1".into(),
        token: 9,
    }));
    wait_state(pid, |c| c == 'T', "suspended again").await;
    s.send(ToAgent::Stop(v1::StopTask {
        task_id: "t1".into(),
        token: 9,
        reason: "the agent's drain deadline passed".into(),
        ..Default::default()
    }));
    match s.recv_non_heartbeat(true).await {
        Some(FromAgent::Completed(c)) => assert!(c.stopped, "{c:?}"),
        other => panic!("expected the stop report, got {other:?}"),
    }
    h.stop().await.unwrap();
}

#[tokio::test]
async fn checkpoints_are_sent_again_after_a_reconnect_and_come_before_the_preempted_report() {
    let script = r#"printf 'from %s' "$(cat "$TIDAL_CHECKPOINT_FILE")" > "$TIDAL_CHECKPOINT_FILE.new"
mv "$TIDAL_CHECKPOINT_FILE.new" "$TIDAL_CHECKPOINT_FILE"
while [ ! -e "$TIDAL_PREEMPT_FILE" ]; do sleep 0.02; done
printf last > "$TIDAL_CHECKPOINT_FILE"
exit 1"#;
    let mut h = Harness::start(script, None).await;
    let mut s = h.session().await;
    register(&mut s).await;
    let ToAgent::Assignment(mut a) = assignment("t1", 9, b"") else {
        unreachable!()
    };
    a.checkpoint = b"step 3".to_vec();
    s.send(ToAgent::Assignment(a));
    expect_started(&mut s, "t1", 9).await;
    let first = match s.recv_non_heartbeat(true).await {
        Some(FromAgent::Checkpoint(c)) => c,
        other => panic!("expected a checkpoint, got {other:?}"),
    };
    assert_eq!(
        (first.task_id.as_str(), first.token, first.data.as_slice()),
        ("t1", 9, b"from step 3".as_slice())
    );
    // Lost before the leader kept it: sent again after the reconnect.
    drop(s);
    let mut s = h.session().await;
    register(&mut s).await;
    // Its start first (it still runs), then its checkpoint.
    expect_started(&mut s, "t1", 9).await;
    match s.recv_non_heartbeat(true).await {
        Some(FromAgent::Checkpoint(c)) => assert_eq!(c, first),
        other => panic!("expected the checkpoint again, got {other:?}"),
    }
    s.send(ToAgent::Stop(v1::StopTask {
        task_id: "t1".into(),
        token: 9,
        reason: "preempted for t7".into(),
        preempt: true,
        grace_ms: 10_000,
        notice: v1::PreemptNotice::File.into(),
    }));
    match s.recv_non_heartbeat(true).await {
        Some(FromAgent::Checkpoint(c)) => assert_eq!(c.data, b"last"),
        other => panic!("expected the last checkpoint, got {other:?}"),
    }
    let report = match s.recv_non_heartbeat(true).await {
        Some(FromAgent::Completed(c)) => c,
        other => panic!("expected the preempted report, got {other:?}"),
    };
    assert!(report.stopped && !report.success, "{report:?}");
    s.send(ToAgent::CompletionAck(v1::CompletionAck {
        task_id: "t1".into(),
        token: 9,
        accepted: true,
        reason: String::new(),
    }));
    // Another task, started after the ack was taken (messages are handled
    // in order), with a checkpoint of its own.
    s.send(assignment("t2", 10, b""));
    expect_started(&mut s, "t2", 10).await;
    let t2 = match s.recv_non_heartbeat(true).await {
        Some(FromAgent::Checkpoint(c)) => c,
        other => panic!("expected t2's checkpoint, got {other:?}"),
    };
    assert_eq!(
        (t2.task_id.as_str(), t2.data.as_slice()),
        ("t2", b"from ".as_slice())
    );
    // t1 is settled: after another reconnect only t2's checkpoint is sent.
    drop(s);
    let mut s = h.session().await;
    let Some(FromAgent::Register(reg)) = s.recv().await else {
        panic!("first message must be Register")
    };
    assert_eq!(reg.running.len(), 1, "{reg:?}");
    s.send(registered(10_000, 50));
    expect_started(&mut s, "t2", 10).await;
    match s.recv_non_heartbeat(true).await {
        Some(FromAgent::Checkpoint(c)) => assert_eq!(c, t2),
        other => panic!("expected t2's checkpoint again, got {other:?}"),
    }
    for _ in 0..3 {
        match s.recv().await {
            Some(FromAgent::Heartbeat(hb)) => {
                s.send(ToAgent::HeartbeatAck(v1::HeartbeatAck { seq: hb.seq }));
            }
            other => panic!("expected only heartbeats, got {other:?}"),
        }
    }
    h.stop().await.unwrap();
}

#[tokio::test]
async fn an_unanswered_checkpoint_goes_again_until_the_leader_answers_it() {
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let script = format!(
        r#"printf one > "$TIDAL_CHECKPOINT_FILE"
while [ ! -e {go} ]; do sleep 0.02; done
printf two > "$TIDAL_CHECKPOINT_FILE.new"; mv "$TIDAL_CHECKPOINT_FILE.new" "$TIDAL_CHECKPOINT_FILE"
exec sleep 30"#,
        go = go.display()
    );
    let mut h = Harness::start(&script, None).await;
    let mut s = h.session().await;
    register(&mut s).await;
    s.send(assignment("t1", 9, b""));
    expect_started(&mut s, "t1", 9).await;
    let one = match s.recv_non_heartbeat(true).await {
        Some(FromAgent::Checkpoint(c)) => c,
        other => panic!("expected a checkpoint, got {other:?}"),
    };
    assert_eq!((one.data.as_slice(), one.token), (b"one".as_slice(), 9));
    assert!(one.seq > 0, "{one:?}");
    // Not answered: the same one goes again on the same session.
    match s.recv_non_heartbeat(true).await {
        Some(FromAgent::Checkpoint(c)) => assert_eq!(c, one),
        other => panic!("expected the checkpoint again, got {other:?}"),
    }
    std::fs::write(&go, b"").unwrap();
    let two = loop {
        match s.recv_non_heartbeat(true).await {
            Some(FromAgent::Checkpoint(c)) if c == one => continue,
            Some(FromAgent::Checkpoint(c)) => break c,
            other => panic!("expected the new checkpoint, got {other:?}"),
        }
    };
    assert_eq!(two.data, b"two");
    assert!(two.seq > one.seq, "{two:?}");
    let ack = |seq| {
        ToAgent::CheckpointAck(v1::CheckpointAck {
            task_id: "t1".into(),
            token: 9,
            seq,
            accepted: true,
            reason: String::new(),
        })
    };
    // The answer to the older one settles nothing: the newest goes again.
    s.send(ack(one.seq));
    match s.recv_non_heartbeat(true).await {
        Some(FromAgent::Checkpoint(c)) => assert_eq!(c, two),
        other => panic!("expected the newest checkpoint again, got {other:?}"),
    }
    s.send(ack(two.seq));
    // Answered: nothing but heartbeats, past when it would have gone
    // again (2 s after its resend; heartbeats are 50 ms apart).
    for _ in 0..50 {
        match s.recv().await {
            Some(FromAgent::Heartbeat(hb)) => {
                s.send(ToAgent::HeartbeatAck(v1::HeartbeatAck { seq: hb.seq }));
            }
            other => panic!("expected only heartbeats, got {other:?}"),
        }
    }
    h.stop().await.unwrap();
}

#[tokio::test]
async fn registers_and_heartbeats_with_the_models_its_workers_report_warm() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("warm");
    std::fs::write(&file, "sdxl\n").unwrap();
    // The worker loads another model and says so through the file.
    let script = r#"printf 'vits\nsdxl\n' > "$TIDAL_WARM_MODELS_FILE.new" && mv "$TIDAL_WARM_MODELS_FILE.new" "$TIDAL_WARM_MODELS_FILE""#;
    let warm = file.clone();
    let mut h = Harness::start_with(script, None, None, move |c| {
        c.warm_models_file = Some(warm);
    })
    .await;
    let mut s = h.session().await;
    let Some(FromAgent::Register(reg)) = s.recv().await else {
        panic!("first message must be Register")
    };
    assert_eq!(reg.warm_models, ["sdxl"]);
    s.send(registered(10_000, 50));
    match s.recv().await {
        Some(FromAgent::Heartbeat(hb)) => {
            assert_eq!(hb.warm_models, ["sdxl"]);
            s.send(ToAgent::HeartbeatAck(v1::HeartbeatAck { seq: hb.seq }));
        }
        other => panic!("expected a heartbeat, got {other:?}"),
    }
    s.send(assignment("t-warm", 9, b""));
    // Heartbeats carry the new list once the worker wrote it.
    loop {
        match s.recv().await {
            Some(FromAgent::Heartbeat(hb)) => {
                s.send(ToAgent::HeartbeatAck(v1::HeartbeatAck { seq: hb.seq }));
                if hb.warm_models == ["vits", "sdxl"] {
                    break;
                }
            }
            Some(_) => {}
            None => panic!("session ended"),
        }
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "vits\nsdxl\n");
    h.stop().await.unwrap();
}

#[tokio::test]
async fn a_running_task_is_said_started_again_on_every_new_session() {
    let mut h = Harness::start("sleep 30", None).await;
    let mut s = h.session().await;
    register(&mut s).await;
    s.send(assignment("t1", 7, b""));
    expect_started(&mut s, "t1", 7).await;
    // The session is lost, and the TaskStarted it carried may be lost with
    // it: the next session says so again once registered.
    drop(s);
    let mut s = h.session().await;
    let Some(FromAgent::Register(reg)) = s.recv().await else {
        panic!("first message must be Register")
    };
    assert_eq!(reg.running.len(), 1, "{reg:?}");
    s.send(registered(10_000, 50));
    tokio::time::timeout(Duration::from_secs(10), expect_started(&mut s, "t1", 7))
        .await
        .expect("the running task's start is sent again on the new session");
    h.stop().await.unwrap();
}
