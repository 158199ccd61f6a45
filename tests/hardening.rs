//! The hardening of the core, checked black-box against the real binary (built with its
//! `test-support` debug routes): bad configuration stops the start with one line and exit 64,
//! a dead actor ends the process with exit 70, a query whose client goes away is cancelled, a
//! cheap query is answered while heavy ones hold their lane, oversized request heads get JSON,
//! credentials never reach logs or status, and an unreachable apiserver is logged once.

mod proc;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proc::{metric, spawn, wait_for, wait_metrics};

/// Runs the binary with exactly these arguments and environment; its exit code and stderr.
fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cost-model"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_stops_the_start_with_one_line_naming_what_was_set() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
    let file = d("a-file");
    std::fs::write(&file, "not a folder").unwrap();
    let bad_yaml = d("bad.yaml");
    std::fs::write(&bad_yaml, "type: S3\nconfig:\n  bucket: b\n  buckit: x\n").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let (etl, bucket) = (d("etl"), d("bucket"));
    let base = ["--etl-dir", &etl, "--bucket-dir", &bucket];
    let with = |extra: &[&'static str]| -> Vec<String> {
        base.iter()
            .map(|s| s.to_string())
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };
    // (arguments, environment, what the one line must name)
    type Case<'a> = (Vec<String>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            with(&["--hourly-retention", "4294967295"]),
            vec![],
            "--hourly-retention (4294967295)",
        ),
        (
            with(&["--daily-retention", "4294967295"]),
            vec![],
            "--daily-retention (4294967295)",
        ),
        (with(&["--backfill", "300000y"]), vec![], "--backfill"),
        (
            with(&["--lease-duration", "300000y"]),
            vec![],
            "--lease-duration",
        ),
        (
            with(&[]),
            vec![("LEASE_DURATION", "5s")],
            "LEASE_DURATION=5s",
        ),
        (
            with(&[]),
            vec![("LEASE_DURATION", "soon")],
            "LEASE_DURATION=soon",
        ),
        (
            with(&[]),
            vec![("ETL_HOURLY_STORE_DURATION_HOURS", "0")],
            "ETL_HOURLY_STORE_DURATION_HOURS=0",
        ),
        (
            vec!["--etl-dir".into(), etl.clone()],
            vec![("LEADER_FOLLOWER_ENABLED", "true")],
            "LEADER_FOLLOWER_ENABLED=true needs bucket backup",
        ),
        (
            vec![
                "--etl-dir".into(),
                etl.clone(),
                "--bucket-config".into(),
                bad_yaml.clone(),
            ],
            vec![],
            "buckit",
        ),
        (
            vec![
                "--etl-dir".into(),
                etl.clone(),
                "--bucket-config".into(),
                "/dev/zero".into(),
            ],
            vec![],
            "not a bucket secret",
        ),
        (
            vec![
                "--etl-dir".into(),
                etl.clone(),
                "--bucket-config".into(),
                d("missing.yaml"),
            ],
            vec![],
            "--bucket-config",
        ),
        (
            vec![
                "--etl-dir".into(),
                etl.clone(),
                "--bucket-dir".into(),
                file.clone(),
            ],
            vec![],
            "--bucket-dir",
        ),
        (
            vec![
                "--etl-dir".into(),
                file.clone(),
                "--bucket-dir".into(),
                bucket.clone(),
            ],
            vec![],
            "--etl-dir",
        ),
        (
            with(&["--listen", Box::leak(taken.into_boxed_str())]),
            vec![],
            "--listen",
        ),
    ];
    for (args, env, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, err) = run(&args, &env);
        let what = format!("{args:?} {env:?}");
        assert_eq!(code, Some(64), "{what}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: one line: {err}");
        assert!(err.contains(needle), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert!(
            !err.contains("bucket config") || needle == "buckit",
            "{what}: {err}"
        );
        assert!(
            err.matches("os error").count() <= 1,
            "{what}: doubled OS error: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_actor_ends_the_process_with_exit_70_and_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    for actor in ["storage", "poller", "etl", "election"] {
        let bucket = dir.path().join(format!("bucket-{actor}"));
        let mut p = spawn(
            dir.path(),
            actor,
            &["--bucket-dir", bucket.to_str().unwrap(), "--backfill", "1h"],
        );
        wait_for(&p, &client, "/readyz", |s, _| s == 200).await;
        let resp = client
            .post(p.url(&format!("/debug/crash/{actor}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let code = p.wait_exit(Duration::from_secs(30));
        let log = p.log_text();
        assert_eq!(code, Some(70), "{actor}: {log}");
        let last = log.trim().lines().last().unwrap();
        assert!(
            last.starts_with(&format!(
                "cost-model: critical actor {actor} stopped: panicked: crash requested by a test"
            )),
            "{actor}: {last}"
        );
        assert!(
            log.contains("shutdown complete"),
            "{actor}: ordered shutdown: {log}"
        );
    }
}

/// Sends a raw GET and returns the open connection.
fn raw_get(port: u16, target: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    s
}

/// Reads one whole response (the server closes or sends Content-Length): status and body.
fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            });
            if len.is_some_and(|n| body.len() >= n) {
                let status = head[9..12].parse().unwrap();
                return (status, body.to_string());
            }
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed mid-response: {text}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_whose_client_goes_away_is_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let p = spawn(
        dir.path(),
        "r",
        &["--bucket-dir", bucket.to_str().unwrap(), "--backfill", "1h"],
    );
    let client = reqwest::Client::new();
    wait_for(&p, &client, "/readyz", |s, _| s == 200).await;
    // A heavy query that would hold its lane for ten minutes.
    let conn = raw_get(p.port, "/debug/stall?seconds=600");
    wait_metrics(&p, &client, |m| {
        metric(m, r#"costmodel_query_lane_admitted{lane="heavy"}"#) == 1.0
    })
    .await;
    drop(conn);
    let m = wait_metrics(&p, &client, |m| {
        metric(m, r#"costmodel_queries_total{result="cancelled"}"#) == 1.0
            && metric(m, r#"costmodel_query_lane_admitted{lane="heavy"}"#) == 0.0
    })
    .await;
    assert_eq!(metric(&m, r#"costmodel_queries_total{result="ok"}"#), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cheap_query_is_answered_while_eight_heavy_ones_run() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let p = spawn(
        dir.path(),
        "r",
        &[
            "--bucket-dir",
            bucket.to_str().unwrap(),
            "--backfill",
            "2d",
            "--max-heavy-queries",
            "4",
        ],
    );
    let client = reqwest::Client::new();
    wait_for(&p, &client, "/model/etl/status", |s, b| {
        s == 200
            && b["data"]["coverage"]
                .as_array()
                .is_some_and(|c| c.len() == 4)
    })
    .await;
    let mut heavy: Vec<TcpStream> = (0..8)
        .map(|_| raw_get(p.port, "/debug/stall?seconds=600"))
        .collect();
    // Four are admitted; the other four are refused at once, saying which limit.
    wait_metrics(&p, &client, |m| {
        metric(m, r#"costmodel_query_lane_admitted{lane="heavy"}"#) == 4.0
            && metric(m, r#"costmodel_queries_total{result="overloaded"}"#) == 4.0
    })
    .await;
    let mut answered = vec![false; heavy.len()];
    let deadline = Instant::now() + Duration::from_secs(10);
    while answered.iter().filter(|a| **a).count() < 4 {
        assert!(Instant::now() < deadline, "the refusals never arrived");
        for (s, done) in heavy.iter_mut().zip(&mut answered) {
            s.set_nonblocking(true).unwrap();
            let ready = !*done && s.peek(&mut [0u8; 1]).is_ok_and(|n| n > 0);
            s.set_nonblocking(false).unwrap();
            if ready {
                let (status, body) = read_response(s);
                assert_eq!(status, 503, "{body}");
                assert!(body.contains("--max-heavy-queries"), "{body}");
                *done = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let resp = client
        .get(p.url("/model/allocation?window=2d&aggregate=namespace&accumulate=true"))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(resp.status(), 200);
    assert!(
        !resp.json::<serde_json::Value>().await.unwrap()["data"][0]
            .as_object()
            .unwrap()
            .is_empty()
    );
    let m = wait_metrics(&p, &client, |_| true).await;
    assert_eq!(
        metric(&m, r#"costmodel_query_lane_admitted{lane="heavy"}"#),
        4.0,
        "the heavy ones still run"
    );
    println!("cheap query answered in {took:?} while four heavy queries ran and four were refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_json_and_raw_characters_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let p = spawn(
        dir.path(),
        "r",
        &["--bucket-dir", bucket.to_str().unwrap(), "--backfill", "1h"],
    );
    let client = reqwest::Client::new();
    wait_for(&p, &client, "/readyz", |s, _| s == 200).await;
    let long = format!("/model/allocation?window=1d&filter={}", "a".repeat(70_000));
    for _ in 0..3 {
        let mut s = raw_get(p.port, &long);
        let (status, body) = read_response(&mut s);
        assert_eq!(status, 414);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["code"], 414);
    }
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(100_000)
    )
    .unwrap();
    let (status, body) = read_response(&mut s);
    assert_eq!(status, 431, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["code"],
        431
    );

    // A raw quote in the filter, as curl sends it.
    let mut s = raw_get(
        p.port,
        r#"/model/allocation?window=today&aggregate=namespace&filter=namespace:"kube-system""#,
    );
    let (status, body) = read_response(&mut s);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&String> = v["data"][0].as_object().unwrap().keys().collect();
    assert!(names.contains(&&"kube-system".to_string()), "{names:?}");
    assert!(
        names
            .iter()
            .all(|n| *n == "kube-system" || n.starts_with("__")),
        "{names:?}"
    );

    let log = p.log_text();
    assert_eq!(
        log.matches("refused oversized request heads").count(),
        1,
        "one WARN a minute: {log}"
    );
    assert!(!log.contains("ERROR"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_bucket_config_never_reach_logs_or_status() {
    let dir = tempfile::tempdir().unwrap();
    let closed = proc::free_port();
    let secret = dir.path().join("object-store.yaml");
    std::fs::write(
        &secret,
        format!(
            "type: S3\nconfig:\n  bucket: kc\n  endpoint: 127.0.0.1:{closed}\n  region: us-east-1\n  access_key: AKIAEXAMPLE\n  secret_key: secret-key-value\n  insecure: true\n"
        ),
    )
    .unwrap();
    let p = spawn(
        dir.path(),
        "f",
        &[
            "--bucket-config",
            secret.to_str().unwrap(),
            "--election",
            "follower",
            "--poll-interval",
            "1s",
        ],
    );
    let client = reqwest::Client::new();
    let status = wait_for(&p, &client, "/model/ha/status", |s, b| {
        s == 200 && b["lastPollError"].is_string()
    })
    .await;
    let status = status.to_string();
    let (_, ready) = proc::get_json(&client, &p.url("/readyz")).await.unwrap();
    let text = format!("{status}\n{ready}\n{}", p.log_text());
    assert!(
        status.contains("127.0.0.1"),
        "the error says where: {status}"
    );
    assert!(
        !text.contains("secret-key-value"),
        "the secret key leaked: {text}"
    );

    // Credentials in an endpoint's userinfo are refused at start (they would never be used),
    // and the one line that says so quotes nothing of them.
    std::fs::write(
        &secret,
        format!(
            "type: S3\nconfig:\n  bucket: kc\n  endpoint: http://minio:userinfo-pass@127.0.0.1:{closed}\n  region: us-east-1\n  insecure: true\n"
        ),
    )
    .unwrap();
    let (code, err) = run(&["--bucket-config", secret.to_str().unwrap()], &[]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("config.endpoint"), "{err}");
    assert!(
        !err.contains("userinfo-pass") && !err.contains("minio:"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_apiserver_is_logged_once_not_every_retry() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://127.0.0.1:{}\n    insecure-skip-tls-verify: true\n  name: dead\ncontexts:\n- context:\n    cluster: dead\n    user: u\n    namespace: default\n  name: dead\ncurrent-context: dead\nusers:\n- name: u\n  user:\n    token: t\n",
            proc::free_port()
        ),
    )
    .unwrap();
    let bucket = dir.path().join("bucket");
    let port = proc::free_port();
    let log = dir.path().join("r.log");
    let child = Command::new(env!("CARGO_BIN_EXE_cost-model"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--election",
            "kubernetes",
        ])
        .args(["--bucket-dir", bucket.to_str().unwrap()])
        .args(["--etl-dir", dir.path().join("etl").to_str().unwrap()])
        .args([
            "--retry-period",
            "500ms",
            "--renew-deadline",
            "1s",
            "--lease-duration",
            "2s",
        ])
        .env("KUBECONFIG", &kubeconfig)
        // A user's filter too: kube's own per-request error lines stay off under it.
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let p = proc::Proc { child, port, log };
    let client = reqwest::Client::new();
    wait_metrics(&p, &client, |m| {
        metric(
            m,
            r#"costmodel_election_failures_total{result="unreachable"}"#,
        ) >= 5.0
    })
    .await;
    let log = p.log_text();
    let loud: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains("ERROR"))
        .filter(|l| !l.contains("built with the test-support feature"))
        .collect();
    assert_eq!(
        loud.len(),
        1,
        "one line for the state change, not one per retry: {loud:#?}"
    );
    assert!(loud[0].contains("apiserver unreachable"), "{}", loud[0]);
}
