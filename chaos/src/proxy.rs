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

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::netns::Netns;

/// One end of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    Node(u8),
    Agent(u8),
    Client(u8),
}

impl Peer {
    /// The loopback address this peer dials from.
    pub fn ip(self) -> IpAddr {
        let (group, n) = match self {
            Peer::Node(n) => (1, n),
            Peer::Agent(n) => (2, n),
            Peer::Client(n) => (3, n),
        };
        IpAddr::V4(Ipv4Addr::new(127, 0, group, n))
    }

    /// Who dialed from `ip`; `None` for anyone else (e.g. the observer).
    pub fn from_ip(ip: IpAddr) -> Option<Peer> {
        let IpAddr::V4(v4) = ip else { return None };
        match v4.octets() {
            [127, 0, 1, n] => Some(Peer::Node(n)),
            [127, 0, 2, n] => Some(Peer::Agent(n)),
            [127, 0, 3, n] => Some(Peer::Client(n)),
            _ => None,
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Node(n) => write!(f, "n{n}"),
            Peer::Agent(n) => write!(f, "a{n}"),
            Peer::Client(n) => write!(f, "c{n}"),
        }
    }
}

/// Faults on the directed link `from -> to` (bytes sent by `from`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkFault {
    pub blocked: bool,
    pub delay: Duration,
    pub jitter: Duration,
    /// Probability that a chunk stalls for a retransmission timeout.
    pub loss: f64,
}

impl LinkFault {
    fn is_clear(&self) -> bool {
        *self == LinkFault::default()
    }
}

/// The rules of every link; shared by all proxies. In the netns mode
/// there are no proxies: every change is written to nftables instead.
#[derive(Clone, Default)]
pub struct Net {
    rules: Arc<Mutex<BTreeMap<(Peer, Peer), LinkFault>>>,
    netns: Option<Arc<Netns>>,
}

impl Net {
    /// Faults enforced by nftables in the namespaces of `netns`.
    pub fn netns(netns: Netns) -> Net {
        Net {
            rules: Arc::default(),
            netns: Some(Arc::new(netns)),
        }
    }

    /// The run's namespaces, in the netns mode.
    pub fn namespaces(&self) -> Option<&Netns> {
        self.netns.as_deref()
    }

    /// The address `p` dials from: its loopback identity, or its address
    /// in the run's network.
    pub fn ip(&self, p: Peer) -> IpAddr {
        match &self.netns {
            Some(n) => n.ip(p),
            None => p.ip(),
        }
    }

    /// Writes the rules to nftables (netns mode; the proxies read them).
    fn sync(&self, rules: &BTreeMap<(Peer, Peer), LinkFault>) {
        if let Some(n) = &self.netns {
            n.apply(rules);
        }
    }

    pub fn fault(&self, from: Peer, to: Peer) -> LinkFault {
        self.rules
            .lock()
            .expect("net lock poisoned")
            .get(&(from, to))
            .copied()
            .unwrap_or_default()
    }

    /// Changes the fault of `from -> to`.
    pub fn update(&self, from: Peer, to: Peer, f: impl FnOnce(&mut LinkFault)) {
        let mut rules = self.rules.lock().expect("net lock poisoned");
        change(&mut rules, from, to, f);
        self.sync(&rules);
    }

    /// Blocks both directions between every member of `a` and every member of `b`.
    pub fn cut(&self, a: &[Peer], b: &[Peer]) {
        let mut rules = self.rules.lock().expect("net lock poisoned");
        for &x in a {
            for &y in b {
                if x != y {
                    change(&mut rules, x, y, |f| f.blocked = true);
                    change(&mut rules, y, x, |f| f.blocked = true);
                }
            }
        }
        self.sync(&rules);
    }

    /// Blocks only `from -> to` for each pair.
    pub fn cut_one_way(&self, from: &[Peer], to: &[Peer]) {
        let mut rules = self.rules.lock().expect("net lock poisoned");
        for &x in from {
            for &y in to {
                if x != y {
                    change(&mut rules, x, y, |f| f.blocked = true);
                }
            }
        }
        self.sync(&rules);
    }

    /// Removes every fault.
    pub fn heal(&self) {
        let mut rules = self.rules.lock().expect("net lock poisoned");
        rules.clear();
        self.sync(&rules);
    }

    /// The links that currently have a fault, for the record.
    pub fn describe(&self) -> String {
        let rules = self.rules.lock().expect("net lock poisoned");
        let blocked: BTreeSet<String> = rules
            .iter()
            .filter(|(_, f)| f.blocked)
            .map(|((a, b), _)| format!("{a}->{b}"))
            .collect();
        let slow = rules.values().filter(|f| !f.blocked).count();
        let mut s = format!(
            "blocked: [{}], slow or lossy: {slow}",
            blocked.into_iter().collect::<Vec<_>>().join(" ")
        );
        if let Some(n) = &self.netns {
            s.push_str(&format!("; nftables: {}", n.describe()));
        }
        s
    }
}

/// Changes one link's fault in `rules`, forgetting a link that is clear.
fn change(
    rules: &mut BTreeMap<(Peer, Peer), LinkFault>,
    from: Peer,
    to: Peer,
    f: impl FnOnce(&mut LinkFault),
) {
    let entry = rules.entry((from, to)).or_default();
    f(entry);
    if entry.is_clear() {
        rules.remove(&(from, to));
    }
}

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
