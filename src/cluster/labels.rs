//! The label contract between the chart and bgslot: the labels the chart puts on its objects and
//! the selectors bgslot finds them with. Objects are found by labels, not by name, so a
//! `fullnameOverride` changes nothing here.

use crate::vocab::Slot;

pub const SLOT_LABEL: &str = "bgslot/slot";
pub const ROLE_LABEL: &str = "bgslot/role";
/// Which Service pair a Service belongs to: `main`, or the chart's `extraServices` key.
pub const SERVICE_LABEL: &str = "bgslot/service";
pub const MAIN_SERVICE: &str = "main";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const MIGRATION_COMPONENT: &str = "migration";
/// What a slot's object is for: `web` (on the web Deployment itself, from chart 0.3.0), `worker`
/// or `cronjob` (on those and on their pods). Web pods carry none: their template is what chart
/// 0.2.0 rendered, so an upgrade restarts nothing.
pub const WORKLOAD_LABEL: &str = "bgslot/workload";
/// `NAME-VERSION` of the chart that rendered an object.
pub const CHART_LABEL: &str = "helm.sh/chart";
/// The Service a set of endpoints belongs to (EndpointSlices).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The slot's web Deployment and its pods. A slot's migration Job pods, workers and CronJobs
/// carry the slot label too, but are not what serves its traffic.
pub fn slot_selector(release: &str, slot: Slot) -> String {
    format!(
        "{INSTANCE_LABEL}={release},{SLOT_LABEL}={slot},{COMPONENT_LABEL}!={MIGRATION_COMPONENT},{WORKLOAD_LABEL} notin (worker,cronjob)"
    )
}

/// Everything of the release (Services, their endpoints, pods, Deployments, Jobs).
pub fn release_selector(release: &str) -> String {
    format!("{INSTANCE_LABEL}={release}")
}

/// The release's Services that play a role.
pub fn services_selector(release: &str) -> String {
    format!("{INSTANCE_LABEL}={release},{ROLE_LABEL}")
}

/// The release's pods that belong to a slot (web pods, workers, migrations), each labelled with
/// it: where its Services' endpoints lead.
pub fn slot_pods_selector(release: &str) -> String {
    format!("{INSTANCE_LABEL}={release},{SLOT_LABEL}")
}

/// The release's workers (of every slot, or of one).
pub fn workers_selector(release: &str, slot: Option<Slot>) -> String {
    let mut selector = format!("{INSTANCE_LABEL}={release},{WORKLOAD_LABEL}=worker");
    if let Some(slot) = slot {
        selector.push_str(&format!(",{SLOT_LABEL}={slot}"));
    }
    selector
}

/// The release's CronJobs.
pub fn cron_jobs_selector(release: &str) -> String {
    format!("{INSTANCE_LABEL}={release},{WORKLOAD_LABEL}=cronjob")
}

/// Every pod of a slot that serves or consumes (web and workers, not migrations or CronJob runs):
/// what must be gone before a cleaned slot answers no one.
pub fn slot_running_selector(release: &str, slot: Slot) -> String {
    format!(
        "{INSTANCE_LABEL}={release},{SLOT_LABEL}={slot},{COMPONENT_LABEL}!={MIGRATION_COMPONENT},{WORKLOAD_LABEL}!=cronjob"
    )
}

/// The release's migration Jobs (of every slot, or of one).
pub fn migrations_selector(release: &str, slot: Option<Slot>) -> String {
    let base = format!("{INSTANCE_LABEL}={release},{COMPONENT_LABEL}={MIGRATION_COMPONENT}");
    match slot {
        Some(slot) => format!("{base},{SLOT_LABEL}={slot}"),
        None => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_its_app_without_its_migration() {
        assert_eq!(
            slot_selector("web", Slot::Green),
            "app.kubernetes.io/instance=web,bgslot/slot=green,app.kubernetes.io/component!=migration,bgslot/workload notin (worker,cronjob)"
        );
        assert_eq!(
            migrations_selector("web", Some(Slot::Blue)),
            "app.kubernetes.io/instance=web,app.kubernetes.io/component=migration,bgslot/slot=blue"
        );
    }
}
