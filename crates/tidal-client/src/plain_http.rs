//! A minimal HTTP/1.1 responder for the metrics listeners of `tidal
//! server` and `tidal agent` (`--metrics-listen`): plain HTTP, no TLS, no
//! authentication, one request per connection.
//!
//! [`serve`] accepts connections, reads each request head (up to the blank
//! line, at most [`MAX_HEAD`] bytes, within [`READ_TIMEOUT`]), asks the
//! caller's handler for the answer, writes it with its status line,
//! `Content-Type`, `Content-Length` and `Connection: close`, and closes the
//! connection. A request body is never read. At most [`MAX_CONNECTIONS`]
//! connections are served at once; further ones wait in the listener's
//! backlog until one ends. What is routed where is the handler's business
//! ([`request_line`] splits a head into its method and path).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// The largest request head read; the handler gets `None` for a longer one.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request head; a slower one is closed
/// without an answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to take the answer; a slower one is closed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 64;

/// What the handler answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code and reason, e.g. `"200 OK"`.
    pub status: &'static str,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    /// A `text/plain` answer (refusals, errors).
    pub fn text(status: &'static str, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

/// Serves `listener` until the future is dropped (callers spawn it and
/// abort the task): each request's head, or `None` when it is longer than
/// [`MAX_HEAD`], goes to `handler`, whose [`Response`] is written back.
pub async fn serve<H>(listener: TcpListener, handler: H)
where
    H: Fn(Option<&[u8]>) -> Response + Send + Sync + 'static,
{
    serve_capped(listener, handler, Arc::new(Semaphore::new(MAX_CONNECTIONS))).await
}

/// [`serve`] with the connection cap's permits given (tests watch them).
async fn serve_capped<H>(listener: TcpListener, handler: H, permits: Arc<Semaphore>)
where
    H: Fn(Option<&[u8]>) -> Response + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    loop {
        // Waiting for a permit first leaves the excess in the backlog.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: wait a little, go on.
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, handler).await {
                tracing::debug!(error = %e, "metrics listener: a request failed");
            }
            drop(permit);
        });
    }
}

/// The method and path (without its query string) of a request head's
/// first line; empty strings for what is missing.
pub fn request_line(head: &[u8]) -> (String, String) {
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split(' ');
    let method = words.next().unwrap_or("").to_string();
    let mut target = words.next().unwrap_or("");
    // The absolute form (`GET http://host:port/metrics`), which HTTP/1.1
    // servers must take: its path.
    for scheme in ["http://", "https://"] {
        if let Some(rest) = target.strip_prefix(scheme) {
            target = rest.find('/').map_or("/", |i| &rest[i..]);
        }
    }
    let path = target.split('?').next().unwrap_or("").to_string();
    (method, path)
}

/// Reads one request head from `stream` and answers it. The handler runs
/// on tokio's blocking pool (it may read a large state), never on the
/// threads that serve the rest of the process; the answer must be taken
/// within [`WRITE_TIMEOUT`], so a client that does not read cannot hold its
/// connection's place for ever.
async fn answer<H>(mut stream: TcpStream, handler: Arc<H>) -> std::io::Result<()>
where
    H: Fn(Option<&[u8]>) -> Response + Send + Sync + 'static,
{
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => return Ok(()),
        Ok(head) => head?,
    };
    let r = tokio::task::spawn_blocking(move || handler(head.as_deref()))
        .await
        .map_err(std::io::Error::other)?;
    let response = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{}",
        r.status,
        r.content_type,
        r.body.len(),
        r.body
    );
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(written) => written,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// The request head (up to the blank line), or `None` when it is longer
/// than [`MAX_HEAD`]. A connection closed before the head ends is an error.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

#[cfg(test)]
#[path = "plain_http_test.rs"]
mod tests;
