//! Fail-over and hand-off times of a three-replica group on a real kube-apiserver
//! (`scripts/testenv`), with client-go's default timings (15 s / 10 s / 2 s).
//!
//! - `kill -9` of the leader, `FAILOVER_ROUNDS` times (default 10): the old leader's last
//!   renewTime (read from the Lease after the kill, so it is the last one that landed) to the
//!   new leader's first completed write (`lastWrite` of `/model/ha/status`).
//! - SIGTERM of the leader, as many times: the signal to the new leader's first write.
//!
//! Each kill or signal comes after the leader has renewed once, at a point of the renew cycle
//! that moves from round to round; kills come 0..18 retry periods later still, so the
//! followers' polls drift out of step with the leader's renewals. The killed or stopped
//! replica is started again with the same identity after each round and must follow before
//! the next one. Run with `cargo bench --bench failover` (`FAILOVER_ROUNDS=3` for a quick look).
#![expect(
    clippy::disallowed_methods,
    reason = "bench knobs come from the environment"
)]

#[path = "../tests/kube_support/mod.rs"]
mod kube_support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use kube_support::*;

fn main() {
    let rounds: usize = std::env::var("FAILOVER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench(rounds));
}

async fn bench(rounds: usize) {
    let env = testenv();
    let lease = lease_name("bench-failover");
    let bucket = tempfile::tempdir().expect("tempdir");
    let mut replicas = Vec::new();
    for i in 1..=3 {
        let spec = ReplicaSpec::new(&format!("r{i}"), &lease, &env.replica, bucket.path())
            .timings(Timings::DEFAULT)
            .intervals("2s", "2s");
        replicas.push(Replica::start(spec).await);
    }
    println!(
        "failover bench: 3 replicas, lease 15s / renew 10s / retry 2s, poll 2s, etl 2s, {rounds} rounds each"
    );

    let mut kills = Vec::new();
    for round in 1..=rounds {
        let old = settle(&replicas).await;
        // The follower that lost the last race polls nearly in step with the new leader's
        // renewals, and drifts from it by the candidates' jitter (about 0.1 period per period).
        // Leaving the group 0..18 periods first spreads that phase over a whole period, so
        // the samples cover a follower seeing the last renewal at once .. a period late.
        let drift = (round - 1) * 7 % 10 * 2;
        tokio::time::sleep(Timings::DEFAULT.retry * drift as u32).await;
        at_phase(&replicas[old], round).await;
        replicas[old].kill();
        let killed_at = Utc::now();
        let lease_now = read_lease(&env, &lease).await.expect("lease");
        assert_eq!(
            lease_now["spec"]["holderIdentity"],
            replicas[old].identity()
        );
        let last_renew: DateTime<Utc> = lease_now["spec"]["renewTime"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("renewTime");
        let (new, first_write) = first_write_after(&replicas, old, killed_at).await;
        let took = (first_write - last_renew).to_std().unwrap_or_default();
        println!(
            "kill -9 round {round}: {} -> {}: last renew {} -> first write {}: {:.3} s",
            replicas[old].identity(),
            replicas[new].identity(),
            last_renew.format("%H:%M:%S%.3f"),
            first_write.format("%H:%M:%S%.3f"),
            took.as_secs_f64()
        );
        kills.push(took);
        replicas[old].restart().await;
    }

    let mut handoffs = Vec::new();
    for round in 1..=rounds {
        let old = settle(&replicas).await;
        at_phase(&replicas[old], round).await;
        let signalled = Utc::now();
        replicas[old].signal("TERM");
        let (new, first_write) = first_write_after(&replicas, old, signalled).await;
        let took = (first_write - signalled).to_std().unwrap_or_default();
        println!(
            "SIGTERM round {round}: {} -> {}: signal {} -> first write {}: {:.3} s",
            replicas[old].identity(),
            replicas[new].identity(),
            signalled.format("%H:%M:%S%.3f"),
            first_write.format("%H:%M:%S%.3f"),
            took.as_secs_f64()
        );
        handoffs.push(took);
        let exit = replicas[old].wait_exit(Duration::from_secs(30)).await;
        assert!(
            exit.success(),
            "{} exited with {exit}",
            replicas[old].identity()
        );
        replicas[old].restart().await;
    }

    summary("kill -9 fail-over (last renew -> first write)", &kills);
    summary("SIGTERM hand-off (signal -> first write)", &handoffs);
}

/// Waits until one replica leads and writes and the two others follow it.
async fn settle(replicas: &[Replica]) -> usize {
    let all: Vec<&Replica> = replicas.iter().collect();
    let (l, _) = settled_leader(&all, Duration::from_secs(60)).await;
    wait_for("the leader writes", Duration::from_secs(30), || async {
        replicas[l]
            .status()
            .await
            .filter(|s| s.leading() && s.last_write().is_some())
    })
    .await;
    l
}

/// Waits until the leader has renewed at least once, then a further share of the retry
/// period that differs from round to round (0, 0.3, 0.6, 0.9, 0.2, ... of it), so the kills
/// and signals fall at spread-out points of the renew and poll cycles rather than always just
/// after an acquisition.
async fn at_phase(leader: &Replica, round: usize) {
    wait_for("the leader renews", Duration::from_secs(30), || async {
        let s = leader.status().await?;
        let acquired: DateTime<Utc> = s.0["lease"]["acquireTime"].as_str()?.parse().ok()?;
        (s.lease_renew_time()? > acquired).then_some(())
    })
    .await;
    let share = ((round - 1) * 3 % 10) as f64 / 10.0;
    tokio::time::sleep(Timings::DEFAULT.retry.mul_f64(share)).await;
}

/// The first replica other than `old` to report writes enabled and a write after `after`, and
/// that write's time (polled every 50 ms; writes come every 2 s, so it is the first one).
async fn first_write_after(
    replicas: &[Replica],
    old: usize,
    after: DateTime<Utc>,
) -> (usize, DateTime<Utc>) {
    wait_for("a new leader writes", Duration::from_secs(60), || async {
        for (i, r) in replicas.iter().enumerate() {
            if i == old {
                continue;
            }
            if let Some(s) = r.status().await
                && s.writes_enabled()
                && let Some(w) = s.last_write().filter(|w| *w > after)
            {
                return Some((i, w));
            }
        }
        None
    })
    .await
}

fn summary(what: &str, samples: &[Duration]) {
    let mut sorted: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return;
    }
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    let list: Vec<String> = samples
        .iter()
        .map(|d| format!("{:.3}", d.as_secs_f64()))
        .collect();
    println!(
        "{what}: n={n} median {median:.3} s, max {:.3} s; samples: {}",
        sorted[n - 1],
        list.join(" ")
    );
}
