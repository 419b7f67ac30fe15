//! What the state machine has applied; also a snapshot's content.

use serde::{Deserialize, Serialize};
use tidal_core::State;

/// What the state machine has applied: the state, the last applied log id
/// and the membership in effect. This is also a snapshot's content.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub state: State,
    pub last_applied: Option<openraft::LogId<u64>>,
    pub membership: openraft::StoredMembership<u64, openraft::BasicNode>,
}
