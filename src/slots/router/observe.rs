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
use crate::cluster::{Cluster, FollowerKind, Followers, Named, PodSlots};
use crate::context::Ctx;
use crate::observe::Observation;
use crate::slots::Seen;
use crate::vocab::{PerSlot, Slot};
use crate::wait;
use crate::workers::{Worker, Workloads};

/// Reads what the slot releases and the router's Services of the router `release` show.
pub async fn observe(ctx: &Ctx, mut release: Observation) -> Result<Seen<Router>> {
    let name = release.release.to_string();
    let router = RouterValues::of(&name, &release.all_values)?
        .with_context(|| format!("release {name} records no router"))?;
    let names = PerSlot::new(|slot| slot_release(&name, slot));
    let pods = pod_slots(&router);
    let followers = followers(&router);
    let releases = [names.blue.as_str(), names.green.as_str()];
    let (records, deployments, services, workers, cron_jobs) = tokio::try_join!(
        ctx.records.latest_labels(&releases),
        every_deployment(&ctx.cluster),
        ctx.cluster.services(&name, &pods),
        ctx.cluster.workers_in(&name, &followers, None),
        ctx.cluster.cron_jobs_in(&name, &followers),
    )?;
    // What the shared swap, status and waits read of workers and CronJobs, as for bgslot's chart.
    release.values.workloads = workloads(&router);
    release.cluster.workers = workers;
    release.cluster.cron_jobs = cron_jobs;
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

/// Where each deployed slot's workers and CronJobs are: the objects the router records by name.
pub fn followers(router: &RouterValues) -> Followers {
    let mut named = Vec::new();
    for slot in Slot::ALL {
        let record = router.slot(slot);
        if !record.is_deployed() {
            continue;
        }
        named.extend(record.workers.iter().map(|w| Named {
            kind: FollowerKind::Worker,
            name: w.name.clone(),
            slot,
            object: w.deployment.clone(),
        }));
        named.extend(record.cron_jobs.iter().map(|c| Named {
            kind: FollowerKind::CronJob,
            name: c.name.clone(),
            slot,
            object: c.cron_job.clone(),
        }));
    }
    Followers::Named(named)
}

/// The workers and CronJobs of the deployed slots as bgslot's chart would configure them: each
/// worker's production size per slot from the record, its stage size and handover from the app
/// settings.
pub fn workloads(router: &RouterValues) -> Workloads {
    let deployed: Vec<Slot> = Slot::ALL
        .into_iter()
        .filter(|&s| router.slot(s).is_deployed())
        .collect();
    let mut names: Vec<&str> = Vec::new();
    let mut cron_jobs: Vec<String> = Vec::new();
    for &slot in &deployed {
        let record = router.slot(slot);
        for w in &record.workers {
            if !names.contains(&w.name.as_str()) {
                names.push(&w.name);
            }
        }
        for c in &record.cron_jobs {
            if !cron_jobs.contains(&c.name) {
                cron_jobs.push(c.name.clone());
            }
        }
    }
    let app = &router.app;
    let workers = names
        .into_iter()
        .map(|name| {
            let of = |slot: Slot| {
                router
                    .slot(slot)
                    .workers
                    .iter()
                    .find(|w| w.name == name && deployed.contains(&slot))
            };
            Worker {
                name: name.to_string(),
                handover: app.handover,
                replicas: PerSlot::new(|s| of(s).map(|w| w.replicas).unwrap_or(0)),
                stage_replicas: PerSlot::new(|_| app.worker_stage_replicas),
                autoscaled: PerSlot::new(|s| of(s).is_some_and(|w| w.autoscaled)),
            }
        })
        .collect();
    Workloads {
        workers,
        cron_jobs,
        held: Default::default(),
    }
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
