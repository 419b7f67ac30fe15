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

// ---- lifecycle (cluster format version 4) ----

/// Fails task `id`'s current attempt on agent `a1` (registered and assigned
/// here, as the leader would), exiting 3.
async fn fail_attempt(n: &TestNode, id: &str) {
    use tidal_core::command::{Command, Finished};
    use tidal_core::model::{AgentSpec, Outcome};
    let id: tidal_core::model::TaskId = id.parse().unwrap();
    n.propose(Command::RegisterAgent(AgentSpec {
        id: "a1".into(),
        dc: "dc1".into(),
        task_types: ["t2i".to_string()].into(),
        slots: 4,
        weight: 1,
        ..Default::default()
    }))
    .await;
    n.propose(Command::Assign(vec![(id, "a1".into())])).await;
    let token = {
        let applied = n.node.state.read();
        applied.state.task(id).unwrap().state.holder().unwrap().1
    };
    n.propose(Command::Finished(vec![Finished {
        task: id,
        token,
        outcome: Outcome {
            success: false,
            result: vec![],
            error: "exit 3".into(),
            exit_code: 3,
        },
        timed_out: false,
    }]))
    .await;
}

async fn replay(
    s: &TaskService,
    req: v1::ReplayRequest,
    g: Option<&Grant>,
) -> Result<v1::ReplayResponse, tonic::Status> {
    s.replay(request(req, g)).await.map(|r| r.into_inner())
}

