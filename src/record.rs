//! What bgslot records in a helm revision's description (`--description`), so that `helm
//! history` explains itself: one type with one writer (`Display`) and one reader (`FromStr`),
//! used by every command that writes a revision and every rule that reads the history.
//!
//! The grammar, unchanged since the first bgslot:
//!
//! ```text
//! bgslot install SLOT VERSION     the release was installed with VERSION in SLOT (production)
//! bgslot deploy SLOT VERSION      VERSION was staged in SLOT
//! bgslot swap FROM->TO            production moved from FROM to TO
//! bgslot rollback FROM->TO        production moved back from FROM to TO
//! bgslot clean SLOT               SLOT was disabled
//! bgslot promote SLOT N           SLOT, staged small, was brought to N pods before a swap
//! bgslot start-workers SLOT A,B   a stop-first handover started the workers A and B in SLOT
//! Rollback to N                   `helm rollback` (or `bgslot recover`, which runs it)
//! ```
//!
//! VERSION is a tag or a `sha256:` digest: one word.
//!
//! A run across several clusters adds one word to every description it writes, `run=ID` (the
//! same ID in every cluster, so their `helm history` lines up); a description without it reads
//! as before, and every reader of a `Recorded` sees through it.

use std::fmt;
use std::str::FromStr;

use crate::vocab::{Op, Slot};

/// The word a run across several clusters ends each description it writes with: `run=ID`.
const RUN_WORD: &str = "run=";

/// One run of bgslot across several clusters: the same ID in every revision it writes, and in its
/// Lease holders. `TIME-SALT`: when it started (UTC, `20261206T181714Z`) and 4 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(String);

impl RunId {
    /// The ID of a run that started at `time` (`YYYYMMDDTHHMMSSZ`), told apart by `salt`.
    pub fn new(time: &str, salt: u16) -> RunId {
        RunId(format!("{time}-{salt:04x}"))
    }

