//! What a swap does once decided: promote a slot staged small (and wait until it serves at
//! production's capacity), write the flip, size workers whose HPA takes over, confirm the
//! production Service moved, finish a stop-first handover, and wait until the workers run in the
//! new production slot and have stopped in the old one.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};

use super::decide::{Promote, SwapPlan};
use super::report::{CronJobMove, Promotion, SwapReport, WorkerCount, WorkerMove};
use crate::commands::Header;
use crate::cluster::Followers;
use crate::context::Ctx;
use crate::values::ReleaseValues;
use crate::slots::{Seen, SlotKind};
use crate::vocab::{Role, Slot};
use crate::wait::{self, workers::WorkerPods, SlotRollout};

pub async fn act<K: SlotKind>(ctx: &Ctx, seen: &Seen<K>, plan: SwapPlan) -> Result<SwapReport> {
    let release = seen.name();
    let (from, to, op) = (plan.from, plan.to, plan.kind.op());
    let mut writes = 0;
    let promoted = match &plan.promote {
        Some(p) => {
            writes += 1;
            Some(promote(ctx, seen, p, to).await?)
        }
        None => None,
    };
    ctx.events.step(&format!("{op} {release}: production {from} -> {to}"));
    ctx.write(release, &plan.write)
        .await
        .with_context(|| format!("{} of {release} in namespace {}", plan.write.description(), ctx.namespace))?;
    writes += 1;
    let by_write = seen.followers == Followers::Labelled;
    let not_held = |name: &String| !plan.stop_first.contains(name);
    if by_write {
        size_workers(ctx, release, to, &plan.worker_capacity, not_held).await?;
    }
    let endpoints = wait::production_serves(&ctx.cluster, release, &seen.pods, to, ctx.timeout())
        .await
        .with_context(|| format!("helm applied the {op} of {release}, but the production Service does not serve {to} yet"))?;
    let back = format!("production routes to {to}; `bgslot rollback {release}` moves everything back");
    let unsettled = format!("production routes to {to}; `bgslot recover {release}` finishes moving the workers and CronJobs, `bgslot rollback {release}` moves everything back");
    let mut gaps = BTreeMap::new();
    if !by_write {
        gaps = move_followers(ctx, seen, &plan)
            .await
            .with_context(|| unsettled.clone())?;
    } else if let Some(start) = &plan.start_workers {
        let names = plan.stop_first.join(", ");
        ctx.events.step(&format!("{op} {release}: stop-first: waiting for the {from} pods of {names} to stop"));
        wait::workers_settled(&ctx.cluster, release, &seen.followers, from, &plan.stop_first, ctx.timeout(), ctx.events.as_ref())
            .await
            .with_context(|| format!("the {from} pods of the stop-first workers ({names}) did not stop; {back}"))?;
        let stopped = Instant::now();
        ctx.events.step(&format!("{op} {release}: starting {names} in {to}"));
        ctx.write(release, start)
            .await
            .with_context(|| format!("starting the stop-first workers ({names}) in {to}; {back}"))?;
        writes += 1;
        size_workers(ctx, release, to, &plan.worker_capacity, |name| !not_held(name)).await?;
        let started = wait::workers_settled(&ctx.cluster, release, &seen.followers, to, &plan.stop_first, ctx.timeout(), ctx.events.as_ref())
            .await
            .with_context(|| format!("the stop-first workers ({names}) did not start in {to}; {back}"))?;
        let gap = stopped.elapsed().as_millis() as u64;
        gaps.extend(started.into_iter().map(|w| (w.worker.name, gap)));
    }
    let values = &seen.release.values;
    let names: Vec<String> = values.workloads.workers.iter().map(|w| w.name.clone()).collect();
    let (running, stopped) = tokio::try_join!(
        async {
            wait::workers_settled(&ctx.cluster, release, &seen.followers, to, &names, ctx.timeout(), ctx.events.as_ref())
                .await
                .with_context(|| format!("the workers of {to} did not all become available; {back}"))
        },
        async {
            wait::workers_settled(&ctx.cluster, release, &seen.followers, from, &names, ctx.timeout(), ctx.events.as_ref())
                .await
                .with_context(|| format!("the workers of {from} did not all stop; {back}"))
        },
    )?;
    let cron_jobs = if values.workloads.cron_jobs.is_empty() {
        Vec::new()
    } else {
        ctx.cluster.cron_jobs_in(release, &seen.followers).await?
    };
    let service = seen
        .service(Role::Production)
        .map(|s| s.name.clone())
        .unwrap_or_else(|| release.to_string());
    let (target, previous) = (seen.slot(to), seen.slot(from));
    Ok(SwapReport {
        header: Header::new(op, release, seen.namespace())
            .revision(seen.latest().revision + writes)
            .production(to)
            .next(format!("bgslot clean {release}   (or: bgslot rollback {release})")),
        mode: K::MODE,
        from,
        to,
        image: target.image.clone(),
        previous_image: previous.image.clone(),
        url: values.url(Role::Production, &service, seen.namespace(), target.port),
        service,
        ready_endpoints: endpoints,
        promoted,
        workers: worker_moves(values, &running, &stopped, &gaps),
        cron_jobs: CronJobMove::of(&cron_jobs, to),
        slot_release: target.release.clone(),
        previous_release: previous.release.clone(),
    })
}

