//! What a swap (or rollback) reports, for either kind of slot: where production routes now, what
//! the other slot still runs (and, for a router, which releases they are), a promotion of a slot
//! staged small, and where each worker and CronJob runs.

use std::fmt;

use serde::Serialize;

use crate::cluster::CronJobState;
use crate::commands::Header;
use crate::vocab::{Mode, Slot};
use crate::workers::Handover;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SwapReport {
    /// `operation` is `swap` or `rollback`.
    #[serde(flatten)]
    pub header: Header,
    pub mode: Mode,
    pub from: Slot,
    pub to: Slot,
    /// What production runs now.
    pub image: String,
    /// What the previous slot still runs, until `clean`.
    pub previous_image: String,
    pub service: String,
    pub ready_endpoints: usize,
    pub url: String,
    /// A slot staged small, brought to production's capacity before the flip.
    pub promoted: Option<Promotion>,
    pub workers: Vec<WorkerMove>,
    pub cron_jobs: Vec<CronJobMove>,
    /// The release production routes to now (a router's slot; `null` for bgslot's chart).
    pub slot_release: Option<String>,
    /// The release it routed to before, still running until `clean`.
    pub previous_release: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Promotion {
    pub from: u64,
    pub to: u64,
}

/// Where a worker runs after the swap.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WorkerMove {
    pub name: String,
    pub handover: Handover,
    /// In the production slot now.
    pub production: WorkerCount,
    /// In the other slot (its `stageReplicas`, 0 by default).
    pub stage: WorkerCount,
    /// With `stop-first`: how long no pod of it ran in either slot, in milliseconds.
    pub gap_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct WorkerCount {
    pub slot: Slot,
    pub ready: i32,
    pub desired: i32,
}

/// Where a CronJob runs after the swap (it is suspended in every other slot).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CronJobMove {
    pub name: String,
    /// The slot whose CronJob is not suspended; `null` if none is.
    pub runs_in: Option<Slot>,
}

impl CronJobMove {
    pub fn of(cron_jobs: &[CronJobState], production: Slot) -> Vec<CronJobMove> {
        let mut names: Vec<&str> = cron_jobs.iter().map(|c| c.name.as_str()).collect();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let running: Vec<Slot> = cron_jobs
                    .iter()
                    .filter(|c| c.name == name && !c.suspended)
                    .map(|c| c.slot)
                    .collect();
                CronJobMove {
                    name: name.to_string(),
                    runs_in: match running.as_slice() {
                        [] => None,
                        [one] => Some(*one),
                        _ => Some(production),
                    },
                }
            })
            .collect()
    }
}

impl fmt::Display for SwapReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let release = &self.header.release;
        let of = |release: &Option<String>| {
            release
                .as_ref()
                .map(|r| format!(", release {r}"))
                .unwrap_or_default()
        };
        writeln!(
            f,
            "{release}: production now routes to {} ({}{}; service {} has {} ready endpoints)",
            self.to,
            self.image,
            of(&self.slot_release),
            self.service,
            self.ready_endpoints
        )?;
        match &self.promoted {
            Some(p) if p.to > p.from => {
                writeln!(f, "  {} was brought from {} to {} pods before the flip", self.to, p.from, p.to)?
            }
            Some(p) => writeln!(f, "  {}'s preview ended at its {} pods before the flip", self.to, p.to)?,
            None => {}
        }
        for w in &self.workers {
            let gap = w
                .gap_ms
                .map(|ms| format!(" (stop-first: no consumer for {:.1}s)", ms as f64 / 1000.0))
                .unwrap_or_default();
            let count = |c: &WorkerCount| match c.desired {
                0 => format!("{} stopped", c.slot),
                _ => format!("{} {}/{} ready", c.slot, c.ready, c.desired),
            };
            writeln!(f, "  worker {}: {}, {}{gap}", w.name, count(&w.production), count(&w.stage))?;
        }
        for c in &self.cron_jobs {
            match c.runs_in {
                Some(slot) => writeln!(f, "  CronJob {}: runs in {slot}, suspended in {}", c.name, slot.other())?,
                None => writeln!(f, "  CronJob {}: suspended in both slots", c.name)?,
            }
        }
        writeln!(
            f,
            "  {} still runs {}{}: `bgslot rollback {release}` returns to it",
            self.from,
            self.previous_image,
            self.previous_release
                .as_ref()
                .map(|r| format!(" (release {r})"))
                .unwrap_or_default()
        )?;
        writeln!(f, "\nnext: {}", self.header.next_step())
    }
}
