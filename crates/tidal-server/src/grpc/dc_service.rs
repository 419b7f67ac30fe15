//! `tidal.v1.Dcs`: the cross-DC link. `Exchange` takes a peer's records and
//! summary (on a follower it is passed to the leader, so peers may dial any
//! server); `Status` is `tidal dc status`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tidal_core::command::{Command, Response as CoreResponse};
use tidal_proto::v1::{self, dcs_client::DcsClient, dcs_server::Dcs};
use tonic::{Request, Response, Status};

use super::auth_layer::PeerPlane;
use super::conn;
use crate::auth::policy;
use crate::channels::Channels;
use crate::error::ServerError;
use crate::leader::engine::{Event, Work};
use crate::links::{ExchangeBody, ExchangeReply, Summary};
use crate::links::{MAX_EXCHANGE_MESSAGE, SHIP_BATCH};
use crate::node::Node;

pub struct DcService {
    pub node: Arc<Node>,
    /// Channels to this DC's leader, for passing exchanges on.
    channels: Channels,
    /// The peer plane's rules (enforced with `--peer-listen` or TLS).
    plane: Arc<PeerPlane>,
}

impl DcService {
    pub fn new(node: Arc<Node>, plane: Arc<PeerPlane>) -> DcService {
        let channels = Channels::new(node.config.source_ip, Duration::from_secs(2), |e| {
            e.timeout(Duration::from_secs(10))
        })
        .with_tls(&node.config.dc, node.tls.clone());
        DcService {
            node,
            channels,
            plane,
        }
    }

    /// A follower passes the exchange to its leader (one hop), at the
    /// leader's peer address.
    async fn pass_on(&self, request: v1::ExchangeRequest) -> Result<v1::ExchangeResponse, Status> {
        let Some((leader, addr)) = self.node.leader_peer_addr() else {
            return Err(ServerError::Unavailable(format!(
                "DC {} has no leader right now; retry",
                self.node.config.dc
            ))
            .into());
        };
        let mut client = DcsClient::new(
            self.channels
                .member(&addr, leader)
                .map_err(ServerError::Internal)?,
        )
        .max_decoding_message_size(MAX_EXCHANGE_MESSAGE)
        .max_encoding_message_size(MAX_EXCHANGE_MESSAGE);
        let mut request = Request::new(request);
        request
            .metadata_mut()
            .insert(PASSED_ON, "1".parse().expect("ascii"));
        client.exchange(request).await.map(Response::into_inner)
    }

    async fn take(&self, origin: &str, body: ExchangeBody) -> Result<ExchangeReply, ServerError> {
        let node = &self.node;
        node.peers.summary(origin, body.summary);
        let (verdicts, hwm) = if body.records.is_empty() {
            let applied = node.state.read();
            (
                Vec::new(),
                applied.state.inbound(origin).map_or(0, |i| i.hwm),
            )
        } else {
            let hwm = node.state.read().state.inbound(origin).map_or(0, |i| i.hwm);
            let again = body.records.iter().filter(|(seq, _)| *seq <= hwm).count();
            if again > 0 {
                // A lost answer or a new leader there: harmless, answered as before.
                tracing::info!(
                    origin,
                    records = again,
                    hwm,
                    "records ingested before were sent again"
                );
            }
            match node
                .propose(Command::Ingest {
                    origin: origin.to_string(),
                    records: body.records,
                })
                .await?
            {
                (
                    CoreResponse::Ingested {
                        verdicts,
                        hwm,
                        cancelled,
                    },
                    _,
                ) => {
                    if let Some(l) = node.leadership() {
                        for (task, agent, token) in cancelled {
                            l.notify(Event::Cancelled {
                                agent,
                                task,
                                token,
                                reason: "cancelled in the DC it came from".into(),
                            });
                        }
                    }
                    (verdicts, hwm)
                }
                (other, _) => {
                    return Err(ServerError::Internal(format!(
                        "unexpected answer to ingest: {other:?}"
                    )))
                }
            }
        };
        if !verdicts.is_empty() {
            // New tasks to dispatch.
            if let Some(l) = node.leadership() {
                l.notify(Event::Work(Work::Ingested));
            }
        }
        let summary = Summary::of(&node.state.read().state);
        Ok(ExchangeReply {
            summary,
            verdicts,
            hwm,
        })
    }
}

/// Marks an exchange a follower passed on, so it is never passed twice.
const PASSED_ON: &str = "tidal-passed-on";

