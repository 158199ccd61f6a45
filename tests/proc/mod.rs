//! Running the real binary in tests: a replica process on a free loopback port with its log in
//! a file, and waits on its HTTP API.
#![allow(
    clippy::disallowed_methods,
    reason = "synchronous tests poll a child process or a port; no event to await there"
)]
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A replica process, killed when dropped.
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Its HTTP port on 127.0.0.1.
    pub port: u16,
    /// Its stderr (the log).
    pub log: std::path::PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// A URL of its API.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
    /// The last 30 lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the binary as replica `name` with its own `--etl-dir` under `dir` and `args`.
pub fn spawn(dir: &Path, name: &str, args: &[&str]) -> Proc {
    spawn_with_env(dir, name, args, &[])
}

/// [`spawn`], with these environment variables set too.
pub fn spawn_with_env(dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let port = free_port();
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_cost-model"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--identity", name])
        .args([
            "--etl-dir",
            dir.join(format!("{name}-etl")).to_str().unwrap(),
        ])
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("LEADER_FOLLOWER_ENABLED")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Proc { child, port, log }
}

/// Status and JSON body of a GET, if the server answered with JSON.
pub async fn get_json(client: &reqwest::Client, url: &str) -> Option<(u16, serde_json::Value)> {
    let resp = client.get(url).send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.json().await.ok()?))
}

/// Polls `url` until `ok` accepts the JSON, for at most 90 s.
pub async fn wait_for(
    p: &Proc,
    client: &reqwest::Client,
    path: &str,
    ok: impl Fn(u16, &serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some((status, body)) = get_json(client, &p.url(path)).await
            && ok(status, &body)
        {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "timed out on {path}; log:\n{}",
            p.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Proc {
    /// The whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit, for at most `within`; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit within {within:?}; log:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The value of one sample in a Prometheus text exposition (`name{labels}` as written), or 0.
pub fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Polls `/metrics` until `ok` accepts it, for at most 90 s.
pub async fn wait_metrics(p: &Proc, client: &reqwest::Client, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(resp) = client.get(p.url("/metrics")).send().await
            && let Ok(text) = resp.text().await
            && ok(&text)
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting on /metrics; log:\n{}",
            p.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
