//! What the cluster shows for a router, as plain values built by pure functions: each slot
//! release's latest helm revision (from the labels of helm's own storage objects) and its
//! Deployments (found by the annotation helm puts on every object it manages, since another
//! chart's labels are not known), and where each router Service routes (endpoints mapped to slots
//! by the selectors the router recorded, not by a pod label). Then what follows from them: drift
//! between the router's record and what runs, and the next step.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;

use super::manifest::selects;
use super::values::{label_selector, RouterValues, SlotRecord};
use crate::cluster::labels::{ROLE_LABEL, SERVICE_LABEL};
use crate::cluster::state::{ServiceEndpoints, SlotState};
use crate::helm::Revision;
use crate::vocab::{PerSlot, Role, Slot};

/// The annotation helm puts on every object it manages, naming the release.
pub const RELEASE_ANNOTATION: &str = "meta.helm.sh/release-name";
/// The annotation on each router Service naming the slot it routes to.
pub const ROUTES_TO_ANNOTATION: &str = "bgslot/routes-to";
/// The selector of a router Service whose slot runs nothing.
pub const EMPTY_SELECTOR: (&str, &str) = ("bgslot/slot", "none");

/// A release's latest revision, as helm's storage labels it (read in `helm::storage`).
pub use crate::helm::storage::HelmRecord;

/// One Deployment of a slot release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentLive {
    pub name: String,
    pub state: SlotState,
    pub pod_labels: BTreeMap<String, String>,
    /// (container, image), app containers in order.
    pub images: Vec<(String, String)>,
}

impl DeploymentLive {
    pub fn of(d: &Deployment) -> DeploymentLive {
        let template = d.spec.as_ref().map(|s| &s.template);
        DeploymentLive {
            name: d.metadata.name.clone().unwrap_or_default(),
            state: SlotState::from_deployment(d),
            pod_labels: template
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.clone())
                .unwrap_or_default(),
            images: template
                .and_then(|t| t.spec.as_ref())
                .map(|s| {
                    s.containers
                        .iter()
                        .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Rolled out completely: every pod of the newest spec and available, no old pod left. A
    /// Deployment the chart scales to zero is complete with none.
    pub fn complete(&self) -> bool {
        let s = &self.state;
        s.deployment.is_some()
            && s.observed
            && s.updated == s.desired
            && s.available == s.desired
            && s.total == s.desired
    }

    pub fn image_of(&self, container: &str) -> Option<&str> {
        self.images
            .iter()
            .find(|(name, _)| name == container)
            .or(self.images.first())
            .map(|(_, image)| image.as_str())
    }
}

/// The Deployments helm manages for `release`, by its annotation.
pub fn deployments_of(list: &[Deployment], release: &str) -> Vec<DeploymentLive> {
    let mut out: Vec<DeploymentLive> = list
        .iter()
        .filter(|d| {
            d.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(RELEASE_ANNOTATION))
                .is_some_and(|r| r == release)
        })
        .map(DeploymentLive::of)
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Ready, available and desired pods, summed over Deployments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub ready: i32,
    pub available: i32,
    pub desired: i32,
}

/// A slot release as the cluster shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotLive {
    pub slot: Slot,
    pub release: String,
    /// Its latest revision; `None` when helm has no such release.
    pub helm: Option<HelmRecord>,
    pub deployments: Vec<DeploymentLive>,
}

impl SlotLive {
    /// The Deployments whose pods `record`'s selector selects.
    pub fn routed<'a>(&'a self, record: &SlotRecord) -> Vec<&'a DeploymentLive> {
        self.deployments
            .iter()
            .filter(|d| selects(&record.selector, &d.pod_labels))
            .collect()
    }

    pub fn totals(&self, record: &SlotRecord) -> Totals {
        self.routed(record)
            .iter()
            .fold(Totals::default(), |t, d| Totals {
                ready: t.ready + d.state.ready,
                available: t.available + d.state.available,
                desired: t.desired + d.state.desired,
            })
    }

    /// Every Deployment of the release rolled out, and the routed ones run at least one pod.
    pub fn available(&self, record: &SlotRecord) -> bool {
        let routed = self.routed(record);
        !routed.is_empty()
            && routed.iter().all(|d| d.state.desired > 0)
            && self.deployments.iter().all(DeploymentLive::complete)
    }

    /// The image the routed container runs now.
    pub fn running_image(&self, record: &SlotRecord) -> Option<String> {
        self.routed(record)
            .first()
            .and_then(|d| d.image_of(&record.container))
            .map(str::to_string)
    }

    /// The Deployments that keep the slot from being available, for a message.
    pub fn unavailable(&self) -> Vec<String> {
        self.deployments
            .iter()
            .filter(|d| !d.complete())
            .map(|d| {
                let s = &d.state;
                format!(
                    "{} {}/{} ready, {} available, {} updated",
                    d.name, s.ready, s.desired, s.available, s.updated
                )
            })
            .collect()
    }

    /// When its oldest routed Deployment was created.
    pub fn created(&self, record: &SlotRecord) -> Option<k8s_openapi::jiff::Timestamp> {
        self.routed(record)
            .iter()
            .filter_map(|d| d.state.created)
            .min()
    }
}

