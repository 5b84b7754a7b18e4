//! Rules several commands share, whatever kind of slot a release has: helm's own failure states,
//! GitOps owners, drift, and what the helm history says about production. Everything here is
//! pure, so each rule is unit-tested without a cluster; a command's own decision lives in its
//! module under `commands/`, a kind's description of its slots under `slots/`.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::cluster::{GitOpsMarks, Observed};
use crate::error::Refusal;
use crate::helm::Revision;
use crate::record::Recorded;
use crate::vocab::Slot;

/// Refuses to act on a release whose latest helm revision is not settled.
pub fn check_helm_state(release: &str, history: &[Revision]) -> Result<(), Refusal> {
    let Some(latest) = history.last() else {
        return Ok(());
    };
    let status = latest.status.as_str();
    let recover = match last_good(history) {
        Some(good) => format!(
            "if no helm or bgslot command is still running on it, run `bgslot recover {release}` to return to revision {} (what `helm rollback {release} {}` does)",
            good.revision, good.revision
        ),
        None => format!("the release was never deployed; remove it with `helm uninstall {release}` and deploy again"),
    };
    if let Some(op) = status.strip_prefix("pending-") {
        return Err(Refusal::new(
            format!(
                "release {release} is in state {status} (revision {}, {}): a helm {op} started and has not finished, or was killed",
                latest.revision, latest.updated
            ),
            recover,
        ));
    }
    if status == "failed" {
        return Err(Refusal::new(
            format!(
                "release {release} is in state failed (revision {}: {}): its values may not match what runs",
                latest.revision,
                if latest.description.is_empty() { "no description" } else { &latest.description }
            ),
            recover,
        ));
    }
    Ok(())
}

/// The revision a recovery starts from: the latest, when helm left it pending or failed (`None`:
/// nothing to recover). A pending revision younger than `min_age` may belong to a helm still
/// working on it, so it is refused unless `force`; `recover` is the command that overrides it.
pub fn stuck_revision(
    release: &str,
    history: &[Revision],
    now: Timestamp,
    min_age: Duration,
    force: bool,
    recover: &str,
) -> Result<Option<Revision>, Refusal> {
    if check_helm_state(release, history).is_ok() {
        return Ok(None);
    }
    let Some(latest) = history.last() else {
        return Ok(None);
    };
    let age = latest
        .updated_at()
        .map(|t| now.duration_since(t).unsigned_abs());
    match age {
        Some(age) if latest.status.starts_with("pending-") && !force && age < min_age => {
            Err(Refusal::new(
                format!(
                    "revision {} of {release} became {} only {}s ago: a helm may still be working on it",
                    latest.revision,
                    latest.status,
                    age.as_secs()
                ),
                format!(
                    "wait for that helm to finish, or if you know it is gone, run `{recover} --force`"
                ),
            ))
        }
        _ => Ok(Some(latest.clone())),
    }
}

/// The newest revision that was deployed successfully.
pub fn last_good(history: &[Revision]) -> Option<&Revision> {
    history.iter().rev().find(|r| r.is_settled())
}

/// What to do instead of changing a release a GitOps controller owns (its Git source wins).
pub fn gitops_instead(release: &str, marks: &GitOpsMarks) -> (String, String) {
    match marks {
        GitOpsMarks::Flux { namespace, name } => (
            format!(
                "release {release} is managed by Flux (HelmRelease {namespace}/{name}): its helm-controller would undo this change at its next reconcile"
            ),
            format!(
                "change productionSlot or the slot's values in the HelmRelease's spec.values (in Git) and let Flux apply it; \
                 --force changes it anyway (suspend it first: `flux suspend helmrelease {name} -n {namespace}`)"
            ),
        ),
        GitOpsMarks::ArgoCd { application } => (
            format!(
                "release {release} is managed by Argo CD (Application {application}): it would undo this change at its next sync"
            ),
            format!(
                "change productionSlot or the slot's values in the Application's helm values (in Git) and let Argo CD sync it; \
                 --force changes it anyway (turn off auto-sync of {application} first)"
            ),
        ),
    }
}

/// Refuses to change a release a GitOps controller owns, unless forced.
pub fn check_gitops(release: &str, observed: &Observed, force: bool) -> Result<(), Refusal> {
    match &observed.gitops {
        Some(marks) if !force => {
            let (reason, hint) = gitops_instead(release, marks);
            Err(Refusal::new(reason, hint))
        }
        _ => Ok(()),
    }
}

/// Refuses a write over drift unless forced: a write would put the Services back as bgslot wrote
/// them (Helm 3 merges them back silently; Helm 4 conflicts with the hand edit's field manager),
/// moving traffic someone moved by hand. `drifted` opens the reason ("the Services do not match
/// the release values").
pub fn check_drift(drifted: &str, drift: &[String], force: bool) -> Result<(), Refusal> {
    if !drift.is_empty() && !force {
        return Err(Refusal::new(
            format!("{drifted}: {}", drift.join("; ")),
            "someone changed them outside helm; inspect with `bgslot status`, then pass --force to let this write put them back as bgslot wrote them",
        ));
    }
    Ok(())
}

/// Whether a revision moved production from one slot to the other (or may have: `helm
/// rollback` and `bgslot recover` restore another revision's `productionSlot`).
pub fn moved_production(revision: &Revision) -> bool {
    revision.recorded().is_some_and(|r| r.moves_production())
}

/// The latest revision that moved production: the start of the drain delay.
pub fn last_move(history: &[Revision]) -> Option<&Revision> {
    history.iter().rev().find(|r| moved_production(r))
}

