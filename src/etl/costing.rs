//! OpenCost's cost math: prices a [`ClusterWindow`] into an allocation set (one allocation per
//! container, per-node idle, unmounted volumes) and an asset set (nodes, disks, load balancers).

use std::collections::BTreeMap;

use crate::model::{
    Allocation, AllocationProperties, AllocationSet, Asset, AssetSet, IDLE, LbAllocation,
    PvAllocation, Resolution, UNMOUNTED, Window,
};

use super::source::ClusterWindow;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Prices one window. `cluster` becomes every allocation's `cluster` property.
pub fn price(
    cw: &ClusterWindow,
    resolution: Resolution,
    cluster: &str,
) -> (AllocationSet, AssetSet) {
    let window = cw.window;
    let nodes: BTreeMap<&str, _> = cw.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let mut allocations: Vec<Allocation> = Vec::with_capacity(cw.containers.len() + cw.nodes.len());
    // (namespace, pod) -> indices of its containers in `allocations`.
    let mut pods: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();

    for c in &cw.containers {
        let node = nodes.get(c.node.as_str());
        let (cpu_price, ram_price, gpu_price, provider_id) = node
            .map_or((0.0, 0.0, 0.0, String::new()), |n| {
                (n.cpu_price, n.ram_price, n.gpu_price, n.provider_id.clone())
            });
        pods.entry((c.namespace.as_str(), c.pod.as_str()))
            .or_default()
            .push(allocations.len());
        allocations.push(Allocation {
            name: format!(
                "{cluster}/{}/{}/{}/{}",
                c.node, c.namespace, c.pod, c.container
            ),
            properties: AllocationProperties {
                cluster: cluster.to_string(),
                node: c.node.clone(),
                container: c.container.clone(),
                controller: c.controller.clone(),
                controller_kind: c.controller_kind.clone(),
                namespace: c.namespace.clone(),
                pod: c.pod.clone(),
                services: c.services.clone(),
                provider_id,
                labels: c.labels.clone(),
                annotations: c.annotations.clone(),
                namespace_labels: c.namespace_labels.clone(),
                namespace_annotations: c.namespace_annotations.clone(),
            },
            window: Some(window),
            start: Some(c.start),
            end: Some(c.end),
            cpu_core_request_average: c.cpu_request_avg,
            cpu_core_usage_average: c.cpu_usage_avg,
            cpu_core_limit_average: c.cpu_limit_avg,
            cpu_core_hours: c.cpu_core_hours,
            cpu_cost: c.cpu_core_hours * cpu_price,
            ram_byte_request_average: c.ram_request_avg,
            ram_byte_usage_average: c.ram_usage_avg,
            ram_byte_limit_average: c.ram_limit_avg,
            ram_byte_hours: c.ram_byte_hours,
            ram_cost: c.ram_byte_hours / GIB * ram_price,
            cpu_core_usage_max: c.cpu_usage_max,
            ram_byte_usage_max: c.ram_usage_max,
            gpu_request_average: c.gpu_request_avg,
            gpu_usage_average: c.gpu_usage_avg,
            gpu_hours: c.gpu_hours,
            gpu_cost: c.gpu_hours * gpu_price,
            ..Allocation::default()
        });
    }

    // Network: a pod's traffic, split evenly over its containers.
    let egress = cw.egress_prices;
    for n in &cw.networks {
        let Some(idx) = pods.get(&(n.namespace.as_str(), n.pod.as_str())) else {
            continue;
        };
        let share = 1.0 / idx.len() as f64;
        let zone = n.zone_egress_bytes / GIB * egress.zone * share;
        let region = n.region_egress_bytes / GIB * egress.region * share;
        let internet = n.internet_egress_bytes / GIB * egress.internet * share;
        for &i in idx {
            let a = &mut allocations[i];
            a.network_transfer_bytes += n.transfer_bytes * share;
            a.network_receive_bytes += n.receive_bytes * share;
            a.network_cross_zone_cost += zone;
            a.network_cross_region_cost += region;
            a.network_internet_cost += internet;
            a.network_cost += zone + region + internet;
        }
    }

    let mut assets = Vec::new();
    // Volumes: a mounted one is split evenly over its pod's containers, for the time both ran.
    for v in &cw.volumes {
        let vol_window = Window::new(v.start, v.end);
        let key = format!("cluster={cluster}:name={}", v.name);
        assets.push(Asset {
            kind: "Disk".into(),
            name: v.name.clone(),
            cluster: cluster.to_string(),
            provider: "custom".into(),
            provider_id: v.provider_id.clone(),
            category: "Storage".into(),
            service: "Kubernetes".into(),
            window: Some(window),
            start: Some(v.start),
            end: Some(v.end),
            bytes: v.bytes,
            byte_hours: v.bytes * vol_window.hours(),
            storage_class: v.storage_class.clone(),
            claim_name: v.claim_name.clone(),
            claim_namespace: v.claim_namespace.clone(),
            cost: v.bytes / GIB
                * (v.unmounted_hours + v.mounts.iter().map(|m| m.hours).sum::<f64>())
                * v.price,
            ..Asset::default()
        });
        let pv_cost = |hours: f64| v.bytes / GIB * hours * v.price;
        let pv_alloc = |hours: f64, n: f64| PvAllocation {
            byte_hours: v.bytes * hours / n,
            cost: pv_cost(hours) / n,
            provider_id: v.provider_id.clone(),
        };
        // A mount whose pod ran no container here is charged as unmounted, not lost.
        let mut unmounted_hours = v.unmounted_hours;
        for m in &v.mounts {
            match pods.get(&(m.namespace.as_str(), m.pod.as_str())) {
                Some(idx) if !idx.is_empty() => {
                    let n = idx.len() as f64;
                    for &i in idx {
                        let e = allocations[i]
                            .pvs
                            .entry(key.clone())
                            .or_insert(PvAllocation {
                                byte_hours: 0.0,
                                cost: 0.0,
                                provider_id: v.provider_id.clone(),
                            });
                        let add = pv_alloc(m.hours, n);
                        e.byte_hours += add.byte_hours;
                        e.cost += add.cost;
                    }
                }
                _ => unmounted_hours += m.hours,
            }
        }
        if unmounted_hours > 1e-9 {
            let mut a = unmounted(cluster, &v.claim_namespace, window, vol_window);
            a.pvs.insert(key, pv_alloc(unmounted_hours, 1.0));
            allocations.push(a);
        }
    }

    // Load balancers: split over the selected pods by running minutes, then evenly over each
    // pod's containers (Kubecost's "distribution by usage hours").
    for lb in &cw.load_balancers {
        let lb_window = Window::new(lb.start, lb.end);
        let cost = lb.price * lb_window.hours();
        let service = format!("{}/{}", lb.namespace, lb.service);
        assets.push(Asset {
            kind: "LoadBalancer".into(),
            name: service.clone(),
            cluster: cluster.to_string(),
            provider: "custom".into(),
            provider_id: lb.ip.clone(),
            category: "Network".into(),
            service: "Kubernetes".into(),
            window: Some(window),
            start: Some(lb.start),
            end: Some(lb.end),
            ip: lb.ip.clone(),
            private: is_private(&lb.ip),
            cost,
            ..Asset::default()
        });
        let selected: Vec<(&Vec<usize>, f64)> = lb
            .pods
            .iter()
            .filter_map(|(ns, pod)| pods.get(&(ns.as_str(), pod.as_str())))
            .filter(|idx| !idx.is_empty())
            .map(|idx| (idx, allocations[idx[0]].minutes()))
            .collect();
        let total_minutes: f64 = selected.iter().map(|(_, m)| m).sum();
        let lb_alloc = |share: f64| LbAllocation {
            service: service.clone(),
            cost: cost * share,
            private: is_private(&lb.ip),
            ip: lb.ip.clone(),
            hours: lb_window.hours() * share,
        };
        if total_minutes > 0.0 {
            for (idx, minutes) in selected {
                let share = minutes / total_minutes / idx.len() as f64;
                for &i in idx {
                    allocations[i].load_balancer_cost += cost * share;
                    allocations[i]
                        .lb_allocations
                        .insert(service.clone(), lb_alloc(share));
                }
            }
        } else if cost > 0.0 {
            let mut a = unmounted(cluster, &lb.namespace, window, lb_window);
            a.load_balancer_cost = cost;
            a.lb_allocations.insert(service.clone(), lb_alloc(1.0));
            allocations.push(a);
        }
    }

    // Idle per node: what the node cost minus what its containers were charged.
    let mut charged: BTreeMap<&str, (f64, f64, f64)> = BTreeMap::new();
    for a in &allocations {
        let e = charged.entry(a.properties.node.as_str()).or_default();
        e.0 += a.cpu_cost;
        e.1 += a.ram_cost;
        e.2 += a.gpu_cost;
    }
    let mut idles = Vec::with_capacity(cw.nodes.len());
    for n in &cw.nodes {
        let node_window = Window::new(n.start, n.end);
        let hours = node_window.hours();
        let cpu_cost = n.cpu_cores * hours * n.cpu_price;
        let ram_cost = n.ram_bytes / GIB * hours * n.ram_price;
        let gpu_cost = n.gpu_count * hours * n.gpu_price;
        let (cpu_charged, ram_charged, gpu_charged) =
            charged.get(n.name.as_str()).copied().unwrap_or_default();
        assets.push(Asset {
            kind: "Node".into(),
            name: n.name.clone(),
            cluster: cluster.to_string(),
            provider: "custom".into(),
            provider_id: n.provider_id.clone(),
            category: "Compute".into(),
            service: "Kubernetes".into(),
            labels: n.labels.clone(),
            window: Some(window),
            start: Some(n.start),
            end: Some(n.end),
            node_type: n.instance_type.clone(),
            preemptible: if n.spot { 1.0 } else { 0.0 },
            cpu_cores: n.cpu_cores,
            ram_bytes: n.ram_bytes,
            cpu_core_hours: n.cpu_cores * hours,
            ram_byte_hours: n.ram_bytes * hours,
            gpu_count: n.gpu_count,
            gpu_hours: n.gpu_count * hours,
            cpu_cost,
            ram_cost,
            gpu_cost,
            cpu_breakdown: n.cpu_breakdown,
            ram_breakdown: n.ram_breakdown,
            ..Asset::default()
        });
        if hours > 0.0 {
            idles.push(Allocation {
                name: format!("{cluster}/{}/{IDLE}", n.name),
                properties: AllocationProperties {
                    cluster: cluster.to_string(),
                    node: n.name.clone(),
                    provider_id: n.provider_id.clone(),
                    ..AllocationProperties::default()
                },
                window: Some(window),
                start: Some(n.start),
                end: Some(n.end),
                cpu_cost: cpu_cost - cpu_charged,
                ram_cost: ram_cost - ram_charged,
                gpu_cost: gpu_cost - gpu_charged,
                ..Allocation::default()
            });
        }
    }
    allocations.extend(idles);

    if let Some(m) = &cw.cluster_management {
        assets.push(Asset {
            kind: "ClusterManagement".into(),
            name: format!("{cluster}/{}", m.provisioner),
            cluster: cluster.to_string(),
            provider: "custom".into(),
            category: "Management".into(),
            service: "Kubernetes".into(),
            window: Some(window),
            start: Some(window.start),
            end: Some(window.start + chrono::Duration::milliseconds((m.hours * 3.6e6) as i64)),
            cost: m.price * m.hours,
            ..Asset::default()
        });
    }

    let resolution_window = window;
    (
        AllocationSet {
            window: resolution_window,
            resolution,
            data_end: cw.data_end,
            allocations,
        },
        AssetSet {
            window: resolution_window,
            resolution,
            data_end: cw.data_end,
            assets,
        },
    )
}

