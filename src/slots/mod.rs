//! A release's two slots, whatever kind they are. A slot is either a block of bgslot's own chart
//! in the release itself (`bundled`) or a release of the team's own chart that the release routes
//! to (`router`). Every command is written once over [`Seen`], the release as one read found it:
//! its own record, each slot as a [`SlotView`], and where its Services route. What really differs
//! between the kinds (how a slot is observed and described, staged, retired, and which releases
//! make it up) is the [`SlotKind`] interface, with one implementation per kind: [`Bundled`] in
//! `bundled`, [`Router`] in `router`. Nothing above this module knows which kind it drives.
//!
//! The kind is decided once, here, in [`read`]: a release whose values record a router is one,
//! every other release is bundled; before a first install, `deploy --app-chart` asks for a
//! router. A third kind would be a file beside `bundled.rs`, a variant of [`Read`] and a line in
//! [`read`] and [`with_kind!`].

use std::future::Future;

use anyhow::Result;
use futures::stream::BoxStream;
use serde_json::Value;

pub mod bundled;
pub mod follow;
pub mod router;
pub mod stage;
pub mod view;

pub use bundled::Bundled;
pub use router::Router;
pub use stage::{Basis, DeployRequest, Staged, Staging, Version};
pub use view::{Holds, SlotView};

use crate::chart::ChartSource;
use crate::cluster::services::main_service;
use crate::cluster::{Cluster, Followers, PodSlots, RoutedService};
use crate::context::Ctx;
use crate::error::Refusal;
use crate::helm::{Revision, SetValue};
use crate::names::ReleaseName;
use crate::observe::{History, Observation};
use crate::planned::PlannedStep;
use crate::vocab::{Mode, PerSlot, Role, Slot};
use router::AppSettings;

/// A release as one command saw it, whatever kind its slots are.
#[derive(Debug, Clone)]
pub struct Seen<K> {
    /// The release itself (a router's own release, for a router): its helm record, values and
    /// history, and what the cluster shows under its name.
    pub release: Observation,
    pub slots: PerSlot<SlotView>,
    /// Its Services that play a role, as they route now: the main pair first.
    pub services: Vec<RoutedService>,
    /// How each slot's pods are found (where an endpoint leads).
    pub pods: PodSlots,
    /// Where its workers and CronJobs are, and so how a swap moves them.
    pub followers: Followers,
    /// How the Services differ from what bgslot wrote, one sentence each.
    pub drift: Vec<String>,
    /// Accepted risks, and releases nothing routes to: worth a warning, not a refusal.
    pub warnings: Vec<String>,
    /// What only this kind knows.
    pub kind: K,
}

impl<K> Seen<K> {
    pub fn name(&self) -> &ReleaseName {
        &self.release.release
    }

    pub fn namespace(&self) -> &str {
        &self.release.namespace
    }

    pub fn production(&self) -> Slot {
        self.release.values.production
    }

    pub fn stage(&self) -> Slot {
        self.production().other()
    }

    pub fn slot(&self, slot: Slot) -> &SlotView {
        &self.slots[slot]
    }

    pub fn latest(&self) -> &Revision {
        self.release.latest()
    }

    pub fn history(&self) -> &[Revision] {
        &self.release.history
    }

    /// The main Service with `role`.
    pub fn service(&self, role: Role) -> Option<&RoutedService> {
        main_service(&self.services, role)
    }

    /// The command a person most likely wants next.
    pub fn next_step(&self) -> String {
        let release = self.name();
        let stage = self.slot(self.stage());
        if stage.holds != Holds::Version {
            return format!("bgslot deploy {release} --tag NEW_TAG");
        }
        let moved = self
            .latest()
            .recorded()
            .is_some_and(|r| r.moves_production() || r.completes_a_move());
        if moved {
            return format!("bgslot clean {release}   (or: bgslot rollback {release})");
        }
        if stage.available {
            format!("bgslot swap {release} --expect-tag {}", stage.tag)
        } else {
            format!(
                "bgslot status {release}   ({} is not ready yet; or: bgslot deploy {release} --tag TAG --replace)",
                stage.slot
            )
        }
    }

    /// Services that route where they should, but whose slot selector a field manager other
    /// than helm still owns (a hand edit undone by hand): Helm 4 cannot move them. One sentence
    /// each; a Service that routes elsewhere is drift.
    pub fn foreign_owners(&self) -> Vec<String> {
        let production = self.production();
        self.services
            .iter()
            .filter(|svc| svc.routes_to == Some(svc.role.slot(production)))
            .filter_map(|svc| {
                svc.selector_owner.as_ref().map(|owner| {
                    format!(
                        "the slot selector of Service {} was last written by {owner}, not helm",
                        svc.name
                    )
                })
            })
            .collect()
    }
}

