//! Where a release's Services send traffic, as one plain value per Service whatever kind of slot
//! they route to: the slot each one routes to, its live selector, and its ready endpoints counted
//! by the slot of the pod behind each. Which pod belongs to which slot is told by a label
//! selector per slot ([`PodSlots`]): bgslot's own chart labels its pods with their slot, a
//! router's slots are found by the selectors it recorded. Built from API objects by pure
//! functions; `api` reads them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::labels::{MAIN_SERVICE, ROLE_LABEL, SERVICE_LABEL, SERVICE_NAME_LABEL, SLOT_LABEL};
use crate::vocab::{PerSlot, Role, Slot};

/// The annotation on each router Service naming the slot it routes to (its selector is another
/// chart's, so it carries no slot of its own).
pub const ROUTES_TO_ANNOTATION: &str = "bgslot/routes-to";

/// How the pods of each slot are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodSlots {
    /// Pods that carry their slot as a label (bgslot's own chart): the ones this selector
    /// selects, each in the slot its label names. One list for both slots.
    Labelled(String),
    /// Each slot's pods by selectors of its own (a router's, as it recorded them, one per route;
    /// none: the slot has no pods).
    Selected(PerSlot<Vec<String>>),
}

impl PodSlots {
    /// The label selectors to list or watch the pods with.
    pub fn selectors(&self) -> Vec<&str> {
        match self {
            PodSlots::Labelled(selector) => vec![selector.as_str()],
            PodSlots::Selected(per_slot) => Slot::ALL
                .iter()
                .flat_map(|&slot| per_slot[slot].iter().map(String::as_str))
                .collect(),
        }
    }
}

/// Where one Service sends traffic now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedService {
    pub name: String,
    /// `main`, or the `extraServices` key.
    pub key: String,
    pub role: Role,
    /// The slot it routes to: its `bgslot/routes-to` annotation where it has one (a router's),
    /// else the slot in its selector (`None`: no slot, or one bgslot does not know).
    pub routes_to: Option<Slot>,
    /// Its live selector.
    pub selector: BTreeMap<String, String>,
    /// Ready endpoints, by the slot of the pod behind each.
    pub ready_by_slot: PerSlot<usize>,
    /// Every ready endpoint, of a slot or not.
    pub ready: usize,
    pub not_ready: usize,
    /// A field manager other than helm that owns a key of its selector (someone edited it by
    /// hand). Helm 4 applies server-side and cannot change a field another manager owns.
    pub selector_owner: Option<String>,
}

impl RoutedService {
    pub fn ready_in(&self, slot: Slot) -> usize {
        self.ready_by_slot[slot]
    }

    pub fn is_main(&self) -> bool {
        self.key == MAIN_SERVICE
    }

    /// The slot value in its selector, as written (bgslot's own chart selects by it).
    pub fn selector_slot(&self) -> Option<&str> {
        self.selector.get(SLOT_LABEL).map(String::as_str)
    }

    /// How it routes, for a message.
    pub fn describe(&self) -> String {
        let other = self.ready - self.ready_by_slot.blue - self.ready_by_slot.green;
        let counts: Vec<String> = Slot::ALL
            .into_iter()
            .filter(|&slot| self.ready_in(slot) > 0)
            .map(|slot| format!("{} in {slot}", self.ready_in(slot)))
            .chain((other > 0).then(|| format!("{other} of no slot")))
            .collect();
        format!(
            "Service {} routes to {} with {} ready endpoints{}",
            self.name,
            self.routes_to.map(Slot::as_str).unwrap_or("no slot"),
            self.ready,
            if counts.is_empty() {
                String::new()
            } else {
                format!(" ({})", counts.join(", "))
            }
        )
    }
}

/// The main Service with `role`.
pub fn main_service(services: &[RoutedService], role: Role) -> Option<&RoutedService> {
    services.iter().find(|s| s.is_main() && s.role == role)
}

/// A sentence for each main Service (production, stage) that does not exist.
pub fn missing_services(release: &str, services: &[RoutedService]) -> Vec<String> {
    Role::ALL
        .into_iter()
        .filter(|&role| main_service(services, role).is_none())
        .map(|role| format!("the {role} Service of {release} does not exist"))
        .collect()
}

