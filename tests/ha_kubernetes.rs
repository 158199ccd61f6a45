//! Leader election on a real Kubernetes Lease, multi-process: replicas of the `cost-model`
//! binary against the real kube-apiserver of `scripts/testenv` (issue 3). Each test has its own
//! Lease, bucket folder and ports, so the tests run in parallel.
//!
//! Throughout the fail-over tests a sampler asks every replica for `/model/ha/status` and the
//! allocation query every 100 ms: never two report `writesEnabled` at once, and every replica
//! keeps answering queries (503 only before its first snapshot).

mod kube_support;

use std::time::{Duration, Instant};

use kube_support::*;

/// Slack for process scheduling on a loaded two-core machine.
const SLACK: Duration = Duration::from_secs(3);

struct Group {
    env: Testenv,
    lease: String,
    bucket: tempfile::TempDir,
    replicas: Vec<Replica>,
}

impl Group {
    /// Starts `n` replicas `r1..rn` of one Lease and bucket.
    async fn start(test: &str, n: usize, timings: Timings) -> Self {
        let env = testenv();
        let lease = lease_name(test);
        let bucket = tempfile::tempdir().expect("tempdir");
        let mut replicas = Vec::new();
        for i in 1..=n {
            let spec = ReplicaSpec::new(&format!("r{i}"), &lease, &env.replica, bucket.path())
                .timings(timings);
            replicas.push(Replica::start(spec).await);
        }
        Self {
            env,
            lease,
            bucket,
            replicas,
        }
    }

    fn all(&self) -> Vec<&Replica> {
        self.replicas.iter().collect()
    }

    fn others(&self, except: usize) -> Vec<&Replica> {
        self.replicas
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != except)
            .map(|(_, r)| r)
            .collect()
    }

    /// Waits until every replica but `leader` has loaded a snapshot.
    async fn followers_loaded(&self, leader: usize) {
        for r in self.others(leader) {
            wait_for(
                "followers load a snapshot",
                Duration::from_secs(20),
                || async { r.status().await.filter(|s| s.generation() > 0) },
            )
            .await;
        }
    }

    /// Waits until one replica leads, the others follow it and the leader has written.
    async fn leader(&self, within: Duration) -> (usize, Status) {
        let (l, _) = settled_leader(&self.all(), within).await;
        let status = wait_for("the leader writes", within, || async {
            self.replicas[l]
                .status()
                .await
                .filter(|s| s.leading() && s.last_write().is_some())
        })
        .await;
        (l, status)
    }
}

