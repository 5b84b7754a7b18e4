//! The per-release lock: a `coordination.k8s.io/v1` Lease held for the whole of a mutating command.
//!
//! Helm's own guard only notices a concurrent upgrade once it has started; two bgslot runs could
//! still read the same values and both act. The Lease makes the second one wait or stop (exit 4)
//! before it reads anything, and a Lease left by a killed process expires on its own.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::Client;
use tokio::sync::watch;

use crate::error::LockHeld;
use crate::events::Events;
use crate::record::RunStamp;
use crate::vocab::Op;

/// How long a Lease stays valid without renewal; renewal happens every third of it.
pub const LEASE_SECONDS: i32 = 15;

pub fn lease_name(release: &str) -> String {
    format!("bgslot-lock-{release}")
}

/// Who is running: shown to the next bgslot that finds the lock taken.
#[derive(Debug, Clone)]
pub struct Holder {
    pub operation: Op,
    /// The run across several clusters this Lease is one of.
    pub run: Option<RunStamp>,
}

impl Holder {
    fn identity(&self) -> String {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into());
        self.identity_of(&user, &hostname(), std::process::id())
    }

    /// `alice@ci pid 7 (swap)`; one of a run across clusters also names the run and its targets:
    /// `alice@ci pid 7 (release, run 20261206T181714Z-7f3a, 2 targets)`.
    fn identity_of(&self, user: &str, host: &str, pid: u32) -> String {
        match &self.run {
            Some(run) => format!(
                "{user}@{host} pid {pid} ({}, run {}, {} targets)",
                self.operation, run.id, run.targets
            ),
            None => format!("{user}@{host} pid {pid} ({})", self.operation),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// A lease is free when nobody holds it or its holder stopped renewing it.
pub fn is_free(spec: &LeaseSpec, now: Timestamp) -> bool {
    if spec.holder_identity.as_deref().is_none_or(str::is_empty) {
        return true;
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
    match spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) {
        Some(t) => now.duration_since(t.0).as_secs() > duration,
        None => true,
    }
}

/// Who holds the release lock right now, if anyone (an expired Lease counts as free).
pub async fn holder(client: Client, namespace: &str, release: &str) -> Result<Option<LockHeld>> {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let name = lease_name(release);
    let lease = api
        .get_opt(&name)
        .await
        .with_context(|| format!("reading the release lock Lease {namespace}/{name}"))?;
    Ok(lease
        .and_then(|l| l.spec)
        .filter(|s| !is_free(s, Timestamp::now()))
        .map(|spec| held_by(&name, namespace, spec)))
}

/// Holds the lock until [`LockGuard::release`]; renews it in the background, and notices when
/// someone else took it over.
pub struct LockGuard {
    api: Api<Lease>,
    name: String,
    namespace: String,
    stop: watch::Sender<bool>,
    renewer: tokio::task::JoinHandle<Option<String>>,
    lost: watch::Receiver<Option<Lost>>,
    identity: String,
}

/// The lock was taken over or deleted while this bgslot held it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    /// Who holds the Lease now, when it could be read.
    pub holder: Option<String>,
}

impl LockGuard {
    /// Takes the lock for `release`, waiting up to `wait` for a holder to finish.
    pub async fn acquire(
        client: Client,
        namespace: &str,
        release: &str,
        holder: Holder,
        wait: Option<Duration>,
        events: Arc<dyn Events>,
    ) -> Result<LockGuard> {
        let api: Api<Lease> = Api::namespaced(client, namespace);
        let name = lease_name(release);
        let identity = holder.identity();
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        let mut announced = false;
        let mut signals = crate::signals::subscribe();
        loop {
            let now = Timestamp::now();
            let existing = api
                .get_opt(&name)
                .await
                .with_context(|| format!("reading the release lock Lease {namespace}/{name}"))?;
            let attempt = match existing {
                None => {
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            ..Default::default()
                        },
                        spec: Some(held_spec(&identity, now, None)),
                    };
                    api.create(&PostParams::default(), &lease).await
                }
                Some(lease) if lease.spec.as_ref().map(|s| is_free(s, now)).unwrap_or(true) => {
                    let transitions = lease
                        .spec
                        .as_ref()
                        .and_then(|s| s.lease_transitions)
                        .unwrap_or(0)
                        + 1;
                    let taken = Lease {
                        metadata: lease.metadata.clone(),
                        spec: Some(held_spec(&identity, now, Some(transitions))),
                    };
                    api.replace(&name, &PostParams::default(), &taken).await
                }
                Some(lease) => {
                    let held = held_by(&name, namespace, lease.spec.unwrap_or_default());
                    match deadline {
                        Some(d) if tokio::time::Instant::now() < d => {
                            if !announced {
                                events.step(&format!("waiting for the release lock: {held}"));
                                announced = true;
                            }
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                                // Still held by the other bgslot: that is the outcome (exit 4).
                                sig = signals.changed_to_signal() => {
                                    return Err(anyhow::Error::new(held).context(format!(
                                        "interrupted by {} while waiting for the release lock",
                                        crate::signals::name(sig)
                                    )));
                                }
                            }
                        }
                        _ => return Err(held.into()),
                    }
                }
            };
            match attempt {
                Ok(lease) => return Ok(Self::hold(api, name, namespace, identity, lease, events)),
                // Someone else created or took it between our read and write: look again.
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(err) => {
                    return Err(err).with_context(|| {
                        format!("taking the release lock Lease {namespace}/{name} (bgslot needs create/update on leases.coordination.k8s.io)")
                    })
                }
            }
        }
    }

    fn hold(
        api: Api<Lease>,
        name: String,
        namespace: &str,
        identity: String,
        lease: Lease,
        events: Arc<dyn Events>,
    ) -> LockGuard {
        let (stop, mut stopped) = watch::channel(false);
        let (lost_tx, lost) = watch::channel(None);
        let renewer = {
            let api = api.clone();
            let name = name.clone();
            let identity = identity.clone();
            tokio::spawn(async move {
                let mut current = lease;
                let period = Duration::from_secs((LEASE_SECONDS / 3) as u64);
                loop {
                    tokio::select! {
                        _ = stopped.changed() => return current.metadata.resource_version.clone(),
                        _ = tokio::time::sleep(period) => {}
                    }
                    let mut renewed = current.clone();
                    if let Some(spec) = renewed.spec.as_mut() {
                        spec.renew_time = Some(MicroTime(Timestamp::now()));
                    }
                    match api.replace(&name, &PostParams::default(), &renewed).await {
                        Ok(lease) => current = lease,
                        Err(kube::Error::Api(status))
                            if status.code == 409 || status.code == 404 =>
                        {
                            // Someone replaced or deleted it: say who holds it now, and stop.
                            let holder = api
                                .get_opt(&name)
                                .await
                                .ok()
                                .flatten()
                                .and_then(|l| l.spec)
                                .and_then(|s| s.holder_identity)
                                .filter(|h| !h.is_empty() && *h != identity);
                            events.warning(&format!(
                                "lost the release lock {name}: {}; bgslot stops before its next write",
                                holder.as_deref().map(|h| format!("now held by {h}")).unwrap_or_else(|| "it was taken over or deleted".into())
                            ));
                            let _ = lost_tx.send(Some(Lost { holder }));
                            return None;
                        }
                        // A passing API outage: keep trying until the lease would expire.
                        Err(err) => events.warning(&format!(
                            "could not renew the release lock {name} ({identity}): {err}"
                        )),
                    }
                }
            })
        };
        LockGuard {
            api,
            name,
            namespace: namespace.to_string(),
            stop,
            renewer,
            lost,
            identity,
        }
    }

    /// `Some` once the renewal found the lock taken over or deleted.
    pub fn lost(&self) -> Option<Lost> {
        self.lost.borrow().clone()
    }

    /// Checks, just before a write, that the Lease is still ours: the renewal only looks every
    /// few seconds. An API server that does not answer cannot say; the renewal's view stands then
    /// (and the write itself would fail against such a server).
    pub async fn verify(&self) -> Result<(), Lost> {
        if let Some(lost) = self.lost() {
            return Err(lost);
        }
        match self.api.get_opt(&self.name).await {
            Ok(Some(lease)) => {
                let holder = lease.spec.and_then(|s| s.holder_identity);
                if holder.as_deref() == Some(self.identity.as_str()) {
                    Ok(())
                } else {
                    Err(Lost {
                        holder: holder.filter(|h| !h.is_empty()),
                    })
                }
            }
            Ok(None) => Err(Lost { holder: None }),
            Err(_) => Ok(()),
        }
    }

    /// The Lease as `namespace/name`.
    pub fn lease(&self) -> (String, String) {
        (self.namespace.clone(), self.name.clone())
    }

    /// Stops renewing and deletes the Lease (only if it is still ours).
    pub async fn release(self) {
        let _ = self.stop.send(true);
        let Ok(Some(resource_version)) = self.renewer.await else {
            return;
        };
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(resource_version),
                uid: None,
            }),
            ..Default::default()
        };
        let _ = self.api.delete(&self.name, &params).await;
    }
}

