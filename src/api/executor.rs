//! The `QueryExecutor`: a pool of threads (`SyncArbiter`) that run queries and encode their JSON
//! against an immutable snapshot, so heavy queries never occupy the HTTP workers or any actor's
//! mailbox.

use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, Utc};

use super::json;
use crate::query::{AllocationQuery, AssetQuery};
use crate::storage::Snapshot;

/// Which body to produce.
pub enum QueryKind {
    /// `/allocation`.
    Allocation(AllocationQuery),
    /// `/allocation/summary`.
    Summary(AllocationQuery),
    /// `/assets`.
    Assets(AssetQuery),
}

/// Run a query against `snapshot` as of `now`; answers the encoded JSON body.
#[derive(Message)]
#[rtype(result = "Vec<u8>")]
pub struct RunQuery {
    pub snapshot: Arc<Snapshot>,
    pub kind: QueryKind,
    pub now: DateTime<Utc>,
}

/// A worker of the pool.
pub struct QueryExecutor;

impl Actor for QueryExecutor {
    type Context = SyncContext<Self>;
}

impl Handler<RunQuery> for QueryExecutor {
    type Result = MessageResult<RunQuery>;

    fn handle(&mut self, msg: RunQuery, _: &mut Self::Context) -> Self::Result {
        MessageResult(match msg.kind {
            QueryKind::Allocation(q) => {
                json::allocation_body(&q.run(&msg.snapshot.allocations, msg.now))
            }
            QueryKind::Summary(q) => {
                json::summary_body(&q.run(&msg.snapshot.allocations, msg.now), q.window)
            }
            QueryKind::Assets(q) => json::asset_body(&q.run(&msg.snapshot.assets, msg.now)),
        })
    }
}

/// Starts `threads` executors.
pub fn start(threads: usize) -> Addr<QueryExecutor> {
    SyncArbiter::start(threads.max(1), || QueryExecutor)
}
