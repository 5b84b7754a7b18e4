//! `bgslot swap` and `bgslot rollback` of a router: today's checks on the staged slot release (its
//! helm status deployed, every Deployment of it rolled out, the stage Service routing to it, its
//! running image against `--expect-tag`, production's capacity), then the one-key router write
//! and the confirmation that every production Service routes only to it. The slot releases are
//! not touched: no hook runs, no pod restarts.

use std::fmt;

use anyhow::{Context, Result};
use serde::Serialize;

use super::router_of;
use super::MODE;
use crate::chart::ChartSource;
use crate::commands::preview::{self, Plan, PlannedStep};
use crate::commands::{Header, Outcome, Session};
use crate::error::Refusal;
use crate::helm::{SetValue, Write};
use crate::observe::Observation;
use crate::record::Recorded;
use crate::router::live::{self, foreign_selector_owners};
use crate::router::observe::{selectors, RouterSeen};
use crate::router::preflight::image_parts;
use crate::router::{wait, RecordedState};
use crate::rules;
use crate::vocab::{Op, Role, Slot};

/// Runs the router variant of `swap` (or, with `Op::Rollback`, `rollback`) when `seen` is a
/// router; `None` leaves it to the bundled chart.
pub async fn dispatch(
    s: &Session<'_>,
    seen: &Observation,
    op: Op,
    expect_tag: Option<&str>,
    force: bool,
) -> Result<Option<Outcome<Report>>> {
    let Some(router) = router_of(seen)? else {
        return Ok(None);
    };
    let rs = RouterSeen::read(s.ctx, seen.clone(), router).await?;
    let flip = decide(&rs, op, expect_tag, force, &s.ctx.chart)?;
    if s.dry_run {
        return Ok(Some(Outcome::Planned(plan_of(s, &rs, &flip))));
    }
    act(s, &rs, flip).await.map(|r| Some(Outcome::Done(r)))
}

/// The flip a swap or rollback writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flip {
    pub op: Op,
    pub from: Slot,
    pub to: Slot,
    pub write: Write,
}

