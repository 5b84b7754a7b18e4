//! The helm command lines bgslot runs, built by pure functions so each is unit-tested exactly:
//! where the cluster is, the one kind of write bgslot makes, the reads, and the redaction that
//! makes any of them fit to print.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::names::SetArg;
use crate::record::{stamped, Recorded, RunId};

/// Where the cluster is, as helm's own global flags say it.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub namespace: String,
    pub kube_context: Option<String>,
    pub kubeconfig: Option<PathBuf>,
}

impl Target {
    pub fn args(&self) -> Vec<OsString> {
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
    /// A JSON value (`--set-json`): a list such as `heldWorkers=["consumer"]`, or `[]`.
    Json(serde_json::Value),
}

impl SetValue {
    /// The flag helm takes it with, and the value as written after `KEY=`.
    pub fn flag(&self) -> (&'static str, String) {
        match self {
            SetValue::Str(v) => ("--set-string", v.clone()),
            SetValue::Literal(v) => ("--set", v.clone()),
            SetValue::Json(v) => ("--set-json", v.to_string()),
        }
    }

    /// The value as helm types it: `--set-string` a string, `--set` a boolean, null or whole
    /// number when it reads as one (else a string), `--set-json` the JSON given.
    pub fn as_value(&self) -> Value {
        match self {
            SetValue::Str(s) => Value::String(s.clone()),
            SetValue::Literal(text) => match text.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                _ => text
                    .parse::<i64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::String(text.clone())),
            },
            SetValue::Json(v) => v.clone(),
        }
    }
}

/// `--set`/`--set-string`/`--set-json KEY=VALUE` for each of bgslot's keys.
fn set_args(sets: &[(String, SetValue)]) -> Vec<OsString> {
    sets.iter()
        .flat_map(|(key, value)| {
            let (flag, value) = value.flag();
            [flag.into(), format!("{key}={value}").into()]
        })
        .collect()
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
    /// What the revision records in `helm history` (its `--description`).
    pub record: Recorded,
    /// Take over fields another manager owns (Helm 4 server-side apply), for an explicit --force.
    pub force_conflicts: bool,
}

impl Write {
    /// An upgrade that reuses the release's values and records `record`.
    pub fn upgrade(record: Recorded) -> Self {
        Write {
            install: false,
            reset_then_reuse: false,
            sets: Vec::new(),
            values_files: Vec::new(),
            user_sets: Vec::new(),
            generated: None,
            record,
            force_conflicts: false,
        }
    }

    pub fn set(mut self, key: impl Into<String>, value: SetValue) -> Self {
        self.sets.push((key.into(), value));
        self
    }

    /// The `--description` helm stores.
    pub fn description(&self) -> String {
        self.record.to_string()
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
    run: Option<&RunId>,
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
    argv.extend(set_args(&write.sets));
    argv.extend([
        "--description".into(),
        stamped(&write.description(), run).into(),
    ]);
    // Helm 4 applies server-side: a field someone edited by hand is owned by another manager and
    // the apply conflicts. Only an explicit --force takes it back. Helm 3 merges client-side.
    if write.force_conflicts && major >= 4 {
        argv.push("--force-conflicts".into());
    }
    argv
}

/// The same write as a server-side dry run that prints the release as JSON: helm renders with
/// the cluster's version and API versions, runs its ownership check of live objects, and changes
/// nothing.
pub fn dry_run(mut argv: Vec<OsString>) -> Vec<OsString> {
    argv.extend(["--dry-run=server".into(), "--output".into(), "json".into()]);
    argv
}

/// A write of a slot release in router mode: the user's chart, installed or upgraded whole.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotWrite {
    /// A path, `repo/name` or `oci://...`.
    pub chart: String,
    pub version: Option<String>,
    /// The production slot's user values, passed first in a values file bgslot writes (never
    /// its computed values: the chart's defaults come from the chart being installed).
    pub base: Option<Value>,
    /// The user's `-f` files and `--set`s, after the base.
    pub values_files: Vec<PathBuf>,
    pub user_sets: Vec<SetArg>,
    /// bgslot's own keys (the tag, repository, digest and replicas), last.
    pub sets: Vec<(String, SetValue)>,
    pub record: Recorded,
    /// How long helm may wait for the chart's hooks.
    pub timeout: std::time::Duration,
    /// The slot is written as stage: what follows production is held back as it is rendered.
    pub as_stage: Option<AsStage>,
}

