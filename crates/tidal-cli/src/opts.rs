//! The options shared by every command that talks to a cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use tidal_tls::rustls::ClientConfig;
use tidal_tls::{Expect, TlsDir};

/// The default server a client command talks to.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:7001";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON document on stdout, for scripts.
    Json,
}

/// Options of every command that talks to a cluster.
#[derive(Args, Debug, Clone)]
pub struct ClientOpts {
    /// Servers to talk to, HOST:PORT,... Any member will do: requests find the leader.
    #[arg(long, env = "TIDAL_ENDPOINTS", value_delimiter = ',', default_value = DEFAULT_ENDPOINT, value_name = "HOST:PORT,...")]
    pub endpoints: Vec<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Give up on a request (including retries while a leader is elected) after this many milliseconds.
    #[arg(long, default_value_t = 15_000, value_name = "MS")]
    pub timeout_ms: u64,
    #[command(flatten)]
    pub tls: TlsOpts,
    #[command(flatten)]
    pub token: TokenOpts,
}

impl ClientOpts {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }
}

impl TlsOpts {
    /// The plaintext rule ([`tidal_tls::check_plaintext_endpoints`]):
    /// without `--tls-dir`, every endpoint must be loopback unless
    /// `--insecure` is given. Checked before anything is sent; a refusal
    /// is a usage error (exit 2).
    pub fn check_plaintext(&self, endpoints: &[String]) -> anyhow::Result<()> {
        let tls = self.checked()?.is_some();
        tidal_tls::check_plaintext_endpoints(endpoints, tls, self.insecure == Some(true))?;
        Ok(())
    }
}

/// The token a client or an agent presents.
#[derive(Args, Clone, Default)]
pub struct TokenOpts {
    /// Sent as `authorization: Bearer TOKEN` on every request (`tidal token create`); needed by servers with --auth tokens.
    #[arg(
        long = "token",
        env = "TIDAL_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub text: Option<String>,
}

/// Shows whether a token is set, never the token.
impl std::fmt::Debug for TokenOpts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenOpts")
            .field("token", &self.text.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl TokenOpts {
    /// The token to send, if one is given (an empty one counts as none).
    pub fn token(&self) -> anyhow::Result<Option<tidal_client::Token>> {
        match self.text.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(text) => Ok(Some(tidal_client::Token::new(text).context("--token")?)),
        }
    }
}

/// How a client or an agent connects: mutual TLS from a directory, or
/// plaintext.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsOpts {
    /// Mutual TLS: DIR holds ca.pem, cert.pem and key.pem (`tidal cert issue`); every connection uses TLS.
    #[arg(long, env = "TIDAL_TLS_DIR", value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Connect in plaintext, without TLS, also to servers that are not on this machine (without
    /// TLS and without this flag, only loopback servers: 127.0.0.0/8, ::1, localhost); not with
    /// --tls-dir. `--insecure` alone means true; the server's flag has the same shape.
    #[arg(long, env = "TIDAL_INSECURE", value_name = "BOOL", num_args = 0..=1,
        require_equals = true, default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: Option<bool>,
}

impl TlsOpts {
    /// The TLS configuration of a user's client (any server the CA
    /// vouches for), or None for plaintext.
    pub fn client_config(&self) -> anyhow::Result<Option<Arc<ClientConfig>>> {
        let Some(dir) = self.checked()? else {
            return Ok(None);
        };
        let context = || format!("--tls-dir {}", dir.display());
        let loaded = TlsDir::load(dir).with_context(context)?;
        let config = tidal_tls::client_config(&loaded, Expect::AnyServer).with_context(context)?;
        Ok(Some(config))
    }

    /// The TLS directory, unless plaintext is asked for; asking for both
    /// (by flag or by variable) is an error ([`tidal_tls::tls_or_plaintext`],
    /// the rule servers follow too).
    pub fn checked(&self) -> anyhow::Result<Option<&Path>> {
        Ok(tidal_tls::tls_or_plaintext(
            self.tls_dir.as_deref(),
            self.insecure == Some(true),
        )?)
    }
}
