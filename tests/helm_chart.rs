//! The Helm chart (`helm/cost-model`) with real components: helm itself (`scripts/helm` builds it
//! from its Go module) and the real kube-apiserver of `scripts/testenv`.
//!
//! - `helm lint` and `helm template` for the default values, the HA values of the seed's example
//!   (`leaderFollower.enabled=true`, 5 replicas, a bucket secret) and a Kubecost-style values
//!   file; every refusal fails `helm template` with a message that names the value, and
//!   `helm lint` reports it (lint never fails on a template's `fail`: it logs it).
//! - Every object rendered for those values is created with server-side dry-run and strict field
//!   validation, so the apiserver checks it against the real schemas (an unknown or misplaced
//!   field is an error, not silently dropped).
//! - The chart's ServiceAccount, Role and RoleBinding are created for real in a fresh namespace;
//!   the real binary, with the chart's environment and a token of that ServiceAccount from the
//!   TokenRequest API, becomes leader and releases the Lease on SIGTERM; with any one of the
//!   Role's verbs taken away it never settles as leader and reports `electionError`.
//!
//! The ServiceMonitor is a CRD the test apiserver lacks: its shape is checked from the template.

mod kube_support;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kube_support::{Status, Testenv, binary, repo, signal, tail, testenv, wait_for};
use serde::Deserialize;
use serde_json::{Value, json};

/// The release every test renders.
const RELEASE: &str = "cm";
/// `<release>-cost-model`.
const FULLNAME: &str = "cm-cost-model";
/// The seed's example of HA values.
const HA: &[&str] = &[
    "kubecostDeployment.leaderFollower.enabled=true",
    "kubecostDeployment.replicas=5",
    "kubecostModel.etlBucketConfigSecret=kubecost-object-store",
];

// ---------------------------------------------------------------------------------------------
// helm

/// The helm binary, built by `scripts/helm` if missing (once per test process).
fn helm_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let started = Instant::now();
        let out = Command::new(repo().join("scripts/helm"))
            .arg("path")
            .current_dir(repo())
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/helm path");
        assert!(out.status.success(), "scripts/helm path failed");
        let path = PathBuf::from(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .expect("scripts/helm path printed a path")
                .trim(),
        );
        assert!(path.is_file(), "scripts/helm printed {path:?}");
        eprintln!("helm ready in {:?}: {}", started.elapsed(), path.display());
        path
    })
}

/// A helm home of the test process's own, so helm never reads or writes the user's config,
/// cache or repositories.
fn helm_home() -> &'static Path {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    HOME.get_or_init(|| tempfile::tempdir().expect("tempdir"))
        .path()
}

fn chart() -> PathBuf {
    repo().join("helm/cost-model")
}

/// Runs helm with `args`.
fn helm(args: &[String]) -> Output {
    let home = helm_home();
    Command::new(helm_bin())
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .current_dir(repo())
        .stdin(Stdio::null())
        .output()
        .expect("run helm")
}

/// `--set` arguments, one per `key=value`.
fn sets(values: &[&str]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| ["--set".to_string(), v.to_string()])
        .collect()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `helm template` into namespace `ns`: the rendered objects, or helm's error output.
fn try_render(ns: &str, extra: &[String]) -> Result<Vec<Value>, String> {
    let mut args: Vec<String> = vec![
        "template".into(),
        RELEASE.into(),
        chart().display().to_string(),
        "--namespace".into(),
        ns.into(),
    ];
    args.extend_from_slice(extra);
    let out = helm(&args);
    if !out.status.success() {
        return Err(text(&out));
    }
    let yaml = String::from_utf8(out.stdout).expect("UTF-8 manifests");
    let mut objects = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&yaml) {
        let v = Value::deserialize(doc).unwrap_or_else(|e| panic!("rendered YAML: {e}\n{yaml}"));
        if !v.is_null() {
            objects.push(v);
        }
    }
    Ok(objects)
}

fn render(ns: &str, values: &[&str]) -> Vec<Value> {
    try_render(ns, &sets(values)).unwrap_or_else(|e| panic!("helm template {values:?}: {e}"))
}

/// `helm lint --strict` with these values.
fn lint(extra: &[String]) -> Output {
    let mut args: Vec<String> = vec![
        "lint".into(),
        "--strict".into(),
        chart().display().to_string(),
    ];
    args.extend_from_slice(extra);
    helm(&args)
}

// ---------------------------------------------------------------------------------------------
// Rendered objects

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = objects
        .iter()
        .map(|o| format!("{}/{}", o["kind"].as_str().unwrap_or("?"), name(o)))
        .collect();
    k.sort();
    k
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("?")
}

/// The one object of `kind` (named `name` if given).
fn one<'a>(objects: &'a [Value], kind: &str, with_name: Option<&str>) -> &'a Value {
    let found: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == kind && with_name.is_none_or(|n| name(o) == n))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {kind} {with_name:?} in {:?}",
        kinds(objects)
    );
    found[0]
}

fn has_kind(objects: &[Value], kind: &str) -> bool {
    objects.iter().any(|o| o["kind"] == kind)
}

/// The StatefulSet or Deployment.
fn workload(objects: &[Value]) -> &Value {
    let w: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "StatefulSet" || o["kind"] == "Deployment")
        .collect();
    assert_eq!(w.len(), 1, "one workload in {:?}", kinds(objects));
    w[0]
}

fn pod_spec(objects: &[Value]) -> &Value {
    &workload(objects)["spec"]["template"]["spec"]
}

