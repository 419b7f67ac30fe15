//! `run(config, listener, shutdown)`: the server serves on the listener it is
//! given, advertises its bound address, writes `listen.addr`, and stops when
//! the shutdown future completes.

use std::time::Duration;

use tidal_client::Client;
use tidal_server::config::AuthMode;
use tidal_server::{RawConfig, LISTEN_ADDR_FILE, PEER_LISTEN_ADDR_FILE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_on_the_given_listener_and_stops_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node1");
    let config = RawConfig {
        id: Some(1),
        dc: Some("dc1".into()),
        listen: Some("127.0.0.1:0".into()),
        data: Some(data.clone()),
        init: Some(true),
        auth: Some(AuthMode::None),
        ..RawConfig::default()
    }
    .validate()
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tidal_server::run(config, listener, async {
        let _ = stopped.await;
    }));

    let client = Client::new(vec![addr.clone()]).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = client.status_of(&addr).await {
            if s.role == "leader" {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Port 0 was asked for, so the member's address is the bound one.
    let members = client.members().await.unwrap();
    assert_eq!(members.members.len(), 1);
    assert_eq!(members.members[0].addr, addr);
    let written = std::fs::read_to_string(data.join(LISTEN_ADDR_FILE)).unwrap();
    assert_eq!(written.trim(), addr);

    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("the server stops within its shutdown timeout")
        .unwrap();
    result.unwrap();
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "nothing listens on {addr} after the shutdown"
    );
}

/// With a peer listener, the public API is served on the public socket and
/// refused on the peer one (PERMISSION_DENIED); the peer socket bound on
/// port 0 is written to `peer_listen.addr`, and a restart binds both
/// addresses again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_listener_refuses_the_public_api_and_is_bound_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node1");
    let config = |init| {
        RawConfig {
            id: Some(1),
            dc: Some("dc1".into()),
            listen: Some("127.0.0.1:0".into()),
            peer_listen: Some("127.0.0.1:0".into()),
            data: Some(data.clone()),
            init: Some(init),
            auth: Some(AuthMode::None),
            ..RawConfig::default()
        }
        .validate()
        .unwrap()
    };
    let mut seen = None;
    for init in [true, false] {
        let config = config(init);
        let listeners = tidal_server::bind(&config).await.unwrap();
        let addr = listeners.public.local_addr().unwrap().to_string();
        let peer = listeners
            .peer
            .as_ref()
            .expect("a peer listener")
            .local_addr()
            .unwrap()
            .to_string();
        assert_ne!(addr, peer);
        if let Some(seen) = &seen {
            assert_eq!(
                &(addr.clone(), peer.clone()),
                seen,
                "a restart binds both again"
            );
        }
        seen = Some((addr.clone(), peer.clone()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(tidal_server::run(config, listeners, async {
            let _ = stopped.await;
        }));
        let client = Client::new(vec![addr.clone()]).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !client
            .status_of(&addr)
            .await
            .is_ok_and(|s| s.role == "leader")
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader on {addr}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let refused = client.status_of(&peer).await.unwrap_err();
        assert_eq!(refused.code, tonic::Code::PermissionDenied, "{refused:?}");
        assert!(
            refused.message.contains("peer listener serves only Raft"),
            "{refused:?}"
        );
        let written = std::fs::read_to_string(data.join(PEER_LISTEN_ADDR_FILE)).unwrap();
        assert_eq!(written.trim(), peer);
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(20), server)
            .await
            .expect("the server stops within its shutdown timeout")
            .unwrap()
            .unwrap();
    }
}
