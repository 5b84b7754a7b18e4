//! `bgslot status RELEASE`: which slot is live and which is staged, what each runs and how ready
//! it is, where the Services really route, and what to do next.

use std::fmt;

use anyhow::{Context, Result};
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use super::router::{self, Mode};
use super::{read, Invocation};
use crate::cluster::labels::MAIN_SERVICE;
use crate::cluster::{MigrationState, ServiceState};
use crate::commands::standing::{Heading, Standing};
use crate::context::Ctx;
use crate::duration::human_age;
use crate::error::Operation;
use crate::names::ReleaseName;
use crate::observe::{Found, History, Observation};
use crate::rules;
use crate::vocab::{Op, Role, Slot};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Helm release name
    #[arg(value_name = "RELEASE")]
    pub release: ReleaseName,
    /// Keep showing the status, again at every change of the slots, Services or helm revision,
    /// until interrupted (a terminal redraws it in place; -o json prints one document per line)
    #[arg(short, long)]
    pub watch: bool,
}

impl Args {
    pub async fn run(&self, run: &Invocation<'_>) -> Result<()> {
        if !self.watch {
            return read(run, Op::Status, &self.release, async |ctx: &Ctx| status(ctx, &self.release).await).await;
        }
        let ctx = run.connect().await?;
        watch(&ctx, run, &self.release).await.with_context(|| Operation {
            op: Op::Status,
            release: self.release.to_string(),
            namespace: ctx.namespace.clone(),
        })
    }
}

/// How long a watch lets the events of one change arrive (a write touches several objects at
/// once) before it reads and redraws: short, so a change shows within 100 ms.
const WATCH_SETTLE: std::time::Duration = std::time::Duration::from_millis(20);

/// Shows the status again at every change, until SIGINT or SIGTERM or until the reader goes
/// away. The events of one change make one frame ([`WATCH_SETTLE`]); ages move on by
/// themselves, so a new frame is for a change of anything else.
async fn watch(ctx: &Ctx, run: &Invocation<'_>, release: &ReleaseName) -> Result<()> {
    use futures::StreamExt;
    let mut report = status(ctx, release).await?;
    let mut changes = match &report {
        Mode::Bundled(_) => crate::wait::release_changes(&ctx.cluster, release).boxed(),
        Mode::Router(_) => crate::router::wait::changes(&ctx.cluster, release).boxed(),
    };
    let mut signals = crate::signals::subscribe();
    let ageless = |report: &Mode<StatusReport, router::status::Report>| match report.clone() {
        Mode::Bundled(mut report) => {
            report.slots.iter_mut().for_each(|s| s.age_seconds = None);
            Mode::Bundled(report)
        }
        Mode::Router(report) => Mode::Router(report.without_ages()),
    };
    let mut shown: Option<Mode<StatusReport, router::status::Report>> = None;
    loop {
        if shown.as_ref() != Some(&ageless(&report)) {
            if !run.ui.frame(&report)? {
                return Ok(());
            }
            shown = Some(ageless(&report));
        }
        tokio::select! {
            change = changes.next() => {
                if change.is_none() {
                    anyhow::bail!("the watch on {release} ended unexpectedly");
                }
                tokio::select! {
                    _ = tokio::time::sleep(WATCH_SETTLE) => {}
                    _ = signals.changed_to_signal() => return Ok(()),
                }
                while let Some(Some(())) = futures::FutureExt::now_or_never(changes.next()) {}
            }
            _ = signals.changed_to_signal() => return Ok(()),
        }
        report = status(ctx, release).await?;
    }
}

