//! The manifest protocol (DESIGN.md §5), one suite run on every store available here: the
//! in-memory store and a real local folder (the `FILESYSTEM` bucket).

mod support;

use std::sync::Arc;

use chrono::Utc;
use cost_model::storage::backup::{self, PublishError, Writer};
use cost_model::storage::filestore::FileStore;
use cost_model::storage::snapshot::Snapshot;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio_util::sync::CancellationToken;

/// A writer with Kubecost's default retentions.
fn writer<'a>(identity: &'a str, term: u64, cancel: &'a CancellationToken) -> Writer<'a> {
    Writer {
        identity,
        term,
        cancel,
        hourly_retention: chrono::Duration::hours(49),
        daily_retention: chrono::Duration::days(91),
    }
}

fn stores() -> Vec<(
    &'static str,
    Arc<dyn ObjectStore>,
    Option<tempfile::TempDir>,
)> {
    let dir = tempfile::tempdir().unwrap();
    let fs = cost_model::storage::bucket::filesystem(dir.path().to_str().unwrap()).unwrap();
    vec![
        (
            "memory",
            Arc::new(object_store::memory::InMemory::new()),
            None,
        ),
        ("filesystem", fs, Some(dir)),
    ]
}

async fn publish(
    store: &dyn ObjectStore,
    term: u64,
    identity: &str,
    base: Arc<Snapshot>,
) -> Result<Snapshot, PublishError> {
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let w = writer(identity, term, &cancel);
    backup::publish(
        store,
        &FileStore::new(dir.path()),
        base,
        &w,
        support::demo_sets(Utc::now()),
        Utc::now(),
    )
    .await
}

#[tokio::test]
async fn racing_writers_never_both_win_a_generation_and_terms_never_go_back() {
    for (name, store, _dir) in stores() {
        let base = Arc::new(
            publish(store.as_ref(), 1, "w1", Arc::default())
                .await
                .unwrap(),
        );
        // Eight writers of terms 1..=8 race from the same base generation.
        let tasks: Vec<_> = (1..=8u64)
            .map(|term| {
                let (store, base) = (store.clone(), base.clone());
                tokio::spawn(async move {
                    (
                        term,
                        publish(store.as_ref(), term, &format!("w{term}"), base).await,
                    )
                })
            })
            .collect();
        let mut won = Vec::new();
        for t in tasks {
            let (term, res) = t.await.unwrap();
            match res {
                Ok(s) => won.push((s.generation, term)),
                Err(PublishError::Fenced { term: newer, .. }) => {
                    assert!(newer > term, "{name}: fenced by a lower term")
                }
                Err(e) => panic!("{name}: term {term}: {e}"),
            }
        }
        let mut gens: Vec<u64> = won.iter().map(|(g, _)| *g).collect();
        gens.sort_unstable();
        gens.dedup();
        assert_eq!(
            gens.len(),
            won.len(),
            "{name}: two writers won one generation: {won:?}"
        );
        let newest = backup::latest_generation(store.as_ref()).await.unwrap();
        let mut last = 0;
        for g in 1..=newest {
            let m = backup::read_manifest(store.as_ref(), g).await.unwrap();
            assert!(
                m.term >= last,
                "{name}: generation {g} went back from term {last} to {}",
                m.term
            );
            last = m.term;
        }
        assert_eq!(
            last, 8,
            "{name}: the highest term ends up owning the bucket"
        );
    }
}

#[tokio::test]
async fn a_corrupt_object_is_reported_and_skipped_never_served() {
    for (name, store, _dir) in stores() {
        let s = publish(store.as_ref(), 1, "w", Arc::default())
            .await
            .unwrap();
        let (victim, entry) = s.file_entries().into_iter().next().unwrap();
        store
            .put(
                &Path::from(victim.as_str()),
                PutPayload::from(b"not what was written".to_vec()),
            )
            .await
            .unwrap();

        let loaded = backup::load_latest(store.as_ref(), &Snapshot::default())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(loaded.problems.len(), 1, "{name}");
        assert!(
            loaded.problems[0].contains("sha256"),
            "{name}: {:?}",
            loaded.problems
        );
        assert!(
            !loaded.files.contains_key(&victim),
            "{name}: corrupt object served"
        );
        assert_eq!(
            loaded.files.len(),
            s.files.len() - 1,
            "{name}: the rest is served"
        );
        assert!(entry.bytes > 0);
    }
}

