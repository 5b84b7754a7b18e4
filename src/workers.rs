//! Workers and CronJobs that follow production: what the values say about them (per slot, after
//! the slot's overrides), what a flip does to each, and whether a staged slot's workers can run.
//! The chart renders them; this module decides around them, purely.
//!
//! The one thing in a slot that follows `productionSlot` is how many pods each worker runs
//! (`replicas`, or its HPA, in the production slot; `stageReplicas`, 0 by default, in the other)
//! and whether each CronJob is suspended (in every slot but production). A worker named in
//! `heldWorkers` runs in neither slot: a `stop-first` handover holds it while the old slot's pods
//! stop.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::cluster::Observed;
use crate::error::Refusal;
use crate::vocab::{PerSlot, Slot};

/// How a worker moves at a swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Handover {
    /// The new slot's workers start while the old slot's stop: for a moment both versions consume.
    Overlap,
    /// The old slot's workers stop first (their pods gone), then the new slot's start: never two
    /// versions at once, at the cost of a gap with no consumer and a second helm write.
    StopFirst,
}

impl fmt::Display for Handover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Handover::Overlap => "overlap",
            Handover::StopFirst => "stop-first",
        })
    }
}

/// One worker as the values configure it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Worker {
    pub name: String,
    pub handover: Handover,
    /// Per slot (after the slot's overrides): the replicas it runs when that slot is production.
    pub replicas: PerSlot<u64>,
    /// Per slot: the replicas it runs when that slot is stage.
    pub stage_replicas: PerSlot<u64>,
    /// Per slot: its HPA owns the replicas when that slot is production.
    pub autoscaled: PerSlot<bool>,
}

/// How many pods a worker is meant to run in a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    /// This many (0: stopped).
    Replicas(u64),
    /// Its HPA decides.
    Autoscaled,
}

impl fmt::Display for Desired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Desired::Replicas(n) => write!(f, "{n}"),
            Desired::Autoscaled => f.write_str("its HPA's"),
        }
    }
}

impl Worker {
    /// What the worker runs in `slot` when `production` is production and `held` are held.
    pub fn desired(&self, slot: Slot, production: Slot, held: &BTreeSet<String>) -> Desired {
        if held.contains(&self.name) {
            Desired::Replicas(0)
        } else if slot == production {
            match (self.autoscaled[slot], self.replicas[slot]) {
                (true, n) if n > 0 => Desired::Autoscaled,
                (_, n) => Desired::Replicas(n),
            }
        } else {
            Desired::Replicas(self.stage_replicas[slot])
        }
    }
}

/// A release's workers and CronJobs, as its values say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Workloads {
    pub workers: Vec<Worker>,
    pub cron_jobs: Vec<String>,
    /// Workers held at 0 in both slots (`heldWorkers`).
    pub held: BTreeSet<String>,
}

