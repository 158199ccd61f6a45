//! Asset queries: `/assets` parameters, filtering, aggregation and accumulation over the
//! loaded asset sets.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::filter::{self, AssetField, Filter};
use super::{
    Bounds, CANCEL_CHECK_ROWS, Cancelled, Cost, Dialect, ENCODE_WEIGHT, Format, ParamError, bad,
    check_steps, parse_bool, parse_count, parse_format, rank_and_page, reads_daily, steps, window,
};
use crate::model::{Asset, Breakdown, Resolution, StoredAssets, UNALLOCATED, Window};

/// Loaded asset sets by resolution and window start.
pub type AssetSets = BTreeMap<(Resolution, DateTime<Utc>), Arc<StoredAssets>>;

/// The `type` of an aggregate whose members are of different types.
pub const ANY: &str = "Any";

/// One asset property to aggregate by (`aggregate`).
#[derive(Clone, Debug, PartialEq)]
pub enum AssetProperty {
    /// `type`: `Node`, `Disk`, `LoadBalancer`.
    Type,
    /// `cluster`.
    Cluster,
    /// `account`: not recorded by this build, so every asset is `__unallocated__`.
    Account,
    /// `project`: not recorded by this build, so every asset is `__unallocated__`.
    Project,
    /// `provider`.
    Provider,
    /// `providerID` (also `providerid`).
    ProviderId,
    /// `service`.
    Service,
    /// `category`.
    Category,
    /// `label:<key>`: the value of the asset label with this sanitised key.
    Label(String),
}

impl AssetProperty {
    /// Reads one aggregation property. Names compare without case, as OpenCost's
    /// `ParseAssetProperty` does (so `providerID` and `providerid` are one).
    fn parse(s: &str) -> Result<Self, ParamError> {
        if let Some(k) = s.strip_prefix("label:") {
            let k = k.trim();
            if k.is_empty() {
                return Err(bad(
                    "aggregate",
                    format!("{s:?} names no label; expected label:<name>"),
                ));
            }
            return Ok(AssetProperty::Label(filter::sanitize(k)));
        }
        Ok(match s.to_ascii_lowercase().as_str() {
            "type" => AssetProperty::Type,
            "cluster" => AssetProperty::Cluster,
            "account" => AssetProperty::Account,
            "project" => AssetProperty::Project,
            "provider" => AssetProperty::Provider,
            "providerid" => AssetProperty::ProviderId,
            "service" => AssetProperty::Service,
            "category" => AssetProperty::Category,
            _ => {
                return Err(bad(
                    "aggregate",
                    format!(
                        "{s:?} is not an asset aggregation; expected type, cluster, account, project, provider, providerID, service, category, label:<name>, or a comma list of them"
                    ),
                ));
            }
        })
    }

    /// The asset's value of this property, empty when it has none.
    fn value<'a>(&self, a: &'a Asset) -> &'a str {
        match self {
            AssetProperty::Type => &a.kind,
            AssetProperty::Cluster => &a.cluster,
            AssetProperty::Provider => &a.provider,
            AssetProperty::ProviderId => &a.provider_id,
            AssetProperty::Service => &a.service,
            AssetProperty::Category => &a.category,
            AssetProperty::Label(k) => a.labels.get(k).map_or("", String::as_str),
            AssetProperty::Account | AssetProperty::Project => "",
        }
    }
}

/// A parsed `/assets` query.
#[derive(Clone, Debug)]
pub struct AssetQuery {
    /// The window asked about (`window`).
    pub window: Window,
    /// Asset properties to aggregate by, the key joining their values with `/` (`aggregate`);
    /// empty: no aggregation (each asset under its own key).
    pub aggregate: Vec<AssetProperty>,
    /// Whether the whole window is one set rather than one per day or hour (`accumulate`;
    /// default false for Kubecost, true for OpenCost).
    pub accumulate: bool,
    /// Which assets count (`filter`, v2 syntax over asset fields); `None`: all.
    pub filter: Option<Filter<AssetField>>,
    /// Whether adjustments are zeroed (`disableAdjustments`).
    pub disable_adjustments: bool,
    /// JSON or CSV (`format`).
    pub format: Format,
    /// How many assets of each set to skip, most expensive first (`offset`).
    pub offset: usize,
    /// The most assets each set returns after `offset` (`limit`); `None`: all.
    pub limit: Option<usize>,
    /// The dialect the query was read in: it decides the shape of the answer.
    pub dialect: Dialect,
    /// What the client must know about how the query was read: the envelope's `warning`.
    pub warnings: Vec<String>,
}

