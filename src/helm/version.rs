//! Which helm bgslot runs: finding the binary, reading its version once per installed binary (a
//! cache keyed by path, size and modification time), and refusing one too old to drive.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

/// Helm versions bgslot knows how to drive.
pub const MIN_HELM: (u64, u64) = (3, 14);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct HelmVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl std::fmt::Display for HelmVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl HelmVersion {
    /// Whether bgslot can drive this helm (`--reset-then-reuse-values` came with 3.14).
    pub fn supported(self) -> bool {
        (self.major, self.minor) >= MIN_HELM
    }
}

/// Parses `helm version --template '{{.Version}}'` output such as `v3.17.2` or `v4.1.4+g1234`.
pub fn parse_version(text: &str) -> Option<HelmVersion> {
    let core = text.trim().strip_prefix('v')?;
    let core = core.split(['+', '-']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    Some(HelmVersion {
        major: parts.next()??,
        minor: parts.next()??,
        patch: parts.next().flatten().unwrap_or(0),
    })
}

/// Finds helm: `--helm`/`HELM_BIN`, else `helm` on PATH.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
    match explicit {
        Some(path) => {
            let found = which::which(path).with_context(|| {
                format!("helm not found at {}: check --helm / HELM_BIN", path.display())
            })?;
            Ok(found)
        }
        None => which::which("helm").map_err(|_| {
            anyhow!(
                "helm not found on PATH: install Helm 3.14 or newer (https://helm.sh/docs/intro/install/) \
                 or point --helm / HELM_BIN at it"
            )
        }),
    }
}

/// Remembers the version of a helm binary, keyed by its path, size and modification time, so
/// that `helm version` runs once per installed helm rather than once per bgslot command.
pub(crate) struct VersionCache {
    file: PathBuf,
    key: String,
}

impl VersionCache {
    pub(crate) fn for_binary(path: &Path) -> Option<VersionCache> {
        let meta = std::fs::metadata(path).ok()?;
        let modified = meta
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        let key = format!(
            "{}\t{}\t{}",
            path.canonicalize().ok()?.display(),
            meta.len(),
            modified.as_nanos()
        );
        let dir = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(VersionCache {
            file: dir.join("bgslot").join("helm-versions"),
            key,
        })
    }

    pub(crate) fn read(&self) -> Option<HelmVersion> {
        let text = std::fs::read_to_string(&self.file).ok()?;
        text.lines()
            .filter_map(|l| l.rsplit_once('\t'))
            .find(|(key, _)| *key == self.key)
            .and_then(|(_, version)| parse_version(version))
    }

    /// Best effort: a cache that cannot be written only costs the next run a `helm version`.
    pub(crate) fn write(&self, version: HelmVersion) {
        let Some(dir) = self.file.parent() else {
            return;
        };
        let old = std::fs::read_to_string(&self.file).unwrap_or_default();
        // Keep entries of other helm binaries, drop stale ones of this path, bound the size.
        let path_prefix = self.key.split('\t').next().unwrap_or_default().to_string() + "\t";
        let mut lines: Vec<&str> = old
            .lines()
            .filter(|l| !l.starts_with(&path_prefix))
            .collect();
        let entry = format!("{}\t{version}", self.key);
        lines.push(&entry);
        let keep = lines.len().saturating_sub(32);
        let text = lines[keep..].join("\n") + "\n";
        let tmp = dir.join(format!("helm-versions.{}", std::process::id()));
        let _ = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, &self.file));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_version("v3.17.2"),
            Some(HelmVersion {
                major: 3,
                minor: 17,
                patch: 2
            })
        );
        assert_eq!(
            parse_version("v4.1.4+g05fa379"),
            Some(HelmVersion {
                major: 4,
                minor: 1,
                patch: 4
            })
        );
        assert_eq!(parse_version("3.17.2"), None);
        assert_eq!(parse_version(""), None);
        assert!(!parse_version("v3.13.3").unwrap().supported());
        assert!(parse_version("v3.14.0").unwrap().supported());
    }

    #[test]
    fn the_cache_keeps_one_entry_per_binary() {
        let dir = tempfile::tempdir().unwrap();
        let cache = VersionCache {
            file: dir.path().join("bgslot/helm-versions"),
            key: "/usr/bin/helm\t10\t1".into(),
        };
        assert_eq!(cache.read(), None);
        cache.write(parse_version("v3.17.2").unwrap());
        let newer = VersionCache {
            key: "/usr/bin/helm\t11\t2".into(),
            ..cache
        };
        newer.write(parse_version("v4.1.4").unwrap());
        assert_eq!(newer.read(), parse_version("v4.1.4"));
        let text = std::fs::read_to_string(&newer.file).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
    }
}
