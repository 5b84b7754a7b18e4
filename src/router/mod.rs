//! Router mode: blue/green for a chart a team already has. Each slot is a release of the user's
//! chart (`RELEASE-blue`, `RELEASE-green`), and bgslot's chart, installed as `RELEASE`, renders only
//! the routing to them, keyed on `productionSlot`. This module is the release as a router command
//! sees it: the router's record in its values (`values`), what a release renders (`manifest`), the
//! checks before a deploy writes anything (`preflight`, pure), what the slot releases and the
//! router's Services show (`live`, pure; `observe` reads it), and the waits on them and the
//! `status --watch` feed (`wait`).

pub mod live;
pub mod manifest;
pub mod observe;
pub mod preflight;
pub mod values;
pub mod wait;

pub use live::{RoutedService, SlotLive};
pub use observe::RouterSeen;
pub use values::{AppSettings, RecordedState, Risk, RouterValues, SlotRecord};

use crate::vocab::Slot;

/// The longest router release name: helm's 53 characters minus `-green`.
pub const MAX_RELEASE_LEN: usize = 47;

/// The release of `slot` of the router `release`.
pub fn slot_release(release: &str, slot: Slot) -> String {
    format!("{release}-{slot}")
}