/// Brings a slot staged small to production's capacity and waits until it serves at that size
/// behind the stage Service. A failure leaves production as it was and the slot staged.
async fn promote<K>(ctx: &Ctx, seen: &Seen<K>, p: &Promote, slot: Slot) -> Result<Promotion> {
    let release = seen.name();
    let unchanged = || format!("production is unchanged and {slot} stays staged");
    ctx.events.step(&if p.grows() {
        format!(
            "swap {release}: bringing {slot} from {} to {} pods (production's capacity) before the flip",
            p.from, p.to
        )
    } else {
        format!("swap {release}: ending the preview of {slot} (its {} pods cover production's capacity) before the flip", p.to)
    });
    ctx.write(release, &p.write)
        .await
        .with_context(|| format!("bringing the {slot} slot of {release} to {} pods; {}", p.to, unchanged()))?;
    if p.autoscaled {
        let Some(name) = ctx.cluster.slot(release, slot).await?.deployment else {
            anyhow::bail!("the {slot} Deployment of {release} is gone; {}", unchanged());
        };
        ctx.scale(&name, p.to).await?;
    }
    let rollout = SlotRollout::of_chart(release, slot);
    let done = wait::slot_rolled_out(&ctx.cluster, release, slot, &rollout, ctx.timeout(), ctx.events.as_ref())
        .await
        .with_context(|| format!("the {slot} slot of {release} did not reach {} available pods; {}", p.to, unchanged()))?;
    let desired = done.totals.desired.max(0) as usize;
    wait::endpoints_ready(&ctx.cluster, release, &seen.pods, Role::Stage, slot, desired, ctx.timeout())
        .await
        .with_context(|| format!("the stage Service of {release} does not route to all {} pods of {slot}; {}", p.to, unchanged()))?;
    Ok(Promotion { from: p.from, to: p.to })
}