/// Every Service that should route to production: the main one and each extra one.
pub fn production_services(services: &[RoutedService]) -> impl Iterator<Item = &RoutedService> {
    services.iter().filter(|s| s.role == Role::Production)
}

/// The endpoints of one Service: ready ones as the pod behind each (when known), and a count of
/// the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceEndpoints {
    pub ready: Vec<Option<String>>,
    pub not_ready: usize,
}

/// Endpoints by Service name, from EndpointSlices (they carry their Service's name as a label).
pub fn endpoints_of_slices(slices: &[EndpointSlice]) -> BTreeMap<String, ServiceEndpoints> {
    let mut by_service: BTreeMap<String, ServiceEndpoints> = BTreeMap::new();
    for slice in slices {
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let entry = by_service.entry(service.clone()).or_default();
        for ep in &slice.endpoints {
            let c = ep.conditions.clone().unwrap_or_default();
            // A nil `ready` means ready; terminating endpoints never count.
            if c.ready.unwrap_or(true) && !c.terminating.unwrap_or(false) {
                entry
                    .ready
                    .push(ep.target_ref.as_ref().and_then(|r| r.name.clone()));
            } else {
                entry.not_ready += 1;
            }
        }
    }
    by_service
}

/// Endpoints by Service name, from Endpoints objects (named after their Service).
pub fn endpoints_of(list: &[Endpoints]) -> BTreeMap<String, ServiceEndpoints> {
    let mut by_service: BTreeMap<String, ServiceEndpoints> = BTreeMap::new();
    for ep in list {
        let entry = by_service
            .entry(ep.metadata.name.clone().unwrap_or_default())
            .or_default();
        for subset in ep.subsets.iter().flatten() {
            for addr in subset.addresses.iter().flatten() {
                entry
                    .ready
                    .push(addr.target_ref.as_ref().and_then(|r| r.name.clone()));
            }
            entry.not_ready += subset
                .not_ready_addresses
                .as_ref()
                .map(Vec::len)
                .unwrap_or(0);
        }
    }
    by_service
}

/// The Services that play a role (production or stage) and where each routes: each ready
/// endpoint counts for the slot of its pod (`pod_slots`: pod name -> slot). Main pair first,
/// then the extra ones by key.
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
            let selector = svc
                .spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default();
            let annotated = svc
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ROUTES_TO_ANNOTATION));
            let routes_to = match annotated {
                Some(slot) => Slot::parse(slot),
                None => selector.get(SLOT_LABEL).and_then(|s| Slot::parse(s)),
            };
            Some(RoutedService {
                // Charts before extraServices label only the main pair, and without `bgslot/service`.
                key: labels
                    .get(SERVICE_LABEL)
                    .cloned()
                    .unwrap_or_else(|| MAIN_SERVICE.into()),
                role,
                routes_to,
                selector,
                ready_by_slot,
                ready: eps.ready.len(),
                not_ready: eps.not_ready,
                selector_owner: selector_owner(svc),
                name,
            })
        })
        .collect();
    out.sort_by(|a, b| (!a.is_main(), &a.key, a.role).cmp(&(!b.is_main(), &b.key, b.role)));
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

/// Pod name -> slot, from pods labelled with their slot (name, labels).
pub fn labelled_pod_slots<'a>(
    pods: impl IntoIterator<Item = (String, &'a BTreeMap<String, String>)>,
) -> BTreeMap<String, Slot> {
    pods.into_iter()
        .filter_map(|(name, labels)| Some((name, labels.get(SLOT_LABEL)?.parse().ok()?)))
        .collect()
}

