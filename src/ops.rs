//! The commands: each reads once, decides with `plan`, writes once through helm, then waits or
//! confirms with the API. Mutating commands hold the release lock for their whole run.

use std::future::Future;
use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use crate::chart::ChartSource;
use crate::cli::{
    CleanArgs, DeployArgs, ImageArgs, RecoverArgs, ReleaseArgs, RollbackArgs, SwapArgs,
};
use crate::cluster::{Role, SlotState};
use crate::context::Ctx;
use crate::duration::human_age;
use crate::helm::Revision;
use crate::lock::{Holder, LockGuard};
use crate::names;
use crate::plan::{self, DeployRequest, Observed, SwapKind};
use crate::signals;
use crate::values::{ReleaseValues, Slot};

/// What a command reports: a JSON document and the same for people.
pub struct Outcome {
    pub json: Value,
    pub text: String,
}

fn progress(msg: &str) {
    eprintln!("{msg}");
}

/// The state of a release as read at the start of a command.
struct Snapshot {
    history: Vec<Revision>,
    values: ReleaseValues,
    observed: Observed,
}

impl Snapshot {
    fn latest(&self) -> &Revision {
        self.history
            .last()
            .expect("a release has at least one revision")
    }
}

fn not_found(release: &str, ctx: &Ctx) -> anyhow::Error {
    anyhow!(
        "release {release} not found in namespace {}: check the name and -n/--namespace (helm list -n {})",
        ctx.namespace,
        ctx.namespace
    )
}

async fn observe(ctx: &Ctx, release: &str) -> Result<Observed> {
    let cluster = ctx.cluster();
    let (blue, green, (production_service, stage_service)) = tokio::try_join!(
        cluster.slot(release, Slot::Blue),
        cluster.slot(release, Slot::Green),
        cluster.services(release),
    )?;
    Ok(Observed {
        blue,
        green,
        production_service,
        stage_service,
    })
}

/// One helm read of history and values, plus what the cluster shows.
async fn read(ctx: &Ctx, release: &str) -> Result<Option<Snapshot>> {
    // The two helm reads and the API reads are independent: run them together. A missing
    // release makes `get values` fail too; history says so first.
    let (history, raw, observed) = tokio::join!(
        ctx.helm.history(release),
        ctx.helm.values(release),
        observe(ctx, release)
    );
    let Some(history) = history?.filter(|h| !h.is_empty()) else {
        return Ok(None);
    };
    let mut values = ReleaseValues::from_json(release, &raw?)?;
    let observed = observed?;
    values.fill_running_images(|slot| observed.slot(slot).image.clone());
    Ok(Some(Snapshot {
        history,
        values,
        observed,
    }))
}

async fn read_existing(ctx: &Ctx, release: &str) -> Result<Snapshot> {
    read(ctx, release)
        .await?
        .ok_or_else(|| not_found(release, ctx))
}

/// Runs a mutating operation under the release lock; always releases it, and after a signal says
/// what state helm left the release in.
async fn locked<F, Fut>(ctx: &Ctx, release: &str, operation: &str, body: F) -> Result<Outcome>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Outcome>>,
{
    let guard = LockGuard::acquire(
        ctx.client.clone(),
        &ctx.namespace,
        release,
        Holder {
            operation: operation.to_string(),
        },
        ctx.global.wait_for_lock,
    )
    .await
    .map_err(|err| namespace_hint(err, ctx))?;
    let result = body().await;
    guard.release().await;
    if let (Err(err), Some(sig)) = (&result, signals::received()) {
        let state = match ctx.helm.history(release).await {
            Ok(Some(h)) => h
                .last()
                .map(|r| format!("revision {} is {}", r.revision, r.status))
                .unwrap_or_else(|| "no revision".into()),
            Ok(None) => "the release does not exist".into(),
            Err(e) => format!("its state could not be read: {e}"),
        };
        return Err(anyhow!("{err:#}").context(format!(
            "{operation} of {release} stopped by {}; release {release} was left as: {state}",
            signals::name(sig)
        )));
    }
    result
}

