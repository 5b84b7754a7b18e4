//! The decisions: given the release values, what the cluster runs and the helm history, either the
//! one helm write an operation needs or the refusal that keeps the release as it is.
//!
//! Everything here is pure so every safety rule is unit-tested without a cluster.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::cluster::{ServiceState, SlotState};
use crate::error::Refusal;
use crate::helm::{Revision, SetValue, Write};
use crate::values::{ReleaseValues, Slot};

/// What the cluster shows for one release.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub blue: SlotState,
    pub green: SlotState,
    pub production_service: Option<ServiceState>,
    pub stage_service: Option<ServiceState>,
}

impl Observed {
    pub fn slot(&self, slot: Slot) -> &SlotState {
        match slot {
            Slot::Blue => &self.blue,
            Slot::Green => &self.green,
        }
    }
}

/// Refuses to act on a release whose latest helm revision is not settled.
pub fn check_helm_state(release: &str, history: &[Revision]) -> Result<(), Refusal> {
    let Some(latest) = history.last() else {
        return Ok(());
    };
    let status = latest.status.as_str();
    let last_good = history
        .iter()
        .rev()
        .find(|r| r.status == "deployed" || r.status == "superseded");
    let recover = match last_good {
        Some(good) => format!(
            "if no helm or bgslot command is still running on it, run `bgslot recover {release}` to return to revision {} (what `helm rollback {release} {}` does)",
            good.revision, good.revision
        ),
        None => format!("the release was never deployed; remove it with `helm uninstall {release}` and deploy again"),
    };
    if let Some(op) = status.strip_prefix("pending-") {
        return Err(Refusal::new(
            format!(
                "release {release} is in state {status} (revision {}, {}): a helm {op} started and has not finished, or was killed",
                latest.revision, latest.updated
            ),
            recover,
        ));
    }
    if status == "failed" {
        return Err(Refusal::new(
            format!(
                "release {release} is in state failed (revision {}: {}): its values may not match what runs",
                latest.revision,
                if latest.description.is_empty() { "no description" } else { &latest.description }
            ),
            recover,
        ));
    }
    Ok(())
}

/// What `recover` does: roll back from `from` to the last good revision `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverPlan {
    pub from: Revision,
    pub to: Revision,
}

/// Plans the return of a stuck release to its last deployed revision; `None` when nothing is
/// stuck. A young pending revision may belong to a helm that is still running, so it is left
/// alone unless forced.
pub fn plan_recover(
    release: &str,
    history: &[Revision],
    now: Timestamp,
    min_age: Duration,
    force: bool,
) -> Result<Option<RecoverPlan>, Refusal> {
    if check_helm_state(release, history).is_ok() {
        return Ok(None);
    }
    let latest = history
        .last()
        .expect("a stuck release has a revision")
        .clone();
    if latest.status.starts_with("pending-") && !force {
        if let Some(age) = latest
            .updated_at()
            .map(|t| now.duration_since(t).unsigned_abs())
        {
            if age < min_age {
                return Err(Refusal::new(
                    format!(
                        "revision {} of {release} became {} only {}s ago: a helm may still be working on it",
                        latest.revision,
                        latest.status,
                        age.as_secs()
                    ),
                    format!(
                        "wait for that helm to finish, or if you know it is gone, run `bgslot recover {release} --force`"
                    ),
                ));
            }
        }
    }
    let Some(good) = history
        .iter()
        .rev()
        .find(|r| r.status == "deployed" || r.status == "superseded")
    else {
        return Err(Refusal::new(
            format!(
                "release {release} was never deployed (revision {} is {}); there is no revision to return to",
                latest.revision, latest.status
            ),
            format!("remove it with `helm uninstall {release}` and deploy again"),
        ));
    };
    Ok(Some(RecoverPlan {
        from: latest,
        to: good.clone(),
    }))
}

