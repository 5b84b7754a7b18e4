//! bgslot's own waiting, instead of `helm --wait`, one of each for both kinds of slot: by what is
//! waited on, a slot's rollout and its pods stopping (`rollout`), what the Services route to
//! (`services`), a slot's migration Job (`migration`), a slot's workers (`workers`), and the change
//! feeds `status --watch` redraws on (`feed`).
//!
//! Every wait is driven by watches (kube-runtime's watcher with backoff), so a change is noticed
//! when it happens rather than at the next poll, and a restarting API server delays the wait
//! instead of failing it. Progress goes to the event sink a wait is handed; on timeout the error
//! says what was seen last and, for pods, which ones and why.

pub mod feed;
pub mod migration;
pub mod rollout;
pub mod services;
pub mod workers;

pub use feed::release_changes;
pub use migration::migration_done;
pub use rollout::{pods_gone, slot_rolled_out, Deployments, RolledOut, SlotRollout};
pub use services::{endpoints_ready, production_serves};
pub use workers::workers_settled;

use std::time::Duration;

use futures::StreamExt;
use kube::runtime::{watcher, WatchStreamExt};

use crate::cluster::PodState;
use crate::events::Events;
use crate::signals;

/// The drain delay of a `release --clean`, between its swap and its clean: the old slot finishes
/// its in-flight requests. A SIGINT or SIGTERM ends it with an error; production already runs
/// the new version by then.
pub async fn drain_delay(delay: Duration, events: &dyn Events) -> anyhow::Result<()> {
    events.step(&format!(
        "waiting {}s (drain delay) before cleaning the old slot",
        delay.as_secs()
    ));
    let mut sigs = signals::subscribe();
    tokio::select! {
        _ = tokio::time::sleep(delay) => Ok(()),
        sig = sigs.changed_to_signal() => anyhow::bail!(
            "interrupted by {} during the drain delay; production already runs the new version",
            signals::name(sig)
        ),
    }
}

/// Why pods are not ready, each reason once, leaving out the states every pod passes through.
pub fn reasons(pods: &[PodState]) -> Vec<String> {
    let mut reasons: Vec<String> = pods
        .iter()
        .filter(|p| !p.ready && !p.terminating)
        .filter_map(|p| p.reason.clone())
        .filter(|r| !is_starting(r))
        .collect();
    reasons.sort();
    reasons.dedup();
    reasons
}

/// States every pod passes through on its way up: not worth a progress line of their own.
fn is_starting(reason: &str) -> bool {
    matches!(
        reason,
        "ContainerCreating" | "PodInitializing" | "Pending" | "Pending: not scheduled"
    )
}

/// Describes the pods that keep a slot from being available, for a timeout error.
pub fn explain_pods(pods: &[PodState]) -> String {
    let bad: Vec<String> = pods
        .iter()
        .filter(|p| !p.ready && !p.terminating)
        .map(|p| {
            let mut s = format!(
                "pod {}: {}",
                p.name,
                p.reason.as_deref().unwrap_or("not ready")
            );
            if p.restarts > 0 {
                s.push_str(&format!(" ({} restarts)", p.restarts));
            }
            s
        })
        .collect();
    if bad.is_empty() {
        "no pod reports a problem (the Deployment may be blocked by quota or scheduling)".into()
    } else {
        bad.join("; ")
    }
}

/// The pods' names, comma-separated.
fn names(pods: &[PodState]) -> String {
    pods.iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One tick per change of the objects `api` lists with `config`; watch errors (a restarting API
/// server) are retried with backoff.
pub fn ticks<K>(
    api: kube::Api<K>,
    config: watcher::Config,
) -> futures::stream::BoxStream<'static, ()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    watcher(api, config)
        .default_backoff()
        .filter_map(|e| futures::future::ready(e.ok().map(|_| ())))
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::pod;

    #[test]
    fn reasons_are_named_once_and_starting_pods_say_nothing() {
        let pods = [
            pod("a", true, None, 0),
            pod("b", false, Some("ImagePullBackOff"), 0),
            pod("c", false, Some("ImagePullBackOff"), 0),
            pod("d", false, Some("ContainerCreating"), 0),
        ];
        assert_eq!(reasons(&pods), ["ImagePullBackOff"]);
    }

    #[test]
    fn timeout_explanation_names_pods_and_reasons() {
        let pods = [
            pod("web-green-1", false, Some("CrashLoopBackOff"), 4),
            pod("web-green-2", true, None, 0),
        ];
        assert_eq!(
            explain_pods(&pods),
            "pod web-green-1: CrashLoopBackOff (4 restarts)"
        );
        assert_eq!(names(&pods), "web-green-1, web-green-2");
        assert!(explain_pods(&[]).contains("quota or scheduling"));
    }
}
