//! `/model/assets` over HTTP (`actix_web::test`) on a standalone replica with the demo cluster:
//! aggregation that keeps no single member's identity and adds capacities up, v2 filters over
//! asset fields, 400s naming a wrong field, OpenCost's one-map shape, and the CSV export.

mod support;

use std::sync::Arc;

use actix_web::{App, test, web};
use cost_model::api;
use cost_model::query::Dialect;
use object_store::memory::InMemory;
use serde_json::{Map, Value};
use support::{node_with, until};

macro_rules! service {
    ($n:expr) => {
        test::init_service(
            App::new()
                .app_data(web::Data::new($n.replica.state.clone()))
                .configure(api::configure),
        )
        .await
    };
}

/// Status and body of a GET.
macro_rules! get {
    ($svc:expr, $uri:expr) => {{
        let uri: String = $uri.into();
        let resp = test::call_service(&$svc, test::TestRequest::get().uri(&uri).to_request()).await;
        let status = resp.status().as_u16();
        (status, test::read_body(resp).await)
    }};
}

/// Status and JSON body of a GET.
macro_rules! get_json {
    ($svc:expr, $uri:expr) => {{
        let (status, body) = get!($svc, $uri);
        let json: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)));
        (status, json)
    }};
}

/// A leader that has built the demo cluster's sets, answering in `dialect`.
async fn leader(dialect: Dialect) -> support::Node {
    let n = node_with("assets", Arc::new(InMemory::new()), |p| {
        p.limits.dialect = dialect
    });
    n.lead(1).await;
    until("a day is built", || async {
        let s = n
            .replica
            .storage
            .send(cost_model::storage::CurrentSnapshot)
            .await
            .unwrap();
        s.allocations.len() > 10 && !s.assets.is_empty()
    })
    .await;
    n
}

/// The only set of an accumulated Kubecost answer.
fn only_set(body: &Value) -> Map<String, Value> {
    let sets = body["data"].as_array().expect("data is an array of sets");
    assert_eq!(sets.len(), 1, "accumulate=true gives one set");
    sets[0].as_object().unwrap().clone()
}

fn num(a: &Value, field: &str) -> f64 {
    a[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number in {a}"))
}

fn sum<'a>(assets: impl Iterator<Item = &'a Value>, field: &str) -> f64 {
    assets.map(|a| num(a, field)).sum()
}

/// Within the rounding of the JSON (5 decimals per value, summed over the demo's assets).
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-3
}

const ALL: &str = "/model/assets?window=1d&accumulate=true";

#[actix_web::test]
async fn aggregating_by_type_adds_capacity_up_and_keeps_no_single_nodes_identity() {
    let n = leader(Dialect::Kubecost).await;
    let svc = service!(n);
    let (status, all) = get_json!(svc, ALL);
    assert_eq!(status, 200);
    let all = only_set(&all);
    let nodes: Vec<&Value> = all.values().filter(|a| a["type"] == "Node").collect();
    assert!(nodes.len() >= 3, "the demo cluster has several nodes");
    let cores = sum(nodes.iter().copied(), "cpuCores");
    let ram = sum(nodes.iter().copied(), "ramBytes");
    let cost = sum(nodes.iter().copied(), "totalCost");

    let (status, by_type) = get_json!(svc, format!("{ALL}&aggregate=type"));
    assert_eq!(status, 200);
    let by_type = only_set(&by_type);
    let node = &by_type["Node"];
    assert_eq!(node["type"], "Node");
    assert!(
        close(num(node, "cpuCores"), cores),
        "{} cores aggregated, {cores} over the nodes",
        num(node, "cpuCores")
    );
    assert!(
        num(node, "cpuCores") > num(nodes[0], "cpuCores"),
        "more than one node's cores"
    );
    assert!((num(node, "ramBytes") - ram).abs() / ram < 1e-9);
    assert!(close(num(node, "totalCost"), cost));
    for member in &nodes {
        for field in ["name", "providerID"] {
            assert_ne!(
                node["properties"][field], member["properties"][field],
                "the aggregate carries {}'s {field}",
                member["properties"]["name"]
            );
        }
    }
    assert_eq!(node["properties"]["name"], "");
    assert_eq!(node["properties"]["providerID"], "");
    assert_eq!(
        node["properties"]["cluster"], "cluster-one",
        "what every node shares is kept"
    );
    let total_by_type: f64 = by_type.values().map(|a| num(a, "totalCost")).sum();
    let total_all: f64 = all.values().map(|a| num(a, "totalCost")).sum();
    assert!(close(total_by_type, total_all));
}

