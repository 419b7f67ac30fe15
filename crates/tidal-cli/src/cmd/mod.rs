//! One module per command group, and what the client commands share: a
//! client and how to print.

pub mod agent;
pub mod cert;
pub mod chaos;
pub mod cluster;
pub mod completions;
pub mod dc;
pub mod dev;
pub mod example_worker;
pub mod queue;
pub mod server;
pub mod status;
pub mod task;
pub mod tenant;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tidal_client::{Client, ClientOptions, Token};
use tidal_tls::rustls::ClientConfig;

use crate::opts::{ClientOpts, OutputFormat};

/// What a client command works with: a client and how to print.
pub struct Ctx {
    pub client: Client,
    pub output: OutputFormat,
}

impl Ctx {
    /// The client of `opts`: its endpoints are checked first (their form,
    /// then the plaintext rule, [`crate::opts::TlsOpts::check_plaintext`]).
    pub fn new(opts: &ClientOpts) -> anyhow::Result<Ctx> {
        let tls = opts.tls.client_config()?;
        let client = client_with(&opts.endpoints, opts.timeout(), tls, opts.token.token()?)?;
        opts.tls.check_plaintext(&opts.endpoints)?;
        Ok(Ctx {
            client,
            output: opts.output,
        })
    }

    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }
}

/// A client whose whole retry budget (waiting for a leader included) is
/// `timeout`, over mutual TLS when `tls` is given, presenting `token` on
/// every request when given.
pub fn client_with(
    endpoints: &[String],
    timeout: Duration,
    tls: Option<Arc<ClientConfig>>,
    token: Option<Token>,
) -> anyhow::Result<Client> {
    let opts = ClientOptions {
        request_timeout: timeout.min(Duration::from_secs(10)),
        retry_for: timeout,
        connect_timeout: timeout.min(tidal_client::DEFAULT_CONNECT_TIMEOUT),
        tls,
        token,
        ..ClientOptions::default()
    };
    Client::with_options(endpoints.to_vec(), opts).context("bad --endpoints")
}
