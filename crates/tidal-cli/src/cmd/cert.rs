//! `tidal cert ca | issue | show`: a CA and the certificates of servers, agents and clients.

use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use tidal_tls::issue::{self, Request, Validity};
use tidal_tls::{CertIdentity, CertInfo, Role, TlsDir};

use crate::output::{ms_to_utc, outln};

#[derive(Subcommand, Debug)]
pub enum CertCmd {
    /// Create a CA: DIR/ca.pem and DIR/ca.key (keep ca.key secret and offline).
    #[command(after_help = "Example: tidal cert ca --out ./tls/ca")]
    Ca(CaArgs),
    /// Issue a certificate signed by a CA: DIR/ca.pem (a copy), cert.pem, key.pem.
    #[command(
        after_help = "The certificate names its holder as a SAN URI tidal://ROLE/DC/NAME; tidal checks \
        that identity, not host names. A server's NAME is its node id.\n\
        Examples:\n  tidal cert issue --ca ./tls/ca --role server --dc dc1 --name 1 --out ./tls/node-1\n  \
        tidal cert issue --ca ./tls/ca --role agent --dc dc1 --name gpu-1 --out ./tls/gpu-1\n  \
        tidal cert issue --ca ./tls/ca --role client --name alice --out ./tls/alice"
    )]
    Issue(IssueArgs),
    /// Print what DIR/cert.pem (or, without it, DIR/ca.pem) says, and check the directory.
    Show(ShowArgs),
}

#[derive(Args, Debug)]
pub struct CaArgs {
    /// Directory to write into (created if missing); existing files are never overwritten.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The CA's common name.
    #[arg(long, value_name = "N", default_value = "tidal CA")]
    pub name: String,
    /// Days the CA is valid.
    #[arg(long, value_name = "D", default_value_t = 3650)]
    pub days: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// A member of a DC's Raft group (NAME is its node id).
    Server,
    /// An agent of one DC.
    Agent,
    /// A user or a tool.
    Client,
}

#[derive(Args, Debug)]
pub struct IssueArgs {
    /// The CA directory (ca.pem, ca.key) of `tidal cert ca`.
    #[arg(long, value_name = "DIR")]
    pub ca: PathBuf,
    /// The holder's name: a server's node id, an agent's id, a client's name.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// The holder's DC; required for servers and agents. A client certificate without it is good for any DC.
    #[arg(long, value_name = "DC")]
    pub dc: Option<String>,
    /// A DNS name or IP address to add, for clients that check host names (repeatable; servers default to localhost and 127.0.0.1).
    #[arg(long = "host", value_name = "H")]
    pub hosts: Vec<String>,
    /// Days the certificate is valid.
    #[arg(long, value_name = "D", default_value_t = 365)]
    pub days: u32,
    /// Directory to write into (created if missing); existing files are never overwritten.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// A directory of `tidal cert issue` or `tidal cert ca`.
    pub dir: PathBuf,
}

pub fn run(cmd: CertCmd) -> anyhow::Result<()> {
    match cmd {
        CertCmd::Ca(a) => {
            issue::new_ca(&a.out, &a.name, Validity::days(a.days))?;
            outln!(
                "wrote {} and {} (keep {} secret)",
                a.out.join(tidal_tls::files::CA_FILE).display(),
                a.out.join(issue::CA_KEY_FILE).display(),
                issue::CA_KEY_FILE
            );
        }
        CertCmd::Issue(a) => {
            let role = match a.role {
                RoleArg::Server => Role::Server,
                RoleArg::Agent => Role::Agent,
                RoleArg::Client => Role::Client,
            };
            let identity = CertIdentity::new(role, a.dc.as_deref(), &a.name)?;
            let req = Request {
                identity,
                hosts: a.hosts,
                validity: Validity::days(a.days),
            };
            let dir = issue::issue(&a.ca, &req, &a.out)?;
            outln!(
                "wrote {}/{{ca.pem,cert.pem,key.pem}}: {}, valid until {}",
                a.out.display(),
                dir.identity(),
                utc(dir.not_after())
            );
        }
        CertCmd::Show(a) => show(&a.dir)?,
    }
    Ok(())
}

/// Prints the certificate's fields, then checks the directory as a server,
/// agent or client would load it; a directory that fails the check is an
/// error (exit 1) after everything was printed.
fn show(dir: &std::path::Path) -> anyhow::Result<()> {
    use tidal_tls::files::{CA_FILE, CERT_FILE};
    let cert = dir.join(CERT_FILE);
    let path = if cert.exists() {
        cert
    } else {
        dir.join(CA_FILE)
    };
    let pem = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let info = CertInfo::from_pem(&pem).with_context(|| format!("{}", path.display()))?;
    let kv = |k: &str, v: &dyn std::fmt::Display| outln!("{:<12}{v}", format!("{k}:"));
    kv("file", &path.display());
    match &info.identity {
        Ok(id) => {
            kv("identity", &id);
            kv("uri", &id.to_uri());
        }
        Err(_) if info.is_ca => kv("identity", &"none (a CA certificate)"),
        Err(e) => kv("identity", &format!("none: {e}")),
    }
    kv("subject", &info.subject);
    kv("issuer", &info.issuer);
    kv("sans", &info.sans.join(", "));
    let mut usages = Vec::new();
    if info.is_ca {
        usages.push("CA");
    }
    if info.server_auth {
        usages.push("TLS server");
    }
    if info.client_auth {
        usages.push("TLS client");
    }
    kv("usage", &usages.join(", "));
    kv("not_before", &utc(info.not_before));
    kv("not_after", &utc(info.not_after));
    if info.is_ca && path.ends_with(CA_FILE) {
        return Ok(());
    }
    match TlsDir::load(dir) {
        Ok(_) => {
            kv(
                "check",
                &"ok: ca.pem, cert.pem and key.pem fit together and are valid now",
            );
            Ok(())
        }
        Err(e) => {
            kv("check", &"failed");
            Err(e.into())
        }
    }
}

fn utc(t: std::time::SystemTime) -> String {
    let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    ms_to_utc(u64::try_from(ms).unwrap_or(u64::MAX))
}
