//! The bundled kind: each slot is a block of bgslot's own chart (`blue.*`, `green.*`) in the
//! release itself, its Deployment and pods labelled with the slot. Observed from the release's
//! values and what the cluster runs under its labels; a slot is staged by one helm write of the
//! release (its block replaced) and retired by another (`SLOT.enabled=false`).

use std::time::Instant;

use anyhow::{Context, Result};
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::Value;

pub mod stage;

use super::stage::{Basis, Staged, Staging};
use super::view::{Holds, SlotView};
use super::{Retired, Seen, SlotKind};
use crate::chart::ChartSource;
use crate::cluster::labels::{slot_pods_selector, slot_running_selector};
use crate::cluster::services::missing_services;
use crate::cluster::{Cluster, DeploymentLive, Followers, PodSlots, RoutedService, Totals};
use crate::context::Ctx;
use crate::error::Refusal;
use crate::helm::{SetValue, Write};
use crate::observe::Observation;
use crate::planned::{self, PlannedStep};
use crate::record::Recorded;
use crate::rules;
use crate::values::ReleaseValues;
use crate::vocab::{Mode, PerSlot, Slot};
use crate::wait;

/// What a clean of bgslot's chart writes: the old slot disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retiring {
    pub slot: Slot,
    pub write: Write,
}

/// Slots that are blocks of bgslot's chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bundled;

impl SlotKind for Bundled {
    const MODE: Mode = Mode::Bundled;
    type Plan = stage::Plan;
    type Retiring = Retiring;

    async fn observe(_ctx: &Ctx, release: Observation) -> Result<Seen<Bundled>> {
        Ok(seen(release))
    }

    async fn plan_stage(
        _ctx: &Ctx,
        seen: Option<&Seen<Bundled>>,
        basis: &Basis<'_>,
    ) -> Result<Staging<stage::Plan>> {
        Ok(stage::decide(seen.map(|s| &s.release), basis)?)
    }

    fn preview_stage(
        ctx: &Ctx,
        seen: Option<&Seen<Bundled>>,
        staging: &Staging<stage::Plan>,
    ) -> Result<Vec<PlannedStep>> {
        stage::preview(ctx, seen, staging)
    }

    async fn stage(
        ctx: &Ctx,
        seen: Option<&Seen<Bundled>>,
        staging: &Staging<stage::Plan>,
    ) -> Result<Staged> {
        stage::stage(ctx, seen, staging).await
    }

    fn changes(cluster: &Cluster, release: &str) -> BoxStream<'static, ()> {
        wait::release_changes(cluster, release).boxed()
    }

    fn drifted() -> &'static str {
        "the Services do not match the release values"
    }

    fn selects(_seen: &Seen<Bundled>, svc: &RoutedService) -> Option<String> {
        svc.selector_slot().map(str::to_string)
    }

    fn way_back(seen: &Seen<Bundled>, gone: Slot) -> String {
        let release = seen.name();
        let helm = match rules::revision_with_production_on(seen.history(), gone) {
            Some(r) => format!(
                "`helm rollback {release} {}` restores revision {} at once (production moves before the old pods are ready)",
                r.revision, r.revision
            ),
            None => format!("`helm history {release}` then `helm rollback {release} REVISION` restores an older revision at once"),
        };
        let production = seen.production();
        format!(
            "the safe way back is `bgslot deploy {release} --tag OLD_TAG` then `bgslot swap {release}`; {helm}; production is {production} running {}",
            seen.slot(production).image
        )
    }

    fn releases(release: &str, _user: &Value) -> Vec<(String, bool)> {
        vec![(release.to_string(), true)]
    }

    fn plan_retire(
        chart: &ChartSource,
        seen: &Seen<Bundled>,
        slot: Slot,
    ) -> Result<Option<Retiring>, Refusal> {
        if seen.slot(slot).holds != Holds::Version {
            return Ok(None);
        }
        let mut write = disable_write(slot);
        write.reset_then_reuse = chart.differs_from(&seen.latest().chart);
        Ok(Some(Retiring { slot, write }))
    }

    fn preview_retire(ctx: &Ctx, seen: &Seen<Bundled>, plan: &Retiring) -> Vec<PlannedStep> {
        vec![
            PlannedStep::action(format!("clean: disable {}", plan.slot)).write(
                ctx.helm
                    .command_line(seen.name(), &ctx.chart.shown(), &plan.write),
                planned::changes(&plan.write, &seen.release.all_values, &[], None),
            ),
        ]
    }

    async fn retire(ctx: &Ctx, seen: &Seen<Bundled>, plan: Retiring) -> Result<Retired> {
        let release = seen.name();
        let Retiring { slot, write } = plan;
        ctx.events
            .step(&format!("clean {release}: disabling {slot}"));
        ctx.write(release, &write).await.with_context(|| {
            format!(
                "disabling the {slot} slot of {release} in namespace {}",
                ctx.namespace
            )
        })?;
        // Done means the old version answers no one: its pods drain (preStop, then SIGTERM)
        // before they go, and keep-alive clients stay on them until then.
        let began = Instant::now();
        let selector = slot_running_selector(release, slot);
        let stopped_pods = wait::pods_gone(
            &ctx.cluster,
            release,
            slot,
            &selector,
            "disabled",
            ctx.timeout(),
            ctx.events.as_ref(),
        )
        .await?;
        Ok(Retired {
            stopped_pods,
            stop_ms: began.elapsed().as_millis() as u64,
            revision: seen.latest().revision + 1,
        })
    }
}

