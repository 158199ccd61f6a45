//! Wiring: builds the actors from a [`Config`], serves the API, and shuts down in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;
use actix_web::{App, web};
use object_store::ObjectStore;

use crate::api::{self, AppState, QueryLimits, ReplicaInfo};
use crate::config::{Config, ElectionMode, SourceKind};
use crate::election::kubernetes::KubernetesSettings;
use crate::election::{ElectionBackend, Elector, FollowerElection, Shutdown, StandaloneElection};
use crate::etl::demo::DemoCluster;
use crate::etl::source::DataSource;
use crate::etl::{EtlConfig, EtlWriter};
use crate::metrics::Metrics;
use crate::storage::backup::Backoff;
use crate::storage::filestore::FileStore;
use crate::storage::{BackupPoller, Drain, ElectionEvents, Storage, StorageConfig};
use crate::supervise::{Failure, Supervisor};

/// The longest pause before fetching again an object that failed to load.
const OBJECT_RETRY_MAX: Duration = Duration::from_secs(3600);

/// A running replica's actors.
pub struct Replica {
    /// The storage actor.
    pub storage: Addr<Storage>,
    /// The follower's bucket poller.
    pub poller: Addr<BackupPoller>,
    /// The leader's ETL writer.
    pub etl: Addr<EtlWriter>,
    /// The elector.
    pub elector: Addr<Elector>,
    /// What the HTTP handlers share.
    pub state: AppState,
}

/// Everything a replica is built from; tests build one by hand.
pub struct Parts {
    /// This replica's identity.
    pub identity: String,
    /// The bucket, scoped to its prefix.
    pub bucket: Arc<dyn ObjectStore>,
    /// The bucket, for status and logs.
    pub bucket_description: String,
    /// The local ETL file store.
    pub etl_dir: std::path::PathBuf,
    /// Where cost data comes from.
    pub source: Arc<dyn DataSource>,
    /// The election backend.
    pub backend: Box<dyn ElectionBackend>,
    /// How often a follower polls the bucket.
    pub poll_interval: Duration,
    /// The first pause before an object that failed to load is fetched again (doubling after
    /// each failure, up to an hour).
    pub object_retry: Duration,
    /// How often the leader rebuilds the current hour and day.
    pub etl_interval: Duration,
    /// Garbage (unreferenced objects, old manifests) younger than this is never collected.
    pub gc_grace: Duration,
    /// How often the replica writes its heartbeat and reads the group's.
    pub heartbeat: Duration,
    /// How often the leader scrubs the bucket.
    pub scrub_interval: Duration,
    /// How far back the leader builds on first start.
    pub backfill: chrono::Duration,
    /// Hourly sets kept.
    pub hourly_retention: chrono::Duration,
    /// Daily sets kept.
    pub daily_retention: chrono::Duration,
    /// The `cluster` property of every allocation.
    pub cluster_id: String,
    /// The Lease's name, for status and metrics.
    pub lease_name: String,
    /// The Lease's namespace, for status.
    pub lease_namespace: Option<String>,
    /// Threads of the heavy query lane.
    pub query_threads: usize,
    /// Heavy queries admitted at once.
    pub max_heavy_queries: usize,
    /// Cheap queries admitted at once.
    pub max_cheap_queries: usize,
    /// Bounds on every query.
    pub limits: QueryLimits,
}

/// Why a replica stopped or could not start; `main` turns it into an exit code.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad configuration (exit 64): the message names the flag, variable or key.
    #[error("{0}")]
    Config(String),
    /// A critical actor died (exit 70).
    #[error("{0}")]
    Failed(Failure),
    /// Anything else (exit 1).
    #[error("{0}")]
    Other(String),
}

