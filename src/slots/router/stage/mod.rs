//! How a router stages a version: the rules only a router has (the slot release names, what an
//! unfinished deploy left), the renders of the slot release, the other slot and the router as
//! server-side dry runs and the preflight over them, then the writes: the slot release (`helm
//! upgrade --install`), the router's record of it, and the size of the Deployments the chart
//! renders none for. The waits after them are every kind's.

use anyhow::{Context, Result};
use serde_json::Value;

pub mod decide;

use decide::{router_write, slot_record, Known, Request, SlotPlan};

use super::manifest::Rendered;
use super::observe::{followers, pod_slots, workloads};
use super::preflight::{self, Analysis, Checks, Renders, Scopes};
use super::values::{label_selector, AppChanges, AppSettings, RouterValues};
use super::{slot_release, Router};
use crate::cluster::Followers;
use crate::context::Ctx;
use crate::error::Refusal;
use crate::helm::{AsStage, HelmError, HelmErrorKind, ReleaseRecord, Write};
use crate::planned::{self, Change, PlannedStep};
use crate::record::Recorded;
use crate::slots::stage::{Basis, Staged, Staging};
use crate::slots::Seen;
use crate::values::{coalesce, ReleaseValues};
use crate::vocab::{PerSlot, Role};
use crate::wait::{Deployments, SlotRollout};

/// What a router deploy writes, as planned.
#[derive(Debug, Clone)]
pub struct Plan {
    pub slot: SlotPlan,
    /// What the preflight found: the Service the router copies, the Deployments to wait for.
    pub analysis: Analysis,
    pub app: AppSettings,
    pub changes: AppChanges,
    /// The router write as rendered in the preflight (its record from the slot's render).
    pub router: Write,
    /// The router's values after its write (its URLs, its workers and CronJobs).
    pub after: ReleaseValues,
    pub followers: Followers,
    pub force: bool,
}

