//! The scenarios of RELIABILITY.md and the nemesis that plays each: a loop
//! of inject, hold, heal, rest for the run's duration, every step recorded.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use tokio::time::{sleep, Instant};

use crate::cluster::Cluster;
use crate::forger::Forgers;
use crate::history::{Event, Recorder};
use crate::link::Peer;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    KillLeader,
    KillMinority,
    KillAll,
    IsolateLeader,
    Split23,
    MajoritiesRing,
    Bridge,
    OneWayLeader,
    PauseLeader,
    PauseAgent,
    Failover,
    Loss,
    JitterFollower,
    Membership,
    CrashPoints,
    /// Simulated power loss (SIGUSR1 to a failpoints build) on a random
    /// minority: every write a node did not fsync is dropped.
    PowerLoss,
    Mix,
    /// Two DCs: cut the link between them.
    DcLinkCut,
    /// Two DCs: lose the remote DC's answers, kill its leader.
    KillRemoteLeader,
    /// (netns) Cut the leader from the other nodes, the clients and every
    /// agent but agent 1, by dropped packets.
    CutLeaderButAgent1,
    /// (netns) SIGSTOP the leader past the agents' lease but not past the
    /// server's.
    PauseLeaderPastAgentTtl,
    /// (netns) Isolate the leader by dropped packets past the server's
    /// agent TTL.
    IsolateLeaderSilently,
    /// Drain an agent and kill the leader while the drain commits and its
    /// deadline passes; wait until the agent is drained, undrain it.
    DrainUnderFaults,
    /// SIGTERM each node in turn (a graceful stop: exit 0), restart it.
    RollingRestart,
    /// SIGKILL an agent while its workers (run under `sh`, so the process
    /// the sink sees is the agent's grandchild) work; restart it.
    KillAgent,
    /// Start a second process under a live agent's id: it takes the id
    /// over, and the first must exit 6.
    DuplicateAgentId,
    /// Forgers (a client certificate, another DC's server, a server that
    /// is no member, TLS without a certificate, plaintext) send Raft calls
    /// to every node: first while nothing else happens, then while the
    /// leader is killed.
    ForgedPeers,
    /// Under agent tokens: SIGSTOP one agent, cut another off from the
    /// nodes and revoke a third's token; that agent exits 8 and comes back
    /// under a new token.
    TokenRevoked,
    /// Online work preempts offline work (stops with notice, suspensions)
    /// while the leader is SIGKILLed or SIGTERMed and agents are paused
    /// (SIGSTOP, within their lease).
    PreemptUnderFaults,
}

#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// RELIABILITY.md's id (S1 ...).
    pub id: &'static str,
    pub name: &'static str,
    pub nodes: usize,
    pub fault: Fault,
    pub about: &'static str,
    /// Runs only in network namespaces (`--net netns`): its faults must be
    /// silent packet drops, which the proxy cannot give.
    pub netns: bool,
}

pub const ALL: &[Scenario] = &[
    Scenario {
        id: "S1",
        name: "none",
        nodes: 3,
        fault: Fault::None,
        about: "no fault; no election after warm-up",
        netns: false,
    },
    Scenario {
        id: "S2",
        name: "kill-leader",
        nodes: 3,
        fault: Fault::KillLeader,
        about: "SIGKILL the leader every few seconds, restart it",
        netns: false,
    },
    Scenario {
        id: "S3",
        name: "kill-minority",
        nodes: 5,
        fault: Fault::KillMinority,
        about: "SIGKILL a random minority, restart it",
        netns: false,
    },
    Scenario {
        id: "S4",
        name: "kill-all",
        nodes: 3,
        fault: Fault::KillAll,
        about: "SIGKILL every node at once, restart them all",
        netns: false,
    },
    Scenario {
        id: "S5",
        name: "isolate-leader",
        nodes: 3,
        fault: Fault::IsolateLeader,
        about: "cut the leader off from everyone beyond the election timeout",
        netns: false,
    },
    Scenario {
        id: "S6",
        name: "split-2-3",
        nodes: 5,
        fault: Fault::Split23,
        about: "partition 5 nodes into 2 | 3",
        netns: false,
    },
    Scenario {
        id: "S7",
        name: "majorities-ring",
        nodes: 5,
        fault: Fault::MajoritiesRing,
        about: "each of 5 nodes sees only its two neighbours",
        netns: false,
    },
    Scenario {
        id: "S8",
        name: "bridge",
        nodes: 5,
        fault: Fault::Bridge,
        about: "two pairs joined only through one bridge node",
        netns: false,
    },
    Scenario {
        id: "S9",
        name: "one-way-leader",
        nodes: 3,
        fault: Fault::OneWayLeader,
        about: "the leader's messages are dropped, what it receives is not",
        netns: false,
    },
    Scenario {
        id: "S10",
        name: "pause-leader",
        nodes: 3,
        fault: Fault::PauseLeader,
        about: "SIGSTOP the leader beyond the election timeout, then SIGCONT",
        netns: false,
    },
    Scenario {
        id: "S11",
        name: "pause-agent",
        nodes: 3,
        fault: Fault::PauseAgent,
        about: "SIGSTOP an agent beyond its lease; its tasks are granted again",
        netns: false,
    },
    Scenario {
        id: "S12",
        name: "failover-agents",
        nodes: 3,
        fault: Fault::Failover,
        about: "leader failovers while agents heartbeat; no agent marked down",
        netns: false,
    },
    Scenario {
        id: "S13",
        name: "loss",
        nodes: 3,
        fault: Fault::Loss,
        about: "25% loss on every link, clients retrying",
        netns: false,
    },
    Scenario {
        id: "S14",
        name: "jitter-follower",
        nodes: 3,
        fault: Fault::JitterFollower,
        about: "100-300 ms of jitter on one follower's links",
        netns: false,
    },
    Scenario {
        id: "S15",
        name: "crash-points",
        nodes: 3,
        fault: Fault::CrashPoints,
        about: "nodes abort at random around log append, flush, vote save and snapshot install",
        netns: false,
    },
    Scenario {
        id: "S16",
        name: "lost-writes",
        nodes: 5,
        fault: Fault::PowerLoss,
        about: "power loss on a random minority: each drops every write it did not fsync, then restarts",
        netns: false,
    },
    Scenario {
        id: "S18",
        name: "membership",
        nodes: 4,
        fault: Fault::Membership,
        about: "add a voter during a partition, then kill the leader",
        netns: false,
    },
    Scenario {
        id: "S19",
        name: "cut-dc-link",
        nodes: 3,
        fault: Fault::DcLinkCut,
        about: "two DCs: cut the link between them for up to 20 s while tasks are forwarded",
        netns: false,
    },
    Scenario {
        id: "S20",
        name: "kill-remote-leader",
        nodes: 3,
        fault: Fault::KillRemoteLeader,
        about: "two DCs: drop the remote DC's answers (so records are resent), kill its leader mid-forward",
        netns: false,
    },
    Scenario {
        id: "S21",
        name: "random-mix",
        nodes: 5,
        fault: Fault::Mix,
        about: "a seeded random mix of kills, pauses, partitions and loss",
        netns: false,
    },
    Scenario {
        id: "S22",
        name: "cut-leader-but-agent",
        nodes: 3,
        fault: Fault::CutLeaderButAgent1,
        about: "(netns) drop the leader's packets to and from the other nodes, agent 2 and the clients, not agent 1; no two tokens of a task overlap",
        netns: true,
    },
    Scenario {
        id: "S23",
        name: "pause-leader-agent-ttl",
        nodes: 3,
        fault: Fault::PauseLeaderPastAgentTtl,
        about: "(netns) SIGSTOP the leader longer than the agents' lease, shorter than the server's; no token runs twice",
        netns: true,
    },
    Scenario {
        id: "S24",
        name: "silent-isolate-leader",
        nodes: 3,
        fault: Fault::IsolateLeaderSilently,
        about: "(netns) isolate the leader by dropped packets past the server's agent TTL; no agent marked down, writes go on",
        netns: true,
    },
    Scenario {
        id: "S25",
        name: "rolling-restart",
        nodes: 3,
        fault: Fault::RollingRestart,
        about: "SIGTERM each node in turn under load and restart it; each exits 0 within its shutdown timeout, no agent marked down",
        netns: false,
    },
    Scenario {
        id: "S28",
        name: "drain-under-faults",
        nodes: 3,
        fault: Fault::DrainUnderFaults,
        about: "drain an agent (agent 1 with a deadline shorter than its tasks, the others without) while the leader is killed; every drain ends drained, stopped tasks requeue and run once per token",
        netns: false,
    },
    Scenario {
        id: "S26",
        name: "agent-kill",
        nodes: 3,
        fault: Fault::KillAgent,
        about: "SIGKILL an agent whose workers (grandchildren, under sh) run; restart it under its id; its workers end within 1 s, no two executions of a task overlap",
        netns: false,
    },
    Scenario {
        id: "S27",
        name: "duplicate-agent-id",
        nodes: 3,
        fault: Fault::DuplicateAgentId,
        about: "start a second process under a live agent's id: it takes the id over, the first exits 6; no two executions of a task overlap",
        netns: false,
    },
    Scenario {
        id: "S29",
        name: "forged-peers",
        nodes: 3,
        fault: Fault::ForgedPeers,
        about: "(TLS) a client certificate, another DC's server, a server that is no member, TLS without a certificate and plaintext send HoldElections, Campaign, Removed, AppendEntries and Vote to every node, first alone, then while the leader is killed; every forged call is refused, nothing changes while alone, each election ends within 5 s",
        netns: false,
    },
    Scenario {
        id: "S30",
        name: "token-revoked",
        nodes: 3,
        fault: Fault::TokenRevoked,
        about: "(tokens) SIGSTOP one agent, cut another off and revoke a third's agent token mid-workload; nothing starts or completes on the revoked session past one heartbeat interval, the agent exits 8, its tasks run elsewhere",
        netns: false,
    },
    Scenario {
        id: "S31",
        name: "preempt-under-faults",
        nodes: 3,
        fault: Fault::PreemptUnderFaults,
        about: "online work preempts offline work on full agents (stops with notice and a grace, suspensions in place, resumes) while the leader is SIGKILLed or SIGTERMed and agents are SIGSTOPped within their lease; never online or non-preemptible work, every preemption committed, no two holders' work overlaps",
        netns: false,
    },
];