fn with_options(tenant: &str) -> v1::TaskSpec {
    v1::TaskSpec {
        deadline_ms: 4_000_000_000_000,
        on_deadline: v1::OnDeadline::Fail as i32,
        max_run_ms: 30_000,
        retry_backoff_base_ms: 200,
        retry_backoff_max_ms: 5_000,
        preemptible: Some(false),
        suspendable: true,
        preempt_notice: v1::PreemptNotice::File as i32,
        preempt_grace_ms: 2_000,
        ..spec(tenant)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_are_kept_and_bad_ones_refused_per_item() {
    let n = TestNode::start(None).await;
    let s = service(&n);
    let id = submit_one(&s, with_options(""), None).await;
    let t = get(&s, &id, None).await.unwrap();
    let got = t.spec.clone().unwrap();
    let want = with_options("default");
    assert_eq!(
        (
            got.deadline_ms,
            got.on_deadline,
            got.max_run_ms,
            got.retry_backoff_base_ms,
            got.retry_backoff_max_ms,
            got.preemptible,
            got.suspendable,
            got.preempt_notice,
            got.preempt_grace_ms
        ),
        (
            want.deadline_ms,
            want.on_deadline,
            want.max_run_ms,
            want.retry_backoff_base_ms,
            want.retry_backoff_max_ms,
            want.preemptible,
            want.suspendable,
            want.preempt_notice,
            want.preempt_grace_ms
        )
    );
    assert_eq!(t.attempts_left, 3);
    assert!(t.attempts.is_empty() && !t.dead);

    let bad = [
        (
            v1::TaskSpec {
                retry_backoff_base_ms: 500,
                retry_backoff_max_ms: 100,
                ..spec("")
            },
            "below its base",
        ),
        (
            v1::TaskSpec {
                preempt_grace_ms: 600_001,
                ..spec("")
            },
            "preempt grace",
        ),
        (
            v1::TaskSpec {
                on_deadline: 7,
                ..spec("")
            },
            "on_deadline 7",
        ),
        (
            v1::TaskSpec {
                preempt_notice: 9,
                ..spec("")
            },
            "preempt_notice 9",
        ),
    ];
    let mut specs: Vec<v1::TaskSpec> = bad.iter().map(|(s, _)| s.clone()).collect();
    specs.push(spec(""));
    let results = submit(&s, specs, None).await;
    for (r, (_, why)) in results.iter().zip(&bad) {
        let e = r.error.as_ref().expect("refused");
        assert_eq!(e.code, Code::InvalidArgument as i32, "{e:?}");
        assert!(e.message.contains(why), "{why}: {e:?}");
    }
    // The rest of the batch goes on.
    assert_eq!(results[bad.len()].error, None);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_version_4_options_are_refused_and_defaults_accepted() {
    let n = TestNode::start(Some(ACCESS_VERSION)).await;
    let s = service(&n);
    let results = submit(&s, vec![with_options(""), spec("")], None).await;
    let e = results[0].error.as_ref().expect("refused");
    assert_eq!(e.code, Code::FailedPrecondition as i32, "{e:?}");
    assert!(e.message.contains("cluster format version 4"), "{e:?}");
    assert_eq!(results[1].error, None);
    let r = replay(
        &s,
        v1::ReplayRequest {
            ids: vec![results[1].id.clone()],
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(r.code(), Code::FailedPrecondition, "{r:?}");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_per_tenant_and_replayed() {
    let n = TestNode::start(None).await;
    let s = service(&n);
    let once = |tenant: &str| v1::TaskSpec {
        max_attempts: 1,
        ..spec(tenant)
    };
    let mine = submit_one(&s, once(""), Some(&alice())).await;
    let theirs = submit_one(&s, once(""), Some(&bob())).await;
    let alive = submit_one(&s, spec(""), Some(&alice())).await;
    fail_attempt(&n, &mine).await;
    fail_attempt(&n, &theirs).await;

    let dead = |g: Option<Grant>| {
        let s = &s;
        async move {
            let req = v1::ListTasksRequest {
                dead: true,
                ..Default::default()
            };
            let page = s.list(request(req, g.as_ref())).await.unwrap().into_inner();
            page.tasks.into_iter().map(|t| t.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(dead(Some(root())).await, vec![mine.clone(), theirs.clone()]);
    assert_eq!(dead(Some(alice())).await, vec![mine.clone()]);
    let t = get(&s, &mine, None).await.unwrap();
    assert!(t.dead);
    assert_eq!(t.attempts_left, 0);
    assert_eq!(t.attempts.len(), 1);
    assert_eq!(
        (t.attempts[0].end.as_str(), t.attempts[0].exit_code),
        ("failed", 3)
    );
    // A dead listing with another state is refused.
    let req = v1::ListTasksRequest {
        dead: true,
        state: v1::TaskState::Pending as i32,
        ..Default::default()
    };
    let e = s.list(request(req, None)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Alice replays by id: her dead letter yes, Bob's is not found, a live
    // task is not a dead letter.
    let r = replay(
        &s,
        v1::ReplayRequest {
            ids: vec![mine.clone(), theirs.clone(), alive.clone()],
            ..Default::default()
        },
        Some(&alice()),
    )
    .await
    .unwrap();
    let codes: Vec<i32> = r
        .results
        .iter()
        .map(|r| r.error.as_ref().map_or(0, |e| e.code))
        .collect();
    assert_eq!(
        codes,
        vec![0, Code::NotFound as i32, Code::FailedPrecondition as i32],
        "{r:?}"
    );
    assert!(r.results[0].log_index > 0);
    let t = get(&s, &mine, None).await.unwrap();
    assert_eq!(t.state, v1::TaskState::Pending as i32);
    assert!(!t.dead);
    assert_eq!(t.attempts_left, 1);
    assert_eq!(t.attempts.len(), 1, "history kept");

    // By queue: Bob's, as admin; then nothing is left.
    let by_queue = v1::ReplayRequest {
        dead: true,
        queue: "default".into(),
        ..Default::default()
    };
    let r = replay(&s, by_queue.clone(), Some(&root())).await.unwrap();
    assert_eq!(r.results.len(), 1);
    assert_eq!(r.results[0].id, theirs);
    assert!(!r.more);
    let r = replay(&s, by_queue, Some(&root())).await.unwrap();
    assert!(r.results.is_empty());

    // Bad requests.
    for req in [
        v1::ReplayRequest::default(),
        v1::ReplayRequest {
            dead: true,
            ..Default::default()
        },
        v1::ReplayRequest {
            ids: vec![mine.clone()],
            dead: true,
            queue: "default".into(),
            ..Default::default()
        },
        v1::ReplayRequest {
            ids: vec!["nope".into()],
            ..Default::default()
        },
    ] {
        let e = replay(&s, req.clone(), None).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{req:?}: {e:?}");
    }
    n.stop().await;
}
