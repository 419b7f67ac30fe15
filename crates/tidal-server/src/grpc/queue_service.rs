//! `tidal.v1.Queues`: create or change a queue's weight and strategy; list.

use std::sync::Arc;

use tidal_core::command::{Command, Response as CoreResponse};
use tidal_core::limits::validate_name;
use tidal_core::model::Strategy;
use tidal_proto::v1::{self, queues_server::Queues};
use tonic::{Request, Response, Status};

use super::convert;
use crate::error::ServerError;
use crate::leader::engine::{Event, Work};
use crate::node::Node;

pub struct QueueService {
    pub node: Arc<Node>,
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
        let strategy: Strategy = req.strategy.parse().map_err(ServerError::InvalidArgument)?;
        let (resp, _) = self
            .node
            .propose(Command::SetQueue {
                name: req.name.clone(),
                weight: req.weight,
                strategy,
            })
            .await?;
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
            .map(|q| convert::queue_to(q, applied.state.pending_in_queue(&q.name)))
            .collect();
        Ok(Response::new(v1::ListQueuesResponse { queues }))
    }
}