pub fn find(name: &str) -> Option<Scenario> {
    ALL.iter()
        .copied()
        .find(|s| s.name.eq_ignore_ascii_case(name) || s.id.eq_ignore_ascii_case(name))
}

/// How many nodes start as voters (the membership scenario adds the last later).
pub fn initial_voters(s: &Scenario) -> usize {
    if s.fault == Fault::Membership {
        s.nodes - 1
    } else {
        s.nodes
    }
}

/// How many DCs the scenario runs: the cross-DC ones start a second DC
/// whose agents run what the first DC's cannot.
pub fn dcs(s: &Scenario) -> usize {
    match s.fault {
        Fault::DcLinkCut | Fault::KillRemoteLeader => 2,
        _ => 1,
    }
}

/// Why `s` cannot run in the netns mode (`None`: it can).
pub fn netns_unsupported(s: &Scenario) -> Option<&'static str> {
    match s.fault {
        Fault::JitterFollower => {
            Some("its jitter needs the proxy: nftables drops packets but cannot delay them")
        }
        Fault::DcLinkCut | Fault::KillRemoteLeader => {
            Some("its two DCs need the proxy: the netns mode runs one DC")
        }
        _ => None,
    }
}

/// Agent 1's work when it differs from the others': the netns scenarios
/// keep its workers running longer than a cut (the server's agent TTL plus
/// up to 2.5 s) and the reconnection after it, so a worker that outlives
/// its lease is still running when its task can be granted again, and a
/// worker its agent fenced is cut short (visible in the sink's history).
/// In drain-under-faults, agent 1's tasks outlast the deadline of its
/// drains, so they are stopped and requeued. In agent-kill and
/// duplicate-agent-id, agent 1 (the one killed or displaced) is in the
/// middle of its tasks when that happens; the other agents clear the
/// workload quickly.
pub fn agent1_work_ms(s: &Scenario) -> Option<u64> {
    if s.fault == Fault::DrainUnderFaults {
        return Some(DRAIN_WORK_MS);
    }
    if matches!(s.fault, Fault::KillAgent | Fault::DuplicateAgentId) {
        return Some(1500);
    }
    s.netns.then_some(8_000)
}

/// Whether the scenario needs mutual TLS (its forgers present certificates).
pub fn needs_tls(s: &Scenario) -> bool {
    s.fault == Fault::ForgedPeers
}

/// Whether the scenario needs `--auth tokens` (it revokes agent tokens).
pub fn needs_tokens(s: &Scenario) -> bool {
    s.fault == Fault::TokenRevoked
}

/// The fewest agents the scenario runs: token-revoked pauses one, cuts
/// off another and revokes a third's token at once.
pub fn min_agents(s: &Scenario) -> usize {
    match s.fault {
        Fault::TokenRevoked => 3,
        _ => 1,
    }
}

/// How long a worker works: in token-revoked long enough that the revoked
/// agent is in the middle of tasks when its token goes.
pub fn work_ms(s: &Scenario) -> u64 {
    match s.fault {
        Fault::TokenRevoked => 400,
        _ => 100,
    }
}

