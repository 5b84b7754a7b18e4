//! What a router deploy decides, as a pure function of what it observed and rendered: the slot
//! release's write (production's values under this deploy's, then the tag), the router's record
//! of it and the router write that records it, or a refusal. The rules every deploy has (the
//! release's helm state, GitOps owners, drift, a staged version to replace) were applied before.

use serde_json::Value;

use crate::error::Refusal;
use crate::helm::{ReleaseRecord, SetValue, SlotWrite, Write};
use crate::record::Recorded;
use crate::slots::router::preflight::{Analysis, Wanted};
use crate::slots::router::values::{
    record_values, AppChanges, AppSettings, RecordedState, SlotRecord,
};
use crate::slots::router::{slot_release, Router, MAX_RELEASE_LEN};
use crate::slots::stage::{Basis, DeployRequest, Version};
use crate::slots::Seen;
use crate::vocab::{PerSlot, Slot};

/// What a deploy is asked, in router terms.
pub struct Request {
    pub app: AppSettings,
    pub wanted: Wanted,
    /// The version as the history records it: the tag, else the digest.
    pub version: String,
}

impl Request {
    /// `req` with the app settings its flags make of what the router recorded (or the defaults).
    pub fn new(req: &DeployRequest, recorded: Option<&AppSettings>) -> Request {
        let wanted = match &req.version {
            Version::Image(i) => Wanted {
                repository: Some(i.repository.clone()),
                tag: i.tag.as_ref().map(ToString::to_string),
                digest: i.digest.as_ref().map(ToString::to_string),
            },
            Version::Tag(tag) => Wanted {
                repository: None,
                tag: Some(tag.to_string()),
                digest: None,
            },
        };
        Request {
            version: req.version.recorded(),
            app: req.app.settings(recorded),
            wanted,
        }
    }
}

/// What the deploy found before it renders anything.
pub struct Known<'a> {
    pub basis: &'a Basis<'a>,
    pub router: Option<&'a Seen<Router>>,
    /// Each slot release as helm has it, when it exists.
    pub releases: &'a PerSlot<Option<ReleaseRecord>>,
    pub timeout: std::time::Duration,
}

/// What a deploy will write to the slot.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotPlan {
    pub slot: Slot,
    /// The router does not exist yet: install it after the slot.
    pub install: bool,
    pub write: SlotWrite,
    /// The replicas the slot is sized to (`--replicas`, else what production runs).
    pub replicas: Option<u64>,
    /// A release of the slot from a deploy that did not finish (never routed), replaced.
    pub leftover: Option<String>,
}

/// Whether `record` is a release bgslot wrote into `slot` (its description says so).
fn bgslot_wrote(record: &ReleaseRecord, slot: Slot) -> bool {
    matches!(
        record.info.description.parse::<Recorded>(),
        Ok(Recorded::Install { slot: s, .. } | Recorded::Deploy { slot: s, .. }) if s == slot
    )
}

/// A router's slot releases add `-green` to its name, and helm allows 53 characters.
pub fn check_name(release: &str) -> Result<(), Refusal> {
    if release.len() > MAX_RELEASE_LEN {
        return Err(Refusal::new(
            format!(
                "release name {release} is {} characters long: a router's slot releases add -green, and helm allows 53",
                release.len()
            ),
            format!("use a release name of at most {MAX_RELEASE_LEN} characters"),
        ));
    }
    Ok(())
}

