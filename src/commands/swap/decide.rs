//! What a swap (or rollback) decides, as a pure function of what it observed: a refusal, or the
//! plan: the flip (one helm write of `productionSlot`, which moves the Services, the workers and
//! the CronJobs together), preceded by a promotion of a slot staged small and followed, for
//! stop-first workers, by the write that starts them.

use std::collections::BTreeSet;

use super::{SwapKind, SwapRequest};
use crate::chart::ChartSource;
use crate::cluster::{MigrationPhase, Observed};
use crate::error::Refusal;
use crate::helm::{Revision, SetValue, Write};
use crate::observe::Observation;
use crate::record::Recorded;
use crate::rules;
use crate::values::ReleaseValues;
use crate::vocab::{Role, Slot};
use crate::workers::{Desired, Effect};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapPlan {
    pub kind: SwapKind,
    pub from: Slot,
    pub to: Slot,
    /// A slot staged small is first brought to production's capacity, in a write of its own.
    pub promote: Option<Promote>,
    /// The flip: `productionSlot`, and the workers a stop-first handover holds.
    pub write: Write,
    /// What the flip changes in the workers and CronJobs.
    pub effects: Vec<Effect>,
    /// Workers stopped first: the flip holds them in both slots; a second write starts them in
    /// `to` once their pods in `from` are gone.
    pub stop_first: Vec<String>,
    pub start_workers: Option<Write>,
    /// Workers whose HPA takes over in `to`, with the replicas they run in `from` now: sized so
    /// before the HPA takes over, as a staged web slot is.
    pub worker_capacity: Vec<(String, u64)>,
}

/// Bringing a slot staged small to production's capacity before the flip, and ending its preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promote {
    /// Its pods now, and the pods it will run.
    pub from: u64,
    pub to: u64,
    /// Its HPA (rendered again once it is no longer a preview) owns replicas: bgslot scales the
    /// Deployment through the scale subresource after the write.
    pub autoscaled: bool,
    pub write: Write,
}

impl Promote {
    /// Whether the slot grows, or only its preview ends (its pods already cover the capacity).
    pub fn grows(&self) -> bool {
        self.to > self.from
    }
}

