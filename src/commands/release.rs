//! `bgslot release RELEASE --tag T`: the whole cycle for a CI pipeline, under one lock: deploy,
//! verify against stage, swap, verify against production (swapping back when that fails), and
//! optionally clean after the drain delay. One cycle for both kinds of slot: it runs the deploy,
//! swap and clean every command runs.

use std::fmt;
use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::clean::{self, CleanReport, CleanRequest};
use super::deploy::{self, DeployReport, ImageArgs};
use super::preview::{Plan, PlannedStep};
use super::swap::{self, SwapKind, SwapReport, SwapRequest};
use super::{mutate, Header, Invocation, Mutating, Outcome, Session};
use crate::context::Ctx;
use crate::duration::parse_duration;
use crate::error::{self, UsageError};
use crate::names::ReleaseName;
use crate::slots::{DeployRequest, Seen, SlotKind};
use crate::vocab::{Mode, Op, Role, Slot};
use crate::wait;
use crate::{with_kind, with_target};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Mutating,
    #[command(flatten)]
    pub image: ImageArgs,
    /// Command run (without a shell: split into words as a shell would, quotes respected) after
    /// the deploy against stage, and after the swap against production. It gets BGSLOT_TARGET
    /// (stage|production), BGSLOT_URL, BGSLOT_SERVICE, BGSLOT_NAMESPACE, BGSLOT_SLOT, BGSLOT_TAG,
    /// and across targets BGSLOT_CLUSTER (the target's name). A non-zero exit fails the
    /// release; after the swap it also swaps back.
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
    pub targets: super::Targets,
    /// With targets: release even when they do not all serve one version now (a mixed start)
    #[arg(long, help_heading = "Several clusters")]
    pub allow_mixed: bool,
    /// With targets: swap one at a time in listed order, production verified after each
    /// (waves, the default), or all at once, then verify each (together: the least version skew)
    #[arg(long, value_enum, value_name = "ORDER", help_heading = "Several clusters")]
    pub swap: Option<SwapOrder>,
}

/// How a release across targets swaps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SwapOrder {
    /// One target at a time, in listed order, production verified after each.
    Waves,
    /// All at once (in parallel), then production verified on each.
    Together,
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
    pub async fn run(&self, run: &Invocation<'_>) -> Result<()> {
        if self.allow_mixed || self.swap.is_some() {
            return Err(UsageError(
                "--allow-mixed and --swap are for a release across several clusters: give --targets FILE or --target NAME=CONTEXT".into(),
            )
            .into());
        }
        let mutation = self.target.mutation(Op::Release).creating_namespace(self.image.create_namespace);
        let request = self.image.request(self.force);
        mutate(run, mutation, async |s: &Session<'_>| {
            deploy::precheck(s, &request).await?;
            with_target!(deploy::target(s, &request).await?, seen => release(s, self, seen.as_ref(), &request).await)
        })
        .await
    }
}

/// The deploy, then (or, with `--dry-run`, the plan of) everything after it.
pub async fn release<K: SlotKind>(
    s: &Session<'_>,
    args: &Args,
    seen: Option<&Seen<K>>,
    request: &DeployRequest,
) -> Result<Outcome<ReleaseReport>> {
    let basis = deploy::decide(s.release, &s.ctx.namespace, seen, request)?;
    let staging = K::plan_stage(s.ctx, seen, &basis).await?;
    if s.dry_run {
        let deployed = deploy::preview(s, seen, &staging)?;
        return Ok(Outcome::Planned(plan(s.ctx, args, seen, &staging, deployed)));
    }
    let deployed = deploy::act(s.ctx, seen, &staging).await?;
    cycle(s.ctx, args, deployed).await.map(Outcome::Done)
}