/// Kubecost's v1 asset filter parameters, replaced by `filter` and not read by this build.
const V1_FILTERS: [&str; 10] = [
    "filterAccounts",
    "filterCategories",
    "filterClusters",
    "filterLabels",
    "filterNames",
    "filterProjects",
    "filterProviders",
    "filterProviderIDs",
    "filterServices",
    "filterTypes",
];

/// Reads the parameters of an asset query.
pub fn parse_asset_query(
    params: &HashMap<String, String>,
    now: DateTime<Utc>,
    bounds: impl Into<Bounds>,
    dialect: Dialect,
) -> Result<AssetQuery, ParamError> {
    let bounds = bounds.into();
    let get = |k: &str| params.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let raw = |k: &str| {
        params
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    };
    let window_text = get("window").ok_or_else(|| bad("window", "is required, e.g. window=7d"))?;
    let window = window::parse(window_text, now).map_err(|m| bad("window", m))?;
    let (window, widened) = super::widen(window, now, bounds.hourly_retention);
    let aggregate = get("aggregate")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(AssetProperty::parse)
        .collect::<Result<Vec<_>, _>>()?;
    // OpenCost's `/assets` answers one map for the window: accumulating is its default.
    let accumulate = get("accumulate")
        .map(|v| parse_bool("accumulate", v))
        .transpose()?
        .unwrap_or(dialect == Dialect::Opencost);
    let filter = get("filter")
        .map(filter::parse_asset)
        .transpose()
        .map_err(|m| bad("filter", m))?;
    let disable_adjustments = get("disableAdjustments")
        .map(|v| parse_bool("disableAdjustments", v))
        .transpose()?
        .unwrap_or(false);
    let format = parse_format(get("format"))?;
    let mut warnings: Vec<String> = widened.into_iter().collect();
    let v1: Vec<&str> = V1_FILTERS
        .iter()
        .copied()
        .filter(|k| get(k).is_some())
        .collect();
    if !v1.is_empty() {
        // Ignoring a filter silently would answer totals for everything as if filtered.
        warnings.push(format!(
            "{} not supported by this build and ignored (only filter= narrows assets); use filter= (v2 syntax, e.g. filter=cluster:\"cluster-one\"+assetType:\"Node\")",
            if v1.len() == 1 {
                format!("{} is", v1[0])
            } else {
                format!("{} are", v1.join(", "))
            }
        ));
    }
    let number = |k: &'static str| raw(k).map(|v| parse_count(k, v)).transpose();
    let q = AssetQuery {
        window,
        aggregate,
        accumulate,
        filter,
        disable_adjustments,
        format,
        offset: number("offset")?.unwrap_or(0),
        limit: number("limit")?,
        dialect,
        warnings,
    };
    let (resolution, _) = q.resolution(now);
    let step = (!q.accumulate).then(|| resolution.duration());
    check_steps(window_text, q.window, step, now, bounds.max_steps)?;
    Ok(q)
}

/// One output asset set.
#[derive(Clone, Debug)]
pub struct AssetResult {
    /// The step's window.
    pub window: Window,
    /// The step's assets with their keys, most expensive first, paged.
    pub assets: Vec<(String, Asset)>,
}

impl AssetQuery {
    /// Whether the JSON `data` is one asset map for the window (OpenCost's `/assets`) rather
    /// than an array of sets: in the OpenCost dialect when accumulating, which it does unless
    /// the client says `accumulate=false`.
    pub fn data_is_map(&self) -> bool {
        self.dialect == Dialect::Opencost && self.accumulate
    }

    /// The resolution read (daily sets, hourly when the window is not whole days) and whether
    /// it is daily.
    fn resolution(&self, now: DateTime<Utc>) -> (Resolution, bool) {
        if reads_daily(self.window, now) {
            (Resolution::Day, true)
        } else {
            (Resolution::Hour, false)
        }
    }

    /// The resolution read and the steps.
    pub fn plan(&self, now: DateTime<Utc>) -> (Resolution, Vec<Window>) {
        let (res, _) = self.resolution(now);
        let steps = if self.accumulate {
            vec![self.window]
        } else {
            steps(self.window, res.duration(), now)
        };
        (res, steps)
    }

