//! Which RPC a caller may make on which listener and with which certificate: the peer plane's rules, enforced with `--peer-listen` or `--tls-dir`.
//!
//! With a peer listener, the Raft RPCs and `Dcs/Exchange` are served on it
//! only, and every other RPC on the public listener only ([`authorize`]).
//! On the peer listener the caller's IP must be the IP of a member's peer
//! address (the membership's voters and learners), or for an exchange of a
//! configured peer DC's endpoint. A node with no membership yet (a new node
//! the leader is about to add) takes peer RPCs from anyone.
//!
//! Once a Raft payload is decoded, [`bind`] checks that the member it claims
//! to come from is the one at the caller's IP, so one member cannot speak
//! for another. An IP is only as good as the network it crosses: anything on
//! a member's host, behind the same NAT or proxy, passes (README).
//!
//! With TLS (`--tls-dir`), the caller's certificate decides instead of its
//! IP ([`authorize_tls`], [`exchange_origin_tls`]): Raft RPCs need a server
//! certificate of this DC naming a member (any server of this DC for
//! Hello), an exchange a server of the origin DC or a member passing it
//! on, and the public API a client or agent certificate (an agent of this
//! DC for an agent session). [`bind`] then checks the decoded message
//! against the node the certificate names.
//!
//! Under `--auth tokens` the public API needs a token: [`bearer`] reads it
//! from the `authorization` header, [`authenticate`] judges it against the
//! applied state (its hash, revocation, expiry; below cluster format
//! version 3 only the bootstrap token, as an admin) and makes the
//! [`Grant`], and [`authorize_public`] checks its role against
//! [`PUBLIC_RULES`] (server reflection: [`STANDARD_RULES`]); the health
//! service needs no token ([`tokenless`]). Under `--auth none` with TLS,
//! [`grant_of_cert`] names the caller from its certificate.

use std::collections::BTreeSet;
use std::net::IpAddr;

use tidal_core::access::{Principal, Role as AccessRole, TokenRecord};
use tidal_tls::{CertIdentity, Role};

use super::caller::{Caller, Listener};
use super::grant::Grant;
use super::token::{parse_bearer, Token, TokenError};

/// The RPCs servers make to each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerRpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
    Removed,
    HoldElections,
    Campaign,
    PreVote,
    Hello,
    LeaderAlive,
    /// Any other method of the Raft service.
    OtherRaft,
    /// `tidal.v1.Dcs/Exchange`, from a peer DC (or passed on by a member).
    Exchange,
}

/// Every peer RPC.
pub const PEER_RPCS: [PeerRpc; 11] = [
    PeerRpc::AppendEntries,
    PeerRpc::Vote,
    PeerRpc::InstallSnapshot,
    PeerRpc::Removed,
    PeerRpc::HoldElections,
    PeerRpc::Campaign,
    PeerRpc::PreVote,
    PeerRpc::Hello,
    PeerRpc::LeaderAlive,
    PeerRpc::OtherRaft,
    PeerRpc::Exchange,
];

/// The gRPC path prefix of the Raft service.
const RAFT: &str = "/tidal.raft.v1.Raft/";
/// The gRPC path of the cross-DC exchange.
const EXCHANGE: &str = "/tidal.v1.Dcs/Exchange";
/// The gRPC path of an agent's session.
const AGENT_SESSION: &str = "/tidal.v1.Agents/Session";

impl PeerRpc {
    /// How logs and refusals name it.
    pub fn name(self) -> &'static str {
        match self {
            PeerRpc::AppendEntries => "Raft/AppendEntries",
            PeerRpc::Vote => "Raft/Vote",
            PeerRpc::InstallSnapshot => "Raft/InstallSnapshot",
            PeerRpc::Removed => "Raft/Removed",
            PeerRpc::HoldElections => "Raft/HoldElections",
            PeerRpc::Campaign => "Raft/Campaign",
            PeerRpc::PreVote => "Raft/PreVote",
            PeerRpc::Hello => "Raft/Hello",
            PeerRpc::LeaderAlive => "Raft/LeaderAlive",
            PeerRpc::OtherRaft => "Raft",
            PeerRpc::Exchange => "Dcs/Exchange",
        }
    }
}

