//! The in-memory form of a loaded allocation set: columns instead of one struct per row.
//!
//! A stored `Allocation` costs about 2 KB of RAM as a struct (680 bytes, nine owned strings,
//! label maps), and typical data fills 11 of its 34 numbers. A set here holds, per row, three
//! small ids and the numbers of the columns that are not all zero:
//! - the set's strings are stored once each, end to end in one buffer, and named by id;
//! - a pod's properties (everything but the container) are one entry of the set's pod table:
//!   seven string ids, and its label and annotation maps and service list, which a
//!   process-wide [`PodInterner`] shares between every pod and set that has the same ones (a
//!   workload's pods, every day);
//! - (window, start, end) triples are a dictionary of the set;
//! - a column of numbers most rows leave at zero keeps only the rows that are not;
//! - a row's name is derived (`cluster/node/namespace/pod/container`, OpenCost's) unless it is
//!   one of the few that differ (per-node idle rows), kept apart;
//! - volumes, load balancers and shared-cost breakdowns, held by few rows, are kept apart too.
//!
//! [`AllocationColumns::row`] gives back exactly the `Allocation` it was built from (every
//! float bit for bit), which the tests hold.

use std::any::Any;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashMap};

use super::allocation::{IDLE, LbAllocation, PvAllocation, SharedCostBreakdown};
use super::{Allocation, AllocationProperties, AllocationSet, Props, Resolution, Window};

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

/// One volume's share in a row (`pvs`), its strings as ids of the set's strings.
#[derive(Clone, Copy, Debug)]
struct PvEntry {
    row: u32,
    key: u32,
    provider_id: u32,
    byte_hours: f64,
    cost: f64,
}

/// One load balancer's share in a row (`lbAllocations`).
#[derive(Clone, Copy, Debug)]
struct LbEntry {
    row: u32,
    key: u32,
    service: u32,
    ip: u32,
    private: bool,
    cost: f64,
    hours: f64,
}

/// A pod's metadata: its service list and label and annotation maps, shared by every pod (of
/// any set) that has the same.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
struct PodMeta {
    services: Vec<String>,
    labels: Map,
    annotations: Map,
    namespace_labels: Map,
    namespace_annotations: Map,
}

type Map = BTreeMap<String, String>;

/// Interns the label and annotation maps and the service lists of pods process-wide: a
/// workload's pods share one copy across every set. Entries no set holds any more are dropped
/// when the table has doubled since the last sweep.
#[derive(Debug, Default)]
pub struct PodInterner {
    inner: Mutex<InternTable>,
}

#[derive(Default)]
struct InternTable {
    metas: HashTable<Arc<PodMeta>>,
    swept_at: usize,
}

impl std::fmt::Debug for InternTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternTable")
            .field("metas", &self.metas.len())
            .finish()
    }
}

impl InternTable {
    fn sweep(&mut self) {
        let held = self.metas.len();
        if held > 1024 && held >= 2 * self.swept_at {
            self.metas.retain(|m| Arc::strong_count(m) > 1);
            self.swept_at = self.metas.len();
        }
    }

    fn meta(&mut self, hash: u64, src: &impl MetaSource) -> Arc<PodMeta> {
        if let Some(shared) = self.metas.find(hash, |m| same_meta(src, m)) {
            return shared.clone();
        }
        let m = Arc::new(PodMeta::from_source(src));
        self.metas
            .insert_unique(hash, m.clone(), |m| meta_hash(&**m));
        m
    }
}

/// A pod's service list and label and annotation maps as a reader of rows sees them, borrowed:
/// a stored allocation's properties, or the entries of a Parquet row. Maps are given in key
/// order without repeats, as a `BTreeMap` holds them.
pub trait MetaSource {
    /// The pod's services, in order.
    fn services(&self) -> impl Iterator<Item = &str>;
    /// Map `which` (0 labels, 1 annotations, 2 namespace labels, 3 namespace annotations), in
    /// key order.
    fn map(&self, which: usize) -> impl Iterator<Item = (&str, &str)>;
}

