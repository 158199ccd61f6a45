//! Backfill throughput from a real Prometheus: a synthetic cluster of `BENCH_PODS` pods (1,000)
//! over `BENCH_DAYS` days (7), scraped every 150 s, is loaded into Prometheus 3 (or 2 with
//! `BENCH_PROM=2`) with promtool; then the Prometheus source reads and prices every day and its
//! 24 hours, as the leader's backfill does (one batch per day, `MAX_QUERY_CONCURRENCY` queries in
//! flight, 5-minute steps). Prints container-hours per second, the queries issued, and this
//! process's peak RSS (the source and the pricing; Prometheus is another process).
//!
//! `cargo bench --bench prometheus_backfill`
#![expect(
    clippy::disallowed_methods,
    reason = "bench knobs come from the environment"
)]

#[path = "../tests/prom/mod.rs"]
#[allow(
    unused_imports,
    reason = "the harness re-exports the fault proxy, which this bench does not use"
)]
mod prom;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DurationRound, TimeDelta, Utc};
use cost_model::etl::costing;
use cost_model::etl::pricing::Pricing;
use cost_model::etl::prometheus::client::{Client, Connection};
use cost_model::etl::prometheus::{PrometheusSource, Settings};
use cost_model::etl::source::DataSource;
use cost_model::model::{Resolution, Window};
use prom::cluster::{Cluster, Container, Egress, Namespace, Node, Owner, Pod};
use prom::{PromServer, PromVersion};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// `pods` pods on `pods / 40` nodes: nine in ten are long-running deployment pods, one in ten a
/// job pod that runs 02:00–08:00 each day under a new name.
fn cluster(pods: usize, days: i64) -> Cluster {
    let end = Utc::now().duration_trunc(TimeDelta::days(1)).unwrap();
    let start = end - TimeDelta::days(days);
    let nodes = (pods / 40).max(2);
    let node = |i: usize| format!("node-{i:03}");
    let mut out = Vec::new();
    for p in 0..pods {
        let ns = format!("ns-{}", p % 10);
        let c = Container {
            name: "app".into(),
            cpu_request: 0.25,
            cpu_limit: 0.0,
            cpu_usage: 0.05 + (p % 7) as f64 * 0.05,
            ram_request: 0.5 * GIB,
            ram_limit: 0.0,
            ram_usage: 0.3 * GIB,
            gpu_request: 0.0,
            gpu_usage: 0.0,
        };
        let labels = vec![("app".to_string(), format!("app-{}", p % 50))];
        if p % 10 == 9 {
            for d in 0..days {
                let day = start + TimeDelta::days(d);
                out.push(Pod {
                    namespace: ns.clone(),
                    name: format!("job-{p}-{d}"),
                    uid: format!("uid-{p}-{d}"),
                    node: node(p % nodes),
                    owner: Owner::Job {
                        job: format!("job-{p}-{d}"),
                        cronjob: Some(format!("cron-{p}")),
                    },
                    labels: labels.clone(),
                    annotations: vec![],
                    start: day + TimeDelta::hours(2),
                    end: day + TimeDelta::hours(8),
                    containers: vec![c.clone()],
                    pvcs: vec![],
                    egress: Egress::default(),
                });
            }
        } else {
            out.push(Pod {
                namespace: ns,
                name: format!("app-{}-{p}", p % 50),
                uid: format!("uid-{p}"),
                node: node(p % nodes),
                owner: Owner::ReplicaSet {
                    replicaset: format!("app-{}-rs", p % 50),
                    deployment: Some(format!("app-{}", p % 50)),
                },
                labels,
                annotations: vec![],
                start,
                end,
                containers: vec![c],
                pvcs: vec![],
                egress: Egress::default(),
            });
        }
    }
    Cluster {
        start,
        end,
        scrape: Duration::from_secs(150),
        nodes: (0..nodes)
            .map(|i| Node {
                name: node(i),
                instance_type: "m5.4xlarge".into(),
                region: "us-east-1".into(),
                zone: "us-east-1a".into(),
                provider_id: format!("aws:///us-east-1a/i-{i:08}"),
                arch: "amd64".into(),
                cpu_cores: 16.0,
                ram_bytes: 64.0 * GIB,
                gpus: 0.0,
                spot: i % 4 == 0,
                cpu_hourly: (i % 2 == 0).then_some(0.04),
                ram_hourly: (i % 2 == 0).then_some(0.005),
                gpu_hourly: None,
                labels: vec![],
                exporter: None,
                start,
                end,
            })
            .collect(),
        namespaces: (0..10)
            .map(|i| Namespace {
                name: format!("ns-{i}"),
                labels: vec![("team".into(), format!("t{i}"))],
                annotations: vec![],
            })
            .collect(),
        pods: out,
        pvs: vec![],
        load_balancers: vec![],
        cluster_management_hourly: None,
        egress_prices: None,
    }
}

