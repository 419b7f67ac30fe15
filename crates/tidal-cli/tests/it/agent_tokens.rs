//! Agent tokens with real processes (README: Tokens): an agent of a one-tenant token runs that tenant's tasks only; revoking its token ends it with exit 8 and its task runs on another agent under a new fencing token; SIGTERM drains and deregisters a token's agent, which exits 0, and another agent's token may neither drain it nor take its id.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use tidal_client::{v1, Client, ClientOptions, Token};
use tokio::time::{sleep, Instant};

use crate::harness::{AgentOpts, Cluster, ClusterOpts};

const WAIT: Duration = Duration::from_secs(30);
/// The CLI's and the agent's exit code for refused credentials.
const CREDENTIALS_REFUSED: i32 = 8;

/// A one-node cluster under `--auth tokens` with a bootstrap token file
/// (its client presents that token) and a short agent lease; started,
/// with the bootstrap token made the first admin token. Returns the
/// cluster and the bootstrap token.
async fn cluster() -> anyhow::Result<(Cluster, String)> {
    let (mut c, boot) = Cluster::new_with_tokens(ClusterOpts {
        nodes: 1,
        join: false,
        server_args: vec!["--agent-ttl-ms".into(), "3000".into()],
        ..ClusterOpts::default()
    })?;
    c.launch().await?;
    let deadline = Instant::now() + WAIT;
    loop {
        match c.client.list_tokens().await {
            Ok(tokens) if !tokens.is_empty() => break,
            r if Instant::now() > deadline => bail!("no tokens: {r:?}\n{}", c.logs_tail(20)),
            _ => sleep(Duration::from_millis(100)).await,
        }
    }
    Ok((c, boot))
}

/// `tidal token create --role agent` for `tenant` (None: all tenants).
fn agent_token(c: &Cluster, boot: &str, tenant: Option<&str>) -> anyhow::Result<String> {
    let mut args = vec!["token", "create", "--role", "agent"];
    match tenant {
        Some(t) => args.extend(["--tenant", t]),
        None => args.push("--all-tenants"),
    }
    c.tidal_as_ok(boot, &args)
}

/// The id of a token's text: the 16 hex digits after `tdl_`.
fn id_of(token: &str) -> String {
    token.split('_').nth(1).unwrap_or_default().to_string()
}

/// A worker that records "task token agent pid" in `runs`, then sleeps
/// `a1_s` seconds on agent a1 (none elsewhere).
fn worker(runs: &Path, a1_s: u32) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "echo \"$TIDAL_TASK_ID $TIDAL_FENCING_TOKEN $TIDAL_AGENT_ID $$\" >> '{}'; \
             if [ \"$TIDAL_AGENT_ID\" = a1 ]; then sleep {a1_s}; fi; cat",
            runs.display(),
        ),
    ]
}

/// An agent `id` of `slots` slots presenting `token`.
fn agent(id: &str, token: &str, slots: u32, command: &[String]) -> AgentOpts {
    let mut a = AgentOpts::new(id, &["t2i"]).slots(slots);
    a.command = command.to_vec();
    a.extra_args = vec![
        "--token".into(),
        token.into(),
        "--stop-grace-ms".into(),
        "1000".into(),
    ];
    a
}

async fn submit(c: &Cluster, tenant: &str) -> anyhow::Result<String> {
    let t = c
        .client
        .submit_one(v1::TaskSpec {
            task_type: "t2i".into(),
            payload: b"x".to_vec(),
            tenant: tenant.into(),
            ..Default::default()
        })
        .await?;
    Ok(t.id)
}

fn state(t: &v1::Task) -> &'static str {
    tidal_client::task_state_name(t.state)
}

