//! A release's workers and CronJobs as the cluster shows them, per slot: each worker's Deployment
//! (how many pods it runs and how many are ready) and each CronJob (suspended or not, when it last
//! ran). Plain values built from API objects by pure functions; `api` reads them.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::labels::{COMPONENT_LABEL, SLOT_LABEL};
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
}

impl WorkerState {
    /// A worker Deployment as the chart labels it; `None` for one without a slot or a name.
    pub fn of(d: &Deployment) -> Option<WorkerState> {
        let labels = d.metadata.labels.as_ref()?;
        Some(WorkerState {
            name: labels.get(COMPONENT_LABEL)?.clone(),
            slot: labels.get(SLOT_LABEL)?.parse().ok()?,
            state: SlotState::from_deployment(d),
        })
    }

    /// Runs what it should and nothing else: every desired pod new and available (none for a
    /// worker scaled to zero), and no pod of an older spec or above the count.
    pub fn settled(&self) -> bool {
        let s = &self.state;
        s.deployment.is_some()
            && s.observed
            && s.updated == s.desired
            && s.available == s.desired
            && s.total == s.desired
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
        let text =
            |v: &Value, path: &str| v.pointer(path).and_then(Value::as_str).map(str::to_string);
        Some(CronJobState {
            name: text(labels, &format!("/{}", COMPONENT_LABEL.replace('/', "~1")))?,
            slot: text(labels, &format!("/{}", SLOT_LABEL.replace('/', "~1")))?
                .parse()
                .ok()?,
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
}
