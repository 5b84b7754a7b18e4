//! What the router copies from the slot release: the Services to route (each one's selector and
//! ports), the Deployments they select, the routed container and its image, and the replicas.
//! Each must be what the deploy asked for, or the refusal says why and how to fix the chart's
//! values.

use serde_json::Value;

use super::{Checks, Renders};
use crate::error::Refusal;
use crate::names::image_parts;
use crate::slots::router::app::named_in;
use crate::slots::router::manifest::{selects, Object, Rendered};
use crate::slots::router::values::{label_selector, PortRecord, TargetPort};

pub(super) struct Mirrored<'a> {
    /// `main`, or a further route's name.
    pub(super) route: String,
    pub(super) service: &'a Object,
    /// The Deployments of the slot it selects.
    pub(super) routed: Vec<&'a Object>,
}

/// A Service without a cluster IP resolves to its pods one by one: there is nothing to route.
fn headless(svc: &Object) -> bool {
    svc.doc["spec"]["clusterIP"].as_str() == Some("None")
}

/// The Services the router routes: the main route's (named by `--service`, else the one Service
/// of the slot release that selects a Deployment of it), then each further route's. Each must
/// exist, not be headless, select a Deployment of this slot, reach no pod of the other slot, and
/// send its ports to ports a container declares.
pub(super) fn mirrored_services<'a>(
    r: &Renders<'a>,
    c: &Checks,
) -> Result<Vec<Mirrored<'a>>, Refusal> {
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
    let named = |wanted: &str, flag: &str| -> Result<&'a Object, Refusal> {
        let Some(svc) = services.iter().find(|s| s.name == wanted) else {
            return Err(Refusal::new(
                format!(
                    "{release} renders no Service named {wanted} (--service {flag}); its Services: {}",
                    names(&services)
                ),
                format!(
                    "name the Service to route with --service, {{release}} standing for the slot release (e.g. --service '{}')",
                    services.first().map(|s| pattern(&s.name)).unwrap_or_else(|| "{release}-NAME".into())
                ),
            ));
        };
        if headless(svc) {
            return Err(Refusal::new(
                format!("Service {wanted} of {release} is headless (clusterIP: None): it resolves to single pods, there is nothing to route"),
                "name the app's normal Service with --service",
            ));
        }
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
                    label_selector(&svc.selector())
                ),
                "name the Service of the app's Deployment with --service",
            ));
        }
        Ok(*svc)
    };
    let main = match c.app.service_in(release) {
        Some(wanted) => named(&wanted, &c.app.service)?,
        None => {
            let candidates: Vec<&Object> = services
                .iter()
                .copied()
                .filter(|s| !headless(s) && !routed_by(s).is_empty())
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
                    // The shortest name first (`web` before `web-streaming`): most often the main.
                    let mut many = many.to_vec();
                    many.sort_by_key(|s| (s.name.len(), s.name.clone()));
                    let many = many.as_slice();
                    return Err(Refusal::new(
                        format!(
                            "{release} renders {} Services that select its Deployments ({}): which one is the main route?",
                            many.len(),
                            names(many)
                        ),
                        format!(
                            "name them with --service, the main one first, {{release}} standing for the slot release: {}",
                            many.iter()
                                .map(|s| format!("--service '{}'", pattern(&s.name)))
                                .collect::<Vec<_>>()
                                .join(" ")
                        ),
                    ))
                }
            }
        }
    };
    let mut mirrored = vec![Mirrored {
        route: "main".into(),
        service: main,
        routed: routed_by(main),
    }];
    for route in &c.app.routes {
        let service = named(&named_in(&route.service, release), &route.service)?;
        if mirrored
            .iter()
            .any(|m| m.route == route.route || m.service.name == service.name)
        {
            return Err(Refusal::new(
                format!("--service {}={} routes {} or names the route {} twice", route.service, route.route, service.name, route.route),
                "give each Service once, each further route a name of its own (--service NAME=ROUTE)",
            ));
        }
        let longest = format!("{}-{}-stage", c.release, route.route);
        if route.route == "main" || longest.len() > 63 {
            return Err(Refusal::new(
                format!("the route {} of Service {} cannot name the router's Services ({longest})", route.route, service.name),
                "name the route with --service NAME=ROUTE: not main, and short enough for RELEASE-ROUTE-stage to fit 63 characters",
            ));
        }
        mirrored.push(Mirrored {
            route: route.route.clone(),
            service,
            routed: routed_by(service),
        });
    }
    for m in &mirrored {
        overlaps(r, c, m)?;
        declared_ports(c, release, m)?;
    }
    Ok(mirrored)
}