/// How long the revoked agent of token-revoked may take to exit 8 after
/// the revocation was acknowledged: its session closes within a heartbeat
/// interval, then it stops its workers.
const REVOKED_EXIT_BOUND: Duration = Duration::from_secs(10);

/// How long forged-peers' forgers run alone before the first leader kill
/// (at most; a third of a shorter run).
const FORGED_ALONE: Duration = Duration::from_secs(3);

/// How long an election after a leader kill may take in forged-peers: the
/// usual one is well under a second; a forged HoldElections that a node
/// obeyed would hold it for a minute.
const ELECTION_BOUND: Duration = Duration::from_secs(5);

/// Whether workers run under `sh` (their own child does the work).
pub fn wrap_workers(s: &Scenario) -> bool {
    s.fault == Fault::KillAgent
}

/// How long agent 1's tasks take in drain-under-faults.
const DRAIN_WORK_MS: u64 = 2500;

/// What `tidal agent list` says an agent is.
fn agent_state(a: &tidal_client::v1::AgentInfo) -> &'static str {
    use tidal_client::v1::AgentState;
    match AgentState::try_from(a.state).unwrap_or(AgentState::Unspecified) {
        AgentState::Ready => "ready",
        AgentState::Draining => "draining",
        AgentState::Drained => "drained",
        AgentState::Down => "down",
        AgentState::Unspecified => "unspecified",
    }
}

/// Flags every server of the scenario gets. S16's nodes sync their log
/// and sled 20 ms late (a slow disk), so at any moment of the workload
/// some acknowledged-to-nobody writes are on their way to the disk: a
/// power loss has unsynced writes to drop.
pub fn server_args(s: &Scenario) -> Vec<String> {
    match s.fault {
        Fault::PowerLoss => vec!["--flush-delay-us".into(), "20000".into()],
        _ => Vec::new(),
    }
}

/// Whether agents get paused past their lease: a paused agent cannot stop
/// its own workers. (preempt-under-faults pauses agents within their
/// lease, so its overlap checks hold.)
pub fn pauses_agents(s: &Scenario) -> bool {
    s.fault == Fault::PauseAgent
}

/// Each agent's slots: preempt-under-faults keeps its agents full with
/// few, so that online work finds no free slot and preempts.
pub fn agent_slots(s: &Scenario) -> u32 {
    match s.fault {
        Fault::PreemptUnderFaults => 2,
        _ => 4,
    }
}

/// What the scenario's clients submit: preempt-under-faults submits every
/// latency class.
pub fn mix(s: &Scenario) -> crate::workload::Mix {
    match s.fault {
        Fault::PreemptUnderFaults => crate::workload::Mix::Classes,
        _ => crate::workload::Mix::Plain,
    }
}

/// The crash points armed in the crash-points scenario: rare on the hot
/// path (appends and flushes happen many times a second), likelier around
/// votes and snapshot installs, which are rare.
pub const CRASH_POINTS: &str = "store::append::after_write=0.3%return;\
store::flush::before_sync=0.3%return;store::flush::after_sync=0.3%return;\
store::vote::before_sync=10%return;store::vote::after_sync=10%return;\
store::snapshot::before_save=30%return;store::snapshot::after_save=30%return";

/// How long a SIGTERMed server may take to exit: its default
/// `--shutdown-timeout-ms` (2 s) and room for a loaded machine.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(4);

pub struct Nemesis<'a> {
    pub cluster: &'a mut Cluster,
    /// The second DC of a cross-DC scenario.
    pub remote: Option<&'a mut Cluster>,
    pub history: Recorder,
    pub rng: StdRng,
    pub clients: usize,
    /// When the run's faults end (set by `run`).
    pub until: Option<Instant>,
}

