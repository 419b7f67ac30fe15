//! The placement edge against a node of this process: submit of the
//! placement fields (each status code, a bad item failing alone), the echo
//! on Get, Explain (codes, tenants, reasons), the assignment's GPU devices,
//! queue strategies and the GPU weights in Status; and the refusals below
//! version 5.

use tidal_core::access::Role;
use tidal_core::command::{Command, Response as CoreResponse};
use tidal_core::model::{AgentSpec, Gpu, TaskId};
use tidal_proto::v1::{self, cluster_server::Cluster, queues_server::Queues, tasks_server::Tasks};
use tonic::{Code, Request};

use crate::auth::grant::Grant;
use crate::grpc::cluster_service::ClusterService;
use crate::grpc::queue_service::QueueService;
use crate::grpc::task_service::TaskService;
use crate::grpc::test_node::{grant, request, TestNode};
use crate::leader::engine::ToAgent;

fn service(n: &TestNode) -> TaskService {
    TaskService {
        node: n.node.clone(),
        rates: Default::default(),
    }
}

fn spec() -> v1::TaskSpec {
    v1::TaskSpec {
        task_type: "t".into(),
        ..Default::default()
    }
}

fn alice() -> Grant {
    grant("alice", Role::User, Some("acme"), "00000000000000a1")
}

