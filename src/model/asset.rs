//! OpenCost's assets: the things a cluster pays for (nodes, disks, load balancers).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Resolution, SetCache, Window};

/// One asset over a window. `kind` selects which of the optional detail fields apply; the JSON
/// the API writes follows OpenCost's `asset_json.go` (see `api::json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Asset {
    /// `Node`, `Disk` or `LoadBalancer` (`type`); `Any` once assets of different types are
    /// aggregated together.
    #[serde(rename = "type")]
    pub kind: String,
    /// Asset name (node name, volume name, `namespace/service`).
    pub name: String,
    /// Cluster id (`properties.cluster`).
    pub cluster: String,
    /// Provider name (`properties.provider`).
    pub provider: String,
    /// The provider's id: node instance id, volume id or load balancer IP
    /// (`properties.providerID`).
    #[serde(rename = "providerID")]
    pub provider_id: String,
    /// `Compute`, `Storage` or `Network` (`properties.category`).
    pub category: String,
    /// The service billing the asset, `Kubernetes` for cluster assets (`properties.service`).
    pub service: String,
    /// Asset labels; a node's Kubernetes labels (`labels`).
    pub labels: BTreeMap<String, String>,
    /// The ETL window the asset belongs to, widened when assets are aggregated (`window`).
    pub window: Option<Window>,
    /// When the asset started running within its window (`start`).
    pub start: Option<DateTime<Utc>>,
    /// When the asset stopped running within its window (`end`).
    pub end: Option<DateTime<Utc>>,
    /// Adjustment to the asset's cost, in $ (`adjustment`).
    pub adjustment: f64,
    /// Node: instance type.
    pub node_type: String,
    /// Node: 1 when priced as spot (preemptible), else 0 (`preemptible`).
    pub preemptible: f64,
    /// Node: CPU capacity, in cores (`cpuCores`).
    pub cpu_cores: f64,
    /// Node: RAM capacity, in bytes (`ramBytes`).
    pub ram_bytes: f64,
    /// Node: CPU capacity over its running time, in core-hours (`cpuCoreHours`).
    pub cpu_core_hours: f64,
    /// Node: RAM capacity over its running time, in byte-hours (`ramByteHours`).
    pub ram_byte_hours: f64,
    /// Node: GPUs over its running time, in GPU-hours (`GPUHours`).
    pub gpu_hours: f64,
    /// Node: number of GPUs (`gpuCount`).
    pub gpu_count: f64,
    /// Node: CPU cost over the window, in $ (`cpuCost`).
    pub cpu_cost: f64,
    /// Node: RAM cost over the window, in $ (`ramCost`).
    pub ram_cost: f64,
    /// Node: GPU cost over the window, in $ (`gpuCost`).
    pub gpu_cost: f64,
    /// Disk: size, in bytes (`bytes`).
    pub bytes: f64,
    /// Disk: size over its running time, in byte-hours (`byteHours`).
    pub byte_hours: f64,
    /// Disk: storage class (`storageClass`).
    pub storage_class: String,
    /// Disk: name of the claim bound to the volume (`claimName`).
    pub claim_name: String,
    /// Disk: namespace of the claim bound to the volume (`claimNamespace`).
    pub claim_namespace: String,
    /// Load balancer: ingress IP (`ip`).
    pub ip: String,
    /// Load balancer: whether it is internal, i.e. its IP is private (`private`).
    pub private: bool,
    /// Disk and load balancer: the cost over the window.
    pub cost: f64,
    /// Node: how its CPU time was spent (`cpuBreakdown`).
    pub cpu_breakdown: Breakdown,
    /// Node: how its memory was used (`ramBreakdown`).
    pub ram_breakdown: Breakdown,
}

/// Fractions of a node's capacity (`idle`, `other`, `system`, `user`), as OpenCost's
/// `Breakdown`: CPU from node-exporter's `node_cpu_seconds_total` modes; memory from
/// `node_memory_MemAvailable_bytes` (idle) and the working sets of containers in `kube-system`
/// (system) and elsewhere (user). All zero when the metrics are not there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Breakdown {
    /// Unused.
    pub idle: f64,
    /// Used, but neither by the system nor by users.
    pub other: f64,
    /// Used by the system (kernel, or `kube-system`).
    pub system: f64,
    /// Used by user processes (or containers outside `kube-system`).
    pub user: f64,
}

