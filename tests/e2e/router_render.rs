//! The chart in router mode, rendered with `helm template` (Helm 3 and Helm 4) on Kubernetes 1.20
//! to the newest: only the Services and the routes to them, each Service with the selector and
//! ports bgslot recorded for its slot.

use crate::common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::Helm;
use serde_json::{json, Value};

const REL: &str = "web";

/// A router with both slots recorded (the test hook Pod is the router's too): blue runs a `helm create` chart, green podinfo-like ports
/// (an unnamed first port) so each Service's ports follow its slot. Everything bgslot's own
/// workloads could render is switched on: none of it may render in router mode.
const ROUTER: &str = r#"
router:
  enabled: true
  app: {chart: ./myapp}
  slots:
    blue:
      release: web-blue
      state: deployed
      revision: 3
      chart: myapp-0.1.0
      appVersion: "1.16.0"
      tag: v1
      image: nginx:v1
      container: myapp
      service: web-blue-myapp
      selector: {app.kubernetes.io/name: myapp, app.kubernetes.io/instance: web-blue}
      ports: [{name: http, port: 80, targetPort: http, protocol: TCP}]
    green:
      release: web-green
      state: deployed
      revision: 1
      chart: myapp-0.2.0
      appVersion: "1.17.0"
      tag: v2
      image: nginx:v2
      container: myapp
      service: web-green-myapp
      selector: {app: web-green-myapp}
      ports: [{port: 9898, targetPort: 9898}, {name: grpc, port: 9999, targetPort: grpc, appProtocol: grpc}]
green: {enabled: true}
autoscaling: {enabled: true}
podDisruptionBudget: {enabled: true}
migrations: {enabled: true, command: [migrate]}
metrics: {serviceMonitor: {enabled: true, force: true}}
workers: {consumer: {command: [consume]}}
cronJobs: {report: {schedule: "0 3 * * *", command: [report]}}
config: {env: {A: "1"}}
extraServices:
  admin:
    ports: [{name: admin, port: 9000, targetPort: admin}]
ingress: {enabled: true, host: web.example.com, stageHost: stage.web.example.com}
istio: {enabled: true}
gatewayAPI: {enabled: true, parentRefs: [{name: public}], hostnames: [web.example.com]}
"#;

fn render(helm: &Helm, values: &str, sets: &[&str], kube: &str) -> std::process::Output {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), values).unwrap();
    let mut cmd = helm.command();
    cmd.arg("template")
        .arg(REL)
        .arg(common::chart_dir())
        .arg("-f")
        .arg(file.path())
        .args(["--kube-version", kube]);
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    cmd.output().expect("run helm template")
}

fn docs(helm: &Helm, values: &str, sets: &[&str], kube: &str) -> Vec<Value> {
    let out = render(helm, values, sets, kube);
    assert!(
        out.status.success(),
        "{} template {sets:?} on {kube}: {}",
        helm.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap();
    docs.into_iter()
        .filter(|d| d.as_object().is_some_and(|o| !o.is_empty()))
        .collect()
}

fn failure(helm: &Helm, values: &str, sets: &[&str]) -> String {
    let out = render(helm, values, sets, "1.30.0");
    assert!(!out.status.success(), "{} {sets:?} rendered", helm.name());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn get<'d>(docs: &'d [Value], kind: &str, name: &str) -> &'d Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect()
}

const BLUE_PORTS: &str =
    r#"[{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]"#;

fn blue_ports() -> Value {
    serde_json::from_str(BLUE_PORTS).unwrap()
}

