//! A follower at production scale: the real `cost-model` binary, run as a follower (`--election
//! follower`: it never leads, so it never builds ETL) over a local-folder bucket holding
//! `BENCH_PODS` demo pods × `BENCH_DAYS` days of daily sets plus 49 hourly sets (Kubecost's
//! retention: hourly 49 h, daily up to 90 d). Prints, nothing asserted:
//!
//! - the fill: the bucket is filled by the same binary run as a standalone leader
//!   (`--backfill <days>d --daily-retention <days> --hourly-retention 49`) until
//!   `/model/etl/status` shows every day and hour built and backed up, then stopped with SIGTERM.
//!   It is cached under `target/bench-data/<pods>x<days>/` with a `key.json` naming what produced
//!   it (pods, days, seed, the binary's sha256); a rerun reuses it, after topping it up with the
//!   same leader if it was filled more than `BENCH_REFRESH_SECS` (3600) ago, so the hourly sets
//!   reach the present. A changed binary refills it.
//! - start→ready: from spawning the follower (with an empty `--etl-dir`, as a new pod) to its
//!   first `/readyz` 200, which a follower answers only with a snapshot loaded, and the CPU time
//!   it spent getting there (`/proc/<pid>/stat`: the wall time stretches on a busy machine);
//! - its RSS from `/proc/<pid>/status`: steady (`VmRSS` once it stops moving after ready) and peak
//!   (`VmHWM`), and bytes per allocation row: (steady RSS − an empty follower's RSS) / the
//!   allocation rows of the sets it loaded (counted from the demo cluster itself: a container
//!   row per container, an idle row per node, a row per unmounted volume, as the costing makes
//!   them; cached in `target/bench-data/rows-<pods>-<seed>.json`);
//! - query latency, one client, sequential, after `BENCH_WARMUP` (5) untimed queries, p50/p99/max
//!   over `BENCH_QUERIES` (200) for 30-day namespace and controller totals and the 24 h and 48 h
//!   namespace sets (hourly sets), and over `BENCH_BIG_QUERIES` (5) for 30 days by pod and
//!   unaggregated (and 90 days unaggregated when the data set has them), with their body size,
//!   the follower's CPU time per query (`/proc/<pid>/stat`: steadier than latency on a shared
//!   machine) and its RSS and peak RSS after each;
//! - p50/p99/max with two concurrent clients (30-day namespace and controller totals) for
//!   `BENCH_CONCURRENT_SECS` (60) while a leader publishes a new generation every few seconds:
//!   the same binary as a standalone leader on the same bucket, `--etl-interval 5s`, under
//!   `nice -n 10`, rebuilding the current hour and day; the phase starts once the follower has
//!   loaded the leader's first generation, and reports how many generations the follower loaded
//!   during it (`costmodel_backup_polls_total{result="loaded"}`) and its generation before and
//!   after. The leader shares the machine's cores with the follower.
//!
//! With `BENCH_SWEEP=1` it runs only the memory sweep instead: for each size of
//! `BENCH_SWEEP_SIZES` (`1000x30,10000x7,10000x30,10000x90`), start→ready, RSS and bytes per row.
//!
//! `cargo bench --bench query_latency` runs `BENCH_PODS=10000 BENCH_DAYS=30,90` (a comma list of
//! day counts). Other knobs: `BENCH_SEED` (20240601), `BENCH_DATA_DIR` (`target/bench-data`),
//! `BENCH_ANY_BINARY=1` (reuse a data set another binary filled, for quick iterations).
//! The follower polls every 2 s (`--poll-interval 2s`) and has its response limit raised
//! (`--max-response-bytes 8GiB`, `--query-timeout 5m`) so the unaggregated answer is measured
//! rather than refused. The first fill of 10,000 pods × 90 days takes minutes; memory: the
//! follower and, during the concurrent phase, the leader each hold the whole data set.
#![expect(
    clippy::disallowed_methods,
    reason = "bench knobs come from the environment"
)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use common::*;
use cost_model::etl::demo::DemoCluster;
use cost_model::model::Window;

/// Kubecost's hourly retention.
const HOURLY_RETENTION_H: u32 = 49;

/// Pods × days of a data set.
#[derive(Clone, Copy, Debug)]
struct Size {
    pods: usize,
    days: u32,
}

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (p, d) = s.split_once('x').ok_or("expected <pods>x<days>")?;
        let pods = p.parse().map_err(|_| "pods: not a number")?;
        let days: u32 = d.parse().map_err(|_| "days: not a number")?;
        if days == 0 || days > 3660 {
            return Err("days must be 1 to 3660".into());
        }
        Ok(Size { pods, days })
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.pods, self.days)
    }
}

