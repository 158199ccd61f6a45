//! The embedded demo cluster: a deterministic, simulated Kubernetes cluster. Every replica with
//! the same seed and size computes the same pods, requests and usage for any hour, so the demo
//! needs no Prometheus and replicas agree bit for bit.
//!
//! Shape: nodes of four instance types (one in five on spot prices), six namespaces,
//! deployments that roll out once a day, statefulsets with persistent volumes, daemonsets on
//! every node, hourly jobs that run for part of an hour, two load balancers and one orphaned
//! volume. Usage is constant within an hour and follows a daily curve plus per-hour noise.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, DurationRound, Timelike, Utc};

use std::sync::Arc;

use super::source::{
    ClusterWindow, ContainerUsage, DataSource, EgressPrices, LoadBalancerUsage, NodeUsage,
    SourceError, VolumeMount, VolumeUsage,
};
use crate::model::Window;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MIB: f64 = 1024.0 * 1024.0;
/// $ per GiB-hour of storage: Kubecost's default $0.04 per GB-month.
pub const STORAGE_PRICE: f64 = 0.000_054_794_52;

/// (instance type, cores, GiB, $/core-h, $/GiB-h)
const INSTANCE_TYPES: [(&str, f64, f64, f64, f64); 4] = [
    ("m5.2xlarge", 8.0, 32.0, 0.031_611, 0.004_237),
    ("c5.4xlarge", 16.0, 32.0, 0.028_000, 0.003_500),
    ("r5.2xlarge", 8.0, 64.0, 0.024_500, 0.004_800),
    ("m5.4xlarge", 16.0, 64.0, 0.031_611, 0.004_237),
];
/// Spot prices ($/core-h, $/GiB-h): Kubecost's default spotCPU and spotRAM.
const SPOT_PRICES: (f64, f64) = (0.006_655, 0.000_892);

/// Kind of controller that owns a workload's pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Pods renamed by a rollout at 00:00 UTC every day.
    Deployment,
    /// Stable pods `<name>-<i>`, each with a persistent volume.
    StatefulSet,
    /// One pod on every node.
    DaemonSet,
    /// Pods that run for part of every `every_hours`-th hour.
    Job {
        /// Period in hours.
        every_hours: u32,
    },
}

impl Kind {
    /// OpenCost's lower-case controller kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "deployment",
            Kind::StatefulSet => "statefulset",
            Kind::DaemonSet => "daemonset",
            Kind::Job { .. } => "job",
        }
    }
}

/// A node of the demo cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoNode {
    /// Node name.
    pub name: String,
    /// Instance type.
    pub instance_type: String,
    /// CPU capacity, in cores.
    pub cpu_cores: f64,
    /// RAM capacity, in bytes.
    pub ram_bytes: f64,
    /// $ per core-hour.
    pub cpu_price: f64,
    /// $ per GiB-hour.
    pub ram_price: f64,
    /// Whether the node runs at spot prices.
    pub spot: bool,
}

/// A container template.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoContainer {
    /// Container name.
    pub name: String,
    /// Cores.
    pub cpu_request: f64,
    /// Bytes.
    pub ram_request: f64,
    /// How hot the container runs relative to its request, at the quiet hour.
    pub cpu_base: f64,
    /// How much the daily curve adds at the busy hour.
    pub cpu_swing: f64,
}

/// A controller and its pods' template.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoWorkload {
    /// Namespace.
    pub namespace: String,
    /// Controller name, also its pods' `app` label.
    pub name: String,
    /// Controller kind.
    pub kind: Kind,
    /// Pods it runs (per run, for a job; a daemonset runs one per node).
    pub replicas: usize,
    /// The containers of each pod.
    pub containers: Vec<DemoContainer>,
    /// Labels of its pods.
    pub labels: BTreeMap<String, String>,
    /// Persistent volume size per pod (statefulsets).
    pub volume_bytes: Option<f64>,
}

/// A load balancer service selecting one workload's pods.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoLoadBalancer {
    /// The service's namespace.
    pub namespace: String,
    /// Service name.
    pub service: String,
    /// Name of the workload, in the same namespace, whose pods it selects.
    pub workload: String,
    /// Ingress IP.
    pub ip: String,
    /// $ per hour.
    pub price: f64,
}

