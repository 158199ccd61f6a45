//! Real Prometheus servers for tests, loaded with synthetic data.
//!
//! [`PromServer::start`] turns OpenMetrics text into TSDB blocks with that version's
//! `promtool tsdb create-blocks-from openmetrics` and starts that version's `prometheus` on
//! them, on a free loopback port, with no scrape jobs: the server holds exactly the data the
//! test wrote, at the times it chose. Two versions run: [`PromVersion::V3`] (built from the Go
//! module) and [`PromVersion::V2`] (2.42 from Debian), both installed by `scripts/prometheus`
//! into the user's cache; their range selectors differ (left-open in 3, closed in 2).
//!
//! [`cluster`] generates the data a real cluster's scrapers would have written; [`proxy`] puts
//! a fault-injecting TCP proxy in front of a server.
#![allow(
    clippy::disallowed_methods,
    reason = "start() is synchronous (callable from any test) and polls a child process and a port; no event to await there"
)]
#![allow(dead_code)]

pub mod cluster;
pub mod proxy;

pub use cluster::Cluster;
pub use proxy::{FaultProxy, Mode};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// How long a server may take to become ready and serve its data (blocks are opened at
/// startup; a week of a large cluster takes a while on a loaded machine).
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// Between two readiness polls.
const POLL: Duration = Duration::from_millis(50);
/// promtool's largest block: 162 h (its block ranges are 2 h × 3ⁿ), so a week of data makes a
/// couple of blocks instead of 84 two-hour ones, each a pass over the input.
const MAX_BLOCK_DURATION: &str = "162h";

/// Which Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PromVersion {
    /// Prometheus 3 (module `github.com/prometheus/prometheus` v0.316.0): left-open ranges.
    V3,
    /// Prometheus 2.42 (Debian bookworm): closed ranges.
    V2,
}

impl PromVersion {
    /// Both, newest first.
    pub const ALL: [PromVersion; 2] = [PromVersion::V3, PromVersion::V2];

    /// The argument `scripts/prometheus` takes for it.
    pub fn major(self) -> &'static str {
        match self {
            PromVersion::V3 => "3",
            PromVersion::V2 => "2",
        }
    }
}

/// A running Prometheus with the test's data; killed, and its folder removed, when dropped.
pub struct PromServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Which Prometheus it is.
    pub version: PromVersion,
    /// The port of `url`.
    pub port: u16,
    child: Child,
    /// Input, TSDB, config and log; removed after the process is gone.
    dir: tempfile::TempDir,
}

impl Drop for PromServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The repository root (where `scripts/prometheus` lives).
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The absolute path `scripts/prometheus WHAT MAJOR` prints (it installs first if needed).
fn tool(what: &str, version: PromVersion) -> PathBuf {
    let out = Command::new(repo().join("scripts/prometheus"))
        .args([what, version.major()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/prometheus");
    assert!(
        out.status.success(),
        "scripts/prometheus {what} {} failed: {} (it needs Go for Prometheus 3 and apt for 2.42)",
        version.major(),
        out.status
    );
    let path = PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("scripts/prometheus printed a path")
            .trim(),
    );
    assert!(
        path.is_file(),
        "scripts/prometheus printed {path:?}, which is no file"
    );
    path
}

/// `(prometheus, promtool)` of a version, asked for once per test process.
fn binaries(version: PromVersion) -> &'static (PathBuf, PathBuf) {
    static V3: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    static V2: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    let cell = match version {
        PromVersion::V3 => &V3,
        PromVersion::V2 => &V2,
    };
    cell.get_or_init(|| (tool("bin", version), tool("promtool", version)))
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .expect("local address")
        .port()
}

/// The metric names of the samples in an OpenMetrics file, in order of first appearance (one
/// pass with one reused line buffer: the input may be gigabytes).
fn sample_names(path: &Path) -> Vec<String> {
    let file = std::fs::File::open(path).expect("open the OpenMetrics input");
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut names: Vec<String> = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .expect("read the OpenMetrics input");
        if n == 0 {
            return names;
        }
        if line.first().is_none_or(|b| *b == b'#' || *b == b'\n') {
            continue;
        }
        let end = line
            .iter()
            .position(|b| matches!(b, b'{' | b' ' | b'\n'))
            .unwrap_or(line.len());
        let name = &line[..end];
        if names.last().map(String::as_bytes) != Some(name)
            && !names.iter().any(|n| n.as_bytes() == name)
        {
            names.push(String::from_utf8_lossy(name).into_owned());
        }
    }
}

