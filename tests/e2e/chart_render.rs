//! Renders the chart with `helm template` (Helm 3 and Helm 4) and checks the parsed objects.

use crate::common;

use std::path::{Path, PathBuf};

use common::Helm;
use serde_json::{json, Value};

const REL: &str = "web";

/// Every optional feature switched on, both slots enabled, so one render shows every object kind
/// and every knob of the pod spec.
const ALL_ON: &str = r#"
green:
  enabled: true
  env: {ONLY_GREEN: x}
autoscaling:
  enabled: true
  targetMemoryUtilizationPercentage: 70
podDisruptionBudget: {enabled: true}
ingress:
  enabled: true
  className: nginx
  host: web.example.com
  stageHost: stage.web.example.com
  tls: [{secretName: web-tls, hosts: [web.example.com]}]
istio: {enabled: true}
gatewayAPI:
  enabled: true
  parentRefs: [{name: public}]
  hostnames: [web.example.com]
  stageCookie: test=true
image: {digest: "sha256:0000000000000000000000000000000000000000000000000000000000000001"}
command: [/bin/server]
args: [--listen=:80]
env: {SHARED: "1"}
extraEnv:
  - name: POD_IP
    valueFrom: {fieldRef: {fieldPath: status.podIP}}
envFrom: [{secretRef: {name: external}}]
config:
  env: {MODE: fast}
  files: {app.conf: "x = 1\n"}
  mountPath: /etc/web
secretEnv: {TOKEN: hunter2}
extraPorts: [{name: metrics, containerPort: 9090}]
extraVolumes: [{name: cache, emptyDir: {}}]
extraVolumeMounts: [{name: cache, mountPath: /cache}]
initContainers:
  - name: init
    image: "{{ .SlotImage }}"
    command: [/bin/server, init]
sidecars:
  - name: proxy
    image: envoyproxy/envoy:v1.31.0
    ports: [{name: admin, containerPort: 9901}]
    env: [{name: SLOT, value: "{{ .Slot }}"}]
lifecycle: {}
priorityClassName: high
minReadySeconds: 5
revisionHistoryLimit: 3
podAnnotations: {team: web}
podLabels: {tier: frontend}
resources: {limits: {cpu: 500m}}
nodeSelector: {disk: ssd}
tolerations: [{key: dedicated, operator: Exists}]
topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway}
serviceAccount: {annotations: {owner: web}}
imagePullSecrets: [{name: regcred}]
extraServices:
  admin:
    annotations: {internal: "yes"}
    ports: [{name: admin, port: 9000, targetPort: metrics}]
migrations:
  enabled: true
  command: [/bin/server, migrate]
workers:
  consumer:
    command: [/bin/server, consume]
    args: [--queue=orders]
    replicas: 3
    extraEnv: [{name: QUEUE, value: orders}]
    resources: {requests: {cpu: 100m}}
    terminationGracePeriodSeconds: 90
    livenessProbe: {exec: {command: [/bin/server, health]}}
    podAnnotations: {worker: "yes"}
    handover: stop-first
  indexer:
    command: [/bin/server, index]
    stageReplicas: 1
    autoscaling:
      enabled: true
      minReplicas: 1
      maxReplicas: 4
      metrics:
        - type: Resource
          resource: {name: cpu, target: {type: Utilization, averageUtilization: 60}}
cronJobs:
  nightly-report:
    schedule: "0 3 * * *"
    command: [/bin/server, report]
    concurrencyPolicy: Replace
    startingDeadlineSeconds: 300
    successfulJobsHistoryLimit: 0
    failedJobsHistoryLimit: 2
    backoffLimit: 0
    activeDeadlineSeconds: 600
    terminationGracePeriodSeconds: 10
    resources: {limits: {memory: 1Gi}}
    extraEnv: [{name: REPORT, value: nightly}]
    podAnnotations: {sidecar.istio.io/inject: "false"}
metrics:
  serviceMonitor: {enabled: true, force: true, port: metrics}
extraObjects:
  - |
    apiVersion: v1
    kind: ConfigMap
    metadata:
      name: {{ .Release.Name }}-extra
      labels:
        {{- include "bgslot.labels" . | nindent 8 }}
    data:
      release: {{ .Release.Name }}
"#;

/// The example application of `examples/web-app.yaml`.
fn example_app() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/web-app.yaml")
}

/// The example with its stage slot running too and a value for its Secret, so every object renders.
const EXAMPLE_BOTH_SLOTS: &[&str] = &[
    "green.enabled=true",
    "green.image.tag=v2",
    "secretEnv.SESSION_KEY=not-a-real-key",
];

struct Render<'a> {
    helm: &'a Helm,
    chart: PathBuf,
    sets: Vec<String>,
    extra: Vec<String>,
    files: Vec<PathBuf>,
    /// Values given as text live in temporary files as long as the render.
    temps: Vec<tempfile::NamedTempFile>,
}

impl<'a> Render<'a> {
    fn new(helm: &'a Helm) -> Self {
        Render {
            helm,
            chart: common::chart_dir(),
            sets: Vec::new(),
            extra: Vec::new(),
            files: Vec::new(),
            temps: Vec::new(),
        }
    }

    fn set(mut self, sets: &[&str]) -> Self {
        self.sets.extend(sets.iter().map(|s| s.to_string()));
        self
    }

    fn set_string(mut self, sets: &[&str]) -> Self {
        for s in sets {
            self.extra.push("--set-string".into());
            self.extra.push(s.to_string());
        }
        self
    }

    fn set_json(mut self, sets: &[&str]) -> Self {
        for s in sets {
            self.extra.push("--set-json".into());
            self.extra.push(s.to_string());
        }
        self
    }

    fn arg(mut self, args: &[&str]) -> Self {
        self.extra.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// A values file (`-f`), applied before any `--set`.
    fn file(mut self, path: &Path) -> Self {
        self.files.push(path.to_path_buf());
        self
    }

    /// Values as YAML text, applied like a values file.
    fn values(mut self, yaml: &str) -> Self {
        let temp = tempfile::Builder::new()
            .suffix(".yaml")
            .tempfile()
            .expect("temporary values file");
        std::fs::write(temp.path(), yaml).expect("write values");
        self.files.push(temp.path().to_path_buf());
        self.temps.push(temp);
        self
    }

    fn kube(self, version: &str) -> Self {
        self.arg(&["--kube-version", version])
    }

    /// Another chart directory than this checkout's `chart/`.
    fn chart(mut self, dir: &Path) -> Self {
        self.chart = dir.to_path_buf();
        self
    }

    fn output(&self) -> std::process::Output {
        let mut cmd = self.helm.command();
        cmd.arg("template").arg(REL).arg(&self.chart);
        for f in &self.files {
            cmd.arg("-f").arg(f);
        }
        for s in &self.sets {
            cmd.arg("--set").arg(s);
        }
        cmd.args(&self.extra);
        cmd.output().expect("run helm template")
    }

    /// The rendered objects; panics with helm's stderr when rendering fails.
    fn docs(&self) -> Vec<Value> {
        let out = self.output();
        assert!(
            out.status.success(),
            "{} template {:?} {:?} {:?} failed: {}",
            self.helm.name(),
            self.files,
            self.sets,
            self.extra,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("helm prints UTF-8");
        parse(&text)
    }

    /// Helm's stderr from a render that must fail.
    fn failure(&self) -> String {
        let out = self.output();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "{} template {:?} {:?} {:?} unexpectedly succeeded",
            self.helm.name(),
            self.files,
            self.sets,
            self.extra
        );
        stderr
    }
}

fn parse(text: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).expect("helm template output is YAML");
    docs.into_iter()
        .filter(|d| !d.is_null() && d.as_object().is_some_and(|o| !o.is_empty()))
        .collect()
}

fn kind_of(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn name_of(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

fn of_kind<'d>(docs: &'d [Value], kind: &str) -> Vec<&'d Value> {
    docs.iter().filter(|d| kind_of(d) == kind).collect()
}

fn names(docs: &[Value], kind: &str) -> Vec<String> {
    let mut names: Vec<String> = of_kind(docs, kind)
        .iter()
        .map(|d| name_of(d).to_string())
        .collect();
    names.sort();
    names
}

fn get<'d>(docs: &'d [Value], kind: &str, name: &str) -> &'d Value {
    docs.iter()
        .find(|d| kind_of(d) == kind && name_of(d) == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", summary(docs)))
}

fn summary(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| format!("{}/{}", kind_of(d), name_of(d)))
        .collect()
}

fn container(deploy: &Value) -> &Value {
    &deploy["spec"]["template"]["spec"]["containers"][0]
}

/// The container env as NAME -> value.
fn env_of(deploy: &Value) -> serde_json::Map<String, Value> {
    container(deploy)["env"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn slot_selector(slot: &str) -> Value {
    json!({
        "app.kubernetes.io/name": "bgslot",
        "app.kubernetes.io/instance": REL,
        "bgslot/slot": slot,
    })
}

#[test]
fn services_select_the_production_and_the_stage_slot() {
    for helm in common::helms() {
        for (prod, stage) in [("blue", "green"), ("green", "blue")] {
            let sets = [
                format!("productionSlot={prod}"),
                "blue.enabled=true".into(),
                "green.enabled=true".into(),
            ];
            let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
            let docs = Render::new(&helm).set(&sets).docs();
            assert_eq!(
                names(&docs, "Service"),
                ["web", "web-stage"],
                "{}",
                helm.name()
            );

            let production = get(&docs, "Service", "web");
            assert_eq!(
                production["spec"]["selector"],
                slot_selector(prod),
                "{} prod={prod}",
                helm.name()
            );
            assert_eq!(
                production["metadata"]["labels"]["bgslot/role"],
                "production"
            );
            assert_eq!(production["metadata"]["labels"]["bgslot/service"], "main");

            let staging = get(&docs, "Service", "web-stage");
            assert_eq!(
                staging["spec"]["selector"],
                slot_selector(stage),
                "{} prod={prod}",
                helm.name()
            );
            assert_eq!(staging["metadata"]["labels"]["bgslot/role"], "stage");
            assert_eq!(staging["metadata"]["labels"]["bgslot/service"], "main");

            for svc in [production, staging] {
                assert_eq!(
                    svc["spec"]["ports"],
                    json!([{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}])
                );
            }
        }
    }
}

#[test]
fn both_services_exist_while_the_stage_slot_is_disabled() {
    for helm in common::helms() {
        let docs = Render::new(&helm).docs();
        assert_eq!(
            names(&docs, "Service"),
            ["web", "web-stage"],
            "{}",
            helm.name()
        );
        assert_eq!(
            get(&docs, "Service", "web-stage")["spec"]["selector"],
            slot_selector("green")
        );
        assert_eq!(names(&docs, "Deployment"), ["web-blue"], "{}", helm.name());
    }
}

#[test]
fn a_disabled_slot_renders_no_deployment_hpa_or_pdb() {
    let on = [
        "autoscaling.enabled=true",
        "podDisruptionBudget.enabled=true",
    ];
    for helm in common::helms() {
        let docs = Render::new(&helm).set(&on).docs();
        for kind in [
            "Deployment",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
        ] {
            assert_eq!(names(&docs, kind), ["web-blue"], "{} {kind}", helm.name());
        }

        let docs = Render::new(&helm)
            .set(&on)
            .set(&[
                "productionSlot=green",
                "green.enabled=true",
                "blue.enabled=false",
            ])
            .docs();
        for kind in [
            "Deployment",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
        ] {
            assert_eq!(names(&docs, kind), ["web-green"], "{} {kind}", helm.name());
        }

        let docs = Render::new(&helm)
            .set(&on)
            .set(&["green.enabled=true"])
            .docs();
        for kind in [
            "Deployment",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
        ] {
            assert_eq!(
                names(&docs, kind),
                ["web-blue", "web-green"],
                "{} {kind}",
                helm.name()
            );
        }
        for slot in ["blue", "green"] {
            let name = format!("web-{slot}");
            let hpa = get(&docs, "HorizontalPodAutoscaler", &name);
            assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], name.as_str());
            assert_eq!(hpa["metadata"]["labels"]["bgslot/slot"], slot);
            let pdb = get(&docs, "PodDisruptionBudget", &name);
            assert_eq!(pdb["spec"]["selector"]["matchLabels"], slot_selector(slot));
            assert_eq!(pdb["spec"]["minAvailable"], 1);
        }
    }
}

#[test]
fn deployments_select_their_slot_and_carry_the_slot_label() {
    for helm in common::helms() {
        let docs = Render::new(&helm)
            .set(&["green.enabled=true"])
            .kube("1.29.0")
            .docs();
        for slot in ["blue", "green"] {
            let d = get(&docs, "Deployment", &format!("web-{slot}"));
            assert_eq!(d["apiVersion"], "apps/v1");
            assert_eq!(
                d["spec"]["selector"]["matchLabels"],
                slot_selector(slot),
                "{}",
                helm.name()
            );
            assert_eq!(
                d["spec"]["template"]["metadata"]["labels"],
                slot_selector(slot),
                "{}",
                helm.name()
            );
            assert_eq!(d["metadata"]["labels"]["bgslot/slot"], slot);
            let c = container(d);
            assert_eq!(c["name"], "bgslot");
            assert_eq!(c["image"], "nginx:1.27");
            assert_eq!(c["imagePullPolicy"], "IfNotPresent");
            assert_eq!(
                c["ports"],
                json!([{"name": "http", "containerPort": 80, "protocol": "TCP"}])
            );
            assert_eq!(
                c["lifecycle"]["preStop"]["exec"]["command"],
                json!(["sleep", "5"])
            );
            assert_eq!(
                d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
                30
            );
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                assert_eq!(c[probe]["httpGet"]["port"], "http", "{probe}");
            }
        }
    }
}