    /// Runs the query over the loaded asset sets.
    pub fn run(&self, sets: &AssetSets, now: DateTime<Utc>) -> Vec<AssetResult> {
        let mut out = Vec::new();
        let never = CancellationToken::new();
        self.run_each(sets, now, &never, |r| {
            out.push(r);
            Ok::<(), Cancelled>(())
        })
        .expect("an uncancelled query runs to the end");
        out
    }

    /// Runs the query one step at a time (see [`super::AllocationQuery::run_each`]): filters,
    /// then adds up the assets of each key over the step's sets.
    pub fn run_each<E: From<Cancelled>>(
        &self,
        sets: &AssetSets,
        now: DateTime<Utc>,
        cancel: &CancellationToken,
        mut emit: impl FnMut(AssetResult) -> Result<(), E>,
    ) -> Result<(), E> {
        let (res, steps) = self.plan(now);
        for step in steps {
            let mut acc: BTreeMap<String, Asset> = BTreeMap::new();
            for (_, set) in sets.range((res, step.start)..(res, step.end)) {
                let set = set.set();
                for (i, a) in set.assets.iter().enumerate() {
                    if i % CANCEL_CHECK_ROWS == 0 && cancel.is_cancelled() {
                        return Err(Cancelled.into());
                    }
                    if self.filter.as_ref().is_some_and(|f| !f.matches(a)) {
                        continue;
                    }
                    let key = self.key(a);
                    match acc.get_mut(&key) {
                        Some(e) => add_asset(e, a),
                        None => {
                            acc.insert(key, a.clone());
                        }
                    }
                }
            }
            for a in acc.values_mut() {
                // Every asset of a set reports the window the set serves, as OpenCost's do.
                a.window = Some(step);
                if self.disable_adjustments {
                    a.adjustment = 0.0;
                }
            }
            let assets = acc.into_iter().collect();
            let assets = rank_and_page(
                assets,
                |(k, a): &(String, Asset)| (a.total_cost(), k.as_str()),
                self.offset,
                self.limit,
            );
            emit(AssetResult {
                window: step,
                assets,
            })?;
        }
        Ok(())
    }

    /// The query's estimated work on these sets (see [`Cost`]).
    pub fn cost(&self, sets: &AssetSets, now: DateTime<Utc>) -> Cost {
        let (res, steps) = self.plan(now);
        let rows: u64 = steps
            .iter()
            .flat_map(|w| sets.range((res, w.start)..(res, w.end)))
            .map(|(_, s)| s.len() as u64)
            .sum();
        let encoded = if self.aggregate.is_empty() { rows } else { 0 };
        rows.saturating_add(encoded.saturating_mul(ENCODE_WEIGHT))
            .saturating_add(steps.len() as u64)
    }

