//! What follows production in a release (its workers and CronJobs), wherever it is: labelled by
//! bgslot's chart, whose own writes move it, or named in a router's slot releases, which bgslot
//! moves through the API (a worker's scale, a CronJob's `suspend`). One shape for both, as with
//! [`PodSlots`](super::PodSlots) for where a Service's endpoints lead; and the pods of the
//! namespace with the release each belongs to, which a route must not reach by accident.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;

use super::api::Cluster;
use super::workloads::{CronJobState, WorkerState};
use crate::vocab::Slot;

/// Where a release's workers and CronJobs are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Followers {
    /// bgslot's chart labels them with the release, the slot and their name.
    #[default]
    Labelled,
    /// Each is an object of a slot release, known by name.
    Named(Vec<Named>),
}

/// A worker or CronJob of one slot, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub kind: FollowerKind,
    /// Its name across slots (`sidekiq`).
    pub name: String,
    pub slot: Slot,
    /// Its Deployment's or CronJob's name (`web-green-sidekiq`).
    pub object: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowerKind {
    Worker,
    CronJob,
}

impl Followers {
    /// The named followers of `kind` (in `slot`, or in both).
    pub fn named(&self, kind: FollowerKind, slot: Option<Slot>) -> impl Iterator<Item = &Named> {
        let list: &[Named] = match self {
            Followers::Labelled => &[],
            Followers::Named(list) => list,
        };
        list.iter()
            .filter(move |n| n.kind == kind && slot.is_none_or(|s| n.slot == s))
    }

    /// Whether the worker `name` is meant to exist in `slot`: always for bgslot's chart, which
    /// renders every worker in both slots; for a router, when the slot's record names it (a new
    /// version may add a worker, or drop one).
    pub fn has_worker(&self, name: &str, slot: Slot) -> bool {
        match self {
            Followers::Labelled => true,
            Followers::Named(_) => self
                .named(FollowerKind::Worker, Some(slot))
                .any(|n| n.name == name),
        }
    }
}

/// A pod of the namespace and the helm release of the Deployment that made it, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LivePod {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub release: Option<String>,
}

const RELEASE_NAME: &str = "meta.helm.sh/release-name";

impl Cluster {
    /// The workers of `release` (of `slot`, or of both), by name then slot.
    pub async fn workers_in(
        &self,
        release: &str,
        followers: &Followers,
        slot: Option<Slot>,
    ) -> Result<Vec<WorkerState>> {
        let Followers::Named(_) = followers else {
            return self.workers(release, slot).await;
        };
        let mut workers = Vec::new();
        for n in followers.named(FollowerKind::Worker, slot) {
            let found = self
                .deployments()
                .get_opt(&n.object)
                .await
                .with_context(|| {
                    format!(
                        "reading Deployment {} (worker {} of {release}) in namespace {}",
                        n.object, n.name, self.namespace
                    )
                })?;
            if let Some(d) = found {
                let pods = match_labels(&d);
                workers.push(WorkerState::named(&d, n.name.clone(), n.slot, pods));
            }
        }
        workers.sort_by(|a, b| (&a.name, a.slot).cmp(&(&b.name, b.slot)));
        Ok(workers)
    }

    /// The CronJobs of `release`, by name then slot.
    pub async fn cron_jobs_in(
        &self,
        release: &str,
        followers: &Followers,
    ) -> Result<Vec<CronJobState>> {
        let Followers::Named(_) = followers else {
            return self.cron_jobs(release).await;
        };
        let wanted: Vec<&Named> = followers.named(FollowerKind::CronJob, None).collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let docs = self
            .cron_job_docs("", || format!("the CronJobs of {release}"))
            .await?;
        let mut jobs: Vec<CronJobState> = wanted
            .iter()
            .filter_map(|n| {
                let doc = docs.iter().find(|d| {
                    d.pointer("/metadata/name").and_then(|v| v.as_str()) == Some(&n.object)
                })?;
                CronJobState::named(doc, n.name.clone(), n.slot)
            })
            .collect();
        jobs.sort_by(|a, b| (&a.name, a.slot).cmp(&(&b.name, b.slot)));
        Ok(jobs)
    }

    /// Suspends the CronJob `name`, or lets it run again.
    pub async fn suspend_cron_job(&self, name: &str, suspend: bool) -> Result<()> {
        let patch = serde_json::json!({"spec": {"suspend": suspend}});
        self.cron_job_api("v1")
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .with_context(|| {
                format!(
                    "setting suspend: {suspend} on CronJob {name} in namespace {}",
                    self.namespace
                )
            })?;
        Ok(())
    }

    /// The pods matching `selector` (raw, for a wait to judge).
    pub async fn pods_of(&self, selector: &str) -> Result<Vec<Pod>> {
        self.list(selector, || format!("the pods {selector}")).await
    }

    /// Every pod of the namespace, each with the release of the Deployment that made it (its
    /// ReplicaSet is the Deployment's name and the pod's template hash).
    pub async fn live_pods(&self) -> Result<Vec<LivePod>> {
        let (pods, deployments) = tokio::try_join!(
            self.list::<Pod>("", || "the pods".to_string()),
            self.list::<Deployment>("", || "the Deployments".to_string()),
        )?;
        let release_of: BTreeMap<&str, &str> = deployments
            .iter()
            .filter_map(|d| {
                let name = d.metadata.name.as_deref()?;
                let release = d.metadata.annotations.as_ref()?.get(RELEASE_NAME)?;
                Some((name, release.as_str()))
            })
            .collect();
        Ok(pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                let labels = p.metadata.labels.clone().unwrap_or_default();
                let release = p
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|o| o.kind == "ReplicaSet")
                    .and_then(|rs| {
                        let hash = labels.get("pod-template-hash")?;
                        rs.name.strip_suffix(&format!("-{hash}"))
                    })
                    .and_then(|deployment| release_of.get(deployment))
                    .map(|r| r.to_string());
                LivePod {
                    name: p.metadata.name.clone().unwrap_or_default(),
                    labels,
                    release,
                }
            })
            .collect())
    }
}

/// A Deployment's pod selector as a label selector (`matchLabels` only, which is what a chart
/// renders; `matchExpressions` narrow it further, so this finds its pods and perhaps more).
fn match_labels(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}
