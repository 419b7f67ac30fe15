//! `tidal.v1.Agents`: the agent session (held with the leader) and listing.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::Stream;
use tidal_core::access::{Role, TokenId, ACCESS_VERSION};
use tidal_core::command::{Command, Completion, Finished, Response as CoreResponse};
use tidal_core::lifecycle::{LIFECYCLE_VERSION, MAX_CHECKPOINT_BYTES};
use tidal_core::limits::{validate_agent_spec, validate_name, Limits};
use tidal_core::model::{AgentSpec, FencingToken, Outcome, TaskId, TaskState};
use tidal_core::State;
use tidal_proto::v1::{
    self, agent_message::Msg as In, agents_server::Agents, server_message::Msg as Out,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::agent_checkpoints::{Pending, Put};
use super::conn;
use super::convert;
use crate::auth::grant::Grant;
use crate::batcher::{Report, MAX_ENTRY_BYTES};
use crate::error::ServerError;
use crate::leader::engine::{Closed, Event, Peer, ToAgent, Work};
use crate::leader::leadership::Leadership;
use crate::leader::session_input::{Opened, Outbound, SessionInput};
use crate::node::Node;

/// The sending end of a session's messages.
type Tx = mpsc::UnboundedSender<ToAgent>;

/// What a session hands to its reporter, which proposes in arrival order.
#[derive(Debug)]
enum Reported {
    Completed(v1::TaskCompleted),
    /// Checkpoints wait in the session's [`Pending`].
    Checkpoints,
}

/// A session's checkpoints not yet proposed.
type Checkpoints = Arc<Mutex<Pending>>;

pub struct AgentService {
    pub node: Arc<Node>,
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<v1::ServerMessage, Status>> + Send>>;

fn msg(m: Out) -> v1::ServerMessage {
    v1::ServerMessage { msg: Some(m) }
}

/// The trailer that tells an agent process another process took its id
/// over (tidal-agent reads the same name): it stops its tasks and exits.
pub const DISPLACED_TRAILER: &str = "tidal-agent-displaced";

/// The status a closed session ends with.
fn closed_status(agent_id: &str, closed: &Closed) -> Status {
    match closed {
        Closed::Displaced { by, from } => {
            let mut md = tonic::metadata::MetadataMap::new();
            if let Ok(v) = by.parse() {
                md.insert(DISPLACED_TRAILER, v);
            } else if let Ok(v) = "unknown".parse() {
                md.insert(DISPLACED_TRAILER, v);
            }
            Status::with_metadata(
                tonic::Code::Aborted,
                format!(
                    "another agent process registered as agent {agent_id:?} (instance {}, from {from}) \
                     and took the id over; this process must stop its tasks and exit: \
                     two processes may not share an agent id",
                    if by.is_empty() { "unnamed" } else { by.as_str() }
                ),
                md,
            )
        }
        Closed::Replaced => Status::cancelled(format!(
            "a newer session of the same agent process replaced this one (agent {agent_id:?})"
        )),
        Closed::Expired => Status::unavailable(format!(
            "the lease of agent {agent_id:?} expired: it was marked down and its tasks requeued; register again"
        )),
        Closed::Revoked { token } => Status::unauthenticated(format!(
            "token tdl_{token} was revoked or has expired: the session of agent {agent_id:?} is closed \
             and its tasks go to other agents once its lease runs out"
        )),
    }
}

/// The status a closed session ends with, saying for a token that stopped
/// being active which of revoked or expired it is.
fn end_status(node: &Node, agent_id: &str, closed: &Closed) -> Status {
    let Closed::Revoked { token } = closed else {
        return closed_status(agent_id, closed);
    };
    let expired = node
        .state
        .read()
        .state
        .access()
        .token(token)
        .is_some_and(|t| t.revoked_ms.is_none());
    let what = if expired {
        "has expired"
    } else {
        "was revoked"
    };
    Status::unauthenticated(format!(
        "token tdl_{token} {what}: the session of agent {agent_id:?} is closed \
         and its tasks go to other agents once its lease runs out"
    ))
}

/// The warm models an agent reported, as the leader keeps them: at most
/// `limits.max_models` valid names, sorted and without repeats. Invalid
/// names and those past the limit are left out, with a warning the first
/// time in a session (`warned`), since the list comes again with every
/// heartbeat.
fn warm_models(
    agent_id: &str,
    reported: Vec<String>,
    limits: &Limits,
    warned: &mut bool,
) -> Vec<String> {
    let mut kept = BTreeSet::new();
    let mut invalid = 0usize;
    let mut over = 0usize;
    for m in reported {
        if validate_name("model", &m, limits).is_err() {
            invalid += 1;
        } else if kept.len() >= limits.max_models && !kept.contains(&m) {
            over += 1;
        } else {
            kept.insert(m);
        }
    }
    if (invalid > 0 || over > 0) && !*warned {
        *warned = true;
        tracing::warn!(
            agent_id = %agent_id,
            invalid,
            over_limit = over,
            limit = limits.max_models,
            "ignoring warm models the agent reported: invalid names, or more than the limit"
        );
    }
    kept.into_iter().collect()
}

/// What a session's Register proposes, and the token the session lasts
/// with. A caller that the auth layer established with a token the state
/// knows (cluster format version 3) has its session end when that token
/// stops being active; an agent token also owns the agent id
/// (`RegisterAgentAs`: refused if another active token owns it) and binds
/// the agent to the token's tenant. Without a grant (the server checks no
/// tokens) it is the plain `RegisterAgent`.
fn registration(
    state: &State,
    spec: AgentSpec,
    grant: Option<&Grant>,
) -> (Command, Option<TokenId>) {
    let token = grant
        .and_then(|g| g.token.clone())
        .filter(|t| state.cluster_version() >= ACCESS_VERSION && state.access().token(t).is_some());
    match (grant.map(Grant::role), token) {
        (Some(Role::Agent), Some(token)) => (
            Command::RegisterAgentAs {
                spec,
                token: token.clone(),
            },
            Some(token),
        ),
        (_, token) => (Command::RegisterAgent(spec), token),
    }
}

/// Why the session was closed; `None` if it never will be (the leadership
/// dropped it).
async fn wait_closed(closed: &mut watch::Receiver<Option<Closed>>) -> Option<Closed> {
    match closed.wait_for(Option::is_some).await {
        Ok(c) => c.clone(),
        Err(_) => None,
    }
}

/// The session's messages until the leader closes it, then the status.
fn session_stream(
    node: Arc<Node>,
    agent_id: String,
    rx: mpsc::UnboundedReceiver<ToAgent>,
    closed: watch::Receiver<Option<Closed>>,
) -> SessionStream {
    let at_close = node.clone();
    let messages = futures::stream::unfold((Some(rx), closed), move |(rx, mut closed)| {
        let agent_id = agent_id.clone();
        let node = at_close.clone();
        async move {
            let mut rx = rx?;
            tokio::select! {
                biased;
                c = wait_closed(&mut closed) => match c {
                    Some(c) => Some((Err(end_status(&node, &agent_id, &c)), (None, closed))),
                    // Never closed: the messages end when the session does.
                    None => rx.recv().await.map(|m| (Ok(m), (Some(rx), closed))),
                },
                m = rx.recv() => m.map(|m| (Ok(m), (Some(rx), closed))),
            }
        }
    });
    // The wire form is built as each message leaves (an assignment reads
    // its task's spec from the applied state).
    Box::pin(messages.filter_map(move |m| match m {
        Ok(m) => convert::to_agent(&node.state.read().state, m).map(Ok),
        Err(status) => Some(Err(status)),
    }))
}

#[tonic::async_trait]
impl Agents for AgentService {
    type SessionStream = SessionStream;

    #[tracing::instrument(skip_all, fields(node_id = self.node.id, agent_id))]
    async fn session(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let node = self.node.clone();
        let leadership = node.await_leader().await?;
        let addr = conn::caller(&request)
            .map(|c| c.remote.to_string())
            .unwrap_or_else(|| "an unknown address".into());
        let grant = request.extensions().get::<Grant>().cloned();
        let mut inbound = request.into_inner();
        let register = match inbound.message().await? {
            Some(v1::AgentMessage {
                msg: Some(In::Register(r)),
            }) => r,
            _ => {
                return Err(ServerError::InvalidArgument(
                    "a session must start with a Register message".into(),
                )
                .into())
            }
        };
        let mut warned = false;
        let warm = warm_models(
            &register
                .spec
                .as_ref()
                .map(|s| s.id.clone())
                .unwrap_or_default(),
            register.warm_models,
            &node.config.limits,
            &mut warned,
        );
        let spec = convert::agent_spec_from(register.spec.unwrap_or_default());
        validate_agent_spec(&spec, &node.config.limits).map_err(ServerError::from)?;
        if spec.dc != node.config.dc {
            return Err(ServerError::InvalidArgument(format!(
                "agent {:?} is in dc {:?} but this server is in dc {:?}",
                spec.id, spec.dc, node.config.dc
            ))
            .into());
        }
        let agent_id = spec.id.clone();
        tracing::Span::current().record("agent_id", agent_id.as_str());
        let (command, token) = registration(&node.state.read().state, spec, grant.as_ref());
        let peer = Peer {
            instance: register.instance.clone(),
            addr,
            token,
        };
        // A process whose id was taken over may not take it back (it did
        // not hear it was displaced): it is told again, and exits.
        if was_displaced(&node, &leadership, &agent_id, &peer.instance).await? {
            tracing::warn!(agent_id = %agent_id, instance = %peer.instance, from = %peer.addr, "refusing a session: this agent process was displaced by another process under the same id");
            let status = closed_status(
                &agent_id,
                &Closed::Displaced {
                    by: "another process".into(),
                    from: "an earlier session".into(),
                },
            );
            let out = futures::stream::once(async move { Err(status) });
            return Ok(Response::new(Box::pin(out)));
        }
        match node.propose(command).await? {
            (CoreResponse::Ok, _) => {}
            (CoreResponse::Rejected(r), _) => return Err(ServerError::Rejected(r).into()),
            (other, _) => {
                return Err(ServerError::Internal(format!("unexpected response {other:?}")).into())
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (close, closed) = watch::channel(None);
        let (reply, opened) = oneshot::channel();
        // The engine attaches the session and settles what the agent id
        // holds against what the process reported, under one read of the
        // state: every assignment is settled there (token at or below the
        // applied index) or pushed on this session afterwards (above it),
        // never both. Its cancels are queued on `tx`.
        leadership.session_input(SessionInput::Open {
            agent: agent_id.clone(),
            peer: peer.clone(),
            reported: register
                .running
                .iter()
                .map(|r| (r.task_id.clone(), r.token))
                .collect(),
            fenced: register
                .fenced
                .iter()
                .map(|r| (r.task_id.clone(), r.token))
                .collect(),
            warm_models: warm,
            outbound: Outbound {
                tx: tx.clone(),
                close,
            },
            reply,
        });
        let Ok(Opened {
            generation,
            displaced,
        }) = opened.await
        else {
            // The leadership ended before the session attached.
            return Err(node.not_leader().into());
        };
        // Registered goes first: reconcile's cancels were queued behind
        // nothing else yet, and the agent only acts on them once registered.
        let registered = msg(Out::Registered(v1::Registered {
            agent_id: agent_id.clone(),
            leader_id: node.id,
            server_ttl_ms: node.config.agent_ttl.as_millis() as u64,
            heartbeat_interval_ms: node.config.heartbeat_interval.as_millis() as u64,
            displaced_instance: displaced
                .as_ref()
                .map(|d| d.instance.clone())
                .unwrap_or_default(),
        }));
        if let Some(d) = &displaced {
            tracing::warn!(
                agent_id = %agent_id,
                instance = %peer.instance,
                from = %peer.addr,
                displaced_instance = %d.instance,
                displaced_from = %d.addr,
                "a second agent process registered under a live agent id: it takes the id over; \
                 the other process's session is closed (ABORTED) and it stops its tasks"
            );
        }
        tracing::info!(agent_id = %agent_id, generation, instance = %peer.instance, "agent session started");
        // A session that fails (garbage on the stream) ends with that error
        // as its status, not OK.
        let (fail, failed) = oneshot::channel::<Status>();
        tokio::spawn(serve_session(
            node.clone(),
            leadership.clone(),
            agent_id.clone(),
            generation,
            closed.clone(),
            inbound,
            tx,
            fail,
            warned,
        ));
        let failed = futures::stream::once(failed).filter_map(|r| r.ok().map(Err));
        // A session that ends because this leadership ended (a step-down,
        // a transfer, a graceful shutdown) ends with NotLeader naming the
        // new leader, so the agent goes to it at once. A node that has just
        // granted its vote learns who won with the winner's first append:
        // wait for that a little (an election timeout at most).
        let ended = futures::stream::once(async move {
            if leadership.is_alive() {
                return None;
            }
            let within = std::time::Duration::from_millis(node.config.election_timeout.1);
            let _ = node
                .raft
                .wait(Some(within))
                .metrics(
                    |m| m.current_leader.is_some_and(|l| l != node.id),
                    "another leader is known",
                )
                .await;
            Some(Err(Status::from(node.not_leader())))
        })
        .filter_map(|end| end);
        let out = futures::stream::once(async move { Ok(registered) })
            .chain(futures::stream::select(
                session_stream(self.node.clone(), agent_id, rx, closed),
                failed,
            ))
            .chain(ended);
        Ok(Response::new(Box::pin(out)))
    }

    async fn list(
        &self,
        request: Request<v1::ListAgentsRequest>,
    ) -> Result<Response<v1::ListAgentsResponse>, Status> {
        if !request.into_inner().stale {
            self.node.linearizable().await?;
        }
        let view = self.node.leadership().map(|l| l.view()).unwrap_or_default();
        let applied = self.node.state.read();
        let agents = applied
            .state
            .agents()
            .map(|a| agent_info(&applied.state, a, &view.connected, &view.warm))
            .collect();
        Ok(Response::new(v1::ListAgentsResponse { agents }))
    }

    #[tracing::instrument(skip_all, fields(node_id = self.node.id, agent_id))]
    async fn drain(
        &self,
        request: Request<v1::DrainAgentRequest>,
    ) -> Result<Response<v1::AgentInfo>, Status> {
        let grant = request.extensions().get::<Grant>().cloned();
        let r = request.into_inner();
        let agent = named_agent(&r.agent_id)?;
        tracing::Span::current().record("agent_id", agent.as_str());
        self.owned_by(grant.as_ref(), &agent, "drain").await?;
        let deadline_ms = match r.deadline_ms {
            Some(ms) if ms > MAX_DRAIN_DEADLINE_MS => {
                return Err(ServerError::InvalidArgument(format!(
                    "drain deadline {ms} ms is over the limit of {MAX_DRAIN_DEADLINE_MS} ms (7 days)"
                ))
                .into())
            }
            // Absolute, on this (the leader's) clock: apply reads it from
            // the entry, and whichever node leads at the deadline acts.
            Some(ms) => Some(crate::clock::now_ms().saturating_add(ms)),
            None => None,
        };
        let index = self
            .admin_write(Command::DrainAgent {
                agent: agent.clone(),
                deadline_ms,
            })
            .await?;
        tracing::info!(agent_id = %agent, log_index = index, deadline_ms = ?r.deadline_ms, "agent draining");
        Ok(Response::new(self.agent_info(&agent)?))
    }

    #[tracing::instrument(skip_all, fields(node_id = self.node.id, agent_id))]
    async fn undrain(
        &self,
        request: Request<v1::UndrainAgentRequest>,
    ) -> Result<Response<v1::AgentInfo>, Status> {
        let grant = request.extensions().get::<Grant>().cloned();
        let agent = named_agent(&request.into_inner().agent_id)?;
        tracing::Span::current().record("agent_id", agent.as_str());
        self.owned_by(grant.as_ref(), &agent, "undrain").await?;
        let index = self
            .admin_write(Command::UndrainAgent {
                agent: agent.clone(),
            })
            .await?;
        tracing::info!(agent_id = %agent, log_index = index, "agent undrained: ready again");
        Ok(Response::new(self.agent_info(&agent)?))
    }

    #[tracing::instrument(skip_all, fields(node_id = self.node.id, agent_id))]
    async fn deregister(
        &self,
        request: Request<v1::DeregisterAgentRequest>,
    ) -> Result<Response<v1::DeregisterAgentResponse>, Status> {
        let grant = request.extensions().get::<Grant>().cloned();
        let agent = named_agent(&request.into_inner().agent_id)?;
        tracing::Span::current().record("agent_id", agent.as_str());
        // The checks read the leader's state as of now, not a follower's.
        self.node.linearizable().await?;
        self.owned_by(grant.as_ref(), &agent, "deregister").await?;
        let held = {
            let applied = self.node.state.read();
            match applied.state.agent(&agent) {
                Some(a) => a.tasks.len(),
                None => {
                    return Err(ServerError::Rejected(
                        tidal_core::command::Rejection::AgentNotFound(agent),
                    )
                    .into())
                }
            }
        };
        // Checked here, not at apply: deregistering an agent that holds
        // tasks requeues them with an attempt spent, which only a lost
        // agent should cost. A task granted between this check and the
        // commit is requeued that way (the agent is draining, so none is).
        if held > 0 {
            return Err(ServerError::FailedPrecondition(format!(
                "agent {agent:?} still holds {held} task(s): drain it first (`tidal agent drain {agent}`)"
            ))
            .into());
        }
        let index = self
            .admin_write(Command::DeregisterAgent {
                agent: agent.clone(),
            })
            .await?;
        if let Some(l) = self.node.leadership() {
            l.notify(Event::Forgotten {
                agent: agent.clone(),
            });
        }
        tracing::info!(agent_id = %agent, log_index = index, "agent deregistered");
        Ok(Response::new(v1::DeregisterAgentResponse {
            log_index: index,
        }))
    }
}

/// Longest drain deadline accepted, from now: 7 days.
pub const MAX_DRAIN_DEADLINE_MS: u64 = 7 * 24 * 3600 * 1000;

fn named_agent(id: &str) -> Result<String, Status> {
    if id.trim().is_empty() {
        return Err(ServerError::InvalidArgument("agent_id is empty".into()).into());
    }
    Ok(id.to_string())
}

impl AgentService {
    /// Commits an agent command that answers `Ok` or a rejection; wakes the
    /// drain driver and the dispatcher (a drain or its end changes both).
    /// Under an agent's token, refuses a call on `agent` unless the agent
    /// registered under that same token (PERMISSION_DENIED). Every other
    /// grant passes: an admin's token, and an agent certificate under
    /// `--auth none`, which owns no agent. The check reads the leader's
    /// state as of now, not a follower's.
    async fn owned_by(&self, grant: Option<&Grant>, agent: &str, verb: &str) -> Result<(), Status> {
        let Some(g) = grant.filter(|g| g.role() == Role::Agent && g.token.is_some()) else {
            return Ok(());
        };
        self.node.linearizable().await?;
        let owned = {
            let applied = self.node.state.read();
            let owner = applied.state.access().agent_token(agent).cloned();
            owner.is_some() && owner == g.token
        };
        if owned {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "agent {agent:?} was not registered under this credential's token ({}): \
             an agent's token may {verb} only its own agents",
            g.token.as_deref().unwrap_or("none")
        )))
    }

    async fn admin_write(&self, cmd: Command) -> Result<u64, Status> {
        let (resp, index) = self.node.propose(cmd).await?;
        match resp {
            CoreResponse::Ok | CoreResponse::AgentDown { .. } => {}
            CoreResponse::Rejected(r) => return Err(ServerError::Rejected(r).into()),
            other => {
                return Err(ServerError::Internal(format!("unexpected response {other:?}")).into())
            }
        }
        if let Some(l) = self.node.leadership() {
            l.notify(Event::Work(Work::DrainChanged));
        }
        Ok(index)
    }

    /// The agent as the state has it now (after the write this node applied).
    fn agent_info(&self, agent: &str) -> Result<v1::AgentInfo, Status> {
        let view = self.node.leadership().map(|l| l.view()).unwrap_or_default();
        let applied = self.node.state.read();
        applied
            .state
            .agent(agent)
            .map(|a| agent_info(&applied.state, a, &view.connected, &view.warm))
            .ok_or_else(|| {
                ServerError::Rejected(tidal_core::command::Rejection::AgentNotFound(
                    agent.to_string(),
                ))
                .into()
            })
    }
}

/// An agent's wire form with what the leader knows of it beyond the state:
/// whether it is connected and the models it reported warm (leader memory,
/// empty on other nodes), and the GPU devices its tasks hold (version 5).
fn agent_info(
    state: &State,
    a: &tidal_core::model::Agent,
    connected: &BTreeSet<String>,
    warm: &BTreeMap<String, BTreeSet<String>>,
) -> v1::AgentInfo {
    let mut info = convert::agent_to(a, connected.contains(&a.spec.id));
    info.warm_models = warm
        .get(&a.spec.id)
        .map(|m| m.iter().cloned().collect())
        .unwrap_or_default();
    info.gpus_busy = state
        .placement()
        .busy(&a.spec.id)
        .map(|b| b.keys().map(|i| u32::from(*i)).collect())
        .unwrap_or_default();
    info
}

#[allow(clippy::too_many_arguments)]
async fn serve_session(
    node: Arc<Node>,
    leadership: Arc<Leadership>,
    agent_id: String,
    generation: u64,
    mut closed: watch::Receiver<Option<Closed>>,
    mut inbound: Streaming<v1::AgentMessage>,
    tx: Tx,
    fail: oneshot::Sender<Status>,
    // A warning about its warm models was logged already.
    mut warned: bool,
) {
    let mut alive = leadership.alive();
    // Completions go through one worker per session, in the order the agent
    // sent them, so the first of two for one attempt is the one proposed
    // first (and the only one accepted). Checkpoints wait beside them (the
    // latest per task) and are proposed before the completions that
    // arrived after them.
    let (completions, pending) = mpsc::unbounded_channel();
    let checkpoints = Checkpoints::default();
    tokio::spawn(complete_in_order(
        node.clone(),
        leadership.clone(),
        (agent_id.clone(), generation),
        pending,
        checkpoints.clone(),
        tx.clone(),
    ));
    let mut fail = Some(fail);
    loop {
        let next = tokio::select! {
            m = inbound.message() => m,
            _ = alive.wait_for(|a| !*a) => break,
            // Displaced, replaced or expired: this session takes nothing more.
            _ = closed.wait_for(Option::is_some) => break,
        };
        let failure = match next {
            Ok(Some(v1::AgentMessage { msg: Some(m) })) => Ok(m),
            Ok(Some(_)) => Err(Status::invalid_argument(
                "an agent message with none of register, heartbeat, started, completed or checkpoint set",
            )),
            Ok(None) => break,
            Err(status) => Err(status),
        };
        let m = match failure {
            Ok(m) => m,
            Err(status) => {
                if status.code() == tonic::Code::InvalidArgument {
                    tracing::warn!(agent_id = %agent_id, error = %status, "agent session ended: bad input");
                } else {
                    tracing::debug!(agent_id = %agent_id, error = %status, "session stream error");
                }
                if let Some(fail) = fail.take() {
                    let _ = fail.send(status);
                }
                break;
            }
        };
        match m {
            In::Heartbeat(hb) => {
                // Guarantee 6: a renewal counts only while a majority's
                // recent contact proves no other leader exists; otherwise
                // the heartbeat goes unanswered and the agent's own
                // deadline keeps running.
                // The driver looks at the lease as it renews (and acks on
                // the session).
                let warm_models =
                    warm_models(&agent_id, hb.warm_models, &node.config.limits, &mut warned);
                leadership.session_input(SessionInput::Heartbeat {
                    agent: agent_id.clone(),
                    generation,
                    seq: hb.seq,
                    warm_models,
                });
            }
            In::Started(s) => {
                let Ok(task) = s.task_id.parse::<TaskId>() else {
                    continue;
                };
                let (node, leadership) = (node.clone(), leadership.clone());
                let session = (agent_id.clone(), generation);
                // Batched with other agents' starts into one entry.
                tokio::spawn(async move {
                    // Only the session that holds the assignment may say it started.
                    match holds_all(&leadership, &session, vec![(task, s.token)]).await {
                        Some(held) if held.first() == Some(&true) => {}
                        Some(_) => {
                            tracing::info!(agent_id = %session.0, task_id = %task, token = s.token, "start refused: {}", never_held(task, s.token));
                            return;
                        }
                        None => return,
                    }
                    // A start resent after a reconnect for a task already
                    // RUNNING under this token: nothing to commit.
                    let running = matches!(
                        node.state.read().state.task(task).map(|t| &t.state),
                        Some(TaskState::Running { token, .. }) if *token == s.token
                    );
                    if running {
                        return;
                    }
                    match node.starts.call(vec![(task, s.token)]).await {
                        Ok((results, _)) => {
                            if let Some(Err(r)) = results.first() {
                                tracing::debug!(task_id = %task, reason = %r, "start refused");
                            }
                        }
                        Err(e) => {
                            tracing::debug!(task_id = %task, error = %e, "start not recorded")
                        }
                    }
                });
            }
            In::Completed(c) => {
                let _ = completions.send(Reported::Completed(c));
            }
            In::Register(_) => {
                tracing::warn!(agent_id = %agent_id, "ignoring a second Register on one session");
            }
            In::Checkpoint(c) => {
                if take_checkpoint(&node, &agent_id, &checkpoints, c, &tx) {
                    let _ = completions.send(Reported::Checkpoints);
                }
            }
        }
    }
    leadership.session_input(SessionInput::Closed {
        agent: agent_id.clone(),
        generation,
    });
    tracing::info!(agent_id = %agent_id, generation, "agent session ended");
}

/// Keeps a checkpoint the agent reported for proposing (the latest of its
/// task wins); true if the session's reporter must be woken for it. Only
/// from cluster format version 4; one that is too large, or of a task the
/// state does not have, is logged and refused (answered, not accepted).
/// Fencing is the entry's (only the attempt's own token records one) and
/// the reporter's (only the session that holds the assignment).
fn take_checkpoint(
    node: &Node,
    agent_id: &str,
    checkpoints: &Mutex<Pending>,
    c: v1::TaskCheckpoint,
    tx: &Tx,
) -> bool {
    let refuse = |reason: String| {
        let _ = tx.send(checkpoint_ack(&c.task_id, c.token, c.seq, Err(reason)));
    };
    let known = {
        let applied = node.state.read();
        if applied.state.cluster_version() < LIFECYCLE_VERSION {
            tracing::debug!(agent_id, task_id = %c.task_id, token = c.token, "checkpoint dropped: the cluster is below format version {LIFECYCLE_VERSION}");
            refuse(format!(
                "checkpoints need cluster format version {LIFECYCLE_VERSION}"
            ));
            return false;
        }
        c.task_id
            .parse::<TaskId>()
            .ok()
            .filter(|t| applied.state.task(*t).is_some())
    };
    let Some(task) = known else {
        tracing::debug!(agent_id, task_id = %c.task_id, token = c.token, "checkpoint of an unknown task ignored");
        refuse(format!("task {:?} not found", c.task_id));
        return false;
    };
    if c.data.len() > MAX_CHECKPOINT_BYTES {
        tracing::warn!(agent_id, task_id = %task, token = c.token, bytes = c.data.len(), max_bytes = MAX_CHECKPOINT_BYTES, "checkpoint dropped: larger than a checkpoint may be");
        refuse(format!(
            "checkpoint of {} bytes is over {MAX_CHECKPOINT_BYTES}",
            c.data.len()
        ));
        return false;
    }
    let put = checkpoints
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .put(task, c.token, c.seq, c.data);
    match put {
        Put::First => true,
        Put::Kept => false,
        Put::Full => {
            // Not answered: the agent sends it again.
            tracing::warn!(agent_id, task_id = %task, token = c.token, "checkpoint dropped: the session's checkpoints waiting for their entry are at their bound");
            false
        }
    }
}

/// The answer to a checkpoint: committed (`Ok`), or refused for good.
fn checkpoint_ack(task_id: &str, token: u64, seq: u64, r: Result<(), String>) -> ToAgent {
    ToAgent::CheckpointAck {
        task_id: task_id.to_string(),
        token,
        seq,
        accepted: r.is_ok(),
        reason: r.err().unwrap_or_default(),
    }
}

/// A session's completions, proposed in the order they arrived: whatever
/// accumulated while one entry commits goes into the next, up to about half
/// an entry. The checkpoints waiting go first (a worker's last checkpoint
/// arrives before its completion, and a retry starts from it).
async fn complete_in_order(
    node: Arc<Node>,
    leadership: Arc<Leadership>,
    session: (String, u64),
    mut pending: mpsc::UnboundedReceiver<Reported>,
    checkpoints: Checkpoints,
    tx: Tx,
) {
    while let Some(first) = pending.recv().await {
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(r) = next.take() {
            if let Reported::Completed(c) = r {
                bytes += c.result.len() + c.error.len() + 48;
                batch.push(c);
            }
            if bytes >= MAX_ENTRY_BYTES / 2 {
                break;
            }
            next = pending.try_recv().ok();
        }
        propose_checkpoints(&node, &leadership, &session, &checkpoints, &tx).await;
        // A draining agent's stop reports go to the engine, which answers
        // them on the session (only the session that holds a task may report
        // it stopped); the runs of completions between them keep their place
        // in the order.
        let mut run = Vec::new();
        for c in batch {
            if c.stopped {
                if !run.is_empty() {
                    complete(&node, &leadership, &session, std::mem::take(&mut run), &tx).await;
                }
                leadership.session_input(SessionInput::StopReported {
                    agent: session.0.clone(),
                    generation: session.1,
                    task_id: c.task_id,
                    token: c.token,
                });
            } else {
                run.push(c);
            }
        }
        if !run.is_empty() {
            complete(&node, &leadership, &session, run, &tx).await;
        }
    }
}

/// Proposes the session's checkpoints waiting (in entries with other
/// sessions'), those of the assignments it holds, and answers each that
/// was committed or refused. One that could not be committed (the
/// leadership ended, the entry failed) is not answered: the agent sends it
/// again.
async fn propose_checkpoints(
    node: &Node,
    leadership: &Leadership,
    session: &(String, u64),
    checkpoints: &Mutex<Pending>,
    tx: &Tx,
) {
    let items = checkpoints.lock().unwrap_or_else(|e| e.into_inner()).take();
    if items.is_empty() {
        return;
    }
    let runs = items.iter().map(|(t, k, _, _)| (*t, *k)).collect();
    let Some(held) = holds_all(leadership, session, runs).await else {
        return;
    };
    let mut chunk = Vec::new();
    let mut seqs = Vec::new();
    let mut bytes = 0;
    let mut chunks = Vec::new();
    for ((task, token, seq, data), held) in items.into_iter().zip(held) {
        if !held {
            tracing::info!(agent_id = %session.0, task_id = %task, token, "checkpoint refused: {}", never_held(task, token));
            let _ = tx.send(checkpoint_ack(
                &task.to_string(),
                token,
                seq,
                Err(never_held(task, token)),
            ));
            continue;
        }
        if bytes + data.len() > MAX_ENTRY_BYTES / 2 && !chunk.is_empty() {
            chunks.push((std::mem::take(&mut chunk), std::mem::take(&mut seqs)));
            bytes = 0;
        }
        bytes += data.len();
        chunk.push((task, token, data));
        seqs.push(seq);
    }
    if !chunk.is_empty() {
        chunks.push((chunk, seqs));
    }
    // Each a request of at most about half an entry (the batcher never
    // splits one).
    for (chunk, seqs) in chunks {
        let tasks: Vec<(TaskId, FencingToken)> = chunk.iter().map(|(t, k, _)| (*t, *k)).collect();
        match node.checkpoints.call(chunk).await {
            Ok((results, _)) => {
                for (((task, token), seq), r) in tasks.into_iter().zip(seqs).zip(results) {
                    if let Err(r) = &r {
                        tracing::debug!(task_id = %task, token, reason = %r, "checkpoint refused");
                    }
                    let r = r.map_err(|r| r.to_string());
                    let _ = tx.send(checkpoint_ack(&task.to_string(), token, seq, r));
                }
            }
            Err(e) => {
                tracing::debug!(checkpoints = tasks.len(), error = %e, "checkpoints not committed (not answered: the agent sends them again)")
            }
        }
    }
}

fn completion_ack(c: &v1::TaskCompleted, accepted: bool, reason: String) -> ToAgent {
    ToAgent::CompletionAck {
        task_id: c.task_id.clone(),
        token: c.token,
        accepted,
        reason,
    }
}

/// Whether this agent process's session under `agent` was displaced by
/// another process (the leadership's driver knows).
async fn was_displaced(
    node: &Node,
    leadership: &Leadership,
    agent: &str,
    instance: &str,
) -> Result<bool, Status> {
    let (reply, answer) = oneshot::channel();
    leadership.session_input(SessionInput::WasDisplaced {
        agent: agent.to_string(),
        instance: instance.to_string(),
        reply,
    });
    answer.await.map_err(|_| Status::from(node.not_leader()))
}

/// Which of `items` the agent's session holds (`SessionInput::HoldsAll`),
/// in order; `None` if the leadership ended before it answered.
async fn holds_all(
    leadership: &Leadership,
    session: &(String, u64),
    items: Vec<(TaskId, FencingToken)>,
) -> Option<Vec<bool>> {
    let (reply, answer) = oneshot::channel();
    leadership.session_input(SessionInput::HoldsAll {
        agent: session.0.clone(),
        generation: session.1,
        items,
        reply,
    });
    answer.await.ok()
}

/// Why a report about an assignment the session does not hold is refused.
fn never_held(task: TaskId, token: FencingToken) -> String {
    format!("this session never held task {task} under token {token}")
}

/// Proposes the completions of a run (in one batch with other sessions'),
/// and acknowledges each on the session. Only the assignments the session
/// holds are proposed: a report of another is refused here, whatever its
/// token, and not proposed.
async fn complete(
    node: &Node,
    leadership: &Leadership,
    session: &(String, u64),
    batch: Vec<v1::TaskCompleted>,
    tx: &Tx,
) {
    let mut parsed = Vec::with_capacity(batch.len());
    for c in batch {
        match c.task_id.parse::<TaskId>() {
            Ok(task) => parsed.push((task, c)),
            Err(_) => {
                let _ = tx.send(completion_ack(
                    &c,
                    false,
                    format!("invalid task id {:?}", c.task_id),
                ));
            }
        }
    }
    if parsed.is_empty() {
        return;
    }
    let items = parsed.iter().map(|(t, c)| (*t, c.token)).collect();
    // Not answered: the leadership ended, and the agent resends on its
    // next session.
    let Some(held) = holds_all(leadership, session, items).await else {
        return;
    };
    // From cluster format version 4 a completion says whether the attempt
    // timed out, and a failed one may be retried (still accepted).
    let finished = node.state.read().state.cluster_version() >= LIFECYCLE_VERSION;
    let mut proposed = Vec::with_capacity(parsed.len());
    let mut completions = Vec::with_capacity(parsed.len());
    for ((task, c), held) in parsed.into_iter().zip(held) {
        if !held {
            tracing::info!(agent_id = %session.0, task_id = %task, token = c.token, "completion refused: {}", never_held(task, c.token));
            let _ = tx.send(completion_ack(&c, false, never_held(task, c.token)));
            continue;
        }
        let mut result = c.result.clone();
        result.truncate(node.config.limits.max_result_bytes);
        let outcome = Outcome {
            success: c.success,
            result,
            error: c.error.clone(),
            exit_code: c.exit_code,
        };
        completions.push(if finished {
            Report::Finished(Finished {
                task,
                token: c.token,
                outcome,
                timed_out: c.timed_out,
            })
        } else {
            Report::Complete(Completion {
                task,
                token: c.token,
                outcome,
            })
        });
        proposed.push(c);
    }
    if completions.is_empty() {
        return;
    }
    match node.completions.call(completions).await {
        Ok((results, _)) => {
            let mut results = results.into_iter();
            for c in &proposed {
                let reply = match results.next() {
                    Some(Ok(())) => completion_ack(c, true, String::new()),
                    Some(Err(r)) => completion_ack(c, false, r.to_string()),
                    None => completion_ack(c, false, "no result".into()),
                };
                let _ = tx.send(reply);
            }
            leadership.notify(Event::Work(Work::Freed));
        }
        // Not committed here: no ack, so the agent resends on its next session.
        Err(e) => {
            tracing::debug!(completions = proposed.len(), error = %e, "completions not committed")
        }
    }
}

#[cfg(test)]
#[path = "agent_service_test.rs"]
mod tests;
