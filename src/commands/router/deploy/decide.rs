//! What a router deploy decides, as a pure function of what it observed and rendered: the slot
//! release's write (with production's values under this deploy's and the tag), the router's
//! record of it, or a refusal.

use super::super::AppArgs;
use crate::commands::deploy::args::ImageArgs;
use crate::context::Ctx;
use crate::error::Refusal;
use crate::helm::{ReleaseRecord, SetValue, SlotWrite, Write};
use crate::record::Recorded;
use crate::router::observe::RouterSeen;
use crate::router::preflight::{Analysis, Wanted};
use crate::router::values::{record_values, AppSettings, RecordedState, SlotRecord};
use crate::router::{slot_release, MAX_RELEASE_LEN};
use crate::rules;
use crate::vocab::{PerSlot, Slot};
use anyhow::Result;
use serde_json::Value;

/// What a deploy is asked, in router terms.
pub struct Request {
    pub app: AppSettings,
    pub wanted: Wanted,
    /// The version as the history records it: the tag, else the digest.
    pub version: String,
    pub replicas: Option<u32>,
    pub replace: bool,
    pub force: bool,
    pub values_files: Vec<std::path::PathBuf>,
    pub user_sets: Vec<crate::names::SetArg>,
}

impl Request {
    pub fn new(image: &ImageArgs, force: bool, recorded: Option<&AppSettings>) -> Request {
        let app = image.app.settings(recorded);
        let wanted = match (&image.image, &image.tag) {
            (Some(i), _) => Wanted {
                repository: Some(i.repository.clone()),
                tag: i.tag.as_ref().map(ToString::to_string),
                digest: i.digest.as_ref().map(ToString::to_string),
            },
            (None, Some(tag)) => Wanted {
                repository: None,
                tag: Some(tag.to_string()),
                digest: None,
            },
            (None, None) => unreachable!("clap requires --tag or --image"),
        };
        Request {
            version: wanted
                .tag
                .clone()
                .or_else(|| wanted.digest.clone())
                .unwrap_or_default(),
            app,
            wanted,
            replicas: image.replicas,
            replace: image.replace,
            force,
            values_files: image.values_files.clone(),
            user_sets: image.set.clone(),
        }
    }
}

