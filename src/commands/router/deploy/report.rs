//! What a router deploy reports.

use crate::commands::Header;
use crate::router::Risk;
use crate::vocab::{Role, Slot};
use serde::Serialize;
use std::fmt;

/// What a router deploy reports: the bundled deploy's fields, and the slot release.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    /// `operation` is `install` or `deploy`.
    #[serde(flatten)]
    pub header: Header,
    pub mode: &'static str,
    pub slot: Slot,
    pub role: Role,
    pub image: String,
    pub ready: i32,
    pub desired: i32,
    pub service: Option<String>,
    pub url: String,
    /// The release of the user's chart the slot is now.
    pub slot_release: String,
    pub slot_revision: u64,
    /// `NAME-VERSION` of the user's chart.
    pub chart: String,
    /// The risks its render has, accepted with --accept.
    pub accepted: Vec<Risk>,
    /// The version deployed, as a swap expects it (the tag, else the digest).
    #[serde(skip)]
    pub version: String,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} is ready ({}/{}) running {} as {} (release {} revision {}, {})",
            self.header.release,
            self.slot,
            self.ready,
            self.desired,
            self.image,
            self.role,
            self.slot_release,
            self.slot_revision,
            self.chart
        )?;
        writeln!(
            f,
            "  {} service: {} -> {}",
            self.role,
            self.service.as_deref().unwrap_or("(missing)"),
            self.url
        )?;
        if !self.accepted.is_empty() {
            let accepted: Vec<&str> = self.accepted.iter().map(|r| r.as_str()).collect();
            writeln!(f, "  accepted risks: {}", accepted.join(", "))?;
        }
        writeln!(f, "\nnext: {}", self.header.next_step())
    }
}
