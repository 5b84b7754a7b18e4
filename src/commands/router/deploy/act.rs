//! What a router deploy does once decided: renders turned into refusals where the preflight
//! stands for them, the slot release written and rolled out, the router's record, the waits.

use super::super::AppArgs;
use crate::commands::{Header, Session};
use crate::context::Ctx;
use crate::error::Refusal;
use crate::helm::{HelmError, HelmErrorKind};
use crate::names::ReleaseName;
use crate::router::live::{self, Totals};
use crate::router::manifest::Rendered;
use crate::router::observe::{selectors, RouterSeen};
use crate::router::preflight::{Analysis, Scopes};
use crate::router::{slot_release, wait};
use crate::values::ReleaseValues;
use crate::vocab::{Op, Role};
use anyhow::{Context, Result};

use super::super::MODE;
use super::decide::{router_write, slot_record, Request, SlotPlan};
use super::report::Report;

/// A helm render that failed for a reason the preflight stands for (the chart does not render
/// here; a live object belongs to another release) as a refusal; anything else as it is.
pub(super) async fn refusal_of(
    ctx: &Ctx,
    err: anyhow::Error,
    what: &str,
    chart: &str,
) -> anyhow::Error {
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
pub(super) async fn scopes(ctx: &Ctx, rendered: &[&Rendered]) -> Scopes {
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

#[allow(clippy::too_many_arguments)]
pub(super) async fn act(
    s: &Session<'_>,
    rs: Option<&RouterSeen>,
    plan: SlotPlan,
    a: Analysis,
    req: &Request,
    args: &AppArgs,
    force: bool,
    after: &ReleaseValues,
) -> Result<Report> {
    let (ctx, release) = (s.ctx, s.release);
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
        req.app.chart_ref()
    ));
    let written = ctx.write_slot(&name, &plan.write).await.with_context(|| {
        format!(
            "writing release {name} ({} in the {slot} slot of {release}) in namespace {}",
            req.version, ctx.namespace
        )
    })?;
    let unfinished = |what: &str| {
        format!(
            "{what}; production is unchanged. Release {name} holds {} but nothing routes to it: \
             `bgslot deploy {release} --tag TAG` replaces it, `bgslot recover {release}` removes it",
            req.version
        )
    };
    if let Some(n) = plan.replicas {
        for deployment in &a.scale {
            events.step(&format!(
                "{slot}: scaling {deployment} to {n} replicas (what production runs)"
            ));
            ctx.scale(deployment, n)
                .await
                .with_context(|| unfinished("sizing the new slot failed"))?;
        }
    }
    let rollout = wait::SlotRollout {
        deployments: &a.deployments,
        routed: &a.routed,
        selector: &a.selector,
    };
    let totals: Totals =
        wait::deployments_ready(&ctx.cluster, release, slot, &rollout, ctx.timeout(), events)
            .await
            .with_context(|| {
                unfinished(&format!(
                    "the {slot} slot of {release} did not become ready"
                ))
            })?;
    let record = slot_record(release, &plan, &a, &written, &req.version);
    let write = router_write(rs, &plan, &record, &req.app, args, ctx, force);
    events.step(&format!("{release}: recording {slot} in the router"));
    ctx.write(release, &write).await.with_context(|| {
        unfinished(&format!(
            "recording the {slot} slot in the router {release} failed"
        ))
    })?;
    let role = if plan.install {
        Role::Production
    } else {
        Role::Stage
    };
    let mut selectors = rs.map(|rs| selectors(&rs.router)).unwrap_or_default();
    selectors[slot] = a.selector.clone();
    let service = if plan.install {
        release.to_string()
    } else {
        stage_service_name(rs, release)
    };
    let what = format!(
        "the {role} Service of {release} did not list the {} ready {slot} pods",
        totals.desired
    );
    wait::services(
        &ctx.cluster,
        release,
        &selectors,
        ctx.timeout(),
        &what,
        |services| {
            wait::listed(
                services,
                release,
                role,
                slot,
                totals.desired.max(0) as usize,
            )
        },
    )
    .await
    .with_context(|| {
        format!("the {slot} slot of {release} is ready but its Service does not route to it yet")
    })?;
    let production = if plan.install { slot } else { slot.other() };
    let revision = rs.map(|rs| rs.seen.latest().revision + 1).unwrap_or(1);
    let next = if plan.install {
        format!("bgslot deploy {release} --tag NEW_TAG")
    } else {
        format!("bgslot swap {release} --expect-tag {}", req.version)
    };
    Ok(Report {
        header: Header::new(
            if plan.install {
                Op::Install
            } else {
                Op::Deploy
            },
            release,
            &ctx.namespace,
        )
        .revision(revision)
        .production(production)
        .next(next),
        mode: MODE,
        slot,
        role,
        image: a.image.clone(),
        ready: totals.ready,
        desired: totals.desired,
        url: live::url(
            after,
            role,
            &service,
            &ctx.namespace,
            a.ports.first().map(|p| p.port),
        ),
        service: Some(service),
        slot_release: name,
        slot_revision: written.version,
        chart: record.chart.clone(),
        accepted: a.accepted,
        version: req.version.clone(),
    })
}

/// The stage Service's name (the router names it `RELEASE-stage`, shortened as the chart does).
pub(super) fn stage_service_name(rs: Option<&RouterSeen>, release: &ReleaseName) -> String {
    rs.and_then(|rs| rs.service(Role::Stage).map(|s| s.name.clone()))
        .unwrap_or_else(|| format!("{release}-stage"))
}
