//! The status page in a real browser: headless Chromium loads `/` from running replicas (a
//! leader, a follower, a follower with no data, a follower of a leader that stopped), runs its
//! script, and the rendered DOM shows what an operator needs; screenshots are written under
//! `target/screenshots/` for a person to look at.
#![allow(
    clippy::disallowed_methods,
    reason = "the browser is a child process run to completion; nothing to await"
)]

mod proc;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use proc::{Proc, spawn, wait_for};

fn chromium() -> String {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new("which")
            .arg(c)
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c.to_string();
        }
    }
    panic!("Chromium is needed for this test; scripts/test installs Debian's chromium package");
}

/// Runs headless Chromium on `url` for a while with `extra` arguments; its stdout.
fn chromium_run(url: &str, extra: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=6000",
            &format!("--user-data-dir={}", profile.path().display()),
        ])
        .args(extra)
        .arg(url)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The page's DOM once its script has run, and a screenshot of it in `target/screenshots/`.
fn render(p: &Proc, name: &str) -> String {
    let url = p.url("/");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join(format!("{name}.png"));
    chromium_run(
        &url,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,1400".to_string(),
        ],
    );
    assert!(shot.is_file(), "no screenshot at {}", shot.display());
    chromium_run(&url, &["--dump-dom".to_string()])
}

fn banner(dom: &str, title: &str) -> bool {
    dom.contains(&format!("<strong>{title}</strong>"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_group_and_warns_an_operator() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let bucket = dir.path().join("bucket").display().to_string();
    let quick = ["--poll-interval", "1s", "--etl-interval", "1s"];

    // A leader and a follower on one bucket.
    let leader = spawn(
        dir.path(),
        "page-leader",
        &[&["--bucket-dir", &bucket, "--backfill", "7d"][..], &quick].concat(),
    );
    let follower = spawn(
        dir.path(),
        "page-follower",
        &[
            &["--bucket-dir", &bucket, "--election", "follower"][..],
            &quick,
        ]
        .concat(),
    );
    for p in [&leader, &follower] {
        wait_for(p, &client, "/model/ha/group", |s, b| {
            s == 200
                && b["data"]["replicas"]
                    .as_array()
                    .is_some_and(|r| r.len() == 2)
        })
        .await;
        wait_for(p, &client, "/readyz", |s, _| s == 200).await;
    }
    let dom = render(&leader, "leader");
    assert!(
        dom.contains(r#"<span id="role" class="badge leader">leader</span>"#),
        "role not rendered:\n{dom}"
    );
    assert!(
        dom.contains("page-leader · cluster cluster-one"),
        "identity:\n{dom}"
    );
    assert!(
        dom.contains("page-leader <span class=\"muted\">(this one)</span>")
            && dom.contains("page-follower"),
        "the group, both replicas:\n{dom}"
    );
    assert!(
        dom.contains("<td>allocations</td><td>1d</td>"),
        "coverage:\n{dom}"
    );
    assert!(
        dom.contains("<svg") && dom.contains("kube-system"),
        "the cost chart:\n{dom}"
    );
    assert!(
        !banner(&dom, "Not ready.") && !banner(&dom, "Data is stale."),
        "{dom}"
    );

    let dom = render(&follower, "follower");
    assert!(
        dom.contains(r#"class="badge follower">follower</span>"#),
        "{dom}"
    );
    assert!(
        dom.contains("the backup's writer: page-leader, term 0"),
        "a follower shows the leader and term from the manifest:\n{dom}"
    );
    assert!(!banner(&dom, "Not ready."), "{dom}");

    // A follower of an empty bucket: up, nothing to serve, and it says why.
    let empty = spawn(
        dir.path(),
        "page-empty",
        &[
            &[
                "--bucket-dir",
                &dir.path().join("empty-bucket").display().to_string(),
                "--election",
                "follower",
            ][..],
            &quick,
        ]
        .concat(),
    );
    wait_for(&empty, &client, "/model/ha/status", |s, b| {
        s == 200 && b["bucketEmpty"] == true
    })
    .await;
    let dom = render(&empty, "follower-no-data");
    assert!(banner(&dom, "Not ready."), "{dom}");
    assert!(
        dom.contains("following, but the bucket holds no backup yet"),
        "{dom}"
    );

    // A follower whose leader stopped: its data grows stale, and the page says since when and
    // who wrote it last.
    drop(leader);
    wait_for(&follower, &client, "/model/ha/status", |s, b| {
        s == 200 && b["stale"] == true
    })
    .await;
    let dom = render(&follower, "follower-stale");
    assert!(banner(&dom, "Data is stale."), "{dom}");
    assert!(
        dom.contains("The leader has published nothing for")
            && dom.contains("by page-leader, term 0"),
        "{dom}"
    );
}
