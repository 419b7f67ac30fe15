//! Sessions with the leader: opening one (Register with what this process
//! still holds), Registered, heartbeats, sending, and losing a session
//! (reconnect with backoff, or at once to the leader a server named).

use std::time::Duration;

use tidal_client::Session;
use tidal_proto::v1::{self, agent_message::Msg as Out};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tonic::Code;

use super::{sleep_until_opt, Agent, Conn, Displaced, Open, RECONNECT_MAX, RECONNECT_MIN};

/// Messages queued toward the server before the session counts as stuck.
const OUTBOUND_QUEUE: usize = 1024;
/// Shortest heartbeat interval the agent uses whatever the server says.
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);
/// A heartbeat unanswered for this many heartbeat intervals means the
/// leader went silent or stopped leading: look for the new one at once.
const ACK_DEADLINE_BEATS: u32 = 2;
/// The trailer on a session the leader closed because another agent process
/// registered under this agent id (the server sets the same name).
const DISPLACED_TRAILER: &str = "tidal-agent-displaced";
/// Words of the server's message for the same (when no trailer arrives).
const DISPLACED_PHRASE: &str = "took the id over";

pub(super) enum ConnEvent {
    ReconnectDue,
    Connected(Result<Session, tidal_client::Error>),
    Inbound(Result<Option<v1::ServerMessage>, tonic::Status>),
    HeartbeatDue,
    /// A heartbeat went unacknowledged past the session's deadline.
    Silent,
}

impl Agent {
    pub(super) fn on_conn(&mut self, c: ConnEvent) -> anyhow::Result<()> {
        match c {
            // Deregistering: a new registration would add this agent back.
            ConnEvent::ReconnectDue if self.deregistering() => {
                self.conn = Conn::Idle {
                    retry_at: Instant::now() + RECONNECT_MAX,
                };
            }
            ConnEvent::ReconnectDue => self.connect(),
            ConnEvent::Connected(Ok(session)) => {
                let tx = match std::mem::replace(
                    &mut self.conn,
                    Conn::Idle {
                        retry_at: Instant::now(),
                    },
                ) {
                    Conn::Connecting { tx, .. } => tx,
                    other => {
                        self.conn = other;
                        return Ok(());
                    }
                };
                tracing::info!(endpoint = %session.endpoint, "session opened");
                self.ever_opened = true;
                self.conn = Conn::Open(Box::new(Open {
                    tx,
                    inbound: session.inbound,
                    endpoint: session.endpoint,
                    opened_at: session.opened_at,
                    heartbeat: None,
                    ack_timeout: RECONNECT_MAX,
                }));
            }
            ConnEvent::Connected(Err(e)) => {
                // The leader refused a process it displaced before (should
                // the refusal come as the call's status, not the stream's).
                if e.code == Code::Aborted && e.message.contains(DISPLACED_PHRASE) {
                    tracing::error!(instance = %self.instance, error = %e.message, "another agent process took this agent id over: stopping every task and exiting");
                    return Err(Displaced {
                        agent_id: self.config.id.clone(),
                        message: e.message,
                    }
                    .into());
                }
                if e.is_tls_refusal() {
                    if !self.ever_opened {
                        return Err(anyhow::anyhow!(
                            "cannot connect to the servers over TLS: {e}"
                        ));
                    }
                    tracing::warn!(error = %e, "a server refused TLS; retrying");
                    self.schedule_reconnect();
                    return Ok(());
                }
                if matches!(e.code, Code::PermissionDenied | Code::Unauthenticated) {
                    return Err(self.credentials_refused(e, "registration"));
                }
                if matches!(e.code, Code::InvalidArgument | Code::Unimplemented) {
                    return Err(anyhow::anyhow!(
                        "the server refused this agent's registration: {e}"
                    ));
                }
                tracing::warn!(error = %e, "cannot open a session with the leader; retrying");
                self.schedule_reconnect();
            }
            ConnEvent::Inbound(Ok(Some(m))) => {
                if let Some(m) = m.msg {
                    self.on_server(m)?;
                }
            }
            ConnEvent::Inbound(Ok(None)) => {
                tracing::info!("the leader closed the session; reconnecting");
                self.forget_endpoint();
                self.schedule_reconnect();
            }
            ConnEvent::Inbound(Err(status)) => {
                if let Some(by) = status.metadata().get(DISPLACED_TRAILER) {
                    let by = by.to_str().unwrap_or("unknown").to_string();
                    tracing::error!(
                        instance = %self.instance,
                        displaced_by = %by,
                        running = self.exec.live(),
                        error = %status.message(),
                        "another agent process took this agent id over: stopping every task and exiting"
                    );
                    return Err(Displaced {
                        agent_id: self.config.id.clone(),
                        message: status.message().to_string(),
                    }
                    .into());
                }
                // The token was revoked or expired (or no longer allows a
                // session): no session will take it again.
                if matches!(
                    status.code(),
                    Code::Unauthenticated | Code::PermissionDenied
                ) {
                    let e = tidal_client::Error::new(status.code(), status.message());
                    return Err(self.credentials_refused(e, "session"));
                }
                self.forget_endpoint();
                if self.client.observe(&status) {
                    // The server named the new leader (it stepped down, handed
                    // leadership over or is shutting down): go there at once.
                    tracing::info!(code = ?status.code(), error = %status.message(), "session ended; reconnecting to the leader it named");
                    self.reconnect_delay = RECONNECT_MIN;
                    self.drop_session(Instant::now());
                } else {
                    tracing::warn!(code = ?status.code(), error = %status.message(), "session lost; reconnecting");
                    self.schedule_reconnect();
                }
            }
            ConnEvent::HeartbeatDue => self.heartbeat(),
            ConnEvent::Silent => {
                let timeout_ms = match &self.conn {
                    Conn::Open(o) => o.ack_timeout.as_millis() as u64,
                    _ => 0,
                };
                tracing::warn!(
                    timeout_ms,
                    "the leader has not acknowledged a heartbeat in time; looking for the leader again"
                );
                self.forget_endpoint();
                self.reconnect_delay = RECONNECT_MIN;
                self.drop_session(Instant::now());
            }
        }
        Ok(())
    }