impl Workloads {
    /// Reads `workers`, `cronJobs`, `heldWorkers` and each slot's overrides from the computed values.
    pub fn from_values(all: &Value) -> Workloads {
        let names = |key: &str| -> Vec<String> {
            all.get(key)
                .and_then(Value::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default()
        };
        let workers = names("workers")
            .into_iter()
            .map(|name| {
                let shared = all.pointer(&format!("/workers/{name}"));
                // A slot's own value wins; a missing or null one inherits the shared value.
                let field = |slot: Slot, key: &str| -> Option<&Value> {
                    all.pointer(&format!("/{slot}/workers/{name}/{key}"))
                        .filter(|v| !v.is_null())
                        .or_else(|| {
                            shared
                                .and_then(|s| s.pointer(&format!("/{key}")))
                                .filter(|v| !v.is_null())
                        })
                };
                let count = |slot: Slot, key: &str, default: u64| {
                    field(slot, key).and_then(Value::as_u64).unwrap_or(default)
                };
                Worker {
                    handover: match shared
                        .and_then(|s| s.get("handover"))
                        .and_then(Value::as_str)
                    {
                        Some("stop-first") => Handover::StopFirst,
                        _ => Handover::Overlap,
                    },
                    replicas: PerSlot::new(|s| count(s, "replicas", 1)),
                    stage_replicas: PerSlot::new(|s| count(s, "stageReplicas", 0)),
                    autoscaled: PerSlot::new(|s| {
                        field(s, "autoscaling/enabled")
                            .and_then(Value::as_bool)
                            .unwrap_or(false)
                    }),
                    name,
                }
            })
            .collect();
        let held = all
            .get("heldWorkers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Workloads {
            workers,
            cron_jobs: names("cronJobs"),
            held,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty() && self.cron_jobs.is_empty()
    }

    /// The workers a flip stops first.
    pub fn stop_first(&self) -> Vec<&Worker> {
        self.workers
            .iter()
            .filter(|w| w.handover == Handover::StopFirst)
            .collect()
    }

    /// What a flip of production from `from` to `to` changes in each slot's workers and CronJobs,
    /// with the workers in `held_during` held (the first write of a `stop-first` handover).
    pub fn flip_effects(
        &self,
        from: Slot,
        to: Slot,
        held_during: &BTreeSet<String>,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        for w in &self.workers {
            for slot in [to, from] {
                let old = w.desired(slot, from, &self.held);
                let new = w.desired(slot, to, held_during);
                if old != new {
                    effects.push(Effect {
                        object: format!("worker {} ({slot})", w.name),
                        field: "replicas".into(),
                        old: old.to_string(),
                        new: new.to_string(),
                    });
                }
            }
        }
        for name in &self.cron_jobs {
            for (slot, old, new) in [(to, true, false), (from, false, true)] {
                effects.push(Effect {
                    object: format!("CronJob {name} ({slot})"),
                    field: "suspend".into(),
                    old: old.to_string(),
                    new: new.to_string(),
                });
            }
        }
        effects
    }

    /// Refuses a swap to `to` whose workers cannot run: each must exist in the staged slot, run
    /// the image its web pods run and find the ConfigMaps and Secrets it requires (a worker
    /// Deployment the chart did not render, one left on another version, or one whose own
    /// extraEnv names config that is not there would fail or consume with the wrong code once
    /// production moves; staged at 0 pods, none of it shows before).
    /// `web`: the image the slot's web pods run, which each worker must run too (`None`: not
    /// compared, as for a router's workers, whose chart runs what it runs).
    pub fn check_can_run(
        &self,
        release: &str,
        observed: &Observed,
        to: Slot,
        web: Option<Option<&str>>,
    ) -> Result<(), Refusal> {
        for w in &self.workers {
            let Some(state) = observed.worker(&w.name, to) else {
                return Err(Refusal::new(
                    format!("the {to} slot has no Deployment for the worker {}: production's workers would not move with it", w.name),
                    format!("deploy the version again so the chart renders it: `bgslot deploy {release} --tag TAG --replace`"),
                ));
            };
            if let Some(web) = web.filter(|web| state.state.image.as_deref() != *web) {
                return Err(Refusal::new(
                    format!(
                        "the {to} slot's worker {} would run {}, not what its web pods run ({})",
                        w.name,
                        state.state.image.as_deref().unwrap_or("no image"),
                        web.unwrap_or("no image")
                    ),
                    format!("redeploy the slot so both run the same version: `bgslot deploy {release} --tag TAG --replace`"),
                ));
            }
            let missing: Vec<String> = state
                .requires
                .iter()
                .filter(|r| observed.absent_config.contains(r))
                .map(ToString::to_string)
                .collect();
            if !missing.is_empty() {
                return Err(Refusal::new(
                    format!(
                        "the {to} slot's worker {} needs {}, which does not exist in the namespace: its pods would not start once production moves",
                        w.name,
                        missing.join(" and ")
                    ),
                    format!("create it, or fix the worker's extraEnv and redeploy: `bgslot deploy {release} --tag TAG --replace`"),
                ));
            }
        }
        Ok(())
    }
}

/// Something a write changes in the cluster besides a value: a worker's replicas, a CronJob's
/// suspend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Effect {
    pub object: String,
    pub field: String,
    pub old: String,
    pub new: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values() -> Value {
        json!({
            "productionSlot": "blue",
            "workers": {
                "consumer": {"replicas": 2, "stageReplicas": 0, "handover": "stop-first"},
                "mailer": {"replicas": 3, "autoscaling": {"enabled": true}},
            },
            "cronJobs": {"nightly-report": {"schedule": "0 3 * * *"}},
            "green": {"workers": {"consumer": {"stageReplicas": 1, "replicas": null}}},
            "heldWorkers": [],
        })
    }

    #[test]
    fn a_staged_worker_that_cannot_run_is_refused() {
        use crate::cluster::{ConfigRef, Observed, SlotState, WorkerState};
        let w = Workloads::from_values(&json!({"workers": {"consumer": {"replicas": 2}}}));
        let state = |image: &str| SlotState {
            deployment: Some("web-green".into()),
            image: Some(image.into()),
            ..SlotState::default()
        };
        let mut observed = Observed::default();
        observed.slots.green = state("web:v2");
        let refuse = |o: &Observed| {
            let web = Some(o.slot(Slot::Green).image.as_deref());
            w.check_can_run("web", o, Slot::Green, web)
                .unwrap_err()
                .reason
        };
        assert!(
            refuse(&observed).contains("the green slot has no Deployment for the worker consumer")
        );
        let queues = ConfigRef::ConfigMap("queues".into());
        observed.workers = vec![WorkerState {
            name: "consumer".into(),
            slot: Slot::Green,
            state: state("web:v1"),
            requires: vec![queues.clone()],
            pods: String::new(),
        }];
        assert!(refuse(&observed).contains("would run web:v1, not what its web pods run (web:v2)"));
        observed.workers[0].state = state("web:v2");
        assert!(w
            .check_can_run("web", &observed, Slot::Green, Some(Some("web:v2")))
            .is_ok());
        // A router's worker runs what its chart renders: only its presence and config count.
        observed.workers[0].state = state("sidekiq:v7");
        assert!(w.check_can_run("web", &observed, Slot::Green, None).is_ok());
        observed.workers[0].state = state("web:v2");
        observed.absent_config = vec![queues];
        assert_eq!(
            refuse(&observed),
            "the green slot's worker consumer needs ConfigMap queues, which does not exist in the namespace: its pods would not start once production moves"
        );
    }

    #[test]
    fn a_slot_s_overrides_win_and_nulls_inherit() {
        let w = Workloads::from_values(&values());
        let consumer = &w.workers[0];
        assert_eq!(consumer.handover, Handover::StopFirst);
        assert_eq!((consumer.replicas.blue, consumer.replicas.green), (2, 2));
        assert_eq!(
            (consumer.stage_replicas.blue, consumer.stage_replicas.green),
            (0, 1)
        );
        assert_eq!(w.workers[1].handover, Handover::Overlap);
        assert_eq!(w.cron_jobs, ["nightly-report"]);
        assert!(Workloads::from_values(&json!({})).is_empty());
    }

    #[test]
    fn what_a_worker_runs_follows_production() {
        let w = Workloads::from_values(&values());
        let (consumer, mailer) = (&w.workers[0], &w.workers[1]);
        let none = BTreeSet::new();
        assert_eq!(
            consumer.desired(Slot::Blue, Slot::Blue, &none),
            Desired::Replicas(2)
        );
        assert_eq!(
            consumer.desired(Slot::Green, Slot::Blue, &none),
            Desired::Replicas(1)
        );
        assert_eq!(
            mailer.desired(Slot::Blue, Slot::Blue, &none),
            Desired::Autoscaled
        );
        assert_eq!(
            mailer.desired(Slot::Green, Slot::Blue, &none),
            Desired::Replicas(0)
        );
        let held = BTreeSet::from(["consumer".to_string()]);
        assert_eq!(
            consumer.desired(Slot::Blue, Slot::Blue, &held),
            Desired::Replicas(0)
        );
    }

    #[test]
    fn a_flip_moves_workers_and_cron_jobs() {
        let w = Workloads::from_values(&values());
        let shown: Vec<String> = w
            .flip_effects(Slot::Blue, Slot::Green, &BTreeSet::new())
            .iter()
            .map(|e| format!("{} {}: {} -> {}", e.object, e.field, e.old, e.new))
            .collect();
        assert_eq!(
            shown,
            [
                "worker consumer (green) replicas: 1 -> 2",
                "worker consumer (blue) replicas: 2 -> 0",
                "worker mailer (green) replicas: 0 -> its HPA's",
                "worker mailer (blue) replicas: its HPA's -> 0",
                "CronJob nightly-report (green) suspend: true -> false",
                "CronJob nightly-report (blue) suspend: false -> true",
            ]
        );
        let held = BTreeSet::from(["consumer".to_string()]);
        let first_write = w.flip_effects(Slot::Blue, Slot::Green, &held);
        assert_eq!(
            first_write[0].new, "0",
            "a held worker starts in neither slot"
        );
        assert_eq!(w.stop_first().len(), 1);
    }
}
