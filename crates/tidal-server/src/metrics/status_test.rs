use tidal_core::command::{ApplyCtx, Command};
use tidal_core::model::{AgentSpec, TaskId, TaskSpec};

use std::time::Duration;

use super::*;

const EVIL_QUEUE: &str = "<script>alert('q')</script>";
const EVIL_TYPE: &str = "<img src=x onerror=alert(1)>";
const EVIL_LABEL: &str = "\"><script>alert(2)</script>";

/// Applies `cmd` to `state` as entry `index` at time `index` s.
fn apply(state: &mut State, index: u64, cmd: Command) {
    state.apply(
        cmd,
        ApplyCtx {
            log_index: index,
            time_ms: index * 1000,
        },
    );
}

/// A queue, an agent with a label, and `n` tasks submitted one per entry;
/// the first is assigned to the agent. Names come straight from the state
/// machine, which takes what the API's checks would refuse.
fn state(n: u64) -> State {
    let mut state = State::new();
    apply(
        &mut state,
        1,
        Command::SetQueue {
            name: EVIL_QUEUE.into(),
            weight: 3,
            strategy: Strategy::WeightedRoundRobin,
        },
    );
    apply(
        &mut state,
        2,
        Command::RegisterAgent(AgentSpec {
            id: "gpu-1".into(),
            dc: "dc1".into(),
            task_types: [EVIL_TYPE.to_string()].into(),
            slots: 2,
            weight: 1,
            labels: [("zone".to_string(), EVIL_LABEL.to_string())].into(),
            ..AgentSpec::default()
        }),
    );
    for i in 0..n {
        apply(
            &mut state,
            10 + i,
            Command::Submit(vec![TaskSpec {
                task_type: EVIL_TYPE.into(),
                queue: EVIL_QUEUE.into(),
                max_attempts: 1,
                slots: 1,
                ..TaskSpec::default()
            }]),
        );
    }
    apply(
        &mut state,
        100,
        Command::Assign(vec![(TaskId(1), "gpu-1".into())]),
    );
    state
}

fn status(n: u64, recent: usize) -> Status {
    let metrics = RaftMetrics::new_initial(1);
    Status::of(1, &metrics, &state(n), 200_000, recent)
}

#[test]
fn requests_are_routed_to_their_pages() {
    let route = |head: &str| {
        super::super::route(
            Some(head.as_bytes()),
            || "Metrics".to_string(),
            |page| format!("{page:?}"),
        )
    };
    assert_eq!(
        route("GET / HTTP/1.1\r\n\r\n"),
        ("200 OK", "text/html; charset=utf-8", "Html".into())
    );
    assert_eq!(
        route("GET /status.json?t=1 HTTP/1.1\r\n\r\n"),
        ("200 OK", "application/json", "Json".into())
    );
    assert_eq!(
        route("GET /metrics HTTP/1.1\r\n\r\n"),
        ("200 OK", super::super::CONTENT_TYPE, "Metrics".into())
    );
    assert_eq!(route("POST / HTTP/1.1\r\n\r\n").0, "405 Method Not Allowed");
    assert_eq!(route("GET /status HTTP/1.1\r\n\r\n").0, "404 Not Found");
}

#[test]
fn queues_agents_and_tasks_are_read_from_the_state() {
    let s = status(3, RECENT_TASKS);
    assert_eq!(s.tasks_total, 3);
    let queue = s.queues.iter().find(|q| q.name == EVIL_QUEUE).unwrap();
    assert_eq!(
        (queue.weight, queue.strategy, queue.pending, queue.in_flight),
        (3, "weighted-round-robin", 2, 1)
    );
    assert_eq!(queue.tasks, 3);
    let default = s.queues.iter().find(|q| q.name == "default").unwrap();
    assert_eq!((default.pending, default.tasks), (0, 0));
    assert_eq!(s.agents.len(), 1);
    let agent = &s.agents[0];
    assert_eq!(
        (agent.state, agent.slots_in_use, agent.slots),
        ("ready", 1, 2)
    );
    assert_eq!(agent.tasks, 1);
    let assigned = s.recent.iter().find(|t| t.id == "t0000000001").unwrap();
    assert_eq!(
        (assigned.state, assigned.agent.as_str()),
        ("assigned", "gpu-1")
    );
    // Assigned at entry 100 (100 s), read at 200 s.
    assert_eq!(assigned.age_ms, 100_000);
    assert_eq!(s.role, "follower");
    assert_eq!(s.leader, None);
}

