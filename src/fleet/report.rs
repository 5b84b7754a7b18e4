//! What a run across several clusters reports: a row per target (where it is, what production
//! serves, the phase it reached, whether it was swapped back, what went wrong, the command that
//! ends a mix there, and the command's own report on it), as JSON `targets[]` and as a table.
//! A run that did not end well carries the same rows in its error ([`crate::error::Across`]).

use std::fmt;

use serde::Serialize;

use super::decide::{Phase, Standing};
use crate::commands::clean::CleanReport;
use crate::commands::deploy::DeployReport;
use crate::commands::history::HistoryReport;
use crate::commands::preview::Plan;
use crate::commands::recover::RecoverReport;
use crate::commands::release::ReleaseReport;
use crate::commands::status::StatusReport;
use crate::commands::swap::SwapReport;
use crate::error::{Across, ExitStatus};
use crate::vocab::{Op, Slot};

/// The command's own report on one target, as that command prints it alone.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum TargetReport {
    Release(Box<ReleaseReport>),
    Deploy(Box<DeployReport>),
    Swap(Box<SwapReport>),
    Clean(Box<CleanReport>),
    Recover(Box<RecoverReport>),
    Status(Box<StatusReport>),
    History(Box<HistoryReport>),
    /// A dry run's plan.
    Plan(Box<Plan>),
}

macro_rules! target_reports {
    ($($variant:ident($report:ty)),*) => {$(
        impl From<$report> for TargetReport {
            fn from(report: $report) -> TargetReport {
                TargetReport::$variant(Box::new(report))
            }
        }
    )*};
}

target_reports!(
    Release(ReleaseReport),
    Deploy(DeployReport),
    Swap(SwapReport),
    Clean(CleanReport),
    Recover(RecoverReport),
    Status(StatusReport),
    History(HistoryReport),
    Plan(Plan)
);

/// One target, as a run left it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TargetRow {
    pub name: String,
    pub context: String,
    pub namespace: String,
    /// Production's slot and the version it serves (as last read or written); `null` when not
    /// known.
    pub production_slot: Option<Slot>,
    pub version: Option<String>,
    pub phase: Phase,
    pub swapped_back: bool,
    pub error: Option<String>,
    /// The one command that ends a mix on this target; `null` unless the run left one.
    pub command: Option<String>,
    /// The command's own report on this target (`null` when it did not get that far).
    pub report: Option<TargetReport>,
    /// That report as text, shown under the table.
    #[serde(skip)]
    pub text: Option<String>,
}

impl TargetRow {
    pub fn new(name: &str, context: &str, namespace: &str, standing: &Standing) -> TargetRow {
        TargetRow {
            name: name.to_string(),
            context: context.to_string(),
            namespace: namespace.to_string(),
            production_slot: standing.production.as_ref().map(|(s, _)| *s),
            version: standing.production.as_ref().map(|(_, v)| v.clone()),
            phase: standing.phase,
            swapped_back: standing.swapped_back,
            error: standing.error.clone(),
            command: None,
            report: None,
            text: None,
        }
    }
}

/// The rows as a table, a line per target.
pub fn table(rows: &[TargetRow]) -> String {
    let mut lines: Vec<Vec<String>> = vec![[
        "TARGET",
        "CONTEXT",
        "NAMESPACE",
        "PRODUCTION",
        "VERSION",
        "PHASE",
        "SWAPPED BACK",
    ]
    .map(String::from)
    .to_vec()];
    for row in rows {
        let dash = || "-".to_string();
        lines.push(vec![
            row.name.clone(),
            row.context.clone(),
            row.namespace.clone(),
            row.production_slot
                .map(|s| s.to_string())
                .unwrap_or_else(dash),
            row.version.clone().unwrap_or_else(dash),
            row.phase.as_str().to_string(),
            if row.swapped_back { "yes" } else { "no" }.to_string(),
        ]);
    }
    let mut out = crate::term::table(&lines, "  ");
    for row in rows {
        if let Some(error) = &row.error {
            out.push_str(&format!("  {}: {error}\n", row.name));
        }
    }
    for row in rows {
        if let Some(command) = &row.command {
            out.push_str(&format!("  end the mix on {}: {command}\n", row.name));
        }
    }
    out
}

