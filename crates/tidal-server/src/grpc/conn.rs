//! Accepted connections and what each tells about its caller ([`Caller`]), which tonic puts into every request's extensions.
//!
//! The server listens on one or two sockets ([`Listeners`]): the public one
//! (`--listen`) and, with `--peer-listen`, one for the other servers. Both
//! accept streams are merged into one tonic server ([`incoming`]); each
//! connection is a [`Conn`] tagged with the [`Listener`] that accepted it
//! and the remote address the kernel reported at accept. tonic calls
//! [`Connected::connect_info`] once per connection and inserts the
//! [`Caller`] into the extensions of each request on it, where handlers and
//! layers read it ([`caller`]).
//!
//! With a rustls server configuration, every accepted TCP connection runs
//! a TLS handshake first ([`TlsAccept`]): each in its own task, so a slow
//! or silent client holds up no other, and each within
//! [`HANDSHAKE_TIMEOUT`]. A failed handshake is logged at warn with the
//! remote address and the rustls error, rate-limited per remote IP
//! ([`FailureLog`]). An established TLS connection's [`Caller`] carries the
//! identity its client certificate names.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tidal_tls::rustls::ServerConfig;
use tidal_tls::tokio_rustls::server::TlsStream;
use tidal_tls::tokio_rustls::TlsAcceptor;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

pub use crate::auth::caller::{Caller, Listener};

/// The caller of `request`: set on every request the server takes (None
/// only for a request built outside the server, as in tests).
pub fn caller<T>(request: &tonic::Request<T>) -> Option<&Caller> {
    request.extensions().get::<Caller>()
}

/// The byte stream of a connection.
#[derive(Debug)]
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// One accepted connection: its stream and its [`Caller`].
#[derive(Debug)]
pub struct Conn {
    stream: Io,
    caller: Caller,
}

impl Conn {
    /// A plain TCP connection accepted by `listener` from `remote`.
    pub fn plain(stream: TcpStream, remote: SocketAddr, listener: Listener) -> Conn {
        Conn {
            stream: Io::Plain(stream),
            caller: Caller::plain(remote, listener),
        }
    }

    pub fn caller(&self) -> &Caller {
        &self.caller
    }
}

impl Connected for Conn {
    type ConnectInfo = Caller;

    fn connect_info(&self) -> Caller {
        self.caller.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The sockets a server listens on, bound before it starts.
#[derive(Debug)]
pub struct Listeners {
    /// `--listen`.
    pub public: TcpListener,
    /// `--peer-listen`, when given.
    pub peer: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    /// The public socket alone (no `--peer-listen`).
    fn from(public: TcpListener) -> Listeners {
        Listeners { public, peer: None }
    }
}

/// The connections one socket accepts, each tagged with `listener`.
/// With no socket, it ends at once.
struct Accept {
    socket: Option<TcpListener>,
    listener: Listener,
}

impl Stream for Accept {
    type Item = io::Result<Conn>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(socket) = &this.socket else {
            return Poll::Ready(None);
        };
        socket.poll_accept(cx).map(|accepted| {
            Some(accepted.map(|(stream, remote)| {
                // The builder's tcp_nodelay applies only to listeners tonic
                // binds itself: set it on each accepted stream, or small
                // answers wait for Nagle and the peer's delayed ACK (40 ms
                // here; tidal-bench showed it as a p99 tail).
                let _ = stream.set_nodelay(true);
                Conn::plain(stream, remote, this.listener)
            }))
        })
    }
}

/// Every connection both sockets accept, in one stream for tonic: plain
/// TCP, or with `tls` the connections whose TLS handshake succeeded.
pub fn incoming(
    listeners: Listeners,
    tls: Option<Arc<ServerConfig>>,
) -> Pin<Box<dyn Stream<Item = io::Result<Conn>> + Send + 'static>> {
    let public = Accept {
        socket: Some(listeners.public),
        listener: Listener::Public,
    };
    let peer = Accept {
        socket: listeners.peer,
        listener: Listener::Peer,
    };
    let plain = public.merge(peer);
    match tls {
        None => Box::pin(plain),
        Some(config) => Box::pin(TlsAccept::new(plain, config)),
    }
}

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often handshake failures from one IP are logged, at most.
pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why a handshake failed, and with whom.
struct Failure {
    remote: SocketAddr,
    listener: Listener,
    error: String,
}

