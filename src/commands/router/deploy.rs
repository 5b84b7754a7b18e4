//! `bgslot deploy` of a router: the new version becomes a release of the user's chart in the idle
//! slot (`RELEASE-green`), with production's values, this deploy's `-f`/`--set` and the tag, and
//! the router records it once every Deployment of it is rolled out. Before anything is written,
//! the router and both slot releases are rendered as server-side dry runs and the preflight
//! refuses what cannot run twice side by side. The first deploy with `--app-chart` installs the
//! slot release in blue and then the router, with production on blue.

use std::fmt;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

use super::{router_of, AppArgs};
use crate::commands::deploy::args::ImageArgs;
use crate::commands::preview::{self, Change, Plan, PlannedStep};
use crate::commands::{Header, Outcome, Session};
use crate::context::Ctx;
use crate::error::{Refusal, UsageError};
use crate::helm::{HelmError, HelmErrorKind, ReleaseRecord, SetValue, SlotWrite, Write};
use crate::names::ReleaseName;
use crate::observe::Observation;
use crate::record::Recorded;
use crate::router::live::{self, Totals};
use crate::router::manifest::Rendered;
use crate::router::observe::{selectors, RouterSeen};
use crate::router::preflight::{self, Analysis, Checks, Renders, Scopes, Wanted};
use crate::router::values::{record_values, AppSettings, RecordedState, SlotRecord};
use crate::router::{slot_release, wait, Risk, MAX_RELEASE_LEN};
use crate::rules;
use crate::values::{coalesce, ReleaseValues};
use crate::vocab::{Op, PerSlot, Role, Slot};

/// Runs the router variant of `deploy` when `seen` is a router, or when `--app-chart` asks for
/// one and the release does not exist; `None` leaves the deploy to the bundled chart.
pub async fn dispatch(
    s: &Session<'_>,
    seen: Option<&Observation>,
    image: &ImageArgs,
    force: bool,
) -> Result<Option<Outcome<Report>>> {
    let app = &image.app;
    let router = match seen {
        Some(seen) => router_of(seen)?,
        None => None,
    };
    match (seen, &router) {
        (Some(_), Some(_)) => {}
        (None, None) if app.app_chart.is_some() => {}
        (Some(seen), None) if app.app_chart.is_some() => {
            return Err(Refusal::new(
                format!(
                    "release {} exists and is not a bgslot router (it runs {}): --app-chart makes a new release a router",
                    seen.release,
                    seen.latest().chart
                ),
                "bgslot does not adopt an existing release: deploy your chart under a new release name with --app-chart, \
                 or keep deploying this one with bgslot's chart (`bgslot deploy RELEASE --tag TAG`)",
            )
            .into())
        }
        _ => {
            app.only_for_routers()?;
            return Ok(None);
        }
    }
    if !image.slot_values.is_empty() || !image.slot_set.is_empty() {
        return Err(UsageError(
            "--slot-values and --slot-set are the bundled chart's; a router's slot is a release of its own: pass its values with -f and --set".into(),
        )
        .into());
    }
    check_router_values(app)?;
    let seen = seen.cloned();
    run(s, seen, router, image, force).await.map(Some)
}