fn map_entries(m: &Map) -> impl Iterator<Item = (&str, &str)> {
    m.iter().map(|(k, v)| (k.as_str(), v.as_str()))
}

/// [`MetaSource`] for a type with the four maps and the service list as fields.
macro_rules! meta_source_of_fields {
    ($t:ty) => {
        impl MetaSource for $t {
            fn services(&self) -> impl Iterator<Item = &str> {
                self.services.iter().map(String::as_str)
            }
            fn map(&self, which: usize) -> impl Iterator<Item = (&str, &str)> {
                map_entries(
                    [
                        &self.labels,
                        &self.annotations,
                        &self.namespace_labels,
                        &self.namespace_annotations,
                    ][which],
                )
            }
        }
    };
}

meta_source_of_fields!(PodMeta);
meta_source_of_fields!(AllocationProperties);

/// The hash of a pod's metadata, the same whatever its source.
fn meta_hash(src: &impl MetaSource) -> u64 {
    let mut h = FxBuildHasher.build_hasher();
    let mut n = 0usize;
    for s in src.services() {
        s.hash(&mut h);
        n += 1;
    }
    h.write_usize(n);
    for which in 0..4 {
        let mut n = 0usize;
        for (k, v) in src.map(which) {
            k.hash(&mut h);
            v.hash(&mut h);
            n += 1;
        }
        h.write_usize(n);
    }
    h.finish()
}

fn same_meta(src: &impl MetaSource, m: &PodMeta) -> bool {
    src.services().eq(m.services()) && (0..4).all(|which| src.map(which).eq(m.map(which)))
}

impl PodMeta {
    fn from_source(src: &impl MetaSource) -> Self {
        let map = |which| {
            src.map(which)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        PodMeta {
            services: src.services().map(str::to_string).collect(),
            labels: map(0),
            annotations: map(1),
            namespace_labels: map(2),
            namespace_annotations: map(3),
        }
    }
}

impl PodInterner {
    /// The process-wide interner.
    pub fn global() -> &'static PodInterner {
        static GLOBAL: OnceLock<PodInterner> = OnceLock::new();
        GLOBAL.get_or_init(PodInterner::default)
    }

    /// Distinct maps and lists held (for tests and benches).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .metas
            .len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A set's strings, each stored once, end to end in one buffer (id 0 is the empty string).
#[derive(Debug)]
struct Strings {
    text: String,
    ends: Vec<u32>,
}

impl Strings {
    fn get(&self, id: u32) -> &str {
        let id = id as usize;
        let start = if id == 0 {
            0
        } else {
            self.ends[id - 1] as usize
        };
        &self.text[start..self.ends[id] as usize]
    }
}

/// Builds a [`Strings`].
struct StringsBuilder {
    ids: HashTable<u32>,
    text: String,
    ends: Vec<u32>,
}

impl StringsBuilder {
    fn new() -> Self {
        let mut b = StringsBuilder {
            ids: HashTable::new(),
            text: String::new(),
            ends: Vec::new(),
        };
        b.id("");
        b
    }

    fn get<'t>(text: &'t str, ends: &[u32], id: u32) -> &'t str {
        let id = id as usize;
        let start = if id == 0 { 0 } else { ends[id - 1] as usize };
        &text[start..ends[id] as usize]
    }

    /// The string `id` names.
    fn get_id(&self, id: u32) -> &str {
        Self::get(&self.text, &self.ends, id)
    }

    fn id(&mut self, s: &str) -> u32 {
        let hash = FxBuildHasher.hash_one(s);
        let (text, ends) = (&self.text, &self.ends);
        if let Some(&id) = self.ids.find(hash, |&id| Self::get(text, ends, id) == s) {
            return id;
        }
        self.text.push_str(s);
        self.ends
            .push(u32::try_from(self.text.len()).expect("a set's distinct strings fit in 4 GiB"));
        let id = (self.ends.len() - 1) as u32;
        let (text, ends) = (&self.text, &self.ends);
        self.ids.insert_unique(hash, id, |&id| {
            FxBuildHasher.hash_one(Self::get(text, ends, id))
        });
        id
    }

    fn build(self) -> Strings {
        let mut text = self.text;
        text.shrink_to_fit();
        let mut ends = self.ends;
        ends.shrink_to_fit();
        Strings { text, ends }
    }
}

