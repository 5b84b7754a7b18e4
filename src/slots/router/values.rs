//! The router's record, kept in its release values under `router` (chart/values.yaml documents
//! each key): which chart the slots are releases of and how bgslot sets a version in it, and per
//! slot what bgslot last deployed there. Read typed from the computed values; written back as the
//! values file of a router write, with `null` for every selector key a slot no longer has (helm
//! merges maps, so a key left out would stay).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Value};

use crate::error::Refusal;
use crate::values::removed_keys;
use crate::vocab::{PerSlot, Slot};

/// A risk of running a chart twice side by side, which deploy refuses unless it is accepted by
/// name (`--accept NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Risk {
    /// Cluster-scoped objects (a ClusterRole, a CRD, a Namespace...): both slots render one.
    ClusterScoped,
    /// StatefulSets and PersistentVolumeClaims: state each slot would keep apart, or share.
    Stateful,
    /// CronJobs and Jobs that are not hooks: each slot would run them.
    Jobs,
    /// DaemonSets: one pod per node per slot.
    Daemonset,
    /// pre-delete and post-delete hooks: they run when `clean` uninstalls the old slot.
    DeleteHooks,
}

impl Risk {
    pub const ALL: [Risk; 5] = [
        Risk::ClusterScoped,
        Risk::Stateful,
        Risk::Jobs,
        Risk::Daemonset,
        Risk::DeleteHooks,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Risk::ClusterScoped => "cluster-scoped",
            Risk::Stateful => "stateful",
            Risk::Jobs => "jobs",
            Risk::Daemonset => "daemonset",
            Risk::DeleteHooks => "delete-hooks",
        }
    }
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Risk {
    type Err = String;

    fn from_str(text: &str) -> Result<Risk, String> {
        Risk::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "'{text}' is not a risk bgslot knows: use one of {}",
                    Risk::ALL.map(Risk::as_str).join(", ")
                )
            })
    }
}

impl Serialize for Risk {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Risk {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Risk, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

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

/// The chart the slots are releases of and how bgslot sets a version in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AppSettings {
    /// As given to `--app-chart`: a path, `repo/name` or `oci://...`.
    pub chart: String,
    /// `--app-chart-version`; empty for a path (or the repository's latest).
    pub version: String,
    pub tag_key: String,
    pub repository_key: String,
    pub digest_key: String,
    /// Where the chart takes its replica count; empty: bgslot scales the Deployments itself.
    pub replicas_key: String,
    /// The Service to mirror, `{release}` standing for the slot release; empty: found.
    pub service: String,
    pub accept: Vec<Risk>,
}

impl Default for AppSettings {
    fn default() -> AppSettings {
        AppSettings {
            chart: String::new(),
            version: String::new(),
            tag_key: "image.tag".into(),
            repository_key: String::new(),
            digest_key: String::new(),
            replicas_key: "replicaCount".into(),
            service: String::new(),
            accept: Vec::new(),
        }
    }
}

impl AppSettings {
    /// The mirrored Service's name in the slot release `release`, when one is set.
    pub fn service_in(&self, release: &str) -> Option<String> {
        (!self.service.is_empty()).then(|| self.service.replace("{release}", release))
    }

    /// The chart as a person reads it: `./web` or `bitnami/nginx 18.1.0`.
    pub fn chart_ref(&self) -> String {
        if self.version.is_empty() {
            self.chart.clone()
        } else {
            format!("{} {}", self.chart, self.version)
        }
    }
}

/// What a deploy's flags say of the app settings: each one given replaces what the router
/// recorded (`None`: keep it); the router's own values (`--router-values`, `--router-set`) go
/// with its write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppChanges {
    pub chart: Option<String>,
    pub version: Option<String>,
    pub tag_key: Option<String>,
    pub repository_key: Option<String>,
    pub digest_key: Option<String>,
    pub replicas_key: Option<String>,
    pub service: Option<String>,
    /// The risks accepted from now on (empty: none again).
    pub accept: Option<Vec<Risk>>,
    pub router_values: Vec<std::path::PathBuf>,
    pub router_set: Vec<crate::names::SetArg>,
}

impl AppChanges {
    /// Whether any flag of a router was given.
    pub fn any(&self) -> bool {
        self != &AppChanges::default()
    }

    /// The settings a deploy uses: these changes over what the router recorded (or the defaults).
    pub fn settings(&self, recorded: Option<&AppSettings>) -> AppSettings {
        let mut app = recorded.cloned().unwrap_or_default();
        if let Some(chart) = &self.chart {
            if chart != &app.chart && self.version.is_none() {
                // Another chart: a version recorded for the old one does not apply.
                app.version = String::new();
            }
            app.chart = chart.clone();
        }
        let set = |field: &mut String, change: &Option<String>| {
            if let Some(value) = change {
                *field = value.clone();
            }
        };
        set(&mut app.version, &self.version);
        set(&mut app.tag_key, &self.tag_key);
        set(&mut app.repository_key, &self.repository_key);
        set(&mut app.digest_key, &self.digest_key);
        set(&mut app.replicas_key, &self.replicas_key);
        set(&mut app.service, &self.service);
        if let Some(accept) = &self.accept {
            let mut accept = accept.clone();
            accept.sort();
            accept.dedup();
            app.accept = accept;
        }
        app
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
    /// `NAME-VERSION` of the chart it runs, as `helm history` names it.
    pub chart: String,
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
    /// The risks its render had, accepted.
    pub accepted: Vec<Risk>,
}

impl SlotRecord {
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
    fn flags_change_what_the_router_recorded_and_nothing_else() {
        let recorded = AppSettings {
            chart: "bitnami/nginx".into(),
            version: "18.1.0".into(),
            digest_key: "image.digest".into(),
            accept: vec![Risk::Jobs],
            ..AppSettings::default()
        };
        assert_eq!(AppChanges::default().settings(Some(&recorded)), recorded);
        let upgrade = AppChanges {
            version: Some("18.2.0".into()),
            accept: Some(vec![Risk::Stateful, Risk::Jobs, Risk::Stateful]),
            ..AppChanges::default()
        };
        let app = upgrade.settings(Some(&recorded));
        assert_eq!(
            (app.chart.as_str(), app.version.as_str()),
            ("bitnami/nginx", "18.2.0")
        );
        assert_eq!(app.accept, [Risk::Stateful, Risk::Jobs]);
        let other = AppChanges {
            chart: Some("./charts/web".into()),
            accept: Some(Vec::new()),
            ..AppChanges::default()
        };
        let app = other.settings(Some(&recorded));
        assert_eq!(
            (app.chart.as_str(), app.version.as_str()),
            ("./charts/web", "")
        );
        assert!(app.accept.is_empty());
        assert_eq!(app.digest_key, "image.digest");
        let fresh = AppChanges {
            chart: Some("./myapp".into()),
            ..AppChanges::default()
        }
        .settings(None);
        assert_eq!(
            (fresh.tag_key.as_str(), fresh.replicas_key.as_str()),
            ("image.tag", "replicaCount")
        );
        assert!(other.any() && !AppChanges::default().any());
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
    fn risks_parse_by_name_and_say_which_exist() {
        for risk in Risk::ALL {
            assert_eq!(risk.as_str().parse::<Risk>(), Ok(risk));
        }
        let err = "pvc".parse::<Risk>().unwrap_err();
        assert!(
            err.contains("cluster-scoped, stateful, jobs, daemonset, delete-hooks"),
            "{err}"
        );
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