#[test]
fn slot_image_replicas_and_env_fall_back_to_the_shared_values() {
    for helm in common::helms() {
        let docs = Render::new(&helm)
            .set(&[
                "image.repository=registry.example/web",
                "image.tag=v1",
                "replicaCount=3",
                "env.SHARED=shared",
                "env.OVERRIDDEN=from-shared",
                "green.enabled=true",
                "green.image.tag=v2",
                "green.replicaCount=5",
                "green.env.OVERRIDDEN=from-green",
                "green.env.ONLY_GREEN=g",
            ])
            .docs();
        let blue = get(&docs, "Deployment", "web-blue");
        assert_eq!(
            container(blue)["image"],
            "registry.example/web:v1",
            "{}",
            helm.name()
        );
        assert_eq!(blue["spec"]["replicas"], 3);
        assert_eq!(
            Value::Object(env_of(blue)),
            json!({"SHARED": "shared", "OVERRIDDEN": "from-shared"}),
            "{}",
            helm.name()
        );

        let green = get(&docs, "Deployment", "web-green");
        assert_eq!(
            container(green)["image"],
            "registry.example/web:v2",
            "{}",
            helm.name()
        );
        assert_eq!(green["spec"]["replicas"], 5);
        assert_eq!(
            Value::Object(env_of(green)),
            json!({"SHARED": "shared", "OVERRIDDEN": "from-green", "ONLY_GREEN": "g"}),
            "{}",
            helm.name()
        );

        let docs = Render::new(&helm)
            .set(&[
                "green.enabled=true",
                "green.image.repository=other.example/web",
            ])
            .set_string(&["green.image.tag=1.30", "blue.image.tag=sha256:0123abcd"])
            .docs();
        assert_eq!(
            container(get(&docs, "Deployment", "web-green"))["image"],
            "other.example/web:1.30"
        );
        assert_eq!(
            container(get(&docs, "Deployment", "web-blue"))["image"],
            "nginx@sha256:0123abcd"
        );
    }
}

#[test]
fn slot_replica_count_zero_is_honoured() {
    for helm in common::helms() {
        let docs = Render::new(&helm)
            .set(&["green.enabled=true", "green.replicaCount=0"])
            .docs();
        assert_eq!(
            get(&docs, "Deployment", "web-green")["spec"]["replicas"],
            0,
            "{}",
            helm.name()
        );
        assert_eq!(get(&docs, "Deployment", "web-blue")["spec"]["replicas"], 2);

        // A slot held at zero gets no HPA, which would scale it back up to minReplicas.
        let docs = Render::new(&helm)
            .set(&[
                "green.enabled=true",
                "green.replicaCount=0",
                "autoscaling.enabled=true",
            ])
            .docs();
        assert_eq!(
            get(&docs, "Deployment", "web-green")["spec"]["replicas"],
            0,
            "{}",
            helm.name()
        );
        assert_eq!(names(&docs, "HorizontalPodAutoscaler"), ["web-blue"]);
    }
}

#[test]
fn autoscaled_deployments_have_no_replicas_field() {
    for helm in common::helms() {
        let docs = Render::new(&helm)
            .set(&["green.enabled=true", "autoscaling.enabled=true"])
            .docs();
        for d in of_kind(&docs, "Deployment") {
            assert!(
                d["spec"].get("replicas").is_none(),
                "{} {}",
                helm.name(),
                name_of(d)
            );
        }
        let hpa = get(&docs, "HorizontalPodAutoscaler", "web-green");
        assert_eq!(hpa["spec"]["minReplicas"], 2);
        assert_eq!(hpa["spec"]["maxReplicas"], 10);
        assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
        assert_eq!(
            hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
    }
}

#[test]
fn enabling_or_swapping_slots_leaves_the_other_deployment_unchanged() {
    for helm in common::helms() {
        let alone = Render::new(&helm).docs();
        let with_green = Render::new(&helm).set(&["green.enabled=true"]).docs();
        let swapped = Render::new(&helm)
            .set(&["green.enabled=true", "productionSlot=green"])
            .docs();
        let blue = get(&alone, "Deployment", "web-blue");
        assert_eq!(
            blue,
            get(&with_green, "Deployment", "web-blue"),
            "{}",
            helm.name()
        );
        assert_eq!(
            blue,
            get(&swapped, "Deployment", "web-blue"),
            "{}",
            helm.name()
        );
        assert_eq!(
            get(&with_green, "Deployment", "web-green"),
            get(&swapped, "Deployment", "web-green"),
            "{}",
            helm.name()
        );
    }
}

#[test]
fn fullname_is_the_release_name_or_the_override() {
    for helm in common::helms() {
        let docs = Render::new(&helm)
            .set(&["fullnameOverride=shop", "green.enabled=true"])
            .docs();
        assert_eq!(names(&docs, "Service"), ["shop", "shop-stage"]);
        assert_eq!(names(&docs, "Deployment"), ["shop-blue", "shop-green"]);
        // The selector keeps the release as instance.
        assert_eq!(
            get(&docs, "Service", "shop")["spec"]["selector"],
            slot_selector("blue")
        );

        let long = "a".repeat(70);
        let set = format!("fullnameOverride={long}");
        let docs = Render::new(&helm).set(&[&set, "green.enabled=true"]).docs();
        let mut all = names(&docs, "Service");
        all.extend(names(&docs, "Deployment"));
        for n in &all {
            assert!(
                n.len() <= 63 && !n.ends_with('-'),
                "{} name {n}",
                helm.name()
            );
        }
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 4, "{} {all:?}", helm.name());
    }
}

#[test]
fn ingress_routes_the_production_and_the_stage_host() {
    for helm in common::helms() {
        let docs = Render::new(&helm)
            .set(&[
                "ingress.enabled=true",
                "ingress.className=nginx",
                "ingress.host=web.example.com",
                "ingress.stageHost=stage.web.example.com",
                "ingress.annotations.a=b",
            ])
            .docs();
        let ing = get(&docs, "Ingress", "web");
        assert_eq!(ing["apiVersion"], "networking.k8s.io/v1");
        assert_eq!(ing["spec"]["ingressClassName"], "nginx");
        assert_eq!(ing["metadata"]["annotations"]["a"], "b");
        let rules = ing["spec"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 2, "{}", helm.name());
        let backend_of = |host: &str| {
            let rule = rules
                .iter()
                .find(|r| r["host"] == host)
                .unwrap_or_else(|| panic!("no rule for {host}"));
            let path = &rule["http"]["paths"][0];
            assert_eq!(path["path"], "/");
            assert_eq!(path["pathType"], "Prefix");
            path["backend"]["service"].clone()
        };
        assert_eq!(
            backend_of("web.example.com"),
            json!({"name": "web", "port": {"name": "http"}})
        );
        assert_eq!(
            backend_of("stage.web.example.com"),
            json!({"name": "web-stage", "port": {"name": "http"}})
        );

        // Without a stage host only production is exposed.
        let docs = Render::new(&helm)
            .set(&["ingress.enabled=true", "ingress.host=web.example.com"])
            .docs();
        let rules = get(&docs, "Ingress", "web")["spec"]["rules"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0]["http"]["paths"][0]["backend"]["service"]["name"],
            "web"
        );

        let docs = Render::new(&helm).docs();
        assert!(of_kind(&docs, "Ingress").is_empty());
    }
}

#[test]
fn istio_sends_the_test_cookie_to_stage_and_the_rest_to_production() {
    for helm in common::helms() {
        for (prod, stage) in [("blue", "green"), ("green", "blue")] {
            let set = format!("productionSlot={prod}");
            let docs = Render::new(&helm)
                .set(&[
                    &set,
                    "blue.enabled=true",
                    "green.enabled=true",
                    "istio.enabled=true",
                    "istio.hosts[0]=web.example.com",
                ])
                .docs();
            let gw = get(&docs, "Gateway", "web");
            assert_eq!(gw["apiVersion"], "networking.istio.io/v1beta1");
            assert_eq!(gw["spec"]["selector"], json!({"istio": "ingressgateway"}));
            assert_eq!(
                gw["spec"]["servers"][0]["hosts"],
                json!(["web.example.com"])
            );

            let vs = get(&docs, "VirtualService", "web");
            assert_eq!(vs["apiVersion"], "networking.istio.io/v1beta1");
            assert_eq!(vs["spec"]["gateways"], json!(["web"]));
            assert_eq!(vs["spec"]["hosts"], json!(["web.example.com"]));
            let http = vs["spec"]["http"].as_array().unwrap();
            assert_eq!(http.len(), 2);
            let regex = http[0]["match"][0]["headers"]["cookie"]["regex"]
                .as_str()
                .expect("cookie regex");
            assert!(regex.contains("(test=true)"), "{regex}");
            assert_eq!(
                http[0]["route"],
                json!([{"destination": {"host": "web-stage", "subset": stage, "port": {"number": 80}}}]),
                "{} prod={prod}",
                helm.name()
            );
            assert!(
                http[1].get("match").is_none(),
                "the production route is the default"
            );
            assert_eq!(
                http[1]["route"],
                json!([{"destination": {"host": "web", "subset": prod, "port": {"number": 80}}}]),
                "{} prod={prod}",
                helm.name()
            );
            for svc in ["web", "web-stage"] {
                let dr = get(&docs, "DestinationRule", svc);
                assert_eq!(dr["apiVersion"], "networking.istio.io/v1beta1");
                assert_eq!(dr["spec"]["host"], svc);
                assert_eq!(
                    dr["spec"]["subsets"],
                    json!([
                        {"name": "blue", "labels": {"bgslot/slot": "blue"}},
                        {"name": "green", "labels": {"bgslot/slot": "green"}},
                    ])
                );
            }
        }

        let docs = Render::new(&helm)
            .set(&[
                "istio.enabled=true",
                "istio.gateway.create=false",
                "istio.gateway.name=istio-system/public",
                "istio.testCookie=canary=1",
            ])
            .docs();
        assert!(of_kind(&docs, "Gateway").is_empty());
        let vs = get(&docs, "VirtualService", "web");
        assert_eq!(vs["spec"]["gateways"], json!(["istio-system/public"]));
        let regex = vs["spec"]["http"][0]["match"][0]["headers"]["cookie"]["regex"]
            .as_str()
            .unwrap();
        assert!(regex.contains("(canary=1)"), "{regex}");
    }
}

#[test]
fn gateway_api_sends_the_stage_header_to_stage_and_the_rest_to_production() {
    for helm in common::helms() {
        let docs = Render::new(&helm)
            .set(&[
                "productionSlot=green",
                "green.enabled=true",
                "gatewayAPI.enabled=true",
                "gatewayAPI.parentRefs[0].name=public",
                "gatewayAPI.parentRefs[0].namespace=gateways",
                "gatewayAPI.hostnames[0]=web.example.com",
                "gatewayAPI.stageCookie=test=true",
            ])
            .docs();
        let route = get(&docs, "HTTPRoute", "web");
        assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(
            route["spec"]["parentRefs"],
            json!([{"name": "public", "namespace": "gateways"}])
        );
        assert_eq!(route["spec"]["hostnames"], json!(["web.example.com"]));
        let rules = route["spec"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 2, "{}", helm.name());

        assert_eq!(
            rules[0]["backendRefs"],
            json!([{"name": "web-stage", "port": 80}])
        );
        let matches = rules[0]["matches"].as_array().unwrap();
        assert_eq!(
            matches[0]["headers"],
            json!([{"type": "Exact", "name": "X-Stage", "value": "true"}]),
            "{}",
            helm.name()
        );
        assert_eq!(matches[1]["headers"][0]["type"], "RegularExpression");
        assert_eq!(matches[1]["headers"][0]["name"], "Cookie");
        assert!(matches[1]["headers"][0]["value"]
            .as_str()
            .unwrap()
            .contains("(test=true)"));

        assert_eq!(
            rules[1]["backendRefs"],
            json!([{"name": "web", "port": 80}])
        );
        assert_eq!(
            rules[1]["matches"],
            json!([{"path": {"type": "PathPrefix", "value": "/"}}])
        );
        // The stage Service is the blue slot here; the route names Services, not slots.
        assert_eq!(
            get(&docs, "Service", "web-stage")["spec"]["selector"],
            slot_selector("blue")
        );
    }
}

#[test]
fn api_versions_follow_the_kubernetes_version() {
    let on = [
        "green.enabled=true",
        "autoscaling.enabled=true",
        "podDisruptionBudget.enabled=true",
    ];
    let cases = [
        ("1.20.0", "autoscaling/v2beta2", "policy/v1beta1"),
        ("1.21.0", "autoscaling/v2beta2", "policy/v1"),
        ("1.23.0", "autoscaling/v2", "policy/v1"),
        ("1.33.0", "autoscaling/v2", "policy/v1"),
    ];
    for helm in common::helms() {
        for (kube, hpa, pdb) in cases {
            let docs = Render::new(&helm)
                .set(&on)
                .arg(&["--kube-version", kube])
                .docs();
            let hpas = of_kind(&docs, "HorizontalPodAutoscaler");
            let pdbs = of_kind(&docs, "PodDisruptionBudget");
            assert_eq!((hpas.len(), pdbs.len()), (2, 2));
            for d in hpas {
                assert_eq!(d["apiVersion"], hpa, "{} kube {kube}", helm.name());
            }
            for d in pdbs {
                assert_eq!(d["apiVersion"], pdb, "{} kube {kube}", helm.name());
            }
        }
        let failure = Render::new(&helm)
            .arg(&["--kube-version", "1.19.0"])
            .failure();
        assert!(failure.contains(">=1.20.0-0"), "{}: {failure}", helm.name());
    }
}

#[test]
fn pdb_uses_max_unavailable_when_set() {
    for helm in common::helms() {
        let docs = Render::new(&helm)
            .set(&[
                "podDisruptionBudget.enabled=true",
                "podDisruptionBudget.maxUnavailable=25%",
            ])
            .docs();
        let pdb = get(&docs, "PodDisruptionBudget", "web-blue");
        assert_eq!(pdb["spec"]["maxUnavailable"], "25%", "{}", helm.name());
        assert!(pdb["spec"].get("minAvailable").is_none());
    }
}

fn assert_one_line_failure(helm: &Helm, stderr: &str, message: &str) {
    assert!(
        stderr.lines().any(|l| l.contains(message)),
        "{}: expected a line with {message:?} in: {stderr}",
        helm.name()
    );
}

#[test]
fn guards_fail_with_one_line_naming_the_value() {
    for helm in common::helms() {
        // The schema refuses first; the template guard stays as the fallback when it is skipped.
        let stderr = Render::new(&helm).set(&["productionSlot=purple"]).failure();
        let line = stderr
            .lines()
            .find(|l| l.contains("productionSlot"))
            .unwrap_or_else(|| panic!("{stderr}"));
        assert!(
            line.contains("blue") && line.contains("green"),
            "{}: {stderr}",
            helm.name()
        );

        let stderr = Render::new(&helm)
            .set(&["productionSlot=purple"])
            .arg(&["--skip-schema-validation"])
            .failure();
        assert_one_line_failure(
            &helm,
            &stderr,
            r#"productionSlot is "purple": it must be blue or green"#,
        );

        let stderr = Render::new(&helm).set(&["productionSlot=green"]).failure();
        assert_one_line_failure(
            &helm,
            &stderr,
            "productionSlot is green but green.enabled is false: production would route to no pods; enable green or set productionSlot=blue",
        );
        let stderr = Render::new(&helm).set(&["blue.enabled=false"]).failure();
        assert_one_line_failure(
            &helm,
            &stderr,
            "productionSlot is blue but blue.enabled is false: production would route to no pods; enable blue or set productionSlot=green",
        );

        let stderr = Render::new(&helm)
            .set(&["gatewayAPI.enabled=true"])
            .failure();
        assert_one_line_failure(
            &helm,
            &stderr,
            "gatewayAPI.enabled is true but gatewayAPI.parentRefs is empty",
        );

        let stderr = Render::new(&helm)
            .set(&["istio.enabled=true", "istio.gateway.create=false"])
            .failure();
        assert_one_line_failure(
            &helm,
            &stderr,
            "istio.gateway.create is false but istio.gateway.name is empty",
        );
    }
}

