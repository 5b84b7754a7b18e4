//! The new version onto every target at once: each target's deploy request (the command line's
//! values, then the target's own) and the parallel deploy `deploy` and `release` across targets
//! both run, recording what each target became.

use futures::future::join_all;

use super::decide::{Moved, Phase};
use super::targets::TargetSpec;
use super::Run;
use crate::commands::deploy::{self, DeployReport};
use crate::commands::{Outcome, Session};
use crate::context::Ctx;
use crate::error;
use crate::slots::DeployRequest;
use crate::vocab::Op;

/// The deploy request of each target: the command line's, then the target's own values.
pub fn own_requests(run: &Run<'_>, base: &DeployRequest) -> Vec<DeployRequest> {
    run.members
        .iter()
        .map(|m| own_values(base, &m.spec))
        .collect()
}

fn own_values(base: &DeployRequest, spec: &TargetSpec) -> DeployRequest {
    let mut request = base.clone();
    request.values_files.extend(spec.values.iter().cloned());
    request.user_sets.extend(spec.set.iter().cloned());
    request
}

/// Deploys to every target at once, under the run's `op` (its helm descriptions), and records
/// what each became: a first install makes the new version production there (there was nothing
/// before it), any other deploy stages it. Each target's report, or `None` where the deploy
/// failed (recorded).
pub async fn deploy_each(
    run: &mut Run<'_>,
    ctxs: &[Ctx],
    requests: &[DeployRequest],
    op: Op,
) -> Vec<Option<DeployReport>> {
    run.step("deploy: every target at once");
    for i in 0..ctxs.len() {
        run.enter(i, Phase::Deploy);
    }
    let release = run.release;
    let deployed = join_all(ctxs.iter().zip(requests).map(|(ctx, request)| async move {
        let s = Session::new(ctx, release, op, false, false);
        deploy::deploy(&s, request)
            .await
            .map_err(|err| error::after_writes(err, ctx.written()))
    }))
    .await;
    let mut reports = Vec::with_capacity(ctxs.len());
    for (i, result) in deployed.into_iter().enumerate() {
        reports.push(match result {
            Ok(Outcome::Done(d)) => {
                if d.header.operation == Op::Install {
                    run.standings[i].moved = Some(Moved::Install);
                    run.standings[i].production = Some((d.slot, d.version.clone()));
                } else {
                    run.standings[i].staged = true;
                }
                Some(d)
            }
            Ok(Outcome::Planned(_)) => unreachable!("not a dry run"),
            Err(err) => {
                run.fail(i, &err);
                None
            }
        });
    }
    reports
}