/// The TLS connections of a stream of accepted TCP connections: each
/// handshake runs in its own task (aborted when this stream is dropped),
/// and connections come out in the order their handshakes finish.
struct TlsAccept<S> {
    plain: Option<S>,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Result<Conn, Failure>>,
    failures: FailureLog,
}

impl<S> TlsAccept<S> {
    fn new(plain: S, config: Arc<ServerConfig>) -> TlsAccept<S> {
        TlsAccept {
            plain: Some(plain),
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
            failures: FailureLog::default(),
        }
    }
}

/// The TLS handshake of `conn`, a plain TCP connection.
async fn handshake(acceptor: TlsAcceptor, conn: Conn) -> Result<Conn, Failure> {
    let Conn { stream, caller } = conn;
    let failure = |error: String| Failure {
        remote: caller.remote,
        listener: caller.listener,
        error,
    };
    let tcp = match stream {
        Io::Plain(tcp) => tcp,
        Io::Tls(_) => return Err(failure("TLS is already established".into())),
    };
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Err(_) => {
            return Err(failure(format!(
                "no TLS handshake within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            )))
        }
        Ok(Err(e)) => return Err(failure(e.to_string())),
        Ok(Ok(tls)) => tls,
    };
    let identity = tidal_tls::peer_identity(tls.get_ref().1).map_err(|e| failure(e.to_string()))?;
    Ok(Conn {
        stream: Io::Tls(Box::new(tls)),
        caller: Caller {
            cert: Some(Arc::new(identity)),
            ..caller
        },
    })
}

impl<S> Stream for TlsAccept<S>
where
    S: Stream<Item = io::Result<Conn>> + Unpin,
{
    type Item = io::Result<Conn>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // Start a handshake for every connection accepted so far.
        while let Some(plain) = &mut this.plain {
            match Pin::new(plain).poll_next(cx) {
                Poll::Ready(Some(Ok(conn))) => {
                    this.handshakes
                        .spawn(handshake(this.acceptor.clone(), conn));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => this.plain = None,
                Poll::Pending => break,
            }
        }
        loop {
            match this.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Ok(conn)))) => return Poll::Ready(Some(Ok(conn))),
                Poll::Ready(Some(Ok(Err(failure)))) => this.failures.record(&failure),
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(error = %e, "a TLS handshake task failed")
                }
                Poll::Ready(None) if this.plain.is_none() => return Poll::Ready(None),
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Handshake failures per remote IP: the first is logged, later ones are
/// counted and summed up in one line at most every [`FAILURE_LOG_INTERVAL`],
/// so a scanner or a misconfigured client cannot flood the log.
#[derive(Default)]
struct FailureLog {
    by_ip: HashMap<IpAddr, Logged>,
}

struct Logged {
    at: Instant,
    unlogged: u64,
}

/// Entries kept before old ones are dropped.
const FAILURE_LOG_IPS: usize = 4096;

impl FailureLog {
    fn record(&mut self, failure: &Failure) {
        if let Some(more) = self.note(failure.remote.ip(), Instant::now()) {
            tracing::warn!(
                remote = %failure.remote,
                listener = %failure.listener,
                error = %failure.error,
                more_failures_from_ip = more,
                "TLS handshake failed"
            );
        }
    }

    /// Whether a failure from `ip` at `now` is to be logged: Some(the
    /// failures from it not logged since its last line), or None to count it.
    fn note(&mut self, ip: IpAddr, now: Instant) -> Option<u64> {
        if self.by_ip.len() >= FAILURE_LOG_IPS && !self.by_ip.contains_key(&ip) {
            self.by_ip
                .retain(|_, l| now.duration_since(l.at) < FAILURE_LOG_INTERVAL);
        }
        match self.by_ip.get_mut(&ip) {
            Some(l) if now.duration_since(l.at) < FAILURE_LOG_INTERVAL => {
                l.unlogged += 1;
                None
            }
            Some(l) => {
                let more = l.unlogged;
                *l = Logged {
                    at: now,
                    unlogged: 0,
                };
                Some(more)
            }
            None => {
                self.by_ip.insert(
                    ip,
                    Logged {
                        at: now,
                        unlogged: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
#[path = "conn_test.rs"]
mod tests;

#[cfg(test)]
#[path = "conn_tls_test.rs"]
mod tls_tests;
