//! Tokens enforced at the public API (`--auth tokens`, README: Tokens): no or a bad token is UNAUTHENTICATED, a role that may not make a call PERMISSION_DENIED (the CLI exits 8), a fresh token works through a follower, and below cluster format version 3 only the bootstrap token is taken.

use std::process::Output;
use std::time::Duration;

use anyhow::Context;
use tidal_client::{v1, Client, ClientOptions, Token};
use tokio::time::{sleep, Instant};
use tonic::Code;

use crate::harness::{Cluster, ClusterOpts};

const WAIT: Duration = Duration::from_secs(30);
/// The CLI's exit code for refused credentials.
const CREDENTIALS_REFUSED: i32 = 8;

/// A client of `endpoints` presenting `token`.
fn client(c: &Cluster, endpoints: &[String], token: Option<&str>) -> anyhow::Result<Client> {
    let opts = ClientOptions {
        token: token.map(Token::new).transpose()?,
        ..c.spec.client.clone()
    };
    Ok(Client::with_options(endpoints.to_vec(), opts)?)
}

/// Asserts the CLI exits 8 and says `says` on stderr.
fn refused(o: &Output, says: &str) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(CREDENTIALS_REFUSED), "{stderr}");
    assert!(stderr.contains(says), "wanted {says:?} in: {stderr}");
}

fn spec() -> v1::TaskSpec {
    v1::TaskSpec {
        task_type: "t2i".into(),
        payload: b"x".to_vec(),
        ..Default::default()
    }
}

