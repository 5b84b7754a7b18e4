//! Waiting on a slot's migration Job: until it succeeded, or failed (then the error names the Job,
//! its pods' reasons and the tail of their logs).

use std::time::Duration;

use anyhow::{bail, Result};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{ListParams, LogParams};
use kube::runtime::reflector;
use kube::runtime::{watcher, WatchStreamExt};

use crate::cluster::labels::migrations_selector;
use crate::cluster::{Cluster, MigrationPhase, MigrationState, PodState};
use crate::events::Events;
use crate::signals;
use crate::vocab::Slot;

/// Waits for the slot's migration Job, if the chart rendered one: `Ok(None)` without one,
/// `Ok(Some(..))` once it succeeded.
pub async fn migration_done(
    cluster: &Cluster,
    release: &str,
    slot: Slot,
    timeout: Duration,
    events: &dyn Events,
) -> Result<Option<MigrationState>> {
    let selector = migrations_selector(release, Some(slot));
    let (store, writer) = reflector::store::<Job>();
    // Each event says whether the initial listing is complete: only then does "no Job" mean the
    // chart runs no migration.
    let stream = reflector::reflector(
        writer,
        watcher(
            cluster.api::<Job>(),
            watcher::Config::default().labels(&selector),
        ),
    )
    .default_backoff()
    .map(|e| {
        e.map(|event| matches!(event, watcher::Event::InitDone))
            .map_err(|e| e.to_string())
    });
    let mut stream = std::pin::pin!(stream);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut signals = signals::subscribe();
    let mut listed = false;
    let mut last: Option<MigrationState> = None;
    loop {
        tokio::select! {
            event = stream.next() => {
                match event {
                    Some(Ok(init_done)) => listed = listed || init_done,
                    Some(Err(err)) => {
                        events.step(&format!("{slot}: watch on the migration interrupted ({err}); retrying"));
                        continue;
                    }
                    None => bail!("the watch on the migration of {release} ended unexpectedly"),
                }
                let newest = store
                    .state()
                    .into_iter()
                    .max_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
                let Some(job) = newest else {
                    if listed {
                        return Ok(None);
                    }
                    continue;
                };
                let state = MigrationState::of(&job);
                if last.as_ref() != Some(&state) {
                    events.step(&format!("{slot}: migration {} {}", state.job, state.phase.as_str()));
                }
                match state.phase {
                    MigrationPhase::Succeeded => return Ok(Some(state)),
                    MigrationPhase::Failed => {
                        let detail = migration_pods(cluster, &state.job).await;
                        bail!(
                            "the migration Job {} of the {slot} slot failed{}; {detail}",
                            state.job,
                            state.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
                        );
                    }
                    MigrationPhase::Running => last = Some(state),
                }
            }
            _ = &mut deadline => {
                let job = last.map(|s| s.job).unwrap_or_else(|| "(none seen)".into());
                let detail = migration_pods(cluster, &job).await;
                bail!("timed out after {}s waiting for the migration Job {job} of the {slot} slot of {release}; {detail}", timeout.as_secs());
            }
            sig = signals.changed_to_signal() => {
                bail!("interrupted by {} while waiting for the migration of the {slot} slot of {release}", signals::name(sig));
            }
        }
    }
}

/// The pods of a migration Job: why each is not done, and the last lines of its log.
async fn migration_pods(cluster: &Cluster, job: &str) -> String {
    let pods = cluster.pods();
    let list = match pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
    {
        Ok(list) => list.items,
        Err(err) => return format!("its pods could not be listed: {err}"),
    };
    if list.is_empty() {
        return "it has no pods".into();
    }
    let mut parts = Vec::new();
    for pod in &list {
        let state = PodState::of(pod);
        let reason = state.reason.clone().unwrap_or_else(|| state.phase.clone());
        let params = LogParams {
            tail_lines: Some(20),
            ..LogParams::default()
        };
        let log = match pods.logs(&state.name, &params).await {
            Ok(log) if log.trim().is_empty() => "log: (empty)".to_string(),
            Ok(log) => format!("log tail:\n{}", log.trim_end()),
            Err(err) => format!("log unavailable: {err}"),
        };
        parts.push(format!("pod {}: {reason}; {log}", state.name));
    }
    parts.join("\n")
}
