//! `bgslot release RELEASE --tag T`: the whole cycle for a CI pipeline, under one lock: deploy,
//! verify against stage, swap, verify against production (swapping back when that fails), and
//! optionally clean after the drain delay.

use std::fmt;
use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::chart::ChartSource;
use crate::cli::{DryRun, GlobalArgs};
use crate::commands::clean::{self, CleanPlan, CleanReport, CleanRequest};
use crate::commands::deploy::{self, DeployReport, ImageArgs};
use crate::commands::swap::{self, SwapKind, SwapPlan, SwapReport, SwapRequest};
use crate::commands::Outcome;
use crate::context::Ctx;
use crate::duration::parse_duration;
use crate::names::ReleaseName;
use crate::observe::{History, Observation};
use crate::output::progress;
use crate::plan::{Plan, PlannedStep};
use crate::signals;
use crate::values::Slot;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Helm release name
    #[arg(value_name = "RELEASE")]
    pub release: ReleaseName,
    #[command(flatten)]
    pub image: ImageArgs,
    /// Command run (without a shell: split into words as a shell would, quotes respected) after
    /// the deploy against stage, and after the swap against production. It gets BGSLOT_TARGET
    /// (stage|production), BGSLOT_URL, BGSLOT_SERVICE, BGSLOT_NAMESPACE, BGSLOT_SLOT, BGSLOT_TAG.
    /// A non-zero exit fails the release; after the swap it also swaps back.
    #[arg(long, value_name = "CMD", value_parser = parse_command)]
    pub verify_cmd: Option<VerifyCommand>,
    /// Clean the old slot after the drain delay
    #[arg(long)]
    pub clean: bool,
    /// Drain delay before --clean disables the old slot
    #[arg(long, value_parser = parse_duration, default_value = "30s", value_name = "DURATION")]
    pub min_age: Duration,
    /// Release even when a GitOps controller owns the release or the Services' live selectors
    /// disagree with the values (each write takes the fields back)
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub dry_run: DryRun,
}

/// `--verify-cmd` split into a program and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyCommand(pub Vec<String>);

fn parse_command(text: &str) -> Result<VerifyCommand, String> {
    match shlex::split(text).filter(|words| !words.is_empty()) {
        Some(words) => Ok(VerifyCommand(words)),
        None => Err(format!(
            "'{text}' cannot be split into a program and arguments (check its quotes)"
        )),
    }
}

impl fmt::Display for VerifyCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::names::shell_words(&self.0))
    }
}

impl Args {
    pub async fn run(&self, global: &GlobalArgs) -> Result<()> {
        let ctx = Ctx::connect(global).await?;
        let outcome = execute(&ctx, self)
            .await
            .with_context(|| ctx.operation("release", &self.release))?;
        crate::output::print(&outcome, global.output)
    }
}

async fn execute(ctx: &Ctx, args: &Args) -> Result<Outcome<ReleaseReport>> {
    let release = &args.release;
    let dry_run = args.dry_run.dry_run;
    let chart = ChartSource::resolve(ctx.global.chart.as_deref())?;
    let creates_namespace = args.image.create_namespace
        && ctx.cluster().create_namespace_if_missing(dry_run).await?;
    let lock = ctx.lock(release, "release", dry_run).await?;
    let result = async {
        let seen = Observation::read(ctx, release, &chart, History::Latest).await?;
        let deploy_plan = deploy::decide(release, seen.as_ref(), &args.image.request(args.force))?;
        if dry_run {
            let deploy_preview =
                deploy::preview(ctx, release, seen.as_ref(), &deploy_plan, &chart, creates_namespace)?;
            return Ok(Outcome::Planned(plan(ctx, args, seen.as_ref(), &deploy_plan, deploy_preview, &chart)));
        }
        let version = deploy_plan.tag.clone();
        let deployed = deploy::act(ctx, release, seen.as_ref(), deploy_plan, &chart).await?;
        cycle(ctx, args, &chart, deployed, version).await.map(Outcome::Done)
    }
    .await;
    lock.finish(result).await
}

