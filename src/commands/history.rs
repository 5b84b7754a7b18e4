//! `bgslot history RELEASE`: helm's history of the release, each bgslot operation read back from
//! the description it wrote, so the audit log says which slot moved where.

use std::fmt;

use anyhow::Result;
use serde::Serialize;

use super::{read, Invocation};
use crate::context::Ctx;
use crate::helm::Revision;
use crate::names::ReleaseName;
use crate::observe::not_found;
use crate::record::Recorded;
use crate::term::table;
use crate::slots;
use crate::vocab::{Mode, Op, Slot};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Helm release name
    #[arg(value_name = "RELEASE")]
    pub release: ReleaseName,
    #[command(flatten)]
    pub targets: super::Targets,
}

impl Args {
    pub async fn run(&self, run: &Invocation<'_>) -> Result<()> {
        read(run, Op::History, &self.release, async |ctx: &Ctx| history(ctx, &self.release).await).await
    }
}

pub async fn history(ctx: &Ctx, release: &ReleaseName) -> Result<HistoryReport> {
    // The latest record's user values say what kind the release is (bgslot writes a router's).
    let (revisions, latest) = tokio::try_join!(ctx.records.history(release), ctx.records.latest(release))?;
    let revisions = revisions.ok_or_else(|| not_found(release, &ctx.namespace))?;
    let mode = latest
        .map(|l| slots::mode_of_user_values(&l.user_values))
        .unwrap_or(Mode::Bundled);
    Ok(HistoryReport {
        release: release.to_string(),
        namespace: ctx.namespace.clone(),
        mode,
        revision: revisions.last().map(|r| r.revision).unwrap_or(0),
        revisions: revisions.into_iter().map(HistoryEntry::from).collect(),
    })
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HistoryReport {
    pub release: String,
    pub namespace: String,
    pub mode: Mode,
    /// The latest revision.
    pub revision: u64,
    pub revisions: Vec<HistoryEntry>,
}

/// One revision, with what bgslot did in it when bgslot made it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HistoryEntry {
    #[serde(flatten)]
    pub revision: Revision,
    /// `install`, `deploy`, `promote`, `swap`, `start-workers`, `rollback` or `clean`; `null` for
    /// a revision bgslot did not make.
    pub operation: Option<&'static str>,
    /// The slot the operation put a version in, made production, or disabled.
    pub slot: Option<Slot>,
    /// For a swap or rollback, the slot production left.
    pub from: Option<Slot>,
    /// For an install or deploy, the version it put in `slot`.
    pub tag: Option<String>,
    /// The description as a person reads it.
    pub summary: String,
}

impl From<Revision> for HistoryEntry {
    fn from(revision: Revision) -> HistoryEntry {
        let recorded = revision.recorded();
        let (from, tag) = match &recorded {
            Some(Recorded::Swap { from, .. } | Recorded::Rollback { from, .. }) => (Some(*from), None),
            Some(Recorded::Install { version, .. } | Recorded::Deploy { version, .. }) => (None, Some(version.clone())),
            _ => (None, None),
        };
        HistoryEntry {
            operation: recorded.as_ref().filter(|r| !matches!(r, Recorded::HelmRollback { .. })).map(Recorded::step),
            slot: recorded.as_ref().and_then(Recorded::slot),
            from,
            tag,
            summary: match (recorded.as_ref().map(Recorded::summary), crate::record::run_of(&revision.description)) {
                // A run across several clusters: the same run ID in each cluster's history.
                (Some(summary), Some(run)) => format!("{summary} (run {run})"),
                (Some(summary), None) => summary,
                (None, _) => revision.description.clone(),
            },
            revision,
        }
    }
}

impl fmt::Display for HistoryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rows = vec![[
            "REV".to_string(),
            "UPDATED".into(),
            "STATUS".into(),
            "CHART".into(),
            "DESCRIPTION".into(),
        ]];
        for entry in &self.revisions {
            let r = &entry.revision;
            let updated = r
                .updated_at()
                .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| r.updated.clone());
            rows.push([
                r.revision.to_string(),
                updated,
                r.status.clone(),
                r.chart.clone(),
                entry.summary.clone(),
            ]);
        }
        f.write_str(&table(&rows, ""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::rev;

    fn entry(description: &str) -> HistoryEntry {
        HistoryEntry::from(rev(1, "deployed", description, "t"))
    }

    #[test]
    fn bgslot_descriptions_read_back_as_operations() {
        let swap = entry("bgslot swap blue->green");
        assert_eq!(
            (swap.operation, swap.from, swap.slot),
            (Some("swap"), Some(Slot::Blue), Some(Slot::Green))
        );
        assert_eq!(swap.summary, "bgslot swap: production blue -> green");
        let deploy = entry("bgslot deploy green v2");
        assert_eq!(
            (deploy.slot, deploy.tag.as_deref()),
            (Some(Slot::Green), Some("v2"))
        );
        assert_eq!(deploy.summary, "bgslot deploy: v2 staged in green");
        assert_eq!(entry("bgslot clean blue").summary, "bgslot clean: blue disabled");
        let other = entry("Upgrade complete");
        assert_eq!((other.operation, other.summary.as_str()), (None, "Upgrade complete"));
        assert_eq!(entry("bgslot swap purple->green").operation, None);
        let helm = entry("Rollback to 2");
        assert_eq!((helm.operation, helm.summary.as_str()), (None, "Rollback to 2"));
    }

    #[test]
    fn json_keeps_helms_fields_at_the_top() {
        let json = serde_json::to_value(entry("bgslot deploy green v2")).unwrap();
        assert_eq!(
            (json["revision"].as_u64(), json["description"].as_str(), json["operation"].as_str()),
            (Some(1), Some("bgslot deploy green v2"), Some("deploy"))
        );
    }
}
