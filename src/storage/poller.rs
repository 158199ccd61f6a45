//! The `BackupPoller` actor: on a follower, reads the bucket every poll interval and hands what
//! changed to `Storage`. One poll at a time; a poll never blocks `Storage`'s mailbox.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use object_store::ObjectStore;

use super::backup;
use super::controller::{CurrentSnapshot, SnapshotReady, Storage};
use crate::metrics::{Metrics, ResultLabel};
use crate::role::{Role, RoleChanged};

/// Asks for a poll now (tests, and the moment a replica is demoted).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PollNow;

/// The follower's bucket poller.
pub struct BackupPoller {
    bucket: Arc<dyn ObjectStore>,
    storage: Addr<Storage>,
    interval: Duration,
    following: bool,
    in_flight: bool,
    metrics: Metrics,
}

impl BackupPoller {
    /// A poller that does nothing until told it follows.
    pub fn new(
        bucket: Arc<dyn ObjectStore>,
        storage: Addr<Storage>,
        interval: Duration,
        metrics: Metrics,
    ) -> Self {
        Self {
            bucket,
            storage,
            interval,
            following: false,
            in_flight: false,
            metrics,
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
        ctx.spawn(
            async move {
                let base = storage.send(CurrentSnapshot).await.unwrap_or_default();
                let result = backup::load_latest(bucket.as_ref(), &base).await;
                let result = result.map(|s| s.map(Arc::new)).map_err(|e| e.to_string());
                (started, result)
            }
            .into_actor(self)
            .map(|(started, result), act, _| {
                act.in_flight = false;
                let label = match &result {
                    Ok(Some(s)) => {
                        tracing::info!(generation = s.generation, writer = %s.writer, term = s.term, "loaded a new backup generation");
                        "loaded"
                    }
                    Ok(None) => "unchanged",
                    Err(e) => {
                        tracing::warn!(error = %e, "bucket poll failed; still serving the last snapshot");
                        "error"
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

impl Handler<PollNow> for BackupPoller {
    type Result = ();

    fn handle(&mut self, _: PollNow, ctx: &mut Self::Context) {
        self.poll(ctx);
    }
}
