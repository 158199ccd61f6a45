//! Answers with about one row per row scanned (`aggregate=pod`, `container`, or none), built
//! one row at a time as they are written.
//!
//! Such an answer is as big as the data it reads: 30 days of 10,000 pods unaggregated is about
//! 550,000 rows and 800 MB of JSON. Holding it as whole `Allocation`s (labels and all, about
//! 2 KB each) before writing the first row took gigabytes. Here a step keeps, per output row,
//! only its key and the costs its rank is sorted by (exactly the sums `Allocation::add` makes),
//! and which rows of which sets it was made of; once ranked, each row is rebuilt from those
//! rows when it is written (the same additions, in the same order, so the same bytes), then
//! dropped.

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use tokio_util::sync::CancellationToken;

use super::allocations::Spread;
use super::{AllocationQuery, AllocationResult, Cancelled, CostMetric};
use crate::model::{Allocation, AllocationColumns, Window};

/// The costs of an aggregate that its total cost is made of, summed as `Allocation::add` sums
/// them, so that [`Costs::total`] is bit for bit the total cost of the whole aggregate.
#[derive(Debug, Default)]
struct Costs {
    cpu: f64,
    cpu_adjustment: f64,
    gpu: f64,
    gpu_adjustment: f64,
    ram: f64,
    ram_adjustment: f64,
    /// Each volume's cost, by key (`pvs`).
    pvs: BTreeMap<String, f64>,
    pv_adjustment: f64,
    network: f64,
    network_adjustment: f64,
    load_balancer: f64,
    load_balancer_adjustment: f64,
    shared: f64,
    external: f64,
}

impl Costs {
    /// The costs of `a`: what an aggregate starts as when `a` is its first part.
    fn of(a: &Allocation) -> Self {
        Costs {
            cpu: a.cpu_cost,
            cpu_adjustment: a.cpu_cost_adjustment,
            gpu: a.gpu_cost,
            gpu_adjustment: a.gpu_cost_adjustment,
            ram: a.ram_cost,
            ram_adjustment: a.ram_cost_adjustment,
            pvs: a.pvs.iter().map(|(k, pv)| (k.clone(), pv.cost)).collect(),
            pv_adjustment: a.pv_cost_adjustment,
            network: a.network_cost,
            network_adjustment: a.network_cost_adjustment,
            load_balancer: a.load_balancer_cost,
            load_balancer_adjustment: a.load_balancer_cost_adjustment,
            shared: a.shared_cost,
            external: a.external_cost,
        }
    }

    /// Adds the costs of `a`, as `Allocation::add_values` does.
    fn add(&mut self, a: &Allocation) {
        self.cpu += a.cpu_cost;
        self.cpu_adjustment += a.cpu_cost_adjustment;
        self.gpu += a.gpu_cost;
        self.gpu_adjustment += a.gpu_cost_adjustment;
        self.network += a.network_cost;
        self.network_adjustment += a.network_cost_adjustment;
        self.load_balancer += a.load_balancer_cost;
        self.load_balancer_adjustment += a.load_balancer_cost_adjustment;
        self.pv_adjustment += a.pv_cost_adjustment;
        self.ram += a.ram_cost;
        self.ram_adjustment += a.ram_cost_adjustment;
        self.external += a.external_cost;
        self.shared += a.shared_cost;
        for (k, pv) in &a.pvs {
            *self.pvs.entry(k.clone()).or_insert(0.0) += pv.cost;
        }
    }

    /// The total cost, each cost first multiplied by `factor` as `Allocation::scale_costs`
    /// does: `Allocation::total_cost`'s sum, in its order.
    fn total(&self, factor: Option<f64>) -> f64 {
        let f = |v: f64| factor.map_or(v, |f| v * f);
        let pv: f64 = self.pvs.values().map(|&c| f(c)).sum();
        (f(self.cpu) + f(self.cpu_adjustment))
            + (f(self.gpu) + f(self.gpu_adjustment))
            + (f(self.ram) + f(self.ram_adjustment))
            + (pv + f(self.pv_adjustment))
            + (f(self.network) + f(self.network_adjustment))
            + (f(self.load_balancer) + f(self.load_balancer_adjustment))
            + f(self.shared)
            + f(self.external)
    }
}

/// One row of the answer, in rank order.
#[derive(Clone, Copy, Debug)]
enum Entry {
    /// An aggregate of rows, rebuilt from them when written.
    Group(u32),
    /// An idle aggregate (a few per set), held whole.
    Held(u32),
}

