//! Eager placement: a submit batch that finds free agents assigns its new
//! tasks in the same entry (`Command::SubmitPlaced`), so an idle or keeping-up
//! fleet sees a task one commit after its submit instead of two (submit, then
//! a dispatch round). Only tasks whose queue has nothing waiting apart from
//! the dispatch round in flight are placed this way, so a new task does not
//! overtake a waiting one; the rest stay Pending for the dispatcher, as do
//! placements that apply refuses because the capacity was taken in between.
//! Entries in flight do not see each other: a task that an earlier entry
//! leaves Pending (no room by the time it applied) can be overtaken by tasks
//! of the entries already in flight behind it, never by later ones. Planning
//! runs for every submit entry, so it looks at a turning window of the
//! fleet, not all of it (`tidal_core::dispatch::place_new`).

use std::sync::{Mutex, PoisonError};

use tidal_core::access::{Principal, ACCESS_VERSION};
use tidal_core::command::{Command, Rejection, Response, Submitted};
use tidal_core::dispatch::{place_new_with, DispatchCursor, Live};
use tidal_core::lifecycle::{TaskOptions, LIFECYCLE_VERSION};
use tidal_core::model::{AgentId, TaskSpec};
use tidal_core::placement::types::{PlaceAsk, PLACEMENT_VERSION};
use tidal_store::StateHandle;

use super::leadership::LeadershipSlot;
use super::push;

pub struct EagerPlacement {
    state: StateHandle,
    leadership: LeadershipSlot,
    /// This planner's round-robin credits (apart from the dispatcher's) and
    /// where its next window of agents starts.
    cursor: Mutex<DispatchCursor>,
    /// How much warm models count in placement (`[placement] warm_weight`).
    warm_weight_milli: u32,
}

impl EagerPlacement {
    pub fn new(state: StateHandle, leadership: LeadershipSlot) -> Self {
        EagerPlacement {
            state,
            leadership,
            cursor: Mutex::new(DispatchCursor::default()),
            warm_weight_milli: crate::leader::engine::EngineConfig::default().warm_weight_milli,
        }
    }

    /// Sets how much warm models count in placement (thousandths).
    pub fn with_warm_weight(mut self, milli: u32) -> Self {
        self.warm_weight_milli = milli;
        self
    }

    /// The command for a batch of (normalized) specs, each with who submitted
    /// it if the caller was established: `SubmitPlaced` when this node leads
    /// and some of them find an agent, else `Submit`; `SubmitAs` instead of
    /// either when a submitter is known and the cluster is at
    /// [`ACCESS_VERSION`]; `SubmitWith`, with each task's options, at
    /// [`LIFECYCLE_VERSION`] ([`submit_command`]).
    pub fn command(&self, items: Vec<SubmitItem>) -> Command {
        let mut specs = Vec::with_capacity(items.len());
        let mut by = Vec::with_capacity(items.len());
        let mut opts = Vec::with_capacity(items.len());
        let mut asks = Vec::with_capacity(items.len());
        for (spec, principal, o, ask) in items {
            specs.push(spec);
            by.push(principal);
            opts.push(o);
            asks.push(ask);
        }
        let Some(leadership) = self.current() else {
            let version = self.state.read().state.cluster_version();
            return submit_command_with(specs, Vec::new(), by, opts, asks, version);
        };
        // The view before the state (the engine publishes a round before
        // proposing it and clears it once it applied): a round in flight
        // now is counted, twice if it applies before the state is read
        // (which places less, never more). A round published after this
        // read was planned without this batch; apply refuses whichever
        // claim on the same capacity comes second.
        let view = leadership.view();
        let (place, version) = {
            let applied = self.state.read();
            let mut cursor = self.cursor.lock().unwrap_or_else(PoisonError::into_inner);
            let live = Live {
                connected: &view.connected,
                warm: &view.warm,
                warm_weight_milli: self.warm_weight_milli,
            };
            let place = place_new_with(
                &applied.state,
                &live,
                &specs,
                &asks,
                &view.dispatching,
                &mut cursor,
            );
            (place, applied.state.cluster_version())
        };
        submit_command_with(specs, place, by, opts, asks, version)
    }

    /// The per-spec results of a committed batch; pushes what it assigned to
    /// the agents' sessions.
    pub fn results(&self, response: Response) -> Option<Vec<Result<Submitted, Rejection>>> {
        match response {
            Response::Submitted(items) => Some(items),
            Response::SubmittedPlaced { submitted, granted } => {
                if !granted.is_empty() {
                    // Without a leadership the agents get their tasks when
                    // they register with the next leader.
                    if let Some(leadership) = self.current() {
                        push::push(&leadership, &granted);
                    }
                }
                Some(submitted)
            }
            _ => None,
        }
    }