/// A route must reach one slot's pods only: the new slot's Service may not select the other
/// slot's pods, nor may a Service the router records for the other slot select the new slot's.
fn overlaps(r: &Renders, c: &Checks, m: &Mirrored) -> Result<(), Refusal> {
    let release = r.slot.release.as_str();
    let selector = m.service.selector();
    let shared: Vec<String> = r
        .other
        .selected_by(&selector)
        .map(|o| o.describe(c.namespace))
        .collect();
    let hint = "make the chart's selector include the release, as `helm create`'s does (app.kubernetes.io/instance: {{ .Release.Name }}), or name a Service that does with --service";
    if !shared.is_empty() {
        return Err(Refusal::new(
            format!(
                "Service {} of {release} selects {}, which the pods of {} carry too ({}): the router would send one slot's traffic to both",
                m.service.name,
                label_selector(&selector),
                r.other.release,
                shared.join(", ")
            ),
            hint,
        ));
    }
    for recorded in c.recorded.iter().flat_map(|record| record.selectors()) {
        let reached: Vec<String> = r
            .slot
            .selected_by(recorded)
            .map(|o| o.describe(c.namespace))
            .collect();
        if !reached.is_empty() {
            return Err(Refusal::new(
                format!(
                    "the router routes production by {}, which the pods of {release} would carry too ({}): production would reach the new version before the swap",
                    label_selector(recorded),
                    reached.join(", ")
                ),
                hint,
            ));
        }
    }
    let strangers: Vec<&str> = c
        .live_pods
        .iter()
        .filter(|pod| pod.release.as_deref() != Some(release) && selects(&selector, &pod.labels))
        .map(|pod| pod.name.as_str())
        .collect();
    if !strangers.is_empty() {
        return Err(Refusal::new(
            format!(
                "Service {} of {release} selects {}, which pods of the namespace that are not {release}'s carry already: {}",
                m.service.name,
                label_selector(&selector),
                strangers.join(", ")
            ),
            hint,
        ));
    }
    Ok(())
}

/// Every port the router copies must reach a port a routed container declares by name.
fn declared_ports(c: &Checks, release: &str, m: &Mirrored) -> Result<(), Refusal> {
    for port in ports_of(m.service) {
        if let TargetPort::Name(name) = port.target() {
            let declared = m.routed.iter().any(|d| {
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
                        m.service.name,
                        port.describe(),
                        m.routed.iter().map(|d| d.describe(c.namespace)).collect::<Vec<_>>().join(", ")
                    ),
                    "fix the Service's targetPort or the container's port name in the chart; the router copies the Service as it is",
                ));
            }
        }
    }
    Ok(())
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

/// The container of a routed Deployment that serves the main Service's first port: the one
/// declaring its target port, else the one whose image carries the tag asked for, else the first
/// app container.
fn routed_container<'a>(
    deployment: &'a Object,
    port: Option<&PortRecord>,
    tag: Option<&str>,
) -> Option<&'a Value> {
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
    let tagged = |ctr: &&&Value| {
        tag.is_some_and(|tag| {
            image_parts(ctr["image"].as_str().unwrap_or_default())
                .tag
                .as_deref()
                == Some(tag)
        })
    };
    containers
        .iter()
        .find(declares)
        .or_else(|| containers.iter().find(tagged))
        .or(containers.first())
        .copied()
}

