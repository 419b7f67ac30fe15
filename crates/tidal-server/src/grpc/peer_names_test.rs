//! Resolving peer names: literals as they are, `localhost` once resolved, a miss that wakes the resolver, failed lookups that keep the last IPs.

use std::sync::{Arc, Mutex};

use super::*;

fn localhost() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

#[test]
fn a_literal_is_its_own_ip_and_a_name_has_none_before_it_is_resolved() {
    let names = PeerNames::default();
    assert_eq!(
        names.ips("127.0.0.12:7101"),
        vec!["127.0.0.12".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        names.ips("[::ffff:127.0.0.13]:7101"),
        vec!["127.0.0.13".parse::<IpAddr>().unwrap()]
    );
    assert!(names.ips("localhost:7101").is_empty());
    assert!(!is_name("[::1]:7101"));
    assert!(is_name("localhost:7101"));
}

#[tokio::test]
async fn refresh_resolves_names_and_a_failed_lookup_keeps_the_last_ips() {
    let names = PeerNames::default();
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    names.refresh(&set(&["localhost:7101"])).await;
    assert!(names.ips("localhost:7101").contains(&localhost()));

    // A name that cannot resolve has none; one that resolved keeps its IPs
    // while its lookups fail.
    let bad = "no-such-host.invalid:7101";
    names.refresh(&set(&[bad])).await;
    assert!(names.ips(bad).is_empty());
    names
        .resolved
        .write()
        .unwrap()
        .insert(bad.to_string(), vec![localhost()]);
    names.refresh(&set(&[bad])).await;
    assert_eq!(names.ips(bad), vec![localhost()]);
    // Names no longer asked for are forgotten.
    assert!(names.ips("localhost:7101").is_empty());
}

#[tokio::test]
async fn run_resolves_a_name_asked_for_and_stops_with_its_source() {
    let names = Arc::new(PeerNames::default());
    let wanted: Arc<Mutex<Option<BTreeSet<String>>>> = Arc::new(Mutex::new(Some(BTreeSet::new())));
    let (tx, rx) = watch::channel(());
    let task = tokio::spawn({
        let (names, wanted) = (names.clone(), wanted.clone());
        async move { names.run(|| wanted.lock().unwrap().clone(), rx).await }
    });

    // A new name, asked for before anything announced it: the miss wakes
    // the resolver.
    *wanted.lock().unwrap() = Some(["localhost:7101".to_string()].into());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !names.ips("localhost:7101").contains(&localhost()) {
        assert!(Instant::now() < deadline, "localhost was not resolved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Its source gone, it stops.
    drop(tx);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run stops")
        .unwrap();
}
