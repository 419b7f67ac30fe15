use std::time::{Duration, Instant};

use super::*;

const TEXT: &str = "2026-12-01T21:10:02.345678Z  INFO tidal_store::snapshot: snapshot built \
     snapshot={snapshot_id: 1-205-7, last_log:T1-N1.205, last_membership: ...} bytes=343113270 \
     apply_pause_max_ms=3.217";
const JSON: &str = r#"{"timestamp":"2026-12-01T21:10:02.345678Z","level":"INFO","fields":{"message":"snapshot built","snapshot":"{snapshot_id: 1-205-7}","bytes":343113270,"apply_pause_max_ms":0.051},"target":"tidal_store::snapshot"}"#;

#[test]
fn the_pause_is_read_from_text_and_json_lines() {
    assert_eq!(apply_pause_ms(TEXT), Some(3.217));
    assert_eq!(apply_pause_ms(JSON), Some(0.051));
    assert_eq!(
        apply_pause_ms("... snapshot built ... apply_pause_max_ms=0.0 x=1"),
        Some(0.0)
    );
}

#[test]
fn other_lines_have_no_pause() {
    assert_eq!(apply_pause_ms("INFO snapshot restored bytes=1"), None);
    assert_eq!(apply_pause_ms("INFO snapshot built bytes=1"), None);
    assert_eq!(
        apply_pause_ms("INFO something else apply_pause_max_ms=2.0"),
        None
    );
}

#[test]
fn pauses_after_skips_the_snapshots_built_before() {
    let lines: Vec<String> = [
        TEXT,
        "INFO unrelated line",
        JSON,
        "INFO snapshot built apply_pause_max_ms=12.5",
    ]
    .iter()
    .map(|l| l.to_string())
    .collect();
    assert_eq!(pauses_after(&lines, 0), vec![3.217, 0.051, 12.5]);
    assert_eq!(pauses_after(&lines, 2), vec![12.5]);
    assert!(pauses_after(&lines, 3).is_empty());
}

#[test]
fn a_window_holds_every_probe_in_flight_during_it() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let probe = |sent: u64, took: u64, ok: bool| Probe {
        sent: t0 + ms(sent),
        took: ms(took),
        ok,
    };
    let probes = [
        probe(0, 5, true),    // answered before the window
        probe(95, 40, true),  // sent before, answered during it: counts
        probe(135, 2, true),  // inside
        probe(137, 8, false), // inside, failed
        probe(190, 30, true), // sent during, answered after: counts
        probe(200, 3, true),  // sent at the window's end: not in it
    ];
    let w = window(&probes, t0 + ms(100), t0 + ms(200));
    assert_eq!(w["count"], 4);
    assert_eq!(w["failed"], 1);
    // The histogram keeps 3 significant digits.
    let max = w["max_ms"].as_f64().unwrap();
    assert!((max - 40.0).abs() < 0.1, "{max}");
    assert!((w["seconds"].as_f64().unwrap() - 0.1).abs() < 1e-9);
    let text = crate::stats::describe_probe(&w);
    assert!(text.starts_with("4 submits over 0.1 s, p50 "), "{text}");
    assert!(text.ends_with(" ms, 1 failed"), "{text}");
}

#[test]
fn an_empty_window_is_all_zero() {
    let t0 = Instant::now();
    let w = window(&[], t0, t0 + Duration::from_secs(1));
    assert_eq!(w["count"], 0);
    assert_eq!(w["failed"], 0);
    assert_eq!(w["max_ms"].as_f64(), Some(0.0));
}
