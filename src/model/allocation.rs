//! OpenCost's `Allocation`: the cost of one container (or of an aggregate of them) over a window,
//! with the same field names and the same arithmetic for adding two together.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Resolution, Window};

/// Name of the idle allocation (capacity paid for but not allocated).
pub const IDLE: &str = "__idle__";
/// Aggregation value for an allocation that lacks the aggregated property.
pub const UNALLOCATED: &str = "__unallocated__";
/// Name part for volumes and load balancers that no running pod uses.
pub const UNMOUNTED: &str = "__unmounted__";

/// The Kubernetes identity of an allocation. Empty strings mean "not set" and are omitted from
/// JSON, as OpenCost's `omitempty` does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AllocationProperties {
    /// Cluster id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    /// Node name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// Container name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub container: String,
    /// Controller name (deployment, statefulset, ...).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub controller: String,
    /// Controller kind, lower case as OpenCost reports it (`deployment`, `statefulset`, ...).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub controller_kind: String,
    /// Namespace.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Pod name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pod: String,
    /// Services selecting the pod.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// Node provider id.
    #[serde(rename = "providerID", skip_serializing_if = "String::is_empty")]
    pub provider_id: String,
    /// Pod labels, keys Prometheus-sanitised.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Pod annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Namespace labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub namespace_labels: BTreeMap<String, String>,
    /// Namespace annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub namespace_annotations: BTreeMap<String, String>,
}

/// Read access to an allocation's properties, whether they are held as one struct
/// ([`AllocationProperties`]) or column by column in a loaded set.
pub trait Props {
    /// Cluster id.
    fn cluster(&self) -> &str;
    /// Node name.
    fn node(&self) -> &str;
    /// Container name.
    fn container(&self) -> &str;
    /// Controller name.
    fn controller(&self) -> &str;
    /// Controller kind.
    fn controller_kind(&self) -> &str;
    /// Namespace.
    fn namespace(&self) -> &str;
    /// Pod name.
    fn pod(&self) -> &str;
    /// Node provider id.
    fn provider_id(&self) -> &str;
    /// Services selecting the pod.
    fn services(&self) -> &[String];
    /// Pod labels.
    fn labels(&self) -> &BTreeMap<String, String>;
    /// Pod annotations.
    fn annotations(&self) -> &BTreeMap<String, String>;
    /// Namespace labels.
    fn namespace_labels(&self) -> &BTreeMap<String, String>;
    /// Namespace annotations.
    fn namespace_annotations(&self) -> &BTreeMap<String, String>;
}

impl Props for AllocationProperties {
    fn cluster(&self) -> &str {
        &self.cluster
    }
    fn node(&self) -> &str {
        &self.node
    }
    fn container(&self) -> &str {
        &self.container
    }
    fn controller(&self) -> &str {
        &self.controller
    }
    fn controller_kind(&self) -> &str {
        &self.controller_kind
    }
    fn namespace(&self) -> &str {
        &self.namespace
    }
    fn pod(&self) -> &str {
        &self.pod
    }
    fn provider_id(&self) -> &str {
        &self.provider_id
    }
    fn services(&self) -> &[String] {
        &self.services
    }
    fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }
    fn annotations(&self) -> &BTreeMap<String, String> {
        &self.annotations
    }
    fn namespace_labels(&self) -> &BTreeMap<String, String> {
        &self.namespace_labels
    }
    fn namespace_annotations(&self) -> &BTreeMap<String, String> {
        &self.namespace_annotations
    }
}

impl AllocationProperties {
    /// Keeps only what `self` and `other` share, as OpenCost's `Intersection`: a property that
    /// differs becomes unset, services and map entries are kept only when both have them.
    pub fn intersect(&mut self, other: &impl Props) {
        for (mine, theirs) in [
            (&mut self.cluster, other.cluster()),
            (&mut self.node, other.node()),
            (&mut self.container, other.container()),
            (&mut self.controller, other.controller()),
            (&mut self.controller_kind, other.controller_kind()),
            (&mut self.namespace, other.namespace()),
            (&mut self.pod, other.pod()),
            (&mut self.provider_id, other.provider_id()),
        ] {
            if !mine.is_empty() && mine != theirs {
                mine.clear();
            }
        }
        if !self.services.is_empty() && self.services != other.services() {
            self.services.retain(|s| other.services().contains(s));
        }
        for (mine, theirs) in [
            (&mut self.labels, other.labels()),
            (&mut self.annotations, other.annotations()),
            (&mut self.namespace_labels, other.namespace_labels()),
            (
                &mut self.namespace_annotations,
                other.namespace_annotations(),
            ),
        ] {
            if !mine.is_empty() && mine != theirs {
                mine.retain(|k, v| theirs.get(k) == Some(v));
            }
        }
    }
}