impl SlotWrite {
    pub fn description(&self) -> String {
        self.record.to_string()
    }
}

/// What follows production, held back in a slot release written as stage: its workers at
/// `replicas` (the stage's), every CronJob suspended. bgslot edits the render itself, as helm's
/// post-renderer, so that not one worker pod nor CronJob run of the new version starts before
/// the swap, and what helm records is what runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsStage {
    /// The workers' Deployments, by name.
    pub workers: Vec<String>,
    pub replicas: u64,
}

impl AsStage {
    /// The arguments bgslot takes as a post-renderer (its hidden `post-render` command).
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "post-render".to_string(),
            "--replicas".to_string(),
            self.replicas.to_string(),
        ];
        for worker in &self.workers {
            args.extend(["--worker".to_string(), worker.clone()]);
        }
        args
    }
}

/// How helm reaches bgslot as a post-renderer: Helm 3 runs an executable by path, Helm 4 only a
/// plugin, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostRenderer {
    Executable(PathBuf),
    Plugin(String),
}

/// The name of the post-renderer plugin bgslot lays out for Helm 4.
pub const POST_RENDER_PLUGIN: &str = "bgslot-as-stage";

/// A Helm 4 plugin that runs `exe` as a post-renderer, its `plugin.yaml`.
pub fn post_render_plugin(exe: &Path) -> String {
    format!(
        "apiVersion: v1\ntype: postrenderer/v1\nname: {POST_RENDER_PLUGIN}\nversion: 0.1.0\nruntime: subprocess\nruntimeConfig:\n  platformCommand:\n    - command: {}\n",
        serde_json::to_string(&exe.to_string_lossy()).unwrap_or_default()
    )
}

/// argv of a slot write: `helm upgrade --install` with `--reset-values`, so that nothing of the
/// slot's previous occupant (its own `--set`s, an old tag) survives, only what this write passes.
/// It prints the release as JSON (its revision, what it rendered).
pub fn slot_write_argv(
    release: &str,
    target: &Target,
    write: &SlotWrite,
    base: Option<&Path>,
    post: Option<&PostRenderer>,
    run: Option<&RunId>,
) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![
        "upgrade".into(),
        "--install".into(),
        release.into(),
        write.chart.clone().into(),
        "--reset-values".into(),
    ];
    argv.extend(target.args());
    if let Some(version) = write.version.as_ref().filter(|v| !v.is_empty()) {
        argv.extend(["--version".into(), version.into()]);
    }
    for file in base
        .into_iter()
        .chain(write.values_files.iter().map(PathBuf::as_path))
    {
        argv.extend(["--values".into(), file.into()]);
    }
    for set in &write.user_sets {
        argv.extend(["--set".into(), set.to_string().into()]);
    }
    argv.extend(set_args(&write.sets));
    if let (Some(as_stage), Some(post)) = (&write.as_stage, post) {
        argv.push("--post-renderer".into());
        argv.push(match post {
            PostRenderer::Executable(path) => path.into(),
            PostRenderer::Plugin(name) => name.into(),
        });
        for arg in as_stage.args() {
            argv.extend(["--post-renderer-args".into(), arg.into()]);
        }
    }
    argv.extend([
        "--description".into(),
        stamped(&write.description(), run).into(),
        "--timeout".into(),
        format!("{}s", write.timeout.as_secs().max(1)).into(),
        "--output".into(),
        "json".into(),
    ]);
    argv
}

/// The dry run of a slot write (`--dry-run=server`, printing the release as JSON), as the chart
/// renders it: without the post-renderer, so the preflight sees what the chart asks for.
pub fn slot_render_argv(
    release: &str,
    target: &Target,
    write: &SlotWrite,
    base: Option<&Path>,
) -> Vec<OsString> {
    let mut argv = slot_write_argv(release, target, write, base, None, None);
    argv.push("--dry-run=server".into());
    argv
}

