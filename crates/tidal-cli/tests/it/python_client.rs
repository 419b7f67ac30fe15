//! The Python client and agent (clients/python) against a real DC: three servers with mutual TLS and tokens, one agent of t2i tasks; its pytest tests (clients/python/tests) submit and wait, resubmit a key, get an unknown id, cancel, go through a follower to the leader, set and list queues, check that the checked-in stubs match proto/, run tasks as Python functions (results, retries, cancel, checkpoints, self-fencing, a leader change, drain, displacement) and drive the agent protocol message by message.
//!
//! The Python comes from `TIDAL_TEST_PYTHON` (`.ci/run` sets it to a venv
//! with `tests/py/requirements.txt`: grpcio, grpcio-tools, pytest); without
//! it the test makes that venv itself under the target directory. A
//! missing python3 fails the test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::harness::{AgentOpts, Cluster, ClusterOpts};

/// Ample for the pytest run (a few seconds when the machine is idle).
const PYTEST_BOUND: Duration = Duration::from_secs(300);

/// The Python with grpcio, grpcio-tools and pytest.
fn python() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("TIDAL_TEST_PYTHON") {
        return Ok(p.into());
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("py-client");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/venv.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(&venv)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "no Python for the Python client's tests: {} {} failed ({}); set TIDAL_TEST_PYTHON \
             to a python with the packages of tests/py/requirements.txt, or install python3 with venv",
            script.display(),
            venv.display(),
            out.status
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_passes_its_tests_against_a_cluster() -> anyhow::Result<()> {
    let python = python()?;
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    c.start_agent(AgentOpts::new("agent-1", &["t2i"]))?;
    c.wait_agents(1, Duration::from_secs(30)).await?;

    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/python");
    let tls = c.client_tls_dir().context("the kit's cluster runs TLS")?;
    // The Python agents' credentials: an agent certificate of the DC and the kit's agent token.
    let agent_tls = c
        .agent_tls_dir("py-agents")
        .context("an agent certificate")?;
    let agent_token = c.agent_token()?;
    // For the test that pauses the leader (SIGSTOP) under a Python agent.
    let pids: Vec<String> = c
        .nodes
        .iter()
        .filter_map(|n| Some(format!("{}={}", n.addr, n.proc.as_ref()?.pid()?)))
        .collect();
    let child = tokio::process::Command::new(&python)
        // A test stuck for 2 minutes dumps every thread's stack.
        .args([
            "-m",
            "pytest",
            "tests",
            "-v",
            "-p",
            "no:cacheprovider",
            "-o",
            "faulthandler_timeout=120",
        ])
        .current_dir(&client)
        .env("TIDAL_ENDPOINTS", c.endpoints_arg())
        .env("TIDAL_TOKEN", c.admin())
        .env("TIDAL_TLS_DIR", &tls)
        .env("TIDAL_AGENT_TOKEN", &agent_token)
        .env("TIDAL_AGENT_TLS_DIR", &agent_tls)
        .env("TIDAL_DC", &c.spec.dc)
        .env("TIDAL_SERVER_PIDS", pids.join(","))
        .env("PYTHON", &python)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} -m pytest", python.display()))?;
    let out = tokio::time::timeout(PYTEST_BOUND, child.wait_with_output())
        .await
        .with_context(|| format!("pytest did not finish in {PYTEST_BOUND:?}"))??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pytest clients/python/tests failed ({}):\n{stdout}\n{}\n--- servers:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        c.logs_tail(30)
    );
    println!("{stdout}");
    // Every test ran: none was skipped or deselected, the agent's among them.
    assert!(stdout.contains(" passed"), "{stdout}");
    assert!(
        !stdout.contains("SKIPPED") && !stdout.contains("skipped"),
        "{stdout}"
    );
    for test in [
        "test_client.py::test_submit_and_wait_returns_the_result PASSED",
        "test_agent.py::test_an_agent_that_cannot_renew_its_lease_fences_itself PASSED",
        "test_agent.py::test_protocol_registered_then_heartbeat_acks_and_assignments PASSED",
        "test_agent.py::test_an_agent_whose_leader_is_paused_registers_with_the_next PASSED",
    ] {
        assert!(stdout.contains(test), "{test} is missing:\n{stdout}");
    }
    Ok(())
}