/// The one value a clean changes.
pub fn disable_write(slot: Slot) -> Write {
    Write::upgrade(Recorded::Clean { slot })
        .set(format!("{slot}.enabled"), SetValue::Literal("false".into()))
}

/// A release of bgslot's chart as a command sees it: each slot's block and Deployment, and where
/// its Services route against what its values say.
pub fn seen(release: Observation) -> Seen<Bundled> {
    let name = release.release.to_string();
    Seen {
        slots: PerSlot::new(|slot| view(&release, slot)),
        services: release.cluster.services.clone(),
        pods: PodSlots::Labelled(slot_pods_selector(&name)),
        followers: Followers::Labelled,
        drift: drift(&name, &release.values, &release.cluster.services),
        warnings: Vec::new(),
        kind: Bundled,
        release,
    }
}

/// One slot of bgslot's chart: its block of values and its web Deployment.
pub fn view(release: &Observation, slot: Slot) -> SlotView {
    let values = release.values.slot(slot);
    let state = release.cluster.slot(slot);
    let deployment = state.deployment.as_ref().map(|name| DeploymentLive {
        name: name.clone(),
        state: state.clone(),
        pod_labels: Default::default(),
        images: state
            .image
            .iter()
            .map(|image| (String::new(), image.clone()))
            .collect(),
    });
    let image = values.image();
    SlotView {
        holds: if values.enabled {
            Holds::Version
        } else {
            Holds::Cleaned
        },
        runs: if values.tag.is_empty() {
            image.clone()
        } else {
            format!("tag {}", values.tag)
        },
        image,
        tag: match (&values.tag, &values.digest) {
            (tag, Some(digest)) if tag.is_empty() => digest.clone(),
            (tag, _) => tag.clone(),
        },
        routed: deployment.iter().map(|d| d.name.clone()).collect(),
        deployments: deployment.into_iter().collect(),
        totals: Totals {
            ready: state.ready,
            available: state.available,
            desired: state.desired,
        },
        available: state.fully_available(),
        unavailable: format!(
            " ({}/{} ready, {} available, {} updated)",
            state.ready, state.desired, state.available, state.updated
        ),
        created: state.created,
        preview: values.preview,
        migration: release.cluster.migration(slot).cloned(),
        ..SlotView::empty(slot)
    }
}

/// The Services that disagree with the values: one sentence each, empty when consistent.
pub fn drift(release: &str, values: &ReleaseValues, services: &[RoutedService]) -> Vec<String> {
    let mut lines = missing_services(release, services);
    for svc in services {
        let want = values.slot_of(svc.role);
        if svc.routes_to != Some(want) {
            lines.push(format!(
                "Service {} ({}) selects {} but the values say {want}",
                svc.name,
                svc.role,
                svc.selector_slot().unwrap_or("no slot")
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    use crate::vocab::Role;

    #[test]
    fn a_slot_of_the_chart_is_its_block_and_its_deployment() {
        let s = seen(observation(
            values(Slot::Blue, true),
            observed(3, 2),
            vec![rev(2, "deployed", "bgslot deploy green v2", "t")],
        ));
        let green = s.slot(Slot::Green);
        assert!(green.runs() && green.available && green.release.is_none());
        assert_eq!(
            (green.runs.as_str(), green.image.as_str()),
            ("tag v2", "web:v2")
        );
        assert_eq!(
            green.totals,
            Totals {
                ready: 2,
                available: 2,
                desired: 2
            }
        );
        assert_eq!(green.deployment(), Some("d"));
        assert!(s.drift.is_empty(), "{:?}", s.drift);
        let mut cleaned = values(Slot::Blue, false);
        cleaned.slots.green.tag = String::new();
        let s = seen(observation(
            cleaned,
            observed(3, 0),
            vec![rev(3, "deployed", "bgslot clean green", "t")],
        ));
        assert_eq!(s.slot(Slot::Green).holds, Holds::Cleaned);
        assert!(!s.slot(Slot::Green).runs());
    }

    #[test]
    fn drift_names_each_service_that_disagrees_with_the_values() {
        let v = values(Slot::Blue, true);
        let mut services = observed(3, 3).services;
        assert!(drift("web", &v, &services).is_empty());
        services[0] = service("web", Role::Production, Slot::Green, 3);
        assert_eq!(
            drift("web", &v, &services),
            ["Service web (production) selects green but the values say blue"]
        );
        services.remove(1);
        assert_eq!(
            drift("web", &v, &services)[0],
            "the stage Service of web does not exist"
        );
    }

    #[test]
    fn a_clean_disables_the_old_slot_and_nothing_else() {
        assert_eq!(sets(&disable_write(Slot::Green)), ["green.enabled=false"]);
        assert_eq!(
            disable_write(Slot::Green).description(),
            "bgslot clean green"
        );
    }
}
