//! What both status reports (a release of bgslot's chart, and a router) say about the release
//! apart from its slots: the revision line they open with, and what they close with (who owns
//! the release, a stuck helm state, who holds the lock, the next command). One type each, so
//! the two reports cannot drift apart.

use std::fmt;

use serde::Serialize;

use crate::cluster::GitOpsMarks;
use crate::error::LockHeld;
use crate::observe::Observation;
use crate::rules;
use crate::vocab::Slot;

/// The release, its latest revision and the helm that reads it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Heading {
    pub release: String,
    pub namespace: String,
    /// The latest revision (a router's own, for a router).
    pub revision: u64,
    pub helm_status: String,
    pub chart: String,
    pub helm_version: String,
    pub description: String,
    pub production_slot: Slot,
    pub stage_slot: Slot,
}

impl Heading {
    pub fn of(seen: &Observation, production: Slot, helm_version: String) -> Heading {
        let latest = seen.latest();
        Heading {
            release: seen.release.to_string(),
            namespace: seen.namespace.clone(),
            revision: latest.revision,
            helm_status: latest.status.clone(),
            chart: latest.chart.clone(),
            helm_version,
            description: latest.description.clone(),
            production_slot: production,
            stage_slot: production.other(),
        }
    }
}

/// One line: `release web · namespace shop · revision 2 deployed · chart bgslot-0.3.0 · helm v4.1.4`.
impl fmt::Display for Heading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "release {} · namespace {} · revision {} {} · chart {} · helm {}",
            self.release,
            self.namespace,
            self.revision,
            self.helm_status,
            self.chart,
            self.helm_version
        )
    }
}

/// Who may change the release, whether helm left it stuck, and what to run next.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Standing {
    /// The GitOps controller that owns the release, when its marks are on the Services.
    pub owner: Option<GitOpsMarks>,
    pub problem: Option<Problem>,
    pub lock: Option<LockStatus>,
    pub next: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    pub reason: String,
    pub hint: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LockStatus {
    pub holder: String,
    pub since: String,
    pub lease: String,
}

impl Standing {
    /// A stuck helm state comes first (`recover`), then a GitOps owner (change it there), else
    /// `next` of a release that is fine.
    pub fn of(
        seen: &Observation,
        lock: Option<LockHeld>,
        next: impl FnOnce() -> String,
    ) -> Standing {
        let release = seen.release.to_string();
        let problem = rules::check_helm_state(&release, &seen.history)
            .err()
            .map(|r| Problem {
                reason: r.reason,
                hint: r.hint,
            });
        let next = match (&problem, &seen.cluster.gitops) {
            (Some(_), _) => format!("bgslot recover {release}"),
            (None, Some(marks)) => rules::gitops_instead(&release, marks).1,
            (None, None) => next(),
        };
        Standing {
            owner: seen.cluster.gitops.clone(),
            problem,
            lock: lock.map(|l| LockStatus {
                holder: l.holder,
                since: l.since,
                lease: l.lease,
            }),
            next,
        }
    }
}

impl fmt::Display for Standing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(owner) = &self.owner {
            writeln!(
                f,
                "\n  owner: {} (change the release there, not with bgslot)",
                owner.owner()
            )?;
        }
        if let Some(problem) = &self.problem {
            writeln!(f, "\n  problem: {}\n  {}", problem.reason, problem.hint)?;
        }
        if let Some(lock) = &self.lock {
            writeln!(
                f,
                "\n  lock: {} is running on it (since {})",
                lock.holder, lock.since
            )?;
        }
        writeln!(f, "\nnext: {}", self.next)
    }
}