impl Nemesis<'_> {
    fn note(&self, f: &str, detail: String) {
        tracing::info!(fault = f, %detail, "nemesis");
        self.history.record(Event {
            detail: Some(detail),
            ..Event::new("nemesis", "event", f)
        });
    }

    async fn leader(&self) -> Option<u64> {
        self.cluster.wait_leader(Duration::from_secs(10)).await.ok()
    }

    /// The nodes of both DCs (a cross-DC scenario needs the second).
    fn dc_nodes(&self) -> anyhow::Result<(Vec<Peer>, Vec<Peer>)> {
        let Some(remote) = self.remote.as_deref() else {
            anyhow::bail!("a cross-DC fault needs a second DC");
        };
        let a = (1..=self.cluster.nodes.len() as u64)
            .map(|i| self.cluster.layout.node_peer(i))
            .collect();
        let b = (1..=remote.nodes.len() as u64)
            .map(|i| remote.layout.node_peer(i))
            .collect();
        Ok((a, b))
    }

    fn all_nodes(&self) -> Vec<Peer> {
        (1..=self.cluster.nodes.len() as u8)
            .map(Peer::Node)
            .collect()
    }

    fn everyone_but(&self, node: u64) -> Vec<Peer> {
        let mut v: Vec<Peer> = self
            .all_nodes()
            .into_iter()
            .filter(|p| *p != Peer::Node(node as u8))
            .collect();
        v.extend(self.cluster.peers_except_nodes(self.clients));
        v
    }

    fn heal(&mut self) -> anyhow::Result<()> {
        self.cluster.heal_all()?;
        if let Some(r) = self.remote.as_deref_mut() {
            r.heal_all()?;
        }
        self.note(
            "heal",
            "network healed, paused resumed, dead restarted".into(),
        );
        Ok(())
    }

    /// One drain while the leader is killed: agent 1 (long tasks) with a
    /// deadline shorter than its tasks, the others with none. Records
    /// `drain` (the call's answer), `drained` (accepted: the agent was
    /// seen drained within the bound) and `undrain`.
    async fn drain_under_faults(&mut self, round: u32) -> anyhow::Result<Duration> {
        if round == 0 {
            // Let the workload fill the agents first.
            sleep(Duration::from_secs(1)).await;
        }
        let k = 1 + (round as usize % self.cluster.agents.len());
        let id = self.cluster.layout.agent_id(k as u8);
        // Often past the kill and the election that follows it: the new leader
        // reads the deadline from the state and has the tasks stopped.
        let deadline = (k == 1).then(|| self.rng.gen_range(200..DRAIN_WORK_MS * 2 / 5));
        let call = tokio::spawn({
            let (admin, id) = (self.cluster.admin.clone(), id.clone());
            async move { admin.drain_agent(&id, deadline).await }
        });
        sleep(Duration::from_millis(self.rng.gen_range(0..200))).await;
        let leader = self.leader().await;
        if let Some(l) = leader {
            self.cluster.node(l).proc.kill();
            self.note("kill", format!("node {l} (the leader) while {id} drains"));
        }
        let answer = match call.await {
            Ok(Ok(a)) => Ok(agent_state(&a)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        self.history.record(Event {
            agent: Some(id.clone()),
            accepted: Some(answer.is_ok()),
            detail: Some(format!("{id} with deadline {deadline:?} ms: {answer:?}")),
            ..Event::new("nemesis", "event", "drain")
        });
        sleep(Duration::from_millis(self.rng.gen_range(800..1500))).await;
        if let Some(l) = leader {
            self.cluster.restart(l)?;
            self.note("restart", format!("node {l}"));
        }
        let bound = Duration::from_secs(20);
        let until = Instant::now() + bound;
        let mut seen = "unknown";
        while Instant::now() < until {
            if let Ok(agents) = self.cluster.admin.list_agents(false).await {
                if let Some(a) = agents
                    .iter()
                    .find(|a| a.spec.as_ref().is_some_and(|s| s.id == id))
                {
                    seen = agent_state(a);
                }
            }
            if seen == "drained" {
                break;
            }
            sleep(Duration::from_millis(100)).await;
        }
        self.history.record(Event {
            agent: Some(id.clone()),
            accepted: Some(seen == "drained"),
            detail: Some(format!("{id} is {seen} (bound {bound:?})")),
            ..Event::new("nemesis", "event", "drained")
        });
        let mut undrained = self.cluster.admin.undrain_agent(&id).await;
        let until = Instant::now() + Duration::from_secs(10);
        while undrained.is_err() && Instant::now() < until {
            sleep(Duration::from_millis(200)).await;
            undrained = self.cluster.admin.undrain_agent(&id).await;
        }
        self.note(
            "undrain",
            format!("{id}: {:?}", undrained.map(|a| agent_state(&a))),
        );
        Ok(Duration::from_millis(500))
    }

    /// forged-peers' first phase: the forgers alone, no other fault. The
    /// leader, its term and the membership must stay as they were (a term
    /// change is excused only by a server's runtime stall beyond the
    /// election timeout, as in S1).
    async fn forged_alone(&mut self) {
        let left = self.until.map_or(Duration::ZERO, |u| {
            u.saturating_duration_since(Instant::now())
        });
        let hold = FORGED_ALONE.min(left / 3);
        let members = |m: Result<tidal_client::v1::MembersResponse, tidal_client::Error>| {
            m.map(|m| {
                let mut v: Vec<(u64, bool)> = m.members.iter().map(|m| (m.id, m.voter)).collect();
                v.sort();
                v
            })
            .map_err(|e| e.to_string())
        };
        let status = |s: Result<tidal_client::v1::StatusResponse, tidal_client::Error>| {
            s.map(|s| (s.leader_id, s.term)).map_err(|e| e.to_string())
        };
        let before = (
            status(self.cluster.admin.status().await),
            members(self.cluster.admin.members().await),
        );
        self.note(
            "forge",
            format!("the forgers alone for {hold:?}: leader and term, members {before:?}"),
        );
        sleep(hold).await;
        let after = (
            status(self.cluster.admin.status().await),
            members(self.cluster.admin.members().await),
        );
        let same_members = before.1.is_ok() && before.1 == after.1;
        let same_leader = before.0.is_ok() && before.0 == after.0;
        let stalls = self
            .cluster
            .stalls(crate::cluster::STALL_COSTS_LEADERSHIP_MS);
        self.history.record(Event {
            accepted: Some(same_members && (same_leader || !stalls.is_empty())),
            detail: Some(format!(
                "forged traffic alone changed nothing: (leader, term) and members {before:?} -> \
                 {after:?}{}",
                if same_leader || stalls.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (a server stalled long enough to cost a leadership: {})",
                        stalls.join("; ")
                    )
                }
            )),
            ..Event::new("runner", "event", "expect")
        });
    }

    /// One round of token-revoked: SIGSTOP one agent, cut another off from
    /// every node, revoke a third's agent token (`revoke`, when the
    /// revocation was acknowledged: it committed before), hold 1-2 s, wait
    /// for the revoked agent to exit (`revoked-exit`: code 8), give it a
    /// new token and start it again under its id (`rejoin`), heal. The
    /// roles move on by one agent each round.
    async fn revoke_under_faults(&mut self, round: u32) -> anyhow::Result<Duration> {
        if round == 0 {
            // Let the workload fill the agents first.
            sleep(Duration::from_secs(1)).await;
        }
        let agents = self.cluster.agents.len();
        let pick = |i: u32| 1 + (round + i) as usize % agents;
        let (stopped, cut, revoked) = (pick(0), pick(1), pick(2));
        let hold = Duration::from_millis(self.rng.gen_range(1000..2000));
        self.cluster.agents[stopped - 1].pause();
        self.note("pause", format!("agent-{stopped}"));
        let nodes = self.all_nodes();
        let cut_peer = self.cluster.layout.agent_peer(cut as u8);
        self.cluster.net.cut(&[cut_peer], &nodes);
        self.note(
            "partition",
            format!(
                "agent-{cut} cut off from every node: {}",
                self.cluster.net.describe()
            ),
        );
        let held_from = Instant::now();
        let id = self.cluster.layout.agent_id(revoked as u8);
        let token = self.cluster.agent_tokens[revoked - 1]
            .clone()
            .ok_or_else(|| anyhow::anyhow!("token-revoked needs agent tokens"))?;
        let answer = self.cluster.admin.revoke_token(&token).await;
        let heartbeat_ms = self.cluster.layout.heartbeat_ms();
        let acked = Instant::now();
        tracing::info!(fault = "revoke", agent = %id, token = %token, ok = answer.is_ok(), "nemesis");
        self.history.record(Event {
            agent: Some(id.clone()),
            accepted: Some(answer.is_ok()),
            within_ms: Some(heartbeat_ms),
            detail: Some(format!(
                "agent-{revoked}'s token {token}: {}",
                match &answer {
                    Ok(info) => format!("revoked at leader time {} ms", info.revoked_ms),
                    Err(e) => format!("not revoked: {e}"),
                }
            )),
            ..Event::new("nemesis", "event", "revoke")
        });
        // Until the hold ends and the revoked agent has exited (or the
        // bound passed): resume and heal at the hold's end, note the exit
        // when it comes.
        let mut exit = None;
        let mut held = true;
        loop {
            if exit.is_none() {
                if let Some(s) = self.cluster.agents[revoked - 1].try_exit() {
                    exit = Some((s, acked.elapsed()));
                }
            }
            if held && held_from.elapsed() >= hold {
                held = false;
                self.cluster.agents[stopped - 1].resume();
                self.note("resume", format!("agent-{stopped}"));
                self.cluster.net.heal();
                self.note("heal", format!("agent-{cut}'s links"));
            }
            if !held && (exit.is_some() || acked.elapsed() >= REVOKED_EXIT_BOUND) {
                break;
            }
            sleep(Duration::from_millis(5)).await;
        }
        let status = exit.map(|(s, _)| s);
        let code = status.and_then(|s| s.code());
        self.history.record(Event {
            agent: Some(id.clone()),
            accepted: Some(code == Some(8)),
            detail: Some(format!(
                "agent-{revoked} {} (expected exit code 8): {}",
                exit.map_or(
                    format!("still ran {REVOKED_EXIT_BOUND:?} after the revocation was acknowledged; killed"),
                    |(s, took)| format!(
                        "exited {} ms after the revocation was acknowledged: {s}",
                        took.as_millis()
                    )
                ),
                self.cluster.agents[revoked - 1]
                    .last_log_line("credentials")
                    .unwrap_or_else(|| "no log line about its credentials".into())
            )),
            ..Event::new("nemesis", "event", "revoked-exit")
        });
        if status.is_none() {
            self.cluster.agents[revoked - 1].kill();
        }
        let new = self.cluster.new_agent_token(revoked).await?;
        self.cluster.restart_agent(revoked)?;
        self.history.record(Event {
            agent: Some(id.clone()),
            detail: Some(format!(
                "agent-{revoked} started again under a new token {new}"
            )),
            ..Event::new("nemesis", "event", "rejoin")
        });
        self.heal()?;
        Ok(Duration::from_millis(1500))
    }

    /// Plays `fault` until `until`, then heals everything.
    pub async fn run(&mut self, fault: Fault, until: Instant) -> anyhow::Result<()> {
        self.until = Some(until);
        let forgers = match fault {
            Fault::ForgedPeers => {
                let nodes = self
                    .cluster
                    .nodes
                    .iter()
                    .map(|n| (n.id, n.private))
                    .collect();
                let f = Forgers::start(&self.cluster.layout, nodes)?;
                self.note(
                    "forge",
                    "forgers call every node's Raft service until the faults end".into(),
                );
                Some(f)
            }
            _ => None,
        };
        let played = self.play(fault, until).await;
        if let Some(f) = forgers {
            self.forged(f.stop().await);
        }
        played?;
        self.heal()
    }

    /// Records what the forgers got: each must have had every call refused;
    /// no node may have taken a forged removal.
    fn forged(&self, tallies: Vec<(String, crate::forger::Tally)>) {
        for (who, t) in tallies {
            let want = match t.approach {
                crate::forger::Approach::Certificate => "every call refused by the policy",
                crate::forger::Approach::NoCertificate => "no call answered: the handshake refused",
            };
            self.history.record(Event {
                accepted: Some(t.held()),
                detail: Some(format!(
                    "forged Raft calls as {who} ({want}): {} refused (PERMISSION_DENIED), {} failed \
                     otherwise{}, {} accepted{}{}",
                    t.denied,
                    t.failed,
                    t.first_failed
                        .map(|c| format!(" (the first: {c})"))
                        .unwrap_or_default(),
                    t.accepted,
                    t.first_accepted
                        .map(|c| format!(" (first: {c})"))
                        .unwrap_or_default(),
                    t.first_unexpected
                        .map(|c| format!(" (answered: {c})"))
                        .unwrap_or_default()
                )),
                ..Event::new("runner", "event", "expect")
            });
        }
        let removed = self.cluster.node_log_lines("was removed from the cluster");
        self.history.record(Event {
            accepted: Some(removed.is_empty()),
            detail: Some(format!(
                "no node took a forged removal notice: {}",
                removed.first().map_or("none", String::as_str)
            )),
            ..Event::new("runner", "event", "expect")
        });
    }

    /// Plays `fault` until `until`.
    async fn play(&mut self, fault: Fault, until: Instant) -> anyhow::Result<()> {
        let mut round = 0u32;
        while Instant::now() + Duration::from_millis(500) < until {
            let f = if fault == Fault::Mix {
                // nftables cannot delay: no jitter in the netns mode.
                let netns = self.cluster.net.namespaces().is_some();
                *[
                    Fault::KillLeader,
                    Fault::KillMinority,
                    Fault::IsolateLeader,
                    Fault::Split23,
                    Fault::PauseLeader,
                    Fault::OneWayLeader,
                    Fault::Loss,
                    Fault::JitterFollower,
                ][..if netns { 7 } else { 8 }]
                    .choose(&mut self.rng)
                    .expect("a non-empty list")
            } else {
                fault
            };
            let rest = self.step(f, round).await?;
            round += 1;
            sleep(rest.min(until.saturating_duration_since(Instant::now()))).await;
        }
        Ok(())
    }

    /// One inject-hold-heal; returns how long to rest before the next.
    async fn step(&mut self, f: Fault, round: u32) -> anyhow::Result<Duration> {
        let n = self.cluster.nodes.len() as u64;
        match f {
            Fault::None => Ok(Duration::from_secs(1)),
            Fault::DcLinkCut => {
                let (a, b) = self.dc_nodes()?;
                self.cluster.net.cut(&a, &b);
                let left = self.until.map_or(Duration::ZERO, |u| {
                    u.saturating_duration_since(Instant::now())
                });
                let hold = Duration::from_secs(20).min(left.saturating_sub(Duration::from_secs(1)));
                self.note(
                    "partition",
                    format!("the DC link, {a:?} | {b:?}, for {hold:?}"),
                );
                sleep(hold).await;
                self.cluster.net.heal();
                self.note("heal", "the DC link".into());
                Ok(Duration::from_secs(3))
            }
            Fault::KillRemoteLeader => {
                let (a, b) = self.dc_nodes()?;
                // Answers lost: the remote DC takes the records, the origin
                // never hears, and sends them again after healing.
                self.cluster.net.cut_one_way(&b, &a);
                self.note("partition", format!("one way, {b:?} -> {a:?}"));
                sleep(Duration::from_millis(self.rng.gen_range(800..1600))).await;
                self.cluster.net.heal();
                self.note("heal", "the DC link".into());
                sleep(Duration::from_millis(self.rng.gen_range(100..600))).await;
                let remote = self.remote.as_deref_mut().expect("dc_nodes checked");
                let Ok(l) = remote.wait_leader(Duration::from_secs(10)).await else {
                    return Ok(Duration::from_secs(1));
                };
                remote.node(l).proc.kill();
                self.note("kill", format!("node {l} of the remote DC (its leader)"));
                sleep(Duration::from_millis(self.rng.gen_range(800..2000))).await;
                let remote = self.remote.as_deref_mut().expect("dc_nodes checked");
                remote.restart(l)?;
                self.note("restart", format!("node {l} of the remote DC"));
                Ok(Duration::from_secs(2))
            }
            Fault::KillLeader | Fault::Failover => {
                let Some(l) = self.leader().await else {
                    return Ok(Duration::from_secs(1));
                };
                self.cluster.node(l).proc.kill();
                self.note("kill", format!("node {l} (the leader)"));
                sleep(Duration::from_millis(self.rng.gen_range(800..2000))).await;
                self.cluster.restart(l)?;
                self.note("restart", format!("node {l}"));
                Ok(Duration::from_secs(if f == Fault::Failover {
                    3
                } else {
                    2
                }))
            }
            Fault::ForgedPeers => {
                if round == 0 {
                    self.forged_alone().await;
                }
                let Some(l) = self.leader().await else {
                    return Ok(Duration::from_secs(1));
                };
                self.cluster.node(l).proc.kill();
                self.note(
                    "kill",
                    format!("node {l} (the leader) under forged traffic"),
                );
                let killed = Instant::now();
                let mut new = None;
                while killed.elapsed() < ELECTION_BOUND * 2 {
                    if let Some(n) = self.cluster.leader().await.filter(|n| *n != l) {
                        new = Some(n);
                        break;
                    }
                    sleep(Duration::from_millis(20)).await;
                }
                let took = killed.elapsed();
                self.history.record(Event {
                    accepted: Some(new.is_some() && took <= ELECTION_BOUND),
                    detail: Some(format!(
                        "a new leader within {ELECTION_BOUND:?} of killing node {l}: {new:?} \
                         after {} ms",
                        took.as_millis()
                    )),
                    ..Event::new("runner", "event", "expect")
                });
                sleep(Duration::from_millis(self.rng.gen_range(300..1000))).await;
                self.cluster.restart(l)?;
                self.note("restart", format!("node {l}"));
                Ok(Duration::from_secs(2))
            }
            Fault::KillMinority => {
                let mut ids: Vec<u64> = (1..=n).collect();
                ids.shuffle(&mut self.rng);
                let k = self.rng.gen_range(1..=(n as usize - 1) / 2);
                let victims = &ids[..k];
                for &v in victims {
                    self.cluster.node(v).proc.kill();
                }
                self.note("kill", format!("nodes {victims:?}"));
                sleep(Duration::from_millis(self.rng.gen_range(1000..3000))).await;
                for &v in victims {
                    self.cluster.restart(v)?;
                }
                self.note("restart", format!("nodes {victims:?}"));
                Ok(Duration::from_secs(2))
            }
            Fault::RollingRestart => {
                // Node 1, 2, 3, 1, ...: the leader's turn comes in every
                // round of three, whichever node leads.
                let id = u64::from(round) % n + 1;
                let led = self.cluster.leader().await == Some(id);
                let proc = &mut self.cluster.node(id).proc;
                let start = Instant::now();
                proc.terminate();
                let status = proc.wait_exit(SHUTDOWN_BOUND).await;
                let took = start.elapsed();
                if status.is_none() {
                    proc.kill();
                }
                let ok = status.is_some_and(|s| s.code() == Some(0));
                let detail = format!(
                    "node {id}{} stopped gracefully on SIGTERM: {} after {} ms",
                    if led { " (the leader)" } else { "" },
                    status.map_or("did not exit; killed".to_string(), |s| s.to_string()),
                    took.as_millis()
                );
                tracing::info!(fault = "sigterm", %detail, "nemesis");
                self.history.record(Event {
                    node: Some(id),
                    accepted: Some(ok),
                    detail: Some(detail),
                    ..Event::new("runner", "event", "expect")
                });
                sleep(Duration::from_millis(self.rng.gen_range(200..800))).await;
                self.cluster.restart(id)?;
                self.note("restart", format!("node {id}"));
                Ok(Duration::from_millis(1500))
            }
            Fault::KillAll => {
                for id in 1..=n {
                    self.cluster.node(id).proc.kill();
                }
                self.note("kill", "every node".into());
                sleep(Duration::from_millis(500)).await;
                for id in 1..=n {
                    self.cluster.restart(id)?;
                }
                self.note("restart", "every node".into());
                Ok(Duration::from_secs(4))
            }
            Fault::IsolateLeader => {
                let Some(l) = self.leader().await else {
                    return Ok(Duration::from_secs(1));
                };
                self.cluster
                    .net
                    .cut(&[Peer::Node(l as u8)], &self.everyone_but(l));
                self.note(
                    "partition",
                    format!(
                        "node {l} (the leader) alone: {}",
                        self.cluster.net.describe()
                    ),
                );
                sleep(Duration::from_millis(self.rng.gen_range(1500..3000))).await;
                self.heal()?;
                Ok(Duration::from_secs(2))
            }
            Fault::Split23 | Fault::MajoritiesRing | Fault::Bridge => {
                let mut ids: Vec<u8> = (1..=n as u8).collect();
                ids.shuffle(&mut self.rng);
                let node = |i: usize| Peer::Node(ids[i]);
                match f {
                    Fault::Split23 => self
                        .cluster
                        .net
                        .cut(&[node(0), node(1)], &[node(2), node(3), node(4)]),
                    Fault::MajoritiesRing => {
                        // Ring order ids[0..5]: cut every pair that is not adjacent.
                        for a in 0..5 {
                            for b in 0..5 {
                                let d = (a + 5 - b) % 5;
                                if d == 2 || d == 3 {
                                    self.cluster.net.cut(&[node(a)], &[node(b)]);
                                }
                            }
                        }
                    }
                    _ => {
                        // {0,1} - 2 - {3,4}: node 2 bridges the two sides.
                        self.cluster
                            .net
                            .cut(&[node(0), node(1)], &[node(3), node(4)]);
                    }
                }
                self.note(
                    "partition",
                    format!("{f:?} over {ids:?}: {}", self.cluster.net.describe()),
                );
                sleep(Duration::from_millis(self.rng.gen_range(2000..4000))).await;
                self.heal()?;
                Ok(Duration::from_secs(2))
            }
            Fault::OneWayLeader => {
                let Some(l) = self.leader().await else {
                    return Ok(Duration::from_secs(1));
                };
                self.cluster
                    .net
                    .cut_one_way(&[Peer::Node(l as u8)], &self.everyone_but(l));
                self.note(
                    "partition",
                    format!(
                        "node {l} (the leader) cannot send: {}",
                        self.cluster.net.describe()
                    ),
                );
                sleep(Duration::from_millis(self.rng.gen_range(1500..3000))).await;
                self.heal()?;
                Ok(Duration::from_secs(2))
            }
            Fault::PauseLeader => {
                let Some(l) = self.leader().await else {
                    return Ok(Duration::from_secs(1));
                };
                self.cluster.node(l).proc.pause();
                self.note("pause", format!("node {l} (the leader)"));
                sleep(Duration::from_millis(self.rng.gen_range(1500..3000))).await;
                self.cluster.node(l).proc.resume();
                self.note("resume", format!("node {l}"));
                Ok(Duration::from_secs(2))
            }
            Fault::PauseAgent => {
                let k = 1 + (round as usize % self.cluster.agents.len());
                self.cluster.agents[k - 1].pause();
                self.note("pause", format!("agent-{k}"));
                // Past the server's lease, so its tasks are granted again.
                let ttl = self.cluster.layout.agent_ttl_ms;
                sleep(Duration::from_millis(
                    ttl + ttl / 2 + self.rng.gen_range(0..1000),
                ))
                .await;
                self.cluster.agents[k - 1].resume();
                self.note("resume", format!("agent-{k}"));
                Ok(Duration::from_secs(2))
            }
            Fault::Loss => {
                for a in self
                    .all_nodes()
                    .into_iter()
                    .chain(self.cluster.peers_except_nodes(self.clients))
                {
                    for b in self.all_nodes() {
                        if a != b {
                            self.cluster.net.update(a, b, |f| f.loss = 0.25);
                            self.cluster.net.update(b, a, |f| f.loss = 0.25);
                        }
                    }
                }
                self.note("loss", "25% on every link".into());
                sleep(Duration::from_millis(self.rng.gen_range(3000..5000))).await;
                self.heal()?;
                Ok(Duration::from_secs(2))
            }
            Fault::JitterFollower => {
                let l = self.leader().await.unwrap_or(1);
                let follower = (1..=n).filter(|&i| i != l).collect::<Vec<_>>()
                    [self.rng.gen_range(0..n as usize - 1)];
                let me = Peer::Node(follower as u8);
                for other in self.everyone_but(follower) {
                    for (a, b) in [(me, other), (other, me)] {
                        self.cluster.net.update(a, b, |f| {
                            f.delay = Duration::from_millis(100);
                            f.jitter = Duration::from_millis(200);
                        });
                    }
                }
                self.note("delay", format!("node {follower}: 100-300 ms each way"));
                sleep(Duration::from_millis(self.rng.gen_range(3000..5000))).await;
                self.heal()?;
                Ok(Duration::from_secs(1))
            }
            Fault::Membership => {
                let newcomer = n;
                if round > 0 {
                    return Box::pin(self.step(Fault::KillLeader, round)).await;
                }
                // Cut one follower off, then add the newcomer and promote it
                // through the majority that is left.
                let leader = self.leader().await.unwrap_or(1);
                let followers: Vec<u64> = (1..newcomer).filter(|&i| i != leader).collect();
                let victim = *followers
                    .choose(&mut self.rng)
                    .expect("a group of 3 has followers");
                self.cluster
                    .net
                    .cut(&[Peer::Node(victim as u8)], &self.everyone_but(victim));
                self.note("partition", format!("node {victim} alone"));
                let mut joined = self.cluster.join(newcomer).await;
                self.note("membership", format!("add and promote node {newcomer} while node {victim} is cut off: {joined:?}"));
                sleep(Duration::from_millis(1500)).await;
                self.heal()?;
                // A change refused during the partition (say, by a leader that
                // had just lost its majority) is retried until it lands.
                let deadline = Instant::now() + Duration::from_secs(10);
                while joined.is_err() && Instant::now() < deadline {
                    sleep(Duration::from_millis(300)).await;
                    joined = self.cluster.join(newcomer).await;
                }
                self.note(
                    "membership",
                    format!("node {newcomer} after healing: {joined:?}"),
                );
                Ok(Duration::from_secs(2))
            }
            Fault::CrashPoints => {
                if round == 0 {
                    // Arm every node, one restart at a time.
                    for id in 1..=n {
                        self.cluster.node(id).proc.extra_env =
                            vec![("FAILPOINTS".into(), CRASH_POINTS.into())];
                        self.cluster.node(id).proc.kill();
                        self.cluster.restart(id)?;
                        sleep(Duration::from_millis(700)).await;
                    }
                    self.note("arm", format!("FAILPOINTS={CRASH_POINTS} on every node"));
                }
                // Restart whoever aborted at a crash point.
                let watch_until = Instant::now() + Duration::from_secs(2);
                while Instant::now() < watch_until {
                    for id in 1..=n {
                        if let Some(status) = self.cluster.node(id).proc.try_exit() {
                            self.note("crash", format!("node {id} exited ({status})"));
                            self.cluster.restart(id)?;
                        }
                    }
                    sleep(Duration::from_millis(50)).await;
                }
                Ok(Duration::ZERO)
            }
            Fault::PowerLoss => {
                let mut ids: Vec<u64> = (1..=n).collect();
                ids.shuffle(&mut self.rng);
                let k = self.rng.gen_range(1..=(n as usize - 1) / 2);
                let victims = ids[..k].to_vec();
                let leader = self.cluster.leader().await;
                // At a random moment of the workload.
                sleep(Duration::from_millis(self.rng.gen_range(0..400))).await;
                for &v in &victims {
                    self.cluster.node(v).proc.lose_power();
                }
                let with_leader = leader
                    .filter(|l| victims.contains(l))
                    .map_or(String::new(), |l| format!(" (node {l} led)"));
                self.note(
                    "power-loss",
                    format!("SIGUSR1 to nodes {victims:?}{with_leader}"),
                );
                for &v in &victims {
                    let proc = &mut self.cluster.node(v).proc;
                    let status = proc.wait_exit(Duration::from_secs(10)).await;
                    let dropped: Vec<String> = proc
                        .last_log_line("power loss: the log")
                        .into_iter()
                        .collect();
                    // A failpoints build aborts (SIGABRT) after dropping
                    // its unsynced writes; any other end is no power loss.
                    use std::os::unix::process::ExitStatusExt;
                    let lost = status.and_then(|s| s.signal()) == Some(libc::SIGABRT)
                        && !dropped.is_empty();
                    if status.is_none() {
                        proc.kill();
                    }
                    let detail = format!(
                        "node {v}: {}; {}",
                        status.map_or("did not exit within 10 s; killed".to_string(), |s| s
                            .to_string()),
                        dropped
                            .first()
                            .map_or("no power-loss report in its log", String::as_str)
                    );
                    tracing::info!(fault = "lost-power", %detail, "nemesis");
                    self.history.record(Event {
                        node: Some(v),
                        accepted: Some(lost),
                        detail: Some(detail),
                        ..Event::new("nemesis", "event", "lost-power")
                    });
                }
                sleep(Duration::from_millis(self.rng.gen_range(300..1200))).await;
                for &v in &victims {
                    self.cluster.restart(v)?;
                }
                self.note("restart", format!("nodes {victims:?}"));
                Ok(Duration::from_millis(1500))
            }
            Fault::CutLeaderButAgent1 | Fault::IsolateLeaderSilently => {
                if self.cluster.net.namespaces().is_none() {
                    anyhow::bail!("{f:?} drops packets: it runs only in the netns mode");
                }
                let Some(l) = self.leader().await else {
                    return Ok(Duration::from_secs(1));
                };
                let mut cut = self.everyone_but(l);
                if f == Fault::CutLeaderButAgent1 {
                    cut.retain(|p| *p != self.cluster.layout.agent_peer(1));
                }
                self.cluster.net.cut(&[Peer::Node(l as u8)], &cut);
                let who = if f == Fault::CutLeaderButAgent1 {
                    "cut from the other nodes, agent 2 and up and the clients; agent-1 still reaches it"
                } else {
                    "isolated from every node, agent and client"
                };
                self.note(
                    "partition",
                    format!(
                        "node {l} (the leader) {who}, by dropped packets: {}",
                        self.cluster.net.describe()
                    ),
                );
                // Past the server's agent TTL (counted from the new
                // leader's election): an agent that did not reach the new
                // leader by then is marked down.
                let ttl = self.cluster.layout.agent_ttl_ms;
                sleep(Duration::from_millis(ttl + self.rng.gen_range(1500..2500))).await;
                self.heal()?;
                Ok(Duration::from_secs(3))
            }
            Fault::PauseLeaderPastAgentTtl => {
                let Some(l) = self.leader().await else {
                    return Ok(Duration::from_secs(1));
                };
                // The layout's TTL is the server's; agents fence themselves
                // after 60% of it. Pause between the two.
                let server_ttl = self.cluster.layout.agent_ttl_ms;
                let agent_ttl = server_ttl * 6 / 10;
                let hold = self.rng.gen_range(
                    agent_ttl + (server_ttl - agent_ttl) / 4
                        ..agent_ttl + (server_ttl - agent_ttl) * 3 / 4,
                );
                self.cluster.node(l).proc.pause();
                self.note(
                    "pause",
                    format!(
                        "node {l} (the leader) for {hold} ms: past the agents' lease ({agent_ttl} ms), \
                         short of the server's agent TTL ({server_ttl} ms)"
                    ),
                );
                sleep(Duration::from_millis(hold)).await;
                self.cluster.node(l).proc.resume();
                self.note("resume", format!("node {l}"));
                Ok(Duration::from_secs(3))
            }
            Fault::DrainUnderFaults => self.drain_under_faults(round).await,
            Fault::TokenRevoked => self.revoke_under_faults(round).await,
            Fault::KillAgent => {
                let k = 1;
                let id = self.cluster.layout.agent_id(k as u8);
                self.cluster.agents[k - 1].kill();
                // The checker: this agent's workers running now end within
                // 1 s of this event.
                self.history.record(Event {
                    agent: Some(id.clone()),
                    detail: Some(format!("agent-{k} SIGKILLed")),
                    ..Event::new("nemesis", "event", "kill-agent")
                });
                tracing::info!(fault = "kill-agent", agent = %id, "nemesis");
                sleep(Duration::from_millis(self.rng.gen_range(300..1500))).await;
                // A new process under the same id, while the old lease runs.
                self.cluster.restart_agent(k)?;
                self.note("restart", format!("agent-{k}"));
                Ok(Duration::from_secs(2))
            }
            Fault::DuplicateAgentId => {
                let k = 1;
                let id = self.cluster.layout.agent_id(k as u8);
                if !self.cluster.agents[k - 1].running() {
                    self.cluster.restart_agent(k)?;
                }
                let dup = self.cluster.start_duplicate_agent(k)?;
                self.note(
                    "duplicate",
                    format!("a second process under {id} ({})", dup.log.display()),
                );
                // The first process is told its id was taken over: it stops
                // its workers and exits 6.
                let status = self.cluster.agents[k - 1]
                    .wait_exit(Duration::from_secs(15))
                    .await;
                let code = status.and_then(|s| s.code());
                self.history.record(Event {
                    agent: Some(id.clone()),
                    accepted: Some(code == Some(6)),
                    detail: Some(format!(
                        "the first process under {id} exited {status:?} (expected code 6): {}",
                        self.cluster.agents[k - 1]
                            .last_log_line("took this agent id over")
                            .unwrap_or_else(|| "no log line saying its id was taken over".into())
                    )),
                    ..Event::new("nemesis", "event", "displaced")
                });
                if status.is_none() {
                    self.cluster.agents[k - 1].kill();
                }
                self.cluster.replace_agent(k, dup);
                Ok(Duration::from_secs(2))
            }
            Fault::PreemptUnderFaults => self.preempt_under_faults(round).await,
            Fault::Mix => unreachable!("Mix picks a concrete fault"),
        }
    }

    /// One round of preempt-under-faults: by turns, SIGKILL the leader,
    /// SIGSTOP an agent within its lease (its stop, suspend and resume
    /// orders wait, its reports come late), SIGTERM the leader (a graceful
    /// stop: the new leader re-derives the orders of committed
    /// preemptions), each restarted or resumed.
    async fn preempt_under_faults(&mut self, round: u32) -> anyhow::Result<Duration> {
        if round == 0 {
            // The agents fill with offline work first, so the faults find
            // preemptions on their way.
            sleep(Duration::from_millis(1500)).await;
        }
        match round % 3 {
            0 => {
                let Some(l) = self.leader().await else {
                    return Ok(Duration::from_secs(1));
                };
                self.cluster.node(l).proc.kill();
                self.note("kill", format!("node {l} (the leader)"));
                sleep(Duration::from_millis(self.rng.gen_range(500..1500))).await;
                self.cluster.restart(l)?;
                self.note("restart", format!("node {l}"));
            }
            1 => {
                let k = 1 + (round as usize / 3 % self.cluster.agents.len());
                self.cluster.agents[k - 1].pause();
                self.note("pause", format!("agent-{k} (within its lease)"));
                // At most a third of the lease: it renews as soon as it
                // runs again, and its workers never outlive its lease.
                let ttl = self.cluster.layout.agent_ttl_ms;
                sleep(Duration::from_millis(self.rng.gen_range(ttl / 6..ttl / 3))).await;
                self.cluster.agents[k - 1].resume();
                self.note("resume", format!("agent-{k}"));
            }
            _ => {
                let Some(l) = self.leader().await else {
                    return Ok(Duration::from_secs(1));
                };
                let proc = &mut self.cluster.node(l).proc;
                proc.terminate();
                let status = proc.wait_exit(SHUTDOWN_BOUND).await;
                if status.is_none() {
                    proc.kill();
                }
                self.note(
                    "sigterm",
                    format!(
                        "node {l} (the leader): {}",
                        status.map_or("did not exit; killed".to_string(), |s| s.to_string())
                    ),
                );
                sleep(Duration::from_millis(self.rng.gen_range(200..800))).await;
                self.cluster.restart(l)?;
                self.note("restart", format!("node {l}"));
            }
        }
        Ok(Duration::from_millis(self.rng.gen_range(800..1500)))
    }
}