fn namespace_hint(err: anyhow::Error, ctx: &Ctx) -> anyhow::Error {
    let missing = err.chain().any(|c| {
        matches!(c.downcast_ref::<kube::Error>(), Some(kube::Error::Api(s)) if s.code == 404 && s.message.contains("namespaces"))
    });
    if missing {
        err.context(format!(
            "namespace {} does not exist: create it or pass the right -n/--namespace",
            ctx.namespace
        ))
    } else {
        err
    }
}

/// Checks and turns the version flags into a request; pure, so it runs before connecting.
pub fn deploy_request(image: &ImageArgs) -> Result<DeployRequest> {
    let (repository, tag) = match (&image.image, &image.tag) {
        (Some(reference), _) => {
            let (repo, tag) = names::split_image(reference)?;
            (Some(repo), tag)
        }
        (None, Some(tag)) => {
            names::validate_tag(tag)?;
            (None, tag.clone())
        }
        (None, None) => bail!(crate::error::UsageError(
            "give the new version with --tag TAG or --image REPOSITORY:TAG".into()
        )),
    };
    if image.replicas == Some(0) {
        bail!(crate::error::UsageError(
            "--replicas 0 would stage a slot that can never take production traffic: give at least 1".into()
        ));
    }
    for set in &image.set {
        if !set.contains('=') {
            bail!(crate::error::UsageError(format!(
                "--set {set}: expected KEY=VALUE"
            )));
        }
    }
    for file in &image.values_files {
        std::fs::metadata(file)
            .with_context(|| format!("values file {} cannot be read", file.display()))?;
    }
    Ok(DeployRequest {
        repository,
        tag,
        replicas: image.replicas,
        replace: image.replace,
    })
}

fn write_for_chart(
    chart: &ChartSource,
    snapshot: Option<&Snapshot>,
    mut write: crate::helm::Write,
) -> crate::helm::Write {
    if let Some(s) = snapshot {
        write.reset_then_reuse = chart.differs_from(&s.latest().chart);
    }
    write
}

