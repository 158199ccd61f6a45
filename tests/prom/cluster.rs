//! A synthetic Kubernetes cluster over time, written as the series its scrapers would have put
//! in Prometheus: kube-state-metrics, cAdvisor (and DCGM for GPUs), Kubecost's network-costs
//! daemonset and the Kubecost/OpenCost cost exporter.
//!
//! The types are plain data; [`Cluster::to_openmetrics`] streams them as the OpenMetrics text
//! `promtool tsdb create-blocks-from openmetrics` loads: one `# TYPE` line per family, all of a
//! family's series together, each series' samples in time order, timestamps in seconds, and
//! `# EOF` at the end. Nothing is collected first: a family is written entity by entity and a
//! series sample by sample, so a week of a thousand pods costs no more memory than an hour.
//!
//! Sampling: each entity has one sample per [`Cluster::scrape`] at `s, s + scrape, …` while
//! `t < e`, where `[s, e)` is the entity's own `[start, end)` clamped to the cluster's. So an
//! entity that starts off the cluster's scrape grid has its samples off the grid too: its first
//! sample is exactly at its start. Entity times default to "always" (the whole cluster span).
//!
//! Counters (`container_cpu_usage_seconds_total`, `kubecost_pod_network_egress_bytes_total`)
//! start at 0 at the later of the pod's start and the cluster's start, and grow at a constant
//! rate; their OpenMetrics family is declared without `_total`, and the TSDB stores the sample
//! name, with `_total`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Bytes in a GiB: memory and storage prices are per GiB-hour.
pub const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// The cluster: every entity, its life time, and the prices the cost exporter writes.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// First sample time of the cluster (inclusive).
    pub start: DateTime<Utc>,
    /// End of the cluster's span (exclusive): no sample at or after it.
    pub end: DateTime<Utc>,
    /// Time between two samples of one series (60 s by default).
    pub scrape: Duration,
    /// Nodes.
    pub nodes: Vec<Node>,
    /// Namespaces (labels and annotations; pods may name namespaces not listed here).
    pub namespaces: Vec<Namespace>,
    /// Pods; a pod that moves node is two `Pod`s with the same namespace/name.
    pub pods: Vec<Pod>,
    /// Persistent volumes, with their claims.
    pub pvs: Vec<Pv>,
    /// Services of type LoadBalancer.
    pub load_balancers: Vec<LoadBalancer>,
    /// `kubecost_cluster_management_cost`, $ per hour, when Some.
    pub cluster_management_hourly: Option<f64>,
    /// The `kubecost_network_*_egress_cost` prices, when Some.
    pub egress_prices: Option<EgressPrices>,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            start: DateTime::<Utc>::UNIX_EPOCH,
            end: DateTime::<Utc>::UNIX_EPOCH,
            scrape: Duration::from_secs(60),
            nodes: Vec::new(),
            namespaces: Vec::new(),
            pods: Vec::new(),
            pvs: Vec::new(),
            load_balancers: Vec::new(),
            cluster_management_hourly: None,
            egress_prices: None,
        }
    }
}

/// Network egress prices, $ per GiB.
#[derive(Clone, Debug, Default)]
pub struct EgressPrices {
    /// Across zones in a region.
    pub zone: f64,
    /// Across regions.
    pub region: f64,
    /// To the internet.
    pub internet: f64,
}

/// A node and its prices.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub instance_type: String,
    pub region: String,
    pub zone: String,
    pub provider_id: String,
    /// `amd64` by default.
    pub arch: String,
    pub cpu_cores: f64,
    pub ram_bytes: f64,
    pub gpus: f64,
    /// Adds `label_eks_amazonaws_com_capacity_type="SPOT"` and `kubecost_node_is_spot` 1.
    pub spot: bool,
    /// $ per core-hour; None = the exporter writes no price series for this node.
    pub cpu_hourly: Option<f64>,
    /// $ per GiB-hour.
    pub ram_hourly: Option<f64>,
    /// $ per GPU-hour.
    pub gpu_hourly: Option<f64>,
    /// Further node labels (Kubernetes keys, sanitised on output) on `kube_node_labels`.
    pub labels: Vec<(String, String)>,
    /// What node-exporter reports, when it runs on the node.
    pub exporter: Option<NodeExporter>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// node-exporter's view of a node: the fractions of its CPU time in `user` and `system` mode
