//! `bgslot swap RELEASE`: routes production to the staged slot, if and only if that slot can take
//! production traffic now, then confirms the production Services really moved and the workers
//! followed. `rollback` is the same flip back to the previous slot. One flip for both kinds of
//! slot: a one-key write of the release (a router's slot releases are not touched). The decision
//! is `decide`, the writes and waits `act`, the report `report`.

use anyhow::Result;
use serde::Serialize;

pub mod act;
pub mod decide;
pub mod report;

pub use act::act;
pub use decide::{decide, flip_write, plan_flip, promotion, Promote, SwapPlan};
pub use report::SwapReport;

use super::preview::{self, Plan, PlannedStep};
use super::{mutate, Invocation, Mutating, Outcome, Session};
use crate::cluster::{ConfigRef, Followers};
use crate::context::Ctx;
use crate::names::{ReleaseName, Tag};
use crate::observe::History;
use crate::record::Recorded;
use crate::slots::{self, Seen, SlotKind};
use crate::vocab::{Op, Slot};
use crate::with_kind;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Mutating,
    /// Refuse unless the staged slot runs this image tag
    #[arg(long, value_name = "TAG")]
    pub expect_tag: Option<Tag>,
    /// Swap even when the Services' live selectors disagree with the release values (or a hand
    /// edit still owns one, with Helm 4), or when a GitOps controller owns the release
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub targets: super::Targets,
}

impl Args {
    pub async fn run(&self, run: &Invocation<'_>) -> Result<()> {
        let request = SwapRequest {
            kind: SwapKind::Swap,
            expect_tag: self.expect_tag.as_ref().map(Tag::to_string),
            force: self.force,
        };
        execute(run, &self.target, &request).await
    }
}

/// A swap, or the same flip back to the previous slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SwapKind {
    Swap,
    Rollback,
}

impl SwapKind {
    pub fn op(self) -> Op {
        match self {
            SwapKind::Swap => Op::Swap,
            SwapKind::Rollback => Op::Rollback,
        }
    }

    /// What the flip records in the helm history.
    pub fn record(self, from: Slot, to: Slot) -> Recorded {
        match self {
            SwapKind::Swap => Recorded::Swap { from, to },
            SwapKind::Rollback => Recorded::Rollback { from, to },
        }
    }
}

/// What a swap (or rollback) is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapRequest {
    pub kind: SwapKind,
    /// The tag (or, for a version pinned by digest, the digest) the staged slot must run.
    pub expect_tag: Option<String>,
    pub force: bool,
}

/// `swap` and `rollback`: observe, decide, then plan or act, under the lock.
pub async fn execute(run: &Invocation<'_>, target: &Mutating, request: &SwapRequest) -> Result<()> {
    let release = &target.release;
    mutate(run, target.mutation(request.kind.op()), async |s: &Session<'_>| {
        let read = observe(s.ctx, release, request.kind).await?;
        with_kind!(read, seen => {
            let plan = decide(&seen, request, &s.ctx.chart)?;
            if s.dry_run {
                return Ok(Outcome::Planned(preview(s.ctx, &seen, &plan)));
            }
            act(s.ctx, &seen, plan).await.map(Outcome::Done)
        })
    })
    .await
}

/// Reads the release; a rollback also reads the history, to know what the other slot holds (the
/// previous production, or a version staged since) and which revision `helm rollback` restores.
/// When the slot that would go live has workers, also which ConfigMaps and Secrets they need
/// are missing: their pods (none while staged) would not start.
pub async fn observe(ctx: &Ctx, release: &ReleaseName, kind: SwapKind) -> Result<slots::Read> {
    let need = match kind {
        SwapKind::Swap => History::Latest,
        SwapKind::Rollback => History::Full,
    };
    let mut read = slots::existing(ctx, release, need).await?;
    with_kind!(&mut read, seen => {
        let to = seen.stage();
        let mut required: Vec<ConfigRef> = seen
            .release
            .cluster
            .workers_of(to)
            .flat_map(|w| w.requires.iter().cloned())
            .collect();
        required.sort();
        required.dedup();
        if !required.is_empty() {
            seen.release.cluster.absent_config = ctx.cluster.absent(&required).await?;
        }
    });
    Ok(read)
}

