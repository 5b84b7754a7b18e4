//! What the cluster really runs: each slot's Deployment and pods, and what each Service routes to.
//!
//! bgslot reads through the Kubernetes API; its writes go through helm, except the few helm cannot
//! make, which live here too: creating a missing namespace, deleting a failed migration Job so it
//! runs again, and sizing an autoscaled slot (the lock's Lease is `lock.rs`'s). Objects are found by
//! the chart's labels (`app.kubernetes.io/instance`, `bgslot/slot`, `bgslot/role`), not by name, so
//! a `fullnameOverride` changes nothing here.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::Client;

use crate::output::progress;
use crate::values::Slot;

pub const SLOT_LABEL: &str = "bgslot/slot";
pub const ROLE_LABEL: &str = "bgslot/role";
/// Which Service pair a Service belongs to: `main`, or the chart's `extraServices` key.
pub const SERVICE_LABEL: &str = "bgslot/service";
pub const MAIN_SERVICE: &str = "main";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const MIGRATION_COMPONENT: &str = "migration";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
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

/// The slot's Deployment and its pods; a slot's migration Job pods carry the slot label too, but
/// are not the slot's app.
pub fn slot_selector(release: &str, slot: Slot) -> String {
    format!(
        "{INSTANCE_LABEL}={release},{SLOT_LABEL}={slot},{COMPONENT_LABEL}!={MIGRATION_COMPONENT}"
    )
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

/// The marks a GitOps controller leaves on the objects it manages.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "tool", rename_all = "kebab-case")]
pub enum GitOpsMarks {
    /// Flux's helm-controller labels every object of a HelmRelease with its name and namespace
    /// (and keeps a helm release of its own).
    Flux { namespace: String, name: String },
    /// Argo CD's annotation tracking (`argocd.argoproj.io/tracking-id: APP:GROUP/KIND:NS/NAME`).
    /// Argo CD renders charts without a helm release.
    ArgoCd { application: String },
}

pub const FLUX_NAME_LABEL: &str = "helm.toolkit.fluxcd.io/name";
pub const FLUX_NAMESPACE_LABEL: &str = "helm.toolkit.fluxcd.io/namespace";
pub const ARGOCD_TRACKING_ANNOTATION: &str = "argocd.argoproj.io/tracking-id";

fn gitops_marks(svc: &Service) -> Option<GitOpsMarks> {
    let labels = svc.metadata.labels.as_ref();
    if let Some(name) = labels.and_then(|l| l.get(FLUX_NAME_LABEL)) {
        let namespace = labels
            .and_then(|l| l.get(FLUX_NAMESPACE_LABEL))
            .cloned()
            .unwrap_or_default();
        return Some(GitOpsMarks::Flux {
            namespace,
            name: name.clone(),
        });
    }
    let tracking = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ARGOCD_TRACKING_ANNOTATION))?;
    let application = tracking.split(':').next().unwrap_or(tracking);
    Some(GitOpsMarks::ArgoCd {
        application: application.to_string(),
    })
}

impl Services {
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

/// One variant of a Service from the chart's `extraServices`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraService {
    pub key: String,
    pub role: Role,
    pub state: ServiceState,
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
}

