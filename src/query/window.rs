//! The `window` parameter: Kubecost's keywords, durations with OpenCost's rounding, offsets,
//! Unix and RFC 3339 pairs. Windows are in UTC.

use chrono::{DateTime, Datelike, Duration, DurationRound, TimeZone, Utc};

use crate::model::Window;

/// Parses `window` relative to `now`. The error says what was expected.
pub fn parse(text: &str, now: DateTime<Utc>) -> Result<Window, String> {
    let s = text.trim();
    let day = Duration::days(1);
    let today = now.duration_trunc(day).expect("day truncation");
    let w = match s {
        "today" | "day" => Window::new(today, today + day),
        "yesterday" => Window::new(today - day, today),
        "week" => Window::new(
            today - day * today.weekday().num_days_from_sunday() as i32,
            now,
        ),
        "lastweek" => {
            let this_week = today - day * today.weekday().num_days_from_sunday() as i32;
            Window::new(this_week - day * 7, this_week)
        }
        "month" => Window::new(first_of_month(today.year(), today.month()), now),
        "lastmonth" => {
            let this = first_of_month(today.year(), today.month());
            let prev = this - day;
            Window::new(first_of_month(prev.year(), prev.month()), this)
        }
        _ => {
            if let Some((dur, offset)) = s.split_once(" offset ") {
                let (n, unit) = duration(dur.trim()).ok_or_else(|| expected(text))?;
                let (on, ounit) = duration(offset.trim()).ok_or_else(|| expected(text))?;
                let end = now - ounit * on;
                Window::new(end - unit * n, end)
            } else if let Some((n, unit)) = duration(s) {
                let end = now.duration_trunc(unit).expect("unit truncation") + unit;
                Window::new(end - unit * n, end)
            } else if let Some((a, b)) = s
                .split_once(',')
                .or_else(|| s.split_once('|'))
                .or_else(|| unix_dash(s))
            {
                let start = timestamp(a.trim()).ok_or_else(|| expected(text))?;
                let end = timestamp(b.trim()).ok_or_else(|| expected(text))?;
                if start >= end {
                    return Err(format!("window {text:?}: start must be before end"));
                }
                Window::new(start, end)
            } else {
                return Err(expected(text));
            }
        }
    };
    Ok(w)
}

fn expected(text: &str) -> String {
    format!(
        "window {text:?} is not valid: expected today, yesterday, week, lastweek, month, lastmonth, a duration such as 24h, 7d or 2w (optionally \"<duration> offset <duration>\"), or a start,end pair of RFC 3339 times or Unix seconds"
    )
}

fn first_of_month(year: i32, month: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .expect("the first of a month exists")
}

/// `^(\d+)(m|h|d|w)$` → (count, unit).
fn duration(s: &str) -> Option<(i32, Duration)> {
    let unit = match s.chars().last()? {
        'm' => Duration::minutes(1),
        'h' => Duration::hours(1),
        'd' => Duration::days(1),
        'w' => Duration::weeks(1),
        _ => return None,
    };
    let digits = &s[..s.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i32 = digits.parse().ok()?;
    // Bound the span so arithmetic cannot overflow: 100 years is far past any retention.
    (n > 0 && unit * n <= Duration::days(36_600)).then_some((n, unit))
}

fn unix_dash(s: &str) -> Option<(&str, &str)> {
    let (a, b) = s.split_once('-')?;
    (a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit()))
        .then_some((a, b))
}

fn timestamp(s: &str) -> Option<DateTime<Utc>> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return Utc.timestamp_opt(s.parse().ok()?, 0).single();
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        // A Tuesday.
        Utc.with_ymd_and_hms(2026, 11, 24, 10, 30, 0).unwrap()
    }
    fn at(d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, h, 0, 0).unwrap()
    }

    #[test]
    fn keywords() {
        assert_eq!(
            parse("today", now()).unwrap(),
            Window::new(at(24, 0), at(25, 0))
        );
        assert_eq!(
            parse("yesterday", now()).unwrap(),
            Window::new(at(23, 0), at(24, 0))
        );
        assert_eq!(parse("week", now()).unwrap(), Window::new(at(22, 0), now()));
        assert_eq!(
            parse("lastweek", now()).unwrap(),
            Window::new(at(15, 0), at(22, 0))
        );
        assert_eq!(parse("month", now()).unwrap(), Window::new(at(1, 0), now()));
    }

    #[test]
    fn durations_round_to_the_next_unit() {
        assert_eq!(
            parse("7d", now()).unwrap(),
            Window::new(at(18, 0), at(25, 0))
        );
        assert_eq!(
            parse("1d", now()).unwrap(),
            Window::new(at(24, 0), at(25, 0))
        );
        assert_eq!(
            parse("24h", now()).unwrap(),
            Window::new(at(23, 11), at(24, 11))
        );
        assert_eq!(parse("48h", now()).unwrap().duration(), Duration::hours(48));
        assert_eq!(
            parse("2h offset 1h", now()).unwrap(),
            Window::new(now() - Duration::hours(3), now() - Duration::hours(1))
        );
    }

    #[test]
    fn pairs() {
        let w = parse("2026-11-20T00:00:00Z,2026-11-22T00:00:00Z", now()).unwrap();
        assert_eq!(w, Window::new(at(20, 0), at(22, 0)));
        let u = parse(
            &format!("{},{}", at(20, 0).timestamp(), at(22, 0).timestamp()),
            now(),
        )
        .unwrap();
        assert_eq!(u, w);
        assert!(
            parse("2026-11-22T00:00:00Z,2026-11-20T00:00:00Z", now())
                .unwrap_err()
                .contains("before")
        );
    }

    #[test]
    fn garbage_is_rejected_with_the_grammar() {
        for bad in [
            "",
            "7x",
            "d",
            "-1d",
            "0h",
            "yesterdayy",
            "2026-11-20,nope",
            "99999999999d",
        ] {
            let e = parse(bad, now()).unwrap_err();
            assert!(e.contains("window"), "{bad}: {e}");
        }
    }
}
