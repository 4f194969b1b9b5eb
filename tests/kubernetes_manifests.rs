//! The Kubernetes manifests (`deploy/kubernetes/`) and the `Dockerfile`.
//!
//! Every manifest validates in strict mode (unknown fields are errors) against a pinned
//! Kubernetes version with kubernetes-validate (PyPI; `.ci/run` installs it privately into
//! /opt/cutover-test/kubernetes-validate, `CUTOVER_KUBERNETES_VALIDATE` overrides the
//! directory), and a broken manifest is rejected, so the check can fail. The settings that can
//! regress silently are checked on the parsed manifests (PyYAML, which kubernetes-validate
//! brings, turns them into JSON): client addresses kept by the Service, the queue on a
//! persistent volume at the config's `state_dir`, a grace period that covers the drain, the PDB
//! selecting the gateways, the backfill Job as a work queue, pinned images, and every file the
//! configuration names projected into the pods. The ConfigMap's `cutover.toml` passes
//! `cutover config check`.
//!
//! Without kubernetes-validate the skip policy of tests/support/common.rs applies (a failure
//! under `CI=true`). Nothing here needs Docker or a cluster.

#[path = "support/common.rs"]
mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The Kubernetes version the manifests are validated against (the oldest one supported: the
/// StatefulSet's preStop `sleep` action needs 1.30+). kubernetes-validate 1.37.0 ships its schema.
const KUBERNETES_VERSION: &str = "1.33.0";

fn manifest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

fn validator_dir() -> String {
    std::env::var("CUTOVER_KUBERNETES_VALIDATE")
        .unwrap_or_else(|_| "/opt/cutover-test/kubernetes-validate".into())
}

/// Is kubernetes-validate (and so PyYAML) importable? Otherwise the skip policy.
fn validator_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import kubernetes_validate, yaml"])
        .env("PYTHONPATH", validator_dir())
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        common::skip_or_fail(&format!(
            "kubernetes-validate is not importable from {} (.ci/run installs it with pip --target)",
            validator_dir()
        ));
    }
    ok
}

/// Every `*.yaml` manifest, sorted.
fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifest_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Run kubernetes-validate in strict mode on `files`.
fn kubernetes_validate(files: &[PathBuf]) -> Output {
    Command::new("python3")
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "-k",
            KUBERNETES_VERSION,
        ])
        .args(files)
        .env("PYTHONPATH", validator_dir())
        .output()
        .expect("run python3 -m kubernetes_validate")
}

/// The verdict on `files`: Ok, or the tool's output. A `WARN` (no schema for that kind or
/// apiVersion: nothing was checked) counts as a failure.
fn verdict(files: &[PathBuf]) -> Result<(), String> {
    let out = kubernetes_validate(files);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && !text.lines().any(|l| l.starts_with("WARN")) {
        Ok(())
    } else {
        Err(text)
    }
}

const LOAD_SCRIPT: &str = r#"
import json, os, sys, yaml
docs = []
for f in sys.argv[1:]:
    with open(f) as fh:
        docs += [{"file": os.path.basename(f), "doc": d} for d in yaml.safe_load_all(fh) if d]
print(json.dumps(docs))
"#;

