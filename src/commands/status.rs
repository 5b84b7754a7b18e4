//! `bgslot status RELEASE`: which slot is live and which is staged, what each runs and how ready
//! it is, where the Services really route, and what to do next, for either kind of slot (a
//! router's slot releases with their helm revision and chart).

use std::fmt;

use anyhow::{Context, Result};
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use super::{read, Invocation};
use crate::cluster::MigrationState;
use crate::commands::standing::{Heading, Standing};
use crate::context::Ctx;
use crate::duration::human_age;
use crate::error::{LockHeld, Operation};
use crate::names::ReleaseName;
use crate::observe::{Found, History, Observation};
use crate::slots::router::{AppSettings, Risk};
use crate::slots::{self, Holds, Seen, SlotKind};
use crate::vocab::{Mode, Op, Role, Slot};
use crate::{with_kind, with_mode};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Helm release name
    #[arg(value_name = "RELEASE")]
    pub release: ReleaseName,
    /// Keep showing the status, again at every change of the slots, Services or helm revision,
    /// until interrupted (a terminal redraws it in place; -o json prints one document per line)
    #[arg(short, long)]
    pub watch: bool,
    /// With targets: exit 5 when they do not all serve one version (status exits 0 either way
    /// without it)
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub targets: super::Targets,
}