/// (the rest is `idle`), and its available memory.
#[derive(Clone, Debug, Default)]
pub struct NodeExporter {
    pub cpu_user: f64,
    pub cpu_system: f64,
    pub mem_available_bytes: f64,
}

impl Default for Node {
    fn default() -> Self {
        Node {
            name: String::new(),
            instance_type: String::new(),
            region: String::new(),
            zone: String::new(),
            provider_id: String::new(),
            arch: "amd64".into(),
            cpu_cores: 0.0,
            ram_bytes: 0.0,
            gpus: 0.0,
            spot: false,
            cpu_hourly: None,
            ram_hourly: None,
            gpu_hourly: None,
            labels: Vec::new(),
            exporter: None,
            start: DateTime::<Utc>::MIN_UTC,
            end: DateTime::<Utc>::MAX_UTC,
        }
    }
}

/// A namespace's metadata; its series span the whole cluster.
#[derive(Clone, Debug, Default)]
pub struct Namespace {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
}

/// What controls a pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Owner {
    #[default]
    None,
    ReplicaSet {
        replicaset: String,
        deployment: Option<String>,
    },
    StatefulSet(String),
    DaemonSet(String),
    Job {
        job: String,
        cronjob: Option<String>,
    },
}

impl Owner {
    /// `(kind, name)` as kube-state-metrics writes them, `<none>` for both when none.
    pub fn kind_name(&self) -> (&str, &str) {
        match self {
            Owner::None => ("<none>", "<none>"),
            Owner::ReplicaSet { replicaset, .. } => ("ReplicaSet", replicaset),
            Owner::StatefulSet(n) => ("StatefulSet", n),
            Owner::DaemonSet(n) => ("DaemonSet", n),
            Owner::Job { job, .. } => ("Job", job),
        }
    }
}

/// One run of a pod on one node.
#[derive(Clone, Debug)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    pub owner: Owner,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub containers: Vec<Container>,
    /// Claim names mounted (in the pod's namespace).
    pub pvcs: Vec<String>,
    pub egress: Egress,
}

impl Default for Pod {
    fn default() -> Self {
        Pod {
            namespace: String::new(),
            name: String::new(),
            uid: String::new(),
            node: String::new(),
            owner: Owner::None,
            labels: Vec::new(),
            annotations: Vec::new(),
            start: DateTime::<Utc>::MIN_UTC,
            end: DateTime::<Utc>::MAX_UTC,
            containers: Vec::new(),
            pvcs: Vec::new(),
            egress: Egress::default(),
        }
    }
}

/// A pod's network egress, bytes per hour (constant).
#[derive(Clone, Debug, Default)]
pub struct Egress {
    pub internet_bytes_per_hour: f64,
    pub cross_zone_bytes_per_hour: f64,
    pub cross_region_bytes_per_hour: f64,
}

/// A container: requests and limits as in its spec, usage constant over its pod's life.
#[derive(Clone, Debug, Default)]
pub struct Container {
    pub name: String,
    /// Cores.
    pub cpu_request: f64,
    pub cpu_limit: f64,
    /// Cores, constant.
    pub cpu_usage: f64,
    /// Bytes.
    pub ram_request: f64,
    pub ram_limit: f64,
    /// Bytes, constant.
    pub ram_usage: f64,
    pub gpu_request: f64,
    /// 0..1, written as `DCGM_FI_PROF_GR_ENGINE_ACTIVE` when `gpu_request > 0`.
    pub gpu_usage: f64,
}

