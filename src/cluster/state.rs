//! What the cluster shows for a release, as plain values built from API objects by pure
//! functions: each slot's Deployment and pods, where each Service routes, each slot's migration.
//! `api` reads the objects; everything here is unit-tested without a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::gitops::GitOpsMarks;
use super::labels::{
    CHART_LABEL, MAIN_SERVICE, ROLE_LABEL, SERVICE_LABEL, SERVICE_NAME_LABEL, SLOT_LABEL,
};
use crate::vocab::{Role, Slot};

/// Why one pod is not serving, in a real kubelet's words.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PodState {
    pub name: String,
    pub ready: bool,
    pub terminating: bool,
    pub phase: String,
    /// e.g. `ImagePullBackOff`, `CrashLoopBackOff`, `readiness probe failing`, `Pending`.
    pub reason: Option<String>,
    pub restarts: i32,
}

impl PodState {
    /// A pod's readiness and the reason it is not serving, as `kubectl get pods` would show it.
    pub fn of(pod: &Pod) -> PodState {
        let status = pod.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .as_ref()
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status == "True")
            .unwrap_or(false);
        let statuses = status.container_statuses.clone().unwrap_or_default();
        let restarts = statuses.iter().map(|c| c.restart_count).sum();
        let waiting = statuses
            .iter()
            .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
            .find_map(|w| w.reason.clone());
        let phase = status.phase.clone().unwrap_or_else(|| "Unknown".into());
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let reason = if ready {
            None
        } else if terminating {
            Some("Terminating".into())
        } else if let Some(w) = waiting {
            Some(w)
        } else if phase == "Running" {
            Some("readiness probe failing".into())
        } else if pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_none()
        {
            Some("Pending: not scheduled".into())
        } else {
            Some(phase.clone())
        };
        PodState {
            name: pod.metadata.name.clone().unwrap_or_default(),
            ready,
            terminating,
            phase,
            reason,
            restarts,
        }
    }
}

/// Pod states sorted by name.
pub fn pod_states<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Vec<PodState> {
    let mut states: Vec<PodState> = pods.into_iter().map(PodState::of).collect();
    states.sort_by(|a, b| a.name.cmp(&b.name));
    states
}

/// A slot's Deployment as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SlotState {
    pub deployment: Option<String>,
    pub desired: i32,
    pub ready: i32,
    pub available: i32,
    pub updated: i32,
    /// All pods counted by the Deployment (old ReplicaSets included).
    pub total: i32,
    /// The controller has seen the latest spec.
    pub observed: bool,
    pub image: Option<String>,
    #[serde(skip)]
    pub created: Option<k8s_openapi::jiff::Timestamp>,
}

impl SlotState {
    pub fn from_deployment(d: &Deployment) -> SlotState {
        let spec_replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = d.status.clone().unwrap_or_default();
        let generation = d.metadata.generation.unwrap_or(0);
        SlotState {
            deployment: d.metadata.name.clone(),
            desired: spec_replicas,
            ready: status.ready_replicas.unwrap_or(0),
            available: status.available_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            total: status.replicas.unwrap_or(0),
            observed: status.observed_generation.unwrap_or(0) >= generation,
            image: d
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|p| p.containers.first())
                .and_then(|c| c.image.clone()),
            created: d.metadata.creation_timestamp.as_ref().map(|t| t.0),
        }
    }

    /// The first of `deployments` (a slot renders one), or an empty slot.
    pub fn of_first<'a>(deployments: impl IntoIterator<Item = &'a Deployment>) -> SlotState {
        deployments
            .into_iter()
            .next()
            .map(SlotState::from_deployment)
            .unwrap_or_default()
    }

    /// Rolled out completely: every desired pod is of the newest spec and available, and no old
    /// pod is still counted. A Deployment scaled to zero is never "fully available".
    pub fn fully_available(&self) -> bool {
        self.deployment.is_some()
            && self.observed
            && self.desired > 0
            && self.updated == self.desired
            && self.available == self.desired
            && self.total == self.desired
    }

    /// What besides the ready count a progress report says: pods not yet updated, old pods still
    /// counted, and why pods are not ready.
    pub fn rollout_detail(&self, reasons: &[String]) -> String {
        let mut detail = String::new();
        if self.updated < self.desired {
            detail.push_str(&format!(", {}/{} updated", self.updated, self.desired));
        }
        if self.total > self.desired {
            detail.push_str(&format!(", {} old pods", self.total - self.desired));
        }
        if !reasons.is_empty() {
            detail.push_str(&format!(" ({})", reasons.join(", ")));
        }
        detail
    }
}