/// Flips production to the other slot, if and only if that slot can take production traffic
/// now: it runs, runs what was expected, is fully available behind the stage Service, and is at
/// least as large as what production is meant to serve.
pub fn decide(seen: &Observation, request: &SwapRequest, chart: &ChartSource) -> Result<SwapPlan, Refusal> {
    let release = seen.release.to_string();
    let release = release.as_str();
    let values = &seen.values;
    let observed = &seen.cluster;
    rules::check_gitops(release, observed, request.force)?;
    rules::check_helm_state(release, &seen.history)?;
    let from = values.production;
    let to = values.stage();
    let target = values.slot(to);
    let state = observed.slot(to);
    if !target.enabled || state.deployment.is_none() {
        return Err(match request.kind {
            SwapKind::Swap => Refusal::new(
                format!(
                    "nothing is staged: the {to} slot is empty, so there is nothing to swap to"
                ),
                format!("deploy a version first: `bgslot deploy {release} --tag TAG`"),
            ),
            SwapKind::Rollback => Refusal::new(
                format!(
                    "the previous slot {to} is gone (cleaned), so there is nothing to roll back to"
                ),
                rollback_hint(release, &seen.history, values),
            ),
        });
    }
    if request.kind == SwapKind::Rollback {
        if let Some(staged) = rules::staged_since_last_move(&seen.history, to) {
            return Err(Refusal::new(
                format!(
                    "the {to} slot holds {} staged in revision {}, not the previous production: there is nothing to roll back to",
                    target.image(),
                    staged.revision
                ),
                format!("`bgslot swap {release}` makes the staged version live; `bgslot clean {release}` removes it"),
            ));
        }
    }
    if let Some(want) = &request.expect_tag {
        let runs = [Some(&target.tag), target.digest.as_ref()];
        if !runs.iter().flatten().any(|have| *have == want) {
            let runs = if target.tag.is_empty() {
                target.image()
            } else {
                format!("tag {}", target.tag)
            };
            return Err(Refusal::new(
                format!("the {to} slot runs {runs} but --expect-tag is {want}"),
                format!("check what is staged with `bgslot status {release}`; deploy {want} with `bgslot deploy {release} --tag {want} --replace`"),
            ));
        }
    }
    let drifted = rules::check_drift(release, values, observed, request.force)?;
    // Helm 4 applies server-side: it cannot move a selector that a hand edit left owned by
    // another field manager, even one that matches the values again.
    let owned_elsewhere = if seen.helm_major >= 4 {
        rules::foreign_selector_owners(values, observed)
    } else {
        Vec::new()
    };
    if !owned_elsewhere.is_empty() && !request.force {
        return Err(Refusal::new(
            format!(
                "Helm 4 would refuse to move the Services: {}",
                owned_elsewhere.join("; ")
            ),
            "check that nobody steers traffic by hand now, then pass --force: the swap takes the field back (--force-conflicts)".to_string(),
        ));
    }
    if let Some(migration) = observed.migration(to) {
        if migration.phase != MigrationPhase::Succeeded {
            let how = match (&migration.phase, &migration.reason) {
                (MigrationPhase::Failed, Some(reason)) => format!("failed: {reason}"),
                (MigrationPhase::Failed, None) => "failed".to_string(),
                _ => "is still running".to_string(),
            };
            return Err(Refusal::new(
                format!(
                    "the {to} slot's migration Job {} has not succeeded ({how}); the new version may need the schema it migrates",
                    migration.job
                ),
                format!("wait for it (`bgslot status {release}`), or fix the migration and rerun it with `bgslot deploy {release} --tag TAG --replace`"),
            ));
        }
    }
    if let Some(workers) = (!values.workloads.workers.is_empty()).then_some(&values.workloads) {
        workers.check_can_run(release, observed, to)?;
    }
    if !state.fully_available() {
        return Err(Refusal::new(
            format!(
                "the {to} slot is not fully available ({}/{} ready, {} available, {} updated)",
                state.ready, state.desired, state.available, state.updated
            ),
            format!("wait for it (`bgslot status {release}`), or redeploy with `bgslot deploy {release} --tag TAG --replace`"),
        ));
    }
    let stage_ready = observed
        .service(Role::Stage)
        .map(|s| s.ready_in(to))
        .unwrap_or(0);
    // A drifted stage Service may not select the target at all; a forced swap then relies on the
    // Deployment's availability alone and confirms endpoints after the flip.
    let forced_over_drift = request.force && !drifted.is_empty();
    let take_back = request.force && (!drifted.is_empty() || !owned_elsewhere.is_empty());
    if stage_ready == 0 && !forced_over_drift {
        return Err(Refusal::new(
            format!("the {to} slot has no ready endpoints behind its Service"),
            format!("check its pods and Service with `bgslot status {release}` and `kubectl get endpoints -n NAMESPACE`"),
        ));
    }
    // Capacity: what production is meant to serve (its desired replicas, which an HPA sets),
    // never a count a rolling update inflates for a moment. A slot staged small is brought to it
    // first; one that was not (someone scaled it by hand) is refused.
    let live = observed.slot(from);
    let capacity = live.desired.max(0) as u64;
    let promote = promotion(to, target.preview, state.desired.max(0) as u64, capacity, values.autoscaling);
    if promote.is_none() && state.available < live.desired {
        return Err(Refusal::new(
            format!(
                "the {to} slot has {} available pods but production ({from}) is meant to serve with {}",
                state.available, live.desired
            ),
            format!(
                "scale it up: `bgslot deploy {release} --tag {} --replace --replicas {}`",
                target.tag, live.desired
            ),
        ));
    }
    let promote = promote.map(|mut p| {
        p.write.reset_then_reuse = chart.differs_from(&seen.latest().chart);
        p.write.force_conflicts = take_back;
        p
    });
    let mut plan = plan_flip(request.kind, from, to, values, observed, promote);
    for write in [Some(&mut plan.write), plan.start_workers.as_mut()].into_iter().flatten() {
        write.force_conflicts = take_back;
        write.reset_then_reuse = chart.differs_from(&seen.latest().chart);
    }
    Ok(plan)
}

