//! Response bodies in OpenCost's exact shapes: field order of `allocation_json.go`, floats rounded
//! to 5 decimals (`formatFloat64ForResponse`), NaN and infinities as `null`.

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};

use crate::model::{Allocation, Asset, Window};
use crate::query::{AllocationResult, AssetResult, Rows};
use tokio_util::sync::CancellationToken;

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

/// A time as OpenCost writes it: RFC 3339 in UTC at second precision (`2026-11-26T03:40:47Z`).
pub struct Ts<'a>(pub &'a Option<chrono::DateTime<chrono::Utc>>);

impl Serialize for Ts<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(t) => s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            None => s.serialize_none(),
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
        m.serialize_field("start", &Ts(&a.start))?;
        m.serialize_field("end", &Ts(&a.end))?;
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
            m.serialize_field("rawAllocationOnly", &RawOnly(a))?;
        }
        m.serialize_field("lbAllocations", &Lbs(a))?;
        if !a.shared_cost_breakdown.is_empty() {
            m.serialize_field("sharedCostBreakdown", &SharedBreakdown(a))?;
        }
        m.serialize_field("cpuCoreLimitAverage", &F(a.cpu_core_limit_average))?;
        m.serialize_field("ramByteLimitAverage", &F(a.ram_byte_limit_average))?;
        m.end()
    }
}

// The small nested objects below were `json!` maps, whose keys serde_json sorts: their fields
// are written in that order, so the bytes are the same (`tests/query_reference.rs`) without
// building a map per row.

struct RawOnly<'a>(&'a Allocation);
impl Serialize for RawOnly<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("RawAllocationOnly", 2)?;
        m.serialize_field("cpuCoreUsageMax", &F(self.0.cpu_core_usage_max))?;
        m.serialize_field("ramByteUsageMax", &F(self.0.ram_byte_usage_max))?;
        m.end()
    }
}

struct Pv<'a>(&'a crate::model::PvAllocation);
impl Serialize for Pv<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Pv", 3)?;
        m.serialize_field("byteHours", &F(self.0.byte_hours))?;
        m.serialize_field("cost", &F(self.0.cost))?;
        m.serialize_field("providerID", &self.0.provider_id)?;
        m.end()
    }
}

struct Lb<'a>(&'a crate::model::LbAllocation);
impl Serialize for Lb<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Lb", 5)?;
        m.serialize_field("cost", &F(self.0.cost))?;
        m.serialize_field("hours", &F(self.0.hours))?;
        m.serialize_field("ip", &self.0.ip)?;
        m.serialize_field("private", &self.0.private)?;
        m.serialize_field("service", &self.0.service)?;
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
            m.serialize_entry(k, &Pv(pv))?;
        }
        m.end()
    }
}

struct SharedBreakdown<'a>(&'a Allocation);
impl Serialize for SharedBreakdown<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.shared_cost_breakdown.len()))?;
        for (k, b) in &self.0.shared_cost_breakdown {
            m.serialize_entry(
                k,
                &serde_json::json!({
                    "name": b.name, "totalCost": F(b.total_cost), "cpuCost": F(b.cpu_cost),
                    "gpuCost": F(b.gpu_cost), "ramCost": F(b.ram_cost), "pvCost": F(b.pv_cost),
                    "networkCost": F(b.network_cost), "loadBalancerCost": F(b.load_balancer_cost),
                    "externalCost": F(b.external_cost),
                }),
            )?;
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
            m.serialize_entry(k, &Lb(lb))?;
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

/// One allocation set whose rows are built as they are written ([`Rows`]): the same bytes as
/// [`AllocationSetJson`] of the whole set, without holding it.
/// Stops with an error once the token fires.
pub struct RowsJson<'a>(pub &'a Rows<'a>, pub &'a CancellationToken);
impl Serialize for RowsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        each_row(self.0, self.1, |a| {
            m.serialize_entry(&a.name, &AllocationJson(a))
        })?;
        m.end()
    }
}

