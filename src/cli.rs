//! The command-line surface of bgslot, at the top of the house: global flags and environment
//! variables (turned into plain [`Settings`] for the layers below), the list of commands, and
//! [`run`], which runs one command with the printer and maps its outcome to an exit status.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser};

use crate::chart::check_chart_flag;
use crate::commands::{Command, Invocation};
use crate::context::Settings;
use crate::duration::parse_duration;
use crate::error::{ExitStatus, UsageError};
use crate::output::{print_error, ErrorReport, OutputFormat, Printer};

/// Boring, safe blue/green releases on Kubernetes with Helm.
///
/// Exit codes: 0 done, 1 failed (helm error, timeout, verification failed), 2 usage,
/// 3 refused by a safety check (nothing changed), 4 the release is locked by another bgslot,
/// 5 several clusters left on different versions.
#[derive(Debug, Parser)]
#[command(
    name = "bgslot",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Namespace of the release [default: the kube context's namespace, else "default"]
    #[arg(short, long, global = true, env = "HELM_NAMESPACE", value_name = "NS")]
    pub namespace: Option<String>,

    /// Kubeconfig context to use
    #[arg(long, global = true, env = "HELM_KUBECONTEXT", value_name = "NAME")]
    pub kube_context: Option<String>,

    /// Path to the kubeconfig file [default: $KUBECONFIG, else ~/.kube/config]
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// The helm binary [default: `helm` found on PATH]
    #[arg(long = "helm", global = true, env = "HELM_BIN", value_name = "PATH")]
    pub helm: Option<PathBuf>,

    /// Output format
    #[arg(short, long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Print every helm command run (secrets redacted)
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// How long to wait for a slot to become ready (e.g. 90s, 5m)
    #[arg(long, global = true, value_parser = parse_duration, default_value = "5m", value_name = "DURATION")]
    pub timeout: Duration,

    /// A chart directory or reference to use instead of the embedded bgslot chart
    #[arg(long, global = true, value_name = "PATH|REF")]
    pub chart: Option<String>,

    /// Wait for a release lock held by another bgslot instead of failing (exit 4)
    #[arg(long, global = true, value_name = "DURATION", num_args = 0..=1,
          default_missing_value = "10m", value_parser = parse_duration)]
    pub wait_for_lock: Option<Duration>,
}

impl GlobalArgs {
    /// Helm exports HELM_KUBECONTEXT (and may export HELM_NAMESPACE) empty when the flag was not
    /// given; an empty value means "not set", as it does for helm.
    pub fn without_empty_values(mut self) -> Self {
        self.namespace = self.namespace.filter(|v| !v.is_empty());
        self.kube_context = self.kube_context.filter(|v| !v.is_empty());
        self.helm = self.helm.filter(|v| !v.as_os_str().is_empty());
        self.kubeconfig = self.kubeconfig.filter(|v| !v.as_os_str().is_empty());
        self
    }

    /// What the layers below are told, once the flags no parser could check alone are checked:
    /// a `--chart` that names a local path which does not exist is a usage error here, before
    /// any command connects or runs helm.
    pub fn settings(&self) -> Result<Settings, UsageError> {
        let global = self.clone().without_empty_values();
        if let Some(chart) = &global.chart {
            check_chart_flag(chart, std::path::Path::new(chart).exists())?;
        }
        Ok(Settings {
            namespace: global.namespace,
            kube_context: global.kube_context,
            kubeconfig: global.kubeconfig,
            helm: global.helm,
            verbose: global.verbose,
            timeout: global.timeout,
            chart: global.chart,
            wait_for_lock: global.wait_for_lock,
            run: None,
        })
    }
}

/// Runs the parsed command: its report on stdout, or its error, printed once; returns how it
/// ended.
pub async fn run(cli: Cli) -> ExitStatus {
    crate::signals::install();
    let format = cli.global.output;
    let settings = match cli.global.settings() {
        Ok(settings) => settings,
        Err(err) => {
            let err = anyhow::Error::new(err);
            print_error(&ErrorReport::new(&err), format);
            return ExitStatus::of(&err);
        }
    };
    let printer = Printer::new(format);
    let invocation = Invocation {
        settings: &settings,
        ui: &printer,
        cli: Cli::command,
    };
    // A command given targets runs across them; every other run is the command itself.
    match crate::fleet::run(&cli.command, &invocation).await {
        Ok(()) => ExitStatus::Done,
        Err(err) => {
            printer.finish();
            print_error(&ErrorReport::new(&err), format);
            ExitStatus::of(&err)
        }
    }
}

/// Parses the command line. On a usage error it prints clap's message (or, with `-o json`, a JSON
/// error document) and exits 2; `--help` and `--version` exit 0.
pub fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => err.exit(),
        Err(err) if wants_json(std::env::args()) => {
            print_error(&ErrorReport::usage(&err.to_string()), OutputFormat::Json);
            std::process::exit(ExitStatus::Usage.code());
        }
        Err(err) => err.exit(),
    }
}

