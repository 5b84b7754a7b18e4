//! `bgslot deploy` of a router: the new version becomes a release of the user's chart in the idle
//! slot (`RELEASE-green`), with production's values, this deploy's `-f`/`--set` and the tag, and
//! the router records it once every Deployment of it is rolled out. Before anything is written,
//! the router and both slot releases are rendered as server-side dry runs and the preflight
//! refuses what cannot run twice side by side. The first deploy with `--app-chart` installs the
//! slot release in blue and then the router, with production on blue.

use anyhow::Result;
use serde_json::Value;

use super::{router_of, AppArgs};
use crate::commands::deploy::args::ImageArgs;
use crate::commands::{Outcome, Session};
use crate::error::{Refusal, UsageError};
use crate::observe::Observation;
use crate::record::Recorded;
use crate::router::manifest::Rendered;
use crate::router::observe::RouterSeen;
use crate::router::preflight::{self, Checks, Renders};
use crate::router::slot_release;
use crate::vocab::PerSlot;

mod act;
mod decide;
mod dry_run;
mod report;

pub use decide::{check_name, decide, Known, Request, SlotPlan};
pub use report::Report;

use act::{act, refusal_of, scopes};
use decide::{router_write, slot_record};
use dry_run::{plan_of, router_values_after};

/// Runs the router variant of `deploy` when `seen` is a router, or when `--app-chart` asks for
/// one and the release does not exist; `None` leaves the deploy to the bundled chart.
pub async fn dispatch(
    s: &Session<'_>,
    seen: Option<&Observation>,
    image: &ImageArgs,
    force: bool,
) -> Result<Option<Outcome<Report>>> {
    let app = &image.app;
    let router = match seen {
        Some(seen) => router_of(seen)?,
        None => None,
    };
    match (seen, &router) {
        (Some(_), Some(_)) => {}
        (None, None) if app.app_chart.is_some() => {}
        (Some(seen), None) if app.app_chart.is_some() => {
            return Err(Refusal::new(
                format!(
                    "release {} exists and is not a bgslot router (it runs {}): --app-chart makes a new release a router",
                    seen.release,
                    seen.latest().chart
                ),
                "bgslot does not adopt an existing release: deploy your chart under a new release name with --app-chart, \
                 or keep deploying this one with bgslot's chart (`bgslot deploy RELEASE --tag TAG`)",
            )
            .into())
        }
        _ => {
            app.only_for_routers()?;
            return Ok(None);
        }
    }
    if !image.slot_values.is_empty() || !image.slot_set.is_empty() {
        return Err(UsageError(
            "--slot-values and --slot-set are the bundled chart's; a router's slot is a release of its own: pass its values with -f and --set".into(),
        )
        .into());
    }
    if image.preview_replicas.is_some() {
        return Err(UsageError(
            "--preview-replicas is the bundled chart's: a router's slot runs your chart at production's size (or --replicas with --replicas-key); drop it to stage at full size".into(),
        )
        .into());
    }
    check_router_values(app)?;
    let seen = seen.cloned();
    run(s, seen, router, image, force).await.map(Some)
}

/// `--router-set` and `--router-values` configure bgslot's chart around the router (ingress,
/// Services); the router's record and `productionSlot` are bgslot's.
fn check_router_values(app: &AppArgs) -> Result<(), UsageError> {
    let owned =
        |key: &str| key == "productionSlot" || key == "router" || key.starts_with("router.");
    if let Some(set) = app.router_set.iter().find(|s| owned(&s.key)) {
        return Err(UsageError(format!(
            "--router-set {}: productionSlot and router.* are bgslot's to write",
            set.key
        )));
    }
    for file in &app.router_values {
        let text = std::fs::read_to_string(file)
            .map_err(|e| UsageError(format!("--router-values {}: {e}", file.display())))?;
        let values: Option<Value> = serde_saphyr::from_str(&text).map_err(|e| {
            UsageError(format!(
                "--router-values {} is not YAML: {e}",
                file.display()
            ))
        })?;
        if let Some(key) = values
            .as_ref()
            .and_then(Value::as_object)
            .and_then(|m| m.keys().find(|k| owned(k)))
        {
            return Err(UsageError(format!(
                "--router-values {} sets {key}: productionSlot and router are bgslot's to write",
                file.display()
            )));
        }
    }
    Ok(())
}

async fn run(
    s: &Session<'_>,
    seen: Option<Observation>,
    router: Option<crate::router::RouterValues>,
    image: &ImageArgs,
    force: bool,
) -> Result<Outcome<Report>> {
    let (ctx, release) = (s.ctx, s.release);
    check_name(release)?;
    let names = PerSlot::new(|slot| slot_release(release, slot));
    let rs = match (seen, router) {
        (Some(seen), Some(router)) => Some(RouterSeen::read(ctx, seen, router).await?),
        _ => None,
    };
    let (blue, green) = tokio::try_join!(
        ctx.helm.release(&names.blue),
        ctx.helm.release(&names.green)
    )?;
    let releases = PerSlot { blue, green };
    let req = Request::new(image, force, rs.as_ref().map(|r| &r.router.app));
    let known = Known {
        release,
        namespace: &ctx.namespace,
        router: rs.as_ref(),
        releases: &releases,
        timeout: ctx.timeout(),
    };
    let plan = decide(&known, &req)?;
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
    let other_render = match (&rs, &releases[other_slot]) {
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
    let scopes = scopes(ctx, &[&slot_render, &other_render]).await;
    let checks = Checks {
        release,
        namespace: &ctx.namespace,
        app: &req.app,
        wanted: &req.wanted,
        replicas: plan.replicas,
        scopes: &scopes,
    };
    let renders = Renders {
        slot: &slot_render,
        other: &other_render,
    };
    let analysis = preflight::analyze(&renders, &checks)?;
    let record = slot_record(release, &plan, &analysis, &rendered, &req.version);
    let write = router_write(
        rs.as_ref(),
        &plan,
        &record,
        &req.app,
        &image.app,
        ctx,
        force,
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
    let after = router_values_after(ctx, release, &router_render)?;
    if s.dry_run {
        return Ok(Outcome::Planned(plan_of(
            s,
            rs.as_ref(),
            &plan,
            &analysis,
            &write,
            &req,
        )));
    }
    act(
        s,
        rs.as_ref(),
        plan,
        analysis,
        &req,
        &image.app,
        force,
        &after,
    )
    .await
    .map(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_values_may_not_touch_what_bgslot_records() {
        let args = |set: &str| AppArgs {
            router_set: vec![set.parse().unwrap()],
            ..AppArgs::default()
        };
        assert!(check_router_values(&args("productionSlot=green")).is_err());
        assert!(check_router_values(&args("router.slots.green.tag=x")).is_err());
        assert!(check_router_values(&args("ingress.host=web.example.com")).is_ok());
    }
}
