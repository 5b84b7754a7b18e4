//! The other mutating commands across targets, each its own steps on every target: a preflight
//! that is the command's own dry run on each (a refusal anywhere changes nothing anywhere), the
//! Leases in canonical order, then `deploy`, `clean` and `recover` on every target at once,
//! `swap` in waves in listed order (a failure swaps back what it swapped, the last first), and
//! `rollback` in reverse listed order.

use anyhow::Result;
use futures::future::join_all;

use super::decide::{self, Moved, Phase, Standing, Stop};
use super::report::TargetReport;
use super::staging::{deploy_each, own_requests};
use super::{halting, stopping, Ending, Passed, Run};
use crate::commands::release::{self as cmd, PreparedSwap};
use crate::commands::swap::{SwapKind, SwapRequest};
use crate::commands::{clean, deploy, recover, Mutating, Outcome, Session};
use crate::context::Ctx;
use crate::error;
use crate::names::Tag;
use crate::slots::{Seen, SlotKind};
use crate::vocab::{Op, Slot};
use crate::{with_kind, with_target};

/// A dry run's ending: each target's plan, nothing changed.
fn planned(run: &Run<'_>) -> Ending {
    Ending {
        summary: format!(
            "{} (dry run): each target's plan; nothing was changed",
            run.what()
        ),
        ..Ending::default()
    }
}

/// Production's slot and the version it serves.
fn production_of<K: SlotKind>(seen: &Seen<K>) -> (Slot, String) {
    (seen.production(), seen.slot(seen.production()).tag.clone())
}

/// A dry run's plan, or the report of a command that had nothing to do.
fn outcome_report<R: Into<TargetReport> + Clone + std::fmt::Display>(
    run: &mut Run<'_>,
    i: usize,
    outcome: &Outcome<R>,
) {
    match outcome {
        Outcome::Planned(plan) => run.report(i, plan),
        Outcome::Done(report) => run.report(i, report),
    }
}

pub async fn deploy(run: &mut Run<'_>, args: &deploy::Args) -> Result<()> {
    let base = args.image.request(args.force);
    let requests = own_requests(run, &base);
    let Some(ctxs) = run.connect().await else {
        return run.unreachable();
    };
    let release = run.release;
    let create = args.image.create_namespace;
    let check = || {
        join_all(ctxs.iter().zip(&requests).map(|(ctx, request)| async move {
            let creates_namespace = create && ctx.cluster.create_namespace_if_missing(true).await?;
            let s = Session::new(ctx, release, Op::Deploy, true, creates_namespace);
            let target = deploy::target(&s, request).await?;
            with_target!(target, seen => {
                let production = seen.as_ref().map(production_of);
                let plan = deploy::execute(&s, seen.as_ref(), request).await?;
                Ok((production, plan))
            })
        }))
    };
    let found = match run.checked(&ctxs, args.target.dry_run, &check).await {
        Passed::Go(found) => found,
        Passed::Ended(ended) => return ended,
    };
    if args.target.dry_run {
        for (i, (production, plan)) in found.iter().enumerate() {
            run.standings[i].production = production.clone();
            outcome_report(run, i, plan);
        }
        let ending = planned(run);
        return run.finish(None, ending);
    }
    if create {
        if let Err(ended) = run.create_namespaces(&ctxs).await {
            return ended;
        }
    }
    let found = match run.locked(&ctxs, found, &check).await {
        Passed::Go(found) => found,
        Passed::Ended(ended) => return ended,
    };
    for (i, (production, _)) in found.into_iter().enumerate() {
        run.standings[i].production = production;
    }
    let deployed = deploy_each(run, &ctxs, &requests, Op::Deploy).await;
    run.unlock(&ctxs).await;
    let failed = deployed.iter().any(Option::is_none);
    for (i, d) in deployed.iter().enumerate() {
        if let Some(d) = d {
            run.enter(i, Phase::Done);
            run.report(i, d);
        }
    }
    let what = run.what();
    let version = base.version.recorded();
    if failed {
        let lead = format!("{what} failed: the deploy did not finish on every target");
        let ending = run.unswapped_ending(&lead, &version);
        return run.finish(Some(Stop::After), ending);
    }
    let ending = Ending::done(
        format!(
            "{what} (run {}): {version} is ready on every target",
            run.stamp.id
        ),
        format!("bgslot swap {release} {} --expect-tag {version}", run.flags),
    );
    run.finish(None, ending)
}

