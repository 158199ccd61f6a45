//! The API contract: `openapi.json` (the repository's root) against the real binary.
//!
//! - the document is a valid OpenAPI 3.1 document (openapi-spec-validator) and `/openapi.json`
//!   serves exactly the file;
//! - every path `configure()` registers is documented (read from `src/api/mod.rs`, so a new route
//!   without a description fails here), and every documented core route answers;
//! - schemathesis (property-based, from the document) finds no server error, no undocumented
//!   status code, no wrong content type, no body or header that breaks its schema, no method
//!   answered but GET and HEAD, on a replica serving the embedded demo cluster, in both
//!   `--api-defaults` dialects.
//!
//! The routes added together with this document (`x-route-group` other than `core`:
//! `/allocation/compute`, `/clusterInfo`, `/clusterInfoMap`, `/cloudCost`, `/model/metrics`,
//! `format=csv`) have a test each, so a failure names the group.
//!
//! The Python tools come from `scripts/pytools` (a venv in the user's cache; `scripts/test`
//! installs it first). Each schemathesis run is seeded and bounded in examples and time.

mod proc;
mod pytools;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use proc::{Proc, spawn, wait_for};

/// Examples per operation and phase: enough to reach every parameter, small enough that a run
/// over the core routes takes well under a minute on 2 cores.
const MAX_EXAMPLES: &str = "12";
/// A fixed seed: a failure reproduces with the command the test prints.
const SEED: &str = "20261126";
/// The most one schemathesis run may take before it is killed (and the test fails).
const RUN_LIMIT: Duration = Duration::from_secs(150);
/// The checks run on every response.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,unsupported_method";
/// Paths registered in `configure()` that are deliberately not in the document.
const UNDOCUMENTED: &[(&str, &str)] = &[
    ("/debug/crash/{}", "test-support builds only"),
    ("/debug/stall", "test-support builds only"),
    ("/debug/panic-query", "test-support builds only"),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn document() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join("openapi.json")).unwrap())
        .expect("openapi.json is JSON")
}

/// The venv of `scripts/pytools`.
fn pytools() -> &'static Path {
    pytools::venv(&["schemathesis"])
}

/// A standalone replica on the embedded demo cluster (two days of data), ready to answer.
async fn replica(dir: &Path, args: &[&str]) -> Proc {
    let mut all = vec![
        "--election",
        "standalone",
        "--demo-pods",
        "30",
        "--demo-seed",
        "5",
        "--backfill",
        "2d",
    ];
    let bucket = dir.join("bucket");
    all.extend(["--bucket-dir", bucket.to_str().unwrap()]);
    all.extend(args);
    let p = spawn(dir, "replica", &all);
    wait_for(&p, &client(), "/readyz", |s, _| s == 200).await;
    p
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Runs schemathesis over the operations whose path matches `paths` (a regex), with `checks`,
/// and fails the test with its report if any check failed. One run at a time: they share two
/// cores with the replica.
fn schemathesis(p: &Proc, paths: &str, checks: &str) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let venv = pytools();
    let args = [
        "run",
        &p.url("/openapi.json"),
        "--url",
        &p.url(""),
        "--checks",
        checks,
        "--include-path-regex",
        paths,
        "--max-examples",
        MAX_EXAMPLES,
        "--seed",
        SEED,
        "--phases",
        "examples,coverage,fuzzing",
        // One worker: schemathesis 4.32's generator shares caches between workers and was seen
        // to fail with an internal KeyError under load with two.
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--no-shrink",
        "--continue-on-failure",
        "--suppress-health-check",
        "all",
    ];
    let started = std::time::Instant::now();
    let out = Command::new("timeout")
        .args(["--kill-after=5", &RUN_LIMIT.as_secs().to_string()])
        .arg(venv.join("bin/schemathesis"))
        .args(args)
        .env("NO_COLOR", "1")
        .current_dir(p.log.parent().unwrap())
        .output()
        .expect("run schemathesis");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "schemathesis {} ({:.0?}):\n{report}",
        args.join(" "),
        started.elapsed()
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "schemathesis found mismatches between openapi.json and the replica on {paths} \
         (exit {:?}; 124 = over {RUN_LIMIT:?}):\n{report}\nreplica log:\n{}",
        out.status.code(),
        p.log_tail()
    );
}

