//! `bgslot rollback RELEASE`: swaps production back to the previous slot while it still runs,
//! with every check `swap` makes.

use anyhow::Result;

use super::swap::{self, SwapKind, SwapRequest};
use super::{Mutating, Invocation};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Mutating,
    /// Roll back even when the Services' live selectors disagree with the release values, or when
    /// a GitOps controller owns the release
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub targets: super::Targets,
}

impl Args {
    pub async fn run(&self, run: &Invocation<'_>) -> Result<()> {
        let request = SwapRequest {
            kind: SwapKind::Rollback,
            expect_tag: None,
            force: self.force,
        };
        swap::execute(run, &self.target, &request).await
    }
}
