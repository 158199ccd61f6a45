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
//! (Rule 2 is about the ETL's writes: every replica, followers too, writes its own small
//! heartbeat into the bucket for the group view, never a set or a manifest.)
//!
//! It also decides whether the replica can answer queries (readiness) and why not: a follower
//! serves only what the bucket vouches for (its local store is a cache the bucket must confirm,
//! object by object), a leader serves its own store, and a snapshot whose every set failed to
//! load serves nothing.
//!
//! All bucket I/O runs in futures spawned off the mailbox, so no message waits on the bucket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use object_store::ObjectStore;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::backup::{
    self, Backed, Backoff, BackupError, Loaded, PublishError, Read, Scrub, UnreadableManifest,
    Writer,
};
use super::filestore::FileStore;
use super::group;
use super::readiness::{EtlDirError, HeldBack, NotReady};
use super::snapshot::{Origin, Snapshot};
use crate::metrics::{Metrics, ResultLabel};
use crate::model::{EtlSet, Resolution, SetKind};
use crate::role::{BucketTerm, Fenced, Role, RoleChanged};
use crate::supervise::Lifeline;

/// First and longest pause between retries of a backup that failed (the promotion's included).
const BACKUP_RETRY: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(60));
/// How often garbage is collected: the leader's bucket and local store, a follower's store.
const GC_INTERVAL: Duration = Duration::from_secs(600);
/// The shortest gap between two collections run because a write failed (the bucket may be
/// full of garbage).
const GC_AFTER_ERROR: Duration = Duration::from_secs(60);

/// Why garbage is collected: each cause is rate-limited on its own, so a failing write is never
/// kept from collecting by a recent scheduled run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GcCause {
    /// The schedule (and after a successful write): at most every [`GC_INTERVAL`].
    Schedule,
    /// A failed write (a full bucket?): at most every [`GC_AFTER_ERROR`].
    FailedWrite,
    /// Asked for by a test: at once.
    #[cfg(feature = "test-support")]
    Asked,
}
/// How many objects each scrub reads and hashes, round robin: at 90 days and the default
/// `--scrub-interval` (5 minutes) the whole bucket is read about every 90 minutes.
const SCRUB_DEEP: usize = 16;

/// What storage needs to run.
#[derive(Clone)]
pub struct StorageConfig {
    /// This replica's identity, written into every manifest.
    pub identity: String,
    /// The cluster id, written into every manifest.
    pub cluster_id: String,
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
    /// When objects that failed to load are fetched again.
    pub backoff: Backoff,
    /// Garbage younger than this is never collected.
    pub gc_grace: Duration,
    /// How often this replica writes its heartbeat and reads the group's.
    pub heartbeat: Duration,
    /// How often the leader scrubs the bucket.
    pub scrub_interval: Duration,
    /// Shared metrics.
    pub metrics: Metrics,
}

/// Answer to [`WriteSets`].
#[derive(Debug, Clone)]
pub enum WriteOutcome {
    /// Published as this generation.
    Written {
        /// The new generation.
        generation: u64,
    },
    /// Not the leader of that term (or writes not yet enabled): nothing was written.
    Dropped,
    /// A writer with a higher term owns the backup; this replica must stop leading.
    Fenced {
        /// The higher term.
        term: u64,
    },
    /// Kept in the local store and served, but not yet in the bucket (which failed): the
    /// backup retries with backoff and catches up.
    Staged {
        /// Why the backup failed.
        error: PublishError,
    },
    /// The local store failed (or the writer must stop): nothing was kept.
    Failed(PublishError),
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

/// The snapshot queries are answered from, or why this replica cannot answer any (the same
/// reason `/readyz` gives). Answered at once.
#[derive(Message)]
#[rtype(result = "Result<Arc<Snapshot>, NotReady>")]
pub struct ServingSnapshot;

/// The snapshot the next poll builds on: the one being served, or, on a replica that serves
/// nothing yet, its local store (so a restart fetches only what the local store lacks, once the
/// bucket's manifest vouches for the rest).
#[derive(Message)]
#[rtype(result = "Arc<Snapshot>")]
pub struct PollBase;

/// A backup read (storage rule 1 above): on a follower it waits for the poller's next fetch of the
/// bucket; on the leader it is answered at once. Only the storage-rule tests issue it.
#[cfg(feature = "test-support")]
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
    /// What the bucket held, or why it could not be read.
    pub result: Result<Read, BackupError>,
}

/// Where storage reports to the election: [`Fenced`] when a higher term owns the bucket, and
/// [`BucketTerm`] when it loads a higher term than ever before.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ElectionEvents {
    /// Told to stop leading.
    pub fenced: Recipient<Fenced>,
    /// Told of the highest term in the bucket.
    pub bucket_term: Recipient<BucketTerm>,
}

/// Shutdown: writes off, the current write abandoned before its manifest; answered once no
/// write is in flight.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// Runs a scrub of the bucket now (leader only), whatever the schedule: tests use it to decide
/// when the leader looks for damage.
#[cfg(feature = "test-support")]
#[derive(Message)]
#[rtype(result = "()")]
pub struct ScrubNow;

/// Collects garbage now, whatever the schedule (tests).
#[cfg(feature = "test-support")]
#[derive(Message)]
#[rtype(result = "()")]
pub struct CollectGarbageNow;

/// Asks for [`StorageStatus`].
#[derive(Message)]
#[rtype(result = "StorageStatus")]
pub struct GetStorageStatus;

