//! A router's slot as every command reads it: what the router records of it and what its
//! release runs, with what keeps it from production (its release left failed, or gone) and how it
//! differs from the record.

use super::drift::{slot_drift_of, unrecorded};
use super::live::SlotLive;
use super::values::{RecordedState, SlotRecord};
use crate::cluster::Totals;
use crate::error::Refusal;
use crate::slots::view::{Holds, SlotView};

/// The slot of the router `router` as every command reads it: what the router records of it,
/// and what runs.
pub fn view(router: &str, record: &SlotRecord, live: &SlotLive) -> SlotView {
    let slot = live.slot;
    let routed = live.routed(record);
    let image = live
        .running_image(record)
        .unwrap_or_else(|| record.image.clone());
    let holds = match record.state {
        _ if record.is_deployed() => Holds::Version,
        RecordedState::Cleaned => Holds::Cleaned,
        _ => Holds::Nothing,
    };
    let behind = live.unavailable();
    let trouble = match &live.helm {
        _ if holds != Holds::Version => None,
        None => Some(Refusal::new(
            format!(
                "release {} of the {slot} slot does not exist, though the router records it",
                live.release
            ),
            format!("deploy it again: `bgslot deploy {router} --tag TAG --replace`"),
        )),
        Some(h) if !h.is_deployed() => Some(Refusal::new(
            format!(
                "release {} of the {slot} slot is in state {} (revision {}), not deployed",
                live.release, h.status, h.revision
            ),
            format!("`bgslot recover {router}` returns it to its last deployed revision; `bgslot status {router}` shows both slots"),
        )),
        Some(_) => None,
    };
    let text = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    SlotView {
        holds,
        release: Some(live.release.clone()),
        helm: live.helm.clone(),
        runs: image.clone(),
        image,
        tag: record.tag.clone(),
        chart: text(&record.chart),
        app_version: text(&record.app_version),
        routed: routed.iter().map(|d| d.name.clone()).collect(),
        totals: Totals::of(routed.iter().copied()),
        available: record.is_deployed() && live.available(record),
        unavailable: format!(
            ": {}",
            if behind.is_empty() {
                "no Deployment of it runs the pods the router selects".to_string()
            } else {
                behind.join("; ")
            }
        ),
        port: record.ports.first().map(|p| p.port),
        created: routed.iter().filter_map(|d| d.state.created).min(),
        accepted: record.accepted.clone(),
        trouble,
        drift: slot_drift_of(record, live),
        unrecorded: unrecorded(record, live),
        deployments: live.deployments.clone(),
        ..SlotView::empty(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::router::fixtures::{live, record};
    use crate::slots::router::live::HelmRecord;
    use crate::vocab::Slot;

    #[test]
    fn a_slot_release_that_failed_or_went_is_trouble_and_one_changed_by_hand_is_drift() {
        let rec = record(Slot::Green, "v2");
        let mut green = live(Slot::Green, "v2", 3);
        assert!(view("web", &rec, &green).trouble.is_none());
        green.helm = Some(HelmRecord {
            revision: 2,
            status: "failed".into(),
        });
        let seen = view("web", &rec, &green);
        assert!(seen
            .trouble
            .unwrap()
            .reason
            .contains("release web-green of the green slot is in state failed"));
        green.helm = Some(HelmRecord {
            revision: 2,
            status: "deployed".into(),
        });
        let seen = view("web", &rec, &green);
        assert!(seen.trouble.is_none());
        assert!(seen
            .drift
            .unwrap()
            .contains("it was changed outside bgslot"));
        green.helm = None;
        assert!(view("web", &rec, &green)
            .trouble
            .unwrap()
            .reason
            .contains("does not exist, though the router records it"));
        let cleaned = SlotRecord {
            state: RecordedState::Cleaned,
            ..record(Slot::Green, "v2")
        };
        assert_eq!(view("web", &cleaned, &green).holds, Holds::Cleaned);
    }
}
