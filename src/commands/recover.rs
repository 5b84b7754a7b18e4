//! `bgslot recover RELEASE`: returns a release stuck in a pending or failed helm state to its last
//! deployed revision, unless a helm may still be working on it. For a router, the same for each
//! of its slot releases; one that never deployed and that nothing routes to (a first install
//! killed or failed) is uninstalled instead, keeping its history.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use super::preview::{Plan, PlannedStep};
use super::{mutate, Header, Invocation, Mutating, Outcome, Session};
use crate::cluster::labels::slot_pods_selector;
use crate::cluster::PodSlots;
use crate::context::Ctx;
use crate::duration::parse_duration;
use crate::error::Refusal;
use crate::helm::Revision;
use crate::observe::{not_found, History};
use crate::rules;
use crate::slots::follow::Settle;
use crate::slots::{self, SlotKind};
use crate::vocab::{Mode, Op, Slot};
use crate::{with_kind, with_mode};

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
    #[command(flatten)]
    pub targets: super::Targets,
}

impl Args {
    pub async fn run(&self, run: &Invocation<'_>) -> Result<()> {
        let mutation = self.target.mutation(Op::Recover);
        mutate(run, mutation, async |s: &Session<'_>| execute(s, self).await).await
    }
}

/// The description of a slot release uninstalled by recover.
const UNINSTALLED: &str = "bgslot recover: never deployed";

pub async fn execute(s: &Session<'_>, args: &Args) -> Result<Outcome<RecoverReport>> {
    let (ctx, release) = (s.ctx, s.release);
    // Read as every command reads a release, from helm's storage; but decided on the history
    // alone (the values of a stuck revision are what is in doubt), whose kind its user values
    // say (bgslot writes `router.enabled` there). The Services say whether a GitOps controller
    // owns it.
    let pods = PodSlots::Labelled(slot_pods_selector(release));
    let (latest, services) = tokio::join!(
        ctx.records.latest(release),
        ctx.cluster.services(release, &pods)
    );
    let latest = latest?.ok_or_else(|| not_found(release, &ctx.namespace))?;
    if let Some(marks) = services?.gitops.filter(|_| !args.force) {
        let (reason, hint) = rules::gitops_instead(release, &marks);
        return Err(Refusal::new(reason, hint).into());
    }
    let user = &latest.user_values;
    let mode = slots::mode_of_user_values(user);
    let parts = with_mode!(mode, Kind => Kind::releases(release, user));
    let histories =
        futures::future::try_join_all(parts.iter().map(|(name, _)| ctx.records.history(name)))
            .await?;
    let now = Timestamp::now();
    let mut fixes = Vec::new();
    for (i, ((name, routed), history)) in parts.iter().zip(histories).enumerate() {
        let Some(history) = history.filter(|h| !h.is_empty()) else {
            continue;
        };
        let part = if i == 0 { Part::Itself } else { Part::Slot { routed: *routed } };
        fixes.extend(decide(release, name, part, &history, now, args.min_age, args.force)?);
    }
    let production = user
        .get("productionSlot")
        .and_then(serde_json::Value::as_str)
        .and_then(Slot::parse);
    let header = |revision: u64| {
        let h = Header::new(Op::Recover, release, &ctx.namespace).revision(revision);
        match production {
            Some(p) => h.production(p),
            None => h,
        }
        .next(format!("bgslot status {release}"))
    };
    // Workers and CronJobs bgslot moves through the API (a router's): a swap interrupted after
    // its write leaves them where the record does not say. Read as the router stands now; settled
    // after the helm fixes, which may change what it records.
    let unsettled = match mode {
        Mode::Router => {
            let read = slots::existing(ctx, release, History::Latest).await?;
            with_kind!(&read, seen => slots::follow::unsettled(seen))
        }
        Mode::Bundled => Vec::new(),
    };
    if fixes.is_empty() && unsettled.is_empty() {
        return Ok(Outcome::Done(RecoverReport {
            header: header(latest.revision.revision),
            mode,
            changed: false,
            status: latest.revision.status.clone(),
            from_revision: None,
            to_revision: None,
            recovered: Vec::new(),
            settled: Vec::new(),
            production_ready: None,
            production_desired: None,
        }));
    }
    if s.dry_run {
        let mut plan = Plan {
            header: header(latest.revision.revision),
            ..Plan::new(Op::Recover, release, &ctx.namespace)
        };
        plan.header.next = None;
        plan.steps = fixes.iter().map(|fix| planned(ctx, fix)).collect();
        plan.steps.extend(unsettled.iter().map(|settle| PlannedStep::action(format!("settle: {}", settle.action()))));
        return Ok(Outcome::Planned(plan));
    }
    let recovered = act(ctx, &fixes).await?;
    let mut read = slots::existing(ctx, release, History::Latest).await?;
    let settled = with_kind!(&read, seen => slots::follow::unsettled(seen));
    for settle in &settled {
        ctx.events.step(&format!("recover {release}: {}", settle.action()));
        match settle {
            Settle::Scale { deployment, to, .. } => ctx.scale(deployment, *to).await?,
            Settle::Suspend { cron_job, suspend, .. } => ctx.suspend(cron_job, *suspend).await?,
        }
    }
    if !settled.is_empty() {
        read = slots::existing(ctx, release, History::Latest).await?;
    }
    let (after, totals) = with_kind!(&read, seen => (&seen.release, seen.slot(seen.production()).totals));
    let own = recovered.iter().find(|r| *r.release == **release);
    Ok(Outcome::Done(RecoverReport {
        header: Header::of(Op::Recover, after).next(format!("bgslot status {release}")),
        mode,
        changed: true,
        status: after.latest().status.clone(),
        from_revision: own.map(|r| r.from_revision),
        to_revision: own.and_then(|r| r.to_revision),
        recovered,
        settled,
        production_ready: Some(totals.ready),
        production_desired: Some(totals.desired),
    }))
}

/// What a release is to the one `recover` was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The release itself.
    Itself,
    /// One of a router's slot releases; `routed`: the router routes to it.
    Slot { routed: bool },
}