/// `--router-set` and `--router-values` configure bgslot's chart around the router (ingress,
/// Services); the router's record and `productionSlot` are bgslot's.
fn check_router_values(app: &AppArgs) -> Result<(), UsageError> {
    let owned =
        |key: &str| key == "productionSlot" || key == "router" || key.starts_with("router.");
    if let Some(set) = app.router_set.iter().find(|s| owned(&s.key)) {
        return Err(UsageError(format!(
            "--router-set {}: productionSlot and router.* are bgslot's to write",
            set.key
        )));
    }
    for file in &app.router_values {
        let text = std::fs::read_to_string(file)
            .map_err(|e| UsageError(format!("--router-values {}: {e}", file.display())))?;
        let values: Option<Value> = serde_saphyr::from_str(&text).map_err(|e| {
            UsageError(format!(
                "--router-values {} is not YAML: {e}",
                file.display()
            ))
        })?;
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

/// What a deploy is asked, in router terms.
pub struct Request {
    pub app: AppSettings,
    pub wanted: Wanted,
    /// The version as the history records it: the tag, else the digest.
    pub version: String,
    pub replicas: Option<u32>,
    pub replace: bool,
    pub force: bool,
    pub values_files: Vec<std::path::PathBuf>,
    pub user_sets: Vec<crate::names::SetArg>,
}

impl Request {
    pub fn new(image: &ImageArgs, force: bool, recorded: Option<&AppSettings>) -> Request {
        let app = image.app.settings(recorded);
        let wanted = match (&image.image, &image.tag) {
            (Some(i), _) => Wanted {
                repository: Some(i.repository.clone()),
                tag: i.tag.as_ref().map(ToString::to_string),
                digest: i.digest.as_ref().map(ToString::to_string),
            },
            (None, Some(tag)) => Wanted {
                repository: None,
                tag: Some(tag.to_string()),
                digest: None,
            },
            (None, None) => unreachable!("clap requires --tag or --image"),
        };
        Request {
            version: wanted
                .tag
                .clone()
                .or_else(|| wanted.digest.clone())
                .unwrap_or_default(),
            app,
            wanted,
            replicas: image.replicas,
            replace: image.replace,
            force,
            values_files: image.values_files.clone(),
            user_sets: image.set.clone(),
        }
    }
}

/// What the deploy found before it renders anything.
pub struct Known<'a> {
    pub release: &'a str,
    pub namespace: &'a str,
    pub router: Option<&'a RouterSeen>,
    /// Each slot release as helm has it, when it exists.
    pub releases: &'a PerSlot<Option<ReleaseRecord>>,
    pub timeout: std::time::Duration,
}

/// What a deploy will write to the slot.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotPlan {
    pub slot: Slot,
    /// The router does not exist yet: install it after the slot.
    pub install: bool,
    pub write: SlotWrite,
    /// The replicas the slot is sized to (`--replicas`, else what production runs).
    pub replicas: Option<u64>,
    /// A release of the slot from a deploy that did not finish (never routed), replaced.
    pub leftover: Option<String>,
}

/// Whether `record` is a release bgslot wrote into `slot` (its description says so).
fn bgslot_wrote(record: &ReleaseRecord, slot: Slot) -> bool {
    matches!(
        record.info.description.parse::<Recorded>(),
        Ok(Recorded::Install { slot: s, .. } | Recorded::Deploy { slot: s, .. }) if s == slot
    )
}

/// A router's slot releases add `-green` to its name, and helm allows 53 characters.
pub fn check_name(release: &str) -> Result<(), Refusal> {
    if release.len() > MAX_RELEASE_LEN {
        return Err(Refusal::new(
            format!(
                "release name {release} is {} characters long: a router's slot releases add -green, and helm allows 53",
                release.len()
            ),
            format!("use a release name of at most {MAX_RELEASE_LEN} characters"),
        ));
    }
    Ok(())
}

