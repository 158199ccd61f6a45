//! The bucket: Kubecost's bucket-secret YAML (`type:` + `config:` + optional `prefix:`, Thanos
//! objstore keys) mapped onto `object_store` builders.
//!
//! [`from_yaml`] parses the text ([`parse`]), hands the backend's section to its builder function
//! ([`s3`], [`gcs`], [`azure`]; [`filesystem`] for `FILESYSTEM`), builds the store and applies
//! the prefix.
//!
//! Parsing is strict, as Kubecost's is: an unknown key is an error that names it with its section
//! (`config.buckit`, `config.http_config.idle_timeout`), and so is a value of the wrong type.
//! Thanos keys that `object_store` has no equivalent for are accepted, and each one that is set
//! is named in a warning when the bucket is built ([`Backend::ignored`]).
//!
//! Credentials: without static credentials in the secret, a backend starts from its builder's
//! `from_env()` (environment variables, then web identity, instance or managed-identity
//! metadata when the store first needs a token) and every key the secret sets is applied on top;
//! with static credentials it starts from an empty builder, so nothing in the environment can
//! override them. The builder functions take the "start from the environment" step as a
//! parameter so tests can pass a fixed builder instead of reading the process environment.
//!
//! No credential reaches a log, the status page or an error: the secret's credential fields
//! print as `***` in `Debug`, value errors never quote the value, builder errors pass through
//! [`crate::redact::userinfo`] with the configured credentials scrubbed, [`Bucket::description`]
//! names only the type, bucket and prefix, and the store handed out prints that description in
//! `Debug` (object_store's own `Debug` of an Azure store includes the decoded account key).
//! An endpoint with userinfo (`http://user:pass@host`) is rejected: it is not a credential
//! source for any backend, see [`BucketConfigError::Invalid`].

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    ClientConfigKey, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
    RetryConfig,
};
use serde::Deserialize;
use serde_yaml_ng::Value;

/// A bad bucket configuration. No variant's text contains a credential.
#[derive(Debug, thiserror::Error)]
pub enum BucketConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is far larger than any bucket secret.
    #[error("{path} is larger than {MAX_SECRET_BYTES} bytes: not a bucket secret")]
    TooLarge {
        /// The file.
        path: String,
    },
    /// The bucket folder could not be created.
    #[error("cannot create the bucket folder {path}: {source}")]
    Folder {
        /// The folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not YAML; the message says where.
    #[error("bucket config: {0}")]
    Parse(String),
    /// A key is unknown, missing, of the wrong type, or its value is not accepted. The reason
    /// never quotes a credential (nor any value of the wrong type). An endpoint with userinfo
    /// (`user:password@host`) is one of these: userinfo is no credential source for S3 (requests
    /// are signed with SigV4 from `access_key`/`secret_key` or the environment) nor for Azure, so
    /// stripping it silently would leave a secret that looks used while the store quietly signs
    /// with another identity, or with none.
    #[error("bucket config: {key}: {reason}")]
    Invalid {
        /// Where: `type`, `config.bucket`, `config.http_config.idle_conn_timeout`, ...
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The builder rejected the settings.
    #[error("bucket config ({kind}): {message}")]
    Build {
        /// The bucket type.
        kind: &'static str,
        /// What the builder said, with URL userinfo and the configured credentials replaced by
        /// `***`.
        message: String,
    },
}

/// The largest bucket-secret file read: a real one is a few hundred bytes.
const MAX_SECRET_BYTES: u64 = 1024 * 1024;

fn invalid(key: &str, reason: impl Into<String>) -> BucketConfigError {
    BucketConfigError::Invalid {
        key: key.to_string(),
        reason: reason.into(),
    }
}

impl From<de::Error> for BucketConfigError {
    fn from(e: de::Error) -> Self {
        let key = match e.path {
            Some(p) if !p.is_empty() => p,
            _ => "(top level)".to_string(),
        };
        Self::Invalid {
            key,
            reason: e.reason,
        }
    }
}

/// A credential from the secret. `Debug` prints `***`; the value is read only by the builder
/// functions.
#[derive(Deserialize)]
#[serde(transparent)]
struct Credential(String);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// `Some` when the option holds more than whitespace: Thanos reads an empty string as unset
/// (Kubecost's templates carry `endpoint: ""`).
fn set(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn set_credential(v: &Option<Credential>) -> Option<&str> {
    v.as_ref().map(|c| c.0.trim()).filter(|s| !s.is_empty())
}

/// The secret as written: `type`, `config`, `prefix`.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `type`, `config` and an optional `prefix`"
)]
struct RawSecret {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    config: Value,
    #[serde(default)]
    prefix: Option<String>,
}

/// A parsed bucket secret, before any store is built.
#[derive(Debug)]
pub struct BucketSecret {
    /// The backend and its settings.
    pub backend: Backend,
    /// The prefix every object is stored under, without leading or trailing `/`; `None` when
    /// the secret sets none (or only slashes).
    pub prefix: Option<String>,
}

/// The `type:` of a bucket secret with its `config:` section.
#[derive(Debug)]
pub enum Backend {
    /// `type: S3`: AWS S3 or an S3-compatible server (MinIO, Ceph, ...).
    S3(S3Config),
    /// `type: GCS`: Google Cloud Storage.
    Gcs(GcsConfig),
    /// `type: AZURE`: Azure Blob Storage.
    Azure(AzureConfig),
    /// `type: FILESYSTEM`: a local folder.
    Filesystem(FilesystemConfig),
}

/// Thanos `http_config` (S3 and Azure).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of HTTP client settings")]
struct HttpConfig {
    #[serde(default)]
    insecure_skip_verify: Option<bool>,
    #[serde(default)]
    response_header_timeout: Option<String>,
    #[serde(default)]
    idle_conn_timeout: Option<String>,
    #[serde(default)]
    tls_handshake_timeout: Option<String>,
    #[serde(default)]
    expect_continue_timeout: Option<String>,
    #[serde(default)]
    max_idle_conns: Option<u64>,
    #[serde(default)]
    max_idle_conns_per_host: Option<u64>,
    #[serde(default)]
    max_conns_per_host: Option<u64>,
    #[serde(default)]
    tls_config: Option<Value>,
}

/// Thanos S3 `trace`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with `enable`")]
struct TraceConfig {
    #[serde(default)]
    enable: bool,
}

/// Thanos S3 `sse_config`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of server-side encryption settings"
)]
struct SseConfig {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    kms_key_id: Option<String>,
    #[serde(default)]
    kms_encryption_context: Option<Value>,
    /// Thanos: the path of a file holding the SSE-C key. Held as a credential in case a key was
    /// pasted in instead.
    #[serde(default)]
    encryption_key: Option<Credential>,
}

/// The `config:` section of `type: S3` (Thanos keys). Credentials print as `***` in `Debug`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of S3 settings")]
pub struct S3Config {
    bucket: String,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    access_key: Option<Credential>,
    #[serde(default)]
    secret_key: Option<Credential>,
    #[serde(default)]
    insecure: Option<bool>,
    #[serde(default)]
    aws_sdk_auth: bool,
    #[serde(default)]
    signature_version2: bool,
    #[serde(default)]
    put_user_metadata: Option<Value>,
    #[serde(default)]
    http_config: Option<HttpConfig>,
    #[serde(default)]
    trace: Option<TraceConfig>,
    #[serde(default)]
    list_objects_version: Option<String>,
    #[serde(default)]
    part_size: Option<u64>,
    #[serde(default)]
    sse_config: Option<SseConfig>,
    #[serde(default)]
    sts_endpoint: Option<String>,
}

/// The `config:` section of `type: GCS`. The service account prints as `***` in `Debug`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of GCS settings")]
pub struct GcsConfig {
    bucket: String,
    /// The JSON of a service-account key (not a path).
    #[serde(default)]
    service_account: Option<Credential>,
}

/// The `config:` section of `type: AZURE` (Thanos keys). Credentials print as `***` in `Debug`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of Azure settings")]
pub struct AzureConfig {
    #[serde(default)]
    storage_account: Option<String>,
    #[serde(default)]
    storage_account_key: Option<Credential>,
    #[serde(default)]
    storage_connection_string: Option<Credential>,
    container: String,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    max_retries: Option<u64>,
    #[serde(default)]
    msi_resource: Option<String>,
    #[serde(default)]
    user_assigned_id: Option<String>,
    #[serde(default)]
    pipeline_config: Option<Value>,
    #[serde(default)]
    reader_config: Option<Value>,
    #[serde(default)]
    http_config: Option<HttpConfig>,
}

/// The `config:` section of `type: FILESYSTEM`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with `directory`")]
pub struct FilesystemConfig {
    directory: String,
}

/// A key the secret sets that has no effect here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// Its path, e.g. `config.put_user_metadata`.
    pub key: &'static str,
    /// Why it has no effect.
    pub why: &'static str,
}