/// Where the Service with `role` can be reached: its ingress host when set, else in-cluster DNS.
fn url(ctx: &Ctx, values: &ReleaseValues, role: Role, service: Option<&str>) -> String {
    let host = match role {
        Role::Production => &values.ingress_host,
        Role::Stage => &values.ingress_stage_host,
    };
    match host {
        Some(host) => format!(
            "{}://{host}/",
            if values.ingress_tls { "https" } else { "http" }
        ),
        None => format!(
            "http://{}.{}.svc.cluster.local:{}/",
            service.unwrap_or("SERVICE"),
            ctx.namespace,
            values.service_port
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// deploy

/// Creates the namespace when asked to and it is missing: the lock Lease lives in it, so this
/// happens before anything else.
async fn ensure_namespace(ctx: &Ctx, image: &ImageArgs) -> Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    if !image.create_namespace {
        return Ok(());
    }
    let api: kube::Api<Namespace> = kube::Api::all(ctx.client.clone());
    let name = &ctx.namespace;
    if api
        .get_opt(name)
        .await
        .with_context(|| format!("reading namespace {name}"))?
        .is_some()
    {
        return Ok(());
    }
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&kube::api::PostParams::default(), &ns).await {
        Ok(_) => {
            progress(&format!("created namespace {name}"));
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(err) => Err(err).with_context(|| format!("creating namespace {name}")),
    }
}

pub async fn deploy(ctx: &Ctx, args: &DeployArgs) -> Result<Outcome> {
    let req = deploy_request(&args.image)?;
    ensure_namespace(ctx, &args.image).await?;
    let chart = ChartSource::resolve(ctx.global.chart.as_deref())?;
    locked(ctx, &args.release, "deploy", || {
        deploy_locked(ctx, &args.release, &args.image, req, &chart)
    })
    .await
}

async fn deploy_locked(
    ctx: &Ctx,
    release: &str,
    image: &ImageArgs,
    req: DeployRequest,
    chart: &ChartSource,
) -> Result<Outcome> {
    let snapshot = read(ctx, release).await?;
    if let Some(s) = &snapshot {
        plan::check_helm_state(release, &s.history)?;
    }
    let observed = snapshot
        .as_ref()
        .map(|s| s.observed.clone())
        .unwrap_or_default();
    let mut plan = plan::plan_deploy(
        release,
        snapshot.as_ref().map(|s| &s.values),
        &observed,
        &req,
    )?;
    plan.write.values_files = image.values_files.clone();
    plan.write.user_sets = image.set.clone();
    let write = write_for_chart(chart, snapshot.as_ref(), plan.write);
    let slot = plan.slot;
    progress(&format!(
        "{} {release}: {slot} <- {}{}",
        if write.install {
            "installing"
        } else {
            "deploying"
        },
        req.repository
            .as_deref()
            .map(|r| format!("{r}:"))
            .unwrap_or_default(),
        req.tag
    ));
    ctx.helm
        .write(release, chart.reference(), &write)
        .await
        .with_context(|| {
            format!(
                "deploying {} to the {slot} slot of {release} in namespace {}",
                req.tag, ctx.namespace
            )
        })?;
    let mut report = |line: &str| progress(line);
    let waiting_since = std::time::Instant::now();
    let state = crate::wait::slot_available(
        &ctx.cluster(),
        release,
        slot,
        ctx.global.timeout,
        &mut report,
    )
    .await
    .with_context(|| {
        if write.install {
            format!("the {slot} slot of the new release {release} did not become ready")
        } else {
            format!(
                "the {slot} slot of {release} did not become ready; production is unchanged. The version stays \
                 staged in {slot}: replace it with `bgslot deploy {release} --tag TAG --replace` or remove it \
                 with `bgslot clean {release} --force`"
            )
        }
    })?;
    // Endpoints follow pod readiness with a delay (long after an API server restart): wait for
    // them too, so that a swap right after this deploy finds the slot behind its Service.
    let role = if write.install {
        Role::Production
    } else {
        Role::Stage
    };
    let left = ctx
        .global
        .timeout
        .saturating_sub(waiting_since.elapsed())
        .max(Duration::from_secs(10));
    crate::wait::endpoints_ready(
        &ctx.cluster(),
        release,
        role,
        slot,
        state.desired.max(0) as usize,
        left,
    )
    .await
    .with_context(|| {
        format!("the {slot} slot of {release} is ready but its Service does not route to it yet")
    })?;
    // The values after the write follow from the plan, unless the user passed values of their own
    // (or this was the install, with nothing read before): only then read them back.
    let values = match &snapshot {
        Some(s) if write.values_files.is_empty() && write.user_sets.is_empty() => s
            .values
            .clone()
            .with_staged(slot, req.repository.as_deref(), &req.tag),
        _ => ReleaseValues::from_json(release, &ctx.helm.values(release).await?)?,
    };
    let revision = snapshot
        .as_ref()
        .map(|s| s.latest().revision + 1)
        .unwrap_or(1);
    let observed = observe(ctx, release).await?;
    let role = if write.install {
        Role::Production
    } else {
        Role::Stage
    };
    let service = match role {
        Role::Production => &observed.production_service,
        Role::Stage => &observed.stage_service,
    }
    .as_ref()
    .map(|s| s.name.clone());
    let url = url(ctx, &values, role, service.as_deref());
    let image = state
        .image
        .clone()
        .unwrap_or_else(|| values.slot(slot).image());
    let next = plan::next_step(release, &values, &observed, &[]);
    let role = role.as_str();
    Ok(Outcome {
        json: json!({
            "operation": if write.install { "install" } else { "deploy" },
            "release": release, "namespace": ctx.namespace,
            "slot": slot, "role": role, "image": image,
            "ready": state.ready, "desired": state.desired,
            "revision": revision,
            "service": service, "url": url, "next": next,
        }),
        text: format!(
            "{release}: {slot} is ready ({}/{}) running {image} as {role}\n  {role} service: {} -> {url}\n\nnext: {next}\n",
            state.ready,
            state.desired,
            service.unwrap_or_default()
        ),
    })
}

// ---------------------------------------------------------------------------------------------
// swap / rollback

pub async fn swap(ctx: &Ctx, args: &SwapArgs) -> Result<Outcome> {
    if let Some(tag) = &args.expect_tag {
        names::validate_tag(tag)?;
    }
    let chart = ChartSource::resolve(ctx.global.chart.as_deref())?;
    locked(ctx, &args.release, "swap", || {
        swap_locked(
            ctx,
            &args.release,
            &chart,
            args.expect_tag.as_deref(),
            args.force,
            SwapKind::Swap,
        )
    })
    .await
}

pub async fn rollback(ctx: &Ctx, args: &RollbackArgs) -> Result<Outcome> {
    let chart = ChartSource::resolve(ctx.global.chart.as_deref())?;
    locked(ctx, &args.release, "rollback", || {
        swap_locked(
            ctx,
            &args.release,
            &chart,
            None,
            args.force,
            SwapKind::Rollback,
        )
    })
    .await
}

async fn swap_locked(
    ctx: &Ctx,
    release: &str,
    chart: &ChartSource,
    expect_tag: Option<&str>,
    force: bool,
    kind: SwapKind,
) -> Result<Outcome> {
    let snapshot = read_existing(ctx, release).await?;
    plan::check_helm_state(release, &snapshot.history)?;
    let plan = plan::plan_swap(
        release,
        &snapshot.values,
        &snapshot.observed,
        &snapshot.history,
        expect_tag,
        force,
        kind,
    )?;
    let (from, to) = (plan.from, plan.to);
    progress(&format!(
        "{} {release}: production {from} -> {to}",
        kind.verb()
    ));
    flip(ctx, release, chart, &snapshot, plan.write).await?;
    let endpoints = crate::wait::production_serves(&ctx.cluster(), release, to, ctx.global.timeout)
        .await
        .with_context(|| format!("helm applied the {} of {release}, but the production Service does not serve {to} yet", kind.verb()))?;
    let service = snapshot
        .observed
        .production_service
        .as_ref()
        .map(|s| s.name.clone())
        .unwrap_or_default();
    Ok(Outcome {
        json: json!({
            "operation": kind.verb(), "release": release, "namespace": ctx.namespace,
            "from": from, "to": to, "image": snapshot.values.slot(to).image(),
            "service": service, "ready_endpoints": endpoints,
            "url": url(ctx, &snapshot.values, Role::Production, Some(&service)),
            "next": format!("bgslot clean {release}   (or: bgslot rollback {release})"),
        }),
        text: format!(
            "{release}: production now routes to {to} ({}; service {service} has {endpoints} ready endpoints)\n  {from} still runs {}: `bgslot rollback {release}` returns to it\n\nnext: bgslot clean {release}   (after the drain delay)\n",
            snapshot.values.slot(to).image(),
            snapshot.values.slot(from).image(),
        ),
    })
}

async fn flip(
    ctx: &Ctx,
    release: &str,
    chart: &ChartSource,
    snapshot: &Snapshot,
    write: crate::helm::Write,
) -> Result<()> {
    let write = write_for_chart(chart, Some(snapshot), write);
    ctx.helm
        .write(release, chart.reference(), &write)
        .await
        .with_context(|| {
            format!(
                "{} of {release} in namespace {}",
                write.description, ctx.namespace
            )
        })
}

// ---------------------------------------------------------------------------------------------
// clean

pub async fn clean(ctx: &Ctx, args: &CleanArgs) -> Result<Outcome> {
    let chart = ChartSource::resolve(ctx.global.chart.as_deref())?;
    locked(ctx, &args.release, "clean", || {
        clean_locked(ctx, &args.release, &chart, args.min_age, args.force)
    })
    .await
}

async fn clean_locked(
    ctx: &Ctx,
    release: &str,
    chart: &ChartSource,
    min_age: Duration,
    force: bool,
) -> Result<Outcome> {
    let snapshot = read_existing(ctx, release).await?;
    plan::check_helm_state(release, &snapshot.history)?;
    let plan = plan::plan_clean(
        release,
        &snapshot.values,
        &snapshot.observed,
        &snapshot.history,
        Timestamp::now(),
        min_age,
        force,
    )?;
    let Some(plan) = plan else {
        let idle = snapshot.values.stage();
        return Ok(Outcome {
            json: json!({"operation": "clean", "release": release, "namespace": ctx.namespace, "slot": idle, "changed": false}),
            text: format!("{release}: nothing to clean: the {idle} slot is already disabled\n"),
        });
    };
    let slot = plan.slot;
    progress(&format!("clean {release}: disabling {slot}"));
    let write = write_for_chart(chart, Some(&snapshot), plan.write);
    ctx.helm
        .write(release, chart.reference(), &write)
        .await
        .with_context(|| {
            format!(
                "disabling the {slot} slot of {release} in namespace {}",
                ctx.namespace
            )
        })?;
    Ok(Outcome {
        json: json!({"operation": "clean", "release": release, "namespace": ctx.namespace, "slot": slot, "changed": true,
                     "next": format!("bgslot deploy {release} --tag NEW_TAG")}),
        text: format!(
            "{release}: disabled {slot} (was {}); production {} is untouched\n\nnext: bgslot deploy {release} --tag NEW_TAG\n",
            snapshot.values.slot(slot).image(),
            snapshot.values.production
        ),
    })
}

// ---------------------------------------------------------------------------------------------
// release

pub async fn release(ctx: &Ctx, args: &ReleaseArgs) -> Result<Outcome> {
    let req = deploy_request(&args.image)?;
    let verify = verify_argv(args.verify_cmd.as_deref())?;
    ensure_namespace(ctx, &args.image).await?;
    let chart = ChartSource::resolve(ctx.global.chart.as_deref())?;
    let release = &args.release;
    locked(ctx, release, "release", || async {
        let deployed = deploy_locked(ctx, release, &args.image, req.clone(), &chart).await?;
        let mut steps = vec![deployed.json.clone()];
        if deployed.json["operation"] == "install" {
            if let Some(cmd) = &verify {
                run_verify(ctx, cmd, "production", &deployed.json, &req.tag).await?;
            }
            return Ok(Outcome { json: json!({"operation": "release", "release": release, "steps": steps}), text: deployed.text });
        }
        if let Some(cmd) = &verify {
            run_verify(ctx, cmd, "stage", &deployed.json, &req.tag)
                .await
                .context("verification against stage failed; production is unchanged (the new version stays staged)")?;
        }
        let swapped = swap_locked(ctx, release, &chart, Some(&req.tag), false, SwapKind::Swap).await?;
        steps.push(swapped.json.clone());
        if let Some(cmd) = &verify {
            let prod = json!({"service": swapped.json["service"], "slot": swapped.json["to"], "url": swapped.json["url"]});
            if let Err(err) = run_verify(ctx, cmd, "production", &prod, &req.tag).await {
                progress(&format!("verification against production failed: {err:#}; swapping back"));
                let back = swap_locked(ctx, release, &chart, None, false, SwapKind::Rollback)
                    .await
                    .context("swapping back after the failed verification ALSO failed: check `bgslot status` now")?;
                return Err(err.context(format!(
                    "verification against production failed; production was swapped back to {}",
                    back.json["to"].as_str().unwrap_or("the previous slot")
                )));
            }
        }
        let (from, to) = (swapped.json["from"].as_str().unwrap_or_default(), swapped.json["to"].as_str().unwrap_or_default());
        let mut text = format!(
            "{release}: released {} in {to}; production routes to it ({} ready endpoints)\n",
            swapped.json["image"].as_str().unwrap_or_default(),
            swapped.json["ready_endpoints"]
        );
        if let Some(cmd) = &verify {
            text.push_str(&format!("  verified against stage and production with `{}`\n", cmd.join(" ")));
        }
        let mut next = format!("bgslot clean {release}   (or: bgslot rollback {release})");
        if args.clean {
            progress(&format!("waiting {}s (drain delay) before cleaning the old slot", args.min_age.as_secs()));
            let mut sigs = signals::subscribe();
            tokio::select! {
                _ = tokio::time::sleep(args.min_age) => {}
                sig = sigs.changed_to_signal() => bail!("interrupted by {} during the drain delay; production already runs the new version", signals::name(sig)),
            }
            let cleaned = clean_locked(ctx, release, &chart, args.min_age, false).await?;
            text.push_str(&format!("  {from} is disabled\n"));
            next = format!("bgslot deploy {release} --tag NEW_TAG");
            steps.push(cleaned.json);
        } else {
            text.push_str(&format!("  {from} still runs the previous version: `bgslot rollback {release}` returns to it\n"));
        }
        text.push_str(&format!("\nnext: {next}\n"));
        Ok(Outcome { json: json!({"operation": "release", "release": release, "namespace": ctx.namespace, "steps": steps}), text })
    })
    .await
}

/// Splits `--verify-cmd` into argv (quotes respected, no shell involved).
pub fn verify_argv(cmd: Option<&str>) -> Result<Option<Vec<String>>> {
    let Some(cmd) = cmd else { return Ok(None) };
    match shlex::split(cmd).filter(|v| !v.is_empty()) {
        Some(argv) => Ok(Some(argv)),
        None => Err(crate::error::UsageError(format!(
            "--verify-cmd '{cmd}' cannot be split into a program and arguments (check its quotes)"
        ))
        .into()),
    }
}

async fn run_verify(
    ctx: &Ctx,
    argv: &[String],
    target: &str,
    step: &Value,
    tag: &str,
) -> Result<()> {
    let url = step["url"].as_str().map(str::to_string).unwrap_or_default();
    progress(&format!("verify ({target}): {}", argv.join(" ")));
    // Its output goes to stderr with bgslot's progress: stdout carries bgslot's result (JSON).
    let to_stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating stderr for the verify command")?;
    let status = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(to_stderr))
        .env("BGSLOT_TARGET", target)
        .env("BGSLOT_URL", &url)
        .env(
            "BGSLOT_SERVICE",
            step["service"].as_str().unwrap_or_default(),
        )
        .env("BGSLOT_NAMESPACE", &ctx.namespace)
        .env("BGSLOT_SLOT", step["slot"].as_str().unwrap_or_default())
        .env("BGSLOT_TAG", tag)
        .status()
        .await
        .with_context(|| format!("could not run the verify command {}", argv[0]))?;
    if !status.success() {
        bail!(
            "verify command `{}` exited with {status} against {target}",
            argv.join(" ")
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// recover

pub async fn recover(ctx: &Ctx, args: &RecoverArgs) -> Result<Outcome> {
    let release = args.release.as_str();
    locked(ctx, release, "recover", || async {
        let history = ctx.helm.history(release).await?.ok_or_else(|| not_found(release, ctx))?;
        let latest = history.last().ok_or_else(|| not_found(release, ctx))?.clone();
        let Some(plan) = plan::plan_recover(release, &history, Timestamp::now(), args.min_age, args.force)? else {
            return Ok(Outcome {
                json: json!({"operation": "recover", "release": release, "namespace": ctx.namespace, "changed": false, "revision": latest.revision, "status": latest.status}),
                text: format!("{release}: nothing to recover: revision {} is {}\n", latest.revision, latest.status),
            });
        };
        let good = plan.to;
        progress(&format!("recover {release}: revision {} is {}; rolling back to revision {}", latest.revision, latest.status, good.revision));
        ctx.helm
            .rollback(release, good.revision)
            .await
            .with_context(|| format!("rolling {release} back to revision {}", good.revision))?;
        let after = read_existing(ctx, release).await?;
        let production = after.values.production;
        let live = after.observed.slot(production);
        Ok(Outcome {
            json: json!({"operation": "recover", "release": release, "namespace": ctx.namespace, "changed": true,
                         "from_revision": latest.revision, "to_revision": good.revision, "revision": after.latest().revision,
                         "status": after.latest().status, "production_slot": production, "production_ready": live.ready, "production_desired": live.desired}),
            text: format!(
                "{release}: recovered: revision {} ({}) restores revision {}; production {production} {}/{} ready\n\nnext: bgslot status {release}\n",
                after.latest().revision,
                after.latest().status,
                good.revision,
                live.ready,
                live.desired
            ),
        })
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// status / history

pub async fn status(ctx: &Ctx, release: &str) -> Result<Outcome> {
    let (snapshot, lock) = tokio::join!(
        read_existing(ctx, release),
        crate::lock::holder(ctx.client.clone(), &ctx.namespace, release)
    );
    let snapshot = snapshot?;
    let lock = lock?;
    let latest = snapshot.latest().clone();
    let values = &snapshot.values;
    let now = Timestamp::now();
    let slot_json = |slot: Slot| {
        let v = values.slot(slot);
        let s: &SlotState = snapshot.observed.slot(slot);
        let role = if slot == values.production {
            "production"
        } else {
            "stage"
        };
        json!({
            "slot": slot, "role": role, "enabled": v.enabled, "image": v.image(),
            "deployment": s.deployment, "ready": s.ready, "available": s.available, "desired": s.desired,
            "fully_available": s.fully_available(),
            "age_seconds": s.created.map(|c| now.duration_since(c).as_secs().max(0)),
        })
    };
    let service_json = |svc: &Option<crate::cluster::ServiceState>, role: &str| match svc {
        Some(s) => {
            json!({"name": s.name, "role": role, "selects": s.selector_slot, "ready_endpoints": s.ready, "not_ready_endpoints": s.not_ready})
        }
        None => {
            json!({"name": Value::Null, "role": role, "selects": Value::Null, "ready_endpoints": 0, "not_ready_endpoints": 0})
        }
    };
    let drift = plan::drift(release, values, &snapshot.observed);
    let helm_state = plan::check_helm_state(release, &snapshot.history).err();
    let next = match &helm_state {
        Some(_) => format!("bgslot recover {release}"),
        None => plan::next_step(release, values, &snapshot.observed, &snapshot.history),
    };
    let slots: Vec<Value> = Slot::ALL.iter().map(|s| slot_json(*s)).collect();
    let services = vec![
        service_json(&snapshot.observed.production_service, "production"),
        service_json(&snapshot.observed.stage_service, "stage"),
    ];
    let json = json!({
        "release": release, "namespace": ctx.namespace,
        "revision": latest.revision, "helm_status": latest.status, "chart": latest.chart,
        "helm_version": ctx.helm.version.to_string(), "description": latest.description,
        "production_slot": values.production, "stage_slot": values.stage(),
        "slots": slots, "services": services, "drift": drift,
        "problem": helm_state.as_ref().map(|r| json!({"reason": r.reason, "hint": r.hint})),
        "lock": lock.as_ref().map(|l| json!({"holder": l.holder, "since": l.since, "lease": l.lease})),
        "next": next,
    });
    let mut text = format!(
        "release {release} · namespace {} · revision {} {} · chart {} · helm {}\n\n",
        ctx.namespace, latest.revision, latest.status, latest.chart, ctx.helm.version
    );
    let mut rows = vec![[
        "SLOT".to_string(),
        "ROLE".into(),
        "IMAGE".into(),
        "READY".into(),
        "AGE".into(),
    ]];
    for slot in Slot::ALL {
        let v = values.slot(slot);
        let s = snapshot.observed.slot(slot);
        let role = if slot == values.production {
            "production"
        } else {
            "stage"
        };
        let (image, ready, age) = if v.enabled || s.deployment.is_some() {
            (
                v.image(),
                format!("{}/{}", s.ready, s.desired),
                s.created
                    .map(|c| human_age(now.duration_since(c).unsigned_abs()))
                    .unwrap_or_else(|| "-".into()),
            )
        } else {
            ("(disabled)".into(), "-".into(), "-".into())
        };
        rows.push([slot.to_string(), role.into(), image, ready, age]);
    }
    text.push_str(&table(&rows, "  "));
    text.push('\n');
    for (svc, role) in [
        (&snapshot.observed.production_service, "production"),
        (&snapshot.observed.stage_service, "stage"),
    ] {
        match svc {
            Some(s) => text.push_str(&format!(
                "  service {:<width$} -> {:<6} ({} ready endpoints)\n",
                s.name,
                s.selector_slot.as_deref().unwrap_or("none"),
                s.ready,
                width = services_width(&snapshot)
            )),
            None => text.push_str(&format!("  service ({role}) missing\n")),
        }
    }
    for line in &drift {
        text.push_str(&format!("\n  drift: {line}"));
    }
    if !drift.is_empty() {
        text.push('\n');
    }
    if let Some(problem) = &helm_state {
        text.push_str(&format!(
            "\n  problem: {}\n  {}\n",
            problem.reason, problem.hint
        ));
    }
    if let Some(lock) = &lock {
        text.push_str(&format!(
            "\n  lock: {} is running on it (since {})\n",
            lock.holder, lock.since
        ));
    }
    text.push_str(&format!("\nnext: {next}\n"));
    Ok(Outcome { json, text })
}

fn services_width(s: &Snapshot) -> usize {
    [&s.observed.production_service, &s.observed.stage_service]
        .iter()
        .filter_map(|x| x.as_ref().map(|x| x.name.len()))
        .max()
        .unwrap_or(0)
}

fn table<const N: usize>(rows: &[[String; N]], indent: &str) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(indent);
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub async fn history(ctx: &Ctx, release: &str) -> Result<Outcome> {
    let history = ctx
        .helm
        .history(release)
        .await?
        .ok_or_else(|| not_found(release, ctx))?;
    let mut rows = vec![[
        "REV".to_string(),
        "UPDATED".into(),
        "STATUS".into(),
        "CHART".into(),
        "DESCRIPTION".into(),
    ]];
    for r in &history {
        let updated = r
            .updated_at()
            .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| r.updated.clone());
        rows.push([
            r.revision.to_string(),
            updated,
            r.status.clone(),
            r.chart.clone(),
            describe(&r.description),
        ]);
    }
    Ok(Outcome {
        json: json!({"release": release, "namespace": ctx.namespace, "revisions": history}),
        text: table(&rows, ""),
    })
}

/// A history description as a person reads it.
pub fn describe(description: &str) -> String {
    let words: Vec<&str> = description.split_whitespace().collect();
    match words.as_slice() {
        ["bgslot", "install", slot, tag] => format!("bgslot install: {tag} in {slot} (production)"),
        ["bgslot", "deploy", slot, tag] => format!("bgslot deploy: {tag} staged in {slot}"),
        ["bgslot", "swap", flip] => {
            format!("bgslot swap: production {}", flip.replace("->", " -> "))
        }
        ["bgslot", "rollback", flip] => {
            format!("bgslot rollback: production {}", flip.replace("->", " -> "))
        }
        ["bgslot", "clean", slot] => format!("bgslot clean: {slot} disabled"),
        _ => description.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_descriptions_read_well() {
        assert_eq!(
            describe("bgslot swap blue->green"),
            "bgslot swap: production blue -> green"
        );
        assert_eq!(
            describe("bgslot deploy green v2"),
            "bgslot deploy: v2 staged in green"
        );
        assert_eq!(describe("bgslot clean blue"), "bgslot clean: blue disabled");
        assert_eq!(describe("Upgrade complete"), "Upgrade complete");
    }

    #[test]
    fn tables_align() {
        let rows = [["A".to_string(), "BB".into()], ["ccc".into(), "d".into()]];
        assert_eq!(table(&rows, "  "), "  A    BB\n  ccc  d\n");
    }
}
