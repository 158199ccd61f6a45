//! The Prometheus harness itself (tests/prom): a small synthetic cluster loaded into real
//! Prometheus 3 and 2.42 servers has every series it should, values come back as written, the
//! two versions' range selectors differ as documented (so both really run), and the fault proxy
//! passes, fails and delays requests as told.

mod prom;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use prom::cluster::{
    Claim, Cluster, Container, Egress, EgressPrices, GIB, LoadBalancer, Namespace, Node, Owner,
    Pod, Pv,
};
use prom::{FaultProxy, Mode, PromServer, PromVersion};

/// The two hours ending at the last whole hour before a day ago: recent, so no retention
/// drops it, and whole hours, so the sample times are round.
fn span() -> (DateTime<Utc>, DateTime<Utc>) {
    let end = (Utc::now() - TimeDelta::days(1))
        .duration_trunc(TimeDelta::hours(1))
        .expect("truncate to the hour");
    (end - TimeDelta::hours(2), end)
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn container(name: &str, cpu: f64, ram_gib: f64) -> Container {
    Container {
        name: name.into(),
        cpu_request: cpu,
        cpu_limit: 0.0,
        cpu_usage: cpu * 0.75,
        ram_request: ram_gib * GIB,
        ram_limit: 2.0 * ram_gib * GIB,
        ram_usage: ram_gib * 0.5 * GIB,
        ..Default::default()
    }
}

/// Three nodes (one spot with a GPU that leaves after an hour, one without prices), six pod
/// runs (one pod moving node), two volumes, one load balancer, every cluster-level price.
fn cluster() -> Cluster {
    let (start, end) = span();
    let half = start + TimeDelta::hours(1);
    Cluster {
        start,
        end,
        nodes: vec![
            Node {
                name: "node-a".into(),
                instance_type: "m5.xlarge".into(),
                region: "us-east-1".into(),
                zone: "us-east-1a".into(),
                provider_id: "aws:///us-east-1a/i-0a".into(),
                cpu_cores: 4.0,
                ram_bytes: 16.0 * GIB,
                cpu_hourly: Some(0.031611),
                ram_hourly: Some(0.004237),
                labels: kv(&[("team", "platform")]),
                ..Default::default()
            },
            Node {
                name: "node-b".into(),
                instance_type: "g4dn.xlarge".into(),
                region: "us-east-1".into(),
                zone: "us-east-1b".into(),
                provider_id: "aws:///us-east-1b/i-0b".into(),
                cpu_cores: 4.0,
                ram_bytes: 16.0 * GIB,
                gpus: 1.0,
                spot: true,
                cpu_hourly: Some(0.02),
                ram_hourly: Some(0.003),
                gpu_hourly: Some(0.5),
                end: half,
                ..Default::default()
            },
            Node {
                name: "node-c".into(),
                instance_type: "e2-standard-2".into(),
                region: "us-east-1".into(),
                zone: "us-east-1a".into(),
                provider_id: "aws:///us-east-1a/i-0c".into(),
                arch: "arm64".into(),
                cpu_cores: 2.0,
                ram_bytes: 8.0 * GIB,
                ..Default::default()
            },
        ],
        namespaces: vec![
            Namespace {
                name: "shop".into(),
                labels: kv(&[("team", "web"), ("app.kubernetes.io/part-of", "shop")]),
                annotations: kv(&[("owner", "a \"quoted\" \\ value")]),
            },
            Namespace {
                name: "ml".into(),
                ..Default::default()
            },
        ],
        pods: vec![
            Pod {
                namespace: "shop".into(),
                name: "web-7d4-x1".into(),
                uid: "uid-web".into(),
                node: "node-a".into(),
                owner: Owner::ReplicaSet {
                    replicaset: "web-7d4".into(),
                    deployment: Some("web".into()),
                },
                labels: kv(&[("app", "web"), ("app.kubernetes.io/name", "web")]),
                annotations: kv(&[("prometheus.io/scrape", "true")]),
                containers: vec![container("app", 0.5, 1.0), container("sidecar", 0.1, 0.125)],
                egress: Egress {
                    internet_bytes_per_hour: 3600.0 * 1000.0,
                    cross_zone_bytes_per_hour: 3600.0 * 10.0,
                    cross_region_bytes_per_hour: 3600.0 * 1.0,
                },
                ..Default::default()
            },
            // db-0 moves from node-a to node-c at the half hour.
            Pod {
                namespace: "shop".into(),
                name: "db-0".into(),
                uid: "uid-db-1".into(),
                node: "node-a".into(),
                owner: Owner::StatefulSet("db".into()),
                containers: vec![container("postgres", 1.0, 4.0)],
                pvcs: vec!["data-db-0".into()],
                end: half,
                ..Default::default()
            },
            Pod {
                namespace: "shop".into(),
                name: "db-0".into(),
                uid: "uid-db-2".into(),
                node: "node-c".into(),
                owner: Owner::StatefulSet("db".into()),
                containers: vec![container("postgres", 1.0, 4.0)],
                pvcs: vec!["data-db-0".into()],
                start: half,
                ..Default::default()
            },
            Pod {
                namespace: "ml".into(),
                name: "train-29".into(),
                uid: "uid-train".into(),
                node: "node-b".into(),
                owner: Owner::Job {
                    job: "train-29".into(),
                    cronjob: Some("train".into()),
                },
                containers: vec![Container {
                    gpu_request: 1.0,
                    gpu_usage: 0.8,
                    ..container("trainer", 2.0, 8.0)
                }],
                end: half,
                ..Default::default()
            },
            Pod {
                namespace: "kube-system".into(),
                name: "logs-abcde".into(),
                uid: "uid-logs".into(),
                node: "node-a".into(),
                owner: Owner::DaemonSet("logs".into()),
                containers: vec![container("fluent-bit", 0.05, 0.0625)],
                ..Default::default()
            },
            // No owner, started off the scrape grid (30 s past the half hour).
            Pod {
                namespace: "shop".into(),
                name: "debug".into(),
                uid: "uid-debug".into(),
                node: "node-c".into(),
                containers: vec![Container {
                    name: "shell".into(),
                    cpu_usage: 0.01,
                    ram_usage: 1e6,
                    ..Default::default()
                }],
                start: half + TimeDelta::seconds(30),
                ..Default::default()
            },
            Pod {
                namespace: "shop".into(),
                name: "orphan-rs-q".into(),
                uid: "uid-orphan".into(),
                node: "node-c".into(),
                owner: Owner::ReplicaSet {
                    replicaset: "orphan-rs".into(),
                    deployment: None,
                },
                containers: vec![container("app", 0.1, 0.25)],
                ..Default::default()
            },
        ],
        pvs: vec![
            Pv {
                name: "pvc-1234".into(),
                storage_class: "gp3".into(),
                bytes: 20.0 * GIB,
                hourly_per_gib: Some(0.08 / 730.0),
                provider_id: "vol-0123".into(),
                claim: Some(Claim {
                    namespace: "shop".into(),
                    name: "data-db-0".into(),
                    request_bytes: 20.0 * GIB,
                }),
                ..Default::default()
            },
            Pv {
                name: "pv-released".into(),
                storage_class: "standard".into(),
                bytes: 5.0 * GIB,
                provider_id: "vol-0456".into(),
                ..Default::default()
            },
        ],
        load_balancers: vec![LoadBalancer {
            namespace: "shop".into(),
            service: "web-lb".into(),
            ip: "203.0.113.7".into(),
            hourly: 0.025,
            selector: kv(&[("app", "web")]),
            ..Default::default()
        }],
        cluster_management_hourly: Some(0.1),
        egress_prices: Some(EgressPrices {
            zone: 0.01,
            region: 0.02,
            internet: 0.09,
        }),
        ..Default::default()
    }
}

/// Series per metric name over the whole span, worked out by hand from [`cluster`].
const EXPECTED_SERIES: &[(&str, usize)] = &[
    // 7 pod runs: web, db-0 twice (two uids), train, logs, debug, orphan.
    ("kube_pod_info", 7),
    ("kube_pod_owner", 7),
    ("kube_pod_labels", 7),
    ("kube_pod_annotations", 7),
    // Containers: web 2, db 1+1, train 1, logs 1, debug 1, orphan 1.
    ("kube_pod_container_info", 8),
    ("kube_pod_container_status_running", 8),
    // cpu + memory for all but debug (none) = 7 × 2, plus train's GPU.
    ("kube_pod_container_resource_requests", 15),
    // memory limits for the same 7, plus train's GPU (no CPU limits).
    ("kube_pod_container_resource_limits", 8),
    ("kube_pod_spec_volumes_persistentvolumeclaims_info", 2),
    ("kube_replicaset_owner", 2),
    ("kube_job_owner", 1),
    ("kube_namespace_labels", 2),
    ("kube_namespace_annotations", 2),
    ("kube_node_info", 3),
    ("kube_node_labels", 3),
    // cpu + memory for 3 nodes, GPU for node-b.
    ("kube_node_status_capacity", 7),
    ("kube_node_status_allocatable", 7),
    ("kube_persistentvolume_capacity_bytes", 2),
    ("kube_persistentvolume_info", 2),
    ("kube_persistentvolume_claim_ref", 1),
    ("kube_persistentvolumeclaim_info", 1),
    (
        "kube_persistentvolumeclaim_resource_requests_storage_bytes",
        1,
    ),
    ("kube_service_info", 1),
    ("kube_service_spec_type", 1),
    ("kube_service_status_load_balancer_ingress", 1),
    ("container_cpu_usage_seconds_total", 8),
    ("container_memory_working_set_bytes", 8),
    ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", 1),
    ("kubecost_pod_network_egress_bytes_total", 3),
    // Priced nodes: a and b (c has no prices).
    ("node_cpu_hourly_cost", 2),
    ("node_ram_hourly_cost", 2),
    ("node_gpu_hourly_cost", 1),
    ("node_gpu_count", 1),
    ("node_total_hourly_cost", 2),
    ("kubecost_node_is_spot", 2),
    ("pv_hourly_cost", 1),
    ("kubecost_load_balancer_cost", 1),
    ("service_selector_labels", 1),
    ("kubecost_cluster_management_cost", 1),
    ("kubecost_network_zone_egress_cost", 1),
    ("kubecost_network_region_egress_cost", 1),
    ("kubecost_network_internet_egress_cost", 1),
];

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-6 * want.abs().max(1e-12)
}

