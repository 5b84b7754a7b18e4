//! The router kind: blue/green for a chart a team already has. Each slot is a release of the
//! team's chart (`RELEASE-blue`, `RELEASE-green`), and bgslot's chart, installed as `RELEASE`,
//! renders only the routing to them, keyed on `productionSlot`. What is here: the router's record
//! in its values (`values`), what a release renders (`manifest`), the checks before a deploy
//! writes anything (`preflight`, pure), a slot release as the cluster shows it and as a command
//! reads it (`live`, `view`), the record against what runs (`drift`), the read (`observe`), how
//! a version is staged (`stage`: the renders and the writes of a deploy), and how a
//! slot is retired (here: `helm uninstall --keep-history`, then the record).

use std::time::Instant;

use anyhow::{Context, Result};
use futures::stream::BoxStream;
use serde_json::Value;

pub mod app;
pub mod as_stage;
pub mod drift;
#[cfg(test)]
pub mod fixtures;
pub mod live;
pub mod manifest;
pub mod observe;
pub mod preflight;
pub mod stage;
pub mod values;
pub mod view;

pub use app::{AppChanges, AppSettings, Risk};
pub use live::SlotLive;
pub use values::{RecordedState, RouterValues, SlotRecord};

use super::stage::{Basis, Staged, Staging};
use super::view::Holds;
use super::{Retired, Seen, SlotKind};
use crate::chart::ChartSource;
use crate::cluster::{Cluster, RoutedService};
use crate::context::Ctx;
use crate::error::Refusal;
use crate::helm::{SetValue, Write};
use crate::observe::Observation;
use crate::planned::{self, PlannedStep};
use crate::record::Recorded;
use crate::vocab::{Mode, PerSlot, Slot};
use crate::wait;

/// The longest router release name: helm's 53 characters minus `-green`.
pub const MAX_RELEASE_LEN: usize = 47;

/// The release of `slot` of the router `release`.
pub fn slot_release(release: &str, slot: Slot) -> String {
    format!("{release}-{slot}")
}

/// Slots that are releases of the team's chart, and what only a router knows of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Router {
    /// The router's record (`router.*` of its values).
    pub values: RouterValues,
    /// Each slot release as the cluster shows it.
    pub live: PerSlot<SlotLive>,
    /// The description of a slot release the router does not record (what left it there).
    pub leftovers: PerSlot<Option<String>>,
}

/// What a router clean writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retiring {
    pub slot: Slot,
    /// The slot release it uninstalls, and the description its history keeps.
    pub release: String,
    pub description: String,
    /// The selectors of the pods that must be gone.
    pub pods: Vec<String>,
    /// The router write that records the slot as cleaned (none for what an unfinished deploy
    /// left: the router never recorded it).
    pub write: Option<Write>,
}

impl SlotKind for Router {
    const MODE: Mode = Mode::Router;
    type Plan = stage::Plan;
    type Retiring = Retiring;

    async fn observe(ctx: &Ctx, release: Observation) -> Result<Seen<Router>> {
        observe::observe(ctx, release).await
    }

    async fn plan_stage(
        ctx: &Ctx,
        seen: Option<&Seen<Router>>,
        basis: &Basis<'_>,
    ) -> Result<Staging<stage::Plan>> {
        stage::plan(ctx, seen, basis).await
    }

    fn preview_stage(
        ctx: &Ctx,
        seen: Option<&Seen<Router>>,
        staging: &Staging<stage::Plan>,
    ) -> Result<Vec<PlannedStep>> {
        Ok(stage::preview(ctx, seen, staging))
    }

    async fn stage(
        ctx: &Ctx,
        seen: Option<&Seen<Router>>,
        staging: &Staging<stage::Plan>,
    ) -> Result<Staged> {
        stage::stage(ctx, seen, staging).await
    }