/// Moves workers and CronJobs that bgslot moves through the API (a router's) once production
/// routes to `to`: the old production's CronJobs are suspended before the new one's run (never
/// both); an `overlap` worker starts in `to` at the size it runs in `from` as it stops there; a
/// `stop-first` one stops in `from` (its pods gone) before it starts in `to`. Returns the gap of
/// each stop-first worker, in milliseconds.
async fn move_followers<K>(ctx: &Ctx, seen: &Seen<K>, plan: &SwapPlan) -> Result<BTreeMap<String, u64>> {
    let (release, from, to, op) = (seen.name(), plan.from, plan.to, plan.kind.op());
    let (workloads, observed) = (&seen.release.values.workloads, &seen.release.cluster);
    for c in observed.cron_jobs_of(from).filter(|c| !c.suspended) {
        ctx.events.step(&format!("{op} {release}: suspending CronJob {} ({from})", c.cron_job));
        ctx.suspend(&c.cron_job, true).await?;
    }
    for c in observed.cron_jobs_of(to).filter(|c| c.suspended) {
        ctx.events.step(&format!("{op} {release}: resuming CronJob {} ({to})", c.cron_job));
        ctx.suspend(&c.cron_job, false).await?;
    }
    let deployment = |name: &str, slot: Slot| observed.worker(name, slot).and_then(|w| w.state.deployment.clone());
    let size = |name: &str| plan.worker_capacity.iter().find(|(n, _)| n == name).map_or(0, |(_, n)| *n);
    let scale = async |name: &str, slot: Slot, n: u64| -> Result<()> {
        if let Some(d) = deployment(name, slot) {
            ctx.events.step(&format!("{op} {release}: scaling the worker {name} in {slot} to {n} replicas"));
            ctx.scale(&d, n).await?;
        }
        Ok(())
    };
    for w in workloads.workers.iter().filter(|w| !plan.stop_first.contains(&w.name)) {
        scale(&w.name, to, size(&w.name)).await?;
        scale(&w.name, from, w.stage_replicas[from]).await?;
    }
    let mut gaps = BTreeMap::new();
    if plan.stop_first.is_empty() {
        return Ok(gaps);
    }
    let names = plan.stop_first.join(", ");
    for name in &plan.stop_first {
        scale(name, from, 0).await?;
    }
    ctx.events.step(&format!("{op} {release}: stop-first: waiting for the {from} pods of {names} to stop"));
    wait::workers_settled(&ctx.cluster, release, &seen.followers, from, &plan.stop_first, ctx.timeout(), ctx.events.as_ref())
        .await
        .with_context(|| format!("the {from} pods of the stop-first workers ({names}) did not stop"))?;
    let stopped = Instant::now();
    for name in &plan.stop_first {
        scale(name, to, size(name)).await?;
    }
    let started = wait::workers_settled(&ctx.cluster, release, &seen.followers, to, &plan.stop_first, ctx.timeout(), ctx.events.as_ref())
        .await
        .with_context(|| format!("the stop-first workers ({names}) did not start in {to}"))?;
    let gap = stopped.elapsed().as_millis() as u64;
    gaps.extend(started.into_iter().map(|w| (w.worker.name, gap)));
    for w in workloads.workers.iter().filter(|w| plan.stop_first.contains(&w.name) && w.stage_replicas[from] > 0) {
        scale(&w.name, from, w.stage_replicas[from]).await?;
    }
    Ok(gaps)
}

/// Scales each worker in `slot` whose HPA takes over to what it ran in the old production slot
/// (those `pick` chooses), so capacity is handed over as it is for the web pods.
async fn size_workers(
    ctx: &Ctx,
    release: &str,
    slot: Slot,
    capacity: &[(String, u64)],
    pick: impl Fn(&String) -> bool,
) -> Result<()> {
    for (name, replicas) in capacity.iter().filter(|(name, _)| pick(name)) {
        let Some(worker) = ctx.cluster.workers(release, Some(slot)).await?.into_iter().find(|w| &w.name == name) else {
            continue;
        };
        let Some(deployment) = worker.state.deployment else { continue };
        ctx.events.step(&format!("{slot}: scaling the worker {name} to {replicas} replicas (what it ran before)"));
        ctx.scale(&deployment, *replicas).await?;
    }
    Ok(())
}

fn worker_moves(
    values: &ReleaseValues,
    running: &[WorkerPods],
    stopped: &[WorkerPods],
    gaps: &BTreeMap<String, u64>,
) -> Vec<WorkerMove> {
    let count = |list: &[WorkerPods], name: &str| {
        list.iter().find(|w| w.worker.name == name).map(|w| WorkerCount {
            slot: w.worker.slot,
            ready: w.worker.state.ready,
            desired: w.worker.state.desired,
        })
    };
    values
        .workloads
        .workers
        .iter()
        .filter_map(|w| {
            Some(WorkerMove {
                name: w.name.clone(),
                handover: w.handover,
                production: count(running, &w.name)?,
                stage: count(stopped, &w.name)?,
                gap_ms: gaps.get(&w.name).copied(),
            })
        })
        .collect()
}
