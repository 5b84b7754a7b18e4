//! A release's workers and CronJobs as the cluster shows them, per slot: each worker's Deployment
//! (how many pods it runs and how many are ready) and each CronJob (suspended or not, when it last
//! ran). Plain values built from API objects by pure functions; `api` reads them.

use std::fmt;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::labels::{workers_selector, COMPONENT_LABEL, INSTANCE_LABEL, SLOT_LABEL};
use super::state::SlotState;
use crate::vocab::Slot;

/// One worker's Deployment in one slot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WorkerState {
    /// The worker's name (its `app.kubernetes.io/component`).
    pub name: String,
    pub slot: Slot,
    #[serde(flatten)]
    pub state: SlotState,
    /// The ConfigMaps and Secrets its pods cannot start without.
    #[serde(skip)]
    pub requires: Vec<ConfigRef>,
    /// The label selector of its pods.
    #[serde(skip)]
    pub pods: String,
}

/// A ConfigMap or Secret a pod template names without `optional: true`: the kubelet does not
/// start the pod until it exists.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConfigRef {
    ConfigMap(String),
    Secret(String),
}

impl fmt::Display for ConfigRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigRef::ConfigMap(name) => write!(f, "ConfigMap {name}"),
            ConfigRef::Secret(name) => write!(f, "Secret {name}"),
        }
    }
}

impl ConfigRef {
    /// What `spec` requires: env values, envFrom and volumes of every container and init
    /// container, sorted, each once.
    pub fn required_by(spec: &PodSpec) -> Vec<ConfigRef> {
        let required = |optional: Option<bool>| optional != Some(true);
        let mut refs = Vec::new();
        let containers = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten());
        for c in containers {
            for source in c.env.iter().flatten().filter_map(|e| e.value_from.as_ref()) {
                if let Some(k) = source
                    .config_map_key_ref
                    .as_ref()
                    .filter(|k| required(k.optional))
                {
                    refs.push(ConfigRef::ConfigMap(k.name.clone()));
                }
                if let Some(k) = source
                    .secret_key_ref
                    .as_ref()
                    .filter(|k| required(k.optional))
                {
                    refs.push(ConfigRef::Secret(k.name.clone()));
                }
            }
            for from in c.env_from.iter().flatten() {
                if let Some(r) = from
                    .config_map_ref
                    .as_ref()
                    .filter(|r| required(r.optional))
                {
                    refs.push(ConfigRef::ConfigMap(r.name.clone()));
                }
                if let Some(r) = from.secret_ref.as_ref().filter(|r| required(r.optional)) {
                    refs.push(ConfigRef::Secret(r.name.clone()));
                }
            }
        }
        for v in spec.volumes.iter().flatten() {
            if let Some(c) = v.config_map.as_ref().filter(|c| required(c.optional)) {
                refs.push(ConfigRef::ConfigMap(c.name.clone()));
            }
            if let Some(s) = v.secret.as_ref().filter(|s| required(s.optional)) {
                if let Some(name) = &s.secret_name {
                    refs.push(ConfigRef::Secret(name.clone()));
                }
            }
        }
        refs.sort();
        refs.dedup();
        refs
    }
}

impl WorkerState {
    /// A worker Deployment as the chart labels it; `None` for one without a slot or a name.
    pub fn of(d: &Deployment) -> Option<WorkerState> {
        let labels = d.metadata.labels.as_ref()?;
        let name = labels.get(COMPONENT_LABEL)?.clone();
        let slot: Slot = labels.get(SLOT_LABEL)?.parse().ok()?;
        let pods = labels
            .get(INSTANCE_LABEL)
            .map(|release| {
                format!(
                    "{},{COMPONENT_LABEL}={name}",
                    workers_selector(release, Some(slot))
                )
            })
            .unwrap_or_default();
        Some(WorkerState::named(d, name, slot, pods))
    }

    /// A worker Deployment known by its name in `slot` (a router's slot release), its pods
    /// found by `pods`.
    pub fn named(d: &Deployment, name: String, slot: Slot, pods: String) -> WorkerState {
        WorkerState {
            name,
            slot,
            state: SlotState::from_deployment(d),
            requires: d
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .map(ConfigRef::required_by)
                .unwrap_or_default(),
            pods,
        }
    }

