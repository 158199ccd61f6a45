//! The query engine's answers, held byte for byte.
//!
//! A fixed snapshot (eight days of demo sets and 49 hourly ones, enriched with the metadata the
//! demo leaves out: annotations, namespace labels and annotations, GPUs, a partial day and a
//! partial hour) answers a list of queries that covers every aggregation, idle mode, filter,
//! sharing mode, paging, cost metric, format and window shape. The bodies the engine gave when
//! this test was written are stored in `tests/reference/queries.jsonl.zst`; any change to the
//! engine or the set layout that changes one byte of one answer fails here, naming the query
//! and where the bodies first differ.
//!
//! A deliberate change of output is recorded with `UPDATE_REFERENCE=1 cargo test --test
//! query_reference`, and the diff of the reference file is then part of the change's review.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use cost_model::api::executor::{QueryKind, answer};
use cost_model::etl::costing;
use cost_model::etl::demo::DemoCluster;
use cost_model::model::{EtlSet, Resolution, Window};
use cost_model::query::{self, Bounds, Dialect};
use cost_model::storage::Snapshot;
use cost_model::storage::manifest;
use cost_model::storage::snapshot::LoadedSet;
use tokio_util::sync::CancellationToken;

const REFERENCE: &str = "tests/reference/queries.jsonl.zst";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 8, 10, 30, 0).unwrap()
}

/// Adds what the demo leaves out, deterministically: annotations on every other pod, namespace
/// labels and annotations, GPUs on one workload's containers.
fn enrich(set: &mut EtlSet) {
    let EtlSet::Allocations(s) = set else {
        return;
    };
    for (i, a) in s.allocations.iter_mut().enumerate() {
        if a.is_idle() {
            continue;
        }
        let p = &mut a.properties;
        let ns = p.namespace.clone();
        if p.pod.len() % 2 == 0 {
            p.annotations
                .insert("owner".into(), format!("owner-{}", ns.len() % 3));
        }
        p.namespace_labels
            .insert("tier".into(), format!("tier-{}", ns.len() % 2));
        p.namespace_annotations
            .insert("contact".into(), format!("{ns}@example.com"));
        if p.controller.len() % 7 == 3 {
            a.gpu_request_average = 1.0;
            a.gpu_usage_average = 0.5 + (i % 5) as f64 / 10.0;
            a.gpu_hours = a.minutes() / 60.0;
            a.gpu_cost = a.gpu_hours * 2.48;
        }
    }
}

fn snapshot() -> Snapshot {
    let c = DemoCluster::new(7, 90);
    let today = Resolution::Day.window_containing(now());
    let hour = Resolution::Hour.window_containing(now());
    let mut windows = Vec::new();
    for d in (1..8).rev() {
        let w = Window::new(
            today.start - Duration::days(d),
            today.start - Duration::days(d - 1),
        );
        windows.push((Resolution::Day, w, w.end));
    }
    windows.push((Resolution::Day, today, now()));
    for h in (1..49).rev() {
        let w = Window::new(
            hour.start - Duration::hours(h),
            hour.start - Duration::hours(h - 1),
        );
        windows.push((Resolution::Hour, w, w.end));
    }
    windows.push((Resolution::Hour, hour, now()));
    let mut files = BTreeMap::new();
    for (res, w, data_end) in windows {
        let (a, s) = costing::price(&c.compute(w, data_end), res, "cluster-one");
        for mut set in [EtlSet::Allocations(a), EtlSet::Assets(s)] {
            enrich(&mut set);
            let enc = manifest::encode(&set).expect("encodes");
            files.insert(enc.path, (enc.entry, LoadedSet::from(set)));
        }
    }
    let mut snap = Snapshot {
        generation: 1,
        files,
        ..Snapshot::default()
    };
    snap.rebuild_index();
    snap
}

