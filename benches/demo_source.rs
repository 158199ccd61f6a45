//! Throughput of the built-in demo source: `DemoCluster::compute` over whole days, as the
//! leader's backfill asks for them, at several cluster sizes. Prints container-days per second
//! (one container row of a daily window is one container-day) for each size, so a cost that
//! grows faster than the cluster shows as a rate that falls with size.
//!
//! `cargo bench --bench demo_source` (`BENCH_DEMO_PODS=1000,10000` sizes, `BENCH_DEMO_DAYS=3`
//! days per size, each size timed after one warm-up day).
#![expect(
    clippy::disallowed_methods,
    reason = "bench knobs come from the environment"
)]

use std::time::Instant;

use chrono::{DurationRound, TimeDelta, Utc};
use cost_model::etl::demo::DemoCluster;
use cost_model::model::Window;

fn main() {
    let sizes: Vec<usize> = std::env::var("BENCH_DEMO_PODS")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let days: i64 = std::env::var("BENCH_DEMO_DAYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|d| *d > 0)
        .unwrap_or(3);
    let today = Utc::now()
        .duration_trunc(TimeDelta::days(1))
        .expect("UTC day truncation");
    for pods in sizes {
        let cluster = DemoCluster::new(20240601, pods);
        let day = |d: i64| {
            let start = today - TimeDelta::days(d + 1);
            Window::new(start, start + TimeDelta::days(1))
        };
        // Warm-up: one day untimed (allocator, caches).
        let w = day(days);
        std::hint::black_box(cluster.compute(w, w.end));
        let t = Instant::now();
        let mut rows = 0usize;
        for d in 0..days {
            let w = day(d);
            rows += std::hint::black_box(cluster.compute(w, w.end))
                .containers
                .len();
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "demo {pods:>6} pods: {days} days, {rows} container-days in {secs:.2} s = {:.0} container-days/s ({:.0} per day)",
            rows as f64 / secs,
            rows as f64 / days as f64
        );
    }
}
