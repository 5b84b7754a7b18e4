//! `bgslot deploy RELEASE --tag T`: puts a new version in the idle slot (or installs the release
//! with production = blue), then waits until that slot is fully available behind its Service.
//! The flags are `args`, the decision `decide`, the report `report`; this file acts.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

pub mod args;
pub mod decide;
pub mod report;

pub use args::ImageArgs;
pub use decide::{decide, DeployPlan, DeployRequest, Version};
pub use report::DeployReport;

use super::preview::{self, Plan, PlannedStep};
use super::router::{self, Mode};
use super::{mutate, Mutating, Invocation, Outcome, Session};
use crate::context::Ctx;
use crate::helm::Revision;
use crate::names::{ImageRef, ReleaseName};
use crate::observe::{History, Observation};
use crate::vocab::{Op, Role};
use crate::wait;

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
}

impl Args {
    pub async fn run(&self, run: &Invocation<'_>) -> Result<()> {
        let mutation = self.target.mutation(Op::Deploy).creating_namespace(self.image.create_namespace);
        mutate(run, mutation, async |s: &Session<'_>| {
            let seen = Observation::read(s.ctx, s.release, History::Latest).await?;
            if let Some(routed) = router::deploy::dispatch(s, seen.as_ref(), &self.image, self.force).await? {
                return Ok(router::routed(routed));
            }
            let plan = decide(s.release, seen.as_ref(), &self.image.request(self.force))?;
            if s.dry_run {
                return Ok(Outcome::Planned(preview(s, seen.as_ref(), &plan)?));
            }
            act(s.ctx, s.release, seen.as_ref(), plan).await.map(|r| Outcome::Done(Mode::Bundled(r)))
        })
        .await
    }
}

/// The dry run's account of `plan`.
pub fn preview(s: &Session<'_>, seen: Option<&Observation>, plan: &DeployPlan) -> Result<Plan> {
    let (ctx, release) = (s.ctx, s.release);
    let mut out = match seen {
        Some(seen) => Plan::of(Op::Deploy, seen),
        None => Plan::new(Op::Deploy, release, &ctx.namespace),
    };
    if s.creates_namespace {
        out = out.step(PlannedStep::action(format!("create namespace {}", ctx.namespace)));
    }
    if let Some(job) = &plan.rerun_migration {
        out = out.step(PlannedStep::action(format!(
            "delete the failed migration Job {job} so the write runs it again"
        )));
    }
    let files = read_values_files(&plan.write.values_files)?;
    let empty = serde_json::Value::Object(Default::default());
    let all_values = seen.map(|s| &s.all_values).unwrap_or(&empty);
    let slot = plan.slot;
    let role = if plan.install { "production" } else { "stage" };
    let action = if plan.install {
        format!("install {release} with {} in {slot} as production", plan.tag)
    } else {
        format!("stage {} in {slot}", plan.tag)
    };
    let scale = plan
        .scale_to
        .map(|n| format!("scale the {slot} Deployment to {n} replicas (what production runs; the HPA owns replicas)"));
    Ok(out.step(
        PlannedStep::action(action)
            .write(
                ctx.helm.command_line(release, &ctx.chart.shown(), &plan.write),
                preview::changes(&plan.write, all_values, &files, ctx.chart.defaults.as_ref()),
            )
            .then(scale.into_iter().chain([
                format!("wait for the {slot} migration Job, if the chart runs one"),
                format!("wait until the {slot} Deployment is fully available (timeout {}s)", ctx.timeout().as_secs()),
                format!("wait until the {role} Service lists every {slot} pod as a ready endpoint"),
            ])),
    ))
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
pub async fn act(ctx: &Ctx, release: &ReleaseName, seen: Option<&Observation>, plan: DeployPlan) -> Result<DeployReport> {
    let slot = plan.slot;
    ctx.events.step(&format!(
        "{} {release}: {slot} <- {}",
        if plan.install { "installing" } else { "deploying" },
        plan.image
            .as_ref()
            .map(ImageRef::to_string)
            .unwrap_or_else(|| plan.tag.clone())
    ));
    let cluster = &ctx.cluster;
    if let Some(job) = &plan.rerun_migration {
        ctx.events.step(&format!("{slot}: deleting the failed migration Job {job} so it runs again"));
        ctx.delete_job(job).await?;
    }
    ctx.write(release, &plan.write)
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
        ctx.events.step(&format!("{slot}: scaling {name} to {replicas} replicas (what production runs)"));
        ctx.scale(&name, replicas).await?;
    }
    let waiting_since = std::time::Instant::now();
    let events = ctx.events.as_ref();
    let staged_note = |what: &str| {
        format!(
            "{what}; production is unchanged. The version stays staged in {slot}: replace it with \
             `bgslot deploy {release} --tag TAG --replace` or remove it with `bgslot clean {release} --force`"
        )
    };
    wait::migration_done(cluster, release, slot, ctx.timeout(), events)
        .await
        .with_context(|| staged_note(&format!("the migration of the {slot} slot of {release} did not succeed")))?;
    let state = wait::slot_available(cluster, release, slot, ctx.timeout(), events)
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
        .timeout()
        .saturating_sub(waiting_since.elapsed())
        .max(Duration::from_secs(10));
    wait::endpoints_ready(cluster, release, role, slot, state.desired.max(0) as usize, left)
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
            observed.values = s.values.clone().with_staged(slot, image, plan.preview.is_some());
            observed.cluster = cluster.observe(release).await?;
            observed.history.push(Revision {
                revision: s.latest().revision + 1,
                updated: String::new(),
                status: "deployed".into(),
                chart: ctx.chart.id.clone().unwrap_or_else(|| s.latest().chart.clone()),
                app_version: String::new(),
                description: plan.write.description(),
            });
            observed
        }
        _ => Observation::existing(ctx, release, History::Latest).await?,
    };
    // The slot's workers: at stageReplicas (0 by default: nothing to wait for once they are
    // stopped) in a staged slot, at their replicas in a new release's production slot.
    let names: Vec<String> = after.values.workloads.workers.iter().map(|w| w.name.clone()).collect();
    let workers = wait::workers_settled(cluster, release, slot, &names, left, events)
        .await
        .with_context(|| {
            if plan.install {
                format!("the workers of the new release {release} did not start in {slot}")
            } else {
                staged_note(&format!("the workers of the {slot} slot of {release} did not start"))
            }
        })?;
    Ok(DeployReport::new(&after, plan.install, slot, &state, &workers))
}

