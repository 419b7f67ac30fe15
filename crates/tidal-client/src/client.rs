//! `Client`: one cached channel per endpoint, leader discovery, retries.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tidal_proto::v1::{
    self, agents_client::AgentsClient, cluster_client::ClusterClient, dcs_client::DcsClient,
    queues_client::QueuesClient, tasks_client::TasksClient, tenants_client::TenantsClient,
    tokens_client::TokensClient,
};
use tidal_tls::rustls::ClientConfig;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::codegen::tokio_stream::{self, Stream, StreamExt};
use tonic::codegen::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::endpoint;
use crate::idempotency::auto_key;
use crate::retry::{self, Backoff, Repeat, Verdict};
use crate::token::{Bearer, Token};
use crate::Error;

/// A channel whose requests carry the client's token, if it has one.
type Chan = InterceptedService<Channel, Bearer>;

/// Largest answer the client decodes (a page of tasks with their results).
const MAX_DECODE_BYTES: usize = 64 * 1024 * 1024;
/// Immediate redirects followed before backing off (guards against a loop of
/// nodes that each name another as leader).
const MAX_REDIRECTS: u32 = 3;
/// How long to wait before asking again a node that named a leader this call
/// could not reach (it names the new leader once its election settles).
const STALE_LEADER_PAUSE: Duration = Duration::from_millis(20);
/// How long an endpoint that could not be reached is passed over: longer
/// than the others take to elect a new leader after a leader died, short
/// enough that a node that restarts is tried again soon.
const UNREACHABLE_FOR: Duration = Duration::from_millis(500);

/// Default per-endpoint connect timeout: a server in the same DC answers a
/// connect in well under a millisecond; a dead or cut-off one never does.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
/// Default keepalive: a silent server is noticed within about 500 ms, one
/// election timeout and a little more, so an agent moves to the new leader
/// long before any lease runs out.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_millis(200);
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_millis(300);

/// Endpoints that one call could not reach, and when.
#[derive(Default)]
struct Unreachable(Vec<(String, Instant)>);

impl Unreachable {
    fn mark(&mut self, addr: &str) {
        self.0.retain(|(a, _)| a != addr);
        self.0.push((addr.to_string(), Instant::now()));
    }

    /// Whether `addr` failed within the last [`UNREACHABLE_FOR`].
    fn recently(&self, addr: &str) -> bool {
        self.0
            .iter()
            .any(|(a, at)| a == addr && at.elapsed() < UNREACHABLE_FOR)
    }
}

/// Timeouts and the retry budget.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Limit for one attempt of a unary request (and for opening a session).
    pub request_timeout: Duration,
    /// Total time spent retrying one call across endpoints before giving up.
    pub retry_for: Duration,
    /// Limit for establishing one TCP/HTTP2 connection, per endpoint.
    pub connect_timeout: Duration,
    /// An HTTP/2 ping goes out after this long without a frame from the
    /// server (also on idle connections and open agent sessions)...
    pub keepalive_interval: Duration,
    /// ...and a connection whose ping is not answered within this is
    /// closed, failing what runs on it: a silent peer (dropped packets, a
    /// paused or dead machine) is noticed within interval + timeout.
    pub keepalive_timeout: Duration,
    /// Local IP that connections leave from (None: the OS chooses).
    pub source_ip: Option<std::net::IpAddr>,
    /// Mutual TLS on every connection (None: plaintext). Built by
    /// `tidal_tls::client_config` from a TLS directory, with the servers
    /// it accepts: `Expect::AnyServer` for users, `Expect::Dc(dc)` for an
    /// agent. An `https://` endpoint requires it.
    pub tls: Option<Arc<ClientConfig>>,
    /// Sent as `authorization: Bearer <token>` on every request (None:
    /// no header). A server that refuses it answers UNAUTHENTICATED or
    /// PERMISSION_DENIED, which are final.
    pub token: Option<Token>,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            request_timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(15),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            source_ip: None,
            tls: None,
            token: None,
        }
    }
}

/// A typed client of one DC's servers. Cloning is cheap and clones share the
/// channels and what they learned about the leader.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    opts: ClientOptions,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The configured endpoints, then addresses learned from redirects.
    known: Vec<String>,
    leader: Option<String>,
    channels: HashMap<String, Channel>,
    /// Addresses probed for TLS, and why they refuse this client's TLS
    /// (or plaintext), if they do ([`Client::tls_mismatch`]).
    probed: HashMap<String, Option<String>>,
}

/// An open agent session (`Agents/Session`) with the leader.
pub struct Session {
    /// What the server sends: `Registered` first, then assignments, acks, cancels.
    pub inbound: tonic::Streaming<v1::ServerMessage>,
    /// The endpoint (`HOST:PORT`) that accepted the session.
    pub endpoint: String,
    /// When the successful attempt started, before its first message could
    /// have been sent: a lower bound of when the server received it.
    pub opened_at: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("endpoint", &self.endpoint)
            .field("opened_at", &self.opened_at)
            .finish()
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.state();
        f.debug_struct("Client")
            .field("endpoints", &st.known)
            .field("leader", &st.leader)
            .finish()
    }
}

