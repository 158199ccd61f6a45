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
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
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

    /// How often the leader scrubs the bucket: every object the manifest names checked for
    /// presence and size, some read and hashed, and what is missing or damaged put back.
    #[arg(long, env = "SCRUB_INTERVAL", default_value = "5m", value_parser = duration)]
    pub scrub_interval: Duration,

    /// demo or prometheus [default: prometheus when --prometheus-url is set, else demo].
    #[arg(long, env = "DATA_SOURCE", value_enum)]
    pub source: Option<SourceKind>,

    /// Prometheus base URL, with any path prefix (`http://prometheus:9090/prometheus`); Thanos,
    /// Mimir and VictoriaMetrics query URLs work too. Setting it selects the Prometheus source.
    #[arg(long, env = "PROMETHEUS_SERVER_ENDPOINT")]
    pub prometheus_url: Option<String>,

    /// A bearer token sent to Prometheus.
    #[arg(long, env = "DB_BEARER_TOKEN", hide_env_values = true)]
    pub prometheus_bearer_token: Option<String>,

    /// A file holding a bearer token for Prometheus, read again for every query (a projected
    /// service-account token rotates).
    #[arg(long, env = "PROMETHEUS_BEARER_TOKEN_FILE")]
    pub prometheus_bearer_token_file: Option<PathBuf>,

    /// Basic-auth user for Prometheus.
    #[arg(long, env = "DB_BASIC_AUTH_USERNAME")]
    pub prometheus_username: Option<String>,

    /// Basic-auth password for Prometheus.
    #[arg(long, env = "DB_BASIC_AUTH_PW", hide_env_values = true)]
    pub prometheus_password: Option<String>,

    /// The `X-Scope-OrgID` header (the tenant of Mimir, Cortex or Loki-style gateways).
    #[arg(long, env = "PROMETHEUS_HEADER_X_SCOPE_ORGID")]
    pub prometheus_org_id: Option<String>,

    /// An extra header for Prometheus, `Name: value`; repeat the flag for more.
    #[arg(long = "prometheus-header", value_name = "NAME: VALUE")]
    pub prometheus_headers: Vec<String>,

    /// A PEM file of CA certificates that sign Prometheus's certificate.
    #[arg(long, env = "PROMETHEUS_CA_FILE")]
    pub prometheus_ca_file: Option<PathBuf>,

    /// Accept any certificate from Prometheus (testing only).
    #[arg(long, env = "INSECURE_SKIP_VERIFY", default_value_t = false,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub prometheus_insecure_skip_verify: bool,

    /// How long one Prometheus query may take.
    #[arg(long, env = "PROMETHEUS_QUERY_TIMEOUT", default_value = "2m", value_parser = duration)]
    pub prometheus_timeout: Duration,

    /// Retries of a failed Prometheus query, with backoff, before the batch is given up until
    /// the next ETL run.
    #[arg(long, env = "PROMETHEUS_QUERY_RETRIES", default_value_t = 3)]
    pub prometheus_retries: u32,

    /// Prometheus queries in flight at once (Kubecost's maxQueryConcurrency).
    #[arg(long, env = "MAX_QUERY_CONCURRENCY", default_value_t = 5)]
    pub max_query_concurrency: usize,

    /// The longest range one Prometheus query covers, in minutes; longer ranges are split
    /// (Kubecost's maxPrometheusQueryDurationMinutes).
    #[arg(
        long,
        env = "ETL_MAX_PROMETHEUS_QUERY_DURATION_MINUTES",
        default_value_t = 1440
    )]
    pub max_prometheus_query_duration_minutes: u64,

    /// Query only this cluster's series (`<cluster label>="<CLUSTER_ID>"` on every selector), for
    /// a Prometheus or Thanos that holds several clusters.
    #[arg(long, env = "CURRENT_CLUSTER_ID_FILTER_ENABLED", default_value_t = false,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub prometheus_cluster_filter: bool,

    /// The label that names the cluster in Prometheus.
    #[arg(long, env = "PROM_CLUSTER_ID_LABEL", default_value = "cluster_id")]
    pub prometheus_cluster_label: String,

    /// Custom pricing JSON (OpenCost's `default.json` keys: CPU, spotCPU, RAM, spotRAM, GPU,
    /// spotGPU, storage, zoneNetworkEgress, regionNetworkEgress, internetNetworkEgress,
    /// defaultLBPrice; hourly, as strings) for nodes, volumes and load balancers Prometheus has
    /// no price for [default: OpenCost's default prices].
    #[arg(long, env = "PRICING_FILE")]
    pub pricing_file: Option<PathBuf>,

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

    /// Prometheus query resolution (the step of every range query), in seconds; it must divide
    /// an hour.
    #[arg(long, env = "ETL_RESOLUTION_SECONDS", default_value_t = 300)]
    pub resolution: u64,

    /// How often the leader rebuilds the current hour and day.
    #[arg(long, env = "ETL_REFRESH_INTERVAL", default_value = "1m", value_parser = duration)]
    pub etl_interval: Duration,

    /// The `cluster` property of every allocation.
    #[arg(long, env = "CLUSTER_ID", default_value = "cluster-one")]
    pub cluster_id: String,

    /// Threads that run heavy API queries (cheap ones have a thread of their own).
    #[arg(long, env = "QUERY_THREADS", default_value_t = 2)]
    pub query_threads: usize,

    /// Heavy queries admitted at once, running or queued; more are refused with 503.
    #[arg(long, env = "MAX_HEAVY_QUERIES", default_value_t = 4)]
    pub max_heavy_queries: usize,

    /// Cheap queries admitted at once, running or queued; more are refused with 503.
    #[arg(long, env = "MAX_CHEAP_QUERIES", default_value_t = 16)]
    pub max_cheap_queries: usize,

    /// Queries estimated above this cost (rows scanned, plus 250 per row returned) run in the
    /// heavy lane.
    #[arg(long, env = "HEAVY_QUERY_COST", default_value_t = crate::api::executor::HEAVY_COST)]
    pub heavy_query_cost: u64,

    /// Whose defaults the API takes where a parameter is absent: `kubecost` (idle included, one
    /// set per day when not accumulating, `/assets` an array of sets) or `opencost` (idle left
    /// out, one set for the window, `/assets` one map). Explicit parameters always win.
    #[arg(long, env = "API_DEFAULTS", value_enum, default_value_t = crate::query::Dialect::Kubecost)]
    pub api_defaults: crate::query::Dialect,

    /// The most sets (steps) one query may return.
    #[arg(long, env = "MAX_QUERY_STEPS", default_value_t = crate::query::DEFAULT_MAX_STEPS)]
    pub max_query_steps: usize,

    /// The largest response body, in bytes; a larger answer is refused with 413.
    #[arg(long, env = "MAX_RESPONSE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_response_bytes: usize,

    /// How long a query may run before it is abandoned with 503.
    #[arg(long, env = "QUERY_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub query_timeout: Duration,

    /// How long shutdown may take before what is left is abandoned.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = duration)]
    pub shutdown_timeout: Duration,

    /// text or json.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Where each setting came from, so errors name what the user set.
    #[arg(skip)]
    origins: Origins,
}