/// Where a Service sends traffic now.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServiceState {
    pub name: String,
    /// The slot in the live selector (`None` when it selects no slot or an unknown one).
    pub selects: Option<Slot>,
    pub selector_slot: Option<String>,
    /// Ready endpoints, by the slot of the pod behind each.
    pub ready_by_slot: BTreeMap<String, usize>,
    pub ready: usize,
    pub not_ready: usize,
    /// A field manager other than helm that owns the selector's slot (someone edited it by hand).
    /// Helm 4 applies server-side and cannot change a field another manager owns.
    pub selector_owner: Option<String>,
}

impl ServiceState {
    pub fn ready_in(&self, slot: Slot) -> usize {
        self.ready_by_slot.get(slot.as_str()).copied().unwrap_or(0)
    }

    /// How the Service routes, for a message.
    pub fn describe(&self) -> String {
        format!(
            "Service {} selects {} with {} ready endpoints ({})",
            self.name,
            self.selector_slot.as_deref().unwrap_or("no slot"),
            self.ready,
            self.ready_by_slot
                .iter()
                .map(|(slot, n)| format!("{n} in {slot}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// One variant of a Service from the chart's `extraServices`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraService {
    pub key: String,
    pub role: Role,
    pub state: ServiceState,
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

/// Pod name -> slot label.
pub fn pod_slots(pods: &[Pod]) -> BTreeMap<String, String> {
    pods.iter()
        .filter_map(|p| {
            let slot = p.metadata.labels.as_ref()?.get(SLOT_LABEL)?.clone();
            Some((p.metadata.name.clone()?, slot))
        })
        .collect()
}

impl ServiceState {
    /// Where `svc` routes, given which slot each pod is in and the Services' endpoints.
    pub fn of(
        svc: &Service,
        pods: &BTreeMap<String, String>,
        endpoints: &BTreeMap<String, ServiceEndpoints>,
    ) -> ServiceState {
        let name = svc.metadata.name.clone().unwrap_or_default();
        let selector_slot = svc
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .and_then(|s| s.get(SLOT_LABEL))
            .cloned();
        let empty = ServiceEndpoints::default();
        let eps = endpoints.get(&name).unwrap_or(&empty);
        let mut ready_by_slot = BTreeMap::new();
        for pod in &eps.ready {
            let slot = pod
                .as_ref()
                .and_then(|p| pods.get(p))
                .cloned()
                .unwrap_or_else(|| "unknown".into());
            *ready_by_slot.entry(slot).or_insert(0) += 1;
        }
        ServiceState {
            selects: selector_slot.as_deref().and_then(Slot::parse),
            selector_slot,
            name,
            ready: eps.ready.len(),
            not_ready: eps.not_ready,
            ready_by_slot,
            selector_owner: selector_owner(svc),
        }
    }
}

/// The first field manager other than helm that owns `spec.selector[bgslot/slot]`.
fn selector_owner(svc: &Service) -> Option<String> {
    let slot_key = format!("f:{SLOT_LABEL}");
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
                .and_then(|selector| selector.get(&slot_key))
                .is_some();
            (owns && manager != "helm").then(|| manager.to_string())
        })
}

/// The release's Services as read together.
#[derive(Debug, Clone, Default)]
pub struct Services {
    pub production: Option<ServiceState>,
    pub stage: Option<ServiceState>,
    /// The production and stage variants of the chart's `extraServices`.
    pub extra: Vec<ExtraService>,
    pub chart: Option<String>,
    /// What the GitOps marks on the Services say, if any.
    pub gitops: Option<GitOpsMarks>,
}

impl Services {
    /// Sorts the release's Services by the role and pair their labels give them.
    pub fn of(
        list: &[Service],
        pods: &BTreeMap<String, String>,
        endpoints: &BTreeMap<String, ServiceEndpoints>,
    ) -> Services {
        let mut found = Services {
            chart: list
                .iter()
                .find_map(|s| s.metadata.labels.as_ref()?.get(CHART_LABEL).cloned()),
            gitops: list.iter().find_map(GitOpsMarks::of),
            ..Services::default()
        };
        for svc in list {
            let labels = svc.metadata.labels.clone().unwrap_or_default();
            let Some(role) = labels.get(ROLE_LABEL).and_then(|r| r.parse::<Role>().ok()) else {
                continue;
            };
            let state = ServiceState::of(svc, pods, endpoints);
            // Charts before extraServices label only the main pair, and without `bgslot/service`.
            match labels.get(SERVICE_LABEL).map(String::as_str) {
                None | Some(MAIN_SERVICE) => match role {
                    Role::Production => found.production = Some(state),
                    Role::Stage => found.stage = Some(state),
                },
                Some(key) => found.extra.push(ExtraService {
                    key: key.to_string(),
                    role,
                    state,
                }),
            }
        }
        found
            .extra
            .sort_by(|a, b| (&a.key, a.role).cmp(&(&b.key, b.role)));
        found
    }

    /// The main Service with `role`.
    pub fn main(&self, role: Role) -> Option<&ServiceState> {
        match role {
            Role::Production => self.production.as_ref(),
            Role::Stage => self.stage.as_ref(),
        }
    }

    /// Every Service that should route to production: the main one and each extra one.
    pub fn production(&self) -> impl Iterator<Item = &ServiceState> {
        self.production.iter().chain(
            self.extra
                .iter()
                .filter(|e| e.role == Role::Production)
                .map(|e| &e.state),
        )
    }
}

/// Where a slot's migration Job stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MigrationState {
    pub job: String,
    pub phase: MigrationPhase,
    /// Why it failed (the Job's Failed condition), when it did.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationPhase {
    Running,
    Succeeded,
    Failed,
}

impl MigrationPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationPhase::Running => "running",
            MigrationPhase::Succeeded => "succeeded",
            MigrationPhase::Failed => "failed",
        }
    }
}

