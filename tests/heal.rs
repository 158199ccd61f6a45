//! A backup that heals itself, on every backend (in memory, a folder, MinIO, Azurite): the
//! leader puts back what the bucket lost, rebuilds a wiped bucket, fills holes from its local
//! store after a restart, steps over unparseable manifests, never drops a set for a foreign
//! manifest and stops when another writer shares its term, cleans up after a crash, collects
//! garbage when a write fails, restores empty local stores, and prunes by retention.

mod stores;
mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Utc;
use cost_model::storage::backup;
use cost_model::storage::manifest::{self, Manifest};
use cost_model::storage::{CurrentSnapshot, GetStorageStatus, PollNow, ScrubNow, Snapshot};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use support::{node, node_with, until};

async fn snapshot(n: &support::Node) -> Arc<Snapshot> {
    n.replica.storage.send(CurrentSnapshot).await.unwrap()
}

/// A leader `identity` of `term` on `bucket` whose backfill is built and backed up.
async fn leader(identity: &str, term: u64, bucket: Arc<dyn ObjectStore>) -> support::Node {
    let n = node(identity, bucket);
    n.lead(term).await;
    settled(&n).await;
    n
}

/// Waits until `n` has built its backfill (yesterday, built last) and backed it all up.
async fn settled(n: &support::Node) {
    let yesterday = cost_model::model::Resolution::Day
        .window_containing(Utc::now() - chrono::Duration::days(1));
    until("the backfill is built and backed up", || async {
        let s = snapshot(n).await;
        [
            cost_model::model::SetKind::Allocations,
            cost_model::model::SetKind::Assets,
        ]
        .iter()
        .all(|k| s.has_complete(*k, cost_model::model::Resolution::Day, yesterday.start))
            && s.pending.is_empty()
            && s.generation > 0
    })
    .await;
}

/// Every set object in the bucket, path → bytes.
async fn objects(store: &dyn ObjectStore) -> Vec<(String, bytes::Bytes)> {
    let mut out = Vec::new();
    for kind in ["allocations", "assets"] {
        let dir = Path::from(format!("{}/{kind}", manifest::OBJECT_DIR));
        let metas: Vec<_> = store.list(Some(&dir)).try_collect().await.unwrap();
        for m in metas {
            // Collected between the list and the get: gone.
            if let Ok(r) = store.get(&m.location).await
                && let Ok(body) = r.bytes().await
            {
                out.push((m.location.to_string(), body));
            }
        }
    }
    out
}

/// Whether the bucket's newest readable manifest names exactly `lineage`, and every object it
/// names is there and hashes right.
async fn holds(store: &dyn ObjectStore, lineage: &Snapshot) -> bool {
    let Ok(newest) = backup::newest_manifest(store).await else {
        return false;
    };
    let Some(m) = newest.manifest else {
        return false;
    };
    if m.files != lineage.file_entries() {
        return false;
    }
    let present = objects(store).await;
    m.files.iter().all(|(path, entry)| {
        present
            .iter()
            .any(|(p, body)| p == path && manifest::verify(entry, body))
    })
}

async fn delete_all(store: &dyn ObjectStore, prefix: &str) {
    let metas: Vec<_> = store
        .list(Some(&Path::from(prefix)))
        .try_collect()
        .await
        .unwrap();
    for m in metas {
        let _ = store.delete(&m.location).await;
    }
}

