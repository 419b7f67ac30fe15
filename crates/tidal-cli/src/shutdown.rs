//! The shutdown future handed to servers and agents: the first SIGINT or SIGTERM.

use std::future::Future;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

/// Installs the handlers now (so an early signal is not lost) and returns a
/// future that completes on the first SIGINT or SIGTERM.
pub fn on_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "shutting down");
    })
}
