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
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start(tidal: &Path, flush_delay_us: u64) -> anyhow::Result<Cluster> {
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
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
            if flush_delay_us > 0 {
                cmd.args(["--flush-delay-us", &flush_delay_us.to_string()]);
            }
            if id == 1 {
                cmd.arg("--init");
            }
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
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
