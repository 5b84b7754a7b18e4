//! What a deploy decides, as a pure function of what it observed and what it was asked: install
//! or stage, which slot, at what size, with which values (the slot's block replaced, not
//! patched), or a refusal.

use std::path::PathBuf;

use crate::cluster::MigrationPhase;
use crate::error::Refusal;
use crate::helm::{SetValue, Write};
use crate::names::{ImageRef, SetArg, Tag};
use crate::observe::Observation;
use crate::record::Recorded;
use crate::rules;
use crate::values::{merge_into, removed_keys, set_path};
use crate::vocab::Slot;

/// What a deploy is asked to put where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRequest {
    pub version: Version,
    pub replicas: Option<u32>,
    /// Stage small, on this many pods (`--preview-replicas`).
    pub preview_replicas: Option<u32>,
    pub replace: bool,
    pub force: bool,
    pub values_files: Vec<PathBuf>,
    pub user_sets: Vec<SetArg>,
    /// The slot's own values (`--slot-values`), in order.
    pub slot_values: Vec<serde_json::Value>,
    /// The slot's own `--slot-set`s, keys relative to the slot.
    pub slot_sets: Vec<SetArg>,
}

/// `--tag` (the next version of what production runs) or `--image` (exactly this image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    Tag(Tag),
    Image(ImageRef),
}

/// What a deploy will do.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployPlan {
    pub slot: Slot,
    pub install: bool,
    /// The image the slot will run (its repository is unknown before an install by tag).
    pub image: Option<ImageRef>,
    pub tag: String,
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