fn green_ports() -> Value {
    json!([
        {"port": 9898, "targetPort": 9898, "protocol": "TCP"},
        {"name": "grpc", "port": 9999, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"}
    ])
}

fn blue_selector() -> Value {
    json!({"app.kubernetes.io/name": "myapp", "app.kubernetes.io/instance": "web-blue"})
}

#[test]
fn a_router_renders_only_the_routing_on_every_kubernetes_version() {
    for helm in common::helms() {
        for minor in [20, 21, 23, 25, 27, 30, 33, 35, 37] {
            let kube = format!("1.{minor}.0");
            let docs = docs(&helm, ROUTER, &[], &kube);
            assert_eq!(
                kinds(&docs),
                [
                    "DestinationRule",
                    "Gateway",
                    "HTTPRoute",
                    "Ingress",
                    "Pod",
                    "Service",
                    "VirtualService"
                ]
                .map(String::from)
                .into(),
                "{} on {kube}",
                helm.name()
            );
            let names: BTreeSet<&str> = docs
                .iter()
                .filter(|d| d["kind"] == "Service")
                .map(|d| d["metadata"]["name"].as_str().unwrap())
                .collect();
            assert_eq!(
                names,
                ["web", "web-admin", "web-admin-stage", "web-stage"].into()
            );
            let production = get(&docs, "Service", "web");
            assert_eq!(production["spec"]["selector"], blue_selector());
            assert_eq!(production["spec"]["ports"], blue_ports());
            assert_eq!(
                production["metadata"]["annotations"]["bgslot/routes-to"],
                "blue"
            );
            assert_eq!(
                production["metadata"]["labels"]["bgslot/role"],
                "production"
            );
            assert_eq!(production["metadata"]["labels"]["bgslot/service"], "main");
            assert_eq!(
                production["metadata"]["labels"]["app.kubernetes.io/instance"],
                REL
            );
            let stage = get(&docs, "Service", "web-stage");
            assert_eq!(stage["spec"]["selector"], json!({"app": "web-green-myapp"}));
            assert_eq!(stage["spec"]["ports"], green_ports());
            assert_eq!(
                stage["metadata"]["annotations"]["bgslot/routes-to"],
                "green"
            );
            // extraServices keep their own ports and select their slot's pods.
            let admin = get(&docs, "Service", "web-admin-stage");
            assert_eq!(admin["spec"]["selector"], json!({"app": "web-green-myapp"}));
            assert_eq!(admin["spec"]["ports"][0]["targetPort"], "admin");
            assert_eq!(admin["metadata"]["labels"]["bgslot/service"], "admin");
        }
    }
}

#[test]
fn routes_name_each_router_services_first_port() {
    for helm in common::helms() {
        let docs = docs(&helm, ROUTER, &[], "1.30.0");
        let ingress = get(&docs, "Ingress", "web");
        let rules = ingress["spec"]["rules"].as_array().unwrap();
        let backend = |host: &str| {
            rules
                .iter()
                .find(|r| r["host"] == host)
                .map(|r| r["http"]["paths"][0]["backend"]["service"].clone())
                .unwrap()
        };
        assert_eq!(
            backend("web.example.com"),
            json!({"name": "web", "port": {"name": "http"}})
        );
        assert_eq!(
            backend("stage.web.example.com"),
            json!({"name": "web-stage", "port": {"number": 9898}})
        );
        let route = get(&docs, "HTTPRoute", "web");
        assert_eq!(
            route["spec"]["rules"][0]["backendRefs"][0],
            json!({"name": "web-stage", "port": 9898})
        );
        assert_eq!(
            route["spec"]["rules"][1]["backendRefs"][0],
            json!({"name": "web", "port": 80})
        );
        let vs = get(&docs, "VirtualService", "web");
        assert_eq!(
            vs["spec"]["http"][0]["route"][0]["destination"]["port"]["number"],
            9898
        );
        assert_eq!(
            vs["spec"]["http"][1]["route"][0]["destination"]["port"]["number"],
            80
        );
        let dr = get(&docs, "DestinationRule", "web");
        assert_eq!(
            dr["spec"]["subsets"][0],
            json!({"name": "blue", "labels": blue_selector()})
        );
        assert_eq!(
            dr["spec"]["subsets"][1],
            json!({"name": "green", "labels": {"app": "web-green-myapp"}})
        );
    }
}

#[test]
fn a_flip_changes_only_where_the_services_and_routes_point() {
    for helm in common::helms() {
        let blue = docs(&helm, ROUTER, &[], "1.30.0");
        let green = docs(&helm, ROUTER, &["productionSlot=green"], "1.30.0");
        assert_eq!(blue.len(), green.len());
        let production = get(&green, "Service", "web");
        assert_eq!(
            production["spec"]["selector"],
            json!({"app": "web-green-myapp"})
        );
        assert_eq!(production["spec"]["ports"], green_ports());
        assert_eq!(
            production["metadata"]["annotations"]["bgslot/routes-to"],
            "green"
        );
        assert_eq!(
            get(&green, "Service", "web-stage")["spec"]["selector"],
            blue_selector()
        );
        // Each object keeps its kind and name, and only Services and routes change.
        for d in &blue {
            let (kind, name) = (
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap(),
            );
            let other = get(&green, kind, name);
            if other != d {
                assert!(
                    ["Service", "Ingress", "HTTPRoute", "VirtualService", "Pod"].contains(&kind),
                    "{} {kind} {name} changed at a flip",
                    helm.name()
                );
            }
        }
    }
}

#[test]
fn an_empty_stage_slot_selects_no_pod_with_productions_ports() {
    for helm in common::helms() {
        for state in ["", "cleaned"] {
            let set = format!("router.slots.green.state={state}");
            let docs = docs(&helm, ROUTER, &[&set], "1.20.0");
            let stage = get(&docs, "Service", "web-stage");
            assert_eq!(
                stage["spec"]["selector"],
                json!({"bgslot/slot": "none"}),
                "{} {state:?}",
                helm.name()
            );
            assert_eq!(stage["spec"]["ports"], blue_ports());
            assert_eq!(
                stage["metadata"]["annotations"]["bgslot/routes-to"],
                "green"
            );
        }
    }
}

#[test]
fn guards_and_the_schema_refuse_a_router_production_cannot_route_through() {
    for helm in common::helms() {
        let stderr = failure(&helm, ROUTER, &["router.slots.blue.state=cleaned"]);
        assert!(
            stderr.lines().any(|l| l.contains(
                "router.slots.blue records no deployed release with a selector and ports (state \"cleaned\"): production would route to no pods"
            )),
            "{}: {stderr}",
            helm.name()
        );
        for (sets, key) in [
            (&["router.slots.blue.color=x"][..], "color"),
            (&["router.slots.blue.state=gone"], "state"),
            (&["router.app.accept[0]=pvc"], "accept"),
            (&["router.slots.blue.ports[0].port=0"], "port"),
            (&["router.unknown=1"], "unknown"),
        ] {
            let stderr = failure(&helm, ROUTER, sets);
            assert!(stderr.contains(key), "{} {sets:?}: {stderr}", helm.name());
        }
    }
}

#[test]
fn helm_lint_strict_passes_in_router_mode() {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), ROUTER).unwrap();
    for helm in common::helms() {
        helm.run(&[
            "lint",
            "--strict",
            common::chart_dir().to_str().unwrap(),
            "-f",
            file.path().to_str().unwrap(),
        ]);
    }
}