/// One shared cost's part in an allocation (`sharedCostBreakdown` map value).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SharedCostBreakdown {
    /// The shared allocation's name under the query's aggregation.
    pub name: String,
    /// The part of its total cost shared here.
    pub total_cost: f64,
    /// CPU.
    pub cpu_cost: f64,
    /// GPU.
    pub gpu_cost: f64,
    /// RAM.
    pub ram_cost: f64,
    /// Volumes.
    pub pv_cost: f64,
    /// Network.
    pub network_cost: f64,
    /// Load balancers.
    pub load_balancer_cost: f64,
    /// Out-of-cluster.
    pub external_cost: f64,
}

impl SharedCostBreakdown {
    fn add(&mut self, o: &SharedCostBreakdown) {
        self.total_cost += o.total_cost;
        self.cpu_cost += o.cpu_cost;
        self.gpu_cost += o.gpu_cost;
        self.ram_cost += o.ram_cost;
        self.pv_cost += o.pv_cost;
        self.network_cost += o.network_cost;
        self.load_balancer_cost += o.load_balancer_cost;
        self.external_cost += o.external_cost;
    }

    /// `coefficient` of `shared`'s costs, under `name`.
    pub fn part_of(name: &str, shared: &Allocation, coefficient: f64) -> Self {
        SharedCostBreakdown {
            name: name.to_string(),
            total_cost: shared.total_cost() * coefficient,
            cpu_cost: shared.cpu_total_cost() * coefficient,
            gpu_cost: shared.gpu_total_cost() * coefficient,
            ram_cost: shared.ram_total_cost() * coefficient,
            pv_cost: shared.pv_total_cost() * coefficient,
            network_cost: shared.network_total_cost() * coefficient,
            load_balancer_cost: shared.lb_total_cost() * coefficient,
            external_cost: shared.external_cost * coefficient,
        }
    }

    fn scale(&mut self, f: f64) {
        for v in [
            &mut self.total_cost,
            &mut self.cpu_cost,
            &mut self.gpu_cost,
            &mut self.ram_cost,
            &mut self.pv_cost,
            &mut self.network_cost,
            &mut self.load_balancer_cost,
            &mut self.external_cost,
        ] {
            *v *= f;
        }
    }
}

/// A persistent volume's share in an allocation (`pvs` map value).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PvAllocation {
    /// Byte-hours of the volume attributed here (bytes claimed × hours).
    pub byte_hours: f64,
    /// Cost attributed here.
    pub cost: f64,
    /// Provider id of the volume.
    #[serde(rename = "providerID", default)]
    pub provider_id: String,
}

/// A load balancer's share in an allocation (`lbAllocations` map value).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LbAllocation {
    /// `namespace/name` of the service.
    pub service: String,
    /// Cost attributed here.
    pub cost: f64,
    /// Whether the load balancer is internal.
    pub private: bool,
    /// Ingress IP.
    pub ip: String,
    /// Hours the load balancer ran in the window.
    pub hours: f64,
}