impl Breakdown {
    /// The weighted mean of two breakdowns (weights are capacity-hours).
    pub fn weighted(a: Breakdown, wa: f64, b: Breakdown, wb: f64) -> Breakdown {
        if wa + wb <= 0.0 {
            return a;
        }
        let m = |x: f64, y: f64| (x * wa + y * wb) / (wa + wb);
        Breakdown {
            idle: m(a.idle, b.idle),
            other: m(a.other, b.other),
            system: m(a.system, b.system),
            user: m(a.user, b.user),
        }
    }
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
    /// The ETL window this set belongs to (a whole hour or day).
    pub window: Window,
    /// `1h` or `1d`.
    pub resolution: Resolution,
    /// The end of the data in this set: `window.end` when the window is complete, earlier while
    /// the window is still being built.
    pub data_end: DateTime<Utc>,
    /// The assets, unaggregated: nodes, disks and load balancers.
    pub assets: Vec<Asset>,
}

/// A loaded asset set as a snapshot holds it: the set itself, or (for a set read from a Parquet
/// object) only the object's bytes, decoded again when a query reads the set. Assets are read
/// by `/assets` queries only, and a decoded set costs about 1.2 KB per asset (200 MiB at 10,000
/// pods × 90 days, half a follower's memory) against about 15 bytes per asset packed; a
/// decoded set is kept in the set's [`SetCache`] while the cache's budget allows.
#[derive(Debug)]
pub struct StoredAssets {
    /// The set's ETL window.
    pub window: Window,
    /// The set's resolution.
    pub resolution: Resolution,
    /// How far the set's data reaches.
    pub data_end: DateTime<Utc>,
    len: usize,
    form: Form,
}

/// Decodes a packed set's bytes.
pub type Unpack = fn(&[u8]) -> Result<AssetSet, String>;

enum Form {
    Decoded(Arc<AssetSet>),
    Packed {
        body: bytes::Bytes,
        unpack: Unpack,
        cache: SetCache,
    },
}

impl std::fmt::Debug for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Form::Decoded(_) => f.write_str("Decoded"),
            Form::Packed { body, .. } => write!(f, "Packed({} bytes)", body.len()),
        }
    }
}

impl StoredAssets {
    /// Holds `set` as it is.
    pub fn decoded(set: AssetSet) -> Self {
        StoredAssets {
            window: set.window,
            resolution: set.resolution,
            data_end: set.data_end,
            len: set.assets.len(),
            form: Form::Decoded(Arc::new(set)),
        }
    }

    /// Holds `set` as `body`, which `unpack` turns back into exactly `set` (the caller has just
    /// decoded `set` from `body` with it).
    pub fn packed(set: &AssetSet, body: bytes::Bytes, unpack: Unpack) -> Self {
        StoredAssets {
            window: set.window,
            resolution: set.resolution,
            data_end: set.data_end,
            len: set.assets.len(),
            form: Form::Packed {
                body,
                unpack,
                cache: SetCache::default(),
            },
        }
    }

    /// Assets in the set.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set holds no asset.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The set.
    pub fn set(&self) -> Arc<AssetSet> {
        const KEY: &str = "assets";
        match &self.form {
            Form::Decoded(s) => s.clone(),
            Form::Packed {
                body,
                unpack,
                cache,
            } => {
                if let Some(s) = cache.get::<AssetSet>(KEY) {
                    return s;
                }
                // The same bytes decoded when the set was loaded: only a bug fails here, and
                // the query executor answers a panic with a 500.
                let s = Arc::new(
                    unpack(body).expect("a packed asset set decodes as it did when it was loaded"),
                );
                cache.insert(KEY.to_string(), s.clone(), self.len * 1200);
                s
            }
        }
    }
}
