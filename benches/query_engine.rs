//! The query engine alone, on a follower's worth of sets: load time, memory per allocation and
//! query latency, cold (first query of its shape) and warm, at any size.
//!
//! The sets (`BENCH_DAYS` daily sets and 49 hourly ones of `BENCH_PODS` demo pods, as a
//! follower at Kubecost's retention holds them) are built once with the demo source and the
//! costing, stored as the bucket stores them under `target/bench-data/engine-<pods>x<days>/`,
//! then a fresh process loads them (verify, decode, columns: what a follower's start does,
//! on all cores) and answers queries through the executor's `answer` (engine and JSON
//! encoding, as one query worker runs them). RSS is the process's, read from `/proc`.
//!
//! `cargo bench --bench query_engine` (`BENCH_PODS`=10000, `BENCH_DAYS`=30, `BENCH_QUERIES`=200).
#![expect(
    clippy::disallowed_methods,
    reason = "bench knobs come from the environment"
)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use cost_model::api::executor::{QueryKind, answer};
use cost_model::etl::costing;
use cost_model::etl::demo::DemoCluster;
use cost_model::model::{EtlSet, Resolution, SetCache, Window};
use cost_model::query::{self, Bounds, Dialect};
use cost_model::storage::Snapshot;
use cost_model::storage::manifest::{self, FileEntry};
use cost_model::storage::snapshot::LoadedSet;
use tokio_util::sync::CancellationToken;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The bench's clock: the data ends at 10:30 on this day.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 10, 30, 0).unwrap()
}

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Every window a follower holds at this retention: daily sets up to today's partial one, and
/// 49 hourly ones up to the current partial hour.
fn windows(days: i64) -> Vec<(Resolution, Window, DateTime<Utc>)> {
    let today = Resolution::Day.window_containing(now());
    let hour = Resolution::Hour.window_containing(now());
    let mut out = Vec::new();
    for d in (0..days).rev() {
        let w = Window::new(
            today.start - chrono::Duration::days(d),
            today.end - chrono::Duration::days(d),
        );
        out.push((Resolution::Day, w, w.end.min(now())));
    }
    for h in (0..49).rev() {
        let w = Window::new(
            hour.start - chrono::Duration::hours(h),
            hour.end - chrono::Duration::hours(h),
        );
        out.push((Resolution::Hour, w, w.end.min(now())));
    }
    out
}

fn build(dir: &Path, pods: usize, days: i64) {
    let t = Instant::now();
    let tmp = dir.with_extension("building");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("bench data dir");
    let cluster = Arc::new(DemoCluster::new(1, pods));
    let work = std::sync::Mutex::new(windows(days));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let Some((res, w, end)) = work.lock().unwrap().pop() else {
                        return;
                    };
                    let (a, _) = costing::price(&cluster.compute(w, end), res, "cluster-one");
                    let enc = manifest::encode(&EtlSet::Allocations(a)).expect("encode");
                    let name = enc.path.replace('/', "_");
                    std::fs::write(tmp.join(&name), &enc.body).expect("write set");
                    std::fs::write(
                        tmp.join(format!("{name}.entry")),
                        serde_json::to_vec(&enc.entry).unwrap(),
                    )
                    .expect("write entry");
                }
            });
        }
    });
    std::fs::rename(&tmp, dir).expect("bench data dir");
    eprintln!(
        "built {} sets of {pods} pods in {:.1?} into {}",
        windows(days).len(),
        t.elapsed(),
        dir.display()
    );
}