/// Each target's production and the version a swap or rollback would move it to.
type Versions = Vec<((Slot, String), String)>;

/// The connections, the preflight of a swap or rollback on every target (its own decision,
/// nothing written) and the Leases: each target's production and the version it would move to,
/// or the run's end (a target unreachable, a refusal, or a dry run's plans printed).
async fn prepared(
    run: &mut Run<'_>,
    request: &SwapRequest,
    dry_run: bool,
) -> Result<(Vec<Ctx>, Versions), Result<()>> {
    let Some(connected) = run.connect().await else {
        return Err(run.unreachable());
    };
    let ctxs = &connected[..];
    let release = run.release;
    let check = || {
        join_all(
            ctxs.iter()
                .map(|ctx| cmd::prepare_swap(ctx, release, request)),
        )
    };
    let found = match run.checked(ctxs, dry_run, &check).await {
        Passed::Go(found) => found,
        Passed::Ended(ended) => return Err(ended),
    };
    if dry_run {
        for (i, p) in found.iter().enumerate() {
            run.standings[i].production = Some(p.versions().0);
            run.report(i, &p.preview(&ctxs[i]));
        }
        let ending = planned(run);
        return Err(run.finish(None, ending));
    }
    let found = match run.locked(ctxs, found, &check).await {
        Passed::Go(found) => found,
        Passed::Ended(ended) => return Err(ended),
    };
    let versions: Versions = found.iter().map(PreparedSwap::versions).collect();
    for (i, (production, _)) in versions.iter().enumerate() {
        run.standings[i].production = Some(production.clone());
    }
    Ok((connected, versions))
}

/// `swap` across targets: decided on every target first, then in waves under the Leases; a
/// failure swaps back the targets already swapped, the last first.
pub async fn swap(
    run: &mut Run<'_>,
    target: &Mutating,
    expect_tag: Option<&Tag>,
    force: bool,
) -> Result<()> {
    let request = SwapRequest {
        kind: SwapKind::Swap,
        expect_tag: expect_tag.map(Tag::to_string),
        force,
    };
    let (ctxs, versions) = match prepared(run, &request, target.dry_run).await {
        Ok(prepared) => prepared,
        Err(ended) => return ended,
    };
    let release = run.release;
    let what = run.what();
    let n = ctxs.len();
    let mut failure = None;
    for i in 0..n {
        let name = run.name(i).to_string();
        if stopping() {
            run.causes
                .push(format!("a signal stopped the waves before {name}"));
            failure = Some(format!("stopped by a signal before the swap of {name}"));
            break;
        }
        run.step(&format!("swap, wave {} of {n}: {name}", i + 1));
        run.enter(i, Phase::Swap);
        // Decided again right before its write: the waves before it took a while.
        let swapped = match cmd::prepare_swap(&ctxs[i], release, &request).await {
            Ok(p) => {
                let to = p.to();
                cmd::act_swap(&ctxs[i], p)
                    .await
                    .map_err(|u| (u.err, Some(to)))
            }
            Err(err) => Err((err, None)),
        };
        match swapped {
            Ok(report) => {
                run.standings[i].moved = Some(Moved::Swap);
                run.standings[i].production = Some((report.to, versions[i].1.clone()));
                run.enter(i, Phase::Done);
                run.report(i, &report);
            }
            Err((err, to)) => {
                run.unswapped(&ctxs[i], i, err, to, &versions[i].1).await;
                failure = Some(format!("the swap of {name} failed"));
                break;
            }
        }
    }
    if let Some(failure) = failure {
        let before: Vec<_> = versions
            .iter()
            .map(|(production, _)| Some(production.clone()))
            .collect();
        run.swap_back_all(&ctxs, force, &before).await;
        run.unlock(&ctxs).await;
        let ending = mix_ending(run, &format!("{what} failed: {failure}"));
        return run.finish(Some(Stop::After), ending);
    }
    run.unlock(&ctxs).await;
    let flags = run.flags.clone();
    let ending = Ending::done(
        format!("{what} (run {}): every target swapped", run.stamp.id),
        format!("bgslot clean {release} {flags}   (or: bgslot rollback {release} {flags})"),
    );
    run.finish(None, ending)
}