    /// Runs what it should and nothing else: every desired pod new and available (none for a
    /// worker scaled to zero), and no pod of an older spec or above the count.
    pub fn settled(&self) -> bool {
        self.state.rolled_out()
    }

    /// Whether it consumes: it has pods that are ready.
    pub fn consuming(&self) -> bool {
        self.state.ready > 0
    }
}

/// One CronJob in one slot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CronJobState {
    pub name: String,
    pub slot: Slot,
    pub cron_job: String,
    pub schedule: String,
    pub suspended: bool,
    #[serde(skip)]
    pub last_schedule: Option<Timestamp>,
}

impl CronJobState {
    /// A CronJob as the chart labels it, read as JSON: `batch/v1` and `batch/v1beta1` (served
    /// before Kubernetes 1.21) share the fields read here.
    pub fn of(cron_job: &Value) -> Option<CronJobState> {
        let labels = cron_job.pointer("/metadata/labels")?;
        let name = text(labels, &format!("/{}", COMPONENT_LABEL.replace('/', "~1")))?;
        let slot = text(labels, &format!("/{}", SLOT_LABEL.replace('/', "~1")))?
            .parse()
            .ok()?;
        CronJobState::named(cron_job, name, slot)
    }

    /// A CronJob known by its name in `slot` (a router's slot release).
    pub fn named(cron_job: &Value, name: String, slot: Slot) -> Option<CronJobState> {
        Some(CronJobState {
            name,
            slot,
            cron_job: text(cron_job, "/metadata/name")?,
            schedule: text(cron_job, "/spec/schedule").unwrap_or_default(),
            suspended: cron_job
                .pointer("/spec/suspend")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            last_schedule: text(cron_job, "/status/lastScheduleTime").and_then(|t| t.parse().ok()),
        })
    }
}

fn text(v: &Value, path: &str) -> Option<String> {
    v.pointer(path).and_then(Value::as_str).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn workers_and_cron_jobs_are_read_from_the_chart_s_labels() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web-green-consumer", "generation": 3,
                         "labels": {"bgslot/slot": "green", "bgslot/workload": "worker", "app.kubernetes.io/component": "consumer"}},
            "spec": {"replicas": 0, "selector": {}, "template": {"spec": {"containers": [{"name": "worker", "image": "web:v2"}]}}},
            "status": {"observedGeneration": 3}
        }))
        .unwrap();
        let w = WorkerState::of(&d).unwrap();
        assert_eq!(
            (w.name.as_str(), w.slot, w.state.desired),
            ("consumer", Slot::Green, 0)
        );
        assert!(
            w.settled() && !w.consuming(),
            "a worker at 0 with no pods has stopped"
        );
        let cron = CronJobState::of(&json!({
            "metadata": {"name": "web-blue-nightly-report",
                         "labels": {"bgslot/slot": "blue", "bgslot/workload": "cronjob", "app.kubernetes.io/component": "nightly-report"}},
            "spec": {"schedule": "0 3 * * *", "suspend": false},
            "status": {"lastScheduleTime": "2026-12-06T03:00:00Z"}
        }))
        .unwrap();
        assert_eq!(
            (cron.name.as_str(), cron.slot, cron.suspended),
            ("nightly-report", Slot::Blue, false)
        );
        assert!(cron.last_schedule.is_some());
        assert_eq!(CronJobState::of(&json!({"metadata": {"name": "x"}})), None);
    }

    #[test]
    fn what_a_pod_cannot_start_without() {
        let spec: PodSpec = serde_json::from_value(json!({
            "containers": [{"name": "worker", "image": "web:v2",
                "env": [
                    {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "queues", "key": "url"}}},
                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": "maybe", "key": "x", "optional": true}}},
                    {"name": "C", "value": "plain"}
                ],
                "envFrom": [{"secretRef": {"name": "web-green-secret-env"}}, {"configMapRef": {"name": "queues"}}]}],
            "initContainers": [{"name": "wait", "image": "busybox",
                "env": [{"name": "D", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]}],
            "volumes": [
                {"name": "c", "configMap": {"name": "web-green-files"}},
                {"name": "o", "configMap": {"name": "extra", "optional": true}},
                {"name": "t", "emptyDir": {}}
            ]
        }))
        .unwrap();
        assert_eq!(
            ConfigRef::required_by(&spec)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                "ConfigMap queues",
                "ConfigMap web-green-files",
                "Secret db",
                "Secret web-green-secret-env"
            ]
        );
    }
}
