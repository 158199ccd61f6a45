//! The `prometheus` source against a real Prometheus (3.x built from its Go module, and Debian's
//! 2.42 with the older, closed range selectors), loaded with what kube-state-metrics, cAdvisor,
//! DCGM, the network-costs daemonset and a cost exporter write for a synthetic cluster
//! (`tests/prom/cluster.rs`). The real binary builds two days from it; every expected cost below
//! is computed here from the cluster's inputs by plain arithmetic, never by the code under test.
//!
//! The cluster: an on-demand node and a GPU node priced by the exporter, a spot node with no
//! price series (priced from the custom pricing file at spot prices); two web pods behind a load
//! balancer, one sending 1 GiB/h to the internet; a CronJob's pod that runs 02:00–08:00 on the
//! spot node using more CPU than it requests; a StatefulSet whose second pod moves from the
//! on-demand node to the spot node at noon, both pods sharing one volume; a volume nobody
//! mounts; a GPU training pod.
//!
//! Also: a Prometheus that fails, is down or slow (a fault proxy in front of it), the repair
//! routes on a leader and a follower, and a Prometheus that requires basic auth.

mod proc;
mod prom;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use proc::{spawn, wait_for};
use prom::cluster::{
    Claim, Cluster, Container, Egress, EgressPrices, LoadBalancer, Namespace, Node, NodeExporter,
    Owner, Pod, Pv,
};

use prom::{FaultProxy, Mode, PromServer, PromVersion};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Prices of the custom pricing file the replica is given (hourly).
const SPOT_CPU: f64 = 0.01;
const SPOT_RAM: f64 = 0.001;
const STORAGE: f64 = 0.0002;
const PRICING: &str = r#"{"CPU":"0.03","spotCPU":"0.01","RAM":"0.004","spotRAM":"0.001","GPU":"0.9","storage":"0.0002","defaultLBPrice":"0.025"}"#;

/// Exporter prices.
const A_CPU: f64 = 0.04;
const A_RAM: f64 = 0.005;
const G_CPU: f64 = 0.05;
const G_RAM: f64 = 0.006;
const G_GPU: f64 = 2.5;
const LB_HOURLY: f64 = 0.03;
const SHARED_PV_PRICE: f64 = 0.0001;
const INTERNET_EGRESS: f64 = 0.12;

fn day_start(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::days(1)).unwrap()
}

fn at(day: DateTime<Utc>, hour: i64) -> DateTime<Utc> {
    day + TimeDelta::hours(hour)
}

fn container(
    name: &str,
    cpu_req: f64,
    cpu_use: f64,
    ram_req_gib: f64,
    ram_use_gib: f64,
) -> Container {
    Container {
        name: name.into(),
        cpu_request: cpu_req,
        cpu_limit: 0.0,
        cpu_usage: cpu_use,
        ram_request: ram_req_gib * GIB,
        ram_limit: 0.0,
        ram_usage: ram_use_gib * GIB,
        gpu_request: 0.0,
        gpu_usage: 0.0,
    }
}

#[allow(clippy::too_many_arguments)]
fn pod(
    ns: &str,
    name: &str,
    uid: &str,
    node: &str,
    owner: Owner,
    labels: &[(&str, &str)],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    containers: Vec<Container>,
) -> Pod {
    Pod {
        namespace: ns.into(),
        name: name.into(),
        uid: uid.into(),
        node: node.into(),
        owner,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: vec![],
        start,
        end,
        containers,
        pvcs: vec![],
        egress: Egress::default(),
    }
}

