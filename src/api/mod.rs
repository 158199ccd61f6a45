//! The HTTP API: Kubecost's routes under `/model/` and the cost-model container's bare routes,
//! status JSON, probes, metrics and the status page. Handlers hold actor addresses, never
//! shared mutable state; a query asks `Storage` for the snapshot it serves (answered at once)
//! and hands it to the executor's lanes.

pub mod csv;
mod error;
pub mod executor;
pub mod head;
pub mod json;
pub mod server;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix::Addr;
use actix_web::http::header;
use actix_web::{FromRequest, Handler, HttpRequest, HttpResponse, Responder, web};
use chrono::{SecondsFormat, Utc};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

pub use error::{ApiError, RETRY_AFTER_SECONDS};
use executor::{Executor, QueryError, QueryKind, RunQuery};

use crate::election::{Elector, GetClaim};
use crate::metrics::{Metrics, ResultLabel};
use crate::model::Window;
use crate::query;
use crate::role::Role;
use crate::storage::{GetStorageStatus, ServingSnapshot, Snapshot, Storage};
use crate::supervise::Supervisor;

/// The status page, compiled in so the binary serves it from any working directory.
const STATUS_PAGE: &str = include_str!("../../static/index.html");
/// How many unavailable windows a warning and its header list by name.
const LISTED_WINDOWS: usize = 10;

/// Fixed facts about this replica, for status.
#[derive(Clone, Debug)]
pub struct ReplicaInfo {
    /// This replica's identity.
    pub identity: String,
    /// The election backend's name.
    pub election: &'static str,
    /// The Lease's name.
    pub lease_name: String,
    /// The Lease's namespace, when configured.
    pub lease_namespace: Option<String>,
    /// How often a follower polls the bucket.
    pub poll_interval: Duration,
    /// How often the leader rebuilds the current windows (and publishes).
    pub etl_interval: Duration,
    /// The `cluster` property of every allocation.
    pub cluster_id: String,
    /// This build's version.
    pub version: &'static str,
}

/// What bounds one query.
#[derive(Clone, Copy, Debug)]
pub struct QueryLimits {
    /// The most sets one query may return (`--max-query-steps`).
    pub max_steps: usize,
    /// The largest response body (`--max-response-bytes`).
    pub max_response_bytes: usize,
    /// How long a query may take (`--query-timeout`).
    pub timeout: Duration,
    /// Queries estimated to cost more than this run in the heavy lane.
    pub heavy_cost: query::Cost,
    /// Whose defaults a query takes where a parameter is absent (`--api-defaults`).
    pub dialect: query::Dialect,
    /// How long hourly sets are kept (set from `--hourly-retention` when the replica starts).
    pub hourly_retention: chrono::Duration,
}

impl QueryLimits {
    /// What bounds reading a query.
    pub fn bounds(&self) -> query::Bounds {
        query::Bounds {
            max_steps: self.max_steps,
            hourly_retention: self.hourly_retention,
        }
    }
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            max_steps: query::DEFAULT_MAX_STEPS,
            max_response_bytes: 64 * 1024 * 1024,
            timeout: Duration::from_secs(30),
            heavy_cost: executor::HEAVY_COST,
            dialect: query::Dialect::Kubecost,
            hourly_retention: chrono::Duration::hours(query::DEFAULT_HOURLY_RETENTION_HOURS),
        }
    }
}

/// What handlers share: actor addresses and read-only facts.
#[derive(Clone)]
pub struct AppState {
    /// The storage actor.
    pub storage: Addr<Storage>,
    /// The elector.
    pub elector: Addr<Elector>,
    /// The ETL writer (repairs).
    pub etl: Addr<crate::etl::EtlWriter>,
    /// What the ETL reports about its source.
    pub etl_progress: crate::etl::status::EtlProgress,
    /// The query lanes.
    pub executor: Executor,
    /// Shared metrics.
    pub metrics: Metrics,
    /// Fixed facts for status.
    pub info: Arc<ReplicaInfo>,
    /// Set once shutdown begins: readiness goes false first.
    pub shutting_down: Arc<AtomicBool>,
    /// Knows whether a critical actor has died (liveness).
    pub supervisor: Supervisor,
    /// Bounds on every query.
    pub limits: QueryLimits,
    /// The other actors, for the debug routes of `test-support` builds.
    #[cfg(feature = "test-support")]
    pub debug: DebugActors,
}

