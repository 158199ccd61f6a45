//! The real binary over HTTP: a standalone replica on the embedded demo serves allocation totals
//! that match costs computed here, independently, from the demo cluster's definition; a
//! follower on the same bucket converges to the same totals after one poll.

mod proc;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use cost_model::etl::demo::{DemoCluster, Kind, STORAGE_PRICE};
use cost_model::model::Resolution;
use proc::{spawn, wait_for};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Namespace → total cost of the demo cluster over `[start, start + 1 day)`, computed straight
/// from the cluster's definition: max(request, usage) × time × node price, volumes by size ×
/// time × price, load balancers by price × time.
fn expected_namespace_costs(c: &DemoCluster, start: DateTime<Utc>) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for h in 0..24 {
        let hour = start + ChronoDuration::hours(h);
        for pod in c.pods_in_hour(hour) {
            let w = &c.workloads[pod.workload];
            let node = &c.nodes[pod.node];
            let hours = (pod.end.min(hour + ChronoDuration::hours(1)) - pod.start.max(hour))
                .num_seconds() as f64
                / 3600.0;
            for cont in &w.containers {
                let u = c.usage(&pod, cont, hour);
                let cpu = cont.cpu_request.max(u.cpu) * hours * node.cpu_price;
                let ram = cont.ram_request.max(u.ram) * hours / GIB * node.ram_price;
                *out.entry(w.namespace.clone()).or_default() += cpu + ram;
            }
        }
    }
    for w in &c.workloads {
        if let (Kind::StatefulSet, Some(bytes)) = (w.kind, w.volume_bytes) {
            *out.entry(w.namespace.clone()).or_default() +=
                w.replicas as f64 * bytes / GIB * 24.0 * STORAGE_PRICE;
        }
    }
    let (_, ns, _, bytes) = &c.orphan_volume;
    *out.entry(ns.clone()).or_default() += bytes / GIB * 24.0 * STORAGE_PRICE;
    for lb in &c.load_balancers {
        *out.entry(lb.namespace.clone()).or_default() += lb.price * 24.0;
    }
    out
}

fn totals(body: &serde_json::Value) -> BTreeMap<String, f64> {
    body["data"][0]
        .as_object()
        .expect("one accumulated set")
        .iter()
        .map(|(k, v)| (k.clone(), v["totalCost"].as_f64().unwrap()))
        .collect()
}

