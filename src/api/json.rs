//! Response bodies in OpenCost's exact shapes: field order of `allocation_json.go`, floats rounded
//! to 5 decimals (`formatFloat64ForResponse`), NaN and infinities as `null`.

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};

use crate::model::{Allocation, Asset, Window};
use crate::query::{AllocationResult, AssetResult};

/// A float as OpenCost writes it.
pub struct F(pub f64);

impl Serialize for F {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_finite() {
            let r = (self.0 * 100_000.0).round() / 100_000.0;
            // Avoid "-0.0" in output.
            s.serialize_f64(if r == 0.0 { 0.0 } else { r })
        } else {
            s.serialize_none()
        }
    }
}

/// An allocation in the order and rounding of OpenCost's JSON.
pub struct AllocationJson<'a>(pub &'a Allocation);

impl Serialize for AllocationJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let a = self.0;
        let mut m = s.serialize_struct("Allocation", 52)?;
        m.serialize_field("name", &a.name)?;
        m.serialize_field("properties", &a.properties)?;
        m.serialize_field("window", &a.window)?;
        m.serialize_field("start", &a.start)?;
        m.serialize_field("end", &a.end)?;
        m.serialize_field("minutes", &F(a.minutes()))?;
        m.serialize_field("cpuCores", &F(a.cpu_cores()))?;
        m.serialize_field("cpuCoreRequestAverage", &F(a.cpu_core_request_average))?;
        m.serialize_field("cpuCoreUsageAverage", &F(a.cpu_core_usage_average))?;
        m.serialize_field("cpuCoreHours", &F(a.cpu_core_hours))?;
        m.serialize_field("cpuCost", &F(a.cpu_cost))?;
        m.serialize_field("cpuCostAdjustment", &F(a.cpu_cost_adjustment))?;
        m.serialize_field("cpuCostIdle", &F(a.cpu_cost_idle))?;
        m.serialize_field("cpuEfficiency", &F(a.cpu_efficiency()))?;
        m.serialize_field("gpuCount", &F(a.gpu_count()))?;
        m.serialize_field("gpuRequestAverage", &F(a.gpu_request_average))?;
        m.serialize_field("gpuUsageAverage", &F(a.gpu_usage_average))?;
        m.serialize_field("gpuHours", &F(a.gpu_hours))?;
        m.serialize_field("gpuCost", &F(a.gpu_cost))?;
        m.serialize_field("gpuCostAdjustment", &F(a.gpu_cost_adjustment))?;
        m.serialize_field("gpuCostIdle", &F(a.gpu_cost_idle))?;
        m.serialize_field("gpuEfficiency", &F(a.gpu_efficiency()))?;
        m.serialize_field("networkTransferBytes", &F(a.network_transfer_bytes))?;
        m.serialize_field("networkReceiveBytes", &F(a.network_receive_bytes))?;
        m.serialize_field("networkCost", &F(a.network_cost))?;
        m.serialize_field("networkCrossZoneCost", &F(a.network_cross_zone_cost))?;
        m.serialize_field("networkCrossRegionCost", &F(a.network_cross_region_cost))?;
        m.serialize_field("networkInternetCost", &F(a.network_internet_cost))?;
        m.serialize_field("networkCostAdjustment", &F(a.network_cost_adjustment))?;
        m.serialize_field("loadBalancerCost", &F(a.load_balancer_cost))?;
        m.serialize_field(
            "loadBalancerCostAdjustment",
            &F(a.load_balancer_cost_adjustment),
        )?;
        m.serialize_field("pvBytes", &F(a.pv_bytes()))?;
        m.serialize_field("pvByteHours", &F(a.pv_byte_hours()))?;
        m.serialize_field("pvCost", &F(a.pv_cost()))?;
        m.serialize_field("pvs", &Pvs(a))?;
        m.serialize_field("pvCostAdjustment", &F(a.pv_cost_adjustment))?;
        m.serialize_field("ramBytes", &F(a.ram_bytes()))?;
        m.serialize_field("ramByteRequestAverage", &F(a.ram_byte_request_average))?;
        m.serialize_field("ramByteUsageAverage", &F(a.ram_byte_usage_average))?;
        m.serialize_field("ramByteHours", &F(a.ram_byte_hours))?;
        m.serialize_field("ramCost", &F(a.ram_cost))?;
        m.serialize_field("ramCostAdjustment", &F(a.ram_cost_adjustment))?;
        m.serialize_field("ramCostIdle", &F(a.ram_cost_idle))?;
        m.serialize_field("ramEfficiency", &F(a.ram_efficiency()))?;
        m.serialize_field("externalCost", &F(a.external_cost))?;
        m.serialize_field("sharedCost", &F(a.shared_cost))?;
        m.serialize_field("totalCost", &F(a.total_cost()))?;
        m.serialize_field("totalEfficiency", &F(a.total_efficiency()))?;
        if a.cpu_core_usage_max > 0.0 || a.ram_byte_usage_max > 0.0 {
            m.serialize_field(
                "rawAllocationOnly",
                &serde_json::json!({ "cpuCoreUsageMax": F(a.cpu_core_usage_max), "ramByteUsageMax": F(a.ram_byte_usage_max) }),
            )?;
        }
        m.serialize_field("lbAllocations", &Lbs(a))?;
        m.serialize_field("cpuCoreLimitAverage", &F(a.cpu_core_limit_average))?;
        m.serialize_field("ramByteLimitAverage", &F(a.ram_byte_limit_average))?;
        m.end()
    }
}