/// Actors only the debug routes of `test-support` builds address.
#[cfg(feature = "test-support")]
#[derive(Clone)]
pub struct DebugActors {
    /// The poller.
    pub poller: Addr<crate::storage::BackupPoller>,
    /// The ETL writer.
    pub etl: Addr<crate::etl::EtlWriter>,
}

/// Registers every route, under `/model/` and at the root, each answering GET and HEAD (and a
/// CORS preflight; other methods get 405 with `Allow`), and a JSON 404 for anything else.
/// Every answer allows any origin (CORS, as OpenCost) and is gzip-compressed when the client
/// accepts it.
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
    cfg.service(
        web::scope("")
            .wrap(actix_web::middleware::Compress::default())
            .wrap(
                actix_web::middleware::DefaultHeaders::new()
                    .add((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")),
            )
            .configure(routes)
            .default_service(web::to(not_found)),
    );
}

fn routes(cfg: &mut web::ServiceConfig) {
    for prefix in ["/model", ""] {
        get(cfg, &format!("{prefix}/allocation"), allocation);
        get(
            cfg,
            &format!("{prefix}/allocation/summary"),
            allocation_summary,
        );
        get(
            cfg,
            &format!("{prefix}/allocation/compute"),
            allocation_compute,
        );
        get(
            cfg,
            &format!("{prefix}/allocation/compute/summary"),
            allocation_compute_summary,
        );
        get(cfg, &format!("{prefix}/assets"), assets);
        get(cfg, &format!("{prefix}/clusterInfo"), cluster_info);
        get(cfg, &format!("{prefix}/clusterInfoMap"), cluster_info_map);
        get(cfg, &format!("{prefix}/cloudCost"), cloud_cost);
        get(cfg, &format!("{prefix}/cloudCost/{{rest:.*}}"), cloud_cost);
        get(cfg, &format!("{prefix}/ha/status"), ha_status);
        get(cfg, &format!("{prefix}/ha/group"), ha_group);
        get(cfg, &format!("{prefix}/etl/status"), etl_status);
        get(
            cfg,
            &format!("{prefix}/etl/{{kind:allocation|asset}}/repair"),
            etl_repair,
        );
        get(cfg, &format!("{prefix}/healthz"), healthz);
        get(cfg, &format!("{prefix}/readyz"), readyz);
        get(cfg, &format!("{prefix}/metrics"), metrics);
    }
    #[cfg(feature = "test-support")]
    cfg.route("/debug/crash/{actor}", web::post().to(crash))
        .route("/debug/stall", web::get().to(stall))
        .route("/debug/panic-query", web::get().to(panic_query));
    cfg.route(head::OVERSIZED_PATH, web::to(oversized));
    get(cfg, "/", status_page);
    get(cfg, "/index.html", status_page);
    get(cfg, "/openapi.json", openapi);
}

/// A route answering GET and HEAD with `handler`, and 405 to every other method.
fn get<F, Args>(cfg: &mut web::ServiceConfig, path: &str, handler: F)
where
    F: Handler<Args> + Clone,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    cfg.service(
        web::resource(path)
            .route(web::get().to(handler.clone()))
            .route(web::head().to(handler))
            .route(web::method(actix_web::http::Method::OPTIONS).to(preflight))
            .default_service(web::to(method_not_allowed)),
    );
}

/// The methods every route answers.
const ALLOWED_METHODS: &str = "GET, HEAD, OPTIONS";

async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        allow: ALLOWED_METHODS,
    })
}