#[test]
fn a_release_written_before_router_mode_renders_as_it_did() {
    // An earlier bgslot wrote chart 0.3.0 releases whose reused values have no `router` key.
    for helm in common::helms() {
        let without = docs(&helm, "{}", &["router=null"], "1.30.0");
        let defaults = docs(&helm, "{}", &[], "1.30.0");
        assert_eq!(without, defaults, "{}", helm.name());
        assert!(kinds(&defaults).contains("Deployment"));
    }
}

#[test]
fn notes_and_the_test_hook_speak_of_a_router() {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), ROUTER).unwrap();
    for helm in common::helms() {
        let out = helm
            .command()
            .args(["install", REL])
            .arg(common::chart_dir())
            .arg("-f")
            .arg(file.path())
            .args([
                "--dry-run=client",
                "--set",
                "ingress.enabled=false,istio.enabled=false,gatewayAPI.enabled=false",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}",
            helm.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        let notes = &text[text.find("NOTES:").expect("notes")..];
        for line in [
            "is a router: it runs no workload of its own",
            "production (live): blue slot, release web-blue, image nginx:v1",
            "stage:             green slot, release web-green, image nginx:v2",
            "stage:      http://web-stage.default.svc:9898/",
            "bgslot swap web -n default --expect-tag v2",
        ] {
            assert!(notes.contains(line), "{}: {line:?} in {notes}", helm.name());
        }
        let docs = docs(&helm, ROUTER, &["router.slots.green.state="], "1.30.0");
        let pod = docs
            .iter()
            .find(|d| d["kind"] == "Pod")
            .expect("the test hook");
        let script = pod["spec"]["containers"][0]["args"][0].as_str().unwrap();
        assert!(
            script.contains("http://web:80/") && !script.contains("web-stage"),
            "{script}"
        );
    }
}

/// kubernetes-validate, installed by testenv/prepare.sh (or named by BGSLOT_KUBERNETES_VALIDATE).
fn kubernetes_validate() -> PathBuf {
    if let Some(path) = std::env::var_os("BGSLOT_KUBERNETES_VALIDATE") {
        return path.into();
    }
    let path = common::testenv_cache().join("kubernetes-validate-1.37.0/bin/kubernetes-validate");
    assert!(
        path.is_file(),
        "kubernetes-validate is not installed at {}: run testenv/prepare.sh",
        path.display()
    );
    path
}

#[test]
fn router_objects_pass_kubernetes_schema_validation_from_1_25_to_1_37() {
    let validate = kubernetes_validate();
    let dir = tempfile::tempdir().unwrap();
    for helm in common::helms() {
        for minor in 25..=37 {
            let kube = format!("1.{minor}.0");
            let docs: Vec<Value> = docs(&helm, ROUTER, &[], &kube)
                .into_iter()
                .filter(|d| ["Service", "Ingress", "Pod"].contains(&d["kind"].as_str().unwrap()))
                .collect();
            let file = dir.path().join(format!("{}-{kube}.yaml", helm.name()));
            let text: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
            std::fs::write(&file, text.join("\n---\n")).unwrap();
            let out = std::process::Command::new(&validate)
                .args(["--strict", "-k", &kube])
                .arg(&file)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{} {kube}: {stdout}{}",
                helm.name(),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                stdout
                    .lines()
                    .filter(|l| l.contains(" passed for resource "))
                    .count(),
                docs.len(),
                "{stdout}"
            );
        }
    }
}
