//! Queries over loaded sets: parameter parsing, filtering, aggregation, accumulation and idle
//! handling. Pure computation on immutable sets; no I/O.

mod allocations;
mod assets;
pub mod filter;
mod plan;
mod rows;
mod share;
mod v1;
pub mod window;

pub use allocations::{AllocationSets, Answer, Step};
pub use assets::{ANY, AssetProperty, AssetQuery, AssetResult, AssetSets, parse_asset_query};
pub use plan::{Bounds, DEFAULT_HOURLY_RETENTION_HOURS};
pub(crate) use plan::{check_steps, reads_daily, steps, widen};
pub use rows::Rows;
pub use share::{ShareSplit, Sharing};

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};

use crate::model::{Allocation, Props, UNALLOCATED, Window};
use filter::Filter;

/// A bad query parameter: answered with HTTP 400 naming the parameter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct ParamError {
    /// The parameter.
    pub param: &'static str,
    /// What was wrong and what was expected.
    pub message: String,
}

pub(crate) fn bad(param: &'static str, message: impl Into<String>) -> ParamError {
    ParamError {
        param,
        message: message.into(),
    }
}

/// Whose defaults a query takes where a parameter is absent (`--api-defaults`). Explicit
/// parameters always win.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Dialect {
    /// The Kubecost cost-model container's: idle included (`idle=true`), one set per day (per
    /// hour under a day) when not accumulating, `/assets` an array of sets.
    #[default]
    Kubecost,
    /// OpenCost's: idle left out (`includeIdle=false`), one set for the whole window when
    /// neither `accumulate` nor `step` says otherwise, `/assets` one map for the window.
    Opencost,
}

/// One aggregation property.
#[derive(Clone, Debug, PartialEq)]
pub enum AggregateBy {
    /// By cluster (`cluster`).
    Cluster,
    /// By node (`node`).
    Node,
    /// By namespace (`namespace`).
    Namespace,
    /// By controller kind (`controllerKind`).
    ControllerKind,
    /// By controller, keyed `kind:name` (`controller`).
    Controller,
    /// Controllers of one kind only (`deployment`, `statefulset`, ...); others are unallocated.
    ControllerOfKind(&'static str),
    /// By pod (`pod`).
    Pod,
    /// By container (`container`).
    Container,
    /// By the first service selecting the pod (`service`).
    Service,
    /// By the value of the label with this (sanitised) key (`label:<key>`, and the aliases
    /// `department`, `environment`, `owner`, `product`, `team`).
    Label(String),
    /// By the value of the annotation with this (sanitised) key (`annotation:<key>`).
    Annotation(String),
    /// Everything in one bucket.
    All,
}

impl AggregateBy {
    fn parse(s: &str) -> Result<Self, ParamError> {
        let s = s.trim();
        for (prefix, make) in [
            ("label:", AggregateBy::Label as fn(String) -> AggregateBy),
            ("annotation:", AggregateBy::Annotation),
        ] {
            if let Some(k) = s.strip_prefix(prefix) {
                let k = k.trim();
                if k.is_empty() {
                    return Err(bad(
                        "aggregate",
                        format!(
                            "{s:?} names no {}; expected {prefix}<name>",
                            &prefix[..prefix.len() - 1]
                        ),
                    ));
                }
                return Ok(make(filter::sanitize(k)));
            }
        }
        Ok(match s {
            "cluster" => AggregateBy::Cluster,
            "node" => AggregateBy::Node,
            "namespace" => AggregateBy::Namespace,
            "controllerKind" => AggregateBy::ControllerKind,
            "controller" => AggregateBy::Controller,
            "deployment" => AggregateBy::ControllerOfKind("deployment"),
            "statefulset" => AggregateBy::ControllerOfKind("statefulset"),
            "daemonset" => AggregateBy::ControllerOfKind("daemonset"),
            "job" => AggregateBy::ControllerOfKind("job"),
            "pod" => AggregateBy::Pod,
            "container" => AggregateBy::Container,
            "service" => AggregateBy::Service,
            "all" => AggregateBy::All,
            "department" => AggregateBy::Label("department".into()),
            "environment" => AggregateBy::Label("env".into()),
            "owner" => AggregateBy::Label("owner".into()),
            "product" => AggregateBy::Label("app".into()),
            "team" => AggregateBy::Label("team".into()),
            other => {
                return Err(bad(
                    "aggregate",
                    format!(
                        "{other:?} is not an aggregation; expected cluster, node, namespace, controllerKind, controller, service, pod, container, label:<name>, annotation:<name>, deployment, statefulset, daemonset, job, all, or a comma list of them"
                    ),
                ));
            }
        })
    }

