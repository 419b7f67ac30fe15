//! Forged peer traffic (S29): processes that are not members of the DC, with
//! certificates of the run's CA that name a client, a server of another DC
//! or a server that is no member, call every node's Raft service
//! (HoldElections, Campaign, Removed, AppendEntries, Vote) over and over.
//! Every call must be refused; the counts go into the history.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidal_client::tidal_tls::rustls::ClientConfig;
use tidal_client::tidal_tls::{client_config, Expect, TlsDir};
use tidal_proto::raft::raft_client::RaftClient;
use tidal_proto::raft::{CampaignRequest, HoldElectionsRequest, RaftPayload, RemovedNotice};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use crate::cluster::Layout;

/// The node id the "no member" forger's certificate names.
pub const STRANGER_ID: u64 = 99;
/// The DC the "other DC" forger's certificate names.
pub const OTHER_DC: &str = "elsewhere";

/// What one forger's calls got back.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Calls refused with PERMISSION_DENIED.
    pub denied: u64,
    /// Calls that failed otherwise (handshake, node down, timeout).
    pub failed: u64,
    /// Calls a node accepted: each one is a hole.
    pub accepted: u64,
    /// The first accepted call, for the report.
    pub first_accepted: Option<String>,
}

/// The running forgers; [`Forgers::stop`] ends them and returns their tallies.
pub struct Forgers {
    stop: Arc<AtomicBool>,
    tasks: Vec<(String, JoinHandle<()>, Arc<Mutex<Tally>>)>,
}

impl Forgers {
    /// One forger per identity, each calling every node in `nodes` (id,
    /// address) in turn. Needs the layout's TLS.
    pub fn start(layout: &Layout, nodes: Vec<(u64, SocketAddr)>) -> anyhow::Result<Forgers> {
        let Some(pki) = &layout.tls else {
            anyhow::bail!("forged peer traffic needs TLS (the run's CA)");
        };
        let identities: Vec<(String, std::path::PathBuf)> = vec![
            ("client 'forger'".into(), pki.client("forger")?),
            (
                format!("server 1 of dc '{OTHER_DC}'"),
                pki.server(OTHER_DC, 1)?,
            ),
            (
                format!("server {STRANGER_ID} of dc '{}' (no member)", layout.dc),
                pki.server(&layout.dc, STRANGER_ID)?,
            ),
        ];
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (who, dir) in identities {
            let config = client_config(&TlsDir::load(&dir)?, Expect::AnyServer)?;
            let tally = Arc::new(Mutex::new(Tally::default()));
            let task = tokio::spawn(forge(config, nodes.clone(), stop.clone(), tally.clone()));
            tasks.push((who, task, tally));
        }
        Ok(Forgers { stop, tasks })
    }

    /// Stops every forger; each one's identity and tally.
    pub async fn stop(self) -> Vec<(String, Tally)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for (who, task, tally) in self.tasks {
            let _ = task.await;
            let t = tally.lock().expect("tally lock").clone();
            out.push((who, t));
        }
        out
    }
}

fn raft(addr: SocketAddr, config: Arc<ClientConfig>) -> RaftClient<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).expect("a socket address");
    let channel = tidal_client::dial::connect_lazy(
        endpoint.timeout(Duration::from_millis(500)),
        None,
        Duration::from_millis(300),
        Some(config),
    );
    RaftClient::new(channel)
}

/// Calls every node, every RPC, until `stop`, about 20 rounds a second.
async fn forge(
    config: Arc<ClientConfig>,
    nodes: Vec<(u64, SocketAddr)>,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) {
    let mut clients: Vec<(u64, RaftClient<Channel>)> = nodes
        .iter()
        .map(|(id, addr)| (*id, raft(*addr, config.clone())))
        .collect();
    let count = |what: String, r: Result<(), tonic::Status>| {
        let mut t = tally.lock().expect("tally lock");
        match r {
            Ok(()) => {
                t.accepted += 1;
                t.first_accepted.get_or_insert(what);
            }
            Err(s) if s.code() == tonic::Code::PermissionDenied => t.denied += 1,
            Err(_) => t.failed += 1,
        }
    };
    let payload = || RaftPayload {
        data: vec![0; 16],
        format: 2,
        max_format_version: 0,
    };
    let mut round: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        for (id, c) in clients.iter_mut() {
            let other = if *id == 1 { 2 } else { 1 };
            let r = c
                .hold_elections(HoldElectionsRequest { millis: 60_000 })
                .await;
            count(format!("HoldElections at node {id}"), r.map(|_| ()));
            let r = c.campaign(CampaignRequest { node_id: *id }).await;
            count(format!("Campaign at node {id}"), r.map(|_| ()));
            let r = c
                .removed(RemovedNotice {
                    node_id: *id,
                    leader_id: other,
                    membership_index: u64::MAX / 2 + round,
                })
                .await;
            count(format!("Removed at node {id}"), r.map(|_| ()));
            let r = c.append_entries(payload()).await;
            count(format!("AppendEntries at node {id}"), r.map(|_| ()));
            let r = c.vote(payload()).await;
            count(format!("Vote at node {id}"), r.map(|_| ()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