/// The synthetic cluster from `d1` to now (the pods that move and the jobs: on the first two
/// days only).
fn cluster(d1: DateTime<Utc>) -> Cluster {
    let end = Utc::now().duration_trunc(TimeDelta::minutes(1)).unwrap();
    let node = |name: &str,
                cores: f64,
                ram_gib: f64,
                gpus: f64,
                spot: bool,
                prices: Option<(f64, f64, f64)>| Node {
        name: name.into(),
        instance_type: if gpus > 0.0 {
            "g5.2xlarge"
        } else {
            "m5.xlarge"
        }
        .into(),
        region: "us-east-1".into(),
        zone: "us-east-1a".into(),
        provider_id: format!("aws:///us-east-1a/i-{name}"),
        arch: "amd64".into(),
        cpu_cores: cores,
        ram_bytes: ram_gib * GIB,
        gpus,
        spot,
        cpu_hourly: prices.map(|p| p.0),
        ram_hourly: prices.map(|p| p.1),
        gpu_hourly: prices.and_then(|p| (p.2 > 0.0).then_some(p.2)),
        labels: vec![],
        exporter: (name == "node-a").then_some(NodeExporter {
            cpu_user: 0.25,
            cpu_system: 0.05,
            mem_available_bytes: 10.0 * GIB,
        }),
        start: d1,
        end,
    };
    let rs = || Owner::ReplicaSet {
        replicaset: "frontend-7d9f8".into(),
        deployment: Some("frontend".into()),
    };
    let mut front0 = pod(
        "web",
        "frontend-7d9f8-aaaaa",
        "u-f0",
        "node-a",
        rs(),
        &[("app", "frontend")],
        d1,
        end,
        vec![container("nginx", 0.5, 0.2, 0.5, 0.3)],
    );
    front0.egress = Egress {
        internet_bytes_per_hour: GIB,
        ..Egress::default()
    };
    let front1 = pod(
        "web",
        "frontend-7d9f8-bbbbb",
        "u-f1",
        "node-a",
        rs(),
        &[("app", "frontend")],
        d1,
        end,
        vec![container("nginx", 0.5, 0.2, 0.5, 0.3)],
    );
    // The CronJob makes a new Job each day.
    let jobs = [d1, d1 + TimeDelta::days(1)]
        .into_iter()
        .enumerate()
        .map(|(i, day)| {
            let job = format!("nightly-{}", 29100 + i);
            pod(
                "batch",
                &format!("{job}-xyz"),
                &format!("u-j{i}"),
                "node-b",
                Owner::Job {
                    job,
                    cronjob: Some("nightly".into()),
                },
                &[("app", "nightly")],
                at(day, 2),
                at(day, 8),
                vec![container("worker", 2.0, 3.0, 1.0, 0.5)],
            )
        });
    let pg = || Owner::StatefulSet("pg".into());
    let mut pg0 = pod(
        "db",
        "pg-0",
        "u-pg0",
        "node-a",
        pg(),
        &[("app", "pg")],
        d1,
        end,
        vec![container("postgres", 1.0, 0.5, 2.0, 1.5)],
    );
    pg0.pvcs = vec!["shared-data".into()];
    // pg-1 moves at noon of each day: node-a in the morning, node-b in the afternoon.
    let mut pg1s = Vec::new();
    for (i, day) in [d1, d1 + TimeDelta::days(1)].into_iter().enumerate() {
        for (half, node) in [(0, "node-a"), (1, "node-b")] {
            let mut p = pod(
                "db",
                "pg-1",
                &format!("u-pg1-{i}-{half}"),
                node,
                pg(),
                &[("app", "pg")],
                at(day, 12 * half),
                at(day, 12 * half + 12),
                vec![container("postgres", 1.0, 0.5, 2.0, 1.5)],
            );
            p.pvcs = vec!["shared-data".into()];
            pg1s.push(p);
        }
    }
    let mut trainer = pod(
        "ml",
        "trainer",
        "u-t",
        "node-g",
        Owner::None,
        &[("app", "trainer")],
        d1,
        end,
        vec![Container {
            gpu_request: 1.0,
            gpu_usage: 0.8,
            ..container("train", 4.0, 3.0, 16.0, 12.0)
        }],
    );
    trainer.annotations = vec![("team".into(), "research".into())];
    let mut pods = vec![front0, front1, pg0, trainer];
    pods.extend(pg1s);
    pods.extend(jobs);
    Cluster {
        start: d1,
        end,
        scrape: Duration::from_secs(60),
        nodes: vec![
            node("node-a", 4.0, 16.0, 0.0, false, Some((A_CPU, A_RAM, 0.0))),
            node("node-b", 8.0, 32.0, 0.0, true, None),
            node("node-g", 8.0, 64.0, 2.0, false, Some((G_CPU, G_RAM, G_GPU))),
        ],
        namespaces: ["web", "batch", "db", "ml"]
            .iter()
            .map(|n| Namespace {
                name: n.to_string(),
                labels: vec![("team".into(), format!("team-{n}"))],
                annotations: vec![],
            })
            .collect(),
        pods,
        pvs: vec![
            Pv {
                name: "pv-shared".into(),
                storage_class: "efs".into(),
                bytes: 100.0 * GIB,
                hourly_per_gib: Some(SHARED_PV_PRICE),
                provider_id: "fs-123".into(),
                claim: Some(Claim {
                    namespace: "db".into(),
                    name: "shared-data".into(),
                    request_bytes: 100.0 * GIB,
                }),
                start: d1,
                end,
            },
            Pv {
                name: "pv-orphan".into(),
                storage_class: "gp3".into(),
                bytes: 50.0 * GIB,
                hourly_per_gib: None,
                provider_id: "vol-orphan".into(),
                claim: Some(Claim {
                    namespace: "db".into(),
                    name: "old-data".into(),
                    request_bytes: 50.0 * GIB,
                }),
                start: d1,
                end,
            },
        ],
        load_balancers: vec![LoadBalancer {
            namespace: "web".into(),
            service: "frontend-lb".into(),
            ip: "34.1.2.3".into(),
            hourly: LB_HOURLY,
            selector: vec![("app".into(), "frontend".into())],
            start: d1,
            end,
        }],
        cluster_management_hourly: Some(0.10),
        egress_prices: Some(EgressPrices {
            zone: 0.01,
            region: 0.02,
            internet: INTERNET_EGRESS,
        }),
    }
}