/// Every document of every manifest, as JSON: `[{"file", "doc"}]`.
fn documents() -> Vec<Value> {
    let out = Command::new("python3")
        .args(["-c", LOAD_SCRIPT])
        .args(manifests())
        .env("PYTHONPATH", validator_dir())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "PyYAML: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The parsed manifests, for the content tests.
struct Manifests {
    docs: Vec<Value>,
}

impl Manifests {
    /// `None` after the skip policy when PyYAML (from kubernetes-validate) is missing.
    fn load() -> Option<Self> {
        validator_available().then(|| Manifests { docs: documents() })
    }

    /// All documents of `kind`.
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.docs
            .iter()
            .map(|d| &d["doc"])
            .filter(|d| d["kind"] == kind)
            .collect()
    }

    /// The one document of `kind` named `name`.
    fn get(&self, kind: &str, name: &str) -> &Value {
        let found: Vec<&Value> = self
            .all(kind)
            .into_iter()
            .filter(|d| d["metadata"]["name"] == name)
            .collect();
        assert_eq!(found.len(), 1, "one {kind} {name} expected");
        found[0]
    }

    fn gateways(&self) -> &Value {
        self.get("StatefulSet", "cutover-gateway")
    }

    fn backfill(&self) -> &Value {
        self.get("Job", "cutover-backfill-wave-1")
    }

    /// The ConfigMap's `cutover.toml`, parsed.
    fn config(&self) -> toml::Table {
        let text = self.get("ConfigMap", "cutover-config")["data"]["cutover.toml"]
            .as_str()
            .expect("cutover.toml in the ConfigMap");
        text.parse().expect("cutover.toml is TOML")
    }

    /// Pod templates of every workload.
    fn pod_specs(&self) -> Vec<(&str, &Value)> {
        ["StatefulSet", "Deployment", "DaemonSet", "Job", "CronJob"]
            .iter()
            .flat_map(|k| self.all(k))
            .map(|w| {
                let spec = if w["kind"] == "CronJob" {
                    &w["spec"]["jobTemplate"]["spec"]["template"]["spec"]
                } else {
                    &w["spec"]["template"]["spec"]
                };
                (w["metadata"]["name"].as_str().unwrap(), spec)
            })
            .collect()
    }
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// The pod's only container.
fn container(pod: &Value) -> &Value {
    let cs = list(&pod["containers"]);
    assert_eq!(cs.len(), 1, "one container expected");
    &cs[0]
}

/// The container's port number called `name`.
fn named_port(c: &Value, name: &str) -> u64 {
    list(&c["ports"])
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// The port of a `host:port` listen address.
fn port_of(addr: &str) -> u64 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

fn str_args(c: &Value) -> Vec<&str> {
    list(&c["args"])
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

/// The label map `selector` (a Service's `selector`, a `matchLabels`) ⊆ `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let want = selector.as_object().expect("a label map");
    !want.is_empty() && want.iter().all(|(k, v)| &labels[k] == v)
}

#[test]
fn every_manifest_validates_strictly() {
    if !validator_available() {
        return;
    }
    let files = manifests();
    assert!(files.len() >= 8, "manifests: {files:?}");
    if let Err(out) = verdict(&files) {
        panic!("kubernetes-validate {KUBERNETES_VERSION} --strict refused:\n{out}");
    }
}

/// The check can fail: an unknown field, a wrong type, an unknown kind are each refused.
#[test]
fn broken_manifests_are_rejected() {
    if !validator_available() {
        return;
    }
    let good = std::fs::read_to_string(manifest_dir().join("gateway-statefulset.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown field",
            good.replacen("  replicas: 2\n", "  replicas: 2\n  replica: 2\n", 1),
        ),
        (
            "wrong type",
            good.replacen("  replicas: 2\n", "  replicas: two\n", 1),
        ),
        (
            "unknown kind",
            good.replacen("kind: StatefulSet\n", "kind: StatefullSet\n", 1),
        ),
    ];
    for (what, text) in cases {
        assert_ne!(text, good, "{what}: the edit did not apply");
        let path = dir.path().join("broken.yaml");
        std::fs::write(&path, text).unwrap();
        assert!(verdict(&[path]).is_err(), "{what} was accepted");
    }
}

/// Client addresses reach the gateway: externalTrafficPolicy Local, port 25 to the SMTP
/// listener's port.
#[test]
fn smtp_service_keeps_client_addresses() {
    let Some(m) = Manifests::load() else { return };
    let svc = m.get("Service", "cutover-smtp");
    assert_eq!(svc["spec"]["type"], "LoadBalancer");
    assert_eq!(svc["spec"]["externalTrafficPolicy"], "Local");
    let port = &list(&svc["spec"]["ports"])[0];
    assert_eq!(port["port"], 25);
    assert!(selects(
        &svc["spec"]["selector"],
        &m.gateways()["spec"]["template"]["metadata"]["labels"]
    ));
    let target = port["targetPort"].as_str().expect("a named targetPort");
    let smtp = named_port(container(&m.gateways()["spec"]["template"]["spec"]), target);
    let config = m.config();
    let listen = config["gateway"]["listen"].as_array().unwrap();
    assert!(
        listen.iter().all(|a| port_of(a.as_str().unwrap()) == smtp),
        "gateway.listen {listen:?} vs container port {smtp}"
    );
}

/// The queue lives on a per-pod PersistentVolumeClaim mounted at `gateway.state_dir`.
#[test]
fn gateway_queue_is_on_a_persistent_volume() {
    let Some(m) = Manifests::load() else { return };
    let sts = m.gateways();
    assert!(sts["spec"]["replicas"].as_u64().unwrap() >= 2);
    let state_dir = m.config()["gateway"]["state_dir"]
        .as_str()
        .unwrap()
        .to_owned();
    let c = container(&sts["spec"]["template"]["spec"]);
    let mount = list(&c["volumeMounts"])
        .iter()
        .find(|v| v["mountPath"] == state_dir.as_str())
        .unwrap_or_else(|| panic!("nothing mounted at state_dir {state_dir}"));
    let claims: Vec<&Value> = list(&sts["spec"]["volumeClaimTemplates"])
        .iter()
        .map(|t| &t["metadata"]["name"])
        .collect();
    assert!(
        claims.contains(&&mount["name"]),
        "{} is not a volumeClaimTemplate",
        mount["name"]
    );
    // A pod volume of the same name would shadow the claim.
    let pod_volumes = &sts["spec"]["template"]["spec"]["volumes"];
    assert!(list(pod_volumes).iter().all(|v| v["name"] != mount["name"]));
    assert_ne!(
        sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"],
        "Delete"
    );
}

/// What the API server checks at apply time and the schema does not: the StatefulSet's selector
/// matches its pods, and its governing Service exists, headless, selecting them.
#[test]
fn statefulset_selector_and_governing_service_match() {
    let Some(m) = Manifests::load() else { return };
    let sts = m.gateways();
    let labels = &sts["spec"]["template"]["metadata"]["labels"];
    assert!(selects(&sts["spec"]["selector"]["matchLabels"], labels));
    let service = sts["spec"]["serviceName"].as_str().unwrap();
    let headless = m.get("Service", service);
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert!(selects(&headless["spec"]["selector"], labels));
}

/// Each gateway and worker is named by its pod in the fleet (CUTOVER_INSTANCE).
#[test]
fn instance_name_is_the_pod_name() {
    let Some(m) = Manifests::load() else { return };
    for (name, pod) in m.pod_specs() {
        let env = list(&container(pod)["env"])
            .iter()
            .find(|e| e["name"] == "CUTOVER_INSTANCE")
            .unwrap_or_else(|| panic!("{name}: no CUTOVER_INSTANCE"));
        assert_eq!(
            env["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name",
            "{name}"
        );
    }
}

/// SIGTERM's worst case (src/server.rs `Server::shutdown`) fits in the grace period: preStop,
/// the storage watchdog (two 5 s probe timeouts), the session drain, the admin listener (5 s),
/// in-flight deliveries (up to the drain again) and the final flush (10 s margin).
#[test]
fn grace_period_covers_the_drain() {
    let Some(m) = Manifests::load() else { return };
    let pod = &m.gateways()["spec"]["template"]["spec"];
    let c = container(pod);
    let args = str_args(c);
    assert_eq!(args.first(), Some(&"serve"));
    let at = args
        .iter()
        .position(|a| *a == "--drain-timeout")
        .expect("--drain-timeout in the args");
    let drain = humantime::parse_duration(args[at + 1]).unwrap();
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0);
    let needed = Duration::from_secs(pre_stop + 10 + 5 + 10) + 2 * drain;
    let grace = Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap());
    assert!(
        grace > needed,
        "terminationGracePeriodSeconds {grace:?} <= {needed:?} (drain {drain:?})"
    );
}

/// The probes ask /healthz (exempt from the admin Host check and token) on the admin listener.
#[test]
fn probes_ask_healthz_on_the_admin_port() {
    let Some(m) = Manifests::load() else { return };
    let c = container(&m.gateways()["spec"]["template"]["spec"]);
    let config = m.config();
    let admin = port_of(config["admin"]["listen"].as_str().unwrap());
    assert!(
        config["admin"]["listen"]
            .as_str()
            .unwrap()
            .starts_with("0.0.0.0:")
    );
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], "/healthz", "{probe}");
        let port = match &get["port"] {
            Value::String(name) => named_port(c, name),
            p => p.as_u64().unwrap(),
        };
        assert_eq!(port, admin, "{probe} port vs admin.listen");
    }
}