fn container(objects: &[Value]) -> &Value {
    let c = pod_spec(objects)["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(c.len(), 1, "one container");
    &c[0]
}

/// The container's environment: name → the `value` string, or the whole `valueFrom`.
fn pod_env(objects: &[Value]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for e in container(objects)["env"].as_array().expect("env") {
        let name = e["name"].as_str().expect("env name").to_string();
        let v = if e.get("valueFrom").is_some() {
            e["valueFrom"].clone()
        } else {
            e["value"].clone()
        };
        assert!(out.insert(name.clone(), v).is_none(), "{name} is set twice");
    }
    out
}

fn env_str(env: &BTreeMap<String, Value>, name: &str) -> Option<String> {
    env.get(name).and_then(|v| v.as_str()).map(str::to_string)
}

/// A duration as the replica reads it (`20s`, `2m`), in whole seconds.
fn seconds(d: &str) -> u64 {
    humantime::parse_duration(d)
        .unwrap_or_else(|e| panic!("not a duration: {d}: {e}"))
        .as_secs()
}

fn volume<'a>(objects: &'a [Value], name: &str) -> Option<&'a Value> {
    pod_spec(objects)["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)
}

fn mount<'a>(objects: &'a [Value], name: &str) -> Option<&'a Value> {
    container(objects)["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)
}

/// What every rendering must hold: the probes, the hardened security contexts, the downward
/// API, the file store on its volume and a grace period longer than the shutdown timeout.
fn assert_common(objects: &[Value]) {
    let c = container(objects);
    assert_eq!(c["ports"][0]["containerPort"], 9003);
    assert_eq!(c["ports"][0]["name"], "tcp-model");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "tcp-model");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "tcp-model");

    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    let psc = &pod_spec(objects)["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert!(
        psc["fsGroup"].as_u64().is_some(),
        "an fsGroup makes the volumes writable"
    );

    let env = pod_env(objects);
    assert_eq!(env["POD_NAME"]["fieldRef"]["fieldPath"], "metadata.name");
    assert_eq!(
        env["KUBECOST_NAMESPACE"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    let etl_dir = env_str(&env, "ETL_DIR").expect("ETL_DIR");
    let store = mount(objects, "etl-store").expect("the file store is mounted");
    let at = store["mountPath"].as_str().expect("mountPath");
    assert!(
        etl_dir.starts_with(&format!("{at}/")),
        "ETL_DIR {etl_dir} is on the volume at {at}"
    );
    assert!(store.get("readOnly").is_none_or(|r| r == false));

    let shutdown = seconds(&env_str(&env, "SHUTDOWN_TIMEOUT").expect("SHUTDOWN_TIMEOUT"));
    let grace = pod_spec(objects)["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace > shutdown,
        "grace period {grace}s must exceed SHUTDOWN_TIMEOUT {shutdown}s"
    );
    assert!(
        !env.contains_key("PROMETHEUS_SERVER_ENDPOINT"),
        "the replica refuses the Prometheus source: not set by default"
    );

    // The Service on 9003 selects the pods.
    let svc = one(objects, "Service", Some(FULLNAME));
    assert_eq!(svc["spec"]["ports"][0]["port"], 9003);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "tcp-model");
    let labels = &workload(objects)["spec"]["template"]["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&labels[k], v, "the Service selects the pods by {k}");
    }
    assert_eq!(
        workload(objects)["spec"]["selector"]["matchLabels"],
        svc["spec"]["selector"]
    );
}

// ---------------------------------------------------------------------------------------------
// Rendering: helm lint and helm template

#[test]
fn lint_passes_for_default_ha_and_kubecost_values() {
    let values = kubecost_values_file();
    for (what, args) in [
        ("default values", vec![]),
        ("the seed's HA example", sets(HA)),
        (
            "HA without persistence",
            sets(&[HA, &["persistentVolume.enabled=false"]].concat()),
        ),
        (
            "HA with a ServiceMonitor",
            sets(&[HA, &["serviceMonitor.enabled=true"]].concat()),
        ),
        (
            "a Kubecost values file",
            vec!["-f".into(), values.path().display().to_string()],
        ),
    ] {
        let out = lint(&args);
        assert!(
            out.status.success(),
            "helm lint for {what}:\n{}",
            text(&out)
        );
        assert!(text(&out).contains("0 chart(s) failed"), "{}", text(&out));
        // Lint logs a refusal instead of failing on it.
        assert!(!text(&out).contains("Fail:"), "{what}: {}", text(&out));
    }
}

#[test]
fn default_values_render_one_standalone_replica_with_its_own_volume() {
    let objects = render("kubecost", &[]);
    assert_eq!(
        kinds(&objects),
        [
            "Service/cm-cost-model",
            "Service/cm-cost-model-headless",
            "ServiceAccount/cm-cost-model",
            "StatefulSet/cm-cost-model",
        ]
    );
    assert_common(&objects);
    let sts = workload(&objects);
    assert_eq!(sts["spec"]["replicas"], 1);
    let env = pod_env(&objects);
    assert!(!env.contains_key("LEADER_FOLLOWER_ENABLED"), "{env:?}");
    assert!(!env.contains_key("ETL_BUCKET_CONFIG"), "{env:?}");
    // Standalone without a bucket secret: a local bucket folder on the same volume.
    let bucket = env_str(&env, "ETL_BUCKET_DIR").expect("ETL_BUCKET_DIR");
    assert!(bucket.starts_with("/var/configs/db/"), "{bucket}");
    assert_eq!(
        env_str(&env, "ETL_DAILY_STORE_DURATION_DAYS").as_deref(),
        Some("91")
    );
    assert_eq!(
        env_str(&env, "ETL_HOURLY_STORE_DURATION_HOURS").as_deref(),
        Some("49")
    );
    // A standalone replica does not talk to the Kubernetes API.
    assert_eq!(pod_spec(&objects)["automountServiceAccountToken"], false);
    assert_eq!(
        pod_spec(&objects)["serviceAccountName"],
        "cm-cost-model",
        "the chart's ServiceAccount"
    );
    // Its file store is a claim of its own.
    let claims = sts["spec"]["volumeClaimTemplates"]
        .as_array()
        .expect("volumeClaimTemplates");
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0]["metadata"]["name"], "etl-store");
    assert_eq!(claims[0]["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    assert!(
        volume(&objects, "etl-store").is_none(),
        "the claim template, not a pod volume"
    );
    // One replica: no anti-affinity, no PDB, no RBAC.
    assert!(pod_spec(&objects).get("affinity").is_none());
}