impl Backend {
    /// The keys the secret sets that `object_store` has no equivalent for. [`from_yaml`] names
    /// each in a warning; they are never silently dropped.
    pub fn ignored(&self) -> Vec<Ignored> {
        let mut out = Vec::new();
        let mut add = |key, why| out.push(Ignored { key, why });
        match self {
            Backend::S3(c) => {
                if c.signature_version2 {
                    add(
                        "config.signature_version2",
                        "requests are signed with SigV4",
                    );
                }
                if c.aws_sdk_auth && c.has_static_keys() {
                    add(
                        "config.aws_sdk_auth",
                        "access_key and secret_key are set, and they are used",
                    );
                }
                if c.put_user_metadata.as_ref().is_some_and(not_empty) {
                    add(
                        "config.put_user_metadata",
                        "no user metadata or extra headers (such as X-Amz-Acl) are sent",
                    );
                }
                if c.trace.as_ref().is_some_and(|t| t.enable) {
                    add("config.trace", "request tracing is not implemented");
                }
                if set(&c.list_objects_version).is_some_and(|v| !v.eq_ignore_ascii_case("v2")) {
                    add(
                        "config.list_objects_version",
                        "listing always uses ListObjectsV2",
                    );
                }
                if c.part_size.is_some() {
                    add(
                        "config.part_size",
                        "multipart part sizes are chosen by the writer",
                    );
                }
                if let Some(sse) = &c.sse_config {
                    if sse.kms_encryption_context.as_ref().is_some_and(not_empty) {
                        add(
                            "config.sse_config.kms_encryption_context",
                            "object_store sends no KMS encryption context",
                        );
                    }
                    if set_credential(&sse.encryption_key).is_some() {
                        add(
                            "config.sse_config.encryption_key",
                            "it is used only by type SSE-C, which is not supported",
                        );
                    }
                }
                if let Some(h) = &c.http_config {
                    ignored_http(h, &mut add);
                }
            }
            Backend::Azure(c) => {
                if set(&c.msi_resource).is_some() {
                    add(
                        "config.msi_resource",
                        "managed-identity tokens are always requested for Azure Storage",
                    );
                }
                if c.pipeline_config.as_ref().is_some_and(not_empty) {
                    add(
                        "config.pipeline_config",
                        "retries follow object_store's policy (max_retries sets the count)",
                    );
                }
                if c.reader_config.as_ref().is_some_and(not_empty) {
                    add(
                        "config.reader_config",
                        "reads follow object_store's retry policy",
                    );
                }
                if let Some(h) = &c.http_config {
                    ignored_http(h, &mut add);
                }
            }
            Backend::Gcs(_) | Backend::Filesystem(_) => {}
        }
        out
    }

    fn kind(&self) -> &'static str {
        match self {
            Backend::S3(_) => "S3",
            Backend::Gcs(_) => "GCS",
            Backend::Azure(_) => "AZURE",
            Backend::Filesystem(_) => "FILESYSTEM",
        }
    }
}

fn not_empty(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Mapping(m) => !m.is_empty(),
        Value::Sequence(s) => !s.is_empty(),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

fn ignored_http(h: &HttpConfig, add: &mut impl FnMut(&'static str, &'static str)) {
    if h.tls_handshake_timeout.is_some() {
        add(
            "config.http_config.tls_handshake_timeout",
            "the client has no separate TLS handshake timeout",
        );
    }
    if h.expect_continue_timeout.is_some() {
        add(
            "config.http_config.expect_continue_timeout",
            "requests are not sent with Expect: 100-continue",
        );
    }
    if h.max_idle_conns.is_some_and(|n| n > 0) {
        add(
            "config.http_config.max_idle_conns",
            "only a per-host idle limit exists (max_idle_conns_per_host)",
        );
    }
    if h.max_conns_per_host.is_some_and(|n| n > 0) {
        add(
            "config.http_config.max_conns_per_host",
            "the client has no connection limit per host",
        );
    }
    if h.tls_config.as_ref().is_some_and(not_empty) {
        add(
            "config.http_config.tls_config",
            "no client certificate or extra CA is loaded (insecure_skip_verify is honoured)",
        );
    }
}

/// Parses the text of a bucket-secret file. Unknown keys, missing keys and values of the wrong
/// type are [`BucketConfigError::Invalid`] naming the key with its section.
pub fn parse(text: &str) -> Result<BucketSecret, BucketConfigError> {
    let root: Value = serde_yaml_ng::from_str(text)
        .map_err(|e| BucketConfigError::Parse(crate::redact::userinfo(&e.to_string()).into()))?;
    let raw: RawSecret = de::from_value(root, "")?;
    // A missing or empty `config:` reads as an empty section, so the error names the key that
    // is required rather than the section's type.
    let config = match raw.config {
        Value::Null => Value::Mapping(Default::default()),
        v => v,
    };
    let backend = match raw.kind.trim().to_ascii_uppercase().as_str() {
        "S3" => Backend::S3(de::from_value(config, "config")?),
        "GCS" => Backend::Gcs(de::from_value(config, "config")?),
        "AZURE" => Backend::Azure(de::from_value(config, "config")?),
        "FILESYSTEM" => Backend::Filesystem(de::from_value(config, "config")?),
        _ => {
            return Err(invalid(
                "type",
                format!("{:?} is not one of S3, GCS, AZURE, FILESYSTEM", raw.kind),
            ));
        }
    };
    let prefix = set(&raw.prefix)
        .map(|p| p.trim_matches('/').to_string())
        .filter(|p| !p.is_empty());
    Ok(BucketSecret { backend, prefix })
}

/// Builds the bucket from the text of a bucket-secret file: parse, warn about keys without
/// effect, build the backend's store (starting from the process environment where the secret
/// has no static credentials), apply the prefix.
pub fn from_yaml(text: &str) -> Result<Bucket, BucketConfigError> {
    let secret = parse(text)?;
    for i in secret.backend.ignored() {
        tracing::warn!(
            key = i.key,
            "bucket config: {} is accepted but has no effect here: {}",
            i.key,
            i.why
        );
    }
    let kind = secret.backend.kind();
    let (store, description): (Arc<dyn ObjectStore>, String) = match &secret.backend {
        Backend::S3(c) => {
            let store = s3(c, AmazonS3Builder::from_env)?
                .build()
                .map_err(|e| build_error(kind, &e, &c.secrets()))?;
            (Arc::new(store), format!("S3 {}", c.bucket.trim()))
        }
        Backend::Gcs(c) => {
            let store = gcs(c, GoogleCloudStorageBuilder::from_env)?
                .build()
                .map_err(|e| build_error(kind, &e, &c.secrets()))?;
            (Arc::new(store), format!("GCS {}", c.bucket.trim()))
        }
        Backend::Azure(c) => {
            let store = azure(c, MicrosoftAzureBuilder::from_env)?
                .build()
                .map_err(|e| build_error(kind, &e, &c.secrets()))?;
            (Arc::new(store), format!("AZURE {}", c.container.trim()))
        }
        Backend::Filesystem(c) => {
            let dir = c.directory.trim();
            if dir.is_empty() {
                return Err(invalid("config.directory", "must not be empty"));
            }
            (filesystem(dir)?, format!("FILESYSTEM {dir}"))
        }
    };
    let (store, description): (Arc<dyn ObjectStore>, String) = match secret.prefix {
        Some(prefix) => (
            Arc::new(PrefixStore::new(store, prefix.as_str())),
            format!("{description}/{prefix}"),
        ),
        None => (store, description),
    };
    Ok(Bucket {
        store: Arc::new(Described {
            inner: store,
            description: description.clone(),
        }),
        description,
    })
}

/// A builder error as text: URL userinfo and every configured credential replaced by `***`.
fn build_error(kind: &'static str, e: &object_store::Error, secrets: &[&str]) -> BucketConfigError {
    BucketConfigError::Build {
        kind,
        message: scrub(&e.to_string(), secrets),
    }
}

fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = crate::redact::userinfo(text).into_owned();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(*s, "***");
    }
    out
}

fn nonempty_required(key: &str, v: &str) -> Result<(), BucketConfigError> {
    if v.trim().is_empty() {
        Err(invalid(key, "must not be empty"))
    } else {
        Ok(())
    }
}

/// An endpoint as written (Thanos: `host[:port]`; a URL is accepted too), made a URL.
struct EndpointUrl {
    url: String,
    host: String,
    http: bool,
}

/// `endpoint` as a URL: the scheme is kept when there is one, else `http` when `insecure`, else
/// `https`. Userinfo is an error (see [`BucketConfigError::Invalid`]); the error quotes nothing
/// of the endpoint.
fn endpoint_url(
    key: &str,
    endpoint: &str,
    insecure: bool,
) -> Result<EndpointUrl, BucketConfigError> {
    let (scheme, rest) = match endpoint.split_once("://") {
        Some((s, r)) => (Some(s.to_ascii_lowercase()), r),
        None => (None, endpoint),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(invalid(
            key,
            "contains user information (user:password@); it is not used as a credential: \
             put credentials in access_key/secret_key (S3) or storage_account_key (Azure), \
             or leave them out to use the environment, and remove them from the endpoint",
        ));
    }
    let host = authority
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(authority, |(h, _)| h)
        .to_ascii_lowercase();
    if host.is_empty() {
        return Err(invalid(key, "has no host"));
    }
    let scheme = match scheme.as_deref() {
        Some(s @ ("http" | "https")) => s.to_string(),
        Some(_) => return Err(invalid(key, "the scheme must be http or https")),
        None if insecure => "http".to_string(),
        None => "https".to_string(),
    };
    Ok(EndpointUrl {
        url: format!("{scheme}://{rest}"),
        host,
        http: scheme == "http",
    })
}

