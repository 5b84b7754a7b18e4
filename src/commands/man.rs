//! `bgslot man DIR`: manual pages generated from the command definitions, one for bgslot and one
//! per command, so `man bgslot-deploy` says exactly what `bgslot deploy --help` says.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::Invocation;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write the pages to (created; `bgslot.1`, `bgslot-deploy.1`, ...)
    pub dir: PathBuf,
}

impl Args {
    pub async fn run(&self, run: &Invocation<'_>) -> Result<()> {
        let pages = write_pages(&self.dir, (run.cli)())
            .with_context(|| format!("writing manual pages to {}", self.dir.display()))?;
        let report = ManReport {
            dir: self.dir.clone(),
            pages,
        };
        run.ui.print(&report)
    }
}

/// Writes `bgslot.1` and a page per command (and per nested command) into `dir`.
pub fn write_pages(dir: &Path, mut command: clap::Command) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    command.build();
    write_page(dir, &command, "bgslot", &mut written)?;
    Ok(written)
}

fn write_page(
    dir: &Path,
    command: &clap::Command,
    name: &str,
    written: &mut Vec<String>,
) -> Result<()> {
    let page = command.clone().display_name(name.to_string());
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut roff)
        .with_context(|| format!("rendering the page of {name}"))?;
    let file = format!("{name}.1");
    std::fs::write(dir.join(&file), roff).with_context(|| format!("writing {file}"))?;
    written.push(file);
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        write_page(dir, sub, &format!("{name}-{}", sub.get_name()), written)?;
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ManReport {
    pub dir: PathBuf,
    pub pages: Vec<String>,
}

impl fmt::Display for ManReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wrote {} manual pages to {} (read one with: man -l {}/bgslot-deploy.1)",
            self.pages.len(),
            self.dir.display(),
            self.dir.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_per_command() {
        let dir = tempfile::tempdir().unwrap();
        use clap::CommandFactory;
        let pages = write_pages(dir.path(), crate::cli::Cli::command()).unwrap();
        for page in ["bgslot.1", "bgslot-deploy.1", "bgslot-swap.1", "bgslot-chart-export.1"] {
            assert!(pages.contains(&page.to_string()), "{page} missing: {pages:?}");
        }
        let deploy = std::fs::read_to_string(dir.path().join("bgslot-deploy.1")).unwrap();
        assert!(deploy.starts_with(".ie") || deploy.contains(".TH"), "{deploy}");
        assert!(deploy.contains("slot\\-values"), "the page documents the flags");
    }
}
