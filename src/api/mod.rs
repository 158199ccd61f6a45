//! The HTTP API: Kubecost's routes under `/model/` and the cost-model container's bare routes,
//! status JSON, probes, metrics and the status page. Handlers hold actor addresses, never
//! shared mutable state; a query asks `Storage` for the current snapshot (answered at once) and
//! hands it to the executor pool.

mod error;
pub mod executor;
pub mod json;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix::Addr;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;

pub use error::ApiError;
use executor::{QueryExecutor, QueryKind, RunQuery};

use crate::election::{Elector, GetClaim};
use crate::metrics::Metrics;
use crate::query;
use crate::role::Role;
use crate::storage::{CurrentSnapshot, GetStorageStatus, Snapshot, Storage};

/// The status page, compiled in so the binary serves it from any working directory.
const STATUS_PAGE: &str = include_str!("../../static/index.html");

/// Fixed facts about this replica, for status.
#[derive(Clone, Debug)]
pub struct ReplicaInfo {
    pub identity: String,
    /// The election backend's name.
    pub election: &'static str,
    pub lease_name: String,
    pub lease_namespace: Option<String>,
    pub poll_interval: Duration,
    pub cluster_id: String,
    pub version: &'static str,
}

/// What handlers share: actor addresses and read-only facts.
#[derive(Clone)]
pub struct AppState {
    pub storage: Addr<Storage>,
    pub elector: Addr<Elector>,
    pub executor: Addr<QueryExecutor>,
    pub metrics: Metrics,
    pub info: Arc<ReplicaInfo>,
    /// Set once shutdown begins: readiness goes false first.
    pub shutting_down: Arc<AtomicBool>,
}

/// Registers every route, under `/model/` and at the root.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::QueryConfig::default().error_handler(|err, _| {
        let e = ApiError::BadRequest(query::ParamError {
            param: "query string",
            message: err.to_string(),
        });
        actix_web::error::InternalError::from_response(
            err,
            actix_web::ResponseError::error_response(&e),
        )
        .into()
    }));
    for prefix in ["/model", ""] {
        cfg.route(&format!("{prefix}/allocation"), web::get().to(allocation))
            .route(
                &format!("{prefix}/allocation/summary"),
                web::get().to(allocation_summary),
            )
            .route(&format!("{prefix}/assets"), web::get().to(assets))
            .route(&format!("{prefix}/ha/status"), web::get().to(ha_status))
            .route(&format!("{prefix}/etl/status"), web::get().to(etl_status))
            .route(&format!("{prefix}/healthz"), web::get().to(healthz))
            .route(&format!("{prefix}/readyz"), web::get().to(readyz));
    }
    cfg.route("/metrics", web::get().to(metrics))
        .route("/", web::get().to(status_page))
        .route("/index.html", web::get().to(status_page));
}

fn data_age(snapshot: &Snapshot) -> Option<f64> {
    snapshot
        .updated
        .map(|u| ((Utc::now() - u).num_milliseconds() as f64 / 1000.0).max(0.0))
}

async fn run(
    state: &AppState,
    kind: QueryKind,
    now: chrono::DateTime<Utc>,
    started: Instant,
) -> Result<HttpResponse, ApiError> {
    let snapshot = state.storage.send(CurrentSnapshot).await?;
    if !snapshot.is_loaded() {
        return Err(ApiError::NotReady);
    }
    let age = data_age(&snapshot);
    let body = state
        .executor
        .send(RunQuery {
            snapshot,
            kind,
            now,
        })
        .await?;
    state
        .metrics
        .query_seconds
        .observe(started.elapsed().as_secs_f64());
    let mut resp = HttpResponse::Ok();
    resp.content_type("application/json");
    if let Some(age) = age {
        resp.insert_header(("X-Data-Age-Seconds", format!("{age:.0}")));
    }
    Ok(resp.body(body))
}

async fn allocation(
    state: web::Data<AppState>,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let (started, now) = (Instant::now(), Utc::now());
    let query = query::parse_allocation_query(&q, now)?;
    run(&state, QueryKind::Allocation(query), now, started).await
}

