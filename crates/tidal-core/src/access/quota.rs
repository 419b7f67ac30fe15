//! Tenants' quotas as apply and the dispatcher check them: max-pending at submit, max-running-slots and max-gpus at assignment.
//!
//! Max-gpus counts weighted GPUs (cluster format version 5): what the
//! devices a task takes weigh by model (`[placement] gpu_weights`, A100 1,
//! A40 0.5 by default), in thousandths; a GPU held by count (before
//! version 5) weighs 1. A tenant with `--max-gpus 4` runs four A100s, or
//! eight A40s, at once.
//!
//! Every check reads the tenant's [`Usage`] (derived from the tasks, the
//! same on every replica) and its [`TenantLimits`], so every replica
//! refuses alike. A check only stops an increase: lowering a limit never
//! takes anything away, and a task an agent lost (down, stopped, regranted
//! elsewhere) goes back to Pending whatever max-pending says, because it
//! was admitted already. A tenant never set has no limits; a task without
//! a tenant counts under [`DEFAULT_TENANT`](super::DEFAULT_TENANT).

use super::types::{tenant_of, Access, TenantLimits, Usage};
use crate::command::Rejection;
use crate::model::TaskSpec;

/// The limit names, as `tidal tenant set` spells their flags.
pub const MAX_PENDING: &str = "max-pending";
pub const MAX_RUNNING_SLOTS: &str = "max-running-slots";
pub const MAX_GPUS: &str = "max-gpus";

/// A limit one more task would pass: its name and its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Over {
    pub limit: &'static str,
    pub max: u64,
}

impl Over {
    /// The rejection apply answers with, naming the tenant, the limit and
    /// the flag that raises it.
    pub fn rejection(self, tenant: &str) -> Rejection {
        Rejection::OverQuota {
            tenant: tenant.to_string(),
            limit: self.limit.to_string(),
            max: self.max,
        }
    }
}

/// Whether one more Pending task stays within `limits` at `usage`.
pub fn pending_over(limits: &TenantLimits, usage: &Usage) -> Option<Over> {
    let max = limits.max_pending?;
    (usage.pending >= max).then_some(Over {
        limit: MAX_PENDING,
        max,
    })
}

/// Whether an agent taking `spec`, whose GPUs there weigh `gpu_milli`
/// thousandths, keeps its tenant within `limits`, when its tasks already
/// hold `slots` slots and GPUs weighing `held_milli`.
pub fn running_over(
    limits: &TenantLimits,
    (slots, held_milli): (u64, u64),
    spec: &TaskSpec,
    gpu_milli: u64,
) -> Option<Over> {
    if let Some(max) = limits.max_running_slots {
        if slots.saturating_add(u64::from(spec.slots)) > max {
            return Some(Over {
                limit: MAX_RUNNING_SLOTS,
                max,
            });
        }
    }
    if let Some(max) = limits.max_gpus {
        if gpu_milli > 0 && held_milli.saturating_add(gpu_milli) > max.saturating_mul(1000) {
            return Some(Over {
                limit: MAX_GPUS,
                max,
            });
        }
    }
    None
}

impl TenantLimits {
    /// Whether a running limit (slots or GPUs) is set.
    pub fn limits_running(&self) -> bool {
        self.max_running_slots.is_some() || self.max_gpus.is_some()
    }
}

impl Access {
    /// Submit: a new task of `spec`'s tenant is refused at its max-pending.
    pub(crate) fn admit_pending(&self, spec: &TaskSpec) -> Result<(), Rejection> {
        let tenant = tenant_of(spec);
        match self.tenants.get(tenant) {
            Some(limits) => match pending_over(limits, &self.usage(tenant)) {
                Some(over) => Err(over.rejection(tenant)),
                None => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Assignment: an agent taking `spec`, whose GPUs there weigh
    /// `gpu_milli` thousandths, is refused when its tenant would pass
    /// max-running-slots or max-gpus.
    pub fn admit_running(&self, spec: &TaskSpec, gpu_milli: u64) -> Result<(), Rejection> {
        let tenant = tenant_of(spec);
        let Some(limits) = self.tenants.get(tenant) else {
            return Ok(());
        };
        let u = self.usage(tenant);
        match running_over(
            limits,
            (u.running_slots, u.running_gpu_milli),
            spec,
            gpu_milli,
        ) {
            Some(over) => Err(over.rejection(tenant)),
            None => Ok(()),
        }
    }

    /// Whether any tenant has a running limit: the dispatcher's fast path
    /// skips quota bookkeeping when none has.
    pub fn any_running_limit(&self) -> bool {
        self.tenants.values().any(TenantLimits::limits_running)
    }
}

#[cfg(test)]
#[path = "quota_test.rs"]
mod tests;