pub async fn status(ctx: &Ctx, release: &ReleaseName) -> Result<Mode<StatusReport, router::status::Report>> {
    let (found, lock) = tokio::join!(
        Observation::find(ctx, release, History::Latest),
        crate::lock::holder(ctx.client.clone(), &ctx.namespace, release)
    );
    let seen = match found? {
        Found::Release(seen) => *seen,
        Found::Missing => return Err(crate::observe::not_found(release, &ctx.namespace)),
        // Objects without a helm release are not a refusal here: status only reports.
        Found::Unmanaged(refusal) => {
            return Err(anyhow::anyhow!("{}: {}", refusal.reason, refusal.hint))
        }
    };
    let lock = lock?;
    if let Some(routes) = router::router_of(&seen)? {
        return Ok(Mode::Router(router::status::report(ctx, seen, routes, lock).await?));
    }
    Ok(Mode::Bundled(StatusReport::new(
        &seen,
        lock,
        ctx.helm.version.to_string(),
        Timestamp::now(),
    )))
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusReport {
    #[serde(flatten)]
    pub heading: Heading,
    pub slots: Vec<SlotStatus>,
    pub services: Vec<ServiceStatus>,
    pub drift: Vec<String>,
    #[serde(flatten)]
    pub standing: Standing,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SlotStatus {
    pub slot: Slot,
    pub role: Role,
    pub enabled: bool,
    pub image: String,
    pub deployment: Option<String>,
    pub ready: i32,
    pub available: i32,
    pub desired: i32,
    pub fully_available: bool,
    pub age_seconds: Option<i64>,
    /// The slot's migration Job, when the chart runs one.
    pub migration: Option<MigrationState>,
    /// Staged small (`deploy --preview-replicas`).
    pub preview: bool,
    /// The slot's workers: how many pods each runs.
    pub workers: Vec<WorkerStatus>,
    /// The slot's CronJobs: suspended in every slot but production.
    pub cron_jobs: Vec<CronJobStatus>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkerStatus {
    pub name: String,
    pub deployment: Option<String>,
    pub ready: i32,
    pub desired: i32,
    /// Some of its pods are ready: it takes work from its queue.
    pub consuming: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CronJobStatus {
    pub name: String,
    pub cron_job: String,
    pub schedule: String,
    pub suspended: bool,
    /// How long ago it last started a Job; `null` if it never did.
    pub last_schedule_seconds: Option<i64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServiceStatus {
    pub name: Option<String>,
    /// `main`, or the chart's `extraServices` key.
    pub service: String,
    pub role: Role,
    pub selects: Option<String>,
    pub ready_endpoints: usize,
    pub not_ready_endpoints: usize,
}

impl StatusReport {
    pub fn new(
        seen: &Observation,
        lock: Option<crate::error::LockHeld>,
        helm_version: String,
        now: Timestamp,
    ) -> StatusReport {
        let values = &seen.values;
        let latest = seen.latest();
        let release = seen.release.to_string();
        let role_of = |slot: Slot| Role::of(slot, values.production);
        let slots = Slot::ALL
            .iter()
            .map(|&slot| {
                let v = values.slot(slot);
                let s = seen.cluster.slot(slot);
                SlotStatus {
                    slot,
                    role: role_of(slot),
                    enabled: v.enabled,
                    image: v.image(),
                    deployment: s.deployment.clone(),
                    ready: s.ready,
                    available: s.available,
                    desired: s.desired,
                    fully_available: s.fully_available(),
                    age_seconds: s.created.map(|c| now.duration_since(c).as_secs().max(0)),
                    migration: seen.cluster.migration(slot).cloned(),
                    preview: v.preview,
                    workers: seen
                        .cluster
                        .workers_of(slot)
                        .map(|w| WorkerStatus {
                            name: w.name.clone(),
                            deployment: w.state.deployment.clone(),
                            ready: w.state.ready,
                            desired: w.state.desired,
                            consuming: w.consuming(),
                        })
                        .collect(),
                    cron_jobs: seen
                        .cluster
                        .cron_jobs_of(slot)
                        .map(|c| CronJobStatus {
                            name: c.name.clone(),
                            cron_job: c.cron_job.clone(),
                            schedule: c.schedule.clone(),
                            suspended: c.suspended,
                            last_schedule_seconds: c.last_schedule.map(|t| now.duration_since(t).as_secs().max(0)),
                        })
                        .collect(),
                }
            })
            .collect();
        let service = |key: &str, role: Role, s: Option<&ServiceState>| {
            ServiceStatus {
                name: s.map(|s| s.name.clone()),
                service: key.to_string(),
                role,
                selects: s.and_then(|s| s.selector_slot.clone()),
                ready_endpoints: s.map(|s| s.ready).unwrap_or(0),
                not_ready_endpoints: s.map(|s| s.not_ready).unwrap_or(0),
            }
        };
        StatusReport {
            heading: Heading::of(seen, values.production, helm_version),
            slots,
            services: Role::ALL
                .into_iter()
                .map(|role| service(MAIN_SERVICE, role, seen.cluster.service(role)))
                .chain(
                    seen.cluster
                        .extra_services
                        .iter()
                        .map(|e| service(&e.key, e.role, Some(&e.state))),
                )
                .collect(),
            // A hand edit that still owns a selector only stops Helm 4 (server-side apply).
            drift: rules::drift(&release, values, &seen.cluster)
                .into_iter()
                .chain(
                    rules::foreign_selector_owners(values, &seen.cluster)
                        .into_iter()
                        .filter(|_| seen.helm_major >= 4),
                )
                .collect(),
            standing: Standing::of(seen, lock, || rules::next_step(&release, values, &seen.cluster, latest)),
        }
    }
}

impl StatusReport {
    /// Workers and CronJobs, a row each with a column per slot: what each worker runs where,
    /// where each CronJob is active.
    fn workloads_table(&self) -> String {
        let [blue, green] = [&self.slots[0], &self.slots[1]];
        let mut rows: Vec<[String; 3]> = Vec::new();
        let mut workers: Vec<&str> = self.slots.iter().flat_map(|s| s.workers.iter().map(|w| w.name.as_str())).collect();
        workers.sort();
        workers.dedup();
        if !workers.is_empty() {
            rows.push(["WORKER".into(), blue.slot.to_string().to_uppercase(), green.slot.to_string().to_uppercase()]);
        }
        for name in workers {
            let cell = |s: &SlotStatus| match s.workers.iter().find(|w| w.name == name) {
                Some(w) if w.consuming => format!("{}/{} consuming", w.ready, w.desired),
                Some(w) => format!("{}/{}", w.ready, w.desired),
                None => "-".into(),
            };
            rows.push([name.to_string(), cell(blue), cell(green)]);
        }
        let mut crons: Vec<&str> = self.slots.iter().flat_map(|s| s.cron_jobs.iter().map(|c| c.name.as_str())).collect();
        crons.sort();
        crons.dedup();
        if !crons.is_empty() {
            rows.push(["CRONJOB".into(), blue.slot.to_string().to_uppercase(), green.slot.to_string().to_uppercase()]);
        }
        for name in crons {
            let cell = |s: &SlotStatus| match s.cron_jobs.iter().find(|c| c.name == name) {
                Some(c) if c.suspended => "suspended".to_string(),
                Some(c) => match c.last_schedule_seconds {
                    Some(ago) => format!("active, last run {} ago", human_age(std::time::Duration::from_secs(ago.max(0) as u64))),
                    None => "active".into(),
                },
                None => "-".into(),
            };
            rows.push([name.to_string(), cell(blue), cell(green)]);
        }
        if rows.is_empty() {
            return String::new();
        }
        format!("\n{}", crate::term::table(&rows, "  "))
    }
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.heading)?;
        let mut rows = vec![[
            "SLOT".to_string(),
            "ROLE".into(),
            "IMAGE".into(),
            "READY".into(),
            "AGE".into(),
        ]];
        for s in &self.slots {
            let (image, ready, age) = if s.enabled || s.deployment.is_some() {
                (
                    s.image.clone(),
                    format!("{}/{}", s.ready, s.desired),
                    s.age_seconds
                        .map(|a| human_age(std::time::Duration::from_secs(a.max(0) as u64)))
                        .unwrap_or_else(|| "-".into()),
                )
            } else {
                ("(disabled)".into(), "-".into(), "-".into())
            };
            rows.push([s.slot.to_string(), s.role.as_str().into(), image, ready, age]);
        }
        f.write_str(&crate::term::table(&rows, "  "))?;
        f.write_str(&self.workloads_table())?;
        for s in &self.slots {
            if s.preview {
                writeln!(f, "  {} is staged small: swap brings it to production's capacity first", s.slot)?;
            }
            if let Some(m) = &s.migration {
                let phase = m.phase.as_str();
                let reason = m.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
                writeln!(f, "  {} migration: {} {phase}{reason}", s.slot, m.job)?;
            }
        }
        writeln!(f)?;
        let width = self
            .services
            .iter()
            .filter_map(|s| s.name.as_ref().map(String::len))
            .max()
            .unwrap_or(0);
        for s in &self.services {
            match &s.name {
                Some(name) => writeln!(
                    f,
                    "  service {name:<width$} -> {:<6} ({} ready endpoints)",
                    s.selects.as_deref().unwrap_or("none"),
                    s.ready_endpoints
                )?,
                None => writeln!(f, "  service ({}) missing", s.role.as_str())?,
            }
        }
        for line in &self.drift {
            write!(f, "\n  drift: {line}")?;
        }
        if !self.drift.is_empty() {
            writeln!(f)?;
        }
        write!(f, "{}", self.standing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    #[test]
    fn status_names_both_slots_services_and_the_next_step() {
        let seen = observation(
            values(Slot::Blue, true),
            observed(3, 3),
            vec![rev(2, "deployed", "bgslot deploy green v2", "t")],
        );
        let report = StatusReport::new(&seen, None, "v4.1.4".into(), Timestamp::now());
        assert_eq!(report.standing.next, "bgslot swap web --expect-tag v2");
        assert_eq!(report.slots[1].role, Role::Stage);
        let text = report.to_string();
        assert!(text.starts_with("release web · namespace shop · revision 2 deployed · chart bgslot-0.1.0 · helm v4.1.4\n"), "{text}");
        assert!(text.contains("  green  stage       web:v2  3/3    -\n"), "{text}");
        assert!(text.contains("  service web-stage -> green  (3 ready endpoints)\n"), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            (json["slots"][0]["role"].as_str(), json["problem"].is_null()),
            (Some("production"), true)
        );
    }

    #[test]
    fn a_stuck_release_points_at_recover() {
        let seen = observation(
            values(Slot::Blue, false),
            observed(3, 0),
            vec![
                rev(1, "deployed", "", "t"),
                rev(2, "pending-upgrade", "", "t"),
            ],
        );
        let report = StatusReport::new(&seen, None, "v3.17.2".into(), Timestamp::now());
        assert_eq!(report.standing.next, "bgslot recover web");
        assert!(report.standing.problem.unwrap().reason.contains("pending-upgrade"));
    }
}
