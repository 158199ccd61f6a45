//! Bucket I/O: loading the newest generation that parses, staging sets in the local store and
//! backing the lineage up as a new generation with create-if-absent (merging, fencing, healing
//! what the bucket lost), scrubbing the bucket, and collecting garbage. Written against
//! `Arc<dyn ObjectStore>` so every backend (and the fault-injecting wrapper) runs the same code.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio_util::sync::CancellationToken;

use super::filestore::FileStore;
use super::manifest::{self, FileEntry, MANIFEST_DIR, Manifest};
use super::snapshot::{LoadedSet, Missing, ObjectProblem, Origin, Snapshot};
use crate::model::{EtlSet, Resolution};

/// How many objects are fetched at once when loading a generation.
const FETCH_CONCURRENCY: usize = 8;
/// How many times a publish retries after losing a generation to a writer of a lower or equal
/// term (a stale leader finishing its last write) before giving up for this round.
const PUBLISH_ATTEMPTS: usize = 5;
/// Manifests and objects younger than this are never collected by default, so a reader that has
/// just listed an older generation can still fetch it.
pub const GC_GRACE: std::time::Duration = std::time::Duration::from_secs(600);
/// How many of the newest manifests garbage collection always keeps.
pub const GC_KEEP_MANIFESTS: u64 = 10;
/// How many sets still stored in the older JSON form (`.json.zst`) each write rewrites as
/// Parquet, so that a bucket an older release wrote is converted over time in ordinary
/// publishes (91 days and 49 hours of both kinds, about 280 sets, in about 35 writes) without
/// one write doing it all.
pub const UPGRADES_PER_WRITE: usize = 8;

/// A bucket or local-store failure. Cheap to clone, so it can travel in messages and status.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BackupError {
    /// The object store failed; worth retrying.
    #[error("bucket {op} {path}: {}", crate::redact::userinfo(&.source.to_string()))]
    Store {
        /// The operation (`get`, `put`, `list`, ...).
        op: &'static str,
        /// The object or prefix.
        path: String,
        /// What the store said.
        source: Arc<object_store::Error>,
    },
    /// The newest manifest does not parse: nothing newer can be trusted until a writer
    /// publishes a good one.
    #[error("manifest {path} is corrupt: {reason}")]
    CorruptManifest {
        /// The manifest's path.
        path: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Local file store failure.
    #[error("local file store {path}: {source}")]
    Local {
        /// The file or folder.
        path: String,
        /// What the file system said.
        source: Arc<std::io::Error>,
    },
}

impl BackupError {
    /// Whether trying again later can succeed without anyone changing the bucket.
    pub fn is_retryable(&self) -> bool {
        matches!(self, BackupError::Store { .. } | BackupError::Local { .. })
    }

    /// A short, fixed name for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            BackupError::Store { .. } => "bucket",
            BackupError::CorruptManifest { .. } => "corrupt_manifest",
            BackupError::Local { .. } => "local_store",
        }
    }

    fn local(path: impl Into<String>, source: std::io::Error) -> Self {
        BackupError::Local {
            path: path.into(),
            source: Arc::new(source),
        }
    }
}

fn store_err(
    op: &'static str,
    path: &Path,
) -> impl FnOnce(object_store::Error) -> BackupError + use<> {
    let path = path.to_string();
    move |source| BackupError::Store {
        op,
        path,
        source: Arc::new(source),
    }
}

/// How long to wait before fetching again an object that failed to load: `first` after the
/// first failure, doubling with each further one, never more than `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The pause after the first failure.
    pub first: std::time::Duration,
    /// The longest pause.
    pub max: std::time::Duration,
}

impl Backoff {
    /// The pause after `failures` failures in a row (at least one).
    pub fn after(&self, failures: u32) -> std::time::Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }
}

/// What a read of the bucket found.
#[derive(Debug)]
pub enum Loaded {
    /// The bucket holds no manifest at all.
    Empty,
    /// The bucket's newest generation is the base's, and nothing the base lacks is due for a
    /// retry.
    Unchanged,
    /// A generation loaded on top of the base (newer, older, or the same with retries).
    New(Snapshot),
}

/// A manifest in the bucket that does not parse (or names another generation than its own):
/// readers skip it, writers move past it, neither adopts it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnreadableManifest {
    /// Its generation (from its name).
    pub generation: u64,
    /// Why it was rejected.
    pub reason: String,
}

/// The newest manifest that parses, and what was skipped to find it.
#[derive(Clone, Debug, Default)]
pub struct Newest {
    /// The newest manifest that parses; `None` when there is none.
    pub manifest: Option<Manifest>,
    /// The highest generation occupied by any file, readable or not: the next publish goes
    /// above it.
    pub highest: u64,
    /// Manifests above the one returned that do not parse.
    pub unreadable: Vec<UnreadableManifest>,
}

/// How many unreadable manifests a reader skips before it gives up looking further down (each
/// costs a read on every poll while it stays the newest).
const UNREADABLE_SKIPPED: usize = 100;

/// Lists the manifests and reads them newest first until one parses. A manifest deleted between
/// the list and the read (garbage collection) is skipped; a store error is an error.
pub async fn newest_manifest(store: &dyn ObjectStore) -> Result<Newest, BackupError> {
    let generations = list_generations(store).await?;
    newest_of(store, generations, None).await
}

/// Every manifest generation in the bucket, newest first.
async fn list_generations(store: &dyn ObjectStore) -> Result<Vec<u64>, BackupError> {
    let dir = Path::from(MANIFEST_DIR);
    let metas: Vec<_> = store
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(store_err("list", &dir))?;
    let mut generations: Vec<u64> = metas
        .iter()
        .filter_map(|m| manifest::parse_manifest_path(&m.location))
        .collect();
    generations.sort_unstable_by(|a, b| b.cmp(a));
    Ok(generations)
}

