//! `weights_to_set`: the configured weights are proposed only at the placement version and only when they differ from those in force.

use std::collections::BTreeMap;

use tidal_core::command::{ApplyCtx, Command, Response};
use tidal_core::State;

use super::weights_to_set;

fn weights(w: &[(&str, u32)]) -> BTreeMap<String, u32> {
    w.iter().map(|(m, v)| (m.to_string(), *v)).collect()
}

fn apply(state: &mut State, index: u64, cmd: Command) {
    let r = state.apply(
        cmd,
        ApplyCtx {
            log_index: index,
            time_ms: 0,
        },
    );
    assert_eq!(r, Response::Ok);
}

#[test]
fn configured_weights_are_proposed_at_version_5_when_they_differ() {
    let builtin = weights(&[("A100", 1000), ("A40", 500)]);
    let mine = weights(&[("A100", 1000), ("A40", 400), ("H100", 2000)]);
    let mut state = State::new();
    apply(&mut state, 1, Command::SetClusterVersion { version: 4 });
    // Below version 5 there are no weights to set.
    assert_eq!(weights_to_set(&state, &mine), None);
    apply(&mut state, 2, Command::SetClusterVersion { version: 5 });
    // The built-ins are in force: a configuration equal to them sets nothing.
    assert_eq!(weights_to_set(&state, &builtin), None);
    assert_eq!(weights_to_set(&state, &mine), Some(mine.clone()));
    apply(&mut state, 3, Command::SetGpuWeights(mine.clone()));
    assert_eq!(weights_to_set(&state, &mine), None);
    // Another leader's configuration (here the built-ins) wins in its turn.
    assert_eq!(weights_to_set(&state, &builtin), Some(builtin.clone()));
    // An empty configuration differs from the built-ins: every model then
    // weighs the default.
    assert_eq!(
        weights_to_set(&state, &BTreeMap::new()),
        Some(BTreeMap::new())
    );
}
