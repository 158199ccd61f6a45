//! Black-box parsing of bucket secrets shaped like the ones in Kubecost's ETL-backup and
//! federated-storage docs (`object-store.yaml`), one per backend: the description shown on the
//! status page, the mapping onto the `object_store` builder, and that the store builds without
//! any network access (building only reads configuration; the credential providers, including the
//! instance-metadata ones, are lazy).

use cost_model::storage::bucket::{self, Backend, BucketConfigError};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::{ClientConfigKey, ObjectStoreExt, PutPayload, path::Path};

const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
/// base64 of "kubecost example azure storage account key, not real".
const AZURE_KEY: &str = "a3ViZWNvc3QgZXhhbXBsZSBhenVyZSBzdG9yYWdlIGFjY291bnQga2V5LCBub3QgcmVhbA==";

/// Kubecost's S3 template with static keys.
fn s3_with_keys() -> String {
    format!(
        r#"type: S3
config:
  bucket: "kubecost-etl-backup"
  endpoint: "s3.amazonaws.com"
  region: "us-east-2"
  access_key: "{ACCESS_KEY}"
  secret_key: "{SECRET_KEY}"
  sse_config:
    type: "SSE-S3"
  insecure: false
  signature_version2: false
  put_user_metadata:
      "X-Amz-Acl": "bucket-owner-full-control"
  http_config:
    idle_conn_timeout: 90s
    response_header_timeout: 2m
    insecure_skip_verify: false
  trace:
    enable: true
  part_size: 134217728
prefix: "etl"
"#
    )
}

/// Kubecost's S3 template for IRSA / instance roles: no keys, `aws_sdk_auth`.
const S3_IRSA: &str = r#"type: S3
config:
  bucket: "kubecost-etl-backup"
  endpoint: "s3.amazonaws.com"
  region: "eu-west-1"
  aws_sdk_auth: true
  insecure: false
  signature_version2: false
  http_config:
    idle_conn_timeout: 90s
    response_header_timeout: 2m
    insecure_skip_verify: false
  trace:
    enable: false
  part_size: 134217728
"#;

/// MinIO in the cluster, credentials from the environment (no keys in the secret).
const S3_MINIO_NO_KEYS: &str = r#"type: S3
config:
  bucket: "kubecost"
  endpoint: "minio.minio.svc.cluster.local:9000"
  insecure: true
  signature_version2: false
"#;

/// Kubecost's GCS template, plus `disable_oauth` so that no token is ever requested (the
/// placeholder private key is then never parsed either).
const GCS_SERVICE_ACCOUNT: &str = r#"type: GCS
config:
  bucket: "kubecost-etl-backup"
  service_account: |-
    {
      "type": "service_account",
      "project_id": "kubecost-example",
      "private_key_id": "0123456789abcdef0123456789abcdef01234567",
      "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDexampleexample\n-----END PRIVATE KEY-----\n",
      "client_email": "kubecost-etl@kubecost-example.iam.gserviceaccount.com",
      "client_id": "123456789012345678901",
      "auth_uri": "https://accounts.google.com/o/oauth2/auth",
      "token_uri": "https://oauth2.googleapis.com/token",
      "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
      "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/kubecost-etl%40kubecost-example.iam.gserviceaccount.com",
      "disable_oauth": true
    }
"#;

/// Kubecost's Azure template with an account key (and its empty `endpoint`).
fn azure_with_key() -> String {
    format!(
        r#"type: AZURE
config:
  storage_account: "kubecostetl"
  storage_account_key: "{AZURE_KEY}"
  container: "kubecost-etl"
  endpoint: ""
  max_retries: 0
"#
    )
}

fn s3_config(yaml: &str) -> bucket::S3Config {
    match bucket::parse(yaml).unwrap().backend {
        Backend::S3(c) => c,
        other => panic!("not S3: {other:?}"),
    }
}

fn assert_no_secret(text: &str) {
    for s in [ACCESS_KEY, SECRET_KEY, AZURE_KEY, "MIIEvQIBADANBgkq"] {
        assert!(!text.contains(s), "{s} in {text}");
    }
}

/// The regression: a secret without static keys restarted from `AmazonS3Builder::from_env()`
/// and lost its endpoint, so a MinIO user without keys reached AWS. (Before the fix the built
/// store's endpoint was `https://s3.us-east-1.amazonaws.com/kubecost`.) This runs the production
/// path, `from_env()` of this process.
#[test]
fn s3_without_static_keys_keeps_the_configured_endpoint() {
    let c = s3_config(S3_MINIO_NO_KEYS);
    let b = bucket::s3(&c, AmazonS3Builder::from_env).unwrap();
    assert_eq!(
        b.get_config_value(&AmazonS3ConfigKey::Endpoint).as_deref(),
        Some("http://minio.minio.svc.cluster.local:9000")
    );
    assert_eq!(
        b.get_config_value(&AmazonS3ConfigKey::S3Endpoint)
            .as_deref(),
        Some("http://minio.minio.svc.cluster.local:9000")
    );
    assert_eq!(
        b.get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
            .as_deref(),
        Some("true")
    );
    let built = bucket::from_yaml(S3_MINIO_NO_KEYS).unwrap();
    assert_eq!(built.description, "S3 kubecost");
}