/// A pod running (part of) one hour.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoPod {
    /// Pod name.
    pub name: String,
    /// Index into [`DemoCluster::workloads`].
    pub workload: usize,
    /// Index into [`DemoCluster::nodes`].
    pub node: usize,
    /// When the pod runs within the hour asked about.
    pub start: DateTime<Utc>,
    /// When the pod stops running within the hour asked about.
    pub end: DateTime<Utc>,
    /// Claim name of its volume (statefulsets).
    pub claim: Option<String>,
}

/// The demo cluster: a pure function of `(seed, pods)`.
#[derive(Clone, Debug)]
pub struct DemoCluster {
    /// The seed every name, placement and usage derives from.
    pub seed: u64,
    /// The nodes.
    pub nodes: Vec<DemoNode>,
    /// The controllers and their pod templates.
    pub workloads: Vec<DemoWorkload>,
    /// The load balancer services.
    pub load_balancers: Vec<DemoLoadBalancer>,
    /// An orphaned volume no pod mounts: (pv name, claim namespace, claim name, bytes).
    pub orphan_volume: (String, String, String, f64),
}

fn container(name: &str, cpu: f64, ram_mib: f64, cpu_base: f64, cpu_swing: f64) -> DemoContainer {
    DemoContainer {
        name: name.to_string(),
        cpu_request: cpu,
        ram_request: ram_mib * MIB,
        cpu_base,
        cpu_swing,
    }
}

fn team_of(namespace: &str) -> &'static str {
    match namespace {
        "kube-system" => "infra",
        "kubecost" => "finops",
        "frontend" => "web",
        "backend" => "platform",
        "data" => "data",
        _ => "analytics",
    }
}

impl DemoCluster {
    /// The cluster with about `pods` pods running at once, generated from `seed`.
    pub fn new(seed: u64, pods: usize) -> Self {
        let pods = pods.max(20);
        let node_count = pods.div_ceil(15).max(3);
        let nodes = (0..node_count)
            .map(|i| {
                let (ty, cores, gib, cpu_price, ram_price) =
                    INSTANCE_TYPES[i % INSTANCE_TYPES.len()];
                let spot = i % 5 == 4;
                let (cpu_price, ram_price) = if spot {
                    SPOT_PRICES
                } else {
                    (cpu_price, ram_price)
                };
                DemoNode {
                    name: format!(
                        "node-{}-{:04x}",
                        ty.replace('.', "-"),
                        hash(seed, &[b"node", &i.to_le_bytes()]) & 0xffff
                    ),
                    instance_type: ty.to_string(),
                    cpu_cores: cores,
                    ram_bytes: gib * GIB,
                    cpu_price,
                    ram_price,
                    spot,
                }
            })
            .collect::<Vec<_>>();

        let mut workloads = Vec::new();
        let mut add = |namespace: &str,
                       name: &str,
                       kind: Kind,
                       replicas: usize,
                       containers: Vec<DemoContainer>,
                       volume_gib: Option<f64>| {
            let mut labels = BTreeMap::new();
            labels.insert("app".to_string(), name.to_string());
            labels.insert("team".to_string(), team_of(namespace).to_string());
            let env = if namespace == "batch" {
                "staging"
            } else {
                "production"
            };
            labels.insert("env".to_string(), env.to_string());
            workloads.push(DemoWorkload {
                namespace: namespace.to_string(),
                name: name.to_string(),
                kind,
                replicas: replicas.max(1),
                containers,
                labels,
                volume_bytes: volume_gib.map(|g| g * GIB),
            });
        };
        add(
            "kube-system",
            "kube-proxy",
            Kind::DaemonSet,
            node_count,
            vec![container("kube-proxy", 0.1, 128.0, 0.2, 0.3)],
            None,
        );
        add(
            "kube-system",
            "node-exporter",
            Kind::DaemonSet,
            node_count,
            vec![container("node-exporter", 0.05, 64.0, 0.3, 0.2)],
            None,
        );
        add(
            "kubecost",
            "cost-model",
            Kind::Deployment,
            2,
            vec![container("cost-model", 0.2, 512.0, 0.4, 0.4)],
            None,
        );
        add(
            "kubecost",
            "prometheus",
            Kind::Deployment,
            1,
            vec![
                container("prometheus", 0.5, 2048.0, 0.6, 0.3),
                container("config-reloader", 0.01, 32.0, 0.1, 0.0),
            ],
            None,
        );
        add(
            "data",
            "postgres",
            Kind::StatefulSet,
            3,
            vec![container("postgres", 1.0, 4096.0, 0.3, 0.6)],
            Some(100.0),
        );
        add(
            "data",
            "kafka",
            Kind::StatefulSet,
            (pods / 30).max(3),
            vec![container("kafka", 0.5, 2048.0, 0.5, 0.5)],
            Some(200.0),
        );
        add(
            "batch",
            "report",
            Kind::Job { every_hours: 2 },
            (pods / 50).max(1),
            vec![container("report", 1.0, 1024.0, 0.7, 0.4)],
            None,
        );
        add(
            "batch",
            "etl-import",
            Kind::Job { every_hours: 3 },
            (pods / 100).max(1),
            vec![container("importer", 0.5, 2048.0, 0.8, 0.2)],
            None,
        );
        let fixed: usize = 2 * node_count
            + 2
            + 1
            + 3
            + (pods / 30).max(3)
            + (pods / 50).max(1)
            + (pods / 100).max(1);
        let rest = pods.saturating_sub(fixed).max(4);
        let share = |pct: usize| (rest * pct / 100).max(1);
        add(
            "frontend",
            "web",
            Kind::Deployment,
            share(30),
            vec![
                container("nginx", 0.1, 128.0, 0.3, 0.5),
                container("app", 0.25, 512.0, 0.4, 0.8),
            ],
            None,
        );
        add(
            "backend",
            "api",
            Kind::Deployment,
            share(30),
            vec![
                container("api", 0.5, 1024.0, 0.3, 0.9),
                container("envoy", 0.05, 64.0, 0.5, 0.5),
            ],
            None,
        );
        add(
            "backend",
            "worker",
            Kind::Deployment,
            share(25),
            vec![container("worker", 1.0, 2048.0, 0.2, 0.7)],
            None,
        );
        add(
            "backend",
            "auth",
            Kind::Deployment,
            share(15),
            vec![container("auth", 0.2, 256.0, 0.5, 0.4)],
            None,
        );

        let load_balancers = vec![
            DemoLoadBalancer {
                namespace: "frontend".into(),
                service: "web".into(),
                workload: "web".into(),
                ip: "203.0.113.10".into(),
                price: 0.025,
            },
            DemoLoadBalancer {
                namespace: "kubecost".into(),
                service: "cost-analyzer".into(),
                workload: "cost-model".into(),
                ip: "10.0.0.50".into(),
                price: 0.025,
            },
        ];
        Self {
            seed,
            nodes,
            workloads,
            load_balancers,
            orphan_volume: (
                "pvc-orphan-backup".into(),
                "data".into(),
                "backup-old".into(),
                50.0 * GIB,
            ),
        }
    }

