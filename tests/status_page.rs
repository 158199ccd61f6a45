//! The status page in a real browser: headless Chromium loads `/` from the running binary, runs
//! its script, and the rendered DOM shows the replica's role, identity and data.
#![allow(
    clippy::disallowed_methods,
    reason = "synchronous tests poll a child process or a port; no event to await there"
)]

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

/// The DOM of `url` once headless Chromium has run its script for a while.
fn render(browser: &str, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            url,
        ])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The status code of a plain HTTP/1.1 GET on loopback, if the server answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

#[test]
fn status_page_renders_role_identity_and_coverage_in_chromium() {
    let browser = chromium();
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut replica = Command::new(env!("CARGO_BIN_EXE_cost-model"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--identity",
            "page-replica",
            "--backfill",
            "1d",
        ])
        .args([
            "--etl-dir",
            dir.path().join("etl").to_str().unwrap(),
            "--bucket-dir",
            dir.path().join("bucket").to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/");

    // Wait until the replica has data, so the page has something to show.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if http_status(port, "/readyz") == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "replica never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }

    let dom = render(&browser, &url);
    let _ = replica.kill();
    let _ = replica.wait();
    assert!(
        dom.contains(r#"<span id="role" class="badge leader">leader</span>"#),
        "role not rendered:\n{dom}"
    );
    assert!(
        dom.contains("page-replica · cluster cluster-one"),
        "identity not rendered:\n{dom}"
    );
    assert!(
        dom.contains("<td>allocations</td><td>1d</td>"),
        "coverage not rendered:\n{dom}"
    );
    assert!(
        dom.contains(r#"<span class="ok">yes</span>"#),
        "writes enabled not rendered:\n{dom}"
    );
}

#[test]
fn a_replica_that_cannot_answer_shows_why_in_a_banner() {
    let browser = chromium();
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A follower of an empty bucket: up, but with nothing to serve.
    let mut replica = Command::new(env!("CARGO_BIN_EXE_cost-model"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--election",
            "follower",
        ])
        .args(["--poll-interval", "1s", "--identity", "empty-follower"])
        .args([
            "--etl-dir",
            dir.path().join("etl").to_str().unwrap(),
            "--bucket-dir",
            dir.path().join("bucket").to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_status(port, "/readyz") != Some(503) {
        assert!(Instant::now() < deadline, "replica never answered /readyz");
        std::thread::sleep(Duration::from_millis(100));
    }
    let dom = render(&browser, &format!("http://127.0.0.1:{port}/"));
    let _ = replica.kill();
    let _ = replica.wait();
    assert!(
        dom.contains(r#"<div id="notready" class="card bad" style="display: block;">"#),
        "banner not shown:\n{dom}"
    );
    assert!(
        dom.contains("following, but the bucket holds no backup yet"),
        "reason not shown:\n{dom}"
    );
}
