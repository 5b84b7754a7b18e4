//! A router's slot release as the cluster shows it, as plain values built by pure functions: its
//! latest helm revision (from the labels of helm's own storage objects) and its Deployments
//! (found by the annotation helm puts on every object it manages, since another chart's labels are
//! not known), the routed ones picked by the selector the router recorded.

use k8s_openapi::api::apps::v1::Deployment;

use super::manifest::selects;
use super::values::SlotRecord;
use crate::cluster::DeploymentLive;
use crate::vocab::Slot;

/// The annotation helm puts on every object it manages, naming the release.
pub const RELEASE_ANNOTATION: &str = "meta.helm.sh/release-name";

/// A release's latest revision, as helm's storage labels it (read in `helm::storage`).
pub use crate::helm::storage::HelmRecord;

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
            .map(DeploymentLive::progress)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Totals;
    use crate::slots::router::fixtures::record;
    use crate::slots::router::view::view;
    use serde_json::json;
    use std::collections::BTreeMap;

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
            helm: Some(HelmRecord {
                revision: 1,
                status: "deployed".into(),
            }),
            deployments: deployments_of(&list, "web-green"),
        };
        assert_eq!(green.deployments.len(), 2);
        let mut rec = record(Slot::Green, "6.5.0");
        rec.selector = BTreeMap::from([("app".into(), "web-green-podinfo".into())]);
        rec.container = "app".into();
        assert_eq!(green.routed(&rec).len(), 1);
        let seen = view("web", &rec, &green);
        assert_eq!(
            seen.totals,
            Totals {
                ready: 2,
                available: 2,
                desired: 2
            }
        );
        assert!(seen.available && seen.runs() && seen.trouble.is_none());
        assert_eq!(seen.image, "podinfo:6.5.0");
        assert_eq!(seen.deployment(), Some("web-green-podinfo"));
        rec.selector = BTreeMap::from([("app".into(), "other".into())]);
        let nothing_routed = view("web", &rec, &green);
        assert!(!nothing_routed.available, "nothing routed is not available");
        assert_eq!(
            nothing_routed.unavailable,
            ": no Deployment of it runs the pods the router selects"
        );
    }
}