#[tokio::test]
async fn a_reader_fetches_only_what_changed_and_skips_unchanged_generations() {
    for (name, store, _dir) in stores() {
        let s1 = Arc::new(
            publish(store.as_ref(), 1, "w", Arc::default())
                .await
                .unwrap(),
        );
        let loaded = backup::load_latest(store.as_ref(), &Snapshot::default())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(loaded.generation, s1.generation, "{name}");
        assert!(
            backup::load_latest(store.as_ref(), &loaded)
                .await
                .unwrap()
                .is_none(),
            "{name}: nothing newer"
        );
        // Identical sets republished reuse every loaded object.
        publish(store.as_ref(), 1, "w", s1).await.unwrap();
        let again = backup::load_latest(store.as_ref(), &loaded)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.generation, 2, "{name}");
        for (path, (_, set)) in &again.files {
            let (_, old) = &loaded.files[path];
            match (set, old) {
                (
                    cost_model::storage::snapshot::LoadedSet::Allocations(a),
                    cost_model::storage::snapshot::LoadedSet::Allocations(b),
                ) => {
                    assert!(Arc::ptr_eq(a, b), "{name}: {path} was fetched again")
                }
                (
                    cost_model::storage::snapshot::LoadedSet::Assets(a),
                    cost_model::storage::snapshot::LoadedSet::Assets(b),
                ) => {
                    assert!(Arc::ptr_eq(a, b), "{name}: {path} was fetched again")
                }
                _ => panic!("{name}: kind changed"),
            }
        }
    }
}

#[tokio::test]
async fn cancelled_writer_publishes_no_manifest() {
    for (name, store, _dir) in stores() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        cancel.cancel();
        let w = writer("w", 1, &cancel);
        let res = backup::publish(
            store.as_ref(),
            &FileStore::new(dir.path()),
            Arc::default(),
            &w,
            support::demo_sets(Utc::now()),
            Utc::now(),
        )
        .await;
        assert!(matches!(res, Err(PublishError::Cancelled)), "{name}");
        assert_eq!(
            backup::latest_generation(store.as_ref()).await.unwrap(),
            0,
            "{name}"
        );
    }
}

#[tokio::test]
async fn entries_that_failed_to_load_stay_in_the_next_manifest() {
    for (name, store, _dir) in stores() {
        let s = publish(store.as_ref(), 1, "w", Arc::default())
            .await
            .unwrap();
        // Corrupt the hourly allocation set; then publish only the daily sets on top.
        let (victim, _) = s
            .file_entries()
            .into_iter()
            .find(|(p, _)| p.contains("/allocations/1h/"))
            .unwrap();
        store
            .put(
                &Path::from(victim.as_str()),
                PutPayload::from(b"garbage".to_vec()),
            )
            .await
            .unwrap();
        let loaded = Arc::new(
            backup::load_latest(store.as_ref(), &Snapshot::default())
                .await
                .unwrap()
                .unwrap(),
        );
        assert!(loaded.missing.contains_key(&victim), "{name}");

        let dir = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        let w = writer("w", 1, &cancel);
        let daily: Vec<_> = support::demo_sets(Utc::now())
            .into_iter()
            .filter(|s| s.resolution() == cost_model::model::Resolution::Day)
            .collect();
        let next = backup::publish(
            store.as_ref(),
            &FileStore::new(dir.path()),
            loaded,
            &w,
            daily,
            Utc::now(),
        )
        .await
        .unwrap();
        let m = backup::read_manifest(store.as_ref(), next.generation)
            .await
            .unwrap();
        assert!(
            m.files.contains_key(&victim),
            "{name}: a read failure dropped data from the backup"
        );
    }
}

#[tokio::test]
async fn seeding_backs_up_the_local_store_into_an_empty_bucket() {
    let old: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let local_dir = tempfile::tempdir().unwrap();
    let local = FileStore::new(local_dir.path());
    let cancel = CancellationToken::new();
    let w = writer("w", 1, &cancel);
    let s = backup::publish(
        old.as_ref(),
        &local,
        Arc::default(),
        &w,
        support::demo_sets(Utc::now()),
        Utc::now(),
    )
    .await
    .unwrap();
    let new: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    assert_eq!(
        backup::seed(new.as_ref(), &local, &s).await.unwrap(),
        s.files.len()
    );
    for path in s.files.keys() {
        new.head(&Path::from(path.as_str())).await.unwrap();
    }
    assert_eq!(
        backup::seed(new.as_ref(), &local, &s).await.unwrap(),
        0,
        "nothing uploaded twice"
    );
}
