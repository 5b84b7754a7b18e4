//! `bgslot recover RELEASE`: returns a release stuck in a pending or failed helm state to its last
//! deployed revision, unless a helm may still be working on it.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use super::preview::{Plan, PlannedStep};
use super::router::{self, Mode};
use super::{mutate, Mutating, Header, Invocation, Outcome, Session};
use crate::context::Ctx;
use crate::duration::parse_duration;
use crate::error::Refusal;
use crate::helm::Revision;
use crate::names::ReleaseName;
use crate::observe::{not_found, History, Observation};
use crate::rules;
use crate::vocab::Op;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Mutating,
    /// A pending revision younger than this may still be worked on by a running helm: refused
    #[arg(long, value_parser = parse_duration, default_value = "60s", value_name = "DURATION")]
    pub min_age: Duration,
    /// Recover even a pending revision younger than --min-age, or a release a GitOps controller owns
    #[arg(long)]
    pub force: bool,
}

impl Args {
    pub async fn run(&self, run: &Invocation<'_>) -> Result<()> {
        let mutation = self.target.mutation(Op::Recover);
        mutate(run, mutation, async |s: &Session<'_>| execute(s, self).await).await
    }
}

async fn execute(s: &Session<'_>, args: &Args) -> Result<Outcome<Mode<RecoverReport, router::recover::Report>>> {
    if let Some(routed) = router::recover::dispatch(s, args.min_age, args.force).await? {
        return Ok(router::routed(routed));
    }
    let (ctx, release) = (s.ctx, s.release);
    // The history decides (the values of a stuck revision are what is in doubt); the Services
    // say whether a GitOps controller owns the release.
    let (history, services) = tokio::join!(ctx.records.history(release), ctx.cluster.services(release));
    let history = history?
        .filter(|h| !h.is_empty())
        .ok_or_else(|| not_found(release, &ctx.namespace))?;
    if let Some(marks) = services?.gitops.filter(|_| !args.force) {
        let (reason, hint) = rules::gitops_instead(release, &marks);
        return Err(Refusal::new(reason, hint).into());
    }
    let latest = history.last().expect("not empty").clone();
    let plan = decide(release, &history, Timestamp::now(), args.min_age, args.force)?;
    let Some(plan) = plan else {
        return Ok(Outcome::Done(Mode::Bundled(RecoverReport::unchanged(ctx, release, &latest))));
    };
    if s.dry_run {
        let out = Plan {
            header: Header::new(Op::Recover, release, &ctx.namespace).revision(latest.revision),
            ..Plan::new(Op::Recover, release, &ctx.namespace)
        };
        return Ok(Outcome::Planned(out.step(
            PlannedStep::action(format!(
                "roll back from revision {} ({}) to revision {}",
                plan.from.revision, plan.from.status, plan.to.revision
            ))
            .write(ctx.helm.rollback_command_line(release, plan.to.revision), Vec::new()),
        )));
    }
    act(ctx, release, plan).await.map(|r| Outcome::Done(Mode::Bundled(r)))
}

/// What `recover` does: roll back from `from` to the last good revision `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverPlan {
    pub from: Revision,
    pub to: Revision,
}

/// Plans the return of a stuck release to its last deployed revision; `None` when nothing is
/// stuck. A young pending revision may belong to a helm that is still running, so it is left
/// alone unless forced.
pub fn decide(
    release: &str,
    history: &[Revision],
    now: Timestamp,
    min_age: Duration,
    force: bool,
) -> Result<Option<RecoverPlan>, Refusal> {
    let Some(latest) = rules::stuck_revision(
        release,
        history,
        now,
        min_age,
        force,
        &format!("bgslot recover {release}"),
    )?
    else {
        return Ok(None);
    };
    let Some(good) = rules::last_good(history) else {
        return Err(Refusal::new(
            format!(
                "release {release} was never deployed (revision {} is {}); there is no revision to return to",
                latest.revision, latest.status
            ),
            format!("remove it with `helm uninstall {release}` and deploy again"),
        ));
    };
    Ok(Some(RecoverPlan {
        from: latest,
        to: good.clone(),
    }))
}