impl Parts {
    /// The parts a configuration describes (the election backend is chosen here). Every error is
    /// a configuration error.
    pub async fn from_config(cfg: &Config) -> Result<Self, RunError> {
        let identity = cfg.identity();
        let (bucket, bucket_description) = match (&cfg.bucket_config, cfg.bucket_dir()) {
            (Some(path), _) => {
                let b = crate::storage::bucket::from_file(path).map_err(|e| {
                    RunError::Config(format!("{}: {e}", cfg.name_of("bucket_config")))
                })?;
                (b.store, b.description)
            }
            (None, Some(dir)) => {
                let d = dir.display().to_string();
                let store = crate::storage::bucket::filesystem(&d)
                    .map_err(|e| RunError::Config(format!("{}: {e}", cfg.name_of("bucket_dir"))))?;
                (store, format!("FILESYSTEM {d}"))
            }
            (None, None) => return Err(RunError::Config("no bucket configured".into())),
        };
        let backend: Box<dyn ElectionBackend> = match cfg.election() {
            ElectionMode::Standalone => Box::new(StandaloneElection {
                identity: identity.clone(),
            }),
            ElectionMode::Follower => Box::new(FollowerElection),
            ElectionMode::Kubernetes => crate::election::kubernetes::backend(KubernetesSettings {
                identity: identity.clone(),
                lease_name: cfg.lease_name.clone(),
                namespace: cfg.lease_namespace.clone(),
                lease_duration: cfg.lease_duration,
                renew_deadline: cfg.renew_deadline,
                retry_period: cfg.retry_period,
            })
            .await
            .map_err(|e| RunError::Config(e.to_string()))?,
        };
        Ok(Self {
            identity,
            bucket,
            bucket_description,
            etl_dir: cfg.etl_dir.clone(),
            source: source(cfg)?,
            backend,
            poll_interval: cfg.poll_interval,
            object_retry: cfg.poll_interval * 2,
            etl_interval: cfg.etl_interval,
            gc_grace: crate::storage::backup::GC_GRACE,
            heartbeat: cfg.poll_interval.min(Duration::from_secs(30)),
            scrub_interval: cfg.scrub_interval,
            backfill: chrono::Duration::from_std(cfg.backfill)
                .map_err(|e| RunError::Config(format!("{}: {e}", cfg.name_of("backfill"))))?,
            hourly_retention: chrono::Duration::hours(i64::from(cfg.hourly_retention)),
            daily_retention: chrono::Duration::days(i64::from(cfg.daily_retention)),
            cluster_id: cfg.cluster_id.clone(),
            lease_name: cfg.lease_name.clone(),
            lease_namespace: cfg.lease_namespace.clone(),
            query_threads: cfg.query_threads,
            max_heavy_queries: cfg.max_heavy_queries,
            max_cheap_queries: cfg.max_cheap_queries,
            limits: QueryLimits {
                max_steps: cfg.max_query_steps,
                max_response_bytes: cfg.max_response_bytes,
                timeout: cfg.query_timeout,
                heavy_cost: cfg.heavy_query_cost,
                dialect: cfg.api_defaults,
                hourly_retention: chrono::Duration::hours(i64::from(cfg.hourly_retention)),
            },
        })
    }
}

/// The data source the configuration selects.
fn source(cfg: &Config) -> Result<Arc<dyn DataSource>, RunError> {
    use crate::etl::prometheus::{PrometheusSource, Settings, client::Client};
    Ok(match cfg.source() {
        SourceKind::Demo => Arc::new(DemoCluster::new(cfg.demo_seed, cfg.demo_pods)),
        SourceKind::Prometheus => {
            let conn = cfg.prometheus_connection().map_err(RunError::Config)?;
            let url = crate::redact::userinfo(&conn.url).into_owned();
            let client = Client::new(conn).map_err(|(_, e)| RunError::Config(e))?;
            let pricing = match &cfg.pricing_file {
                Some(p) => crate::etl::pricing::Pricing::load(p).map_err(|e| {
                    RunError::Config(format!("{}: {e}", cfg.name_of("pricing_file")))
                })?,
                None => crate::etl::pricing::Pricing::default(),
            };
            tracing::info!(%url, resolution_s = cfg.resolution, concurrency = cfg.max_query_concurrency, "cost data from Prometheus");
            Arc::new(PrometheusSource::new(
                client,
                Settings {
                    resolution: Duration::from_secs(cfg.resolution),
                    max_query_duration: Duration::from_secs(
                        cfg.max_prometheus_query_duration_minutes * 60,
                    ),
                    cluster_filter: cfg
                        .prometheus_cluster_filter
                        .then(|| (cfg.prometheus_cluster_label.clone(), cfg.cluster_id.clone())),
                    pricing,
                },
            ))
        }
    })
}

