//! The crate's one error type: what went wrong, naming the file involved.

use std::path::PathBuf;

use crate::identity::IdentityError;

/// Why a TLS directory, a certificate or a configuration could not be
/// loaded, issued or built.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // the variants' fields are what their messages say
pub enum TlsError {
    /// A file could not be read. (The I/O error is part of the message,
    /// not a source, so a chain of causes names it once.)
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A file that was read but does not hold what it must.
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    /// A file to be written exists already.
    #[error("{} exists; tidal cert does not overwrite files: remove it or choose another --out", path.display())]
    Exists { path: PathBuf },
    /// A file or directory could not be written.
    #[error("cannot write {}: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The identity of a certificate (or of a TLS peer) is missing or malformed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// rustls refused a configuration built from files that loaded fine.
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
    /// Both a TLS directory and plaintext were asked for (server, agent or
    /// client alike).
    #[error(
        "both --tls-dir {} (or TIDAL_TLS_DIR) and --insecure (or TIDAL_INSECURE) are set: \
         choose TLS or plaintext",
        dir.display()
    )]
    TlsAndInsecure { dir: PathBuf },
    /// Creating a key or a certificate failed.
    #[error("cannot issue the certificate: {0}")]
    Issue(String),
}
