//! Test fixtures shared by the unit tests of several modules: a release's values, what the
//! cluster shows, helm revisions, a release as a command observes it.

use std::collections::BTreeMap;

use crate::cluster::{Observed, RoutedService, SlotState};
use crate::helm::{Revision, Write};
use crate::values::{ReleaseValues, SlotValues};
use crate::vocab::{PerSlot, Role, Slot};

pub fn values(production: Slot, green_enabled: bool) -> ReleaseValues {
    let slot = |enabled, tag: &str| SlotValues {
        enabled,
        repository: "web".into(),
        tag: tag.into(),
        digest: None,
        replicas: Some(3),
        preview: false,
    };
    ReleaseValues {
        production,
        slots: PerSlot {
            blue: slot(true, "v1"),
            green: slot(green_enabled, "v2"),
        },
        workloads: Default::default(),
        autoscaling: false,
        ingress_host: None,
        ingress_stage_host: None,
        ingress_tls: false,
        service_port: 80,
    }
}

pub fn ready(n: i32) -> SlotState {
    SlotState {
        deployment: Some("d".into()),
        desired: n,
        ready: n,
        available: n,
        updated: n,
        total: n,
        observed: true,
        image: None,
        created: None,
    }
}

/// The main Service with `role`, routing to `slot` with `n` ready pods there.
pub fn service(name: &str, role: Role, slot: Slot, n: usize) -> RoutedService {
    let mut ready_by_slot = PerSlot::default();
    ready_by_slot[slot] = n;
    RoutedService {
        name: name.into(),
        key: "main".into(),
        role,
        routes_to: Some(slot),
        selector: BTreeMap::from([("bgslot/slot".to_string(), slot.to_string())]),
        ready_by_slot,
        ready: n,
        not_ready: 0,
        selector_owner: None,
    }
}

/// Blue in production with `blue` ready pods; green staged with `green` (0: not deployed).
pub fn observed(blue: i32, green: i32) -> Observed {
    Observed {
        slots: PerSlot {
            blue: ready(blue),
            green: if green > 0 {
                ready(green)
            } else {
                SlotState::default()
            },
        },
        services: vec![
            service("web", Role::Production, Slot::Blue, blue as usize),
            service("web-stage", Role::Stage, Slot::Green, green.max(0) as usize),
        ],
        chart: Some("bgslot-0.1.0".into()),
        ..Observed::default()
    }
}

pub fn rev(n: u64, status: &str, description: &str, updated: &str) -> Revision {
    Revision {
        revision: n,
        updated: updated.into(),
        status: status.into(),
        chart: "bgslot-0.1.0".into(),
        app_version: String::new(),
        description: description.into(),
    }
}

/// A release as a command would observe it.
pub fn observation(
    values: ReleaseValues,
    cluster: Observed,
    history: Vec<Revision>,
) -> crate::observe::Observation {
    let slot = |v: &crate::values::SlotValues| serde_json::json!({"enabled": v.enabled, "image": {"repository": v.repository, "tag": v.tag}, "replicaCount": v.replicas});
    let all_values = serde_json::json!({
        "productionSlot": values.production,
        "blue": slot(values.slot(Slot::Blue)),
        "green": slot(values.slot(Slot::Green)),
    });
    crate::observe::Observation {
        release: "web".parse().unwrap(),
        namespace: "shop".into(),
        helm_major: 4,
        history,
        user_values: all_values.clone(),
        values,
        all_values,
        cluster,
    }
}

pub fn sets(write: &Write) -> Vec<String> {
    write
        .sets
        .iter()
        .map(|(k, v)| format!("{k}={}", v.flag().1))
        .collect()
}

/// A Deployment `name` with `ready` of `desired` pods ready and available, every pod updated.
pub fn deployment(name: &str, ready: i32, desired: i32) -> crate::cluster::DeploymentLive {
    crate::cluster::DeploymentLive {
        name: name.into(),
        state: SlotState {
            deployment: Some(name.into()),
            desired,
            ready,
            available: ready,
            updated: desired,
            total: desired,
            observed: true,
            image: Some("web:v2".into()),
            created: None,
        },
        pod_labels: BTreeMap::from([("app".to_string(), name.to_string())]),
        images: vec![("app".into(), "web:v2".into())],
    }
}

/// A running pod `name`, ready or not (and why).
pub fn pod(
    name: &str,
    ready: bool,
    reason: Option<&str>,
    restarts: i32,
) -> crate::cluster::PodState {
    crate::cluster::PodState {
        name: name.into(),
        ready,
        terminating: false,
        phase: "Running".into(),
        reason: reason.map(str::to_string),
        restarts,
    }
}