/// Everything after the deploy: verify, swap, verify, clean.
async fn cycle(
    ctx: &Ctx,
    args: &Args,
    chart: &ChartSource,
    deployed: DeployReport,
    version: String,
) -> Result<ReleaseReport> {
    let release = &args.release;
    let verify = args.verify_cmd.as_ref();
    if deployed.operation == "install" {
        if let Some(cmd) = verify {
            run_verify(ctx, cmd, &Target::of_deploy(&deployed), &version).await?;
        }
        return Ok(ReleaseReport::new(deployed, None, None, verify));
    }
    if let Some(cmd) = verify {
        run_verify(ctx, cmd, &Target::of_deploy(&deployed), &version)
            .await
            .context("verification against stage failed; production is unchanged (the new version stays staged)")?;
    }
    let request = SwapRequest {
        kind: SwapKind::Swap,
        expect_tag: Some(version.clone()),
        force: args.force,
    };
    let seen = swap::observe(ctx, release, chart, SwapKind::Swap).await?;
    let plan = swap::decide(&seen, &request, chart)?;
    let swapped = swap::act(ctx, &seen, plan, chart).await?;
    if let Some(cmd) = verify {
        if let Err(err) = run_verify(ctx, cmd, &Target::of_swap(&swapped), &version).await {
            progress(&format!(
                "verification against production failed: {err:#}; swapping back"
            ));
            let back = SwapRequest {
                kind: SwapKind::Rollback,
                expect_tag: None,
                force: args.force,
            };
            let swapped_back = async {
                let seen = swap::observe(ctx, release, chart, SwapKind::Rollback).await?;
                let plan = swap::decide(&seen, &back, chart)?;
                swap::act(ctx, &seen, plan, chart).await
            }
            .await
            .context(
                "swapping back after the failed verification ALSO failed: check `bgslot status` now",
            )?;
            return Err(err.context(format!(
                "verification against production failed; production was swapped back to {}",
                swapped_back.to
            )));
        }
    }
    let cleaned = if args.clean {
        progress(&format!(
            "waiting {}s (drain delay) before cleaning the old slot",
            args.min_age.as_secs()
        ));
        let mut sigs = signals::subscribe();
        tokio::select! {
            _ = tokio::time::sleep(args.min_age) => {}
            sig = sigs.changed_to_signal() => bail!(
                "interrupted by {} during the drain delay; production already runs the new version",
                signals::name(sig)
            ),
        }
        let seen = clean::observe(ctx, release, chart).await?;
        // The drain delay is never skipped here: --force only lifts the ownership check.
        let request = CleanRequest {
            min_age: args.min_age,
            force: false,
            over_gitops: args.force,
        };
        match clean::decide(&seen, k8s_openapi::jiff::Timestamp::now(), &request, chart)? {
            Some(plan) => Some(clean::act(ctx, &seen, plan, chart).await?),
            None => None,
        }
    } else {
        None
    };
    Ok(ReleaseReport::new(deployed, Some(swapped), cleaned, verify))
}

/// What a verify command is pointed at.
struct Target {
    target: &'static str,
    url: String,
    service: String,
    slot: Slot,
}

impl Target {
    fn of_deploy(deployed: &DeployReport) -> Target {
        Target {
            target: deployed.role.as_str(),
            url: deployed.url.clone(),
            service: deployed.service.clone().unwrap_or_default(),
            slot: deployed.slot,
        }
    }

    fn of_swap(swapped: &SwapReport) -> Target {
        Target {
            target: "production",
            url: swapped.url.clone(),
            service: swapped.service.clone(),
            slot: swapped.to,
        }
    }
}

async fn run_verify(ctx: &Ctx, cmd: &VerifyCommand, target: &Target, version: &str) -> Result<()> {
    let argv = &cmd.0;
    progress(&format!("verify ({}): {cmd}", target.target));
    // Its output goes to stderr with bgslot's progress: stdout carries bgslot's result (JSON).
    let to_stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating stderr for the verify command")?;
    let status = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(to_stderr))
        .env("BGSLOT_TARGET", target.target)
        .env("BGSLOT_URL", &target.url)
        .env("BGSLOT_SERVICE", &target.service)
        .env("BGSLOT_NAMESPACE", &ctx.namespace)
        .env("BGSLOT_SLOT", target.slot.as_str())
        .env("BGSLOT_TAG", version)
        .status()
        .await
        .with_context(|| format!("could not run the verify command {}", argv[0]))?;
    if !status.success() {
        bail!(
            "verify command `{cmd}` exited with {status} against {}",
            target.target
        );
    }
    Ok(())
}