/// Flips production to the other slot, if and only if its release can take production traffic
/// now.
pub fn decide(
    rs: &RouterSeen,
    op: Op,
    expect_tag: Option<&str>,
    force: bool,
    chart: &ChartSource,
) -> Result<Flip, Refusal> {
    let release = rs.release();
    let seen = &rs.seen;
    rules::check_gitops(release, &seen.cluster, force)?;
    rules::check_helm_state(release, &seen.history)?;
    let from = rs.production();
    let to = from.other();
    let target = rs.record(to);
    let live = rs.live(to);
    if !target.is_deployed() {
        let cleaned = target.state == RecordedState::Cleaned;
        return Err(match op {
            Op::Rollback if cleaned => Refusal::new(
                format!(
                    "the previous slot {to} is gone (cleaned: release {} was uninstalled), so there is nothing to roll back to",
                    target.release
                ),
                format!(
                    "the way back is `bgslot deploy {release} --tag {}` then `bgslot swap {release}` ({to} ran {} of chart {}); production is {from} running {}",
                    if target.tag.is_empty() { "OLD_TAG" } else { &target.tag },
                    target.image,
                    target.chart,
                    rs.record(from).image
                ),
            ),
            Op::Rollback => Refusal::new(
                format!("the {to} slot never ran a release, so there is nothing to roll back to"),
                format!("production is {from}; `bgslot status {release}` shows both slots"),
            ),
            _ => Refusal::new(
                format!("nothing is staged: the {to} slot runs no release, so there is nothing to swap to"),
                if live::unrecorded(target, live) {
                    format!(
                        "release {} is left from a deploy that did not finish: deploy again (`bgslot deploy {release} --tag TAG`)",
                        live.release
                    )
                } else {
                    format!("deploy a version first: `bgslot deploy {release} --tag TAG`")
                },
            ),
        });
    }
    if op == Op::Rollback {
        if let Some(staged) = rules::staged_since_last_move(&seen.history, to) {
            return Err(Refusal::new(
                format!(
                    "the {to} slot holds {} staged in revision {}, not the previous production: there is nothing to roll back to",
                    target.image, staged.revision
                ),
                format!("`bgslot swap {release}` makes the staged version live; `bgslot clean {release}` removes it"),
            ));
        }
    }
    let (service_drift, _) = rs.drift();
    if let Some(h) = live.helm.as_ref().filter(|h| !h.is_deployed()) {
        return Err(Refusal::new(
            format!(
                "release {} of the {to} slot is in state {} (revision {}), not deployed",
                live.release, h.status, h.revision
            ),
            format!("`bgslot recover {release}` returns it to its last deployed revision; `bgslot status {release}` shows both slots"),
        ));
    }
    if live.helm.is_none() {
        return Err(Refusal::new(
            format!(
                "release {} of the {to} slot does not exist, though the router records it",
                live.release
            ),
            format!("deploy it again: `bgslot deploy {release} --tag TAG --replace`"),
        ));
    }
    if let Some(changed) = live::slot_drift_of(target, live).filter(|_| !force) {
        return Err(Refusal::new(
            changed,
            format!("what runs there is not what bgslot deployed and checked: redeploy it (`bgslot deploy {release} --tag TAG --replace`), or pass --force to swap to it anyway"),
        ));
    }
    if let Some(want) = expect_tag {
        let running = live
            .running_image(target)
            .unwrap_or_else(|| target.image.clone());
        let parts = image_parts(&running);
        if parts.tag.as_deref() != Some(want) && parts.digest.as_deref() != Some(want) {
            return Err(Refusal::new(
                format!("the {to} slot runs {running} but --expect-tag is {want}"),
                format!("check what is staged with `bgslot status {release}`; deploy {want} with `bgslot deploy {release} --tag {want} --replace`"),
            ));
        }
    }
    if !service_drift.is_empty() && !force {
        return Err(Refusal::new(
            format!("the router's Services do not match its record: {}", service_drift.join("; ")),
            "someone changed them outside helm; inspect with `bgslot status`, then pass --force to let the swap put them back as recorded",
        ));
    }
    let owned_elsewhere = if seen.helm_major >= 4 {
        foreign_selector_owners(&rs.services)
    } else {
        Vec::new()
    };
    if !owned_elsewhere.is_empty() && !force {
        return Err(Refusal::new(
            format!("Helm 4 would refuse to move the Services: {}", owned_elsewhere.join("; ")),
            "check that nobody steers traffic by hand now, then pass --force: the swap takes the field back (--force-conflicts)",
        ));
    }
    if !live.available(target) {
        let behind = live.unavailable();
        return Err(Refusal::new(
            format!(
                "the {to} slot (release {}) is not fully available: {}",
                live.release,
                if behind.is_empty() {
                    "no Deployment of it runs the pods the router selects".to_string()
                } else {
                    behind.join("; ")
                }
            ),
            format!("wait for it (`bgslot status {release}`), or redeploy with `bgslot deploy {release} --tag TAG --replace`"),
        ));
    }
    let forced_over_drift = force && !service_drift.is_empty();
    let stage_ready = rs.service(Role::Stage).map(|s| s.ready_in(to)).unwrap_or(0);
    if stage_ready == 0 && !forced_over_drift {
        return Err(Refusal::new(
            format!("the {to} slot has no ready endpoints behind the stage Service"),
            format!("check its pods and the Service with `bgslot status {release}` and `kubectl get endpoints -n NAMESPACE`"),
        ));
    }
    let capacity = live.totals(target);
    let serving = rs.live(from).totals(rs.record(from));
    if capacity.available < serving.desired {
        return Err(Refusal::new(
            format!(
                "the {to} slot has {} available pods but production ({from}) is meant to serve with {}",
                capacity.available, serving.desired
            ),
            format!("scale it up: `bgslot deploy {release} --tag {} --replace --replicas {}`", target.tag, serving.desired),
        ));
    }
    let record = match op {
        Op::Rollback => Recorded::Rollback { from, to },
        _ => Recorded::Swap { from, to },
    };
    let mut write = Write::upgrade(record).set("productionSlot", SetValue::Str(to.as_str().into()));
    write.force_conflicts = force && (!service_drift.is_empty() || !owned_elsewhere.is_empty());
    write.reset_then_reuse = chart.differs_from(&seen.latest().chart);
    Ok(Flip {
        op,
        from,
        to,
        write,
    })
}

