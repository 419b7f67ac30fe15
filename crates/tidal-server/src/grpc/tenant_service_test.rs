//! Tests of the tenant listing under a [`crate::auth::grant::Grant`]: a caller bound to one tenant sees its own row only.

use tidal_core::access::{Role, TenantLimits};
use tidal_core::command::{Command, Response};
use tidal_proto::v1::{self, tenants_server::Tenants};

use super::TenantService;
use crate::grpc::test_node::{grant, request, TestNode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_bound_caller_lists_its_own_row_only() {
    let n = TestNode::start(None).await;
    for name in ["acme", "globex"] {
        let limits = TenantLimits {
            max_pending: Some(10),
            ..TenantLimits::default()
        };
        let set = Command::SetTenant {
            name: name.into(),
            limits,
        };
        assert_eq!(n.propose(set).await, Response::Ok);
    }
    let s = TenantService {
        node: n.node.clone(),
    };
    let names = |r: v1::ListTenantsResponse| -> Vec<String> {
        r.tenants.into_iter().map(|t| t.name).collect()
    };
    let list = |g| s.list(request(v1::ListTenantsRequest::default(), g));

    let acme = grant("alice", Role::User, Some("acme"), "00000000000000a1");
    let r = list(Some(&acme)).await.unwrap().into_inner();
    assert_eq!(r.tenants.len(), 1);
    assert_eq!(r.tenants[0].name, "acme");
    assert!(r.tenants[0].limits_set);
    assert_eq!(r.tenants[0].limits.as_ref().unwrap().max_pending, Some(10));

    // A tenant with no limits and nothing in use: its row, of zeros.
    let carol = grant("carol", Role::User, Some("initech"), "00000000000000c1");
    let r = list(Some(&carol)).await.unwrap().into_inner();
    assert_eq!(r.tenants.len(), 1);
    assert_eq!(
        (r.tenants[0].name.as_str(), r.tenants[0].limits_set),
        ("initech", false)
    );
    assert_eq!(r.tenants[0].pending, 0);

    let root = grant("root", Role::Admin, None, "00000000000000ad");
    assert_eq!(
        names(list(Some(&root)).await.unwrap().into_inner()),
        ["acme", "globex"]
    );
    assert_eq!(
        names(list(None).await.unwrap().into_inner()),
        ["acme", "globex"]
    );
    n.stop().await;
}
