//! Waiting on a router's slots and Services, as bgslot waits on its own chart's (watches, not
//! polls): until every Deployment of a slot release is rolled out, until a router Service routes
//! to a slot's pods, and until a slot's pods have stopped. The conditions are pure functions
//! beside the waits.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};

use super::live::{DeploymentLive, RoutedService, Totals};
use super::observe::services_now;
use super::values::label_selector;
use crate::cluster::labels::release_selector;
use crate::cluster::state::pod_states;
use crate::cluster::{Cluster, PodState};
use crate::events::{Event, Events, Rollout};
use crate::signals;
use crate::vocab::{PerSlot, Role, Slot};
use crate::wait::{explain_pods, reasons};

/// One tick per change of what `api` lists with `config`, retried with backoff.
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

/// Where the rollout of a slot release stands: `Ok` with the routed totals once every one of
/// `names` is rolled out (the routed ones with at least one pod), else the progress to show.
pub fn rolled_out(
    deployments: &[DeploymentLive],
    names: &[String],
    routed: &[String],
) -> Result<Totals, Totals> {
    let totals = deployments
        .iter()
        .filter(|d| routed.contains(&d.name))
        .fold(Totals::default(), |t, d| Totals {
            ready: t.ready + d.state.ready,
            available: t.available + d.state.available,
            desired: t.desired + d.state.desired,
        });
    let done = names.iter().all(|name| {
        deployments
            .iter()
            .find(|d| &d.name == name)
            .is_some_and(|d| d.complete() && (d.state.desired > 0 || !routed.contains(name)))
    });
    if done {
        Ok(totals)
    } else {
        Err(totals)
    }
}

/// What a slot release's rollout is: its Deployments, the routed ones, and the selector of the
/// routed pods.
pub struct SlotRollout<'a> {
    pub deployments: &'a [String],
    pub routed: &'a [String],
    pub selector: &'a BTreeMap<String, String>,
}

/// Waits until every Deployment named in `names` is rolled out, the `routed` ones with pods;
/// progress is the routed Deployments' ready count, with the reasons the pods `selector`
/// selects are not ready.
pub async fn deployments_ready(
    cluster: &Cluster,
    release: &str,
    slot: Slot,
    what: &SlotRollout<'_>,
    timeout: Duration,
    events: &dyn Events,
) -> Result<Totals> {
    let (names, routed, selector) = (what.deployments, what.routed, what.selector);
    let (deployments, dep_writer) = reflector::store::<Deployment>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let dep_stream = reflector::reflector(
        dep_writer,
        watcher(cluster.deployments(), watcher::Config::default()),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()).map_err(|e| e.to_string()));
    let pod_stream = reflector::reflector(
        pod_writer,
        watcher(
            cluster.pods(),
            watcher::Config::default().labels(&label_selector(selector)),
        ),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()).map_err(|e| e.to_string()));
    let mut stream = std::pin::pin!(futures::stream::select(dep_stream, pod_stream));
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut signals = signals::subscribe();
    let mut shown: Option<Rollout> = None;
    let snapshot = |deployments: &Store<Deployment>, pods: &Store<Pod>| {
        let live: Vec<DeploymentLive> = deployments
            .state()
            .iter()
            .filter(|d| d.metadata.name.as_ref().is_some_and(|n| names.contains(n)))
            .map(|d| DeploymentLive::of(d))
            .collect();
        (live, pod_states(pods.state().iter().map(|p| p.as_ref())))
    };
    let progress = |t: Totals, pods: &[PodState]| Rollout {
        worker: None,
        slot,
        ready: t.ready,
        desired: t.desired,
        detail: {
            let r = reasons(pods);
            if r.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.join(", "))
            }
        },
    };
    loop {
        tokio::select! {
            event = stream.next() => {
                match event {
                    Some(Ok(())) => {}
                    Some(Err(err)) => {
                        events.step(&format!("{slot}: watch interrupted ({err}); retrying"));
                        continue;
                    }
                    None => bail!("the watch on the {slot} slot of {release} ended unexpectedly"),
                }
                let (live, pod_states) = snapshot(&deployments, &pods);
                match rolled_out(&live, names, routed) {
                    Ok(t) => {
                        events.event(Event::RolloutDone(&progress(t, &[])));
                        return Ok(t);
                    }
                    Err(t) if t.desired > 0 => {
                        let seen = progress(t, &pod_states);
                        if shown.as_ref() != Some(&seen) {
                            events.event(Event::Rollout(&seen));
                            shown = Some(seen);
                        }
                    }
                    Err(_) => {}
                }
            }
            _ = &mut deadline => {
                let (live, pod_states) = snapshot(&deployments, &pods);
                let behind: Vec<String> = names
                    .iter()
                    .filter(|n| !live.iter().any(|d| &&d.name == n && d.complete()))
                    .cloned()
                    .collect();
                let t = rolled_out(&live, names, routed).unwrap_or_else(|t| t);
                return Err(anyhow!(
                    "timed out after {}s waiting for the {slot} slot of {release} in namespace {}: {}/{} ready; not rolled out: {}; {}",
                    timeout.as_secs(), cluster.namespace, t.ready, t.desired, behind.join(", "), explain_pods(&pod_states)
                ));
            }
            sig = signals.changed_to_signal() => {
                bail!("interrupted by {} while waiting for the {slot} slot of {release}", signals::name(sig));
            }
        }
    }
}

