//! Election: who leads. Backends behind one interface publish a stream of [`Claim`]s; the
//! `Elector` actor forwards each change of role as `RoleChanged` to storage, the poller and the
//! ETL writer, and answers status questions.
//!
//! Backends: `standalone` (leader at once, never loses), `follower` (never leads), `manual` (a
//! handle promotes and demotes: tests and embedding), and `kubernetes` (a Lease).

mod elector;
pub mod kubernetes;
mod manual;
mod simple;

pub use elector::{Elector, GetClaim, Shutdown};
pub use manual::{ManualElection, ManualHandle};
pub use simple::{FollowerElection, StandaloneElection};

use futures::future::BoxFuture;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::role::Role;

/// What a lease looked like when last observed.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseInfo {
    pub name: String,
    pub namespace: String,
    pub holder: Option<String>,
    pub duration_seconds: u64,
    pub acquire_time: Option<chrono::DateTime<chrono::Utc>>,
    pub renew_time: Option<chrono::DateTime<chrono::Utc>>,
    pub transitions: u64,
}

/// The current claim: this replica's role, who leads, and the lease behind it.
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    pub role: Role,
    /// The leader's identity when known (ours when leading).
    pub leader: Option<String>,
    /// The lease as last observed (`None` without a lease: standalone, follower, manual).
    pub lease: Option<LeaseInfo>,
    /// A reason the backend cannot campaign (bad RBAC, unreachable apiserver), for status.
    pub error: Option<String>,
}

impl Claim {
    /// A follower claim with no known leader.
    pub fn candidate() -> Self {
        Self {
            role: Role::Follower { leader: None },
            leader: None,
            lease: None,
            error: None,
        }
    }
}

/// What a backend's campaign gets from the elector.
pub struct Campaign {
    /// Where the backend publishes every change of claim.
    pub claims: watch::Sender<Claim>,
    /// Fired on shutdown: stop, releasing leadership if held.
    pub shutdown: CancellationToken,
    /// Notified when storage found a higher term: stop leading now.
    pub step_down: std::sync::Arc<Notify>,
    /// The highest term storage has seen in the bucket. A backend that hands out terms must
    /// never hand out one below it (a recreated Lease restarts `leaseTransitions` at 0).
    pub term_floor: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// An election backend.
pub trait ElectionBackend: Send + 'static {
    /// `standalone`, `follower`, `kubernetes`, ...
    fn name(&self) -> &'static str;
    /// Runs the campaign until `campaign.shutdown` fires; returns once leadership (if any) is
    /// released.
    fn run(self: Box<Self>, campaign: Campaign) -> BoxFuture<'static, ()>;
}