async fn allocation_summary(
    state: web::Data<AppState>,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let (started, now) = (Instant::now(), Utc::now());
    let query = query::parse_allocation_query(&q, now)?;
    run(&state, QueryKind::Summary(query), now, started).await
}

async fn assets(
    state: web::Data<AppState>,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let (started, now) = (Instant::now(), Utc::now());
    let query = query::parse_asset_query(&q, now)?;
    run(&state, QueryKind::Assets(query), now, started).await
}

/// The JSON of `/model/ha/status`.
pub async fn ha_status_json(state: &AppState) -> Result<serde_json::Value, ApiError> {
    let claim = state.elector.send(GetClaim).await?;
    let st = state.storage.send(GetStorageStatus).await?;
    let info = &state.info;
    let role = match (&claim.role, info.election) {
        (Role::Leader { .. }, _) => "leader",
        (Role::Follower { .. }, "kubernetes") if claim.leader.is_none() => "candidate",
        _ => "follower",
    };
    let age = st
        .snapshot_updated
        .map(|u| ((Utc::now() - u).num_milliseconds() as f64 / 1000.0).max(0.0));
    if let Some(a) = age {
        state.metrics.data_age_seconds.set(a);
    }
    let lease = claim.lease.as_ref().map(|l| {
        serde_json::json!({
            "name": l.name, "namespace": l.namespace, "holder": l.holder,
            "durationSeconds": l.duration_seconds, "acquireTime": l.acquire_time,
            "renewTime": l.renew_time, "transitions": l.transitions,
        })
    });
    Ok(serde_json::json!({
        "identity": info.identity,
        "role": role,
        "leader": claim.leader,
        "term": claim.role.term(),
        "writesEnabled": st.writes_enabled,
        "election": info.election,
        "lease": lease,
        "electionError": claim.error,
        "lastPoll": st.last_poll,
        "lastPollError": st.last_poll_error,
        "pollIntervalSeconds": info.poll_interval.as_secs(),
        "lastWrite": st.last_write,
        "lastWriteError": st.last_write_error,
        "snapshotGeneration": st.snapshot_generation,
        "snapshotTerm": st.snapshot_term,
        "snapshotWriter": st.snapshot_writer,
        "snapshotUpdated": st.snapshot_updated,
        "dataAgeSeconds": age,
        "followerWritesDropped": st.follower_writes_dropped,
        "bucket": st.bucket,
        "clusterId": info.cluster_id,
        "version": info.version,
    }))
}

async fn ha_status(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(ha_status_json(&state).await?))
}

async fn etl_status(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let st = state.storage.send(GetStorageStatus).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "code": 200,
        "status": "success",
        "data": {
            "coverage": st.coverage,
            "snapshotGeneration": st.snapshot_generation,
            "snapshotUpdated": st.snapshot_updated,
            "lastBuild": st.last_write,
            "lastBackup": st.last_write.or(st.snapshot_updated),
            "lastPoll": st.last_poll,
            "problems": st.problems,
            "etlDir": st.etl_dir,
            "bucket": st.bucket,
        }
    })))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().finish()
}

async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.shutting_down.load(Ordering::SeqCst) {
        return Ok(HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"code":503,"message":"shutting down"})));
    }
    let snapshot = state.storage.send(CurrentSnapshot).await?;
    let claim = state.elector.send(GetClaim).await?;
    if snapshot.is_loaded() || matches!(claim.role, Role::Leader { .. }) {
        Ok(HttpResponse::Ok().json(serde_json::json!({"code":200,"status":"ready"})))
    } else {
        Ok(HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", error::RETRY_AFTER_SECONDS.to_string()))
            .json(serde_json::json!({"code":503,"message":"no snapshot loaded yet"})))
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    if let Ok(s) = state.storage.send(CurrentSnapshot).await
        && let Some(age) = data_age(&s)
    {
        state.metrics.data_age_seconds.set(age);
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.encode())
}

async fn status_page(_: HttpRequest) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(STATUS_PAGE)
}
