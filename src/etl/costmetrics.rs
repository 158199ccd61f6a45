//! The cost metrics the Kubecost/OpenCost cost-model exports on `/metrics`, under the same names
//! and labels, so dashboards built for them work: node, volume and load-balancer prices, the
//! cluster's info, and each container's allocation. Only the leader sets them (a follower's are
//! empty), so a Prometheus scraping every replica of an HA group does not count twice. They are
//! rewritten from each build of the current hour; label sets that disappear are dropped.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::source::ClusterWindow;

type F64Gauge = Gauge<f64, AtomicU64>;

/// Labels of the node price metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    instance: String,
    node: String,
    instance_type: String,
    region: String,
    provider_id: String,
    arch: String,
}

/// Labels of `pv_hourly_cost`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PvLabels {
    volumename: String,
    persistentvolume: String,
    provider_id: String,
}

/// Labels of `kubecost_load_balancer_cost`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LbLabels {
    ingress_ip: String,
    namespace: String,
    service_name: String,
}

/// Labels of the container allocation metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ContainerLabels {
    namespace: String,
    pod: String,
    container: String,
    instance: String,
    node: String,
}

/// Labels of `kubecost_cluster_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    id: String,
    provider: String,
    version: String,
}

/// The cost metrics.
#[derive(Clone, Default)]
pub struct CostMetrics {
    node_cpu: Family<NodeLabels, F64Gauge>,
    node_ram: Family<NodeLabels, F64Gauge>,
    node_gpu: Family<NodeLabels, F64Gauge>,
    node_gpu_count: Family<NodeLabels, F64Gauge>,
    node_total: Family<NodeLabels, F64Gauge>,
    node_spot: Family<NodeLabels, F64Gauge>,
    pv: Family<PvLabels, F64Gauge>,
    lb: Family<LbLabels, F64Gauge>,
    cpu_allocation: Family<ContainerLabels, F64Gauge>,
    ram_allocation: Family<ContainerLabels, F64Gauge>,
    gpu_allocation: Family<ContainerLabels, F64Gauge>,
    cluster_info: Family<ClusterLabels, F64Gauge>,
    /// Whether this replica may export (it leads); updates and role changes take this lock, so
    /// an update racing a demotion cannot leave values behind.
    enabled: std::sync::Arc<std::sync::Mutex<bool>>,
}

