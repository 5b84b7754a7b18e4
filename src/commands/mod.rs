//! One module per command, and the one skeleton they share. Each command reads top to bottom the
//! same way: observe the release once, decide with a pure function (a refusal, or a plan: the
//! helm write and what to wait for), act, and return a typed report that prints as text or JSON.
//! [`mutate`] does what every command that changes a release does around that: connect and check
//! every input, take the lock, run the body, release the lock, name the operation in an error,
//! print the report. Adding a command is one new module here plus its line in the list below.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::context::{Ctx, Settings};
use crate::error::{self, Operation};
use crate::events::Events;
use crate::names::{ReleaseName, TargetName};
use crate::observe::Observation;
use crate::signals;
use crate::vocab::{Op, Slot};

pub mod preview;
pub mod standing;

macro_rules! commands {
    ($( $(#[$meta:meta])* $variant:ident($module:ident) ),* $(,)?) => {
        $(pub mod $module;)*

        #[derive(Debug, clap::Subcommand)]
        pub enum Command {
            $( $(#[$meta])* $variant($module::Args), )*
        }

        impl Command {
            /// Runs the command and prints its report.
            pub async fn run(&self, run: &Invocation<'_>) -> Result<()> {
                match self {
                    $( Command::$variant(args) => args.run(run).await, )*
                }
            }
        }
    };
}

commands! {
    /// Show the live and stage slots, their images and readiness, and what the Services select
    Status(status),
    /// Put a new version in the idle slot and wait until it is fully available
    Deploy(deploy),
    /// Route production to the staged slot
    Swap(swap),
    /// Disable the slot that is not production, once the drain delay has passed
    Clean(clean),
    /// Route production back to the previous slot while it still runs
    Rollback(rollback),
    /// Deploy, verify against stage, swap, verify production and optionally clean, in one go
    Release(release),
    /// Return a release stuck in a pending or failed helm state to its last deployed revision
    Recover(recover),
    /// The helm history of the release, with each bgslot operation described
    History(history),
    /// Work with the embedded chart
    Chart(chart),
    /// Print shell completions
    Completions(completions),
    /// Write manual pages (bgslot.1 and one per command) to a directory
    Man(man),
    /// Print bgslot's version and the embedded chart's version
    Version(version),
    /// What helm runs as the post-renderer of a slot release staged in router mode
    #[command(hide = true)]
    PostRender(post_render),
}

impl Command {
    /// The clusters the command was asked to act on at once, when it takes targets and was
    /// given some.
    pub fn targets(&self) -> Option<&Targets> {
        let targets = match self {
            Command::Status(a) => &a.targets,
            Command::Deploy(a) => &a.targets,
            Command::Swap(a) => &a.targets,
            Command::Clean(a) => &a.targets,
            Command::Rollback(a) => &a.targets,
            Command::Release(a) => &a.targets,
            Command::Recover(a) => &a.targets,
            Command::History(a) => &a.targets,
            Command::Chart(_)
            | Command::Completions(_)
            | Command::Man(_)
            | Command::Version(_)
            | Command::PostRender(_) => return None,
        };
        targets.given().then_some(targets)
    }
}

/// Several clusters at once: the targets every command that acts on a release takes. None
/// given: the one release the global flags name, as always.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Targets {
    /// A targets file: the clusters to act on (kubeconfig, context, namespace, values of each),
    /// listed in wave order, the first being the canary; see the README, "Several clusters"
    #[arg(
        long = "targets",
        value_name = "FILE",
        conflicts_with = "target",
        help_heading = "Several clusters"
    )]
    pub targets: Option<PathBuf>,
    /// A target: NAME=CONTEXT, a context of the kubeconfig (--kubeconfig or KUBECONFIG); repeat
    /// it, in wave order
    #[arg(long = "target", value_name = "NAME=CONTEXT", value_parser = parse_target, help_heading = "Several clusters")]
    pub target: Vec<TargetFlag>,
}

impl Targets {
    pub fn given(&self) -> bool {
        self.targets.is_some() || !self.target.is_empty()
    }
}

/// One `--target NAME=CONTEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetFlag {
    pub name: TargetName,
    pub context: String,
}

fn parse_target(text: &str) -> Result<TargetFlag, String> {
    let Some((name, context)) = text.split_once('=') else {
        return Err(format!("'{text}' is not NAME=CONTEXT (e.g. eu=prod-eu)"));
    };
    if context.is_empty() {
        return Err(format!(
            "'{text}' names no context: NAME=CONTEXT (e.g. eu=prod-eu)"
        ));
    }
    Ok(TargetFlag {
        name: name.parse()?,
        context: context.to_string(),
    })
}

/// A command's result: text for a person (`Display`), a JSON document for a program; both
/// from the same value, so they cannot disagree.
pub trait Report: fmt::Display + Send + Sync {
    /// The JSON document, indented for a person, or on one line (a frame of a watch).
    fn json(&self, pretty: bool) -> serde_json::Result<String>;
}