#[actix_web::test]
async fn the_leader_puts_back_what_the_bucket_lost_or_damaged() {
    for b in stores::all().await {
        let l = leader("l", 1, b.store.clone()).await;
        let lineage = snapshot(&l).await;
        let paths: Vec<String> = lineage.files.keys().cloned().collect();
        // Two objects deleted, one corrupted (same size), one truncated.
        b.store
            .delete(&Path::from(paths[0].as_str()))
            .await
            .unwrap();
        b.store
            .delete(&Path::from(paths[1].as_str()))
            .await
            .unwrap();
        let good = b
            .store
            .get(&Path::from(paths[2].as_str()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let mut bad = good.to_vec();
        bad[good.len() / 2] ^= 0xff;
        b.store
            .put(&Path::from(paths[2].as_str()), PutPayload::from(bad))
            .await
            .unwrap();
        b.store
            .put(
                &Path::from(paths[3].as_str()),
                PutPayload::from(good.slice(..good.len() / 2)),
            )
            .await
            .unwrap();
        assert!(
            !holds(b.store.as_ref(), &lineage).await,
            "{}: damaged",
            b.name
        );

        // Each scrub reads sixteen objects: a few rounds read them all.
        for _ in 0..(lineage.files.len() / 16 + 2) {
            l.replica.storage.do_send(ScrubNow);
        }
        until("the scrubs put everything back", || async {
            holds(b.store.as_ref(), &lineage).await
        })
        .await;
        let st = l.replica.storage.send(GetStorageStatus).await.unwrap();
        let (_, report) = st.last_scrub.expect("a scrub ran");
        assert!(report.lost.is_empty(), "{}: {report:?}", b.name);
        let metrics = l.replica.state.metrics.encode();
        let repairs: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("costmodel_scrub_repairs_total "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        assert!(repairs >= 4.0, "{}: repairs counted: {repairs}", b.name);
    }
}

#[actix_web::test]
async fn a_wiped_bucket_is_rebuilt_from_the_leader() {
    for b in stores::all().await {
        let l = leader("l", 1, b.store.clone()).await;
        let lineage = snapshot(&l).await;
        delete_all(b.store.as_ref(), "etl").await;
        assert!(objects(b.store.as_ref()).await.is_empty());
        l.replica.storage.do_send(ScrubNow);
        until("the leader rebuilt the bucket", || async {
            let now = snapshot(&l).await;
            now.file_entries() == lineage.file_entries() && holds(b.store.as_ref(), &now).await
        })
        .await;
        // A new follower loads every set.
        let f = node("f", b.store.clone());
        f.election.demote(Some("l"));
        until("the follower loaded", || async {
            snapshot(&f).await.is_loaded()
        })
        .await;
        let s = snapshot(&f).await;
        assert!(s.missing.is_empty(), "{}: {:?}", b.name, s.missing.keys());
        assert_eq!(s.file_entries(), lineage.file_entries(), "{}", b.name);
    }
}

#[actix_web::test]
async fn a_restarted_leader_fills_the_holes_from_its_local_store() {
    for b in stores::all().await {
        let first = leader("l", 1, b.store.clone()).await;
        let lineage = snapshot(&first).await;
        let store_copy = tempfile::tempdir().unwrap();
        copy_dir(first.etl_dir.path(), store_copy.path());
        drop(first);
        // The bucket loses some objects (of complete sets, which no ETL run rebuilds) while
        // nobody leads.
        let lost: Vec<String> = lineage
            .files
            .iter()
            .filter(|(_, (e, _))| e.data_end >= e.end)
            .map(|(p, _)| p.clone())
            .take(5)
            .collect();
        for p in &lost {
            b.store.delete(&Path::from(p.as_str())).await.unwrap();
        }
        // The leader restarts on its own (intact) store, under a new term.
        let again = node_with("l", b.store.clone(), |p| {
            p.etl_dir = store_copy.path().to_path_buf()
        });
        again.lead(2).await;
        until("the holes are filled", || async {
            let now = snapshot(&again).await;
            now.pending.is_empty() && holds(b.store.as_ref(), &now).await
        })
        .await;
        let now = snapshot(&again).await;
        for p in &lost {
            assert!(now.files.contains_key(p), "{}: {p} survived", b.name);
        }
        assert!(now.missing.is_empty(), "{}", b.name);
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for file in support::files_under(from) {
        let rel = file.strip_prefix(from).unwrap();
        std::fs::create_dir_all(to.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(&file, to.join(rel)).unwrap();
    }
}

#[actix_web::test]
async fn readers_and_writers_step_over_unparseable_manifests() {
    for b in stores::all().await {
        let l = leader("l", 1, b.store.clone()).await;
        let good = snapshot(&l).await.generation;
        // Garbage in the next generation and at a far one.
        for g in [good + 1, good + 500] {
            b.store
                .put(
                    &manifest::manifest_path(g),
                    PutPayload::from_static(b"{not json"),
                )
                .await
                .unwrap();
        }
        // A reader falls back to the newest manifest that parses, and says what it skipped.
        let f = node("f", b.store.clone());
        f.election.demote(Some("l"));
        until("the follower loaded", || async {
            snapshot(&f).await.is_loaded()
        })
        .await;
        assert_eq!(snapshot(&f).await.generation, good, "{}", b.name);
        let st = f.replica.storage.send(GetStorageStatus).await.unwrap();
        let skipped: Vec<u64> = st
            .unreadable_manifests
            .iter()
            .map(|m| m.generation)
            .collect();
        assert_eq!(skipped, vec![good + 500, good + 1], "{}", b.name);
        assert!(st.not_ready.is_none(), "{}: serving", b.name);

        // A writer publishes above every occupied generation, without adopting the garbage.
        let out = l
            .replica
            .storage
            .send(cost_model::storage::WriteSets {
                term: 1,
                sets: support::demo_sets(Utc::now() - chrono::Duration::days(3)),
            })
            .await
            .unwrap();
        assert!(
            matches!(out, cost_model::storage::WriteOutcome::Written { generation } if generation == good + 501),
            "{}: {out:?}",
            b.name
        );
        f.replica.poller.do_send(PollNow);
        until("the follower loaded the new generation", || async {
            snapshot(&f).await.generation == good + 501
        })
        .await;
        let st = f.replica.storage.send(GetStorageStatus).await.unwrap();
        assert!(st.unreadable_manifests.is_empty(), "{}", b.name);
    }
}

/// A manifest written at the next generation by someone else, over `files`.
async fn foreign_manifest(
    store: &dyn ObjectStore,
    generation: u64,
    term: u64,
    writer: &str,
    files: std::collections::BTreeMap<String, manifest::FileEntry>,
) {
    let m = Manifest {
        generation,
        term,
        writer: writer.to_string(),
        updated: Utc::now(),
        cluster: String::new(),
        files,
    };
    store
        .put(
            &manifest::manifest_path(generation),
            PutPayload::from(serde_json::to_vec(&m).unwrap()),
        )
        .await
        .unwrap();
}

#[actix_web::test]
async fn an_empty_manifest_of_a_lower_term_drops_no_set() {
    for b in stores::all().await {
        let l = leader("l", 2, b.store.clone()).await;
        let lineage = snapshot(&l).await;
        // A careless restore (or another tool) writes an empty manifest of an older term.
        foreign_manifest(
            b.store.as_ref(),
            lineage.generation + 1,
            1,
            "restore-tool",
            Default::default(),
        )
        .await;
        let out = l
            .replica
            .storage
            .send(cost_model::storage::WriteSets {
                term: 2,
                sets: support::demo_sets(Utc::now() - chrono::Duration::days(3)),
            })
            .await
            .unwrap();
        assert!(
            matches!(out, cost_model::storage::WriteOutcome::Written { .. }),
            "{}: {out:?}",
            b.name
        );
        let now = snapshot(&l).await;
        let before: BTreeSet<String> = lineage.file_entries().into_keys().collect();
        let after: BTreeSet<String> = now.file_entries().into_keys().collect();
        assert!(before.is_subset(&after), "{}: a set was dropped", b.name);
        assert!(holds(b.store.as_ref(), &now).await, "{}", b.name);
    }
}

#[actix_web::test]
async fn another_writer_under_our_term_stops_us_loudly_and_drops_nothing() {
    for b in stores::all().await {
        let l = leader("l", 1, b.store.clone()).await;
        let lineage = snapshot(&l).await;
        // Someone else publishes, under our own term, after us: an empty manifest.
        foreign_manifest(
            b.store.as_ref(),
            lineage.generation + 1,
            1,
            "intruder",
            Default::default(),
        )
        .await;
        let out = l
            .replica
            .storage
            .send(cost_model::storage::WriteSets {
                term: 1,
                sets: support::demo_sets(Utc::now() - chrono::Duration::days(3)),
            })
            .await
            .unwrap();
        assert!(
            matches!(out, cost_model::storage::WriteOutcome::Failed(_)),
            "{}: {out:?}",
            b.name
        );
        let st = l.replica.storage.send(GetStorageStatus).await.unwrap();
        let foreign = st.foreign_writer.expect("reported").to_string();
        assert!(foreign.contains("intruder"), "{}: {foreign}", b.name);
        assert!(!st.writes_enabled, "{}: writes stopped", b.name);
        // Nothing of ours was dropped: still served, and the intruder's manifest not adopted.
        let now = snapshot(&l).await;
        for p in lineage.file_entries().keys() {
            assert!(
                now.file_entries().contains_key(p),
                "{}: {p} dropped",
                b.name
            );
        }
        let newest = backup::newest_manifest(b.store.as_ref())
            .await
            .unwrap()
            .manifest
            .unwrap();
        assert_eq!(
            newest.writer, "intruder",
            "{}: nothing published over it",
            b.name
        );
    }
}

#[actix_web::test]
async fn two_standalone_writers_on_one_bucket_are_caught() {
    for b in stores::all().await {
        // Two single installs (term 0 both) pointed at one bucket.
        let a = leader("cluster-a", 0, b.store.clone()).await;
        let other = node_with("cluster-b", b.store.clone(), |p| {
            p.backfill = chrono::Duration::days(2)
        });
        other.lead(0).await;
        until("b published over a", || async {
            let s = snapshot(&other).await;
            s.writer == "cluster-b" && s.pending.is_empty()
        })
        .await;
        // A writes again, finds b published under its own term after it: stops.
        let out = a
            .replica
            .storage
            .send(cost_model::storage::WriteSets {
                term: 0,
                sets: support::demo_sets(Utc::now() - chrono::Duration::days(4)),
            })
            .await
            .unwrap();
        assert!(
            matches!(out, cost_model::storage::WriteOutcome::Failed(_)),
            "{}: {out:?}",
            b.name
        );
        let st = a.replica.storage.send(GetStorageStatus).await.unwrap();
        assert!(
            st.foreign_writer
                .is_some_and(|e| e.to_string().contains("cluster-b")),
            "{}",
            b.name
        );
        let metrics = a.replica.state.metrics.encode();
        assert!(
            metrics.contains(r#"costmodel_backups_total{result="foreign_writer"} 1"#),
            "{metrics}"
        );
    }
}

#[actix_web::test]
async fn temporary_files_a_crash_left_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("etl/v1/allocations/1d");
    std::fs::create_dir_all(&objects).unwrap();
    let temp = objects.join(".1795132800-1795219200.abcdef.json.zst.tmp-4242");
    std::fs::write(&temp, b"half a write").unwrap();
    let keep = objects.join("keep.txt");
    std::fs::write(&keep, b"not ours to delete").unwrap();
    let n = node_with("l", Arc::new(object_store::memory::InMemory::new()), |p| {
        p.etl_dir = dir.path().to_path_buf()
    });
    n.lead(1).await;
    assert!(!temp.exists(), "the temp file is gone");
    assert!(keep.exists());
}

#[actix_web::test]
async fn garbage_is_collected_when_a_write_fails() {
    for b in stores::all().await {
        let n = node_with("l", b.store.clone(), |p| {
            p.gc_grace = std::time::Duration::ZERO
        });
        n.lead(1).await;
        settled(&n).await;
        // Unreferenced objects fill the bucket.
        for i in 0..5 {
            b.store
                .put(
                    &Path::from(format!(
                        "etl/v1/allocations/1d/0-{i}.0000000000000000.json.zst"
                    )),
                    PutPayload::from_static(b"garbage"),
                )
                .await
                .unwrap();
        }
        let before = objects(b.store.as_ref()).await.len();
        // The bucket refuses writes (full): the failed write runs a collection.
        n.faults.set_failing_puts(true);
        let out = n
            .replica
            .storage
            .send(cost_model::storage::WriteSets {
                term: 1,
                sets: support::demo_sets(Utc::now() - chrono::Duration::days(3)),
            })
            .await
            .unwrap();
        assert!(
            matches!(out, cost_model::storage::WriteOutcome::Staged { .. }),
            "{}: {out:?}",
            b.name
        );
        until("the garbage is collected", || async {
            objects(b.store.as_ref()).await.len() == before - 5
        })
        .await;
        n.faults.set_failing_puts(false);
        until("the backup caught up", || async {
            snapshot(&n).await.pending.is_empty()
        })
        .await;
    }
}

#[actix_web::test]
async fn empty_local_stores_are_restored_from_the_bucket() {
    for b in stores::all().await {
        let l = leader("l", 1, b.store.clone()).await;
        let lineage = snapshot(&l).await;
        let in_bucket: BTreeSet<String> = lineage.file_entries().into_keys().collect();
        let local = |n: &support::Node| -> BTreeSet<String> {
            support::files_under(n.etl_dir.path())
                .into_iter()
                .filter_map(|f| {
                    let rel = f
                        .strip_prefix(n.etl_dir.path())
                        .ok()?
                        .to_string_lossy()
                        .to_string();
                    manifest::is_set_object(&rel).then_some(rel)
                })
                .collect()
        };
        // A follower restores its store on its first poll.
        let f = node("f", b.store.clone());
        f.election.demote(Some("l"));
        until("the follower loaded and restored its store", || async {
            snapshot(&f).await.is_loaded() && local(&f) == in_bucket
        })
        .await;
        let loaded = snapshot(&f).await.generation;
        assert!(
            f.etl_dir
                .path()
                .join(manifest::manifest_path(loaded).to_string())
                .is_file(),
            "{}: and the manifest of generation {loaded}",
            b.name
        );
        // A new leader with an empty store restores it when promoted.
        let next = node("next", b.store.clone());
        next.lead(2).await;
        until("the new leader restored its store", || async {
            in_bucket.is_subset(&local(&next))
        })
        .await;
    }
}

#[actix_web::test]
async fn sets_past_retention_leave_the_manifest_the_bucket_and_the_local_store() {
    for b in stores::all().await {
        let first = leader("l", 1, b.store.clone()).await;
        let before = snapshot(&first).await;
        let store_copy = tempfile::tempdir().unwrap();
        copy_dir(first.etl_dir.path(), store_copy.path());
        drop(first);
        // The same replica restarts with three hours of hourly retention.
        let cutoff = Utc::now() - chrono::Duration::hours(3);
        let expired: Vec<String> = before
            .file_entries()
            .into_iter()
            .filter(|(_, e)| e.resolution == cost_model::model::Resolution::Hour && e.end <= cutoff)
            .map(|(p, _)| p)
            .collect();
        assert!(expired.len() > 10, "{}: hourly sets to expire", b.name);
        let n = node_with("l", b.store.clone(), |p| {
            p.etl_dir = store_copy.path().to_path_buf();
            p.gc_grace = std::time::Duration::ZERO;
            p.hourly_retention = chrono::Duration::hours(3);
        });
        n.lead(2).await;
        until(
            "expired sets leave the manifest and the local store",
            || async {
                let Ok(newest) = backup::newest_manifest(b.store.as_ref()).await else {
                    return false;
                };
                newest.manifest.is_some_and(|m| {
                    expired
                        .iter()
                        .all(|p| !m.files.contains_key(p) && !store_copy.path().join(p).exists())
                })
            },
        )
        .await;
        // Older manifests keep their objects for readers of those generations; once ten newer
        // generations are out, a collection takes them from the bucket.
        for day in 0..cost_model::storage::backup::GC_KEEP_MANIFESTS {
            let out = n
                .replica
                .storage
                .send(cost_model::storage::WriteSets {
                    term: 2,
                    sets: support::demo_sets(Utc::now() - chrono::Duration::days(3 + day as i64)),
                })
                .await
                .unwrap();
            assert!(matches!(
                out,
                cost_model::storage::WriteOutcome::Written { .. }
            ));
        }
        n.replica
            .storage
            .do_send(cost_model::storage::CollectGarbageNow);
        until("expired sets are gone from the bucket", || async {
            let in_bucket: BTreeSet<String> = objects(b.store.as_ref())
                .await
                .into_iter()
                .map(|(p, _)| p)
                .collect();
            expired.iter().all(|p| !in_bucket.contains(p))
        })
        .await;
        // Daily sets are untouched.
        let now = snapshot(&n).await;
        for (p, e) in before.file_entries() {
            if e.resolution == cost_model::model::Resolution::Day && e.data_end >= e.end {
                assert!(now.file_entries().contains_key(&p), "{}: {p}", b.name);
            }
        }
    }
}

#[actix_web::test]
async fn holes_in_the_local_store_are_filled_from_the_bucket_at_promotion() {
    for b in stores::all().await {
        let first = leader("l", 1, b.store.clone()).await;
        let lineage = snapshot(&first).await;
        let store_copy = tempfile::tempdir().unwrap();
        copy_dir(first.etl_dir.path(), store_copy.path());
        drop(first);
        let damaged: Vec<String> = lineage
            .files
            .iter()
            .filter(|(_, (e, _))| e.data_end >= e.end)
            .map(|(p, _)| p.clone())
            .take(3)
            .collect();
        for p in &damaged {
            std::fs::write(store_copy.path().join(p), b"damaged on disk").unwrap();
        }
        let again = node_with("l", b.store.clone(), |p| {
            p.etl_dir = store_copy.path().to_path_buf()
        });
        again.lead(2).await;
        let now = snapshot(&again).await;
        for p in &damaged {
            assert!(
                now.files.contains_key(p),
                "{}: {p} loaded from the bucket",
                b.name
            );
            let local = std::fs::read(store_copy.path().join(p)).unwrap();
            assert!(
                manifest::verify(&now.files[p].0, &local),
                "{}: {p} mended on disk",
                b.name
            );
        }
    }
}

#[actix_web::test]
async fn a_standalone_restarted_under_a_new_name_merges_its_predecessor_and_goes_on() {
    for b in stores::all().await {
        let old = leader("pod-a", 0, b.store.clone()).await;
        let lineage = snapshot(&old).await;
        drop(old);
        // A new pod (new name, empty store) of the same single install.
        let new = node("pod-b", b.store.clone());
        new.lead(0).await;
        let out = new
            .replica
            .storage
            .send(cost_model::storage::WriteSets {
                term: 0,
                sets: support::demo_sets(Utc::now() - chrono::Duration::days(3)),
            })
            .await
            .unwrap();
        assert!(
            matches!(out, cost_model::storage::WriteOutcome::Written { .. }),
            "{}: {out:?}",
            b.name
        );
        let st = new.replica.storage.send(GetStorageStatus).await.unwrap();
        assert!(st.foreign_writer.is_none(), "{}: not foreign", b.name);
        assert_eq!(
            st.merged_same_term.map(|(w, _)| w).as_deref(),
            Some("pod-a"),
            "{}: but said",
            b.name
        );
        // Every window of the predecessor is still there, with at least as much data (the
        // current hour and day are rebuilt further).
        let now = snapshot(&new).await.file_entries();
        for (p, e) in lineage.file_entries() {
            assert!(
                now.values()
                    .any(|n| n.slot() == e.slot() && n.data_end >= e.data_end),
                "{}: {p} kept",
                b.name
            );
        }
    }
}

#[actix_web::test]
async fn garbage_collection_never_takes_the_lineage_when_manifests_are_lost() {
    for b in stores::all().await {
        let n = node_with("l", b.store.clone(), |p| {
            p.gc_grace = std::time::Duration::ZERO
        });
        n.lead(1).await;
        settled(&n).await;
        let lineage = snapshot(&n).await;
        delete_all(b.store.as_ref(), manifest::MANIFEST_DIR).await;
        // A failed write runs a collection while no manifest names anything.
        n.faults.set_failing_puts(true);
        let _ = n
            .replica
            .storage
            .send(cost_model::storage::WriteSets {
                term: 1,
                sets: support::demo_sets(Utc::now() - chrono::Duration::days(3)),
            })
            .await
            .unwrap();
        // A second failing write: the first collection has certainly run by its end (both
        // hold the write lock).
        let _ = n
            .replica
            .storage
            .send(cost_model::storage::WriteSets {
                term: 1,
                sets: support::demo_sets(Utc::now() - chrono::Duration::days(4)),
            })
            .await
            .unwrap();
        let present: BTreeSet<String> = objects(b.store.as_ref())
            .await
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        for p in lineage.files.keys() {
            assert!(present.contains(p), "{}: {p} was collected", b.name);
        }
        n.faults.set_failing_puts(false);
        l_settles_again(&n, b.store.as_ref()).await;
    }
}

/// Waits until the leader has backed everything up again and the bucket holds its lineage.
async fn l_settles_again(n: &support::Node, store: &dyn ObjectStore) {
    n.replica.storage.do_send(ScrubNow);
    until("the bucket holds the lineage again", || async {
        let s = snapshot(n).await;
        s.pending.is_empty() && holds(store, &s).await
    })
    .await;
}

#[actix_web::test]
async fn sets_staged_while_the_bucket_was_down_survive_a_restart_that_followed_first() {
    for b in stores::all().await {
        let first = leader("l", 1, b.store.clone()).await;
        first.faults.set_failing_puts(true);
        let out = first
            .replica
            .storage
            .send(cost_model::storage::WriteSets {
                term: 1,
                sets: support::demo_sets(Utc::now() - chrono::Duration::days(5)),
            })
            .await
            .unwrap();
        assert!(
            matches!(out, cost_model::storage::WriteOutcome::Staged { .. }),
            "{out:?}"
        );
        let staged: BTreeSet<String> = snapshot(&first).await.pending.clone();
        assert!(!staged.is_empty());
        let store_copy = tempfile::tempdir().unwrap();
        copy_dir(first.etl_dir.path(), store_copy.path());
        drop(first);
        // It restarts as a follower first (its polls load the bucket, which lacks the staged
        // sets), then leads again.
        let again = node_with("l", b.store.clone(), |p| {
            p.etl_dir = store_copy.path().to_path_buf()
        });
        again.election.demote(Some("other"));
        until("the follower loaded the bucket", || async {
            snapshot(&again).await.is_loaded()
        })
        .await;
        again.lead(2).await;
        until("the staged sets reached the bucket", || async {
            let Ok(newest) = backup::newest_manifest(b.store.as_ref()).await else {
                return false;
            };
            newest
                .manifest
                .is_some_and(|m| staged.iter().all(|p| m.files.contains_key(p)))
        })
        .await;
    }
}

#[actix_web::test]
async fn another_clusters_manifest_is_never_merged() {
    for b in stores::all().await {
        let l = leader("l", 1, b.store.clone()).await;
        let lineage = snapshot(&l).await;
        let m = Manifest {
            generation: lineage.generation + 1,
            term: 0,
            writer: "other".into(),
            updated: Utc::now(),
            cluster: "cluster-two".into(),
            files: Default::default(),
        };
        b.store
            .put(
                &manifest::manifest_path(m.generation),
                PutPayload::from(serde_json::to_vec(&m).unwrap()),
            )
            .await
            .unwrap();
        let out = l
            .replica
            .storage
            .send(cost_model::storage::WriteSets {
                term: 1,
                sets: support::demo_sets(Utc::now() - chrono::Duration::days(3)),
            })
            .await
            .unwrap();
        assert!(
            matches!(out, cost_model::storage::WriteOutcome::Failed(_)),
            "{}: {out:?}",
            b.name
        );
        let st = l.replica.storage.send(GetStorageStatus).await.unwrap();
        assert!(
            st.foreign_writer
                .is_some_and(|e| e.to_string().contains("cluster-two")),
            "{}",
            b.name
        );
    }
}
