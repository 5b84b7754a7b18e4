//! The Kubernetes API as bgslot uses it: reads of a release's objects, turned into `state` by the
//! pure functions there, and the few writes helm cannot make (creating a missing namespace,
//! deleting a failed migration Job so it runs again, sizing an autoscaled slot). The lock's Lease
//! is `lock`'s; every other change goes through helm.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Namespace, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::Client;

use super::gitops::GitOpsMarks;
use super::labels::{
    cron_jobs_selector, migrations_selector, release_selector, services_selector,
    slot_pods_selector, slot_selector, workers_selector, CHART_LABEL,
};
use super::observed::Observed;
use super::services::{
    endpoints_of, endpoints_of_slices, labelled_pod_slots, pod_slots, routed_services, PodSlots,
    RoutedService, ServiceEndpoints,
};
use super::state::{pod_states, MigrationState, PodState, SlotState};
use super::workloads::{ConfigRef, CronJobState, WorkerState};
use crate::events::Events;
use crate::vocab::{PerSlot, Slot};

/// A release's Services as one read finds them.
#[derive(Debug, Clone, Default)]
pub struct ReleaseServices {
    /// The main pair first, then the extra ones.
    pub services: Vec<RoutedService>,
    /// `NAME-VERSION` from their `helm.sh/chart` label: the chart the latest revision rendered.
    pub chart: Option<String>,
    /// What a GitOps controller's marks on them say, if any.
    pub gitops: Option<GitOpsMarks>,
}

/// Reads (and, where helm cannot, writes) the cluster for one namespace.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
    /// Whether the server serves EndpointSlices (`discovery.k8s.io/v1`), once asked.
    slices_served: Arc<OnceLock<bool>>,
    /// The CronJob API version the server serves (`batch/v1`, or `batch/v1beta1` before 1.21).
    cron_jobs_version: Arc<OnceLock<&'static str>>,
    events: Arc<dyn Events>,
}

impl Cluster {
    pub fn new(client: Client, namespace: String, events: Arc<dyn Events>) -> Cluster {
        Cluster {
            client,
            namespace,
            slices_served: Default::default(),
            cron_jobs_version: Default::default(),
            events,
        }
    }

    /// Whether endpoints are read from EndpointSlices (else from Endpoints): known after the
    /// first read of a Service's endpoints.
    pub fn reads_endpoint_slices(&self) -> Option<bool> {
        self.slices_served.get().copied()
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn deployments(&self) -> Api<Deployment> {
        self.api()
    }

    pub fn pods(&self) -> Api<Pod> {
        self.api()
    }

    /// Whether this namespace exists.
    pub async fn namespace_exists(&self) -> Result<bool> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let name = &self.namespace;
        Ok(api
            .get_opt(name)
            .await
            .with_context(|| format!("reading namespace {name}"))?
            .is_some())
    }

