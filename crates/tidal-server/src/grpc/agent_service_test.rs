//! Tests of Agents.Drain, Undrain and Deregister under an agent's [`crate::auth::grant::Grant`]: only an agent registered under the same token.

use tidal_core::access::{Role, TokenRecord};
use tidal_core::command::{Command, Response};
use tidal_core::model::AgentSpec;
use tidal_proto::v1::{self, agents_server::Agents};
use tonic::Code;

use super::AgentService;
use crate::grpc::test_node::{grant, request, TestNode};

fn agent(id: &str) -> AgentSpec {
    AgentSpec {
        id: id.into(),
        dc: "dc1".into(),
        task_types: ["t2i".to_string()].into(),
        slots: 1,
        weight: 1,
        ..AgentSpec::default()
    }
}

fn token(role: Role) -> TokenRecord {
    TokenRecord {
        hash: [7; 32],
        name: "ci".into(),
        role,
        tenant: None,
        created_ms: 0,
        expires_ms: None,
        created_by: "token:boot".into(),
        revoked_ms: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_token_deregisters_only_its_own_agents() {
    let n = TestNode::start(None).await;
    for id in ["00000000000000a1", "00000000000000a2"] {
        let create = Command::CreateToken {
            id: id.into(),
            record: token(Role::Agent),
            first_only: false,
        };
        assert_eq!(n.propose(create).await, Response::Ok);
    }
    let register_as = Command::RegisterAgentAs {
        spec: agent("gpu-1"),
        token: "00000000000000a1".into(),
    };
    assert_eq!(n.propose(register_as).await, Response::Ok);
    assert_eq!(
        n.propose(Command::RegisterAgent(agent("gpu-2"))).await,
        Response::Ok
    );
    let s = AgentService {
        node: n.node.clone(),
    };
    let deregister = |id: &str, g: Option<&crate::auth::grant::Grant>| {
        let req = v1::DeregisterAgentRequest {
            agent_id: id.into(),
        };
        s.deregister(request(req, g))
    };
    let one = grant("agent-1", Role::Agent, None, "00000000000000a1");
    let two = grant("agent-2", Role::Agent, None, "00000000000000a2");

    // Another token's agent, an agent registered with no token, and one
    // that does not exist are all refused.
    for (id, g) in [("gpu-1", &two), ("gpu-2", &one), ("gpu-9", &one)] {
        let e = deregister(id, Some(g)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{id}: {e:?}");
        assert!(e.message().contains(id), "{e:?}");
    }
    assert!(n.node.state.read().state.agent("gpu-1").is_some());

    deregister("gpu-1", Some(&one)).await.unwrap();
    assert!(n.node.state.read().state.agent("gpu-1").is_none());
    // An admin, like a caller without a grant, deregisters any agent.
    let root = grant("root", Role::Admin, None, "00000000000000ad");
    deregister("gpu-2", Some(&root)).await.unwrap();
    assert!(n.node.state.read().state.agent("gpu-2").is_none());
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_token_drains_and_undrains_only_its_own_agents() {
    let n = TestNode::start(None).await;
    for id in ["00000000000000a1", "00000000000000a2"] {
        let create = Command::CreateToken {
            id: id.into(),
            record: token(Role::Agent),
            first_only: false,
        };
        assert_eq!(n.propose(create).await, Response::Ok);
    }
    let register_as = Command::RegisterAgentAs {
        spec: agent("gpu-1"),
        token: "00000000000000a1".into(),
    };
    assert_eq!(n.propose(register_as).await, Response::Ok);
    assert_eq!(
        n.propose(Command::RegisterAgent(agent("gpu-2"))).await,
        Response::Ok
    );
    let s = AgentService {
        node: n.node.clone(),
    };
    let one = grant("agent-1", Role::Agent, None, "00000000000000a1");
    let two = grant("agent-2", Role::Agent, None, "00000000000000a2");
    let draining = |id: &str| {
        n.node
            .state
            .read()
            .state
            .agent(id)
            .is_some_and(|a| a.is_draining())
    };

    for (id, g) in [("gpu-1", &two), ("gpu-2", &one), ("gpu-9", &one)] {
        let req = v1::DrainAgentRequest {
            agent_id: id.into(),
            deadline_ms: None,
        };
        let e = s.drain(request(req, Some(g))).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{id}: {e:?}");
        assert!(
            e.message().contains("may drain only its own agents"),
            "{e:?}"
        );
    }
    assert!(!draining("gpu-1") && !draining("gpu-2"));

    let req = v1::DrainAgentRequest {
        agent_id: "gpu-1".into(),
        deadline_ms: Some(60_000),
    };
    s.drain(request(req, Some(&one))).await.unwrap();
    assert!(draining("gpu-1"));
    let undrain = |id: &str| v1::UndrainAgentRequest {
        agent_id: id.into(),
    };
    let e = s
        .undrain(request(undrain("gpu-1"), Some(&two)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("may undrain only its own agents"),
        "{e:?}"
    );
    assert!(draining("gpu-1"));
    s.undrain(request(undrain("gpu-1"), Some(&one)))
        .await
        .unwrap();
    assert!(!draining("gpu-1"));
    n.stop().await;
}
