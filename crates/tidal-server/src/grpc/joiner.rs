//! The leader's check of a server before `add-learner` adds it: who answers at its addresses.
//!
//! The leader asks `tidal.raft.v1.Raft/Hello` at the joiner's peer address
//! (where replication will go). A server of a build without Hello answers
//! UNIMPLEMENTED; the leader then reads `tidal.v1.Cluster/Status` at the
//! joiner's client address instead, so a rolling upgrade keeps adding
//! servers. Best effort: a server that does not answer within
//! [`JOINER_WAIT`] (not started yet) is added, and one of an older build
//! stops by itself, exit 7.

use std::time::Duration;

use tidal_proto::raft::raft_client::RaftClient;
use tidal_proto::raft::HelloRequest;
use tidal_proto::v1::{self, cluster_client::ClusterClient};
use tonic::{Code, Request};

use crate::channels::Channels;
use crate::raft::member_addr::MemberAddr;

/// How long the leader waits for each of the joiner's answers.
pub const JOINER_WAIT: Duration = Duration::from_secs(1);

/// What a joiner said about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joiner {
    pub node_id: u64,
    pub dc: String,
    /// The highest cluster format version it supports (1 for a server from
    /// before format versions, which did not say).
    pub max_format_version: u32,
    /// Where it answered.
    pub at: String,
}

/// Asks the server at `addr` who it is: Hello at its peer address, or
/// Status at its client address when it does not know Hello (plaintext
/// only: every build with TLS knows Hello). `Ok(None)` when it does not
/// answer in time. With TLS (`channels`), the joiner's certificate must
/// name node `expect_id` of `my_dc`; `Err` says why a TLS handshake
/// failed (what the certificate named, or that the CA is not ours).
pub async fn ask(
    channels: &Channels,
    addr: &MemberAddr,
    expect_id: u64,
    my_dc: &str,
) -> Result<Option<Joiner>, String> {
    let Ok(peer) = channels.member(addr.peer_or_client(), expect_id) else {
        return Ok(None);
    };
    let mut hello = Request::new(HelloRequest {
        node_id: expect_id,
        dc: my_dc.to_string(),
    });
    hello.set_timeout(JOINER_WAIT);
    let said = tokio::time::timeout(JOINER_WAIT, RaftClient::new(peer).hello(hello)).await;
    match said {
        Ok(Ok(r)) => {
            let r = r.into_inner();
            return Ok(Some(Joiner {
                node_id: r.node_id,
                dc: r.dc,
                max_format_version: r.max_format_version.max(1),
                at: addr.peer_or_client().to_string(),
            }));
        }
        Ok(Err(s)) if s.code() == Code::Unimplemented && !channels.tls() => {}
        Ok(Err(s)) if channels.tls() => {
            return match crate::channels::tls_failure(&s) {
                Some(why) => Err(why),
                None => Ok(None),
            }
        }
        _ => return Ok(None),
    }
    Ok(status(channels, addr, expect_id).await)
}

/// What a server of a build without Hello says of itself in Cluster/Status.
async fn status(channels: &Channels, addr: &MemberAddr, expect_id: u64) -> Option<Joiner> {
    let mut status = Request::new(v1::StatusRequest { digest: false });
    status.set_timeout(JOINER_WAIT);
    let said = tokio::time::timeout(
        JOINER_WAIT,
        ClusterClient::new(channels.member(&addr.client, expect_id).ok()?).status(status),
    )
    .await
    .ok()?
    .ok()?
    .into_inner();
    Some(Joiner {
        node_id: said.node_id,
        dc: said.dc,
        // 0: a server from before format versions, which supports 1 only.
        max_format_version: said.max_format_version.max(1),
        at: addr.client.clone(),
    })
}

/// Why the server that answered must not join as node `id` of `my_dc`, a
/// cluster at format version `cluster_version`, if it must not.
pub fn refusal(joiner: &Joiner, id: u64, my_dc: &str, cluster_version: u8) -> Option<String> {
    let at = &joiner.at;
    if joiner.node_id != id {
        return Some(format!(
            "the server at {at} is node {}, not node {id}: give add-learner the --id it was \
             started with, or the address of node {id}",
            joiner.node_id
        ));
    }
    if joiner.dc != my_dc {
        return Some(format!(
            "node {id} at {at} is a server of DC {:?}, not of this DC {my_dc:?}",
            joiner.dc
        ));
    }
    let max = joiner.max_format_version;
    if cluster_version > tidal_core::FORMAT_VERSION_MIN && max < u32::from(cluster_version) {
        return Some(format!(
            "node {id} at {at} supports cluster format versions {} to {max}; the cluster \
             is at version {cluster_version}: start it with a tidal that supports version \
             {cluster_version} (README: Rolling upgrade)",
            tidal_core::FORMAT_VERSION_MIN
        ));
    }
    None
}

#[cfg(test)]
#[path = "joiner_test.rs"]
mod tests;
