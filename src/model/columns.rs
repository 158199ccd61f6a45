//! The in-memory form of a loaded allocation set: columns instead of one struct per row.
//!
//! A stored `Allocation` costs about 2 KB of RAM as a struct (680 bytes, nine owned strings,
//! label maps), and typical data fills 11 of its 34 numbers. A set here holds, per row, three
//! small ids and the numbers of the columns that are not all zero:
//! - the pod's properties (everything but the container) are interned once per distinct pod,
//!   and shared by every set that names the same pod through a process-wide [`PodInterner`], so
//!   90 daily sets of one pod hold its labels once;
//! - containers and (window, start, end) triples are dictionaries of the set;
//! - a row's name is derived (`cluster/node/namespace/pod/container`, OpenCost's) unless it is
//!   one of the few that differ (per-node idle rows), kept apart;
//! - volumes, load balancers and shared-cost breakdowns, held by few rows, are kept apart too.
//!
//! [`AllocationColumns::row`] gives back exactly the `Allocation` it was built from (every
//! float bit for bit), which the tests hold.

use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};

use super::allocation::{IDLE, LbAllocation, PvAllocation, SharedCostBreakdown};
use super::{Allocation, AllocationProperties, AllocationSet, Resolution, Window};

macro_rules! numbers {
    ($($f:ident),* $(,)?) => {
        /// How many numbers an allocation stores.
        pub const NUMBERS: usize = [$(stringify!($f)),*].len();

        /// The numbers of `a`, in column order.
        fn numbers_of(a: &Allocation) -> [f64; NUMBERS] {
            [$(a.$f),*]
        }

        /// Writes the numbers of column order `v` into `a`.
        fn set_numbers(a: &mut Allocation, v: &[f64; NUMBERS]) {
            let [$($f),*] = *v;
            $(a.$f = $f;)*
        }
    };
}

numbers!(
    cpu_core_request_average,
    cpu_core_usage_average,
    cpu_core_limit_average,
    cpu_core_hours,
    cpu_cost,
    cpu_cost_adjustment,
    cpu_cost_idle,
    gpu_request_average,
    gpu_usage_average,
    gpu_hours,
    gpu_cost,
    gpu_cost_adjustment,
    gpu_cost_idle,
    network_transfer_bytes,
    network_receive_bytes,
    network_cost,
    network_cross_zone_cost,
    network_cross_region_cost,
    network_internet_cost,
    network_cost_adjustment,
    load_balancer_cost,
    load_balancer_cost_adjustment,
    pv_cost_adjustment,
    ram_byte_request_average,
    ram_byte_usage_average,
    ram_byte_limit_average,
    ram_byte_hours,
    ram_cost,
    ram_cost_adjustment,
    ram_cost_idle,
    external_cost,
    shared_cost,
    cpu_core_usage_max,
    ram_byte_usage_max,
);

/// A row's window, start and end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Times {
    window: Option<Window>,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
}

/// What few rows hold: volumes, load balancers, shared-cost breakdowns.
#[derive(Clone, Debug, Default, PartialEq)]
struct Extras {
    pvs: BTreeMap<String, PvAllocation>,
    lb_allocations: BTreeMap<String, LbAllocation>,
    shared_cost_breakdown: BTreeMap<String, SharedCostBreakdown>,
}

/// Interns pods' properties (container cleared) process-wide, so that every set naming a pod
/// shares one copy. Entries no set holds any more are dropped when the table has doubled since
/// the last sweep.
#[derive(Debug, Default)]
pub struct PodInterner {
    inner: Mutex<InternTable>,
}

#[derive(Debug, Default)]
struct InternTable {
    pods: HashSet<Arc<AllocationProperties>>,
    swept_at: usize,
}

