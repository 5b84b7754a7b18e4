//! Waiting on what the release's Services route to: after a swap, until production routes only to
//! the new slot; after a deploy, until the slot's Service lists every pod as a ready endpoint.

use std::time::Duration;

use anyhow::{bail, Result};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;

use super::ticks;
use crate::cluster::labels::release_selector;
use crate::cluster::{Cluster, Services};
use crate::signals;
use crate::vocab::{Role, Slot};

/// Waits until `check` accepts what the release's Services show. It reads the Services once, then
/// again at every change of what decides it (the Services, their endpoints, the release's pods),
/// as watch events report them: no polling interval stands between a change and noticing it. On
/// timeout the error says what was seen last.
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
/// Services' labels) or the release's pods change.
pub(super) fn changes_of(
    cluster: &Cluster,
    release: &str,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    let selector = release_selector(release);
    let of_release = || watcher::Config::default().labels(&selector);
    let endpoints = match cluster.reads_endpoint_slices() {
        Some(true) => ticks(cluster.api::<EndpointSlice>(), of_release()),
        _ => ticks(cluster.api::<Endpoints>(), of_release()),
    };
    futures::stream::select_all([
        ticks(cluster.api::<Service>(), of_release()),
        ticks(cluster.api::<Pod>(), of_release()),
        endpoints,
    ])
}

/// Whether production has moved to `slot`: every production Service (the main one and each extra
/// one) selects it and routes only to its pods, the main one to at least one ready pod. `Ok` with
/// how many the main one routes to, or what stands in the way.
pub fn production_moved(services: &Services, release: &str, slot: Slot) -> Result<usize, String> {
    let Some(main) = &services.production else {
        return Err(format!(
            "the production Service of {release} does not exist"
        ));
    };
    if main.ready_in(slot) == 0 {
        return Err(main.describe());
    }
    match services
        .production()
        .find(|s| s.selects != Some(slot) || s.ready != s.ready_in(slot))
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
    slot: Slot,
    timeout: Duration,
) -> Result<usize> {
    let what = format!("production of {release} did not move to {slot}");
    watch_services(cluster, release, timeout, &what, |services| {
        production_moved(services, release, slot)
    })
    .await
}

/// Whether the Service with `role` lists all `desired` pods of `slot` as ready endpoints. A Service
/// that does not select the slot (drift) is not waited on; `status` and `swap` report it.
pub fn endpoints_listed(
    services: &Services,
    release: &str,
    role: Role,
    slot: Slot,
    desired: usize,
) -> Result<(), String> {
    match services.main(role) {
        None => Err(format!("the {role} Service of {release} does not exist")),
        Some(svc) if svc.selects == Some(slot) && svc.ready_in(slot) < desired => {
            Err(svc.describe())
        }
        Some(_) => Ok(()),
    }
}

/// After a deploy: waits until the Service with `role` lists all `desired` pods of `slot` as ready
/// endpoints ([`endpoints_listed`]), so a `swap` right after finds them.
pub async fn endpoints_ready(
    cluster: &Cluster,
    release: &str,
    role: Role,
    slot: Slot,
    desired: usize,
    timeout: Duration,
) -> Result<()> {
    let what =
        format!("the {role} Service of {release} did not list the {desired} ready {slot} pods");
    watch_services(cluster, release, timeout, &what, |services| {
        endpoints_listed(services, release, role, slot, desired)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::service;

    #[test]
    fn production_has_moved_when_every_production_service_routes_only_to_the_slot() {
        let mut services = Services {
            production: Some(service("web", Slot::Blue, 3)),
            stage: Some(service("web-stage", Slot::Green, 3)),
            ..Services::default()
        };
        assert_eq!(
            production_moved(&services, "web", Slot::Green),
            Err("Service web selects blue with 3 ready endpoints (3 in blue)".into())
        );
        services.production = Some(service("web", Slot::Green, 3));
        assert_eq!(production_moved(&services, "web", Slot::Green), Ok(3));
        services.extra.push(crate::cluster::ExtraService {
            key: "admin".into(),
            role: Role::Production,
            state: service("web-admin", Slot::Blue, 1),
        });
        assert!(production_moved(&services, "web", Slot::Green)
            .unwrap_err()
            .contains("web-admin"));
        services.production = None;
        assert!(production_moved(&services, "web", Slot::Green)
            .unwrap_err()
            .contains("does not exist"));
    }

    #[test]
    fn a_deploy_waits_for_every_pod_behind_the_stage_service() {
        let services = Services {
            production: Some(service("web", Slot::Blue, 3)),
            stage: Some(service("web-stage", Slot::Green, 2)),
            ..Services::default()
        };
        assert!(endpoints_listed(&services, "web", Role::Stage, Slot::Green, 3).is_err());
        assert_eq!(
            endpoints_listed(&services, "web", Role::Stage, Slot::Green, 2),
            Ok(())
        );
        // Drift: the stage Service selects another slot; nothing to wait for here.
        assert_eq!(
            endpoints_listed(&services, "web", Role::Stage, Slot::Blue, 3),
            Ok(())
        );
    }
}
