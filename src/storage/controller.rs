//! The `Storage` actor: the read/write storage controller. It owns the loaded snapshot and the
//! role-dependent locks, and enforces the leader/follower rules:
//!
//! 1. a follower's backup read waits for the poller's next fetch; it never reads the bucket;
//! 2. a follower's write is a counted no-op that touches neither disk nor bucket;
//! 3. `CurrentSnapshot` is answered at once from memory, whatever the bucket is doing;
//! 4. promotion releases every blocked read, reads the bucket once, then enables writes;
//! 5. the leader writes exactly as a single install does;
//! 6. every write carries the term; a publish that finds a higher term fences this writer.
//!
//! All bucket I/O runs in futures spawned off the mailbox, so no message waits on the bucket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use object_store::ObjectStore;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::backup::{self, PublishError, Writer};
use super::filestore::FileStore;
use super::snapshot::Snapshot;
use crate::metrics::{Metrics, ResultLabel};
use crate::model::{EtlSet, Resolution, SetKind};
use crate::role::{Role, RoleChanged};

/// First and longest pause between retries of the promotion read.
const PROMOTION_RETRY: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(15));
/// How often the leader collects garbage in the bucket.
const GC_INTERVAL: Duration = Duration::from_secs(600);

/// What storage needs to run.
#[derive(Clone)]
pub struct StorageConfig {
    /// This replica's identity, written into every manifest.
    pub identity: String,
    /// The bucket (already scoped to its prefix).
    pub bucket: Arc<dyn ObjectStore>,
    /// For status and logs.
    pub bucket_description: String,
    /// The local ETL file store.
    pub local: FileStore,
    /// Hourly sets older than this are dropped from new manifests.
    pub hourly_retention: chrono::Duration,
    /// Daily sets older than this are dropped from new manifests.
    pub daily_retention: chrono::Duration,
    /// Shared metrics.
    pub metrics: Metrics,
    /// Raised to the highest manifest term ever loaded; the election reads it (see
    /// `election::Campaign::term_floor`).
    pub term_floor: Arc<std::sync::atomic::AtomicU64>,
}

/// Answer to [`WriteSets`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Published as this generation.
    Written { generation: u64 },
    /// Not the leader of that term (or writes not yet enabled): nothing was written.
    Dropped,
    /// A writer with a higher term owns the backup; this replica must stop leading.
    Fenced { term: u64 },
    /// The bucket or disk failed; nothing was published. Worth retrying.
    Failed(String),
}

/// Sets built by the ETL, to be written by the leader of `term`.
#[derive(Message)]
#[rtype(result = "WriteOutcome")]
pub struct WriteSets {
    /// The term the sets were built under.
    pub term: u64,
    /// The sets.
    pub sets: Vec<EtlSet>,
}

/// The last loaded snapshot, answered at once.
#[derive(Message)]
#[rtype(result = "Arc<Snapshot>")]
pub struct CurrentSnapshot;

/// A backup read: on a follower it waits for the poller's next fetch of the bucket; on the
/// leader it is answered at once.
#[derive(Message)]
#[rtype(result = "Result<Arc<Snapshot>, NotWritable>")]
pub struct ReadBackup;

/// Asked by the ETL writer after promotion: answered once writes are enabled for `term`, with the
/// snapshot the writer should resume from.
#[derive(Message)]
#[rtype(result = "Result<Arc<Snapshot>, NotWritable>")]
pub struct AwaitWritable {
    /// The term the writer will write under.
    pub term: u64,
}

/// The replica stopped leading (or was stopped) before the request could be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not writable: leadership of this term ended")]
pub struct NotWritable;

/// From the poller: the result of one poll that started at `started`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SnapshotReady {
    /// When the poll started; blocked reads issued before then are answered.
    pub started: Instant,
    /// A newer snapshot, `None` when the bucket had nothing newer, or the error.
    pub result: Result<Option<Arc<Snapshot>>, String>,
}

/// Sent to the subscriber of [`OnFenced`] when a higher term is found in the bucket.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Fenced {
    /// Our term.
    pub term: u64,
    /// The higher term found.
    pub newer_term: u64,
}

/// Subscribes a recipient (the elector) to [`Fenced`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct OnFenced(pub Recipient<Fenced>);

