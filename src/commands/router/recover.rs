//! `bgslot recover` of a router: the router release and each slot release left in a pending or
//! failed helm state go back to their last deployed revision (`helm rollback`), unless a helm may
//! still be working on them. A slot release that was never deployed and that the router does not
//! route to (a first deploy of it killed mid-install) is uninstalled instead, keeping its history.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;

use super::MODE;
use crate::commands::preview::{Plan, PlannedStep};
use crate::commands::{Header, Outcome, Session};
use crate::error::Refusal;
use crate::helm::Revision;
use crate::observe::{History, Observation};
use crate::router::{slot_release, RouterSeen, RouterValues};
use crate::rules;
use crate::vocab::{Op, Slot};

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

/// The fix of one release; `None` when it is not stuck. A young pending revision may belong to a
/// helm that is still running, so it is left alone unless forced. `routed`: the router routes to
/// this release (then one never deployed cannot just go).
pub fn decide(
    router: &str,
    release: &str,
    history: &[Revision],
    now: Timestamp,
    min_age: Duration,
    force: bool,
    routed: bool,
) -> Result<Option<Fix>, Refusal> {
    let Some(latest) = rules::stuck_revision(
        release,
        history,
        now,
        min_age,
        force,
        &format!("bgslot recover {router}"),
    )?
    else {
        return Ok(None);
    };
    match rules::last_good(history) {
        Some(good) => Ok(Some(Fix::Rollback {
            release: release.to_string(),
            from: latest,
            to: good.clone(),
        })),
        None if !routed => Ok(Some(Fix::Uninstall {
            release: release.to_string(),
            from: latest,
        })),
        None => Err(Refusal::new(
            format!(
                "release {release} was never deployed (revision {} is {}), yet the router routes to it",
                latest.revision, latest.status
            ),
            "check `bgslot status`; deploy the slot again with `bgslot deploy RELEASE --tag TAG --replace`".to_string(),
        )),
    }
}