impl PodInterner {
    /// The process-wide interner.
    pub fn global() -> &'static PodInterner {
        static GLOBAL: OnceLock<PodInterner> = OnceLock::new();
        GLOBAL.get_or_init(PodInterner::default)
    }

    /// The shared copy of each of `pods`, in order.
    fn intern(&self, pods: Vec<AllocationProperties>) -> Vec<Arc<AllocationProperties>> {
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if t.pods.len() > 1024 && t.pods.len() >= 2 * t.swept_at {
            t.pods.retain(|p| Arc::strong_count(p) > 1);
            t.swept_at = t.pods.len();
        }
        pods.into_iter()
            .map(|p| match t.pods.get(&p) {
                Some(shared) => shared.clone(),
                None => {
                    let p = Arc::new(p);
                    t.pods.insert(p.clone());
                    p
                }
            })
            .collect()
    }

    /// Distinct pods held (for tests and status).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pods
            .len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Hashes and compares properties as if their container were empty: one key per pod.
struct PodKey<'a>(&'a AllocationProperties);

impl PodKey<'_> {
    fn parts(&self) -> impl PartialEq + Hash + '_ {
        let p = self.0;
        (
            (
                &p.cluster,
                &p.node,
                &p.controller,
                &p.controller_kind,
                &p.namespace,
                &p.pod,
            ),
            (&p.services, &p.provider_id, &p.labels, &p.annotations),
            (&p.namespace_labels, &p.namespace_annotations),
        )
    }
}

impl PartialEq for PodKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}
impl Eq for PodKey<'_> {}
impl Hash for PodKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

/// OpenCost's name of an unaggregated allocation.
fn derived_name(p: &AllocationProperties, container: &str) -> String {
    format!(
        "{}/{}/{}/{}/{container}",
        p.cluster, p.node, p.namespace, p.pod
    )
}

/// One loaded allocation set, column by column. Immutable once built.
#[derive(Debug)]
pub struct AllocationColumns {
    /// The set's ETL window.
    pub window: Window,
    /// The set's resolution.
    pub resolution: Resolution,
    /// How far the set's data reaches.
    pub data_end: DateTime<Utc>,
    len: usize,
    pods: Vec<Arc<AllocationProperties>>,
    containers: Vec<Box<str>>,
    times: Vec<Times>,
    row_pod: Vec<u32>,
    row_container: Vec<u32>,
    row_times: Vec<u32>,
    /// Rows whose name is not the derived one, by row.
    names: Vec<(u32, Box<str>)>,
    /// Rows that are idle allocations, ascending.
    idle: Vec<u32>,
    /// Rows with volumes, load balancers or shared-cost breakdowns, by row.
    extras: Vec<(u32, Box<Extras>)>,
    /// The columns that are not all (positive) zero: (number index, values).
    numbers: Vec<(usize, Box<[f64]>)>,
    /// Query results computed on this set, kept while the set lives (see `query`).
    pub cache: SetCache,
}

