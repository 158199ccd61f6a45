//! Query latency under load, from a separate load process: `oha` (a Rust HTTP load generator)
//! runs against the real `cost-model` binary, first a follower while it loads new generations,
//! then a standalone leader while it builds and publishes them. Prints, nothing asserted:
//!
//! - for each target × aggregate × connection count, from oha's JSON report: answers per second
//!   (2xx only), p50 / p99 of the 2xx answers and the slowest answer, the 2xx count and the
//!   failures (any other status, or a transport error), and the status codes seen;
//! - how many generations the process under test took in during the run (the follower:
//!   `costmodel_backup_polls_total{result="loaded"}`; the leader: the generations it published,
//!   from `costmodel_snapshot_generation`);
//! - its RSS after the run and its peak RSS during the run (`VmRSS`, `VmHWM` of
//!   `/proc/<pid>/status`; the peak is reset through `/proc/<pid>/clear_refs` before each run,
//!   so it is that run's), its CPU time per 2xx answer, and the machine's load average before
//!   and after the run (`/proc/loadavg`);
//! - a table of all runs at the end.
//!
//! The set-up:
//! - The data set is the one `benches/query_latency.rs` fills and caches:
//!   `$BENCH_DATA_DIR/<pods>x<days>/` (default `target/bench-data/10000x30`). This bench never
//!   fills or changes it: it copies the data set's bucket into a run folder under
//!   `CARGO_TARGET_TMPDIR`, so another bench on the cached data set is not disturbed. Its
//!   `key.json` must name the same pods, days and seed, and this binary unless
//!   `BENCH_ANY_BINARY=1`.
//! - The follower: `--election follower`, an empty `--etl-dir` (a new pod), `--poll-interval 2s`.
//! - The leader: `--election standalone` on the same (copied) bucket, building the demo cluster
//!   the data set was made from, `--etl-interval 5s` (`LOAD_ETL_INTERVAL`): it rebuilds the
//!   current hour and day and publishes each as a new generation, as `query_latency`'s
//!   concurrent phase does. While the follower is measured the leader runs under `nice -n 10`
//!   (in production it has a node of its own); the follower phase starts once the follower has
//!   loaded the leader's first generation. Then the follower is stopped and the leader is
//!   restarted at normal priority on its (now warm) local store, and measured itself once it
//!   is caught up and has published again.
//! - Both have their response limits raised (`--max-response-bytes 8GiB --query-timeout 5m`),
//!   as in `query_latency`, so a 30-day answer by pod (about 500 MB at 10,000 pods) is measured
//!   rather than refused; the query lanes keep their defaults (4 heavy queries admitted at once,
//!   more are refused with 503, which shows as failures).
//! - Each run: `oha --no-tui --output-format json --disable-compression --stats-success-breakdown
//!   -w -z <secs>s -c <connections> <url>`; `-w` waits for the answers in flight at the end, so
//!   none is cut off and counted as an error. Bodies are asked uncompressed, as `query_latency`
//!   measures. Before the first run of each aggregate on a target, `LOAD_WARMUP` (2) untimed
//!   queries (the first query of a shape after a load scans the rows).
//! - Query: `/model/allocation?window=<LOAD_WINDOW>&aggregate=<a>&accumulate=true`.
//!
//! Everything shares the machine: oha, the leader and the follower (and whatever else runs on
//! it). The load average printed with each run says how busy it was.
//!
//! `scripts/loadbench` installs a pinned oha into the user's cache and runs this bench. By hand:
//! `OHA=/path/to/oha cargo bench --bench query_load`. Knobs: `LOAD_SECS` (30) per run,
//! `LOAD_CONNECTIONS` (`2,8`), `LOAD_AGGREGATES` (`namespace,controller,pod`), `LOAD_TARGETS`
//! (`follower,leader`), `LOAD_WINDOW` (`30d`), `LOAD_WARMUP` (2), `LOAD_ETL_INTERVAL` (`5s`),
//! `BENCH_PODS` (10000), `BENCH_DAYS` (30), `BENCH_SEED` (20240601), `BENCH_DATA_DIR`,
//! `BENCH_ANY_BINARY`, `OHA` (the oha binary; default
//! `${XDG_CACHE_HOME:-$HOME/.cache}/cost-model/tools/oha/bin/oha`, then `oha` on `PATH`).
//! With the defaults, 12 runs of 30 s: about 10 minutes end to end.
#![expect(
    clippy::disallowed_methods,
    reason = "bench knobs come from the environment"
)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::*;
use tokio::process::Command;

