//! The `EtlWriter` actor: on the leader, builds every missing complete hour and day in the
//! backfill range, then keeps rebuilding the current hour and day, and sends the sets to
//! `Storage`. Demotion cancels whatever it was building; every write carries the term.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::costing;
use super::source::DataSource;
use crate::model::{EtlSet, Resolution, SetKind, Window};
use crate::role::{Role, RoleChanged};
use crate::storage::{AwaitWritable, Snapshot, Storage, WriteOutcome, WriteSets};
use crate::supervise::Lifeline;

/// What the writer needs to know.
#[derive(Clone)]
pub struct EtlConfig {
    /// The `cluster` property of every allocation.
    pub cluster_id: String,
    /// How far back to build on first start.
    pub backfill: chrono::Duration,
    /// Hourly sets are built only this far back.
    pub hourly_retention: chrono::Duration,
    /// How often the current window is rebuilt.
    pub interval: Duration,
}

/// One unit of ETL work, written as one generation.
#[derive(Debug, Clone, PartialEq)]
struct Batch {
    /// For the logs: which day or which current windows.
    label: String,
    /// (resolution, window, data end)
    windows: Vec<(Resolution, Window, DateTime<Utc>)>,
}

/// The ETL writer.
pub struct EtlWriter {
    cfg: EtlConfig,
    source: Arc<dyn DataSource>,
    storage: Addr<Storage>,
    /// The term being written under and its cancellation, while leading.
    leading: Option<(u64, CancellationToken)>,
    /// Writes are enabled for the current term.
    writable: bool,
    running: bool,
    _lifeline: Lifeline,
}

impl EtlWriter {
    /// A writer that waits to be told it leads.
    pub fn new(
        cfg: EtlConfig,
        source: Arc<dyn DataSource>,
        storage: Addr<Storage>,
        lifeline: Lifeline,
    ) -> Self {
        Self {
            cfg,
            source,
            storage,
            leading: None,
            writable: false,
            running: false,
            _lifeline: lifeline,
        }
    }

    fn run(&mut self, ctx: &mut Context<Self>, resume: Option<Arc<Snapshot>>) {
        let Some((term, cancel)) = self.leading.clone() else {
            return;
        };
        if !self.writable || self.running {
            return;
        }
        self.running = true;
        let storage = self.storage.clone();
        let source = self.source.clone();
        let cfg = self.cfg.clone();
        ctx.spawn(
            async move {
                let snapshot = match resume {
                    Some(s) => s,
                    None => storage.send(crate::storage::CurrentSnapshot).await.unwrap_or_default(),
                };
                let batches = plan(&snapshot, Utc::now(), &cfg);
                let backfill = batches.len().saturating_sub(1);
                if backfill > 0 {
                    tracing::info!(days = backfill, "ETL: building missing windows");
                }
                for (i, batch) in batches.into_iter().enumerate() {
                    if cancel.is_cancelled() {
                        tracing::info!("ETL: leadership ended; stopped building");
                        return;
                    }
                    let started = std::time::Instant::now();
                    let (src, cluster, b) = (source.clone(), cfg.cluster_id.clone(), batch.clone());
                    let built = tokio::task::spawn_blocking(move || build(src.as_ref(), &cluster, &b)).await;
                    let sets = match built {
                        Ok(Ok(sets)) => sets,
                        Ok(Err(e)) => {
                            tracing::warn!(batch = %batch.label, error = %e, "ETL: build failed; retrying next run");
                            return;
                        }
                        Err(e) => {
                            tracing::error!(batch = %batch.label, error = %e, "ETL: build task panicked");
                            return;
                        }
                    };
                    let count = sets.len();
                    match storage.send(WriteSets { term, sets }).await {
                        Ok(WriteOutcome::Written { generation }) => {
                            let ms = started.elapsed().as_millis();
                            if i > 0 {
                                tracing::info!("ETL: backfill {i}/{backfill} ({}): {count} sets, generation {generation}, {ms} ms", batch.label);
                            } else {
                                tracing::debug!("ETL: {}: {count} sets, generation {generation}, {ms} ms", batch.label);
                            }
                        }
                        Ok(WriteOutcome::Staged { error }) => {
                            // Kept locally and served; the backup catches up on its own.
                            tracing::warn!(%error, "ETL: {}: kept in the local store; the bucket backup lags", batch.label);
                        }
                        Ok(WriteOutcome::Dropped) => {
                            tracing::info!("ETL: write dropped (no longer the writer of term {term})");
                            return;
                        }
                        Ok(WriteOutcome::Fenced { term: newer }) => {
                            tracing::error!(term, newer, "ETL: fenced by a newer writer; stopped");
                            return;
                        }
                        Ok(WriteOutcome::Failed(e)) if e.is_retryable() => {
                            tracing::warn!(error = %e, "ETL: backup write failed; retrying next run");
                            return;
                        }
                        Ok(WriteOutcome::Failed(e)) => {
                            tracing::error!(error = %e, "ETL: backup write failed and will fail again until the bucket is mended; retrying next run");
                            return;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "ETL: storage is gone");
                            return;
                        }
                    }
                }
            }
            .into_actor(self)
            .map(|(), act, _| act.running = false),
        );
    }
}