/// The ending of a run whose moves failed: a mix, with the `rollback` that ends it on each target
/// that needs one (a swap's targets still on the new version, a rollback's not yet back), or
/// every target back where it was.
fn mix_ending(run: &Run<'_>, lead: &str) -> Ending {
    if !decide::left_mixed(&run.standings) && !decide::unreturned(&run.standings) {
        return Ending::failed(format!("{lead}; every target serves what it served before"));
    }
    let needs = |s: &Standing| match run.op {
        Op::Rollback => s.moved.is_none(),
        _ => s.moved.is_some(),
    };
    let commands: Vec<Option<String>> = (0..run.members.len())
        .map(|i| needs(&run.standings[i]).then(|| run.command_on(i, "rollback")))
        .collect();
    run.mixed(lead, commands)
}

/// `rollback` across targets: every target able to roll back (decided first), then in reverse
/// listed order; one that fails does not stop the others, and a mix is named.
pub async fn rollback(run: &mut Run<'_>, target: &Mutating, force: bool) -> Result<()> {
    let request = SwapRequest {
        kind: SwapKind::Rollback,
        expect_tag: None,
        force,
    };
    let (ctxs, versions) = match prepared(run, &request, target.dry_run).await {
        Ok(prepared) => prepared,
        Err(ended) => return ended,
    };
    let release = run.release;
    let what = run.what();
    let mut failed = Vec::new();
    for i in (0..ctxs.len()).rev() {
        let name = run.name(i).to_string();
        // Rolling back is the way back: a first signal lets it go on, a second stops it.
        if halting() {
            run.causes.push(format!(
                "a second signal stopped the rollback before {name}"
            ));
            failed.push(name);
            continue;
        }
        run.enter(i, Phase::Swap);
        let rolled = match cmd::prepare_swap(&ctxs[i], release, &request).await {
            Ok(p) => cmd::act_swap(&ctxs[i], p).await.map_err(|u| u.err),
            Err(err) => Err(err),
        };
        match rolled {
            Ok(report) => {
                run.standings[i].moved = Some(Moved::Swap);
                run.standings[i].production = Some((report.to, versions[i].1.clone()));
                run.enter(i, Phase::Done);
                run.report(i, &report);
            }
            Err(err) => {
                run.fail(i, &err);
                failed.push(name);
            }
        }
    }
    run.unlock(&ctxs).await;
    if !failed.is_empty() {
        let ending = mix_ending(run, &format!("{what} failed on {}", failed.join(", ")));
        return run.finish(Some(Stop::After), ending);
    }
    let ending = Ending::done(
        format!("{what} (run {}): every target rolled back", run.stamp.id),
        format!("bgslot status {release} {}", run.flags),
    );
    run.finish(None, ending)
}

