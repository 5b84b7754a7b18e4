//! `bgslot version`: which bgslot and which embedded chart this binary carries.

use std::fmt;

use anyhow::Result;
use serde::Serialize;

use super::Invocation;

#[derive(Debug, clap::Args)]
pub struct Args {}

impl Args {
    pub async fn run(&self, run: &Invocation<'_>) -> Result<()> {
        run.ui.print(&VersionReport::current())
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VersionReport {
    pub bgslot: &'static str,
    pub chart: String,
}

impl VersionReport {
    pub fn current() -> VersionReport {
        VersionReport {
            bgslot: env!("CARGO_PKG_VERSION"),
            chart: crate::chart::embedded_id(),
        }
    }
}

impl fmt::Display for VersionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "bgslot {} (chart {})", self.bgslot, self.chart)
    }
}