#[tonic::async_trait]
impl Dcs for DcService {
    #[tracing::instrument(skip_all, fields(node_id = self.node.id))]
    async fn exchange(
        &self,
        request: Request<v1::ExchangeRequest>,
    ) -> Result<Response<v1::ExchangeResponse>, Status> {
        let passed_on = request.metadata().get(PASSED_ON).is_some();
        let caller = conn::caller(&request).cloned();
        let req = request.into_inner();
        let node = &self.node;
        let me = &node.config.dc;
        if req.target_dc != *me {
            return Err(ServerError::FailedPrecondition(format!(
                "this server is in DC {me:?}, not {:?}: check the peer's endpoints",
                req.target_dc
            ))
            .into());
        }
        if !node.peers.is_peer(&req.origin_dc) {
            return Err(ServerError::FailedPrecondition(format!(
                "DC {:?} is not a peer of DC {me:?}: add it to [[peers]] on every server of {me:?}",
                req.origin_dc
            ))
            .into());
        }
        if let Some(caller) = caller.as_ref().filter(|_| self.plane.tls()) {
            policy::exchange_origin_tls(
                caller,
                &req.origin_dc,
                self.plane.dc(),
                &self.plane.member_ids(),
                passed_on,
            )
            .map_err(|denied| self.plane.deny(caller, denied))?;
        } else if let Some(caller) = caller.filter(|_| self.plane.enforced()) {
            let members = self
                .plane
                .members()
                .into_iter()
                .filter_map(|m| m.ip)
                .collect();
            policy::exchange_origin(
                &caller,
                &req.origin_dc,
                &self.plane.peer_dc_ips(&req.origin_dc),
                &members,
                passed_on,
            )
            .map_err(|denied| self.plane.deny(&caller, denied))?;
        }
        if node.leadership().is_none() {
            if passed_on {
                return Err(node.not_leader().into());
            }
            return self.pass_on(req).await.map(Response::new);
        }
        let body: ExchangeBody = tidal_store::codec::decode("exchange", &req.body)
            .map_err(|e| ServerError::InvalidArgument(format!("exchange body: {e}")))?;
        if body.records.len() > SHIP_BATCH {
            return Err(ServerError::ResourceExhausted(format!(
                "exchange carries {} records, over the limit of {SHIP_BATCH}",
                body.records.len()
            ))
            .into());
        }
        let reply = self.take(&req.origin_dc, body).await?;
        let body = tidal_store::codec::encode("exchange reply", &reply)
            .map_err(|e| ServerError::Internal(format!("encoding the reply: {e}")))?;
        Ok(Response::new(v1::ExchangeResponse {
            dc: me.clone(),
            body,
        }))
    }

    async fn status(
        &self,
        _request: Request<v1::DcStatusRequest>,
    ) -> Result<Response<v1::DcStatusResponse>, Status> {
        let node = &self.node;
        node.require_leader()?;
        let now = Instant::now();
        let now_ms = crate::clock::now_ms();
        let ago = |t: Option<Instant>| t.map_or(-1, |t| now.duration_since(t).as_millis() as i64);
        let applied = node.state.read();
        let state = &applied.state;
        let peers = node
            .peers
            .each(state)
            .map(|(p, info, outbox)| v1::PeerStatus {
                dc: p.dc.clone(),
                endpoints: p.endpoints.clone(),
                link: match info.up {
                    None => "unknown",
                    Some(true) => "up",
                    Some(false) => "down",
                }
                .to_string(),
                last_error: info.last_error.clone(),
                last_ack_ms_ago: ago(info.last_ack),
                outbox_depth: outbox.map_or(0, |o| o.records.len() as u64),
                oldest_unshipped_ms: outbox
                    .and_then(|o| o.oldest_ms())
                    .map_or(-1, |t| now_ms.saturating_sub(t) as i64),
                acked_seq: outbox.map_or(0, |o| o.acked),
                next_seq: outbox.map_or(1, |o| o.next_seq.max(1)),
                summary_age_ms: ago(info.summary.as_ref().map(|(_, t)| *t)),
                summary: info.summary.map(|(s, _)| summary_to(&s)),
                inbound_hwm: state.inbound(&p.dc).map_or(0, |i| i.hwm),
                outbox_limit: node.config.forwarding.outbox_limit as u64,
            })
            .collect();
        Ok(Response::new(v1::DcStatusResponse {
            dc: node.config.dc.clone(),
            leader_id: node.id,
            peers,
        }))
    }
}

fn summary_to(s: &Summary) -> v1::CapabilitySummary {
    v1::CapabilitySummary {
        groups: s
            .capabilities
            .groups
            .iter()
            .map(|g| v1::CapabilityGroup {
                task_types: g.task_types.iter().cloned().collect(),
                pipelines: g.pipelines.iter().cloned().collect(),
                models: g.models.iter().cloned().collect(),
                max_gpus: g.max_gpus,
                gpu_memory_mb: g.gpu_memory_mb,
                agents: g.agents,
                slots: g.slots,
                free_slots: g.free_slots,
            })
            .collect(),
        pending: s.pending,
    }
}