#[test]
fn schema_rejects_bad_types_and_ranges() {
    let cases: &[(&[&str], &str)] = &[
        (&["blue.replicaCount=-1"], "replicaCount"),
        (&["replicaCount=-1"], "replicaCount"),
        (&["blue.enabled=notabool"], "enabled"),
        (&["green.enabled=yes please"], "enabled"),
        (&["image.tag=2"], "tag"),
        (&["blue.enable=true"], "enable"),
        (&["service.port=0"], "port"),
        // Typos anywhere in what the chart owns.
        (&["replicaCont=3"], "replicaCont"),
        (&["blue.replicaCont=3"], "replicaCont"),
        (&["image.tga=v1"], "tga"),
        (&["config.filez.a=b"], "filez"),
        (&["green.config.evn.a=b"], "evn"),
        (&["migrations.enabeld=true"], "enabeld"),
        (&["autoscaling.minReplica=2"], "minReplica"),
        (&["service.prot=80"], "prot"),
        (&["metrics.serviceMonitor.enable=true"], "enable"),
        (
            &["extraPorts[0].name=m,extraPorts[0].containerPrt=9"],
            "containerPrt",
        ),
        (
            &["extraPorts[0].name=m,extraPorts[0].containerPort=9,extraPorts[0].protocol=tcp"],
            "protocol",
        ),
        (&["extraEnv[0].nam=X"], "nam"),
        (&["ingress.hots=x"], "hots"),
        (&["podDisruptionBudget.minAvailabel=1"], "minAvailabel"),
        // Workers and CronJobs, shared and per slot.
        (&["workers.consumer.replica=2"], "replica"),
        (&["green.workers.consumer.replica=2"], "replica"),
        (&["workers.consumer.autoscaling.enable=true"], "enable"),
        (&["workers.consumer.handover=later"], "handover"),
        // handover belongs to the worker, not to one slot.
        (&["blue.workers.consumer.handover=overlap"], "handover"),
        (&["workers.consumer.stageReplicas=-1"], "stageReplicas"),
        (&["workers.Consumer.command[0]=x"], "Consumer"),
        (&["workers.migration.command[0]=x"], "migration"),
        (&["heldWorkers=consumer"], "heldWorkers"),
        (
            &["cronJobs.x.schedule=@daily,cronJobs.x.suspend=true"],
            "suspend",
        ),
        (&["blue.cronJobs.x.suspend=false"], "suspend"),
        (&["cronJobs.x.command[0]=report"], "schedule"),
        (
            &["cronJobs.x.schedule=@daily,cronJobs.x.concurrencyPolicy=Never"],
            "concurrencyPolicy",
        ),
        (
            &["cronJobs.x.schedule=@daily,cronJobs.x.shedule=@hourly"],
            "shedule",
        ),
    ];
    for helm in common::helms() {
        for (sets, key) in cases {
            let stderr = Render::new(&helm).set(sets).failure();
            assert!(
                stderr.contains("schema"),
                "{} {sets:?}: {stderr}",
                helm.name()
            );
            assert!(stderr.contains(key), "{} {sets:?}: {stderr}", helm.name());
        }
    }
}

#[test]
fn helm_lint_strict_passes() {
    let all_on = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(all_on.path(), ALL_ON).unwrap();
    let example = example_app();
    for helm in common::helms() {
        let chart = common::chart_dir();
        let chart = chart.to_str().unwrap();
        helm.run(&["lint", "--strict", chart]);
        helm.run(&[
            "lint",
            "--strict",
            chart,
            "-f",
            all_on.path().to_str().unwrap(),
        ]);
        helm.run(&["lint", "--strict", chart, "-f", example.to_str().unwrap()]);
        helm.run(&[
            "lint",
            "--strict",
            chart,
            "--set",
            "productionSlot=green,green.enabled=true,blue.enabled=false",
        ]);
    }
}

/// Renders worth checking for object-wide invariants.
fn variants(helm: &Helm) -> Vec<Vec<Value>> {
    vec![
        Render::new(helm).docs(),
        Render::new(helm).values(ALL_ON).docs(),
        Render::new(helm)
            .values(ALL_ON)
            .set(&["productionSlot=green"])
            .kube("1.20.0")
            .docs(),
        Render::new(helm)
            .file(&example_app())
            .set(EXAMPLE_BOTH_SLOTS)
            .docs(),
    ]
}

#[test]
fn the_role_never_appears_in_a_pod_template() {
    for helm in common::helms() {
        for docs in variants(&helm) {
            for d in &docs {
                let template = if kind_of(d) == "CronJob" {
                    &d["spec"]["jobTemplate"]
                } else {
                    &d["spec"]["template"]
                };
                if template.is_null() {
                    continue;
                }
                let text = template.to_string();
                assert!(
                    !text.contains("bgslot/role"),
                    "{} {}",
                    helm.name(),
                    name_of(d)
                );
                assert!(
                    !text.contains("production") && !text.contains("stage"),
                    "{} {}",
                    helm.name(),
                    name_of(d)
                );
            }
            for pod in of_kind(&docs, "Pod") {
                assert!(pod["metadata"]["labels"].get("bgslot/role").is_none());
            }
        }
    }
}

fn collect_ports<'d>(v: &'d Value, out: &mut Vec<&'d Value>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if k == "ports" {
                    if let Some(list) = child.as_array() {
                        out.extend(list.iter());
                    }
                }
                collect_ports(child, out);
            }
        }
        Value::Array(list) => list.iter().for_each(|c| collect_ports(c, out)),
        _ => {}
    }
}

#[test]
fn every_service_and_container_port_states_tcp() {
    for helm in common::helms() {
        for docs in variants(&helm) {
            for d in docs.iter().filter(|d| {
                matches!(
                    kind_of(d),
                    "Service" | "Deployment" | "Pod" | "Job" | "CronJob"
                )
            }) {
                let mut ports = Vec::new();
                collect_ports(d, &mut ports);
                // A worker serves nothing: its Deployment declares no port.
                if matches!(kind_of(d), "Service" | "Deployment") && !is_workload(d) {
                    assert!(!ports.is_empty(), "{} {}", helm.name(), name_of(d));
                }
                if is_workload(d) {
                    assert!(ports.is_empty(), "{} {}", helm.name(), name_of(d));
                }
                for p in ports {
                    assert_eq!(p["protocol"], "TCP", "{} {}: {p}", helm.name(), name_of(d));
                }
            }
        }
    }
}

#[test]
fn every_object_has_the_standard_labels() {
    for helm in common::helms() {
        for docs in variants(&helm) {
            for d in &docs {
                let labels = &d["metadata"]["labels"];
                assert_eq!(
                    labels["helm.sh/chart"],
                    "bgslot-0.3.0",
                    "{} {}",
                    helm.name(),
                    name_of(d)
                );
                if is_workload(d) {
                    // Workers' and CronJobs' objects leave the name out, so nothing that finds
                    // the web by it finds them.
                    assert!(
                        labels.get("app.kubernetes.io/name").is_none(),
                        "{} {}",
                        helm.name(),
                        name_of(d)
                    );
                } else {
                    assert_eq!(labels["app.kubernetes.io/name"], "bgslot");
                }
                assert_eq!(labels["app.kubernetes.io/instance"], REL);
                assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm");
                assert!(labels["app.kubernetes.io/version"].is_string());
            }
        }
    }
}

#[test]
fn test_hook_checks_production_and_stage_when_stage_runs() {
    for helm in common::helms() {
        let script = |docs: &[Value]| {
            let pods = of_kind(docs, "Pod");
            assert_eq!(pods.len(), 1);
            let pod = pods[0];
            assert_eq!(pod["metadata"]["annotations"]["helm.sh/hook"], "test");
            assert_eq!(pod["spec"]["restartPolicy"], "Never");
            pod["spec"]["containers"][0]["args"][0]
                .as_str()
                .unwrap()
                .to_string()
        };
        let alone = script(&Render::new(&helm).docs());
        assert!(alone.contains("http://web:80/"), "{alone}");
        assert!(!alone.contains("web-stage"), "{alone}");

        let both = script(&Render::new(&helm).set(&["green.enabled=true"]).docs());
        assert!(
            both.contains("http://web:80/") && both.contains("http://web-stage:80/"),
            "{both}"
        );
    }
}

fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

fn labels_of(doc: &Value) -> &Value {
    &doc["metadata"]["labels"]
}

/// Whether every `key: value` of `selector` is among `labels`: what a Service, Deployment or PDB
/// selector does with a pod's labels.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";
const DIGEST2: &str = "sha256:00000000000000000000000000000000000000000000000000000000000000ff";

#[test]
fn pod_spec_knobs_render_with_kubernetes_field_names() {
    for helm in common::helms() {
        let docs = Render::new(&helm).values(ALL_ON).docs();
        let who = helm.name();
        for slot in ["blue", "green"] {
            let d = get(&docs, "Deployment", &format!("web-{slot}"));
            let spec = pod_spec(d);
            let c = container(d);
            let image = format!("nginx:1.27@{DIGEST}");
            assert_eq!(c["image"], image.as_str(), "{who} {slot}");
            assert_eq!(c["command"], json!(["/bin/server"]), "{who} {slot}");
            assert_eq!(c["args"], json!(["--listen=:80"]), "{who} {slot}");
            assert_eq!(
                c["ports"],
                json!([
                    {"name": "http", "containerPort": 80, "protocol": "TCP"},
                    {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
                ]),
                "{who} {slot}"
            );
            let env = c["env"].as_array().expect("env list");
            assert!(
                env.contains(&json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})),
                "{who} {slot}: {env:?}"
            );
            assert!(
                env.contains(&json!({"name": "SHARED", "value": "1"})),
                "{who} {slot}"
            );
            assert_eq!(
                c["envFrom"],
                json!([
                    {"secretRef": {"name": "external"}},
                    {"configMapRef": {"name": format!("web-{slot}-config-env")}},
                    {"secretRef": {"name": format!("web-{slot}-secret-env")}},
                ]),
                "{who} {slot}"
            );
            assert_eq!(
                c["volumeMounts"],
                json!([
                    {"name": "config-files", "mountPath": "/etc/web", "readOnly": true},
                    {"name": "cache", "mountPath": "/cache"},
                ]),
                "{who} {slot}"
            );
            assert_eq!(
                spec["volumes"],
                json!([
                    {"name": "config-files", "configMap": {"name": format!("web-{slot}-config-files")}},
                    {"name": "cache", "emptyDir": {}},
                ]),
                "{who} {slot}"
            );
            // Templated containers see the slot they are rendered for.
            assert_eq!(
                spec["initContainers"],
                json!([{"name": "init", "image": image, "command": ["/bin/server", "init"]}]),
                "{who} {slot}"
            );
            assert_eq!(
                spec["containers"][1],
                json!({
                    "name": "proxy",
                    "image": "envoyproxy/envoy:v1.31.0",
                    "ports": [{"name": "admin", "containerPort": 9901, "protocol": "TCP"}],
                    "env": [{"name": "SLOT", "value": slot}],
                }),
                "{who} {slot}"
            );
            assert_eq!(spec["containers"].as_array().unwrap().len(), 2);
            assert_eq!(spec["priorityClassName"], "high", "{who} {slot}");
            assert_eq!(d["spec"]["minReadySeconds"], 5, "{who} {slot}");
            assert_eq!(d["spec"]["revisionHistoryLimit"], 3, "{who} {slot}");
            assert_eq!(spec["imagePullSecrets"], json!([{"name": "regcred"}]));
            assert_eq!(spec["nodeSelector"], json!({"disk": "ssd"}));
            assert_eq!(
                spec["tolerations"],
                json!([{"key": "dedicated", "operator": "Exists"}])
            );
            assert_eq!(
                spec["topologySpreadConstraints"][0]["topologyKey"],
                "kubernetes.io/hostname"
            );
            assert_eq!(c["resources"], json!({"limits": {"cpu": "500m"}}));
            let annotations = &d["spec"]["template"]["metadata"]["annotations"];
            assert_eq!(annotations["team"], "web", "{who} {slot}");
            let checksum = annotations["checksum/config"].as_str().unwrap_or_default();
            assert!(
                checksum.len() == 64 && checksum.chars().all(|c| c.is_ascii_hexdigit()),
                "{who} {slot}: checksum/config {checksum:?}"
            );
            assert_eq!(
                d["spec"]["template"]["metadata"]["labels"]["tier"],
                "frontend"
            );
        }
    }
}

