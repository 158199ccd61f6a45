//! What a data source reports about one window, before any pricing: the same quantities
//! OpenCost derives from its PromQL (running time, request/usage averages, allocation integrals,
//! node prices). `costing` turns one of these into allocation and asset sets.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::model::Window;

/// A node over a window.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeUsage {
    pub name: String,
    pub instance_type: String,
    pub provider_id: String,
    pub cpu_cores: f64,
    pub ram_bytes: f64,
    /// $ per core-hour (`node_cpu_hourly_cost`).
    pub cpu_price: f64,
    /// $ per GiB-hour (`node_ram_hourly_cost`).
    pub ram_price: f64,
    pub spot: bool,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub labels: BTreeMap<String, String>,
}

/// One container of one pod over a window.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerUsage {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub node: String,
    pub controller: String,
    pub controller_kind: String,
    pub labels: BTreeMap<String, String>,
    pub services: Vec<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Average request (cores) over the running time.
    pub cpu_request_avg: f64,
    pub cpu_usage_avg: f64,
    pub cpu_usage_max: f64,
    pub cpu_limit_avg: f64,
    /// ∫ max(request, usage) dt, in core-hours.
    pub cpu_core_hours: f64,
    pub ram_request_avg: f64,
    pub ram_usage_avg: f64,
    pub ram_usage_max: f64,
    pub ram_limit_avg: f64,
    /// ∫ max(request, usage) dt, in byte-hours.
    pub ram_byte_hours: f64,
}

/// A persistent volume and the pod claiming it (if any) over a window.
#[derive(Clone, Debug, PartialEq)]
pub struct VolumeUsage {
    pub name: String,
    pub provider_id: String,
    pub bytes: f64,
    /// $ per GiB-hour (`pv_hourly_cost`).
    pub price: f64,
    pub storage_class: String,
    pub claim_namespace: String,
    pub claim_name: String,
    /// `(namespace, pod)` of the pod mounting the claim, when one runs.
    pub mounted_by: Option<(String, String)>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// A load balancer service over a window.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadBalancerUsage {
    pub namespace: String,
    pub service: String,
    pub ip: String,
    /// $ per hour.
    pub price: f64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// `(namespace, pod)` of every pod the service selects.
    pub pods: Vec<(String, String)>,
}

/// Everything a source knows about one window.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterWindow {
    pub window: Window,
    /// How far the data reaches (`window.end`, or now for the window being built).
    pub data_end: DateTime<Utc>,
    pub nodes: Vec<NodeUsage>,
    pub containers: Vec<ContainerUsage>,
    pub volumes: Vec<VolumeUsage>,
    pub load_balancers: Vec<LoadBalancerUsage>,
}

/// An error from a data source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source could not answer; the window is retried on the next ETL run.
    #[error("data source unavailable: {0}")]
    Unavailable(String),
}

/// A source of cluster metrics, asked one window at a time.
pub trait DataSource: Send + Sync + 'static {
    /// The metrics of `window`, up to `data_end` (≤ `window.end`).
    fn window(&self, window: Window, data_end: DateTime<Utc>)
    -> Result<ClusterWindow, SourceError>;
}
