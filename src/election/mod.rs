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
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::ResultLabel;
use crate::role::Role;

/// What a lease looked like when last observed.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseInfo {
    /// The Lease's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// `holderIdentity`, `None` when empty.
    pub holder: Option<String>,
    /// `leaseDurationSeconds`.
    pub duration_seconds: u64,
    /// `acquireTime`.
    pub acquire_time: Option<chrono::DateTime<chrono::Utc>>,
    /// `renewTime`.
    pub renew_time: Option<chrono::DateTime<chrono::Utc>>,
    /// `leaseTransitions`.
    pub transitions: u64,
}

/// Why this replica cannot campaign, or why its claim is what it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ElectionError {
    /// RBAC denies this replica a verb it needs; it will never lead until that is fixed.
    #[error(
        "forbidden: the replica's identity lacks get/create/update on leases in namespace {namespace} ({message})"
    )]
    Forbidden {
        /// The Lease's namespace.
        namespace: String,
        /// The apiserver's message.
        message: String,
    },
    /// No answer: connection refused or reset, TLS failure, or a timeout.
    #[error("apiserver unreachable: {0}")]
    Unreachable(String),
    /// The apiserver answered with an error other than a conflict.
    #[error("apiserver error: {0}")]
    Api(String),
    /// The Kubernetes client could not be built from the configuration.
    #[error("kubernetes client: {0}")]
    Client(String),
    /// Storage found a writer with a higher term in the bucket.
    #[error("fenced: the bucket has a writer with term {newer_term}, above ours ({term})")]
    Fenced {
        /// Our term.
        term: u64,
        /// The bucket's term.
        newer_term: u64,
    },
}

impl ElectionError {
    /// Whether trying again can succeed without anyone changing the configuration.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ElectionError::Unreachable(_) | ElectionError::Api(_))
    }

    /// A short, fixed name for metrics and for deciding whether the failure changed.
    pub fn label(&self) -> &'static str {
        match self {
            ElectionError::Forbidden { .. } => "forbidden",
            ElectionError::Unreachable(_) => "unreachable",
            ElectionError::Api(_) => "api",
            ElectionError::Client(_) => "client",
            ElectionError::Fenced { .. } => "fenced",
        }
    }
}

/// The current claim: this replica's role, who leads, and the lease behind it.
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    /// This replica's role.
    pub role: Role,
    /// The leader's identity when known (ours when leading).
    pub leader: Option<String>,
    /// The lease as last observed (`None` without a lease: standalone, follower, manual).
    pub lease: Option<LeaseInfo>,
    /// A reason the backend cannot campaign (bad RBAC, unreachable apiserver), for status.
    pub error: Option<ElectionError>,
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
    /// The highest term storage has seen in the bucket (from [`crate::role::BucketTerm`]). A
    /// backend that hands out terms must never hand out one at or below it.
    pub term_floor: watch::Receiver<u64>,
    /// Failed attempts to campaign, by [`ElectionError::label`]: counted on every attempt,
    /// while the log says it only when the failure changes.
    pub failures: Family<ResultLabel, Counter>,
}

/// An election backend.
pub trait ElectionBackend: Send + 'static {
    /// `standalone`, `follower`, `kubernetes`, ...
    fn name(&self) -> &'static str;
    /// Runs the campaign until `campaign.shutdown` fires; returns once leadership (if any) is
    /// released.
    fn run(self: Box<Self>, campaign: Campaign) -> BoxFuture<'static, ()>;
}