fn load(dir: &Path) -> (Snapshot, usize) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("bench data")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_none_or(|e| e != "entry"))
        .collect();
    files.sort();
    let work = std::sync::Mutex::new(files);
    let loaded = std::sync::Mutex::new(BTreeMap::new());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let Some(path) = work.lock().unwrap().pop() else {
                        return;
                    };
                    let body = std::fs::read(&path).expect("read set");
                    let entry: FileEntry = serde_json::from_slice(
                        &std::fs::read(path.with_file_name(format!(
                            "{}.entry",
                            path.file_name().unwrap().to_string_lossy()
                        )))
                        .expect("read entry"),
                    )
                    .expect("entry");
                    let set = manifest::decode(&entry, &body).expect("decode");
                    let name = path.file_name().unwrap().to_string_lossy().into_owned();
                    let loaded_set = LoadedSet::from(set);
                    loaded.lock().unwrap().insert(name, (entry, loaded_set));
                }
            });
        }
    });
    let files = loaded.into_inner().unwrap();
    let mut snap = Snapshot {
        generation: 1,
        files,
        ..Snapshot::default()
    };
    snap.rebuild_index();
    let rows = snap.allocations.values().map(|s| s.len()).sum();
    (snap, rows)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn run(snap: &Snapshot, q: &str) -> usize {
    let params: HashMap<String, String> = q
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let kind = QueryKind::Allocation(
        query::parse_allocation_query(
            &params,
            now(),
            Bounds::from(query::DEFAULT_MAX_STEPS),
            Dialect::Kubecost,
        )
        .expect("query"),
    );
    answer(
        snap,
        &kind,
        now(),
        &CancellationToken::new(),
        usize::MAX,
        None,
    )
    .expect("answer")
    .len()
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is read from the command line.
    let pods = env("BENCH_PODS", 10_000);
    let days = env("BENCH_DAYS", 30) as i64;
    let n = env("BENCH_QUERIES", 200);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/bench-data")
        .join(format!("engine-{pods}x{days}"));
    if std::env::var_os("BENCH_PHASE").is_none() {
        if !dir.exists() {
            build(&dir, pods, days);
        }
        // Measure in a fresh process, so the building's garbage does not count.
        let status = std::process::Command::new(std::env::current_exe().expect("exe"))
            .env("BENCH_PHASE", "query")
            .status()
            .expect("rerun");
        std::process::exit(status.code().unwrap_or(1));
    }
    let base = rss_kib("VmRSS:");
    let t = Instant::now();
    let (snap, rows) = load(&dir);
    let load_time = t.elapsed();
    let rss = rss_kib("VmRSS:");
    let columns: usize = snap.allocations.values().map(|s| s.heap_bytes()).sum();
    let mut parts: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut dense, mut sparse) = (0, 0);
    for s in snap.allocations.values() {
        for (part, b) in s.memory() {
            *parts.entry(part).or_default() += b;
        }
        let (d, sp) = s.column_counts();
        dense += d;
        sparse += sp;
    }
    let sets = snap.allocations.len().max(1);
    println!(
        "number columns per set: {:.1} dense, {:.1} sparse; per allocation: {}",
        dense as f64 / sets as f64,
        sparse as f64 / sets as f64,
        parts
            .iter()
            .map(|(p, b)| format!("{p} {:.0} B", *b as f64 / rows as f64))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "columns hold {:.0} MiB ({:.0} B per allocation); {} distinct pods interned",
        columns as f64 / (1 << 20) as f64,
        columns as f64 / rows as f64,
        cost_model::model::PodInterner::global().len()
    );
    println!(
        "{pods} pods x {days} d + 49 h: {} sets, {rows} allocations; load {load_time:.2?}; RSS {:.0} MiB (empty process {:.0} MiB, peak {:.0} MiB): {:.0} B per allocation",
        snap.allocations.len(),
        mib(rss),
        mib(base),
        mib(rss_kib("VmHWM:")),
        (rss - base) as f64 * 1024.0 / rows as f64
    );
    let queries = [
        (
            "30d namespace",
            "window=30d&aggregate=namespace&accumulate=true",
            n,
        ),
        (
            "30d controller",
            "window=30d&aggregate=controller&accumulate=true",
            n,
        ),
        (
            "24h namespace",
            "window=24h&aggregate=namespace&accumulate=true",
            n,
        ),
        (
            "48h namespace (per hour)",
            "window=48h&aggregate=namespace",
            n,
        ),
        ("30d namespace by day", "window=30d&aggregate=namespace", n),
        (
            "7d namespace, filter",
            "window=7d&aggregate=namespace&accumulate=true&filter=namespace:\"backend\"",
            n,
        ),
        (
            "30d pod",
            "window=30d&aggregate=pod&accumulate=true",
            n.min(10),
        ),
        ("30d unaggregated", "window=30d&accumulate=true", n.min(3)),
    ];
    for (name, q, n) in queries {
        let t = Instant::now();
        let bytes = run(&snap, q);
        let cold = t.elapsed();
        let mut samples: Vec<Duration> = (0..n)
            .map(|_| {
                let t = Instant::now();
                run(&snap, q);
                t.elapsed()
            })
            .collect();
        samples.sort();
        println!(
            "{name:<26} cold {cold:>9.2?}  warm p50 {:>9.2?} p99 {:>9.2?} (n={n})  body {:>9} B  RSS {:.0} MiB (peak {:.0} MiB)",
            percentile(&samples, 0.5),
            percentile(&samples, 0.99),
            bytes,
            mib(rss_kib("VmRSS:")),
            mib(rss_kib("VmHWM:")),
        );
    }
    println!(
        "answers cached: {:.1} MiB",
        SetCache::total_bytes() as f64 / (1 << 20) as f64
    );
}