/// An RPC as the rules sort it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpc {
    Peer(PeerRpc),
    /// Everything clients and agents call (an unknown path too: the
    /// router answers it UNIMPLEMENTED).
    Public,
    /// `tidal.v1.Agents/Session`: public, and with TLS for agents only.
    AgentSession,
}

impl Rpc {
    /// The RPC of a gRPC method path (`/tidal.raft.v1.Raft/Vote`).
    pub fn of_path(path: &str) -> Rpc {
        if path == EXCHANGE {
            return Rpc::Peer(PeerRpc::Exchange);
        }
        if path == AGENT_SESSION {
            return Rpc::AgentSession;
        }
        let Some(method) = path.strip_prefix(RAFT) else {
            return Rpc::Public;
        };
        Rpc::Peer(match method {
            "AppendEntries" => PeerRpc::AppendEntries,
            "Vote" => PeerRpc::Vote,
            "InstallSnapshot" => PeerRpc::InstallSnapshot,
            "Removed" => PeerRpc::Removed,
            "HoldElections" => PeerRpc::HoldElections,
            "Campaign" => PeerRpc::Campaign,
            "PreVote" => PeerRpc::PreVote,
            "Hello" => PeerRpc::Hello,
            "LeaderAlive" => PeerRpc::LeaderAlive,
            _ => PeerRpc::OtherRaft,
        })
    }
}

/// What the rules need to know about this node's peers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peers {
    /// Whether this node has a membership (a new node has none until the
    /// leader adds it).
    pub has_membership: bool,
    /// The IPs of the members' peer addresses, voters and learners.
    pub member_ips: BTreeSet<IpAddr>,
    /// The IPs of every configured peer DC's endpoints.
    pub peer_dc_ips: BTreeSet<IpAddr>,
}

/// Why a call is refused (PERMISSION_DENIED, with this as its message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// A peer RPC on the public listener.
    PeerListenerOnly(PeerRpc),
    /// A public RPC on the peer listener.
    PublicListenerOnly,
    /// A peer RPC from an IP that is no member's peer address.
    NotAMember { rpc: PeerRpc, ip: IpAddr },
    /// An exchange from an IP that is neither a member's nor a peer DC's.
    NotAPeerDc { ip: IpAddr, origin: Option<String> },
    /// A Raft message that names another member than the one at the caller's IP.
    Impersonates {
        rpc: PeerRpc,
        ip: IpAddr,
        claimed: u64,
        actual: u64,
    },
    /// A Raft message that names a node that is not a member (or not a
    /// voter where a voter is needed).
    NotAllowedMember {
        rpc: PeerRpc,
        claimed: u64,
        why: &'static str,
    },
    /// With TLS: a connection without a client certificate.
    NoCertificate { rpc: String },
    /// With TLS: a certificate of a role or DC that may not make the call.
    WrongCertificate {
        rpc: String,
        names: String,
        wanted: String,
    },
    /// With TLS: a server certificate of this DC naming a node that is not a member.
    CertNotAMember { rpc: PeerRpc, node: u64 },
    /// With TLS: a Raft message that names another node than the caller's certificate.
    CertNamesAnother {
        rpc: PeerRpc,
        claimed: u64,
        actual: u64,
    },
}