/// The writes that move production from `from` to `to` with these values (also what
/// `release --dry-run` shows before its deploy has staged anything): the flip, holding the
/// stop-first workers, and the write that starts them; which workers' HPAs take over, sized as
/// they run in `from` now.
pub fn plan_flip(
    kind: SwapKind,
    from: Slot,
    to: Slot,
    values: &ReleaseValues,
    observed: &Observed,
    promote: Option<Promote>,
) -> SwapPlan {
    let workloads = &values.workloads;
    let stop_first: Vec<String> = workloads.stop_first().iter().map(|w| w.name.clone()).collect();
    let held: BTreeSet<String> = stop_first.iter().cloned().collect();
    let mut write = flip_write(kind, from, to);
    if !workloads.workers.is_empty() {
        write = write.set("heldWorkers", SetValue::Json(serde_json::json!(stop_first)));
    }
    let start_workers = (!stop_first.is_empty()).then(|| {
        Write::upgrade(Recorded::StartWorkers {
            slot: to,
            workers: stop_first.clone(),
        })
        .set("heldWorkers", SetValue::Json(serde_json::json!([])))
    });
    let worker_capacity = workloads
        .workers
        .iter()
        .filter(|w| w.desired(to, to, &BTreeSet::new()) == Desired::Autoscaled)
        .filter_map(|w| {
            let now = observed.worker(&w.name, from)?.state.desired;
            (now > 0).then(|| (w.name.clone(), now as u64))
        })
        .collect();
    SwapPlan {
        kind,
        from,
        to,
        promote,
        effects: workloads.flip_effects(from, to, &held),
        write,
        stop_first,
        start_workers,
        worker_capacity,
    }
}

/// The promotion of a slot staged as a preview of `staged` pods, before it serves production at
/// `capacity`: always, when it is a preview, also when its preview already covers the capacity
/// (or production shrank since): a slot left marked as a preview would serve production at the
/// preview's fixed size and without its HPA. It never shrinks the slot.
pub fn promotion(slot: Slot, preview: bool, staged: u64, capacity: u64, autoscaled: bool) -> Option<Promote> {
    preview.then(|| promote_write(slot, staged, staged.max(capacity), autoscaled))
}

/// The write that brings `slot`, staged small at `from` pods, to `to` pods: no longer a preview
/// (with autoscaling its HPA is rendered again), and without an HPA its replicas set.
fn promote_write(slot: Slot, from: u64, to: u64, autoscaled: bool) -> Promote {
    let mut write = Write::upgrade(Recorded::Promote { slot, replicas: to })
        .set(format!("{slot}.preview"), SetValue::Literal("false".into()));
    if !autoscaled {
        write = write.set(format!("{slot}.replicaCount"), SetValue::Literal(to.to_string()));
    }
    Promote {
        from,
        to,
        autoscaled,
        write,
    }
}

/// The one value a swap changes, with a description that makes `helm history` explain itself.
pub fn flip_write(kind: SwapKind, from: Slot, to: Slot) -> Write {
    Write::upgrade(kind.record(from, to)).set("productionSlot", SetValue::Str(to.as_str().into()))
}