struct Pvs<'a>(&'a Allocation);
impl Serialize for Pvs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.pvs.is_empty() {
            return s.serialize_none();
        }
        let mut m = s.serialize_map(Some(self.0.pvs.len()))?;
        for (k, pv) in &self.0.pvs {
            m.serialize_entry(k, &serde_json::json!({ "byteHours": F(pv.byte_hours), "cost": F(pv.cost), "providerID": pv.provider_id }))?;
        }
        m.end()
    }
}

struct Lbs<'a>(&'a Allocation);
impl Serialize for Lbs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.lb_allocations.is_empty() {
            return s.serialize_none();
        }
        let mut m = s.serialize_map(Some(self.0.lb_allocations.len()))?;
        for (k, lb) in &self.0.lb_allocations {
            m.serialize_entry(
                k,
                &serde_json::json!({ "service": lb.service, "cost": F(lb.cost), "private": lb.private, "ip": lb.ip, "hours": F(lb.hours) }),
            )?;
        }
        m.end()
    }
}

/// One allocation set: an object keyed by allocation name, most expensive first.
pub struct AllocationSetJson<'a>(pub &'a AllocationResult);
impl Serialize for AllocationSetJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.allocations.len()))?;
        for a in &self.0.allocations {
            m.serialize_entry(&a.name, &AllocationJson(a))?;
        }
        m.end()
    }
}

/// The Kubecost envelope around an array of allocation sets.
pub fn allocation_body(results: &[AllocationResult]) -> Vec<u8> {
    let data: Vec<_> = results.iter().map(AllocationSetJson).collect();
    envelope(&data)
}

/// A summary allocation (`/allocation/summary`).
struct SummaryJson<'a>(&'a Allocation);
impl Serialize for SummaryJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let a = self.0;
        let mut m = s.serialize_struct("SummaryAllocation", 22)?;
        m.serialize_field("name", &a.name)?;
        m.serialize_field("start", &a.start)?;
        m.serialize_field("end", &a.end)?;
        m.serialize_field("cpuCoreRequestAverage", &F(a.cpu_core_request_average))?;
        m.serialize_field("cpuCoreUsageAverage", &F(a.cpu_core_usage_average))?;
        m.serialize_field("cpuCost", &F(a.cpu_cost))?;
        m.serialize_field("cpuCostIdle", &F(a.cpu_cost_idle))?;
        m.serialize_field("gpuRequestAverage", &F(a.gpu_request_average))?;
        m.serialize_field("gpuUsageAverage", &F(a.gpu_usage_average))?;
        m.serialize_field("gpuCost", &F(a.gpu_cost))?;
        m.serialize_field("gpuCostIdle", &F(a.gpu_cost_idle))?;
        m.serialize_field("networkCost", &F(a.network_cost))?;
        m.serialize_field("loadBalancerCost", &F(a.load_balancer_cost))?;
        m.serialize_field("pvCost", &F(a.pv_cost()))?;
        m.serialize_field("ramByteRequestAverage", &F(a.ram_byte_request_average))?;
        m.serialize_field("ramByteUsageAverage", &F(a.ram_byte_usage_average))?;
        m.serialize_field("ramCost", &F(a.ram_cost))?;
        m.serialize_field("ramCostIdle", &F(a.ram_cost_idle))?;
        m.serialize_field("sharedCost", &F(a.shared_cost))?;
        m.serialize_field("externalCost", &F(a.external_cost))?;
        m.serialize_field("totalEfficiency", &F(a.total_efficiency()))?;
        m.serialize_field("totalCost", &F(a.total_cost()))?;
        m.end()
    }
}