    /// An ID read back from a description: letters, digits and `-`, 1 to 40 of them.
    pub fn parse(text: &str) -> Option<RunId> {
        let ok = !text.is_empty()
            && text.len() <= 40
            && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        ok.then(|| RunId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A run across several clusters, as each of its Leases names it: its ID and how many targets it
/// acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStamp {
    pub id: RunId,
    pub targets: usize,
}

/// The description a write of `run` records: `description`, then `run=ID`; without a run, the
/// description as it is.
pub fn stamped(description: &str, run: Option<&RunId>) -> String {
    match run {
        Some(run) => format!("{description} {RUN_WORD}{run}"),
        None => description.to_string(),
    }
}

/// The run that wrote `description`, when a run across several clusters did.
pub fn run_of(description: &str) -> Option<RunId> {
    split_run(description).1
}

/// The description without its `run=ID` word, and that run.
fn split_run(description: &str) -> (&str, Option<RunId>) {
    let trimmed = description.trim_end();
    if let Some((rest, last)) = trimmed.rsplit_once(' ') {
        if let Some(run) = last.strip_prefix(RUN_WORD).and_then(RunId::parse) {
            return (rest, Some(run));
        }
    }
    (description, None)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Install {
        slot: Slot,
        version: String,
    },
    Deploy {
        slot: Slot,
        version: String,
    },
    Swap {
        from: Slot,
        to: Slot,
    },
    Rollback {
        from: Slot,
        to: Slot,
    },
    Clean {
        slot: Slot,
    },
    /// The first write of a swap to a slot staged small: the slot brought to `replicas` pods.
    Promote {
        slot: Slot,
        replicas: u64,
    },
    /// The second write of a `stop-first` handover: the held workers started in `slot`.
    StartWorkers {
        slot: Slot,
        workers: Vec<String>,
    },
    /// helm's own description of a `helm rollback` to `revision`.
    HelmRollback {
        revision: u64,
    },
}

impl Recorded {
    /// The bgslot operation that wrote this revision (`None` for a `helm rollback`).
    pub fn op(&self) -> Option<Op> {
        match self {
            Recorded::Install { .. } => Some(Op::Install),
            Recorded::Deploy { .. } => Some(Op::Deploy),
            Recorded::Swap { .. } => Some(Op::Swap),
            Recorded::Rollback { .. } => Some(Op::Rollback),
            Recorded::Clean { .. } => Some(Op::Clean),
            // Steps of a swap (or rollback) around its flip.
            Recorded::Promote { .. } | Recorded::StartWorkers { .. } => None,
            Recorded::HelmRollback { .. } => None,
        }
    }

    /// The step's name as `bgslot history -o json` reports it.
    pub fn step(&self) -> &'static str {
        match self {
            Recorded::Install { .. } => "install",
            Recorded::Deploy { .. } => "deploy",
            Recorded::Swap { .. } => "swap",
            Recorded::Rollback { .. } => "rollback",
            Recorded::Clean { .. } => "clean",
            Recorded::Promote { .. } => "promote",
            Recorded::StartWorkers { .. } => "start-workers",
            Recorded::HelmRollback { .. } => "helm-rollback",
        }
    }

    /// The second half of a production move (the workers a stop-first handover held back).
    pub fn completes_a_move(&self) -> bool {
        matches!(self, Recorded::StartWorkers { .. })
    }

    /// Whether production may have changed slots in this revision. A `helm rollback` restores
    /// another revision's `productionSlot`, so it counts.
    pub fn moves_production(&self) -> bool {
        matches!(
            self,
            Recorded::Swap { .. } | Recorded::Rollback { .. } | Recorded::HelmRollback { .. }
        )
    }

    /// The slot production is on after this revision, when the description says so.
    pub fn production_after(&self) -> Option<Slot> {
        match self {
            Recorded::Install { slot, .. } => Some(*slot),
            Recorded::Swap { to, .. } | Recorded::Rollback { to, .. } => Some(*to),
            _ => None,
        }
    }

    /// The slot this revision put a version in, made production, or disabled.
    pub fn slot(&self) -> Option<Slot> {
        match self {
            Recorded::Install { slot, .. }
            | Recorded::Deploy { slot, .. }
            | Recorded::Clean { slot }
            | Recorded::Promote { slot, .. }
            | Recorded::StartWorkers { slot, .. } => Some(*slot),
            Recorded::Swap { to, .. } | Recorded::Rollback { to, .. } => Some(*to),
            Recorded::HelmRollback { .. } => None,
        }
    }

    /// The description as a person reads it in `bgslot history`.
    pub fn summary(&self) -> String {
        match self {
            Recorded::Install { slot, version } => {
                format!("bgslot install: {version} in {slot} (production)")
            }
            Recorded::Deploy { slot, version } => {
                format!("bgslot deploy: {version} staged in {slot}")
            }
            Recorded::Swap { from, to } => format!("bgslot swap: production {from} -> {to}"),
            Recorded::Rollback { from, to } => {
                format!("bgslot rollback: production {from} -> {to}")
            }
            Recorded::Clean { slot } => format!("bgslot clean: {slot} disabled"),
            Recorded::Promote { slot, replicas } => {
                format!("bgslot promote: {slot} brought to {replicas} pods before the swap")
            }
            Recorded::StartWorkers { slot, workers } => {
                format!(
                    "bgslot start-workers: {} started in {slot}",
                    workers.join(", ")
                )
            }
            // helm's words stand as they are.
            Recorded::HelmRollback { .. } => self.to_string(),
        }
    }
}

impl fmt::Display for Recorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recorded::Install { slot, version } => write!(f, "bgslot install {slot} {version}"),
            Recorded::Deploy { slot, version } => write!(f, "bgslot deploy {slot} {version}"),
            Recorded::Swap { from, to } => write!(f, "bgslot swap {from}->{to}"),
            Recorded::Rollback { from, to } => write!(f, "bgslot rollback {from}->{to}"),
            Recorded::Clean { slot } => write!(f, "bgslot clean {slot}"),
            Recorded::Promote { slot, replicas } => write!(f, "bgslot promote {slot} {replicas}"),
            Recorded::StartWorkers { slot, workers } => {
                write!(f, "bgslot start-workers {slot} {}", workers.join(","))
            }
            Recorded::HelmRollback { revision } => write!(f, "Rollback to {revision}"),
        }
    }
}

/// A description bgslot (or `helm rollback`) did not write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreign;

impl FromStr for Recorded {
    type Err = Foreign;