fn rollback_hint(release: &str, history: &[Revision], values: &ReleaseValues) -> String {
    let gone = values.stage();
    let helm = match rules::revision_with_production_on(history, gone) {
        Some(r) => format!(
            "`helm rollback {release} {}` restores revision {} at once (production moves before the old pods are ready)",
            r.revision, r.revision
        ),
        None => format!("`helm history {release}` then `helm rollback {release} REVISION` restores an older revision at once"),
    };
    format!(
        "the safe way back is `bgslot deploy {release} --tag OLD_TAG` then `bgslot swap {release}`; {helm}; production is {} running {}",
        values.production,
        values.slot(values.production).image()
    )
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    fn chart() -> ChartSource {
        ChartSource::resolve(None).unwrap()
    }

    fn request(expect: Option<&str>) -> SwapRequest {
        SwapRequest {
            kind: SwapKind::Swap,
            expect_tag: expect.map(str::to_string),
            force: false,
        }
    }

    fn seen(production: Slot, green: bool, obs: crate::cluster::Observed) -> Observation {
        let mut s = observation(values(production, green), obs, vec![rev(2, "deployed", "bgslot deploy green v2", "t")]);
        s.history[0].chart = crate::chart::embedded_id();
        s
    }

    fn refuse(s: &Observation, expect: Option<&str>) -> String {
        decide(s, &request(expect), &chart()).unwrap_err().reason
    }

    #[test]
    fn swap_flips_only_production_slot() {
        let plan = decide(&seen(Slot::Blue, true, observed(3, 3)), &request(Some("v2")), &chart()).unwrap();
        assert_eq!((plan.from, plan.to), (Slot::Blue, Slot::Green));
        assert_eq!(sets(&plan.write), ["productionSlot=green"]);
        assert_eq!(plan.write.description(), "bgslot swap blue->green");
        assert!(!plan.write.force_conflicts && !plan.write.reset_then_reuse);
    }

    #[test]
    fn every_swap_refusal() {
        assert!(refuse(&seen(Slot::Blue, false, observed(3, 0)), None).contains("nothing is staged"));
        let staged = seen(Slot::Blue, true, observed(3, 3));
        assert!(refuse(&staged, Some("v9")).contains("runs tag v2 but --expect-tag is v9"));
        let mut partial = observed(3, 3);
        partial.slots.green.available = 2;
        partial.slots.green.ready = 2;
        assert!(refuse(&seen(Slot::Blue, true, partial), None).contains("not fully available (2/3 ready"));
        let mut no_endpoints = observed(3, 3);
        no_endpoints.stage_service = Some(service("web-stage", Slot::Green, 0));
        assert!(refuse(&seen(Slot::Blue, true, no_endpoints), None).contains("no ready endpoints"));
        let mut smaller = observed(5, 3);
        smaller.slots.blue.desired = 5;
        assert!(refuse(&seen(Slot::Blue, true, smaller), None)
            .contains("has 3 available pods but production (blue) is meant to serve with 5"));
        let mut drifted = observed(3, 3);
        drifted.production_service = Some(service("web", Slot::Green, 3));
        assert!(refuse(&seen(Slot::Blue, true, drifted.clone()), None)
            .contains("Service web (production) selects green but the values say blue"));
        let forced = SwapRequest { force: true, ..request(None) };
        assert!(decide(&seen(Slot::Blue, true, drifted), &forced, &chart()).unwrap().write.force_conflicts);
        let mut pending = seen(Slot::Blue, true, observed(3, 3));
        pending.history.push(rev(3, "pending-upgrade", "", "t"));
        assert!(refuse(&pending, None).contains("pending-upgrade"));
    }

    #[test]
    fn helm_4_cannot_move_a_selector_a_hand_edit_still_owns() {
        let mut obs = observed(3, 3);
        obs.stage_service.as_mut().unwrap().selector_owner = Some("kubectl-patch".into());
        let mut s = seen(Slot::Blue, true, obs);
        assert!(refuse(&s, None)
            .contains("the slot selector of Service web-stage was last written by kubectl-patch"));
        let forced = SwapRequest { force: true, ..request(None) };
        assert!(decide(&s, &forced, &chart()).unwrap().write.force_conflicts);
        s.helm_major = 3;
        assert!(!decide(&s, &request(None), &chart()).unwrap().write.force_conflicts);
    }

    #[test]
    fn a_migration_that_has_not_succeeded_gates_the_swap() {
        let job = |phase, reason: Option<&str>| crate::cluster::MigrationState {
            job: "web-green-migrate-1a2b3c4d".into(),
            phase,
            reason: reason.map(str::to_string),
        };
        let mut obs = observed(3, 3);
        obs.migrations.insert(Slot::Green, job(MigrationPhase::Running, None));
        assert!(refuse(&seen(Slot::Blue, true, obs.clone()), None)
            .contains("migration Job web-green-migrate-1a2b3c4d has not succeeded (is still running)"));
        obs.migrations.insert(Slot::Green, job(MigrationPhase::Failed, Some("BackoffLimitExceeded")));
        assert!(refuse(&seen(Slot::Blue, true, obs.clone()), None).contains("(failed: BackoffLimitExceeded)"));
        obs.migrations.insert(Slot::Green, job(MigrationPhase::Succeeded, None));
        assert!(decide(&seen(Slot::Blue, true, obs), &request(None), &chart()).is_ok());
    }

    #[test]
    fn capacity_ignores_pods_a_rolling_update_adds_for_a_moment() {
        // Production rolls (a chart upgrade): 2 ready with surge, 1 desired. The staged slot
        // with 1 available pod matches what production is meant to serve.
        let mut rolling = observed(1, 1);
        rolling.slots.blue.ready = 2;
        rolling.slots.blue.total = 2;
        rolling.slots.blue.updated = 1;
        assert!(decide(&seen(Slot::Blue, true, rolling), &request(None), &chart()).is_ok());
    }

    #[test]
    fn a_preview_always_ends_before_the_flip_and_never_shrinks() {
        let staged = |green_pods: i32| {
            let mut s = seen(Slot::Blue, true, observed(3, green_pods));
            s.values.slots.green.preview = true;
            decide(&s, &request(None), &chart()).unwrap().promote.unwrap()
        };
        // Staged small: brought to production's 3 pods.
        let small = staged(1);
        assert_eq!((small.from, small.to, small.grows()), (1, 3, true));
        assert_eq!(sets(&small.write), ["green.preview=false", "green.replicaCount=3"]);
        // A preview as large as production (or larger) still ends, at its own size.
        for pods in [3, 4] {
            let full = staged(pods);
            assert_eq!((full.from, full.to, full.grows()), (pods as u64, pods as u64, false));
            assert_eq!(sets(&full.write), ["green.preview=false".to_string(), format!("green.replicaCount={pods}")]);
        }
        // Not a preview: no promotion.
        assert!(decide(&seen(Slot::Blue, true, observed(3, 3)), &request(None), &chart()).unwrap().promote.is_none());
    }

    #[test]
    fn a_digest_counts_as_the_expected_version() {
        let digest = format!("sha256:{}", "d".repeat(64));
        let mut s = seen(Slot::Blue, true, observed(3, 3));
        s.values.slots.green.digest = Some(digest.clone());
        assert!(decide(&s, &request(Some(&digest)), &chart()).is_ok());
    }

    #[test]
    fn rollback_returns_only_to_the_previous_production() {
        let back = SwapRequest { kind: SwapKind::Rollback, ..request(None) };
        // Green was staged after blue went live: it is a new version, not a way back.
        let staged = seen(Slot::Blue, true, observed(3, 3));
        let err = decide(&staged, &back, &chart()).unwrap_err();
        assert!(err.reason.contains("staged in revision 2, not the previous production"), "{err:?}");
        // After a swap, the other slot holds what production left: rolling back returns to it.
        let mut swapped = seen(Slot::Green, true, crate::cluster::Observed {
            production_service: Some(service("web", Slot::Green, 3)),
            stage_service: Some(service("web-stage", Slot::Blue, 3)),
            ..observed(3, 3)
        });
        swapped.history.push(rev(3, "deployed", "bgslot swap blue->green", "t"));
        assert_eq!(decide(&swapped, &back, &chart()).unwrap().to, Slot::Blue);
    }

    #[test]
    fn rollback_when_previous_slot_is_gone_points_at_helm_rollback() {
        let history = vec![
            rev(1, "superseded", "Install complete", "x"),
            rev(2, "superseded", "bgslot deploy green v2", "x"),
            rev(3, "superseded", "bgslot swap blue->green", "x"),
            rev(4, "deployed", "bgslot clean blue", "x"),
        ];
        let mut v = values(Slot::Green, true);
        v.slots.blue.enabled = false;
        let obs = crate::cluster::Observed {
            slots: crate::vocab::PerSlot { blue: Default::default(), green: ready(3) },
            production_service: Some(service("web", Slot::Green, 3)),
            stage_service: Some(service("web-stage", Slot::Blue, 0)),
            ..Default::default()
        };
        let s = observation(v, obs, history);
        let back = SwapRequest { kind: SwapKind::Rollback, ..request(None) };
        let err = decide(&s, &back, &chart()).unwrap_err();
        assert!(err.reason.contains("previous slot blue is gone"), "{err:?}");
        assert!(err.hint.contains("helm rollback web 2"), "{}", err.hint);
    }

    #[test]
    fn after_a_rollback_and_a_clean_the_hint_names_the_revision_with_production_on_the_cleaned_slot() {
        let history = vec![
            rev(1, "superseded", "bgslot install blue v1", "x"),
            rev(2, "superseded", "bgslot deploy green v2", "x"),
            rev(3, "superseded", "bgslot swap blue->green", "x"),
            rev(4, "superseded", "bgslot rollback green->blue", "x"),
            rev(5, "deployed", "bgslot clean green", "x"),
        ];
        let mut v = values(Slot::Blue, false);
        v.slots.green.enabled = false;
        let obs = crate::cluster::Observed {
            slots: crate::vocab::PerSlot { blue: ready(3), green: Default::default() },
            ..observed(3, 0)
        };
        let back = SwapRequest { kind: SwapKind::Rollback, ..request(None) };
        let err = decide(&observation(v, obs, history), &back, &chart()).unwrap_err();
        assert!(err.reason.contains("previous slot green is gone"), "{err:?}");
        // Revision 3 has production on green; revision 2 (what was hinted before) has it on blue.
        assert!(err.hint.contains("`helm rollback web 3` restores revision 3"), "{}", err.hint);
    }
}