/// `helm uninstall REL --keep-history`: the objects go, the history stays (so the name can be
/// installed again, and `helm history` still shows what ran there).
pub fn uninstall_argv(
    release: &str,
    target: &Target,
    description: &str,
    timeout: std::time::Duration,
    run: Option<&RunId>,
) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec!["uninstall".into(), release.into()];
    argv.extend(target.args());
    argv.extend([
        "--keep-history".into(),
        "--description".into(),
        stamped(description, run).into(),
        "--timeout".into(),
        format!("{}s", timeout.as_secs().max(1)).into(),
    ]);
    argv
}

/// `helm rollback REL REV`.
pub fn rollback_argv(release: &str, revision: u64, target: &Target) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![
        "rollback".into(),
        release.into(),
        revision.to_string().into(),
    ];
    argv.extend(target.args());
    argv
}

/// `helm status REL -o json`.
pub fn status_argv(release: &str, target: &Target) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![
        "status".into(),
        release.into(),
        "--output".into(),
        "json".into(),
    ];
    argv.extend(target.args());
    argv
}

/// How many revisions a history read returns, as `helm history --max 50`.
pub const HISTORY_MAX: usize = 50;

/// `helm history REL -o json --max HISTORY_MAX`.
pub fn history_argv(release: &str, target: &Target) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![
        "history".into(),
        release.into(),
        "--output".into(),
        "json".into(),
    ];
    argv.extend(["--max".into(), HISTORY_MAX.to_string().into()]);
    argv.extend(target.args());
    argv
}

/// `helm get values REL --all -o json`.
pub fn values_argv(release: &str, target: &Target) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![
        "get".into(),
        "values".into(),
        release.into(),
        "--all".into(),
        "--output".into(),
        "json".into(),
    ];
    argv.extend(target.args());
    argv
}

