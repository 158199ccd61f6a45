//! Harness for the multi-process tests against a real kube-apiserver (`scripts/testenv`): the
//! control plane, replica processes of the `cost-model` binary, their HTTP status and queries,
//! a 100 ms sampler of every replica, and Lease reads with the admin identity.
//!
//! Replica processes are killed when their [`Replica`] drops; when a test fails the tail of
//! every replica's log is printed.
#![allow(
    clippy::disallowed_methods,
    reason = "synchronous tests poll a child process or a port; no event to await there"
)]
#![allow(dead_code)]

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The repository root (where `scripts/testenv` lives).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `cost-model` binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cost-model"))
}

/// A running control plane: its kubeconfigs.
#[derive(Clone, Debug)]
pub struct Testenv {
    /// The state folder holding the kubeconfigs and `pki/ca.crt`.
    pub dir: PathBuf,
    /// get/create/update on leases in `default`, nothing else.
    pub replica: PathBuf,
    /// `system:masters`.
    pub admin: PathBuf,
    /// Authenticated, no permissions.
    pub norbac: PathBuf,
}

impl Testenv {
    fn in_dir(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            replica: dir.join("replica.kubeconfig"),
            admin: dir.join("admin.kubeconfig"),
            norbac: dir.join("norbac.kubeconfig"),
        }
    }
}

/// The shared control plane: `scripts/testenv up` once per test binary (it is idempotent and
/// serialises concurrent callers itself; the lock here keeps one process from asking twice).
pub fn testenv() -> Testenv {
    static SHARED: OnceLock<Testenv> = OnceLock::new();
    SHARED.get_or_init(testenv_up).clone()
}

/// Runs `scripts/testenv up` and returns the control plane it reports.
pub fn testenv_up() -> Testenv {
    let started = Instant::now();
    let out = Command::new(repo().join("scripts/testenv"))
        .arg("up")
        .current_dir(repo())
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/testenv up");
    assert!(
        out.status.success(),
        "scripts/testenv up failed: {}",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("scripts/testenv up printed a path")
            .trim(),
    );
    assert!(
        path.is_file(),
        "scripts/testenv up printed {path:?}, which is not a file"
    );
    eprintln!("testenv up in {:?}: {}", started.elapsed(), path.display());
    Testenv::in_dir(path.parent().expect("kubeconfig in a folder"))
}

/// A control plane of the test's own (the same binary as `scripts/testenv`, another state
/// folder and free ports), for tests that take the apiserver down without disturbing the
/// shared one other test binaries use.
pub struct PrivateTestenv {
    child: Option<Child>,
    state: tempfile::TempDir,
    ports: (u16, u16),
    pub env: Testenv,
}

impl PrivateTestenv {
    /// Builds the binary if needed (`scripts/testenv build`), starts it, waits until ready.
    pub fn start() -> Self {
        let status = Command::new(repo().join("scripts/testenv"))
            .arg("build")
            .current_dir(repo())
            .status()
            .expect("run scripts/testenv build");
        assert!(status.success(), "scripts/testenv build failed");
        let state = tempfile::tempdir().expect("tempdir");
        let mut this = Self {
            child: None,
            env: Testenv::in_dir(state.path()),
            ports: (free_port(), free_port()),
            state,
        };
        this.launch();
        this
    }

    /// Starts it again after [`PrivateTestenv::stop`]: the same etcd data (so the Leases are
    /// still there), ports, CA and tokens, so the kubeconfigs replicas read at start still work.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Whether it is running (not stopped).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    fn launch(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.state.path().join("testenv.log"))
            .expect("log file");
        let child = Command::new(repo().join("target/testenv/bin/testenv"))
            .arg("--state-dir")
            .arg(self.state.path())
            .args(["--apiserver-port", &self.ports.0.to_string()])
            .args(["--etcd-port", &self.ports.1.to_string()])
            .arg("--keep-credentials")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start testenv");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.state.path().join("ready").exists() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "testenv exited during startup ({status}):\n{}",
                    self.log_tail(40)
                );
            }
            assert!(
                Instant::now() < deadline,
                "testenv not ready after 120 s:\n{}",
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the apiserver and etcd (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        tail(&self.state.path().join("testenv.log"), lines)
    }
}