#[test]
fn extra_ports_reach_the_container_and_both_main_services() {
    for helm in common::helms() {
        let who = helm.name();
        let docs = Render::new(&helm)
            .values(
                "green: {enabled: true}\nextraPorts:\n  - {name: metrics, containerPort: 9090}\n  - {name: dns, containerPort: 5353, servicePort: 53, protocol: UDP}\n",
            )
            .docs();
        for slot in ["blue", "green"] {
            assert_eq!(
                container(get(&docs, "Deployment", &format!("web-{slot}")))["ports"],
                json!([
                    {"name": "http", "containerPort": 80, "protocol": "TCP"},
                    {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
                    {"name": "dns", "containerPort": 5353, "protocol": "UDP"},
                ]),
                "{who} {slot}"
            );
        }
        for svc in ["web", "web-stage"] {
            assert_eq!(
                get(&docs, "Service", svc)["spec"]["ports"],
                json!([
                    {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                    {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"},
                    {"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP"},
                ]),
                "{who} {svc}"
            );
        }

        let stderr = Render::new(&helm)
            .values("extraPorts: [{name: http, containerPort: 9090}]\n")
            .failure();
        assert_one_line_failure(
            &helm,
            &stderr,
            "extraPorts has the port name \"http\" twice",
        );
        let stderr = Render::new(&helm)
            .values("extraPorts: [{name: alt, containerPort: 80}]\n")
            .failure();
        assert_one_line_failure(
            &helm,
            &stderr,
            "extraPorts alt: containerPort 80/TCP is already used",
        );
        let stderr = Render::new(&helm)
            .values("extraPorts: [{name: alt, containerPort: 8080, servicePort: 80}]\n")
            .failure();
        assert_one_line_failure(
            &helm,
            &stderr,
            "extraPorts alt: servicePort 80/TCP is already used",
        );
    }
}

#[test]
fn pre_stop_uses_the_native_sleep_action_where_the_cluster_serves_it() {
    for helm in common::helms() {
        let who = helm.name();
        let lifecycle =
            |docs: &[Value]| container(get(docs, "Deployment", "web-blue"))["lifecycle"].clone();
        for kube in ["1.20.0", "1.29.5"] {
            let docs = Render::new(&helm).kube(kube).docs();
            assert_eq!(
                lifecycle(&docs),
                json!({"preStop": {"exec": {"command": ["sleep", "5"]}}}),
                "{who} kube {kube}"
            );
        }
        for kube in ["1.30.0", "1.37.0"] {
            let docs = Render::new(&helm).kube(kube).docs();
            assert_eq!(
                lifecycle(&docs),
                json!({"preStop": {"sleep": {"seconds": 5}}}),
                "{who} kube {kube}"
            );
        }
        // `lifecycle` replaces the default entirely, on every version.
        for kube in ["1.20.0", "1.33.0"] {
            let docs = Render::new(&helm)
                .values("lifecycle:\n  preStop:\n    httpGet: {path: /drain, port: http}\n")
                .kube(kube)
                .docs();
            assert_eq!(
                lifecycle(&docs),
                json!({"preStop": {"httpGet": {"path": "/drain", "port": "http"}}}),
                "{who} kube {kube}"
            );
        }
        let docs = Render::new(&helm).set(&["preStopSleepSeconds=0"]).docs();
        assert!(lifecycle(&docs).is_null(), "{who}");
    }
}

#[test]
fn an_image_digest_pins_the_slot_image() {
    // (what, values, green's image)
    let cases = [
        (
            "the shared digest with the shared tag",
            format!("image: {{digest: \"{DIGEST}\"}}\ngreen: {{enabled: true}}"),
            format!("nginx:1.27@{DIGEST}"),
        ),
        (
            "the shared digest alone",
            format!("image: {{tag: \"\", digest: \"{DIGEST}\"}}\ngreen: {{enabled: true}}"),
            format!("nginx@{DIGEST}"),
        ),
        (
            "a slot's own tag never runs under the shared digest",
            format!("image: {{digest: \"{DIGEST}\"}}\ngreen: {{enabled: true, image: {{tag: v2}}}}"),
            "nginx:v2".to_string(),
        ),
        (
            "a slot's own digest alone",
            format!("green: {{enabled: true, image: {{digest: \"{DIGEST2}\"}}}}"),
            format!("nginx@{DIGEST2}"),
        ),
        (
            "a slot's repository, tag and digest",
            format!("green: {{enabled: true, image: {{repository: registry.example/web, tag: v2, digest: \"{DIGEST2}\"}}}}"),
            format!("registry.example/web:v2@{DIGEST2}"),
        ),
    ];
    for helm in common::helms() {
        for (what, values, green) in &cases {
            let docs = Render::new(&helm).values(values).docs();
            assert_eq!(
                container(get(&docs, "Deployment", "web-green"))["image"],
                green.as_str(),
                "{} {what}",
                helm.name()
            );
        }
        let stderr = Render::new(&helm)
            .set(&["image.digest=sha256:not-hex"])
            .failure();
        assert!(
            stderr.contains("schema") && stderr.contains("digest"),
            "{}: {stderr}",
            helm.name()
        );
    }
}

#[test]
fn env_merges_shared_and_slot_values_without_repeating_a_name() {
    let values = r#"
env: {A: shared, B: shared, NUM: 10000000}
extraEnv:
  - {name: B, value: shared-extra}
  - {name: C, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
green:
  enabled: true
  env: {B: green, D: green}
  extraEnv:
    - {name: C, value: green-extra}
    - {name: E, value: "$(A)-e"}
"#;
    for helm in common::helms() {
        let docs = Render::new(&helm).values(values).docs();
        let env =
            |slot: &str| container(get(&docs, "Deployment", &format!("web-{slot}")))["env"].clone();
        assert_eq!(
            env("blue"),
            json!([
                {"name": "A", "value": "shared"},
                {"name": "NUM", "value": "10000000"},
                {"name": "B", "value": "shared-extra"},
                {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ]),
            "{}: extraEnv wins over env and follows it in list order",
            helm.name()
        );
        assert_eq!(
            env("green"),
            json!([
                {"name": "A", "value": "shared"},
                {"name": "D", "value": "green"},
                {"name": "NUM", "value": "10000000"},
                {"name": "B", "value": "green"},
                {"name": "C", "value": "green-extra"},
                {"name": "E", "value": "$(A)-e"},
            ]),
            "{}: the slot's values win over the shared ones, each name once",
            helm.name()
        );
    }
}

/// Renders with both slots and shared config, then again with one per-slot override on green:
/// blue's objects stay identical, green's Deployment changes as the override says.
#[test]
fn every_per_slot_override_changes_only_its_slot() {
    let base = r#"
green: {enabled: true}
migrations: {enabled: true, command: [migrate]}
env: {A: shared}
command: [/bin/server]
args: [--shared]
resources: {limits: {cpu: "1"}}
podAnnotations: {team: web}
config:
  env: {MODE: shared}
  files: {app.conf: shared}
secretEnv: {TOKEN: shared}
"#;
    // (a --set on green, what green's Deployment shows)
    type Check = fn(&Value) -> bool;
    let cases: &[(&str, Check)] = &[
        ("green.image.repository=registry.example/web", |d| {
            container(d)["image"] == "registry.example/web:1.27"
        }),
        ("green.image.tag=v2", |d| container(d)["image"] == "nginx:v2"),
        (
            "green.image.digest=sha256:00000000000000000000000000000000000000000000000000000000000000ff",
            |d| container(d)["image"] == format!("nginx@{DIGEST2}"),
        ),
        ("green.image.pullPolicy=Always", |d| {
            container(d)["imagePullPolicy"] == "Always"
        }),
        ("green.replicaCount=5", |d| d["spec"]["replicas"] == 5),
        ("green.env.A=green", |d| {
            container(d)["env"] == json!([{"name": "A", "value": "green"}])
        }),
        ("green.extraEnv[0].name=X,green.extraEnv[0].value=y", |d| {
            container(d)["env"].as_array().unwrap().contains(&json!({"name": "X", "value": "y"}))
        }),
        ("green.envFrom[0].secretRef.name=green-only", |d| {
            container(d)["envFrom"][0] == json!({"secretRef": {"name": "green-only"}})
        }),
        ("green.command[0]=/bin/next", |d| {
            container(d)["command"] == json!(["/bin/next"])
        }),
        ("green.args[0]=--green", |d| container(d)["args"] == json!(["--green"])),
        ("green.resources.requests.memory=1Gi", |d| {
            container(d)["resources"] == json!({"limits": {"cpu": "1"}, "requests": {"memory": "1Gi"}})
        }),
        ("green.podAnnotations.canary=yes", |d| {
            let a = &d["spec"]["template"]["metadata"]["annotations"];
            a["canary"] == "yes" && a["team"] == "web"
        }),
        ("green.config.env.MODE=green", |d| {
            d["spec"]["template"]["metadata"]["annotations"]["checksum/config"].is_string()
        }),
        ("green.config.files.app\\.conf=green", |d| {
            d["spec"]["template"]["metadata"]["annotations"]["checksum/config"].is_string()
        }),
        ("green.secretEnv.TOKEN=green", |d| {
            d["spec"]["template"]["metadata"]["annotations"]["checksum/config"].is_string()
        }),
    ];
    for helm in common::helms() {
        let who = helm.name();
        let before = Render::new(&helm).values(base).docs();
        let blue_objects = |docs: &[Value]| -> Vec<Value> {
            docs.iter()
                .filter(|d| labels_of(d)["bgslot/slot"] == "blue")
                .cloned()
                .collect()
        };
        let green_before = get(&before, "Deployment", "web-green").clone();
        assert_eq!(
            green_before,
            get(&before, "Deployment", "web-blue")
                .clone()
                .pipe(|mut d| {
                    rename_slot(&mut d, "blue", "green");
                    d
                }),
            "{who}: without overrides both slots render alike"
        );
        for (set, check) in cases {
            let after = Render::new(&helm).values(base).set(&[set]).docs();
            assert_eq!(
                blue_objects(&before),
                blue_objects(&after),
                "{who}: --set {set} changed a blue object"
            );
            let green = get(&after, "Deployment", "web-green");
            assert_ne!(*green, green_before, "{who}: --set {set} left green alone");
            assert!(check(green), "{who}: --set {set}: {green:#}");
        }
        // Config overrides land in green's own objects.
        let after = Render::new(&helm)
            .values(base)
            .set(&[
                "green.config.env.MODE=green",
                "green.config.files.app\\.conf=green",
                "green.secretEnv.TOKEN=green",
            ])
            .docs();
        assert_eq!(
            get(&after, "ConfigMap", "web-green-config-env")["data"],
            json!({"MODE": "green"})
        );
        assert_eq!(
            get(&after, "ConfigMap", "web-green-config-files")["data"],
            json!({"app.conf": "green"})
        );
        assert_eq!(
            get(&after, "Secret", "web-green-secret-env")["data"],
            json!({"TOKEN": "Z3JlZW4="})
        );
        assert_eq!(
            get(&after, "ConfigMap", "web-blue-config-env")["data"],
            json!({"MODE": "shared"})
        );
    }
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl Pipe for Value {}

/// Replaces every string `from` (and "<x>-from" names) with `to`, to compare two slots' objects.
fn rename_slot(v: &mut Value, from: &str, to: &str) {
    match v {
        Value::String(s) => {
            if s == from {
                *s = to.to_string();
            } else if s.contains(&format!("-{from}")) {
                *s = s.replace(&format!("-{from}"), &format!("-{to}"));
            }
        }
        Value::Array(list) => list.iter_mut().for_each(|c| rename_slot(c, from, to)),
        Value::Object(map) => map.values_mut().for_each(|c| rename_slot(c, from, to)),
        _ => {}
    }
}

#[test]
fn config_objects_belong_to_their_slot() {
    let values = r#"
green:
  enabled: true
  config:
    env: {EXTRA: "1"}
    files: {green.txt: only green}
  secretEnv: {TOKEN: green-token}
config:
  env: {MODE: fast, COUNT: 3, BIG: 123456789012, RATIO: 0.5}
  files: {app.yaml: "listen: 80\n"}
secretEnv: {TOKEN: shared-token, KEY: k}
"#;
    for helm in common::helms() {
        let who = helm.name();
        let docs = Render::new(&helm).values(values).docs();
        assert_eq!(
            names(&docs, "ConfigMap"),
            [
                "web-blue-config-env",
                "web-blue-config-files",
                "web-green-config-env",
                "web-green-config-files"
            ],
            "{who}"
        );
        assert_eq!(
            names(&docs, "Secret"),
            ["web-blue-secret-env", "web-green-secret-env"],
            "{who}"
        );
        for d in of_kind(&docs, "ConfigMap")
            .into_iter()
            .chain(of_kind(&docs, "Secret"))
        {
            let slot = if name_of(d).starts_with("web-blue") {
                "blue"
            } else {
                "green"
            };
            assert_eq!(labels_of(d)["bgslot/slot"], slot, "{who} {}", name_of(d));
            assert_eq!(labels_of(d)["app.kubernetes.io/instance"], REL);
        }
        assert_eq!(
            get(&docs, "ConfigMap", "web-blue-config-env")["data"],
            json!({"MODE": "fast", "COUNT": "3", "BIG": "123456789012", "RATIO": "0.5"}),
            "{who}"
        );
        assert_eq!(
            get(&docs, "ConfigMap", "web-green-config-env")["data"],
            json!({"MODE": "fast", "COUNT": "3", "BIG": "123456789012", "RATIO": "0.5", "EXTRA": "1"}),
            "{who}"
        );
        assert_eq!(
            get(&docs, "ConfigMap", "web-green-config-files")["data"],
            json!({"app.yaml": "listen: 80\n", "green.txt": "only green"}),
            "{who}"
        );
        let secret = get(&docs, "Secret", "web-green-secret-env");
        assert_eq!(secret["type"], "Opaque");
        // base64 of "green-token" and "k": values only travel encoded, as Kubernetes stores them.
        assert_eq!(
            secret["data"],
            json!({"TOKEN": "Z3JlZW4tdG9rZW4=", "KEY": "aw=="}),
            "{who}"
        );
        let checksum = |slot: &str| {
            get(&docs, "Deployment", &format!("web-{slot}"))["spec"]["template"]["metadata"]
                ["annotations"]["checksum/config"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_ne!(checksum("blue"), checksum("green"), "{who}");

        // No config: no objects, no checksum, no envFrom or volumes.
        let docs = Render::new(&helm).set(&["green.enabled=true"]).docs();
        assert!(
            of_kind(&docs, "ConfigMap").is_empty() && of_kind(&docs, "Secret").is_empty(),
            "{who}"
        );
        let d = get(&docs, "Deployment", "web-green");
        assert!(
            d["spec"]["template"]["metadata"]
                .get("annotations")
                .is_none(),
            "{who}"
        );
        assert!(
            container(d).get("envFrom").is_none() && pod_spec(d).get("volumes").is_none(),
            "{who}"
        );

        // A disabled slot has no config objects.
        let docs = Render::new(&helm)
            .values(values)
            .set(&["green.enabled=false"])
            .docs();
        assert_eq!(names(&docs, "Secret"), ["web-blue-secret-env"], "{who}");
    }
}

#[test]
fn a_config_change_in_one_slot_leaves_every_object_of_the_other_slot_alone() {
    let base = "green: {enabled: true}\nmigrations: {enabled: true, command: [migrate]}\nconfig: {files: {app.conf: one}}\n";
    for helm in common::helms() {
        let who = helm.name();
        let before = Render::new(&helm).values(base).docs();
        let after = Render::new(&helm)
            .values(base)
            .set(&["green.config.files.app\\.conf=two"])
            .docs();
        let of_slot = |docs: &[Value], slot: &str| -> Vec<Value> {
            docs.iter()
                .filter(|d| labels_of(d)["bgslot/slot"] == slot)
                .cloned()
                .collect()
        };
        assert_eq!(of_slot(&before, "blue"), of_slot(&after, "blue"), "{who}");
        let checksum = |docs: &[Value]| {
            get(docs, "Deployment", "web-green")["spec"]["template"]["metadata"]["annotations"]
                ["checksum/config"]
                .clone()
        };
        assert_ne!(
            checksum(&before),
            checksum(&after),
            "{who}: green's pods must restart"
        );
        assert_ne!(
            names(&before, "Job")
                .iter()
                .find(|n| n.starts_with("web-green-")),
            names(&after, "Job")
                .iter()
                .find(|n| n.starts_with("web-green-")),
            "{who}: green's migration runs again with the new config"
        );
    }
}

#[test]
fn a_flip_changes_no_object_a_slot_owns() {
    for helm in common::helms() {
        let who = helm.name();
        for (what, blue, green) in [
            (
                "ALL_ON",
                Render::new(&helm).values(ALL_ON).docs(),
                Render::new(&helm)
                    .values(ALL_ON)
                    .set(&["productionSlot=green"])
                    .docs(),
            ),
            (
                "the example app",
                Render::new(&helm)
                    .file(&example_app())
                    .set(EXAMPLE_BOTH_SLOTS)
                    .docs(),
                Render::new(&helm)
                    .file(&example_app())
                    .set(EXAMPLE_BOTH_SLOTS)
                    .set(&["productionSlot=green"])
                    .docs(),
            ),
        ] {
            // Workers and CronJobs have their own test of what a flip changes in them
            // (a_flip_moves_worker_replicas_and_cron_suspend_and_nothing_else).
            let owned = |docs: &[Value]| -> Vec<Value> {
                docs.iter()
                    .filter(|d| labels_of(d).get("bgslot/slot").is_some() && !is_workload(d))
                    .cloned()
                    .collect()
            };
            let owned_blue = owned(&blue);
            let kinds: std::collections::BTreeSet<&str> = owned_blue.iter().map(kind_of).collect();
            for kind in [
                "Deployment",
                "Job",
                "ConfigMap",
                "Secret",
                "HorizontalPodAutoscaler",
                "PodDisruptionBudget",
            ] {
                assert!(
                    kinds.contains(kind),
                    "{who} {what}: no {kind} among {kinds:?}"
                );
            }
            assert_eq!(owned_blue, owned(&green), "{who} {what}");
            // The flip did move the Services.
            assert_ne!(
                get(&blue, "Service", "web")["spec"]["selector"],
                get(&green, "Service", "web")["spec"]["selector"],
                "{who} {what}"
            );
        }
    }
}

#[test]
fn extra_services_come_in_production_and_stage_pairs() {
    for helm in common::helms() {
        let who = helm.name();
        for (prod, stage) in [("blue", "green"), ("green", "blue")] {
            let set = format!("productionSlot={prod}");
            let docs = Render::new(&helm).values(ALL_ON).set(&[&set]).docs();
            assert_eq!(
                names(&docs, "Service"),
                ["web", "web-admin", "web-admin-stage", "web-stage"],
                "{who}"
            );
            for (name, role, slot) in [
                ("web-admin", "production", prod),
                ("web-admin-stage", "stage", stage),
            ] {
                let svc = get(&docs, "Service", name);
                assert_eq!(svc["spec"]["selector"], slot_selector(slot), "{who} {name}");
                assert_eq!(labels_of(svc)["bgslot/role"], role, "{who} {name}");
                assert_eq!(labels_of(svc)["bgslot/service"], "admin", "{who} {name}");
                assert_eq!(svc["metadata"]["annotations"], json!({"internal": "yes"}));
                assert_eq!(svc["spec"]["type"], "ClusterIP");
                assert_eq!(
                    svc["spec"]["ports"],
                    json!([{"name": "admin", "port": 9000, "targetPort": "metrics", "protocol": "TCP"}]),
                    "{who} {name}"
                );
            }
        }
        // targetPort defaults to the port.
        let docs = Render::new(&helm)
            .values("extraServices:\n  api:\n    type: NodePort\n    ports: [{name: api, port: 8080}]\n")
            .docs();
        let svc = get(&docs, "Service", "web-api");
        assert_eq!(svc["spec"]["type"], "NodePort");
        assert_eq!(
            svc["spec"]["ports"],
            json!([{"name": "api", "port": 8080, "targetPort": 8080, "protocol": "TCP"}]),
            "{who}"
        );

        for key in ["main", "stage", "admin-stage"] {
            let values = format!("extraServices:\n  {key}:\n    ports: [{{name: x, port: 1}}]\n");
            let stderr = Render::new(&helm).values(&values).failure();
            assert!(
                stderr.contains("schema") && stderr.contains(key),
                "{who} {key}: {stderr}"
            );
            let stderr = Render::new(&helm)
                .values(&values)
                .arg(&["--skip-schema-validation"])
                .failure();
            assert_one_line_failure(
                &helm,
                &stderr,
                &format!("extraServices.{key}: the names main and stage and names ending in -stage are reserved"),
            );
        }
        let stderr = Render::new(&helm)
            .values("extraServices:\n  api:\n    ports: []\n")
            .arg(&["--skip-schema-validation"])
            .failure();
        assert_one_line_failure(&helm, &stderr, "extraServices.api.ports is empty");
    }
}

#[test]
fn the_service_monitor_renders_where_the_api_is_served_or_when_forced() {
    for helm in common::helms() {
        let who = helm.name();
        let on = ["metrics.serviceMonitor.enabled=true"];
        let docs = Render::new(&helm).set(&on).docs();
        assert!(
            of_kind(&docs, "ServiceMonitor").is_empty(),
            "{who}: the API is not served"
        );

        let docs = Render::new(&helm)
            .set(&on)
            .arg(&["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"])
            .docs();
        assert_eq!(
            names(&docs, "ServiceMonitor"),
            ["web"],
            "{who}: the API is served"
        );

        let docs = Render::new(&helm)
            .values(ALL_ON)
            .set(&["metrics.serviceMonitor.labels.release=prom"])
            .docs();
        let sm = get(&docs, "ServiceMonitor", "web");
        assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(labels_of(sm)["release"], "prom", "{who}");
        assert_eq!(
            sm["spec"]["selector"],
            json!({"matchLabels": {"app.kubernetes.io/instance": REL, "bgslot/service": "main"}}),
            "{who}: the main production and stage Services, so both slots"
        );
        let endpoint = &sm["spec"]["endpoints"][0];
        assert_eq!(endpoint["port"], "metrics", "{who}");
        assert_eq!(endpoint["path"], "/metrics");
        assert_eq!(
            endpoint["relabelings"],
            json!([
                {"sourceLabels": ["__meta_kubernetes_pod_label_bgslot_slot"], "targetLabel": "slot"},
                {"sourceLabels": ["__meta_kubernetes_service_label_bgslot_role"], "targetLabel": "role"},
            ]),
            "{who}"
        );
        // The ServiceMonitor selects exactly the two main Services.
        let selected: Vec<&str> = of_kind(&docs, "Service")
            .into_iter()
            .filter(|s| selects(&sm["spec"]["selector"]["matchLabels"], labels_of(s)))
            .map(name_of)
            .collect();
        assert_eq!(selected, ["web", "web-stage"], "{who}");

        let stderr = Render::new(&helm)
            .set(&[
                "metrics.serviceMonitor.enabled=true",
                "metrics.serviceMonitor.port=nope",
            ])
            .failure();
        assert_one_line_failure(
            &helm,
            &stderr,
            "metrics.serviceMonitor.port is \"nope\", which is no port of the main Services",
        );
    }
}

#[test]
fn extra_objects_render_as_templates() {
    for helm in common::helms() {
        let who = helm.name();
        let docs = Render::new(&helm).values(ALL_ON).docs();
        let cm = get(&docs, "ConfigMap", "web-extra");
        assert_eq!(cm["data"], json!({"release": REL}), "{who}");
        assert_eq!(labels_of(cm)["app.kubernetes.io/instance"], REL, "{who}");

        let docs = Render::new(&helm)
            .values("extraObjects:\n  - apiVersion: v1\n    kind: Secret\n    metadata: {name: \"{{ .Release.Name }}-creds\"}\n    stringData: {user: app}\n")
            .docs();
        assert_eq!(
            get(&docs, "Secret", "web-creds")["stringData"],
            json!({"user": "app"}),
            "{who}"
        );
    }
}

#[test]
fn migrations_run_as_a_job_per_slot_that_nothing_else_selects() {
    for helm in common::helms() {
        let who = helm.name();
        let docs = Render::new(&helm)
            .values(ALL_ON)
            .set(&["green.image.tag=v2", "green.image.digest="])
            .docs();
        let jobs = of_kind(&docs, "Job");
        assert_eq!(jobs.len(), 2, "{who}");
        for slot in ["blue", "green"] {
            let prefix = format!("web-{slot}-migrate-");
            let job = jobs
                .iter()
                .find(|j| name_of(j).starts_with(&prefix))
                .unwrap_or_else(|| panic!("{who}: no Job {prefix}*"));
            let hash = &name_of(job)[prefix.len()..];
            assert!(
                hash.len() == 10 && hash.chars().all(|c| c.is_ascii_hexdigit()),
                "{who}: {}",
                name_of(job)
            );
            assert_eq!(job["apiVersion"], "batch/v1");
            assert_eq!(labels_of(job)["bgslot/slot"], slot, "{who}");
            assert_eq!(
                labels_of(job)["app.kubernetes.io/component"],
                "migration",
                "{who}"
            );
            assert_eq!(labels_of(job)["app.kubernetes.io/instance"], REL, "{who}");
            let annotations = &job["metadata"]["annotations"];
            assert!(
                annotations.get("helm.sh/hook").is_none(),
                "{who}: a hook reruns at every upgrade"
            );
            let deploy = get(&docs, "Deployment", &format!("web-{slot}"));
            assert_eq!(
                annotations["bgslot/image"],
                container(deploy)["image"],
                "{who}"
            );
            assert_eq!(job["spec"]["backoffLimit"], 1);
            assert_eq!(job["spec"]["activeDeadlineSeconds"], 600);
            assert!(
                job["spec"].get("ttlSecondsAfterFinished").is_none(),
                "{who}: an expired Job would be created again, and rerun, by the next upgrade"
            );
            let pod_labels = &job["spec"]["template"]["metadata"]["labels"];
            assert_eq!(
                *pod_labels,
                json!({"app.kubernetes.io/instance": REL, "app.kubernetes.io/component": "migration", "bgslot/slot": slot}),
                "{who}"
            );
            let spec = pod_spec(job);
            assert_eq!(spec["restartPolicy"], "Never");
            let c = &spec["containers"][0];
            assert_eq!(c["name"], "migrate");
            assert_eq!(c["command"], json!(["/bin/server", "migrate"]));
            let app = container(deploy);
            for field in [
                "image",
                "env",
                "envFrom",
                "volumeMounts",
                "resources",
                "imagePullPolicy",
            ] {
                assert_eq!(
                    c[field], app[field],
                    "{who} {slot}: the Job's {field} is the slot's"
                );
            }
            assert_eq!(spec["volumes"], pod_spec(deploy)["volumes"], "{who}");
            assert_eq!(
                job["spec"]["template"]["metadata"]["annotations"]["checksum/config"],
                deploy["spec"]["template"]["metadata"]["annotations"]["checksum/config"],
                "{who}"
            );
        }
        // No Service, Deployment or PDB may count a migration pod as one of the slot's.
        let mut selectors: Vec<(String, &Value)> = Vec::new();
        for s in of_kind(&docs, "Service") {
            selectors.push((format!("Service {}", name_of(s)), &s["spec"]["selector"]));
        }
        for d in of_kind(&docs, "Deployment")
            .into_iter()
            .chain(of_kind(&docs, "PodDisruptionBudget"))
        {
            selectors.push((
                format!("{} {}", kind_of(d), name_of(d)),
                &d["spec"]["selector"]["matchLabels"],
            ));
        }
        assert!(selectors.len() >= 8, "{who}");
        for job in &jobs {
            let pod_labels = &job["spec"]["template"]["metadata"]["labels"];
            for (what, selector) in &selectors {
                assert!(
                    !selects(selector, pod_labels),
                    "{who}: {what} selects the pods of {}",
                    name_of(job)
                );
            }
        }

        let docs = Render::new(&helm).set(&["green.enabled=true"]).docs();
        assert!(
            of_kind(&docs, "Job").is_empty(),
            "{who}: migrations are off by default"
        );

        let stderr = Render::new(&helm)
            .set(&["migrations.enabled=true"])
            .failure();
        assert_one_line_failure(
            &helm,
            &stderr,
            "migrations.enabled is true but migrations.command and migrations.args are empty",
        );
    }
}

#[test]
fn a_migration_job_is_new_exactly_when_what_it_runs_changes() {
    let base = "green: {enabled: true, image: {tag: v2}}\nmigrations: {enabled: true, command: [migrate]}\n";
    let green_job = |docs: &[Value]| -> String {
        names(docs, "Job")
            .into_iter()
            .find(|n| n.starts_with("web-green-migrate-"))
            .expect("green's Job")
    };
    let mut by_helm = Vec::new();
    for helm in common::helms() {
        let who = helm.name();
        let name = green_job(&Render::new(&helm).values(base).docs());
        by_helm.push(name.clone());
        let with = |sets: &[&str]| green_job(&Render::new(&helm).values(base).set(sets).docs());
        for same in [
            &["productionSlot=green"][..],
            &["blue.image.tag=v9"],
            &["green.replicaCount=5"],
            &["podAnnotations.team=web"],
            &["autoscaling.enabled=true"],
        ] {
            assert_eq!(
                with(same),
                name,
                "{who}: {same:?} must keep green's finished Job"
            );
        }
        for changed in [
            &["green.image.tag=v3"][..],
            &["green.image.digest=sha256:00000000000000000000000000000000000000000000000000000000000000ff"],
            &["migrations.command[0]=other"],
            &["migrations.args[0]=--dry-run"],
            &["green.env.DB=other"],
            &["green.config.env.DB=other"],
            &["green.secretEnv.DB=other"],
        ] {
            assert_ne!(with(changed), name, "{who}: {changed:?} must make a new Job");
        }
    }
    assert_eq!(
        by_helm[0], by_helm[1],
        "Helm 3 and Helm 4 must name the Job alike"
    );
}

#[test]
fn every_kubernetes_version_from_1_20_to_1_37_renders_with_its_api_versions() {
    for helm in common::helms() {
        let who = helm.name();
        for minor in 20..=37 {
            let kube = format!("1.{minor}.0");
            for (what, docs) in [
                (
                    "ALL_ON",
                    Render::new(&helm).values(ALL_ON).kube(&kube).docs(),
                ),
                (
                    "the example app",
                    Render::new(&helm)
                        .file(&example_app())
                        .set(EXAMPLE_BOTH_SLOTS)
                        .kube(&kube)
                        .docs(),
                ),
            ] {
                let hpa = if minor >= 23 {
                    "autoscaling/v2"
                } else {
                    "autoscaling/v2beta2"
                };
                let pdb = if minor >= 21 {
                    "policy/v1"
                } else {
                    "policy/v1beta1"
                };
                assert_eq!(
                    of_kind(&docs, "HorizontalPodAutoscaler")
                        .into_iter()
                        .filter(|d| !is_workload(d))
                        .count(),
                    2,
                    "{who} {kube} {what}"
                );
                for d in of_kind(&docs, "HorizontalPodAutoscaler") {
                    assert_eq!(d["apiVersion"], hpa, "{who} {kube} {what}");
                }
                let cron = if minor >= 21 {
                    "batch/v1"
                } else {
                    "batch/v1beta1"
                };
                assert_eq!(
                    names(&docs, "CronJob").len(),
                    2,
                    "{who} {kube} {what}: one per slot"
                );
                for d in of_kind(&docs, "CronJob") {
                    assert_eq!(d["apiVersion"], cron, "{who} {kube} {what}");
                }
                assert!(
                    of_kind(&docs, "Deployment").into_iter().any(is_workload),
                    "{who} {kube} {what}: no worker"
                );
                for d in of_kind(&docs, "PodDisruptionBudget") {
                    assert_eq!(d["apiVersion"], pdb, "{who} {kube} {what}");
                }
                for d in of_kind(&docs, "Deployment")
                    .into_iter()
                    .filter(|d| !is_workload(d))
                {
                    let pre_stop = &container(d)["lifecycle"]["preStop"];
                    let native = minor >= 30;
                    assert_eq!(
                        pre_stop.get("sleep").is_some(),
                        native,
                        "{who} {kube} {what}: {pre_stop}"
                    );
                    assert_eq!(
                        pre_stop.get("exec").is_some(),
                        !native,
                        "{who} {kube} {what}: {pre_stop}"
                    );
                }
                assert_eq!(of_kind(&docs, "Job").len(), 2, "{who} {kube} {what}");
                assert_eq!(
                    of_kind(&docs, "Ingress")[0]["apiVersion"],
                    "networking.k8s.io/v1"
                );
            }
        }
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
        "kubernetes-validate 1.37.0 is not installed at {}: run testenv/prepare.sh (or scripts/test), \
         or set BGSLOT_KUBERNETES_VALIDATE to its path",
        path.display()
    );
    path
}

/// Kinds whose schemas are CRDs (Istio, Gateway API, Prometheus Operator): kubernetes-validate
/// only knows Kubernetes' own.
fn is_crd_kind(doc: &Value) -> bool {
    let api = doc["apiVersion"].as_str().unwrap_or_default();
    [
        "networking.istio.io/",
        "gateway.networking.k8s.io/",
        "monitoring.coreos.com/",
    ]
    .iter()
    .any(|g| api.starts_with(g))
}

#[test]
fn rendered_objects_pass_kubernetes_schema_validation_from_1_25_to_1_37() {
    let validate = kubernetes_validate();
    let dir = tempfile::tempdir().unwrap();
    for helm in common::helms() {
        let who = helm.name();
        for minor in 25..=37 {
            let kube = format!("1.{minor}.0");
            let mut docs = Render::new(&helm)
                .file(&example_app())
                .set(EXAMPLE_BOTH_SLOTS)
                .kube(&kube)
                .docs();
            docs.extend(Render::new(&helm).values(ALL_ON).kube(&kube).docs());
            if minor >= 27 {
                // timeZone renders only where the API serves it.
                docs.extend(
                    Render::new(&helm)
                        .values(ALL_ON)
                        .set(&["cronJobs.nightly-report.timeZone=Europe/Paris"])
                        .kube(&kube)
                        .docs()
                        .into_iter()
                        .filter(|d| kind_of(d) == "CronJob"),
                );
            }
            docs.retain(|d| !is_crd_kind(d));
            let file = dir.path().join(format!("{who}-{kube}.yaml"));
            let text: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
            std::fs::write(&file, text.join("\n---\n")).unwrap();
            let out = std::process::Command::new(&validate)
                .args(["--strict", "-k", &kube])
                .arg(&file)
                .output()
                .expect("run kubernetes-validate");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{who} kube {kube}: kubernetes-validate --strict failed:\n{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let passed = stdout
                .lines()
                .filter(|l| l.contains(" passed for resource "))
                .count();
            assert_eq!(
                passed,
                docs.len(),
                "{who} kube {kube}: every object is checked:\n{stdout}"
            );
        }
    }
}

/// The `## The chart` section of README.md: the paths named in the first column of its value table,
/// with `<slot>` standing for both blue and green.
fn readme_value_paths() -> std::collections::BTreeSet<String> {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let start = readme
        .find("\n## The chart\n")
        .expect("README has a `## The chart` section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..]
        .find("\n## ")
        .map(|i| i + 3)
        .unwrap_or(section.len())];
    // The value table is the one whose header starts with `| value |`.
    let table = section
        .lines()
        .skip_while(|l| !l.starts_with("| value |"))
        .take_while(|l| l.starts_with('|'));
    let mut paths = std::collections::BTreeSet::new();
    for line in table.filter(|l| l.starts_with("| `")) {
        let first = line.split('|').nth(1).unwrap_or_default();
        for (i, piece) in first.split('`').enumerate() {
            if i % 2 == 1 {
                if piece.contains("<slot>") {
                    paths.insert(piece.replace("<slot>", "blue"));
                    paths.insert(piece.replace("<slot>", "green"));
                } else {
                    paths.insert(piece.to_string());
                }
            }
        }
    }
    paths
}

/// Resolves `{"$ref": "#/definitions/x"}`.
fn resolve<'s>(schema: &'s Value, node: &'s Value) -> &'s Value {
    match node["$ref"].as_str() {
        Some(r) => resolve(
            schema,
            &schema["definitions"][r.trim_start_matches("#/definitions/")],
        ),
        None => node,
    }
}

/// Every value path the chart owns: into objects its schema closes (additionalProperties: false),
/// whose keys the chart defines; a free-form object (annotations, Kubernetes fields, config
/// contents) is one value.
fn value_paths(schema: &Value, node: &Value, prefix: &str, out: &mut Vec<String>) {
    let node = resolve(schema, node);
    let Some(props) = node["properties"]
        .as_object()
        .filter(|_| node["additionalProperties"] == false)
    else {
        out.push(prefix.to_string());
        return;
    };
    for (key, child) in props {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        value_paths(schema, child, &path, out);
    }
}

fn lookup<'v>(values: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(values, |v, key| v.get(key))
}

#[test]
fn the_readme_documents_every_value_and_values_yaml_sets_every_value() {
    let chart = common::chart_dir();
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(chart.join("values.schema.json")).unwrap())
            .unwrap();
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart.join("values.yaml")).unwrap())
            .unwrap();
    let mut paths = Vec::new();
    value_paths(&schema, &schema, "", &mut paths);
    // `global` is helm's, for subcharts; the chart reads nothing from it.
    paths.retain(|p| p != "global");
    assert!(paths.len() > 100, "{paths:?}");
    let documented = readme_value_paths();
    let missing: Vec<&String> = paths.iter().filter(|p| !documented.contains(*p)).collect();
    assert!(
        missing.is_empty(),
        "values missing from the README's chart table: {missing:?}"
    );
    let unset: Vec<&String> = paths
        .iter()
        .filter(|p| lookup(&values, p).is_none())
        .collect();
    assert!(
        unset.is_empty(),
        "values the schema knows but values.yaml does not list: {unset:?}"
    );
    // And straight from values.yaml, whatever the schema says: each key is documented itself or
    // inside a documented free-form value.
    let mut keys = Vec::new();
    yaml_keys(&values, "", &mut keys);
    let undocumented: Vec<&String> = keys
        .iter()
        .filter(|k| {
            let mut prefix = String::new();
            !k.split('.').any(|part| {
                if !prefix.is_empty() {
                    prefix.push('.');
                }
                prefix.push_str(part);
                documented.contains(&prefix)
            })
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "values.yaml keys missing from the README's chart table: {undocumented:?}"
    );
    let stale: Vec<&String> = documented.iter().filter(|p| !paths.contains(p)).collect();
    assert!(
        stale.is_empty(),
        "README chart table rows naming no value: {stale:?}"
    );
}

/// Every key path of a values document (maps only; lists and scalars end a path).
fn yaml_keys(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v.as_object() {
        Some(map) if !map.is_empty() => {
            for (k, child) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                yaml_keys(child, &path, out);
            }
        }
        _ if !prefix.is_empty() => out.push(prefix.to_string()),
        _ => {}
    }
}

/// Whether `doc` belongs to a worker or a CronJob (its own objects and the web's are told apart by
/// `bgslot/workload`).
fn is_workload(doc: &Value) -> bool {
    matches!(
        labels_of(doc)["bgslot/workload"].as_str(),
        Some("worker" | "cronjob")
    )
}

/// The pod template of a Deployment or a CronJob.
fn pod_template(doc: &Value) -> &Value {
    if kind_of(doc) == "CronJob" {
        &doc["spec"]["jobTemplate"]["spec"]["template"]
    } else {
        &doc["spec"]["template"]
    }
}

/// The paths where `a` and `b` differ ("spec.replicas"; a key only one side has counts).
fn diff_paths(a: &Value, b: &Value, prefix: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                diff_paths(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &path,
                    out,
                );
            }
        }
        _ if a == b => {}
        _ => out.push(prefix.to_string()),
    }
}

/// "KIND/NAME: path" for every difference between the slot-owned objects of two renders, an
/// object only one render has included ("KIND/NAME: only in ...").
fn slot_object_diff(a: &[Value], b: &[Value]) -> Vec<String> {
    let owned = |docs: &[Value]| -> std::collections::BTreeMap<String, Value> {
        docs.iter()
            .filter(|d| labels_of(d).get("bgslot/slot").is_some())
            .map(|d| (format!("{}/{}", kind_of(d), name_of(d)), d.clone()))
            .collect()
    };
    let (a, b) = (owned(a), owned(b));
    let mut out = Vec::new();
    for (key, x) in &a {
        match b.get(key) {
            Some(y) => {
                let mut paths = Vec::new();
                diff_paths(x, y, "", &mut paths);
                out.extend(paths.into_iter().map(|p| format!("{key}: {p}")));
            }
            None => out.push(format!("{key}: only in the first")),
        }
    }
    for key in b.keys().filter(|k| !a.contains_key(*k)) {
        out.push(format!("{key}: only in the second"));
    }
    out
}

const WORKERS: &str = r#"
green: {enabled: true}
config: {env: {MODE: fast}, files: {app.conf: "x = 1\n"}}
env: {SHARED: "1"}
workers:
  consumer:
    command: [bundle, exec, sidekiq]
    replicas: 2
  mailer:
    command: [bin/mailer]
    replicas: 3
    stageReplicas: 1
cronJobs:
  nightly-report:
    schedule: "0 3 * * *"
    command: [bin/rails, reports:nightly]
"#;

#[test]
fn workers_and_cron_jobs_are_off_by_default() {
    for helm in common::helms() {
        let docs = Render::new(&helm).set(&["green.enabled=true"]).docs();
        assert_eq!(
            names(&docs, "Deployment"),
            ["web-blue", "web-green"],
            "{}",
            helm.name()
        );
        assert!(of_kind(&docs, "CronJob").is_empty(), "{}", helm.name());
        assert_eq!(
            labels_of(get(&docs, "Deployment", "web-blue"))["bgslot/workload"],
            "web"
        );
    }
}

/// A worker's and a CronJob's pods run what the web pods of their slot run (the same helpers
/// render them), with their own command, args, resources, probes and grace period.
#[test]
fn worker_and_cron_job_pods_run_the_slot_like_its_web_pods() {
    for helm in common::helms() {
        let who = helm.name();
        let docs = Render::new(&helm).values(ALL_ON).kube("1.33.0").docs();
        for slot in ["blue", "green"] {
            let web = get(&docs, "Deployment", &format!("web-{slot}"));
            let web_spec = pod_spec(web);
            let app = container(web);
            let worker = get(&docs, "Deployment", &format!("web-{slot}-consumer"));
            let cron = get(&docs, "CronJob", &format!("web-{slot}-nightly-report"));
            for (what, template) in [
                ("worker", pod_template(worker)),
                ("cron", pod_template(cron)),
            ] {
                let spec = &template["spec"];
                let c = &spec["containers"][0];
                assert_eq!(
                    spec["containers"].as_array().unwrap().len(),
                    1,
                    "{who} {slot} {what}: no sidecars"
                );
                for field in [
                    "image",
                    "imagePullPolicy",
                    "securityContext",
                    "envFrom",
                    "volumeMounts",
                ] {
                    assert_eq!(c[field], app[field], "{who} {slot} {what}: {field}");
                }
                for field in [
                    "volumes",
                    "serviceAccountName",
                    "automountServiceAccountToken",
                    "imagePullSecrets",
                    "priorityClassName",
                    "nodeSelector",
                    "tolerations",
                    "affinity",
                ] {
                    assert_eq!(spec[field], web_spec[field], "{who} {slot} {what}: {field}");
                }
                // The slot's env first, the workload's extraEnv after it.
                let app_env = app["env"].as_array().unwrap();
                let env = c["env"].as_array().unwrap();
                assert_eq!(
                    &env[..app_env.len()],
                    &app_env[..],
                    "{who} {slot} {what}: the slot's env"
                );
                assert_eq!(
                    template["metadata"]["annotations"]["checksum/config"],
                    web["spec"]["template"]["metadata"]["annotations"]["checksum/config"],
                    "{who} {slot} {what}"
                );
                assert_eq!(template["metadata"]["annotations"]["team"], "web");
                assert_eq!(
                    template["metadata"]["labels"]["tier"], "frontend",
                    "{who} {slot} {what}: podLabels"
                );
                assert!(
                    c.get("ports").is_none() && c.get("lifecycle").is_none(),
                    "{who} {slot} {what}: a worker serves nothing and needs no preStop pause"
                );
                assert!(spec.get("initContainers").is_none(), "{who} {slot} {what}");
            }
            let c = &pod_spec(worker)["containers"][0];
            assert_eq!(c["name"], "consumer");
            assert_eq!(c["command"], json!(["/bin/server", "consume"]), "{who}");
            assert_eq!(c["args"], json!(["--queue=orders"]), "{who}");
            assert_eq!(
                c["resources"],
                json!({"requests": {"cpu": "100m"}}),
                "{who}"
            );
            assert_eq!(
                c["livenessProbe"],
                json!({"exec": {"command": ["/bin/server", "health"]}})
            );
            assert!(c.get("readinessProbe").is_none() && c.get("startupProbe").is_none());
            assert_eq!(
                c["env"].as_array().unwrap().last().unwrap(),
                &json!({"name": "QUEUE", "value": "orders"})
            );
            assert_eq!(pod_spec(worker)["terminationGracePeriodSeconds"], 90);
            assert_eq!(
                pod_template(worker)["metadata"]["annotations"]["worker"],
                "yes"
            );
            // A worker with no grace period of its own gets 60 s; no probes, the slot's resources.
            let indexer = get(&docs, "Deployment", &format!("web-{slot}-indexer"));
            let ic = &pod_spec(indexer)["containers"][0];
            assert_eq!(
                pod_spec(indexer)["terminationGracePeriodSeconds"],
                60,
                "{who}"
            );
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                assert!(ic.get(probe).is_none(), "{who}: {probe}");
            }
            assert_eq!(ic["resources"], app["resources"], "{who}");

            let job = &cron["spec"]["jobTemplate"]["spec"];
            let spec = &job["template"]["spec"];
            let c = &spec["containers"][0];
            assert_eq!(spec["restartPolicy"], "Never", "{who}");
            assert_eq!(spec["terminationGracePeriodSeconds"], 10, "{who}");
            assert_eq!(c["name"], "nightly-report");
            assert_eq!(c["command"], json!(["/bin/server", "report"]));
            assert_eq!(c["resources"], json!({"limits": {"memory": "1Gi"}}));
            assert_eq!(
                c["env"].as_array().unwrap().last().unwrap(),
                &json!({"name": "REPORT", "value": "nightly"})
            );
            assert_eq!(
                job["template"]["metadata"]["annotations"]["sidecar.istio.io/inject"],
                "false"
            );
            assert_eq!(job["backoffLimit"], 0, "{who}");
            assert_eq!(job["activeDeadlineSeconds"], 600, "{who}");
            let cs = &cron["spec"];
            assert_eq!(cs["schedule"], "0 3 * * *");
            assert_eq!(cs["concurrencyPolicy"], "Replace");
            assert_eq!(cs["startingDeadlineSeconds"], 300);
            assert_eq!(cs["successfulJobsHistoryLimit"], 0, "{who}: 0 is a value");
            assert_eq!(cs["failedJobsHistoryLimit"], 2);
            assert!(cs.get("timeZone").is_none());
        }

        // Defaults: Forbid, and the history limits, deadlines and grace period left to Kubernetes.
        let docs = Render::new(&helm).values(WORKERS).docs();
        let cron = get(&docs, "CronJob", "web-blue-nightly-report");
        assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid", "{who}");
        for key in [
            "startingDeadlineSeconds",
            "successfulJobsHistoryLimit",
            "failedJobsHistoryLimit",
        ] {
            assert!(cron["spec"].get(key).is_none(), "{who}: {key}");
        }
        let job = &cron["spec"]["jobTemplate"]["spec"];
        assert!(job.get("backoffLimit").is_none() && job.get("activeDeadlineSeconds").is_none());
        assert!(job["template"]["spec"]
            .get("terminationGracePeriodSeconds")
            .is_none());
    }
}

/// The pods of workers and CronJobs carry instance, slot, workload and component, and no
/// app.kubernetes.io/name: no Service, web Deployment, PDB or HPA of the web selects them, and a
/// worker's own PDB and Deployment select exactly its pods.
#[test]
fn worker_pods_are_selected_by_no_web_service_pdb_or_hpa() {
    for helm in common::helms() {
        let who = helm.name();
        let docs = Render::new(&helm).values(ALL_ON).docs();
        // Every pod template's labels, by who owns them.
        let mut pods: Vec<(String, Value)> = Vec::new();
        for d in docs
            .iter()
            .filter(|d| matches!(kind_of(d), "Deployment" | "CronJob" | "Job"))
        {
            pods.push((
                format!("{} {}", kind_of(d), name_of(d)),
                pod_template(d)["metadata"]["labels"].clone(),
            ));
        }
        let workloads: Vec<&Value> = docs
            .iter()
            .filter(|d| matches!(kind_of(d), "Deployment" | "CronJob") && is_workload(d))
            .collect();
        assert_eq!(
            workloads.len(),
            6,
            "{who}: 2 workers and a CronJob per slot"
        );
        for d in &workloads {
            let (slot, component) = (
                labels_of(d)["bgslot/slot"].as_str().unwrap(),
                labels_of(d)["app.kubernetes.io/component"]
                    .as_str()
                    .unwrap(),
            );
            let workload = if kind_of(d) == "CronJob" {
                "cronjob"
            } else {
                "worker"
            };
            let want = json!({
                "app.kubernetes.io/instance": REL,
                "bgslot/slot": slot,
                "bgslot/workload": workload,
                "app.kubernetes.io/component": component,
            });
            assert_eq!(
                name_of(d),
                format!("web-{slot}-{component}"),
                "{who}: FULLNAME-SLOT-NAME"
            );
            let mut labels = pod_template(d)["metadata"]["labels"].clone();
            labels.as_object_mut().unwrap().remove("tier");
            assert_eq!(labels, want, "{who} {}: pod labels", name_of(d));
            if kind_of(d) == "CronJob" {
                assert_eq!(
                    d["spec"]["jobTemplate"]["metadata"]["labels"], want,
                    "{who}: the Jobs' labels"
                );
            } else {
                assert_eq!(
                    d["spec"]["selector"]["matchLabels"],
                    want,
                    "{who} {}",
                    name_of(d)
                );
            }
            for key in [
                "app.kubernetes.io/instance",
                "bgslot/slot",
                "bgslot/workload",
                "app.kubernetes.io/component",
            ] {
                assert_eq!(labels_of(d)[key], want[key], "{who} {}: {key}", name_of(d));
            }
        }
        // What selects pods, and whose pods it may select.
        let mut selectors: Vec<(String, &Value)> = Vec::new();
        for svc in of_kind(&docs, "Service") {
            selectors.push((
                format!("Service {}", name_of(svc)),
                &svc["spec"]["selector"],
            ));
        }
        for d in of_kind(&docs, "Deployment")
            .into_iter()
            .chain(of_kind(&docs, "PodDisruptionBudget"))
        {
            selectors.push((
                format!("{} {}", kind_of(d), name_of(d)),
                &d["spec"]["selector"]["matchLabels"],
            ));
        }
        assert!(selectors.len() >= 14, "{who}: {}", selectors.len());
        for (what, selector) in &selectors {
            let selected: Vec<&str> = pods
                .iter()
                .filter(|(_, labels)| selects(selector, labels))
                .map(|(owner, _)| owner.as_str())
                .collect();
            let name = what.split(' ').nth(1).unwrap();
            let expected: Vec<String> = if what.starts_with("Service") {
                // web, web-admin -> blue; web-stage, web-admin-stage -> green
                let slot = if name.ends_with("-stage") {
                    "green"
                } else {
                    "blue"
                };
                vec![format!("Deployment web-{slot}")]
            } else {
                vec![format!("Deployment {name}")]
            };
            assert_eq!(selected, expected, "{who}: {what} selects {selected:?}");
        }
        // HPAs scale their own Deployment: the web's scale the web, a worker's its worker.
        for hpa in of_kind(&docs, "HorizontalPodAutoscaler") {
            let target = &hpa["spec"]["scaleTargetRef"];
            assert_eq!(target["name"], name_of(hpa), "{who}");
            let deploy = get(&docs, "Deployment", name_of(hpa));
            assert_eq!(
                is_workload(hpa),
                is_workload(deploy),
                "{who} {}",
                name_of(hpa)
            );
        }
    }
}

/// productionSlot decides two things in a slot: how many pods each worker runs, and whether each
/// CronJob is suspended. Nothing else in any slot-owned object changes at a flip.
#[test]
fn a_flip_moves_worker_replicas_and_cron_suspend_and_nothing_else() {
    for helm in common::helms() {
        let who = helm.name();
        let blue = Render::new(&helm).values(WORKERS).docs();
        let green = Render::new(&helm)
            .values(WORKERS)
            .set(&["productionSlot=green"])
            .docs();
        let mut diff = slot_object_diff(&blue, &green);
        diff.sort();
        assert_eq!(
            diff,
            [
                "CronJob/web-blue-nightly-report: spec.suspend",
                "CronJob/web-green-nightly-report: spec.suspend",
                "Deployment/web-blue-consumer: spec.replicas",
                "Deployment/web-blue-mailer: spec.replicas",
                "Deployment/web-green-consumer: spec.replicas",
                "Deployment/web-green-mailer: spec.replicas",
            ],
            "{who}"
        );
        let replicas =
            |docs: &[Value], name: &str| get(docs, "Deployment", name)["spec"]["replicas"].clone();
        let suspended =
            |docs: &[Value], name: &str| get(docs, "CronJob", name)["spec"]["suspend"].clone();
        // consumer: replicas 2 in production, stageReplicas 0 (the default) in stage; mailer:
        // replicas 3 in production, stageReplicas 1 in stage.
        for (docs, prod, stage) in [(&blue, "blue", "green"), (&green, "green", "blue")] {
            assert_eq!(
                replicas(docs, &format!("web-{prod}-consumer")),
                2,
                "{who} prod={prod}"
            );
            assert_eq!(
                replicas(docs, &format!("web-{stage}-consumer")),
                0,
                "{who} prod={prod}"
            );
            assert_eq!(
                replicas(docs, &format!("web-{prod}-mailer")),
                3,
                "{who} prod={prod}"
            );
            assert_eq!(
                replicas(docs, &format!("web-{stage}-mailer")),
                1,
                "{who} prod={prod}"
            );
            assert_eq!(
                suspended(docs, &format!("web-{prod}-nightly-report")),
                false,
                "{who}"
            );
            assert_eq!(
                suspended(docs, &format!("web-{stage}-nightly-report")),
                true,
                "{who}"
            );
        }

        // With autoscaling and PDBs: a worker's HPA and PDB follow where it runs, and the
        // Deployment's replicas belong to the HPA in production. Still nothing in a pod template.
        let blue = Render::new(&helm).values(ALL_ON).docs();
        let green = Render::new(&helm)
            .values(ALL_ON)
            .set(&["productionSlot=green"])
            .docs();
        let mut diff = slot_object_diff(&blue, &green);
        diff.sort();
        assert_eq!(
            diff,
            [
                "CronJob/web-blue-nightly-report: spec.suspend",
                "CronJob/web-green-nightly-report: spec.suspend",
                "Deployment/web-blue-consumer: spec.replicas",
                "Deployment/web-blue-indexer: spec.replicas",
                "Deployment/web-green-consumer: spec.replicas",
                "Deployment/web-green-indexer: spec.replicas",
                "HorizontalPodAutoscaler/web-blue-indexer: only in the first",
                "HorizontalPodAutoscaler/web-green-indexer: only in the second",
                "PodDisruptionBudget/web-blue-consumer: only in the first",
                "PodDisruptionBudget/web-green-consumer: only in the second",
            ],
            "{who}"
        );
    }
}

#[test]
fn held_workers_run_in_neither_slot() {
    for helm in common::helms() {
        let who = helm.name();
        for prod in ["blue", "green"] {
            let set = format!("productionSlot={prod}");
            let docs = Render::new(&helm)
                .values(ALL_ON)
                .set(&[&set, "heldWorkers={indexer,consumer}"])
                .docs();
            for slot in ["blue", "green"] {
                for worker in ["consumer", "indexer"] {
                    let name = format!("web-{slot}-{worker}");
                    assert_eq!(
                        get(&docs, "Deployment", &name)["spec"]["replicas"],
                        0,
                        "{who} prod={prod} {name}"
                    );
                }
            }
            assert_eq!(
                names(&docs, "HorizontalPodAutoscaler"),
                ["web-blue", "web-green"],
                "{who}: a held worker has no HPA to scale it back"
            );
            assert_eq!(
                names(&docs, "PodDisruptionBudget"),
                ["web-blue", "web-green"],
                "{who}: and no PDB"
            );
            // Holding one worker leaves the other alone.
            let docs = Render::new(&helm)
                .values(WORKERS)
                .set(&[&set, "heldWorkers={consumer}"])
                .docs();
            assert_eq!(
                get(&docs, "Deployment", &format!("web-{prod}-consumer"))["spec"]["replicas"],
                0
            );
            assert_eq!(
                get(&docs, "Deployment", &format!("web-{prod}-mailer"))["spec"]["replicas"],
                3
            );
            let stage = if prod == "blue" { "green" } else { "blue" };
            assert_eq!(
                get(&docs, "Deployment", &format!("web-{stage}-mailer"))["spec"]["replicas"],
                1
            );
        }
        let stderr = Render::new(&helm)
            .values(WORKERS)
            .set(&["heldWorkers={sender}"])
            .failure();
        assert_one_line_failure(
            &helm,
            &stderr,
            "heldWorkers names sender, which is no worker in workers; remove it from heldWorkers",
        );
    }
}

#[test]
fn an_autoscaled_worker_has_an_hpa_in_production_and_stage_replicas_in_stage() {
    for helm in common::helms() {
        let who = helm.name();
        for (kube, api) in [
            ("1.20.0", "autoscaling/v2beta2"),
            ("1.23.0", "autoscaling/v2"),
            ("1.37.0", "autoscaling/v2"),
        ] {
            for (prod, stage) in [("blue", "green"), ("green", "blue")] {
                let set = format!("productionSlot={prod}");
                let docs = Render::new(&helm)
                    .values(ALL_ON)
                    .set(&[&set])
                    .kube(kube)
                    .docs();
                let live = get(&docs, "Deployment", &format!("web-{prod}-indexer"));
                assert!(
                    live["spec"].get("replicas").is_none(),
                    "{who} {kube}: the HPA owns production's replicas"
                );
                let hpa = get(
                    &docs,
                    "HorizontalPodAutoscaler",
                    &format!("web-{prod}-indexer"),
                );
                assert_eq!(hpa["apiVersion"], api, "{who} {kube}");
                assert_eq!(
                    hpa["spec"]["scaleTargetRef"],
                    json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": format!("web-{prod}-indexer")})
                );
                assert_eq!(hpa["spec"]["minReplicas"], 1);
                assert_eq!(hpa["spec"]["maxReplicas"], 4);
                assert_eq!(
                    hpa["spec"]["metrics"],
                    json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}]),
                    "{who} {kube}"
                );
                assert_eq!(
                    get(&docs, "Deployment", &format!("web-{stage}-indexer"))["spec"]["replicas"],
                    1,
                    "{who} {kube}: stage runs stageReplicas"
                );
                assert!(
                    !names(&docs, "HorizontalPodAutoscaler")
                        .contains(&format!("web-{stage}-indexer")),
                    "{who} {kube}: no HPA in stage"
                );
                // The worker's PDB exists where it runs: both slots here (stageReplicas 1).
                for slot in [prod, stage] {
                    let pdb = get(&docs, "PodDisruptionBudget", &format!("web-{slot}-indexer"));
                    assert_eq!(
                        pdb["spec"]["selector"]["matchLabels"],
                        get(&docs, "Deployment", &format!("web-{slot}-indexer"))["spec"]
                            ["selector"]["matchLabels"]
                    );
                    assert_eq!(pdb["spec"]["minAvailable"], 1);
                }
            }
        }
        // replicas 0 in production: no HPA, as for a web slot scaled to zero.
        let docs = Render::new(&helm)
            .values(ALL_ON)
            .set(&["workers.indexer.replicas=0"])
            .docs();
        assert_eq!(
            get(&docs, "Deployment", "web-blue-indexer")["spec"]["replicas"],
            0,
            "{who}"
        );
        assert_eq!(
            names(&docs, "HorizontalPodAutoscaler"),
            ["web-blue", "web-green"],
            "{who}"
        );
        // Defaults: 1 to 10, metrics left to the HPA's own default.
        let docs = Render::new(&helm)
            .values(WORKERS)
            .set(&["workers.consumer.autoscaling.enabled=true"])
            .docs();
        let hpa = get(&docs, "HorizontalPodAutoscaler", "web-blue-consumer");
        assert_eq!(
            (
                hpa["spec"]["minReplicas"].clone(),
                hpa["spec"]["maxReplicas"].clone()
            ),
            (json!(1), json!(10))
        );
        assert!(hpa["spec"].get("metrics").is_none(), "{who}");
    }
}