/// What brings one stuck release back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    /// `helm rollback RELEASE REVISION` to its last deployed revision.
    Rollback {
        release: String,
        from: Revision,
        to: Revision,
    },
    /// `helm uninstall RELEASE --keep-history`: it never deployed, and nothing routes to it.
    Uninstall { release: String, from: Revision },
}

impl Fix {
    fn release(&self) -> &str {
        match self {
            Fix::Rollback { release, .. } | Fix::Uninstall { release, .. } => release,
        }
    }

    fn from(&self) -> &Revision {
        match self {
            Fix::Rollback { from, .. } | Fix::Uninstall { from, .. } => from,
        }
    }
}

/// The fix of `release`, a part of what `recover {asked}` recovers; `None` when it is not stuck. A
/// young pending revision may belong to a helm that is still running, so it is left alone unless
/// forced.
pub fn decide(
    asked: &str,
    release: &str,
    part: Part,
    history: &[Revision],
    now: Timestamp,
    min_age: Duration,
    force: bool,
) -> Result<Option<Fix>, Refusal> {
    let Some(latest) = rules::stuck_revision(
        release,
        history,
        now,
        min_age,
        force,
        &format!("bgslot recover {asked}"),
    )?
    else {
        return Ok(None);
    };
    match (rules::last_good(history), part) {
        (Some(good), _) => Ok(Some(Fix::Rollback {
            release: release.to_string(),
            from: latest,
            to: good.clone(),
        })),
        (None, Part::Slot { routed: false }) => Ok(Some(Fix::Uninstall {
            release: release.to_string(),
            from: latest,
        })),
        (None, Part::Slot { routed: true }) => Err(Refusal::new(
            format!(
                "release {release} was never deployed (revision {} is {}), yet the router routes to it",
                latest.revision, latest.status
            ),
            format!("check `bgslot status {asked}`; deploy the slot again with `bgslot deploy {asked} --tag TAG --replace`"),
        )),
        (None, Part::Itself) => Err(Refusal::new(
            format!(
                "release {release} was never deployed (revision {} is {}); there is no revision to return to",
                latest.revision, latest.status
            ),
            format!("remove it with `helm uninstall {release}` and deploy again"),
        )),
    }
}

