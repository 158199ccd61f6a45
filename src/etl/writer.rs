//! The `EtlWriter` actor: on the leader, builds every missing complete hour and day in the
//! backfill range, then keeps rebuilding the current hour and day, and sends the sets to
//! `Storage`. Demotion cancels whatever it was building; every write carries the term.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::costing;
use super::source::{ClusterWindow, DataSource};
use super::status::EtlProgress;
use crate::metrics::Metrics;
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
    /// How long after a window ends it is built as complete: the source's data for its last
    /// moments may still be arriving (a scrape in flight, remote write). 0 for the demo source.
    pub settle: chrono::Duration,
    /// Repairs reach no further back than this (the daily retention).
    pub daily_retention: chrono::Duration,
}

/// One unit of ETL work, written as one generation.
#[derive(Debug, Clone, PartialEq)]
struct Batch {
    /// For the logs: which day or which current windows.
    label: String,
    /// (resolution, window, data end)
    windows: Vec<(Resolution, Window, DateTime<Utc>)>,
}

/// Rebuild every complete set overlapping `window` (Kubecost's repair endpoints). Answered with
/// the number of days queued, or an error when this replica does not build.
#[derive(Message)]
#[rtype(result = "Result<usize, RepairRefused>")]
pub struct Repair {
    /// The range to rebuild.
    pub window: Window,
}

/// Why a repair was refused.
#[derive(Debug, thiserror::Error)]
pub enum RepairRefused {
    /// Only the leader builds.
    #[error("this replica does not lead, so it does not build; the leader repairs")]
    NotLeader,
    /// Nothing complete overlaps the window.
    #[error("no complete day or hour within the daily retention overlaps the window")]
    Empty,
    /// Too many days are queued already.
    #[error(
        "{queued} day(s) are queued for repair already (at most {MAX_QUEUED_REPAIRS}); retry once they are built"
    )]
    Full {
        /// Days queued.
        queued: usize,
    },
}

/// Repair batches (days) built per ETL run, between rebuilds of the current windows.
const REPAIRS_PER_RUN: usize = 4;
/// Repair batches queued at most.
const MAX_QUEUED_REPAIRS: usize = 400;
/// How long a past day that came back missing or partial waits before it is asked again.
const RETRY_INCOMPLETE: Duration = Duration::from_secs(30 * 60);

/// Takes a finished repair batch off the queue (by identity: the queue may have changed).
fn repair_done(
    repairs: &std::sync::Mutex<std::collections::VecDeque<Batch>>,
    progress: &EtlProgress,
    batch: &Batch,
) {
    let left = {
        let mut q = repairs.lock().expect("repairs lock");
        if let Some(i) = q.iter().position(|b| b == batch) {
            q.remove(i);
        }
        q.len()
    };
    progress.update(|p| p.repairs_pending = left);
}

/// The ETL writer.
pub struct EtlWriter {
    cfg: EtlConfig,
    source: Arc<dyn DataSource>,
    storage: Addr<Storage>,
    metrics: Metrics,
    progress: EtlProgress,
    /// Repairs queued, oldest first; a batch leaves the queue once written.
    repairs: Arc<std::sync::Mutex<std::collections::VecDeque<Batch>>>,
    /// Past days the source answered with missing or partial data, and when.
    cooling: Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>>,
    /// The term being written under and its cancellation, while leading.
    leading: Option<(u64, CancellationToken)>,
    /// Writes are enabled for the current term.
    writable: bool,
    running: bool,
    /// A repair arrived while a run was going: run again as soon as it ends.
    rerun: bool,
    _lifeline: Lifeline,
}