/// Everything after the deploy: verify, swap, verify, clean.
async fn cycle(ctx: &Ctx, args: &Args, deployed: DeployReport) -> Result<ReleaseReport> {
    let release = &args.target.release;
    let version = deployed.version.clone();
    let verify = args.verify_cmd.as_ref();
    if deployed.header.operation == Op::Install {
        if let Some(cmd) = verify {
            run_verify(ctx, cmd, &Target::of_deploy(&deployed), &version, None).await?;
        }
        return Ok(ReleaseReport::new(deployed, None, None, verify));
    }
    if let Some(cmd) = verify {
        verify_stage(ctx, cmd, &deployed, None).await?;
    }
    let swapped = match swap_to(ctx, release, &version, args.force).await {
        Ok(swapped) => swapped,
        // The flip was written but what follows it (the workers) did not settle: move everything
        // back, as a failed verification does. A swap that failed before its flip changed nothing.
        // A lost lock stops every write, the swap-back's too: it says what was done itself.
        Err(Unswapped { err, to: Some(to) }) if !error::lost_lock(&err) => {
            if !landed_on(ctx, release, to, &err).await? {
                return Err(err);
            }
            ctx.events.step(&format!("the swap to {to} did not complete: {err:#}; swapping back"));
            let back = swap_back(ctx, release, args.force)
                .await
                .context(CHECK_NOW)
                .with_context(|| format!("the swap to {to} did not complete: {err:#}"))?;
            return Err(err.context(format!(
                "the swap did not complete; production was swapped back to {}",
                back.to
            )));
        }
        Err(Unswapped { err, .. }) => return Err(err),
    };
    if let Some(cmd) = verify {
        if let Err(err) = verify_production(ctx, cmd, &swapped, &version, None).await {
            ctx.events.step(&format!("verification against production failed: {err:#}; swapping back"));
            let back = swap_back(ctx, release, args.force)
                .await
                .context(CHECK_NOW)
                .with_context(|| format!("verification against production failed: {err:#}"))?;
            return Err(err.context(format!(
                "verification against production failed; production was swapped back to {}",
                back.to
            )));
        }
    }
    let cleaned = if args.clean {
        wait::drain_delay(args.min_age, ctx.events.as_ref()).await?;
        clean_now(ctx, release, args.min_age, args.force).await?
    } else {
        None
    };
    Ok(ReleaseReport::new(deployed, Some(swapped), cleaned, verify))
}

/// Runs the verify command against the stage a deploy left; its failure says production is
/// unchanged. `cluster` names the target of a run across clusters.
pub async fn verify_stage(ctx: &Ctx, cmd: &VerifyCommand, deployed: &DeployReport, cluster: Option<&str>) -> Result<()> {
    run_verify(ctx, cmd, &Target::of_deploy(deployed), &deployed.version, cluster)
        .await
        .context("verification against stage failed; production is unchanged (the new version stays staged)")
}

/// Runs the verify command against the production a swap (or an install) left.
pub async fn verify_production(ctx: &Ctx, cmd: &VerifyCommand, swapped: &SwapReport, version: &str, cluster: Option<&str>) -> Result<()> {
    run_verify(ctx, cmd, &Target::of_swap(swapped), version, cluster).await
}

/// Runs the verify command against production right after an install.
pub async fn verify_install(ctx: &Ctx, cmd: &VerifyCommand, deployed: &DeployReport, cluster: Option<&str>) -> Result<()> {
    run_verify(ctx, cmd, &Target::of_deploy(deployed), &deployed.version, cluster).await
}

/// A swap that did not happen, or did not complete: why, and the slot it was flipping to once
/// that was decided (the flip may then have been written).
pub struct Unswapped {
    pub err: anyhow::Error,
    pub to: Option<Slot>,
}

/// The swap of a release to the staged `version`, with every check of `swap --expect-tag`.
pub async fn swap_to(ctx: &Ctx, release: &ReleaseName, version: &str, force: bool) -> Result<SwapReport, Unswapped> {
    let request = SwapRequest {
        kind: SwapKind::Swap,
        expect_tag: Some(version.to_string()),
        force,
    };
    let prepared = prepare_swap(ctx, release, &request)
        .await
        .map_err(|err| Unswapped { err, to: None })?;
    act_swap(ctx, prepared).await
}

/// A swap (or rollback) every check allowed, not written yet: a run across clusters decides
/// every target's before it flips any.
pub struct PreparedSwap {
    read: crate::slots::Read,
    plan: swap::SwapPlan,
}

impl PreparedSwap {
    /// The slot production moves to.
    pub fn to(&self) -> Slot {
        self.plan.to
    }

    /// Production's slot and version now, and the version it moves to.
    pub fn versions(&self) -> ((Slot, String), String) {
        with_kind!(&self.read, seen => (
            (seen.production(), seen.slot(seen.production()).tag.clone()),
            seen.slot(self.plan.to).tag.clone(),
        ))
    }

