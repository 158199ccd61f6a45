//! The allocation engine: filter, aggregate, share and accumulate the rows of loaded sets
//! ([`AllocationColumns`]) into the answer of an `/allocation` query.
//!
//! Each set is reduced on its own (OpenCost spreads idle and shared costs per set, not per
//! step), reading the columns: a row's group is found from its pod id (keys are built once per
//! pod, not per row), its numbers are added without building the row, and the aggregate's
//! properties are intersected only when a member of another pod arrives. Since loaded sets
//! never change, a set's reduction is kept in the set's cache under the query's shape
//! ([`AllocationQuery::shape`]) when it is small: the next query of that shape only adds the
//! reductions up, and a new generation recomputes only the sets it replaced. An answer with
//! about a row per row scanned is not held or cached but built a row at a time as it is
//! written ([`super::rows`]).
//!
//! The arithmetic is the one `Allocation::add` does, in the same order, so the answers are the
//! ones the engine gave on whole allocations byte for byte (`tests/query_reference.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::rows::Rows;
use super::{
    AggregateBy, AllocationQuery, AllocationResult, CANCEL_CHECK_ROWS, Cancelled, Cost, CostMetric,
    ENCODE_WEIGHT, ShareSplit, Sharing, rank_and_page, share,
};
use crate::model::{
    Allocation, AllocationColumns, AllocationProperties, IDLE, Resolution, SharedCostBreakdown,
    Window,
};

/// Loaded allocation sets by resolution and window start.
pub type AllocationSets = BTreeMap<(Resolution, DateTime<Utc>), Arc<AllocationColumns>>;

/// One set reduced by one query shape: (key, aggregate), aggregates in key order then idle
/// ones in key order, as they are added to the step.
type Reduced = Vec<(String, Allocation)>;

/// Reductions with more groups than this are not cached (a per-pod answer is as big as the
/// set; caching it would double the memory of what it answers from).
const CACHE_MAX_GROUPS: usize = 2_000;

/// A step's encoded answer is cached only up to this size (a namespace set is about 50 kB).
const CACHE_MAX_ENCODED: usize = 256 << 10;

/// One step of [`AllocationQuery::run_each_encoded`].
pub enum Step<'a> {
    /// The step's answer, encoded.
    Encoded(&'a [u8]),
    /// The step's answer, to encode.
    Result(AllocationResult),
    /// The step's answer, to encode a row at a time as each is built.
    Rows(&'a Rows<'a>),
}

/// One step of [`AllocationQuery::run_each_rows`].
pub enum Answer<'a> {
    /// The step's answer, whole.
    Whole(AllocationResult),
    /// The step's answer, to read a row at a time as each is built.
    Rows(&'a Rows<'a>),
}

/// An aggregate being built, and the (pod, container) last intersected into its properties:
/// intersecting with the same again changes nothing.
struct Group {
    agg: Allocation,
    last: (u32, u32),
}

impl AllocationQuery {
    /// Runs the query over the loaded allocation sets.
    pub fn run(&self, sets: &AllocationSets, now: DateTime<Utc>) -> Vec<AllocationResult> {
        let mut out = Vec::new();
        let never = CancellationToken::new();
        self.run_each(sets, now, &never, |r| {
            out.push(r);
            Ok::<(), Cancelled>(())
        })
        .expect("an uncancelled query runs to the end");
        out
    }

    /// Runs the query one step at a time, handing each step's set to `emit` as soon as it is
    /// computed (so a caller can encode it and drop it before the next), and stops early when
    /// `cancel` fires or `emit` fails.
    pub fn run_each<E: From<Cancelled>>(
        &self,
        sets: &AllocationSets,
        now: DateTime<Utc>,
        cancel: &CancellationToken,
        mut emit: impl FnMut(AllocationResult) -> Result<(), E>,
    ) -> Result<(), E> {
        let (resolution, steps) = self.plan(now);
        for step in steps {
            if cancel.is_cancelled() {
                return Err(Cancelled.into());
            }
            emit(self.step_result(sets, resolution, step, cancel)?)?;
        }
        Ok(())
    }

