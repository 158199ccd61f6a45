//! Prometheus metrics of the replica, served at `/metrics`. Metric handles are atomics shared
//! by the actors that update them; the registry only reads them.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A `result` label: `ok`, `error`, `fenced`, ...
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// The outcome.
    pub result: String,
}

impl ResultLabel {
    /// A label with this outcome.
    pub fn of(result: &str) -> Self {
        Self {
            result: result.to_string(),
        }
    }
}

/// A `lane` label: `light` or `heavy`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaneLabel {
    /// The query lane.
    pub lane: String,
}

/// client-go's `name` label for `leader_election_master_status`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabel {
    /// The lease name.
    pub name: String,
}

/// Every metric the replica exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// 1 while this replica leads.
    pub is_leader: Gauge,
    /// 1 while storage accepts writes.
    pub writes_enabled: Gauge,
    /// The fencing term of this replica's leadership (0 when following).
    pub term: Gauge,
    /// The lease's `leaseTransitions` as last observed.
    pub lease_transitions: Gauge,
    /// client-go compatible leader status, labelled by lease name.
    pub master_status: Family<NameLabel, Gauge>,
    /// Bucket polls by result.
    pub polls: Family<ResultLabel, Counter>,
    /// ETL writes by result.
    pub writes: Family<ResultLabel, Counter>,
    /// Backups of the lineage to the bucket by result (`ok`, `unchanged`, `fenced`, ...).
    pub backups: Family<ResultLabel, Counter>,
    /// Objects the scrub put back into the bucket.
    pub scrub_repairs: Counter,
    /// Writes that reached a follower and were dropped.
    pub follower_writes_dropped: Counter,
    /// Failed attempts to load a backup object the manifest names (missing, corrupt).
    pub object_load_failures: Counter,
    /// Sets the served manifest names that this replica could not load.
    pub unavailable_sets: Gauge,
    /// Query responses that covered sets this replica could not load (and said so).
    pub query_unavailable_data: Counter,
    /// Query responses whose body was streamed in chunks (past 1 MiB) rather than sent whole.
    pub query_streamed: Counter,
    /// API queries by outcome: `ok`, `bad_request`, `too_large`, `timeout`, `overloaded`,
    /// `cancelled`, `not_ready`, `error`.
    pub queries: Family<ResultLabel, Counter>,
    /// The loaded manifest generation.
    pub snapshot_generation: Gauge,
    /// Seconds since the loaded generation was published.
    pub data_age_seconds: Gauge<f64, AtomicU64>,
    /// API query latency.
    pub query_seconds: Histogram,
    /// Queries admitted to each lane (running or queued), as of the last scrape.
    pub lane_admitted: Family<LaneLabel, Gauge>,
    /// Failed election attempts by kind (`unreachable`, `forbidden`, `api`, ...).
    pub election_failures: Family<ResultLabel, Counter>,
    /// The cost-model's own cost metrics (set by the leader's ETL only).
    pub cost: crate::etl::costmetrics::CostMetrics,
    /// Prometheus queries the ETL's source has issued (retries included).
    pub source_queries: Counter,
    /// ETL batches that failed because the source could not answer.
    pub source_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut r = Registry::default();
        let m = Self {
            registry: Arc::new(Registry::default()),
            is_leader: Gauge::default(),
            writes_enabled: Gauge::default(),
            term: Gauge::default(),
            lease_transitions: Gauge::default(),
            master_status: Family::default(),
            polls: Family::default(),
            writes: Family::default(),
            backups: Family::default(),
            scrub_repairs: Counter::default(),
            follower_writes_dropped: Counter::default(),
            object_load_failures: Counter::default(),
            unavailable_sets: Gauge::default(),
            query_unavailable_data: Counter::default(),
            query_streamed: Counter::default(),
            queries: Family::default(),
            snapshot_generation: Gauge::default(),
            data_age_seconds: Gauge::default(),
            query_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            lane_admitted: Family::default(),
            election_failures: Family::default(),
            cost: Default::default(),
            source_queries: Counter::default(),
            source_failures: Counter::default(),
        };
        m.cost.register(&mut r);
        r.register(
            "costmodel_source_queries",
            "Queries the ETL's data source issued, retries included",
            m.source_queries.clone(),
        );
        r.register(
            "costmodel_source_failures",
            "ETL batches that failed because the data source could not answer",
            m.source_failures.clone(),
        );
        r.register(
            "costmodel_is_leader",
            "1 while this replica leads",
            m.is_leader.clone(),
        );
        r.register(
            "costmodel_writes_enabled",
            "1 while storage accepts backup writes",
            m.writes_enabled.clone(),
        );
        r.register(
            "costmodel_term",
            "Fencing term of this replica's leadership",
            m.term.clone(),
        );
        r.register(
            "costmodel_lease_transitions",
            "leaseTransitions of the Lease as last observed",
            m.lease_transitions.clone(),
        );
        r.register(
            "leader_election_master_status",
            "1 = this process holds the lease, 0 = backup",
            m.master_status.clone(),
        );
        r.register(
            "costmodel_backup_polls",
            "Bucket polls by result",
            m.polls.clone(),
        );
        r.register(
            "costmodel_backup_writes",
            "Backup writes by result",
            m.writes.clone(),
        );
        r.register(
            "costmodel_backups",
            "Backups of the leader's lineage to the bucket by result",
            m.backups.clone(),
        );
        r.register(
            "costmodel_scrub_repairs",
            "Objects the scrub put back into the bucket",
            m.scrub_repairs.clone(),
        );
        r.register(
            "costmodel_follower_writes_dropped",
            "Backup writes that reached a follower and were dropped",
            m.follower_writes_dropped.clone(),
        );
        r.register(
            "costmodel_object_load_failures",
            "Failed attempts to load a backup object the manifest names (missing, corrupt, truncated)",
            m.object_load_failures.clone(),
        );
        r.register(
            "costmodel_unavailable_sets",
            "Sets the served manifest names that this replica could not load",
            m.unavailable_sets.clone(),
        );
        r.register(
            "costmodel_query_unavailable_data",
            "Query responses that covered sets this replica could not load, and said so",
            m.query_unavailable_data.clone(),
        );
        r.register(
            "costmodel_query_streamed",
            "Query responses whose body was streamed in chunks rather than sent whole",
            m.query_streamed.clone(),
        );
        r.register(
            "costmodel_queries",
            "API queries by outcome",
            m.queries.clone(),
        );
        r.register(
            "costmodel_snapshot_generation",
            "Loaded backup manifest generation",
            m.snapshot_generation.clone(),
        );
        r.register(
            "costmodel_data_age_seconds",
            "Seconds since the loaded generation was published",
            m.data_age_seconds.clone(),
        );
        r.register(
            "costmodel_election_failures",
            "Failed election attempts (Lease requests) by kind",
            m.election_failures.clone(),
        );
        r.register(
            "costmodel_query_lane_admitted",
            "Queries admitted to each lane (running or queued)",
            m.lane_admitted.clone(),
        );
        r.register(
            "costmodel_query_duration_seconds",
            "API query latency",
            m.query_seconds.clone(),
        );
        Self {
            registry: Arc::new(r),
            ..m
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
