//! The `prometheus` source: what kube-state-metrics, cAdvisor, DCGM, the network-costs daemonset
//! and a Kubecost/OpenCost cost exporter wrote to Prometheus, read with the metric and label
//! names OpenCost uses, and turned into [`ClusterWindow`]s.
//!
//! **Steps.** A batch of windows (a day and its hours) is read as one range `[start, data_end)`
//! cut into steps of `resolution`. Step `k` covers `[start + k·res, start + (k+1)·res)`, and
//! every per-step query evaluates `…_over_time(x[res])` at `start + (k+1)·res − 1 ms`. Prometheus
//! 3 made range selectors left-open (`(t − res, t]`) where 2 had them closed (`[t − res, t]`); at
//! that evaluation time both select the samples in `[start + k·res, start + (k+1)·res)` (a sample
//! at exactly the millisecond before a step would count in both on 2), so a pod that runs a whole
//! hour has 60 minutes on either version, not 55. A window's numbers are sums over its steps, so
//! the hours of a day are cut from the day's answers without asking again.
//!
//! **Queries.** One query per metric per chunk of steps over all pods, never per pod; chunks are
//! at most `max_query_duration` long (and 10,000 steps, under Prometheus's 11,000-point limit), run
//! concurrently within the client's bound. Metadata (labels, owners, claims, selectors) is one
//! instant `last_over_time` over the batch.
//!
//! **Never partial.** Any query that fails after its retries fails the whole batch: nothing of it
//! is published, and the ETL tries again on its next run.

pub mod client;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::try_join_all;

use super::pricing::Pricing;
use super::source::{
    ClusterManagement, ClusterWindow, ContainerUsage, DataSource, EgressPrices, LoadBalancerUsage,
    NodeUsage, PodNetwork, SourceError, VolumeMount, VolumeUsage,
};
use crate::model::{Breakdown, Window};
use client::{Client, QueryError, Series};

/// Prometheus refuses a range query of more than 11,000 points per series.
const MAX_STEPS_PER_QUERY: i64 = 10_000;
/// OpenCost's sanity limit on a container's cores.
const CPU_SANITY_LIMIT: f64 = 512.0;

/// What the source needs besides the connection.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Step of every range query (`ETL_RESOLUTION_SECONDS`).
    pub resolution: Duration,
    /// The longest range one query covers (`ETL_MAX_PROMETHEUS_QUERY_DURATION_MINUTES`).
    pub max_query_duration: Duration,
    /// `label="value"` added to every selector, for a Prometheus that holds several clusters
    /// (`CURRENT_CLUSTER_ID_FILTER_ENABLED` with `PROM_CLUSTER_ID_LABEL`).
    pub cluster_filter: Option<(String, String)>,
    /// Prices where Prometheus has none.
    pub pricing: Pricing,
}

/// The Prometheus data source.
pub struct PrometheusSource {
    client: Client,
    settings: Settings,
}

impl PrometheusSource {
    /// A source reading through `client`.
    pub fn new(client: Client, settings: Settings) -> Self {
        Self { client, settings }
    }

    fn res_ms(&self) -> i64 {
        (self.settings.resolution.as_millis() as i64).max(1000)
    }

    /// `metric{matchers}` with the cluster filter added.
    fn sel(&self, metric: &str, matchers: &str) -> String {
        let mut m: Vec<String> = Vec::new();
        if !matchers.is_empty() {
            m.push(matchers.to_string());
        }
        if let Some((label, value)) = &self.settings.cluster_filter {
            m.push(format!(
                "{label}=\"{}\"",
                value.replace('\\', "\\\\").replace('"', "\\\"")
            ));
        }
        format!("{metric}{{{}}}", m.join(","))
    }

