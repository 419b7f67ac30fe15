//! Held ports: a server can listen on one (again after a restart), nothing
//! else takes it, and it refuses connections while nothing listens.

use super::*;

/// What `tidal server` does: tokio's bind sets SO_REUSEADDR.
async fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

#[tokio::test]
async fn a_server_listens_on_a_held_port_and_again_after_a_restart() {
    let port = Port::local().unwrap();
    assert_ne!(port.port(), 0);
    for _ in 0..2 {
        let listener = listen(port.addr()).await.unwrap();
        tokio::net::TcpStream::connect(port.addr()).await.unwrap();
        drop(listener);
        let refused = tokio::net::TcpStream::connect(port.addr()).await;
        assert!(refused.is_err(), "connected while nothing listens");
    }
}

#[tokio::test]
async fn nothing_else_takes_a_held_port() {
    let port = Port::local().unwrap();
    let plain = tokio::net::TcpSocket::new_v4().unwrap();
    assert!(plain.bind(port.addr()).is_err());
    let others: Vec<Port> = (0..200).map(|_| Port::local().unwrap()).collect();
    assert!(others.iter().all(|p| p.port() != port.port()));
}

#[tokio::test]
async fn listen_addr_is_read_once_written() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(read_listen_addr(dir.path()), None);
    std::fs::write(dir.path().join(LISTEN_ADDR_FILE), "127.0.0.1:4567\n").unwrap();
    let addr = wait_listen_addr(dir.path(), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(addr, "127.0.0.1:4567".parse().unwrap());
    clear_listen_addr(dir.path()).unwrap();
    clear_listen_addr(dir.path()).unwrap();
    assert_eq!(read_listen_addr(dir.path()), None);
}