/// The batches to build now: the current hour and day first (so queries about today work at
/// once), then each day of the backfill range that lacks complete sets, newest first.
fn plan(snapshot: &Snapshot, now: DateTime<Utc>, cfg: &EtlConfig) -> Vec<Batch> {
    let hour = Resolution::Hour.window_containing(now);
    let day = Resolution::Day.window_containing(now);
    let mut batches = vec![Batch {
        label: format!("current {}", day.start.format("%Y-%m-%d")),
        windows: vec![(Resolution::Hour, hour, now), (Resolution::Day, day, now)],
    }];
    let hourly_from = now - cfg.hourly_retention.min(cfg.backfill);
    let complete = |res: Resolution, w: &Window| {
        [SetKind::Allocations, SetKind::Assets]
            .iter()
            .all(|k| snapshot.has_complete(*k, res, w.start))
    };
    // Today is visited too: the hours of today that have ended are complete windows.
    let mut d = day;
    while d.end > now - cfg.backfill {
        let mut windows = Vec::new();
        if d.end <= now && !complete(Resolution::Day, &d) {
            windows.push((Resolution::Day, d, d.end));
        }
        let mut h = Resolution::Hour.window_containing(d.start);
        while h.start < d.end {
            if h.end <= now && h.end > hourly_from && !complete(Resolution::Hour, &h) {
                windows.push((Resolution::Hour, h, h.end));
            }
            h = Window::new(h.end, h.end + Resolution::Hour.duration());
        }
        if !windows.is_empty() {
            batches.push(Batch {
                label: d.start.format("%Y-%m-%d").to_string(),
                windows,
            });
        }
        d = Window::new(d.start - Resolution::Day.duration(), d.start);
    }
    batches
}

fn build(
    source: &dyn DataSource,
    cluster: &str,
    batch: &Batch,
) -> Result<Vec<EtlSet>, super::source::SourceError> {
    let mut sets = Vec::with_capacity(batch.windows.len() * 2);
    for (res, window, data_end) in &batch.windows {
        let cw = source.window(*window, *data_end)?;
        let (allocs, assets) = costing::price(&cw, *res, cluster);
        sets.push(EtlSet::Allocations(allocs));
        sets.push(EtlSet::Assets(assets));
    }
    Ok(sets)
}

impl Actor for EtlWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.cfg.interval, |act, ctx| act.run(ctx, None));
    }
}

impl Handler<RoleChanged> for EtlWriter {
    type Result = ();

    fn handle(&mut self, msg: RoleChanged, ctx: &mut Self::Context) {
        match msg.role {
            Role::Leader { term } => {
                if self.leading.as_ref().is_some_and(|(t, _)| *t == term) {
                    return;
                }
                if let Some((_, c)) = self.leading.take() {
                    c.cancel();
                }
                let cancel = CancellationToken::new();
                self.leading = Some((term, cancel.clone()));
                self.writable = false;
                let storage = self.storage.clone();
                // Wait until storage has read the bucket and enabled writes, then resume after
                // the last complete window it found.
                ctx.spawn(
                    async move { storage.send(AwaitWritable { term }).await }
                        .into_actor(self)
                        .map(move |res, act, ctx| {
                            if cancel.is_cancelled() {
                                return;
                            }
                            if let Ok(Ok(snapshot)) = res {
                                act.writable = true;
                                act.run(ctx, Some(snapshot));
                            }
                        }),
                );
            }
            Role::Follower { .. } => {
                if let Some((_, c)) = self.leading.take() {
                    c.cancel();
                }
                self.writable = false;
            }
        }
    }
}

#[cfg(feature = "test-support")]
impl Handler<crate::supervise::Crash> for EtlWriter {
    type Result = ();

    fn handle(&mut self, _: crate::supervise::Crash, _: &mut Self::Context) {
        crate::supervise::crash()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn cfg() -> EtlConfig {
        EtlConfig {
            cluster_id: "c".into(),
            backfill: chrono::Duration::days(7),
            hourly_retention: chrono::Duration::hours(49),
            interval: Duration::from_secs(60),
        }
    }

    #[test]
    fn plan_on_empty_store_covers_the_backfill() {
        let now = Utc.with_ymd_and_hms(2026, 11, 24, 10, 30, 0).unwrap();
        let batches = plan(&Snapshot::default(), now, &cfg());
        assert_eq!(batches[0].windows.len(), 2, "current hour and day first");
        let days: usize = batches
            .iter()
            .flat_map(|b| &b.windows)
            .filter(|(r, w, _)| *r == Resolution::Day && w.end <= now)
            .count();
        assert_eq!(days, 7, "seven complete days before today");
        let hours: usize = batches
            .iter()
            .flat_map(|b| &b.windows)
            .filter(|(r, w, _)| *r == Resolution::Hour && w.end <= now)
            .count();
        assert_eq!(hours, 49, "complete hours within the 49 h retention");
    }
}
