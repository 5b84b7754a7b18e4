//! Test fixtures shared by the unit tests of several modules: a release's values, what the
//! cluster shows, helm revisions, a release as a command observes it.

use std::collections::BTreeMap;

use crate::cluster::{Observed, ServiceState, SlotState};
use crate::helm::{Revision, Write};
use crate::values::{ReleaseValues, SlotValues};
use crate::vocab::{PerSlot, Slot};

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

pub fn service(name: &str, slot: Slot, n: usize) -> ServiceState {
    ServiceState {
        name: name.into(),
        selects: Some(slot),
        selector_slot: Some(slot.to_string()),
        ready_by_slot: BTreeMap::from([(slot.to_string(), n)]),
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
        production_service: Some(service("web", Slot::Blue, blue as usize)),
        stage_service: Some(service("web-stage", Slot::Green, green.max(0) as usize)),
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