    /// The key part and the property it sets on the aggregate.
    fn value(&self, p: &impl Props) -> String {
        let or_unallocated = |s: &str| {
            if s.is_empty() {
                UNALLOCATED.to_string()
            } else {
                s.to_string()
            }
        };
        match self {
            AggregateBy::Cluster => or_unallocated(p.cluster()),
            AggregateBy::Node => or_unallocated(p.node()),
            AggregateBy::Namespace => or_unallocated(p.namespace()),
            AggregateBy::ControllerKind => or_unallocated(p.controller_kind()),
            AggregateBy::Controller if p.controller().is_empty() => UNALLOCATED.to_string(),
            AggregateBy::Controller => format!("{}:{}", p.controller_kind(), p.controller()),
            AggregateBy::ControllerOfKind(k) if p.controller_kind() == *k => {
                or_unallocated(p.controller())
            }
            AggregateBy::ControllerOfKind(_) => UNALLOCATED.to_string(),
            AggregateBy::Pod => or_unallocated(p.pod()),
            AggregateBy::Container => or_unallocated(p.container()),
            AggregateBy::Service => p
                .services()
                .first()
                .map_or(UNALLOCATED.to_string(), Clone::clone),
            AggregateBy::Label(k) => p
                .labels()
                .get(k)
                .map_or(UNALLOCATED.to_string(), Clone::clone),
            AggregateBy::Annotation(k) => p
                .annotations()
                .get(k)
                .map_or(UNALLOCATED.to_string(), Clone::clone),
            AggregateBy::All => String::new(),
        }
    }
}

/// How sets are combined over time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Accumulate {
    /// One set per step.
    None,
    /// One set for the whole window.
    All,
    /// One set per step of this length (`hour`, `day`, `week`).
    Every(Duration),
    /// One set per calendar period of this many months (`month`: 1, `quarter`: 3; the first
    /// and last cut to the window).
    Months(u32),
}

/// How costs are expressed (`costMetric`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum CostMetric {
    /// The cost over the set's window (`cumulative`, the default).
    #[default]
    Cumulative,
    /// The cost per hour of data in the set's window (`hourly`).
    Hourly,
    /// The cost per day (`daily`).
    Daily,
    /// The cost per month of 730 hours (`monthly`).
    Monthly,
}

impl CostMetric {
    /// The factor that turns a cost over `hours` of data into this metric (0 without data).
    pub fn factor(self, hours: f64) -> f64 {
        let per = match self {
            CostMetric::Cumulative => return 1.0,
            CostMetric::Hourly => 1.0,
            CostMetric::Daily => 24.0,
            CostMetric::Monthly => HOURS_PER_MONTH,
        };
        if hours > 0.0 { per / hours } else { 0.0 }
    }
}

/// Hours in Kubecost's month (`shareCost` and `costMetric=monthly`).
pub const HOURS_PER_MONTH: f64 = 730.0;

/// The answer's encoding (`format`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Format {
    /// JSON (the default).
    #[default]
    Json,
    /// CSV (Kubecost's export).
    Csv,
}

