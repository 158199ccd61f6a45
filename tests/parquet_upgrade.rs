//! Upgrading to the Parquet bucket format loses nothing: a bucket written entirely by a release
//! before it (every set `.json.zst`) is loaded by a new leader and served unchanged; the leader
//! rewrites it as Parquet over a few ordinary publishes, a bounded number of sets each, every
//! intermediate generation (a mix of both forms) loads whole; in the end every entry is
//! `.parquet` and decodes to the very sets the old release wrote, and the old objects are
//! collected as garbage.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use cost_model::etl::costing;
use cost_model::etl::demo::DemoCluster;
use cost_model::model::{EtlSet, Resolution, SetKind, Window};
use cost_model::storage::backup::{self, Backoff, UPGRADES_PER_WRITE};
use cost_model::storage::manifest::{self, FileEntry, Manifest};
use cost_model::storage::snapshot::Snapshot;
use cost_model::storage::{CollectGarbageNow, CurrentSnapshot, WriteOutcome, WriteSets};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use sha2::{Digest, Sha256};
use support::{node_with, until};

type Slot = (SetKind, Resolution, DateTime<Utc>);

fn slot(set: &EtlSet) -> Slot {
    (set.kind(), set.resolution(), set.window().start)
}

/// Priced demo sets of `w` at `res`, from the cluster the test replicas run.
fn sets_of(w: Window, res: Resolution) -> Vec<EtlSet> {
    let c = DemoCluster::new(support::SEED, support::PODS);
    let (a, s) = costing::price(&c.compute(w, w.end), res, "cluster-one");
    vec![EtlSet::Allocations(a), EtlSet::Assets(s)]
}

/// What the old release had built: the days 2 to 6 before today and six hours about a day
/// ago (within the hourly retention), both kinds; none of them a window the new leader's own
/// ETL (one hour of backfill) rebuilds.
fn old_sets(now: DateTime<Utc>) -> Vec<EtlSet> {
    let mut out = Vec::new();
    for d in 2..=6 {
        out.extend(sets_of(
            Resolution::Day.window_containing(now - Duration::days(d)),
            Resolution::Day,
        ));
    }
    for h in 26..32 {
        out.extend(sets_of(
            Resolution::Hour.window_containing(now - Duration::hours(h)),
            Resolution::Hour,
        ));
    }
    out
}

/// Writes `sets` and generation 1 into `store` as a release before Parquet did: each set's
/// JSON, zstd level 3, at `<kind>/<res>/<start>-<end>.<sha16>.json.zst`, then the manifest,
/// created if absent.
async fn old_release_bucket(store: &dyn ObjectStore, sets: &[EtlSet]) {
    let mut files = BTreeMap::new();
    for set in sets {
        let body = zstd::encode_all(serde_json::to_vec(set).unwrap().as_slice(), 3).unwrap();
        let sha = hex::encode(Sha256::digest(&body));
        let w = set.window();
        let path = format!(
            "etl/v1/{}/{}/{}-{}.{}.json.zst",
            set.kind().as_str(),
            set.resolution(),
            w.start.timestamp(),
            w.end.timestamp(),
            &sha[..16]
        );
        files.insert(
            path.clone(),
            FileEntry {
                sha256: sha,
                bytes: body.len() as u64,
                kind: set.kind(),
                resolution: set.resolution(),
                start: w.start,
                end: w.end,
                data_end: set.data_end(),
            },
        );
        store
            .put(&Path::from(path), PutPayload::from(body))
            .await
            .unwrap();
    }
    let m = Manifest {
        generation: 1,
        term: 1,
        writer: "old-leader".into(),
        updated: Utc::now(),
        cluster: "cluster-one".into(),
        files,
    };
    let opts = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    store
        .put_opts(
            &manifest::manifest_path(1),
            PutPayload::from(serde_json::to_vec_pretty(&m).unwrap()),
            opts,
        )
        .await
        .unwrap();
}

/// The sets a snapshot serves, by slot.
fn served(s: &Snapshot) -> BTreeMap<Slot, EtlSet> {
    s.files
        .values()
        .map(|(e, set)| (e.slot(), set.to_etl()))
        .collect()
}

/// How many entries of a manifest are still `.json.zst`.
fn old_form(m: &Manifest) -> usize {
    m.files.keys().filter(|p| manifest::is_json_zst(p)).count()
}

async fn set_objects(store: &dyn ObjectStore) -> Vec<String> {
    store
        .list(Some(&Path::from("etl/v1")))
        .map_ok(|m| m.location.to_string())
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .filter(|p| manifest::is_set_object(p))
        .collect()
}

