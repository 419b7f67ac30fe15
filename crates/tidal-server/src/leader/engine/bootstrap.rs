//! The bootstrap token (`--bootstrap-token-file`): commits it as the first admin token once the cluster holds tokens and none was ever created.
//!
//! The server keeps the token's id and hash only ([`EngineConfig::bootstrap`]).
//! A leadership looks as it starts and again when the cluster format
//! version was raised (tokens need [`ACCESS_VERSION`]): if no token was ever
//! created, it proposes `CreateToken { first_only: true }`, which apply
//! refuses once any token exists, so the first leader to commit it wins and
//! revoking it later is final. A proposal that did not commit is tried again
//! after [`RETRY_MS`].

use tidal_core::access::{Role, TokenRecord, ACCESS_VERSION};
use tidal_core::command::{Command, Response};

use super::ctx::{Ctx, Purpose};
use super::event::ProposeError;

/// How long after a proposal that did not commit the next look is.
pub(crate) const RETRY_MS: u64 = 1_000;
/// The bootstrap token's name and creator, as `tidal token list` shows them.
pub(crate) const NAME: &str = "bootstrap";

/// The handler's state: when to look next, and whether it is done.
#[derive(Debug, Default)]
pub(crate) struct Bootstrap {
    next: Option<u64>,
    in_flight: bool,
    done: bool,
}

impl Bootstrap {
    /// The leadership started: look now (if there is a token to bootstrap).
    pub(crate) fn start(&mut self, cx: &Ctx) {
        if cx.cfg.bootstrap.is_some() {
            self.next = Some(cx.now.mono_ms);
        }
    }

    /// The cluster format version was raised: look now.
    pub(crate) fn raised(&mut self, cx: &Ctx) {
        if cx.cfg.bootstrap.is_some() && !self.done && !self.in_flight {
            self.next = Some(cx.now.mono_ms);
        }
    }

    pub(crate) fn next_wake(&self) -> Option<u64> {
        self.next.filter(|_| !self.in_flight && !self.done)
    }

    /// Looks, if a look is due: proposes the token, finds one was created
    /// (done), or waits for the version to be raised.
    pub(crate) fn fire(&mut self, cx: &mut Ctx) {
        match (self.next, &cx.cfg.bootstrap) {
            (Some(at), Some(_)) if at <= cx.now.mono_ms && !self.in_flight && !self.done => {}
            _ => return,
        }
        self.next = None;
        let Some((id, hash)) = cx.cfg.bootstrap.clone() else {
            return;
        };
        if cx.state.access().tokens_created() > 0 {
            self.done = true;
            return;
        }
        if cx.state.cluster_version() < ACCESS_VERSION {
            // Looked at again once the raiser commits the new version.
            return;
        }
        let record = TokenRecord {
            hash,
            name: NAME.to_string(),
            role: Role::Admin,
            tenant: None,
            created_ms: 0,
            expires_ms: None,
            created_by: NAME.to_string(),
            revoked_ms: None,
        };
        cx.out.propose(
            Purpose::Bootstrap,
            Command::CreateToken {
                id,
                record,
                first_only: true,
            },
        );
        self.in_flight = true;
    }

    pub(crate) fn committed(&mut self, index: u64, response: Response, cx: &Ctx) {
        self.in_flight = false;
        self.done = true;
        let id = cx.cfg.bootstrap.as_ref().map(|(id, _)| id.as_str());
        match response {
            Response::Ok => tracing::info!(
                node_id = cx.cfg.node_id,
                token_id = id.unwrap_or_default(),
                log_index = index,
                "the bootstrap token is the first admin token"
            ),
            other => tracing::info!(
                node_id = cx.cfg.node_id,
                token_id = id.unwrap_or_default(),
                response = ?other,
                "the bootstrap token was refused (a token was created before it)"
            ),
        }
    }

    pub(crate) fn not_committed(&mut self, error: &ProposeError, cx: &Ctx) {
        self.in_flight = false;
        self.next = Some(cx.now.mono_ms + RETRY_MS);
        tracing::warn!(node_id = cx.cfg.node_id, error = %error, "could not create the bootstrap token; trying again");
    }
}
