//! What a swap (or rollback) decides, as a pure function of what it observed: a refusal, or the
//! plan: the flip (one helm write of `productionSlot`, which moves the Services, the workers and
//! the CronJobs together), preceded by a promotion of a slot staged small and followed, for
//! stop-first workers, by the write that starts them.

use std::collections::BTreeSet;

use super::{SwapKind, SwapRequest};
use crate::chart::ChartSource;
use crate::cluster::{Followers, MigrationPhase, Observed};
use crate::error::Refusal;
use crate::helm::{SetValue, Write};
use crate::record::Recorded;
use crate::rules;
use crate::slots::{Holds, Seen, SlotKind};
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
/// least as large as what production is meant to serve. The same rules for both kinds of slot;
/// what each kind saw of its slots is in their views.
pub fn decide<K: SlotKind>(seen: &Seen<K>, request: &SwapRequest, chart: &ChartSource) -> Result<SwapPlan, Refusal> {
    let release = seen.name().to_string();
    let release = release.as_str();
    let values = &seen.release.values;
    let observed = &seen.release.cluster;
    rules::check_gitops(release, observed, request.force)?;
    rules::check_helm_state(release, seen.history())?;
    let from = seen.production();
    let to = from.other();
    let target = seen.slot(to);
    if !target.runs() {
        return Err(match request.kind {
            SwapKind::Swap => Refusal::new(
                format!("nothing is staged: the {to} slot is empty, so there is nothing to swap to"),
                match (&target.release, target.unrecorded) {
                    (Some(left), true) => format!("release {left} is left from a deploy that did not finish: deploy again (`bgslot deploy {release} --tag TAG`)"),
                    _ => format!("deploy a version first: `bgslot deploy {release} --tag TAG`"),
                },
            ),
            SwapKind::Rollback if target.holds == Holds::Nothing => Refusal::new(
                format!("the {to} slot never ran a release, so there is nothing to roll back to"),
                format!("production is {from}; `bgslot status {release}` shows both slots"),
            ),
            SwapKind::Rollback => Refusal::new(
                format!(
                    "the previous slot {to} is gone (cleaned{}), so there is nothing to roll back to",
                    target.release.as_ref().map(|r| format!(": release {r} was uninstalled")).unwrap_or_default()
                ),
                K::way_back(seen, to),
            ),
        });
    }
    if request.kind == SwapKind::Rollback {
        if let Some(staged) = rules::staged_since_last_move(seen.history(), to) {
            return Err(Refusal::new(
                format!(
                    "the {to} slot holds {} staged in revision {}, not the previous production: there is nothing to roll back to",
                    target.image,
                    staged.revision
                ),
                format!("`bgslot swap {release}` makes the staged version live; `bgslot clean {release}` removes it"),
            ));
        }
    }
    if let Some(trouble) = &target.trouble {
        return Err(trouble.clone());
    }
    if let Some(changed) = target.drift.as_ref().filter(|_| !request.force) {
        return Err(Refusal::new(
            changed.clone(),
            format!("what runs there is not what bgslot deployed and checked: redeploy it (`bgslot deploy {release} --tag TAG --replace`), or pass --force to swap to it anyway"),
        ));
    }
    if let Some(want) = &request.expect_tag {
        if !target.runs_version(want) {
            return Err(Refusal::new(
                format!("the {to} slot runs {} but --expect-tag is {want}", target.runs),
                format!("check what is staged with `bgslot status {release}`; deploy {want} with `bgslot deploy {release} --tag {want} --replace`"),
            ));
        }
    }
    rules::check_drift(K::drifted(), &seen.drift, request.force)?;
    // Helm 4 applies server-side: it cannot move a selector that a hand edit left owned by
    // another field manager, even one that matches the values again.
    let owned_elsewhere = if seen.release.helm_major >= 4 {
        seen.foreign_owners()
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
    if let Some(migration) = &target.migration {
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
    if !values.workloads.workers.is_empty() {
        // A router's workers are their chart's, checked against the version at deploy; a worker
        // only the old production has (the new version dropped it) just stops.
        let web = match seen.followers {
            Followers::Labelled => Some(observed.slot(to).image.as_deref()),
            Followers::Named(_) => None,
        };
        let mut moving = values.workloads.clone();
        moving.workers.retain(|w| seen.followers.has_worker(&w.name, to));
        moving.check_can_run(release, observed, to, web)?;
    }
    if !target.available {
        return Err(Refusal::new(
            format!("the {to} slot{} is not fully available{}", target.of_release(), target.unavailable),
            format!("wait for it (`bgslot status {release}`), or redeploy with `bgslot deploy {release} --tag TAG --replace`"),
        ));
    }
    let stage_ready = seen.service(Role::Stage).map(|s| s.ready_in(to)).unwrap_or(0);
    // A drifted stage Service may not route to the target at all; a forced swap then relies on
    // the slot's availability alone and confirms endpoints after the flip.
    let forced_over_drift = request.force && !seen.drift.is_empty();
    let take_back = request.force && (!seen.drift.is_empty() || !owned_elsewhere.is_empty());
    if stage_ready == 0 && !forced_over_drift {
        return Err(Refusal::new(
            format!("the {to} slot has no ready endpoints behind the stage Service"),
            format!("check its pods and the Service with `bgslot status {release}` and `kubectl get endpoints -n NAMESPACE`"),
        ));
    }
    // Capacity: what production is meant to serve (its desired replicas, which an HPA sets),
    // never a count a rolling update inflates for a moment. A slot staged small is brought to it
    // first; one that was not (someone scaled it by hand) is refused.
    let serving = seen.slot(from).totals.desired.max(0);
    let promote = promotion(to, target.preview, target.totals.desired.max(0) as u64, serving as u64, values.autoscaling);
    if promote.is_none() && target.totals.available < serving {
        return Err(Refusal::new(
            format!(
                "the {to} slot has {} available pods but production ({from}) is meant to serve with {serving}",
                target.totals.available
            ),
            format!("scale it up: `bgslot deploy {release} --tag {} --replace --replicas {serving}`", target.tag),
        ));
    }
    let reset_then_reuse = chart.differs_from(&seen.latest().chart);
    let promote = promote.map(|mut p| {
        p.write.reset_then_reuse = reset_then_reuse;
        p.write.force_conflicts = take_back;
        p
    });
    let mut plan = plan_flip(request.kind, from, to, values, observed, &seen.followers, promote);
    let recorded = K::record_move(seen, to, &plan.worker_capacity);
    plan.write.sets.extend(recorded);
    for write in [Some(&mut plan.write), plan.start_workers.as_mut()].into_iter().flatten() {
        write.force_conflicts = take_back;
        write.reset_then_reuse = reset_then_reuse;
    }
    Ok(plan)
}

/// The writes that move production from `from` to `to` with these values (also what
/// `release --dry-run` shows before its deploy has staged anything): the flip, holding the
/// stop-first workers, and the write that starts them; which workers' HPAs take over, sized as
/// they run in `from` now. Workers bgslot moves through the API (a router's) are not held by a
/// write: each is sized to what it runs in `from` now, and `act` moves them after the flip.
pub fn plan_flip(
    kind: SwapKind,
    from: Slot,
    to: Slot,
    values: &ReleaseValues,
    observed: &Observed,
    followers: &Followers,
    promote: Option<Promote>,
) -> SwapPlan {
    let workloads = &values.workloads;
    let stop_first: Vec<String> = workloads.stop_first().iter().map(|w| w.name.clone()).collect();
    let by_write = *followers == Followers::Labelled;
    let held: BTreeSet<String> = if by_write { stop_first.iter().cloned().collect() } else { BTreeSet::new() };
    let mut write = flip_write(kind, from, to);
    if by_write && !workloads.workers.is_empty() {
        write = write.set("heldWorkers", SetValue::Json(serde_json::json!(stop_first)));
    }
    let start_workers = (by_write && !stop_first.is_empty()).then(|| {
        Write::upgrade(Recorded::StartWorkers {
            slot: to,
            workers: stop_first.clone(),
        })
        .set("heldWorkers", SetValue::Json(serde_json::json!([])))
    });
    let worker_capacity: Vec<(String, u64)> = if by_write {
        workloads
            .workers
            .iter()
            .filter(|w| w.desired(to, to, &BTreeSet::new()) == Desired::Autoscaled)
            .filter_map(|w| {
                let now = observed.worker(&w.name, from)?.state.desired;
                (now > 0).then(|| (w.name.clone(), now as u64))
            })
            .collect()
    } else {
        workloads
            .workers
            .iter()
            .map(|w| {
                let now = observed.worker(&w.name, from).map(|live| live.state.desired.max(0) as u64);
                (w.name.clone(), now.unwrap_or(w.replicas[to]))
            })
            .collect()
    };
    let mut effects = workloads.flip_effects(from, to, &held);
    if !by_write {
        for e in &mut effects {
            if let Some((_, n)) = worker_capacity.iter().find(|(name, _)| e.object == format!("worker {name} ({to})")) {
                e.new = n.to_string();
            }
        }
    }
    SwapPlan {
        kind,
        from,
        to,
        promote,
        effects,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    use crate::observe::Observation;

    fn decide_bundled(s: &Observation, r: &SwapRequest, c: &ChartSource) -> Result<SwapPlan, Refusal> {
        decide(&crate::slots::bundled::seen(s.clone()), r, c)
    }

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
        decide_bundled(s, &request(expect), &chart()).unwrap_err().reason
    }

    #[test]
    fn swap_flips_only_production_slot() {
        let plan = decide_bundled(&seen(Slot::Blue, true, observed(3, 3)), &request(Some("v2")), &chart()).unwrap();
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
        no_endpoints.services[1] = service("web-stage", Role::Stage, Slot::Green, 0);
        assert!(refuse(&seen(Slot::Blue, true, no_endpoints), None).contains("no ready endpoints"));
        let mut smaller = observed(5, 3);
        smaller.slots.blue.desired = 5;
        assert!(refuse(&seen(Slot::Blue, true, smaller), None)
            .contains("has 3 available pods but production (blue) is meant to serve with 5"));
        let mut drifted = observed(3, 3);
        drifted.services[0] = service("web", Role::Production, Slot::Green, 3);
        assert!(refuse(&seen(Slot::Blue, true, drifted.clone()), None)
            .contains("Service web (production) selects green but the values say blue"));
        let forced = SwapRequest { force: true, ..request(None) };
        assert!(decide_bundled(&seen(Slot::Blue, true, drifted), &forced, &chart()).unwrap().write.force_conflicts);
        let mut pending = seen(Slot::Blue, true, observed(3, 3));
        pending.history.push(rev(3, "pending-upgrade", "", "t"));
        assert!(refuse(&pending, None).contains("pending-upgrade"));
    }

    #[test]
    fn helm_4_cannot_move_a_selector_a_hand_edit_still_owns() {
        let mut obs = observed(3, 3);
        obs.services[1].selector_owner = Some("kubectl-patch".into());
        let mut s = seen(Slot::Blue, true, obs);
        assert!(refuse(&s, None)
            .contains("the slot selector of Service web-stage was last written by kubectl-patch"));
        let forced = SwapRequest { force: true, ..request(None) };
        assert!(decide_bundled(&s, &forced, &chart()).unwrap().write.force_conflicts);
        s.helm_major = 3;
        assert!(!decide_bundled(&s, &request(None), &chart()).unwrap().write.force_conflicts);
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
        assert!(decide_bundled(&seen(Slot::Blue, true, obs), &request(None), &chart()).is_ok());
    }

    #[test]
    fn capacity_ignores_pods_a_rolling_update_adds_for_a_moment() {
        // Production rolls (a chart upgrade): 2 ready with surge, 1 desired. The staged slot
        // with 1 available pod matches what production is meant to serve.
        let mut rolling = observed(1, 1);
        rolling.slots.blue.ready = 2;
        rolling.slots.blue.total = 2;
        rolling.slots.blue.updated = 1;
        assert!(decide_bundled(&seen(Slot::Blue, true, rolling), &request(None), &chart()).is_ok());
    }

    #[test]
    fn a_preview_always_ends_before_the_flip_and_never_shrinks() {
        let staged = |green_pods: i32| {
            let mut s = seen(Slot::Blue, true, observed(3, green_pods));
            s.values.slots.green.preview = true;
            decide_bundled(&s, &request(None), &chart()).unwrap().promote.unwrap()
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
        assert!(decide_bundled(&seen(Slot::Blue, true, observed(3, 3)), &request(None), &chart()).unwrap().promote.is_none());
    }

    #[test]
    fn a_digest_counts_as_the_expected_version() {
        let digest = format!("sha256:{}", "d".repeat(64));
        let mut s = seen(Slot::Blue, true, observed(3, 3));
        s.values.slots.green.digest = Some(digest.clone());
        assert!(decide_bundled(&s, &request(Some(&digest)), &chart()).is_ok());
    }

    #[test]
    fn rollback_returns_only_to_the_previous_production() {
        let back = SwapRequest { kind: SwapKind::Rollback, ..request(None) };
        // Green was staged after blue went live: it is a new version, not a way back.
        let staged = seen(Slot::Blue, true, observed(3, 3));
        let err = decide_bundled(&staged, &back, &chart()).unwrap_err();
        assert!(err.reason.contains("staged in revision 2, not the previous production"), "{err:?}");
        // After a swap, the other slot holds what production left: rolling back returns to it.
        let mut swapped = seen(Slot::Green, true, crate::cluster::Observed {
            services: vec![service("web", Role::Production, Slot::Green, 3), service("web-stage", Role::Stage, Slot::Blue, 3)],
            ..observed(3, 3)
        });
        swapped.history.push(rev(3, "deployed", "bgslot swap blue->green", "t"));
        assert_eq!(decide_bundled(&swapped, &back, &chart()).unwrap().to, Slot::Blue);
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
            services: vec![service("web", Role::Production, Slot::Green, 3), service("web-stage", Role::Stage, Slot::Blue, 0)],
            ..Default::default()
        };
        let s = observation(v, obs, history);
        let back = SwapRequest { kind: SwapKind::Rollback, ..request(None) };
        let err = decide_bundled(&s, &back, &chart()).unwrap_err();
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
        let err = decide_bundled(&observation(v, obs, history), &back, &chart()).unwrap_err();
        assert!(err.reason.contains("previous slot green is gone"), "{err:?}");
        // Revision 3 has production on green; revision 2 (what was hinted before) has it on blue.
        assert!(err.hint.contains("`helm rollback web 3` restores revision 3"), "{}", err.hint);
    }

    mod router {
        use super::*;
        use crate::slots::router::fixtures::{again, seen};
        use crate::slots::router::live::HelmRecord;
        use crate::slots::router::{RecordedState, Router};
        use crate::slots::Seen;

        const DEPLOYED: &[&str] = &["bgslot install blue v1", "bgslot deploy green v2"];

        fn refuse(rs: &Seen<Router>, kind: SwapKind, expect: Option<&str>) -> Refusal {
            let request = SwapRequest { kind, expect_tag: expect.map(str::to_string), force: false };
            decide(rs, &request, &chart()).unwrap_err()
        }

        fn forced(rs: &Seen<Router>) -> Result<SwapPlan, Refusal> {
            decide(rs, &SwapRequest { kind: SwapKind::Swap, expect_tag: None, force: true }, &chart())
        }

        #[test]
        fn a_swap_writes_one_key_and_leaves_the_slot_releases_alone() {
            let plan = decide(&seen(Slot::Blue, true, DEPLOYED), &request(Some("v2")), &chart()).unwrap();
            assert_eq!((plan.from, plan.to), (Slot::Blue, Slot::Green));
            assert_eq!(sets(&plan.write), ["productionSlot=green"]);
            assert!(plan.write.generated.is_none() && !plan.write.reset_then_reuse && !plan.write.force_conflicts);
            assert_eq!(plan.write.description(), "bgslot swap blue->green");
            assert!(plan.promote.is_none() && plan.start_workers.is_none());
        }

        #[test]
        fn a_router_s_workers_move_by_the_api_sized_as_production_runs_them_and_recorded() {
            use crate::cluster::{SlotState, WorkerState};
            use crate::slots::router::observe::{followers, workloads};
            use crate::slots::router::values::WorkerRecord;
            let mut rs = seen(Slot::Blue, true, DEPLOYED);
            for slot in Slot::ALL {
                rs.kind.values.slot_mut(slot).workers = vec![WorkerRecord {
                    name: "sidekiq".into(),
                    deployment: format!("web-{slot}-sidekiq"),
                    replicas: 2,
                    autoscaled: false,
                }];
            }
            rs.kind.values.app.handover = crate::workers::Handover::StopFirst;
            rs.followers = followers(&rs.kind.values);
            rs.release.values.workloads = workloads(&rs.kind.values);
            // Production's worker was grown to 5 by hand since: the new slot takes 5.
            rs.release.cluster.workers = [(Slot::Blue, 5), (Slot::Green, 0)]
                .map(|(slot, desired)| WorkerState {
                    name: "sidekiq".into(),
                    slot,
                    state: SlotState { deployment: Some(format!("web-{slot}-sidekiq")), desired, ..SlotState::default() },
                    requires: Vec::new(),
                    pods: String::new(),
                })
                .to_vec();
            let plan = decide(&rs, &request(Some("v2")), &chart()).unwrap();
            assert_eq!(plan.worker_capacity, [("sidekiq".to_string(), 5)]);
            assert_eq!(
                sets(&plan.write),
                [
                    "productionSlot=green",
                    r#"router.slots.green.workers=[{"autoscaled":false,"deployment":"web-green-sidekiq","name":"sidekiq","replicas":5}]"#
                ]
            );
            // No heldWorkers and no second write: the stop-first move is the API's, after the flip.
            assert!(plan.start_workers.is_none());
            assert_eq!(plan.stop_first, ["sidekiq"]);
            let moves: Vec<String> = plan.effects.iter().map(|e| format!("{} {}: {} -> {}", e.object, e.field, e.old, e.new)).collect();
            assert_eq!(moves, ["worker sidekiq (green) replicas: 0 -> 5", "worker sidekiq (blue) replicas: 2 -> 0"]);
            // A worker the new version dropped is not required there.
            rs.kind.values.slots.green.workers.clear();
            rs.followers = followers(&rs.kind.values);
            rs.release.cluster.workers.retain(|w| w.slot == Slot::Blue);
            assert!(decide(&rs, &request(Some("v2")), &chart()).is_ok());
        }

        #[test]
        fn every_swap_refusal() {
            assert!(refuse(&seen(Slot::Blue, false, DEPLOYED), SwapKind::Swap, None).reason.contains("nothing is staged"));
            assert!(refuse(&seen(Slot::Blue, true, DEPLOYED), SwapKind::Swap, Some("v9"))
                .reason
                .contains("the green slot runs nginx:v2 but --expect-tag is v9"));
            let mut partial = seen(Slot::Blue, true, DEPLOYED);
            partial.kind.live.green.deployments[0].state.available = 2;
            partial.kind.live.green.deployments[0].state.ready = 2;
            assert!(refuse(&again(partial), SwapKind::Swap, None)
                .reason
                .contains("the green slot (release web-green) is not fully available: web-green-myapp 2/3 ready, 2 available"));
            let mut no_endpoints = seen(Slot::Blue, true, DEPLOYED);
            no_endpoints.services[1].ready_by_slot = crate::vocab::PerSlot::default();
            assert!(refuse(&no_endpoints, SwapKind::Swap, None).reason.contains("no ready endpoints behind the stage Service"));
            let mut smaller = seen(Slot::Blue, true, DEPLOYED);
            let state = &mut smaller.kind.live.blue.deployments[0].state;
            (state.desired, state.updated, state.total, state.ready, state.available) = (5, 5, 5, 5, 5);
            assert!(refuse(&again(smaller), SwapKind::Swap, None)
                .reason
                .contains("has 3 available pods but production (blue) is meant to serve with 5"));
            let mut failed = seen(Slot::Blue, true, DEPLOYED);
            failed.kind.live.green.helm = Some(HelmRecord { revision: 2, status: "failed".into() });
            assert!(refuse(&again(failed), SwapKind::Swap, None)
                .reason
                .contains("release web-green of the green slot is in state failed"));
            let mut changed = seen(Slot::Blue, true, DEPLOYED);
            changed.kind.live.green.helm = Some(HelmRecord { revision: 2, status: "deployed".into() });
            let changed = again(changed);
            let err = refuse(&changed, SwapKind::Swap, None);
            assert!(err.reason.contains("it was changed outside bgslot") && err.hint.contains("--force"), "{err:?}");
            assert!(forced(&changed).is_ok());
            let mut drifted = seen(Slot::Blue, true, DEPLOYED);
            drifted.services[0].selector = std::collections::BTreeMap::from([("app".to_string(), "x".to_string())]);
            let drifted = again(drifted);
            assert!(refuse(&drifted, SwapKind::Swap, None).reason.contains("the router's Services do not match its record"));
            assert!(forced(&drifted).unwrap().write.force_conflicts);
            let mut hand = seen(Slot::Blue, true, DEPLOYED);
            hand.services[1].selector_owner = Some("kubectl-edit".into());
            assert!(refuse(&hand, SwapKind::Swap, None).reason.contains("Helm 4 would refuse to move the Services"));
            hand.release.helm_major = 3;
            assert!(decide(&hand, &request(None), &chart()).is_ok());
            let mut pending = seen(Slot::Blue, true, DEPLOYED);
            pending.release.history.push(rev(3, "pending-upgrade", "", "t"));
            assert!(refuse(&pending, SwapKind::Swap, None).reason.contains("pending-upgrade"));
        }

        #[test]
        fn rollback_returns_only_to_the_previous_production_and_after_clean_says_how_back() {
            assert!(refuse(&seen(Slot::Blue, true, DEPLOYED), SwapKind::Rollback, None)
                .reason
                .contains("staged in revision 2, not the previous production"));
            let swapped = seen(Slot::Green, true, &["bgslot install blue v1", "bgslot deploy green v2", "bgslot swap blue->green"]);
            let back = SwapRequest { kind: SwapKind::Rollback, expect_tag: None, force: false };
            assert_eq!(decide(&swapped, &back, &chart()).unwrap().to, Slot::Blue);
            let mut cleaned = seen(
                Slot::Green,
                true,
                &["bgslot install blue v1", "bgslot deploy green v2", "bgslot swap blue->green", "bgslot clean blue"],
            );
            cleaned.kind.values.slots.blue.state = RecordedState::Cleaned;
            let err = refuse(&again(cleaned), SwapKind::Rollback, None);
            assert!(
                err.reason.contains("the previous slot blue is gone (cleaned: release web-blue was uninstalled)"),
                "{err:?}"
            );
            assert!(err.hint.contains("`bgslot deploy web --tag v1` then `bgslot swap web`"), "{}", err.hint);
            assert!(err.hint.contains("production is green running nginx:v2"), "{}", err.hint);
        }
    }
}
