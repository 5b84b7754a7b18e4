//! `bgslot rollback RELEASE`: swaps production back to the previous slot while it still runs,
//! with every check `swap` makes.

use anyhow::Result;

use super::swap::{self, SwapKind, SwapRequest};
use super::{DryRun, Invocation};
use crate::names::ReleaseName;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Helm release name
    #[arg(value_name = "RELEASE")]
    pub release: ReleaseName,
    /// Roll back even when the Services' live selectors disagree with the release values, or when
    /// a GitOps controller owns the release
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub dry_run: DryRun,
}

impl Args {
    pub async fn run(&self, run: &Invocation<'_>) -> Result<()> {
        let request = SwapRequest {
            kind: SwapKind::Rollback,
            expect_tag: None,
            force: self.force,
        };
        swap::execute(run, &self.release, &request, self.dry_run).await
    }
}