    pub(super) fn on_registered(&mut self, r: v1::Registered) -> anyhow::Result<()> {
        let server_ttl = Duration::from_millis(r.server_ttl_ms);
        if server_ttl.is_zero() {
            anyhow::bail!(
                "the leader sent a zero lease ttl; refusing to run tasks without a lease"
            );
        }
        let ttl = match self.config.lease_ttl(server_ttl) {
            Ok(t) => t,
            Err(e) => {
                return Err(anyhow::anyhow!(e).context("refusing to run a session with this leader"))
            }
        };
        let Conn::Open(open) = &mut self.conn else {
            return Ok(());
        };
        let every = Duration::from_millis(r.heartbeat_interval_ms)
            .min(ttl / 3)
            .max(MIN_HEARTBEAT);
        let mut hb = tokio::time::interval_at(Instant::now() + every, every);
        hb.set_missed_tick_behavior(MissedTickBehavior::Delay);
        open.heartbeat = Some(hb);
        open.ack_timeout = every * ACK_DEADLINE_BEATS;
        // The server's lease began when it received the Register, which was
        // sent after `opened_at`.
        if !r.displaced_instance.is_empty() {
            tracing::warn!(
                instance = %self.instance,
                displaced_instance = %r.displaced_instance,
                "another agent process held this agent id: this process took it over, and that \
                 one was told to stop its tasks and exit; its tasks run again here once its lease has ended"
            );
        }
        self.lease.set_ttl(ttl);
        self.lease.renewed_from(open.opened_at);
        self.reconnect_delay = RECONNECT_MIN;
        self.metrics.registered();
        tracing::info!(
            endpoint = %open.endpoint,
            leader_id = r.leader_id,
            server_ttl_ms = r.server_ttl_ms,
            ttl_ms = ttl.as_millis() as u64,
            heartbeat_ms = every.as_millis() as u64,
            running = self.exec.live(),
            pending_completions = self.outbox.len(),
            "registered with the leader"
        );
        // Every task running here is said to have started again: the
        // TaskStarted sent on an earlier session may have been lost with it
        // (the task would stay ASSIGNED while it runs). The leader records
        // a start once; a repeat for a task RUNNING under the same token is
        // answered Ok and changes nothing, and one for a token this agent
        // no longer holds is refused.
        for r in self.exec.running() {
            self.send_if_registered(Out::Started(v1::TaskStarted {
                task_id: r.task_id,
                token: r.token,
            }));
        }
        // The latest unanswered checkpoints first: a task's checkpoint
        // precedes its completion, as when it was first sent.
        for c in self.outbox.checkpoints_resent(Instant::now()) {
            self.send_if_registered(Out::Checkpoint(c));
        }
        let resend: Vec<v1::TaskCompleted> = self.outbox.pending().cloned().collect();
        for c in resend {
            self.send_if_registered(Out::Completed(c));
        }
        self.drain_again();
        Ok(())
    }