/// The Kubecost envelope around an array of allocation sets, built whole: the reference the
/// streaming [`Body`] is tested against.
#[cfg(test)]
fn allocation_body(results: &[AllocationResult]) -> Vec<u8> {
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
        m.serialize_field("start", &Ts(&a.start))?;
        m.serialize_field("end", &Ts(&a.end))?;
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

/// One set of the summary shape.
pub struct SummarySetJson<'a>(pub &'a AllocationResult);
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

/// One set of the summary shape whose rows are built as they are written ([`Rows`]): the
/// same bytes as [`SummarySetJson`] of the whole set. Stops with an error once the token fires.
pub struct SummaryRowsJson<'a>(pub &'a Rows<'a>, pub &'a CancellationToken);
impl Serialize for SummaryRowsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Allocs<'a>(&'a Rows<'a>, &'a CancellationToken);
        impl Serialize for Allocs<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                each_row(self.0, self.1, |a| {
                    m.serialize_entry(&a.name, &SummaryJson(a))
                })?;
                m.end()
            }
        }
        let mut m = s.serialize_struct("SummaryAllocationSet", 2)?;
        m.serialize_field("allocations", &Allocs(self.0, self.1))?;
        m.serialize_field("window", &self.0.window())?;
        m.end()
    }
}

/// Hands each row of `rows` to `f`, checking `cancel` every 1,024 rows (building a row costs a
/// few microseconds; a big answer has hundreds of thousands).
fn each_row<E: serde::ser::Error>(
    rows: &Rows<'_>,
    cancel: &CancellationToken,
    mut f: impl FnMut(&Allocation) -> Result<(), E>,
) -> Result<(), E> {
    let mut n = 0usize;
    rows.try_for_each(|a| {
        n += 1;
        if n.is_multiple_of(1024) && cancel.is_cancelled() {
            return Err(E::custom("cancelled"));
        }
        f(a)
    })
}

/// The summary shape, built whole (test reference for [`Body`]).
#[cfg(test)]
fn summary_body(results: &[AllocationResult], window: Window) -> Vec<u8> {
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
        m.serialize_entry("start", &Ts(&a.start))?;
        m.serialize_entry("end", &Ts(&a.end))?;
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
                m.serialize_entry("cpuBreakdown", &BreakdownJson(&a.cpu_breakdown))?;
                m.serialize_entry("ramBreakdown", &BreakdownJson(&a.ram_breakdown))?;
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

/// A node's breakdown, in OpenCost's field order.
struct BreakdownJson<'a>(&'a crate::model::Breakdown);
impl Serialize for BreakdownJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let b = self.0;
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("idle", &F(b.idle))?;
        m.serialize_entry("other", &F(b.other))?;
        m.serialize_entry("system", &F(b.system))?;
        m.serialize_entry("user", &F(b.user))?;
        m.end()
    }
}

/// One asset set: an object keyed by asset key.
pub struct AssetSetJson<'a>(pub &'a AssetResult);
impl Serialize for AssetSetJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.assets.len()))?;
        for (k, a) in &self.0.assets {
            m.serialize_entry(k, &AssetJson(a))?;
        }
        m.end()
    }
}

/// Asset sets in the envelope, built whole (test reference for [`Body`]).
#[cfg(test)]
fn asset_body(results: &[AssetResult]) -> Vec<u8> {
    let data: Vec<_> = results.iter().map(AssetSetJson).collect();
    envelope(&data)
}

#[cfg(test)]
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

/// `v` as JSON, as [`Body::item`] writes it.
pub fn encode(v: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(v).expect("response bodies always serialise")
}

/// The response body would grow past its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the response would exceed {limit} bytes")]
pub struct TooLarge {
    /// The limit, in bytes.
    pub limit: usize,
}

