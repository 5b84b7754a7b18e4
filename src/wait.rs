//! bgslot's own waiting, instead of `helm --wait`: it watches the slot's Deployment and pods,
//! shows progress (`green: 2/3 ready`), and on timeout says which pods failed and why.
//!
//! Every wait is driven by watches (kube-runtime's watcher with backoff), so a change is noticed
//! when it happens rather than at the next poll, and a restarting API server delays the wait
//! instead of failing it.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};

use crate::cluster::{
    pod_state, slot_selector, Cluster, MigrationPhase, MigrationState, PodState, Role,
    ServiceState, Services, SlotState,
};
use crate::output::progress;
use crate::signals;
use crate::values::Slot;

/// Where a wait reports what it sees; the caller decides how it is shown (a live bar on a
/// terminal, a line per change in a log).
pub trait Reporter: Send {
    /// The slot's rollout changed: its state and why its pods are not ready, when they say.
    fn slot(&mut self, slot: Slot, state: &SlotState, reasons: &[String]);
    /// The slot is fully available: the wait is over.
    fn done(&mut self, slot: Slot, state: &SlotState);
    /// Something worth a line of its own (a watch interruption, a migration's progress).
    fn note(&mut self, text: &str);
}

pub type Progress<'a> = &'a mut dyn Reporter;

/// The slot's progress as one line: `green: 2/3 ready, 1 old pods (readiness probe failing)`.
pub fn progress_line(slot: Slot, state: &SlotState, reasons: &[String]) -> String {
    let mut line = format!(
        "{slot}: {}/{} ready",
        state.ready.min(state.desired),
        state.desired
    );
    line.push_str(&rollout_detail(state, reasons));
    line
}

/// What besides the ready count a progress report says: pods not yet updated, old pods still
/// counted, and why pods are not ready.
pub fn rollout_detail(state: &SlotState, reasons: &[String]) -> String {
    let mut detail = String::new();
    if state.updated < state.desired {
        detail.push_str(&format!(", {}/{} updated", state.updated, state.desired));
    }
    if state.total > state.desired {
        detail.push_str(&format!(", {} old pods", state.total - state.desired));
    }
    if !reasons.is_empty() {
        detail.push_str(&format!(" ({})", reasons.join(", ")));
    }
    detail
}

/// Why pods are not ready, each reason once, leaving out the states every pod passes through.
fn reasons(pods: &[PodState]) -> Vec<String> {
    let mut reasons: Vec<String> = pods
        .iter()
        .filter(|p| !p.ready && !p.terminating)
        .filter_map(|p| p.reason.clone())
        .filter(|r| !is_starting(r))
        .collect();
    reasons.sort();
    reasons.dedup();
    reasons
}

/// States every pod passes through on its way up: not worth a progress line of their own.
fn is_starting(reason: &str) -> bool {
    matches!(
        reason,
        "ContainerCreating" | "PodInitializing" | "Pending" | "Pending: not scheduled"
    )
}

/// Describes the pods that keep a slot from being available, for the timeout error.
pub fn explain_pods(pods: &[PodState]) -> String {
    let bad: Vec<String> = pods
        .iter()
        .filter(|p| !p.ready && !p.terminating)
        .map(|p| {
            let mut s = format!(
                "pod {}: {}",
                p.name,
                p.reason.as_deref().unwrap_or("not ready")
            );
            if p.restarts > 0 {
                s.push_str(&format!(" ({} restarts)", p.restarts));
            }
            s
        })
        .collect();
    if bad.is_empty() {
        "no pod reports a problem (the Deployment may be blocked by quota or scheduling)".into()
    } else {
        bad.join("; ")
    }
}