#[test]
fn ha_values_render_the_seeds_example() {
    let objects = render("kubecost", HA);
    assert_eq!(
        kinds(&objects),
        [
            "PodDisruptionBudget/cm-cost-model",
            "Role/cm-cost-model-leader-election",
            "RoleBinding/cm-cost-model-leader-election",
            "Service/cm-cost-model",
            "Service/cm-cost-model-headless",
            "ServiceAccount/cm-cost-model",
            "StatefulSet/cm-cost-model",
        ]
    );
    assert_common(&objects);
    let sts = workload(&objects);
    assert_eq!(sts["spec"]["replicas"], 5);
    assert_eq!(sts["spec"]["serviceName"], "cm-cost-model-headless");
    assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
    // A claim per replica (Kubecost's shared ReadWriteOnce claim failed with Multi-Attach).
    let claims = sts["spec"]["volumeClaimTemplates"]
        .as_array()
        .expect("volumeClaimTemplates");
    assert_eq!(claims[0]["metadata"]["name"], "etl-store");

    let env = pod_env(&objects);
    assert_eq!(
        env_str(&env, "LEADER_FOLLOWER_ENABLED").as_deref(),
        Some("true")
    );
    assert_eq!(
        env_str(&env, "LEASE_NAME").as_deref(),
        Some("cm-cost-model-leader")
    );
    assert_eq!(
        env_str(&env, "ETL_BUCKET_CONFIG").as_deref(),
        Some("/var/configs/etl/object-store.yaml")
    );
    assert!(
        !env.contains_key("ETL_BUCKET_DIR"),
        "the bucket secret, not a local folder"
    );
    // The secret, read-only at /var/configs/etl, only its key object-store.yaml.
    let secret = volume(&objects, "etl-bucket-config").expect("secret volume");
    assert_eq!(secret["secret"]["secretName"], "kubecost-object-store");
    assert_eq!(
        secret["secret"]["items"],
        json!([{"key": "object-store.yaml", "path": "object-store.yaml"}])
    );
    let m = mount(&objects, "etl-bucket-config").expect("secret mount");
    assert_eq!(m["mountPath"], "/var/configs/etl");
    assert_eq!(m["readOnly"], true);
    assert_eq!(pod_spec(&objects)["automountServiceAccountToken"], true);

    // Spread over nodes, preferred by default.
    let anti = &pod_spec(&objects)["affinity"]["podAntiAffinity"];
    let term = &anti["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(term["weight"], 100);
    assert_eq!(
        term["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert_eq!(
        term["podAffinityTerm"]["labelSelector"]["matchLabels"],
        sts["spec"]["selector"]["matchLabels"]
    );
    assert!(
        anti.get("requiredDuringSchedulingIgnoredDuringExecution")
            .is_none()
    );

    // PDB: one voluntary disruption at a time.
    let pdb = one(&objects, "PodDisruptionBudget", None);
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        sts["spec"]["selector"]["matchLabels"]
    );

    // Least privilege: get, create and update on leases in the release namespace, nothing else.
    let role = one(&objects, "Role", None);
    assert_eq!(role["metadata"]["namespace"], "kubecost");
    let mut verbs: Vec<String> = Vec::new();
    for rule in role["rules"].as_array().expect("rules") {
        assert_eq!(rule["apiGroups"], json!(["coordination.k8s.io"]));
        assert_eq!(rule["resources"], json!(["leases"]));
        if let Some(names) = rule.get("resourceNames") {
            assert_eq!(names, &json!(["cm-cost-model-leader"]));
        }
        verbs.extend(
            rule["verbs"]
                .as_array()
                .expect("verbs")
                .iter()
                .map(|v| v.as_str().expect("verb").to_string()),
        );
    }
    verbs.sort();
    assert_eq!(verbs, ["create", "get", "update"]);
    let binding = one(&objects, "RoleBinding", None);
    assert_eq!(binding["roleRef"]["name"], name(role));
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "cm-cost-model", "namespace": "kubecost"}])
    );
    assert!(!has_kind(&objects, "ClusterRole"));
    assert!(!has_kind(&objects, "ServiceMonitor"), "off by default");
}

#[test]
fn without_persistence_each_pod_has_an_emptydir() {
    // HA: a Deployment whose new pods join as followers before old ones leave.
    let objects = render(
        "kubecost",
        &[HA, &["persistentVolume.enabled=false"]].concat(),
    );
    assert_eq!(
        kinds(&objects),
        [
            "Deployment/cm-cost-model",
            "PodDisruptionBudget/cm-cost-model",
            "Role/cm-cost-model-leader-election",
            "RoleBinding/cm-cost-model-leader-election",
            "Service/cm-cost-model",
            "ServiceAccount/cm-cost-model",
        ]
    );
    assert_common(&objects);
    let d = workload(&objects);
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    let store = volume(&objects, "etl-store").expect("etl-store volume");
    assert!(store.get("emptyDir").is_some(), "{store}");

    // Standalone: the old pod goes before the new one starts (it always writes).
    for values in [
        &["persistentVolume.enabled=false"][..],
        &["kubecostModel.etlFileStoreEnabled=false"][..],
    ] {
        let objects = render("kubecost", values);
        let d = workload(&objects);
        assert_eq!(d["kind"], "Deployment", "{values:?}");
        assert_eq!(d["spec"]["strategy"]["type"], "Recreate", "{values:?}");
        assert!(volume(&objects, "etl-store").expect("volume")["emptyDir"].is_object());
        assert_common(&objects);
    }

    // Standalone with a bucket secret: backs up there, not to a folder.
    let objects = render(
        "kubecost",
        &["kubecostModel.etlBucketConfigSecret=my-bucket"],
    );
    let env = pod_env(&objects);
    assert!(env.contains_key("ETL_BUCKET_CONFIG"));
    assert!(!env.contains_key("ETL_BUCKET_DIR"));
    assert!(!env.contains_key("LEADER_FOLLOWER_ENABLED"));

    // One standalone replica on an existing claim.
    let objects = render("kubecost", &["persistentVolume.existingClaim=old-pvc"]);
    let d = workload(&objects);
    assert_eq!(d["kind"], "Deployment");
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    assert_eq!(
        volume(&objects, "etl-store").expect("volume")["persistentVolumeClaim"]["claimName"],
        "old-pvc"
    );
}