/// Expected cost of one whole day, by namespace, from the inputs above.
fn expected_namespaces() -> BTreeMap<&'static str, f64> {
    let web_pod = 0.5 * 24.0 * A_CPU + 0.5 * 24.0 * A_RAM;
    let web = 2.0 * web_pod + LB_HOURLY * 24.0 + 1.0 * 24.0 * INTERNET_EGRESS;
    // usage (3 cores) above request (2): the usage is charged; RAM request (1 GiB) above usage.
    let batch = 3.0 * 6.0 * SPOT_CPU + 1.0 * 6.0 * SPOT_RAM;
    let pg0 = 1.0 * 24.0 * A_CPU + 2.0 * 24.0 * A_RAM;
    let pg1 =
        1.0 * 12.0 * A_CPU + 2.0 * 12.0 * A_RAM + 1.0 * 12.0 * SPOT_CPU + 2.0 * 12.0 * SPOT_RAM;
    let volumes = 100.0 * 24.0 * SHARED_PV_PRICE + 50.0 * 24.0 * STORAGE;
    let db = pg0 + pg1 + volumes;
    let ml = 4.0 * 24.0 * G_CPU + 16.0 * 24.0 * G_RAM + 1.0 * 24.0 * G_GPU;
    BTreeMap::from([("web", web), ("batch", batch), ("db", db), ("ml", ml)])
}

fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs().max(1e-9)
}

/// `key → allocation` of an accumulated `/model/allocation` answer.
fn set_of(body: &serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    body["data"][0].as_object().cloned().unwrap_or_default()
}

/// The API's window parameter for the day starting at `d`.
fn day_window(d: DateTime<Utc>) -> String {
    format!(
        "{},{}",
        d.format("%Y-%m-%dT%H:%M:%SZ"),
        (d + TimeDelta::days(1)).format("%Y-%m-%dT%H:%M:%SZ")
    )
}

fn alloc_url(d: DateTime<Utc>, query: &str) -> String {
    format!(
        "/model/allocation?window={}&accumulate=true&{query}",
        day_window(d)
    )
}