/// A persistent volume.
#[derive(Clone, Debug)]
pub struct Pv {
    pub name: String,
    pub storage_class: String,
    pub bytes: f64,
    /// $ per GiB-hour (`pv_hourly_cost`), when Some.
    pub hourly_per_gib: Option<f64>,
    pub provider_id: String,
    /// The claim bound to it; its series live as long as the volume.
    pub claim: Option<Claim>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Default for Pv {
    fn default() -> Self {
        Pv {
            name: String::new(),
            storage_class: String::new(),
            bytes: 0.0,
            hourly_per_gib: None,
            provider_id: String::new(),
            claim: None,
            start: DateTime::<Utc>::MIN_UTC,
            end: DateTime::<Utc>::MAX_UTC,
        }
    }
}

/// A persistent volume claim.
#[derive(Clone, Debug, Default)]
pub struct Claim {
    pub namespace: String,
    pub name: String,
    pub request_bytes: f64,
}

/// A service of type LoadBalancer.
#[derive(Clone, Debug)]
pub struct LoadBalancer {
    pub namespace: String,
    pub service: String,
    pub ip: String,
    /// $ per hour.
    pub hourly: f64,
    /// The service's selector (`service_selector_labels`).
    pub selector: Vec<(String, String)>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Default for LoadBalancer {
    fn default() -> Self {
        LoadBalancer {
            namespace: String::new(),
            service: String::new(),
            ip: String::new(),
            hourly: 0.0,
            selector: Vec::new(),
            start: DateTime::<Utc>::MIN_UTC,
            end: DateTime::<Utc>::MAX_UTC,
        }
    }
}

/// A Kubernetes label or annotation key as kube-state-metrics writes it: `prefix` + the key
/// with every character outside `[a-zA-Z0-9_]` replaced by `_`, then camelCase turned into
/// snake_case (`_` between a lower-case letter or digit and an upper-case letter, all lower
/// case): `eks.amazonaws.com/capacityType` → `label_eks_amazonaws_com_capacity_type`.
pub fn sanitize_key(prefix: &str, key: &str) -> String {
    let chars: Vec<char> = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut out = String::with_capacity(prefix.len() + key.len() + 4);
    out.push_str(prefix);
    // Non-overlapping matches of ([a-z0-9])([A-Z]), left to right, as Go's ReplaceAllString.
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if (c.is_ascii_lowercase() || c.is_ascii_digit())
            && chars.get(i + 1).is_some_and(|n| n.is_ascii_uppercase())
        {
            out.push(c);
            out.push('_');
            out.push(chars[i + 1].to_ascii_lowercase());
            i += 2;
        } else {
            out.push(c.to_ascii_lowercase());
            i += 1;
        }
    }
    out
}

/// Kubernetes labels or annotations as kube-state-metrics turns them into Prometheus labels:
/// keys sorted, each through [`sanitize_key`], and keys that end up with the same name all
/// suffixed `_conflict1`, `_conflict2`, … in key order. A key given twice keeps its first value.
pub fn kube_labels(prefix: &str, pairs: &[(String, String)]) -> Vec<(String, String)> {
    let mut sorted: Vec<&(String, String)> = Vec::with_capacity(pairs.len());
    for p in pairs {
        if !sorted.iter().any(|q| q.0 == p.0) {
            sorted.push(p);
        }
    }
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<String> = sorted
        .iter()
        .map(|(k, _)| sanitize_key(prefix, k))
        .collect();
    let mut out = Vec::with_capacity(sorted.len());
    for (i, (name, (_, value))) in names.iter().zip(&sorted).enumerate() {
        let same = names.iter().filter(|n| *n == name).count();
        let name = if same > 1 {
            let nth = names[..=i].iter().filter(|n| *n == name).count();
            format!("{name}_conflict{nth}")
        } else {
            name.clone()
        };
        out.push((name, value.clone()));
    }
    out
}

/// A label value escaped for OpenMetrics (backslash, double quote, newline).
pub fn escape_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Milliseconds since the epoch, saturating for the "always" bounds.
fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A series' label set, built once and written before every sample.
struct Labels(String);

impl Labels {
    fn new() -> Self {
        Labels(String::new())
    }
    fn with(mut self, name: &str, value: &str) -> Self {
        self.add(name, value);
        self
    }
    fn add(&mut self, name: &str, value: &str) {
        let sep = if self.0.is_empty() { '{' } else { ',' };
        let _ = write!(self.0, "{sep}{name}=\"{}\"", escape_value(value));
    }
    /// Kubernetes labels or annotations as kube-state-metrics names them ([`kube_labels`]).
    fn kube(mut self, prefix: &str, pairs: &[(String, String)]) -> Self {
        for (name, value) in kube_labels(prefix, pairs) {
            self.add(&name, &value);
        }
        self
    }
    fn text(&self) -> String {
        if self.0.is_empty() {
            String::new()
        } else {
            format!("{}}}", self.0)
        }
    }
}

/// A timestamp in OpenMetrics seconds (millisecond precision, no trailing zeros needed).
fn write_ts(out: &mut impl Write, ms: i64) -> io::Result<()> {
    if ms % 1000 == 0 {
        write!(out, "{}", ms / 1000)
    } else {
        write!(out, "{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
    }
}

/// The writer of one cluster's series.
struct Writer<'a, W: Write> {
    out: W,
    /// Cluster span and scrape step, in milliseconds.
    start: i64,
    end: i64,
    step: i64,
    c: &'a Cluster,
}

impl<W: Write> Writer<'_, W> {
    fn family(&mut self, name: &str, kind: &str) -> io::Result<()> {
        writeln!(self.out, "# TYPE {name} {kind}")
    }