/// Plans a router deploy: the router's own rules, then the renders and the preflight.
pub async fn plan(
    ctx: &Ctx,
    seen: Option<&Seen<Router>>,
    basis: &Basis<'_>,
) -> Result<Staging<Plan>> {
    let release = &**basis.release;
    decide::check_name(release)?;
    let names = PerSlot::new(|slot| slot_release(release, slot));
    let (blue, green) = tokio::try_join!(
        ctx.helm.release(&names.blue),
        ctx.helm.release(&names.green)
    )?;
    let releases = PerSlot { blue, green };
    let req = Request::new(basis.request, seen.map(|s| &s.kind.values.app));
    let known = Known {
        basis,
        router: seen,
        releases: &releases,
        timeout: ctx.timeout(),
    };
    let plan = decide::decide(&known, &req)?;
    let slot = plan.slot;
    let chart = req.app.chart_ref();
    // Render the slot release, and the other slot: production as it runs, or before the first
    // install the chart as the other slot's release would render.
    let rendered = match ctx.helm.render_slot(&names[slot], &plan.write).await {
        Ok(r) => r,
        Err(err) => return Err(refusal_of(ctx, err, &names[slot], &chart).await),
    };
    let slot_render = Rendered::of(&rendered).map_err(anyhow::Error::msg)?;
    let other_slot = slot.other();
    let other_render = match (seen, &releases[other_slot]) {
        (Some(_), Some(live)) => Rendered::of(live).map_err(anyhow::Error::msg)?,
        (Some(_), None) => Rendered {
            release: names[other_slot].clone(),
            ..Rendered::default()
        },
        (None, _) => {
            let mut as_other = plan.write.clone();
            as_other.record = Recorded::Deploy {
                slot: other_slot,
                version: req.version.clone(),
            };
            match ctx.helm.render_slot(&names[other_slot], &as_other).await {
                Ok(r) => Rendered::of(&r).map_err(anyhow::Error::msg)?,
                Err(err) => return Err(refusal_of(ctx, err, &names[other_slot], &chart).await),
            }
        }
    };
    let renders_read = [&slot_render, &other_render];
    let (scopes, live_pods) = tokio::join!(scopes(ctx, &renders_read), ctx.cluster.live_pods());
    let live_pods = live_pods?;
    let production = seen.map(|s| s.kind.values.slot(other_slot));
    let installs = releases[slot]
        .as_ref()
        .is_none_or(|r| r.info.status == "uninstalled");
    let checks = Checks {
        release,
        namespace: basis.namespace,
        app: &req.app,
        wanted: &req.wanted,
        replicas: plan.replicas,
        scopes: &scopes,
        recorded: production.filter(|r| r.is_deployed()),
        install: installs,
        first: seen.is_none(),
        live_pods: &live_pods,
    };
    let renders = Renders {
        slot: &slot_render,
        other: &other_render,
    };
    let analysis = preflight::analyze(&renders, &checks)?;
    let mut plan = plan;
    // A slot written as stage holds back its workers and CronJobs as helm applies it.
    if !plan.install && (!analysis.workers.is_empty() || !analysis.cron_jobs.is_empty()) {
        plan.write.as_stage = Some(AsStage {
            workers: analysis
                .workers
                .iter()
                .map(|w| w.deployment.clone())
                .collect(),
            replicas: req.app.worker_stage_replicas,
        });
    }
    let record = slot_record(release, &plan, &analysis, &rendered, &req.version);
    let force = basis.request.force;
    let chart_differs = seen.is_some_and(|s| ctx.chart.differs_from(&s.latest().chart));
    let write = router_write(
        seen,
        &plan,
        &record,
        &req.app,
        &basis.request.app,
        force,
        chart_differs,
    );
    let router_render = match ctx
        .helm
        .render(release, &ctx.chart.reference()?, &write)
        .await
    {
        Ok(r) => r,
        Err(err) => {
            return Err(refusal_of(
                ctx,
                err,
                &format!("the router {release}"),
                &ctx.chart.shown(),
            )
            .await)
        }
    };
    preflight::check_router(
        &Rendered::of(&router_render).map_err(anyhow::Error::msg)?,
        &renders,
        &checks,
    )?;
    let (after, followers) = values_after(ctx, release, &router_render)?;
    let mut recorded = seen.map(|s| s.kind.values.clone()).unwrap_or_default();
    recorded.slot_mut(slot).selector = analysis.selector.clone();
    recorded.slot_mut(slot).state = super::values::RecordedState::Deployed;
    let pods = pod_slots(&recorded);
    Ok(Staging {
        release: basis.release.clone(),
        slot,
        install: basis.install,
        version: req.version.clone(),
        image: Some(analysis.image.clone()),
        preview: None,
        rollout: SlotRollout {
            deployments: Deployments::Named(analysis.deployments.clone()),
            routed: analysis.routed.clone(),
            pods: label_selector(&analysis.selector),
        },
        pods,
        migration: false,
        plan: Plan {
            slot: plan,
            analysis,
            app: req.app,
            changes: basis.request.app.clone(),
            router: write,
            after,
            followers,
            force,
        },
    })
}

/// The app settings to record once a slot release is written: a chart from a repository or a
/// registry that was deployed without a version is pinned to the version helm resolved, so later
/// deploys take a new one only when asked (`--app-chart-version`). A local chart has none.
pub fn settled_app(app: &AppSettings, written: &ReleaseRecord) -> AppSettings {
    let mut app = app.clone();
    if app.version.is_empty() && !app.is_local() {
        if let Some(chart) = &written.chart {
            app.version = chart.metadata.version.clone();
        }
    }
    app
}

/// The router's computed values after its write (for its URLs, and its workers and CronJobs as
/// observe reads them), from its rendered user values; and where those workers are.
fn values_after(
    ctx: &Ctx,
    release: &str,
    rendered: &ReleaseRecord,
) -> Result<(ReleaseValues, Followers)> {
    let user = rendered.user_values();
    let all = match &ctx.chart.defaults {
        Some(defaults) => coalesce(defaults, &user),
        None => user,
    };
    let mut values = ReleaseValues::from_json(release, &all)?;
    let router = RouterValues::of(release, &all)?
        .with_context(|| format!("the router {release} as rendered records no router"))?;
    values.workloads = workloads(&router);
    Ok((values, followers(&router)))
}

