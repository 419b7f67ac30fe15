//! Tests of the submit command's choice: `SubmitAs` only with every submitter known and at the access format version.

use tidal_core::access::{Principal, Role, ACCESS_VERSION};
use tidal_core::command::Command;
use tidal_core::lifecycle::{TaskOptions, LIFECYCLE_VERSION};
use tidal_core::model::TaskSpec;

use tidal_core::placement::types::{PlaceAsk, PLACEMENT_VERSION};

use super::{submit_command, submit_command_with};
use crate::batcher::Fold;

fn spec(n: u32) -> TaskSpec {
    TaskSpec {
        task_type: format!("t{n}"),
        ..TaskSpec::default()
    }
}

fn alice() -> Option<Principal> {
    Some(Principal {
        id: "token:alice".into(),
        role: Role::User,
    })
}

#[test]
fn submit_as_only_with_submitters_at_the_access_version() {
    let specs = vec![spec(1), spec(2)];
    let place = vec![(1, "a1".to_string())];
    let by = vec![alice(), alice()];

    let at_v3 = submit_command(
        specs.clone(),
        place.clone(),
        by.clone(),
        Vec::new(),
        ACCESS_VERSION,
    );
    assert_eq!(
        at_v3,
        Command::SubmitAs {
            specs: specs.clone(),
            place: place.clone(),
            by: vec![alice().unwrap(), alice().unwrap()],
        }
    );
    assert_eq!(at_v3.required_version(), ACCESS_VERSION);
    // Nothing placed: still SubmitAs, which then places nothing.
    assert!(matches!(
        submit_command(specs.clone(), Vec::new(), by.clone(), Vec::new(), ACCESS_VERSION),
        Command::SubmitAs { place, .. } if place.is_empty()
    ));

    // Below the access version the submitters are not recorded: the command
    // is the one of a submit without them.
    for version in 1..ACCESS_VERSION {
        assert_eq!(
            submit_command(
                specs.clone(),
                place.clone(),
                by.clone(),
                Vec::new(),
                version
            ),
            Command::SubmitPlaced {
                specs: specs.clone(),
                place: place.clone(),
            }
        );
        assert_eq!(
            submit_command(specs.clone(), Vec::new(), by.clone(), Vec::new(), version),
            Command::Submit(specs.clone())
        );
    }
}

#[test]
fn without_submitters_the_commands_are_unchanged() {
    let specs = vec![spec(1), spec(2)];
    let place = vec![(0, "a1".to_string())];
    assert_eq!(
        submit_command(
            specs.clone(),
            place.clone(),
            vec![None, None],
            Vec::new(),
            ACCESS_VERSION
        ),
        Command::SubmitPlaced {
            specs: specs.clone(),
            place,
        }
    );
    assert_eq!(
        submit_command(
            specs.clone(),
            Vec::new(),
            vec![None, None],
            Vec::new(),
            ACCESS_VERSION
        ),
        Command::Submit(specs.clone())
    );
    // A batch with one submitter missing does not invent one.
    assert_eq!(
        submit_command(
            specs.clone(),
            Vec::new(),
            vec![alice(), None],
            Vec::new(),
            ACCESS_VERSION
        ),
        Command::Submit(specs)
    );
}

#[test]
fn requests_with_and_without_a_submitter_do_not_share_an_entry() {
    type F = super::SubmitFold;
    let o = TaskOptions::default;
    let with = (spec(1), alice(), o(), PlaceAsk::default());
    let other = (
        spec(2),
        Some(Principal {
            id: "cert:bob".into(),
            role: Role::Admin,
        }),
        TaskOptions {
            suspendable: true,
            ..o()
        },
        PlaceAsk::default(),
    );
    let without = (spec(3), None, o(), PlaceAsk::default());
    assert!(F::joins(&with, &other));
    assert!(F::joins(
        &without,
        &(spec(4), None, o(), PlaceAsk::default())
    ));
    assert!(!F::joins(&with, &without));
    assert!(!F::joins(&without, &with));
}

#[test]
fn submit_with_at_the_lifecycle_version() {
    let specs = vec![spec(1), spec(2)];
    let place = vec![(1, "a1".to_string())];
    let timed = TaskOptions {
        max_run_ms: Some(5_000),
        ..TaskOptions::default()
    };
    let opts = vec![TaskOptions::default(), timed];
    // Every submitter known: recorded, with each task's options.
    assert_eq!(
        submit_command(
            specs.clone(),
            place.clone(),
            vec![alice(), alice()],
            opts.clone(),
            LIFECYCLE_VERSION
        ),
        Command::SubmitWith {
            specs: specs.clone(),
            place: place.clone(),
            by: vec![alice().unwrap(), alice().unwrap()],
            opts: opts.clone(),
        }
    );
    // No submitter, only default options: SubmitWith all the same, with
    // neither list (apply gives each task the defaults).
    assert_eq!(
        submit_command(
            specs.clone(),
            Vec::new(),
            vec![None, None],
            vec![TaskOptions::default(); 2],
            LIFECYCLE_VERSION
        ),
        Command::SubmitWith {
            specs: specs.clone(),
            place: Vec::new(),
            by: Vec::new(),
            opts: Vec::new(),
        }
    );
    // Below it the options never reach the command (the server refused
    // items that set any).
    assert_eq!(
        submit_command(
            specs.clone(),
            Vec::new(),
            vec![None, None],
            opts,
            ACCESS_VERSION
        ),
        Command::Submit(specs)
    );
}

#[test]
fn submit_with_placement_only_for_asks_at_the_placement_version() {
    let specs = vec![spec(1), spec(2)];
    let ask = PlaceAsk {
        tags: vec!["web".into()],
        ..PlaceAsk::default()
    };
    let asks = vec![PlaceAsk::default(), ask];
    assert_eq!(
        submit_command_with(
            specs.clone(),
            Vec::new(),
            vec![alice(), alice()],
            Vec::new(),
            asks.clone(),
            PLACEMENT_VERSION
        ),
        Command::SubmitWithPlacement {
            specs: specs.clone(),
            place: Vec::new(),
            by: vec![alice().unwrap(), alice().unwrap()],
            opts: Vec::new(),
            asks,
        }
    );
    // Plain asks: the command of a submit without them.
    assert_eq!(
        submit_command_with(
            specs.clone(),
            Vec::new(),
            vec![None, None],
            Vec::new(),
            vec![PlaceAsk::default(); 2],
            PLACEMENT_VERSION
        ),
        Command::SubmitWith {
            specs,
            place: Vec::new(),
            by: Vec::new(),
            opts: Vec::new(),
        }
    );
}
