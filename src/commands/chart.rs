//! `bgslot chart export DIR`: writes the embedded chart out, to vendor or customise it.

use std::fmt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use serde::Serialize;

use super::Invocation;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: ChartCommand,
}

#[derive(Debug, Subcommand)]
pub enum ChartCommand {
    /// Write the embedded chart to DIR, to vendor or customise it
    Export {
        /// Target directory (created; must be empty if it exists)
        dir: PathBuf,
    },
}

impl Args {
    pub async fn run(&self, run: &Invocation<'_>) -> Result<()> {
        let ChartCommand::Export { dir } = &self.command;
        let files = crate::chart::export(dir)
            .with_context(|| format!("exporting the chart to {}", dir.display()))?;
        let report = ExportReport {
            chart: crate::chart::embedded_id(),
            dir: dir.clone(),
            files,
        };
        run.ui.print(&report)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ExportReport {
    pub chart: String,
    pub dir: PathBuf,
    pub files: usize,
}

impl fmt::Display for ExportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wrote chart {} ({} files) to {}",
            self.chart,
            self.files,
            self.dir.display()
        )
    }
}