/// The version asked for must reach the routed container's image, and every container of the
/// routed and worker Deployments that runs the same repository (a sidecar of another image
/// aside); nothing bgslot did not ask for may pin any of them.
pub(super) fn routed_image(
    slot: &Rendered,
    mirrored: &[Mirrored],
    workers: &[&Object],
    c: &Checks,
) -> Result<(String, String), Refusal> {
    let main = &mirrored[0];
    let ports = ports_of(main.service);
    let deployment = main.routed[0];
    let container = routed_container(deployment, ports.first(), c.wanted.tag.as_deref())
        .ok_or_else(|| {
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
    let at = |d: &Object, ctr: &Value| {
        format!(
            "container {} of {} renders {}",
            ctr["name"].as_str().unwrap_or("?"),
            d.describe(c.namespace),
            ctr["image"].as_str().unwrap_or_default()
        )
    };
    version_reached(&image, &at(deployment, container), c)?;
    let repository = image_parts(&image).repository;
    let mut deployments: Vec<&Object> = mirrored
        .iter()
        .flat_map(|m| m.routed.iter().copied())
        .collect();
    deployments.extend(workers);
    for d in deployments {
        for ctr in d.app_containers() {
            let theirs = ctr["image"].as_str().unwrap_or_default();
            if image_parts(theirs).repository == repository {
                version_reached(theirs, &at(d, ctr), c)?;
            }
        }
    }
    Ok((name, image))
}

/// Whether `image`, as `at` describes where it renders, runs the version asked for.
fn version_reached(image: &str, at: &str, c: &Checks) -> Result<(), Refusal> {
    let parts = image_parts(image);
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
        _ => Ok(()),
    }
}

/// The replicas asked for must reach the routed Deployments that render them; the ones that do
/// not (an HPA owns their replicas) bgslot scales itself.
pub(super) fn replicas(slot: &Rendered, m: &Mirrored, c: &Checks) -> Result<Vec<String>, Refusal> {
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
    use super::super::test_support::*;
    use super::super::Wanted;

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
        // Named, but headless; named, without a selector.
        let headless = "apiVersion: v1\nkind: Service\nmetadata: {name: web-green-headless}\nspec: {clusterIP: None, selector: {app.kubernetes.io/instance: web-green}, ports: [{port: 80}]}";
        let mut case = Case::new().slot(add(headless));
        case.app.service = "{release}-headless".into();
        assert!(case
            .refusal()
            .reason
            .contains("is headless (clusterIP: None)"));
        let mut case = Case::new().slot(add("apiVersion: v1\nkind: Service\nmetadata: {name: web-green-external}\nspec: {type: ExternalName, externalName: example.com}"));
        case.app.service = "{release}-external".into();
        assert!(case.refusal().reason.contains("has no selector"));
        // A headless Service beside the normal one is never a candidate.
        assert_eq!(
            Case::new().slot(add(headless)).run().unwrap().service,
            "web-green-myapp"
        );
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
                .contains("the main one first, {release} standing for the slot release: --service '{release}-myapp' --service '{release}-metrics'"),
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

    const STREAM: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web-green-streaming}\nspec:\n  ports: [{port: 4000, targetPort: streaming, name: streaming}]\n  selector: {app.kubernetes.io/instance: web-green, app.kubernetes.io/component: streaming}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web-green-streaming}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app.kubernetes.io/instance: web-green, app.kubernetes.io/component: streaming}}\n  template:\n    metadata: {labels: {app.kubernetes.io/instance: web-green, app.kubernetes.io/component: streaming}}\n    spec: {containers: [{name: streaming, image: \"nginx:v2\", ports: [{name: streaming, containerPort: 4000}]}]}";

    fn two_routes() -> Case {
        // helm create's selector (name and instance) does not reach the streaming pods.
        let mut case = Case::new().slot(add(STREAM));
        case.app.service = "{release}-myapp".into();
        case.app.routes = vec![crate::slots::router::app::RouteSetting {
            service: "{release}-streaming".into(),
            route: "streaming".into(),
        }];
        case
    }

    #[test]
    fn each_further_service_is_a_route_of_its_own_checked_as_the_main_one() {
        let a = two_routes().run().unwrap();
        assert_eq!(a.service, "web-green-myapp");
        assert_eq!(a.routes.len(), 1);
        let route = &a.routes[0];
        assert_eq!(
            (route.route.as_str(), route.service.as_str()),
            ("streaming", "web-green-streaming")
        );
        assert_eq!(route.ports[0].describe(), "streaming 4000->streaming/TCP");
        assert_eq!(a.deployments, ["web-green-myapp", "web-green-streaming"]);
        // Without --service, two candidates: which one is main?
        let mut unnamed = two_routes();
        (unnamed.app.service, unnamed.app.routes) = (String::new(), Vec::new());
        assert!(unnamed
            .refusal()
            .reason
            .contains("renders 2 Services that select its Deployments"));
        // A further route's tag is checked too: every container of the repository.
        let mut behind = two_routes().slot(|m| {
            m.replace(
                "{name: streaming, image: \"nginx:v2\"",
                "{name: streaming, image: \"nginx:v1\"",
            )
        });
        let err = behind.refusal();
        assert!(err.reason.contains("the tag v2 did not reach the routed image: container streaming of Deployment shop/web-green-streaming renders nginx:v1"), "{err:?}");
        // A route name taken twice, or one too long for the router's Service names.
        behind = two_routes();
        behind.app.routes[0].route = "main".into();
        assert!(behind
            .refusal()
            .reason
            .contains("names the route main twice"));
        behind.app.routes[0].route = "s".repeat(60);
        assert!(behind
            .refusal()
            .reason
            .contains("cannot name the router's Services"));
    }

    #[test]
    fn a_route_reaches_one_slot_only_both_ways_and_no_stranger_s_pods() {
        use crate::slots::router::fixtures;
        use crate::vocab::Slot;
        // Production's recorded selector would reach the new slot's pods.
        let mut case = Case::new();
        let mut record = fixtures::record(Slot::Blue, "v1");
        record.selector = [("app.kubernetes.io/name".to_string(), "myapp".to_string())].into();
        case.recorded = Some(record);
        let err = case.refusal();
        assert!(err.reason.contains("the router routes production by app.kubernetes.io/name=myapp, which the pods of web-green would carry too"), "{err:?}");
        // A pod of the namespace that is not the slot release's carries the selector's labels.
        let mut case = Case::new();
        let labels = [
            ("app.kubernetes.io/name".to_string(), "myapp".to_string()),
            (
                "app.kubernetes.io/instance".to_string(),
                "web-green".to_string(),
            ),
        ];
        case.live_pods = vec![super::super::LivePod {
            name: "debug-7f9c".into(),
            labels: labels.clone().into(),
            release: None,
        }];
        let err = case.refusal();
        assert!(
            err.reason.contains(
                "pods of the namespace that are not web-green's carry already: debug-7f9c"
            ),
            "{err:?}"
        );
        case.live_pods[0].release = Some("web-green".into());
        assert!(
            case.run().is_ok(),
            "the slot release's own pods, from before"
        );
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
