//! Object stores for tests: fresh, empty stores on every backend the backup protocol runs on.
//!
//! [`all`] returns one store per backend: `memory` (`InMemory`), `filesystem` (a new temporary
//! folder, built the way a `FILESYSTEM` bucket secret builds it), `minio` (a new bucket on the
//! MinIO of `scripts/objectstore`) and `azurite` (a new container on its Azurite). The servers
//! are started, or reused, once per test process; buckets and containers get unique names, so
//! test processes can share the servers. `scripts/objectstore down` removes them all.
//!
//! [`s3_secret_yaml`] and [`azure_secret_yaml`] give Kubecost bucket-secret YAML for the same
//! servers, so a replica process can be pointed at a bucket a test also reads directly.
//!
//! object_store cannot create buckets or containers, so this module signs those two requests
//! itself (S3 SigV4 and Azure SharedKey, with HMAC-SHA256 written over `sha2`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::memory::InMemory;
use sha2::{Digest, Sha256};

/// The region MinIO answers for (its default) and the S3 stores and secrets name.
pub const S3_REGION: &str = "us-east-1";

/// One fresh, empty store and what keeps it alive.
pub struct Backend {
    /// `memory`, `filesystem`, `minio` or `azurite`: for assertion messages.
    pub name: &'static str,
    /// The store, scoped to its bucket, container or folder.
    pub store: Arc<dyn ObjectStore>,
    /// The bucket (`minio`), container (`azurite`) or folder (`filesystem`) behind the store;
    /// empty for `memory`.
    pub location: String,
    /// The temporary folder of a `filesystem` store, removed when the backend drops.
    _dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.name, self.location)
    }
}

/// The servers of `scripts/objectstore`, from the env file `up` printed.
#[derive(Clone, Debug)]
pub struct Servers {
    /// The env file itself.
    pub env_file: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub minio_endpoint: String,
    /// MinIO's root user.
    pub minio_access_key: String,
    /// MinIO's root password.
    pub minio_secret_key: String,
    /// `http://127.0.0.1:PORT/devstoreaccount1`.
    pub azurite_endpoint: String,
    /// `devstoreaccount1`.
    pub azurite_account: String,
    /// Azurite's well-known development key (base64).
    pub azurite_key: String,
}

/// The repository root (where `scripts/objectstore` lives).
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shared servers: `scripts/objectstore up` once per test process (it is idempotent and
/// serialises concurrent callers itself; the `OnceLock` keeps one process from asking twice).
pub fn servers() -> &'static Servers {
    static SHARED: OnceLock<Servers> = OnceLock::new();
    SHARED.get_or_init(servers_up)
}

/// Runs `scripts/objectstore up` and reads the env file it reports.
fn servers_up() -> Servers {
    let started = Instant::now();
    let out = Command::new(repo().join("scripts/objectstore"))
        .arg("up")
        .current_dir(repo())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/objectstore up");
    assert!(
        out.status.success(),
        "scripts/objectstore up failed: {} (it needs Go to build MinIO and Node.js/npm for Azurite)",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let env_file = PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("scripts/objectstore up printed a path")
            .trim(),
    );
    let text = std::fs::read_to_string(&env_file)
        .unwrap_or_else(|e| panic!("scripts/objectstore up printed {env_file:?}: {e}"));
    let vars: HashMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let var = |k: &str| -> String {
        vars.get(k)
            .unwrap_or_else(|| panic!("{k} missing from {}", env_file.display()))
            .to_string()
    };
    let servers = Servers {
        minio_endpoint: var("MINIO_ENDPOINT"),
        minio_access_key: var("MINIO_ACCESS_KEY"),
        minio_secret_key: var("MINIO_SECRET_KEY"),
        azurite_endpoint: var("AZURITE_ENDPOINT"),
        azurite_account: var("AZURITE_ACCOUNT"),
        azurite_key: var("AZURITE_KEY"),
        env_file,
    };
    eprintln!(
        "objectstore up in {:?}: MinIO {}, Azurite {}",
        started.elapsed(),
        servers.minio_endpoint,
        servers.azurite_endpoint
    );
    servers
}