/// Whether the raw arguments ask for JSON output, for errors found before they could be parsed.
fn wants_json(args: impl Iterator<Item = String>) -> bool {
    let args: Vec<String> = args.collect();
    args.windows(2)
        .any(|w| matches!(w[0].as_str(), "-o" | "--output") && w[1] == "json")
        || args.iter().any(|a| a == "--output=json" || a == "-ojson")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn tag_and_image_conflict() {
        let err = Cli::try_parse_from(["bgslot", "deploy", "web", "--tag", "v1", "--image", "a:b"])
            .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn deploy_needs_a_version() {
        let err = Cli::try_parse_from(["bgslot", "deploy", "web"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn malformed_flag_values_are_usage_errors_naming_the_flag() {
        for (args, flag) in [
            (&["bgslot", "status", "Web"][..], "<RELEASE>"),
            (&["bgslot", "deploy", "web", "--tag", "v1;rm"], "--tag"),
            (&["bgslot", "deploy", "web", "--image", "nginx"], "--image"),
            (
                &["bgslot", "deploy", "web", "--tag", "v1", "--replicas", "0"],
                "--replicas",
            ),
            (
                &["bgslot", "deploy", "web", "--tag", "v1", "--set", "x"],
                "--set",
            ),
            (
                &[
                    "bgslot",
                    "deploy",
                    "web",
                    "--tag",
                    "v1",
                    "-f",
                    "/nonexistent",
                ],
                "--values",
            ),
            (
                &["bgslot", "swap", "web", "--expect-tag", "a b"],
                "--expect-tag",
            ),
            (
                &["bgslot", "clean", "web", "--min-age", "soon"],
                "--min-age",
            ),
            (
                &[
                    "bgslot",
                    "release",
                    "web",
                    "--tag",
                    "v1",
                    "--verify-cmd",
                    "a 'b",
                ],
                "--verify-cmd",
            ),
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{args:?}"
            );
            assert!(err.to_string().contains(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn digests_are_accepted_images() {
        let digest = format!("sha256:{}", "0".repeat(64));
        for image in [
            format!("ghcr.io/acme/web@{digest}"),
            format!("web:v2@{digest}"),
        ] {
            Cli::try_parse_from(["bgslot", "deploy", "web", "--image", &image]).unwrap();
        }
    }

    #[test]
    fn json_is_noticed_before_parsing() {
        let args = |a: &[&str]| {
            a.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .into_iter()
        };
        assert!(wants_json(args(&["bgslot", "swap", "-o", "json"])));
        assert!(wants_json(args(&["bgslot", "--output=json", "swap"])));
        assert!(!wants_json(args(&["bgslot", "swap", "web", "json"])));
    }

    #[test]
    fn empty_helm_environment_means_unset() {
        let cli = Cli::try_parse_from(["bgslot", "--kube-context", "", "-n", "", "status", "web"])
            .unwrap();
        let settings = cli.global.settings().unwrap();
        assert_eq!((settings.kube_context, settings.namespace), (None, None));
    }

    #[test]
    fn a_chart_path_that_does_not_exist_is_a_usage_error_for_every_command() {
        for args in [
            &["bgslot", "recover", "web", "--force"][..],
            &["bgslot", "history", "web"],
            &["bgslot", "status", "web"],
            &["bgslot", "deploy", "web", "--tag", "v1"],
            &["bgslot", "swap", "web"],
            &["bgslot", "version"],
        ] {
            let mut args = args.to_vec();
            args.extend(["--chart", "/nonexistent/chart"]);
            let cli = Cli::try_parse_from(&args).unwrap();
            let err = anyhow::Error::new(cli.global.settings().unwrap_err());
            let report = ErrorReport::new(&err);
            assert_eq!(
                (report.error.as_str(), report.kind, report.exit_code),
                (
                    "--chart /nonexistent/chart: no such directory or chart archive: pass a chart directory, a .tgz, REPO/NAME or oci://...",
                    "usage",
                    2
                ),
                "{args:?}"
            );
        }
        // A reference is helm's to resolve; an existing chart directory is used as it is.
        let dir = tempfile::tempdir().unwrap();
        crate::chart::export(dir.path()).unwrap();
        for chart in ["bitnami/nginx", "oci://r/c", dir.path().to_str().unwrap()] {
            let cli = Cli::try_parse_from(["bgslot", "--chart", chart, "status", "web"]).unwrap();
            assert_eq!(cli.global.settings().unwrap().chart.as_deref(), Some(chart));
        }
    }

    #[test]
    fn wait_for_lock_defaults_when_given_bare() {
        let cli = Cli::try_parse_from(["bgslot", "swap", "web", "--wait-for-lock"]).unwrap();
        assert_eq!(cli.global.wait_for_lock, Some(Duration::from_secs(600)));
        let cli = Cli::try_parse_from(["bgslot", "swap", "web", "--wait-for-lock=30s"]).unwrap();
        assert_eq!(cli.global.wait_for_lock, Some(Duration::from_secs(30)));
    }
}
