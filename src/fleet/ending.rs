//! How a run across targets ends, besides its rows: the first line, the hint, the command that
//! ends a mix on each target, or, for a run that ran through, its summary and next step.

use super::decide::{self, Fix, Moved};
use super::Run;

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
}