    /// [`AllocationQuery::run_each`], with an answer of about a row per row scanned (by pod,
    /// by container, or none) handed on as [`Rows`], each row built only as it is read.
    pub fn run_each_rows<E: From<Cancelled>>(
        &self,
        sets: &AllocationSets,
        now: DateTime<Utc>,
        cancel: &CancellationToken,
        mut emit: impl FnMut(Answer<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let (resolution, steps) = self.plan(now);
        for step in steps {
            if cancel.is_cancelled() {
                return Err(Cancelled.into());
            }
            let rows = self.step_rows(sets, resolution, step, cancel)?;
            match rows {
                Some(rows) => emit(Answer::Rows(&rows))?,
                None => emit(Answer::Whole(
                    self.step_whole(sets, resolution, step, cancel)?,
                ))?,
            }
        }
        Ok(())
    }

    /// [`AllocationQuery::run_each`], with the answers of small steps handed on already
    /// encoded by `encode`. A step that is exactly one whole stored set (an hour of a `24h`
    /// query, a day of a `7d` one) with a small answer is encoded once per set and query shape
    /// and kept in the set's cache: loaded sets never change, so the next such query copies
    /// the bytes instead of adding and encoding again. Other steps are handed on as results,
    /// to be encoded where they go (a big one is streamed, never held encoded); an answer with
    /// about a row per row scanned (by pod, by container, or none) as [`Rows`], each row built
    /// only as it is encoded.
    pub fn run_each_encoded<E: From<Cancelled>>(
        &self,
        sets: &AllocationSets,
        now: DateTime<Utc>,
        cancel: &CancellationToken,
        encode: impl Fn(&AllocationResult) -> Vec<u8>,
        mut emit: impl FnMut(Step<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let (resolution, steps) = self.plan(now);
        for step in steps {
            if cancel.is_cancelled() {
                return Err(Cancelled.into());
            }
            let mut range = sets.range((resolution, step.start)..(resolution, step.end));
            let whole = match (range.next(), range.next()) {
                (Some((_, set)), None) if set.window == step => Some(set),
                _ => None,
            };
            let key = whole.map(|_| {
                format!(
                    "json|{}|{:?}|{}|{:?}|{step:?}",
                    self.shape(),
                    self.cost_metric,
                    self.offset,
                    self.limit
                )
            });
            if let (Some(set), Some(key)) = (whole, &key)
                && let Some(bytes) = set.cache.get::<Vec<u8>>(key)
            {
                emit(Step::Encoded(&bytes))?;
                continue;
            }
            let rows = self.step_rows(sets, resolution, step, cancel)?;
            let result = match rows {
                Some(rows) if whole.is_none() || rows.len() > CACHE_MAX_GROUPS => {
                    emit(Step::Rows(&rows))?;
                    continue;
                }
                Some(rows) => rows.into_result(cancel)?,
                None => self.step_whole(sets, resolution, step, cancel)?,
            };
            let (Some(set), Some(key)) = (whole, key) else {
                emit(Step::Result(result))?;
                continue;
            };
            if result.allocations.len() > CACHE_MAX_GROUPS {
                emit(Step::Result(result))?;
                continue;
            }
            let bytes = Arc::new(encode(&result));
            if bytes.len() <= CACHE_MAX_ENCODED {
                set.cache.insert(key, bytes.clone(), bytes.len() + 256);
            }
            emit(Step::Encoded(&bytes))?;
        }
        Ok(())
    }

    /// One step's answer: the step's sets filtered, aggregated and added up.
    fn step_result(
        &self,
        sets: &AllocationSets,
        resolution: Resolution,
        step: Window,
        cancel: &CancellationToken,
    ) -> Result<AllocationResult, Cancelled> {
        if let Some(rows) = self.step_rows(sets, resolution, step, cancel)? {
            return rows.into_result(cancel);
        }
        self.step_whole(sets, resolution, step, cancel)
    }

    /// [`Self::step_result`] on whole allocations: every aggregate of the step held, then
    /// ranked. What answers with few rows use, and the reference [`Rows`] is tested against.
    pub(super) fn step_whole(
        &self,
        sets: &AllocationSets,
        resolution: Resolution,
        step: Window,
        cancel: &CancellationToken,
    ) -> Result<AllocationResult, Cancelled> {
        let range = sets.range((resolution, step.start)..(resolution, step.end));
        let covered = covered_hours(sets, resolution, step);
        let mut allocations = self.aggregate_sets(range.map(|(_, s)| s.as_ref()), cancel)?;
        let factor = self.cost_metric.factor(covered);
        for a in &mut allocations {
            // Every row of a set reports the window the set serves, as OpenCost's do.
            a.window = Some(step);
            if self.cost_metric != CostMetric::Cumulative {
                a.scale_costs(factor);
            }
        }
        let allocations = rank_and_page(
            allocations,
            |a| (a.total_cost(), a.name.as_str()),
            self.offset,
            self.limit,
        );
        Ok(AllocationResult {
            window: step,
            allocations,
        })
    }

    /// One step's answer as [`Rows`], built as they are read; `None` when the answer is not
    /// about a row per row scanned ([`Self::per_row`]) or its keys clash (see
    /// [`AllocationQuery::rows`]).
    fn step_rows<'a>(
        &'a self,
        sets: &'a AllocationSets,
        resolution: Resolution,
        step: Window,
        cancel: &CancellationToken,
    ) -> Result<Option<Rows<'a>>, Cancelled> {
        if !self.per_row() {
            return Ok(None);
        }
        let range = sets.range((resolution, step.start)..(resolution, step.end));
        let covered = covered_hours(sets, resolution, step);
        self.rows(range.map(|(_, s)| s.as_ref()), step, covered, cancel)
    }

