//! How a run across targets ends: its verdict and exit status, the first line, the hint, the
//! command that ends a mix on each target, or, for a run that ran through, its summary and next
//! step, with a row per target either way.

use anyhow::Result;

use super::decide::{self, Fix, Moved, Standing, Stop};
use super::report::{self, FleetReport};
use super::Run;
use crate::error::{self, ExitStatus};

/// How a run ends, besides its rows: the first line, a hint, the commands that end a mix, and
/// for a run that ran through its summary and next step.
#[derive(Debug, Default)]
pub(crate) struct Ending {
    pub lead: Option<String>,
    pub hint: Option<String>,
    pub commands: Vec<Option<String>>,
    pub summary: String,
    pub next: String,
}

impl Ending {
    /// A run that stopped: why, in one line.
    pub fn failed(lead: String) -> Ending {
        Ending {
            lead: Some(lead),
            ..Ending::default()
        }
    }

    /// A run that did its work on every target, and what to run next.
    pub fn done(summary: String, next: String) -> Ending {
        Ending {
            summary,
            next,
            ..Ending::default()
        }
    }
}

impl Run<'_> {
    /// The command that ends a mix on each target, where one is needed ([`decide::ends_mix`]).
    pub fn fixes(&self, version: &str) -> Vec<Option<String>> {
        decide::ends_mix(&self.standings, version)
            .iter()
            .enumerate()
            .map(|(i, fix)| {
                fix.as_ref().map(|fix| match fix {
                    Fix::Rollback => self.command_on(i, "rollback"),
                    Fix::SwapTo(v) => format!("{} --expect-tag {v}", self.command_on(i, "swap")),
                    Fix::Rerun => self.rerun.clone(),
                })
            })
            .collect()
    }

    /// The ending of a run stopped before any swap (a deploy, a check of the new version, a
    /// signal): production is untouched, but where a first install made the new version
    /// production (there was nothing older); a mix that leaves names what ends it.
    pub fn unswapped_ending(&self, lead: &str, version: &str) -> Ending {
        let installed: Vec<&str> = (0..self.members.len())
            .filter(|&i| self.standings[i].moved == Some(Moved::Install))
            .map(|i| self.name(i))
            .collect();
        if installed.is_empty() {
            Ending::failed(format!("{lead}; production is untouched everywhere (the new version stays staged where it got ready)"))
        } else if decide::left_mixed(&self.standings) {
            self.mixed(lead, self.fixes(version))
        } else {
            Ending::failed(format!(
                "{lead}; every target was a first install, so each serves {version} in production (there was nothing before it): {}",
                installed.join(", ")
            ))
        }
    }

    /// The ending of a run that left the targets on different versions, or a target a swap-back
    /// could not bring back: what each serves, and `commands[i]`, the command that ends it on
    /// target `i` where it needs one.
    pub fn mixed(&self, lead: &str, commands: Vec<Option<String>>) -> Ending {
        let serving: Vec<String> = (0..self.members.len())
            .map(|i| {
                format!(
                    "{} serves {}",
                    self.name(i),
                    self.standings[i].version().unwrap_or("an unknown version")
                )
            })
            .collect();
        let hint = commands
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| format!("on {}: `{c}`", self.name(i))))
            .collect::<Vec<_>>()
            .join("; ");
        let (left, end) = if decide::left_mixed(&self.standings) {
            ("the targets are left on different versions", "end the mix")
        } else {
            (
                "a swap-back did not finish, so the targets are left on the new version",
                "go back",
            )
        };
        Ending {
            lead: Some(format!("{lead}; {left}: {}", serving.join(", "))),
            hint: Some(format!("{end} {hint}")),
            commands,
            ..Ending::default()
        }
    }

    /// Ends the run: prints the report when it ran through (`stop` is `None`), else returns the
    /// error that carries the verdict, `lead` first, with every target's row.
    pub fn finish(&mut self, stop: Option<Stop>, ending: Ending) -> Result<()> {
        let status = decide::verdict(stop, &self.standings);
        let rows = self.rows(&ending.commands);
        if status == ExitStatus::Done {
            let consistent = consistent(&self.standings);
            let summary = ending.summary;
            let report = FleetReport {
                operation: self.op,
                release: self.release.to_string(),
                run: self.stamp.id.to_string(),
                consistent,
                targets: rows,
                next: ending.next,
                summary,
                text: None,
            };
            return self.ui.print(&report);
        }
        let lead = match (ending.lead, stop) {
            (Some(lead), _) => lead,
            // The Lease that could not be taken says why.
            (None, Some(Stop::Lock { .. })) if !self.causes.is_empty() => format!(
                "cannot {} {} across {} targets: {}",
                self.op,
                self.release,
                self.members.len(),
                self.causes.remove(0)
            ),
            (None, _) => format!("{} failed", self.what()),
        };
        let causes = std::mem::take(&mut self.causes);
        Err(report::across(
            status,
            lead,
            causes,
            ending.hint,
            self.stamp.id.as_str(),
            rows,
        )
        .into())
    }

    /// Ends a run that failed its preflight: each target's own outcome decides the status.
    pub fn refused(&mut self, failures: &[anyhow::Error]) -> Result<()> {
        let statuses: Vec<ExitStatus> = failures.iter().map(ExitStatus::of).collect();
        let status = decide::preflight_status(&statuses);
        let hint = failures.iter().find_map(error::hint);
        let verb = match status {
            ExitStatus::Refused => "refused to",
            ExitStatus::Usage => "cannot",
            _ => "could not read every target of",
        };
        // The first target's reason leads; the others follow as causes.
        let first = if self.causes.is_empty() {
            String::new()
        } else {
            format!(": {}", self.causes.remove(0))
        };
        let what = match status {
            ExitStatus::Refused | ExitStatus::Usage => format!(
                "{} {} across {} targets",
                self.op,
                self.release,
                self.members.len()
            ),
            _ => self.what(),
        };
        let ending = Ending {
            lead: Some(format!("{verb} {what}{first}")),
            hint,
            ..Ending::default()
        };
        self.finish(Some(Stop::Preflight(status)), ending)
    }

    /// Ends a run that could not reach every target: nothing was changed.
    pub fn unreachable(&mut self) -> Result<()> {
        let ending = Ending::failed(format!(
            "could not reach every target of {}: nothing was changed",
            self.what()
        ));
        self.finish(Some(Stop::Preflight(ExitStatus::Failed)), ending)
    }
}

/// Every target serves one version; `None` when the run does not know what each serves.
fn consistent(standings: &[Standing]) -> Option<bool> {
    let names: Vec<&str> = vec![""; standings.len()];
    let versions: Vec<Option<&str>> = standings.iter().map(Standing::version).collect();
    if versions.iter().any(Option::is_none) {
        return None;
    }
    Some(decide::mixed_start(&names, &versions).is_none())
}