    /// What `--dry-run` shows of it.
    pub fn preview(&self, ctx: &Ctx) -> Plan {
        with_kind!(&self.read, seen => swap::preview(ctx, seen, &self.plan))
    }
}

/// Observes the release and decides the swap `request` asks for; nothing is written.
pub async fn prepare_swap(ctx: &Ctx, release: &ReleaseName, request: &SwapRequest) -> Result<PreparedSwap> {
    let read = swap::observe(ctx, release, request.kind).await?;
    let plan = with_kind!(&read, seen => swap::decide(seen, request, &ctx.chart)?);
    Ok(PreparedSwap { read, plan })
}

/// Writes a prepared swap and waits for it, as `swap` does.
pub async fn act_swap(ctx: &Ctx, prepared: PreparedSwap) -> Result<SwapReport, Unswapped> {
    let to = prepared.plan.to;
    let plan = prepared.plan;
    with_kind!(prepared.read, seen => swap::act(ctx, &seen, plan).await.map_err(|err| Unswapped { err, to: Some(to) }))
}

/// Whether production of `release` is on `to` now, after a swap to it that failed (`err`).
pub async fn landed_on(ctx: &Ctx, release: &ReleaseName, to: Slot, err: &anyhow::Error) -> Result<bool> {
    let now = crate::observe::Observation::existing(ctx, release, crate::observe::History::Latest)
        .await
        .with_context(|| format!("the swap to {to} did not complete ({err:#}), and the release could not be read again"))?;
    Ok(now.values.production == to)
}