    /// Whether the answer has about one row per row scanned (by pod or container, or not
    /// aggregated): such an answer is built a row at a time as it is written ([`Rows`]).
    fn per_row(&self) -> bool {
        self.aggregate.is_empty()
            || self
                .aggregate
                .iter()
                .any(|a| matches!(a, AggregateBy::Pod | AggregateBy::Container))
    }

    /// The query's estimated work on these sets (see [`Cost`]).
    pub fn cost(&self, sets: &AllocationSets, now: DateTime<Utc>) -> Cost {
        let (resolution, steps) = self.plan(now);
        let rows: u64 = steps
            .iter()
            .flat_map(|w| sets.range((resolution, w.start)..(resolution, w.end)))
            .map(|(_, s)| s.len() as u64)
            .sum();
        let encoded = if self.per_row() {
            self.limit
                .map_or(rows, |l| rows.min(l as u64 * steps.len() as u64))
        } else {
            0
        };
        rows + encoded * ENCODE_WEIGHT + steps.len() as u64
    }

    /// Everything a set's reduction depends on besides the set: the key of its cache entry.
    fn shape(&self) -> String {
        format!(
            "{:?}|{:?}|{}{}{}{}{}|{:?}",
            self.aggregate,
            self.filter,
            self.idle,
            self.share_idle,
            self.split_idle,
            self.idle_by_node,
            self.include_aggregated_metadata,
            self.sharing,
        )
    }

    /// Row `i`'s aggregation key.
    pub(super) fn row_key(&self, set: &AllocationColumns, i: usize) -> String {
        if self.aggregate.is_empty() {
            return set.name(i);
        }
        let p = set.row_props(i);
        self.aggregate
            .iter()
            .map(|g| g.value(&p))
            .collect::<Vec<_>>()
            .join("/")
    }