/// Where a router Service sends traffic now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedService {
    pub name: String,
    /// `main`, or the `extraServices` key.
    pub key: String,
    pub role: Role,
    /// The slot its `bgslot/routes-to` annotation names.
    pub routes_to: Option<Slot>,
    pub selector: BTreeMap<String, String>,
    pub ready_by_slot: PerSlot<usize>,
    /// Every ready endpoint, of a slot or not.
    pub ready: usize,
    pub not_ready: usize,
    /// A field manager other than helm that owns a key of its selector (a hand edit).
    pub selector_owner: Option<String>,
}

impl RoutedService {
    pub fn ready_in(&self, slot: Slot) -> usize {
        self.ready_by_slot[slot]
    }

    /// How it routes, for a message.
    pub fn describe(&self) -> String {
        let other = self.ready - self.ready_by_slot.blue - self.ready_by_slot.green;
        format!(
            "Service {} routes to {} with {} ready endpoints ({} in blue, {} in green{})",
            self.name,
            self.routes_to.map(Slot::as_str).unwrap_or("no slot"),
            self.ready,
            self.ready_by_slot.blue,
            self.ready_by_slot.green,
            if other > 0 {
                format!(", {other} of no slot")
            } else {
                String::new()
            }
        )
    }
}

/// The router's Services and where each routes: each ready endpoint counts for the slot whose
/// recorded selector its pod matches (`pod_slots`).
pub fn routed_services(
    services: &[Service],
    endpoints: &BTreeMap<String, ServiceEndpoints>,
    pod_slots: &BTreeMap<String, Slot>,
) -> Vec<RoutedService> {
    let mut out: Vec<RoutedService> = services
        .iter()
        .filter_map(|svc| {
            let labels = svc.metadata.labels.clone().unwrap_or_default();
            let role = labels.get(ROLE_LABEL)?.parse::<Role>().ok()?;
            let name = svc.metadata.name.clone().unwrap_or_default();
            let empty = ServiceEndpoints::default();
            let eps = endpoints.get(&name).unwrap_or(&empty);
            let mut ready_by_slot = PerSlot::default();
            for pod in eps.ready.iter().flatten() {
                if let Some(slot) = pod_slots.get(pod) {
                    ready_by_slot[*slot] += 1;
                }
            }
            Some(RoutedService {
                key: labels
                    .get(SERVICE_LABEL)
                    .cloned()
                    .unwrap_or_else(|| "main".into()),
                role,
                routes_to: svc
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ROUTES_TO_ANNOTATION))
                    .and_then(|s| Slot::parse(s)),
                selector: svc
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.clone())
                    .unwrap_or_default(),
                ready_by_slot,
                ready: eps.ready.len(),
                not_ready: eps.not_ready,
                selector_owner: selector_owner(svc),
                name,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        ((a.key != "main"), &a.key, a.role).cmp(&((b.key != "main"), &b.key, b.role))
    });
    out
}

