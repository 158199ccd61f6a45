//! What a data source reports about one window, before any pricing: the same quantities
//! OpenCost derives from its PromQL (running time, request/usage averages, allocation integrals,
//! node prices). `costing` turns one of these into allocation and asset sets.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::model::{Breakdown, Window};

/// A node over a window.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeUsage {
    /// Node name.
    pub name: String,
    /// Instance type.
    pub instance_type: String,
    /// The provider's id of the node.
    pub provider_id: String,
    /// CPU capacity, in cores.
    pub cpu_cores: f64,
    /// RAM capacity, in bytes.
    pub ram_bytes: f64,
    /// $ per core-hour (`node_cpu_hourly_cost`).
    pub cpu_price: f64,
    /// $ per GiB-hour (`node_ram_hourly_cost`).
    pub ram_price: f64,
    /// GPUs on the node.
    pub gpu_count: f64,
    /// $ per GPU-hour (`node_gpu_hourly_cost`).
    pub gpu_price: f64,
    /// Whether the node runs at spot (preemptible) prices.
    pub spot: bool,
    /// When the node started running within the window.
    pub start: DateTime<Utc>,
    /// When the node stopped running within the window.
    pub end: DateTime<Utc>,
    /// Node labels, keys Prometheus-sanitised.
    pub labels: BTreeMap<String, String>,
    /// How the node's CPU time was spent.
    pub cpu_breakdown: Breakdown,
    /// How the node's memory was used.
    pub ram_breakdown: Breakdown,
}

/// One container of one pod over a window.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerUsage {
    /// The pod's namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// Name of the node the pod ran on.
    pub node: String,
    /// Name of the pod's controller (empty when it has none).
    pub controller: String,
    /// Controller kind, lower case (`deployment`, `statefulset`, ...).
    pub controller_kind: String,
    /// Pod labels, keys Prometheus-sanitised.
    pub labels: BTreeMap<String, String>,
    /// Pod annotations, keys Prometheus-sanitised.
    pub annotations: BTreeMap<String, String>,
    /// The namespace's labels, keys Prometheus-sanitised.
    pub namespace_labels: BTreeMap<String, String>,
    /// The namespace's annotations, keys Prometheus-sanitised.
    pub namespace_annotations: BTreeMap<String, String>,
    /// Services selecting the pod.
    pub services: Vec<String>,
    /// When the container started running within the window.
    pub start: DateTime<Utc>,
    /// When the container stopped running within the window.
    pub end: DateTime<Utc>,
    /// Average request (cores) over the running time.
    pub cpu_request_avg: f64,
    /// Average usage (cores) over the running time.
    pub cpu_usage_avg: f64,
    /// Peak usage, in cores.
    pub cpu_usage_max: f64,
    /// Average limit (cores) over the running time.
    pub cpu_limit_avg: f64,
    /// ∫ max(request, usage) dt, in core-hours.
    pub cpu_core_hours: f64,
    /// Average request (bytes) over the running time.
    pub ram_request_avg: f64,
    /// Average usage (bytes) over the running time.
    pub ram_usage_avg: f64,
    /// Peak usage, in bytes.
    pub ram_usage_max: f64,
    /// Average limit (bytes) over the running time.
    pub ram_limit_avg: f64,
    /// ∫ max(request, usage) dt, in byte-hours.
    pub ram_byte_hours: f64,
    /// Average GPU request over the running time.
    pub gpu_request_avg: f64,
    /// Average GPU usage (0..1 per GPU) over the running time.
    pub gpu_usage_avg: f64,
    /// ∫ GPU request dt, in GPU-hours.
    pub gpu_hours: f64,
}

/// A persistent volume and the pod claiming it (if any) over a window.
#[derive(Clone, Debug, PartialEq)]
pub struct VolumeUsage {
    /// Persistent volume name.
    pub name: String,
    /// The provider's id of the volume.
    pub provider_id: String,
    /// Size, in bytes.
    pub bytes: f64,
    /// $ per GiB-hour (`pv_hourly_cost`).
    pub price: f64,
    /// Storage class.
    pub storage_class: String,
    /// Namespace of the claim bound to the volume.
    pub claim_namespace: String,
    /// Name of the claim bound to the volume.
    pub claim_name: String,
    /// The pods that mounted the claim, each with its share of the volume's hours (a step
    /// shared by n pods counts 1/n to each).
    pub mounts: Vec<VolumeMount>,
    /// Hours the volume existed with no running pod mounting it.
    pub unmounted_hours: f64,
    /// When the volume started existing within the window.
    pub start: DateTime<Utc>,
    /// When the volume stopped existing within the window.
    pub end: DateTime<Utc>,
}