/// A CORS preflight: any origin, the methods the routes answer, the headers asked for.
async fn preflight(req: HttpRequest) -> HttpResponse {
    let headers = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("*")
        .to_string();
    HttpResponse::NoContent()
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, ALLOWED_METHODS))
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, headers))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "86400"))
        .insert_header((header::ALLOW, ALLOWED_METHODS))
        .finish()
}

/// A request whose head was too large, replaced by the head layer ([`head::HeadGuard`]) with a
/// request for this route: answered 414 or 431 in JSON, and logged at WARN at most once a
/// minute (a client that sends them in a loop must not flood the log).
async fn oversized(q: web::Query<HashMap<String, String>>) -> Result<HttpResponse, ApiError> {
    static LAST_WARN: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(i64::MIN);
    static SINCE_WARN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let bytes = q.get("bytes").and_then(|b| b.parse().ok()).unwrap_or(0);
    let error = match q.get("what").map(String::as_str) {
        Some("head") => ApiError::HeadTooLarge { bytes },
        _ => ApiError::UriTooLong { bytes },
    };
    let now = Utc::now().timestamp();
    let last = LAST_WARN.load(Ordering::Relaxed);
    let seen = SINCE_WARN.fetch_add(1, Ordering::Relaxed) + 1;
    if now.saturating_sub(last) >= 60
        && LAST_WARN
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        SINCE_WARN.store(0, Ordering::Relaxed);
        tracing::warn!(
            requests = seen,
            "refused oversized request heads (the last: {error}); logged at most once a minute"
        );
    }
    Err(error)
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(req.path().to_string()))
}

/// Seconds since `updated`.
fn age_of(updated: chrono::DateTime<Utc>) -> f64 {
    ((Utc::now() - updated).num_milliseconds() as f64 / 1000.0).max(0.0)
}

fn data_age(snapshot: &Snapshot) -> Option<f64> {
    snapshot.updated.map(age_of)
}

fn interval(w: &Window) -> String {
    format!(
        "{}/{}",
        w.start.to_rfc3339_opts(SecondsFormat::Secs, true),
        w.end.to_rfc3339_opts(SecondsFormat::Secs, true)
    )
}

/// The windows listed by name, then how many more.
fn list_windows(windows: &[Window]) -> String {
    let mut s = windows
        .iter()
        .take(LISTED_WINDOWS)
        .map(interval)
        .collect::<Vec<_>>()
        .join(", ");
    if windows.len() > LISTED_WINDOWS {
        let _ = write!(s, " and {} more", windows.len() - LISTED_WINDOWS);
    }
    s
}

/// Runs a query and counts its outcome.
async fn run(
    state: &AppState,
    kind: QueryKind,
    now: chrono::DateTime<Utc>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let result = execute(state, kind, now).await;
    let label = match &result {
        Ok(_) => "ok",
        Err(e) => e.label(),
    };
    state
        .metrics
        .queries
        .get_or_create(&ResultLabel::of(label))
        .inc();
    state
        .metrics
        .query_seconds
        .observe(started.elapsed().as_secs_f64());
    result
}

