//! Part of I4 (exclusivity) from cluster format version 5 on: no GPU
//! device is given to two workers at once. Each worker run that was given
//! devices says which when it begins at the sink (`TIDAL_GPU_IDS`); two
//! runs on one agent whose spans (from `begin` to `end`, the worker's
//! connection) overlap must share no device, whatever their tasks. Skipped
//! when agents were paused: a paused agent cannot stop its workers when its
//! lease ends, so the leader may give its devices again while they run (the
//! token checks still hold). Each problem names both runs, their tasks,
//! tokens and times (seconds since the run began).

use std::collections::{BTreeMap, BTreeSet};

use super::{secs, Facts};
use crate::history::Event;

struct Run<'a> {
    task: &'a str,
    token: u64,
    agent: &'a str,
    devices: BTreeSet<u32>,
    start: u64,
    /// `u64::MAX`: still running when the history ended.
    end: u64,
}

/// The problems found (none when agents were paused).
pub fn problems(events: &[Event], facts: &Facts) -> Vec<String> {
    if facts.agents_paused {
        return Vec::new();
    }
    let mut runs: BTreeMap<u64, Run> = BTreeMap::new();
    for e in events.iter().filter(|e| e.proc == "sink") {
        let (Some(task), Some(token), Some(run)) = (e.task.as_deref(), e.token, e.run) else {
            continue;
        };
        match e.f.as_str() {
            "begin" => {
                let Some(list) = e.devices.as_deref() else {
                    continue;
                };
                let devices: BTreeSet<u32> = list
                    .split(',')
                    .filter_map(|d| d.trim().parse().ok())
                    .collect();
                if devices.is_empty() {
                    continue;
                }
                runs.entry(run).or_insert(Run {
                    task,
                    token,
                    agent: e.agent.as_deref().unwrap_or("?"),
                    devices,
                    start: e.t,
                    end: u64::MAX,
                });
            }
            "end" => {
                if let Some(r) = runs.get_mut(&run) {
                    r.end = r.end.min(e.t);
                }
            }
            _ => {}
        }
    }
    let mut by_agent: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    for r in runs.values() {
        by_agent.entry(r.agent).or_default().push(r);
    }
    let until = |e: u64| {
        if e == u64::MAX {
            "the end of the history".to_string()
        } else {
            secs(e)
        }
    };
    let mut out = Vec::new();
    for (agent, mut list) in by_agent {
        list.sort_by_key(|r| r.start);
        for (i, a) in list.iter().enumerate() {
            // Later starts only; stop at the first that begins after `a` ended.
            for b in list[i + 1..].iter().take_while(|b| b.start < a.end) {
                let shared: Vec<String> = a
                    .devices
                    .intersection(&b.devices)
                    .map(u32::to_string)
                    .collect();
                if shared.is_empty() {
                    continue;
                }
                out.push(format!(
                    "agent {agent}: GPU device {} was given to task {} (token {}, from {} to {}) \
                     and to task {} (token {}, from {} to {}) at once",
                    shared.join(","),
                    a.task,
                    a.token,
                    secs(a.start),
                    until(a.end),
                    b.task,
                    b.token,
                    secs(b.start),
                    until(b.end),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::fixtures::{sink_event, H};

    fn begin(task: &str, token: u64, agent: &str, run: u64, gpus: &str) -> Event {
        Event {
            devices: Some(gpus.into()),
            ..sink_event("begin", task, token, agent, run)
        }
    }

    fn end(task: &str, token: u64, agent: &str, run: u64) -> Event {
        sink_event("end", task, token, agent, run)
    }

    #[test]
    fn devices_handed_on_after_the_worker_ended_pass() {
        let mut h = H::new();
        h.push(begin("t1", 1, "a1", 1, "0,1"))
            .push(begin("t2", 2, "a1", 2, "2"))
            // Another agent's device 0 is another device.
            .push(begin("t3", 3, "a2", 3, "0"))
            .push(end("t1", 1, "a1", 1))
            .push(begin("t4", 4, "a1", 4, "1"));
        assert_eq!(problems(&h.events, &Facts::default()), Vec::<String>::new());
    }

    #[test]
    fn a_device_given_twice_at_once_is_caught_unless_agents_were_paused() {
        let mut h = H::new();
        h.push(begin("t1", 1, "a1", 1, "0,1"))
            .push(begin("t2", 2, "a1", 2, "1"))
            .push(end("t2", 2, "a1", 2));
        let p = problems(&h.events, &Facts::default());
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("GPU device 1") && p[0].contains("t1") && p[0].contains("t2"));
        let paused = Facts {
            agents_paused: true,
        };
        assert!(problems(&h.events, &paused).is_empty());
    }
}
