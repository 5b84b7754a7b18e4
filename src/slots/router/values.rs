//! The router's record, kept in its release values under `router` (chart/values.yaml documents
//! each key): which chart the slots are releases of and how bgslot sets a version in it, and per
//! slot what bgslot last deployed there. Read typed from the computed values; written back as the
//! values file of a router write, with `null` for every selector key a slot no longer has (helm
//! merges maps, so a key left out would stay).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Value};

pub use super::app::{AppChanges, AppSettings, Risk, RouteSetting};
use crate::error::Refusal;
use crate::values::removed_keys;
use crate::vocab::{PerSlot, Slot};

/// What a slot holds, as the router records it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RecordedState {
    /// Never deployed (recorded as "").
    #[default]
    Empty,
    /// Runs a release bgslot deployed: production, or staged.
    Deployed,
    /// Its release was uninstalled by `clean`, its helm history kept.
    Cleaned,
}

impl RecordedState {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordedState::Empty => "",
            RecordedState::Deployed => "deployed",
            RecordedState::Cleaned => "cleaned",
        }
    }
}

impl Serialize for RecordedState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RecordedState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RecordedState, D::Error> {
        match Option::<String>::deserialize(d)?.as_deref() {
            None | Some("") => Ok(RecordedState::Empty),
            Some("deployed") => Ok(RecordedState::Deployed),
            Some("cleaned") => Ok(RecordedState::Cleaned),
            Some(other) => Err(serde::de::Error::custom(format!(
                "'{other}' is not a slot state (\"\", deployed, cleaned)"
            ))),
        }
    }
}

/// A Service's target port: a number or a container port's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

impl fmt::Display for TargetPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetPort::Number(n) => write!(f, "{n}"),
            TargetPort::Name(name) => f.write_str(name),
        }
    }
}

/// One port of the mirrored Service, as the router Services copy it (never its nodePort).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<TargetPort>,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

fn tcp() -> String {
    "TCP".into()
}

impl PortRecord {
    /// The target port, which Kubernetes defaults to the port.
    pub fn target(&self) -> TargetPort {
        self.target_port
            .clone()
            .unwrap_or(TargetPort::Number(self.port))
    }

    /// `http 80->http/TCP`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{}{}->{}/{}",
            self.name
                .as_deref()
                .map(|n| format!("{n} "))
                .unwrap_or_default(),
            self.port,
            self.target(),
            self.protocol
        )
    }
}

/// What bgslot recorded for one slot at its last deploy or clean.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SlotRecord {
    /// The slot release, `RELEASE-SLOT`.
    pub release: String,
    pub state: RecordedState,
    /// The slot release's revision bgslot wrote.
    pub revision: u64,
    /// `NAME-VERSION` of the chart it runs, as `helm history` names it, and that version alone.
    pub chart: String,
    pub chart_version: String,
    pub app_version: String,
    /// The version asked for: a tag, or a digest when the image is pinned by digest alone.
    pub tag: String,
    /// The routed container's image as the chart rendered it.
    pub image: String,
    /// The container that serves the mirrored Service's target port.
    pub container: String,
    /// The mirrored Service in the slot release.
    pub service: String,
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<PortRecord>,
    /// Its further routes: each a Service of it routed as a pair of its own.
    pub routes: Vec<RouteRecord>,
    /// Its workers, which run in production only.
    pub workers: Vec<WorkerRecord>,
    /// Its CronJobs, suspended unless it is production.
    pub cron_jobs: Vec<CronJobRecord>,
    /// The risks its render had, accepted.
    pub accepted: Vec<Risk>,
}

/// A further route of a slot: the Service it copies, and that Service's selector and ports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteRecord {
    pub route: String,
    pub service: String,
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<PortRecord>,
}

/// A worker of a slot: its name across slots (its Deployment's, less the slot release's), its
/// Deployment, and the replicas it runs while its slot is production: what the chart renders,
/// until a swap sizes it to what production ran then.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkerRecord {
    pub name: String,
    pub deployment: String,
    pub replicas: u64,
    /// An HPA of the slot release sizes it while its slot is production.
    pub autoscaled: bool,
}

/// A CronJob of a slot: its name across slots, and the CronJob.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CronJobRecord {
    pub name: String,
    pub cron_job: String,
}

impl SlotRecord {
    /// Every selector its Services have (the main route's first): where its pods are.
    pub fn selectors(&self) -> impl Iterator<Item = &BTreeMap<String, String>> {
        std::iter::once(&self.selector).chain(self.routes.iter().map(|r| &r.selector))
    }

    /// The route `key` of it: `main`, or a further route's name.
    pub fn route(&self, key: &str) -> Option<(&BTreeMap<String, String>, &[PortRecord])> {
        if key == "main" {
            return Some((&self.selector, &self.ports));
        }
        self.routes
            .iter()
            .find(|r| r.route == key)
            .map(|r| (&r.selector, r.ports.as_slice()))
    }

    /// The slot runs a release the router routes to.
    pub fn is_deployed(&self) -> bool {
        self.state == RecordedState::Deployed && !self.selector.is_empty()
    }

    /// `key=value,...`: the selector as a label selector, for the API and for messages.
    pub fn label_selector(&self) -> String {
        label_selector(&self.selector)
    }
}

