//! `status` and `history` across targets: the one read each command makes, on every target at
//! once, shown together. `status` is one table, a row per target, and whether they all serve one
//! version (`consistent: yes`, or `consistent: no (eu v7, us v6)`); it exits 0 either way, and
//! with `--check` a mix exits 5. A target that cannot be read is shown and makes it exit 1.

use anyhow::Result;
use futures::future::join_all;

use super::decide::{self, Phase};
use super::report::{self, FleetReport};
use super::{unsupported, Run};
use crate::commands::history::{self, HistoryReport};
use crate::commands::status::{self, StatusReport};
use crate::error::ExitStatus;
use crate::vocab::Role;

pub async fn status(run: &mut Run<'_>, args: &status::Args) -> Result<()> {
    if args.watch {
        return Err(unsupported(
            "--watch follows one release: run `bgslot status RELEASE --watch` with each target's --kube-context",
        ));
    }
    let release = run.release;
    let ctxs = run.connect_each().await;
    let read = join_all(ctxs.iter().map(|ctx| async move {
        match ctx {
            Some(ctx) => Some(status::status(ctx, release).await),
            None => None,
        }
    }))
    .await;
    let mut reports: Vec<Option<StatusReport>> = Vec::new();
    for (i, result) in read.into_iter().enumerate() {
        match result {
            Some(Ok(report)) => {
                let production = report.heading.production_slot;
                let tag = report
                    .slots
                    .iter()
                    .find(|s| s.role == Role::Production)
                    .map(|s| s.tag.clone())
                    .unwrap_or_default();
                run.standings[i].production = Some((production, tag));
                run.enter(i, Phase::Done);
                run.report(i, &report);
                reports.push(Some(report));
            }
            Some(Err(err)) => {
                run.fail(i, &err);
                reports.push(None);
            }
            // Could not connect: recorded already.
            None => reports.push(None),
        }
    }
    let names: Vec<String> = (0..ctxs.len()).map(|i| run.name(i).to_string()).collect();
    let unread: Vec<&str> = (0..ctxs.len())
        .filter(|&i| reports[i].is_none())
        .map(|i| names[i].as_str())
        .collect();
    // Only what was read is compared: a target that could not be read has no version to differ.
    let read: Vec<usize> = (0..ctxs.len()).filter(|&i| reports[i].is_some()).collect();
    let versions: Vec<Option<&str>> = read.iter().map(|&i| run.standings[i].version()).collect();
    let read_names: Vec<&str> = read.iter().map(|&i| names[i].as_str()).collect();
    let mixed = decide::mixed_start(&read_names, &versions);
    let consistent = match (&mixed, unread.is_empty()) {
        (Some(versions), _) => format!("consistent: no ({versions})"),
        (None, true) => "consistent: yes".to_string(),
        (None, false) => format!(
            "consistent: unknown ({} could not be read)",
            unread.join(", ")
        ),
    };
    let text = format!(
        "{} across {} targets\n\n{}\n{consistent}\n",
        release,
        ctxs.len(),
        table(run, &reports)
    );
    if !unread.is_empty() || (args.check && mixed.is_some()) {
        let (status, lead) = if unread.is_empty() {
            (
                ExitStatus::Mixed,
                format!(
                    "the targets of {release} do not serve one version: {}",
                    mixed.unwrap_or_default()
                ),
            )
        } else {
            (
                ExitStatus::Failed,
                format!(
                    "could not read every target of {release}: {}",
                    unread.join(", ")
                ),
            )
        };
        return shown(run, text, Err((status, lead)));
    }
    shown(run, text, Ok(Some(mixed.is_none())))
}