impl Denied {
    /// A short fixed name, so logs are rate-limited per (IP, reason).
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::PeerListenerOnly(_) => "peer rpc on the public listener",
            Denied::PublicListenerOnly => "public rpc on the peer listener",
            Denied::NotAMember { .. } => "not a member",
            Denied::NotAPeerDc { .. } => "not a peer dc",
            Denied::Impersonates { .. } => "names another member",
            Denied::NotAllowedMember { .. } => "names a node that may not send it",
            Denied::NoCertificate { .. } => "no certificate",
            Denied::WrongCertificate { .. } => "certificate of another role or dc",
            Denied::CertNotAMember { .. } => "certificate names no member",
            Denied::CertNamesAnother { .. } => "names another node than its certificate",
        }
    }
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denied::PeerListenerOnly(rpc) => write!(
                f,
                "{} refused: Raft and exchange RPCs are served on the peer listener only",
                rpc.name()
            ),
            Denied::PublicListenerOnly => f.write_str(
                "refused: the peer listener serves only Raft and exchange RPCs; \
                 clients and agents use the public address",
            ),
            Denied::NotAMember { rpc, ip } => write!(
                f,
                "peer RPC {} refused: {ip} is not the peer address of a member of this DC",
                rpc.name()
            ),
            Denied::NotAPeerDc { ip, origin } => match origin {
                Some(dc) => write!(
                    f,
                    "Dcs/Exchange refused: {ip} is not an endpoint of peer DC {dc:?} \
                     nor a member of this DC passing an exchange on"
                ),
                None => write!(
                    f,
                    "Dcs/Exchange refused: {ip} is neither a member of this DC nor an \
                     endpoint of a peer DC"
                ),
            },
            Denied::Impersonates {
                rpc,
                ip,
                claimed,
                actual,
            } => write!(
                f,
                "peer RPC {} refused: it names node {claimed}, but {ip} is node {actual}",
                rpc.name()
            ),
            Denied::NotAllowedMember { rpc, claimed, why } => {
                write!(f, "peer RPC {} refused: node {claimed} {why}", rpc.name())
            }
            Denied::NoCertificate { rpc } => {
                write!(f, "{rpc} refused: the caller presented no certificate")
            }
            Denied::WrongCertificate { rpc, names, wanted } => write!(
                f,
                "{rpc} refused: the caller's certificate names {names}, not {wanted}"
            ),
            Denied::CertNotAMember { rpc, node } => write!(
                f,
                "peer RPC {} refused: the caller's certificate names server '{node}', which is \
                 not a member of this DC",
                rpc.name()
            ),
            Denied::CertNamesAnother {
                rpc,
                claimed,
                actual,
            } => write!(
                f,
                "peer RPC {} refused: it names node {claimed}, but the caller's certificate \
                 names node {actual}",
                rpc.name()
            ),
        }
    }
}

/// Whether `caller` may make `rpc`, by listener and IP, on a node with a
/// peer listener.
pub fn authorize(rpc: Rpc, caller: &Caller, peers: &Peers) -> Result<(), Denied> {
    let Some(rpc) = listener(rpc, caller)? else {
        return Ok(());
    };
    let ip = caller.ip();
    if peers.member_ips.contains(&ip) {
        return Ok(());
    }
    match rpc {
        PeerRpc::Exchange if peers.peer_dc_ips.contains(&ip) => Ok(()),
        PeerRpc::Exchange => Err(Denied::NotAPeerDc { ip, origin: None }),
        // A node the leader has not added yet knows no member to check.
        _ if !peers.has_membership => Ok(()),
        rpc => Err(Denied::NotAMember { rpc, ip }),
    }
}

/// The listener rule of a node with a peer listener: peer RPCs on it
/// only, the public API on the public one only. Some(the peer RPC) to check further.
fn listener(rpc: Rpc, caller: &Caller) -> Result<Option<PeerRpc>, Denied> {
    match (rpc, caller.listener) {
        (Rpc::Public | Rpc::AgentSession, Listener::Public) => Ok(None),
        (Rpc::Public | Rpc::AgentSession, Listener::Peer) => Err(Denied::PublicListenerOnly),
        (Rpc::Peer(rpc), Listener::Public) => Err(Denied::PeerListenerOnly(rpc)),
        (Rpc::Peer(rpc), Listener::Peer) => Ok(Some(rpc)),
    }
}

