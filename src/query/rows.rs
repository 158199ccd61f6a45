//! Answers with about one row per row scanned (`aggregate=pod`, `container`, or none), built
//! one row at a time as they are written.
//!
//! Such an answer is as big as the data it reads: 30 days of 10,000 pods unaggregated is about
//! 550,000 rows and 800 MB of JSON. Holding it as whole `Allocation`s (labels and all, about
//! 2 KB each) before writing the first row took gigabytes. Here a step keeps, per output row,
//! which rows of which sets it is made of (8 bytes a row, 4 a group) and its total cost (8
//! bytes): each set is reduced in turn and only its aggregates' members are noted; each
//! group's cost is then added up from its rows alone (numbers, no properties), the groups
//! ranked, and each row rebuilt from its rows when it is written (the same additions, in the
//! same order as a step of whole allocations makes them, so the same bytes), then dropped.
//! Keys are not kept either: a group's key is its first row's, computed again when needed.

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
        drop(index);
        let groups = first.len();
        drop(first);
        // Members group after group, each group's in the order they were met.
        flat.sort_by_key(|&(g, _, _)| g);
        let mut starts = Vec::with_capacity(groups + 1);
        let mut members = Vec::with_capacity(flat.len());
        for (i, &(g, s, row)) in flat.iter().enumerate() {
            while starts.len() <= g as usize {
                starts.push(i as u32);
            }
            members.push((s, row));
        }
        drop(flat);
        while starts.len() <= groups {
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
        Ok(rows)
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

    /// [`Self::build`], each set's aggregate started by `start` from its first row.
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
