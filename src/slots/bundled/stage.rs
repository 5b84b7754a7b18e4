//! How a slot of bgslot's chart is staged: one helm write of the release that installs it (blue as
//! production) or enables the idle slot with the new version, its block replaced (not patched),
//! sized to what production serves (by helm, or through the scale subresource when an HPA owns
//! replicas); a failed migration Job that `--replace` reruns is deleted first.

use anyhow::{Context, Result};

use super::Bundled;
use crate::cluster::labels::slot_pods_selector;
use crate::cluster::MigrationPhase;
use crate::cluster::PodSlots;
use crate::context::Ctx;
use crate::error::Refusal;
use crate::helm::{SetValue, Write};
use crate::names::{ImageRef, SetArg};
use crate::observe::{History, Observation};
use crate::planned::{self, PlannedStep};
use crate::record::Recorded;
use crate::slots::stage::{Basis, DeployRequest, Staged, Staging, Version};
use crate::slots::Seen;
use crate::values::{merge_into, removed_keys, set_path};
use crate::vocab::Slot;
use crate::wait::SlotRollout;

/// What a deploy of bgslot's chart writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The image the slot will run (its repository is unknown before an install by tag).
    pub image: Option<ImageRef>,
    pub replicas: Option<u64>,
    /// Staged small, on this many pods: `swap` promotes it to production's capacity first.
    pub preview: Option<u64>,
    pub write: Write,
    /// With autoscaling, the replicas the new slot is scaled to after helm creates it (through
    /// the scale subresource: helm does not own `replicas` then, the HPA does).
    pub scale_to: Option<u64>,
    /// A failed migration Job of the slot that `--replace` deletes, so the write runs it again.
    pub rerun_migration: Option<String>,
}

/// Installs a new release (production = blue) or stages the version in the idle slot.
///
/// The slot's block is replaced, not patched: what the slot's previous occupant set and this
/// deploy does not (its env, config, command...) is removed, so the new version gets the shared
/// values plus what this deploy says.
pub fn decide(seen: Option<&Observation>, basis: &Basis) -> Result<Staging<Plan>, Refusal> {
    let (release, req, slot) = (basis.release, basis.request, basis.slot);
    let tag = req.version.recorded();
    let staging = |plan: Plan| Staging {
        release: release.clone(),
        slot,
        install: basis.install,
        version: tag.clone(),
        image: plan.image.as_ref().map(ImageRef::to_string),
        preview: plan.preview,
        rollout: SlotRollout::of_chart(release, slot),
        pods: PodSlots::Labelled(slot_pods_selector(release)),
        migration: true,
        plan,
    };
    let Some(seen) = seen else {
        if req.preview_replicas.is_some() {
            return Err(Refusal::new(
                format!("{release} has no production to stage a preview beside: this deploy would install it"),
                format!("install it first (`bgslot deploy {release} --tag TAG`), then stage the next version with --preview-replicas"),
            ));
        }
        let replicas = req.replicas.map(u64::from);
        let image = match &req.version {
            Version::Image(image) => Some(image.clone()),
            Version::Tag(_) => None,
        };
        let mut write = Write::upgrade(Recorded::Install {
            slot,
            version: tag.clone(),
        });
        write.install = true;
        write = write
            .set("productionSlot", SetValue::Str(slot.as_str().into()))
            .set(
                format!("{}.enabled", slot.other()),
                SetValue::Literal("false".into()),
            );
        let (write, own) = slot_sets(write, slot, &req.version, replicas, false);
        return Ok(staging(Plan {
            image,
            replicas,
            preview: None,
            write: with_slot_values(write, req, slot, &own, &serde_json::Value::Null),
            scale_to: None,
            rerun_migration: None,
        }));
    };
    let values = &seen.values;
    // Match what production is meant to serve now (an HPA may have grown it past its values).
    // With autoscaling, helm must not own `replicas` (the HPA does): bgslot scales the new
    // Deployment itself once helm has made it.
    let wanted = req.replicas.map(u64::from);
    let preview = req.preview_replicas.map(u64::from);
    // A preview runs exactly its pods: the chart renders no HPA for it until swap promotes it.
    let (replicas, scale_to) = if preview.is_some() {
        (preview, None)
    } else if values.autoscaling {
        (None, wanted.or(basis.serving))
    } else {
        (
            wanted
                .or(basis.serving)
                .or(values.slot(values.production).replicas),
            None,
        )
    };
    // `--tag` means "the next version of what production runs": keep production's repository,
    // even when it was set on the slot rather than in the shared `image.repository`.
    let image = match &req.version {
        Version::Image(image) => image.clone(),
        Version::Tag(tag) => ImageRef {
            repository: values.slot(values.production).repository.clone(),
            tag: Some(tag.clone()),
            digest: None,
        },
    };
    // Replacing the slot's block needs helm to drop keys from the stored values, which only
    // --reset-then-reuse-values does (--reuse-values keeps the old computed values underneath).
    let mut write = Write::upgrade(Recorded::Deploy {
        slot,
        version: tag.clone(),
    });
    write.reset_then_reuse = true;
    // An explicit --force takes back, with Helm 4, every field a hand edit owns in what the slot
    // write applies (a worker's image, too), not only the Service drift.
    write.force_conflicts = req.force;
    let (write, own) = slot_sets(
        write,
        slot,
        &Version::Image(image.clone()),
        replicas,
        preview.is_some(),
    );
    let previous = seen
        .user_values
        .get(slot.as_str())
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let rerun_migration = seen
        .cluster
        .migration(slot)
        .filter(|m| req.replace && m.phase == MigrationPhase::Failed)
        .map(|m| m.job.clone());
    Ok(staging(Plan {
        image: Some(image),
        replicas,
        preview,
        write: with_slot_values(write, req, slot, &own, &previous),
        scale_to,
        rerun_migration,
    }))
}