/// A run across several clusters that ended well.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    pub operation: Op,
    pub release: String,
    /// The run's ID, in every helm revision it wrote.
    pub run: String,
    /// Every target serves the same version after it (`null` when the command does not read
    /// what they serve).
    pub consistent: Option<bool>,
    pub targets: Vec<TargetRow>,
    /// What a person most likely runs next, on every target.
    pub next: String,
    /// The first line of the text form.
    #[serde(skip)]
    pub summary: String,
    /// The whole text form, for a command that lays it out its own way (`status`, `history`).
    #[serde(skip)]
    pub text: Option<String>,
}

impl fmt::Display for FleetReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(text) = &self.text {
            return f.write_str(text);
        }
        writeln!(f, "{}\n", self.summary)?;
        f.write_str(&table(&self.targets))?;
        for row in &self.targets {
            if let Some(text) = &row.text {
                writeln!(f)?;
                for line in text.lines() {
                    writeln!(f, "{}", format!("[{}] {line}", row.name).trim_end())?;
                }
            }
        }
        if !self.next.is_empty() {
            writeln!(f, "\nnext: {}", self.next)?;
        }
        Ok(())
    }
}

/// The error a run that did not end well returns: its verdict, lead and causes
/// ([`Across`], which decides the exit status), with every target's row, shown by the printer.
#[derive(Debug)]
pub struct Failed {
    pub across: Across,
    pub rows: Vec<TargetRow>,
    /// The rows as the text form shows them.
    pub table: String,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.across.fmt(f)
    }
}

impl std::error::Error for Failed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.across)
    }
}

/// The error of a run that did not end well: its verdict, lead and causes, with the rows.
pub fn across(
    status: ExitStatus,
    error: String,
    caused_by: Vec<String>,
    hint: Option<String>,
    run: &str,
    rows: Vec<TargetRow>,
) -> Failed {
    let table = format!("targets (run {run}):\n{}", table(&rows));
    Failed {
        across: Across {
            status,
            error,
            caused_by,
            hint,
            run: run.to_string(),
        },
        rows,
        table,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::decide::Moved;

    #[test]
    fn a_row_says_where_a_target_is_and_what_it_serves() {
        let mut standing = Standing::new(Some((Slot::Green, "v7".into())));
        standing.phase = Phase::SwapBack;
        standing.moved = Some(Moved::Swap);
        standing.error = Some("swapping back failed".into());
        let mut eu = TargetRow::new("eu", "prod-eu", "shop", &standing);
        eu.command = Some("bgslot rollback web --kube-context prod-eu -n shop".into());
        let us = TargetRow::new(
            "us",
            "prod-us",
            "shop",
            &Standing {
                phase: Phase::SwapBack,
                swapped_back: true,
                ..Standing::new(Some((Slot::Blue, "v6".into())))
            },
        );
        let json = serde_json::to_value(&eu).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "eu", "context": "prod-eu", "namespace": "shop",
                "production_slot": "green", "version": "v7", "phase": "swap-back",
                "swapped_back": false, "error": "swapping back failed",
                "command": "bgslot rollback web --kube-context prod-eu -n shop", "report": null})
        );
        assert_eq!(
            table(&[eu, us]),
            [
                "  TARGET  CONTEXT  NAMESPACE  PRODUCTION  VERSION  PHASE      SWAPPED BACK",
                "  eu      prod-eu  shop       green       v7       swap-back  no",
                "  us      prod-us  shop       blue        v6       swap-back  yes",
                "  eu: swapping back failed",
                "  end the mix on eu: bgslot rollback web --kube-context prod-eu -n shop",
                "",
            ]
            .join("\n")
        );
    }
}