/// Every query held: path (`allocation`, `summary` or `assets`) and parameters.
fn queries() -> Vec<(&'static str, String)> {
    let day = "window=2026-11-02T00:00:00Z,2026-11-05T00:00:00Z";
    let mut q: Vec<(&'static str, String)> = Vec::new();
    let mut alloc = |s: String| q.push(("allocation", s));
    for agg in [
        "",
        "namespace",
        "controller",
        "controllerKind",
        "pod",
        "container",
        "node",
        "cluster",
        "service",
        "deployment",
        "statefulset",
        "daemonset",
        "label:app",
        "label:team",
        "annotation:owner",
        "namespace,label:team",
        "cluster,namespace,controller",
    ] {
        alloc(format!("{day}&aggregate={agg}"));
        alloc(format!("{day}&aggregate={agg}&accumulate=true"));
    }
    for extra in [
        "aggregate=namespace&accumulate=true&idle=false",
        "aggregate=namespace&accumulate=true&shareIdle=true",
        "aggregate=namespace&accumulate=true&splitIdle=true",
        "aggregate=namespace&accumulate=true&idleByNode=true",
        "aggregate=pod&accumulate=true&idleByNode=true&shareIdle=true",
        "aggregate=namespace&accumulate=true&includeAggregatedMetadata=true",
        "aggregate=controller&includeAggregatedMetadata=true",
        "aggregate=namespace&accumulate=true&filter=namespace%3A%22default%22",
        "aggregate=pod&filter=label%5Bteam%5D%3A%22platform%22%2BcontrollerName%21%3A%22x%22",
        "aggregate=namespace&accumulate=true&filter=node%3A%22node-m5-2xlarge-c00c%22&shareIdle=true",
        "aggregate=controller&accumulate=true&filter=container~%3A%22a%22",
        "aggregate=namespace&accumulate=true&shareNamespaces=kube-system",
        "aggregate=namespace&accumulate=true&shareNamespaces=kube-system&shareSplit=even",
        "aggregate=controller&accumulate=true&shareLabels=team%3Aplatform&shareCost=30.42",
        "aggregate=namespace&accumulate=true&shareNamespaces=kube-system&includeSharedCostBreakdown=false&shareIdle=true",
        "aggregate=namespace&accumulate=true&shareNamespaces=kube-system&filter=namespace%21%3A%22default%22",
        "aggregate=pod&accumulate=true&offset=5&limit=10",
        "aggregate=namespace&limit=2",
        "aggregate=namespace&accumulate=true&costMetric=hourly",
        "aggregate=namespace&costMetric=daily",
        "aggregate=namespace&accumulate=true&costMetric=monthly",
        "aggregate=namespace&step=2d",
        "aggregate=namespace&accumulateBy=week",
        "aggregate=pod&accumulate=true&shareNamespaces=kube-system",
        "accumulate=true&shareNamespaces=kube-system&shareSplit=even&shareCost=30.42",
        "aggregate=container&accumulate=true&shareLabels=team%3Aplatform&includeSharedCostBreakdown=false&shareIdle=true",
        "aggregate=pod&accumulate=true&costMetric=hourly",
        "accumulate=true&filter=namespace%3A%22default%22&offset=3&limit=20&splitIdle=true",
        "aggregate=namespace,pod&accumulate=true&idle=false",
        "aggregate=pod&step=2d&shareIdle=true",
        "aggregate=namespace&accumulate=true&format=csv",
        "accumulate=true&format=csv",
    ] {
        alloc(format!("{day}&{extra}"));
    }
    for window in [
        "24h",
        "48h",
        "today",
        "yesterday",
        "week",
        "7d",
        "30d",
        "2026-11-07T03:00:00Z,2026-11-07T09:00:00Z",
        "2026-11-07T03:20:00Z,2026-11-07T09:40:00Z",
        "2026-11-03T12:00:00Z,2026-11-05T12:00:00Z",
    ] {
        alloc(format!("window={window}&aggregate=namespace"));
        alloc(format!(
            "window={window}&aggregate=namespace&accumulate=true"
        ));
        alloc(format!(
            "window={window}&aggregate=controller&accumulate=true"
        ));
    }
    alloc("window=24h".into());
    alloc("window=48h&aggregate=pod".into());
    alloc("window=7d&accumulate=true&costMetric=daily&shareIdle=true".into());
    alloc("window=24h&accumulate=true&aggregate=pod".into());
    alloc("window=today&accumulate=true".into());
    for (path, params) in [
        ("summary", format!("{day}&aggregate=namespace")),
        ("summary", format!("{day}&aggregate=pod&accumulate=true")),
        ("summary", "window=24h&aggregate=controller".to_string()),
        ("assets", day.to_string()),
        ("assets", format!("{day}&aggregate=type&accumulate=true")),
        ("assets", "window=24h&aggregate=category".to_string()),
        (
            "assets",
            format!("{day}&filter=assetType%3A%22node%22&accumulate=true"),
        ),
    ] {
        q.push((path, params));
    }
    q
}

fn params(q: &str) -> HashMap<String, String> {
    // Read as the handlers read them.
    actix_web::web::Query::<HashMap<String, String>>::from_query(q)
        .unwrap_or_else(|e| panic!("{q}: {e}"))
        .into_inner()
}

fn run(snap: &Snapshot, path: &str, q: &str) -> Vec<u8> {
    let bounds = Bounds::from(query::DEFAULT_MAX_STEPS);
    let p = params(q);
    let kind = match path {
        "allocation" => QueryKind::Allocation(
            query::parse_allocation_query(&p, now(), bounds, Dialect::Kubecost)
                .unwrap_or_else(|e| panic!("{q}: {e:?}")),
        ),
        "summary" => QueryKind::Summary(
            query::parse_allocation_query(&p, now(), bounds, Dialect::Kubecost)
                .unwrap_or_else(|e| panic!("{q}: {e:?}")),
        ),
        _ => QueryKind::Assets(
            query::parse_asset_query(&p, now(), bounds, Dialect::Kubecost)
                .unwrap_or_else(|e| panic!("{q}: {e:?}")),
        ),
    };
    let warning = kind.warnings().join("; ");
    let warning = (!warning.is_empty()).then_some(warning);
    answer(
        snap,
        &kind,
        now(),
        &CancellationToken::new(),
        usize::MAX,
        warning.as_deref(),
    )
    .unwrap_or_else(|e| panic!("{path}?{q}: {e}"))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Held {
    path: String,
    query: String,
    body: String,
}

#[test]
fn every_answer_is_what_the_reference_engine_gave() {
    let snap = Arc::new(snapshot());
    let got: Vec<Held> = queries()
        .into_iter()
        .map(|(path, q)| {
            let body = run(&snap, path, &q);
            // A second run reads what the first left in the sets' caches: the same bytes.
            assert!(
                run(&snap, path, &q) == body,
                "{path}?{q}: a cached answer differs"
            );
            Held {
                path: path.into(),
                query: q,
                body: String::from_utf8(body).expect("answers are UTF-8"),
            }
        })
        .collect();
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(REFERENCE);
    #[expect(clippy::disallowed_methods, reason = "a switch for the developer")]
    if std::env::var_os("UPDATE_REFERENCE").is_some() {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let mut enc = zstd::Encoder::new(std::fs::File::create(&file).unwrap(), 19).unwrap();
        for h in &got {
            serde_json::to_writer(&mut enc, h).unwrap();
            enc.write_all(b"\n").unwrap();
        }
        enc.finish().unwrap();
        return;
    }
    let reader = std::io::BufReader::new(
        zstd::Decoder::new(std::fs::File::open(&file).expect("the reference file is committed"))
            .unwrap(),
    );
    let held: Vec<Held> = reader
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert_eq!(
        held.iter().map(|h| (&h.path, &h.query)).collect::<Vec<_>>(),
        got.iter().map(|h| (&h.path, &h.query)).collect::<Vec<_>>(),
        "the list of queries changed: record it again with UPDATE_REFERENCE=1"
    );
    let mut failures = Vec::new();
    for (h, g) in held.iter().zip(&got) {
        if h.body != g.body {
            let at = h
                .body
                .bytes()
                .zip(g.body.bytes())
                .position(|(a, b)| a != b)
                .unwrap_or(h.body.len().min(g.body.len()));
            let around = |s: &str| {
                let b = &s.as_bytes()[at.saturating_sub(120)..(at + 120).min(s.len())];
                String::from_utf8_lossy(b).into_owned()
            };
            failures.push(format!(
                "/{}?{} differs at byte {at} (lengths {} held, {} now)\n  held: …{}…\n  now:  …{}…",
                h.path,
                h.query,
                h.body.len(),
                g.body.len(),
                around(&h.body),
                around(&g.body)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} answers changed:\n{}",
        failures.len(),
        held.len(),
        failures.join("\n")
    );
}

#[test]
fn the_reference_covers_rich_answers() {
    // The held answers must exercise what they claim to: sets with metadata, GPUs and idle.
    let snap = snapshot();
    let body = run(
        &snap,
        "allocation",
        "window=2026-11-02T00:00:00Z,2026-11-03T00:00:00Z&accumulate=true",
    );
    let text = String::from_utf8(body).unwrap();
    for needle in [
        "\"namespaceLabels\"",
        "\"namespaceAnnotations\"",
        "\"annotations\"",
        "__idle__",
        "\"pvs\":{\"",
        "\"lbAllocations\":{\"",
        "\"services\":[\"",
    ] {
        assert!(text.contains(needle), "no {needle} in the answers");
    }
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let gpu: f64 = v["data"][0]
        .as_object()
        .unwrap()
        .values()
        .map(|a| a["gpuCost"].as_f64().unwrap())
        .sum();
    assert!(gpu > 0.0, "no GPU cost in the answers");
}
