//! `bgslot release` of a router: the whole cycle under one lock, as for the bundled chart: deploy
//! the new version to the idle slot release, verify against stage, swap, verify against
//! production (swapping back when that fails), and with `--clean` uninstall the old slot after the
//! drain delay.

use std::fmt;
use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::deploy;
use super::MODE;
use super::{clean, router_of, swap};
use crate::commands::deploy::args::ImageArgs;
use crate::commands::preview::PlannedStep;
use crate::commands::{Header, Outcome, Session};
use crate::names::shell_words;
use crate::observe::{History, Observation};
use crate::router::observe::RouterSeen;
use crate::vocab::{Op, Role, Slot};
use crate::wait;

/// What `release` asks besides the deploy's flags.
pub struct Cycle<'a> {
    /// `--verify-cmd`, split into words.
    pub verify: Option<&'a [String]>,
    pub clean: bool,
    pub min_age: Duration,
    pub force: bool,
}

/// Runs the router variant of `release` when `seen` is a router (or `--app-chart` makes one).
pub async fn dispatch(
    s: &Session<'_>,
    seen: Option<&Observation>,
    image: &ImageArgs,
    cycle: &Cycle<'_>,
) -> Result<Option<Outcome<Report>>> {
    let Some(deployed) = deploy::dispatch(s, seen, image, cycle.force).await? else {
        return Ok(None);
    };
    let deployed = match deployed {
        Outcome::Planned(mut plan) => {
            plan.header.operation = Op::Release;
            let install = seen.is_none();
            let verify = |target: &str| {
                PlannedStep::action(format!(
                    "verify against {target}: {}",
                    cycle.verify.map(shell_words).unwrap_or_default()
                ))
            };
            if cycle.verify.is_some() {
                plan = plan.step(verify(if install { "production" } else { "stage" }));
            }
            if !install {
                let (from, to) = (plan.header.production_slot, plan.header.stage_slot);
                plan = plan.step(PlannedStep::action(format!(
                    "swap: production {} -> {} (one router write: productionSlot), after the checks swap makes",
                    from.map(Slot::as_str).unwrap_or("?"),
                    to.map(Slot::as_str).unwrap_or("?"),
                )));
                if cycle.verify.is_some() {
                    plan = plan.step(verify("production (on failure: swap back)"));
                }
                if cycle.clean {
                    plan = plan.step(PlannedStep::action(format!(
                        "after the drain delay ({}s), clean: uninstall the old slot's release, keeping its history, and record it in the router",
                        cycle.min_age.as_secs()
                    )));
                }
            }
            return Ok(Some(Outcome::Planned(plan)));
        }
        Outcome::Done(report) => report,
    };
    run(s, deployed, cycle)
        .await
        .map(|r| Some(Outcome::Done(r)))
}

async fn read(s: &Session<'_>, need: History) -> Result<RouterSeen> {
    let seen = Observation::existing(s.ctx, s.release, need).await?;
    let router = router_of(&seen)?.context("the release is no router any more")?;
    RouterSeen::read(s.ctx, seen, router).await
}

async fn run(s: &Session<'_>, deployed: deploy::Report, cycle: &Cycle<'_>) -> Result<Report> {
    let ctx = s.ctx;
    let version = deployed.version.clone();
    if deployed.header.operation == Op::Install {
        if let Some(cmd) = cycle.verify {
            verify(
                s,
                cmd,
                Role::Production,
                &deployed.url,
                deployed.service.as_deref().unwrap_or_default(),
                deployed.slot,
                &version,
            )
            .await?;
        }
        return Ok(Report::new(deployed, None, None, cycle.verify.is_some()));
    }
    if let Some(cmd) = cycle.verify {
        verify(s, cmd, Role::Stage, &deployed.url, deployed.service.as_deref().unwrap_or_default(), deployed.slot, &version)
            .await
            .context("verification against stage failed; production is unchanged (the new version stays staged)")?;
    }
    let rs = read(s, History::Latest).await?;
    let flip = swap::decide(&rs, Op::Swap, Some(&version), cycle.force, &ctx.chart)?;
    let swapped = swap::act(s, &rs, flip).await?;
    if let Some(cmd) = cycle.verify {
        if let Err(err) = verify(
            s,
            cmd,
            Role::Production,
            &swapped.url,
            &swapped.service,
            swapped.to,
            &version,
        )
        .await
        {
            ctx.events.step(&format!(
                "verification against production failed: {err:#}; swapping back"
            ));
            let back = async {
                let rs = read(s, History::Full).await?;
                let flip = swap::decide(&rs, Op::Rollback, None, cycle.force, &ctx.chart)?;
                swap::act(s, &rs, flip).await
            }
            .await
            .context("swapping back after the failed verification ALSO failed: check `bgslot status` now")
            .with_context(|| format!("verification against production failed: {err:#}"))?;
            return Err(err.context(format!(
                "verification against production failed; production was swapped back to {}",
                back.to
            )));
        }
    }
    let cleaned = if cycle.clean {
        wait::drain_delay(cycle.min_age, ctx.events.as_ref()).await?;
        let rs = read(s, History::Full).await?;
        // The drain delay is never skipped here: --force only lifts the ownership check.
        let request = clean::Request {
            min_age: cycle.min_age,
            force: false,
            over_gitops: cycle.force,
        };
        match clean::decide(
            &rs,
            None,
            k8s_openapi::jiff::Timestamp::now(),
            &request,
            &ctx.chart,
        )? {
            Some(plan) => Some(clean::act(s, &rs, plan).await?),
            None => None,
        }
    } else {
        None
    };
    Ok(Report::new(
        deployed,
        Some(swapped),
        cleaned,
        cycle.verify.is_some(),
    ))
}