    fn changes(cluster: &Cluster, release: &str) -> BoxStream<'static, ()> {
        observe::changes(cluster, release)
    }

    fn drifted() -> &'static str {
        "the router's Services do not match its record"
    }

    fn selects(seen: &Seen<Router>, svc: &RoutedService) -> Option<String> {
        drift::selects(&seen.kind.values, svc)
    }

    fn app(seen: &Seen<Router>) -> Option<&AppSettings> {
        Some(&seen.kind.values.app)
    }

    fn record_move(
        seen: &Seen<Router>,
        to: Slot,
        sizes: &[(String, u64)],
    ) -> Vec<(String, SetValue)> {
        let record = seen.kind.values.slot(to);
        if record.workers.is_empty() {
            return Vec::new();
        }
        let workers: Vec<values::WorkerRecord> = record
            .workers
            .iter()
            .map(|w| values::WorkerRecord {
                replicas: sizes
                    .iter()
                    .find(|(name, _)| *name == w.name)
                    .map_or(w.replicas, |(_, n)| *n),
                ..w.clone()
            })
            .collect();
        vec![(
            format!("router.slots.{to}.workers"),
            SetValue::Json(serde_json::to_value(workers).unwrap_or_default()),
        )]
    }

    fn way_back(seen: &Seen<Router>, gone: Slot) -> String {
        let release = seen.name();
        let record = seen.kind.values.slot(gone);
        let production = seen.production();
        format!(
            "the way back is `{}` then `bgslot swap {release}` ({gone} ran {} of chart {}); production is {production} running {}",
            redeploy(release, record, &seen.kind.values.app),
            record.image,
            record.chart,
            seen.slot(production).image
        )
    }

    fn releases(release: &str, user: &Value) -> Vec<(String, bool)> {
        let routes = |slot: Slot| {
            user.pointer(&format!("/router/slots/{slot}/state")) == Some(&Value::from("deployed"))
        };
        std::iter::once((release.to_string(), true))
            .chain(Slot::ALL.map(|slot| (slot_release(release, slot), routes(slot))))
            .collect()
    }

    fn plan_retire(
        chart: &ChartSource,
        seen: &Seen<Router>,
        slot: Slot,
    ) -> Result<Option<Retiring>, Refusal> {
        let router = seen.name();
        let view = seen.slot(slot);
        let live = &seen.kind.live[slot];
        let release = live.release.clone();
        let description = Recorded::Clean { slot }.to_string();
        if view.holds != Holds::Version {
            // A release the router does not record: removed only when bgslot's deploy left it.
            return match &seen.kind.leftovers[slot] {
                None => Ok(None),
                Some(left) if matches!(left.parse::<Recorded>(), Ok(Recorded::Install { slot: s, .. } | Recorded::Deploy { slot: s, .. }) if s == slot) => {
                    Ok(Some(Retiring {
                        slot,
                        release,
                        description,
                        pods: live.deployments.iter().map(|d| values::label_selector(&d.pod_labels)).collect(),
                        write: None,
                    }))
                }
                Some(left) => Err(Refusal::new(
                    format!("release {release} exists in the {slot} slot, but neither the router {router} nor bgslot made it ({left})"),
                    format!("bgslot removes only what it deployed: `helm uninstall {release}` if it is unwanted"),
                )),
            };
        }
        let mut write = Write::upgrade(Recorded::Clean { slot });
        write.generated = Some(values::cleaned_values(slot));
        write.reset_then_reuse = chart.differs_from(&seen.latest().chart);
        Ok(Some(Retiring {
            slot,
            release,
            description,
            pods: vec![seen.kind.values.slot(slot).label_selector()],
            write: Some(write),
        }))
    }

    fn preview_retire(ctx: &Ctx, seen: &Seen<Router>, plan: &Retiring) -> Vec<PlannedStep> {
        let uninstall = PlannedStep::action(format!(
            "clean: uninstall {} (the {} slot), keeping its history",
            plan.release, plan.slot
        ))
        .write(
            ctx.helm
                .uninstall_command_line(&plan.release, &plan.description, ctx.timeout()),
            Vec::new(),
        )
        .then([format!("wait until the {} pods have stopped", plan.slot)]);
        let record = plan.write.as_ref().map(|write| {
            PlannedStep::action(format!(
                "record {} as cleaned in the router {}",
                plan.slot,
                seen.name()
            ))
            .write(
                ctx.helm
                    .command_line(seen.name(), &ctx.chart.shown(), write),
                planned::changes(write, &seen.release.all_values, &[], None),
            )
        });
        std::iter::once(uninstall).chain(record).collect()
    }

    async fn retire(ctx: &Ctx, seen: &Seen<Router>, plan: Retiring) -> Result<Retired> {
        let router = seen.name();
        let slot = plan.slot;
        ctx.events.step(&format!(
            "clean {router}: uninstalling {} ({slot})",
            plan.release
        ));
        ctx.uninstall(&plan.release, &plan.description)
            .await
            .with_context(|| {
                format!(
                    "uninstalling release {} (the {slot} slot of {router}) in namespace {}",
                    plan.release, ctx.namespace
                )
            })?;
        // Done means the old version answers no one: its pods drain before they go, and
        // keep-alive clients stay on them until then.
        let began = Instant::now();
        let mut stopped_pods = 0;
        for selector in &plan.pods {
            stopped_pods += wait::pods_gone(
                &ctx.cluster,
                router,
                slot,
                selector,
                "uninstalled",
                ctx.timeout(),
                ctx.events.as_ref(),
            )
            .await?;
        }
        let stop_ms = began.elapsed().as_millis() as u64;
        let mut revision = seen.latest().revision;
        if let Some(write) = &plan.write {
            ctx.write(router, write).await.with_context(|| {
                format!(
                    "release {} is uninstalled; recording it in the router {router} failed",
                    plan.release
                )
            })?;
            revision += 1;
        }
        Ok(Retired {
            stopped_pods,
            stop_ms,
            revision,
        })
    }
}