    /// Every pod that runs at some time within the hour starting at `hour` (which must be a whole
    /// hour), with its running interval clipped to that hour.
    pub fn pods_in_hour(&self, hour: DateTime<Utc>) -> Vec<DemoPod> {
        let day = hour
            .duration_trunc(Duration::days(1))
            .expect("UTC day truncation");
        let day_no = day.timestamp() / 86_400;
        let hour_no = hour.timestamp() / 3_600;
        let full = (hour, hour + Duration::hours(1));
        let mut pods = Vec::new();
        for (wi, w) in self.workloads.iter().enumerate() {
            match w.kind {
                Kind::Deployment => {
                    let rs = hash(self.seed, &[w.name.as_bytes(), &day_no.to_le_bytes()]);
                    for r in 0..w.replicas {
                        let suffix = hash(
                            self.seed,
                            &[w.name.as_bytes(), &day_no.to_le_bytes(), &r.to_le_bytes()],
                        );
                        let name = format!("{}-{}-{}", w.name, short(rs, 10), short(suffix, 5));
                        let node = (hash(self.seed, &[name.as_bytes()]) % self.nodes.len() as u64)
                            as usize;
                        pods.push(DemoPod {
                            name,
                            workload: wi,
                            node,
                            start: full.0,
                            end: full.1,
                            claim: None,
                        });
                    }
                }
                Kind::StatefulSet => {
                    for r in 0..w.replicas {
                        let name = format!("{}-{r}", w.name);
                        let node = (hash(self.seed, &[name.as_bytes()]) % self.nodes.len() as u64)
                            as usize;
                        let claim = Some(format!("data-{name}"));
                        pods.push(DemoPod {
                            name,
                            workload: wi,
                            node,
                            start: full.0,
                            end: full.1,
                            claim,
                        });
                    }
                }
                Kind::DaemonSet => {
                    for (node, n) in self.nodes.iter().enumerate() {
                        let name = format!(
                            "{}-{}",
                            w.name,
                            short(hash(self.seed, &[w.name.as_bytes(), n.name.as_bytes()]), 5)
                        );
                        pods.push(DemoPod {
                            name,
                            workload: wi,
                            node,
                            start: full.0,
                            end: full.1,
                            claim: None,
                        });
                    }
                }
                Kind::Job { every_hours } => {
                    if (hour_no + wi as i64).rem_euclid(i64::from(every_hours)) != 0 {
                        continue;
                    }
                    for r in 0..w.replicas {
                        let name = format!("{}-{}-{r}", w.name, hour.format("%Y%m%d%H"));
                        let h = hash(self.seed, &[name.as_bytes()]);
                        let start_min = (h % 20) as i64;
                        let run_min = 10 + ((h >> 8) % 30) as i64;
                        let node = ((h >> 16) % self.nodes.len() as u64) as usize;
                        let start = hour + Duration::minutes(start_min);
                        pods.push(DemoPod {
                            name,
                            workload: wi,
                            node,
                            start,
                            end: start + Duration::minutes(run_min),
                            claim: None,
                        });
                    }
                }
            }
        }
        pods
    }

