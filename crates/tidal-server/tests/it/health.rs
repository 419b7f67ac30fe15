//! gRPC's health service and server reflection over the wire, with the
//! clients tonic-health and tonic-reflection generate: SERVING only while
//! the node is a member that knows a leader, NOT_SERVING from the start of
//! a shutdown; reflection lists the public services and serves
//! `tidal.proto`.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use prost::Message;
use tidal_client::Client;
use tidal_server::config::AuthMode;
use tidal_server::RawConfig;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1alpha;

const WAIT: Duration = Duration::from_secs(20);

/// The public services, each with a health status.
const PUBLIC: [&str; 7] = [
    "tidal.v1.Tasks",
    "tidal.v1.Agents",
    "tidal.v1.Queues",
    "tidal.v1.Tenants",
    "tidal.v1.Tokens",
    "tidal.v1.Cluster",
    "tidal.v1.Dcs",
];

/// A server of `run` on 127.0.0.1, stopped by `stop`.
struct Server {
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    async fn start(id: u64, data: &Path, init: bool, auth: AuthMode) -> Server {
        let config = RawConfig {
            id: Some(id),
            dc: Some("dc1".into()),
            listen: Some("127.0.0.1:0".into()),
            data: Some(data.to_path_buf()),
            init: Some(init),
            auth: Some(auth),
            ..RawConfig::default()
        }
        .validate()
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tidal_server::run(config, listener, async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Sends the shutdown; [`Server::stopped`] waits for its end.
    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    async fn stopped(mut self) {
        self.shut_down();
        let task = &mut self.task;
        tokio::time::timeout(WAIT, task)
            .await
            .expect("the server stops within its shutdown timeout")
            .unwrap()
            .unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `f` until it is true, failing the test at the deadline.
async fn until<F: Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The answer of `call`, called again while it is UNAVAILABLE: a new
/// cluster's leader takes the bootstrap token a moment after it leads, and
/// says so. Any other error fails the test.
async fn settled<T, F: Future<Output = Result<T, tonic::Status>>>(
    mut call: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match call().await {
            Ok(answer) => return answer,
            Err(status)
                if status.code() == tonic::Code::Unavailable
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
}

/// A Check of `service`: its status, or the call's status code.
async fn check(
    health: &mut HealthClient<Channel>,
    service: &str,
) -> Result<ServingStatus, tonic::Code> {
    let request = HealthCheckRequest {
        service: service.into(),
    };
    match health.check(request).await {
        Ok(response) => Ok(ServingStatus::try_from(response.into_inner().status).unwrap()),
        Err(status) => Err(status.code()),
    }
}

/// The next status a Watch stream sends (None: the stream ended).
async fn next(
    watch: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
) -> Option<ServingStatus> {
    let message = tokio::time::timeout(WAIT, watch.message())
        .await
        .expect("a Watch message or the stream's end")
        .ok()??;
    Some(ServingStatus::try_from(message.status).unwrap())
}

/// The first status a Watch stream sends that is not `current` (None: the
/// stream ended first). tonic-health may send a status twice in a row.
async fn next_change(
    watch: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
    current: ServingStatus,
) -> Option<ServingStatus> {
    loop {
        match next(watch).await {
            Some(status) if status == current => continue,
            other => return other,
        }
    }
}

/// Under `--auth tokens`: health answers without a token, SERVING on a
/// node that leads, for the server and every public service, and NOT_FOUND
/// for the Raft transport; a Watch sees NOT_SERVING when the shutdown
/// begins and then ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_without_a_token_and_turns_not_serving_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(1, &dir.path().join("node1"), true, AuthMode::Tokens).await;
    let mut health = HealthClient::new(server.channel().await);
    until("the node serves", || {
        let mut health = health.clone();
        async move { check(&mut health, "").await == Ok(ServingStatus::Serving) }
    })
    .await;
    for service in PUBLIC {
        assert_eq!(
            check(&mut health, service).await,
            Ok(ServingStatus::Serving),
            "{service}"
        );
    }
    for service in ["tidal.raft.v1.Raft", "tidal.v1.Nope"] {
        let code = check(&mut health, service).await.unwrap_err();
        assert_eq!(code, tonic::Code::NotFound, "{service}");
    }

    let mut watch = health
        .watch(HealthCheckRequest {
            service: "tidal.v1.Tasks".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut watch).await, Some(ServingStatus::Serving));
    let mut server = server;
    server.shut_down();
    assert_eq!(
        next_change(&mut watch, ServingStatus::Serving).await,
        Some(ServingStatus::NotServing)
    );
    assert_eq!(
        next_change(&mut watch, ServingStatus::NotServing).await,
        None,
        "the Watch ends with the server"
    );
    server.stopped().await;
}

/// A node no leader has added is NOT_SERVING; once the leader adds it as
/// a learner and it hears from the leader, a Watch on it sees SERVING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_once_it_is_a_member_that_knows_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(1, &dir.path().join("node1"), true, AuthMode::None).await;
    let second = Server::start(2, &dir.path().join("node2"), false, AuthMode::None).await;
    let mut health = HealthClient::new(second.channel().await);
    // The node is up (it answers) and stays NOT_SERVING until it is added.
    until("node 2 answers health checks", || {
        let mut health = health.clone();
        async move { check(&mut health, "").await.is_ok() }
    })
    .await;
    assert_eq!(check(&mut health, "").await, Ok(ServingStatus::NotServing));
    let mut watch = health
        .watch(HealthCheckRequest { service: "".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut watch).await, Some(ServingStatus::NotServing));

    let client = Client::new(vec![first.addr.clone()]).unwrap();
    until("node 1 adds node 2", || {
        let (client, addr) = (client.clone(), second.addr.clone());
        async move { client.add_learner(2, &addr).await.is_ok() }
    })
    .await;
    assert_eq!(
        next_change(&mut watch, ServingStatus::NotServing).await,
        Some(ServingStatus::Serving)
    );
    assert_eq!(
        check(&mut health, "tidal.v1.Tasks").await,
        Ok(ServingStatus::Serving)
    );
    second.stopped().await;
    first.stopped().await;
}

/// A leader whose only other voter is gone stops serving once check-quorum
/// deposes it (no majority heard within its lease), and a Watch on it sees
/// that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_peers_are_gone_stops_serving() {
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(1, &dir.path().join("node1"), true, AuthMode::None).await;
    let second = Server::start(2, &dir.path().join("node2"), false, AuthMode::None).await;
    let client = Client::new(vec![first.addr.clone()]).unwrap();
    until("node 2 is a voter", || {
        let (client, addr) = (client.clone(), second.addr.clone());
        async move { client.add_learner(2, &addr).await.is_ok() && client.promote(2).await.is_ok() }
    })
    .await;
    let mut health = HealthClient::new(first.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest { service: "".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut watch).await, Some(ServingStatus::Serving));

    second.stopped().await;
    assert_eq!(
        next_change(&mut watch, ServingStatus::Serving).await,
        Some(ServingStatus::NotServing)
    );
    assert_eq!(
        check(&mut health, "tidal.v1.Tasks").await,
        Ok(ServingStatus::NotServing)
    );
    first.stopped().await;
}

/// Reflection (v1 and v1alpha) lists the public services, not the Raft
/// transport, and serves the file that defines `tidal.v1.Tasks`; under
/// `--auth tokens` it needs a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_public_services_and_serves_tidal_proto() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node1");
    let server = Server::start(1, &data, true, AuthMode::Tokens).await;
    let channel = server.channel().await;
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let refused = reflection
        .server_reflection_info(tokio_stream::iter([list.clone()]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    // The server answered, so it started: its --init wrote the bootstrap
    // token before it served.
    let token = std::fs::read_to_string(data.join("bootstrap.token")).unwrap();
    let bearer: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", token.trim()).parse().unwrap();
    let ask = |requests: Vec<ServerReflectionRequest>| {
        let mut request = tonic::Request::new(tokio_stream::iter(requests));
        request
            .metadata_mut()
            .insert("authorization", bearer.clone());
        request
    };
    let file_of_tasks = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "tidal.v1.Tasks".into(),
        )),
    };
    let mut stream = settled(|| {
        let (mut reflection, request) = (
            reflection.clone(),
            ask(vec![list.clone(), file_of_tasks.clone()]),
        );
        async move { reflection.server_reflection_info(request).await }
    })
    .await
    .into_inner();
    let mut answers = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        answers.push(m.message_response.unwrap());
    }
    assert_eq!(answers.len(), 2, "{answers:?}");
    let Some(MessageResponse::ListServicesResponse(listed)) = answers.first() else {
        panic!("{answers:?}");
    };
    let names: Vec<&str> = listed.service.iter().map(|s| s.name.as_str()).collect();
    for service in PUBLIC.into_iter().chain([
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ]) {
        assert!(names.contains(&service), "{service} not in {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.starts_with("tidal.raft")),
        "{names:?}"
    );
    let Some(MessageResponse::FileDescriptorResponse(files)) = answers.get(1) else {
        panic!("{answers:?}");
    };
    let file =
        prost_types::FileDescriptorProto::decode(&files.file_descriptor_proto[0][..]).unwrap();
    assert_eq!(file.name(), "tidal.proto");
    assert_eq!(file.package(), "tidal.v1");
    let tasks = file.service.iter().find(|s| s.name() == "Tasks").unwrap();
    assert!(tasks.method.iter().any(|m| m.name() == "Submit"));

    // v1alpha, as older grpcurl releases ask.
    let alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let mut stream = settled(|| {
        let mut alpha = alpha.clone();
        let mut request =
            tonic::Request::new(tokio_stream::iter([v1alpha::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(
                    v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
                ),
            }]));
        request
            .metadata_mut()
            .insert("authorization", bearer.clone());
        async move { alpha.server_reflection_info(request).await }
    })
    .await
    .into_inner();
    let answer = stream.message().await.unwrap().unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(listed)) =
        answer.message_response
    else {
        panic!("{answer:?}");
    };
    let names: Vec<&str> = listed.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"tidal.v1.Tasks"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("tidal.raft")),
        "{names:?}"
    );
    server.stopped().await;
}