/// The deploy that brings back what `record` ran: by its tag, or by its image when it was pinned
/// by digest alone, with the chart version it ran when that is not the one the router deploys now
/// (a chart from a repository or a registry).
fn redeploy(release: &str, record: &SlotRecord, app: &AppSettings) -> String {
    let version = if record.tag.starts_with("sha256:") {
        format!("--image {}", record.image)
    } else if record.tag.is_empty() {
        "--tag OLD_TAG".to_string()
    } else {
        format!("--tag {}", record.tag)
    };
    let pinned = !app.is_local();
    let chart = if pinned && !record.chart_version.is_empty() && record.chart_version != app.version
    {
        format!(" --app-chart-version {}", record.chart_version)
    } else {
        String::new()
    };
    format!("bgslot deploy {release} {version}{chart}")
}

/// A router as a command sees it: each slot as its record and its release say, and the router's
/// Services against the record.
pub fn seen(
    release: Observation,
    router: RouterValues,
    live: PerSlot<SlotLive>,
    services: Vec<RoutedService>,
    leftovers: PerSlot<Option<String>>,
) -> Seen<Router> {
    let name = release.release.to_string();
    let slots = PerSlot::new(|slot| view::view(&name, router.slot(slot), &live[slot]));
    let drift = drift::service_drift(&name, &router, release.values.production, &services);
    let mut warnings = Vec::new();
    for slot in Slot::ALL {
        let record = router.slot(slot);
        if record.is_deployed() && !record.accepted.is_empty() {
            let names: Vec<&str> = record.accepted.iter().map(|r| r.as_str()).collect();
            warnings.push(format!(
                "{slot} ({}) runs with accepted risks: {}",
                record.release,
                names.join(", ")
            ));
        }
        if slots[slot].unrecorded {
            warnings.push(format!(
                "release {} exists in the {slot} slot, but the router does not route to it (a deploy that did not finish?)",
                live[slot].release
            ));
        }
    }
    let mut seen = Seen {
        pods: observe::pod_slots(&router),
        followers: observe::followers(&router),
        slots,
        services,
        drift,
        warnings,
        kind: Router {
            values: router,
            live,
            leftovers,
        },
        release,
    };
    let unsettled = super::follow::unsettled(&seen);
    if !unsettled.is_empty() {
        let lines: Vec<String> = unsettled.iter().map(ToString::to_string).collect();
        seen.warnings.push(format!(
            "a move of the workers or CronJobs did not finish: {}; `bgslot recover {name}` settles them",
            lines.join("; ")
        ));
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::router::fixtures;

    fn chart() -> ChartSource {
        ChartSource::resolve(None).unwrap()
    }

    #[test]
    fn a_clean_uninstalls_the_old_slot_and_records_it_cleaned() {
        let seen = fixtures::seen(
            Slot::Blue,
            true,
            &["bgslot install blue v1", "bgslot deploy green v2"],
        );
        let plan = Router::plan_retire(&chart(), &seen, Slot::Green)
            .unwrap()
            .unwrap();
        assert_eq!(
            (plan.slot, plan.release.as_str(), plan.description.as_str()),
            (Slot::Green, "web-green", "bgslot clean green")
        );
        assert_eq!(
            plan.pods,
            ["app.kubernetes.io/instance=web-green,app.kubernetes.io/name=myapp"]
        );
        let write = plan.write.unwrap();
        assert_eq!(
            write.generated,
            Some(serde_json::json!({"router": {"slots": {"green": {"state": "cleaned"}}}}))
        );
        assert!(write.sets.is_empty());
    }

    #[test]
    fn a_cleaned_slot_needs_nothing_and_only_bgslots_leftovers_are_removed() {
        let mut seen = fixtures::seen(Slot::Blue, false, &["bgslot install blue v1"]);
        seen.kind.leftovers.green = None;
        assert_eq!(Router::plan_retire(&chart(), &seen, Slot::Green), Ok(None));
        seen.kind.leftovers.green = Some("bgslot deploy green v3".into());
        let left = Router::plan_retire(&chart(), &seen, Slot::Green)
            .unwrap()
            .unwrap();
        assert_eq!((left.release.as_str(), left.write), ("web-green", None));
        seen.kind.leftovers.green = Some("Install complete".into());
        let err = Router::plan_retire(&chart(), &seen, Slot::Green).unwrap_err();
        assert!(
            err.reason
                .contains("neither the router web nor bgslot made it"),
            "{err:?}"
        );
    }

    #[test]
    fn the_way_back_names_the_version_and_the_chart_version_it_ran() {
        let app = AppSettings {
            chart: "bitnami/nginx".into(),
            version: "18.2.0".into(),
            ..AppSettings::default()
        };
        let mut record = fixtures::record(Slot::Blue, "v1");
        record.chart_version = "18.1.0".into();
        assert_eq!(
            redeploy("web", &record, &app),
            "bgslot deploy web --tag v1 --app-chart-version 18.1.0"
        );
        let digest = format!("sha256:{}", "d".repeat(64));
        record.tag = digest.clone();
        record.image = format!("ghcr.io/acme/web@{digest}");
        record.chart_version = "18.2.0".into();
        assert_eq!(
            redeploy("web", &record, &app),
            format!("bgslot deploy web --image ghcr.io/acme/web@{digest}")
        );
    }

    #[test]
    fn a_router_is_made_of_itself_and_its_slot_releases() {
        let user = serde_json::json!({"router": {"enabled": true, "slots": {"green": {"state": "deployed"}}}});
        assert_eq!(
            Router::releases("web", &user),
            [
                ("web".to_string(), true),
                ("web-blue".to_string(), false),
                ("web-green".to_string(), true)
            ]
        );
    }

    #[test]
    fn accepted_risks_and_releases_nothing_routes_to_are_warnings() {
        let mut seen = fixtures::seen(
            Slot::Blue,
            true,
            &["bgslot install blue v1", "bgslot deploy green v2"],
        );
        assert!(seen.warnings.is_empty(), "{:?}", seen.warnings);
        let mut router = seen.kind.values.clone();
        router.slots.green.accepted = vec![Risk::Jobs];
        router.slots.blue = SlotRecord::default();
        seen = seen_again(seen, router);
        assert_eq!(
            seen.warnings,
            [
                "release web-blue exists in the blue slot, but the router does not route to it (a deploy that did not finish?)",
                "green (web-green) runs with accepted risks: jobs"
            ]
        );
    }

    fn seen_again(seen: Seen<Router>, router: RouterValues) -> Seen<Router> {
        super::seen(
            seen.release,
            router,
            seen.kind.live,
            seen.services,
            seen.kind.leftovers,
        )
    }
}
