//! The format-version raiser (README: Rolling upgrade): commits `SetClusterVersion` once every member supports a higher version.
//!
//! Every member of the cluster, voters and learners alike, names the highest
//! version it supports in its Raft replies; the driver passes them in
//! ([`MemberFormat`], with how long ago each replied). A reply counts only if
//! it is recent (within the election timeout), so a member that is down, or
//! was just restarted with another build, holds the version where it is until
//! it answers again. Learners count because they apply the same log: one that
//! could not read an entry would stop. It looks every two Raft heartbeats.

use tidal_core::command::{Command, Response};

use super::config::EngineConfig;
use super::ctx::{Ctx, Purpose};
use super::event::{MemberFormat, Now, ProposeError};

/// The version every member supports, if it is above `current`: this node
/// supports `supported`, and each other member's reply must be at most
/// `fresh_ms` old.
pub fn version_to_raise(
    supported: u8,
    current: u8,
    others: &[MemberFormat],
    fresh_ms: u64,
) -> Option<u8> {
    let mut common = supported;
    for member in others {
        match member.format {
            Some((max, age)) if age <= fresh_ms => common = common.min(max),
            _ => return None,
        }
    }
    (common > current).then_some(common)
}

/// The raiser's timer and its proposal in flight.
#[derive(Debug, Default)]
pub(crate) struct Upgrade {
    next: Option<u64>,
    in_flight: bool,
}

impl Upgrade {
    /// How often it looks.
    pub(crate) fn every_ms(cfg: &EngineConfig) -> u64 {
        cfg.raft_heartbeat_ms.max(10) * 2
    }

    pub(crate) fn start(&mut self, now: Now) {
        self.next = Some(now.mono_ms);
    }

    /// When the next look is due, unless a raise is in flight. The driver
    /// passes the members' formats in ([`Upgrade::told`]) before each timer
    /// tick, and the look happens then, on what they say as of now.
    pub(crate) fn next_wake(&self) -> Option<u64> {
        self.next.filter(|_| !self.in_flight)
    }

    /// The other members' formats as of now: looks if a look is due.
    pub(crate) fn told(&mut self, others: &[MemberFormat], cx: &mut Ctx) {
        let now = cx.now.mono_ms;
        match self.next {
            Some(at) if at <= now && !self.in_flight => {}
            _ => return,
        }
        self.next = Some(now + Upgrade::every_ms(cx.cfg));
        let current = cx.state.cluster_version();
        let Some(version) = version_to_raise(
            cx.cfg.supported_format,
            current,
            others,
            cx.cfg.election_timeout_max_ms,
        ) else {
            return;
        };
        cx.out.propose(
            Purpose::RaiseVersion {
                from: current,
                to: version,
            },
            Command::SetClusterVersion { version },
        );
        self.in_flight = true;
    }

    pub(crate) fn committed(
        &mut self,
        (from, to): (u8, u8),
        index: u64,
        response: Response,
        cfg: &EngineConfig,
    ) {
        self.in_flight = false;
        match response {
            Response::Ok => tracing::info!(
                node_id = cfg.node_id,
                from,
                to,
                log_index = index,
                "every member supports it: the cluster format version is raised"
            ),
            other => {
                tracing::debug!(node_id = cfg.node_id, version = to, response = ?other, "cluster format version not raised")
            }
        }
    }

    pub(crate) fn not_committed(&mut self, to: u8, error: &ProposeError, cfg: &EngineConfig) {
        self.in_flight = false;
        tracing::warn!(node_id = cfg.node_id, version = to, error = %error, "could not raise the cluster format version");
    }
}

#[cfg(test)]
#[path = "upgrade_test.rs"]
mod tests;
