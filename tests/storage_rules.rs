//! The leader/follower storage rules (the numbered list in `src/storage/controller.rs`), each driven through the real actors and
//! role changes (manual election), over a fault-injecting bucket.

mod stores;
mod support;

use std::sync::Arc;

use actix_web::{App, test, web};
use chrono::Utc;
use cost_model::api;
use cost_model::storage::backup::{self, Writer};
use cost_model::storage::filestore::FileStore;
use cost_model::storage::{
    AwaitWritable, CurrentSnapshot, GetStorageStatus, PollNow, ReadBackup, Snapshot, WriteOutcome,
    WriteSets,
};
use object_store::ObjectStore;
use object_store::memory::InMemory;
use support::{demo_sets, files_under, node, until};
use tokio_util::sync::CancellationToken;

/// Publishes demo sets as the next generation, as a leader of `term` elsewhere would: each call
/// on top of the last adds the sets of one more day back, so each makes a new generation.
async fn publish_elsewhere(
    bucket: &Arc<dyn ObjectStore>,
    term: u64,
    base: Arc<Snapshot>,
) -> Arc<Snapshot> {
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let writer = Writer {
        identity: "elsewhere",
        cluster: "cluster-one",
        term,
        cancel: &cancel,
        hourly_retention: chrono::Duration::hours(49),
        daily_retention: chrono::Duration::days(91),
        backoff: cost_model::storage::backup::Backoff {
            first: std::time::Duration::from_secs(3600),
            max: std::time::Duration::from_secs(3600),
        },
    };
    let day = chrono::Duration::days(base.generation as i64);
    let s = backup::publish(
        bucket.as_ref(),
        &FileStore::new(dir.path()),
        base,
        &writer,
        demo_sets(Utc::now() - day),
        Utc::now(),
    )
    .await
    .unwrap();
    Arc::new(s)
}

async fn generation(n: &support::Node) -> u64 {
    n.replica
        .storage
        .send(CurrentSnapshot)
        .await
        .unwrap()
        .generation
}

#[actix_web::test]
async fn follower_backup_read_waits_for_the_next_poll_and_never_reads_the_bucket() {
    for b in stores::all().await {
        let bucket = b.store.clone();
        let g1 = publish_elsewhere(&bucket, 1, Arc::default()).await;
        let f = node("f", bucket.clone());
        f.election.demote(Some("elsewhere"));
        until("the first poll loaded generation 1", || async {
            generation(&f).await == 1
        })
        .await;

        publish_elsewhere(&bucket, 1, g1).await;
        let reads_before = f.faults.reads();
        let read = actix::spawn(f.replica.storage.send(ReadBackup));
        until("the read is queued", || async {
            f.replica
                .storage
                .send(GetStorageStatus)
                .await
                .unwrap()
                .blocked_reads
                == 1
        })
        .await;
        assert!(
            !read.is_finished(),
            "a follower's backup read must wait for the poller"
        );
        assert_eq!(
            f.faults.reads(),
            reads_before,
            "the read itself must not touch the bucket"
        );

        f.replica.poller.do_send(PollNow);
        let snapshot = read.await.unwrap().unwrap().unwrap();
        assert_eq!(
            snapshot.generation, 2,
            "released by the poll, with what the poll fetched"
        );
    }
}

#[actix_web::test]
async fn follower_write_is_a_counted_noop_touching_neither_disk_nor_bucket() {
    for b in stores::all().await {
        let bucket = b.store.clone();
        let f = node("f", bucket.clone());
        f.election.demote(None);
        until("the first poll ran", || async {
            f.replica
                .storage
                .send(GetStorageStatus)
                .await
                .unwrap()
                .last_poll
                .is_some()
        })
        .await;

        let outcome = f
            .replica
            .storage
            .send(WriteSets {
                term: 0,
                sets: demo_sets(Utc::now()),
            })
            .await
            .unwrap();
        assert!(matches!(outcome, WriteOutcome::Dropped), "{outcome:?}");
        assert_eq!(f.faults.writes(), 0, "no bucket write");
        assert!(files_under(f.etl_dir.path()).is_empty(), "no disk write");
        let status = f.replica.storage.send(GetStorageStatus).await.unwrap();
        assert_eq!(status.follower_writes_dropped, 1);
        assert!(
            f.replica
                .state
                .metrics
                .encode()
                .contains("costmodel_follower_writes_dropped_total 1")
        );
    }
}

