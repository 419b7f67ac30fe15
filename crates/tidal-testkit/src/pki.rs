//! A throwaway certificate authority in a test's directory, made with the
//! binary's own `tidal cert ca|issue`: a TLS directory (`--tls-dir`) per
//! server, agent and client, and the client configuration that trusts it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{bail, Context};
use tidal_client::tidal_tls::rustls::ClientConfig;
use tidal_client::tidal_tls::{client_config, Expect, TlsDir};

use crate::proc;

/// `DIR/ca` (the CA) and one TLS directory per certificate beside it.
#[derive(Clone, Debug)]
pub struct Pki {
    tidal: PathBuf,
    dir: PathBuf,
}

impl Pki {
    /// Makes a new CA in `dir/ca` with `tidal cert ca`.
    pub fn new(tidal: &Path, dir: &Path) -> anyhow::Result<Pki> {
        let pki = Pki {
            tidal: tidal.to_path_buf(),
            dir: dir.to_path_buf(),
        };
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca = pki.dir.join("ca");
        pki.cert(&[
            "ca",
            "--out",
            &ca.display().to_string(),
            "--name",
            "test CA",
        ])?;
        Ok(pki)
    }

    /// The directory of the CA (`ca.pem`, `ca.key`).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca")
    }

    /// The TLS directory of server `id` of `dc`, issued on the first call.
    pub fn server(&self, dc: &str, id: u64) -> anyhow::Result<PathBuf> {
        self.issued(
            &format!("server-{dc}-{id}"),
            "server",
            Some(dc),
            &id.to_string(),
        )
    }

    /// A new certificate for server `id` of `dc` in a directory of its own
    /// (`server-DC-ID.N`): same identity, another key.
    pub fn reissue_server(&self, dc: &str, id: u64) -> anyhow::Result<PathBuf> {
        let mut n = 2;
        while self.dir.join(format!("server-{dc}-{id}.{n}")).exists() {
            n += 1;
        }
        let name = format!("server-{dc}-{id}.{n}");
        self.issued(&name, "server", Some(dc), &id.to_string())
    }

    /// The TLS directory of agent `name` of `dc`, issued on the first call.
    pub fn agent(&self, dc: &str, name: &str) -> anyhow::Result<PathBuf> {
        self.issued(&format!("agent-{dc}-{name}"), "agent", Some(dc), name)
    }

    /// The TLS directory of client `name` (any DC), issued on the first call.
    pub fn client(&self, name: &str) -> anyhow::Result<PathBuf> {
        self.issued(&format!("client-{name}"), "client", None, name)
    }

    /// A client configuration from client `name`'s directory that accepts
    /// the servers `expect` names.
    pub fn client_config(&self, name: &str, expect: Expect) -> anyhow::Result<Arc<ClientConfig>> {
        let dir = self.client(name)?;
        let loaded = TlsDir::load(&dir)?;
        Ok(client_config(&loaded, expect)?)
    }

    /// `DIR/out`, made with `tidal cert issue` unless it has a certificate.
    fn issued(
        &self,
        out: &str,
        role: &str,
        dc: Option<&str>,
        name: &str,
    ) -> anyhow::Result<PathBuf> {
        let dir = self.dir.join(out);
        if dir.join("cert.pem").exists() {
            return Ok(dir);
        }
        let (ca, out) = (self.ca().display().to_string(), dir.display().to_string());
        let mut args = vec![
            "issue", "--ca", &ca, "--role", role, "--name", name, "--out", &out,
        ];
        if let Some(dc) = dc {
            args.extend(["--dc", dc]);
        }
        self.cert(&args)?;
        Ok(dir)
    }

    /// `tidal cert ARGS`, which must exit 0.
    fn cert(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.tidal);
        cmd.arg("cert").args(args).env_remove("RUST_LOG");
        proc::die_with_parent(&mut cmd, libc::SIGKILL);
        let o = cmd.output().context("running tidal cert")?;
        if !o.status.success() {
            bail!(
                "tidal cert {args:?} exited {:?}: {}",
                o.status.code(),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(())
    }
}
