//! The one place bgslot runs `helm`: finding it, detecting its major version, building argv and
//! reading its JSON output.
//!
//! The argv builders are pure so the exact commands are unit-tested; `HelmRunner` is the thin layer
//! that executes them (never through a shell) and keeps helm's stderr in every error.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

use crate::names::{shell_words, SetArg};
use crate::signals;
pub mod storage;

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

/// Where the cluster is, as helm's own global flags say it.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub namespace: String,
    pub kube_context: Option<String>,
    pub kubeconfig: Option<PathBuf>,
}

impl Target {
    fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--namespace".into(), self.namespace.clone().into()];
        if let Some(ctx) = &self.kube_context {
            args.extend(["--kube-context".into(), ctx.into()]);
        }
        if let Some(path) = &self.kubeconfig {
            args.extend(["--kubeconfig".into(), path.into()]);
        }
        args
    }
}

/// A value set on the helm command line; strings go through `--set-string` so that a tag such as
/// `1.20` stays the string "1.20" instead of becoming the number 1.2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetValue {
    Str(String),
    Literal(String),
}

/// One helm write: what bgslot changes, plus what the user passes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub install: bool,
    /// The chart version differs from the release's: apply the new chart's defaults.
    pub reset_then_reuse: bool,
    pub sets: Vec<(String, SetValue)>,
    pub values_files: Vec<PathBuf>,
    pub user_sets: Vec<SetArg>,
    /// Values bgslot computes (a slot's block, with `null` for what the slot no longer sets),
    /// passed as a values file after the user's files.
    pub generated: Option<Value>,
    pub description: String,
    /// Take over fields another manager owns (Helm 4 server-side apply), for an explicit --force.
    pub force_conflicts: bool,
}

impl Write {
    pub fn upgrade(description: impl Into<String>) -> Self {
        Write {
            install: false,
            reset_then_reuse: false,
            sets: Vec::new(),
            values_files: Vec::new(),
            user_sets: Vec::new(),
            generated: None,
            description: description.into(),
            force_conflicts: false,
        }
    }

    pub fn set(mut self, key: impl Into<String>, value: SetValue) -> Self {
        self.sets.push((key.into(), value));
        self
    }
}

/// argv (without the program) for a bgslot write with helm of major version `major`.
pub fn write_argv(
    release: &str,
    chart: &str,
    target: &Target,
    write: &Write,
    major: u64,
    generated: Option<&Path>,
) -> Vec<OsString> {
    let mut argv: Vec<OsString> = Vec::new();
    if write.install {
        argv.extend(["install".into(), release.into(), chart.into()]);
    } else {
        argv.extend(["upgrade".into(), release.into(), chart.into()]);
        argv.push(
            if write.reset_then_reuse {
                "--reset-then-reuse-values"
            } else {
                "--reuse-values"
            }
            .into(),
        );
    }
    argv.extend(target.args());
    for file in write
        .values_files
        .iter()
        .map(PathBuf::as_path)
        .chain(generated)
    {
        argv.extend(["--values".into(), file.into()]);
    }
    for set in &write.user_sets {
        argv.extend(["--set".into(), set.to_string().into()]);
    }
    // bgslot's own keys come last so a pass-through --set cannot undo the slot bookkeeping.
    for (key, value) in &write.sets {
        let (flag, value) = match value {
            SetValue::Str(v) => ("--set-string", v),
            SetValue::Literal(v) => ("--set", v),
        };
        argv.extend([flag.into(), format!("{key}={value}").into()]);
    }
    argv.extend(["--description".into(), write.description.clone().into()]);
    // Helm 4 applies server-side: a field someone edited by hand is owned by another manager and
    // the apply conflicts. Only an explicit --force takes it back. Helm 3 merges client-side.
    if write.force_conflicts && major >= 4 {
        argv.push("--force-conflicts".into());
    }
    argv
}

/// Whether a value key looks like it holds a secret (its value is never printed).
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "apikey",
        "api_key",
        "credential",
        "private",
    ]
    .iter()
    .any(|w| key.contains(w))
}