/// One allocation: the stored form, at full precision. OpenCost's derived values (`minutes`,
/// `cpuCores`, efficiencies, `totalCost`, ...) are methods, so they can never disagree with the
/// stored ones.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Allocation {
    /// Allocation name: `cluster/node/namespace/pod/container` for a container, the
    /// aggregation key once aggregated (`name`).
    pub name: String,
    /// Kubernetes identity (`properties`); an aggregate keeps only the aggregated properties.
    pub properties: AllocationProperties,
    /// The ETL window the allocation belongs to, widened to cover both when two are added
    /// (`window`).
    pub window: Option<Window>,
    /// When the allocation started running within its window (`start`).
    pub start: Option<DateTime<Utc>>,
    /// When the allocation stopped running within its window (`end`).
    pub end: Option<DateTime<Utc>>,
    /// Average CPU request over the running time, in cores (`cpuCoreRequestAverage`).
    pub cpu_core_request_average: f64,
    /// Average CPU usage over the running time, in cores (`cpuCoreUsageAverage`).
    pub cpu_core_usage_average: f64,
    /// Average CPU limit over the running time, in cores (`cpuCoreLimitAverage`).
    pub cpu_core_limit_average: f64,
    /// CPU allocated, ∫ max(request, usage) dt, in core-hours (`cpuCoreHours`).
    pub cpu_core_hours: f64,
    /// CPU cost, in $ (`cpuCost`); includes any idle cost shared onto it (`cpu_cost_idle`).
    pub cpu_cost: f64,
    /// Adjustment to the CPU cost, in $ (`cpuCostAdjustment`).
    pub cpu_cost_adjustment: f64,
    /// The part of `cpu_cost` that is shared idle cost (`shareIdle`), in $ (`cpuCostIdle`).
    pub cpu_cost_idle: f64,
    /// Average GPUs requested over the running time (`gpuRequestAverage`).
    pub gpu_request_average: f64,
    /// Average GPUs used over the running time (`gpuUsageAverage`).
    pub gpu_usage_average: f64,
    /// GPUs allocated, in GPU-hours (`gpuHours`).
    pub gpu_hours: f64,
    /// GPU cost, in $ (`gpuCost`); includes any idle cost shared onto it (`gpu_cost_idle`).
    pub gpu_cost: f64,
    /// Adjustment to the GPU cost, in $ (`gpuCostAdjustment`).
    pub gpu_cost_adjustment: f64,
    /// The part of `gpu_cost` that is shared idle cost (`shareIdle`), in $ (`gpuCostIdle`).
    pub gpu_cost_idle: f64,
    /// Network bytes sent (`networkTransferBytes`).
    pub network_transfer_bytes: f64,
    /// Network bytes received (`networkReceiveBytes`).
    pub network_receive_bytes: f64,
    /// Network cost, in $ (`networkCost`).
    pub network_cost: f64,
    /// Network cost of traffic across zones, in $ (`networkCrossZoneCost`).
    pub network_cross_zone_cost: f64,
    /// Network cost of traffic across regions, in $ (`networkCrossRegionCost`).
    pub network_cross_region_cost: f64,
    /// Network cost of traffic to the internet, in $ (`networkInternetCost`).
    pub network_internet_cost: f64,
    /// Adjustment to the network cost, in $ (`networkCostAdjustment`).
    pub network_cost_adjustment: f64,
    /// Load balancer cost attributed here, in $ (`loadBalancerCost`); per service in
    /// `lb_allocations`.
    pub load_balancer_cost: f64,
    /// Adjustment to the load balancer cost, in $ (`loadBalancerCostAdjustment`).
    pub load_balancer_cost_adjustment: f64,
    /// Persistent volumes' shares, keyed `cluster=<cluster>:name=<pv name>` (`pvs`).
    pub pvs: BTreeMap<String, PvAllocation>,
    /// Adjustment to the volume cost, in $ (`pvCostAdjustment`).
    pub pv_cost_adjustment: f64,
    /// Average RAM request over the running time, in bytes (`ramByteRequestAverage`).
    pub ram_byte_request_average: f64,
    /// Average RAM usage over the running time, in bytes (`ramByteUsageAverage`).
    pub ram_byte_usage_average: f64,
    /// Average RAM limit over the running time, in bytes (`ramByteLimitAverage`).
    pub ram_byte_limit_average: f64,
    /// RAM allocated, ∫ max(request, usage) dt, in byte-hours (`ramByteHours`).
    pub ram_byte_hours: f64,
    /// RAM cost, in $ (`ramCost`); includes any idle cost shared onto it (`ram_cost_idle`).
    pub ram_cost: f64,
    /// Adjustment to the RAM cost, in $ (`ramCostAdjustment`).
    pub ram_cost_adjustment: f64,
    /// The part of `ram_cost` that is shared idle cost (`shareIdle`), in $ (`ramCostIdle`).
    pub ram_cost_idle: f64,
    /// Cost of resources outside the cluster attributed here, in $ (`externalCost`).
    pub external_cost: f64,
    /// Shared overhead cost distributed onto this allocation, in $ (`sharedCost`).
    pub shared_cost: f64,
    /// Peak CPU usage (cores); only meaningful on an unaggregated allocation.
    pub cpu_core_usage_max: f64,
    /// Peak RAM usage (bytes); only meaningful on an unaggregated allocation.
    pub ram_byte_usage_max: f64,
    /// Load balancers' shares, keyed by `namespace/service` (`lbAllocations`).
    pub lb_allocations: BTreeMap<String, LbAllocation>,
    /// Shared costs added into `shared_cost`, by shared allocation (`sharedCostBreakdown`);
    /// computed by a query, never stored.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub shared_cost_breakdown: BTreeMap<String, SharedCostBreakdown>,
}

