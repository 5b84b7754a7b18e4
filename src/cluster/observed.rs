//! Everything the cluster shows for one release, read at once: each slot's web Deployment, its
//! workers and CronJobs, the Services and where they route, each slot's migration, GitOps marks.

use std::collections::BTreeMap;

use super::gitops::GitOpsMarks;
use super::services::{main_service, RoutedService};
use super::state::{MigrationState, SlotState};
use super::workloads::{ConfigRef, CronJobState, WorkerState};
use crate::vocab::{PerSlot, Role, Slot};

/// What the cluster shows for one release.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub slots: PerSlot<SlotState>,
    /// The Services that play a role: the main pair, then the variants of `extraServices`.
    pub services: Vec<RoutedService>,
    /// Each slot's migration Job.
    pub migrations: BTreeMap<Slot, MigrationState>,
    /// Each worker's Deployment in each slot, by name then slot.
    pub workers: Vec<WorkerState>,
    /// Each CronJob in each slot, by name then slot.
    pub cron_jobs: Vec<CronJobState>,
    /// A GitOps controller's marks on the release's Services.
    pub gitops: Option<GitOpsMarks>,
    /// `NAME-VERSION` from the `helm.sh/chart` label of the release's Services: the chart the
    /// latest revision rendered.
    pub chart: Option<String>,
    /// What the staged slot's workers require ([`WorkerState::requires`]) and does not exist;
    /// read by `swap` only ([`crate::cluster::Cluster::absent`]), empty elsewhere.
    pub absent_config: Vec<ConfigRef>,
}

impl Observed {
    pub fn slot(&self, slot: Slot) -> &SlotState {
        &self.slots[slot]
    }

    /// The main Service with `role`.
    pub fn service(&self, role: Role) -> Option<&RoutedService> {
        main_service(&self.services, role)
    }

    pub fn migration(&self, slot: Slot) -> Option<&MigrationState> {
        self.migrations.get(&slot)
    }

    /// The worker `name` in `slot`, if its Deployment exists.
    pub fn worker(&self, name: &str, slot: Slot) -> Option<&WorkerState> {
        self.workers
            .iter()
            .find(|w| w.name == name && w.slot == slot)
    }

    /// The workers of `slot`.
    pub fn workers_of(&self, slot: Slot) -> impl Iterator<Item = &WorkerState> {
        self.workers.iter().filter(move |w| w.slot == slot)
    }

    /// The CronJobs of `slot`.
    pub fn cron_jobs_of(&self, slot: Slot) -> impl Iterator<Item = &CronJobState> {
        self.cron_jobs.iter().filter(move |c| c.slot == slot)
    }

    /// Whether anything of the release exists (a Service or a slot's Deployment).
    pub fn anything(&self) -> bool {
        !self.services.is_empty() || Slot::ALL.iter().any(|&s| self.slot(s).deployment.is_some())
    }
}