/// Every refusal fails `helm template` (the engine `helm install` runs) with a message naming the
/// value. `helm lint` never fails on a template's `fail` (its lint mode logs it as
/// "[INFO] Fail: ...", helm's pkg/engine), so for lint the test asserts that it reports it.
#[test]
fn refusals_name_the_value() {
    let lf = "kubecostDeployment.leaderFollower.enabled=true";
    let secret = "kubecostModel.etlBucketConfigSecret=kubecost-object-store";
    let cases: &[(&[&str], &[&str])] = &[
        (
            &[lf, secret],
            &[
                "kubecostDeployment.leaderFollower.enabled=true",
                "kubecostDeployment.replicas > 1 (it is 1)",
            ],
        ),
        (
            &[lf, secret, "kubecostDeployment.replicas=0"],
            &["kubecostDeployment.replicas > 1 (it is 0)"],
        ),
        (
            &[lf, "kubecostDeployment.replicas=3"],
            &[
                "kubecostDeployment.leaderFollower.enabled=true",
                "kubecostModel.etlBucketConfigSecret",
                "object-store.yaml",
            ],
        ),
        (
            &[
                lf,
                secret,
                "kubecostDeployment.replicas=3",
                "kubecostModel.etlFileStoreEnabled=false",
            ],
            &["kubecostModel.etlFileStoreEnabled=true"],
        ),
        (
            &[
                lf,
                secret,
                "kubecostDeployment.replicas=3",
                "persistentVolume.existingClaim=shared",
            ],
            &["persistentVolume.existingClaim=shared", "Multi-Attach"],
        ),
        (
            &["kubecostDeployment.replicas=3"],
            &[
                "kubecostDeployment.replicas=3",
                "kubecostDeployment.leaderFollower.enabled=true",
            ],
        ),
        (
            &["kubecostModel.utcOffset=+02:00"],
            &["kubecostModel.utcOffset=\"+02:00\"", "UTC"],
        ),
        (
            &["kubecostModel.utcOffset=-05:00"],
            &["kubecostModel.utcOffset=\"-05:00\""],
        ),
        (&["kubecostModel.etl=false"], &["kubecostModel.etl=false"]),
        (
            &["kubecostModel.etlDailyStoreDurationDays=0"],
            &["kubecostModel.etlDailyStoreDurationDays=0"],
        ),
        (
            &["kubecostModel.etlHourlyStoreDurationHours=9000"],
            &["kubecostModel.etlHourlyStoreDurationHours=9000"],
        ),
        (
            &["global.prometheus.enabled=false"],
            &["global.prometheus.enabled=false", "global.prometheus.fqdn"],
        ),
        (
            &["terminationGracePeriodSeconds=20"],
            &[
                "terminationGracePeriodSeconds=20",
                "shutdownTimeoutSeconds=20",
            ],
        ),
        (
            &["podAntiAffinity=sometimes"],
            &["podAntiAffinity=\"sometimes\""],
        ),
    ];
    for (values, says) in cases {
        let rendered = try_render("kubecost", &sets(values));
        let Err(err) = rendered else {
            panic!("helm template accepted {values:?}")
        };
        assert!(
            err.contains("Error: execution error at (cost-model/templates/validate.yaml"),
            "{err}"
        );
        let linted = text(&lint(&sets(values)));
        let reported = linted
            .lines()
            .find(|l| l.contains("[INFO] Fail: "))
            .unwrap_or_else(|| panic!("helm lint does not report {values:?}: {linted}"));
        for s in *says {
            for (what, out) in [("helm template", err.as_str()), ("helm lint", reported)] {
                assert!(
                    out.contains(s),
                    "{what} {values:?} should name {s:?}: {out}"
                );
            }
        }
    }
}

#[test]
fn utc_is_accepted_as_kubecost_spells_it() {
    for offset in ["+00:00", "Z"] {
        let objects = try_render(
            "kubecost",
            &[
                "--set-string".into(),
                format!("kubecostModel.utcOffset={offset}"),
            ],
        )
        .unwrap_or_else(|e| panic!("utcOffset {offset}: {e}"));
        assert!(!pod_env(&objects).contains_key("UTC_OFFSET"));
    }
}

#[test]
fn prometheus_credentials_come_from_kubecosts_secrets() {
    let env = pod_env(&render("kubecost", &[]));
    assert!(!env.contains_key("DB_BASIC_AUTH_USERNAME") && !env.contains_key("DB_BEARER_TOKEN"));
    let env = pod_env(&render(
        "kubecost",
        &[
            "global.prometheus.fqdn=https://prometheus.example:9090",
            "global.prometheus.queryServiceBasicAuthSecretName=prom-basic",
        ],
    ));
    for (var, key) in [
        ("DB_BASIC_AUTH_USERNAME", "USERNAME"),
        ("DB_BASIC_AUTH_PW", "PASSWORD"),
    ] {
        assert_eq!(env[var]["secretKeyRef"]["name"], "prom-basic", "{var}");
        assert_eq!(env[var]["secretKeyRef"]["key"], key, "{var}");
    }
    let env = pod_env(&render(
        "kubecost",
        &["global.prometheus.queryServiceBearerTokenSecretName=prom-token"],
    ));
    assert_eq!(env["DB_BEARER_TOKEN"]["secretKeyRef"]["name"], "prom-token");
    assert_eq!(env["DB_BEARER_TOKEN"]["secretKeyRef"]["key"], "TOKEN");
}

