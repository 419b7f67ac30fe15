//! The fault layer: a userspace TCP proxy in front of every node.
//!
//! Each node listens on a private port and advertises its proxy's port, so
//! every connection to it (from other nodes, agents and clients) passes the
//! proxy. Every process dials from its own loopback address (`--source-ip`),
//! so the proxy knows each connection's two ends and applies the rules of
//! that directed link to the bytes going each way:
//!
//! - blocked: bytes are read and dropped, as a partition drops packets; the
//!   sender sees no answer and times out. A connection that dropped bytes is
//!   closed when its link heals (its stream is broken), and the peers
//!   reconnect.
//! - delay and jitter: each chunk waits before it is passed on, in order.
//! - loss: TCP turns packet loss into retransmission stalls, so each chunk
//!   is held for a retransmission timeout (200 ms, doubling) with the given
//!   probability, and a connection stalled past 3 s is reset.
//!
//! Without privileges this works on 127.0.0.0/8 alone; the observer, which
//! dials the nodes' private ports, is never faulted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::link::Peer;
use crate::net::Net;

/// A running proxy for one node; stops when dropped.
pub struct Proxy {
    pub listen: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Listens on `listen` (already bound) and relays to `upstream`, the
    /// node `node`'s private address, under the rules of `net`.
    pub fn start(
        listener: std::net::TcpListener,
        node: u8,
        upstream: SocketAddr,
        net: Net,
        seed: u64,
    ) -> anyhow::Result<Proxy> {
        listener.set_nonblocking(true)?;
        let listen = listener.local_addr()?;
        let listener = TcpListener::from_std(listener)?;
        let task = tokio::spawn(async move {
            let mut conn_seed = seed;
            loop {
                let Ok((client, peer_addr)) = listener.accept().await else {
                    continue;
                };
                conn_seed = conn_seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let from = Peer::from_ip(peer_addr.ip());
                let net = net.clone();
                tokio::spawn(relay(
                    client,
                    from,
                    Peer::Node(node),
                    upstream,
                    net,
                    conn_seed,
                ));
            }
        });
        Ok(Proxy { listen, task })
    }
}

async fn relay(
    client: TcpStream,
    from: Option<Peer>,
    to: Peer,
    upstream: SocketAddr,
    net: Net,
    seed: u64,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let closed = Arc::new(AtomicBool::new(false));
    let up = pump(
        cr,
        sw,
        from.map(|f| (f, to)),
        net.clone(),
        closed.clone(),
        seed,
    );
    let down = pump(sr, cw, from.map(|f| (to, f)), net, closed, seed ^ 0xff);
    tokio::join!(up, down);
}

/// Copies one direction under the link's rules until either side closes.
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    link: Option<(Peer, Peer)>,
    net: Net,
    closed: Arc<AtomicBool>,
    seed: u64,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut buf = vec![0u8; 64 * 1024];
    let mut broken = false;
    loop {
        if closed.load(Ordering::Relaxed) {
            break;
        }
        let n = tokio::select! {
            n = r.read(&mut buf) => match n { Ok(0) | Err(_) => break, Ok(n) => n },
            // Notice the other direction closing, or a heal of a broken stream.
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if broken && link.is_some_and(|(a, b)| !net.fault(a, b).blocked) {
                    break;
                }
                continue;
            }
        };
        let fault = link.map(|(a, b)| net.fault(a, b)).unwrap_or_default();
        if fault.blocked {
            broken = true;
            continue;
        }
        if broken {
            // Bytes were dropped: the stream is garbage. Close it.
            break;
        }
        let mut wait = fault.delay;
        if !fault.jitter.is_zero() {
            wait += fault.jitter.mul_f64(rng.gen::<f64>());
        }
        if fault.loss > 0.0 {
            let mut rto = Duration::from_millis(200);
            let mut stalled = Duration::ZERO;
            while rng.gen::<f64>() < fault.loss {
                stalled += rto;
                rto *= 2;
            }
            if stalled > Duration::from_secs(3) {
                break;
            }
            wait += stalled;
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    closed.store(true, Ordering::Relaxed);
    let _ = w.shutdown().await;
}

#[cfg(test)]
mod tests {
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
}