/// Reads `format`.
pub(crate) fn parse_format(v: Option<&str>) -> Result<Format, ParamError> {
    match v.map(str::to_ascii_lowercase).as_deref() {
        None | Some("json") => Ok(Format::Json),
        Some("csv") => Ok(Format::Csv),
        Some(other) => Err(bad(
            "format",
            format!("{other:?} is not a format this build writes; expected json or csv"),
        )),
    }
}

/// A parsed `/allocation` query.
#[derive(Clone, Debug)]
pub struct AllocationQuery {
    /// The window asked about (`window`).
    pub window: Window,
    /// Properties to aggregate by, the key joining their values with `/` (`aggregate`);
    /// empty: no aggregation.
    pub aggregate: Vec<AggregateBy>,
    /// How sets are combined over time (`accumulate` or `accumulateBy`).
    pub accumulate: Accumulate,
    /// Length of each output set when not accumulating (`step`); `None`: a day for a window
    /// read from daily sets, else an hour.
    pub step: Option<Duration>,
    /// Whether idle allocations are included (`idle` or `includeIdle`; default true).
    pub idle: bool,
    /// Whether idle cost is spread over the allocations instead of reported apart
    /// (`shareIdle`).
    pub share_idle: bool,
    /// Whether idle is reported per cluster rather than as one allocation (`splitIdle`).
    pub split_idle: bool,
    /// Whether idle is reported per cluster and node (`idleByNode`).
    pub idle_by_node: bool,
    /// Which allocations count (`filter`); `None`: all.
    pub filter: Option<Filter>,
    /// How many allocations of each set to skip, most expensive first (`offset`).
    pub offset: usize,
    /// The most allocations each set returns after `offset` (`limit`); `None`: all.
    pub limit: Option<usize>,
    /// Whether an aggregate also keeps the labels and annotations all its members share
    /// (`includeAggregatedMetadata`).
    pub include_aggregated_metadata: bool,
    /// Costs shared over the other allocations (`shareNamespaces`, `shareLabels`,
    /// `shareCost`, `shareSplit`).
    pub sharing: Sharing,
    /// How costs are expressed (`costMetric`).
    pub cost_metric: CostMetric,
    /// The answer's encoding (`format`).
    pub format: Format,
    /// What the client must know about how the query was read (a widened window, a parameter
    /// that is not supported): written as the envelope's `warning`.
    pub warnings: Vec<String>,
}

/// Parameters Kubecost's allocation API takes that this build reads but does not implement:
/// each present one is named in the answer's `warning`.
const UNSUPPORTED_ALLOCATION_PARAMS: [(&str, &str); 6] = [
    ("external", "out-of-cluster costs are not collected"),
    ("reconcile", "there is no cloud bill to reconcile with"),
    (
        "shareTenancyCosts",
        "cluster-management and attached-disk costs are not shared",
    ),
    (
        "includeProportionalAssetResourceCosts",
        "proportional asset resource costs are not computed",
    ),
    ("sharelb", "load balancer costs are not shared"),
    (
        "resolution",
        "answers come from the stored hourly and daily sets",
    ),
];