/// One step's answer, ranked and paged, whose rows are built as they are read.
pub struct Rows<'a> {
    query: &'a AllocationQuery,
    window: Window,
    /// What costs are multiplied by (`costMetric`); `None`: they are not.
    factor: Option<f64>,
    sets: Vec<&'a AllocationColumns>,
    /// What each set's reduction spread onto its aggregates.
    spreads: Vec<Spread>,
    keys: Vec<Box<str>>,
    /// The rows each group was made of, (set, row), group after group, in set then row order.
    members: Vec<(u32, u32)>,
    /// Where each group's members start in `members` (and, last, where they end).
    starts: Vec<u32>,
    held: Vec<Allocation>,
    order: Vec<Entry>,
}

impl AllocationQuery {
    /// The step `window` of the sets `sets`, covering `covered` hours, as [`Rows`]: each set
    /// reduced in turn, its aggregates' costs added up by key, and its members noted.
    pub(super) fn rows<'a>(
        &'a self,
        sets: impl Iterator<Item = &'a AllocationColumns>,
        window: Window,
        covered: f64,
        cancel: &CancellationToken,
    ) -> Result<Rows<'a>, Cancelled> {
        let factor =
            (self.cost_metric != CostMetric::Cumulative).then(|| self.cost_metric.factor(covered));
        let hasher = FxBuildHasher;
        let mut index: HashTable<u32> = HashTable::new();
        let mut keys: Vec<Box<str>> = Vec::new();
        let mut costs: Vec<Costs> = Vec::new();
        // (group, set, row) of every member, in set then row order.
        let mut flat: Vec<(u32, u32, u32)> = Vec::new();
        let mut held: BTreeMap<String, Allocation> = BTreeMap::new();
        let mut spreads = Vec::new();
        let mut set_list = Vec::new();
        let mut local_members = Vec::new();
        for (s, set) in sets.enumerate() {
            local_members.clear();
            let r = self.reduce_set(set, cancel, Some(&mut local_members))?;
            let mut group_of = vec![u32::MAX; r.groups.len()];
            for (key, local, a) in &r.groups {
                let hash = hasher.hash_one(key.as_str());
                let found = index.find(hash, |&g| *keys[g as usize] == **key);
                let g = match found {
                    Some(&g) => {
                        costs[g as usize].add(a);
                        g
                    }
                    None => {
                        let g = keys.len() as u32;
                        index.insert_unique(hash, g, |&g| hasher.hash_one(&*keys[g as usize]));
                        keys.push(key.as_str().into());
                        costs.push(Costs::of(a));
                        g
                    }
                };
                group_of[*local as usize] = g;
            }
            flat.extend(
                local_members
                    .iter()
                    .map(|&(local, row)| (group_of[local as usize], s as u32, row)),
            );
            for (key, a) in r.idle {
                match held.get_mut(&key) {
                    Some(t) => t.add(&a),
                    None => {
                        held.insert(key, a);
                    }
                }
            }
            spreads.push(r.spread);
            set_list.push(set);
        }
        drop(index);
        // Members group after group, each group's in the order they were met.
        flat.sort_by_key(|&(g, _, _)| g);
        let mut starts = Vec::with_capacity(keys.len() + 1);
        let mut members = Vec::with_capacity(flat.len());
        for (i, &(g, s, row)) in flat.iter().enumerate() {
            while starts.len() <= g as usize {
                starts.push(i as u32);
            }
            members.push((s, row));
        }
        drop(flat);
        while starts.len() <= keys.len() {
            starts.push(members.len() as u32);
        }
        let held: Vec<Allocation> = held
            .into_values()
            .map(|mut a| {
                a.window = Some(window);
                if let Some(f) = factor {
                    a.scale_costs(f);
                }
                a
            })
            .collect();
        // Rank as `rank_and_page` does: most expensive first, then by name.
        let mut ranked: Vec<(f64, Entry)> = (0..keys.len())
            .map(|g| (costs[g].total(factor), Entry::Group(g as u32)))
            .chain(
                held.iter()
                    .enumerate()
                    .map(|(i, a)| (a.total_cost(), Entry::Held(i as u32))),
            )
            .collect();
        drop(costs);
        let name = |e: &Entry| match *e {
            Entry::Group(g) => &*keys[g as usize],
            Entry::Held(i) => held[i as usize].name.as_str(),
        };
        ranked.sort_by(|(ca, a), (cb, b)| cb.total_cmp(ca).then_with(|| name(a).cmp(name(b))));
        let order = ranked
            .into_iter()
            .map(|(_, e)| e)
            .skip(self.offset)
            .take(self.limit.unwrap_or(usize::MAX))
            .collect();
        Ok(Rows {
            query: self,
            window,
            factor,
            sets: set_list,
            spreads,
            keys,
            members,
            starts,
            held,
            order,
        })
    }
}