fn plan_of(s: &Session<'_>, rs: &RouterSeen, flip: &Flip) -> Plan {
    let ctx = s.ctx;
    Plan::of(flip.op, &rs.seen).step(PlannedStep {
        action: format!("{}: production {} -> {}", flip.op, flip.from, flip.to),
        helm: ctx
            .helm
            .command_line(rs.release(), &ctx.chart.shown(), &flip.write),
        changes: preview::changes(&flip.write, &rs.seen.all_values, &[], None),
        effects: Vec::new(),
        then: vec![format!(
            "wait until every production Service routes only to {}'s pods (release {})",
            flip.to,
            rs.record(flip.to).release
        )],
    })
}

pub async fn act(s: &Session<'_>, rs: &RouterSeen, flip: Flip) -> Result<Report> {
    let ctx = s.ctx;
    let release = rs.release();
    let (from, to, op) = (flip.from, flip.to, flip.op);
    ctx.events
        .step(&format!("{op} {release}: production {from} -> {to}"));
    ctx.write(release, &flip.write).await.with_context(|| {
        format!(
            "{} of {release} in namespace {}",
            flip.write.description(),
            ctx.namespace
        )
    })?;
    let what = format!("production of {release} did not move to {to}");
    let endpoints = wait::services(&ctx.cluster, release, &selectors(&rs.router), ctx.timeout(), &what, |services| {
        wait::production_moved(services, release, to)
    })
    .await
    .with_context(|| format!("helm applied the {op} of {release}, but the production Service does not serve {to} yet"))?;
    let service = rs
        .service(Role::Production)
        .map(|s| s.name.clone())
        .unwrap_or_else(|| release.to_string());
    let target = rs.record(to);
    Ok(Report {
        header: Header::new(op, release, &rs.seen.namespace)
            .revision(rs.seen.latest().revision + 1)
            .production(to)
            .next(format!(
                "bgslot clean {release}   (or: bgslot rollback {release})"
            )),
        mode: MODE,
        from,
        to,
        image: rs
            .live(to)
            .running_image(target)
            .unwrap_or_else(|| target.image.clone()),
        previous_image: rs
            .live(from)
            .running_image(rs.record(from))
            .unwrap_or_else(|| rs.record(from).image.clone()),
        url: live::url(
            &rs.seen.values,
            Role::Production,
            &service,
            &rs.seen.namespace,
            target.ports.first().map(|p| p.port),
        ),
        service,
        ready_endpoints: endpoints,
        slot_release: target.release.clone(),
        previous_release: rs.record(from).release.clone(),
    })
}

