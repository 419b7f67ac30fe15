//! Unit tests of `proxy.rs`.

use super::*;

#[test]
fn peers_round_trip_through_their_ips() {
    for p in [Peer::Node(3), Peer::Agent(1), Peer::Client(9)] {
        assert_eq!(Peer::from_ip(p.ip()), Some(p));
    }
    assert_eq!(Peer::from_ip("127.0.0.1".parse().unwrap()), None);
}

async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut b = [0u8; 1024];
                while let Ok(n) = s.read(&mut b).await {
                    if n == 0 || s.write_all(&b[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// An echo server as node 1, behind a proxy with no faults yet.
async fn echo_behind_proxy() -> (Net, Proxy) {
    let upstream = echo_server().await;
    let net = Net::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = Proxy::start(listener, 1, upstream, net.clone(), 7).unwrap();
    (net, proxy)
}

async fn dial(from: Peer, to: SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from.ip(), 0)).unwrap();
    sock.connect(to).await.unwrap()
}

#[tokio::test]
async fn blocks_one_link_and_closes_its_broken_stream_on_heal() {
    let (net, proxy) = echo_behind_proxy().await;
    let mut a = dial(Peer::Node(2), proxy.listen).await;
    let mut b = dial(Peer::Node(3), proxy.listen).await;
    let mut buf = [0u8; 5];
    a.write_all(b"hello").await.unwrap();
    a.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");

    net.cut(&[Peer::Node(2)], &[Peer::Node(1)]);
    a.write_all(b"lost!").await.unwrap();
    let r = tokio::time::timeout(Duration::from_millis(300), a.read(&mut buf)).await;
    assert!(r.is_err(), "a blocked link passes nothing");
    // Another link to the same node is untouched.
    b.write_all(b"still").await.unwrap();
    b.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still");

    net.heal();
    // The stream that lost bytes is closed; a new connection works.
    let n = tokio::time::timeout(Duration::from_secs(5), a.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the broken stream is closed after the heal");
    let mut a2 = dial(Peer::Node(2), proxy.listen).await;
    a2.write_all(b"again").await.unwrap();
    a2.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"again");
}

#[tokio::test]
async fn one_way_cut_drops_only_that_direction() {
    let (net, proxy) = echo_behind_proxy().await;
    // n1 cannot send to a1: the echo's answers are dropped, the request passes.
    net.cut_one_way(&[Peer::Node(1)], &[Peer::Agent(1)]);
    assert!(!net.fault(Peer::Agent(1), Peer::Node(1)).blocked);
    let mut s = dial(Peer::Agent(1), proxy.listen).await;
    s.write_all(b"ping!").await.unwrap();
    let mut buf = [0u8; 5];
    let r = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await;
    assert!(r.is_err(), "answers are dropped");
}