/// `http_config` as client settings, applied key by key so settings from the environment that
/// the secret does not mention stay.
fn client_settings(h: &HttpConfig) -> Result<Vec<(ClientConfigKey, String)>, BucketConfigError> {
    let duration = |key: &str, v: &str| {
        humantime::parse_duration(v)
            .map(|d| humantime::format_duration(d).to_string())
            .map_err(|e| invalid(key, format!("not a duration such as 90s or 2m: {e}")))
    };
    let mut out = Vec::new();
    if let Some(v) = h.insecure_skip_verify {
        out.push((ClientConfigKey::AllowInvalidCertificates, v.to_string()));
    }
    if let Some(v) = set(&h.response_header_timeout) {
        // The whole request's timeout (object_store's default is 30 s); Thanos's default is 2m.
        let d = duration("config.http_config.response_header_timeout", v)?;
        out.push((ClientConfigKey::Timeout, d));
    }
    if let Some(v) = set(&h.idle_conn_timeout) {
        let d = duration("config.http_config.idle_conn_timeout", v)?;
        out.push((ClientConfigKey::PoolIdleTimeout, d));
    }
    // Go reads 0 as "the default (2)"; the client would read it as "keep none".
    if let Some(n) = h.max_idle_conns_per_host.filter(|n| *n > 0) {
        out.push((ClientConfigKey::PoolMaxIdlePerHost, n.to_string()));
    }
    for (key, v) in [
        ("tls_handshake_timeout", &h.tls_handshake_timeout),
        ("expect_continue_timeout", &h.expect_continue_timeout),
    ] {
        // Not used, but a malformed value is still an error, as it is for Thanos.
        if let Some(v) = set(v) {
            duration(&format!("config.http_config.{key}"), v)?;
        }
    }
    Ok(out)
}

impl S3Config {
    fn has_static_keys(&self) -> bool {
        set_credential(&self.access_key).is_some() && set_credential(&self.secret_key).is_some()
    }

    fn secrets(&self) -> Vec<&str> {
        [&self.access_key, &self.secret_key]
            .into_iter()
            .filter_map(set_credential)
            .collect()
    }
}

/// The S3 builder for `config`. With `access_key` and `secret_key` it starts from
/// [`AmazonS3Builder::new`] and uses them; without either (whether or not `aws_sdk_auth` is set)
/// it starts from `from_env()` (in production [`AmazonS3Builder::from_env`]: `AWS_*` variables,
/// then web identity, container or instance credentials) and applies every configured key on
/// top: bucket, endpoint, region, insecure, sse_config, sts_endpoint, http_config.
pub fn s3(
    config: &S3Config,
    from_env: impl FnOnce() -> AmazonS3Builder,
) -> Result<AmazonS3Builder, BucketConfigError> {
    let c = config;
    nonempty_required("config.bucket", &c.bucket)?;
    let mut b = match (set_credential(&c.access_key), set_credential(&c.secret_key)) {
        (Some(key), Some(secret)) => AmazonS3Builder::new()
            .with_access_key_id(key)
            .with_secret_access_key(secret),
        (None, None) => from_env(),
        (Some(_), None) => {
            return Err(invalid(
                "config.secret_key",
                "is required with access_key (or leave both out to use the environment, web \
                 identity or instance credentials)",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "config.access_key",
                "is required with secret_key (or leave both out to use the environment, web \
                 identity or instance credentials)",
            ));
        }
    };
    b = b.with_bucket_name(c.bucket.trim());
    if let Some(region) = set(&c.region) {
        b = b.with_region(region);
    }
    let insecure = c.insecure.unwrap_or(false);
    let endpoint = set(&c.endpoint)
        .map(|e| endpoint_url("config.endpoint", e, insecure))
        .transpose()?;
    if let Some(e) = &endpoint {
        let url = if e.host == "s3.amazonaws.com" {
            // The global AWS endpoint of Kubecost's templates: minio-go turns it into the
            // region's endpoint, and so does this (path-style requests to the global endpoint
            // fail for buckets outside us-east-1).
            let region = b
                .get_config_value(&AmazonS3ConfigKey::Region)
                .unwrap_or_else(|| "us-east-1".to_string());
            let scheme = if e.http { "http" } else { "https" };
            format!("{scheme}://s3.{region}.amazonaws.com")
        } else {
            e.url.clone()
        };
        // Both keys: AWS_ENDPOINT_URL_S3 from the environment would otherwise win over it.
        b = b
            .with_endpoint(url.clone())
            .with_config(AmazonS3ConfigKey::S3Endpoint, url);
    }
    if c.insecure.is_some() || endpoint.is_some() {
        let allow_http = insecure || endpoint.as_ref().is_some_and(|e| e.http);
        b = b.with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp),
            allow_http.to_string(),
        );
    }
    if let Some(sts) = set(&c.sts_endpoint) {
        let e = endpoint_url("config.sts_endpoint", sts, false)?;
        b = b.with_config(AmazonS3ConfigKey::StsEndpoint, e.url);
    }
    if let Some(sse) = &c.sse_config {
        match set(&sse.kind).map(str::to_ascii_uppercase).as_deref() {
            None => {}
            Some("SSE-S3") => {
                // object_store does not export the encryption key's type; its name parses.
                let key: AmazonS3ConfigKey = "aws_server_side_encryption"
                    .parse()
                    .map_err(|e| build_error("S3", &e, &[]))?;
                b = b.with_config(key, "AES256");
            }
            Some("SSE-KMS") => match set(&sse.kms_key_id) {
                Some(key_id) => b = b.with_sse_kms_encryption(key_id),
                None => {
                    return Err(invalid(
                        "config.sse_config.kms_key_id",
                        "is required with type SSE-KMS",
                    ));
                }
            },
            Some("SSE-C") => {
                return Err(invalid(
                    "config.sse_config.type",
                    "SSE-C is not supported (SSE-S3, or SSE-KMS with kms_key_id)",
                ));
            }
            Some(other) => {
                return Err(invalid(
                    "config.sse_config.type",
                    format!("{other:?} is not one of SSE-S3, SSE-KMS"),
                ));
            }
        }
    }
    if let Some(h) = &c.http_config {
        for (k, v) in client_settings(h)? {
            b = b.with_config(AmazonS3ConfigKey::Client(k), v);
        }
    }
    Ok(b)
}

impl GcsConfig {
    fn secrets(&self) -> Vec<&str> {
        let Some(sa) = set_credential(&self.service_account) else {
            return Vec::new();
        };
        let mut out = vec![sa];
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(sa)
            && let Some(serde_json::Value::String(k)) = m.get("private_key")
        {
            // The key's PEM lines appear verbatim in the JSON text (between `\n` escapes), so
            // they can be scrubbed as slices of it.
            for line in k
                .lines()
                .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
            {
                if let Some(pos) = sa.find(line) {
                    out.push(&sa[pos..pos + line.len()]);
                }
            }
        }
        out
    }
}

/// Checks that a `service_account` is the JSON of a service-account key, without quoting any of
/// it in the error.
fn check_service_account(sa: &str) -> Result<(), BucketConfigError> {
    const KEY: &str = "config.service_account";
    let v: serde_json::Value = serde_json::from_str(sa).map_err(|e| {
        // serde_json's syntax errors name a position, never the text.
        invalid(
            KEY,
            format!(
                "not JSON (line {} column {}): the contents of a service-account key file are \
                 expected, not a path",
                e.line(),
                e.column()
            ),
        )
    })?;
    let serde_json::Value::Object(m) = v else {
        return Err(invalid(
            KEY,
            "expected a JSON object (a service-account key)",
        ));
    };
    match m.get("type") {
        None => {}
        Some(serde_json::Value::String(t)) if t == "service_account" => {}
        Some(_) => {
            return Err(invalid(
                KEY,
                "\"type\" is not \"service_account\": only service-account keys are accepted here \
                 (leave service_account out to use the environment or the metadata server)",
            ));
        }
    }
    for field in ["private_key", "private_key_id", "client_email"] {
        if !matches!(m.get(field), Some(serde_json::Value::String(_))) {
            return Err(invalid(KEY, format!("the JSON has no string {field:?}")));
        }
    }
    Ok(())
}

/// The GCS builder for `config`. With `service_account` (the JSON of a key) it starts from
/// [`GoogleCloudStorageBuilder::new`] and uses it; without, it starts from `from_env()` (in
/// production [`GoogleCloudStorageBuilder::from_env`]: `GOOGLE_*` variables, application default
/// credentials, then the metadata server) and sets the bucket on top.
pub fn gcs(
    config: &GcsConfig,
    from_env: impl FnOnce() -> GoogleCloudStorageBuilder,
) -> Result<GoogleCloudStorageBuilder, BucketConfigError> {
    let c = config;
    nonempty_required("config.bucket", &c.bucket)?;
    let b = match set_credential(&c.service_account) {
        Some(sa) => {
            check_service_account(sa)?;
            GoogleCloudStorageBuilder::new().with_service_account_key(sa)
        }
        None => from_env(),
    };
    Ok(b.with_bucket_name(c.bucket.trim()))
}

