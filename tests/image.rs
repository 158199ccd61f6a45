//! The container image. The Dockerfile is linted (hadolint) and its final stage read; an image
//! assembled by `scripts/image build` from the binary these tests have (a debug build of the
//! test profile: the release build takes about 10 minutes and is not part of the test command)
//! must carry the same user, settings and writable folders; then podman (Debian's, with runc)
//! runs it as a person would deploy it: on a read-only root as uid 65532 with a folder mounted
//! on /var/configs it becomes ready and answers allocation queries; with nothing mounted it is
//! live but not ready and names --etl-dir; given a Kubecost bucket secret (ETL_BUCKET_CONFIG,
//! mounted as the chart mounts it) it backs up there; run bare (no flags) it uses the image's own
//! non-root user and becomes ready. The base images themselves cannot be pulled here, so the Dockerfile
//! is not built; what is run is the same final stage assembled from this machine's libraries.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The non-root user of the final stage.
const UID: u32 = 65532;
/// The folder that must be writable, and what the image keeps in it.
const CONFIGS: &str = "/var/configs";
const ETL_DIR: &str = "/var/configs/db/etl";
const WRITABLE: [&str; 5] = [
    "var/configs/",
    "var/configs/db/",
    "var/configs/db/etl/",
    "var/configs/data/",
    "var/configs/data/bucket/",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout)
        .unwrap()
        .trim()
        .to_string()
}

/// The Dockerfile's final stage (after the last FROM, FROM included), continuation lines
/// joined, comments and blank lines dropped.
fn final_stage() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let mut lines = Vec::new();
    let mut cont = String::new();
    for line in text.lines() {
        let line = line.trim();
        if cont.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            cont.push_str(head.trim_end());
            cont.push(' ');
            continue;
        }
        cont.push_str(line);
        lines.push(std::mem::take(&mut cont));
    }
    let last_from = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    lines.split_off(last_from)
}

/// The argument of the last `keyword` instruction of the final stage.
fn instruction(stage: &[String], keyword: &str) -> String {
    stage
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("{keyword} ")))
        .unwrap_or_else(|| panic!("the final stage has no {keyword}"))
        .trim()
        .to_string()
}

/// The `KEY=VALUE` pairs of the final stage's ENV instructions, in order.
fn env(stage: &[String]) -> Vec<String> {
    stage
        .iter()
        .filter_map(|l| l.strip_prefix("ENV "))
        .flat_map(|pairs| pairs.split_whitespace().map(str::to_string))
        .collect()
}

/// The image assembled from the test binary, built once per run of this file.
fn image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image");
        std::fs::create_dir_all(&dir).unwrap();
        let tar = dir.join("cost-model.tar");
        let started = Instant::now();
        run(Command::new(root().join("scripts/image"))
            .arg("build")
            .arg(env!("CARGO_BIN_EXE_cost-model"))
            .arg(&tar)
            .arg(TAG));
        eprintln!(
            "assembled {} ({} MB) in {:.1?}",
            tar.display(),
            std::fs::metadata(&tar).unwrap().len() / 1_000_000,
            started.elapsed()
        );
        tar
    })
}

/// The tag the test image is loaded under (removed afterwards).
const TAG: &str = "localhost/cost-model:test";

