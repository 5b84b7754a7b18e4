//! Command-line surface of bgslot: flags, environment variables and subcommands, nothing else.
//!
//! Parsing lives here so that the decisions elsewhere take plain values and stay testable.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::duration::parse_duration;

/// Boring, safe blue/green releases on Kubernetes with Helm.
///
/// Exit codes: 0 done, 1 failed (helm error, timeout, verification failed), 2 usage,
/// 3 refused by a safety check (nothing changed), 4 the release is locked by another bgslot.
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the live and stage slots, their images and readiness, and what the Services select
    Status(ReleaseArg),
    /// Put a new version in the idle slot and wait until it is fully available
    Deploy(DeployArgs),
    /// Route production to the staged slot
    Swap(SwapArgs),
    /// Disable the slot that is not production, once the drain delay has passed
    Clean(CleanArgs),
    /// Route production back to the previous slot while it still runs
    Rollback(RollbackArgs),
    /// Deploy, verify against stage, swap, verify production and optionally clean, in one go
    Release(ReleaseArgs),
    /// Return a release stuck in a pending or failed helm state to its last deployed revision
    Recover(RecoverArgs),
    /// The helm history of the release, with each bgslot operation described
    History(ReleaseArg),
    /// Work with the embedded chart
    #[command(subcommand)]
    Chart(ChartCommand),
    /// Print shell completions
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print bgslot's version and the embedded chart's version
    Version,
}

#[derive(Debug, Args)]
pub struct ReleaseArg {
    /// Helm release name
    pub release: String,
}

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Image tag for the new version (the repository stays as configured)
    #[arg(
        long,
        value_name = "TAG",
        required_unless_present = "image",
        conflicts_with = "image"
    )]
    pub tag: Option<String>,

    /// Full image reference REPOSITORY:TAG for the new version
    #[arg(long, value_name = "REPOSITORY:TAG")]
    pub image: Option<String>,

    /// Replicas for the new slot [default: what production runs now]
    #[arg(long, value_name = "N")]
    pub replicas: Option<u32>,

    /// Values file passed to helm
    #[arg(short = 'f', long = "values", value_name = "FILE")]
    pub values_files: Vec<PathBuf>,

    /// A value passed to helm (key=value)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,

    /// Replace a version already staged in the idle slot
    #[arg(long)]
    pub replace: bool,

    /// Create the namespace if it does not exist (as `helm install --create-namespace` does)
    #[arg(long)]
    pub create_namespace: bool,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Helm release name
    pub release: String,
    #[command(flatten)]
    pub image: ImageArgs,
}

#[derive(Debug, Args)]
pub struct SwapArgs {
    /// Helm release name
    pub release: String,
    /// Refuse unless the staged slot runs this image tag
    #[arg(long, value_name = "TAG")]
    pub expect_tag: Option<String>,
    /// Swap even when the Services' live selectors disagree with the release values
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Helm release name
    pub release: String,
    /// Clean even before the drain delay or while production is not fully available
    #[arg(long)]
    pub force: bool,
    /// Drain delay: how long after the last swap the old slot must be kept
    #[arg(long, value_parser = parse_duration, default_value = "30s", value_name = "DURATION")]
    pub min_age: Duration,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Helm release name
    pub release: String,
    /// Roll back even when the Services' live selectors disagree with the release values
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Helm release name
    pub release: String,
    /// A pending revision younger than this may still be worked on by a running helm: refused
    #[arg(long, value_parser = parse_duration, default_value = "60s", value_name = "DURATION")]
    pub min_age: Duration,
    /// Recover even a pending revision younger than --min-age
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// Helm release name
    pub release: String,
    #[command(flatten)]
    pub image: ImageArgs,
    /// Command run (without a shell: split on whitespace, or use it as a single program) after the
    /// deploy against stage, and after the swap against production. It gets BGSLOT_TARGET
    /// (stage|production), BGSLOT_URL, BGSLOT_SERVICE, BGSLOT_NAMESPACE, BGSLOT_SLOT, BGSLOT_TAG.
    /// A non-zero exit fails the release; after the swap it also swaps back.
    #[arg(long, value_name = "CMD")]
    pub verify_cmd: Option<String>,
    /// Clean the old slot after the drain delay
    #[arg(long)]
    pub clean: bool,
    /// Drain delay before --clean disables the old slot
    #[arg(long, value_parser = parse_duration, default_value = "30s", value_name = "DURATION")]
    pub min_age: Duration,
}

#[derive(Debug, Subcommand)]
pub enum ChartCommand {
    /// Write the embedded chart to DIR, to vendor or customise it
    Export {
        /// Target directory (created; must be empty if it exists)
        dir: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

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
    fn empty_helm_environment_means_unset() {
        let cli = Cli::try_parse_from(["bgslot", "--kube-context", "", "-n", "", "status", "web"])
            .unwrap();
        let global = cli.global.without_empty_values();
        assert_eq!((global.kube_context, global.namespace), (None, None));
    }

    #[test]
    fn wait_for_lock_defaults_when_given_bare() {
        let cli = Cli::try_parse_from(["bgslot", "swap", "web", "--wait-for-lock"]).unwrap();
        assert_eq!(cli.global.wait_for_lock, Some(Duration::from_secs(600)));
        let cli = Cli::try_parse_from(["bgslot", "swap", "web", "--wait-for-lock=30s"]).unwrap();
        assert_eq!(cli.global.wait_for_lock, Some(Duration::from_secs(30)));
    }
}
