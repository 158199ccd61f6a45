//! The role a replica plays and the messages that travel between the election and the actors
//! that obey it: `RoleChanged` (elector → storage, poller, ETL writer) and `Fenced` and
//! `BucketTerm` (storage → elector).

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

/// Sent by storage to the elector when the bucket holds a term higher than the one this replica
/// leads under: another writer owns the backup, so this replica must stop leading now.
#[derive(Clone, Debug, Message)]
#[rtype(result = "()")]
pub struct Fenced {
    /// Our term.
    pub term: u64,
    /// The higher term found.
    pub newer_term: u64,
}

/// Sent by storage to the elector whenever it loads a manifest with a term higher than any seen
/// before. An election that hands out terms must never hand out one at or below it: a recreated
/// Lease restarts `leaseTransitions` at 0.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "()")]
pub struct BucketTerm {
    /// The highest term seen in the bucket so far.
    pub term: u64,
}
