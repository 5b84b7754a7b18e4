//! The decisions of a run across several clusters, pure: how far each target got and what it
//! serves ([`Standing`]), which targets to swap back and in which order when a swap or a
//! production check fails, whether the targets serve one version (a mixed start, or a mix the run
//! left), and the run's exit status from where it stopped and what every target was left as:
//!
//! | failed in | every target is left | exit |
//! |---|---|---|
//! | preflight (a refusal, a mixed start, an owner) | unchanged | 3 (1 if unreachable) |
//! | lock | unchanged, Leases taken so far released | 4 |
//! | deploy or stage verify on any target | production untouched everywhere | 1 |
//! | the same, next to a first install elsewhere | mixed: the installed serve it | 5 |
//! | swap or production verify on target k | 1..k swapped back: all on the old version | 1 |
//! | a swap-back failed (on any or every target) | mixed: each target's version and the command that ends it | 5 |
//! | clean on some target | all on the new version; the old slot still runs there | 1 |

use serde::Serialize;

use crate::error::ExitStatus;
use crate::vocab::Slot;

/// The last phase a target entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Preflight,
    Lock,
    Deploy,
    VerifyStage,
    Swap,
    VerifyProduction,
    SwapBack,
    Clean,
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Preflight => "preflight",
            Phase::Lock => "lock",
            Phase::Deploy => "deploy",
            Phase::VerifyStage => "verify-stage",
            Phase::Swap => "swap",
            Phase::VerifyProduction => "verify-production",
            Phase::SwapBack => "swap-back",
            Phase::Clean => "clean",
            Phase::Done => "done",
        }
    }
}

/// How production came to serve the new version in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    /// A swap (or a rollback, for `rollback`): one write undoes it.
    Swap,
    /// A first install: there is no older version to go back to.
    Install,
}

/// What one target is left as, as the run knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub phase: Phase,
    /// Production's slot and the version it serves, as last read or written; `None` when the
    /// release does not exist (yet) or could not be read.
    pub production: Option<(Slot, String)>,
    /// Production moved in this run and was not moved back.
    pub moved: Option<Moved>,
    pub swapped_back: bool,
    /// The new version is staged there, ready: a swap moves production to it.
    pub staged: bool,
    /// What went wrong on it, one line.
    pub error: Option<String>,
}

impl Standing {
    pub fn new(production: Option<(Slot, String)>) -> Standing {
        Standing {
            phase: Phase::Preflight,
            production,
            moved: None,
            swapped_back: false,
            staged: false,
            error: None,
        }
    }

    pub fn version(&self) -> Option<&str> {
        self.production.as_ref().map(|(_, v)| v.as_str())
    }
}

/// Where a run stopped, when it did not run through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Before anything was changed: refused (3), a target that could not be read (1), or a
    /// usage error only a target's release shows (2); see [`preflight_status`].
    Preflight(ExitStatus),
    /// Taking the Leases: one held by another bgslot (4), or one that could not be taken (1).
    Lock { held: bool },
    /// After the Leases: a deploy, a check, a swap, a clean, or a signal.
    After,
}

/// The outcome of a preflight that failed on some targets (each target's own status): a target
/// that could not be read makes it a failure (1), else a usage error (2), else a refusal (3).
pub fn preflight_status(failed: &[ExitStatus]) -> ExitStatus {
    [ExitStatus::Failed, ExitStatus::Usage, ExitStatus::Locked]
        .into_iter()
        .find(|s| failed.contains(s))
        .unwrap_or(ExitStatus::Refused)
}

/// The targets to swap back once a swap or a production check failed: every one production
/// moved to in a swap, the last moved first (the reverse of the listed order).
pub fn swap_back_order(targets: &[Standing]) -> Vec<usize> {
    (0..targets.len())
        .rev()
        .filter(|&i| targets[i].moved == Some(Moved::Swap))
        .collect()
}