#[tokio::test]
async fn standalone_binary_matches_independent_costs_and_a_follower_converges() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let bucket = bucket.to_str().unwrap();
    let common = [
        "--bucket-dir",
        bucket,
        "--demo-pods",
        "120",
        "--demo-seed",
        "99",
        "--backfill",
        "2d",
    ];
    let leader = spawn(
        dir.path(),
        "leader",
        &[&common[..], &["--election", "standalone"]].concat(),
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // The embedded default query answers with data.
    let today = wait_for(
        &leader,
        &client,
        "/model/allocation?window=1d&aggregate=namespace",
        |s, b| s == 200 && b["data"][0].as_object().is_some_and(|m| m.len() > 3),
    )
    .await;
    assert_eq!(today["code"], 200);
    assert!(today["data"][0]["frontend"]["totalCost"].as_f64().unwrap() > 0.0);

    // Yesterday, a complete day, against the independent computation.
    let yesterday = Resolution::Day.window_containing(Utc::now() - ChronoDuration::days(1));
    let window = format!(
        "{},{}",
        yesterday.start.to_rfc3339(),
        yesterday.end.to_rfc3339()
    )
    .replace("+00:00", "Z");
    let path =
        format!("/model/allocation?window={window}&aggregate=namespace&accumulate=true&idle=false");
    let body = wait_for(&leader, &client, &path, |s, b| {
        s == 200
            && b["data"][0].as_object().is_some_and(|m| {
                m.get("data")
                    .is_some_and(|d| d["minutes"].as_f64() == Some(1440.0))
            })
    })
    .await;
    let got = totals(&body);
    let want = expected_namespace_costs(&DemoCluster::new(99, 120), yesterday.start);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (ns, w) in &want {
        let g = got[ns];
        assert!(
            (g - w).abs() <= 1e-4 + 1e-6 * w,
            "{ns}: API says {g}, the demo cluster costs {w}"
        );
    }

    // A follower on the same bucket serves the same totals after one poll.
    let follower = spawn(
        dir.path(),
        "follower",
        &[
            &common[..],
            &["--election", "follower", "--poll-interval", "1s"],
        ]
        .concat(),
    );
    let status = wait_for(&follower, &client, "/model/ha/status", |s, b| {
        s == 200 && b["snapshotGeneration"].as_u64() > Some(0)
    })
    .await;
    assert_eq!(status["role"], "follower");
    assert_eq!(status["writesEnabled"], false);
    let fbody = wait_for(&follower, &client, &path, |s, b| {
        s == 200 && totals(b) == got
    })
    .await;
    assert_eq!(totals(&fbody), got);

    // Bad input: 400 with a JSON message naming the parameter.
    let resp = client
        .get(follower.url("/model/allocation?window=7x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(err["code"], 400);
    assert!(
        err["message"].as_str().unwrap().starts_with("window:"),
        "{err}"
    );
}

#[test]
fn bad_flags_fail_fast_with_one_line_naming_the_flag() {
    for (args, needle) in [
        (&["--election", "kubernetes"][..], "--bucket-config"),
        (&["--poll-interval", "soon"][..], "--poll-interval"),
        (&["--election", "sometimes"][..], "--election"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_cost-model"))
            .args(args)
            .env_remove("ETL_BUCKET_DIR")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// A body past 1 MiB is streamed in chunks (no `Content-Length`) and is, put together, the
/// answer a whole body gives: the same JSON, value for value. A body cut off by
/// `--max-response-bytes` after it began streaming ends without its close, so the client sees a
/// broken response, never a complete-looking shorter one.
#[tokio::test]
async fn large_answers_stream_and_a_stream_cut_off_never_looks_complete() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let bucket = bucket.to_str().unwrap();
    let common = [
        "--bucket-dir",
        bucket,
        "--demo-pods",
        "120",
        "--demo-seed",
        "5",
        "--backfill",
        "2d",
    ];
    let leader = spawn(
        dir.path(),
        "leader",
        &[&common[..], &["--election", "standalone"]].concat(),
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // Yesterday's 24 hourly sets, unaggregated: several MiB of JSON.
    let yesterday = Resolution::Day.window_containing(Utc::now() - ChronoDuration::days(1));
    let window = format!(
        "{},{}",
        yesterday.start.to_rfc3339(),
        yesterday.end.to_rfc3339()
    )
    .replace("+00:00", "Z");
    let hourly = format!("/model/allocation?window={window}&step=1h");
    let streamed = wait_for(&leader, &client, &hourly, |s, b| {
        s == 200
            && b["data"].as_array().is_some_and(|d| {
                d.len() == 24
                    && d.iter()
                        .all(|set| set.as_object().is_some_and(|m| m.len() > 10))
            })
    })
    .await;
    let resp = client.get(leader.url(&hourly)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.content_length().is_none(),
        "a large body is streamed, not sent with its length"
    );
    let bytes = resp.bytes().await.unwrap();
    assert!(bytes.len() > 2 << 20, "{} bytes", bytes.len());
    let again: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(again, streamed);
    // The same sets one by one (each a small, whole body) are the streamed answer's sets.
    for (k, set) in streamed["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .step_by(7)
    {
        let start = yesterday.start + ChronoDuration::hours(k as i64);
        let one = format!(
            "/model/allocation?window={},{}",
            start.to_rfc3339(),
            (start + ChronoDuration::hours(1)).to_rfc3339()
        )
        .replace("+00:00", "Z");
        let resp = client.get(leader.url(&one)).send().await.unwrap();
        assert!(
            resp.content_length().is_some(),
            "a small body is sent whole"
        );
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(&body["data"][0], set, "hour {k}");
    }
    let metrics = client
        .get(leader.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("costmodel_query_streamed_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );

    // A follower whose limit falls inside that body: the response has begun (200) when the
    // limit is hit, so it is cut off.
    let follower = spawn(
        dir.path(),
        "follower",
        &[
            &common[..],
            &[
                "--election",
                "follower",
                "--poll-interval",
                "1s",
                "--max-response-bytes",
                "2097152",
            ],
        ]
        .concat(),
    );
    wait_for(&follower, &client, "/model/ha/status", |s, b| {
        s == 200 && b["snapshotGeneration"].as_u64() > Some(0)
    })
    .await;
    let resp = client.get(follower.url(&hourly)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    match resp.bytes().await {
        Err(_) => {}
        Ok(b) => assert!(
            serde_json::from_slice::<serde_json::Value>(&b).is_err(),
            "a cut-off body of {} bytes parsed as whole JSON",
            b.len()
        ),
    }
}
