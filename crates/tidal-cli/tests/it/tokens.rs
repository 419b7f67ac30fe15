//! Tokens with real processes (README: Tokens): `tidal token generate` and `--bootstrap-token-file`, create (printed once), list (never a secret), revoke; and below cluster format version 3, refused while submits still work.

use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;
use tidal_client::v1;
use tokio::time::{sleep, Instant};

use crate::harness::{Cluster, ClusterOpts};

const WAIT: Duration = Duration::from_secs(30);

/// A cluster of `opts` under `--auth none`, with TLS: these tests manage
/// tokens with a bootstrap token file of their own (authz.rs checks that
/// `--auth tokens` enforces them).
fn cluster(opts: ClusterOpts) -> anyhow::Result<Cluster> {
    Cluster::new_spec(opts, |s| s.tokens = false)
}

/// The id of a token's text: the 16 hex digits after `tdl_`.
fn id_of(token: &str) -> String {
    token.split('_').nth(1).unwrap_or_default().to_string()
}

/// The secret of a token's text: what comes after its id.
fn secret_of(token: &str) -> String {
    token.splitn(3, '_').nth(2).unwrap_or_default().to_string()
}

/// `tidal token generate` into a file of the cluster's directory, given
/// to every server as `--bootstrap-token-file`; returns the token.
fn bootstrap_file(c: &mut Cluster) -> anyhow::Result<String> {
    let token = c.tidal_ok(&["token", "generate"])?;
    let token = token.trim().to_string();
    assert_eq!(token.lines().count(), 1, "{token}");
    assert!(token.starts_with("tdl_") && token.len() == 64, "{token}");
    let path = c.dir.path().join("admin.token");
    std::fs::write(&path, format!("{token}\n"))?;
    c.spec.server_args.extend([
        "--bootstrap-token-file".to_string(),
        path.display().to_string(),
    ]);
    Ok(token)
}

/// `tidal token list -o json`'s tokens.
fn list_json(c: &Cluster) -> anyhow::Result<Vec<Value>> {
    let out = c.tidal_ok(&["token", "list", "-o", "json"])?;
    let v: Value = serde_json::from_str(&out).with_context(|| out.clone())?;
    Ok(v["tokens"].as_array().cloned().unwrap_or_default())
}