/// What the TLS rules read about this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsPeers {
    /// This node's DC.
    pub dc: String,
    /// The node ids of the membership's voters and learners (empty: this
    /// node has no membership yet).
    pub members: BTreeSet<u64>,
    /// The configured peer DCs.
    pub peer_dcs: BTreeSet<String>,
    /// Whether a peer listener (`--peer-listen`) serves the peer plane
    /// apart: then the listener rule of [`authorize`] holds too.
    pub peer_listener: bool,
}

/// Whether `caller` may make `rpc` on a node with TLS, by the identity its
/// certificate names:
/// - Raft RPCs: a server of this DC that is a member (any server of this
///   DC while this node has no membership); Hello: any server of this DC.
/// - Dcs/Exchange: a server of this DC or of a peer DC
///   ([`exchange_origin_tls`] checks the origin once it is decoded).
/// - Agents/Session: an agent of this DC.
/// - The rest of the public API: a client or an agent (never a server).
pub fn authorize_tls(rpc: Rpc, caller: &Caller, peers: &TlsPeers) -> Result<(), Denied> {
    if peers.peer_listener {
        listener(rpc, caller)?;
    }
    let label = match rpc {
        Rpc::Peer(p) => format!("peer RPC {}", p.name()),
        Rpc::AgentSession => "Agents/Session".to_string(),
        Rpc::Public => "public RPC".to_string(),
    };
    let Some(cert) = caller.cert.as_deref() else {
        return Err(Denied::NoCertificate { rpc: label });
    };
    let mine = cert.dc() == Some(peers.dc.as_str());
    let wrong = |wanted: String| Denied::WrongCertificate {
        rpc: label.clone(),
        names: cert.to_string(),
        wanted,
    };
    let server_of_mine = || format!("a server of dc '{}'", peers.dc);
    match rpc {
        Rpc::Public if matches!(cert.role(), Role::Client | Role::Agent) => Ok(()),
        Rpc::Public => Err(wrong("a client or an agent".into())),
        Rpc::AgentSession if cert.role() == Role::Agent && mine => Ok(()),
        Rpc::AgentSession => Err(wrong(format!("an agent of dc '{}'", peers.dc))),
        Rpc::Peer(_) if cert.role() != Role::Server => Err(wrong(server_of_mine())),
        Rpc::Peer(PeerRpc::Exchange)
            if mine || cert.dc().is_some_and(|dc| peers.peer_dcs.contains(dc)) =>
        {
            Ok(())
        }
        Rpc::Peer(PeerRpc::Exchange) => Err(wrong(format!(
            "a server of dc '{}' or of a peer dc",
            peers.dc
        ))),
        Rpc::Peer(_) if !mine => Err(wrong(server_of_mine())),
        Rpc::Peer(PeerRpc::Hello) => Ok(()),
        // A node the leader has not added yet knows no member to check.
        Rpc::Peer(_) if peers.members.is_empty() => Ok(()),
        Rpc::Peer(rpc) => match cert.node_id() {
            Some(id) if peers.members.contains(&id) => Ok(()),
            Some(id) => Err(Denied::CertNotAMember { rpc, node: id }),
            None => Err(wrong(server_of_mine())),
        },
    }
}

/// An exchange that passed [`authorize_tls`], once its origin DC is known:
/// from a server of `origin` (a configured peer, checked before), or from
/// a member of this DC (`my_dc`, `members`) passing it on (`passed_on`).
pub fn exchange_origin_tls(
    caller: &Caller,
    origin: &str,
    my_dc: &str,
    members: &BTreeSet<u64>,
    passed_on: bool,
) -> Result<(), Denied> {
    let rpc = format!("peer RPC {}", PeerRpc::Exchange.name());
    let Some(cert) = caller.cert.as_deref() else {
        return Err(Denied::NoCertificate { rpc });
    };
    let server = cert.role() == Role::Server;
    if server && cert.dc() == Some(origin) {
        return Ok(());
    }
    let member = cert.node_id().is_some_and(|id| members.contains(&id));
    if server && passed_on && cert.dc() == Some(my_dc) && member {
        return Ok(());
    }
    Err(Denied::WrongCertificate {
        rpc,
        names: cert.to_string(),
        wanted: format!(
            "a server of dc '{origin}' (the exchange's origin) nor a member of dc \
             '{my_dc}' passing it on"
        ),
    })
}