    /// Every per-step query, by name, with `{R}` for the step's range.
    fn step_queries(&self) -> Vec<(Q, String)> {
        let c = "container!=\"\",container!=\"POD\"";
        let by_c = "namespace, pod, container";
        vec![
            (
                Q::Running,
                format!(
                    "max by ({by_c}) (max_over_time({}[R])) > 0",
                    self.sel("kube_pod_container_status_running", "")
                ),
            ),
            (
                Q::PodNode,
                format!(
                    "max by (namespace, pod, node) (max_over_time({}[R]))",
                    self.sel("kube_pod_info", "node!=\"\"")
                ),
            ),
            (
                Q::CpuRequest,
                format!(
                    "avg by ({by_c}) (avg_over_time({}[R]))",
                    self.sel(
                        "kube_pod_container_resource_requests",
                        "resource=\"cpu\",unit=\"core\""
                    )
                ),
            ),
            (
                Q::RamRequest,
                format!(
                    "avg by ({by_c}) (avg_over_time({}[R]))",
                    self.sel(
                        "kube_pod_container_resource_requests",
                        "resource=\"memory\",unit=\"byte\""
                    )
                ),
            ),
            (
                Q::GpuRequest,
                format!(
                    "avg by ({by_c}) (avg_over_time({}[R]))",
                    self.sel(
                        "kube_pod_container_resource_requests",
                        "resource=\"nvidia_com_gpu\""
                    )
                ),
            ),
            (
                Q::CpuLimit,
                format!(
                    "avg by ({by_c}) (avg_over_time({}[R]))",
                    self.sel(
                        "kube_pod_container_resource_limits",
                        "resource=\"cpu\",unit=\"core\""
                    )
                ),
            ),
            (
                Q::RamLimit,
                format!(
                    "avg by ({by_c}) (avg_over_time({}[R]))",
                    self.sel(
                        "kube_pod_container_resource_limits",
                        "resource=\"memory\",unit=\"byte\""
                    )
                ),
            ),
            (
                Q::CpuUsage,
                format!(
                    "sum by ({by_c}) (rate({}[R]))",
                    self.sel("container_cpu_usage_seconds_total", c)
                ),
            ),
            (
                Q::RamUsage,
                format!(
                    "sum by ({by_c}) (avg_over_time({}[R]))",
                    self.sel("container_memory_working_set_bytes", c)
                ),
            ),
            (
                Q::RamMax,
                format!(
                    "sum by ({by_c}) (max_over_time({}[R]))",
                    self.sel("container_memory_working_set_bytes", c)
                ),
            ),
            (
                Q::GpuUsage,
                format!(
                    "avg by ({by_c}) (avg_over_time({}[R]))",
                    self.sel("DCGM_FI_PROF_GR_ENGINE_ACTIVE", c)
                ),
            ),
            (
                Q::NodeCpu,
                format!(
                    "max by (node) (max_over_time({}[R]))",
                    self.sel(
                        "kube_node_status_capacity",
                        "resource=\"cpu\",unit=\"core\""
                    )
                ),
            ),
            (
                Q::NodeRam,
                format!(
                    "max by (node) (max_over_time({}[R]))",
                    self.sel(
                        "kube_node_status_capacity",
                        "resource=\"memory\",unit=\"byte\""
                    )
                ),
            ),
            (
                Q::NodeGpu,
                format!(
                    "max by (node) (max_over_time({}[R]))",
                    self.sel("kube_node_status_capacity", "resource=\"nvidia_com_gpu\"")
                ),
            ),
            (
                Q::NodeCpuPrice,
                format!(
                    "avg by (node) (avg_over_time({}[R]))",
                    self.sel("node_cpu_hourly_cost", "")
                ),
            ),
            (
                Q::NodeRamPrice,
                format!(
                    "avg by (node) (avg_over_time({}[R]))",
                    self.sel("node_ram_hourly_cost", "")
                ),
            ),
            (
                Q::NodeGpuPrice,
                format!(
                    "avg by (node) (avg_over_time({}[R]))",
                    self.sel("node_gpu_hourly_cost", "")
                ),
            ),
            (
                Q::NodeCpuMode,
                format!(
                    "sum by (kubernetes_node, node, mode) (rate({}[R]))",
                    self.sel("node_cpu_seconds_total", "")
                ),
            ),
            (
                Q::NodeMemAvailable,
                format!(
                    "max by (kubernetes_node, node) (avg_over_time({}[R]))",
                    self.sel("node_memory_MemAvailable_bytes", "")
                ),
            ),
            (
                Q::PvBytes,
                format!(
                    "max by (persistentvolume) (max_over_time({}[R]))",
                    self.sel("kube_persistentvolume_capacity_bytes", "")
                ),
            ),
            (
                Q::PvPrice,
                format!(
                    "avg by (persistentvolume) (avg_over_time({}[R]))",
                    self.sel("pv_hourly_cost", "")
                ),
            ),
            (
                Q::PodClaims,
                format!(
                    "max by (namespace, pod, persistentvolumeclaim) (max_over_time({}[R]))",
                    self.sel("kube_pod_spec_volumes_persistentvolumeclaims_info", "")
                ),
            ),
            (
                Q::LbCost,
                format!(
                    "avg by (namespace, service_name, ingress_ip) (avg_over_time({}[R]))",
                    self.sel("kubecost_load_balancer_cost", "")
                ),
            ),
            (
                Q::LbService,
                format!(
                    "max by (namespace, service) (max_over_time({}[R]))",
                    self.sel("kube_service_spec_type", "type=\"LoadBalancer\"")
                ),
            ),
            (
                Q::ClusterManagement,
                format!(
                    "avg by (provisioner_name) (avg_over_time({}[R]))",
                    self.sel("kubecost_cluster_management_cost", "")
                ),
            ),
            (
                Q::Egress,
                format!(
                    "sum by (namespace, pod_name, internet, same_zone, same_region) (increase({}[R]))",
                    self.sel("kubecost_pod_network_egress_bytes_total", "")
                ),
            ),
            (
                Q::Transmit,
                format!(
                    "sum by (namespace, pod) (increase({}[R]))",
                    self.sel("container_network_transmit_bytes_total", "pod!=\"\"")
                ),
            ),
            (
                Q::Receive,
                format!(
                    "sum by (namespace, pod) (increase({}[R]))",
                    self.sel("container_network_receive_bytes_total", "pod!=\"\"")
                ),
            ),
            (
                Q::ZoneEgressPrice,
                format!(
                    "avg(avg_over_time({}[R]))",
                    self.sel("kubecost_network_zone_egress_cost", "")
                ),
            ),
            (
                Q::RegionEgressPrice,
                format!(
                    "avg(avg_over_time({}[R]))",
                    self.sel("kubecost_network_region_egress_cost", "")
                ),
            ),
            (
                Q::InternetEgressPrice,
                format!(
                    "avg(avg_over_time({}[R]))",
                    self.sel("kubecost_network_internet_egress_cost", "")
                ),
            ),
        ]
    }

    /// Every metadata query, with `{D}` for the batch's range.
    fn meta_queries(&self) -> Vec<(M, String)> {
        let last =
            |m: &str, matchers: &str| format!("last_over_time({}[D])", self.sel(m, matchers));
        vec![
            (M::PodLabels, last("kube_pod_labels", "")),
            (M::PodAnnotations, last("kube_pod_annotations", "")),
            (M::NamespaceLabels, last("kube_namespace_labels", "")),
            (
                M::NamespaceAnnotations,
                last("kube_namespace_annotations", ""),
            ),
            (M::PodOwner, last("kube_pod_owner", "")),
            (M::ReplicaSetOwner, last("kube_replicaset_owner", "")),
            (M::JobOwner, last("kube_job_owner", "")),
            (M::NodeLabels, last("kube_node_labels", "")),
            (M::NodeInfo, last("kube_node_info", "")),
            (
                M::NodeSpot,
                format!(
                    "max by (node) (max_over_time({}[D]))",
                    self.sel("kubecost_node_is_spot", "")
                ),
            ),
            (
                M::ClaimInfo,
                last("kube_persistentvolumeclaim_info", "volumename!=\"\""),
            ),
            (M::PvInfo, last("kube_persistentvolume_info", "")),
            (M::ServiceSelector, last("service_selector_labels", "")),
            (
                M::LbIngress,
                last("kube_service_status_load_balancer_ingress", ""),
            ),
        ]
    }