/// The set's pods, one entry per distinct pod (everything but the container), column by
/// column: string ids into the set's [`Strings`], shared maps and lists.
#[derive(Debug, Default)]
struct Pods {
    /// cluster, node, controller, controller kind, namespace, pod, provider id.
    strings: Vec<[u32; 7]>,
    meta: Vec<Arc<PodMeta>>,
}

/// OpenCost's name of an unaggregated allocation.
fn derived_name(p: &impl Props) -> String {
    format!(
        "{}/{}/{}/{}/{}",
        p.cluster(),
        p.node(),
        p.namespace(),
        p.pod(),
        p.container()
    )
}

/// One column of numbers: every row's value, or (for columns most rows leave at zero) the
/// rows that are not zero and their values.
#[derive(Debug)]
enum Column {
    Dense(Box<[f64]>),
    /// At most 256 distinct values (requests, prices), each row's as a one-byte code.
    Coded {
        values: Box<[f64]>,
        codes: Box<[u8]>,
    },
    Sparse {
        rows: Box<[u32]>,
        values: Box<[f64]>,
    },
}

impl Column {
    fn get(&self, i: usize) -> f64 {
        match self {
            Column::Dense(v) => v[i],
            Column::Coded { values, codes } => values[codes[i] as usize],
            Column::Sparse { rows, values } => {
                rows.binary_search(&(i as u32)).map_or(0.0, |k| values[k])
            }
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Column::Dense(v) => v.len() * 8,
            Column::Coded { values, codes } => values.len() * 8 + codes.len(),
            Column::Sparse { rows, .. } => rows.len() * 12,
        }
    }
}

/// `c` as one-byte codes into its distinct values (bit for bit), if it has at most 256.
fn coded(c: &[f64]) -> Option<Column> {
    let mut index: FxHashMap<u64, u8> = FxHashMap::default();
    let mut values = Vec::new();
    let mut codes = Vec::with_capacity(c.len());
    for v in c {
        let next = values.len();
        let code = match index.get(&v.to_bits()) {
            Some(&code) => code,
            None => {
                let code = u8::try_from(next).ok()?;
                index.insert(v.to_bits(), code);
                values.push(*v);
                code
            }
        };
        codes.push(code);
    }
    Some(Column::Coded {
        values: values.into_boxed_slice(),
        codes: codes.into_boxed_slice(),
    })
}

/// A pod and container of a loaded set, read as properties (what filters, keys and sharing
/// test).
#[derive(Clone, Copy)]
pub struct PodRow<'a> {
    set: &'a AllocationColumns,
    pod: u32,
    container: u32,
}

impl<'a> PodRow<'a> {
    /// The node, borrowed from the set rather than from this view.
    pub fn node_name(&self) -> &'a str {
        let set: &'a AllocationColumns = self.set;
        set.strings.get(set.pods.strings[self.pod as usize][1])
    }

    fn string(&self, k: usize) -> &str {
        self.set
            .strings
            .get(self.set.pods.strings[self.pod as usize][k])
    }
    fn meta(&self) -> &PodMeta {
        &self.set.pods.meta[self.pod as usize]
    }

    /// The properties as one struct.
    pub fn to_props(&self) -> AllocationProperties {
        AllocationProperties {
            cluster: self.cluster().to_string(),
            node: self.node().to_string(),
            container: self.container().to_string(),
            controller: self.controller().to_string(),
            controller_kind: self.controller_kind().to_string(),
            namespace: self.namespace().to_string(),
            pod: self.pod().to_string(),
            services: self.services().to_vec(),
            provider_id: self.provider_id().to_string(),
            labels: self.labels().clone(),
            annotations: self.annotations().clone(),
            namespace_labels: self.namespace_labels().clone(),
            namespace_annotations: self.namespace_annotations().clone(),
        }
    }
}