#[test]
fn per_slot_worker_and_cron_job_overrides_change_only_their_slot() {
    // (a --set on green, the green object it changes, what that object shows)
    type Check = fn(&Value) -> bool;
    let cases: &[(&str, &str, Check)] = &[
        ("green.workers.consumer.stageReplicas=1", "Deployment/web-green-consumer", |d| {
            d["spec"]["replicas"] == 1
        }),
        ("green.workers.consumer.command[0]=next", "Deployment/web-green-consumer", |d| {
            pod_spec(d)["containers"][0]["command"] == json!(["next"])
        }),
        (
            "green.workers.consumer.extraEnv[0].name=QUEUE_URL,green.workers.consumer.extraEnv[0].value=amqp://staging",
            "Deployment/web-green-consumer",
            |d| pod_spec(d)["containers"][0]["env"].as_array().unwrap().last() == Some(&json!({"name": "QUEUE_URL", "value": "amqp://staging"})),
        ),
        ("green.workers.consumer.resources.limits.memory=1Gi", "Deployment/web-green-consumer", |d| {
            pod_spec(d)["containers"][0]["resources"] == json!({"limits": {"memory": "1Gi"}})
        }),
        ("green.workers.consumer.terminationGracePeriodSeconds=5", "Deployment/web-green-consumer", |d| {
            pod_spec(d)["terminationGracePeriodSeconds"] == 5
        }),
        // The slot's own values reach its workers and CronJobs like its web pods.
        ("green.env.QUEUE_URL=amqp://staging", "Deployment/web-green-consumer", |d| {
            pod_spec(d)["containers"][0]["env"].as_array().unwrap().contains(&json!({"name": "QUEUE_URL", "value": "amqp://staging"}))
        }),
        ("green.image.tag=v2", "Deployment/web-green-mailer", |d| {
            pod_spec(d)["containers"][0]["image"] == "nginx:v2"
        }),
        ("green.config.env.MODE=slow", "Deployment/web-green-mailer", |d| {
            d["spec"]["template"]["metadata"]["annotations"]["checksum/config"].is_string()
        }),
        ("green.cronJobs.nightly-report.schedule=0 4 * * *", "CronJob/web-green-nightly-report", |d| {
            d["spec"]["schedule"] == "0 4 * * *"
        }),
        ("green.cronJobs.nightly-report.args[0]=--dry-run", "CronJob/web-green-nightly-report", |d| {
            pod_template(d)["spec"]["containers"][0]["args"] == json!(["--dry-run"])
        }),
        ("green.image.tag=v2", "CronJob/web-green-nightly-report", |d| {
            pod_template(d)["spec"]["containers"][0]["image"] == "nginx:v2"
        }),
    ];
    for helm in common::helms() {
        let who = helm.name();
        let before = Render::new(&helm).values(WORKERS).docs();
        let blue_objects = |docs: &[Value]| -> Vec<Value> {
            docs.iter()
                .filter(|d| labels_of(d)["bgslot/slot"] == "blue")
                .cloned()
                .collect()
        };
        for (set, object, check) in cases {
            let after = Render::new(&helm).values(WORKERS).set(&[set]).docs();
            assert_eq!(
                blue_objects(&before),
                blue_objects(&after),
                "{who}: --set {set} changed a blue object"
            );
            let (kind, name) = object.split_once('/').unwrap();
            let changed = get(&after, kind, name);
            assert_ne!(
                changed,
                get(&before, kind, name),
                "{who}: --set {set} left {object} alone"
            );
            assert!(check(changed), "{who}: --set {set}: {changed:#}");
        }
        // A slot's 0 or empty list is a value, not "unset": it wins over the shared one.
        let docs = Render::new(&helm)
            .values(WORKERS)
            .set(&[
                "blue.workers.consumer.replicas=0",
                "workers.mailer.args={--verbose}",
            ])
            .set_json(&["green.workers.mailer.args=[]"])
            .docs();
        assert_eq!(
            get(&docs, "Deployment", "web-blue-consumer")["spec"]["replicas"],
            0,
            "{who}"
        );
        assert_eq!(
            pod_spec(get(&docs, "Deployment", "web-blue-mailer"))["containers"][0]["args"],
            json!(["--verbose"])
        );
        assert!(
            pod_spec(get(&docs, "Deployment", "web-green-mailer"))["containers"][0]
                .get("args")
                .is_none(),
            "{who}"
        );
        // The production slot's own replicas, the stage slot's own stageReplicas.
        let docs = Render::new(&helm)
            .values(WORKERS)
            .set(&[
                "blue.workers.consumer.replicas=5",
                "green.workers.consumer.replicas=7",
            ])
            .docs();
        assert_eq!(
            get(&docs, "Deployment", "web-blue-consumer")["spec"]["replicas"],
            5,
            "{who}"
        );
        assert_eq!(
            get(&docs, "Deployment", "web-green-consumer")["spec"]["replicas"],
            0,
            "{who}"
        );
        // extraEnv merges by name across the shared and the slot's lists, the slot winning.
        let docs = Render::new(&helm)
            .values(WORKERS)
            .values("extraEnv: [{name: A, value: web}]\nworkers:\n  consumer:\n    extraEnv: [{name: A, value: worker}, {name: B, value: worker}]\ngreen:\n  workers:\n    consumer:\n      extraEnv: [{name: B, value: green}]\n")
            .docs();
        let env = |slot: &str| {
            pod_spec(get(&docs, "Deployment", &format!("web-{slot}-consumer")))["containers"][0]
                ["env"]
                .clone()
        };
        assert_eq!(
            env("blue"),
            json!([{"name": "SHARED", "value": "1"}, {"name": "A", "value": "worker"}, {"name": "B", "value": "worker"}]),
            "{who}"
        );
        assert_eq!(
            env("green"),
            json!([{"name": "SHARED", "value": "1"}, {"name": "A", "value": "worker"}, {"name": "B", "value": "green"}]),
            "{who}"
        );

        // A slot cannot add a worker or a CronJob.
        for (set, message) in [
            (
                "green.workers.sender.replicas=1",
                "green.workers.sender: there is no workers.sender; a slot can only change a worker the shared workers map defines",
            ),
            (
                "blue.cronJobs.weekly.schedule=@weekly",
                "blue.cronJobs.weekly: there is no cronJobs.weekly; a slot can only change a CronJob the shared cronJobs map defines",
            ),
        ] {
            let stderr = Render::new(&helm).values(WORKERS).set(&[set]).failure();
            assert_one_line_failure(&helm, &stderr, message);
        }
    }
}