    /// Reads `[start, end)` and cuts it into `windows`.
    async fn fetch(
        &self,
        windows: &[(Window, DateTime<Utc>)],
    ) -> Result<Vec<ClusterWindow>, SourceError> {
        let start = windows
            .iter()
            .map(|(w, _)| w.start)
            .min()
            .expect("a window");
        let end = windows
            .iter()
            .map(|(w, d)| w.end.min(*d))
            .max()
            .expect("a window");
        if end <= start {
            return Err(SourceError::NoData);
        }
        let res = self.res_ms();
        let t0 = start.timestamp_millis();
        // Whole steps only: the step still running is read once it has ended.
        let steps = (end.timestamp_millis() - t0) / res;
        if steps == 0 {
            return Err(SourceError::NoData);
        }
        let end = ms(t0 + steps * res);
        let chunk = (self.settings.max_query_duration.as_millis() as i64 / res)
            .clamp(1, MAX_STEPS_PER_QUERY);
        let range = format!("{}s", res / 1000);
        let step = Duration::from_millis(res as u64);

        let mut calls = Vec::new();
        for (q, text) in self.step_queries() {
            let text = text.replace("[R]", &format!("[{range}]"));
            let mut k0 = 0;
            while k0 < steps {
                let k1 = (k0 + chunk).min(steps);
                let first = ms(t0 + (k0 + 1) * res - 1);
                let last = ms(t0 + k1 * res - 1);
                let text = text.clone();
                calls.push(async move {
                    let s = self.client.range(&text, first, last, step).await?;
                    Ok::<_, QueryError>(Answer::Steps(q, s))
                });
                k0 = k1;
            }
        }
        let at = ms(end.timestamp_millis() - 1);
        let span = format!("{}ms", end.timestamp_millis() - t0);
        let mut meta_calls = Vec::new();
        for (m, text) in self.meta_queries() {
            let text = text.replace("[D]", &format!("[{span}]"));
            meta_calls.push(async move {
                let s = self.client.instant(&text, at).await?;
                Ok::<_, QueryError>(Answer::Meta(m, s))
            });
        }
        let (a, b) = futures::try_join!(try_join_all(calls), try_join_all(meta_calls)).map_err(
            |e| {
                tracing::warn!(error = %e, "Prometheus source: a query failed; the batch is not built");
                SourceError::Unavailable(e.to_string())
            },
        )?;

        let settings = self.settings.clone();
        let windows = windows.to_vec();
        tokio::task::spawn_blocking(move || {
            let data = Data::new(t0, res, a.into_iter().chain(b)).map_err(|e| {
                tracing::warn!(error = %e, "Prometheus source: the batch is not built");
                SourceError::Unavailable(e)
            })?;
            Ok(windows
                .iter()
                .filter_map(|(w, d)| data.window(*w, *d, &settings))
                .collect())
        })
        .await
        .map_err(|e| SourceError::Unavailable(format!("assembling the answers failed: {e}")))?
    }
}

fn ms(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t).expect("a time in range")
}

#[async_trait::async_trait]
impl DataSource for PrometheusSource {
    async fn window(
        self: Arc<Self>,
        window: Window,
        data_end: DateTime<Utc>,
    ) -> Result<ClusterWindow, SourceError> {
        self.fetch(&[(window, data_end)])
            .await?
            .pop()
            .ok_or(SourceError::NoData)
    }

    async fn windows(
        self: Arc<Self>,
        windows: Vec<(Window, DateTime<Utc>)>,
    ) -> Result<Vec<ClusterWindow>, SourceError> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        // No whole step yet (the first minutes of a day): nothing to build, not a failure.
        match self.fetch(&windows).await {
            Err(SourceError::NoData) => Ok(Vec::new()),
            other => other,
        }
    }

    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn queries_issued(&self) -> u64 {
        self.client.issued()
    }

    /// A step is read 1 ms before it ends; the last scrapes of a window are in Prometheus a
    /// scrape interval or so later. One step plus a minute covers that.
    fn settle(&self) -> chrono::Duration {
        chrono::Duration::milliseconds(self.res_ms()) + chrono::Duration::minutes(1)
    }
}

/// The per-step queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Q {
    Running,
    PodNode,
    CpuRequest,
    RamRequest,
    GpuRequest,
    CpuLimit,
    RamLimit,
    CpuUsage,
    RamUsage,
    RamMax,
    GpuUsage,
    NodeCpu,
    NodeRam,
    NodeGpu,
    NodeCpuPrice,
    NodeRamPrice,
    NodeGpuPrice,
    NodeCpuMode,
    NodeMemAvailable,
    PvBytes,
    PvPrice,
    PodClaims,
    LbCost,
    LbService,
    ClusterManagement,
    Egress,
    Transmit,
    Receive,
    ZoneEgressPrice,
    RegionEgressPrice,
    InternetEgressPrice,
}

/// The metadata queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum M {
    PodLabels,
    PodAnnotations,
    NamespaceLabels,
    NamespaceAnnotations,
    PodOwner,
    ReplicaSetOwner,
    JobOwner,
    NodeLabels,
    NodeInfo,
    NodeSpot,
    ClaimInfo,
    PvInfo,
    ServiceSelector,
    LbIngress,
}

enum Answer {
    Steps(Q, Vec<Series>),
    Meta(M, Vec<Series>),
}

/// One per-step series: its labels and its value at each step it has one.
struct StepSeries {
    labels: HashMap<String, String>,
    /// (step, value), by step.
    points: Vec<(i64, f64)>,
}

impl StepSeries {
    fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }

    /// The points within steps `[k0, k1)`.
    fn within(&self, k0: i64, k1: i64) -> &[(i64, f64)] {
        let a = self.points.partition_point(|(k, _)| *k < k0);
        let b = self.points.partition_point(|(k, _)| *k < k1);
        &self.points[a..b]
    }
}

type Key3 = (String, String, String);

/// (step, value) pairs, by step.
type Points = Vec<(i64, f64)>;

/// One series' values at the steps of a window, by step.
#[derive(Clone, Copy)]
struct Steps<'a>(&'a [(i64, f64)]);

impl Steps<'_> {
    /// The value at step `k`, or 0 where the series has none.
    fn at(self, k: i64) -> f64 {
        self.0
            .binary_search_by_key(&k, |(s, _)| *s)
            .map_or(0.0, |i| self.0[i].1)
    }
}

/// Every answer of a batch, indexed.
struct Data {
    t0: i64,
    res: i64,
    steps: HashMap<Q, Vec<StepSeries>>,
    meta: HashMap<M, Vec<Series>>,
    /// The metadata, indexed once for every window of the batch.
    m: Meta,
}