#[test]
fn prometheus_endpoint_is_passed_as_kubecost_passes_it() {
    // Default: Kubecost's bundled Prometheus "enabled", no fqdn: nothing set.
    assert!(!pod_env(&render("kubecost", &[])).contains_key("PROMETHEUS_SERVER_ENDPOINT"));
    // fqdn set explicitly, or with the bundled Prometheus off: passed.
    for values in [
        &["global.prometheus.fqdn=http://prometheus.monitoring.svc:9090"][..],
        &[
            "global.prometheus.enabled=false",
            "global.prometheus.fqdn=http://prometheus.monitoring.svc:9090",
        ][..],
    ] {
        assert_eq!(
            env_str(
                &pod_env(&render("kubecost", values)),
                "PROMETHEUS_SERVER_ENDPOINT"
            )
            .as_deref(),
            Some("http://prometheus.monitoring.svc:9090"),
            "{values:?}"
        );
    }
}

#[test]
fn anti_affinity_is_preferred_required_or_yours() {
    let hard = render("kubecost", &[HA, &["podAntiAffinity=hard"]].concat());
    let term = &pod_spec(&hard)["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        [0];
    assert_eq!(term["topologyKey"], "kubernetes.io/hostname");

    let none = render("kubecost", &[HA, &["podAntiAffinity=none"]].concat());
    assert!(pod_spec(&none).get("affinity").is_none());

    let zone = render(
        "kubecost",
        &[
            HA,
            &["podAntiAffinityTopologyKey=topology.kubernetes.io/zone"],
        ]
        .concat(),
    );
    assert_eq!(
        pod_spec(&zone)["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            [0]["podAffinityTerm"]["topologyKey"],
        "topology.kubernetes.io/zone"
    );

    // An affinity of the user's own: kept, and its podAntiAffinity replaces the chart's.
    let own = render(
        "kubecost",
        &[
            HA,
            &[
                "affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey=rack",
                "affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector.matchLabels.app=x",
                "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=pool",
                "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
            ],
        ]
        .concat(),
    );
    let aff = &pod_spec(&own)["affinity"];
    assert_eq!(
        aff["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"],
        "rack"
    );
    assert!(
        aff["podAntiAffinity"]
            .get("preferredDuringSchedulingIgnoredDuringExecution")
            .is_none()
    );
    assert!(aff["nodeAffinity"].is_object());

    // The user's node affinity alone: kept, with the chart's anti-affinity added.
    let node_only = render(
        "kubecost",
        &[
            HA,
            &[
                "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=pool",
                "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
            ],
        ]
        .concat(),
    );
    let aff = &pod_spec(&node_only)["affinity"];
    assert!(aff["nodeAffinity"].is_object());
    assert!(aff["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"].is_array());
}

/// A Kubecost user's values file (Kubecost's spelling, with keys this chart does not know) renders
/// and its settings arrive.
#[test]
fn a_kubecost_values_file_keeps_working() {
    let file = kubecost_values_file();
    let objects = try_render(
        "kubecost",
        &["-f".into(), file.path().display().to_string()],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_common(&objects);
    let env = pod_env(&objects);
    assert_eq!(
        env_str(&env, "ETL_DAILY_STORE_DURATION_DAYS").as_deref(),
        Some("30")
    );
    assert_eq!(
        env_str(&env, "ETL_HOURLY_STORE_DURATION_HOURS").as_deref(),
        Some("72")
    );
    assert_eq!(
        env_str(&env, "ETL_RESOLUTION_SECONDS").as_deref(),
        Some("60")
    );
    assert_eq!(env_str(&env, "CLUSTER_ID").as_deref(), Some("prod-eu"));
    assert_eq!(env_str(&env, "LOG_FORMAT").as_deref(), Some("json"));
    assert_eq!(
        env_str(&env, "LEADER_FOLLOWER_ENABLED").as_deref(),
        Some("true")
    );
    let sts = workload(&objects);
    assert_eq!(sts["spec"]["replicas"], 3);
    let claim = &sts["spec"]["volumeClaimTemplates"][0]["spec"];
    assert_eq!(claim["resources"]["requests"]["storage"], "32Gi");
    assert_eq!(claim["storageClassName"], "gp3");
    assert_eq!(pod_spec(&objects)["securityContext"]["runAsUser"], 1001);
    assert_eq!(pod_spec(&objects)["nodeSelector"]["pool"], "system");
    assert_eq!(pod_spec(&objects)["tolerations"][0]["key"], "dedicated");
    assert_eq!(
        container(&objects)["resources"]["requests"]["memory"],
        "512Mi"
    );
    // Kubecost's image values name Kubecost's image: ignored.
    assert_eq!(container(&objects)["image"], "cost-model:0.1.0");
}

fn kubecost_values_file() -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("tempfile");
    std::fs::write(
        file.path(),
        r#"# As a Kubecost v1 user's values file might read.
global:
  prometheus:
    enabled: true
  grafana:
    enabled: false
  securityContext:
    runAsNonRoot: true
    seccompProfile:
      type: RuntimeDefault
    fsGroup: 1001
    runAsGroup: 1001
    runAsUser: 1001
    fsGroupChangePolicy: OnRootMismatch
kubecostToken: "aGVsbUBrdWJlY29zdC5jb20=xm343yadf98"
kubecostFrontend:
  enabled: true
kubecostDeployment:
  replicas: 3
  leaderFollower:
    enabled: true
  statefulSet:
    enabled: true
kubecostModel:
  image: "gcr.io/kubecost1/cost-model"
  imagePullPolicy: IfNotPresent
  warmCache: false
  etl: true
  etlFileStoreEnabled: true
  etlDailyStoreDurationDays: 30
  etlHourlyStoreDurationHours: 72
  etlResolutionSeconds: 60
  etlBucketConfigSecret: kubecost-object-store
  utcOffset: "+00:00"
  maxQueryConcurrency: 5
  resources:
    requests:
      cpu: "200m"
      memory: "512Mi"
  extraEnv:
    - name: LOG_FORMAT
      value: json
persistentVolume:
  size: 32Gi
  dbSize: 32.0Gi
  enabled: true
  storageClass: gp3
prometheus:
  server:
    global:
      external_labels:
        cluster_id: prod-eu
nodeSelector:
  pool: system
tolerations:
  - key: dedicated
    operator: Equal
    value: kubecost
    effect: NoSchedule
"#,
    )
    .expect("write values");
    file
}

#[test]
fn service_monitor_is_off_by_default_and_scrapes_metrics() {
    assert!(!has_kind(&render("kubecost", HA), "ServiceMonitor"));
    let objects = render(
        "kubecost",
        &[
            HA,
            &[
                "serviceMonitor.enabled=true",
                "serviceMonitor.interval=30s",
                "serviceMonitor.additionalLabels.release=prom",
            ],
        ]
        .concat(),
    );
    let sm = one(&objects, "ServiceMonitor", None);
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["namespace"], "kubecost");
    assert_eq!(sm["metadata"]["labels"]["release"], "prom");
    assert_eq!(
        sm["spec"]["namespaceSelector"]["matchNames"],
        json!(["kubecost"])
    );
    let ep = &sm["spec"]["endpoints"][0];
    assert_eq!(ep["port"], "tcp-model");
    assert_eq!(ep["path"], "/metrics");
    assert_eq!(ep["interval"], "30s");
    // It selects the Service (whose port it names), not the headless one (no double scrape).
    let selects = |svc: &Value| {
        sm["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("matchLabels")
            .iter()
            .all(|(k, v)| &svc["metadata"]["labels"][k] == v)
    };
    let svc = one(&objects, "Service", Some(FULLNAME));
    assert!(selects(svc), "selects {FULLNAME}");
    assert!(
        svc["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| p["name"] == "tcp-model")
    );
    let headless = one(&objects, "Service", Some("cm-cost-model-headless"));
    assert!(!selects(headless), "does not select the headless Service");
}

/// NOTES.txt (rendered by a client-side dry-run install, which asks the apiserver its version).
#[test]
fn notes_say_how_to_reach_the_status_page_and_api() {
    let cp = testenv();
    let mut args: Vec<String> = [
        "install",
        RELEASE,
        &chart().display().to_string(),
        "--namespace",
        "kubecost",
        "--dry-run=client",
        "--kubeconfig",
        &cp.admin.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    args.extend(sets(HA));
    let out = helm(&args);
    assert!(out.status.success(), "{}", text(&out));
    let all = String::from_utf8_lossy(&out.stdout).to_string();
    let notes = &all[all.find("NOTES:").expect("NOTES")..];
    for s in [
        "kubectl -n kubecost port-forward svc/cm-cost-model 9003:9003",
        "http://localhost:9003/",
        "/model/allocation?window=1d&aggregate=namespace",
        "/model/ha/status",
        "http://cm-cost-model.kubecost.svc:9003/model/",
        "get lease cm-cost-model-leader",
        "5 replicas",
    ] {
        assert!(notes.contains(s), "NOTES should say {s:?}:\n{notes}");
    }
}

// ---------------------------------------------------------------------------------------------
// The apiserver: admin client, discovery, namespaces

/// The admin identity (`system:masters`) of the test control plane.
#[derive(Clone)]
struct Admin {
    http: reqwest::Client,
    server: String,
    token: String,
    ca: PathBuf,
}

impl Admin {
    fn new(env: &Testenv) -> Self {
        let text = std::fs::read_to_string(&env.admin).expect("admin kubeconfig");
        let kc: Value = serde_yaml_ng::from_str(&text).expect("kubeconfig YAML");
        let ca = env.dir.join("pki/ca.crt");
        let pem = std::fs::read(&ca).expect("pki/ca.crt");
        Self {
            http: reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA"))
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client"),
            server: kc["clusters"][0]["cluster"]["server"]
                .as_str()
                .expect("server")
                .to_string(),
            token: kc["users"][0]["user"]["token"]
                .as_str()
                .expect("token")
                .to_string(),
            ca,
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.server))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// A namespace of its own for one test (created for real; never deleted: no controller
    /// runs to finish a deletion, and `scripts/testenv down` wipes etcd).
    async fn fresh_namespace(&self, what: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let ns = format!(
            "helm-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let (code, body) = self
            .post(
                "/api/v1/namespaces",
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
            .await;
        assert_eq!(code, 201, "create namespace {ns}: {body}");
        ns
    }

    /// The collection path of an object, found through API discovery (so an object kind the
    /// chart adds later is checked too, and an unknown kind fails the test).
    async fn collection(&self, obj: &Value) -> String {
        let api_version = obj["apiVersion"].as_str().expect("apiVersion");
        let kind = obj["kind"].as_str().expect("kind");
        let base = if api_version.contains('/') {
            format!("/apis/{api_version}")
        } else {
            format!("/api/{api_version}")
        };
        let (code, list) = self.get(&base).await;
        assert_eq!(code, 200, "discovery of {api_version}: {list}");
        let resource = list["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["kind"] == kind && !r["name"].as_str().unwrap_or("/").contains('/'))
            .unwrap_or_else(|| panic!("the apiserver serves no {kind} in {api_version}"));
        let plural = resource["name"].as_str().expect("name");
        if resource["namespaced"] == true {
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or_else(|| panic!("{kind} {} has no namespace", name(obj)));
            format!("{base}/namespaces/{ns}/{plural}")
        } else {
            format!("{base}/{plural}")
        }
    }

    /// Creates an object; `dry_run` only validates it (admission, schemas, strict fields).
    async fn create(&self, obj: &Value, dry_run: bool) -> (u16, Value) {
        let mut path = self.collection(obj).await;
        path.push_str("?fieldValidation=Strict&fieldManager=helm-chart-test");
        if dry_run {
            path.push_str("&dryRun=All");
        }
        self.post(&path, obj).await
    }

    async fn lease(&self, ns: &str, name: &str) -> Option<Value> {
        let (code, body) = self
            .get(&format!(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}"
            ))
            .await;
        match code {
            404 => None,
            200 => Some(body),
            _ => panic!("GET lease {ns}/{name}: {code} {body}"),
        }
    }
}

/// Every object rendered for default, HA and the other shapes the chart renders is accepted by
/// the real apiserver, with strict field validation (server-side dry-run: nothing is created).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_accepts_every_rendered_object() {
    let cp = testenv();
    let admin = Admin::new(&cp);
    let ns = admin.fresh_namespace("dryrun").await;
    let values_file = kubecost_values_file();
    let shapes: Vec<(&str, Vec<String>)> = vec![
        ("default values", vec![]),
        ("the seed's HA example", sets(HA)),
        (
            "HA without persistence",
            sets(
                &[
                    HA,
                    &["persistentVolume.enabled=false", "podAntiAffinity=hard"],
                ]
                .concat(),
            ),
        ),
        (
            "standalone emptyDir with a bucket secret",
            sets(&[
                "persistentVolume.enabled=false",
                "kubecostModel.etlBucketConfigSecret=b",
                "emptyDir.sizeLimit=2Gi",
            ]),
        ),
        (
            "standalone on an existing claim",
            sets(&["persistentVolume.existingClaim=old"]),
        ),
        (
            "a Kubecost values file",
            vec!["-f".into(), values_file.path().display().to_string()],
        ),
    ];
    let mut checked = 0;
    for (what, args) in &shapes {
        let objects = try_render(&ns, args).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(!objects.is_empty());
        for obj in &objects {
            let (code, body) = admin.create(obj, true).await;
            assert_eq!(
                code,
                201,
                "{what}: the apiserver refused {} {}: {body}\n{}",
                obj["kind"],
                name(obj),
                serde_yaml_ng::to_string(obj).unwrap_or_default()
            );
            assert!(
                body["metadata"]["uid"].is_string(),
                "{what}: {} {}",
                obj["kind"],
                name(obj)
            );
            checked += 1;
        }
    }
    eprintln!("{checked} objects validated by the apiserver in {ns}");

    // The check can fail: a misspelt field in a value the chart passes through is refused.
    let objects = render(
        &ns,
        &["global.containerSecurityContext.readOnlyRootFileSystem=true"],
    );
    let (code, body) = admin.create(workload(&objects), true).await;
    assert_eq!(code, 400, "strict field validation: {body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("readOnlyRootFileSystem")),
        "{body}"
    );
    // A dry run creates nothing.
    let (code, list) = admin
        .get(&format!("/apis/apps/v1/namespaces/{ns}/statefulsets"))
        .await;
    assert_eq!(code, 200);
    assert_eq!(list["items"], json!([]), "dry-run created nothing");
}

// ---------------------------------------------------------------------------------------------
// The chart's RBAC with the real binary

/// A replica of the real binary run as the chart's pod would run it: the chart's environment
/// (the downward API's values filled in), the ServiceAccount's token, short election timings.
struct ChartReplica {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    identity: String,
    http: reqwest::Client,
}

impl ChartReplica {
    async fn start(objects: &[Value], ns: &str, kubeconfig: &Path) -> Self {
        let mut r = Self {
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            port: 0,
            identity: format!("{}-0", name(workload(objects))),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("HTTP client"),
        };
        for _ in 0..3 {
            if r.launch(objects, ns, kubeconfig).await {
                return r;
            }
        }
        panic!("no free port after 3 tries");
    }

    /// Starts the process and waits until it serves; false if its port was taken meanwhile.
    async fn launch(&mut self, objects: &[Value], ns: &str, kubeconfig: &Path) -> bool {
        self.port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = std::fs::File::create(self.dir.path().join("replica.log")).expect("log");
        let mut cmd = Command::new(binary());
        // The chart's literal values; the bucket secret and the paths in the image are replaced
        // by folders of the test.
        for (k, v) in pod_env(objects) {
            if let Some(v) = v.as_str()
                && !["ETL_BUCKET_CONFIG", "ETL_DIR", "ETL_BUCKET_DIR"].contains(&k.as_str())
            {
                cmd.env(k, v);
            }
        }
        // What the downward API gives the pod.
        cmd.env("POD_NAME", &self.identity)
            .env("KUBECOST_NAMESPACE", ns)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args(["--election", "kubernetes", "--lease-namespace", ns])
            .arg("--bucket-dir")
            .arg(self.dir.path().join("bucket"))
            .arg("--etl-dir")
            .arg(self.dir.path().join("etl"))
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--backfill", "1d", "--etl-interval", "2s"])
            .args(["--lease-duration", "4s", "--renew-deadline", "3s"])
            .args(["--retry-period", "1s"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        self.child = Some(cmd.spawn().expect("start cost-model"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                let log = self.log_tail(20);
                assert!(
                    log.contains("cannot listen"),
                    "cost-model exited at start ({status}):\n{log}"
                );
                return false;
            }
            if self.status().await.is_some() {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "cost-model did not serve within 30 s:\n{}",
                self.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn status(&self) -> Option<Status> {
        let resp = self
            .http
            .get(format!("http://127.0.0.1:{}/model/ha/status", self.port))
            .send()
            .await
            .ok()?;
        if resp.status().as_u16() != 200 {
            return None;
        }
        resp.json().await.ok().map(Status)
    }

    fn log_tail(&self, lines: usize) -> String {
        tail(&self.dir.path().join("replica.log"), lines)
    }

    /// SIGTERM, and the exit status.
    async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(25);
        loop {
            if let Some(s) = child.try_wait().expect("wait") {
                return s;
            }
            assert!(Instant::now() < deadline, "no exit within 25 s of SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ChartReplica {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- {} (port {}) log tail ----\n{}\n----",
                self.identity,
                self.port,
                self.log_tail(40)
            );
        }
    }
}

/// Renders the HA chart into `ns`, creates its ServiceAccount, Role (less `drop_verb`) and
/// RoleBinding for real, and writes a kubeconfig with a token of the ServiceAccount from the
/// TokenRequest API. Returns the rendered objects and the kubeconfig.
async fn chart_identity(
    admin: &Admin,
    ns: &str,
    drop_verb: Option<&str>,
    dir: &Path,
) -> (Vec<Value>, PathBuf) {
    let objects = render(ns, HA);
    for kind in ["ServiceAccount", "Role", "RoleBinding"] {
        let mut obj = one(&objects, kind, None).clone();
        if let Some(verb) = drop_verb.filter(|_| kind == "Role") {
            let rules: Vec<Value> = obj["rules"]
                .as_array()
                .expect("rules")
                .iter()
                .filter_map(|r| {
                    let mut r = r.clone();
                    let verbs: Vec<Value> = r["verbs"]
                        .as_array()
                        .expect("verbs")
                        .iter()
                        .filter(|v| *v != verb)
                        .cloned()
                        .collect();
                    r["verbs"] = Value::Array(verbs.clone());
                    (!verbs.is_empty()).then_some(r)
                })
                .collect();
            assert_ne!(
                rules,
                obj["rules"].as_array().cloned().unwrap_or_default(),
                "the Role grants {verb}"
            );
            obj["rules"] = Value::Array(rules);
        }
        let (code, body) = admin.create(&obj, false).await;
        assert_eq!(code, 201, "create {kind}: {body}");
    }
    let sa = name(one(&objects, "ServiceAccount", None)).to_string();
    let (code, body) = admin
        .post(
            &format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token"),
            &json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3600}
            }),
        )
        .await;
    assert_eq!(code, 201, "TokenRequest for {ns}/{sa}: {body}");
    let token = body["status"]["token"].as_str().expect("token");
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testenv", "cluster": {
            "server": admin.server,
            "certificate-authority": admin.ca.display().to_string(),
        }}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": sa, "context": {"cluster": "testenv", "user": sa, "namespace": ns}}],
        "current-context": sa,
    });
    let path = dir.join(format!("{sa}.kubeconfig"));
    std::fs::write(
        &path,
        serde_yaml_ng::to_string(&kubeconfig).expect("kubeconfig YAML"),
    )
    .expect("write kubeconfig");
    (objects, path)
}

/// With the chart's ServiceAccount, Role and RoleBinding, the replica leads: it creates the
/// Lease, renews it, and releases it on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_rbac_is_enough_to_lead() {
    let cp = testenv();
    let admin = Admin::new(&cp);
    let ns = admin.fresh_namespace("rbac").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (objects, kubeconfig) = chart_identity(&admin, &ns, None, dir.path()).await;
    let lease = env_str(&pod_env(&objects), "LEASE_NAME").expect("LEASE_NAME");
    let mut r = ChartReplica::start(&objects, &ns, &kubeconfig).await;

    let s = wait_for("the replica leads", Duration::from_secs(20), || async {
        r.status().await.filter(|s| s.leading())
    })
    .await;
    assert_eq!(
        s.0["identity"], "cm-cost-model-0",
        "POD_NAME is the identity"
    );
    assert_eq!(s.leader(), Some("cm-cost-model-0"));
    assert!(s.election_error().is_none(), "{:?}", s.0);
    assert_eq!(s.0["lease"]["namespace"], ns.as_str());
    assert_eq!(s.0["lease"]["name"], lease.as_str());

    let held = admin.lease(&ns, &lease).await.expect("the Lease exists");
    assert_eq!(held["spec"]["holderIdentity"], "cm-cost-model-0");
    // Renewals go through (update): a few retry periods later it still leads, without error.
    let renewed = held["spec"]["renewTime"].clone();
    wait_for("the Lease is renewed", Duration::from_secs(10), || async {
        let l = admin.lease(&ns, &lease).await?;
        (l["spec"]["renewTime"] != renewed).then_some(())
    })
    .await;
    let s = r.status().await.expect("answers");
    assert!(s.leading() && s.election_error().is_none(), "{:?}", s.0);

    // SIGTERM: a clean exit that releases the Lease (an update too).
    let exit = r.terminate().await;
    assert!(exit.success(), "exit {exit}:\n{}", r.log_tail(20));
    let released = admin.lease(&ns, &lease).await.expect("the Lease stays");
    assert!(
        released["spec"]["holderIdentity"]
            .as_str()
            .is_none_or(str::is_empty),
        "released: {released}"
    );
}

/// Each of the Role's verbs is needed: with any one taken away the replica never settles as
/// leader and says why in `electionError` (so the test above can fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_rbac_less_one_verb_never_leads() {
    let cp = testenv();
    let admin = Admin::new(&cp);
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = ["get", "create", "update"].map(|verb| {
        let (admin, dir) = (admin.clone(), dir.path().to_path_buf());
        async move {
            let ns = admin.fresh_namespace(&format!("no-{verb}")).await;
            let sub = dir.join(verb);
            std::fs::create_dir_all(&sub).expect("folder");
            let (objects, kubeconfig) = chart_identity(&admin, &ns, Some(verb), &sub).await;
            let lease = env_str(&pod_env(&objects), "LEASE_NAME").expect("LEASE_NAME");
            let r = ChartReplica::start(&objects, &ns, &kubeconfig).await;
            let s = wait_for(
                &format!("without {verb}: electionError says forbidden and writes are off"),
                Duration::from_secs(20),
                || async {
                    r.status().await.filter(|s| {
                        s.election_error().is_some_and(|e| e.contains("forbidden"))
                            && !s.writes_enabled()
                            && s.role() != "leader"
                    })
                },
            )
            .await;
            let err = s.election_error().expect("electionError").to_string();
            assert!(err.contains(&ns), "names the namespace: {err}");
            // The apiserver's own words: the chart's ServiceAccount, denied this verb.
            assert!(
                err.contains(&format!("system:serviceaccount:{ns}:cm-cost-model")),
                "the ServiceAccount's token is in use: {err}"
            );
            assert!(err.contains(&format!("cannot {verb}")), "{err}");
            // Several retry periods (1 s) and a lease duration (4 s) later, still not leading.
            let since = Instant::now();
            while since.elapsed() < Duration::from_secs(5) {
                let s = r.status().await.expect("answers");
                assert!(
                    s.role() != "leader" && !s.writes_enabled(),
                    "without {verb} it leads: {:?}",
                    s.0
                );
                assert!(s.election_error().is_some(), "{:?}", s.0);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let held = admin.lease(&ns, &lease).await;
            if verb != "update" {
                assert!(
                    held.is_none(),
                    "without {verb} no Lease is created: {held:?}"
                );
            }
            eprintln!("without {verb}: {err}");
        }
    });
    futures::future::join_all(runs).await;
}