/// Where settings came from: the command line, an environment variable, or a Kubecost variable
/// that implies one (`LEADER_FOLLOWER_ENABLED`, `KUBECOST_NAMESPACE`, `API_PORT`).
#[derive(Clone, Debug, Default)]
struct Origins {
    /// Argument id → the environment variable (with its value) that set it.
    from_env: std::collections::BTreeMap<String, String>,
}

/// A configuration problem, named by the flag or environment variable the user set.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Bounds that keep every later computation in range (a retention of 4294967295 hours or a
/// backfill of 300000 years would overflow date arithmetic): generous for any real install.
const MAX_HOURLY_RETENTION_HOURS: u32 = 24 * 366;
const MAX_DAILY_RETENTION_DAYS: u32 = 3660;
const MAX_BACKFILL: Duration = Duration::from_secs(3660 * 86_400);
const MAX_TIMING: Duration = Duration::from_secs(86_400);

/// Reads an environment variable (a function so tests need not touch the process environment).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Config {
    /// Parses arguments (and the process environment, through clap) and applies Kubecost's
    /// environment variables. A bad value read from the environment is reported by its
    /// variable, not by the flag the user never typed.
    pub fn load(
        args: impl IntoIterator<Item = std::ffi::OsString>,
        env: EnvLookup<'_>,
    ) -> Result<Self, clap::Error> {
        use clap::{CommandFactory, FromArgMatches};
        let args: Vec<std::ffi::OsString> = args.into_iter().collect();
        let matches = Self::command()
            .try_get_matches_from(&args)
            .map_err(|e| blame_env(e, &args, env))?;
        let mut cfg = Self::from_arg_matches(&matches)?;
        for arg in Self::command().get_arguments() {
            let id = arg.get_id().as_str();
            if matches.value_source(id) == Some(clap::parser::ValueSource::EnvVariable)
                && let Some(var) = arg.get_env().and_then(|v| v.to_str())
            {
                let value = env(var).unwrap_or_default();
                let origin = if arg.is_hide_env_values_set() {
                    var.to_string()
                } else {
                    format!("{var}={value}")
                };
                cfg.origins.from_env.insert(id.to_string(), origin);
            }
        }
        cfg.apply_kubecost_env(env);
        Ok(cfg)
    }

    fn apply_kubecost_env(&mut self, env: EnvLookup<'_>) {
        if self.election.is_none()
            && let Some(v) = env("LEADER_FOLLOWER_ENABLED")
            && v.eq_ignore_ascii_case("true")
        {
            self.election = Some(ElectionMode::Kubernetes);
            self.origins
                .from_env
                .insert("election".into(), format!("LEADER_FOLLOWER_ENABLED={v}"));
        }
        if self.lease_namespace.is_none()
            && let Some(ns) = env("KUBECOST_NAMESPACE").filter(|v| !v.is_empty())
        {
            self.origins
                .from_env
                .insert("lease_namespace".into(), format!("KUBECOST_NAMESPACE={ns}"));
            self.lease_namespace = Some(ns);
        }
        if self.listen.is_none()
            && let Some(p) = env("API_PORT")
            && let Ok(port) = p.parse::<u16>()
        {
            self.listen = Some(SocketAddr::from(([0, 0, 0, 0], port)));
            self.origins
                .from_env
                .insert("listen".into(), format!("API_PORT={p}"));
        }
    }

    /// How to name a setting in an error: the environment variable (with its value) when that
    /// is where it came from, else the flag.
    pub fn name_of(&self, id: &str) -> String {
        if let Some(var) = self.origins.from_env.get(id) {
            return crate::redact::userinfo(var).into_owned();
        }
        format!("--{}", id.replace('_', "-"))
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

    /// How to reach Prometheus, from the `--prometheus-*` settings; the error names the setting.
    pub fn prometheus_connection(
        &self,
    ) -> Result<crate::etl::prometheus::client::Connection, String> {
        use crate::etl::prometheus::client::{Connection, Secret};
        let url = self.prometheus_url.clone().unwrap_or_default();
        let mut headers = Vec::new();
        for h in &self.prometheus_headers {
            let Some((name, value)) = h.split_once(':') else {
                // The value may be a credential: it is not echoed.
                return Err(
                    "--prometheus-header: a header must be `Name: value` (one had no colon)".into(),
                );
            };
            headers.push((name.trim().to_string(), Secret(value.trim().to_string())));
        }
        if let Some(org) = self.prometheus_org_id.as_ref().filter(|o| !o.is_empty()) {
            headers.push(("X-Scope-OrgID".into(), Secret(org.clone())));
        }
        let basic_auth = match (&self.prometheus_username, &self.prometheus_password) {
            (Some(u), p) if !u.is_empty() => {
                Some((u.clone(), Secret(p.clone().unwrap_or_default())))
            }
            (_, Some(p)) if !p.is_empty() => {
                return Err(format!(
                    "{} is set without {}",
                    self.name_of("prometheus_password"),
                    self.name_of("prometheus_username")
                ));
            }
            _ => None,
        };
        let bearer_token = self
            .prometheus_bearer_token
            .clone()
            .filter(|t| !t.is_empty())
            .map(Secret);
        if bearer_token.is_some() && self.prometheus_bearer_token_file.is_some() {
            return Err(format!(
                "{} and {} are exclusive: set one",
                self.name_of("prometheus_bearer_token"),
                self.name_of("prometheus_bearer_token_file")
            ));
        }
        if (bearer_token.is_some() || self.prometheus_bearer_token_file.is_some())
            && basic_auth.is_some()
        {
            return Err(format!(
                "{} and a bearer token are exclusive: set one",
                self.name_of("prometheus_username")
            ));
        }
        let conn = Connection {
            url,
            bearer_token,
            bearer_token_file: self.prometheus_bearer_token_file.clone(),
            basic_auth,
            headers,
            ca_file: self.prometheus_ca_file.clone(),
            insecure_skip_verify: self.prometheus_insecure_skip_verify,
            timeout: self.prometheus_timeout,
            retries: self.prometheus_retries,
            concurrency: self.max_query_concurrency,
        };
        // Building the client checks the URL, the CA file and the headers.
        crate::etl::prometheus::client::Client::new(conn.clone()).map_err(|(setting, e)| {
            let name = match setting {
                "ca_file" => self.name_of("prometheus_ca_file"),
                "headers" if self.prometheus_headers.is_empty() => {
                    self.name_of("prometheus_org_id")
                }
                "headers" => "--prometheus-header".to_string(),
                _ => self.name_of("prometheus_url"),
            };
            format!("{name}: {e}")
        })?;
        Ok(conn)
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

    /// Range and cross-flag rules; the error names what the user set.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = |id: &str| self.name_of(id);
        let d = |v: Duration| humantime::format_duration(v).to_string();
        let err = |m: String| Err(ConfigError(m));
        if self.election() == ElectionMode::Kubernetes
            && self.bucket_config.is_none()
            && self.bucket_dir.is_none()
        {
            return err(format!(
                "{} needs bucket backup: set --bucket-config (ETL_BUCKET_CONFIG) or --bucket-dir (ETL_BUCKET_DIR)",
                match self.origins.from_env.get("election") {
                    Some(var) => var.clone(),
                    None => "--election kubernetes".into(),
                }
            ));
        }
        if self.bucket_config.is_some() && self.bucket_dir.is_some() {
            return err(format!(
                "{} and {} are exclusive: set one",
                n("bucket_config"),
                n("bucket_dir")
            ));
        }
        for (id, v) in [
            ("lease_duration", self.lease_duration),
            ("renew_deadline", self.renew_deadline),
            ("retry_period", self.retry_period),
            ("poll_interval", self.poll_interval),
            ("scrub_interval", self.scrub_interval),
            ("etl_interval", self.etl_interval),
            ("shutdown_timeout", self.shutdown_timeout),
            ("query_timeout", self.query_timeout),
        ] {
            if v.is_zero() || v > MAX_TIMING {
                return err(format!(
                    "{} ({}) must be greater than 0 and at most 1 day",
                    n(id),
                    d(v)
                ));
            }
        }
        if self.lease_duration <= self.renew_deadline {
            return err(format!(
                "{} ({}) must be longer than {} ({})",
                n("lease_duration"),
                d(self.lease_duration),
                n("renew_deadline"),
                d(self.renew_deadline)
            ));
        }
        // client-go's rule: the renew deadline must leave room for a jittered retry.
        if self.renew_deadline.as_secs_f64() <= 1.2 * self.retry_period.as_secs_f64() {
            return err(format!(
                "{} ({}) must be longer than 1.2 × {} ({})",
                n("renew_deadline"),
                d(self.renew_deadline),
                n("retry_period"),
                d(self.retry_period)
            ));
        }
        if self.source() == SourceKind::Prometheus {
            if self.prometheus_url.is_none() {
                return err(format!(
                    "{} needs --prometheus-url (PROMETHEUS_SERVER_ENDPOINT)",
                    n("source")
                ));
            }
            if let Err(e) = self.prometheus_connection() {
                return err(e);
            }
            if let Some(path) = &self.pricing_file
                && let Err(e) = crate::etl::pricing::Pricing::load(path)
            {
                return err(format!("{}: {e}", n("pricing_file")));
            }
        }
        if self.max_query_concurrency == 0 || self.max_query_concurrency > 100 {
            return err(format!(
                "{} ({}) must be between 1 and 100",
                n("max_query_concurrency"),
                self.max_query_concurrency
            ));
        }
        if self.max_prometheus_query_duration_minutes == 0
            || self.max_prometheus_query_duration_minutes > 60 * 24 * 31
        {
            return err(format!(
                "{} ({}) must be between 1 and 44640 minutes",
                n("max_prometheus_query_duration_minutes"),
                self.max_prometheus_query_duration_minutes
            ));
        }
        if self.prometheus_retries > 20 {
            return err(format!(
                "{} ({}) must be at most 20",
                n("prometheus_retries"),
                self.prometheus_retries
            ));
        }
        if self.prometheus_timeout.is_zero() || self.prometheus_timeout > MAX_TIMING {
            return err(format!(
                "{} ({}) must be greater than 0 and at most 1 day",
                n("prometheus_timeout"),
                d(self.prometheus_timeout)
            ));
        }
        if !(1..=MAX_HOURLY_RETENTION_HOURS).contains(&self.hourly_retention) {
            return err(format!(
                "{} ({}) must be between 1 and {MAX_HOURLY_RETENTION_HOURS} hours",
                n("hourly_retention"),
                self.hourly_retention
            ));
        }
        if !(1..=MAX_DAILY_RETENTION_DAYS).contains(&self.daily_retention) {
            return err(format!(
                "{} ({}) must be between 1 and {MAX_DAILY_RETENTION_DAYS} days",
                n("daily_retention"),
                self.daily_retention
            ));
        }
        if self.backfill < Duration::from_secs(3600) || self.backfill > MAX_BACKFILL {
            return err(format!(
                "{} ({}) must be between 1h and {MAX_DAILY_RETENTION_DAYS}d",
                n("backfill"),
                d(self.backfill)
            ));
        }
        if !(60..=3600).contains(&self.resolution) || 3600 % self.resolution != 0 {
            return err(format!(
                "{} ({}) must be between 60 and 3600 seconds, at least twice the scrape interval, and divide an hour (60, 300, 600, ...)",
                n("resolution"),
                self.resolution
            ));
        }
        if self.demo_pods == 0 || self.demo_pods > 1_000_000 {
            return err(format!(
                "{} ({}) must be between 1 and 1000000",
                n("demo_pods"),
                self.demo_pods
            ));
        }
        for (id, v, max) in [
            ("query_threads", self.query_threads, 256),
            ("max_heavy_queries", self.max_heavy_queries, 10_000),
            ("max_cheap_queries", self.max_cheap_queries, 10_000),
            ("max_query_steps", self.max_query_steps, 1_000_000),
        ] {
            if v == 0 || v > max {
                return err(format!("{} ({v}) must be between 1 and {max}", n(id)));
            }
        }
        if self.heavy_query_cost == 0 {
            return err(format!("{} must be at least 1", n("heavy_query_cost")));
        }
        if self.max_response_bytes < 4096 {
            return err(format!(
                "{} ({}) must be at least 4096",
                n("max_response_bytes"),
                self.max_response_bytes
            ));
        }
        if self.etl_dir.exists() && !self.etl_dir.is_dir() {
            return err(format!(
                "{} ({}) is not a folder",
                n("etl_dir"),
                self.etl_dir.display()
            ));
        }
        if let Some(dir) = &self.bucket_dir
            && dir.exists()
            && !dir.is_dir()
        {
            return err(format!(
                "{} ({}) is not a folder",
                n("bucket_dir"),
                dir.display()
            ));
        }
        Ok(())
    }
}

