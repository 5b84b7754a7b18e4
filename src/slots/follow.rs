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
