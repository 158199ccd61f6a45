//! The API speaks Kubecost's and OpenCost's dialects as real clients call them, through the
//! real actors and handlers (`actix_web::test`) on the demo cluster: `--api-defaults`, explicit
//! parameters winning, aggregated properties, widened windows, shared costs and cost metrics,
//! the v1 filter parameters, the endpoints clients call (compute, clusterInfo, cloudCost,
//! metrics), CORS and gzip, and warnings for what is not supported.

mod support;

use std::collections::BTreeSet;
use std::io::Read as _;
use std::sync::Arc;

use actix_web::{App, test, web};
use chrono::{DateTime, Datelike, Duration, DurationRound, SecondsFormat, TimeZone, Utc};
use cost_model::api;
use cost_model::model::{Resolution, SetKind, Window};
use cost_model::query::Dialect;
use cost_model::storage::CurrentSnapshot;
use object_store::memory::InMemory;
use serde_json::Value;
use support::{node_with, until};

macro_rules! service {
    ($n:expr) => {
        test::init_service(
            App::new()
                .app_data(web::Data::new($n.replica.state.clone()))
                .configure(api::configure),
        )
        .await
    };
}

/// Status and JSON body of a GET.
macro_rules! get {
    ($svc:expr, $uri:expr) => {{
        let uri: String = $uri;
        let resp = test::call_service(&$svc, test::TestRequest::get().uri(&uri).to_request()).await;
        let status = resp.status().as_u16();
        let body = test::read_body(resp).await;
        let json: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!("{uri}: not JSON ({e}): {}", String::from_utf8_lossy(&body))
        });
        (status, json)
    }};
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn yesterday() -> Window {
    Resolution::Day.window_containing(Utc::now() - Duration::days(1))
}

/// Hours `[start, start + 4h)`, far enough back that the ETL has built them.
fn four_hours() -> DateTime<Utc> {
    Utc::now().duration_trunc(Duration::hours(1)).unwrap() - Duration::hours(6)
}

/// A leader that speaks `dialect` and has built yesterday's daily sets and the four hours of
/// [`four_hours`].
async fn leader(dialect: Dialect) -> support::Node {
    let n = node_with("l", Arc::new(InMemory::new()), |p| {
        p.limits.dialect = dialect
    });
    n.lead(1).await;
    let day = yesterday();
    let hours = four_hours();
    until("yesterday's sets and the last hours are built", || async {
        let s = n.replica.storage.send(CurrentSnapshot).await.unwrap();
        s.has_complete(SetKind::Allocations, Resolution::Day, day.start)
            && s.has_complete(SetKind::Assets, Resolution::Day, day.start)
            && (0..4).all(|h| {
                s.has_complete(
                    SetKind::Allocations,
                    Resolution::Hour,
                    hours + Duration::hours(h),
                )
            })
    })
    .await;
    n
}

/// `window=` for yesterday, and for the day before it too (two daily sets).
fn yesterday_param() -> String {
    let d = yesterday();
    format!("window={},{}", rfc(d.start), rfc(d.end))
}
fn two_days_param() -> String {
    let d = yesterday();
    format!("window={},{}", rfc(d.start - Duration::days(1)), rfc(d.end))
}

fn sets(body: &Value) -> &Vec<Value> {
    body["data"].as_array().expect("data is an array of sets")
}

/// The rows of every set, by name.
fn rows(body: &Value) -> Vec<(&String, &Value)> {
    sets(body)
        .iter()
        .flat_map(|s| s.as_object().unwrap().iter())
        .collect()
}

fn total(rows: &[(&String, &Value)], pick: impl Fn(&str) -> bool) -> f64 {
    rows.iter()
        .filter(|(k, _)| pick(k))
        .map(|(_, v)| v["totalCost"].as_f64().unwrap())
        .sum()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-3 * a.abs().max(b.abs()).max(1.0)
}