/// Shutdown: writes off, the current write abandoned before its manifest; answered once no
/// write is in flight.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// Asks for [`StorageStatus`].
#[derive(Message)]
#[rtype(result = "StorageStatus")]
pub struct GetStorageStatus;

/// What storage reports to the status endpoints.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageStatus {
    pub role: &'static str,
    pub term: Option<u64>,
    pub writes_enabled: bool,
    pub bucket: String,
    pub etl_dir: String,
    pub snapshot_generation: u64,
    pub snapshot_term: u64,
    pub snapshot_writer: String,
    pub snapshot_updated: Option<DateTime<Utc>>,
    pub last_poll: Option<DateTime<Utc>>,
    pub last_poll_error: Option<String>,
    pub last_write: Option<DateTime<Utc>>,
    pub last_write_error: Option<String>,
    pub follower_writes_dropped: u64,
    pub blocked_reads: usize,
    pub problems: Vec<String>,
    pub coverage: Vec<Coverage>,
}

/// First and last time covered by one kind and resolution of set.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Coverage {
    pub kind: SetKind,
    pub resolution: Resolution,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub sets: usize,
}

/// Where a queued read or writer is answered.
type Reply = oneshot::Sender<Result<Arc<Snapshot>, NotWritable>>;

/// The storage controller actor.
pub struct Storage {
    cfg: StorageConfig,
    role: Role,
    writes_enabled: bool,
    /// Fired by demotion: in-flight writes of the old term stop before their next put.
    cancel: CancellationToken,
    snapshot: Arc<Snapshot>,
    blocked_reads: Vec<(Instant, Reply)>,
    awaiting_writes: Vec<(u64, Reply)>,
    /// Serialises publishes: each builds on the generation the previous one produced.
    write_lock: Arc<tokio::sync::Mutex<()>>,
    fenced: Option<Recipient<Fenced>>,
    last_poll: Option<DateTime<Utc>>,
    last_poll_error: Option<String>,
    last_write: Option<DateTime<Utc>>,
    last_write_error: Option<String>,
    dropped: u64,
    last_gc: Option<Instant>,
}

impl Storage {
    /// A follower with nothing loaded; the elector's first `RoleChanged` sets the real role.
    pub fn new(cfg: StorageConfig) -> Self {
        let cancel = CancellationToken::new();
        cancel.cancel();
        Self {
            cfg,
            role: Role::Follower { leader: None },
            writes_enabled: false,
            cancel,
            snapshot: Arc::new(Snapshot::default()),
            blocked_reads: Vec::new(),
            awaiting_writes: Vec::new(),
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
            fenced: None,
            last_poll: None,
            last_poll_error: None,
            last_write: None,
            last_write_error: None,
            dropped: 0,
            last_gc: None,
        }
    }

    /// Installs `snapshot` if it is newer, or the same generation with fewer objects missing.
    /// `from_bucket` (a follower's poll) also accepts an older generation: the bucket is the
    /// follower's truth, and a replaced bucket restarts its generations.
    fn install(&mut self, snapshot: Arc<Snapshot>, from_bucket: bool) {
        let current = &self.snapshot;
        let better = snapshot.generation > current.generation
            || (snapshot.generation == current.generation
                && snapshot.missing.len() < current.missing.len())
            || (from_bucket && snapshot.generation < current.generation);
        if !better {
            return;
        }
        if snapshot.generation < current.generation {
            tracing::warn!(
                bucket = snapshot.generation,
                loaded = current.generation,
                "the bucket's newest generation is older than the loaded one; following the bucket"
            );
        }
        if !snapshot.problems.is_empty() {
            self.cfg
                .metrics
                .corrupt_objects
                .inc_by(snapshot.problems.len() as u64);
        }
        self.cfg
            .metrics
            .snapshot_generation
            .set(snapshot.generation as i64);
        self.cfg
            .term_floor
            .fetch_max(snapshot.term, std::sync::atomic::Ordering::SeqCst);
        self.snapshot = snapshot;
    }

    fn set_writes(&mut self, enabled: bool) {
        self.writes_enabled = enabled;
        self.cfg.metrics.writes_enabled.set(i64::from(enabled));
    }

