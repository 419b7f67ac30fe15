//! The GPU models' weights (README: Placement): proposes `SetGpuWeights` when the configuration's differ from the cluster's.
//!
//! The weights count in quotas and in least-loaded's GPU share, so they are
//! replicated, not read from each server's file: the leader's configuration
//! (`[placement] gpu_weights`, the built-in A100 = 1.0, A40 = 0.5 if unset)
//! wins. The leader looks once as its leadership starts and once more after
//! it raised the cluster format version (weights exist from version 5 on);
//! there is no timer beyond a retry after a proposal that did not commit.

use std::collections::BTreeMap;

use tidal_core::command::{Command, Response};
use tidal_core::placement::types::PLACEMENT_VERSION;
use tidal_core::State;

use super::ctx::{Ctx, Purpose};
use super::event::{Now, ProposeError};

/// The wait before a proposal that did not commit is tried again.
pub const RETRY_MS: u64 = 1_000;

/// The weights to propose: the configured ones, if the cluster is at the
/// placement version and its weights in force differ.
pub fn weights_to_set(
    state: &State,
    configured: &BTreeMap<String, u32>,
) -> Option<BTreeMap<String, u32>> {
    if state.cluster_version() < PLACEMENT_VERSION {
        return None;
    }
    (state.placement().gpu_weights() != *configured).then(|| configured.clone())
}

/// Whether a look is due, and the proposal in flight.
#[derive(Debug, Default)]
pub(crate) struct GpuWeights {
    /// When to look next (none: nothing to look at until told).
    due: Option<u64>,
    in_flight: bool,
    /// The cluster refused the configured weights: not proposed again in
    /// this leadership.
    refused: bool,
}

impl GpuWeights {
    /// The leadership acts, or the cluster format version was raised: look now.
    pub(crate) fn look(&mut self, now: Now) {
        if !self.refused {
            self.due = Some(now.mono_ms);
        }
    }

    pub(crate) fn next_wake(&self) -> Option<u64> {
        self.due.filter(|_| !self.in_flight)
    }

    /// Proposes the configured weights if a look is due and they differ.
    pub(crate) fn fire(&mut self, cx: &mut Ctx) {
        match self.due {
            Some(at) if at <= cx.now.mono_ms && !self.in_flight => {}
            _ => return,
        }
        self.due = None;
        let Some(weights) = weights_to_set(cx.state, &cx.cfg.gpu_weights_milli) else {
            return;
        };
        tracing::info!(weights = ?weights, "the configured GPU weights differ from the cluster's: setting them");
        cx.out
            .propose(Purpose::SetGpuWeights, Command::SetGpuWeights(weights));
        self.in_flight = true;
    }

    pub(crate) fn committed(&mut self, index: u64, response: Response) {
        self.in_flight = false;
        match response {
            Response::Ok => {
                tracing::info!(log_index = index, "GPU weights set from the configuration")
            }
            other => {
                // Invalid weights stay invalid: not tried again until the
                // next leadership (whose configuration may differ).
                self.refused = true;
                tracing::warn!(response = ?other, "the configured GPU weights were refused");
            }
        }
    }

    pub(crate) fn not_committed(&mut self, cx: &Ctx, error: &ProposeError) {
        self.in_flight = false;
        if error.failed_precondition {
            tracing::debug!(error = %error, "GPU weights not set: the cluster format version lacks them");
            return;
        }
        tracing::warn!(error = %error, "could not set the GPU weights");
        self.due = Some(cx.now.mono_ms + RETRY_MS);
    }
}

#[cfg(test)]
#[path = "gpu_weights_test.rs"]
mod tests;