/// Reads `generations` (newest first) until one parses; stops without reading at `known`, a
/// generation whose manifest the caller already holds (returned as `manifest: None` with
/// `highest` set, meaning "nothing newer parses").
async fn newest_of(
    store: &dyn ObjectStore,
    generations: Vec<u64>,
    known: Option<u64>,
) -> Result<Newest, BackupError> {
    let mut newest = Newest {
        highest: generations.first().copied().unwrap_or(0),
        ..Newest::default()
    };
    for g in generations {
        if Some(g) == known {
            break;
        }
        match read_manifest(store, g).await {
            Ok(m) => {
                newest.manifest = Some(m);
                break;
            }
            Err(BackupError::CorruptManifest { reason, .. }) => {
                tracing::error!(generation = g, %reason, "skipping an unreadable manifest");
                newest.unreadable.push(UnreadableManifest {
                    generation: g,
                    reason,
                });
                if newest.unreadable.len() >= UNREADABLE_SKIPPED {
                    tracing::error!(
                        skipped = UNREADABLE_SKIPPED,
                        "too many unreadable manifests in a row; not looking further down"
                    );
                    break;
                }
            }
            Err(BackupError::Store { source, .. })
                if matches!(*source, object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(newest)
}

/// The highest manifest generation in the bucket, readable or not (0 when there is none).
pub async fn latest_generation(store: &dyn ObjectStore) -> Result<u64, BackupError> {
    Ok(list_generations(store).await?.first().copied().unwrap_or(0))
}

/// Reads the manifest of `generation`.
pub async fn read_manifest(
    store: &dyn ObjectStore,
    generation: u64,
) -> Result<Manifest, BackupError> {
    let path = manifest::manifest_path(generation);
    let body = store
        .get(&path)
        .await
        .map_err(store_err("get", &path))?
        .bytes()
        .await
        .map_err(store_err("get", &path))?;
    let m: Manifest = serde_json::from_slice(&body).map_err(|e| BackupError::CorruptManifest {
        path: path.to_string(),
        reason: e.to_string(),
    })?;
    if m.generation != generation {
        return Err(BackupError::CorruptManifest {
            path: path.to_string(),
            reason: format!("it claims generation {}", m.generation),
        });
    }
    Ok(m)
}

/// What one read of the bucket found.
#[derive(Debug)]
pub struct Read {
    /// The snapshot, or why there is none newer.
    pub loaded: Loaded,
    /// Manifests above the one loaded that do not parse.
    pub unreadable: Vec<UnreadableManifest>,
}

/// Loads the newest manifest that parses on top of `base`: only objects `base` lacks are
/// fetched, each is verified against its sha256, and one that fails is left out and recorded in
/// the snapshot's `missing` with a time before which it is not fetched again (`backoff`). A base
/// loaded from the bucket whose generation is still the newest is [`Loaded::Unchanged`] unless
/// one of its missing objects is due; a base the bucket has not vouched for (the local store,
/// or sets not yet backed up) is always checked against the bucket's manifest, object by object.
/// A generation *older* than `base` is returned too (the bucket was replaced or reset): callers
/// decide what to trust. With `restore`, every object fetched (and the manifest) is also written
/// to that local store, so a replica's store follows the bucket.
pub async fn load_latest(
    store: &dyn ObjectStore,
    base: &Snapshot,
    backoff: Backoff,
    restore: Option<&FileStore>,
) -> Result<Read, BackupError> {
    let generations = list_generations(store).await?;
    let now = Instant::now();
    let settled = base.vouched() && !base.missing.values().any(|m| m.retry_at <= now);
    // A poll of an unchanged bucket is one list: the manifest the base came from is not read
    // again, nor is anything below it.
    let known = (settled && base.generation > 0).then_some(base.generation);
    let newest = newest_of(store, generations, known).await?;
    let Some(manifest) = newest.manifest else {
        let loaded = if known.is_some() && newest.highest >= base.generation {
            Loaded::Unchanged
        } else {
            Loaded::Empty
        };
        return Ok(Read {
            loaded,
            unreadable: newest.unreadable,
        });
    };
    let loaded = load_manifest(store, base, &manifest, backoff, restore).await?;
    if let Some(local) = restore {
        write_local_manifest(local, &manifest).await;
    }
    Ok(Read {
        loaded: Loaded::New(loaded),
        unreadable: newest.unreadable,
    })
}

/// Runs blocking file-system work off the actors' thread; a panicking task is an I/O error.
async fn blocking<T: Send + 'static>(
    what: impl Into<String>,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, BackupError> {
    let what = what.into();
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|e| BackupError::local(what, e))
}

/// Keeps a copy of a manifest in the local store; a failure only costs a reload later.
async fn write_local_manifest(local: &FileStore, manifest: &Manifest) {
    let body = serde_json::to_vec_pretty(manifest).expect("a manifest always serialises");
    let rel = manifest::manifest_path(manifest.generation).to_string();
    let l = local.clone();
    if let Err(e) = blocking(rel.clone(), move || l.write(&rel, &body)).await {
        tracing::warn!(error = %e, "could not keep a local copy of the manifest");
    }
}

/// Loads the sets `manifest` names on top of `base`: sets `base` holds with the same sha256 are
/// shared, objects `base` failed to load are fetched again only once their retry time has come.
/// With `restore`, each object fetched and verified is written to that local store too.
pub async fn load_manifest(
    store: &dyn ObjectStore,
    base: &Snapshot,
    manifest: &Manifest,
    backoff: Backoff,
    restore: Option<&FileStore>,
) -> Result<Snapshot, BackupError> {
    let now = Instant::now();
    let mut files = BTreeMap::new();
    let mut missing = BTreeMap::new();
    let mut wanted = Vec::new();
    for (path, entry) in &manifest.files {
        match (base.files.get(path), base.missing.get(path)) {
            (Some((e, set)), _) if e.sha256 == entry.sha256 => {
                files.insert(path.clone(), (entry.clone(), set.clone()));
            }
            (_, Some(m)) if m.entry.sha256 == entry.sha256 && m.retry_at > now => {
                missing.insert(path.clone(), m.clone());
            }
            (_, m) => {
                let failures = m
                    .filter(|m| m.entry.sha256 == entry.sha256)
                    .map_or(0, |m| m.failures);
                wanted.push((path.clone(), entry.clone(), failures));
            }
        }
    }
    // Each object is decoded as soon as it arrives, while others are fetched: a generation's
    // bodies are never all held at once (170 MiB at 90 days × 10,000 pods), which would leave
    // the allocator with holes the size of the bucket once they are freed. Hashing,
    // decompressing, parsing and building columns are CPU work: they run off the actors'
    // threads, so queries are never held up by a load, one set per core at a time.
    let restore = restore.cloned();
    let (tx, rx) = tokio::sync::mpsc::channel::<(String, FileEntry, u32, bytes::Bytes)>(
        super::parallel::cores(),
    );
    let rx = std::sync::Mutex::new(rx);
    let decoding = tokio::task::spawn_blocking(move || {
        let next = || rx.lock().unwrap_or_else(|p| p.into_inner()).blocking_recv();
        super::parallel::drain(usize::MAX, next, |(path, entry, failures, body)| {
            let set = manifest::decode_loaded(&entry, body.clone());
            let intact = |local: &FileStore| {
                local
                    .read(&path)
                    .is_ok_and(|b| manifest::verify(&entry, &b))
            };
            if let (Ok(_), Some(local)) = (&set, &restore)
                && !intact(local)
                && let Err(e) = local.write(&path, &body)
            {
                tracing::warn!(%path, error = %e, "could not restore the object into the local store");
            }
            (path, entry, failures, set.map_err(ObjectProblem::from))
        })
    });
    let mut fetches = futures::stream::iter(wanted)
        .map(|(path, entry, failures)| async move {
            let p = Path::from(path.as_str());
            let body = match store.get(&p).await {
                Ok(r) => r.bytes().await,
                Err(e) => Err(e),
            };
            (path, entry, failures, body)
        })
        .buffer_unordered(FETCH_CONCURRENCY);
    let mut loaded = Vec::new();
    while let Some((path, entry, failures, body)) = fetches.next().await {
        match body {
            Ok(body) => {
                if tx.send((path, entry, failures, body)).await.is_err() {
                    // The decoders stopped (a panic): what it says is reported below.
                    break;
                }
            }
            // A missing or unreadable object is damage to report, not a reason to serve
            // nothing: the rest of the generation loads, this set is retried with backoff.
            Err(object_store::Error::NotFound { .. }) => {
                loaded.push((path, entry, failures, Err(ObjectProblem::Missing)));
            }
            Err(source) => {
                let why = crate::redact::userinfo(&source.to_string()).into_owned();
                loaded.push((path, entry, failures, Err(ObjectProblem::Unreadable(why))));
            }
        }
    }
    drop(tx);
    loaded.extend(
        decoding
            .await
            .map_err(|e| BackupError::local("decoding task", std::io::Error::other(e)))?,
    );
    for (path, entry, failures, set) in loaded {
        match set {
            Ok(set) => {
                files.insert(path, (entry, set));
            }
            Err(problem) => {
                tracing::error!(%path, %problem, failures = failures + 1, "backup object named by the manifest could not be loaded");
                let failures = failures + 1;
                missing.insert(
                    path,
                    Missing {
                        entry,
                        problem,
                        failures,
                        retry_at: Instant::now() + backoff.after(failures),
                    },
                );
            }
        }
    }
    Ok(Snapshot::build(manifest, files, missing, Origin::Bucket))
}

/// Loads what the local file store holds, verifying every object: the newest local manifest
/// that parses, combined slot by slot with the staged lineage (sets built but not yet backed up);
/// staged sets the manifest lacks come back as pending. A manifest or staged file that does not
/// parse is skipped with a warning, never a reason to load nothing.
pub fn load_local(local: &FileStore) -> Result<Option<Snapshot>, BackupError> {
    let manifest = local.latest_manifest().map_err(|e| {
        BackupError::local(local.root().join(MANIFEST_DIR).display().to_string(), e)
    })?;
    let staged = match local.staged() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "the staged lineage does not parse; ignoring it");
            None
        }
    };
    let (base, entries, pending, staged_at) = match (manifest, staged) {
        (None, None) => return Ok(None),
        (Some(m), None) => {
            let entries = m.files.clone();
            (m, entries, BTreeSet::new(), None)
        }
        (None, Some(s)) => {
            let pending = s.files.keys().cloned().collect();
            let (entries, at) = (s.files.clone(), Some(s.updated));
            (s, entries, pending, at)
        }
        (Some(m), Some(s)) => {
            let (entries, pending) = combine_entries(&m.files, &s.files);
            let at = (!pending.is_empty()).then_some(s.updated);
            (m, entries, pending, at)
        }
    };
    let now = Instant::now();
    let mut files = BTreeMap::new();
    let mut missing = BTreeMap::new();
    let loaded = super::parallel::map(entries.iter().collect(), |(path, entry)| {
        let loaded = match local.read(path) {
            Ok(body) => manifest::decode_loaded(entry, body.into()).map_err(ObjectProblem::from),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ObjectProblem::Missing),
            Err(e) => Err(ObjectProblem::Unreadable(e.to_string())),
        };
        (path, entry, loaded)
    });
    for (path, entry, loaded) in loaded {
        match loaded {
            Ok(set) => {
                files.insert(path.clone(), (entry.clone(), set));
            }
            Err(problem) => {
                missing.insert(
                    path.clone(),
                    Missing {
                        entry: entry.clone(),
                        problem,
                        failures: 1,
                        // Due at once: the bucket may well have a good copy.
                        retry_at: now,
                    },
                );
            }
        }
    }
    let mut snapshot = Snapshot::build(&base, files, missing, Origin::Local);
    snapshot.pending = pending;
    snapshot.staged_at = staged_at;
    Ok(Some(snapshot))
}

