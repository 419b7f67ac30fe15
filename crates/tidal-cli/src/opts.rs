//! The options shared by every command that talks to a cluster.

use std::time::Duration;

use clap::{Args, ValueEnum};

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
}

impl ClientOpts {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }
}
