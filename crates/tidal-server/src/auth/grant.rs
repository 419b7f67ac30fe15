//! What the auth layer established about a request's caller, carried in the request's extensions for the handlers.

use tidal_core::access::{Principal, Role, TokenId};

/// Who a request acts as and for which tenants.
///
/// The auth layer (`grpc/auth_layer.rs`) inserts one into a request's
/// extensions when it has established the caller: from a token under
/// `--auth tokens`, or from the client certificate under TLS. A request
/// without one comes from a server that checks neither (`--auth none`
/// without TLS): handlers then behave as they always have, with no tenant
/// scoping and no recorded submitter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Recorded with what the caller does (seed 001's userInfo).
    pub principal: Principal,
    /// The token the request presented, if it was a token that decided.
    pub token: Option<TokenId>,
    /// The one tenant the caller acts for; `None`: every tenant (an admin,
    /// or a token created with `--all-tenants`).
    pub tenant: Option<String>,
}

impl Grant {
    /// Whether the caller may see and act on a task of `tenant` (the task's
    /// tenant as `tidal_core::access::tenant_of` names it).
    pub fn covers(&self, tenant: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
    }

    pub fn role(&self) -> Role {
        self.principal.role
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(tenant: Option<&str>) -> Grant {
        Grant {
            principal: Principal {
                id: "token:ci".into(),
                role: Role::User,
            },
            token: Some("0123456789abcdef".into()),
            tenant: tenant.map(str::to_string),
        }
    }

    #[test]
    fn a_tenant_bound_grant_covers_its_tenant_only() {
        assert!(grant(Some("acme")).covers("acme"));
        assert!(!grant(Some("acme")).covers("globex"));
        assert!(!grant(Some("acme")).covers("default"));
        assert!(grant(None).covers("acme"));
        assert!(grant(None).covers("default"));
        assert_eq!(grant(None).role(), Role::User);
    }
}
