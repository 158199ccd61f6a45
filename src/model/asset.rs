//! OpenCost's assets: the things a cluster pays for (nodes, disks, load balancers).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Resolution, Window};

/// One asset over a window. `kind` selects which of the optional detail fields apply; the JSON
/// the API writes follows OpenCost's `asset_json.go` (see `api::json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Asset {
    /// `Node`, `Disk` or `LoadBalancer`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Asset name (node name, volume name, `namespace/service`).
    pub name: String,
    pub cluster: String,
    pub provider: String,
    #[serde(rename = "providerID")]
    pub provider_id: String,
    pub category: String,
    pub service: String,
    pub labels: BTreeMap<String, String>,
    pub window: Option<Window>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub adjustment: f64,
    /// Node: instance type.
    pub node_type: String,
    pub preemptible: f64,
    pub cpu_cores: f64,
    pub ram_bytes: f64,
    pub cpu_core_hours: f64,
    pub ram_byte_hours: f64,
    pub gpu_hours: f64,
    pub gpu_count: f64,
    pub cpu_cost: f64,
    pub ram_cost: f64,
    pub gpu_cost: f64,
    /// Disk: bytes and byte-hours.
    pub bytes: f64,
    pub byte_hours: f64,
    pub storage_class: String,
    pub claim_name: String,
    pub claim_namespace: String,
    /// Load balancer: ingress IP and whether internal.
    pub ip: String,
    pub private: bool,
    /// Disk and load balancer: the cost over the window.
    pub cost: f64,
}

impl Asset {
    /// Minutes between start and end.
    pub fn minutes(&self) -> f64 {
        match (self.start, self.end) {
            (Some(s), Some(e)) if e > s => (e - s).num_milliseconds() as f64 / 60_000.0,
            _ => 0.0,
        }
    }

    /// The asset's total cost including adjustment.
    pub fn total_cost(&self) -> f64 {
        self.cpu_cost + self.ram_cost + self.gpu_cost + self.cost + self.adjustment
    }

    /// The key OpenCost gives an unaggregated asset:
    /// `provider/account/project/category/cluster/type/service/providerID/name`.
    pub fn key(&self) -> String {
        format!(
            "{}///{}/{}/{}/{}/{}/{}",
            self.provider,
            self.category,
            self.cluster,
            self.kind,
            self.service,
            self.provider_id,
            self.name
        )
    }
}

/// Every asset of one window at one resolution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssetSet {
    pub window: Window,
    pub resolution: Resolution,
    pub data_end: DateTime<Utc>,
    pub assets: Vec<Asset>,
}