/// What the dry run shows of a fix.
fn planned(ctx: &Ctx, fix: &Fix) -> PlannedStep {
    match fix {
        Fix::Rollback { release, from, to } => PlannedStep::action(format!(
            "roll {release} back from revision {} ({}) to revision {}",
            from.revision, from.status, to.revision
        ))
        .write(ctx.helm.rollback_command_line(release, to.revision), Vec::new()),
        Fix::Uninstall { release, from } => PlannedStep::action(format!(
            "uninstall {release} (revision {} is {}, it never deployed and nothing routes to it)",
            from.revision, from.status
        ))
        .write(
            ctx.helm.uninstall_command_line(release, UNINSTALLED, ctx.timeout()),
            Vec::new(),
        ),
    }
}

/// Makes each fix, in order.
async fn act(ctx: &Ctx, fixes: &[Fix]) -> Result<Vec<Recovered>> {
    let mut recovered = Vec::new();
    for fix in fixes {
        let from = fix.from();
        match fix {
            Fix::Rollback { release, to, .. } => {
                ctx.events.step(&format!(
                    "recover {release}: revision {} is {}; rolling back to revision {}",
                    from.revision, from.status, to.revision
                ));
                ctx.rollback(release, to.revision)
                    .await
                    .with_context(|| format!("rolling {release} back to revision {}", to.revision))?;
            }
            Fix::Uninstall { release, .. } => {
                ctx.events.step(&format!(
                    "recover {release}: revision {} is {} and it never deployed; uninstalling it",
                    from.revision, from.status
                ));
                ctx.uninstall(release, UNINSTALLED)
                    .await
                    .with_context(|| format!("uninstalling {release}"))?;
            }
        }
        recovered.push(Recovered {
            release: fix.release().to_string(),
            status: from.status.clone(),
            from_revision: from.revision,
            action: match fix {
                Fix::Rollback { .. } => "rollback",
                Fix::Uninstall { .. } => "uninstall",
            },
            to_revision: match fix {
                Fix::Rollback { to, .. } => Some(to.revision),
                Fix::Uninstall { .. } => None,
            },
        });
    }
    Ok(recovered)
}

/// One release recover brought back.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Recovered {
    pub release: String,
    /// Its state before.
    pub status: String,
    pub from_revision: u64,
    /// `rollback` or `uninstall`.
    pub action: &'static str,
    /// The revision a rollback restored (`null` for an uninstall).
    pub to_revision: Option<u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RecoverReport {
    /// The latest revision now; the slots are `null` when nothing was recovered.
    #[serde(flatten)]
    pub header: Header,
    pub mode: Mode,
    pub changed: bool,
    /// The status of the release's latest revision now.
    pub status: String,
    /// The release's own revision that was stuck, and the one that restored it.
    pub from_revision: Option<u64>,
    pub to_revision: Option<u64>,
    /// Every release brought back (a router's slot releases too).
    pub recovered: Vec<Recovered>,
    /// Each worker or CronJob of a router moved where its record says (a swap that did not
    /// finish moving them).
    pub settled: Vec<Settle>,
    pub production_ready: Option<i32>,
    pub production_desired: Option<i32>,
}