/// The writes a router deploy makes, in order: the slot release, the size of what the chart
/// renders no replicas for, the router's record.
pub fn preview(
    ctx: &Ctx,
    seen: Option<&Seen<Router>>,
    staging: &Staging<Plan>,
) -> Vec<PlannedStep> {
    let (plan, a) = (&staging.plan.slot, &staging.plan.analysis);
    let release = &*staging.release;
    let slot = plan.slot;
    let name = slot_release(release, slot);
    let base = plan.write.base.clone().unwrap_or(Value::Null);
    let changes = plan
        .write
        .sets
        .iter()
        .map(|(key, value)| {
            let new = value.as_value();
            let old = key
                .split('.')
                .try_fold(&base, |v, k| v.get(k))
                .cloned()
                .unwrap_or(Value::Null);
            Change {
                key: key.clone(),
                old,
                new,
            }
        })
        .filter(|c| c.old != c.new)
        .collect();
    let chart = staging.plan.app.chart_ref();
    let mut steps: Vec<PlannedStep> = plan.leftover.iter().map(PlannedStep::action).collect();
    let scale = plan.replicas.filter(|_| !a.scale.is_empty()).map(|n| {
        format!(
            "scale {} to {n} replicas (what production runs; the chart renders none)",
            a.scale.join(", ")
        )
    });
    let held = plan.write.as_stage.as_ref().map(|held| {
        let mut what = Vec::new();
        if !held.workers.is_empty() {
            what.push(format!(
                "the workers {} at {} replicas",
                held.workers.join(", "),
                held.replicas
            ));
        }
        if !a.cron_jobs.is_empty() {
            let names: Vec<&str> = a.cron_jobs.iter().map(|c| c.cron_job.as_str()).collect();
            what.push(format!("the CronJobs {} suspended", names.join(", ")));
        }
        format!(
            "as stage, with {} (bgslot edits the render as helm's post-renderer)",
            what.join(" and ")
        )
    });
    let hooks = format!("hooks: {}", a.hooks.describe());
    steps.push(
        PlannedStep::action(if plan.install {
            format!(
                "install {} in {slot} as production: release {name} of {chart}",
                staging.version
            )
        } else {
            format!(
                "stage {} in {slot}: release {name} of {chart}",
                staging.version
            )
        })
        .write(ctx.helm.slot_command_line(&name, &plan.write), changes)
        .then(held.into_iter().chain([hooks]).chain(scale)),
    );
    let all = seen
        .map(|s| s.release.all_values.clone())
        .unwrap_or_else(|| Value::Object(Default::default()));
    let role = if plan.install {
        Role::Production
    } else {
        Role::Stage
    };
    let routes = format!("Service {} ({})", a.service, label_selector(&a.selector));
    steps.push(
        PlannedStep::action(if plan.install {
            format!("install the router {release} with production on {slot}, routing to {routes}")
        } else {
            format!("record {slot} in the router {release}: {routes}")
        })
        .write(
            ctx.helm.command_line(release, &ctx.chart.shown(), &staging.plan.router),
            planned::changes(&staging.plan.router, &all, &[], None),
        )
        .then([
            format!(
                "wait until every Deployment of {name} is rolled out: {} (timeout {}s)",
                a.deployments.join(", "),
                ctx.timeout().as_secs()
            ),
            format!("wait until the {role} Service of {release} lists every {slot} pod as a ready endpoint"),
        ]),
    );
    steps
}

