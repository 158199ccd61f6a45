//! Bucket I/O: loading the newest generation, publishing a new one with create-if-absent, and
//! collecting garbage. Written against `Arc<dyn ObjectStore>` so every backend (and the
//! fault-injecting wrapper) runs the same code.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio_util::sync::CancellationToken;

use super::filestore::FileStore;
use super::manifest::{self, FileEntry, MANIFEST_DIR, Manifest};
use super::snapshot::{LoadedSet, Snapshot};
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

/// A bucket failure.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The object store failed; worth retrying.
    #[error("bucket {op} {path}: {source}")]
    Store {
        op: &'static str,
        path: String,
        #[source]
        source: object_store::Error,
    },
    /// The newest manifest does not parse: nothing newer can be trusted until a writer
    /// publishes a good one.
    #[error("manifest {path} is corrupt: {reason}")]
    CorruptManifest { path: String, reason: String },
    /// Local file store failure.
    #[error("local file store {path}: {source}")]
    Local {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn store_err(
    op: &'static str,
    path: &Path,
) -> impl FnOnce(object_store::Error) -> BackupError + use<> {
    let path = path.to_string();
    move |source| BackupError::Store { op, path, source }
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
/// verified against its sha256, and one that fails is reported in `problems` and left out.
/// Returns `None` when the bucket holds exactly what `base` holds. A generation *older* than
/// `base` is returned too (the bucket was replaced or reset): callers decide what to trust.
pub async fn load_latest(
    store: &dyn ObjectStore,
    base: &Snapshot,
) -> Result<Option<Snapshot>, BackupError> {
    let generation = latest_generation(store).await?;
    if generation == 0 || (generation == base.generation && base.missing.is_empty()) {
        return Ok(None);
    }
    let manifest = read_manifest(store, generation).await?;
    Ok(Some(load_manifest(store, base, &manifest).await?))
}

/// Loads the sets `manifest` names on top of `base`.
pub async fn load_manifest(
    store: &dyn ObjectStore,
    base: &Snapshot,
    manifest: &Manifest,
) -> Result<Snapshot, BackupError> {
    let mut files = BTreeMap::new();
    let mut wanted = Vec::new();
    for (path, entry) in &manifest.files {
        match base.files.get(path) {
            Some((e, set)) if e.sha256 == entry.sha256 => {
                files.insert(path.clone(), (entry.clone(), set.clone()));
            }
            _ => wanted.push((path.clone(), entry.clone())),
        }
    }
    let fetched: Vec<(String, FileEntry, Result<bytes::Bytes, object_store::Error>)> =
        futures::stream::iter(wanted)
            .map(|(path, entry)| async move {
                let p = Path::from(path.as_str());
                let body = match store.get(&p).await {
                    Ok(r) => r.bytes().await,
                    Err(e) => Err(e),
                };
                (path, entry, body)
            })
            .buffer_unordered(FETCH_CONCURRENCY)
            .collect()
            .await;
    let mut bodies = Vec::with_capacity(fetched.len());
    let mut problems = Vec::new();
    for (path, entry, body) in fetched {
        match body {
            Ok(body) => bodies.push((path, entry, body)),
            // A missing object is damage to report, not a reason to serve nothing.
            Err(object_store::Error::NotFound { .. }) => {
                tracing::error!(%path, "backup object named by the manifest is missing");
                problems.push(format!("{path}: missing"));
            }
            Err(source) => {
                return Err(BackupError::Store {
                    op: "get",
                    path,
                    source,
                });
            }
        }
    }
    // Hashing, decompressing and parsing are CPU work: keep them off the actors' thread so
    // queries are never held up by a load.
    let decoded = tokio::task::spawn_blocking(move || {
        bodies
            .into_iter()
            .map(|(path, entry, body)| {
                let set = manifest::decode(&entry, &body);
                (path, entry, set)
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("decoding does not panic");
    for (path, entry, set) in decoded {
        match set {
            Ok(set) => {
                files.insert(path, (entry, LoadedSet::from(set)));
            }
            Err(e) => {
                tracing::error!(%path, error = %e, "skipping corrupt backup object");
                problems.push(format!("{path}: {e}"));
            }
        }
    }
    Ok(Snapshot::build(manifest, files, problems))
}

/// Loads the newest generation the local file store holds, verifying every object.
pub fn load_local(local: &FileStore) -> Result<Option<Snapshot>, BackupError> {
    let local_err = |path: &str| {
        let path = path.to_string();
        move |source| BackupError::Local { path, source }
    };
    let Some(manifest) = local.latest_manifest().map_err(local_err("manifests"))? else {
        return Ok(None);
    };
    let mut files = BTreeMap::new();
    let mut problems = Vec::new();
    for (path, entry) in &manifest.files {
        match local
            .read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| manifest::decode(entry, &b).map_err(|e| e.to_string()))
        {
            Ok(set) => {
                files.insert(path.clone(), (entry.clone(), LoadedSet::from(set)));
            }
            Err(e) => problems.push(format!("{path}: {e}")),
        }
    }
    Ok(Some(Snapshot::build(&manifest, files, problems)))
}

/// Why a publish did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A writer with a higher term has published: this writer is deposed.
    #[error("fenced: generation {generation} was written by term {term}")]
    Fenced { generation: u64, term: u64 },
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

/// What publish needs to know about the writer.
pub struct Writer<'a> {
    pub identity: &'a str,
    pub term: u64,
    pub cancel: &'a CancellationToken,
    /// Sets whose window started before these are dropped from the manifest.
    pub hourly_retention: Duration,
    pub daily_retention: Duration,
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
    .expect("encoding does not panic");
    let encoded = encoded.map_err(|source| BackupError::Local {
        path: "encode".into(),
        source,
    })?;
    for e in &encoded {
        if writer.cancel.is_cancelled() {
            return Err(PublishError::Cancelled);
        }
        let local_path = local.root().join(&e.path).display().to_string();
        let (l, path, body) = (local.clone(), e.path.clone(), e.body.clone());
        tokio::task::spawn_blocking(move || l.write(&path, &body))
            .await
            .expect("local write task does not panic")
            .map_err(|source| BackupError::Local {
                path: local_path,
                source,
            })?;
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
        files.retain(|_, (e, _)| {
            let keep_for = match e.resolution {
                Resolution::Hour => writer.hourly_retention,
                Resolution::Day => writer.daily_retention,
            };
            e.end > now - keep_for
        });
        // Entries the base could not load are carried forward unless replaced: a failed read
        // must never drop data from the backup.
        let carried = base
            .missing
            .iter()
            .filter(|(_, e)| !new_sets.values().any(|(n, _)| n.slot() == e.slot()))
            .map(|(p, e)| (p.clone(), e.clone()));
        let manifest = Manifest {
            generation,
            term: writer.term,
            writer: writer.identity.to_string(),
            updated: now,
            files: files
                .iter()
                .map(|(p, (e, _))| (p.clone(), e.clone()))
                .chain(carried)
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
                    base = Arc::new(load_manifest(store, &base, &theirs).await?);
                    continue;
                }
                let rel = path.to_string();
                let l = local.clone();
                let local_path = local.root().join(&rel).display().to_string();
                // The bucket has the generation; a failed local copy only costs a reload later.
                if let Err(e) = tokio::task::spawn_blocking(move || l.write(&rel, &body))
                    .await
                    .expect("no panic")
                {
                    tracing::warn!(path = %local_path, error = %e, "could not keep a local copy of the manifest");
                }
                return Ok(Snapshot::build(&manifest, files, Vec::new()));
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
                base = Arc::new(load_manifest(store, &base, &theirs).await?);
            }
            Err(source) => {
                return Err(BackupError::Store {
                    op: "put",
                    path: path.to_string(),
                    source,
                }
                .into());
            }
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
            Err(source) => {
                return Err(BackupError::Store {
                    op: "head",
                    path: path.clone(),
                    source,
                });
            }
        }
        let body = local.read(path).map_err(|source| BackupError::Local {
            path: path.clone(),
            source,
        })?;
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
        Err(source) => Err(BackupError::Store {
            op: "delete",
            path: path.to_string(),
            source,
        }),
    }
}