/// The paths of the document's operations in `group` (`x-route-group`).
fn group_paths(doc: &serde_json::Value, group: &str) -> Vec<String> {
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, item)| item["get"]["x-route-group"] == group)
        .map(|(p, _)| p.clone())
        .collect()
}

/// A regex matching exactly these paths (schemathesis matches templated paths as written).
fn exactly(paths: &[String]) -> String {
    let escaped: Vec<String> = paths
        .iter()
        .map(|p| {
            p.chars()
                .map(|c| match c {
                    '.' | '{' | '}' | '/' => format!("\\{c}"),
                    c => c.to_string(),
                })
                .collect()
        })
        .collect();
    format!("^({})$", escaped.join("|"))
}

/// Every path `configure()` in `src/api/mod.rs` registers, with `{...}` segments written `{}`:
/// each string literal that looks like a path, under each of the `for prefix in [...]` prefixes
/// when it is written `{prefix}/...`.
fn configured_paths() -> BTreeSet<String> {
    let src = std::fs::read_to_string(repo().join("src/api/mod.rs")).unwrap();
    // `configure()` wraps every route in one scope (CORS, gzip) and registers them in
    // `routes()`.
    let start = src
        .find("fn routes(cfg: &mut web::ServiceConfig)")
        .expect("src/api/mod.rs has routes()");
    // The function's body: up to the first line that closes it.
    let body = &src[start..start + src[start..].find("\n}\n").expect("routes() ends")];
    let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    // Routes registered elsewhere (a helper taking `cfg`, `cfg.configure(...)`) would escape
    // this scan: refuse them rather than pass without reading them.
    let known = [
        "cfg.app_data(",
        "cfg.route(",
        "cfg.service(",
        "cfg.default_service(",
    ];
    for (i, _) in compact.match_indices("cfg") {
        let at = &compact[i..];
        let read = compact[..i].ends_with("#[")
            || at.starts_with("cfg:&mut")
            || at.starts_with("cfg,")
            || known.iter().any(|k| at.starts_with(k));
        assert!(
            read,
            "routes() hands `cfg` on in a way this test cannot read: {}",
            &at[..at.len().min(60)]
        );
    }
    let prefixes: Vec<String> = compact
        .split_once("forprefixin[")
        .map(|(_, rest)| rest.split_once(']').unwrap().0)
        .map(|list| {
            list.split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.trim_matches('"').to_string())
                .collect()
        })
        .unwrap_or_default();
    // The prefixes themselves are not routes.
    let routes = match compact.split_once("forprefixin[") {
        Some((before, rest)) => format!("{before}{}", rest.split_once(']').unwrap().1),
        None => compact.clone(),
    };
    let mut out = BTreeSet::new();
    for literal in routes.split('"').skip(1).step_by(2) {
        if let Some(rest) = literal.strip_prefix("{prefix}") {
            assert!(!prefixes.is_empty(), "{{prefix}} outside the prefix loop");
            for prefix in &prefixes {
                out.insert(template(&format!("{prefix}{rest}")));
            }
        } else if literal.starts_with('/') {
            out.insert(template(literal));
        }
    }
    out
}