/// A fresh, empty store on every backend, in the order memory, filesystem, minio, azurite.
pub async fn all() -> Vec<Backend> {
    vec![memory(), filesystem(), minio().await, azurite().await]
}

/// A new `InMemory` store.
pub fn memory() -> Backend {
    Backend {
        name: "memory",
        store: Arc::new(InMemory::new()),
        location: String::new(),
        _dir: None,
    }
}

/// A `LocalFileSystem` store in a new temporary folder, built by
/// `cost_model::storage::bucket::filesystem` as a `FILESYSTEM` secret builds it.
pub fn filesystem() -> Backend {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_str().expect("UTF-8 temp path").to_string();
    let store = cost_model::storage::bucket::filesystem(&path).expect("filesystem bucket");
    Backend {
        name: "filesystem",
        store,
        location: path,
        _dir: Some(dir),
    }
}

/// A store on a new, empty MinIO bucket.
pub async fn minio() -> Backend {
    let bucket = minio_bucket().await;
    Backend {
        name: "minio",
        store: minio_store(&bucket),
        location: bucket,
        _dir: None,
    }
}

/// A store on a new, empty Azurite container.
pub async fn azurite() -> Backend {
    let container = azurite_container().await;
    Backend {
        name: "azurite",
        store: azurite_store(&container),
        location: container,
        _dir: None,
    }
}

/// An S3 store on an existing MinIO bucket: path style, plain HTTP, the fixed credentials.
/// Conditional puts use `If-None-Match`/`If-Match`, object_store's default for S3.
pub fn minio_store(bucket: &str) -> Arc<dyn ObjectStore> {
    let s = servers();
    let store = AmazonS3Builder::new()
        .with_endpoint(&s.minio_endpoint)
        .with_bucket_name(bucket)
        .with_region(S3_REGION)
        .with_access_key_id(&s.minio_access_key)
        .with_secret_access_key(&s.minio_secret_key)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .expect("S3 store for MinIO");
    Arc::new(store)
}

/// An Azure store on an existing Azurite container: explicit endpoint, account and key (not
/// emulator mode, which reads its URL from the process environment).
pub fn azurite_store(container: &str) -> Arc<dyn ObjectStore> {
    let s = servers();
    let store = MicrosoftAzureBuilder::new()
        .with_endpoint(s.azurite_endpoint.clone())
        .with_account(&s.azurite_account)
        .with_access_key(&s.azurite_key)
        .with_container_name(container)
        .with_allow_http(true)
        .build()
        .expect("Azure store for Azurite");
    Arc::new(store)
}