/// Whether production has moved to `slot`: every production Service (the main one and each
/// extra one) routes to it and only to its pods, the main one to at least one.
pub fn production_moved(
    services: &[RoutedService],
    release: &str,
    slot: Slot,
) -> Result<usize, String> {
    let Some(main) = services
        .iter()
        .find(|s| s.key == "main" && s.role == Role::Production)
    else {
        return Err(format!(
            "the production Service of {release} does not exist"
        ));
    };
    if main.ready_in(slot) == 0 {
        return Err(main.describe());
    }
    match services
        .iter()
        .filter(|s| s.role == Role::Production)
        .find(|s| s.routes_to != Some(slot) || s.ready != s.ready_in(slot))
    {
        Some(behind) => Err(behind.describe()),
        None => Ok(main.ready),
    }
}

/// Whether the main Service with `role` lists `desired` ready pods of `slot`.
pub fn listed(
    services: &[RoutedService],
    release: &str,
    role: Role,
    slot: Slot,
    desired: usize,
) -> Result<usize, String> {
    match services.iter().find(|s| s.key == "main" && s.role == role) {
        None => Err(format!("the {role} Service of {release} does not exist")),
        Some(svc) if svc.routes_to != Some(slot) || svc.ready_in(slot) < desired => {
            Err(svc.describe())
        }
        Some(svc) => Ok(svc.ready_in(slot)),
    }
}

/// Waits until `check` accepts the router's Services, reading them again at every change of the
/// Services or their endpoints; `selectors` tell which pods are whose.
pub async fn services<T>(
    cluster: &Cluster,
    release: &str,
    selectors: &PerSlot<BTreeMap<String, String>>,
    timeout: Duration,
    what: &str,
    check: impl Fn(&[RoutedService]) -> Result<T, String>,
) -> Result<T> {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut signals = signals::subscribe();
    let mut seen = match check(&services_now(cluster, release, selectors).await?) {
        Ok(done) => return Ok(done),
        Err(seen) => seen,
    };
    let of_release = || watcher::Config::default().labels(&release_selector(release));
    let endpoints = match cluster.reads_endpoint_slices() {
        Some(true) => ticks(cluster.api::<EndpointSlice>(), of_release()),
        _ => ticks(cluster.api::<Endpoints>(), of_release()),
    };
    let mut changes =
        futures::stream::select_all([ticks(cluster.api::<Service>(), of_release()), endpoints]);
    loop {
        tokio::select! {
            change = changes.next() => {
                if change.is_none() {
                    bail!("the watch on the Services of {release} ended unexpectedly");
                }
                while let Some(Some(_)) = changes.next().now_or_never() {}
                match check(&services_now(cluster, release, selectors).await?) {
                    Ok(done) => return Ok(done),
                    Err(now) => seen = now,
                }
            }
            _ = &mut deadline => bail!("{what} within {}s: {seen}", timeout.as_secs()),
            sig = signals.changed_to_signal() => bail!("interrupted by {} while waiting until {what}", signals::name(sig)),
        }
    }
}