#[actix_web::test]
async fn filters_keep_only_matching_assets_and_their_totals() {
    let n = leader(Dialect::Kubecost).await;
    let svc = service!(n);
    let (_, all) = get_json!(svc, ALL);
    let all = only_set(&all);
    let node_total = sum(all.values().filter(|a| a["type"] == "Node"), "totalCost");
    let node_count = all.values().filter(|a| a["type"] == "Node").count();
    let not_disk_total = sum(all.values().filter(|a| a["type"] != "Disk"), "totalCost");
    assert!(all.values().any(|a| a["type"] == "Disk"));

    let (status, nodes) = get_json!(svc, format!("{ALL}&filter=assetType%3A%22Node%22"));
    assert_eq!(status, 200);
    let nodes = only_set(&nodes);
    assert_eq!(nodes.len(), node_count);
    assert!(nodes.values().all(|a| a["type"] == "Node"));
    assert!(close(sum(nodes.values(), "totalCost"), node_total));

    let (status, lower) = get_json!(svc, format!("{ALL}&filter=assetType%3A%22node%22"));
    assert_eq!(status, 200);
    assert_eq!(
        only_set(&lower).len(),
        node_count,
        "assetType compares without case, as controllerKind does"
    );

    let (status, some) = get_json!(
        svc,
        format!("{ALL}&filter=cluster%3A%22cluster-one%22%2BassetType!%3A%22Disk%22")
    );
    assert_eq!(status, 200);
    let some = only_set(&some);
    assert!(!some.is_empty());
    assert!(
        some.values()
            .all(|a| a["type"] != "Disk" && a["properties"]["cluster"] == "cluster-one")
    );
    assert!(close(sum(some.values(), "totalCost"), not_disk_total));

    let (status, none) = get_json!(svc, format!("{ALL}&filter=cluster%3A%22cluster-two%22"));
    assert_eq!(status, 200);
    assert!(only_set(&none).is_empty());
}

#[actix_web::test]
async fn a_wrong_filter_field_or_format_is_a_400_naming_it_and_v1_filters_warn() {
    let n = leader(Dialect::Kubecost).await;
    let svc = service!(n);
    for (query, param, needles) in [
        (
            "filter=namespace%3A%22kube-system%22",
            "filter",
            &["\"namespace\"", "allocations", "assetType", "providerID"][..],
        ),
        (
            "filter=nmae%3A%22n1%22",
            "filter",
            &["\"nmae\"", "assetType"][..],
        ),
        ("filter=label%3A%22a%22", "filter", &["needs a key"][..]),
        ("format=pdf", "format", &["\"pdf\"", "csv"][..]),
        ("aggregate=namespace", "aggregate", &["\"namespace\""][..]),
        ("disableAdjustments=maybe", "disableAdjustments", &[][..]),
    ] {
        let (status, body) = get_json!(svc, format!("{ALL}&{query}"));
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["code"], 400, "{query}");
        let msg = body["message"].as_str().unwrap();
        assert!(msg.starts_with(&format!("{param}:")), "{query}: {msg}");
        for needle in needles {
            assert!(msg.contains(needle), "{query}: {msg} lacks {needle}");
        }
    }
    let (status, body) = get_json!(svc, format!("{ALL}&filterClusters=cluster-two"));
    assert_eq!(status, 200);
    let warning = body["warning"].as_str().expect("a warning");
    assert!(
        warning.contains("filterClusters") && warning.contains("not supported"),
        "{warning}"
    );
    assert!(!only_set(&body).is_empty(), "the v1 filter was not applied");
}

#[actix_web::test]
async fn the_opencost_dialect_answers_one_map_unless_asked_for_sets() {
    let n = leader(Dialect::Opencost).await;
    let svc = service!(n);
    let (status, body) = get_json!(svc, "/model/assets?window=1d");
    assert_eq!(status, 200);
    assert_eq!(body["code"], 200);
    assert_eq!(body["status"], "success");
    let map = body["data"].as_object().expect("data is one asset map");
    assert!(map.values().any(|a| a["type"] == "Node"));
    assert!(map.values().all(|a| a["totalCost"].is_number()));

    let (_, by_type) = get_json!(svc, "/assets?window=1d&aggregate=type");
    assert!(by_type["data"]["Node"].is_object(), "{by_type}");

    let (status, sets) = get_json!(svc, "/model/assets?window=1d&accumulate=false");
    assert_eq!(status, 200);
    assert!(
        sets["data"].is_array(),
        "an explicit accumulate=false keeps the array"
    );
}

#[actix_web::test]
async fn csv_has_one_header_and_one_row_per_asset_per_set() {
    let n = leader(Dialect::Kubecost).await;
    let svc = service!(n);
    let (_, all) = get_json!(svc, ALL);
    let count = only_set(&all).len();
    let (status, body) = get!(svc, format!("{ALL}&format=csv"));
    assert_eq!(status, 200);
    let text = String::from_utf8(body.to_vec()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], api::csv::ASSET_HEADER.join(","));
    assert_eq!(lines.len(), 1 + count, "one row per asset");
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.split(',').count() == api::csv::ASSET_HEADER.len()),
        "no demo field needs quoting, so every row splits into the header's columns"
    );

    let (status, body) = get!(svc, format!("{ALL}&format=csv&aggregate=type"));
    assert_eq!(status, 200);
    let text = String::from_utf8(body.to_vec()).unwrap();
    let types: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(3).unwrap())
        .collect();
    let mut distinct = types.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(types.len(), distinct.len(), "one row per type: {types:?}");
    assert!(types.contains(&"Node") && types.contains(&"Disk"));
}
