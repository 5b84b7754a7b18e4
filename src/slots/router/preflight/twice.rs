//! What cannot run twice side by side: the slot release runs beside the other slot and the router,
//! so an object two releases would share, a fixed node or host port, a risk not accepted by name,
//! or a host another release serves is refused before anything is written.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::scopes::Scopes;
use super::Checks;
use crate::error::Refusal;
use crate::slots::router::manifest::{Object, Rendered};
use crate::slots::router::values::Risk;

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
pub(super) fn collisions(pairs: &[(&Rendered, &Rendered)], c: &Checks) -> Result<(), Refusal> {
    let index = |rendered: &Rendered| -> BTreeMap<ObjectKey, String> {
        rendered
            .named()
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

/// A slot release lives in its own namespace: bgslot waits on it, routes to it and cleans it
/// there, so an object rendered into another one (a `namespaceOverride`) would be left behind,
/// shared by both slots or never seen.
pub(super) fn foreign_namespaces(slot: &Rendered, c: &Checks) -> Result<(), Refusal> {
    let foreign: Vec<String> = slot
        .all()
        .filter(|o| !c.scopes.is_cluster_scoped(o))
        .filter(|o| o.namespace.as_deref().is_some_and(|ns| ns != c.namespace))
        .map(|o| o.describe(c.namespace))
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    Err(Refusal::new(
        format!(
            "{} renders into another namespace than {}: {}",
            slot.release,
            c.namespace,
            foreign.join(", ")
        ),
        "leave namespaceOverride (or the chart's own namespace value) unset for the slots: each slot release keeps its objects in the router's namespace",
    ))
}

/// A fixed node port, host port, load balancer IP or external IP cannot be held by both slots at
/// once, nor can two slots' pods share the node's network.
pub(super) fn fixed_ports(slot: &Rendered, c: &Checks) -> Result<(), Refusal> {
    for o in slot.all() {
        let spec = &o.doc["spec"];
        if o.kind == "Service"
            && spec["loadBalancerIP"]
                .as_str()
                .is_some_and(|ip| !ip.is_empty())
        {
            return Err(Refusal::new(
                format!(
                    "{} in {} asks for loadBalancerIP {}: both slots cannot hold one address",
                    o.describe(c.namespace),
                    slot.release,
                    spec["loadBalancerIP"].as_str().unwrap_or_default()
                ),
                "leave loadBalancerIP unset for the slots; give the router's Service the address instead (--router-set service.type=LoadBalancer and its annotations)",
            ));
        }
        if o.kind == "Service"
            && spec["externalIPs"]
                .as_array()
                .is_some_and(|ips| !ips.is_empty())
        {
            return Err(Refusal::new(
                format!(
                    "{} in {} claims externalIPs {}: both slots would take traffic for them",
                    o.describe(c.namespace),
                    slot.release,
                    spec["externalIPs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "leave externalIPs unset for the slots; traffic reaches the slots through the router's Services",
            ));
        }
        if let Some(pod) = o.pod_template() {
            if pod["spec"]["hostNetwork"] == Value::Bool(true) {
                return Err(Refusal::new(
                    format!(
                        "{} in {} runs its pods with hostNetwork: both slots' pods would bind the node's ports",
                        o.describe(c.namespace),
                        slot.release
                    ),
                    "turn hostNetwork off for the slots; traffic reaches the slots through the router's Services",
                ));
            }
        }
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
                // A CronJob follows production (suspended in the stage slot); a Job runs in each.
                "Job" => Some(Risk::Jobs),
                "Service" if o.doc["spec"]["type"] == "LoadBalancer" => Some(Risk::LoadBalancer),
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
        Risk::LoadBalancer => {
            "each slot gets its own public address: the stage slot is exposed as production is"
        }
        Risk::SkippedHooks => "the install of a slot release does not run them",
    }
}

/// What is unsafe to run twice side by side, unless accepted by name.
pub(super) fn risks(slot: &Rendered, c: &Checks) -> Result<Vec<Risk>, Refusal> {
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

/// The chart's own Ingress or HTTPRoute may not claim a host the router (or the other slot)
/// serves: the slots would take production's traffic by host.
pub(super) fn host_claims(
    slot: &Rendered,
    by: &Rendered,
    c: &Checks,
    whose: &str,
) -> Result<(), Refusal> {
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

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::slots::router::manifest::parse;

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
    fn another_namespace_a_fixed_address_host_network_and_a_load_balancer_are_refused() {
        let err = Case::new()
            .slot(|m| {
                m.replace(
                    "metadata: {name: web-green-myapp}\nspec:\n  type: ClusterIP",
                    "metadata: {name: web-green-myapp, namespace: infra}\nspec:\n  type: ClusterIP",
                )
            })
            .refusal();
        assert!(
            err.reason.contains("Service infra/web-green-myapp"),
            "{err:?}"
        );
        assert!(err.hint.contains("namespaceOverride"), "{}", err.hint);
        let err = Case::new()
            .slot(|m| {
                m.replace(
                    "type: ClusterIP",
                    "type: ClusterIP\n  loadBalancerIP: 10.0.0.7",
                )
            })
            .refusal();
        assert!(
            err.reason.contains("asks for loadBalancerIP 10.0.0.7"),
            "{err:?}"
        );
        let err = Case::new()
            .slot(|m| {
                m.replace(
                    "type: ClusterIP",
                    "type: ClusterIP\n  externalIPs: [192.0.2.1]",
                )
            })
            .refusal();
        assert!(err.reason.contains("externalIPs 192.0.2.1"), "{err:?}");
        let err = Case::new()
            .slot(|m| {
                m.replace(
                    "serviceAccountName: web-green-myapp",
                    "serviceAccountName: web-green-myapp\n      hostNetwork: true",
                )
            })
            .refusal();
        assert!(
            err.reason.contains("runs its pods with hostNetwork"),
            "{err:?}"
        );
        let mut lb = Case::new().slot(|m| m.replace("type: ClusterIP", "type: LoadBalancer"));
        let err = lb.refusal();
        assert!(
            err.reason
                .contains("load-balancer (each slot gets its own public address"),
            "{err:?}"
        );
        assert!(err.hint.contains("--accept load-balancer"), "{}", err.hint);
        lb.app.accept = vec![Risk::LoadBalancer];
        assert_eq!(lb.run().unwrap().accepted, [Risk::LoadBalancer]);
    }

    #[test]
    fn test_hooks_and_generated_names_are_not_collisions() {
        let mut case = Case::new();
        for (events, name) in [
            ("test", "web-blue-myapp-test-connection"),
            ("pre-install", ""),
        ] {
            let doc = if name.is_empty() {
                "apiVersion: batch/v1\nkind: Job\nmetadata: {generateName: web-}\nspec: {template: {spec: {containers: [{name: x}]}}}".to_string()
            } else {
                format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{containers: [{{name: x}}]}}")
            };
            let hook = crate::slots::router::manifest::Hook {
                events: vec![events.into()],
                object: parse(&doc).unwrap().remove(0),
            };
            case.slot.hooks.push(hook.clone());
            case.other.hooks.push(hook);
        }
        assert!(case.run().is_ok(), "{:?}", case.run().err());
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
    fn risks_are_refused_unless_accepted_by_name() {
        let all = concat!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: web-green-reader}\n---\n",
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec: {template: {metadata: {labels: {app: db}}, spec: {containers: [{name: db}]}}}\n---\n",
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: report}\nspec: {template: {spec: {containers: [{name: r}]}}}\n---\n",
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec: {template: {spec: {containers: [{name: a}]}}}\n",
        );
        let mut case = Case::new().slot(add(all));
        case.slot.hooks.push(crate::slots::router::manifest::Hook {
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
            "jobs (each slot runs them: twice the scheduled work): Job shop/report",
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
        assert_eq!(
            case.run().unwrap().accepted,
            [
                Risk::ClusterScoped,
                Risk::Stateful,
                Risk::Jobs,
                Risk::Daemonset,
                Risk::DeleteHooks
            ]
        );
        // A CronJob is not a risk: it follows production (suspended in the stage slot).
        let cron = "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: web-green-report}\nspec: {schedule: '0 3 * * *', jobTemplate: {spec: {template: {spec: {containers: [{name: r}]}}}}}";
        assert_eq!(
            Case::new().slot(add(cron)).run().unwrap().cron_jobs[0].name,
            "report"
        );
        // A plain Job counts; a hook Job that runs at install or upgrade does not.
        let case = Case::new().slot(add("apiVersion: batch/v1\nkind: Job\nmetadata: {name: once}\nspec: {template: {spec: {containers: [{name: x}]}}}"));
        assert!(case.refusal().reason.contains("jobs ("));
        let mut case = Case::new();
        case.slot.hooks.push(crate::slots::router::manifest::Hook {
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
}
