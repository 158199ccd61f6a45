//! Bucket I/O: loading the newest generation, publishing a new one with create-if-absent, and
//! collecting garbage. Written against `Arc<dyn ObjectStore>` so every backend (and the
//! fault-injecting wrapper) runs the same code.

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
/// Manifests and objects younger than this are never collected, so a reader that has just
/// listed an older generation can still fetch it.
pub const GC_GRACE: std::time::Duration = std::time::Duration::from_secs(600);
/// How many of the newest manifests garbage collection always keeps.
const GC_KEEP_MANIFESTS: u64 = 10;

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

/// The newest manifest generation in the bucket (0 when there is none).
pub async fn latest_generation(store: &dyn ObjectStore) -> Result<u64, BackupError> {
    let dir = Path::from(MANIFEST_DIR);
    let metas: Vec<_> = store
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(store_err("list", &dir))?;
    Ok(metas
        .iter()
        .filter_map(|m| manifest::parse_manifest_path(&m.location))
        .max()
        .unwrap_or(0))
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

/// Loads the newest generation on top of `base`: only objects `base` lacks are fetched, each is
/// verified against its sha256, and one that fails is left out and recorded in the snapshot's
/// `missing` with a time before which it is not fetched again (`backoff`). A base loaded from the
/// bucket whose generation is still the newest is [`Loaded::Unchanged`] unless one of its missing
/// objects is due; a base from the local store is always checked against the bucket's manifest
/// (the bucket vouches for it object by object). A generation *older* than `base` is returned
/// too (the bucket was replaced or reset): callers decide what to trust.
pub async fn load_latest(
    store: &dyn ObjectStore,
    base: &Snapshot,
    backoff: Backoff,
) -> Result<Loaded, BackupError> {
    let generation = latest_generation(store).await?;
    if generation == 0 {
        return Ok(Loaded::Empty);
    }
    let now = Instant::now();
    if base.origin == Origin::Bucket
        && generation == base.generation
        && !base.missing.values().any(|m| m.retry_at <= now)
    {
        return Ok(Loaded::Unchanged);
    }
    let manifest = read_manifest(store, generation).await?;
    Ok(Loaded::New(
        load_manifest(store, base, &manifest, backoff).await?,
    ))
}

/// Loads the sets `manifest` names on top of `base`: sets `base` holds with the same sha256 are
/// shared, objects `base` failed to load are fetched again only once their retry time has come.
pub async fn load_manifest(
    store: &dyn ObjectStore,
    base: &Snapshot,
    manifest: &Manifest,
    backoff: Backoff,
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
    let fetched: Vec<_> = futures::stream::iter(wanted)
        .map(|(path, entry, failures)| async move {
            let p = Path::from(path.as_str());
            let body = match store.get(&p).await {
                Ok(r) => r.bytes().await,
                Err(e) => Err(e),
            };
            (path, entry, failures, body)
        })
        .buffer_unordered(FETCH_CONCURRENCY)
        .collect()
        .await;
    let mut bodies = Vec::with_capacity(fetched.len());
    let mut failed = |path: String, entry: FileEntry, failures: u32, problem: ObjectProblem| {
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
    };
    for (path, entry, failures, body) in fetched {
        match body {
            Ok(body) => bodies.push((path, entry, failures, body)),
            // A missing or unreadable object is damage to report, not a reason to serve
            // nothing: the rest of the generation loads, this set is retried with backoff.
            Err(object_store::Error::NotFound { .. }) => {
                failed(path, entry, failures, ObjectProblem::Missing);
            }
            Err(source) => {
                let why = crate::redact::userinfo(&source.to_string()).into_owned();
                failed(path, entry, failures, ObjectProblem::Unreadable(why));
            }
        }
    }
    // Hashing, decompressing and parsing are CPU work: keep them off the actors' thread so
    // queries are never held up by a load.
    let decoded = tokio::task::spawn_blocking(move || {
        bodies
            .into_iter()
            .map(|(path, entry, failures, body)| {
                let set = manifest::decode(&entry, &body);
                (path, entry, failures, set)
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| BackupError::local("decoding task", std::io::Error::other(e)))?;
    for (path, entry, failures, set) in decoded {
        match set {
            Ok(set) => {
                files.insert(path, (entry, LoadedSet::from(set)));
            }
            Err(e) => failed(path, entry, failures, ObjectProblem::from(e)),
        }
    }
    Ok(Snapshot::build(manifest, files, missing, Origin::Bucket))
}

/// Loads the newest generation the local file store holds, verifying every object.
pub fn load_local(local: &FileStore) -> Result<Option<Snapshot>, BackupError> {
    let Some(manifest) = local.latest_manifest().map_err(|e| {
        BackupError::local(local.root().join(MANIFEST_DIR).display().to_string(), e)
    })?
    else {
        return Ok(None);
    };
    let now = Instant::now();
    let mut files = BTreeMap::new();
    let mut missing = BTreeMap::new();
    for (path, entry) in &manifest.files {
        let loaded = match local.read(path) {
            Ok(body) => manifest::decode(entry, &body).map_err(ObjectProblem::from),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ObjectProblem::Missing),
            Err(e) => Err(ObjectProblem::Unreadable(e.to_string())),
        };
        match loaded {
            Ok(set) => {
                files.insert(path.clone(), (entry.clone(), LoadedSet::from(set)));
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
    Ok(Some(Snapshot::build(
        &manifest,
        files,
        missing,
        Origin::Local,
    )))
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
            PublishError::Fenced { .. } | PublishError::Cancelled => false,
            PublishError::Contended => true,
            PublishError::Backup(e) => e.is_retryable(),
        }
    }

    /// A short, fixed name for metrics (`result` label of `costmodel_backup_writes`).
    pub fn label(&self) -> &'static str {
        match self {
            PublishError::Fenced { .. } => "fenced",
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
    /// Its fencing term.
    pub term: u64,
    /// Fired when leadership ends: nothing more is written.
    pub cancel: &'a CancellationToken,
    /// Hourly sets whose window ended longer ago than this are dropped from the manifest.
    pub hourly_retention: Duration,
    /// Daily sets likewise.
    pub daily_retention: Duration,
    /// Retry policy for objects a reload (after a lost race) fails to fetch.
    pub backoff: Backoff,
}

/// Publishes `sets` as the next generation on top of `base`: objects first (local store, then
/// bucket), then the manifest with create-if-absent, then the local manifest. Returns the new
/// snapshot.
pub async fn publish(
    store: &dyn ObjectStore,
    local: &FileStore,
    base: Arc<Snapshot>,
    writer: &Writer<'_>,
    sets: Vec<EtlSet>,
    now: DateTime<Utc>,
) -> Result<Snapshot, PublishError> {
    let (encoded, sets) = tokio::task::spawn_blocking(move || {
        let encoded = sets
            .iter()
            .map(manifest::encode)
            .collect::<Result<Vec<_>, _>>();
        (encoded, sets)
    })
    .await
    .map_err(|e| BackupError::local("encoding task", std::io::Error::other(e)))?;
    let encoded = encoded.map_err(|e| BackupError::local("encode", e))?;
    for e in &encoded {
        if writer.cancel.is_cancelled() {
            return Err(PublishError::Cancelled);
        }
        let local_path = local.root().join(&e.path).display().to_string();
        let (l, path, body) = (local.clone(), e.path.clone(), e.body.clone());
        tokio::task::spawn_blocking(move || l.write(&path, &body))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|e| BackupError::local(local_path, e))?;
        let p = Path::from(e.path.as_str());
        store
            .put(&p, PutPayload::from(e.body.clone()))
            .await
            .map_err(store_err("put", &p))?;
    }
    let new_sets: BTreeMap<String, (FileEntry, LoadedSet)> = encoded
        .into_iter()
        .zip(sets)
        .map(|(e, set)| (e.path, (e.entry, LoadedSet::from(set))))
        .collect();

    let mut base = base;
    for _ in 0..PUBLISH_ATTEMPTS {
        if writer.cancel.is_cancelled() {
            return Err(PublishError::Cancelled);
        }
        if base.term > writer.term {
            return Err(PublishError::Fenced {
                generation: base.generation,
                term: base.term,
            });
        }
        let generation = base.generation + 1;
        let mut files: BTreeMap<String, (FileEntry, LoadedSet)> = base
            .files
            .iter()
            .filter(|(_, (e, _))| !new_sets.values().any(|(n, _)| n.slot() == e.slot()))
            .map(|(p, v)| (p.clone(), v.clone()))
            .collect();
        files.extend(new_sets.iter().map(|(p, v)| (p.clone(), v.clone())));
        let retained = |e: &FileEntry| {
            let keep_for = match e.resolution {
                Resolution::Hour => writer.hourly_retention,
                Resolution::Day => writer.daily_retention,
            };
            e.end > now - keep_for
        };
        files.retain(|_, (e, _)| retained(e));
        // Entries the base could not load are carried forward unless replaced or expired: a
        // failed read must never drop data from the backup.
        let carried: BTreeMap<String, Missing> = base
            .missing
            .iter()
            .filter(|(_, m)| retained(&m.entry))
            .filter(|(_, m)| !new_sets.values().any(|(n, _)| n.slot() == m.entry.slot()))
            .map(|(p, m)| (p.clone(), m.clone()))
            .collect();
        let manifest = Manifest {
            generation,
            term: writer.term,
            writer: writer.identity.to_string(),
            updated: now,
            files: files
                .iter()
                .map(|(p, (e, _))| (p.clone(), e.clone()))
                .chain(carried.iter().map(|(p, m)| (p.clone(), m.entry.clone())))
                .collect(),
        };
        let body = serde_json::to_vec_pretty(&manifest).expect("a manifest always serialises");
        let path = manifest::manifest_path(generation);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match store
            .put_opts(&path, PutPayload::from(body.clone()), opts)
            .await
        {
            Ok(_) => {
                // Garbage collection removes old manifests, so a writer paused for long enough
                // can create a generation below the newest. Look once more before trusting it.
                let newest = latest_generation(store).await?;
                if newest > generation {
                    let theirs = read_manifest(store, newest).await?;
                    if theirs.term > writer.term {
                        return Err(PublishError::Fenced {
                            generation: theirs.generation,
                            term: theirs.term,
                        });
                    }
                    tracing::warn!(
                        generation,
                        newest,
                        "published below the newest generation; retrying on top of it"
                    );
                    base = Arc::new(load_manifest(store, &base, &theirs, writer.backoff).await?);
                    continue;
                }
                let rel = path.to_string();
                let l = local.clone();
                let local_path = local.root().join(&rel).display().to_string();
                // The bucket has the generation; a failed local copy only costs a reload later.
                if let Err(e) = tokio::task::spawn_blocking(move || l.write(&rel, &body))
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|r| r)
                {
                    tracing::warn!(path = %local_path, error = %e, "could not keep a local copy of the manifest");
                }
                return Ok(Snapshot::build(&manifest, files, carried, Origin::Bucket));
            }
            Err(object_store::Error::AlreadyExists { .. }) => {
                // Someone else took this generation: reload and decide.
                let newest = latest_generation(store).await?;
                let theirs = read_manifest(store, newest.max(generation)).await?;
                if theirs.term > writer.term {
                    return Err(PublishError::Fenced {
                        generation: theirs.generation,
                        term: theirs.term,
                    });
                }
                tracing::warn!(generation, their_term = theirs.term, our_term = writer.term, writer = %theirs.writer,
                    "lost a generation to a writer of no higher term; publishing on top of it");
                base = Arc::new(load_manifest(store, &base, &theirs, writer.backoff).await?);
            }
            Err(source) => return Err(store_err("put", &path)(source).into()),
        }
    }
    Err(PublishError::Contended)
}

/// Uploads, from the local file store, every object `snapshot` names that the bucket lacks: run
/// when a leader finds the bucket behind its own store (a new or replaced bucket), so the next
/// manifest never names objects the bucket does not have. Returns how many were uploaded.
pub async fn seed(
    store: &dyn ObjectStore,
    local: &FileStore,
    snapshot: &Snapshot,
) -> Result<usize, BackupError> {
    let mut uploaded = 0;
    for path in snapshot.files.keys() {
        let p = Path::from(path.as_str());
        match store.head(&p).await {
            Ok(_) => continue,
            Err(object_store::Error::NotFound { .. }) => {}
            Err(source) => return Err(store_err("head", &p)(source)),
        }
        let body = local
            .read(path)
            .map_err(|e| BackupError::local(path.clone(), e))?;
        store
            .put(&p, PutPayload::from(body))
            .await
            .map_err(store_err("put", &p))?;
        uploaded += 1;
    }
    Ok(uploaded)
}

/// Deletes manifests older than the newest few and objects no remaining manifest names, but
/// only those older than [`GC_GRACE`]. Returns the number of objects deleted.
pub async fn collect_garbage(
    store: &dyn ObjectStore,
    newest: u64,
    now: DateTime<Utc>,
) -> Result<usize, BackupError> {
    let grace = Duration::from_std(GC_GRACE).expect("grace fits");
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
    let mut referenced = BTreeSet::new();
    for g in kept {
        match read_manifest(store, g).await {
            Ok(m) => referenced.extend(m.files.into_keys()),
            // An unreadable kept manifest: we cannot know what it needs, so delete nothing.
            Err(e) => {
                tracing::warn!(generation = g, error = %e, "garbage collection skipped: unreadable manifest");
                return Ok(deleted);
            }
        }
    }
    for kind in ["allocations", "assets"] {
        let dir = Path::from(format!("{}/{kind}", manifest::OBJECT_DIR));
        let objects: Vec<_> = store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(store_err("list", &dir))?;
        for meta in objects {
            if !referenced.contains(meta.location.as_ref()) && meta.last_modified < now - grace {
                delete(store, &meta.location).await?;
                deleted += 1;
            }
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