#[test]
fn worker_and_cron_job_guards_fail_with_one_line() {
    for helm in common::helms() {
        for (values, sets, message) in [
            (
                "workers: {consumer: {replicas: 2}}\n",
                &[][..],
                "workers.consumer has neither command nor args: it would run the image's server; set workers.consumer.command",
            ),
            (
                "cronJobs: {nightly: {schedule: \"0 3 * * *\"}}\n",
                &[],
                "cronJobs.nightly has neither command nor args",
            ),
            (
                "workers: {report: {command: [a]}}\ncronJobs: {report: {schedule: \"@daily\", command: [a]}}\n",
                &[],
                "workers.report and cronJobs.report share a name",
            ),
            (
                "cronJobs: {nightly: {command: [a]}}\n",
                &["--skip-schema-validation"],
                "cronJobs.nightly.schedule is empty: a CronJob needs a schedule",
            ),
            (
                "cronJobs: {nightly: {schedule: \"@daily\", command: [a], suspend: false}}\n",
                &["--skip-schema-validation"],
                "cronJobs.nightly.suspend is set: suspend is bgslot's",
            ),
            (
                "workers: {migration: {command: [a]}}\n",
                &["--skip-schema-validation"],
                "workers.migration: the name migration is reserved",
            ),
        ] {
            let stderr = Render::new(&helm).values(values).arg(sets).failure();
            assert_one_line_failure(&helm, &stderr, message);
        }
    }
}

