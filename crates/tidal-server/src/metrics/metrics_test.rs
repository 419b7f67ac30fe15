use super::*;
use std::time::Duration;

fn status(head: Option<&str>) -> (&'static str, String) {
    let (status_line, _, body) = route(
        head.map(str::as_bytes),
        || "families\n".to_string(),
        |_| "status\n".to_string(),
    );
    (status_line, body)
}

#[test]
fn get_metrics_is_answered_with_the_scrape() {
    let (status_line, body) = status(Some("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert_eq!(status_line, "200 OK");
    assert_eq!(body, "families\n");
    // A query string is ignored.
    let (status_line, _) = status(Some("GET /metrics?x=1 HTTP/1.0\r\n\r\n"));
    assert_eq!(status_line, "200 OK");
}

#[test]
fn other_paths_methods_and_long_heads_are_refused() {
    assert_eq!(status(Some("GET /x HTTP/1.1\r\n\r\n")).0, "404 Not Found");
    assert_eq!(
        status(Some("GET /metricsx HTTP/1.1\r\n\r\n")).0,
        "404 Not Found"
    );
    assert_eq!(
        status(Some("POST /metrics HTTP/1.1\r\n\r\n")).0,
        "405 Method Not Allowed"
    );
    assert_eq!(status(Some("\r\n\r\n")).0, "404 Not Found");
    assert_eq!(status(None).0, "431 Request Header Fields Too Large");
}

#[test]
fn rounds_are_counted_in_the_histogram() {
    let mut registry = Registry::default();
    rounds::observe(Duration::from_millis(3));
    registry.register("rounds", "r", rounds::histogram().clone());
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    let count: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("rounds_count "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no rounds_count in {text}"));
    assert!(count >= 1, "{text}");
}

fn config(metrics_listen: Option<&str>) -> anyhow::Result<crate::ServerConfig> {
    crate::RawConfig {
        id: Some(1),
        dc: Some("dc-a".into()),
        listen: Some("127.0.0.1:7001".into()),
        peer_listen: Some("127.0.0.1:7011".into()),
        metrics_listen: metrics_listen.map(Into::into),
        data: Some("/tmp/tidal-metrics-test".into()),
        ..crate::RawConfig::default()
    }
    .validate()
}

#[test]
fn metrics_are_off_by_default_and_the_address_is_checked() {
    assert_eq!(config(None).unwrap().metrics_listen, None);
    let on = config(Some("127.0.0.1:9101")).unwrap();
    assert_eq!(on.metrics_listen, Some("127.0.0.1:9101".parse().unwrap()));
    // It is printed, and read back, as a setting.
    assert_eq!(
        crate::RawConfig::from_config(&on).metrics_listen.as_deref(),
        Some("127.0.0.1:9101")
    );
    let e = config(Some("localhost:9101")).unwrap_err().to_string();
    assert_eq!(
        e,
        "--metrics-listen \"localhost:9101\" is not HOST:PORT with a numeric host"
    );
    let e = config(Some("127.0.0.1:7001")).unwrap_err().to_string();
    assert!(e.contains("is --listen itself"), "{e}");
    let e = config(Some("127.0.0.1:7011")).unwrap_err().to_string();
    assert!(e.contains("is --peer-listen itself"), "{e}");
    // Port 0 is the kernel's choice, never the same as another listener's.
    assert!(config(Some("127.0.0.1:0")).is_ok());
}
