//! What the cluster shows for a release, as plain values built from API objects by pure
//! functions: each slot's Deployments and pods, and each slot's migration (where the Services
//! route is `services`). `api` reads the objects; everything here is unit-tested without a
//! cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

use super::labels::SLOT_LABEL;
use crate::vocab::Slot;

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

    /// Rolled out completely: the controller saw the latest spec, every desired pod is of it and
    /// available, and no old pod is still counted. One scaled to zero is, with none.
    pub fn rolled_out(&self) -> bool {
        self.deployment.is_some()
            && self.observed
            && self.updated == self.desired
            && self.available == self.desired
            && self.total == self.desired
    }

    /// Rolled out with at least one pod: it can take traffic. A Deployment scaled to zero is
    /// never "fully available".
    pub fn fully_available(&self) -> bool {
        self.desired > 0 && self.rolled_out()
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

/// One Deployment as seen: its rollout, the labels of its pods, and its containers' images.
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

    /// Rolled out completely ([`SlotState::rolled_out`]); one scaled to zero is, with none.
    pub fn complete(&self) -> bool {
        self.state.rolled_out()
    }

    /// The image `container` runs (the first container's, when it has none of that name).
    pub fn image_of(&self, container: &str) -> Option<&str> {
        self.images
            .iter()
            .find(|(name, _)| name == container)
            .or(self.images.first())
            .map(|(_, image)| image.as_str())
    }

    /// `web-green 2/3 ready, 2 available, 3 updated`, for a message.
    pub fn progress(&self) -> String {
        let s = &self.state;
        format!(
            "{} {}/{} ready, {} available, {} updated",
            self.name, s.ready, s.desired, s.available, s.updated
        )
    }
}

/// Ready, available and desired pods, summed over Deployments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub ready: i32,
    pub available: i32,
    pub desired: i32,
}

impl Totals {
    pub fn of<'a>(deployments: impl IntoIterator<Item = &'a DeploymentLive>) -> Totals {
        deployments
            .into_iter()
            .fold(Totals::default(), |t, d| Totals {
                ready: t.ready + d.state.ready,
                available: t.available + d.state.available,
                desired: t.desired + d.state.desired,
            })
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
}