async fn execute(
    state: &AppState,
    kind: QueryKind,
    now: chrono::DateTime<Utc>,
) -> Result<HttpResponse, ApiError> {
    let snapshot = state
        .storage
        .send(ServingSnapshot)
        .await?
        .map_err(ApiError::NotReady)?;
    let age = data_age(&snapshot);
    // Data the manifest names but this replica could not load is never answered as zero: the
    // response says which windows it lacks.
    let unavailable = kind.unavailable(&snapshot, now);
    let mut warnings = kind.warnings().to_vec();
    if !unavailable.is_empty() {
        warnings.insert(0, format!(
            "cost data for {} set(s) in this window exists in the backup but could not be loaded by this replica, so it is missing from this answer (not zero): {}; see /model/etl/status",
            unavailable.len(),
            list_windows(&unavailable)
        ));
    }
    let warning = (!warnings.is_empty()).then(|| warnings.join(" | "));
    let csv = kind.is_csv();
    let disposition = kind.csv_disposition();
    // A header value cannot hold every character a warning may: keep printable ASCII.
    let warning_header = warning.as_ref().map(|w| {
        let text: String = w
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .filter(|c| *c != '"')
            .collect();
        format!("299 - \"{text}\"")
    });
    let lane = state
        .executor
        .lane(kind.cost(&snapshot, now), state.limits.heavy_cost);
    let permit =
        Arc::new(
            lane.admitted
                .clone()
                .try_acquire_owned()
                .map_err(|_| ApiError::Overloaded {
                    lane: lane.name,
                    limit: lane.limit,
                })?,
        );
    // Dropping this handler's future (the client went away) cancels the query's work.
    let mut in_flight = InFlight {
        cancel: CancellationToken::new(),
        metrics: &state.metrics,
        answered: false,
    };
    let cancel = in_flight.cancel.clone();
    let limits = state.limits;
    // A JSON body past `STREAM_AFTER` comes in chunks through this channel as it is written
    // (CSV bodies are still sent whole); a few chunks in flight at most.
    let (tx, mut chunks) = tokio::sync::mpsc::channel(STREAM_CHUNKS_IN_FLIGHT);
    let sent = lane.workers.send(RunQuery {
        snapshot,
        kind,
        now,
        cancel: cancel.clone(),
        max_bytes: limits.max_response_bytes,
        warning,
        permit: permit.clone(),
        stream: (!csv).then_some(tx),
    });
    let head = || {
        respond(
            state,
            csv,
            &disposition,
            warning_header.as_deref(),
            age,
            &unavailable,
        )
    };
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let mut sent = Box::pin(tokio::time::timeout_at(deadline, sent));
    // The answer, or the first chunk of a body that has begun streaming.
    let first = tokio::select! {
        biased;
        answer = &mut sent => Err(answer),
        Some(Ok(chunk)) = chunks.recv() => Ok(chunk),
    };
    in_flight.answered = true;
    let streamed = match first {
        Ok(chunk) => Some(chunk),
        // The query ended; a body that began streaming just before says so in the channel.
        Err(answer) => match chunks.try_recv() {
            Ok(Ok(chunk)) => Some(chunk),
            _ => {
                let body = match answer {
                    Err(_) => {
                        cancel.cancel();
                        return Err(ApiError::Timeout {
                            limit: limits.timeout,
                        });
                    }
                    Ok(answer) => answer?.map_err(|e| match e {
                        QueryError::TooLarge(t) => ApiError::TooLarge { limit: t.limit },
                        QueryError::Cancelled => ApiError::Timeout {
                            limit: limits.timeout,
                        },
                        QueryError::Panicked(m) => ApiError::Internal(m),
                    })?,
                };
                return Ok(head().body(Admitted {
                    body: Some(body.into()),
                    _permit: permit,
                }));
            }
        },
    };
    let first = streamed.expect("only a streamed body gets here");
    // The query runs on while its body streams: its deadline still stops it (the stream
    // then ends cut off), as does the client going away (the worker's send fails).
    tokio::spawn(async move {
        if sent.await.is_err() {
            cancel.cancel();
        }
    });
    state.metrics.query_streamed.inc();
    let rest = futures::stream::unfold(chunks, |mut chunks| async move {
        chunks.recv().await.map(|c| (c, chunks))
    });
    let body =
        futures::stream::once(std::future::ready(Ok::<_, std::io::Error>(first))).chain(rest);
    // The lane's admission is held until the last chunk is sent.
    let body = body.map(move |c| {
        let _held = &permit;
        c
    });
    Ok(head().streaming(body))
}

/// How many chunks of a streamed body may wait for the client (each `json::CHUNK` bytes).
const STREAM_CHUNKS_IN_FLIGHT: usize = 4;

