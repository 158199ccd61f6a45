//! The role a replica plays, and the message the elector sends when it changes. Shared by
//! `election` (which sends it), `storage` and `etl` (which obey it).

use actix::Message;

/// What this replica may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Holds the lease: builds the ETL and writes the backup, fenced by `term`.
    Leader {
        /// The fencing token: the lease's `leaseTransitions` when this replica acquired it.
        term: u64,
    },
    /// Reads the backup and serves queries from it.
    Follower {
        /// Who leads, when known.
        leader: Option<String>,
    },
}

impl Role {
    /// `leader` or `follower`, as `/model/ha/status` spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Leader { .. } => "leader",
            Role::Follower { .. } => "follower",
        }
    }

    /// The term when leading.
    pub fn term(&self) -> Option<u64> {
        match self {
            Role::Leader { term } => Some(*term),
            Role::Follower { .. } => None,
        }
    }
}

/// Sent by the elector to storage, the poller and the ETL writer on every role change.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct RoleChanged {
    /// The new role.
    pub role: Role,
}