/// A selector map as a label selector string.
pub fn label_selector(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The `router` key of a release's computed values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RouterValues {
    pub enabled: bool,
    pub app: AppSettings,
    pub slots: Slots,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Slots {
    pub blue: SlotRecord,
    pub green: SlotRecord,
}

impl RouterValues {
    /// The router's record in `all` (a release's computed values); `None` when the release is no
    /// router (bundled mode, or a chart without the key).
    pub fn of(release: &str, all: &Value) -> Result<Option<RouterValues>, Refusal> {
        let Some(router) = all.get("router").filter(|r| !r.is_null()) else {
            return Ok(None);
        };
        if router.get("enabled") != Some(&Value::Bool(true)) {
            return Ok(None);
        }
        serde_json::from_value(router.clone()).map(Some).map_err(|err| {
            Refusal::new(
                format!("release {release} is a router whose record under `router` cannot be read: {err}"),
                format!("inspect it with `helm get values {release} --all`; bgslot writes it, so a hand edit is the likely cause"),
            )
        })
    }

    pub fn slot(&self, slot: Slot) -> &SlotRecord {
        match slot {
            Slot::Blue => &self.slots.blue,
            Slot::Green => &self.slots.green,
        }
    }

    pub fn slot_mut(&mut self, slot: Slot) -> &mut SlotRecord {
        match slot {
            Slot::Blue => &mut self.slots.blue,
            Slot::Green => &mut self.slots.green,
        }
    }

    pub fn per_slot(&self) -> PerSlot<&SlotRecord> {
        PerSlot::new(|s| self.slot(s))
    }
}

/// The values file of a router write that records `record` for `slot` and the app settings
/// `app`: the slot's block whole, with `null` for each selector key the user values still hold
/// (`previous`, the slot's block as `helm get values` has it) that the new selector lacks.
pub fn record_values(
    slot: Slot,
    record: &SlotRecord,
    app: &AppSettings,
    previous: &Value,
) -> Value {
    let mut block = serde_json::to_value(record).expect("a slot record serializes");
    let new_selector = block["selector"].clone();
    if let Some(removed) = removed_keys(
        previous.get("selector").unwrap_or(&Value::Null),
        &new_selector,
    ) {
        if let (Some(selector), Value::Object(removed)) =
            (block["selector"].as_object_mut(), removed)
        {
            selector.extend(removed);
        }
    }
    json!({
        "router": {
            "enabled": true,
            "app": app,
            "slots": { slot.as_str(): block },
        }
    })
}

/// The values file of a `clean`: the slot's state only (what it ran stays recorded, for status
/// and for the way back).
pub fn cleaned_values(slot: Slot) -> Value {
    json!({"router": {"slots": {slot.as_str(): {"state": RecordedState::Cleaned}}}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> SlotRecord {
        SlotRecord {
            revision: 2,
            accepted: vec![Risk::Jobs],
            ..super::super::fixtures::record(Slot::Green, "v2")
        }
    }

    #[test]
    fn a_router_reads_back_what_bgslot_writes() {
        let app = AppSettings {
            chart: "./myapp".into(),
            accept: vec![Risk::Jobs],
            ..AppSettings::default()
        };
        let written = record_values(Slot::Green, &record(), &app, &Value::Null);
        assert_eq!(written["router"]["slots"]["green"]["appVersion"], "1.16.0");
        assert_eq!(written["router"]["app"]["tagKey"], "image.tag");
        assert_eq!(
            written["router"]["slots"]["green"]["ports"][0]["targetPort"],
            "http"
        );
        let mut all = json!({"productionSlot": "blue"});
        crate::values::merge_into(&mut all, &written);
        let read = RouterValues::of("web", &all).unwrap().unwrap();
        assert_eq!(read.slot(Slot::Green), &record());
        assert_eq!(read.app, app);
        assert_eq!(read.slot(Slot::Blue), &SlotRecord::default());
        assert!(read.slot(Slot::Green).is_deployed() && !read.slot(Slot::Blue).is_deployed());
        assert_eq!(
            read.slot(Slot::Green).label_selector(),
            "app.kubernetes.io/instance=web-green,app.kubernetes.io/name=myapp"
        );
    }

    #[test]
    fn a_selector_key_the_new_version_drops_is_nulled_for_helm() {
        let previous = json!({"selector": {"app": "web", "app.kubernetes.io/instance": "web-green"}, "tag": "v1"});
        let written = record_values(Slot::Green, &record(), &AppSettings::default(), &previous);
        let selector = &written["router"]["slots"]["green"]["selector"];
        assert_eq!(selector["app"], Value::Null);
        assert!(selector.as_object().unwrap().contains_key("app"));
        assert_eq!(selector["app.kubernetes.io/name"], "myapp");
    }

    #[test]
    fn bundled_releases_and_disabled_routers_are_no_routers() {
        assert_eq!(
            RouterValues::of("web", &json!({"productionSlot": "blue"})),
            Ok(None)
        );
        assert_eq!(RouterValues::of("web", &json!({"router": null})), Ok(None));
        assert_eq!(
            RouterValues::of("web", &json!({"router": {"enabled": false}})),
            Ok(None)
        );
        let bad = json!({"router": {"enabled": true, "slots": {"blue": {"state": "gone"}}}});
        let err = RouterValues::of("web", &bad).unwrap_err();
        assert!(err.reason.contains("'gone' is not a slot state"), "{err:?}");
    }

    #[test]
    fn the_mirrored_service_is_named_per_slot_release() {
        let app = AppSettings {
            service: "{release}-podinfo".into(),
            ..AppSettings::default()
        };
        assert_eq!(
            app.service_in("web-green").as_deref(),
            Some("web-green-podinfo")
        );
        assert_eq!(AppSettings::default().service_in("web-green"), None);
        assert_eq!(
            PortRecord {
                name: None,
                port: 9898,
                target_port: None,
                protocol: "TCP".into(),
                app_protocol: None
            }
            .describe(),
            "9898->9898/TCP"
        );
    }
}