    /// CPU usage (cores) and RAM usage (bytes) of one container of `pod` during the hour
    /// starting at `hour`: constant within the hour. Also the peak CPU and RAM of that hour.
    pub fn usage(&self, pod: &DemoPod, container: &DemoContainer, hour: DateTime<Utc>) -> Usage {
        let hour_of_day = f64::from(hour.hour());
        // Busy at 14:00 UTC, quiet at 02:00.
        let curve = 0.5 + 0.5 * ((hour_of_day - 8.0) / 24.0 * std::f64::consts::TAU).sin();
        let h = hash(
            self.seed,
            &[
                pod.name.as_bytes(),
                container.name.as_bytes(),
                &hour.timestamp().to_le_bytes(),
            ],
        );
        let noise = unit(h);
        let peak_noise = unit(h.rotate_left(17));
        let cpu = container.cpu_request
            * (container.cpu_base + container.cpu_swing * curve + 0.3 * noise);
        let ram = container.ram_request * (0.6 + 0.3 * curve + 0.3 * unit(h.rotate_left(31)));
        Usage {
            cpu,
            ram,
            cpu_max: cpu * (1.0 + 0.5 * peak_noise),
            ram_max: ram * (1.0 + 0.1 * peak_noise),
        }
    }

    /// Persistent volume name bound to a statefulset claim.
    pub fn volume_name(&self, claim: &str) -> String {
        format!("pvc-{:016x}", hash(self.seed, &[claim.as_bytes()]))
    }

    /// The node's provider id.
    pub fn provider_id(node: &DemoNode) -> String {
        format!("aws:///us-east-1a/i-{}", &node.name[node.name.len() - 4..])
    }
}

/// One container's usage in one hour.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    /// CPU usage, in cores.
    pub cpu: f64,
    /// RAM usage, in bytes.
    pub ram: f64,
    /// Peak CPU usage in the hour, in cores.
    pub cpu_max: f64,
    /// Peak RAM usage in the hour, in bytes.
    pub ram_max: f64,
}

/// Running sums for one container across the hours of a window.
#[derive(Default)]
struct Acc {
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    minutes: f64,
    cpu_req_min: f64,
    cpu_use_min: f64,
    cpu_max: f64,
    cpu_core_hours: f64,
    ram_req_min: f64,
    ram_use_min: f64,
    ram_max: f64,
    ram_byte_hours: f64,
}

#[async_trait::async_trait]
impl DataSource for DemoCluster {
    async fn window(
        self: Arc<Self>,
        window: Window,
        data_end: DateTime<Utc>,
    ) -> Result<ClusterWindow, SourceError> {
        tokio::task::spawn_blocking(move || Ok(self.compute(window, data_end)))
            .await
            .map_err(|e| SourceError::Unavailable(format!("demo source task failed: {e}")))?
    }

    fn name(&self) -> &'static str {
        "demo"
    }
}