    pub(super) fn heartbeat(&mut self) {
        self.heartbeat_seq += 1;
        let seq = self.heartbeat_seq;
        // Invariant 6: the lease is renewed from this send time.
        self.lease.sent(seq, Instant::now());
        let warm_models = self.warm_models();
        self.send_if_registered(Out::Heartbeat(v1::Heartbeat {
            seq,
            free_slots: self.exec.free_slots(),
            warm_models,
        }));
    }

    pub(super) fn registered(&self) -> bool {
        matches!(&self.conn, Conn::Open(o) if o.heartbeat.is_some())
    }

    /// Sends on the open, registered session; a full or closed queue means a
    /// stuck session, which is dropped (what it carried is resent later).
    pub(super) fn send_if_registered(&mut self, m: Out) {
        let Conn::Open(open) = &self.conn else { return };
        if open.heartbeat.is_none() {
            return;
        }
        if let Err(e) = open.tx.try_send(v1::AgentMessage { msg: Some(m) }) {
            tracing::warn!(error = %e, "session outbound queue unusable; reconnecting");
            self.schedule_reconnect();
        }
    }

    /// Starts opening a session: Register with everything still held.
    pub(super) fn connect(&mut self) {
        let mut running = self.exec.running();
        running.extend(self.outbox.held());
        let first = v1::AgentMessage {
            msg: Some(Out::Register(v1::Register {
                spec: Some(self.config.spec()),
                running,
                instance: self.instance.clone(),
                warm_models: self.warm_models(),
                fenced: self
                    .fenced
                    .iter()
                    .map(|(task_id, token)| v1::RunningTask {
                        task_id: task_id.clone(),
                        token: *token,
                    })
                    .collect(),
            })),
        };
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let client = self.client.clone();
        tracing::debug!(leader = ?client.leader(), "opening a session");
        let handle = tokio::spawn(async move { client.open_session(first, rx).await });
        self.conn = Conn::Connecting { handle, tx };
    }

    /// The session's server failed or went silent: do not trust it to be
    /// the leader, nor its connection to be alive, on the next attempt.
    pub(super) fn forget_endpoint(&self) {
        if let Conn::Open(open) = &self.conn {
            self.client.lost(&open.endpoint);
        }
    }

    pub(super) fn schedule_reconnect(&mut self) {
        let d = self.reconnect_delay;
        self.reconnect_delay = (d * 2).min(RECONNECT_MAX);
        self.drop_session(Instant::now() + d);
    }

    pub(super) fn drop_session(&mut self, retry_at: Instant) {
        if let Conn::Connecting { handle, .. } = &self.conn {
            handle.abort();
        }
        // Dropping the sender ends the outbound stream; dropping the inbound
        // stream cancels the call.
        self.conn = Conn::Idle { retry_at };
        self.lease.abandon_in_flight();
        self.metrics.disconnected();
    }
}

pub(super) async fn next_conn_event(conn: &mut Conn, oldest_unacked: Option<Instant>) -> ConnEvent {
    match conn {
        Conn::Idle { retry_at } => {
            tokio::time::sleep_until(*retry_at).await;
            ConnEvent::ReconnectDue
        }
        Conn::Connecting { handle, .. } => match handle.await {
            Ok(r) => ConnEvent::Connected(r),
            Err(e) => ConnEvent::Connected(Err(tidal_client::Error::new(
                Code::Unavailable,
                format!("session task failed: {e}"),
            ))),
        },
        Conn::Open(open) => {
            let Open {
                inbound,
                heartbeat,
                ack_timeout,
                ..
            } = &mut **open;
            let silent_at = oldest_unacked
                .filter(|_| heartbeat.is_some())
                .map(|at| at + *ack_timeout);
            tokio::select! {
                m = inbound.message() => ConnEvent::Inbound(m),
                _ = tick_opt(heartbeat) => ConnEvent::HeartbeatDue,
                _ = sleep_until_opt(silent_at) => ConnEvent::Silent,
            }
        }
    }
}

async fn tick_opt(i: &mut Option<Interval>) {
    match i {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}