    fn idle_key(&self, a: &Allocation) -> String {
        match (self.split_idle || self.idle_by_node, self.idle_by_node) {
            (true, true) => format!("{}/{}/{IDLE}", a.properties.cluster, a.properties.node),
            (true, false) => format!("{}/{IDLE}", a.properties.cluster),
            _ => IDLE.to_string(),
        }
    }

    /// The aggregate a first member starts: its properties, less the labels and annotations
    /// unless the query keeps shared metadata (the aggregated label or annotation stays).
    pub(super) fn start_aggregate(&self, mut agg: Allocation, key: &str) -> Allocation {
        if !self.aggregate.is_empty() && !self.include_aggregated_metadata {
            let p = &mut agg.properties;
            let keep = |by: &AggregateBy, label: bool, k: &String| match by {
                AggregateBy::Label(l) => label && l == k,
                AggregateBy::Annotation(n) => !label && n == k,
                _ => false,
            };
            p.labels
                .retain(|k, _| self.aggregate.iter().any(|g| keep(g, true, k)));
            p.annotations
                .retain(|k, _| self.aggregate.iter().any(|g| keep(g, false, k)));
            p.namespace_labels.clear();
            p.namespace_annotations.clear();
        }
        agg.name = key.to_string();
        agg
    }

    fn aggregate_sets<'a>(
        &self,
        sets: impl Iterator<Item = &'a AllocationColumns>,
        cancel: &CancellationToken,
    ) -> Result<Vec<Allocation>, Cancelled> {
        let mut total: BTreeMap<String, Allocation> = BTreeMap::new();
        let shape = self.shape();
        for set in sets {
            let reduced = match set.cache.get::<Reduced>(&shape) {
                Some(r) => r,
                None => {
                    let r = Arc::new(self.reduce(set, cancel)?);
                    if r.len() <= CACHE_MAX_GROUPS {
                        let bytes = r
                            .iter()
                            .map(|(k, _)| 2 * k.len() + std::mem::size_of::<Allocation>() + 256)
                            .sum();
                        set.cache.insert(shape.clone(), r.clone(), bytes);
                    }
                    r
                }
            };
            for (key, a) in reduced.iter() {
                match total.get_mut(key) {
                    Some(t) => t.add(a),
                    None => {
                        total.insert(key.clone(), a.clone());
                    }
                }
            }
        }
        // An aggregate of one member keeps its peak usage (`rawAllocationOnly`); `add` drops
        // it once two are summed.
        Ok(total.into_values().collect())
    }

    /// Reduces one set: its allocations filtered and aggregated, with its idle and shared
    /// costs spread as the query asks.
    fn reduce(
        &self,
        set: &AllocationColumns,
        cancel: &CancellationToken,
    ) -> Result<Reduced, Cancelled> {
        let r = self.reduce_set(set, cancel, None)?;
        Ok(r.groups
            .into_iter()
            .map(|(k, _, a)| (k, a))
            .chain(r.idle)
            .collect())
    }

    /// [`Self::reduce`], keeping apart what [`super::rows`] needs: each aggregate's group
    /// id, the idle aggregates, what was spread onto each aggregate, and (into `members`) each
    /// row that joined an aggregate as (group id, row), in row order.
    pub(super) fn reduce_set(
        &self,
        set: &AllocationColumns,
        cancel: &CancellationToken,
        mut members: Option<&mut Vec<(u32, u32)>>,
    ) -> Result<SetReduction, Cancelled> {
        let sharing = self.sharing.is_active().then_some(&self.sharing);
        // Groups of the answer, and by key; per pod, its group when the key depends on the pod
        // alone (`u32::MAX`: not known yet).
        let mut groups: Vec<Group> = Vec::new();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        let per_pod =
            !self.aggregate.is_empty() && !self.aggregate.contains(&AggregateBy::Container);
        let mut pod_group = vec![u32::MAX; if per_pod { set.pod_count() } else { 0 }];
        let mut idle: BTreeMap<String, Allocation> = BTreeMap::new();
        // Per node: (cpu, ram) cost kept by the filter and in total, to scale idle by.
        let mut kept: HashMap<&str, [f64; 4]> = HashMap::new();
        // Shared allocations by key, and what the shares are split over: every allocation
        // that is neither idle nor shared, before the filter (a filter narrows the answer,
        // not the base its shares are computed on).
        let mut shared: BTreeMap<String, Allocation> = BTreeMap::new();
        let mut pod_shares: Vec<Option<bool>> = vec![
            None;
            if sharing.is_some() {
                set.pod_count()
            } else {
                0
            }
        ];
        let mut base_cost = 0.0;
        let mut base_keys: HashSet<String> = HashSet::new();
        let mut row = Allocation::default();
        let idle_rows = set.idle_rows();
        let mut next_idle = 0;
        for i in 0..set.len() {
            if i % CANCEL_CHECK_ROWS == 0 && cancel.is_cancelled() {
                return Err(Cancelled);
            }
            if idle_rows.get(next_idle) == Some(&(i as u32)) {
                next_idle += 1;
                continue;
            }
            let (pod_id, container_id) = (set.pod_id(i), set.container_id(i));
            let props = set.props(pod_id, container_id);
            if let Some(sh) = sharing {
                let shares = *pod_shares[pod_id as usize].get_or_insert_with(|| sh.shares(&props));
                if shares {
                    let key = self.row_key(set, i);
                    match shared.get_mut(&key) {
                        Some(s) => {
                            set.load_values(i, &mut row);
                            s.add_values(&row);
                            s.properties.intersect(&props);
                        }
                        None => {
                            let s = self.start_aggregate(set.row(i), &key);
                            shared.insert(key, s);
                        }
                    }
                    // A shared allocation's cost reaches the answer through the shares, so
                    // it is left out of the node totals idle is scaled by: a filter keeps
                    // the idle of what it kept of the rest.
                    continue;
                }
                set.load_values(i, &mut row);
                base_cost += row.total_cost();
                if sh.split == ShareSplit::Even {
                    base_keys.insert(self.row_key(set, i));
                }
            }
            let pass = self.filter.as_ref().is_none_or(|f| f.matches(&props));
            if self.filter.is_some() {
                set.load_values(i, &mut row);
                let e = kept.entry(props.node_name()).or_default();
                e[2] += row.cpu_cost;
                e[3] += row.ram_cost;
                if !pass {
                    continue;
                }
                e[0] += row.cpu_cost;
                e[1] += row.ram_cost;
            }
            let known = if per_pod {
                pod_group[pod_id as usize]
            } else {
                u32::MAX
            };
            let g = if known != u32::MAX {
                known as usize
            } else {
                let key = self.row_key(set, i);
                let g = match by_key.get(&key) {
                    Some(&g) => g,
                    None => {
                        let g = groups.len();
                        groups.push(Group {
                            agg: self.start_aggregate(set.row(i), &key),
                            last: (pod_id, container_id),
                        });
                        by_key.insert(key, g);
                        if per_pod {
                            pod_group[pod_id as usize] = g as u32;
                        }
                        if let Some(m) = members.as_deref_mut() {
                            m.push((g as u32, i as u32));
                        }
                        continue;
                    }
                };
                if per_pod {
                    pod_group[pod_id as usize] = g as u32;
                }
                g
            };
            if let Some(m) = members.as_deref_mut() {
                m.push((g as u32, i as u32));
            }
            // `Rows::fold` aggregates a group's rows again this way: keep the two in step.
            let group = &mut groups[g];
            set.load_values(i, &mut row);
            group.agg.add_values(&row);
            if group.last != (pod_id, container_id) {
                group.agg.properties.intersect(&props);
                group.last = (pod_id, container_id);
            }
        }
        let mut out: Vec<(String, u32, Allocation)> = by_key
            .into_iter()
            .map(|(k, g)| (k, g as u32, std::mem::take(&mut groups[g].agg)))
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if self.idle {
            for &i in idle_rows {
                let a = set.row(i as usize);
                if !self
                    .filter
                    .as_ref()
                    .is_none_or(|f| f.matches_idle(&a.properties))
                {
                    continue;
                }
                let mut share = a.clone();
                // With a filter, idle is cut to the share of the node the filter kept.
                if self.filter.is_some() {
                    let [kc, kr, tc, tr] = kept
                        .get(a.properties.node.as_str())
                        .copied()
                        .unwrap_or_default();
                    share.cpu_cost *= if tc > 0.0 { kc / tc } else { 0.0 };
                    share.ram_cost *= if tr > 0.0 { kr / tr } else { 0.0 };
                }
                let key = self.idle_key(&a);
                match idle.get_mut(&key) {
                    Some(i) => i.add(&share),
                    None => {
                        share.name.clone_from(&key);
                        share.properties = AllocationProperties {
                            cluster: a.properties.cluster.clone(),
                            node: if self.idle_by_node {
                                a.properties.node.clone()
                            } else {
                                String::new()
                            },
                            ..AllocationProperties::default()
                        };
                        idle.insert(key, share);
                    }
                }
            }
        }
        // Shared costs are weighted by each allocation's own cost, before idle is spread
        // onto it: the weights then add up to the part of the base the answer holds.
        let shares = sharing.map(|sh| {
            let hours =
                (set.data_end.min(set.window.end) - set.window.start).num_seconds() as f64 / 3600.0;
            Shares::new(shared, sh, hours.max(0.0), base_cost, base_keys.len())
        });
        if let Some(s) = &shares {
            for (_, _, a) in &mut out {
                s.apply(a);
            }
        }
        let idle_spread = self
            .share_idle
            .then(|| IdleSpread::new(out.iter().map(|(_, _, a)| a), idle.values()));
        if let Some(s) = &idle_spread {
            for (_, _, a) in &mut out {
                s.apply(a);
            }
            idle.clear();
        }
        Ok(SetReduction {
            groups: out,
            idle,
            spread: Spread {
                shares,
                idle: idle_spread,
            },
        })
    }
}

