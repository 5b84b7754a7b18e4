//! The preflight of a router deploy: before anything is written, what the renders of the router
//! and of both slot releases say about running the chart twice side by side, and what the router
//! needs to route to the new slot (the Service to mirror: its selector and ports, and the
//! container they reach). Pure: every refusal names the object and the fix, and is unit-tested.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::manifest::{selects, Object, Rendered};
use super::values::{AppSettings, PortRecord, Risk, TargetPort};
use crate::error::Refusal;

/// The renders a deploy compares.
pub struct Renders<'a> {
    /// The slot release the deploy writes.
    pub slot: &'a Rendered,
    /// The other slot: production's release as it runs, or (before the first install) the chart
    /// rendered as the other slot's release would be.
    pub other: &'a Rendered,
}

/// The version a deploy asks for, as it must reach the routed container's image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    pub repository: Option<String>,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// What else a deploy's checks need.
pub struct Checks<'a> {
    /// The router release.
    pub release: &'a str,
    pub namespace: &'a str,
    pub app: &'a AppSettings,
    pub wanted: &'a Wanted,
    /// The replicas the slot is sized to, when known (`--replicas`, or what production runs).
    pub replicas: Option<u64>,
    pub scopes: &'a Scopes,
}

/// What the router records of the new slot, and what the deploy waits for and sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// The mirrored Service.
    pub service: String,
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<PortRecord>,
    /// The Deployments the Service selects.
    pub routed: Vec<String>,
    /// Every Deployment of the slot release.
    pub deployments: Vec<String>,
    /// The routed container and its image as rendered.
    pub container: String,
    pub image: String,
    /// The risks the render has, all accepted.
    pub accepted: Vec<Risk>,
    /// The routed Deployments bgslot sizes itself after the write (they render no replicas, as
    /// with an HPA, or the chart has no replicas value).
    pub scale: Vec<String>,
}

/// Runs every check of the slot's render against the other slot's; the first that fails is the
/// refusal. The router's own render depends on what this finds: [`check_router`] compares it.
pub fn analyze(renders: &Renders, c: &Checks) -> Result<Analysis, Refusal> {
    collisions(&[(renders.slot, renders.other)], c)?;
    fixed_ports(renders.slot, c)?;
    let accepted = risks(renders.slot, c)?;
    let mirrored = mirrored_service(renders, c)?;
    host_claims(renders.slot, renders.other, c, "the other slot's release")?;
    let (container, image) = routed_image(renders.slot, &mirrored, c)?;
    let scale = replicas(renders.slot, &mirrored, c)?;
    Ok(Analysis {
        service: mirrored.service.name.clone(),
        selector: mirrored.service.selector(),
        ports: ports_of(mirrored.service),
        routed: mirrored.routed.iter().map(|d| d.name.clone()).collect(),
        deployments: renders.slot.deployments().map(|d| d.name.clone()).collect(),
        container,
        image,
        accepted,
        scale,
    })
}

/// The router's render (as its write would leave it) against both slots': no shared object, and
/// no host the router serves claimed by the slot's own Ingress or HTTPRoute.
pub fn check_router(router: &Rendered, renders: &Renders, c: &Checks) -> Result<(), Refusal> {
    collisions(&[(renders.slot, router), (renders.other, router)], c)?;
    host_claims(renders.slot, router, c, "the router")
}

/// Which kinds are cluster-scoped: Kubernetes' own, and what the API server said of others.
#[derive(Debug, Clone, Default)]
pub struct Scopes {
    /// (group, kind) -> namespaced.
    known: BTreeMap<(String, String), bool>,
}

/// Kubernetes' cluster-scoped kinds, by group.
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("", "ComponentStatus"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("apiregistration.k8s.io", "APIService"),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
    ),
    ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "MutatingAdmissionPolicyBinding",
    ),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "CSINode"),
    ("storage.k8s.io", "VolumeAttachment"),
    ("storage.k8s.io", "VolumeAttributesClass"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("networking.k8s.io", "IngressClass"),
    ("networking.k8s.io", "IPAddress"),
    ("networking.k8s.io", "ServiceCIDR"),
    ("node.k8s.io", "RuntimeClass"),
    ("policy", "PodSecurityPolicy"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("certificates.k8s.io", "ClusterTrustBundle"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
    ("resource.k8s.io", "DeviceClass"),
    ("resource.k8s.io", "ResourceSlice"),
    ("gateway.networking.k8s.io", "GatewayClass"),
];

/// Kubernetes' own namespaced groups: a kind of these not in [`CLUSTER_SCOPED`] is namespaced.
const BUILTIN_GROUPS: &[&str] = &[
    "",
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "rbac.authorization.k8s.io",
    "networking.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "storage.k8s.io",
    "scheduling.k8s.io",
    "node.k8s.io",
    "events.k8s.io",
    "certificates.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "resource.k8s.io",
];

impl Scopes {
    /// Kubernetes' own kinds.
    pub fn builtin() -> Scopes {
        let mut known = BTreeMap::new();
        for (group, kind) in CLUSTER_SCOPED {
            known.insert((group.to_string(), kind.to_string()), false);
        }
        Scopes { known }
    }

    fn lookup(&self, group: &str, kind: &str) -> Option<bool> {
        if let Some(namespaced) = self.known.get(&(group.to_string(), kind.to_string())) {
            return Some(*namespaced);
        }
        BUILTIN_GROUPS.contains(&group).then_some(true)
    }

    /// The API versions whose kinds' scope is unknown here (a CRD's): ask the API server.
    pub fn unknown<'a>(&self, objects: impl IntoIterator<Item = &'a Object>) -> BTreeSet<String> {
        objects
            .into_iter()
            .filter(|o| self.lookup(o.group(), &o.kind).is_none())
            .map(|o| o.api_version.clone())
            .collect()
    }

    /// What the API server said of a kind.
    pub fn learn(&mut self, group: &str, kind: &str, namespaced: bool) {
        self.known
            .insert((group.to_string(), kind.to_string()), namespaced);
    }

    pub fn is_cluster_scoped(&self, o: &Object) -> bool {
        self.lookup(o.group(), &o.kind) == Some(false)
    }
}

fn host_or_any(host: Option<&str>) -> String {
    host.filter(|h| !h.is_empty()).unwrap_or("*").to_string()
}

fn list_or_any(v: &Value) -> Vec<String> {
    let list: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h.as_str())
        .map(str::to_string)
        .collect();
    if list.is_empty() {
        vec!["*".into()]
    } else {
        list
    }
}

