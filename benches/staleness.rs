//! Follower staleness: how long after the leader publishes a generation a follower serves it,
//! with the default 30 s poll and a 1 s poll.
//!
//! A leader and a follower share an in-memory bucket (a bucket's own latency adds to these
//! figures; the poll interval dominates them). The leader publishes a new generation at a
//! random moment of the poll cycle; the bench measures from the publish to the follower's
//! snapshot holding it, and prints the median, p90 and max per poll interval.
//!
//! `cargo bench --bench staleness` (`STALENESS_SAMPLES_1S`, `STALENESS_SAMPLES_30S` to resize;
//! the 30 s phase takes about `samples × 30 s`).
#![expect(
    clippy::disallowed_methods,
    reason = "bench knobs come from the environment"
)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use cost_model::app::{self, Parts, Replica};
use cost_model::election::{ManualElection, ManualHandle};
use cost_model::etl::costing;
use cost_model::etl::demo::DemoCluster;
use cost_model::model::{EtlSet, Resolution, Window};
use cost_model::storage::{CurrentSnapshot, WriteOutcome, WriteSets};
use object_store::ObjectStore;

fn replica(
    identity: &str,
    bucket: Arc<dyn ObjectStore>,
    poll: Duration,
    dir: &std::path::Path,
) -> (Replica, ManualHandle) {
    let (backend, handle) = ManualElection::new(identity);
    let r = app::start(Parts {
        identity: identity.into(),
        bucket,
        bucket_description: "bench".into(),
        etl_dir: dir.join(identity),
        source: Arc::new(DemoCluster::new(1, 100)),
        backend: Box::new(backend),
        poll_interval: poll,
        object_retry: poll * 2,
        // The bench publishes by hand; the ETL builds only at promotion.
        etl_interval: Duration::from_secs(86_400),
        gc_grace: cost_model::storage::backup::GC_GRACE,
        heartbeat: Duration::from_secs(3600),
        scrub_interval: Duration::from_secs(300),
        backfill: chrono::Duration::hours(2),
        hourly_retention: chrono::Duration::days(60),
        daily_retention: chrono::Duration::days(400),
        cluster_id: "cluster-one".into(),
        lease_name: "bench".into(),
        lease_namespace: None,
        query_threads: 1,
        max_heavy_queries: 4,
        max_cheap_queries: 16,
        limits: cost_model::api::QueryLimits::default(),
    });
    (r, handle)
}

/// An hourly set `hours_back` hours before now: each sample publishes one new window.
fn sets(hours_back: i64) -> Vec<EtlSet> {
    let start =
        Resolution::Hour.window_containing(Utc::now()).start - chrono::Duration::hours(hours_back);
    let w = Window::new(start, start + chrono::Duration::hours(1));
    let (a, s) = costing::price(
        &DemoCluster::new(1, 100).compute(w, w.end),
        Resolution::Hour,
        "cluster-one",
    );
    vec![EtlSet::Allocations(a), EtlSet::Assets(s)]
}

fn random_unit() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

async fn phase(poll: Duration, samples: usize, offset: i64) {
    let dir = tempfile::tempdir().unwrap();
    let bucket: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let (leader, lh) = replica("leader", bucket.clone(), poll, dir.path());
    lh.promote(1);
    let (follower, fh) = replica("follower", bucket, poll, dir.path());
    fh.demote(Some("leader"));
    let mut seen = Vec::with_capacity(samples);
    for i in 0..samples {
        // Publish at a random moment of the follower's poll cycle.
        tokio::time::sleep(poll.mul_f64(random_unit())).await;
        let generation = loop {
            match leader
                .storage
                .send(WriteSets {
                    term: 1,
                    sets: sets(offset + 3 + i as i64),
                })
                .await
                .unwrap()
            {
                WriteOutcome::Written { generation } => break generation,
                // Still promoting: try again in a moment.
                WriteOutcome::Dropped => tokio::time::sleep(Duration::from_millis(20)).await,
                other => panic!("leader write: {other:?}"),
            }
        };
        let published = Instant::now();
        while follower
            .storage
            .send(CurrentSnapshot)
            .await
            .unwrap()
            .generation
            < generation
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen.push(published.elapsed());
    }
    seen.sort();
    let at = |p: f64| seen[((seen.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "poll {:>4.0?}: n={samples:<3} median={:>8.2?} p90={:>8.2?} max={:>8.2?}",
        poll,
        at(0.5),
        at(0.9),
        seen[seen.len() - 1]
    );
}

fn main() {
    let n = |k: &str, default: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (fast, slow) = (n("STALENESS_SAMPLES_1S", 30), n("STALENESS_SAMPLES_30S", 8));
    actix::System::new().block_on(async move {
        println!("follower staleness: from the leader's publish to the follower serving it");
        phase(Duration::from_secs(1), fast, 0).await;
        phase(Duration::from_secs(30), slow, 100).await;
        actix::System::current().stop();
    });
}
