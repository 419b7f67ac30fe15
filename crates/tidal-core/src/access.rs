//! Tokens with roles, tenants and who submitted what, in the replicated state (cluster format version 3).
//!
//! The state holds a token's hash, never its secret: the server hashes what
//! a caller presents and looks the token up here by its id. Roles, tenants
//! and expiry are data; what each role may call is the server's policy.
//! Apply keeps three rules every replica enforces alike:
//!
//! - `CreateToken { first_only: true }` (the bootstrap token) is refused
//!   once any token was ever created, so revoking it is final;
//! - the last active admin token cannot be revoked ([`Rejection::LastAdmin`]);
//! - an agent id registered under one active token cannot be taken over by
//!   another ([`Rejection::AgentOwned`]).
//!
//! [`Usage`] per tenant is derived from the tasks and kept in step by apply;
//! apply refuses what would pass a tenant's limits ([`quota`]).

use crate::command::{ApplyCtx, Rejection, Response};
use crate::model::{AgentId, AgentSpec, TaskId, TaskSpec};
use crate::state::State;

pub mod quota;
pub mod types;
pub use types::{
    tenant_of, Access, Principal, Role, SubmitRate, TenantLimits, TokenId, TokenRecord, Usage,
    ACCESS_VERSION, DEFAULT_TENANT,
};

/// Highest tenant weight `SetTenant` accepts.
pub const MAX_TENANT_WEIGHT: u32 = 1000;

// ---- reads ----

impl Access {
    pub fn token(&self, id: &str) -> Option<&TokenRecord> {
        self.tokens.get(id)
    }

    /// Every token ever created (revoked ones too), by id.
    pub fn tokens(&self) -> impl Iterator<Item = (&TokenId, &TokenRecord)> + '_ {
        self.tokens.iter()
    }

    /// Whether token `id` exists, is not revoked and has not expired at
    /// `now_ms`.
    pub fn token_active(&self, id: &str, now_ms: u64) -> bool {
        self.tokens.get(id).is_some_and(|t| t.active(now_ms))
    }

    /// How many tokens were ever created.
    pub fn tokens_created(&self) -> u64 {
        self.tokens_created
    }

    pub fn tenant(&self, name: &str) -> Option<&TenantLimits> {
        self.tenants.get(name)
    }

    /// Tenants with limits set, by name.
    pub fn tenants(&self) -> impl Iterator<Item = (&String, &TenantLimits)> + '_ {
        self.tenants.iter()
    }

    /// What a tenant's tasks use now (zero for one with nothing in use).
    pub fn usage(&self, tenant: &str) -> Usage {
        self.usage.get(tenant).copied().unwrap_or_default()
    }

    /// Tenants with anything in use, by name.
    pub fn usages(&self) -> impl Iterator<Item = (&String, &Usage)> + '_ {
        self.usage.iter()
    }

    /// Who submitted a task, if it was submitted with `SubmitAs`.
    pub fn submitted_by(&self, task: TaskId) -> Option<&Principal> {
        self.submitted_by.get(&task)
    }

    /// The token an agent registered with through `RegisterAgentAs`.
    pub fn agent_token(&self, agent: &str) -> Option<&TokenId> {
        self.agent_tokens.get(agent)
    }

    /// The one tenant an agent serves: that of the token it registered with
    /// through `RegisterAgentAs`, if that token is bound to a tenant (a
    /// revoked or expired token still binds it). `None`: every tenant.
    /// Placement reads it at planning and at apply alike
    /// ([`crate::dispatch::eligibility::serves`]).
    pub fn agent_tenant(&self, agent: &str) -> Option<&str> {
        let token = self.agent_tokens.get(agent)?;
        self.tokens.get(token)?.tenant.as_deref()
    }

    /// Active admin tokens at `now_ms` other than `except`.
    fn other_active_admins(&self, except: &str, now_ms: u64) -> usize {
        self.tokens
            .iter()
            .filter(|(id, t)| id.as_str() != except && t.role == Role::Admin && t.active(now_ms))
            .count()
    }
}

impl State {
    /// Tokens, tenants and who submitted what.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// Sets the access state of a state read from a snapshot (tidal-store
    /// keeps it beside the state); its usage is the one derived from this
    /// state's tasks. Not a replicated change.
    pub fn restore_access(&mut self, access: Access) {
        let usage = std::mem::take(&mut self.access.usage);
        self.access = Access { usage, ..access };
    }
}

// ---- apply ----

impl State {
    /// `CreateToken`: a new token under a new id; its creation time is the
    /// entry's and it starts unrevoked.
    pub(crate) fn create_token(
        &mut self,
        id: TokenId,
        mut record: TokenRecord,
        first_only: bool,
        ctx: ApplyCtx,
    ) -> Response {
        if first_only && self.access.tokens_created > 0 {
            return Response::Rejected(Rejection::Invalid(format!(
                "a first token is created only while none ever was; {} were",
                self.access.tokens_created
            )));
        }
        if id.is_empty() {
            return Response::Rejected(Rejection::Invalid("token id \"\" is empty".to_string()));
        }
        if self.access.tokens.contains_key(&id) {
            return Response::Rejected(Rejection::Invalid(format!(
                "token id {id} is already taken (ids are never reused)"
            )));
        }
        if record.tenant.as_deref() == Some("") {
            return Response::Rejected(Rejection::Invalid(
                "a token's tenant \"\" is empty (None means every tenant)".to_string(),
            ));
        }
        if record.expires_ms.is_some_and(|e| e <= ctx.time_ms) {
            return Response::Rejected(Rejection::Invalid(format!(
                "token {id} would expire at {} ms, not after the entry's time {} ms",
                record.expires_ms.unwrap_or_default(),
                ctx.time_ms
            )));
        }
        record.created_ms = ctx.time_ms;
        record.revoked_ms = None;
        self.access.tokens.insert(id, record);
        self.access.tokens_created += 1;
        Response::Ok
    }