impl<T: Serialize + fmt::Display + Send + Sync> Report for T {
    fn json(&self, pretty: bool) -> serde_json::Result<String> {
        if pretty {
            serde_json::to_string_pretty(self)
        } else {
            serde_json::to_string(self)
        }
    }
}

/// What shows a command's results; the printer implements it.
pub trait Ui: Send + Sync {
    /// The sink the lower layers report progress to.
    fn events(&self) -> Arc<dyn Events>;
    /// Prints the command's report.
    fn print(&self, report: &dyn Report) -> Result<()>;
    /// Prints one frame of a watch; `false` when the reader went away.
    fn frame(&self, report: &dyn Report) -> Result<bool>;
}

/// One run of bgslot: the settings, what shows results, and the whole command line (for manual
/// pages and completions).
pub struct Invocation<'a> {
    pub settings: &'a Settings,
    pub ui: &'a dyn Ui,
    pub cli: fn() -> clap::Command,
}

impl Invocation<'_> {
    /// Connects: every input is checked, nothing is changed.
    pub async fn connect(&self) -> Result<Ctx> {
        Ctx::connect(self.settings, self.ui.events()).await
    }
}

/// What a mutating command did, or with `--dry-run` what it would do.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Outcome<R> {
    Done(R),
    Planned(preview::Plan),
}

impl<R: fmt::Display> fmt::Display for Outcome<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Done(report) => report.fmt(f),
            Outcome::Planned(plan) => plan.fmt(f),
        }
    }
}

/// The fields every mutating report (and every dry-run plan) starts with.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Header {
    pub operation: Op,
    pub release: String,
    pub namespace: String,
    /// The release's revision now (`null` in the plan of an install).
    pub revision: Option<u64>,
    pub production_slot: Option<Slot>,
    pub stage_slot: Option<Slot>,
    /// The command a person most likely wants next (plans have none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl Header {
    /// A release with nothing known about it yet (before an install).
    pub fn new(operation: Op, release: &str, namespace: &str) -> Header {
        Header {
            operation,
            release: release.to_string(),
            namespace: namespace.to_string(),
            revision: None,
            production_slot: None,
            stage_slot: None,
            next: None,
        }
    }

    /// The release as `seen` (its latest revision and slots).
    pub fn of(operation: Op, seen: &Observation) -> Header {
        Header {
            revision: Some(seen.latest().revision),
            production_slot: Some(seen.values.production),
            stage_slot: Some(seen.values.stage()),
            ..Header::new(operation, &seen.release, &seen.namespace)
        }
    }

    pub fn revision(mut self, revision: u64) -> Header {
        self.revision = Some(revision);
        self
    }

    /// Production on `production`, the other slot staged.
    pub fn production(mut self, production: Slot) -> Header {
        self.production_slot = Some(production);
        self.stage_slot = Some(production.other());
        self
    }

    pub fn next(mut self, next: impl Into<String>) -> Header {
        self.next = Some(next.into());
        self
    }

    pub fn next_step(&self) -> &str {
        self.next.as_deref().unwrap_or_default()
    }
}

/// A command that changes `release`, as the skeleton runs it.
pub struct Mutation<'a> {
    pub op: Op,
    pub release: &'a ReleaseName,
    /// Plan and print instead of acting: no lock, nothing changed.
    pub dry_run: bool,
    /// Create a missing namespace first (the lock's Lease lives in it).
    pub create_namespace: bool,
}

impl<'a> Mutation<'a> {
    /// Creates a missing namespace first (`--create-namespace`).
    pub fn creating_namespace(mut self, create: bool) -> Mutation<'a> {
        self.create_namespace = create;
        self
    }
}

/// What the body of a mutating command is handed.
pub struct Session<'a> {
    pub ctx: &'a Ctx,
    pub release: &'a ReleaseName,
    pub op: Op,
    pub dry_run: bool,
    /// The namespace does not exist and this run creates it (or, in a dry run, would): not
    /// before the run's checks pass ([`Session::open`]).
    pub creates_namespace: bool,
    opened: tokio::sync::OnceCell<()>,
}

impl<'a> Session<'a> {
    /// A session of `op` on `release` through `ctx`, its lock taken already unless it creates its
    /// namespace (then [`Session::open`] takes it).
    pub fn new(
        ctx: &'a Ctx,
        release: &'a ReleaseName,
        op: Op,
        dry_run: bool,
        creates_namespace: bool,
    ) -> Session<'a> {
        Session {
            ctx,
            release,
            op,
            dry_run,
            creates_namespace,
            opened: tokio::sync::OnceCell::new(),
        }
    }

    /// Before the first write of a run that creates its namespace: creates it and takes the
    /// release lock, which lives in it. So a run refused by its checks leaves no namespace
    /// behind. Nothing to do for any other run (the skeleton took the lock already).
    pub async fn open(&self) -> Result<()> {
        if !self.creates_namespace || self.dry_run {
            return Ok(());
        }
        self.opened
            .get_or_try_init(|| async {
                self.ctx.cluster.create_namespace_if_missing(false).await?;
                self.ctx.lock(self.release, self.op).await
            })
            .await?;
        Ok(())
    }
}