impl Props for PodRow<'_> {
    fn cluster(&self) -> &str {
        self.string(0)
    }
    fn node(&self) -> &str {
        self.string(1)
    }
    fn container(&self) -> &str {
        self.set.strings.get(self.container)
    }
    fn controller(&self) -> &str {
        self.string(2)
    }
    fn controller_kind(&self) -> &str {
        self.string(3)
    }
    fn namespace(&self) -> &str {
        self.string(4)
    }
    fn pod(&self) -> &str {
        self.string(5)
    }
    fn provider_id(&self) -> &str {
        self.string(6)
    }
    fn services(&self) -> &[String] {
        &self.meta().services
    }
    fn labels(&self) -> &Map {
        &self.meta().labels
    }
    fn annotations(&self) -> &Map {
        &self.meta().annotations
    }
    fn namespace_labels(&self) -> &Map {
        &self.meta().namespace_labels
    }
    fn namespace_annotations(&self) -> &Map {
        &self.meta().namespace_annotations
    }
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
    strings: Strings,
    pods: Pods,
    times: Vec<Times>,
    row_pod: Vec<u32>,
    /// String id of each row's container.
    row_container: Vec<u32>,
    row_times: Vec<u32>,
    /// Rows whose name is not the derived one, by row.
    names: Vec<(u32, Box<str>)>,
    /// Rows that are idle allocations, ascending.
    idle: Vec<u32>,
    /// Rows' volumes, by row then key.
    pvs: Vec<PvEntry>,
    /// Rows' load balancers, by row then key.
    lbs: Vec<LbEntry>,
    /// Rows' shared-cost breakdowns (stored sets have none; kept for exactness), by row.
    breakdowns: Vec<(u32, BTreeMap<String, SharedCostBreakdown>)>,
    /// The columns that are not all (positive) zero: (number index, values).
    numbers: Vec<(usize, Column)>,
    /// Query results computed on this set, kept while the set lives (see `query`).
    pub cache: SetCache,
}

/// A row's name and the strings of its properties, borrowed from wherever it is read.
#[derive(Clone, Copy, Debug)]
pub struct RowStrings<'a> {
    /// The allocation's name.
    pub name: &'a str,
    /// `properties.cluster`.
    pub cluster: &'a str,
    /// `properties.node`.
    pub node: &'a str,
    /// `properties.controller`.
    pub controller: &'a str,
    /// `properties.controllerKind`.
    pub controller_kind: &'a str,
    /// `properties.namespace`.
    pub namespace: &'a str,
    /// `properties.pod`.
    pub pod: &'a str,
    /// `properties.providerID`.
    pub provider_id: &'a str,
    /// `properties.container`.
    pub container: &'a str,
}

impl RowStrings<'_> {
    /// Whether `name` is the derived one (`cluster/node/namespace/pod/container`), checked
    /// without building it.
    fn name_is_derived(&self) -> bool {
        let mut rest = self.name;
        let parts = [
            self.cluster,
            self.node,
            self.namespace,
            self.pod,
            self.container,
        ];
        for (k, part) in parts.iter().enumerate() {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
            if k < parts.len() - 1 {
                let Some(r) = rest.strip_prefix('/') else {
                    return false;
                };
                rest = r;
            }
        }
        rest.is_empty()
    }

    fn is_idle(&self) -> bool {
        name_is_idle(self.name)
    }
}

