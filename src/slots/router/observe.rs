//! The one read of a router's slots a command starts from, after the router release itself: each
//! slot release's latest revision (from the labels of helm's storage objects through the API, no
//! helm process), its Deployments (by helm's release annotation), and the router's Services with
//! the pods behind their endpoints found by the selectors the router recorded. Also the change
//! feed `status --watch` redraws a router on.

use anyhow::{Context, Result};
use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::ListParams;
use kube::runtime::watcher;

use super::drift::unrecorded;
use super::live::{deployments_of, SlotLive};
use super::values::{label_selector, RouterValues};
use super::{slot_release, Router};
use crate::cluster::{Cluster, PodSlots};
use crate::context::Ctx;
use crate::observe::Observation;
use crate::slots::Seen;
use crate::vocab::{PerSlot, Slot};
use crate::wait;

/// Reads what the slot releases and the router's Services of the router `release` show.
pub async fn observe(ctx: &Ctx, release: Observation) -> Result<Seen<Router>> {
    let name = release.release.to_string();
    let router = RouterValues::of(&name, &release.all_values)?
        .with_context(|| format!("release {name} records no router"))?;
    let names = PerSlot::new(|slot| slot_release(&name, slot));
    let pods = pod_slots(&router);
    let releases = [names.blue.as_str(), names.green.as_str()];
    let (records, deployments, services) = tokio::try_join!(
        ctx.records.latest_labels(&releases),
        every_deployment(&ctx.cluster),
        ctx.cluster.services(&name, &pods),
    )?;
    let live = PerSlot::new(|slot| SlotLive {
        slot,
        release: names[slot].clone(),
        helm: records.get(&names[slot]).cloned(),
        deployments: deployments_of(&deployments, &names[slot]),
    });
    // A release the router does not record: what left it, bgslot's deploy that did not finish
    // or someone else? Its description says (read only then).
    let mut leftovers = PerSlot::default();
    for slot in Slot::ALL {
        if unrecorded(router.slot(slot), &live[slot]) {
            leftovers[slot] = ctx
                .records
                .latest(&names[slot])
                .await?
                .map(|latest| latest.revision.description);
        }
    }
    Ok(super::seen(
        release,
        router,
        live,
        services.services,
        leftovers,
    ))
}

/// How each slot's pods are found: the selector recorded for a slot that runs a release.
pub fn pod_slots(router: &RouterValues) -> PodSlots {
    PodSlots::Selected(PerSlot::new(|slot| {
        let record = router.slot(slot);
        if record.is_deployed() {
            record.selectors().map(label_selector).collect()
        } else {
            Vec::new()
        }
    }))
}

/// Every Deployment of the namespace: a slot release's are found by helm's annotation, since
/// another chart's labels are not known.
async fn every_deployment(cluster: &Cluster) -> Result<Vec<Deployment>> {
    Ok(cluster
        .deployments()
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing Deployments in namespace {}", cluster.namespace))?
        .items)
}

/// The change feed `status --watch` redraws a router on: the router's own (its Services,
/// endpoints and helm records), and the slot releases' Deployments, pods and helm records (their
/// labels are not known, so every Deployment and pod of the namespace).
pub fn changes(cluster: &Cluster, release: &str) -> BoxStream<'static, ()> {
    let slots = format!(
        "owner=helm,name in ({},{})",
        slot_release(release, Slot::Blue),
        slot_release(release, Slot::Green)
    );
    futures::stream::select_all([
        wait::release_changes(cluster, release).boxed(),
        wait::ticks(cluster.deployments(), watcher::Config::default()),
        wait::ticks(cluster.pods(), watcher::Config::default()),
        wait::feed::record_changes(cluster, &slots),
    ])
    .boxed()
}