/// The hosts an Ingress or HTTPRoute claims.
fn hosts_of(o: &Object) -> Vec<String> {
    match o.kind.as_str() {
        "Ingress" => {
            let rules: Vec<String> = o.doc["spec"]["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| host_or_any(r["host"].as_str()))
                .collect();
            if rules.is_empty() && !o.doc["spec"]["defaultBackend"].is_null() {
                vec!["*".into()]
            } else {
                rules
            }
        }
        "HTTPRoute" | "GRPCRoute" => list_or_any(&o.doc["spec"]["hostnames"]),
        "VirtualService" => list_or_any(&o.doc["spec"]["hosts"]),
        _ => Vec::new(),
    }
}

type ObjectKey = (String, String, String, String);

fn key(o: &Object, namespace: &str, scopes: &Scopes) -> ObjectKey {
    let ns = if scopes.is_cluster_scoped(o) {
        String::new()
    } else {
        o.namespace.clone().unwrap_or_else(|| namespace.to_string())
    };
    (o.group().to_string(), o.kind.clone(), ns, o.name.clone())
}

/// Two renders may not share an object: helm would refuse the second owner, or worse, one
/// release's uninstall would delete the other's.
fn collisions(pairs: &[(&Rendered, &Rendered)], c: &Checks) -> Result<(), Refusal> {
    let index = |rendered: &Rendered| -> BTreeMap<ObjectKey, String> {
        rendered
            .all()
            .map(|o| (key(o, c.namespace, c.scopes), o.describe(c.namespace)))
            .collect()
    };
    for (a, b) in pairs {
        let (ia, ib) = (index(a), index(b));
        let shared: Vec<&str> = ia
            .iter()
            .filter(|(k, _)| ib.contains_key(*k))
            .map(|(_, what)| what.as_str())
            .collect();
        if !shared.is_empty() {
            return Err(Refusal::new(
                format!(
                    "{} and {} would both render {}: one object cannot belong to two releases",
                    a.release,
                    b.release,
                    shared.join(", ")
                ),
                "the chart gives it a fixed name (a fullnameOverride, or a value such as serviceAccount.name): \
                 leave that unset for the slots so each release names its own (e.g. from {{ .Release.Name }})",
            ));
        }
    }
    Ok(())
}

/// A fixed node port or host port cannot be held by both slots at once.
fn fixed_ports(slot: &Rendered, c: &Checks) -> Result<(), Refusal> {
    for o in slot.all() {
        if o.kind == "Service" {
            if let Some(p) = o.doc["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["nodePort"].as_u64().is_some_and(|n| n > 0))
            {
                return Err(Refusal::new(
                    format!(
                        "{} in {} sets nodePort {}: both slots cannot hold one node port",
                        o.describe(c.namespace),
                        slot.release,
                        p["nodePort"]
                    ),
                    "leave nodePort unset in the chart's values (the router's own Services can be exposed instead: service.type)",
                ));
            }
        }
        for container in o.containers() {
            if let Some(p) = container["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["hostPort"].as_u64().is_some_and(|n| n > 0))
            {
                return Err(Refusal::new(
                    format!(
                        "{} in {} gives container {} hostPort {}: both slots' pods cannot bind it on one node",
                        o.describe(c.namespace),
                        slot.release,
                        container["name"].as_str().unwrap_or("?"),
                        p["hostPort"]
                    ),
                    "remove the hostPort from the chart's values; traffic reaches the slots through the router's Services",
                ));
            }
        }
    }
    Ok(())
}

/// The risks each object of a render is, with why.
pub fn risks_of(
    rendered: &Rendered,
    namespace: &str,
    scopes: &Scopes,
) -> BTreeMap<Risk, Vec<String>> {
    let mut found: BTreeMap<Risk, Vec<String>> = BTreeMap::new();
    for o in &rendered.objects {
        let risk = if scopes.is_cluster_scoped(o) {
            Some(Risk::ClusterScoped)
        } else {
            match o.kind.as_str() {
                "StatefulSet" | "PersistentVolumeClaim" => Some(Risk::Stateful),
                "CronJob" | "Job" => Some(Risk::Jobs),
                "DaemonSet" => Some(Risk::Daemonset),
                _ => None,
            }
        };
        if let Some(risk) = risk {
            let what = if risk == Risk::ClusterScoped {
                format!("{} {}", o.kind, o.name)
            } else {
                o.describe(namespace)
            };
            found.entry(risk).or_default().push(what);
        }
    }
    for hook in &rendered.hooks {
        let deletes: Vec<&String> = hook
            .events
            .iter()
            .filter(|e| matches!(e.as_str(), "pre-delete" | "post-delete"))
            .collect();
        if !deletes.is_empty() {
            found.entry(Risk::DeleteHooks).or_default().push(format!(
                "{} ({})",
                hook.object.describe(namespace),
                deletes
                    .iter()
                    .map(|e| e.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if scopes.is_cluster_scoped(&hook.object) {
            found.entry(Risk::ClusterScoped).or_default().push(format!(
                "{} {} (a hook)",
                hook.object.kind, hook.object.name
            ));
        }
    }
    found
}

fn why(risk: Risk) -> &'static str {
    match risk {
        Risk::ClusterScoped => "each slot release renders its own, and must not share one",
        Risk::Stateful => "each slot gets its own state, or both write the same volume",
        Risk::Jobs => "each slot runs them: twice the scheduled work",
        Risk::Daemonset => "a pod per node per slot",
        Risk::DeleteHooks => "they run when clean uninstalls the old slot",
    }
}

/// What is unsafe to run twice side by side, unless accepted by name.
fn risks(slot: &Rendered, c: &Checks) -> Result<Vec<Risk>, Refusal> {
    let found = risks_of(slot, c.namespace, c.scopes);
    let refused: Vec<String> = found
        .iter()
        .filter(|(risk, _)| !c.app.accept.contains(risk))
        .map(|(risk, objects)| format!("{risk} ({}): {}", why(*risk), objects.join(", ")))
        .collect();
    if !refused.is_empty() {
        let flags: Vec<String> = found
            .keys()
            .filter(|r| !c.app.accept.contains(r))
            .map(|r| format!("--accept {r}"))
            .collect();
        return Err(Refusal::new(
            format!(
                "{} renders what is unsafe to run twice side by side: {}",
                slot.release,
                refused.join("; ")
            ),
            format!(
                "turn these off in the chart's values for the slots, or run it anyway with `{}` (status then shows them as warnings)",
                flags.join(" ")
            ),
        ));
    }
    Ok(found.into_keys().collect())
}

struct Mirrored<'a> {
    service: &'a Object,
    /// The Deployments of the slot it selects.
    routed: Vec<&'a Object>,
}

/// The Service whose selector and ports the router copies.
fn mirrored_service<'a>(r: &Renders<'a>, c: &Checks) -> Result<Mirrored<'a>, Refusal> {
    let slot = r.slot;
    let release = slot.release.as_str();
    let services: Vec<&Object> = slot.of_kind("Service").collect();
    let routed_by = |svc: &Object| -> Vec<&'a Object> {
        let selector = svc.selector();
        slot.deployments()
            .filter(|d| selects(&selector, &d.pod_labels()))
            .collect()
    };
    let names = |list: &[&Object]| {
        if list.is_empty() {
            "none".to_string()
        } else {
            list.iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let pattern = |name: &str| name.replace(release, "{release}");
    let service = match c.app.service_in(release) {
        Some(wanted) => {
            let Some(svc) = services.iter().find(|s| s.name == wanted) else {
                return Err(Refusal::new(
                    format!(
                        "{release} renders no Service named {wanted} (--service {}); its Services: {}",
                        c.app.service,
                        names(&services)
                    ),
                    format!(
                        "name the Service to mirror with --service, {{release}} standing for the slot release (e.g. --service '{}')",
                        services.first().map(|s| pattern(&s.name)).unwrap_or_else(|| "{release}-NAME".into())
                    ),
                ));
            };
            if svc.selector().is_empty() {
                return Err(Refusal::new(
                    format!("Service {wanted} of {release} has no selector: the router copies a selector to reach the slot's pods"),
                    "name a Service that selects the app's pods with --service",
                ));
            }
            if routed_by(svc).is_empty() {
                return Err(Refusal::new(
                    format!(
                        "Service {wanted} of {release} selects {}, which no Deployment of {release} carries",
                        super::values::label_selector(&svc.selector())
                    ),
                    "name the Service of the app's Deployment with --service",
                ));
            }
            *svc
        }
        None => {
            let candidates: Vec<&Object> = services
                .iter()
                .copied()
                .filter(|s| !routed_by(s).is_empty())
                .collect();
            match candidates.as_slice() {
                [one] => *one,
                [] => {
                    return Err(Refusal::new(
                        format!(
                            "{release} renders no Service that selects a Deployment of it (its Services: {}): the router copies one to reach the slot's pods",
                            names(&services)
                        ),
                        "render a Service for the app's Deployment in the chart, or name one with --service",
                    ))
                }
                many => {
                    return Err(Refusal::new(
                        format!(
                            "{release} renders {} Services that select its Deployments ({}): which one should the router mirror?",
                            many.len(),
                            names(many)
                        ),
                        format!(
                            "name it with --service, {{release}} standing for the slot release: {}",
                            many.iter()
                                .map(|s| format!("--service '{}'", pattern(&s.name)))
                                .collect::<Vec<_>>()
                                .join(" or ")
                        ),
                    ))
                }
            }
        }
    };
    let selector = service.selector();
    let shared: Vec<String> = r
        .other
        .selected_by(&selector)
        .map(|o| o.describe(c.namespace))
        .collect();
    if !shared.is_empty() {
        return Err(Refusal::new(
            format!(
                "Service {} of {release} selects {}, which the pods of {} carry too ({}): the router would send one slot's traffic to both",
                service.name,
                super::values::label_selector(&selector),
                r.other.release,
                shared.join(", ")
            ),
            "make the chart's selector include the release, as `helm create`'s does (app.kubernetes.io/instance: {{ .Release.Name }}), or name a Service that does with --service",
        ));
    }
    let routed = routed_by(service);
    for port in ports_of(service) {
        if let TargetPort::Name(name) = port.target() {
            let declared = routed.iter().any(|d| {
                d.containers().iter().any(|ctr| {
                    ctr["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|p| p["name"].as_str() == Some(name.as_str()))
                })
            });
            if !declared {
                return Err(Refusal::new(
                    format!(
                        "Service {} of {release} sends port {} to the port named {name}, which no container of {} declares",
                        service.name,
                        port.describe(),
                        routed.iter().map(|d| d.describe(c.namespace)).collect::<Vec<_>>().join(", ")
                    ),
                    "fix the Service's targetPort or the container's port name in the chart; the router copies the Service as it is",
                ));
            }
        }
    }
    Ok(Mirrored { service, routed })
}

/// The ports the router copies: name, port, targetPort, protocol, appProtocol (never a nodePort).
pub fn ports_of(service: &Object) -> Vec<PortRecord> {
    service.doc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some(PortRecord {
                name: p["name"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                    .map(str::to_string),
                port: u16::try_from(p["port"].as_u64()?).ok()?,
                target_port: match &p["targetPort"] {
                    Value::Number(n) => n
                        .as_u64()
                        .and_then(|n| u16::try_from(n).ok())
                        .map(TargetPort::Number),
                    Value::String(s) if s.parse::<u16>().is_ok() => {
                        s.parse().ok().map(TargetPort::Number)
                    }
                    Value::String(s) if !s.is_empty() => Some(TargetPort::Name(s.clone())),
                    _ => None,
                },
                protocol: p["protocol"].as_str().unwrap_or("TCP").to_string(),
                app_protocol: p["appProtocol"].as_str().map(str::to_string),
            })
        })
        .collect()
}

/// The chart's own Ingress or HTTPRoute may not claim a host the router (or the other slot)
/// serves: the slots would take production's traffic by host.
fn host_claims(slot: &Rendered, by: &Rendered, c: &Checks, whose: &str) -> Result<(), Refusal> {
    let served: BTreeSet<String> = by.all().flat_map(hosts_of).collect();
    for o in slot.all() {
        for host in hosts_of(o) {
            if served.contains(&host) {
                let shown = if host == "*" {
                    "every host (a rule without a host)".to_string()
                } else {
                    format!("host {host}")
                };
                return Err(Refusal::new(
                    format!(
                        "{} of {} claims {shown}, which {whose} {} serves too",
                        o.describe(c.namespace),
                        slot.release,
                        by.release
                    ),
                    "turn the chart's own ingress off for the slots (e.g. --set ingress.enabled=false): the router's Ingress, HTTPRoute or Istio routes send the host to production and stage",
                ));
            }
        }
    }
    Ok(())
}

/// An image reference split leniently: `repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageParts {
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

pub fn image_parts(image: &str) -> ImageParts {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest.to_string())),
        None => (image, None),
    };
    let slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    match name[slash..].rfind(':') {
        Some(i) => ImageParts {
            repository: name[..slash + i].to_string(),
            tag: Some(name[slash + i + 1..].to_string()),
            digest,
        },
        None => ImageParts {
            repository: name.to_string(),
            tag: None,
            digest,
        },
    }
}

/// The container of a routed Deployment that serves the mirrored Service's first port: the one
/// declaring its target port, else the first app container.
fn routed_container<'a>(deployment: &'a Object, port: Option<&PortRecord>) -> Option<&'a Value> {
    let containers = deployment.app_containers();
    let declares = |ctr: &&&Value| {
        let Some(port) = port else { return false };
        ctr["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| match port.target() {
                TargetPort::Name(name) => p["name"].as_str() == Some(name.as_str()),
                TargetPort::Number(n) => p["containerPort"].as_u64() == Some(u64::from(n)),
            })
    };
    containers
        .iter()
        .find(declares)
        .or(containers.first())
        .copied()
}