/// `{name}` and `{name:regex}` segments as `{}`.
fn template(path: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in path.chars() {
        match c {
            '{' => {
                if depth == 0 {
                    out.push_str("{}");
                }
                depth += 1;
            }
            '}' => depth -= 1,
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn the_document_is_valid_and_served_as_the_file() {
    let venv = pytools();
    let out = Command::new(venv.join("bin/openapi-spec-validator"))
        .arg(repo().join("openapi.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi.json is not a valid OpenAPI document:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(document()["openapi"], "3.1.0");

    let dir = tempfile::tempdir().unwrap();
    let p = replica(dir.path(), &[]).await;
    let resp = client().get(p.url("/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let served = resp.text().await.unwrap();
    let file = std::fs::read_to_string(repo().join("openapi.json")).unwrap();
    assert!(served == file, "/openapi.json differs from openapi.json");
}

#[test]
fn every_configured_route_is_documented() {
    let configured = configured_paths();
    // The parse itself: the routes every build has must be among what it found.
    for known in [
        "/model/allocation",
        "/allocation",
        "/metrics",
        "/",
        "/openapi.json",
    ] {
        assert!(
            configured.contains(known),
            "the scan of configure() missed {known}: {configured:?}"
        );
    }
    let documented: BTreeSet<String> = document()["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(|p| template(p))
        .collect();
    let undocumented: Vec<&String> = configured
        .iter()
        .filter(|p| !documented.contains(*p) && !UNDOCUMENTED.iter().any(|(u, _)| u == p))
        .collect();
    assert!(
        undocumented.is_empty(),
        "configure() registers routes openapi.json does not describe: {undocumented:?}"
    );
    // Every documented route answers GET and HEAD and nothing else.
    for (path, item) in document()["paths"].as_object().unwrap() {
        let methods: BTreeSet<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            methods,
            BTreeSet::from(["get", "head"]),
            "{path}: the replica answers GET and HEAD"
        );
    }
}

/// Every documented path of `group` answers something other than a 404 on the real binary.
async fn group_routes_exist(p: &Proc, group: &str) {
    let doc = document();
    let paths = group_paths(&doc, group);
    assert!(!paths.is_empty(), "no route in group {group}");
    for path in paths {
        let url = p.url(
            &path
                .replace("{rest}", "status")
                .replace("{kind}", "allocation"),
        ) + "?window=1d";
        let resp = client().get(&url).send().await.unwrap();
        assert_ne!(resp.status(), 404, "{path} is documented but not served");
    }
}

#[tokio::test]
async fn core_routes_all_exist() {
    let dir = tempfile::tempdir().unwrap();
    let p = replica(dir.path(), &[]).await;
    group_routes_exist(&p, "core").await;
}

#[tokio::test]
async fn schemathesis_core_routes_kubecost_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let p = replica(dir.path(), &[]).await;
    schemathesis(&p, &exactly(&group_paths(&document(), "core")), CHECKS);
}

#[tokio::test]
async fn schemathesis_core_routes_opencost_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let p = replica(dir.path(), &["--api-defaults", "opencost"]).await;
    schemathesis(&p, &exactly(&group_paths(&document(), "core")), CHECKS);
}

// The groups added together with this document, one test each.

#[tokio::test]
async fn group_compute_allocation_compute() {
    let dir = tempfile::tempdir().unwrap();
    let p = replica(dir.path(), &[]).await;
    group_routes_exist(&p, "compute").await;
    schemathesis(&p, &exactly(&group_paths(&document(), "compute")), CHECKS);
}

#[tokio::test]
async fn group_clusterinfo_cluster_info() {
    let dir = tempfile::tempdir().unwrap();
    let p = replica(dir.path(), &[]).await;
    group_routes_exist(&p, "clusterinfo").await;
    schemathesis(
        &p,
        &exactly(&group_paths(&document(), "clusterinfo")),
        CHECKS,
    );
}

#[tokio::test]
async fn group_cloudcost_answers_not_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let p = replica(dir.path(), &[]).await;
    for path in [
        "/model/cloudCost?window=7d&aggregate=service&accumulate=day",
        "/cloudCost",
        "/model/cloudCost/view/graph",
    ] {
        let resp = client().get(p.url(path)).send().await.unwrap();
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["status"], "not enabled", "{path}: {body}");
        assert!(body.get("data").is_none(), "no data, never zeros: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("cloud costs are not enabled in this build"),
            "{path}: {body}"
        );
    }
    schemathesis(&p, &exactly(&group_paths(&document(), "cloudcost")), CHECKS);
}

#[tokio::test]
async fn group_metrics_alias_model_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let p = replica(dir.path(), &[]).await;
    group_routes_exist(&p, "metrics-alias").await;
    schemathesis(
        &p,
        &exactly(&group_paths(&document(), "metrics-alias")),
        CHECKS,
    );
}

#[tokio::test]
async fn group_csv_format_csv() {
    let dir = tempfile::tempdir().unwrap();
    let p = replica(dir.path(), &[]).await;
    for path in [
        "/model/allocation?window=2d&aggregate=namespace&accumulate=true&format=csv",
        "/assets?window=2d&accumulate=true&format=csv",
    ] {
        let resp = client().get(p.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
        let body = resp.text().await.unwrap();
        assert!(
            ctype.starts_with("text/csv"),
            "{path}: content-type {ctype}, body starts {:?}",
            &body[..body.len().min(80)]
        );
        assert!(body.lines().count() > 1, "{path}: a header and rows");
    }
}