/// What differs between the kinds of slot. Each method is what one command needs of a kind;
/// everything else (the refusal rules, the production switch, the waits, the lock, the reports)
/// is written once, over [`Seen`] and [`SlotView`].
pub trait SlotKind: Sized + Send + Sync + 'static {
    /// `bundled` or `router`, as every report names it.
    const MODE: Mode;
    /// What a deploy of this kind has decided to write (its part of a [`Staging`]).
    type Plan: Send + Sync;
    /// What a clean of this kind has decided to write.
    type Retiring: Send + Sync;

    /// Reads what the slots and Services of `release` show, its record read already.
    fn observe(ctx: &Ctx, release: Observation) -> impl Future<Output = Result<Seen<Self>>> + Send;

    /// Plans a deploy the shared rules allowed (`basis`): the kind's own checks and what it will
    /// write, and what to wait for after; nothing is written. `seen` is `None` for an install.
    fn plan_stage(
        ctx: &Ctx,
        seen: Option<&Seen<Self>>,
        basis: &Basis<'_>,
    ) -> impl Future<Output = Result<Staging<Self::Plan>>> + Send;

    /// The writes of a planned deploy, in order, as the dry run shows them.
    fn preview_stage(
        ctx: &Ctx,
        seen: Option<&Seen<Self>>,
        staging: &Staging<Self::Plan>,
    ) -> Result<Vec<PlannedStep>>;

    /// Makes the writes of a planned deploy, and waits for nothing: the waits after are every
    /// kind's (the slot's rollout, its Service, its workers).
    fn stage(
        ctx: &Ctx,
        seen: Option<&Seen<Self>>,
        staging: &Staging<Self::Plan>,
    ) -> impl Future<Output = Result<Staged>> + Send;

    /// A tick at every change of what `status` shows of `release`.
    fn changes(cluster: &Cluster, release: &str) -> BoxStream<'static, ()>;

    /// The Services do not match what bgslot wrote: the refusal's reason begins with this.
    fn drifted() -> &'static str;

    /// Which slot `svc`'s selector picks, as `status` shows it.
    fn selects(seen: &Seen<Self>, svc: &RoutedService) -> Option<String>;

    /// The chart a router's slots are releases of, and how bgslot sets a version in it.
    fn app(_seen: &Seen<Self>) -> Option<&AppSettings> {
        None
    }

    /// How to bring back what `slot` ran once it is gone: the hint of a refused rollback.
    fn way_back(seen: &Seen<Self>, slot: Slot) -> String;

    /// What the flip of production to `to` records besides `productionSlot`: a router records
    /// the size each worker of `to` takes (`sizes`), so a move the swap did not finish can be
    /// settled (`recover`).
    fn record_move(
        _seen: &Seen<Self>,
        _to: Slot,
        _sizes: &[(String, u64)],
    ) -> Vec<(String, SetValue)> {
        Vec::new()
    }

    /// The releases that make up `release` (its own first), each with whether the release
    /// routes to it: what `recover` looks at. `user` is its user-supplied values.
    fn releases(release: &str, user: &Value) -> Vec<(String, bool)>;

    /// What cleaning `slot` writes (with `chart`, for the release's own write); `None` when there
    /// is nothing to clean.
    fn plan_retire(
        chart: &ChartSource,
        seen: &Seen<Self>,
        slot: Slot,
    ) -> Result<Option<Self::Retiring>, Refusal>;

    /// The dry run of a clean.
    fn preview_retire(ctx: &Ctx, seen: &Seen<Self>, plan: &Self::Retiring) -> Vec<PlannedStep>;

    /// Cleans the slot: writes, then waits until its pods are gone. Returns how many pods were
    /// stopping, how long they took, and the release's revision after.
    fn retire(
        ctx: &Ctx,
        seen: &Seen<Self>,
        plan: Self::Retiring,
    ) -> impl Future<Output = Result<Retired>> + Send;
}

/// What a clean did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retired {
    pub stopped_pods: usize,
    pub stop_ms: u64,
    /// The release's revision after it.
    pub revision: u64,
}

/// A release as [`read`] found it: of one kind or the other.
// One of these lives for a command's run; boxing the larger kind would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Read {
    Bundled(Seen<Bundled>),
    Router(Seen<Router>),
}