#[test]
fn kubecost_s3_secret_with_keys() {
    let text = s3_with_keys();
    let built = bucket::from_yaml(&text).unwrap();
    assert_eq!(built.description, "S3 kubecost-etl-backup/etl");
    assert_no_secret(&format!("{built:?} {:?} {}", built.store, built.store));

    let c = s3_config(&text);
    let b = bucket::s3(&c, || panic!("static keys: the environment is not read")).unwrap();
    let v = |k| b.get_config_value(&k);
    assert_eq!(
        v(AmazonS3ConfigKey::Bucket).as_deref(),
        Some("kubecost-etl-backup")
    );
    assert_eq!(v(AmazonS3ConfigKey::Region).as_deref(), Some("us-east-2"));
    // The template's global endpoint becomes the bucket region's.
    assert_eq!(
        v(AmazonS3ConfigKey::Endpoint).as_deref(),
        Some("https://s3.us-east-2.amazonaws.com")
    );
    assert_eq!(
        v(AmazonS3ConfigKey::AccessKeyId).as_deref(),
        Some(ACCESS_KEY)
    );
    assert_eq!(
        v(AmazonS3ConfigKey::SecretAccessKey).as_deref(),
        Some(SECRET_KEY)
    );
    assert_eq!(
        v(AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp)).as_deref(),
        Some("false")
    );
    assert_eq!(
        v(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout)).as_deref(),
        Some("2m")
    );
    // Accepted, without effect, and named in a warning.
    let parsed = bucket::parse(&text).unwrap();
    let ignored: Vec<_> = parsed
        .backend
        .ignored()
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(
        ignored,
        [
            "config.put_user_metadata",
            "config.trace",
            "config.part_size"
        ]
    );
    assert_no_secret(&format!("{parsed:?}"));
}

#[test]
fn kubecost_s3_secret_without_keys() {
    let built = bucket::from_yaml(S3_IRSA).unwrap();
    assert_eq!(built.description, "S3 kubecost-etl-backup");

    // The environment's web-identity settings (as IRSA injects them) stay; the secret's keys win.
    let c = s3_config(S3_IRSA);
    let b = bucket::s3(&c, || {
        AmazonS3Builder::new()
            .with_config(AmazonS3ConfigKey::Region, "us-west-1")
            .with_config(
                AmazonS3ConfigKey::WebIdentityTokenFile,
                "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
            )
            .with_config(
                AmazonS3ConfigKey::RoleArn,
                "arn:aws:iam::111122223333:role/kubecost",
            )
    })
    .unwrap();
    let v = |k| b.get_config_value(&k);
    assert_eq!(v(AmazonS3ConfigKey::Region).as_deref(), Some("eu-west-1"));
    assert_eq!(
        v(AmazonS3ConfigKey::Endpoint).as_deref(),
        Some("https://s3.eu-west-1.amazonaws.com")
    );
    assert!(v(AmazonS3ConfigKey::WebIdentityTokenFile).is_some());
    assert!(v(AmazonS3ConfigKey::RoleArn).is_some());
    assert_eq!(v(AmazonS3ConfigKey::AccessKeyId), None);
    b.build().unwrap();
    assert!(
        bucket::parse(S3_IRSA)
            .unwrap()
            .backend
            .ignored()
            .iter()
            .any(|i| i.key == "config.part_size")
    );
}

#[test]
fn kubecost_gcs_secret_with_a_service_account() {
    let built = bucket::from_yaml(GCS_SERVICE_ACCOUNT).unwrap();
    assert_eq!(built.description, "GCS kubecost-etl-backup");
    assert_no_secret(&format!("{built:?} {:?}", built.store));

    let parsed = bucket::parse(GCS_SERVICE_ACCOUNT).unwrap();
    assert_no_secret(&format!("{parsed:?}"));
    let Backend::Gcs(c) = parsed.backend else {
        panic!("GCS")
    };
    let b = bucket::gcs(&c, || {
        panic!("service account: the environment is not read")
    })
    .unwrap();
    assert_eq!(
        b.get_config_value(&GoogleConfigKey::Bucket).as_deref(),
        Some("kubecost-etl-backup")
    );
    assert!(
        b.get_config_value(&GoogleConfigKey::ServiceAccountKey)
            .is_some_and(|k| k.contains("kubecost-etl@"))
    );
    // Without the service account: whatever the environment gives, and the secret's bucket.
    let Backend::Gcs(c) = bucket::parse("type: GCS\nconfig:\n  bucket: kubecost-etl-backup\n")
        .unwrap()
        .backend
    else {
        panic!("GCS")
    };
    let b = bucket::gcs(&c, GoogleCloudStorageBuilder::new).unwrap();
    assert_eq!(
        b.get_config_value(&GoogleConfigKey::Bucket).as_deref(),
        Some("kubecost-etl-backup")
    );
}

