//! Checks the gRPC framing of every request body, so a body that is not a
//! sequence of length-prefixed messages is INVALID_ARGUMENT.
//!
//! tonic reports a broken frame (a compression flag other than 0 or 1, a
//! body that ends inside a message) as INTERNAL, as if the server had
//! failed; it is the sender's fault. Each frame starts with a flag byte and a
//! big-endian u32 length: this wrapper follows those headers as the body
//! streams by (copying nothing) and fails the body with INVALID_ARGUMENT at
//! the first one that is wrong. tonic passes a body's own error through as
//! the call's status. What is inside a frame is the codec's to judge
//! (`tidal_proto::codec::StrictCodec`). Exists only because tonic's decoder
//! has no setting for these codes.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use tonic::body::BoxBody;
use tonic::codegen::{http, Service};
use tonic::server::NamedService;
use tonic::Status;

/// A gRPC service whose request bodies are checked (see the module docs).
#[derive(Clone)]
pub struct Framed<S>(pub S);

impl<S: NamedService> NamedService for Framed<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<BoxBody>> for Framed<S>
where
    S: Service<http::Request<BoxBody>, Response = http::Response<BoxBody>, Error = Infallible>,
{
    type Response = S::Response;
    type Error = Infallible;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<BoxBody>) -> Self::Future {
        let compressed = req
            .headers()
            .get("grpc-encoding")
            .is_some_and(|v| v.as_bytes() != b"identity");
        self.0.call(req.map(|body| {
            tonic::body::boxed(Checked {
                inner: body,
                scan: Scan::new(compressed),
            })
        }))
    }
}

/// Where the body is in its frames.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// The request names a compression: flag 1 is allowed.
    compressed: bool,
    header: [u8; 5],
    /// Bytes of the current header seen so far (0..5).
    have: usize,
    /// Bytes of the current message still to come.
    remaining: u64,
}

impl Scan {
    /// At the start of a body; `compressed`: the request names a compression.
    pub(crate) fn new(compressed: bool) -> Scan {
        Scan {
            compressed,
            ..Scan::default()
        }
    }

    pub(crate) fn feed(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have < 5 {
                break;
            }
            self.have = 0;
            match self.header[0] {
                0 => {}
                1 if self.compressed => {}
                1 => {
                    return Err(Status::invalid_argument(
                        "malformed gRPC frame: the compressed flag is set but the request \
                         names no grpc-encoding",
                    ))
                }
                f => {
                    return Err(Status::invalid_argument(format!(
                        "malformed gRPC frame: compression flag {f} (a frame starts with 0 or 1 \
                         and a 4-byte length)"
                    )))
                }
            }
            let mut len = &self.header[1..];
            self.remaining = u64::from(len.get_u32());
        }
        Ok(())
    }

    pub(crate) fn finish(&self) -> Result<(), Status> {
        if self.have > 0 || self.remaining > 0 {
            return Err(Status::invalid_argument(format!(
                "malformed gRPC frame: the request ended inside a frame ({} bytes missing)",
                if self.have > 0 {
                    format!("{} header", 5 - self.have)
                } else {
                    self.remaining.to_string()
                }
            )));
        }
        Ok(())
    }
}

struct Checked {
    inner: BoxBody,
    scan: Scan,
}

impl Body for Checked {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let next = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        Poll::Ready(match next {
            Some(Ok(frame)) => match frame.data_ref().map(|d| this.scan.feed(d)) {
                Some(Err(status)) => Some(Err(status)),
                _ => Some(Ok(frame)),
            },
            None => this.scan.finish().err().map(Err),
            other => other,
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(flag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![flag];
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn good_frames_pass_in_any_split() {
        let mut bytes = frame(0, b"hello");
        bytes.extend(frame(0, b""));
        bytes.extend(frame(0, &[7; 300]));
        for split in 0..bytes.len() {
            let mut s = Scan::default();
            s.feed(&bytes[..split]).unwrap();
            s.feed(&bytes[split..]).unwrap();
            s.finish().unwrap();
        }
    }

    #[test]
    fn a_bad_flag_or_a_cut_frame_is_invalid_argument() {
        let mut s = Scan::default();
        let e = s.feed(b"garbage that is not grpc").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("compression flag 103"), "{e}");
        let mut s = Scan::default();
        assert!(
            s.feed(&frame(1, b"x")).is_err(),
            "flag 1 without an encoding"
        );
        let mut s = Scan {
            compressed: true,
            ..Scan::default()
        };
        s.feed(&frame(1, b"x")).unwrap();
        let mut s = Scan::default();
        s.feed(&frame(0, b"hello")[..7]).unwrap();
        let e = s.finish().unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("3 bytes"), "{e}");
        let mut s = Scan::default();
        s.feed(&[0, 0]).unwrap();
        assert!(s.finish().unwrap_err().message().contains("3 header bytes"));
    }
}
