//! The manifest protocol (`src/storage/manifest.rs`, the README's "How it works"), one suite
//! run on every backend: in memory, a real local folder (the `FILESYSTEM` bucket), MinIO (S3)
//! and Azurite (Azure Blob).

mod stores;
mod support;

use std::sync::Arc;

use chrono::Utc;
use cost_model::storage::backup::{self, Backoff, Loaded, PublishError, Writer};
use cost_model::storage::filestore::FileStore;
use cost_model::storage::snapshot::Snapshot;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio_util::sync::CancellationToken;

/// Objects that fail to load are not fetched again for an hour (unless a test says otherwise).
const BACKOFF: Backoff = Backoff {
    first: std::time::Duration::from_secs(3600),
    max: std::time::Duration::from_secs(3600),
};

/// A writer with Kubecost's default retentions.
fn writer<'a>(identity: &'a str, term: u64, cancel: &'a CancellationToken) -> Writer<'a> {
    Writer {
        identity,
        cluster: "cluster-one",
        term,
        cancel,
        hourly_retention: chrono::Duration::hours(49),
        daily_retention: chrono::Duration::days(91),
        backoff: BACKOFF,
    }
}

/// The snapshot a load produced; anything else fails the test.
fn new(loaded: Loaded) -> Snapshot {
    match loaded {
        Loaded::New(s) => s,
        other => panic!("expected a new snapshot, got {other:?}"),
    }
}

async fn publish(
    store: &dyn ObjectStore,
    term: u64,
    identity: &str,
    base: Arc<Snapshot>,
) -> Result<Snapshot, PublishError> {
    publish_day(store, term, identity, base, 0).await
}

/// Publishes the demo sets of the day `days_back` days before yesterday, as `identity` of `term`.
async fn publish_day(
    store: &dyn ObjectStore,
    term: u64,
    identity: &str,
    base: Arc<Snapshot>,
    days_back: i64,
) -> Result<Snapshot, PublishError> {
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let w = writer(identity, term, &cancel);
    backup::publish(
        store,
        &FileStore::new(dir.path()),
        base,
        &w,
        support::demo_sets(Utc::now() - chrono::Duration::days(days_back)),
        Utc::now(),
    )
    .await
}

