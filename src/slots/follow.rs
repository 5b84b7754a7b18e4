//! Whether what follows production runs where the record says, for slots whose workers and
//! CronJobs bgslot moves through the API (a router's): each worker at its production size in the
//! production slot and at the stage's in the other, each CronJob suspended unless its slot is
//! production. A swap interrupted between the router's write and those moves leaves them
//! unsettled; `status` says so and `recover` settles them. Pure.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use super::Seen;
use crate::cluster::Followers;
use crate::vocab::Slot;
use crate::workers::Desired;

/// One move that did not happen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Settle {
    /// Scale a worker's Deployment.
    Scale {
        worker: String,
        slot: Slot,
        deployment: String,
        from: i32,
        to: u64,
    },
    /// Suspend a CronJob, or let it run.
    Suspend {
        name: String,
        slot: Slot,
        cron_job: String,
        suspend: bool,
    },
}

impl fmt::Display for Settle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Settle::Scale { worker, slot, deployment, from, to } => write!(
                f,
                "worker {worker} in {slot} runs {from} replicas, not {to} (Deployment {deployment})"
            ),
            Settle::Suspend { name, slot, cron_job, suspend: true } => write!(
                f,
                "CronJob {name} in {slot} runs, though its slot is not production (CronJob {cron_job})"
            ),
            Settle::Suspend { name, slot, cron_job, suspend: false } => write!(
                f,
                "CronJob {name} in {slot} is suspended, though its slot is production (CronJob {cron_job})"
            ),
        }
    }
}

impl Settle {
    /// What settling it does, as a step reads.
    pub fn action(&self) -> String {
        match self {
            Settle::Scale {
                worker,
                slot,
                deployment,
                from,
                to,
            } => {
                format!("scale the worker {worker} in {slot} from {from} to {to} replicas (Deployment {deployment})")
            }
            Settle::Suspend {
                name,
                slot,
                cron_job,
                suspend,
            } => format!(
                "{} CronJob {name} in {slot} (CronJob {cron_job})",
                if *suspend { "suspend" } else { "resume" }
            ),
        }
    }
}

/// What does not run where the record says (nothing for bgslot's chart, whose own writes move
/// its workers and CronJobs and whose helm state says when they did not).
pub fn unsettled<K>(seen: &Seen<K>) -> Vec<Settle> {
    if seen.followers == Followers::Labelled {
        return Vec::new();
    }
    let production = seen.production();
    let (values, observed) = (&seen.release.values, &seen.release.cluster);
    let mut out = Vec::new();
    for w in &values.workloads.workers {
        for slot in Slot::ALL {
            let Some(live) = observed.worker(&w.name, slot) else {
                continue;
            };
            let have = live.state.desired;
            let want = match w.desired(slot, production, &BTreeSet::new()) {
                Desired::Replicas(n) => n,
                // At 0 replicas an HPA stands aside: it never brings a worker back by itself.
                Desired::Autoscaled if have == 0 => w.replicas[slot],
                Desired::Autoscaled => continue,
            };
            if have.max(0) as u64 != want {
                out.push(Settle::Scale {
                    worker: w.name.clone(),
                    slot,
                    deployment: live.state.deployment.clone().unwrap_or_default(),
                    from: have,
                    to: want,
                });
            }
        }
    }
    for c in &observed.cron_jobs {
        let suspend = c.slot != production;
        if c.suspended != suspend {
            out.push(Settle::Suspend {
                name: c.name.clone(),
                slot: c.slot,
                cron_job: c.cron_job.clone(),
                suspend,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{CronJobState, SlotState, WorkerState};
    use crate::slots::router::fixtures;
    use crate::slots::router::observe::{followers, workloads};
    use crate::slots::router::values::{CronJobRecord, WorkerRecord};

    /// A router with blue in production, each slot with a worker and a CronJob, as they run.
    fn seen(blue: i32, green: i32, suspended: [bool; 2]) -> Seen<crate::slots::Router> {
        let mut seen = fixtures::seen(
            Slot::Blue,
            true,
            &["bgslot install blue v1", "bgslot deploy green v2"],
        );
        for slot in Slot::ALL {
            let record = seen.kind.values.slot_mut(slot);
            record.workers = vec![WorkerRecord {
                name: "sidekiq".into(),
                deployment: format!("web-{slot}-sidekiq"),
                replicas: 3,
                autoscaled: false,
            }];
            record.cron_jobs = vec![CronJobRecord {
                name: "nightly".into(),
                cron_job: format!("web-{slot}-nightly"),
            }];
        }
        let router = &seen.kind.values;
        seen.followers = followers(router);
        seen.release.values.workloads = workloads(router);
        seen.release.cluster.workers = [(Slot::Blue, blue), (Slot::Green, green)]
            .map(|(slot, desired)| WorkerState {
                name: "sidekiq".into(),
                slot,
                state: SlotState {
                    deployment: Some(format!("web-{slot}-sidekiq")),
                    desired,
                    ..SlotState::default()
                },
                requires: Vec::new(),
                pods: String::new(),
            })
            .to_vec();
        seen.release.cluster.cron_jobs = [(Slot::Blue, suspended[0]), (Slot::Green, suspended[1])]
            .map(|(slot, suspended)| CronJobState {
                name: "nightly".into(),
                slot,
                cron_job: format!("web-{slot}-nightly"),
                schedule: "0 3 * * *".into(),
                suspended,
                last_schedule: None,
            })
            .to_vec();
        seen
    }

    #[test]
    fn a_router_s_workers_and_cron_jobs_run_where_its_record_says_or_are_unsettled() {
        assert_eq!(unsettled(&seen(3, 0, [false, true])), []);
        // A swap to green interrupted after the router's write: nothing moved yet.
        let mut moved = seen(3, 0, [false, true]);
        moved.release.values.production = Slot::Green;
        let shown: Vec<String> = unsettled(&moved).iter().map(|s| s.action()).collect();
        assert_eq!(
            shown,
            [
                "scale the worker sidekiq in blue from 3 to 0 replicas (Deployment web-blue-sidekiq)",
                "scale the worker sidekiq in green from 0 to 3 replicas (Deployment web-green-sidekiq)",
                "suspend CronJob nightly in blue (CronJob web-blue-nightly)",
                "resume CronJob nightly in green (CronJob web-green-nightly)",
            ]
        );
        // bgslot's chart moves its own by its writes: nothing to settle here.
        moved.followers = Followers::Labelled;
        assert_eq!(unsettled(&moved), []);
    }

    #[test]
    fn a_worker_only_one_slot_records_exists_there_only() {
        let mut seen = seen(3, 0, [false, true]);
        seen.kind.values.slot_mut(Slot::Green).workers.clear();
        let followers = followers(&seen.kind.values);
        assert!(followers.has_worker("sidekiq", Slot::Blue));
        assert!(!followers.has_worker("sidekiq", Slot::Green));
        assert!(Followers::Labelled.has_worker("sidekiq", Slot::Green));
        let w = &workloads(&seen.kind.values).workers[0];
        assert_eq!((w.replicas.blue, w.replicas.green), (3, 0));
    }
}
