//! `bgslot deploy RELEASE --tag T`: puts a new version in the idle slot (or installs the release
//! with production = blue), then waits until that slot is fully available behind its Service.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::chart::ChartSource;
use crate::cli::{DryRun, GlobalArgs};
use crate::cluster::{MigrationPhase, Role};
use crate::commands::Outcome;
use crate::context::Ctx;
use crate::error::Refusal;
use crate::helm::{SetValue, Write};
use crate::names::{ImageRef, ReleaseName, SetArg, Tag};
use crate::observe::{History, Observation};
use crate::output::progress;
use crate::plan::{self, Plan, PlannedStep};
use crate::values::{merge_into, removed_keys, set_path, ReleaseValues, Slot};
use crate::wait;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Helm release name
    #[arg(value_name = "RELEASE")]
    pub release: ReleaseName,
    #[command(flatten)]
    pub image: ImageArgs,
    /// Deploy even when the Services' live selectors disagree with the release values (the
    /// write puts them back as the values say), or when a GitOps controller owns the release
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub dry_run: DryRun,
}

/// The new version and how to stage it; shared with `release`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImageArgs {
    /// Image tag for the new version (the repository stays as production runs it)
    #[arg(
        long,
        value_name = "TAG",
        required_unless_present = "image",
        conflicts_with = "image"
    )]
    pub tag: Option<Tag>,

    /// Full image reference for the new version: REPOSITORY:TAG, REPOSITORY@sha256:DIGEST or
    /// REPOSITORY:TAG@sha256:DIGEST
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<ImageRef>,

    /// Replicas for the new slot [default: what production runs now]
    #[arg(long, value_name = "N", value_parser = parse_replicas, allow_negative_numbers = true)]
    pub replicas: Option<u32>,

    /// Values file passed to helm
    #[arg(short = 'f', long = "values", value_name = "FILE", value_parser = readable_file)]
    pub values_files: Vec<PathBuf>,

    /// A value passed to helm
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<SetArg>,

    /// Values for the slot being deployed, whichever slot that is: a YAML file of the slot's own
    /// keys (env, extraEnv, envFrom, command, args, resources, podAnnotations, config, secretEnv)
    #[arg(long = "slot-values", value_name = "FILE", value_parser = parse_slot_values)]
    pub slot_values: Vec<SlotValuesFile>,

    /// A value for the slot being deployed, whichever slot that is: KEY=VALUE under the slot
    /// (e.g. env.LOG_LEVEL=debug)
    #[arg(long = "slot-set", value_name = "KEY=VALUE")]
    pub slot_set: Vec<SetArg>,

    /// Replace a version already staged in the idle slot (a failed migration Job runs again)
    #[arg(long)]
    pub replace: bool,

    /// Create the namespace if it does not exist (as `helm install --create-namespace` does)
    #[arg(long)]
    pub create_namespace: bool,
}

fn parse_replicas(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(0) => Err(
            "0 would stage a slot that can never take production traffic: give at least 1".into(),
        ),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "'{text}' is not a whole number of replicas (1 or more)"
        )),
    }
}

/// A `--slot-values` file, read and parsed on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotValuesFile {
    pub path: PathBuf,
    pub values: serde_json::Value,
}

fn parse_slot_values(text: &str) -> Result<SlotValuesFile, String> {
    let path = readable_file(text)?;
    let yaml = std::fs::read_to_string(&path).map_err(|e| format!("{text} cannot be read: {e}"))?;
    let values: Option<serde_json::Value> =
        serde_saphyr::from_str(&yaml).map_err(|e| format!("{text} is not YAML: {e}"))?;
    match values {
        Some(values @ serde_json::Value::Object(_)) => Ok(SlotValuesFile { path, values }),
        None => Ok(SlotValuesFile {
            path,
            values: serde_json::Value::Object(Default::default()),
        }),
        Some(_) => Err(format!(
            "{text} must hold a map of the slot's keys (env:, config:, ...)"
        )),
    }
}

fn readable_file(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    match std::fs::File::open(&path) {
        Ok(_) if path.is_file() => Ok(path),
        Ok(_) => Err(format!("{text} is not a file")),
        Err(err) => Err(format!("{text} cannot be read: {err}")),
    }
}

impl Args {
    pub async fn run(&self, global: &GlobalArgs) -> Result<()> {
        let ctx = Ctx::connect(global).await?;
        let outcome = execute(&ctx, &self.release, &self.image, self.force, self.dry_run)
            .await
            .with_context(|| ctx.operation("deploy", &self.release))?;
        crate::output::print(&outcome, global.output)
    }
}

