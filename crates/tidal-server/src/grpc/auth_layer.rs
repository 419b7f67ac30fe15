//! The tower layer in front of every service that applies [`crate::auth::policy`]: the peer plane's rules with `--peer-listen` or `--tls-dir`, and tokens on the public API with `--auth tokens`; a refused call is answered here, and the service never sees it.
//!
//! Peer plane: with TLS the caller's certificate decides
//! ([`policy::authorize_tls`]), else with a peer listener its listener and
//! IP ([`policy::authorize`]); a refusal is PERMISSION_DENIED, logged at
//! warn. Without TLS and without a peer listener these rules pass every call.
//!
//! Public API: under `--auth tokens` every call needs `authorization:
//! Bearer <token>` ([`policy::bearer`], [`policy::authenticate`],
//! [`policy::authorize_public`]), except the health service
//! ([`policy::tokenless`]); a missing, malformed, unknown, expired or
//! revoked token is UNAUTHENTICATED and a role that may not make the call
//! PERMISSION_DENIED, logged at info with the token's id (never its
//! secret). A token this node does not know is judged by the leader: a
//! follower answers NotLeader naming it, as for any leader-only call, so a
//! token created a moment ago works everywhere. A passed call carries the
//! [`Grant`] in its extensions. Under `--auth none` with TLS the grant comes
//! from the client certificate ([`policy::grant_of_cert`]); under `--auth
//! none` without TLS nothing is checked and no grant is inserted.
//!
//! Refusals are logged with the caller's address, the first one per (IP,
//! reason) and then a count every [`LOG_EVERY`].

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::{Either, Ready};
use tonic::body::BoxBody;
use tonic::codegen::{http, Service};
use tower_layer::Layer;

use super::conn::Caller;
use super::peer_names::{self, PeerNames};
use crate::auth::caller::canonical;
use crate::auth::grant::Grant;
use crate::auth::policy::{self, Denied, Member, Peers, Rpc, TlsPeers, TokenDenied, TokenView};
use crate::auth::token::Token;
use crate::config::AuthMode;
use crate::node::Node;
use crate::raft::member_addr::MemberAddr;

/// How often refusals of one (IP, reason) are summed up in the log.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Most (IP, reason) pairs remembered; past it the log starts afresh.
const LOG_KEYS: usize = 4096;

/// The peer plane's state as the rules read it, taken from `node` per call.
pub struct PeerPlane {
    node: Arc<Node>,
    denials: Denials,
    /// Refused tokens and roles, logged apart from the peer plane's.
    token_denials: Denials,
    /// Peer addresses that name hosts, resolved.
    names: Arc<PeerNames>,
}

impl PeerPlane {
    /// The plane of `node`; when addresses decide (`--peer-listen`
    /// without TLS), a task resolves the
    /// names among its peer addresses ([`PeerNames::run`]) until the node's
    /// Raft stops. Call it inside a Tokio runtime.
    pub fn new(node: Arc<Node>) -> Arc<PeerPlane> {
        let plane = Arc::new(PeerPlane {
            node,
            denials: Denials::default(),
            token_denials: Denials::default(),
            names: Arc::new(PeerNames::default()),
        });
        if plane.enforced() && !plane.tls() {
            let weak = Arc::downgrade(&plane);
            let names = plane.names.clone();
            let changes = plane.node.raft.metrics();
            tokio::spawn(async move {
                names
                    .run(move || weak.upgrade().map(|p| p.names()), changes)
                    .await
            });
        }
        plane
    }

    /// The peer addresses of members and peer DCs that are names, not IPs.
    fn names(&self) -> BTreeSet<String> {
        let metrics = self.node.raft.metrics();
        let m = metrics.borrow();
        let members = m
            .membership_config
            .membership()
            .nodes()
            .map(|(_, n)| MemberAddr::of_stored(&n.addr).peer_or_client().to_string())
            .collect::<Vec<_>>();
        let endpoints = self
            .node
            .config
            .peers
            .iter()
            .flat_map(|p| p.endpoints.clone());
        members
            .into_iter()
            .chain(endpoints)
            .filter(|a| peer_names::is_name(a))
            .collect()
    }

    /// Whether the rules are enforced: with `--peer-listen` or with TLS.
    pub fn enforced(&self) -> bool {
        self.node.config.peer_listen.is_some() || self.tls()
    }

    /// Whether the caller's certificate decides (`--tls-dir`), not its IP.
    pub fn tls(&self) -> bool {
        self.node.tls.is_some()
    }

    /// The node ids of the membership's voters and learners.
    pub fn member_ids(&self) -> BTreeSet<u64> {
        let metrics = self.node.raft.metrics();
        let m = metrics.borrow();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect()
    }

    /// This node's DC.
    pub fn dc(&self) -> &str {
        &self.node.config.dc
    }