fn bob() -> Grant {
    grant("bob", Role::User, Some("globex"), "00000000000000b1")
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

async fn get(s: &TaskService, id: &str) -> v1::Task {
    let req = v1::GetTaskRequest {
        id: id.into(),
        stale: false,
    };
    s.get(request(req, None)).await.unwrap().into_inner()
}

async fn explain(
    s: &TaskService,
    id: &str,
    g: Option<&Grant>,
) -> Result<v1::TaskExplanation, tonic::Status> {
    let req = v1::ExplainRequest {
        id: id.into(),
        stale: false,
    };
    s.explain(request(req, g)).await.map(|r| r.into_inner())
}

fn code(r: &v1::SubmitResult) -> Option<Code> {
    r.error.as_ref().map(|e| Code::from(e.code))
}

fn placed_spec() -> v1::TaskSpec {
    v1::TaskSpec {
        constraints: vec!["zone=a".into()],
        tags: vec!["web".into()],
        tag_rules: vec![v1::TagRule {
            kind: v1::TagRuleKind::AntiAffinity as i32,
            tag: "web".into(),
            ..Default::default()
        }],
        gpu_shapes: vec![
            v1::GpuShape {
                count: 2,
                model: "A100".into(),
                memory_mb: 0,
            },
            v1::GpuShape {
                count: 1,
                model: "A40".into(),
                memory_mb: 0,
            },
        ],
        hash_key: "k1".into(),
        ..spec()
    }
}

fn gpu_agent(id: &str) -> AgentSpec {
    AgentSpec {
        id: id.into(),
        dc: "dc1".into(),
        task_types: ["t".to_string()].into(),
        pipelines: Default::default(),
        models: Default::default(),
        slots: 4,
        weight: 1,
        gpus: ["A40", "A40"]
            .iter()
            .map(|m| Gpu {
                model: m.to_string(),
                memory_mb: 49_152,
            })
            .collect(),
        labels: [("zone".to_string(), "a".to_string())].into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_fields_are_checked_per_item_echoed_and_explained() {
    let n = TestNode::start(None).await;
    let s = service(&n);
    let mut over = spec();
    over.tags = (0..17).map(|i| format!("t{i}")).collect();
    let results = submit(
        &s,
        vec![
            v1::TaskSpec {
                idempotency_key: "p1".into(),
                ..placed_spec()
            },
            v1::TaskSpec {
                constraints: vec!["zone in ()".into()],
                ..spec()
            },
            over,
            v1::TaskSpec {
                gpu_model: "A100".into(),
                ..spec()
            },
            spec(),
        ],
        None,
    )
    .await;
    let codes: Vec<Option<Code>> = results.iter().map(code).collect();
    assert_eq!(
        codes,
        vec![
            None,
            Some(Code::InvalidArgument),
            Some(Code::ResourceExhausted),
            Some(Code::InvalidArgument),
            None
        ],
        "{results:?}"
    );
    assert!(results[1]
        .error
        .as_ref()
        .unwrap()
        .message
        .starts_with("constraints[0]"));
    assert!(results[3]
        .error
        .as_ref()
        .unwrap()
        .message
        .starts_with("gpu_model"));
    let id = results[0].id.clone();

    // The same key with other placement fields is a conflict; with the
    // same ones (in another order) the task itself.
    let mut other = v1::TaskSpec {
        idempotency_key: "p1".into(),
        ..placed_spec()
    };
    other.constraints = vec!["zone=b".into()];
    let r = submit(&s, vec![other], None).await;
    assert_eq!(code(&r[0]), Some(Code::AlreadyExists), "{r:?}");
    let mut same = v1::TaskSpec {
        idempotency_key: "p1".into(),
        ..placed_spec()
    };
    same.tags = vec!["web".into(), "web".into()];
    let r = submit(&s, vec![same], None).await;
    assert_eq!((code(&r[0]), r[0].existed, &r[0].id), (None, true, &id));

    // Get echoes the ask; the spec's GPUs are the first shape's.
    let t = get(&s, &id).await;
    let echoed = t.spec.clone().unwrap();
    assert_eq!(echoed.constraints, vec!["zone=a"]);
    assert_eq!(echoed.tags, vec!["web"]);
    assert_eq!(echoed.tag_rules, placed_spec().tag_rules);
    assert_eq!(echoed.gpu_shapes, placed_spec().gpu_shapes);
    assert_eq!(echoed.hash_key, "k1");
    assert_eq!(echoed.gpus, 2);
    assert!(t.gpu_devices.is_empty() && t.gpu_shape.is_none());
    assert_eq!(t.waiting, "no agents are registered");

    // An agent with two A40s in zone a, not connected to this leader.
    let r = n.propose(Command::RegisterAgent(gpu_agent("g1"))).await;
    assert_eq!(r, CoreResponse::Ok);
    let e = explain(&s, &id, None).await.unwrap();
    assert_eq!(e.state, v1::TaskState::Pending as i32);
    assert_eq!((e.agents_total, e.agents_eligible_now), (1, 0));
    assert_eq!(e.reasons.len(), 1);
    assert_eq!(e.reasons[0].reason, "not connected");
    assert_eq!(e.summary, "not connected (1 of 1 agents)");
    assert_eq!(e.queue_position, 1);
    assert_eq!(e.forwarding, "", "no peer DC is configured");
    assert_eq!(get(&s, &id).await.waiting, e.summary);

    // Assigned: the second shape, devices 0 (one A40), on the agent's
    // assignment message and on Get.
    let task: TaskId = id.parse().unwrap();
    let granted = match n.propose(Command::Assign(vec![(task, "g1".into())])).await {
        CoreResponse::Assigned { granted, .. } => granted,
        other => panic!("{other:?}"),
    };
    let token = granted[0].token;
    let msg = {
        let applied = n.node.state.read();
        crate::grpc::convert::to_agent(&applied.state, ToAgent::Assign { task, token })
    };
    match msg.and_then(|m| m.msg) {
        Some(v1::server_message::Msg::Assignment(a)) => {
            assert_eq!(a.gpu_devices, Some(v1::GpuDevices { index: vec![0] }))
        }
        other => panic!("{other:?}"),
    }
    let t = get(&s, &id).await;
    assert_eq!(t.gpu_devices, vec![0]);
    assert_eq!(t.gpu_shape, Some(placed_spec().gpu_shapes[1].clone()));
    assert_eq!(t.waiting, "");
    let e = explain(&s, &id, None).await.unwrap();
    assert_eq!(e.state, v1::TaskState::Assigned as i32);
    assert!(e.summary.is_empty() && e.reasons.is_empty());

    // A task without GPUs: its assignment carries an empty device list.
    let plain = submit(&s, vec![spec()], None).await.remove(0).id;
    let plain = plain.parse::<TaskId>().unwrap();
    let token = match n.propose(Command::Assign(vec![(plain, "g1".into())])).await {
        CoreResponse::Assigned { granted, .. } => granted[0].token,
        other => panic!("{other:?}"),
    };
    let msg = {
        let applied = n.node.state.read();
        crate::grpc::convert::to_agent(&applied.state, ToAgent::Assign { task: plain, token })
    };
    match msg.and_then(|m| m.msg) {
        Some(v1::server_message::Msg::Assignment(a)) => {
            assert_eq!(a.gpu_devices, Some(v1::GpuDevices::default()))
        }
        other => panic!("{other:?}"),
    }
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_is_scoped_to_the_tenant_and_checks_the_id() {
    let n = TestNode::start(None).await;
    let s = service(&n);
    let r = submit(&s, vec![spec()], Some(&alice())).await;
    let id = r[0].id.clone();
    assert!(explain(&s, &id, Some(&alice())).await.is_ok());
    let hidden = explain(&s, &id, Some(&bob())).await.unwrap_err();
    let absent = TaskId(99_999).to_string();
    let missing = explain(&s, &absent, Some(&bob())).await.unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    assert_eq!(
        hidden.message().replace(&id, "X"),
        missing.message().replace(&absent, "X")
    );
    let bad = explain(&s, "not-an-id", None).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    // Stale: no leader memory, the pure part all the same.
    let req = v1::ExplainRequest {
        id: id.clone(),
        stale: true,
    };
    let e = s.explain(request(req, None)).await.unwrap().into_inner();
    assert_eq!(e.summary, "no agents are registered");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_strategies_and_gpu_weights() {
    let n = TestNode::start(None).await;
    let q = QueueService {
        node: n.node.clone(),
    };
    let set = |strategy: &str, key: &str| v1::SetQueueRequest {
        name: "batch".into(),
        weight: 2,
        strategy: strategy.into(),
        spread_key: key.into(),
    };
    let e = q.set(Request::new(set("spread", ""))).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = q
        .set(Request::new(set("bin-pack", "zone")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let got = q
        .set(Request::new(set("spread", "zone")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (got.strategy.as_str(), got.spread_key.as_str()),
        ("spread", "zone")
    );
    let listed = q
        .list(Request::new(v1::ListQueuesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let batch = listed.queues.iter().find(|q| q.name == "batch").unwrap();
    assert_eq!(batch.strategy, "spread");
    let got = q
        .set(Request::new(set("consistent-hash", "")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (got.strategy.as_str(), got.spread_key.as_str()),
        ("consistent-hash", "")
    );
    let got = q
        .set(Request::new(set("wrr", "")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.strategy, "weighted-round-robin");

    let c = ClusterService {
        node: n.node.clone(),
    };
    let status = c
        .status(Request::new(v1::StatusRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.gpu_weight_milli.get("A100"), Some(&1000));
    assert_eq!(status.gpu_weight_milli.get("A40"), Some(&500));
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_version_5_placement_is_refused() {
    let n = TestNode::start(Some(4)).await;
    let s = service(&n);
    let r = submit(
        &s,
        vec![
            v1::TaskSpec {
                tags: vec!["web".into()],
                ..spec()
            },
            spec(),
        ],
        None,
    )
    .await;
    assert_eq!(code(&r[0]), Some(Code::FailedPrecondition), "{r:?}");
    assert!(r[0]
        .error
        .as_ref()
        .unwrap()
        .message
        .contains("needs cluster format version 5"));
    assert_eq!(code(&r[1]), None);
    let q = QueueService {
        node: n.node.clone(),
    };
    let e = q
        .set(Request::new(v1::SetQueueRequest {
            name: "batch".into(),
            weight: 1,
            strategy: "bin-pack".into(),
            spread_key: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("needs cluster format version 5"),
        "{e:?}"
    );
    let c = ClusterService {
        node: n.node.clone(),
    };
    let status = c
        .status(Request::new(v1::StatusRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(status.gpu_weight_milli.is_empty());
    n.stop().await;
}
