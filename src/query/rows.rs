//! Answers with about one row per row scanned (`aggregate=pod`, `container`, or none), built
//! one row at a time as they are written.
//!
//! Such an answer is as big as the data it reads: 30 days of 10,000 pods unaggregated is about
//! 550,000 rows and 800 MB of JSON. Holding it as whole `Allocation`s (labels and all, about
//! 2 KB each) before writing the first row took gigabytes. Here a step keeps, per output row,
//! which rows of which sets it is made of (8 bytes a row, 4 a group, and while they are
//! gathered 12 bytes a row, 8 a group and the key index): each set is reduced in turn and only
//! its aggregates' members are noted; each group's cost is then added up from its rows alone
//! (numbers, no properties) and the groups ranked (16 bytes a group while sorting); each row is
//! rebuilt from its rows when it is written (the same additions, in the same order as a step
//! of whole allocations makes them, so the same bytes), then dropped. Keys are not kept either:
//! a group's key is its first row's, computed again when needed.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use tokio_util::sync::CancellationToken;

use super::allocations::Spread;
use super::{AllocationQuery, AllocationResult, Cancelled, CostMetric};
use crate::model::{Allocation, AllocationColumns, Window};

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
    /// The rows each group was made of, (set, row), group after group, in set then row order.
    members: Vec<(u32, u32)>,
    /// Where each group's members start in `members` (and, last, where they end).
    starts: Vec<u32>,
    held: Vec<Allocation>,
    order: Vec<Entry>,
}

impl AllocationQuery {
    /// The step `window` of the sets `sets`, covering `covered` hours, as [`Rows`]: each set
    /// reduced in turn and its aggregates' members noted by key, then the groups ranked.
    ///
    /// `None` when an idle aggregate's key is also an aggregate's (a pod named after its
    /// cluster, aggregated with an annotation whose value is `__idle__`): the engine on whole
    /// allocations adds the two into one row, which it answers instead.
    pub(super) fn rows<'a>(
        &'a self,
        sets: impl Iterator<Item = &'a AllocationColumns>,
        window: Window,
        covered: f64,
        cancel: &CancellationToken,
    ) -> Result<Option<Rows<'a>>, Cancelled> {
        let factor =
            (self.cost_metric != CostMetric::Cumulative).then(|| self.cost_metric.factor(covered));
        let hasher = FxBuildHasher;
        // (hash of the key, group); a group's key is its first member's.
        let mut index: HashTable<(u64, u32)> = HashTable::new();
        let mut first: Vec<(u32, u32)> = Vec::new();
        // (group, set, row) of every member, in set then row order.
        let mut flat: Vec<(u32, u32, u32)> = Vec::new();
        let mut held: BTreeMap<String, Allocation> = BTreeMap::new();
        let mut spreads = Vec::new();
        let mut set_list: Vec<&AllocationColumns> = Vec::new();
        let mut local_members = Vec::new();
        for (s, set) in sets.enumerate() {
            set_list.push(set);
            local_members.clear();
            let r = self.reduce_set(set, cancel, Some(&mut local_members))?;
            // Each local group's first member, to key it by.
            let mut local_first = vec![u32::MAX; r.groups.len()];
            for &(local, row) in local_members.iter().rev() {
                local_first[local as usize] = row;
            }
            let mut group_of = vec![u32::MAX; r.groups.len()];
            for (key, local, _) in &r.groups {
                let hash = hasher.hash_one(key.as_str());
                let key_of =
                    |&(fs, fr): &(u32, u32)| self.row_key(set_list[fs as usize], fr as usize);
                let found = index.find(hash, |&(h, g)| {
                    h == hash && key_of(&first[g as usize]) == *key
                });
                group_of[*local as usize] = match found {
                    Some(&(_, g)) => g,
                    None => {
                        let g = first.len() as u32;
                        first.push((s as u32, local_first[*local as usize]));
                        index.insert_unique(hash, (hash, g), |&(h, _)| h);
                        g
                    }
                };
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
        }
        let clash = held.keys().any(|key| {
            let hash = hasher.hash_one(key.as_str());
            index
                .find(hash, |&(h, g)| {
                    let (fs, fr) = first[g as usize];
                    h == hash && self.row_key(set_list[fs as usize], fr as usize) == *key
                })
                .is_some()
        });
        if clash {
            return Ok(None);
        }
        drop(index);
        let groups = first.len();
        drop(first);
        // Members group after group, each group's in the order they were met.
        flat.sort_by_key(|&(g, _, _)| g);
        let mut starts = Vec::with_capacity(groups + 1);
        let mut members = Vec::with_capacity(flat.len());
        let at = |i: usize| u32::try_from(i).expect("a step reads fewer than 2^32 rows");
        for (i, &(g, s, row)) in flat.iter().enumerate() {
            while starts.len() <= g as usize {
                starts.push(at(i));
            }
            members.push((s, row));
        }
        drop(flat);
        while starts.len() <= groups {
            starts.push(at(members.len()));
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
        let mut rows = Rows {
            query: self,
            window,
            factor,
            sets: set_list,
            spreads,
            members,
            starts,
            held,
            order: Vec::new(),
        };
        let mut ranked: Vec<(f64, Entry)> = Vec::with_capacity(groups + rows.held.len());
        for g in 0..groups as u32 {
            if (g as usize).is_multiple_of(CANCEL_CHECK_GROUPS) && cancel.is_cancelled() {
                return Err(Cancelled);
            }
            ranked.push((rows.total_cost(g), Entry::Group(g)));
        }
        ranked.extend(
            rows.held
                .iter()
                .enumerate()
                .map(|(i, a)| (a.total_cost(), Entry::Held(i as u32))),
        );
        rows.rank(&mut ranked);
        rows.order = ranked
            .into_iter()
            .map(|(_, e)| e)
            .skip(self.offset)
            .take(self.limit.unwrap_or(usize::MAX))
            .collect();
        Ok(Some(rows))
    }
}

