//! Placement (cluster format version 5): what tasks ask of placement (label
//! constraints, tags and tag rules, GPU shapes, a hash key), the GPU devices
//! their assignments hold, queues' strategies and GPU models' weights.
//!
//! - `types`: the data and the limits.
//! - `constraint`, `rules`, `devices`, `hrw`: pure matchers shared by the
//!   planner and by apply.

mod book;
pub mod check;
pub mod constraint;
pub mod devices;
pub mod explain;
pub mod hrw;
pub mod rules;
pub mod types;
pub mod validate;

use std::collections::BTreeMap;

use crate::access::types::{usage_index, Principal};
use crate::command::{ApplyCtx, Rejection, Response};
use crate::lifecycle::types::TaskOptions;
use crate::limits::{validate_name, Limits};
use crate::model::{Agent, AgentId, Strategy, TaskSpec};
use crate::state::State;
use types::{
    PlaceAsk, PlaceStrategy, Placement, QueuePlacement, MAX_GPU_WEIGHT_MILLI, PLACEMENT_VERSION,
};

impl State {
    /// The placement state (version 5).
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Whether the cluster applies the placement rules (version 5 on).
    pub(crate) fn placement_on(&self) -> bool {
        self.cluster_version >= PLACEMENT_VERSION
    }

    /// Whether the task's tenant may run it (on `agent`, or on any agent)
    /// without passing a running quota, counting the least its GPUs could
    /// weigh there ([`check::gpu_milli_floor`]; 1000 per GPU below version
    /// 5). `Assign` checks the devices it actually takes.
    pub(crate) fn admits_at_least(
        &self,
        agent: Option<&Agent>,
        spec: &TaskSpec,
        ask: Option<&PlaceAsk>,
    ) -> Result<(), Rejection> {
        let milli = if self.placement_on() {
            match check::gpu_milli_floor(agent, spec, ask, &self.placement) {
                Some(milli) => milli,
                // No shape fits the agent: the device check says why.
                None => return Ok(()),
            }
        } else {
            u64::from(spec.gpus) * 1000
        };
        self.access.admit_running(spec, milli)
    }

    /// Sets the placement state of a state read from a snapshot (tidal-store
    /// keeps it beside the state) and rebuilds what derives from it. Not a
    /// replicated change.
    pub fn restore_placement(&mut self, placement: Placement) {
        self.placement = placement;
        let agents = self.agents.values().map(|a| (&a.spec, &a.tasks));
        self.placement.reindex(agents);
        let placement = &self.placement;
        self.access.usage = usage_index(&self.tasks, |id, spec| placement.held_gpu_milli(id, spec));
    }

    /// The strategy a queue's tasks are placed by: the one set at version 5,
    /// else its version-1 strategy.
    pub fn queue_strategy(&self, queue: &str) -> PlaceStrategy {
        if let Some(q) = self.placement.queues.get(queue) {
            return q.strategy.clone();
        }
        match self.queues.get(queue).map(|q| q.strategy) {
            Some(Strategy::WeightedRoundRobin) => PlaceStrategy::WeightedRoundRobin,
            _ => PlaceStrategy::LeastLoaded,
        }
    }

    /// `SubmitWithPlacement`.
    pub(crate) fn submit_with_placement(
        &mut self,
        specs: Vec<TaskSpec>,
        place: Vec<(u32, AgentId)>,
        by: Vec<Principal>,
        opts: Vec<TaskOptions>,
        asks: Vec<PlaceAsk>,
        ctx: ApplyCtx,
    ) -> Response {
        self.submit_with(specs, place, by, opts, asks, ctx)
    }

    /// `SetQueueWith`.
    pub(crate) fn set_queue_with(
        &mut self,
        name: String,
        weight: u32,
        placement: QueuePlacement,
    ) -> Response {
        if let PlaceStrategy::Spread { key } = &placement.strategy {
            if let Err(e) = validate_name("spread key", key, &Limits::default()) {
                return Response::Rejected(e);
            }
        }
        let v1 = match placement.strategy {
            PlaceStrategy::WeightedRoundRobin => Strategy::WeightedRoundRobin,
            _ => Strategy::LeastLoaded,
        };
        let response = self.set_queue(name.clone(), weight, v1);
        if response == Response::Ok {
            if placement == QueuePlacement::default() {
                self.placement.queues.remove(&name);
            } else {
                self.placement.queues.insert(name, placement);
            }
        }
        response
    }

    /// `SetGpuWeights`.
    pub(crate) fn set_gpu_weights(&mut self, weights: BTreeMap<String, u32>) -> Response {
        for (model, w) in &weights {
            if let Err(e) = validate_name("GPU model", model, &Limits::default()) {
                return Response::Rejected(e);
            }
            if !(1..=MAX_GPU_WEIGHT_MILLI).contains(w) {
                return Response::Rejected(Rejection::Invalid(format!(
                    "GPU model {model:?} weight {w} is out of range: use 1..={MAX_GPU_WEIGHT_MILLI} (thousandths)"
                )));
            }
        }
        self.placement.gpu_weights = weights;
        self.placement.weights_set = true;
        Response::Ok
    }
}

#[cfg(test)]
#[path = "placement_test.rs"]
mod tests;