/// `helm version --template '{{.Version}}'`.
pub fn version_argv() -> Vec<OsString> {
    vec!["version".into(), "--template".into(), "{{.Version}}".into()]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::Slot;

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

    fn swap() -> Recorded {
        Recorded::Swap {
            from: Slot::Blue,
            to: Slot::Green,
        }
    }

    fn deploy(slot: Slot) -> Recorded {
        Recorded::Deploy {
            slot,
            version: "v2".into(),
        }
    }

    #[test]
    fn swap_is_one_reuse_values_upgrade_with_only_the_changed_key() {
        let write = Write::upgrade(swap()).set("productionSlot", SetValue::Str("green".into()));
        assert_eq!(
            strings(write_argv(
                "web",
                "/tmp/chart",
                &target(),
                &write,
                3,
                None,
                None
            )),
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
    fn a_run_across_clusters_stamps_every_description_it_writes() {
        let run = RunId::new("20261206T181714Z", 0x7f3a);
        let write = Write::upgrade(swap()).set("productionSlot", SetValue::Str("green".into()));
        let argv = strings(write_argv(
            "web",
            "c",
            &target(),
            &write,
            4,
            None,
            Some(&run),
        ));
        let at = argv.iter().position(|a| a == "--description").unwrap();
        assert_eq!(
            argv[at + 1],
            "bgslot swap blue->green run=20261206T181714Z-7f3a"
        );
        let argv = strings(uninstall_argv(
            "web-blue",
            &target(),
            "bgslot clean blue",
            std::time::Duration::from_secs(90),
            Some(&run),
        ));
        assert!(argv.contains(&"bgslot clean blue run=20261206T181714Z-7f3a".to_string()));
        let argv = strings(slot_write_argv(
            "web-green",
            &target(),
            &slot_write(),
            None,
            None,
            Some(&run),
        ));
        assert!(argv.contains(&"bgslot deploy green v2 run=20261206T181714Z-7f3a".to_string()));
    }

    #[test]
    fn lists_are_set_as_json() {
        let write = Write::upgrade(swap())
            .set(
                "heldWorkers",
                SetValue::Json(serde_json::json!(["consumer"])),
            )
            .set("heldWorkers", SetValue::Json(serde_json::json!([])));
        let argv = strings(write_argv("web", "c", &target(), &write, 3, None, None));
        assert!(
            argv.windows(2)
                .any(|w| w == ["--set-json", r#"heldWorkers=["consumer"]"#]),
            "{argv:?}"
        );
        assert!(
            argv.windows(2)
                .any(|w| w == ["--set-json", "heldWorkers=[]"]),
            "{argv:?}"
        );
    }

    #[test]
    fn chart_version_change_resets_then_reuses() {
        let mut write = Write::upgrade(deploy(Slot::Green));
        write.reset_then_reuse = true;
        let argv = strings(write_argv("web", "c", &target(), &write, 4, None, None));
        assert!(argv.contains(&"--reset-then-reuse-values".to_string()));
        assert!(!argv.contains(&"--reuse-values".to_string()));
    }

    #[test]
    fn user_values_come_before_bgslot_keys() {
        let mut write = Write::upgrade(deploy(Slot::Green))
            .set("green.enabled", SetValue::Literal("true".into()));
        write.user_sets = vec!["green.enabled=false".parse().unwrap()];
        write.values_files = vec!["v.yaml".into()];
        let generated = Path::new("/tmp/generated.json");
        let argv = strings(write_argv(
            "web",
            "c",
            &target(),
            &write,
            4,
            Some(generated),
            None,
        ));
        let user = argv
            .iter()
            .position(|a| a == "green.enabled=false")
            .unwrap();
        let ours = argv.iter().position(|a| a == "green.enabled=true").unwrap();
        assert!(user < ours);
        let files: Vec<&String> = argv
            .windows(2)
            .filter(|w| w[0] == "--values")
            .map(|w| &w[1])
            .collect();
        assert_eq!(files, ["v.yaml", "/tmp/generated.json"]);
    }

    #[test]
    fn forcing_takes_over_conflicting_fields_only_on_helm4() {
        let mut write = Write::upgrade(swap());
        write.force_conflicts = true;
        assert!(
            strings(write_argv("web", "c", &target(), &write, 4, None, None))
                .contains(&"--force-conflicts".to_string())
        );
        assert!(
            !strings(write_argv("web", "c", &target(), &write, 3, None, None))
                .contains(&"--force-conflicts".to_string())
        );
    }

    #[test]
    fn install_has_no_reuse_flag() {
        let mut write = Write::upgrade(Recorded::Install {
            slot: Slot::Blue,
            version: "v1".into(),
        });
        write.install = true;
        let argv = strings(write_argv("web", "c", &target(), &write, 4, None, None));
        assert_eq!(&argv[..3], ["install", "web", "c"]);
        assert!(!argv.iter().any(|a| a.contains("reuse")));
        assert_eq!(argv.last().unwrap(), "bgslot install blue v1");
    }

    #[test]
    fn reads_name_the_release_and_the_target() {
        assert_eq!(
            strings(status_argv("web", &target())),
            [
                "status",
                "web",
                "--output",
                "json",
                "--namespace",
                "shop",
                "--kube-context",
                "prod"
            ]
        );
        assert_eq!(
            strings(history_argv("web", &target()))[..6],
            ["history", "web", "--output", "json", "--max", "50"]
        );
        assert_eq!(
            strings(rollback_argv("web", 3, &target()))[..3],
            ["rollback", "web", "3"]
        );
        assert_eq!(
            strings(values_argv("web", &target()))[..4],
            ["get", "values", "web", "--all"]
        );
    }

    fn slot_write() -> SlotWrite {
        SlotWrite {
            chart: "./charts/myapp".into(),
            version: None,
            base: None,
            values_files: vec!["prod.yaml".into()],
            user_sets: vec!["env=prod".parse().unwrap()],
            sets: vec![
                ("image.tag".into(), SetValue::Str("1.20".into())),
                ("replicaCount".into(), SetValue::Literal("3".into())),
            ],
            record: deploy(Slot::Green),
            timeout: std::time::Duration::from_secs(300),
            as_stage: None,
        }
    }

    #[test]
    fn a_slot_write_installs_or_upgrades_with_reset_values_and_bgslot_keys_last() {
        let base = Path::new("/tmp/production-values.json");
        let argv = strings(slot_write_argv(
            "web-green",
            &target(),
            &slot_write(),
            Some(base),
            Some(&PostRenderer::Plugin(POST_RENDER_PLUGIN.into())),
            None,
        ));
        assert_eq!(
            argv,
            [
                "upgrade",
                "--install",
                "web-green",
                "./charts/myapp",
                "--reset-values",
                "--namespace",
                "shop",
                "--kube-context",
                "prod",
                "--values",
                "/tmp/production-values.json",
                "--values",
                "prod.yaml",
                "--set",
                "env=prod",
                "--set-string",
                "image.tag=1.20",
                "--set",
                "replicaCount=3",
                "--description",
                "bgslot deploy green v2",
                "--timeout",
                "300s",
                "--output",
                "json"
            ]
        );
        let versioned = SlotWrite {
            chart: "oci://ghcr.io/acme/charts/web".into(),
            version: Some("1.4.2".into()),
            ..slot_write()
        };
        let argv = strings(slot_render_argv("web-green", &target(), &versioned, None));
        let at = argv.iter().position(|a| a == "--version").unwrap();
        assert_eq!(argv[at + 1], "1.4.2");
        assert_eq!(argv.last().unwrap(), "--dry-run=server");
        assert!(!argv.iter().any(|a| a == "--take-ownership"));
    }

    #[test]
    fn a_slot_written_as_stage_goes_through_bgslot_as_its_post_renderer() {
        let write = SlotWrite {
            as_stage: Some(AsStage {
                workers: vec!["web-green-sidekiq".into()],
                replicas: 0,
            }),
            ..slot_write()
        };
        let helm3 = PostRenderer::Executable("/usr/local/bin/bgslot".into());
        let argv = strings(slot_write_argv(
            "web-green",
            &target(),
            &write,
            None,
            Some(&helm3),
            None,
        ));
        let at = argv.iter().position(|a| a == "--post-renderer").unwrap();
        assert_eq!(
            argv[at..at + 10],
            [
                "--post-renderer",
                "/usr/local/bin/bgslot",
                "--post-renderer-args",
                "post-render",
                "--post-renderer-args",
                "--replicas",
                "--post-renderer-args",
                "0",
                "--post-renderer-args",
                "--worker",
            ]
        );
        assert_eq!(argv[at + 11], "web-green-sidekiq");
        // The dry run renders as the chart asks: the preflight reads the workers' replicas.
        let dry = strings(slot_render_argv("web-green", &target(), &write, None));
        assert!(!dry.iter().any(|a| a == "--post-renderer"));
        let plugin = post_render_plugin(Path::new("/opt/bgslot"));
        assert!(
            plugin.contains("type: postrenderer/v1\nname: bgslot-as-stage\n"),
            "{plugin}"
        );
        assert!(plugin.ends_with("- command: \"/opt/bgslot\"\n"), "{plugin}");
    }

    #[test]
    fn a_render_is_the_write_as_a_server_side_dry_run() {
        let write = Write::upgrade(swap()).set("productionSlot", SetValue::Str("green".into()));
        let argv = strings(dry_run(write_argv(
            "web",
            "c",
            &target(),
            &write,
            4,
            None,
            None,
        )));
        assert_eq!(
            &argv[argv.len() - 3..],
            ["--dry-run=server", "--output", "json"]
        );
        assert_eq!(&argv[..3], ["upgrade", "web", "c"]);
    }

    #[test]
    fn clean_uninstalls_a_slot_release_keeping_its_history() {
        assert_eq!(
            strings(uninstall_argv(
                "web-blue",
                &target(),
                "bgslot clean blue",
                std::time::Duration::from_secs(90),
                None
            )),
            [
                "uninstall",
                "web-blue",
                "--namespace",
                "shop",
                "--kube-context",
                "prod",
                "--keep-history",
                "--description",
                "bgslot clean blue",
                "--timeout",
                "90s"
            ]
        );
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
