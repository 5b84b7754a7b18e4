//! Waiting on what the release's Services route to, whatever kind its slots are: after a swap,
//! until production routes only to the new slot; after a deploy, until the slot's Service lists
//! every pod as a ready endpoint. Which pod is whose is told by each slot's pod selector.

use std::time::Duration;

use anyhow::{bail, Result};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;

use super::ticks;
use crate::cluster::labels::release_selector;
use crate::cluster::services::{main_service, production_services};
use crate::cluster::{Cluster, PodSlots, RoutedService};
use crate::signals;
use crate::vocab::{Role, Slot};

/// Waits until `check` accepts what the release's Services show. It reads the Services once, then
/// again at every change of what decides it (the Services, their endpoints, the slots' pods),
/// as watch events report them: no polling interval stands between a change and noticing it. On
/// timeout the error says what was seen last.
pub async fn services<T>(
    cluster: &Cluster,
    release: &str,
    pods: &PodSlots,
    timeout: Duration,
    what: &str,
    check: impl Fn(&[RoutedService]) -> Result<T, String>,
) -> Result<T> {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut signals = signals::subscribe();
    let read = || async { Ok::<_, anyhow::Error>(cluster.services(release, pods).await?.services) };
    let mut seen = match check(&read().await?) {
        Ok(done) => return Ok(done),
        Err(seen) => seen,
    };
    let mut changes = std::pin::pin!(changes_of(cluster, release, pods));
    loop {
        tokio::select! {
            change = changes.next() => {
                if change.is_none() {
                    bail!("the watch on the Services of {release} ended unexpectedly");
                }
                // A burst of events (an Endpoints update per pod) needs one read, not one each.
                while let Some(Some(_)) = changes.next().now_or_never() {}
                match check(&read().await?) {
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
/// Services' labels) or the slots' pods change.
pub fn changes_of(
    cluster: &Cluster,
    release: &str,
    pods: &PodSlots,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    let selector = release_selector(release);
    let of_release = || watcher::Config::default().labels(&selector);
    let endpoints = match cluster.reads_endpoint_slices() {
        Some(true) => ticks(cluster.api::<EndpointSlice>(), of_release()),
        _ => ticks(cluster.api::<Endpoints>(), of_release()),
    };
    let pods: Vec<_> = pods
        .selectors()
        .into_iter()
        .map(|selector| {
            ticks(
                cluster.api::<Pod>(),
                watcher::Config::default().labels(selector),
            )
        })
        .collect();
    futures::stream::select_all(
        [ticks(cluster.api::<Service>(), of_release()), endpoints]
            .into_iter()
            .chain(pods),
    )
}

/// Whether production has moved to `slot`: every production Service (the main one and each extra
/// one) routes to it and only to its pods, the main one to at least one ready pod. `Ok` with how
/// many the main one routes to, or what stands in the way.
pub fn production_moved(
    services: &[RoutedService],
    release: &str,
    slot: Slot,
) -> Result<usize, String> {
    let Some(main) = main_service(services, Role::Production) else {
        return Err(format!(
            "the production Service of {release} does not exist"
        ));
    };
    if main.ready_in(slot) == 0 {
        return Err(main.describe());
    }
    match production_services(services)
        .find(|s| s.routes_to != Some(slot) || s.ready != s.ready_in(slot))
    {
        Some(behind) => Err(behind.describe()),
        None => Ok(main.ready),
    }
}

/// After a swap: waits until production has moved to `slot` ([`production_moved`]); returns how
/// many ready pods the main production Service routes to.
pub async fn production_serves(
    cluster: &Cluster,
    release: &str,
    pods: &PodSlots,
    slot: Slot,
    timeout: Duration,
) -> Result<usize> {
    let what = format!("production of {release} did not move to {slot}");
    services(cluster, release, pods, timeout, &what, |now| {
        production_moved(now, release, slot)
    })
    .await
}

/// Whether the main Service with `role` lists all `desired` pods of `slot` as ready endpoints; `Ok`
/// with its name. A Service that does not route to the slot (drift) is not waited on; `status`
/// and `swap` report it.
pub fn endpoints_listed(
    services: &[RoutedService],
    release: &str,
    role: Role,
    slot: Slot,
    desired: usize,
) -> Result<String, String> {
    match main_service(services, role) {
        None => Err(format!("the {role} Service of {release} does not exist")),
        Some(svc) if svc.routes_to == Some(slot) && svc.ready_in(slot) < desired => {
            Err(svc.describe())
        }
        Some(svc) => Ok(svc.name.clone()),
    }
}

/// After a deploy: waits until the Service with `role` lists all `desired` pods of `slot` as ready
/// endpoints ([`endpoints_listed`]), so a `swap` right after finds them; returns its name.
pub async fn endpoints_ready(
    cluster: &Cluster,
    release: &str,
    pods: &PodSlots,
    role: Role,
    slot: Slot,
    desired: usize,
    timeout: Duration,
) -> Result<String> {
    let what =
        format!("the {role} Service of {release} did not list the {desired} ready {slot} pods");
    services(cluster, release, pods, timeout, &what, |now| {
        endpoints_listed(now, release, role, slot, desired)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::service;

    #[test]
    fn production_has_moved_when_every_production_service_routes_only_to_the_slot() {
        let mut services = vec![
            service("web", Role::Production, Slot::Blue, 3),
            service("web-stage", Role::Stage, Slot::Green, 3),
        ];
        assert_eq!(
            production_moved(&services, "web", Slot::Green),
            Err("Service web routes to blue with 3 ready endpoints (3 in blue)".into())
        );
        services[0] = service("web", Role::Production, Slot::Green, 3);
        assert_eq!(production_moved(&services, "web", Slot::Green), Ok(3));
        let mut admin = service("web-admin", Role::Production, Slot::Blue, 1);
        admin.key = "admin".into();
        services.push(admin);
        assert!(production_moved(&services, "web", Slot::Green)
            .unwrap_err()
            .contains("web-admin"));
        services.remove(0);
        assert!(production_moved(&services, "web", Slot::Green)
            .unwrap_err()
            .contains("does not exist"));
    }

    #[test]
    fn a_deploy_waits_for_every_pod_behind_the_stage_service() {
        let services = vec![
            service("web", Role::Production, Slot::Blue, 3),
            service("web-stage", Role::Stage, Slot::Green, 2),
        ];
        assert!(endpoints_listed(&services, "web", Role::Stage, Slot::Green, 3).is_err());
        assert_eq!(
            endpoints_listed(&services, "web", Role::Stage, Slot::Green, 2),
            Ok("web-stage".into())
        );
        // Drift: the stage Service routes to another slot; nothing to wait for here.
        assert_eq!(
            endpoints_listed(&services, "web", Role::Stage, Slot::Blue, 3),
            Ok("web-stage".into())
        );
    }
}
