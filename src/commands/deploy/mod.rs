//! `bgslot deploy RELEASE --tag T`: puts a new version in the idle slot (or installs the release
//! with production = blue), then waits until that slot is fully available behind its Service.
//! One deploy for both kinds of slot: the rules every deploy has (`decide`), the kind's plan and
//! writes, then the same waits (the migration, the rollout, the Service, the workers) and report.
//! The flags are `args`, the report `report`; this file picks the kind and acts.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

pub mod args;
pub mod decide;
pub mod report;

pub use args::ImageArgs;
pub use decide::decide;
pub use report::DeployReport;

use super::preview::{Plan, PlannedStep};
use super::{mutate, Header, Invocation, Mutating, Outcome, Session};
use crate::context::Ctx;
use crate::error::UsageError;
use crate::observe::History;
use crate::slots::{self, DeployRequest, Seen, SlotKind, Staging, Target};
use crate::vocab::{Mode, Op, Role};
use crate::wait;
use crate::with_target;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Mutating,
    #[command(flatten)]
    pub image: ImageArgs,
    /// Deploy even when the Services' live selectors disagree with the release values (the
    /// write puts them back as the values say; with Helm 4 it takes back every field a hand
    /// edit owns), or when a GitOps controller owns the release
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub targets: super::Targets,
}