impl AzureConfig {
    fn secrets(&self) -> Vec<&str> {
        [&self.storage_account_key, &self.storage_connection_string]
            .into_iter()
            .filter_map(set_credential)
            .collect()
    }
}

/// Whether `s` is standard, padded base64 (an Azure account key), checked here so that the
/// builder's decode error, which quotes a character and its offset, is never reached.
fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !s.is_empty()
        && s.len().is_multiple_of(4)
        && s.len() - body.len() <= 2
        && body
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

/// The Azure builder for `config`. With `storage_account_key` it starts from
/// [`MicrosoftAzureBuilder::new`] and uses it; without, it starts from `from_env()` (in
/// production [`MicrosoftAzureBuilder::from_env`]: `AZURE_*` variables such as workload
/// identity's, then managed identity) and applies every configured key on top: account,
/// container, endpoint, `user_assigned_id` (as the client id), max_retries, http_config.
pub fn azure(
    config: &AzureConfig,
    from_env: impl FnOnce() -> MicrosoftAzureBuilder,
) -> Result<MicrosoftAzureBuilder, BucketConfigError> {
    let c = config;
    nonempty_required("config.container", &c.container)?;
    if set_credential(&c.storage_connection_string).is_some() {
        return Err(invalid(
            "config.storage_connection_string",
            "is not supported; set storage_account and storage_account_key (and endpoint for \
             another cloud or an emulator) instead",
        ));
    }
    let mut b = match set_credential(&c.storage_account_key) {
        Some(key) => {
            if !is_base64(key) {
                return Err(invalid(
                    "config.storage_account_key",
                    "is not base64: an account key is expected (not a SAS token or a \
                     connection string)",
                ));
            }
            MicrosoftAzureBuilder::new().with_access_key(key)
        }
        None => from_env(),
    };
    b = b.with_container_name(c.container.trim());
    if let Some(account) = set(&c.storage_account) {
        if !account.chars().all(|ch| ch.is_ascii_alphanumeric()) {
            return Err(invalid(
                "config.storage_account",
                "an account name has only letters and digits",
            ));
        }
        b = b.with_account(account);
    }
    let emulator = b.get_config_value(&AzureConfigKey::UseEmulator).as_deref() == Some("true");
    if !emulator && b.get_config_value(&AzureConfigKey::AccountName).is_none() {
        return Err(invalid(
            "config.storage_account",
            "is required (unless AZURE_STORAGE_ACCOUNT_NAME is set in the environment)",
        ));
    }
    if let Some(endpoint) = set(&c.endpoint) {
        let e = endpoint_url("config.endpoint", endpoint, false)?;
        let url = if endpoint.contains("://") {
            // An emulator or a proxy: the account's URL itself
            // (http://127.0.0.1:10000/devstoreaccount1).
            e.url
        } else {
            // Thanos: the domain after the account (blob.core.windows.net,
            // blob.core.chinacloudapi.cn, ...).
            let account = b
                .get_config_value(&AzureConfigKey::AccountName)
                .ok_or_else(|| invalid("config.storage_account", "is required with endpoint"))?;
            format!("https://{account}.{}", endpoint.trim_matches('/'))
        };
        b = b.with_endpoint(url).with_config(
            AzureConfigKey::Client(ClientConfigKey::AllowHttp),
            e.http.to_string(),
        );
    }
    if let Some(id) = set(&c.user_assigned_id) {
        b = b.with_client_id(id);
    }
    if let Some(n) = c.max_retries.filter(|n| *n > 0) {
        b = b.with_retry(RetryConfig {
            max_retries: usize::try_from(n).unwrap_or(usize::MAX),
            ..RetryConfig::default()
        });
    }
    if let Some(h) = &c.http_config {
        for (k, v) in client_settings(h)? {
            b = b.with_config(AzureConfigKey::Client(k), v);
        }
    }
    Ok(b)
}

/// A parsed bucket: the store and a description for logs and status.
pub struct Bucket {
    /// The store, already scoped to the configured prefix. Its `Debug` and `Display` print the
    /// description.
    pub store: Arc<dyn ObjectStore>,
    /// `S3 bucket/prefix`, `FILESYSTEM /path`, ...: for logs and the status page. Never holds a
    /// credential or an endpoint.
    pub description: String,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

/// The store handed out by [`from_yaml`]: every call goes to `inner`; `Debug` and `Display` print
/// the description only (object_store's `Debug` of an Azure store prints the decoded key).
struct Described {
    inner: Arc<dyn ObjectStore>,
    description: String,
}

impl std::fmt::Debug for Described {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bucket({})", self.description)
    }
}

impl std::fmt::Display for Described {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bucket({})", self.description)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Described {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

/// A `FILESYSTEM` bucket in a local folder (created if missing).
pub fn filesystem(dir: &str) -> Result<Arc<dyn ObjectStore>, BucketConfigError> {
    std::fs::create_dir_all(dir).map_err(|source| BucketConfigError::Folder {
        path: dir.to_string(),
        source,
    })?;
    let fs = LocalFileSystem::new_with_prefix(dir)
        .map_err(|e| build_error("FILESYSTEM", &e, &[]))?
        // Remove emptied directories after deletes, so garbage collection leaves no husks.
        .with_automatic_cleanup(true);
    Ok(Arc::new(fs))
}

/// Reads and builds the bucket from a bucket-secret file.
pub fn from_file(path: &std::path::Path) -> Result<Bucket, BucketConfigError> {
    use std::io::Read;
    let read_err = |source| BucketConfigError::Read {
        path: path.display().to_string(),
        source,
    };
    // Bounded: `--bucket-config /dev/zero` must not read until memory runs out.
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(read_err)?
        .take(MAX_SECRET_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_SECRET_BYTES {
        return Err(BucketConfigError::TooLarge {
            path: path.display().to_string(),
        });
    }
    from_yaml(&text)
}

/// Deserialisation from a YAML value that tracks where it is (`config.http_config.x`), so every
/// error names its key, and that never quotes a value in an error: serde's own messages quote
/// the offending string (`invalid type: string "..."`), which may be a credential.
mod de {
    use std::fmt;

    use serde::de::{
        self, DeserializeOwned, DeserializeSeed, Expected, IntoDeserializer, MapAccess, SeqAccess,
        Unexpected, Visitor,
    };
    use serde_yaml_ng::Value;

    /// What went wrong, and where.
    #[derive(Debug)]
    pub(super) struct Error {
        /// The key's path, set by the innermost level that knows it.
        pub(super) path: Option<String>,
        /// A required field that is missing: the path gets it appended.
        missing: Option<&'static str>,
        pub(super) reason: String,
    }

    impl Error {
        fn at(mut self, path: &str) -> Self {
            if self.path.is_none() {
                self.path = Some(match self.missing {
                    Some(field) => join(path, field),
                    None => path.to_string(),
                });
            }
            self
        }
    }

    impl fmt::Display for Error {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match &self.path {
                Some(p) if !p.is_empty() => write!(f, "{p}: {}", self.reason),
                _ => f.write_str(&self.reason),
            }
        }
    }

    impl std::error::Error for Error {}

    fn what(u: &Unexpected<'_>) -> &'static str {
        match u {
            Unexpected::Bool(_) => "a boolean",
            Unexpected::Unsigned(_) | Unexpected::Signed(_) => "an integer",
            Unexpected::Float(_) => "a number",
            Unexpected::Char(_) | Unexpected::Str(_) => "a string",
            Unexpected::Bytes(_) => "bytes",
            Unexpected::Unit => "nothing (null)",
            Unexpected::Seq => "a list",
            Unexpected::Map => "a mapping",
            Unexpected::Option
            | Unexpected::NewtypeStruct
            | Unexpected::Enum
            | Unexpected::UnitVariant
            | Unexpected::NewtypeVariant
            | Unexpected::TupleVariant
            | Unexpected::StructVariant
            | Unexpected::Other(_) => "another kind of value",
        }
    }

    fn one_of(expected: &[&str]) -> String {
        match expected {
            [] => "no keys here".to_string(),
            _ => format!(
                "one of {}",
                expected
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    impl de::Error for Error {
        fn custom<T: fmt::Display>(msg: T) -> Self {
            Error {
                path: None,
                missing: None,
                reason: msg.to_string(),
            }
        }

        fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
            Self::custom(format_args!("expected {exp}, found {}", what(&unexp)))
        }

        fn invalid_value(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
            Self::custom(format_args!(
                "expected {exp}, found {} that is not one",
                what(&unexp)
            ))
        }

        fn unknown_variant(_variant: &str, expected: &'static [&'static str]) -> Self {
            Self::custom(format_args!("unknown value; expected {}", one_of(expected)))
        }

        fn unknown_field(_field: &str, expected: &'static [&'static str]) -> Self {
            Self::custom(format_args!("unknown key; expected {}", one_of(expected)))
        }

        fn missing_field(field: &'static str) -> Self {
            Error {
                path: None,
                missing: Some(field),
                reason: "required key is missing".to_string(),
            }
        }
    }

    fn join(path: &str, key: &str) -> String {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    }

    /// Deserialises `value`, found at `path`, into `T`.
    pub(super) fn from_value<T: DeserializeOwned>(value: Value, path: &str) -> Result<T, Error> {
        T::deserialize(ValueDe {
            value,
            path: path.to_string(),
        })
        .map_err(|e| e.at(path))
    }

    struct ValueDe {
        value: Value,
        path: String,
    }

    impl<'de> de::Deserializer<'de> for ValueDe {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            let ValueDe { value, path } = self;
            let result = match value {
                Value::Null => visitor.visit_unit(),
                Value::Bool(b) => visitor.visit_bool(b),
                Value::Number(n) => {
                    if let Some(u) = n.as_u64() {
                        visitor.visit_u64(u)
                    } else if let Some(i) = n.as_i64() {
                        visitor.visit_i64(i)
                    } else {
                        visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                    }
                }
                Value::String(s) => visitor.visit_string(s),
                Value::Sequence(items) => visitor.visit_seq(SeqDe {
                    items: items.into_iter(),
                    path: path.clone(),
                    index: 0,
                }),
                Value::Mapping(m) => visitor.visit_map(MapDe {
                    entries: m.into_iter().collect::<Vec<_>>().into_iter(),
                    pending: None,
                    path: path.clone(),
                }),
                Value::Tagged(t) => ValueDe {
                    value: t.value,
                    path: path.clone(),
                }
                .deserialize_any(visitor),
            };
            result.map_err(|e| e.at(&path))
        }

        fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.value {
                Value::Null => visitor.visit_none(),
                _ => visitor.visit_some(self),
            }
        }

        /// Go's YAML reads a number or a boolean into a string field as its text; so does this.
        fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            let text = match &self.value {
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                _ => return self.deserialize_any(visitor),
            };
            visitor
                .visit_string(text)
                .map_err(|e: Error| e.at(&self.path))
        }

        fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.deserialize_string(visitor)
        }

        /// Only a mapping (or nothing) is a struct: serde would also take a list, field by field.
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            _fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            match self.value {
                Value::Sequence(_) => Err(de::Error::invalid_type(Unexpected::Seq, &visitor))
                    .map_err(|e: Error| e.at(&self.path)),
                _ => self.deserialize_any(visitor),
            }
        }

        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            visitor: V,
        ) -> Result<V::Value, Error> {
            visitor.visit_newtype_struct(self)
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit
            unit_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }

    struct SeqDe {
        items: std::vec::IntoIter<Value>,
        path: String,
        index: usize,
    }

    impl<'de> SeqAccess<'de> for SeqDe {
        type Error = Error;

        fn next_element_seed<T: DeserializeSeed<'de>>(
            &mut self,
            seed: T,
        ) -> Result<Option<T::Value>, Error> {
            let Some(value) = self.items.next() else {
                return Ok(None);
            };
            let path = format!("{}[{}]", self.path, self.index);
            self.index += 1;
            seed.deserialize(ValueDe {
                value,
                path: path.clone(),
            })
            .map(Some)
            .map_err(|e| e.at(&path))
        }
    }

    struct MapDe {
        entries: std::vec::IntoIter<(Value, Value)>,
        pending: Option<(Value, String)>,
        path: String,
    }

    impl<'de> MapAccess<'de> for MapDe {
        type Error = Error;

        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, Error> {
            let Some((key, value)) = self.entries.next() else {
                return Ok(None);
            };
            let name = match key {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(de::Error::custom("keys must be strings"))
                        .map_err(|e: Error| e.at(&self.path));
                }
            };
            let path = join(&self.path, &name);
            self.pending = Some((value, path.clone()));
            let key: de::value::StringDeserializer<Error> = name.into_deserializer();
            seed.deserialize(key).map(Some).map_err(|e| e.at(&path))
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
            let Some((value, path)) = self.pending.take() else {
                return Err(de::Error::custom("a value without a key"));
            };
            seed.deserialize(ValueDe {
                value,
                path: path.clone(),
            })
            .map_err(|e| e.at(&path))
        }
    }
}

#[cfg(test)]
mod tests {
    use object_store::gcp::GoogleConfigKey;
    use object_store::{ObjectStoreExt, PutPayload};

    use super::*;

    const ACCESS_KEY: &str = "AKIAKUBECOSTTEST0001";
    const SECRET_KEY: &str = "s3cr3t/KUBECOST+do-not-print";
    /// base64 of "kubecost-azure-account-key-do-not-print".
    const AZURE_KEY: &str = "a3ViZWNvc3QtYXp1cmUtYWNjb3VudC1rZXktZG8tbm90LXByaW50";
    const PEM_LINE: &str = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj";

