//! The status page at `/` of `--metrics-listen` and its data at
//! `/status.json`: read over plain HTTP, then rendered by headless Chromium,
//! whose DOM shows the leader and a submitted task once the page's script
//! has rendered `/status.json`. Names from users are shown escaped.
//!
//! Without Chromium (`chromium-headless-shell` or `chromium` on PATH) the
//! browser part prints that it was skipped, unless TIDAL_REQUIRE_CHROMIUM=1
//! (CI), which makes it fail.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tidal_client::v1::{self, agent_message::Msg as In, server_message::Msg as Out};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::metrics::{get, OneNode};

const WAIT: Duration = Duration::from_secs(30);
/// How long one Chromium run may take to dump the DOM.
const BROWSER_WAIT: Duration = Duration::from_secs(60);
/// A label value that would be markup if it were not escaped.
const EVIL: &str = "<script>alert(\"x\")</script>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_leader_and_a_submitted_task() {
    let node = OneNode::start(|_| {}).await;
    let client = &node.client;
    let submitted = client
        .submit_one(v1::TaskSpec {
            queue: "default".into(),
            task_type: "t2i".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(submitted.error.is_none(), "{submitted:?}");
    let task = submitted.id;
    // An agent whose label value is markup: label values are free text.
    let (_agent_tx, rx) = mpsc::channel(1);
    let mut session = client
        .open_session(
            v1::AgentMessage {
                msg: Some(In::Register(v1::Register {
                    spec: Some(v1::AgentSpec {
                        id: "gpu-1".into(),
                        dc: "dc1".into(),
                        task_types: vec!["other".into()],
                        slots: 1,
                        labels: [("zone".to_string(), EVIL.to_string())].into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })),
            },
            rx,
        )
        .await
        .unwrap();
    let first = session.inbound.message().await.unwrap().and_then(|m| m.msg);
    assert!(matches!(first, Some(Out::Registered(_))), "{first:?}");

    // Plain HTTP: the data, then the page rendered by the server.
    let metrics = node.metrics().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let json = loop {
        let (status, body) = get(&metrics, "/status.json").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        if body.contains(&format!("\"id\":\"{task}\"")) && body.contains("\"id\":\"gpu-1\"") {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task and the agent never showed in:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        json.starts_with("{\"node\":1,\"role\":\"leader\""),
        "{json}"
    );
    assert!(json.contains("\"leader\":1,"), "{json}");
    assert!(
        json.contains(r#""zone":"\u003cscript\u003ealert(\"x\")\u003c/script\u003e""#),
        "{json}"
    );
    assert!(!json.contains('<'), "{json}");
    assert_eq!(
        content_type(&metrics, "/status.json").await,
        "application/json"
    );

    let (status, html) = get(&metrics, "/").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        content_type(&metrics, "/").await,
        "text/html; charset=utf-8"
    );
    assert!(html.contains("<b id=\"leader\">1</b>"), "{html}");
    assert!(html.contains(&format!("<td>{task}</td>")), "{html}");
    assert!(
        html.contains("<td>zone=&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;</td>"),
        "{html}"
    );
    assert_eq!(html.matches("<script").count(), 1, "only the page's own");

    // Chromium: the page's script fetched /status.json and rendered it.
    match chromium() {
        Some(browser) => {
            let url = format!("http://{metrics}/");
            let deadline = tokio::time::Instant::now() + WAIT;
            let dom = loop {
                let dom = dump_dom(&browser, &url).await;
                if dom.contains("data-source=\"json\"")
                    && dom.contains("<b id=\"leader\">1</b>")
                    && dom.contains(&format!("<td>{task}</td>"))
                {
                    break dom;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the page never rendered /status.json with the leader and {task}:\n{dom}"
                );
            };
            // Chromium writes text's `<` as `&lt;`: the label stayed text.
            assert!(
                dom.contains("<td>zone=&lt;script&gt;alert(\"x\")&lt;/script&gt;</td>"),
                "{dom}"
            );
            assert_eq!(dom.matches("<script").count(), 1, "{dom}");
            assert!(
                dom.contains("<p id=\"live\" class=\"\">live: updated "),
                "{dom}"
            );
        }
        None if std::env::var("TIDAL_REQUIRE_CHROMIUM").as_deref() == Ok("1") => {
            panic!("TIDAL_REQUIRE_CHROMIUM=1 but neither chromium-headless-shell nor chromium is on PATH")
        }
        None => eprintln!(
            "SKIPPED the browser part: neither chromium-headless-shell nor chromium is on PATH \
             (apt-get install chromium-headless-shell; TIDAL_REQUIRE_CHROMIUM=1 makes this fail)"
        ),
    }

    drop(session);
    node.stop().await;
}

/// The Content-Type of `GET path`.
async fn content_type(addr: &str, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .expect("a Content-Type")
        .to_string()
}

/// Debian's headless Chromium, or its full one, from PATH.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium-headless-shell", "chromium"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// The DOM of `url` after Chromium ran its scripts, from a fresh profile.
async fn dump_dom(browser: &Path, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let child = tokio::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            // Time for the script's first fetch of /status.json (virtual time
            // waits for the network).
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", browser.display()));
    // Dropped before `profile`: the whole tree is gone before its profile.
    let _group = ProcessGroup(child.id().expect("a running child"));
    let out = tokio::time::timeout(BROWSER_WAIT, child.wait_with_output())
        .await
        .expect("Chromium dumps the DOM in time")
        .expect("Chromium runs");
    assert!(
        out.status.success(),
        "{} exited with {}",
        browser.display(),
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kills a process group (Chromium and its helpers) when dropped.
struct ProcessGroup(u32);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // The group may be gone already: Chromium exits after the dump.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0)])
            .stderr(Stdio::null())
            .status();
    }
}