/// What storage reports to the status endpoints.
#[derive(Clone, Debug)]
pub struct StorageStatus {
    /// `leader` or `follower`.
    pub role: &'static str,
    /// The term when leading.
    pub term: Option<u64>,
    /// Whether backup writes are enabled.
    pub writes_enabled: bool,
    /// The bucket, as configured.
    pub bucket: String,
    /// The local file store's folder.
    pub etl_dir: String,
    /// The served generation (0: none).
    pub snapshot_generation: u64,
    /// Its writer's term.
    pub snapshot_term: u64,
    /// Its writer.
    pub snapshot_writer: String,
    /// When it was published.
    pub snapshot_updated: Option<DateTime<Utc>>,
    /// The generation of the local file store, once read (`None`: empty or not read yet).
    pub local_generation: Option<u64>,
    /// When the last poll finished.
    pub last_poll: Option<DateTime<Utc>>,
    /// Why the last poll failed.
    pub last_poll_error: Option<BackupError>,
    /// Whether the last poll found no backup at all in the bucket.
    pub bucket_empty: bool,
    /// When the last write was published.
    pub last_write: Option<DateTime<Utc>>,
    /// Why the last write failed.
    pub last_write_error: Option<PublishError>,
    /// Why the leader's first backup after promotion (reading the bucket, merging it with the
    /// local store) is failing; the leader builds into its local store meanwhile.
    pub promotion_error: Option<PublishError>,
    /// When the lineage was last backed up to the bucket.
    pub last_backup: Option<DateTime<Utc>>,
    /// Why the last backup failed.
    pub last_backup_error: Option<PublishError>,
    /// Sets built but not yet in the bucket.
    pub pending_sets: usize,
    /// Seconds since the oldest set not yet in the bucket was built (`None`: nothing pending).
    pub backup_lag_seconds: Option<f64>,
    /// Another writer under this replica's term: writes stopped.
    pub foreign_writer: Option<PublishError>,
    /// Manifests above the newest readable one that do not parse.
    pub unreadable_manifests: Vec<UnreadableManifest>,
    /// The last scrub of the bucket, and what it found.
    pub last_scrub: Option<(DateTime<Utc>, Scrub)>,
    /// A generation written under this term by another identity that was merged (writer,
    /// generation): usually this replica under an older name.
    pub merged_same_term: Option<(String, u64)>,
    /// The group's heartbeats as last read, this replica's included.
    pub group: Vec<group::Heartbeat>,
    /// Why the group could not be read or this replica's heartbeat written, last time.
    pub group_error: Option<BackupError>,
    /// Why the local file store cannot be written, found at start.
    pub etl_dir_error: Option<EtlDirError>,
    /// Writes dropped because this replica follows.
    pub follower_writes_dropped: u64,
    /// Backup reads waiting for the next poll.
    pub blocked_reads: usize,
    /// Sets the served manifest names that could not be loaded.
    pub missing: Vec<MissingObject>,
    /// First and last time covered per kind and resolution.
    pub coverage: Vec<Coverage>,
    /// Why this replica cannot answer queries; `None` when it can.
    pub not_ready: Option<NotReady>,
}

/// A set the manifest names that this replica could not load, for status.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MissingObject {
    /// The object's path in the bucket.
    pub path: String,
    /// Allocations or assets.
    pub kind: SetKind,
    /// `1h` or `1d`.
    pub resolution: Resolution,
    /// The set's window.
    pub start: DateTime<Utc>,
    /// Its end.
    pub end: DateTime<Utc>,
    /// Why it could not be loaded.
    pub problem: String,
    /// Failed attempts in a row.
    pub failures: u32,
    /// Seconds until it is fetched again (0: at the next poll).
    pub retry_in_seconds: u64,
}

/// First and last time covered by one kind and resolution of set.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Coverage {
    /// Allocations or assets.
    pub kind: SetKind,
    /// `1h` or `1d`.
    pub resolution: Resolution,
    /// Start of the first set.
    pub start: DateTime<Utc>,
    /// How far the last set's data reaches.
    pub end: DateTime<Utc>,
    /// How many sets.
    pub sets: usize,
    /// Stretches between the first and the last set that no set covers.
    pub gaps: Vec<crate::model::Window>,
}

/// Where a queued read or writer is answered.
type Reply = oneshot::Sender<Result<Arc<Snapshot>, NotWritable>>;

/// The local file store's newest generation, read once at start (`None`: empty or unreadable).
type LocalLoad = Shared<BoxFuture<'static, Option<Arc<Snapshot>>>>;

