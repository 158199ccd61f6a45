//! The bucket is queryable without this binary: a real replica process (standalone, on the demo
//! source, backing up to a local folder) publishes its daily sets as Parquet; real DuckDB (PyPI
//! `duckdb`, from `scripts/pytools`) runs the README's per-namespace daily cost query, verbatim,
//! over the files the newest manifest names; the answer matches the API's
//! `/model/allocation?window=<day>&aggregate=namespace&accumulate=true` for every complete day,
//! and the sums of the sets this crate decodes from the same files.

mod proc;
mod pytools;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, Utc};
use cost_model::model::{EtlSet, Resolution, SetKind};
use cost_model::storage::manifest::{self, Manifest};
use proc::{spawn, wait_for};

/// The README's DuckDB query, exactly as printed, with its bucket folder (`data/bucket/`)
/// pointed at `bucket`.
fn readme_query(bucket: &Path) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let after = readme
        .split_once("<!-- duckdb-daily-cost")
        .expect("the README marks its DuckDB query")
        .1;
    let sql = after
        .split_once("```sql\n")
        .expect("a sql block follows the marker")
        .1
        .split_once("```")
        .unwrap()
        .0;
    assert!(sql.contains("data/bucket/"));
    sql.replace("data/bucket/", &format!("{}/", bucket.display()))
}

/// The newest manifest in the bucket folder, if one parses.
fn newest_manifest(bucket: &Path) -> Option<Manifest> {
    let dir = bucket.join(manifest::MANIFEST_DIR);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    let newest = names.last()?;
    serde_json::from_slice(&std::fs::read(bucket.join(manifest::MANIFEST_DIR).join(newest)).ok()?)
        .ok()
}

/// The complete daily allocation sets the manifest names, by day start: path and entry.
fn complete_days(m: &Manifest) -> BTreeMap<DateTime<Utc>, (String, manifest::FileEntry)> {
    m.files
        .iter()
        .filter(|(_, e)| {
            e.kind == SetKind::Allocations && e.resolution == Resolution::Day && e.data_end == e.end
        })
        .map(|(p, e)| (e.start, (p.clone(), e.clone())))
        .collect()
}

/// Runs `sql` (statements separated by `;`) in DuckDB and returns the last one's rows as
/// (day, namespace, total cost).
fn duckdb(sql: &str) -> Vec<(String, String, f64)> {
    let venv = pytools::venv(&["python"]);
    let script = r#"
import json, sys, duckdb
con = duckdb.connect()
statements = [s for s in sys.stdin.read().split(";") if s.strip()]
for s in statements[:-1]:
    con.execute(s)
rows = con.execute(statements[-1]).fetchall()
print(json.dumps([[str(d), ns, cost] for d, ns, cost in rows]))
"#;
    let mut child = Command::new(venv.join("bin/python"))
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the venv's python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "duckdb failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<(String, String, f64)> = serde_json::from_slice(&out.stdout).unwrap();
    rows
}

fn close(a: f64, b: f64, abs: f64) -> bool {
    (a - b).abs() <= abs + 1e-9 * a.abs().max(b.abs())
}

#[tokio::test]
async fn duckdb_reads_the_bucket_and_agrees_with_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let replica = spawn(
        dir.path(),
        "leader",
        &[
            "--election",
            "standalone",
            "--bucket-dir",
            bucket.to_str().unwrap(),
            "--demo-pods",
            "120",
            "--demo-seed",
            "99",
            "--backfill",
            "3d",
        ],
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // The two days before today are complete and published as Parquet.
    let today = Resolution::Day.window_containing(Utc::now()).start;
    let days = [
        today - ChronoDuration::days(2),
        today - ChronoDuration::days(1),
    ];
    let deadline = Instant::now() + Duration::from_secs(120);
    let published = loop {
        if let Some(m) = newest_manifest(&bucket) {
            let complete = complete_days(&m);
            if days.iter().all(|d| {
                complete
                    .get(d)
                    .is_some_and(|(p, _)| p.ends_with(".parquet"))
            }) {
                break complete;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no complete daily sets in the bucket; log:\n{}",
            replica.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // DuckDB, with the README's query.
    let rows = duckdb(&readme_query(&bucket));
    let mut by_day: BTreeMap<NaiveDate, BTreeMap<String, f64>> = BTreeMap::new();
    for (day, ns, cost) in rows {
        by_day
            .entry(day.parse().unwrap())
            .or_default()
            .insert(ns, cost);
    }

    for day in days {
        let sql = &by_day[&day.date_naive()];
        // The same files decoded by this crate: DuckDB read every value as written.
        let (path, entry) = &published[&day];
        let body = std::fs::read(bucket.join(path)).unwrap();
        let EtlSet::Allocations(set) = manifest::decode(entry, &body).unwrap() else {
            panic!("{path} holds allocations")
        };
        let mut decoded: BTreeMap<String, f64> = BTreeMap::new();
        for a in &set.allocations {
            let ns = if a.properties.namespace.is_empty() {
                assert!(a.is_idle(), "only idle rows lack a namespace: {}", a.name);
                "__idle__".to_string()
            } else {
                a.properties.namespace.clone()
            };
            *decoded.entry(ns).or_default() += a.total_cost();
        }
        assert_eq!(
            sql.keys().collect::<Vec<_>>(),
            decoded.keys().collect::<Vec<_>>()
        );
        for (ns, d) in &decoded {
            assert!(
                close(sql[ns], *d, 1e-12),
                "{day} {ns}: duckdb {} decoded {d}",
                sql[ns]
            );
        }

        // The API, for the same day.
        let window = format!(
            "{},{}",
            day.to_rfc3339(),
            (day + ChronoDuration::days(1)).to_rfc3339()
        )
        .replace("+00:00", "Z");
        let body = wait_for(
            &replica,
            &client,
            &format!("/model/allocation?window={window}&aggregate=namespace&accumulate=true"),
            |s, b| s == 200 && b["data"][0].as_object().is_some_and(|m| !m.is_empty()),
        )
        .await;
        let api: BTreeMap<String, f64> = body["data"][0]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v["totalCost"].as_f64().unwrap()))
            .collect();
        assert_eq!(
            api.keys().collect::<Vec<_>>(),
            sql.keys().collect::<Vec<_>>(),
            "{day}: the same namespaces"
        );
        assert!(api.len() > 3, "{day}: {api:?}");
        for (ns, a) in &api {
            // The API rounds to 5 decimals: half a unit of the last one, and 1e-9 relative.
            assert!(
                close(sql[ns], *a, 5e-6),
                "{day} {ns}: duckdb {} api {a}",
                sql[ns]
            );
        }
    }
}