impl AllocationColumns {
    /// Builds the columns of `set`, interning its pods in `interner`.
    pub fn from_set(set: AllocationSet, interner: &PodInterner) -> Self {
        let len = set.allocations.len();
        let mut pod_ids: HashMap<PodKey<'_>, u32> = HashMap::new();
        let mut pods: Vec<AllocationProperties> = Vec::new();
        let mut container_ids: HashMap<&str, u32> = HashMap::new();
        let mut containers: Vec<Box<str>> = Vec::new();
        let mut time_ids: HashMap<Times, u32> = HashMap::new();
        let mut times = Vec::new();
        let (mut row_pod, mut row_container, mut row_times) = (
            Vec::with_capacity(len),
            Vec::with_capacity(len),
            Vec::with_capacity(len),
        );
        let mut names = Vec::new();
        let mut idle = Vec::new();
        let mut extras = Vec::new();
        let mut columns: Vec<Vec<f64>> = (0..NUMBERS).map(|_| Vec::with_capacity(len)).collect();
        for (i, a) in set.allocations.iter().enumerate() {
            let row = u32::try_from(i).expect("a set holds fewer than 2^32 rows");
            let next = pods.len() as u32;
            let pod = *pod_ids.entry(PodKey(&a.properties)).or_insert_with(|| {
                pods.push(AllocationProperties {
                    container: String::new(),
                    ..a.properties.clone()
                });
                next
            });
            row_pod.push(pod);
            let next = containers.len() as u32;
            let c = *container_ids
                .entry(a.properties.container.as_str())
                .or_insert_with(|| {
                    containers.push(a.properties.container.as_str().into());
                    next
                });
            row_container.push(c);
            let t = Times {
                window: a.window,
                start: a.start,
                end: a.end,
            };
            let next = times.len() as u32;
            row_times.push(*time_ids.entry(t).or_insert_with(|| {
                times.push(t);
                next
            }));
            if a.name != derived_name(&a.properties, &a.properties.container) {
                names.push((row, a.name.as_str().into()));
            }
            if a.is_idle() {
                idle.push(row);
            }
            if !(a.pvs.is_empty()
                && a.lb_allocations.is_empty()
                && a.shared_cost_breakdown.is_empty())
            {
                extras.push((
                    row,
                    Box::new(Extras {
                        pvs: a.pvs.clone(),
                        lb_allocations: a.lb_allocations.clone(),
                        shared_cost_breakdown: a.shared_cost_breakdown.clone(),
                    }),
                ));
            }
            for (col, v) in columns.iter_mut().zip(numbers_of(a)) {
                col.push(v);
            }
        }
        let numbers = columns
            .into_iter()
            .enumerate()
            .filter(|(_, c)| c.iter().any(|v| v.to_bits() != 0))
            .map(|(k, c)| (k, c.into_boxed_slice()))
            .collect();
        drop(pod_ids);
        drop(container_ids);
        AllocationColumns {
            window: set.window,
            resolution: set.resolution,
            data_end: set.data_end,
            len,
            pods: interner.intern(pods),
            containers,
            times,
            row_pod,
            row_container,
            row_times,
            names,
            idle,
            extras,
            numbers,
            cache: Default::default(),
        }
    }

    /// Rows in the set.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set has no rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The set's idle rows, ascending.
    pub fn idle_rows(&self) -> &[u32] {
        &self.idle
    }

    /// Row `i`'s pod id: rows of one pod share it (it indexes [`Self::pod`]).
    pub fn pod_id(&self, i: usize) -> u32 {
        self.row_pod[i]
    }

    /// Row `i`'s container id (it indexes [`Self::container`]).
    pub fn container_id(&self, i: usize) -> u32 {
        self.row_container[i]
    }

    /// How many distinct pods the set holds.
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// How many distinct containers the set holds.
    pub fn container_count(&self) -> usize {
        self.containers.len()
    }

    /// The properties of pod `id`, container cleared.
    pub fn pod(&self, id: u32) -> &AllocationProperties {
        &self.pods[id as usize]
    }

    /// Container `id`.
    pub fn container(&self, id: u32) -> &str {
        &self.containers[id as usize]
    }

    /// Row `i`'s name.
    pub fn name(&self, i: usize) -> String {
        match self.names.binary_search_by_key(&(i as u32), |(r, _)| *r) {
            Ok(k) => self.names[k].1.to_string(),
            Err(_) => derived_name(
                self.pod(self.row_pod[i]),
                self.container(self.row_container[i]),
            ),
        }
    }