/// Builds an [`AllocationColumns`] row by row, from stored allocations
/// ([`AllocationColumns::from_set`]) or straight from a file's columns (the Parquet reader),
/// so that both give the same set.
pub struct ColumnsBuilder<'i> {
    window: Window,
    resolution: Resolution,
    data_end: DateTime<Utc>,
    interner: &'i PodInterner,
    strings: StringsBuilder,
    /// This set's pods' metadata, by content: the process-wide interner is asked once per
    /// distinct metadata of the set, not once per row.
    metas: HashTable<Arc<PodMeta>>,
    pod_ids: FxHashMap<([u32; 7], usize), u32>,
    /// The previous row's string ids by field (rows of a pod, a node, a namespace come
    /// together, so most fields repeat the row before), metadata and times: compared before
    /// anything is hashed.
    last_ids: [u32; 8],
    last_meta: Option<Arc<PodMeta>>,
    last_times: Option<(Times, u32)>,
    pods: Pods,
    time_ids: FxHashMap<Times, u32>,
    times: Vec<Times>,
    row_pod: Vec<u32>,
    row_container: Vec<u32>,
    row_times: Vec<u32>,
    names: Vec<(u32, Box<str>)>,
    idle: Vec<u32>,
    pvs: Vec<PvEntry>,
    lbs: Vec<LbEntry>,
    breakdowns: Vec<(u32, BTreeMap<String, SharedCostBreakdown>)>,
    columns: Vec<Vec<f64>>,
}

impl<'i> ColumnsBuilder<'i> {
    /// A builder for a set of about `rows` rows.
    pub fn new(
        window: Window,
        resolution: Resolution,
        data_end: DateTime<Utc>,
        rows: usize,
        interner: &'i PodInterner,
    ) -> Self {
        interner
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sweep();
        ColumnsBuilder {
            window,
            resolution,
            data_end,
            interner,
            strings: StringsBuilder::new(),
            metas: HashTable::new(),
            pod_ids: FxHashMap::default(),
            last_ids: [0; 8],
            last_meta: None,
            last_times: None,
            pods: Pods::default(),
            time_ids: FxHashMap::default(),
            times: Vec::new(),
            row_pod: Vec::with_capacity(rows),
            row_container: Vec::with_capacity(rows),
            row_times: Vec::with_capacity(rows),
            names: Vec::new(),
            idle: Vec::new(),
            pvs: Vec::new(),
            lbs: Vec::new(),
            breakdowns: Vec::new(),
            columns: (0..NUMBERS).map(|_| Vec::with_capacity(rows)).collect(),
        }
    }

    fn meta(&mut self, src: &impl MetaSource) -> Arc<PodMeta> {
        if let Some(m) = &self.last_meta
            && same_meta(src, m)
        {
            return m.clone();
        }
        let m = self.meta_by_hash(src);
        self.last_meta = Some(m.clone());
        m
    }

    fn meta_by_hash(&mut self, src: &impl MetaSource) -> Arc<PodMeta> {
        let hash = meta_hash(src);
        if let Some(m) = self.metas.find(hash, |m| same_meta(src, m)) {
            return m.clone();
        }
        let m = self
            .interner
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .meta(hash, src);
        self.metas
            .insert_unique(hash, m.clone(), |m| meta_hash(&**m));
        m
    }