/// The PDB selects the gateways, and only them.
#[test]
fn pdb_selects_the_gateway_pods() {
    let Some(m) = Manifests::load() else { return };
    let pdb = m.get("PodDisruptionBudget", "cutover-gateway");
    let sel = &pdb["spec"]["selector"]["matchLabels"];
    assert!(selects(
        sel,
        &m.gateways()["spec"]["template"]["metadata"]["labels"]
    ));
    assert!(!selects(
        sel,
        &m.backfill()["spec"]["template"]["metadata"]["labels"]
    ));
    let budget = &pdb["spec"];
    assert!(
        budget["maxUnavailable"] == 1 || budget["minAvailable"] == 1,
        "{budget}"
    );
}

/// Workers until the work queue is empty: parallel, completions unset, `backfill worker` of a
/// job the configuration defines.
#[test]
fn backfill_job_is_a_work_queue() {
    let Some(m) = Manifests::load() else { return };
    let spec = &m.backfill()["spec"];
    assert!(spec["parallelism"].as_u64().unwrap() >= 2);
    assert!(spec["completions"].is_null(), "completions must be unset");
    assert!(spec["completionMode"].is_null() || spec["completionMode"] == "NonIndexed");
    let args = str_args(container(&spec["template"]["spec"]));
    assert_eq!(args[..2], ["backfill", "worker"], "{args:?}");
    let config = m.config();
    let jobs = config["backfill"]["job"].as_array().unwrap();
    assert!(
        jobs.iter().any(|j| j["name"].as_str() == Some(args[2])),
        "no [[backfill.job]] named {}",
        args[2]
    );
    assert!(config["ledger"]["url_file"].is_str());
}