/// Cleans the old slot now (the drain delay was waited out): the delay is never skipped here,
/// `force` only lifts the ownership check. `None` when there was nothing to clean.
pub async fn clean_now(ctx: &Ctx, release: &ReleaseName, min_age: Duration, force: bool) -> Result<Option<CleanReport>> {
    let request = CleanRequest {
        min_age,
        force: false,
        over_gitops: force,
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    Ok(with_kind!(clean::observe(ctx, release).await?, seen => {
        match clean::decide(&seen, now, &request, &ctx.chart)? {
            Some(plan) => Some(clean::act(ctx, &seen, plan).await?),
            None => None,
        }
    }))
}

/// What a one-release run says when its swap-back fails too: nothing else will say it. A run across
/// targets names the command that ends the mix on each target instead.
const CHECK_NOW: &str = "swapping back ALSO failed: check `bgslot status` now";

/// Moves production (and its workers) back to the slot it came from, with every check of a
/// rollback.
pub async fn swap_back(ctx: &Ctx, release: &ReleaseName, force: bool) -> Result<SwapReport> {
    let back = SwapRequest {
        kind: SwapKind::Rollback,
        expect_tag: None,
        force,
    };
    let read = swap::observe(ctx, release, SwapKind::Rollback).await?;
    with_kind!(read, seen => {
        let plan = swap::decide(&seen, &back, &ctx.chart)?;
        swap::act(ctx, &seen, plan).await
    })
}

/// What a verify command is pointed at.
struct Target {
    target: Role,
    url: String,
    service: String,
    slot: Slot,
}

impl Target {
    fn of_deploy(deployed: &DeployReport) -> Target {
        Target {
            target: deployed.role,
            url: deployed.url.clone(),
            service: deployed.service.clone().unwrap_or_default(),
            slot: deployed.slot,
        }
    }

    fn of_swap(swapped: &SwapReport) -> Target {
        Target {
            target: Role::Production,
            url: swapped.url.clone(),
            service: swapped.service.clone(),
            slot: swapped.to,
        }
    }
}

async fn run_verify(ctx: &Ctx, cmd: &VerifyCommand, target: &Target, version: &str, cluster: Option<&str>) -> Result<()> {
    let argv = &cmd.0;
    ctx.events.step(&format!("verify ({}): {cmd}", target.target));
    let mut command = tokio::process::Command::new(&argv[0]);
    if let Some(cluster) = cluster {
        command.env("BGSLOT_CLUSTER", cluster);
    }
    // Its output goes to stderr with bgslot's progress: stdout carries bgslot's result (JSON).
    let to_stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating stderr for the verify command")?;
    let status = command
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(to_stderr))
        .env("BGSLOT_TARGET", target.target.as_str())
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
fn plan<K: SlotKind>(
    ctx: &Ctx,
    args: &Args,
    seen: Option<&Seen<K>>,
    staging: &crate::slots::Staging<K::Plan>,
    deployed: Plan,
) -> Plan {
    let mut out = deployed;
    out.header.operation = Op::Release;
    let verify = |target: &str| {
        PlannedStep::action(format!(
            "verify against {target}: {}",
            args.verify_cmd.as_ref().map(ToString::to_string).unwrap_or_default()
        ))
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
    let values = &seen.release.values;
    let (from, to) = (seen.production(), staging.slot);
    let capacity = seen.slot(from).totals.desired.max(0) as u64;
    let promote = staging
        .preview
        .and_then(|n| swap::promotion(to, true, n, capacity, values.autoscaling));
    let flip = swap::plan_flip(SwapKind::Swap, from, to, values, &seen.release.cluster, &seen.followers, promote);
    out.steps.extend(swap::steps(ctx, seen, &flip));
    if args.verify_cmd.is_some() {
        out = out.step(verify("production (on failure: swap back)"));
    }
    if args.clean {
        if let Ok(Some(retiring)) = K::plan_retire(&ctx.chart, seen, from) {
            let mut steps = K::preview_retire(ctx, seen, &retiring);
            if let Some(first) = steps.first_mut() {
                first.action = format!("after the drain delay ({}s), {}", args.min_age.as_secs(), first.action);
            }
            out.steps.extend(steps);
        }
    }
    out
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReleaseReport {
    #[serde(flatten)]
    pub header: Header,
    pub mode: Mode,
    /// What production runs now.
    pub image: String,
    /// Where `--verify-cmd` passed: `stage`, `production`.
    pub verified: Vec<Role>,
    /// The reports of the deploy, swap and clean that ran, in order.
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Step {
    Deploy(DeployReport),
    Swap(SwapReport),
    Clean(CleanReport),
}

impl ReleaseReport {
    pub fn new(
        deployed: DeployReport,
        swapped: Option<SwapReport>,
        cleaned: Option<CleanReport>,
        verify: Option<&VerifyCommand>,
    ) -> ReleaseReport {
        let verified = match (&swapped, verify) {
            (_, None) => vec![],
            (None, Some(_)) => vec![Role::Production],
            (Some(_), Some(_)) => vec![Role::Stage, Role::Production],
        };
        // The header of the last step that ran says where the release stands.
        let last = match (&swapped, &cleaned) {
            (None, _) => &deployed.header,
            (Some(s), None) => &s.header,
            (Some(_), Some(c)) => &c.header,
        };
        let header = Header {
            operation: Op::Release,
            ..last.clone()
        };
        let image = swapped.as_ref().map(|s| s.image.clone()).unwrap_or_else(|| deployed.image.clone());
        let mode = deployed.mode;
        let steps = std::iter::once(Step::Deploy(deployed))
            .chain(swapped.map(Step::Swap))
            .chain(cleaned.map(Step::Clean))
            .collect();
        ReleaseReport {
            header,
            mode,
            image,
            verified,
            steps,
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
        let release = &self.header.release;
        let of = |r: &Option<String>| r.as_ref().map(|r| format!(" (release {r})")).unwrap_or_default();
        writeln!(
            f,
            "{release}: released {} in {}{}; production routes to it ({} ready endpoints)",
            swapped.image,
            swapped.to,
            of(&swapped.slot_release),
            swapped.ready_endpoints
        )?;
        if !self.verified.is_empty() {
            let verified: Vec<&str> = self.verified.iter().map(|r| r.as_str()).collect();
            writeln!(f, "  verified against {}", verified.join(" and "))?;
        }
        let cleaned = self.step(|s| match s {
            Step::Clean(c) => Some(c),
            _ => None,
        });
        match cleaned {
            Some(c) if c.slot_release.is_some() => writeln!(f, "  {}{} is uninstalled", c.slot, of(&c.slot_release))?,
            Some(c) => writeln!(f, "  {} is disabled", c.slot)?,
            None => writeln!(
                f,
                "  {} still runs the previous version{}: `bgslot rollback {release}` returns to it",
                swapped.from,
                of(&swapped.previous_release)
            )?,
        }
        writeln!(f, "\nnext: {}", self.header.next_step())
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
