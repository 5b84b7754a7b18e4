//! The bgslot chart, embedded at build time, and the choice of which chart a write uses.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::error::UsageError;

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
    read_meta(&embedded_file("Chart.yaml"))
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

/// Whether a `--chart` value can only mean a local path, as helm reads it: helm takes anything
/// that exists as local, and otherwise a reference is `REPO/NAME` (one slash), `oci://...` or a URL.
/// So a value with a scheme is a reference; one that starts with `/`, `./`, `../` or `~`, is `.`
/// or `..`, ends with `.tgz` or `.tar.gz`, or has two or more slashes is a path.
pub fn names_a_path(value: &str) -> bool {
    if value.contains("://") {
        return false;
    }
    matches!(value, "." | "..")
        || ["/", "./", "../", "~"].iter().any(|p| value.starts_with(p))
        || [".tgz", ".tar.gz"].iter().any(|s| value.ends_with(s))
        || value.matches('/').count() >= 2
}

const CHART_FORMS: &str = "pass a chart directory, a .tgz, REPO/NAME or oci://...";

/// Checks the global `--chart` before anything connects or runs helm, given whether something
/// exists at it (relative to the current directory, `~` not expanded, as helm reads it): what
/// exists is a local chart, judged as before by [`ChartSource::resolve`] and helm; a value that
/// names a path must exist; anything else is a reference helm resolves.
pub fn check_chart_flag(value: &str, exists: bool) -> Result<(), UsageError> {
    check_chart_ref("--chart", value, exists)
}

/// [`check_chart_flag`] for any flag that names a chart (`--chart`, `--app-chart`).
pub fn check_chart_ref(flag: &str, value: &str, exists: bool) -> Result<(), UsageError> {
    if value.is_empty() {
        return Err(UsageError(format!("{flag} is empty: {CHART_FORMS}")));
    }
    if exists || !names_a_path(value) {
        return Ok(());
    }
    let tilde = if value.starts_with('~') {
        " (~ is not expanded: write the path out)"
    } else {
        ""
    };
    Err(UsageError(format!(
        "{flag} {value}: no such directory or chart archive{tilde}: {CHART_FORMS}"
    )))
}

/// The chart a helm write uses: the embedded one (written to a temporary directory for the
/// duration of the command) or the user's `--chart`.
pub struct ChartSource {
    /// The user's `--chart`, or `None` for the embedded chart.
    user: Option<String>,
    /// `NAME-VERSION`, when it can be known without asking helm.
    pub id: Option<String>,
    /// The chart's default values, when they can be known without asking helm.
    pub defaults: Option<serde_json::Value>,
    /// The embedded chart written out, once a write needs it.
    written: std::sync::OnceLock<tempfile::TempDir>,
}

fn read_defaults(yaml: &str, whose: &str) -> Result<serde_json::Value> {
    let values: Option<serde_json::Value> =
        serde_saphyr::from_str(yaml).with_context(|| format!("reading {whose} values.yaml"))?;
    Ok(values.unwrap_or(serde_json::Value::Object(Default::default())))
}