#[test]
fn cron_job_time_zone_renders_from_kubernetes_1_27_and_fails_before() {
    for helm in common::helms() {
        let who = helm.name();
        let tz = ["cronJobs.nightly-report.timeZone=Europe/Paris"];
        for kube in ["1.27.0", "1.37.0"] {
            let docs = Render::new(&helm)
                .values(WORKERS)
                .set(&tz)
                .kube(kube)
                .docs();
            for cron in of_kind(&docs, "CronJob") {
                assert_eq!(cron["spec"]["timeZone"], "Europe/Paris", "{who} {kube}");
            }
        }
        for kube in ["1.20.0", "1.26.5"] {
            let stderr = Render::new(&helm)
                .values(WORKERS)
                .set(&tz)
                .kube(kube)
                .failure();
            assert_one_line_failure(
                &helm,
                &stderr,
                &format!("cronJobs.nightly-report.timeZone is set but this cluster runs Kubernetes v{kube}: CronJob timeZone needs 1.27 or later"),
            );
        }
    }
}

#[test]
fn worker_and_cron_job_names_stay_valid() {
    for helm in common::helms() {
        let who = helm.name();
        let long = format!("fullnameOverride={}", "a".repeat(70));
        let name40 = "w".repeat(40);
        let values = format!(
            "green: {{enabled: true}}\nworkers:\n  {name40}: {{command: [a]}}\ncronJobs:\n  c{}: {{schedule: \"@daily\", command: [a]}}\n",
            "r".repeat(39)
        );
        let docs = Render::new(&helm).values(&values).set(&[&long]).docs();
        let mut all = Vec::new();
        for kind in ["Deployment", "CronJob"] {
            for n in names(&docs, kind) {
                let max = if kind == "CronJob" { 52 } else { 63 };
                assert!(n.len() <= max && !n.ends_with('-'), "{who} {kind} {n}");
                all.push(n);
            }
        }
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 6, "{who}: {all:?}");
        for d in of_kind(&docs, "Deployment")
            .into_iter()
            .filter(|d| is_workload(d))
        {
            assert!(
                name_of(d).ends_with(&format!("-{name40}")),
                "{who}: {}",
                name_of(d)
            );
        }
    }
}