/// The dry run of a deploy of bgslot's chart: the failed migration it reruns, then its write.
pub fn preview(
    ctx: &Ctx,
    seen: Option<&Seen<Bundled>>,
    staging: &Staging<Plan>,
) -> Result<Vec<PlannedStep>> {
    let plan = &staging.plan;
    let release = &staging.release;
    let mut steps = Vec::new();
    if let Some(job) = &plan.rerun_migration {
        steps.push(PlannedStep::action(format!(
            "delete the failed migration Job {job} so the write runs it again"
        )));
    }
    let files = planned::read_values_files(&plan.write.values_files)?;
    let empty = serde_json::Value::Object(Default::default());
    let all_values = seen.map(|s| &s.release.all_values).unwrap_or(&empty);
    let slot = staging.slot;
    let role = if staging.install {
        "production"
    } else {
        "stage"
    };
    let action = if staging.install {
        format!(
            "install {release} with {} in {slot} as production",
            staging.version
        )
    } else {
        format!("stage {} in {slot}", staging.version)
    };
    let scale = plan
        .scale_to
        .map(|n| format!("scale the {slot} Deployment to {n} replicas (what production runs; the HPA owns replicas)"));
    steps.push(
        PlannedStep::action(action)
            .write(
                ctx.helm
                    .command_line(release, &ctx.chart.shown(), &plan.write),
                planned::changes(&plan.write, all_values, &files, ctx.chart.defaults.as_ref()),
            )
            .then(scale.into_iter().chain([
                format!("wait for the {slot} migration Job, if the chart runs one"),
                format!(
                    "wait until the {slot} Deployment is fully available (timeout {}s)",
                    ctx.timeout().as_secs()
                ),
                format!("wait until the {role} Service lists every {slot} pod as a ready endpoint"),
            ])),
    );
    Ok(steps)
}