impl Drop for PrivateTestenv {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Ports handed out in this process, so two replicas never get the same one.
fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind a free port")
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// Sends a signal (`KILL`, `TERM`, `STOP`, `CONT`) with the `kill` command.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// The last `lines` lines of a file, without backtrace frames (so a panic's message shows).
pub fn tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let frame = |l: &str| {
        let t = l.trim_start();
        t.starts_with("at ")
            || t.split_once(": ")
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let all: Vec<&str> = text.lines().filter(|l| !frame(l)).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A lease name unique to this test and process (a DNS subdomain).
pub fn lease_name(test: &str) -> String {
    format!("{}-{}", test.replace('_', "-"), std::process::id()).to_lowercase()
}

/// client-go's three timings, as flags.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    pub lease: Duration,
    pub renew: Duration,
    pub retry: Duration,
}

impl Timings {
    /// Short timings for behaviour tests.
    pub const FAST: Timings = Timings {
        lease: Duration::from_secs(4),
        renew: Duration::from_secs(3),
        retry: Duration::from_secs(1),
    };
    /// client-go's defaults (the binary's defaults too).
    pub const DEFAULT: Timings = Timings {
        lease: Duration::from_secs(15),
        renew: Duration::from_secs(10),
        retry: Duration::from_secs(2),
    };
}

/// How to start one replica.
#[derive(Clone, Debug)]
pub struct ReplicaSpec {
    pub identity: String,
    pub lease_name: String,
    pub kubeconfig: PathBuf,
    pub bucket_dir: PathBuf,
    pub timings: Timings,
    pub poll_interval: &'static str,
    pub etl_interval: &'static str,
    /// A Kubecost bucket secret to use instead of `bucket_dir`.
    pub bucket_config: Option<PathBuf>,
    /// More flags, after the others.
    pub extra_args: Vec<String>,
}

impl ReplicaSpec {
    /// A replica of `test`'s group with the short timings.
    pub fn new(identity: &str, lease_name: &str, kubeconfig: &Path, bucket_dir: &Path) -> Self {
        Self {
            identity: identity.into(),
            lease_name: lease_name.into(),
            kubeconfig: kubeconfig.into(),
            bucket_dir: bucket_dir.into(),
            timings: Timings::FAST,
            poll_interval: "1s",
            etl_interval: "2s",
            bucket_config: None,
            extra_args: Vec::new(),
        }
    }

    /// Backs up to the bucket a Kubecost secret names instead of `bucket_dir`.
    pub fn bucket_config(mut self, secret: &Path) -> Self {
        self.bucket_config = Some(secret.into());
        self
    }

    /// Adds flags after the others.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.extra_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    pub fn timings(mut self, t: Timings) -> Self {
        self.timings = t;
        self
    }

    pub fn intervals(mut self, poll: &'static str, etl: &'static str) -> Self {
        self.poll_interval = poll;
        self.etl_interval = etl;
        self
    }

    fn command(&self, etl_dir: &Path, port: u16, log: &Path) -> Command {
        let secs = |d: Duration| format!("{}ms", d.as_millis());
        let mut cmd = Command::new(binary());
        cmd.args(["--election", "kubernetes", "--identity", &self.identity])
            .args([
                "--lease-name",
                &self.lease_name,
                "--lease-namespace",
                "default",
            ])
            .args(match &self.bucket_config {
                Some(secret) => ["--bucket-config".as_ref(), secret.as_os_str()],
                None => ["--bucket-dir".as_ref(), self.bucket_dir.as_os_str()],
            })
            .arg("--etl-dir")
            .arg(etl_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--poll-interval", self.poll_interval, "--backfill", "1d"])
            .args(["--etl-interval", self.etl_interval])
            .args(["--lease-duration", &secs(self.timings.lease)])
            .args(["--renew-deadline", &secs(self.timings.renew)])
            .args(["--retry-period", &secs(self.timings.retry)])
            .args(&self.extra_args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null());
        let file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        cmd.stdout(file.try_clone().expect("log file")).stderr(file);
        cmd
    }
}

/// One replica process.
pub struct Replica {
    pub spec: ReplicaSpec,
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Replica {
    /// Starts a replica and waits until it serves HTTP (a port taken meanwhile by another
    /// process is retried with a new one).
    pub async fn start(spec: ReplicaSpec) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = Self {
            spec,
            port: 0,
            child: None,
            dir,
            http: http_client(),
        };
        r.launch().await;
        r
    }

