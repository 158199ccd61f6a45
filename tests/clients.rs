//! Real clients against the real binary: the PyPI MCP server `ct-kubecost-mcp-server` (tools for
//! LLM clients over Kubecost's API), started over stdio by the Python `mcp` client SDK from
//! `tests/clients/mcp_driver.py`, with Kubecost's `/model` prefix and with bare routes.
//!
//! The server probes `allocation?window=1h&aggregate=namespace&accumulate=true` at start and
//! refuses to start on anything but 2xx; then every tool is listed and called. The cloud-cost
//! tool has its own test: it needs `/cloudCost`, added together with this test.
//!
//! kubectl-cost is not tested: see the README's "API contract".

mod proc;
mod pytools;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use proc::{Proc, spawn, wait_for};
use serde_json::{Value, json};

/// The most one driver run (server start, listing, every call) may take.
const DRIVER_LIMIT: Duration = Duration::from_secs(120);

/// The tools ct-kubecost-mcp-server 0.2.0 serves (read from its source).
const TOOLS: &[&str] = &[
    "get_allocation",
    "get_assets",
    "get_cloud_cost",
    "get_efficiency",
    "health",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv of `scripts/pytools`.
fn pytools() -> &'static Path {
    pytools::venv(&["ct-kubecost-mcp-server"])
}

/// A standalone replica on the embedded demo cluster (two days of data), ready to answer.
async fn replica(dir: &Path) -> Proc {
    let bucket = dir.join("bucket");
    let p = spawn(
        dir,
        "replica",
        &[
            "--election",
            "standalone",
            "--demo-pods",
            "30",
            "--demo-seed",
            "5",
            "--backfill",
            "2d",
            "--bucket-dir",
            bucket.to_str().unwrap(),
        ],
    );
    let client = reqwest::Client::new();
    wait_for(&p, &client, "/readyz", |s, _| s == 200).await;
    p
}

/// What the driver reports: the tools listed and each call's result.
struct Session {
    tools: Vec<String>,
    calls: Vec<Value>,
}

/// Starts the MCP server on `p` with `prefix` through the driver, and makes `calls`.
fn drive(p: &Proc, prefix: &str, calls: &Value) -> Session {
    let venv = pytools();
    let out = Command::new("timeout")
        .args(["--kill-after=5", &DRIVER_LIMIT.as_secs().to_string()])
        .arg(venv.join("bin/python"))
        .arg(repo().join("tests/clients/mcp_driver.py"))
        .arg(venv.join("bin/ct-kubecost-mcp-server"))
        .arg(calls.to_string())
        .env("KUBECOST_URL", p.url(""))
        .env("KUBECOST_API_PREFIX", prefix)
        .output()
        .expect("run the MCP driver");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the MCP driver failed (exit {:?}; 124 = over {DRIVER_LIMIT:?}), prefix {prefix:?}:\n{stderr}\nreplica log:\n{}",
        out.status.code(),
        p.log_tail()
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("the driver prints JSON");
    Session {
        tools: report["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect(),
        calls: report["calls"].as_array().unwrap().clone(),
    }
}

/// A successful call's answer: the tool's return value, which the server sends as JSON text.
fn answer(call: &Value) -> Value {
    assert_eq!(call["isError"], false, "{} failed: {call}", call["tool"]);
    let text = call["texts"][0].as_str().expect("a text answer");
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{}: {e}: {text}", call["tool"]))
}

/// Every tool but the cloud-cost one, with `prefix`: each answers with data from the replica.
async fn every_tool_answers(prefix: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p = replica(dir.path()).await;
    let calls = json!([
        ["health", {}],
        ["get_allocation", {"window": "2d", "aggregate": "namespace", "accumulate": true, "include_idle": true}],
        ["get_allocation", {"window": "2d", "aggregate": "controllerKind", "accumulate": false, "step": "1d", "share_idle": true}],
        ["get_assets", {"window": "2d", "aggregate": "type", "accumulate": true}],
        ["get_efficiency", {"window": "2d", "aggregate": "namespace", "top": 5, "headroom": 0.2}],
    ]);
    let s = drive(&p, prefix, &calls);
    let mut listed = s.tools.clone();
    listed.sort();
    assert_eq!(listed, TOOLS, "the tools the server lists");

    let health = answer(&s.calls[0]);
    assert_eq!(health["ok"], true, "{health}");
    assert_eq!(health["status_code"], 200, "{health}");
    assert_eq!(health["has_allocation_data"], true, "{health}");

    // Accumulated: one set, keyed by namespace, with idle.
    let alloc = answer(&s.calls[1]);
    let sets = alloc
        .as_array()
        .expect("allocation data is an array of sets");
    assert_eq!(sets.len(), 1, "accumulate=true: {alloc}");
    let set = sets[0].as_object().unwrap();
    assert!(
        set.contains_key("__idle__"),
        "include_idle: {:?}",
        set.keys()
    );
    assert!(set.len() > 2, "namespaces: {:?}", set.keys());
    assert!(set.values().all(|a| a["totalCost"].as_f64().is_some()));

    // Stepped by day: more than one set over a two-day window.
    let stepped = answer(&s.calls[2]);
    assert!(
        stepped.as_array().is_some_and(|s| s.len() >= 2),
        "step=1d over 2d: {stepped}"
    );

    let assets = answer(&s.calls[3]);
    let sets = assets.as_array().expect("asset data is an array of sets");
    assert!(
        sets[0].as_object().unwrap().contains_key("Node"),
        "aggregate=type: {assets}"
    );

    let eff = answer(&s.calls[4]);
    assert!(eff["count"].as_u64().unwrap() > 2, "{eff}");
    let items = eff["items"].as_array().unwrap();
    assert!(!items.is_empty() && items.len() <= 5, "top=5: {eff}");
    assert!(items[0]["recommendedCpuRequestCores"].as_f64().is_some());
}

#[tokio::test]
async fn mcp_server_every_tool_with_model_prefix() {
    every_tool_answers("/model").await;
}

#[tokio::test]
async fn mcp_server_every_tool_with_bare_routes() {
    every_tool_answers("").await;
}

/// The cloud-cost tool with `prefix`: the replica's "not enabled" answer reaches the client
/// as the tool's result (the server raises on any error status without reading the body, which
/// is why the replica answers 200 with a message and no data).
async fn cloud_cost_not_enabled(prefix: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p = replica(dir.path()).await;
    let calls =
        json!([["get_cloud_cost", {"window": "7d", "aggregate": "service", "accumulate": "day"}]]);
    let s = drive(&p, prefix, &calls);
    let call = &s.calls[0];
    assert_ne!(call["isError"], true, "{call}");
    let text = call["texts"][0].as_str().unwrap();
    assert!(
        text.contains("cloud costs are not enabled in this build"),
        "the tool relays the replica's answer: {text}"
    );
}

#[tokio::test]
async fn mcp_cloud_cost_tool_not_enabled_with_model_prefix() {
    cloud_cost_not_enabled("/model").await;
}

#[tokio::test]
async fn mcp_cloud_cost_tool_not_enabled_with_bare_routes() {
    cloud_cost_not_enabled("").await;
}
