//! The `--dry-run` of a router deploy: the slot release's write and the router's, with what each
//! changes.

use crate::commands::preview::{self, Change, Plan, PlannedStep};
use crate::commands::Session;
use crate::context::Ctx;
use crate::helm::{ReleaseRecord, Write};
use crate::router::observe::RouterSeen;
use crate::router::preflight::Analysis;
use crate::router::slot_release;
use crate::values::{coalesce, ReleaseValues};
use crate::vocab::{Op, Role};
use anyhow::Result;
use serde_json::Value;

use super::decide::{Request, SlotPlan};

/// The router's computed values after its write (for its URLs), from its rendered user values.
pub(super) fn router_values_after(
    ctx: &Ctx,
    release: &str,
    rendered: &ReleaseRecord,
) -> Result<ReleaseValues> {
    let user = rendered.user_values();
    let all = match &ctx.chart.defaults {
        Some(defaults) => coalesce(defaults, &user),
        None => user,
    };
    Ok(ReleaseValues::from_json(release, &all)?)
}

/// The dry run: the slot write and what follows, then the router write.
pub(super) fn plan_of(
    s: &Session<'_>,
    rs: Option<&RouterSeen>,
    plan: &SlotPlan,
    a: &Analysis,
    router: &Write,
    req: &Request,
) -> Plan {
    let (ctx, release) = (s.ctx, s.release);
    let slot = plan.slot;
    let name = slot_release(release, slot);
    let mut out = match rs {
        Some(rs) => Plan::of(Op::Deploy, &rs.seen),
        None => Plan::new(Op::Deploy, release, &ctx.namespace),
    };
    if s.creates_namespace {
        out = out.step(PlannedStep::action(format!(
            "create namespace {}",
            ctx.namespace
        )));
    }
    if let Some(note) = &plan.leftover {
        out = out.step(PlannedStep::action(note.clone()));
    }
    let base = plan.write.base.clone().unwrap_or(Value::Null);
    let changes = plan
        .write
        .sets
        .iter()
        .map(|(key, value)| {
            let new = value.as_value();
            let old = key
                .split('.')
                .try_fold(&base, |v, k| v.get(k))
                .cloned()
                .unwrap_or(Value::Null);
            Change {
                key: key.clone(),
                old,
                new,
            }
        })
        .filter(|c| c.old != c.new)
        .collect();
    let scale = plan.replicas.filter(|_| !a.scale.is_empty()).map(|n| {
        format!(
            "scale {} to {n} replicas (what production runs; the chart renders none)",
            a.scale.join(", ")
        )
    });
    out = out.step(PlannedStep {
        action: if plan.install {
            format!(
                "install {} in {slot} as production: release {name} of {}",
                req.version,
                req.app.chart_ref()
            )
        } else {
            format!(
                "stage {} in {slot}: release {name} of {}",
                req.version,
                req.app.chart_ref()
            )
        },
        helm: ctx.helm.slot_command_line(&name, &plan.write),
        changes,
        effects: Vec::new(),
        then: scale
            .into_iter()
            .chain([format!(
                "wait until every Deployment of {name} is rolled out: {} (timeout {}s)",
                a.deployments.join(", "),
                ctx.timeout().as_secs()
            )])
            .collect(),
    });
    let all = rs
        .map(|rs| rs.seen.all_values.clone())
        .unwrap_or_else(|| Value::Object(Default::default()));
    let role = if plan.install {
        Role::Production
    } else {
        Role::Stage
    };
    out.step(PlannedStep {
        action: if plan.install {
            format!("install the router {release} with production on {slot}, routing to Service {} ({})", a.service, crate::router::values::label_selector(&a.selector))
        } else {
            format!("record {slot} in the router {release}: Service {} ({})", a.service, crate::router::values::label_selector(&a.selector))
        },
        helm: ctx.helm.command_line(release, &ctx.chart.shown(), router),
        changes: preview::changes(router, &all, &[], None),
        effects: Vec::new(),
        then: vec![format!(
            "wait until the {role} Service of {release} lists every {slot} pod as a ready endpoint"
        )],
    })
}