/// The hourly retention the data set was filled with (`query_latency`'s, Kubecost's).
const HOURLY_RETENTION_H: u32 = 49;
/// The follower's poll interval, as in `query_latency`.
const POLL: &str = "2s";
/// How long a process may take to become ready, or a leader to catch up.
const READY_WITHIN: Duration = Duration::from_secs(900);

// ---------------------------------------------------------------------------------------------
// Knobs.

/// Which process a run loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Follower,
    Leader,
}

impl std::str::FromStr for Target {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "follower" => Ok(Target::Follower),
            "leader" => Ok(Target::Leader),
            _ => Err(()),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::Follower => "follower",
            Target::Leader => "leader",
        })
    }
}

/// An aggregate the API takes: lower-case letters (with `:` and `,` between properties and
/// labels it could take more, but the bench's list is comma-separated).
#[derive(Clone, Debug)]
struct Aggregate(String);

impl std::str::FromStr for Aggregate {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase()) {
            Ok(Aggregate(s.to_string()))
        } else {
            Err(())
        }
    }
}

/// A window the API takes in its short form (`30d`, `48h`).
#[derive(Clone, Debug)]
struct ShortWindow(String);

impl std::str::FromStr for ShortWindow {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let count = s.strip_suffix('d').or_else(|| s.strip_suffix('h'));
        if count.is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n > 0)) {
            Ok(ShortWindow(s.to_string()))
        } else {
            Err(())
        }
    }
}

/// A duration in the binary's human form, checked here so a typo fails before anything starts.
#[derive(Clone, Debug)]
struct HumanDuration(String);

impl std::str::FromStr for HumanDuration {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        humantime::parse_duration(s)
            .ok()
            .filter(|d| !d.is_zero())
            .map(|_| HumanDuration(s.to_string()))
            .ok_or(())
    }
}

struct Settings {
    secs: u64,
    connections: Vec<usize>,
    aggregates: Vec<Aggregate>,
    targets: Vec<Target>,
    window: ShortWindow,
    warmup: usize,
    etl_interval: HumanDuration,
    pods: usize,
    days: u32,
    seed: u64,
    oha: PathBuf,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let secs = knob("LOAD_SECS", 30u64)?;
        if secs == 0 {
            bail!("LOAD_SECS must be at least 1");
        }
        let connections: Vec<usize> = list_knob("LOAD_CONNECTIONS", "2,8")?;
        if connections.contains(&0) {
            bail!("LOAD_CONNECTIONS: a run needs at least one connection");
        }
        let days = knob("BENCH_DAYS", 30u32)?;
        if days == 0 {
            bail!("BENCH_DAYS must be at least 1");
        }
        Ok(Settings {
            secs,
            connections,
            aggregates: list_knob("LOAD_AGGREGATES", "namespace,controller,pod")?,
            targets: list_knob("LOAD_TARGETS", "follower,leader")?,
            window: knob("LOAD_WINDOW", ShortWindow("30d".into()))?,
            warmup: knob("LOAD_WARMUP", 2usize)?,
            etl_interval: knob("LOAD_ETL_INTERVAL", HumanDuration("5s".into()))?,
            pods: knob("BENCH_PODS", 10_000usize)?,
            days,
            seed: knob("BENCH_SEED", 20_240_601u64)?,
            oha: find_oha()?,
        })
    }

    fn path(&self, aggregate: &Aggregate) -> String {
        format!(
            "/model/allocation?window={}&aggregate={}&accumulate=true",
            self.window.0, aggregate.0
        )
    }
}

/// `OHA`, else the copy `scripts/loadbench` installs in the user's cache, else `oha` on `PATH`.
fn find_oha() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("OHA") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("OHA={}: no such file", path.display());
        }
        return Ok(path);
    }
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| Path::new(&h).join(".cache")));
    if let Ok(cache) = cache {
        let installed = cache.join("cost-model/tools/oha/bin/oha");
        if installed.is_file() {
            return Ok(installed);
        }
    }
    let on_path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&on_path)
        .map(|dir| dir.join("oha"))
        .find(|p| p.is_file())
        .context("no oha found (OHA, the user's cache, PATH): `scripts/loadbench` installs it")
}

// ---------------------------------------------------------------------------------------------
// A replica process.