    /// The asset's key: OpenCost's full key unaggregated (so one asset over many sets stays
    /// one asset), else the aggregation properties' values joined with `/`, an empty value
    /// `__unallocated__`.
    fn key(&self, a: &Asset) -> String {
        if self.aggregate.is_empty() {
            return a.key();
        }
        self.aggregate
            .iter()
            .map(|g| match g.value(a) {
                "" => UNALLOCATED,
                v => v,
            })
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// Keeps `into` only where `other` agrees; otherwise empties it.
fn keep_shared(into: &mut String, other: &str) {
    if into != other {
        into.clear();
    }
}

/// Adds asset `a` into `into`, as OpenCost's `Asset.Add` does (`core/pkg/opencost/asset.go`):
/// only what both share survives (properties, labels, node type, disk storage class and
/// claim, load balancer IP; `type` becomes `Any` when they differ); costs, hours and
/// adjustments sum; the window, start and end widen to cover both; preemptible becomes the
/// cost-weighted fraction. Capacities (`cpuCores`, `ramBytes`, `gpuCount`, disk `bytes`) are
/// the summed capacity-hours over the hours now covered (`CPUCores()` = core-hours / hours):
/// assets side by side over one window add up (30 nodes of 8 cores are 240 cores), and one
/// asset over consecutive windows averages over time.
pub(crate) fn add_asset(into: &mut Asset, a: &Asset) {
    if into.kind != a.kind {
        into.kind = ANY.to_string();
    }
    keep_shared(&mut into.name, &a.name);
    keep_shared(&mut into.cluster, &a.cluster);
    keep_shared(&mut into.provider, &a.provider);
    keep_shared(&mut into.provider_id, &a.provider_id);
    keep_shared(&mut into.category, &a.category);
    keep_shared(&mut into.service, &a.service);
    keep_shared(&mut into.node_type, &a.node_type);
    keep_shared(&mut into.storage_class, &a.storage_class);
    keep_shared(&mut into.claim_name, &a.claim_name);
    keep_shared(&mut into.claim_namespace, &a.claim_namespace);
    keep_shared(&mut into.ip, &a.ip);
    into.labels.retain(|k, v| a.labels.get(k) == Some(v));
    // A single bool cannot be a fraction: the sum is private only if every member is.
    into.private &= a.private;

    // Weighted by cost before adjustment, before the costs are summed (OpenCost `Node.add`);
    // with no cost on either side, the plain mean.
    let (w_into, w_a) = (
        into.total_cost() - into.adjustment,
        a.total_cost() - a.adjustment,
    );
    into.preemptible = if w_into + w_a > 0.0 {
        (w_into * into.preemptible + w_a * a.preemptible) / (w_into + w_a)
    } else {
        (into.preemptible + a.preemptible) / 2.0
    };

    into.window = match (into.window, a.window) {
        (Some(x), Some(y)) => Some(x.union(&y)),
        (x, y) => x.or(y),
    };
    into.start = match (into.start, a.start) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    into.end = match (into.end, a.end) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    };

    // Weighted by capacity-hours before those are summed (OpenCost `Node.add`).
    into.cpu_breakdown = Breakdown::weighted(
        into.cpu_breakdown,
        into.cpu_core_hours,
        a.cpu_breakdown,
        a.cpu_core_hours,
    );
    into.ram_breakdown = Breakdown::weighted(
        into.ram_breakdown,
        into.ram_byte_hours,
        a.ram_breakdown,
        a.ram_byte_hours,
    );
    into.cpu_core_hours += a.cpu_core_hours;
    into.ram_byte_hours += a.ram_byte_hours;
    into.gpu_hours += a.gpu_hours;
    into.byte_hours += a.byte_hours;
    into.cpu_cost += a.cpu_cost;
    into.ram_cost += a.ram_cost;
    into.gpu_cost += a.gpu_cost;
    into.cost += a.cost;
    into.adjustment += a.adjustment;

    let hours = running_hours(into);
    if hours > 0.0 {
        into.cpu_cores = into.cpu_core_hours / hours;
        into.ram_bytes = into.ram_byte_hours / hours;
        into.gpu_count = into.gpu_hours / hours;
        into.bytes = into.byte_hours / hours;
    } else {
        // Nothing ran: no hours to average over, so capacities side by side simply add.
        into.cpu_cores += a.cpu_cores;
        into.ram_bytes += a.ram_bytes;
        into.gpu_count += a.gpu_count;
        into.bytes += a.bytes;
    }
}

/// Hours between the asset's start and end, at most its window's (OpenCost's `Minutes()`).
fn running_hours(a: &Asset) -> f64 {
    let minutes = a.minutes();
    let cap = a.window.map_or(f64::INFINITY, |w| w.minutes());
    minutes.min(cap) / 60.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

    fn day(d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, 0, 0, 0).unwrap()
    }

    fn now() -> DateTime<Utc> {
        day(25)
    }