#[tokio::test]
async fn racing_writers_never_both_win_a_generation_and_terms_never_go_back() {
    for b in stores::all().await {
        let (name, store) = (b.name, b.store.clone());
        let base = Arc::new(
            publish(store.as_ref(), 1, "w1", Arc::default())
                .await
                .unwrap(),
        );
        // Eight writers of terms 1..=8 race from the same base generation, each with sets of
        // its own day.
        let tasks: Vec<_> = (1..=8u64)
            .map(|term| {
                let (store, base) = (store.clone(), base.clone());
                tokio::spawn(async move {
                    let identity = format!("w{term}");
                    // A writer that loses five races in a row gives up with `Contended` and
                    // tries again later, as storage's backup retry does (eight racers can beat
                    // one five times on a busy machine).
                    let mut res;
                    let mut tries = 0;
                    loop {
                        res =
                            publish_day(store.as_ref(), term, &identity, base.clone(), term as i64)
                                .await;
                        tries += 1;
                        if !matches!(res, Err(PublishError::Contended)) || tries == 4 {
                            break;
                        }
                    }
                    (term, res)
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
    for b in stores::all().await {
        let (name, store) = (b.name, b.store.clone());
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

        let loaded = new(
            backup::load_latest(store.as_ref(), &Snapshot::default(), BACKOFF, None)
                .await
                .unwrap()
                .loaded,
        );
        assert_eq!(loaded.missing.len(), 1, "{name}");
        assert!(
            matches!(
                loaded.missing[&victim].problem,
                cost_model::storage::snapshot::ObjectProblem::Checksum { .. }
            ),
            "{name}: {:?}",
            loaded.missing
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
    for b in stores::all().await {
        let (name, store) = (b.name, b.store.clone());
        let s1 = Arc::new(
            publish(store.as_ref(), 1, "w", Arc::default())
                .await
                .unwrap(),
        );
        let loaded = new(
            backup::load_latest(store.as_ref(), &Snapshot::default(), BACKOFF, None)
                .await
                .unwrap()
                .loaded,
        );
        assert_eq!(loaded.generation, s1.generation, "{name}");
        assert!(
            matches!(
                backup::load_latest(store.as_ref(), &loaded, BACKOFF, None)
                    .await
                    .unwrap()
                    .loaded,
                Loaded::Unchanged
            ),
            "{name}: nothing newer"
        );
        // Identical sets republished publish nothing.
        let same = publish(store.as_ref(), 1, "w", s1.clone()).await.unwrap();
        assert_eq!(
            same.generation, s1.generation,
            "{name}: nothing new, no generation"
        );
        // Another day's sets published: the reader fetches those and reuses every other.
        publish_day(store.as_ref(), 1, "w", s1, 1).await.unwrap();
        let again = new(backup::load_latest(store.as_ref(), &loaded, BACKOFF, None)
            .await
            .unwrap()
            .loaded);
        assert_eq!(again.generation, 2, "{name}");
        assert!(
            again.files.len() > loaded.files.len(),
            "{name}: the new day's sets"
        );
        for (path, (_, set)) in again
            .files
            .iter()
            .filter(|(p, _)| loaded.files.contains_key(*p))
        {
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
    for b in stores::all().await {
        let (name, store) = (b.name, b.store.clone());
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
    for b in stores::all().await {
        let (name, store) = (b.name, b.store.clone());
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
        let loaded = Arc::new(new(backup::load_latest(
            store.as_ref(),
            &Snapshot::default(),
            BACKOFF,
            None,
        )
        .await
        .unwrap()
        .loaded));
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
async fn a_lineage_is_backed_up_whole_into_an_empty_or_replaced_bucket() {
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
    // A new, empty bucket: the whole lineage goes up, then a manifest naming it.
    let new: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let backed = backup::backup(new.as_ref(), &local, Arc::new(s.clone()), &w, Utc::now())
        .await
        .unwrap();
    assert!(backed.published);
    assert_eq!(backed.uploaded, s.files.len());
    for path in s.files.keys() {
        new.head(&Path::from(path.as_str())).await.unwrap();
    }
    let m = backup::read_manifest(new.as_ref(), backed.snapshot.generation)
        .await
        .unwrap();
    assert_eq!(m.files, s.file_entries(), "the whole lineage, nothing else");
    // Backing up again finds the bucket holds it: nothing uploaded, nothing published.
    let again = backup::backup(
        new.as_ref(),
        &local,
        Arc::new(backed.snapshot),
        &w,
        Utc::now(),
    )
    .await
    .unwrap();
    assert!(!again.published);
    assert_eq!(again.uploaded, 0, "nothing uploaded twice");
}

#[tokio::test]
async fn an_object_that_fails_to_load_is_fetched_again_only_after_its_backoff() {
    use cost_model::storage::faulty::FaultyStore;
    for b in stores::all().await {
        let (name, store) = (b.name, b.store.clone());
        let s = publish(store.as_ref(), 1, "w", Arc::default())
            .await
            .unwrap();
        let (victim, _) = s
            .file_entries()
            .into_iter()
            .find(|(p, _)| p.contains("/allocations/1d/"))
            .unwrap();
        let good = store
            .get(&Path::from(victim.as_str()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        store.delete(&Path::from(victim.as_str())).await.unwrap();
        let (counted, faults) = FaultyStore::new(store.clone());

        // The first load reports it missing and schedules its retry an hour away.
        let first = new(
            backup::load_latest(&counted, &Snapshot::default(), BACKOFF, None)
                .await
                .unwrap()
                .loaded,
        );
        assert_eq!(first.missing[&victim].failures, 1, "{name}");
        assert_eq!(
            first.missing[&victim].problem,
            cost_model::storage::snapshot::ObjectProblem::Missing
        );
        // Polls before the retry time neither read the manifest nor fetch the object again.
        for _ in 0..3 {
            let reads = faults.reads();
            let again = backup::load_latest(&counted, &first, BACKOFF, None)
                .await
                .unwrap()
                .loaded;
            assert!(matches!(again, Loaded::Unchanged), "{name}: {again:?}");
            assert_eq!(faults.reads() - reads, 1, "{name}: one list, no fetch");
        }

        // Once its retry time has come (here: moved to now), it is fetched again, and failing
        // again doubles its pause.
        let due = |s: &Snapshot| {
            let mut s = s.clone();
            for m in s.missing.values_mut() {
                m.retry_at = std::time::Instant::now();
            }
            s
        };
        let short = Backoff {
            first: std::time::Duration::from_secs(60),
            max: std::time::Duration::from_secs(3600),
        };
        let reads = faults.reads();
        let second = new(backup::load_latest(&counted, &due(&first), short, None)
            .await
            .unwrap()
            .loaded);
        assert_eq!(
            faults.reads() - reads,
            3,
            "{name}: list, manifest, and the one object"
        );
        let m = &second.missing[&victim];
        assert_eq!(m.failures, 2, "{name}");
        let pause = m.retry_at - std::time::Instant::now();
        assert!(
            pause > std::time::Duration::from_secs(100)
                && pause <= std::time::Duration::from_secs(120),
            "{name}: the second failure waits twice the first pause: {pause:?}"
        );

        // Once the object is back, the next due retry loads it.
        store
            .put(&Path::from(victim.as_str()), PutPayload::from(good))
            .await
            .unwrap();
        let healed = new(backup::load_latest(&counted, &due(&second), short, None)
            .await
            .unwrap()
            .loaded);
        assert!(healed.missing.is_empty(), "{name}");
        assert!(healed.files.contains_key(&victim), "{name}");
    }
}

#[tokio::test]
async fn a_deposed_writer_is_fenced_even_when_its_successor_holds_the_same_sets() {
    for b in stores::all().await {
        let (name, store) = (b.name, b.store.clone());
        let dir = tempfile::tempdir().unwrap();
        let local = FileStore::new(dir.path());
        let cancel = CancellationToken::new();
        let old = writer("old", 1, &cancel);
        let s = backup::publish(
            store.as_ref(),
            &local,
            Arc::default(),
            &old,
            support::demo_sets(Utc::now()),
            Utc::now(),
        )
        .await
        .unwrap();
        // The successor claims the bucket with the very same sets under term 2.
        let successor_dir = tempfile::tempdir().unwrap();
        let new = writer("new", 2, &cancel);
        let claimed = backup::backup(
            store.as_ref(),
            &FileStore::new(successor_dir.path()),
            Arc::new(s.clone()),
            &new,
            Utc::now(),
        )
        .await
        .unwrap();
        assert!(
            claimed.published,
            "{name}: a new term is stamped into the bucket"
        );
        // The deposed writer backs up again, with nothing new: fenced, nothing published.
        let before = backup::latest_generation(store.as_ref()).await.unwrap();
        let res = backup::backup(store.as_ref(), &local, Arc::new(s), &old, Utc::now()).await;
        assert!(
            matches!(res, Err(PublishError::Fenced { term: 2, .. })),
            "{name}: {res:?}"
        );
        assert_eq!(
            backup::latest_generation(store.as_ref()).await.unwrap(),
            before,
            "{name}"
        );
    }
}