    async fn launch(&mut self) {
        for _ in 0..5 {
            self.port = free_port();
            let log = self.log_path();
            let child = self
                .spec
                .command(&self.dir.path().join("etl"), self.port, &log)
                .spawn()
                .expect("start cost-model");
            self.child = Some(child);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = self.try_exit() {
                    let log = tail(&self.log_path(), 20);
                    if log.contains("cannot listen") {
                        break; // the port went to someone else: try another
                    }
                    panic!("{} exited at start ({status}):\n{log}", self.spec.identity);
                }
                if self
                    .get("/healthz")
                    .await
                    .is_some_and(|(code, _)| code == 200)
                {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} did not serve HTTP within 30 s",
                    self.spec.identity
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("{}: no free port after 5 tries", self.spec.identity);
    }

    /// Starts the same replica again (same identity, ETL folder and log) after it stopped.
    pub async fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.launch().await;
    }

    pub fn identity(&self) -> &str {
        &self.spec.identity
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Its `--etl-dir` (the local store), kept across restarts.
    pub fn etl_dir(&self) -> PathBuf {
        self.dir.path().join("etl")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("replica.log")
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path(), lines)
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: &str) {
        signal(self.pid(), sig);
    }

    /// `kill -9`, and reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The exit status if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.try_exit() {
                self.child = None;
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}",
                self.identity()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn get(&self, path: &str) -> Option<(u16, Option<Value>)> {
        get(&self.http, &self.url(path)).await
    }

    /// `/model/ha/status`, `None` if it does not answer within a second.
    pub async fn status(&self) -> Option<Status> {
        match self.get("/model/ha/status").await {
            Some((200, Some(v))) => Some(Status(v)),
            _ => None,
        }
    }

    /// `/model/allocation?window=1d&aggregate=namespace`.
    pub async fn query(&self) -> QueryResult {
        query(&self.http, &self.url(QUERY)).await
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- {} (port {}) log tail ----\n{}\n----",
                self.spec.identity,
                self.port,
                self.log_tail(40)
            );
        }
    }
}

/// The query every replica is asked throughout.
pub const QUERY: &str = "/model/allocation?window=1d&aggregate=namespace";

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .pool_max_idle_per_host(0)
        .build()
        .expect("HTTP client")
}

async fn get(http: &reqwest::Client, url: &str) -> Option<(u16, Option<Value>)> {
    let resp = http.get(url).send().await.ok()?;
    let code = resp.status().as_u16();
    Some((code, resp.json::<Value>().await.ok()))
}

/// What an allocation query answered.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryResult {
    /// 200, with the sum of `totalCost` over the first set.
    Ok { total: f64 },
    /// 503: no snapshot loaded yet.
    NotReady,
    /// Anything else (another status, no answer).
    Failed(String),
}

async fn query(http: &reqwest::Client, url: &str) -> QueryResult {
    match get(http, url).await {
        Some((200, Some(v))) => {
            let total = v["data"][0]
                .as_object()
                .map(|set| set.values().filter_map(|a| a["totalCost"].as_f64()).sum())
                .unwrap_or(0.0);
            QueryResult::Ok { total }
        }
        Some((503, _)) => QueryResult::NotReady,
        Some((code, body)) => QueryResult::Failed(format!("HTTP {code}: {body:?}")),
        None => QueryResult::Failed("no answer".into()),
    }
}