/// The first field manager other than helm that owns a key of `spec.selector`.
fn selector_owner(svc: &Service) -> Option<String> {
    svc.metadata
        .managed_fields
        .iter()
        .flatten()
        .find_map(|entry| {
            let manager = entry.manager.as_deref().unwrap_or("unknown");
            let owns = entry
                .fields_v1
                .as_ref()
                .and_then(|f| f.0.pointer("/f:spec/f:selector"))
                .and_then(|s| s.as_object())
                .is_some_and(|s| s.keys().any(|k| k.starts_with("f:")));
            (owns && manager != "helm").then(|| manager.to_string())
        })
}

/// The selector a router Service that routes to `slot` should have.
pub fn expected_selector(record: &SlotRecord) -> BTreeMap<String, String> {
    if record.is_deployed() {
        record.selector.clone()
    } else {
        BTreeMap::from([(EMPTY_SELECTOR.0.to_string(), EMPTY_SELECTOR.1.to_string())])
    }
}

fn shown(selector: &BTreeMap<String, String>) -> String {
    if selector.is_empty() {
        "nothing (no selector)".into()
    } else {
        format!("{{{}}}", label_selector(selector))
    }
}

/// The router Services that disagree with the router's record: one sentence each.
pub fn service_drift(
    release: &str,
    router: &RouterValues,
    production: Slot,
    services: &[RoutedService],
) -> Vec<String> {
    let mut lines = Vec::new();
    for role in Role::ALL {
        if !services.iter().any(|s| s.key == "main" && s.role == role) {
            lines.push(format!("the {role} Service of {release} does not exist"));
        }
    }
    for svc in services {
        let slot = role_slot(svc.role, production);
        let want = expected_selector(router.slot(slot));
        if svc.selector != want {
            lines.push(format!(
                "Service {} ({}) selects {} but the router records {} for {slot}",
                svc.name,
                svc.role,
                shown(&svc.selector),
                shown(&want)
            ));
        } else if svc.routes_to != Some(slot) {
            lines.push(format!(
                "Service {} ({}) is marked to route to {} but productionSlot makes it {slot}",
                svc.name,
                svc.role,
                svc.routes_to.map(Slot::as_str).unwrap_or("no slot")
            ));
        }
    }
    lines
}

fn role_slot(role: Role, production: Slot) -> Slot {
    role.slot(production)
}

/// The slot releases that differ from what the router records of them: one sentence each.
pub fn slot_drift(router: &RouterValues, slots: &PerSlot<SlotLive>) -> Vec<String> {
    Slot::ALL
        .into_iter()
        .filter_map(|slot| slot_drift_of(router.slot(slot), &slots[slot]))
        .collect()
}

/// How one slot release differs from what the router records of it, if it does.
pub fn slot_drift_of(record: &SlotRecord, live: &SlotLive) -> Option<String> {
    if !record.is_deployed() {
        return None;
    }
    let slot = live.slot;
    match &live.helm {
        None => Some(format!(
            "release {} ({slot}), which the router records as deployed, does not exist",
            live.release
        )),
        Some(h) if h.status == "uninstalled" => Some(format!(
            "release {} ({slot}), which the router records as deployed, was uninstalled outside bgslot",
            live.release
        )),
        Some(h) if record.revision > 0 && h.revision != record.revision => Some(format!(
            "release {} ({slot}) is at revision {} ({}) but the router recorded revision {}: it was changed outside bgslot",
            live.release, h.revision, h.status, record.revision
        )),
        Some(h) if !h.is_deployed() => Some(format!(
            "release {} ({slot}) is in state {} (revision {})",
            live.release, h.status, h.revision
        )),
        Some(_) => None,
    }
}