/// Which services disagree with the values: human-readable lines, empty when consistent.
pub fn drift(release: &str, values: &ReleaseValues, observed: &Observed) -> Vec<String> {
    let mut lines = Vec::new();
    let mut check = |svc: &Option<ServiceState>, role: &str, want: Slot| match svc {
        None => lines.push(format!("the {role} Service of {release} does not exist")),
        Some(svc) if svc.selects != Some(want) => lines.push(format!(
            "Service {} ({role}) selects {} but the values say {want}",
            svc.name,
            svc.selector_slot.as_deref().unwrap_or("no slot")
        )),
        Some(_) => {}
    };
    check(
        &observed.production_service,
        "production",
        values.production,
    );
    check(&observed.stage_service, "stage", values.stage());
    lines
}

/// A request to put a new version in the idle slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRequest {
    pub repository: Option<String>,
    pub tag: String,
    pub replicas: Option<u32>,
    pub replace: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployPlan {
    pub slot: Slot,
    pub replicas: Option<u64>,
    pub write: Write,
}

fn image_sets(write: Write, slot: Slot, req: &DeployRequest, replicas: Option<u64>) -> Write {
    let mut write = write.set(format!("{slot}.enabled"), SetValue::Literal("true".into()));
    if let Some(repo) = &req.repository {
        write = write.set(
            format!("{slot}.image.repository"),
            SetValue::Str(repo.clone()),
        );
    }
    write = write.set(format!("{slot}.image.tag"), SetValue::Str(req.tag.clone()));
    if let Some(n) = replicas {
        write = write.set(
            format!("{slot}.replicaCount"),
            SetValue::Literal(n.to_string()),
        );
    }
    write
}