/// Which of two entries for one slot to keep: the complete one, then the one whose data reaches
/// further; `None` when neither is better.
fn better(a: &FileEntry, b: &FileEntry) -> Option<std::cmp::Ordering> {
    let rank = |e: &FileEntry| (e.data_end >= e.end, e.data_end);
    match rank(a).cmp(&rank(b)) {
        std::cmp::Ordering::Equal => None,
        o => Some(o),
    }
}

/// A published lineage combined with a staged one, slot by slot: the better entry of each slot
/// (staged on a tie: it was built later); the staged entries kept are pending.
fn combine_entries(
    published: &BTreeMap<String, FileEntry>,
    staged: &BTreeMap<String, FileEntry>,
) -> (BTreeMap<String, FileEntry>, BTreeSet<String>) {
    type Slot = (crate::model::SetKind, Resolution, DateTime<Utc>);
    let mut slots: BTreeMap<Slot, (&String, &FileEntry, bool)> = BTreeMap::new();
    for (p, e) in published {
        slots.insert(e.slot(), (p, e, false));
    }
    for (p, e) in staged {
        match slots.get(&e.slot()) {
            Some((q, _, _)) if *q == p => {}
            Some((_, held, _)) if better(held, e) == Some(std::cmp::Ordering::Greater) => {}
            _ => {
                slots.insert(e.slot(), (p, e, true));
            }
        }
    }
    let mut entries = BTreeMap::new();
    let mut pending = BTreeSet::new();
    for (p, e, staged) in slots.into_values() {
        if staged && !published.contains_key(p) {
            pending.insert(p.clone());
        }
        entries.insert(p.clone(), e.clone());
    }
    (entries, pending)
}