/// The storage controller actor.
pub struct Storage {
    cfg: StorageConfig,
    role: Role,
    writes_enabled: bool,
    /// Fired by demotion: in-flight writes of the old term stop before their next put.
    cancel: CancellationToken,
    /// What queries are answered from.
    snapshot: Arc<Snapshot>,
    /// The local file store as read at start; served by a leader at once, by a follower only as
    /// the base the bucket's manifest vouches for.
    local: LocalLoad,
    local_generation: Option<u64>,
    blocked_reads: Vec<(Instant, Reply)>,
    awaiting_writes: Vec<(u64, Reply)>,
    /// Serialises publishes: each builds on the generation the previous one produced.
    write_lock: Arc<tokio::sync::Mutex<()>>,
    election: Option<ElectionEvents>,
    /// The highest manifest term ever loaded.
    max_term: u64,
    last_poll: Option<DateTime<Utc>>,
    last_poll_error: Option<BackupError>,
    bucket_empty: bool,
    last_write: Option<DateTime<Utc>>,
    last_write_error: Option<PublishError>,
    promotion_error: Option<PublishError>,
    last_backup: Option<DateTime<Utc>>,
    last_backup_error: Option<PublishError>,
    /// The pause before the next retry of a failed backup.
    backup_pause: Duration,
    /// Promotions so far: a backup belongs to the promotion it was started under, so one
    /// cancelled by a demotion is never taken for the backup of a later promotion to the same
    /// term (the campaign can miss its renew deadline and take its own Lease back).
    promotions: u64,
    /// The backup running or queued, if one is: its term and promotion.
    backup_in_flight: Option<(u64, u64)>,
    /// The backup retry scheduled, if one is: its term and promotion.
    backup_retry_scheduled: Option<(u64, u64)>,
    /// Whether a backup has reconciled the lineage with the bucket since this promotion.
    reconciled: bool,
    /// Whether the local store read at promotion is this replica's own, so it may serve it
    /// before the bucket is read.
    trusted_local: bool,
    /// Whether what it serves rests on what the bucket vouched for: a follower's last poll (kept
    /// through a promotion until the bucket is read), or a leader's lineage reconciled with the
    /// bucket since promotion, with what it built on it since (kept through a demotion until
    /// the next poll). Either may be served while the bucket cannot be read; a local store the
    /// bucket never confirmed may not, once demoted.
    vouched_base: bool,
    /// A generation under this term by another identity that was merged, for status.
    merged_same_term: Option<(String, u64)>,
    group: Vec<group::Heartbeat>,
    group_error: Option<BackupError>,
    foreign_writer: Option<PublishError>,
    unreadable: Vec<UnreadableManifest>,
    last_scrub: Option<(DateTime<Utc>, Scrub)>,
    scrub_cursor: usize,
    etl_dir_error: Option<EtlDirError>,
    dropped: u64,
    last_gc: Option<Instant>,
    last_gc_after_error: Option<Instant>,
    _lifeline: Lifeline,
}