/// The head of a query's 200 response.
fn respond(
    state: &AppState,
    csv: bool,
    disposition: &str,
    warning_header: Option<&str>,
    age: Option<f64>,
    unavailable: &[Window],
) -> actix_web::HttpResponseBuilder {
    let mut resp = HttpResponse::Ok();
    if csv {
        // CSV has no envelope: what the JSON's `warning` would say goes in a `Warning` header.
        resp.content_type("text/csv; charset=utf-8");
        resp.insert_header((header::CONTENT_DISPOSITION, disposition.to_string()));
        if let Some(w) = warning_header {
            resp.insert_header((header::WARNING, w.to_string()));
        }
    } else {
        resp.content_type("application/json");
    }
    if let Some(age) = age {
        resp.insert_header(("X-Data-Age-Seconds", format!("{age:.0}")));
    }
    if !unavailable.is_empty() {
        state.metrics.query_unavailable_data.inc();
        resp.insert_header(("X-Data-Unavailable", list_windows(unavailable)));
    }
    // The lane's admission is held until the body is sent: a slow reader keeps its slot, so
    // admission bounds the memory of answers waiting to be sent, not only their computation.
    resp
}

/// A response body that holds its query's admission until it has been sent (or dropped).
struct Admitted {
    body: Option<bytes::Bytes>,
    _permit: Arc<tokio::sync::OwnedSemaphorePermit>,
}

impl actix_web::body::MessageBody for Admitted {
    type Error = std::convert::Infallible;

    fn size(&self) -> actix_web::body::BodySize {
        actix_web::body::BodySize::Sized(self.body.as_ref().map_or(0, |b| b.len() as u64))
    }

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<bytes::Bytes, Self::Error>>> {
        std::task::Poll::Ready(self.body.take().map(Ok))
    }
}

/// A query being answered: if its handler is dropped before the answer (the client went away),
/// the query's work is cancelled and counted as `cancelled`.
struct InFlight<'a> {
    cancel: CancellationToken,
    metrics: &'a Metrics,
    answered: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.cancel.cancel();
            self.metrics
                .queries
                .get_or_create(&ResultLabel::of("cancelled"))
                .inc();
        }
    }
}

/// Now, at whole seconds: every window a query derives from it prints as OpenCost's do.
fn query_now() -> chrono::DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(0)
}

async fn allocation(
    state: web::Data<AppState>,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let now = query_now();
    let query =
        query::parse_allocation_query(&q, now, state.limits.bounds(), state.limits.dialect)?;
    run(&state, QueryKind::Allocation(query), now).await
}

async fn allocation_summary(
    state: web::Data<AppState>,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let now = query_now();
    let query =
        query::parse_allocation_query(&q, now, state.limits.bounds(), state.limits.dialect)?;
    run(&state, QueryKind::Summary(query), now).await
}

/// OpenCost's on-demand allocation API, answered from the stored sets: the same parameters,
/// but without `step` or `accumulate` one set for the whole window, as OpenCost's `step`
/// defaults to the window.
fn compute_query(
    state: &AppState,
    q: &HashMap<String, String>,
    now: chrono::DateTime<Utc>,
) -> Result<query::AllocationQuery, ApiError> {
    let given = |k: &str| q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let one_set = given("step").is_none()
        && given("accumulateBy").is_none()
        && given("accumulate")
            .is_none_or(|v| matches!(v.to_ascii_lowercase().as_str(), "false" | "none"));
    let query = if one_set {
        // Decided before parsing, so the step limit judges the one set it will answer.
        let mut q = q.clone();
        q.insert("accumulate".into(), "true".into());
        query::parse_allocation_query(&q, now, state.limits.bounds(), state.limits.dialect)?
    } else {
        query::parse_allocation_query(q, now, state.limits.bounds(), state.limits.dialect)?
    };
    Ok(query)
}

async fn allocation_compute(
    state: web::Data<AppState>,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let now = query_now();
    let query = compute_query(&state, &q, now)?;
    run(&state, QueryKind::Allocation(query), now).await
}