    fn demote(&mut self, leader: Option<String>) {
        // Writes go off before anything else, so no write of the old term starts after this.
        self.set_writes(false);
        self.cancel.cancel();
        self.role = Role::Follower { leader };
        for (_, tx) in self.awaiting_writes.drain(..) {
            let _ = tx.send(Err(NotWritable));
        }
    }

    fn promote(&mut self, term: u64, ctx: &mut Context<Self>) {
        self.set_writes(false);
        self.cancel.cancel();
        self.cancel = CancellationToken::new();
        self.role = Role::Leader { term };
        // Promotion drops every lock: blocked reads get what is loaded now.
        for (_, tx) in self.blocked_reads.drain(..) {
            let _ = tx.send(Ok(self.snapshot.clone()));
        }
        let bucket = self.cfg.bucket.clone();
        let cancel = self.cancel.clone();
        let base = self.snapshot.clone();
        let local = self.cfg.local.clone();
        tracing::info!(term, "promoted: reading the bucket before enabling writes");
        let read = async move {
            let mut pause = PROMOTION_RETRY.0;
            loop {
                let attempt = async {
                    match backup::load_latest(bucket.as_ref(), &base).await? {
                        // The bucket is behind this replica's own store (new or replaced
                        // bucket): back the store up into it before writing on top of it.
                        Some(s) if s.generation < base.generation => {
                            let n = backup::seed(bucket.as_ref(), &local, &base).await?;
                            tracing::warn!(
                                bucket = s.generation,
                                local = base.generation,
                                uploaded = n,
                                "bucket was behind the local store; backed it up"
                            );
                            Ok(None)
                        }
                        other => Ok::<_, backup::BackupError>(other),
                    }
                };
                match attempt.await {
                    Ok(s) => return Some(s),
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?pause, "promotion read failed; writes stay off")
                    }
                }
                tokio::select! {
                    () = cancel.cancelled() => return None,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(PROMOTION_RETRY.1);
            }
        };
        let cancel = self.cancel.clone();
        ctx.spawn(read.into_actor(self).map(move |loaded, act, _| {
            let Some(loaded) = loaded else { return };
            if cancel.is_cancelled() || act.role != (Role::Leader { term }) {
                return;
            }
            if let Some(s) = loaded {
                act.install(Arc::new(s), false);
            }
            if act.snapshot.term > term {
                act.fence(term, act.snapshot.term);
                return;
            }
            act.set_writes(true);
            tracing::info!(term, generation = act.snapshot.generation, "writes enabled");
            let snapshot = act.snapshot.clone();
            for (t, tx) in std::mem::take(&mut act.awaiting_writes) {
                let _ = tx.send(if t == term {
                    Ok(snapshot.clone())
                } else {
                    Err(NotWritable)
                });
            }
        }));
    }

    fn fence(&mut self, term: u64, newer_term: u64) {
        tracing::error!(
            term,
            newer_term,
            "fenced: a writer with a higher term owns the backup; writes off"
        );
        self.set_writes(false);
        self.cancel.cancel();
        for (_, tx) in self.awaiting_writes.drain(..) {
            let _ = tx.send(Err(NotWritable));
        }
        if let Some(r) = &self.fenced {
            r.do_send(Fenced { term, newer_term });
        }
    }

    fn maybe_collect_garbage(&mut self, ctx: &mut Context<Self>) {
        if self.last_gc.is_some_and(|t| t.elapsed() < GC_INTERVAL) {
            return;
        }
        self.last_gc = Some(Instant::now());
        let bucket = self.cfg.bucket.clone();
        let newest = self.snapshot.generation;
        let cancel = self.cancel.clone();
        let local = self.cfg.local.clone();
        let keep: std::collections::BTreeSet<String> =
            self.snapshot.files.keys().cloned().collect();
        ctx.spawn(
            async move {
                if cancel.is_cancelled() {
                    return;
                }
                match backup::collect_garbage(bucket.as_ref(), newest, Utc::now()).await {
                    Ok(n) if n > 0 => tracing::info!(deleted = n, "bucket garbage collected"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "bucket garbage collection failed"),
                }
                let kept_from = newest.saturating_sub(10);
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || {
                    local.retain(&keep, kept_from, backup::GC_GRACE)
                })
                .await
                {
                    tracing::warn!(error = %e, "local file store clean-up failed");
                }
            }
            .into_actor(self),
        );
    }

    fn status(&self) -> StorageStatus {
        let mut coverage = Vec::new();
        for kind in [SetKind::Allocations, SetKind::Assets] {
            for res in Resolution::ALL {
                if let Some((start, end, sets)) = self.snapshot.coverage(kind, res) {
                    coverage.push(Coverage {
                        kind,
                        resolution: res,
                        start,
                        end,
                        sets,
                    });
                }
            }
        }
        StorageStatus {
            role: self.role.as_str(),
            term: self.role.term(),
            writes_enabled: self.writes_enabled,
            bucket: self.cfg.bucket_description.clone(),
            etl_dir: self.cfg.local.root().display().to_string(),
            snapshot_generation: self.snapshot.generation,
            snapshot_term: self.snapshot.term,
            snapshot_writer: self.snapshot.writer.clone(),
            snapshot_updated: self.snapshot.updated,
            last_poll: self.last_poll,
            last_poll_error: self.last_poll_error.clone(),
            last_write: self.last_write,
            last_write_error: self.last_write_error.clone(),
            follower_writes_dropped: self.dropped,
            blocked_reads: self.blocked_reads.len(),
            problems: self.snapshot.problems.clone(),
            coverage,
        }
    }
}