/// Decides where and how to write, or refuses, before anything is rendered.
pub fn decide(k: &Known, req: &Request) -> Result<SlotPlan, Refusal> {
    let release = k.release;
    check_name(release)?;
    let name = |slot: Slot| slot_release(release, slot);
    let leftover_or_refuse = |slot: Slot, may_replace: bool| -> Result<Option<String>, Refusal> {
        let Some(existing) = k.releases[slot]
            .as_ref()
            .filter(|r| r.info.status != "uninstalled")
        else {
            return Ok(None);
        };
        if !bgslot_wrote(existing, slot) {
            return Err(Refusal::new(
                format!(
                    "release {} exists ({}, revision {}), but the router {release} does not record it",
                    name(slot),
                    existing.info.status,
                    existing.version
                ),
                format!(
                    "bgslot does not adopt a release it did not make: uninstall it (`helm uninstall {} -n {}`) or deploy under another release name",
                    name(slot),
                    k.namespace
                ),
            ));
        }
        if existing.info.status != "deployed" || !may_replace {
            let remove = match k.router {
                Some(_) => format!("`bgslot recover {release}` removes it"),
                None => format!("no router {release} exists to recover it: `helm uninstall {} -n {}` removes it", name(slot), k.namespace),
            };
            return Err(Refusal::new(
                format!(
                    "release {} is left from a deploy that did not finish ({}, revision {})",
                    name(slot),
                    existing.info.status,
                    existing.version
                ),
                format!("{remove}; then deploy again"),
            ));
        }
        Ok(Some(format!(
            "{} holds what a deploy that did not finish left ({}); nothing routes to it, so it is replaced",
            name(slot),
            existing.info.description
        )))
    };
    let (slot, install, base, replicas, leftover) = match k.router {
        None => {
            let leftover = leftover_or_refuse(Slot::Blue, true)?;
            leftover_or_refuse(Slot::Green, false)?;
            (
                Slot::Blue,
                true,
                None,
                req.replicas.map(u64::from),
                leftover,
            )
        }
        Some(rs) => {
            rules::check_gitops(release, &rs.seen.cluster, req.force)?;
            rules::check_helm_state(release, &rs.seen.history)?;
            let (services, _) = rs.drift();
            if !services.is_empty() && !req.force {
                return Err(Refusal::new(
                    format!("the router's Services do not match its record: {}", services.join("; ")),
                    "someone changed them outside helm; inspect with `bgslot status`, or pass --force to let this deploy's router write put them back as recorded",
                ));
            }
            let production = rs.production();
            let idle = production.other();
            let staged = rs.record(idle);
            if staged.is_deployed() && !req.replace {
                return Err(Refusal::new(
                    format!(
                        "the idle slot {idle} already runs a staged version ({}, release {}); deploying would replace it",
                        staged.image, staged.release
                    ),
                    format!(
                        "swap to it (`bgslot swap {release}`), remove it (`bgslot clean {release}`), or pass --replace to overwrite it"
                    ),
                ));
            }
            let leftover = if staged.is_deployed() {
                match rs.live(idle).helm.as_ref() {
                    Some(h) if h.status.starts_with("pending-") => {
                        return Err(Refusal::new(
                            format!("release {} is in state {} (revision {}): a helm command on it has not finished, or was killed", name(idle), h.status, h.revision),
                            format!("`bgslot recover {release}` returns it to its last deployed revision"),
                        ))
                    }
                    _ => None,
                }
            } else {
                leftover_or_refuse(idle, true)?
            };
            let Some(base) = k.releases[production].as_ref() else {
                return Err(Refusal::new(
                    format!(
                        "production's release {} does not exist, though the router {release} routes to it",
                        name(production)
                    ),
                    format!("check `bgslot status {release}`; production's values are what a new version starts from"),
                ));
            };
            let serving = rs.live(production).totals(rs.record(production)).desired;
            let replicas = req
                .replicas
                .map(u64::from)
                .or((serving > 0).then_some(serving as u64));
            (idle, false, Some(base.user_values()), replicas, leftover)
        }
    };
    let app = &req.app;
    let mut sets: Vec<(String, SetValue)> = Vec::new();
    if let Some(tag) = &req.wanted.tag {
        sets.push((app.tag_key.clone(), SetValue::Str(tag.clone())));
    }
    if let (Some(repository), false) = (&req.wanted.repository, app.repository_key.is_empty()) {
        sets.push((
            app.repository_key.clone(),
            SetValue::Str(repository.clone()),
        ));
    }
    if !app.digest_key.is_empty() {
        let digest = req.wanted.digest.clone().unwrap_or_default();
        sets.push((app.digest_key.clone(), SetValue::Str(digest)));
    }
    if let (Some(n), false) = (replicas, app.replicas_key.is_empty()) {
        sets.push((app.replicas_key.clone(), SetValue::Literal(n.to_string())));
    }
    let record = if install {
        Recorded::Install {
            slot,
            version: req.version.clone(),
        }
    } else {
        Recorded::Deploy {
            slot,
            version: req.version.clone(),
        }
    };
    Ok(SlotPlan {
        slot,
        install,
        write: SlotWrite {
            chart: app.chart.clone(),
            version: Some(app.version.clone()).filter(|v| !v.is_empty()),
            base,
            values_files: req.values_files.clone(),
            user_sets: req.user_sets.clone(),
            sets,
            record,
            timeout: k.timeout,
        },
        replicas,
        leftover,
    })
}

/// The router write that records `record` in `slot` (and, on install, creates the router with
/// production on blue).
fn router_write(
    rs: Option<&RouterSeen>,
    plan: &SlotPlan,
    record: &SlotRecord,
    app: &AppSettings,
    args: &AppArgs,
    ctx: &Ctx,
    force: bool,
) -> Write {
    let recorded = plan.write.record.clone();
    let mut write = Write::upgrade(recorded);
    let previous = rs
        .and_then(|rs| {
            rs.seen
                .user_values
                .pointer(&format!("/router/slots/{}", plan.slot))
                .cloned()
        })
        .unwrap_or(Value::Null);
    write.generated = Some(record_values(plan.slot, record, app, &previous));
    write.values_files = args.router_values.clone();
    write.user_sets = args.router_set.clone();
    match rs {
        None => {
            write.install = true;
            write = write.set("productionSlot", SetValue::Str(plan.slot.as_str().into()));
        }
        Some(rs) => {
            write.reset_then_reuse = ctx.chart.differs_from(&rs.seen.latest().chart);
            write.force_conflicts = force && !rs.drift().0.is_empty();
        }
    }
    write
}