    /// Writes row `i`'s values (numbers, window, start, end, volumes, load balancers, shared
    /// costs) into `into`, leaving its name and properties as they are: what adding a row to
    /// an aggregate reads.
    pub fn load_values(&self, i: usize, into: &mut Allocation) {
        let mut v = [0.0; NUMBERS];
        for (k, col) in &self.numbers {
            v[*k] = col[i];
        }
        set_numbers(into, &v);
        let t = self.times[self.row_times[i] as usize];
        into.window = t.window;
        into.start = t.start;
        into.end = t.end;
        match self.extras.binary_search_by_key(&(i as u32), |(r, _)| *r) {
            Ok(k) => {
                let e = &self.extras[k].1;
                into.pvs.clone_from(&e.pvs);
                into.lb_allocations.clone_from(&e.lb_allocations);
                into.shared_cost_breakdown
                    .clone_from(&e.shared_cost_breakdown);
            }
            Err(_) => {
                into.pvs.clear();
                into.lb_allocations.clear();
                into.shared_cost_breakdown.clear();
            }
        }
    }

    /// Row `i` as the allocation it was built from.
    pub fn row(&self, i: usize) -> Allocation {
        let mut a = Allocation {
            name: self.name(i),
            properties: AllocationProperties {
                container: self.container(self.row_container[i]).to_string(),
                ..self.pod(self.row_pod[i]).clone()
            },
            ..Allocation::default()
        };
        self.load_values(i, &mut a);
        a
    }

    /// The set as stored (a copy).
    pub fn to_set(&self) -> AllocationSet {
        AllocationSet {
            window: self.window,
            resolution: self.resolution,
            data_end: self.data_end,
            allocations: (0..self.len).map(|i| self.row(i)).collect(),
        }
    }

    /// Whether row `i` is an idle allocation.
    pub fn is_idle(&self, i: usize) -> bool {
        self.idle.binary_search(&(i as u32)).is_ok()
    }

    /// Approximate bytes held by the columns (not the shared pods).
    pub fn heap_bytes(&self) -> usize {
        self.len * 12
            + self.numbers.len() * self.len * 8
            + self.names.iter().map(|(_, n)| n.len() + 24).sum::<usize>()
            + self.extras.len() * (std::mem::size_of::<Extras>() + 64)
            + self.pods.len() * 8
    }
}

impl PartialEq for AllocationColumns {
    fn eq(&self, other: &Self) -> bool {
        self.to_set() == other.to_set()
    }
}

/// Bytes all [`SetCache`]s may hold together: answers are cached only while the total is under
/// it (a namespace answer of one set is some tens of kilobytes; a per-pod one is not cached).
pub const CACHE_BUDGET: usize = 64 << 20;

static CACHED_BYTES: AtomicUsize = AtomicUsize::new(0);

/// How many answers one set keeps, the least recently used dropped first.
const CACHE_ENTRIES: usize = 8;

/// Answers computed from one immutable set, by the shape of query that computed them (the
/// query engine's business: to this module they are opaque). They live and die with the set,
/// so a new generation drops the answers of the sets it replaced and keeps the others'.
#[derive(Default)]
pub struct SetCache {
    entries: Mutex<Vec<CacheEntry>>,
}

struct CacheEntry {
    key: String,
    value: Arc<dyn Any + Send + Sync>,
    bytes: usize,
}

impl Drop for CacheEntry {
    fn drop(&mut self) {
        CACHED_BYTES.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for SetCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.entries.lock().map_or(0, |e| e.len());
        write!(f, "SetCache({n} entries)")
    }
}

impl SetCache {
    /// The answer cached under `key`, if any (and of type `T`).
    pub fn get<T: Any + Send + Sync>(&self, key: &str) -> Option<Arc<T>> {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let at = e.iter().position(|c| c.key == key)?;
        let entry = e.remove(at);
        let value = entry.value.clone().downcast::<T>().ok();
        e.insert(0, entry);
        value
    }

    /// Keeps `value` under `key` unless all caches together would hold more than
    /// [`CACHE_BUDGET`] bytes; `bytes` is what it holds, estimated by the caller.
    pub fn insert<T: Any + Send + Sync>(&self, key: String, value: Arc<T>, bytes: usize) {
        let before = CACHED_BYTES.fetch_add(bytes, Ordering::Relaxed);
        let entry = CacheEntry { key, value, bytes };
        if before + bytes > CACHE_BUDGET {
            return; // dropping the entry gives its bytes back
        }
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.retain(|c| c.key != entry.key);
        e.insert(0, entry);
        e.truncate(CACHE_ENTRIES);
    }

