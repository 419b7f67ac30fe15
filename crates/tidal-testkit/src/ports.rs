//! Server ports that are held, never guessed.
//!
//! A [`Port`] is a socket bound with `SO_REUSEADDR` that never listens. While
//! it is held, no other bind without `SO_REUSEADDR` and no port-0 bind gets
//! the port, and the kernel does not take it as the source port of an
//! outgoing connection; a `tidal server` (which binds with `SO_REUSEADDR`)
//! can bind and listen on it, and on it again after a restart. Connections
//! to it while no server listens are refused, as they would be to a port
//! nobody holds.
//!
//! A server started with port 0 reports the port it bound in
//! `<data>/listen.addr` ([`read_listen_addr`]) and on stdout.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::net::TcpSocket;

/// The file in a server's data directory that holds the address it listens on.
pub const LISTEN_ADDR_FILE: &str = "listen.addr";

/// A held port (see the module's docs); released on drop.
#[derive(Debug)]
pub struct Port {
    addr: SocketAddr,
    _socket: TcpSocket,
}

impl Port {
    /// A port of the kernel's choice on 127.0.0.1.
    pub fn local() -> std::io::Result<Port> {
        Port::on(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// A port of the kernel's choice on `ip`.
    pub fn on(ip: IpAddr) -> std::io::Result<Port> {
        Port::at(SocketAddr::new(ip, 0))
    }

    /// Holds `addr` (port 0: one of the kernel's choice). Fails if a
    /// socket without `SO_REUSEADDR` holds it.
    pub fn at(addr: SocketAddr) -> std::io::Result<Port> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let addr = socket.local_addr()?;
        Ok(Port {
            addr,
            _socket: socket,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// The address a server wrote to `<data>/listen.addr`, if it did.
pub fn read_listen_addr(data: &Path) -> Option<SocketAddr> {
    std::fs::read_to_string(data.join(LISTEN_ADDR_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Waits up to `timeout` for a server to write `<data>/listen.addr`.
/// Remove the file before starting the server, or this may read the
/// previous run's.
pub async fn wait_listen_addr(data: &Path, timeout: Duration) -> anyhow::Result<SocketAddr> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(addr) = read_listen_addr(data) {
            return Ok(addr);
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "no {} in {} after {timeout:?}",
                LISTEN_ADDR_FILE,
                data.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Removes `<data>/listen.addr` (before a start that [`wait_listen_addr`] follows).
pub fn clear_listen_addr(data: &Path) -> anyhow::Result<()> {
    let path = data.join(LISTEN_ADDR_FILE);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "ports_test.rs"]
mod tests;