impl Args {
    pub async fn run(&self, run: &Invocation<'_>) -> Result<()> {
        let mutation = self
            .target
            .mutation(Op::Deploy)
            .creating_namespace(self.image.create_namespace);
        let request = self.image.request(self.force);
        mutate(run, mutation, async |s: &Session<'_>| deploy(s, &request).await).await
    }
}

/// Reads the release, decides the kind of its slots (a router when it records one, or when
/// `--app-chart` makes a new release one) and deploys.
pub async fn deploy(s: &Session<'_>, request: &DeployRequest) -> Result<Outcome<DeployReport>> {
    precheck(s, request).await?;
    with_target!(target(s, request).await?, seen => execute(s, seen.as_ref(), request).await)
}

/// A run that creates its namespace checks everything it can first (the deploy's rules, its
/// kind's renders and preflight) and writes nothing, the namespace included, unless they pass;
/// then it creates the namespace, takes the lock, and is decided again from what is there now.
pub async fn precheck(s: &Session<'_>, request: &DeployRequest) -> Result<()> {
    if !s.creates_namespace || s.dry_run {
        return Ok(());
    }
    with_target!(target(s, request).await?, seen => plan_only(s, seen.as_ref(), request).await)?;
    s.open().await
}

async fn plan_only<K: SlotKind>(s: &Session<'_>, seen: Option<&Seen<K>>, request: &DeployRequest) -> Result<()> {
    let basis = decide(s.release, &s.ctx.namespace, seen, request)?;
    K::plan_stage(s.ctx, seen, &basis).await.map(|_| ())
}

/// The release a deploy writes to, its flags checked against its kind.
pub async fn target(s: &Session<'_>, request: &DeployRequest) -> Result<Target> {
    let read = slots::read(s.ctx, s.release, History::Latest).await?;
    let target = Target::of(read, request.app.chart.is_some())?;
    match target.mode() {
        Mode::Router => for_routers(request)?,
        Mode::Bundled => only_for_routers(request)?,
    }
    Ok(target)
}

/// Refuses a router's flags on a release of bgslot's chart (exit 2).
fn only_for_routers(request: &DeployRequest) -> Result<(), UsageError> {
    if request.app.any() {
        return Err(UsageError(
            "--app-chart-version, --tag-key, --repository-key, --digest-key, --replicas-key, --service, --accept, --router-values and --router-set are for a router: a release first deployed with --app-chart".into(),
        ));
    }
    Ok(())
}

/// Refuses the flags of bgslot's own chart on a router, and router values that would touch what
/// bgslot records (exit 2).
fn for_routers(request: &DeployRequest) -> Result<(), UsageError> {
    if !request.slot_values.is_empty() || !request.slot_sets.is_empty() {
        return Err(UsageError(
            "--slot-values and --slot-set are the bundled chart's; a router's slot is a release of its own: pass its values with -f and --set".into(),
        ));
    }
    if request.preview_replicas.is_some() {
        return Err(UsageError(
            "--preview-replicas is the bundled chart's: a router's slot runs your chart at production's size (or --replicas with --replicas-key); drop it to stage at full size".into(),
        ));
    }
    let owned = |key: &str| key == "productionSlot" || key == "router" || key.starts_with("router.");
    if let Some(set) = request.app.router_set.iter().find(|s| owned(&s.key)) {
        return Err(UsageError(format!(
            "--router-set {}: productionSlot and router.* are bgslot's to write",
            set.key
        )));
    }
    for file in &request.app.router_values {
        let text = std::fs::read_to_string(file)
            .map_err(|e| UsageError(format!("--router-values {}: {e}", file.display())))?;
        let values: Option<Value> = serde_saphyr::from_str(&text)
            .map_err(|e| UsageError(format!("--router-values {} is not YAML: {e}", file.display())))?;
        if let Some(key) = values
            .as_ref()
            .and_then(Value::as_object)
            .and_then(|m| m.keys().find(|k| owned(k)))
        {
            return Err(UsageError(format!(
                "--router-values {} sets {key}: productionSlot and router are bgslot's to write",
                file.display()
            )));
        }
    }
    Ok(())
}

/// Decides, plans with the kind, then shows the plan or acts on it.
pub async fn execute<K: SlotKind>(
    s: &Session<'_>,
    seen: Option<&Seen<K>>,
    request: &DeployRequest,
) -> Result<Outcome<DeployReport>> {
    let basis = decide(s.release, &s.ctx.namespace, seen, request)?;
    let staging = K::plan_stage(s.ctx, seen, &basis).await?;
    if s.dry_run {
        return Ok(Outcome::Planned(preview(s, seen, &staging)?));
    }
    act(s.ctx, seen, &staging).await.map(Outcome::Done)
}

/// The dry run's account of a deploy.
pub fn preview<K: SlotKind>(s: &Session<'_>, seen: Option<&Seen<K>>, staging: &Staging<K::Plan>) -> Result<Plan> {
    let ctx = s.ctx;
    let mut out = match seen {
        Some(seen) => Plan::of(Op::Deploy, &seen.release),
        None => Plan::new(Op::Deploy, s.release, &ctx.namespace),
    };
    if s.creates_namespace {
        out = out.step(PlannedStep::action(format!("create namespace {}", ctx.namespace)));
    }
    out.steps.extend(K::preview_stage(ctx, seen, staging)?);
    Ok(out)
}

/// Writes what the kind planned, then waits until the slot is fully available, its Service lists
/// every pod as a ready endpoint, and its workers run what they should. A slot that never becomes
/// ready stays staged (recorded) for `--replace` or `clean`.
pub async fn act<K: SlotKind>(ctx: &Ctx, seen: Option<&Seen<K>>, staging: &Staging<K::Plan>) -> Result<DeployReport> {
    let (release, slot) = (&staging.release, staging.slot);
    let staged = K::stage(ctx, seen, staging).await?;
    let cluster = &ctx.cluster;
    let events = ctx.events.as_ref();
    let waiting_since = Instant::now();
    let staged_note = |what: &str| {
        format!(
            "{what}; production is unchanged. The version stays staged in {slot}: replace it with \
             `bgslot deploy {release} --tag TAG --replace` or remove it with `bgslot clean {release} --force`"
        )
    };
    let not_ready = |what: &str| {
        if staging.install {
            format!("the {what} of the new release {release} did not become ready")
        } else {
            staged_note(&format!("the {what} of {release} did not become ready"))
        }
    };
    if staging.migration {
        wait::migration_done(cluster, release, slot, ctx.timeout(), events)
            .await
            .with_context(|| staged_note(&format!("the migration of the {slot} slot of {release} did not succeed")))?;
    }
    let rolled = wait::slot_rolled_out(cluster, release, slot, &staging.rollout, ctx.timeout(), events)
        .await
        .with_context(|| not_ready(&format!("{slot} slot")))?;
    // Endpoints follow pod readiness with a delay (long after an API server restart): wait for
    // them too, so that a swap right after this deploy finds the slot behind its Service.
    let role = if staging.install { Role::Production } else { Role::Stage };
    let left = ctx
        .timeout()
        .saturating_sub(waiting_since.elapsed())
        .max(Duration::from_secs(10));
    let desired = rolled.totals.desired.max(0) as usize;
    let service = wait::endpoints_ready(cluster, release, &staging.pods, role, slot, desired, left)
        .await
        .with_context(|| format!("the {slot} slot of {release} is ready but its Service does not route to it yet"))?;
    // The slot's workers: at stageReplicas (0 by default: nothing to wait for once they are
    // stopped) in a staged slot, at their replicas in a new release's production slot.
    let names: Vec<String> = staged.values.workloads.workers.iter().map(|w| w.name.clone()).collect();
    let workers = wait::workers_settled(cluster, release, &staged.followers, slot, &names, left, events)
        .await
        .with_context(|| {
            if staging.install {
                format!("the workers of the new release {release} did not start in {slot}")
            } else {
                staged_note(&format!("the workers of the {slot} slot of {release} did not start"))
            }
        })?;
    let (op, production, next) = if staging.install {
        (Op::Install, slot, format!("bgslot deploy {release} --tag NEW_TAG"))
    } else {
        (Op::Deploy, slot.other(), format!("bgslot swap {release} --expect-tag {}", staging.version))
    };
    let image = staging
        .image
        .clone()
        .or_else(|| rolled.deployments.iter().find_map(|d| d.state.image.clone()))
        .unwrap_or_else(|| staged.values.slot(slot).image());
    Ok(DeployReport {
        header: Header::new(op, release, &ctx.namespace)
            .revision(staged.revision)
            .production(production)
            .next(next),
        mode: K::MODE,
        slot,
        role,
        image,
        ready: rolled.totals.ready,
        desired: rolled.totals.desired,
        url: staged.values.url(role, &service, &ctx.namespace, staged.port),
        service: Some(service),
        preview: staging.preview.is_some(),
        workers: workers
            .iter()
            .map(|w| report::WorkerCount {
                name: w.worker.name.clone(),
                ready: w.worker.state.ready,
                desired: w.worker.state.desired,
            })
            .collect(),
        slot_revision: staged.slot_release.as_ref().map(|(_, r)| *r),
        slot_release: staged.slot_release.map(|(name, _)| name),
        chart: staged.chart,
        accepted: staged.accepted,
        hooks: staged.hooks,
        version: staging.version.clone(),
    })
}