#[actix_web::test]
async fn query_on_a_follower_is_answered_while_a_poll_is_held_open() {
    for b in stores::all().await {
        let bucket = b.store.clone();
        let g1 = publish_elsewhere(&bucket, 1, Arc::default()).await;
        let f = node("f", bucket.clone());
        f.election.demote(None);
        until("generation 1 is loaded", || async {
            generation(&f).await == 1
        })
        .await;
        let svc = test::init_service(
            App::new()
                .app_data(web::Data::new(f.replica.state.clone()))
                .configure(api::configure),
        )
        .await;

        publish_elsewhere(&bucket, 1, g1).await;
        f.faults.hold();
        f.replica.poller.do_send(PollNow);
        f.faults.parked(1).await;

        // The poll is stuck inside the bucket; the query must not be.
        let req = test::TestRequest::get()
            .uri("/model/allocation?window=7d&aggregate=namespace&accumulate=true")
            .to_request();
        let resp = test::call_service(&svc, req).await;
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().contains_key("x-data-age-seconds"));
        let body: serde_json::Value = test::read_body_json(resp).await;
        assert!(
            body["data"][0]
                .as_object()
                .is_some_and(|m| m.contains_key("frontend")),
            "{body}"
        );
        assert_eq!(
            generation(&f).await,
            1,
            "still serving the old generation while the poll is held"
        );

        f.faults.release();
        until("the held poll finished", || async {
            generation(&f).await == 2
        })
        .await;
    }
}

#[actix_web::test]
async fn follower_with_nothing_loaded_answers_503_at_once() {
    for b in stores::all().await {
        let bucket = b.store.clone();
        let f = node("f", bucket);
        f.faults.hold();
        f.election.demote(None);
        f.faults.parked(1).await;
        let svc = test::init_service(
            App::new()
                .app_data(web::Data::new(f.replica.state.clone()))
                .configure(api::configure),
        )
        .await;
        let resp = test::call_service(
            &svc,
            test::TestRequest::get()
                .uri("/model/allocation?window=1d")
                .to_request(),
        )
        .await;
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers().get("retry-after").unwrap(), "5");
        let body: serde_json::Value = test::read_body_json(resp).await;
        assert_eq!(body["code"], 503);
        let reason = body["message"].as_str().unwrap().to_string();
        assert!(
            reason.contains("waiting for the first bucket poll"),
            "{reason}"
        );
        let ready =
            test::call_service(&svc, test::TestRequest::get().uri("/readyz").to_request()).await;
        assert_eq!(ready.status(), 503);
        let ready: serde_json::Value = test::read_body_json(ready).await;
        assert_eq!(ready["message"], reason.as_str(), "one reason everywhere");
        f.faults.release();
    }
}

#[actix_web::test]
async fn promotion_releases_blocked_reads_then_reads_the_bucket_then_enables_writes() {
    for b in stores::all().await {
        let bucket = b.store.clone();
        let g1 = publish_elsewhere(&bucket, 1, Arc::default()).await;
        let f = node("f", bucket.clone());
        f.election.demote(Some("old-leader"));
        until("generation 1 is loaded", || async {
            generation(&f).await == 1
        })
        .await;

        // The old leader's last backup lands after our last poll.
        publish_elsewhere(&bucket, 1, g1).await;
        let blocked = actix::spawn(f.replica.storage.send(ReadBackup));
        until("the read is queued", || async {
            f.replica
                .storage
                .send(GetStorageStatus)
                .await
                .unwrap()
                .blocked_reads
                == 1
        })
        .await;

        f.faults.hold();
        f.election.promote(2);
        until("storage hears of the promotion", || async {
            f.replica.storage.send(GetStorageStatus).await.unwrap().term == Some(2)
        })
        .await;
        let released = blocked.await.unwrap().unwrap().unwrap();
        assert_eq!(
            released.generation, 1,
            "blocked reads are released at once, before the bucket read"
        );
        f.faults.parked(1).await;
        let status = f.replica.storage.send(GetStorageStatus).await.unwrap();
        assert!(
            !status.writes_enabled,
            "writes stay off until the bucket has been read"
        );
        let early = f
            .replica
            .storage
            .send(WriteSets {
                term: 2,
                sets: demo_sets(Utc::now()),
            })
            .await
            .unwrap();
        assert!(matches!(early, WriteOutcome::Dropped), "{early:?}");

        f.faults.release();
        let resume = f
            .replica
            .storage
            .send(AwaitWritable { term: 2 })
            .await
            .unwrap()
            .unwrap();
        assert!(
            resume.generation >= 2,
            "the direct read found the old leader's last backup"
        );
        let status = f.replica.storage.send(GetStorageStatus).await.unwrap();
        assert!(status.writes_enabled && status.term == Some(2));
        let out = f
            .replica
            .storage
            .send(WriteSets {
                term: 2,
                sets: demo_sets(Utc::now()),
            })
            .await
            .unwrap();
        assert!(matches!(out, WriteOutcome::Written { .. }), "{out:?}");
    }
}