impl Data {
    /// The answers, indexed; an error when the server evaluated other times than asked (a
    /// server that moves a range query's start or end would shift or drop steps).
    fn new(t0: i64, res: i64, answers: impl Iterator<Item = Answer>) -> Result<Self, String> {
        let mut misaligned = false;
        let mut steps: HashMap<Q, Vec<StepSeries>> = HashMap::new();
        let mut meta: HashMap<M, Vec<Series>> = HashMap::new();
        // Chunks of the same query return the same series again: merge them by labels.
        let mut index: HashMap<(Q, Vec<(String, String)>), usize> = HashMap::new();
        for a in answers {
            match a {
                Answer::Steps(q, series) => {
                    let list = steps.entry(q).or_default();
                    for s in series {
                        let mut key: Vec<(String, String)> = s
                            .labels
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        key.sort();
                        if s.points.iter().any(|(t, _)| (t + 1 - t0) % res != 0) {
                            misaligned = true;
                        }
                        // Times become step numbers in place: no second copy of the points.
                        let mut points = s.points;
                        for p in &mut points {
                            p.0 = (p.0 + 1 - t0) / res - 1;
                        }
                        match index.get(&(q, key.clone())) {
                            Some(&i) => list[i].points.extend(points),
                            None => {
                                index.insert((q, key), list.len());
                                list.push(StepSeries {
                                    labels: s.labels,
                                    points,
                                });
                            }
                        }
                    }
                }
                Answer::Meta(m, series) => meta.entry(m).or_default().extend(series),
            }
        }
        for list in steps.values_mut() {
            for s in list {
                s.points.sort_by_key(|(k, _)| *k);
            }
        }
        if misaligned {
            return Err(format!(
                "the server answered for other times than the steps asked ({res} ms apart, 1 ms before each step's end); it may align range queries itself (VictoriaMetrics does unless given nocache=1)"
            ));
        }
        let mut data = Self {
            t0,
            res,
            steps,
            meta,
            m: Meta::default(),
        };
        data.m = Meta::new(&data);
        Ok(data)
    }

    fn q(&self, q: Q) -> &[StepSeries] {
        self.steps.get(&q).map_or(&[], Vec::as_slice)
    }

    fn m(&self, m: M) -> &[Series] {
        self.meta.get(&m).map_or(&[], Vec::as_slice)
    }