impl Allocation {
    /// Whether this is an idle allocation.
    pub fn is_idle(&self) -> bool {
        self.name == IDLE || self.name.ends_with("/__idle__")
    }

    /// Whether this allocation is the unmounted-volume bucket.
    pub fn is_unmounted(&self) -> bool {
        self.name.ends_with(UNMOUNTED)
    }

    /// `end − start` in minutes (0 when either is unset).
    pub fn minutes(&self) -> f64 {
        match (self.start, self.end) {
            (Some(s), Some(e)) if e > s => (e - s).num_milliseconds() as f64 / 60_000.0,
            _ => 0.0,
        }
    }

    fn per_hour(&self, total: f64) -> f64 {
        let hours = self.minutes() / 60.0;
        if hours > 0.0 { total / hours } else { 0.0 }
    }

    /// Average allocated cores over the allocation's running time.
    pub fn cpu_cores(&self) -> f64 {
        self.per_hour(self.cpu_core_hours)
    }
    /// Average allocated bytes.
    pub fn ram_bytes(&self) -> f64 {
        self.per_hour(self.ram_byte_hours)
    }
    /// Average GPUs.
    pub fn gpu_count(&self) -> f64 {
        self.per_hour(self.gpu_hours)
    }
    /// Sum of the volumes' byte-hours.
    pub fn pv_byte_hours(&self) -> f64 {
        self.pvs.values().map(|p| p.byte_hours).sum()
    }
    /// Average volume bytes.
    pub fn pv_bytes(&self) -> f64 {
        self.per_hour(self.pv_byte_hours())
    }
    /// Sum of the volumes' costs.
    pub fn pv_cost(&self) -> f64 {
        self.pvs.values().map(|p| p.cost).sum()
    }

    /// CPU cost plus its adjustment, in $.
    pub fn cpu_total_cost(&self) -> f64 {
        self.cpu_cost + self.cpu_cost_adjustment
    }
    /// RAM cost plus its adjustment, in $.
    pub fn ram_total_cost(&self) -> f64 {
        self.ram_cost + self.ram_cost_adjustment
    }
    /// GPU cost plus its adjustment, in $.
    pub fn gpu_total_cost(&self) -> f64 {
        self.gpu_cost + self.gpu_cost_adjustment
    }
    /// Volume cost plus its adjustment, in $.
    pub fn pv_total_cost(&self) -> f64 {
        self.pv_cost() + self.pv_cost_adjustment
    }
    /// Network cost plus its adjustment, in $.
    pub fn network_total_cost(&self) -> f64 {
        self.network_cost + self.network_cost_adjustment
    }
    /// Load balancer cost plus its adjustment, in $.
    pub fn lb_total_cost(&self) -> f64 {
        self.load_balancer_cost + self.load_balancer_cost_adjustment
    }

    /// OpenCost's `TotalCost`.
    pub fn total_cost(&self) -> f64 {
        self.cpu_total_cost()
            + self.gpu_total_cost()
            + self.ram_total_cost()
            + self.pv_total_cost()
            + self.network_total_cost()
            + self.lb_total_cost()
            + self.shared_cost
            + self.external_cost
    }