    /// What [`policy::authorize_tls`] reads.
    fn tls_peers(&self) -> TlsPeers {
        TlsPeers {
            dc: self.node.config.dc.clone(),
            members: self.member_ids(),
            peer_dcs: self
                .node
                .config
                .peers
                .iter()
                .map(|p| p.dc.clone())
                .collect(),
            peer_listener: self.node.config.peer_listen.is_some(),
        }
    }

    /// The membership's members, each with the IP of its peer address: a
    /// member whose peer address is a name appears once per IP it resolves
    /// to, and with no IP until it resolves.
    pub fn members(&self) -> Vec<Member> {
        let metrics = self.node.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let mut out = Vec::new();
        for (id, n) in membership.nodes() {
            let member = |ip| Member {
                id: *id,
                voter: voters.contains(id),
                ip,
            };
            let ips = self
                .names
                .ips(MemberAddr::of_stored(&n.addr).peer_or_client());
            if ips.is_empty() {
                out.push(member(None));
            }
            out.extend(ips.into_iter().map(|ip| member(Some(ip))));
        }
        out
    }

    /// The leader this node knows, if any.
    pub fn known_leader(&self) -> Option<u64> {
        self.node.raft.metrics().borrow().current_leader
    }

    /// What [`policy::authorize`] reads.
    fn peers(&self) -> Peers {
        let members = self.members();
        Peers {
            has_membership: !members.is_empty(),
            member_ips: members.iter().filter_map(|m| m.ip).collect(),
            peer_dc_ips: self
                .node
                .config
                .peers
                .iter()
                .flat_map(|p| self.endpoint_ips(&p.endpoints))
                .collect(),
        }
    }

    /// The IPs of peer DC `dc`'s configured endpoints.
    pub fn peer_dc_ips(&self, dc: &str) -> BTreeSet<IpAddr> {
        self.node
            .config
            .peers
            .iter()
            .filter(|p| p.dc == dc)
            .flat_map(|p| self.endpoint_ips(&p.endpoints))
            .collect()
    }

    /// The IPs of peer DC endpoints (names as last resolved).
    fn endpoint_ips<'a>(&'a self, endpoints: &'a [String]) -> impl Iterator<Item = IpAddr> + 'a {
        endpoints.iter().flat_map(|e| self.names.ips(e))
    }

    /// Logs a refusal (rate-limited) and returns it as PERMISSION_DENIED.
    pub fn deny(&self, caller: &Caller, denied: Denied) -> tonic::Status {
        self.denials.log(
            self.node.id,
            caller.remote,
            denied.reason(),
            &denied,
            None,
            tracing::Level::WARN,
        );
        tonic::Status::permission_denied(denied.to_string())
    }

    /// The grant of a public call with these headers, or the status that
    /// refuses it. `Ok(None)`: nothing establishes the caller (`--auth
    /// none` without TLS).
    fn public_grant(
        &self,
        headers: &http::HeaderMap,
        caller: &Caller,
        path: &str,
    ) -> Result<Option<Grant>, tonic::Status> {
        if self.node.config.auth == AuthMode::None {
            return Ok(caller.cert.as_deref().and_then(policy::grant_of_cert));
        }
        if policy::tokenless(path) {
            return Ok(None);
        }
        let header = headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let token = policy::bearer(header).map_err(|d| self.refuse(caller, d))?;
        let grant = match self.authenticate(&token) {
            Ok(grant) => grant,
            Err(TokenDenied::Unknown { .. }) if !self.leads() => {
                // The leader has applied every token it created: it judges.
                return Err(self.node.not_leader().into());
            }
            Err(TokenDenied::Unknown { .. }) if self.bootstrap_pending(&token) => {
                return Err(tonic::Status::unavailable(
                    "the bootstrap token is being created (the leader proposes it once the \
                     cluster holds tokens); retry",
                ));
            }
            Err(denied) => return Err(self.refuse(caller, denied)),
        };
        policy::authorize_public(path, grant.role())
            .map_err(|d| self.refuse_token(caller, d, grant.token.as_deref()))?;
        Ok(Some(grant))
    }

    /// [`policy::authenticate`] against this node's applied state.
    fn authenticate(&self, token: &Token) -> Result<Grant, TokenDenied> {
        let applied = self.node.state.read();
        let state = &applied.state;
        policy::authenticate(
            token,
            &TokenView {
                tokens_held: state.cluster_version() >= tidal_core::access::ACCESS_VERSION,
                record: state.access().token(token.id()),
                bootstrap: self.node.bootstrap_token.as_ref(),
                now_ms: crate::clock::now_ms(),
            },
        )
    }

    /// Whether this node is the Raft leader.
    fn leads(&self) -> bool {
        self.node.raft.metrics().borrow().current_leader == Some(self.node.id)
    }

