//! The client's one error type: a gRPC status code and a message.

use std::fmt;

use tonic::Code;

/// How the message of a TLS refusal starts (`TLS with HOST:PORT failed: ...`).
pub(crate) const TLS_REFUSAL: &str = "TLS with ";

/// Why a request failed: the gRPC status code the server (or the transport)
/// gave, and a message meant for a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// The gRPC status code (`Unavailable` for connection failures).
    pub code: Code,
    /// What went wrong, as the server (or the client) put it.
    pub message: String,
}

impl Error {
    /// An error with this code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
        }
    }

    /// An `InvalidArgument` error (bad input caught before any request).
    pub fn invalid_argument(message: impl Into<String>) -> Error {
        Error::new(Code::InvalidArgument, message)
    }

    /// Whether a TLS handshake failed in a way no retry mends: a
    /// certificate refused by either side, or a server without TLS.
    pub fn is_tls_refusal(&self) -> bool {
        self.code == Code::Unauthenticated && self.message.starts_with(TLS_REFUSAL)
    }

    /// An error from a per-item `v1::Error` (the code is a gRPC status code).
    pub fn from_item(e: &tidal_proto::v1::Error) -> Error {
        Error::new(Code::from_i32(e.code), e.message.clone())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?})", self.message, self.code)
    }
}

impl std::error::Error for Error {}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Error {
        Error::new(s.code(), s.message().to_string())
    }
}

impl From<&tonic::Status> for Error {
    fn from(s: &tonic::Status) -> Error {
        Error::new(s.code(), s.message().to_string())
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        tonic::Status::new(e.code, e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_message_and_code() {
        let e = Error::new(Code::NotFound, "task t-1 not found");
        assert_eq!(e.to_string(), "task t-1 not found (NotFound)");
    }

    #[test]
    fn from_status_and_item() {
        let e: Error = tonic::Status::invalid_argument("bad").into();
        assert_eq!(e, Error::invalid_argument("bad"));
        let item = tidal_proto::v1::Error {
            code: Code::ResourceExhausted as i32,
            message: "too big".into(),
        };
        assert_eq!(Error::from_item(&item).code, Code::ResourceExhausted);
    }
}