/// Writes the plan through helm (after deleting a failed migration it reruns), and sizes an
/// autoscaled slot. Returns the release's values after the write.
pub async fn stage(
    ctx: &Ctx,
    seen: Option<&Seen<Bundled>>,
    staging: &Staging<Plan>,
) -> Result<Staged> {
    let plan = &staging.plan;
    let slot = staging.slot;
    let release = &staging.release;
    ctx.events.step(&format!(
        "{} {release}: {slot} <- {}",
        if staging.install {
            "installing"
        } else {
            "deploying"
        },
        staging.image.as_deref().unwrap_or(&staging.version)
    ));
    if let Some(job) = &plan.rerun_migration {
        ctx.events.step(&format!(
            "{slot}: deleting the failed migration Job {job} so it runs again"
        ));
        ctx.delete_job(job).await?;
    }
    ctx.write(release, &plan.write).await.with_context(|| {
        format!(
            "deploying {} to the {slot} slot of {release} in namespace {}",
            staging.version, ctx.namespace
        )
    })?;
    if let Some(replicas) = plan.scale_to {
        // An autoscaled slot is sized as an HPA would size it: helm does not own its `replicas`.
        let Some(name) = ctx.cluster.slot(release, slot).await?.deployment else {
            anyhow::bail!("the {slot} Deployment of {release} was not created by helm");
        };
        ctx.events.step(&format!(
            "{slot}: scaling {name} to {replicas} replicas (what production runs)"
        ));
        ctx.scale(&name, replicas).await?;
    }
    // The values after the write follow from the plan, unless helm merged in values of the
    // user's own (or there was nothing before): only then read them back.
    let (revision, values) = match (seen, &plan.image) {
        (Some(s), Some(image))
            if plan.write.values_files.is_empty() && plan.write.user_sets.is_empty() =>
        {
            (
                s.latest().revision + 1,
                s.release
                    .values
                    .clone()
                    .with_staged(slot, image, plan.preview.is_some()),
            )
        }
        _ => {
            let after = Observation::existing(ctx, &staging.release, History::Latest).await?;
            (after.latest().revision, after.values)
        }
    };
    Ok(Staged {
        revision,
        values,
        slot_release: None,
        chart: None,
        accepted: Vec::new(),
        port: None,
        followers: crate::cluster::Followers::Labelled,
        hooks: None,
    })
}

/// The keys a deploy sets for `slot`, as `--set`s (they come last, so a pass-through `--set`
/// cannot undo them), and the same keys as a values tree.
fn slot_sets(
    write: Write,
    slot: Slot,
    version: &Version,
    replicas: Option<u64>,
    preview: bool,
) -> (Write, serde_json::Value) {
    use serde_json::json;
    let mut own = json!({"enabled": true});
    let mut write = write.set(format!("{slot}.enabled"), SetValue::Literal("true".into()));
    match version {
        Version::Tag(tag) => {
            write = write.set(format!("{slot}.image.tag"), SetValue::Str(tag.to_string()));
            own["image"] = json!({"tag": tag.to_string()});
        }
        Version::Image(image) => {
            own["image"] = json!({});
            if !image.repository.is_empty() {
                write = write.set(
                    format!("{slot}.image.repository"),
                    SetValue::Str(image.repository.clone()),
                );
                own["image"]["repository"] = json!(image.repository);
            }
            let tag = image
                .tag
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_default();
            write = write.set(format!("{slot}.image.tag"), SetValue::Str(tag.clone()));
            own["image"]["tag"] = json!(tag);
            if let Some(digest) = &image.digest {
                write = write.set(
                    format!("{slot}.image.digest"),
                    SetValue::Str(digest.to_string()),
                );
                own["image"]["digest"] = json!(digest.to_string());
            }
        }
    }
    if let Some(n) = replicas {
        write = write.set(
            format!("{slot}.replicaCount"),
            SetValue::Literal(n.to_string()),
        );
        own["replicaCount"] = json!(n);
    }
    if preview {
        write = write.set(format!("{slot}.preview"), SetValue::Literal("true".into()));
        own["preview"] = json!(true);
    }
    (write, own)
}

