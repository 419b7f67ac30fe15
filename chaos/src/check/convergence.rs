//! I11: after healing, one leader, equal applied index and state digest on
//! every node, service within the bound, and no panic in any node's log.
//! The runner measures these at the end of the run and records them
//! (`converged`, `probe`, `log-panic`); this checker reads the records.

use super::Verdict;
use crate::history::Event;

fn runner<'a>(events: &'a [Event], f: &'a str) -> impl Iterator<Item = &'a Event> {
    events
        .iter()
        .filter(move |e| e.proc == "runner" && e.f == f)
}

pub fn check(events: &[Event]) -> Verdict {
    let mut problems = Vec::new();
    let runner = |f: &'static str| runner(events, f);
    match runner("converged").last() {
        None => problems.push("the run did not record whether the nodes converged".to_string()),
        Some(e) if e.accepted != Some(true) => problems.push(format!(
            "the nodes did not converge: {}",
            e.detail.as_deref().unwrap_or("")
        )),
        Some(_) => {}
    }
    match runner("probe").last() {
        None => problems.push("the run did not probe the service after healing".to_string()),
        Some(e) if e.accepted != Some(true) => problems.push(format!(
            "no service after healing: {}",
            e.detail.as_deref().unwrap_or("")
        )),
        Some(_) => {}
    }
    for e in runner("log-panic") {
        problems.push(format!(
            "a panic in a log: {}",
            e.detail.as_deref().unwrap_or("")
        ));
    }
    for e in runner("expect").filter(|e| e.accepted != Some(true)) {
        problems.push(format!(
            "scenario criterion failed: {}",
            e.detail.as_deref().unwrap_or("")
        ));
    }
    Verdict {
        checker: "convergence",
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::fixtures::H;

    fn rec(f: &str, ok: bool, detail: &str) -> Event {
        Event {
            accepted: Some(ok),
            detail: Some(detail.into()),
            ..Event::new("runner", "event", f)
        }
    }

    #[test]
    fn converged_and_served_passes() {
        let mut h = H::new();
        h.push(rec("converged", true, ""))
            .push(rec("probe", true, ""));
        assert!(check(&h.events).ok());
    }

    #[test]
    fn divergence_panics_and_failed_criteria_are_caught() {
        let mut h = H::new();
        h.push(rec("converged", false, "digests differ"));
        h.push(rec("probe", true, ""));
        h.push(rec("log-panic", true, "node2.log: thread panicked"));
        h.push(rec("expect", false, "no agent marked down"));
        let v = check(&h.events);
        assert_eq!(v.problems.len(), 3, "{:?}", v.problems);
    }

    #[test]
    fn missing_records_are_problems() {
        assert_eq!(check(&[]).problems.len(), 2);
    }
}