    /// Multiplies every cost by `f` (quantities stay): a cost over the window becomes a rate
    /// (`costMetric`).
    pub fn scale_costs(&mut self, f: f64) {
        for v in [
            &mut self.cpu_cost,
            &mut self.cpu_cost_adjustment,
            &mut self.cpu_cost_idle,
            &mut self.gpu_cost,
            &mut self.gpu_cost_adjustment,
            &mut self.gpu_cost_idle,
            &mut self.network_cost,
            &mut self.network_cross_zone_cost,
            &mut self.network_cross_region_cost,
            &mut self.network_internet_cost,
            &mut self.network_cost_adjustment,
            &mut self.load_balancer_cost,
            &mut self.load_balancer_cost_adjustment,
            &mut self.pv_cost_adjustment,
            &mut self.ram_cost,
            &mut self.ram_cost_adjustment,
            &mut self.ram_cost_idle,
            &mut self.external_cost,
            &mut self.shared_cost,
        ] {
            *v *= f;
        }
        for pv in self.pvs.values_mut() {
            pv.cost *= f;
        }
        for lb in self.lb_allocations.values_mut() {
            lb.cost *= f;
        }
        for b in self.shared_cost_breakdown.values_mut() {
            b.scale(f);
        }
    }

    /// usage ÷ request; without a request 1 when something was used and paid for, else 0.
    fn efficiency(usage: f64, request: f64, cost: f64) -> f64 {
        if request > 0.0 {
            usage / request
        } else if usage == 0.0 || cost == 0.0 {
            0.0
        } else if usage > 0.0 {
            1.0
        } else {
            0.0
        }
    }
    /// CPU usage ÷ request (`cpuEfficiency`); without a request, 1 when CPU was used and paid
    /// for, else 0.
    pub fn cpu_efficiency(&self) -> f64 {
        Self::efficiency(
            self.cpu_core_usage_average,
            self.cpu_core_request_average,
            self.cpu_cost,
        )
    }
    /// RAM usage ÷ request (`ramEfficiency`); without a request, 1 when RAM was used and paid
    /// for, else 0.
    pub fn ram_efficiency(&self) -> f64 {
        Self::efficiency(
            self.ram_byte_usage_average,
            self.ram_byte_request_average,
            self.ram_cost,
        )
    }
    /// GPU usage ÷ request (`gpuEfficiency`); 0 unless both are positive.
    pub fn gpu_efficiency(&self) -> f64 {
        if self.gpu_request_average > 0.0 && self.gpu_usage_average > 0.0 {
            self.gpu_usage_average / self.gpu_request_average
        } else {
            0.0
        }
    }
    /// Cost-weighted CPU and RAM efficiency.
    pub fn total_efficiency(&self) -> f64 {
        let cost = self.cpu_total_cost() + self.ram_total_cost();
        if cost > 0.0 {
            (self.cpu_efficiency() * self.cpu_total_cost()
                + self.ram_efficiency() * self.ram_total_cost())
                / cost
        } else {
            0.0
        }
    }

    /// Adds `other` into `self`, as OpenCost's `Allocation.add`: costs and hours sum; windows,
    /// start and end widen; averages are recombined weighted by running minutes so that an
    /// aggregate's request average is the average total request over its span.
    pub fn add(&mut self, other: &Allocation) {
        self.add_values(other);
        self.properties.intersect(&other.properties);
    }

