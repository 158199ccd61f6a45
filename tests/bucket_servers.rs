//! The real binary on real object stores, configured with Kubecost's bucket secret: a
//! standalone leader backs up to MinIO (S3) and Azurite (Azure Blob) and a follower on the same
//! secret serves the same totals; an S3 secret without keys takes its credentials from the
//! environment and keeps its endpoint; and a leader killed with `kill -9` again and again while
//! it backs up leaves a bucket whose complete sets equal an undisturbed run's, byte for byte.

mod proc;
mod stores;

use std::collections::BTreeMap;
use std::time::Duration;

use cost_model::storage::backup;
use cost_model::storage::manifest::{self, FileEntry};
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use proc::{spawn, spawn_with_env, wait_for};

/// `namespace → cost` of a `/model/allocation` answer's first set.
fn totals(body: &serde_json::Value) -> BTreeMap<String, f64> {
    body["data"][0]
        .as_object()
        .map(|set| {
            set.iter()
                .map(|(k, v)| (k.clone(), v["totalCost"].as_f64().unwrap_or(f64::NAN)))
                .collect()
        })
        .unwrap_or_default()
}

/// The newest manifest of `store`, and whether every object it names is there and verifies.
async fn verified(store: &dyn ObjectStore) -> (manifest::Manifest, bool) {
    let m = backup::newest_manifest(store)
        .await
        .unwrap()
        .manifest
        .expect("a manifest");
    let mut ok = true;
    for (path, entry) in &m.files {
        let body = match store
            .get(&object_store::path::Path::from(path.as_str()))
            .await
        {
            Ok(r) => r.bytes().await.unwrap(),
            Err(_) => {
                ok = false;
                continue;
            }
        };
        ok &= manifest::verify(entry, &body);
    }
    (m, ok)
}