/// The deploy that put a version in `slot` after production last moved, if any: then `slot`
/// holds a new version, not the one production left.
pub fn staged_since_last_move(history: &[Revision], slot: Slot) -> Option<&Revision> {
    history
        .iter()
        .rev()
        .take_while(|r| !moved_production(r))
        .find(|r| matches!(r.recorded(), Some(Recorded::Deploy { slot: s, .. }) if s == slot))
}

/// The revision `helm rollback` can restore to put production back on `slot`: the last settled
/// one before bgslot last moved production away from `slot` (by a swap or a rollback), when the
/// history still holds it. Production ran on `slot` in it.
pub fn revision_with_production_on(history: &[Revision], slot: Slot) -> Option<&Revision> {
    let left = history.iter().rposition(|r| {
        matches!(
            r.recorded(),
            Some(Recorded::Swap { from, .. } | Recorded::Rollback { from, .. }) if from == slot
        )
    })?;
    history[..left].iter().rev().find(|r| r.is_settled())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    #[test]
    fn pending_and_failed_releases_are_refused_with_a_recovery() {
        let history = [
            rev(1, "superseded", "", "t"),
            rev(2, "deployed", "", "t"),
            rev(3, "pending-upgrade", "", "t"),
        ];
        let err = check_helm_state("web", &history).unwrap_err();
        assert!(err.reason.contains("pending-upgrade"), "{err:?}");
        assert!(
            err.hint.contains("bgslot recover web") && err.hint.contains("revision 2"),
            "{}",
            err.hint
        );
        let history = [rev(1, "failed", "Install failed", "t")];
        let err = check_helm_state("web", &history).unwrap_err();
        assert!(err.hint.contains("helm uninstall web"), "{}", err.hint);
        assert!(check_helm_state("web", &[rev(1, "deployed", "", "t")]).is_ok());
    }

    #[test]
    fn drift_is_refused_unless_forced() {
        assert_eq!(
            check_drift("the Services do not match the release values", &[], false),
            Ok(())
        );
        let drift = ["Service web (production) selects green but the values say blue".to_string()];
        let err = check_drift(
            "the Services do not match the release values",
            &drift,
            false,
        )
        .unwrap_err();
        assert_eq!(
            err.reason,
            "the Services do not match the release values: Service web (production) selects green but the values say blue"
        );
        assert!(err.hint.contains("--force"), "{}", err.hint);
        assert_eq!(check_drift("x", &drift, true), Ok(()));
    }

    #[test]
    fn a_release_a_gitops_controller_owns_is_refused_unless_forced() {
        let mut obs = observed(3, 3);
        assert!(check_gitops("web", &obs, false).is_ok());
        obs.gitops = Some(GitOpsMarks::Flux {
            namespace: "flux-system".into(),
            name: "web".into(),
        });
        let err = check_gitops("web", &obs, false).unwrap_err();
        assert!(
            err.reason
                .contains("managed by Flux (HelmRelease flux-system/web)"),
            "{err:?}"
        );
        assert!(
            err.hint.contains("spec.values")
                && err
                    .hint
                    .contains("flux suspend helmrelease web -n flux-system"),
            "{}",
            err.hint
        );
        assert!(check_gitops("web", &obs, true).is_ok());
        obs.gitops = Some(GitOpsMarks::ArgoCd {
            application: "shop-web".into(),
        });
        let err = check_gitops("web", &obs, false).unwrap_err();
        assert!(
            err.reason.contains("Argo CD (Application shop-web)"),
            "{err:?}"
        );
    }

    #[test]
    fn the_last_move_counts_rollbacks_of_any_kind() {
        let history = [
            rev(1, "superseded", "bgslot install blue v1", "t"),
            rev(2, "superseded", "bgslot swap blue->green", "t"),
            rev(3, "superseded", "Rollback to 1", "t"),
            rev(4, "deployed", "bgslot deploy green v3", "t"),
        ];
        assert_eq!(last_move(&history).map(|r| r.revision), Some(3));
        assert_eq!(last_move(&history[..1]), None);
    }

    #[test]
    fn the_history_says_where_production_was() {
        // install, deploy, swap, rollback, clean: production is back on blue and green is gone.
        let history = [
            rev(1, "superseded", "bgslot install blue v1", "t"),
            rev(2, "superseded", "bgslot deploy green v2", "t"),
            rev(3, "superseded", "bgslot swap blue->green", "t"),
            rev(4, "superseded", "bgslot rollback green->blue", "t"),
            rev(5, "deployed", "bgslot clean green", "t"),
        ];
        // Revision 3 is the one with production on green; revision 2 had it on blue.
        assert_eq!(
            revision_with_production_on(&history, Slot::Green).map(|r| r.revision),
            Some(3)
        );
        assert_eq!(
            revision_with_production_on(&history, Slot::Blue).map(|r| r.revision),
            Some(2)
        );
        assert_eq!(last_move(&history).map(|r| r.revision), Some(4));
        // A failed revision is never one to return to.
        let with_failure = [
            rev(1, "superseded", "bgslot install blue v1", "t"),
            rev(2, "failed", "Upgrade \"web\" failed", "t"),
            rev(3, "deployed", "bgslot swap blue->green", "t"),
        ];
        assert_eq!(
            revision_with_production_on(&with_failure, Slot::Blue).map(|r| r.revision),
            Some(1)
        );
        assert_eq!(revision_with_production_on(&history[..2], Slot::Blue), None);
        // A version staged after the last move is new, not the previous production.
        assert_eq!(
            staged_since_last_move(&history[..2], Slot::Green).map(|r| r.revision),
            Some(2)
        );
        assert_eq!(staged_since_last_move(&history[..3], Slot::Green), None);
    }
}