/// `/model/ha/status` JSON with accessors.
#[derive(Clone, Debug)]
pub struct Status(pub Value);

impl Status {
    pub fn role(&self) -> &str {
        self.0["role"].as_str().unwrap_or("")
    }
    pub fn writes_enabled(&self) -> bool {
        self.0["writesEnabled"].as_bool().unwrap_or(false)
    }
    pub fn leading(&self) -> bool {
        self.role() == "leader" && self.writes_enabled()
    }
    pub fn leader(&self) -> Option<&str> {
        self.0["leader"].as_str()
    }
    pub fn term(&self) -> Option<u64> {
        self.0["term"].as_u64()
    }
    pub fn generation(&self) -> u64 {
        self.0["snapshotGeneration"].as_u64().unwrap_or(0)
    }
    pub fn last_write(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.time("lastWrite")
    }
    pub fn last_poll(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.time("lastPoll")
    }
    pub fn election_error(&self) -> Option<&str> {
        self.0["electionError"].as_str()
    }
    pub fn lease_renew_time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0["lease"]["renewTime"].as_str()?.parse().ok()
    }
    fn time(&self, field: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0[field].as_str()?.parse().ok()
    }
}

/// Polls `check` every 50 ms until it gives a value; panics after `within`.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every replica's status, in order (`None` where one does not answer).
pub async fn statuses(replicas: &[&Replica]) -> Vec<Option<Status>> {
    futures::future::join_all(replicas.iter().map(|r| r.status())).await
}

/// Waits until exactly one replica leads with writes enabled and every other one that answers
/// follows it; returns the leader's index and status.
pub async fn settled_leader(replicas: &[&Replica], within: Duration) -> (usize, Status) {
    wait_for(
        "exactly one replica leads and the others follow it",
        within,
        || async {
            let all = statuses(replicas).await;
            let leaders: Vec<usize> = (0..all.len())
                .filter(|&i| all[i].as_ref().is_some_and(Status::leading))
                .collect();
            let [l] = leaders[..] else { return None };
            let leader = replicas[l].identity();
            let others_follow = all
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != l)
                .all(|(_, s)| {
                    s.as_ref()
                        .is_some_and(|s| s.role() == "follower" && s.leader() == Some(leader))
                });
            others_follow.then(|| (l, all[l].clone().expect("answered")))
        },
    )
    .await
}

/// One round's answer from one replica.
#[derive(Clone, Debug)]
pub struct Sample {
    pub replica: usize,
    /// When the requests were sent and when both had answered.
    pub sent: Instant,
    pub answered: Instant,
    pub status: Option<Status>,
    pub query: QueryResult,
}

/// Asks every replica for its status and the allocation query every 100 ms, in the background:
/// one task per replica, so a paused one does not hold up the others.
pub struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// How long a sampled request may take: generous, so a loaded machine is not mistaken for a
/// replica that stopped answering.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(5);

