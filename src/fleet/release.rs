//! `bgslot release` across targets, in phases: a read-only preflight of every target (its own
//! dry run, and a refused mixed start); the Leases in canonical order; the deploy on every target
//! at once, then the stage verified on each; the swaps, in waves in listed order (production
//! verified after each) or all together; on a failed swap or production check, every target
//! already swapped swapped back, the last first; and with `--clean`, the clean everywhere after
//! the drain delay. The steps are `release`'s own.

use anyhow::Result;
use futures::future::join_all;

use super::decide::{self, Moved, Phase, Stop};
use super::staging::{deploy_each, own_requests};
use super::{stopping, Ending, Passed, Run};
use crate::commands::deploy::{self, DeployReport};
use crate::commands::release::{self as cmd, Args, ReleaseReport, Step, SwapOrder};
use crate::commands::swap::{SwapKind, SwapReport, SwapRequest};
use crate::commands::{Outcome, Session};
use crate::context::Ctx;
use crate::error::Refusal;
use crate::slots::DeployRequest;
use crate::vocab::{Op, Slot};
use crate::{wait, with_target};

pub async fn release(run: &mut Run<'_>, args: &Args) -> Result<()> {
    let base = args.image.request(args.force);
    let requests = own_requests(run, &base);
    let Some(ctxs) = run.connect().await else {
        return run.unreachable();
    };
    let release = run.release;
    let check = || {
        join_all(
            ctxs.iter()
                .zip(&requests)
                .map(|(ctx, request)| preflight(ctx, release, args, request)),
        )
    };
    let found = match run.checked(&ctxs, args.target.dry_run, &check).await {
        Passed::Go(found) => found,
        Passed::Ended(ended) => return ended,
    };
    if args.target.dry_run {
        if let Some(refused) = mixed_start(run, &found, args) {
            return refused;
        }
        for (i, found) in found.into_iter().enumerate() {
            match found.plan {
                Outcome::Planned(plan) => run.report(i, &plan),
                Outcome::Done(report) => run.report(i, &report),
            }
        }
        let summary = format!(
            "{} (dry run): each target's plan; nothing was changed",
            run.what()
        );
        return run.finish(
            None,
            Ending {
                summary,
                ..Ending::default()
            },
        );
    }
    // A refusal comes before anything is written, namespaces included.
    if !run.recheck_pending() {
        if let Some(refused) = mixed_start(run, &found, args) {
            return refused;
        }
    }
    // The Leases live in the namespaces: those missing are made first (--create-namespace).
    if args.image.create_namespace {
        if let Err(ended) = run.create_namespaces(&ctxs).await {
            return ended;
        }
    }
    let found = match run.locked(&ctxs, found, &check).await {
        Passed::Go(found) => found,
        Passed::Ended(ended) => return ended,
    };
    if let Some(refused) = mixed_start(run, &found, args) {
        run.unlock(&ctxs).await;
        return refused;
    }
    let (stop, ending) = phases(run, &ctxs, args, &requests).await;
    run.unlock(&ctxs).await;
    run.finish(stop, ending)
}

