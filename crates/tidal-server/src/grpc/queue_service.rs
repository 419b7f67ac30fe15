//! `tidal.v1.Queues`: create or change a queue's weight and strategy; list; the classes' headroom.

use std::sync::Arc;

use tidal_core::command::{Command, Response as CoreResponse};
use tidal_core::lifecycle::Headroom;
use tidal_core::limits::validate_name;
use tidal_core::model::Strategy;
use tidal_core::placement::types::{PlaceStrategy, QueuePlacement, PLACEMENT_VERSION};
use tidal_proto::v1::{self, queues_server::Queues};
use tonic::{Request, Response, Status};

use super::convert;
use super::convert_placement::{self, QueueStrategy};
use crate::error::ServerError;
use crate::leader::engine::{Event, Work};
use crate::node::Node;

pub struct QueueService {
    pub node: Arc<Node>,
}

/// The most slots or GPUs a class's headroom may keep.
pub const MAX_HEADROOM: u32 = 1_000_000;

/// The class a headroom is set for: online or nearline (nothing is below
/// offline, and unspecified would be a guess).
fn headroom_class(p: i32) -> Result<tidal_core::model::Priority, ServerError> {
    match v1::Priority::try_from(p) {
        Ok(v1::Priority::Online | v1::Priority::Nearline) => convert::priority_from(p),
        Ok(v1::Priority::Offline) => Err(ServerError::InvalidArgument(
            "headroom for offline keeps nothing from anyone (no class is below it): set it for \
             online or nearline"
                .into(),
        )),
        _ => Err(ServerError::InvalidArgument(format!(
            "headroom class {p} is not valid: use 1 (online) or 2 (nearline)"
        ))),
    }
}

#[tonic::async_trait]
impl Queues for QueueService {
    async fn set(
        &self,
        request: Request<v1::SetQueueRequest>,
    ) -> Result<Response<v1::Queue>, Status> {
        let req = request.into_inner();
        validate_name("queue", &req.name, &self.node.config.limits).map_err(ServerError::from)?;
        if !(1..=1000).contains(&req.weight) {
            return Err(ServerError::InvalidArgument(format!(
                "queue weight {} is out of range: use 1..=1000",
                req.weight
            ))
            .into());
        }
        let version = self.node.state.read().state.cluster_version();
        let command = match convert_placement::strategy_from(&req.strategy, &req.spread_key)? {
            // From version 5 on every strategy is set with SetQueueWith, so
            // a version-1 strategy replaces a version-5 one set before.
            QueueStrategy::V1(strategy) if version >= PLACEMENT_VERSION => Command::SetQueueWith {
                name: req.name.clone(),
                weight: req.weight,
                placement: QueuePlacement {
                    strategy: match strategy {
                        Strategy::LeastLoaded => PlaceStrategy::LeastLoaded,
                        Strategy::WeightedRoundRobin => PlaceStrategy::WeightedRoundRobin,
                    },
                },
            },
            QueueStrategy::V1(strategy) => Command::SetQueue {
                name: req.name.clone(),
                weight: req.weight,
                strategy,
            },
            QueueStrategy::Placement(placement) => Command::SetQueueWith {
                name: req.name.clone(),
                weight: req.weight,
                placement,
            },
        };
        // FAILED_PRECONDITION below version 5 (a new cluster that is about
        // to raise it is waited for).
        self.node.await_format_version(&command).await?;
        let (resp, _) = self.node.propose(command).await?;
        if let CoreResponse::Rejected(r) = resp {
            return Err(ServerError::Rejected(r).into());
        }
        if let Some(l) = self.node.leadership() {
            l.notify(Event::Work(Work::QueueSet));
        }
        let applied = self.node.state.read();
        let q = applied
            .state
            .queue(&req.name)
            .ok_or_else(|| ServerError::Internal("queue missing after set".into()))?;
        Ok(Response::new(convert::queue_to(
            &applied.state,
            q,
            applied.state.pending_in_queue(&q.name),
        )))
    }

    async fn list(
        &self,
        _request: Request<v1::ListQueuesRequest>,
    ) -> Result<Response<v1::ListQueuesResponse>, Status> {
        self.node.linearizable().await?;
        let applied = self.node.state.read();
        let queues = applied
            .state
            .queues()
            .map(|q| convert::queue_to(&applied.state, q, applied.state.pending_in_queue(&q.name)))
            .collect();
        let headroom = convert::headroom_to(&applied.state);
        Ok(Response::new(v1::ListQueuesResponse { queues, headroom }))
    }

    async fn set_headroom(
        &self,
        request: Request<v1::SetHeadroomRequest>,
    ) -> Result<Response<v1::ListHeadroomResponse>, Status> {
        let req = request.into_inner();
        let class = headroom_class(req.class)?;
        for (what, n) in [("slots", req.slots), ("gpus", req.gpus)] {
            if n > MAX_HEADROOM {
                return Err(ServerError::InvalidArgument(format!(
                    "headroom of {n} {what} is over the limit of {MAX_HEADROOM}"
                ))
                .into());
            }
        }
        let (resp, _) = self
            .node
            .propose(Command::SetHeadroom {
                class,
                headroom: Headroom {
                    slots: req.slots,
                    gpus: req.gpus,
                },
            })
            .await?;
        if let CoreResponse::Rejected(r) = resp {
            return Err(ServerError::Rejected(r).into());
        }
        if let Some(l) = self.node.leadership() {
            // Less headroom may let waiting work in.
            l.notify(Event::Work(Work::QueueSet));
        }
        let applied = self.node.state.read();
        Ok(Response::new(v1::ListHeadroomResponse {
            headroom: convert::headroom_to(&applied.state),
        }))
    }
}
