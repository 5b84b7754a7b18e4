//! `bgslot rollback RELEASE`: swaps production back to the previous slot while it still runs,
//! with every check `swap` makes.

use anyhow::{Context, Result};

use crate::cli::{DryRun, GlobalArgs};
use crate::commands::swap::{self, SwapKind, SwapRequest};
use crate::context::Ctx;
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
    pub async fn run(&self, global: &GlobalArgs) -> Result<()> {
        let ctx = Ctx::connect(global).await?;
        let request = SwapRequest {
            kind: SwapKind::Rollback,
            expect_tag: None,
            force: self.force,
        };
        let outcome = swap::execute(&ctx, &self.release, &request, self.dry_run)
            .await
            .with_context(|| ctx.operation("rollback", &self.release))?;
        crate::output::print(&outcome, global.output)
    }
}
