//! The bgslot chart, embedded at build time, and the choice of which chart a write uses.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/chart_files.rs"));
}

/// Every file of `chart/`, as (path relative to the chart root, bytes).
pub fn files() -> &'static [(&'static str, &'static [u8])] {
    embedded::FILES
}

#[derive(Debug, serde::Deserialize)]
struct ChartMeta {
    name: String,
    version: String,
}

fn read_meta(yaml: &str) -> Result<ChartMeta> {
    serde_saphyr::from_str(yaml).context("reading Chart.yaml")
}

/// `NAME-VERSION` of the embedded chart, as `helm history` shows it.
pub fn embedded_id() -> String {
    let yaml = files()
        .iter()
        .find(|(p, _)| *p == "Chart.yaml")
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    read_meta(&yaml)
        .map(|m| format!("{}-{}", m.name, m.version))
        .unwrap_or_else(|_| "bgslot-unknown".into())
}

/// Writes the embedded chart into `dir` (created; refused when it exists and is not empty).
pub fn export(dir: &Path) -> Result<usize> {
    if dir.exists() {
        let mut entries =
            std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} is not empty: export into a new or empty directory",
                dir.display()
            );
        }
    }
    write_all(dir)?;
    Ok(files().len())
}

fn write_all(dir: &Path) -> Result<()> {
    for (rel, bytes) in files() {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The chart a helm write uses: the embedded one (written to a temporary directory for the
/// duration of the command) or the user's `--chart`.
pub struct ChartSource {
    reference: String,
    /// `NAME-VERSION`, when it can be known without asking helm.
    pub id: Option<String>,
    _temp: Option<tempfile::TempDir>,
}

impl ChartSource {
    pub fn resolve(user: Option<&str>) -> Result<ChartSource> {
        match user {
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("bgslot-chart-")
                    .tempdir()
                    .context("creating a temporary directory for the chart")?;
                let dir = temp.path().join("bgslot");
                write_all(&dir)?;
                Ok(ChartSource {
                    reference: dir.to_string_lossy().into_owned(),
                    id: Some(embedded_id()),
                    _temp: Some(temp),
                })
            }
            Some(reference) => {
                let path = PathBuf::from(reference);
                let id = if path.is_dir() {
                    let yaml =
                        std::fs::read_to_string(path.join("Chart.yaml")).with_context(|| {
                            format!(
                                "--chart {reference} is a directory without a readable Chart.yaml"
                            )
                        })?;
                    let meta = read_meta(&yaml).with_context(|| format!("--chart {reference}"))?;
                    Some(format!("{}-{}", meta.name, meta.version))
                } else {
                    None
                };
                Ok(ChartSource {
                    reference: reference.to_string(),
                    id,
                    _temp: None,
                })
            }
        }
    }

    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// A write must apply new chart defaults when the chart differs from the release's.
    pub fn differs_from(&self, release_chart: &str) -> bool {
        self.id
            .as_deref()
            .map(|id| id != release_chart)
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_chart_is_complete() {
        let names: Vec<&str> = files().iter().map(|(p, _)| *p).collect();
        for needed in [
            "Chart.yaml",
            "values.yaml",
            "values.schema.json",
            "templates/_helpers.tpl",
            "templates/NOTES.txt",
        ] {
            assert!(
                names.contains(&needed),
                "{needed} missing from the embedded chart: {names:?}"
            );
        }
        assert!(embedded_id().starts_with("bgslot-"));
    }

    #[test]
    fn export_refuses_a_non_empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), "y").unwrap();
        assert!(export(dir.path())
            .unwrap_err()
            .to_string()
            .contains("not empty"));
    }
}
