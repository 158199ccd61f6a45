//! The HTTP contract, through `actix_web::test` on a standalone replica over an in-memory
//! bucket: both route spellings, the Kubecost envelope and field order, parameter aliases, and
//! 400s that name the parameter.

mod support;

use std::sync::Arc;

use actix_web::{App, test, web};
use cost_model::api;
use object_store::memory::InMemory;
use support::{node, until};

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

async fn leader() -> support::Node {
    let n = node("api", Arc::new(InMemory::new()));
    n.lead(1).await;
    until("a day is built", || async {
        n.replica
            .storage
            .send(cost_model::storage::CurrentSnapshot)
            .await
            .unwrap()
            .allocations
            .len()
            > 10
    })
    .await;
    n
}

#[actix_web::test]
async fn bad_parameters_get_400_naming_the_parameter() {
    let n = leader().await;
    let svc = service!(n);
    for (query, param) in [
        ("", "window"),
        ("window=7x", "window"),
        ("window=2026-11-22T00:00:00Z,2026-11-20T00:00:00Z", "window"),
        ("window=1d&aggregate=nmespace", "aggregate"),
        ("window=1d&accumulate=sometimes", "accumulate"),
        ("window=1d&idle=perhaps", "idle"),
        ("window=1d&shareIdle=2", "shareIdle"),
        ("window=1d&step=5m", "step"),
        ("window=1d&limit=-1", "limit"),
        ("window=1d&filter=namespace%3D%22a%22", "filter"),
        ("window=1d&filter=nmespace%3A%22a%22", "filter"),
        // The reproductions of the hardening issue, as clients send them (`+` is a space).
        ("window=1d&aggregate=label:", "aggregate"),
        ("window=1d&aggregate=annotation:", "aggregate"),
        ("window=1d&filter=label[]:%22a%22", "filter"),
        ("window=1d&filter=namespace:'a'", "filter"),
        ("window=1d&filter=namespace:a", "filter"),
        ("window=1d&step=+1h", "step"),
        ("window=1d&step=%2B1h", "step"),
        ("window=1d&offset=+1", "offset"),
        ("window=1d&limit=%2B1", "limit"),
    ] {
        let resp = test::call_service(
            &svc,
            test::TestRequest::get()
                .uri(&format!("/model/allocation?{query}"))
                .to_request(),
        )
        .await;
        assert_eq!(resp.status(), 400, "{query}");
        let body: serde_json::Value = test::read_body_json(resp).await;
        assert_eq!(body["code"], 400, "{query}");
        let msg = body["message"].as_str().unwrap();
        assert!(msg.starts_with(&format!("{param}:")), "{query}: {msg}");
    }
}