impl MigrationState {
    pub fn of(job: &Job) -> MigrationState {
        let status = job.status.clone().unwrap_or_default();
        let condition = |type_: &str| {
            status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == type_ && c.status == "True")
                .cloned()
        };
        let (phase, reason) = if let Some(failed) = condition("Failed") {
            let reason = [failed.reason, failed.message]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": ");
            (
                MigrationPhase::Failed,
                Some(reason).filter(|r| !r.is_empty()),
            )
        } else if condition("Complete").is_some() || status.succeeded.unwrap_or(0) > 0 {
            (MigrationPhase::Succeeded, None)
        } else {
            (MigrationPhase::Running, None)
        };
        MigrationState {
            job: job.metadata.name.clone().unwrap_or_default(),
            phase,
            reason,
        }
    }

    /// Each slot's newest migration Job, by slot.
    pub fn newest_by_slot(jobs: &[Job]) -> BTreeMap<Slot, MigrationState> {
        let mut newest: BTreeMap<Slot, &Job> = BTreeMap::new();
        for job in jobs {
            let Some(slot) = job
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SLOT_LABEL))
                .and_then(|s| Slot::parse(s))
            else {
                continue;
            };
            let created = |j: &Job| j.metadata.creation_timestamp.as_ref().map(|t| t.0);
            if newest
                .get(&slot)
                .is_none_or(|seen| created(seen) < created(job))
            {
                newest.insert(slot, job);
            }
        }
        newest
            .into_iter()
            .map(|(slot, job)| (slot, MigrationState::of(job)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(spec: i32, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web-green", "generation": 2},
            "spec": {"replicas": spec, "selector": {}, "template": {"spec": {"containers": [{"name": "app", "image": "web:v2"}]}}},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn fully_available_needs_every_pod_new_and_available() {
        let full = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3});
        assert!(SlotState::from_deployment(&deployment(3, full.clone())).fully_available());
        let mut stale = full.clone();
        stale["observedGeneration"] = json!(1);
        assert!(!SlotState::from_deployment(&deployment(3, stale)).fully_available());
        let mut partial = full.clone();
        partial["availableReplicas"] = json!(2);
        assert!(!SlotState::from_deployment(&deployment(3, partial)).fully_available());
        let mut old_pods = full;
        old_pods["replicas"] = json!(4);
        let state = SlotState::from_deployment(&deployment(3, old_pods));
        assert!(!state.fully_available());
        assert_eq!(state.rollout_detail(&[]), ", 1 old pods");
        assert!(
            !SlotState::from_deployment(&deployment(0, json!({"observedGeneration": 2})))
                .fully_available()
        );
        assert!(!SlotState::default().fully_available());
    }

    #[test]
    fn pod_reasons_read_like_kubectl() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-green-1"},
            "spec": {"nodeName": "n", "containers": []},
            "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}],
                       "containerStatuses": [{"name": "app", "image": "web:v2", "imageID": "", "ready": false, "restartCount": 0,
                                              "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}
        }))
        .unwrap();
        let state = PodState::of(&pod);
        assert!(!state.ready);
        assert_eq!(state.reason.as_deref(), Some("ImagePullBackOff"));
        let running: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-green-2"},
            "spec": {"nodeName": "n", "containers": []},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}
        }))
        .unwrap();
        assert_eq!(
            PodState::of(&running).reason.as_deref(),
            Some("readiness probe failing")
        );
    }

    #[test]
    fn services_are_sorted_by_role_and_count_endpoints_by_slot() {
        let svc = |name: &str, role: &str, key: Option<&str>, slot: &str| -> Service {
            let mut labels = json!({"bgslot/role": role, "helm.sh/chart": "bgslot-0.2.0"});
            if let Some(key) = key {
                labels["bgslot/service"] = json!(key);
            }
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels,
                    "managedFields": [{"manager": "kubectl-patch", "operation": "Update",
                        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:selector": {"f:bgslot/slot": {}}}}}]},
                "spec": {"selector": {"bgslot/slot": slot}}
            }))
            .unwrap()
        };
        let list = [
            svc("web", "production", None, "blue"),
            svc("web-stage", "stage", Some("main"), "green"),
            svc("web-admin", "production", Some("admin"), "blue"),
            svc("other", "", None, "blue"),
        ];
        let endpoints: Endpoints = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "subsets": [{"addresses": [{"ip": "10.244.0.1", "targetRef": {"name": "web-blue-1"}}, {"ip": "10.244.0.2"}],
                         "notReadyAddresses": [{"ip": "10.244.0.3"}]}]
        }))
        .unwrap();
        let pods = BTreeMap::from([("web-blue-1".to_string(), "blue".to_string())]);
        let services = Services::of(&list, &pods, &endpoints_of(&[endpoints]));
        let production = services.production.as_ref().unwrap();
        assert_eq!(
            (production.selects, production.ready, production.not_ready),
            (Some(Slot::Blue), 2, 1)
        );
        assert_eq!(production.ready_in(Slot::Blue), 1);
        assert_eq!(production.selector_owner.as_deref(), Some("kubectl-patch"));
        assert_eq!(
            production.describe(),
            "Service web selects blue with 2 ready endpoints (1 in blue, 1 in unknown)"
        );
        assert_eq!(services.stage.as_ref().unwrap().selects, Some(Slot::Green));
        assert_eq!(services.extra.len(), 1);
        assert_eq!(services.production().count(), 2);
        assert_eq!(services.chart.as_deref(), Some("bgslot-0.2.0"));
    }
}
