//! Shared helpers for the in-process actor tests.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cost_model::app::{self, Parts, Replica};
use cost_model::election::{ElectionBackend, ManualElection, ManualHandle};
use cost_model::etl::costing;
use cost_model::etl::demo::DemoCluster;
use cost_model::model::{EtlSet, Resolution, Window};
use cost_model::storage::faulty::{Faults, FaultyStore};
use object_store::ObjectStore;

pub const SEED: u64 = 7;
pub const PODS: usize = 40;

/// A replica whose role a test decides, over a fault-injecting view of a shared bucket.
pub struct Node {
    pub replica: Replica,
    pub election: ManualHandle,
    pub faults: Arc<Faults>,
    pub etl_dir: tempfile::TempDir,
}

/// Starts a replica on `bucket`. Polls happen only when asked (the interval is an hour) or
/// when the replica becomes a follower; the ETL builds one day back.
pub fn node(identity: &str, bucket: Arc<dyn ObjectStore>) -> Node {
    node_with(identity, bucket, |_| {})
}

/// [`node`], with the parts changed by `adjust` first (its own `etl_dir` is a fresh folder).
pub fn node_with(
    identity: &str,
    bucket: Arc<dyn ObjectStore>,
    adjust: impl FnOnce(&mut Parts),
) -> Node {
    let (faulty, faults) = FaultyStore::new(bucket);
    let (backend, election) = ManualElection::new(identity);
    let etl_dir = tempfile::tempdir().unwrap();
    let mut parts = parts(
        identity,
        Arc::new(faulty),
        Box::new(backend),
        etl_dir.path(),
    );
    adjust(&mut parts);
    let replica = app::start(parts);
    Node {
        replica,
        election,
        faults,
        etl_dir,
    }
}

impl Node {
    /// Promotes to `term` and waits until storage has read the bucket and enabled writes.
    pub async fn lead(&self, term: u64) {
        self.election.promote(term);
        wait_writable(&self.replica.storage, term).await;
    }
}

/// Waits until `storage` leads `term` with writes enabled (the role change travels through the
/// elector first, so ask only once storage has heard of it).
pub async fn wait_writable(storage: &actix::Addr<cost_model::storage::Storage>, term: u64) {
    use cost_model::storage::{AwaitWritable, GetStorageStatus};
    until("storage hears of the promotion", || async {
        storage.send(GetStorageStatus).await.unwrap().term == Some(term)
    })
    .await;
    storage
        .send(AwaitWritable { term })
        .await
        .unwrap()
        .expect("writes enabled for the term");
}

/// The parts of a test replica: the demo cluster, polls only when asked (the interval is an
/// hour) or on becoming a follower, one day of backfill.
pub fn parts(
    identity: &str,
    bucket: Arc<dyn ObjectStore>,
    backend: Box<dyn ElectionBackend>,
    etl_dir: &std::path::Path,
) -> Parts {
    Parts {
        identity: identity.to_string(),
        bucket,
        bucket_description: "test".into(),
        etl_dir: etl_dir.to_path_buf(),
        source: Arc::new(DemoCluster::new(SEED, PODS)),
        backend,
        poll_interval: Duration::from_secs(3600),
        object_retry: Duration::from_secs(3600),
        etl_interval: Duration::from_secs(3600),
        gc_grace: cost_model::storage::backup::GC_GRACE,
        heartbeat: Duration::from_secs(3600),
        scrub_interval: Duration::from_secs(300),
        backfill: chrono::Duration::days(1),
        hourly_retention: chrono::Duration::hours(49),
        daily_retention: chrono::Duration::days(91),
        cluster_id: "cluster-one".into(),
        lease_name: "test".into(),
        lease_namespace: None,
        query_threads: 1,
        max_heavy_queries: 4,
        max_cheap_queries: 16,
        limits: cost_model::api::QueryLimits::default(),
    }
}

/// Priced demo sets for the day before `now`, at both resolutions' first window.
pub fn demo_sets(now: DateTime<Utc>) -> Vec<EtlSet> {
    let day = Resolution::Day.window_containing(now - chrono::Duration::days(1));
    let hour = Window::new(day.start, day.start + chrono::Duration::hours(1));
    let c = DemoCluster::new(SEED, PODS);
    let mut out = Vec::new();
    for (res, w) in [(Resolution::Day, day), (Resolution::Hour, hour)] {
        let (a, s) = costing::price(&c.compute(w, w.end), res, "cluster-one");
        out.push(EtlSet::Allocations(a));
        out.push(EtlSet::Assets(s));
    }
    out
}

/// Polls `check` every 10 ms until it holds, for at most 20 s.
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Files (not directories) under a folder, recursively.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}
