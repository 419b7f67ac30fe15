//! `tidal.v1.Tenants`: set a tenant's limits; list tenants with their usage against them (a caller bound to one tenant sees its own).

use std::sync::Arc;

use tidal_core::access::{Access, SubmitRate, TenantLimits, Usage, MAX_TENANT_WEIGHT};
use tidal_core::command::{Command, Response as CoreResponse};
use tidal_core::limits::validate_name;
use tidal_proto::v1::{self, tenants_server::Tenants};
use tonic::{Request, Response, Status};

use crate::auth::grant::Grant;
use crate::error::ServerError;
use crate::leader::engine::{Event, Work};
use crate::node::Node;

pub struct TenantService {
    pub node: Arc<Node>,
}

/// The core's limits from the request's; a missing message is no limit.
pub fn limits_from(l: Option<v1::TenantLimits>) -> Result<TenantLimits, ServerError> {
    let l = l.unwrap_or_default();
    if l.weight > MAX_TENANT_WEIGHT {
        return Err(ServerError::InvalidArgument(format!(
            "tenant weight {} is out of range: use 1..={MAX_TENANT_WEIGHT}",
            l.weight
        )));
    }
    if l.submit_rate_per_s == 0 && l.submit_burst != 0 {
        return Err(ServerError::InvalidArgument(format!(
            "a submit burst of {} needs a submit rate",
            l.submit_burst
        )));
    }
    let submit_rate = (l.submit_rate_per_s > 0).then_some(SubmitRate {
        per_s: l.submit_rate_per_s,
        burst: if l.submit_burst == 0 {
            l.submit_rate_per_s
        } else {
            l.submit_burst
        },
    });
    Ok(TenantLimits {
        max_pending: l.max_pending,
        max_running_slots: l.max_running_slots,
        max_gpus: l.max_gpus,
        submit_rate,
        weight: l.weight.max(1),
    })
}

/// The wire form of a tenant's limits (absent: none set) and usage.
pub fn tenant_to(name: &str, limits: Option<&TenantLimits>, usage: Usage) -> v1::Tenant {
    v1::Tenant {
        name: name.to_string(),
        limits: Some(match limits {
            Some(l) => v1::TenantLimits {
                max_pending: l.max_pending,
                max_running_slots: l.max_running_slots,
                max_gpus: l.max_gpus,
                submit_rate_per_s: l.submit_rate.map_or(0, |r| r.per_s),
                submit_burst: l.submit_rate.map_or(0, |r| r.burst),
                weight: l.weight,
            },
            None => v1::TenantLimits {
                weight: TenantLimits::default().weight,
                ..v1::TenantLimits::default()
            },
        }),
        limits_set: limits.is_some(),
        pending: usage.pending,
        running_slots: usage.running_slots,
        running_gpus: usage.running_gpus,
        running_gpu_milli: usage.running_gpu_milli,
    }
}

/// Every tenant with limits or usage, by name.
pub fn tenants_to(access: &Access) -> Vec<v1::Tenant> {
    let mut names: Vec<&String> = access
        .tenants()
        .map(|(n, _)| n)
        .chain(access.usages().map(|(n, _)| n))
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| tenant_to(n, access.tenant(n), access.usage(n)))
        .collect()
}

#[tonic::async_trait]
impl Tenants for TenantService {
    async fn set(
        &self,
        request: Request<v1::SetTenantRequest>,
    ) -> Result<Response<v1::Tenant>, Status> {
        let req = request.into_inner();
        validate_name("tenant", &req.name, &self.node.config.limits).map_err(ServerError::from)?;
        let limits = limits_from(req.limits)?;
        let (resp, _) = self
            .node
            .propose(Command::SetTenant {
                name: req.name.clone(),
                limits,
            })
            .await?;
        if let CoreResponse::Rejected(r) = resp {
            return Err(ServerError::Rejected(r).into());
        }
        // A raised limit frees capacity for waiting tasks.
        if let Some(l) = self.node.leadership() {
            l.notify(Event::Work(Work::Freed));
        }
        let applied = self.node.state.read();
        let access = applied.state.access();
        Ok(Response::new(tenant_to(
            &req.name,
            access.tenant(&req.name),
            access.usage(&req.name),
        )))
    }

    async fn list(
        &self,
        request: Request<v1::ListTenantsRequest>,
    ) -> Result<Response<v1::ListTenantsResponse>, Status> {
        let scope = request
            .extensions()
            .get::<Grant>()
            .and_then(|g| g.tenant.clone());
        self.node.linearizable().await?;
        let applied = self.node.state.read();
        let access = applied.state.access();
        let tenants = match scope {
            // A caller bound to one tenant sees that tenant's row only.
            Some(t) => vec![tenant_to(&t, access.tenant(&t), access.usage(&t))],
            None => tenants_to(access),
        };
        Ok(Response::new(v1::ListTenantsResponse { tenants }))
    }
}

#[cfg(test)]
#[path = "tenant_service_test.rs"]
mod tests;
