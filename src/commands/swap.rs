//! `bgslot swap RELEASE`: routes production to the staged slot, if and only if that slot can take
//! production traffic now, then confirms the production Service really moved. `rollback` is the
//! same flip back to the previous slot.

use std::fmt;

use anyhow::{Context, Result};
use serde::Serialize;

use super::preview::{self, Plan, PlannedStep};
use super::router::{self, Mode};
use super::{mutate, DryRun, Header, Invocation, Mutation, Outcome, Session};
use crate::chart::ChartSource;
use crate::cluster::MigrationPhase;
use crate::context::Ctx;
use crate::error::Refusal;
use crate::helm::{Revision, SetValue, Write};
use crate::names::{ReleaseName, Tag};
use crate::observe::{History, Observation};
use crate::record::Recorded;
use crate::rules;
use crate::values::ReleaseValues;
use crate::vocab::{Op, Role, Slot};
use crate::wait;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Helm release name
    #[arg(value_name = "RELEASE")]
    pub release: ReleaseName,
    /// Refuse unless the staged slot runs this image tag
    #[arg(long, value_name = "TAG")]
    pub expect_tag: Option<Tag>,
    /// Swap even when the Services' live selectors disagree with the release values (or a hand
    /// edit still owns one, with Helm 4), or when a GitOps controller owns the release
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub dry_run: DryRun,
}

impl Args {
    pub async fn run(&self, run: &Invocation<'_>) -> Result<()> {
        let request = SwapRequest {
            kind: SwapKind::Swap,
            expect_tag: self.expect_tag.as_ref().map(Tag::to_string),
            force: self.force,
        };
        execute(run, &self.release, &request, self.dry_run).await
    }
}

/// A swap, or the same flip back to the previous slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SwapKind {
    Swap,
    Rollback,
}

impl SwapKind {
    pub fn op(self) -> Op {
        match self {
            SwapKind::Swap => Op::Swap,
            SwapKind::Rollback => Op::Rollback,
        }
    }

    /// What the flip records in the helm history.
    pub fn record(self, from: Slot, to: Slot) -> Recorded {
        match self {
            SwapKind::Swap => Recorded::Swap { from, to },
            SwapKind::Rollback => Recorded::Rollback { from, to },
        }
    }
}

/// What a swap (or rollback) is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapRequest {
    pub kind: SwapKind,
    /// The tag (or, for a version pinned by digest, the digest) the staged slot must run.
    pub expect_tag: Option<String>,
    pub force: bool,
}

/// `swap` and `rollback`: observe, decide, then plan or act, under the lock.
pub async fn execute(run: &Invocation<'_>, release: &ReleaseName, request: &SwapRequest, dry_run: DryRun) -> Result<()> {
    mutate(run, Mutation::new(request.kind.op(), release, dry_run), async |s: &Session<'_>| {
        let seen = observe(s.ctx, release, request.kind).await?;
        if let Some(routed) = router::swap::dispatch(s, &seen, request.kind.op(), request.expect_tag.as_deref(), request.force).await? {
            return Ok(router::routed(routed));
        }
        let plan = decide(&seen, request, &s.ctx.chart)?;
        if s.dry_run {
            return Ok(Outcome::Planned(preview(s.ctx, &seen, &plan)));
        }
        act(s.ctx, &seen, plan).await.map(|r| Outcome::Done(Mode::Bundled(r)))
    })
    .await
}

/// Reads the release; a rollback also reads the history, to know what the other slot holds (the
/// previous production, or a version staged since) and which revision `helm rollback` restores.
pub async fn observe(ctx: &Ctx, release: &ReleaseName, kind: SwapKind) -> Result<Observation> {
    let need = match kind {
        SwapKind::Swap => History::Latest,
        SwapKind::Rollback => History::Full,
    };
    Observation::existing(ctx, release, need).await
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapPlan {
    pub kind: SwapKind,
    pub from: Slot,
    pub to: Slot,
    pub write: Write,
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
    // never a count a rolling update inflates for a moment.
    let live = observed.slot(from);
    if state.available < live.desired {
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
    let mut write = flip_write(request.kind, from, to);
    write.force_conflicts = take_back;
    write.reset_then_reuse = chart.differs_from(&seen.latest().chart);
    Ok(SwapPlan {
        kind: request.kind,
        from,
        to,
        write,
    })
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

pub fn preview(ctx: &Ctx, seen: &Observation, plan: &SwapPlan) -> Plan {
    Plan::of(plan.kind.op(), seen).step(flip_step(ctx, &seen.release, plan, &seen.all_values))
}

/// The planned flip, also shown by `release --dry-run`.
pub fn flip_step(ctx: &Ctx, release: &ReleaseName, plan: &SwapPlan, all_values: &serde_json::Value) -> PlannedStep {
    PlannedStep {
        action: format!("{}: production {} -> {}", plan.kind.op(), plan.from, plan.to),
        helm: ctx.helm.command_line(release, &ctx.chart.shown(), &plan.write),
        changes: preview::changes(&plan.write, all_values, &[], None),
        then: vec![format!(
            "wait until the production Service selects {} and routes only to its ready pods",
            plan.to
        )],
    }
}

/// Writes the flip, then waits until the production Service routes only to the new slot.
pub async fn act(ctx: &Ctx, seen: &Observation, plan: SwapPlan) -> Result<SwapReport> {
    let release = &seen.release;
    let (from, to, op) = (plan.from, plan.to, plan.kind.op());
    ctx.events.step(&format!("{op} {release}: production {from} -> {to}"));
    ctx.write(release, &plan.write)
        .await
        .with_context(|| format!("{} of {release} in namespace {}", plan.write.description(), ctx.namespace))?;
    let endpoints = wait::production_serves(&ctx.cluster, release, to, ctx.timeout())
        .await
        .with_context(|| format!("helm applied the {op} of {release}, but the production Service does not serve {to} yet"))?;
    let service = seen
        .cluster
        .service(Role::Production)
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let mut after = seen.values.clone();
    after.production = to;
    Ok(SwapReport {
        header: Header::new(op, release, &seen.namespace)
            .revision(seen.latest().revision + 1)
            .production(to)
            .next(format!("bgslot clean {release}   (or: bgslot rollback {release})")),
        from,
        to,
        image: after.slot(to).image(),
        previous_image: after.slot(from).image(),
        url: after.url(Role::Production, &service, &seen.namespace),
        service,
        ready_endpoints: endpoints,
    })
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SwapReport {
    /// `operation` is `swap` or `rollback`.
    #[serde(flatten)]
    pub header: Header,
    pub from: Slot,
    pub to: Slot,
    /// What production runs now.
    pub image: String,
    /// What the previous slot still runs, until `clean`.
    pub previous_image: String,
    pub service: String,
    pub ready_endpoints: usize,
    pub url: String,
}

impl fmt::Display for SwapReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let release = &self.header.release;
        writeln!(
            f,
            "{release}: production now routes to {} ({}; service {} has {} ready endpoints)",
            self.to, self.image, self.service, self.ready_endpoints
        )?;
        writeln!(
            f,
            "  {} still runs {}: `bgslot rollback {release}` returns to it",
            self.from, self.previous_image
        )?;
        writeln!(f, "\nnext: {}", self.header.next_step())
    }
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