/// Why a publish did not happen.
#[derive(Clone, Debug, thiserror::Error)]
pub enum PublishError {
    /// A writer with a higher term has published: this writer is deposed.
    #[error("fenced: generation {generation} was written by term {term}")]
    Fenced {
        /// The generation found.
        generation: u64,
        /// Its writer's term.
        term: u64,
    },
    /// Another writer shares the bucket: a manifest of another cluster, or one written under
    /// this writer's own term by another identity after this writer's own publish (two
    /// standalone installs, or two clusters on one prefix). This writer stops.
    #[error(
        "foreign writer: generation {generation} was written by {writer:?} of cluster {cluster:?} under term {term}; two writers share this bucket, so this one stopped writing"
    )]
    ForeignWriter {
        /// The generation found.
        generation: u64,
        /// Its writer.
        writer: String,
        /// Its cluster (empty when the manifest does not say).
        cluster: String,
        /// Its term.
        term: u64,
    },
    /// Leadership ended while writing; nothing more was written.
    #[error("cancelled: leadership ended during the write")]
    Cancelled,
    /// Kept losing races to writers of a lower or equal term.
    #[error("lost {PUBLISH_ATTEMPTS} generation races in a row")]
    Contended,
    /// Bucket or disk failure; worth retrying.
    #[error(transparent)]
    Backup(#[from] BackupError),
}

impl PublishError {
    /// Whether trying again later can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            PublishError::Fenced { .. }
            | PublishError::ForeignWriter { .. }
            | PublishError::Cancelled => false,
            PublishError::Contended => true,
            PublishError::Backup(e) => e.is_retryable(),
        }
    }

    /// A short, fixed name for metrics (`result` label of `costmodel_backup_writes`).
    pub fn label(&self) -> &'static str {
        match self {
            PublishError::Fenced { .. } => "fenced",
            PublishError::ForeignWriter { .. } => "foreign_writer",
            PublishError::Cancelled => "cancelled",
            PublishError::Contended => "contended",
            PublishError::Backup(_) => "error",
        }
    }
}

/// What publish needs to know about the writer.
pub struct Writer<'a> {
    /// The writer's identity, written into the manifest.
    pub identity: &'a str,
    /// The writer's cluster id, written into the manifest: another cluster's manifest is never
    /// merged.
    pub cluster: &'a str,
    /// Its fencing term.
    pub term: u64,
    /// Fired when leadership ends: nothing more is written.
    pub cancel: &'a CancellationToken,
    /// Hourly sets whose window ended longer ago than this are dropped from the manifest.
    pub hourly_retention: Duration,
    /// Daily sets likewise.
    pub daily_retention: Duration,
    /// Retry policy for objects a reload fails to fetch.
    pub backoff: Backoff,
}

impl Writer<'_> {
    /// Whether a set is still within retention at `now`.
    fn retains(&self, e: &FileEntry, now: DateTime<Utc>) -> bool {
        let keep_for = match e.resolution {
            Resolution::Hour => self.hourly_retention,
            Resolution::Day => self.daily_retention,
        };
        e.end > now - keep_for
    }
}

/// The local file of the staged lineage: every set the leader holds, written before any of it
/// reaches the bucket, so a crash while the bucket is down loses nothing.
pub const STAGED: &str = "etl/v1/staged.json";

/// Stages `sets` on top of `base` in the local store: the objects, then the whole lineage
/// (`etl/v1/staged.json`), each written atomically. The sets are pending until [`backup`] puts
/// them in the bucket. Returns the lineage to serve.
pub async fn stage(
    local: &FileStore,
    base: Arc<Snapshot>,
    writer: &Writer<'_>,
    sets: Vec<EtlSet>,
    now: DateTime<Utc>,
) -> Result<Snapshot, PublishError> {
    // Sets of the base still in the older JSON form, that this write does not replace anyway:
    // a few are rewritten as Parquet (same content, new name) and the old objects are left to
    // garbage collection.
    let new_slots: BTreeSet<_> = sets
        .iter()
        .map(|s| (s.kind(), s.resolution(), s.window().start))
        .collect();
    let old_form: Vec<(String, LoadedSet)> = base
        .files
        .iter()
        .filter(|(p, (e, _))| {
            manifest::is_json_zst(p) && !new_slots.contains(&e.slot()) && writer.retains(e, now)
        })
        .map(|(p, (_, set))| (p.clone(), set.clone()))
        .collect();
    let old_form_left = old_form.len();
    let (encoded, sets, upgraded) = tokio::task::spawn_blocking(move || {
        let encoded = sets
            .iter()
            .map(manifest::encode)
            .collect::<Result<Vec<_>, _>>();
        (encoded, sets, upgrade(old_form))
    })
    .await
    .map_err(|e| BackupError::local("encoding task", std::io::Error::other(e)))?;
    let encoded = encoded.map_err(|e| BackupError::local("encode", e))?;
    let upgraded = upgraded.map_err(|e| BackupError::local("encode", e))?;
    for e in encoded.iter().chain(upgraded.iter().map(|(_, e, _)| e)) {
        if writer.cancel.is_cancelled() {
            return Err(PublishError::Cancelled);
        }
        let local_path = local.root().join(&e.path).display().to_string();
        let (l, path, body) = (local.clone(), e.path.clone(), e.body.clone());
        blocking(local_path, move || l.write(&path, &body)).await?;
    }
    let new_sets: BTreeMap<String, (FileEntry, LoadedSet)> = encoded
        .into_iter()
        .zip(sets)
        .map(|(e, set)| (e.path, (e.entry, LoadedSet::from(set))))
        .collect();
    let replaced = |e: &FileEntry| new_sets.values().any(|(n, _)| n.slot() == e.slot());
    let mut files: BTreeMap<String, (FileEntry, LoadedSet)> = base
        .files
        .iter()
        .filter(|(_, (e, _))| !replaced(e))
        .map(|(p, v)| (p.clone(), v.clone()))
        .collect();
    files.extend(new_sets.iter().map(|(p, v)| (p.clone(), v.clone())));
    let mut rewritten: BTreeSet<String> = BTreeSet::new();
    for (old, e, set) in upgraded {
        files.remove(&old);
        rewritten.insert(e.path.clone());
        files.insert(e.path, (e.entry, set));
    }
    if !rewritten.is_empty() {
        tracing::info!(
            rewritten = rewritten.len(),
            left = old_form_left - rewritten.len(),
            "rewrote sets stored as json.zst as Parquet (same content, new objects; the old ones are collected as garbage)"
        );
    }
    files.retain(|_, (e, _)| writer.retains(e, now));
    // Entries that could not be loaded are carried forward unless replaced or expired: a
    // failed read must never drop data from the backup.
    let missing: BTreeMap<String, Missing> = base
        .missing
        .iter()
        .filter(|(_, m)| writer.retains(&m.entry, now) && !replaced(&m.entry))
        .map(|(p, m)| (p.clone(), m.clone()))
        .collect();
    // Pending: what is new or was pending, as far as retention kept it.
    let pending: BTreeSet<String> = base
        .pending
        .iter()
        .chain(new_sets.keys())
        .chain(rewritten.iter())
        .filter(|p| files.contains_key(*p))
        .cloned()
        .collect();
    let lineage = Manifest {
        generation: base.generation,
        term: writer.term,
        writer: writer.identity.to_string(),
        updated: now,
        cluster: writer.cluster.to_string(),
        files: entries(&files, &missing),
    };
    let body = serde_json::to_vec_pretty(&lineage).expect("a manifest always serialises");
    let l = local.clone();
    blocking(local.root().join(STAGED).display().to_string(), move || {
        l.write(STAGED, &body)
    })
    .await?;
    let mut snapshot = Snapshot::build(&lineage, files, missing, base.origin);
    // The lineage keeps describing the generation it builds on; what is new is pending.
    snapshot.term = base.term;
    snapshot.writer.clone_from(&base.writer);
    snapshot.staged_at = base.staged_at.or(Some(now));
    snapshot.pending = pending;
    Ok(snapshot)
}

