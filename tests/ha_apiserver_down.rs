//! The apiserver goes away under a running group: the leader demotes itself once it cannot
//! renew, nobody crashes, and a follower keeps answering queries from its last snapshot.
//!
//! This test stops its control plane, so it runs one of its own (the `scripts/testenv` binary
//! with a private state folder) rather than the shared instance other tests may be using.

mod kube_support;

use std::time::{Duration, Instant};

use kube_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_keep_serving_while_the_apiserver_is_down() {
    let mut plane = PrivateTestenv::start();
    let bucket = tempfile::tempdir().expect("tempdir");
    let lease = lease_name("apiserver-down");
    let t = Timings::FAST;
    let spec = |id: &str| ReplicaSpec::new(id, &lease, &plane.env.replica, bucket.path());

    // A leader first, then a follower that loads its snapshot.
    let leader = Replica::start(spec("r1")).await;
    wait_for("r1 leads and writes", Duration::from_secs(20), || async {
        leader
            .status()
            .await
            .filter(|s| s.leading() && s.last_write().is_some())
    })
    .await;
    let follower = Replica::start(spec("r2")).await;
    wait_for(
        "r2 follows r1 with a snapshot",
        Duration::from_secs(20),
        || async {
            follower.status().await.filter(|s| {
                s.role() == "follower" && s.leader() == Some("r1") && s.generation() > 0
            })
        },
    )
    .await;
    let sampler = Sampler::start(&[&leader, &follower]);
    assert!(matches!(follower.query().await, QueryResult::Ok { .. }));

    plane.stop();
    let down = Instant::now();

    // The leader cannot renew: it demotes itself within the renew deadline (+ one request
    // timeout and scheduling), and keeps running.
    wait_for(
        "r1 stops writing",
        t.renew + Duration::from_secs(3),
        || async {
            leader
                .status()
                .await
                .filter(|s| !s.writes_enabled() && s.role() != "leader")
        },
    )
    .await;
    eprintln!(
        "r1 demoted {:?} after the apiserver went down",
        down.elapsed()
    );
    let s = wait_for(
        "r2 reports the apiserver unreachable",
        Duration::from_secs(10),
        || async {
            follower.status().await.filter(|s| {
                s.election_error()
                    .is_some_and(|e| e.contains("unreachable"))
            })
        },
    )
    .await;
    assert_ne!(s.role(), "leader");

    // Once r2 has polled the bucket after the last write, its snapshot is final: the same
    // generation and the same totals from then on.
    let (generation, total) = wait_for(
        "r2 has the last snapshot",
        Duration::from_secs(10),
        || async {
            let s = follower.status().await?;
            let QueryResult::Ok { total } = follower.query().await else {
                return None;
            };
            let last = manifests(bucket.path()).last()?.generation;
            (s.generation() == last).then_some((s.generation(), total))
        },
    )
    .await;
    let until = Instant::now() + t.lease + t.retry;
    while Instant::now() < until {
        let s = follower.status().await.expect("r2 answers");
        assert_eq!(s.generation(), generation);
        assert_ne!(s.role(), "leader");
        match follower.query().await {
            QueryResult::Ok { total: now } => assert!(
                (now - total).abs() < 1e-9,
                "totals changed without a new snapshot: {total} then {now}"
            ),
            other => panic!("r2 stopped answering queries: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let samples = sampler.finish().await;
    assert_single_writer(&samples, |_| false);
    let ok = assert_queries_served(&samples, |_| false);
    assert!(ok > 20, "only {ok} successful queries sampled");
    assert!(
        leader.status().await.is_some() && follower.status().await.is_some(),
        "both alive"
    );
}
