//! Waiting on a slot's Deployment and pods: until it is fully available (after a deploy), or until
//! none of its pods is left (after a clean).

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};

use super::{explain_pods, names, reasons, ticks};
use crate::cluster::labels::{slot_running_selector, slot_selector};
use crate::cluster::state::pod_states;
use crate::cluster::{Cluster, PodState, SlotState};
use crate::events::{Event, Events, Rollout};
use crate::signals;
use crate::vocab::Slot;

/// The slot's rollout as a progress event says it.
pub fn rollout(slot: Slot, state: &SlotState, pods: &[PodState]) -> Rollout {
    Rollout {
        slot,
        worker: None,
        ready: state.ready,
        desired: state.desired,
        detail: state.rollout_detail(&reasons(pods)),
    }
}

/// Waits until the slot's Deployment is fully available.
pub async fn slot_available(
    cluster: &Cluster,
    release: &str,
    slot: Slot,
    timeout: Duration,
    events: &dyn Events,
) -> Result<SlotState> {
    let selector = slot_selector(release, slot);
    let (deployments, dep_writer) = reflector::store::<Deployment>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let dep_stream = reflector::reflector(
        dep_writer,
        watcher(
            cluster.deployments(),
            watcher::Config::default().labels(&selector),
        ),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()).map_err(|e| e.to_string()));
    let pod_stream = reflector::reflector(
        pod_writer,
        watcher(cluster.pods(), watcher::Config::default().labels(&selector)),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()).map_err(|e| e.to_string()));
    let mut stream = std::pin::pin!(futures::stream::select(dep_stream, pod_stream));
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut signals = signals::subscribe();
    let mut last_seen: Option<Rollout> = None;
    let mut last_error: Option<String> = None;
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
                let (state, pod_states) = snapshot(&deployments, &pods);
                let seen = rollout(slot, &state, &pod_states);
                if last_seen.as_ref() != Some(&seen) && state.deployment.is_some() && state.desired > 0 && state.observed {
                    events.event(Event::Rollout(&seen));
                    last_seen = Some(seen);
                }
                if state.fully_available() {
                    events.event(Event::RolloutDone(&rollout(slot, &state, &[])));
                    return Ok(state);
                }
            }
            _ = &mut deadline => {
                // The stores may be empty if the API server was unreachable: ask once more directly.
                let (state, pod_states) = match (cluster.slot(release, slot).await, cluster.slot_pods(release, slot).await) {
                    (Ok(s), Ok(p)) => (s, p),
                    _ => snapshot(&deployments, &pods),
                };
                if state.fully_available() {
                    events.event(Event::RolloutDone(&rollout(slot, &state, &[])));
                    return Ok(state);
                }
                let api_note = last_error.map(|e| format!("; the API server was last unreachable: {e}")).unwrap_or_default();
                return Err(anyhow!(
                    "timed out after {}s waiting for the {slot} slot of {release} in namespace {}: {}/{} ready; {}{api_note}",
                    timeout.as_secs(), cluster.namespace, state.ready, state.desired, explain_pods(&pod_states)
                ));
            }
            sig = signals.changed_to_signal() => {
                bail!("interrupted by {} while waiting for the {slot} slot of {release}", signals::name(sig));
            }
        }
    }
}

fn snapshot(deployments: &Store<Deployment>, pods: &Store<Pod>) -> (SlotState, Vec<PodState>) {
    let state = SlotState::of_first(deployments.state().iter().map(|d| d.as_ref()));
    (state, pod_states(pods.state().iter().map(|p| p.as_ref())))
}

/// After a clean: waits until no pod of `slot` is left (web pods and workers), terminating ones
/// included, so the old version no longer answers anyone (keep-alive clients stay on a pod until
/// it stops) and consumes nothing. Reads the pods once, then again at each pod event. Returns how
/// many pods were stopping at first.
pub async fn slot_stopped(
    cluster: &Cluster,
    release: &str,
    slot: Slot,
    timeout: Duration,
    events: &dyn Events,
) -> Result<usize> {
    let selector = slot_running_selector(release, slot);
    // The watch starts with a list of its own, which wakes the loop once more: a pod that goes
    // between the first read and the watch's start is not missed.
    let mut changes = ticks(cluster.pods(), watcher::Config::default().labels(&selector));
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut signals = signals::subscribe();
    let mut left = cluster.pods_matching(&selector).await?;
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
                left = cluster.pods_matching(&selector).await?;
            }
            _ = &mut deadline => bail!(
                "the {slot} slot of {release} is disabled, but {} of its pods still run after {}s: {}; \
                 check their finalizers and node with `kubectl get pods -n {} -l {selector}`",
                left.len(), timeout.as_secs(), names(&left), cluster.namespace
            ),
            sig = signals.changed_to_signal() => bail!(
                "interrupted by {} while waiting for the {slot} pods of {release} to stop; the slot is disabled already",
                signals::name(sig)
            ),
        }
    }
    Ok(stopping)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_names_the_reasons_once() {
        let state = SlotState {
            deployment: Some("d".into()),
            desired: 3,
            ready: 1,
            available: 1,
            updated: 3,
            total: 3,
            ..Default::default()
        };
        let pod = |name: &str, ready, reason: Option<&str>| PodState {
            name: name.into(),
            ready,
            terminating: false,
            phase: "Running".into(),
            reason: reason.map(str::to_string),
            restarts: 0,
        };
        let pods = [
            pod("a", true, None),
            pod("b", false, Some("ImagePullBackOff")),
            pod("c", false, Some("ImagePullBackOff")),
        ];
        assert_eq!(
            rollout(Slot::Green, &state, &pods).line(),
            "green: 1/3 ready (ImagePullBackOff)"
        );
    }
}