#[actix_web::test]
async fn a_json_zst_bucket_is_served_unchanged_and_rewritten_as_parquet_over_a_few_publishes() {
    let folder = tempfile::tempdir().unwrap();
    let stores: [(&str, Arc<dyn ObjectStore>); 2] = [
        ("memory", Arc::new(object_store::memory::InMemory::new())),
        (
            "filesystem",
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(folder.path()).unwrap()),
        ),
    ];
    for (name, store) in stores {
        let now = Utc::now();
        let sets = old_sets(now);
        let want: BTreeMap<Slot, EtlSet> = sets.iter().map(|s| (slot(s), s.clone())).collect();
        assert!(
            sets.len() > 2 * UPGRADES_PER_WRITE,
            "enough sets to need several publishes"
        );
        old_release_bucket(store.as_ref(), &sets).await;

        // A new leader loads it and serves every set as the old release stored it.
        let n = node_with("new", store.clone(), |p| {
            p.backfill = Duration::hours(1);
            p.gc_grace = std::time::Duration::ZERO;
        });
        n.lead(2).await;
        let snapshot = n.replica.storage.send(CurrentSnapshot).await.unwrap();
        let serving = served(&snapshot);
        for (s, set) in &want {
            assert_eq!(serving.get(s), Some(set), "{name}: {s:?} served unchanged");
        }

        // Ordinary writes (a daily set of a week ago, again and again; the leader's own ETL
        // writes too) carry the rewrite along.
        let filler = sets_of(
            Resolution::Day.window_containing(now - Duration::days(8)),
            Resolution::Day,
        );
        let mut writes = 0;
        loop {
            let newest = backup::newest_manifest(store.as_ref())
                .await
                .unwrap()
                .manifest
                .unwrap();
            if old_form(&newest) == 0 {
                break;
            }
            assert!(
                writes < 10,
                "{name}: still {} old sets after {writes} writes",
                old_form(&newest)
            );
            let out = n
                .replica
                .storage
                .send(WriteSets {
                    term: 2,
                    sets: filler.clone(),
                })
                .await
                .unwrap();
            assert!(
                matches!(out, WriteOutcome::Written { .. }),
                "{name}: {out:?}"
            );
            writes += 1;
        }

        // Each generation rewrote a bounded number, and the intermediate ones, each a mix of
        // both forms, load whole and serve the same sets.
        let newest = backup::latest_generation(store.as_ref()).await.unwrap();
        let mut before = sets.len();
        let mut publishes_that_rewrote = 0;
        for g in 2..=newest {
            let m = backup::read_manifest(store.as_ref(), g).await.unwrap();
            let left = old_form(&m);
            assert!(
                left <= before && before - left <= UPGRADES_PER_WRITE,
                "{name}: generation {g} went from {before} to {left} old sets"
            );
            if left < before {
                publishes_that_rewrote += 1;
                let loaded = backup::load_manifest(
                    store.as_ref(),
                    &Snapshot::default(),
                    &m,
                    Backoff {
                        first: std::time::Duration::from_secs(3600),
                        max: std::time::Duration::from_secs(3600),
                    },
                    None,
                )
                .await
                .unwrap();
                assert!(
                    loaded.missing.is_empty(),
                    "{name}: generation {g} loads whole"
                );
                let got = served(&loaded);
                for (s, set) in &want {
                    assert_eq!(got.get(s), Some(set), "{name}: generation {g}, {s:?}");
                }
            }
            before = left;
        }
        assert_eq!(before, 0);
        assert!(
            publishes_that_rewrote >= sets.len().div_ceil(UPGRADES_PER_WRITE),
            "{name}: {publishes_that_rewrote} publishes did it"
        );

        // Every entry is Parquet now and decodes to exactly what the old release wrote.
        let m = backup::read_manifest(store.as_ref(), newest).await.unwrap();
        let mut checked = 0;
        for (path, entry) in &m.files {
            assert!(path.ends_with(".parquet"), "{name}: {path}");
            let Some(set) = want.get(&entry.slot()) else {
                continue;
            };
            let body = store
                .get(&Path::from(path.as_str()))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert!(body.starts_with(b"PAR1"));
            assert_eq!(
                &manifest::decode(entry, &body).unwrap(),
                set,
                "{name}: {path}"
            );
            checked += 1;
        }
        assert_eq!(checked, want.len());
        let snapshot = n.replica.storage.send(CurrentSnapshot).await.unwrap();
        let serving = served(&snapshot);
        for (s, set) in &want {
            assert_eq!(
                serving.get(s),
                Some(set),
                "{name}: {s:?} still served unchanged"
            );
        }

        // The old objects are garbage once no manifest garbage collection keeps names them:
        // after GC_KEEP_MANIFESTS more publishes, in the bucket and in the leader's local store.
        for d in 0..backup::GC_KEEP_MANIFESTS as i64 {
            let sets = sets_of(
                Resolution::Day.window_containing(now - Duration::days(9 + d)),
                Resolution::Day,
            );
            let out = n
                .replica
                .storage
                .send(WriteSets { term: 2, sets })
                .await
                .unwrap();
            assert!(
                matches!(out, WriteOutcome::Written { .. }),
                "{name}: {out:?}"
            );
        }
        n.replica.storage.do_send(CollectGarbageNow);
        until("the json.zst objects are collected", || async {
            set_objects(store.as_ref())
                .await
                .iter()
                .all(|p| !manifest::is_json_zst(p))
        })
        .await;
        until("the local store holds no json.zst", || async {
            support::files_under(n.etl_dir.path())
                .iter()
                .all(|f| !f.to_string_lossy().ends_with(".json.zst"))
        })
        .await;
    }
}
