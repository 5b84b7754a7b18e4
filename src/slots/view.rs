//! One slot as every command reads it, whatever its kind: what it holds, what it runs, how ready
//! it is, and what stands in the way of sending it production traffic. Each kind builds these
//! from what it observed (pure functions in its own module); the commands decide on them alone.

use k8s_openapi::jiff::Timestamp;

use super::router::values::Risk;
use crate::cluster::{DeploymentLive, MigrationState, Totals};
use crate::error::Refusal;
use crate::helm::storage::HelmRecord;
use crate::names::image_parts;
use crate::vocab::Slot;

/// What a slot holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Holds {
    /// Nothing was ever deployed to it.
    #[default]
    Nothing,
    /// A version bgslot deployed: production, or staged.
    Version,
    /// What it ran was cleaned away (what it ran may still be known).
    Cleaned,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotView {
    pub slot: Slot,
    pub holds: Holds,
    /// The slot's own helm release (a router's slot); `None` for a block of bgslot's chart.
    pub release: Option<String>,
    /// That release's latest revision, when helm has it.
    pub helm: Option<HelmRecord>,
    /// The image the slot's serving container runs (what was deployed, when nothing runs).
    pub image: String,
    /// The version bgslot put there: its tag (a digest, for an image pinned by digest alone).
    pub tag: String,
    /// What it runs as a message says it: `tag v2`, `nginx:v2`.
    pub runs: String,
    /// `NAME-VERSION` of the chart a slot release runs, and its app version.
    pub chart: Option<String>,
    pub app_version: Option<String>,
    /// Its Deployments, and the names of those whose pods serve its traffic.
    pub deployments: Vec<DeploymentLive>,
    pub routed: Vec<String>,
    /// The serving pods: ready, available, and what they are meant to be.
    pub totals: Totals,
    /// Every Deployment rolled out, the serving ones with pods: it can take traffic.
    pub available: bool,
    /// Why it is not available, as it follows "is not fully available".
    pub unavailable: String,
    /// The port its Service is reached at, when it is not the chart's `service.port` (a router's
    /// copies the slot release's).
    pub port: Option<u16>,
    /// When its oldest serving Deployment was made.
    pub created: Option<Timestamp>,
    /// Staged small (`deploy --preview-replicas`).
    pub preview: bool,
    /// Its migration Job, when its chart runs one.
    pub migration: Option<MigrationState>,
    /// The risks its render had, accepted by name.
    pub accepted: Vec<Risk>,
    /// What keeps it from production whatever is forced (its release left failed, or gone).
    pub trouble: Option<Refusal>,
    /// How it differs from what bgslot wrote there (changed by hand); `--force` goes ahead.
    pub drift: Option<String>,
    /// A release in it that bgslot does not record: a deploy that did not finish, or someone
    /// else's.
    pub unrecorded: bool,
}

impl SlotView {
    /// A slot that holds nothing.
    pub fn empty(slot: Slot) -> SlotView {
        SlotView {
            slot,
            holds: Holds::Nothing,
            release: None,
            helm: None,
            image: String::new(),
            tag: String::new(),
            runs: String::new(),
            chart: None,
            app_version: None,
            deployments: Vec::new(),
            routed: Vec::new(),
            totals: Totals::default(),
            available: false,
            unavailable: String::new(),
            port: None,
            created: None,
            preview: false,
            migration: None,
            accepted: Vec::new(),
            trouble: None,
            drift: None,
            unrecorded: false,
        }
    }

    /// It holds a version that runs: the version is recorded and (for a block of bgslot's chart)
    /// its Deployment exists.
    pub fn runs(&self) -> bool {
        self.holds == Holds::Version && (self.release.is_some() || !self.deployments.is_empty())
    }

    /// Whether the image it runs has `want` as its tag or its digest.
    pub fn runs_version(&self, want: &str) -> bool {
        let parts = image_parts(&self.image);
        parts.tag.as_deref() == Some(want) || parts.digest.as_deref() == Some(want)
    }

    /// The name of its first serving Deployment.
    pub fn deployment(&self) -> Option<&str> {
        self.deployments
            .iter()
            .find(|d| self.is_routed(d))
            .map(|d| d.name.as_str())
    }

    pub fn is_routed(&self, d: &DeploymentLive) -> bool {
        self.routed.contains(&d.name)
    }

    /// ` (release web-green)` after the slot's name in a message, for a slot release.
    pub fn of_release(&self) -> String {
        self.release
            .as_ref()
            .map(|r| format!(" (release {r})"))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::deployment;

    #[test]
    fn a_slot_runs_once_its_version_has_a_deployment_or_a_release() {
        let mut view = SlotView {
            holds: Holds::Version,
            image: "web:v2@sha256:abc".into(),
            ..SlotView::empty(Slot::Green)
        };
        assert!(!view.runs(), "enabled, but its Deployment is not there yet");
        view.deployments = vec![deployment("web-green", 3, 3)];
        view.routed = vec!["web-green".into()];
        assert!(view.runs());
        assert_eq!(view.deployment(), Some("web-green"));
        assert!(
            view.runs_version("v2") && view.runs_version("sha256:abc") && !view.runs_version("v3")
        );
        let release = SlotView {
            holds: Holds::Version,
            release: Some("web-green".into()),
            ..SlotView::empty(Slot::Green)
        };
        assert!(release.runs());
        assert_eq!(release.of_release(), " (release web-green)");
        assert!(!SlotView {
            holds: Holds::Cleaned,
            ..release
        }
        .runs());
    }
}