    /// Adds a row: its name and property strings, its pod's metadata, and its values (the
    /// numbers, window, start, end, volumes, load balancers and shared-cost breakdown of
    /// `values`; its name and properties are not read).
    pub fn push(&mut self, s: &RowStrings<'_>, meta: &impl MetaSource, values: &Allocation) {
        let row = u32::try_from(self.row_pod.len()).expect("a set holds fewer than 2^32 rows");
        let fields = [
            s.cluster,
            s.node,
            s.controller,
            s.controller_kind,
            s.namespace,
            s.pod,
            s.provider_id,
            s.container,
        ];
        for (k, field) in fields.into_iter().enumerate() {
            if self.strings.get_id(self.last_ids[k]) != field {
                self.last_ids[k] = self.strings.id(field);
            }
        }
        let ids: [u32; 7] = self.last_ids[..7].try_into().expect("seven pod fields");
        let meta = self.meta(meta);
        let next = self.pods.strings.len() as u32;
        let pod = *self
            .pod_ids
            .entry((ids, Arc::as_ptr(&meta) as usize))
            .or_insert_with(|| {
                self.pods.strings.push(ids);
                self.pods.meta.push(meta);
                next
            });
        self.row_pod.push(pod);
        self.row_container.push(self.last_ids[7]);
        let t = Times {
            window: values.window,
            start: values.start,
            end: values.end,
        };
        let time_id = match self.last_times {
            Some((last, id)) if last == t => id,
            _ => {
                let next = self.times.len() as u32;
                let times = &mut self.times;
                let id = *self.time_ids.entry(t).or_insert_with(|| {
                    times.push(t);
                    next
                });
                self.last_times = Some((t, id));
                id
            }
        };
        self.row_times.push(time_id);
        if !s.name_is_derived() {
            self.names.push((row, s.name.into()));
        }
        if s.is_idle() {
            self.idle.push(row);
        }
        for (k, pv) in &values.pvs {
            self.pvs.push(PvEntry {
                row,
                key: self.strings.id(k),
                provider_id: self.strings.id(&pv.provider_id),
                byte_hours: pv.byte_hours,
                cost: pv.cost,
            });
        }
        for (k, lb) in &values.lb_allocations {
            self.lbs.push(LbEntry {
                row,
                key: self.strings.id(k),
                service: self.strings.id(&lb.service),
                ip: self.strings.id(&lb.ip),
                private: lb.private,
                cost: lb.cost,
                hours: lb.hours,
            });
        }
        if !values.shared_cost_breakdown.is_empty() {
            self.breakdowns
                .push((row, values.shared_cost_breakdown.clone()));
        }
        for (col, v) in self.columns.iter_mut().zip(numbers_of(values)) {
            col.push(v);
        }
    }

    /// The set.
    pub fn finish(self) -> AllocationColumns {
        let len = self.row_pod.len();
        let numbers = self
            .columns
            .into_iter()
            .enumerate()
            .filter_map(|(k, c)| {
                // Positive zero is what an absent value reads as; anything else is kept, to
                // the bit (a -0.0 included).
                let set: Vec<u32> = (0..c.len() as u32)
                    .filter(|&i| c[i as usize].to_bits() != 0)
                    .collect();
                if set.is_empty() {
                    None
                } else if let Some(coded) = coded(&c).filter(|_| c.len() < set.len() * 12) {
                    Some((k, coded))
                } else if set.len() * 12 < c.len() * 8 {
                    let values = set.iter().map(|&i| c[i as usize]).collect();
                    Some((
                        k,
                        Column::Sparse {
                            rows: set.into_boxed_slice(),
                            values,
                        },
                    ))
                } else {
                    Some((k, Column::Dense(c.into_boxed_slice())))
                }
            })
            .collect();
        let mut pods = self.pods;
        pods.strings.shrink_to_fit();
        pods.meta.shrink_to_fit();
        let shrunk = |mut v: Vec<u32>| {
            v.shrink_to_fit();
            v
        };
        let mut times = self.times;
        times.shrink_to_fit();
        let mut names = self.names;
        names.shrink_to_fit();
        let (mut pvs, mut lbs, mut breakdowns) = (self.pvs, self.lbs, self.breakdowns);
        pvs.shrink_to_fit();
        lbs.shrink_to_fit();
        breakdowns.shrink_to_fit();
        AllocationColumns {
            window: self.window,
            resolution: self.resolution,
            data_end: self.data_end,
            len,
            strings: self.strings.build(),
            pods,
            times,
            row_pod: shrunk(self.row_pod),
            row_container: shrunk(self.row_container),
            row_times: shrunk(self.row_times),
            names,
            idle: shrunk(self.idle),
            pvs,
            lbs,
            breakdowns,
            numbers,
            cache: SetCache::default(),
        }
    }
}