/// Runs the verify command against `target` (stage or production): no shell, its output on
/// stderr with bgslot's progress (stdout carries the report).
async fn verify(
    s: &Session<'_>,
    argv: &[String],
    target: Role,
    url: &str,
    service: &str,
    slot: Slot,
    version: &str,
) -> Result<()> {
    let shown = shell_words(argv);
    s.ctx.events.step(&format!("verify ({target}): {shown}"));
    let to_stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating stderr for the verify command")?;
    let status = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(to_stderr))
        .env("BGSLOT_TARGET", target.as_str())
        .env("BGSLOT_URL", url)
        .env("BGSLOT_SERVICE", service)
        .env("BGSLOT_NAMESPACE", &s.ctx.namespace)
        .env("BGSLOT_SLOT", slot.as_str())
        .env("BGSLOT_TAG", version)
        .status()
        .await
        .with_context(|| format!("could not run the verify command {}", argv[0]))?;
    if !status.success() {
        bail!("verify command `{shown}` exited with {status} against {target}");
    }
    Ok(())
}

/// What a router release reports: the bundled release's fields; its steps are the router
/// deploy, swap and clean documents.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub header: Header,
    pub mode: &'static str,
    pub image: String,
    pub verified: Vec<Role>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Step {
    Deploy(deploy::Report),
    Swap(swap::Report),
    Clean(clean::Report),
}

impl Report {
    fn new(
        deployed: deploy::Report,
        swapped: Option<swap::Report>,
        cleaned: Option<clean::Report>,
        verified: bool,
    ) -> Report {
        let verified = match (&swapped, verified) {
            (_, false) => vec![],
            (None, true) => vec![Role::Production],
            (Some(_), true) => vec![Role::Stage, Role::Production],
        };
        let last = match (&swapped, &cleaned) {
            (None, _) => &deployed.header,
            (Some(s), None) => &s.header,
            (Some(_), Some(c)) => &c.header,
        };
        let header = Header {
            operation: Op::Release,
            ..last.clone()
        };
        let image = swapped
            .as_ref()
            .map(|s| s.image.clone())
            .unwrap_or_else(|| deployed.image.clone());
        Report {
            header,
            mode: MODE,
            image,
            verified,
            steps: std::iter::once(Step::Deploy(deployed))
                .chain(swapped.map(Step::Swap))
                .chain(cleaned.map(Step::Clean))
                .collect(),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let swapped = self.steps.iter().find_map(|s| match s {
            Step::Swap(s) => Some(s),
            _ => None,
        });
        let Some(swapped) = swapped else {
            if let Some(Step::Deploy(d)) = self.steps.first() {
                d.fmt(f)?;
            }
            if !self.verified.is_empty() {
                writeln!(f, "  verified against production")?;
            }
            return Ok(());
        };
        let release = &self.header.release;
        writeln!(
            f,
            "{release}: released {} in {} (release {}); production routes to it ({} ready endpoints)",
            swapped.image, swapped.to, swapped.slot_release, swapped.ready_endpoints
        )?;
        if !self.verified.is_empty() {
            let verified: Vec<&str> = self.verified.iter().map(|r| r.as_str()).collect();
            writeln!(f, "  verified against {}", verified.join(" and "))?;
        }
        match self.steps.iter().find_map(|s| match s {
            Step::Clean(c) => Some(c),
            _ => None,
        }) {
            Some(c) => writeln!(f, "  {} (release {}) is uninstalled", c.slot, c.slot_release)?,
            None => writeln!(
                f,
                "  {} still runs the previous version (release {}): `bgslot rollback {release}` returns to it",
                swapped.from, swapped.previous_release
            )?,
        }
        writeln!(f, "\nnext: {}", self.header.next_step())
    }
}