    /// [`Self::add`] but for the properties, which the caller intersects itself.
    pub fn add_values(&mut self, other: &Allocation) {
        let (m1, m2) = (self.minutes(), other.minutes());
        let weighted = |a: f64, b: f64| a * m1 + b * m2;
        let cpu_req = weighted(
            self.cpu_core_request_average,
            other.cpu_core_request_average,
        );
        let cpu_use = weighted(self.cpu_core_usage_average, other.cpu_core_usage_average);
        let cpu_lim = weighted(self.cpu_core_limit_average, other.cpu_core_limit_average);
        let ram_req = weighted(
            self.ram_byte_request_average,
            other.ram_byte_request_average,
        );
        let ram_use = weighted(self.ram_byte_usage_average, other.ram_byte_usage_average);
        let ram_lim = weighted(self.ram_byte_limit_average, other.ram_byte_limit_average);
        let gpu_req = weighted(self.gpu_request_average, other.gpu_request_average);
        let gpu_use = weighted(self.gpu_usage_average, other.gpu_usage_average);

        self.window = match (self.window, other.window) {
            (Some(a), Some(b)) => Some(a.union(&b)),
            (a, b) => a.or(b),
        };
        self.start = min_opt(self.start, other.start);
        self.end = max_opt(self.end, other.end);
        let m = self.minutes();
        let avg = |total: f64| if m > 0.0 { total / m } else { 0.0 };
        self.cpu_core_request_average = avg(cpu_req);
        self.cpu_core_usage_average = avg(cpu_use);
        self.cpu_core_limit_average = avg(cpu_lim);
        self.ram_byte_request_average = avg(ram_req);
        self.ram_byte_usage_average = avg(ram_use);
        self.ram_byte_limit_average = avg(ram_lim);
        self.gpu_request_average = avg(gpu_req);
        self.gpu_usage_average = avg(gpu_use);

        self.cpu_core_hours += other.cpu_core_hours;
        self.cpu_cost += other.cpu_cost;
        self.cpu_cost_adjustment += other.cpu_cost_adjustment;
        self.cpu_cost_idle += other.cpu_cost_idle;
        self.gpu_hours += other.gpu_hours;
        self.gpu_cost += other.gpu_cost;
        self.gpu_cost_adjustment += other.gpu_cost_adjustment;
        self.gpu_cost_idle += other.gpu_cost_idle;
        self.network_transfer_bytes += other.network_transfer_bytes;
        self.network_receive_bytes += other.network_receive_bytes;
        self.network_cost += other.network_cost;
        self.network_cross_zone_cost += other.network_cross_zone_cost;
        self.network_cross_region_cost += other.network_cross_region_cost;
        self.network_internet_cost += other.network_internet_cost;
        self.network_cost_adjustment += other.network_cost_adjustment;
        self.load_balancer_cost += other.load_balancer_cost;
        self.load_balancer_cost_adjustment += other.load_balancer_cost_adjustment;
        self.pv_cost_adjustment += other.pv_cost_adjustment;
        self.ram_byte_hours += other.ram_byte_hours;
        self.ram_cost += other.ram_cost;
        self.ram_cost_adjustment += other.ram_cost_adjustment;
        self.ram_cost_idle += other.ram_cost_idle;
        self.external_cost += other.external_cost;
        self.shared_cost += other.shared_cost;
        for (k, b) in &other.shared_cost_breakdown {
            self.shared_cost_breakdown
                .entry(k.clone())
                .or_insert_with(|| SharedCostBreakdown {
                    name: b.name.clone(),
                    ..SharedCostBreakdown::default()
                })
                .add(b);
        }
        // Peak usage belongs to one container over one window (`rawAllocationOnly`): a sum of
        // allocations has none.
        self.cpu_core_usage_max = 0.0;
        self.ram_byte_usage_max = 0.0;
        for (k, pv) in &other.pvs {
            let e = self.pvs.entry(k.clone()).or_insert_with(|| PvAllocation {
                provider_id: pv.provider_id.clone(),
                ..PvAllocation::default()
            });
            e.byte_hours += pv.byte_hours;
            e.cost += pv.cost;
        }
        for (k, lb) in &other.lb_allocations {
            let e = self
                .lb_allocations
                .entry(k.clone())
                .or_insert_with(|| LbAllocation {
                    service: lb.service.clone(),
                    private: lb.private,
                    ip: lb.ip.clone(),
                    ..LbAllocation::default()
                });
            e.cost += lb.cost;
            e.hours += lb.hours;
        }
    }
}