/// An exchange that passed [`authorize`], once its origin DC is known:
/// from one of `origin_ips` (that DC's configured endpoints), or from a
/// member of this DC passing it on (`passed_on`).
pub fn exchange_origin(
    caller: &Caller,
    origin: &str,
    origin_ips: &BTreeSet<IpAddr>,
    member_ips: &BTreeSet<IpAddr>,
    passed_on: bool,
) -> Result<(), Denied> {
    let ip = caller.ip();
    if origin_ips.contains(&ip) || (passed_on && member_ips.contains(&ip)) {
        return Ok(());
    }
    Err(Denied::NotAPeerDc {
        ip,
        origin: Some(origin.to_string()),
    })
}

/// A member as [`bind`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub voter: bool,
    /// The IP of its peer address (None: a name, not checked).
    pub ip: Option<IpAddr>,
}

/// What a decoded Raft message must come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// AppendEntries, Vote, InstallSnapshot (the vote's leader), PreVote
    /// (the candidate): the named node, a member.
    Named(u64),
    /// Removed: the named leader, a voter.
    NamedVoter(u64),
    /// HoldElections, Campaign: a voter, the leader this node knows if it
    /// knows one. Releasing a hold needs a voter only.
    Leader { known: Option<u64>, release: bool },
}

/// Checks that the member the caller is, is who `sender` must be. With
/// TLS the caller is the member its certificate names. Without, only when
/// exactly one member has the caller's IP does the IP name a member; with
/// none or several (a shared host) the check passes (the listener and
/// [`authorize`] are what holds there). A node with no membership checks
/// nothing.
pub fn bind(
    rpc: PeerRpc,
    caller: &Caller,
    members: &[Member],
    sender: Sender,
) -> Result<(), Denied> {
    if members.is_empty() {
        return Ok(());
    }
    let ip = caller.ip();
    let actual = match caller.cert.as_deref() {
        Some(cert) => member_of_cert(rpc, cert, members)?,
        None => {
            let mut at_ip = members.iter().filter(|m| m.ip == Some(ip));
            let (Some(actual), None) = (at_ip.next(), at_ip.next()) else {
                return Ok(());
            };
            actual
        }
    };
    let voter = |id: u64| members.iter().any(|m| m.id == id && m.voter);
    match sender {
        Sender::Named(claimed) | Sender::NamedVoter(claimed)
            if claimed != actual.id && caller.cert.is_some() =>
        {
            Err(Denied::CertNamesAnother {
                rpc,
                claimed,
                actual: actual.id,
            })
        }
        Sender::Named(claimed) | Sender::NamedVoter(claimed) if claimed != actual.id => {
            Err(Denied::Impersonates {
                rpc,
                ip,
                claimed,
                actual: actual.id,
            })
        }
        Sender::NamedVoter(claimed) if !voter(claimed) => Err(Denied::NotAllowedMember {
            rpc,
            claimed,
            why: "is not a voter",
        }),
        Sender::Named(_) | Sender::NamedVoter(_) => Ok(()),
        Sender::Leader { .. } if !actual.voter => Err(Denied::NotAllowedMember {
            rpc,
            claimed: actual.id,
            why: "is not a voter",
        }),
        Sender::Leader {
            known: Some(leader),
            release: false,
        } if leader != actual.id => Err(Denied::NotAllowedMember {
            rpc,
            claimed: actual.id,
            why: "is not the leader this node knows",
        }),
        Sender::Leader { .. } => Ok(()),
    }
}

/// The member a server certificate names.
fn member_of_cert<'m>(
    rpc: PeerRpc,
    cert: &CertIdentity,
    members: &'m [Member],
) -> Result<&'m Member, Denied> {
    let Some(id) = cert.node_id() else {
        return Err(Denied::WrongCertificate {
            rpc: format!("peer RPC {}", rpc.name()),
            names: cert.to_string(),
            wanted: "a server".into(),
        });
    };
    members
        .iter()
        .find(|m| m.id == id)
        .ok_or(Denied::CertNotAMember { rpc, node: id })
}