async fn act(ctx: &Ctx, release: &ReleaseName, plan: RecoverPlan) -> Result<RecoverReport> {
    let (from, good) = (&plan.from, &plan.to);
    ctx.events.step(&format!(
        "recover {release}: revision {} is {}; rolling back to revision {}",
        from.revision, from.status, good.revision
    ));
    ctx.rollback(release, good.revision)
        .await
        .with_context(|| format!("rolling {release} back to revision {}", good.revision))?;
    let after = Observation::existing(ctx, release, History::Latest).await?;
    let live = after.cluster.slot(after.values.production);
    Ok(RecoverReport {
        header: Header::of(Op::Recover, &after).next(format!("bgslot status {release}")),
        changed: true,
        status: after.latest().status.clone(),
        from_revision: Some(from.revision),
        to_revision: Some(good.revision),
        production_ready: Some(live.ready),
        production_desired: Some(live.desired),
    })
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RecoverReport {
    /// The latest revision now; the slots are `null` when nothing was recovered.
    #[serde(flatten)]
    pub header: Header,
    pub changed: bool,
    /// The status of the latest revision now.
    pub status: String,
    pub from_revision: Option<u64>,
    pub to_revision: Option<u64>,
    pub production_ready: Option<i32>,
    pub production_desired: Option<i32>,
}

impl RecoverReport {
    fn unchanged(ctx: &Ctx, release: &ReleaseName, latest: &Revision) -> RecoverReport {
        RecoverReport {
            header: Header::new(Op::Recover, release, &ctx.namespace)
                .revision(latest.revision)
                .next(format!("bgslot status {release}")),
            changed: false,
            status: latest.status.clone(),
            from_revision: None,
            to_revision: None,
            production_ready: None,
            production_desired: None,
        }
    }
}

impl fmt::Display for RecoverReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        let revision = h.revision.unwrap_or_default();
        let (Some(to), Some(production)) = (self.to_revision, h.production_slot) else {
            return writeln!(f, "{}: nothing to recover: revision {revision} is {}", h.release, self.status);
        };
        writeln!(
            f,
            "{}: recovered: revision {revision} ({}) restores revision {to}; production {production} {}/{} ready",
            h.release,
            self.status,
            self.production_ready.unwrap_or(0),
            self.production_desired.unwrap_or(0)
        )?;
        writeln!(f, "\nnext: {}", h.next_step())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::rev;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn recover_returns_to_the_last_good_revision_once_helm_is_surely_gone() {
        let history = [
            rev(1, "superseded", "", "2026-01-01T00:00:00Z"),
            rev(2, "deployed", "", "2026-01-01T00:01:00Z"),
            rev(3, "pending-upgrade", "", "2026-01-01T00:02:00Z"),
        ];
        let min = Duration::from_secs(60);
        let err = decide("web", &history, at("2026-01-01T00:02:10Z"), min, false).unwrap_err();
        assert!(
            err.reason.contains("only 10s ago") && err.hint.contains("--force"),
            "{err:?}"
        );
        let plan = decide("web", &history, at("2026-01-01T00:02:10Z"), min, true)
            .unwrap()
            .unwrap();
        assert_eq!((plan.from.revision, plan.to.revision), (3, 2));
        let plan = decide("web", &history, at("2026-01-01T00:05:00Z"), min, false)
            .unwrap()
            .unwrap();
        assert_eq!(plan.to.revision, 2);
        assert_eq!(
            decide("web", &history[..2], at("2026-01-01T00:05:00Z"), min, false).unwrap(),
            None
        );
    }

    #[test]
    fn a_failed_revision_has_no_helm_behind_it() {
        let failed = [
            rev(1, "deployed", "", "2026-01-01T00:00:00Z"),
            rev(2, "failed", "", "2026-01-01T00:02:00Z"),
        ];
        let min = Duration::from_secs(60);
        assert!(decide("web", &failed, at("2026-01-01T00:02:01Z"), min, false)
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_release_never_deployed_has_nothing_to_return_to() {
        let never = [rev(1, "failed", "", "2026-01-01T00:00:00Z")];
        let err = decide("web", &never, at("2026-01-01T00:05:00Z"), Duration::from_secs(60), false)
            .unwrap_err();
        assert!(err.hint.contains("helm uninstall web"), "{err:?}");
    }
}