/// What a deploy is asked to put where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRequest {
    pub version: Version,
    pub replicas: Option<u32>,
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

impl ImageArgs {
    pub fn request(&self, force: bool) -> DeployRequest {
        let version = match (&self.image, &self.tag) {
            (Some(image), _) => Version::Image(image.clone()),
            (None, Some(tag)) => Version::Tag(tag.clone()),
            (None, None) => unreachable!("clap requires --tag or --image"),
        };
        DeployRequest {
            version,
            replicas: self.replicas,
            replace: self.replace,
            force,
            values_files: self.values_files.clone(),
            user_sets: self.set.clone(),
            slot_values: self.slot_values.iter().map(|f| f.values.clone()).collect(),
            slot_sets: self.slot_set.clone(),
        }
    }

    /// The tag a swap of this version should expect, when it has one.
    pub fn tag(&self) -> Option<&Tag> {
        self.tag
            .as_ref()
            .or_else(|| self.image.as_ref().and_then(|i| i.tag.as_ref()))
    }
}

pub async fn execute(
    ctx: &Ctx,
    release: &ReleaseName,
    image: &ImageArgs,
    force: bool,
    dry_run: DryRun,
) -> Result<Outcome<DeployReport>> {
    let chart = ChartSource::resolve(ctx.global.chart.as_deref())?;
    // The lock Lease lives in the namespace, so a missing one is created before anything else.
    let creates_namespace = image.create_namespace
        && ctx.cluster().create_namespace_if_missing(dry_run.dry_run).await?;
    let lock = ctx.lock(release, "deploy", dry_run.dry_run).await?;
    let result = async {
        let seen = Observation::read(ctx, release, &chart, History::Latest).await?;
        let plan = decide(release, seen.as_ref(), &image.request(force))?;
        if dry_run.dry_run {
            return Ok(Outcome::Planned(preview(
                ctx,
                release,
                seen.as_ref(),
                &plan,
                &chart,
                creates_namespace,
            )?));
        }
        act(ctx, release, seen.as_ref(), plan, &chart)
            .await
            .map(Outcome::Done)
    }
    .await;
    lock.finish(result).await
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
        let replicas = req.replicas.map(u64::from);
        let image = match &req.version {
            Version::Image(image) => Some(image.clone()),
            Version::Tag(_) => None,
        };
        let mut write = Write::upgrade(format!("bgslot install blue {tag}"));
        write.install = true;
        write = write
            .set("productionSlot", SetValue::Str("blue".into()))
            .set("green.enabled", SetValue::Literal("false".into()));
        let (write, own) = slot_sets(write, Slot::Blue, &req.version, replicas);
        return Ok(DeployPlan {
            slot: Slot::Blue,
            install: true,
            image,
            tag,
            replicas,
            write: with_slot_values(write, req, Slot::Blue, &own, &serde_json::Value::Null),
            scale_to: None,
            rerun_migration: None,
        });
    };
    let values = &seen.values;
    plan::check_gitops(release, &seen.cluster, req.force)?;
    plan::check_helm_state(release, &seen.history)?;
    let drifted = plan::check_drift(release, values, &seen.cluster, req.force)?;
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
    let (replicas, scale_to) = if values.autoscaling {
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
    let mut write = Write::upgrade(format!("bgslot deploy {idle} {tag}"));
    write.reset_then_reuse = true;
    write.force_conflicts = req.force && !drifted.is_empty();
    let (write, own) = slot_sets(write, idle, &Version::Image(image.clone()), replicas);
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

/// The dry run's account of `plan`.
pub fn preview(
    ctx: &Ctx,
    release: &ReleaseName,
    seen: Option<&Observation>,
    plan: &DeployPlan,
    chart: &ChartSource,
    creates_namespace: bool,
) -> Result<Plan> {
    let mut out = match seen {
        Some(s) => Plan::of("deploy", &s.values, release, &ctx.namespace, s.latest().revision),
        None => Plan::new("deploy", release, &ctx.namespace),
    };
    if creates_namespace {
        out = out.step(PlannedStep {
            action: format!("create namespace {}", ctx.namespace),
            helm: Vec::new(),
            changes: Vec::new(),
            then: Vec::new(),
        });
    }
    if let Some(job) = &plan.rerun_migration {
        out = out.step(PlannedStep {
            action: format!("delete the failed migration Job {job} so the write runs it again"),
            helm: Vec::new(),
            changes: Vec::new(),
            then: Vec::new(),
        });
    }
    let files = read_values_files(&plan.write.values_files)?;
    let empty = serde_json::Value::Object(Default::default());
    let all_values = seen.map(|s| &s.all_values).unwrap_or(&empty);
    let slot = plan.slot;
    let role = if plan.install { "production" } else { "stage" };
    Ok(out.step(PlannedStep {
        action: if plan.install {
            format!("install {release} with {} in {slot} as production", plan.tag)
        } else {
            format!("stage {} in {slot}", plan.tag)
        },
        helm: ctx.helm.command_line(release, &chart.shown(), &plan.write),
        changes: plan::changes(&plan.write, all_values, &files, chart.defaults.as_ref()),
        then: plan
            .scale_to
            .map(|n| format!("scale the {slot} Deployment to {n} replicas (what production runs; the HPA owns replicas)"))
            .into_iter()
            .chain([
                format!("wait for the {slot} migration Job, if the chart runs one"),
                format!("wait until the {slot} Deployment is fully available (timeout {}s)", ctx.global.timeout.as_secs()),
                format!("wait until the {role} Service lists every {slot} pod as a ready endpoint"),
            ])
            .collect(),
    }))
}

fn read_values_files(files: &[PathBuf]) -> Result<Vec<(String, serde_json::Value)>> {
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading values file {}", path.display()))?;
            let values: Option<serde_json::Value> = serde_saphyr::from_str(&text)
                .with_context(|| format!("values file {} is not YAML", path.display()))?;
            Ok((
                path.display().to_string(),
                values.unwrap_or(serde_json::Value::Null),
            ))
        })
        .collect()
}

