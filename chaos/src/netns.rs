//! The network-namespace mode (`--net netns`): faults as packets dropped by
//! nftables, not streams closed or stalled by a proxy.
//!
//! A run gets a private /24 (`10.A.B.0/24`, derived from the harness's pid
//! and checked unused) and these namespaces, named after the pid:
//!
//! - `tdPID-br`: one bridge, `br0`, that joins everything;
//! - `tdPID-nI` for node I (`10.A.B.(10+I)`), `tdPID-aK` for agent K
//!   (`10.A.B.(50+K)`), each with a veth `eth0` into the bridge;
//! - the root namespace joins the bridge through the veth `tdPIDh`, which
//!   holds `10.A.B.1` (the sink, the observer and the admin client) and
//!   `10.A.B.(150+C)` for client C of the workload, so the clients can be
//!   cut while the observer is not.
//!
//! Servers listen on their namespace's address (`ip netns exec NS tidal
//! server ...`), agents run the same way, and their workers inherit the
//! agent's namespace. A fault on the directed link `from -> to` is a rule of
//! the table `inet tidal_chaos` that drops the packets silently: in the
//! input chain of `to`'s namespace (`ip saddr FROM drop`), or, when `to` is
//! a client in the root namespace, in the output chain of `from`'s
//! (`ip daddr TO drop`). Loss is `numgen random` over the same matches.
//! The root namespace's firewall is never touched.
//!
//! Everything is removed when the [`Netns`] is dropped (also on a panic),
//! and leftovers of an earlier run with the same name, or of a run whose
//! harness is gone, are removed before a run starts.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{bail, Context};

use crate::link::{LinkFault, Peer};

/// Why a run cannot use network namespaces here; the run is skipped.
#[derive(Debug)]
pub struct Skipped(pub String);

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "skipped: {}", self.0)
    }
}

impl std::error::Error for Skipped {}

/// Whether an error says the run was skipped (and why).
pub fn skipped(e: &anyhow::Error) -> Option<&Skipped> {
    e.downcast_ref::<Skipped>()
}

/// `None` when this machine can run the netns mode; else why not.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid(2) has no preconditions and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return Some(
            "the netns mode needs root (network namespaces and nftables); run it as root, as CI does"
                .into(),
        );
    }
    for tool in ["ip", "nft"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            let package = if tool == "ip" { "iproute2" } else { "nftables" };
            return Some(format!(
                "the netns mode needs `{tool}` (apt-get install {package}), which is not on PATH"
            ));
        }
    }
    None
}

/// The name of the nftables table of the faults, in each namespace.
const TABLE: &str = "tidal_chaos";

/// The network of one run; removes everything it created when dropped.
pub struct Netns {
    /// `tdPID`: the prefix of every namespace and of the root-side veth.
    name: String,
    /// `10.A.B.0/24`.
    net: [u8; 3],
    nodes: usize,
    agents: usize,
    clients: usize,
    /// The ruleset last written to each namespace.
    applied: Mutex<BTreeMap<String, String>>,
    /// Faults that could not be applied (the run fails with them).
    errors: Mutex<Vec<String>>,
}

impl fmt::Debug for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Netns({}, {}.{}.{}.0/24)",
            self.name, self.net[0], self.net[1], self.net[2]
        )
    }
}