/// Encodes again, as Parquet, up to [`UPGRADES_PER_WRITE`] of `old_form` (sets stored in the older
/// JSON form): old path, new encoding, set. A set Parquet cannot hold exactly (a time finer than
/// a microsecond) stays as it is.
fn upgrade(
    old_form: Vec<(String, LoadedSet)>,
) -> Result<Vec<(String, manifest::Encoded, LoadedSet)>, std::io::Error> {
    let mut out = Vec::new();
    for (path, set) in old_form {
        if out.len() == UPGRADES_PER_WRITE {
            break;
        }
        let etl = set.to_etl();
        if !super::parquet::fits(&etl) {
            continue;
        }
        let encoded = manifest::encode(&etl)?;
        out.push((path, encoded, set));
    }
    Ok(out)
}

/// Every entry of a lineage: the sets loaded and those that could not be.
fn entries(
    files: &BTreeMap<String, (FileEntry, LoadedSet)>,
    missing: &BTreeMap<String, Missing>,
) -> BTreeMap<String, FileEntry> {
    files
        .iter()
        .map(|(p, (e, _))| (p.clone(), e.clone()))
        .chain(missing.iter().map(|(p, m)| (p.clone(), m.entry.clone())))
        .collect()
}

/// What a backup did.
#[derive(Debug)]
pub struct Backed {
    /// The lineage after the backup: a new generation when one was published.
    pub snapshot: Snapshot,
    /// Whether a generation was published.
    pub published: bool,
    /// Objects uploaded that the bucket lacked (pending ones, or ones lost from the bucket).
    pub uploaded: usize,
    /// Manifests above the newest readable one that do not parse.
    pub unreadable: Vec<UnreadableManifest>,
    /// A generation written under this writer's own term by another identity, merged: the
    /// writer and the generation. Usually this replica under an older name; if that writer
    /// still runs, it stops at its next publish.
    pub merged_same_term: Option<(String, u64)>,
}

