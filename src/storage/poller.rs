//! The `BackupPoller` actor: on a follower, reads the bucket every poll interval and hands what
//! it found to `Storage`, restoring the local file store from what it fetched. One poll at a
//! time; a poll never blocks `Storage`'s mailbox.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use object_store::ObjectStore;

use super::backup::{self, Backoff, Loaded};
use super::controller::{PollBase, SnapshotReady, Storage};
use super::filestore::FileStore;
use crate::metrics::{Metrics, ResultLabel};
use crate::role::{Role, RoleChanged};
use crate::supervise::Lifeline;

/// Asks for a poll now, whatever the interval: the storage-rule tests and the benches use it to
/// decide when a follower reads the bucket.
#[cfg(feature = "test-support")]
#[derive(Message)]
#[rtype(result = "()")]
pub struct PollNow;

/// The follower's bucket poller.
pub struct BackupPoller {
    bucket: Arc<dyn ObjectStore>,
    storage: Addr<Storage>,
    interval: Duration,
    backoff: Backoff,
    /// The local store a follower restores from the bucket.
    local: FileStore,
    following: bool,
    in_flight: bool,
    metrics: Metrics,
    _lifeline: Lifeline,
}

impl BackupPoller {
    /// A poller that does nothing until told it follows.
    pub fn new(
        bucket: Arc<dyn ObjectStore>,
        storage: Addr<Storage>,
        interval: Duration,
        backoff: Backoff,
        local: FileStore,
        metrics: Metrics,
        lifeline: Lifeline,
    ) -> Self {
        Self {
            bucket,
            storage,
            interval,
            backoff,
            local,
            following: false,
            in_flight: false,
            metrics,
            _lifeline: lifeline,
        }
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if !self.following || self.in_flight {
            return;
        }
        self.in_flight = true;
        let started = Instant::now();
        let bucket = self.bucket.clone();
        let storage = self.storage.clone();
        let backoff = self.backoff;
        let local = self.local.clone();
        ctx.spawn(
            async move {
                let base = storage.send(PollBase).await.unwrap_or_default();
                let result =
                    backup::load_latest(bucket.as_ref(), &base, backoff, Some(&local)).await;
                (started, result)
            }
            .into_actor(self)
            .map(|(started, result), act, _| {
                act.in_flight = false;
                let label = match result.as_ref().map(|r| &r.loaded) {
                    Ok(Loaded::New(s)) => {
                        tracing::info!(
                            generation = s.generation, writer = %s.writer, term = s.term,
                            sets = s.files.len(), unavailable = s.missing.len(),
                            "loaded a backup generation"
                        );
                        "loaded"
                    }
                    Ok(Loaded::Unchanged) => "unchanged",
                    Ok(Loaded::Empty) => "empty",
                    Err(e) => {
                        tracing::warn!(error = %e, "bucket poll failed; still serving the last snapshot");
                        e.label()
                    }
                };
                act.metrics.polls.get_or_create(&ResultLabel::of(label)).inc();
                act.storage.do_send(SnapshotReady { started, result });
            }),
        );
    }
}

impl Actor for BackupPoller {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.interval, |act, ctx| act.poll(ctx));
    }
}

impl Handler<RoleChanged> for BackupPoller {
    type Result = ();

    fn handle(&mut self, msg: RoleChanged, ctx: &mut Self::Context) {
        let following = matches!(msg.role, Role::Follower { .. });
        let resumed = following && !self.following;
        self.following = following;
        if resumed {
            self.poll(ctx);
        }
    }
}

#[cfg(feature = "test-support")]
impl Handler<PollNow> for BackupPoller {
    type Result = ();

    fn handle(&mut self, _: PollNow, ctx: &mut Self::Context) {
        self.poll(ctx);
    }
}

#[cfg(feature = "test-support")]
impl Handler<crate::supervise::Crash> for BackupPoller {
    type Result = ();

    fn handle(&mut self, _: crate::supervise::Crash, _: &mut Self::Context) {
        crate::supervise::crash()
    }
}