/// After a clean: waits until no pod `selector` selects is left, terminating ones included.
/// Returns how many were stopping at first.
pub async fn pods_gone(
    cluster: &Cluster,
    release: &str,
    slot: Slot,
    selector: &BTreeMap<String, String>,
    timeout: Duration,
    events: &dyn Events,
) -> Result<usize> {
    let selector = label_selector(selector);
    if selector.is_empty() {
        return Ok(0);
    }
    let list = || async {
        let pods = cluster
            .pods()
            .list(&kube::api::ListParams::default().labels(&selector))
            .await?;
        Ok::<_, kube::Error>(pod_states(&pods.items))
    };
    let mut changes = ticks(cluster.pods(), watcher::Config::default().labels(&selector));
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut signals = signals::subscribe();
    let mut left = list().await?;
    let stopping = left.len();
    let mut shown = None;
    while !left.is_empty() {
        if shown != Some(left.len()) {
            events.step(&format!(
                "{release}: waiting for {} {slot} pod(s) to stop: {}",
                left.len(),
                left.iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            shown = Some(left.len());
        }
        tokio::select! {
            change = changes.next() => {
                if change.is_none() {
                    bail!("the watch on the {slot} pods of {release} ended unexpectedly");
                }
                while let Some(Some(())) = changes.next().now_or_never() {}
                left = list().await?;
            }
            _ = &mut deadline => bail!(
                "the {slot} slot of {release} is uninstalled, but {} of its pods still run after {}s: {}; \
                 check their finalizers and node with `kubectl get pods -n {} -l {selector}`",
                left.len(), timeout.as_secs(),
                left.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "), cluster.namespace
            ),
            sig = signals.changed_to_signal() => bail!(
                "interrupted by {} while waiting for the {slot} pods of {release} to stop; the slot is uninstalled already",
                signals::name(sig)
            ),
        }
    }
    Ok(stopping)
}

/// The change feed `status --watch` redraws a router on: the router's own (its Services,
/// endpoints and helm records), and the slot releases' Deployments, pods and helm records (their
/// labels are not known, so every Deployment and pod of the namespace).
pub fn changes(
    cluster: &Cluster,
    release: &str,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    let slots = format!(
        "owner=helm,name in ({},{})",
        super::slot_release(release, Slot::Blue),
        super::slot_release(release, Slot::Green)
    );
    futures::stream::select_all([
        crate::wait::release_changes(cluster, release).boxed(),
        ticks(cluster.deployments(), watcher::Config::default()),
        ticks(cluster.pods(), watcher::Config::default()),
        crate::wait::feed::record_changes(cluster, &slots),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::live::tests::{deployment, routed, router};

    #[test]
    fn a_slot_is_rolled_out_when_every_deployment_is_and_the_routed_ones_run_pods() {
        let names = vec![
            "web-green-myapp".to_string(),
            "web-green-worker".to_string(),
        ];
        let routed_names = vec!["web-green-myapp".to_string()];
        let mut worker = deployment(Slot::Green, "v2", 0);
        worker.name = "web-green-worker".into();
        worker.state.desired = 0;
        worker.state.updated = 0;
        worker.state.total = 0;
        let app = deployment(Slot::Green, "v2", 3);
        assert_eq!(
            rolled_out(&[app.clone(), worker.clone()], &names, &routed_names),
            Ok(Totals {
                ready: 3,
                available: 3,
                desired: 3
            })
        );
        let starting = deployment(Slot::Green, "v2", 1);
        assert_eq!(
            rolled_out(&[starting, worker.clone()], &names, &routed_names),
            Err(Totals {
                ready: 1,
                available: 1,
                desired: 3
            })
        );
        assert!(
            rolled_out(&[app], &names, &routed_names).is_err(),
            "a missing Deployment is not rolled out"
        );
    }

    #[test]
    fn production_moves_when_every_production_service_routes_only_to_the_slot() {
        let r = router(true);
        let mut services = vec![
            routed("web", Role::Production, Slot::Blue, &r, 3),
            routed("web-stage", Role::Stage, Slot::Green, &r, 3),
        ];
        assert!(production_moved(&services, "web", Slot::Green)
            .unwrap_err()
            .contains("routes to blue"));
        services[0] = routed("web", Role::Production, Slot::Green, &r, 3);
        assert_eq!(production_moved(&services, "web", Slot::Green), Ok(3));
        let mut extra = routed("web-admin", Role::Production, Slot::Blue, &r, 1);
        extra.key = "admin".into();
        services.push(extra);
        assert!(production_moved(&services, "web", Slot::Green)
            .unwrap_err()
            .contains("web-admin"));
        assert_eq!(listed(&services, "web", Role::Stage, Slot::Green, 3), Ok(3));
        assert!(listed(&services, "web", Role::Stage, Slot::Green, 4).is_err());
        assert!(listed(&services, "web", Role::Stage, Slot::Blue, 1).is_err());
    }
}
