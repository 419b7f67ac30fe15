//! `tidal server`: one member of a data center's Raft group.
//!
//! Its settings are [`RawConfig`]'s, with `--config` and `--print-config`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tidal_server::config::{RawConfig, PRECEDENCE};

use crate::shutdown;

#[derive(Args, Debug, Default)]
#[command(after_help = format!(
    "{PRECEDENCE}\n\
    SIGTERM or SIGINT: a leader hands leadership to the most up-to-date voter, tells agents and \
    clients where it went and exits 0, all within --shutdown-timeout-ms; a follower exits at once; \
    a second signal exits at once (code 1).\n\
    Example: tidal server --id 1 --dc dc1 --listen 127.0.0.1:7001 --data ./data/node1 --init"
))]
pub struct ServerArgs {
    /// A TOML file with any of the settings below (flags and variables override it).
    #[arg(long, env = "TIDAL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: RawConfig,
    /// Print the merged and checked settings, defaults filled in, as a TOML file for --config, and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl ServerArgs {
    /// The file's settings under the command line's.
    pub fn merged(&self) -> anyhow::Result<RawConfig> {
        let file = match &self.config {
            Some(path) => RawConfig::from_file(path)?,
            None => RawConfig::default(),
        };
        file.merge(self.settings.clone())
    }
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let config = args
        .merged()?
        .validate()
        .context("invalid server configuration")?;
    if args.print_config {
        let toml = RawConfig::from_config(&config).to_toml()?;
        crate::output::write_stdout(format_args!("{toml}"));
        return Ok(());
    }
    if tidal_server::init_crash_points() && std::env::var_os("FAILPOINTS").is_some() {
        tracing::warn!("crash points armed from FAILPOINTS: this server will abort on purpose");
    }
    #[cfg(feature = "failpoints")]
    shutdown::power_loss_on_sigusr1()?;
    // A certificate that is not this server's fails before anything is bound.
    tidal_server::tls::load(&config)?;
    let shutdown = shutdown::on_signal()?;
    let listeners = tidal_server::bind(&config).await?;
    let bound = listeners
        .public
        .local_addr()
        .context("reading the listener's address")?;
    // One line on stdout (logs go to stderr): the address a launcher that
    // passed port 0 connects to; a second for the peer listener.
    let _ = writeln!(std::io::stdout(), "listening on {bound}");
    if let Some(peer) = &listeners.peer {
        let peer = peer
            .local_addr()
            .context("reading the peer listener's address")?;
        let _ = writeln!(std::io::stdout(), "peer listening on {peer}");
    }
    tidal_server::run(config, listeners, shutdown).await
}