/// Waits until the leader has made the bootstrap token the first admin
/// token (until then the servers answer it UNAVAILABLE, which the client
/// retries, or take it as below format version 3).
async fn wait_tokens(c: &Cluster) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        match c.client.list_tokens().await {
            Ok(tokens) if !tokens.is_empty() => return Ok(()),
            r if Instant::now() > deadline => {
                anyhow::bail!("no tokens: {r:?}\n{}", c.logs_tail(20))
            }
            _ => sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_roles_are_enforced_at_the_public_api() -> anyhow::Result<()> {
    let (mut c, boot) = Cluster::new_with_tokens(ClusterOpts::default())?;
    c.launch().await?;
    wait_tokens(&c).await?;

    // Every node says how it checks callers.
    let status = c.tidal_as_ok(&boot, &["status"])?;
    assert!(
        status.contains("AUTH") && status.contains("tokens"),
        "{status}"
    );

    // No token: UNAUTHENTICATED, exit 8, saying how to give one.
    let o = c.tidal_as(None, &["task", "list"]);
    refused(&o, "no token");
    refused(&o, "--token or TIDAL_TOKEN");
    let anonymous = client(&c, &c.endpoints(), None)?;
    let err = anonymous.list_tasks(Default::default()).await.unwrap_err();
    assert_eq!(err.code, Code::Unauthenticated, "{err:?}");
    let err = anonymous.status().await.unwrap_err();
    assert_eq!(err.code, Code::Unauthenticated, "{err:?}");

    // A malformed header or token: UNAUTHENTICATED.
    refused(
        &c.tidal_as(Some("not-a-token"), &["task", "list"]),
        "not a tidal token",
    );
    let junk = client(&c, &c.endpoints(), Some("tdl_0123456789abcdef_tooshort"))?;
    let err = junk.list_tasks(Default::default()).await.unwrap_err();
    assert_eq!(err.code, Code::Unauthenticated, "{err:?}");
    // A well-formed token the cluster never made: UNAUTHENTICATED, from the leader.
    let stranger = c.tidal_ok(&["token", "generate"])?.trim().to_string();
    refused(
        &c.tidal_as(Some(&stranger), &["task", "list"]),
        "is not known to this cluster",
    );

    // The bootstrap admin makes a user token.
    let user = c
        .tidal_as_ok(
            &boot,
            &[
                "token", "create", "--role", "user", "--tenant", "team-a", "--name", "alice",
            ],
        )?
        .trim()
        .to_string();
    assert!(user.starts_with("tdl_"), "{user}");
    // The token records who created it: the bootstrap admin.
    let listed: serde_json::Value =
        serde_json::from_str(&c.tidal_as_ok(&boot, &["token", "list", "-o", "json"])?)?;
    let alice = listed["tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["name"] == "alice")
        .cloned()
        .unwrap_or_default();
    assert_eq!(alice["created_by"], "token:bootstrap", "{listed}");

    // The user submits, gets and lists...
    let id = c
        .tidal_as_ok(
            &user,
            &["task", "submit", "--type", "t2i", "--payload", "hello"],
        )?
        .trim()
        .to_string();
    let got = c.tidal_as_ok(&user, &["task", "get", &id])?;
    assert!(got.contains(&id), "{got}");
    let listed = c.tidal_as_ok(&user, &["task", "list"])?;
    assert!(listed.contains(&id), "{listed}");
    c.tidal_as_ok(&user, &["status"])?;
    // ...but administers nothing: PERMISSION_DENIED, naming the role and the call.
    for (args, call) in [
        (
            vec![
                "cluster",
                "add-learner",
                "--id",
                "9",
                "--addr",
                "127.0.0.1:1",
            ],
            "Cluster/AddLearner",
        ),
        (vec!["queue", "set", "vip", "--weight", "2"], "Queues/Set"),
        (
            vec!["token", "create", "--role", "user", "--tenant", "team-a"],
            "Tokens/Create",
        ),
        (vec!["agent", "drain", "a1"], "Agents/Drain"),
    ] {
        let o = c.tidal_as(Some(&user), &args);
        refused(&o, &format!("role user may not call {call}"));
    }
    let as_user = client(&c, &c.endpoints(), Some(&user))?;
    let err = as_user.set_queue("vip", 2, "").await.unwrap_err();
    assert_eq!(err.code, Code::PermissionDenied, "{err:?}");
    // Nothing of it happened.
    let members = c.client.members().await?;
    assert!(members.members.iter().all(|m| m.id != 9), "{members:?}");

    // A token used against a follower the moment it is made: the
    // follower that does not know it yet sends the client to the leader.
    let (leader, _) = c.wait_leader(WAIT).await?;
    let follower = c
        .nodes
        .iter()
        .find(|n| n.id != leader)
        .context("a follower")?
        .addr
        .clone();
    for _ in 0..5 {
        let fresh = c
            .client
            .create_token(v1::CreateTokenRequest {
                role: "user".into(),
                tenant: "team-a".into(),
                ..Default::default()
            })
            .await?;
        let via_follower = client(&c, std::slice::from_ref(&follower), Some(&fresh.token))?;
        let t = via_follower.submit_one(spec()).await?;
        via_follower.get_task(&t.id, false).await?;
        let page = via_follower
            .list_tasks(v1::ListTasksRequest {
                stale: true,
                ..Default::default()
            })
            .await?;
        assert!(!page.tasks.is_empty());
    }

    // Revoked: UNAUTHENTICATED on every node.
    let user_id = user.split('_').nth(1).unwrap_or_default().to_string();
    c.tidal_as_ok(&boot, &["token", "revoke", &user_id])?;
    refused(
        &c.tidal_as(Some(&user), &["task", "list"]),
        &format!("token {user_id} was revoked"),
    );
    let deadline = Instant::now() + WAIT;
    for n in &c.nodes {
        let one = client(&c, std::slice::from_ref(&n.addr), Some(&user))?;
        loop {
            // A follower may apply the revocation a moment after the leader.
            match one
                .list_tasks(v1::ListTasksRequest {
                    stale: true,
                    ..Default::default()
                })
                .await
            {
                Err(e) if e.code == Code::Unauthenticated => break,
                r => {
                    anyhow::ensure!(Instant::now() < deadline, "node {}: {r:?}", n.id);
                    sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    // Refusals are logged with the token's id, never a secret.
    let secret = user.splitn(3, '_').nth(2).unwrap_or_default();
    let mut logged = false;
    for n in &c.nodes {
        let log = std::fs::read_to_string(&n.proc.as_ref().unwrap().log)?;
        assert!(!log.contains(secret), "node {}'s log holds a secret", n.id);
        logged |= log.contains("refused a call") && log.contains(&user_id);
    }
    assert!(logged, "no node logged the revoked token's refusal");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_version_3_only_the_bootstrap_token_is_taken() -> anyhow::Result<()> {
    let (mut c, boot) = Cluster::new_with_tokens(ClusterOpts {
        nodes: 1,
        ..ClusterOpts::default()
    })?;
    c.start_node_with(1, true, &["--max-format-version".into(), "2".into()])?;
    c.wait_leader(WAIT).await?;

    // The bootstrap token is an admin's: it submits and administers.
    let t = c.client.submit_one(spec()).await?;
    c.client.get_task(&t.id, false).await?;
    c.tidal_as_ok(&boot, &["queue", "set", "vip", "--weight", "2"])?;
    // Any other token is refused, saying why.
    let other = c.tidal_ok(&["token", "generate"])?.trim().to_string();
    refused(
        &c.tidal_as(Some(&other), &["task", "list"]),
        "tokens need cluster format version 3",
    );
    refused(&c.tidal_as(None, &["status"]), "no token");
    Ok(())
}
