//! The query executor: two pools of threads (`SyncArbiter`s) that run queries and encode their
//! JSON against an immutable snapshot, so queries never occupy the HTTP workers or any actor's
//! mailbox.
//!
//! Admission control keeps a cheap query from waiting behind heavy ones: each query's work is
//! estimated before it runs ([`crate::query::Cost`]), cheap ones go to a lane of their own, and
//! each lane admits a bounded number of queries at once (running or queued); past that, a query
//! is refused at once with 503 rather than queued without end. A query stops early when its
//! client goes away or its deadline passes (the handler cancels its token), and its body may not
//! grow past `--max-response-bytes`.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::csv;
use super::json::{self, Body, TooLarge};
use crate::model::{SetKind, Window};
use crate::query::{AllocationQuery, Answer, AssetQuery, Cancelled, Cost, Format, Step};
use crate::storage::Snapshot;

/// Queries estimated above this cost run in the heavy lane by default: about five million rows
/// scanned, or twenty thousand rows encoded one by one (see the weight in `query`). A 90-day
/// `aggregate=namespace` query on 10,000 pods (1.7 million rows scanned, a few dozen out) stays
/// cheap; unaggregated or per-pod answers of more than twenty thousand rows are heavy.
pub const HEAVY_COST: Cost = 5_000_000;
/// Threads of the cheap lane: two, so one slow cheap query does not hold up the next.
const CHEAP_THREADS: usize = 2;

/// Which body to produce.
pub enum QueryKind {
    /// `/allocation`.
    Allocation(AllocationQuery),
    /// `/allocation/summary`.
    Summary(AllocationQuery),
    /// `/assets`.
    Assets(AssetQuery),
    /// A query that takes this long unless cancelled (`test-support` builds: a heavy query of
    /// known length, to test cancellation and admission).
    #[cfg(feature = "test-support")]
    Stall(std::time::Duration),
    /// A query that panics (`test-support` builds: a bug in the query engine).
    #[cfg(feature = "test-support")]
    Panic,
}

impl QueryKind {
    /// Whether the answer is CSV (`format=csv`) rather than JSON.
    pub fn is_csv(&self) -> bool {
        match self {
            QueryKind::Allocation(q) | QueryKind::Summary(q) => q.format == Format::Csv,
            QueryKind::Assets(q) => q.format == Format::Csv,
            #[cfg(feature = "test-support")]
            QueryKind::Stall(_) | QueryKind::Panic => false,
        }
    }

    /// The file name a CSV answer is offered as.
    fn csv_name(&self) -> String {
        let (what, w) = match self {
            QueryKind::Allocation(q) | QueryKind::Summary(q) => ("allocation", q.window),
            QueryKind::Assets(q) => ("assets", q.window),
            #[cfg(feature = "test-support")]
            QueryKind::Stall(_) | QueryKind::Panic => {
                ("none", Window::new(Default::default(), Default::default()))
            }
        };
        let t = |t: DateTime<Utc>| t.format("%Y%m%dT%H%M%SZ").to_string();
        format!("{what}-{}-{}.csv", t(w.start), t(w.end))
    }

    /// The `Content-Disposition` of a CSV answer.
    pub fn csv_disposition(&self) -> String {
        format!("attachment; filename=\"{}\"", self.csv_name())
    }

    /// What the client must know about how the query was read (the envelope's `warning`).
    pub fn warnings(&self) -> &[String] {
        match self {
            QueryKind::Allocation(q) | QueryKind::Summary(q) => &q.warnings,
            QueryKind::Assets(q) => &q.warnings,
            #[cfg(feature = "test-support")]
            QueryKind::Stall(_) | QueryKind::Panic => &[],
        }
    }

    /// The windows of sets this query would read that the snapshot's manifest names but this
    /// replica could not load.
    pub fn unavailable(&self, snapshot: &Snapshot, now: DateTime<Utc>) -> Vec<Window> {
        match self {
            QueryKind::Allocation(q) | QueryKind::Summary(q) => {
                let (res, _) = q.plan(now);
                snapshot.unavailable(SetKind::Allocations, res, q.window)
            }
            QueryKind::Assets(q) => {
                let (res, _) = q.plan(now);
                snapshot.unavailable(SetKind::Assets, res, q.window)
            }
            #[cfg(feature = "test-support")]
            QueryKind::Stall(_) | QueryKind::Panic => Vec::new(),
        }
    }

    /// The query's estimated work on this snapshot.
    pub fn cost(&self, snapshot: &Snapshot, now: DateTime<Utc>) -> Cost {
        match self {
            QueryKind::Allocation(q) | QueryKind::Summary(q) => q.cost(&snapshot.allocations, now),
            QueryKind::Assets(q) => q.cost(&snapshot.assets, now),
            #[cfg(feature = "test-support")]
            QueryKind::Stall(_) => Cost::MAX,
            #[cfg(feature = "test-support")]
            QueryKind::Panic => 0,
        }
    }
}

