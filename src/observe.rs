//! One read of a release, taken at the start of a command: what helm records (the latest
//! revision and the user's values, read from helm's own storage) and what the cluster runs, so
//! that every decision is made from one consistent picture.

use anyhow::{anyhow, Result};
use serde_json::Value;

use crate::cluster::{GitOpsMarks, Observed};
use crate::context::Ctx;
use crate::error::Refusal;
use crate::helm::Revision;
use crate::names::ReleaseName;
use crate::values::{coalesce, ReleaseValues};

/// How much of the helm history a decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum History {
    /// The latest revision (the full history is still read when it is pending or failed, to
    /// name the revision that recovers it).
    Latest,
    /// Every revision helm keeps.
    Full,
}

/// A release as one command saw it.
#[derive(Debug, Clone)]
pub struct Observation {
    pub release: ReleaseName,
    pub namespace: String,
    /// The major version of the helm that will write (Helm 4 applies server-side).
    pub helm_major: u64,
    /// Oldest first; holds at least the latest revision, and every one when it was read.
    pub history: Vec<Revision>,
    /// The values the user gave (`helm get values`), as helm stores them.
    pub user_values: Value,
    /// The computed values (user values over chart defaults), as far as bgslot reads them.
    pub values: ReleaseValues,
    /// The computed values as JSON, for showing what a write changes.
    pub all_values: Value,
    pub cluster: Observed,
}

/// What one read found under a release name.
pub enum Found {
    Release(Box<Observation>),
    /// Neither a helm release nor its objects.
    Missing,
    /// The objects exist without a helm release.
    Unmanaged(Refusal),
}

impl Observation {
    pub fn latest(&self) -> &Revision {
        self.history
            .last()
            .expect("an observed release has a revision")
    }

    /// Reads `release`; `None` when helm has no such release. Objects without a helm release
    /// are a refusal: installing over them, or changing them, is not bgslot's to do.
    pub async fn read(
        ctx: &Ctx,
        release: &ReleaseName,
        need: History,
    ) -> Result<Option<Observation>> {
        match Self::find(ctx, release, need).await? {
            Found::Release(seen) => Ok(Some(*seen)),
            Found::Missing => Ok(None),
            Found::Unmanaged(refusal) => Err(refusal.into()),
        }
    }

    /// Reads `release`, telling a missing release from objects some other tool manages.
    pub async fn find(ctx: &Ctx, release: &ReleaseName, need: History) -> Result<Found> {
        // The record read and the API reads are independent: run them together.
        let (latest, cluster) =
            tokio::join!(ctx.records.latest(release), ctx.cluster.observe(release));
        let cluster = cluster?;
        let Some(latest) = latest? else {
            return Ok(match unmanaged(release, &cluster) {
                Some(refusal) => Found::Unmanaged(refusal),
                None => Found::Missing,
            });
        };
        let mut revision = latest.revision;
        // Read through `helm status`, the chart is the one the Services' label names.
        if revision.chart.is_empty() {
            revision.chart = cluster.chart.clone().unwrap_or_default();
        }
        let user_values = latest.user_values;
        // The computed values are the chart's values under the user's, as helm coalesces them
        // (`helm get values --all`): from the record, or from this chart when it is the
        // release's; only otherwise does helm compute them (a second read).
        let all_values = match (&latest.defaults, ctx.chart.defaults_of(&revision.chart)) {
            (Some(defaults), _) | (None, Some(defaults)) => coalesce(defaults, &user_values),
            (None, None) => ctx.helm.values(release).await?,
        };
        let mut values = ReleaseValues::from_json(release, &all_values)?;
        values.fill_running_images(|slot| cluster.slot(slot).image.clone());
        let history = if need == History::Full || !revision.is_settled() {
            full_history(ctx, release, revision).await?
        } else {
            vec![revision]
        };
        Ok(Found::Release(Box::new(Observation {
            release: release.clone(),
            namespace: ctx.namespace.clone(),
            helm_major: ctx.helm.version.major,
            history,
            user_values,
            values,
            all_values,
            cluster,
        })))
    }

    /// Reads the whole history where only the latest revision was read ([`History::Latest`]),
    /// and nothing else again.
    pub async fn read_full_history(&mut self, ctx: &Ctx) -> Result<()> {
        if self.history.len() <= 1 {
            let latest = self.latest().clone();
            self.history = full_history(ctx, &self.release, latest).await?;
        }
        Ok(())
    }

    /// Reads a release that must exist.
    pub async fn existing(ctx: &Ctx, release: &ReleaseName, need: History) -> Result<Observation> {
        Self::read(ctx, release, need)
            .await?
            .ok_or_else(|| not_found(release, &ctx.namespace))
    }
}

/// The release's objects exist but helm has no such release: something renders the chart without
/// helm (Argo CD does); installing over them, or changing them, is not bgslot's to do.
fn unmanaged(release: &ReleaseName, cluster: &Observed) -> Option<Refusal> {
    if !cluster.anything() {
        return None;
    }
    let by = match &cluster.gitops {
        Some(GitOpsMarks::ArgoCd { application }) => {
            format!("Argo CD (Application {application}), which renders the chart without a helm release")
        }
        Some(GitOpsMarks::Flux { namespace, name }) => format!("Flux (HelmRelease {namespace}/{name})"),
        // Argo CD's label tracking marks objects with app.kubernetes.io/instance only, which the
        // chart sets too: without a helm release, that is what is left to go by.
        None => "a tool that renders the chart without helm, such as Argo CD with label tracking (app.kubernetes.io/instance)".to_string(),
    };
    Some(Refusal::new(
        format!("{release} has no helm release, but its objects exist, managed by {by}"),
        "bgslot changes releases through helm; change productionSlot or the slot's values where that tool takes them (the Application's helm values, in Git)",
    ))
}

/// The history of `release` ending with `latest` as already read (kept, should the history end
/// before it).
async fn full_history(ctx: &Ctx, release: &ReleaseName, latest: Revision) -> Result<Vec<Revision>> {
    let mut history = ctx
        .records
        .history(release)
        .await?
        .unwrap_or_else(|| vec![latest.clone()]);
    if history.last().map(|r| r.revision) != Some(latest.revision) {
        history.push(latest);
    }
    Ok(history)
}

pub fn not_found(release: &ReleaseName, namespace: &str) -> anyhow::Error {
    anyhow!(
        "release {release} not found in namespace {namespace}: check the name and -n/--namespace (helm list -n {namespace})"
    )
}