impl EtlWriter {
    /// A writer that waits to be told it leads.
    pub fn new(
        cfg: EtlConfig,
        source: Arc<dyn DataSource>,
        storage: Addr<Storage>,
        metrics: Metrics,
        progress: EtlProgress,
        lifeline: Lifeline,
    ) -> Self {
        Self {
            cfg,
            source,
            storage,
            metrics,
            progress,
            repairs: Default::default(),
            cooling: Default::default(),
            leading: None,
            writable: false,
            running: false,
            rerun: false,
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
        let metrics = self.metrics.clone();
        let progress = self.progress.clone();
        let repairs = self.repairs.clone();
        let cooling = self.cooling.clone();
        ctx.spawn(
            async move {
                let snapshot = match resume {
                    Some(s) => s,
                    None => storage.send(crate::storage::CurrentSnapshot).await.unwrap_or_default(),
                };
                let planned = plan(&snapshot, now_ms(), &cfg);
                let backfill = planned.len().saturating_sub(1);
                if backfill > 0 {
                    tracing::info!(days = backfill, "ETL: building missing windows");
                }
                // The current windows first, then queued repairs, then the backfill.
                let mut batches: Vec<(Batch, bool)> = Vec::with_capacity(planned.len() + 1);
                let mut planned = planned.into_iter();
                batches.extend(planned.next().map(|b| (b, false)));
                // A few repairs per run, so the current windows are rebuilt between them.
                let queued: Vec<Batch> = repairs
                    .lock()
                    .expect("repairs lock")
                    .iter()
                    .take(REPAIRS_PER_RUN)
                    .cloned()
                    .collect();
                batches.extend(queued.into_iter().map(|b| (b, true)));
                batches.extend(planned.map(|b| (b, false)));
                let mut backfill_left = backfill;
                for (i, (batch, repair)) in batches.into_iter().enumerate() {
                    if cancel.is_cancelled() {
                        tracing::info!("ETL: leadership ended; stopped building");
                        return;
                    }
                    // A past day whose data was missing or partial is asked again after a
                    // while, not on every run.
                    if i > 0 && !repair && cooling.lock().expect("cooling lock").get(&batch.label).is_some_and(|t| t.elapsed() < RETRY_INCOMPLETE) {
                        backfill_left = backfill_left.saturating_sub(1);
                        continue;
                    }
                    progress.update(|p| {
                        p.backfill_pending = backfill_left;
                        p.repairs_pending = repairs.lock().expect("repairs lock").len();
                    });
                    let started = std::time::Instant::now();
                    let before = source.queries_issued();
                    let built = build(source.clone(), &cfg.cluster_id, &batch).await;
                    metrics.source_queries.inc_by(source.queries_issued() - before);
                    progress.update(|p| p.queries_issued = source.queries_issued());
                    let (sets, current, missing) = match built {
                        Ok(b) => b,
                        Err(e) => {
                            metrics.source_failures.inc();
                            progress.failed(&e.to_string());
                            progress.update(|p| p.backfill_pending = backfill_left);
                            tracing::warn!(batch = %batch.label, error = %e, "ETL: build failed; nothing of it published, retrying next run");
                            return;
                        }
                    };
                    if i > 0 && !repair {
                        let partial = !missing.is_empty() || sets.iter().any(|s| s.data_end() < s.window().end);
                        let mut c = cooling.lock().expect("cooling lock");
                        if partial {
                            c.insert(batch.label.clone(), std::time::Instant::now());
                        } else {
                            c.remove(&batch.label);
                        }
                    }
                    for w in &missing {
                        tracing::info!(batch = %batch.label, window = %w, source = source.name(), "ETL: the source holds no data for this window; nothing published for it");
                    }
                    progress.without_data(missing);
                    if i == 0
                        && let Some(cw) = &current
                    {
                        // Only while leading: a demotion may have come during the build.
                        metrics.cost.update_if_enabled(cw, &cfg.cluster_id);
                    }
                    if !repair && i > 0 {
                        backfill_left = backfill_left.saturating_sub(1);
                    }
                    if sets.is_empty() {
                        if repair {
                            repair_done(&repairs, &progress, &batch);
                        }
                        continue;
                    }
                    for set in &sets {
                        progress.has_data(&window_label(set.resolution(), set.window().start));
                    }
                    let count = sets.len();
                    match storage.send(WriteSets { term, sets }).await {
                        Ok(WriteOutcome::Written { generation }) => {
                            progress.succeeded();
                            let ms = started.elapsed().as_millis();
                            if repair {
                                repair_done(&repairs, &progress, &batch);
                                tracing::info!("ETL: {}: {count} sets rebuilt, generation {generation}, {ms} ms", batch.label);
                            } else if i > 0 {
                                let done = backfill - backfill_left;
                                tracing::info!("ETL: backfill {done}/{backfill} ({}): {count} sets, generation {generation}, {ms} ms", batch.label);
                            } else {
                                tracing::debug!("ETL: {}: {count} sets, generation {generation}, {ms} ms", batch.label);
                            }
                        }
                        Ok(WriteOutcome::Staged { error }) => {
                            // Kept locally and served; the backup catches up on its own.
                            progress.succeeded();
                            if repair {
                                repair_done(&repairs, &progress, &batch);
                            }
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
                progress.update(|p| p.backfill_pending = 0);
            }
            .into_actor(self)
            .map(|(), act, ctx| {
                act.running = false;
                if std::mem::take(&mut act.rerun) {
                    act.run(ctx, None);
                }
            }),
        );
    }
}

/// How progress names a window: `hour 2026-11-20T05:00:00Z`.
fn window_label(res: Resolution, start: DateTime<Utc>) -> String {
    let r = match res {
        Resolution::Hour => "hour",
        Resolution::Day => "day",
    };
    format!(
        "{r} {}",
        start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

/// The batches that rebuild every complete day (and hour within the hourly retention) that
/// overlaps `window`, oldest first.
fn repair_plan(window: Window, now: DateTime<Utc>, cfg: &EtlConfig) -> Vec<Batch> {
    let hourly_from = now - cfg.hourly_retention;
    let ended = now - cfg.settle;
    let mut out = Vec::new();
    // Nothing older than the daily retention is kept, so nothing older is rebuilt.
    let oldest = Resolution::Day
        .window_containing(now - cfg.daily_retention)
        .end;
    let mut d = Resolution::Day.window_containing(window.start.max(oldest));
    while d.start < window.end.min(now) {
        let mut windows = Vec::new();
        if d.end <= ended {
            windows.push((Resolution::Day, d, d.end));
        }
        let mut h = Resolution::Hour.window_containing(d.start.max(window.start));
        while h.start < d.end && h.start < window.end {
            if h.end <= ended && h.end > hourly_from {
                windows.push((Resolution::Hour, h, h.end));
            }
            h = Window::new(h.end, h.end + Resolution::Hour.duration());
        }
        if !windows.is_empty() {
            out.push(Batch {
                label: format!("repair {}", d.start.format("%Y-%m-%d")),
                windows,
            });
        }
        d = Window::new(d.end, d.end + Resolution::Day.duration());
    }
    out
}

impl Handler<Repair> for EtlWriter {
    type Result = Result<usize, RepairRefused>;

    fn handle(&mut self, msg: Repair, ctx: &mut Self::Context) -> Self::Result {
        if self.leading.is_none() {
            return Err(RepairRefused::NotLeader);
        }
        let batches = repair_plan(msg.window, now_ms(), &self.cfg);
        if batches.is_empty() {
            return Err(RepairRefused::Empty);
        }
        let mut queue = self.repairs.lock().expect("repairs lock");
        // A day already queued is not queued twice.
        let batches: Vec<Batch> = batches.into_iter().filter(|b| !queue.contains(b)).collect();
        if queue.len() + batches.len() > MAX_QUEUED_REPAIRS {
            return Err(RepairRefused::Full {
                queued: queue.len(),
            });
        }
        let n = batches.len();
        queue.extend(batches);
        drop(queue);
        tracing::info!(days = n, window = ?msg.window, "ETL: repair queued");
        self.progress.update(|p| p.repairs_pending += n);
        if self.running {
            self.rerun = true;
        } else {
            self.run(ctx, None);
        }
        Ok(n)
    }
}

/// The clock the ETL builds by, to the millisecond: a window still in progress ends its data
/// (and its running allocations) at this time, and the stored form (Parquet, whose times are
/// microseconds) must hold it exactly; Prometheus' own times are milliseconds too.
fn now_ms() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(3)
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
    // Windows count as ended once the source's data for them has settled.
    let ended = now - cfg.settle;
    let complete = |res: Resolution, w: &Window| {
        [SetKind::Allocations, SetKind::Assets]
            .iter()
            .all(|k| snapshot.has_complete(*k, res, w.start))
    };
    // Today is visited too: the hours of today that have ended are complete windows.
    let mut d = day;
    while d.end > now - cfg.backfill {
        let mut windows = Vec::new();
        if d.end <= ended && !complete(Resolution::Day, &d) {
            windows.push((Resolution::Day, d, d.end));
        }
        let mut h = Resolution::Hour.window_containing(d.start);
        while h.start < d.end {
            if h.end <= ended && h.end > hourly_from && !complete(Resolution::Hour, &h) {
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

/// What building a batch gives: its sets, the current hour as read (for the cost metrics),
/// and the windows the source had no data for.
type Built = (Vec<EtlSet>, Option<ClusterWindow>, Vec<String>);

/// Reads a batch's windows from the source and prices them (off the actors' thread). Windows
/// the source has no data for are left out (and named); any error fails the whole batch.
async fn build(
    source: Arc<dyn DataSource>,
    cluster: &str,
    batch: &Batch,
) -> Result<Built, super::source::SourceError> {
    let asked: Vec<(Window, DateTime<Utc>)> =
        batch.windows.iter().map(|(_, w, d)| (*w, *d)).collect();
    let got = source.windows(asked).await?;
    let resolutions: Vec<(Window, Resolution)> =
        batch.windows.iter().map(|(r, w, _)| (*w, *r)).collect();
    // Only complete windows count as gaps: the current ones fill as they go.
    let missing: Vec<String> = batch
        .windows
        .iter()
        .filter(|(_, w, d)| *d >= w.end && !got.iter().any(|cw| cw.window == *w))
        .map(|(r, w, _)| window_label(*r, w.start))
        .collect();
    let cluster = cluster.to_string();
    tokio::task::spawn_blocking(move || {
        let mut sets = Vec::with_capacity(got.len() * 2);
        let mut current = None;
        for cw in got {
            let Some((_, res)) = resolutions.iter().find(|(w, _)| *w == cw.window) else {
                continue;
            };
            let (allocs, assets) = costing::price(&cw, *res, &cluster);
            sets.push(EtlSet::Allocations(allocs));
            sets.push(EtlSet::Assets(assets));
            if *res == Resolution::Hour && current.is_none() {
                current = Some(cw);
            }
        }
        (sets, current, missing)
    })
    .await
    .map_err(|e| super::source::SourceError::Unavailable(format!("pricing failed: {e}")))
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
                                act.metrics.cost.enable();
                                act.progress.update(|p| p.building = true);
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
                // Only the leader exports cost metrics, and only the leader repairs.
                self.metrics.cost.disable();
                self.repairs.lock().expect("repairs lock").clear();
                self.progress.update(|p| {
                    p.building = false;
                    p.repairs_pending = 0;
                    p.backfill_pending = 0;
                });
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
            settle: chrono::Duration::zero(),
            daily_retention: chrono::Duration::days(91),
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