#[actix_web::test]
async fn both_spellings_answer_the_kubecost_envelope_in_opencost_field_order() {
    let n = leader().await;
    let svc = service!(n);
    let mut bodies = Vec::new();
    for prefix in ["/model", ""] {
        let uri = format!("{prefix}/allocation?window=1d&aggregate=namespace&accumulate=true");
        let resp = test::call_service(&svc, test::TestRequest::get().uri(&uri).to_request()).await;
        assert_eq!(resp.status(), 200, "{uri}");
        bodies.push(test::read_body(resp).await);
    }
    let text = std::str::from_utf8(&bodies[0]).unwrap();
    assert!(
        text.starts_with(r#"{"code":200,"status":"success","data":[{"#),
        "{}",
        &text[..80]
    );
    let first = text.find(r#""cpuCores""#).unwrap();
    let order = [
        "name",
        "properties",
        "window",
        "start",
        "end",
        "minutes",
        "cpuCores",
        "cpuCoreRequestAverage",
        "cpuCost",
        "gpuCount",
        "networkCost",
        "loadBalancerCost",
        "pvBytes",
        "pvCost",
        "ramBytes",
        "ramCost",
        "externalCost",
        "sharedCost",
        "totalCost",
        "totalEfficiency",
    ];
    let set = &text[text.find(r#""name""#).unwrap()..];
    let mut last = 0;
    for f in order {
        let at = set
            .find(&format!("\"{f}\""))
            .unwrap_or_else(|| panic!("{f} missing"));
        assert!(at >= last, "{f} out of order");
        last = at;
    }
    assert!(first > 0);
    let body: serde_json::Value = serde_json::from_slice(&bodies[1]).unwrap();
    let set = body["data"][0].as_object().unwrap();
    assert!(
        set.contains_key("__idle__"),
        "idle is on by default, as Kubecost"
    );
    assert_eq!(set["frontend"]["properties"]["namespace"], "frontend");
    // Every float has at most 5 decimals.
    let cost = set["frontend"]["totalCost"].as_f64().unwrap();
    assert!(((cost * 1e5).round() - cost * 1e5).abs() < 1e-6);
}

#[actix_web::test]
async fn aliases_filters_paging_and_idle_sharing() {
    let n = leader().await;
    let svc = service!(n);
    let get = |uri: String| {
        let svc = &svc;
        async move {
            let resp =
                test::call_service(svc, test::TestRequest::get().uri(&uri).to_request()).await;
            assert_eq!(resp.status(), 200, "{uri}");
            test::read_body_json::<serde_json::Value, _>(resp).await
        }
    };
    let set = |b: &serde_json::Value| b["data"][0].as_object().unwrap().clone();
    let total = |b: &serde_json::Value| {
        set(b)
            .values()
            .map(|a| a["totalCost"].as_f64().unwrap())
            .sum::<f64>()
    };

    let no_idle = get("/model/allocation?window=1d&aggregate=namespace&accumulate=true&includeIdle=false&unknownParam=1".into()).await;
    assert!(!set(&no_idle).contains_key("__idle__"));
    let with_idle =
        get("/model/allocation?window=1d&aggregate=namespace&accumulate=true".into()).await;
    let shared = get(
        "/model/allocation?window=1d&aggregate=namespace&accumulate=true&shareIdle=true".into(),
    )
    .await;
    assert!(!set(&shared).contains_key("__idle__"));
    assert!(
        (total(&shared) - total(&with_idle)).abs() < 1e-3,
        "sharing idle keeps the total"
    );

    let f = get(r#"/model/allocation?window=1d&aggregate=namespace&accumulate=true&idle=false&filter=namespace%3A%22frontend%22%2C%22data%22"#.into()).await;
    let mut keys: Vec<_> = set(&f).keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["data", "frontend"]);
    let neg = get(r#"/model/allocation?window=1d&aggregate=namespace&accumulate=true&idle=false&filter=namespace!%3A%22frontend%22"#.into()).await;
    assert!(!set(&neg).contains_key("frontend") && set(&neg).len() >= 4);
    let label = get(r#"/model/allocation?window=1d&aggregate=label:app&accumulate=true&idle=false&filter=label%5Bteam%5D%3A%22platform%22"#.into()).await;
    let mut apps: Vec<_> = set(&label).keys().cloned().collect();
    apps.sort();
    assert_eq!(apps, ["api", "auth", "worker"]);

    let page = get("/model/allocation?window=1d&aggregate=namespace&accumulate=true&idle=false&offset=1&limit=2".into()).await;
    let all =
        get("/model/allocation?window=1d&aggregate=namespace&accumulate=true&idle=false".into())
            .await;
    let mut ranked: Vec<(String, f64)> = set(&all)
        .iter()
        .map(|(k, v)| (k.clone(), v["totalCost"].as_f64().unwrap()))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut paged: Vec<_> = set(&page).keys().cloned().collect();
    paged.sort();
    let mut want: Vec<_> = ranked[1..3].iter().map(|(k, _)| k.clone()).collect();
    want.sort();
    assert_eq!(paged, want, "offset/limit page by total cost, descending");

    let hourly =
        get("/model/allocation?window=24h&aggregate=cluster&accumulate=false".into()).await;
    assert!(
        hourly["data"].as_array().unwrap().len() >= 20,
        "24h gives hourly sets"
    );
    let summary = get("/model/allocation/summary?window=1d&aggregate=namespace".into()).await;
    assert!(
        summary["data"]["sets"][0]["allocations"]["frontend"]["totalCost"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let assets = get("/model/assets?window=1d&aggregate=type&accumulate=true".into()).await;
    assert!(set(&assets).contains_key("Node") && set(&assets).contains_key("Disk"));
}

#[actix_web::test]
async fn status_endpoints_probes_and_page() {
    let n = leader().await;
    let svc = service!(n);
    let resp = test::call_service(
        &svc,
        test::TestRequest::get()
            .uri("/model/ha/status")
            .to_request(),
    )
    .await;
    let ha: serde_json::Value = test::read_body_json(resp).await;
    assert_eq!(ha["identity"], "api");
    assert_eq!(ha["role"], "leader");
    assert_eq!(ha["term"], 1);
    assert_eq!(ha["writesEnabled"], true);
    assert!(ha["snapshotGeneration"].as_u64().unwrap() >= 1);
    assert!(ha["dataAgeSeconds"].as_f64().is_some());
    let etl: serde_json::Value = test::read_body_json(
        test::call_service(
            &svc,
            test::TestRequest::get().uri("/etl/status").to_request(),
        )
        .await,
    )
    .await;
    assert!(etl["data"]["coverage"].as_array().unwrap().len() >= 2);
    for probe in ["/healthz", "/readyz", "/model/healthz"] {
        assert_eq!(
            test::call_service(&svc, test::TestRequest::get().uri(probe).to_request())
                .await
                .status(),
            200,
            "{probe}"
        );
    }
    let metrics = test::read_body(
        test::call_service(&svc, test::TestRequest::get().uri("/metrics").to_request()).await,
    )
    .await;
    let metrics = std::str::from_utf8(&metrics).unwrap();
    assert!(
        metrics.contains("costmodel_is_leader 1") && metrics.contains("costmodel_writes_enabled 1"),
        "{metrics}"
    );
    let page = test::read_body(
        test::call_service(&svc, test::TestRequest::get().uri("/").to_request()).await,
    )
    .await;
    assert!(
        std::str::from_utf8(&page)
            .unwrap()
            .contains("model/ha/status")
    );
}