/// An upgrade from chart 0.2.0 restarts no web pod: the web Deployments' spec, pod template
/// included, is what 0.2.0 renders for the same values (0.2.0's schema does not know workers, so
/// it renders with schema validation off and ignores them). Only the Deployment's own labels
/// change: the chart version, and bgslot/workload.
#[test]
fn the_web_deployments_render_as_chart_0_2_0_rendered_them() {
    // Chart 0.2.0 as it was at commit 2e49d32 (`git archive 2e49d32 chart`).
    let old = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chart-0.2.0");
    for helm in common::helms() {
        let who = helm.name();
        for kube in ["1.20.0", "1.29.0", "1.37.0"] {
            for (what, new, before) in [
                (
                    "defaults",
                    Render::new(&helm)
                        .set(&["green.enabled=true"])
                        .kube(kube)
                        .docs(),
                    Render::new(&helm)
                        .chart(&old)
                        .set(&["green.enabled=true"])
                        .kube(kube)
                        .docs(),
                ),
                (
                    "ALL_ON",
                    Render::new(&helm).values(ALL_ON).kube(kube).docs(),
                    Render::new(&helm)
                        .chart(&old)
                        .values(ALL_ON)
                        .arg(&["--skip-schema-validation"])
                        .kube(kube)
                        .docs(),
                ),
                (
                    "the example app",
                    Render::new(&helm)
                        .file(&example_app())
                        .set(EXAMPLE_BOTH_SLOTS)
                        .kube(kube)
                        .docs(),
                    Render::new(&helm)
                        .chart(&old)
                        .file(&example_app())
                        .set(EXAMPLE_BOTH_SLOTS)
                        .arg(&["--skip-schema-validation"])
                        .kube(kube)
                        .docs(),
                ),
            ] {
                for slot in ["blue", "green"] {
                    let name = format!("web-{slot}");
                    let (a, b) = (
                        get(&new, "Deployment", &name),
                        get(&before, "Deployment", &name),
                    );
                    assert_eq!(a["spec"], b["spec"], "{who} {kube} {what} {name}");
                    let mut diff = Vec::new();
                    diff_paths(a, b, "", &mut diff);
                    assert_eq!(
                        diff,
                        [
                            "metadata.labels.bgslot/workload",
                            "metadata.labels.helm.sh/chart"
                        ],
                        "{who} {kube} {what} {name}"
                    );
                }
                // And every other web object but for the chart label (the HPA's metrics list
                // included, now rendered by a helper the workers share).
                for d in before.iter().filter(|d| kind_of(d) != "Deployment") {
                    let mut ours = get(&new, kind_of(d), name_of(d)).clone();
                    let mut theirs = d.clone();
                    for x in [&mut ours, &mut theirs] {
                        x["metadata"]["labels"]
                            .as_object_mut()
                            .map(|l| l.remove("helm.sh/chart"));
                    }
                    assert_eq!(
                        ours,
                        theirs,
                        "{who} {kube} {what} {}/{}",
                        kind_of(d),
                        name_of(d)
                    );
                }
            }
        }
    }
}
