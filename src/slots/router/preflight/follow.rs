//! What follows production in a slot release, found in its render: the Deployments named as
//! workers (`--worker`: they pull work, so they run in the production slot only, at the chart's
//! size or its HPA's, and at `--worker-stage-replicas` in the stage slot), and every CronJob
//! (suspended unless its slot is production), but one the chart itself renders suspended: that
//! one stays as the chart says (a team's way to keep a job off). bgslot moves them through the API at a swap, never
//! by a helm write to a slot release, so each worker must be a Deployment of the slot release
//! that no route serves; an HPA may size it in production only (at 0 replicas an HPA stands
//! aside; above, it would undo the stage's size).

use super::mirror::Mirrored;
use super::Checks;
use crate::error::Refusal;
use crate::slots::router::app::{named_in, route_of};
use crate::slots::router::manifest::{Object, Rendered};
use crate::slots::router::values::{CronJobRecord, WorkerRecord};

/// The workers and CronJobs of the slot's render, as the router records them, and the workers'
/// Deployments.
pub(super) struct Follows<'a> {
    pub(super) deployments: Vec<&'a Object>,
    pub(super) workers: Vec<WorkerRecord>,
    pub(super) cron_jobs: Vec<CronJobRecord>,
}

pub(super) fn follows<'a>(
    slot: &'a Rendered,
    mirrored: &[Mirrored],
    c: &Checks,
) -> Result<Follows<'a>, Refusal> {
    let release = slot.release.as_str();
    let mut out = Follows {
        deployments: Vec::new(),
        workers: Vec::new(),
        cron_jobs: Vec::new(),
    };
    for pattern in &c.app.workers {
        let name = named_in(pattern, release);
        let Some(deployment) = slot.deployments().find(|d| d.name == name) else {
            let names: Vec<&str> = slot.deployments().map(|d| d.name.as_str()).collect();
            return Err(Refusal::new(
                format!(
                    "{release} renders no Deployment named {name} (--worker {pattern}); its Deployments: {}",
                    if names.is_empty() { "none".to_string() } else { names.join(", ") }
                ),
                "name a worker with --worker, {release} standing for the slot release (e.g. --worker '{release}-worker')",
            ));
        };
        if let Some(route) = mirrored
            .iter()
            .find(|m| m.routed.iter().any(|d| d.name == name))
        {
            return Err(Refusal::new(
                format!(
                    "Deployment {name} of {release} serves the route {} (Service {}): a worker pulls work and runs in production only",
                    route.route, route.service.name
                ),
                format!("drop --worker {pattern}: a Deployment behind a Service is routed, not moved"),
            ));
        }
        let hpa = slot.of_kind("HorizontalPodAutoscaler").find(|h| {
            let target = &h.doc["spec"]["scaleTargetRef"];
            target["kind"] == "Deployment" && target["name"] == name.as_str()
        });
        if let (Some(hpa), n @ 1..) = (hpa, c.app.worker_stage_replicas) {
            return Err(Refusal::new(
                format!(
                    "{} of {release} sizes the worker {name}, which the stage slot runs at {n} (--worker-stage-replicas): the HPA would size it there too",
                    hpa.describe(c.namespace)
                ),
                "stage the workers at 0 (--worker-stage-replicas 0: an HPA stands aside at 0), or turn the worker's autoscaling off",
            ));
        }
        out.workers.push(WorkerRecord {
            name: route_of(pattern),
            deployment: name,
            replicas: deployment.doc["spec"]["replicas"].as_u64().unwrap_or(1),
            autoscaled: hpa.is_some(),
        });
        out.deployments.push(deployment);
    }
    let prefix = format!("{release}-");
    out.cron_jobs = slot
        .of_kind("CronJob")
        .filter(|cron| cron.doc["spec"]["suspend"] != true)
        .map(|cron| CronJobRecord {
            name: cron
                .name
                .strip_prefix(&prefix)
                .unwrap_or(&cron.name)
                .to_string(),
            cron_job: cron.name.clone(),
        })
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    const WORKER: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web-green-sidekiq}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: sidekiq, app.kubernetes.io/instance: web-green}}\n  template:\n    metadata: {labels: {app: sidekiq, app.kubernetes.io/instance: web-green}}\n    spec: {containers: [{name: sidekiq, image: \"nginx:v2\"}]}";
    const CRON: &str = "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: web-green-nightly}\nspec:\n  schedule: \"0 3 * * *\"\n  jobTemplate: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: r, image: \"nginx:v2\"}]}}}}";

    #[test]
    fn workers_and_cron_jobs_are_recorded_by_their_names_across_slots() {
        let mut case = Case::new().slot(add(WORKER)).slot(add(CRON));
        case.app.workers = vec!["{release}-sidekiq".into()];
        let a = case.run().unwrap();
        assert_eq!(
            (
                a.workers[0].name.as_str(),
                a.workers[0].deployment.as_str(),
                a.workers[0].replicas
            ),
            ("sidekiq", "web-green-sidekiq", 2)
        );
        assert_eq!(
            (
                a.cron_jobs[0].name.as_str(),
                a.cron_jobs[0].cron_job.as_str()
            ),
            ("nightly", "web-green-nightly")
        );
        assert!(a.deployments.contains(&"web-green-sidekiq".to_string()));
    }

    #[test]
    fn a_cron_job_the_chart_renders_suspended_does_not_follow_production() {
        let off = CRON.replace("schedule:", "suspend: true\n  schedule:");
        let a = Case::new().slot(add(&off)).run().unwrap();
        assert!(a.cron_jobs.is_empty(), "{:?}", a.cron_jobs);
        let on = CRON.replace("schedule:", "suspend: false\n  schedule:");
        let a = Case::new().slot(add(&on)).run().unwrap();
        assert_eq!(a.cron_jobs.len(), 1);
    }

    #[test]
    fn a_worker_must_exist_serve_no_route_and_have_no_hpa_where_it_is_staged_running() {
        let mut missing = Case::new();
        missing.app.workers = vec!["{release}-sidekiq".into()];
        let err = missing.refusal();
        assert!(
            err.reason
                .contains("renders no Deployment named web-green-sidekiq"),
            "{err:?}"
        );
        let mut routed = Case::new();
        routed.app.workers = vec!["{release}-myapp".into()];
        let err = routed.refusal();
        assert!(
            err.reason
                .contains("serves the route main (Service web-green-myapp)"),
            "{err:?}"
        );
        let hpa = "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web-green-sidekiq}\nspec: {scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web-green-sidekiq}, minReplicas: 1, maxReplicas: 4}";
        let mut scaled = Case::new().slot(add(WORKER)).slot(add(hpa));
        scaled.app.workers = vec!["{release}-sidekiq".into()];
        assert!(
            scaled.run().unwrap().workers[0].autoscaled,
            "at 0 in stage, the HPA stands aside"
        );
        scaled.app.worker_stage_replicas = 1;
        let err = scaled.refusal();
        assert!(
            err.reason
                .contains("sizes the worker web-green-sidekiq, which the stage slot runs at 1"),
            "{err:?}"
        );
    }
}