impl PromServer {
    /// Writes `openmetrics` to a temp dir, runs that version's promtool
    /// `tsdb create-blocks-from openmetrics` into a fresh TSDB, starts that version's
    /// prometheus on a free loopback port with it (no scrape jobs, retention of ten years so
    /// old blocks stay), waits for `/-/ready` and for every metric name of the input to be
    /// queryable. Panics with a clear message (and prometheus's log tail) on failure.
    pub fn start(version: PromVersion, openmetrics: &str) -> PromServer {
        Self::start_with(version, |out| out.write_all(openmetrics.as_bytes()))
    }

    /// [`PromServer::start`] on a generated cluster, streamed to the input file (never held in
    /// memory as text).
    pub fn start_cluster(version: PromVersion, cluster: &Cluster) -> PromServer {
        Self::start_with(version, |out| cluster.to_openmetrics(out))
    }

    /// [`PromServer::start`] on OpenMetrics text that `write` streams into the input file.
    pub fn start_with(
        version: PromVersion,
        write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
    ) -> PromServer {
        let dir = tempfile::Builder::new()
            .prefix("prom-")
            .tempdir()
            .expect("temp dir for Prometheus");
        let input = dir.path().join("input.om");
        let mut file = std::fs::File::create(&input).expect("create the OpenMetrics input");
        write(&mut file).expect("write the OpenMetrics input");
        file.sync_all().ok();
        drop(file);
        Self::start_dir(version, dir, &input)
    }

    /// [`PromServer::start`] on an OpenMetrics file the caller wrote (it is only read).
    pub fn start_file(version: PromVersion, openmetrics: &Path) -> PromServer {
        let dir = tempfile::Builder::new()
            .prefix("prom-")
            .tempdir()
            .expect("temp dir for Prometheus");
        Self::start_dir(version, dir, openmetrics)
    }

    fn start_dir(version: PromVersion, dir: tempfile::TempDir, input: &Path) -> PromServer {
        let (prometheus, promtool) = binaries(version);
        let tsdb = dir.path().join("tsdb");
        std::fs::create_dir_all(&tsdb).expect("create the TSDB folder");

        let started = Instant::now();
        // The names the server must serve before it counts as loaded, read while promtool
        // works (the input may be gigabytes).
        let scan = {
            let input = input.to_path_buf();
            std::thread::spawn(move || sample_names(&input))
        };
        let import_log = dir.path().join("promtool.log");
        let log_file = std::fs::File::create(&import_log).expect("promtool log");
        let status = Command::new(promtool)
            .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
            .arg(format!("--max-block-duration={MAX_BLOCK_DURATION}"))
            .arg(input)
            .arg(&tsdb)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("promtool log"))
            .stderr(log_file)
            .status()
            .expect("run promtool");
        assert!(
            status.success(),
            "{version:?}: promtool tsdb create-blocks-from openmetrics {} failed ({status}):\n{}",
            input.display(),
            tail(&import_log, 20)
        );
        let imported = started.elapsed();
        let names = scan.join().expect("scan the OpenMetrics input");

        let config = dir.path().join("prometheus.yml");
        // No scrape jobs: the server holds only what the test loaded (not even its own metrics).
        std::fs::write(&config, "global:\n  evaluation_interval: 1h\n").expect("write config");
        let log = dir.path().join("prometheus.log");
        // Prometheus reads its web config (basic auth users) on every request: a test may
        // require credentials once the server is up (`set_web_config`).
        let web = dir.path().join("web.yml");
        std::fs::write(&web, "{}\n").expect("write web config");