#[test]
fn hadolint_passes_on_the_dockerfile() {
    let out = run(Command::new(root().join("scripts/image")).arg("lint"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Dockerfile clean"),
        "{out:?}"
    );
}

#[test]
fn the_dockerfile_is_multi_stage_non_root_and_read_only_root_friendly() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(
        froms.len(),
        2,
        "a build stage and a runtime stage: {froms:?}"
    );
    assert!(froms[0].ends_with(" AS build"), "{froms:?}");
    assert!(
        text.contains("cargo build --release --locked"),
        "a --locked release build"
    );
    let stage = final_stage();
    assert!(
        stage[0].starts_with("FROM gcr.io/distroless/cc-debian12:nonroot"),
        "{}",
        stage[0]
    );
    assert_eq!(instruction(&stage, "USER"), format!("{UID}:{UID}"));
    assert_eq!(instruction(&stage, "EXPOSE"), "9003");
    assert_eq!(instruction(&stage, "WORKDIR"), CONFIGS);
    assert_eq!(
        instruction(&stage, "ENTRYPOINT"),
        r#"["/usr/local/bin/cost-model"]"#
    );
    // Only ETL_DIR: ETL_BUCKET_DIR in the image would refuse a Kubecost bucket secret
    // (ETL_BUCKET_CONFIG) as "exclusive", and let LEADER_FOLLOWER_ENABLED=true run on a
    // pod-local folder; the bucket folder is the default ./data/bucket under WORKDIR.
    assert_eq!(env(&stage), vec![format!("ETL_DIR={ETL_DIR}")]);
    // The writable folders: created in the build stage, copied owned by the user.
    assert!(
        text.contains("mkdir -p /out/var/configs/db/etl /out/var/configs/data/bucket"),
        "the build stage creates the writable folders"
    );
    assert!(
        stage.contains(&format!(
            "COPY --from=build --chown={UID}:{UID} /out/var/configs /var/configs"
        )),
        "{stage:#?}"
    );
    assert!(!stage.iter().any(|l| l.starts_with("HEALTHCHECK")));
    for label in ["source", "description"] {
        assert!(
            text.contains(&format!("org.opencontainers.image.{label}=")),
            "label {label}"
        );
    }
}

/// The image tarball's config and its layer's listing (`mode owner/group size ... path`).
fn image_contents() -> (serde_json::Value, Vec<(String, String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(image())
        .arg("-C")
        .arg(dir.path()));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    let m = &manifest[0];
    assert_eq!(m["RepoTags"][0], TAG);
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join(m["Config"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let layers = m["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "one layer");
    let listing = stdout(
        Command::new("tar")
            .args(["--numeric-owner", "-tvzf"])
            .arg(dir.path().join(layers[0].as_str().unwrap())),
    );
    let entries = listing
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[5].to_string(), f[1].to_string(), f[0].to_string())
        })
        .collect();
    (config, entries)
}

#[test]
fn the_assembled_image_carries_the_dockerfiles_final_stage() {
    let stage = final_stage();
    let (config, entries) = image_contents();
    let c = &config["config"];
    assert_eq!(c["User"], instruction(&stage, "USER"));
    assert_eq!(c["WorkingDir"], instruction(&stage, "WORKDIR"));
    assert_eq!(
        c["Entrypoint"],
        serde_json::from_str::<serde_json::Value>(&instruction(&stage, "ENTRYPOINT")).unwrap()
    );
    assert_eq!(c["Env"], serde_json::json!(env(&stage)));
    assert_eq!(c["ExposedPorts"], serde_json::json!({"9003/tcp": {}}));
    assert_eq!(config["os"], "linux");
    assert!(c["Cmd"].is_null(), "no Cmd: {c}");

    let owners: BTreeMap<&str, (&str, &str)> = entries
        .iter()
        .map(|(p, o, m)| (p.as_str(), (o.as_str(), m.as_str())))
        .collect();
    for dir in WRITABLE {
        assert_eq!(
            owners.get(dir),
            Some(&(format!("{UID}/{UID}").as_str(), "drwxr-xr-x")),
            "{dir} owned by the non-root user"
        );
    }
    for (path, owner, _) in &entries {
        if !WRITABLE.contains(&path.as_str()) {
            assert_eq!(
                owner, "0/0",
                "{path} owned by root, not writable by the user"
            );
        }
    }
    assert_eq!(
        owners.get("usr/local/bin/cost-model").map(|o| o.1),
        Some("-rwxr-xr-x")
    );
    assert!(
        owners.contains_key("lib64/ld-linux-x86-64.so.2"),
        "{owners:#?}"
    );
    assert!(owners.contains_key("lib/x86_64-linux-gnu/libc.so.6"));
    assert!(owners.contains_key("etc/passwd"));
}

/// Runs `podman` with the runtime that works here (crun fails: "cgroups in hybrid mode not
/// supported") and the ulimits it needs (CAP_SYS_RESOURCE is not available).
fn podman() -> Command {
    for tool in ["podman", "runc"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success()),
            "Debian's podman and runc are needed for this test; scripts/test installs them \
             (`apt-get install podman runc`)"
        );
    }
    Command::new("podman")
}

