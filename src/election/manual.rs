//! A backend driven by hand: a [`ManualHandle`] promotes and demotes. Tests use it to walk the
//! actors through role changes; it is also the way to embed the replica under another election.

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;

use super::{Campaign, Claim, ElectionBackend};
use crate::role::Role;

/// The handle that decides the role.
#[derive(Clone)]
pub struct ManualHandle {
    tx: watch::Sender<Claim>,
    identity: String,
}

impl ManualHandle {
    /// Makes this replica the leader of `term`.
    pub fn promote(&self, term: u64) {
        self.tx.send_replace(Claim {
            role: Role::Leader { term },
            leader: Some(self.identity.clone()),
            lease: None,
            error: None,
        });
    }

    /// Makes this replica a follower of `leader`.
    pub fn demote(&self, leader: Option<&str>) {
        self.tx.send_replace(Claim {
            role: Role::Follower {
                leader: leader.map(str::to_string),
            },
            leader: leader.map(str::to_string),
            lease: None,
            error: None,
        });
    }
}

/// The backend half.
pub struct ManualElection {
    rx: watch::Receiver<Claim>,
}

impl ManualElection {
    /// A backend starting as a follower, and its handle.
    pub fn new(identity: &str) -> (Self, ManualHandle) {
        let (tx, rx) = watch::channel(Claim::candidate());
        (
            Self { rx },
            ManualHandle {
                tx,
                identity: identity.to_string(),
            },
        )
    }
}

impl ElectionBackend for ManualElection {
    fn name(&self) -> &'static str {
        "manual"
    }

    fn run(mut self: Box<Self>, c: Campaign) -> BoxFuture<'static, ()> {
        async move {
            c.claims.send_replace(self.rx.borrow_and_update().clone());
            loop {
                tokio::select! {
                    () = c.shutdown.cancelled() => return,
                    // Fenced: follow until the handle decides again.
                    () = c.step_down.notified() => {
                        c.claims.send_replace(Claim::candidate());
                    }
                    changed = self.rx.changed() => {
                        if changed.is_err() {
                            c.shutdown.cancelled().await;
                            return;
                        }
                        c.claims.send_replace(self.rx.borrow_and_update().clone());
                    }
                }
            }
        }
        .boxed()
    }
}