/// Rewrites clap's error for a bad value that came from the environment so it names the
/// variable: `LEASE_DURATION=soon: invalid value ...` rather than blaming `--lease-duration`.
fn blame_env(e: clap::Error, args: &[std::ffi::OsString], env: EnvLookup<'_>) -> clap::Error {
    use clap::CommandFactory;
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return e;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return e;
    };
    let long = arg
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let typed = args.iter().any(|a| {
        a.to_str()
            .is_some_and(|a| a == long || a.starts_with(&format!("{long}=")))
    });
    if typed {
        return e;
    }
    let cmd = Config::command();
    let Some(var) = cmd
        .get_arguments()
        .find(|a| a.get_long().is_some_and(|l| format!("--{l}") == long))
        .and_then(|a| a.get_env())
        .and_then(|v| v.to_str())
    else {
        return e;
    };
    let value = env(var).unwrap_or_default();
    let value = crate::redact::userinfo(&value);
    let first = e.to_string();
    let first = crate::redact::userinfo(&first);
    let first = first.lines().next().unwrap_or_default();
    let first = first.trim_start_matches("error: ");
    clap::Error::raw(
        ErrorKind::ValueValidation,
        format!("{var}={value} (environment): {first}\n"),
    )
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
    fn prometheus_url_selects_the_prometheus_source_with_kubecosts_defaults() {
        let c = load(
            &["--prometheus-url", "http://prometheus:9090/prometheus"],
            &[],
        );
        assert_eq!(c.source(), SourceKind::Prometheus);
        c.validate().unwrap();
        let conn = c.prometheus_connection().unwrap();
        assert_eq!(conn.concurrency, 5);
        assert_eq!(c.max_prometheus_query_duration_minutes, 1440);
        assert_eq!(c.resolution, 300);
    }

    #[test]
    fn bad_prometheus_settings_name_the_setting() {
        let base = ["--prometheus-url", "http://prometheus:9090"];
        let err = |extra: &[&str]| {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            load(&args, &[]).validate().unwrap_err().to_string()
        };
        let e = err(&["--prometheus-header", "Authorization Bearer s3cret"]);
        assert!(
            e.contains("--prometheus-header") && !e.contains("s3cret"),
            "{e}"
        );
        let e = err(&["--prometheus-header", "Bad Name: x"]);
        assert!(
            e.contains("--prometheus-header") && e.contains("Bad Name"),
            "{e}"
        );
        let e = err(&["--prometheus-password", "hunter2"]);
        assert!(
            e.contains("--prometheus-username") && !e.contains("hunter2"),
            "{e}"
        );
        let e = err(&["--prometheus-ca-file", "/nonexistent/ca.pem"]);
        assert!(e.contains("--prometheus-ca-file"), "{e}");
        let e = err(&["--resolution", "420"]);
        assert!(
            e.contains("--resolution") && e.contains("divide an hour"),
            "{e}"
        );
        let e = err(&["--max-query-concurrency", "0"]);
        assert!(e.contains("--max-query-concurrency"), "{e}");
        let e = load(&["--prometheus-url", "ftp://x"], &[])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--prometheus-url"), "{e}");
        let e = load(&["--prometheus-url", "http://u:s3cret@x"], &[])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--prometheus-url") && !e.contains("s3cret"),
            "{e}"
        );
        let e = load(&["--source", "prometheus"], &[])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--prometheus-url"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let pricing = dir.path().join("p.json");
        std::fs::write(&pricing, r#"{"CPU":"lots"}"#).unwrap();
        let e = err(&["--pricing-file", pricing.to_str().unwrap()]);
        assert!(e.contains("--pricing-file") && e.contains("`CPU`"), "{e}");
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
