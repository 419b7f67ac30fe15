//! `tidal.v1.Tokens`: create a token (its secret shown once, only its hash stored), list, revoke.

use std::sync::Arc;

use tidal_core::access::{Role, TokenRecord};
use tidal_core::command::{Command, Response as CoreResponse};
use tidal_core::limits::validate_name;
use tidal_proto::v1::{self, tokens_server::Tokens};
use tonic::{Request, Response, Status};

use crate::auth::grant::Grant;
use crate::auth::token::{self, Token, MAX_TTL_MS};
use crate::clock::now_ms;
use crate::error::ServerError;
use crate::leader::engine::Event;
use crate::node::Node;

pub struct TokenService {
    pub node: Arc<Node>,
}

/// What a `CreateTokenRequest` asks for, checked.
struct NewToken {
    role: Role,
    tenant: Option<String>,
    name: String,
    ttl_ms: Option<u64>,
}

fn parse_role(role: &str) -> Result<Role, ServerError> {
    match role {
        "admin" => Ok(Role::Admin),
        "user" => Ok(Role::User),
        "agent" => Ok(Role::Agent),
        other => Err(ServerError::InvalidArgument(format!(
            "role {other:?} is not admin, user or agent"
        ))),
    }
}

/// Checks a request: an admin token acts for every tenant; a user token
/// for one; an agent token for one or, with `all_tenants`, every tenant.
fn check_create(req: &v1::CreateTokenRequest, node: &Node) -> Result<NewToken, ServerError> {
    let limits = &node.config.limits;
    let role = parse_role(&req.role)?;
    let tenant = match (role, req.tenant.as_str(), req.all_tenants) {
        (_, t, true) if !t.is_empty() => {
            return Err(ServerError::InvalidArgument(format!(
                "give a tenant ({t:?}) or all_tenants, not both"
            )))
        }
        (Role::Admin, "", _) => None,
        (Role::Admin, t, false) => {
            return Err(ServerError::InvalidArgument(format!(
                "an admin token acts for every tenant: leave tenant {t:?} out"
            )))
        }
        (Role::User, "", _) => {
            return Err(ServerError::InvalidArgument(
                "a user token acts for one tenant: give its tenant".to_string(),
            ))
        }
        (Role::Agent, "", true) => None,
        (Role::Agent, "", false) => {
            return Err(ServerError::InvalidArgument(
                "an agent token needs a tenant, or all_tenants to run every tenant's tasks"
                    .to_string(),
            ))
        }
        (_, t, _) => {
            validate_name("tenant", t, limits)?;
            Some(t.to_string())
        }
    };
    if !req.name.is_empty() {
        validate_name("token name", &req.name, limits)?;
    }
    let ttl_ms = match req.ttl_ms {
        0 => None,
        ms if ms > MAX_TTL_MS => {
            return Err(ServerError::InvalidArgument(format!(
                "ttl_ms {ms} is over the limit of {MAX_TTL_MS} (3660 days)"
            )))
        }
        ms => Some(ms),
    };
    Ok(NewToken {
        role,
        tenant,
        name: req.name.clone(),
        ttl_ms,
    })
}

/// A token's record as the API shows it, as of `now_ms`.
pub fn token_info(id: &str, t: &TokenRecord, now_ms: u64) -> v1::TokenInfo {
    v1::TokenInfo {
        id: id.to_string(),
        name: t.name.clone(),
        role: t.role.as_str().to_string(),
        tenant: t.tenant.clone().unwrap_or_default(),
        created_ms: t.created_ms,
        expires_ms: t.expires_ms.unwrap_or(0),
        revoked_ms: t.revoked_ms.unwrap_or(0),
        created_by: t.created_by.clone(),
        active: t.active(now_ms),
    }
}

impl TokenService {
    /// FAILED_PRECONDITION below the cluster format version that holds tokens.
    fn check_version(&self) -> Result<(), ServerError> {
        self.node
            .check_format_version(&Command::RevokeToken { id: String::new() })
    }

    fn info(&self, id: &str) -> Result<v1::TokenInfo, ServerError> {
        let applied = self.node.state.read();
        let t =
            applied.state.access().token(id).ok_or_else(|| {
                ServerError::Internal(format!("token {id} missing after its entry"))
            })?;
        Ok(token_info(id, t, now_ms()))
    }
}

#[tonic::async_trait]
impl Tokens for TokenService {
    async fn create(
        &self,
        request: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        let new = check_create(request.get_ref(), &self.node)?;
        // Who created it, as the auth layer established the caller; empty
        // when the server checks neither tokens nor certificates.
        let created_by = request
            .extensions()
            .get::<Grant>()
            .map(|g| g.principal.id.clone())
            .unwrap_or_default();
        let token = Token::generate().map_err(|e| ServerError::Internal(e.to_string()))?;
        let record = TokenRecord {
            hash: token.hash(),
            name: new.name,
            role: new.role,
            tenant: new.tenant,
            created_ms: 0,
            expires_ms: new.ttl_ms.map(|ttl| now_ms().saturating_add(ttl)),
            created_by,
            revoked_ms: None,
        };
        let (resp, index) = self
            .node
            .propose(Command::CreateToken {
                id: token.id().to_string(),
                record,
                first_only: false,
            })
            .await?;
        if let CoreResponse::Rejected(r) = resp {
            return Err(ServerError::Rejected(r).into());
        }
        let info = self.info(token.id())?;
        tracing::info!(node_id = self.node.id, token_id = token.id(), role = %info.role,
            tenant = %info.tenant, log_index = index, "token created");
        Ok(Response::new(v1::CreateTokenResponse {
            token: token.reveal(),
            info: Some(info),
        }))
    }

    async fn list(
        &self,
        _request: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        self.node.linearizable().await?;
        self.check_version()?;
        let now = now_ms();
        let applied = self.node.state.read();
        let tokens = applied
            .state
            .access()
            .tokens()
            .map(|(id, t)| token_info(id, t, now))
            .collect();
        Ok(Response::new(v1::ListTokensResponse { tokens }))
    }

    async fn revoke(
        &self,
        request: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::TokenInfo>, Status> {
        let id = request.into_inner().id;
        if !token::is_id(&id) {
            return Err(ServerError::InvalidArgument(format!(
                "token id {:?} is not 16 lowercase hex digits (`tidal token list` shows ids)",
                id.chars().take(20).collect::<String>()
            ))
            .into());
        }
        let (resp, index) = self
            .node
            .propose(Command::RevokeToken { id: id.clone() })
            .await?;
        if let CoreResponse::Rejected(r) = resp {
            return Err(ServerError::Rejected(r).into());
        }
        // Agent sessions of the token close now, not at their next heartbeat.
        if let Some(l) = self.node.leadership() {
            l.notify(Event::TokenRevoked);
        }
        tracing::info!(
            node_id = self.node.id,
            token_id = %id,
            log_index = index,
            "token revoked"
        );
        Ok(Response::new(self.info(&id)?))
    }
}
