//! The rules of every link of a run: what the nemesis changes and what the
//! proxies (or, in the netns mode, nftables) enforce.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::link::{LinkFault, Peer};
use crate::netns::Netns;

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
