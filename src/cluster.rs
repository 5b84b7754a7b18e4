//! What the cluster really runs: each slot's Deployment and pods, and what each Service routes to.
//!
//! bgslot only *reads* through the Kubernetes API (writes go through helm). Objects are found by the
//! chart's labels (`app.kubernetes.io/instance`, `bgslot/slot`, `bgslot/role`), not by name, so a
//! `fullnameOverride` changes nothing here.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::Client;

use crate::values::Slot;

pub const SLOT_LABEL: &str = "bgslot/slot";
pub const ROLE_LABEL: &str = "bgslot/role";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Production,
    Stage,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Production => "production",
            Role::Stage => "stage",
        }
    }
}

pub fn slot_selector(release: &str, slot: Slot) -> String {
    format!("{INSTANCE_LABEL}={release},{SLOT_LABEL}={slot}")
}

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
}

/// The release's two Services as read together.
#[derive(Debug, Clone, Default)]
pub struct Services {
    pub production: Option<ServiceState>,
    pub stage: Option<ServiceState>,
    pub chart: Option<String>,
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
}

impl ServiceState {
    pub fn ready_in(&self, slot: Slot) -> usize {
        self.ready_by_slot.get(slot.as_str()).copied().unwrap_or(0)
    }
}

/// What the cluster shows for one release.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub blue: SlotState,
    pub green: SlotState,
    pub production_service: Option<ServiceState>,
    pub stage_service: Option<ServiceState>,
    /// `NAME-VERSION` from the `helm.sh/chart` label of the release's Services: the chart the
    /// latest revision rendered.
    pub chart: Option<String>,
}

impl Observed {
    pub fn slot(&self, slot: Slot) -> &SlotState {
        match slot {
            Slot::Blue => &self.blue,
            Slot::Green => &self.green,
        }
    }

    pub fn service(&self, role: Role) -> Option<&ServiceState> {
        match role {
            Role::Production => self.production_service.as_ref(),
            Role::Stage => self.stage_service.as_ref(),
        }
    }
}

pub const CHART_LABEL: &str = "helm.sh/chart";

/// Reads the cluster for one release.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
    /// Whether the server serves EndpointSlices (`discovery.k8s.io/v1`), once asked.
    slices_served: std::sync::Arc<std::sync::OnceLock<bool>>,
}

impl Cluster {
    pub fn new(client: Client, namespace: String) -> Cluster {
        Cluster {
            client,
            namespace,
            slices_served: Default::default(),
        }
    }

    /// Whether endpoints are read from EndpointSlices (else from Endpoints): known after the
    /// first read of a Service's endpoints.
    pub fn reads_endpoint_slices(&self) -> Option<bool> {
        self.slices_served.get().copied()
    }

    pub fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The slot's Deployment, if rendered.
    pub async fn slot(&self, release: &str, slot: Slot) -> Result<SlotState> {
        let list = self
            .deployments()
            .list(&ListParams::default().labels(&slot_selector(release, slot)))
            .await
            .with_context(|| {
                format!(
                    "listing the {slot} Deployment of {release} in namespace {}",
                    self.namespace
                )
            })?;
        Ok(list
            .items
            .first()
            .map(SlotState::from_deployment)
            .unwrap_or_default())
    }

    /// The slot's pods and why each is not serving.
    pub async fn slot_pods(&self, release: &str, slot: Slot) -> Result<Vec<PodState>> {
        let list = self
            .pods()
            .list(&ListParams::default().labels(&slot_selector(release, slot)))
            .await
            .with_context(|| {
                format!(
                    "listing the {slot} pods of {release} in namespace {}",
                    self.namespace
                )
            })?;
        let mut pods: Vec<PodState> = list.items.iter().map(pod_state).collect();
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(pods)
    }

    /// Everything bgslot looks at for `release`: both slots and both Services, read at once.
    pub async fn observe(&self, release: &str) -> Result<Observed> {
        let (blue, green, services) = tokio::try_join!(
            self.slot(release, Slot::Blue),
            self.slot(release, Slot::Green),
            self.services(release),
        )?;
        Ok(Observed {
            blue,
            green,
            production_service: services.production,
            stage_service: services.stage,
            chart: services.chart,
        })
    }