fn main() {
    let pods = env("BENCH_PODS", 1000);
    let days = env("BENCH_DAYS", 7) as i64;
    let concurrency = env("MAX_QUERY_CONCURRENCY", 5);
    let version = if std::env::var("BENCH_PROM").as_deref() == Ok("2") {
        PromVersion::V2
    } else {
        PromVersion::V3
    };
    let c = cluster(pods, days);
    let t = Instant::now();
    let prom = PromServer::start_cluster(version, &c);
    eprintln!(
        "loaded {pods} pods × {days} days into Prometheus {version:?} in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    drop(c);

    let client = Client::new(Connection {
        url: prom.url.clone(),
        bearer_token: None,
        bearer_token_file: None,
        basic_auth: None,
        headers: vec![],
        ca_file: None,
        insecure_skip_verify: false,
        timeout: Duration::from_secs(120),
        retries: 3,
        concurrency,
    })
    .expect("client");
    let source = Arc::new(PrometheusSource::new(
        client,
        Settings {
            resolution: Duration::from_secs(300),
            max_query_duration: Duration::from_secs(1440 * 60),
            cluster_filter: None,
            pricing: Pricing::default(),
        },
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let end = Utc::now().duration_trunc(TimeDelta::days(1)).unwrap();
    let rss_before = peak_rss_mib();
    let started = Instant::now();
    let mut container_hours = 0.0;
    let mut sets = 0;
    for d in (1..=days).rev() {
        let day = Window::new(end - TimeDelta::days(d), end - TimeDelta::days(d - 1));
        let mut windows = vec![(day, day.end)];
        for h in 0..24 {
            let s = day.start + TimeDelta::hours(h);
            windows.push((
                Window::new(s, s + TimeDelta::hours(1)),
                s + TimeDelta::hours(1),
            ));
        }
        let t = Instant::now();
        let got = rt
            .block_on(source.clone().windows(windows))
            .expect("the source answers");
        for cw in &got {
            let res = if cw.window == day {
                Resolution::Day
            } else {
                Resolution::Hour
            };
            if res == Resolution::Day {
                container_hours += cw
                    .containers
                    .iter()
                    .map(|c| (c.end - c.start).num_milliseconds() as f64 / 3.6e6)
                    .sum::<f64>();
            }
            let _ = costing::price(cw, res, "bench");
            sets += 2;
        }
        eprintln!(
            "day {}: {} windows in {:.2} s",
            day.start.format("%Y-%m-%d"),
            got.len(),
            t.elapsed().as_secs_f64()
        );
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "backfill {days} d × {pods} pods from Prometheus {version:?}: {sets} sets in {secs:.1} s; {:.0} container-hours/s ({container_hours:.0} container-hours); {} queries ({:.1}/s, concurrency {concurrency}); peak RSS {:.0} MiB (before: {rss_before:.0} MiB)",
        container_hours / secs,
        source.queries_issued(),
        source.queries_issued() as f64 / secs,
        peak_rss_mib(),
    );
}