    /// Whether `token` is `--bootstrap-token-file`'s and the leader has not
    /// created it yet (no token was ever created).
    fn bootstrap_pending(&self, token: &Token) -> bool {
        let Some((id, hash)) = &self.node.bootstrap_token else {
            return false;
        };
        id == token.id()
            && token.verify(hash)
            && self.node.state.read().state.access().tokens_created() == 0
    }

    /// Logs a refused token (rate-limited, at info) and returns it as
    /// UNAUTHENTICATED or PERMISSION_DENIED.
    fn refuse(&self, caller: &Caller, denied: TokenDenied) -> tonic::Status {
        let id = denied.token_id().map(str::to_string);
        self.refuse_token(caller, denied, id.as_deref())
    }

    fn refuse_token(
        &self,
        caller: &Caller,
        denied: TokenDenied,
        token: Option<&str>,
    ) -> tonic::Status {
        self.token_denials.log(
            self.node.id,
            caller.remote,
            denied.reason(),
            &denied,
            token,
            tracing::Level::INFO,
        );
        if denied.unauthenticated() {
            tonic::Status::unauthenticated(denied.to_string())
        } else {
            tonic::Status::permission_denied(denied.to_string())
        }
    }
}

/// An address and a refusal's reason ([`Denied::reason`]).
type DenialKey = (IpAddr, &'static str);

/// Refusals seen per (IP, reason): when last logged, and how many since.
#[derive(Default)]
struct Denials(Mutex<HashMap<DenialKey, (Instant, u64)>>);

impl Denials {
    /// Logs a refusal for `reason` (with the token's id, if any) at
    /// `level`, the first per (IP, reason) and then a count every [`LOG_EVERY`].
    fn log(
        &self,
        node_id: u64,
        remote: SocketAddr,
        reason: &'static str,
        denied: &dyn std::fmt::Display,
        token: Option<&str>,
        level: tracing::Level,
    ) {
        let key = (canonical(remote.ip()), reason);
        let now = Instant::now();
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= LOG_KEYS && !seen.contains_key(&key) {
            seen.clear();
        }
        match seen.get_mut(&key) {
            None => {
                seen.insert(key, (now, 0));
                if level == tracing::Level::WARN {
                    tracing::warn!(node_id, remote = %remote, reason = %denied, "refused a call");
                } else {
                    tracing::info!(node_id, remote = %remote, token = token.unwrap_or("-"),
                        reason = %denied, "refused a call");
                }
            }
            Some((last, count)) => {
                *count += 1;
                if now.duration_since(*last) >= LOG_EVERY {
                    if level == tracing::Level::WARN {
                        tracing::warn!(node_id, remote = %remote, refused = *count, last = %denied,
                            "refused more calls from this address since the last report");
                    } else {
                        tracing::info!(node_id, remote = %remote, refused = *count,
                            token = token.unwrap_or("-"), last = %denied,
                            "refused more calls from this address since the last report");
                    }
                    *last = now;
                    *count = 0;
                }
            }
        }
    }
}

/// The layer: wraps the server's routes in [`Guarded`].
#[derive(Clone)]
pub struct AuthLayer(pub Arc<PeerPlane>);

impl<S> Layer<S> for AuthLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            plane: self.0.clone(),
        }
    }
}

/// A service whose calls pass [`policy::authorize`] first.
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    plane: Arc<PeerPlane>,
}

impl<S, E> Service<http::Request<BoxBody>> for Guarded<S>
where
    S: Service<http::Request<BoxBody>, Response = http::Response<BoxBody>, Error = E>,
{
    type Response = http::Response<BoxBody>;
    type Error = E;
    type Future = Either<Ready<Result<http::Response<BoxBody>, E>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<BoxBody>) -> Self::Future {
        let refuse =
            |status: tonic::Status| Either::Left(futures::future::ready(Ok(status.into_http())));
        let Some(caller) = req.extensions().get::<Caller>().cloned() else {
            // Every connection the server accepts carries one.
            return Either::Right(self.inner.call(req));
        };
        let rpc = Rpc::of_path(req.uri().path());
        if self.plane.enforced() {
            let verdict = if self.plane.tls() {
                policy::authorize_tls(rpc, &caller, &self.plane.tls_peers())
            } else {
                policy::authorize(rpc, &caller, &self.plane.peers())
            };
            if let Err(denied) = verdict {
                return refuse(self.plane.deny(&caller, denied));
            }
        }
        if let Rpc::Peer(_) = rpc {
            return Either::Right(self.inner.call(req));
        }
        match self
            .plane
            .public_grant(req.headers(), &caller, req.uri().path())
        {
            Ok(Some(grant)) => {
                req.extensions_mut().insert(grant);
                Either::Right(self.inner.call(req))
            }
            Ok(None) => Either::Right(self.inner.call(req)),
            Err(status) => refuse(status),
        }
    }
}