async fn allocation_compute_summary(
    state: web::Data<AppState>,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let now = query_now();
    let query = compute_query(&state, &q, now)?;
    run(&state, QueryKind::Summary(query), now).await
}

async fn assets(
    state: web::Data<AppState>,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let now = query_now();
    let query = query::parse_asset_query(&q, now, state.limits.bounds(), state.limits.dialect)?;
    run(&state, QueryKind::Assets(query), now).await
}

/// This cluster as OpenCost's `clusterInfo` describes it (every value a string).
fn cluster_info_json(info: &ReplicaInfo) -> serde_json::Value {
    serde_json::json!({
        "id": info.cluster_id,
        "name": info.cluster_id,
        "provider": "",
        "account": "",
        "project": "",
        "region": "",
        "provisioner": "",
        "clusterProfile": "",
        "remoteReadEnabled": "false",
        "thanosEnabled": "false",
        "version": info.version,
    })
}

async fn cluster_info(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "code": 200,
        "status": "success",
        "data": cluster_info_json(&state.info),
    }))
}

async fn cluster_info_map(state: web::Data<AppState>) -> HttpResponse {
    let mut map = serde_json::Map::new();
    map.insert(
        state.info.cluster_id.clone(),
        cluster_info_json(&state.info),
    );
    HttpResponse::Ok().json(serde_json::json!({
        "code": 200,
        "status": "success",
        "data": map,
    }))
}

/// What cloud-cost routes answer: there is no cloud bill here.
pub const CLOUD_COSTS_NOT_ENABLED: &str = "cloud costs are not enabled in this build";

/// The cloud-cost routes. They answer 200 with the envelope's `message` and `warning` and no
/// `data` (never zeros): clients such as the Kubecost MCP server raise on any error status
/// without reading the body, so a 200 is what carries the explanation to their users.
async fn cloud_cost() -> HttpResponse {
    let why = format!(
        "{CLOUD_COSTS_NOT_ENABLED}: it builds allocation and asset costs from the cluster only, with no cloud bill integration, so there is no cloud cost data to answer with"
    );
    HttpResponse::Ok().json(serde_json::json!({
        "code": 200,
        "status": "not enabled",
        "message": why,
        "warning": why,
    }))
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
    let age = st.snapshot_updated.map(age_of);
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
    let not_ready = readiness(state, st.not_ready.clone());
    // Data is stale once the leader has not published for three of its rebuild periods (or a
    // follower has not loaded for three polls).
    let stale_after = 3 * info.poll_interval.max(info.etl_interval).as_secs();
    let stale = age.is_some_and(|a| a > stale_after as f64);
    let lease_renew_age = claim
        .lease
        .as_ref()
        .and_then(|l| l.renew_time.filter(|_| l.holder.is_some()))
        .map(age_of);
    let lease_stale = match (&claim.lease, lease_renew_age) {
        (Some(l), Some(a)) => a > l.duration_seconds as f64,
        _ => false,
    };
    Ok(serde_json::json!({
        "identity": info.identity,
        "role": role,
        "leader": claim.leader,
        "term": claim.role.term(),
        "writesEnabled": st.writes_enabled,
        "ready": not_ready.is_none(),
        "notReadyReason": not_ready.map(|e| e.to_string()),
        "election": info.election,
        "lease": lease,
        "electionError": claim.error.map(|e| e.to_string()),
        "lastPoll": st.last_poll,
        "lastPollError": st.last_poll_error.map(|e| e.to_string()),
        "bucketEmpty": st.bucket_empty,
        "pollIntervalSeconds": info.poll_interval.as_secs(),
        "lastWrite": st.last_write,
        "lastWriteError": st.last_write_error.map(|e| e.to_string()),
        "promotionError": st.promotion_error.map(|e| e.to_string()),
        "lastBackup": st.last_backup,
        "lastBackupError": st.last_backup_error.map(|e| e.to_string()),
        "pendingSets": st.pending_sets,
        "backupLagSeconds": st.backup_lag_seconds,
        "foreignWriter": st.foreign_writer.map(|e| e.to_string()),
        "mergedWriter": st.merged_same_term.map(|(writer, generation)| serde_json::json!({"writer": writer, "generation": generation})),
        "unreadableManifests": st.unreadable_manifests,
        "etlDirError": st.etl_dir_error.map(|e| e.to_string()),
        "snapshotGeneration": st.snapshot_generation,
        "snapshotTerm": st.snapshot_term,
        "snapshotWriter": st.snapshot_writer,
        "snapshotUpdated": st.snapshot_updated,
        "localGeneration": st.local_generation,
        "unavailableSets": st.missing.len(),
        "dataAgeSeconds": age,
        "staleAfterSeconds": stale_after,
        "stale": stale,
        "leaseRenewAgeSeconds": lease_renew_age,
        "leaseStale": lease_stale,
        "groupError": st.group_error.map(|e| e.to_string()),
        "followerWritesDropped": st.follower_writes_dropped,
        "bucket": st.bucket,
        "clusterId": info.cluster_id,
        "version": info.version,
    }))
}

