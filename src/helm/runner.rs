//! The thin layer that runs helm: never through a shell, with SIGINT/SIGTERM forwarded to it so
//! helm can record the state it leaves the release in, and with helm's stderr kept in every
//! error ([`HelmError`]). What each command line is, is `argv`'s business.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use super::argv::{self, redact, SlotWrite, Target, Write};
use super::error::{HelmError, HelmErrorKind};
use super::json::{parse_history, ReleaseRecord, Revision, Status};
use super::version::{parse_version, HelmVersion, VersionCache, MIN_HELM};
use crate::events::{Event, Events};
use crate::names::shell_words;
use crate::record::RunId;
use crate::signals;

/// Runs helm for one bgslot invocation; knows its version.
#[derive(Clone)]
pub struct HelmRunner {
    pub path: PathBuf,
    /// How command lines name helm: as the user gave it (`--helm`), else `helm`, found on PATH.
    pub shown: String,
    pub version: HelmVersion,
    pub target: Target,
    pub verbose: bool,
    /// The run across several clusters whose ID every write records in its description.
    pub run_id: Option<RunId>,
    events: Arc<dyn Events>,
}

impl std::fmt::Debug for HelmRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelmRunner")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl HelmRunner {
    /// Knows the helm version (asked once per helm binary, then cached) and refuses helm older
    /// than [`MIN_HELM`].
    pub async fn detect(
        path: PathBuf,
        shown: String,
        target: Target,
        verbose: bool,
        events: Arc<dyn Events>,
    ) -> Result<HelmRunner> {
        let cache = VersionCache::for_binary(&path);
        let mut runner = HelmRunner {
            path,
            shown,
            version: HelmVersion {
                major: 0,
                minor: 0,
                patch: 0,
            },
            target,
            verbose,
            run_id: None,
            events,
        };
        runner.version = match cache.as_ref().and_then(VersionCache::read) {
            Some(version) => version,
            None => {
                let out = runner.run(argv::version_argv()).await?;
                let version = parse_version(&out).ok_or_else(|| {
                    anyhow!(
                        "could not read the helm version from `{} version`: got '{}'",
                        runner.path.display(),
                        out.trim()
                    )
                })?;
                if let Some(cache) = &cache {
                    cache.write(version);
                }
                version
            }
        };
        if !runner.version.supported() {
            bail!(
                "helm {} at {} is too old: bgslot needs Helm {}.{} or newer (for --reset-then-reuse-values)",
                runner.version,
                runner.path.display(),
                MIN_HELM.0,
                MIN_HELM.1
            );
        }
        Ok(runner)
    }

    /// `helm history REL -o json`; `None` when the release does not exist.
    pub async fn history(&self, release: &str) -> Result<Option<Vec<Revision>>> {
        match self.run(argv::history_argv(release, &self.target)).await {
            Ok(out) => parse_history(&out)
                .map(Some)
                .with_context(|| format!("reading `helm history {release} -o json`")),
            Err(err) if HelmError::is(&err, HelmErrorKind::NotFound) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// `helm status REL -o json`: the latest revision and the values the user gave, in one
    /// command; `None` when the release does not exist.
    pub async fn status(&self, release: &str) -> Result<Option<Status>> {
        match self.run(argv::status_argv(release, &self.target)).await {
            Ok(out) => serde_json::from_str(&out)
                .map(Some)
                .with_context(|| format!("reading `helm status {release} -o json`")),
            Err(err) if HelmError::is(&err, HelmErrorKind::NotFound) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// `helm get values REL --all -o json`: user values merged over chart defaults.
    pub async fn values(&self, release: &str) -> Result<Value> {
        let out = self.run(argv::values_argv(release, &self.target)).await?;
        serde_json::from_str(&out)
            .with_context(|| format!("reading `helm get values {release} --all -o json`"))
    }

    /// The full helm command line of `write`, as `-v` would print it (secrets redacted).
    pub fn command_line(&self, release: &str, chart: &str, write: &Write) -> Vec<String> {
        let generated = write
            .generated
            .as_ref()
            .map(|_| Path::new("<values bgslot generates>"));
        let argv = argv::write_argv(
            release,
            chart,
            &self.target,
            write,
            self.version.major,
            generated,
            self.run_id.as_ref(),
        );
        self.printable(&argv)
    }

    /// The full command line of `helm rollback REL REV`.
    pub fn rollback_command_line(&self, release: &str, revision: u64) -> Vec<String> {
        self.printable(&argv::rollback_argv(release, revision, &self.target))
    }

    fn printable(&self, argv: &[OsString]) -> Vec<String> {
        std::iter::once(self.shown.clone())
            .chain(redact(argv))
            .collect()
    }

    /// Runs `write`. The generated values go through a file readable by this user only: they
    /// may hold a slot's secretEnv.
    pub async fn write(&self, release: &str, chart: &str, write: &Write) -> Result<()> {
        let generated = write.generated.as_ref().map(values_file).transpose()?;
        let argv = argv::write_argv(
            release,
            chart,
            &self.target,
            write,
            self.version.major,
            generated.as_ref().map(|f| f.path()),
            self.run_id.as_ref(),
        );
        self.run(argv).await.map(|_| ())
    }

    /// `helm status REL -o json` read whole: the user values, the manifest and the hooks of the
    /// latest revision; `None` when the release does not exist.
    pub async fn release(&self, release: &str) -> Result<Option<ReleaseRecord>> {
        match self.run(argv::status_argv(release, &self.target)).await {
            Ok(out) => serde_json::from_str(&out)
                .map(Some)
                .with_context(|| format!("reading `helm status {release} -o json`")),
            Err(err) if HelmError::is(&err, HelmErrorKind::NotFound) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Renders `write` of the slot release `release` as a server-side dry run: what helm would
    /// install, rendered with the cluster's version and API versions, after helm's ownership
    /// check. Nothing changes.
    pub async fn render_slot(&self, release: &str, write: &SlotWrite) -> Result<ReleaseRecord> {
        let base = write.base.as_ref().map(values_file).transpose()?;
        let argv = argv::slot_render_argv(
            release,
            &self.target,
            write,
            base.as_ref().map(|f| f.path()),
        );
        let out = self.run(argv).await?;
        serde_json::from_str(&out)
            .with_context(|| format!("reading the dry run of {release} (helm -o json)"))
    }

    /// Runs `write` of the slot release `release`; returns the release as helm recorded it.
    /// A slot written as stage goes through bgslot itself as helm's post-renderer: this very
    /// executable for Helm 3, a plugin laid out for this write (ahead of the user's plugins) for
    /// Helm 4.
    pub async fn write_slot(&self, release: &str, write: &SlotWrite) -> Result<ReleaseRecord> {
        let base = write.base.as_ref().map(values_file).transpose()?;
        let mut env = Vec::new();
        let mut _plugins = None;
        let post = match &write.as_stage {
            None => None,
            Some(_) => {
                let exe = std::env::current_exe()
                    .context("finding bgslot's own executable, helm's post-renderer")?;
                if self.version.major >= 4 {
                    let dir = tempfile::Builder::new()
                        .prefix("bgslot-plugins-")
                        .tempdir()
                        .context("creating a temporary helm plugin directory")?;
                    let plugin = dir.path().join(argv::POST_RENDER_PLUGIN);
                    std::fs::create_dir(&plugin)
                        .and_then(|_| {
                            std::fs::write(
                                plugin.join("plugin.yaml"),
                                argv::post_render_plugin(&exe),
                            )
                        })
                        .context("writing bgslot's post-renderer plugin")?;
                    let mut dirs = vec![dir.path().to_path_buf()];
                    dirs.extend(self.plugin_dirs().await?);
                    let joined =
                        std::env::join_paths(dirs).context("joining helm's plugin directories")?;
                    env.push(("HELM_PLUGINS".into(), joined));
                    _plugins = Some(dir);
                    Some(argv::PostRenderer::Plugin(argv::POST_RENDER_PLUGIN.into()))
                } else {
                    Some(argv::PostRenderer::Executable(exe))
                }
            }
        };
        let argv = argv::slot_write_argv(
            release,
            &self.target,
            write,
            base.as_ref().map(|f| f.path()),
            post.as_ref(),
            self.run_id.as_ref(),
        );
        let out = self.run_with(argv, &env).await?;
        serde_json::from_str(&out)
            .with_context(|| format!("reading what helm wrote of {release} (helm -o json)"))
    }

    /// Renders a write of `release` with `chart` (a bgslot chart) as a server-side dry run.
    pub async fn render(&self, release: &str, chart: &str, write: &Write) -> Result<ReleaseRecord> {
        let generated = write.generated.as_ref().map(values_file).transpose()?;
        let argv = argv::dry_run(argv::write_argv(
            release,
            chart,
            &self.target,
            write,
            self.version.major,
            generated.as_ref().map(|f| f.path()),
            self.run_id.as_ref(),
        ));
        let out = self.run(argv).await?;
        serde_json::from_str(&out)
            .with_context(|| format!("reading the dry run of {release} (helm -o json)"))
    }

    /// `helm uninstall REL --keep-history`.
    pub async fn uninstall(
        &self,
        release: &str,
        description: &str,
        timeout: std::time::Duration,
    ) -> Result<()> {
        self.run(argv::uninstall_argv(
            release,
            &self.target,
            description,
            timeout,
            self.run_id.as_ref(),
        ))
        .await
        .map(|_| ())
    }

    /// The command line of a slot write, as `-v` would print it.
    pub fn slot_command_line(&self, release: &str, write: &SlotWrite) -> Vec<String> {
        let base = write
            .base
            .as_ref()
            .map(|_| Path::new("<production's values>"));
        let post = if self.version.major >= 4 {
            argv::PostRenderer::Plugin(argv::POST_RENDER_PLUGIN.into())
        } else {
            argv::PostRenderer::Executable("bgslot".into())
        };
        self.printable(&argv::slot_write_argv(
            release,
            &self.target,
            write,
            base,
            Some(&post),
            self.run_id.as_ref(),
        ))
    }

    /// The user's helm plugin directories ($HELM_PLUGINS, else where helm keeps them).
    async fn plugin_dirs(&self) -> Result<Vec<PathBuf>> {
        let dirs = match std::env::var_os("HELM_PLUGINS") {
            Some(dirs) => dirs,
            None => self
                .run(vec!["env".into(), "HELM_PLUGINS".into()])
                .await?
                .trim()
                .into(),
        };
        Ok(std::env::split_paths(&dirs)
            .filter(|d| !d.as_os_str().is_empty())
            .collect())
    }

    /// The command line of `helm uninstall REL --keep-history`.
    pub fn uninstall_command_line(
        &self,
        release: &str,
        description: &str,
        timeout: std::time::Duration,
    ) -> Vec<String> {
        self.printable(&argv::uninstall_argv(
            release,
            &self.target,
            description,
            timeout,
            self.run_id.as_ref(),
        ))
    }

    /// `helm rollback REL REV` (used by `recover`).
    pub async fn rollback(&self, release: &str, revision: u64) -> Result<()> {
        self.run(argv::rollback_argv(release, revision, &self.target))
            .await
            .map(|_| ())
    }

    /// Runs helm with argv and returns its stdout; forwards SIGINT/SIGTERM received by bgslot to
    /// it and waits for it to exit.
    async fn run(&self, argv: Vec<OsString>) -> Result<String> {
        self.run_with(argv, &[]).await
    }

    /// [`run`](Self::run) with these variables added to helm's environment.
    async fn run_with(&self, argv: Vec<OsString>, env: &[(OsString, OsString)]) -> Result<String> {
        let printable = self.printable(&argv);
        if self.verbose {
            self.events
                .event(Event::Command(&format!("+ {}", shell_words(&printable))));
        }
        let mut cmd = duct::cmd(&self.path, &argv);
        for (key, value) in env {
            cmd = cmd.env(key, value);
        }
        let handle = cmd
            .stdin_null()
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .start()
            .with_context(|| format!("could not run {}", self.path.display()))?;
        let handle = Arc::new(handle);
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
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(HelmError::new(printable, output.status.code(), &stderr).into());
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// A values file readable by this user only (values may hold secrets), gone when dropped.
fn values_file(values: &Value) -> Result<tempfile::NamedTempFile> {
    let mut file = tempfile::Builder::new()
        .prefix("bgslot-values-")
        .suffix(".json")
        .tempfile()
        .context("creating a temporary values file")?;
    serde_json::to_writer(&mut file, values).context("writing a temporary values file")?;
    Ok(file)
}