    fn current(&self) -> Option<std::sync::Arc<super::leadership::Leadership>> {
        self.leadership
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .filter(|l| l.is_alive())
    }
}

/// The submit command for `specs` with the placements `place` planned for
/// them, at cluster format version `version`, where `by[i]` is who
/// submitted `specs[i]`, if known.
///
/// `SubmitAs` (which places as `SubmitPlaced` does and records each new
/// task's submitter) only when every item has a submitter and the cluster
/// is at [`ACCESS_VERSION`]: below it, apply would refuse the command.
/// Otherwise `SubmitPlaced` when something is placed, else `Submit`, and the
/// submitters are not recorded. The batcher keeps requests with and without
/// a submitter in separate entries ([`SubmitFold`]), so a batch is not mixed.
///
/// At [`LIFECYCLE_VERSION`] and later always `SubmitWith`: `opts[i]` for
/// `specs[i]` (none at all when every one is the default), `by` when every
/// item has a submitter, else empty. Below it the options are dropped:
/// the server refuses items with options other than the defaults there
/// before they reach the batcher.
pub fn submit_command(
    specs: Vec<TaskSpec>,
    place: Vec<(u32, AgentId)>,
    by: Vec<Option<Principal>>,
    opts: Vec<TaskOptions>,
    version: u8,
) -> Command {
    if version >= LIFECYCLE_VERSION {
        let by = if !by.is_empty() && by.iter().all(Option::is_some) {
            by.into_iter().flatten().collect()
        } else {
            Vec::new()
        };
        let opts = if opts.iter().all(|o| *o == TaskOptions::default()) {
            Vec::new()
        } else {
            opts
        };
        return Command::SubmitWith {
            specs,
            place,
            by,
            opts,
        };
    }
    if version >= ACCESS_VERSION && !by.is_empty() && by.iter().all(Option::is_some) {
        let by = by.into_iter().flatten().collect();
        return Command::SubmitAs { specs, place, by };
    }
    if place.is_empty() {
        Command::Submit(specs)
    } else {
        Command::SubmitPlaced { specs, place }
    }
}

/// [`submit_command`] with each spec's placement ask: from
/// [`PLACEMENT_VERSION`] on, `SubmitWithPlacement` when any ask is not
/// plain (the asks, one per spec; options and submitters as for
/// `SubmitWith`). Below it the asks are dropped: the server refuses items
/// with placement fields there before they reach the batcher.
pub fn submit_command_with(
    specs: Vec<TaskSpec>,
    place: Vec<(u32, AgentId)>,
    by: Vec<Option<Principal>>,
    opts: Vec<TaskOptions>,
    asks: Vec<PlaceAsk>,
    version: u8,
) -> Command {
    if version < PLACEMENT_VERSION || asks.iter().all(PlaceAsk::is_plain) {
        return submit_command(specs, place, by, opts, version);
    }
    match submit_command(specs, place, by, opts, version) {
        Command::SubmitWith {
            specs,
            place,
            by,
            opts,
        } => Command::SubmitWithPlacement {
            specs,
            place,
            by,
            opts,
            asks,
        },
        other => other,
    }
}

/// Submits: one `Submit`, `SubmitPlaced` or `SubmitAs` per batch
/// ([`EagerPlacement`]). An item is a spec and who submitted it, if the
/// caller was established; requests with a submitter and requests without
/// one go into separate entries.
pub struct SubmitFold(pub std::sync::Arc<EagerPlacement>);

/// A spec to submit, who submits it (if the caller was established), its
/// lifecycle options and its placement ask.
pub type SubmitItem = (TaskSpec, Option<Principal>, TaskOptions, PlaceAsk);

impl crate::batcher::Fold for SubmitFold {
    type Item = SubmitItem;
    type Out = Result<Submitted, Rejection>;

    fn command(&self, items: Vec<Self::Item>) -> Command {
        self.0.command(items)
    }

    fn results(&self, response: Response) -> Option<Vec<Self::Out>> {
        self.0.results(response)
    }

    fn size((spec, by, _, ask): &Self::Item) -> usize {
        tidal_core::command::spec_bytes(spec)
            + by.as_ref().map_or(0, |p| p.id.len() + 8)
            + 64
            + tidal_core::command::ask_bytes(ask)
    }

    fn joins((_, first, _, _): &Self::Item, (_, next, _, _): &Self::Item) -> bool {
        first.is_some() == next.is_some()
    }
}

#[cfg(test)]
#[path = "eager_test.rs"]
mod tests;