impl Actor for Storage {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Serve what the local file store holds while the bucket is read: a restart answers
        // queries at once, and a bucket outage at start does not leave the replica empty.
        let local = self.cfg.local.clone();
        ctx.spawn(
            async move { tokio::task::spawn_blocking(move || backup::load_local(&local)).await }
                .into_actor(self)
                .map(|res, act, _| match res {
                    Ok(Ok(Some(s))) => {
                        tracing::info!(
                            generation = s.generation,
                            problems = s.problems.len(),
                            "loaded the local file store"
                        );
                        act.install(Arc::new(s), false);
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "could not load the local file store"),
                    Err(e) => tracing::warn!(error = %e, "local load task failed"),
                }),
        );
    }
}

impl Handler<RoleChanged> for Storage {
    type Result = ();

    fn handle(&mut self, msg: RoleChanged, ctx: &mut Self::Context) {
        match msg.role {
            Role::Leader { term } => {
                if self.role != (Role::Leader { term }) {
                    self.promote(term, ctx);
                }
            }
            Role::Follower { leader } => {
                let was_leader = matches!(self.role, Role::Leader { .. });
                self.demote(leader);
                if was_leader {
                    tracing::info!("demoted: writes off, following the bucket");
                }
            }
        }
    }
}

impl Handler<SnapshotReady> for Storage {
    type Result = ();

    fn handle(&mut self, msg: SnapshotReady, _: &mut Self::Context) {
        self.last_poll = Some(Utc::now());
        match msg.result {
            Ok(snapshot) => {
                self.last_poll_error = None;
                // A poll that finishes after promotion is stale: the leader reads for itself.
                if let (Some(s), Role::Follower { .. }) = (snapshot, &self.role) {
                    self.install(s, true);
                }
            }
            Err(e) => self.last_poll_error = Some(e),
        }
        let snapshot = self.snapshot.clone();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.blocked_reads)
            .into_iter()
            .partition(|(issued, _)| *issued <= msg.started);
        self.blocked_reads = waiting;
        for (_, tx) in ready {
            let _ = tx.send(Ok(snapshot.clone()));
        }
    }
}

impl Handler<CurrentSnapshot> for Storage {
    type Result = MessageResult<CurrentSnapshot>;

    fn handle(&mut self, _: CurrentSnapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.snapshot.clone())
    }
}

impl Handler<ReadBackup> for Storage {
    type Result = ResponseFuture<Result<Arc<Snapshot>, NotWritable>>;

    fn handle(&mut self, _: ReadBackup, _: &mut Self::Context) -> Self::Result {
        if matches!(self.role, Role::Leader { .. }) {
            let s = self.snapshot.clone();
            return Box::pin(async move { Ok(s) });
        }
        let (tx, rx) = oneshot::channel();
        self.blocked_reads.push((Instant::now(), tx));
        Box::pin(async move { rx.await.unwrap_or(Err(NotWritable)) })
    }
}