/// The version asked for must reach the routed container's image, and nothing bgslot did not
/// ask for may pin it.
fn routed_image(slot: &Rendered, m: &Mirrored, c: &Checks) -> Result<(String, String), Refusal> {
    let ports = ports_of(m.service);
    let deployment = m.routed[0];
    let container = routed_container(deployment, ports.first()).ok_or_else(|| {
        Refusal::new(
            format!(
                "{} of {} has no container",
                deployment.describe(c.namespace),
                slot.release
            ),
            "check the chart's Deployment",
        )
    })?;
    let name = container["name"].as_str().unwrap_or_default().to_string();
    let image = container["image"].as_str().unwrap_or_default().to_string();
    let parts = image_parts(&image);
    let at = format!(
        "container {name} of {} renders {image}",
        deployment.describe(c.namespace)
    );
    let w = c.wanted;
    if let Some(tag) = &w.tag {
        if parts.tag.as_ref() != Some(tag) {
            return Err(Refusal::new(
                format!("the tag {tag} did not reach the routed image: {at}"),
                format!(
                    "the chart takes its tag from another value than {}: name it with --tag-key KEY (the value the Deployment's image reads)",
                    c.app.tag_key
                ),
            ));
        }
    }
    if let Some(repository) = &w.repository {
        if &parts.repository != repository {
            let hint = if c.app.repository_key.is_empty() {
                "bgslot sets a repository only through --repository-key KEY (the chart's value, e.g. image.repository)".to_string()
            } else {
                format!("the chart takes its repository from another value than {}: fix --repository-key", c.app.repository_key)
            };
            return Err(Refusal::new(
                format!("the repository {repository} did not reach the routed image: {at}"),
                hint,
            ));
        }
    }
    match (&w.digest, &parts.digest) {
        (Some(want), have) if have.as_ref() != Some(want) => {
            let hint = if c.app.digest_key.is_empty() {
                "bgslot sets a digest only through --digest-key KEY (the chart's value, e.g. image.digest)".to_string()
            } else {
                format!(
                    "the chart takes its digest from another value than {}: fix --digest-key",
                    c.app.digest_key
                )
            };
            Err(Refusal::new(
                format!("the digest {want} did not reach the routed image: {at}"),
                hint,
            ))
        }
        (None, Some(pinned)) => {
            let hint = if c.app.digest_key.is_empty() {
                "name the chart's digest value with --digest-key KEY so bgslot clears it for a new tag, or deploy a digest with --image REPOSITORY@sha256:...".to_string()
            } else {
                format!(
                    "the digest comes from another value than {}: fix --digest-key",
                    c.app.digest_key
                )
            };
            Err(Refusal::new(
                format!("the routed image is pinned by digest {pinned}, which bgslot did not ask for: it would run that build whatever the tag says ({at})"),
                hint,
            ))
        }
        _ => Ok((name, image)),
    }
}

