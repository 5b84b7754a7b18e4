//! What the router copies from the slot release: the Service to mirror (its selector and ports),
//! the Deployments it selects, the routed container and its image, and the replicas. Each must be
//! what the deploy asked for, or the refusal says why and how to fix the chart's values.

use serde_json::Value;

use super::{Checks, Renders};
use crate::error::Refusal;
use crate::names::image_parts;
use crate::slots::router::manifest::{selects, Object, Rendered};
use crate::slots::router::values::{PortRecord, TargetPort};

pub(super) struct Mirrored<'a> {
    pub(super) service: &'a Object,
    /// The Deployments of the slot it selects.
    pub(super) routed: Vec<&'a Object>,
}

/// The Service whose selector and ports the router copies.
pub(super) fn mirrored_service<'a>(r: &Renders<'a>, c: &Checks) -> Result<Mirrored<'a>, Refusal> {
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
                        crate::slots::router::values::label_selector(&svc.selector())
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
                crate::slots::router::values::label_selector(&selector),
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
pub(super) fn routed_image(
    slot: &Rendered,
    m: &Mirrored,
    c: &Checks,
) -> Result<(String, String), Refusal> {
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