/// Pod name -> slot, from each slot's pod names.
pub fn pod_slots(names: PerSlot<Vec<String>>) -> BTreeMap<String, Slot> {
    Slot::ALL
        .into_iter()
        .flat_map(|slot| names[slot].iter().map(move |p| (p.clone(), slot)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn endpoints_count_for_the_slot_of_their_pod_and_the_slot_comes_from_the_annotation_or_the_selector(
    ) {
        let svc = |name: &str,
                   labels: serde_json::Value,
                   annotations: serde_json::Value,
                   selector: serde_json::Value|
         -> Service {
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels, "annotations": annotations,
                             "managedFields": [{"manager": "kubectl-patch", "operation": "Update", "fieldsType": "FieldsV1",
                                                "fieldsV1": {"f:spec": {"f:selector": {"f:app": {}}}}}]},
                "spec": {"selector": selector}
            }))
            .unwrap()
        };
        let list = [
            svc(
                "web-admin",
                json!({"bgslot/role": "production", "bgslot/service": "admin"}),
                json!({}),
                json!({"bgslot/slot": "green"}),
            ),
            svc(
                "web",
                json!({"bgslot/role": "production", "bgslot/service": "main"}),
                json!({ROUTES_TO_ANNOTATION: "blue"}),
                json!({"app": "x"}),
            ),
            svc(
                "web-stage",
                json!({"bgslot/role": "stage"}),
                json!({}),
                json!({"bgslot/slot": "green"}),
            ),
            svc(
                "other",
                json!({}),
                json!({}),
                json!({"bgslot/slot": "blue"}),
            ),
        ];
        let endpoints = BTreeMap::from([(
            "web".to_string(),
            ServiceEndpoints {
                ready: vec![Some("a".into()), Some("b".into()), None],
                not_ready: 1,
            },
        )]);
        let pods = pod_slots(PerSlot {
            blue: vec!["a".into()],
            green: vec!["b".into()],
        });
        let services = routed_services(&list, &endpoints, &pods);
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["web", "web-stage", "web-admin"]);
        let web = &services[0];
        assert_eq!(
            (
                web.ready,
                web.ready_in(Slot::Blue),
                web.ready_in(Slot::Green),
                web.not_ready
            ),
            (3, 1, 1, 1)
        );
        assert_eq!(web.routes_to, Some(Slot::Blue));
        assert_eq!(web.selector_owner.as_deref(), Some("kubectl-patch"));
        assert_eq!(
            web.describe(),
            "Service web routes to blue with 3 ready endpoints (1 in blue, 1 in green, 1 of no slot)"
        );
        assert_eq!(services[1].routes_to, Some(Slot::Green));
        assert_eq!(services[1].selector_slot(), Some("green"));
        assert_eq!(
            services[1].describe(),
            "Service web-stage routes to green with 0 ready endpoints"
        );
        assert_eq!(
            main_service(&services, Role::Stage).map(|s| s.name.as_str()),
            Some("web-stage")
        );
        assert_eq!(production_services(&services).count(), 2);
    }

    #[test]
    fn labelled_pods_are_in_the_slot_their_label_names() {
        let blue = BTreeMap::from([(SLOT_LABEL.to_string(), "blue".to_string())]);
        let odd = BTreeMap::from([(SLOT_LABEL.to_string(), "purple".to_string())]);
        let none = BTreeMap::new();
        let slots = labelled_pod_slots([
            ("a".to_string(), &blue),
            ("b".to_string(), &odd),
            ("c".to_string(), &none),
        ]);
        assert_eq!(slots, BTreeMap::from([("a".to_string(), Slot::Blue)]));
        let how = PodSlots::Selected(PerSlot {
            blue: vec!["app=web-blue".into()],
            green: Vec::new(),
        });
        assert_eq!(how.selectors(), ["app=web-blue"]);
        assert_eq!(PodSlots::Labelled("x".into()).selectors(), ["x"]);
    }

    #[test]
    fn endpoints_are_read_from_endpoints_or_slices() {
        let endpoints: Endpoints = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "subsets": [{"addresses": [{"ip": "10.244.0.1", "targetRef": {"name": "web-blue-1"}}, {"ip": "10.244.0.2"}],
                         "notReadyAddresses": [{"ip": "10.244.0.3"}]}]
        }))
        .unwrap();
        let by = endpoints_of(&[endpoints]);
        assert_eq!(by["web"].ready, [Some("web-blue-1".to_string()), None]);
        assert_eq!(by["web"].not_ready, 1);
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-x", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.1"], "conditions": {"ready": true}, "targetRef": {"name": "p1"}},
                          {"addresses": ["10.244.0.2"], "conditions": {"ready": true, "terminating": true}},
                          {"addresses": ["10.244.0.3"]}]
        }))
        .unwrap();
        let by = endpoints_of_slices(&[slice]);
        assert_eq!(by["web"].ready, [Some("p1".to_string()), None]);
        assert_eq!(by["web"].not_ready, 1);
    }
}