/// Writes the plan through helm, then waits until the slot is fully available and its Service
/// lists every pod as a ready endpoint.
pub async fn act(
    ctx: &Ctx,
    release: &ReleaseName,
    seen: Option<&Observation>,
    plan: DeployPlan,
    chart: &ChartSource,
) -> Result<DeployReport> {
    let slot = plan.slot;
    progress(&format!(
        "{} {release}: {slot} <- {}",
        if plan.install { "installing" } else { "deploying" },
        plan.image
            .as_ref()
            .map(ImageRef::to_string)
            .unwrap_or_else(|| plan.tag.clone())
    ));
    let cluster = ctx.cluster();
    if let Some(job) = &plan.rerun_migration {
        progress(&format!("{slot}: deleting the failed migration Job {job} so it runs again"));
        cluster.delete_job(job, ctx.global.timeout).await?;
    }
    ctx.helm
        .write(release, &chart.reference()?, &plan.write)
        .await
        .with_context(|| {
            format!(
                "deploying {} to the {slot} slot of {release} in namespace {}",
                plan.tag, ctx.namespace
            )
        })?;
    if let Some(replicas) = plan.scale_to {
        // An autoscaled slot is sized as an HPA would size it: helm does not own its `replicas`.
        let Some(name) = cluster.slot(release, slot).await?.deployment else {
            anyhow::bail!("the {slot} Deployment of {release} was not created by helm");
        };
        progress(&format!("{slot}: scaling {name} to {replicas} replicas (what production runs)"));
        cluster.scale_deployment(&name, replicas).await?;
    }
    let waiting_since = std::time::Instant::now();
    let mut waiting = crate::output::Waiting::on_stderr();
    let staged_note = |what: &str| {
        format!(
            "{what}; production is unchanged. The version stays staged in {slot}: replace it with \
             `bgslot deploy {release} --tag TAG --replace` or remove it with `bgslot clean {release} --force`"
        )
    };
    wait::migration_done(&cluster, release, slot, ctx.global.timeout, &mut waiting)
        .await
        .with_context(|| staged_note(&format!("the migration of the {slot} slot of {release} did not succeed")))?;
    let state = wait::slot_available(&cluster, release, slot, ctx.global.timeout, &mut waiting)
        .await
        .with_context(|| {
            if plan.install {
                format!("the {slot} slot of the new release {release} did not become ready")
            } else {
                staged_note(&format!("the {slot} slot of {release} did not become ready"))
            }
        })?;
    // Endpoints follow pod readiness with a delay (long after an API server restart): wait for
    // them too, so that a swap right after this deploy finds the slot behind its Service.
    let role = if plan.install {
        Role::Production
    } else {
        Role::Stage
    };
    let left = ctx
        .global
        .timeout
        .saturating_sub(waiting_since.elapsed())
        .max(Duration::from_secs(10));
    wait::endpoints_ready(&cluster, release, role, slot, state.desired.max(0) as usize, left)
        .await
        .with_context(|| {
            format!("the {slot} slot of {release} is ready but its Service does not route to it yet")
        })?;
    // The values after the write follow from the plan, unless helm merged in values of the
    // user's own (or there was nothing before): only then read them back.
    let after = match seen {
        Some(s) if plan.write.values_files.is_empty() && plan.write.user_sets.is_empty() => {
            let image = plan.image.as_ref().expect("a deploy over a release names its image");
            let mut observed = s.clone();
            observed.values = s.values.clone().with_staged(slot, image);
            observed.cluster = cluster.observe(release).await?;
            observed.history.push(crate::helm::Revision {
                revision: s.latest().revision + 1,
                updated: String::new(),
                status: "deployed".into(),
                chart: chart.id.clone().unwrap_or_else(|| s.latest().chart.clone()),
                app_version: String::new(),
                description: plan.write.description.clone(),
            });
            observed
        }
        _ => Observation::existing(ctx, release, chart, History::Latest).await?,
    };
    Ok(DeployReport::new(&after, plan.install, slot, &state))
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeployReport {
    /// `install` or `deploy`.
    pub operation: &'static str,
    pub release: String,
    pub namespace: String,
    pub revision: u64,
    pub production_slot: Slot,
    pub stage_slot: Slot,
    /// The slot the version went to.
    pub slot: Slot,
    pub role: Role,
    pub image: String,
    pub ready: i32,
    pub desired: i32,
    pub service: Option<String>,
    pub url: String,
    pub next: String,
}

impl DeployReport {
    fn new(after: &Observation, install: bool, slot: Slot, state: &crate::cluster::SlotState) -> DeployReport {
        let values: &ReleaseValues = &after.values;
        let role = if install { Role::Production } else { Role::Stage };
        let service = after.cluster.service(role).map(|s| s.name.clone());
        DeployReport {
            operation: if install { "install" } else { "deploy" },
            release: after.release.to_string(),
            namespace: after.namespace.clone(),
            revision: after.latest().revision,
            production_slot: values.production,
            stage_slot: values.stage(),
            slot,
            role,
            image: state
                .image
                .clone()
                .unwrap_or_else(|| values.slot(slot).image()),
            ready: state.ready,
            desired: state.desired,
            url: values.url(role, service.as_deref().unwrap_or("SERVICE"), &after.namespace),
            service,
            next: plan::next_step(&after.release, values, &after.cluster, after.latest()),
        }
    }
}

impl fmt::Display for DeployReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = self.role.as_str();
        writeln!(
            f,
            "{}: {} is ready ({}/{}) running {} as {role}",
            self.release, self.slot, self.ready, self.desired, self.image
        )?;
        writeln!(
            f,
            "  {role} service: {} -> {}",
            self.service.as_deref().unwrap_or("(missing)"),
            self.url
        )?;
        writeln!(f, "\nnext: {}", self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{MigrationState, Observed};
    use crate::plan::fixtures::*;
    use serde_json::json;

    fn req(tag: &str) -> DeployRequest {
        DeployRequest {
            version: Version::Tag(tag.parse().unwrap()),
            replicas: None,
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
        obs.blue.desired = 5; // an HPA grew production
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
        assert_eq!(plan.write.description, "bgslot deploy green v2");
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
        assert_eq!(plan.write.description, format!("bgslot deploy green {digest}"));
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
        obs.blue.desired = 7;
        let s = observation(v, obs, vec![rev(1, "deployed", "", "t")]);
        let plan = decide("web", Some(&s), &req("v2")).unwrap();
        assert_eq!((plan.replicas, plan.scale_to), (None, Some(7)));
        assert!(!sets(&plan.write).iter().any(|s| s.contains("replicaCount")));
    }

    #[test]
    fn replace_reruns_a_failed_migration() {
        let mut obs = observed(3, 3);
        obs.migrations.insert(
            "green".into(),
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
    fn replicas_are_never_zero() {
        assert!(parse_replicas("0").unwrap_err().contains("at least 1"));
        assert!(parse_replicas("-1").is_err());
        assert_eq!(parse_replicas("4"), Ok(4));
    }
}