/// Records what production serves on each target and refuses a mixed start (unless
/// `--allow-mixed`): the run's end then.
fn mixed_start(run: &mut Run<'_>, found: &[Found], args: &Args) -> Option<Result<()>> {
    for (i, f) in found.iter().enumerate() {
        run.standings[i].production = f.production.clone();
    }
    let names: Vec<String> = (0..found.len()).map(|i| run.name(i).to_string()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let versions: Vec<Option<&str>> = run.standings.iter().map(|s| s.version()).collect();
    let mixed = decide::mixed_start(&names, &versions)?;
    if args.allow_mixed {
        run.step(&format!(
            "a mixed start ({mixed}), released anyway (--allow-mixed)"
        ));
        return None;
    }
    let refusal: anyhow::Error = Refusal::new(
        format!("the targets do not serve one version: {mixed}"),
        "bring them to one version first, or pass --allow-mixed to release the new one to all of them anyway",
    )
    .into();
    run.causes
        .push(format!("the targets do not serve one version: {mixed}"));
    Some(run.refused(&[refusal]))
}

/// What the preflight of one target found.
struct Found {
    production: Option<(Slot, String)>,
    plan: Outcome<ReleaseReport>,
}

/// The target's own dry run of `release`: every refusal it would make, nothing written; and what
/// production serves now.
async fn preflight(
    ctx: &Ctx,
    release: &crate::names::ReleaseName,
    args: &Args,
    request: &DeployRequest,
) -> Result<Found> {
    let creates_namespace =
        args.image.create_namespace && ctx.cluster.create_namespace_if_missing(true).await?;
    let s = Session::new(ctx, release, Op::Release, true, creates_namespace);
    let target = deploy::target(&s, request).await?;
    with_target!(target, seen => {
        let production = seen.as_ref().map(|seen| (seen.production(), seen.slot(seen.production()).tag.clone()));
        let plan = cmd::release(&s, args, seen.as_ref(), request).await?;
        Ok(Found { production, plan })
    })
}

/// What each target has done so far.
#[derive(Default, Clone)]
struct Done {
    deployed: Option<DeployReport>,
    swapped: Option<SwapReport>,
    back: Option<SwapReport>,
    cleaned: Option<crate::commands::clean::CleanReport>,
}

/// The phases after the Leases; returns where they stopped and how to end.
async fn phases(
    run: &mut Run<'_>,
    ctxs: &[Ctx],
    args: &Args,
    requests: &[DeployRequest],
) -> (Option<Stop>, Ending) {
    let n = ctxs.len();
    let release = run.release;
    let what = run.what();
    let before: Vec<Option<(Slot, String)>> =
        run.standings.iter().map(|s| s.production.clone()).collect();
    let version = requests[0].version.recorded();
    let verify = args.verify_cmd.as_ref();
    let mut done = vec![Done::default(); n];

    // Deploy, every target at once.
    let deployed = deploy_each(run, ctxs, requests, Op::Release).await;
    let failed = deployed.iter().any(Option::is_none);
    for (d, deployed) in done.iter_mut().zip(deployed) {
        d.deployed = deployed;
    }
    record(run, &done, verify);
    if failed || stopping() {
        let why = if failed {
            "the deploy did not finish on every target"
        } else {
            "stopped by a signal after the deploy"
        };
        return (
            Some(Stop::After),
            run.unswapped_ending(&format!("{what} failed: {why}"), &version),
        );
    }

    // Verify every stage (a first install: its production), in listed order.
    if let Some(cmd) = verify {
        for i in 0..n {
            let d = done[i].deployed.clone().expect("deployed");
            let name = run.name(i).to_string();
            let verified = if d.header.operation == Op::Install {
                run.enter(i, Phase::VerifyProduction);
                cmd::verify_install(&ctxs[i], cmd, &d, Some(&name)).await
            } else {
                run.enter(i, Phase::VerifyStage);
                cmd::verify_stage(&ctxs[i], cmd, &d, Some(&name)).await
            };
            if let Err(err) = verified {
                run.fail(i, &err);
                let against = match d.header.operation {
                    Op::Install => "production (a first install)",
                    _ => "stage",
                };
                let lead =
                    format!("{what} failed: verification against {against} failed on {name}");
                return (Some(Stop::After), run.unswapped_ending(&lead, &version));
            }
            if stopping() {
                let lead = format!("{what} stopped by a signal after verifying {name}");
                return (Some(Stop::After), run.unswapped_ending(&lead, &version));
            }
        }
    }

    // Swap the targets that were deployed to (not installed), then verify production.
    let swapping: Vec<usize> = (0..n)
        .filter(|&i| {
            done[i]
                .deployed
                .as_ref()
                .is_some_and(|d| d.header.operation == Op::Deploy)
        })
        .collect();
    let order = args.swap.unwrap_or(SwapOrder::Waves);
    let failure = match order {
        SwapOrder::Waves => waves(run, ctxs, &swapping, &version, args, &mut done).await,
        SwapOrder::Together => together(run, ctxs, &swapping, &version, args, &mut done).await,
    };
    if let Some(failure) = failure {
        let backs = run.swap_back_all(ctxs, args.force, &before).await;
        for (d, back) in done.iter_mut().zip(backs) {
            d.back = back.or(d.back.take());
        }
        record(run, &done, verify);
        return mixed_or(run, &version, format!("{what} failed: {failure}"));
    }
    record(run, &done, verify);

    // Clean everywhere a swap left an old slot, after the drain delay (an install left none).
    if args.clean && !swapping.is_empty() {
        if let Err(err) = wait::drain_delay(args.min_age, run.events.as_ref()).await {
            run.causes.push(format!("{err:#}"));
            return after(format!("{what} stopped during the drain delay: every target serves the new version; the old slots still run"));
        }
        for &i in &swapping {
            run.enter(i, Phase::Clean);
        }
        let min_age = args.min_age;
        let cleaned = join_all(
            swapping
                .iter()
                .map(|&i| cmd::clean_now(&ctxs[i], release, min_age, args.force)),
        )
        .await;
        let mut failed = Vec::new();
        for (&i, result) in swapping.iter().zip(cleaned) {
            match result {
                Ok(c) => done[i].cleaned = c,
                Err(err) => {
                    run.fail(i, &err);
                    failed.push(run.name(i).to_string());
                }
            }
        }
        record(run, &done, verify);
        if !failed.is_empty() {
            return after(format!(
                "{what}: the clean failed on {}; every target serves the new version, the old slot still runs where the clean failed",
                failed.join(", ")
            ));
        }
    }
    for i in 0..n {
        run.enter(i, Phase::Done);
    }
    let flags = run.flags.clone();
    let next = if args.clean || swapping.is_empty() {
        format!("bgslot release {release} --tag NEW_TAG {flags}")
    } else {
        format!("bgslot clean {release} {flags}   (or: bgslot rollback {release} {flags})")
    };
    (
        None,
        Ending {
            summary: format!(
                "{what} (run {}): every target serves {version}",
                run.stamp.id
            ),
            next,
            ..Ending::default()
        },
    )
}

/// A stop after the Leases, leading with `lead`.
fn after(lead: String) -> (Option<Stop>, Ending) {
    (Some(Stop::After), Ending::failed(lead))
}

/// The ending of a run whose swaps failed: a mix when a swap-back failed (with the command that
/// ends it on each target), else every target back on what it served.
fn mixed_or(run: &Run<'_>, version: &str, lead: String) -> (Option<Stop>, Ending) {
    if !decide::left_mixed(&run.standings) && !decide::unreturned(&run.standings) {
        let back: Vec<String> = (0..run.members.len())
            .filter(|&i| run.standings[i].swapped_back)
            .map(|i| run.name(i).to_string())
            .collect();
        let lead = if back.is_empty() {
            format!("{lead}; no target was swapped, production is unchanged everywhere (the new version stays staged)")
        } else {
            format!("{lead}; swapped back: {}, every target serves what it served before (the new version stays staged)", back.join(", "))
        };
        return after(lead);
    }
    (Some(Stop::After), run.mixed(&lead, run.fixes(version)))
}

/// One target at a time, in listed order, production verified after each; the failure, if any.
async fn waves(
    run: &mut Run<'_>,
    ctxs: &[Ctx],
    swapping: &[usize],
    version: &str,
    args: &Args,
    done: &mut [Done],
) -> Option<String> {
    let release = run.release;
    for (wave, &i) in swapping.iter().enumerate() {
        let name = run.name(i).to_string();
        if stopping() {
            run.causes
                .push(format!("a signal stopped the waves before {name}"));
            return Some(format!("stopped by a signal before the swap of {name}"));
        }
        run.step(&format!(
            "swap, wave {} of {}: {name}",
            wave + 1,
            swapping.len()
        ));
        run.enter(i, Phase::Swap);
        match cmd::swap_to(&ctxs[i], release, version, args.force).await {
            Ok(swapped) => moved(run, i, &swapped, version, done),
            Err(unswapped) => {
                run.unswapped(&ctxs[i], i, unswapped.err, unswapped.to, version)
                    .await;
                return Some(format!("the swap of {name} failed"));
            }
        }
        if let Some(cmd) = &args.verify_cmd {
            if let Some(failure) = verify_production(run, &ctxs[i], i, cmd, version, done).await {
                return Some(failure);
            }
        }
    }
    None
}

/// Every swap decided first (a refusal flips nothing), then all flipped at once, then production
/// verified on each in listed order; the failure, if any.
async fn together(
    run: &mut Run<'_>,
    ctxs: &[Ctx],
    swapping: &[usize],
    version: &str,
    args: &Args,
    done: &mut [Done],
) -> Option<String> {
    let release = run.release;
    let request = SwapRequest {
        kind: SwapKind::Swap,
        expect_tag: Some(version.to_string()),
        force: args.force,
    };
    for &i in swapping {
        run.enter(i, Phase::Swap);
    }
    let prepared = join_all(
        swapping
            .iter()
            .map(|&i| cmd::prepare_swap(&ctxs[i], release, &request)),
    )
    .await;
    let mut ready = Vec::new();
    let mut refused = Vec::new();
    for (&i, result) in swapping.iter().zip(prepared) {
        match result {
            Ok(p) => ready.push((i, p)),
            Err(err) => {
                run.fail(i, &err);
                refused.push(run.name(i).to_string());
            }
        }
    }
    if !refused.is_empty() {
        return Some(format!(
            "the swap was refused on {} (no target was flipped)",
            refused.join(", ")
        ));
    }
    if stopping() {
        return Some("stopped by a signal before the swaps".into());
    }
    let names: Vec<String> = swapping.iter().map(|&i| run.name(i).to_string()).collect();
    run.step(&format!("swap, together: {}", names.join(", ")));
    let flipped = join_all(
        ready
            .into_iter()
            .map(|(i, p)| async move { (i, cmd::act_swap(&ctxs[i], p).await) }),
    )
    .await;
    let mut failed = Vec::new();
    for (i, result) in flipped {
        match result {
            Ok(swapped) => moved(run, i, &swapped, version, done),
            Err(unswapped) => {
                run.unswapped(&ctxs[i], i, unswapped.err, unswapped.to, version)
                    .await;
                failed.push(run.name(i).to_string());
            }
        }
    }
    if !failed.is_empty() {
        return Some(format!("the swap of {} failed", failed.join(", ")));
    }
    if let Some(cmd) = &args.verify_cmd {
        for &i in swapping {
            if let Some(failure) = verify_production(run, &ctxs[i], i, cmd, version, done).await {
                return Some(failure);
            }
            if stopping() {
                return Some(format!(
                    "stopped by a signal after verifying {}",
                    run.name(i)
                ));
            }
        }
    }
    None
}

/// Production verified on target `i`, just swapped; the failure, if any.
async fn verify_production(
    run: &mut Run<'_>,
    ctx: &Ctx,
    i: usize,
    cmd: &cmd::VerifyCommand,
    version: &str,
    done: &[Done],
) -> Option<String> {
    let name = run.name(i).to_string();
    run.enter(i, Phase::VerifyProduction);
    let swapped = done[i]
        .swapped
        .as_ref()
        .expect("a target verified in production was swapped");
    let err = cmd::verify_production(ctx, cmd, swapped, version, Some(&name))
        .await
        .err()?;
    run.fail(i, &err);
    Some(format!("verification against production failed on {name}"))
}

fn moved(run: &mut Run<'_>, i: usize, swapped: &SwapReport, version: &str, done: &mut [Done]) {
    run.standings[i].moved = Some(Moved::Swap);
    run.standings[i].production = Some((swapped.to, version.to_string()));
    done[i].swapped = Some(swapped.clone());
}

/// Each target's own `release` report, with the steps it ran so far.
fn record(run: &mut Run<'_>, done: &[Done], verify: Option<&cmd::VerifyCommand>) {
    for (i, d) in done.iter().enumerate() {
        let Some(deployed) = d.deployed.clone() else {
            continue;
        };
        let mut report = ReleaseReport::new(deployed, d.swapped.clone(), d.cleaned.clone(), verify);
        if let Some(back) = &d.back {
            report.header = crate::commands::Header {
                operation: Op::Release,
                ..back.header.clone()
            };
            report.image = back.image.clone();
            report.steps.push(Step::Swap(back.clone()));
            report
                .verified
                .retain(|r| *r != crate::vocab::Role::Production);
        }
        run.report(i, &report);
    }
}