/// The record of the new slot, from what the preflight found and (once written) the release.
fn slot_record(
    release: &str,
    plan: &SlotPlan,
    a: &Analysis,
    written: &ReleaseRecord,
    version: &str,
) -> SlotRecord {
    let meta = written.chart.as_ref().map(|c| &c.metadata);
    SlotRecord {
        release: slot_release(release, plan.slot),
        state: RecordedState::Deployed,
        revision: written.version,
        chart: written.chart_id().unwrap_or_default(),
        app_version: meta.map(|m| m.app_version.clone()).unwrap_or_default(),
        tag: version.to_string(),
        image: a.image.clone(),
        container: a.container.clone(),
        service: a.service.clone(),
        selector: a.selector.clone(),
        ports: a.ports.clone(),
        accepted: a.accepted.clone(),
    }
}

/// A helm render that failed for a reason the preflight stands for (the chart does not render
/// here; a live object belongs to another release) as a refusal; anything else as it is.
async fn refusal_of(ctx: &Ctx, err: anyhow::Error, what: &str, chart: &str) -> anyhow::Error {
    let stderr = err
        .chain()
        .find_map(|c| c.downcast_ref::<HelmError>())
        .map(|h| {
            h.stderr
                .0
                .trim_start_matches("Error: ")
                .replace("INSTALLATION FAILED: ", "")
                .replace("UPGRADE FAILED: ", "")
        })
        .unwrap_or_default();
    if HelmError::is(&err, HelmErrorKind::RenderFailed) {
        let kube = ctx
            .client
            .apiserver_version()
            .await
            .map(|v| v.git_version)
            .unwrap_or_else(|_| "(unknown)".into());
        return Refusal::new(
            format!(
                "{what} cannot be rendered (chart {chart}, Kubernetes {kube}, helm {}): {stderr}",
                ctx.helm.version
            ),
            "fix the values given (-f, --set) or the chart so that it renders on this cluster",
        )
        .into();
    }
    if HelmError::is(&err, HelmErrorKind::OwnershipConflict) {
        return Refusal::new(
            format!("{what} would take over an object another release owns: {stderr}"),
            "rename or remove that object, or uninstall the release that owns it: bgslot never takes ownership (--take-ownership)",
        )
        .into();
    }
    err
}

/// Learns from the API server the scope of kinds Kubernetes does not define (a CRD's).
async fn scopes(ctx: &Ctx, rendered: &[&Rendered]) -> Scopes {
    let mut scopes = Scopes::builtin();
    let unknown = scopes.unknown(rendered.iter().flat_map(|r| r.all()));
    for api_version in unknown {
        let found = if api_version.contains('/') {
            ctx.client.list_api_group_resources(&api_version).await
        } else {
            ctx.client.list_core_api_resources(&api_version).await
        };
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        if let Ok(list) = found {
            for r in list.resources.iter().filter(|r| !r.name.contains('/')) {
                scopes.learn(group, &r.kind, r.namespaced);
            }
        }
    }
    scopes
}

