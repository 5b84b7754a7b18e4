//! One read of a release, taken at the start of a command: what helm records (the latest
//! revision and the user's values, from one `helm status`) and what the cluster runs, so that
//! every decision is made from one consistent picture.

use anyhow::{anyhow, Result};
use serde_json::Value;

use crate::chart::ChartSource;
use crate::cluster::Observed;
use crate::context::Ctx;
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

impl Observation {
    pub fn latest(&self) -> &Revision {
        self.history
            .last()
            .expect("an observed release has a revision")
    }

    /// Reads `release`; `None` when helm has no such release.
    pub async fn read(
        ctx: &Ctx,
        release: &ReleaseName,
        chart: &ChartSource,
        need: History,
    ) -> Result<Option<Observation>> {
        // The helm read and the API reads are independent: run them together.
        let cluster = ctx.cluster();
        let (status, cluster) = tokio::join!(ctx.helm.status(release), cluster.observe(release));
        let Some(status) = status? else {
            return Ok(None);
        };
        let cluster = cluster?;
        let chart_id = cluster.chart.clone().unwrap_or_default();
        let latest = status.revision(chart_id.clone());
        let user_values = status
            .config
            .clone()
            .filter(|v| !v.is_null())
            .unwrap_or_else(|| Value::Object(Default::default()));
        // The chart bgslot writes with is usually the release's own: its defaults under the
        // user's values are the computed values. Otherwise helm computes them (a second read).
        let all_values = match chart.defaults_of(&chart_id) {
            Some(defaults) => coalesce(defaults, &user_values),
            None => ctx.helm.values(release).await?,
        };
        let mut values = ReleaseValues::from_json(release, &all_values)?;
        values.fill_running_images(|slot| cluster.slot(slot).image.clone());
        let settled = matches!(latest.status.as_str(), "deployed" | "superseded");
        let history = if need == History::Full || !settled {
            let mut history = ctx
                .helm
                .history(release)
                .await?
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| vec![latest.clone()]);
            // History names the chart itself; keep the status's view of the latest otherwise.
            if history.last().map(|r| r.revision) != Some(latest.revision) {
                history.push(latest);
            }
            history
        } else {
            vec![latest]
        };
        Ok(Some(Observation {
            release: release.clone(),
            namespace: ctx.namespace.clone(),
            helm_major: ctx.helm.version.major,
            history,
            user_values,
            values,
            all_values,
            cluster,
        }))
    }

    /// Reads a release that must exist.
    pub async fn existing(
        ctx: &Ctx,
        release: &ReleaseName,
        chart: &ChartSource,
        need: History,
    ) -> Result<Observation> {
        Self::read(ctx, release, chart, need)
            .await?
            .ok_or_else(|| not_found(release, &ctx.namespace))
    }
}

pub fn not_found(release: &ReleaseName, namespace: &str) -> anyhow::Error {
    anyhow!(
        "release {release} not found in namespace {namespace}: check the name and -n/--namespace (helm list -n {namespace})"
    )
}
