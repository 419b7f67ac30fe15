//! The server's one error type and its gRPC status code (the status itself, with the leader
//! named in its metadata, is built at the gRPC edge, `grpc::status`).

use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::BasicNode;
use tidal_core::command::Rejection;
use tonic::Code;

/// Everything a request can fail with, before it becomes a gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// This node is not the leader; the leader is named when known.
    #[error("this node is not the leader{}", leader_hint(.leader_id, .leader_addr))]
    NotLeader {
        leader_id: Option<u64>,
        leader_addr: Option<String>,
        /// Said before anything was proposed (this node's own check), so
        /// the request certainly was not applied. False for openraft's
        /// answer to a write, which may come for an entry its log dropped
        /// that another voter still holds and may yet commit.
        before_proposal: bool,
    },
    #[error("{0}")]
    Rejected(#[from] Rejection),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
    /// No quorum, shutting down, or another transient condition.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

fn leader_hint(id: &Option<u64>, addr: &Option<String>) -> String {
    match (id, addr) {
        (Some(id), Some(addr)) => format!("; the leader is node {id} at {addr}"),
        (Some(id), None) => format!("; the leader is node {id}"),
        _ => "; no leader is known yet".to_string(),
    }
}

pub type Result<T, E = ServerError> = std::result::Result<T, E>;

impl ServerError {
    pub fn code(&self) -> Code {
        match self {
            ServerError::NotLeader { .. } | ServerError::Unavailable(_) => Code::Unavailable,
            ServerError::Rejected(r) => rejection_code(r),
            ServerError::InvalidArgument(_) => Code::InvalidArgument,
            ServerError::NotFound(_) => Code::NotFound,
            ServerError::AlreadyExists(_) => Code::AlreadyExists,
            ServerError::FailedPrecondition(_) => Code::FailedPrecondition,
            ServerError::ResourceExhausted(_) => Code::ResourceExhausted,
            ServerError::Internal(_) => Code::Internal,
        }
    }

    fn forward(f: ForwardToLeader<u64, BasicNode>) -> ServerError {
        ServerError::NotLeader {
            before_proposal: false,
            leader_id: f.leader_id,
            leader_addr: f
                .leader_node
                .as_ref()
                .map(crate::raft::member_addr::client_addr),
        }
    }
}

/// The gRPC code for a rejection that the state machine returned as data.
///
/// Of the access rejections: a tenant over a limit is RESOURCE_EXHAUSTED; a
/// revoke of the last active admin token is FAILED_PRECONDITION (the request
/// is fine, the cluster's state forbids it until another admin token
/// exists); an agent id that belongs to another active token is
/// PERMISSION_DENIED (this credential may not act as that agent, and trying
/// again does not change that); a token revoked or expired by the time its
/// command applied is UNAUTHENTICATED, as the auth layer answers it.
pub fn rejection_code(r: &Rejection) -> Code {
    match r {
        Rejection::Invalid(_) => Code::InvalidArgument,
        Rejection::OverLimit(_) => Code::ResourceExhausted,
        Rejection::TaskNotFound(_) | Rejection::AgentNotFound(_) | Rejection::QueueNotFound(_) => {
            Code::NotFound
        }
        Rejection::StaleToken { .. }
        | Rejection::WrongState { .. }
        | Rejection::Ineligible { .. } => Code::FailedPrecondition,
        Rejection::UnsupportedVersion(_)
        | Rejection::AgentWrongState { .. }
        | Rejection::NeedsClusterVersion { .. } => Code::FailedPrecondition,
        Rejection::KeyConflict { .. } => Code::AlreadyExists,
        Rejection::Finished { .. } => Code::FailedPrecondition,
        Rejection::OverQuota { .. } => Code::ResourceExhausted,
        Rejection::LastAdmin(_) => Code::FailedPrecondition,
        Rejection::AgentOwned { .. } => Code::PermissionDenied,
        Rejection::TokenNotFound(_) | Rejection::TenantNotFound(_) => Code::NotFound,
        Rejection::TokenInactive(_) => Code::Unauthenticated,
    }
}

impl From<RaftError<u64, ClientWriteError<u64, BasicNode>>> for ServerError {
    fn from(e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> Self {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ServerError::forward(f),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
                ServerError::FailedPrecondition(format!("membership change refused: {c}"))
            }
            RaftError::Fatal(f) => ServerError::Unavailable(format!("raft is stopped: {f}")),
        }
    }
}

impl From<RaftError<u64, CheckIsLeaderError<u64, BasicNode>>> for ServerError {
    fn from(e: RaftError<u64, CheckIsLeaderError<u64, BasicNode>>) -> Self {
        match e {
            RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => ServerError::forward(f),
            RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => {
                ServerError::Unavailable(format!("cannot confirm leadership: {q}"))
            }
            RaftError::Fatal(f) => ServerError::Unavailable(format!("raft is stopped: {f}")),
        }
    }
}