struct Settings {
    seed: u64,
    root: PathBuf,
    refresh: Duration,
    binary_sha: String,
    /// Reuse a data set another binary filled.
    any_binary: bool,
}

// ---------------------------------------------------------------------------------------------
// The data set: filled by a standalone leader, cached.

/// The coverage of one kind and resolution in `/model/etl/status`.
#[derive(Debug, Default, Clone)]
struct Cover {
    sets: u64,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    gaps: usize,
}

fn coverage(status: &serde_json::Value, kind: &str, res: &str) -> Cover {
    let Some(list) = status["data"]["coverage"].as_array() else {
        return Cover::default();
    };
    let time = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse().ok());
    list.iter()
        .find(|c| {
            c["kind"]
                .as_str()
                .is_some_and(|k| k.eq_ignore_ascii_case(kind))
                && c["resolution"].as_str() == Some(res)
        })
        .map(|c| Cover {
            sets: c["sets"].as_u64().unwrap_or(0),
            start: time(&c["start"]),
            end: time(&c["end"]),
            gaps: c["gaps"].as_array().map_or(0, Vec::len),
        })
        .unwrap_or_default()
}

/// Whether a leader's `/model/etl/status` shows the whole range built and backed up.
fn caught_up(status: &serde_json::Value, size: Size) -> bool {
    let d = &status["data"];
    let src = &d["source"];
    let now = Utc::now();
    let covered = ["allocations", "assets"].iter().all(|k| {
        let day = coverage(status, k, "1d");
        let hour = coverage(status, k, "1h");
        day.sets >= u64::from(size.days)
            && day.gaps == 0
            && hour.sets >= u64::from((HOURLY_RETENTION_H - 1).min(size.days * 24 - 1))
            && hour.gaps == 0
            && hour.end.is_some_and(|e| e > now - TimeDelta::hours(1))
    });
    covered
        && src["backfillPending"].as_u64() == Some(0)
        && src["lastSuccess"].is_string()
        && src["lastError"].is_null()
        && d["pendingSets"].as_u64() == Some(0)
}

/// Runs the binary as a standalone leader over the data set's bucket until everything is built
/// and backed up, then stops it.
async fn run_leader(
    client: &reqwest::Client,
    dir: &Path,
    size: Size,
    s: &Settings,
) -> anyhow::Result<()> {
    let mut leader = Proc::spawn(
        &leader_args(dir, size, s, "10m"),
        dir.join("leader.log"),
        false,
    )?;
    let mut last_print = Instant::now();
    wait_json(
        &mut leader,
        client,
        "/model/etl/status",
        Duration::from_millis(500),
        Duration::from_secs(3 * 3600),
        |code, st| {
            if last_print.elapsed() > Duration::from_secs(20) {
                last_print = Instant::now();
                let day = coverage(st, "allocations", "1d");
                let hour = coverage(st, "allocations", "1h");
                println!(
                    "  … {} daily and {} hourly allocation sets so far, {} pending backup",
                    day.sets, hour.sets, st["data"]["pendingSets"]
                );
            }
            code == 200 && caught_up(st, size)
        },
    )
    .await?;
    leader.stop().await
}