/// A name no other call (in this or another test process) returns: lowercase letters, digits
/// and single hyphens, 3 to 63 characters, valid for S3 buckets and Azure containers alike.
pub fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!(
        "cm-{}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a new, empty MinIO bucket (S3 CreateBucket, SigV4-signed) and returns its name.
pub async fn minio_bucket() -> String {
    let s = servers();
    let bucket = unique_name();
    let url = format!("{}/{bucket}", s.minio_endpoint);
    let host = s
        .minio_endpoint
        .split_once("://")
        .map_or(s.minio_endpoint.as_str(), |(_, h)| h)
        .trim_end_matches('/');
    let headers = sigv4_headers(
        "PUT",
        host,
        &format!("/{bucket}"),
        b"",
        &s.minio_access_key,
        &s.minio_secret_key,
        chrono::Utc::now(),
    );
    let mut req = reqwest::Client::new().put(&url).body(Vec::<u8>::new());
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.expect("CreateBucket request to MinIO");
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert!(
        status.is_success(),
        "MinIO CreateBucket {bucket}: {status} {body}"
    );
    bucket
}

/// Creates a new, empty Azurite container (Create Container, SharedKey-signed) and returns its
/// name.
pub async fn azurite_container() -> String {
    let s = servers();
    let container = unique_name();
    let url = format!("{}/{container}?restype=container", s.azurite_endpoint);
    let date = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let version = "2021-08-06";
    let content_type = "application/octet-stream";
    // VERB, Content-Encoding, Content-Language, Content-Length (empty for 0), Content-MD5,
    // Content-Type, Date, If-Modified-Since, If-Match, If-None-Match, If-Unmodified-Since,
    // Range; then the x-ms- headers and the resource (the account appears twice: once as the
    // signer, once as the first path segment of an emulator URL).
    let account = &s.azurite_account;
    let string_to_sign = format!(
        "PUT\n\n\n\n\n{content_type}\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{account}/{account}/{container}\nrestype:container"
    );
    let key = base64_decode(&s.azurite_key).expect("AZURITE_KEY is base64");
    let signature = base64_encode(&hmac_sha256(&key, string_to_sign.as_bytes()));
    let resp = reqwest::Client::new()
        .put(&url)
        .header("x-ms-date", &date)
        .header("x-ms-version", version)
        .header("content-type", content_type)
        .header("authorization", format!("SharedKey {account}:{signature}"))
        .body(Vec::<u8>::new())
        .send()
        .await
        .expect("Create Container request to Azurite");
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert!(
        status.is_success(),
        "Azurite Create Container {container}: {status} {body}"
    );
    container
}

/// Kubecost bucket-secret YAML (`type: S3`) for a MinIO bucket, as `storage::bucket` reads it:
/// `endpoint` is host:port and `insecure: true` makes it plain HTTP.
pub fn s3_secret_yaml(bucket: &str) -> String {
    let s = servers();
    let host = s
        .minio_endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/');
    format!(
        "type: S3\nconfig:\n  bucket: \"{bucket}\"\n  endpoint: \"{host}\"\n  insecure: true\n  access_key: \"{}\"\n  secret_key: \"{}\"\n  region: {S3_REGION}\n",
        s.minio_access_key, s.minio_secret_key
    )
}

/// Kubecost bucket-secret YAML (`type: AZURE`) for an Azurite container; a full `http://`
/// endpoint is used as is and allows plain HTTP.
pub fn azure_secret_yaml(container: &str) -> String {
    let s = servers();
    format!(
        "type: AZURE\nconfig:\n  storage_account: \"{}\"\n  storage_account_key: \"{}\"\n  container: \"{container}\"\n  endpoint: \"{}\"\n",
        s.azurite_account, s.azurite_key, s.azurite_endpoint
    )
}

/// The headers of an AWS SigV4-signed S3 request with no query string (`host`,
/// `x-amz-content-sha256`, `x-amz-date`, `authorization`), for service `s3` in [`S3_REGION`].
pub fn sigv4_headers(
    method: &str,
    host: &str,
    path: &str,
    body: &[u8],
    access_key: &str,
    secret_key: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<(&'static str, String)> {
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let day = now.format("%Y%m%d").to_string();
    let payload_hash = hex::encode(Sha256::digest(body));
    let signed_headers = "host;x-amz-content-sha256;x-amz-date";
    let canonical_request = format!(
        "{method}\n{path}\n\nhost:{host}\nx-amz-content-sha256:{payload_hash}\nx-amz-date:{amz_date}\n\n{signed_headers}\n{payload_hash}"
    );
    let scope = format!("{day}/{S3_REGION}/s3/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let k_date = hmac_sha256(format!("AWS4{secret_key}").as_bytes(), day.as_bytes());
    let k_region = hmac_sha256(&k_date, S3_REGION.as_bytes());
    let k_service = hmac_sha256(&k_region, b"s3");
    let k_signing = hmac_sha256(&k_service, b"aws4_request");
    let signature = hex::encode(hmac_sha256(&k_signing, string_to_sign.as_bytes()));
    vec![
        ("host", host.to_string()),
        ("x-amz-content-sha256", payload_hash),
        ("x-amz-date", amz_date),
        (
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
            ),
        ),
    ]
}

/// HMAC-SHA256 (RFC 2104) over `sha2`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block_key = [0u8; BLOCK];
    if key.len() > BLOCK {
        block_key[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block_key[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block_key.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block_key.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(BASE64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 with padding; `None` for anything else.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let body = text.trim_end_matches('=');
    if text.len() - body.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in body.bytes() {
        let v = BASE64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