/// Reads the parameters of an allocation query. Unknown parameters are ignored, as clients send
/// many Kubecost options this replica does not implement.
pub fn parse_allocation_query(
    params: &HashMap<String, String>,
    now: DateTime<Utc>,
    bounds: impl Into<Bounds>,
    dialect: Dialect,
) -> Result<AllocationQuery, ParamError> {
    let bounds = bounds.into();
    let get = |k: &str| params.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    // Counts and steps are taken exactly as sent: `+1` arrives as " 1" (a `+` in a URL is a
    // space) and must not pass for 1.
    let raw = |k: &str| {
        params
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    };
    let window_text = get("window")
        .ok_or_else(|| bad("window", "is required, e.g. window=7d or window=today"))?;
    let window = window::parse(window_text, now).map_err(|m| bad("window", m))?;
    let mut warnings = Vec::new();
    let (window, widened) = widen(window, now, bounds.hourly_retention);
    warnings.extend(widened);
    let aggregate = match get("aggregate") {
        Some(a) => a
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(AggregateBy::parse)
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let step = raw("step").map(parse_step).transpose()?;
    let accumulate = match (get("accumulate"), get("accumulateBy")) {
        (Some(v), _) => parse_accumulate("accumulate", v)?,
        (None, Some(v)) => parse_accumulate("accumulateBy", v)?,
        // OpenCost's step defaults to the window: one set.
        (None, None) if dialect == Dialect::Opencost && step.is_none() => Accumulate::All,
        (None, None) => Accumulate::None,
    };
    // OpenCost: `accumulate=false` without a step is still one set for the window.
    let accumulate =
        if dialect == Dialect::Opencost && step.is_none() && accumulate == Accumulate::None {
            Accumulate::All
        } else {
            accumulate
        };
    let idle = match (get("idle"), get("includeIdle")) {
        (Some(v), _) => parse_bool("idle", v)?,
        (None, Some(v)) => parse_bool("includeIdle", v)?,
        (None, None) => dialect == Dialect::Kubecost,
    };
    let flag = |k: &'static str| {
        get(k)
            .map(|v| parse_bool(k, v))
            .transpose()
            .map(|b| b.unwrap_or(false))
    };
    let filter = match get("filter") {
        Some(text) => Some(filter::parse(text).map_err(|m| bad("filter", m))?),
        None => match v1::to_v2(params).map_err(|(p, m)| bad(p, m))? {
            Some(text) => Some(filter::parse(&text).map_err(|m| bad("filter", m))?),
            None => None,
        },
    };
    let cost_metric = match get("costMetric").map(str::to_ascii_lowercase).as_deref() {
        None | Some("cumulative") => CostMetric::Cumulative,
        Some("hourly") => CostMetric::Hourly,
        Some("daily") => CostMetric::Daily,
        Some("monthly") => CostMetric::Monthly,
        Some(other) => {
            return Err(bad(
                "costMetric",
                format!(
                    "{other:?} is not a cost metric; expected cumulative, hourly, daily or monthly"
                ),
            ));
        }
    };
    if step.is_some() && accumulate != Accumulate::None {
        warnings
            .push("step was ignored: accumulate (or accumulateBy) decides the sets".to_string());
    }
    if get("filter").is_some() && v1::to_v2(params).ok().flatten().is_some() {
        warnings.push(
            "the v1 filter parameters (filterNamespaces, ...) were ignored: filter is present and wins".to_string(),
        );
    }
    for (param, why) in UNSUPPORTED_ALLOCATION_PARAMS {
        if params.contains_key(param) {
            warnings.push(format!(
                "{param} is not supported by this build and was ignored: {why}"
            ));
        }
    }
    let number = |k: &'static str| raw(k).map(|v| parse_count(k, v)).transpose();
    let q = AllocationQuery {
        window,
        aggregate,
        accumulate,
        step,
        idle,
        share_idle: flag("shareIdle")?,
        split_idle: flag("splitIdle")?,
        idle_by_node: flag("idleByNode")?,
        filter,
        offset: number("offset")?.unwrap_or(0),
        limit: number("limit")?,
        include_aggregated_metadata: flag("includeAggregatedMetadata")?,
        sharing: Sharing::parse(params)?,
        cost_metric,
        format: parse_format(get("format"))?,
        warnings,
    };
    check_steps(
        window_text,
        q.window,
        q.step_size(now),
        now,
        bounds.max_steps,
    )?;
    Ok(q)
}

/// A count: plain ASCII digits only (no sign, no spaces), as Kubecost's Go parser takes it.
pub(crate) fn parse_count(param: &'static str, v: &str) -> Result<usize, ParamError> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(
            param,
            format!("{v:?} is not a non-negative whole number{}", plus_hint(v)),
        ));
    }
    v.parse::<usize>()
        .map_err(|_| bad(param, format!("{v:?} is too large")))
}

