//! Wiring: builds the actors from a [`Config`], serves the API, and shuts down in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;
use actix_web::{App, HttpServer, web};
use object_store::ObjectStore;

use crate::api::{self, AppState, ReplicaInfo};
use crate::config::{Config, ElectionMode};
use crate::election::{ElectionBackend, Elector, FollowerElection, Shutdown, StandaloneElection};
use crate::etl::demo::DemoCluster;
use crate::etl::source::DataSource;
use crate::etl::{EtlConfig, EtlWriter};
use crate::metrics::Metrics;
use crate::storage::filestore::FileStore;
use crate::storage::{BackupPoller, Drain, OnFenced, Storage, StorageConfig};

/// A running replica's actors.
pub struct Replica {
    pub storage: Addr<Storage>,
    pub poller: Addr<BackupPoller>,
    pub etl: Addr<EtlWriter>,
    pub elector: Addr<Elector>,
    pub state: AppState,
}

/// Everything a replica is built from; tests build one by hand.
pub struct Parts {
    pub identity: String,
    pub bucket: Arc<dyn ObjectStore>,
    pub bucket_description: String,
    pub etl_dir: std::path::PathBuf,
    pub source: Arc<dyn DataSource>,
    pub backend: Box<dyn ElectionBackend>,
    pub poll_interval: Duration,
    pub etl_interval: Duration,
    pub backfill: chrono::Duration,
    pub hourly_retention: chrono::Duration,
    pub daily_retention: chrono::Duration,
    pub cluster_id: String,
    pub lease_name: String,
    pub lease_namespace: Option<String>,
    pub query_threads: usize,
}

impl Parts {
    /// The parts a configuration describes (the election backend is chosen here).
    pub async fn from_config(cfg: &Config) -> anyhow::Result<Self> {
        let identity = cfg.identity();
        let (bucket, bucket_description) = match (&cfg.bucket_config, cfg.bucket_dir()) {
            (Some(path), _) => {
                let b = crate::storage::bucket::from_file(path)?;
                (b.store, b.description)
            }
            (None, Some(dir)) => {
                let d = dir.display().to_string();
                (
                    crate::storage::bucket::filesystem(&d)?,
                    format!("FILESYSTEM {d}"),
                )
            }
            (None, None) => anyhow::bail!("no bucket configured"),
        };
        let backend: Box<dyn ElectionBackend> = match cfg.election() {
            ElectionMode::Standalone => Box::new(StandaloneElection {
                identity: identity.clone(),
            }),
            ElectionMode::Follower => Box::new(FollowerElection),
            ElectionMode::Kubernetes => {
                crate::election::kubernetes::backend(cfg, &identity).await?
            }
        };
        Ok(Self {
            identity,
            bucket,
            bucket_description,
            etl_dir: cfg.etl_dir.clone(),
            source: Arc::new(DemoCluster::new(cfg.demo_seed, cfg.demo_pods)),
            backend,
            poll_interval: cfg.poll_interval,
            etl_interval: cfg.etl_interval,
            backfill: chrono::Duration::from_std(cfg.backfill)?,
            hourly_retention: chrono::Duration::hours(i64::from(cfg.hourly_retention)),
            daily_retention: chrono::Duration::days(i64::from(cfg.daily_retention)),
            cluster_id: cfg.cluster_id.clone(),
            lease_name: cfg.lease_name.clone(),
            lease_namespace: cfg.lease_namespace.clone(),
            query_threads: cfg.query_threads,
        })
    }
}

/// Starts every actor. Must run inside an actix system.
pub fn start(parts: Parts) -> Replica {
    let metrics = Metrics::new();
    let election = parts.backend.name();
    let term_floor = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let storage = Storage::new(StorageConfig {
        identity: parts.identity.clone(),
        bucket: parts.bucket.clone(),
        bucket_description: parts.bucket_description,
        local: FileStore::new(parts.etl_dir),
        hourly_retention: parts.hourly_retention,
        daily_retention: parts.daily_retention,
        metrics: metrics.clone(),
        term_floor: term_floor.clone(),
    })
    .start();
    let poller = BackupPoller::new(
        parts.bucket,
        storage.clone(),
        parts.poll_interval,
        metrics.clone(),
    )
    .start();
    let etl = EtlWriter::new(
        EtlConfig {
            cluster_id: parts.cluster_id.clone(),
            backfill: parts.backfill,
            hourly_retention: parts.hourly_retention,
            interval: parts.etl_interval,
        },
        parts.source,
        storage.clone(),
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
        term_floor,
    )
    .start();
    storage.do_send(OnFenced(elector.clone().recipient()));
    let state = AppState {
        storage: storage.clone(),
        elector: elector.clone(),
        executor: api::executor::start(parts.query_threads),
        metrics,
        info: Arc::new(ReplicaInfo {
            identity: parts.identity,
            election,
            lease_name: parts.lease_name,
            lease_namespace: parts.lease_namespace,
            poll_interval: parts.poll_interval,
            cluster_id: parts.cluster_id,
            version: env!("CARGO_PKG_VERSION"),
        }),
        shutting_down: Arc::new(AtomicBool::new(false)),
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
        if let Err(e) = self.storage.send(Drain).await {
            tracing::warn!(error = %e, "storage did not drain");
        }
        if let Err(e) = self.elector.send(Shutdown).await {
            tracing::warn!(error = %e, "election did not shut down cleanly");
        }
    }
}

/// Runs a replica until SIGTERM or SIGINT, then shuts down in order within the configured
/// deadline. A second signal exits at once.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let parts = Parts::from_config(&cfg).await?;
    tracing::info!(
        identity = %parts.identity, election = parts.backend.name(), bucket = %parts.bucket_description,
        etl_dir = %parts.etl_dir.display(), listen = %cfg.listen(), "starting cost-model replica"
    );
    let replica = start(parts);
    let state = replica.state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .configure(api::configure)
    })
    .workers(2)
    .shutdown_timeout(5)
    .disable_signals()
    .bind(cfg.listen())
    .map_err(|e| anyhow::anyhow!("cannot listen on {} (--listen): {e}", cfg.listen()))?
    .run();
    let handle = server.handle();
    let server_task = tokio::spawn(server);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        res = server_task => {
            res??;
            anyhow::bail!("HTTP server stopped on its own");
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
    Ok(())
}
