//! What a router records against what runs: the selector each router Service should have, the
//! router Services and slot releases that differ from the record (changed outside bgslot), and a
//! slot release the router does not record at all. Pure, one sentence per difference.

use std::collections::BTreeMap;

use super::live::SlotLive;
use super::values::{label_selector, RouterValues, SlotRecord};
use crate::cluster::services::missing_services;
use crate::cluster::RoutedService;
use crate::vocab::Slot;

/// The selector of a router Service whose slot runs nothing.
pub const EMPTY_SELECTOR: (&str, &str) = ("bgslot/slot", "none");

fn empty() -> BTreeMap<String, String> {
    BTreeMap::from([(EMPTY_SELECTOR.0.to_string(), EMPTY_SELECTOR.1.to_string())])
}

/// The selector a router Service that routes to the slot `record` describes should have: the
/// Service `key` (`main`, an `extraServices` key, or a further route's name) of `router`.
pub fn expected_selector(
    router: &RouterValues,
    record: &SlotRecord,
    key: &str,
) -> BTreeMap<String, String> {
    if !record.is_deployed() {
        return empty();
    }
    let is_route = Slot::ALL
        .into_iter()
        .any(|slot| router.slot(slot).routes.iter().any(|r| r.route == key));
    if !is_route {
        // The main pair and every extraServices pair select the main route's pods.
        return record.selector.clone();
    }
    match record.route(key) {
        Some((selector, _)) => selector.clone(),
        None => empty(),
    }
}

/// Which slot's recorded selector `svc` has (`none` for the empty one); `None` for a selector the
/// router does not record.
pub fn selects(router: &RouterValues, svc: &RoutedService) -> Option<String> {
    Slot::ALL
        .into_iter()
        .find(|&slot| {
            let record = router.slot(slot);
            record.is_deployed() && svc.selector == expected_selector(router, record, &svc.key)
        })
        .map(|slot| slot.to_string())
        .or_else(|| (svc.selector == empty()).then(|| "none".to_string()))
}

fn shown(selector: &BTreeMap<String, String>) -> String {
    if selector.is_empty() {
        "nothing (no selector)".into()
    } else {
        format!("{{{}}}", label_selector(selector))
    }
}

/// The router Services that disagree with the router's record: one sentence each.
pub fn service_drift(
    release: &str,
    router: &RouterValues,
    production: Slot,
    services: &[RoutedService],
) -> Vec<String> {
    let mut lines = missing_services(release, services);
    for svc in services {
        let slot = svc.role.slot(production);
        let want = expected_selector(router, router.slot(slot), &svc.key);
        if svc.selector != want {
            lines.push(format!(
                "Service {} ({}) selects {} but the router records {} for {slot}",
                svc.name,
                svc.role,
                shown(&svc.selector),
                shown(&want)
            ));
        } else if svc.routes_to != Some(slot) {
            lines.push(format!(
                "Service {} ({}) is marked to route to {} but productionSlot makes it {slot}",
                svc.name,
                svc.role,
                svc.routes_to.map(Slot::as_str).unwrap_or("no slot")
            ));
        }
    }
    lines
}

/// How one slot release differs from what the router records of it, if it does.
pub fn slot_drift_of(record: &SlotRecord, live: &SlotLive) -> Option<String> {
    if !record.is_deployed() {
        return None;
    }
    let slot = live.slot;
    match &live.helm {
        None => Some(format!(
            "release {} ({slot}), which the router records as deployed, does not exist",
            live.release
        )),
        Some(h) if h.status == "uninstalled" => Some(format!(
            "release {} ({slot}), which the router records as deployed, was uninstalled outside bgslot",
            live.release
        )),
        Some(h) if record.revision > 0 && h.revision != record.revision => Some(format!(
            "release {} ({slot}) is at revision {} ({}) but the router recorded revision {}: it was changed outside bgslot",
            live.release, h.revision, h.status, record.revision
        )),
        Some(h) if !h.is_deployed() => Some(format!(
            "release {} ({slot}) is in state {} (revision {})",
            live.release, h.status, h.revision
        )),
        Some(_) => None,
    }
}

/// A slot release that exists although the router records no version in it: a deploy that did
/// not finish (its description is bgslot's), or a release someone else installed.
pub fn unrecorded(record: &SlotRecord, live: &SlotLive) -> bool {
    !record.is_deployed()
        && live
            .helm
            .as_ref()
            .is_some_and(|h| h.status != "uninstalled")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::router::fixtures::{live, routed, router};
    use crate::slots::router::live::HelmRecord;
    use crate::vocab::Role;

    #[test]
    fn drift_compares_the_services_and_the_slot_releases_with_the_record() {
        let r = router(false);
        let good = vec![
            routed("web", Role::Production, Slot::Blue, &r, 3),
            routed("web-stage", Role::Stage, Slot::Green, &r, 0),
        ];
        assert!(service_drift("web", &r, Slot::Blue, &good).is_empty());
        assert_eq!(
            good[1].selector,
            BTreeMap::from([("bgslot/slot".to_string(), "none".to_string())])
        );
        assert_eq!(selects(&r, &good[0]).as_deref(), Some("blue"));
        assert_eq!(selects(&r, &good[1]).as_deref(), Some("none"));
        let mut moved = good.clone();
        moved[0].selector = BTreeMap::from([("app".to_string(), "x".to_string())]);
        assert_eq!(selects(&r, &moved[0]), None);
        assert_eq!(
            service_drift("web", &r, Slot::Blue, &moved),
            ["Service web (production) selects {app=x} but the router records {app.kubernetes.io/instance=web-blue,app.kubernetes.io/name=myapp} for blue"]
        );
        let mut marked = good.clone();
        marked[0].routes_to = Some(Slot::Green);
        assert!(service_drift("web", &r, Slot::Blue, &marked)[0]
            .contains("is marked to route to green"));
        assert_eq!(
            service_drift("web", &r, Slot::Blue, &good[..1]),
            ["the stage Service of web does not exist"]
        );

        let mut blue = live(Slot::Blue, "v1", 3);
        let green = live(Slot::Green, "v2", 3);
        assert_eq!(slot_drift_of(r.slot(Slot::Blue), &blue), None);
        blue.helm = Some(HelmRecord {
            revision: 2,
            status: "deployed".into(),
        });
        assert_eq!(
            slot_drift_of(r.slot(Slot::Blue), &blue).as_deref(),
            Some("release web-blue (blue) is at revision 2 (deployed) but the router recorded revision 1: it was changed outside bgslot")
        );
        blue.helm = None;
        assert!(slot_drift_of(r.slot(Slot::Blue), &blue)
            .unwrap()
            .contains("does not exist"));
        assert!(unrecorded(r.slot(Slot::Green), &green));
        assert!(!unrecorded(r.slot(Slot::Blue), &blue));
    }
}