async fn run(
    s: &Session<'_>,
    seen: Option<Observation>,
    router: Option<crate::router::RouterValues>,
    image: &ImageArgs,
    force: bool,
) -> Result<Outcome<Report>> {
    let (ctx, release) = (s.ctx, s.release);
    check_name(release)?;
    let names = PerSlot::new(|slot| slot_release(release, slot));
    let rs = match (seen, router) {
        (Some(seen), Some(router)) => Some(RouterSeen::read(ctx, seen, router).await?),
        _ => None,
    };
    let (blue, green) = tokio::try_join!(
        ctx.helm.release(&names.blue),
        ctx.helm.release(&names.green)
    )?;
    let releases = PerSlot { blue, green };
    let req = Request::new(image, force, rs.as_ref().map(|r| &r.router.app));
    let known = Known {
        release,
        namespace: &ctx.namespace,
        router: rs.as_ref(),
        releases: &releases,
        timeout: ctx.timeout(),
    };
    let plan = decide(&known, &req)?;
    let slot = plan.slot;
    let chart = req.app.chart_ref();
    // Render the slot release, and the other slot: production as it runs, or before the first
    // install the chart as the other slot's release would render.
    let rendered = match ctx.helm.render_slot(&names[slot], &plan.write).await {
        Ok(r) => r,
        Err(err) => return Err(refusal_of(ctx, err, &names[slot], &chart).await),
    };
    let slot_render = Rendered::of(&rendered).map_err(anyhow::Error::msg)?;
    let other_slot = slot.other();
    let other_render = match (&rs, &releases[other_slot]) {
        (Some(_), Some(live)) => Rendered::of(live).map_err(anyhow::Error::msg)?,
        (Some(_), None) => Rendered {
            release: names[other_slot].clone(),
            ..Rendered::default()
        },
        (None, _) => {
            let mut as_other = plan.write.clone();
            as_other.record = Recorded::Deploy {
                slot: other_slot,
                version: req.version.clone(),
            };
            match ctx.helm.render_slot(&names[other_slot], &as_other).await {
                Ok(r) => Rendered::of(&r).map_err(anyhow::Error::msg)?,
                Err(err) => return Err(refusal_of(ctx, err, &names[other_slot], &chart).await),
            }
        }
    };
    let scopes = scopes(ctx, &[&slot_render, &other_render]).await;
    let checks = Checks {
        release,
        namespace: &ctx.namespace,
        app: &req.app,
        wanted: &req.wanted,
        replicas: plan.replicas,
        scopes: &scopes,
    };
    let renders = Renders {
        slot: &slot_render,
        other: &other_render,
    };
    let analysis = preflight::analyze(&renders, &checks)?;
    let record = slot_record(release, &plan, &analysis, &rendered, &req.version);
    let write = router_write(
        rs.as_ref(),
        &plan,
        &record,
        &req.app,
        &image.app,
        ctx,
        force,
    );
    let router_render = match ctx
        .helm
        .render(release, &ctx.chart.reference()?, &write)
        .await
    {
        Ok(r) => r,
        Err(err) => {
            return Err(refusal_of(
                ctx,
                err,
                &format!("the router {release}"),
                &ctx.chart.shown(),
            )
            .await)
        }
    };
    preflight::check_router(
        &Rendered::of(&router_render).map_err(anyhow::Error::msg)?,
        &renders,
        &checks,
    )?;
    let after = router_values_after(ctx, release, &router_render)?;
    if s.dry_run {
        return Ok(Outcome::Planned(plan_of(
            s,
            rs.as_ref(),
            &plan,
            &analysis,
            &write,
            &req,
        )));
    }
    act(
        s,
        rs.as_ref(),
        plan,
        analysis,
        &req,
        &image.app,
        force,
        &after,
    )
    .await
    .map(Outcome::Done)
}