/// What the cluster shows for one release.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub blue: SlotState,
    pub green: SlotState,
    pub production_service: Option<ServiceState>,
    pub stage_service: Option<ServiceState>,
    /// The variants of the chart's `extraServices`.
    pub extra_services: Vec<ExtraService>,
    /// Each slot's migration Job, by slot name.
    pub migrations: BTreeMap<String, MigrationState>,
    /// A GitOps controller's marks on the release's Services.
    pub gitops: Option<GitOpsMarks>,
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

    pub fn migration(&self, slot: Slot) -> Option<&MigrationState> {
        self.migrations.get(slot.as_str())
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

    /// Creates this namespace when it is missing (in a dry run, only says it would). Returns
    /// whether it was (or would be) created; one created meanwhile by someone else was not.
    pub async fn create_namespace_if_missing(&self, dry_run: bool) -> Result<bool> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let name = &self.namespace;
        if api
            .get_opt(name)
            .await
            .with_context(|| format!("reading namespace {name}"))?
            .is_some()
        {
            return Ok(false);
        }
        if dry_run {
            return Ok(true);
        }
        let ns = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&kube::api::PostParams::default(), &ns).await {
            Ok(_) => {
                progress(&format!("created namespace {name}"));
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(err) => Err(err).with_context(|| format!("creating namespace {name}")),
        }
    }

    /// Deletes a Job (its pods go with it) and waits until it is gone, so helm can create it anew.
    pub async fn delete_job(&self, name: &str, timeout: Duration) -> Result<()> {
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.namespace);
        match jobs
            .delete(name, &kube::api::DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("deleting the failed migration Job {name}"))
            }
        }
        let gone =
            kube::runtime::wait::await_condition(jobs, name, |job: Option<&Job>| job.is_none());
        tokio::time::timeout(timeout, gone)
            .await
            .with_context(|| {
                format!(
                    "the migration Job {name} was not gone within {}s",
                    timeout.as_secs()
                )
            })?
            .with_context(|| format!("waiting for the migration Job {name} to be deleted"))?;
        Ok(())
    }

    /// Sets a Deployment's replicas through the scale subresource, as an HPA does, so the
    /// change stays out of helm's managed fields.
    pub async fn scale_deployment(&self, name: &str, replicas: u64) -> Result<()> {
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        self.deployments()
            .patch_scale(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .with_context(|| format!("scaling the Deployment {name} to {replicas} replicas"))?;
        Ok(())
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
        let (blue, green, services, migrations) = tokio::try_join!(
            self.slot(release, Slot::Blue),
            self.slot(release, Slot::Green),
            self.services(release),
            self.migrations(release),
        )?;
        Ok(Observed {
            blue,
            green,
            production_service: services.production,
            stage_service: services.stage,
            extra_services: services.extra,
            migrations,
            gitops: services.gitops,
            chart: services.chart,
        })
    }

    /// The release's Services, their live selectors and ready endpoints: one Service list, one
    /// pod list and one endpoints list for all of them.
    pub async fn services(&self, release: &str) -> Result<Services> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
        let (list, pods, endpoints) = tokio::try_join!(
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
            self.pod_slots(release),
            self.endpoints(release),
        )?;
        let mut found = Services {
            chart: list
                .items
                .iter()
                .find_map(|s| s.metadata.labels.as_ref()?.get(CHART_LABEL).cloned()),
            gitops: list.items.iter().find_map(gitops_marks),
            ..Services::default()
        };
        for svc in &list.items {
            let labels = svc.metadata.labels.clone().unwrap_or_default();
            let role = match labels.get(ROLE_LABEL).map(String::as_str) {
                Some("production") => Role::Production,
                Some("stage") => Role::Stage,
                _ => continue,
            };
            let state = service_state(svc, &pods, &endpoints);
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
            .sort_by(|a, b| (&a.key, a.role.as_str()).cmp(&(&b.key, b.role.as_str())));
        Ok(found)
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

    /// The endpoints of each of the release's Services (they carry the Service's labels): ready
    /// ones as the pod behind each, when known, and a count of the others. EndpointSlices where
    /// the server serves `discovery.k8s.io/v1`, else Endpoints.
    async fn endpoints(&self, release: &str) -> Result<BTreeMap<String, ServiceEndpoints>> {
        let of_release = ListParams::default().labels(&format!("{INSTANCE_LABEL}={release}"));
        let mut by_service: BTreeMap<String, ServiceEndpoints> = BTreeMap::new();
        if self.slices_served.get() != Some(&false) {
            let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.namespace);
            match slices.list(&of_release).await {
                Ok(list) => {
                    let _ = self.slices_served.set(true);
                    for slice in &list.items {
                        let Some(service) = slice
                            .metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get("kubernetes.io/service-name"))
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
                    return Ok(by_service);
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    let _ = self.slices_served.set(false);
                }
                Err(err) => {
                    return Err(err).with_context(|| {
                        format!(
                            "listing the EndpointSlices of {release} in namespace {}",
                            self.namespace
                        )
                    })
                }
            }
        }
        let endpoints: Api<Endpoints> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = endpoints.list(&of_release).await.with_context(|| {
            format!(
                "listing the Endpoints of {release} in namespace {}",
                self.namespace
            )
        })?;
        for ep in list.items {
            let entry = by_service
                .entry(ep.metadata.name.clone().unwrap_or_default())
                .or_default();
            for subset in ep.subsets.unwrap_or_default() {
                for addr in subset.addresses.unwrap_or_default() {
                    entry.ready.push(addr.target_ref.and_then(|r| r.name));
                }
                entry.not_ready += subset.not_ready_addresses.map(|a| a.len()).unwrap_or(0);
            }
        }
        Ok(by_service)
    }

    /// Each slot's migration Job (the newest, when several exist), as the chart labels it.
    pub async fn migrations(&self, release: &str) -> Result<BTreeMap<String, MigrationState>> {
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = jobs
            .list(&ListParams::default().labels(&format!(
                "{INSTANCE_LABEL}={release},{COMPONENT_LABEL}={MIGRATION_COMPONENT}"
            )))
            .await
            .with_context(|| {
                format!(
                    "listing the migration Jobs of {release} in namespace {}",
                    self.namespace
                )
            })?;
        let mut newest: BTreeMap<String, &Job> = BTreeMap::new();
        for job in &list.items {
            let Some(slot) = job.metadata.labels.as_ref().and_then(|l| l.get(SLOT_LABEL)) else {
                continue;
            };
            let created = |j: &Job| j.metadata.creation_timestamp.as_ref().map(|t| t.0);
            if newest
                .get(slot)
                .is_none_or(|seen| created(seen) < created(job))
            {
                newest.insert(slot.clone(), job);
            }
        }
        Ok(newest
            .into_iter()
            .map(|(slot, job)| (slot, MigrationState::of(job)))
            .collect())
    }
}

/// The endpoints of one Service.
#[derive(Debug, Clone, Default)]
struct ServiceEndpoints {
    ready: Vec<Option<String>>,
    not_ready: usize,
}

fn service_state(
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