/// Why this replica is not ready, storage's reason aside: shutdown, or a dead actor.
fn readiness(
    state: &AppState,
    storage_reason: Option<crate::storage::NotReady>,
) -> Option<ApiError> {
    if state.shutting_down.load(Ordering::SeqCst) {
        return Some(ApiError::ShuttingDown);
    }
    if let Some(f) = state.supervisor.failure() {
        return Some(ApiError::Dead(f));
    }
    storage_reason.map(ApiError::NotReady)
}

async fn ha_status(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(ha_status_json(&state).await?))
}

/// Every replica of the group as its heartbeat in the bucket says (refreshed every poll
/// interval): identity, role, generation, data age, last seen, and whether it is late.
async fn ha_group(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let st = state.storage.send(GetStorageStatus).await?;
    let replicas: Vec<serde_json::Value> = st
        .group
        .iter()
        .map(|hb| {
            let seen = age_of(hb.seen);
            serde_json::json!({
                "identity": hb.identity,
                "self": hb.identity == state.info.identity,
                "role": hb.role,
                "term": hb.term,
                "generation": hb.generation,
                "dataAgeSeconds": hb.data_updated.map(age_of),
                "ready": hb.ready,
                "notReadyReason": hb.not_ready_reason,
                "version": hb.version,
                "lastSeen": hb.seen,
                "lastSeenSeconds": seen,
                "late": seen > 3.0 * hb.interval_seconds as f64,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "code": 200,
        "status": "success",
        "data": {
            "replicas": replicas,
            "error": st.group_error.map(|e| e.to_string()),
        }
    })))
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
            "lastPoll": st.last_poll,
            "problems": st.missing,
            "lastBackup": st.last_backup,
            "lastBackupError": st.last_backup_error.map(|e| e.to_string()),
            "pendingSets": st.pending_sets,
            "backupLag": st.backup_lag_seconds,
            "unreadableManifests": st.unreadable_manifests,
            "lastScrub": st.last_scrub.map(|(at, report)| serde_json::json!({"at": at, "report": report})),
            "foreignWriter": st.foreign_writer.map(|e| e.to_string()),
            "etlDir": st.etl_dir,
            "bucket": st.bucket,
            "source": state.etl_progress.get(),
        }
    })))
}

