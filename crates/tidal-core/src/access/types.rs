//! The access state's types: tokens (hashes only), roles, tenants' limits, who submitted what, and the derived usage per tenant.

use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::collections::Map;
use crate::model::{AgentId, Task, TaskId, TaskSpec};

/// The cluster format version that adds the access state: its commands need
/// it, snapshots carry an access section from it on, and the digest covers
/// the access state from it on.
pub const ACCESS_VERSION: u8 = 3;

/// The tenant of a task submitted without one.
pub const DEFAULT_TENANT: &str = "default";

/// A token's public id: what `token list` and `token revoke` show, and the
/// key of its record. The secret never reaches the state, only its hash.
pub type TokenId = String;

/// What a token may do (the server's policy reads it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    Admin,
    User,
    Agent,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Agent => "agent",
        }
    }
}

/// The caller's identity as recorded with what it did: seed 001's userInfo.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Principal {
    /// `token:<name or id>` or `cert:<name>`, chosen by the server.
    pub id: String,
    pub role: Role,
}

/// One token as the state holds it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The hash of the token's secret (the server's choice of hash); the
    /// secret itself is never stored.
    pub hash: [u8; 32],
    pub name: String,
    pub role: Role,
    /// The one tenant the token acts for; `None`: every tenant.
    pub tenant: Option<String>,
    /// Set at apply to the entry's time.
    pub created_ms: u64,
    /// On the leader's clock; `None`: never expires.
    pub expires_ms: Option<u64>,
    /// The principal id of whoever created it.
    pub created_by: String,
    /// Set by `RevokeToken`; `None` at creation.
    pub revoked_ms: Option<u64>,
}

impl TokenRecord {
    /// Not revoked and not expired at `now_ms`.
    pub fn active(&self, now_ms: u64) -> bool {
        self.revoked_ms.is_none() && self.expires_ms.is_none_or(|e| now_ms < e)
    }
}

/// A tenant's submit rate: a token bucket refilled at `per_s` a second that
/// holds up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SubmitRate {
    pub per_s: u32,
    pub burst: u32,
}

/// A tenant's limits; `None`: no limit. A tenant that was never set has
/// none.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TenantLimits {
    /// Tasks waiting (Pending) at once.
    pub max_pending: Option<u64>,
    /// Slots of the tasks agents hold (Assigned or Running) at once.
    pub max_running_slots: Option<u64>,
    /// GPUs of the tasks agents hold at once, weighted by model (from
    /// cluster format version 5; an A100 counts 1, an A40 0.5 by default):
    /// what the tenant's held GPUs weigh, [`Usage::running_gpu_milli`],
    /// stays at or under this many thousand thousandths.
    pub max_gpus: Option<u64>,
    pub submit_rate: Option<SubmitRate>,
    /// The tenant's share of a queue against other tenants (at least 1).
    pub weight: u32,
}

impl Default for TenantLimits {
    fn default() -> Self {
        TenantLimits {
            max_pending: None,
            max_running_slots: None,
            max_gpus: None,
            submit_rate: None,
            weight: 1,
        }
    }
}

/// What one tenant's tasks use now: derived from the tasks, never encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Usage {
    /// Its Pending tasks.
    pub pending: u64,
    /// Slots of its tasks that an agent holds (Assigned or Running).
    pub running_slots: u64,
    /// GPUs of those tasks.
    pub running_gpus: u64,
    /// What those GPUs weigh, in thousandths of a weight-1 GPU: the weight
    /// recorded with the devices each task took (version 5), else 1000 per
    /// GPU. What max-gpus and the dominant share count.
    pub running_gpu_milli: u64,
}

impl Usage {
    fn is_zero(&self) -> bool {
        *self == Usage::default()
    }
}

/// Tokens, tenants and who submitted what: the part of the state that
/// cluster format version 3 adds.
///
/// Not part of the state's own encoding: tidal-store writes it after the
/// state in snapshots of version 3 and later. `usage` is derived from the
/// tasks, not encoded, and rebuilt when a state is decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    pub(crate) tokens: Map<TokenId, TokenRecord>,
    pub(crate) tenants: Map<String, TenantLimits>,
    /// Who submitted each task submitted with `SubmitAs`; removed with the
    /// task by `Expire`.
    pub(crate) submitted_by: Map<TaskId, Principal>,
    /// The token each agent registered with through `RegisterAgentAs`.
    pub(crate) agent_tokens: Map<AgentId, TokenId>,
    /// How many tokens were ever created (revoked ones stay in `tokens`).
    pub(crate) tokens_created: u64,
    /// Per tenant ([`tenant_of`]) with anything in use.
    #[serde(skip)]
    pub(crate) usage: Map<String, Usage>,
}

/// The replicated fields, in their encoded order; `usage` is derived.
impl Hash for Access {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let Access {
            tokens,
            tenants,
            submitted_by,
            agent_tokens,
            tokens_created,
            usage: _,
        } = self;
        tokens.hash(h);
        tenants.hash(h);
        submitted_by.hash(h);
        agent_tokens.hash(h);
        tokens_created.hash(h);
    }
}

/// The tenant a task counts against: its own, or [`DEFAULT_TENANT`].
pub fn tenant_of(spec: &TaskSpec) -> &str {
    if spec.tenant.is_empty() {
        DEFAULT_TENANT
    } else {
        &spec.tenant
    }
}

/// A change of what a task counts in its tenant's [`Usage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tally {
    /// It became Pending.
    AddPending,
    /// It stopped being Pending.
    SubPending,
    /// An agent took hold of it (its capacity is taken); its GPUs weigh
    /// this many thousandths.
    AddHeld(u64),
    /// Its agent let go of it; its GPUs weighed this many thousandths.
    SubHeld(u64),
}

/// Keeps `usage` in step with one task's change. Called where the pending
/// index and the agents' holds change, which move with the same states.
pub(crate) fn tally(usage: &mut Map<String, Usage>, spec: &TaskSpec, change: Tally) {
    let tenant = tenant_of(spec);
    if usage.get(tenant).is_none() {
        usage.insert(tenant.to_string(), Usage::default());
    }
    let u = usage.get_mut(tenant).expect("inserted above");
    let (slots, gpus) = (u64::from(spec.slots), u64::from(spec.gpus));
    match change {
        Tally::AddPending => u.pending += 1,
        Tally::SubPending => u.pending = u.pending.saturating_sub(1),
        Tally::AddHeld(milli) => {
            u.running_slots += slots;
            u.running_gpus += gpus;
            u.running_gpu_milli += milli;
        }
        Tally::SubHeld(milli) => {
            u.running_slots = u.running_slots.saturating_sub(slots);
            u.running_gpus = u.running_gpus.saturating_sub(gpus);
            u.running_gpu_milli = u.running_gpu_milli.saturating_sub(milli);
        }
    }
    if u.is_zero() {
        usage.remove(tenant);
    }
}

/// The usage of `tasks`, recomputed: what `Access::usage` must equal.
/// `gpu_milli`: what a held task's GPUs weigh (`State::held_gpu_milli`).
pub(crate) fn usage_index(
    tasks: &Map<TaskId, Task>,
    gpu_milli: impl Fn(TaskId, &TaskSpec) -> u64,
) -> Map<String, Usage> {
    let mut usage = Map::new();
    for task in tasks.values() {
        if task.state == crate::model::TaskState::Pending {
            tally(&mut usage, &task.spec, Tally::AddPending);
        } else if task.state.holder().is_some() {
            let milli = gpu_milli(task.id, &task.spec);
            tally(&mut usage, &task.spec, Tally::AddHeld(milli));
        }
    }
    usage
}
