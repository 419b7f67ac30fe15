//! Exit codes, and how an error becomes one (the table is in `main.rs`).

use tonic::Code;

pub const OK: i32 = 0;
pub const ERROR: i32 = 1;
/// A usage error: clap's (unknown flag, missing argument), or a setting
/// refused before anything starts (`tidal server` serving plaintext on an
/// address that is not loopback without `--insecure`; a client or an agent
/// talking plaintext to a server that is not loopback without it,
/// [`tidal_tls::PlaintextRefused`]).
pub const USAGE: i32 = 2;
pub const UNAVAILABLE: i32 = 3;
pub const TASK_NOT_SUCCEEDED: i32 = 4;
/// `tidal server` only: its store could not write (disk full, I/O error).
pub const STORAGE_FAILED: i32 = 5;
/// `tidal agent` only: another agent process registered under its id and
/// took it over; this one stopped its tasks.
pub const AGENT_DISPLACED: i32 = 6;
/// `tidal server` only: it met an entry or a snapshot of a cluster format
/// version it does not support (README: Rolling upgrade).
pub const NEEDS_VERSION: i32 = 7;
/// A client command: the server refused its credentials, the token
/// (UNAUTHENTICATED: none, malformed, unknown, expired or revoked) or what
/// its role may call (PERMISSION_DENIED). Retrying does not help.
pub const CREDENTIALS_REFUSED: i32 = 8;

/// 2 when a setting was refused as a usage error (plaintext off loopback
/// without `--insecure`); 3 when the cause is that no server (or no
/// leader) answered; 5 when a server stopped
/// because its store could not write; 6 when another agent
/// process took this agent's id over; 7 when a server stopped at a format
/// version it does not support; 8 when a server refused the caller's
/// token or role; else 1.
pub fn code_of(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause
            .downcast_ref::<tidal_server::config::Refused>()
            .is_some()
            || cause
                .downcast_ref::<tidal_tls::PlaintextRefused>()
                .is_some()
            || matches!(
                cause.downcast_ref::<tidal_agent::ConfigError>(),
                Some(tidal_agent::ConfigError::PlaintextRefused(_))
            )
        {
            return USAGE;
        }
        if cause
            .downcast_ref::<tidal_server::fatal::NeedsVersion>()
            .is_some()
        {
            return NEEDS_VERSION;
        }
        if cause
            .downcast_ref::<tidal_server::fatal::StorageFailed>()
            .is_some()
        {
            return STORAGE_FAILED;
        }
        if cause.downcast_ref::<tidal_agent::Displaced>().is_some() {
            return AGENT_DISPLACED;
        }
        if let Some(e) = cause.downcast_ref::<tidal_client::Error>() {
            return match e.code {
                Code::Unavailable | Code::DeadlineExceeded => UNAVAILABLE,
                _ if e.is_credentials_refused() => CREDENTIALS_REFUSED,
                _ => ERROR,
            };
        }
    }
    ERROR
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn unavailable_maps_to_3_through_context() {
        let e: Result<(), tidal_client::Error> =
            Err(tidal_client::Error::new(Code::Unavailable, "no leader"));
        let e = e.context("getting task t-1").unwrap_err();
        assert_eq!(code_of(&e), UNAVAILABLE);
        let e = anyhow::Error::new(tidal_client::Error::new(Code::NotFound, "no such task"));
        assert_eq!(code_of(&e), ERROR);
        assert_eq!(code_of(&anyhow::anyhow!("plain")), ERROR);
    }

    #[test]
    fn refused_credentials_map_to_8_and_a_tls_refusal_to_1() {
        for code in [Code::Unauthenticated, Code::PermissionDenied] {
            let e: Result<(), tidal_client::Error> =
                Err(tidal_client::Error::new(code, "token refused"));
            let e = e.context("listing tokens").unwrap_err();
            assert_eq!(code_of(&e), CREDENTIALS_REFUSED);
        }
        let tls = anyhow::Error::new(tidal_client::Error::new(
            Code::Unauthenticated,
            "TLS with 127.0.0.1:7001 failed: the server speaks TLS",
        ));
        assert_eq!(code_of(&tls), ERROR);
    }

    #[test]
    fn an_unsupported_format_version_maps_to_7() {
        let e = anyhow::Error::new(tidal_server::fatal::NeedsVersion {
            needed: 2,
            supported: 1,
            reason: "entry 9 needs cluster format version 2; this node supports versions 1 to 1"
                .into(),
        });
        assert_eq!(code_of(&e), NEEDS_VERSION);
        assert!(e
            .to_string()
            .contains("run a tidal that supports cluster format version 2"));
    }

    #[test]
    fn a_store_that_cannot_write_maps_to_5() {
        let e = anyhow::Error::new(tidal_server::fatal::StorageFailed(
            "cannot write the Raft log in /d/raft/log: No space left on device (os error 28)"
                .into(),
        ));
        assert_eq!(code_of(&e), STORAGE_FAILED);
        assert_eq!(
            e.to_string(),
            "cannot write the Raft log in /d/raft/log: No space left on device (os error 28); this server stops"
        );
    }

    #[test]
    fn a_refused_plaintext_listener_maps_to_2_through_context() {
        let e: Result<(), _> = Err(tidal_server::config::Refused("refusing plaintext".into()));
        let e = e.context("invalid server configuration").unwrap_err();
        assert_eq!(code_of(&e), USAGE);
    }

    #[test]
    fn refused_plaintext_maps_to_2() {
        let refused = tidal_tls::PlaintextRefused {
            endpoint: "10.1.2.3:7001".into(),
        };
        let e: Result<(), _> = Err(refused.clone());
        let e = e.context("status").unwrap_err();
        assert_eq!(code_of(&e), USAGE);
        let e: Result<(), _> = Err(tidal_agent::ConfigError::PlaintextRefused(refused));
        let e = e.context("invalid agent configuration").unwrap_err();
        assert_eq!(code_of(&e), USAGE);
        assert!(format!("{e:#}").ends_with(
            "invalid agent configuration: refusing to connect in plaintext to 10.1.2.3:7001 \
             (not a loopback address): give --tls-dir DIR or TIDAL_TLS_DIR (see `tidal cert`), \
             or --insecure or TIDAL_INSECURE=true"
        ));
    }

    #[test]
    fn a_displaced_agent_maps_to_6() {
        let e = anyhow::Error::new(tidal_agent::Displaced {
            agent_id: "gpu-7".into(),
            message: "taken over".into(),
        });
        assert_eq!(code_of(&e), AGENT_DISPLACED);
    }
}