/// One set reduced by [`AllocationQuery::reduce_set`].
pub(super) struct SetReduction {
    /// The aggregates in key order: (key, group id, aggregate), shared and idle costs spread.
    pub(super) groups: Vec<(String, u32, Allocation)>,
    /// The idle aggregates by key (none when idle is shared).
    pub(super) idle: BTreeMap<String, Allocation>,
    /// What was spread onto each aggregate.
    pub(super) spread: Spread,
}

/// What a set's reduction spreads onto each of its aggregates: its shared costs, then its idle
/// costs. Applied to an aggregate of the set, it gives what the reduction gave.
pub(super) struct Spread {
    shares: Option<Shares>,
    idle: Option<IdleSpread>,
}

impl Spread {
    /// Spreads onto `a`, an aggregate of the set before spreading.
    pub(super) fn apply(&self, a: &mut Allocation) {
        if let Some(s) = &self.shares {
            s.apply(a);
        }
        if let Some(s) = &self.idle {
            s.apply(a);
        }
    }
}

/// A set's shared costs, as [`Shares::apply`] adds them to each allocation of the answer.
struct Shares {
    /// The shared allocations by key, then the fixed shared cost (`__shared__`).
    items: Vec<(String, Allocation)>,
    split: ShareSplit,
    breakdown: bool,
    base_cost: f64,
    base_count: usize,
}