async fn leader_and_follower_share_a_real_bucket(
    secret_yaml: String,
    store: std::sync::Arc<dyn ObjectStore>,
    what: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("object-store.yaml");
    std::fs::write(&secret, secret_yaml).unwrap();
    let secret = secret.to_str().unwrap();
    let common = [
        "--bucket-config",
        secret,
        "--demo-seed",
        "11",
        "--demo-pods",
        "60",
    ];
    let leader = spawn(
        dir.path(),
        "leader",
        &[&common[..], &["--backfill", "1d"]].concat(),
    );
    let client = reqwest::Client::new();
    let path = "/model/allocation?window=yesterday&aggregate=namespace&accumulate=true";
    let ours = wait_for(&leader, &client, "/model/etl/status", |s, b| {
        s == 200
            && b["data"]["pendingSets"] == 0
            && b["data"]["lastBackup"].is_string()
            && b["data"]["coverage"]
                .as_array()
                .is_some_and(|c| c.len() == 4)
    })
    .await;
    let led = wait_for(&leader, &client, path, |s, b| {
        s == 200 && !totals(b).is_empty()
    })
    .await;

    let follower = spawn(
        dir.path(),
        "follower",
        &[
            &common[..],
            &["--election", "follower", "--poll-interval", "1s"],
        ]
        .concat(),
    );
    let followed = wait_for(&follower, &client, path, |s, b| {
        s == 200 && totals(b) == totals(&led)
    })
    .await;
    assert_eq!(totals(&followed), totals(&led), "{what}");

    // What is in the bucket, read directly: a manifest whose objects all verify.
    let (m, ok) = verified(store.as_ref()).await;
    assert!(ok, "{what}: every object the manifest names verifies");
    assert_eq!(m.writer, "leader", "{what}");
    assert!(!m.files.is_empty(), "{what}: {ours}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_and_a_follower_share_minio_through_a_kubecost_secret() {
    let bucket = stores::minio_bucket().await;
    leader_and_follower_share_a_real_bucket(
        stores::s3_secret_yaml(&bucket),
        stores::minio_store(&bucket),
        "minio",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_and_a_follower_share_azurite_through_a_kubecost_secret() {
    let container = stores::azurite_container().await;
    leader_and_follower_share_a_real_bucket(
        stores::azure_secret_yaml(&container),
        stores::azurite_store(&container),
        "azurite",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_secret_without_keys_takes_them_from_the_environment_and_keeps_its_endpoint() {
    let bucket = stores::minio_bucket().await;
    let s = stores::servers();
    let host = s.minio_endpoint.trim_start_matches("http://");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("object-store.yaml");
    std::fs::write(
        &secret,
        format!("type: S3\nconfig:\n  bucket: {bucket}\n  endpoint: {host}\n  insecure: true\n  region: us-east-1\n"),
    )
    .unwrap();
    let p = spawn_with_env(
        dir.path(),
        "leader",
        &[
            "--bucket-config",
            secret.to_str().unwrap(),
            "--backfill",
            "1h",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", s.minio_access_key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", s.minio_secret_key.as_str()),
            // Nothing may reach AWS: no instance metadata, no default endpoint.
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    let client = reqwest::Client::new();
    // Built and backed up: a backup right after promotion, before anything is built, also
    // leaves nothing pending, so wait for the sets too.
    wait_for(&p, &client, "/model/etl/status", |s, b| {
        s == 200
            && b["data"]["pendingSets"] == 0
            && b["data"]["lastBackup"].is_string()
            && b["data"]["coverage"]
                .as_array()
                .is_some_and(|c| c.len() == 4)
    })
    .await;
    let (m, ok) = verified(stores::minio_store(&bucket).as_ref()).await;
    assert!(ok && !m.files.is_empty());
}

/// The complete sets of a manifest: slot → sha256.
fn complete(files: &BTreeMap<String, FileEntry>) -> BTreeMap<(String, String, i64), String> {
    files
        .values()
        .filter(|e| e.data_end >= e.end)
        .map(|e| {
            (
                (
                    format!("{:?}", e.kind),
                    e.resolution.to_string(),
                    e.start.timestamp(),
                ),
                e.sha256.clone(),
            )
        })
        .collect()
}

/// A bucket for the kill test: its Kubecost secret and a store reading it directly.
struct Target {
    name: &'static str,
    secret: String,
    store: std::sync::Arc<dyn ObjectStore>,
    _dir: Option<tempfile::TempDir>,
}

async fn minio_target() -> Target {
    let bucket = stores::minio_bucket().await;
    Target {
        name: "minio",
        secret: stores::s3_secret_yaml(&bucket),
        store: stores::minio_store(&bucket),
        _dir: None,
    }
}

fn folder_target() -> Target {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    Target {
        name: "filesystem",
        secret: format!("type: FILESYSTEM\nconfig:\n  directory: {path}\n"),
        store: cost_model::storage::bucket::filesystem(&path).unwrap(),
        _dir: Some(dir),
    }
}

/// Runs the replica on `target` until its backfill is backed up.
async fn run_to_completion(dir: &std::path::Path, name: &str, args: &[&str]) {
    let client = reqwest::Client::new();
    let p = spawn(dir, name, args);
    wait_for(&p, &client, "/model/etl/status", |s, b| {
        s == 200
            && b["data"]["pendingSets"] == 0
            && b["data"]["coverage"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["resolution"] == "1d" && c["sets"].as_u64() >= Some(4))
            })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_again_and_again_leaves_the_bucket_an_undisturbed_run_would() {
    for (reference, disturbed) in [
        (minio_target().await, minio_target().await),
        (folder_target(), folder_target()),
    ] {
        let what = disturbed.name;
        let dir = tempfile::tempdir().unwrap();
        let client = reqwest::Client::new();
        let args = |secret: &std::path::Path| -> Vec<String> {
            let secret = secret.to_str().unwrap();
            [
                "--bucket-config",
                secret,
                "--demo-seed",
                "5",
                "--demo-pods",
                "400",
                "--backfill",
                "3d",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        // The reference: one undisturbed run on its own bucket.
        let ref_secret = dir.path().join("reference.yaml");
        std::fs::write(&ref_secret, &reference.secret).unwrap();
        let ref_args = args(&ref_secret);
        let ref_args: Vec<&str> = ref_args.iter().map(String::as_str).collect();
        run_to_completion(dir.path(), "reference", &ref_args).await;

        // The disturbed run: killed with SIGKILL at several points of its backfill and
        // restarted on the same local store each time.
        let secret = dir.path().join("disturbed.yaml");
        std::fs::write(&secret, &disturbed.secret).unwrap();
        let run_args = args(&secret);
        let run_args: Vec<&str> = run_args.iter().map(String::as_str).collect();
        let mut generations = Vec::new();
        for after in [150u64, 400, 700, 1100] {
            let mut p = spawn(dir.path(), "disturbed", &run_args);
            wait_for(&p, &client, "/healthz", |s, _| s == 200).await;
            tokio::time::sleep(Duration::from_millis(after)).await;
            p.child.kill().unwrap();
            let _ = p.child.wait();
            let g = backup::latest_generation(disturbed.store.as_ref())
                .await
                .unwrap();
            let staged = dir.path().join("disturbed-etl/etl/v1/staged.json").exists();
            eprintln!(
                "{what}: killed after {after} ms at generation {g}, staged lineage left: {staged}"
            );
            generations.push(g);
        }
        generations.dedup();
        assert!(
            generations.len() >= 2,
            "{what}: the kills must land while the backfill is backed up: {generations:?}"
        );
        run_to_completion(dir.path(), "disturbed", &run_args).await;

        let (want, ok) = verified(reference.store.as_ref()).await;
        assert!(ok, "{what}");
        let (got, ok) = verified(disturbed.store.as_ref()).await;
        assert!(ok, "{what}: the disturbed bucket's manifest verifies");
        let (want, got) = (complete(&want.files), complete(&got.files));
        for (slot, sha) in &want {
            if let Some(g) = got.get(slot) {
                assert_eq!(g, sha, "{what}: {slot:?} differs from the undisturbed run");
            }
        }
        let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
        assert!(
            missing.is_empty(),
            "{what}: complete sets the disturbed run lacks: {missing:?}"
        );
    }
}