#[actix_web::test]
async fn demotion_turns_writes_off_before_an_in_flight_write_can_publish() {
    for b in stores::all().await {
        let bucket = b.store.clone();
        let l = node("l", bucket.clone());
        l.lead(1).await;
        until("the ETL has published", || async {
            generation(&l).await >= 1
        })
        .await;
        let before = backup::latest_generation(bucket.as_ref()).await.unwrap();

        l.faults.hold();
        let write = actix::spawn(l.replica.storage.send(WriteSets {
            term: 1,
            sets: demo_sets(Utc::now()),
        }));
        l.faults.parked(1).await;
        l.election.demote(Some("someone-else"));
        until("writes are off", || async {
            !l.replica
                .storage
                .send(GetStorageStatus)
                .await
                .unwrap()
                .writes_enabled
        })
        .await;
        l.faults.release();

        let abandoned = write.await.unwrap().unwrap();
        assert!(
            matches!(abandoned, WriteOutcome::Dropped),
            "the in-flight write is abandoned: {abandoned:?}"
        );
        assert_eq!(
            backup::latest_generation(bucket.as_ref()).await.unwrap(),
            before,
            "no manifest after demotion"
        );
        let after = l
            .replica
            .storage
            .send(WriteSets {
                term: 1,
                sets: demo_sets(Utc::now()),
            })
            .await
            .unwrap();
        assert!(matches!(after, WriteOutcome::Dropped), "{after:?}");
    }
}

#[actix_web::test]
async fn the_leader_path_is_the_standalone_path() {
    use cost_model::election::StandaloneElection;
    // A standalone replica and a promoted one build byte-identical complete sets.
    let standalone_bucket: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().unwrap();
    let s = cost_model::app::start(support::parts(
        "s",
        standalone_bucket.clone(),
        Box::new(StandaloneElection {
            identity: "s".into(),
        }),
        dir.path(),
    ));
    let promoted_bucket: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let p = node("p", promoted_bucket.clone());
    p.election.promote(0);

    for storage in [&s.storage, &p.replica.storage] {
        support::wait_writable(storage, 0).await;
        until("yesterday's daily set is written", || async {
            let snap = storage.send(CurrentSnapshot).await.unwrap();
            let day = cost_model::model::Resolution::Day
                .window_containing(Utc::now() - chrono::Duration::days(1));
            snap.has_complete(
                cost_model::model::SetKind::Allocations,
                cost_model::model::Resolution::Day,
                day.start,
            )
        })
        .await;
    }
    let complete = |snap: Arc<Snapshot>| -> std::collections::BTreeMap<String, String> {
        snap.files
            .iter()
            .filter(|(_, (e, _))| e.data_end >= e.end)
            .map(|(p, (e, _))| (p.clone(), e.sha256.clone()))
            .collect()
    };
    let a = complete(s.storage.send(CurrentSnapshot).await.unwrap());
    let b = complete(p.replica.storage.send(CurrentSnapshot).await.unwrap());
    let shared: Vec<_> = a.keys().filter(|k| b.contains_key(*k)).collect();
    assert!(!shared.is_empty());
    for k in shared {
        assert_eq!(
            a[k], b[k],
            "{k} differs between standalone and promoted leader"
        );
    }
    let st = s.storage.send(GetStorageStatus).await.unwrap();
    assert!(st.writes_enabled && st.role == "leader" && st.term == Some(0));
}