/// Backs `head` (the leader's lineage) up to the bucket: reads the newest manifest that parses;
/// merges a newer one of a lower term (a stale leader's last write) or of this writer's own
/// identity into the lineage, never dropping a set except by retention; stops at a higher term
/// (fenced) or at another writer under this term (foreign writer); uploads the pending objects,
/// and, when the bucket is behind the lineage or lost objects, every object it lacks (from the
/// local store, or re-encoded from memory); then creates the next generation above every
/// occupied one with create-if-absent. Nothing is published when the bucket already holds the
/// lineage.
pub async fn backup(
    store: &dyn ObjectStore,
    local: &FileStore,
    head: Arc<Snapshot>,
    writer: &Writer<'_>,
    now: DateTime<Utc>,
) -> Result<Backed, PublishError> {
    // A lineage the bucket has not vouched for (read from the local store at promotion) may
    // name objects the bucket lost: check every one.
    let verify_all = head.origin == Origin::Local;
    let mut head = head;
    let mut uploaded = 0;
    let mut merged_same_term = None;
    for _ in 0..PUBLISH_ATTEMPTS {
        if writer.cancel.is_cancelled() {
            return Err(PublishError::Cancelled);
        }
        let newest = newest_manifest(store).await?;
        let mut check_all = verify_all;
        // A higher term anywhere fences, whatever else the manifest says.
        if let Some(m) = &newest.manifest
            && m.term > writer.term
        {
            return Err(PublishError::Fenced {
                generation: m.generation,
                term: m.term,
            });
        }
        // Another cluster's lineage is never merged into ours.
        if let Some(m) = &newest.manifest
            && !m.cluster.is_empty()
            && m.cluster != writer.cluster
        {
            return Err(PublishError::ForeignWriter {
                generation: m.generation,
                writer: m.writer.clone(),
                cluster: m.cluster.clone(),
                term: m.term,
            });
        }
        let due = head.missing.values().any(|m| m.retry_at <= Instant::now());
        match &newest.manifest {
            Some(m) if m.generation >= head.generation && (!holds(m, &head) || due) => {
                let same_term_other_writer = m.term == writer.term && m.writer != writer.identity;
                // Another identity publishing under our term *after our own publish* is alive
                // beside us: two writers share the bucket. (Found before we published, it is
                // usually ourselves under an older name, a standalone pod restarted: merge,
                // and say so.)
                if same_term_other_writer
                    && head.writer == writer.identity
                    && m.generation > head.generation
                {
                    return Err(PublishError::ForeignWriter {
                        generation: m.generation,
                        writer: m.writer.clone(),
                        cluster: m.cluster.clone(),
                        term: m.term,
                    });
                }
                if same_term_other_writer {
                    tracing::warn!(
                        generation = m.generation, writer = %m.writer, term = m.term,
                        "merging a generation written under this replica's own term by another identity; if that writer still runs, two writers share this bucket and one of them will stop"
                    );
                    merged_same_term = Some((m.writer.clone(), m.generation));
                } else if m.generation > head.generation {
                    tracing::warn!(
                        generation = m.generation, their_term = m.term, our_term = writer.term,
                        writer = %m.writer, "a newer generation of no higher term: merging it into this lineage"
                    );
                }
                let theirs = load_manifest(store, &head, m, writer.backoff, Some(local)).await?;
                head = Arc::new(merge(&head, &theirs, |e| writer.retains(e, now), now));
            }
            Some(m) if m.generation < head.generation => check_all = true,
            None => check_all = true,
            _ => {}
        }
        if head.files.is_empty() && head.missing.is_empty() {
            // Nothing built and nothing in the bucket: nothing to back up.
            return Ok(Backed {
                snapshot: (*head).clone(),
                published: false,
                uploaded,
                unreadable: newest.unreadable,
                merged_same_term,
            });
        }
        // Upload what the bucket lacks.
        let present = if check_all {
            Some(list_objects(store).await?)
        } else {
            None
        };
        for (path, (entry, set)) in &head.files {
            let absent = match &present {
                Some(p) => p.get(path) != Some(&entry.bytes),
                None => head.pending.contains(path),
            };
            if !absent {
                continue;
            }
            if writer.cancel.is_cancelled() {
                return Err(PublishError::Cancelled);
            }
            let body = good_copy(local, path, entry, set).await?;
            let p = Path::from(path.as_str());
            store
                .put(&p, PutPayload::from(body))
                .await
                .map_err(store_err("put", &p))?;
            uploaded += 1;
        }
        // The bucket's newest manifest already names this lineage under this writer's term:
        // nothing to publish. (Under an older term it is published again, so the bucket
        // carries the new term at once and fences the previous leader.)
        if let Some(m) = newest
            .manifest
            .as_ref()
            .filter(|m| m.term == writer.term && holds(m, &head))
        {
            let mut snapshot = (*head).clone();
            snapshot.origin = Origin::Bucket;
            snapshot.generation = m.generation;
            snapshot.pending.clear();
            snapshot.staged_at = None;
            return Ok(Backed {
                snapshot,
                published: false,
                uploaded,
                unreadable: newest.unreadable,
                merged_same_term,
            });
        }
        let generation = newest.highest.max(head.generation) + 1;
        let manifest = Manifest {
            generation,
            term: writer.term,
            writer: writer.identity.to_string(),
            updated: now,
            cluster: writer.cluster.to_string(),
            files: head.file_entries(),
        };
        let body = serde_json::to_vec_pretty(&manifest).expect("a manifest always serialises");
        let path = manifest::manifest_path(generation);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        if writer.cancel.is_cancelled() {
            return Err(PublishError::Cancelled);
        }
        match store.put_opts(&path, PutPayload::from(body), opts).await {
            Ok(_) => {
                // Garbage collection removes old manifests, so a writer paused for long enough
                // can create a generation below the newest. Look once more before trusting it.
                let after = newest_manifest(store).await?;
                if after
                    .manifest
                    .as_ref()
                    .is_some_and(|m| m.generation > generation)
                {
                    tracing::warn!(
                        generation,
                        "published below the newest generation; merging it and publishing again"
                    );
                    head = Arc::new(Snapshot::build(
                        &manifest,
                        head.files.clone(),
                        head.missing.clone(),
                        Origin::Bucket,
                    ));
                    continue;
                }
                write_local_manifest(local, &manifest).await;
                let l = local.clone();
                if let Err(e) = blocking(STAGED, move || l.remove(STAGED)).await {
                    tracing::warn!(error = %e, "could not clear the staged lineage (harmless: the manifest supersedes it)");
                }
                return Ok(Backed {
                    snapshot: Snapshot::build(
                        &manifest,
                        head.files.clone(),
                        head.missing.clone(),
                        Origin::Bucket,
                    ),
                    published: true,
                    uploaded,
                    unreadable: newest.unreadable,
                    merged_same_term,
                });
            }
            Err(object_store::Error::AlreadyExists { .. }) => {
                tracing::warn!(generation, "lost a generation race; reading the winner");
            }
            Err(source) => return Err(store_err("put", &path)(source).into()),
        }
    }
    Err(PublishError::Contended)
}

/// Whether manifest `m` names exactly the lineage `head` holds (same paths), so publishing it
/// again would add nothing.
fn holds(m: &Manifest, head: &Snapshot) -> bool {
    let ours = head.file_entries();
    m.files.len() == ours.len()
        && m.files
            .iter()
            .all(|(p, e)| ours.get(p).is_some_and(|o| o.sha256 == e.sha256))
}

/// Merges `theirs` (a newer manifest, loaded on top of `ours`) into our lineage, slot by slot:
/// a slot only one side has is kept; where both differ, a complete set beats a partial one, then
/// the one whose data reaches further (even if it could not be loaded here: the better set
/// exists, and answers say it is unavailable), then one that loaded, then ours if we built it
/// (pending), else theirs. Nothing is dropped but what `keep` refuses (retention). The result
/// builds on `theirs`'s generation; what it holds beyond `theirs` is pending.
fn merge(
    ours: &Snapshot,
    theirs: &Snapshot,
    keep: impl Fn(&FileEntry) -> bool,
    now: DateTime<Utc>,
) -> Snapshot {
    type Slot = (crate::model::SetKind, Resolution, DateTime<Utc>);
    #[derive(Clone, Copy)]
    enum Pick<'a> {
        Loaded(&'a String, &'a (FileEntry, LoadedSet)),
        Missing(&'a String, &'a Missing),
    }
    impl Pick<'_> {
        fn entry(&self) -> &FileEntry {
            match self {
                Pick::Loaded(_, (e, _)) => e,
                Pick::Missing(_, m) => &m.entry,
            }
        }
        fn path(&self) -> &String {
            match self {
                Pick::Loaded(p, _) | Pick::Missing(p, _) => p,
            }
        }
    }
    fn picks(s: &Snapshot) -> BTreeMap<Slot, Pick<'_>> {
        s.files
            .iter()
            .map(|(p, v)| Pick::Loaded(p, v))
            .chain(s.missing.iter().map(|(p, m)| Pick::Missing(p, m)))
            .map(|pick| (pick.entry().slot(), pick))
            .collect()
    }
    let (mut mine, theirs_picks) = (picks(ours), picks(theirs));
    let mut chosen: Vec<Pick<'_>> = Vec::new();
    for (slot, t) in theirs_picks {
        let Some(o) = mine.remove(&slot) else {
            chosen.push(t);
            continue;
        };
        let pick = match better(o.entry(), t.entry()) {
            Some(std::cmp::Ordering::Greater) => o,
            Some(_) => t,
            None => match (o, t) {
                (Pick::Loaded(..), Pick::Missing(..)) => o,
                (Pick::Missing(..), Pick::Loaded(..)) => t,
                _ if ours.pending.contains(o.path()) => o,
                _ => t,
            },
        };
        chosen.push(pick);
    }
    chosen.extend(mine.into_values());
    let mut files = BTreeMap::new();
    let mut missing = BTreeMap::new();
    for pick in chosen {
        if !keep(pick.entry()) {
            continue;
        }
        match pick {
            Pick::Loaded(p, v) => {
                files.insert(p.clone(), v.clone());
            }
            Pick::Missing(p, m) => {
                missing.insert(p.clone(), m.clone());
            }
        }
    }
    let published = theirs.file_entries();
    let mut merged = theirs.clone();
    merged.files = files;
    merged.missing = missing;
    merged.rebuild_index();
    merged.pending = merged
        .file_entries()
        .into_keys()
        .filter(|p| !published.contains_key(p))
        .collect();
    merged.staged_at = (!merged.pending.is_empty()).then(|| ours.staged_at.unwrap_or(now));
    merged
}