/// Why a query produced no body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Cancelled: the client went away or the deadline passed.
    #[error("cancelled")]
    Cancelled,
    /// The body would exceed the limit.
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    /// The query panicked: a bug, reported as a 500 rather than taking the replica down.
    #[error("the query failed: {0}")]
    Panicked(String),
}

impl From<Cancelled> for QueryError {
    fn from(_: Cancelled) -> Self {
        QueryError::Cancelled
    }
}

/// Run a query against `snapshot` as of `now`; answers the encoded JSON body.
#[derive(Message)]
#[rtype(result = "Result<Vec<u8>, QueryError>")]
pub struct RunQuery {
    /// The snapshot to read.
    pub snapshot: Arc<Snapshot>,
    /// The query.
    pub kind: QueryKind,
    /// The time the query's relative windows were parsed against.
    pub now: DateTime<Utc>,
    /// Fired when the client goes away or the deadline passes.
    pub cancel: CancellationToken,
    /// The largest body allowed.
    pub max_bytes: usize,
    /// Written as the envelope's `warning`.
    pub warning: Option<String>,
    /// The lane's admission, released when the query is done and its body sent (the handler's
    /// response holds the other reference).
    pub permit: Arc<OwnedSemaphorePermit>,
    /// Where a JSON body past [`json::STREAM_AFTER`] bytes is streamed to (see [`json::Sink`]):
    /// the query then answers an empty body, the response being under way. A query that
    /// fails once its body has begun sends its error here, to cut the response off.
    pub stream: Option<Stream>,
}

/// The sending end of a streamed body.
pub type Stream = tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>;

/// A worker thread of a lane.
pub struct QueryWorker;

impl Actor for QueryWorker {
    type Context = SyncContext<Self>;
}

impl Handler<RunQuery> for QueryWorker {
    type Result = Result<Vec<u8>, QueryError>;

    fn handle(&mut self, msg: RunQuery, _: &mut Self::Context) -> Self::Result {
        if msg.cancel.is_cancelled() {
            return Err(QueryError::Cancelled);
        }
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| execute(&msg)));
        drop(msg.permit);
        let result = result.unwrap_or_else(|payload| {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            tracing::error!(error = %what, "a query panicked; answered 500");
            Err(QueryError::Panicked(what))
        });
        if let (Err(e), Some(tx)) = (&result, &msg.stream) {
            // Behind any chunk already sent: a response under way ends cut off. One that has
            // not begun never reads it (the handler answers the error's status).
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
        result
    }
}

fn execute(msg: &RunQuery) -> Result<Vec<u8>, QueryError> {
    let body = match &msg.stream {
        Some(tx) => Body::streaming(
            msg.max_bytes,
            json::Sink {
                tx: tx.clone(),
                cancel: msg.cancel.clone(),
            },
        ),
        None => Body::new(msg.max_bytes),
    };
    answer_into(
        body,
        &msg.snapshot,
        &msg.kind,
        msg.now,
        &msg.cancel,
        msg.max_bytes,
        msg.warning.as_deref(),
    )
}

/// The body a query answers on `snapshot` as of `now`: what a worker runs, without the lanes
/// (the reference tests hold these bytes).
pub fn answer(
    snapshot: &Snapshot,
    kind: &QueryKind,
    now: DateTime<Utc>,
    cancel: &CancellationToken,
    max_bytes: usize,
    warning: Option<&str>,
) -> Result<Vec<u8>, QueryError> {
    let body = Body::new(max_bytes);
    answer_into(body, snapshot, kind, now, cancel, max_bytes, warning)
}

/// What a body that stopped growing means: a query cancelled while its rows were being written
/// stops them the way a body past its limit does, and is reported as cancelled.
fn too_large_or_cancelled(cancel: &CancellationToken) -> impl Fn(TooLarge) -> QueryError + '_ {
    move |e| {
        if cancel.is_cancelled() {
            QueryError::Cancelled
        } else {
            QueryError::from(e)
        }
    }
}

