//! What a deploy asks of a kind of slot, and what the kind answers: the request (the version, its
//! size, its values), the basis the rules both kinds share decided (which slot, an install or
//! not, what production serves), the staging a kind plans before anything is written (what it
//! writes, and what to wait for after), and what its writes left.

use std::path::PathBuf;

use serde_json::Value;

use super::router::preflight::Hooks;
use super::router::values::{AppChanges, Risk};
use crate::cluster::{Followers, PodSlots};
use crate::names::{ImageRef, ReleaseName, SetArg, Tag};
use crate::values::ReleaseValues;
use crate::vocab::Slot;
use crate::wait::SlotRollout;

/// What a deploy is asked to put where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRequest {
    pub version: Version,
    pub replicas: Option<u32>,
    /// Stage small, on this many pods (`--preview-replicas`).
    pub preview_replicas: Option<u32>,
    pub replace: bool,
    pub force: bool,
    pub values_files: Vec<PathBuf>,
    pub user_sets: Vec<SetArg>,
    /// The slot's own values (`--slot-values`), in order.
    pub slot_values: Vec<Value>,
    /// The slot's own `--slot-set`s, keys relative to the slot.
    pub slot_sets: Vec<SetArg>,
    /// A router's chart and how to set a version in it, as the flags change them.
    pub app: AppChanges,
}

/// `--tag` (the next version of what production runs) or `--image` (exactly this image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    Tag(Tag),
    Image(ImageRef),
}

impl DeployRequest {
    /// A deploy of `version` (a tag, or an image reference when it names a repository or a
    /// digest) with nothing else asked: what unit tests start from.
    #[cfg(test)]
    pub fn of(version: &str) -> DeployRequest {
        let version = if version.contains('/') || version.contains('@') {
            Version::Image(version.parse().unwrap())
        } else {
            Version::Tag(version.parse().unwrap())
        };
        DeployRequest {
            version,
            replicas: None,
            preview_replicas: None,
            replace: false,
            force: false,
            values_files: Vec::new(),
            user_sets: Vec::new(),
            slot_values: Vec::new(),
            slot_sets: Vec::new(),
            app: AppChanges::default(),
        }
    }
}

impl Version {
    /// The version as the history records it and a swap expects it: the tag, else the digest.
    pub fn recorded(&self) -> String {
        match self {
            Version::Tag(tag) => tag.to_string(),
            Version::Image(image) => image
                .tag
                .as_ref()
                .map(|t| t.to_string())
                .or_else(|| image.digest.as_ref().map(|d| d.to_string()))
                .unwrap_or_default(),
        }
    }
}

/// What the rules both kinds share decided of a deploy, before its kind plans the writes.
#[derive(Debug, Clone, Copy)]
pub struct Basis<'a> {
    pub release: &'a ReleaseName,
    pub namespace: &'a str,
    /// Where the version goes.
    pub slot: Slot,
    /// The release does not exist: this deploy installs it, the slot as production.
    pub install: bool,
    /// What production is meant to serve now (its desired pods), when it runs.
    pub serving: Option<u64>,
    pub request: &'a DeployRequest,
}

/// What a deploy will do, as its kind planned it: the part every deploy has, and the kind's own.
#[derive(Debug, Clone)]
pub struct Staging<P> {
    /// The release itself (a router's own).
    pub release: ReleaseName,
    pub slot: Slot,
    pub install: bool,
    /// The version as the history records it (the tag, else the digest).
    pub version: String,
    /// The image the slot will run, when known before it runs (a repository a chart defaults is
    /// not).
    pub image: Option<String>,
    /// Staged small, on this many pods (`--preview-replicas`).
    pub preview: Option<u64>,
    /// What a rollout of the slot is made of, and how its pods are told apart once written.
    pub rollout: SlotRollout,
    pub pods: PodSlots,
    /// Wait for the slot's migration Job (bgslot's chart runs one per slot when asked).
    pub migration: bool,
    pub plan: P,
}

/// What a kind's writes of a deploy left.
#[derive(Debug, Clone)]
pub struct Staged {
    /// The release's own revision now.
    pub revision: u64,
    /// The release's computed values now.
    pub values: ReleaseValues,
    /// The slot release and the revision it is at now (a router's).
    pub slot_release: Option<(String, u64)>,
    /// `NAME-VERSION` of the chart the slot runs.
    pub chart: Option<String>,
    /// The risks its render has, accepted by name.
    pub accepted: Vec<Risk>,
    /// The port its Service is reached at, when not the chart's `service.port`.
    pub port: Option<u16>,
    /// Where its workers are, to wait for them.
    pub followers: Followers,
    /// The hooks the write of a router's slot release ran, and those it did not.
    pub hooks: Option<Hooks>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_is_recorded_as_its_tag_else_its_digest() {
        let digest = format!("sha256:{}", "c".repeat(64));
        assert_eq!(Version::Tag("v2".parse().unwrap()).recorded(), "v2");
        let pinned = Version::Image(format!("ghcr.io/acme/web@{digest}").parse().unwrap());
        assert_eq!(pinned.recorded(), digest);
        let both = Version::Image(format!("ghcr.io/acme/web:v3@{digest}").parse().unwrap());
        assert_eq!(both.recorded(), "v3");
    }
}
