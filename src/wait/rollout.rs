//! Waiting on a slot's Deployments and pods, whatever kind the slot is: until its rollout is done
//! (after a deploy), or until none of its pods is left (after a clean).

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};

use kube::api::ListParams;

use super::{explain_pods, names, reasons, ticks};
use crate::cluster::labels::slot_selector;
use crate::cluster::state::pod_states;
use crate::cluster::{Cluster, DeploymentLive, PodState, SlotState, Totals};
use crate::events::{Event, Events, Rollout};
use crate::signals;
use crate::vocab::Slot;

/// What a slot's rollout is made of, whatever its kind: its Deployments, the ones whose pods
/// serve its traffic, and those pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRollout {
    pub deployments: Deployments,
    /// The Deployments whose pods serve the slot (they must run at least one); empty: all of them.
    pub routed: Vec<String>,
    /// The serving pods, for why they are not ready.
    pub pods: String,
}

/// How a slot's Deployments are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deployments {
    /// Those a label selector finds (bgslot's own chart labels its slots).
    Selected(String),
    /// These, by name (a release of another chart, as rendered).
    Named(Vec<String>),
}

impl SlotRollout {
    /// The web Deployment of a slot of bgslot's chart and its pods.
    pub fn of_chart(release: &str, slot: Slot) -> SlotRollout {
        let selector = slot_selector(release, slot);
        SlotRollout {
            deployments: Deployments::Selected(selector.clone()),
            routed: Vec::new(),
            pods: selector,
        }
    }

    fn includes(&self, d: &Deployment) -> bool {
        match &self.deployments {
            Deployments::Selected(_) => true,
            Deployments::Named(names) => {
                d.metadata.name.as_ref().is_some_and(|n| names.contains(n))
            }
        }
    }

    fn is_routed(&self, d: &DeploymentLive) -> bool {
        self.routed.is_empty() || self.routed.contains(&d.name)
    }

    /// Whether the rollout is done: every Deployment of it rolled out (a named one missing is
    /// not), the routed ones with at least one pod. `Ok` with the routed pods' totals, else the
    /// progress to show.
    pub fn rolled_out(&self, deployments: &[DeploymentLive]) -> Result<Totals, Totals> {
        let routed: Vec<&DeploymentLive> =
            deployments.iter().filter(|d| self.is_routed(d)).collect();
        let totals = Totals::of(routed.iter().copied());
        let present = match &self.deployments {
            Deployments::Selected(_) => !deployments.is_empty(),
            Deployments::Named(names) => names
                .iter()
                .all(|n| deployments.iter().any(|d| &d.name == n)),
        };
        let done = present
            && !routed.is_empty()
            && routed.iter().all(|d| d.state.desired > 0)
            && deployments.iter().all(DeploymentLive::complete);
        if done {
            Ok(totals)
        } else {
            Err(totals)
        }
    }

    /// Where the rollout stands, as a progress event says it: the routed pods ready, the pods not
    /// yet updated, old pods still counted, and why pods are not ready.
    pub fn progress(
        &self,
        slot: Slot,
        deployments: &[DeploymentLive],
        pods: &[PodState],
    ) -> Rollout {
        let routed = deployments.iter().filter(|d| self.is_routed(d));
        let state = routed.fold(SlotState::default(), |s, d| SlotState {
            desired: s.desired + d.state.desired,
            ready: s.ready + d.state.ready,
            updated: s.updated + d.state.updated,
            total: s.total + d.state.total,
            ..s
        });
        Rollout {
            target: None,
            slot,
            worker: None,
            ready: state.ready,
            desired: state.desired,
            detail: state.rollout_detail(&reasons(pods)),
        }
    }

    /// The Deployments that keep the rollout from being done, for a message: none for a slot
    /// of one Deployment, whose counts say it all.
    fn behind(&self, deployments: &[DeploymentLive]) -> Vec<String> {
        if matches!(self.deployments, Deployments::Selected(_)) && deployments.len() <= 1 {
            return Vec::new();
        }
        let missing = match &self.deployments {
            Deployments::Named(names) => names
                .iter()
                .filter(|n| !deployments.iter().any(|d| &&d.name == n))
                .map(|n| format!("{n} missing"))
                .collect(),
            Deployments::Selected(_) => Vec::new(),
        };
        deployments
            .iter()
            .filter(|d| !d.complete())
            .map(DeploymentLive::progress)
            .chain(missing)
            .collect()
    }
}

/// The rollout as a wait saw it at its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledOut {
    /// The routed pods.
    pub totals: Totals,
    pub deployments: Vec<DeploymentLive>,
}