/// The skeleton of every command that changes a release: connects (checking every input before
/// anything is written), creates the namespace when asked, takes the release lock (not for a dry
/// run), runs `body`, releases the lock, and prints the report. When a signal stopped the command,
/// the error says what state helm left the release in; every error names the operation.
pub async fn mutate<R, F>(run: &Invocation<'_>, mutation: Mutation<'_>, body: F) -> Result<()>
where
    R: Serialize + fmt::Display + Send + Sync,
    F: AsyncFnOnce(&Session<'_>) -> Result<Outcome<R>>,
{
    let ctx = run.connect().await?;
    let operation = Operation {
        op: mutation.op,
        release: mutation.release.to_string(),
        namespace: ctx.namespace.clone(),
    };
    let outcome = async {
        // A namespace to create is created, and the lock in it taken, once the body's checks
        // passed (`Session::open`); every other run is locked before its body runs.
        let creates_namespace =
            mutation.create_namespace && !ctx.cluster.namespace_exists().await?;
        if !mutation.dry_run && !creates_namespace {
            ctx.lock(mutation.release, mutation.op).await?;
        }
        let session = Session::new(
            &ctx,
            mutation.release,
            mutation.op,
            mutation.dry_run,
            creates_namespace,
        );
        let result = body(&session)
            .await
            .map_err(|err| error::after_writes(err, ctx.written()));
        ctx.unlock().await;
        stopped_by_signal(&ctx, mutation.op, mutation.release, result).await
    }
    .await
    .with_context(|| operation.clone())?;
    run.ui.print(&outcome)
}

/// The skeleton of a command that only reads a release: connects, runs `body`, names the
/// operation in an error, prints the report.
pub async fn read<R, F>(run: &Invocation<'_>, op: Op, release: &ReleaseName, body: F) -> Result<()>
where
    R: Report,
    F: AsyncFnOnce(&Ctx) -> Result<R>,
{
    let ctx = run.connect().await?;
    let report = body(&ctx).await.with_context(|| Operation {
        op,
        release: release.to_string(),
        namespace: ctx.namespace.clone(),
    })?;
    run.ui.print(&report)
}

/// When a signal stopped the command, says what state helm left the release in, keeping the
/// error's kind (a refusal stays a refusal).
async fn stopped_by_signal<T>(
    ctx: &Ctx,
    op: Op,
    release: &ReleaseName,
    result: Result<T>,
) -> Result<T> {
    let Some(sig) = signals::received().filter(|_| result.is_err()) else {
        return result;
    };
    let state = match ctx.records.latest(release).await {
        Ok(Some(latest)) => format!(
            "revision {} is {}",
            latest.revision.revision, latest.revision.status
        ),
        Ok(None) => "the release does not exist".into(),
        Err(e) => format!("its state could not be read: {e}"),
    };
    result.map_err(|err| {
        err.context(format!(
            "{op} of {release} stopped by {}; release {release} was left as: {state}",
            signals::name(sig)
        ))
    })
}

/// What every command that changes a release starts with: the release, and `--dry-run`.
#[derive(Debug, Clone, clap::Args)]
pub struct Mutating {
    /// Helm release name
    #[arg(value_name = "RELEASE")]
    pub release: ReleaseName,
    /// Observe and decide as usual, then print the plan (helm command, values that change, what
    /// would be waited for) instead of acting; nothing is changed and no lock is taken
    #[arg(long)]
    pub dry_run: bool,
}

impl Mutating {
    /// How the skeleton runs `op` on this release.
    pub fn mutation(&self, op: Op) -> Mutation<'_> {
        Mutation {
            op,
            release: &self.release,
            dry_run: self.dry_run,
            create_namespace: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_flag_is_a_name_and_a_context() {
        let flag = parse_target("eu=prod-eu").unwrap();
        assert_eq!(
            (flag.name.as_str(), flag.context.as_str()),
            ("eu", "prod-eu")
        );
        // A context may hold '=' (the first one splits).
        assert_eq!(parse_target("us=arn:aws=x").unwrap().context, "arn:aws=x");
        assert_eq!(
            parse_target("eu").unwrap_err(),
            "'eu' is not NAME=CONTEXT (e.g. eu=prod-eu)"
        );
        assert_eq!(
            parse_target("eu=").unwrap_err(),
            "'eu=' names no context: NAME=CONTEXT (e.g. eu=prod-eu)"
        );
        assert!(parse_target("e u=ctx")
            .unwrap_err()
            .contains("target name 'e u' is invalid"));
    }

    #[test]
    fn a_header_serializes_flat_and_a_plan_has_no_next() {
        let header = Header::new(Op::Swap, "web", "shop")
            .revision(3)
            .production(Slot::Green);
        assert_eq!(
            serde_json::to_value(&header).unwrap(),
            serde_json::json!({"operation": "swap", "release": "web", "namespace": "shop", "revision": 3,
                               "production_slot": "green", "stage_slot": "blue"})
        );
        assert_eq!(
            serde_json::to_value(header.next("bgslot clean web")).unwrap()["next"],
            "bgslot clean web"
        );
    }
}