/// The allocation that collects a namespace's volumes and load balancers no pod uses.
fn unmounted(cluster: &str, namespace: &str, window: Window, run: Window) -> Allocation {
    let pod = format!("{namespace}-unmounted-pvcs");
    Allocation {
        name: format!("{cluster}//{namespace}/{pod}/{UNMOUNTED}"),
        properties: AllocationProperties {
            cluster: cluster.to_string(),
            namespace: namespace.to_string(),
            pod,
            container: UNMOUNTED.to_string(),
            ..AllocationProperties::default()
        },
        window: Some(window),
        start: Some(run.start),
        end: Some(run.end),
        ..Allocation::default()
    }
}

fn is_private(ip: &str) -> bool {
    ip.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|a| a.is_private())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etl::demo::DemoCluster;
    use chrono::{TimeZone, Utc};

    fn day() -> Window {
        let s = Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap();
        Window::new(s, s + chrono::Duration::days(1))
    }

    #[test]
    fn node_costs_are_fully_attributed() {
        // Every dollar a node costs lands either on a container or on that node's idle.
        let c = DemoCluster::new(3, 120);
        let cw = c.compute(day(), day().end);
        let (allocs, assets) = price(&cw, Resolution::Day, "cluster-one");
        let node_cost: f64 = assets
            .assets
            .iter()
            .filter(|a| a.kind == "Node")
            .map(|a| a.cpu_cost + a.ram_cost)
            .sum();
        let alloc_cost: f64 = allocs
            .allocations
            .iter()
            .map(|a| a.cpu_cost + a.ram_cost)
            .sum();
        assert!(
            (node_cost - alloc_cost).abs() < 1e-6 * node_cost,
            "{node_cost} vs {alloc_cost}"
        );
        let idle = allocs.allocations.iter().filter(|a| a.is_idle()).count();
        assert_eq!(idle, c.nodes.len());
    }

    #[test]
    fn volumes_and_load_balancers_are_fully_attributed() {
        let c = DemoCluster::new(3, 120);
        let cw = c.compute(day(), day().end);
        let (allocs, assets) = price(&cw, Resolution::Day, "cluster-one");
        for kind in ["Disk", "LoadBalancer"] {
            let asset: f64 = assets
                .assets
                .iter()
                .filter(|a| a.kind == kind)
                .map(|a| a.cost)
                .sum();
            let alloc: f64 = allocs
                .allocations
                .iter()
                .map(|a| {
                    if kind == "Disk" {
                        a.pv_cost()
                    } else {
                        a.load_balancer_cost
                    }
                })
                .sum();
            assert!(asset > 0.0);
            assert!((asset - alloc).abs() < 1e-9, "{kind}: {asset} vs {alloc}");
        }
        assert!(
            allocs
                .allocations
                .iter()
                .any(|a| a.is_unmounted() && a.pv_cost() > 0.0)
        );
    }
}