    fn from_str(description: &str) -> Result<Recorded, Foreign> {
        let (description, _) = split_run(description);
        let words: Vec<&str> = description.split_whitespace().collect();
        let flip = |text: &str| -> Result<(Slot, Slot), Foreign> {
            let (from, to) = text.split_once("->").ok_or(Foreign)?;
            let (from, to) = (
                from.parse().map_err(|_| Foreign)?,
                to.parse().map_err(|_| Foreign)?,
            );
            if from == to {
                return Err(Foreign);
            }
            Ok((from, to))
        };
        let slot = |text: &str| text.parse::<Slot>().map_err(|_| Foreign);
        Ok(match words.as_slice() {
            ["bgslot", "install", s, version] => Recorded::Install {
                slot: slot(s)?,
                version: version.to_string(),
            },
            ["bgslot", "deploy", s, version] => Recorded::Deploy {
                slot: slot(s)?,
                version: version.to_string(),
            },
            ["bgslot", "swap", moved] => {
                let (from, to) = flip(moved)?;
                Recorded::Swap { from, to }
            }
            ["bgslot", "rollback", moved] => {
                let (from, to) = flip(moved)?;
                Recorded::Rollback { from, to }
            }
            ["bgslot", "clean", s] => Recorded::Clean { slot: slot(s)? },
            ["bgslot", "promote", s, n] => Recorded::Promote {
                slot: slot(s)?,
                replicas: n.parse().map_err(|_| Foreign)?,
            },
            ["bgslot", "start-workers", s, names] => Recorded::StartWorkers {
                slot: slot(s)?,
                workers: names
                    .split(',')
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
                    .collect(),
            },
            ["Rollback", "to", n] => Recorded::HelmRollback {
                revision: n.parse().map_err(|_| Foreign)?,
            },
            _ => return Err(Foreign),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(description: &str) -> Option<Recorded> {
        description.parse().ok()
    }

    #[test]
    fn every_record_reads_back_as_written() {
        let all = [
            Recorded::Install {
                slot: Slot::Blue,
                version: "v1".into(),
            },
            Recorded::Deploy {
                slot: Slot::Green,
                version: format!("sha256:{}", "a".repeat(64)),
            },
            Recorded::Swap {
                from: Slot::Blue,
                to: Slot::Green,
            },
            Recorded::Rollback {
                from: Slot::Green,
                to: Slot::Blue,
            },
            Recorded::Clean { slot: Slot::Blue },
            Recorded::Promote {
                slot: Slot::Green,
                replicas: 5,
            },
            Recorded::StartWorkers {
                slot: Slot::Green,
                workers: vec!["consumer".into(), "mailer".into()],
            },
            Recorded::HelmRollback { revision: 12 },
        ];
        for record in all {
            assert_eq!(read(&record.to_string()), Some(record));
        }
    }

    #[test]
    fn descriptions_of_earlier_bgslot_versions_and_of_helm_read_as_before() {
        // Strings written by every earlier bgslot (as its tests and the README show them).
        assert_eq!(
            read("bgslot install blue v1"),
            Some(Recorded::Install {
                slot: Slot::Blue,
                version: "v1".into()
            })
        );
        assert_eq!(
            read("bgslot deploy green v2"),
            Some(Recorded::Deploy {
                slot: Slot::Green,
                version: "v2".into()
            })
        );
        assert_eq!(
            read("bgslot swap blue->green"),
            Some(Recorded::Swap {
                from: Slot::Blue,
                to: Slot::Green
            })
        );
        assert_eq!(
            read("bgslot rollback green->blue"),
            Some(Recorded::Rollback {
                from: Slot::Green,
                to: Slot::Blue
            })
        );
        assert_eq!(
            read("bgslot clean blue"),
            Some(Recorded::Clean { slot: Slot::Blue })
        );
        // helm's own: a rollback moves what it restores; the rest is not bgslot's.
        assert_eq!(
            read("Rollback to 3"),
            Some(Recorded::HelmRollback { revision: 3 })
        );
        for foreign in [
            "Install complete",
            "Upgrade complete",
            "Preparing upgrade",
            "Upgrade \"web\" failed: timed out",
            "Uninstallation complete",
            "bgslot swap purple->green",
            "bgslot swap blue->blue",
            "bgslot deploy green",
            "bgslot deploy teal v2",
            "Rollback to three",
            "",
        ] {
            assert_eq!(read(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn a_run_across_clusters_stamps_its_id_and_every_reader_sees_through_it() {
        let run = RunId::new("20261206T181714Z", 0x7f3a);
        assert_eq!(run.as_str(), "20261206T181714Z-7f3a");
        let swap = Recorded::Swap {
            from: Slot::Blue,
            to: Slot::Green,
        };
        let written = stamped(&swap.to_string(), Some(&run));
        assert_eq!(written, "bgslot swap blue->green run=20261206T181714Z-7f3a");
        assert_eq!(read(&written), Some(swap.clone()));
        assert_eq!(run_of(&written), Some(run.clone()));
        // Without a run nothing changes, and old descriptions have no run.
        assert_eq!(stamped(&swap.to_string(), None), "bgslot swap blue->green");
        assert_eq!(run_of("bgslot swap blue->green"), None);
        assert_eq!(run_of("bgslot deploy green v2"), None);
        // A router's slot release and recover's uninstall carry it too; helm's own words do not.
        assert_eq!(
            run_of("bgslot recover: never deployed run=20261206T181714Z-7f3a"),
            Some(run)
        );
        assert_eq!(run_of("Upgrade complete"), None);
        for not_a_run in [
            "bgslot swap blue->green run=",
            "bgslot swap blue->green run=a/b",
        ] {
            assert_eq!(run_of(not_a_run), None, "{not_a_run}");
            assert_eq!(read(not_a_run), None, "{not_a_run}");
        }
    }

    #[test]
    fn what_a_record_says_about_production() {
        let swap: Recorded = "bgslot swap blue->green".parse().unwrap();
        assert!(swap.moves_production());
        assert_eq!(swap.production_after(), Some(Slot::Green));
        let back: Recorded = "Rollback to 2".parse().unwrap();
        assert!(back.moves_production());
        assert_eq!(back.production_after(), None);
        let deploy: Recorded = "bgslot deploy green v2".parse().unwrap();
        assert!(!deploy.moves_production());
        assert_eq!(deploy.summary(), "bgslot deploy: v2 staged in green");
        assert_eq!(swap.summary(), "bgslot swap: production blue -> green");
    }
}
