//! bgslot: boring, safe blue/green releases on Kubernetes with Helm.
//!
//! `cli` parses; each module under `commands` observes a release once (`observe`), decides with a
//! pure function (`plan` holds the shared rules), acts through `helm` and waits through `wait`,
//! and returns a typed report that `output` prints. `run` is the one entry point the binary calls.

pub mod chart;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod context;
pub mod duration;
pub mod error;
pub mod helm;
pub mod lock;
pub mod names;
pub mod observe;
pub mod output;
pub mod plan;
pub mod signals;
pub mod values;
pub mod wait;

/// Runs one command and prints its report; errors are printed by the caller.
pub async fn run(mut cli: cli::Cli) -> anyhow::Result<()> {
    signals::install();
    cli.global = cli.global.without_empty_values();
    cli.command.run(&cli.global).await
}