impl Shares {
    /// Each shared allocation's cost (and the fixed shared cost over `hours`) is spread over
    /// the answer: an allocation's part is its total cost over `base_cost` (`weighted`) or one
    /// over `base_count` (`even`), the base being every allocation the shares are split over,
    /// filtered or not, so that a filtered answer gets the same shares as the whole one.
    fn new(
        shared: BTreeMap<String, Allocation>,
        sharing: &Sharing,
        hours: f64,
        base_cost: f64,
        base_count: usize,
    ) -> Self {
        let fixed = sharing.fixed_cost(hours);
        let mut items: Vec<(String, Allocation)> = shared.into_iter().collect();
        if fixed > 0.0 {
            items.push((
                share::SHARED.to_string(),
                Allocation {
                    external_cost: fixed,
                    ..Allocation::default()
                },
            ));
        }
        Shares {
            items,
            split: sharing.split,
            breakdown: sharing.breakdown,
            base_cost,
            base_count,
        }
    }

    /// Adds to `a` its part of the shared costs.
    fn apply(&self, a: &mut Allocation) {
        if a.is_idle() {
            return;
        }
        let coefficient = match self.split {
            ShareSplit::Weighted if self.base_cost > 0.0 => a.total_cost() / self.base_cost,
            ShareSplit::Even if self.base_count > 0 => 1.0 / self.base_count as f64,
            _ => 0.0,
        };
        let mut received = 0.0;
        for (name, s) in &self.items {
            let part = SharedCostBreakdown::part_of(name, s, coefficient);
            received += part.total_cost;
            if self.breakdown {
                a.shared_cost_breakdown.insert(name.clone(), part);
            }
        }
        a.shared_cost += received;
    }
}