/// Services whose selector a manager other than helm still owns (Helm 4 cannot move them).
pub fn foreign_selector_owners(services: &[RoutedService]) -> Vec<String> {
    services
        .iter()
        .filter_map(|svc| {
            svc.selector_owner.as_ref().map(|owner| {
                format!(
                    "the selector of Service {} was last written by {owner}, not helm",
                    svc.name
                )
            })
        })
        .collect()
}

/// A slot release that exists although the router records no version in it: a deploy that did
/// not finish (its description is bgslot's), or a release someone else installed.
pub fn unrecorded(record: &SlotRecord, live: &SlotLive) -> bool {
    !record.is_deployed()
        && live
            .helm
            .as_ref()
            .is_some_and(|h| h.status != "uninstalled")
}

/// Where the router Service with `role` can be reached: the router's ingress host for it when
/// set, else the Service's in-cluster DNS name with `port` (its first recorded port).
pub fn url(
    values: &crate::values::ReleaseValues,
    role: Role,
    service: &str,
    namespace: &str,
    port: Option<u16>,
) -> String {
    let host = match role {
        Role::Production => &values.ingress_host,
        Role::Stage => &values.ingress_stage_host,
    };
    match host {
        Some(host) => format!(
            "{}://{host}/",
            if values.ingress_tls { "https" } else { "http" }
        ),
        None => format!(
            "http://{service}.{namespace}.svc.cluster.local:{}/",
            port.unwrap_or(80)
        ),
    }
}

