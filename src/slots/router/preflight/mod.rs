//! The preflight of a router deploy: before anything is written, what the renders of the router
//! and of both slot releases say about running the chart twice side by side, and what the router
//! needs to route to the new slot (the Service to mirror: its selector and ports, and the
//! container they reach). Pure: every refusal names the object and the fix, and is unit-tested.
//!
//! Its three ideas live apart: which kinds are cluster-scoped (`scopes`), what cannot run twice
//! side by side (`twice`), and what the router copies from the slot release (`mirror`). This file
//! holds what a deploy passes in and gets back, and the order the checks run in.

use std::collections::BTreeMap;

use super::manifest::Rendered;
use super::values::{
    AppSettings, CronJobRecord, PortRecord, Risk, RouteRecord, SlotRecord, WorkerRecord,
};
pub use crate::cluster::LivePod;
use crate::error::Refusal;

mod follow;
mod hooks;
mod mirror;
mod scopes;
#[cfg(test)]
mod test_support;
mod twice;

pub use hooks::{HookRun, Hooks};
pub use mirror::ports_of;
pub use scopes::Scopes;
pub use twice::risks_of;

use follow::follows;
use hooks::{hooks, skipped_migrations};
use mirror::{mirrored_services, replicas, routed_image};
use twice::{collisions, fixed_ports, foreign_namespaces, host_claims, risks};

/// The renders a deploy compares.
pub struct Renders<'a> {
    /// The slot release the deploy writes.
    pub slot: &'a Rendered,
    /// The other slot: production's release as it runs, or (before the first install) the chart
    /// rendered as the other slot's release would be.
    pub other: &'a Rendered,
}

/// The version a deploy asks for, as it must reach the routed container's image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    pub repository: Option<String>,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// What else a deploy's checks need.
pub struct Checks<'a> {
    /// The router release.
    pub release: &'a str,
    pub namespace: &'a str,
    pub app: &'a AppSettings,
    pub wanted: &'a Wanted,
    /// The replicas the slot is sized to, when known (`--replicas`, or what production runs).
    pub replicas: Option<u64>,
    pub scopes: &'a Scopes,
    /// What the router records of production, whose routes the new slot must not reach.
    pub recorded: Option<&'a SlotRecord>,
    /// The write installs the slot release (its slot holds none, or `clean` uninstalled it).
    pub install: bool,
    /// No slot of the app was ever deployed: this deploy is the app's first install.
    pub first: bool,
    /// The pods running in the namespace, which a route's selector must not reach unless they
    /// are the slot release's own.
    pub live_pods: &'a [LivePod],
}

/// What the router records of the new slot, and what the deploy waits for and sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// The mirrored Service.
    pub service: String,
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<PortRecord>,
    /// The Deployments the Service selects.
    pub routed: Vec<String>,
    /// Every Deployment of the slot release.
    pub deployments: Vec<String>,
    /// The routed container and its image as rendered.
    pub container: String,
    pub image: String,
    /// The risks the render has, all accepted.
    pub accepted: Vec<Risk>,
    /// The routed Deployments bgslot sizes itself after the write (they render no replicas, as
    /// with an HPA, or the chart has no replicas value).
    pub scale: Vec<String>,
    /// The further routes, each a Service of the slot routed as a pair of its own.
    pub routes: Vec<RouteRecord>,
    /// The workers and CronJobs, which follow production.
    pub workers: Vec<WorkerRecord>,
    pub cron_jobs: Vec<CronJobRecord>,
    /// The hooks the write runs, and those it does not.
    pub hooks: Hooks,
}

/// Runs every check of the slot's render against the other slot's; the first that fails is the
/// refusal. The router's own render depends on what this finds: [`check_router`] compares it.
pub fn analyze(renders: &Renders, c: &Checks) -> Result<Analysis, Refusal> {
    collisions(&[(renders.slot, renders.other)], c)?;
    foreign_namespaces(renders.slot, c)?;
    fixed_ports(renders.slot, c)?;
    let mut accepted = risks(renders.slot, c)?;
    let mirrored = mirrored_services(renders, c)?;
    let follows = follows(renders.slot, &mirrored, c)?;
    host_claims(renders.slot, renders.other, c, "the other slot's release")?;
    let (container, image) = routed_image(renders.slot, &mirrored, &follows.deployments, c)?;
    let main = &mirrored[0];
    let scale = replicas(renders.slot, main, c)?;
    let hooks = hooks(renders.slot, c.install);
    accepted.extend(skipped_migrations(renders.slot, &hooks, c)?);
    accepted.sort();
    accepted.dedup();
    Ok(Analysis {
        service: main.service.name.clone(),
        selector: main.service.selector(),
        ports: ports_of(main.service),
        routed: main.routed.iter().map(|d| d.name.clone()).collect(),
        deployments: renders.slot.deployments().map(|d| d.name.clone()).collect(),
        container,
        image,
        accepted,
        scale,
        routes: mirrored[1..]
            .iter()
            .map(|m| RouteRecord {
                route: m.route.clone(),
                service: m.service.name.clone(),
                selector: m.service.selector(),
                ports: ports_of(m.service),
            })
            .collect(),
        workers: follows.workers,
        cron_jobs: follows.cron_jobs,
        hooks,
    })
}

/// The router's render (as its write would leave it) against both slots': no shared object, and
/// no host the router serves claimed by the slot's own Ingress or HTTPRoute.
pub fn check_router(router: &Rendered, renders: &Renders, c: &Checks) -> Result<(), Refusal> {
    collisions(&[(renders.slot, router), (renders.other, router)], c)?;
    host_claims(renders.slot, router, c, "the router")
}

#[cfg(test)]
mod tests {
    use super::test_support::*;

    #[test]
    fn a_helm_create_chart_passes_and_says_what_to_route_to() {
        let a = Case::new().run().unwrap();
        assert_eq!(a.service, "web-green-myapp");
        assert_eq!(
            super::super::values::label_selector(&a.selector),
            "app.kubernetes.io/instance=web-green,app.kubernetes.io/name=myapp"
        );
        assert_eq!(a.ports[0].describe(), "http 80->http/TCP");
        assert_eq!(
            (a.routed.clone(), a.deployments.clone()),
            (
                vec!["web-green-myapp".to_string()],
                vec!["web-green-myapp".to_string()]
            )
        );
        assert_eq!(
            (a.container.as_str(), a.image.as_str()),
            ("myapp", "nginx:v2")
        );
        assert!(a.accepted.is_empty() && a.scale.is_empty());
    }
}
