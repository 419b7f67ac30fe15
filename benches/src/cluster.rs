//! Three `tidal server` processes on free 127.0.0.1 ports with data in a
//! temporary directory, joined into one group; killed on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use tidal_client::Client;

pub struct Cluster {
    addrs: Vec<String>,
    children: Vec<Child>,
    /// How each node was started, to restart it.
    commands: Vec<(std::path::PathBuf, Vec<String>)>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start(
        tidal: &Path,
        flush_delay_us: u64,
        extra: &[String],
    ) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("tidal-bench-").tempdir()?;
        let listeners: Vec<std::net::TcpListener> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()?;
        let addrs: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.to_string()))
            .collect::<Result<_, _>>()?;
        drop(listeners);
        let mut c = Cluster {
            addrs,
            children: Vec::new(),
            commands: Vec::new(),
            _dir: dir,
        };
        for id in 1..=3u64 {
            let data = c._dir.path().join(format!("node{id}"));
            let log = std::fs::File::create(c._dir.path().join(format!("node{id}.log")))?;
            let mut cmd = Command::new(tidal);
            cmd.args([
                "server",
                "--id",
                &id.to_string(),
                "--dc",
                "bench",
                "--listen",
                &c.addrs[id as usize - 1],
            ])
            .arg("--data")
            .arg(&data)
            .env(
                "RUST_LOG",
                std::env::var("TIDAL_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
            if flush_delay_us > 0 {
                cmd.args(["--flush-delay-us", &flush_delay_us.to_string()]);
            }
            cmd.args(extra);
            if id == 1 {
                cmd.arg("--init");
            }
            let args: Vec<String> = cmd
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            c.commands.push((tidal.to_path_buf(), args));
            c.children.push(
                cmd.spawn()
                    .with_context(|| format!("starting {}", tidal.display()))?,
            );
            if id == 1 {
                c.wait_leader().await?;
            }
        }
        let client = Client::new(c.addrs.clone())?;
        for id in 2..=3u64 {
            client.add_learner(id, &c.addrs[id as usize - 1]).await?;
            client.promote(id).await?;
        }
        Ok(c)
    }

    async fn wait_leader(&self) -> anyhow::Result<()> {
        let client = Client::new(self.addrs.clone())?;
        for _ in 0..200 {
            if let Ok(s) = client.status_of(&self.addrs[0]).await {
                if s.role == "leader" {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("node 1 did not become leader")
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.addrs.clone()
    }

    /// The id of the node that says it leads.
    pub async fn leader(&self) -> Option<u64> {
        let client = Client::new(self.addrs.clone()).ok()?;
        for (i, a) in self.addrs.iter().enumerate() {
            if let Ok(s) = client.status_of(a).await {
                if s.role == "leader" {
                    return Some(i as u64 + 1);
                }
            }
        }
        None
    }

    /// The process id of node `id`.
    pub fn pid(&self, id: u64) -> u32 {
        self.children[id as usize - 1].id()
    }

    /// SIGKILLs node `id` (its data stays).
    pub fn kill(&mut self, id: u64) {
        let c = &mut self.children[id as usize - 1];
        let _ = c.kill();
        let _ = c.wait();
    }

    /// SIGTERMs node `id` and waits up to `timeout` for it to exit (then
    /// SIGKILLs it): its exit status, if it exited, and how long it took.
    pub async fn terminate(
        &mut self,
        id: u64,
        timeout: Duration,
    ) -> (Option<std::process::ExitStatus>, Duration) {
        let c = &mut self.children[id as usize - 1];
        let start = std::time::Instant::now();
        // SAFETY: kill(2) of our own child, not reaped yet.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
        while start.elapsed() < timeout {
            if let Ok(Some(st)) = c.try_wait() {
                return (Some(st), start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let _ = c.kill();
        let _ = c.wait();
        (None, start.elapsed())
    }

    /// Starts node `id` again on its data.
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        let (tidal, args) = self.commands[id as usize - 1].clone();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self._dir.path().join(format!("node{id}.log")))?;
        self.children[id as usize - 1] = Command::new(tidal)
            .args(args.iter().filter(|a| *a != "--init"))
            .env(
                "RUST_LOG",
                std::env::var("TIDAL_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // TIDAL_BENCH_KEEP=1 keeps the servers' data and logs.
        if std::env::var_os("TIDAL_BENCH_KEEP").is_some() {
            if let Ok(empty) = tempfile::tempdir() {
                let kept = std::mem::replace(&mut self._dir, empty).keep();
                eprintln!("kept {}", kept.display());
            }
        }
    }
}