/// The replicas asked for must reach the routed Deployments that render them; the ones that do
/// not (an HPA owns their replicas) bgslot scales itself.
fn replicas(slot: &Rendered, m: &Mirrored, c: &Checks) -> Result<Vec<String>, Refusal> {
    let Some(want) = c.replicas else {
        return Ok(Vec::new());
    };
    let mut scale = Vec::new();
    for d in &m.routed {
        match d.doc["spec"]["replicas"].as_u64() {
            None => scale.push(d.name.clone()),
            Some(_) if c.app.replicas_key.is_empty() => scale.push(d.name.clone()),
            Some(have) if have != want => {
                return Err(Refusal::new(
                    format!(
                        "{want} replicas did not reach {} of {}: it renders {have}; the chart does not read its replica count from {}",
                        d.describe(c.namespace),
                        slot.release,
                        c.app.replicas_key
                    ),
                    "name the chart's replica value with --replicas-key KEY, or pass --replicas-key '' to let bgslot scale the Deployment itself",
                ));
            }
            Some(_) => {}
        }
    }
    Ok(scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::manifest::parse;

    const NS: &str = "shop";

    /// A slot release as `helm create myapp` renders it (service, deployment, serviceaccount).
    fn helm_create(release: &str) -> String {
        format!(
            "
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {release}-myapp}}
---
apiVersion: v1
kind: Service
metadata: {{name: {release}-myapp}}
spec:
  type: ClusterIP
  ports: [{{port: 80, targetPort: http, protocol: TCP, name: http}}]
  selector: {{app.kubernetes.io/name: myapp, app.kubernetes.io/instance: {release}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {release}-myapp}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app.kubernetes.io/name: myapp, app.kubernetes.io/instance: {release}}}}}
  template:
    metadata:
      labels: {{helm.sh/chart: myapp-0.1.0, app.kubernetes.io/name: myapp, app.kubernetes.io/instance: {release}}}
    spec:
      serviceAccountName: {release}-myapp
      containers:
        - name: myapp
          image: nginx:v2
          ports: [{{name: http, containerPort: 80, protocol: TCP}}]