/// Writes the slot release, records it in the router, and sizes what the chart renders no
/// replicas for. A failure before the router's record leaves a release nothing routes to; after
/// it, the slot stays recorded as staged, as every kind's.
pub async fn stage(
    ctx: &Ctx,
    seen: Option<&Seen<Router>>,
    staging: &Staging<Plan>,
) -> Result<Staged> {
    let p = &staging.plan;
    let (plan, a) = (&p.slot, &p.analysis);
    let release = &*staging.release;
    let slot = plan.slot;
    let name = slot_release(release, slot);
    let events = ctx.events.as_ref();
    if let Some(note) = &plan.leftover {
        events.step(note);
    }
    events.step(&format!(
        "{} {release}: {slot} <- {} (release {name} of {})",
        if plan.install {
            "installing"
        } else {
            "deploying"
        },
        a.image,
        p.app.chart_ref()
    ));
    let written = ctx.write_slot(&name, &plan.write).await.with_context(|| {
        format!(
            "writing release {name} ({} in the {slot} slot of {release}) in namespace {}",
            staging.version, ctx.namespace
        )
    })?;
    let unfinished = |what: &str| {
        format!(
            "{what}; production is unchanged. Release {name} holds {} but nothing routes to it: \
             `bgslot deploy {release} --tag TAG` replaces it, `bgslot recover {release}` removes it",
            staging.version
        )
    };
    let record = slot_record(release, plan, a, &written, &staging.version);
    let app = settled_app(&p.app, &written);
    let chart_differs = seen.is_some_and(|s| ctx.chart.differs_from(&s.latest().chart));
    let write = router_write(
        seen,
        plan,
        &record,
        &app,
        &p.changes,
        p.force,
        chart_differs,
    );
    events.step(&format!("{release}: recording {slot} in the router"));
    ctx.write(release, &write).await.with_context(|| {
        unfinished(&format!(
            "recording the {slot} slot in the router {release} failed"
        ))
    })?;
    if let Some(n) = plan.replicas {
        for deployment in &a.scale {
            events.step(&format!(
                "{slot}: scaling {deployment} to {n} replicas (what production runs)"
            ));
            ctx.scale(deployment, n).await?;
        }
    }
    Ok(Staged {
        revision: seen.map(|s| s.latest().revision + 1).unwrap_or(1),
        values: p.after.clone(),
        followers: p.followers.clone(),
        hooks: Some(a.hooks.clone()),
        slot_release: Some((name, written.version)),
        chart: Some(record.chart).filter(|c| !c.is_empty()),
        accepted: a.accepted.clone(),
        port: a.ports.first().map(|port| port.port),
    })
}

/// A helm render that failed for a reason the preflight stands for (the chart does not render
/// here; a live object belongs to another release) as a refusal; anything else as it is.
async fn refusal_of(ctx: &Ctx, err: anyhow::Error, what: &str, chart: &str) -> anyhow::Error {
    let stderr = err
        .chain()
        .find_map(|c| c.downcast_ref::<HelmError>())
        .map(|h| {
            h.stderr
                .0
                .trim_start_matches("Error: ")
                .replace("INSTALLATION FAILED: ", "")
                .replace("UPGRADE FAILED: ", "")
        })
        .unwrap_or_default();
    if HelmError::is(&err, HelmErrorKind::RenderFailed) {
        let kube = ctx
            .client
            .apiserver_version()
            .await
            .map(|v| v.git_version)
            .unwrap_or_else(|_| "(unknown)".into());
        return Refusal::new(
            format!(
                "{what} cannot be rendered (chart {chart}, Kubernetes {kube}, helm {}): {stderr}",
                ctx.helm.version
            ),
            "fix the values given (-f, --set) or the chart so that it renders on this cluster",
        )
        .into();
    }
    if HelmError::is(&err, HelmErrorKind::MissingDependencies) {
        return Refusal::new(
            format!("{what} cannot be rendered: chart {chart} lacks dependencies it names: {stderr}"),
            format!("fetch them into its charts/ directory as helm asks (`helm dependency build {chart}`), then deploy again"),
        )
        .into();
    }
    if HelmError::is(&err, HelmErrorKind::OwnershipConflict) {
        return Refusal::new(
            format!("{what} would take over an object another release owns: {stderr}"),
            "rename or remove that object, or uninstall the release that owns it: bgslot never takes ownership (--take-ownership)",
        )
        .into();
    }
    err
}

/// Learns from the API server the scope of kinds Kubernetes does not define (a CRD's).
async fn scopes(ctx: &Ctx, rendered: &[&Rendered]) -> Scopes {
    let mut scopes = Scopes::builtin();
    let unknown = scopes.unknown(rendered.iter().flat_map(|r| r.all()));
    for api_version in unknown {
        let found = if api_version.contains('/') {
            ctx.client.list_api_group_resources(&api_version).await
        } else {
            ctx.client.list_core_api_resources(&api_version).await
        };
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        if let Ok(list) = found {
            for r in list.resources.iter().filter(|r| !r.name.contains('/')) {
                scopes.learn(group, &r.kind, r.namespaced);
            }
        }
    }
    scopes
}