/// Decides how to write the slot release, or refuses, before anything is rendered.
pub fn decide(k: &Known, req: &Request) -> Result<SlotPlan, Refusal> {
    let basis = k.basis;
    let release = &**basis.release;
    check_name(release)?;
    let name = |slot: Slot| slot_release(release, slot);
    let leftover_or_refuse = |slot: Slot, may_replace: bool| -> Result<Option<String>, Refusal> {
        let Some(existing) = k.releases[slot]
            .as_ref()
            .filter(|r| r.info.status != "uninstalled")
        else {
            return Ok(None);
        };
        if !bgslot_wrote(existing, slot) {
            return Err(Refusal::new(
                format!(
                    "release {} exists ({}, revision {}), but the router {release} does not record it",
                    name(slot),
                    existing.info.status,
                    existing.version
                ),
                format!(
                    "bgslot does not adopt a release it did not make: uninstall it (`helm uninstall {} -n {}`) or deploy under another release name",
                    name(slot),
                    basis.namespace
                ),
            ));
        }
        if existing.info.status != "deployed" || !may_replace {
            let remove = match k.router {
                Some(_) => format!("`bgslot recover {release}` removes it"),
                None => format!("no router {release} exists to recover it: `helm uninstall {} -n {}` removes it", name(slot), basis.namespace),
            };
            return Err(Refusal::new(
                format!(
                    "release {} is left from a deploy that did not finish ({}, revision {})",
                    name(slot),
                    existing.info.status,
                    existing.version
                ),
                format!("{remove}; then deploy again"),
            ));
        }
        Ok(Some(format!(
            "{} holds what a deploy that did not finish left ({}); nothing routes to it, so it is replaced",
            name(slot),
            existing.info.description
        )))
    };
    let slot = basis.slot;
    let (base, leftover) = match k.router {
        None => {
            let leftover = leftover_or_refuse(slot, true)?;
            leftover_or_refuse(slot.other(), false)?;
            (None, leftover)
        }
        Some(seen) => {
            let production = slot.other();
            let leftover = if seen.slot(slot).runs() {
                match seen.slot(slot).helm.as_ref() {
                    Some(h) if h.status.starts_with("pending-") => {
                        return Err(Refusal::new(
                            format!("release {} is in state {} (revision {}): a helm command on it has not finished, or was killed", name(slot), h.status, h.revision),
                            format!("`bgslot recover {release}` returns it to its last deployed revision"),
                        ))
                    }
                    _ => None,
                }
            } else {
                leftover_or_refuse(slot, true)?
            };
            let Some(base) = k.releases[production].as_ref() else {
                return Err(Refusal::new(
                    format!(
                        "production's release {} does not exist, though the router {release} routes to it",
                        name(production)
                    ),
                    format!("check `bgslot status {release}`; production's values are what a new version starts from"),
                ));
            };
            // Production's values carry forward, unless this deploy starts from the chart's.
            let base = (!basis.request.app.reset_values).then(|| base.user_values());
            (base, leftover)
        }
    };
    let replicas = basis.request.replicas.map(u64::from).or(basis.serving);
    let app = &req.app;
    let mut sets: Vec<(String, SetValue)> = Vec::new();
    if let Some(tag) = &req.wanted.tag {
        sets.push((app.tag_key.clone(), SetValue::Str(tag.clone())));
    }
    if let (Some(repository), false) = (&req.wanted.repository, app.repository_key.is_empty()) {
        sets.push((
            app.repository_key.clone(),
            SetValue::Str(repository.clone()),
        ));
    }
    if !app.digest_key.is_empty() {
        let digest = req.wanted.digest.clone().unwrap_or_default();
        sets.push((app.digest_key.clone(), SetValue::Str(digest)));
    }
    if let (Some(n), false) = (replicas, app.replicas_key.is_empty()) {
        sets.push((app.replicas_key.clone(), SetValue::Literal(n.to_string())));
    }
    let version = req.version.clone();
    let record = if basis.install {
        Recorded::Install { slot, version }
    } else {
        Recorded::Deploy { slot, version }
    };
    Ok(SlotPlan {
        slot,
        install: basis.install,
        write: SlotWrite {
            chart: app.chart.clone(),
            version: Some(app.version.clone()).filter(|v| !v.is_empty()),
            base,
            // Absolute, as a person reads them in `helm history` and a dry run, wherever bgslot ran.
            values_files: basis
                .request
                .values_files
                .iter()
                .map(|f| std::fs::canonicalize(f).unwrap_or_else(|_| f.clone()))
                .collect(),
            user_sets: basis.request.user_sets.clone(),
            sets,
            record,
            timeout: k.timeout,
            // Known once the render shows the workers and CronJobs (`stage::plan`).
            as_stage: None,
        },
        replicas,
        leftover,
    })
}

/// The router write that records `record` in `slot` (and, on install, creates the router with
/// production on it). `chart_differs`: the router's chart is another version than the one it
/// last rendered with.
pub fn router_write(
    router: Option<&Seen<Router>>,
    plan: &SlotPlan,
    record: &SlotRecord,
    app: &AppSettings,
    changes: &AppChanges,
    force: bool,
    chart_differs: bool,
) -> Write {
    let mut write = Write::upgrade(plan.write.record.clone());
    let previous = router
        .and_then(|seen| {
            seen.release
                .user_values
                .pointer(&format!("/router/slots/{}", plan.slot))
                .cloned()
        })
        .unwrap_or(Value::Null);
    write.generated = Some(record_values(plan.slot, record, app, &previous));
    write.values_files = changes.router_values.clone();
    write.user_sets = changes.router_set.clone();
    match router {
        None => {
            write.install = true;
            write = write.set("productionSlot", SetValue::Str(plan.slot.as_str().into()));
        }
        Some(seen) => {
            write.reset_then_reuse = chart_differs;
            write.force_conflicts = force && !seen.drift.is_empty();
        }
    }
    write
}