/// A row per target: production and stage (slot and version), how ready production is, the
/// release's revision, and who holds its lock.
fn table(run: &Run<'_>, reports: &[Option<StatusReport>]) -> String {
    let mut lines: Vec<Vec<String>> = vec![[
        "TARGET",
        "CONTEXT",
        "NAMESPACE",
        "PRODUCTION",
        "STAGE",
        "READY",
        "REVISION",
        "LOCK",
    ]
    .map(String::from)
    .to_vec()];
    let mut notes = Vec::new();
    for (i, m) in run.members.iter().enumerate() {
        let mut line = vec![
            m.spec.name.to_string(),
            m.spec.context.clone(),
            m.key.namespace.clone(),
        ];
        match &reports[i] {
            Some(r) => {
                let slot = |role: Role| r.slots.iter().find(|s| s.role == role);
                let shown = |role: Role| match slot(role) {
                    Some(s) if s.enabled => format!("{} {}", s.slot, s.tag),
                    Some(s) => format!("{} -", s.slot),
                    None => "-".into(),
                };
                let ready = slot(Role::Production)
                    .map(|s| format!("{}/{}", s.ready, s.desired))
                    .unwrap_or_else(|| "-".into());
                line.extend([
                    shown(Role::Production),
                    shown(Role::Stage),
                    ready,
                    format!("{} {}", r.heading.revision, r.heading.helm_status),
                    r.standing
                        .lock
                        .as_ref()
                        .map(|l| l.holder.clone())
                        .unwrap_or_else(|| "-".into()),
                ]);
            }
            None => {
                line.extend(["(unreadable)", "-", "-", "-", "-"].map(String::from));
                if let Some(error) = &run.standings[i].error {
                    notes.push(format!("  {}: {error}\n", m.spec.name));
                }
            }
        }
        lines.push(line);
    }
    let mut out = crate::term::table(&lines, "  ");
    out.extend(notes);
    out
}

pub async fn history(run: &mut Run<'_>) -> Result<()> {
    let release = run.release;
    let ctxs = run.connect_each().await;
    let read = join_all(ctxs.iter().map(|ctx| async move {
        match ctx {
            Some(ctx) => Some(history::history(ctx, release).await),
            None => None,
        }
    }))
    .await;
    let mut text = String::new();
    let mut unread = Vec::new();
    for (i, result) in read.into_iter().enumerate() {
        let m = &run.members[i];
        let heading = format!(
            "{} (context {}, namespace {})",
            m.spec.name, m.spec.context, m.key.namespace
        );
        match result {
            Some(Ok(report)) => {
                text.push_str(&format!("{heading}\n{}\n", indent(&report)));
                run.enter(i, Phase::Done);
                run.report(i, &report);
            }
            Some(Err(err)) => {
                text.push_str(&format!("{heading}\n  could not be read: {err:#}\n\n"));
                run.fail(i, &err);
                unread.push(run.name(i).to_string());
            }
            None => {
                let error = run.standings[i].error.clone().unwrap_or_default();
                text.push_str(&format!("{heading}\n  could not be read: {error}\n\n"));
                unread.push(run.name(i).to_string());
            }
        }
    }
    if !unread.is_empty() {
        let lead = format!(
            "could not read every target of {release}: {}",
            unread.join(", ")
        );
        return shown(run, text, Err((ExitStatus::Failed, lead)));
    }
    shown(run, text, Ok(None))
}

/// What a read across targets shows: its text and a row per target, printed (`Ok`, with whether
/// every target serves one version where that is known) or as the run's error (`Err`: the exit
/// status and the lead line).
fn shown(
    run: &mut Run<'_>,
    text: String,
    ended: Result<Option<bool>, (ExitStatus, String)>,
) -> Result<()> {
    let rows = run.rows(&[]);
    match ended {
        Ok(consistent) => run.ui().print(&FleetReport {
            operation: run.op,
            release: run.release.to_string(),
            run: run.stamp.id.to_string(),
            consistent,
            targets: rows,
            next: String::new(),
            summary: String::new(),
            text: Some(text),
        }),
        Err((status, lead)) => {
            let mut across = report::across(
                status,
                lead,
                std::mem::take(&mut run.causes),
                None,
                run.stamp.id.as_str(),
                rows,
            );
            across.table = text;
            Err(across.into())
        }
    }
}

fn indent(report: &HistoryReport) -> String {
    report
        .to_string()
        .lines()
        .map(|l| format!("  {l}\n"))
        .collect()
}
