//! `bgslot clean RELEASE`: disables the slot that is not production, once production has run
//! alone for the drain delay and is healthy enough to be the only copy.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use super::preview::{self, Plan, PlannedStep};
use super::router::{self, Mode};
use super::{mutate, Mutating, Header, Invocation, Outcome, Session};
use crate::chart::ChartSource;
use crate::context::Ctx;
use crate::duration::parse_duration;
use crate::error::Refusal;
use crate::helm::{Revision, SetValue, Write};
use crate::names::ReleaseName;
use crate::observe::{History, Observation};
use crate::record::Recorded;
use crate::rules;
use crate::vocab::{Op, Slot};
use crate::wait;

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
            let seen = observe(s.ctx, s.release).await?;
            let routing = router::clean::Request { min_age: request.min_age, force: request.force, over_gitops: request.over_gitops };
            if let Some(routed) = router::clean::dispatch(s, &seen, routing).await? {
                return Ok(router::routed(routed));
            }
            let decision = decide(&seen, Timestamp::now(), &request, &s.ctx.chart)?;
            match (decision, s.dry_run) {
                (None, _) => Ok(Outcome::Done(Mode::Bundled(CleanReport::unchanged(&seen)))),
                (Some(plan), true) => Ok(Outcome::Planned(preview(s.ctx, &seen, &plan))),
                (Some(plan), false) => act(s.ctx, &seen, plan).await.map(|r| Outcome::Done(Mode::Bundled(r))),
            }
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
pub async fn observe(ctx: &Ctx, release: &ReleaseName) -> Result<Observation> {
    let mut seen = Observation::existing(ctx, release, History::Latest).await?;
    if !rules::moved_production(seen.latest()) {
        seen.read_full_history(ctx).await?;
    }
    Ok(seen)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanPlan {
    pub slot: Slot,
    pub write: Write,
}

/// Disables the old slot once production has run alone for the drain delay; `None` when it is
/// already disabled.
pub fn decide(
    seen: &Observation,
    now: Timestamp,
    request: &CleanRequest,
    chart: &ChartSource,
) -> Result<Option<CleanPlan>, Refusal> {
    let release = seen.release.to_string();
    let release = release.as_str();
    let values = &seen.values;
    rules::check_gitops(release, &seen.cluster, request.over_gitops)?;
    rules::check_helm_state(release, &seen.history)?;
    let old = values.stage();
    if !values.slot(old).enabled {
        return Ok(None);
    }
    if !request.force {
        // Without a recorded swap, the latest revision is the conservative start of the delay.
        let since = rules::last_move(&seen.history)
            .or(seen.history.last())
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
        let live = seen.cluster.slot(values.production);
        if !live.fully_available() {
            return Err(Refusal::new(
                format!(
                    "production ({}) is not fully available ({}/{} ready); the {old} slot may be the only healthy copy",
                    values.production, live.ready, live.desired
                ),
                format!("check `bgslot status {release}`; `bgslot rollback {release}` returns to {old}; --force cleans anyway"),
            ));
        }
    }
    let mut write = disable_write(old);
    write.reset_then_reuse = chart.differs_from(&seen.latest().chart);
    Ok(Some(CleanPlan { slot: old, write }))
}

/// The one value a clean changes.
pub fn disable_write(slot: Slot) -> Write {
    Write::upgrade(Recorded::Clean { slot }).set(format!("{slot}.enabled"), SetValue::Literal("false".into()))
}

pub fn preview(ctx: &Ctx, seen: &Observation, plan: &CleanPlan) -> Plan {
    Plan::of(Op::Clean, seen).step(clean_step(ctx, &seen.release, plan, &seen.all_values))
}

/// The planned clean, also shown by `release --dry-run`.
pub fn clean_step(ctx: &Ctx, release: &ReleaseName, plan: &CleanPlan, all_values: &serde_json::Value) -> PlannedStep {
    PlannedStep::action(format!("clean: disable {}", plan.slot)).write(
        ctx.helm.command_line(release, &ctx.chart.shown(), &plan.write),
        preview::changes(&plan.write, all_values, &[], None),
    )
}

pub async fn act(ctx: &Ctx, seen: &Observation, plan: CleanPlan) -> Result<CleanReport> {
    let release = &seen.release;
    let slot = plan.slot;
    ctx.events.step(&format!("clean {release}: disabling {slot}"));
    ctx.write(release, &plan.write)
        .await
        .with_context(|| format!("disabling the {slot} slot of {release} in namespace {}", ctx.namespace))?;
    // Done means the old version answers no one: its pods drain (preStop, then SIGTERM) before
    // they go, and keep-alive clients stay on them until then.
    let began = std::time::Instant::now();
    let stopped_pods = wait::slot_stopped(&ctx.cluster, release, slot, ctx.timeout(), ctx.events.as_ref()).await?;
    let unchanged = CleanReport::unchanged(seen);
    Ok(CleanReport {
        header: unchanged.header.clone().revision(seen.latest().revision + 1),
        changed: true,
        stopped_pods,
        stop_ms: began.elapsed().as_millis() as u64,
        ..unchanged
    })
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CleanReport {
    #[serde(flatten)]
    pub header: Header,
    /// The slot that is (now) disabled.
    pub slot: Slot,
    pub changed: bool,
    /// What the slot ran before it was disabled.
    pub image: String,
    /// How many of the slot's pods were still running or draining when it was disabled.
    pub stopped_pods: usize,
    /// How long they took to stop, in milliseconds.
    pub stop_ms: u64,
}

impl CleanReport {
    fn unchanged(seen: &Observation) -> CleanReport {
        let slot = seen.values.stage();
        CleanReport {
            header: Header::of(Op::Clean, seen).next(format!("bgslot deploy {} --tag NEW_TAG", seen.release)),
            slot,
            changed: false,
            image: seen.values.slot(slot).image(),
            stopped_pods: 0,
            stop_ms: 0,
        }
    }
}

impl fmt::Display for CleanReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let release = &self.header.release;
        if !self.changed {
            return writeln!(f, "{release}: nothing to clean: the {} slot is already disabled", self.slot);
        }
        writeln!(
            f,
            "{release}: disabled {} (was {}); production {} is untouched",
            self.slot,
            self.image,
            self.slot.other()
        )?;
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
    use crate::fixtures::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn seen(obs: crate::cluster::Observed, green: bool) -> Observation {
        let history = vec![rev(3, "deployed", "bgslot swap blue->green", "2026-01-01T00:00:00Z")];
        observation(values(Slot::Green, green), obs, history)
    }

    fn live_green() -> crate::cluster::Observed {
        crate::cluster::Observed {
            production_service: Some(service("web", Slot::Green, 3)),
            stage_service: Some(service("web-stage", Slot::Blue, 3)),
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
        let err = decide(&s, at("2026-01-01T00:00:10Z"), &request(false), &chart).unwrap_err();
        assert!(err.reason.contains("last swap was 10s ago"), "{err:?}");
        assert!(err.hint.contains("20s"), "{}", err.hint);
        let plan = decide(&s, at("2026-01-01T00:00:31Z"), &request(false), &chart)
            .unwrap()
            .unwrap();
        assert_eq!(sets(&plan.write), ["blue.enabled=false"]);
        assert!(decide(&s, at("2026-01-01T00:00:10Z"), &request(true), &chart)
            .unwrap()
            .is_some());
    }

    #[test]
    fn clean_keeps_the_old_slot_while_production_is_unhealthy() {
        let chart = ChartSource::resolve(None).unwrap();
        let mut sick = live_green();
        sick.slots.green.available = 1;
        sick.slots.green.ready = 1;
        let err = decide(&seen(sick, true), at("2026-01-01T00:01:00Z"), &request(false), &chart)
            .unwrap_err();
        assert!(err.reason.contains("only healthy copy"), "{err:?}");
    }

    #[test]
    fn an_empty_slot_needs_no_clean() {
        let chart = ChartSource::resolve(None).unwrap();
        let mut s = seen(live_green(), true);
        s.values.slots.blue.enabled = false;
        assert_eq!(decide(&s, at("2026-01-01T00:01:00Z"), &request(false), &chart).unwrap(), None);
    }

    #[test]
    fn clean_refuses_a_release_helm_left_failed() {
        let chart = ChartSource::resolve(None).unwrap();
        let mut s = seen(live_green(), true);
        s.history.push(rev(4, "failed", "Upgrade failed", "2026-01-01T00:00:05Z"));
        let err = decide(&s, at("2026-01-01T00:01:00Z"), &request(true), &chart).unwrap_err();
        assert!(err.reason.contains("state failed"), "{err:?}");
    }
}
