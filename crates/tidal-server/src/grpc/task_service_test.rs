//! Tests of the task service under a [`Grant`]: the tenant comes from the credential, the submitter is recorded, and another tenant's tasks are not found.

use tidal_core::access::{Role, ACCESS_VERSION};
use tidal_proto::v1::{self, tasks_server::Tasks};
use tonic::Code;

use super::TaskService;
use crate::auth::grant::Grant;
use crate::grpc::test_node::{grant, request, TestNode};

fn service(n: &TestNode) -> TaskService {
    TaskService {
        node: n.node.clone(),
        rates: Default::default(),
    }
}

fn spec(tenant: &str) -> v1::TaskSpec {
    v1::TaskSpec {
        task_type: "t2i".into(),
        tenant: tenant.into(),
        ..Default::default()
    }
}

fn alice() -> Grant {
    grant("alice", Role::User, Some("acme"), "00000000000000a1")
}

fn bob() -> Grant {
    grant("bob", Role::User, Some("globex"), "00000000000000b1")
}

fn root() -> Grant {
    grant("root", Role::Admin, None, "00000000000000ad")
}

async fn submit(
    s: &TaskService,
    specs: Vec<v1::TaskSpec>,
    g: Option<&Grant>,
) -> Vec<v1::SubmitResult> {
    s.submit(request(v1::SubmitRequest { tasks: specs }, g))
        .await
        .unwrap()
        .into_inner()
        .results
}

async fn submit_one(s: &TaskService, spec: v1::TaskSpec, g: Option<&Grant>) -> String {
    let r = submit(s, vec![spec], g).await.remove(0);
    assert_eq!(r.error, None, "{r:?}");
    r.id
}

async fn get(s: &TaskService, id: &str, g: Option<&Grant>) -> Result<v1::Task, tonic::Status> {
    let req = v1::GetTaskRequest {
        id: id.into(),
        stale: false,
    };
    s.get(request(req, g)).await.map(|r| r.into_inner())
}

async fn cancel(s: &TaskService, id: &str, g: Option<&Grant>) -> Result<v1::Task, tonic::Status> {
    let req = v1::CancelTaskRequest { id: id.into() };
    s.cancel(request(req, g)).await.map(|r| r.into_inner())
}

/// Every page of a listing with `limit`, followed through its cursor: the
/// ids, and the size of each page.
async fn list_all(s: &TaskService, limit: u32, g: Option<&Grant>) -> (Vec<String>, Vec<usize>) {
    let (mut ids, mut pages) = (Vec::new(), Vec::new());
    let mut after = String::new();
    loop {
        let req = v1::ListTasksRequest {
            limit,
            after_id: after.clone(),
            ..Default::default()
        };
        let page = s.list(request(req, g)).await.unwrap().into_inner();
        pages.push(page.tasks.len());
        ids.extend(page.tasks.into_iter().map(|t| t.id));
        if page.next_after_id.is_empty() {
            return (ids, pages);
        }
        after = page.next_after_id;
    }
}