/// Polls the task until `done` holds for it.
async fn wait_task(
    c: &Cluster,
    id: &str,
    what: &str,
    done: impl Fn(&v1::Task) -> bool,
) -> anyhow::Result<v1::Task> {
    let deadline = Instant::now() + WAIT;
    loop {
        let t = c.client.get_task(id, false).await?;
        if done(&t) {
            return Ok(t);
        }
        if Instant::now() > deadline {
            bail!(
                "{id}: {what}: not after {WAIT:?}: {t:?}\n{}",
                c.logs_tail(30)
            );
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// Whether agent `id` is listed, and its state.
async fn agent_state(c: &Cluster, id: &str) -> anyhow::Result<Option<i32>> {
    let agents = c.client.list_agents(false).await?;
    Ok(agents
        .iter()
        .find(|a| a.spec.as_ref().is_some_and(|s| s.id == id))
        .map(|a| a.state))
}

async fn wait_agent_state(
    c: &Cluster,
    id: &str,
    want: Option<v1::AgentState>,
) -> anyhow::Result<()> {
    let want = want.map(|s| s as i32);
    let deadline = Instant::now() + WAIT;
    loop {
        let s = agent_state(c, id).await?;
        if s == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("agent {id} is {s:?}, not {want:?}\n{}", c.logs_tail(30));
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// The lines of `runs` for task `id`: (token, agent, pid).
fn runs_of(runs: &Path, id: &str) -> Vec<(u64, String, i32)> {
    std::fs::read_to_string(runs)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[0] == id)
                .then(|| Some((f[1].parse().ok()?, f[2].to_string(), f[3].parse().ok()?)))
                .flatten()
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_agent_runs_its_tenant_only_and_a_revoke_ends_it_with_exit_8() -> anyhow::Result<()>
{
    let (mut c, boot) = cluster().await?;
    let runs = c.dir.path().join("runs");
    let cmd = worker(&runs, 600);
    let a_token = agent_token(&c, &boot, Some("team-a"))?;
    c.start_agent(agent("a1", &a_token, 2, &cmd))?;
    c.wait_agents(1, WAIT).await?;

    // team-b's task first: a1 has two free slots, yet takes team-a's only.
    let b = submit(&c, "team-b").await?;
    let a = submit(&c, "team-a").await?;
    let first = wait_task(&c, &a, "running on a1", |t| state(t) == "running").await?;
    assert_eq!(first.agent, "a1", "{first:?}");
    let pending = c.client.get_task(&b, false).await?;
    assert_eq!(state(&pending), "pending", "{pending:?}");

    // An agent of every tenant runs team-b's task.
    let all_token = agent_token(&c, &boot, None)?;
    c.start_agent(agent("a2", &all_token, 2, &cmd))?;
    let done_b = wait_task(&c, &b, "succeeded", |t| state(t) == "succeeded").await?;
    assert_eq!(done_b.agent, "a2", "{done_b:?}");

    // Revoking a1's token: a1 stops its worker and exits 8; its task runs
    // on a2 under a higher fencing token once a1's lease has run out.
    let worker_pid = runs_of(&runs, &a)
        .first()
        .map(|r| r.2)
        .context("a1's run")?;
    c.tidal_as_ok(&boot, &["token", "revoke", &id_of(&a_token)])?;
    let status = c.agents[0]
        .wait_exit(WAIT)
        .await
        .with_context(|| format!("a1 still runs\n{}", c.logs_tail(30)))?;
    assert_eq!(
        status.code(),
        Some(CREDENTIALS_REFUSED),
        "{}",
        c.logs_tail(30)
    );
    assert!(!alive(worker_pid), "a1's worker {worker_pid} still runs");
    let done_a = wait_task(&c, &a, "succeeded on a2", |t| state(t) == "succeeded").await?;
    assert_eq!(done_a.agent, "a2", "{done_a:?}");
    assert!(done_a.token > first.token, "{first:?} then {done_a:?}");
    let r = runs_of(&runs, &a);
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!((r[1].0, r[1].1.as_str()), (done_a.token, "a2"), "{r:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_token_agent_which_deregisters_and_exits_0() -> anyhow::Result<()> {
    let (mut c, boot) = cluster().await?;
    let runs = c.dir.path().join("runs");
    let a_token = agent_token(&c, &boot, Some("team-a"))?;
    let mut a1 = agent("a1", &a_token, 1, &worker(&runs, 2));
    a1.extra_args
        .extend(["--drain-timeout-ms".into(), "20000".into()]);
    c.start_agent(a1)?;
    c.wait_agents(1, WAIT).await?;

    // Another agent's token may not drain, undrain or deregister a1.
    let other = agent_token(&c, &boot, Some("team-a"))?;
    for verb in ["drain", "undrain"] {
        let o = c.tidal_as(Some(&other), &["agent", verb, "a1"]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            o.status.code(),
            Some(CREDENTIALS_REFUSED),
            "{verb}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("an agent's token may {verb} only its own agents")),
            "{verb}: {stderr}"
        );
    }
    let as_other = Client::with_options(
        c.endpoints(),
        ClientOptions {
            token: Some(Token::new(&other)?),
            ..c.spec.client.clone()
        },
    )?;
    let err = as_other.deregister_agent("a1").await.unwrap_err();
    assert_eq!(err.code, tonic::Code::PermissionDenied, "{err:?}");
    assert!(
        err.message
            .contains("an agent's token may deregister only its own agents"),
        "{err:?}"
    );
    // Nor take its id: a second process under id a1 with another agent
    // token is refused and exits 8; the first keeps its session.
    c.start_agent(agent("a1", &other, 1, &worker(&runs, 2)))?;
    let status = c.agents[1]
        .wait_exit(WAIT)
        .await
        .with_context(|| format!("the second a1 still runs\n{}", c.logs_tail(30)))?;
    assert_eq!(
        status.code(),
        Some(CREDENTIALS_REFUSED),
        "{}",
        c.logs_tail(30)
    );
    let log = std::fs::read_to_string(&c.agents[1].log)?;
    assert!(log.contains("belongs to another token"), "{log}");
    assert!(c.agents[0].is_running(), "{}", c.logs_tail(30));
    wait_agent_state(&c, "a1", Some(v1::AgentState::Ready)).await?;

    let id = submit(&c, "team-a").await?;
    wait_task(&c, &id, "running", |t| state(t) == "running").await?;
    let pid = c.agents[0].pid().context("a1's pid")?;
    // SAFETY: kill(2) to the agent process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    wait_agent_state(&c, "a1", Some(v1::AgentState::Draining)).await?;
    let t = wait_task(&c, &id, "succeeded", |t| state(t) == "succeeded").await?;
    assert_eq!((t.agent.as_str(), t.attempt), ("a1", 1), "{t:?}");
    let status = c.agents[0]
        .wait_exit(WAIT)
        .await
        .with_context(|| format!("a1 still runs\n{}", c.logs_tail(30)))?;
    assert_eq!(status.code(), Some(0), "{}", c.logs_tail(30));
    wait_agent_state(&c, "a1", None).await?;
    let log = std::fs::read_to_string(&c.agents[0].log)?;
    assert!(log.contains("deregistered; exiting"), "{log}");
    assert!(!log.contains("cannot drain this agent yet"), "{log}");
    Ok(())
}