/// Waits until the slot's rollout is done ([`SlotRollout::rolled_out`]), reporting progress as
/// it goes; on timeout the error names the Deployments behind and why their pods are not ready.
pub async fn slot_rolled_out(
    cluster: &Cluster,
    release: &str,
    slot: Slot,
    rollout: &SlotRollout,
    timeout: Duration,
    events: &dyn Events,
) -> Result<RolledOut> {
    let config = match &rollout.deployments {
        Deployments::Selected(selector) => watcher::Config::default().labels(selector),
        Deployments::Named(_) => watcher::Config::default(),
    };
    let (deployments, dep_writer) = reflector::store::<Deployment>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let dep_stream =
        reflector::reflector(dep_writer, watcher(cluster.deployments(), config.clone()))
            .default_backoff()
            .map(|e| e.map(|_| ()).map_err(|e| e.to_string()));
    let pod_stream = reflector::reflector(
        pod_writer,
        watcher(
            cluster.pods(),
            watcher::Config::default().labels(&rollout.pods),
        ),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()).map_err(|e| e.to_string()));
    let mut stream = std::pin::pin!(futures::stream::select(dep_stream, pod_stream));
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut signals = signals::subscribe();
    let mut last_seen: Option<Rollout> = None;
    let mut last_error: Option<String> = None;
    let snapshot = |deployments: &Store<Deployment>, pods: &Store<Pod>| {
        let live: Vec<DeploymentLive> = deployments
            .state()
            .iter()
            .filter(|d| rollout.includes(d))
            .map(|d| DeploymentLive::of(d))
            .collect();
        (live, pod_states(pods.state().iter().map(|p| p.as_ref())))
    };
    let done = |live: Vec<DeploymentLive>| {
        let totals = rollout.rolled_out(&live).ok()?;
        events.event(Event::RolloutDone(&rollout.progress(slot, &live, &[])));
        Some(RolledOut {
            totals,
            deployments: live,
        })
    };
    loop {
        tokio::select! {
            event = stream.next() => {
                match event {
                    Some(Ok(())) => last_error = None,
                    Some(Err(err)) => {
                        if last_error.as_deref() != Some(&err) {
                            events.event(Event::Step(&format!("{slot}: watch interrupted ({err}); retrying")));
                        }
                        last_error = Some(err);
                        continue;
                    }
                    None => bail!("the watch on the {slot} slot of {release} ended unexpectedly"),
                }
                let (live, pod_states) = snapshot(&deployments, &pods);
                let seen = rollout.progress(slot, &live, &pod_states);
                let started = live.iter().any(|d| d.state.observed && d.state.desired > 0);
                if last_seen.as_ref() != Some(&seen) && started {
                    events.event(Event::Rollout(&seen));
                    last_seen = Some(seen);
                }
                if let Some(done) = done(live) {
                    return Ok(done);
                }
            }
            _ = &mut deadline => {
                // The stores may be empty if the API server was unreachable: ask once more directly.
                let (live, pod_states) = match read(cluster, rollout).await {
                    Ok(read) => read,
                    Err(_) => snapshot(&deployments, &pods),
                };
                let t = rollout.rolled_out(&live).unwrap_or_else(|t| t);
                let behind = rollout.behind(&live);
                if let Some(done) = done(live) {
                    return Ok(done);
                }
                let behind = if behind.is_empty() { String::new() } else { format!("not rolled out: {}; ", behind.join(", ")) };
                let api_note = last_error.map(|e| format!("; the API server was last unreachable: {e}")).unwrap_or_default();
                return Err(anyhow!(
                    "timed out after {}s waiting for the {slot} slot of {release} in namespace {}: {}/{} ready; {behind}{}{api_note}",
                    timeout.as_secs(), cluster.namespace, t.ready, t.desired, explain_pods(&pod_states)
                ));
            }
            sig = signals.changed_to_signal() => {
                bail!("interrupted by {} while waiting for the {slot} slot of {release}", signals::name(sig));
            }
        }
    }
}

/// The rollout's Deployments and pods, read once.
async fn read(
    cluster: &Cluster,
    rollout: &SlotRollout,
) -> Result<(Vec<DeploymentLive>, Vec<PodState>)> {
    let params = match &rollout.deployments {
        Deployments::Selected(selector) => ListParams::default().labels(selector),
        Deployments::Named(_) => ListParams::default(),
    };
    let (deployments, pods) = tokio::try_join!(
        async { Ok::<_, anyhow::Error>(cluster.deployments().list(&params).await?.items) },
        cluster.pods_matching(&rollout.pods),
    )?;
    let live = deployments
        .iter()
        .filter(|d| rollout.includes(d))
        .map(DeploymentLive::of)
        .collect();
    Ok((live, pods))
}