/// Waits until `token list` shows token `id`; returns its entry.
async fn wait_listed(c: &Cluster, id: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(tokens) = list_json(c) {
            if let Some(t) = tokens.iter().find(|t| t["id"] == id) {
                return Ok(t.clone());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "token {id} is not listed: {:?}\n{}",
                list_json(c),
                c.logs_tail(20)
            );
        }
        sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_created_once_listed_without_secrets_and_revoked() -> anyhow::Result<()> {
    let mut c = cluster(ClusterOpts::default())?;
    let boot = bootstrap_file(&mut c)?;
    c.launch().await?;

    // The leader made the bootstrap token the first admin token.
    let b = wait_listed(&c, &id_of(&boot)).await?;
    assert_eq!(b["role"], "admin", "{b}");
    assert_eq!(b["name"], "bootstrap", "{b}");
    assert_eq!(b["created_by"], "bootstrap", "{b}");
    assert_eq!(b["tenant"], Value::Null, "{b}");
    assert_eq!(b["active"], true, "{b}");

    // Create: stdout is the token alone, stderr says it is shown once.
    let o = c.tidal(&[
        "token", "create", "--role", "user", "--tenant", "team-a", "--name", "alice", "--ttl",
        "30d",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let user = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(user.starts_with("tdl_") && user.len() == 64, "{user}");
    assert!(
        stderr.contains(&id_of(&user)) && stderr.contains("not shown again"),
        "{stderr}"
    );
    let out = c.tidal_ok(&[
        "token",
        "create",
        "--role",
        "agent",
        "--all-tenants",
        "-o",
        "json",
    ])?;
    let agent: Value = serde_json::from_str(&out)?;
    let agent_token = agent["token"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        id_of(&agent_token),
        agent["id"].as_str().unwrap(),
        "{agent}"
    );
    assert_eq!(agent["role"], "agent", "{agent}");
    assert_eq!(agent["tenant"], Value::Null, "{agent}");

    // List: every token, never a secret (nor in any server's log).
    let table = c.tidal_ok(&["token", "list"])?;
    for h in [
        "ID", "NAME", "ROLE", "TENANT", "CREATED", "EXPIRES", "REVOKED",
    ] {
        assert!(table.contains(h), "{table}");
    }
    let row = table
        .lines()
        .find(|l| l.contains(&id_of(&user)))
        .context("user token row")?;
    assert!(
        row.contains("alice") && row.contains("user") && row.contains("team-a"),
        "{row}"
    );
    assert!(row.contains("UTC"), "{row}");
    let json = c.tidal_ok(&["token", "list", "-o", "json"])?;
    let tokens = list_json(&c)?;
    assert_eq!(tokens.len(), 3, "{json}");
    let user_entry = tokens
        .iter()
        .find(|t| t["id"] == id_of(&user).as_str())
        .unwrap();
    let created = user_entry["created_ms"].as_u64().unwrap();
    let expires = user_entry["expires_ms"].as_u64().unwrap();
    assert!(
        expires.abs_diff(created + 30 * 86_400_000) < 5_000,
        "{user_entry}"
    );
    for t in [&boot, &user, &agent_token] {
        let secret = secret_of(t);
        assert!(!table.contains(&secret) && !json.contains(&secret), "{t}");
        for n in &c.nodes {
            let log = std::fs::read_to_string(&n.proc.as_ref().unwrap().log)?;
            assert!(!log.contains(&secret), "node {}'s log holds a secret", n.id);
        }
    }

    // Revoke: it is marked (twice changes nothing); an unknown id is
    // NOT_FOUND; the last active admin token stays.
    let out = c.tidal_ok(&["token", "revoke", &id_of(&user)])?;
    assert!(out.contains(&id_of(&user)) && out.contains("UTC"), "{out}");
    c.tidal_ok(&["token", "revoke", &id_of(&user)])?;
    let tokens = list_json(&c)?;
    let user_entry = tokens
        .iter()
        .find(|t| t["id"] == id_of(&user).as_str())
        .unwrap();
    assert_eq!(user_entry["active"], false, "{user_entry}");
    assert!(user_entry["revoked_ms"].as_u64().is_some(), "{user_entry}");
    let err = c.client.revoke_token("0123456789abcdef").await.unwrap_err();
    assert_eq!(err.code, tonic::Code::NotFound, "{err:?}");
    let err = c.client.revoke_token("nope").await.unwrap_err();
    assert_eq!(err.code, tonic::Code::InvalidArgument, "{err:?}");
    let o = c.tidal(&["token", "revoke", &id_of(&boot)]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("last active admin token"), "{stderr}");
    let err = c.client.revoke_token(&id_of(&boot)).await.unwrap_err();
    assert_eq!(err.code, tonic::Code::FailedPrecondition, "{err:?}");
    // With a second admin token, the bootstrap token can go.
    let admin = c.tidal_ok(&["token", "create", "--role", "admin", "--name", "ops"])?;
    c.tidal_ok(&["token", "revoke", &id_of(&boot)])?;
    let o = c.tidal(&["token", "revoke", &id_of(admin.trim())]);
    assert_eq!(o.status.code(), Some(1), "the last admin token was revoked");

    // Refused requests: the role's tenant rules, usage errors.
    let o = c.tidal(&["token", "create", "--role", "user"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("acts for one tenant"));
    let o = c.tidal(&["token", "create", "--role", "admin", "--tenant", "t"]);
    assert_eq!(o.status.code(), Some(1));
    let o = c.tidal(&[
        "token",
        "create",
        "--role",
        "agent",
        "--tenant",
        "t",
        "--all-tenants",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let o = c.tidal(&[
        "token", "create", "--role", "user", "--tenant", "t", "--ttl", "1w",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = c
        .client
        .create_token(v1::CreateTokenRequest {
            role: "root".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, tonic::Code::InvalidArgument, "{err:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_version_3_tokens_are_refused_and_submits_work() -> anyhow::Result<()> {
    let mut c = cluster(ClusterOpts {
        nodes: 1,
        ..ClusterOpts::default()
    })?;
    let boot = bootstrap_file(&mut c)?;
    c.start_node_with(1, true, &["--max-format-version".into(), "2".into()])?;
    c.wait_leader(WAIT).await?;

    let o = c.tidal(&["token", "create", "--role", "admin"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("needs cluster format version 3; the cluster is at version 2"),
        "{stderr}"
    );
    let err = c
        .client
        .create_token(v1::CreateTokenRequest {
            role: "admin".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, tonic::Code::FailedPrecondition, "{err:?}");
    let err = c.client.list_tokens().await.unwrap_err();
    assert_eq!(err.code, tonic::Code::FailedPrecondition, "{err:?}");
    let err = c.client.revoke_token(&id_of(&boot)).await.unwrap_err();
    assert_eq!(err.code, tonic::Code::FailedPrecondition, "{err:?}");
    let submitted = c
        .client
        .submit_one(v1::TaskSpec {
            task_type: "t2i".into(),
            payload: b"x".to_vec(),
            ..Default::default()
        })
        .await?;
    let t = c.client.get_task(&submitted.id, false).await?;
    assert_eq!(t.state, v1::TaskState::Pending as i32, "{t:?}");

    // Restarted as a full build, the node raises the cluster to version 3
    // and the bootstrap token becomes the first admin token.
    c.kill_node(1);
    c.start_node(1, false)?;
    let b = wait_listed(&c, &id_of(&boot)).await?;
    assert_eq!(b["role"], "admin", "{b}");
    let out = c.tidal_ok(&["token", "create", "--role", "user", "--tenant", "t"])?;
    assert!(out.starts_with("tdl_"), "{out}");
    assert_eq!(list_json(&c)?.len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_bootstrap_token_file_stops_the_server_at_start() -> anyhow::Result<()> {
    let mut c = cluster(ClusterOpts {
        nodes: 1,
        ..ClusterOpts::default()
    })?;
    let path = c.dir.path().join("bad.token");
    std::fs::write(&path, "tdl_0123456789abcdef_tooshort\n")?;
    c.start_node_with(
        1,
        true,
        &["--bootstrap-token-file".into(), path.display().to_string()],
    )?;
    let p = c.node_mut(1).proc.as_mut().unwrap();
    let status = p.wait_exit(WAIT).await.context("the server did not stop")?;
    let log = std::fs::read_to_string(&p.log)?;
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("--bootstrap-token-file") && log.contains("the secret is not 32 bytes"),
        "{log}"
    );
    assert!(!log.contains("tooshort"), "{log}");
    Ok(())
}
