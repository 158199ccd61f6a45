//! Configuration: one typed struct, every flag also read from an environment variable, durations
//! in human form. Flag names are fixed: scripts outside the project use them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// How this replica takes part in the election.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ElectionMode {
    /// Always the leader: a single install.
    Standalone,
    /// A `coordination.k8s.io/v1` Lease decides; needs a bucket.
    Kubernetes,
    /// Never leads: a read replica of the bucket.
    Follower,
}

impl ElectionMode {
    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            ElectionMode::Standalone => "standalone",
            ElectionMode::Kubernetes => "kubernetes",
            ElectionMode::Follower => "follower",
        }
    }
}

/// Where cost data comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    /// The embedded, deterministic demo cluster.
    Demo,
    /// A Prometheus server with OpenCost's metrics.
    Prometheus,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{e} (expected a duration such as 15s, 2m or 7d)"))
}

/// The replica's configuration.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "cost-model",
    version,
    about = "A highly available replica of the Kubecost cost-model container"
)]
pub struct Config {
    /// HTTP address of the API, metrics and status page [env: LISTEN_ADDR, or Kubecost's API_PORT
    /// for the port].
    #[arg(long, env = "LISTEN_ADDR")]
    pub listen: Option<SocketAddr>,

    /// The local ETL file store.
    #[arg(long, env = "ETL_DIR", default_value = "./data/etl")]
    pub etl_dir: PathBuf,

    /// Kubecost bucket-secret YAML file (`type:` + `config:` + optional `prefix:`).
    #[arg(long, env = "ETL_BUCKET_CONFIG")]
    pub bucket_config: Option<PathBuf>,

    /// A FILESYSTEM bucket in a local folder [default: ./data/bucket when no --bucket-config and
    /// the election is not kubernetes].
    #[arg(long, env = "ETL_BUCKET_DIR")]
    pub bucket_dir: Option<PathBuf>,

    /// standalone (always leader), kubernetes (Lease) or follower (read replica) [default:
    /// standalone; kubernetes when Kubecost's LEADER_FOLLOWER_ENABLED=true].
    #[arg(long, env = "ELECTION", value_enum)]
    pub election: Option<ElectionMode>,

    /// This replica's name in the Lease [default: the hostname].
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// The Lease object.
    #[arg(long, env = "LEASE_NAME", default_value = "cost-model-leader")]
    pub lease_name: String,

    /// The Lease's namespace [env: POD_NAMESPACE, or Kubecost's KUBECOST_NAMESPACE; default:
    /// the kubeconfig's or service account's namespace].
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// How long a lease is valid without renewal (client-go's LeaseDuration).
    #[arg(long, env = "LEASE_DURATION", default_value = "15s", value_parser = duration)]
    pub lease_duration: Duration,

    /// How long the leader keeps trying to renew before it steps down (client-go's RenewDeadline).
    #[arg(long, env = "RENEW_DEADLINE", default_value = "10s", value_parser = duration)]
    pub renew_deadline: Duration,

    /// Pause between election attempts (client-go's RetryPeriod).
    #[arg(long, env = "RETRY_PERIOD", default_value = "2s", value_parser = duration)]
    pub retry_period: Duration,

    /// How often a follower reads the bucket.
    #[arg(long, env = "BACKUP_POLL_INTERVAL", default_value = "30s", value_parser = duration)]
    pub poll_interval: Duration,

    /// demo or prometheus [default: prometheus when --prometheus-url is set, else demo].
    #[arg(long, env = "DATA_SOURCE", value_enum)]
    pub source: Option<SourceKind>,

    /// Prometheus base URL.
    #[arg(long, env = "PROMETHEUS_SERVER_ENDPOINT")]
    pub prometheus_url: Option<String>,

    /// Pods running at once in the demo cluster.
    #[arg(long, env = "DEMO_PODS", default_value_t = 300)]
    pub demo_pods: usize,

    /// Seed of the demo cluster: same seed, same data on every replica.
    #[arg(long, env = "DEMO_SEED", default_value_t = 20_240_601)]
    pub demo_seed: u64,

    /// How far back the leader builds on first start.
    #[arg(long, env = "ETL_BACKFILL", default_value = "7d", value_parser = duration)]
    pub backfill: Duration,

    /// Days of daily sets kept.
    #[arg(long, env = "ETL_DAILY_STORE_DURATION_DAYS", default_value_t = 91)]
    pub daily_retention: u32,

    /// Hours of hourly sets kept.
    #[arg(long, env = "ETL_HOURLY_STORE_DURATION_HOURS", default_value_t = 49)]
    pub hourly_retention: u32,

    /// Prometheus query resolution, in seconds.
    #[arg(long, env = "ETL_RESOLUTION_SECONDS", default_value_t = 300)]
    pub resolution: u64,

    /// How often the leader rebuilds the current hour and day.
    #[arg(long, env = "ETL_REFRESH_INTERVAL", default_value = "1m", value_parser = duration)]
    pub etl_interval: Duration,

    /// The `cluster` property of every allocation.
    #[arg(long, env = "CLUSTER_ID", default_value = "cluster-one")]
    pub cluster_id: String,

    /// Threads that run API queries.
    #[arg(long, env = "QUERY_THREADS", default_value_t = 2)]
    pub query_threads: usize,

    /// How long shutdown may take before what is left is abandoned.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = duration)]
    pub shutdown_timeout: Duration,

    /// text or json.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// A configuration problem, named by flag.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Reads an environment variable (a function so tests need not touch the process environment).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Config {
    /// Parses arguments (and the process environment, through clap) and applies Kubecost's
    /// environment variables and the cross-flag rules.
    pub fn load(
        args: impl IntoIterator<Item = std::ffi::OsString>,
        env: EnvLookup<'_>,
    ) -> Result<Self, clap::Error> {
        let mut cfg = Self::try_parse_from(args)?;
        cfg.apply_kubecost_env(env);
        Ok(cfg)
    }