"
        )
    }

    fn rendered(release: &str, manifest: &str) -> Rendered {
        Rendered {
            release: release.into(),
            objects: parse(manifest).unwrap(),
            hooks: Vec::new(),
        }
    }

    fn router() -> Rendered {
        rendered(
            "web",
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web-stage}\n",
        )
    }

    struct Case {
        slot: Rendered,
        other: Rendered,
        router: Rendered,
        app: AppSettings,
        wanted: Wanted,
        replicas: Option<u64>,
        scopes: Scopes,
    }

    impl Case {
        fn new() -> Case {
            Case {
                slot: rendered("web-green", &helm_create("web-green")),
                other: rendered(
                    "web-blue",
                    &helm_create("web-blue").replace("nginx:v2", "nginx:v1"),
                ),
                router: router(),
                app: AppSettings::default(),
                wanted: Wanted {
                    tag: Some("v2".into()),
                    ..Wanted::default()
                },
                replicas: None,
                scopes: Scopes::builtin(),
            }
        }

        fn slot(mut self, f: impl Fn(String) -> String) -> Case {
            self.slot = rendered("web-green", &f(helm_create("web-green")));
            self
        }

        fn run(&self) -> Result<Analysis, Refusal> {
            let renders = Renders {
                slot: &self.slot,
                other: &self.other,
            };
            let checks = Checks {
                release: "web",
                namespace: NS,
                app: &self.app,
                wanted: &self.wanted,
                replicas: self.replicas,
                scopes: &self.scopes,
            };
            let analysis = analyze(&renders, &checks)?;
            check_router(&self.router, &renders, &checks)?;
            Ok(analysis)
        }

        fn refusal(&self) -> Refusal {
            self.run().expect_err("a refusal")
        }
    }

    fn add(doc: &str) -> impl Fn(String) -> String + '_ {
        move |m| format!("{m}---\n{doc}\n")
    }

    #[test]
    fn a_helm_create_chart_passes_and_says_what_to_route_to() {
        let a = Case::new().run().unwrap();
        assert_eq!(a.service, "web-green-myapp");
        assert_eq!(
            super::super::values::label_selector(&a.selector),
            "app.kubernetes.io/instance=web-green,app.kubernetes.io/name=myapp"
        );
        assert_eq!(a.ports[0].describe(), "http 80->http/TCP");
        assert_eq!(
            (a.routed.clone(), a.deployments.clone()),
            (
                vec!["web-green-myapp".to_string()],
                vec!["web-green-myapp".to_string()]
            )
        );
        assert_eq!(
            (a.container.as_str(), a.image.as_str()),
            ("myapp", "nginx:v2")
        );
        assert!(a.accepted.is_empty() && a.scale.is_empty());
    }

    #[test]
    fn a_shared_name_is_refused_naming_both_releases() {
        // fullnameOverride: both slot releases render the same names.
        let mut case = Case::new();
        case.slot = rendered(
            "web-green",
            &helm_create("web-blue").replace("nginx:v1", "nginx:v2"),
        );
        let err = case.refusal();
        assert!(
            err.reason.starts_with("web-green and web-blue would both render Service shop/web-blue-myapp, ServiceAccount shop/web-blue-myapp, Deployment shop/web-blue-myapp: "),
            "{err:?}"
        );
        assert!(err.hint.contains("fullnameOverride"), "{}", err.hint);
        // A name the router renders.
        let err = Case::new()
            .slot(add("apiVersion: v1\nkind: Service\nmetadata: {name: web-stage}\nspec: {selector: {a: b}}"))
            .refusal();
        assert!(
            err.reason
                .contains("web-green and web would both render Service shop/web-stage"),
            "{err:?}"
        );
        // Cluster-scoped objects collide whatever namespace they claim.
        let mut case = Case::new();
        case.app.accept = vec![Risk::ClusterScoped];
        case.slot = rendered("web-green", &format!("{}---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: reader, namespace: a}}\n", helm_create("web-green")));
        case.other = rendered("web-blue", &format!("{}---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: reader}}\n", helm_create("web-blue").replace("nginx:v2", "nginx:v1")));
        assert!(case
            .refusal()
            .reason
            .contains("would both render ClusterRole"));
    }

    #[test]
    fn fixed_node_ports_and_host_ports_are_refused() {
        let err = Case::new()
            .slot(|m| {
                m.replace(
                    "protocol: TCP, name: http}",
                    "protocol: TCP, name: http, nodePort: 30080}",
                )
            })
            .refusal();
        assert!(
            err.reason
                .contains("Service shop/web-green-myapp in web-green sets nodePort 30080"),
            "{err:?}"
        );
        let err = Case::new()
            .slot(|m| {
                m.replace(
                    "containerPort: 80, protocol: TCP}",
                    "containerPort: 80, hostPort: 8080, protocol: TCP}",
                )
            })
            .refusal();
        assert!(
            err.reason.contains("gives container myapp hostPort 8080"),
            "{err:?}"
        );
    }

    #[test]
    fn an_ingress_of_the_chart_may_not_claim_a_host_the_router_or_the_other_slot_serves() {
        let ingress = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web-green-myapp}\nspec: {rules: [{host: chart-example.local}]}";
        let router_ingress = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web}\nspec: {rules: [{host: stage.example.com}, {host: chart-example.local}]}";
        let mut case = Case::new().slot(add(ingress));
        case.router = rendered("web", router_ingress);
        let err = case.refusal();
        assert!(err.reason.contains("Ingress shop/web-green-myapp of web-green claims host chart-example.local, which the router web serves too"), "{err:?}");
        assert!(err.hint.contains("ingress.enabled=false"), "{}", err.hint);
        let mut case = Case::new().slot(add(ingress));
        case.other = rendered(
            "web-blue",
            &format!(
                "{}---\n{}",
                helm_create("web-blue").replace("nginx:v2", "nginx:v1"),
                ingress.replace("web-green", "web-blue")
            ),
        );
        assert!(case
            .refusal()
            .reason
            .contains("which the other slot's release web-blue serves too"));
        // An HTTPRoute without hostnames claims every host, as does an Istio route for "*".
        let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec: {parentRefs: [{name: gw}]}";
        let mut case = Case::new().slot(add(route));
        case.scopes
            .learn("gateway.networking.k8s.io", "HTTPRoute", true);
        case.router = rendered("web", "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: web}\nspec: {hosts: ['*']}");
        case.scopes
            .learn("networking.istio.io", "VirtualService", true);
        assert!(case.refusal().reason.contains("claims every host"));
        // A host nobody else serves is the chart's own business.
        let mut case = Case::new().slot(add(ingress));
        case.router = rendered(
            "web",
            &router_ingress.replace("chart-example.local", "web.example.com"),
        );
        assert!(case.run().is_ok());
    }

    #[test]
    fn the_service_to_mirror_must_exist_be_one_select_a_deployment_of_this_slot_only() {
        // Named, but missing.
        let mut case = Case::new();
        case.app.service = "{release}-podinfo".into();
        let err = case.refusal();
        assert!(err.reason.contains("web-green renders no Service named web-green-podinfo (--service {release}-podinfo); its Services: web-green-myapp"), "{err:?}");
        assert!(
            err.hint.contains("--service '{release}-myapp'"),
            "{}",
            err.hint
        );
        // Named, without a selector.
        let mut case = Case::new().slot(add("apiVersion: v1\nkind: Service\nmetadata: {name: web-green-headless}\nspec: {clusterIP: None}"));
        case.app.service = "{release}-headless".into();
        assert!(case.refusal().reason.contains("has no selector"));
        // Named, selecting nothing of the slot.
        let mut case = Case::new().slot(add("apiVersion: v1\nkind: Service\nmetadata: {name: web-green-db}\nspec: {selector: {app: db}}"));
        case.app.service = "{release}-db".into();
        assert!(case
            .refusal()
            .reason
            .contains("selects app=db, which no Deployment of web-green carries"));
        // Two candidates: ambiguous, with the flag for each.
        let err = Case::new()
            .slot(add("apiVersion: v1\nkind: Service\nmetadata: {name: web-green-metrics}\nspec: {selector: {app.kubernetes.io/instance: web-green}, ports: [{port: 9090}]}"))
            .refusal();
        assert!(err.reason.contains("renders 2 Services that select its Deployments (web-green-myapp, web-green-metrics)"), "{err:?}");
        assert!(
            err.hint
                .contains("--service '{release}-myapp' or --service '{release}-metrics'"),
            "{}",
            err.hint
        );
        // None at all.
        let err = Case::new()
            .slot(|m| m.replace("kind: Service\n", "kind: ConfigMap\n"))
            .refusal();
        assert!(
            err.reason
                .contains("renders no Service that selects a Deployment of it"),
            "{err:?}"
        );
        // A selector the other slot's pods match too (`app: NAME` only).
        let mut case = Case::new().slot(|m| {
            m.replace(
                "selector: {app.kubernetes.io/name: myapp, app.kubernetes.io/instance: web-green}",
                "selector: {app.kubernetes.io/name: myapp}",
            )
        });
        let err = case.refusal();
        assert!(err.reason.contains("selects app.kubernetes.io/name=myapp, which the pods of web-blue carry too (Deployment shop/web-blue-myapp)"), "{err:?}");
        assert!(err.hint.contains("{{ .Release.Name }}"), "{}", err.hint);
        // ... but --service naming one that includes the release passes.
        case = case.slot(|m| {
            format!(
                "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: web-green-own}}\nspec: {{selector: {{app.kubernetes.io/instance: web-green}}, ports: [{{port: 80, targetPort: http}}]}}\n",
                m.replace("selector: {app.kubernetes.io/name: myapp, app.kubernetes.io/instance: web-green}", "selector: {app.kubernetes.io/name: myapp}")
            )
        });
        case.app.service = "{release}-own".into();
        assert_eq!(case.run().unwrap().service, "web-green-own");
        // A target port name no container declares.
        let err = Case::new()
            .slot(|m| m.replace("targetPort: http", "targetPort: web"))
            .refusal();
        assert!(err.reason.contains("sends port http 80->web/TCP to the port named web, which no container of Deployment shop/web-green-myapp declares"), "{err:?}");
    }

    #[test]
    fn risks_are_refused_unless_accepted_by_name() {
        let all = concat!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: web-green-reader}\n---\n",
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec: {template: {metadata: {labels: {app: db}}, spec: {containers: [{name: db}]}}}\n---\n",
            "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: report}\nspec: {jobTemplate: {spec: {template: {spec: {containers: [{name: r}]}}}}}\n---\n",
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec: {template: {spec: {containers: [{name: a}]}}}\n",
        );
        let mut case = Case::new().slot(add(all));
        case.slot.hooks.push(crate::router::manifest::Hook {
            events: vec!["pre-delete".into()],
            object: parse("apiVersion: batch/v1\nkind: Job\nmetadata: {name: cleanup}")
                .unwrap()
                .remove(0),
        });
        let err = case.refusal();
        for part in [
            "web-green renders what is unsafe to run twice side by side: ",
            "cluster-scoped (each slot release renders its own, and must not share one): ClusterRole web-green-reader",
            "stateful (each slot gets its own state, or both write the same volume): StatefulSet shop/db",
            "jobs (each slot runs them: twice the scheduled work): CronJob shop/report",
            "daemonset (a pod per node per slot): DaemonSet shop/agent",
            "delete-hooks (they run when clean uninstalls the old slot): Job shop/cleanup (pre-delete)",
        ] {
            assert!(err.reason.contains(part), "{part} in {err:?}");
        }
        assert!(err.hint.contains("--accept cluster-scoped --accept stateful --accept jobs --accept daemonset --accept delete-hooks"), "{}", err.hint);
        case.app.accept = vec![
            Risk::ClusterScoped,
            Risk::Stateful,
            Risk::Jobs,
            Risk::Daemonset,
        ];
        let err = case.refusal();
        assert!(
            err.reason.contains("delete-hooks") && !err.reason.contains("stateful"),
            "{err:?}"
        );
        case.app.accept.push(Risk::DeleteHooks);
        assert_eq!(case.run().unwrap().accepted, Risk::ALL.to_vec());
        // A plain Job counts; a hook Job that runs at install or upgrade does not.
        let case = Case::new().slot(add("apiVersion: batch/v1\nkind: Job\nmetadata: {name: once}\nspec: {template: {spec: {containers: [{name: x}]}}}"));
        assert!(case.refusal().reason.contains("jobs ("));
        let mut case = Case::new();
        case.slot.hooks.push(crate::router::manifest::Hook {
            events: vec!["pre-upgrade".into(), "pre-install".into()],
            object: parse("apiVersion: batch/v1\nkind: Job\nmetadata: {name: migrate}")
                .unwrap()
                .remove(0),
        });
        assert!(case.run().is_ok());
        // A kind the API server says is cluster-scoped.
        let mut case = Case::new().slot(add(
            "apiVersion: cert-manager.io/v1\nkind: ClusterIssuer\nmetadata: {name: letsencrypt}",
        ));
        assert_eq!(
            case.scopes.unknown(case.slot.all()),
            BTreeSet::from(["cert-manager.io/v1".to_string()])
        );
        case.scopes.learn("cert-manager.io", "ClusterIssuer", false);
        assert!(case.refusal().reason.contains("ClusterIssuer letsencrypt"));
    }

    #[test]
    fn the_version_must_reach_the_routed_image_and_no_other_digest_may_pin_it() {
        let mut case = Case::new();
        case.wanted.tag = Some("v3".into());
        let err = case.refusal();
        assert!(err.reason.contains("the tag v3 did not reach the routed image: container myapp of Deployment shop/web-green-myapp renders nginx:v2"), "{err:?}");
        assert!(err.hint.contains("--tag-key"), "{}", err.hint);
        let digest = format!("sha256:{}", "a".repeat(64));
        let pinned = Case::new().slot(|m| m.replace("nginx:v2", &format!("nginx:v2@{digest}")));
        let err = pinned.refusal();
        assert!(
            err.reason.contains(&format!(
                "pinned by digest {digest}, which bgslot did not ask for"
            )),
            "{err:?}"
        );
        assert!(err.hint.contains("--digest-key"), "{}", err.hint);
        let mut asked = pinned;
        asked.wanted = Wanted {
            repository: Some("nginx".into()),
            tag: Some("v2".into()),
            digest: Some(digest.clone()),
        };
        assert!(asked.run().is_ok());
        asked.wanted.digest = Some(format!("sha256:{}", "b".repeat(64)));
        assert!(asked
            .refusal()
            .reason
            .contains("did not reach the routed image"));
        let mut repo = Case::new();
        repo.wanted.repository = Some("ghcr.io/acme/web".into());
        let err = repo.refusal();
        assert!(
            err.reason
                .contains("the repository ghcr.io/acme/web did not reach"),
            "{err:?}"
        );
        assert!(err.hint.contains("--repository-key"), "{}", err.hint);
        assert_eq!(
            image_parts("localhost:5000/acme/web:v2@sha256:x"),
            ImageParts {
                repository: "localhost:5000/acme/web".into(),
                tag: Some("v2".into()),
                digest: Some("sha256:x".into())
            }
        );
        assert_eq!(image_parts("nginx").tag, None);
    }

    #[test]
    fn replicas_reach_the_chart_or_bgslot_scales_what_renders_none() {
        let mut case = Case::new();
        case.replicas = Some(3);
        let err = case.refusal();
        assert!(err.reason.contains("3 replicas did not reach Deployment shop/web-green-myapp of web-green: it renders 1"), "{err:?}");
        let mut three = Case::new().slot(|m| m.replace("replicas: 1", "replicas: 3"));
        three.replicas = Some(3);
        assert!(three.run().unwrap().scale.is_empty());
        let mut hpa = Case::new().slot(|m| m.replace("  replicas: 1\n", ""));
        hpa.replicas = Some(3);
        assert_eq!(hpa.run().unwrap().scale, ["web-green-myapp"]);
        case.app.replicas_key = String::new();
        assert_eq!(case.run().unwrap().scale, ["web-green-myapp"]);
    }
}
