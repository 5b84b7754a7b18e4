//! One release in several clusters, moved in lockstep: every command that acts on a release
//! (`deploy`, `swap`, `rollback`, `clean`, `release`, `status`, `history`, `recover`) run across
//! a set of targets, so that they all end on one version, or all back on the old one.
//!
//! It builds on the commands and never re-implements one: each target gets a [`Ctx`] of its own
//! (its kubeconfig, context and namespace) and runs the command's own steps (`decide`, `act`,
//! the verify runner and the swap-back of `release`). What it adds is the order: a read-only
//! preflight of every target (the command's own dry run), one Lease per cluster taken in the
//! canonical order of [`order`], the phases of a release across targets ([`release`]), the
//! compensation and the verdict of [`decide`], and one run ID in every helm revision written.
//! The targets come from a file or flags ([`targets`]); what it reports is [`report`].

use std::sync::Arc;

use anyhow::{Context, Result};
use futures::future::join_all;

pub mod decide;
pub mod order;
pub mod report;
pub mod targets;

mod each;
mod ending;
mod look;
mod release;
mod staging;

use crate::commands::release::{landed_on, swap_back};
use crate::commands::swap::SwapReport;
use crate::commands::{Command, Invocation, Ui};
use crate::context::Ctx;
use crate::error::{ExitStatus, UsageError};
use crate::events::{Event, Events, Rollout};
use crate::names::ReleaseName;
use crate::record::{RunId, RunStamp};
use crate::signals;
use crate::vocab::{Op, Slot};
use decide::{Moved, Phase, Standing, Stop};
pub(crate) use ending::Ending;
use report::TargetRow;
use targets::Resolved;

/// Runs `command` across the targets it was given (`Command::targets`).
pub async fn run(command: &Command, invocation: &Invocation<'_>) -> Result<()> {
    let Some(given) = command.targets() else {
        return command.run(invocation).await;
    };
    let (op, release) = match command {
        Command::Status(a) => (Op::Status, &a.release),
        Command::History(a) => (Op::History, &a.release),
        Command::Deploy(a) => (Op::Deploy, &a.target.release),
        Command::Swap(a) => (Op::Swap, &a.target.release),
        Command::Rollback(a) => (Op::Rollback, &a.target.release),
        Command::Clean(a) => (Op::Clean, &a.target.release),
        Command::Release(a) => (Op::Release, &a.target.release),
        Command::Recover(a) => (Op::Recover, &a.target.release),
        _ => return command.run(invocation).await,
    };
    let members = targets::load(given, release, invocation.settings)?;
    let stamp = RunStamp {
        id: new_run_id(),
        targets: members.len(),
    };
    let mut run = Run::new(op, release, stamp, members, invocation.ui);
    run.flags = flags_of(given);
    run.rerun = rerun_of(op, std::env::args().skip(1));
    match command {
        Command::Status(a) => look::status(&mut run, a).await,
        Command::History(_) => look::history(&mut run).await,
        Command::Deploy(a) => each::deploy(&mut run, a).await,
        Command::Swap(a) => each::swap(&mut run, &a.target, a.expect_tag.as_ref(), a.force).await,
        Command::Rollback(a) => each::rollback(&mut run, &a.target, a.force).await,
        Command::Clean(a) => each::clean(&mut run, a).await,
        Command::Release(a) => release::release(&mut run, a).await,
        Command::Recover(a) => each::recover(&mut run, a).await,
        _ => unreachable!("only the commands above take targets"),
    }
}