        // The port is free when chosen but another process may take it first: a server that
        // exits because of that is started again on a new one.
        for attempt in 1.. {
            let port = free_port();
            let mut child = Command::new(prometheus)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", tsdb.display()))
                .arg("--storage.tsdb.retention.time=3650d")
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg(format!("--web.config.file={}", web.display()))
                .arg("--log.level=info")
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("prometheus log"))
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("{version:?}: cannot run {}: {e}", prometheus.display())
                });
            match wait_ready(&mut child, port, &names) {
                Ok(()) => {
                    let ready = started.elapsed() - imported;
                    eprintln!(
                        "prometheus {version:?} on 127.0.0.1:{port} with {} metric names (import {imported:?}, ready {ready:?})",
                        names.len(),
                    );
                    return PromServer {
                        url: format!("http://127.0.0.1:{port}"),
                        version,
                        port,
                        child,
                        dir,
                    };
                }
                Err(exited) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let taken = tail(&log, 10).contains("address already in use");
                    if exited && taken && attempt < 3 {
                        continue;
                    }
                    panic!(
                        "{version:?}: prometheus {} on port {port} {}; log tail:\n{}",
                        prometheus.display(),
                        if exited {
                            "exited during startup".to_string()
                        } else {
                            format!("was not ready with its data after {READY_TIMEOUT:?}")
                        },
                        tail(&log, 30)
                    );
                }
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Status and body of a GET of `path_and_query` (e.g. `/api/v1/query?query=up`), over a
    /// fresh HTTP/1.0 connection: synchronous, so usable from any test, async or not.
    pub fn get(&self, path_and_query: &str) -> std::io::Result<(u16, String)> {
        http_get(self.port, path_and_query)
    }

    /// The `data` of an instant query at `at`; panics unless the server answers success.
    pub fn query(&self, promql: &str, at: DateTime<Utc>) -> serde_json::Value {
        let path = format!(
            "/api/v1/query?query={}&time={}",
            encode(promql),
            at.timestamp_millis() as f64 / 1000.0
        );
        let (status, body) = self
            .get(&path)
            .unwrap_or_else(|e| panic!("{:?}: GET {path}: {e}", self.version));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| {
            panic!("{:?}: {path} answered {status} {body:?}: {e}", self.version)
        });
        assert_eq!(
            v["status"], "success",
            "{:?}: {promql} at {at} answered {status} {body}",
            self.version
        );
        v["data"].clone()
    }

    /// The result vector of an instant query as `(labels, value)` pairs.
    pub fn query_vector(
        &self,
        promql: &str,
        at: DateTime<Utc>,
    ) -> Vec<(serde_json::Map<String, serde_json::Value>, f64)> {
        let data = self.query(promql, at);
        assert_eq!(data["resultType"], "vector", "{promql}: {data}");
        data["result"]
            .as_array()
            .expect("result array")
            .iter()
            .map(|r| {
                let labels = r["metric"].as_object().cloned().unwrap_or_default();
                let value = r["value"][1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(f64::NAN);
                (labels, value)
            })
            .collect()
    }

    /// The folder holding the input, the TSDB, the config and the logs.
    /// Replaces the server's web config (exporter-toolkit's `web.yml`: `basic_auth_users`, ...);
    /// Prometheus applies it from its next request on.
    pub fn set_web_config(&self, yaml: &str) {
        let path = self.dir.path().join("web.yml");
        let tmp = self.dir.path().join("web.yml.tmp");
        std::fs::write(&tmp, yaml).expect("write web config");
        std::fs::rename(&tmp, &path).expect("replace web config");
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `n` lines of prometheus's log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.dir.path().join("prometheus.log"), n)
    }
}

/// Polls until `/-/ready` answers 200 and `__name__` has every name of the input; `Err(true)`
/// if the process exited, `Err(false)` on timeout.
fn wait_ready(child: &mut Child, port: u16, names: &[String]) -> Result<(), bool> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut ready = false;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return Err(true);
        }
        if !ready {
            ready = matches!(http_get(port, "/-/ready"), Ok((200, _)));
        }
        if ready {
            // Without start and end, label values cover the whole TSDB.
            if let Ok((200, body)) = http_get(port, "/api/v1/label/__name__/values") {
                let have: serde_json::Value =
                    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
                let have: Vec<&str> = have["data"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                    .unwrap_or_default();
                if names.iter().all(|n| have.contains(&n.as_str())) {
                    return Ok(());
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(false);
        }
        std::thread::sleep(POLL);
    }
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved characters pass).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A GET over HTTP/1.0 on 127.0.0.1:`port`: the server answers without chunking and closes, so
/// the body is whatever follows the head.
pub fn http_get(port: u16, path_and_query: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("no HTTP head in {text:?}"),
        )
    })?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad status line in {head:?}"),
            )
        })?;
    Ok((status, body.to_string()))
}