/// After a clean: waits until no pod `selector` selects is left (a slot's web pods and workers),
/// terminating ones included, so the old version no longer answers anyone (keep-alive clients
/// stay on a pod until it stops) and consumes nothing. The slot is `retired` already ("disabled",
/// "uninstalled"). Reads the pods once, then again at each pod event. Returns how many pods were
/// stopping at first.
pub async fn pods_gone(
    cluster: &Cluster,
    release: &str,
    slot: Slot,
    selector: &str,
    retired: &str,
    timeout: Duration,
    events: &dyn Events,
) -> Result<usize> {
    if selector.is_empty() {
        return Ok(0);
    }
    // The watch starts with a list of its own, which wakes the loop once more: a pod that goes
    // between the first read and the watch's start is not missed.
    let mut changes = ticks(cluster.pods(), watcher::Config::default().labels(selector));
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut signals = signals::subscribe();
    let mut left = cluster.pods_matching(selector).await?;
    let stopping = left.len();
    let mut shown = None;
    while !left.is_empty() {
        if shown != Some(left.len()) {
            events.step(&format!(
                "{release}: waiting for {} {slot} pod(s) to stop (preStop, then in-flight requests): {}",
                left.len(),
                names(&left)
            ));
            shown = Some(left.len());
        }
        tokio::select! {
            change = changes.next() => {
                if change.is_none() {
                    bail!("the watch on the {slot} pods of {release} ended unexpectedly");
                }
                while let Some(Some(())) = changes.next().now_or_never() {}
                left = cluster.pods_matching(selector).await?;
            }
            _ = &mut deadline => bail!(
                "the {slot} slot of {release} is {retired}, but {} of its pods still run after {}s: {}; \
                 check their finalizers and node with `kubectl get pods -n {} -l {selector}`",
                left.len(), timeout.as_secs(), names(&left), cluster.namespace
            ),
            sig = signals.changed_to_signal() => bail!(
                "interrupted by {} while waiting for the {slot} pods of {release} to stop; the slot is {retired} already",
                signals::name(sig)
            ),
        }
    }
    Ok(stopping)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{deployment, pod};

    #[test]
    fn progress_sums_the_routed_deployments_and_names_the_reasons_once() {
        let rollout = SlotRollout::of_chart("web", Slot::Green);
        let pods = [
            pod("a", true, None, 0),
            pod("b", false, Some("ImagePullBackOff"), 0),
            pod("c", false, Some("ImagePullBackOff"), 0),
        ];
        let mut starting = deployment("web-green", 1, 3);
        starting.state.total = 4;
        assert_eq!(
            rollout.progress(Slot::Green, &[starting], &pods).line(),
            "green: 1/3 ready, 1 old pods (ImagePullBackOff)"
        );
    }

    #[test]
    fn a_slot_is_rolled_out_when_every_deployment_is_and_the_routed_ones_run_pods() {
        let rollout = SlotRollout {
            deployments: Deployments::Named(vec![
                "web-green-myapp".into(),
                "web-green-worker".into(),
            ]),
            routed: vec!["web-green-myapp".into()],
            pods: "app=myapp".into(),
        };
        let worker = deployment("web-green-worker", 0, 0);
        let app = deployment("web-green-myapp", 3, 3);
        let done = |d: &[DeploymentLive]| rollout.rolled_out(d);
        assert_eq!(
            done(&[app.clone(), worker.clone()]),
            Ok(Totals {
                ready: 3,
                available: 3,
                desired: 3
            })
        );
        let starting = deployment("web-green-myapp", 1, 3);
        assert_eq!(
            done(&[starting, worker.clone()]),
            Err(Totals {
                ready: 1,
                available: 1,
                desired: 3
            })
        );
        assert!(
            done(std::slice::from_ref(&app)).is_err(),
            "a missing Deployment is not rolled out"
        );
        assert_eq!(rollout.behind(&[app]), ["web-green-worker missing"]);
        // A routed Deployment scaled to zero is not rolled out; a chart's own slot is one
        // Deployment found by its labels.
        assert!(done(&[deployment("web-green-myapp", 0, 0), worker]).is_err());
        let chart = SlotRollout::of_chart("web", Slot::Green);
        assert!(chart.rolled_out(&[deployment("web-green", 3, 3)]).is_ok());
        assert!(chart.rolled_out(&[]).is_err());
    }
}