    /// The release's production and stage Services, their live selectors and ready endpoints:
    /// one Service list and one pod list for both.
    pub async fn services(&self, release: &str) -> Result<Services> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
        let (list, pods) = tokio::try_join!(
            async {
                services
                    .list(
                        &ListParams::default()
                            .labels(&format!("{INSTANCE_LABEL}={release},{ROLE_LABEL}")),
                    )
                    .await
                    .with_context(|| {
                        format!(
                            "listing the Services of {release} in namespace {}",
                            self.namespace
                        )
                    })
            },
            self.pod_slots(release)
        )?;
        let of_role = |role: Role| {
            list.items.iter().find(|s| {
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(ROLE_LABEL))
                    .map(String::as_str)
                    == Some(role.as_str())
            })
        };
        let (production, stage) = tokio::try_join!(
            self.service_state(of_role(Role::Production), &pods),
            self.service_state(of_role(Role::Stage), &pods)
        )?;
        let chart = list
            .items
            .iter()
            .find_map(|s| s.metadata.labels.as_ref()?.get(CHART_LABEL).cloned());
        Ok(Services {
            production,
            stage,
            chart,
        })
    }

    async fn service_state(
        &self,
        svc: Option<&Service>,
        pods: &BTreeMap<String, String>,
    ) -> Result<Option<ServiceState>> {
        let Some(svc) = svc else { return Ok(None) };
        let name = svc.metadata.name.clone().unwrap_or_default();
        let selector_slot = svc
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .and_then(|s| s.get(SLOT_LABEL))
            .cloned();
        let (ready, not_ready) = self.endpoints(&name).await?;
        let mut ready_by_slot = BTreeMap::new();
        for pod in &ready {
            let slot = pod
                .as_ref()
                .and_then(|p| pods.get(p))
                .cloned()
                .unwrap_or_else(|| "unknown".into());
            *ready_by_slot.entry(slot).or_insert(0) += 1;
        }
        Ok(Some(ServiceState {
            selects: selector_slot.as_deref().and_then(Slot::parse),
            selector_slot,
            name,
            ready: ready.len(),
            not_ready,
            ready_by_slot,
        }))
    }

    /// Pod name -> slot label, for the release's pods.
    async fn pod_slots(&self, release: &str) -> Result<BTreeMap<String, String>> {
        let list = self
            .pods()
            .list(
                &ListParams::default().labels(&format!("{INSTANCE_LABEL}={release},{SLOT_LABEL}")),
            )
            .await
            .with_context(|| {
                format!(
                    "listing the pods of {release} in namespace {}",
                    self.namespace
                )
            })?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|p| {
                let slot = p.metadata.labels.as_ref()?.get(SLOT_LABEL)?.clone();
                Some((p.metadata.name?, slot))
            })
            .collect())
    }

    /// Ready endpoints (as the pod behind each, when known) and the count of not-ready ones.
    /// EndpointSlices where the server serves `discovery.k8s.io/v1`, else Endpoints.
    async fn endpoints(&self, service: &str) -> Result<(Vec<Option<String>>, usize)> {
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.namespace);
        let listed = match self.slices_served.get() {
            Some(false) => None,
            _ => Some(
                slices
                    .list(
                        &ListParams::default()
                            .labels(&format!("kubernetes.io/service-name={service}")),
                    )
                    .await,
            ),
        };
        match listed {
            None => {}
            Some(Ok(list)) => {
                let _ = self.slices_served.set(true);
                let mut ready = Vec::new();
                let mut not_ready = 0;
                for ep in list.items.iter().flat_map(|s| s.endpoints.iter()) {
                    let c = ep.conditions.clone().unwrap_or_default();
                    // A nil `ready` means ready; terminating endpoints never count.
                    if c.ready.unwrap_or(true) && !c.terminating.unwrap_or(false) {
                        ready.push(ep.target_ref.as_ref().and_then(|r| r.name.clone()));
                    } else {
                        not_ready += 1;
                    }
                }
                return Ok((ready, not_ready));
            }
            Some(Err(kube::Error::Api(status))) if status.code == 404 => {
                let _ = self.slices_served.set(false);
            }
            Some(Err(err)) => {
                return Err(err).with_context(|| {
                    format!(
                        "listing EndpointSlices of Service {service} in namespace {}",
                        self.namespace
                    )
                })
            }
        }
        let endpoints: Api<Endpoints> = Api::namespaced(self.client.clone(), &self.namespace);
        let Some(ep) = endpoints.get_opt(service).await.with_context(|| {
            format!(
                "reading Endpoints {service} in namespace {}",
                self.namespace
            )
        })?
        else {
            return Ok((Vec::new(), 0));
        };
        let mut ready = Vec::new();
        let mut not_ready = 0;
        for subset in ep.subsets.unwrap_or_default() {
            for addr in subset.addresses.unwrap_or_default() {
                ready.push(addr.target_ref.and_then(|r| r.name));
            }
            not_ready += subset.not_ready_addresses.map(|a| a.len()).unwrap_or(0);
        }
        Ok((ready, not_ready))
    }
}

/// A pod's readiness and the reason it is not serving, as `kubectl get pods` would show it.
pub fn pod_state(pod: &Pod) -> PodState {
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
        assert!(!SlotState::from_deployment(&deployment(3, old_pods)).fully_available());
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
        let state = pod_state(&pod);
        assert!(!state.ready);
        assert_eq!(state.reason.as_deref(), Some("ImagePullBackOff"));
        let running: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-green-2"},
            "spec": {"nodeName": "n", "containers": []},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}
        }))
        .unwrap();
        assert_eq!(
            pod_state(&running).reason.as_deref(),
            Some("readiness probe failing")
        );
    }
}