/// Every image is pinned: a tag other than latest, or a digest.
#[test]
fn images_are_pinned() {
    let Some(m) = Manifests::load() else { return };
    for (name, pod) in m.pod_specs() {
        let all = list(&pod["containers"])
            .iter()
            .chain(list(&pod["initContainers"]));
        for c in all {
            let image = c["image"].as_str().unwrap();
            let tag = image.rsplit('/').next().unwrap().split_once(':');
            assert!(
                image.contains("@sha256:") || tag.is_some_and(|(_, t)| t != "latest"),
                "{name}: image {image} is not pinned"
            );
        }
    }
}

/// The pods run as non-root without privileges (the namespace enforces "restricted").
#[test]
fn pods_run_unprivileged() {
    let Some(m) = Manifests::load() else { return };
    for (name, pod) in m.pod_specs() {
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        let sc = &container(pod)["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{name}"
        );
        assert!(sc["capabilities"]["add"].is_null(), "{name}");
    }
}

/// Every absolute path string in `v` under `prefix`.
fn paths_under(v: &toml::Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        toml::Value::String(s) if s.starts_with(prefix) => out.push(s.clone()),
        toml::Value::Array(a) => a.iter().for_each(|x| paths_under(x, prefix, out)),
        toml::Value::Table(t) => t.values().for_each(|x| paths_under(x, prefix, out)),
        _ => {}
    }
}