fn min_opt(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_opt(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Every allocation of one window at one resolution, as the ETL stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationSet {
    /// The ETL window this set belongs to (a whole hour or day).
    pub window: Window,
    /// `1h` or `1d`.
    pub resolution: Resolution,
    /// The end of the data in this set: `window.end` when the window is complete, earlier while
    /// the window is still being built.
    pub data_end: DateTime<Utc>,
    /// The allocations, unaggregated, including per-node idle allocations.
    pub allocations: Vec<Allocation>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn alloc(h0: u32, h1: u32, req: f64, cost: f64) -> Allocation {
        let s = Utc.with_ymd_and_hms(2026, 11, 24, h0, 0, 0).unwrap();
        let e = Utc.with_ymd_and_hms(2026, 11, 24, h1, 0, 0).unwrap();
        Allocation {
            window: Some(Window::new(s, e)),
            start: Some(s),
            end: Some(e),
            cpu_core_request_average: req,
            cpu_core_usage_average: req / 2.0,
            cpu_core_hours: req * f64::from(h1 - h0),
            cpu_cost: cost,
            ..Allocation::default()
        }
    }

    #[test]
    fn add_sums_costs_and_weights_averages_by_minutes() {
        // 2 cores for 2 h followed by 1 core for 2 h: 1.5 cores on average over 4 h.
        let mut a = alloc(0, 2, 2.0, 1.0);
        a.add(&alloc(2, 4, 1.0, 0.5));
        assert_eq!(a.minutes(), 240.0);
        assert!((a.cpu_core_request_average - 1.5).abs() < 1e-12);
        assert!((a.cpu_core_hours - 6.0).abs() < 1e-12);
        assert!((a.cpu_cores() - 1.5).abs() < 1e-12);
        assert!((a.total_cost() - 1.5).abs() < 1e-12);
        assert!((a.cpu_efficiency() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn concurrent_allocations_add_their_averages() {
        // Two pods side by side over the same 2 h: the aggregate requests 3 cores on average.
        let mut a = alloc(0, 2, 2.0, 1.0);
        a.add(&alloc(0, 2, 1.0, 1.0));
        assert!((a.cpu_core_request_average - 3.0).abs() < 1e-12);
    }

    #[test]
    fn efficiency_without_request() {
        let mut a = alloc(0, 1, 0.0, 1.0);
        a.cpu_core_usage_average = 0.3;
        assert_eq!(a.cpu_efficiency(), 1.0);
        a.cpu_cost = 0.0;
        assert_eq!(a.cpu_efficiency(), 0.0);
        assert_eq!(alloc(0, 1, 0.0, 0.0).total_efficiency(), 0.0);
    }

    #[test]
    fn intersect_keeps_only_what_both_share() {
        let p = |node: &str, app: &str, svc: &[&str]| AllocationProperties {
            cluster: "c".into(),
            namespace: "ns".into(),
            node: node.into(),
            services: svc.iter().map(|s| s.to_string()).collect(),
            labels: [("team", "a"), ("app", app)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..AllocationProperties::default()
        };
        let mut a = p("n1", "web", &["s1", "s2"]);
        a.intersect(&p("n1", "web", &["s1", "s2"]));
        assert_eq!(a, p("n1", "web", &["s1", "s2"]), "equal properties stay");
        a.intersect(&p("n2", "db", &["s2"]));
        assert_eq!(a.cluster, "c");
        assert_eq!(a.namespace, "ns");
        assert_eq!(a.node, "", "differing node is dropped");
        assert_eq!(a.services, vec!["s2".to_string()]);
        assert_eq!(
            a.labels,
            BTreeMap::from([("team".to_string(), "a".to_string())])
        );
        let mut empty = AllocationProperties::default();
        empty.intersect(&p("n1", "web", &["s1"]));
        assert_eq!(
            empty,
            AllocationProperties::default(),
            "nothing is invented"
        );
    }

    #[test]
    fn metadata_maps_are_written_under_opencosts_names_when_present() {
        let one = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        let p = AllocationProperties {
            namespace: "ns".into(),
            annotations: one("owner", "a"),
            namespace_labels: one("team", "t"),
            namespace_annotations: one("cost_center", "c"),
            ..AllocationProperties::default()
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["annotations"]["owner"], "a");
        assert_eq!(v["namespaceLabels"]["team"], "t");
        assert_eq!(v["namespaceAnnotations"]["cost_center"], "c");
        let empty = serde_json::to_value(AllocationProperties::default()).unwrap();
        assert_eq!(empty, serde_json::json!({}), "absent maps are omitted");
    }
}