fn user_info(id: &str, role: &str) -> Option<v1::UserInfo> {
    Some(v1::UserInfo {
        id: id.into(),
        role: role.into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_comes_from_the_credential_and_the_submitter_is_recorded() {
    let n = TestNode::start(None).await;
    assert_eq!(
        n.node.state.read().state.cluster_version(),
        tidal_core::FORMAT_VERSION_MAX
    );
    let s = service(&n);

    // A user bound to acme: an empty tenant becomes acme, acme stays, and
    // another tenant is refused for that item alone.
    let r = submit(
        &s,
        vec![spec(""), spec("acme"), spec("globex")],
        Some(&alice()),
    )
    .await;
    assert_eq!(r.len(), 3);
    for ok in &r[..2] {
        assert_eq!(ok.error, None, "{r:?}");
        let t = get(&s, &ok.id, Some(&alice())).await.unwrap();
        assert_eq!(t.spec.unwrap().tenant, "acme");
        assert_eq!(t.submitted_by, user_info("token:alice", "user"));
    }
    let denied = r[2].error.as_ref().expect("another tenant is refused");
    assert_eq!(denied.code, Code::PermissionDenied as i32, "{denied:?}");
    assert!(denied.message.contains("\"globex\""), "{denied:?}");
    assert!(denied.message.contains("token:alice"), "{denied:?}");
    assert!(r[2].id.is_empty());

    // An admin for every tenant keeps the body's tenant.
    let id = submit_one(&s, spec("globex"), Some(&root())).await;
    let t = get(&s, &id, None).await.unwrap();
    assert_eq!(t.spec.unwrap().tenant, "globex");
    assert_eq!(t.submitted_by, user_info("token:root", "admin"));

    // Without a grant, as before: the body's tenant, no submitter.
    let id = submit_one(&s, spec(""), None).await;
    let t = get(&s, &id, None).await.unwrap();
    assert_eq!(t.spec.unwrap().tenant, "");
    assert_eq!(t.submitted_by, None);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_task_is_not_found_and_cannot_be_cancelled() {
    let n = TestNode::start(None).await;
    let s = service(&n);
    let mine = submit_one(&s, spec(""), Some(&alice())).await;
    let theirs = submit_one(&s, spec(""), Some(&bob())).await;
    // An id that never existed, for the message of a missing task.
    let missing = "t0000009999";
    let absent = get(&s, missing, Some(&alice())).await.unwrap_err();
    assert_eq!(absent.code(), Code::NotFound);

    let hidden = get(&s, &theirs, Some(&alice())).await.unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    assert_eq!(
        hidden.message(),
        absent.message().replace(missing, &theirs),
        "the same answer as for a task that does not exist"
    );
    let absent = cancel(&s, missing, Some(&alice())).await.unwrap_err();
    let hidden = cancel(&s, &theirs, Some(&alice())).await.unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    assert_eq!(hidden.message(), absent.message().replace(missing, &theirs));
    // Bob's task was left alone.
    let t = get(&s, &theirs, Some(&bob())).await.unwrap();
    assert_eq!(t.state, v1::TaskState::Pending as i32);

    // Alice cancels her own; an admin and a caller without a grant see both.
    let t = cancel(&s, &mine, Some(&alice())).await.unwrap();
    assert_eq!(t.state, v1::TaskState::Cancelled as i32);
    for g in [Some(root()), None] {
        for id in [&mine, &theirs] {
            assert_eq!(&get(&s, id, g.as_ref()).await.unwrap().id, id);
        }
    }
    let t = cancel(&s, &theirs, Some(&root())).await.unwrap();
    assert_eq!(t.state, v1::TaskState::Cancelled as i32);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_shows_covered_tenants_and_pages_through_them() {
    let n = TestNode::start(None).await;
    let s = service(&n);
    let (mut acme, mut globex) = (Vec::new(), Vec::new());
    // Interleaved, so every page of one tenant skips the other's tasks.
    for _ in 0..5 {
        acme.push(submit_one(&s, spec(""), Some(&alice())).await);
        globex.push(submit_one(&s, spec(""), Some(&bob())).await);
        globex.push(submit_one(&s, spec(""), Some(&bob())).await);
    }
    for limit in [1, 2, 3, 100] {
        let (ids, pages) = list_all(&s, limit, Some(&alice())).await;
        assert_eq!(ids, acme, "limit {limit}, pages {pages:?}");
        assert!(pages.iter().all(|p| *p <= limit as usize), "{pages:?}");
        let (ids, _) = list_all(&s, limit, Some(&bob())).await;
        assert_eq!(ids, globex, "limit {limit}");
    }
    let (ids, _) = list_all(&s, 4, Some(&root())).await;
    assert_eq!(ids.len(), 15);
    let (ids, _) = list_all(&s, 4, None).await;
    assert_eq!(ids.len(), 15);
    // A tenant with no task lists nothing.
    let carol = grant("carol", Role::User, Some("initech"), "00000000000000c1");
    assert_eq!(list_all(&s, 2, Some(&carol)).await, (Vec::new(), vec![0]));
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_conflict_with_another_tenants_task_does_not_name_it() {
    let n = TestNode::start(None).await;
    let s = service(&n);
    let keyed = |tenant: &str| v1::TaskSpec {
        idempotency_key: "nightly".into(),
        ..spec(tenant)
    };
    let theirs = submit_one(&s, keyed(""), Some(&bob())).await;
    let r = submit(&s, vec![keyed("")], Some(&alice())).await.remove(0);
    let e = r.error.expect("the key is taken");
    assert_eq!(e.code, Code::AlreadyExists as i32);
    assert!(!e.message.contains(&theirs), "{e:?}");
    assert!(e.message.contains("another task"), "{e:?}");
    // Bob resending gets his task back; an admin's conflict names it.
    let again = submit(&s, vec![keyed("")], Some(&bob())).await.remove(0);
    assert_eq!((again.id.as_str(), again.existed), (theirs.as_str(), true));
    let r = submit(&s, vec![keyed("acme")], Some(&root()))
        .await
        .remove(0);
    assert!(r.error.unwrap().message.contains(&theirs));
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_access_version_tenants_are_scoped_but_no_submitter_is_recorded() {
    let n = TestNode::start(Some(ACCESS_VERSION - 1)).await;
    assert_eq!(
        n.node.state.read().state.cluster_version(),
        ACCESS_VERSION - 1
    );
    let s = service(&n);
    let id = submit_one(&s, spec(""), Some(&alice())).await;
    let t = get(&s, &id, Some(&alice())).await.unwrap();
    assert_eq!(t.spec.unwrap().tenant, "acme");
    assert_eq!(t.submitted_by, None);
    let hidden = get(&s, &id, Some(&bob())).await.unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    n.stop().await;
}
