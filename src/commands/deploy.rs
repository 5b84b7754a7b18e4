//! `bgslot deploy RELEASE --tag T`: puts a new version in the idle slot (or installs the release
//! with production = blue), then waits until that slot is fully available behind its Service.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Namespace;
use serde::Serialize;

use crate::chart::ChartSource;
use crate::cli::{DryRun, GlobalArgs};
use crate::cluster::Role;
use crate::commands::Outcome;
use crate::context::Ctx;
use crate::error::Refusal;
use crate::helm::{SetValue, Write};
use crate::names::{ImageRef, ReleaseName, SetArg, Tag};
use crate::observe::{History, Observation};
use crate::output::progress;
use crate::plan::{self, Plan, PlannedStep};
use crate::values::{ReleaseValues, Slot};
use crate::wait;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Helm release name
    #[arg(value_name = "RELEASE")]
    pub release: ReleaseName,
    #[command(flatten)]
    pub image: ImageArgs,
    /// Deploy even when the Services' live selectors disagree with the release values (the
    /// write puts them back as the values say)
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

    /// Replace a version already staged in the idle slot
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
    let creates_namespace = ensure_namespace(ctx, image.create_namespace, dry_run.dry_run).await?;
    let lock = ctx.lock(release, "deploy", dry_run.dry_run).await?;
    let result = async {
        let seen = Observation::read(ctx, release, &chart, History::Latest).await?;
        let plan = decide(release, seen.as_ref(), &image.request(force), &chart)?;
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployPlan {
    pub slot: Slot,
    pub install: bool,
    /// The image the slot will run (its repository is unknown before an install by tag).
    pub image: Option<ImageRef>,
    pub tag: String,
    pub replicas: Option<u64>,
    pub write: Write,
}

/// Installs a new release (production = blue) or stages the version in the idle slot, refusing
/// what is unsafe: a helm operation left pending or failed, Services that drifted from the
/// values, a staged version that would be overwritten without `--replace`.
pub fn decide(
    release: &str,
    seen: Option<&Observation>,
    req: &DeployRequest,
    chart: &ChartSource,
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
        let write = slot_sets(write, Slot::Blue, &req.version, None, replicas);
        return Ok(DeployPlan {
            slot: Slot::Blue,
            install: true,
            image,
            tag,
            replicas,
            write: with_user_values(write, req),
        });
    };
    let values = &seen.values;
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
    let live = seen.cluster.slot(values.production);
    let replicas = match req.replicas {
        Some(n) => Some(u64::from(n)),
        None if values.autoscaling => None,
        None if live.deployment.is_some() && live.desired > 0 => Some(live.desired as u64),
        None => values.slot(values.production).replicas,
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
    let mut write = Write::upgrade(format!("bgslot deploy {idle} {tag}"));
    write.reset_then_reuse = chart.differs_from(&seen.latest().chart);
    write.force_conflicts = req.force && !drifted.is_empty();
    let had_digest = staged.digest.is_some();
    let write = slot_sets(
        write,
        idle,
        &Version::Image(image.clone()),
        Some(had_digest),
        replicas,
    );
    Ok(DeployPlan {
        slot: idle,
        install: false,
        image: Some(image),
        tag,
        replicas,
        write: with_user_values(write, req),
    })
}

/// The keys a deploy sets for `slot`. `had_digest` clears a digest the slot's previous occupant
/// was pinned to when the new version names none.
fn slot_sets(
    write: Write,
    slot: Slot,
    version: &Version,
    had_digest: Option<bool>,
    replicas: Option<u64>,
) -> Write {
    let mut write = write.set(format!("{slot}.enabled"), SetValue::Literal("true".into()));
    match version {
        Version::Tag(tag) => {
            write = write.set(format!("{slot}.image.tag"), SetValue::Str(tag.to_string()));
        }
        Version::Image(image) => {
            if !image.repository.is_empty() {
                write = write.set(
                    format!("{slot}.image.repository"),
                    SetValue::Str(image.repository.clone()),
                );
            }
            let tag = image.tag.as_ref().map(|t| t.to_string()).unwrap_or_default();
            write = write.set(format!("{slot}.image.tag"), SetValue::Str(tag));
            match &image.digest {
                Some(digest) => {
                    write = write.set(
                        format!("{slot}.image.digest"),
                        SetValue::Str(digest.to_string()),
                    )
                }
                None if had_digest == Some(true) => {
                    write = write.set(format!("{slot}.image.digest"), SetValue::Str(String::new()))
                }
                None => {}
            }
        }
    }
    if let Some(n) = replicas {
        write = write.set(
            format!("{slot}.replicaCount"),
            SetValue::Literal(n.to_string()),
        );
    }
    write
}

fn with_user_values(mut write: Write, req: &DeployRequest) -> Write {
    write.values_files = req.values_files.clone();
    write.user_sets = req.user_sets.clone();
    write
}

/// Creates the namespace when asked to and it is missing (in a dry run, only says it would).
/// Returns whether it was (or would be) created.
pub async fn ensure_namespace(ctx: &Ctx, create: bool, dry_run: bool) -> Result<bool> {
    if !create {
        return Ok(false);
    }
    let api: kube::Api<Namespace> = kube::Api::all(ctx.client.clone());
    let name = &ctx.namespace;
    if api
        .get_opt(name)
        .await
        .with_context(|| format!("reading namespace {name}"))?
        .is_some()
    {
        return Ok(false);
    }
    if dry_run {
        return Ok(true);
    }
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&kube::api::PostParams::default(), &ns).await {
        Ok(_) => {
            progress(&format!("created namespace {name}"));
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(err) => Err(err).with_context(|| format!("creating namespace {name}")),
    }
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
        changes: plan::changes(&plan.write, all_values, &files),
        then: vec![
            format!("wait until the {slot} Deployment is fully available (timeout {}s)", ctx.global.timeout.as_secs()),
            format!("wait until the {role} Service lists every {slot} pod as a ready endpoint"),
        ],
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
    ctx.helm
        .write(release, &chart.reference()?, &plan.write)
        .await
        .with_context(|| {
            format!(
                "deploying {} to the {slot} slot of {release} in namespace {}",
                plan.tag, ctx.namespace
            )
        })?;
    let cluster = ctx.cluster();
    let waiting_since = std::time::Instant::now();
    let mut report_line = |line: &str| progress(line);
    let state = wait::slot_available(&cluster, release, slot, ctx.global.timeout, &mut report_line)
        .await
        .with_context(|| {
            if plan.install {
                format!("the {slot} slot of the new release {release} did not become ready")
            } else {
                format!(
                    "the {slot} slot of {release} did not become ready; production is unchanged. The version stays \
                     staged in {slot}: replace it with `bgslot deploy {release} --tag TAG --replace` or remove it \
                     with `bgslot clean {release} --force`"
                )
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
    use crate::plan::fixtures::*;

    fn chart() -> ChartSource {
        ChartSource::resolve(None).unwrap()
    }

    fn req(tag: &str) -> DeployRequest {
        DeployRequest {
            version: Version::Tag(tag.parse().unwrap()),
            replicas: None,
            replace: false,
            force: false,
            values_files: Vec::new(),
            user_sets: Vec::new(),
        }
    }

    fn seen(production: Slot, green: bool, obs: crate::cluster::Observed) -> Observation {
        let mut history = vec![rev(1, "deployed", "bgslot install blue v1", "t")];
        history[0].chart = crate::chart::embedded_id();
        observation(values(production, green), obs, history)
    }

    #[test]
    fn first_deploy_installs_with_blue_in_production() {
        let plan = decide("web", None, &req("v1"), &chart()).unwrap();
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
    }

    #[test]
    fn deploy_stages_the_idle_slot_sized_like_production() {
        let mut obs = observed(3, 0);
        obs.blue.desired = 5; // an HPA grew production
        let plan = decide("web", Some(&seen(Slot::Blue, false, obs.clone())), &req("v2"), &chart()).unwrap();
        assert!(!plan.install && !plan.write.reset_then_reuse);
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
        let plan = decide("web", Some(&seen(Slot::Blue, false, obs)), &pinned, &chart()).unwrap();
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
    fn deploy_refuses_to_overwrite_a_staged_version_unless_replace() {
        let s = seen(Slot::Blue, true, observed(3, 3));
        let err = decide("web", Some(&s), &req("v3"), &chart()).unwrap_err();
        assert!(
            err.reason.contains("already runs a staged version (web:v2)"),
            "{err:?}"
        );
        let replace = DeployRequest {
            replace: true,
            ..req("v3")
        };
        assert_eq!(decide("web", Some(&s), &replace, &chart()).unwrap().slot, Slot::Green);
    }

    #[test]
    fn deploy_refuses_drift_unless_forced_and_then_takes_the_fields_back() {
        let mut obs = observed(3, 0);
        obs.production_service = Some(service("web", Slot::Green, 3));
        let s = seen(Slot::Blue, false, obs);
        let err = decide("web", Some(&s), &req("v2"), &chart()).unwrap_err();
        assert!(err.reason.contains("do not match the release values"), "{err:?}");
        let forced = DeployRequest {
            force: true,
            ..req("v2")
        };
        let plan = decide("web", Some(&s), &forced, &chart()).unwrap();
        assert!(plan.write.force_conflicts);
    }

    #[test]
    fn deploy_refuses_a_release_helm_left_pending() {
        let mut s = seen(Slot::Blue, false, observed(3, 0));
        s.history.push(rev(2, "pending-upgrade", "", "t"));
        let err = decide("web", Some(&s), &req("v2"), &chart()).unwrap_err();
        assert!(err.reason.contains("pending-upgrade"), "{err:?}");
    }

    #[test]
    fn a_new_chart_version_resets_then_reuses_values() {
        let mut s = seen(Slot::Blue, false, observed(3, 0));
        s.history[0].chart = "bgslot-0.0.1".into();
        let plan = decide("web", Some(&s), &req("v2"), &chart()).unwrap();
        assert!(plan.write.reset_then_reuse);
    }

    #[test]
    fn replicas_are_never_zero() {
        assert!(parse_replicas("0").unwrap_err().contains("at least 1"));
        assert!(parse_replicas("-1").is_err());
        assert_eq!(parse_replicas("4"), Ok(4));
    }
}