impl AllocationColumns {
    /// Builds the columns of `set`, sharing its pods' maps and lists through `interner`.
    pub fn from_set(set: AllocationSet, interner: &PodInterner) -> Self {
        let mut b = ColumnsBuilder::new(
            set.window,
            set.resolution,
            set.data_end,
            set.allocations.len(),
            interner,
        );
        for a in &set.allocations {
            let p = &a.properties;
            let strings = RowStrings {
                name: &a.name,
                cluster: &p.cluster,
                node: &p.node,
                controller: &p.controller,
                controller_kind: &p.controller_kind,
                namespace: &p.namespace,
                pod: &p.pod,
                provider_id: &p.provider_id,
                container: &p.container,
            };
            b.push(&strings, p, a);
        }
        b.finish()
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

    /// Row `i`'s pod id: rows of one pod share it.
    pub fn pod_id(&self, i: usize) -> u32 {
        self.row_pod[i]
    }

    /// Row `i`'s container id.
    pub fn container_id(&self, i: usize) -> u32 {
        self.row_container[i]
    }

    /// How many distinct pods the set holds.
    pub fn pod_count(&self) -> usize {
        self.pods.strings.len()
    }

    /// Pod `pod` with container `container`, read as properties.
    pub fn props(&self, pod: u32, container: u32) -> PodRow<'_> {
        PodRow {
            set: self,
            pod,
            container,
        }
    }