/// Runs the router variant of `recover` when the release is a router (its user values say so:
/// bgslot writes `router.enabled` there).
pub async fn dispatch(
    s: &Session<'_>,
    min_age: Duration,
    force: bool,
) -> Result<Option<Outcome<Report>>> {
    let (ctx, release) = (s.ctx, s.release);
    // Read as every command reads a release: from helm's storage, helm only as the fallback.
    let Some(latest) = ctx.records.latest(release).await? else {
        return Ok(None);
    };
    let user = latest.user_values;
    if user.pointer("/router/enabled") != Some(&Value::Bool(true)) {
        return Ok(None);
    }
    if let Some(marks) = ctx
        .cluster
        .services(release)
        .await?
        .gitops
        .filter(|_| !force)
    {
        let (reason, hint) = rules::gitops_instead(release, &marks);
        return Err(Refusal::new(reason, hint).into());
    }
    let routes = |slot: Slot| {
        user.pointer(&format!("/router/slots/{slot}/state")) == Some(&Value::from("deployed"))
    };
    let names = [
        (release.to_string(), true),
        (slot_release(release, Slot::Blue), routes(Slot::Blue)),
        (slot_release(release, Slot::Green), routes(Slot::Green)),
    ];
    let (h0, h1, h2) = tokio::try_join!(
        ctx.records.history(&names[0].0),
        ctx.records.history(&names[1].0),
        ctx.records.history(&names[2].0)
    )?;
    let now = Timestamp::now();
    let mut fixes = Vec::new();
    for ((name, routed), history) in names.iter().zip([h0, h1, h2]) {
        if let Some(history) = history.filter(|h| !h.is_empty()) {
            fixes.extend(decide(
                release, name, &history, now, min_age, force, *routed,
            )?);
        }
    }
    let production = user
        .get("productionSlot")
        .and_then(Value::as_str)
        .and_then(Slot::parse);
    let header = |revision: u64| {
        let h = Header::new(Op::Recover, release, &ctx.namespace).revision(revision);
        match production {
            Some(p) => h.production(p),
            None => h,
        }
        .next(format!("bgslot status {release}"))
    };
    if fixes.is_empty() {
        return Ok(Some(Outcome::Done(Report {
            header: header(latest.revision.revision),
            mode: MODE,
            changed: false,
            status: latest.revision.status.clone(),
            recovered: Vec::new(),
            production_ready: None,
            production_desired: None,
        })));
    }
    if s.dry_run {
        let mut plan = Plan {
            header: header(latest.revision.revision),
            ..Plan::new(Op::Recover, release, &ctx.namespace)
        };
        plan.header.next = None;
        for fix in &fixes {
            plan = plan.step(match fix {
                Fix::Rollback { release, from, to } => PlannedStep {
                    action: format!("roll {release} back from revision {} ({}) to revision {}", from.revision, from.status, to.revision),
                    helm: ctx.helm.rollback_command_line(release, to.revision),
                    changes: Vec::new(),
                    effects: Vec::new(),
                    then: Vec::new(),
                },
                Fix::Uninstall { release, from } => PlannedStep {
                    action: format!("uninstall {release} (revision {} is {}, it never deployed and nothing routes to it)", from.revision, from.status),
                    helm: ctx.helm.uninstall_command_line(release, UNINSTALLED, ctx.timeout()),
                    changes: Vec::new(),
                    effects: Vec::new(),
                    then: Vec::new(),
                },
            });
        }
        return Ok(Some(Outcome::Planned(plan)));
    }
    let mut recovered = Vec::new();
    for fix in &fixes {
        let from = fix.from();
        match fix {
            Fix::Rollback { release, to, .. } => {
                ctx.events.step(&format!(
                    "recover {release}: revision {} is {}; rolling back to revision {}",
                    from.revision, from.status, to.revision
                ));
                ctx.rollback(release, to.revision).await.with_context(|| {
                    format!("rolling {release} back to revision {}", to.revision)
                })?;
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
    let after = Observation::existing(ctx, release, History::Latest).await?;
    let (ready, desired) = match RouterValues::of(release, &after.all_values)? {
        Some(router) => {
            let rs = RouterSeen::read(ctx, after.clone(), router).await?;
            let p = rs.production();
            let t = rs.live(p).totals(rs.record(p));
            (Some(t.ready), Some(t.desired))
        }
        None => (None, None),
    };
    Ok(Some(Outcome::Done(Report {
        header: Header::of(Op::Recover, &after).next(format!("bgslot status {release}")),
        mode: MODE,
        changed: true,
        status: after.latest().status.clone(),
        recovered,
        production_ready: ready,
        production_desired: desired,
    })))
}

/// The description of a slot release uninstalled by recover.
const UNINSTALLED: &str = "bgslot recover: never deployed";

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

/// What a router recover reports.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    #[serde(flatten)]
    pub header: Header,
    pub mode: &'static str,
    pub changed: bool,
    /// The router's latest revision's status now.
    pub status: String,
    pub recovered: Vec<Recovered>,
    pub production_ready: Option<i32>,
    pub production_desired: Option<i32>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        if !self.changed {
            return writeln!(
                f,
                "{}: nothing to recover: the router (revision {} {}) and its slot releases are settled",
                h.release,
                h.revision.unwrap_or_default(),
                self.status
            );
        }
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
        if let (Some(p), Some(ready), Some(desired)) = (
            h.production_slot,
            self.production_ready,
            self.production_desired,
        ) {
            writeln!(f, "  production {p} {ready}/{desired} ready")?;
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

    #[test]
    fn each_stuck_release_goes_back_to_its_last_deployed_revision_or_away() {
        let min = Duration::from_secs(60);
        let settled = [rev(1, "deployed", "", "2026-01-01T00:00:00Z")];
        assert_eq!(
            decide(
                "web",
                "web",
                &settled,
                at("2026-01-01T00:05:00Z"),
                min,
                false,
                true
            ),
            Ok(None)
        );
        let stuck = [
            rev(1, "superseded", "", "2026-01-01T00:00:00Z"),
            rev(2, "deployed", "", "2026-01-01T00:01:00Z"),
            rev(
                3,
                "pending-upgrade",
                "bgslot deploy green v3",
                "2026-01-01T00:02:00Z",
            ),
        ];
        let err = decide(
            "web",
            "web-green",
            &stuck,
            at("2026-01-01T00:02:10Z"),
            min,
            false,
            true,
        )
        .unwrap_err();
        assert!(err.reason.contains("only 10s ago"), "{err:?}");
        // The override is a recover of the router, which recovers its slot releases.
        assert!(err.hint.contains("`bgslot recover web --force`"), "{err:?}");
        match decide(
            "web",
            "web-green",
            &stuck,
            at("2026-01-01T00:05:00Z"),
            min,
            false,
            true,
        )
        .unwrap()
        {
            Some(Fix::Rollback { to, .. }) => assert_eq!(to.revision, 2),
            other => panic!("{other:?}"),
        }
        let killed_install = [rev(
            1,
            "pending-install",
            "bgslot deploy green v2",
            "2026-01-01T00:00:00Z",
        )];
        assert!(matches!(
            decide(
                "web",
                "web-green",
                &killed_install,
                at("2026-01-01T00:05:00Z"),
                min,
                false,
                false
            ),
            Ok(Some(Fix::Uninstall { .. }))
        ));
        let err = decide(
            "web",
            "web-green",
            &killed_install,
            at("2026-01-01T00:05:00Z"),
            min,
            false,
            true,
        )
        .unwrap_err();
        assert!(err.reason.contains("never deployed"), "{err:?}");
    }
}