pub(crate) fn parse_bool(param: &'static str, v: &str) -> Result<bool, ParamError> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(bad(
            param,
            format!("{v:?} is not a boolean; expected true or false"),
        )),
    }
}

fn parse_accumulate(param: &'static str, v: &str) -> Result<Accumulate, ParamError> {
    Ok(match v.to_ascii_lowercase().as_str() {
        "true" | "all" => Accumulate::All,
        "false" | "none" => Accumulate::None,
        "hour" => Accumulate::Every(Duration::hours(1)),
        "day" => Accumulate::Every(Duration::days(1)),
        "week" => Accumulate::Every(Duration::weeks(1)),
        "month" => Accumulate::Months(1),
        "quarter" => Accumulate::Months(3),
        _ => {
            return Err(bad(
                param,
                format!(
                    "{v:?} is not valid; expected true, false, hour, day, week, month or quarter"
                ),
            ));
        }
    })
}

/// A hint for a value with spaces: a `+` in a URL arrives as a space.
fn plus_hint(v: &str) -> &'static str {
    if v.contains(' ') {
        " (a '+' in a URL means a space; no sign is accepted)"
    } else {
        ""
    }
}

fn parse_step(v: &str) -> Result<Duration, ParamError> {
    let err = || {
        bad(
            "step",
            format!(
                "{v:?} is not a step; expected a whole number of hours, days or weeks such as 1h, 1d or 1w{}",
                plus_hint(v)
            ),
        )
    };
    let unit = match v.chars().last() {
        Some('h') => Duration::hours(1),
        Some('d') => Duration::days(1),
        Some('w') => Duration::weeks(1),
        _ => return Err(err()),
    };
    let digits = &v[..v.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    let n: i32 = digits.parse().map_err(|_| err())?;
    if n <= 0 || n > 10_000 {
        return Err(err());
    }
    Ok(unit * n)
}

/// One output set: the step's window and its allocations, most expensive first.
#[derive(Clone, Debug, PartialEq)]
pub struct AllocationResult {
    /// The step's window.
    pub window: Window,
    /// The step's allocations after filtering, aggregation and idle handling, most expensive
    /// first, paged.
    pub allocations: Vec<Allocation>,
}

/// Sorts by cost, most expensive first (then by name, for stable output), and applies
/// `offset`/`limit`: Kubecost's paging.
pub(crate) fn rank_and_page<T>(
    mut items: Vec<T>,
    by: impl Fn(&T) -> (f64, &str),
    offset: usize,
    limit: Option<usize>,
) -> Vec<T> {
    items.sort_by(|a, b| {
        let ((ca, na), (cb, nb)) = (by(a), by(b));
        cb.total_cmp(&ca).then_with(|| na.cmp(nb))
    });
    items
        .into_iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .collect()
}

/// The default for the most sets one query may return (`--max-query-steps`).
pub const DEFAULT_MAX_STEPS: usize = 10_000;

/// The query was cancelled (its client went away or its deadline passed) before it finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("query cancelled")]
pub struct Cancelled;

/// How many rows are scanned between two looks at the cancellation token.
const CANCEL_CHECK_ROWS: usize = 1024;

/// Estimated work of a query, in rows scanned (plus rows encoded, weighted), before it runs:
/// what admission control sorts cheap queries from heavy ones by.
pub type Cost = u64;

/// What one output row weighs against one row scanned. Scanning is a few hundred nanoseconds;
/// an output row is rebuilt from its rows and formatted as about 1.5 KB of JSON (microseconds),
/// and it holds a response open while it is sent: 20,000 output rows weigh as much as five
/// million rows scanned, so a few big answers are sorted apart from the cheap ones.
pub(crate) const ENCODE_WEIGHT: u64 = 250;