/// Waits until the slot's Deployment is fully available.
pub async fn slot_available(
    cluster: &Cluster,
    release: &str,
    slot: Slot,
    timeout: Duration,
    progress: Progress<'_>,
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
    let mut events = std::pin::pin!(futures::stream::select(dep_stream, pod_stream));
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut signals = signals::subscribe();
    let mut last_seen = None;
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            event = events.next() => {
                match event {
                    Some(Ok(())) => last_error = None,
                    Some(Err(err)) => {
                        if last_error.as_deref() != Some(&err) {
                            progress.note(&format!("{slot}: watch interrupted ({err}); retrying"));
                        }
                        last_error = Some(err);
                        continue;
                    }
                    None => bail!("the watch on the {slot} slot of {release} ended unexpectedly"),
                }
                let (state, pod_states) = snapshot(&deployments, &pods);
                let why = reasons(&pod_states);
                let seen = Some(progress_line(slot, &state, &why));
                if seen != last_seen && state.deployment.is_some() && state.desired > 0 && state.observed {
                    progress.slot(slot, &state, &why);
                    last_seen = seen;
                }
                if state.fully_available() {
                    progress.done(slot, &state);
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
                    progress.done(slot, &state);
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

/// After a clean: waits until no pod of `slot` is left, terminating ones included, so the old
/// version no longer answers anyone (keep-alive clients stay on a pod until it stops). Reads the
/// pods once, then again at each pod event. Returns how many pods were stopping at first.
pub async fn slot_stopped(
    cluster: &Cluster,
    release: &str,
    slot: Slot,
    timeout: Duration,
) -> Result<usize> {
    let selector = slot_selector(release, slot);
    // The watch starts with a list of its own, which wakes the loop once more: a pod that goes
    // between the first read and the watch's start is not missed.
    let mut changes = ticks(cluster.pods(), watcher::Config::default().labels(&selector));
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut signals = signals::subscribe();
    let mut left = cluster.slot_pods(release, slot).await?;
    let stopping = left.len();
    let mut shown = None;
    while !left.is_empty() {
        if shown != Some(left.len()) {
            progress(&format!(
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
                left = cluster.slot_pods(release, slot).await?;
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

fn names(pods: &[PodState]) -> String {
    pods.iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn snapshot(deployments: &Store<Deployment>, pods: &Store<Pod>) -> (SlotState, Vec<PodState>) {
    let state = deployments
        .state()
        .first()
        .map(|d| SlotState::from_deployment(d))
        .unwrap_or_default();
    let mut pod_states: Vec<PodState> = pods.state().iter().map(|p| pod_state(p)).collect();
    pod_states.sort_by(|a, b| a.name.cmp(&b.name));
    (state, pod_states)
}

/// Waits until `check` accepts what the release's Service with `role` shows. It reads the Service
/// once, then again at every change of what decides it (the Service, its endpoints, the
/// release's pods), as watch events report them: no polling interval stands between a change and
/// noticing it. On timeout the error says what was seen last.
async fn watch_services<T>(
    cluster: &Cluster,
    release: &str,
    timeout: Duration,
    what: &str,
    check: impl Fn(&Services) -> Result<T, String>,
) -> Result<T> {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut signals = signals::subscribe();
    let mut seen = match check(&cluster.services(release).await?) {
        Ok(done) => return Ok(done),
        Err(seen) => seen,
    };
    let mut changes = std::pin::pin!(changes_of(cluster, release));
    loop {
        tokio::select! {
            change = changes.next() => {
                if change.is_none() {
                    bail!("the watch on the Services of {release} ended unexpectedly");
                }
                // A burst of events (an Endpoints update per pod) needs one read, not one each.
                while let Some(Some(_)) = changes.next().now_or_never() {}
                match check(&cluster.services(release).await?) {
                    Ok(done) => return Ok(done),
                    Err(now) => seen = now,
                }
            }
            _ = &mut deadline => bail!("{what} within {}s: {seen}", timeout.as_secs()),
            sig = signals.changed_to_signal() => bail!("interrupted by {} while waiting until {what}", signals::name(sig)),
        }
    }
}

/// A stream that yields whenever the release's Services, their endpoints (which carry the
/// Services' labels) or the release's pods change. Watch errors (a restarting API server) are
/// retried with backoff.
fn changes_of(
    cluster: &Cluster,
    release: &str,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    use k8s_openapi::api::core::v1::{Endpoints, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::Api;
    let instance = format!("{}={release}", crate::cluster::INSTANCE_LABEL);
    let (client, ns) = (cluster.client.clone(), cluster.namespace.clone());
    let of_release = || watcher::Config::default().labels(&instance);
    let endpoints = match cluster.reads_endpoint_slices() {
        Some(true) => ticks(
            Api::<EndpointSlice>::namespaced(client.clone(), &ns),
            of_release(),
        ),
        _ => ticks(
            Api::<Endpoints>::namespaced(client.clone(), &ns),
            of_release(),
        ),
    };
    futures::stream::select_all([
        ticks(
            Api::<Service>::namespaced(client.clone(), &ns),
            of_release(),
        ),
        ticks(Api::<Pod>::namespaced(client, &ns), of_release()),
        endpoints,
    ])
}

/// Everything `status` shows can change: the release's Services, endpoints, pods, Deployments
/// and migration Jobs, and its helm records (a new revision). One tick per change.
pub fn release_changes(
    cluster: &Cluster,
    release: &str,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    use k8s_openapi::api::core::v1::Secret;
    use kube::Api;
    let instance = format!("{}={release}", crate::cluster::INSTANCE_LABEL);
    let (client, ns) = (cluster.client.clone(), cluster.namespace.clone());
    let of_release = watcher::Config::default().labels(&instance);
    // helm keeps a release's revisions in Secrets labelled owner=helm,name=RELEASE.
    let helm_records = watcher::Config::default().labels(&format!("owner=helm,name={release}"));
    futures::stream::select_all([
        changes_of(cluster, release).boxed(),
        ticks(
            Api::<Deployment>::namespaced(client.clone(), &ns),
            of_release.clone(),
        ),
        ticks(Api::<Job>::namespaced(client.clone(), &ns), of_release),
        ticks(Api::<Secret>::namespaced(client, &ns), helm_records),
    ])
}

fn ticks<K>(api: kube::Api<K>, config: watcher::Config) -> futures::stream::BoxStream<'static, ()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    watcher(api, config)
        .default_backoff()
        .filter_map(|e| futures::future::ready(e.ok().map(|_| ())))
        .boxed()
}

/// How a Service routes, for a timeout message.
fn describe(svc: &ServiceState) -> String {
    format!(
        "Service {} selects {} with {} ready endpoints ({})",
        svc.name,
        svc.selector_slot.as_deref().unwrap_or("no slot"),
        svc.ready,
        svc.ready_by_slot
            .iter()
            .map(|(slot, n)| format!("{n} in {slot}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// After a swap: waits until every production Service (the main one and each extra one) selects
/// `slot` and routes only to its pods, the main one to at least one ready pod; returns how many
/// the main one routes to.
pub async fn production_serves(
    cluster: &Cluster,
    release: &str,
    slot: Slot,
    timeout: Duration,
) -> Result<usize> {
    let what = format!("production of {release} did not move to {slot}");
    watch_services(cluster, release, timeout, &what, |services| {
        let Some(main) = &services.production else {
            return Err(format!(
                "the production Service of {release} does not exist"
            ));
        };
        if main.ready_in(slot) == 0 {
            return Err(describe(main));
        }
        match services
            .production()
            .find(|s| s.selects != Some(slot) || s.ready != s.ready_in(slot))
        {
            Some(behind) => Err(describe(behind)),
            None => Ok(main.ready),
        }
    })
    .await
}

/// After a deploy: waits until the Service with `role` lists all `desired` pods of `slot` as ready
/// endpoints, so a `swap` right after finds them. A Service that does not select the slot (drift)
/// is not waited on; `status` and `swap` report it.
pub async fn endpoints_ready(
    cluster: &Cluster,
    release: &str,
    role: Role,
    slot: Slot,
    desired: usize,
    timeout: Duration,
) -> Result<()> {
    let what = format!(
        "the {} Service of {release} did not list the {desired} ready {slot} pods",
        role.as_str()
    );
    watch_services(cluster, release, timeout, &what, |services| {
        let svc = match role {
            Role::Production => &services.production,
            Role::Stage => &services.stage,
        };
        match svc {
            None => Err(format!(
                "the {} Service of {release} does not exist",
                role.as_str()
            )),
            Some(svc) if svc.selects == Some(slot) && svc.ready_in(slot) < desired => {
                Err(describe(svc))
            }
            Some(_) => Ok(()),
        }
    })
    .await
}

/// Waits for the slot's migration Job, if the chart rendered one: `Ok(None)` without one,
/// `Ok(Some(..))` once it succeeded. On failure (or timeout) the error names the Job, its pods'
/// reasons and the tail of their log.
pub async fn migration_done(
    cluster: &Cluster,
    release: &str,
    slot: Slot,
    timeout: Duration,
    progress: Progress<'_>,
) -> Result<Option<MigrationState>> {
    let selector = format!(
        "{}={release},{}={slot},{}={}",
        crate::cluster::INSTANCE_LABEL,
        crate::cluster::SLOT_LABEL,
        crate::cluster::COMPONENT_LABEL,
        crate::cluster::MIGRATION_COMPONENT
    );
    let jobs: kube::Api<Job> = kube::Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let (store, writer) = reflector::store::<Job>();
    // Each event says whether the initial listing is complete: only then does "no Job" mean the
    // chart runs no migration.
    let stream = reflector::reflector(
        writer,
        watcher(jobs, watcher::Config::default().labels(&selector)),
    )
    .default_backoff()
    .map(|e| {
        e.map(|event| matches!(event, watcher::Event::InitDone))
            .map_err(|e| e.to_string())
    });
    let mut events = std::pin::pin!(stream);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut signals = signals::subscribe();
    let mut listed = false;
    let mut last: Option<MigrationState> = None;
    loop {
        tokio::select! {
            event = events.next() => {
                match event {
                    Some(Ok(init_done)) => listed = listed || init_done,
                    Some(Err(err)) => {
                        progress.note(&format!("{slot}: watch on the migration interrupted ({err}); retrying"));
                        continue;
                    }
                    None => bail!("the watch on the migration of {release} ended unexpectedly"),
                }
                let newest = store
                    .state()
                    .into_iter()
                    .max_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
                let Some(job) = newest else {
                    if listed {
                        return Ok(None);
                    }
                    continue;
                };
                let state = MigrationState::of(&job);
                if last.as_ref() != Some(&state) {
                    progress.note(&format!("{slot}: migration {} {}", state.job, match state.phase {
                        MigrationPhase::Running => "running",
                        MigrationPhase::Succeeded => "succeeded",
                        MigrationPhase::Failed => "failed",
                    }));
                }
                match state.phase {
                    MigrationPhase::Succeeded => return Ok(Some(state)),
                    MigrationPhase::Failed => {
                        let detail = migration_pods(cluster, &state.job).await;
                        bail!(
                            "the migration Job {} of the {slot} slot failed{}; {detail}",
                            state.job,
                            state.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
                        );
                    }
                    MigrationPhase::Running => last = Some(state),
                }
            }
            _ = &mut deadline => {
                let job = last.map(|s| s.job).unwrap_or_else(|| "(none seen)".into());
                let detail = migration_pods(cluster, &job).await;
                bail!("timed out after {}s waiting for the migration Job {job} of the {slot} slot of {release}; {detail}", timeout.as_secs());
            }
            sig = signals.changed_to_signal() => {
                bail!("interrupted by {} while waiting for the migration of the {slot} slot of {release}", signals::name(sig));
            }
        }
    }
}

/// The pods of a migration Job: why each is not done, and the last lines of its log.
async fn migration_pods(cluster: &Cluster, job: &str) -> String {
    use kube::api::{ListParams, LogParams};
    let pods = cluster.pods();
    let list = match pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
    {
        Ok(list) => list.items,
        Err(err) => return format!("its pods could not be listed: {err}"),
    };
    if list.is_empty() {
        return "it has no pods".into();
    }
    let mut parts = Vec::new();
    for pod in &list {
        let state = pod_state(pod);
        let name = state.name.clone();
        let reason = state.reason.clone().unwrap_or_else(|| state.phase.clone());
        let params = LogParams {
            tail_lines: Some(20),
            ..LogParams::default()
        };
        let log = match pods.logs(&name, &params).await {
            Ok(log) if log.trim().is_empty() => "log: (empty)".to_string(),
            Ok(log) => format!("log tail:\n{}", log.trim_end()),
            Err(err) => format!("log unavailable: {err}"),
        };
        parts.push(format!("pod {name}: {reason}; {log}"));
    }
    parts.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: bool, reason: Option<&str>, restarts: i32) -> PodState {
        PodState {
            name: name.into(),
            ready,
            terminating: false,
            phase: "Running".into(),
            reason: reason.map(str::to_string),
            restarts,
        }
    }

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
        let pods = [
            pod("a", true, None, 0),
            pod("b", false, Some("ImagePullBackOff"), 0),
            pod("c", false, Some("ImagePullBackOff"), 0),
        ];
        assert_eq!(
            progress_line(Slot::Green, &state, &reasons(&pods)),
            "green: 1/3 ready (ImagePullBackOff)"
        );
    }

    #[test]
    fn timeout_explanation_names_pods_and_reasons() {
        let pods = [
            pod("web-green-1", false, Some("CrashLoopBackOff"), 4),
            pod("web-green-2", true, None, 0),
        ];
        assert_eq!(
            explain_pods(&pods),
            "pod web-green-1: CrashLoopBackOff (4 restarts)"
        );
    }
}
