//! What a deploy reports: where the version went, how ready it is, where to reach it, what next.

use std::fmt;

use serde::Serialize;

use crate::cluster::SlotState;
use crate::commands::Header;
use crate::observe::Observation;
use crate::rules;
use crate::wait::workers::WorkerPods;
use crate::vocab::{Op, Role, Slot};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeployReport {
    /// `operation` is `install` or `deploy`.
    #[serde(flatten)]
    pub header: Header,
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
}

/// A worker's pods in the slot.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WorkerCount {
    pub name: String,
    pub ready: i32,
    pub desired: i32,
}

impl DeployReport {
    /// The report of a deploy (or install) into `slot`, from the release as it is `after` it and
    /// the state its wait ended with.
    pub fn new(after: &Observation, install: bool, slot: Slot, state: &SlotState, workers: &[WorkerPods]) -> DeployReport {
        let values = &after.values;
        let role = if install { Role::Production } else { Role::Stage };
        let service = after.cluster.service(role).map(|s| s.name.clone());
        let op = if install { Op::Install } else { Op::Deploy };
        DeployReport {
            header: Header::of(op, after).next(rules::next_step(&after.release, values, &after.cluster, after.latest())),
            slot,
            role,
            image: state.image.clone().unwrap_or_else(|| values.slot(slot).image()),
            ready: state.ready,
            desired: state.desired,
            url: values.url(role, service.as_deref().unwrap_or("SERVICE"), &after.namespace),
            service,
            preview: values.slot(slot).preview,
            workers: workers
                .iter()
                .map(|w| WorkerCount {
                    name: w.worker.name.clone(),
                    ready: w.worker.state.ready,
                    desired: w.worker.state.desired,
                })
                .collect(),
        }
    }
}

impl fmt::Display for DeployReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} is ready ({}/{}) running {} as {}",
            self.header.release, self.slot, self.ready, self.desired, self.image, self.role
        )?;
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
        for w in &self.workers {
            match w.desired {
                0 => writeln!(f, "  worker {}: stopped", w.name)?,
                _ => writeln!(f, "  worker {}: {}/{} ready", w.name, w.ready, w.desired)?,
            }
        }
        writeln!(f, "\nnext: {}", self.header.next_step())
    }
}