    /// `RevokeToken`: the token stops working from this entry on; revoking
    /// a revoked token changes nothing.
    pub(crate) fn revoke_token(&mut self, id: TokenId, ctx: ApplyCtx) -> Response {
        let Some(record) = self.access.tokens.get(&id) else {
            return Response::Rejected(Rejection::TokenNotFound(id));
        };
        if record.revoked_ms.is_some() {
            return Response::Ok;
        }
        if record.role == Role::Admin
            && record.active(ctx.time_ms)
            && self.access.other_active_admins(&id, ctx.time_ms) == 0
        {
            return Response::Rejected(Rejection::LastAdmin(id));
        }
        if let Some(record) = self.access.tokens.get_mut(&id) {
            record.revoked_ms = Some(ctx.time_ms);
        }
        Response::Ok
    }

    /// `SetTenant`: sets (or replaces) a tenant's limits. Lowering a limit
    /// takes nothing away; it stops increases.
    pub(crate) fn set_tenant(&mut self, name: String, mut limits: TenantLimits) -> Response {
        if name.is_empty() {
            return Response::Rejected(Rejection::Invalid("tenant \"\" is empty".to_string()));
        }
        if limits.weight == 0 {
            limits.weight = 1;
        }
        if limits.weight > MAX_TENANT_WEIGHT {
            return Response::Rejected(Rejection::Invalid(format!(
                "tenant weight {} is out of range: use 1..={MAX_TENANT_WEIGHT}",
                limits.weight
            )));
        }
        if limits.submit_rate.is_some_and(|r| r.per_s == 0) {
            return Response::Rejected(Rejection::Invalid(format!(
                "tenant {name}: a submit rate of 0 per second admits nothing"
            )));
        }
        self.access.tenants.insert(name, limits);
        Response::Ok
    }

    /// `RemoveTenant`: the tenant has no limits any more (its tasks and
    /// tokens stay).
    pub(crate) fn remove_tenant(&mut self, name: &str) -> Response {
        match self.access.tenants.remove(name) {
            Some(_) => Response::Ok,
            None => Response::Rejected(Rejection::TenantNotFound(name.to_string())),
        }
    }

    /// `SubmitAs`: `SubmitPlaced`, and each new task records who submitted
    /// it (a repeated idempotency key keeps the first submitter).
    pub(crate) fn submit_as(
        &mut self,
        specs: Vec<TaskSpec>,
        place: Vec<(u32, AgentId)>,
        by: Vec<Principal>,
        ctx: ApplyCtx,
    ) -> Response {
        if by.len() != specs.len() {
            return Response::Rejected(Rejection::Invalid(format!(
                "{} principals for {} tasks",
                by.len(),
                specs.len()
            )));
        }
        let response = self.submit_placed(specs, place, ctx);
        if let Response::SubmittedPlaced { submitted, .. } = &response {
            for (result, principal) in submitted.iter().zip(by) {
                if let Ok(s) = result {
                    if !s.existed {
                        self.access.submitted_by.insert(s.id, principal);
                    }
                }
            }
        }
        response
    }

    /// `RegisterAgentAs`: `RegisterAgent` by an agent that presented
    /// `token`, which must be active. An agent id registered under another
    /// token that is still active is refused: one credential cannot take
    /// over another's agent.
    pub(crate) fn register_agent_as(
        &mut self,
        spec: AgentSpec,
        token: TokenId,
        ctx: ApplyCtx,
    ) -> Response {
        match self.access.tokens.get(&token) {
            None => return Response::Rejected(Rejection::TokenNotFound(token)),
            Some(t) if !t.active(ctx.time_ms) => {
                return Response::Rejected(Rejection::TokenInactive(token))
            }
            Some(_) => {}
        }
        if let Some(owner) = self.access.agent_tokens.get(&spec.id) {
            if *owner != token && self.access.token_active(owner, ctx.time_ms) {
                return Response::Rejected(Rejection::AgentOwned {
                    agent: spec.id,
                    token: owner.clone(),
                });
            }
        }
        let agent = spec.id.clone();
        let response = self.register_agent(spec, ctx);
        if response == Response::Ok {
            self.access.agent_tokens.insert(agent, token);
        }
        response
    }
}

// ---- invariants ----

impl State {
    /// The access state's invariants: `usage` equals its recomputation from
    /// the tasks; every `submitted_by` key is a task; every `agent_tokens`
    /// value names an existing token; `tokens_created` counts at least the
    /// tokens there are.
    pub(crate) fn check_access(&self) -> Result<(), String> {
        let access = &self.access;
        let placement = &self.placement;
        let want = types::usage_index(&self.tasks, |id, spec| placement.held_gpu_milli(id, spec));
        if access.usage != want {
            return Err(format!(
                "usage {:?} differs from its recomputation {want:?}",
                access.usage
            ));
        }
        if let Some(id) = access
            .submitted_by
            .keys()
            .find(|id| !self.tasks.contains_key(*id))
        {
            return Err(format!("submitted_by names task {id}, which is gone"));
        }
        if let Some((agent, token)) = access
            .agent_tokens
            .iter()
            .find(|(_, t)| !access.tokens.contains_key(*t))
        {
            return Err(format!(
                "agent {agent} registered with token {token}, which does not exist"
            ));
        }
        if (access.tokens.len() as u64) > access.tokens_created {
            return Err(format!(
                "{} tokens, but only {} were ever created",
                access.tokens.len(),
                access.tokens_created
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "access_test.rs"]
mod tests;
