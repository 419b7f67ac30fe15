//! The shutdown future handed to servers and agents: the first SIGINT or
//! SIGTERM; and, in failpoints builds, the simulated power loss on SIGUSR1.

use std::future::Future;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

/// Installs the handlers now (so an early signal is not lost) and returns a
/// future that completes on the first SIGINT or SIGTERM. From then on a
/// second SIGINT or SIGTERM ends the process at once, with exit code 1
/// (an operator who does not want to wait out a graceful stop).
pub fn on_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        tracing::info!(
            signal = name,
            "shutting down (a second SIGINT or SIGTERM exits at once)"
        );
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            eprintln!("{name} again: exiting at once");
            std::process::exit(crate::exit::ERROR);
        });
    })
}

/// Installs the handlers now and counts SIGINT and SIGTERM: the receiver
/// sees 1 after the first signal, 2 after the second, and so on.
pub fn signal_count() -> anyhow::Result<tokio::sync::watch::Receiver<u32>> {
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let (tx, rx) = tokio::sync::watch::channel(0u32);
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            let n = *tx.borrow() + 1;
            tracing::info!(signal = name, count = n, "signal received");
            tx.send_replace(n);
        }
    });
    Ok(rx)
}

/// Failpoints builds only: on SIGUSR1 the server loses power: its store
/// drops every write it has not fsynced and the process aborts at once
/// (`tidal_store::crash::power_loss`). The chaos scenario S16 sends it. In
/// a normal build SIGUSR1 is not handled (it terminates the process).
#[cfg(feature = "failpoints")]
pub fn power_loss_on_sigusr1() -> anyhow::Result<()> {
    let mut usr1 = signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
    tokio::spawn(async move {
        if usr1.recv().await.is_some() {
            eprintln!("SIGUSR1: simulated power loss");
            tidal_server::power_loss();
        }
    });
    Ok(())
}