/// Runs `ip ARGS`; fails with its stderr.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `ip ARGS`, ignoring failure (clean-up of what may not exist).
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Feeds `rules` to `nft -f -` inside namespace `ns`.
fn nft(ns: &str, rules: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft")?;
    child
        .stdin
        .take()
        .context("nft's stdin")?
        .write_all(rules.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft in {ns} failed: {}\n{rules}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The namespaces and root-side veths of runs whose harness is gone.
fn orphans() -> Vec<String> {
    let mut prefixes = Vec::new();
    let dead = |name: &str| -> Option<String> {
        let digits: String = name
            .strip_prefix("td")?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let pid: u32 = digits.parse().ok()?;
        let mine = pid == std::process::id();
        (!mine && !Path::new(&format!("/proc/{pid}")).exists()).then(|| format!("td{pid}"))
    };
    if let Ok(dir) = std::fs::read_dir("/var/run/netns") {
        for e in dir.flatten() {
            if let Some(p) = dead(&e.file_name().to_string_lossy()) {
                prefixes.push(p);
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/sys/class/net") {
        for e in dir.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.ends_with('h') {
                if let Some(p) = dead(&n) {
                    prefixes.push(p);
                }
            }
        }
    }
    prefixes.sort();
    prefixes.dedup();
    prefixes
}

/// Removes every namespace and the root-side veth of run `name`.
fn remove(name: &str) {
    if let Ok(dir) = std::fs::read_dir("/var/run/netns") {
        let mut spaces: Vec<String> = dir
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.strip_prefix(name).is_some_and(|r| r.starts_with('-')))
            .collect();
        // Members before the bridge.
        spaces.sort_by_key(|n| n.ends_with("-br"));
        for ns in spaces {
            ip_quiet(&["netns", "del", &ns]);
        }
    }
    if Path::new(&format!("/sys/class/net/{name}h")).exists() {
        ip_quiet(&["link", "del", &format!("{name}h")]);
    }
}

/// The /24s the root namespace already has addresses in.
fn used_nets() -> Vec<[u8; 3]> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.split_whitespace()
        .filter_map(|w| w.split('/').next()?.parse::<Ipv4Addr>().ok())
        .map(|a| {
            let o = a.octets();
            [o[0], o[1], o[2]]
        })
        .collect()
}

impl Netns {
    /// Creates the namespaces, the bridge and the addresses of a run of
    /// `nodes` servers, `agents` agents and `clients` clients.
    pub fn create(nodes: usize, agents: usize, clients: usize) -> anyhow::Result<Netns> {
        if let Some(why) = unavailable() {
            return Err(Skipped(why).into());
        }
        if nodes > 39 || agents > 99 || clients > 99 {
            bail!("the netns mode takes at most 39 nodes, 99 agents and 99 clients");
        }
        let pid = std::process::id();
        let name = format!("td{pid}");
        for stale in orphans() {
            tracing::warn!(run = %stale, "removing the namespaces of a chaos run whose harness is gone");
            remove(&stale);
        }
        // A leftover of an earlier run of this process (or of a crashed one
        // with the same pid).
        remove(&name);
        // 10.64.0.0-10.127.255.0, from the pid, past any /24 in use.
        let used = used_nets();
        let mut k = pid;
        let net = loop {
            let cand = [10, 64 + ((k >> 8) % 64) as u8, (k % 256) as u8];
            if !used.contains(&cand) {
                break cand;
            }
            k = k.wrapping_add(1);
            if k.wrapping_sub(pid) > 16_384 {
                bail!("no free /24 in 10.64.0.0/10");
            }
        };
        let n = Netns {
            name,
            net,
            nodes,
            agents,
            clients,
            applied: Mutex::default(),
            errors: Mutex::default(),
        };
        // From here on, a failure drops `n`, which removes what was made.
        n.build()
            .with_context(|| format!("creating the network of the run ({n:?})"))?;
        tracing::info!(net = ?n, "network namespaces ready");
        Ok(n)
    }

    fn build(&self) -> anyhow::Result<()> {
        let br = self.bridge_ns();
        ip(&["netns", "add", &br])?;
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        let members: Vec<Peer> = (1..=self.nodes as u8)
            .map(Peer::Node)
            .chain((1..=self.agents as u8).map(Peer::Agent))
            .collect();
        for p in members {
            let ns = self.ns(p).expect("nodes and agents have namespaces");
            let port = p.to_string();
            let addr = format!("{}/24", self.ip(p));
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &br,
            ])?;
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &br, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &br, "link", "set", &port, "up"])?;
        }
        let host = self.host_veth();
        ip(&[
            "link", "add", &host, "type", "veth", "peer", "name", "host", "netns", &br,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.host_ip()),
            "dev",
            &host,
        ])?;
        for c in 1..=self.clients as u8 {
            ip(&[
                "addr",
                "add",
                &format!("{}/24", self.ip(Peer::Client(c))),
                "dev",
                &host,
            ])?;
        }
        ip(&["link", "set", &host, "up"])?;
        ip(&["-n", &br, "link", "set", "host", "master", "br0"])?;
        ip(&["-n", &br, "link", "set", "host", "up"])?;
        Ok(())
    }

    fn bridge_ns(&self) -> String {
        format!("{}-br", self.name)
    }

    fn host_veth(&self) -> String {
        format!("{}h", self.name)
    }

    /// The run's name (the prefix of its namespaces).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace a node or an agent runs in; clients run in the root.
    pub fn ns(&self, p: Peer) -> Option<String> {
        match p {
            Peer::Node(n) => Some(format!("{}-n{n}", self.name)),
            Peer::Agent(k) => Some(format!("{}-a{k}", self.name)),
            Peer::Client(_) => None,
        }
    }

    /// The address `p` has (and dials from).
    pub fn ip(&self, p: Peer) -> IpAddr {
        let host = match p {
            Peer::Node(n) => 10 + n,
            Peer::Agent(k) => 50 + k,
            Peer::Client(c) => 150 + c,
        };
        let [a, b, c] = self.net;
        IpAddr::V4(Ipv4Addr::new(a, b, c, host))
    }

    /// The root namespace's address: the sink, the observer, the admin client.
    pub fn host_ip(&self) -> IpAddr {
        let [a, b, c] = self.net;
        IpAddr::V4(Ipv4Addr::new(a, b, c, 1))
    }

    /// Makes every namespace's table say `rules` (only namespaces whose
    /// rules changed are written). Failures are kept for [`Netns::errors`].
    pub fn apply(&self, rules: &BTreeMap<(Peer, Peer), LinkFault>) {
        let mut per_ns: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
        for p in (1..=self.nodes as u8)
            .map(Peer::Node)
            .chain((1..=self.agents as u8).map(Peer::Agent))
        {
            per_ns.insert(self.ns(p).expect("a member"), Default::default());
        }
        for (&(from, to), f) in rules {
            if !f.delay.is_zero() || !f.jitter.is_zero() {
                self.error(format!(
                    "{from}->{to}: nftables cannot delay packets (the netns mode drops only)"
                ));
            }
            let verdict = if f.blocked {
                "drop".to_string()
            } else if f.loss > 0.0 {
                format!(
                    "numgen random mod 1000 < {} drop",
                    (f.loss * 1000.0).round() as u32
                )
            } else {
                continue;
            };
            // At the receiver when it has a namespace, so the sender's stack
            // sees nothing; else (a client) at the sender's output.
            if let Some(ns) = self.ns(to) {
                let rule = format!("ip saddr {} {verdict}", self.ip(from));
                per_ns.entry(ns).or_default().0.push(rule);
            } else if let Some(ns) = self.ns(from) {
                let rule = format!("ip daddr {} {verdict}", self.ip(to));
                per_ns.entry(ns).or_default().1.push(rule);
            }
        }
        let mut applied = self.applied.lock().expect("netns lock poisoned");
        for (ns, (input, output)) in per_ns {
            let text = ruleset(&input, &output);
            let before = applied.get(&ns).map(String::as_str).unwrap_or(EMPTY);
            if before == text {
                continue;
            }
            match nft(&ns, &text) {
                Ok(()) => {
                    applied.insert(ns, text);
                }
                Err(e) => self.error(format!("{e:#}")),
            }
        }
    }

    fn error(&self, e: String) {
        tracing::error!(error = %e, "a fault could not be applied");
        self.errors.lock().expect("netns lock poisoned").push(e);
    }

    /// Faults that could not be applied so far.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().expect("netns lock poisoned").clone()
    }

    /// The current rules of every namespace, for the record.
    pub fn describe(&self) -> String {
        let applied = self.applied.lock().expect("netns lock poisoned");
        applied
            .iter()
            .filter(|(_, t)| t.as_str() != EMPTY)
            .map(|(ns, t)| {
                let rules: Vec<&str> = t
                    .lines()
                    .map(str::trim)
                    .filter(|l| l.starts_with("ip "))
                    .collect();
                format!("{ns}: {}", rules.join("; "))
            })
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

/// What a namespace without faults has: no table.
const EMPTY: &str = "table inet tidal_chaos\ndelete table inet tidal_chaos\n";

/// One atomic nft transaction that replaces the table with these rules.
fn ruleset(input: &[String], output: &[String]) -> String {
    let mut s = EMPTY.to_string();
    if input.is_empty() && output.is_empty() {
        return s;
    }
    s.push_str(&format!("table inet {TABLE} {{\n"));
    for (chain, rules) in [("input", input), ("output", output)] {
        s.push_str(&format!(
            "  chain {chain} {{\n    type filter hook {chain} priority 0; policy accept;\n"
        ));
        for r in rules {
            s.push_str(&format!("    {r}\n"));
        }
        s.push_str("  }\n");
    }
    s.push_str("}\n");
    s
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove(&self.name);
        tracing::info!(net = ?self, "network namespaces removed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_drops_at_the_receiver_or_at_the_senders_output() {
        let n = Netns {
            name: "tdtest".into(),
            net: [10, 70, 3],
            nodes: 3,
            agents: 2,
            clients: 2,
            applied: Mutex::default(),
            errors: Mutex::default(),
        };
        assert_eq!(n.ip(Peer::Node(2)).to_string(), "10.70.3.12");
        assert_eq!(n.ip(Peer::Agent(1)).to_string(), "10.70.3.51");
        assert_eq!(n.ip(Peer::Client(3)).to_string(), "10.70.3.153");
        assert_eq!(n.host_ip().to_string(), "10.70.3.1");
        assert_eq!(n.ns(Peer::Node(1)).as_deref(), Some("tdtest-n1"));
        assert_eq!(n.ns(Peer::Client(1)), None);
        let text = ruleset(&["ip saddr 10.70.3.12 drop".into()], &[]);
        assert!(text.starts_with(EMPTY), "{text}");
        assert!(text.contains("type filter hook input priority 0; policy accept;"));
        assert!(text.contains("    ip saddr 10.70.3.12 drop\n"));
        assert_eq!(ruleset(&[], &[]), EMPTY);
        // Nothing to clean up: the test made no namespace.
        std::mem::forget(n);
    }
}