/// The record of the new slot, from what the preflight found and what helm wrote (or, before
/// the write, rendered).
pub fn slot_record(
    release: &str,
    plan: &SlotPlan,
    a: &Analysis,
    written: &ReleaseRecord,
    version: &str,
) -> SlotRecord {
    let meta = written.chart.as_ref().map(|c| &c.metadata);
    SlotRecord {
        release: slot_release(release, plan.slot),
        state: RecordedState::Deployed,
        revision: written.version,
        chart: written.chart_id().unwrap_or_default(),
        chart_version: meta.map(|m| m.version.clone()).unwrap_or_default(),
        app_version: meta.map(|m| m.app_version.clone()).unwrap_or_default(),
        tag: version.to_string(),
        image: a.image.clone(),
        container: a.container.clone(),
        service: a.service.clone(),
        selector: a.selector.clone(),
        ports: a.ports.clone(),
        routes: a.routes.clone(),
        workers: a.workers.clone(),
        cron_jobs: a.cron_jobs.clone(),
        accepted: a.accepted.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helm::json::StatusInfo;
    use crate::names::ReleaseName;
    use crate::slots::router::fixtures;

    fn request(version: &str, app: AppChanges) -> DeployRequest {
        DeployRequest {
            app,
            ..DeployRequest::of(version)
        }
    }

    fn helm_release(name: &str, status: &str, description: &str, values: Value) -> ReleaseRecord {
        ReleaseRecord {
            name: name.into(),
            version: 1,
            info: StatusInfo {
                status: status.into(),
                description: description.into(),
                last_deployed: String::new(),
            },
            config: Some(values),
            manifest: String::new(),
            hooks: Vec::new(),
            chart: None,
        }
    }

    fn production() -> PerSlot<Option<ReleaseRecord>> {
        PerSlot {
            blue: Some(helm_release(
                "web-blue",
                "deployed",
                "bgslot install blue v1",
                serde_json::json!({"image": {"tag": "v1"}, "env": "prod"}),
            )),
            green: None,
        }
    }

    fn plan(
        seen: Option<&Seen<Router>>,
        releases: &PerSlot<Option<ReleaseRecord>>,
        req: &DeployRequest,
        release: &str,
    ) -> Result<SlotPlan, Refusal> {
        let release: ReleaseName = release.parse().unwrap();
        let basis = Basis {
            release: &release,
            namespace: "shop",
            slot: if seen.is_some() {
                Slot::Green
            } else {
                Slot::Blue
            },
            install: seen.is_none(),
            serving: seen.map(|_| 3),
            request: req,
        };
        let known = Known {
            basis: &basis,
            router: seen,
            releases,
            timeout: std::time::Duration::from_secs(300),
        };
        decide(&known, &Request::new(req, seen.map(|s| &s.kind.values.app)))
    }

    fn sets(plan: &SlotPlan) -> Vec<String> {
        plan.write
            .sets
            .iter()
            .map(|(k, v)| format!("{k}={}", v.flag().1))
            .collect()
    }

    #[test]
    fn a_deploy_stages_the_tag_over_productions_values_sized_as_production() {
        let seen = fixtures::seen(Slot::Blue, false, &["bgslot install blue v1"]);
        let releases = production();
        let staged = plan(
            Some(&seen),
            &releases,
            &request("v2", AppChanges::default()),
            "web",
        )
        .unwrap();
        assert_eq!(
            (staged.slot, staged.install, staged.replicas),
            (Slot::Green, false, Some(3))
        );
        assert_eq!(
            staged.write.base,
            Some(serde_json::json!({"image": {"tag": "v1"}, "env": "prod"}))
        );
        assert_eq!(sets(&staged), ["image.tag=v2", "replicaCount=3"]);
        assert_eq!(staged.write.description(), "bgslot deploy green v2");
        let keys = AppChanges {
            digest_key: Some("image.digest".into()),
            repository_key: Some("image.repository".into()),
            replicas_key: Some(String::new()),
            ..AppChanges::default()
        };
        let digest = format!("sha256:{}", "c".repeat(64));
        let mut by_image = request(&format!("ghcr.io/acme/web@{digest}"), keys.clone());
        by_image.replicas = Some(2);
        let staged = plan(Some(&seen), &releases, &by_image, "web").unwrap();
        assert_eq!(
            sets(&staged),
            [
                "image.repository=ghcr.io/acme/web".to_string(),
                format!("image.digest={digest}")
            ]
        );
        assert_eq!(staged.replicas, Some(2));
        assert_eq!(
            staged.write.description(),
            format!("bgslot deploy green {digest}")
        );
        // A tag clears a digest production pinned, when bgslot knows where it is.
        let cleared = plan(Some(&seen), &releases, &request("v3", keys), "web").unwrap();
        assert!(sets(&cleared).contains(&"image.digest=".to_string()));
        // --reset-values: the chart's defaults and this deploy's values alone.
        let fresh = AppChanges {
            reset_values: true,
            ..AppChanges::default()
        };
        assert_eq!(
            plan(Some(&seen), &releases, &request("v3", fresh), "web")
                .unwrap()
                .write
                .base,
            None
        );
    }

    #[test]
    fn the_first_deploy_installs_blue_and_refuses_a_release_it_did_not_make() {
        let chart = AppChanges {
            chart: Some("./myapp".into()),
            ..AppChanges::default()
        };
        let req = request("v1", chart);
        let none = PerSlot::default();
        let staged = plan(None, &none, &req, "web").unwrap();
        assert_eq!(
            (staged.slot, staged.install, staged.write.base.clone()),
            (Slot::Blue, true, None)
        );
        assert_eq!(
            (staged.write.chart.as_str(), staged.write.description()),
            ("./myapp", "bgslot install blue v1".to_string())
        );
        let foreign = PerSlot {
            blue: Some(helm_release(
                "web-blue",
                "deployed",
                "Install complete",
                Value::Null,
            )),
            green: None,
        };
        let err = plan(None, &foreign, &req, "web").unwrap_err();
        assert!(err.reason.contains("release web-blue exists (deployed, revision 1), but the router web does not record it"), "{err:?}");
        assert!(
            err.hint.contains("helm uninstall web-blue -n shop"),
            "{}",
            err.hint
        );
        // What an unfinished first deploy left is replaced; a pending one is recovered first.
        let own = PerSlot {
            blue: Some(helm_release(
                "web-blue",
                "deployed",
                "bgslot install blue v1",
                Value::Null,
            )),
            green: None,
        };
        assert!(plan(None, &own, &req, "web").unwrap().leftover.is_some());
        let pending = PerSlot {
            blue: Some(helm_release(
                "web-blue",
                "pending-install",
                "bgslot install blue v1",
                Value::Null,
            )),
            green: None,
        };
        assert!(plan(None, &pending, &req, "web")
            .unwrap_err()
            .hint
            .contains("helm uninstall web-blue -n shop"));
        // A name too long for its slot releases.
        let long = "a".repeat(48);
        assert!(plan(None, &none, &req, &long)
            .unwrap_err()
            .reason
            .contains("is 48 characters long"));
    }

    #[test]
    fn a_release_in_the_idle_slot_bgslot_did_not_write_is_refused_and_a_pending_one_recovered_first(
    ) {
        let req = request("v3", AppChanges::default());
        let mut foreign = production();
        foreign.green = Some(helm_release(
            "web-green",
            "deployed",
            "Upgrade complete",
            Value::Null,
        ));
        let seen = fixtures::seen(Slot::Blue, false, &["bgslot install blue v1"]);
        let err = plan(Some(&seen), &foreign, &req, "web").unwrap_err();
        assert!(
            err.reason.contains("but the router web does not record it"),
            "{err:?}"
        );
        let mut pending = fixtures::seen(
            Slot::Blue,
            true,
            &["bgslot install blue v1", "bgslot deploy green v2"],
        );
        pending.kind.live.green.helm = Some(crate::slots::router::live::HelmRecord {
            revision: 2,
            status: "pending-upgrade".into(),
        });
        let pending = fixtures::again(pending);
        let err = plan(Some(&pending), &production(), &req, "web").unwrap_err();
        assert!(err.hint.contains("`bgslot recover web`"), "{err:?}");
        let mut gone = production();
        gone.blue = None;
        let err = plan(Some(&seen), &gone, &req, "web").unwrap_err();
        assert!(
            err.reason
                .contains("production's release web-blue does not exist"),
            "{err:?}"
        );
    }
}