#[actix_web::test]
async fn kubecost_defaults_idle_and_a_set_per_day_and_explicit_parameters_win() {
    let n = leader(Dialect::Kubecost).await;
    let svc = service!(n);
    let (status, body) = get!(
        svc,
        format!("/model/allocation?{}&aggregate=namespace", two_days_param())
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(sets(&body).len(), 2, "one set per day");
    assert!(
        rows(&body).iter().any(|(k, _)| *k == "__idle__"),
        "idle by default"
    );
    let (_, body) = get!(
        svc,
        format!(
            "/model/allocation?{}&aggregate=namespace&idle=false",
            two_days_param()
        )
    );
    assert!(
        !rows(&body).iter().any(|(k, _)| *k == "__idle__"),
        "idle=false wins"
    );
    let (_, body) = get!(
        svc,
        format!(
            "/model/allocation?{}&aggregate=namespace&accumulate=true",
            two_days_param()
        )
    );
    assert_eq!(sets(&body).len(), 1);
}

#[actix_web::test]
async fn opencost_defaults_no_idle_and_one_set_and_explicit_parameters_win() {
    let n = leader(Dialect::Opencost).await;
    let svc = service!(n);
    let q = format!("/allocation?{}&aggregate=namespace", two_days_param());
    let (status, body) = get!(svc, q.clone());
    assert_eq!(status, 200, "{body}");
    assert_eq!(sets(&body).len(), 1, "one set for the window");
    let plain = rows(&body);
    assert!(
        !plain.iter().any(|(k, _)| *k == "__idle__"),
        "includeIdle defaults to false"
    );
    let (_, body) = get!(svc, format!("{q}&accumulate=false"));
    assert_eq!(
        sets(&body).len(),
        1,
        "accumulate=false without step is still one set"
    );
    let (_, body) = get!(svc, format!("{q}&step=1d"));
    assert_eq!(sets(&body).len(), 2, "an explicit step wins");
    let (_, body) = get!(svc, format!("{q}&includeIdle=true"));
    assert!(
        rows(&body).iter().any(|(k, _)| *k == "__idle__"),
        "includeIdle=true wins"
    );
    // shareIdle alone shares nothing: there is no idle to share.
    let (_, body) = get!(svc, format!("{q}&shareIdle=true"));
    let shared = rows(&body);
    assert_eq!(shared.len(), plain.len());
    for ((k1, a), (k2, b)) in plain.iter().zip(&shared) {
        assert_eq!(k1, k2);
        assert_eq!(a["totalCost"], b["totalCost"], "{k1}");
    }
}

#[actix_web::test]
async fn aggregates_keep_what_all_members_share() {
    let n = leader(Dialect::Kubecost).await;
    let svc = service!(n);
    let day = yesterday_param();
    let (_, body) = get!(
        svc,
        format!("/model/allocation?{day}&aggregate=pod&idle=false")
    );
    let pods = rows(&body);
    assert!(!pods.is_empty());
    for (name, a) in pods.iter().filter(|(k, _)| !k.contains("unmounted")) {
        let p = &a["properties"];
        for field in [
            "cluster",
            "namespace",
            "node",
            "controller",
            "controllerKind",
            "pod",
        ] {
            assert!(
                p[field].is_string(),
                "{name}: {field} shared by the pod's containers: {p}"
            );
        }
    }
    // A pod of one container keeps its peak usage; a namespace of many does not.
    assert!(
        pods.iter()
            .any(|(_, a)| a.get("rawAllocationOnly").is_some()),
        "a single-member key keeps rawAllocationOnly"
    );
    let (_, body) = get!(
        svc,
        format!("/model/allocation?{day}&aggregate=namespace&idle=false")
    );
    for (name, a) in rows(&body) {
        let p = &a["properties"];
        assert_eq!(p["cluster"], "cluster-one", "{name}: cluster survives: {p}");
        assert_eq!(p["namespace"].as_str(), Some(name.as_str()));
        assert!(
            p.get("labels").is_none(),
            "{name}: labels only with includeAggregatedMetadata"
        );
        assert!(
            p.get("pod").is_none(),
            "{name}: many pods share no pod name"
        );
        assert!(
            a.get("rawAllocationOnly").is_none(),
            "{name}: a sum has no peak"
        );
    }
    let (_, body) = get!(
        svc,
        format!(
            "/model/allocation?{day}&aggregate=namespace&idle=false&includeAggregatedMetadata=true"
        )
    );
    let mut saw_team = false;
    for (name, a) in rows(&body) {
        let p = &a["properties"];
        // Every pod of a demo namespace has its team label; the apps differ.
        saw_team |= p["labels"]["team"].is_string();
        if name == "kube-system" {
            assert!(p["labels"].get("app").is_none(), "apps differ: {p}");
        }
    }
    assert!(saw_team, "shared labels are kept");
}

#[actix_web::test]
async fn windows_off_the_stored_resolution_are_widened_and_say_so() {
    let n = leader(Dialect::Kubecost).await;
    let svc = service!(n);
    let h = four_hours();
    let asked = format!(
        "window={},{}",
        rfc(h + Duration::minutes(25)),
        rfc(h + Duration::hours(3) + Duration::minutes(10))
    );
    let (status, body) = get!(
        svc,
        format!("/model/allocation?{asked}&aggregate=namespace")
    );
    assert_eq!(status, 200, "{body}");
    let windows: Vec<(String, String)> = sets(&body)
        .iter()
        .map(|s| {
            let any = s
                .as_object()
                .unwrap()
                .values()
                .next()
                .expect("a set with data");
            (
                any["window"]["start"].as_str().unwrap().to_string(),
                any["window"]["end"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(windows.len(), 4, "{windows:?}");
    assert_eq!(windows[0].0, rfc(h), "start rounded down");
    assert_eq!(windows[3].1, rfc(h + Duration::hours(4)), "end rounded up");
    let warning = body["warning"].as_str().expect("a warning");
    assert!(warning.contains("widened"), "{warning}");
    // Accumulated, the one set reports the served window.
    let (_, body) = get!(
        svc,
        format!("/model/allocation?{asked}&aggregate=namespace&accumulate=true")
    );
    let (_, any) = rows(&body)[0];
    assert_eq!(any["window"]["start"], rfc(h));
    assert_eq!(any["window"]["end"], rfc(h + Duration::hours(4)));
    // A window under an hour is served from the hour that holds it.
    let short = format!(
        "window={},{}",
        rfc(h + Duration::minutes(5)),
        rfc(h + Duration::minutes(15))
    );
    let (status, body) = get!(
        svc,
        format!("/model/allocation?{short}&aggregate=namespace")
    );
    assert_eq!(status, 200);
    assert!(
        !rows(&body).is_empty(),
        "10 minutes answer their hour: {body}"
    );
    // Whole sets are not widened and carry no warning.
    let (_, body) = get!(
        svc,
        format!(
            "/model/allocation?{}&aggregate=namespace",
            yesterday_param()
        )
    );
    assert!(body.get("warning").is_none(), "{body}");
}

#[actix_web::test]
async fn shared_namespaces_and_costs_are_spread_and_broken_down() {
    let n = leader(Dialect::Kubecost).await;
    let svc = service!(n);
    let base = format!(
        "/model/allocation?{}&aggregate=namespace&idle=false&accumulate=true",
        yesterday_param()
    );
    let (_, body) = get!(svc, base.clone());
    let plain = rows(&body);
    let shared_total = total(&plain, |k| k == "kube-system");
    let rest_total = total(&plain, |k| k != "kube-system");
    assert!(shared_total > 0.0);

    let (status, body) = get!(svc, format!("{base}&shareNamespaces=kube-system"));
    assert_eq!(status, 200, "{body}");
    let with = rows(&body);
    assert!(
        !with.iter().any(|(k, _)| *k == "kube-system"),
        "shared namespaces leave the answer"
    );
    assert!(
        close(total(&with, |_| true), shared_total + rest_total),
        "nothing lost or invented"
    );
    for (name, a) in &with {
        let own = plain.iter().find(|(k, _)| k == name).unwrap().1["totalCost"]
            .as_f64()
            .unwrap();
        let expect = shared_total * own / rest_total;
        let got = a["sharedCost"].as_f64().unwrap();
        assert!(
            close(got, expect),
            "{name}: weighted share {got} != {expect}"
        );
        let part = a["sharedCostBreakdown"]["kube-system"]["totalCost"]
            .as_f64()
            .unwrap();
        assert!(
            close(part, got),
            "{name}: the breakdown names the shared namespace"
        );
    }

    // A filter narrows the answer, not the shares.
    let (_, filtered) = get!(
        svc,
        format!("{base}&shareNamespaces=kube-system&filter=namespace:%22backend%22")
    );
    let f = rows(&filtered);
    assert_eq!(f.len(), 1);
    let unfiltered = with.iter().find(|(k, _)| *k == "backend").unwrap().1;
    assert!(close(
        f[0].1["sharedCost"].as_f64().unwrap(),
        unfiltered["sharedCost"].as_f64().unwrap()
    ));

    // Even: every namespace gets the same share.
    let (_, body) = get!(
        svc,
        format!("{base}&shareNamespaces=kube-system&shareSplit=even")
    );
    let even = rows(&body);
    for (name, a) in &even {
        let got = a["sharedCost"].as_f64().unwrap();
        assert!(
            close(got, shared_total / even.len() as f64),
            "{name}: even share {got}"
        );
    }

    // A fixed monthly cost: 730 $/month is 1 $/hour, 24 $ over a complete day.
    let (_, body) = get!(svc, format!("{base}&shareCost=730"));
    let fixed = rows(&body);
    let received: f64 = fixed
        .iter()
        .map(|(_, a)| a["sharedCost"].as_f64().unwrap())
        .sum();
    assert!(close(received, 24.0), "{received}");
    assert!(
        fixed
            .iter()
            .all(|(_, a)| a["sharedCostBreakdown"]["__shared__"].is_object())
    );
    let (_, body) = get!(
        svc,
        format!("{base}&shareCost=730&includeSharedCostBreakdown=false")
    );
    assert!(
        rows(&body)
            .iter()
            .all(|(_, a)| a.get("sharedCostBreakdown").is_none())
    );
}

#[actix_web::test]
async fn cost_metrics_turn_costs_into_rates() {
    let n = leader(Dialect::Kubecost).await;
    let svc = service!(n);
    let base = format!(
        "/model/allocation?{}&aggregate=namespace&accumulate=true",
        yesterday_param()
    );
    let (_, body) = get!(svc, base.clone());
    let cumulative = total(&rows(&body), |_| true);
    for (metric, factor) in [
        ("daily", 1.0),
        ("hourly", 1.0 / 24.0),
        ("monthly", 730.0 / 24.0),
    ] {
        let (status, body) = get!(svc, format!("{base}&costMetric={metric}"));
        assert_eq!(status, 200);
        let got = total(&rows(&body), |_| true);
        assert!(
            close(got, cumulative * factor),
            "{metric}: {got} vs {}",
            cumulative * factor
        );
    }
    let (status, body) = get!(svc, format!("{base}&costMetric=weekly"));
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("costMetric"));
}

#[actix_web::test]
async fn v1_filters_apply_only_without_filter() {
    let n = leader(Dialect::Kubecost).await;
    let svc = service!(n);
    let base = format!("/model/allocation?{}&idle=false", yesterday_param());
    let (status, body) = get!(svc, format!("{base}&filterNamespaces=kube-system,kubec*"));
    assert_eq!(status, 200, "{body}");
    let r = rows(&body);
    assert!(!r.is_empty());
    let namespaces: BTreeSet<&str> = r
        .iter()
        .map(|(_, a)| a["properties"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, BTreeSet::from(["kube-system", "kubecost"]));
    let (_, body) = get!(
        svc,
        format!("{base}&filterNamespaces=kube-system&filter=namespace:%22backend%22")
    );
    assert!(
        rows(&body)
            .iter()
            .all(|(_, a)| a["properties"]["namespace"] == "backend"),
        "filter wins"
    );
    let (_, body) = get!(svc, format!("{base}&filterLabels=team:infra"));
    assert!(
        rows(&body)
            .iter()
            .all(|(_, a)| a["properties"]["labels"]["team"] == "infra")
    );
    let (status, body) = get!(svc, format!("{base}&filterLabels=team"));
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("filterLabels"),
        "{body}"
    );
}

#[actix_web::test]
async fn accumulate_by_month_and_quarter_follow_the_calendar() {
    let n = leader(Dialect::Kubecost).await;
    let svc = service!(n);
    let end = yesterday().end;
    let start = Utc
        .with_ymd_and_hms(end.year() - 1, 11, 15, 0, 0, 0)
        .unwrap();
    let last_day = end - Duration::seconds(1);
    // Quarters start in January, April, July and October.
    let quarter_start = [1, 1, 1, 4, 4, 4, 7, 7, 7, 10, 10, 10];
    let month_index = |y: i32, m: u32| i64::from(y) * 12 + i64::from(m) - 1;
    for (by, count, period_start) in [
        (
            "month",
            month_index(last_day.year(), last_day.month()) - month_index(start.year(), 11) + 1,
            Utc.with_ymd_and_hms(last_day.year(), last_day.month(), 1, 0, 0, 0)
                .unwrap(),
        ),
        (
            "quarter",
            (month_index(last_day.year(), quarter_start[last_day.month0() as usize])
                - month_index(start.year(), 10))
                / 3
                + 1,
            Utc.with_ymd_and_hms(
                last_day.year(),
                quarter_start[last_day.month0() as usize],
                1,
                0,
                0,
                0,
            )
            .unwrap(),
        ),
    ] {
        let (status, body) = get!(
            svc,
            format!(
                "/model/allocation?window={},{}&aggregate=cluster&accumulateBy={by}",
                rfc(start),
                rfc(end)
            )
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            sets(&body).len() as i64,
            count,
            "{by}: one set per calendar {by}"
        );
        // Only the last period holds data (yesterday): its set serves the whole period up to
        // the window's end, from the period's first day.
        let (_, row) = rows(&body).last().copied().unwrap();
        assert_eq!(row["window"]["start"], rfc(period_start), "{by}");
        assert_eq!(row["window"]["end"], rfc(end), "{by}");
    }
}

#[actix_web::test]
async fn the_endpoints_clients_call_answer_json() {
    let n = leader(Dialect::Kubecost).await;
    let svc = service!(n);
    // OpenCost's on-demand API: one set for the window unless told otherwise.
    for path in ["/allocation/compute", "/model/allocation/compute"] {
        let (status, body) = get!(
            svc,
            format!("{path}?{}&aggregate=namespace", two_days_param())
        );
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(sets(&body).len(), 1, "{path}");
        let (_, body) = get!(
            svc,
            format!("{path}?{}&aggregate=namespace&step=1d", two_days_param())
        );
        assert_eq!(sets(&body).len(), 2, "{path} with step");
    }
    let (status, body) = get!(svc, "/model/clusterInfo".to_string());
    assert_eq!(status, 200);
    assert_eq!(body["data"]["id"], "cluster-one");
    let (_, body) = get!(svc, "/clusterInfoMap".to_string());
    assert_eq!(body["data"]["cluster-one"]["id"], "cluster-one");
    for path in [
        "/model/cloudCost",
        "/cloudCost",
        "/model/cloudCost/status",
        "/model/cloudCost/view/totals",
    ] {
        let (status, body) = get!(svc, format!("{path}?window=7d"));
        assert_eq!(status, 200, "{path}");
        assert_eq!(body["status"], "not enabled");
        assert!(body.get("data").is_none(), "no data, never zeros: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("not enabled"),
            "{body}"
        );
    }
    let resp = test::call_service(
        &svc,
        test::TestRequest::get().uri("/model/metrics").to_request(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let text = String::from_utf8(test::read_body(resp).await.to_vec()).unwrap();
    assert!(
        text.contains("costmodel_"),
        "the metrics alias serves the metrics"
    );
    // Parameters that are accepted but not implemented are named in a warning.
    let (status, body) = get!(
        svc,
        format!(
            "/model/allocation?{}&external=true&reconcile=false",
            yesterday_param()
        )
    );
    assert_eq!(status, 200);
    let w = body["warning"].as_str().unwrap();
    assert!(w.contains("external") && w.contains("reconcile"), "{w}");
}

#[actix_web::test]
async fn gzip_when_accepted_and_times_at_whole_seconds() {
    let n = leader(Dialect::Kubecost).await;
    let svc = service!(n);
    let uri = "/model/allocation?window=week&aggregate=namespace&accumulate=true";
    let resp = test::call_service(
        &svc,
        test::TestRequest::get()
            .uri(uri)
            .insert_header(("Accept-Encoding", "gzip"))
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("content-encoding").unwrap(), "gzip");
    let zipped = test::read_body(resp).await;
    let mut text = String::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_string(&mut text)
        .unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["code"], 200);
    // `week` ends now: its end prints at whole seconds, as every time does.
    let (_, a) = rows(&body)[0];
    for t in [
        &a["window"]["start"],
        &a["window"]["end"],
        &a["start"],
        &a["end"],
    ] {
        let t = t.as_str().unwrap();
        assert!(
            DateTime::parse_from_rfc3339(t).is_ok() && t.len() == 20 && !t.contains('.'),
            "{t}"
        );
    }
    let plain = test::call_service(&svc, test::TestRequest::get().uri(uri).to_request()).await;
    assert!(
        plain.headers().get("content-encoding").is_none(),
        "no gzip unless asked"
    );
}

#[actix_web::test]
async fn csv_exports_carry_the_rows_and_the_warning_in_headers() {
    let n = leader(Dialect::Kubecost).await;
    let svc = service!(n);
    let q = format!(
        "/model/allocation?{}&aggregate=namespace&accumulate=true",
        yesterday_param()
    );
    let (_, json) = get!(svc, q.clone());
    let names: BTreeSet<&String> = rows(&json).iter().map(|(k, _)| *k).collect();
    for path in [q.clone(), format!("{q}&external=true")] {
        let resp = test::call_service(
            &svc,
            test::TestRequest::get()
                .uri(&format!("{path}&format=csv"))
                .to_request(),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let h = resp.headers().clone();
        assert_eq!(h.get("content-type").unwrap(), "text/csv; charset=utf-8");
        let disposition = h.get("content-disposition").unwrap().to_str().unwrap();
        assert!(
            disposition.starts_with("attachment; filename=\"allocation-"),
            "{disposition}"
        );
        let warned = h.get("warning").map(|w| w.to_str().unwrap().to_string());
        if path.contains("external") {
            assert!(
                warned.unwrap().contains("external"),
                "the warning travels in a header"
            );
        } else {
            assert!(warned.is_none());
        }
        let text = String::from_utf8(test::read_body(resp).await.to_vec()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], api::csv::ALLOCATION_HEADER.join(","));
        let csv_names: BTreeSet<String> = lines[1..]
            .iter()
            .map(|l| l.split(',').nth(2).unwrap().to_string())
            .collect();
        assert_eq!(
            csv_names,
            names.iter().map(|s| s.to_string()).collect(),
            "one row per allocation of the JSON answer"
        );
    }
}

#[actix_web::test]
async fn sharing_with_idle_and_filters_neither_creates_nor_loses_money() {
    let n = leader(Dialect::Kubecost).await;
    let svc = service!(n);
    let base = format!(
        "/model/allocation?{}&aggregate=namespace&accumulate=true",
        yesterday_param()
    );
    let (_, plain) = get!(svc, base.clone());
    let whole = total(&rows(&plain), |_| true);
    // Idle spread onto the allocations, and kube-system shared over them: the same money.
    let (_, body) = get!(
        svc,
        format!("{base}&shareIdle=true&shareNamespaces=kube-system")
    );
    let r = rows(&body);
    assert!(
        !r.iter()
            .any(|(k, _)| *k == "__idle__" || *k == "kube-system")
    );
    assert!(
        close(total(&r, |_| true), whole),
        "{} vs {whole}",
        total(&r, |_| true)
    );
    // A filter and its complement, idle apart: together, the whole answer.
    let shared = format!("{base}&shareNamespaces=kube-system");
    let (_, all) = get!(svc, shared.clone());
    let (_, a) = get!(svc, format!("{shared}&filter=namespace:%22backend%22"));
    let (_, rest) = get!(svc, format!("{shared}&filter=namespace!:%22backend%22"));
    let parts = total(&rows(&a), |_| true) + total(&rows(&rest), |_| true);
    assert!(
        close(parts, total(&rows(&all), |_| true)),
        "{parts} vs {}",
        total(&rows(&all), |_| true)
    );
    assert!(close(total(&rows(&all), |_| true), whole));
}

#[actix_web::test]
async fn rates_divide_by_the_hours_of_data_not_the_window() {
    let n = leader(Dialect::Kubecost).await;
    let svc = service!(n);
    let day = yesterday();
    let (_, body) = get!(
        svc,
        format!(
            "/model/allocation?{}&aggregate=cluster&accumulate=true",
            yesterday_param()
        )
    );
    let one_day = total(&rows(&body), |_| true);
    // Thirty days of window hold one day of data: a daily rate is that day's cost.
    let month = format!(
        "window={},{}",
        rfc(day.start - Duration::days(29)),
        rfc(day.end)
    );
    let (_, body) = get!(
        svc,
        format!("/model/allocation?{month}&aggregate=cluster&accumulate=true&costMetric=daily")
    );
    let rate = total(&rows(&body), |_| true);
    assert!(close(rate, one_day), "{rate} vs {one_day}");
}

#[actix_web::test]
async fn long_and_odd_windows_are_read_whole_and_say_so() {
    let n = leader(Dialect::Kubecost).await;
    let svc = service!(n);
    let day = yesterday();
    // Unaligned, and reaching back past the hourly retention: read from daily sets.
    let asked = format!(
        "window={},{}",
        rfc(day.start - Duration::days(3) + Duration::hours(5)),
        rfc(day.end - Duration::hours(2))
    );
    let (status, body) = get!(
        svc,
        format!("/model/allocation?{asked}&aggregate=namespace&accumulate=true")
    );
    assert_eq!(status, 200, "{body}");
    let warning = body["warning"].as_str().unwrap();
    assert!(
        warning.contains("widened") && warning.contains("daily"),
        "{warning}"
    );
    for (name, a) in rows(&body) {
        assert_eq!(
            a["window"]["start"],
            rfc(day.start - Duration::days(3)),
            "{name}"
        );
        assert_eq!(
            a["window"]["end"],
            rfc(day.end),
            "{name}: every row reports the served window"
        );
    }
    let (_, whole) = get!(
        svc,
        format!(
            "/model/allocation?window={},{}&aggregate=namespace&accumulate=true",
            rfc(day.start - Duration::days(3)),
            rfc(day.end)
        )
    );
    assert!(close(
        total(&rows(&body), |_| true),
        total(&rows(&whole), |_| true)
    ));
    // A fraction of a second past midnight is not midnight.
    let (_, body) = get!(
        svc,
        format!(
            "/model/allocation?window={}.500Z,{}&aggregate=namespace&accumulate=true",
            rfc(day.start).trim_end_matches('Z'),
            rfc(day.end)
        )
    );
    assert!(
        body["warning"]
            .as_str()
            .is_some_and(|w| w.contains("widened")),
        "{body}"
    );
    assert!(close(
        total(&rows(&body), |_| true),
        total(
            &rows(
                &get!(
                    svc,
                    format!(
                        "/model/allocation?{}&aggregate=namespace&accumulate=true",
                        yesterday_param()
                    )
                )
                .1
            ),
            |_| true
        )
    ));
    // OpenCost's compute answers one set, however many days the window holds.
    let (status, body) = get!(
        svc,
        format!(
            "/model/allocation/compute?window=2025-01-01T00:30:00Z,{}&aggregate=namespace",
            rfc(day.end)
        )
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(sets(&body).len(), 1);
    // The summary's window derives from now: whole seconds too.
    let (_, body) = get!(
        svc,
        "/model/allocation/summary?window=week&aggregate=namespace".to_string()
    );
    let end = body["data"]["window"]["end"].as_str().unwrap();
    assert!(end.len() == 20 && !end.contains('.'), "{end}");
}