fn held_by(lease: &str, namespace: &str, spec: LeaseSpec) -> LockHeld {
    LockHeld {
        lease: lease.to_string(),
        namespace: namespace.to_string(),
        holder: spec.holder_identity.unwrap_or_default(),
        since: spec
            .acquire_time
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| "unknown".into()),
    }
}

fn held_spec(identity: &str, now: Timestamp, transitions: Option<i32>) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(LEASE_SECONDS),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: transitions,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed_secs_ago: i64) -> (LeaseSpec, Timestamp) {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let renew = now - k8s_openapi::jiff::SignedDuration::from_secs(renewed_secs_ago);
        (
            LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(renew)),
                ..Default::default()
            },
            now,
        )
    }

    #[test]
    fn a_renewed_lease_is_held_and_an_abandoned_one_expires() {
        let (s, now) = spec(Some("alice@h pid 1 (swap)"), 5);
        assert!(!is_free(&s, now));
        let (s, now) = spec(Some("alice@h pid 1 (swap)"), 16);
        assert!(is_free(&s, now));
        let (s, now) = spec(None, 0);
        assert!(is_free(&s, now));
    }

    #[test]
    fn a_holder_names_its_run_across_clusters() {
        let alone = Holder {
            operation: Op::Swap,
            run: None,
        };
        assert_eq!(alone.identity_of("alice", "ci", 7), "alice@ci pid 7 (swap)");
        let run = Holder {
            operation: Op::Release,
            run: Some(RunStamp {
                id: crate::record::RunId::new("20261206T181714Z", 0x7f3a),
                targets: 2,
            }),
        };
        assert_eq!(
            run.identity_of("alice", "ci", 7),
            "alice@ci pid 7 (release, run 20261206T181714Z-7f3a, 2 targets)"
        );
    }

    #[test]
    fn lease_is_named_after_the_release() {
        assert_eq!(lease_name("web"), "bgslot-lock-web");
    }
}
