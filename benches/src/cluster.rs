//! Three `tidal server` processes on held 127.0.0.1 ports with data in a
//! temporary directory, joined into one group (tidal-testkit's cluster),
//! over mutual TLS with `--tls` (else plaintext), with `--auth none`; or,
//! for the workloads that run real agents ([`Cluster::start_as_users`]),
//! as users run theirs: mutual TLS and tokens. Killed on drop.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tidal_client::tidal_tls::rustls::ClientConfig;
use tidal_client::tidal_tls::{client_config, Expect, TlsDir};
use tidal_client::Client;
use tidal_testkit::{AgentSpec, ClusterSpec, Proc};

pub struct Cluster(tidal_testkit::Cluster);

impl Cluster {
    pub async fn start(
        tidal: &Path,
        flush_delay_us: u64,
        extra: &[String],
        tls: bool,
    ) -> anyhow::Result<Cluster> {
        let mut spec = bench_spec(tidal, flush_delay_us, extra);
        // As benches/README's figures were measured: plaintext and
        // `--auth none` unless `--tls`, and never tokens.
        spec.tls = tls;
        spec.tokens = false;
        Ok(Cluster(tidal_testkit::Cluster::start(spec).await?))
    }

    /// The same servers with the test kit's defaults, as users run them:
    /// mutual TLS and `--auth tokens` (the kit's client presents an admin
    /// token, its agents an agent token).
    pub async fn start_as_users(
        tidal: &Path,
        flush_delay_us: u64,
        extra: &[String],
    ) -> anyhow::Result<Cluster> {
        let spec = bench_spec(tidal, flush_delay_us, extra);
        Ok(Cluster(tidal_testkit::Cluster::start(spec).await?))
    }

    /// The kit's client (its certificate and token, if any).
    pub fn client(&self) -> &Client {
        &self.0.client
    }

    /// Starts a real `tidal agent` process against every server.
    pub fn start_agent(&mut self, agent: AgentSpec) -> anyhow::Result<()> {
        self.0.start_agent(agent)
    }

    /// Waits until at least `n` agents are connected and ready.
    pub async fn wait_agents(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        self.0.wait_agents(n, timeout).await
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.0.endpoints()
    }

    /// With mutual TLS: the configurations of its clients (a client
    /// certificate) and of simulated agents (an agent certificate of its DC).
    pub fn tls(&self) -> anyhow::Result<Option<(Arc<ClientConfig>, Arc<ClientConfig>)>> {
        let (Some(pki), Some(client)) = (&self.0.pki, &self.0.spec.client.tls) else {
            return Ok(None);
        };
        let dc = &self.0.spec.dc;
        let dir = TlsDir::load(pki.agent(dc, "bench-agents")?)?;
        let agent = client_config(&dir, Expect::Dc(dc.clone()))?;
        Ok(Some((client.clone(), agent)))
    }

    /// The id of the node that says it leads.
    pub async fn leader(&self) -> Option<u64> {
        self.0.leader().await
    }

    /// The process id of node `id` (0 while it does not run).
    pub fn pid(&self, id: u64) -> u32 {
        self.0
            .node(id)
            .proc
            .as_ref()
            .and_then(Proc::pid)
            .unwrap_or(0)
    }

    /// The lines of node `id`'s log (of every run on its data) that contain
    /// `needle`.
    pub fn log_lines(&self, id: u64, needle: &str) -> Vec<String> {
        self.0
            .node(id)
            .proc
            .as_ref()
            .map(|p| p.log_lines(needle))
            .unwrap_or_default()
    }

    /// SIGKILLs node `id` (its data stays).
    pub fn kill(&mut self, id: u64) {
        self.0.kill_node(id);
    }

    /// SIGTERMs node `id` and waits up to `timeout` for it to exit (then
    /// SIGKILLs it): its exit status, if it exited, and how long it took.
    pub async fn terminate(
        &mut self,
        id: u64,
        timeout: Duration,
    ) -> (Option<std::process::ExitStatus>, Duration) {
        self.0.terminate_node(id, timeout).await
    }

    /// Starts node `id` again on its data.
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.0.restart_node(id)
    }
}

/// The settings every cluster of the benches shares (the test kit's
/// defaults otherwise): DC `bench`, the log level of `TIDAL_BENCH_LOG`,
/// `TIDAL_BENCH_KEEP` to keep data and logs, the flush delay and flags.
fn bench_spec(tidal: &Path, flush_delay_us: u64, extra: &[String]) -> ClusterSpec {
    let mut spec = ClusterSpec::new(tidal);
    spec.dc = "bench".into();
    spec.prefix = "tidal-bench-".into();
    spec.rust_log = Some(rust_log(std::env::var("TIDAL_BENCH_LOG").ok()));
    // TIDAL_BENCH_KEEP=1 keeps the servers' data and logs.
    spec.keep_var = Some("TIDAL_BENCH_KEEP".into());
    if flush_delay_us > 0 {
        spec.server_args = vec!["--flush-delay-us".into(), flush_delay_us.to_string()];
    }
    spec.server_args.extend_from_slice(extra);
    spec
}

/// The servers' `RUST_LOG`: `TIDAL_BENCH_LOG` (default `warn`), with
/// tidal_store's snapshot lines at info unless it names tidal_store itself,
/// so every "snapshot built" line (and its `apply_pause_max_ms`) is logged.
fn rust_log(level: Option<String>) -> String {
    let level = level.unwrap_or_else(|| "warn".into());
    if level.contains("tidal_store") {
        level
    } else {
        format!("{level},tidal_store::snapshot=info")
    }
}

#[cfg(test)]
mod tests {
    use super::rust_log;

    #[test]
    fn snapshot_lines_are_logged_unless_tidal_store_is_named() {
        assert_eq!(rust_log(None), "warn,tidal_store::snapshot=info");
        assert_eq!(
            rust_log(Some("debug".into())),
            "debug,tidal_store::snapshot=info"
        );
        assert_eq!(
            rust_log(Some("info,tidal_store=trace".into())),
            "info,tidal_store=trace"
        );
    }
}