    /// A service-account key that never reaches Google: `disable_oauth` makes object_store use
    /// an empty static token, and the base URL is a closed local port.
    fn service_account_json() -> String {
        format!(
            r#"{{"type": "service_account", "project_id": "kc", "private_key_id": "k1",
  "private_key": "-----BEGIN PRIVATE KEY-----\n{PEM_LINE}\n-----END PRIVATE KEY-----\n",
  "client_email": "kubecost@kc.iam.gserviceaccount.com", "disable_oauth": true,
  "gcs_base_url": "http://127.0.0.1:9"}}"#
        )
    }

    fn section<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        let v: Value = serde_yaml_ng::from_str(yaml).unwrap();
        de::from_value(v, "config").unwrap()
    }

    fn section_err<T: serde::de::DeserializeOwned + std::fmt::Debug>(yaml: &str) -> String {
        let v: Value = serde_yaml_ng::from_str(yaml).unwrap();
        BucketConfigError::from(de::from_value::<T>(v, "config").unwrap_err()).to_string()
    }

    fn err(yaml: &str) -> BucketConfigError {
        from_yaml(yaml).unwrap_err()
    }

    /// What `AmazonS3Builder::from_env()` would give in a pod with IRSA and a proxy: settings the
    /// secret does not mention must survive, those it does must win.
    fn s3_env() -> AmazonS3Builder {
        AmazonS3Builder::new()
            .with_config(AmazonS3ConfigKey::Endpoint, "https://env-endpoint.example")
            .with_config(
                AmazonS3ConfigKey::S3Endpoint,
                "https://env-s3-endpoint.example",
            )
            .with_config(AmazonS3ConfigKey::Region, "eu-central-1")
            .with_config(
                AmazonS3ConfigKey::WebIdentityTokenFile,
                "/var/run/irsa/token",
            )
            .with_config(
                AmazonS3ConfigKey::RoleArn,
                "arn:aws:iam::123456789012:role/kc",
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ProxyUrl),
                "http://proxy:3128",
            )
    }

    fn no_env_s3() -> AmazonS3Builder {
        panic!("static keys are configured: the environment must not be read")
    }

    fn no_env_gcs() -> GoogleCloudStorageBuilder {
        panic!("a service account is configured: the environment must not be read")
    }

    fn no_env_azure() -> MicrosoftAzureBuilder {
        panic!("an account key is configured: the environment must not be read")
    }

    fn s3v(b: &AmazonS3Builder, k: AmazonS3ConfigKey) -> Option<String> {
        b.get_config_value(&k)
    }

    fn s3_allow_http(b: &AmazonS3Builder) -> Option<String> {
        b.get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
    }

    fn az(b: &MicrosoftAzureBuilder, k: AzureConfigKey) -> Option<String> {
        b.get_config_value(&k)
    }

    // ---- S3 ----

    /// The bug: without static keys the builder restarted from `from_env()` and dropped the
    /// configured endpoint (and insecure, sse, http_config), so MinIO users reached AWS.
    #[test]
    fn s3_without_keys_starts_from_env_and_keeps_every_configured_key() {
        let c: S3Config = section(
            "bucket: kc\nendpoint: minio.minio.svc:9000\nregion: us-west-2\ninsecure: true\n\
             sse_config: {type: SSE-S3}\nhttp_config: {idle_conn_timeout: 90s}\n",
        );
        let b = s3(&c, s3_env).unwrap();
        let url = Some("http://minio.minio.svc:9000".to_string());
        assert_eq!(s3v(&b, AmazonS3ConfigKey::Endpoint), url);
        assert_eq!(s3v(&b, AmazonS3ConfigKey::S3Endpoint), url);
        assert_eq!(
            s3v(&b, AmazonS3ConfigKey::Region).as_deref(),
            Some("us-west-2")
        );
        assert_eq!(s3v(&b, AmazonS3ConfigKey::Bucket).as_deref(), Some("kc"));
        assert_eq!(s3_allow_http(&b).as_deref(), Some("true"));
        let sse: AmazonS3ConfigKey = "aws_server_side_encryption".parse().unwrap();
        assert_eq!(s3v(&b, sse).as_deref(), Some("AES256"));
        assert_eq!(
            s3v(
                &b,
                AmazonS3ConfigKey::Client(ClientConfigKey::PoolIdleTimeout)
            )
            .as_deref(),
            Some("1m 30s")
        );
        // The environment's credential chain and client settings stay.
        assert_eq!(
            s3v(&b, AmazonS3ConfigKey::WebIdentityTokenFile).as_deref(),
            Some("/var/run/irsa/token")
        );
        assert!(s3v(&b, AmazonS3ConfigKey::RoleArn).is_some());
        assert_eq!(
            s3v(&b, AmazonS3ConfigKey::Client(ClientConfigKey::ProxyUrl)).as_deref(),
            Some("http://proxy:3128")
        );
        assert_eq!(s3v(&b, AmazonS3ConfigKey::AccessKeyId), None);
    }

    #[test]
    fn s3_aws_sdk_auth_also_starts_from_env() {
        let c: S3Config = section("bucket: kc\nendpoint: ceph.local:7480\naws_sdk_auth: true\n");
        let b = s3(&c, s3_env).unwrap();
        assert_eq!(
            s3v(&b, AmazonS3ConfigKey::Endpoint).as_deref(),
            Some("https://ceph.local:7480")
        );
        // Region unset in the secret: the environment's.
        assert_eq!(
            s3v(&b, AmazonS3ConfigKey::Region).as_deref(),
            Some("eu-central-1")
        );
        assert_eq!(s3_allow_http(&b).as_deref(), Some("false"));
        assert!(s3v(&b, AmazonS3ConfigKey::RoleArn).is_some());
    }

    #[test]
    fn s3_without_keys_or_endpoint_leaves_the_environment_endpoint() {
        let c: S3Config = section("bucket: kc\n");
        let b = s3(&c, s3_env).unwrap();
        assert_eq!(
            s3v(&b, AmazonS3ConfigKey::Endpoint).as_deref(),
            Some("https://env-endpoint.example")
        );
        // Nothing in the secret about http: the environment's setting (unset here) stays.
        assert_eq!(s3_allow_http(&b).as_deref(), Some("false"));
        let c: S3Config = section("bucket: kc\n");
        let b = s3(&c, || {
            AmazonS3Builder::new().with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp),
                "true",
            )
        })
        .unwrap();
        assert_eq!(s3_allow_http(&b).as_deref(), Some("true"));
    }

    #[test]
    fn s3_static_keys_start_from_an_empty_builder() {
        let c: S3Config = section(&format!(
            "bucket: kc\nendpoint: 127.0.0.1:9000\nregion: us-east-1\naccess_key: {ACCESS_KEY}\n\
             secret_key: {SECRET_KEY}\ninsecure: true\n"
        ));
        let b = s3(&c, no_env_s3).unwrap();
        assert_eq!(
            s3v(&b, AmazonS3ConfigKey::AccessKeyId).as_deref(),
            Some(ACCESS_KEY)
        );
        assert_eq!(
            s3v(&b, AmazonS3ConfigKey::SecretAccessKey).as_deref(),
            Some(SECRET_KEY)
        );
        assert_eq!(
            s3v(&b, AmazonS3ConfigKey::Endpoint).as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(
            s3v(&b, AmazonS3ConfigKey::Region).as_deref(),
            Some("us-east-1")
        );
        assert_eq!(s3v(&b, AmazonS3ConfigKey::Bucket).as_deref(), Some("kc"));
        assert_eq!(s3_allow_http(&b).as_deref(), Some("true"));
        assert_eq!(s3v(&b, AmazonS3ConfigKey::WebIdentityTokenFile), None);
        b.build().unwrap();
    }

    #[test]
    fn s3_endpoint_forms() {
        let endpoint = |yaml: &str| {
            let c: S3Config = section(&format!("bucket: kc\n{yaml}"));
            let b = s3(&c, AmazonS3Builder::new).unwrap();
            (
                s3v(&b, AmazonS3ConfigKey::Endpoint),
                s3_allow_http(&b).unwrap(),
            )
        };
        let some = |s: &str| Some(s.to_string());
        assert_eq!(
            endpoint("endpoint: minio:9000\n"),
            (some("https://minio:9000"), "false".into())
        );
        assert_eq!(
            endpoint("endpoint: http://minio:9000\n"),
            (some("http://minio:9000"), "true".into())
        );
        assert_eq!(
            endpoint("endpoint: https://minio:9000\ninsecure: true\n"),
            (some("https://minio:9000"), "true".into())
        );
        // Kubecost's templates: the global AWS endpoint becomes the region's.
        assert_eq!(
            endpoint("endpoint: s3.amazonaws.com\nregion: ap-south-1\n"),
            (some("https://s3.ap-south-1.amazonaws.com"), "false".into())
        );
        assert_eq!(
            endpoint("endpoint: s3.amazonaws.com\n"),
            (some("https://s3.us-east-1.amazonaws.com"), "false".into())
        );
        // Empty means unset, as in Go.
        assert_eq!(endpoint("endpoint: \"\"\n"), (None, "false".into()));
        let e = err("type: S3\nconfig: {bucket: kc, endpoint: 'ftp://minio'}\n").to_string();
        assert!(e.contains("config.endpoint"), "{e}");
    }

    #[test]
    fn s3_half_a_key_pair_is_an_error_naming_the_missing_half() {
        let e = err(&format!(
            "type: S3\nconfig: {{bucket: kc, access_key: {ACCESS_KEY}}}\n"
        ))
        .to_string();
        assert!(e.contains("config.secret_key"), "{e}");
        assert!(!e.contains(ACCESS_KEY), "{e}");
        let e = err(&format!(
            "type: S3\nconfig: {{bucket: kc, secret_key: '{SECRET_KEY}'}}\n"
        ))
        .to_string();
        assert!(e.contains("config.access_key"), "{e}");
        assert!(!e.contains(SECRET_KEY), "{e}");
    }

    #[test]
    fn s3_sse_and_sts() {
        let c: S3Config = section(
            "bucket: kc\nsse_config: {type: SSE-KMS, kms_key_id: alias/kc}\n\
             sts_endpoint: https://sts.us-west-2.amazonaws.com\n",
        );
        let b = s3(&c, AmazonS3Builder::new).unwrap();
        let sse: AmazonS3ConfigKey = "aws_server_side_encryption".parse().unwrap();
        let kms: AmazonS3ConfigKey = "aws_sse_kms_key_id".parse().unwrap();
        assert_eq!(s3v(&b, sse).as_deref(), Some("aws:kms"));
        assert_eq!(s3v(&b, kms).as_deref(), Some("alias/kc"));
        assert_eq!(
            s3v(&b, AmazonS3ConfigKey::StsEndpoint).as_deref(),
            Some("https://sts.us-west-2.amazonaws.com")
        );
        let e = err("type: S3\nconfig: {bucket: kc, sse_config: {type: SSE-KMS}}\n").to_string();
        assert!(e.contains("config.sse_config.kms_key_id"), "{e}");
        let e = err("type: S3\nconfig: {bucket: kc, sse_config: {type: SSE-C}}\n").to_string();
        assert!(e.contains("config.sse_config.type"), "{e}");
        // Kubecost's template has an empty type: no encryption header.
        let c: S3Config = section("bucket: kc\nsse_config: {type: ''}\n");
        let b = s3(&c, AmazonS3Builder::new).unwrap();
        let sse: AmazonS3ConfigKey = "aws_server_side_encryption".parse().unwrap();
        assert_eq!(s3v(&b, sse), None);
    }

    #[test]
    fn http_config_maps_onto_client_settings() {
        let c: S3Config = section(
            "bucket: kc\nhttp_config:\n  idle_conn_timeout: 90s\n  response_header_timeout: 2m\n  \
             insecure_skip_verify: true\n  max_idle_conns_per_host: 50\n  max_conns_per_host: 0\n",
        );
        let b = s3(&c, AmazonS3Builder::new).unwrap();
        let client = |k| s3v(&b, AmazonS3ConfigKey::Client(k));
        assert_eq!(
            client(ClientConfigKey::PoolIdleTimeout).as_deref(),
            Some("1m 30s")
        );
        assert_eq!(client(ClientConfigKey::Timeout).as_deref(), Some("2m"));
        assert_eq!(
            client(ClientConfigKey::AllowInvalidCertificates).as_deref(),
            Some("true")
        );
        assert_eq!(
            client(ClientConfigKey::PoolMaxIdlePerHost).as_deref(),
            Some("50")
        );
        b.build().unwrap();
        let e = err("type: S3\nconfig: {bucket: kc, http_config: {idle_conn_timeout: soon}}\n")
            .to_string();
        assert!(e.contains("config.http_config.idle_conn_timeout"), "{e}");
    }

    #[test]
    fn keys_without_effect_are_named_for_the_warning() {
        let secret = parse(
            "type: S3\nconfig:\n  bucket: kc\n  signature_version2: true\n  \
             put_user_metadata:\n    X-Amz-Acl: bucket-owner-full-control\n  \
             trace: {enable: true}\n  part_size: 134217728\n  list_objects_version: v1\n  \
             http_config: {tls_handshake_timeout: 10s, max_idle_conns: 100}\n",
        )
        .unwrap();
        let keys: Vec<_> = secret
            .backend
            .ignored()
            .into_iter()
            .map(|i| i.key)
            .collect();
        assert_eq!(
            keys,
            [
                "config.signature_version2",
                "config.put_user_metadata",
                "config.trace",
                "config.list_objects_version",
                "config.part_size",
                "config.http_config.tls_handshake_timeout",
                "config.http_config.max_idle_conns",
            ]
        );
        // Values that ask for what happens anyway are not reported.
        let secret = parse(
            "type: S3\nconfig: {bucket: kc, signature_version2: false, trace: {enable: false}, \
             list_objects_version: v2}\n",
        )
        .unwrap();
        assert!(secret.backend.ignored().is_empty());
        let secret = parse(&format!(
            "type: S3\nconfig: {{bucket: kc, aws_sdk_auth: true, access_key: {ACCESS_KEY}, \
             secret_key: '{SECRET_KEY}'}}\n"
        ))
        .unwrap();
        assert_eq!(secret.backend.ignored()[0].key, "config.aws_sdk_auth");
        let secret = parse(
            "type: AZURE\nconfig: {container: c, msi_resource: 'https://storage.azure.com/', \
             pipeline_config: {max_tries: 3}}\n",
        )
        .unwrap();
        let keys: Vec<_> = secret
            .backend
            .ignored()
            .into_iter()
            .map(|i| i.key)
            .collect();
        assert_eq!(keys, ["config.msi_resource", "config.pipeline_config"]);
    }

    // ---- GCS ----

    #[test]
    fn gcs_service_account_json_is_accepted_and_starts_from_an_empty_builder() {
        let sa = service_account_json();
        let c: GcsConfig = section(&format!(
            "bucket: kc-gcs\nservice_account: |-\n  {}\n",
            sa.replace('\n', "\n  ")
        ));
        let b = gcs(&c, no_env_gcs).unwrap();
        assert_eq!(
            b.get_config_value(&GoogleConfigKey::Bucket).as_deref(),
            Some("kc-gcs")
        );
        assert_eq!(
            b.get_config_value(&GoogleConfigKey::ServiceAccountKey),
            Some(sa)
        );
        b.build().unwrap();
    }

    #[test]
    fn gcs_without_service_account_starts_from_env_then_sets_the_bucket() {
        let c: GcsConfig = section("bucket: kc-gcs\n");
        let b = gcs(&c, || {
            GoogleCloudStorageBuilder::new()
                .with_config(GoogleConfigKey::Bucket, "env-bucket")
                .with_config(GoogleConfigKey::ApplicationCredentials, "/var/run/adc.json")
        })
        .unwrap();
        assert_eq!(
            b.get_config_value(&GoogleConfigKey::Bucket).as_deref(),
            Some("kc-gcs")
        );
        assert_eq!(
            b.get_config_value(&GoogleConfigKey::ApplicationCredentials)
                .as_deref(),
            Some("/var/run/adc.json")
        );
        assert_eq!(
            b.get_config_value(&GoogleConfigKey::ServiceAccountKey),
            None
        );
    }

    #[test]
    fn gcs_service_account_that_is_not_a_key_is_an_error_that_quotes_nothing() {
        for sa in [
            // A path, as people do.
            "/var/secrets/google/key.json".to_string(),
            // Cut short.
            format!(r#"{{"type": "service_account", "private_key": "{PEM_LINE}"#),
            // An ADC file of a user.
            format!(r#"{{"type": "authorized_user", "client_secret": "{PEM_LINE}"}}"#),
            // No key.
            r#"{"type": "service_account", "client_email": "a@b"}"#.to_string(),
        ] {
            let yaml = format!("type: GCS\nconfig:\n  bucket: b\n  service_account: '{sa}'\n");
            let e = err(&yaml);
            let text = format!("{e} {e:?}");
            assert!(text.contains("config.service_account"), "{text}");
            assert!(!text.contains(PEM_LINE), "{text}");
            assert!(!text.contains("/var/secrets"), "{text}");
        }
    }

    // ---- Azure ----

    #[test]
    fn azure_key_starts_from_an_empty_builder() {
        let c: AzureConfig = section(&format!(
            "storage_account: kcacct\nstorage_account_key: {AZURE_KEY}\ncontainer: kc\n\
             endpoint: blob.core.chinacloudapi.cn\nmax_retries: 3\n"
        ));
        let b = azure(&c, no_env_azure).unwrap();
        assert_eq!(
            az(&b, AzureConfigKey::AccountName).as_deref(),
            Some("kcacct")
        );
        assert_eq!(az(&b, AzureConfigKey::ContainerName).as_deref(), Some("kc"));
        assert_eq!(
            az(&b, AzureConfigKey::AccessKey).as_deref(),
            Some(AZURE_KEY)
        );
        assert_eq!(
            az(&b, AzureConfigKey::Endpoint).as_deref(),
            Some("https://kcacct.blob.core.chinacloudapi.cn")
        );
        assert_eq!(
            az(&b, AzureConfigKey::Client(ClientConfigKey::AllowHttp)).as_deref(),
            Some("false")
        );
        b.build().unwrap();
    }

    #[test]
    fn azure_emulator_endpoint_is_the_account_url_and_allows_http() {
        let c: AzureConfig = section(&format!(
            "storage_account: devstoreaccount1\nstorage_account_key: {AZURE_KEY}\ncontainer: kc\n\
             endpoint: http://127.0.0.1:10000/devstoreaccount1\n"
        ));
        let b = azure(&c, no_env_azure).unwrap();
        assert_eq!(
            az(&b, AzureConfigKey::Endpoint).as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
        assert_eq!(
            az(&b, AzureConfigKey::Client(ClientConfigKey::AllowHttp)).as_deref(),
            Some("true")
        );
        b.build().unwrap();
    }

    #[test]
    fn azure_without_key_starts_from_env_and_applies_the_configured_keys() {
        // Kubecost's template shape: `endpoint: ""` means the default endpoint.
        let c: AzureConfig = section(
            "storage_account: kcacct\nstorage_account_key: ''\ncontainer: kc\nendpoint: ''\n\
             user_assigned_id: 00000000-1111-2222-3333-444444444444\n\
             http_config: {idle_conn_timeout: 1m}\n",
        );
        let b = azure(&c, || {
            MicrosoftAzureBuilder::new()
                .with_config(AzureConfigKey::AccountName, "envacct")
                .with_config(AzureConfigKey::ClientId, "env-client")
                .with_config(AzureConfigKey::AuthorityId, "env-tenant")
                .with_config(AzureConfigKey::FederatedTokenFile, "/var/run/azure/token")
        })
        .unwrap();
        assert_eq!(
            az(&b, AzureConfigKey::AccountName).as_deref(),
            Some("kcacct")
        );
        assert_eq!(az(&b, AzureConfigKey::ContainerName).as_deref(), Some("kc"));
        assert_eq!(
            az(&b, AzureConfigKey::ClientId).as_deref(),
            Some("00000000-1111-2222-3333-444444444444")
        );
        assert_eq!(
            az(&b, AzureConfigKey::AuthorityId).as_deref(),
            Some("env-tenant")
        );
        assert_eq!(
            az(&b, AzureConfigKey::FederatedTokenFile).as_deref(),
            Some("/var/run/azure/token")
        );
        assert_eq!(az(&b, AzureConfigKey::AccessKey), None);
        assert_eq!(az(&b, AzureConfigKey::Endpoint), None);
        assert_eq!(
            az(&b, AzureConfigKey::Client(ClientConfigKey::PoolIdleTimeout)).as_deref(),
            Some("1m")
        );
        b.build().unwrap();
        // The endpoint domain with the account from the environment.
        let c: AzureConfig = section("container: kc\nendpoint: blob.core.usgovcloudapi.net\n");
        let b = azure(&c, || {
            MicrosoftAzureBuilder::new().with_config(AzureConfigKey::AccountName, "envacct")
        })
        .unwrap();
        assert_eq!(
            az(&b, AzureConfigKey::Endpoint).as_deref(),
            Some("https://envacct.blob.core.usgovcloudapi.net")
        );
    }

    #[test]
    fn azure_bad_credentials_are_errors_that_quote_nothing() {
        let conn = format!(
            "DefaultEndpointsProtocol=https;AccountName=kcacct;AccountKey={AZURE_KEY};\
             EndpointSuffix=core.windows.net"
        );
        for (config, key) in [
            (
                format!("{{container: c, storage_account: a, storage_account_key: '{conn}'}}"),
                "config.storage_account_key",
            ),
            (
                format!("{{container: c, storage_connection_string: '{conn}'}}"),
                "config.storage_connection_string",
            ),
            (
                format!(
                    "{{container: c, storage_account: a, storage_account_key: {AZURE_KEY}, \
                     endpoint: 'https://a:{AZURE_KEY}@a.blob.core.windows.net'}}"
                ),
                "config.endpoint",
            ),
        ] {
            let e = err(&format!("type: AZURE\nconfig: {config}\n"));
            let text = format!("{e} {e:?}");
            assert!(text.contains(key), "{text}");
            assert!(!text.contains(AZURE_KEY), "{text}");
            assert!(!text.contains("AccountKey"), "{text}");
        }
    }

    // ---- parsing ----

    #[test]
    fn unknown_keys_are_named_with_their_section() {
        for (yaml, key) in [
            (
                "type: S3\nconfig:\n  bucket: kc\n  buckit: x\n",
                "config.buckit",
            ),
            ("type: S3\nconfig: {bucket: kc}\nextra: 1\n", "extra"),
            (
                "type: S3\nconfig: {bucket: kc, http_config: {idle_timeout: 1s}}\n",
                "config.http_config.idle_timeout",
            ),
            (
                "type: S3\nconfig: {bucket: kc, sse_config: {type: SSE-S3, kms_key: x}}\n",
                "config.sse_config.kms_key",
            ),
            (
                "type: S3\nconfig: {bucket: kc, trace: {enabled: true}}\n",
                "config.trace.enabled",
            ),
            (
                "type: GCS\nconfig: {bucket: kc, project_id: p}\n",
                "config.project_id",
            ),
            (
                "type: AZURE\nconfig: {container: c, storage_acount: a}\n",
                "config.storage_acount",
            ),
            ("type: FILESYSTEM\nconfig: {dir: /tmp}\n", "config.dir"),
        ] {
            match err(yaml) {
                BucketConfigError::Invalid { key: k, reason } => {
                    assert_eq!(k, key, "{yaml}");
                    assert!(
                        reason.starts_with("unknown key; expected one of"),
                        "{reason}"
                    );
                }
                other => panic!("{yaml}: {other}"),
            }
        }
        let e = err("type: S3\nconfig:\n  bucket: kc\n  buckit: x\n").to_string();
        assert!(e.contains("config.buckit: unknown key"), "{e}");
        assert!(e.contains("`bucket`"), "{e}");
    }

    #[test]
    fn a_wrong_type_is_an_error_naming_type() {
        for yaml in [
            "type: DROPBOX\nconfig: {}\n",
            "type: [S3]\nconfig: {bucket: kc}\n",
            "config: {bucket: kc}\n",
        ] {
            match err(yaml) {
                BucketConfigError::Invalid { key, reason } => {
                    assert_eq!(key, "type", "{yaml}: {reason}")
                }
                other => panic!("{yaml}: {other}"),
            }
        }
        assert!(
            err("type: DROPBOX\nconfig: {}\n")
                .to_string()
                .contains("DROPBOX")
        );
    }

    #[test]
    fn missing_keys_and_wrong_value_types_are_named() {
        let e = err("type: S3\nconfig: {region: us-east-1}\n").to_string();
        assert!(e.contains("config.bucket: required key is missing"), "{e}");
        let e = err("type: AZURE\n").to_string();
        assert!(
            e.contains("config.container: required key is missing"),
            "{e}"
        );
        let e = err("type: S3\nconfig: {bucket: kc, insecure: 'yes please'}\n").to_string();
        assert!(
            e.contains("config.insecure: expected a boolean, found a string"),
            "{e}"
        );
        assert!(!e.contains("yes please"), "{e}");
        let e = err("type: S3\nconfig: {bucket: ''}\n").to_string();
        assert!(e.contains("config.bucket: must not be empty"), "{e}");
        let e = section_err::<S3Config>("bucket: kc\npart_size: [1]\n");
        assert!(
            e.contains("config.part_size: expected u64, found a list"),
            "{e}"
        );
        assert!(matches!(
            err("type: S3\nconfig: [\n"),
            BucketConfigError::Parse(_)
        ));
        let e = err("").to_string();
        assert!(e.contains("expected a mapping with `type`"), "{e}");
        let e = err("- type: S3\n").to_string();
        assert!(
            e.contains("(top level): expected a mapping with `type`"),
            "{e}"
        );
        let e = err("type: S3\nconfig: [kc]\n").to_string();
        assert!(
            e.contains("config: expected a mapping of S3 settings, found a list"),
            "{e}"
        );
        let c: AzureConfig = section("container: kc\n");
        let e = azure(&c, MicrosoftAzureBuilder::new)
            .unwrap_err()
            .to_string();
        assert!(e.contains("config.storage_account: is required"), "{e}");
    }

    #[test]
    fn numbers_are_read_into_string_fields_as_go_does() {
        let c: S3Config = section("bucket: 12345\nregion: 1\n");
        assert_eq!(c.bucket, "12345");
        assert_eq!(c.region.as_deref(), Some("1"));
    }

    #[test]
    fn secrets_never_appear_in_errors_or_debug() {
        let secrets = [ACCESS_KEY, SECRET_KEY, AZURE_KEY, PEM_LINE, "hunter22"];
        let check = |text: &str| {
            for s in secrets {
                assert!(!text.contains(s), "{s} in {text}");
            }
        };
        // Errors.
        for yaml in [
            // Userinfo in the endpoint, with and without a scheme.
            format!(
                "type: S3\nconfig: {{bucket: kc, access_key: {ACCESS_KEY}, \
                 secret_key: '{SECRET_KEY}', endpoint: 'http://minio:hunter22@minio:9000'}}\n"
            ),
            "type: S3\nconfig: {bucket: kc, endpoint: 'minio:hunter22@minio:9000'}\n".to_string(),
            "type: S3\nconfig: {bucket: kc, sts_endpoint: 'https://u:hunter22@sts'}\n".to_string(),
            // The whole section written as a string by mistake.
            format!("type: S3\nconfig: 'bucket: kc\n  secret_key: {SECRET_KEY}'\n"),
            // A credential of the wrong type.
            format!("type: S3\nconfig: {{bucket: kc, secret_key: {{k: '{SECRET_KEY}'}}}}\n"),
            format!("type: S3\nconfig: {{bucket: kc, secret_key: ['{SECRET_KEY}']}}\n"),
            // An unknown key next to the credentials.
            format!(
                "type: S3\nconfig: {{bucket: kc, access_key: {ACCESS_KEY}, \
                 secret_key: '{SECRET_KEY}', x: 1}}\n"
            ),
        ] {
            let e = err(&yaml);
            check(&format!("{e} {e:?}"));
        }
        // Debug of everything parsed.
        let secret = parse(&format!(
            "type: S3\nconfig: {{bucket: kc, access_key: {ACCESS_KEY}, secret_key: '{SECRET_KEY}', \
             sse_config: {{type: SSE-S3, encryption_key: hunter22}}}}\n"
        ))
        .unwrap();
        let debug = format!("{secret:?}");
        check(&debug);
        assert!(debug.contains("secret_key: Some(***)"), "{debug}");
        let secret = parse(&format!(
            "type: AZURE\nconfig: {{container: c, storage_account: a, \
             storage_account_key: {AZURE_KEY}}}\n"
        ))
        .unwrap();
        check(&format!("{secret:?}"));
        let secret = parse(&format!(
            "type: GCS\nconfig:\n  bucket: b\n  service_account: '{}'\n",
            service_account_json().replace('\n', " ")
        ))
        .unwrap();
        check(&format!("{secret:?}"));
        // The built bucket and its store print the description only.
        let bucket = from_yaml(&format!(
            "type: AZURE\nconfig: {{container: c, storage_account: a, \
             storage_account_key: {AZURE_KEY}}}\n"
        ))
        .unwrap();
        assert_eq!(format!("{bucket:?}"), "AZURE c");
        assert_eq!(format!("{:?}", bucket.store), "Bucket(AZURE c)");
        assert_eq!(bucket.store.to_string(), "Bucket(AZURE c)");
        // Builder errors: userinfo and the configured credentials are scrubbed.
        assert_eq!(
            scrub(
                &format!("PUT http://u:hunter22@h/b failed: bad key {SECRET_KEY}"),
                &[SECRET_KEY]
            ),
            "PUT http://***@h/b failed: bad key ***"
        );
        let secret = parse(&format!(
            "type: GCS\nconfig:\n  bucket: b\n  service_account: '{}'\n",
            service_account_json().replace('\n', " ")
        ))
        .unwrap();
        let Backend::Gcs(c) = secret.backend else {
            panic!("GCS")
        };
        assert!(
            c.secrets().contains(&PEM_LINE),
            "the key's PEM lines are scrubbed"
        );
    }

    #[test]
    fn description_is_type_bucket_and_prefix() {
        let b = from_yaml(&format!(
            "type: S3\nconfig:\n  bucket: kc\n  endpoint: http://minio:9000\n  \
             region: us-east-1\n  access_key: {ACCESS_KEY}\n  secret_key: '{SECRET_KEY}'\n\
             prefix: /kubecost/etlbackup/\n",
        ))
        .unwrap();
        assert_eq!(b.description, "S3 kc/kubecost/etlbackup");
        let b = from_yaml(
            "type: S3\nconfig: {bucket: kc, access_key: a, secret_key: b}\nprefix: '/'\n",
        )
        .unwrap();
        assert_eq!(b.description, "S3 kc");
    }

    #[tokio::test]
    async fn the_prefix_is_applied_to_every_object() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "type: filesystem\nconfig:\n  directory: {}\nprefix: /kubecost/etl/\n",
            dir.path().display()
        );
        let b = from_yaml(&yaml).unwrap();
        assert_eq!(
            b.description,
            format!("FILESYSTEM {}/kubecost/etl", dir.path().display())
        );
        b.store
            .put(&Path::from("daily/1.json"), PutPayload::from_static(b"{}"))
            .await
            .unwrap();
        assert!(dir.path().join("kubecost/etl/daily/1.json").is_file());
        let listed: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(b.store.list(None))
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].location.as_ref(), "daily/1.json");
    }

    #[test]
    fn filesystem_type_is_case_insensitive() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "type: filesystem\nconfig:\n  directory: {}\n",
            dir.path().display()
        );
        assert!(
            from_yaml(&yaml)
                .unwrap()
                .description
                .starts_with("FILESYSTEM")
        );
        let e = err("type: FILESYSTEM\nconfig: {directory: ''}\n").to_string();
        assert!(e.contains("config.directory"), "{e}");
    }
}