/// A response body written one set at a time, in the Kubecost envelope, that refuses to grow
/// past its limit: a query's memory is its limit plus one step's set, whatever it asks for.
/// With a [`Sink`], a body that passes [`STREAM_AFTER`] bytes is handed on in chunks as it is
/// written, so its memory is a few chunks whatever its size (the limit still counts every
/// byte).
///
/// `{"code":200,"status":"success","data":[set,set,...]}` (or the summary shape
/// `{"code":200,"status":"success","data":{"step":S,"sets":[...],"window":W}}`), with a
/// top-level `"warning"` after `data` when there is something the client must know.
pub struct Body {
    buf: Vec<u8>,
    limit: usize,
    /// Bytes handed to the sink so far.
    sent: usize,
    items: usize,
    sink: Option<Sink>,
}

/// A body bigger than this is streamed (chunked) rather than sent whole with its length.
pub const STREAM_AFTER: usize = 1 << 20;
/// The size of the chunks a streamed body is handed on in.
const CHUNK: usize = 256 << 10;

/// Where a streamed body's chunks go: the HTTP response, through a bounded channel, so a
/// slow client holds the query back instead of its body piling up. An `Err` ends the stream
/// without the body's end: the client sees a cut-off response, never a complete-looking one.
pub struct Sink {
    /// The response's end of the channel.
    pub tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    /// Cancelled when the response is gone (the client went away), to stop the query.
    pub cancel: tokio_util::sync::CancellationToken,
}

struct Limited<'a>(&'a mut Body);