impl fmt::Display for RecoverReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        let revision = h.revision.unwrap_or_default();
        if !self.changed {
            return match self.mode {
                Mode::Bundled => writeln!(f, "{}: nothing to recover: revision {revision} is {}", h.release, self.status),
                Mode::Router => writeln!(
                    f,
                    "{}: nothing to recover: the router (revision {revision} {}) and its slot releases are settled",
                    h.release, self.status
                ),
            };
        }
        let production = match (h.production_slot, self.production_ready, self.production_desired) {
            (Some(p), Some(ready), Some(desired)) => Some(format!("production {p} {ready}/{desired} ready")),
            _ => None,
        };
        match (self.mode, self.to_revision, &production) {
            (Mode::Bundled, Some(to), Some(production)) => writeln!(
                f,
                "{}: recovered: revision {revision} ({}) restores revision {to}; {production}",
                h.release, self.status
            )?,
            _ => {
                for r in &self.recovered {
                    match r.to_revision {
                        Some(to) => writeln!(
                            f,
                            "{}: recovered {}: revision {} ({}) rolled back to revision {to}",
                            h.release, r.release, r.from_revision, r.status
                        )?,
                        None => writeln!(
                            f,
                            "{}: recovered {}: revision {} ({}) never deployed; uninstalled, history kept",
                            h.release, r.release, r.from_revision, r.status
                        )?,
                    }
                }
                for settle in &self.settled {
                    writeln!(f, "{}: settled: {}", h.release, settle.action())?;
                }
                if let Some(production) = production {
                    writeln!(f, "  {production}")?;
                }
            }
        }
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

    fn own(history: &[Revision], now: &str, force: bool) -> Result<Option<Fix>, Refusal> {
        decide("web", "web", Part::Itself, history, at(now), Duration::from_secs(60), force)
    }

    #[test]
    fn recover_returns_to_the_last_good_revision_once_helm_is_surely_gone() {
        let history = [
            rev(1, "superseded", "", "2026-01-01T00:00:00Z"),
            rev(2, "deployed", "", "2026-01-01T00:01:00Z"),
            rev(3, "pending-upgrade", "", "2026-01-01T00:02:00Z"),
        ];
        let err = own(&history, "2026-01-01T00:02:10Z", false).unwrap_err();
        assert!(err.reason.contains("only 10s ago") && err.hint.contains("--force"), "{err:?}");
        let Some(Fix::Rollback { from, to, .. }) = own(&history, "2026-01-01T00:02:10Z", true).unwrap() else {
            panic!("a forced recover rolls back");
        };
        assert_eq!((from.revision, to.revision), (3, 2));
        assert!(matches!(own(&history, "2026-01-01T00:05:00Z", false), Ok(Some(Fix::Rollback { .. }))));
        assert_eq!(own(&history[..2], "2026-01-01T00:05:00Z", false), Ok(None));
    }

    #[test]
    fn a_failed_revision_has_no_helm_behind_it() {
        let failed = [
            rev(1, "deployed", "", "2026-01-01T00:00:00Z"),
            rev(2, "failed", "", "2026-01-01T00:02:00Z"),
        ];
        assert!(own(&failed, "2026-01-01T00:02:01Z", false).unwrap().is_some());
    }

    #[test]
    fn a_release_never_deployed_has_nothing_to_return_to() {
        let never = [rev(1, "failed", "", "2026-01-01T00:00:00Z")];
        let err = own(&never, "2026-01-01T00:05:00Z", false).unwrap_err();
        assert!(err.hint.contains("helm uninstall web"), "{err:?}");
    }

    #[test]
    fn a_slot_release_goes_back_to_its_last_deployed_revision_or_away() {
        let min = Duration::from_secs(60);
        let slot = |routed| Part::Slot { routed };
        let stuck = [
            rev(1, "superseded", "", "2026-01-01T00:00:00Z"),
            rev(2, "deployed", "", "2026-01-01T00:01:00Z"),
            rev(3, "pending-upgrade", "bgslot deploy green v3", "2026-01-01T00:02:00Z"),
        ];
        let err = decide("web", "web-green", slot(true), &stuck, at("2026-01-01T00:02:10Z"), min, false).unwrap_err();
        assert!(err.reason.contains("only 10s ago"), "{err:?}");
        // The override is a recover of the router, which recovers its slot releases.
        assert!(err.hint.contains("`bgslot recover web --force`"), "{err:?}");
        match decide("web", "web-green", slot(true), &stuck, at("2026-01-01T00:05:00Z"), min, false).unwrap() {
            Some(Fix::Rollback { to, .. }) => assert_eq!(to.revision, 2),
            other => panic!("{other:?}"),
        }
        let killed_install = [rev(1, "pending-install", "bgslot deploy green v2", "2026-01-01T00:00:00Z")];
        assert!(matches!(
            decide("web", "web-green", slot(false), &killed_install, at("2026-01-01T00:05:00Z"), min, false),
            Ok(Some(Fix::Uninstall { .. }))
        ));
        let err = decide("web", "web-green", slot(true), &killed_install, at("2026-01-01T00:05:00Z"), min, false).unwrap_err();
        assert!(err.reason.contains("never deployed"), "{err:?}");
    }
}
