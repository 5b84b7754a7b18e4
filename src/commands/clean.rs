//! `bgslot clean RELEASE`: empties the slot that is not production, once production has run
//! alone for the drain delay and is healthy enough to be the only copy. The rules are the same
//! for both kinds of slot; how a slot is emptied is its kind's (a block of bgslot's chart is
//! disabled, a router's slot release uninstalled with its history kept).

use std::fmt;
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use super::preview::Plan;
use super::{mutate, Header, Invocation, Mutating, Outcome, Session};
use crate::chart::ChartSource;
use crate::context::Ctx;
use crate::duration::parse_duration;
use crate::error::Refusal;
use crate::helm::Revision;
use crate::names::ReleaseName;
use crate::observe::History;
use crate::rules;
use crate::slots::{self, Holds, Seen, SlotKind};
use crate::vocab::{Mode, Op, Slot};
use crate::with_kind;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Mutating,
    /// Clean even before the drain delay, while production is not fully available, or when a
    /// GitOps controller owns the release
    #[arg(long)]
    pub force: bool,
    /// Drain delay: how long after the last swap the old slot must be kept
    #[arg(long, value_parser = parse_duration, default_value = "30s", value_name = "DURATION")]
    pub min_age: Duration,
    #[command(flatten)]
    pub targets: super::Targets,
}