    /// The sample times of an entity living over `[from, to)`, clamped to the cluster.
    fn span(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> (i64, i64) {
        (millis(from).max(self.start), millis(to).min(self.end))
    }

    /// A series with a constant value over `[from, to)`.
    fn gauge(
        &mut self,
        name: &str,
        labels: &Labels,
        value: f64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> io::Result<()> {
        let (s, e) = self.span(from, to);
        let head = format!("{name}{} {value} ", labels.text());
        let mut t = s;
        while t < e {
            self.out.write_all(head.as_bytes())?;
            write_ts(&mut self.out, t)?;
            self.out.write_all(b"\n")?;
            t += self.step;
        }
        Ok(())
    }

    /// A counter growing by `per_second` from 0 at the first sample time it would have
    /// (the later of `from` and the cluster's start).
    fn counter(
        &mut self,
        name: &str,
        labels: &Labels,
        per_second: f64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> io::Result<()> {
        let (s, e) = self.span(from, to);
        let head = format!("{name}{} ", labels.text());
        let mut t = s;
        while t < e {
            self.out.write_all(head.as_bytes())?;
            let v = per_second * ((t - s) as f64 / 1000.0);
            write!(self.out, "{v} ")?;
            write_ts(&mut self.out, t)?;
            self.out.write_all(b"\n")?;
            t += self.step;
        }
        Ok(())
    }

    fn always(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        (self.c.start, self.c.end)
    }
}

/// ReplicaSets or Jobs by namespace and name: their parent (Deployment or CronJob) and the
/// span from their first pod's start to their last pod's end.
type Controllers<'a> =
    BTreeMap<(&'a str, &'a str), (Option<&'a str>, DateTime<Utc>, DateTime<Utc>)>;

fn pod_labels(p: &Pod) -> Labels {
    Labels::new()
        .with("namespace", &p.namespace)
        .with("pod", &p.name)
        .with("uid", &p.uid)
}

fn container_labels(p: &Pod, c: &Container) -> Labels {
    pod_labels(p).with("container", &c.name)
}

fn cadvisor_labels(p: &Pod, c: &Container) -> Labels {
    Labels::new()
        .with("namespace", &p.namespace)
        .with("pod", &p.name)
        .with("container", &c.name)
        .with("node", &p.node)
        .with("instance", &p.node)
}

fn node_price_labels(n: &Node) -> Labels {
    Labels::new()
        .with("node", &n.name)
        .with("instance", &n.name)
        .with("instance_type", &n.instance_type)
        .with("region", &n.region)
        .with("provider_id", &n.provider_id)
        .with("arch", &n.arch)
}

/// An egress kind: its rate, then the `internet`, `same_zone` and `same_region` labels.
type EgressKind = (fn(&Egress) -> f64, &'static str, &'static str, &'static str);

/// The three egress kinds the network-costs daemonset tells apart.
const EGRESS_KINDS: [EgressKind; 3] = [
    (|e| e.internet_bytes_per_hour, "true", "false", "false"),
    (|e| e.cross_zone_bytes_per_hour, "false", "false", "true"),
    (|e| e.cross_region_bytes_per_hour, "false", "false", "false"),
];

/// The resources of a container's requests or limits: value, resource, unit.
fn resources(c: &Container, limits: bool) -> [(f64, &'static str, &'static str); 3] {
    if limits {
        [
            (c.cpu_limit, "cpu", "core"),
            (c.ram_limit, "memory", "byte"),
            // A GPU limit must equal the request in Kubernetes.
            (c.gpu_request, "nvidia_com_gpu", "integer"),
        ]
    } else {
        [
            (c.cpu_request, "cpu", "core"),
            (c.ram_request, "memory", "byte"),
            (c.gpu_request, "nvidia_com_gpu", "integer"),
        ]
    }
}

impl Cluster {
    /// Writes every series of the cluster as OpenMetrics text, ending with `# EOF`.
    pub fn to_openmetrics(&self, out: &mut impl Write) -> io::Result<()> {
        let step = i64::try_from(self.scrape.as_millis()).unwrap_or(i64::MAX);
        assert!(step > 0, "Cluster::scrape must be at least 1 ms");
        let mut w = Writer {
            out: io::BufWriter::with_capacity(1 << 16, out),
            start: millis(self.start),
            end: millis(self.end),
            step,
            c: self,
        };
        self.kube_state_metrics(&mut w)?;
        self.cadvisor(&mut w)?;
        self.network_costs(&mut w)?;
        self.node_exporter(&mut w)?;
        self.cost_exporter(&mut w)?;
        w.out.write_all(b"# EOF\n")?;
        w.out.flush()
    }

    fn kube_state_metrics<W: Write>(&self, w: &mut Writer<'_, W>) -> io::Result<()> {
        // Pods.
        w.family("kube_pod_info", "gauge")?;
        for p in &self.pods {
            let (kind, name) = p.owner.kind_name();
            let l = pod_labels(p)
                .with("node", &p.node)
                .with("created_by_kind", kind)
                .with("created_by_name", name);
            w.gauge("kube_pod_info", &l, 1.0, p.start, p.end)?;
        }
        w.family("kube_pod_owner", "gauge")?;
        for p in &self.pods {
            let (kind, name) = p.owner.kind_name();
            // kube-state-metrics writes "<none>" for all three when the pod has no owner.
            let controller = if p.owner == Owner::None {
                "<none>"
            } else {
                "true"
            };
            let l = pod_labels(p)
                .with("owner_kind", kind)
                .with("owner_name", name)
                .with("owner_is_controller", controller);
            w.gauge("kube_pod_owner", &l, 1.0, p.start, p.end)?;
        }
        w.family("kube_pod_labels", "gauge")?;
        for p in &self.pods {
            let l = pod_labels(p).kube("label_", &p.labels);
            w.gauge("kube_pod_labels", &l, 1.0, p.start, p.end)?;
        }
        w.family("kube_pod_annotations", "gauge")?;
        for p in &self.pods {
            let l = pod_labels(p).kube("annotation_", &p.annotations);
            w.gauge("kube_pod_annotations", &l, 1.0, p.start, p.end)?;
        }
        for name in [
            "kube_pod_container_info",
            "kube_pod_container_status_running",
        ] {
            w.family(name, "gauge")?;
            for p in &self.pods {
                for c in &p.containers {
                    w.gauge(name, &container_labels(p, c), 1.0, p.start, p.end)?;
                }
            }
        }
        for (name, limits) in [
            ("kube_pod_container_resource_requests", false),
            ("kube_pod_container_resource_limits", true),
        ] {
            w.family(name, "gauge")?;
            for p in &self.pods {
                for c in &p.containers {
                    for (value, resource, unit) in resources(c, limits) {
                        if value > 0.0 {
                            let l = container_labels(p, c)
                                .with("node", &p.node)
                                .with("resource", resource)
                                .with("unit", unit);
                            w.gauge(name, &l, value, p.start, p.end)?;
                        }
                    }
                }
            }
        }
        w.family("kube_pod_spec_volumes_persistentvolumeclaims_info", "gauge")?;
        for p in &self.pods {
            for claim in &p.pvcs {
                let l = pod_labels(p)
                    .with("volume", claim)
                    .with("persistentvolumeclaim", claim);
                w.gauge(
                    "kube_pod_spec_volumes_persistentvolumeclaims_info",
                    &l,
                    1.0,
                    p.start,
                    p.end,
                )?;
            }
        }

        // Controllers, alive from their first pod's start to their last pod's end.
        let mut replicasets = Controllers::new();
        let mut jobs = Controllers::new();
        for p in &self.pods {
            let (map, key, parent) = match &p.owner {
                Owner::ReplicaSet {
                    replicaset,
                    deployment,
                } => (&mut replicasets, replicaset, deployment),
                Owner::Job { job, cronjob } => (&mut jobs, job, cronjob),
                _ => continue,
            };
            let e = map.entry((p.namespace.as_str(), key.as_str())).or_insert((
                parent.as_deref(),
                p.start,
                p.end,
            ));
            e.1 = e.1.min(p.start);
            e.2 = e.2.max(p.end);
        }
        for (family, name_label, parent_kind, map) in [
            (
                "kube_replicaset_owner",
                "replicaset",
                "Deployment",
                &replicasets,
            ),
            ("kube_job_owner", "job_name", "CronJob", &jobs),
        ] {
            w.family(family, "gauge")?;
            for ((ns, name), (parent, from, to)) in map {
                let (kind, owner, controller) = match parent {
                    Some(p) => (parent_kind, *p, "true"),
                    None => ("<none>", "<none>", "<none>"),
                };
                let l = Labels::new()
                    .with("namespace", ns)
                    .with(name_label, name)
                    .with("owner_kind", kind)
                    .with("owner_name", owner)
                    .with("owner_is_controller", controller);
                w.gauge(family, &l, 1.0, *from, *to)?;
            }
        }

        // Namespaces.
        let (from, to) = w.always();
        w.family("kube_namespace_labels", "gauge")?;
        for n in &self.namespaces {
            let l = Labels::new()
                .with("namespace", &n.name)
                .kube("label_", &n.labels);
            w.gauge("kube_namespace_labels", &l, 1.0, from, to)?;
        }
        w.family("kube_namespace_annotations", "gauge")?;
        for n in &self.namespaces {
            let l = Labels::new()
                .with("namespace", &n.name)
                .kube("annotation_", &n.annotations);
            w.gauge("kube_namespace_annotations", &l, 1.0, from, to)?;
        }

        // Nodes.
        w.family("kube_node_info", "gauge")?;
        for n in &self.nodes {
            let l = Labels::new()
                .with("node", &n.name)
                .with("provider_id", &n.provider_id)
                .with("kernel_version", "6.1")
                .with("os_image", "Debian GNU/Linux 12 (bookworm)")
                .with("container_runtime_version", "containerd://1.7.24")
                .with("kubelet_version", "v1.31.0")
                .with("kubeproxy_version", "deprecated");
            w.gauge("kube_node_info", &l, 1.0, n.start, n.end)?;
        }
        w.family("kube_node_labels", "gauge")?;
        for n in &self.nodes {
            let mut pairs: Vec<(String, String)> = vec![
                (
                    "node.kubernetes.io/instance-type".into(),
                    n.instance_type.clone(),
                ),
                (
                    "beta.kubernetes.io/instance-type".into(),
                    n.instance_type.clone(),
                ),
                ("topology.kubernetes.io/region".into(), n.region.clone()),
                ("topology.kubernetes.io/zone".into(), n.zone.clone()),
                ("kubernetes.io/arch".into(), n.arch.clone()),
                ("kubernetes.io/hostname".into(), n.name.clone()),
            ];
            if n.spot {
                pairs.push(("eks.amazonaws.com/capacityType".into(), "SPOT".into()));
            }
            pairs.extend(n.labels.iter().cloned());
            let l = Labels::new().with("node", &n.name).kube("label_", &pairs);
            w.gauge("kube_node_labels", &l, 1.0, n.start, n.end)?;
        }
        for name in ["kube_node_status_capacity", "kube_node_status_allocatable"] {
            w.family(name, "gauge")?;
            for n in &self.nodes {
                for (value, resource, unit) in [
                    (n.cpu_cores, "cpu", "core"),
                    (n.ram_bytes, "memory", "byte"),
                    (n.gpus, "nvidia_com_gpu", "integer"),
                ] {
                    if resource != "nvidia_com_gpu" || value > 0.0 {
                        let l = Labels::new()
                            .with("node", &n.name)
                            .with("resource", resource)
                            .with("unit", unit);
                        w.gauge(name, &l, value, n.start, n.end)?;
                    }
                }
            }
        }

        // Volumes and claims.
        w.family("kube_persistentvolume_capacity_bytes", "gauge")?;
        for v in &self.pvs {
            let l = Labels::new().with("persistentvolume", &v.name);
            w.gauge(
                "kube_persistentvolume_capacity_bytes",
                &l,
                v.bytes,
                v.start,
                v.end,
            )?;
        }
        w.family("kube_persistentvolume_info", "gauge")?;
        for v in &self.pvs {
            let l = Labels::new()
                .with("persistentvolume", &v.name)
                .with("storageclass", &v.storage_class);
            w.gauge("kube_persistentvolume_info", &l, 1.0, v.start, v.end)?;
        }
        w.family("kube_persistentvolume_claim_ref", "gauge")?;
        for v in &self.pvs {
            if let Some(c) = &v.claim {
                let l = Labels::new()
                    .with("persistentvolume", &v.name)
                    .with("name", &c.name)
                    .with("claim_namespace", &c.namespace);
                w.gauge("kube_persistentvolume_claim_ref", &l, 1.0, v.start, v.end)?;
            }
        }
        w.family("kube_persistentvolumeclaim_info", "gauge")?;
        for v in &self.pvs {
            if let Some(c) = &v.claim {
                let l = Labels::new()
                    .with("namespace", &c.namespace)
                    .with("persistentvolumeclaim", &c.name)
                    .with("storageclass", &v.storage_class)
                    .with("volumename", &v.name);
                w.gauge("kube_persistentvolumeclaim_info", &l, 1.0, v.start, v.end)?;
            }
        }
        w.family(
            "kube_persistentvolumeclaim_resource_requests_storage_bytes",
            "gauge",
        )?;
        for v in &self.pvs {
            if let Some(c) = &v.claim {
                let l = Labels::new()
                    .with("namespace", &c.namespace)
                    .with("persistentvolumeclaim", &c.name);
                w.gauge(
                    "kube_persistentvolumeclaim_resource_requests_storage_bytes",
                    &l,
                    c.request_bytes,
                    v.start,
                    v.end,
                )?;
            }
        }

        // Load balancers.
        w.family("kube_service_info", "gauge")?;
        for b in &self.load_balancers {
            let l = Labels::new()
                .with("namespace", &b.namespace)
                .with("service", &b.service)
                .with("cluster_ip", "10.0.0.1");
            w.gauge("kube_service_info", &l, 1.0, b.start, b.end)?;
        }
        w.family("kube_service_spec_type", "gauge")?;
        for b in &self.load_balancers {
            let l = Labels::new()
                .with("namespace", &b.namespace)
                .with("service", &b.service)
                .with("type", "LoadBalancer");
            w.gauge("kube_service_spec_type", &l, 1.0, b.start, b.end)?;
        }
        w.family("kube_service_status_load_balancer_ingress", "gauge")?;
        for b in &self.load_balancers {
            let l = Labels::new()
                .with("namespace", &b.namespace)
                .with("service", &b.service)
                .with("ip", &b.ip);
            w.gauge(
                "kube_service_status_load_balancer_ingress",
                &l,
                1.0,
                b.start,
                b.end,
            )?;
        }
        Ok(())
    }

    /// node-exporter, with the `kubernetes_node` label Kubecost's scrape config adds.
    fn node_exporter<W: Write>(&self, w: &mut Writer<'_, W>) -> io::Result<()> {
        let exporters = || {
            self.nodes
                .iter()
                .filter_map(|n| Some((n, n.exporter.as_ref()?)))
        };
        w.family("node_cpu_seconds", "counter")?;
        for (n, e) in exporters() {
            let instance = format!("{}:9100", n.name);
            let idle = 1.0 - e.cpu_user - e.cpu_system;
            for (mode, share) in [
                ("idle", idle),
                ("system", e.cpu_system),
                ("user", e.cpu_user),
            ] {
                let l = Labels::new()
                    .with("cpu", "0")
                    .with("instance", &instance)
                    .with("kubernetes_node", &n.name)
                    .with("mode", mode);
                w.counter(
                    "node_cpu_seconds_total",
                    &l,
                    n.cpu_cores * share,
                    n.start,
                    n.end,
                )?;
            }
        }
        w.family("node_memory_MemAvailable_bytes", "gauge")?;
        for (n, e) in exporters() {
            let l = Labels::new()
                .with("instance", &format!("{}:9100", n.name))
                .with("kubernetes_node", &n.name);
            w.gauge(
                "node_memory_MemAvailable_bytes",
                &l,
                e.mem_available_bytes,
                n.start,
                n.end,
            )?;
        }
        Ok(())
    }

    fn cadvisor<W: Write>(&self, w: &mut Writer<'_, W>) -> io::Result<()> {
        w.family("container_cpu_usage_seconds", "counter")?;
        for p in &self.pods {
            for c in &p.containers {
                w.counter(
                    "container_cpu_usage_seconds_total",
                    &cadvisor_labels(p, c),
                    c.cpu_usage,
                    p.start,
                    p.end,
                )?;
            }
        }
        w.family("container_memory_working_set_bytes", "gauge")?;
        for p in &self.pods {
            for c in &p.containers {
                w.gauge(
                    "container_memory_working_set_bytes",
                    &cadvisor_labels(p, c),
                    c.ram_usage,
                    p.start,
                    p.end,
                )?;
            }
        }
        w.family("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge")?;
        for p in &self.pods {
            for c in p.containers.iter().filter(|c| c.gpu_request > 0.0) {
                let l = Labels::new()
                    .with("namespace", &p.namespace)
                    .with("pod", &p.name)
                    .with("container", &c.name)
                    .with("Hostname", &p.node)
                    .with("gpu", "0");
                w.gauge(
                    "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
                    &l,
                    c.gpu_usage,
                    p.start,
                    p.end,
                )?;
            }
        }
        Ok(())
    }

    fn network_costs<W: Write>(&self, w: &mut Writer<'_, W>) -> io::Result<()> {
        w.family("kubecost_pod_network_egress_bytes", "counter")?;
        for p in &self.pods {
            for (rate, internet, same_zone, same_region) in EGRESS_KINDS {
                let per_hour = rate(&p.egress);
                if per_hour > 0.0 {
                    let l = Labels::new()
                        .with("namespace", &p.namespace)
                        .with("pod_name", &p.name)
                        .with("internet", internet)
                        .with("same_zone", same_zone)
                        .with("same_region", same_region);
                    w.counter(
                        "kubecost_pod_network_egress_bytes_total",
                        &l,
                        per_hour / 3600.0,
                        p.start,
                        p.end,
                    )?;
                }
            }
        }
        Ok(())
    }

    fn cost_exporter<W: Write>(&self, w: &mut Writer<'_, W>) -> io::Result<()> {
        let priced = || self.nodes.iter().filter(|n| n.cpu_hourly.is_some());
        type Price = fn(&Node) -> Option<f64>;
        let per_node: [(&str, Price); 6] = [
            ("node_cpu_hourly_cost", |n| n.cpu_hourly),
            ("node_ram_hourly_cost", |n| n.ram_hourly),
            ("node_gpu_hourly_cost", |n| n.gpu_hourly),
            ("node_gpu_count", |n| (n.gpus > 0.0).then_some(n.gpus)),
            ("node_total_hourly_cost", |n| {
                Some(
                    n.cpu_cores * n.cpu_hourly.unwrap_or(0.0)
                        + n.ram_bytes / GIB * n.ram_hourly.unwrap_or(0.0)
                        + n.gpus * n.gpu_hourly.unwrap_or(0.0),
                )
            }),
            ("kubecost_node_is_spot", |n| {
                Some(if n.spot { 1.0 } else { 0.0 })
            }),
        ];
        for (name, price) in per_node {
            w.family(name, "gauge")?;
            for n in priced() {
                if let Some(v) = price(n) {
                    w.gauge(name, &node_price_labels(n), v, n.start, n.end)?;
                }
            }
        }
        w.family("pv_hourly_cost", "gauge")?;
        for v in &self.pvs {
            if let Some(price) = v.hourly_per_gib {
                let l = Labels::new()
                    .with("volumename", &v.name)
                    .with("persistentvolume", &v.name)
                    .with("provider_id", &v.provider_id);
                w.gauge("pv_hourly_cost", &l, price, v.start, v.end)?;
            }
        }
        w.family("kubecost_load_balancer_cost", "gauge")?;
        for b in &self.load_balancers {
            let l = Labels::new()
                .with("namespace", &b.namespace)
                .with("service_name", &b.service)
                .with("ingress_ip", &b.ip);
            w.gauge("kubecost_load_balancer_cost", &l, b.hourly, b.start, b.end)?;
        }
        w.family("service_selector_labels", "gauge")?;
        for b in &self.load_balancers {
            let l = Labels::new()
                .with("namespace", &b.namespace)
                .with("service", &b.service)
                .kube("label_", &b.selector);
            w.gauge("service_selector_labels", &l, 1.0, b.start, b.end)?;
        }
        let (from, to) = w.always();
        if let Some(hourly) = self.cluster_management_hourly {
            w.family("kubecost_cluster_management_cost", "gauge")?;
            let l = Labels::new().with("provisioner_name", "GKE");
            w.gauge("kubecost_cluster_management_cost", &l, hourly, from, to)?;
        }
        if let Some(p) = &self.egress_prices {
            for (name, price) in [
                ("kubecost_network_zone_egress_cost", p.zone),
                ("kubecost_network_region_egress_cost", p.region),
                ("kubecost_network_internet_egress_cost", p.internet),
            ] {
                w.family(name, "gauge")?;
                w.gauge(name, &Labels::new(), price, from, to)?;
            }
        }
        Ok(())
    }
}