/// A set's idle CPU, GPU and RAM cost, spread over the allocations in proportion to each one's
/// cost of that resource (Kubecost's shareIdle).
struct IdleSpread {
    idle: [f64; 3],
    total: [f64; 3],
}

impl IdleSpread {
    /// The idle costs of `idle` and the totals of `out`, which the idle is spread over.
    fn new<'a>(
        out: impl Iterator<Item = &'a Allocation> + Clone,
        idle: impl Iterator<Item = &'a Allocation>,
    ) -> Self {
        let (mut cpu, mut gpu, mut ram) = (0.0, 0.0, 0.0);
        for i in idle {
            cpu += i.cpu_cost;
            gpu += i.gpu_cost;
            ram += i.ram_cost;
        }
        let total_cpu: f64 = out.clone().map(|a| a.cpu_cost).sum();
        let total_gpu: f64 = out.clone().map(|a| a.gpu_cost).sum();
        let total_ram: f64 = out.map(|a| a.ram_cost).sum();
        IdleSpread {
            idle: [cpu, gpu, ram],
            total: [total_cpu, total_gpu, total_ram],
        }
    }

    /// Adds to `a` its part of the idle costs.
    fn apply(&self, a: &mut Allocation) {
        let part =
            |own: f64, total: f64, idle: f64| if total > 0.0 { idle * own / total } else { 0.0 };
        let [cpu, gpu, ram] = self.idle;
        let [total_cpu, total_gpu, total_ram] = self.total;
        let (c, g, r) = (
            part(a.cpu_cost, total_cpu, cpu),
            part(a.gpu_cost, total_gpu, gpu),
            part(a.ram_cost, total_ram, ram),
        );
        a.cpu_cost += c;
        a.cpu_cost_idle += c;
        a.gpu_cost += g;
        a.gpu_cost_idle += g;
        a.ram_cost += r;
        a.ram_cost_idle += r;
    }
}

/// The hours of data the sets of `step` hold.
pub(super) fn covered_hours(sets: &AllocationSets, resolution: Resolution, step: Window) -> f64 {
    sets.range((resolution, step.start)..(resolution, step.end))
        .map(|(_, s)| {
            (s.data_end.min(s.window.end) - s.window.start)
                .num_seconds()
                .max(0) as f64
        })
        .sum::<f64>()
        / 3600.0
}