    fn params(q: &str) -> HashMap<String, String> {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn query(q: &str) -> AssetQuery {
        parse_asset_query(&params(q), now(), 100, Dialect::Kubecost).unwrap()
    }

    /// A node of `cores` cores and `gib` GiB at $1 per core-hour and $0.5 per GiB-hour,
    /// running `hours` hours from the start of day `d`.
    fn node(name: &str, d: u32, hours: i64, cores: f64, gib: f64) -> Asset {
        let start = day(d);
        let h = hours as f64;
        Asset {
            kind: "Node".into(),
            name: name.into(),
            cluster: "c1".into(),
            provider: "custom".into(),
            provider_id: format!("i-{name}"),
            category: "Compute".into(),
            service: "Kubernetes".into(),
            labels: [
                ("pool".to_string(), "general".to_string()),
                ("host".to_string(), name.to_string()),
            ]
            .into(),
            window: Some(Window::new(start, start + Duration::days(1))),
            start: Some(start),
            end: Some(start + Duration::hours(hours)),
            node_type: format!("{cores}-core"),
            cpu_cores: cores,
            ram_bytes: gib * GIB,
            cpu_core_hours: cores * h,
            ram_byte_hours: gib * GIB * h,
            cpu_cost: cores * h,
            ram_cost: gib * h * 0.5,
            ..Asset::default()
        }
    }

    fn disk(name: &str, d: u32, gib: f64) -> Asset {
        let start = day(d);
        Asset {
            kind: "Disk".into(),
            name: name.into(),
            cluster: "c1".into(),
            provider: "custom".into(),
            provider_id: format!("vol-{name}"),
            category: "Storage".into(),
            service: "Kubernetes".into(),
            window: Some(Window::new(start, start + Duration::days(1))),
            start: Some(start),
            end: Some(start + Duration::days(1)),
            bytes: gib * GIB,
            byte_hours: gib * GIB * 24.0,
            storage_class: "standard".into(),
            claim_name: format!("data-{name}"),
            claim_namespace: "db".into(),
            cost: 2.4,
            ..Asset::default()
        }
    }

    type Sets = AssetSets;

    fn sets(days: &[(u32, Vec<Asset>)]) -> Sets {
        days.iter()
            .map(|(d, assets)| {
                let w = Window::new(day(*d), day(*d) + Duration::days(1));
                let set = crate::model::AssetSet {
                    window: w,
                    resolution: Resolution::Day,
                    data_end: w.end,
                    assets: assets.clone(),
                };
                (
                    (Resolution::Day, w.start),
                    Arc::new(StoredAssets::decoded(set)),
                )
            })
            .collect()
    }

    fn only(results: &[AssetResult], key: &str) -> Asset {
        assert_eq!(results.len(), 1, "one set");
        results[0]
            .assets
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no {key} in {:?}", results[0].assets))
            .1
            .clone()
    }

    fn assert_near(got: f64, want: f64, what: &str) {
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{what}: {got} != {want}"
        );
    }

    const DAY_20: &str = "window=2026-11-20T00:00:00Z,2026-11-21T00:00:00Z&accumulate=true";
    const DAYS_20_23: &str = "window=2026-11-20T00:00:00Z,2026-11-23T00:00:00Z&accumulate=true";

    #[test]
    fn capacities_of_nodes_side_by_side_add_up() {
        // 30 nodes of 8 cores and 32 GiB over the same whole day: a fleet of 240 cores.
        let fleet: Vec<Asset> = (0..30)
            .map(|i| node(&format!("n{i}"), 20, 24, 8.0, 32.0))
            .collect();
        let r = query(&format!("{DAY_20}&aggregate=type")).run(&sets(&[(20, fleet)]), now());
        let n = only(&r, "Node");
        assert_near(n.cpu_cores, 240.0, "cores");
        assert_near(n.ram_bytes, 960.0 * GIB, "ram");
        assert_near(n.cpu_core_hours, 240.0 * 24.0, "core-hours");
        assert_near(n.cpu_cost, 30.0 * 8.0 * 24.0, "cpu cost");
        assert_near(n.ram_cost, 30.0 * 32.0 * 24.0 * 0.5, "ram cost");
        assert_near(n.minutes(), 1440.0, "minutes");
    }

    #[test]
    fn capacity_is_weighted_by_the_hours_each_node_ran() {
        // 8 cores all day and 4 cores for the first 12 hours: (8*24 + 4*12) / 24 = 10 cores,
        // OpenCost's `CPUCores()` (core-hours over the hours covered).
        let r = query(&format!("{DAY_20}&aggregate=cluster")).run(
            &sets(&[(
                20,
                vec![node("a", 20, 24, 8.0, 32.0), node("b", 20, 12, 4.0, 16.0)],
            )]),
            now(),
        );
        let n = only(&r, "c1");
        assert_near(n.cpu_cores, 10.0, "cores");
        assert_near(n.ram_bytes, (32.0 * 24.0 + 16.0 * 12.0) / 24.0 * GIB, "ram");
        assert_near(n.cpu_core_hours, 240.0, "core-hours");
    }

