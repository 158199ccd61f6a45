//! The bucket: Kubecost's bucket-secret YAML (`type:` + `config:` + optional `prefix:`, Thanos
//! objstore keys) mapped onto `object_store` builders. Parsing is strict, as Kubecost's is: an
//! unknown key is an error that names it.

use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore};
use serde::Deserialize;

/// A bad bucket configuration.
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
    /// The YAML does not match the expected shape; the message names the key.
    #[error("bucket config: {0}")]
    Parse(String),
    /// The builder rejected the settings.
    #[error("bucket config ({kind}): {}", crate::redact::userinfo(&.source.to_string()))]
    Build {
        /// The bucket type.
        kind: &'static str,
        /// What the builder said.
        source: object_store::Error,
    },
}

/// The largest bucket-secret file read: a real one is a few hundred bytes.
const MAX_SECRET_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Secret {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    config: serde_yaml_ng::Value,
    #[serde(default)]
    prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "Kubecost/Thanos keys accepted so existing secrets parse; not all map onto object_store"
)]
struct HttpConfig {
    #[serde(default)]
    insecure_skip_verify: bool,
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
    tls_config: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "Kubecost/Thanos keys accepted so existing secrets parse; not all map onto object_store"
)]
struct S3Config {
    bucket: String,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    access_key: Option<String>,
    #[serde(default)]
    secret_key: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    aws_sdk_auth: bool,
    #[serde(default)]
    signature_version2: bool,
    #[serde(default)]
    put_user_metadata: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    http_config: Option<HttpConfig>,
    #[serde(default)]
    trace: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    list_objects_version: Option<String>,
    #[serde(default)]
    part_size: Option<u64>,
    #[serde(default)]
    sse_config: Option<SseConfig>,
    #[serde(default)]
    sts_endpoint: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "Kubecost/Thanos keys accepted so existing secrets parse; not all map onto object_store"
)]
struct SseConfig {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    kms_key_id: Option<String>,
    #[serde(default)]
    kms_encryption_context: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    encryption_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GcsConfig {
    bucket: String,
    #[serde(default)]
    service_account: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "Kubecost/Thanos keys accepted so existing secrets parse; not all map onto object_store"
)]
struct AzureConfig {
    #[serde(default)]
    storage_account: Option<String>,
    #[serde(default)]
    storage_account_key: Option<String>,
    #[serde(default)]
    storage_connection_string: Option<String>,
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
    pipeline_config: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    reader_config: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    http_config: Option<HttpConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesystemConfig {
    directory: String,
}

/// A parsed bucket: the store and a description for logs and status.
pub struct Bucket {
    /// The store, already scoped to the configured prefix.
    pub store: Arc<dyn ObjectStore>,
    /// `S3 bucket/prefix`, `FILESYSTEM /path`, ...: for logs and the status page.
    pub description: String,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    kind: &str,
    v: serde_yaml_ng::Value,
) -> Result<T, BucketConfigError> {
    serde_yaml_ng::from_value(v)
        .map_err(|e| BucketConfigError::Parse(format!("config for type {kind}: {e}")))
}

fn client_options(
    http: Option<&HttpConfig>,
    allow_http: bool,
) -> Result<ClientOptions, BucketConfigError> {
    let mut o = ClientOptions::new().with_allow_http(allow_http);
    if let Some(h) = http {
        o = o.with_allow_invalid_certificates(h.insecure_skip_verify);
        if let Some(t) = &h.response_header_timeout {
            let d = humantime::parse_duration(t).map_err(|e| {
                BucketConfigError::Parse(format!("http_config.response_header_timeout {t:?}: {e}"))
            })?;
            o = o.with_timeout(d);
        }
    }
    Ok(o)
}

/// Builds the bucket from the text of a bucket-secret file.
pub fn from_yaml(text: &str) -> Result<Bucket, BucketConfigError> {
    let secret: Secret =
        serde_yaml_ng::from_str(text).map_err(|e| BucketConfigError::Parse(e.to_string()))?;
    let kind = secret.kind.to_ascii_uppercase();
    let (store, description): (Arc<dyn ObjectStore>, String) = match kind.as_str() {
        "S3" => {
            let c: S3Config = parse("S3", secret.config)?;
            let mut b = AmazonS3Builder::new().with_bucket_name(&c.bucket);
            if let Some(region) = &c.region {
                b = b.with_region(region);
            }
            if let Some(endpoint) = &c.endpoint {
                // Thanos endpoints are host[:port]; the scheme follows `insecure`.
                let url = if endpoint.contains("://") {
                    endpoint.clone()
                } else {
                    format!("{}://{endpoint}", if c.insecure { "http" } else { "https" })
                };
                b = b.with_endpoint(url);
            }
            if let (Some(k), Some(s)) = (&c.access_key, &c.secret_key) {
                b = b.with_access_key_id(k).with_secret_access_key(s);
            } else if !c.aws_sdk_auth {
                // Without static keys, fall back to the environment and instance metadata the
                // way the AWS SDK does.
                b = AmazonS3Builder::from_env().with_bucket_name(&c.bucket);
                if let Some(region) = &c.region {
                    b = b.with_region(region);
                }
            }
            if let Some(sse) = &c.sse_config {
                match (sse.kind.as_str(), &sse.kms_key_id) {
                    ("SSE-KMS", Some(key)) => b = b.with_sse_kms_encryption(key),
                    ("SSE-S3", _) => {}
                    (other, _) => {
                        return Err(BucketConfigError::Parse(format!(
                            "config.sse_config.type {other:?} is not supported (SSE-S3, or SSE-KMS with kms_key_id)"
                        )));
                    }
                }
            }
            if c.signature_version2 {
                tracing::warn!("bucket config: signature_version2 is ignored; requests use SigV4");
            }
            b = b.with_client_options(client_options(c.http_config.as_ref(), c.insecure)?);
            let store = b
                .build()
                .map_err(|source| BucketConfigError::Build { kind: "S3", source })?;
            (Arc::new(store), format!("S3 {}", c.bucket))
        }
        "GCS" => {
            let c: GcsConfig = parse("GCS", secret.config)?;
            let mut b = GoogleCloudStorageBuilder::new().with_bucket_name(&c.bucket);
            if let Some(sa) = &c.service_account {
                b = b.with_service_account_key(sa);
            }
            let store = b.build().map_err(|source| BucketConfigError::Build {
                kind: "GCS",
                source,
            })?;
            (Arc::new(store), format!("GCS {}", c.bucket))
        }
        "AZURE" => {
            let c: AzureConfig = parse("AZURE", secret.config)?;
            let mut b = MicrosoftAzureBuilder::new().with_container_name(&c.container);
            if let Some(a) = &c.storage_account {
                b = b.with_account(a);
            }
            if let Some(k) = &c.storage_account_key {
                b = b.with_access_key(k);
            }
            if let Some(id) = &c.user_assigned_id {
                b = b.with_client_id(id);
            }
            if c.storage_connection_string.is_some() {
                return Err(BucketConfigError::Parse(
                    "config.storage_connection_string is not supported; set storage_account and storage_account_key".into(),
                ));
            }
            let mut allow_http = false;
            if let Some(endpoint) = &c.endpoint {
                if endpoint.contains("://") {
                    allow_http = endpoint.starts_with("http://");
                    b = b.with_endpoint(endpoint.clone());
                } else if let Some(a) = &c.storage_account {
                    b = b.with_endpoint(format!("https://{a}.{endpoint}"));
                }
            }
            b = b.with_client_options(client_options(c.http_config.as_ref(), allow_http)?);
            let store = b.build().map_err(|source| BucketConfigError::Build {
                kind: "AZURE",
                source,
            })?;
            (Arc::new(store), format!("AZURE {}", c.container))
        }
        "FILESYSTEM" => {
            let c: FilesystemConfig = parse("FILESYSTEM", secret.config)?;
            (
                filesystem(&c.directory)?,
                format!("FILESYSTEM {}", c.directory),
            )
        }
        other => {
            return Err(BucketConfigError::Parse(format!(
                "type {other:?} is not one of S3, GCS, AZURE, FILESYSTEM"
            )));
        }
    };
    Ok(
        match secret.prefix.filter(|p| !p.trim_matches('/').is_empty()) {
            Some(prefix) => {
                let prefix = prefix.trim_matches('/').to_string();
                Bucket {
                    store: Arc::new(PrefixStore::new(store, prefix.as_str())),
                    description: format!("{description}/{prefix}"),
                }
            }
            None => Bucket { store, description },
        },
    )
}

/// A `FILESYSTEM` bucket in a local folder (created if missing).
pub fn filesystem(dir: &str) -> Result<Arc<dyn ObjectStore>, BucketConfigError> {
    std::fs::create_dir_all(dir).map_err(|source| BucketConfigError::Folder {
        path: dir.to_string(),
        source,
    })?;
    let fs = LocalFileSystem::new_with_prefix(dir)
        .map_err(|source| BucketConfigError::Build {
            kind: "FILESYSTEM",
            source,
        })?
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubecost_s3_secret_parses() {
        let b = from_yaml(
            "type: S3\nconfig:\n  bucket: kc\n  endpoint: 127.0.0.1:9000\n  region: us-east-1\n  access_key: a\n  secret_key: b\n  insecure: true\nprefix: kubecost/etlbackup\n",
        )
        .unwrap();
        assert_eq!(b.description, "S3 kc/kubecost/etlbackup");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = from_yaml("type: S3\nconfig:\n  bucket: kc\n  buckit: x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("buckit"), "{e}");
        let e = from_yaml("type: S3\nconfig: {bucket: kc}\nextra: 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("extra"), "{e}");
        let e = from_yaml("type: DROPBOX\nconfig: {}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("DROPBOX"), "{e}");
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
    }
}