/// The command a person most likely wants next.
pub fn next_step(
    release: &str,
    router: &RouterValues,
    production: Slot,
    slots: &PerSlot<SlotLive>,
    latest: &Revision,
) -> String {
    let stage = production.other();
    let staged = router.slot(stage);
    if !staged.is_deployed() {
        return format!("bgslot deploy {release} --tag NEW_TAG");
    }
    if crate::rules::moved_production(latest) {
        return format!("bgslot clean {release}   (or: bgslot rollback {release})");
    }
    if slots[stage].available(staged) {
        format!("bgslot swap {release} --expect-tag {}", staged.tag)
    } else {
        format!("bgslot status {release}   ({stage} is not ready yet; or: bgslot deploy {release} --tag TAG --replace)")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::router::values::{RecordedState, TargetPort};
    use serde_json::json;

    pub fn record(slot: Slot, tag: &str) -> SlotRecord {
        SlotRecord {
            release: format!("web-{slot}"),
            state: RecordedState::Deployed,
            revision: 1,
            chart: "myapp-0.1.0".into(),
            app_version: "1.16.0".into(),
            tag: tag.into(),
            image: format!("nginx:{tag}"),
            container: "myapp".into(),
            service: format!("web-{slot}-myapp"),
            selector: BTreeMap::from([
                ("app.kubernetes.io/instance".into(), format!("web-{slot}")),
                ("app.kubernetes.io/name".into(), "myapp".into()),
            ]),
            ports: vec![crate::router::values::PortRecord {
                name: Some("http".into()),
                port: 80,
                target_port: Some(TargetPort::Name("http".into())),
                protocol: "TCP".into(),
                app_protocol: None,
            }],
            accepted: Vec::new(),
        }
    }

    pub fn deployment(slot: Slot, tag: &str, ready: i32) -> DeploymentLive {
        DeploymentLive {
            name: format!("web-{slot}-myapp"),
            state: SlotState {
                deployment: Some(format!("web-{slot}-myapp")),
                desired: 3,
                ready,
                available: ready,
                updated: 3,
                total: 3,
                observed: true,
                image: Some(format!("nginx:{tag}")),
                created: None,
            },
            pod_labels: BTreeMap::from([
                ("app.kubernetes.io/instance".into(), format!("web-{slot}")),
                ("app.kubernetes.io/name".into(), "myapp".into()),
                ("helm.sh/chart".into(), "myapp-0.1.0".into()),
            ]),
            images: vec![("myapp".into(), format!("nginx:{tag}"))],
        }
    }

    pub fn live(slot: Slot, tag: &str, ready: i32) -> SlotLive {
        SlotLive {
            slot,
            release: format!("web-{slot}"),
            helm: Some(HelmRecord {
                revision: 1,
                status: "deployed".into(),
            }),
            deployments: vec![deployment(slot, tag, ready)],
        }
    }

    pub fn router(green: bool) -> RouterValues {
        let mut r = RouterValues {
            enabled: true,
            ..RouterValues::default()
        };
        r.slots.blue = record(Slot::Blue, "v1");
        if green {
            r.slots.green = record(Slot::Green, "v2");
        }
        r
    }

    pub fn routed(
        name: &str,
        role: Role,
        slot: Slot,
        router: &RouterValues,
        ready: usize,
    ) -> RoutedService {
        let mut by = PerSlot::default();
        by[slot] = ready;
        RoutedService {
            name: name.into(),
            key: "main".into(),
            role,
            routes_to: Some(slot),
            selector: expected_selector(router.slot(slot)),
            ready_by_slot: by,
            ready,
            not_ready: 0,
            selector_owner: None,
        }
    }

    #[test]
    fn a_slot_release_is_found_by_helms_annotation_and_its_routed_deployments_by_the_selector() {
        let d = |name: &str, release: &str, labels: serde_json::Value| -> Deployment {
            serde_json::from_value(json!({
                "metadata": {"name": name, "generation": 1, "annotations": {RELEASE_ANNOTATION: release}},
                "spec": {"replicas": 2, "selector": {}, "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": "podinfo:6.5.0"}]}}},
                "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}
            }))
            .unwrap()
        };
        let list = [
            d(
                "web-green-podinfo",
                "web-green",
                json!({"app": "web-green-podinfo"}),
            ),
            d("web-green-worker", "web-green", json!({"app": "worker"})),
            d(
                "web-blue-podinfo",
                "web-blue",
                json!({"app": "web-blue-podinfo"}),
            ),
        ];
        let green = SlotLive {
            slot: Slot::Green,
            release: "web-green".into(),
            helm: None,
            deployments: deployments_of(&list, "web-green"),
        };
        assert_eq!(green.deployments.len(), 2);
        let mut rec = record(Slot::Green, "6.5.0");
        rec.selector = BTreeMap::from([("app".into(), "web-green-podinfo".into())]);
        rec.container = "app".into();
        assert_eq!(green.routed(&rec).len(), 1);
        assert_eq!(
            green.totals(&rec),
            Totals {
                ready: 2,
                available: 2,
                desired: 2
            }
        );
        assert!(green.available(&rec));
        assert_eq!(green.running_image(&rec).as_deref(), Some("podinfo:6.5.0"));
        rec.selector = BTreeMap::from([("app".into(), "other".into())]);
        assert!(!green.available(&rec), "nothing routed is not available");
    }

    #[test]
    fn endpoints_count_for_the_slot_whose_recorded_selector_their_pod_matches() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "labels": {"bgslot/role": "production", "bgslot/service": "main"},
                         "annotations": {ROUTES_TO_ANNOTATION: "blue"},
                         "managedFields": [{"manager": "kubectl-patch", "operation": "Update", "fieldsType": "FieldsV1",
                                            "fieldsV1": {"f:spec": {"f:selector": {"f:app": {}}}}}]},
            "spec": {"selector": {"app": "x"}}
        }))
        .unwrap();
        let endpoints = BTreeMap::from([(
            "web".to_string(),
            ServiceEndpoints {
                ready: vec![Some("a".into()), Some("b".into()), None],
                not_ready: 1,
            },
        )]);
        let pods = BTreeMap::from([
            ("a".to_string(), Slot::Blue),
            ("b".to_string(), Slot::Green),
        ]);
        let services = routed_services(&[svc], &endpoints, &pods);
        let s = &services[0];
        assert_eq!(
            (
                s.ready,
                s.ready_in(Slot::Blue),
                s.ready_in(Slot::Green),
                s.not_ready
            ),
            (3, 1, 1, 1)
        );
        assert_eq!(s.routes_to, Some(Slot::Blue));
        assert_eq!(s.selector_owner.as_deref(), Some("kubectl-patch"));
        assert_eq!(s.describe(), "Service web routes to blue with 3 ready endpoints (1 in blue, 1 in green, 1 of no slot)");
    }

    #[test]
    fn drift_compares_the_services_and_the_slot_releases_with_the_record() {
        let r = router(false);
        let good = vec![
            routed("web", Role::Production, Slot::Blue, &r, 3),
            routed("web-stage", Role::Stage, Slot::Green, &r, 0),
        ];
        assert!(service_drift("web", &r, Slot::Blue, &good).is_empty());
        assert_eq!(
            good[1].selector,
            BTreeMap::from([("bgslot/slot".to_string(), "none".to_string())])
        );
        let mut moved = good.clone();
        moved[0].selector = BTreeMap::from([("app".to_string(), "x".to_string())]);
        assert_eq!(
            service_drift("web", &r, Slot::Blue, &moved),
            ["Service web (production) selects {app=x} but the router records {app.kubernetes.io/instance=web-blue,app.kubernetes.io/name=myapp} for blue"]
        );
        let mut marked = good.clone();
        marked[0].routes_to = Some(Slot::Green);
        assert!(service_drift("web", &r, Slot::Blue, &marked)[0]
            .contains("is marked to route to green"));
        assert_eq!(
            service_drift("web", &r, Slot::Blue, &good[..1]),
            ["the stage Service of web does not exist"]
        );

        let mut slots = PerSlot {
            blue: live(Slot::Blue, "v1", 3),
            green: live(Slot::Green, "v2", 3),
        };
        assert!(slot_drift(&r, &slots).is_empty());
        slots.blue.helm = Some(HelmRecord {
            revision: 2,
            status: "deployed".into(),
        });
        assert_eq!(
            slot_drift(&r, &slots),
            ["release web-blue (blue) is at revision 2 (deployed) but the router recorded revision 1: it was changed outside bgslot"]
        );
        slots.blue.helm = None;
        assert!(slot_drift(&r, &slots)[0].contains("does not exist"));
        assert!(unrecorded(r.slot(Slot::Green), &slots.green));
        assert!(!unrecorded(r.slot(Slot::Blue), &slots.blue));
    }

    #[test]
    fn next_steps_follow_the_record_and_the_slots() {
        let latest = crate::fixtures::rev(2, "deployed", "bgslot deploy green v2", "t");
        let slots = PerSlot {
            blue: live(Slot::Blue, "v1", 3),
            green: live(Slot::Green, "v2", 3),
        };
        assert_eq!(
            next_step("web", &router(false), Slot::Blue, &slots, &latest),
            "bgslot deploy web --tag NEW_TAG"
        );
        assert_eq!(
            next_step("web", &router(true), Slot::Blue, &slots, &latest),
            "bgslot swap web --expect-tag v2"
        );
        let swapped = crate::fixtures::rev(3, "deployed", "bgslot swap blue->green", "t");
        assert!(
            next_step("web", &router(true), Slot::Green, &slots, &swapped)
                .starts_with("bgslot clean web")
        );
        let starting = PerSlot {
            blue: live(Slot::Blue, "v1", 3),
            green: live(Slot::Green, "v2", 1),
        };
        assert!(
            next_step("web", &router(true), Slot::Blue, &starting, &latest)
                .contains("green is not ready yet")
        );
    }
}
