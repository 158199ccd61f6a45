//! The two backends without a lease: `standalone` leads at once and never loses; `follower`
//! never leads.

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Campaign, Claim, ElectionBackend, ElectionError};
use crate::role::Role;

/// Always the leader, with term 0: a single install. The leader code path, with an election that
/// never loses. If storage finds a higher term in the bucket (an HA group writes there), it
/// turns read-only rather than fight.
pub struct StandaloneElection {
    /// This replica's identity.
    pub identity: String,
}

impl ElectionBackend for StandaloneElection {
    fn name(&self) -> &'static str {
        "standalone"
    }

    fn run(self: Box<Self>, c: Campaign) -> BoxFuture<'static, ()> {
        async move {
            c.claims.send_replace(Claim {
                role: Role::Leader { term: 0 },
                leader: Some(self.identity.clone()),
                lease: None,
                error: None,
            });
            tokio::select! {
                () = c.shutdown.cancelled() => {}
                () = c.step_down.notified() => {
                    tracing::error!("standalone: the bucket belongs to a writer with a higher term; serving read-only");
                    c.claims.send_replace(Claim {
                        role: Role::Follower { leader: None },
                        leader: None,
                        lease: None,
                        error: Some(ElectionError::Fenced {
                            term: 0,
                            newer_term: *c.term_floor.borrow(),
                        }),
                    });
                    c.shutdown.cancelled().await;
                }
            }
        }
        .boxed()
    }
}

/// Never leads: a read replica of the bucket.
pub struct FollowerElection;

impl ElectionBackend for FollowerElection {
    fn name(&self) -> &'static str {
        "follower"
    }

    fn run(self: Box<Self>, c: Campaign) -> BoxFuture<'static, ()> {
        async move {
            c.claims.send_replace(Claim::candidate());
            c.shutdown.cancelled().await;
        }
        .boxed()
    }
}
