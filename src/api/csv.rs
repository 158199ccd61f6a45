//! Kubecost's CSV exports (`format=csv`): one header row, then one row per asset (or
//! allocation) per set, quoted as RFC 4180 says (a field holding a comma, a double quote or a
//! line break is double-quoted, its quotes doubled; lines end in CRLF). Numbers are written as
//! the JSON writes them (5 decimals, see [`json::F`]); a number the JSON writes as `null` (NaN,
//! infinite) is an empty field. Bodies are built one set at a time and refuse to grow past
//! their limit, as the JSON [`json::Body`] does.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};

use super::json::{self, TooLarge};
use crate::model::{Allocation, Asset, Window};
use crate::query::{AllocationResult, AssetResult, Rows};
use tokio_util::sync::CancellationToken;

/// The header of the asset export.
pub const ASSET_HEADER: [&str; 21] = [
    "windowStart",
    "windowEnd",
    "key",
    "type",
    "name",
    "cluster",
    "provider",
    "providerID",
    "category",
    "service",
    "cpuCores",
    "ramBytes",
    "gpuCount",
    "bytes",
    "minutes",
    "cpuCost",
    "gpuCost",
    "ramCost",
    "cost",
    "adjustment",
    "totalCost",
];

/// The header of the allocation export.
pub const ALLOCATION_HEADER: [&str; 31] = [
    "windowStart",
    "windowEnd",
    "name",
    "cluster",
    "node",
    "namespace",
    "controllerKind",
    "controller",
    "pod",
    "container",
    "minutes",
    "cpuCoreRequestAverage",
    "cpuCoreUsageAverage",
    "cpuCoreHours",
    "cpuCost",
    "gpuHours",
    "gpuCost",
    "ramByteRequestAverage",
    "ramByteUsageAverage",
    "ramByteHours",
    "ramCost",
    "pvByteHours",
    "pvCost",
    "networkCost",
    "loadBalancerCost",
    "sharedCost",
    "externalCost",
    "totalCost",
    "cpuEfficiency",
    "ramEfficiency",
    "totalEfficiency",
];

/// One field of a row.
enum Cell<'a> {
    Text(&'a str),
    Num(f64),
}

/// A CSV body that may grow to a limit.
pub struct Csv {
    buf: Vec<u8>,
    limit: usize,
    line: String,
}

impl Csv {
    /// A body with this header that may grow to `limit` bytes.
    fn with_header(header: &[&str], limit: usize) -> Result<Self, TooLarge> {
        let mut c = Self {
            buf: Vec::new(),
            limit,
            line: String::new(),
        };
        c.row(header.iter().map(|h| Cell::Text(h)))?;
        Ok(c)
    }

    /// An asset export holding only its header.
    pub fn assets(limit: usize) -> Result<Self, TooLarge> {
        Self::with_header(&ASSET_HEADER, limit)
    }

    /// An allocation export holding only its header.
    pub fn allocations(limit: usize) -> Result<Self, TooLarge> {
        Self::with_header(&ALLOCATION_HEADER, limit)
    }

    fn row<'a>(&mut self, cells: impl IntoIterator<Item = Cell<'a>>) -> Result<(), TooLarge> {
        self.line.clear();
        for (i, cell) in cells.into_iter().enumerate() {
            if i > 0 {
                self.line.push(',');
            }
            match cell {
                Cell::Text(t) => quote(&mut self.line, t),
                Cell::Num(x) => number(&mut self.line, x),
            }
        }
        self.line.push_str("\r\n");
        if self.buf.len() + self.line.len() > self.limit {
            return Err(TooLarge { limit: self.limit });
        }
        self.buf.extend_from_slice(self.line.as_bytes());
        Ok(())
    }

    /// Appends one asset set's rows.
    pub fn asset_set(&mut self, r: &AssetResult) -> Result<(), TooLarge> {
        let (start, end) = times(r.window);
        for (key, a) in &r.assets {
            self.asset(&start, &end, key, a)?;
        }
        Ok(())
    }

    fn asset(&mut self, start: &str, end: &str, key: &str, a: &Asset) -> Result<(), TooLarge> {
        use Cell::{Num, Text};
        self.row([
            Text(start),
            Text(end),
            Text(key),
            Text(&a.kind),
            Text(&a.name),
            Text(&a.cluster),
            Text(&a.provider),
            Text(&a.provider_id),
            Text(&a.category),
            Text(&a.service),
            Num(a.cpu_cores),
            Num(a.ram_bytes),
            Num(a.gpu_count),
            Num(a.bytes),
            Num(a.minutes()),
            Num(a.cpu_cost),
            Num(a.gpu_cost),
            Num(a.ram_cost),
            Num(a.cost),
            Num(a.adjustment),
            Num(a.total_cost()),
        ])
    }

    /// Appends one allocation set's rows.
    pub fn allocation_set(&mut self, r: &AllocationResult) -> Result<(), TooLarge> {
        let (start, end) = times(r.window);
        for a in &r.allocations {
            self.allocation(&start, &end, a)?;
        }
        Ok(())
    }

    /// Appends one allocation set's rows, built one at a time; stops early (with an error the
    /// caller reads as the cancellation) once `cancel` fires.
    pub fn allocation_rows(
        &mut self,
        r: &Rows<'_>,
        cancel: &CancellationToken,
    ) -> Result<(), TooLarge> {
        let (start, end) = times(r.window());
        let mut n = 0usize;
        r.try_for_each(|a| {
            n += 1;
            if n.is_multiple_of(1024) && cancel.is_cancelled() {
                return Err(TooLarge { limit: self.limit });
            }
            self.allocation(&start, &end, a)
        })
    }

    fn allocation(&mut self, start: &str, end: &str, a: &Allocation) -> Result<(), TooLarge> {
        use Cell::{Num, Text};
        let p = &a.properties;
        self.row([
            Text(start),
            Text(end),
            Text(&a.name),
            Text(&p.cluster),
            Text(&p.node),
            Text(&p.namespace),
            Text(&p.controller_kind),
            Text(&p.controller),
            Text(&p.pod),
            Text(&p.container),
            Num(a.minutes()),
            Num(a.cpu_core_request_average),
            Num(a.cpu_core_usage_average),
            Num(a.cpu_core_hours),
            Num(a.cpu_cost),
            Num(a.gpu_hours),
            Num(a.gpu_cost),
            Num(a.ram_byte_request_average),
            Num(a.ram_byte_usage_average),
            Num(a.ram_byte_hours),
            Num(a.ram_cost),
            Num(a.pv_byte_hours()),
            Num(a.pv_cost()),
            Num(a.network_cost),
            Num(a.load_balancer_cost),
            Num(a.shared_cost),
            Num(a.external_cost),
            Num(a.total_cost()),
            Num(a.cpu_efficiency()),
            Num(a.ram_efficiency()),
            Num(a.total_efficiency()),
        ])
    }

    /// The body.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// The asset export of these sets: a header and one row per asset per set, at most
