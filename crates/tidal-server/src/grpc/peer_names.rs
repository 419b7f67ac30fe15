//! Peer addresses that name a host (`node-2.dc1:7101`, `localhost:7101`) turned into the IPs the peer plane's rules compare: resolved with `lookup_host`, cached, and resolved again when the names change and every [`REFRESH_EVERY`].
//!
//! A name is resolved off the request path: a call from a member whose
//! name was never looked up is refused (as from a non-member) and wakes the
//! resolver, so the member's next try passes. A failed lookup is logged
//! and keeps the name's last known IPs until the next refresh.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::RwLock;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::auth::caller::canonical;

/// How often every name is resolved again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(30);
/// The least time between two resolutions woken by a name not yet resolved.
pub const WAKE_GAP: Duration = Duration::from_secs(1);
/// How long one lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The resolved names, read by every call on the peer listener.
#[derive(Default)]
pub struct PeerNames {
    /// `HOST:PORT` as written in the membership or a `--peer` endpoint,
    /// to its IPs (canonical, sorted, no duplicates).
    resolved: RwLock<BTreeMap<String, Vec<IpAddr>>>,
    /// Wakes [`PeerNames::run`]: a name was asked for that is not resolved.
    wake: Notify,
}

impl PeerNames {
    /// The IPs of `addr`: an IP literal's own, or a name's as last
    /// resolved (none before its first resolution).
    pub fn ips(&self, addr: &str) -> Vec<IpAddr> {
        if let Ok(a) = addr.parse::<SocketAddr>() {
            return vec![canonical(a.ip())];
        }
        let resolved = self.resolved.read().unwrap_or_else(|e| e.into_inner());
        match resolved.get(addr) {
            Some(ips) => ips.clone(),
            None => {
                self.wake.notify_one();
                Vec::new()
            }
        }
    }

    /// Resolves `names` and keeps only them. A name whose lookup fails
    /// keeps the IPs it had (none if it never resolved).
    pub async fn refresh(&self, names: &BTreeSet<String>) {
        let mut fresh = BTreeMap::new();
        for name in names {
            let found =
                tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host(name.as_str()))
                    .await
                    .map_err(|_| format!("no answer in {LOOKUP_TIMEOUT:?}"))
                    .and_then(|r| r.map_err(|e| e.to_string()));
            let ips: Option<Vec<IpAddr>> = match found {
                Ok(addrs) => {
                    let ips: BTreeSet<IpAddr> = addrs.map(|a| canonical(a.ip())).collect();
                    Some(ips.into_iter().collect())
                }
                Err(error) => {
                    tracing::warn!(name = %name, %error, "cannot resolve a peer address; \
                        calls from it are refused until it resolves");
                    // Known but without IPs: it is tried again with
                    // the next refresh, not on every call.
                    let resolved = self.resolved.read().unwrap_or_else(|e| e.into_inner());
                    Some(resolved.get(name).cloned().unwrap_or_default())
                }
            };
            if let Some(ips) = ips {
                fresh.insert(name.clone(), ips);
            }
        }
        *self.resolved.write().unwrap_or_else(|e| e.into_inner()) = fresh;
    }

    /// Resolves the names `names()` returns (None: stop) whenever `changes`
    /// sees a change and they differ (its sender gone: stop), every
    /// [`REFRESH_EVERY`], and when woken by a name not resolved yet (at
    /// most once per [`WAKE_GAP`]).
    pub async fn run<T>(
        &self,
        mut names: impl FnMut() -> Option<BTreeSet<String>>,
        mut changes: watch::Receiver<T>,
    ) {
        let mut last: Option<(BTreeSet<String>, Instant)> = None;
        let mut woken = false;
        loop {
            let Some(now_names) = names() else { return };
            let due = match &last {
                None => true,
                Some((known, at)) => {
                    *known != now_names
                        || at.elapsed() >= REFRESH_EVERY
                        || (woken && at.elapsed() >= WAKE_GAP)
                }
            };
            if due {
                if !now_names.is_empty() || last.is_some() {
                    self.refresh(&now_names).await;
                }
                last = Some((now_names, Instant::now()));
                woken = false;
            }
            let at = last.as_ref().map_or_else(Instant::now, |(_, at)| *at);
            let next = if woken {
                at + WAKE_GAP
            } else {
                at + REFRESH_EVERY
            };
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                () = tokio::time::sleep_until(next) => {}
                () = self.wake.notified() => woken = true,
            }
        }
    }
}

/// Whether `addr` names a host rather than an IP (so it needs resolving).
pub fn is_name(addr: &str) -> bool {
    addr.parse::<SocketAddr>().is_err()
}

#[cfg(test)]
#[path = "peer_names_test.rs"]
mod tests;