/// A pod's share of a volume.
#[derive(Clone, Debug, PartialEq)]
pub struct VolumeMount {
    /// The pod's namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// The pod's share of the volume's hours.
    pub hours: f64,
}

/// A pod's network traffic over a window (split evenly over its containers when priced).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodNetwork {
    /// The pod's namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Bytes sent.
    pub transfer_bytes: f64,
    /// Bytes received.
    pub receive_bytes: f64,
    /// Egress to another zone of the same region, in bytes.
    pub zone_egress_bytes: f64,
    /// Egress to another region, in bytes.
    pub region_egress_bytes: f64,
    /// Egress to the internet, in bytes.
    pub internet_egress_bytes: f64,
}

/// Egress prices, $ per GiB.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EgressPrices {
    /// Across zones.
    pub zone: f64,
    /// Across regions.
    pub region: f64,
    /// To the internet.
    pub internet: f64,
}

/// The provider's fee for running the cluster (`kubecost_cluster_management_cost`).
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterManagement {
    /// Who provisions the cluster (`GKE`, `EKS`, ...).
    pub provisioner: String,
    /// $ per hour.
    pub price: f64,
    /// Hours charged within the window.
    pub hours: f64,
}

/// A load balancer service over a window.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadBalancerUsage {
    /// The service's namespace.
    pub namespace: String,
    /// Service name.
    pub service: String,
    /// Ingress IP.
    pub ip: String,
    /// $ per hour.
    pub price: f64,
    /// When the load balancer started running within the window.
    pub start: DateTime<Utc>,
    /// When the load balancer stopped running within the window.
    pub end: DateTime<Utc>,
    /// `(namespace, pod)` of every pod the service selects.
    pub pods: Vec<(String, String)>,
}

/// Everything a source knows about one window.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterWindow {
    /// The window asked about.
    pub window: Window,
    /// How far the data reaches (`window.end`, or now for the window being built).
    pub data_end: DateTime<Utc>,
    /// Nodes that ran in the window.
    pub nodes: Vec<NodeUsage>,
    /// Containers that ran in the window.
    pub containers: Vec<ContainerUsage>,
    /// Persistent volumes that existed in the window.
    pub volumes: Vec<VolumeUsage>,
    /// Load balancer services that ran in the window.
    pub load_balancers: Vec<LoadBalancerUsage>,
    /// Network traffic per pod.
    pub networks: Vec<PodNetwork>,
    /// What egress costs.
    pub egress_prices: EgressPrices,
    /// The cluster management fee, when the provider charges one.
    pub cluster_management: Option<ClusterManagement>,
}

/// An error from a data source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source could not answer; the window is retried on the next ETL run.
    #[error("data source unavailable: {0}")]
    Unavailable(String),
    /// The source answered, but holds no data for the window (no node ran in it): nothing is
    /// published, and the window is tried again on the next run.
    #[error("no data for this window in the data source")]
    NoData,
}

/// A source of cluster metrics, asked one window at a time.
#[async_trait::async_trait]
pub trait DataSource: Send + Sync + 'static {
    /// The metrics of `window`, up to `data_end` (≤ `window.end`). Long computations run off
    /// the calling thread (it is the actors' thread).
    async fn window(
        self: Arc<Self>,
        window: Window,
        data_end: DateTime<Utc>,
    ) -> Result<ClusterWindow, SourceError>;

    /// Several windows at once (a day and its hours): a source that can read them in one pass
    /// overrides this. Windows the source holds no data for are left out of the answer.
    async fn windows(
        self: Arc<Self>,
        windows: Vec<(Window, DateTime<Utc>)>,
    ) -> Result<Vec<ClusterWindow>, SourceError> {
        let mut out = Vec::with_capacity(windows.len());
        for (w, d) in windows {
            match self.clone().window(w, d).await {
                Ok(cw) => out.push(cw),
                Err(SourceError::NoData) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The source's name, for logs and status (`demo`, `prometheus`).
    fn name(&self) -> &'static str;

    /// How long after a window ends its data is complete in the source (scrapes in flight,
    /// remote write): the ETL builds a window as complete only after this.
    fn settle(&self) -> chrono::Duration {
        chrono::Duration::zero()
    }

    /// Queries issued so far (for the benches and status; 0 for a source without queries).
    fn queries_issued(&self) -> u64 {
        0
    }
}