impl CostMetrics {
    /// Registers every family under its cost-model name.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "node_cpu_hourly_cost",
            "Hourly cost per vCPU on this node",
            self.node_cpu.clone(),
        );
        r.register(
            "node_ram_hourly_cost",
            "Hourly cost per GiB of memory on this node",
            self.node_ram.clone(),
        );
        r.register(
            "node_gpu_hourly_cost",
            "Hourly cost per GPU on this node",
            self.node_gpu.clone(),
        );
        r.register(
            "node_gpu_count",
            "Number of GPUs on this node",
            self.node_gpu_count.clone(),
        );
        r.register(
            "node_total_hourly_cost",
            "Total node cost per hour",
            self.node_total.clone(),
        );
        r.register(
            "kubecost_node_is_spot",
            "Whether the node is a spot (preemptible) instance",
            self.node_spot.clone(),
        );
        r.register(
            "pv_hourly_cost",
            "Hourly cost per GiB of a persistent volume",
            self.pv.clone(),
        );
        r.register(
            "kubecost_load_balancer_cost",
            "Hourly cost of a load balancer",
            self.lb.clone(),
        );
        r.register(
            "container_cpu_allocation",
            "CPU cores allocated to a container: max(request, usage)",
            self.cpu_allocation.clone(),
        );
        r.register(
            "container_memory_allocation_bytes",
            "Memory bytes allocated to a container: max(request, usage)",
            self.ram_allocation.clone(),
        );
        r.register(
            "container_gpu_allocation",
            "GPUs allocated to a container",
            self.gpu_allocation.clone(),
        );
        r.register(
            "kubecost_cluster_info",
            "Cluster information",
            self.cluster_info.clone(),
        );
    }

    fn families(&self) -> [&dyn Clearable; 12] {
        [
            &self.node_cpu,
            &self.node_ram,
            &self.node_gpu,
            &self.node_gpu_count,
            &self.node_total,
            &self.node_spot,
            &self.pv,
            &self.lb,
            &self.cpu_allocation,
            &self.ram_allocation,
            &self.gpu_allocation,
            &self.cluster_info,
        ]
    }

    fn clear(&self) {
        for f in self.families() {
            f.clear_all();
        }
    }

    /// Allows updates (this replica leads).
    pub fn enable(&self) {
        *self.enabled.lock().expect("cost metrics lock") = true;
    }

    /// Stops updates and drops every value (only the leader exports).
    pub fn disable(&self) {
        let mut on = self.enabled.lock().expect("cost metrics lock");
        *on = false;
        self.clear();
    }

    /// Rewrites every value from a build of the current hour, if this replica still leads.
    pub fn update_if_enabled(&self, cw: &ClusterWindow, cluster_id: &str) {
        let on = self.enabled.lock().expect("cost metrics lock");
        if *on {
            self.update(cw, cluster_id);
        }
    }

    /// Rewrites every value from a build of the current hour.
    fn update(&self, cw: &ClusterWindow, cluster_id: &str) {
        self.clear();
        const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
        let label = |m: &BTreeMap<String, String>, keys: &[&str]| {
            keys.iter()
                .find_map(|k| m.get(*k))
                .cloned()
                .unwrap_or_default()
        };
        for n in &cw.nodes {
            let l = NodeLabels {
                instance: n.name.clone(),
                node: n.name.clone(),
                instance_type: n.instance_type.clone(),
                region: label(
                    &n.labels,
                    &[
                        "topology_kubernetes_io_region",
                        "failure_domain_beta_kubernetes_io_region",
                    ],
                ),
                provider_id: n.provider_id.clone(),
                arch: label(
                    &n.labels,
                    &["kubernetes_io_arch", "beta_kubernetes_io_arch"],
                ),
            };
            self.node_cpu.get_or_create(&l).set(n.cpu_price);
            self.node_ram.get_or_create(&l).set(n.ram_price);
            self.node_gpu.get_or_create(&l).set(n.gpu_price);
            self.node_gpu_count.get_or_create(&l).set(n.gpu_count);
            self.node_total.get_or_create(&l).set(
                n.cpu_cores * n.cpu_price
                    + n.ram_bytes / GIB * n.ram_price
                    + n.gpu_count * n.gpu_price,
            );
            self.node_spot
                .get_or_create(&l)
                .set(if n.spot { 1.0 } else { 0.0 });
        }
        for v in &cw.volumes {
            let l = PvLabels {
                volumename: v.name.clone(),
                persistentvolume: v.name.clone(),
                provider_id: v.provider_id.clone(),
            };
            self.pv.get_or_create(&l).set(v.price);
        }
        for lb in &cw.load_balancers {
            let l = LbLabels {
                ingress_ip: lb.ip.clone(),
                namespace: lb.namespace.clone(),
                service_name: lb.service.clone(),
            };
            self.lb.get_or_create(&l).set(lb.price);
        }
        for c in &cw.containers {
            let hours = (c.end - c.start).num_milliseconds() as f64 / 3.6e6;
            if hours <= 0.0 {
                continue;
            }
            let l = ContainerLabels {
                namespace: c.namespace.clone(),
                pod: c.pod.clone(),
                container: c.container.clone(),
                instance: c.node.clone(),
                node: c.node.clone(),
            };
            self.cpu_allocation
                .get_or_create(&l)
                .set(c.cpu_core_hours / hours);
            self.ram_allocation
                .get_or_create(&l)
                .set(c.ram_byte_hours / hours);
            if c.gpu_hours > 0.0 {
                self.gpu_allocation
                    .get_or_create(&l)
                    .set(c.gpu_hours / hours);
            }
        }
        self.cluster_info
            .get_or_create(&ClusterLabels {
                id: cluster_id.to_string(),
                provider: "custom".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1.0);
    }
}

/// A family that can drop all its label sets.
trait Clearable {
    fn clear_all(&self);
}

impl<S: Clone + std::hash::Hash + Eq, M: Default> Clearable for Family<S, M> {
    fn clear_all(&self) {
        self.clear();
    }
}