impl Client {
    /// A client of these endpoints (`HOST:PORT` each) with default options.
    /// Nothing is connected until the first request.
    pub fn new<S: AsRef<str>>(endpoints: Vec<S>) -> Result<Client, Error> {
        Client::with_options(endpoints, ClientOptions::default())
    }

    /// A client with explicit timeouts, retry budget and TLS. An
    /// `https://` endpoint without `opts.tls` is an error.
    pub fn with_options<S: AsRef<str>>(
        endpoints: Vec<S>,
        opts: ClientOptions,
    ) -> Result<Client, Error> {
        let known = endpoint::normalize_all(&endpoints)?;
        if opts.tls.is_none() {
            if let Some(e) = endpoints.iter().find(|e| endpoint::wants_tls(e.as_ref())) {
                return Err(Error::invalid_argument(format!(
                    "endpoint {:?} asks for TLS (https://), but no TLS directory is configured \
                     (--tls-dir DIR or TIDAL_TLS_DIR, with ca.pem, cert.pem and key.pem)",
                    e.as_ref().trim()
                )));
            }
        }
        Ok(Client {
            inner: Arc::new(Inner {
                opts,
                state: Mutex::new(State {
                    known,
                    ..State::default()
                }),
            }),
        })
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    /// The configured endpoints, then those learned from redirects.
    pub fn endpoints(&self) -> Vec<String> {
        self.state().known.clone()
    }

    /// The last known leader's address, if any.
    pub fn leader(&self) -> Option<String> {
        self.state().leader.clone()
    }

    /// Learns the leader from a status received outside this client's calls
    /// (e.g. a session that ended with `Unavailable` and a leader address).
    /// True if the status named a leader.
    pub fn observe(&self, status: &Status) -> bool {
        match retry::leader_hint(status) {
            Some(addr) => {
                self.set_leader(&addr);
                true
            }
            None => false,
        }
    }

    // ------------------------------------------------------------ tasks

    /// Submits a batch. Specs without an idempotency key get a random one
    /// (`auto-<hex>`), which is what makes retrying a submit safe.
    pub async fn submit(
        &self,
        mut specs: Vec<v1::TaskSpec>,
    ) -> Result<Vec<v1::SubmitResult>, Error> {
        for s in &mut specs {
            if s.idempotency_key.is_empty() {
                s.idempotency_key = auto_key();
            }
        }
        let req = v1::SubmitRequest { tasks: specs };
        let resp = self
            .call(true, |ch| {
                let req = req.clone();
                async move {
                    Ok(TasksClient::new(ch)
                        .max_decoding_message_size(MAX_DECODE_BYTES)
                        .submit(req)
                        .await?
                        .into_inner())
                }
            })
            .await?;
        Ok(resp.results)
    }

    /// Submits one task; a rejection of the item is returned as `Err` with
    /// its code and message.
    pub async fn submit_one(&self, spec: v1::TaskSpec) -> Result<v1::SubmitResult, Error> {
        let mut results = self.submit(vec![spec]).await?;
        if results.len() != 1 {
            return Err(Error::new(
                Code::Internal,
                format!("expected 1 submit result, got {}", results.len()),
            ));
        }
        let r = results.remove(0);
        match &r.error {
            Some(e) if e.code != Code::Ok as i32 => Err(Error::from_item(e)),
            _ => Ok(r),
        }
    }

    /// Reads one task (linearizable unless `stale`).
    pub async fn get_task(&self, id: &str, stale: bool) -> Result<v1::Task, Error> {
        let req = v1::GetTaskRequest {
            id: id.to_string(),
            stale,
        };
        self.call(!stale, |ch| {
            let req = req.clone();
            async move {
                Ok(TasksClient::new(ch)
                    .max_decoding_message_size(MAX_DECODE_BYTES)
                    .get(req)
                    .await?
                    .into_inner())
            }
        })
        .await
    }

    /// Why a pending task is not placed (`Tasks/Explain`, cluster format
    /// version 5); linearizable unless `stale`, which leaves the leader's
    /// memory out.
    pub async fn explain_task(&self, id: &str, stale: bool) -> Result<v1::TaskExplanation, Error> {
        let req = v1::ExplainRequest {
            id: id.to_string(),
            stale,
        };
        self.call(!stale, |ch| {
            let req = req.clone();
            async move { Ok(TasksClient::new(ch).explain(req).await?.into_inner()) }
        })
        .await
    }

    /// Lists tasks (one page; follow `next_after_id` for more).
    pub async fn list_tasks(
        &self,
        req: v1::ListTasksRequest,
    ) -> Result<v1::ListTasksResponse, Error> {
        self.call(!req.stale, |ch| {
            let req = req.clone();
            async move {
                Ok(TasksClient::new(ch)
                    .max_decoding_message_size(MAX_DECODE_BYTES)
                    .list(req)
                    .await?
                    .into_inner())
            }
        })
        .await
    }

    /// Every task that matches `req`, following `next_after_id` page by page
    /// (`req.limit` is the page size; `req.after_id` where to start).
    pub async fn list_all_tasks(
        &self,
        mut req: v1::ListTasksRequest,
    ) -> Result<Vec<v1::Task>, Error> {
        let mut out = Vec::new();
        loop {
            let page = self.list_tasks(req.clone()).await?;
            out.extend(page.tasks);
            if page.next_after_id.is_empty() {
                return Ok(out);
            }
            req.after_id = page.next_after_id;
        }
    }

    /// Cancels a task that has not finished.
    pub async fn cancel_task(&self, id: &str) -> Result<v1::Task, Error> {
        let req = v1::CancelTaskRequest { id: id.to_string() };
        self.call_once(|ch| {
            let req = req.clone();
            async move {
                Ok(TasksClient::new(ch)
                    .max_decoding_message_size(MAX_DECODE_BYTES)
                    .cancel(req)
                    .await?
                    .into_inner())
            }
        })
        .await
    }

    /// Replays dead letters: the tasks `ids`, or (`ids` empty) the dead
    /// letters of `queue` that finished at or after `since_ms`, at most
    /// 1000 per call (`ReplayResponse.more` says whether more matched).
    /// One result per task; not idempotent (a replayed task is no longer
    /// dead).
    pub async fn replay(&self, req: v1::ReplayRequest) -> Result<v1::ReplayResponse, Error> {
        self.call_once(|ch| {
            let req = req.clone();
            async move { Ok(TasksClient::new(ch).replay(req).await?.into_inner()) }
        })
        .await
    }

    /// Replays the tasks `ids` (see [`Client::replay`]).
    pub async fn replay_tasks(&self, ids: Vec<String>) -> Result<Vec<v1::SubmitResult>, Error> {
        let req = v1::ReplayRequest {
            ids,
            ..Default::default()
        };
        Ok(self.replay(req).await?.results)
    }

    /// Replays the dead letters of `queue` that finished at or after
    /// `since_ms` (0: any), following `more` until none is left.
    pub async fn replay_dead(
        &self,
        queue: &str,
        since_ms: u64,
    ) -> Result<Vec<v1::SubmitResult>, Error> {
        let req = v1::ReplayRequest {
            dead: true,
            queue: queue.to_string(),
            since_ms,
            ..Default::default()
        };
        let mut out = Vec::new();
        loop {
            let resp = self.replay(req.clone()).await?;
            // A call that replayed nothing would return the same tasks again.
            let progressed = resp.results.iter().any(|r| r.error.is_none());
            out.extend(resp.results);
            if !resp.more || !progressed {
                return Ok(out);
            }
        }
    }

    /// The dead letters (failed with their attempts used up), optionally of
    /// one queue, every page.
    pub async fn list_dead(&self, queue: &str) -> Result<Vec<v1::Task>, Error> {
        self.list_all_tasks(v1::ListTasksRequest {
            queue: queue.to_string(),
            dead: true,
            ..Default::default()
        })
        .await
    }

    // ------------------------------------------------------------ agents

    /// Lists agents (linearizable unless `stale`).
    pub async fn list_agents(&self, stale: bool) -> Result<Vec<v1::AgentInfo>, Error> {
        let req = v1::ListAgentsRequest { stale };
        let resp = self
            .call(!stale, |ch| async move {
                Ok(AgentsClient::new(ch)
                    .max_decoding_message_size(MAX_DECODE_BYTES)
                    .list(req)
                    .await?
                    .into_inner())
            })
            .await?;
        Ok(resp.agents)
    }

    /// Drains an agent: nothing new is placed on it; at `deadline_ms` from
    /// now (if given) its tasks are stopped and requeued.
    pub async fn drain_agent(
        &self,
        id: &str,
        deadline_ms: Option<u64>,
    ) -> Result<v1::AgentInfo, Error> {
        let req = v1::DrainAgentRequest {
            agent_id: id.to_string(),
            deadline_ms,
        };
        self.call(true, |ch| {
            let req = req.clone();
            async move { Ok(AgentsClient::new(ch).drain(req).await?.into_inner()) }
        })
        .await
    }

    /// Ends an agent's drain.
    pub async fn undrain_agent(&self, id: &str) -> Result<v1::AgentInfo, Error> {
        let req = v1::UndrainAgentRequest {
            agent_id: id.to_string(),
        };
        self.call(true, |ch| {
            let req = req.clone();
            async move { Ok(AgentsClient::new(ch).undrain(req).await?.into_inner()) }
        })
        .await
    }

    /// Removes an agent that holds no task.
    pub async fn deregister_agent(&self, id: &str) -> Result<v1::DeregisterAgentResponse, Error> {
        let req = v1::DeregisterAgentRequest {
            agent_id: id.to_string(),
        };
        self.call_once(|ch| {
            let req = req.clone();
            async move { Ok(AgentsClient::new(ch).deregister(req).await?.into_inner()) }
        })
        .await
    }

    /// Opens an agent session with the leader: `first` (the `Register`) is
    /// sent first, then whatever arrives on `rest` until its senders are
    /// dropped. Retried across endpoints like any call; messages are taken
    /// from `rest` only by the attempt that is current, so send on it only
    /// after this returns.
    pub async fn open_session(
        &self,
        first: v1::AgentMessage,
        rest: mpsc::Receiver<v1::AgentMessage>,
    ) -> Result<Session, Error> {
        let shared = Arc::new(Mutex::new(SharedRx {
            rx: rest,
            generation: 0,
        }));
        let ((inbound, opened_at), endpoint) = self
            .call_at(true, Repeat::Safe, |ch| {
                let generation = {
                    let mut g = lock(&shared);
                    g.generation += 1;
                    g.generation
                };
                let outbound = tokio_stream::once(first.clone()).chain(AttemptStream {
                    shared: shared.clone(),
                    generation,
                });
                async move {
                    let opened_at = Instant::now();
                    let resp = AgentsClient::new(ch)
                        .max_decoding_message_size(MAX_DECODE_BYTES)
                        .session(outbound)
                        .await?;
                    Ok((resp.into_inner(), opened_at))
                }
            })
            .await?;
        Ok(Session {
            inbound,
            endpoint,
            opened_at,
        })
    }

    // ------------------------------------------------------------ queues

    /// Creates or updates a queue.
    pub async fn set_queue(
        &self,
        name: &str,
        weight: u32,
        strategy: &str,
    ) -> Result<v1::Queue, Error> {
        let req = v1::SetQueueRequest {
            name: name.to_string(),
            weight,
            strategy: strategy.to_string(),
            spread_key: String::new(),
        };
        self.call(true, |ch| {
            let req = req.clone();
            async move { Ok(QueuesClient::new(ch).set(req).await?.into_inner()) }
        })
        .await
    }

    /// Creates or updates a queue with every field of the request (the
    /// spread key of strategy "spread", say).
    pub async fn set_queue_with(&self, req: v1::SetQueueRequest) -> Result<v1::Queue, Error> {
        self.call(true, |ch| {
            let req = req.clone();
            async move { Ok(QueuesClient::new(ch).set(req).await?.into_inner()) }
        })
        .await
    }

    /// Lists queues.
    pub async fn list_queues(&self) -> Result<Vec<v1::Queue>, Error> {
        Ok(self.list_queues_full().await?.queues)
    }

    /// Lists queues, with the headroom set per class.
    pub async fn list_queues_full(&self) -> Result<v1::ListQueuesResponse, Error> {
        self.call(true, |ch| async move {
            Ok(QueuesClient::new(ch)
                .list(v1::ListQueuesRequest {})
                .await?
                .into_inner())
        })
        .await
    }

    /// Admin: sets the capacity kept free for `class` and the classes above
    /// it (0 and 0 remove it); returns every headroom set.
    pub async fn set_headroom(
        &self,
        class: v1::Priority,
        slots: u32,
        gpus: u32,
    ) -> Result<Vec<v1::Headroom>, Error> {
        let req = v1::SetHeadroomRequest {
            class: class as i32,
            slots,
            gpus,
        };
        let resp = self
            .call(true, |ch| async move {
                Ok(QueuesClient::new(ch).set_headroom(req).await?.into_inner())
            })
            .await?;
        Ok(resp.headroom)
    }

    // ------------------------------------------------------------ tokens

    /// Creates a token; the answer holds its secret, shown this once. Not
    /// idempotent: a retry after a lost answer may create a second token.
    pub async fn create_token(
        &self,
        req: v1::CreateTokenRequest,
    ) -> Result<v1::CreateTokenResponse, Error> {
        self.call(true, |ch| {
            let req = req.clone();
            async move { Ok(TokensClient::new(ch).create(req).await?.into_inner()) }
        })
        .await
    }

    /// Every token ever created, by id (never a secret).
    pub async fn list_tokens(&self) -> Result<Vec<v1::TokenInfo>, Error> {
        let resp = self
            .call(true, |ch| async move {
                Ok(TokensClient::new(ch)
                    .list(v1::ListTokensRequest {})
                    .await?
                    .into_inner())
            })
            .await?;
        Ok(resp.tokens)
    }

    /// Revokes token `id` (idempotent).
    pub async fn revoke_token(&self, id: &str) -> Result<v1::TokenInfo, Error> {
        let req = v1::RevokeTokenRequest { id: id.to_string() };
        self.call(true, |ch| {
            let req = req.clone();
            async move { Ok(TokensClient::new(ch).revoke(req).await?.into_inner()) }
        })
        .await
    }

    // ------------------------------------------------------------ tenants

    /// Sets a tenant's limits (all of them: a limit left out is no limit).
    pub async fn set_tenant(
        &self,
        name: &str,
        limits: v1::TenantLimits,
    ) -> Result<v1::Tenant, Error> {
        let req = v1::SetTenantRequest {
            name: name.to_string(),
            limits: Some(limits),
        };
        self.call(true, |ch| {
            let req = req.clone();
            async move { Ok(TenantsClient::new(ch).set(req).await?.into_inner()) }
        })
        .await
    }

    /// Lists tenants with limits or usage, with their usage.
    pub async fn list_tenants(&self) -> Result<Vec<v1::Tenant>, Error> {
        let resp = self
            .call(true, |ch| async move {
                Ok(TenantsClient::new(ch)
                    .list(v1::ListTenantsRequest {})
                    .await?
                    .into_inner())
            })
            .await?;
        Ok(resp.tenants)
    }

    // ------------------------------------------------------------ cluster

    /// Adds a node as a learner; the other servers reach it at `addr`.
    pub async fn add_learner(&self, id: u64, addr: &str) -> Result<v1::MembersResponse, Error> {
        self.add_learner_with_peer(id, addr, None).await
    }

    /// Adds a node as a learner that clients reach at `addr` and the other
    /// servers at `peer_addr` (its `--peer-advertise`; `None`: `addr`).
    pub async fn add_learner_with_peer(
        &self,
        id: u64,
        addr: &str,
        peer_addr: Option<&str>,
    ) -> Result<v1::MembersResponse, Error> {
        let req = v1::AddLearnerRequest {
            id,
            addr: addr.to_string(),
            peer_addr: peer_addr.unwrap_or_default().to_string(),
        };
        self.call(true, |ch| {
            let req = req.clone();
            async move { Ok(ClusterClient::new(ch).add_learner(req).await?.into_inner()) }
        })
        .await
    }

    /// Promotes a learner to voter.
    pub async fn promote(&self, id: u64) -> Result<v1::MembersResponse, Error> {
        let req = v1::PromoteRequest { id };
        self.call(true, |ch| async move {
            Ok(ClusterClient::new(ch).promote(req).await?.into_inner())
        })
        .await
    }

    /// Hands leadership to voter `id`.
    pub async fn transfer_leader(&self, id: u64) -> Result<v1::MembersResponse, Error> {
        let req = v1::TransferLeaderRequest { id };
        let r = self
            .call(true, |ch| async move {
                Ok(ClusterClient::new(ch)
                    .transfer_leader(req)
                    .await?
                    .into_inner())
            })
            .await?;
        // The old leader answered; the next call goes to the new one.
        if let Some(m) = r.members.iter().find(|m| m.id == id) {
            if let Ok(addr) = endpoint::normalize(&m.addr) {
                self.set_leader(&addr);
            }
        }
        Ok(r)
    }

    /// Makes a voter a learner; `force` skips the server's safety checks.
    pub async fn demote(&self, id: u64, force: bool) -> Result<v1::MembersResponse, Error> {
        let req = v1::ChangeRequest { id, force };
        self.call(true, |ch| async move {
            Ok(ClusterClient::new(ch).demote(req).await?.into_inner())
        })
        .await
    }

    /// Removes a member; `force` skips the server's safety checks.
    pub async fn remove(&self, id: u64, force: bool) -> Result<v1::MembersResponse, Error> {
        let req = v1::ChangeRequest { id, force };
        self.call(true, |ch| async move {
            Ok(ClusterClient::new(ch).remove(req).await?.into_inner())
        })
        .await
    }

    /// Takes a snapshot on the leader now.
    pub async fn snapshot(&self) -> Result<v1::SnapshotResponse, Error> {
        self.call(true, |ch| async move {
            Ok(ClusterClient::new(ch)
                .snapshot(v1::SnapshotRequest {})
                .await?
                .into_inner())
        })
        .await
    }

    /// A consistent backup of the leader's applied state: its bytes and the
    /// log index it was read at.
    pub async fn backup(&self) -> Result<(Vec<u8>, u64), Error> {
        self.call(true, |ch| async move {
            let mut stream = ClusterClient::new(ch)
                .max_decoding_message_size(MAX_DECODE_BYTES)
                .backup(v1::BackupRequest {})
                .await?
                .into_inner();
            let (mut data, mut index) = (Vec::new(), 0);
            while let Some(chunk) = stream.message().await? {
                data.extend_from_slice(&chunk.data);
                index = chunk.applied_index;
            }
            Ok((data, index))
        })
        .await
    }

    /// The cross-DC links as the leader sees them (`tidal dc status`).
    pub async fn dc_status(&self) -> Result<v1::DcStatusResponse, Error> {
        self.call(true, |ch| async move {
            Ok(DcsClient::new(ch)
                .status(v1::DcStatusRequest {})
                .await?
                .into_inner())
        })
        .await
    }

    /// The current membership.
    pub async fn members(&self) -> Result<v1::MembersResponse, Error> {
        self.call(true, |ch| async move {
            Ok(ClusterClient::new(ch)
                .members(v1::MembersRequest {})
                .await?
                .into_inner())
        })
        .await
    }

    /// The leader's status when a leader is known (following the address a
    /// follower names); otherwise the status of the first node that answers.
    pub async fn status(&self) -> Result<v1::StatusResponse, Error> {
        let (resp, at) = self
            .call_at(false, Repeat::Safe, |ch| async move {
                Ok(ClusterClient::new(ch)
                    .status(v1::StatusRequest { digest: false })
                    .await?
                    .into_inner())
            })
            .await?;
        if resp.role == "leader" {
            self.set_leader(&at);
            return Ok(resp);
        }
        match endpoint::normalize(&resp.leader_addr) {
            Ok(leader) if leader != at => match self.status_of(&leader).await {
                Ok(l) if l.role == "leader" => {
                    self.set_leader(&leader);
                    Ok(l)
                }
                _ => Ok(resp),
            },
            _ => Ok(resp),
        }
    }

    /// One node's own status: a single attempt, no redirect, no retry.
    /// Without its state digest (see [`Client::status_digest_of`]).
    pub async fn status_of(&self, endpoint: &str) -> Result<v1::StatusResponse, Error> {
        self.one_status(endpoint, false).await
    }

    /// One node's own status with its state digest, to compare replicas: the
    /// node hashes its whole state for it, which takes about half a second
    /// per million tasks and holds back its applying meanwhile.
    pub async fn status_digest_of(&self, endpoint: &str) -> Result<v1::StatusResponse, Error> {
        self.one_status(endpoint, true).await
    }

    async fn one_status(&self, endpoint: &str, digest: bool) -> Result<v1::StatusResponse, Error> {
        let addr = endpoint::normalize(endpoint)?;
        let ch = self.channel(&addr)?;
        let fut = async move {
            ClusterClient::new(ch)
                .status(v1::StatusRequest { digest })
                .await
        };
        match tokio::time::timeout(self.inner.opts.request_timeout, fut).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(match retry::tls_refusal(&s) {
                Some(why) => retry::refused(&addr, &why),
                None if retry::is_transport(&s) => match self.tls_mismatch(&addr, &s).await {
                    Some(e) => e,
                    None => Error::new(
                        Code::Unavailable,
                        format!("cannot reach {addr}: {}", s.message()),
                    ),
                },
                None => s.into(),
            }),
            Err(_) => Err(Error::new(
                Code::DeadlineExceeded,
                format!(
                    "no answer from {addr} within {:?}",
                    self.inner.opts.request_timeout
                ),
            )),
        }
    }

