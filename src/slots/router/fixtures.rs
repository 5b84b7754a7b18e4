//! Test fixtures of a router: `web` routing to releases of a `helm create myapp` chart, blue on
//! v1 and green on v2, as the record, the cluster and a command's read show them.

use std::collections::BTreeMap;

use super::drift::expected_selector;
use super::live::{HelmRecord, SlotLive};
use super::values::{PortRecord, RecordedState, RouterValues, SlotRecord, TargetPort};
use super::Router;
use crate::cluster::{DeploymentLive, RoutedService, SlotState};
use crate::slots::Seen;
use crate::vocab::{PerSlot, Role, Slot};

pub fn record(slot: Slot, tag: &str) -> SlotRecord {
    SlotRecord {
        release: format!("web-{slot}"),
        state: RecordedState::Deployed,
        revision: 1,
        chart: "myapp-0.1.0".into(),
        chart_version: "0.1.0".into(),
        app_version: "1.16.0".into(),
        tag: tag.into(),
        image: format!("nginx:{tag}"),
        container: "myapp".into(),
        service: format!("web-{slot}-myapp"),
        selector: BTreeMap::from([
            ("app.kubernetes.io/instance".into(), format!("web-{slot}")),
            ("app.kubernetes.io/name".into(), "myapp".into()),
        ]),
        ports: vec![PortRecord {
            name: Some("http".into()),
            port: 80,
            target_port: Some(TargetPort::Name("http".into())),
            protocol: "TCP".into(),
            app_protocol: None,
        }],
        accepted: Vec::new(),
        ..SlotRecord::default()
    }
}

pub fn deployment(slot: Slot, tag: &str, ready: i32) -> DeploymentLive {
    DeploymentLive {
        name: format!("web-{slot}-myapp"),
        state: SlotState {
            deployment: Some(format!("web-{slot}-myapp")),
            desired: 3,
            ready,
            available: ready,
            updated: 3,
            total: 3,
            observed: true,
            image: Some(format!("nginx:{tag}")),
            created: None,
        },
        pod_labels: BTreeMap::from([
            ("app.kubernetes.io/instance".into(), format!("web-{slot}")),
            ("app.kubernetes.io/name".into(), "myapp".into()),
            ("helm.sh/chart".into(), "myapp-0.1.0".into()),
        ]),
        images: vec![("myapp".into(), format!("nginx:{tag}"))],
    }
}

pub fn live(slot: Slot, tag: &str, ready: i32) -> SlotLive {
    SlotLive {
        slot,
        release: format!("web-{slot}"),
        helm: Some(HelmRecord {
            revision: 1,
            status: "deployed".into(),
        }),
        deployments: vec![deployment(slot, tag, ready)],
    }
}

/// Blue recorded on v1; green on v2 when `green`, else empty.
pub fn router(green: bool) -> RouterValues {
    let mut r = RouterValues {
        enabled: true,
        ..RouterValues::default()
    };
    r.slots.blue = record(Slot::Blue, "v1");
    if green {
        r.slots.green = record(Slot::Green, "v2");
    }
    r
}

/// The router Service with `role` as the record has it, routing to `slot` with `ready` pods.
pub fn routed(
    name: &str,
    role: Role,
    slot: Slot,
    router: &RouterValues,
    ready: usize,
) -> RoutedService {
    let mut by = PerSlot::default();
    by[slot] = ready;
    RoutedService {
        name: name.into(),
        key: "main".into(),
        role,
        routes_to: Some(slot),
        selector: expected_selector(router, router.slot(slot), "main"),
        ready_by_slot: by,
        ready,
        not_ready: 0,
        selector_owner: None,
    }
}

/// The router `web` with production on `production`, green recorded when `green`, both slot
/// releases running with 3 ready pods, and these router revisions (the last one deployed).
pub fn seen(production: Slot, green: bool, history: &[&str]) -> Seen<Router> {
    let mut r = router(green);
    if !green {
        r.slots.green.state = RecordedState::Empty;
    }
    let history = history
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let status = if i + 1 == history.len() {
                "deployed"
            } else {
                "superseded"
            };
            let mut rev = crate::fixtures::rev(i as u64 + 1, status, d, "2026-01-01T00:00:00Z");
            rev.chart = crate::chart::embedded_id();
            rev
        })
        .collect();
    let release = crate::fixtures::observation(
        crate::fixtures::values(production, green),
        crate::fixtures::observed(3, 0),
        history,
    );
    let services = vec![
        routed("web", Role::Production, production, &r, 3),
        routed(
            "web-stage",
            Role::Stage,
            production.other(),
            &r,
            if green { 3 } else { 0 },
        ),
    ];
    let live = PerSlot {
        blue: live(Slot::Blue, "v1", 3),
        green: live(Slot::Green, "v2", 3),
    };
    super::seen(release, r, live, services, PerSlot::default())
}

/// `seen` read again after a test changed its record, slot releases or Services.
pub fn again(seen: Seen<Router>) -> Seen<Router> {
    super::seen(
        seen.release,
        seen.kind.values,
        seen.kind.live,
        seen.services,
        seen.kind.leftovers,
    )
}
