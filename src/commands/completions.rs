//! `bgslot completions SHELL`: a completion script generated from the command definitions.

use std::fmt;

use anyhow::{Context, Result};
use serde::Serialize;

use super::Invocation;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

impl Args {
    pub async fn run(&self, run: &Invocation<'_>) -> Result<()> {
        let mut script = Vec::new();
        clap_complete::generate(self.shell, &mut (run.cli)(), "bgslot", &mut script);
        let report = CompletionsReport {
            shell: self.shell.to_string(),
            script: String::from_utf8(script).context("completions are UTF-8")?,
        };
        run.ui.print(&report)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CompletionsReport {
    pub shell: String,
    pub script: String,
}

impl fmt::Display for CompletionsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.script)
    }
}