    fn apply_kubecost_env(&mut self, env: EnvLookup<'_>) {
        if self.election.is_none()
            && env("LEADER_FOLLOWER_ENABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            self.election = Some(ElectionMode::Kubernetes);
        }
        if self.lease_namespace.is_none() {
            self.lease_namespace = env("KUBECOST_NAMESPACE").filter(|v| !v.is_empty());
        }
        if self.listen.is_none()
            && let Some(port) = env("API_PORT").and_then(|p| p.parse::<u16>().ok())
        {
            self.listen = Some(SocketAddr::from(([0, 0, 0, 0], port)));
        }
    }

    /// The election mode in force.
    pub fn election(&self) -> ElectionMode {
        self.election.unwrap_or(ElectionMode::Standalone)
    }

    /// The listen address in force.
    pub fn listen(&self) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 9003)))
    }

    /// The data source in force.
    pub fn source(&self) -> SourceKind {
        self.source.unwrap_or(if self.prometheus_url.is_some() {
            SourceKind::Prometheus
        } else {
            SourceKind::Demo
        })
    }

    /// The identity in force: `--identity`/`POD_NAME`, else the hostname.
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .ok()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "cost-model".to_string())
            })
    }

    /// The bucket folder when no bucket config is given (the `FILESYSTEM` shortcut).
    pub fn bucket_dir(&self) -> Option<PathBuf> {
        match (&self.bucket_config, &self.bucket_dir) {
            (Some(_), _) => None,
            (None, Some(d)) => Some(d.clone()),
            (None, None) if self.election() != ElectionMode::Kubernetes => {
                Some(PathBuf::from("./data/bucket"))
            }
            (None, None) => None,
        }
    }

    /// Cross-flag rules; the error names the flags.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.election() == ElectionMode::Kubernetes
            && self.bucket_config.is_none()
            && self.bucket_dir.is_none()
        {
            return Err(ConfigError(
                "--election kubernetes needs bucket backup: set --bucket-config (ETL_BUCKET_CONFIG) or --bucket-dir (ETL_BUCKET_DIR)".into(),
            ));
        }
        if self.bucket_config.is_some() && self.bucket_dir.is_some() {
            return Err(ConfigError(
                "--bucket-config and --bucket-dir are exclusive: set one".into(),
            ));
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(ConfigError(format!(
                "--lease-duration ({}) must be longer than --renew-deadline ({})",
                humantime::format_duration(self.lease_duration),
                humantime::format_duration(self.renew_deadline)
            )));
        }
        // client-go's rule: the renew deadline must leave room for a jittered retry.
        if self.renew_deadline.as_secs_f64() <= 1.2 * self.retry_period.as_secs_f64() {
            return Err(ConfigError(format!(
                "--renew-deadline ({}) must be longer than 1.2 × --retry-period ({})",
                humantime::format_duration(self.renew_deadline),
                humantime::format_duration(self.retry_period)
            )));
        }
        if self.poll_interval.is_zero() {
            return Err(ConfigError("--poll-interval must be greater than 0".into()));
        }
        if self.etl_interval.is_zero() {
            return Err(ConfigError("--etl-interval must be greater than 0".into()));
        }
        if self.source() == SourceKind::Prometheus {
            return Err(ConfigError(
                "--source prometheus (or --prometheus-url) is not supported by this build yet; use --source demo".into(),
            ));
        }
        if self.hourly_retention == 0 || self.daily_retention == 0 {
            return Err(ConfigError(
                "--hourly-retention and --daily-retention must be at least 1".into(),
            ));
        }
        if self.demo_pods == 0 || self.demo_pods > 1_000_000 {
            return Err(ConfigError(
                "--demo-pods must be between 1 and 1000000".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str], env: &[(&str, &str)]) -> Config {
        let env: std::collections::HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.get(k).cloned();
        Config::load(
            std::iter::once("cost-model")
                .chain(args.iter().copied())
                .map(Into::into),
            &lookup,
        )
        .unwrap()
    }

    #[test]
    fn defaults_are_the_embedded_install() {
        let c = load(&[], &[]);
        assert_eq!(c.election(), ElectionMode::Standalone);
        assert_eq!(c.listen().port(), 9003);
        assert_eq!(c.bucket_dir(), Some(PathBuf::from("./data/bucket")));
        assert_eq!(c.source(), SourceKind::Demo);
        assert_eq!(c.lease_duration, Duration::from_secs(15));
        c.validate().unwrap();
    }

    #[test]
    fn kubecost_environment_is_honoured() {
        let c = load(
            &[],
            &[
                ("LEADER_FOLLOWER_ENABLED", "true"),
                ("API_PORT", "9100"),
                ("KUBECOST_NAMESPACE", "kubecost"),
            ],
        );
        assert_eq!(c.election(), ElectionMode::Kubernetes);
        assert_eq!(c.listen().port(), 9100);
        assert_eq!(c.lease_namespace.as_deref(), Some("kubecost"));
    }

    #[test]
    fn kubernetes_without_bucket_names_the_setting() {
        let e = load(&["--election", "kubernetes"], &[])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--bucket-config"), "{e}");
    }

    #[test]
    fn bad_timings_are_rejected() {
        let e = load(&["--lease-duration", "5s"], &[])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--lease-duration"), "{e}");
        let r = Config::load(
            ["cost-model", "--poll-interval", "soon"].map(Into::into),
            &|_| None,
        );
        assert!(r.unwrap_err().to_string().contains("--poll-interval"));
    }
}