    /// Creates this namespace when it is missing (in a dry run, only says it would). Returns
    /// whether it was (or would be) created; one created meanwhile by someone else was not.
    pub async fn create_namespace_if_missing(&self, dry_run: bool) -> Result<bool> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let name = &self.namespace;
        if self.namespace_exists().await? {
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
                self.events.step(&format!("created namespace {name}"));
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(err) => Err(err).with_context(|| format!("creating namespace {name}")),
        }
    }

    /// Deletes a Job (its pods go with it) and waits until it is gone, so helm can create it anew.
    pub async fn delete_job(&self, name: &str, timeout: Duration) -> Result<()> {
        let jobs: Api<Job> = self.api();
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

    pub(super) async fn list<K>(
        &self,
        selector: &str,
        what: impl FnOnce() -> String,
    ) -> Result<Vec<K>>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let list = self
            .api::<K>()
            .list(&ListParams::default().labels(selector))
            .await
            .with_context(|| format!("listing {} in namespace {}", what(), self.namespace))?;
        Ok(list.items)
    }

    /// The slot's Deployment, if rendered.
    pub async fn slot(&self, release: &str, slot: Slot) -> Result<SlotState> {
        let deployments: Vec<Deployment> = self
            .list(&slot_selector(release, slot), || {
                format!("the {slot} Deployment of {release}")
            })
            .await?;
        Ok(SlotState::of_first(&deployments))
    }

    /// The slot's pods and why each is not serving.
    pub async fn slot_pods(&self, release: &str, slot: Slot) -> Result<Vec<PodState>> {
        let pods: Vec<Pod> = self
            .list(&slot_selector(release, slot), || {
                format!("the {slot} pods of {release}")
            })
            .await?;
        Ok(pod_states(&pods))
    }

    /// The pods `selector` matches and why each is not serving.
    pub async fn pods_matching(&self, selector: &str) -> Result<Vec<PodState>> {
        let pods: Vec<Pod> = self
            .list(selector, || format!("the pods {selector}"))
            .await?;
        Ok(pod_states(&pods))
    }

    /// Everything bgslot looks at for `release`: both slots and all Services, read at once.
    pub async fn observe(&self, release: &str) -> Result<Observed> {
        let pods = PodSlots::Labelled(slot_pods_selector(release));
        let (blue, green, services, migrations, workers, cron_jobs) = tokio::try_join!(
            self.slot(release, Slot::Blue),
            self.slot(release, Slot::Green),
            self.services(release, &pods),
            self.migrations(release),
            self.workers(release, None),
            self.cron_jobs(release),
        )?;
        Ok(Observed {
            slots: PerSlot { blue, green },
            workers,
            cron_jobs,
            services: services.services,
            migrations,
            gitops: services.gitops,
            chart: services.chart,
            absent_config: Vec::new(),
        })
    }

    /// Which of `refs` do not exist in the namespace (one metadata GET each, at once). One that
    /// may not be read (RBAC) counts as present: bgslot cannot say, and the pods will.
    pub async fn absent(&self, refs: &[ConfigRef]) -> Result<Vec<ConfigRef>> {
        let exists = |r: &ConfigRef| {
            let r = r.clone();
            async move {
                let found = match &r {
                    ConfigRef::ConfigMap(name) => self
                        .api::<ConfigMap>()
                        .get_metadata_opt(name)
                        .await
                        .map(|o| o.is_some()),
                    ConfigRef::Secret(name) => self
                        .api::<Secret>()
                        .get_metadata_opt(name)
                        .await
                        .map(|o| o.is_some()),
                };
                match found {
                    Ok(found) => Ok((r, found)),
                    Err(kube::Error::Api(status)) if status.code == 403 => Ok((r, true)),
                    Err(err) => Err(err)
                        .with_context(|| format!("reading {r} in namespace {}", self.namespace)),
                }
            }
        };
        let seen = futures::future::try_join_all(refs.iter().map(exists)).await?;
        Ok(seen
            .into_iter()
            .filter(|(_, found)| !found)
            .map(|(r, _)| r)
            .collect())
    }

    /// The release's Services that play a role, where each routes (`pods`: how each slot's pods
    /// are found), and what their labels say of the release: one Service list, one endpoints
    /// list, and one pod list per slot, at once.
    pub async fn services(&self, release: &str, pods: &PodSlots) -> Result<ReleaseServices> {
        let selector = services_selector(release);
        let (list, endpoints, pods) = tokio::try_join!(
            self.list::<Service>(&selector, || format!("the Services of {release}")),
            self.endpoints(release),
            self.pod_slots(pods),
        )?;
        Ok(ReleaseServices {
            chart: list
                .iter()
                .find_map(|s| s.metadata.labels.as_ref()?.get(CHART_LABEL).cloned()),
            gitops: list.iter().find_map(GitOpsMarks::of),
            services: routed_services(&list, &endpoints, &pods),
        })
    }

    /// Pod name -> slot, for the pods `how` finds (their metadata only).
    pub async fn pod_slots(&self, how: &PodSlots) -> Result<BTreeMap<String, Slot>> {
        let selectors = match how {
            PodSlots::Selected(selectors) => selectors,
            PodSlots::Labelled(selector) => {
                let pods = self
                    .pod_metadata(selector, || format!("the pods {selector}"))
                    .await?;
                let named: Vec<(String, &BTreeMap<String, String>)> = pods
                    .iter()
                    .filter_map(|p| Some((p.metadata.name.clone()?, p.metadata.labels.as_ref()?)))
                    .collect();
                return Ok(labelled_pod_slots(named));
            }
        };
        let names = |slot: Slot| async move {
            let lists = selectors[slot].iter().map(|selector| async move {
                let pods = self
                    .pod_metadata(selector, || format!("the {slot} pods ({selector})"))
                    .await?;
                Ok::<_, anyhow::Error>(
                    pods.into_iter()
                        .filter_map(|p| p.metadata.name)
                        .collect::<Vec<_>>(),
                )
            });
            let lists = futures::future::try_join_all(lists).await?;
            Ok::<_, anyhow::Error>(lists.into_iter().flatten().collect::<Vec<_>>())
        };
        let (blue, green) = tokio::try_join!(names(Slot::Blue), names(Slot::Green))?;
        Ok(pod_slots(PerSlot { blue, green }))
    }

    /// The metadata of the pods `selector` matches.
    async fn pod_metadata(
        &self,
        selector: &str,
        what: impl FnOnce() -> String,
    ) -> Result<Vec<kube::core::PartialObjectMeta<Pod>>> {
        let list = self
            .api::<Pod>()
            .list_metadata(&ListParams::default().labels(selector))
            .await
            .with_context(|| format!("listing {} in namespace {}", what(), self.namespace))?;
        Ok(list.items)
    }

    /// The endpoints of each of the release's Services (they carry the Service's labels):
    /// EndpointSlices where the server serves `discovery.k8s.io/v1`, else Endpoints.
    pub async fn endpoints(&self, release: &str) -> Result<BTreeMap<String, ServiceEndpoints>> {
        let of_release = ListParams::default().labels(&release_selector(release));
        if self.slices_served.get() != Some(&false) {
            match self.api::<EndpointSlice>().list(&of_release).await {
                Ok(list) => {
                    let _ = self.slices_served.set(true);
                    return Ok(endpoints_of_slices(&list.items));
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
        let list: Vec<Endpoints> = self
            .list(&release_selector(release), || {
                format!("the Endpoints of {release}")
            })
            .await?;
        Ok(endpoints_of(&list))
    }

    /// The release's worker Deployments (of one slot, or of both), by name then slot.
    pub async fn workers(&self, release: &str, slot: Option<Slot>) -> Result<Vec<WorkerState>> {
        let deployments: Vec<Deployment> = self
            .list(&workers_selector(release, slot), || {
                format!("the workers of {release}")
            })
            .await?;
        let mut workers: Vec<WorkerState> =
            deployments.iter().filter_map(WorkerState::of).collect();
        workers.sort_by(|a, b| (&a.name, a.slot).cmp(&(&b.name, b.slot)));
        Ok(workers)
    }

    /// The release's CronJobs, by name then slot.
    pub async fn cron_jobs(&self, release: &str) -> Result<Vec<CronJobState>> {
        let docs = self
            .cron_job_docs(&cron_jobs_selector(release), || {
                format!("the CronJobs of {release}")
            })
            .await?;
        let mut jobs: Vec<CronJobState> = docs.iter().filter_map(CronJobState::of).collect();
        jobs.sort_by(|a, b| (&a.name, a.slot).cmp(&(&b.name, b.slot)));
        Ok(jobs)
    }

    /// The CronJobs `selector` matches, as JSON: `batch/v1`, or `batch/v1beta1` where the server
    /// serves no other (Kubernetes before 1.21).
    pub(super) async fn cron_job_docs(
        &self,
        selector: &str,
        what: impl Fn() -> String,
    ) -> Result<Vec<serde_json::Value>> {
        let params = ListParams::default().labels(selector);
        let versions: &[&'static str] = match self.cron_jobs_version.get() {
            Some(version) => std::slice::from_ref(version),
            None => &["v1", "v1beta1"],
        };
        for &version in versions {
            match self.cron_job_api(version).list(&params).await {
                Ok(list) => {
                    let _ = self.cron_jobs_version.set(version);
                    return Ok(list
                        .items
                        .iter()
                        .filter_map(|o| serde_json::to_value(o).ok())
                        .collect());
                }
                Err(kube::Error::Api(status)) if status.code == 404 => continue,
                Err(err) => {
                    return Err(err).with_context(|| {
                        format!("listing {} in namespace {}", what(), self.namespace)
                    })
                }
            }
        }
        Ok(Vec::new())
    }

    /// The CronJob API of `version` (`v1`, or `v1beta1`), or of the one the server serves.
    pub(super) fn cron_job_api(&self, version: &str) -> Api<kube::api::DynamicObject> {
        let version = self.cron_jobs_version.get().copied().unwrap_or(version);
        let resource = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "batch", version, "CronJob",
        ));
        Api::namespaced_with(self.client.clone(), &self.namespace, &resource)
    }

    /// Each slot's migration Job (the newest, when several exist), as the chart labels it.
    pub async fn migrations(&self, release: &str) -> Result<BTreeMap<Slot, MigrationState>> {
        let jobs: Vec<Job> = self
            .list(&migrations_selector(release, None), || {
                format!("the migration Jobs of {release}")
            })
            .await?;
        Ok(MigrationState::newest_by_slot(&jobs))
    }
}