    /// Per-step values of `q` keyed by (namespace, pod, container), within `[k0, k1)`: slices of
    /// the answers, not copies (every query is aggregated `by (namespace, pod, container)`, so
    /// a key has one series).
    fn by_container(&self, q: Q, k0: i64, k1: i64) -> HashMap<Key3, Steps<'_>> {
        let mut out: HashMap<Key3, Steps<'_>> = HashMap::new();
        for s in self.q(q) {
            let key = (
                s.label("namespace").to_string(),
                s.label("pod").to_string(),
                s.label("container").to_string(),
            );
            let pts = s.within(k0, k1);
            if !pts.is_empty() {
                out.entry(key).or_insert(Steps(pts));
            }
        }
        out
    }

    /// Per-step values of `q` keyed by one label, within `[k0, k1)`.
    fn by_label(&self, q: Q, label: &str, k0: i64, k1: i64) -> HashMap<String, Vec<(i64, f64)>> {
        let mut out: HashMap<String, Vec<(i64, f64)>> = HashMap::new();
        for s in self.q(q) {
            out.entry(s.label(label).to_string())
                .or_default()
                .extend_from_slice(s.within(k0, k1));
        }
        out
    }

    /// The mean of a label-less per-step series within `[k0, k1)`, if it has points.
    fn scalar(&self, q: Q, k0: i64, k1: i64) -> Option<f64> {
        let pts: Vec<f64> = self
            .q(q)
            .iter()
            .flat_map(|s| s.within(k0, k1).iter().map(|(_, v)| *v))
            .collect();
        (!pts.is_empty()).then(|| pts.iter().sum::<f64>() / pts.len() as f64)
    }

    /// Each node's CPU breakdown from node-exporter's modes, and its memory breakdown from
    /// `MemAvailable` and its containers' working sets.
    fn breakdowns(
        &self,
        nodes: &mut [NodeUsage],
        capacity: &HashMap<String, Vec<(i64, f64)>>,
        used: &HashMap<String, (f64, f64)>,
        k0: i64,
        k1: i64,
    ) {
        let node_of = |s: &StepSeries| {
            let n = s.label("kubernetes_node");
            if n.is_empty() {
                s.label("node").to_string()
            } else {
                n.to_string()
            }
        };
        let mut modes: HashMap<String, BTreeMap<String, f64>> = HashMap::new();
        for s in self.q(Q::NodeCpuMode) {
            let total: f64 = s.within(k0, k1).iter().map(|(_, v)| v).sum();
            *modes
                .entry(node_of(s))
                .or_default()
                .entry(s.label("mode").to_string())
                .or_default() += total;
        }
        let mut available: HashMap<String, f64> = HashMap::new();
        for s in self.q(Q::NodeMemAvailable) {
            let pts = s.within(k0, k1);
            if !pts.is_empty() {
                available.insert(
                    node_of(s),
                    pts.iter().map(|(_, v)| v).sum::<f64>() / pts.len() as f64,
                );
            }
        }
        for n in nodes {
            if let Some(m) = modes.get(&n.name) {
                let total: f64 = m.values().sum();
                if total > 0.0 {
                    let get = |k: &str| m.get(k).copied().unwrap_or(0.0) / total;
                    let idle = get("idle");
                    let user = get("user") + get("nice");
                    let system = get("system");
                    n.cpu_breakdown = Breakdown {
                        idle,
                        other: (1.0 - idle - user - system).max(0.0),
                        system,
                        user,
                    };
                }
            }
            let Some(pts) = capacity.get(&n.name).filter(|p| !p.is_empty()) else {
                continue;
            };
            let byte_steps: f64 = pts.iter().map(|(_, v)| v).sum();
            let cap = byte_steps / pts.len() as f64;
            if byte_steps <= 0.0 {
                continue;
            }
            let (sys, usr) = used.get(&n.name).copied().unwrap_or_default();
            let (system, user) = ((sys / byte_steps).min(1.0), (usr / byte_steps).min(1.0));
            let idle = match available.get(&n.name) {
                Some(a) => (a / cap).clamp(0.0, 1.0),
                None => (1.0 - system - user).max(0.0),
            };
            n.ram_breakdown = Breakdown {
                idle,
                other: (1.0 - idle - system - user).max(0.0),
                system,
                user,
            };
        }
    }

    fn time(&self, k: i64) -> DateTime<Utc> {
        ms(self.t0 + k * self.res)
    }

    /// One window of the batch, or `None` when nothing ran in it.
    fn window<'s>(
        &'s self,
        w: Window,
        data_end: DateTime<Utc>,
        s: &Settings,
    ) -> Option<ClusterWindow> {
        let k0 = (w.start.timestamp_millis() - self.t0) / self.res;
        let k1 = (w.end.min(data_end).timestamp_millis() - self.t0) / self.res;
        if k1 <= k0 {
            return None;
        }
        let end = self.time(k1);
        let hours_per_step = self.res as f64 / 3.6e6;
        let clamp = |t: DateTime<Utc>| t.clamp(w.start, end);
        let meta = &self.m;

        // Nodes.
        let node_cpu = self.by_label(Q::NodeCpu, "node", k0, k1);
        let node_ram = self.by_label(Q::NodeRam, "node", k0, k1);
        let node_gpu = self.by_label(Q::NodeGpu, "node", k0, k1);
        let cpu_price = self.by_label(Q::NodeCpuPrice, "node", k0, k1);
        let ram_price = self.by_label(Q::NodeRamPrice, "node", k0, k1);
        let gpu_price = self.by_label(Q::NodeGpuPrice, "node", k0, k1);
        let mean = |m: &HashMap<String, Vec<(i64, f64)>>, n: &str| {
            m.get(n)
                .filter(|p| !p.is_empty())
                .map(|p| p.iter().map(|(_, v)| v).sum::<f64>() / p.len() as f64)
        };
        let mut nodes = Vec::new();
        for (name, pts) in &node_cpu {
            if pts.is_empty() || name.is_empty() {
                continue;
            }
            let labels = meta.node_labels.get(name).cloned().unwrap_or_default();
            let spot = meta.node_spot.get(name).copied().unwrap_or(false) || is_spot(&labels);
            let first = pts.iter().map(|(k, _)| *k).min().unwrap_or(k0);
            let last = pts.iter().map(|(k, _)| *k).max().unwrap_or(k0);
            let steps_up = pts.len() as f64;
            let gpu_count = mean(&node_gpu, name).unwrap_or(0.0);
            let price = |m: &HashMap<String, Vec<(i64, f64)>>, fallback: f64| {
                mean(m, name).filter(|p| *p > 0.0).unwrap_or(fallback)
            };
            // A node's cores, bytes and GPUs over the steps it was up; its cost is
            // count × hours up × price, so `start`/`end` bound the steps that were up.
            let up_hours = steps_up * hours_per_step;
            let span = ((last - first + 1) as f64 * hours_per_step).max(up_hours);
            let scale = up_hours / span;
            nodes.push(NodeUsage {
                name: name.clone(),
                instance_type: labels
                    .get("node_kubernetes_io_instance_type")
                    .or_else(|| labels.get("beta_kubernetes_io_instance_type"))
                    .cloned()
                    .unwrap_or_default(),
                provider_id: meta.node_provider.get(name).cloned().unwrap_or_default(),
                cpu_cores: mean(&node_cpu, name).unwrap_or(0.0) * scale,
                ram_bytes: mean(&node_ram, name).unwrap_or(0.0) * scale,
                cpu_price: price(&cpu_price, s.pricing.cpu(spot)),
                ram_price: price(&ram_price, s.pricing.ram(spot)),
                gpu_count: gpu_count * scale,
                gpu_price: price(&gpu_price, s.pricing.gpu(spot)),
                spot,
                start: clamp(self.time(first)),
                end: clamp(self.time(last + 1)),
                labels,
                cpu_breakdown: Breakdown::default(),
                ram_breakdown: Breakdown::default(),
            });
        }

        // Containers: one per (namespace, pod, container, node), from the steps it ran.
        let running = self.by_container(Q::Running, k0, k1);
        let cpu_req = self.by_container(Q::CpuRequest, k0, k1);
        let ram_req = self.by_container(Q::RamRequest, k0, k1);
        let gpu_req = self.by_container(Q::GpuRequest, k0, k1);
        let cpu_lim = self.by_container(Q::CpuLimit, k0, k1);
        let ram_lim = self.by_container(Q::RamLimit, k0, k1);
        let cpu_use = self.by_container(Q::CpuUsage, k0, k1);
        let ram_use = self.by_container(Q::RamUsage, k0, k1);
        let ram_max = self.by_container(Q::RamMax, k0, k1);
        let gpu_use = self.by_container(Q::GpuUsage, k0, k1);
        let mut pod_node: HashMap<(String, String), Vec<(i64, String)>> = HashMap::new();
        for sr in self.q(Q::PodNode) {
            let e = pod_node
                .entry((
                    sr.label("namespace").to_string(),
                    sr.label("pod").to_string(),
                ))
                .or_default();
            e.extend(
                sr.within(k0, k1)
                    .iter()
                    .map(|(k, _)| (*k, sr.label("node").to_string())),
            );
        }
        for v in pod_node.values_mut() {
            v.sort();
        }
        let node_at = |ns: &str, pod: &str, k: i64| -> String {
            pod_node
                .get(&(ns.to_string(), pod.to_string()))
                .and_then(|v| {
                    let i = v.partition_point(|(s, _)| *s <= k);
                    // The pod's node at step k, or the nearest step before it.
                    (i > 0)
                        .then(|| v[i - 1].1.clone())
                        .or_else(|| v.first().map(|x| x.1.clone()))
                })
                .unwrap_or_default()
        };
        let zero = Steps(&[]);
        let mut containers = Vec::new();
        let mut pod_minutes: HashMap<(String, String), f64> = HashMap::new();
        // node → (Σ working set of kube-system containers, of the others) over the steps.
        let mut node_ram_use: HashMap<String, (f64, f64)> = HashMap::new();
        let mut keys: Vec<&Key3> = running.keys().collect();
        keys.sort();
        for key in keys {
            let (ns, pod, container) = key;
            let mut by_node: BTreeMap<String, Vec<i64>> = BTreeMap::new();
            for (k, _) in running[key].0 {
                by_node.entry(node_at(ns, pod, *k)).or_default().push(*k);
            }
            let get =
                |m: &HashMap<Key3, Steps<'s>>| -> Steps<'s> { m.get(key).copied().unwrap_or(zero) };
            let (cr, rr, gr) = (get(&cpu_req), get(&ram_req), get(&gpu_req));
            let (cl, rl) = (get(&cpu_lim), get(&ram_lim));
            let (cu, ru, rm, gu) = (get(&cpu_use), get(&ram_use), get(&ram_max), get(&gpu_use));
            for (node, ks) in by_node {
                let n = ks.len() as f64;
                let at = |m: Steps<'_>, k: &i64| m.at(*k);
                let sum = |m: Steps<'_>| ks.iter().map(|k| at(m, k)).sum::<f64>();
                let peak = |m: Steps<'_>| ks.iter().map(|k| at(m, k)).fold(0.0, f64::max);
                let cpu_core_hours = ks
                    .iter()
                    .map(|k| at(cr, k).max(at(cu, k)).min(CPU_SANITY_LIMIT))
                    .sum::<f64>()
                    * hours_per_step;
                let ram_byte_hours =
                    ks.iter().map(|k| at(rr, k).max(at(ru, k))).sum::<f64>() * hours_per_step;
                let used = node_ram_use.entry(node.clone()).or_default();
                if ns == "kube-system" {
                    used.0 += sum(ru);
                } else {
                    used.1 += sum(ru);
                }
                let minutes = pod_minutes.entry((ns.clone(), pod.clone())).or_default();
                *minutes = minutes.max(n * hours_per_step * 60.0);
                let pm = meta.pod(ns, pod);
                containers.push(ContainerUsage {
                    namespace: ns.clone(),
                    pod: pod.clone(),
                    container: container.clone(),
                    node,
                    controller: pm.controller.0.clone(),
                    controller_kind: pm.controller.1.clone(),
                    labels: pm.labels.clone(),
                    annotations: pm.annotations.clone(),
                    namespace_labels: meta.namespace_labels.get(ns).cloned().unwrap_or_default(),
                    namespace_annotations: meta
                        .namespace_annotations
                        .get(ns)
                        .cloned()
                        .unwrap_or_default(),
                    services: meta.services_of(ns, &pm.labels),
                    start: clamp(self.time(ks[0])),
                    end: clamp(self.time(ks[ks.len() - 1] + 1)),
                    cpu_request_avg: sum(cr) / n,
                    cpu_usage_avg: sum(cu) / n,
                    cpu_usage_max: peak(cu),
                    cpu_limit_avg: sum(cl) / n,
                    cpu_core_hours,
                    ram_request_avg: sum(rr) / n,
                    ram_usage_avg: sum(ru) / n,
                    ram_usage_max: peak(rm),
                    ram_limit_avg: sum(rl) / n,
                    ram_byte_hours,
                    gpu_request_avg: sum(gr) / n,
                    gpu_usage_avg: sum(gu) / n,
                    gpu_hours: sum(gr) * hours_per_step,
                });
            }
        }
        if nodes.is_empty() && containers.is_empty() {
            return None;
        }
        self.breakdowns(&mut nodes, &node_ram, &node_ram_use, k0, k1);

        // Volumes: each step's cost split evenly over the running pods mounting its claim.
        let mut pod_steps: HashMap<(&str, &str), HashSet<i64>> = HashMap::new();
        for ((n, p, _), steps) in &running {
            pod_steps
                .entry((n.as_str(), p.as_str()))
                .or_default()
                .extend(steps.0.iter().map(|(k, _)| *k));
        }
        let none = HashSet::new();
        let mut claim_pods: HashMap<(String, String), HashMap<i64, Vec<String>>> = HashMap::new();
        for sr in self.q(Q::PodClaims) {
            let (ns, pod) = (sr.label("namespace"), sr.label("pod"));
            let runs = pod_steps.get(&(ns, pod)).unwrap_or(&none);
            let e = claim_pods
                .entry((
                    ns.to_string(),
                    sr.label("persistentvolumeclaim").to_string(),
                ))
                .or_default();
            for (k, _) in sr.within(k0, k1) {
                if runs.contains(k) {
                    let list = e.entry(*k).or_default();
                    if !list.iter().any(|p| p == pod) {
                        list.push(pod.to_string());
                    }
                }
            }
        }
        let pv_price = self.by_label(Q::PvPrice, "persistentvolume", k0, k1);
        let mut volumes = Vec::new();
        for (pv, pts) in self.by_label(Q::PvBytes, "persistentvolume", k0, k1) {
            if pts.is_empty() || pv.is_empty() {
                continue;
            }
            let claim = meta.claims.get(&pv);
            let pods_by_step = claim.and_then(|c| claim_pods.get(&(c.0.clone(), c.1.clone())));
            let mut mounts: BTreeMap<String, f64> = BTreeMap::new();
            let mut unmounted_hours = 0.0;
            for (k, _) in &pts {
                match pods_by_step
                    .and_then(|m| m.get(k))
                    .filter(|p| !p.is_empty())
                {
                    Some(list) => {
                        for p in list {
                            *mounts.entry(p.clone()).or_default() +=
                                hours_per_step / list.len() as f64;
                        }
                    }
                    None => unmounted_hours += hours_per_step,
                }
            }
            let first = pts.iter().map(|(k, _)| *k).min().unwrap_or(k0);
            let last = pts.iter().map(|(k, _)| *k).max().unwrap_or(k0);
            let (claim_namespace, claim_name) = claim.cloned().unwrap_or_default();
            volumes.push(VolumeUsage {
                provider_id: meta
                    .pv_provider
                    .get(&pv)
                    .cloned()
                    .unwrap_or_else(|| pv.clone()),
                bytes: pts.iter().map(|(_, v)| v).sum::<f64>() / pts.len() as f64,
                price: mean(&pv_price, &pv)
                    .filter(|p| *p > 0.0)
                    .unwrap_or(s.pricing.storage),
                storage_class: meta.storage_class.get(&pv).cloned().unwrap_or_default(),
                mounts: mounts
                    .into_iter()
                    .map(|(pod, hours)| VolumeMount {
                        namespace: claim_namespace.clone(),
                        pod,
                        hours,
                    })
                    .collect(),
                unmounted_hours,
                claim_namespace,
                claim_name,
                start: clamp(self.time(first)),
                end: clamp(self.time(last + 1)),
                name: pv,
            });
        }
        volumes.sort_by(|a, b| a.name.cmp(&b.name));

        // Load balancers: priced by the exporter, else at the pricing file's price.
        let mut load_balancers = Vec::new();
        let mut priced: HashSet<(String, String)> = HashSet::new();
        let lb_cost = self.q(Q::LbCost);
        let mut lb_keys: Vec<(String, String, String)> = lb_cost
            .iter()
            .map(|sr| {
                (
                    sr.label("namespace").to_string(),
                    sr.label("service_name").to_string(),
                    sr.label("ingress_ip").to_string(),
                )
            })
            .collect();
        lb_keys.sort();
        lb_keys.dedup();
        let lb_price: HashMap<(String, String, String), Vec<(i64, f64)>> = lb_cost
            .iter()
            .map(|sr| {
                (
                    (
                        sr.label("namespace").to_string(),
                        sr.label("service_name").to_string(),
                        sr.label("ingress_ip").to_string(),
                    ),
                    sr.within(k0, k1).to_vec(),
                )
            })
            .collect();
        let mut lbs: Vec<(String, String, String, Points)> = lb_keys
            .into_iter()
            .filter_map(|k| {
                let pts = lb_price.get(&k).cloned().unwrap_or_default();
                (!pts.is_empty()).then_some((k.0, k.1, k.2, pts))
            })
            .collect();
        for (ns, svc, _, _) in &lbs {
            priced.insert((ns.clone(), svc.clone()));
        }
        for sr in self.q(Q::LbService) {
            let key = (
                sr.label("namespace").to_string(),
                sr.label("service").to_string(),
            );
            let pts = sr.within(k0, k1);
            if pts.is_empty() || priced.contains(&key) {
                continue;
            }
            let ip = meta.lb_ip.get(&key).cloned().unwrap_or_default();
            let pts = pts
                .iter()
                .map(|(k, _)| (*k, s.pricing.load_balancer))
                .collect();
            lbs.push((key.0, key.1, ip, pts));
        }
        for (ns, svc, ip, pts) in lbs {
            let first = pts.iter().map(|(k, _)| *k).min().unwrap_or(k0);
            let last = pts.iter().map(|(k, _)| *k).max().unwrap_or(k0);
            let span = (last - first + 1) as f64 * hours_per_step;
            // cost = price × hours up; `costing` multiplies the price by end − start.
            let price = pts.iter().map(|(_, v)| v).sum::<f64>() * hours_per_step / span;
            let selector = meta.selectors.get(&(ns.clone(), svc.clone()));
            let mut pods: Vec<(String, String)> = meta
                .pods
                .iter()
                .filter(|((pns, _), pm)| {
                    *pns == ns && selector.is_some_and(|sel| matches(sel, &pm.labels))
                })
                .filter(|(k, _)| pod_minutes.contains_key(*k))
                .map(|(k, _)| k.clone())
                .collect();
            pods.sort();
            load_balancers.push(LoadBalancerUsage {
                namespace: ns,
                service: svc,
                ip,
                price,
                start: clamp(self.time(first)),
                end: clamp(self.time(last + 1)),
                pods,
            });
        }

        // Network.
        let mut nets: BTreeMap<(String, String), PodNetwork> = BTreeMap::new();
        for sr in self.q(Q::Egress) {
            let bytes: f64 = sr.within(k0, k1).iter().map(|(_, v)| v).sum();
            let key = (
                sr.label("namespace").to_string(),
                sr.label("pod_name").to_string(),
            );
            let n = nets.entry(key.clone()).or_insert_with(|| PodNetwork {
                namespace: key.0.clone(),
                pod: key.1.clone(),
                ..PodNetwork::default()
            });
            if sr.label("internet") == "true" {
                n.internet_egress_bytes += bytes;
            } else if sr.label("same_region") == "true" {
                if sr.label("same_zone") != "true" {
                    n.zone_egress_bytes += bytes;
                }
            } else {
                n.region_egress_bytes += bytes;
            }
        }
        for (q, transmit) in [(Q::Transmit, true), (Q::Receive, false)] {
            for sr in self.q(q) {
                let bytes: f64 = sr.within(k0, k1).iter().map(|(_, v)| v).sum();
                let key = (
                    sr.label("namespace").to_string(),
                    sr.label("pod").to_string(),
                );
                let n = nets.entry(key.clone()).or_insert_with(|| PodNetwork {
                    namespace: key.0.clone(),
                    pod: key.1.clone(),
                    ..PodNetwork::default()
                });
                if transmit {
                    n.transfer_bytes += bytes;
                } else {
                    n.receive_bytes += bytes;
                }
            }
        }
        let egress_prices = EgressPrices {
            zone: self
                .scalar(Q::ZoneEgressPrice, k0, k1)
                .unwrap_or(s.pricing.zone_egress),
            region: self
                .scalar(Q::RegionEgressPrice, k0, k1)
                .unwrap_or(s.pricing.region_egress),
            internet: self
                .scalar(Q::InternetEgressPrice, k0, k1)
                .unwrap_or(s.pricing.internet_egress),
        };

        let cluster_management = self.q(Q::ClusterManagement).iter().find_map(|sr| {
            let pts = sr.within(k0, k1);
            (!pts.is_empty()).then(|| ClusterManagement {
                provisioner: sr.label("provisioner_name").to_string(),
                price: pts.iter().map(|(_, v)| v).sum::<f64>() / pts.len() as f64,
                hours: pts.len() as f64 * hours_per_step,
            })
        });

        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        // A step no node reported in is a gap in Prometheus's data (an outage of the scrapers,
        // of Prometheus, or data past its retention): a window with one is published with the
        // data it has but never as complete, so every run tries it again.
        let covered: HashSet<i64> = node_cpu.values().flatten().map(|(k, _)| *k).collect();
        let data_end = match (k0..k1).find(|k| !covered.contains(k)) {
            None => end,
            Some(gap) => {
                let last = (k0..k1).rev().find(|k| covered.contains(k)).unwrap_or(gap);
                let until = if last > gap {
                    self.time(last + 1)
                } else {
                    self.time(gap)
                };
                until
                    .min(w.end - chrono::Duration::milliseconds(1))
                    .max(w.start)
            }
        };
        Some(ClusterWindow {
            window: w,
            data_end,
            nodes,
            containers,
            volumes,
            load_balancers,
            networks: nets.into_values().collect(),
            egress_prices,
            cluster_management,
        })
    }
}