// ---- the public API under `--auth tokens` ----

/// Every method of the public API (`proto/tidal.proto`, `Dcs/Exchange`
/// aside: it is the peer plane's) and the token roles that may call it.
/// A method not listed is refused to every role. Tenant scoping (a user
/// sees its own tenant's tasks) and an agent's own-agent rules are the
/// handlers' to apply from the [`Grant`]; these rows say who may call at all.
pub const PUBLIC_RULES: &[(&str, &[AccessRole])] = &[
    ("/tidal.v1.Tasks/Submit", ADMIN_USER),
    ("/tidal.v1.Tasks/Get", ADMIN_USER),
    ("/tidal.v1.Tasks/List", ADMIN_USER),
    ("/tidal.v1.Tasks/Cancel", ADMIN_USER),
    // As Cancel: a user replays its own tenant's tasks (the handler scopes).
    ("/tidal.v1.Tasks/Replay", ADMIN_USER),
    // As Get: a user explains its own tenant's tasks (the handler scopes).
    ("/tidal.v1.Tasks/Explain", ADMIN_USER),
    ("/tidal.v1.Agents/Session", AGENT),
    ("/tidal.v1.Agents/List", ADMIN),
    // An agent's token drains, undrains and deregisters only the agents
    // registered under it (the handlers check): its graceful exit.
    ("/tidal.v1.Agents/Drain", ADMIN_AGENT),
    ("/tidal.v1.Agents/Undrain", ADMIN_AGENT),
    ("/tidal.v1.Agents/Deregister", ADMIN_AGENT),
    ("/tidal.v1.Queues/Set", ADMIN),
    ("/tidal.v1.Queues/List", EVERY_ROLE),
    ("/tidal.v1.Queues/SetHeadroom", ADMIN),
    ("/tidal.v1.Tenants/Set", ADMIN),
    ("/tidal.v1.Tenants/List", ADMIN_USER),
    ("/tidal.v1.Tokens/Create", ADMIN),
    ("/tidal.v1.Tokens/List", ADMIN),
    ("/tidal.v1.Tokens/Revoke", ADMIN),
    ("/tidal.v1.Cluster/AddLearner", ADMIN),
    ("/tidal.v1.Cluster/Promote", ADMIN),
    ("/tidal.v1.Cluster/Demote", ADMIN),
    ("/tidal.v1.Cluster/TransferLeader", ADMIN),
    ("/tidal.v1.Cluster/Remove", ADMIN),
    ("/tidal.v1.Cluster/Members", ADMIN),
    ("/tidal.v1.Cluster/Status", EVERY_ROLE),
    ("/tidal.v1.Cluster/Snapshot", ADMIN),
    ("/tidal.v1.Cluster/Backup", ADMIN),
    ("/tidal.v1.Dcs/Status", ADMIN),
];

const ADMIN: &[AccessRole] = &[AccessRole::Admin];
const AGENT: &[AccessRole] = &[AccessRole::Agent];
const ADMIN_USER: &[AccessRole] = &[AccessRole::Admin, AccessRole::User];
const ADMIN_AGENT: &[AccessRole] = &[AccessRole::Admin, AccessRole::Agent];
const EVERY_ROLE: &[AccessRole] = &[AccessRole::Admin, AccessRole::User, AccessRole::Agent];

/// gRPC's standard services beside the public API: server reflection
/// (v1 and v1alpha) to any role. It describes `proto/tidal.proto` only.
pub const STANDARD_RULES: &[(&str, &[AccessRole])] = &[
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        EVERY_ROLE,
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        EVERY_ROLE,
    ),
];

/// The path prefix of gRPC's health service (`grpc.health.v1.Health`).
const HEALTH: &str = "/grpc.health.v1.Health/";

