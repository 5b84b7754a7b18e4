//! What a deploy reports, for either kind of slot: where the version went, how ready it is, where
//! to reach it (and, for a router, which release the slot is now), what next.

use std::fmt;

use serde::Serialize;

use crate::commands::Header;
use crate::slots::router::preflight::Hooks;
use crate::slots::router::Risk;
use crate::vocab::{Mode, Role, Slot};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeployReport {
    /// `operation` is `install` or `deploy`.
    #[serde(flatten)]
    pub header: Header,
    pub mode: Mode,
    /// The slot the version went to.
    pub slot: Slot,
    pub role: Role,
    pub image: String,
    pub ready: i32,
    pub desired: i32,
    pub service: Option<String>,
    pub url: String,
    /// Staged small (`--preview-replicas`): `swap` brings it to production's capacity first.
    pub preview: bool,
    /// The slot's workers as the deploy left them (at `stageReplicas` in a staged slot).
    pub workers: Vec<WorkerCount>,
    /// The release of the team's chart the slot is now (a router's; `null` for bgslot's chart).
    pub slot_release: Option<String>,
    pub slot_revision: Option<u64>,
    /// `NAME-VERSION` of that chart.
    pub chart: Option<String>,
    /// The risks its render has, accepted with `--accept`.
    pub accepted: Vec<Risk>,
    /// The hooks the write of the slot release ran (`path`: it installed or upgraded it), and
    /// those of the chart it did not run (a router's; `null` for bgslot's chart).
    pub hooks: Option<Hooks>,
    /// The version deployed, as a swap expects it (the tag, else the digest).
    #[serde(skip)]
    pub version: String,
}

/// A worker's pods in the slot.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WorkerCount {
    pub name: String,
    pub ready: i32,
    pub desired: i32,
}

impl fmt::Display for DeployReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} is ready ({}/{}) running {} as {}",
            self.header.release, self.slot, self.ready, self.desired, self.image, self.role
        )?;
        if let Some(release) = &self.slot_release {
            write!(
                f,
                " (release {release} revision {}, {})",
                self.slot_revision.unwrap_or_default(),
                self.chart.as_deref().unwrap_or("chart unknown")
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "  {} service: {} -> {}",
            self.role,
            self.service.as_deref().unwrap_or("(missing)"),
            self.url
        )?;
        if self.preview {
            writeln!(f, "  staged small: `bgslot swap {}` brings it to production's capacity first", self.header.release)?;
        }
        if !self.accepted.is_empty() {
            let accepted: Vec<&str> = self.accepted.iter().map(|r| r.as_str()).collect();
            writeln!(f, "  accepted risks: {}", accepted.join(", "))?;
        }
        if let Some(hooks) = &self.hooks {
            writeln!(f, "  hooks: {}", hooks.describe())?;
        }
        for w in &self.workers {
            match w.desired {
                0 => writeln!(f, "  worker {}: stopped", w.name)?,
                _ => writeln!(f, "  worker {}: {}/{} ready", w.name, w.ready, w.desired)?,
            }
        }
        writeln!(f, "\nnext: {}", self.header.next_step())
    }
}