/// What the metadata queries say about one pod.
#[derive(Default)]
struct PodMeta {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    /// (name, kind in lower case)
    controller: (String, String),
}

/// The metadata of a batch, indexed.
#[derive(Default)]
struct Meta {
    pods: BTreeMap<(String, String), PodMeta>,
    namespace_labels: HashMap<String, BTreeMap<String, String>>,
    namespace_annotations: HashMap<String, BTreeMap<String, String>>,
    node_labels: HashMap<String, BTreeMap<String, String>>,
    node_provider: HashMap<String, String>,
    node_spot: HashMap<String, bool>,
    /// volume → (claim namespace, claim name)
    claims: HashMap<String, (String, String)>,
    storage_class: HashMap<String, String>,
    pv_provider: HashMap<String, String>,
    /// (namespace, service) → selector, keys without `label_`.
    selectors: HashMap<(String, String), BTreeMap<String, String>>,
    lb_ip: HashMap<(String, String), String>,
}

/// Labels with `prefix` stripped from their names (`label_app` → `app`).
fn prefixed(s: &Series, prefix: &str) -> BTreeMap<String, String> {
    s.labels
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
        .collect()
}

impl Meta {
    fn new(d: &Data) -> Self {
        let mut pods: BTreeMap<(String, String), PodMeta> = BTreeMap::new();
        let key = |s: &Series| (s.label("namespace").to_string(), s.label("pod").to_string());
        for s in d.m(M::PodLabels) {
            pods.entry(key(s))
                .or_default()
                .labels
                .extend(prefixed(s, "label_"));
        }
        for s in d.m(M::PodAnnotations) {
            pods.entry(key(s))
                .or_default()
                .annotations
                .extend(prefixed(s, "annotation_"));
        }
        // (namespace, ReplicaSet or Job) → (owner name, owner kind).
        let owners = |m: M, name: &str| -> HashMap<(String, String), (String, String)> {
            d.m(m)
                .iter()
                .map(|s| {
                    let key = (s.label("namespace").to_string(), s.label(name).to_string());
                    let owner = (
                        s.label("owner_name").to_string(),
                        s.label("owner_kind").to_string(),
                    );
                    (key, owner)
                })
                .collect()
        };
        let rs_owner = owners(M::ReplicaSetOwner, "replicaset");
        let job_owner = owners(M::JobOwner, "job_name");
        for s in d.m(M::PodOwner) {
            if s.label("owner_is_controller") == "false" {
                continue;
            }
            let (ns, kind, name) = (
                s.label("namespace"),
                s.label("owner_kind"),
                s.label("owner_name"),
            );
            let up = |m: &HashMap<(String, String), (String, String)>| {
                m.get(&(ns.to_string(), name.to_string()))
                    .filter(|(n, k)| {
                        !n.is_empty() && n != "<none>" && !k.is_empty() && k != "<none>"
                    })
                    .map(|(n, k)| (n.clone(), k.to_lowercase()))
            };
            let controller = match kind {
                "" | "<none>" => (String::new(), String::new()),
                "ReplicaSet" => up(&rs_owner).unwrap_or((name.to_string(), "replicaset".into())),
                "Job" => up(&job_owner).unwrap_or((name.to_string(), "job".into())),
                k => (name.to_string(), k.to_lowercase()),
            };
            pods.entry(key(s)).or_default().controller = controller;
        }
        let by = |m: M, prefix: &str| -> HashMap<String, BTreeMap<String, String>> {
            let mut out: HashMap<String, BTreeMap<String, String>> = HashMap::new();
            for s in d.m(m) {
                out.entry(s.label("namespace").to_string())
                    .or_default()
                    .extend(prefixed(s, prefix));
            }
            out
        };
        let mut node_labels: HashMap<String, BTreeMap<String, String>> = HashMap::new();
        for s in d.m(M::NodeLabels) {
            node_labels
                .entry(s.label("node").to_string())
                .or_default()
                .extend(prefixed(s, "label_"));
        }
        let node_provider = d
            .m(M::NodeInfo)
            .iter()
            .filter(|s| !s.label("provider_id").is_empty())
            .map(|s| {
                (
                    s.label("node").to_string(),
                    s.label("provider_id").to_string(),
                )
            })
            .collect();
        let node_spot = d
            .m(M::NodeSpot)
            .iter()
            .map(|s| {
                let spot = s.points.last().is_some_and(|(_, v)| *v > 0.0);
                (s.label("node").to_string(), spot)
            })
            .collect();
        let mut claims = HashMap::new();
        let mut storage_class = HashMap::new();
        for s in d.m(M::ClaimInfo) {
            let pv = s.label("volumename").to_string();
            claims.insert(
                pv.clone(),
                (
                    s.label("namespace").to_string(),
                    s.label("persistentvolumeclaim").to_string(),
                ),
            );
            if !s.label("storageclass").is_empty() {
                storage_class.insert(pv, s.label("storageclass").to_string());
            }
        }
        let mut pv_provider = HashMap::new();
        for s in d.m(M::PvInfo) {
            let pv = s.label("persistentvolume").to_string();
            if !s.label("storageclass").is_empty() {
                storage_class
                    .entry(pv.clone())
                    .or_insert_with(|| s.label("storageclass").to_string());
            }
            for id in [
                "csi_volume_handle",
                "ebs_volume_id",
                "gce_persistent_disk_name",
                "azure_disk_name",
            ] {
                if !s.label(id).is_empty() {
                    pv_provider.insert(pv.clone(), s.label(id).to_string());
                    break;
                }
            }
        }
        let selectors = d
            .m(M::ServiceSelector)
            .iter()
            .map(|s| {
                (
                    (
                        s.label("namespace").to_string(),
                        s.label("service").to_string(),
                    ),
                    prefixed(s, "label_"),
                )
            })
            .collect();
        let lb_ip = d
            .m(M::LbIngress)
            .iter()
            .map(|s| {
                let ip = if s.label("ip").is_empty() {
                    s.label("hostname")
                } else {
                    s.label("ip")
                };
                (
                    (
                        s.label("namespace").to_string(),
                        s.label("service").to_string(),
                    ),
                    ip.to_string(),
                )
            })
            .collect();
        Self {
            pods,
            namespace_labels: by(M::NamespaceLabels, "label_"),
            namespace_annotations: by(M::NamespaceAnnotations, "annotation_"),
            node_labels,
            node_provider,
            node_spot,
            claims,
            storage_class,
            pv_provider,
            selectors,
            lb_ip,
        }
    }