    /// Bytes all caches hold now.
    pub fn total_bytes() -> usize {
        CACHED_BYTES.load(Ordering::Relaxed)
    }
}

/// Whether a row is idle by its name (the test the engine used on whole allocations).
pub fn name_is_idle(name: &str) -> bool {
    name == IDLE || name.ends_with("/__idle__")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn props(ns: &str, pod: &str, container: &str) -> AllocationProperties {
        AllocationProperties {
            cluster: "c".into(),
            node: "n1".into(),
            namespace: ns.into(),
            pod: pod.into(),
            container: container.into(),
            controller: "web".into(),
            controller_kind: "deployment".into(),
            services: vec!["svc".into()],
            labels: BTreeMap::from([("app".into(), "web".into())]),
            ..AllocationProperties::default()
        }
    }

    fn set() -> AllocationSet {
        let s = Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap();
        let w = Window::new(s, s + chrono::Duration::days(1));
        let row = |p: AllocationProperties, cost: f64| {
            let name = derived_name(&p, &p.container);
            Allocation {
                name,
                properties: p,
                window: Some(w),
                start: Some(s),
                end: Some(w.end),
                cpu_cost: cost,
                cpu_core_hours: cost * 3.0,
                ..Allocation::default()
            }
        };
        let mut with_pv = row(props("a", "p1", "side"), 0.1 + 0.2);
        with_pv.pvs.insert(
            "c/pv-1".into(),
            PvAllocation {
                byte_hours: 1e9,
                cost: 0.5,
                provider_id: "pd".into(),
            },
        );
        with_pv.ram_cost = -0.0;
        let idle = Allocation {
            name: format!("c/n1/{IDLE}"),
            properties: AllocationProperties {
                cluster: "c".into(),
                node: "n1".into(),
                ..AllocationProperties::default()
            },
            window: Some(w),
            start: Some(s),
            end: None,
            cpu_cost: 4.0,
            ..Allocation::default()
        };
        AllocationSet {
            window: w,
            resolution: Resolution::Day,
            data_end: w.end,
            allocations: vec![
                row(props("a", "p1", "app"), 1.0),
                with_pv,
                row(props("b", "p2", "app"), f64::MIN_POSITIVE),
                idle,
            ],
        }
    }

    #[test]
    fn rows_come_back_exactly_as_built() {
        let interner = PodInterner::default();
        let s = set();
        let c = AllocationColumns::from_set(s.clone(), &interner);
        assert_eq!(c.to_set(), s);
        // Bit for bit, including the sign of a zero.
        assert_eq!(c.row(1).ram_cost.to_bits(), (-0.0f64).to_bits());
        assert_eq!(c.pod_count(), 3, "p1's two containers share a pod");
        assert_eq!(c.idle_rows(), &[3]);
        assert!(c.is_idle(3) && !c.is_idle(0));
        // Only the columns with a value are kept: cpu cost, core hours, the -0.0 RAM cost.
        assert_eq!(c.numbers.len(), 3);
        assert_eq!(c.names.len(), 1, "only the idle row's name is not derived");
    }

    #[test]
    fn sets_naming_the_same_pod_share_its_properties() {
        let interner = PodInterner::default();
        let a = AllocationColumns::from_set(set(), &interner);
        let b = AllocationColumns::from_set(set(), &interner);
        assert!(Arc::ptr_eq(&a.pods[0], &b.pods[0]));
        assert_eq!(interner.len(), 3);
        drop((a, b));
        // Swept once the table has grown past what it held: nothing holds these any more.
        let mut t = interner.inner.lock().unwrap();
        t.pods.retain(|p| Arc::strong_count(p) > 1);
        assert!(t.pods.is_empty());
    }
}