/// Copy of argv fit to print: values of keys that look secret are replaced.
pub fn redact(argv: &[OsString]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut after_set = false;
    for arg in argv {
        let arg = arg.to_string_lossy().to_string();
        if after_set {
            out.push(
                arg.split(',')
                    .map(|pair| match pair.split_once('=') {
                        Some((k, _)) if is_secret_key(k) => format!("{k}=***"),
                        _ => pair.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            );
        } else {
            out.push(arg.clone());
        }
        after_set = matches!(
            arg.as_str(),
            "--set" | "--set-string" | "--set-file" | "--set-json" | "--set-literal"
        );
    }
    out
}

/// One entry of `helm history -o json`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct Revision {
    pub revision: u64,
    pub updated: String,
    pub status: String,
    pub chart: String,
    #[serde(default)]
    pub app_version: String,
    #[serde(default)]
    pub description: String,
}

impl Revision {
    pub fn updated_at(&self) -> Option<k8s_openapi::jiff::Timestamp> {
        self.updated.parse().ok()
    }
}

/// `helm status -o json`, the parts bgslot reads (Helm 3 and Helm 4 print the same fields).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Status {
    /// The revision number.
    pub version: u64,
    pub info: StatusInfo,
    /// The values the user supplied (what `helm get values` prints).
    #[serde(default)]
    pub config: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct StatusInfo {
    pub status: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub last_deployed: String,
}

impl Status {
    /// The latest revision as `helm history` would list it; the chart is named by the caller.
    pub fn revision(&self, chart: String) -> Revision {
        Revision {
            revision: self.version,
            updated: self.info.last_deployed.clone(),
            status: self.info.status.clone(),
            chart,
            app_version: String::new(),
            description: self.info.description.clone(),
        }
    }
}

/// Remembers the version of a helm binary, keyed by its path, size and modification time, so
/// that `helm version` runs once per installed helm rather than once per bgslot command.
struct VersionCache {
    file: PathBuf,
    key: String,
}

impl VersionCache {
    fn for_binary(path: &Path) -> Option<VersionCache> {
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

    fn read(&self) -> Option<HelmVersion> {
        let text = std::fs::read_to_string(&self.file).ok()?;
        text.lines()
            .filter_map(|l| l.rsplit_once('\t'))
            .find(|(key, _)| *key == self.key)
            .and_then(|(_, version)| parse_version(version))
    }

    /// Best effort: a cache that cannot be written only costs the next run a `helm version`.
    fn write(&self, version: HelmVersion) {
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

/// Runs helm for one bgslot invocation; knows its version.
#[derive(Debug, Clone)]
pub struct HelmRunner {
    pub path: PathBuf,
    pub version: HelmVersion,
    pub target: Target,
    pub verbose: bool,
}

/// What a finished helm run left.
pub struct Output {
    pub stdout: String,
}

impl HelmRunner {
    /// Knows the helm version (asked once per helm binary, then cached) and refuses helm older
    /// than [`MIN_HELM`].
    pub async fn detect(path: PathBuf, target: Target, verbose: bool) -> Result<HelmRunner> {
        let cache = VersionCache::for_binary(&path);
        let version = match cache.as_ref().and_then(VersionCache::read) {
            Some(version) => version,
            None => {
                let argv: Vec<OsString> =
                    vec!["version".into(), "--template".into(), "{{.Version}}".into()];
                let out = run_raw(&path, &argv, verbose).await?;
                let version = parse_version(&out.stdout).ok_or_else(|| {
                    anyhow!(
                        "could not read the helm version from `{} version`: got '{}'",
                        path.display(),
                        out.stdout.trim()
                    )
                })?;
                if let Some(cache) = &cache {
                    cache.write(version);
                }
                version
            }
        };
        if (version.major, version.minor) < MIN_HELM {
            bail!(
                "helm {version} at {} is too old: bgslot needs Helm {}.{} or newer (for --reset-then-reuse-values)",
                path.display(),
                MIN_HELM.0,
                MIN_HELM.1
            );
        }
        Ok(HelmRunner {
            path,
            version,
            target,
            verbose,
        })
    }

    async fn run(&self, argv: Vec<OsString>) -> Result<Output> {
        run_raw(&self.path, &argv, self.verbose).await
    }

    /// `helm history REL -o json`; `None` when the release does not exist.
    pub async fn history(&self, release: &str) -> Result<Option<Vec<Revision>>> {
        let mut argv: Vec<OsString> = vec![
            "history".into(),
            release.into(),
            "--output".into(),
            "json".into(),
        ];
        argv.extend(["--max".into(), "50".into()]);
        argv.extend(self.target.args());
        match self.run(argv).await {
            Ok(out) => {
                let mut revs: Vec<Revision> = serde_json::from_str(&out.stdout)
                    .with_context(|| format!("reading `helm history {release} -o json`"))?;
                revs.sort_by_key(|r| r.revision);
                Ok(Some(revs))
            }
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// `helm status REL -o json`: the latest revision and the values the user gave, in one
    /// command; `None` when the release does not exist.
    pub async fn status(&self, release: &str) -> Result<Option<Status>> {
        let mut argv: Vec<OsString> = vec![
            "status".into(),
            release.into(),
            "--output".into(),
            "json".into(),
        ];
        argv.extend(self.target.args());
        match self.run(argv).await {
            Ok(out) => serde_json::from_str(&out.stdout)
                .map(Some)
                .with_context(|| format!("reading `helm status {release} -o json`")),
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The full helm command line of `write`, as `-v` would print it (secrets redacted).
    pub fn command_line(&self, release: &str, chart: &str, write: &Write) -> Vec<String> {
        let generated = write
            .generated
            .as_ref()
            .map(|_| Path::new("<values bgslot generates>"));
        let argv = write_argv(
            release,
            chart,
            &self.target,
            write,
            self.version.major,
            generated,
        );
        std::iter::once(self.path.display().to_string())
            .chain(redact(&argv))
            .collect()
    }

    /// The full command line of `helm rollback REL REV`.
    pub fn rollback_command_line(&self, release: &str, revision: u64) -> Vec<String> {
        std::iter::once(self.path.display().to_string())
            .chain(redact(&self.rollback_argv(release, revision)))
            .collect()
    }

    fn rollback_argv(&self, release: &str, revision: u64) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec![
            "rollback".into(),
            release.into(),
            revision.to_string().into(),
        ];
        argv.extend(self.target.args());
        argv
    }

    /// `helm get values REL --all -o json`: user values merged over chart defaults.
    pub async fn values(&self, release: &str) -> Result<Value> {
        let mut argv: Vec<OsString> = vec![
            "get".into(),
            "values".into(),
            release.into(),
            "--all".into(),
            "--output".into(),
            "json".into(),
        ];
        argv.extend(self.target.args());
        let out = self.run(argv).await?;
        serde_json::from_str(&out.stdout)
            .with_context(|| format!("reading `helm get values {release} --all -o json`"))
    }

    pub async fn write(&self, release: &str, chart: &str, write: &Write) -> Result<()> {
        // Readable by this user only: the generated values may hold a slot's secretEnv.
        let generated = match &write.generated {
            Some(values) => {
                let mut file = tempfile::Builder::new()
                    .prefix("bgslot-values-")
                    .suffix(".json")
                    .tempfile()
                    .context("creating a temporary values file")?;
                serde_json::to_writer(&mut file, values)
                    .context("writing a temporary values file")?;
                Some(file)
            }
            None => None,
        };
        self.run(write_argv(
            release,
            chart,
            &self.target,
            write,
            self.version.major,
            generated.as_ref().map(|f| f.path()),
        ))
        .await
        .map(|_| ())
    }

    /// `helm rollback REL REV` (used by `recover`).
    pub async fn rollback(&self, release: &str, revision: u64) -> Result<()> {
        self.run(self.rollback_argv(release, revision))
            .await
            .map(|_| ())
    }
}

/// True when helm failed because the release does not exist.
pub fn is_not_found(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|c| c.to_string().contains("release: not found"))
}

/// Runs helm with argv; forwards SIGINT/SIGTERM received by bgslot to it and waits for it to exit,
/// so helm can record the state it leaves the release in.
async fn run_raw(path: &Path, argv: &[OsString], verbose: bool) -> Result<Output> {
    let printable = redact(argv);
    if verbose {
        crate::output::progress(&format!("+ {} {}", path.display(), shell_words(&printable)));
    }
    let handle = duct::cmd(path, argv)
        .stdin_null()
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .start()
        .with_context(|| format!("could not run {}", path.display()))?;
    let handle = std::sync::Arc::new(handle);
    let waiter = {
        let handle = handle.clone();
        tokio::task::spawn_blocking(move || handle.wait().cloned())
    };
    tokio::pin!(waiter);
    let mut signals = signals::subscribe();
    let output = loop {
        tokio::select! {
            res = &mut waiter => break res.context("waiting for helm")?.context("waiting for helm")?,
            sig = signals.changed_to_signal() => {
                for pid in handle.pids() {
                    signals::forward(pid, sig);
                }
            }
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if !output.status.success() {
        let sub = printable
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
        let code = output
            .status
            .code()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "a signal".into());
        let detail = if stderr.is_empty() {
            "(helm printed nothing on stderr)".to_string()
        } else {
            stderr
        };
        return Err(anyhow!(detail).context(format!("`helm {sub}` failed (exit {code})")));
    }
    Ok(Output { stdout })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            namespace: "shop".into(),
            kube_context: Some("prod".into()),
            kubeconfig: None,
        }
    }

    fn strings(argv: Vec<OsString>) -> Vec<String> {
        argv.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

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
    }

    #[test]
    fn swap_is_one_reuse_values_upgrade_with_only_the_changed_key() {
        let write = Write::upgrade("bgslot swap blue->green")
            .set("productionSlot", SetValue::Str("green".into()));
        assert_eq!(
            strings(write_argv("web", "/tmp/chart", &target(), &write, 3, None)),
            [
                "upgrade",
                "web",
                "/tmp/chart",
                "--reuse-values",
                "--namespace",
                "shop",
                "--kube-context",
                "prod",
                "--set-string",
                "productionSlot=green",
                "--description",
                "bgslot swap blue->green"
            ]
        );
    }

    #[test]
    fn chart_version_change_resets_then_reuses() {
        let mut write = Write::upgrade("bgslot deploy green v2");
        write.reset_then_reuse = true;
        let argv = strings(write_argv("web", "c", &target(), &write, 4, None));
        assert!(argv.contains(&"--reset-then-reuse-values".to_string()));
        assert!(!argv.contains(&"--reuse-values".to_string()));
    }

    #[test]
    fn user_values_come_before_bgslot_keys() {
        let mut write = Write::upgrade("d").set("green.enabled", SetValue::Literal("true".into()));
        write.user_sets = vec!["green.enabled=false".parse().unwrap()];
        write.values_files = vec!["v.yaml".into()];
        let argv = strings(write_argv("web", "c", &target(), &write, 4, None));
        let user = argv
            .iter()
            .position(|a| a == "green.enabled=false")
            .unwrap();
        let ours = argv.iter().position(|a| a == "green.enabled=true").unwrap();
        assert!(user < ours);
        assert!(argv.windows(2).any(|w| w == ["--values", "v.yaml"]));
    }

    #[test]
    fn forcing_takes_over_conflicting_fields_only_on_helm4() {
        let mut write = Write::upgrade("bgslot swap blue->green");
        write.force_conflicts = true;
        assert!(strings(write_argv("web", "c", &target(), &write, 4, None))
            .contains(&"--force-conflicts".to_string()));
        assert!(!strings(write_argv("web", "c", &target(), &write, 3, None))
            .contains(&"--force-conflicts".to_string()));
    }

    #[test]
    fn install_has_no_reuse_flag() {
        let mut write = Write::upgrade("bgslot deploy blue v1");
        write.install = true;
        let argv = strings(write_argv("web", "c", &target(), &write, 4, None));
        assert_eq!(&argv[..3], ["install", "web", "c"]);
        assert!(!argv.iter().any(|a| a.contains("reuse")));
    }

    #[test]
    fn secrets_are_redacted() {
        let argv: Vec<OsString> = [
            "upgrade",
            "--set",
            "db.password=hunter2,replicas=2",
            "--set-string",
            "apiToken=abc",
            "--description",
            "x",
        ]
        .into_iter()
        .map(Into::into)
        .collect();
        let shown = redact(&argv).join(" ");
        assert!(
            !shown.contains("hunter2") && !shown.contains("abc"),
            "{shown}"
        );
        assert!(
            shown.contains("replicas=2") && shown.contains("db.password=***"),
            "{shown}"
        );
    }
}