/// What `--dry-run` shows: the promotion of a slot staged small, the flip, and the start of
/// stop-first workers, each with its helm command and what it changes.
pub fn preview<K: SlotKind>(ctx: &Ctx, seen: &Seen<K>, plan: &SwapPlan) -> Plan {
    let mut out = Plan::of(plan.kind.op(), &seen.release);
    for step in steps(ctx, seen, plan) {
        out = out.step(step);
    }
    out
}

/// What a swap then moves through the API (a router's workers and CronJobs), in order.
fn api_moves<K>(seen: &Seen<K>, plan: &SwapPlan) -> Vec<String> {
    let (from, to) = (plan.from, plan.to);
    let workloads = &seen.release.values.workloads;
    let size = |name: &str| plan.worker_capacity.iter().find(|(n, _)| n == name).map_or(0, |(_, n)| *n);
    let mut moves = Vec::new();
    if !workloads.cron_jobs.is_empty() {
        moves.push(format!("suspend the CronJobs of {from} ({}), then resume those of {to}", workloads.cron_jobs.join(", ")));
    }
    for w in &workloads.workers {
        let stage = w.stage_replicas[from];
        moves.push(if plan.stop_first.contains(&w.name) {
            format!("stop-first: scale the worker {} in {from} to 0; once its pods are gone, in {to} to {} (what it ran in {from}), then {from} to {stage}", w.name, size(&w.name))
        } else {
            format!("scale the worker {} in {to} to {} replicas (what it runs in {from}) and in {from} to {stage}", w.name, size(&w.name))
        });
    }
    moves
}

/// The planned writes of a swap, also shown by `release --dry-run`.
pub fn steps<K>(ctx: &Ctx, seen: &Seen<K>, plan: &SwapPlan) -> Vec<PlannedStep> {
    let (release, all_values) = (seen.name(), &seen.release.all_values);
    let shown = |write| ctx.helm.command_line(release, &ctx.chart.shown(), write);
    let (from, to) = (plan.from, plan.to);
    let mut steps = Vec::new();
    if let Some(p) = &plan.promote {
        let scale = p.autoscaled.then(|| format!("scale the {to} Deployment to {} replicas (its HPA owns replicas)", p.to));
        steps.push(
            PlannedStep::action(if p.grows() {
                format!("promote: bring {to} from {} to {} pods (production's capacity)", p.from, p.to)
            } else {
                format!("promote: end the preview of {to} (its {} pods cover production's capacity)", p.to)
            })
                .write(shown(&p.write), preview::changes(&p.write, all_values, &[], None))
                .then(scale.into_iter().chain([
                    format!("wait until the {to} Deployment is fully available and the stage Service lists its {} pods; else stop, production unchanged", p.to),
                ])),
        );
    }
    let by_api = seen.followers != Followers::Labelled;
    let sizes = plan
        .worker_capacity
        .iter()
        .filter(|(name, _)| !by_api && !plan.stop_first.contains(name))
        .map(|(name, n)| format!("scale the worker {name} in {to} to {n} replicas (what it runs in {from}; its HPA owns replicas)"));
    let serves = format!("wait until every production Service routes only to {to}'s ready pods{}", seen.slot(to).of_release());
    let moves = if by_api { api_moves(seen, plan) } else { Vec::new() };
    steps.push(
        PlannedStep::action(format!("{}: production {from} -> {to}", plan.kind.op()))
            .write(shown(&plan.write), preview::changes(&plan.write, all_values, &[], None))
            .effects(plan.effects.clone())
            .then(sizes.chain([serves]).chain(moves)),
    );
    if let Some(start) = &plan.start_workers {
        let names = plan.stop_first.join(", ");
        steps.push(
            PlannedStep::action(format!("stop-first: once the {from} pods of {names} are gone, start them in {to}"))
                .write(shown(start), preview::changes(start, all_values, &[], None)),
        );
    }
    if let Some(last) = steps.last_mut() {
        if !plan.effects.is_empty() {
            last.then.push(format!("wait until the workers run in {to} and have stopped in {from}"));
        }
    }
    steps
}
