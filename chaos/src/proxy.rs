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
#[path = "proxy_test.rs"]
mod tests;
