//! Accepted connections and what each tells about its caller ([`Caller`]), which tonic puts into every request's extensions.
//!
//! The server listens on one or two sockets ([`Listeners`]): the public one
//! (`--listen`) and, with `--peer-listen`, one for the other servers. Both
//! accept streams are merged into one tonic server ([`incoming`]); each
//! connection is a [`Conn`] tagged with the [`Listener`] that accepted it
//! and the remote address the kernel reported at accept. tonic calls
//! [`Connected::connect_info`] once per connection and inserts the
//! [`Caller`] into the extensions of each request on it, where handlers and
//! layers read it ([`Caller::of`]).
//!
//! A connection is plain TCP today; a TLS connection becomes another
//! variant of [`Conn`]'s stream and adds what its certificate proves to
//! [`Caller`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

/// Which of the server's sockets accepted a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Listener {
    /// `--listen`: clients, agents and, without `--peer-listen`, other servers.
    Public,
    /// `--peer-listen`: other servers of this DC and peer DCs.
    Peer,
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Listener::Public => "public",
            Listener::Peer => "peer",
        })
    }
}

/// What the connection a request came on tells about its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The caller's address as the kernel reported it at accept.
    pub remote: SocketAddr,
    /// The socket that accepted the connection.
    pub listener: Listener,
}

impl Caller {
    /// A caller on a plain TCP connection: all it tells is its address.
    pub fn plain(remote: SocketAddr, listener: Listener) -> Caller {
        Caller { remote, listener }
    }

    /// The caller of `request`: set on every request the server takes
    /// (None only for a request built outside the server, as in tests).
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&Caller> {
        request.extensions().get::<Caller>()
    }
}

/// The byte stream of a connection.
#[derive(Debug)]
enum Io {
    Plain(TcpStream),
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
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Io::Plain(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
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

/// Every connection both sockets accept, in one stream for tonic.
pub fn incoming(listeners: Listeners) -> impl Stream<Item = io::Result<Conn>> + Send + 'static {
    let public = Accept {
        socket: Some(listeners.public),
        listener: Listener::Public,
    };
    let peer = Accept {
        socket: listeners.peer,
        listener: Listener::Peer,
    };
    public.merge(peer)
}

#[cfg(test)]
#[path = "conn_test.rs"]
mod tests;
