//! Asset queries: `/assets` parameters, filtering, aggregation and accumulation over the
//! loaded asset sets.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{
    Cancelled, Cost, Dialect, ENCODE_WEIGHT, ParamError, bad, check_steps, parse_bool, parse_count,
    rank_and_page, reads_daily, steps, window,
};
use crate::model::{Asset, AssetSet, Resolution, UNALLOCATED, Window};

/// A parsed `/assets` query.
#[derive(Clone, Debug)]
pub struct AssetQuery {
    /// The window asked about (`window`).
    pub window: Window,
    /// Asset properties to aggregate by (`type`, `cluster`, `provider`, `providerID`,
    /// `category`, `service`, `account`, `project`), the key joining their values with `/`
    /// (`aggregate`); empty: no aggregation.
    pub aggregate: Vec<String>,
    /// Whether the whole window is one set rather than one per day or hour (`accumulate`).
    pub accumulate: bool,
    /// How many assets of each set to skip, most expensive first (`offset`).
    pub offset: usize,
    /// The most assets each set returns after `offset` (`limit`); `None`: all.
    pub limit: Option<usize>,
    /// The dialect the query was read in: it decides the shape of the answer.
    pub dialect: Dialect,
    /// What the client must know about how the query was read: the envelope's `warning`.
    pub warnings: Vec<String>,
}

/// Reads the parameters of an asset query.
pub fn parse_asset_query(
    params: &HashMap<String, String>,
    now: DateTime<Utc>,
    max_steps: usize,
    dialect: Dialect,
) -> Result<AssetQuery, ParamError> {
    let get = |k: &str| params.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let raw = |k: &str| {
        params
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    };
    let window_text = get("window").ok_or_else(|| bad("window", "is required, e.g. window=7d"))?;
    let window = window::parse(window_text, now).map_err(|m| bad("window", m))?;
    let mut aggregate = Vec::new();
    for a in get("aggregate")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match a {
            "type" | "cluster" | "provider" | "providerID" | "providerid" | "category"
            | "service" | "account" | "project" => {
                aggregate.push(a.to_string());
            }
            other => {
                return Err(bad(
                    "aggregate",
                    format!(
                        "{other:?} is not an asset aggregation; expected type, cluster, provider, providerID, category, service, account or project"
                    ),
                ));
            }
        }
    }
    let accumulate = get("accumulate")
        .map(|v| parse_bool("accumulate", v))
        .transpose()?
        .unwrap_or(false);
    let number = |k: &'static str| raw(k).map(|v| parse_count(k, v)).transpose();
    let q = AssetQuery {
        window,
        aggregate,
        accumulate,
        offset: number("offset")?.unwrap_or(0),
        limit: number("limit")?,
        dialect,
        warnings: Vec::new(),
    };
    let (resolution, _) = q.resolution(now);
    let step = (!q.accumulate).then(|| resolution.duration());
    check_steps(window_text, q.window, step, now, max_steps)?;
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
    pub fn run(
        &self,
        sets: &BTreeMap<(Resolution, DateTime<Utc>), Arc<AssetSet>>,
        now: DateTime<Utc>,
    ) -> Vec<AssetResult> {
        let mut out = Vec::new();
        let never = CancellationToken::new();
        self.run_each(sets, now, &never, |r| {
            out.push(r);
            Ok::<(), Cancelled>(())
        })
        .expect("an uncancelled query runs to the end");
        out
    }

    /// Runs the query one step at a time (see [`AllocationQuery::run_each`]).
    pub fn run_each<E: From<Cancelled>>(
        &self,
        sets: &BTreeMap<(Resolution, DateTime<Utc>), Arc<AssetSet>>,
        now: DateTime<Utc>,
        cancel: &CancellationToken,
        mut emit: impl FnMut(AssetResult) -> Result<(), E>,
    ) -> Result<(), E> {
        let (res, steps) = self.plan(now);
        for step in steps {
            let mut acc: BTreeMap<String, Asset> = BTreeMap::new();
            for (_, set) in sets.range((res, step.start)..(res, step.end)) {
                if cancel.is_cancelled() {
                    return Err(Cancelled.into());
                }
                for a in &set.assets {
                    let key = self.key(a);
                    match acc.get_mut(&key) {
                        Some(e) => add_asset(e, a),
                        None => {
                            acc.insert(key, a.clone());
                        }
                    }
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
    pub fn cost(
        &self,
        sets: &BTreeMap<(Resolution, DateTime<Utc>), Arc<AssetSet>>,
        now: DateTime<Utc>,
    ) -> Cost {
        let (res, steps) = self.plan(now);
        let rows: u64 = steps
            .iter()
            .flat_map(|w| sets.range((res, w.start)..(res, w.end)))
            .map(|(_, s)| s.assets.len() as u64)
            .sum();
        let encoded = if self.aggregate.is_empty() { rows } else { 0 };
        rows.saturating_add(encoded.saturating_mul(ENCODE_WEIGHT))
            .saturating_add(steps.len() as u64)
    }

    fn key(&self, a: &Asset) -> String {
        if self.aggregate.is_empty() {
            return a.key();
        }
        self.aggregate
            .iter()
            .map(|g| match g.as_str() {
                "type" => a.kind.clone(),
                "cluster" => a.cluster.clone(),
                "provider" => a.provider.clone(),
                "providerID" | "providerid" => a.provider_id.clone(),
                "category" => a.category.clone(),
                "service" => a.service.clone(),
                _ => String::new(),
            })
            .map(|v| {
                if v.is_empty() {
                    UNALLOCATED.to_string()
                } else {
                    v
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }
}

fn add_asset(into: &mut Asset, a: &Asset) {
    into.window = match (into.window, a.window) {
        (Some(x), Some(y)) => Some(x.union(&y)),
        (x, y) => x.or(y),
    };
    into.start = into.start.min(a.start).or(a.start);
    into.end = into.end.max(a.end);
    into.cpu_core_hours += a.cpu_core_hours;
    into.ram_byte_hours += a.ram_byte_hours;
    into.gpu_hours += a.gpu_hours;
    into.byte_hours += a.byte_hours;
    into.cpu_cost += a.cpu_cost;
    into.ram_cost += a.ram_cost;
    into.gpu_cost += a.gpu_cost;
    into.cost += a.cost;
    into.adjustment += a.adjustment;
    if into.kind != a.kind {
        into.kind = "Any".into();
    }
}