/// Whether the public method at `path` needs no token under `--auth
/// tokens`: the health service, which load balancers' probes call without
/// one (it tells whether this node serves, nothing else). The listener and
/// TLS rules still apply.
pub fn tokenless(path: &str) -> bool {
    path.starts_with(HEALTH)
}

/// The roles that may call the public method at `path` (none for a path
/// not in [`PUBLIC_RULES`] or [`STANDARD_RULES`]).
pub fn roles_of(path: &str) -> &'static [AccessRole] {
    PUBLIC_RULES
        .iter()
        .chain(STANDARD_RULES)
        .find(|(p, _)| *p == path)
        .map_or(&[], |(_, roles)| *roles)
}

/// A method path as refusals name it: `Cluster/AddLearner`.
pub fn method_name(path: &str) -> &str {
    path.strip_prefix("/tidal.v1.").unwrap_or(path)
}

/// Whether a token of `role` may call the public method at `path`.
pub fn authorize_public(path: &str, role: AccessRole) -> Result<(), TokenDenied> {
    let allowed = roles_of(path);
    if allowed.contains(&role) {
        return Ok(());
    }
    Err(TokenDenied::Role {
        role,
        rpc: method_name(path).to_string(),
        allowed,
    })
}

/// Why a call's token was not taken (UNAUTHENTICATED) or may not make the
/// call (PERMISSION_DENIED, [`TokenDenied::Role`]). Never holds a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenDenied {
    /// No `authorization` header.
    NoToken,
    /// A header that is not `Bearer <token>`, or a token of the wrong shape.
    Malformed(TokenError),
    /// No token of this id in the applied state (the leader's judgement:
    /// a follower sends the caller there first).
    Unknown {
        id: String,
    },
    /// A token of a known id whose secret does not hash to its record's.
    WrongSecret {
        id: String,
    },
    Revoked {
        id: String,
    },
    Expired {
        id: String,
        at_ms: u64,
    },
    /// Below cluster format version 3, another token than the bootstrap one.
    NeedsVersion3 {
        id: String,
    },
    /// A valid token whose role may not make the call.
    Role {
        role: AccessRole,
        rpc: String,
        allowed: &'static [AccessRole],
    },
}

impl TokenDenied {
    /// UNAUTHENTICATED (else PERMISSION_DENIED).
    pub fn unauthenticated(&self) -> bool {
        !matches!(self, TokenDenied::Role { .. })
    }

    /// A short fixed name, so logs are rate-limited per (IP, reason).
    pub fn reason(&self) -> &'static str {
        match self {
            TokenDenied::NoToken => "no token",
            TokenDenied::Malformed(_) => "malformed token",
            TokenDenied::Unknown { .. } => "unknown token",
            TokenDenied::WrongSecret { .. } => "wrong token secret",
            TokenDenied::Revoked { .. } => "revoked token",
            TokenDenied::Expired { .. } => "expired token",
            TokenDenied::NeedsVersion3 { .. } => "tokens below format version 3",
            TokenDenied::Role { .. } => "role may not call",
        }
    }

    /// The id of the token the call presented, when it had one.
    pub fn token_id(&self) -> Option<&str> {
        match self {
            TokenDenied::Unknown { id }
            | TokenDenied::WrongSecret { id }
            | TokenDenied::Revoked { id }
            | TokenDenied::Expired { id, .. }
            | TokenDenied::NeedsVersion3 { id } => Some(id),
            _ => None,
        }
    }
}