impl Sampler {
    /// Starts sampling the replicas (index = position).
    pub fn start(replicas: &[&Replica]) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let http = reqwest::Client::builder()
            .timeout(SAMPLE_TIMEOUT)
            .build()
            .expect("HTTP client");
        let tasks = replicas
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (samples, stop, http) = (samples.clone(), stop.clone(), http.clone());
                let base = format!("http://127.0.0.1:{}", r.port);
                tokio::spawn(async move {
                    let (status_url, query_url) =
                        (format!("{base}/model/ha/status"), format!("{base}{QUERY}"));
                    let mut tick = tokio::time::interval(Duration::from_millis(100));
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    while !stop.is_cancelled() {
                        tick.tick().await;
                        let sent = Instant::now();
                        let (status, query) =
                            tokio::join!(get(&http, &status_url), query(&http, &query_url));
                        let status = match status {
                            Some((200, Some(v))) => Some(Status(v)),
                            _ => None,
                        };
                        let sample = Sample {
                            replica: i,
                            sent,
                            answered: Instant::now(),
                            status,
                            query,
                        };
                        samples
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(sample);
                    }
                })
            })
            .collect();
        Self {
            samples,
            stop,
            tasks,
        }
    }

    /// Stops and returns every sample.
    pub async fn finish(self) -> Vec<Sample> {
        self.stop.cancel();
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Asserts no two replicas reported `writesEnabled` at the same time: no replica's
/// `writesEnabled: true` answer, somewhere in [sent, answered], overlaps another's. `ignore`
/// excludes samples (e.g. of a paused process).
pub fn assert_single_writer(samples: &[Sample], ignore: impl Fn(&Sample) -> bool) {
    let writers: Vec<&Sample> = samples
        .iter()
        .filter(|s| !ignore(s) && s.status.as_ref().is_some_and(Status::writes_enabled))
        .collect();
    for a in &writers {
        for b in &writers {
            if a.replica < b.replica && a.sent <= b.answered && b.sent <= a.answered {
                panic!(
                    "two replicas reported writesEnabled at once: replica {} ({:?}) and replica {} ({:?})",
                    a.replica, a.status, b.replica, b.status
                );
            }
        }
    }
}

/// Asserts every replica answered the query with 200 from its first 200 on (503 only before),
/// except for samples `ignore` excludes (a killed or paused process). Returns how many 200s.
pub fn assert_queries_served(samples: &[Sample], ignore: impl Fn(&Sample) -> bool) -> usize {
    let mut loaded = HashSet::new();
    let mut ok = 0;
    for s in samples.iter().filter(|s| !ignore(s)) {
        match &s.query {
            QueryResult::Ok { .. } => {
                loaded.insert(s.replica);
                ok += 1;
            }
            QueryResult::NotReady if !loaded.contains(&s.replica) => {}
            other => panic!("replica {} answered the query with {other:?}", s.replica),
        }
    }
    ok
}

/// A manifest in the bucket.
#[derive(Clone, Debug)]
pub struct ManifestInfo {
    pub generation: u64,
    pub term: u64,
    pub writer: String,
}

/// Every `etl/v1/manifests/*.json` in a FILESYSTEM bucket, by generation.
pub fn manifests(bucket: &Path) -> Vec<ManifestInfo> {
    let dir = bucket.join("etl/v1/manifests");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        out.push(ManifestInfo {
            generation: v["generation"].as_u64().expect("manifest generation"),
            term: v["term"].as_u64().expect("manifest term"),
            writer: v["writer"].as_str().expect("manifest writer").to_string(),
        });
    }
    out.sort_by_key(|m| m.generation);
    out
}

/// The admin identity's HTTPS client (the kubeconfig's token, the control plane's CA) and the
/// URL of a Lease in `default`.
fn admin(env: &Testenv, name: &str) -> (reqwest::Client, String, String) {
    let text = std::fs::read_to_string(&env.admin).expect("admin kubeconfig");
    let kc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("kubeconfig YAML");
    let server = kc["clusters"][0]["cluster"]["server"]
        .as_str()
        .expect("server");
    let token = kc["users"][0]["user"]["token"].as_str().expect("token");
    let ca = std::fs::read(env.dir.join("pki/ca.crt")).expect("pki/ca.crt");
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA"))
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client");
    let url = format!("{server}/apis/coordination.k8s.io/v1/namespaces/default/leases/{name}");
    (http, url, token.to_string())
}

/// Reads a Lease with the admin identity. `None` if it does not exist.
pub async fn read_lease(env: &Testenv, name: &str) -> Option<Value> {
    let (http, url, token) = admin(env, name);
    let resp = http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("GET lease");
    if resp.status().as_u16() == 404 {
        return None;
    }
    assert!(resp.status().is_success(), "GET lease: {}", resp.status());
    Some(resp.json().await.expect("lease JSON"))
}

/// Deletes a Lease with the admin identity (as an operator or a namespace clean-up would).
pub async fn delete_lease(env: &Testenv, name: &str) {
    let (http, url, token) = admin(env, name);
    let resp = http
        .delete(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("DELETE lease");
    assert!(
        resp.status().is_success(),
        "DELETE lease: {}",
        resp.status()
    );
}