/// How many groups are costed between two looks at the cancellation token.
const CANCEL_CHECK_GROUPS: usize = 4096;

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

    /// Every row, built (for answers small enough to hold whole).
    pub fn into_result(
        mut self,
        cancel: &CancellationToken,
    ) -> Result<AllocationResult, Cancelled> {
        let mut held: Vec<Option<Allocation>> = std::mem::take(&mut self.held)
            .into_iter()
            .map(Some)
            .collect();
        let mut allocations = Vec::with_capacity(self.len());
        for (n, e) in self.order.iter().enumerate() {
            if n.is_multiple_of(CANCEL_CHECK_GROUPS) && cancel.is_cancelled() {
                return Err(Cancelled);
            }
            allocations.push(match *e {
                Entry::Held(i) => held[i as usize]
                    .take()
                    .expect("an idle aggregate is ranked once"),
                Entry::Group(g) => self.build(g),
            });
        }
        Ok(AllocationResult {
            window: self.window,
            allocations,
        })
    }

    /// Sorts as `rank_and_page` does: most expensive first, then by name. Names are
    /// computed only for the groups whose costs are equal.
    fn rank(&self, ranked: &mut [(f64, Entry)]) {
        ranked.sort_by(|(a, _), (b, _)| b.total_cmp(a));
        for tie in ranked.chunk_by_mut(|(a, _), (b, _)| a.total_cmp(b) == Ordering::Equal) {
            if tie.len() > 1 {
                let mut named: Vec<(String, (f64, Entry))> =
                    tie.iter().map(|&(c, e)| (self.name(e), (c, e))).collect();
                named.sort_by(|(a, _), (b, _)| a.cmp(b));
                for (slot, (_, item)) in tie.iter_mut().zip(named) {
                    *slot = item;
                }
            }
        }
    }

    /// An entry's name: a group's key, which is its first member's.
    fn name(&self, e: Entry) -> String {
        match e {
            Entry::Held(i) => self.held[i as usize].name.clone(),
            Entry::Group(g) => self.key(g),
        }
    }

    fn key(&self, g: u32) -> String {
        let (s, row) = self.group_members(g)[0];
        self.query.row_key(self.sets[s as usize], row as usize)
    }

    fn group_members(&self, g: u32) -> &[(u32, u32)] {
        &self.members[self.starts[g as usize] as usize..self.starts[g as usize + 1] as usize]
    }

    /// Group `g`'s total cost: its row built from its rows' numbers only (properties do not
    /// change a cost), as [`Self::build`] builds it.
    fn total_cost(&self, g: u32) -> f64 {
        let key = self.key(g);
        let mut row = Allocation::default();
        self.fold(g, &mut row, |set, first| {
            let mut agg = Allocation {
                name: key.clone(),
                ..Allocation::default()
            };
            set.load_values(first, &mut agg);
            agg
        })
        .total_cost()
    }

    /// Group `g`'s row: in each set it is part of, its rows aggregated as the set's reduction
    /// aggregates them and the set's spread applied; those added up in set order; then the
    /// step's window and cost metric, as a step of whole allocations gets them.
    fn build(&self, g: u32) -> Allocation {
        let key = self.key(g);
        let mut row = Allocation::default();
        self.fold(g, &mut row, |set, first| {
            self.query.start_aggregate(set.row(first), &key)
        })
    }

    /// [`Self::build`], each set's aggregate started by `start` from its first row. Within a
    /// set this is `AllocationQuery::reduce_set`'s aggregation of the same rows (keep the two
    /// in step: the answers are the same bytes only while they add in the same order).
    fn fold(
        &self,
        g: u32,
        row: &mut Allocation,
        start: impl Fn(&AllocationColumns, usize) -> Allocation,
    ) -> Allocation {
        let mut total: Option<Allocation> = None;
        for run in self.group_members(g).chunk_by(|a, b| a.0 == b.0) {
            let s = run[0].0 as usize;
            let set = self.sets[s];
            let first = run[0].1 as usize;
            let mut agg = start(set, first);
            let mut last = (set.pod_id(first), set.container_id(first));
            for &(_, i) in &run[1..] {
                let i = i as usize;
                set.load_values(i, row);
                agg.add_values(row);
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
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Arc;

    use chrono::{DateTime, Duration, TimeZone, Utc};

    use super::*;
    use crate::model::{AllocationProperties, AllocationSet, PodInterner, Resolution};
    use crate::query::{AllocationSets, Bounds, DEFAULT_MAX_STEPS, Dialect};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 5, 12, 0, 0).unwrap()
    }

    /// Three days of a small cluster built to reach the corners: a pod named after its cluster
    /// whose annotation is `__idle__` (its key can be an idle key), containers of equal cost
    /// (ties ranked by name), a pod whose labels change from day to day (properties
    /// intersected across sets), a pod on two nodes in one day, volumes, shared namespaces, a
    /// partial last day, and idle rows per node.
    fn sets() -> AllocationSets {
        let interner = PodInterner::default();
        let mut out = AllocationSets::new();
        for d in 0..3i64 {
            let start = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap() + Duration::days(d);
            let window = Window::new(start, start + Duration::days(1));
            let data_end = if d == 2 {
                start + Duration::hours(12)
            } else {
                window.end
            };
            let row = |node: &str, ns: &str, pod: &str, container: &str, cost: f64| {
                let mut labels = BTreeMap::from([("app".to_string(), pod.to_string())]);
                labels.insert("day".into(), format!("{}", d % 2));
                let mut annotations = BTreeMap::new();
                if pod == "cluster-one" {
                    annotations.insert("note".to_string(), "__idle__".to_string());
                }
                let mut a = Allocation {
                    name: format!("cluster-one/{node}/{ns}/{pod}/{container}"),
                    properties: AllocationProperties {
                        cluster: "cluster-one".into(),
                        node: node.into(),
                        namespace: ns.into(),
                        pod: pod.into(),
                        container: container.into(),
                        controller: format!("{pod}-ctl"),
                        controller_kind: "deployment".into(),
                        labels,
                        annotations,
                        ..AllocationProperties::default()
                    },
                    window: Some(window),
                    start: Some(start),
                    end: Some(data_end),
                    cpu_core_hours: cost * 10.0,
                    cpu_cost: cost,
                    ram_cost: cost / 2.0,
                    cpu_core_request_average: 0.5,
                    ..Allocation::default()
                };
                if container == "db" {
                    a.pvs.insert(
                        "cluster=cluster-one:name=pv-1".into(),
                        crate::model::PvAllocation {
                            byte_hours: 1e9,
                            cost: 0.25 + d as f64,
                            provider_id: "pv-1".into(),
                        },
                    );
                }
                a
            };
            let idle = |node: &str, cost: f64| Allocation {
                name: format!("cluster-one/{node}/__idle__"),
                properties: AllocationProperties {
                    cluster: "cluster-one".into(),
                    node: node.into(),
                    ..AllocationProperties::default()
                },
                window: Some(window),
                start: Some(start),
                end: Some(data_end),
                cpu_cost: cost,
                ram_cost: cost,
                ..Allocation::default()
            };
            let mut allocations = vec![
                row("node-a", "default", "cluster-one", "main", 1.0),
                row("node-a", "default", "web-1", "main", 2.0),
                row("node-a", "default", "web-1", "sidecar", 0.5),
                row("node-b", "default", "web-2", "main", 2.0),
                row("node-b", "default", "web-2", "sidecar", 0.5),
                row("node-a", "shop", "db-0", "db", 3.0 + d as f64),
                row("node-b", "shop", "db-0", "db", 0.75),
                row("node-b", "kube-system", "dns", "main", 0.5),
                row("node-b", "kube-system", "proxy", "main", 0.0),
                idle("node-a", 1.5),
                idle("node-b", 2.5),
            ];
            if d == 1 {
                allocations.push(row("node-a", "batch", &format!("job-{d}"), "main", 4.0));
            }
            let set = AllocationSet {
                window,
                resolution: Resolution::Day,
                data_end,
                allocations,
            };
            out.insert(
                (Resolution::Day, start),
                Arc::new(AllocationColumns::from_set(set, &interner)),
            );
        }
        out
    }

    fn query(q: &str) -> AllocationQuery {
        let params: HashMap<String, String> = q
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        crate::query::parse_allocation_query(
            &params,
            now(),
            Bounds::from(DEFAULT_MAX_STEPS),
            Dialect::Kubecost,
        )
        .unwrap_or_else(|e| panic!("{q}: {e:?}"))
    }

    /// Every per-row query answers, row for row and bit for bit, what the engine on whole
    /// allocations answers: the rows built one at a time are the rows it holds.
    #[test]
    fn rows_answer_what_whole_allocations_answer() {
        let sets = sets();
        let never = CancellationToken::new();
        let mut compared = 0;
        for q in [
            "window=3d&accumulate=true",
            "window=3d",
            "window=3d&aggregate=pod&accumulate=true",
            "window=3d&aggregate=container&accumulate=true",
            "window=3d&aggregate=namespace,pod&accumulate=true&idle=false",
            "window=3d&aggregate=pod&accumulate=true&shareIdle=true&idleByNode=true",
            "window=3d&accumulate=true&shareNamespaces=kube-system&shareCost=30.42",
            "window=3d&aggregate=pod&accumulate=true&shareNamespaces=kube-system&shareSplit=even&includeSharedCostBreakdown=false",
            "window=3d&aggregate=pod&accumulate=true&costMetric=hourly",
            "window=3d&accumulate=true&filter=namespace:\"default\"&shareIdle=true",
            "window=3d&accumulate=true&offset=2&limit=3&splitIdle=true",
            "window=3d&accumulate=true&offset=40",
            "window=3d&aggregate=pod&accumulate=true&includeAggregatedMetadata=true",
            "window=3d&aggregate=pod&step=2d",
        ] {
            let q = query(q);
            let (resolution, steps) = q.plan(now());
            for step in steps {
                let rows = rows_of(&q, &sets, step, &never).expect("no key clash in these queries");
                let built = rows.into_result(&never).unwrap();
                let whole = q.step_whole(&sets, resolution, step, &never).unwrap();
                assert_eq!(format!("{built:?}"), format!("{whole:?}"), "{q:?} {step:?}");
                compared += built.allocations.len();
            }
        }
        assert!(compared > 100, "only {compared} rows compared");
    }

    /// An aggregate whose key is also an idle aggregate's is added to it, as on whole
    /// allocations, not answered twice.
    #[test]
    fn a_key_shared_with_an_idle_aggregate_is_one_row() {
        let sets = sets();
        let never = CancellationToken::new();
        let q = query("window=3d&aggregate=pod,annotation:note&accumulate=true&splitIdle=true");
        let (resolution, steps) = q.plan(now());
        let step = steps[0];
        assert!(
            rows_of(&q, &sets, step, &never).is_none(),
            "the clash is found"
        );
        let answer = q.run(&sets, now());
        let names: Vec<&str> = answer[0]
            .allocations
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        let clashing = names
            .iter()
            .filter(|n| **n == "cluster-one/__idle__")
            .count();
        assert_eq!(clashing, 1, "{names:?}");
        assert_eq!(
            format!("{answer:?}"),
            format!(
                "{:?}",
                [q.step_whole(&sets, resolution, step, &never).unwrap()]
            )
        );
    }

    /// `q`'s step `step` of the daily sets `sets`, as [`Rows`].
    fn rows_of<'a>(
        q: &'a AllocationQuery,
        sets: &'a AllocationSets,
        step: Window,
        never: &CancellationToken,
    ) -> Option<Rows<'a>> {
        let range = sets.range((Resolution::Day, step.start)..(Resolution::Day, step.end));
        let covered = super::super::allocations::covered_hours(sets, Resolution::Day, step);
        q.rows(range.map(|(_, s)| s.as_ref()), step, covered, never)
            .unwrap()
    }
}