fn common_args(bucket: &Path, etl: &Path, identity: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "--identity",
        identity,
        "--max-response-bytes",
        &(8u64 << 30).to_string(),
        "--query-timeout",
        "5m",
        "--bucket-dir",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.push(bucket.display().to_string());
    args.push("--etl-dir".into());
    args.push(etl.display().to_string());
    args
}

fn follower_args(run: &Path) -> Vec<String> {
    let mut args = common_args(
        &run.join("bucket"),
        &run.join("follower-etl"),
        "load-follower",
    );
    args.extend(["--election", "follower", "--poll-interval", POLL].map(String::from));
    args
}

fn leader_args(run: &Path, s: &Settings) -> Vec<String> {
    let mut args = common_args(&run.join("bucket"), &run.join("leader-etl"), "load-leader");
    args.extend([
        "--election".to_string(),
        "standalone".into(),
        "--demo-pods".into(),
        s.pods.to_string(),
        "--demo-seed".into(),
        s.seed.to_string(),
        "--backfill".into(),
        format!("{}d", s.days),
        "--daily-retention".into(),
        s.days.to_string(),
        "--hourly-retention".into(),
        HOURLY_RETENTION_H.to_string(),
        "--etl-interval".into(),
        s.etl_interval.0.clone(),
    ]);
    args
}

// ---------------------------------------------------------------------------------------------
// Talking to a replica.