/// `max_bytes` long.
pub fn asset_csv(results: &[AssetResult], max_bytes: usize) -> Result<Vec<u8>, json::TooLarge> {
    let mut c = Csv::assets(max_bytes)?;
    for r in results {
        c.asset_set(r)?;
    }
    Ok(c.finish())
}

/// The allocation export of these sets: a header and one row per allocation per set, at most
/// `max_bytes` long.
pub fn allocation_csv(
    results: &[AllocationResult],
    max_bytes: usize,
) -> Result<Vec<u8>, json::TooLarge> {
    let mut c = Csv::allocations(max_bytes)?;
    for r in results {
        c.allocation_set(r)?;
    }
    Ok(c.finish())
}

/// A window's start and end as the JSON writes timestamps (RFC 3339, UTC, `Z`).
fn times(w: Window) -> (String, String) {
    let t = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    (t(w.start), t(w.end))
}

/// RFC 4180: a field with a comma, a quote or a line break is quoted, its quotes doubled.
fn quote(out: &mut String, s: &str) {
    if s.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// A number as the JSON writes it; empty where the JSON writes `null`.
fn number(out: &mut String, x: f64) {
    let text = serde_json::to_string(&json::F(x)).expect("a float always serialises");
    if text != "null" {
        let _ = write!(out, "{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AllocationProperties;
    use chrono::TimeZone;

    fn window() -> Window {
        let t = |d| Utc.with_ymd_and_hms(2026, 11, d, 0, 0, 0).unwrap();
        Window::new(t(20), t(21))
    }

    #[test]
    fn fields_are_quoted_as_rfc_4180_says_and_numbers_as_the_json_writes_them() {
        let w = window();
        let a = Asset {
            kind: "LoadBalancer".into(),
            name: "shop/web, \"public\"".into(),
            cluster: "c1".into(),
            start: Some(w.start),
            end: Some(w.end),
            cost: 1.0 / 3.0,
            cpu_cores: f64::NAN,
            ..Asset::default()
        };
        let body = asset_csv(
            &[AssetResult {
                window: w,
                assets: vec![("k\nx".into(), a)],
            }],
            usize::MAX,
        )
        .unwrap();
        let text = String::from_utf8(body).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines[0], ASSET_HEADER.join(","));
        assert_eq!(
            lines.len(),
            3,
            "header, one row (its quoted key holds a bare line break), nothing after the last CRLF"
        );
        assert_eq!(
            lines[1],
            "2026-11-20T00:00:00Z,2026-11-21T00:00:00Z,\"k\nx\",LoadBalancer,\"shop/web, \"\"public\"\"\",c1,,,,,,0.0,0.0,0.0,1440.0,0.0,0.0,0.0,0.33333,0.0,0.33333"
        );
    }

    #[test]
    fn allocation_rows_follow_the_header_and_the_limit_holds() {
        let w = window();
        let a = Allocation {
            name: "frontend".into(),
            properties: AllocationProperties {
                namespace: "frontend".into(),
                cluster: "c1".into(),
                ..Default::default()
            },
            start: Some(w.start),
            end: Some(w.end),
            cpu_cost: 2.0,
            ..Allocation::default()
        };
        let results = [AllocationResult {
            window: w,
            allocations: vec![a.clone(), a],
        }];
        let body = String::from_utf8(allocation_csv(&results, usize::MAX).unwrap()).unwrap();
        let rows: Vec<Vec<&str>> = body
            .lines()
            .map(|l| l.trim_end_matches('\r').split(',').collect())
            .collect();
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().all(|r| r.len() == ALLOCATION_HEADER.len()));
        let col = |name| ALLOCATION_HEADER.iter().position(|h| *h == name).unwrap();
        assert_eq!(rows[1][col("namespace")], "frontend");
        assert_eq!(rows[1][col("cpuCost")], "2.0");
        assert_eq!(rows[1][col("totalCost")], "2.0");
        let limit = body.len() - 1;
        assert_eq!(
            allocation_csv(&results, limit).unwrap_err(),
            TooLarge { limit }
        );
    }
}