    fn pod(&self, ns: &str, pod: &str) -> &PodMeta {
        static EMPTY: std::sync::OnceLock<PodMeta> = std::sync::OnceLock::new();
        self.pods
            .get(&(ns.to_string(), pod.to_string()))
            .unwrap_or_else(|| EMPTY.get_or_init(PodMeta::default))
    }

    /// The services of `ns` whose selector matches `labels`.
    fn services_of(&self, ns: &str, labels: &BTreeMap<String, String>) -> Vec<String> {
        let mut out: Vec<String> = self
            .selectors
            .iter()
            .filter(|((sns, _), sel)| sns == ns && matches(sel, labels))
            .map(|((_, svc), _)| svc.clone())
            .collect();
        out.sort();
        out
    }
}

/// A non-empty selector matches labels holding every one of its pairs.
fn matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Spot (preemptible) nodes by the labels the big providers and Karpenter set. Keys are compared
/// without case or underscores: kube-state-metrics versions differ in how they sanitise
/// `eks.amazonaws.com/capacityType` (`capacityType` or `capacity_type`).
fn is_spot(labels: &BTreeMap<String, String>) -> bool {
    const SPOT: [(&str, &str); 7] = [
        ("eksamazonawscomcapacitytype", "spot"),
        ("karpentershcapacitytype", "spot"),
        ("cloudgooglecomgkespot", "true"),
        ("cloudgooglecomgkepreemptible", "true"),
        ("kubernetesazurecomscalesetpriority", "spot"),
        ("nodekubernetesiolifecycle", "spot"),
        ("lifecycle", "ec2spot"),
    ];
    labels.iter().any(|(k, v)| {
        let k: String = k
            .chars()
            .filter(|c| *c != '_')
            .collect::<String>()
            .to_lowercase();
        SPOT.iter()
            .any(|(key, value)| k == *key && v.eq_ignore_ascii_case(value))
    })
}