/// Kubecost's `GET /model/etl/{allocation,asset}/repair?window=`: the leader rebuilds every complete
/// day and hour overlapping the window from its source (allocations and assets are built
/// together, so either route rebuilds both). A follower answers 409 naming the leader.
async fn etl_repair(
    state: web::Data<AppState>,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let Some(text) = q.get("window").filter(|w| !w.is_empty()) else {
        return Err(crate::query::bad(
            "window",
            "is required, e.g. window=2026-11-01T00:00:00Z,2026-11-03T00:00:00Z or window=7d",
        )
        .into());
    };
    let window = crate::query::window::parse(text, query_now())
        .map_err(|e| crate::query::bad("window", e))?;
    match state.etl.send(crate::etl::Repair { window }).await? {
        Ok(days) => Ok(HttpResponse::Ok().json(serde_json::json!({
            "code": 200,
            "status": "success",
            "data": {
                "message": format!("rebuilding {days} day(s) from the {} source; progress in /model/etl/status", state.etl_progress.get().source),
                "days": days,
                "window": window,
            }
        }))),
        Err(crate::etl::RepairRefused::NotLeader) => {
            let leader = state.elector.send(crate::election::GetClaim).await?.leader;
            Ok(HttpResponse::Conflict().json(serde_json::json!({
                "code": 409,
                "message": format!(
                    "this replica ({}) is a follower and does not build; send the repair to the leader{}",
                    state.info.identity,
                    leader.as_ref().map(|l| format!(" ({l})")).unwrap_or_default()
                ),
                "leader": leader,
            })))
        }
        Err(e @ crate::etl::RepairRefused::Empty) => {
            Err(crate::query::bad("window", e.to_string()).into())
        }
        Err(e @ crate::etl::RepairRefused::Full { .. }) => Ok(HttpResponse::TooManyRequests()
            .insert_header((actix_web::http::header::RETRY_AFTER, "60"))
            .json(serde_json::json!({"code": 429, "message": e.to_string()}))),
    }
}

/// Liveness: every critical actor is alive.
async fn healthz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match state.supervisor.failure() {
        Some(f) => Err(ApiError::Dead(f)),
        None => Ok(HttpResponse::Ok().json(serde_json::json!({"code":200,"status":"alive"}))),
    }
}

/// Readiness: this replica can answer queries now.
async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if let Some(e) = readiness(&state, None) {
        return Err(e);
    }
    let serving = state.storage.send(ServingSnapshot).await?;
    match serving {
        Ok(_) => Ok(HttpResponse::Ok().json(serde_json::json!({"code":200,"status":"ready"}))),
        Err(reason) => Err(ApiError::NotReady(reason)),
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    if let Ok(s) = state.storage.send(crate::storage::CurrentSnapshot).await
        && let Some(age) = data_age(&s)
    {
        state.metrics.data_age_seconds.set(age);
    }
    for lane in [&state.executor.cheap, &state.executor.heavy] {
        let admitted = lane.limit - lane.admitted.available_permits().min(lane.limit);
        state
            .metrics
            .lane_admitted
            .get_or_create(&crate::metrics::LaneLabel {
                lane: lane.name.to_string(),
            })
            .set(admitted as i64);
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.encode())
}

/// A heavy query that runs for `seconds` unless cancelled (`test-support` builds only).
#[cfg(feature = "test-support")]
async fn stall(
    state: web::Data<AppState>,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let seconds = q.get("seconds").and_then(|s| s.parse().ok()).unwrap_or(60);
    let kind = QueryKind::Stall(Duration::from_secs(seconds));
    run(&state, kind, Utc::now()).await
}

/// A query that panics (`test-support` builds only): what a bug in the query engine would do.
#[cfg(feature = "test-support")]
async fn panic_query(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    run(&state, QueryKind::Panic, Utc::now()).await
}

/// Makes a critical actor panic (`test-support` builds only): what a bug would do.
#[cfg(feature = "test-support")]
async fn crash(
    state: web::Data<AppState>,
    actor: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    use crate::supervise::Crash;
    match actor.as_str() {
        "storage" => state.storage.do_send(Crash),
        "poller" => state.debug.poller.do_send(Crash),
        "etl" => state.debug.etl.do_send(Crash),
        "election" => state.elector.do_send(Crash),
        other => return Err(ApiError::NotFound(format!("/debug/crash/{other}"))),
    }
    Ok(HttpResponse::Accepted().finish())
}

async fn status_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(STATUS_PAGE)
}

/// This API's OpenAPI document (`openapi.json` at the repository's root), compiled in.
async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(include_str!("../../openapi.json"))
}