/// The dry run: the deploy as planned, then the flip and clean a run would make after it.
fn plan(
    ctx: &Ctx,
    args: &Args,
    seen: Option<&Observation>,
    deploy_plan: &deploy::DeployPlan,
    deploy_preview: Plan,
    chart: &ChartSource,
) -> Plan {
    let mut out = Plan {
        operation: "release",
        ..deploy_preview
    };
    let verify = |target: &str| PlannedStep {
        action: format!(
            "verify against {target}: {}",
            args.verify_cmd
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        ),
        helm: Vec::new(),
        changes: Vec::new(),
        then: Vec::new(),
    };
    let Some(seen) = seen else {
        if args.verify_cmd.is_some() {
            out = out.step(verify("production"));
        }
        return out;
    };
    if args.verify_cmd.is_some() {
        out = out.step(verify("stage"));
    }
    let (from, to) = (seen.values.production, deploy_plan.slot);
    let flip = SwapPlan {
        kind: SwapKind::Swap,
        from,
        to,
        write: swap::flip_write(SwapKind::Swap, from, to),
    };
    out = out.step(swap::flip_step(ctx, &args.release, &flip, &seen.all_values, chart));
    if args.verify_cmd.is_some() {
        out = out.step(verify("production (on failure: swap back)"));
    }
    if args.clean {
        let clean = CleanPlan {
            slot: from,
            write: clean::disable_write(from),
        };
        let mut step = clean::clean_step(ctx, &args.release, &clean, &seen.all_values, chart);
        step.action = format!("after the drain delay ({}s), {}", args.min_age.as_secs(), step.action);
        out = out.step(step);
    }
    out
}

#[derive(Debug, Clone, Serialize)]
pub struct ReleaseReport {
    pub operation: &'static str,
    pub release: String,
    pub namespace: String,
    pub revision: u64,
    pub production_slot: Slot,
    pub stage_slot: Slot,
    /// What production runs now.
    pub image: String,
    /// Where `--verify-cmd` passed: `stage`, `production`.
    pub verified: Vec<&'static str>,
    /// The reports of the deploy, swap and clean that ran, in order.
    pub steps: Vec<Step>,
    pub next: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Step {
    Deploy(DeployReport),
    Swap(SwapReport),
    Clean(CleanReport),
}

impl ReleaseReport {
    fn new(
        deployed: DeployReport,
        swapped: Option<SwapReport>,
        cleaned: Option<CleanReport>,
        verify: Option<&VerifyCommand>,
    ) -> ReleaseReport {
        let verified = match (&swapped, verify) {
            (_, None) => vec![],
            (None, Some(_)) => vec!["production"],
            (Some(_), Some(_)) => vec!["stage", "production"],
        };
        let release = deployed.release.clone();
        let namespace = deployed.namespace.clone();
        let (revision, production_slot, stage_slot, image, next) = match (&swapped, &cleaned) {
            (None, _) => (
                deployed.revision,
                deployed.production_slot,
                deployed.stage_slot,
                deployed.image.clone(),
                deployed.next.clone(),
            ),
            (Some(s), None) => (s.revision, s.to, s.from, s.image.clone(), s.next.clone()),
            (Some(s), Some(c)) => (c.revision, s.to, s.from, s.image.clone(), c.next.clone()),
        };
        let steps = std::iter::once(Step::Deploy(deployed))
            .chain(swapped.map(Step::Swap))
            .chain(cleaned.map(Step::Clean))
            .collect();
        ReleaseReport {
            operation: "release",
            release,
            namespace,
            revision,
            production_slot,
            stage_slot,
            image,
            verified,
            steps,
            next,
        }
    }

    fn step<T>(&self, pick: impl Fn(&Step) -> Option<&T>) -> Option<&T> {
        self.steps.iter().find_map(pick)
    }
}

impl fmt::Display for ReleaseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let swapped = self.step(|s| match s {
            Step::Swap(s) => Some(s),
            _ => None,
        });
        let Some(swapped) = swapped else {
            // An install: the deploy's own report says it all.
            if let Some(Step::Deploy(d)) = self.steps.first() {
                d.fmt(f)?;
            }
            if !self.verified.is_empty() {
                writeln!(f, "  verified against production")?;
            }
            return Ok(());
        };
        writeln!(
            f,
            "{}: released {} in {}; production routes to it ({} ready endpoints)",
            self.release, swapped.image, swapped.to, swapped.ready_endpoints
        )?;
        if !self.verified.is_empty() {
            writeln!(f, "  verified against {}", self.verified.join(" and "))?;
        }
        let cleaned = self.step(|s| match s {
            Step::Clean(c) => Some(c),
            _ => None,
        });
        match cleaned {
            Some(c) => writeln!(f, "  {} is disabled", c.slot)?,
            None => writeln!(
                f,
                "  {} still runs the previous version: `bgslot rollback {}` returns to it",
                swapped.from, self.release
            )?,
        }
        writeln!(f, "\nnext: {}", self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_commands_split_like_a_shell_without_one() {
        assert_eq!(
            parse_command("curl -fsS 'http://x/a b'").unwrap().0,
            ["curl", "-fsS", "http://x/a b"]
        );
        assert!(parse_command("curl 'unterminated")
            .unwrap_err()
            .contains("cannot be split"));
        assert!(parse_command("   ").is_err());
    }
}