fn openmetrics(c: &Cluster) -> String {
    let mut out = Vec::new();
    c.to_openmetrics(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

async fn costs_match_arithmetic(version: PromVersion) {
    let today = day_start(Utc::now());
    // Three days back: the day before today is built as complete only minutes after midnight.
    let d1 = today - TimeDelta::days(3);
    let prom = PromServer::start(version, &openmetrics(&cluster(d1)));
    let dir = tempfile::tempdir().unwrap();
    let pricing = dir.path().join("pricing.json");
    std::fs::write(&pricing, PRICING).unwrap();
    let p = spawn(
        dir.path(),
        "leader",
        &[
            "--prometheus-url",
            &prom.url,
            "--pricing-file",
            pricing.to_str().unwrap(),
            "--backfill",
            "3d",
            "--bucket-dir",
            dir.path().join("bucket").to_str().unwrap(),
        ],
    );
    let client = reqwest::Client::new();
    for day in [d1, d1 + TimeDelta::days(1)] {
        let body = wait_for(
            &p,
            &client,
            &alloc_url(day, "aggregate=namespace"),
            |s, b| s == 200 && set_of(b).contains_key("ml"),
        )
        .await;
        let got = set_of(&body);
        for (ns, want) in expected_namespaces() {
            let cost = got
                .get(ns)
                .unwrap_or_else(|| panic!("{version:?} {day}: no namespace {ns} in {got:?}"))["totalCost"]
                .as_f64()
                .unwrap();
            assert!(
                close(cost, want, 1e-3),
                "{version:?} {day}: namespace {ns}: {cost} vs {want} by arithmetic"
            );
        }
    }

    // Per container, on the first day: minutes, cores and costs.
    let body = wait_for(
        &p,
        &client,
        &alloc_url(d1, "aggregate=namespace,pod,container"),
        |s, b| s == 200 && !set_of(b).is_empty(),
    )
    .await;
    let got = set_of(&body);
    let f0 = &got["web/frontend-7d9f8-aaaaa/nginx"];
    assert_eq!(
        f0["minutes"].as_f64().unwrap(),
        1440.0,
        "{version:?}: a whole day is 1440 minutes on every Prometheus"
    );
    assert!(close(
        f0["cpuCost"].as_f64().unwrap(),
        0.5 * 24.0 * A_CPU,
        1e-6
    ));
    assert!(
        close(
            f0["networkCost"].as_f64().unwrap(),
            24.0 * INTERNET_EGRESS,
            1e-3
        ),
        "{f0}"
    );
    assert!(
        close(
            f0["loadBalancerCost"].as_f64().unwrap(),
            LB_HOURLY * 12.0,
            1e-6
        ),
        "{f0}"
    );
    let job = &got["batch/nightly-29100-xyz/worker"];
    assert_eq!(
        job["minutes"].as_f64().unwrap(),
        360.0,
        "{version:?}: 02:00–08:00"
    );
    assert!(
        close(job["cpuCoreUsageAverage"].as_f64().unwrap(), 3.0, 1e-3),
        "{job}"
    );
    assert!(
        close(job["cpuCost"].as_f64().unwrap(), 3.0 * 6.0 * SPOT_CPU, 1e-3),
        "{job}"
    );
    let t = &got["ml/trainer/train"];
    assert!(
        close(t["gpuCost"].as_f64().unwrap(), 24.0 * G_GPU, 1e-6),
        "{t}"
    );
    assert!(close(t["gpuHours"].as_f64().unwrap(), 24.0, 1e-6), "{t}");
    // The shared volume splits over both pods; the unmounted one is charged as __unmounted__.
    let pv = |k: &str| got[k]["pvCost"].as_f64().unwrap();
    assert!(close(
        pv("db/pg-0/postgres"),
        100.0 * 12.0 * SHARED_PV_PRICE,
        1e-6
    ));
    assert!(close(
        pv("db/pg-1/postgres"),
        100.0 * 12.0 * SHARED_PV_PRICE,
        1e-6
    ));
    let unmounted: f64 = got
        .iter()
        .filter(|(k, _)| k.ends_with("__unmounted__"))
        .map(|(_, v)| v["pvCost"].as_f64().unwrap())
        .sum();
    assert!(close(unmounted, 50.0 * 24.0 * STORAGE, 1e-6), "{unmounted}");

    // Controllers: the ReplicaSet is resolved to its Deployment, the Job to its CronJob.
    let body = wait_for(
        &p,
        &client,
        &alloc_url(d1, "aggregate=controller"),
        |s, b| s == 200 && !set_of(b).is_empty(),
    )
    .await;
    let keys: Vec<String> = set_of(&body).keys().cloned().collect();
    for want in ["deployment:frontend", "cronjob:nightly", "statefulset:pg"] {
        assert!(
            keys.iter().any(|k| k == want),
            "{version:?}: no {want} in {keys:?}"
        );
    }

    // The pod that moved is charged on each node for its half day.
    let body = wait_for(
        &p,
        &client,
        &alloc_url(d1, "aggregate=node&filter=pod:\"pg-1\""),
        |s, b| s == 200 && !set_of(b).is_empty(),
    )
    .await;
    let by_node = set_of(&body);
    assert!(
        close(
            by_node["node-a"]["cpuCost"].as_f64().unwrap(),
            12.0 * A_CPU,
            1e-6
        ),
        "{by_node:?}"
    );
    assert!(
        close(
            by_node["node-b"]["cpuCost"].as_f64().unwrap(),
            12.0 * SPOT_CPU,
            1e-6
        ),
        "{by_node:?}"
    );

    // Assets: nodes priced by the exporter or the pricing file; the spot node is preemptible.
    let w = day_window(d1);
    let body = wait_for(
        &p,
        &client,
        &format!("/model/assets?window={w}&accumulate=true"),
        |s, b| s == 200 && b["data"][0].as_object().is_some_and(|m| !m.is_empty()),
    )
    .await;
    let assets = body["data"][0].as_object().unwrap();
    let node = |name: &str| {
        assets
            .values()
            .find(|a| a["type"] == "Node" && a["properties"]["name"] == name)
            .unwrap_or_else(|| panic!("no node {name}"))
            .clone()
    };
    let a = node("node-a");
    assert!(
        close(
            a["totalCost"].as_f64().unwrap(),
            4.0 * 24.0 * A_CPU + 16.0 * 24.0 * A_RAM,
            1e-6
        ),
        "{a}"
    );
    assert_eq!(a["cpuCores"].as_f64().unwrap(), 4.0);
    // node-exporter: 25 % user, 5 % system; 10 of 16 GiB available; containers' working sets
    // on node-a average 0.3 + 0.3 + 1.5 + 1.5 × ½ (pg-1 leaves at noon) = 2.85 GiB.
    let cpu = &a["cpuBreakdown"];
    assert!(close(cpu["idle"].as_f64().unwrap(), 0.70, 1e-6), "{cpu}");
    assert!(close(cpu["user"].as_f64().unwrap(), 0.25, 1e-6), "{cpu}");
    assert!(close(cpu["system"].as_f64().unwrap(), 0.05, 1e-6), "{cpu}");
    let ram = &a["ramBreakdown"];
    // (The API writes five decimals.)
    assert!(
        close(ram["idle"].as_f64().unwrap(), 10.0 / 16.0, 1e-4),
        "{ram}"
    );
    assert!(
        close(ram["user"].as_f64().unwrap(), 2.85 / 16.0, 1e-4),
        "{ram}"
    );
    assert!(
        close(
            ram["other"].as_f64().unwrap(),
            1.0 - 10.0 / 16.0 - 2.85 / 16.0,
            1e-4
        ),
        "{ram}"
    );
    let b = node("node-b");
    assert_eq!(b["preemptible"].as_f64().unwrap(), 1.0);
    assert!(
        close(
            b["totalCost"].as_f64().unwrap(),
            8.0 * 24.0 * SPOT_CPU + 32.0 * 24.0 * SPOT_RAM,
            1e-6
        ),
        "{b}"
    );
    let g = node("node-g");
    assert!(
        close(g["gpuCost"].as_f64().unwrap(), 2.0 * 24.0 * G_GPU, 1e-6),
        "{g}"
    );
    let kinds: Vec<&str> = assets.values().filter_map(|a| a["type"].as_str()).collect();
    for kind in ["Disk", "LoadBalancer", "ClusterManagement"] {
        assert!(
            kinds.contains(&kind),
            "{version:?}: no {kind} asset in {kinds:?}"
        );
    }

    // The leader exports the cost metrics under the cost-model's names.
    let text = proc::wait_metrics(&p, &client, |t| t.contains("node_cpu_hourly_cost{")).await;
    for name in [
        "node_ram_hourly_cost{",
        "node_total_hourly_cost{",
        "pv_hourly_cost{",
        "kubecost_load_balancer_cost{",
        "kubecost_cluster_info{",
    ] {
        assert!(text.contains(name), "{version:?}: /metrics lacks {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn costs_match_arithmetic_on_prometheus_3() {
    costs_match_arithmetic(PromVersion::V3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn costs_match_arithmetic_on_prometheus_2() {
    costs_match_arithmetic(PromVersion::V2).await;
}

/// A Prometheus that fails, is down or is slow: nothing is published, the status says why, and
/// once it answers again the missing days are built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_publish_nothing_and_fill_the_gap_afterwards() {
    let today = day_start(Utc::now());
    // Three days back: the day before today is built as complete only minutes after midnight.
    let d1 = today - TimeDelta::days(3);
    let prom = PromServer::start(PromVersion::V3, &openmetrics(&cluster(d1)));
    let proxy = FaultProxy::start(&prom.url);
    proxy.set_mode(Mode::Error500);
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(
        dir.path(),
        "leader",
        &[
            "--prometheus-url",
            &proxy.url,
            "--backfill",
            "3d",
            "--etl-interval",
            "1s",
            "--prometheus-retries",
            "1",
            "--prometheus-timeout",
            "1s",
            "--bucket-dir",
            dir.path().join("bucket").to_str().unwrap(),
        ],
    );
    let client = reqwest::Client::new();
    let status = wait_for(&p, &client, "/model/etl/status", |s, b| {
        s == 200
            && b["data"]["source"]["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("500"))
    })
    .await;
    assert!(
        status["data"]["source"]["failingSince"].is_string(),
        "{status}"
    );
    let (_, body) = proc::get_json(&client, &p.url(&alloc_url(d1, "aggregate=namespace")))
        .await
        .unwrap();
    assert!(
        set_of(&body).is_empty(),
        "nothing may be published while Prometheus fails: {body}"
    );

    // Down, then slow past the timeout: still failing, still nothing published.
    proxy.set_mode(Mode::Down);
    let seen = proxy.requests();
    wait_for(&p, &client, "/model/etl/status", |_, b| {
        b["data"]["source"]["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("connect") || e.contains("request failed"))
    })
    .await;
    assert!(proxy.requests() > seen);
    proxy.set_mode(Mode::Slow(Duration::from_secs(3)));
    wait_for(&p, &client, "/model/etl/status", |_, b| {
        b["data"]["source"]["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("no answer within"))
    })
    .await;
    let (_, body) = proc::get_json(&client, &p.url(&alloc_url(d1, "aggregate=namespace")))
        .await
        .unwrap();
    assert!(set_of(&body).is_empty(), "{body}");

    // Back: both days are built, with the same numbers as always.
    proxy.set_mode(Mode::Pass);
    for day in [d1, d1 + TimeDelta::days(1)] {
        let body = wait_for(
            &p,
            &client,
            &alloc_url(day, "aggregate=namespace"),
            |s, b| s == 200 && set_of(b).contains_key("ml"),
        )
        .await;
        let got = set_of(&body);
        let ml = got["ml"]["totalCost"].as_f64().unwrap();
        assert!(close(ml, expected_namespaces()["ml"], 1e-3), "{ml}");
    }
    let status = wait_for(&p, &client, "/model/etl/status", |_, b| {
        b["data"]["source"]["lastError"].is_null()
    })
    .await;
    assert!(
        status["data"]["source"]["lastSuccess"].is_string(),
        "{status}"
    );
}

/// The repair routes rebuild on the leader, and a bad window is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_rebuilds_a_day_on_the_leader() {
    let today = day_start(Utc::now());
    // Three days back: the day before today is built as complete only minutes after midnight.
    let d1 = today - TimeDelta::days(3);
    let prom = PromServer::start(PromVersion::V3, &openmetrics(&cluster(d1)));
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(
        dir.path(),
        "leader",
        &[
            "--prometheus-url",
            &prom.url,
            "--backfill",
            "3d",
            "--bucket-dir",
            dir.path().join("bucket").to_str().unwrap(),
        ],
    );
    let client = reqwest::Client::new();
    wait_for(
        &p,
        &client,
        &alloc_url(d1, "aggregate=namespace"),
        |s, b| s == 200 && set_of(b).contains_key("ml"),
    )
    .await;
    let gen_before = proc::get_json(&client, &p.url("/model/etl/status"))
        .await
        .unwrap()
        .1["data"]["snapshotGeneration"]
        .as_u64()
        .unwrap();
    let w = day_window(d1);
    let resp = client
        .get(p.url(&format!("/model/etl/allocation/repair?window={w}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["data"]["days"], 1, "{body}");
    // Rebuilt from the same data, the day is the same: the write changes no object, so the
    // generation may stay; the log and the queue say it was done.
    wait_for(&p, &client, "/model/etl/status", |_, b| {
        b["data"]["source"]["repairsPending"] == 0
            && p.log_text().contains("repair ")
            && p.log_text().contains("sets rebuilt")
    })
    .await;
    let gen_after = proc::get_json(&client, &p.url("/model/etl/status"))
        .await
        .unwrap()
        .1["data"]["snapshotGeneration"]
        .as_u64()
        .unwrap();
    assert!(gen_after >= gen_before);
    let resp = client
        .get(p.url("/model/etl/asset/repair?window=yesterday-ish"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 400);
}

/// A follower refuses a repair with 409 and the leader's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_names_the_leader_for_repairs() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let p = spawn(
        dir.path(),
        "follower-1",
        &[
            "--election",
            "follower",
            "--bucket-dir",
            bucket.to_str().unwrap(),
        ],
    );
    let client = reqwest::Client::new();
    let body = wait_for(
        &p,
        &client,
        "/model/etl/allocation/repair?window=1d",
        |s, _| s == 409,
    )
    .await;
    assert_eq!(body["code"], 409);
    assert!(
        body["message"].as_str().unwrap().contains("follower"),
        "{body}"
    );
}

/// A Prometheus that wants basic auth: the replica's credentials get through (and never show in
/// its log or status); a wrong password is a failure that names the status, and nothing is
/// published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_reaches_a_prometheus_that_requires_it() {
    let today = day_start(Utc::now());
    let d1 = today - TimeDelta::days(3);
    let prom = PromServer::start(PromVersion::V3, &openmetrics(&cluster(d1)));
    let password = "pw-0f3a9c";
    // bcrypt at the lowest cost, so Prometheus checks it quickly.
    let hash = bcrypt::hash(password, 4).unwrap();
    prom.set_web_config(&format!("basic_auth_users:\n  costmodel: {hash}\n"));
    let (status, _) = prom.get("/api/v1/query?query=up").unwrap();
    assert_eq!(status, 401, "the server must now want credentials");

    let dir = tempfile::tempdir().unwrap();
    let args = |pw: &'static str, name: &str| {
        vec![
            "--prometheus-url".to_string(),
            prom.url.clone(),
            "--prometheus-username".into(),
            "costmodel".into(),
            "--prometheus-password".into(),
            pw.into(),
            "--backfill".into(),
            "3d".into(),
            "--prometheus-retries".into(),
            "0".into(),
            "--bucket-dir".into(),
            dir.path()
                .join(format!("bucket-{name}"))
                .to_str()
                .unwrap()
                .into(),
        ]
    };
    let client = reqwest::Client::new();

    let good_args = args(password, "good");
    let good: Vec<&str> = good_args.iter().map(String::as_str).collect();
    let p = spawn(dir.path(), "good", &good);
    let body = wait_for(
        &p,
        &client,
        &alloc_url(d1, "aggregate=namespace"),
        |s, b| s == 200 && set_of(b).contains_key("ml"),
    )
    .await;
    let ml = set_of(&body)["ml"]["totalCost"].as_f64().unwrap();
    assert!(close(ml, expected_namespaces()["ml"], 1e-3), "{ml}");
    let (_, status) = proc::get_json(&client, &p.url("/model/etl/status"))
        .await
        .unwrap();
    assert!(!status.to_string().contains(password));
    assert!(!p.log_text().contains(password));

    let bad_args = args("wrong-password", "bad");
    let bad: Vec<&str> = bad_args.iter().map(String::as_str).collect();
    let q = spawn(dir.path(), "bad", &bad);
    let status = wait_for(&q, &client, "/model/etl/status", |_, b| {
        b["data"]["source"]["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("401"))
    })
    .await;
    assert!(!status.to_string().contains("wrong-password"), "{status}");
    let (_, body) = proc::get_json(&client, &q.url(&alloc_url(d1, "aggregate=namespace")))
        .await
        .unwrap();
    assert!(set_of(&body).is_empty(), "{body}");
}