/// Installs a new release (production = blue) or stages the version in the idle slot.
pub fn plan_deploy(
    release: &str,
    values: Option<&ReleaseValues>,
    observed: &Observed,
    req: &DeployRequest,
) -> Result<DeployPlan, Refusal> {
    let Some(values) = values else {
        let replicas = req.replicas.map(u64::from);
        let mut write = Write::upgrade(format!("bgslot install blue {}", req.tag));
        write.install = true;
        let write = write
            .set("productionSlot", SetValue::Str("blue".into()))
            .set("green.enabled", SetValue::Literal("false".into()));
        return Ok(DeployPlan {
            slot: Slot::Blue,
            replicas,
            write: image_sets(write, Slot::Blue, req, replicas),
        });
    };
    let idle = values.stage();
    let staged = values.slot(idle);
    if staged.enabled && !req.replace {
        return Err(Refusal::new(
            format!(
                "the idle slot {idle} already runs a staged version ({}); deploying would replace it",
                staged.image()
            ),
            format!(
                "swap to it (`bgslot swap {release}`), remove it (`bgslot clean {release}`), or pass --replace to overwrite it"
            ),
        ));
    }
    // Match what production serves now (an HPA may have grown it past its values).
    let live = observed.slot(values.production);
    let replicas = match req.replicas {
        Some(n) => Some(u64::from(n)),
        None if values.autoscaling => None,
        None if live.deployment.is_some() && live.desired > 0 => Some(live.desired as u64),
        None => values.slot(values.production).replicas,
    };
    // `--tag` means "the next version of what production runs": keep production's repository,
    // even when it was set on the slot rather than in the shared `image.repository`.
    let live_repository = &values.slot(values.production).repository;
    let req = match &req.repository {
        None if !live_repository.is_empty() => DeployRequest {
            repository: Some(live_repository.clone()),
            ..req.clone()
        },
        _ => req.clone(),
    };
    let write = Write::upgrade(format!("bgslot deploy {idle} {}", req.tag));
    Ok(DeployPlan {
        slot: idle,
        replicas,
        write: image_sets(write, idle, &req, replicas),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapKind {
    Swap,
    Rollback,
}

impl SwapKind {
    pub fn verb(self) -> &'static str {
        match self {
            SwapKind::Swap => "swap",
            SwapKind::Rollback => "rollback",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapPlan {
    pub from: Slot,
    pub to: Slot,
    pub write: Write,
}

/// Flips production to the other slot, if and only if that slot can take production traffic now.
pub fn plan_swap(
    release: &str,
    values: &ReleaseValues,
    observed: &Observed,
    history: &[Revision],
    expect_tag: Option<&str>,
    force: bool,
    kind: SwapKind,
) -> Result<SwapPlan, Refusal> {
    let from = values.production;
    let to = values.stage();
    let target = values.slot(to);
    let state = observed.slot(to);
    if !target.enabled || state.deployment.is_none() {
        return Err(match kind {
            SwapKind::Swap => Refusal::new(
                format!(
                    "nothing is staged: the {to} slot is empty, so there is nothing to swap to"
                ),
                format!("deploy a version first: `bgslot deploy {release} --tag TAG`"),
            ),
            SwapKind::Rollback => Refusal::new(
                format!(
                    "the previous slot {to} is gone (cleaned), so there is nothing to roll back to"
                ),
                rollback_hint(release, history, values),
            ),
        });
    }
    if let Some(want) = expect_tag {
        if target.tag != want {
            return Err(Refusal::new(
                format!("the {to} slot runs tag {} but --expect-tag is {want}", target.tag),
                format!("check what is staged with `bgslot status {release}`; deploy {want} with `bgslot deploy {release} --tag {want} --replace`"),
            ));
        }
    }
    let drifted = drift(release, values, observed);
    if !drifted.is_empty() && !force {
        return Err(Refusal::new(
            format!("the Services do not match the release values: {}", drifted.join("; ")),
            "someone changed them outside helm; inspect with `bgslot status`, then re-apply the values \
             with `helm upgrade --reuse-values` or pass --force to swap anyway"
                .to_string(),
        ));
    }
    if !state.fully_available() {
        return Err(Refusal::new(
            format!(
                "the {to} slot is not fully available ({}/{} ready, {} available, {} updated)",
                state.ready, state.desired, state.available, state.updated
            ),
            format!("wait for it (`bgslot status {release}`), or redeploy with `bgslot deploy {release} --tag TAG --replace`"),
        ));
    }
    let stage_ready = observed
        .stage_service
        .as_ref()
        .map(|s| s.ready_in(to))
        .unwrap_or(0);
    // A drifted stage Service may not select the target at all; a forced swap then relies on the
    // Deployment's availability alone and confirms endpoints after the flip.
    let forced_over_drift = force && !drifted.is_empty();
    if stage_ready == 0 && !forced_over_drift {
        return Err(Refusal::new(
            format!("the {to} slot has no ready endpoints behind its Service"),
            format!("check its pods and Service with `bgslot status {release}` and `kubectl get endpoints -n NAMESPACE`"),
        ));
    }
    let live = observed.slot(from);
    if state.available < live.ready {
        return Err(Refusal::new(
            format!(
                "the {to} slot has {} available pods but production ({from}) serves with {} now",
                state.available, live.ready
            ),
            format!(
                "scale it up: `bgslot deploy {release} --tag {} --replace --replicas {}`",
                target.tag, live.ready
            ),
        ));
    }
    let mut write = Write::upgrade(format!("bgslot {} {from}->{to}", kind.verb()))
        .set("productionSlot", SetValue::Str(to.as_str().into()));
    write.force_conflicts = forced_over_drift;
    Ok(SwapPlan { from, to, write })
}

fn rollback_hint(release: &str, history: &[Revision], values: &ReleaseValues) -> String {
    let swap = history
        .iter()
        .rev()
        .find(|r| r.description.starts_with("bgslot swap"));
    let before = swap.and_then(|s| history.iter().rev().find(|r| r.revision < s.revision));
    let helm = match before {
        Some(r) => format!(
            "`helm rollback {release} {}` restores revision {} at once (production moves before the old pods are ready)",
            r.revision, r.revision
        ),
        None => format!("`helm history {release}` then `helm rollback {release} REVISION` restores an older revision at once"),
    };
    format!(
        "the safe way back is `bgslot deploy {release} --tag OLD_TAG` then `bgslot swap {release}`; {helm}; production is {} running {}",
        values.production,
        values.slot(values.production).image()
    )
}

/// When production last changed slots, from the helm history.
pub fn last_swap(history: &[Revision]) -> Option<&Revision> {
    history.iter().rev().find(|r| {
        // `helm rollback` (and `bgslot recover`) may move production too: count it.
        ["bgslot swap", "bgslot rollback", "Rollback to"]
            .iter()
            .any(|p| r.description.starts_with(p))
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanPlan {
    pub slot: Slot,
    pub write: Write,
}

/// Disables the old slot once production has run alone for the drain delay.
#[allow(clippy::too_many_arguments)]
pub fn plan_clean(
    release: &str,
    values: &ReleaseValues,
    observed: &Observed,
    history: &[Revision],
    now: Timestamp,
    min_age: Duration,
    force: bool,
) -> Result<Option<CleanPlan>, Refusal> {
    let old = values.stage();
    if !values.slot(old).enabled {
        return Ok(None);
    }
    if !force {
        // Without a recorded swap, the latest revision is the conservative start of the delay.
        let since = last_swap(history)
            .or(history.last())
            .and_then(Revision::updated_at);
        if let Some(since) = since {
            let age = now.duration_since(since).unsigned_abs();
            if age < min_age {
                let left = min_age - age;
                return Err(Refusal::new(
                    format!(
                        "the last swap was {}s ago; the drain delay is {}s, so the {old} slot may still finish in-flight requests",
                        age.as_secs(),
                        min_age.as_secs()
                    ),
                    format!("run it again in {}s, shorten the delay with --min-age, or pass --force", left.as_secs().max(1)),
                ));
            }
        }
        let live = observed.slot(values.production);
        if !live.fully_available() {
            return Err(Refusal::new(
                format!(
                    "production ({}) is not fully available ({}/{} ready); the {old} slot may be the only healthy copy",
                    values.production, live.ready, live.desired
                ),
                format!("check `bgslot status {release}`; `bgslot rollback {release}` returns to {old}; --force cleans anyway"),
            ));
        }
    }
    let write = Write::upgrade(format!("bgslot clean {old}"))
        .set(format!("{old}.enabled"), SetValue::Literal("false".into()));
    Ok(Some(CleanPlan { slot: old, write }))
}

/// The command a person most likely wants next.
pub fn next_step(
    release: &str,
    values: &ReleaseValues,
    observed: &Observed,
    history: &[Revision],
) -> String {
    let stage = values.stage();
    let staged = values.slot(stage);
    if !staged.enabled {
        return format!("bgslot deploy {release} --tag NEW_TAG");
    }
    let last_was_swap = history
        .last()
        .map(|r| Some(r) == last_swap(history))
        .unwrap_or(false);
    if last_was_swap {
        return format!("bgslot clean {release}   (or: bgslot rollback {release})");
    }
    if observed.slot(stage).fully_available() {
        format!("bgslot swap {release} --expect-tag {}", staged.tag)
    } else {
        format!("bgslot status {release}   ({stage} is not ready yet; or: bgslot deploy {release} --tag TAG --replace)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ServiceState;
    use crate::values::SlotValues;
    use std::collections::BTreeMap;

    fn values(production: Slot, green_enabled: bool) -> ReleaseValues {
        let slot = |enabled, tag: &str| SlotValues {
            enabled,
            repository: "web".into(),
            tag: tag.into(),
            replicas: Some(3),
        };
        ReleaseValues {
            production,
            blue: slot(true, "v1"),
            green: slot(green_enabled, "v2"),
            autoscaling: false,
            ingress_host: None,
            ingress_stage_host: None,
            ingress_tls: false,
            service_port: 80,
        }
    }

    fn ready(n: i32) -> SlotState {
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

    fn service(name: &str, slot: Slot, n: usize) -> ServiceState {
        ServiceState {
            name: name.into(),
            selects: Some(slot),
            selector_slot: Some(slot.to_string()),
            ready_by_slot: BTreeMap::from([(slot.to_string(), n)]),
            ready: n,
            not_ready: 0,
        }
    }

    fn observed(blue: i32, green: i32) -> Observed {
        Observed {
            blue: ready(blue),
            green: if green > 0 {
                ready(green)
            } else {
                SlotState::default()
            },
            production_service: Some(service("web", Slot::Blue, blue as usize)),
            stage_service: Some(service("web-stage", Slot::Green, green.max(0) as usize)),
        }
    }

    fn rev(n: u64, status: &str, description: &str, updated: &str) -> Revision {
        Revision {
            revision: n,
            updated: updated.into(),
            status: status.into(),
            chart: "bgslot-0.1.0".into(),
            app_version: String::new(),
            description: description.into(),
        }
    }

    fn sets(write: &Write) -> Vec<String> {
        write
            .sets
            .iter()
            .map(|(k, v)| match v {
                SetValue::Str(s) | SetValue::Literal(s) => format!("{k}={s}"),
            })
            .collect()
    }

    fn req(tag: &str) -> DeployRequest {
        DeployRequest {
            repository: None,
            tag: tag.into(),
            replicas: None,
            replace: false,
        }
    }

    #[test]
    fn first_deploy_installs_with_blue_in_production() {
        let plan = plan_deploy("web", None, &Observed::default(), &req("v1")).unwrap();
        assert!(plan.write.install);
        assert_eq!(plan.slot, Slot::Blue);
        assert_eq!(
            sets(&plan.write),
            [
                "productionSlot=blue",
                "green.enabled=false",
                "blue.enabled=true",
                "blue.image.tag=v1"
            ]
        );
    }

    #[test]
    fn deploy_stages_the_idle_slot_sized_like_production() {
        let mut obs = observed(3, 0);
        obs.blue.desired = 5; // an HPA grew production
        let plan = plan_deploy("web", Some(&values(Slot::Blue, false)), &obs, &req("v2")).unwrap();
        assert!(!plan.write.install);
        assert_eq!(plan.slot, Slot::Green);
        assert_eq!(
            sets(&plan.write),
            [
                "green.enabled=true",
                "green.image.repository=web",
                "green.image.tag=v2",
                "green.replicaCount=5"
            ]
        );
        assert_eq!(plan.write.description, "bgslot deploy green v2");
        // --image overrides the repository production runs.
        let with_repo = DeployRequest {
            repository: Some("ghcr.io/acme/web".into()),
            ..req("v2")
        };
        let plan = plan_deploy("web", Some(&values(Slot::Blue, false)), &obs, &with_repo).unwrap();
        assert!(sets(&plan.write).contains(&"green.image.repository=ghcr.io/acme/web".to_string()));
    }

    #[test]
    fn deploy_refuses_to_overwrite_a_staged_version_unless_replace() {
        let v = values(Slot::Blue, true);
        let err = plan_deploy("web", Some(&v), &observed(3, 3), &req("v3")).unwrap_err();
        assert!(
            err.reason
                .contains("already runs a staged version (web:v2)"),
            "{err:?}"
        );
        let plan = plan_deploy(
            "web",
            Some(&v),
            &observed(3, 3),
            &DeployRequest {
                replace: true,
                ..req("v3")
            },
        )
        .unwrap();
        assert_eq!(plan.slot, Slot::Green);
    }

    #[test]
    fn swap_flips_only_production_slot() {
        let plan = plan_swap(
            "web",
            &values(Slot::Blue, true),
            &observed(3, 3),
            &[],
            Some("v2"),
            false,
            SwapKind::Swap,
        )
        .unwrap();
        assert_eq!((plan.from, plan.to), (Slot::Blue, Slot::Green));
        assert_eq!(sets(&plan.write), ["productionSlot=green"]);
        assert_eq!(plan.write.description, "bgslot swap blue->green");
    }

    #[test]
    fn swap_refusals() {
        let v = values(Slot::Blue, true);
        let refuse = |obs: &Observed, tag: Option<&str>, v: &ReleaseValues| {
            plan_swap("web", v, obs, &[], tag, false, SwapKind::Swap)
                .unwrap_err()
                .reason
        };
        assert!(
            refuse(&observed(3, 0), None, &values(Slot::Blue, false)).contains("nothing is staged")
        );
        assert!(refuse(&observed(3, 3), Some("v9"), &v).contains("--expect-tag is v9"));
        let mut partial = observed(3, 3);
        partial.green.available = 2;
        partial.green.ready = 2;
        assert!(refuse(&partial, None, &v).contains("not fully available (2/3 ready"));
        let mut no_endpoints = observed(3, 3);
        no_endpoints.stage_service = Some(service("web-stage", Slot::Green, 0));
        assert!(refuse(&no_endpoints, None, &v).contains("no ready endpoints"));
        let mut smaller = observed(5, 3);
        smaller.blue.ready = 5;
        assert!(refuse(&smaller, None, &v)
            .contains("has 3 available pods but production (blue) serves with 5"));
        let mut drifted = observed(3, 3);
        drifted.production_service = Some(service("web", Slot::Green, 3));
        assert!(refuse(&drifted, None, &v)
            .contains("Service web (production) selects green but the values say blue"));
        assert!(plan_swap("web", &v, &drifted, &[], None, true, SwapKind::Swap).is_ok());
    }

    #[test]
    fn rollback_when_previous_slot_is_gone_points_at_helm_rollback() {
        let history = [
            rev(1, "superseded", "Install complete", "x"),
            rev(2, "superseded", "bgslot deploy green v2", "x"),
            rev(3, "superseded", "bgslot swap blue->green", "x"),
            rev(4, "deployed", "bgslot clean blue", "x"),
        ];
        let mut v = values(Slot::Green, true);
        v.blue.enabled = false;
        let obs = Observed {
            blue: SlotState::default(),
            green: ready(3),
            production_service: Some(service("web", Slot::Green, 3)),
            stage_service: Some(service("web-stage", Slot::Blue, 0)),
        };
        let err =
            plan_swap("web", &v, &obs, &history, None, false, SwapKind::Rollback).unwrap_err();
        assert!(err.reason.contains("previous slot blue is gone"), "{err:?}");
        assert!(err.hint.contains("helm rollback web 2"), "{}", err.hint);
    }

    #[test]
    fn clean_waits_for_the_drain_delay_and_a_healthy_production() {
        let v = values(Slot::Green, true);
        let obs = Observed {
            production_service: Some(service("web", Slot::Green, 3)),
            stage_service: Some(service("web-stage", Slot::Blue, 3)),
            ..observed(3, 3)
        };
        let history = [rev(
            3,
            "deployed",
            "bgslot swap blue->green",
            "2026-01-01T00:00:00Z",
        )];
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let min = Duration::from_secs(30);
        let err = plan_clean(
            "web",
            &v,
            &obs,
            &history,
            at("2026-01-01T00:00:10Z"),
            min,
            false,
        )
        .unwrap_err();
        assert!(err.reason.contains("last swap was 10s ago"), "{err:?}");
        assert!(err.hint.contains("20s"), "{}", err.hint);
        let plan = plan_clean(
            "web",
            &v,
            &obs,
            &history,
            at("2026-01-01T00:00:31Z"),
            min,
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(sets(&plan.write), ["blue.enabled=false"]);
        assert!(plan_clean(
            "web",
            &v,
            &obs,
            &history,
            at("2026-01-01T00:00:10Z"),
            min,
            true
        )
        .unwrap()
        .is_some());
        let mut sick = obs.clone();
        sick.green.available = 1;
        sick.green.ready = 1;
        let err = plan_clean(
            "web",
            &v,
            &sick,
            &history,
            at("2026-01-01T00:01:00Z"),
            min,
            false,
        )
        .unwrap_err();
        assert!(err.reason.contains("only healthy copy"), "{err:?}");
        assert_eq!(
            plan_clean(
                "web",
                &values(Slot::Green, true).clone_with_stage_disabled(),
                &obs,
                &history,
                at("2026-01-01T00:01:00Z"),
                min,
                false
            )
            .unwrap(),
            None
        );
    }

    #[test]
    fn pending_and_failed_releases_are_refused_with_a_recovery() {
        let history = [
            rev(1, "superseded", "", "t"),
            rev(2, "deployed", "", "t"),
            rev(3, "pending-upgrade", "", "t"),
        ];
        let err = check_helm_state("web", &history).unwrap_err();
        assert!(err.reason.contains("pending-upgrade"), "{err:?}");
        assert!(
            err.hint.contains("bgslot recover web") && err.hint.contains("revision 2"),
            "{}",
            err.hint
        );
        let history = [rev(1, "failed", "Install failed", "t")];
        let err = check_helm_state("web", &history).unwrap_err();
        assert!(err.hint.contains("helm uninstall web"), "{}", err.hint);
        assert!(check_helm_state("web", &[rev(1, "deployed", "", "t")]).is_ok());
    }

    #[test]
    fn recover_returns_to_the_last_good_revision_once_helm_is_surely_gone() {
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let history = [
            rev(1, "superseded", "", "2026-01-01T00:00:00Z"),
            rev(2, "deployed", "", "2026-01-01T00:01:00Z"),
            rev(3, "pending-upgrade", "", "2026-01-01T00:02:00Z"),
        ];
        let min = Duration::from_secs(60);
        let err =
            plan_recover("web", &history, at("2026-01-01T00:02:10Z"), min, false).unwrap_err();
        assert!(
            err.reason.contains("only 10s ago") && err.hint.contains("--force"),
            "{err:?}"
        );
        let plan = plan_recover("web", &history, at("2026-01-01T00:02:10Z"), min, true)
            .unwrap()
            .unwrap();
        assert_eq!((plan.from.revision, plan.to.revision), (3, 2));
        let plan = plan_recover("web", &history, at("2026-01-01T00:05:00Z"), min, false)
            .unwrap()
            .unwrap();
        assert_eq!(plan.to.revision, 2);
        // A failed revision has no helm behind it: no waiting.
        let failed = [
            rev(1, "deployed", "", "2026-01-01T00:00:00Z"),
            rev(2, "failed", "", "2026-01-01T00:02:00Z"),
        ];
        assert!(
            plan_recover("web", &failed, at("2026-01-01T00:02:01Z"), min, false)
                .unwrap()
                .is_some()
        );
        assert_eq!(
            plan_recover("web", &history[..2], at("2026-01-01T00:05:00Z"), min, false).unwrap(),
            None
        );
        let never = [rev(1, "failed", "", "2026-01-01T00:00:00Z")];
        let err = plan_recover("web", &never, at("2026-01-01T00:05:00Z"), min, false).unwrap_err();
        assert!(err.hint.contains("helm uninstall web"), "{err:?}");
    }

    #[test]
    fn next_steps() {
        assert_eq!(
            next_step("web", &values(Slot::Blue, false), &observed(3, 0), &[]),
            "bgslot deploy web --tag NEW_TAG"
        );
        assert_eq!(
            next_step("web", &values(Slot::Blue, true), &observed(3, 3), &[]),
            "bgslot swap web --expect-tag v2"
        );
        let history = [rev(3, "deployed", "bgslot swap blue->green", "t")];
        assert!(
            next_step("web", &values(Slot::Green, true), &observed(3, 3), &history)
                .starts_with("bgslot clean web")
        );
    }

    impl ReleaseValues {
        fn clone_with_stage_disabled(&self) -> ReleaseValues {
            let mut v = self.clone();
            match v.stage() {
                Slot::Blue => v.blue.enabled = false,
                Slot::Green => v.green.enabled = false,
            }
            v
        }
    }
}