/// The docs' placeholder key without `disable_oauth`: object_store parses the key when the store
/// is built, and the error says so without quoting it.
#[test]
fn gcs_placeholder_private_key_is_a_build_error_that_quotes_nothing() {
    let text = GCS_SERVICE_ACCOUNT.replace(",\n      \"disable_oauth\": true", "");
    assert!(!text.contains("disable_oauth"));
    match bucket::from_yaml(&text) {
        Err(e @ BucketConfigError::Build { kind: "GCS", .. }) => {
            assert_no_secret(&format!("{e} {e:?}"));
        }
        Err(other) => panic!("expected a build error: {other}"),
        Ok(_) => panic!("a placeholder key was accepted"),
    }
}

#[test]
fn kubecost_azure_secret_with_an_account_key() {
    let text = azure_with_key();
    let built = bucket::from_yaml(&text).unwrap();
    assert_eq!(built.description, "AZURE kubecost-etl");
    // object_store's own Debug of an Azure store prints the decoded key; the bucket's does not.
    assert_eq!(format!("{:?}", built.store), "Bucket(AZURE kubecost-etl)");
    assert_no_secret(&format!("{built:?}"));

    let parsed = bucket::parse(&text).unwrap();
    assert_no_secret(&format!("{parsed:?}"));
    let Backend::Azure(c) = parsed.backend else {
        panic!("AZURE")
    };
    let b = bucket::azure(&c, || panic!("account key: the environment is not read")).unwrap();
    let v = |k| b.get_config_value(&k);
    assert_eq!(
        v(AzureConfigKey::AccountName).as_deref(),
        Some("kubecostetl")
    );
    assert_eq!(
        v(AzureConfigKey::ContainerName).as_deref(),
        Some("kubecost-etl")
    );
    assert_eq!(v(AzureConfigKey::AccessKey).as_deref(), Some(AZURE_KEY));
    // `endpoint: ""` is the default endpoint, not `https://kubecostetl.`.
    assert_eq!(v(AzureConfigKey::Endpoint), None);
    // Without the key: the environment (workload identity here), then the secret's keys.
    let no_key = text.replace(AZURE_KEY, "");
    let Backend::Azure(c) = bucket::parse(&no_key).unwrap().backend else {
        panic!("AZURE")
    };
    let b = bucket::azure(&c, || {
        MicrosoftAzureBuilder::new()
            .with_config(AzureConfigKey::ClientId, "env-client-id")
            .with_config(AzureConfigKey::AuthorityId, "env-tenant-id")
            .with_config(
                AzureConfigKey::FederatedTokenFile,
                "/var/run/secrets/azure/tokens/azure-identity-token",
            )
    })
    .unwrap();
    assert_eq!(
        b.get_config_value(&AzureConfigKey::AccountName).as_deref(),
        Some("kubecostetl")
    );
    assert!(
        b.get_config_value(&AzureConfigKey::FederatedTokenFile)
            .is_some()
    );
    assert_eq!(b.get_config_value(&AzureConfigKey::AccessKey), None);
    b.build().unwrap();
}

#[tokio::test]
async fn kubecost_filesystem_secret() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "type: FILESYSTEM\nconfig:\n  directory: \"{}\"\nprefix: \"kubecost\"\n",
        dir.path().display()
    );
    let built = bucket::from_yaml(&text).unwrap();
    assert_eq!(
        built.description,
        format!("FILESYSTEM {}/kubecost", dir.path().display())
    );
    built
        .store
        .put(&Path::from("etl/x.json"), PutPayload::from_static(b"{}"))
        .await
        .unwrap();
    assert!(dir.path().join("kubecost/etl/x.json").is_file());
}

#[test]
fn from_file_reads_an_object_store_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("object-store.yaml");
    std::fs::write(&path, azure_with_key()).unwrap();
    assert_eq!(
        bucket::from_file(&path).unwrap().description,
        "AZURE kubecost-etl"
    );
    let e = bucket::from_file(&dir.path().join("missing.yaml")).unwrap_err();
    assert!(matches!(e, BucketConfigError::Read { .. }), "{e}");
}

#[test]
fn a_misspelt_key_in_a_kubecost_secret_is_named() {
    let text = s3_with_keys().replace("  region:", "  regoin:");
    match bucket::from_yaml(&text) {
        Err(BucketConfigError::Invalid { key, .. }) => assert_eq!(key, "config.regoin"),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a misspelt key was accepted"),
    }
}