#[actix_web::test]
async fn a_deposed_leader_is_fenced_and_steps_down() {
    for b in stores::all().await {
        let bucket = b.store.clone();
        let old = node("old", bucket.clone());
        old.lead(1).await;
        until("the old leader wrote", || async {
            generation(&old).await >= 1
        })
        .await;

        // A successor with a higher term takes over the bucket while the old one still thinks it
        // leads (paused, partitioned).
        let new = node("new", bucket.clone());
        new.lead(2).await;
        let out = new
            .replica
            .storage
            .send(WriteSets {
                term: 2,
                sets: demo_sets(Utc::now()),
            })
            .await
            .unwrap();
        assert!(matches!(out, WriteOutcome::Written { .. }));

        let stale = old
            .replica
            .storage
            .send(WriteSets {
                term: 1,
                sets: demo_sets(Utc::now()),
            })
            .await
            .unwrap();
        // Either this write meets the fence, or the old leader's own ETL write met it first and
        // writes were already off.
        assert!(
            matches!(
                stale,
                WriteOutcome::Fenced { term: 2 } | WriteOutcome::Dropped
            ),
            "{stale:?}"
        );
        let metrics = old.replica.state.metrics.encode();
        assert!(
            metrics.contains(r#"costmodel_backup_writes_total{result="fenced"} 1"#),
            "{metrics}"
        );
        until("the old leader stepped down", || async {
            let claim = old
                .replica
                .elector
                .send(cost_model::election::GetClaim)
                .await
                .unwrap();
            matches!(claim.role, cost_model::role::Role::Follower { .. })
        })
        .await;
        assert!(
            !old.replica
                .storage
                .send(GetStorageStatus)
                .await
                .unwrap()
                .writes_enabled
        );

        // The manifests' terms never go backwards.
        let newest = backup::latest_generation(bucket.as_ref()).await.unwrap();
        let mut last_term = 0;
        for g in 1..=newest {
            let m = backup::read_manifest(bucket.as_ref(), g).await.unwrap();
            assert!(
                m.term >= last_term,
                "generation {g} has term {} after {last_term}",
                m.term
            );
            last_term = m.term;
        }
    }
}

#[actix_web::test]
async fn follower_serves_its_last_snapshot_through_a_bucket_outage() {
    for b in stores::all().await {
        let bucket = b.store.clone();
        publish_elsewhere(&bucket, 1, Arc::default()).await;
        let f = node("f", bucket);
        f.election.demote(None);
        until("generation 1 is loaded", || async {
            generation(&f).await == 1
        })
        .await;
        f.faults.set_failing(true);
        f.replica.poller.do_send(PollNow);
        until("the failed poll is reported", || async {
            f.replica
                .storage
                .send(GetStorageStatus)
                .await
                .unwrap()
                .last_poll_error
                .is_some()
        })
        .await;
        let svc = test::init_service(
            App::new()
                .app_data(web::Data::new(f.replica.state.clone()))
                .configure(api::configure),
        )
        .await;
        let resp = test::call_service(
            &svc,
            test::TestRequest::get()
                .uri("/model/allocation?window=7d&accumulate=true")
                .to_request(),
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(generation(&f).await, 1);
    }
}

/// Leads term 1, then sends a write whose backup hangs inside the bucket, holding the write
/// lock, until `n.faults.release()`.
async fn lead_with_a_hanging_write(
    n: &support::Node,
) -> tokio::task::JoinHandle<Result<WriteOutcome, actix::MailboxError>> {
    n.lead(1).await;
    n.faults.hold();
    let write = actix::spawn(n.replica.storage.send(WriteSets {
        term: 1,
        sets: demo_sets(Utc::now() - chrono::Duration::days(2)),
    }));
    n.faults.parked(1).await;
    write
}

/// Waits until storage has taken the role of `term` (`None`: following).
async fn storage_leads(n: &support::Node, term: Option<u64>) {
    until("storage hears of the role", || async {
        n.replica.storage.send(GetStorageStatus).await.unwrap().term == term
    })
    .await;
}

/// Asserts `term` becomes writable within 20 s.
async fn assert_writable(n: &support::Node, term: u64, store: &str) {
    let writable = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        n.replica.storage.send(AwaitWritable { term }),
    )
    .await
    .unwrap_or_else(|_| panic!("{store}: term {term} never became writable"));
    assert!(writable.unwrap().is_ok(), "{store}");
}

#[actix_web::test]
async fn a_promotion_while_a_backup_of_the_last_term_hangs_still_enables_writes() {
    for b in stores::all().await {
        let n = node("l", b.store.clone());
        let write = lead_with_a_hanging_write(&n).await;
        // Term 2 arrives (the lease changed hands and came back); then the bucket answers.
        n.election.promote(2);
        storage_leads(&n, Some(2)).await;
        n.faults.release();
        assert_writable(&n, 2, b.name).await;
        let _ = write.await;
    }
}

/// The model check's counterexample (`tests/model_check.rs`): a demotion while a backup of the
/// term runs, then a promotion to the same term again (the campaign missed its renew deadline
/// and took its own Lease back). The promotion must run its own backup and enable writes, not
/// take the cancelled backup of the last promotion for its own.
#[actix_web::test]
async fn a_promotion_to_the_term_just_demoted_from_still_enables_writes() {
    for b in stores::all().await {
        let n = node("l", b.store.clone());
        let write = lead_with_a_hanging_write(&n).await;
        n.election.demote(None);
        storage_leads(&n, None).await;
        n.election.promote(1);
        storage_leads(&n, Some(1)).await;
        n.faults.release();
        assert!(
            matches!(write.await.unwrap().unwrap(), WriteOutcome::Dropped),
            "{}: the write of the demoted leadership must stop at its token",
            b.name
        );
        assert_writable(&n, 1, b.name).await;
    }
}