/// The files the pod's projected volumes provide: (path, ConfigMap or Secret name, key).
fn projected_files(pod: &Value) -> Vec<(String, String, String)> {
    let mut files = Vec::new();
    for mount in list(&container(pod)["volumeMounts"]) {
        let volume = list(&pod["volumes"])
            .iter()
            .find(|v| v["name"] == mount["name"]);
        let Some(sources) = volume.map(|v| list(&v["projected"]["sources"])) else {
            continue;
        };
        for source in sources {
            let (kind, from) = match (&source["configMap"], &source["secret"]) {
                (Value::Null, s) => ("Secret", s),
                (c, _) => ("ConfigMap", c),
            };
            for item in list(&from["items"]) {
                files.push((
                    format!(
                        "{}/{}",
                        mount["mountPath"].as_str().unwrap(),
                        item["path"].as_str().unwrap()
                    ),
                    format!("{kind}/{}", from["name"].as_str().unwrap()),
                    item["key"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    files
}

/// The contents of key `key` of `source` ("ConfigMap/name" or "Secret/name").
fn source_value<'a>(m: &'a Manifests, source: &str, key: &str) -> Option<&'a str> {
    let (kind, name) = source.split_once('/').unwrap();
    let doc = m.get(kind, name);
    let field = if kind == "ConfigMap" {
        "data"
    } else {
        "stringData"
    };
    doc[field][key].as_str()
}

/// Every file cutover.toml names under /etc/cutover is projected into every pod, from a key the
/// ConfigMap or the example Secrets have.
#[test]
fn every_configured_file_is_projected() {
    let Some(m) = Manifests::load() else { return };
    let mut wanted = Vec::new();
    paths_under(
        &toml::Value::Table(m.config()),
        "/etc/cutover/",
        &mut wanted,
    );
    assert!(wanted.len() >= 6, "{wanted:?}");
    for (name, pod) in m.pod_specs() {
        let files = projected_files(pod);
        for (path, source, key) in &files {
            assert!(
                source_value(&m, source, key).is_some(),
                "{name}: {path} from {source} key {key}: no such key"
            );
        }
        for path in &wanted {
            assert!(
                files.iter().any(|(p, _, _)| p == path),
                "{name}: {path} (named in cutover.toml) is not projected"
            );
        }
    }
}

/// The ConfigMap's cutover.toml with its files (from the ConfigMap and the example Secrets)
/// written into a temporary /etc/cutover: `cutover config check` accepts it without a warning.
#[test]
fn configmap_config_passes_config_check() {
    let Some(m) = Manifests::load() else { return };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let relocate = |s: &str| {
        s.replace("/etc/cutover/", &format!("{root}/etc/"))
            .replace("/var/lib/cutover", &format!("{root}/state"))
    };
    for (path, source, key) in projected_files(&m.gateways()["spec"]["template"]["spec"]) {
        let file = PathBuf::from(relocate(&path));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, relocate(source_value(&m, &source, &key).unwrap())).unwrap();
    }
    let config = format!("{root}/etc/cutover.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["config", "check", "--json", "-c", &config])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    assert!(out.status.success(), "config check: {report:#}");
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(list(&report["warnings"]).len(), 0, "{report:#}");
    assert_eq!(report["backfill_jobs"], 1, "{report:#}");
}

/// The image: built by the Rust version Cargo.toml requires, with --locked; runs `cutover`
/// as a non-root user; the build context keeps what the build needs.
#[test]
fn dockerfile_builds_the_binary_as_a_non_root_image() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let cargo: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let rust = cargo["package"]["rust-version"].as_str().unwrap();
    let lines: Vec<&str> = dockerfile.lines().map(str::trim).collect();
    for line in [
        format!("FROM rust:{rust}-bookworm AS builder"),
        "RUN cargo build --release --locked --bin cutover".into(),
        "FROM debian:bookworm-slim".into(),
        "COPY --from=builder /src/target/release/cutover /usr/local/bin/cutover".into(),
        "USER 10001:10001".into(),
        r#"ENTRYPOINT ["cutover"]"#.into(),
        r#"CMD ["serve", "-c", "/etc/cutover/cutover.toml"]"#.into(),
    ] {
        assert!(lines.contains(&line.as_str()), "Dockerfile lacks {line:?}");
    }
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    let ignored: Vec<&str> = ignore.lines().map(str::trim).collect();
    assert!(ignored.contains(&"target/") && ignored.contains(&".git/"));
    for needed in [
        "src",
        "src/",
        "Cargo.toml",
        "Cargo.lock",
        "benches",
        "benches/",
    ] {
        assert!(!ignored.contains(&needed), ".dockerignore drops {needed}");
    }
}