#[test]
fn recent_tasks_are_the_newest_by_update_time_and_capped() {
    let s = status(10, 4);
    assert_eq!(s.tasks_total, 10);
    let ids: Vec<&str> = s.recent.iter().map(|t| t.id.as_str()).collect();
    // Task 1 was updated last (assigned at entry 100), then the newest
    // submits.
    assert_eq!(
        ids,
        ["t0000000001", "t0000000010", "t0000000009", "t0000000008"]
    );
    assert!(status(10, 0).recent.is_empty());
}

#[test]
fn user_names_are_escaped_in_the_page() {
    let html = status(2, RECENT_TASKS).html();
    // The page's own script is its only script element.
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(!html.contains(EVIL_QUEUE), "{html}");
    assert!(html.contains("<td>&lt;script&gt;alert(&#39;q&#39;)&lt;/script&gt;</td>"));
    assert!(html.contains("<td>&lt;img src=x onerror=alert(1)&gt;</td>"));
    assert!(html.contains("<td>zone=&quot;&gt;&lt;script&gt;alert(2)&lt;/script&gt;</td>"));
    assert!(html.contains("<b id=\"leader\">none known</b>"));
}

#[test]
fn user_names_are_escaped_in_the_json() {
    let json = status(2, RECENT_TASKS).json();
    assert!(!json.contains('<') && !json.contains('>'), "{json}");
    assert!(json.contains(r#""name":"\u003cscript\u003ealert('q')\u003c/script\u003e""#));
    assert!(json.contains(r#""zone":"\"\u003e\u003cscript\u003ealert(2)\u003c/script\u003e""#));
    assert!(
        json.contains(r#""id":"t0000000001","type":"\u003cimg"#),
        "{json}"
    );
    assert!(json.starts_with("{\"node\":1,\"role\":\"follower\""));
    assert!(json.contains("\"leader\":null"));
    assert_eq!(json_str("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
}

#[test]
fn the_page_runs_only_its_own_script_and_style() {
    let html = Status::default().html();
    assert!(html.contains(&format!("<script>{SCRIPT}</script>")));
    assert!(html.contains(&format!("<style>{STYLE}</style>")));
    let sha = |text: &str| {
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    };
    assert!(CSP.contains(&format!("script-src 'sha256-{}'", sha(SCRIPT))));
    assert!(CSP.contains(&format!("style-src 'sha256-{}'", sha(STYLE))));
    assert!(CSP.starts_with("default-src 'none'; connect-src 'self';"));
    assert!(html.contains(&escape(&CSP)));
    // Nothing is loaded from elsewhere.
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(SCRIPT.contains(&format!("const REFRESH = {REFRESH_MS};")));
    assert!(html.contains("<noscript><meta http-equiv=\"refresh\" content=\"2\"></noscript>"));
    // Every section is there, empty ones say so.
    for title in [
        "Members",
        "Queues",
        "Agents",
        "Recent tasks",
        "Cross-DC links",
    ] {
        assert!(html.contains(&format!("<h2>{title}")), "{title}");
    }
    assert!(html.contains("<td class=\"none\" colspan=\"5\">none</td>"));
}

#[test]
fn ages_read_in_two_units() {
    assert_eq!(age(999), "0s");
    assert_eq!(age(59_000), "59s");
    assert_eq!(age(187_000), "3m 7s");
    assert_eq!(age(5 * 3_600_000 + 120_000), "5h 2m");
    assert_eq!(age(2 * 86_400_000 + 4 * 3_600_000), "2d 4h");
}

/// Raft metrics of node `me` in a membership of voters 1 and 2 and learner
/// 3, led by node 1, which matched index 7 on 2 and nothing on 3.
fn metrics(me: u64) -> RaftMetrics<u64, BasicNode> {
    use openraft::{CommittedLeaderId, LogId, Membership, StoredMembership};
    let node = |port: u16| BasicNode::new(format!("127.0.0.1:{port}"));
    let membership = Membership::new(
        vec![[1, 2].into()],
        std::collections::BTreeMap::from([(1, node(7001)), (2, node(7002)), (3, node(7003))]),
    );
    let mut m = RaftMetrics::new_initial(me);
    m.membership_config = std::sync::Arc::new(StoredMembership::new(None, membership));
    m.current_leader = Some(1);
    m.current_term = 4;
    m.state = if me == 1 {
        ServerState::Leader
    } else {
        ServerState::Follower
    };
    m.replication = Some(std::collections::BTreeMap::from([
        (1, Some(LogId::new(CommittedLeaderId::new(4, 1), 9))),
        (2, Some(LogId::new(CommittedLeaderId::new(4, 1), 7))),
        (3, None),
    ]));
    m
}

#[test]
fn members_show_the_leader_voters_learners_and_on_the_leader_what_each_matched() {
    let s = Status::of(1, &metrics(1), &State::new(), 0, RECENT_TASKS);
    assert_eq!((s.role, s.term, s.leader), ("leader", 4, Some(1)));
    let members: Vec<_> = s
        .members
        .iter()
        .map(|m| (m.id, m.addr.as_str(), m.voter, m.matched))
        .collect();
    assert_eq!(
        members,
        [
            (1, "127.0.0.1:7001", true, Some(9)),
            (2, "127.0.0.1:7002", true, Some(7)),
            (3, "127.0.0.1:7003", false, Some(0)),
        ]
    );
    let html = s.html();
    assert!(html.contains("<b id=\"leader\">1</b>"));
    assert!(html.contains(
        "<tr><td>1</td><td>127.0.0.1:7001</td><td>voter</td><td>leader, this node</td><td>9</td></tr>"
    ));
    assert!(html
        .contains("<tr><td>3</td><td>127.0.0.1:7003</td><td>learner</td><td></td><td>0</td></tr>"));
    assert!(s
        .json()
        .contains(r#""members":[{"id":1,"addr":"127.0.0.1:7001","voter":true,"matched":9},"#));
    // A follower knows the leader but not what the members matched.
    let s = Status::of(2, &metrics(2), &State::new(), 0, RECENT_TASKS);
    assert_eq!((s.role, s.leader), ("follower", Some(1)));
    assert!(s.members.iter().all(|m| m.matched.is_none()));
    assert!(s.html().contains(
        "<tr><td>2</td><td>127.0.0.1:7002</td><td>voter</td><td>this node</td><td></td></tr>"
    ));
}

#[test]
fn forwarded_tasks_fill_the_outbox_of_their_peer() {
    let mut state = state(3);
    apply(
        &mut state,
        150,
        Command::Forward(vec![(TaskId(2), "dc-2".into())]),
    );
    let s = Status::of(1, &metrics(1), &state, 200_000, RECENT_TASKS);
    assert_eq!(
        s.links,
        [LinkRow {
            peer: "dc-2".into(),
            records: 1,
            acked: 0,
            oldest_age_ms: Some(50_000),
            link: "",
            last_ack_age_ms: None,
            last_error: String::new(),
        }]
    );
    let forwarded = s.recent.iter().find(|t| t.id == "t0000000002").unwrap();
    assert_eq!(
        (forwarded.state, forwarded.agent.as_str()),
        ("forwarded", "dc:dc-2")
    );
    assert!(s.html().contains(
        "<tr><td>dc-2</td><td></td><td></td><td>1</td><td>0</td><td>50s</td><td></td></tr>"
    ));
    assert!(s.json().contains(
        r#""links":[{"peer":"dc-2","link":"","records":1,"acked":0,"oldest_age_ms":50000,"last_ack_age_ms":null,"last_error":""}]"#
    ));
}

#[test]
fn configured_peers_show_their_link_first_with_or_without_an_outbox() {
    let mut state = state(3);
    apply(
        &mut state,
        150,
        Command::Forward(vec![(TaskId(2), "dc-old".into())]),
    );
    let mut s = Status::of(1, &metrics(1), &state, 200_000, RECENT_TASKS);
    let peer = |dc: &str| crate::config::Peer {
        dc: dc.into(),
        endpoints: vec!["127.0.0.1:1".into()],
    };
    let peers = PeerTable::new(vec![peer("dc-b"), peer("dc-c")]);
    let then = Instant::now();
    peers.up("dc-b");
    peers.down("dc-c", "connection refused <x>".into());
    s.add_links(&peers, then + Duration::from_secs(3));
    let links: Vec<(&str, &str, Option<u64>, &str)> = s
        .links
        .iter()
        .map(|l| {
            (
                l.peer.as_str(),
                l.link,
                l.last_ack_age_ms.map(|ms| ms / 1000),
                l.last_error.as_str(),
            )
        })
        .collect();
    assert_eq!(
        links,
        [
            ("dc-b", "up", Some(2), ""),
            ("dc-c", "down", None, "connection refused <x>"),
            ("dc-old", "", None, ""),
        ]
    );
    // The error is escaped in the page.
    assert!(s.html().contains("connection refused &lt;x&gt;"));
}
