//! Queries over loaded sets: parameter parsing, filtering, aggregation, accumulation and idle
//! handling. Pure computation on immutable sets; no I/O.

mod allocations;
mod assets;
pub mod filter;
mod share;
mod v1;
pub mod window;

pub use allocations::AllocationSets;
pub use assets::{ANY, AssetProperty, AssetQuery, AssetResult, parse_asset_query};
pub use share::{ShareSplit, Sharing};

use std::collections::HashMap;

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::model::{Allocation, Props, Resolution, UNALLOCATED, Window};
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

/// What bounds the reading of a query: the most sets it may return, and how far back hourly
/// sets are kept (`--hourly-retention`): an unaligned window reaching further back is read
/// from daily sets, or it would silently miss the hours already pruned.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds {
    /// The most sets one query may return (`--max-query-steps`).
    pub max_steps: usize,
    /// How long hourly sets are kept.
    pub hourly_retention: Duration,
}

/// Kubecost's default hourly retention, 49 hours.
pub const DEFAULT_HOURLY_RETENTION_HOURS: i64 = 49;

impl From<usize> for Bounds {
    fn from(max_steps: usize) -> Self {
        Bounds {
            max_steps,
            hourly_retention: Duration::hours(DEFAULT_HOURLY_RETENTION_HOURS),
        }
    }
}

/// The window widened to whole sets of the resolution it is read at: start rounded down, end
/// rounded up (an end at or after `now` is left as it is: the last set is the partial one).
/// Hourly sets serve a window only if its start is within the hourly retention (less the hour
/// being pruned); an older one is widened to whole days. Also returns a warning when the window
/// changed.
pub(crate) fn widen(
    window: Window,
    now: DateTime<Utc>,
    hourly_retention: Duration,
) -> (Window, Option<String>) {
    if reads_daily(window, now) {
        return (window, None);
    }
    let oldest_hour = now - hourly_retention + Duration::hours(1);
    let (unit, what) = if window.start >= oldest_hour {
        (Duration::hours(1), "hourly sets")
    } else {
        (
            Duration::days(1),
            "daily sets (it reaches back past the hourly retention)",
        )
    };
    let secs = unit.num_seconds();
    let floor = |t: DateTime<Utc>| {
        DateTime::from_timestamp(t.timestamp().div_euclid(secs) * secs, 0).unwrap_or(t)
    };
    let start = floor(window.start);
    let end = if window.end >= now || floor(window.end) == window.end {
        window.end
    } else {
        floor(window.end) + unit
    };
    let widened = Window::new(start, end);
    if widened == window {
        return (window, None);
    }
    let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let warning = format!(
        "window {}/{} was widened to {}/{}: it does not fall on the stored {what}, so the sets that cover it are served",
        fmt(window.start),
        fmt(window.end),
        fmt(widened.start),
        fmt(widened.end)
    );
    (widened, Some(warning))
}

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