/// Runs `$body` with `$seen` bound to the [`Seen`] of whichever kind `$read` holds: the one
/// place a command meets both kinds.
#[macro_export]
macro_rules! with_kind {
    ($read:expr, $seen:ident => $body:expr) => {
        match $read {
            $crate::slots::Read::Bundled($seen) => $body,
            $crate::slots::Read::Router($seen) => $body,
        }
    };
}

impl Read {
    pub fn mode(&self) -> Mode {
        match self {
            Read::Bundled(_) => Mode::Bundled,
            Read::Router(_) => Mode::Router,
        }
    }

    pub fn release(&self) -> &Observation {
        with_kind!(self, seen => &seen.release)
    }
}

/// A release a deploy writes to, with the kind of its slots; `None` before its install.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Target {
    Bundled(Option<Seen<Bundled>>),
    Router(Option<Seen<Router>>),
}

/// Runs `$body` with `$seen` bound to the `Option<Seen<_>>` of whichever kind `$target` is.
#[macro_export]
macro_rules! with_target {
    ($target:expr, $seen:ident => $body:expr) => {
        match $target {
            $crate::slots::Target::Bundled($seen) => $body,
            $crate::slots::Target::Router($seen) => $body,
        }
    };
}

impl Target {
    pub fn mode(&self) -> Mode {
        match self {
            Target::Bundled(_) => Mode::Bundled,
            Target::Router(_) => Mode::Router,
        }
    }

    /// What a deploy writes to: the release `read` found, of its kind; before an install, a
    /// router when `--app-chart` asks for one (`router`), else bgslot's chart. An existing
    /// release of bgslot's chart does not become a router.
    pub fn of(read: Option<Read>, router: bool) -> Result<Target, Refusal> {
        Ok(match (read, router) {
            (Some(Read::Router(seen)), _) => Target::Router(Some(seen)),
            (None, true) => Target::Router(None),
            (Some(Read::Bundled(seen)), true) => {
                return Err(Refusal::new(
                    format!(
                        "release {} exists and is not a bgslot router (it runs {}): --app-chart makes a new release a router",
                        seen.name(),
                        seen.latest().chart
                    ),
                    "bgslot does not adopt an existing release: deploy your chart under a new release name with --app-chart, \
                     or keep deploying this one with bgslot's chart (`bgslot deploy RELEASE --tag TAG`)",
                ))
            }
            (Some(Read::Bundled(seen)), false) => Target::Bundled(Some(seen)),
            (None, false) => Target::Bundled(None),
        })
    }
}

/// The kind of the release whose computed values are `all`: a router when they record one.
pub fn mode_of(release: &str, all: &Value) -> Result<Mode, Refusal> {
    Ok(match router::RouterValues::of(release, all)? {
        Some(_) => Mode::Router,
        None => Mode::Bundled,
    })
}

/// The kind of a release from its user-supplied values alone (what a stuck release still has):
/// bgslot writes `router.enabled` there.
pub fn mode_of_user_values(user: &Value) -> Mode {
    if user.pointer("/router/enabled") == Some(&Value::Bool(true)) {
        Mode::Router
    } else {
        Mode::Bundled
    }
}

/// Reads `release` and what its slots show; `None` when helm has no such release. This is where
/// a release's kind is decided.
pub async fn read(ctx: &Ctx, release: &ReleaseName, need: History) -> Result<Option<Read>> {
    let Some(seen) = Observation::read(ctx, release, need).await? else {
        return Ok(None);
    };
    found(ctx, seen).await.map(Some)
}

/// Reads a release that must exist.
pub async fn existing(ctx: &Ctx, release: &ReleaseName, need: History) -> Result<Read> {
    let seen = Observation::existing(ctx, release, need).await?;
    found(ctx, seen).await
}

/// What the slots of the release `seen` show, by its kind.
pub async fn found(ctx: &Ctx, seen: Observation) -> Result<Read> {
    Ok(match mode_of(&seen.release, &seen.all_values)? {
        Mode::Router => Read::Router(Router::observe(ctx, seen).await?),
        Mode::Bundled => Read::Bundled(Bundled::observe(ctx, seen).await?),
    })
}

/// The kind of `mode`'s releases, for what needs no observation: `$body` with `$kind` the type.
#[macro_export]
macro_rules! with_mode {
    ($mode:expr, $kind:ident => $body:expr) => {
        match $mode {
            $crate::vocab::Mode::Bundled => {
                type $kind = $crate::slots::Bundled;
                $body
            }
            $crate::vocab::Mode::Router => {
                type $kind = $crate::slots::Router;
                $body
            }
        }
    };
}