impl DemoCluster {
    /// The demo cluster's metrics of `window`, up to `data_end`.
    pub fn compute(&self, window: Window, data_end: DateTime<Utc>) -> ClusterWindow {
        let end = window.end.min(data_end).max(window.start);
        let effective = Window::new(window.start, end);
        // Each pod's running sums, one `Acc` per container, in the order first seen; found by
        // name within its workload. (A map keyed by (workload, pod name, container) cost a
        // string-comparing tree search per container per hour, its log factor growing with the
        // cluster; the output's order, by workload then pod name, is restored by one sort.)
        let mut acc: Vec<(DemoPod, Vec<Acc>)> = Vec::new();
        let mut index: Vec<HashMap<String, usize>> = vec![HashMap::new(); self.workloads.len()];
        let mut lb_pods: BTreeMap<usize, Vec<(String, String)>> = BTreeMap::new();
        // The pods already listed per load balancer: a pod runs every hour of the window, and a
        // scan of the list for each of its hours made the window quadratic in the pods a load
        // balancer selects (a quarter of the cluster's pods select `web`).
        let mut lb_seen: Vec<HashSet<String>> = vec![HashSet::new(); self.load_balancers.len()];
        let mut mounted: BTreeMap<String, (String, String, Window)> = BTreeMap::new();
        let mut hour = window
            .start
            .duration_trunc(Duration::hours(1))
            .expect("hour truncation");
        while hour < effective.end {
            for pod in self.pods_in_hour(hour) {
                let Some(run) = Window::new(pod.start, pod.end).intersect(&effective) else {
                    continue;
                };
                let w = &self.workloads[pod.workload];
                for (li, lb) in self.load_balancers.iter().enumerate() {
                    if lb.namespace == w.namespace
                        && lb.workload == w.name
                        && !lb_seen[li].contains(&pod.name)
                    {
                        lb_seen[li].insert(pod.name.clone());
                        lb_pods
                            .entry(li)
                            .or_default()
                            .push((w.namespace.clone(), pod.name.clone()));
                    }
                }
                if let Some(claim) = &pod.claim {
                    let e = mounted
                        .entry(claim.clone())
                        .or_insert_with(|| (w.namespace.clone(), pod.name.clone(), run));
                    if e.1 == pod.name {
                        e.2 = Window::new(e.2.start.min(run.start), e.2.end.max(run.end));
                    } else {
                        *e = (w.namespace.clone(), pod.name.clone(), run);
                    }
                }
                let minutes = run.minutes();
                let slot = match index[pod.workload].get(&pod.name) {
                    Some(&i) => i,
                    None => {
                        index[pod.workload].insert(pod.name.clone(), acc.len());
                        let sums = w.containers.iter().map(|_| Acc::default()).collect();
                        acc.push((pod.clone(), sums));
                        acc.len() - 1
                    }
                };
                for (c, a) in w.containers.iter().zip(acc[slot].1.iter_mut()) {
                    let u = self.usage(&pod, c, hour);
                    a.start = Some(a.start.map_or(run.start, |s| s.min(run.start)));
                    a.end = Some(a.end.map_or(run.end, |e| e.max(run.end)));
                    a.minutes += minutes;
                    a.cpu_req_min += c.cpu_request * minutes;
                    a.cpu_use_min += u.cpu * minutes;
                    a.cpu_max = a.cpu_max.max(u.cpu_max);
                    a.cpu_core_hours += c.cpu_request.max(u.cpu) * minutes / 60.0;
                    a.ram_req_min += c.ram_request * minutes;
                    a.ram_use_min += u.ram * minutes;
                    a.ram_max = a.ram_max.max(u.ram_max);
                    a.ram_byte_hours += c.ram_request.max(u.ram) * minutes / 60.0;
                }
            }
            hour += Duration::hours(1);
        }
        drop(index);
        acc.sort_unstable_by(|(a, _), (b, _)| (a.workload, &a.name).cmp(&(b.workload, &b.name)));

        let mut containers = Vec::with_capacity(acc.iter().map(|(_, sums)| sums.len()).sum());
        for (pod, sums) in acc {
            let w = &self.workloads[pod.workload];
            for (c, a) in w.containers.iter().zip(sums) {
                let services = self
                    .load_balancers
                    .iter()
                    .filter(|lb| lb.namespace == w.namespace && lb.workload == w.name)
                    .map(|lb| lb.service.clone())
                    .collect();
                let avg = |x: f64| if a.minutes > 0.0 { x / a.minutes } else { 0.0 };
                containers.push(ContainerUsage {
                    namespace: w.namespace.clone(),
                    pod: pod.name.clone(),
                    container: c.name.clone(),
                    node: self.nodes[pod.node].name.clone(),
                    controller: w.name.clone(),
                    controller_kind: w.kind.as_str().to_string(),
                    labels: w.labels.clone(),
                    // The demo has no annotations or namespace metadata: each map held by
                    // every allocation would add about 0.6 KB to each (a source that has them
                    // fills them in).
                    annotations: BTreeMap::new(),
                    namespace_labels: BTreeMap::new(),
                    namespace_annotations: BTreeMap::new(),
                    services,
                    start: a.start.unwrap_or(effective.start),
                    end: a.end.unwrap_or(effective.start),
                    cpu_request_avg: avg(a.cpu_req_min),
                    cpu_usage_avg: avg(a.cpu_use_min),
                    cpu_usage_max: a.cpu_max,
                    cpu_limit_avg: 0.0,
                    cpu_core_hours: a.cpu_core_hours,
                    ram_request_avg: avg(a.ram_req_min),
                    ram_usage_avg: avg(a.ram_use_min),
                    ram_usage_max: a.ram_max,
                    ram_limit_avg: 0.0,
                    ram_byte_hours: a.ram_byte_hours,
                    gpu_request_avg: 0.0,
                    gpu_usage_avg: 0.0,
                    gpu_hours: 0.0,
                });
            }
        }

        let nodes = self
            .nodes
            .iter()
            .map(|n| NodeUsage {
                name: n.name.clone(),
                instance_type: n.instance_type.clone(),
                provider_id: Self::provider_id(n),
                cpu_cores: n.cpu_cores,
                ram_bytes: n.ram_bytes,
                cpu_price: n.cpu_price,
                ram_price: n.ram_price,
                gpu_count: 0.0,
                gpu_price: 0.0,
                spot: n.spot,
                start: effective.start,
                end: effective.end,
                labels: BTreeMap::from([(
                    "node_kubernetes_io_instance_type".to_string(),
                    n.instance_type.clone(),
                )]),
                cpu_breakdown: Default::default(),
                ram_breakdown: Default::default(),
            })
            .collect();

        let mut volumes = Vec::new();
        if effective.start < effective.end {
            for w in &self.workloads {
                let (Kind::StatefulSet, Some(bytes)) = (w.kind, w.volume_bytes) else {
                    continue;
                };
                for r in 0..w.replicas {
                    let claim = format!("data-{}-{r}", w.name);
                    let hours = effective.hours();
                    let (mounts, unmounted_hours) = match mounted.get(&claim) {
                        Some((ns, pod, run)) => {
                            let share = run.intersect(&effective).map_or(0.0, |r| r.hours());
                            let mount = VolumeMount {
                                namespace: ns.clone(),
                                pod: pod.clone(),
                                hours: share,
                            };
                            (vec![mount], hours - share)
                        }
                        None => (Vec::new(), hours),
                    };
                    volumes.push(VolumeUsage {
                        name: self.volume_name(&claim),
                        provider_id: format!(
                            "vol-{:012x}",
                            hash(self.seed, &[claim.as_bytes(), b"vol"]) & 0xffff_ffff_ffff
                        ),
                        bytes,
                        price: STORAGE_PRICE,
                        storage_class: "gp3".into(),
                        claim_namespace: w.namespace.clone(),
                        mounts,
                        unmounted_hours,
                        claim_name: claim,
                        start: effective.start,
                        end: effective.end,
                    });
                }
            }
            let (pv, ns, claim, bytes) = &self.orphan_volume;
            volumes.push(VolumeUsage {
                name: pv.clone(),
                provider_id: "vol-0rphan".into(),
                bytes: *bytes,
                price: STORAGE_PRICE,
                storage_class: "gp3".into(),
                claim_namespace: ns.clone(),
                claim_name: claim.clone(),
                mounts: Vec::new(),
                unmounted_hours: effective.hours(),
                start: effective.start,
                end: effective.end,
            });
        }

        let load_balancers = if effective.start < effective.end {
            self.load_balancers
                .iter()
                .enumerate()
                .map(|(li, lb)| LoadBalancerUsage {
                    namespace: lb.namespace.clone(),
                    service: lb.service.clone(),
                    ip: lb.ip.clone(),
                    price: lb.price,
                    start: effective.start,
                    end: effective.end,
                    pods: lb_pods.remove(&li).unwrap_or_default(),
                })
                .collect()
        } else {
            Vec::new()
        };

        ClusterWindow {
            window,
            data_end: effective.end,
            nodes,
            containers,
            volumes,
            load_balancers,
            networks: Vec::new(),
            egress_prices: EgressPrices::default(),
            cluster_management: None,
        }
    }
}