/// What the deploy found before it renders anything.
pub struct Known<'a> {
    pub release: &'a str,
    pub namespace: &'a str,
    pub router: Option<&'a RouterSeen>,
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
pub(super) fn bgslot_wrote(record: &ReleaseRecord, slot: Slot) -> bool {
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

/// Decides where and how to write, or refuses, before anything is rendered.
pub fn decide(k: &Known, req: &Request) -> Result<SlotPlan, Refusal> {
    let release = k.release;
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
                    k.namespace
                ),
            ));
        }
        if existing.info.status != "deployed" || !may_replace {
            let remove = match k.router {
                Some(_) => format!("`bgslot recover {release}` removes it"),
                None => format!("no router {release} exists to recover it: `helm uninstall {} -n {}` removes it", name(slot), k.namespace),
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
    let (slot, install, base, replicas, leftover) = match k.router {
        None => {
            let leftover = leftover_or_refuse(Slot::Blue, true)?;
            leftover_or_refuse(Slot::Green, false)?;
            (
                Slot::Blue,
                true,
                None,
                req.replicas.map(u64::from),
                leftover,
            )
        }
        Some(rs) => {
            rules::check_gitops(release, &rs.seen.cluster, req.force)?;
            rules::check_helm_state(release, &rs.seen.history)?;
            let (services, _) = rs.drift();
            if !services.is_empty() && !req.force {
                return Err(Refusal::new(
                    format!("the router's Services do not match its record: {}", services.join("; ")),
                    "someone changed them outside helm; inspect with `bgslot status`, or pass --force to let this deploy's router write put them back as recorded",
                ));
            }
            let production = rs.production();
            let idle = production.other();
            let staged = rs.record(idle);
            if staged.is_deployed() && !req.replace {
                return Err(Refusal::new(
                    format!(
                        "the idle slot {idle} already runs a staged version ({}, release {}); deploying would replace it",
                        staged.image, staged.release
                    ),
                    format!(
                        "swap to it (`bgslot swap {release}`), remove it (`bgslot clean {release}`), or pass --replace to overwrite it"
                    ),
                ));
            }
            let leftover = if staged.is_deployed() {
                match rs.live(idle).helm.as_ref() {
                    Some(h) if h.status.starts_with("pending-") => {
                        return Err(Refusal::new(
                            format!("release {} is in state {} (revision {}): a helm command on it has not finished, or was killed", name(idle), h.status, h.revision),
                            format!("`bgslot recover {release}` returns it to its last deployed revision"),
                        ))
                    }
                    _ => None,
                }
            } else {
                leftover_or_refuse(idle, true)?
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
            let serving = rs.live(production).totals(rs.record(production)).desired;
            let replicas = req
                .replicas
                .map(u64::from)
                .or((serving > 0).then_some(serving as u64));
            (idle, false, Some(base.user_values()), replicas, leftover)
        }
    };
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
    let record = if install {
        Recorded::Install {
            slot,
            version: req.version.clone(),
        }
    } else {
        Recorded::Deploy {
            slot,
            version: req.version.clone(),
        }
    };
    Ok(SlotPlan {
        slot,
        install,
        write: SlotWrite {
            chart: app.chart.clone(),
            version: Some(app.version.clone()).filter(|v| !v.is_empty()),
            base,
            values_files: req.values_files.clone(),
            user_sets: req.user_sets.clone(),
            sets,
            record,
            timeout: k.timeout,
        },
        replicas,
        leftover,
    })
}

/// The router write that records `record` in `slot` (and, on install, creates the router with
/// production on blue).
pub(super) fn router_write(
    rs: Option<&RouterSeen>,
    plan: &SlotPlan,
    record: &SlotRecord,
    app: &AppSettings,
    args: &AppArgs,
    ctx: &Ctx,
    force: bool,
) -> Write {
    let recorded = plan.write.record.clone();
    let mut write = Write::upgrade(recorded);
    let previous = rs
        .and_then(|rs| {
            rs.seen
                .user_values
                .pointer(&format!("/router/slots/{}", plan.slot))
                .cloned()
        })
        .unwrap_or(Value::Null);
    write.generated = Some(record_values(plan.slot, record, app, &previous));
    write.values_files = args.router_values.clone();
    write.user_sets = args.router_set.clone();
    match rs {
        None => {
            write.install = true;
            write = write.set("productionSlot", SetValue::Str(plan.slot.as_str().into()));
        }
        Some(rs) => {
            write.reset_then_reuse = ctx.chart.differs_from(&rs.seen.latest().chart);
            write.force_conflicts = force && !rs.drift().0.is_empty();
        }
    }
    write
}

/// The record of the new slot, from what the preflight found and (once written) the release.
pub(super) fn slot_record(
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
        app_version: meta.map(|m| m.app_version.clone()).unwrap_or_default(),
        tag: version.to_string(),
        image: a.image.clone(),
        container: a.container.clone(),
        service: a.service.clone(),
        selector: a.selector.clone(),
        ports: a.ports.clone(),
        accepted: a.accepted.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helm::json::StatusInfo;
    use crate::router::live::tests::{live, routed, router};
    use crate::vocab::Role;
    use std::collections::BTreeMap;

    fn image_args(args: &[&str]) -> ImageArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            image: ImageArgs,
        }
        let mut argv = vec!["x"];
        argv.extend(args);
        <Cli as clap::Parser>::parse_from(argv).image
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

    fn seen(green: bool) -> RouterSeen {
        let r = router(green);
        let obs = crate::fixtures::observation(
            crate::fixtures::values(Slot::Blue, green),
            crate::fixtures::observed(3, 0),
            vec![crate::fixtures::rev(
                1,
                "deployed",
                "bgslot install blue v1",
                "t",
            )],
        );
        RouterSeen {
            services: vec![
                routed("web", Role::Production, Slot::Blue, &r, 3),
                routed(
                    "web-stage",
                    Role::Stage,
                    Slot::Green,
                    &r,
                    if green { 3 } else { 0 },
                ),
            ],
            slots: PerSlot {
                blue: live(Slot::Blue, "v1", 3),
                green: live(Slot::Green, "v2", 3),
            },
            seen: obs,
            router: r,
        }
    }

    fn known<'a>(
        rs: Option<&'a RouterSeen>,
        releases: &'a PerSlot<Option<ReleaseRecord>>,
    ) -> Known<'a> {
        Known {
            release: "web",
            namespace: "shop",
            router: rs,
            releases,
            timeout: std::time::Duration::from_secs(300),
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

    fn sets(plan: &SlotPlan) -> Vec<String> {
        plan.write
            .sets
            .iter()
            .map(|(k, v)| format!("{k}={}", v.flag().1))
            .collect()
    }

    #[test]
    fn a_deploy_stages_the_tag_over_productions_values_sized_as_production() {
        let rs = seen(false);
        let releases = production();
        let req = Request::new(&image_args(&["--tag", "v2"]), false, Some(&rs.router.app));
        let plan = decide(&known(Some(&rs), &releases), &req).unwrap();
        assert_eq!(
            (plan.slot, plan.install, plan.replicas),
            (Slot::Green, false, Some(3))
        );
        assert_eq!(
            plan.write.base,
            Some(serde_json::json!({"image": {"tag": "v1"}, "env": "prod"}))
        );
        assert_eq!(sets(&plan), ["image.tag=v2", "replicaCount=3"]);
        assert_eq!(plan.write.description(), "bgslot deploy green v2");
        let mut app = rs.router.app.clone();
        app.digest_key = "image.digest".into();
        app.repository_key = "image.repository".into();
        app.replicas_key = String::new();
        let digest = format!("sha256:{}", "c".repeat(64));
        let by_image = Request::new(
            &image_args(&[
                "--image",
                &format!("ghcr.io/acme/web@{digest}"),
                "--replicas",
                "2",
            ]),
            false,
            Some(&app),
        );
        let plan = decide(&known(Some(&rs), &releases), &by_image).unwrap();
        assert_eq!(
            sets(&plan),
            [
                "image.repository=ghcr.io/acme/web".to_string(),
                format!("image.digest={digest}")
            ]
        );
        assert_eq!(plan.replicas, Some(2));
        assert_eq!(
            plan.write.description(),
            format!("bgslot deploy green {digest}")
        );
        // A tag clears a digest production pinned, when bgslot knows where it is.
        let cleared = Request::new(&image_args(&["--tag", "v3"]), false, Some(&app));
        assert!(
            sets(&decide(&known(Some(&rs), &releases), &cleared).unwrap())
                .contains(&"image.digest=".to_string())
        );
    }

    #[test]
    fn the_first_deploy_installs_blue_and_refuses_a_release_it_did_not_make() {
        let req = Request::new(
            &image_args(&["--tag", "v1", "--app-chart", "./myapp"]),
            false,
            None,
        );
        let none = PerSlot::default();
        let plan = decide(&known(None, &none), &req).unwrap();
        assert_eq!(
            (plan.slot, plan.install, plan.write.base.clone()),
            (Slot::Blue, true, None)
        );
        assert_eq!(
            (plan.write.chart.as_str(), plan.write.description()),
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
        let err = decide(&known(None, &foreign), &req).unwrap_err();
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
        assert!(decide(&known(None, &own), &req).unwrap().leftover.is_some());
        let pending = PerSlot {
            blue: Some(helm_release(
                "web-blue",
                "pending-install",
                "bgslot install blue v1",
                Value::Null,
            )),
            green: None,
        };
        assert!(decide(&known(None, &pending), &req)
            .unwrap_err()
            .hint
            .contains("helm uninstall web-blue -n shop"));
        // A name too long for its slot releases.
        let long = "a".repeat(48);
        let k = Known {
            release: &long,
            ..known(None, &none)
        };
        assert!(decide(&k, &req)
            .unwrap_err()
            .reason
            .contains("is 48 characters long"));
    }

    #[test]
    fn a_staged_version_is_replaced_only_when_asked_and_drift_only_when_forced() {
        let rs = seen(true);
        let mut releases = production();
        releases.green = Some(helm_release(
            "web-green",
            "deployed",
            "bgslot deploy green v2",
            Value::Null,
        ));
        let req = Request::new(&image_args(&["--tag", "v3"]), false, Some(&rs.router.app));
        let err = decide(&known(Some(&rs), &releases), &req).unwrap_err();
        assert!(
            err.reason.contains(
                "the idle slot green already runs a staged version (nginx:v2, release web-green)"
            ),
            "{err:?}"
        );
        let replace = Request::new(
            &image_args(&["--tag", "v3", "--replace"]),
            false,
            Some(&rs.router.app),
        );
        assert_eq!(
            decide(&known(Some(&rs), &releases), &replace).unwrap().slot,
            Slot::Green
        );
        let mut drifted = seen(false);
        drifted.services[0].selector = BTreeMap::from([("app".to_string(), "x".to_string())]);
        let err = decide(&known(Some(&drifted), &production()), &req).unwrap_err();
        assert!(err.reason.contains("do not match its record"), "{err:?}");
        let forced = Request::new(
            &image_args(&["--tag", "v3"]),
            true,
            Some(&drifted.router.app),
        );
        assert!(decide(&known(Some(&drifted), &production()), &forced).is_ok());
        // A release in the idle slot the router does not record, and bgslot did not write.
        let mut foreign = production();
        foreign.green = Some(helm_release(
            "web-green",
            "deployed",
            "Upgrade complete",
            Value::Null,
        ));
        let err = decide(&known(Some(&seen(false)), &foreign), &req).unwrap_err();
        assert!(
            err.reason.contains("but the router web does not record it"),
            "{err:?}"
        );
    }
}