/// What a router swap (or rollback) reports: the bundled swap's fields, and the slot releases.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    /// `operation` is `swap` or `rollback`.
    #[serde(flatten)]
    pub header: Header,
    pub mode: &'static str,
    pub from: Slot,
    pub to: Slot,
    pub image: String,
    pub previous_image: String,
    pub service: String,
    pub ready_endpoints: usize,
    pub url: String,
    /// The release production routes to now.
    pub slot_release: String,
    /// The release it routed to before, still running until `clean`.
    pub previous_release: String,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let release = &self.header.release;
        writeln!(
            f,
            "{release}: production now routes to {} ({}, release {}; service {} has {} ready endpoints)",
            self.to, self.image, self.slot_release, self.service, self.ready_endpoints
        )?;
        writeln!(
            f,
            "  {} still runs {} (release {}): `bgslot rollback {release}` returns to it",
            self.from, self.previous_image, self.previous_release
        )?;
        writeln!(f, "\nnext: {}", self.header.next_step())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::live::tests::{live, routed, router};
    use crate::router::live::HelmRecord;
    use crate::vocab::PerSlot;

    fn seen(production: Slot, green: bool, history: &[&str]) -> RouterSeen {
        let mut r = router(green);
        let blue_live = live(Slot::Blue, "v1", 3);
        let green_live = live(Slot::Green, "v2", 3);
        if !green {
            r.slots.green.state = RecordedState::Empty;
        }
        let history = history
            .iter()
            .enumerate()
            .map(|(i, d)| {
                crate::fixtures::rev(
                    i as u64 + 1,
                    if i + 1 == history.len() {
                        "deployed"
                    } else {
                        "superseded"
                    },
                    d,
                    "t",
                )
            })
            .collect();
        let mut obs = crate::fixtures::observation(
            crate::fixtures::values(production, green),
            crate::fixtures::observed(3, 0),
            history,
        );
        for r in &mut obs.history {
            r.chart = crate::chart::embedded_id();
        }
        RouterSeen {
            services: vec![
                routed("web", Role::Production, production, &r, 3),
                routed(
                    "web-stage",
                    Role::Stage,
                    production.other(),
                    &r,
                    if green { 3 } else { 0 },
                ),
            ],
            slots: PerSlot {
                blue: blue_live,
                green: green_live,
            },
            seen: obs,
            router: r,
        }
    }

    fn chart() -> ChartSource {
        ChartSource::resolve(None).unwrap()
    }

    fn refuse(rs: &RouterSeen, op: Op, expect: Option<&str>) -> Refusal {
        decide(rs, op, expect, false, &chart()).unwrap_err()
    }

    const DEPLOYED: &[&str] = &["bgslot install blue v1", "bgslot deploy green v2"];

    #[test]
    fn a_swap_writes_one_key_and_leaves_the_slot_releases_alone() {
        let flip = decide(
            &seen(Slot::Blue, true, DEPLOYED),
            Op::Swap,
            Some("v2"),
            false,
            &chart(),
        )
        .unwrap();
        assert_eq!((flip.from, flip.to), (Slot::Blue, Slot::Green));
        assert_eq!(crate::fixtures::sets(&flip.write), ["productionSlot=green"]);
        assert!(
            flip.write.generated.is_none()
                && !flip.write.reset_then_reuse
                && !flip.write.force_conflicts
        );
        assert_eq!(flip.write.description(), "bgslot swap blue->green");
    }

    #[test]
    fn every_swap_refusal() {
        assert!(refuse(&seen(Slot::Blue, false, DEPLOYED), Op::Swap, None)
            .reason
            .contains("nothing is staged"));
        assert!(
            refuse(&seen(Slot::Blue, true, DEPLOYED), Op::Swap, Some("v9"))
                .reason
                .contains("the green slot runs nginx:v2 but --expect-tag is v9")
        );
        let mut partial = seen(Slot::Blue, true, DEPLOYED);
        partial.slots.green.deployments[0].state.available = 2;
        partial.slots.green.deployments[0].state.ready = 2;
        assert!(refuse(&partial, Op::Swap, None)
            .reason
            .contains("is not fully available: web-green-myapp 2/3 ready, 2 available"));
        let mut no_endpoints = seen(Slot::Blue, true, DEPLOYED);
        no_endpoints.services[1].ready_by_slot = PerSlot::default();
        assert!(refuse(&no_endpoints, Op::Swap, None)
            .reason
            .contains("no ready endpoints behind the stage Service"));
        let mut smaller = seen(Slot::Blue, true, DEPLOYED);
        smaller.slots.blue.deployments[0].state.desired = 5;
        smaller.slots.blue.deployments[0].state.updated = 5;
        smaller.slots.blue.deployments[0].state.total = 5;
        smaller.slots.blue.deployments[0].state.ready = 5;
        smaller.slots.blue.deployments[0].state.available = 5;
        assert!(refuse(&smaller, Op::Swap, None)
            .reason
            .contains("has 3 available pods but production (blue) is meant to serve with 5"));
        let mut failed = seen(Slot::Blue, true, DEPLOYED);
        failed.slots.green.helm = Some(HelmRecord {
            revision: 2,
            status: "failed".into(),
        });
        assert!(refuse(&failed, Op::Swap, None)
            .reason
            .contains("release web-green of the green slot is in state failed"));
        let mut changed = seen(Slot::Blue, true, DEPLOYED);
        changed.slots.green.helm = Some(HelmRecord {
            revision: 2,
            status: "deployed".into(),
        });
        let err = refuse(&changed, Op::Swap, None);
        assert!(
            err.reason.contains("it was changed outside bgslot") && err.hint.contains("--force"),
            "{err:?}"
        );
        assert!(decide(&changed, Op::Swap, None, true, &chart()).is_ok());
        let mut drifted = seen(Slot::Blue, true, DEPLOYED);
        drifted.services[0].selector =
            std::collections::BTreeMap::from([("app".to_string(), "x".to_string())]);
        assert!(refuse(&drifted, Op::Swap, None)
            .reason
            .contains("do not match its record"));
        assert!(
            decide(&drifted, Op::Swap, None, true, &chart())
                .unwrap()
                .write
                .force_conflicts
        );
        let mut hand = seen(Slot::Blue, true, DEPLOYED);
        hand.services[1].selector_owner = Some("kubectl-edit".into());
        assert!(refuse(&hand, Op::Swap, None)
            .reason
            .contains("Helm 4 would refuse to move the Services"));
        hand.seen.helm_major = 3;
        assert!(decide(&hand, Op::Swap, None, false, &chart()).is_ok());
        let mut pending = seen(Slot::Blue, true, DEPLOYED);
        pending
            .seen
            .history
            .push(crate::fixtures::rev(3, "pending-upgrade", "", "t"));
        assert!(refuse(&pending, Op::Swap, None)
            .reason
            .contains("pending-upgrade"));
    }

    #[test]
    fn rollback_returns_only_to_the_previous_production_and_after_clean_says_how_back() {
        assert!(
            refuse(&seen(Slot::Blue, true, DEPLOYED), Op::Rollback, None)
                .reason
                .contains("staged in revision 2, not the previous production")
        );
        let swapped = seen(
            Slot::Green,
            true,
            &[
                "bgslot install blue v1",
                "bgslot deploy green v2",
                "bgslot swap blue->green",
            ],
        );
        assert_eq!(
            decide(&swapped, Op::Rollback, None, false, &chart())
                .unwrap()
                .to,
            Slot::Blue
        );
        let mut cleaned = seen(
            Slot::Green,
            true,
            &[
                "bgslot install blue v1",
                "bgslot deploy green v2",
                "bgslot swap blue->green",
                "bgslot clean blue",
            ],
        );
        cleaned.router.slots.blue.state = RecordedState::Cleaned;
        let err = refuse(&cleaned, Op::Rollback, None);
        assert!(
            err.reason.contains(
                "the previous slot blue is gone (cleaned: release web-blue was uninstalled)"
            ),
            "{err:?}"
        );
        assert!(
            err.hint
                .contains("`bgslot deploy web --tag v1` then `bgslot swap web`"),
            "{}",
            err.hint
        );
        assert!(
            err.hint.contains("production is green running nginx:v2"),
            "{}",
            err.hint
        );
    }
}