impl Storage {
    /// A follower with nothing loaded; the elector's first `RoleChanged` sets the real role.
    pub fn new(cfg: StorageConfig, lifeline: Lifeline) -> Self {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let store = cfg.local.clone();
        let local = async move {
            let load = move || {
                match store.remove_temp_files() {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(files = n, "removed temporary files an interrupted write left"),
                    Err(e) => tracing::warn!(error = %e, "could not clean temporary files from the local store"),
                }
                backup::load_local(&store)
            };
            match tokio::task::spawn_blocking(load).await {
                Ok(Ok(s)) => s.map(Arc::new),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not read the local file store; starting without it");
                    None
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading the local file store failed");
                    None
                }
            }
        }
        .boxed()
        .shared();
        Self {
            cfg,
            role: Role::Follower { leader: None },
            writes_enabled: false,
            cancel,
            snapshot: Arc::new(Snapshot::default()),
            local,
            local_generation: None,
            blocked_reads: Vec::new(),
            awaiting_writes: Vec::new(),
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
            election: None,
            max_term: 0,
            last_poll: None,
            last_poll_error: None,
            bucket_empty: false,
            last_write: None,
            last_write_error: None,
            promotion_error: None,
            last_backup: None,
            last_backup_error: None,
            backup_pause: BACKUP_RETRY.0,
            promotions: 0,
            backup_in_flight: None,
            backup_retry_scheduled: None,
            reconciled: false,
            trusted_local: false,
            vouched_base: false,
            merged_same_term: None,
            group: Vec::new(),
            group_error: None,
            foreign_writer: None,
            unreadable: Vec::new(),
            last_scrub: None,
            scrub_cursor: 0,
            etl_dir_error: None,
            dropped: 0,
            last_gc: None,
            last_gc_after_error: None,
            _lifeline: lifeline,
        }
    }

    /// Installs `snapshot` if it is newer than the served one, or the same generation with fewer
    /// sets missing. `force` installs it whatever it is: a follower's poll (the bucket is the
    /// follower's truth, a replaced bucket restarts its generations, and a reload of the same
    /// generation carries the retry state of the objects that still fail), and the leader's own
    /// lineage after a write or a backup.
    fn install(&mut self, snapshot: Arc<Snapshot>, force: bool) {
        let current = &self.snapshot;
        let same = snapshot.generation == current.generation;
        let better = force
            || snapshot.generation > current.generation
            || (same && snapshot.missing.len() < current.missing.len())
            || (same && current.origin == Origin::Local && snapshot.origin == Origin::Bucket);
        if !better {
            return;
        }
        if snapshot.generation < current.generation && snapshot.vouched() {
            tracing::warn!(
                bucket = snapshot.generation,
                loaded = current.generation,
                "the bucket's newest generation is older than the loaded one; following the bucket"
            );
        }
        // Count each failed attempt once: a carried entry whose failures did not grow was
        // already counted.
        let new_failures: u64 = snapshot
            .missing
            .iter()
            .map(|(p, m)| {
                let before = current.missing.get(p).map_or(0, |c| c.failures);
                u64::from(m.failures.saturating_sub(before))
            })
            .sum();
        self.cfg.metrics.object_load_failures.inc_by(new_failures);
        self.cfg
            .metrics
            .unavailable_sets
            .set(snapshot.missing.len() as i64);
        self.cfg
            .metrics
            .snapshot_generation
            .set(snapshot.generation as i64);
        if snapshot.term > self.max_term {
            self.max_term = snapshot.term;
            if let Some(e) = &self.election {
                e.bucket_term.do_send(BucketTerm {
                    term: snapshot.term,
                });
            }
        }
        self.snapshot = snapshot;
    }

    fn set_writes(&mut self, enabled: bool) {
        self.writes_enabled = enabled;
        self.cfg.metrics.writes_enabled.set(i64::from(enabled));
    }

    /// Writes off and the current term's work cancelled; whoever awaits writes is told no.
    fn writes_off(&mut self) {
        self.set_writes(false);
        self.cancel.cancel();
        for (_, tx) in self.awaiting_writes.drain(..) {
            let _ = tx.send(Err(NotWritable));
        }
    }

    fn demote(&mut self, leader: Option<String>) {
        // Writes go off before anything else, so no write of the old term starts after this.
        self.writes_off();
        self.role = Role::Follower { leader };
        self.promotion_error = None;
        self.reconciled = false;
    }

    fn promote(&mut self, term: u64, ctx: &mut Context<Self>) {
        self.set_writes(false);
        self.cancel.cancel();
        self.cancel = CancellationToken::new();
        self.promotions += 1;
        self.role = Role::Leader { term };
        // Promotion drops every lock: blocked reads get what is loaded now.
        for (_, tx) in self.blocked_reads.drain(..) {
            let _ = tx.send(Ok(self.snapshot.clone()));
        }
        tracing::info!(
            term,
            "promoted: reconciling the bucket and the local store before writing"
        );
        self.promotion_error = None;
        self.reconciled = false;
        self.trusted_local = false;
        self.vouched_base = self.snapshot.is_loaded() && self.snapshot.vouched();
        self.backup_pause = BACKUP_RETRY.0;
        // The leader's own store is its to serve: install it (once read) before the bucket
        // read, so a leader whose bucket is down still answers from what it wrote. What it
        // staged while it led before (and may have been hidden since by a follower's polls) is
        // adopted into what it serves, pending, so this promotion backs it up.
        let cancel = self.cancel.clone();
        ctx.spawn(
            self.local
                .clone()
                .into_actor(self)
                .map(move |local, act, ctx| {
                    if cancel.is_cancelled() || act.role != (Role::Leader { term }) {
                        return;
                    }
                    if let Some(local) = local {
                        act.trusted_local = local.is_loaded() && local.writer == act.cfg.identity;
                        if !act.snapshot.is_loaded() {
                            act.install(local, true);
                        } else if !local.pending.is_empty() {
                            let cancel = CancellationToken::new();
                            let w = Self::writer(&act.cfg, term, &cancel);
                            let adopted =
                                backup::adopt_local(&act.snapshot, &local, &w, Utc::now());
                            act.install(Arc::new(adopted), true);
                        }
                    }
                    act.run_backup(term, true, ctx);
                }),
        );
    }

    fn writer<'a>(cfg: &'a StorageConfig, term: u64, cancel: &'a CancellationToken) -> Writer<'a> {
        Writer {
            identity: &cfg.identity,
            cluster: &cfg.cluster_id,
            term,
            cancel,
            hourly_retention: cfg.hourly_retention,
            daily_retention: cfg.daily_retention,
            backoff: cfg.backoff,
        }
    }

    /// Backs the lineage up (one at a time, after any write in progress). The promotion's backup
    /// is the reconciliation of the bucket and the local store, set by set; writes are enabled
    /// after it, or after its first failure: the leader then builds into its local store and the
    /// backup retries with backoff until the bucket takes it.
    fn run_backup(&mut self, term: u64, promotion: bool, ctx: &mut Context<Self>) {
        let key = (term, self.promotions);
        if self.backup_in_flight == Some(key) || self.foreign_writer.is_some() {
            return;
        }
        self.backup_in_flight = Some(key);
        let lock = self.write_lock.clone();
        let cancel = self.cancel.clone();
        ctx.spawn(
            async move { lock.lock_owned().await }
                .into_actor(self)
                .then(move |guard, act, _| {
                    let head = act.snapshot.clone();
                    let cfg = act.cfg.clone();
                    async move {
                        let writer = Self::writer(&cfg, term, &cancel);
                        let res = backup::backup(
                            cfg.bucket.as_ref(),
                            &cfg.local,
                            head,
                            &writer,
                            Utc::now(),
                        )
                        .await;
                        drop(guard);
                        res
                    }
                    .into_actor(act)
                })
                .map(move |res, act, ctx| {
                    if act.backup_in_flight == Some(key) {
                        act.backup_in_flight = None;
                    }
                    // A later promotion (even to this term) runs a backup of its own.
                    if act.role != (Role::Leader { term }) || act.promotions != key.1 {
                        return;
                    }
                    act.after_backup(term, res, promotion, ctx);
                }),
        );
    }

    /// What a backup's outcome changes: the lineage installed, errors recorded, a retry, the
    /// promotion's writes enabled, a fence or a foreign writer stopped.
    fn after_backup(
        &mut self,
        term: u64,
        res: Result<Backed, PublishError>,
        promotion: bool,
        ctx: &mut Context<Self>,
    ) {
        let label = match &res {
            Ok(b) if b.published => "ok",
            Ok(_) => "unchanged",
            Err(e) => e.label(),
        };
        self.cfg
            .metrics
            .backups
            .get_or_create(&ResultLabel::of(label))
            .inc();
        match res {
            Ok(b) => {
                let recovered = self.last_backup_error.is_some() || self.promotion_error.is_some();
                if b.uploaded > 0 {
                    tracing::info!(
                        uploaded = b.uploaded,
                        generation = b.snapshot.generation,
                        "backed up objects the bucket lacked"
                    );
                }
                self.unreadable = b.unreadable;
                if let Some((writer, generation)) = &b.merged_same_term {
                    tracing::warn!(%writer, generation, "merged a generation of another identity under this term");
                    self.merged_same_term = b.merged_same_term.clone();
                }
                self.reconciled = true;
                self.vouched_base = true;
                self.install(Arc::new(b.snapshot), true);
                self.last_backup = Some(Utc::now());
                self.last_backup_error = None;
                self.promotion_error = None;
                self.backup_pause = BACKUP_RETRY.0;
                if promotion || !self.writes_enabled {
                    self.enable_writes(term);
                }
                // After an outage, check what the bucket lost meanwhile.
                if recovered {
                    self.run_scrub(ctx);
                }
            }
            Err(PublishError::Fenced { term: newer, .. }) => self.fence(term, newer),
            Err(e @ PublishError::ForeignWriter { .. }) => self.stop_foreign(e),
            Err(PublishError::Cancelled) => {}
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?self.backup_pause, pending = self.snapshot.pending.len(),
                    "backup failed; the sets stay in the local store and are served, the backup retries");
                if promotion {
                    self.promotion_error = Some(e.clone());
                }
                self.last_backup_error = Some(e);
                if promotion || !self.writes_enabled {
                    // Build into the local store meanwhile: the backup merges and catches up.
                    self.enable_writes(term);
                }
                self.schedule_backup(term, ctx);
                self.collect_garbage(ctx, GcCause::FailedWrite);
            }
        }
    }

    /// Retries the backup after the current pause, doubling it for the next time.
    fn schedule_backup(&mut self, term: u64, ctx: &mut Context<Self>) {
        let key = (term, self.promotions);
        if self.backup_retry_scheduled == Some(key) {
            return;
        }
        self.backup_retry_scheduled = Some(key);
        let pause = self.backup_pause;
        self.backup_pause = (pause * 2).min(BACKUP_RETRY.1);
        ctx.run_later(pause, move |act, ctx| {
            if act.backup_retry_scheduled == Some(key) {
                act.backup_retry_scheduled = None;
            }
            if act.role == (Role::Leader { term })
                && act.promotions == key.1
                && !act.cancel.is_cancelled()
            {
                act.run_backup(term, false, ctx);
            }
        });
    }

    /// Another writer shares the bucket under this replica's term: stop writing, loudly, and
    /// keep serving what is loaded.
    fn stop_foreign(&mut self, e: PublishError) {
        tracing::error!(error = %e, "writes stopped: give each cluster its own bucket or prefix, and run one standalone writer per bucket");
        self.writes_off();
        self.foreign_writer = Some(e);
    }

    /// Scrubs the bucket against the lineage (leader only, one at a time with writes), repairs
    /// what it can, marks what is lost, and republishes a manifest the bucket lost.
    fn run_scrub(&mut self, ctx: &mut Context<Self>) {
        let Role::Leader { term } = self.role else {
            return;
        };
        if !self.writes_enabled || self.foreign_writer.is_some() || !self.snapshot.is_loaded() {
            return;
        }
        let lock = self.write_lock.clone();
        let cfg = self.cfg.clone();
        ctx.spawn(
            async move { lock.lock_owned().await }
                .into_actor(self)
                .then(move |guard, act, _| {
                    let head = act.snapshot.clone();
                    let mut cursor = act.scrub_cursor;
                    async move {
                        let r = backup::scrub(
                            cfg.bucket.as_ref(),
                            &cfg.local,
                            &head,
                            SCRUB_DEEP,
                            &mut cursor,
                        )
                        .await;
                        drop(guard);
                        (r, cursor)
                    }
                    .into_actor(act)
                })
                .map(move |(res, cursor), act, ctx| {
                    act.scrub_cursor = cursor;
                    if act.role != (Role::Leader { term }) {
                        return;
                    }
                    match res {
                        Ok(scrubbed) => {
                            let backup::Scrubbed {
                                report,
                                recovered,
                                replaced,
                            } = scrubbed;
                            let relink = !replaced.is_empty();
                            if !recovered.is_empty() || relink {
                                let mut s = (*act.snapshot).clone();
                                for (path, entry, set) in recovered {
                                    if s.missing.remove(&path).is_some() {
                                        s.files.insert(path, (entry, set));
                                    }
                                }
                                for (old, new, entry, set) in replaced {
                                    if s.files.remove(&old).is_some() {
                                        s.files.insert(new.clone(), (entry, set));
                                        s.pending.insert(new);
                                        s.staged_at.get_or_insert_with(Utc::now);
                                    }
                                }
                                s.rebuild_index();
                                act.install(Arc::new(s), true);
                            }
                            act.cfg.metrics.scrub_repairs.inc_by(report.repaired as u64);
                            if report.repaired > 0
                                || !report.lost.is_empty()
                                || report.manifest_behind
                            {
                                tracing::warn!(
                                    absent = report.absent,
                                    damaged = report.damaged,
                                    repaired = report.repaired,
                                    lost = report.lost.len(),
                                    manifest_behind = report.manifest_behind,
                                    "scrub repaired the bucket"
                                );
                            }
                            if relink {
                                act.run_backup(term, false, ctx);
                            }
                            if report.manifest_behind {
                                act.run_backup(term, false, ctx);
                            }
                            act.last_scrub = Some((Utc::now(), report));
                        }
                        Err(e) => tracing::warn!(error = %e, "scrub failed; the next one retries"),
                    }
                }),
        );
    }

    fn enable_writes(&mut self, term: u64) {
        if self.foreign_writer.is_some() {
            return;
        }
        if self.snapshot.term > term {
            self.fence(term, self.snapshot.term);
            return;
        }
        self.set_writes(true);
        tracing::info!(
            term,
            generation = self.snapshot.generation,
            "writes enabled"
        );
        let snapshot = self.snapshot.clone();
        for (t, tx) in std::mem::take(&mut self.awaiting_writes) {
            let _ = tx.send(if t == term {
                Ok(snapshot.clone())
            } else {
                Err(NotWritable)
            });
        }
    }

    fn fence(&mut self, term: u64, newer_term: u64) {
        tracing::error!(
            term,
            newer_term,
            "fenced: a writer with a higher term owns the backup; writes off"
        );
        self.writes_off();
        if let Some(e) = &self.election {
            e.fenced.do_send(Fenced { term, newer_term });
        }
    }

    /// Collects garbage unless a collection of the same cause ran recently: the leader's
    /// bucket and local store, a follower's local store. It runs under the write lock and
    /// keeps what any recent manifest or the lineage names (read under the lock), so neither a
    /// backup nor a publish in progress loses an object to it.
    fn collect_garbage(&mut self, ctx: &mut Context<Self>, cause: GcCause) {
        let (last, min_gap) = match cause {
            GcCause::Schedule => (&mut self.last_gc, GC_INTERVAL),
            GcCause::FailedWrite => (&mut self.last_gc_after_error, GC_AFTER_ERROR),
            #[cfg(feature = "test-support")]
            GcCause::Asked => (&mut self.last_gc, Duration::ZERO),
        };
        if last.is_some_and(|t| t.elapsed() < min_gap) {
            return;
        }
        *last = Some(Instant::now());
        let lock = self.write_lock.clone();
        ctx.spawn(
            async move { lock.lock_owned().await }
                .into_actor(self)
                .then(|guard, act, _| {
                    let leading =
                        matches!(act.role, Role::Leader { .. }) && act.writes_enabled;
                    let loaded = act.snapshot.is_loaded();
                    let bucket = act.cfg.bucket.clone();
                    let newest = act.snapshot.generation;
                    let cancel = act.cancel.clone();
                    let local = act.cfg.local.clone();
                    let keep: std::collections::BTreeSet<String> =
                        act.snapshot.file_entries().into_keys().collect();
                    let grace = act.cfg.gc_grace;
                    async move {
                        if leading && !cancel.is_cancelled() {
                            match backup::collect_garbage(
                                bucket.as_ref(),
                                newest,
                                Utc::now(),
                                grace,
                                &keep,
                            )
                            .await
                            {
                                Ok(n) if n > 0 => {
                                    tracing::info!(deleted = n, "bucket garbage collected")
                                }
                                Ok(_) => {}
                                Err(e) => {
                                    tracing::warn!(error = %e, "bucket garbage collection failed")
                                }
                            }
                        }
                        // With nothing loaded, nothing tells garbage from data: keep it all.
                        if loaded {
                            let kept_from = newest.saturating_sub(backup::GC_KEEP_MANIFESTS);
                            match tokio::task::spawn_blocking(move || {
                                local.retain(&keep, kept_from, grace)
                            })
                            .await
                            {
                                Ok(Ok(_)) => {}
                                Ok(Err(e)) => {
                                    tracing::warn!(error = %e, "local file store clean-up failed")
                                }
                                Err(e) => tracing::warn!(error = %e, "local file store clean-up task failed"),
                            }
                        }
                        drop(guard);
                    }
                    .into_actor(act)
                }),
        );
    }

    /// Writes this replica's heartbeat into the bucket and reads the group's (the leader also
    /// forgets replicas gone for a day).
    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        let not_ready = self.not_ready();
        let hb = group::Heartbeat {
            identity: self.cfg.identity.clone(),
            role: self.role.as_str().to_string(),
            term: self.role.term(),
            generation: self.snapshot.generation,
            data_updated: self.snapshot.updated,
            ready: not_ready.is_none(),
            not_ready_reason: not_ready.map(|r| r.to_string()),
            version: env!("CARGO_PKG_VERSION").to_string(),
            seen: Utc::now(),
            interval_seconds: self.cfg.heartbeat.as_secs().max(1),
        };
        let leading = matches!(self.role, Role::Leader { .. }) && self.writes_enabled;
        let bucket = self.cfg.bucket.clone();
        ctx.spawn(
            async move {
                group::beat(bucket.as_ref(), &hb).await?;
                group::members(bucket.as_ref(), Utc::now(), leading).await
            }
            .into_actor(self)
            .map(|res, act, _| match res {
                Ok(members) => {
                    act.group = members;
                    act.group_error = None;
                }
                Err(e) => {
                    if act.group_error.is_none() {
                        tracing::warn!(error = %e, "could not write the heartbeat or read the group");
                    }
                    act.group_error = Some(e);
                }
            }),
        );
    }

    /// Why this replica cannot answer queries, or `None` when it can.
    fn not_ready(&self) -> Option<NotReady> {
        let s = &self.snapshot;
        let following = matches!(self.role, Role::Follower { .. });
        // A follower serves only what the bucket vouches for: a store it loaded as leader from
        // its own folder (and was demoted before the bucket confirmed) is held back too. A
        // demoted leader whose lineage the bucket confirmed keeps serving it, with what it built
        // since, until its next poll.
        let local_held = following && !s.vouched() && !self.vouched_base;
        // A leader that has not read the bucket since promotion serves only a store it wrote
        // itself, or what the bucket vouched for when it was promoted (a follower's last poll,
        // which any follower would answer): a stale or empty one would answer the bucket's
        // windows as empty.
        if let (Role::Leader { .. }, false, false, false, Some(e)) = (
            &self.role,
            self.reconciled,
            self.trusted_local,
            self.vouched_base,
            &self.promotion_error,
        ) {
            return Some(NotReady::Unreconciled(e.clone()));
        }
        if s.is_loaded() && !local_held {
            if s.servable() {
                return None;
            }
            let first = s
                .missing
                .iter()
                .next()
                .map(|(p, m)| format!("{p}: {}", m.problem))
                .unwrap_or_default();
            return Some(NotReady::Unloadable {
                generation: s.generation,
                sets: s.missing.len(),
                first,
            });
        }
        let held_back = HeldBack(if local_held {
            Some(s.generation)
        } else {
            self.local_generation
        });
        Some(match &self.role {
            Role::Leader { .. } => {
                if let Some(e) = &self.promotion_error {
                    NotReady::Unreconciled(e.clone())
                } else if !self.writes_enabled {
                    NotReady::Promoting
                } else if let Some(e) = &self.last_write_error {
                    NotReady::WritesFailing {
                        error: e.clone(),
                        etl_dir: self.etl_dir_error.clone(),
                    }
                } else {
                    NotReady::Building
                }
            }
            Role::Follower { .. } => {
                if let Some(e) = &self.last_poll_error {
                    NotReady::FollowerCannotReadBucket {
                        error: e.clone(),
                        held_back,
                    }
                } else if self.bucket_empty {
                    NotReady::BucketEmpty { held_back }
                } else {
                    NotReady::FirstPoll { held_back }
                }
            }
        })
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
                        gaps: self.snapshot.gaps(kind, res),
                    });
                }
            }
        }
        let now = Instant::now();
        let missing = self
            .snapshot
            .missing
            .iter()
            .map(|(path, m)| MissingObject {
                path: path.clone(),
                kind: m.entry.kind,
                resolution: m.entry.resolution,
                start: m.entry.start,
                end: m.entry.end,
                problem: m.problem.to_string(),
                failures: m.failures,
                retry_in_seconds: m.retry_at.saturating_duration_since(now).as_secs(),
            })
            .collect();
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
            local_generation: self.local_generation,
            last_poll: self.last_poll,
            last_poll_error: self.last_poll_error.clone(),
            bucket_empty: self.bucket_empty,
            last_write: self.last_write,
            last_write_error: self.last_write_error.clone(),
            promotion_error: self.promotion_error.clone(),
            last_backup: self.last_backup,
            last_backup_error: self.last_backup_error.clone(),
            pending_sets: self.snapshot.pending.len(),
            backup_lag_seconds: self
                .snapshot
                .staged_at
                .filter(|_| !self.snapshot.pending.is_empty())
                .map(|t| ((Utc::now() - t).num_milliseconds() as f64 / 1000.0).max(0.0)),
            foreign_writer: self.foreign_writer.clone(),
            unreadable_manifests: self.unreadable.clone(),
            last_scrub: self.last_scrub.clone(),
            merged_same_term: self.merged_same_term.clone(),
            group: self.group.clone(),
            group_error: self.group_error.clone(),
            etl_dir_error: self.etl_dir_error.clone(),
            follower_writes_dropped: self.dropped,
            blocked_reads: self.blocked_reads.len(),
            missing,
            coverage,
            not_ready: self.not_ready(),
        }
    }
}

