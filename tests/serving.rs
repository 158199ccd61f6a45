//! Serving never lies and queries are bounded, through the real actors and handlers
//! (`actix_web::test`) over a fault-injecting bucket: data the replica cannot load is reported,
//! never answered as zero; readiness follows what the replica can answer and says why; a dead
//! actor is never a zombie; every query has a step limit, a size limit, a deadline and a lane.

mod support;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, test, web};
use chrono::{SecondsFormat, Utc};
use cost_model::api;
use cost_model::model::{Resolution, SetKind, Window};
use cost_model::storage::{CurrentSnapshot, GetStorageStatus, PollNow, Snapshot};
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use support::{node, node_with, until};

macro_rules! service {
    ($n:expr) => {
        test::init_service(
            App::new()
                .app_data(web::Data::new($n.replica.state.clone()))
                .configure(api::configure),
        )
        .await
    };
}

/// Status, headers and JSON body of a request.
macro_rules! call {
    ($svc:expr, $req:expr) => {{
        let resp = test::call_service(&$svc, $req.to_request()).await;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = test::read_body(resp).await;
        let json: serde_json::Value = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)))
        };
        (status, headers, json)
    }};
}

/// `/readyz` answers 200, and yesterday's namespace totals come back whole: 200, not empty,
/// nothing reported unavailable.
macro_rules! assert_ready_and_serves_yesterday {
    ($svc:expr, $why:expr) => {{
        let (status, _, body) = call!($svc, test::TestRequest::get().uri("/readyz"));
        assert_eq!(status, 200, "{}: {body}", $why);
        let day = yesterday();
        let (status, headers, body) = call!(
            $svc,
            test::TestRequest::get().uri(&format!(
                "/model/allocation?window={},{}&aggregate=namespace&accumulate=true",
                rfc(day.start),
                rfc(day.end)
            ))
        );
        assert_eq!(status, 200, "{}: {body}", $why);
        assert!(
            !headers.contains_key("x-data-unavailable"),
            "{}: {body}",
            $why
        );
        assert!(
            !body["data"][0].as_object().unwrap().is_empty(),
            "{}: {body}",
            $why
        );
    }};
}

async fn snapshot(n: &support::Node) -> Arc<Snapshot> {
    n.replica.storage.send(CurrentSnapshot).await.unwrap()
}