impl Args {
    pub async fn run(&self, run: &Invocation<'_>) -> Result<()> {
        let request = CleanRequest {
            min_age: self.min_age,
            force: self.force,
            over_gitops: self.force,
        };
        let mutation = self.target.mutation(Op::Clean);
        mutate(run, mutation, async |s: &Session<'_>| {
            with_kind!(observe(s.ctx, s.release).await?, seen => execute(s, &seen, &request).await)
        })
        .await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanRequest {
    pub min_age: Duration,
    /// Clean before the drain delay, or while production is not fully available.
    pub force: bool,
    /// Clean a release a GitOps controller owns.
    pub over_gitops: bool,
}

/// Reads the release; the drain delay runs from the last swap, so when the latest revision is not
/// that swap the history is read too.
pub async fn observe(ctx: &Ctx, release: &ReleaseName) -> Result<slots::Read> {
    let mut seen = crate::observe::Observation::existing(ctx, release, History::Latest).await?;
    if !rules::moved_production(seen.latest()) {
        seen.read_full_history(ctx).await?;
    }
    slots::found(ctx, seen).await
}

/// Decides, then plans or cleans.
pub async fn execute<K: SlotKind>(
    s: &Session<'_>,
    seen: &Seen<K>,
    request: &CleanRequest,
) -> Result<Outcome<CleanReport>> {
    match (decide(seen, Timestamp::now(), request, &s.ctx.chart)?, s.dry_run) {
        (None, _) => Ok(Outcome::Done(CleanReport::unchanged(seen))),
        (Some(plan), true) => Ok(Outcome::Planned(preview(s.ctx, seen, &plan))),
        (Some(plan), false) => act(s.ctx, seen, plan).await.map(Outcome::Done),
    }
}

/// Empties the old slot once production has run alone for the drain delay; `None` when it holds
/// nothing to clean.
pub fn decide<K: SlotKind>(
    seen: &Seen<K>,
    now: Timestamp,
    request: &CleanRequest,
    chart: &ChartSource,
) -> Result<Option<K::Retiring>, Refusal> {
    let release = seen.name().to_string();
    let release = release.as_str();
    rules::check_gitops(release, &seen.release.cluster, request.over_gitops)?;
    rules::check_helm_state(release, seen.history())?;
    let old = seen.stage();
    let Some(plan) = K::plan_retire(chart, seen, old)? else {
        return Ok(None);
    };
    // What an unfinished deploy left was never production's: no delay, no copy to keep.
    if seen.slot(old).holds == Holds::Version && !request.force {
        // Without a recorded swap, the latest revision is the conservative start of the delay.
        let since = rules::last_move(seen.history())
            .or(seen.history().last())
            .and_then(Revision::updated_at);
        if let Some(since) = since {
            let age = now.duration_since(since).unsigned_abs();
            if age < request.min_age {
                let left = request.min_age - age;
                return Err(Refusal::new(
                    format!(
                        "the last swap was {}s ago; the drain delay is {}s, so the {old} slot may still finish in-flight requests",
                        age.as_secs(),
                        request.min_age.as_secs()
                    ),
                    format!("run it again in {}s, shorten the delay with --min-age, or pass --force", left.as_secs().max(1)),
                ));
            }
        }
        let production = seen.slot(seen.production());
        if !production.available {
            let t = production.totals;
            return Err(Refusal::new(
                format!(
                    "production ({}{}) is not fully available ({}/{} ready); the {old} slot may be the only healthy copy",
                    production.slot,
                    production.release.as_ref().map(|r| format!(", release {r}")).unwrap_or_default(),
                    t.ready,
                    t.desired
                ),
                format!("check `bgslot status {release}`; `bgslot rollback {release}` returns to {old}; --force cleans anyway"),
            ));
        }
    }
    Ok(Some(plan))
}

pub fn preview<K: SlotKind>(ctx: &Ctx, seen: &Seen<K>, plan: &K::Retiring) -> Plan {
    let mut out = Plan::of(Op::Clean, &seen.release);
    out.steps = K::preview_retire(ctx, seen, plan);
    out
}

pub async fn act<K: SlotKind>(ctx: &Ctx, seen: &Seen<K>, plan: K::Retiring) -> Result<CleanReport> {
    let retired = K::retire(ctx, seen, plan).await?;
    let unchanged = CleanReport::unchanged(seen);
    Ok(CleanReport {
        header: unchanged.header.clone().revision(retired.revision),
        changed: true,
        stopped_pods: retired.stopped_pods,
        stop_ms: retired.stop_ms,
        ..unchanged
    })
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CleanReport {
    #[serde(flatten)]
    pub header: Header,
    pub mode: Mode,
    /// The slot that is (now) empty.
    pub slot: Slot,
    pub changed: bool,
    /// What the slot ran before it was emptied.
    pub image: String,
    /// How many of the slot's pods were still running or draining when it was emptied.
    pub stopped_pods: usize,
    /// How long they took to stop, in milliseconds.
    pub stop_ms: u64,
    /// Its release, uninstalled with its history kept (a router's slot; `null` for bgslot's
    /// chart).
    pub slot_release: Option<String>,
}

impl CleanReport {
    fn unchanged<K: SlotKind>(seen: &Seen<K>) -> CleanReport {
        let slot = seen.stage();
        CleanReport {
            header: Header::of(Op::Clean, &seen.release).next(format!("bgslot deploy {} --tag NEW_TAG", seen.name())),
            mode: K::MODE,
            slot,
            changed: false,
            image: seen.slot(slot).image.clone(),
            stopped_pods: 0,
            stop_ms: 0,
            slot_release: seen.slot(slot).release.clone(),
        }
    }
}

impl fmt::Display for CleanReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let release = &self.header.release;
        let production = self.slot.other();
        match (&self.slot_release, self.changed) {
            (None, false) => return writeln!(f, "{release}: nothing to clean: the {} slot is already disabled", self.slot),
            (Some(_), false) => return writeln!(f, "{release}: nothing to clean: the {} slot runs no release", self.slot),
            (None, true) => writeln!(
                f,
                "{release}: disabled {} (was {}); production {production} is untouched",
                self.slot, self.image,
            )?,
            (Some(slot_release), true) => writeln!(
                f,
                "{release}: uninstalled {slot_release} (the {} slot, was {}; its history is kept); production {production} is untouched",
                self.slot,
                if self.image.is_empty() { "not recorded" } else { &self.image },
            )?,
        }
        if self.stopped_pods > 0 {
            writeln!(
                f,
                "its {} pod(s) drained and stopped in {:.1}s",
                self.stopped_pods,
                self.stop_ms as f64 / 1000.0
            )?;
        }
        writeln!(f, "\nnext: {}", self.header.next_step())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::Role;
    use crate::fixtures::*;
    use crate::observe::Observation;
    use crate::slots::{bundled, router, Bundled};

    fn decide_bundled(s: &Observation, now: Timestamp, r: &CleanRequest, c: &ChartSource) -> Result<Option<crate::slots::bundled::Retiring>, Refusal> {
        decide::<Bundled>(&bundled::seen(s.clone()), now, r, c)
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn seen(obs: crate::cluster::Observed, green: bool) -> Observation {
        let history = vec![rev(3, "deployed", "bgslot swap blue->green", "2026-01-01T00:00:00Z")];
        observation(values(Slot::Green, green), obs, history)
    }

    fn live_green() -> crate::cluster::Observed {
        crate::cluster::Observed {
            services: vec![service("web", Role::Production, Slot::Green, 3), service("web-stage", Role::Stage, Slot::Blue, 3)],
            ..observed(3, 3)
        }
    }

    fn request(force: bool) -> CleanRequest {
        CleanRequest {
            min_age: Duration::from_secs(30),
            force,
            over_gitops: force,
        }
    }

    #[test]
    fn clean_waits_for_the_drain_delay() {
        let chart = ChartSource::resolve(None).unwrap();
        let s = seen(live_green(), true);
        let err = decide_bundled(&s, at("2026-01-01T00:00:10Z"), &request(false), &chart).unwrap_err();
        assert!(err.reason.contains("last swap was 10s ago"), "{err:?}");
        assert!(err.hint.contains("20s"), "{}", err.hint);
        let plan = decide_bundled(&s, at("2026-01-01T00:00:31Z"), &request(false), &chart)
            .unwrap()
            .unwrap();
        assert_eq!(sets(&plan.write), ["blue.enabled=false"]);
        assert!(decide_bundled(&s, at("2026-01-01T00:00:10Z"), &request(true), &chart)
            .unwrap()
            .is_some());
    }

    #[test]
    fn clean_keeps_the_old_slot_while_production_is_unhealthy() {
        let chart = ChartSource::resolve(None).unwrap();
        let mut sick = live_green();
        sick.slots.green.available = 1;
        sick.slots.green.ready = 1;
        let err = decide_bundled(&seen(sick, true), at("2026-01-01T00:01:00Z"), &request(false), &chart)
            .unwrap_err();
        assert!(err.reason.contains("only healthy copy"), "{err:?}");
    }

    #[test]
    fn an_empty_slot_needs_no_clean() {
        let chart = ChartSource::resolve(None).unwrap();
        let mut s = seen(live_green(), true);
        s.values.slots.blue.enabled = false;
        assert_eq!(decide_bundled(&s, at("2026-01-01T00:01:00Z"), &request(false), &chart).unwrap(), None);
    }

    #[test]
    fn clean_refuses_a_release_helm_left_failed() {
        let chart = ChartSource::resolve(None).unwrap();
        let mut s = seen(live_green(), true);
        s.history.push(rev(4, "failed", "Upgrade failed", "2026-01-01T00:00:05Z"));
        let err = decide_bundled(&s, at("2026-01-01T00:01:00Z"), &request(true), &chart).unwrap_err();
        assert!(err.reason.contains("state failed"), "{err:?}");
    }

    #[test]
    fn a_router_uninstalls_the_old_slot_after_the_drain_delay_while_production_is_healthy() {
        let chart = ChartSource::resolve(None).unwrap();
        let history = ["bgslot deploy green v2", "bgslot swap green->blue"];
        let seen = router::fixtures::seen(Slot::Blue, true, &history);
        let err = decide(&seen, at("2026-01-01T00:00:10Z"), &request(false), &chart).unwrap_err();
        assert!(err.reason.contains("last swap was 10s ago"), "{err:?}");
        let plan = decide(&seen, at("2026-01-01T00:00:31Z"), &request(false), &chart).unwrap().unwrap();
        assert_eq!(plan.release, "web-green");
        assert!(decide(&seen, at("2026-01-01T00:00:10Z"), &request(true), &chart).unwrap().is_some());
        let mut sick = router::fixtures::seen(Slot::Blue, true, &history);
        sick.kind.live.blue.deployments[0].state.available = 1;
        sick.kind.live.blue.deployments[0].state.ready = 1;
        let err = decide(&router::fixtures::again(sick), at("2026-01-01T00:01:00Z"), &request(false), &chart).unwrap_err();
        assert!(
            err.reason.contains("production (blue, release web-blue) is not fully available (1/3 ready)"),
            "{err:?}"
        );
        // What a deploy that did not finish left goes at once: it never served anyone.
        let mut left = router::fixtures::seen(Slot::Blue, false, &history);
        left.kind.leftovers.green = Some("bgslot deploy green v3".into());
        let plan = decide(&left, at("2026-01-01T00:00:01Z"), &request(false), &chart).unwrap().unwrap();
        assert_eq!((plan.release.as_str(), plan.write), ("web-green", None));
    }
}