impl std::fmt::Display for TokenDenied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenDenied::NoToken => f.write_str(
                "no token: this server needs `authorization: Bearer tdl_...` \
                 (the CLI's --token or TIDAL_TOKEN)",
            ),
            TokenDenied::Malformed(e) => write!(f, "the token was refused: {e}"),
            TokenDenied::Unknown { id } => write!(f, "token {id} is not known to this cluster"),
            TokenDenied::WrongSecret { id } => write!(
                f,
                "token {id} was refused: its secret is not the one the cluster holds"
            ),
            TokenDenied::Revoked { id } => write!(f, "token {id} was revoked"),
            TokenDenied::Expired { id, at_ms } => {
                write!(f, "token {id} expired (at {at_ms} ms since the epoch)")
            }
            TokenDenied::NeedsVersion3 { id } => write!(
                f,
                "token {id} was refused: tokens need cluster format version 3 (until then \
                 only the --bootstrap-token-file token is taken; README: Rolling upgrade)"
            ),
            TokenDenied::Role { role, rpc, allowed } => {
                let allowed: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
                let who = match allowed.as_slice() {
                    [] => "no role".to_string(),
                    roles => format!("role {} only", roles.join(" or ")),
                };
                write!(
                    f,
                    "role {} may not call {rpc} ({who}; README: Tokens)",
                    role.as_str()
                )
            }
        }
    }
}

/// The token of an `authorization` header's value, or why there is none.
pub fn bearer(header: Option<&[u8]>) -> Result<Token, TokenDenied> {
    let Some(header) = header else {
        return Err(TokenDenied::NoToken);
    };
    let text =
        std::str::from_utf8(header).map_err(|_| TokenDenied::Malformed(TokenError::NotBearer))?;
    parse_bearer(text).map_err(TokenDenied::Malformed)
}

/// The name the leader gives the bootstrap token's record.
pub const BOOTSTRAP_NAME: &str = "bootstrap";

/// What [`authenticate`] reads of the node and its applied state.
pub struct TokenView<'a> {
    /// Whether the cluster holds tokens (format version 3 or later).
    pub tokens_held: bool,
    /// The record of the token's id, if the applied state has one.
    pub record: Option<&'a TokenRecord>,
    /// `--bootstrap-token-file`'s token: its id and hash.
    pub bootstrap: Option<&'a (String, [u8; 32])>,
    /// Now, on this node's clock (ms since the epoch).
    pub now_ms: u64,
}

/// Who `token` is, as [`TokenView`] tells: its [`Grant`] (principal
/// `token:<name or id>`, its role, its tenant), or why it is not taken.
/// Below format version 3 only the bootstrap token is, as an admin.
pub fn authenticate(token: &Token, view: &TokenView) -> Result<Grant, TokenDenied> {
    let id = token.id().to_string();
    if !view.tokens_held {
        return match view.bootstrap {
            Some((boot_id, hash)) if *boot_id == id && token.verify(hash) => Ok(Grant {
                principal: Principal {
                    id: format!("token:{BOOTSTRAP_NAME}"),
                    role: AccessRole::Admin,
                },
                token: Some(id),
                tenant: None,
            }),
            _ => Err(TokenDenied::NeedsVersion3 { id }),
        };
    }
    let Some(record) = view.record else {
        return Err(TokenDenied::Unknown { id });
    };
    if !token.verify(&record.hash) {
        return Err(TokenDenied::WrongSecret { id });
    }
    if record.revoked_ms.is_some() {
        return Err(TokenDenied::Revoked { id });
    }
    if let Some(at_ms) = record.expires_ms.filter(|e| view.now_ms >= *e) {
        return Err(TokenDenied::Expired { id, at_ms });
    }
    let name = if record.name.is_empty() {
        &id
    } else {
        &record.name
    };
    Ok(Grant {
        principal: Principal {
            id: format!("token:{name}"),
            role: record.role,
        },
        tenant: record.tenant.clone(),
        token: Some(id),
    })
}

/// Under `--auth none` with TLS, who a client certificate names: a client
/// is an admin, an agent an agent, both for every tenant (`cert:<name>`).
/// None for a server's certificate (the public API refuses it anyway).
pub fn grant_of_cert(cert: &CertIdentity) -> Option<Grant> {
    let role = match cert.role() {
        Role::Client => AccessRole::Admin,
        Role::Agent => AccessRole::Agent,
        Role::Server => return None,
    };
    Some(Grant {
        principal: Principal {
            id: format!("cert:{}", cert.name()),
            role,
        },
        token: None,
        tenant: None,
    })
}

#[cfg(test)]
#[path = "policy_test.rs"]
mod tests;