impl std::io::Write for Limited<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let body = &mut *self.0;
        if body.sent + body.buf.len() + data.len() > body.limit {
            return Err(std::io::Error::other(TooLarge { limit: body.limit }));
        }
        body.buf.extend_from_slice(data);
        let due = if body.sent == 0 { STREAM_AFTER } else { CHUNK };
        if body.sink.is_some() && body.buf.len() >= due {
            body.hand_on();
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const ENVELOPE_HEAD: &str = r#"{"code":200,"status":"success","data":"#;

impl Body {
    /// An empty body that may grow to `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            limit,
            sent: 0,
            items: 0,
            sink: None,
        }
    }

    /// An empty body that may grow to `limit` bytes, streamed into `sink` once it passes
    /// [`STREAM_AFTER`].
    pub fn streaming(limit: usize, sink: Sink) -> Self {
        Self {
            sink: Some(sink),
            ..Self::new(limit)
        }
    }

    /// Hands what is written so far to the sink. Blocks while the channel is full (the client
    /// reads slower than the query writes); must not run on an async runtime's thread (query
    /// workers are threads of their own).
    fn hand_on(&mut self) {
        let Some(sink) = &self.sink else { return };
        let chunk = bytes::Bytes::from(std::mem::take(&mut self.buf));
        self.sent += chunk.len();
        if sink.tx.blocking_send(Ok(chunk)).is_err() {
            // The response is gone: stop the query; what it still writes goes nowhere.
            sink.cancel.cancel();
        }
    }

    /// Whether part of the body has been handed to the sink: the response has begun, so what
    /// [`Body`]'s closing methods return is the rest of it, already handed on too.
    pub fn is_streamed(&self) -> bool {
        self.sent > 0
    }

    fn raw(&mut self, text: &str) -> Result<(), TooLarge> {
        std::io::Write::write_all(&mut Limited(self), text.as_bytes())
            .map_err(|_| TooLarge { limit: self.limit })
    }

    fn value(&mut self, v: &impl Serialize) -> Result<(), TooLarge> {
        let limit = self.limit;
        // serde_json writes a value in pieces of a few bytes: gather them before the limit
        // check and copy (a third of an answer's encoding time when they went one by one).
        let mut w = std::io::BufWriter::with_capacity(64 << 10, Limited(self));
        serde_json::to_writer(&mut w, v).map_err(|_| TooLarge { limit })?;
        std::io::Write::flush(&mut w).map_err(|_| TooLarge { limit })
    }

    /// Opens the envelope around an array of sets.
    pub fn open_array(&mut self) -> Result<(), TooLarge> {
        self.raw(ENVELOPE_HEAD)?;
        self.raw("[")
    }

    /// Opens the summary shape, whose sets are `step` seconds long.
    pub fn open_summary(&mut self, step: i64) -> Result<(), TooLarge> {
        self.raw(ENVELOPE_HEAD)?;
        self.raw(r#"{"step":"#)?;
        self.value(&step)?;
        self.raw(r#","sets":["#)
    }

    /// Appends one set already encoded.
    pub fn encoded_item(&mut self, json: &[u8]) -> Result<(), TooLarge> {
        if self.items > 0 {
            self.raw(",")?;
        }
        self.items += 1;
        std::io::Write::write_all(&mut Limited(self), json)
            .map_err(|_| TooLarge { limit: self.limit })
    }

    /// Appends one set.
    pub fn item(&mut self, v: &impl Serialize) -> Result<(), TooLarge> {
        if self.items > 0 {
            self.raw(",")?;
        }
        self.items += 1;
        self.value(v)
    }

    /// Closes an array opened by [`Body::open_array`].
    pub fn close_array(mut self, warning: Option<&str>) -> Result<Vec<u8>, TooLarge> {
        self.raw("]")?;
        self.close(warning)
    }

    /// Opens the envelope around one asset map (OpenCost's `/assets`: `data` is the map for
    /// the window, not an array of sets).
    pub fn open_asset_map(&mut self) -> Result<(), TooLarge> {
        self.raw(ENVELOPE_HEAD)
    }

    /// Writes the one asset map opened by [`Body::open_asset_map`].
    pub fn asset_map(&mut self, set: &AssetSetJson<'_>) -> Result<(), TooLarge> {
        self.items += 1;
        self.value(set)
    }

    /// Closes an asset map opened by [`Body::open_asset_map`]: `{}` if none was written.
    pub fn close_asset_map(mut self, warning: Option<&str>) -> Result<Vec<u8>, TooLarge> {
        if self.items == 0 {
            self.raw("{}")?;
        }
        self.close(warning)
    }

    /// Closes a summary opened by [`Body::open_summary`].
    pub fn close_summary(
        mut self,
        window: Window,
        warning: Option<&str>,
    ) -> Result<Vec<u8>, TooLarge> {
        self.raw(r#"],"window":"#)?;
        self.value(&window)?;
        self.raw("}")?;
        self.close(warning)
    }

    /// Ends the body: the whole of it, or (streamed) nothing, its rest handed to the sink.
    fn close(mut self, warning: Option<&str>) -> Result<Vec<u8>, TooLarge> {
        if let Some(w) = warning {
            self.raw(r#","warning":"#)?;
            self.value(&w)?;
        }
        self.raw("}")?;
        if self.is_streamed() {
            self.hand_on();
        }
        Ok(self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etl::costing;
    use crate::etl::demo::DemoCluster;
    use crate::model::Resolution;
    use crate::query::{AllocationQuery, AssetQuery};
    use chrono::TimeZone;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    type Sets<T> = BTreeMap<(Resolution, chrono::DateTime<chrono::Utc>), Arc<T>>;

    fn sets() -> (
        Sets<crate::model::AllocationColumns>,
        Sets<crate::model::StoredAssets>,
        chrono::DateTime<chrono::Utc>,
    ) {
        let day = chrono::Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap();
        let c = DemoCluster::new(3, 30);
        let mut allocs = BTreeMap::new();
        let mut assets = BTreeMap::new();
        for d in 0..3 {
            let w = Window::new(
                day + chrono::Duration::days(d),
                day + chrono::Duration::days(d + 1),
            );
            let (a, s) = costing::price(&c.compute(w, w.end), Resolution::Day, "c1");
            let a =
                crate::model::AllocationColumns::from_set(a, crate::model::PodInterner::global());
            allocs.insert((Resolution::Day, w.start), Arc::new(a));
            // Packed as a follower holds sets read from Parquet.
            let body =
                crate::storage::parquet::encode(&crate::model::EtlSet::Assets(s.clone())).unwrap();
            let s = crate::model::StoredAssets::packed(
                &s,
                body.into(),
                crate::storage::parquet::decode_assets,
            );
            assets.insert((Resolution::Day, w.start), Arc::new(s));
        }
        (allocs, assets, day + chrono::Duration::days(5))
    }

    fn params(q: &str) -> std::collections::HashMap<String, String> {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn streamed_bodies_are_byte_for_byte_the_whole_bodies() {
        let (allocs, assets, now) = sets();
        let window = "window=2026-11-20T00:00:00Z,2026-11-23T00:00:00Z";
        for q in [
            "",
            "&aggregate=namespace",
            "&aggregate=pod&accumulate=true&shareIdle=true",
        ] {
            let q: AllocationQuery = crate::query::parse_allocation_query(
                &params(&format!("{window}{q}")),
                now,
                100,
                crate::query::Dialect::Kubecost,
            )
            .unwrap();
            let results = q.run(&allocs, now);
            let mut b = Body::new(usize::MAX);
            b.open_array().unwrap();
            for r in &results {
                b.item(&AllocationSetJson(r)).unwrap();
            }
            assert_eq!(b.close_array(None).unwrap(), allocation_body(&results));
            let mut b = Body::new(usize::MAX);
            let step = results
                .first()
                .map_or(0, |r| r.window.duration().num_seconds());
            b.open_summary(step).unwrap();
            for r in &results {
                b.item(&SummarySetJson(r)).unwrap();
            }
            assert_eq!(
                b.close_summary(q.window, None).unwrap(),
                summary_body(&results, q.window)
            );
        }
        let q: AssetQuery = crate::query::parse_asset_query(
            &params(window),
            now,
            100,
            crate::query::Dialect::Kubecost,
        )
        .unwrap();
        let results = q.run(&assets, now);
        let mut b = Body::new(usize::MAX);
        b.open_array().unwrap();
        for r in &results {
            b.item(&AssetSetJson(r)).unwrap();
        }
        assert_eq!(b.close_array(None).unwrap(), asset_body(&results));

        // OpenCost's shape: the one accumulated set is `data` itself.
        let q: AssetQuery = crate::query::parse_asset_query(
            &params(window),
            now,
            100,
            crate::query::Dialect::Opencost,
        )
        .unwrap();
        let results = q.run(&assets, now);
        assert_eq!(results.len(), 1);
        let mut b = Body::new(usize::MAX);
        b.open_asset_map().unwrap();
        b.asset_map(&AssetSetJson(&results[0])).unwrap();
        assert_eq!(
            b.close_asset_map(None).unwrap(),
            envelope(&AssetSetJson(&results[0]))
        );
        let mut b = Body::new(usize::MAX);
        b.open_asset_map().unwrap();
        let empty: serde_json::Value =
            serde_json::from_slice(&b.close_asset_map(Some("w")).unwrap()).unwrap();
        assert_eq!(empty["data"], serde_json::json!({}));
        assert_eq!(empty["warning"], "w");
    }

    #[test]
    fn a_body_stops_at_its_limit_and_carries_a_warning() {
        let (allocs, _, now) = sets();
        let q = crate::query::parse_allocation_query(
            &params("window=2026-11-20T00:00:00Z,2026-11-23T00:00:00Z"),
            now,
            100,
            crate::query::Dialect::Kubecost,
        )
        .unwrap();
        let results = q.run(&allocs, now);
        let whole = allocation_body(&results);
        let mut b = Body::new(whole.len() / 2);
        b.open_array().unwrap();
        let err = results
            .iter()
            .try_for_each(|r| b.item(&AllocationSetJson(r)))
            .unwrap_err();
        assert_eq!(
            err,
            TooLarge {
                limit: whole.len() / 2
            }
        );

        let mut b = Body::new(1024);
        b.open_array().unwrap();
        let body = b.close_array(Some("a \"quoted\" warning")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["warning"], "a \"quoted\" warning");
        assert_eq!(v["data"], serde_json::json!([]));
    }
}