fn embedded_file(name: &str) -> String {
    files()
        .iter()
        .find(|(p, _)| *p == name)
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

impl ChartSource {
    pub fn resolve(user: Option<&str>) -> Result<ChartSource> {
        match user {
            None => Ok(ChartSource {
                user: None,
                id: Some(embedded_id()),
                defaults: Some(read_defaults(
                    &embedded_file("values.yaml"),
                    "the embedded chart's",
                )?),
                written: std::sync::OnceLock::new(),
            }),
            Some(reference) => {
                let path = PathBuf::from(reference);
                let (id, defaults) = if path.is_dir() {
                    let yaml =
                        std::fs::read_to_string(path.join("Chart.yaml")).with_context(|| {
                            format!(
                                "--chart {reference} is a directory without a readable Chart.yaml"
                            )
                        })?;
                    let meta = read_meta(&yaml).with_context(|| format!("--chart {reference}"))?;
                    let values =
                        std::fs::read_to_string(path.join("values.yaml")).unwrap_or_default();
                    (
                        Some(format!("{}-{}", meta.name, meta.version)),
                        Some(read_defaults(&values, &format!("--chart {reference}"))?),
                    )
                } else {
                    (None, None)
                };
                Ok(ChartSource {
                    user: Some(reference.to_string()),
                    id,
                    defaults,
                    written: std::sync::OnceLock::new(),
                })
            }
        }
    }

    /// What helm is given as the chart: the user's reference, or the embedded chart written to
    /// a temporary directory (kept for the rest of the command).
    pub fn reference(&self) -> Result<String> {
        if let Some(user) = &self.user {
            return Ok(user.clone());
        }
        if self.written.get().is_none() {
            let temp = tempfile::Builder::new()
                .prefix("bgslot-chart-")
                .tempdir()
                .context("creating a temporary directory for the chart")?;
            write_all(&temp.path().join("bgslot"))?;
            let _ = self.written.set(temp);
        }
        let dir = self
            .written
            .get()
            .expect("written above")
            .path()
            .join("bgslot");
        Ok(dir.to_string_lossy().into_owned())
    }

    /// The chart as a plan shows it: the user's reference, or `<embedded NAME-VERSION>` (the
    /// embedded chart only exists on disk while a write runs).
    pub fn shown(&self) -> String {
        match &self.user {
            Some(user) => user.clone(),
            None => format!("<embedded {}>", embedded_id()),
        }
    }

    /// A write must apply new chart defaults when the chart differs from the release's.
    pub fn differs_from(&self, release_chart: &str) -> bool {
        self.id
            .as_deref()
            .map(|id| id != release_chart)
            .unwrap_or(false)
    }

    /// This chart's defaults, when it is the chart `release_chart` names (so the release's
    /// computed values are these defaults under its user values).
    pub fn defaults_of(&self, release_chart: &str) -> Option<&serde_json::Value> {
        match &self.id {
            Some(id) if id == release_chart => self.defaults.as_ref(),
            _ => None,
        }
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
        let chart = ChartSource::resolve(None).unwrap();
        let defaults = chart.defaults_of(&embedded_id()).unwrap();
        assert_eq!(defaults["productionSlot"], "blue");
        assert_eq!(chart.defaults_of("bgslot-0.0.0-other"), None);
    }

    #[test]
    fn chart_flag_paths_and_references() {
        let missing = |v: &str| {
            format!("--chart {v}: no such directory or chart archive: pass a chart directory, a .tgz, REPO/NAME or oci://...")
        };
        for path in [
            "/x/chart",
            "./chart",
            "../charts/web",
            ".",
            "..",
            "chart.tgz",
            "web-1.0.0.tar.gz",
            "repo/web-1.0.0.tgz",
            "charts/web/v2",
        ] {
            assert!(names_a_path(path), "{path}");
            assert_eq!(
                check_chart_flag(path, false),
                Err(UsageError(missing(path))),
                "{path}"
            );
            assert_eq!(check_chart_flag(path, true), Ok(()), "{path}");
        }
        assert!(names_a_path("~/c") && names_a_path("~"));
        assert_eq!(
            check_chart_flag("~/c", false),
            Err(UsageError(
                "--chart ~/c: no such directory or chart archive (~ is not expanded: write the path out): pass a chart directory, a .tgz, REPO/NAME or oci://...".into()
            ))
        );
        assert_eq!(check_chart_flag("~/c", true), Ok(()));
        // References helm resolves, not the file system: left to helm, as is whatever exists.
        for reference in [
            "bitnami/nginx",
            "oci://registry.local:5000/charts/web",
            "https://charts.example.com/web-1.0.0.tgz",
            "web",
        ] {
            assert!(!names_a_path(reference), "{reference}");
            assert_eq!(check_chart_flag(reference, false), Ok(()), "{reference}");
            assert_eq!(check_chart_flag(reference, true), Ok(()), "{reference}");
        }
        assert_eq!(
            check_chart_flag("", false),
            Err(UsageError(
                "--chart is empty: pass a chart directory, a .tgz, REPO/NAME or oci://...".into()
            ))
        );
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