/// Starts every actor. Must run inside an actix system.
pub fn start(parts: Parts) -> Replica {
    let metrics = Metrics::new();
    let supervisor = Supervisor::new();
    let election = parts.backend.name();
    let backoff = Backoff {
        first: parts.object_retry,
        max: OBJECT_RETRY_MAX.max(parts.object_retry),
    };
    let storage = Storage::new(
        StorageConfig {
            identity: parts.identity.clone(),
            cluster_id: parts.cluster_id.clone(),
            bucket: parts.bucket.clone(),
            bucket_description: parts.bucket_description,
            local: FileStore::new(parts.etl_dir.clone()),
            hourly_retention: parts.hourly_retention,
            daily_retention: parts.daily_retention,
            backoff,
            gc_grace: parts.gc_grace,
            heartbeat: parts.heartbeat,
            scrub_interval: parts.scrub_interval,
            metrics: metrics.clone(),
        },
        supervisor.lifeline("storage"),
    )
    .start();
    let poller = BackupPoller::new(
        parts.bucket,
        storage.clone(),
        parts.poll_interval,
        backoff,
        FileStore::new(parts.etl_dir.clone()),
        metrics.clone(),
        supervisor.lifeline("poller"),
    )
    .start();
    let etl_progress = crate::etl::status::EtlProgress::new(parts.source.name());
    let etl = EtlWriter::new(
        EtlConfig {
            cluster_id: parts.cluster_id.clone(),
            backfill: parts.backfill,
            hourly_retention: parts.hourly_retention,
            interval: parts.etl_interval,
            settle: parts.source.settle(),
            daily_retention: parts.daily_retention,
        },
        parts.source,
        storage.clone(),
        metrics.clone(),
        etl_progress.clone(),
        supervisor.lifeline("etl"),
    )
    .start();
    // Storage first: on demotion, writes stop before anything else hears of it.
    let subscribers = vec![
        storage.clone().recipient(),
        poller.clone().recipient(),
        etl.clone().recipient(),
    ];
    let elector = Elector::new(
        parts.backend,
        subscribers,
        metrics.clone(),
        &parts.lease_name,
        supervisor.lifeline("election"),
    )
    .start();
    storage.do_send(ElectionEvents {
        fenced: elector.clone().recipient(),
        bucket_term: elector.clone().recipient(),
    });
    let state = AppState {
        storage: storage.clone(),
        elector: elector.clone(),
        etl: etl.clone(),
        etl_progress,
        executor: api::executor::start(
            parts.max_cheap_queries,
            parts.query_threads,
            parts.max_heavy_queries,
        ),
        metrics,
        info: Arc::new(ReplicaInfo {
            identity: parts.identity,
            election,
            lease_name: parts.lease_name,
            lease_namespace: parts.lease_namespace,
            poll_interval: parts.poll_interval,
            etl_interval: parts.etl_interval,
            cluster_id: parts.cluster_id,
            version: env!("CARGO_PKG_VERSION"),
        }),
        shutting_down: Arc::new(AtomicBool::new(false)),
        supervisor,
        // The hourly retention is the ETL's: queries read hourly sets only as far back as it.
        limits: api::QueryLimits {
            hourly_retention: parts.hourly_retention,
            ..parts.limits
        },
        #[cfg(feature = "test-support")]
        debug: api::DebugActors {
            poller: poller.clone(),
            etl: etl.clone(),
        },
    };
    Replica {
        storage,
        poller,
        etl,
        elector,
        state,
    }
}

impl Replica {
    /// Ordered shutdown of the actors: readiness off, writes drained (the current write is
    /// abandoned before its manifest), leadership released.
    pub async fn shutdown(&self) {
        self.state.shutting_down.store(true, Ordering::SeqCst);
        self.state.supervisor.stopping();
        if let Err(e) = self.storage.send(Drain).await {
            tracing::warn!(error = %e, "storage did not drain");
        }
        if let Err(e) = self.elector.send(Shutdown).await {
            tracing::warn!(error = %e, "election did not shut down cleanly");
        }
    }

    /// Resolves when a critical actor has died.
    pub async fn failed(&self) -> Failure {
        self.state.supervisor.failed().await
    }
}

/// Runs a replica until SIGTERM or SIGINT, then shuts down in order within the configured
/// deadline. A second signal exits at once. A critical actor that dies ends the run with
/// [`RunError::Failed`] after the same ordered shutdown (so a leader still releases its lease).
pub async fn run(cfg: Config) -> Result<(), RunError> {
    // Everything that can fail on configuration is done before any actor starts, so a bad
    // setting stops the replica with its one line and nothing else.
    let listener = api::server::bind(cfg.listen()).map_err(|e| {
        RunError::Config(format!(
            "{}: cannot listen on {}: {e}",
            cfg.name_of("listen"),
            cfg.listen()
        ))
    })?;
    let parts = Parts::from_config(&cfg).await?;
    tracing::info!(
        identity = %parts.identity, election = parts.backend.name(), bucket = %parts.bucket_description,
        etl_dir = %parts.etl_dir.display(), listen = %cfg.listen(), "starting cost-model replica"
    );
    #[cfg(feature = "test-support")]
    tracing::warn!(
        "built with the test-support feature: debug routes that crash actors and stall queries are enabled; never deploy this binary"
    );
    let replica = start(parts);
    let state = replica.state.clone();
    let server = api::server::serve(listener, 2, move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .configure(api::configure)
    })
    .map_err(|e| RunError::Other(format!("cannot serve on {}: {e}", cfg.listen())))?;
    let handle = server.handle();
    let mut server_task = tokio::spawn(server);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| RunError::Other(format!("cannot handle SIGTERM: {e}")))?;
    let mut outcome = Ok(());
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        failure = replica.failed() => {
            tracing::error!(%failure, "shutting down");
            outcome = Err(RunError::Failed(failure));
        }
        res = &mut server_task => {
            let why = match res {
                Ok(Ok(())) => "the HTTP server stopped on its own".to_string(),
                Ok(Err(e)) => format!("the HTTP server failed: {e}"),
                Err(e) => format!("the HTTP server task failed: {e}"),
            };
            tracing::error!("{why}; shutting down");
            outcome = Err(RunError::Other(why));
        }
    }
    let deadline = cfg.shutdown_timeout;
    let ordered = async {
        replica.shutdown().await;
        handle.stop(true).await;
    };
    tokio::select! {
        () = ordered => tracing::info!("shutdown complete"),
        () = tokio::time::sleep(deadline) => tracing::warn!(?deadline, "shutdown deadline passed; exiting with work unfinished"),
        _ = term.recv() => tracing::warn!("second signal: exiting at once"),
        _ = tokio::signal::ctrl_c() => tracing::warn!("second signal: exiting at once"),
    }
    outcome
}
