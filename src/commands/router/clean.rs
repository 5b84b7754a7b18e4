//! `bgslot clean` of a router: once the drain delay has passed and production is fully available,
//! `helm uninstall --keep-history` of the old slot's release (so its name can be installed again
//! and its history read), a wait until its pods have stopped, then a router revision that records
//! the slot as cleaned (the stage Service then selects nothing).

use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use super::router_of;
use super::MODE;
use crate::chart::ChartSource;
use crate::commands::preview::{self, Plan, PlannedStep};
use crate::commands::{Header, Outcome, Session};
use crate::error::Refusal;
use crate::helm::{Revision, Write};
use crate::observe::Observation;
use crate::record::Recorded;
use crate::router::live::unrecorded;
use crate::router::observe::RouterSeen;
use crate::router::values::cleaned_values;
use crate::router::wait;
use crate::rules;
use crate::vocab::{Op, Slot};

/// What `clean` is asked.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub min_age: Duration,
    /// Clean before the drain delay, or while production is not fully available.
    pub force: bool,
    /// Clean a release a GitOps controller owns.
    pub over_gitops: bool,
}

/// Runs the router variant of `clean` when `seen` is a router.
pub async fn dispatch(
    s: &Session<'_>,
    seen: &Observation,
    request: Request,
) -> Result<Option<Outcome<Report>>> {
    let Some(router) = router_of(seen)? else {
        return Ok(None);
    };
    let rs = RouterSeen::read(s.ctx, seen.clone(), router).await?;
    let old = rs.production().other();
    // A release in the old slot that the router does not record: is it what an unfinished
    // deploy left (bgslot's description), or someone else's?
    let leftover = if unrecorded(rs.record(old), rs.live(old)) {
        s.ctx
            .records
            .latest(&rs.live(old).release)
            .await?
            .map(|latest| latest.revision.description)
    } else {
        None
    };
    let plan = decide(
        &rs,
        leftover.as_deref(),
        Timestamp::now(),
        &request,
        &s.ctx.chart,
    )?;
    match (plan, s.dry_run) {
        (None, _) => Ok(Some(Outcome::Done(Report::unchanged(&rs)))),
        (Some(plan), true) => Ok(Some(Outcome::Planned(plan_of(s, &rs, &plan)))),
        (Some(plan), false) => act(s, &rs, plan).await.map(|r| Some(Outcome::Done(r))),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanPlan {
    pub slot: Slot,
    /// The release to uninstall.
    pub release: String,
    pub description: String,
    /// The router write that records the slot as cleaned (none for what an unfinished deploy
    /// left: the router never recorded it).
    pub write: Option<Write>,
}

/// Uninstalls the old slot's release once production has run alone for the drain delay; `None`
/// when the slot runs nothing.
pub fn decide(
    rs: &RouterSeen,
    leftover: Option<&str>,
    now: Timestamp,
    request: &Request,
    chart: &ChartSource,
) -> Result<Option<CleanPlan>, Refusal> {
    let release = rs.release();
    let seen = &rs.seen;
    rules::check_gitops(release, &seen.cluster, request.over_gitops)?;
    rules::check_helm_state(release, &seen.history)?;
    let old = rs.production().other();
    let record = rs.record(old);
    let name = rs.live(old).release.clone();
    let description = Recorded::Clean { slot: old }.to_string();
    if !record.is_deployed() {
        return match leftover {
            None => Ok(None),
            Some(d) if matches!(d.parse::<Recorded>(), Ok(Recorded::Install { slot, .. } | Recorded::Deploy { slot, .. }) if slot == old) => {
                Ok(Some(CleanPlan {
                    slot: old,
                    release: name,
                    description,
                    write: None,
                }))
            }
            Some(d) => Err(Refusal::new(
                format!("release {name} exists in the {old} slot, but neither the router {release} nor bgslot made it ({d})"),
                format!("bgslot removes only what it deployed: `helm uninstall {name}` if it is unwanted"),
            )),
        };
    }
    if !request.force {
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
        let production = rs.production();
        let live = rs.live(production);
        if !live.available(rs.record(production)) {
            let t = live.totals(rs.record(production));
            return Err(Refusal::new(
                format!(
                    "production ({production}, release {}) is not fully available ({}/{} ready); the {old} slot may be the only healthy copy",
                    live.release, t.ready, t.desired
                ),
                format!("check `bgslot status {release}`; `bgslot rollback {release}` returns to {old}; --force cleans anyway"),
            ));
        }
    }
    let mut write = Write::upgrade(Recorded::Clean { slot: old });
    write.generated = Some(cleaned_values(old));
    write.reset_then_reuse = chart.differs_from(&seen.latest().chart);
    Ok(Some(CleanPlan {
        slot: old,
        release: name,
        description,
        write: Some(write),
    }))
}

fn plan_of(s: &Session<'_>, rs: &RouterSeen, plan: &CleanPlan) -> Plan {
    let ctx = s.ctx;
    let mut out = Plan::of(Op::Clean, &rs.seen).step(PlannedStep {
        action: format!(
            "clean: uninstall {} (the {} slot), keeping its history",
            plan.release, plan.slot
        ),
        helm: ctx
            .helm
            .uninstall_command_line(&plan.release, &plan.description, ctx.timeout()),
        changes: Vec::new(),
        effects: Vec::new(),
        then: vec![format!("wait until the {} pods have stopped", plan.slot)],
    });
    if let Some(write) = &plan.write {
        out = out.step(PlannedStep {
            action: format!(
                "record {} as cleaned in the router {}",
                plan.slot,
                rs.release()
            ),
            helm: ctx
                .helm
                .command_line(rs.release(), &ctx.chart.shown(), write),
            changes: preview::changes(write, &rs.seen.all_values, &[], None),
            effects: Vec::new(),
            then: Vec::new(),
        });
    }
    out
}

pub async fn act(s: &Session<'_>, rs: &RouterSeen, plan: CleanPlan) -> Result<Report> {
    let ctx = s.ctx;
    let release = rs.release();
    let slot = plan.slot;
    ctx.events.step(&format!(
        "clean {release}: uninstalling {} ({slot})",
        plan.release
    ));
    ctx.uninstall(&plan.release, &plan.description)
        .await
        .with_context(|| {
            format!(
                "uninstalling release {} (the {slot} slot of {release}) in namespace {}",
                plan.release, ctx.namespace
            )
        })?;
    // Done means the old version answers no one: its pods drain before they go, and keep-alive
    // clients stay on them until then.
    let began = std::time::Instant::now();
    let record = rs.record(slot);
    let selectors: Vec<_> = if record.is_deployed() {
        vec![record.selector.clone()]
    } else {
        rs.live(slot)
            .deployments
            .iter()
            .map(|d| d.pod_labels.clone())
            .collect()
    };
    let mut stopped_pods = 0;
    for selector in &selectors {
        stopped_pods += wait::pods_gone(
            &ctx.cluster,
            release,
            slot,
            selector,
            ctx.timeout(),
            ctx.events.as_ref(),
        )
        .await?;
    }
    let stop_ms = began.elapsed().as_millis() as u64;
    let mut revision = rs.seen.latest().revision;
    if let Some(write) = &plan.write {
        ctx.write(release, write).await.with_context(|| {
            format!(
                "release {} is uninstalled; recording it in the router {release} failed",
                plan.release
            )
        })?;
        revision += 1;
    }
    let unchanged = Report::unchanged(rs);
    Ok(Report {
        header: unchanged.header.clone().revision(revision),
        changed: true,
        stopped_pods,
        stop_ms,
        ..unchanged
    })
}

/// What a router clean reports: the bundled clean's fields, and the slot release.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    #[serde(flatten)]
    pub header: Header,
    pub mode: &'static str,
    /// The slot that runs nothing now.
    pub slot: Slot,
    pub changed: bool,
    /// What it ran.
    pub image: String,
    pub stopped_pods: usize,
    pub stop_ms: u64,
    /// Its release, uninstalled with its history kept.
    pub slot_release: String,
}

impl Report {
    fn unchanged(rs: &RouterSeen) -> Report {
        let slot = rs.production().other();
        Report {
            header: Header::of(Op::Clean, &rs.seen)
                .next(format!("bgslot deploy {} --tag NEW_TAG", rs.release())),
            mode: MODE,
            slot,
            changed: false,
            image: rs.record(slot).image.clone(),
            stopped_pods: 0,
            stop_ms: 0,
            slot_release: rs.live(slot).release.clone(),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let release = &self.header.release;
        if !self.changed {
            return writeln!(
                f,
                "{release}: nothing to clean: the {} slot runs no release",
                self.slot
            );
        }
        writeln!(
            f,
            "{release}: uninstalled {} (the {} slot, was {}; its history is kept); production {} is untouched",
            self.slot_release,
            self.slot,
            if self.image.is_empty() { "not recorded" } else { &self.image },
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
    use crate::router::live::tests::{live, routed, router};
    use crate::router::RecordedState;
    use crate::vocab::{PerSlot, Role};

    fn seen(green_deployed: bool) -> RouterSeen {
        let mut r = router(true);
        if !green_deployed {
            r.slots.green.state = RecordedState::Cleaned;
        }
        let history = vec![
            crate::fixtures::rev(
                2,
                "superseded",
                "bgslot deploy green v2",
                "2026-01-01T00:00:00Z",
            ),
            crate::fixtures::rev(
                3,
                "deployed",
                "bgslot swap green->blue",
                "2026-01-01T00:00:00Z",
            ),
        ];
        let obs = crate::fixtures::observation(
            crate::fixtures::values(Slot::Blue, true),
            crate::fixtures::observed(3, 3),
            history,
        );
        RouterSeen {
            services: vec![
                routed("web", Role::Production, Slot::Blue, &r, 3),
                routed("web-stage", Role::Stage, Slot::Green, &r, 3),
            ],
            slots: PerSlot {
                blue: live(Slot::Blue, "v1", 3),
                green: live(Slot::Green, "v2", 3),
            },
            seen: obs,
            router: r,
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn request(force: bool) -> Request {
        Request {
            min_age: Duration::from_secs(30),
            force,
            over_gitops: force,
        }
    }

    #[test]
    fn clean_uninstalls_the_old_slot_after_the_drain_delay_and_records_it() {
        let chart = ChartSource::resolve(None).unwrap();
        let rs = seen(true);
        let err = decide(
            &rs,
            None,
            at("2026-01-01T00:00:10Z"),
            &request(false),
            &chart,
        )
        .unwrap_err();
        assert!(err.reason.contains("last swap was 10s ago"), "{err:?}");
        let plan = decide(
            &rs,
            None,
            at("2026-01-01T00:00:31Z"),
            &request(false),
            &chart,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (plan.slot, plan.release.as_str(), plan.description.as_str()),
            (Slot::Green, "web-green", "bgslot clean green")
        );
        let write = plan.write.unwrap();
        assert_eq!(
            write.generated,
            Some(serde_json::json!({"router": {"slots": {"green": {"state": "cleaned"}}}}))
        );
        assert!(write.sets.is_empty());
        assert!(decide(
            &rs,
            None,
            at("2026-01-01T00:00:10Z"),
            &request(true),
            &chart
        )
        .unwrap()
        .is_some());
    }

    #[test]
    fn clean_keeps_the_old_slot_while_production_is_unhealthy() {
        let chart = ChartSource::resolve(None).unwrap();
        let mut rs = seen(true);
        rs.slots.blue.deployments[0].state.available = 1;
        rs.slots.blue.deployments[0].state.ready = 1;
        let err = decide(
            &rs,
            None,
            at("2026-01-01T00:01:00Z"),
            &request(false),
            &chart,
        )
        .unwrap_err();
        assert!(
            err.reason
                .contains("production (blue, release web-blue) is not fully available (1/3 ready)"),
            "{err:?}"
        );
    }

    #[test]
    fn a_cleaned_slot_needs_nothing_and_only_bgslots_leftovers_are_removed() {
        let chart = ChartSource::resolve(None).unwrap();
        let rs = seen(false);
        assert_eq!(
            decide(
                &rs,
                None,
                at("2026-01-01T00:01:00Z"),
                &request(false),
                &chart
            )
            .unwrap(),
            None
        );
        let left = decide(
            &rs,
            Some("bgslot deploy green v3"),
            at("2026-01-01T00:01:00Z"),
            &request(false),
            &chart,
        )
        .unwrap()
        .unwrap();
        assert_eq!((left.release.as_str(), left.write), ("web-green", None));
        let err = decide(
            &rs,
            Some("Install complete"),
            at("2026-01-01T00:01:00Z"),
            &request(false),
            &chart,
        )
        .unwrap_err();
        assert!(
            err.reason
                .contains("neither the router web nor bgslot made it"),
            "{err:?}"
        );
    }
}