    #[test]
    fn one_asset_over_consecutive_days_keeps_its_identity_and_averages_its_capacity() {
        let a = node("a", 20, 24, 8.0, 32.0);
        let days = sets(&[
            (20, vec![a.clone()]),
            (21, vec![node("a", 21, 24, 8.0, 32.0)]),
            (22, vec![node("a", 22, 24, 8.0, 32.0)]),
        ]);
        let r = query(DAYS_20_23).run(&days, now());
        assert_eq!(r[0].assets.len(), 1, "the same key is the same asset");
        let n = only(&r, &a.key());
        assert_eq!(
            (
                n.name.as_str(),
                n.provider_id.as_str(),
                n.node_type.as_str()
            ),
            ("a", "i-a", "8-core")
        );
        assert_eq!(n.labels, a.labels);
        assert_near(n.cpu_cores, 8.0, "8 cores for 72 hours are 8 cores");
        assert_near(n.cpu_core_hours, 8.0 * 72.0, "core-hours");
        assert_near(n.minutes(), 3.0 * 1440.0, "minutes");
        assert_eq!(
            n.window,
            Some(Window::new(day(20), day(23))),
            "the window widens"
        );

        // Resized from 8 to 4 cores after the first day: (8*24 + 4*48) / 72 = 5.33 cores.
        let resized = sets(&[
            (20, vec![node("a", 20, 24, 8.0, 32.0)]),
            (21, vec![node("a", 21, 24, 4.0, 32.0)]),
            (22, vec![node("a", 22, 24, 4.0, 32.0)]),
        ]);
        let r = query(&format!("{DAYS_20_23}&aggregate=type")).run(&resized, now());
        let n = only(&r, "Node");
        assert_near(n.cpu_cores, 384.0 / 72.0, "time-weighted cores");
        assert_eq!(n.node_type, "", "8-core and 4-core are not one node type");
        assert_eq!(n.name, "a", "one node throughout keeps its name");

        // Unaccumulated, each day is its own set with the day's own numbers.
        let r = query("window=2026-11-20T00:00:00Z,2026-11-23T00:00:00Z").run(&resized, now());
        let cores: Vec<f64> = r.iter().map(|s| s.assets[0].1.cpu_cores).collect();
        assert_eq!(cores, [8.0, 4.0, 4.0]);
    }

    #[test]
    fn an_aggregate_keeps_only_what_all_members_share() {
        let mut b = node("b", 20, 24, 4.0, 16.0);
        b.labels.insert("pool".into(), "general".into());
        b.preemptible = 1.0;
        let r = query(&format!("{DAY_20}&aggregate=cluster"))
            .run(&sets(&[(20, vec![node("a", 20, 24, 8.0, 32.0), b])]), now());
        let n = only(&r, "c1");
        assert_eq!(n.kind, "Node");
        assert_eq!(n.name, "");
        assert_eq!(n.provider_id, "");
        assert_eq!(n.node_type, "");
        assert_eq!(
            (
                n.cluster.as_str(),
                n.provider.as_str(),
                n.category.as_str(),
                n.service.as_str()
            ),
            ("c1", "custom", "Compute", "Kubernetes")
        );
        assert_eq!(
            n.labels,
            [("pool".to_string(), "general".to_string())].into(),
            "host differs, pool is shared"
        );
        // Cost-weighted: a costs 8*24 + 32*24*0.5 = 576, b (spot) 4*24 + 16*24*0.5 = 288.
        assert_near(n.preemptible, 288.0 / 864.0, "preemptible fraction");

        let mut d2 = disk("d2", 20, 20.0);
        d2.storage_class = "fast".into();
        let r = query(&format!("{DAY_20}&aggregate=type"))
            .run(&sets(&[(20, vec![disk("d1", 20, 10.0), d2])]), now());
        let d = only(&r, "Disk");
        assert_eq!(
            (
                d.name.as_str(),
                d.storage_class.as_str(),
                d.claim_name.as_str(),
                d.claim_namespace.as_str()
            ),
            ("", "", "", "db")
        );
        assert_near(d.bytes, 30.0 * GIB, "disk bytes add up");
        assert_near(d.cost, 4.8, "cost");
    }