impl Handler<AwaitWritable> for Storage {
    type Result = ResponseFuture<Result<Arc<Snapshot>, NotWritable>>;

    fn handle(&mut self, msg: AwaitWritable, _: &mut Self::Context) -> Self::Result {
        match (&self.role, self.writes_enabled) {
            (Role::Leader { term }, true) if *term == msg.term => {
                let s = self.snapshot.clone();
                Box::pin(async move { Ok(s) })
            }
            (Role::Leader { term }, false) if *term == msg.term && !self.cancel.is_cancelled() => {
                let (tx, rx) = oneshot::channel();
                self.awaiting_writes.push((msg.term, tx));
                Box::pin(async move { rx.await.unwrap_or(Err(NotWritable)) })
            }
            _ => Box::pin(async { Err(NotWritable) }),
        }
    }
}

impl Handler<WriteSets> for Storage {
    type Result = ResponseActFuture<Self, WriteOutcome>;

    fn handle(&mut self, msg: WriteSets, _: &mut Self::Context) -> Self::Result {
        let writable = self.writes_enabled && self.role == (Role::Leader { term: msg.term });
        if !writable {
            if matches!(self.role, Role::Follower { .. }) {
                self.dropped += 1;
                self.cfg.metrics.follower_writes_dropped.inc();
            }
            self.cfg
                .metrics
                .writes
                .get_or_create(&ResultLabel::of("dropped"))
                .inc();
            return Box::pin(fut::ready(WriteOutcome::Dropped));
        }
        let term = msg.term;
        let cancel = self.cancel.clone();
        let lock = self.write_lock.clone();
        Box::pin(
            async move { lock.lock_owned().await }
                .into_actor(self)
                .then(move |guard, act, _| {
                    // Read the base only once the previous publish has been installed.
                    let base = act.snapshot.clone();
                    let cfg = act.cfg.clone();
                    async move {
                        let writer = Writer {
                            identity: &cfg.identity,
                            term,
                            cancel: &cancel,
                            hourly_retention: cfg.hourly_retention,
                            daily_retention: cfg.daily_retention,
                        };
                        let res = backup::publish(
                            cfg.bucket.as_ref(),
                            &cfg.local,
                            base,
                            &writer,
                            msg.sets,
                            Utc::now(),
                        )
                        .await;
                        drop(guard);
                        res
                    }
                    .into_actor(act)
                })
                .map(move |res, act, ctx| {
                    let label = match &res {
                        Ok(_) => "ok",
                        Err(PublishError::Fenced { .. }) => "fenced",
                        Err(PublishError::Cancelled) => "cancelled",
                        Err(_) => "error",
                    };
                    act.cfg
                        .metrics
                        .writes
                        .get_or_create(&ResultLabel::of(label))
                        .inc();
                    match res {
                        Ok(snapshot) => {
                            let generation = snapshot.generation;
                            act.install(Arc::new(snapshot), false);
                            act.last_write = Some(Utc::now());
                            act.last_write_error = None;
                            act.maybe_collect_garbage(ctx);
                            WriteOutcome::Written { generation }
                        }
                        Err(PublishError::Fenced { term: newer, .. }) => {
                            act.fence(term, newer);
                            WriteOutcome::Fenced { term: newer }
                        }
                        Err(PublishError::Cancelled) => WriteOutcome::Dropped,
                        Err(e) => {
                            tracing::warn!(error = %e, "backup write failed");
                            act.last_write_error = Some(e.to_string());
                            WriteOutcome::Failed(e.to_string())
                        }
                    }
                }),
        )
    }
}

impl Handler<OnFenced> for Storage {
    type Result = ();

    fn handle(&mut self, msg: OnFenced, _: &mut Self::Context) {
        self.fenced = Some(msg.0);
    }
}

impl Handler<GetStorageStatus> for Storage {
    type Result = MessageResult<GetStorageStatus>;

    fn handle(&mut self, _: GetStorageStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.status())
    }
}

impl Handler<Drain> for Storage {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _: &mut Self::Context) -> Self::Result {
        self.set_writes(false);
        self.cancel.cancel();
        let lock = self.write_lock.clone();
        Box::pin(async move {
            let _idle = lock.lock().await;
        })
    }
}