struct SummarySetJson<'a>(&'a AllocationResult);
impl Serialize for SummarySetJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Allocs<'a>(&'a [Allocation]);
        impl Serialize for Allocs<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for a in self.0 {
                    m.serialize_entry(&a.name, &SummaryJson(a))?;
                }
                m.end()
            }
        }
        let mut m = s.serialize_struct("SummaryAllocationSet", 2)?;
        m.serialize_field("allocations", &Allocs(&self.0.allocations))?;
        m.serialize_field("window", &self.0.window)?;
        m.end()
    }
}

/// The summary shape: `{"step":..,"sets":[{"allocations":{..},"window":..}],"window":..}`.
pub fn summary_body(results: &[AllocationResult], window: Window) -> Vec<u8> {
    #[derive(Serialize)]
    struct Range<'a> {
        step: i64,
        sets: Vec<SummarySetJson<'a>>,
        window: Window,
    }
    let step = results
        .first()
        .map_or(0, |r| r.window.duration().num_seconds());
    envelope(&Range {
        step,
        sets: results.iter().map(SummarySetJson).collect(),
        window,
    })
}

/// An asset in OpenCost's shape.
struct AssetJson<'a>(&'a Asset);
impl Serialize for AssetJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let a = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("type", &a.kind)?;
        m.serialize_entry(
            "properties",
            &serde_json::json!({
                "category": a.category, "provider": a.provider, "account": "", "project": "",
                "service": a.service, "cluster": a.cluster, "name": a.name, "providerID": a.provider_id,
            }),
        )?;
        m.serialize_entry("labels", &a.labels)?;
        m.serialize_entry("window", &a.window)?;
        m.serialize_entry("start", &a.start)?;
        m.serialize_entry("end", &a.end)?;
        m.serialize_entry("minutes", &F(a.minutes()))?;
        match a.kind.as_str() {
            "Node" => {
                m.serialize_entry("nodeType", &a.node_type)?;
                m.serialize_entry("cpuCores", &F(a.cpu_cores))?;
                m.serialize_entry("ramBytes", &F(a.ram_bytes))?;
                m.serialize_entry("cpuCoreHours", &F(a.cpu_core_hours))?;
                m.serialize_entry("ramByteHours", &F(a.ram_byte_hours))?;
                m.serialize_entry("GPUHours", &F(a.gpu_hours))?;
                m.serialize_entry("preemptible", &F(a.preemptible))?;
                m.serialize_entry("cpuCost", &F(a.cpu_cost))?;
                m.serialize_entry("gpuCost", &F(a.gpu_cost))?;
                m.serialize_entry("gpuCount", &F(a.gpu_count))?;
                m.serialize_entry("ramCost", &F(a.ram_cost))?;
            }
            "Disk" => {
                m.serialize_entry("byteHours", &F(a.byte_hours))?;
                m.serialize_entry("bytes", &F(a.bytes))?;
                m.serialize_entry("storageClass", &a.storage_class)?;
                m.serialize_entry("volumeName", &a.name)?;
                m.serialize_entry("claimName", &a.claim_name)?;
                m.serialize_entry("claimNamespace", &a.claim_namespace)?;
            }
            "LoadBalancer" => {
                m.serialize_entry("private", &a.private)?;
                m.serialize_entry("ip", &a.ip)?;
            }
            _ => {}
        }
        m.serialize_entry("adjustment", &F(a.adjustment))?;
        m.serialize_entry("totalCost", &F(a.total_cost()))?;
        m.end()
    }
}

struct AssetSetJson<'a>(&'a AssetResult);
impl Serialize for AssetSetJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.assets.len()))?;
        for (k, a) in &self.0.assets {
            m.serialize_entry(k, &AssetJson(a))?;
        }
        m.end()
    }
}

/// Asset sets in the envelope: an array of sets keyed by asset key.
pub fn asset_body(results: &[AssetResult]) -> Vec<u8> {
    let data: Vec<_> = results.iter().map(AssetSetJson).collect();
    envelope(&data)
}

fn envelope<T: Serialize>(data: &T) -> Vec<u8> {
    #[derive(Serialize)]
    struct Envelope<'a, T> {
        code: u16,
        status: &'static str,
        data: &'a T,
    }
    serde_json::to_vec(&Envelope {
        code: 200,
        status: "success",
        data,
    })
    .expect("response bodies always serialise")
}
