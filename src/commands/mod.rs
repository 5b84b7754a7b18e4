//! One module per command. Each reads top to bottom the same way: observe the release once,
//! decide with a pure function (a refusal, or a plan: the helm write and what to wait for), act,
//! and return a typed report that prints as text or JSON. Adding a command is one new module
//! here plus its line in the list below.

use std::fmt;

use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::plan::Plan;

macro_rules! commands {
    ($( $(#[$meta:meta])* $variant:ident($module:ident) ),* $(,)?) => {
        $(pub mod $module;)*

        #[derive(Debug, clap::Subcommand)]
        pub enum Command {
            $( $(#[$meta])* $variant($module::Args), )*
        }

        impl Command {
            /// Runs the command and prints its report.
            pub async fn run(&self, global: &GlobalArgs) -> anyhow::Result<()> {
                match self {
                    $( Command::$variant(args) => args.run(global).await, )*
                }
            }
        }
    };
}

commands! {
    /// Show the live and stage slots, their images and readiness, and what the Services select
    Status(status),
    /// Put a new version in the idle slot and wait until it is fully available
    Deploy(deploy),
    /// Route production to the staged slot
    Swap(swap),
    /// Disable the slot that is not production, once the drain delay has passed
    Clean(clean),
    /// Route production back to the previous slot while it still runs
    Rollback(rollback),
    /// Deploy, verify against stage, swap, verify production and optionally clean, in one go
    Release(release),
    /// Return a release stuck in a pending or failed helm state to its last deployed revision
    Recover(recover),
    /// The helm history of the release, with each bgslot operation described
    History(history),
    /// Work with the embedded chart
    Chart(chart),
    /// Print shell completions
    Completions(completions),
    /// Write manual pages (bgslot.1 and one per command) to a directory
    Man(man),
    /// Print bgslot's version and the embedded chart's version
    Version(version),
}

/// What a mutating command did, or with `--dry-run` what it would do.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Outcome<R> {
    Done(R),
    Planned(Plan),
}

impl<R: fmt::Display> fmt::Display for Outcome<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Done(report) => report.fmt(f),
            Outcome::Planned(plan) => plan.fmt(f),
        }
    }
}