/// The target flags as given, for the commands a report suggests.
fn flags_of(given: &crate::commands::Targets) -> String {
    match &given.targets {
        Some(path) => format!(
            "--targets {}",
            crate::names::shell_words(&[path.to_string_lossy()])
        ),
        None => given
            .target
            .iter()
            .map(|t| {
                format!(
                    "--target {}",
                    crate::names::shell_words(&[format!("{}={}", t.name, t.context)])
                )
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// This run's command line as typed, to run again where the new version is missing; a release
/// again with `--allow-mixed`, since the targets no longer start on one version.
fn rerun_of(op: Op, args: impl Iterator<Item = String>) -> String {
    let mut words: Vec<String> = std::iter::once("bgslot".to_string()).chain(args).collect();
    if op == Op::Release && !words.iter().any(|w| w == "--allow-mixed") {
        words.push("--allow-mixed".into());
    }
    crate::names::shell_words(&words)
}

/// `20261206T181714Z-7f3a`: when the run started, and a salt from the pid and the clock.
fn new_run_id() -> RunId {
    let now = k8s_openapi::jiff::Timestamp::now();
    let time = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    let salt = (std::process::id()
        ^ now.subsec_nanosecond() as u32
        ^ (now.subsec_nanosecond() as u32 >> 16)) as u16;
    RunId::new(&time, salt)
}

/// The progress of one target, each line and bar labelled with its name.
struct Labelled {
    name: String,
    inner: Arc<dyn Events>,
}

impl Events for Labelled {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Step(text) => self.inner.step(&format!("[{}] {text}", self.name)),
            Event::Command(text) => self
                .inner
                .event(Event::Command(&format!("[{}] {text}", self.name))),
            Event::Warning(text) => self.inner.warning(&format!("[{}] {text}", self.name)),
            Event::Rollout(r) => self.inner.event(Event::Rollout(&self.labelled(r))),
            Event::RolloutDone(r) => self.inner.event(Event::RolloutDone(&self.labelled(r))),
        }
    }
}

impl Labelled {
    fn labelled(&self, rollout: &Rollout) -> Rollout {
        Rollout {
            target: Some(self.name.clone()),
            ..rollout.clone()
        }
    }
}

/// A run across the targets: who they are, what each was left as, and what it reports.
pub(crate) struct Run<'a> {
    pub op: Op,
    pub release: &'a ReleaseName,
    pub stamp: RunStamp,
    pub members: Vec<Resolved>,
    pub standings: Vec<Standing>,
    /// Each target's own report (and its text), once it has one.
    pub reports: Vec<Option<(report::TargetReport, String)>>,
    /// Why it stopped, a line per target and cause.
    pub causes: Vec<String>,
    /// The target flags as given (`--targets FILE`), for the next commands.
    pub flags: String,
    /// This run again (see [`rerun_of`]).
    pub rerun: String,
    /// The preflight met another run's Lease: it is checked again under the Leases.
    recheck: bool,
    ui: &'a dyn Ui,
    events: Arc<dyn Events>,
}

impl<'a> Run<'a> {
    fn new(
        op: Op,
        release: &'a ReleaseName,
        stamp: RunStamp,
        members: Vec<Resolved>,
        ui: &'a dyn Ui,
    ) -> Run<'a> {
        let n = members.len();
        let mut members = members;
        for m in &mut members {
            m.settings.run = Some(stamp.clone());
        }
        Run {
            op,
            release,
            stamp,
            members,
            standings: vec![Standing::new(None); n],
            reports: vec![None; n],
            causes: Vec::new(),
            flags: String::new(),
            rerun: String::new(),
            recheck: false,
            events: ui.events(),
            ui,
        }
    }

    pub fn name(&self, i: usize) -> &str {
        self.members[i].spec.name.as_str()
    }

    /// A line of the run's own progress.
    pub fn step(&self, line: &str) {
        self.events.step(line);
    }

    /// `release web across 2 targets`.
    pub fn what(&self) -> String {
        format!(
            "{} {} across {} targets",
            self.op,
            self.release,
            self.members.len()
        )
    }

    pub fn ui(&self) -> &dyn Ui {
        self.ui
    }

    /// Connects to every target at once; `None` (each failure recorded) when one cannot be
    /// reached or its helm found.
    pub async fn connect(&mut self) -> Option<Vec<Ctx>> {
        let ctxs = self.connect_each().await;
        ctxs.into_iter().collect()
    }

    /// Connects to every target at once; `None` for each that cannot be reached (recorded).
    pub async fn connect_each(&mut self) -> Vec<Option<Ctx>> {
        // Only a run that may write has a run ID worth naming.
        let run = match self.op {
            Op::Status | Op::History => String::new(),
            _ => format!(" (run {})", self.stamp.id),
        };
        self.step(&format!(
            "{}{run}: {}",
            self.what(),
            self.members
                .iter()
                .map(|m| format!(
                    "{} ({}, namespace {})",
                    m.spec.name, m.spec.context, m.key.namespace
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let connected = join_all(self.members.iter().map(|m| {
            let events: Arc<dyn Events> = Arc::new(Labelled {
                name: m.spec.name.to_string(),
                inner: self.events.clone(),
            });
            Ctx::connect(&m.settings, events)
        }))
        .await;
        let mut ctxs = Vec::new();
        for (i, result) in connected.into_iter().enumerate() {
            match result {
                Ok(ctx) => ctxs.push(Some(ctx)),
                Err(err) => {
                    self.fail(i, &err);
                    ctxs.push(None);
                }
            }
        }
        ctxs
    }

    /// Records what went wrong on target `i`.
    pub fn fail(&mut self, i: usize, err: &anyhow::Error) {
        let line = format!("{err:#}").replace('\n', " ");
        self.standings[i].error = Some(match self.standings[i].error.take() {
            Some(before) => format!("{before}; then: {line}"),
            None => line,
        });
        self.causes.push(format!("{}: {err:#}", self.name(i)));
    }

    /// Records target `i`'s own report.
    pub fn report<R: Clone + std::fmt::Display + Into<report::TargetReport>>(
        &mut self,
        i: usize,
        report: &R,
    ) {
        let text = report.to_string();
        self.reports[i] = Some((report.clone().into(), text));
    }

    pub fn enter(&mut self, i: usize, phase: Phase) {
        self.standings[i].phase = phase;
    }

    /// A swap that failed on target `i`, on its way `to` a slot (`None`: refused before its
    /// write): whether production moved decides whether it goes back. It is read again even when
    /// the Lease was lost (a read is not a write): a flip written before the loss is named, and
    /// its swap-back, fenced, writes nothing. A target that cannot be read again may have moved:
    /// it is counted as moved (swapped back, or named in a mix).
    pub async fn unswapped(
        &mut self,
        ctx: &Ctx,
        i: usize,
        err: anyhow::Error,
        to: Option<Slot>,
        version: &str,
    ) {
        self.fail(i, &err);
        let Some(to) = to else {
            return;
        };
        let landed = match landed_on(ctx, self.release, to, &err).await {
            Ok(landed) => landed,
            Err(read) => {
                self.fail(i, &read);
                true
            }
        };
        if landed {
            self.standings[i].moved = Some(Moved::Swap);
            self.standings[i].production = Some((to, version.to_string()));
        }
    }

    /// Swaps back every target production moved to, the last first (one rollback each, with its
    /// checks), each back on the version `before` names; a second signal stops it at once. Returns
    /// each target's rollback report, where one ran.
    pub async fn swap_back_all(
        &mut self,
        ctxs: &[Ctx],
        force: bool,
        before: &[Option<(Slot, String)>],
    ) -> Vec<Option<SwapReport>> {
        let mut backs = vec![None; ctxs.len()];
        let order = decide::swap_back_order(&self.standings);
        if order.is_empty() {
            return backs;
        }
        let names: Vec<&str> = order.iter().map(|&i| self.name(i)).collect();
        self.step(&format!(
            "swapping back, the last swapped first: {}",
            names.join(", ")
        ));
        for (k, &i) in order.iter().enumerate() {
            if halting() {
                self.causes.push(format!(
                    "a second signal stopped the swap-back before {}",
                    self.name(i)
                ));
                // Each target still to go back is left in the swap-back, on the new version.
                for &left in &order[k..] {
                    self.enter(left, Phase::SwapBack);
                }
                break;
            }
            self.enter(i, Phase::SwapBack);
            match swap_back(&ctxs[i], self.release, force)
                .await
                .context("swapping back failed")
            {
                Ok(back) => {
                    let standing = &mut self.standings[i];
                    standing.moved = None;
                    standing.swapped_back = true;
                    standing.production = before[i].clone().or(Some((back.to, String::new())));
                    backs[i] = Some(back);
                }
                Err(err) => self.fail(i, &err),
            }
        }
        backs
    }

    /// The preflight: `check` (the command's own dry run on every target, read-only), split into
    /// what passed and what failed. A failure on a target whose Lease another bgslot holds is
    /// that run in the way, not this release: it is checked again under the Leases
    /// ([`Run::locked`]), which then wait for it (or stop with exit 4). Any other failure ends
    /// the run (exit 3, or 1 for a target that could not be read): nothing was changed.
    pub async fn checked<T, F, Fut>(&mut self, ctxs: &[Ctx], dry_run: bool, check: &F) -> Passed<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Vec<Result<T>>>,
    {
        self.step("preflight: every target's own dry run, at once");
        let (ok, failures) = self.split(check().await);
        if failures.is_empty() {
            return Passed::Go(ok);
        }
        // A dry run takes no Lease: it reports what it found.
        if !dry_run && self.held_elsewhere(ctxs).await {
            self.step(
                "preflight: another bgslot is working on a target; checking again under the locks",
            );
            self.recheck = true;
            // What failed is that run in the way, for now: what the check under the Leases
            // finds is what the run reports (a Lease that cannot be taken leads an exit 4).
            for standing in &mut self.standings {
                standing.error = None;
            }
            self.causes.clear();
            return Passed::Go(ok);
        }
        Passed::Ended(self.refused(&failures))
    }

    /// The Leases, then, when one was waited for (the releases may have changed meanwhile) or the
    /// preflight met another run, the preflight again under them; a failure then releases them
    /// and ends the run with nothing changed.
    pub async fn locked<T, F, Fut>(&mut self, ctxs: &[Ctx], passed: Vec<T>, check: &F) -> Passed<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Vec<Result<T>>>,
    {
        if let Err(stop) = self.lock(ctxs).await {
            return Passed::Ended(self.finish(Some(stop), Ending::default()));
        }
        let waited = self
            .members
            .iter()
            .any(|m| m.settings.wait_for_lock.is_some());
        if !self.recheck && !waited {
            return Passed::Go(passed);
        }
        for standing in &mut self.standings {
            standing.error = None;
        }
        self.causes.clear();
        self.step("preflight again, under the locks");
        let (ok, failures) = self.split(check().await);
        if failures.is_empty() {
            return Passed::Go(ok);
        }
        self.unlock(ctxs).await;
        Passed::Ended(self.refused(&failures))
    }

    /// The preflight met another run: what it found is only known under the Leases.
    pub fn recheck_pending(&self) -> bool {
        self.recheck
    }

    /// Each target's outcome: what passed (every one, in order, when none failed), and the
    /// failures (recorded).
    fn split<T>(&mut self, found: Vec<Result<T>>) -> (Vec<T>, Vec<anyhow::Error>) {
        let mut ok = Vec::new();
        let mut failures = Vec::new();
        for (i, result) in found.into_iter().enumerate() {
            match result {
                Ok(t) => ok.push(t),
                Err(err) => {
                    self.fail(i, &err);
                    failures.push(err);
                }
            }
        }
        (ok, failures)
    }

    /// Whether another bgslot holds the Lease of every target whose preflight failed now: a
    /// failure where no other run works is this release's own.
    async fn held_elsewhere(&self, ctxs: &[Ctx]) -> bool {
        let failed: Vec<usize> = (0..ctxs.len())
            .filter(|&i| self.standings[i].error.is_some())
            .collect();
        let held = join_all(failed.iter().map(|&i| {
            crate::lock::holder(ctxs[i].client.clone(), &ctxs[i].namespace, self.release)
        }))
        .await;
        !failed.is_empty() && held.into_iter().all(|h| matches!(h, Ok(Some(_))))
    }

    /// Makes each target's namespace where it is missing (`--create-namespace`: the Leases live
    /// there); at the first that cannot be made, the run's end.
    pub async fn create_namespaces(&mut self, ctxs: &[Ctx]) -> Result<(), Result<()>> {
        for (i, ctx) in ctxs.iter().enumerate() {
            if let Err(err) = ctx.cluster.create_namespace_if_missing(false).await {
                self.fail(i, &err);
                return Err(self.finish(Some(Stop::Lock { held: false }), Ending::default()));
            }
        }
        Ok(())
    }

    /// Takes every target's Lease, in the canonical order of their keys; at the first that
    /// cannot be taken, releases those taken and says why.
    pub async fn lock(&mut self, ctxs: &[Ctx]) -> Result<(), Stop> {
        let keys: Vec<order::Key> = self.members.iter().map(|m| m.key.clone()).collect();
        let order = order::lock_order(&keys);
        self.step(&format!(
            "taking the release locks in their canonical order: {}",
            order
                .iter()
                .map(|&i| self.name(i).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let mut taken: Vec<usize> = Vec::new();
        for i in order {
            self.enter(i, Phase::Lock);
            if let Err(err) = ctxs[i].lock(self.release, self.op).await {
                let held = ExitStatus::of(&err) == ExitStatus::Locked;
                self.fail(i, &err);
                for &t in taken.iter().rev() {
                    ctxs[t].unlock().await;
                }
                if !taken.is_empty() {
                    self.step(&format!(
                        "released the locks taken: {}",
                        taken
                            .iter()
                            .map(|&t| self.name(t).to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                return Err(Stop::Lock { held });
            }
            taken.push(i);
        }
        Ok(())
    }

    /// Releases every Lease still held.
    pub async fn unlock(&self, ctxs: &[Ctx]) {
        join_all(ctxs.iter().map(|c| c.unlock())).await;
    }

    /// The command line that runs `command` on target `i` alone.
    pub fn command_on(&self, i: usize, command: &str) -> String {
        let m = &self.members[i];
        let mut line = format!(
            "bgslot {command} {} --kube-context {} -n {}",
            self.release,
            crate::names::shell_words(&[&m.spec.context]),
            m.key.namespace
        );
        if let Some(kubeconfig) = &m.settings.kubeconfig {
            line.push_str(&format!(
                " --kubeconfig {}",
                crate::names::shell_words(&[kubeconfig.to_string_lossy()])
            ));
        }
        line
    }

    /// The rows of the report, with the commands that end a mix.
    pub fn rows(&self, commands: &[Option<String>]) -> Vec<TargetRow> {
        self.members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut row = TargetRow::new(
                    m.spec.name.as_str(),
                    &m.spec.context,
                    &m.key.namespace,
                    &self.standings[i],
                );
                row.command = commands.get(i).cloned().flatten();
                if let Some((report, text)) = &self.reports[i] {
                    row.report = Some(report.clone());
                    row.text = Some(text.clone());
                }
                row
            })
            .collect()
    }
}

/// What the preflight (or the Leases) let through: every target's outcome, in order, or the
/// run's end.
pub(crate) enum Passed<T> {
    Go(Vec<T>),
    Ended(Result<()>),
}

/// A first SIGINT/SIGTERM stops forward progress.
fn stopping() -> bool {
    signals::count() >= 1
}

/// A second one stops at once, compensation included.
fn halting() -> bool {
    signals::count() >= 2
}

/// A usage error for what a run across targets cannot do.
fn unsupported(what: &str) -> anyhow::Error {
    UsageError(what.to_string()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_again_is_the_command_line_as_typed_and_a_release_allows_the_mix_it_left() {
        let args = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        assert_eq!(
            rerun_of(
                Op::Release,
                args(&[
                    "release",
                    "web",
                    "--tag",
                    "v7",
                    "--targets",
                    "my targets.yaml"
                ])
                .into_iter()
            ),
            "bgslot release web --tag v7 --targets 'my targets.yaml' --allow-mixed"
        );
        assert_eq!(
            rerun_of(
                Op::Release,
                args(&[
                    "release",
                    "web",
                    "--tag",
                    "v7",
                    "--allow-mixed",
                    "--target",
                    "eu=a"
                ])
                .into_iter()
            ),
            "bgslot release web --tag v7 --allow-mixed --target eu=a"
        );
        assert_eq!(
            rerun_of(
                Op::Deploy,
                args(&["deploy", "web", "--tag", "v7"]).into_iter()
            ),
            "bgslot deploy web --tag v7"
        );
    }
}