    /// Row `i`'s properties.
    pub fn row_props(&self, i: usize) -> PodRow<'_> {
        self.props(self.row_pod[i], self.row_container[i])
    }

    /// Row `i`'s name.
    pub fn name(&self, i: usize) -> String {
        match self.names.binary_search_by_key(&(i as u32), |(r, _)| *r) {
            Ok(k) => self.names[k].1.to_string(),
            Err(_) => derived_name(&self.row_props(i)),
        }
    }

    /// Writes row `i`'s values (numbers, window, start, end, volumes, load balancers, shared
    /// costs) into `into`, leaving its name and properties as they are: what adding a row to
    /// an aggregate reads.
    pub fn load_values(&self, i: usize, into: &mut Allocation) {
        let mut v = [0.0; NUMBERS];
        for (k, col) in &self.numbers {
            v[*k] = col.get(i);
        }
        set_numbers(into, &v);
        let t = self.times[self.row_times[i] as usize];
        into.window = t.window;
        into.start = t.start;
        into.end = t.end;
        let row = i as u32;
        into.pvs.clear();
        let from = self.pvs.partition_point(|e| e.row < row);
        for e in self.pvs[from..].iter().take_while(|e| e.row == row) {
            into.pvs.insert(
                self.strings.get(e.key).to_string(),
                PvAllocation {
                    byte_hours: e.byte_hours,
                    cost: e.cost,
                    provider_id: self.strings.get(e.provider_id).to_string(),
                },
            );
        }
        into.lb_allocations.clear();
        let from = self.lbs.partition_point(|e| e.row < row);
        for e in self.lbs[from..].iter().take_while(|e| e.row == row) {
            into.lb_allocations.insert(
                self.strings.get(e.key).to_string(),
                LbAllocation {
                    service: self.strings.get(e.service).to_string(),
                    cost: e.cost,
                    private: e.private,
                    ip: self.strings.get(e.ip).to_string(),
                    hours: e.hours,
                },
            );
        }
        match self.breakdowns.binary_search_by_key(&row, |(r, _)| *r) {
            Ok(k) => into.shared_cost_breakdown.clone_from(&self.breakdowns[k].1),
            Err(_) => into.shared_cost_breakdown.clear(),
        }
    }

    /// Row `i` as the allocation it was built from.
    pub fn row(&self, i: usize) -> Allocation {
        let mut a = Allocation {
            name: self.name(i),
            properties: self.row_props(i).to_props(),
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

    /// Approximate bytes the set holds, by part (the shared maps and lists not counted).
    pub fn memory(&self) -> [(&'static str, usize); 6] {
        [
            ("row ids", self.len * 12),
            (
                "numbers",
                self.numbers.iter().map(|(_, c)| c.bytes()).sum::<usize>(),
            ),
            (
                "strings",
                self.strings.text.len() + self.strings.ends.len() * 4,
            ),
            ("pods", self.pods.strings.len() * (28 + 8)),
            (
                "names and times",
                self.times.len() * std::mem::size_of::<Times>()
                    + self.names.iter().map(|(_, n)| n.len() + 24).sum::<usize>(),
            ),
            (
                "volumes and load balancers",
                self.pvs.len() * std::mem::size_of::<PvEntry>()
                    + self.lbs.len() * std::mem::size_of::<LbEntry>()
                    + self.breakdowns.len() * 1024,
            ),
        ]
    }

    /// Approximate bytes the set holds (the shared maps and lists not counted).
    pub fn heap_bytes(&self) -> usize {
        self.memory().iter().map(|(_, b)| b).sum()
    }

    /// How many number columns the set keeps for every row (as values or codes) and sparse
    /// (the others are all zero).
    pub fn column_counts(&self) -> (usize, usize) {
        let dense = self
            .numbers
            .iter()
            .filter(|(_, c)| !matches!(c, Column::Sparse { .. }))
            .count();
        (dense, self.numbers.len() - dense)
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
            let name = derived_name(&p);
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
        assert_eq!(c.row_props(1).container(), "side");
        assert_eq!(c.row_props(1).labels()["app"], "web");
        assert_eq!(c.names.len(), 1, "only the idle row's name is not derived");
    }

    #[test]
    fn sets_naming_the_same_pods_share_their_maps() {
        let interner = PodInterner::default();
        let a = AllocationColumns::from_set(set(), &interner);
        let b = AllocationColumns::from_set(set(), &interner);
        assert!(Arc::ptr_eq(&a.pods.meta[0], &b.pods.meta[0]));
        assert!(Arc::ptr_eq(&a.pods.meta[0], &b.pods.meta[1]), "p1 and p2");
        // The pods' metadata and the idle row's (none).
        assert_eq!(interner.len(), 2);
        drop((a, b));
        let mut t = interner.inner.lock().unwrap();
        t.metas.retain(|m| Arc::strong_count(m) > 1);
        assert!(t.metas.is_empty(), "nothing holds them any more");
    }

    #[test]
    fn mostly_zero_columns_keep_only_their_values() {
        let interner = PodInterner::default();
        let mut s = set();
        for _ in 0..5 {
            s.allocations.extend(s.allocations.clone());
        }
        s.allocations[7].gpu_cost = 1.5;
        let c = AllocationColumns::from_set(s.clone(), &interner);
        assert_eq!(c.to_set(), s);
        let (_, sparse) = c.column_counts();
        assert!(sparse >= 1, "the one GPU cost is kept sparse");
        assert_eq!(c.row(7).gpu_cost, 1.5);
        assert_eq!(c.row(8).gpu_cost, 0.0);
    }

    #[test]
    fn columns_of_few_values_keep_a_byte_per_row_and_every_bit() {
        let interner = PodInterner::default();
        let mut s = set();
        for _ in 0..5 {
            s.allocations.extend(s.allocations.clone());
        }
        let few = [0.25, -0.0, 1e-300, 0.1 + 0.2];
        for (i, a) in s.allocations.iter_mut().enumerate() {
            a.cpu_core_request_average = few[i % few.len()];
        }
        let c = AllocationColumns::from_set(s.clone(), &interner);
        assert_eq!(c.to_set(), s);
        for (i, a) in s.allocations.iter().enumerate() {
            assert_eq!(
                c.row(i).cpu_core_request_average.to_bits(),
                a.cpu_core_request_average.to_bits()
            );
        }
        let coded = c
            .numbers
            .iter()
            .any(|(_, col)| matches!(col, Column::Coded { values, .. } if values.len() == 4));
        assert!(coded, "four distinct values are coded");
    }
}
