//! The `Elector` actor: runs one backend's campaign and turns its claims into `RoleChanged`
//! messages for its subscribers. It is the only way in or out of the election: the campaign
//! hears from the rest of the replica only through the elector (`Fenced`, `BucketTerm`,
//! `Shutdown`), and the rest hears from the campaign only through `RoleChanged` and `GetClaim`.

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::{Notify, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{Campaign, Claim, ElectionBackend};
use crate::metrics::{Metrics, NameLabel};
use crate::role::{BucketTerm, Fenced, Role, RoleChanged};
use crate::supervise::Lifeline;

/// Asks for the current [`Claim`].
#[derive(Message)]
#[rtype(result = "Claim")]
pub struct GetClaim;

/// Stops the campaign, releasing leadership if held; answered once released.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// The elector.
pub struct Elector {
    backend: Option<Box<dyn ElectionBackend>>,
    /// Told of every role change, in order (storage first, so writes stop first).
    subscribers: Vec<Recipient<RoleChanged>>,
    claim: Claim,
    /// Whether the first claim has been announced: it always is, even when it matches the
    /// placeholder the elector starts with.
    announced: bool,
    shutdown: CancellationToken,
    step_down: Arc<Notify>,
    done: Option<oneshot::Receiver<()>>,
    metrics: Metrics,
    lease_name: String,
    /// The highest term storage has seen in the bucket, for the campaign.
    term_floor: watch::Sender<u64>,
    /// Reports the elector's death (or the campaign's) as a critical failure.
    lifeline: Lifeline,
}

impl Elector {
    /// An elector that will run `backend` once started.
    pub fn new(
        backend: Box<dyn ElectionBackend>,
        subscribers: Vec<Recipient<RoleChanged>>,
        metrics: Metrics,
        lease_name: &str,
        lifeline: Lifeline,
    ) -> Self {
        Self {
            backend: Some(backend),
            subscribers,
            claim: Claim::candidate(),
            announced: false,
            shutdown: CancellationToken::new(),
            step_down: Arc::new(Notify::new()),
            done: None,
            metrics,
            lease_name: lease_name.to_string(),
            term_floor: watch::channel(0).0,
            lifeline,
        }
    }
}

impl Actor for Elector {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let backend = self.backend.take().expect("an elector starts once");
        tracing::info!(backend = backend.name(), "election starting");
        let (claims, rx) = watch::channel(Claim::candidate());
        let campaign = Campaign {
            claims,
            shutdown: self.shutdown.clone(),
            step_down: self.step_down.clone(),
            term_floor: self.term_floor.subscribe(),
            failures: self.metrics.election_failures.clone(),
        };
        let (done_tx, done_rx) = oneshot::channel();
        self.done = Some(done_rx);
        tokio::spawn(async move {
            backend.run(campaign).await;
            let _ = done_tx.send(());
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            let claim = rx.borrow_and_update().clone();
            Some((claim, rx))
        });
        ctx.add_stream(stream);
    }
}

impl StreamHandler<Claim> for Elector {
    fn handle(&mut self, claim: Claim, _: &mut Self::Context) {
        let changed = claim.role != self.claim.role || !self.announced;
        self.announced = true;
        let is_leader = matches!(claim.role, Role::Leader { .. });
        self.metrics.is_leader.set(i64::from(is_leader));
        self.metrics.term.set(claim.role.term().unwrap_or(0) as i64);
        self.metrics
            .master_status
            .get_or_create(&NameLabel {
                name: self.lease_name.clone(),
            })
            .set(i64::from(is_leader));
        if let Some(lease) = &claim.lease {
            self.metrics.lease_transitions.set(lease.transitions as i64);
        }
        if changed {
            match &claim.role {
                Role::Leader { term } => tracing::info!(term, "became leader"),
                Role::Follower { leader } => {
                    tracing::info!(leader = leader.as_deref().unwrap_or("unknown"), "following")
                }
            }
            for s in &self.subscribers {
                s.do_send(RoleChanged {
                    role: claim.role.clone(),
                });
            }
        }
        self.claim = claim;
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // The campaign ends on shutdown; any other end (a panic on its thread) leaves the
        // replica with a role nobody maintains: a leader that no longer renews, or a follower
        // that can never lead. That is a critical failure.
        if !self.shutdown.is_cancelled() {
            self.lifeline.fail("the election campaign ended on its own");
            ctx.stop();
        }
    }
}

impl Handler<GetClaim> for Elector {
    type Result = MessageResult<GetClaim>;

    fn handle(&mut self, _: GetClaim, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.claim.clone())
    }
}

impl Handler<BucketTerm> for Elector {
    type Result = ();

    fn handle(&mut self, msg: BucketTerm, _: &mut Self::Context) {
        self.term_floor.send_if_modified(|floor| {
            let higher = msg.term > *floor;
            *floor = (*floor).max(msg.term);
            higher
        });
    }
}

impl Handler<Fenced> for Elector {
    type Result = ();

    fn handle(&mut self, msg: Fenced, _: &mut Self::Context) {
        tracing::error!(
            term = msg.term,
            newer_term = msg.newer_term,
            "stepping down: fenced by storage"
        );
        // The fencing term is a floor for any term handed out later.
        self.term_floor.send_if_modified(|floor| {
            std::mem::replace(floor, (*floor).max(msg.newer_term)) < msg.newer_term
        });
        self.step_down.notify_one();
    }
}

impl Handler<Shutdown> for Elector {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) -> Self::Result {
        self.shutdown.cancel();
        let done = self.done.take();
        Box::pin(async move {
            if let Some(done) = done {
                let _ = done.await;
            }
        })
    }
}

#[cfg(feature = "test-support")]
impl Handler<crate::supervise::Crash> for Elector {
    type Result = ();

    fn handle(&mut self, _: crate::supervise::Crash, _: &mut Self::Context) {
        crate::supervise::crash()
    }
}
