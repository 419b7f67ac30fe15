//! Unit tests of `devices.rs`.

use std::collections::BTreeSet;

use super::*;

fn gpus(list: &[(&str, u64)]) -> Vec<Gpu> {
    list.iter()
        .map(|(m, mem)| Gpu {
            model: m.to_string(),
            memory_mb: *mem,
        })
        .collect()
}

fn shape(count: u32, model: Option<&str>, mem: u64) -> GpuShape {
    GpuShape {
        count,
        model: model.map(String::from),
        min_memory_mb: mem,
    }
}

/// A100 1000, A40 500, anything else 1000.
fn weight(m: &str) -> u32 {
    match m {
        "A40" => 500,
        _ => 1000,
    }
}

fn pick_with(g: &[Gpu], busy: &[u16], shapes: &[GpuShape]) -> Option<Pick> {
    let busy: BTreeSet<u16> = busy.iter().copied().collect();
    pick(g, |i| !busy.contains(&i), shapes, weight)
}

fn p(shape: u8, devices: &[u16], gpu_milli: u32) -> Option<Pick> {
    Some(Pick {
        shape,
        devices: devices.to_vec(),
        gpu_milli,
    })
}

fn eight_a100() -> Vec<Gpu> {
    gpus(&[("A100", 81920); 8])
}

#[test]
fn takes_the_lowest_free_indexes() {
    let g = eight_a100();
    assert_eq!(
        pick_with(&g, &[], &[shape(2, None, 0)]),
        p(0, &[0, 1], 2000)
    );
    assert_eq!(
        pick_with(&g, &[0, 2], &[shape(3, None, 0)]),
        p(0, &[1, 3, 4], 3000)
    );
    assert_eq!(
        pick_with(&g, &[], &[shape(8, None, 0)]),
        p(0, &[0, 1, 2, 3, 4, 5, 6, 7], 8000)
    );
}

#[test]
fn skips_busy_devices_and_fails_when_too_few_are_free() {
    let g = eight_a100();
    assert_eq!(
        pick_with(&g, &[0, 1, 2, 3, 4, 5], &[shape(2, None, 0)]),
        p(0, &[6, 7], 2000)
    );
    assert_eq!(
        pick_with(&g, &[0, 1, 2, 3, 4, 5, 6], &[shape(2, None, 0)]),
        None
    );
    assert_eq!(pick_with(&g, &[], &[shape(9, None, 0)]), None);
}

#[test]
fn respects_models_and_memory() {
    let g = gpus(&[
        ("A40", 49152),
        ("A100", 40960),
        ("A40", 49152),
        ("A100", 81920),
    ]);
    assert_eq!(
        pick_with(&g, &[], &[shape(1, Some("A100"), 0)]),
        p(0, &[1], 1000)
    );
    assert_eq!(
        pick_with(&g, &[], &[shape(2, Some("A40"), 0)]),
        p(0, &[0, 2], 1000)
    );
    assert_eq!(
        pick_with(&g, &[], &[shape(1, Some("A100"), 81920)]),
        p(0, &[3], 1000)
    );
    assert_eq!(pick_with(&g, &[], &[shape(2, Some("A100"), 81920)]), None);
    assert_eq!(pick_with(&g, &[], &[shape(1, Some("H100"), 0)]), None);
    // Any model with enough memory, weights summed by model.
    assert_eq!(
        pick_with(&g, &[], &[shape(3, None, 45000)]),
        p(0, &[0, 2, 3], 2000)
    );
    assert_eq!(
        pick_with(&g, &[], &[shape(4, None, 0)]),
        p(0, &[0, 1, 2, 3], 3000)
    );
    assert!(matches(&g[3], &shape(1, Some("A100"), 81920)));
    assert!(!matches(&g[3], &shape(1, Some("A100"), 81921)));
    assert!(!matches(&g[0], &shape(1, Some("A100"), 0)));
}

#[test]
fn the_first_shape_that_fits_wins() {
    let g = gpus(&[("A40", 49152), ("A40", 49152), ("A100", 81920)]);
    let shapes = [shape(1, Some("A100"), 0), shape(2, Some("A40"), 0)];
    assert_eq!(pick_with(&g, &[], &shapes), p(0, &[2], 1000));
    // With the A100 busy, the second shape takes both A40s.
    assert_eq!(pick_with(&g, &[2], &shapes), p(1, &[0, 1], 1000));
    // With an A40 busy as well, nothing fits.
    assert_eq!(pick_with(&g, &[1, 2], &shapes), None);
    // Order of preference, not of size: a later, smaller shape does not jump ahead.
    let shapes = [shape(2, Some("A40"), 0), shape(1, Some("A100"), 0)];
    assert_eq!(pick_with(&g, &[], &shapes), p(0, &[0, 1], 1000));
}

#[test]
fn a_shape_of_no_gpus_fits_with_no_devices() {
    assert_eq!(pick_with(&[], &[], &[shape(0, None, 0)]), p(0, &[], 0));
    assert_eq!(
        pick_with(&eight_a100(), &[], &[shape(0, None, 0)]),
        p(0, &[], 0)
    );
    assert_eq!(
        pick_with(
            &eight_a100(),
            &[0, 1, 2, 3, 4, 5, 6, 7],
            &[shape(0, Some("A40"), 99)]
        ),
        p(0, &[], 0)
    );
    assert_eq!(pick_with(&[], &[], &[shape(1, None, 0)]), None);
    assert_eq!(pick_with(&eight_a100(), &[], &[]), None);
}

#[test]
fn shapes_of_falls_back_to_the_spec() {
    assert_eq!(shapes_of(&[], 2, 40960), vec![shape(2, None, 40960)]);
    assert_eq!(shapes_of(&[], 0, 0), vec![shape(0, None, 0)]);
    let own = [shape(1, Some("A100"), 0), shape(2, Some("A40"), 0)];
    assert_eq!(shapes_of(&own, 4, 1), own.to_vec());
    // A task without GPUs takes none on any agent.
    assert_eq!(pick_with(&[], &[], &shapes_of(&[], 0, 0)), p(0, &[], 0));
}

#[test]
fn possible_ignores_what_is_busy() {
    let g = gpus(&[("A40", 49152), ("A100", 81920)]);
    assert!(possible(&g, &[shape(1, Some("A100"), 0)]));
    assert!(possible(&g, &[shape(3, None, 0), shape(2, None, 0)]));
    assert!(!possible(&g, &[shape(3, None, 0)]));
    assert!(!possible(&g, &[shape(2, Some("A40"), 0)]));
    assert!(!possible(&g, &[shape(1, None, 90000)]));
    assert!(possible(&[], &[shape(0, None, 0)]));
    assert!(!possible(&g, &[]));
}

#[test]
fn pick_agrees_with_possible_when_all_are_free() {
    let g = gpus(&[
        ("A40", 49152),
        ("A100", 81920),
        ("A40", 24576),
        ("A100", 40960),
    ]);
    for count in 0..6 {
        for model in [None, Some("A40"), Some("A100"), Some("H100")] {
            for mem in [0, 40960, 49152, 81920] {
                let s = [shape(count, model, mem)];
                assert_eq!(pick_with(&g, &[], &s).is_some(), possible(&g, &s), "{s:?}");
            }
        }
    }
}