/// Combines the lineage this replica serves with its local store's (a store read at start, with
/// sets staged while it led before), slot by slot as [`backup`] merges: what the local store
/// staged is kept, pending, so a promotion backs it up.
pub fn adopt_local(
    serving: &Snapshot,
    local: &Snapshot,
    writer: &Writer<'_>,
    now: DateTime<Utc>,
) -> Snapshot {
    merge(local, serving, |e| writer.retains(e, now), now)
}

/// Every set object in the bucket with its metadata.
async fn list_set_objects(
    store: &dyn ObjectStore,
) -> Result<Vec<object_store::ObjectMeta>, BackupError> {
    let mut out = Vec::new();
    for kind in ["allocations", "assets"] {
        let dir = Path::from(format!("{}/{kind}", manifest::OBJECT_DIR));
        let metas: Vec<_> = store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(store_err("list", &dir))?;
        out.extend(metas);
    }
    Ok(out)
}

/// Path → size of every set object in the bucket.
async fn list_objects(store: &dyn ObjectStore) -> Result<BTreeMap<String, u64>, BackupError> {
    Ok(list_set_objects(store)
        .await?
        .into_iter()
        .map(|m| (m.location.to_string(), m.size))
        .collect())
}

/// Path → last modification of every set object in the bucket.
async fn list_object_times(
    store: &dyn ObjectStore,
) -> Result<Vec<(String, DateTime<Utc>)>, BackupError> {
    Ok(list_set_objects(store)
        .await?
        .into_iter()
        .map(|m| (m.location.to_string(), m.last_modified))
        .collect())
}

/// The stored bytes of a set, verified against its entry: from the local store, or, when the
/// local copy is gone or damaged, encoded again from the set in memory (encoding is
/// deterministic, so the bytes hash the same).
async fn good_copy(
    local: &FileStore,
    path: &str,
    entry: &FileEntry,
    set: &LoadedSet,
) -> Result<bytes::Bytes, BackupError> {
    let (l, p, e, set) = (local.clone(), path.to_string(), entry.clone(), set.clone());
    tokio::task::spawn_blocking(move || {
        if let Ok(body) = l.read(&p)
            && manifest::verify(&e, &body)
        {
            return Ok(bytes::Bytes::from(body));
        }
        let encoded = manifest::encode(&set.to_etl()).map_err(|err| BackupError::local(p.clone(), err))?;
        if encoded.entry.sha256 != e.sha256 {
            return Err(BackupError::local(
                p.clone(),
                std::io::Error::other("no good copy: the local file is gone or damaged and the set encodes differently"),
            ));
        }
        // Mend the local store too.
        if let Err(err) = l.write(&p, &encoded.body) {
            tracing::warn!(path = %p, error = %err, "could not mend the local copy");
        }
        Ok(encoded.body)
    })
    .await
    .map_err(|e| BackupError::local("copy task", std::io::Error::other(e)))?
}

/// Publishes `sets` as the next generation on top of `base`: [`stage`] then [`backup`].
pub async fn publish(
    store: &dyn ObjectStore,
    local: &FileStore,
    base: Arc<Snapshot>,
    writer: &Writer<'_>,
    sets: Vec<EtlSet>,
    now: DateTime<Utc>,
) -> Result<Snapshot, PublishError> {
    let staged = stage(local, base, writer, sets, now).await?;
    Ok(backup(store, local, Arc::new(staged), writer, now)
        .await?
        .snapshot)
}

/// What a scrub found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Scrub {
    /// Objects the manifest names that the bucket lacked or held with the wrong size.
    pub absent: usize,
    /// Objects whose bytes were read and hashed.
    pub verified: usize,
    /// Objects found damaged (wrong hash) when read.
    pub damaged: usize,
    /// Objects put back from a good copy.
    pub repaired: usize,
    /// Objects with no good copy anywhere: their sets were stored again from memory under a new
    /// name (the lineage's next generation names it).
    pub lost: Vec<String>,
    /// Sets the lineage could not load before, loaded now (from the bucket, or from the local
    /// store and put back).
    pub recovered: usize,
    /// Whether the bucket's newest readable manifest is not this lineage's (deleted, damaged,
    /// or behind): the next backup publishes it again.
    pub manifest_behind: bool,
}