    // ------------------------------------------------------------ machinery

    async fn call<T, F, Fut>(&self, leader_only: bool, f: F) -> Result<T, Error>
    where
        F: FnMut(Chan) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        Ok(self.call_at(leader_only, Repeat::Safe, f).await?.0)
    }

    /// [`Client::call`] on the leader for a request that is not safe to
    /// repeat: sent again only after an attempt that certainly was not
    /// applied (see [`Repeat`]).
    async fn call_once<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        F: FnMut(Chan) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        Ok(self.call_at(true, Repeat::Once, f).await?.0)
    }

    /// Runs `f` against the leader (or any node when `!leader_only`), following
    /// redirects at once and retrying transient failures on the next endpoint
    /// with backoff, until `retry_for` has passed. Returns the answer and the
    /// endpoint that gave it. An endpoint that refuses TLS (or this client's
    /// plaintext) is passed over at once, for the rest of the call; the
    /// refusal is final when every endpoint refused, or when the leader
    /// named by a redirect is one that refused.
    async fn call_at<T, F, Fut>(
        &self,
        leader_only: bool,
        repeat: Repeat,
        mut f: F,
    ) -> Result<(T, String), Error>
    where
        F: FnMut(Chan) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let opts = &self.inner.opts;
        let start = Instant::now();
        let deadline = start + opts.retry_for;
        let mut backoff = Backoff::default();
        let mut tried: Vec<String> = Vec::new();
        let (mut target, mut cursor) = {
            let st = self.state();
            match &st.leader {
                Some(l) => (l.clone(), 0),
                None => (st.known[0].clone(), 1),
            }
        };
        let mut redirects = 0;
        // Endpoints this call could not reach at all (connection refused or
        // reset) in the last UNREACHABLE_FOR: a dead leader, until the
        // others notice, or a node restarting.
        let mut unreachable = Unreachable::default();
        // Endpoints that refused this client's TLS (or plaintext) in this
        // call, with their refusal, in the order met.
        let mut refused: Vec<(String, Error)> = Vec::new();
        loop {
            if !tried.contains(&target) {
                tried.push(target.clone());
            }
            let ch = self.channel(&target)?;
            // One attempt never outlives the call's own budget.
            let limit = opts
                .request_timeout
                .min(deadline.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(1));
            let answer = match tokio::time::timeout(limit, f(ch)).await {
                Ok(a) => a,
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "no answer from {target} within {limit:?}"
                ))),
            };
            let status = match answer {
                Ok(v) => {
                    if leader_only {
                        self.set_leader(&target);
                    }
                    return Ok((v, target));
                }
                Err(s) => s,
            };
            let refusal = match retry::classify_for(&status, repeat) {
                Verdict::Fail => return Err(status.into()),
                Verdict::Unknown => match self.tls_mismatch(&target, &status).await {
                    // Refused at TLS: the server never read the request.
                    Some(e) => Some(e),
                    None => {
                        self.forget_leader(&target);
                        return Err(retry::outcome_unknown(&target, &status));
                    }
                },
                Verdict::Refused(why) => Some(retry::refused(&target, &why)),
                Verdict::Redirect(addr) if refused.iter().any(|(a, _)| *a == addr) => {
                    // The leader is one that refused: no other node can serve.
                    return Err(all_refused(&refused, Some(&addr)));
                }
                Verdict::Redirect(addr) if unreachable.recently(&addr) => {
                    // This node names a leader this call could not reach: it
                    // has not noticed that the leader is gone. Ask it again
                    // shortly: once its leader has been quiet for a few Raft
                    // heartbeats it holds the request until the election
                    // settles, then names the new leader (or serves).
                    tracing::debug!(endpoint = %target, leader = %addr, "the named leader is unreachable; asking again");
                    if Instant::now() + STALE_LEADER_PAUSE > deadline {
                        return Err(give_up(&tried, &status, start.elapsed()));
                    }
                    tokio::time::sleep(STALE_LEADER_PAUSE).await;
                    continue;
                }
                Verdict::Redirect(addr) if addr != target && redirects < MAX_REDIRECTS => {
                    tracing::debug!(from = %target, to = %addr, "following the leader's address");
                    self.set_leader(&addr);
                    target = addr;
                    redirects += 1;
                    if Instant::now() >= deadline {
                        return Err(give_up(&tried, &status, start.elapsed()));
                    }
                    continue;
                }
                Verdict::Redirect(_) | Verdict::Retry => None,
            };
            let refusal = match refusal {
                Some(e) => Some(e),
                None => self.tls_mismatch(&target, &status).await,
            };
            if let Some(e) = refusal {
                tracing::debug!(endpoint = %target, error = %e.message, "endpoint refused TLS; trying the next");
                self.forget_leader(&target);
                self.drop_channel(&target);
                if !refused.iter().any(|(a, _)| *a == target) {
                    refused.push((target.clone(), e));
                }
                let next = {
                    let st = self.state();
                    let n = st.known.len();
                    (0..n)
                        .map(|i| (cursor + i) % n)
                        .find(|&i| !refused.iter().any(|(a, _)| *a == st.known[i]))
                        .map(|i| (i, st.known[i].clone()))
                };
                let Some((pick, addr)) = next else {
                    return Err(all_refused(&refused, None));
                };
                if Instant::now() >= deadline {
                    return Err(give_up(&tried, &status, start.elapsed()));
                }
                cursor = pick + 1;
                redirects = 0;
                target = addr;
                continue;
            }
            tracing::debug!(endpoint = %target, code = ?status.code(), error = %status.message(), "attempt failed");
            self.forget_leader(&target);
            if retry::is_transport(&status) || status.code() == Code::DeadlineExceeded {
                // A dead or silent connection is not reused: the next
                // attempt at this endpoint dials afresh.
                unreachable.mark(&target);
                self.drop_channel(&target);
            }
            let delay = backoff.next_delay();
            if Instant::now() + delay > deadline {
                return Err(give_up(&tried, &status, start.elapsed()));
            }
            tokio::time::sleep(delay).await;
            redirects = 0;
            target = {
                // The next endpoint, passing over those found unreachable
                // while another is left.
                let st = self.state();
                let n = st.known.len();
                let refused = |i: usize| refused.iter().any(|(a, _)| *a == st.known[i]);
                let pick = (0..n)
                    .map(|i| (cursor + i) % n)
                    .filter(|&i| !refused(i))
                    .find(|&i| !unreachable.recently(&st.known[i]))
                    .or_else(|| (0..n).map(|i| (cursor + i) % n).find(|&i| !refused(i)))
                    .unwrap_or(cursor % n);
                cursor = pick + 1;
                st.known[pick].clone()
            };
        }
    }

    /// Why `addr` refuses this client's TLS (or its plaintext), when a
    /// connection failed after it was made: a TLS server closes a
    /// plaintext client's connection or answers it with a TLS alert, and
    /// HTTP/2 may report a refused certificate as a closed connection. The first time that happens
    /// for an address, it is asked ([`crate::dial::speaks_tls`],
    /// [`crate::dial::tls_refusal`]); a refusal is final.
    async fn tls_mismatch(&self, addr: &str, status: &Status) -> Option<Error> {
        let opts = &self.inner.opts;
        if !retry::failed_after_connect(status) {
            return None;
        }
        let known = self.state().probed.get(addr).cloned();
        let why = match known {
            Some(why) => why,
            None => {
                let why = match &opts.tls {
                    None => crate::dial::speaks_tls(addr, opts.source_ip, opts.connect_timeout)
                        .await
                        .then(|| {
                            "the server speaks TLS and this client does not: give --tls-dir DIR \
                             (or TIDAL_TLS_DIR) with ca.pem, cert.pem and key.pem"
                                .to_string()
                        }),
                    Some(config) => crate::dial::tls_refusal(
                        addr,
                        opts.source_ip,
                        opts.connect_timeout,
                        config.clone(),
                    )
                    .await
                    .and_then(|e| retry::explain(&e)),
                };
                self.state().probed.insert(addr.to_string(), why.clone());
                why
            }
        };
        why.map(|why| retry::refused(addr, &why))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    fn set_leader(&self, addr: &str) {
        let mut st = self.state();
        if st.leader.as_deref() != Some(addr) {
            tracing::info!(leader = %addr, "leader changed");
        }
        if !st.known.iter().any(|k| k == addr) {
            st.known.push(addr.to_string());
        }
        st.leader = Some(addr.to_string());
    }

    fn forget_leader(&self, addr: &str) {
        let mut st = self.state();
        if st.leader.as_deref() == Some(addr) {
            st.leader = None;
        }
    }

    /// Forgets the cached channel of `addr` (its connection failed or went
    /// silent); the next use dials a new one.
    pub fn drop_channel(&self, addr: &str) {
        self.state().channels.remove(addr);
    }

    /// A long-lived call on `addr` (an agent session) failed or went silent:
    /// it is no longer taken for the leader, and its connection is not
    /// reused.
    pub fn lost(&self, addr: &str) {
        self.forget_leader(addr);
        self.drop_channel(addr);
    }

    /// The cached channel of `addr` (connected lazily on first use).
    fn channel(&self, addr: &str) -> Result<Chan, Error> {
        let bearer = Bearer(self.inner.opts.token.clone());
        let mut st = self.state();
        if let Some(ch) = st.channels.get(addr) {
            return Ok(InterceptedService::new(ch.clone(), bearer));
        }
        let ep = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Error::invalid_argument(format!("invalid endpoint {addr:?}: {e}")))?
            .http2_keep_alive_interval(self.inner.opts.keepalive_interval)
            .keep_alive_timeout(self.inner.opts.keepalive_timeout)
            .keep_alive_while_idle(true);
        let ch = crate::dial::connect_lazy(
            ep,
            self.inner.opts.source_ip,
            self.inner.opts.connect_timeout,
            self.inner.opts.tls.clone(),
        );
        st.channels.insert(addr.to_string(), ch.clone());
        Ok(InterceptedService::new(ch, bearer))
    }
}