impl Actor for Storage {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Read the local file store now (it is awaited again by promotion and by the first
        // poll, which share this one read).
        ctx.spawn(self.local.clone().into_actor(self).map(|local, act, _| {
            if let Some(s) = &local {
                tracing::info!(
                    generation = s.generation,
                    sets = s.files.len(),
                    unreadable = s.missing.len(),
                    "read the local file store"
                );
            }
            act.local_generation = local.map(|s| s.generation);
        }));
        // A store that cannot be written is found now, not at the first ETL write.
        let local = self.cfg.local.clone();
        ctx.spawn(
            async move { tokio::task::spawn_blocking(move || local.probe_writable()).await }
                .into_actor(self)
                .map(|res, act, _| {
                    let source = match res {
                        Ok(Ok(())) => return,
                        Ok(Err(e)) => e,
                        Err(e) => std::io::Error::other(e),
                    };
                    let error = EtlDirError {
                        path: act.cfg.local.root().display().to_string(),
                        source: Arc::new(source),
                    };
                    tracing::error!("{error}; this replica cannot write the ETL while it leads");
                    act.etl_dir_error = Some(error);
                }),
        );
        ctx.run_interval(self.cfg.scrub_interval, |act, ctx| act.run_scrub(ctx));
        ctx.run_interval(self.cfg.heartbeat, |act, ctx| act.heartbeat(ctx));
        ctx.run_interval(GC_INTERVAL, |act, ctx| {
            act.collect_garbage(ctx, GcCause::Schedule)
        });
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
            Ok(read) => {
                self.last_poll_error = None;
                self.bucket_empty = matches!(read.loaded, Loaded::Empty);
                // A poll that finishes after promotion is stale: the leader reads for itself.
                if let Role::Follower { .. } = &self.role {
                    self.unreadable = read.unreadable;
                    if let Loaded::New(s) = read.loaded {
                        self.install(Arc::new(s), true);
                    }
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

impl Handler<ServingSnapshot> for Storage {
    type Result = MessageResult<ServingSnapshot>;

    fn handle(&mut self, _: ServingSnapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(match self.not_ready() {
            None => Ok(self.snapshot.clone()),
            Some(reason) => Err(reason),
        })
    }
}

impl Handler<PollBase> for Storage {
    type Result = ResponseFuture<Arc<Snapshot>>;

    fn handle(&mut self, _: PollBase, _: &mut Self::Context) -> Self::Result {
        if self.snapshot.is_loaded() {
            let s = self.snapshot.clone();
            return Box::pin(async move { s });
        }
        let local = self.local.clone();
        Box::pin(async move {
            local
                .await
                .filter(|s| s.origin == Origin::Local)
                .unwrap_or_default()
        })
    }
}

#[cfg(feature = "test-support")]
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

/// What a write did: staged in the local store (or not), then backed up (or not).
enum Written {
    /// The local store failed: nothing kept.
    NotStaged(PublishError),
    /// Staged; the backup's outcome.
    Staged(Result<Backed, PublishError>),
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
        let key = (term, self.promotions);
        let cancel = self.cancel.clone();
        let lock = self.write_lock.clone();
        // Stage (local store, then served at once), then back up (the bucket), under one lock:
        // each write builds on the lineage the previous one left.
        Box::pin(
            async move { lock.lock_owned().await }
                .into_actor(self)
                .then({
                    let cancel = cancel.clone();
                    move |guard, act, _| {
                        let base = act.snapshot.clone();
                        let cfg = act.cfg.clone();
                        async move {
                            let writer = Self::writer(&cfg, term, &cancel);
                            let staged =
                                backup::stage(&cfg.local, base, &writer, msg.sets, Utc::now()).await;
                            (guard, staged)
                        }
                        .into_actor(act)
                    }
                })
                .then(move |(guard, staged), act, _| match staged {
                    Err(e) => {
                        drop(guard);
                        ActorFutureExt::boxed_local(fut::ready(Written::NotStaged(e)))
                    }
                    Ok(staged) => {
                        if act.role == (Role::Leader { term }) && !cancel.is_cancelled() {
                            act.install(Arc::new(staged), true);
                            act.last_write = Some(Utc::now());
                            act.last_write_error = None;
                        }
                        let head = act.snapshot.clone();
                        let cfg = act.cfg.clone();
                        act.backup_in_flight = Some(key);
                        let backed = async move {
                            let writer = Self::writer(&cfg, term, &cancel);
                            let res = backup::backup(
                                cfg.bucket.as_ref(),
                                &cfg.local,
                                head,
                                &writer,
                                Utc::now(),
                            )
                            .await;
                            drop(guard);
                            Written::Staged(res)
                        }
                        .into_actor(act);
                        ActorFutureExt::boxed_local(backed)
                    }
                })
                .map(move |written, act, ctx| {
                    let res = match written {
                        Written::NotStaged(PublishError::Cancelled) => return WriteOutcome::Dropped,
                        Written::NotStaged(e) => {
                            tracing::warn!(error = %e, "ETL write failed: the local store could not keep it");
                            act.cfg
                                .metrics
                                .writes
                                .get_or_create(&ResultLabel::of(e.label()))
                                .inc();
                            act.last_write_error = Some(e.clone());
                            return WriteOutcome::Failed(e);
                        }
                        Written::Staged(res) => res,
                    };
                    if act.backup_in_flight == Some(key) {
                        act.backup_in_flight = None;
                    }
                    let label = match &res {
                        Ok(_) => "ok",
                        Err(e) if e.is_retryable() => "staged",
                        Err(e) => e.label(),
                    };
                    act.cfg
                        .metrics
                        .writes
                        .get_or_create(&ResultLabel::of(label))
                        .inc();
                    if act.role != (Role::Leader { term }) {
                        return WriteOutcome::Dropped;
                    }
                    let outcome = match &res {
                        Ok(b) => WriteOutcome::Written {
                            generation: b.snapshot.generation,
                        },
                        Err(PublishError::Fenced { term: newer, .. }) => {
                            WriteOutcome::Fenced { term: *newer }
                        }
                        Err(PublishError::Cancelled) => WriteOutcome::Dropped,
                        Err(e @ PublishError::ForeignWriter { .. }) => {
                            WriteOutcome::Failed(e.clone())
                        }
                        Err(e) => WriteOutcome::Staged { error: e.clone() },
                    };
                    act.after_backup(term, res, false, ctx);
                    if matches!(outcome, WriteOutcome::Written { .. }) {
                        act.collect_garbage(ctx, GcCause::Schedule);
                    }
                    outcome
                }),
        )
    }
}

impl Handler<ElectionEvents> for Storage {
    type Result = ();

    fn handle(&mut self, msg: ElectionEvents, _: &mut Self::Context) {
        if self.max_term > 0 {
            msg.bucket_term.do_send(BucketTerm {
                term: self.max_term,
            });
        }
        self.election = Some(msg);
    }
}

#[cfg(feature = "test-support")]
impl Handler<CollectGarbageNow> for Storage {
    type Result = ();

    fn handle(&mut self, _: CollectGarbageNow, ctx: &mut Self::Context) {
        self.collect_garbage(ctx, GcCause::Asked);
    }
}

#[cfg(feature = "test-support")]
impl Handler<ScrubNow> for Storage {
    type Result = ();

    fn handle(&mut self, _: ScrubNow, ctx: &mut Self::Context) {
        self.run_scrub(ctx);
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

#[cfg(feature = "test-support")]
impl Handler<crate::supervise::Crash> for Storage {
    type Result = ();

    fn handle(&mut self, _: crate::supervise::Crash, _: &mut Self::Context) {
        crate::supervise::crash()
    }
}
