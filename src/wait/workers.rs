//! Waiting on a slot's workers after a swap (or a deploy that stages them running): until each
//! named worker runs exactly what it should, its desired pods new and available, and no pod more,
//! terminating ones included, so a stopped worker has really stopped consuming.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;

use super::{explain_pods, reasons, ticks};
use crate::cluster::labels::workers_selector;
use crate::cluster::state::pod_states;
use crate::cluster::{Cluster, Followers, PodState, WorkerState};
use crate::events::{Event, Events, Rollout};
use crate::signals;
use crate::vocab::Slot;

/// One worker as a wait sees it: its Deployment and its pods (terminating ones too).
#[derive(Debug, Clone)]
pub struct WorkerPods {
    pub worker: WorkerState,
    pub pods: Vec<PodState>,
}

impl WorkerPods {
    /// Runs what it should: the Deployment settled and no pod beyond its desired count.
    pub fn done(&self) -> bool {
        self.worker.settled() && self.pods.len() == self.worker.state.desired.max(0) as usize
    }

    fn rollout(&self) -> Rollout {
        let s = &self.worker.state;
        let mut detail = s.rollout_detail(&reasons(&self.pods));
        let stopping = self.pods.iter().filter(|p| p.terminating).count();
        if stopping > 0 {
            detail.push_str(&format!(", {stopping} stopping"));
        }
        Rollout {
            target: None,
            slot: self.worker.slot,
            worker: Some(self.worker.name.clone()),
            ready: s.ready,
            desired: s.desired,
            detail,
        }
    }
}

/// Waits until every worker of `slot` named in `names` is [`WorkerPods::done`]; returns them.
/// On timeout the error names each worker that is not, with its pods and why.
pub async fn workers_settled(
    cluster: &Cluster,
    release: &str,
    followers: &Followers,
    slot: Slot,
    names: &[String],
    timeout: Duration,
    events: &dyn Events,
) -> Result<Vec<WorkerPods>> {
    let names: Vec<String> = names
        .iter()
        .filter(|name| followers.has_worker(name, slot))
        .cloned()
        .collect();
    let names = names.as_slice();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    // A router's workers carry its chart's labels, not bgslot's: watch the namespace.
    let selector = match followers {
        Followers::Labelled => workers_selector(release, Some(slot)),
        Followers::Named(_) => String::new(),
    };
    let config = || watcher::Config::default().labels(&selector);
    let mut changes = futures::stream::select_all([
        ticks(cluster.api::<Deployment>(), config()),
        ticks(cluster.api::<Pod>(), config()),
    ]);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut signals = signals::subscribe();
    let mut shown: BTreeMap<String, Rollout> = BTreeMap::new();
    loop {
        let seen = read(cluster, release, followers, slot, names).await?;
        for w in &seen {
            let rollout = w.rollout();
            if shown.get(&w.worker.name) != Some(&rollout) {
                events.event(if w.done() {
                    Event::RolloutDone(&rollout)
                } else {
                    Event::Rollout(&rollout)
                });
                shown.insert(w.worker.name.clone(), rollout);
            }
        }
        if seen.len() == names.len() && seen.iter().all(WorkerPods::done) {
            return Ok(seen);
        }
        tokio::select! {
            change = changes.next() => {
                if change.is_none() {
                    bail!("the watch on the {slot} workers of {release} ended unexpectedly");
                }
                while let Some(Some(())) = changes.next().now_or_never() {}
            }
            _ = &mut deadline => {
                let behind: Vec<String> = names
                    .iter()
                    .map(|name| match seen.iter().find(|w| &w.worker.name == name) {
                        None => format!("worker {name}: no Deployment in {slot}"),
                        Some(w) => format!(
                            "worker {name}: {}/{} ready, {} pod(s); {}",
                            w.worker.state.ready, w.worker.state.desired, w.pods.len(), explain_pods(&w.pods)
                        ),
                    })
                    .collect();
                bail!(
                    "timed out after {}s waiting for the {slot} workers of {release} in namespace {}: {}",
                    timeout.as_secs(), cluster.namespace, behind.join("; ")
                );
            }
            sig = signals.changed_to_signal() => {
                bail!("interrupted by {} while waiting for the {slot} workers of {release}", signals::name(sig));
            }
        }
    }
}

/// The named workers of `slot` with their pods, read now.
async fn read(
    cluster: &Cluster,
    release: &str,
    followers: &Followers,
    slot: Slot,
    names: &[String],
) -> Result<Vec<WorkerPods>> {
    let workers = cluster.workers_in(release, followers, Some(slot)).await?;
    let mut out = Vec::new();
    for worker in workers.into_iter().filter(|w| names.contains(&w.name)) {
        let pods = if worker.pods.is_empty() {
            Vec::new()
        } else {
            cluster.pods_of(&worker.pods).await?
        };
        out.push(WorkerPods {
            pods: pod_states(&pods),
            worker,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::SlotState;

    fn worker(desired: i32, ready: i32, total: i32) -> WorkerState {
        WorkerState {
            name: "consumer".into(),
            slot: Slot::Blue,
            requires: Vec::new(),
            pods: String::new(),
            state: SlotState {
                deployment: Some("web-blue-consumer".into()),
                desired,
                ready,
                available: ready,
                updated: ready,
                total,
                observed: true,
                ..Default::default()
            },
        }
    }

    fn pod(terminating: bool) -> PodState {
        PodState {
            name: "p".into(),
            ready: !terminating,
            terminating,
            phase: "Running".into(),
            reason: None,
            restarts: 0,
        }
    }

    #[test]
    fn a_stopped_worker_has_no_pod_left_not_even_a_terminating_one() {
        let stopping = WorkerPods {
            worker: worker(0, 0, 0),
            pods: vec![pod(true)],
        };
        assert!(!stopping.done(), "a terminating pod still finishes its job");
        assert!(
            stopping.rollout().line().ends_with("0/0 ready, 1 stopping"),
            "{}",
            stopping.rollout().line()
        );
        assert!(WorkerPods {
            worker: worker(0, 0, 0),
            pods: vec![]
        }
        .done());
        assert!(WorkerPods {
            worker: worker(2, 2, 2),
            pods: vec![pod(false), pod(false)]
        }
        .done());
        assert!(!WorkerPods {
            worker: worker(2, 1, 2),
            pods: vec![pod(false), pod(false)]
        }
        .done());
    }
}
