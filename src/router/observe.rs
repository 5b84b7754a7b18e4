//! The one read of a router a command starts from: the router release as `observe` read it (its
//! helm record, values and history), and what its slot releases and Services show, read at once.
//! A slot release's latest revision is read from the labels of helm's storage objects through the
//! API (no helm process), its Deployments by helm's release annotation, and the pods behind the
//! router's endpoints by the selectors the router recorded.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;

use super::live::{self, RoutedService, SlotLive};
use super::slot_release;
use super::values::{RouterValues, SlotRecord};
use crate::cluster::labels::{release_selector, services_selector};
use crate::cluster::state::{endpoints_of, endpoints_of_slices, ServiceEndpoints};
use crate::cluster::Cluster;
use crate::context::Ctx;
use crate::observe::Observation;
use crate::vocab::{PerSlot, Role, Slot};

/// A router release as one command saw it.
#[derive(Debug, Clone)]
pub struct RouterSeen {
    /// The router release itself.
    pub seen: Observation,
    pub router: RouterValues,
    pub slots: PerSlot<SlotLive>,
    /// The router's Services, the main pair first.
    pub services: Vec<RoutedService>,
}

impl RouterSeen {
    /// Reads what the slot releases and the router's Services of `seen` show.
    pub async fn read(ctx: &Ctx, seen: Observation, router: RouterValues) -> Result<RouterSeen> {
        let release = seen.release.to_string();
        let names = PerSlot::new(|s| slot_release(&release, s));
        let cluster = &ctx.cluster;
        let releases = [names.blue.as_str(), names.green.as_str()];
        let (of_services, of_pods) = (services_selector(&release), selectors(&router));
        let (records, deployments, services, endpoints, pods) = tokio::try_join!(
            ctx.records.latest_labels(&releases),
            list::<Deployment>(cluster, None, "Deployments"),
            list::<Service>(cluster, Some(&of_services), "the router's Services"),
            router_endpoints(cluster, &release),
            pod_slots(cluster, &of_pods),
        )?;
        let slots = PerSlot::new(|slot| SlotLive {
            slot,
            release: names[slot].clone(),
            helm: records.get(&names[slot]).cloned(),
            deployments: live::deployments_of(&deployments, &names[slot]),
        });
        Ok(RouterSeen {
            services: live::routed_services(&services, &endpoints, &pods),
            seen,
            router,
            slots,
        })
    }

    pub fn release(&self) -> &str {
        &self.seen.release
    }

    pub fn production(&self) -> Slot {
        self.seen.values.production
    }

    pub fn record(&self, slot: Slot) -> &SlotRecord {
        self.router.slot(slot)
    }

    pub fn live(&self, slot: Slot) -> &SlotLive {
        &self.slots[slot]
    }

    /// The main Service with `role`.
    pub fn service(&self, role: Role) -> Option<&RoutedService> {
        self.services
            .iter()
            .find(|s| s.key == "main" && s.role == role)
    }

    /// Drift between the router's record and its Services, then its slot releases.
    pub fn drift(&self) -> (Vec<String>, Vec<String>) {
        (
            live::service_drift(
                self.release(),
                &self.router,
                self.production(),
                &self.services,
            ),
            live::slot_drift(&self.router, &self.slots),
        )
    }
}

/// The selector each slot's pods are found by: the recorded one of a slot that runs a release.
pub fn selectors(router: &RouterValues) -> PerSlot<BTreeMap<String, String>> {
    PerSlot::new(|slot| {
        let record = router.slot(slot);
        if record.is_deployed() {
            record.selector.clone()
        } else {
            BTreeMap::new()
        }
    })
}

async fn list<K>(cluster: &Cluster, selector: Option<&str>, what: &str) -> Result<Vec<K>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let params = match selector {
        Some(s) => ListParams::default().labels(s),
        None => ListParams::default(),
    };
    Ok(cluster
        .api::<K>()
        .list(&params)
        .await
        .with_context(|| format!("listing {what} in namespace {}", cluster.namespace))?
        .items)
}

/// The endpoints of the router's Services (they carry the Services' labels).
async fn router_endpoints(
    cluster: &Cluster,
    release: &str,
) -> Result<BTreeMap<String, ServiceEndpoints>> {
    let selector = release_selector(release);
    if cluster.reads_endpoint_slices() != Some(false) {
        match cluster
            .api::<EndpointSlice>()
            .list(&ListParams::default().labels(&selector))
            .await
        {
            Ok(list) => return Ok(endpoints_of_slices(&list.items)),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => {
                return Err(err).with_context(|| {
                    format!(
                        "listing the EndpointSlices of {release} in namespace {}",
                        cluster.namespace
                    )
                })
            }
        }
    }
    let list: Vec<Endpoints> = list(cluster, Some(&selector), "Endpoints").await?;
    Ok(endpoints_of(&list))
}

/// Pod name -> the slot whose selector it matches.
pub async fn pod_slots(
    cluster: &Cluster,
    selectors: &PerSlot<BTreeMap<String, String>>,
) -> Result<BTreeMap<String, Slot>> {
    let names = |slot: Slot| {
        let selector = super::values::label_selector(&selectors[slot]);
        async move {
            if selector.is_empty() {
                return Ok(Vec::new());
            }
            let pods = cluster
                .api::<Pod>()
                .list_metadata(&ListParams::default().labels(&selector))
                .await
                .with_context(|| format!("listing the {slot} pods ({selector})"))?;
            Ok::<_, anyhow::Error>(
                pods.items
                    .into_iter()
                    .filter_map(|p| p.metadata.name)
                    .collect::<Vec<_>>(),
            )
        }
    };
    let (blue, green) = tokio::try_join!(names(Slot::Blue), names(Slot::Green))?;
    Ok(blue
        .into_iter()
        .map(|p| (p, Slot::Blue))
        .chain(green.into_iter().map(|p| (p, Slot::Green)))
        .collect())
}

/// The router's Services as they route now, with `selectors` telling which pods are whose.
pub async fn services_now(
    cluster: &Cluster,
    release: &str,
    selectors: &PerSlot<BTreeMap<String, String>>,
) -> Result<Vec<RoutedService>> {
    let of_services = services_selector(release);
    let (services, endpoints, pods) = tokio::try_join!(
        list::<Service>(cluster, Some(&of_services), "the router's Services"),
        router_endpoints(cluster, release),
        pod_slots(cluster, selectors),
    )?;
    Ok(live::routed_services(&services, &endpoints, &pods))
}