fn runc() -> String {
    stdout(Command::new("sh").args(["-c", "command -v runc"]))
}

/// Containers and the image, removed when dropped.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("podman")
                .args(["rm", "-f", "-t", "0", name])
                .output();
        }
        let _ = Command::new("podman").args(["rmi", "-f", TAG]).output();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the test image detached with `flags`, listening on 127.0.0.1:`port`.
fn start(name: &str, port: u16, flags: &[&str]) {
    run(podman()
        .args(["run", "-d", "--name", name, "--runtime", &runc()])
        .args([
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=4096:4096",
        ])
        .args(["--network", "host"])
        .args(flags)
        .arg(TAG)
        .args(["--listen", &format!("127.0.0.1:{port}")]));
}

fn inspect(name: &str, format: &str) -> String {
    stdout(podman().args(["inspect", "-f", format, name]))
}

fn logs(name: &str) -> String {
    let out = Command::new("podman")
        .args(["logs", "--tail", "30", name])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The container's process as the host sees it: its real, effective, saved and fs uids, and
/// the options its root file system is mounted with.
fn process_identity(name: &str) -> (Vec<u32>, String) {
    let pid = inspect(name, "{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .map(|u| u.parse().unwrap())
        .collect();
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root_options = mountinfo
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f[4] == "/")
        .map(|f| f[5].to_string())
        .unwrap();
    (uids, root_options)
}

async fn get(client: &reqwest::Client, port: u16, path: &str) -> Option<(u16, String)> {
    let resp = client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .ok()?;
    Some((resp.status().as_u16(), resp.text().await.ok()?))
}

/// Polls `path` until it answers `want`, for at most `within`; the body.
async fn wait_status(
    client: &reqwest::Client,
    name: &str,
    port: u16,
    path: &str,
    want: u16,
    within: Duration,
) -> String {
    let deadline = Instant::now() + within;
    let mut last = None;
    loop {
        if let Some((status, body)) = get(client, port, path).await {
            if status == want {
                return body;
            }
            last = Some((status, body));
        }
        assert!(
            Instant::now() < deadline,
            "{name}: {path} did not answer {want} within {within:?} (last: {last:?}); log:\n{}",
            logs(name)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn the_image_runs_as_non_root_on_a_read_only_root_with_its_folder_mounted() {
    let image = image();
    let load = Instant::now();
    run(podman().args(["load", "-q", "-i"]).arg(image));
    eprintln!("podman load: {:.1?}", load.elapsed());
    let id = std::process::id();
    let (mounted, unmounted, secret, bare) = (
        format!("cost-model-test-{id}-mounted"),
        format!("cost-model-test-{id}-unmounted"),
        format!("cost-model-test-{id}-secret"),
        format!("cost-model-test-{id}-bare"),
    );
    let _cleanup = Cleanup(vec![
        mounted.clone(),
        unmounted.clone(),
        secret.clone(),
        bare.clone(),
    ]);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // A host folder anyone may write to (as an emptyDir is), mounted where the image writes.
    let host = tempfile::tempdir().unwrap();
    std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let (p_mounted, p_unmounted, p_secret, p_bare) =
        (free_port(), free_port(), free_port(), free_port());
    let user = format!("{UID}:{UID}");
    let volume = format!("{}:{CONFIGS}", host.path().display());
    let started = Instant::now();
    start(
        &mounted,
        p_mounted,
        &["--read-only", "--user", &user, "-v", &volume],
    );
    start(&unmounted, p_unmounted, &["--read-only", "--user", &user]);
    // A Kubecost bucket secret, mounted read-only inside the volume as the chart mounts it: the
    // image sets no ETL_BUCKET_DIR that would refuse it as "exclusive".
    let secret_host = tempfile::tempdir().unwrap();
    std::fs::set_permissions(secret_host.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let secret_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        secret_dir.path().join("object-store.yaml"),
        "type: FILESYSTEM\nconfig:\n  directory: /var/configs/shared-bucket\n",
    )
    .unwrap();
    start(
        &secret,
        p_secret,
        &[
            "--read-only",
            "--user",
            &user,
            "-v",
            &format!("{}:{CONFIGS}", secret_host.path().display()),
            "-v",
            &format!("{}:{CONFIGS}/etl:ro", secret_dir.path().display()),
            "-e",
            "ETL_BUCKET_CONFIG=/var/configs/etl/object-store.yaml",
        ],
    );
    // As `docker run IMAGE` would: the image's own user, a writable container layer.
    start(&bare, p_bare, &[]);

    // Non-root, on a read-only root: as the host sees the processes.
    for name in [&mounted, &unmounted, &secret] {
        assert_eq!(inspect(name, "{{.HostConfig.ReadonlyRootfs}}"), "true");
        let (uids, root_options) = process_identity(name);
        assert_eq!(uids, vec![UID; 4], "{name}: real, effective, saved, fs uid");
        assert!(
            root_options.split(',').any(|o| o == "ro"),
            "{name}: / mounted {root_options}"
        );
    }
    let (uids, root_options) = process_identity(&bare);
    assert_eq!(uids, vec![UID; 4], "bare: the image's USER applies");
    assert!(root_options.split(',').any(|o| o == "rw"), "{root_options}");

    // With its folder mounted: ready, and answers with data it wrote to the mount.
    wait_status(
        &client,
        &mounted,
        p_mounted,
        "/readyz",
        200,
        Duration::from_secs(120),
    )
    .await;
    let ready_after = started.elapsed();
    eprintln!("ready on a read-only root after {ready_after:.1?}");
    let body = wait_status(
        &client,
        &mounted,
        p_mounted,
        "/model/allocation?window=1d&aggregate=namespace",
        200,
        Duration::from_secs(30),
    )
    .await;
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let namespaces = answer["data"][0].as_object().unwrap();
    assert!(namespaces.len() > 1, "{body:.300}");
    let total: f64 = namespaces
        .values()
        .map(|a| a["totalCost"].as_f64().unwrap())
        .sum();
    assert!(total > 0.0, "{body:.300}");
    for written in ["db/etl/etl/v1", "data/bucket/etl/v1/manifests"] {
        let path = host.path().join(written);
        let meta = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; log:\n{}", path.display(), logs(&mounted)));
        assert_eq!(meta.uid(), UID, "{written} written by the non-root user");
    }

    // The secret's bucket: ready, and the backup is where the secret says.
    wait_status(
        &client,
        &secret,
        p_secret,
        "/readyz",
        200,
        Duration::from_secs(120),
    )
    .await;
    let manifests = secret_host.path().join("shared-bucket/etl/v1/manifests");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&manifests).map_or(true, |mut d| d.next().is_none()) {
        assert!(
            Instant::now() < deadline,
            "no backup in {}; log:\n{}",
            manifests.display(),
            logs(&secret)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!secret_host.path().join("data/bucket").exists());

    // Bare: ready too (the folders in the image belong to the user).
    wait_status(
        &client,
        &bare,
        p_bare,
        "/readyz",
        200,
        Duration::from_secs(120),
    )
    .await;

    // Nothing mounted: live, never ready, and saying why. The folder is the user's in the
    // image, so what refuses the write is the read-only root itself.
    wait_status(
        &client,
        &unmounted,
        p_unmounted,
        "/healthz",
        200,
        Duration::from_secs(30),
    )
    .await;
    let reason = wait_status(
        &client,
        &unmounted,
        p_unmounted,
        "/readyz",
        503,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        reason.contains(&format!("--etl-dir {ETL_DIR}"))
            && reason.contains("Read-only file system"),
        "{reason}"
    );
    // Still not ready after longer than the mounted one took to become ready.
    let until = started + ready_after.max(Duration::from_secs(5)) * 2;
    while Instant::now() < until {
        let (status, body) = get(&client, p_unmounted, "/readyz").await.unwrap();
        assert_eq!(status, 503, "ready without a writable folder: {body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        inspect(&unmounted, "{{.State.Running}}"),
        "true",
        "{}",
        logs(&unmounted)
    );
}