/// The error of a call whose endpoints refused TLS (every one, or `leader`,
/// the one a redirect named): the first refusal, naming the others.
fn all_refused(refused: &[(String, Error)], leader: Option<&str>) -> Error {
    let first = leader
        .and_then(|l| refused.iter().find(|(a, _)| a == l))
        .or(refused.first())
        .map(|(_, e)| e.clone())
        .unwrap_or_else(|| Error::new(Code::Unauthenticated, crate::error::TLS_REFUSAL));
    let others: Vec<&str> = refused
        .iter()
        .filter(|(_, e)| e.message != first.message)
        .map(|(_, e)| e.message.as_str())
        .collect();
    if others.is_empty() {
        return first;
    }
    Error::new(
        first.code,
        format!("{} (also: {})", first.message, others.join("; ")),
    )
}

/// The error after the retry budget ran out: connection failures become
/// `Unavailable`, naming every endpoint tried.
fn give_up(tried: &[String], last: &Status, elapsed: Duration) -> Error {
    let code = if retry::is_transport(last) {
        Code::Unavailable
    } else {
        last.code()
    };
    Error::new(
        code,
        format!(
            "no leader answered after {:.1}s (tried {}): {}",
            elapsed.as_secs_f64(),
            tried.join(", "),
            last.message()
        ),
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The caller's receiver, shared by the attempts of one `open_session`.
struct SharedRx {
    rx: mpsc::Receiver<v1::AgentMessage>,
    generation: u64,
}

/// The outbound messages of one attempt: it ends as soon as a newer attempt
/// starts, so a failed attempt's stream can never take a message.
struct AttemptStream {
    shared: Arc<Mutex<SharedRx>>,
    generation: u64,
}

impl Stream for AttemptStream {
    type Item = v1::AgentMessage;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut g = lock(&self.shared);
        if g.generation != self.generation {
            return Poll::Ready(None);
        }
        g.rx.poll_recv(cx)
    }
}