/// [`answer`], its JSON written into `body`.
fn answer_into(
    mut body: Body,
    snapshot: &Snapshot,
    kind: &QueryKind,
    now: DateTime<Utc>,
    cancel: &CancellationToken,
    max_bytes: usize,
    warning: Option<&str>,
) -> Result<Vec<u8>, QueryError> {
    match kind {
        QueryKind::Allocation(q) | QueryKind::Summary(q) if q.format == Format::Csv => {
            let mut out = csv::Csv::allocations(max_bytes)?;
            q.run_each_rows(&snapshot.allocations, now, cancel, |answer| {
                match answer {
                    Answer::Whole(r) => out.allocation_set(&r),
                    Answer::Rows(r) => out.allocation_rows(r, cancel),
                }
                .map_err(too_large_or_cancelled(cancel))
            })?;
            Ok(out.finish())
        }
        QueryKind::Allocation(q) => {
            body.open_array()?;
            q.run_each_encoded(
                &snapshot.allocations,
                now,
                cancel,
                |r| json::encode(&json::AllocationSetJson(r)),
                |step| {
                    match step {
                        Step::Encoded(b) => body.encoded_item(b),
                        Step::Result(r) => body.item(&json::AllocationSetJson(&r)),
                        Step::Rows(r) => body.item(&json::RowsJson(r, cancel)),
                    }
                    .map_err(too_large_or_cancelled(cancel))
                },
            )?;
            Ok(body.close_array(warning)?)
        }
        QueryKind::Summary(q) => {
            let (_, steps) = q.plan(now);
            let step = steps.first().map_or(0, |w| w.duration().num_seconds());
            body.open_summary(step)?;
            q.run_each_rows(&snapshot.allocations, now, cancel, |answer| {
                match answer {
                    Answer::Whole(r) => body.item(&json::SummarySetJson(&r)),
                    Answer::Rows(r) => body.item(&json::SummaryRowsJson(r, cancel)),
                }
                .map_err(too_large_or_cancelled(cancel))
            })?;
            Ok(body.close_summary(q.window, warning)?)
        }
        QueryKind::Assets(q) => match q.format {
            // CSV has no envelope: the handler carries the warning in a header.
            Format::Csv => {
                let mut out = csv::Csv::assets(max_bytes)?;
                q.run_each(&snapshot.assets, now, cancel, |r| {
                    out.asset_set(&r).map_err(QueryError::from)
                })?;
                Ok(out.finish())
            }
            Format::Json if q.data_is_map() => {
                body.open_asset_map()?;
                q.run_each(&snapshot.assets, now, cancel, |r| {
                    body.asset_map(&json::AssetSetJson(&r))
                        .map_err(QueryError::from)
                })?;
                Ok(body.close_asset_map(warning)?)
            }
            Format::Json => {
                body.open_array()?;
                q.run_each(&snapshot.assets, now, cancel, |r| {
                    body.item(&json::AssetSetJson(&r)).map_err(QueryError::from)
                })?;
                Ok(body.close_array(warning)?)
            }
        },
        #[cfg(feature = "test-support")]
        QueryKind::Stall(d) => {
            let until = std::time::Instant::now() + *d;
            while std::time::Instant::now() < until {
                if cancel.is_cancelled() {
                    return Err(QueryError::Cancelled);
                }
                #[expect(
                    clippy::disallowed_methods,
                    reason = "a query worker is a thread of its own; this one stands for CPU work"
                )]
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            body.open_array()?;
            Ok(body.close_array(warning)?)
        }
        #[cfg(feature = "test-support")]
        QueryKind::Panic => crate::supervise::crash(),
    }
}

/// One lane: its threads and its admission.
#[derive(Clone)]
pub struct Lane {
    /// `cheap` or `heavy`, for errors and metrics.
    pub name: &'static str,
    /// The lane's threads.
    pub workers: Addr<QueryWorker>,
    /// Queries admitted at once (running or queued).
    pub admitted: Arc<Semaphore>,
    /// The admission limit.
    pub limit: usize,
}

/// The two lanes.
#[derive(Clone)]
pub struct Executor {
    /// Cheap queries: threads of their own.
    pub cheap: Lane,
    /// Heavy queries: `--query-threads` threads.
    pub heavy: Lane,
}

impl Executor {
    /// The lane for a query of this cost: heavy above `heavy_cost`.
    pub fn lane(&self, cost: Cost, heavy_cost: Cost) -> &Lane {
        if cost > heavy_cost {
            &self.heavy
        } else {
            &self.cheap
        }
    }
}

/// Starts both lanes: two threads for cheap queries admitting `cheap_admitted` at once, and
/// `heavy_threads` threads for heavy ones admitting `heavy_admitted`.
pub fn start(cheap_admitted: usize, heavy_threads: usize, heavy_admitted: usize) -> Executor {
    let lane = |name, threads: usize, limit: usize| Lane {
        name,
        workers: SyncArbiter::start(threads.max(1), || QueryWorker),
        admitted: Arc::new(Semaphore::new(limit.max(1))),
        limit: limit.max(1),
    };
    Executor {
        cheap: lane("cheap", CHEAP_THREADS, cheap_admitted),
        heavy: lane("heavy", heavy_threads, heavy_admitted),
    }
}