pub async fn clean(run: &mut Run<'_>, args: &clean::Args) -> Result<()> {
    let request = clean::CleanRequest {
        min_age: args.min_age,
        force: args.force,
        over_gitops: args.force,
    };
    let Some(ctxs) = run.connect().await else {
        return run.unreachable();
    };
    let release = run.release;
    let request = &request;
    let each = |dry_run: bool| {
        join_all(ctxs.iter().map(move |ctx| async move {
            let s = Session::new(ctx, release, Op::Clean, dry_run, false);
            let read = clean::observe(ctx, release).await?;
            with_kind!(read, seen => {
                let production = production_of(&seen);
                let outcome = clean::execute(&s, &seen, request)
                    .await
                    .map_err(|err| error::after_writes(err, ctx.written()))?;
                Ok((production, outcome))
            })
        }))
    };
    let check = || each(true);
    let found = match run.checked(&ctxs, args.target.dry_run, &check).await {
        Passed::Go(found) => found,
        Passed::Ended(ended) => return ended,
    };
    if args.target.dry_run {
        for (i, (production, outcome)) in found.iter().enumerate() {
            run.standings[i].production = Some(production.clone());
            outcome_report(run, i, outcome);
        }
        let ending = planned(run);
        return run.finish(None, ending);
    }
    let found = match run.locked(&ctxs, found, &check).await {
        Passed::Go(found) => found,
        Passed::Ended(ended) => return ended,
    };
    for (i, (production, _)) in found.into_iter().enumerate() {
        run.standings[i].production = Some(production);
    }
    run.step("clean: every target at once");
    for i in 0..ctxs.len() {
        run.enter(i, Phase::Clean);
    }
    let cleaned = each(false).await;
    run.unlock(&ctxs).await;
    let mut failed = Vec::new();
    for (i, result) in cleaned.into_iter().enumerate() {
        match result {
            Ok((_, Outcome::Done(report))) => {
                run.enter(i, Phase::Done);
                run.report(i, &report);
            }
            Ok((_, Outcome::Planned(_))) => unreachable!("not a dry run"),
            Err(err) => {
                run.fail(i, &err);
                failed.push(run.name(i).to_string());
            }
        }
    }
    let what = run.what();
    if !failed.is_empty() {
        let ending = Ending::failed(format!(
                "{what} failed on {}: production is unchanged everywhere; the old slot still runs where the clean failed",
                failed.join(", ")
            ));
        return run.finish(Some(Stop::After), ending);
    }
    let ending = Ending::done(
        format!(
            "{what} (run {}): the old slot is empty on every target",
            run.stamp.id
        ),
        format!("bgslot release {release} --tag NEW_TAG {}", run.flags),
    );
    run.finish(None, ending)
}

pub async fn recover(run: &mut Run<'_>, args: &recover::Args) -> Result<()> {
    let Some(ctxs) = run.connect().await else {
        return run.unreachable();
    };
    let release = run.release;
    let each = |dry_run: bool| {
        join_all(ctxs.iter().map(move |ctx| async move {
            let s = Session::new(ctx, release, Op::Recover, dry_run, false);
            recover::execute(&s, args)
                .await
                .map_err(|err| error::after_writes(err, ctx.written()))
        }))
    };
    let check = || each(true);
    let found = match run.checked(&ctxs, args.target.dry_run, &check).await {
        Passed::Go(found) => found,
        Passed::Ended(ended) => return ended,
    };
    if args.target.dry_run {
        for (i, outcome) in found.iter().enumerate() {
            outcome_report(run, i, outcome);
        }
        let ending = planned(run);
        return run.finish(None, ending);
    }
    if let Passed::Ended(ended) = run.locked(&ctxs, found, &check).await {
        return ended;
    }
    for i in 0..ctxs.len() {
        run.enter(i, Phase::Done);
    }
    let recovered = each(false).await;
    run.unlock(&ctxs).await;
    let mut failed = Vec::new();
    for (i, result) in recovered.into_iter().enumerate() {
        match result {
            Ok(Outcome::Done(report)) => run.report(i, &report),
            Ok(Outcome::Planned(_)) => unreachable!("not a dry run"),
            Err(err) => {
                run.fail(i, &err);
                failed.push(run.name(i).to_string());
            }
        }
    }
    let what = run.what();
    if !failed.is_empty() {
        let ending = Ending::failed(format!("{what} failed on {}", failed.join(", ")));
        return run.finish(Some(Stop::After), ending);
    }
    let ending = Ending::done(
        format!("{what} (run {})", run.stamp.id),
        format!("bgslot status {release} {}", run.flags),
    );
    run.finish(None, ending)
}