/// Installs a new release (production = blue) or stages the version in the idle slot, refusing
/// what is unsafe: a helm operation left pending or failed, Services that drifted from the
/// values, a staged version that would be overwritten without `--replace`.
///
/// The slot's block is replaced, not patched: what the slot's previous occupant set and this
/// deploy does not (its env, config, command...) is removed, so the new version gets the shared
/// values plus what this deploy says.
pub fn decide(
    release: &str,
    seen: Option<&Observation>,
    req: &DeployRequest,
) -> Result<DeployPlan, Refusal> {
    let tag = match &req.version {
        Version::Tag(tag) => tag.to_string(),
        Version::Image(image) => image
            .tag
            .as_ref()
            .map(|t| t.to_string())
            .or_else(|| image.digest.as_ref().map(|d| d.to_string()))
            .unwrap_or_default(),
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
            slot: Slot::Blue,
            version: tag.clone(),
        });
        write.install = true;
        write = write
            .set("productionSlot", SetValue::Str("blue".into()))
            .set("green.enabled", SetValue::Literal("false".into()));
        let (write, own) = slot_sets(write, Slot::Blue, &req.version, replicas, false);
        return Ok(DeployPlan {
            slot: Slot::Blue,
            install: true,
            image,
            tag,
            replicas,
            preview: None,
            write: with_slot_values(write, req, Slot::Blue, &own, &serde_json::Value::Null),
            scale_to: None,
            rerun_migration: None,
        });
    };
    let values = &seen.values;
    rules::check_gitops(release, &seen.cluster, req.force)?;
    rules::check_helm_state(release, &seen.history)?;
    rules::check_drift(release, values, &seen.cluster, req.force)?;
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
    // Match what production is meant to serve now (an HPA may have grown it past its values).
    // With autoscaling, helm must not own `replicas` (the HPA does): bgslot scales the new
    // Deployment itself once helm has made it.
    let live = seen.cluster.slot(values.production);
    let serving = (live.deployment.is_some() && live.desired > 0).then_some(live.desired as u64);
    let wanted = req.replicas.map(u64::from);
    let preview = req.preview_replicas.map(u64::from);
    // A preview runs exactly its pods: the chart renders no HPA for it until swap promotes it.
    let (replicas, scale_to) = if preview.is_some() {
        (preview, None)
    } else if values.autoscaling {
        (None, wanted.or(serving))
    } else {
        (
            wanted
                .or(serving)
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
        slot: idle,
        version: tag.clone(),
    });
    write.reset_then_reuse = true;
    // An explicit --force takes back, with Helm 4, every field a hand edit owns in what the slot
    // write applies (a worker's image, too), not only the Service drift named above.
    write.force_conflicts = req.force;
    let (write, own) = slot_sets(write, idle, &Version::Image(image.clone()), replicas, preview.is_some());
    let previous = seen
        .user_values
        .get(idle.as_str())
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let rerun_migration = seen
        .cluster
        .migration(idle)
        .filter(|m| req.replace && m.phase == MigrationPhase::Failed)
        .map(|m| m.job.clone());
    Ok(DeployPlan {
        slot: idle,
        install: false,
        image: Some(image),
        tag,
        replicas,
        preview,
        write: with_slot_values(write, req, idle, &own, &previous),
        scale_to,
        rerun_migration,
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
            let tag = image.tag.as_ref().map(|t| t.to_string()).unwrap_or_default();
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
    write.user_sets.extend(req.slot_sets.iter().map(|set| SetArg {
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
    use serde_json::json;

    fn req(tag: &str) -> DeployRequest {
        DeployRequest {
            version: Version::Tag(tag.parse().unwrap()),
            replicas: None,
            preview_replicas: None,
            replace: false,
            force: false,
            values_files: Vec::new(),
            user_sets: Vec::new(),
            slot_values: Vec::new(),
            slot_sets: Vec::new(),
        }
    }

    fn seen(production: Slot, green: bool, obs: Observed) -> Observation {
        let history = vec![rev(1, "deployed", "bgslot install blue v1", "t")];
        observation(values(production, green), obs, history)
    }

    #[test]
    fn first_deploy_installs_with_blue_in_production() {
        let plan = decide("web", None, &req("v1")).unwrap();
        assert!(plan.install);
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
        assert_eq!(plan.write.generated, None);
    }

    #[test]
    fn deploy_stages_the_idle_slot_sized_like_production() {
        let mut obs = observed(3, 0);
        obs.slots.blue.desired = 5; // an HPA grew production
        let plan = decide("web", Some(&seen(Slot::Blue, false, obs.clone())), &req("v2")).unwrap();
        assert!(!plan.install);
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
        assert_eq!(plan.write.description(), "bgslot deploy green v2");
        // --image overrides the repository production runs, and may pin a digest.
        let digest = format!("sha256:{}", "c".repeat(64));
        let pinned = DeployRequest {
            version: Version::Image(format!("ghcr.io/acme/web@{digest}").parse().unwrap()),
            ..req("unused")
        };
        let plan = decide("web", Some(&seen(Slot::Blue, false, obs)), &pinned).unwrap();
        assert_eq!(
            sets(&plan.write)[1..4],
            [
                "green.image.repository=ghcr.io/acme/web".to_string(),
                "green.image.tag=".into(),
                format!("green.image.digest={digest}")
            ]
        );
        assert_eq!(plan.write.description(), format!("bgslot deploy green {digest}"));
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
            slot_values: vec![json!({"env": {"KEEP": "2", "NEW": "3"}, "config": {"files": {"app.yaml": "a: 1"}}})],
            slot_sets: vec!["secretEnv.DB_PASSWORD=hunter2".parse().unwrap()],
            ..req("v2")
        };
        let plan = decide("web", Some(&s), &with_values).unwrap();
        assert!(plan.write.reset_then_reuse, "only a reset lets helm forget the old keys");
        assert_eq!(
            plan.write.generated,
            Some(json!({"green": {
                "image": {"digest": null},
                "env": {"OLD": null, "KEEP": "2", "NEW": "3"},
                "command": null,
                "config": {"files": {"app.yaml": "a: 1"}},
            }}))
        );
        assert_eq!(
            plan.write.user_sets,
            ["green.secretEnv.DB_PASSWORD=hunter2".parse::<SetArg>().unwrap()]
        );
    }

    #[test]
    fn an_autoscaled_slot_is_scaled_to_what_production_runs_not_by_helm() {
        let mut v = values(Slot::Blue, false);
        v.autoscaling = true;
        let mut obs = observed(3, 0);
        obs.slots.blue.desired = 7;
        let s = observation(v, obs, vec![rev(1, "deployed", "", "t")]);
        let plan = decide("web", Some(&s), &req("v2")).unwrap();
        assert_eq!((plan.replicas, plan.scale_to), (None, Some(7)));
        assert!(!sets(&plan.write).iter().any(|s| s.contains("replicaCount")));
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
            decide("web", Some(&s), &replace).unwrap().rerun_migration.as_deref(),
            Some("web-green-migrate-abc")
        );
    }

    #[test]
    fn deploy_refuses_to_overwrite_a_staged_version_unless_replace() {
        let s = seen(Slot::Blue, true, observed(3, 3));
        let err = decide("web", Some(&s), &req("v3")).unwrap_err();
        assert!(
            err.reason.contains("already runs a staged version (web:v2)"),
            "{err:?}"
        );
        let replace = DeployRequest {
            replace: true,
            ..req("v3")
        };
        let plan = decide("web", Some(&s), &replace).unwrap();
        assert_eq!((plan.slot, plan.rerun_migration), (Slot::Green, None));
    }

    #[test]
    fn deploy_refuses_drift_unless_forced_and_then_takes_the_fields_back() {
        let mut obs = observed(3, 0);
        obs.production_service = Some(service("web", Slot::Green, 3));
        let s = seen(Slot::Blue, false, obs);
        let err = decide("web", Some(&s), &req("v2")).unwrap_err();
        assert!(err.reason.contains("do not match the release values"), "{err:?}");
        let forced = DeployRequest {
            force: true,
            ..req("v2")
        };
        let plan = decide("web", Some(&s), &forced).unwrap();
        assert!(plan.write.force_conflicts);
    }

    #[test]
    fn deploy_refuses_a_release_helm_left_pending() {
        let mut s = seen(Slot::Blue, false, observed(3, 0));
        s.history.push(rev(2, "pending-upgrade", "", "t"));
        let err = decide("web", Some(&s), &req("v2")).unwrap_err();
        assert!(err.reason.contains("pending-upgrade"), "{err:?}");
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
        let plan = decide("web", Some(&s), &small).unwrap();
        assert_eq!((plan.replicas, plan.scale_to, plan.preview), (Some(1), None, Some(1)));
        assert_eq!(sets(&plan.write)[3..], ["green.replicaCount=1", "green.preview=true"]);
        let err = decide("web", None, &small).unwrap_err();
        assert!(err.reason.contains("no production to stage a preview beside"), "{err:?}");
    }
}