/// Waits until a replica other than `old` reports `writesEnabled`; returns its index, status
/// and when it was seen.
async fn new_writer(g: &Group, old: usize, within: Duration) -> (usize, Status, Instant) {
    wait_for("another replica reports writesEnabled", within, || async {
        for (i, r) in g.replicas.iter().enumerate() {
            if i == old {
                continue;
            }
            if let Some(s) = r.status().await.filter(Status::writes_enabled) {
                return Some((i, s, Instant::now()));
            }
        }
        None
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_elect_exactly_one_leader() {
    let g = Group::start("elect-one", 3, Timings::FAST).await;
    let (l, status) = g.leader(Duration::from_secs(20)).await;
    let leader = g.replicas[l].identity();
    assert_eq!(status.leader(), Some(leader));

    // The Lease as kubectl would read it: the record client-go writes.
    let lease = read_lease(&g.env, &g.lease)
        .await
        .expect("the lease exists");
    let spec = &lease["spec"];
    assert_eq!(spec["holderIdentity"], leader, "{lease}");
    assert_eq!(spec["leaseDurationSeconds"], 4, "{lease}");
    assert_eq!(
        spec["leaseTransitions"].as_u64(),
        status.term(),
        "term = leaseTransitions"
    );
    for field in ["acquireTime", "renewTime"] {
        let t = spec[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} missing: {lease}"));
        // MicroTime: RFC 3339 with exactly six fractional digits, UTC.
        let frac = t.split('.').nth(1).unwrap_or("");
        assert!(frac.len() == 7 && frac.ends_with('Z'), "{field} = {t}");
    }
    // Renewals move renewTime, never acquireTime or the transitions.
    let first_renew = spec["renewTime"].as_str().unwrap().to_string();
    let later = wait_for("the leader renews", Duration::from_secs(10), || async {
        let l = read_lease(&g.env, &g.lease).await?;
        (l["spec"]["renewTime"].as_str()? != first_renew).then_some(l)
    })
    .await;
    assert_eq!(later["spec"]["holderIdentity"], leader);
    assert_eq!(later["spec"]["acquireTime"], spec["acquireTime"]);
    assert_eq!(later["spec"]["leaseTransitions"], spec["leaseTransitions"]);

    // Exactly one leader, and it stays so.
    let all = statuses(&g.all()).await;
    let leaders = all
        .iter()
        .flatten()
        .filter(|s| s.role() == "leader")
        .count();
    assert_eq!(leaders, 1, "{all:?}");
    for (i, s) in all.iter().enumerate() {
        let s = s.as_ref().expect("answers");
        if i != l {
            assert_eq!(s.role(), "follower");
            assert_eq!(s.leader(), Some(leader));
            assert!(!s.writes_enabled());
            assert_eq!(
                s.0["lease"]["holder"], leader,
                "followers publish the observed lease"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_fails_over_with_a_higher_term() {
    let g = Group::start("kill-9", 3, Timings::FAST).await;
    let (old, status) = g.leader(Duration::from_secs(20)).await;
    let old_term = status.term().expect("term");
    let sampler = Sampler::start(&g.all());
    // Let the followers load a snapshot while sampling.
    g.followers_loaded(old).await;

    let mut g = g;
    let killed = Instant::now();
    g.replicas[old].kill();
    let t = Timings::FAST;
    let (new, st, seen) = new_writer(&g, old, t.lease + t.retry + SLACK * 2).await;
    let took = seen - killed;
    eprintln!(
        "kill -9: {} leads after {took:?}",
        g.replicas[new].identity()
    );
    assert!(took <= t.lease + t.retry + SLACK, "fail-over took {took:?}");
    let new_term = st.term().expect("term");
    assert!(
        new_term > old_term,
        "new term {new_term} must exceed {old_term}"
    );
    // The survivor follows the new leader; the lease names it.
    let live: Vec<&Replica> = g.others(old);
    let (l, _) = settled_leader(&live, Duration::from_secs(10)).await;
    assert_eq!(live[l].identity(), g.replicas[new].identity());
    let lease = read_lease(&g.env, &g.lease).await.expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], g.replicas[new].identity());
    assert_eq!(lease["spec"]["leaseTransitions"].as_u64(), Some(new_term));
    // Keep sampling while the new leader writes.
    let gen0 = st.generation();
    wait_for("the new leader writes", Duration::from_secs(10), || async {
        g.replicas[new]
            .status()
            .await
            .filter(|s| s.generation() > gen0)
    })
    .await;

    let samples = sampler.finish().await;
    let dead = |s: &Sample| s.replica == old && s.answered >= killed;
    assert_single_writer(&samples, |_| false);
    let ok = assert_queries_served(&samples, dead);
    assert!(ok > 30, "only {ok} successful queries sampled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_leader_hands_off_within_one_retry_period() {
    // client-go's default timings: without a release the hand-off would take ~15 s.
    let g = Group::start("sigterm", 3, Timings::DEFAULT).await;
    let (old, status) = g.leader(Duration::from_secs(30)).await;
    let old_term = status.term().expect("term");
    let sampler = Sampler::start(&g.all());
    g.followers_loaded(old).await;

    let mut g = g;
    let signalled = Instant::now();
    g.replicas[old].signal("TERM");
    let (new, st, seen) = new_writer(&g, old, Duration::from_secs(20)).await;
    let took = seen - signalled;
    eprintln!(
        "SIGTERM: {} leads after {took:?}",
        g.replicas[new].identity()
    );
    assert!(took <= Duration::from_secs(3), "hand-off took {took:?}");
    assert_eq!(
        st.term(),
        Some(old_term + 1),
        "one holder change, one transition"
    );
    let exit = g.replicas[old].wait_exit(Duration::from_secs(20)).await;
    assert!(exit.success(), "the old leader exits cleanly: {exit}");
    assert!(
        g.replicas[old].log_tail(200).contains("released the lease"),
        "the old leader released the lease"
    );

    let gen0 = st.generation();
    wait_for("the new leader writes", Duration::from_secs(10), || async {
        g.replicas[new]
            .status()
            .await
            .filter(|s| s.generation() > gen0)
    })
    .await;
    let samples = sampler.finish().await;
    let gone = |s: &Sample| s.replica == old && s.answered >= signalled;
    assert_single_writer(&samples, |_| false);
    assert_queries_served(&samples, gone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_deposed_and_fenced() {
    let g = Group::start("sigstop", 3, Timings::FAST).await;
    let (old, status) = g.leader(Duration::from_secs(20)).await;
    let old_term = status.term().expect("term");
    let old_id = g.replicas[old].identity().to_string();
    let sampler = Sampler::start(&g.all());

    let stopped = Instant::now();
    g.replicas[old].signal("STOP");
    let t = Timings::FAST;
    let (new, st, _) = new_writer(&g, old, t.lease + t.retry + SLACK * 2).await;
    let new_id = g.replicas[new].identity().to_string();
    assert!(st.term().expect("term") > old_term);
    // The new leader writes: its generation grows.
    let gen0 = st.generation();
    wait_for("the new leader writes", Duration::from_secs(10), || async {
        g.replicas[new]
            .status()
            .await
            .filter(|s| s.generation() > gen0 && s.last_write().is_some())
    })
    .await;
    // Paused past the lease duration (the condition is the time itself).
    tokio::time::sleep_until((stopped + t.lease + t.retry).into()).await;

    let resumed = Instant::now();
    let resumed_at = chrono::Utc::now();
    g.replicas[old].signal("CONT");
    // (One status answer can straddle the demotion: role from before, writes from after.)
    wait_for(
        "the old leader reports writes off and not leading",
        Duration::from_secs(2),
        || async {
            g.replicas[old]
                .status()
                .await
                .filter(|s| !s.writes_enabled() && s.role() != "leader")
        },
    )
    .await;
    eprintln!(
        "SIGCONT: {old_id} reports writes off after {:?}",
        resumed.elapsed()
    );
    // Once it has polled the bucket as a follower, it has given up writing for good; give its
    // ETL timer (2 s) a chance to try once more.
    wait_for(
        "the old leader follows the bucket",
        Duration::from_secs(10),
        || async {
            g.replicas[old]
                .status()
                .await
                .filter(|s| s.last_poll().is_some_and(|p| p > resumed_at))
        },
    )
    .await;
    let settle = Instant::now();
    wait_for("one more ETL interval", Duration::from_secs(5), || async {
        (settle.elapsed() > Duration::from_millis(2500)).then_some(())
    })
    .await;
    let s = g.replicas[old].status().await.expect("old leader answers");
    assert!(!s.writes_enabled() && s.role() != "leader", "{s:?}");

    let samples = sampler.finish().await;
    // While paused it answers nothing; right after SIGCONT it may still answer a request it
    // queued while paused before its demotion timer has run: allow 1 s.
    let paused = |s: &Sample| {
        s.replica == old && s.answered >= stopped && s.sent <= resumed + Duration::from_secs(1)
    };
    assert_single_writer(&samples, paused);
    assert_queries_served(&samples, paused);

    // The bucket: terms never go back as generations go up, and the deposed leader published
    // nothing after its successor's first manifest.
    let all = manifests(g.bucket.path());
    assert!(!all.is_empty());
    for w in all.windows(2) {
        assert!(
            w[0].term <= w[1].term,
            "term went back: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    let first_new = all
        .iter()
        .find(|m| m.writer == new_id)
        .unwrap_or_else(|| panic!("no manifest by {new_id}: {all:?}"))
        .generation;
    let late: Vec<_> = all
        .iter()
        .filter(|m| m.writer == old_id && m.generation > first_new)
        .collect();
    assert!(
        late.is_empty(),
        "the deposed leader published after its successor: {late:?}"
    );
    assert!(
        all.iter().any(|m| m.writer == old_id),
        "the old leader had written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_lease_never_hands_out_a_lower_term() {
    let g = Group::start("recreated", 2, Timings::FAST).await;
    let (l, status) = g.leader(Duration::from_secs(20)).await;
    let term = status.term().expect("term");
    // The follower has loaded a manifest of that term: its floor is `term` too.
    let f = 1 - l;
    wait_for(
        "the follower loads the leader's snapshot",
        Duration::from_secs(10),
        || async {
            g.replicas[f]
                .status()
                .await
                .filter(|s| s.0["snapshotTerm"].as_u64() == Some(term))
        },
    )
    .await;

    // Deleted and recreated, the Lease would restart its transitions at 0.
    delete_lease(&g.env, &g.lease).await;
    let (i, st) = wait_for(
        "a replica leads a newer term",
        Duration::from_secs(15),
        || async {
            for (i, r) in g.replicas.iter().enumerate() {
                if let Some(s) = r
                    .status()
                    .await
                    .filter(|s| s.leading() && s.term() > Some(term))
                {
                    return Some((i, s));
                }
            }
            None
        },
    )
    .await;
    let new_term = st.term().expect("term");
    let lease = read_lease(&g.env, &g.lease).await.expect("recreated");
    assert_eq!(lease["spec"]["holderIdentity"], g.replicas[i].identity());
    assert_eq!(lease["spec"]["leaseTransitions"].as_u64(), Some(new_term));
    settled_leader(&g.all(), Duration::from_secs(15)).await;
    let gen0 = st.generation();
    wait_for(
        "the leader writes under the new term",
        Duration::from_secs(10),
        || async {
            g.replicas[i]
                .status()
                .await
                .filter(|s| s.generation() > gen0)
        },
    )
    .await;
    let all = manifests(g.bucket.path());
    for w in all.windows(2) {
        assert!(
            w[0].term <= w[1].term,
            "term went back: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    assert!(all.last().is_some_and(|m| m.term == new_term), "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubeconfig_that_cannot_be_loaded_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such.kubeconfig");
    let started = Instant::now();
    let out = std::process::Command::new(binary())
        .args(["--election", "kubernetes", "--identity", "bad"])
        .args([
            "--lease-name",
            &lease_name("bad-kubeconfig"),
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--bucket-dir")
        .arg(dir.path().join("bucket"))
        .arg("--etl-dir")
        .arg(dir.path().join("etl"))
        .env("KUBECONFIG", &missing)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("run cost-model");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must exit non-zero: {stderr}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert!(
        last.starts_with("cost-model: "),
        "ends with the error: {stderr}"
    );
    assert!(
        last.contains("kubeconfig"),
        "names the kubeconfig: {stderr}"
    );
    assert!(
        last.contains(&missing.display().to_string()),
        "names the path: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rbac_a_replica_never_leads_and_says_why() {
    let env = testenv();
    let bucket = tempfile::tempdir().expect("tempdir");
    let lease = lease_name("norbac");
    let spec = ReplicaSpec::new("norbac", &lease, &env.norbac, bucket.path());
    let r = Replica::start(spec).await;
    let s = wait_for(
        "electionError says forbidden",
        Duration::from_secs(10),
        || async {
            r.status()
                .await
                .filter(|s| s.election_error().is_some_and(|e| e.contains("forbidden")))
        },
    )
    .await;
    let err = s.election_error().unwrap();
    assert!(err.contains("namespace default"), "{err}");
    assert!(err.contains("get/create/update"), "{err}");
    // Several retry periods later it still does not lead, and still says why.
    let since = Instant::now();
    while since.elapsed() < Timings::FAST.retry * 3 {
        let s = r.status().await.expect("answers");
        assert_ne!(s.role(), "leader");
        assert!(!s.writes_enabled());
        assert!(s.election_error().is_some_and(|e| e.contains("forbidden")));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        read_lease(&env, &lease).await.is_none(),
        "no lease was created"
    );
    // Logged once, not on every retry.
    let log = r.log_tail(400);
    let lines = log.lines().filter(|l| l.contains("forbidden")).count();
    assert_eq!(lines, 1, "{log}");
}
