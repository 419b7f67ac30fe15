//! Three `tidal server` processes on held 127.0.0.1 ports with data in a
//! temporary directory, joined into one group (tidal-testkit's cluster);
//! killed on drop.

use std::path::Path;
use std::time::Duration;

use tidal_testkit::{ClusterSpec, Proc};

pub struct Cluster(tidal_testkit::Cluster);

impl Cluster {
    pub async fn start(
        tidal: &Path,
        flush_delay_us: u64,
        extra: &[String],
    ) -> anyhow::Result<Cluster> {
        let mut spec = ClusterSpec::new(tidal);
        spec.dc = "bench".into();
        spec.prefix = "tidal-bench-".into();
        spec.rust_log = Some(std::env::var("TIDAL_BENCH_LOG").unwrap_or_else(|_| "warn".into()));
        // TIDAL_BENCH_KEEP=1 keeps the servers' data and logs.
        spec.keep_var = Some("TIDAL_BENCH_KEEP".into());
        if flush_delay_us > 0 {
            spec.server_args = vec!["--flush-delay-us".into(), flush_delay_us.to_string()];
        }
        spec.server_args.extend_from_slice(extra);
        Ok(Cluster(tidal_testkit::Cluster::start(spec).await?))
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.0.endpoints()
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