impl Args {
    pub async fn run(&self, run: &Invocation<'_>) -> Result<()> {
        if self.check {
            return Err(crate::error::UsageError(
                "--check compares several clusters: give --targets FILE or --target NAME=CONTEXT".into(),
            )
            .into());
        }
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
    let (mut report, mode) = status_of(ctx, release).await?;
    let mut changes = with_mode!(mode, Kind => Kind::changes(&ctx.cluster, release));
    let mut signals = crate::signals::subscribe();
    let mut shown: Option<StatusReport> = None;
    loop {
        if shown.as_ref() != Some(&report.clone().without_ages()) {
            if !run.ui.frame(&report)? {
                return Ok(());
            }
            shown = Some(report.clone().without_ages());
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

pub async fn status(ctx: &Ctx, release: &ReleaseName) -> Result<StatusReport> {
    status_of(ctx, release).await.map(|(report, _)| report)
}

/// The status of `release`, and its kind.
async fn status_of(ctx: &Ctx, release: &ReleaseName) -> Result<(StatusReport, Mode)> {
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
    let read = slots::found(ctx, seen).await?;
    let (helm, now) = (ctx.helm.version.to_string(), Timestamp::now());
    let report = with_kind!(&read, seen => StatusReport::new(seen, lock, helm, now));
    Ok((report, read.mode()))
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusReport {
    /// `revision` is the release's own (the router's, for a router).
    #[serde(flatten)]
    pub heading: Heading,
    pub mode: Mode,
    /// A router's chart and how bgslot sets a version in it; `null` for bgslot's own chart.
    #[serde(serialize_with = "snake_case_keys")]
    pub app: Option<AppSettings>,
    pub slots: Vec<SlotStatus>,
    pub services: Vec<ServiceStatus>,
    pub drift: Vec<String>,
    /// Accepted risks, and releases a deploy that did not finish left.
    pub warnings: Vec<String>,
    #[serde(flatten)]
    pub standing: Standing,
}

/// A router's app settings as reports spell keys: snake_case, where its record in the router's
/// values keeps helm's camelCase.
fn snake_case_keys<S: serde::Serializer>(app: &Option<AppSettings>, s: S) -> Result<S::Ok, S::Error> {
    let value = serde_json::to_value(app).map_err(serde::ser::Error::custom)?;
    let snake = |key: &str| {
        key.chars().fold(String::new(), |mut out, c| {
            if c.is_ascii_uppercase() {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            out
        })
    };
    match value {
        serde_json::Value::Object(map) => map
            .into_iter()
            .map(|(k, v)| (snake(&k), v))
            .collect::<serde_json::Map<_, _>>()
            .serialize(s),
        other => other.serialize(s),
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SlotStatus {
    pub slot: Slot,
    pub role: Role,
    /// It holds a version.
    pub enabled: bool,
    /// The slot release, `RELEASE-SLOT` (a router's; `null` for bgslot's chart).
    pub release: Option<String>,
    /// What the router records: "" (never deployed), `deployed` or `cleaned`.
    pub state: Option<String>,
    /// The slot release's latest helm revision and status.
    pub revision: Option<u64>,
    pub status: Option<String>,
    /// `NAME-VERSION` of the chart the slot release runs, and its app version.
    pub chart: Option<String>,
    pub app_version: Option<String>,
    /// The version bgslot put there (a tag, or a digest).
    pub tag: String,
    pub image: String,
    /// Its (first serving) Deployment.
    pub deployment: Option<String>,
    pub ready: i32,
    pub available: i32,
    pub desired: i32,
    pub fully_available: bool,
    pub age_seconds: Option<i64>,
    pub deployments: Vec<DeploymentStatus>,
    /// The slot's migration Job, when the chart runs one.
    pub migration: Option<MigrationState>,
    /// Staged small (`deploy --preview-replicas`).
    pub preview: bool,
    /// The slot's workers: how many pods each runs.
    pub workers: Vec<WorkerStatus>,
    /// The slot's CronJobs: suspended in every slot but production.
    pub cron_jobs: Vec<CronJobStatus>,
    /// The risks its render has, accepted by name.
    pub accepted: Vec<Risk>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeploymentStatus {
    pub name: String,
    pub ready: i32,
    pub available: i32,
    pub desired: i32,
    /// Its pods serve the slot's traffic.
    pub routed: bool,
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
    /// `main`, or the `extraServices` key.
    pub service: String,
    pub role: Role,
    /// The slot it routes to.
    pub routes_to: Option<Slot>,
    /// The slot its selector picks, `none` for a router Service that selects nothing, `null` for
    /// a selector of no slot bgslot knows.
    pub selects: Option<String>,
    pub ready_endpoints: usize,
    pub not_ready_endpoints: usize,
}

impl StatusReport {
    pub fn new<K: SlotKind>(
        seen: &Seen<K>,
        lock: Option<LockHeld>,
        helm_version: String,
        now: Timestamp,
    ) -> StatusReport {
        let release = &seen.release;
        let production = seen.production();
        let age = |t: k8s_openapi::jiff::Timestamp| now.duration_since(t).as_secs().max(0);
        let slots = Slot::ALL
            .iter()
            .map(|&slot| {
                let view = seen.slot(slot);
                let cluster = &release.cluster;
                SlotStatus {
                    slot,
                    role: Role::of(slot, production),
                    enabled: view.holds == Holds::Version,
                    state: view.release.as_ref().map(|_| {
                        match view.holds {
                            Holds::Nothing => "",
                            Holds::Version => "deployed",
                            Holds::Cleaned => "cleaned",
                        }
                        .to_string()
                    }),
                    release: view.release.clone(),
                    revision: view.helm.as_ref().map(|h| h.revision),
                    status: view.helm.as_ref().map(|h| h.status.clone()),
                    chart: view.chart.clone(),
                    app_version: view.app_version.clone(),
                    tag: view.tag.clone(),
                    image: view.image.clone(),
                    deployment: view.deployment().map(str::to_string),
                    ready: view.totals.ready,
                    available: view.totals.available,
                    desired: view.totals.desired,
                    fully_available: view.available,
                    age_seconds: view.created.map(age),
                    deployments: view
                        .deployments
                        .iter()
                        .map(|d| DeploymentStatus {
                            name: d.name.clone(),
                            ready: d.state.ready,
                            available: d.state.available,
                            desired: d.state.desired,
                            routed: view.is_routed(d),
                        })
                        .collect(),
                    migration: view.migration.clone(),
                    preview: view.preview,
                    workers: cluster
                        .workers_of(slot)
                        .map(|w| WorkerStatus {
                            name: w.name.clone(),
                            deployment: w.state.deployment.clone(),
                            ready: w.state.ready,
                            desired: w.state.desired,
                            consuming: w.consuming(),
                        })
                        .collect(),
                    cron_jobs: cluster
                        .cron_jobs_of(slot)
                        .map(|c| CronJobStatus {
                            name: c.name.clone(),
                            cron_job: c.cron_job.clone(),
                            schedule: c.schedule.clone(),
                            suspended: c.suspended,
                            last_schedule_seconds: c.last_schedule.map(age),
                        })
                        .collect(),
                    accepted: view.accepted.clone(),
                }
            })
            .collect();
        let missing = Role::ALL
            .into_iter()
            .filter(|&role| seen.service(role).is_none())
            .map(|role| ServiceStatus {
                name: None,
                service: crate::cluster::labels::MAIN_SERVICE.into(),
                role,
                routes_to: None,
                selects: None,
                ready_endpoints: 0,
                not_ready_endpoints: 0,
            });
        let mut services: Vec<ServiceStatus> = seen
            .services
            .iter()
            .map(|s| ServiceStatus {
                name: Some(s.name.clone()),
                service: s.key.clone(),
                role: s.role,
                routes_to: s.routes_to,
                selects: K::selects(seen, s),
                ready_endpoints: s.ready,
                not_ready_endpoints: s.not_ready,
            })
            .chain(missing)
            .collect();
        services.sort_by_key(|s| (s.service != crate::cluster::labels::MAIN_SERVICE, s.role));
        let mut drift = seen.drift.clone();
        drift.extend(Slot::ALL.iter().filter_map(|&slot| seen.slot(slot).drift.clone()));
        // A hand edit that still owns a selector only stops Helm 4 (server-side apply).
        if release.helm_major >= 4 {
            drift.extend(seen.foreign_owners());
        }
        StatusReport {
            heading: Heading::of(release, production, helm_version),
            mode: K::MODE,
            app: K::app(seen).cloned(),
            slots,
            services,
            drift,
            warnings: seen.warnings.clone(),
            standing: Standing::of(release, lock, || seen.next_step()),
        }
    }

    /// The same without ages, which move on by themselves (`--watch` redraws on a change of
    /// anything else).
    pub fn without_ages(mut self) -> StatusReport {
        self.slots.iter_mut().for_each(|s| s.age_seconds = None);
        self
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
        write!(f, "{}", self.heading)?;
        if let Some(app) = &self.app {
            let version = if app.version.is_empty() {
                String::new()
            } else {
                format!(" {}", app.version)
            };
            writeln!(f, "router of {}{version} (tag at {})", app.chart, app.tag_key)?;
        }
        writeln!(f)?;
        // A router's slots are releases: their release, revision, helm status and chart too.
        let releases = self.mode == Mode::Router;
        let mut header = vec!["SLOT", "ROLE"];
        if releases {
            header.extend(["RELEASE", "REV", "STATUS", "CHART"]);
        }
        header.extend(["IMAGE", "READY", "AGE"]);
        let mut rows: Vec<Vec<String>> = vec![header.into_iter().map(String::from).collect()];
        for s in &self.slots {
            let shown = s.enabled || (s.release.is_none() && s.deployment.is_some());
            let dash = || "-".to_string();
            let mut row = vec![s.slot.to_string(), s.role.as_str().into()];
            if releases {
                row.extend([
                    s.release.clone().unwrap_or_else(dash),
                    s.revision.map(|r| r.to_string()).unwrap_or_else(dash),
                    s.status.clone().unwrap_or_else(dash),
                    s.chart.clone().filter(|_| shown).unwrap_or_else(dash),
                ]);
            }
            if shown {
                row.extend([
                    s.image.clone(),
                    format!("{}/{}", s.ready, s.desired),
                    s.age_seconds
                        .map(|a| human_age(std::time::Duration::from_secs(a.max(0) as u64)))
                        .unwrap_or_else(dash),
                ]);
            } else {
                let empty = match s.state.as_deref() {
                    None => "(disabled)",
                    Some("cleaned") => "(cleaned)",
                    Some(_) => "(empty)",
                };
                row.extend([empty.to_string(), dash(), dash()]);
            }
            rows.push(row);
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
                    s.selects.as_deref().unwrap_or("?"),
                    s.ready_endpoints
                )?,
                None => writeln!(f, "  service ({}) missing", s.role.as_str())?,
            }
        }
        for (label, lines) in [("drift", &self.drift), ("warning", &self.warnings)] {
            for line in lines {
                write!(f, "\n  {label}: {line}")?;
            }
            if !lines.is_empty() {
                writeln!(f)?;
            }
        }
        write!(f, "{}", self.standing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    use crate::slots::{bundled, router};

    #[test]
    fn status_names_both_slots_services_and_the_next_step() {
        let seen = bundled::seen(observation(
            values(Slot::Blue, true),
            observed(3, 3),
            vec![rev(2, "deployed", "bgslot deploy green v2", "t")],
        ));
        let report = StatusReport::new(&seen, None, "v4.1.4".into(), Timestamp::now());
        assert_eq!(report.standing.next, "bgslot swap web --expect-tag v2");
        assert_eq!(report.slots[1].role, Role::Stage);
        let text = report.to_string();
        assert!(text.starts_with("release web · namespace shop · revision 2 deployed · chart bgslot-0.1.0 · helm v4.1.4\n\n  SLOT"), "{text}");
        assert!(text.contains("  green  stage       web:v2  3/3    -\n"), "{text}");
        assert!(text.contains("  service web-stage -> green  (3 ready endpoints)\n"), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            (json["slots"][0]["role"].as_str(), json["problem"].is_null(), json["mode"].as_str()),
            (Some("production"), true, Some("bundled"))
        );
        assert!(json["slots"][0]["release"].is_null() && json["app"].is_null());
    }

    #[test]
    fn a_stuck_release_points_at_recover() {
        let seen = bundled::seen(observation(
            values(Slot::Blue, false),
            observed(3, 0),
            vec![
                rev(1, "deployed", "", "t"),
                rev(2, "pending-upgrade", "", "t"),
            ],
        ));
        let report = StatusReport::new(&seen, None, "v3.17.2".into(), Timestamp::now());
        assert_eq!(report.standing.next, "bgslot recover web");
        assert!(report.standing.problem.as_ref().unwrap().reason.contains("pending-upgrade"));
        assert!(report.to_string().contains("  green  stage       (disabled)  -      -\n"), "{report}");
    }

    #[test]
    fn a_router_shows_each_slot_release_where_the_services_route_and_the_next_step() {
        let mut seen = router::fixtures::seen(Slot::Blue, true, &["bgslot install blue v1", "bgslot deploy green v2"]);
        seen.kind.values.slots.green.accepted = vec![Risk::Jobs];
        seen.warnings = vec!["green (web-green) runs with accepted risks: jobs".into()];
        let report = StatusReport::new(&seen, None, "v4.1.4".into(), Timestamp::now());
        assert_eq!(report.standing.next, "bgslot swap web --expect-tag v2");
        assert_eq!(report.services[1].selects.as_deref(), Some("green"));
        assert_eq!(report.slots[1].release.as_deref(), Some("web-green"));
        let text = report.to_string();
        assert!(text.contains("router of  (tag at image.tag)\n\n  SLOT"), "{text}");
        assert!(
            text.contains("  green  stage       web-green  1    deployed  myapp-0.1.0  nginx:v2  3/3    -\n"),
            "{text}"
        );
        assert!(text.contains("  service web-stage -> green  (3 ready endpoints)\n"), "{text}");
        assert!(text.contains("\n  warning: green (web-green) runs with accepted risks: jobs\n"), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            (json["mode"].as_str(), json["slots"][0]["revision"].as_u64(), json["app"]["tag_key"].as_str()),
            (Some("router"), Some(1), Some("image.tag"))
        );
    }

    #[test]
    fn a_router_shows_drift_and_an_empty_stage() {
        let mut seen = router::fixtures::seen(Slot::Blue, false, &["bgslot install blue v1"]);
        seen.services[0].selector = std::collections::BTreeMap::from([("app".to_string(), "x".to_string())]);
        seen = router::seen(seen.release, seen.kind.values, seen.kind.live, seen.services, seen.kind.leftovers);
        let report = StatusReport::new(&seen, None, "v3.17.2".into(), Timestamp::now());
        assert_eq!(report.services[1].selects.as_deref(), Some("none"));
        assert_eq!(report.services[0].selects, None);
        assert!(report.drift[0].contains("Service web (production) selects {app=x}"), "{:?}", report.drift);
        assert!(
            report.warnings[0].contains("release web-green exists in the green slot, but the router does not route to it"),
            "{:?}",
            report.warnings
        );
        assert!(report.to_string().contains("(empty)"));
    }
}
