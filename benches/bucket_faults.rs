//! Query latency on a follower while its bucket is healthy, slow, and stuck (moved out of
//! `query_latency`, which now measures a follower process at production scale).
//!
//! A leader builds 7 days of the demo cluster into an in-memory bucket; a follower reads it
//! through a fault-injecting wrapper and serves real HTTP. For each phase the bench sends
//! sequential `/model/allocation` queries and prints p50/p99/max. A follower's queries read the
//! loaded snapshot only, so the figures should not move when polls crawl or hang.
//!
//! `cargo bench --bench bucket_faults` (`BENCH_QUERIES`, `DEMO_PODS` to resize).
#![expect(
    clippy::disallowed_methods,
    reason = "bench knobs come from the environment"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{App, HttpServer, web};
use cost_model::app::{self, Parts, Replica};
use cost_model::election::{ManualElection, ManualHandle};
use cost_model::etl::demo::DemoCluster;
use cost_model::storage::faulty::{Faults, FaultyStore};
use cost_model::storage::{CurrentSnapshot, GetStorageStatus, PollNow};
use object_store::ObjectStore;

fn replica(
    identity: &str,
    bucket: Arc<dyn ObjectStore>,
    pods: usize,
    dir: &std::path::Path,
) -> (Replica, ManualHandle, Arc<Faults>) {
    let (faulty, faults) = FaultyStore::new(bucket);
    let (backend, handle) = ManualElection::new(identity);
    let r = app::start(Parts {
        identity: identity.into(),
        bucket: Arc::new(faulty),
        bucket_description: "bench".into(),
        etl_dir: dir.join(identity),
        source: Arc::new(DemoCluster::new(1, pods)),
        backend: Box::new(backend),
        poll_interval: Duration::from_millis(200),
        object_retry: Duration::from_millis(400),
        etl_interval: Duration::from_secs(3600),
        gc_grace: cost_model::storage::backup::GC_GRACE,
        heartbeat: Duration::from_secs(3600),
        scrub_interval: Duration::from_secs(300),
        backfill: chrono::Duration::days(7),
        hourly_retention: chrono::Duration::hours(49),
        daily_retention: chrono::Duration::days(91),
        cluster_id: "cluster-one".into(),
        lease_name: "bench".into(),
        lease_namespace: None,
        query_threads: 2,
        max_heavy_queries: 4,
        max_cheap_queries: 16,
        limits: cost_model::api::QueryLimits::default(),
    });
    (r, handle, faults)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn phase(name: &str, client: &reqwest::Client, url: &str, n: usize) {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let resp = client.get(url).send().await.expect("query");
        assert_eq!(resp.status(), 200);
        resp.bytes().await.expect("body");
        samples.push(t.elapsed());
    }
    samples.sort();
    println!(
        "{name:<34} n={n:<5} p50={:>8.2?} p99={:>8.2?} max={:>8.2?}",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[n - 1]
    );
}

fn main() {
    let pods: usize = std::env::var("DEMO_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let n: usize = std::env::var("BENCH_QUERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    actix::System::new().block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let bucket: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let (leader, lh, _) = replica("leader", bucket.clone(), pods, dir.path());
        lh.promote(1);
        let t = Instant::now();
        loop {
            let s = leader.storage.send(CurrentSnapshot).await.unwrap();
            if s.allocations.len() >= 7 + 48 + 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("leader built 7 days of {pods} pods in {:.2?}", t.elapsed());

        let (follower, fh, faults) = replica("follower", bucket, pods, dir.path());
        fh.demote(Some("leader"));
        loop {
            if follower
                .storage
                .send(CurrentSnapshot)
                .await
                .unwrap()
                .generation
                > 0
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let state = follower.state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .configure(cost_model::api::configure)
        })
        .workers(2)
        .bind("127.0.0.1:0")
        .unwrap();
        let addr = server.addrs()[0];
        actix::spawn(server.run());
        let client = reqwest::Client::new();
        let url =
            format!("http://{addr}/model/allocation?window=7d&aggregate=namespace&accumulate=true");

        phase("bucket healthy, polling every 200ms", &client, &url, n).await;
        faults.set_delay(Duration::from_millis(500));
        phase("bucket slow (+500 ms per request)", &client, &url, n).await;
        faults.set_delay(Duration::ZERO);
        faults.hold();
        follower.poller.do_send(PollNow);
        faults.parked(1).await;
        phase("bucket stuck (poll parked)", &client, &url, n).await;
        let st = follower.storage.send(GetStorageStatus).await.unwrap();
        println!(
            "follower still on generation {} while the poll hangs",
            st.snapshot_generation
        );
        faults.release();
        let big = format!("http://{addr}/model/allocation?window=7d&accumulate=true");
        phase(
            "unaggregated 7d (every container)",
            &client,
            &big,
            n.min(50),
        )
        .await;
        actix::System::current().stop();
    });
}