    #[test]
    fn members_of_different_types_make_an_any() {
        let mut n = node("a", 20, 24, 8.0, 32.0);
        n.adjustment = -1.0;
        let d = disk("d1", 20, 10.0);
        let r = query(&format!("{DAY_20}&aggregate=cluster"))
            .run(&sets(&[(20, vec![n.clone(), d.clone()])]), now());
        let any = only(&r, "c1");
        assert_eq!(any.kind, ANY);
        assert_eq!(any.category, "", "Compute and Storage");
        assert_eq!(any.cluster, "c1");
        assert_near(any.adjustment, -1.0, "adjustments sum");
        assert_near(
            any.total_cost(),
            n.total_cost() + d.total_cost(),
            "total cost",
        );
        let r = query(&format!(
            "{DAY_20}&aggregate=cluster&disableAdjustments=true"
        ))
        .run(&sets(&[(20, vec![n.clone(), d.clone()])]), now());
        assert_near(
            only(&r, "c1").total_cost(),
            n.total_cost() + d.total_cost() + 1.0,
            "adjustments zeroed",
        );
    }

    #[test]
    fn keys_join_properties_and_name_missing_values() {
        let mut a = node("a", 20, 24, 8.0, 32.0);
        a.labels.insert("team".into(), "web".into());
        let b = disk("d1", 20, 10.0);
        let days = sets(&[(20, vec![a, b])]);
        let keys = |q: &str| -> Vec<String> {
            query(&format!("{DAY_20}&aggregate={q}")).run(&days, now())[0]
                .assets
                .iter()
                .map(|(k, _)| k.clone())
                .collect()
        };
        let mut k = keys("cluster,type");
        k.sort();
        assert_eq!(k, ["c1/Disk", "c1/Node"]);
        let mut k = keys("label:team,account");
        k.sort();
        assert_eq!(
            k,
            ["__unallocated__/__unallocated__", "web/__unallocated__"]
        );
        let mut k = keys("providerid,Category");
        k.sort();
        assert_eq!(k, ["i-a/Compute", "vol-d1/Storage"]);
    }

    #[test]
    fn filters_apply_before_aggregation() {
        let days = sets(&[(
            20,
            vec![
                node("a", 20, 24, 8.0, 32.0),
                node("b", 20, 24, 4.0, 16.0),
                disk("d1", 20, 10.0),
            ],
        )]);
        let r = query(&format!(
            "{DAY_20}&aggregate=type&filter=assetType:\"node\"+name!:\"b\""
        ))
        .run(&days, now());
        assert_eq!(r[0].assets.len(), 1);
        let n = only(&r, "Node");
        assert_eq!(n.name, "a", "one member: its identity is its own");
        assert_near(n.cpu_cores, 8.0, "cores");
    }

    #[test]
    fn parameters_are_read_or_refused_by_name() {
        let q = query("window=1d&aggregate=type,providerID,label:app.kubernetes.io/name");
        assert_eq!(
            q.aggregate,
            [
                AssetProperty::Type,
                AssetProperty::ProviderId,
                AssetProperty::Label("app_kubernetes_io_name".into())
            ]
        );
        assert_eq!(q.format, Format::Json);
        assert!(!q.accumulate && !q.data_is_map());
        assert_eq!(query("window=1d&format=CSV").format, Format::Csv);
        let err =
            |q: &str| parse_asset_query(&params(q), now(), 100, Dialect::Kubecost).unwrap_err();
        assert_eq!(err("window=1d&format=pdf").param, "format");
        assert_eq!(err("window=1d&aggregate=namespace").param, "aggregate");
        assert_eq!(err("window=1d&aggregate=label:").param, "aggregate");
        assert_eq!(
            err("window=1d&disableAdjustments=2").param,
            "disableAdjustments"
        );
        let e = err("window=1d&filter=namespace:\"a\"");
        assert_eq!(e.param, "filter");
        assert!(e.message.contains("\"namespace\"") && e.message.contains("assetType"));

        let oc = |q: &str| parse_asset_query(&params(q), now(), 100, Dialect::Opencost).unwrap();
        assert!(oc("window=1d").accumulate && oc("window=1d").data_is_map());
        assert!(oc("window=1d&accumulate=true").data_is_map());
        assert!(!oc("window=1d&accumulate=false").data_is_map());

        let w = query("window=1d&filterClusters=c1&filterTypes=Node").warnings;
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("filterClusters, filterTypes are not supported"),
            "{w:?}"
        );
        assert!(query("window=1d&filterClusters=").warnings.is_empty());
    }
}