/// The router's computed values after its write (for its URLs), from its rendered user values.
fn router_values_after(
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
fn plan_of(
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

#[allow(clippy::too_many_arguments)]
async fn act(
    s: &Session<'_>,
    rs: Option<&RouterSeen>,
    plan: SlotPlan,
    a: Analysis,
    req: &Request,
    args: &AppArgs,
    force: bool,
    after: &ReleaseValues,
) -> Result<Report> {
    let (ctx, release) = (s.ctx, s.release);
    let slot = plan.slot;
    let name = slot_release(release, slot);
    let events = ctx.events.as_ref();
    if let Some(note) = &plan.leftover {
        events.step(note);
    }
    events.step(&format!(
        "{} {release}: {slot} <- {} (release {name} of {})",
        if plan.install {
            "installing"
        } else {
            "deploying"
        },
        a.image,
        req.app.chart_ref()
    ));
    let written = ctx.write_slot(&name, &plan.write).await.with_context(|| {
        format!(
            "writing release {name} ({} in the {slot} slot of {release}) in namespace {}",
            req.version, ctx.namespace
        )
    })?;
    let unfinished = |what: &str| {
        format!(
            "{what}; production is unchanged. Release {name} holds {} but nothing routes to it: \
             `bgslot deploy {release} --tag TAG` replaces it, `bgslot recover {release}` removes it",
            req.version
        )
    };
    if let Some(n) = plan.replicas {
        for deployment in &a.scale {
            events.step(&format!(
                "{slot}: scaling {deployment} to {n} replicas (what production runs)"
            ));
            ctx.scale(deployment, n)
                .await
                .with_context(|| unfinished("sizing the new slot failed"))?;
        }
    }
    let rollout = wait::SlotRollout {
        deployments: &a.deployments,
        routed: &a.routed,
        selector: &a.selector,
    };
    let totals: Totals =
        wait::deployments_ready(&ctx.cluster, release, slot, &rollout, ctx.timeout(), events)
            .await
            .with_context(|| {
                unfinished(&format!(
                    "the {slot} slot of {release} did not become ready"
                ))
            })?;
    let record = slot_record(release, &plan, &a, &written, &req.version);
    let write = router_write(rs, &plan, &record, &req.app, args, ctx, force);
    events.step(&format!("{release}: recording {slot} in the router"));
    ctx.write(release, &write).await.with_context(|| {
        unfinished(&format!(
            "recording the {slot} slot in the router {release} failed"
        ))
    })?;
    let role = if plan.install {
        Role::Production
    } else {
        Role::Stage
    };
    let mut selectors = rs.map(|rs| selectors(&rs.router)).unwrap_or_default();
    selectors[slot] = a.selector.clone();
    let service = if plan.install {
        release.to_string()
    } else {
        stage_service_name(rs, release)
    };
    let what = format!(
        "the {role} Service of {release} did not list the {} ready {slot} pods",
        totals.desired
    );
    wait::services(
        &ctx.cluster,
        release,
        &selectors,
        ctx.timeout(),
        &what,
        |services| {
            wait::listed(
                services,
                release,
                role,
                slot,
                totals.desired.max(0) as usize,
            )
        },
    )
    .await
    .with_context(|| {
        format!("the {slot} slot of {release} is ready but its Service does not route to it yet")
    })?;
    let production = if plan.install { slot } else { slot.other() };
    let revision = rs.map(|rs| rs.seen.latest().revision + 1).unwrap_or(1);
    let next = if plan.install {
        format!("bgslot deploy {release} --tag NEW_TAG")
    } else {
        format!("bgslot swap {release} --expect-tag {}", req.version)
    };
    Ok(Report {
        header: Header::new(
            if plan.install {
                Op::Install
            } else {
                Op::Deploy
            },
            release,
            &ctx.namespace,
        )
        .revision(revision)
        .production(production)
        .next(next),
        mode: MODE,
        slot,
        role,
        image: a.image.clone(),
        ready: totals.ready,
        desired: totals.desired,
        url: live::url(
            after,
            role,
            &service,
            &ctx.namespace,
            a.ports.first().map(|p| p.port),
        ),
        service: Some(service),
        slot_release: name,
        slot_revision: written.version,
        chart: record.chart.clone(),
        accepted: a.accepted,
        version: req.version.clone(),
    })
}

/// The stage Service's name (the router names it `RELEASE-stage`, shortened as the chart does).
fn stage_service_name(rs: Option<&RouterSeen>, release: &ReleaseName) -> String {
    rs.and_then(|rs| rs.service(Role::Stage).map(|s| s.name.clone()))
        .unwrap_or_else(|| format!("{release}-stage"))
}

/// `mode` in every router report.
pub const MODE: &str = "router";

/// What a router deploy reports: the bundled deploy's fields, and the slot release.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    /// `operation` is `install` or `deploy`.
    #[serde(flatten)]
    pub header: Header,
    pub mode: &'static str,
    pub slot: Slot,
    pub role: Role,
    pub image: String,
    pub ready: i32,
    pub desired: i32,
    pub service: Option<String>,
    pub url: String,
    /// The release of the user's chart the slot is now.
    pub slot_release: String,
    pub slot_revision: u64,
    /// `NAME-VERSION` of the user's chart.
    pub chart: String,
    /// The risks its render has, accepted with --accept.
    pub accepted: Vec<Risk>,
    /// The version deployed, as a swap expects it (the tag, else the digest).
    #[serde(skip)]
    pub version: String,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} is ready ({}/{}) running {} as {} (release {} revision {}, {})",
            self.header.release,
            self.slot,
            self.ready,
            self.desired,
            self.image,
            self.role,
            self.slot_release,
            self.slot_revision,
            self.chart
        )?;
        writeln!(
            f,
            "  {} service: {} -> {}",
            self.role,
            self.service.as_deref().unwrap_or("(missing)"),
            self.url
        )?;
        if !self.accepted.is_empty() {
            let accepted: Vec<&str> = self.accepted.iter().map(|r| r.as_str()).collect();
            writeln!(f, "  accepted risks: {}", accepted.join(", "))?;
        }
        writeln!(f, "\nnext: {}", self.header.next_step())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helm::json::StatusInfo;
    use crate::router::live::tests::{live, routed, router};
    use std::collections::BTreeMap;

    fn image_args(args: &[&str]) -> ImageArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            image: ImageArgs,
        }
        let mut argv = vec!["x"];
        argv.extend(args);
        <Cli as clap::Parser>::parse_from(argv).image
    }

    fn helm_release(name: &str, status: &str, description: &str, values: Value) -> ReleaseRecord {
        ReleaseRecord {
            name: name.into(),
            version: 1,
            info: StatusInfo {
                status: status.into(),
                description: description.into(),
                last_deployed: String::new(),
            },
            config: Some(values),
            manifest: String::new(),
            hooks: Vec::new(),
            chart: None,
        }
    }

    fn seen(green: bool) -> RouterSeen {
        let r = router(green);
        let obs = crate::fixtures::observation(
            crate::fixtures::values(Slot::Blue, green),
            crate::fixtures::observed(3, 0),
            vec![crate::fixtures::rev(
                1,
                "deployed",
                "bgslot install blue v1",
                "t",
            )],
        );
        RouterSeen {
            services: vec![
                routed("web", Role::Production, Slot::Blue, &r, 3),
                routed(
                    "web-stage",
                    Role::Stage,
                    Slot::Green,
                    &r,
                    if green { 3 } else { 0 },
                ),
            ],
            slots: PerSlot {
                blue: live(Slot::Blue, "v1", 3),
                green: live(Slot::Green, "v2", 3),
            },
            seen: obs,
            router: r,
        }
    }

    fn known<'a>(
        rs: Option<&'a RouterSeen>,
        releases: &'a PerSlot<Option<ReleaseRecord>>,
    ) -> Known<'a> {
        Known {
            release: "web",
            namespace: "shop",
            router: rs,
            releases,
            timeout: std::time::Duration::from_secs(300),
        }
    }

    fn production() -> PerSlot<Option<ReleaseRecord>> {
        PerSlot {
            blue: Some(helm_release(
                "web-blue",
                "deployed",
                "bgslot install blue v1",
                serde_json::json!({"image": {"tag": "v1"}, "env": "prod"}),
            )),
            green: None,
        }
    }

    fn sets(plan: &SlotPlan) -> Vec<String> {
        plan.write
            .sets
            .iter()
            .map(|(k, v)| format!("{k}={}", v.flag().1))
            .collect()
    }

    #[test]
    fn a_deploy_stages_the_tag_over_productions_values_sized_as_production() {
        let rs = seen(false);
        let releases = production();
        let req = Request::new(&image_args(&["--tag", "v2"]), false, Some(&rs.router.app));
        let plan = decide(&known(Some(&rs), &releases), &req).unwrap();
        assert_eq!(
            (plan.slot, plan.install, plan.replicas),
            (Slot::Green, false, Some(3))
        );
        assert_eq!(
            plan.write.base,
            Some(serde_json::json!({"image": {"tag": "v1"}, "env": "prod"}))
        );
        assert_eq!(sets(&plan), ["image.tag=v2", "replicaCount=3"]);
        assert_eq!(plan.write.description(), "bgslot deploy green v2");
        let mut app = rs.router.app.clone();
        app.digest_key = "image.digest".into();
        app.repository_key = "image.repository".into();
        app.replicas_key = String::new();
        let digest = format!("sha256:{}", "c".repeat(64));
        let by_image = Request::new(
            &image_args(&[
                "--image",
                &format!("ghcr.io/acme/web@{digest}"),
                "--replicas",
                "2",
            ]),
            false,
            Some(&app),
        );
        let plan = decide(&known(Some(&rs), &releases), &by_image).unwrap();
        assert_eq!(
            sets(&plan),
            [
                "image.repository=ghcr.io/acme/web".to_string(),
                format!("image.digest={digest}")
            ]
        );
        assert_eq!(plan.replicas, Some(2));
        assert_eq!(
            plan.write.description(),
            format!("bgslot deploy green {digest}")
        );
        // A tag clears a digest production pinned, when bgslot knows where it is.
        let cleared = Request::new(&image_args(&["--tag", "v3"]), false, Some(&app));
        assert!(
            sets(&decide(&known(Some(&rs), &releases), &cleared).unwrap())
                .contains(&"image.digest=".to_string())
        );
    }

    #[test]
    fn the_first_deploy_installs_blue_and_refuses_a_release_it_did_not_make() {
        let req = Request::new(
            &image_args(&["--tag", "v1", "--app-chart", "./myapp"]),
            false,
            None,
        );
        let none = PerSlot::default();
        let plan = decide(&known(None, &none), &req).unwrap();
        assert_eq!(
            (plan.slot, plan.install, plan.write.base.clone()),
            (Slot::Blue, true, None)
        );
        assert_eq!(
            (plan.write.chart.as_str(), plan.write.description()),
            ("./myapp", "bgslot install blue v1".to_string())
        );
        let foreign = PerSlot {
            blue: Some(helm_release(
                "web-blue",
                "deployed",
                "Install complete",
                Value::Null,
            )),
            green: None,
        };
        let err = decide(&known(None, &foreign), &req).unwrap_err();
        assert!(err.reason.contains("release web-blue exists (deployed, revision 1), but the router web does not record it"), "{err:?}");
        assert!(
            err.hint.contains("helm uninstall web-blue -n shop"),
            "{}",
            err.hint
        );
        // What an unfinished first deploy left is replaced; a pending one is recovered first.
        let own = PerSlot {
            blue: Some(helm_release(
                "web-blue",
                "deployed",
                "bgslot install blue v1",
                Value::Null,
            )),
            green: None,
        };
        assert!(decide(&known(None, &own), &req).unwrap().leftover.is_some());
        let pending = PerSlot {
            blue: Some(helm_release(
                "web-blue",
                "pending-install",
                "bgslot install blue v1",
                Value::Null,
            )),
            green: None,
        };
        assert!(decide(&known(None, &pending), &req)
            .unwrap_err()
            .hint
            .contains("helm uninstall web-blue -n shop"));
        // A name too long for its slot releases.
        let long = "a".repeat(48);
        let k = Known {
            release: &long,
            ..known(None, &none)
        };
        assert!(decide(&k, &req)
            .unwrap_err()
            .reason
            .contains("is 48 characters long"));
    }

    #[test]
    fn a_staged_version_is_replaced_only_when_asked_and_drift_only_when_forced() {
        let rs = seen(true);
        let mut releases = production();
        releases.green = Some(helm_release(
            "web-green",
            "deployed",
            "bgslot deploy green v2",
            Value::Null,
        ));
        let req = Request::new(&image_args(&["--tag", "v3"]), false, Some(&rs.router.app));
        let err = decide(&known(Some(&rs), &releases), &req).unwrap_err();
        assert!(
            err.reason.contains(
                "the idle slot green already runs a staged version (nginx:v2, release web-green)"
            ),
            "{err:?}"
        );
        let replace = Request::new(
            &image_args(&["--tag", "v3", "--replace"]),
            false,
            Some(&rs.router.app),
        );
        assert_eq!(
            decide(&known(Some(&rs), &releases), &replace).unwrap().slot,
            Slot::Green
        );
        let mut drifted = seen(false);
        drifted.services[0].selector = BTreeMap::from([("app".to_string(), "x".to_string())]);
        let err = decide(&known(Some(&drifted), &production()), &req).unwrap_err();
        assert!(err.reason.contains("do not match its record"), "{err:?}");
        let forced = Request::new(
            &image_args(&["--tag", "v3"]),
            true,
            Some(&drifted.router.app),
        );
        assert!(decide(&known(Some(&drifted), &production()), &forced).is_ok());
        // A release in the idle slot the router does not record, and bgslot did not write.
        let mut foreign = production();
        foreign.green = Some(helm_release(
            "web-green",
            "deployed",
            "Upgrade complete",
            Value::Null,
        ));
        let err = decide(&known(Some(&seen(false)), &foreign), &req).unwrap_err();
        assert!(
            err.reason.contains("but the router web does not record it"),
            "{err:?}"
        );
    }

    #[test]
    fn router_values_may_not_touch_what_bgslot_records() {
        let args = |set: &str| AppArgs {
            router_set: vec![set.parse().unwrap()],
            ..AppArgs::default()
        };
        assert!(check_router_values(&args("productionSlot=green")).is_err());
        assert!(check_router_values(&args("router.slots.green.tag=x")).is_err());
        assert!(check_router_values(&args("ingress.host=web.example.com")).is_ok());
    }
}