/// The user's pass-through values, and the slot's new block: `--slot-values` files, `--slot-set`s
/// (as `--set SLOT.KEY=VALUE`), and `null` for every key the slot's previous block set that the
/// new one does not.
fn with_slot_values(
    mut write: Write,
    req: &DeployRequest,
    slot: Slot,
    own: &serde_json::Value,
    previous: &serde_json::Value,
) -> Write {
    write.values_files = req.values_files.clone();
    write.user_sets = req.user_sets.clone();
    write
        .user_sets
        .extend(req.slot_sets.iter().map(|set| SetArg {
            key: format!("{slot}.{}", set.key),
            value: set.value.clone(),
        }));
    let mut block = serde_json::Value::Object(Default::default());
    for values in &req.slot_values {
        merge_into(&mut block, values);
    }
    let mut present = block.clone();
    merge_into(&mut present, own);
    for set in &req.slot_sets {
        set_path(&mut present, &set.key);
    }
    if let Some(mut removed) = removed_keys(previous, &present) {
        merge_into(&mut removed, &block);
        block = removed;
    }
    if block.as_object().is_some_and(|b| !b.is_empty()) {
        write.generated = Some(serde_json::json!({ slot.as_str(): block }));
    }
    write
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{MigrationState, Observed};
    use crate::fixtures::*;
    use crate::names::ReleaseName;
    use serde_json::json;

    fn req(tag: &str) -> DeployRequest {
        DeployRequest::of(tag)
    }

    fn seen(production: Slot, green: bool, obs: Observed) -> Observation {
        let history = vec![rev(1, "deployed", "bgslot install blue v1", "t")];
        observation(values(production, green), obs, history)
    }

    /// Plans `req` over `seen` as the shared rules leave it: the idle slot, sized to production.
    fn plan(seen: Option<&Observation>, req: &DeployRequest) -> Result<Staging<Plan>, Refusal> {
        let release: ReleaseName = "web".parse().unwrap();
        let serving = seen
            .map(|s| s.cluster.slot(s.values.production).desired)
            .filter(|d| *d > 0)
            .map(|d| d as u64);
        let basis = Basis {
            release: &release,
            namespace: "shop",
            slot: seen.map(|s| s.values.stage()).unwrap_or(Slot::Blue),
            install: seen.is_none(),
            serving,
            request: req,
        };
        decide(seen, &basis)
    }

    #[test]
    fn first_deploy_installs_with_blue_in_production() {
        let staged = plan(None, &req("v1")).unwrap();
        assert!(staged.install);
        assert_eq!(staged.slot, Slot::Blue);
        assert_eq!(
            sets(&staged.plan.write),
            [
                "productionSlot=blue",
                "green.enabled=false",
                "blue.enabled=true",
                "blue.image.tag=v1"
            ]
        );
        assert_eq!(staged.plan.write.generated, None);
        assert_eq!(staged.rollout, SlotRollout::of_chart("web", Slot::Blue));
    }

    #[test]
    fn deploy_stages_the_idle_slot_sized_like_production() {
        let mut obs = observed(3, 0);
        obs.slots.blue.desired = 5; // an HPA grew production
        let staged = plan(Some(&seen(Slot::Blue, false, obs.clone())), &req("v2")).unwrap();
        assert!(!staged.install);
        assert_eq!(staged.slot, Slot::Green);
        assert_eq!(
            sets(&staged.plan.write),
            [
                "green.enabled=true",
                "green.image.repository=web",
                "green.image.tag=v2",
                "green.replicaCount=5"
            ]
        );
        assert_eq!(staged.plan.write.description(), "bgslot deploy green v2");
        assert_eq!(staged.image.as_deref(), Some("web:v2"));
        // --image overrides the repository production runs, and may pin a digest.
        let digest = format!("sha256:{}", "c".repeat(64));
        let pinned = DeployRequest {
            version: Version::Image(format!("ghcr.io/acme/web@{digest}").parse().unwrap()),
            ..req("unused")
        };
        let staged = plan(Some(&seen(Slot::Blue, false, obs)), &pinned).unwrap();
        assert_eq!(
            sets(&staged.plan.write)[1..4],
            [
                "green.image.repository=ghcr.io/acme/web".to_string(),
                "green.image.tag=".into(),
                format!("green.image.digest={digest}")
            ]
        );
        assert_eq!(
            staged.plan.write.description(),
            format!("bgslot deploy green {digest}")
        );
        assert_eq!(staged.version, digest);
    }

    #[test]
    fn a_new_version_never_inherits_the_slot_s_previous_block() {
        let mut s = seen(Slot::Blue, false, observed(3, 0));
        s.user_values = json!({
            "productionSlot": "blue",
            "green": {"enabled": false, "image": {"tag": "v1", "digest": "sha256:old"},
                      "env": {"OLD": "x", "KEEP": "1"}, "command": ["old"], "replicaCount": 3},
        });
        let with_values = DeployRequest {
            slot_values: vec![
                json!({"env": {"KEEP": "2", "NEW": "3"}, "config": {"files": {"app.yaml": "a: 1"}}}),
            ],
            slot_sets: vec!["secretEnv.DB_PASSWORD=hunter2".parse().unwrap()],
            ..req("v2")
        };
        let write = plan(Some(&s), &with_values).unwrap().plan.write;
        assert!(
            write.reset_then_reuse,
            "only a reset lets helm forget the old keys"
        );
        assert_eq!(
            write.generated,
            Some(json!({"green": {
                "image": {"digest": null},
                "env": {"OLD": null, "KEEP": "2", "NEW": "3"},
                "command": null,
                "config": {"files": {"app.yaml": "a: 1"}},
            }}))
        );
        assert_eq!(
            write.user_sets,
            ["green.secretEnv.DB_PASSWORD=hunter2"
                .parse::<SetArg>()
                .unwrap()]
        );
    }

    #[test]
    fn an_autoscaled_slot_is_scaled_to_what_production_runs_not_by_helm() {
        let mut v = values(Slot::Blue, false);
        v.autoscaling = true;
        let mut obs = observed(3, 0);
        obs.slots.blue.desired = 7;
        let s = observation(v, obs, vec![rev(1, "deployed", "", "t")]);
        let staged = plan(Some(&s), &req("v2")).unwrap().plan;
        assert_eq!((staged.replicas, staged.scale_to), (None, Some(7)));
        assert!(!sets(&staged.write)
            .iter()
            .any(|s| s.contains("replicaCount")));
    }

    #[test]
    fn replace_reruns_a_failed_migration() {
        let mut obs = observed(3, 3);
        obs.migrations.insert(
            Slot::Green,
            MigrationState {
                job: "web-green-migrate-abc".into(),
                phase: MigrationPhase::Failed,
                reason: Some("BackoffLimitExceeded".into()),
            },
        );
        let s = seen(Slot::Blue, true, obs);
        let replace = DeployRequest {
            replace: true,
            ..req("v2")
        };
        assert_eq!(
            plan(Some(&s), &replace)
                .unwrap()
                .plan
                .rerun_migration
                .as_deref(),
            Some("web-green-migrate-abc")
        );
        assert_eq!(
            plan(Some(&s), &req("v2")).unwrap().plan.rerun_migration,
            None
        );
    }

    #[test]
    fn a_forced_deploy_takes_back_every_field_a_hand_edit_owns() {
        let forced = DeployRequest {
            force: true,
            ..req("v2")
        };
        let s = seen(Slot::Blue, false, observed(3, 0));
        assert!(plan(Some(&s), &forced).unwrap().plan.write.force_conflicts);
        assert!(
            !plan(Some(&s), &req("v2"))
                .unwrap()
                .plan
                .write
                .force_conflicts
        );
    }

    #[test]
    fn a_preview_is_staged_small_without_an_hpa_and_never_installs() {
        let mut v = values(Slot::Blue, false);
        v.autoscaling = true;
        let s = observation(v, observed(5, 0), vec![rev(1, "deployed", "", "t")]);
        let small = DeployRequest {
            preview_replicas: Some(1),
            ..req("v2")
        };
        let staged = plan(Some(&s), &small).unwrap();
        assert_eq!(staged.preview, Some(1));
        let p = staged.plan;
        assert_eq!(
            (p.replicas, p.scale_to, p.preview),
            (Some(1), None, Some(1))
        );
        assert_eq!(
            sets(&p.write)[3..],
            ["green.replicaCount=1", "green.preview=true"]
        );
        let err = plan(None, &small).unwrap_err();
        assert!(
            err.reason
                .contains("no production to stage a preview beside"),
            "{err:?}"
        );
    }
}