/// FNV-1a over the parts, finished with splitmix64 and the seed: stable across platforms and
/// releases, which is what "same seed, same data on every replica" needs.
fn hash(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    splitmix(h ^ splitmix(seed))
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A float in `[0, 1)` from a hash.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// `n` lower-case alphanumerics from a hash, like Kubernetes' generated name suffixes.
fn short(mut h: u64, n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..n)
        .map(|_| {
            let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
            h /= ALPHABET.len() as u64;
            if h == 0 {
                h = splitmix(n as u64);
            }
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn hour(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 20, h, 0, 0).unwrap()
    }

    #[test]
    fn same_seed_same_cluster() {
        let a = DemoCluster::new(7, 300);
        let b = DemoCluster::new(7, 300);
        assert_eq!(a.pods_in_hour(hour(5)), b.pods_in_hour(hour(5)));
        let w = Window::new(hour(0), hour(3));
        assert_eq!(a.compute(w, w.end), b.compute(w, w.end));
        let c = DemoCluster::new(8, 300);
        assert_ne!(
            a.pods_in_hour(hour(5)),
            c.pods_in_hour(hour(5)),
            "seed must matter"
        );
    }

    #[test]
    fn shape_matches_the_issue() {
        let c = DemoCluster::new(1, 300);
        assert!(c.nodes.len() >= 3);
        let types: std::collections::BTreeSet<_> =
            c.nodes.iter().map(|n| &n.instance_type).collect();
        assert!(types.len() >= 3, "nodes of different sizes");
        let namespaces: std::collections::BTreeSet<_> =
            c.workloads.iter().map(|w| &w.namespace).collect();
        assert_eq!(namespaces.len(), 6);
        let running = c.pods_in_hour(hour(4)).len();
        assert!(
            (250..=400).contains(&running),
            "about 300 pods, got {running}"
        );
        let bigger = DemoCluster::new(1, 3000).pods_in_hour(hour(4)).len();
        assert!(
            bigger > 2500,
            "--demo-pods scales the cluster, got {bigger}"
        );
    }

    #[test]
    fn usage_varies_by_hour_and_jobs_run_part_of_an_hour() {
        let c = DemoCluster::new(1, 300);
        let pods = c.pods_in_hour(hour(2));
        let pod = pods
            .iter()
            .find(|p| p.name.starts_with("postgres-0"))
            .unwrap();
        let cont = &c.workloads[pod.workload].containers[0];
        assert_ne!(
            c.usage(pod, cont, hour(2)).cpu,
            c.usage(pod, cont, hour(14)).cpu
        );
        let job = (0..24)
            .flat_map(|h| c.pods_in_hour(hour(h)))
            .find(|p| c.workloads[p.workload].kind.as_str() == "job")
            .expect("jobs run");
        assert!(job.end - job.start < Duration::hours(1));
    }

    /// A canonical text of everything a window reports: every field written out by hand (floats
    /// by their bits), so the digest pins the data itself and not some type's `Debug`.
    fn canonical(cw: &ClusterWindow) -> String {
        use std::fmt::Write;
        let t = |d: &DateTime<Utc>| d.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let f = |x: f64| format!("{:016x}", x.to_bits());
        let m = |b: &BTreeMap<String, String>| format!("{b:?}");
        let mut s = String::new();
        let w = &mut s;
        writeln!(
            w,
            "window {} {} data_end {}",
            t(&cw.window.start),
            t(&cw.window.end),
            t(&cw.data_end)
        )
        .unwrap();
        for n in &cw.nodes {
            assert_eq!(
                n.cpu_breakdown,
                Default::default(),
                "the demo has no breakdowns"
            );
            assert_eq!(
                n.ram_breakdown,
                Default::default(),
                "the demo has no breakdowns"
            );
            writeln!(
                w,
                "node {} {} {} {} {} {} {} {} {} {} {} {} {}",
                n.name,
                n.instance_type,
                n.provider_id,
                f(n.cpu_cores),
                f(n.ram_bytes),
                f(n.cpu_price),
                f(n.ram_price),
                f(n.gpu_count),
                f(n.gpu_price),
                n.spot,
                t(&n.start),
                t(&n.end),
                m(&n.labels)
            )
            .unwrap();
        }
        for c in &cw.containers {
            writeln!(
                w,
                "container {} {} {} {} {} {} {} {} {} {} {:?} {} {}",
                c.namespace,
                c.pod,
                c.container,
                c.node,
                c.controller,
                c.controller_kind,
                m(&c.labels),
                m(&c.annotations),
                m(&c.namespace_labels),
                m(&c.namespace_annotations),
                c.services,
                t(&c.start),
                t(&c.end)
            )
            .unwrap();
            for x in [
                c.cpu_request_avg,
                c.cpu_usage_avg,
                c.cpu_usage_max,
                c.cpu_limit_avg,
                c.cpu_core_hours,
                c.ram_request_avg,
                c.ram_usage_avg,
                c.ram_usage_max,
                c.ram_limit_avg,
                c.ram_byte_hours,
                c.gpu_request_avg,
                c.gpu_usage_avg,
                c.gpu_hours,
            ] {
                write!(w, " {}", f(x)).unwrap();
            }
            writeln!(w).unwrap();
        }
        for v in &cw.volumes {
            writeln!(
                w,
                "volume {} {} {} {} {} {} {} {} {} {}",
                v.name,
                v.provider_id,
                f(v.bytes),
                f(v.price),
                v.storage_class,
                v.claim_namespace,
                v.claim_name,
                f(v.unmounted_hours),
                t(&v.start),
                t(&v.end)
            )
            .unwrap();
            for mnt in &v.mounts {
                writeln!(w, "  mount {} {} {}", mnt.namespace, mnt.pod, f(mnt.hours)).unwrap();
            }
        }
        for lb in &cw.load_balancers {
            writeln!(
                w,
                "lb {} {} {} {} {} {} {:?}",
                lb.namespace,
                lb.service,
                lb.ip,
                f(lb.price),
                t(&lb.start),
                t(&lb.end),
                lb.pods
            )
            .unwrap();
        }
        assert!(cw.networks.is_empty(), "the demo has no network data");
        let e = cw.egress_prices;
        writeln!(w, "egress {} {} {}", f(e.zone), f(e.region), f(e.internet)).unwrap();
        assert!(
            cw.cluster_management.is_none(),
            "the demo has no cluster management fee"
        );
        s
    }

    /// The demo's output for several sizes and windows is pinned by digest, so a change made for
    /// speed cannot change the data by accident. A change meant to alter the data updates these
    /// digests in the same commit and says why.
    #[test]
    fn output_is_pinned_by_digest() {
        use sha2::{Digest, Sha256};
        let at = |d: u32, h: u32, min: u32| Utc.with_ymd_and_hms(2026, 11, d, h, min, 0).unwrap();
        // (pods, window start, window end, data end)
        let cases = [
            // a whole day
            (300, at(20, 0, 0), at(21, 0, 0), at(21, 0, 0)),
            // one hour
            (1000, at(20, 5, 0), at(20, 6, 0), at(20, 6, 0)),
            // across midnight (deployments roll), unaligned, cut short by the data's end
            (1000, at(20, 22, 25), at(21, 3, 10), at(21, 1, 40)),
            // two days: pods of both rollouts, load balancers select both
            (3000, at(19, 0, 0), at(21, 0, 0), at(21, 0, 0)),
            // the smallest cluster, a day still running
            (5, at(21, 0, 0), at(22, 0, 0), at(21, 13, 17)),
            // no data yet
            (300, at(21, 0, 0), at(22, 0, 0), at(20, 12, 0)),
        ];
        let expected = [
            "919797e8c4abdc5a80e8b0c1da807ead4b51d9ec2569b8e8dde93ea4cca08817",
            "d223b843b190839c0fefa2a5c74df111200d8754dabd3b494541d13a967f1e90",
            "bb07be4f030933fa386c0449341b346b218390650a423e2b0079d7e294d97f25",
            "0cf0314874e9bc10310db47c0e0b9338c11ba0c9aeb2b312e6429a6bb25daf7b",
            "61c7af59c98160f49515fc14d201c062c1f44a336de2f34903f701e7f0a016aa",
            "6f736fe89f01116ef89f0066528c5f64b5428502320ef64c3bb79783d437eef0",
        ];
        let mut got = Vec::new();
        for (pods, start, end, data_end) in cases {
            let cw = DemoCluster::new(20240601, pods).compute(Window::new(start, end), data_end);
            got.push(hex::encode(Sha256::digest(canonical(&cw).as_bytes())));
        }
        assert_eq!(got, expected, "the demo's output changed");
    }

    #[test]
    fn deployments_roll_daily() {
        let c = DemoCluster::new(1, 100);
        let day1 = c.pods_in_hour(hour(23));
        let day2 = c.pods_in_hour(hour(23) + Duration::hours(1));
        let web1: Vec<_> = day1.iter().filter(|p| p.name.starts_with("web-")).collect();
        let web2: Vec<_> = day2.iter().filter(|p| p.name.starts_with("web-")).collect();
        assert_eq!(web1.len(), web2.len());
        assert_ne!(web1[0].name, web2[0].name);
    }
}
