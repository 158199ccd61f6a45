//! Time windows and the two ETL resolutions.

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::{Deserialize, Serialize};

/// A half-open time interval `[start, end)` in UTC, serialised as OpenCost does: `{start, end}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Window {
    /// Inclusive start.
    pub start: DateTime<Utc>,
    /// Exclusive end.
    pub end: DateTime<Utc>,
}

impl Window {
    /// A window; callers guarantee `start <= end`.
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        debug_assert!(start <= end, "window start after end");
        Self { start, end }
    }

    /// Length of the window.
    pub fn duration(&self) -> Duration {
        self.end - self.start
    }

    /// Length in minutes, as a float (OpenCost's `minutes`).
    pub fn minutes(&self) -> f64 {
        self.duration().num_milliseconds() as f64 / 60_000.0
    }

    /// Length in hours, as a float.
    pub fn hours(&self) -> f64 {
        self.minutes() / 60.0
    }

    /// The overlap of two windows, if any time is shared.
    pub fn intersect(&self, other: &Window) -> Option<Window> {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        (start < end).then(|| Window::new(start, end))
    }

    /// The smallest window that covers both.
    pub fn union(&self, other: &Window) -> Window {
        Window::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// The two resolutions the ETL keeps sets at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Resolution {
    /// One set per hour.
    #[serde(rename = "1h")]
    Hour,
    /// One set per UTC day.
    #[serde(rename = "1d")]
    Day,
}

impl Resolution {
    /// Both resolutions, finest first.
    pub const ALL: [Resolution; 2] = [Resolution::Hour, Resolution::Day];

    /// The length of one window at this resolution.
    pub fn duration(self) -> Duration {
        match self {
            Resolution::Hour => Duration::hours(1),
            Resolution::Day => Duration::days(1),
        }
    }

    /// `1h` or `1d`, the directory name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Hour => "1h",
            Resolution::Day => "1d",
        }
    }

    /// The window of this resolution that contains `t`.
    pub fn window_containing(self, t: DateTime<Utc>) -> Window {
        let start = t
            .duration_trunc(self.duration())
            .expect("hour and day truncation of a UTC time cannot overflow");
        Window::new(start, start + self.duration())
    }
}

impl std::fmt::Display for Resolution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, h, m, 0).unwrap()
    }

    #[test]
    fn intersect_and_union() {
        let a = Window::new(t(1, 0), t(3, 0));
        let b = Window::new(t(2, 0), t(4, 0));
        assert_eq!(a.intersect(&b), Some(Window::new(t(2, 0), t(3, 0))));
        assert_eq!(a.union(&b), Window::new(t(1, 0), t(4, 0)));
        let c = Window::new(t(3, 0), t(5, 0));
        assert_eq!(a.intersect(&c), None, "touching windows share no time");
    }

    #[test]
    fn window_containing_truncates() {
        let w = Resolution::Hour.window_containing(t(5, 42));
        assert_eq!(w, Window::new(t(5, 0), t(6, 0)));
        let d = Resolution::Day.window_containing(t(5, 42));
        assert_eq!(d.start, t(0, 0));
        assert_eq!(d.hours(), 24.0);
    }
}