impl Rows<'_> {
    /// How many rows the answer has.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the answer has no rows.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The step's window.
    pub fn window(&self) -> Window {
        self.window
    }

    /// Hands each row to `f`, in rank order, built just before and dropped just after.
    pub fn try_for_each<E>(
        &self,
        mut f: impl FnMut(&Allocation) -> Result<(), E>,
    ) -> Result<(), E> {
        for e in &self.order {
            match *e {
                Entry::Held(i) => f(&self.held[i as usize])?,
                Entry::Group(g) => f(&self.build(g))?,
            }
        }
        Ok(())
    }

    /// Every row, built.
    pub fn into_result(self) -> AllocationResult {
        let mut allocations = Vec::with_capacity(self.len());
        self.try_for_each(|a| {
            allocations.push(a.clone());
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap_or_else(|e| match e {});
        AllocationResult {
            window: self.window,
            allocations,
        }
    }

    /// Group `g`'s row: in each set it is part of, its rows aggregated as the set's reduction
    /// aggregates them and the set's spread applied; those added up in set order; then the
    /// step's window and cost metric, as a step of whole allocations gets them.
    fn build(&self, g: u32) -> Allocation {
        let key = &*self.keys[g as usize];
        let members =
            &self.members[self.starts[g as usize] as usize..self.starts[g as usize + 1] as usize];
        let mut total: Option<Allocation> = None;
        let mut row = Allocation::default();
        for run in members.chunk_by(|a, b| a.0 == b.0) {
            let s = run[0].0 as usize;
            let set = self.sets[s];
            let first = run[0].1 as usize;
            let mut agg = self.query.start_aggregate(set.row(first), key);
            let mut last = (set.pod_id(first), set.container_id(first));
            for &(_, i) in &run[1..] {
                let i = i as usize;
                set.load_values(i, &mut row);
                agg.add_values(&row);
                let here = (set.pod_id(i), set.container_id(i));
                if here != last {
                    agg.properties.intersect(&set.props(here.0, here.1));
                    last = here;
                }
            }
            self.spreads[s].apply(&mut agg);
            match &mut total {
                Some(t) => t.add(&agg),
                None => total = Some(agg),
            }
        }
        let mut a = total.expect("a group has at least one member");
        a.window = Some(self.window);
        if let Some(f) = self.factor {
            a.scale_costs(f);
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PvAllocation;

    /// Costs added as aggregates are, then scaled, total what the whole aggregate totals, bit
    /// for bit, with volumes met in any order and zeros of either sign.
    #[test]
    fn costs_total_what_the_whole_allocation_totals() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            match seed % 7 {
                0 => 0.0,
                1 => -0.0,
                _ => (seed >> 11) as f64 / (1u64 << 40) as f64,
            }
        };
        for case in 0..200 {
            let parts: Vec<Allocation> = (0..1 + case % 5)
                .map(|k| {
                    let mut a = Allocation {
                        cpu_cost: next(),
                        cpu_cost_adjustment: next(),
                        gpu_cost: next(),
                        gpu_cost_adjustment: next(),
                        ram_cost: next(),
                        ram_cost_adjustment: next(),
                        pv_cost_adjustment: next(),
                        network_cost: next(),
                        network_cost_adjustment: next(),
                        load_balancer_cost: next(),
                        load_balancer_cost_adjustment: next(),
                        shared_cost: next(),
                        external_cost: next(),
                        ..Allocation::default()
                    };
                    for v in 0..(case + k) % 3 {
                        a.pvs.insert(
                            format!("cluster=c:name=pv{}", (v + k) % 4),
                            PvAllocation {
                                cost: next(),
                                ..PvAllocation::default()
                            },
                        );
                    }
                    a
                })
                .collect();
            let mut whole = parts[0].clone();
            let mut costs = Costs::of(&parts[0]);
            for p in &parts[1..] {
                whole.add(p);
                costs.add(p);
            }
            let factor = (case % 2 == 0).then_some(0.5 + case as f64 / 7.0);
            if let Some(f) = factor {
                whole.scale_costs(f);
            }
            assert_eq!(
                costs.total(factor).to_bits(),
                whole.total_cost().to_bits(),
                "case {case}"
            );
        }
    }
}
