//! Tenants kept apart with real processes under `--auth tokens` (README: Tokens): a user token sees, lists and cancels only its own tenant's tasks, cannot submit for another tenant, and every task records who submitted it.

use std::time::Duration;

use serde_json::Value;
use tokio::time::{sleep, Instant};

use crate::harness::{Cluster, ClusterOpts};

const WAIT: Duration = Duration::from_secs(30);

/// A user token for `tenant` named `name`, made by the admin.
fn user_token(c: &Cluster, admin: &str, name: &str, tenant: &str) -> anyhow::Result<String> {
    c.tidal_as_ok(
        admin,
        &[
            "token", "create", "--role", "user", "--tenant", tenant, "--name", name,
        ],
    )
}

/// The ids `task list -o json` shows to `token`.
fn listed(c: &Cluster, token: &str) -> anyhow::Result<Vec<String>> {
    let v: Value = serde_json::from_str(&c.tidal_as_ok(token, &["task", "list", "-o", "json"])?)?;
    Ok(v["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t["id"].as_str().unwrap_or_default().to_string())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_can_neither_see_nor_cancel_anothers_tasks() -> anyhow::Result<()> {
    let (mut c, admin) = Cluster::new_with_tokens(ClusterOpts::default())?;
    c.launch().await?;
    // The leader makes the bootstrap token the first admin token.
    let deadline = Instant::now() + WAIT;
    while !c.client.list_tokens().await.is_ok_and(|t| !t.is_empty()) {
        anyhow::ensure!(Instant::now() < deadline, "no tokens\n{}", c.logs_tail(20));
        sleep(Duration::from_millis(100)).await;
    }

    let alice = user_token(&c, &admin, "alice", "team-a")?;
    let bob = user_token(&c, &admin, "bob", "team-b")?;
    let submit = ["task", "submit", "--type", "t2i", "--payload", "x"];
    let theirs = c.tidal_as_ok(&bob, &submit)?;
    let mine = c.tidal_as_ok(&alice, &submit)?;

    // Get and cancel of bob's task: NOT_FOUND, worded as for a task that
    // does not exist.
    let missing = "t0000099999";
    for verb in ["get", "cancel"] {
        let absent = c.tidal_as(Some(&alice), &["task", verb, missing]);
        let hidden = c.tidal_as(Some(&alice), &["task", verb, &theirs]);
        assert!(!hidden.status.success());
        assert_eq!(hidden.status.code(), absent.status.code());
        let (absent, hidden) = (
            String::from_utf8_lossy(&absent.stderr).replace(missing, &theirs),
            String::from_utf8_lossy(&hidden.stderr).to_string(),
        );
        assert!(
            hidden.contains(&format!("task {theirs} not found")),
            "{hidden}"
        );
        assert_eq!(hidden, absent);
    }
    let t: Value =
        serde_json::from_str(&c.tidal_as_ok(&bob, &["task", "get", &theirs, "-o", "json"])?)?;
    assert_eq!(t["state"], "pending", "bob's task was not cancelled: {t}");

    // Lists: each user its own; the admin both.
    assert_eq!(listed(&c, &alice)?, vec![mine.clone()]);
    assert_eq!(listed(&c, &bob)?, vec![theirs.clone()]);
    assert_eq!(listed(&c, &admin)?, [theirs.clone(), mine.clone()]);

    // A body naming another tenant is refused; naming its own is fine.
    let o = c.tidal_as(
        Some(&alice),
        &["task", "submit", "--type", "t2i", "--tenant", "team-b"],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    assert!(
        stderr.contains("\"team-b\"") && stderr.contains("team-a"),
        "{stderr}"
    );
    assert_eq!(listed(&c, &bob)?, vec![theirs.clone()]);
    c.tidal_as_ok(
        &alice,
        &["task", "submit", "--type", "t2i", "--tenant", "team-a"],
    )?;

    // The task records its tenant and who submitted it.
    let t: Value =
        serde_json::from_str(&c.tidal_as_ok(&alice, &["task", "get", &mine, "-o", "json"])?)?;
    assert_eq!(t["tenant"], "team-a", "{t}");
    assert_eq!(t["submitted_by"]["role"], "user", "{t}");
    let by = t["submitted_by"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(by.contains("alice"), "{t}");
    let text = c.tidal_as_ok(&alice, &["task", "get", &mine])?;
    assert!(text.contains(&format!("{by} (user)")), "{text}");

    // The admin sees and cancels both.
    for id in [&mine, &theirs] {
        c.tidal_as_ok(&admin, &["task", "get", id])?;
    }
    c.tidal_as_ok(&admin, &["task", "cancel", &theirs])?;
    // Alice cancels her own.
    c.tidal_as_ok(&alice, &["task", "cancel", &mine])?;
    Ok(())
}