fn rfc(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn yesterday() -> Window {
    Resolution::Day.window_containing(Utc::now() - chrono::Duration::days(1))
}

/// A leader `l` on `bucket` that has built yesterday's daily sets.
async fn built(bucket: Arc<dyn ObjectStore>) -> support::Node {
    built_by("l", bucket).await
}

/// A leader `identity` on `bucket` that has built yesterday's daily sets.
async fn built_by(identity: &str, bucket: Arc<dyn ObjectStore>) -> support::Node {
    let leader = node(identity, bucket);
    leader.lead(1).await;
    let day = yesterday();
    until("yesterday's sets are built and backed up", || async {
        let s = snapshot(&leader).await;
        s.has_complete(SetKind::Allocations, Resolution::Day, day.start)
            && s.has_complete(SetKind::Assets, Resolution::Day, day.start)
            && s.pending.is_empty()
    })
    .await;
    leader
}

/// A follower on `bucket` that has loaded what the bucket holds.
async fn follower(bucket: Arc<dyn ObjectStore>) -> support::Node {
    let f = node("f", bucket);
    f.election.demote(Some("l"));
    until("the follower loaded a generation", || async {
        snapshot(&f).await.is_loaded()
    })
    .await;
    f
}

#[actix_web::test]
async fn a_set_the_replica_cannot_load_is_reported_in_the_answer_never_as_zero() {
    let bucket: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let leader = built(bucket.clone()).await;
    let day = yesterday();
    let (victim, _) = snapshot(&leader)
        .await
        .file_entries()
        .into_iter()
        .find(|(_, e)| {
            e.kind == SetKind::Allocations
                && e.resolution == Resolution::Day
                && e.start == day.start
        })
        .unwrap();
    bucket
        .put(
            &Path::from(victim.as_str()),
            PutPayload::from_static(b"truncated"),
        )
        .await
        .unwrap();
    let f = follower(bucket.clone()).await;
    let svc = service!(f);
    let uri = format!(
        "/model/allocation?window={},{}&aggregate=namespace&accumulate=true",
        rfc(day.start),
        rfc(day.end)
    );

    let (status, headers, body) = call!(svc, test::TestRequest::get().uri(&uri));
    assert_eq!(status, 200, "{body}");
    let interval = format!("{}/{}", rfc(day.start), rfc(day.end));
    let header = headers
        .get("x-data-unavailable")
        .expect("the header says it");
    assert_eq!(header.to_str().unwrap(), interval);
    let warning = body["warning"].as_str().expect("the envelope says it");
    assert!(
        warning.contains(&interval) && warning.contains("not zero"),
        "{warning}"
    );
    assert_eq!(body["data"], serde_json::json!([{}]), "nothing invented");

    // The leader, which holds the set, answers it; the follower never claimed it cost $0.
    let lsvc = service!(leader);
    let (_, lheaders, lbody) = call!(lsvc, test::TestRequest::get().uri(&uri));
    assert!(lbody.get("warning").is_none() && lheaders.get("x-data-unavailable").is_none());
    assert!(!lbody["data"][0].as_object().unwrap().is_empty());

    // A window the damage does not touch carries no warning.
    let (status, headers, body) = call!(
        svc,
        test::TestRequest::get().uri("/model/allocation?window=today&aggregate=namespace")
    );
    assert_eq!(status, 200);
    assert!(body.get("warning").is_none() && headers.get("x-data-unavailable").is_none());

    // Counted, and listed in the ETL status.
    let (_, _, etl) = call!(svc, test::TestRequest::get().uri("/model/etl/status"));
    let problems = etl["data"]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{etl}");
    assert_eq!(problems[0]["path"], victim.as_str());
    assert!(problems[0]["problem"].as_str().unwrap().contains("sha256"));
    let metrics = f.replica.state.metrics.encode();
    assert!(
        metrics.contains("costmodel_query_unavailable_data_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("costmodel_unavailable_sets 1\n"),
        "{metrics}"
    );
    // It still serves what it has: ready.
    let (status, _, _) = call!(svc, test::TestRequest::get().uri("/readyz"));
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn a_replica_that_could_load_none_of_its_sets_is_not_ready() {
    let bucket: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let leader = built(bucket.clone()).await;
    for path in snapshot(&leader).await.file_entries().into_keys() {
        bucket.delete(&Path::from(path.as_str())).await.unwrap();
    }
    let f = follower(bucket).await;
    let svc = service!(f);
    let (status, headers, body) = call!(svc, test::TestRequest::get().uri("/readyz"));
    assert_eq!(status, 503);
    assert_eq!(headers.get("retry-after").unwrap(), "5");
    let reason = body["message"].as_str().unwrap();
    assert!(reason.contains("none of the"), "{reason}");
    let (status, _, body) = call!(
        svc,
        test::TestRequest::get().uri("/model/allocation?window=1d")
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["message"], reason);
}

#[actix_web::test]
async fn a_follower_never_serves_a_local_store_the_bucket_does_not_vouch_for() {
    // A store written by some earlier leader, on some other bucket.
    let elsewhere: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let old = built_by("old", elsewhere).await;
    let stale_generation = snapshot(&old).await.generation;
    let copy = tempfile::tempdir().unwrap();
    copy_dir(old.etl_dir.path(), copy.path());

    // A follower with that store on an empty bucket serves nothing and says why.
    let bucket: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let f = node_with("f", bucket.clone(), |p| {
        p.etl_dir = copy.path().to_path_buf()
    });
    f.election.demote(None);
    until("the first poll found the bucket empty", || async {
        f.replica
            .storage
            .send(GetStorageStatus)
            .await
            .unwrap()
            .bucket_empty
    })
    .await;
    let svc = service!(f);
    let (status, _, body) = call!(svc, test::TestRequest::get().uri("/readyz"));
    assert_eq!(status, 503);
    let reason = body["message"].as_str().unwrap();
    assert!(
        reason.contains("holds no backup")
            && reason.contains(&format!("local file store (generation {stale_generation})")),
        "{reason}"
    );
    let (status, _, _) = call!(
        svc,
        test::TestRequest::get().uri("/model/allocation?window=7d")
    );
    assert_eq!(status, 503, "the local store is not served");
    let (_, _, ha) = call!(svc, test::TestRequest::get().uri("/model/ha/status"));
    assert_eq!(ha["ready"], false);
    assert_eq!(ha["notReadyReason"], reason);
    assert_eq!(ha["localGeneration"], stale_generation);

    // Once the bucket holds a backup, the follower serves the bucket's.
    let leader = built(bucket).await;
    let published = snapshot(&leader).await;
    f.replica.poller.do_send(PollNow);
    until("the follower loaded the bucket", || async {
        snapshot(&f).await.generation == published.generation
    })
    .await;
    let (status, _, _) = call!(svc, test::TestRequest::get().uri("/readyz"));
    assert_eq!(status, 200);
    let served = snapshot(&f).await;
    assert_eq!(
        served.writer, "l",
        "the bucket's writer, not the old store's"
    );
    assert_eq!(served.origin, cost_model::storage::snapshot::Origin::Bucket);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for file in support::files_under(from) {
        let rel = file.strip_prefix(from).unwrap();
        std::fs::create_dir_all(to.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(&file, to.join(rel)).unwrap();
    }
}

#[actix_web::test]
async fn a_leader_whose_bucket_cannot_be_read_builds_locally_and_leaves_answers_to_followers() {
    let bucket = Arc::new(InMemory::new());
    let n = node("l", bucket.clone());
    n.faults.set_failing(true);
    n.election.promote(1);
    until("sets are built while the bucket fails", || async {
        let st = n.replica.storage.send(GetStorageStatus).await.unwrap();
        st.promotion_error.is_some() && st.pending_sets > 4 && st.writes_enabled
    })
    .await;
    let svc = service!(n);
    // It has not read the bucket, and its store is not its own: what it built would answer
    // the bucket's windows as empty. Not ready, and it says why.
    let (status, _, body) = call!(svc, test::TestRequest::get().uri("/readyz"));
    assert_eq!(status, 503);
    let reason = body["message"].as_str().unwrap();
    assert!(
        reason.contains("has not been read since promotion"),
        "{reason}"
    );
    let (status, _, _) = call!(
        svc,
        test::TestRequest::get().uri("/model/allocation?window=today&aggregate=namespace")
    );
    assert_eq!(status, 503);
    let (_, _, ha) = call!(svc, test::TestRequest::get().uri("/model/ha/status"));
    assert_eq!(ha["role"], "leader");
    assert_eq!(ha["writesEnabled"], true);
    assert!(ha["promotionError"].as_str().is_some(), "{ha}");
    assert!(ha["lastBackupError"].as_str().is_some(), "{ha}");
    let (_, _, etl) = call!(svc, test::TestRequest::get().uri("/model/etl/status"));
    assert!(etl["data"]["backupLag"].as_f64().is_some(), "{etl}");
    assert!(etl["data"]["pendingSets"].as_u64().unwrap() > 0, "{etl}");
    let in_bucket = bucket.list(None).count().await;
    assert_eq!(in_bucket, 0, "nothing reached the bucket");

    // When the bucket answers again, the backup catches up with everything built meanwhile.
    n.faults.set_failing(false);
    until("the backup caught up", || async {
        let st = n.replica.storage.send(GetStorageStatus).await.unwrap();
        st.pending_sets == 0 && st.last_backup.is_some()
    })
    .await;
    let served = snapshot(&n).await;
    let newest = cost_model::storage::backup::newest_manifest(bucket.as_ref())
        .await
        .unwrap()
        .manifest
        .unwrap();
    assert_eq!(
        newest.files,
        served.file_entries(),
        "the bucket holds the whole lineage"
    );
    let (_, _, ha) = call!(svc, test::TestRequest::get().uri("/model/ha/status"));
    assert_eq!(ha["promotionError"], serde_json::Value::Null);
    assert_eq!(ha["lastBackupError"], serde_json::Value::Null);
    let (_, _, etl) = call!(svc, test::TestRequest::get().uri("/model/etl/status"));
    assert_eq!(etl["data"]["backupLag"], serde_json::Value::Null);
    let (status, _, _) = call!(svc, test::TestRequest::get().uri("/readyz"));
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn a_leader_restarted_on_its_own_store_serves_it_while_the_bucket_is_down() {
    let bucket: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let first = built(bucket.clone()).await;
    let copy = tempfile::tempdir().unwrap();
    copy_dir(first.etl_dir.path(), copy.path());
    drop(first);
    // The same replica ("l") restarts on its own store; the bucket is down.
    let again = node_with("l", bucket, |p| p.etl_dir = copy.path().to_path_buf());
    again.faults.set_failing(true);
    again.election.promote(2);
    until("the promotion backup failed", || async {
        let st = again.replica.storage.send(GetStorageStatus).await.unwrap();
        st.promotion_error.is_some() && st.writes_enabled
    })
    .await;
    let svc = service!(again);
    assert_ready_and_serves_yesterday!(svc, "its own store is its to serve");

    // Demoted before the bucket confirmed that store: a follower does not serve it.
    again.election.demote(Some("other"));
    until("storage hears of the demotion", || async {
        let st = again.replica.storage.send(GetStorageStatus).await.unwrap();
        st.term.is_none()
    })
    .await;
    let (status, _, body) = call!(svc, test::TestRequest::get().uri("/readyz"));
    assert_eq!(status, 503, "{body}");
    let reason = body["message"].as_str().unwrap();
    assert!(
        reason.contains("not served until the bucket vouches"),
        "{reason}"
    );
}

/// Found by the fault suite (`tests/chaos.rs`): a leader whose lineage the bucket confirmed,
/// which then builds while the bucket is down and is demoted (cut off from the apiserver too),
/// keeps answering from that lineage and what it built, until its next poll.
#[actix_web::test]
async fn a_leader_demoted_while_the_bucket_is_down_keeps_serving_its_confirmed_lineage() {
    let bucket: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let l = built(bucket).await;
    l.faults.set_failing(true);
    let written = l
        .replica
        .storage
        .send(cost_model::storage::WriteSets {
            term: 1,
            sets: support::demo_sets(Utc::now()),
        })
        .await
        .unwrap();
    assert!(
        matches!(written, cost_model::storage::WriteOutcome::Staged { .. }),
        "{written:?}"
    );
    assert!(!snapshot(&l).await.pending.is_empty());
    l.election.demote(Some("other"));
    until("storage hears of the demotion", || async {
        let st = l.replica.storage.send(GetStorageStatus).await.unwrap();
        st.term.is_none()
    })
    .await;
    let svc = service!(l);
    assert_ready_and_serves_yesterday!(svc, "a confirmed lineage stays servable");
}

/// Found by the fault suite (`tests/chaos.rs`): a follower that serves what the bucket vouched
/// for, promoted while the bucket cannot be read, keeps answering from it (what any follower
/// would answer) instead of turning not ready until the bucket is back.
#[actix_web::test]
async fn a_follower_promoted_while_the_bucket_is_down_keeps_serving_what_the_bucket_vouched_for() {
    let bucket: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let first = built(bucket.clone()).await;
    drop(first);
    let f = node("f", bucket);
    f.election.demote(Some("l"));
    until("the follower loaded the bucket", || async {
        let s = snapshot(&f).await;
        s.is_loaded() && s.vouched()
    })
    .await;
    f.faults.set_failing(true);
    f.election.promote(2);
    until("the promotion backup failed", || async {
        let st = f.replica.storage.send(GetStorageStatus).await.unwrap();
        st.promotion_error.is_some() && st.writes_enabled
    })
    .await;
    let svc = service!(f);
    assert_ready_and_serves_yesterday!(svc, "what the bucket vouched for stays servable");
}

#[actix_web::test]
async fn a_leader_that_cannot_write_its_etl_dir_is_not_ready_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a folder").unwrap();
    let n = node_with("l", Arc::new(InMemory::new()), |p| {
        p.etl_dir = file.join("etl");
    });
    n.election.promote(1);
    until("a write failed", || async {
        let st = n.replica.storage.send(GetStorageStatus).await.unwrap();
        st.last_write_error.is_some() && st.etl_dir_error.is_some()
    })
    .await;
    let svc = service!(n);
    let (status, _, body) = call!(svc, test::TestRequest::get().uri("/readyz"));
    assert_eq!(status, 503);
    let reason = body["message"].as_str().unwrap();
    assert!(reason.contains("--etl-dir"), "{reason}");
    let (status, _, _) = call!(
        svc,
        test::TestRequest::get().uri("/model/allocation?window=1d")
    );
    assert_eq!(status, 503);
    let (_, _, ha) = call!(svc, test::TestRequest::get().uri("/model/ha/status"));
    assert!(
        ha["etlDirError"]
            .as_str()
            .unwrap()
            .contains("cannot be written"),
        "{ha}"
    );
    assert!(ha["lastWriteError"].as_str().is_some(), "{ha}");
}

#[actix_web::test]
async fn a_dead_critical_actor_turns_liveness_and_readiness_off() {
    cost_model::supervise::install_panic_recorder();
    for actor in ["storage", "poller", "etl", "election"] {
        let n = node("l", Arc::new(InMemory::new()));
        n.lead(1).await;
        let svc = service!(n);
        let (status, _, _) = call!(svc, test::TestRequest::get().uri("/healthz"));
        assert_eq!(status, 200, "{actor}");
        let (status, _, _) = call!(
            svc,
            test::TestRequest::post().uri(&format!("/debug/crash/{actor}"))
        );
        assert_eq!(status, 202, "{actor}");
        let failure = tokio::time::timeout(Duration::from_secs(10), n.replica.failed())
            .await
            .unwrap_or_else(|_| panic!("{actor}: its death went unnoticed"));
        assert_eq!(failure.actor, actor);
        assert!(
            failure.reason.contains("crash requested by a test"),
            "{failure}"
        );
        let (status, _, body) = call!(svc, test::TestRequest::get().uri("/healthz"));
        assert_eq!(status, 503, "{actor}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains(&format!("critical actor {actor} stopped")),
            "{body}"
        );
        let (status, _, _) = call!(svc, test::TestRequest::get().uri("/readyz"));
        assert_eq!(status, 503, "{actor}");
    }
}

#[actix_web::test]
async fn every_query_is_bounded_by_steps_size_and_time() {
    let bucket: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let _leader = built(bucket.clone()).await;

    // Steps: the asset endpoint too.
    let f = follower(bucket.clone()).await;
    let svc = service!(f);
    for path in [
        "/model/assets",
        "/model/allocation",
        "/model/allocation/summary",
    ] {
        let (status, _, body) = call!(
            svc,
            test::TestRequest::get().uri(&format!(
                "{path}?window=0000-01-01T00:30:00Z,2026-11-26T00:00:00Z"
            ))
        );
        assert_eq!(status, 400, "{path}: {body}");
        let msg = body["message"].as_str().unwrap();
        assert!(
            msg.starts_with("window:") && msg.contains("--max-query-steps"),
            "{msg}"
        );
    }

    // Size.
    let small = node_with("small", bucket.clone(), |p| {
        p.limits.max_response_bytes = 4096
    });
    small.election.demote(Some("l"));
    until("loaded", || async { snapshot(&small).await.is_loaded() }).await;
    let svc = service!(small);
    let (status, _, body) = call!(
        svc,
        test::TestRequest::get().uri("/model/allocation?window=2d")
    );
    assert_eq!(status, 413, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("--max-response-bytes"),
        "{body}"
    );
    let (status, _, _) = call!(
        svc,
        test::TestRequest::get()
            .uri("/model/allocation?window=2d&aggregate=cluster&accumulate=true")
    );
    assert_eq!(status, 200, "a narrow query still fits");

    // Time: a query that would run for ten minutes is abandoned at the deadline, and its
    // work is cancelled (its lane frees up).
    let slow = node_with("slow", bucket.clone(), |p| {
        p.limits.timeout = Duration::from_millis(200)
    });
    slow.election.demote(Some("l"));
    until("loaded", || async { snapshot(&slow).await.is_loaded() }).await;
    let svc = service!(slow);
    let (status, _, body) = call!(
        svc,
        test::TestRequest::get().uri("/debug/stall?seconds=600")
    );
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("--query-timeout"),
        "{body}"
    );
    let metrics = slow.replica.state.metrics.encode();
    assert!(
        metrics.contains(r#"costmodel_queries_total{result="timeout"} 1"#),
        "{metrics}"
    );
    let lane = slow.replica.state.executor.heavy.clone();
    until("the abandoned query stopped", || {
        let lane = lane.clone();
        async move { lane.admitted.available_permits() == lane.limit }
    })
    .await;
}

#[actix_web::test]
async fn a_cheap_query_is_never_queued_behind_heavy_ones() {
    let bucket: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let leader = built(bucket.clone()).await;
    let (cheap, heavy) = ("window=2d&aggregate=namespace&accumulate=true", "window=2d");
    let cost = |q: &str| {
        let params = q
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let now = Utc::now();
        let s = leader.replica.storage.send(CurrentSnapshot);
        (params, now, s)
    };
    let mut costs = Vec::new();
    for q in [cheap, heavy] {
        let (params, now, s) = cost(q);
        let q = cost_model::query::parse_allocation_query(
            &params,
            now,
            1000,
            cost_model::query::Dialect::Kubecost,
        )
        .unwrap();
        costs.push(q.cost(&s.await.unwrap().allocations, now));
    }
    assert!(costs[0] < costs[1], "{costs:?}");
    // Unaggregated queries count as heavy here; the heavy lane admits two at once.
    let f = node_with("f", bucket, |p| {
        p.limits.heavy_cost = costs[0];
        p.max_heavy_queries = 2;
    });
    f.election.demote(Some("l"));
    until("loaded", || async { snapshot(&f).await.is_loaded() }).await;
    let svc = service!(f);
    // Two heavy queries hold the heavy lane (as two long ones would).
    let lane = &f.replica.state.executor.heavy;
    let held = lane.admitted.clone().try_acquire_many_owned(2).unwrap();
    let (status, headers, body) = call!(
        svc,
        test::TestRequest::get().uri(&format!("/model/allocation?{heavy}"))
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers.get("retry-after").unwrap(), "5");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("too many heavy queries") && msg.contains("--max-heavy-queries"),
        "{msg}"
    );
    let (status, _, _) = call!(
        svc,
        test::TestRequest::get().uri(&format!("/model/allocation?{cheap}"))
    );
    assert_eq!(status, 200, "the cheap query has its own lane");
    drop(held);
    let (status, _, _) = call!(
        svc,
        test::TestRequest::get().uri(&format!("/model/allocation?{heavy}"))
    );
    assert_eq!(status, 200, "admitted once the lane frees up");
}

#[actix_web::test]
async fn every_route_answers_head_preflight_and_refuses_other_methods_in_json() {
    let n = built(Arc::new(InMemory::new())).await;
    let svc = service!(n);
    let routes = [
        "/allocation?window=1d",
        "/allocation/summary?window=1d",
        "/allocation/compute?window=1d",
        "/allocation/compute/summary?window=1d",
        "/assets?window=1d",
        "/clusterInfo",
        "/clusterInfoMap",
        "/ha/status",
        "/ha/group",
        "/etl/status",
        "/healthz",
        "/readyz",
        "/metrics",
    ];
    let all = routes
        .iter()
        .flat_map(|r| [format!("/model{r}"), r.to_string()])
        .chain(["/".to_string(), "/index.html".to_string()]);
    for path in all {
        let get = test::call_service(&svc, test::TestRequest::get().uri(&path).to_request()).await;
        assert_eq!(get.status(), 200, "GET {path}");
        let head = test::call_service(
            &svc,
            test::TestRequest::default()
                .method(actix_web::http::Method::HEAD)
                .uri(&path)
                .to_request(),
        )
        .await;
        assert_eq!(head.status(), 200, "HEAD {path}");
        assert_eq!(
            get.headers().get("access-control-allow-origin").unwrap(),
            "*",
            "CORS on {path}"
        );
        let preflight = test::call_service(
            &svc,
            test::TestRequest::default()
                .method(actix_web::http::Method::OPTIONS)
                .uri(&path)
                .insert_header(("Origin", "https://dash.example"))
                .insert_header(("Access-Control-Request-Method", "GET"))
                .insert_header(("Access-Control-Request-Headers", "authorization"))
                .to_request(),
        )
        .await;
        assert_eq!(preflight.status(), 204, "OPTIONS {path}");
        let h = preflight.headers();
        assert_eq!(h.get("access-control-allow-origin").unwrap(), "*");
        assert_eq!(
            h.get("access-control-allow-methods").unwrap(),
            "GET, HEAD, OPTIONS"
        );
        assert_eq!(
            h.get("access-control-allow-headers").unwrap(),
            "authorization"
        );
        let (status, headers, body) = call!(svc, test::TestRequest::post().uri(&path));
        assert_eq!(status, 405, "POST {path}");
        assert_eq!(
            headers.get("allow").unwrap(),
            "GET, HEAD, OPTIONS",
            "{path}"
        );
        assert_eq!(body["code"], 405, "{path}");
    }
    let (status, _, body) = call!(svc, test::TestRequest::get().uri("/model/nope"));
    assert_eq!(status, 404);
    assert_eq!(body["code"], 404);
}

#[actix_web::test]
async fn a_query_that_panics_is_a_500_and_the_replica_carries_on() {
    let n = built(Arc::new(InMemory::new())).await;
    let svc = service!(n);
    let (status, _, body) = call!(svc, test::TestRequest::get().uri("/debug/panic-query"));
    assert_eq!(status, 500, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("crash requested by a test"),
        "{body}"
    );
    let (status, _, _) = call!(svc, test::TestRequest::get().uri("/healthz"));
    assert_eq!(status, 200);
    let (status, _, _) = call!(
        svc,
        test::TestRequest::get().uri("/model/allocation?window=1d&aggregate=namespace")
    );
    assert_eq!(status, 200, "the lane still answers");
}