/// Refuses, before any work, a query that would produce more than `max_steps` sets.
pub(crate) fn check_steps(
    window_text: &str,
    window: Window,
    step: Option<Duration>,
    now: DateTime<Utc>,
    max_steps: usize,
) -> Result<(), ParamError> {
    let Some(step) = step else { return Ok(()) };
    let span = window.end.min(now + step) - window.start;
    let steps = span.num_seconds().max(0) / step.num_seconds().max(1);
    if steps > i64::try_from(max_steps).unwrap_or(i64::MAX) {
        return Err(bad(
            "window",
            format!(
                "{window_text:?} in steps of {} gives {steps} sets, more than the {max_steps} one query may return (--max-query-steps); use a shorter window, a longer step, or accumulate=true",
                humantime::format_duration(step.to_std().unwrap_or_default())
            ),
        ));
    }
    Ok(())
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

fn day_aligned(t: DateTime<Utc>) -> bool {
    t.timestamp().rem_euclid(86_400) == 0 && t.timestamp_subsec_nanos() == 0
}

/// Whether a window is read from daily sets: it starts at midnight and ends at midnight or
/// runs up to now (`week`, `month`: today's set is the partial day).
pub(crate) fn reads_daily(w: Window, now: DateTime<Utc>) -> bool {
    day_aligned(w.start) && (day_aligned(w.end) || w.end >= now)
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

/// Consecutive steps of `step` from the window's start, the last one cut at its end, none
/// starting after `now`.
pub(crate) fn steps(window: Window, step: Duration, now: DateTime<Utc>) -> Vec<Window> {
    let mut out = Vec::new();
    let mut t = window.start;
    while t < window.end && t <= now {
        out.push(Window::new(t, (t + step).min(window.end)));
        t += step;
    }
    out
}

/// Steps of `months` calendar months (UTC), the first and last cut to the window.
fn calendar_steps(window: Window, months: u32, now: DateTime<Utc>) -> Vec<Window> {
    use chrono::Datelike;
    let period_start = |t: DateTime<Utc>| {
        let m0 = t.month0() / months * months;
        Utc.with_ymd_and_hms(t.year(), m0 + 1, 1, 0, 0, 0)
            .single()
            .expect("the first of a month exists")
    };
    let next = |t: DateTime<Utc>| {
        t.checked_add_months(chrono::Months::new(months))
            .expect("months within chrono's range")
    };
    let mut out = Vec::new();
    let mut t = window.start;
    while t < window.end && t <= now {
        let end = next(period_start(t)).min(window.end);
        out.push(Window::new(t, end));
        t = end;
    }
    out
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
/// an output row is a JSON allocation of about 1.5 KB to format and hold until it is sent, so
/// its weight is set by memory as much as by time: 20,000 output rows weigh as much as five
/// million rows scanned.
pub(crate) const ENCODE_WEIGHT: u64 = 250;

impl AllocationQuery {
    /// The step between output sets (`None`: one set for the whole window).
    fn step_size(&self, now: DateTime<Utc>) -> Option<Duration> {
        let daily_window = reads_daily(self.window, now);
        match self.accumulate {
            Accumulate::All => None,
            Accumulate::Every(d) => Some(d),
            // The shortest month: enough to bound the number of sets and choose the resolution.
            Accumulate::Months(n) => Some(Duration::days(28 * i64::from(n))),
            Accumulate::None => Some(self.step.unwrap_or(if daily_window {
                Duration::days(1)
            } else {
                Duration::hours(1)
            })),
        }
    }

    /// The resolution of stored sets this query reads, and its steps.
    pub fn plan(&self, now: DateTime<Utc>) -> (Resolution, Vec<Window>) {
        let daily_window = reads_daily(self.window, now);
        let step = self.step_size(now);
        let resolution = match step {
            Some(s) if s.num_seconds() % 86_400 == 0 && daily_window => Resolution::Day,
            None if daily_window => Resolution::Day,
            _ => Resolution::Hour,
        };
        let steps = match (self.accumulate, step) {
            (Accumulate::Months(n), _) => calendar_steps(self.window, n, now),
            (_, None) => vec![self.window],
            (_, Some(s)) => steps(self.window, s, now),
        };
        (resolution, steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn params(q: &str) -> HashMap<String, String> {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn windows_up_to_now_read_daily_sets() {
        let now = Utc.with_ymd_and_hms(2026, 11, 24, 10, 30, 0).unwrap();
        for w in ["week", "month", "7d", "today", "lastweek"] {
            let q = parse_allocation_query(
                &params(&format!("window={w}")),
                now,
                DEFAULT_MAX_STEPS,
                Dialect::Kubecost,
            )
            .unwrap();
            assert_eq!(q.plan(now).0, Resolution::Day, "{w}");
        }
        for w in ["24h", "48h", "2026-11-23T06:00:00Z,2026-11-23T18:00:00Z"] {
            let q = parse_allocation_query(
                &params(&format!("window={w}")),
                now,
                DEFAULT_MAX_STEPS,
                Dialect::Kubecost,
            )
            .unwrap();
            assert_eq!(q.plan(now).0, Resolution::Hour, "{w}");
        }
        let (_, steps) = parse_allocation_query(
            &params("window=month"),
            now,
            DEFAULT_MAX_STEPS,
            Dialect::Kubecost,
        )
        .unwrap()
        .plan(now);
        assert_eq!(
            steps.len(),
            24,
            "one daily step per day of the month so far, today's partial"
        );
    }

    #[test]
    fn huge_windows_are_refused_before_any_work() {
        let now = Utc.with_ymd_and_hms(2026, 11, 24, 10, 30, 0).unwrap();
        let e = parse_allocation_query(
            &params("window=0001-01-01T00:00:00Z,2026-11-24T10:00:00Z"),
            now,
            DEFAULT_MAX_STEPS,
            Dialect::Kubecost,
        )
        .unwrap_err();
        assert_eq!(e.param, "window");
        let ok = parse_allocation_query(
            &params("window=0001-01-01T00:00:00Z,2026-11-24T10:00:00Z&accumulate=true"),
            now,
            DEFAULT_MAX_STEPS,
            Dialect::Kubecost,
        );
        assert!(
            ok.is_ok(),
            "one accumulated set is cheap whatever the window"
        );
    }
}