/// `/readyz` is 200 (a follower: a snapshot is loaded). `/readyz` has no JSON body, so this
/// polls the status code alone.
async fn wait_ready(r: &mut Proc, http: &reqwest::Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if let Ok(resp) = http.get(r.url("/readyz")).send().await
            && resp.status().is_success()
        {
            return Ok(());
        }
        r.check_alive()?;
        if Instant::now() > deadline {
            bail!(
                "not ready within {READY_WITHIN:?}; log {}:\n{}",
                r.log.display(),
                r.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const LOADED: &str = "costmodel_backup_polls_total{result=\"loaded\"}";
const GENERATION: &str = "costmodel_snapshot_generation";

/// Whether a leader's `/model/etl/status` shows its backfill done, every set backed up and its
/// last build a success.
fn caught_up(status: &serde_json::Value) -> bool {
    let data = &status["data"];
    let source = &data["source"];
    source["backfillPending"].as_u64() == Some(0)
        && source["lastSuccess"].is_string()
        && source["lastError"].is_null()
        && data["pendingSets"].as_u64() == Some(0)
}

/// Queries `path` once, reading the whole body; fails on a status other than 2xx.
async fn query_once(http: &reqwest::Client, url: &str) -> anyhow::Result<u64> {
    let mut resp = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !resp.status().is_success() {
        let code = resp.status();
        let body = resp.text().await.unwrap_or_default();
        bail!(
            "GET {url}: {code}: {}",
            body.chars().take(300).collect::<String>()
        );
    }
    let mut bytes = 0;
    while let Some(chunk) = resp.chunk().await? {
        bytes += chunk.len() as u64;
    }
    Ok(bytes)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn ms(secs: Option<f64>) -> String {
    match secs {
        Some(s) if s >= 1.0 => format!("{s:.2} s"),
        Some(s) => format!("{:.1} ms", s * 1000.0),
        None => "-".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// One oha run.

/// What one run measured.
struct RunResult {
    target: Target,
    aggregate: String,
    connections: usize,
    /// Wall time of the run, as oha reports it (past `LOAD_SECS` by the answers waited for).
    total: f64,
    ok: u64,
    failed: u64,
    /// Status codes and transport errors seen, with their counts.
    outcomes: BTreeMap<String, u64>,
    p50: Option<f64>,
    p99: Option<f64>,
    slowest: Option<f64>,
    generations: f64,
    rss: u64,
    peak: u64,
    cpu: Duration,
    load_before: String,
    load_after: String,
}

impl RunResult {
    fn ok_per_sec(&self) -> f64 {
        self.ok as f64 / self.total.max(1e-9)
    }

    fn cpu_per_ok(&self) -> Option<Duration> {
        (self.ok > 0).then(|| self.cpu / self.ok as u32)
    }
}

/// oha's JSON report, read down to what the bench prints.
fn read_report(report: &serde_json::Value) -> anyhow::Result<OhaReport> {
    let f = |v: &serde_json::Value| v.as_f64();
    let total = f(&report["summary"]["total"]).context("no summary.total in oha's report")?;
    let mut ok = 0;
    let mut failed = 0;
    let mut outcomes = BTreeMap::new();
    if let Some(codes) = report["statusCodeDistribution"].as_object() {
        for (code, n) in codes {
            let n = n.as_u64().unwrap_or(0);
            if code.starts_with('2') {
                ok += n;
            } else {
                failed += n;
            }
            *outcomes.entry(code.clone()).or_default() += n;
        }
    }
    if let Some(errors) = report["errorDistribution"].as_object() {
        for (error, n) in errors {
            let n = n.as_u64().unwrap_or(0);
            failed += n;
            *outcomes.entry(error.clone()).or_default() += n;
        }
    }
    // With --stats-success-breakdown, the percentiles of the successful answers only (a 503 of
    // a full lane comes back at once and would pull them down).
    let successful = &report["latencyPercentilesSuccessful"];
    Ok(OhaReport {
        total,
        ok,
        failed,
        outcomes,
        p50: f(&successful["p50"]),
        p99: f(&successful["p99"]),
        slowest: f(&report["summary"]["slowest"]),
    })
}

struct OhaReport {
    total: f64,
    ok: u64,
    failed: u64,
    outcomes: BTreeMap<String, u64>,
    p50: Option<f64>,
    p99: Option<f64>,
    slowest: Option<f64>,
}

async fn oha(s: &Settings, url: &str, connections: usize) -> anyhow::Result<OhaReport> {
    let out = Command::new(&s.oha)
        .args([
            "--no-tui",
            "--output-format",
            "json",
            "--disable-compression",
            "--stats-success-breakdown",
            "-w",
            "-z",
            &format!("{}s", s.secs),
            "-c",
            &connections.to_string(),
            url,
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", s.oha.display()))?;
    if !out.status.success() {
        bail!(
            "{} exited with {}: {}",
            s.oha.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "oha's output is not JSON: {}",
            String::from_utf8_lossy(&out.stdout)
                .chars()
                .take(300)
                .collect::<String>()
        )
    })?;
    read_report(&report)
}

/// One oha run against `r`, with what the replica did during it.
async fn run(
    s: &Settings,
    http: &reqwest::Client,
    r: &mut Proc,
    target: Target,
    aggregate: &Aggregate,
    connections: usize,
) -> anyhow::Result<RunResult> {
    // The follower counts the generations it loaded; the leader's own generation moves with
    // each one it publishes.
    let counter = match target {
        Target::Follower => LOADED,
        Target::Leader => GENERATION,
    };
    let before = metric(http, r, counter).await?;
    let load_before = load_average();
    r.reset_peak()?;
    let cpu = r.cpu()?;
    let report = oha(s, &r.url(&s.path(aggregate)), connections).await?;
    let cpu = r.cpu()? - cpu;
    let (rss, peak) = r.rss()?;
    let load_after = load_average();
    r.check_alive()?;
    let generations = metric(http, r, counter).await? - before;
    Ok(RunResult {
        target,
        aggregate: aggregate.0.clone(),
        connections,
        total: report.total,
        ok: report.ok,
        failed: report.failed,
        outcomes: report.outcomes,
        p50: report.p50,
        p99: report.p99,
        slowest: report.slowest,
        generations,
        rss,
        peak,
        cpu,
        load_before,
        load_after,
    })
}

fn print_run(r: &RunResult) {
    let outcomes: Vec<String> = r
        .outcomes
        .iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect();
    println!(
        "  {} {} c={}: {:.1} answers/s, p50 {} p99 {} max {}; {} ok, {} failed ({}); {:.0} generations; RSS {}, peak {}; CPU {:.2} s ({} per answer); {:.1} s; load {} → {}",
        r.target,
        r.aggregate,
        r.connections,
        r.ok_per_sec(),
        ms(r.p50),
        ms(r.p99),
        ms(r.slowest),
        r.ok,
        r.failed,
        outcomes.join(", "),
        r.generations,
        mib(r.rss),
        mib(r.peak),
        r.cpu.as_secs_f64(),
        r.cpu_per_ok().map_or("-".into(), |d| format!(
            "{:.1} ms",
            d.as_secs_f64() * 1000.0
        )),
        r.total,
        r.load_before,
        r.load_after
    );
}

fn human_bytes(b: u64) -> String {
    if b >= 1_000_000 {
        format!("{:.0} MB", b as f64 / 1e6)
    } else {
        format!("{:.0} kB", b as f64 / 1e3)
    }
}

fn print_table(s: &Settings, results: &[RunResult]) {
    println!();
    println!(
        "| target | aggregate | conns | answers/s | p50 | p99 | max | ok | failed | generations | RSS after | peak RSS | CPU per answer | load before → after |"
    );
    println!(
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for r in results {
        println!(
            "| {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} → {} |",
            r.target,
            r.aggregate,
            r.connections,
            r.ok_per_sec(),
            ms(r.p50),
            ms(r.p99),
            ms(r.slowest),
            r.ok,
            r.failed,
            r.generations,
            mib(r.rss),
            mib(r.peak),
            r.cpu_per_ok().map_or("-".into(), |d| format!(
                "{:.1} ms",
                d.as_secs_f64() * 1000.0
            )),
            r.load_before,
            r.load_after
        );
    }
    println!(
        "({} s per run, `window={}&accumulate=true`; p50/p99 of the 2xx answers, max of all; generations: loaded by the follower, published by the leader, during the run; peak RSS: VmHWM during the run)",
        s.secs, s.window.0
    );
}

// ---------------------------------------------------------------------------------------------
// The data set.

/// The cached data set's folder, checked against its `key.json`.
fn dataset(s: &Settings) -> anyhow::Result<PathBuf> {
    let root = std::env::var("BENCH_DATA_DIR").map_or_else(
        |_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data"),
        PathBuf::from,
    );
    let dir = root.join(format!("{}x{}", s.pods, s.days));
    let fill = format!(
        "fill it with `BENCH_PODS={} BENCH_DAYS={} cargo bench --bench query_latency` (or point BENCH_DATA_DIR at a folder holding one)",
        s.pods, s.days
    );
    let key_path = dir.join("key.json");
    let key: serde_json::Value = match std::fs::read(&key_path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not JSON", key_path.display()))?,
        Err(e) => bail!("no data set at {}: {e}; {fill}", dir.display()),
    };
    let k = &key["key"];
    if k["pods"].as_u64() != Some(s.pods as u64)
        || k["days"].as_u64() != Some(u64::from(s.days))
        || k["seed"].as_u64() != Some(s.seed)
        || k["hourlyRetentionHours"].as_u64() != Some(u64::from(HOURLY_RETENTION_H))
    {
        bail!(
            "{} was made with other settings ({k}); {fill}",
            key_path.display()
        );
    }
    let any_binary = knob("BENCH_ANY_BINARY", 0u8)? == 1;
    let sha = sha256_file(BIN)?;
    if !any_binary && k["binarySha256"].as_str() != Some(sha.as_str()) {
        bail!(
            "{} was filled by another binary; set BENCH_ANY_BINARY=1 to use it anyway, or {fill}",
            dir.display()
        );
    }
    println!(
        "data set {}: filled {} by binary {}…",
        dir.display(),
        key["filledAt"].as_str().unwrap_or("?"),
        k["binarySha256"]
            .as_str()
            .map_or("?", |h| &h[..12.min(h.len())])
    );
    Ok(dir)
}

/// Copies a folder tree (files and folders only: a bucket folder holds nothing else).
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<u64> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let mut bytes = 0;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if kind.is_dir() {
            bytes += copy_tree(&entry.path(), &dest)?;
        } else if kind.is_file() {
            bytes += std::fs::copy(entry.path(), &dest)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        } else {
            bail!("{}: neither a file nor a folder", entry.path().display());
        }
    }
    Ok(bytes)
}

// ---------------------------------------------------------------------------------------------
// The phases.

/// Warm-up queries, then one run per connection count, for each aggregate.
async fn load_target(
    s: &Settings,
    http: &reqwest::Client,
    r: &mut Proc,
    target: Target,
    results: &mut Vec<RunResult>,
) -> anyhow::Result<()> {
    let (rss, peak) = r.rss()?;
    println!(
        "{target}: pid {}, RSS {}, peak since start {}, load {}",
        r.pid,
        mib(rss),
        mib(peak),
        load_average()
    );
    for aggregate in &s.aggregates {
        let url = r.url(&s.path(aggregate));
        let t = Instant::now();
        let mut body = 0;
        for _ in 0..s.warmup {
            body = query_once(http, &url).await?;
        }
        println!(
            "  {target} {}: {} warm-up queries in {:.1} s, body {}",
            aggregate.0,
            s.warmup,
            t.elapsed().as_secs_f64(),
            human_bytes(body)
        );
        for &c in &s.connections {
            let result = run(s, http, r, target, aggregate, c).await?;
            print_run(&result);
            results.push(result);
        }
    }
    Ok(())
}

/// The follower, with a niced leader publishing generations on the same bucket.
async fn follower_phase(
    s: &Settings,
    http: &reqwest::Client,
    run_dir: &Path,
    results: &mut Vec<RunResult>,
) -> anyhow::Result<()> {
    let t = Instant::now();
    let mut follower = Proc::spawn(&follower_args(run_dir), run_dir.join("follower.log"), false)?;
    wait_ready(&mut follower, http).await?;
    println!(
        "follower ready {:.1} s after start ({:.1} s CPU)",
        t.elapsed().as_secs_f64(),
        follower.cpu()?.as_secs_f64()
    );
    let loaded = metric(http, &follower, LOADED).await?;
    let t = Instant::now();
    let mut leader = Proc::spawn(
        &leader_args(run_dir, s),
        run_dir.join("leader-niced.log"),
        true,
    )?;
    // The phase starts once the follower has loaded something the leader published.
    let deadline = Instant::now() + READY_WITHIN;
    while metric(http, &follower, LOADED).await? <= loaded {
        leader.check_alive()?;
        follower.check_alive()?;
        if Instant::now() > deadline {
            bail!(
                "the follower loaded no generation of the leader within {READY_WITHIN:?}; leader log:\n{}",
                leader.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "leader (nice 10) started; the follower loaded its first generation {:.1} s later",
        t.elapsed().as_secs_f64()
    );
    load_target(s, http, &mut follower, Target::Follower, results).await?;
    follower.stop().await?;
    leader.stop().await
}

/// The leader alone, at normal priority, building and publishing as it serves.
async fn leader_phase(
    s: &Settings,
    http: &reqwest::Client,
    run_dir: &Path,
    results: &mut Vec<RunResult>,
) -> anyhow::Result<()> {
    let t = Instant::now();
    let mut leader = Proc::spawn(&leader_args(run_dir, s), run_dir.join("leader.log"), false)?;
    wait_ready(&mut leader, http).await?;
    let ready = t.elapsed();
    wait_json(
        &mut leader,
        http,
        "/model/etl/status",
        Duration::from_millis(200),
        READY_WITHIN,
        |code, status| code == 200 && caught_up(status),
    )
    .await?;
    // And one generation of its own published since, so the runs start with the ETL loop in
    // its steady state.
    let generation = metric(http, &leader, GENERATION).await?;
    let deadline = Instant::now() + READY_WITHIN;
    while metric(http, &leader, GENERATION).await? <= generation {
        leader.check_alive()?;
        if Instant::now() > deadline {
            bail!(
                "the leader published nothing within {READY_WITHIN:?}; log:\n{}",
                leader.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "leader ready {:.1} s after start, caught up and publishing {:.1} s after start",
        ready.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    load_target(s, http, &mut leader, Target::Leader, results).await?;
    leader.stop().await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let s = Settings::from_env()?;
    let ds = dataset(&s)?;
    let oha_version = std::process::Command::new(&s.oha)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", s.oha.display()))?;
    println!(
        "query_load: {}x{} (seed {}), {} s per run, connections {:?}, {}, window {}; {}; binary {}; load {}",
        s.pods,
        s.days,
        s.seed,
        s.secs,
        s.connections,
        s.aggregates
            .iter()
            .map(|a| a.0.as_str())
            .collect::<Vec<_>>()
            .join(","),
        s.window.0,
        String::from_utf8_lossy(&oha_version.stdout).trim(),
        &sha256_file(BIN)?[..12],
        load_average()
    );
    let run_dir = tempfile::Builder::new()
        .prefix("query-load-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .context("a run folder under CARGO_TARGET_TMPDIR")?;
    let t = Instant::now();
    let bytes = copy_tree(&ds.join("bucket"), &run_dir.path().join("bucket"))?;
    println!(
        "bucket copied to {} ({}) in {:.1} s",
        run_dir.path().display(),
        mib(bytes),
        t.elapsed().as_secs_f64()
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let mut results = Vec::new();
    // The follower first: the leader phase reuses the local store the niced leader restored.
    if s.targets.contains(&Target::Follower) {
        follower_phase(&s, &http, run_dir.path(), &mut results).await?;
    }
    if s.targets.contains(&Target::Leader) {
        leader_phase(&s, &http, run_dir.path(), &mut results).await?;
    }
    print_table(&s, &results);
    println!(
        "query_load: done in {:.0} s, load {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    Ok(())
}