fn leader_args(dir: &Path, size: Size, s: &Settings, etl_interval: &str) -> Vec<String> {
    [
        "--election",
        "standalone",
        "--identity",
        "bench-leader",
        "--bucket-dir",
        &dir.join("bucket").display().to_string(),
        "--etl-dir",
        &dir.join("leader-etl").display().to_string(),
        "--demo-pods",
        &size.pods.to_string(),
        "--demo-seed",
        &s.seed.to_string(),
        "--backfill",
        &format!("{}d", size.days),
        "--daily-retention",
        &size.days.to_string(),
        "--hourly-retention",
        &HOURLY_RETENTION_H.to_string(),
        "--etl-interval",
        etl_interval,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

/// The cached data set of `size`, filled or topped up as needed. Returns its folder.
async fn dataset(client: &reqwest::Client, size: Size, s: &Settings) -> anyhow::Result<PathBuf> {
    let dir = s.root.join(size.to_string());
    let key = serde_json::json!({
        "pods": size.pods,
        "days": size.days,
        "seed": s.seed,
        "hourlyRetentionHours": HOURLY_RETENTION_H,
        "binarySha256": s.binary_sha,
    });
    let key_path = dir.join("key.json");
    let stored: Option<serde_json::Value> = std::fs::read(&key_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    // With `BENCH_ANY_BINARY=1` a data set another binary filled is reused (topped up by this
    // one when stale): the demo data are the same, only the stored format may differ.
    let same = |k: &serde_json::Value| {
        let mut k = k["key"].clone();
        if s.any_binary {
            k["binarySha256"] = key["binarySha256"].clone();
        }
        k == key
    };
    let filled_at = stored
        .as_ref()
        .filter(|k| same(k))
        .and_then(|k| k["filledAt"].as_str()?.parse::<DateTime<Utc>>().ok());
    let t = Instant::now();
    match filled_at {
        Some(at) if (Utc::now() - at).to_std().unwrap_or_default() < s.refresh => {
            println!("data set {size}: reusing {} (filled {at})", dir.display());
            return Ok(dir);
        }
        Some(at) => {
            println!(
                "data set {size}: topping up {} (filled {at})",
                dir.display()
            );
            run_leader(client, &dir, size, s).await?;
            println!(
                "data set {size}: topped up in {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
        None => {
            if dir.exists() {
                println!(
                    "data set {size}: {} was made by another binary or settings; filling it again",
                    dir.display()
                );
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
            }
            std::fs::create_dir_all(dir.join("bucket"))?;
            println!(
                "data set {size}: filling {} with a standalone leader",
                dir.display()
            );
            run_leader(client, &dir, size, s).await?;
            println!(
                "data set {size}: filled in {:.1} s ({} in the bucket)",
                t.elapsed().as_secs_f64(),
                mib(du(&dir.join("bucket")))
            );
        }
    }
    std::fs::write(
        &key_path,
        serde_json::to_vec_pretty(&serde_json::json!({"key": key, "filledAt": Utc::now()}))?,
    )?;
    Ok(dir)
}

/// Bytes under a folder.
fn du(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => du(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Allocation rows, counted from the demo cluster.

/// Allocation rows of every set in the follower's coverage: a row per container, an idle row
/// per node, a row per unmounted volume (what the costing makes of a window). Complete windows
/// are cached by window.
fn rows_loaded(status: &serde_json::Value, size: Size, s: &Settings) -> anyhow::Result<u64> {
    let cache_path = s.root.join(format!("rows-{}-{}.json", size.pods, s.seed));
    let mut cache: BTreeMap<String, u64> = std::fs::read(&cache_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let cluster = DemoCluster::new(s.seed, size.pods);
    let mut total = 0;
    for (res, step) in [("1d", TimeDelta::days(1)), ("1h", TimeDelta::hours(1))] {
        let c = coverage(status, "allocations", res);
        let (Some(start), Some(end)) = (c.start, c.end) else {
            continue;
        };
        let mut w = start;
        while w < end {
            let window = Window::new(w, w + step);
            let data_end = end.min(window.end);
            let complete = data_end == window.end;
            let key = format!("{} {}", w.to_rfc3339(), data_end.to_rfc3339());
            let n = match cache.get(&key) {
                Some(n) => *n,
                None => {
                    let cw = cluster.compute(window, data_end);
                    let n = (cw.containers.len()
                        + cw.nodes.len()
                        + cw.volumes
                            .iter()
                            .filter(|v| v.unmounted_hours > 1e-9)
                            .count()) as u64;
                    if complete {
                        cache.insert(key, n);
                    }
                    n
                }
            };
            total += n;
            w += step;
        }
    }
    std::fs::write(&cache_path, serde_json::to_vec(&cache)?)?;
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// The follower.

struct Follower {
    proc: Proc,
    ready_after: Duration,
    /// CPU time the follower used to get ready: unlike the wall time, not stretched by other
    /// work on a shared machine.
    ready_cpu: Duration,
    status: serde_json::Value,
}

fn follower_args(bucket: &Path, etl: &Path) -> Vec<String> {
    [
        "--election",
        "follower",
        "--identity",
        "bench-follower",
        "--bucket-dir",
        &bucket.display().to_string(),
        "--etl-dir",
        &etl.display().to_string(),
        "--poll-interval",
        "2s",
        "--max-response-bytes",
        &(8u64 << 30).to_string(),
        "--query-timeout",
        "5m",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

/// Starts a follower on the data set with an empty local store; returns once `/readyz` is 200.
async fn start_follower(
    client: &reqwest::Client,
    dataset: &Path,
    run: &Path,
) -> anyhow::Result<Follower> {
    let etl = run.join("follower-etl");
    if etl.exists() {
        std::fs::remove_dir_all(&etl)?;
    }
    let t = Instant::now();
    let mut proc = Proc::spawn(
        &follower_args(&dataset.join("bucket"), &etl),
        run.join("follower.log"),
        false,
    )?;
    wait_json(
        &mut proc,
        client,
        "/readyz",
        Duration::from_millis(20),
        Duration::from_secs(1800),
        |code, _| code == 200,
    )
    .await?;
    let ready_after = t.elapsed();
    let ready_cpu = proc.cpu()?;
    let status = wait_json(
        &mut proc,
        client,
        "/model/etl/status",
        Duration::from_millis(100),
        Duration::from_secs(60),
        |code, _| code == 200,
    )
    .await?;
    Ok(Follower {
        proc,
        ready_after,
        ready_cpu,
        status,
    })
}

/// `VmRSS` once it has moved less than 1% over two seconds (at most 30 s), and `VmHWM`.
async fn steady_rss(p: &Proc) -> anyhow::Result<(u64, u64)> {
    let t = Instant::now();
    let mut window: Vec<u64> = Vec::new();
    loop {
        let (rss, _) = p.rss()?;
        window.push(rss);
        if window.len() > 10 {
            window.remove(0);
        }
        let (lo, hi) = (
            *window.iter().min().unwrap_or(&0),
            *window.iter().max().unwrap_or(&0),
        );
        if (window.len() == 10 && hi - lo < hi / 100) || t.elapsed() > Duration::from_secs(30) {
            return p.rss().map(|(_, peak)| (rss, peak));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// RSS of a follower with nothing to serve: an empty bucket, after its first poll.
async fn empty_follower_rss(client: &reqwest::Client, run: &Path) -> anyhow::Result<u64> {
    let bucket = run.join("empty-bucket");
    std::fs::create_dir_all(&bucket)?;
    let mut p = Proc::spawn(
        &follower_args(&bucket, &run.join("empty-etl")),
        run.join("empty-follower.log"),
        false,
    )?;
    wait_json(
        &mut p,
        client,
        "/model/ha/status",
        Duration::from_millis(50),
        Duration::from_secs(60),
        |code, st| code == 200 && st["lastPoll"].is_string(),
    )
    .await?;
    let (rss, _) = steady_rss(&p).await?;
    p.stop().await?;
    Ok(rss)
}

// ---------------------------------------------------------------------------------------------
// Queries.

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(samples: &mut [Duration]) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort();
    format!(
        "p50={:>9.1?} p99={:>9.1?} max={:>9.1?}",
        percentile(samples, 0.5),
        percentile(samples, 0.99),
        samples[samples.len() - 1]
    )
}

/// One query: its latency to the last byte and the body's size (streamed, not kept).
async fn query(client: &reqwest::Client, url: &str) -> anyhow::Result<(Duration, u64)> {
    let t = Instant::now();
    let mut resp = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        bail!(
            "GET {url}: {status}: {}",
            body.chars().take(300).collect::<String>()
        );
    }
    let mut bytes = 0u64;
    while let Some(chunk) = resp.chunk().await? {
        bytes += chunk.len() as u64;
    }
    Ok((t.elapsed(), bytes))
}

/// Sequential queries after a warm-up: prints p50/p99/max and the body size.
async fn phase(
    client: &reqwest::Client,
    p: &Proc,
    label: &str,
    path: &str,
    warmup: usize,
    n: usize,
) -> anyhow::Result<()> {
    let url = p.url(path);
    for _ in 0..warmup {
        query(client, &url).await?;
    }
    let mut samples = Vec::with_capacity(n);
    let mut body = 0;
    let cpu = p.cpu()?;
    for _ in 0..n.max(1) {
        let (d, b) = query(client, &url).await?;
        samples.push(d);
        body = b;
    }
    let cpu = (p.cpu()? - cpu) / samples.len() as u32;
    println!(
        "  {label:<28} n={:<4} {}  {:>7.1?} CPU/query  body {:>10}  `{path}`",
        samples.len(),
        summary(&mut samples),
        cpu,
        human_bytes(body)
    );
    Ok(())
}

fn human_bytes(b: u64) -> String {
    if b >= 1_000_000 {
        format!("{:.1} MB", b as f64 / 1e6)
    } else {
        format!("{:.1} kB", b as f64 / 1e3)
    }
}

const NAMESPACE_30D: &str = "/model/allocation?window=30d&aggregate=namespace&accumulate=true";
const CONTROLLER_30D: &str = "/model/allocation?window=30d&aggregate=controller&accumulate=true";

/// Two clients query sequentially for `secs` while a leader publishes generations.
async fn concurrent_phase(
    client: &reqwest::Client,
    dataset: &Path,
    follower: &mut Proc,
    size: Size,
    s: &Settings,
    secs: u64,
) -> anyhow::Result<()> {
    let loaded = "costmodel_backup_polls_total{result=\"loaded\"}";
    let before = metric(client, follower, loaded).await?;
    // The leader rebuilds the current hour and day every 5 s, each a new generation.
    let mut leader = Proc::spawn(
        &leader_args(dataset, size, s, "5s"),
        dataset.join("leader-concurrent.log"),
        true,
    )?;
    let t = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        leader.check_alive()?;
        follower.check_alive()?;
        if metric(client, follower, loaded).await? > before {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the follower loaded no generation of the leader within 30 min; leader log:\n{}",
                leader.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "  leader started; the follower loaded its first generation {:.1} s later",
        t.elapsed().as_secs_f64()
    );
    let gen_of = |st: &serde_json::Value| st["data"]["snapshotGeneration"].as_u64().unwrap_or(0);
    let status = |p: &Proc| p.url("/model/etl/status");
    let g0 = get_json(client, &status(follower))
        .await
        .map_or(0, |(_, b)| gen_of(&b));
    let l0 = metric(client, follower, loaded).await?;
    let end = Instant::now() + Duration::from_secs(secs);
    let run = |path: &'static str| {
        let client = client.clone();
        let url = follower.url(path);
        async move {
            let mut samples = Vec::new();
            while Instant::now() < end {
                samples.push(query(&client, &url).await?.0);
            }
            anyhow::Ok(samples)
        }
    };
    let cpu = follower.cpu()?;
    let (a, b) = tokio::join!(run(NAMESPACE_30D), run(CONTROLLER_30D));
    let cpu = follower.cpu()? - cpu;
    let (mut a, mut b) = (a?, b?);
    let l1 = metric(client, follower, loaded).await?;
    let g1 = get_json(client, &status(follower))
        .await
        .map_or(0, |(_, b)| gen_of(&b));
    let (_, peak) = follower.rss()?;
    let mut all: Vec<Duration> = a.iter().chain(b.iter()).copied().collect();
    println!(
        "  2 clients, {secs} s: follower loaded {} generations (generation {g0} → {g1}); follower CPU {:.1} s; peak RSS {}",
        l1 - l0,
        cpu.as_secs_f64(),
        mib(peak)
    );
    println!(
        "    both                       n={:<4} {}",
        all.len(),
        summary(&mut all)
    );
    println!(
        "    30d namespace              n={:<4} {}",
        a.len(),
        summary(&mut a)
    );
    println!(
        "    30d controller             n={:<4} {}",
        b.len(),
        summary(&mut b)
    );
    leader.stop().await?;
    // What the leader published is now part of the data set.
    Ok(())
}

// ---------------------------------------------------------------------------------------------

fn describe(status: &serde_json::Value) -> String {
    let d = coverage(status, "allocations", "1d");
    let h = coverage(status, "allocations", "1h");
    format!(
        "{} daily sets ({} → {}), {} hourly sets, generation {}",
        d.sets,
        d.start
            .map_or("-".into(), |t| t.format("%Y-%m-%d").to_string()),
        d.end
            .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M").to_string()),
        h.sets,
        status["data"]["snapshotGeneration"]
    )
}

async fn main_run(
    client: &reqwest::Client,
    size: Size,
    s: &Settings,
    run: &Path,
    empty_rss: u64,
) -> anyhow::Result<()> {
    let n: usize = knob("BENCH_QUERIES", 200)?;
    let big: usize = knob("BENCH_BIG_QUERIES", 5)?;
    let warmup: usize = knob("BENCH_WARMUP", 5)?;
    let secs: u64 = knob("BENCH_CONCURRENT_SECS", 60)?;
    let ds = dataset(client, size, s).await?;
    let mut f = start_follower(client, &ds, run).await?;
    let (rss, peak) = steady_rss(&f.proc).await?;
    let rows = rows_loaded(&f.status, size, s)?;
    println!("follower {size}: {}", describe(&f.status));
    println!(
        "  start→ready {:.1} s ({:.1} s CPU); RSS steady {}, peak {}; {rows} allocation rows, {:.0} bytes per row (empty follower {})",
        f.ready_after.as_secs_f64(),
        f.ready_cpu.as_secs_f64(),
        mib(rss),
        mib(peak),
        rss.saturating_sub(empty_rss) as f64 / rows.max(1) as f64,
        mib(empty_rss)
    );
    let p = &f.proc;
    phase(client, p, "30d namespace", NAMESPACE_30D, warmup, n).await?;
    phase(client, p, "30d controller", CONTROLLER_30D, warmup, n).await?;
    let h24 = "/model/allocation?window=24h&aggregate=namespace";
    phase(client, p, "24h namespace", h24, warmup, n).await?;
    let h48 = "/model/allocation?window=48h&aggregate=namespace";
    phase(client, p, "48h namespace", h48, warmup, n).await?;
    let mut bigs = vec![
        (
            "30d pod",
            "/model/allocation?window=30d&aggregate=pod&accumulate=true",
        ),
        (
            "30d unaggregated",
            "/model/allocation?window=30d&accumulate=true",
        ),
    ];
    if size.days >= 90 {
        bigs.push((
            "90d unaggregated",
            "/model/allocation?window=90d&accumulate=true",
        ));
    }
    for (name, path) in bigs {
        phase(client, p, name, path, 1, big).await?;
        let (rss_after, peak_after) = p.rss()?;
        println!(
            "    after it: RSS {}, peak {} (peak over the steady RSS: {})",
            mib(rss_after),
            mib(peak_after),
            mib(peak_after.saturating_sub(rss))
        );
    }
    concurrent_phase(client, &ds, &mut f.proc, size, s, secs).await?;
    f.proc.stop().await?;
    // The leader moved the data set on: it is as fresh as the key says.
    Ok(())
}

async fn sweep_run(
    client: &reqwest::Client,
    size: Size,
    s: &Settings,
    run: &Path,
    empty_rss: u64,
) -> anyhow::Result<()> {
    let ds = dataset(client, size, s).await?;
    let f = start_follower(client, &ds, run).await?;
    let (rss, peak) = steady_rss(&f.proc).await?;
    let rows = rows_loaded(&f.status, size, s)?;
    println!(
        "sweep {size:>9}: start→ready {:>5.1} s ({:>5.1} s CPU)  RSS steady {:>9} peak {:>9}  {rows:>9} rows  {:>6.0} bytes/row  ({})",
        f.ready_after.as_secs_f64(),
        f.ready_cpu.as_secs_f64(),
        mib(rss),
        mib(peak),
        rss.saturating_sub(empty_rss) as f64 / rows.max(1) as f64,
        describe(&f.status)
    );
    f.proc.stop().await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seed: u64 = knob("BENCH_SEED", 20240601)?;
    let root = std::env::var("BENCH_DATA_DIR").map_or_else(
        |_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data"),
        PathBuf::from,
    );
    let refresh = Duration::from_secs(knob("BENCH_REFRESH_SECS", 3600)?);
    std::fs::create_dir_all(&root).with_context(|| root.display().to_string())?;
    let s = Settings {
        seed,
        root: root.clone(),
        refresh,
        binary_sha: sha256_file(BIN)?,
        any_binary: knob("BENCH_ANY_BINARY", 0u8)? == 1,
    };
    let sizes: Vec<Size> = if knob("BENCH_SWEEP", 0u8)? == 1 {
        list_knob("BENCH_SWEEP_SIZES", "1000x30,10000x7,10000x30,10000x90")?
    } else {
        let pods: usize = knob("BENCH_PODS", 10_000)?;
        list_knob::<u32>("BENCH_DAYS", "30,90")?
            .into_iter()
            .map(|days| format!("{pods}x{days}").parse::<Size>())
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("BENCH_PODS/BENCH_DAYS: {e}"))?
    };
    let sweep = knob("BENCH_SWEEP", 0u8)? == 1;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let run = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&root)
        .context("a run folder under the data folder")?;
    let today = Utc::now().duration_trunc(TimeDelta::days(1))?;
    println!(
        "query_latency: {} (seed {seed}), binary {}…, {}, data in {}",
        sizes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        &s.binary_sha[..12],
        today.format("%Y-%m-%d"),
        root.display()
    );
    let empty_rss = empty_follower_rss(&client, run.path()).await?;
    for size in sizes {
        if sweep {
            sweep_run(&client, size, &s, run.path(), empty_rss).await?;
        } else {
            main_run(&client, size, &s, run.path(), empty_rss).await?;
        }
    }
    Ok(())
}
