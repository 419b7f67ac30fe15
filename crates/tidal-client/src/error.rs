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
    /// certificate refused by either side, or a server without TLS. A call
    /// ends with it when every endpoint refused (or the leader did); one
    /// that refused is passed over for the next.
    pub fn is_tls_refusal(&self) -> bool {
        self.code == Code::Unauthenticated && self.message.starts_with(TLS_REFUSAL)
    }

    /// Whether the server refused the caller's credentials: its token
    /// (UNAUTHENTICATED: none, malformed, unknown, expired or revoked) or
    /// what its role or certificate may call (PERMISSION_DENIED). Final;
    /// a TLS handshake refusal ([`Error::is_tls_refusal`]) is not counted.
    pub fn is_credentials_refused(&self) -> bool {
        match self.code {
            Code::PermissionDenied => true,
            Code::Unauthenticated => !self.is_tls_refusal(),
            _ => false,
        }
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

    #[test]
    fn refused_credentials_are_told_apart_from_tls_refusals() {
        let token = Error::new(Code::Unauthenticated, "no token");
        assert!(token.is_credentials_refused());
        assert!(Error::new(Code::PermissionDenied, "role user").is_credentials_refused());
        let tls = Error::new(Code::Unauthenticated, format!("{TLS_REFUSAL}a:1 failed: x"));
        assert!(tls.is_tls_refusal() && !tls.is_credentials_refused());
        assert!(!Error::new(Code::NotFound, "t").is_credentials_refused());
    }
}
