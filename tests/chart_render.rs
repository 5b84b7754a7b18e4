//! Renders the chart with `helm template` (Helm 3 and Helm 4) and checks the parsed objects.

mod common;

use common::Helm;
use serde_json::{json, Value};

const REL: &str = "web";

/// Every optional feature switched on, both slots enabled, so one render shows every object kind.
const ALL_ON: &[&str] = &[
    "green.enabled=true",
    "autoscaling.enabled=true",
    "autoscaling.targetMemoryUtilizationPercentage=70",
    "podDisruptionBudget.enabled=true",
    "ingress.enabled=true",
    "ingress.className=nginx",
    "ingress.host=web.example.com",
    "ingress.stageHost=stage.web.example.com",
    "ingress.tls[0].secretName=web-tls",
    "ingress.tls[0].hosts[0]=web.example.com",
    "istio.enabled=true",
    "gatewayAPI.enabled=true",
    "gatewayAPI.parentRefs[0].name=public",
    "gatewayAPI.hostnames[0]=web.example.com",
    "gatewayAPI.stageCookie=test=true",
    "env.SHARED=1",
    "green.env.ONLY_GREEN=x",
    "podAnnotations.team=web",
    "podLabels.tier=frontend",
    "resources.limits.cpu=500m",
    "nodeSelector.disk=ssd",
    "tolerations[0].key=dedicated",
    "tolerations[0].operator=Exists",
    "topologySpreadConstraints[0].maxSkew=1",
    "topologySpreadConstraints[0].topologyKey=kubernetes.io/hostname",
    "topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
    "serviceAccount.annotations.owner=web",
    "imagePullSecrets[0].name=regcred",
];

struct Render<'a> {
    helm: &'a Helm,
    sets: Vec<String>,
    extra: Vec<String>,
}

impl<'a> Render<'a> {
    fn new(helm: &'a Helm) -> Self {
        Render {
            helm,
            sets: Vec::new(),
            extra: Vec::new(),
        }
    }

    fn set(mut self, sets: &[&str]) -> Self {
        self.sets.extend(sets.iter().map(|s| s.to_string()));
        self
    }

    fn arg(mut self, args: &[&str]) -> Self {
        self.extra.extend(args.iter().map(|s| s.to_string()));
        self
    }

    fn output(&self) -> std::process::Output {
        let mut cmd = self.helm.command();
        cmd.arg("template").arg(REL).arg(common::chart_dir());
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
            "{} template {:?} {:?} failed: {}",
            self.helm.name(),
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
            "{} template {:?} {:?} unexpectedly succeeded",
            self.helm.name(),
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

            let staging = get(&docs, "Service", "web-stage");
            assert_eq!(
                staging["spec"]["selector"],
                slot_selector(stage),
                "{} prod={prod}",
                helm.name()
            );
            assert_eq!(staging["metadata"]["labels"]["bgslot/role"], "stage");

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
        let docs = Render::new(&helm).set(&["green.enabled=true"]).docs();
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

impl Render<'_> {
    fn set_string(mut self, sets: &[&str]) -> Self {
        for s in sets {
            self.extra.push("--set-string".into());
            self.extra.push(s.to_string());
        }
        self
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
    for helm in common::helms() {
        let chart = common::chart_dir();
        let chart = chart.to_str().unwrap();
        helm.run(&["lint", "--strict", chart]);
        let mut args = vec!["lint", "--strict", chart];
        for s in ALL_ON {
            args.extend(["--set", s]);
        }
        helm.run(&args);
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
        Render::new(helm).set(ALL_ON).docs(),
        Render::new(helm)
            .set(ALL_ON)
            .set(&["productionSlot=green"])
            .arg(&["--kube-version", "1.20.0"])
            .docs(),
    ]
}

#[test]
fn the_role_never_appears_in_a_pod_template() {
    for helm in common::helms() {
        for docs in variants(&helm) {
            for d in &docs {
                let template = &d["spec"]["template"];
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
            for d in docs
                .iter()
                .filter(|d| matches!(kind_of(d), "Service" | "Deployment" | "Pod"))
            {
                let mut ports = Vec::new();
                collect_ports(d, &mut ports);
                if kind_of(d) != "Pod" {
                    assert!(!ports.is_empty(), "{} {}", helm.name(), name_of(d));
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
                    "bgslot-0.1.0",
                    "{} {}",
                    helm.name(),
                    name_of(d)
                );
                assert_eq!(labels["app.kubernetes.io/name"], "bgslot");
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