/// Verifies the bucket against the leader's published lineage and repairs it: every object the
/// manifest names must be there with its size (one list), and `deep` of them (from `cursor`,
/// round robin) are read and hashed; what is absent or damaged is put back from the local
/// store or re-encoded from memory.
pub async fn scrub(
    store: &dyn ObjectStore,
    local: &FileStore,
    head: &Snapshot,
    deep: usize,
    cursor: &mut usize,
) -> Result<Scrubbed, BackupError> {
    let mut report = Scrub::default();
    let recovered = recover_missing(store, local, head).await?;
    report.recovered = recovered.len();
    let newest = newest_manifest(store).await?;
    report.manifest_behind = newest
        .manifest
        .as_ref()
        .is_none_or(|m| m.generation < head.generation || !holds(m, head));
    let present = list_objects(store).await?;
    let published: Vec<(&String, &(FileEntry, LoadedSet))> = head
        .files
        .iter()
        .filter(|(p, _)| !head.pending.contains(*p))
        .collect();
    let mut damaged: Vec<&String> = Vec::new();
    if !published.is_empty() {
        for i in 0..deep.min(published.len()) {
            let (path, (entry, _)) = published[(*cursor + i) % published.len()];
            if present.get(path.as_str()) != Some(&entry.bytes) {
                continue;
            }
            let p = Path::from(path.as_str());
            let body = match store.get(&p).await {
                Ok(r) => r.bytes().await.map_err(store_err("get", &p))?,
                // Gone since the list: repaired below like any absent object.
                Err(object_store::Error::NotFound { .. }) => {
                    damaged.push(path);
                    continue;
                }
                Err(e) => return Err(store_err("get", &p)(e)),
            };
            report.verified += 1;
            if !manifest::verify(entry, &body) {
                report.damaged += 1;
                damaged.push(path);
            }
        }
        *cursor = (*cursor + deep) % published.len();
    }
    let mut replaced = Vec::new();
    for (path, (entry, set)) in &published {
        let absent = present.get(path.as_str()) != Some(&entry.bytes);
        if absent {
            report.absent += 1;
        }
        if !absent && !damaged.contains(path) {
            continue;
        }
        match good_copy(local, path, entry, set).await {
            Ok(body) => {
                let p = Path::from(path.as_str());
                store
                    .put(&p, PutPayload::from(body))
                    .await
                    .map_err(store_err("put", &p))?;
                report.repaired += 1;
            }
            // No copy of these bytes anywhere, but the set is in memory: store it again under
            // its new encoding and name, and the lineage follows (a new generation).
            Err(e) => {
                tracing::error!(%path, error = %e, "a backup object is lost; storing the set again from memory");
                let encoded = {
                    let set = set.clone();
                    blocking(path.as_str(), move || manifest::encode(&set.to_etl())).await?
                };
                let p = Path::from(encoded.path.as_str());
                store
                    .put(&p, PutPayload::from(encoded.body.clone()))
                    .await
                    .map_err(store_err("put", &p))?;
                let (l, rel, body) = (local.clone(), encoded.path.clone(), encoded.body.clone());
                if let Err(e) = blocking(rel.clone(), move || l.write(&rel, &body)).await {
                    tracing::warn!(error = %e, "could not keep the new copy locally");
                }
                report.lost.push((*path).clone());
                replaced.push(((*path).clone(), encoded.path, encoded.entry, set.clone()));
            }
        }
    }
    Ok(Scrubbed {
        report,
        recovered,
        replaced,
    })
}

/// What a scrub changes in the lineage besides the bucket.
#[derive(Debug)]
pub struct Scrubbed {
    /// What it found and did.
    pub report: Scrub,
    /// Sets that could not be loaded before, loaded now: path, entry, set.
    pub recovered: Vec<(String, FileEntry, LoadedSet)>,
    /// Sets whose stored bytes were lost everywhere, stored again: old path, new path, new
    /// entry, set.
    pub replaced: Vec<(String, String, FileEntry, LoadedSet)>,
}

/// Tries again the sets of the lineage that could not be loaded and whose retry time has come:
/// from the bucket, else from the local store (and then puts it back into the bucket).
async fn recover_missing(
    store: &dyn ObjectStore,
    local: &FileStore,
    head: &Snapshot,
) -> Result<Vec<(String, FileEntry, LoadedSet)>, BackupError> {
    let now = Instant::now();
    let mut out = Vec::new();
    for (path, m) in head.missing.iter().filter(|(_, m)| m.retry_at <= now) {
        let p = Path::from(path.as_str());
        let from_bucket = match store.get(&p).await {
            Ok(r) => r.bytes().await.ok(),
            Err(_) => None,
        };
        let (body, put_back) = match from_bucket.filter(|b| manifest::verify(&m.entry, b)) {
            Some(b) => (b, false),
            None => match local.read(path) {
                Ok(b) if manifest::verify(&m.entry, &b) => (bytes::Bytes::from(b), true),
                _ => continue,
            },
        };
        let Ok(set) = manifest::decode(&m.entry, &body) else {
            continue;
        };
        if put_back {
            store
                .put(&p, PutPayload::from(body))
                .await
                .map_err(store_err("put", &p))?;
        }
        tracing::info!(%path, "recovered a set the lineage could not load");
        out.push((path.clone(), m.entry.clone(), LoadedSet::from(set)));
    }
    Ok(out)
}

/// Deletes manifests older than the newest [`GC_KEEP_MANIFESTS`] and objects that neither a
/// remaining manifest nor `lineage` (the leader's own sets, which may be named by no manifest
/// yet, or by one the bucket lost) names, but only those older than `grace` ([`GC_GRACE`] by
/// default). Returns the number of objects deleted.
pub async fn collect_garbage(
    store: &dyn ObjectStore,
    newest: u64,
    now: DateTime<Utc>,
    grace: std::time::Duration,
    lineage: &BTreeSet<String>,
) -> Result<usize, BackupError> {
    let grace = Duration::from_std(grace).unwrap_or(Duration::MAX);
    let dir = Path::from(MANIFEST_DIR);
    let manifests: Vec<_> = store
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(store_err("list", &dir))?;
    let mut deleted = 0;
    let mut kept = Vec::new();
    for meta in &manifests {
        let Some(g) = manifest::parse_manifest_path(&meta.location) else {
            continue;
        };
        if g + GC_KEEP_MANIFESTS <= newest && meta.last_modified < now - grace {
            delete(store, &meta.location).await?;
            deleted += 1;
        } else {
            kept.push(g);
        }
    }
    let mut referenced = lineage.clone();
    for g in kept {
        match read_manifest(store, g).await {
            Ok(m) => referenced.extend(m.files.into_keys()),
            // Garbage names nothing a reader could use; one already gone names nothing.
            Err(BackupError::CorruptManifest { .. }) => {}
            Err(BackupError::Store { source, .. })
                if matches!(*source, object_store::Error::NotFound { .. }) => {}
            // A manifest that could not be read now may need anything: delete nothing.
            Err(e) => {
                tracing::warn!(generation = g, error = %e, "garbage collection skipped: a manifest could not be read");
                return Ok(deleted);
            }
        }
    }
    for (path, modified) in list_object_times(store).await? {
        if !referenced.contains(&path) && modified < now - grace {
            delete(store, &Path::from(path.as_str())).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

async fn delete(store: &dyn ObjectStore, path: &Path) -> Result<(), BackupError> {
    match store.delete(path).await {
        // Azure and local folders say NotFound for what is already gone; that is success.
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(source) => Err(store_err("delete", path)(source)),
    }
}