/// The versions the targets serve, when they are not all one: `eu v7, us v6`, in listed order
/// (`?` for a target whose version is not known). Targets without the release count as a
/// version of their own (`none`), so a first install next to a running release is mixed too.
pub fn mixed_start(names: &[&str], versions: &[Option<&str>]) -> Option<String> {
    let mut distinct: Vec<Option<&str>> = versions.to_vec();
    distinct.sort();
    distinct.dedup();
    (distinct.len() > 1).then(|| {
        names
            .iter()
            .zip(versions)
            .map(|(name, v)| format!("{name} {}", v.unwrap_or("none")))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// Whether the run left the targets on different versions: production moved to the new version
/// on some and not (or no longer) on others.
pub fn left_mixed(targets: &[Standing]) -> bool {
    let moved = targets.iter().filter(|t| t.moved.is_some()).count();
    moved > 0 && moved < targets.len()
}

/// Whether a swap-back left a target on the new version (it failed, or a second signal stopped
/// it): the run promised every target back on the old one.
pub fn unreturned(targets: &[Standing]) -> bool {
    targets
        .iter()
        .any(|t| t.phase == Phase::SwapBack && t.moved == Some(Moved::Swap))
}

/// The run's exit status: a mix it left, or a target a swap-back could not bring back, wins (5);
/// else where it stopped decides.
pub fn verdict(stop: Option<Stop>, targets: &[Standing]) -> ExitStatus {
    match stop {
        // Nothing was changed: these stops cannot leave a mix behind.
        Some(Stop::Preflight(status)) => status,
        Some(Stop::Lock { held: true }) => ExitStatus::Locked,
        Some(Stop::Lock { held: false }) => ExitStatus::Failed,
        _ if left_mixed(targets) || unreturned(targets) => ExitStatus::Mixed,
        Some(Stop::After) => ExitStatus::Failed,
        None => ExitStatus::Done,
    }
}

/// What ends a mix on one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    /// Production moved there: `bgslot rollback` moves it back to the old version.
    Rollback,
    /// It stayed on the old version while the others were installed new: `bgslot swap
    /// --expect-tag VERSION` moves it to the new version staged there.
    SwapTo(String),
    /// The others were installed new and the new version never got ready here (its deploy
    /// failed, or a first install did not finish): the run again, which installs or deploys it
    /// where it is missing.
    Rerun,
}

/// For a run that left a mix (or a target a swap-back could not bring back), the one command
/// that ends it on each target (`None` where nothing is to be done): the targets production
/// moved to by a swap go back; only when the new version was installed (nothing older to go back
/// to) do the others move forward, by a swap where it is staged, else by the run again.
pub fn ends_mix(targets: &[Standing], new_version: &str) -> Vec<Option<Fix>> {
    if !left_mixed(targets) && !unreturned(targets) {
        return vec![None; targets.len()];
    }
    let any_swapped = targets.iter().any(|t| t.moved == Some(Moved::Swap));
    targets
        .iter()
        .map(|t| match t.moved {
            Some(Moved::Swap) => Some(Fix::Rollback),
            Some(Moved::Install) => None,
            None if any_swapped => None,
            None if t.staged => Some(Fix::SwapTo(new_version.to_string())),
            None => Some(Fix::Rerun),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(phase: Phase, version: &str, moved: Option<Moved>, back: bool) -> Standing {
        let slot = if version == "v7" {
            Slot::Green
        } else {
            Slot::Blue
        };
        Standing {
            phase,
            production: Some((slot, version.to_string())),
            moved,
            swapped_back: back,
            staged: true,
            error: None,
        }
    }

    fn old(phase: Phase) -> Standing {
        at(phase, "v6", None, false)
    }

    fn new(phase: Phase) -> Standing {
        at(phase, "v7", Some(Moved::Swap), false)
    }

    fn back(phase: Phase) -> Standing {
        at(phase, "v6", None, true)
    }

    #[test]
    fn a_run_that_ran_through_is_done() {
        let all = [new(Phase::Done), new(Phase::Done)];
        assert_eq!(verdict(None, &all), ExitStatus::Done);
        assert!(!left_mixed(&all));
    }

    #[test]
    fn row_preflight_refused_is_3_and_unreachable_is_1_even_from_a_mixed_start() {
        let start = [
            old(Phase::Preflight),
            at(Phase::Preflight, "v5", None, false),
        ];
        let refused = preflight_status(&[ExitStatus::Refused, ExitStatus::Refused]);
        assert_eq!(
            verdict(Some(Stop::Preflight(refused)), &start),
            ExitStatus::Refused
        );
        let unreachable = preflight_status(&[ExitStatus::Refused, ExitStatus::Failed]);
        assert_eq!(
            verdict(Some(Stop::Preflight(unreachable)), &start),
            ExitStatus::Failed
        );
        assert_eq!(
            preflight_status(&[ExitStatus::Usage, ExitStatus::Refused]),
            ExitStatus::Usage
        );
        assert_eq!(
            mixed_start(&["eu", "us"], &[Some("v6"), Some("v5")]).as_deref(),
            Some("eu v6, us v5")
        );
        assert_eq!(mixed_start(&["eu", "us"], &[Some("v6"), Some("v6")]), None);
        // A release that exists in one cluster only is a mixed start too.
        assert_eq!(
            mixed_start(&["eu", "us"], &[Some("v6"), None]).as_deref(),
            Some("eu v6, us none")
        );
        assert_eq!(mixed_start(&["eu", "us"], &[None, None]), None);
    }

    #[test]
    fn row_lock_held_is_4_and_a_lock_that_could_not_be_taken_is_1() {
        let all = [old(Phase::Lock), old(Phase::Lock)];
        assert_eq!(
            verdict(Some(Stop::Lock { held: true }), &all),
            ExitStatus::Locked
        );
        assert_eq!(
            verdict(Some(Stop::Lock { held: false }), &all),
            ExitStatus::Failed
        );
    }

    #[test]
    fn row_deploy_or_stage_verify_failed_is_1_with_production_untouched() {
        let all = [old(Phase::VerifyStage), old(Phase::Deploy)];
        assert_eq!(verdict(Some(Stop::After), &all), ExitStatus::Failed);
        assert!(swap_back_order(&all).is_empty(), "nothing to swap back");
    }

    #[test]
    fn row_swap_or_production_verify_failed_on_k_swaps_back_1_to_k_in_reverse_then_is_1() {
        // Waves over eu, us, ap: eu and us swapped, us's production check failed.
        let mut targets = [
            new(Phase::VerifyProduction),
            new(Phase::VerifyProduction),
            old(Phase::Deploy),
        ];
        assert_eq!(swap_back_order(&targets), [1, 0], "us first, then eu");
        // A swap that failed before its flip moved nothing: only eu goes back.
        let refused_swap = [
            new(Phase::VerifyProduction),
            old(Phase::Swap),
            old(Phase::Deploy),
        ];
        assert_eq!(swap_back_order(&refused_swap), [0]);
        // Once both are back, every target is on the old version.
        targets[0] = back(Phase::SwapBack);
        targets[1] = back(Phase::SwapBack);
        assert!(!left_mixed(&targets));
        assert_eq!(verdict(Some(Stop::After), &targets), ExitStatus::Failed);
        // Swapped together: all of them go back, in reverse listed order.
        let together = [new(Phase::VerifyProduction), new(Phase::VerifyProduction)];
        assert_eq!(swap_back_order(&together), [1, 0]);
    }

    #[test]
    fn row_a_swap_back_that_failed_leaves_a_mix_5_and_names_the_command_that_ends_it() {
        // eu's swap-back failed (its API server was down); us went back.
        let targets = [new(Phase::SwapBack), back(Phase::SwapBack)];
        assert!(left_mixed(&targets));
        assert_eq!(verdict(Some(Stop::After), &targets), ExitStatus::Mixed);
        assert_eq!(ends_mix(&targets, "v7"), [Some(Fix::Rollback), None]);
    }

    #[test]
    fn row_a_clean_that_failed_is_1_with_every_target_on_the_new_version() {
        let targets = [new(Phase::Done), new(Phase::Clean)];
        assert!(!left_mixed(&targets));
        assert_eq!(verdict(Some(Stop::After), &targets), ExitStatus::Failed);
    }

    #[test]
    fn a_mix_after_a_second_signal_is_5() {
        // The first signal stopped the waves after eu's swap; the second stopped its swap-back.
        let targets = [new(Phase::SwapBack), old(Phase::Deploy)];
        assert_eq!(verdict(Some(Stop::After), &targets), ExitStatus::Mixed);
        assert_eq!(ends_mix(&targets, "v7"), [Some(Fix::Rollback), None]);
    }

    #[test]
    fn installed_targets_have_nothing_to_go_back_to_so_the_others_move_forward() {
        let installed = at(Phase::Done, "v7", Some(Moved::Install), false);
        let targets = [installed, back(Phase::SwapBack)];
        assert_eq!(verdict(Some(Stop::After), &targets), ExitStatus::Mixed);
        assert_eq!(
            ends_mix(&targets, "v7"),
            [None, Some(Fix::SwapTo("v7".into()))]
        );
        assert!(swap_back_order(&targets).is_empty());
    }

    #[test]
    fn a_deploy_that_failed_next_to_a_first_install_is_a_mix_the_run_again_ends() {
        // eu had nothing: its install made v7 production; us's deploy never got ready.
        let installed = at(Phase::Deploy, "v7", Some(Moved::Install), false);
        let failed = Standing {
            staged: false,
            ..Standing::new(None)
        };
        let targets = [installed, failed];
        assert_eq!(verdict(Some(Stop::After), &targets), ExitStatus::Mixed);
        assert_eq!(ends_mix(&targets, "v7"), [None, Some(Fix::Rerun)]);
    }

    #[test]
    fn swap_backs_that_all_failed_leave_every_target_new_and_are_5_not_a_clean_1() {
        // Both swap-backs failed, or a second signal stopped them (the runner leaves each target
        // still to go back in the swap-back phase).
        let targets = [new(Phase::SwapBack), new(Phase::SwapBack)];
        assert!(!left_mixed(&targets) && unreturned(&targets));
        assert_eq!(verdict(Some(Stop::After), &targets), ExitStatus::Mixed);
        assert_eq!(
            ends_mix(&targets, "v7"),
            [Some(Fix::Rollback), Some(Fix::Rollback)]
        );
        // Every target new after a clean that failed is the 1 of its row: no swap-back ran.
        let cleaning = [new(Phase::Clean), new(Phase::Done)];
        assert_eq!(verdict(Some(Stop::After), &cleaning), ExitStatus::Failed);
        assert_eq!(ends_mix(&cleaning, "v7"), [None, None]);
    }

    #[test]
    fn phases_read_as_the_json_names_them() {
        assert_eq!(
            serde_json::to_value(Phase::VerifyProduction).unwrap(),
            "verify-production"
        );
        assert_eq!(Phase::SwapBack.as_str(), "swap-back");
    }
}