/// The single value of an instant query that must return exactly one series.
fn one(p: &PromServer, q: &str, at: DateTime<Utc>) -> f64 {
    let v = p.query_vector(q, at);
    assert_eq!(v.len(), 1, "{:?}: {q} at {at} gave {v:?}", p.version);
    v[0].1
}

/// Every series the generator writes is there, with its labels, and values come back.
fn check_series_and_values(p: &PromServer, c: &Cluster) {
    let v = p.version;
    // All series over the span, counted per name.
    let (status, body) = p
        .get(&format!(
            "/api/v1/series?match[]={}&start={}&end={}",
            prom::encode(r#"{__name__=~".+"}"#),
            c.start.timestamp(),
            c.end.timestamp()
        ))
        .expect("series request");
    assert_eq!(status, 200, "{v:?}: {body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for s in body["data"].as_array().unwrap() {
        *counts
            .entry(s["__name__"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let want: BTreeMap<String, usize> = EXPECTED_SERIES
        .iter()
        .map(|(n, k)| (n.to_string(), *k))
        .collect();
    assert_eq!(counts, want, "{v:?}: series per metric name");

    // The same through the query engine, at a time when everything but what ends at the half
    // hour is alive (node-b, its pod, db-0's first run).
    let late = c.start + TimeDelta::minutes(90);
    let by_name: BTreeMap<String, f64> = p
        .query_vector(r#"count by (__name__)({__name__=~".+"})"#, late)
        .into_iter()
        .map(|(l, n)| (l["__name__"].as_str().unwrap().to_string(), n))
        .collect();
    assert_eq!(by_name["kube_pod_info"], 5.0, "{v:?}: {by_name:?}");
    assert_eq!(by_name["kube_node_info"], 2.0, "{v:?}: {by_name:?}");
    assert!(
        !by_name.contains_key("DCGM_FI_PROF_GR_ENGINE_ACTIVE"),
        "{v:?}"
    );

    // Labels as kube-state-metrics writes them.
    let at = c.start + TimeDelta::minutes(30);
    let info = p.query_vector(r#"kube_pod_info{pod="web-7d4-x1"}"#, at);
    assert_eq!(info.len(), 1, "{v:?}");
    for (k, want) in [
        ("namespace", "shop"),
        ("uid", "uid-web"),
        ("node", "node-a"),
        ("created_by_kind", "ReplicaSet"),
        ("created_by_name", "web-7d4"),
    ] {
        assert_eq!(info[0].0[k], want, "{v:?}: kube_pod_info label {k}");
    }
    let labels = p.query_vector(r#"kube_pod_labels{pod="web-7d4-x1"}"#, at);
    assert_eq!(labels[0].0["label_app_kubernetes_io_name"], "web", "{v:?}");
    let ns = p.query_vector(r#"kube_namespace_annotations{namespace="shop"}"#, at);
    assert_eq!(
        ns[0].0["annotation_owner"], "a \"quoted\" \\ value",
        "{v:?}: escaped values come back"
    );
    let owner = p.query_vector(r#"kube_replicaset_owner{replicaset="web-7d4"}"#, at);
    assert_eq!(owner[0].0["owner_name"], "web", "{v:?}");
    let spot = p.query_vector(r#"kube_node_labels{node="node-b"}"#, at);
    assert_eq!(spot[0].0["label_eks_amazonaws_com_capacity_type"], "SPOT");
    assert_eq!(
        spot[0].0["label_node_kubernetes_io_instance_type"],
        "g4dn.xlarge"
    );
    // The pod that moved: one run per node, never both at once.
    let db = p.query_vector(r#"kube_pod_info{pod="db-0"}"#, at);
    assert_eq!(db.len(), 1, "{v:?}");
    assert_eq!(db[0].0["node"], "node-a");
    let db = p.query_vector(r#"kube_pod_info{pod="db-0"}"#, late);
    assert_eq!(db[0].0["node"], "node-c", "{v:?}");

    // Values round-trip: a counter's rate is the usage, gauges are what was written.
    let web = &c.pods[0];
    let app = &web.containers[0];
    let rate = one(
        p,
        r#"rate(container_cpu_usage_seconds_total{pod="web-7d4-x1",container="app"}[5m])"#,
        at,
    );
    assert!(
        close(rate, app.cpu_usage),
        "{v:?}: cpu rate {rate} != {}",
        app.cpu_usage
    );
    let req = one(
        p,
        r#"kube_pod_container_resource_requests{pod="web-7d4-x1",container="app",resource="memory"}"#,
        at,
    );
    assert_eq!(req, app.ram_request, "{v:?}: memory request");
    let req = one(
        p,
        r#"kube_pod_container_resource_requests{pod="web-7d4-x1",container="app",resource="cpu",unit="core"}"#,
        at,
    );
    assert_eq!(req, app.cpu_request, "{v:?}: cpu request");
    let ws = one(
        p,
        r#"container_memory_working_set_bytes{pod="web-7d4-x1",container="app"}"#,
        at,
    );
    assert_eq!(ws, app.ram_usage, "{v:?}: working set");
    let egress = one(
        p,
        r#"rate(kubecost_pod_network_egress_bytes_total{pod_name="web-7d4-x1",internet="true"}[10m])"#,
        at,
    );
    assert!(close(egress, 1000.0), "{v:?}: internet egress {egress} B/s");
    let gpu = one(p, "DCGM_FI_PROF_GR_ENGINE_ACTIVE", at);
    assert_eq!(gpu, 0.8, "{v:?}");
    let total = one(p, r#"node_total_hourly_cost{node="node-b"}"#, at);
    assert!(
        close(total, 4.0 * 0.02 + 16.0 * 0.003 + 0.5),
        "{v:?}: node-b total {total}"
    );
    assert_eq!(one(p, r#"kubecost_node_is_spot{node="node-b"}"#, at), 1.0);
    assert_eq!(one(p, "kubecost_network_internet_egress_cost", at), 0.09);
    assert_eq!(
        one(p, r#"pv_hourly_cost{persistentvolume="pvc-1234"}"#, at),
        0.08 / 730.0
    );
    // The last sample is one scrape before the end; five minutes on, the series is stale.
    assert!(
        p.query_vector("kube_node_info", c.end + TimeDelta::minutes(6))
            .is_empty(),
        "{v:?}: nothing after the span"
    );
    // The off-grid pod's first sample is at its own start.
    let debug_start = c.pods[5].start;
    let first = p.query(
        r#"timestamp(kube_pod_info{pod="debug"})"#,
        debug_start + TimeDelta::seconds(1),
    );
    assert_eq!(
        first["result"][0]["value"][1],
        serde_json::json!(debug_start.timestamp().to_string()),
        "{v:?}: first sample of an off-grid pod"
    );
}

/// `count_over_time(…[5m])` at a sample time: 2.x's closed range holds six 60 s samples, 3.x's
/// left-open range five. Proves both servers really are the version they claim.
fn check_range_semantics(p: &PromServer, c: &Cluster) {
    let at = c.start + TimeDelta::hours(1) + TimeDelta::minutes(10);
    let n = one(
        p,
        r#"count_over_time(kube_pod_info{pod="web-7d4-x1"}[5m])"#,
        at,
    );
    let want = match p.version {
        PromVersion::V2 => 6.0,
        PromVersion::V3 => 5.0,
    };
    assert_eq!(
        n, want,
        "{:?}: samples in a 5m range at a sample time",
        p.version
    );
}

fn harness(version: PromVersion) {
    let c = cluster();
    let p = PromServer::start_cluster(version, &c);
    assert_eq!(p.version, version);
    assert!(p.url.starts_with("http://127.0.0.1:"), "{}", p.url);
    check_series_and_values(&p, &c);
    check_range_semantics(&p, &c);
}

#[test]
fn prometheus_3_serves_the_generated_cluster() {
    harness(PromVersion::V3);
}

#[test]
fn prometheus_2_serves_the_generated_cluster() {
    harness(PromVersion::V2);
}

/// The text `PromServer::start` takes: hand-written OpenMetrics loads as well as generated.
#[test]
fn start_takes_openmetrics_text() {
    let (start, _) = span();
    let t = start.timestamp();
    let text = format!(
        "# TYPE up gauge\nup{{job=\"x\"}} 1 {t}\nup{{job=\"x\"}} 0 {}\n# TYPE requests counter\nrequests_total 5 {t}\n# EOF\n",
        t + 60
    );
    for version in PromVersion::ALL {
        let p = PromServer::start(version, &text);
        let at = start + TimeDelta::seconds(60);
        assert_eq!(one(&p, "up", at), 0.0, "{version:?}");
        assert_eq!(one(&p, "requests_total", at), 5.0, "{version:?}");
    }
}

async fn fault_proxy(version: PromVersion) {
    let c = cluster();
    let p = PromServer::start_cluster(version, &c);
    let proxy = FaultProxy::start(&p.url);
    let client = reqwest::Client::new();
    let path = format!(
        "/api/v1/query?query={}&time={}",
        prom::encode("sum by (node) (kube_pod_container_resource_requests)"),
        (c.start + TimeDelta::minutes(30)).timestamp()
    );
    let get = |base: &str| client.get(format!("{base}{path}")).send();

    // Pass: the same answer as the server's own, over one kept-alive connection.
    let direct = get(&p.url).await.unwrap().text().await.unwrap();
    assert!(direct.contains("\"success\""), "{direct}");
    for i in 1..=3 {
        let resp = get(&proxy.url).await.expect("through the proxy");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.text().await.unwrap(),
            direct,
            "{version:?}: request {i}"
        );
    }
    assert_eq!(proxy.requests(), 3, "{version:?}");
    // A POST with a body passes too (Prometheus clients send long queries that way).
    let form = client
        .post(format!("{}/api/v1/query", proxy.url))
        .form(&[
            (
                "query",
                "sum by (node) (kube_pod_container_resource_requests)",
            ),
            (
                "time",
                &(c.start + TimeDelta::minutes(30)).timestamp().to_string(),
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    assert_eq!(form.text().await.unwrap(), direct, "{version:?}: POST");
    assert_eq!(proxy.requests(), 4);

    // Error500, on the connection the client keeps in its pool.
    proxy.set_mode(Mode::Error500);
    let resp = get(&proxy.url).await.expect("an answer");
    assert_eq!(resp.status(), 500, "{version:?}");
    assert_eq!(resp.text().await.unwrap(), prom::proxy::ERROR_BODY);

    // Down: no answer at all.
    proxy.set_mode(Mode::Down);
    let err = get(&proxy.url).await.expect_err("a connection error");
    assert!(err.is_request() || err.is_connect(), "{version:?}: {err:?}");
    let fresh = reqwest::Client::new();
    let err = fresh
        .get(format!("{}{path}", proxy.url))
        .send()
        .await
        .expect_err("a connection error on a new connection");
    assert!(err.is_request() || err.is_connect(), "{version:?}: {err:?}");

    // Slow: the answer is right, and late by at least the delay.
    let delay = Duration::from_millis(400);
    proxy.set_mode(Mode::Slow(delay));
    let started = Instant::now();
    let resp = get(&proxy.url).await.expect("a slow answer");
    let body = resp.text().await.unwrap();
    let took = started.elapsed();
    assert_eq!(body, direct, "{version:?}");
    assert!(took >= delay, "{version:?}: answered after {took:?}");

    // And back.
    proxy.set_mode(Mode::Pass);
    let before = proxy.requests();
    let resp = get(&proxy.url).await.expect("through the proxy again");
    assert_eq!(resp.text().await.unwrap(), direct);
    assert_eq!(proxy.requests(), before + 1);
}

#[tokio::test]
async fn fault_proxy_in_front_of_prometheus_3() {
    fault_proxy(PromVersion::V3).await;
}

#[tokio::test]
async fn fault_proxy_in_front_of_prometheus_2() {
    fault_proxy(PromVersion::V2).await;
}

/// Keys named as kube-state-metrics names them: sanitised, snake_cased, conflicts numbered.
#[test]
fn label_keys_as_kube_state_metrics_writes_them() {
    use prom::cluster::{kube_labels, sanitize_key};
    assert_eq!(
        sanitize_key("label_", "eks.amazonaws.com/capacityType"),
        "label_eks_amazonaws_com_capacity_type"
    );
    assert_eq!(
        sanitize_key("label_", "app.kubernetes.io/name"),
        "label_app_kubernetes_io_name"
    );
    assert_eq!(sanitize_key("annotation_", "aBCd9X"), "annotation_a_bcd9_x");
    assert_eq!(
        kube_labels(
            "label_",
            &kv(&[("b", "2"), ("a/b", "x"), ("a.b", "y"), ("b", "3")])
        ),
        kv(&[
            ("label_a_b_conflict1", "y"),
            ("label_a_b_conflict2", "x"),
            ("label_b", "2")
        ])
    );
}
