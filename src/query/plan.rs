//! Window planning, in one place: which stored sets (daily or hourly) a query reads, how its
//! window is widened to whole sets, and the steps its answer is cut into.

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::{Accumulate, AllocationQuery, ParamError, bad};
use crate::model::{Resolution, Window};

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

fn day_aligned(t: DateTime<Utc>) -> bool {
    t.timestamp().rem_euclid(86_400) == 0 && t.timestamp_subsec_nanos() == 0
}

/// Whether a window is read from daily sets: it starts at midnight and ends at midnight or
/// runs up to now (`week`, `month`: today's set is the partial day).
pub(crate) fn reads_daily(w: Window, now: DateTime<Utc>) -> bool {
    day_aligned(w.start) && (day_aligned(w.end) || w.end >= now)
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

impl AllocationQuery {
    /// The step between output sets (`None`: one set for the whole window).
    pub(super) fn step_size(&self, now: DateTime<Utc>) -> Option<Duration> {
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
    use super::super::*;
    use crate::model::Resolution;
    use chrono::TimeZone;
    use std::collections::HashMap;

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
