//! Tests of the accept stream: each connection is tagged with its socket and the caller's address.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt;

use super::*;

async fn socket() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// Connects to `to` and returns the connection the server side accepted.
async fn accept_one(
    incoming: &mut (impl tokio_stream::Stream<Item = io::Result<Conn>> + Unpin),
    to: SocketAddr,
) -> (TcpStream, Conn) {
    let client = TcpStream::connect(to).await.unwrap();
    let conn = incoming.next().await.unwrap().unwrap();
    (client, conn)
}

#[tokio::test]
async fn each_connection_names_its_listener_and_the_callers_address() {
    let (public, public_addr) = socket().await;
    let (peer, peer_addr) = socket().await;
    let mut incoming = incoming(
        Listeners {
            public,
            peer: Some(peer),
        },
        None,
    );
    for (to, listener) in [
        (public_addr, Listener::Public),
        (peer_addr, Listener::Peer),
        (public_addr, Listener::Public),
    ] {
        let (client, conn) = accept_one(&mut incoming, to).await;
        let expected = Caller::plain(client.local_addr().unwrap(), listener);
        assert_eq!(conn.caller(), &expected);
        assert_eq!(
            conn.connect_info(),
            expected,
            "what tonic puts into requests"
        );
    }
}

#[tokio::test]
async fn without_a_peer_socket_the_public_one_alone_is_served() {
    let (public, public_addr) = socket().await;
    let mut incoming = incoming(Listeners::from(public), None);
    for _ in 0..2 {
        let (client, conn) = accept_one(&mut incoming, public_addr).await;
        assert_eq!(conn.caller().listener, Listener::Public);
        assert_eq!(conn.caller().remote, client.local_addr().unwrap());
    }
}

#[tokio::test]
async fn bytes_pass_both_ways() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (public, public_addr) = socket().await;
    let mut incoming = incoming(Listeners::from(public), None);
    let (mut client, mut conn) = accept_one(&mut incoming, public_addr).await;
    client.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    conn.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
    conn.write_all(b"pong").await.unwrap();
    conn.flush().await.unwrap();
    client.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"pong");
    conn.shutdown().await.unwrap();
    assert_eq!(client.read(&mut got).await.unwrap(), 0, "closed");
}
