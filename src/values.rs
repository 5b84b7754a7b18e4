//! What a release's values say about its slots, read from `helm get values --all -o json`.
//!
//! Parsing is strict where safety depends on it: a release whose values carry no `productionSlot`
//! was not made from a bgslot chart, and an unknown slot name is refused rather than guessed at.

use serde_json::Value;

use crate::error::Refusal;
use crate::names::ImageRef;
use crate::vocab::{PerSlot, Role, Slot};
use crate::workers::Workloads;

/// One slot's configuration in the release values (after chart defaults and fallbacks).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SlotValues {
    pub enabled: bool,
    pub repository: String,
    pub tag: String,
    /// `sha256:...` when the slot's image is pinned by digest.
    pub digest: Option<String>,
    pub replicas: Option<u64>,
    /// Staged small (`deploy --preview-replicas`): `swap` promotes it to production's capacity
    /// before it flips.
    pub preview: bool,
}

impl SlotValues {
    /// The image reference as the chart renders it: `repo:tag`, `repo@digest` or both.
    pub fn image(&self) -> String {
        let mut image = self.repository.clone();
        if !self.tag.is_empty() {
            image.push(':');
            image.push_str(&self.tag);
        }
        if let Some(digest) = &self.digest {
            image.push('@');
            image.push_str(digest);
        }
        image
    }
}

/// Helm's coalescing of user values over chart defaults: maps merge key by key, anything else
/// from the user replaces the default, and a user `null` removes the key.
pub fn coalesce(defaults: &Value, user: &Value) -> Value {
    match (defaults, user) {
        (Value::Object(defaults), Value::Object(user)) => {
            let mut merged = defaults.clone();
            for (key, value) in user {
                if value.is_null() {
                    merged.remove(key);
                    continue;
                }
                let value = match merged.get(key) {
                    Some(default) => coalesce(default, value),
                    None => without_nulls(value),
                };
                merged.insert(key.clone(), value);
            }
            Value::Object(merged)
        }
        // No user values at all (`config: null`): the defaults stand.
        (defaults, Value::Null) => defaults.clone(),
        (_, user) => without_nulls(user),
    }
}

fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Deep-merges `over` into `base`: maps key by key, anything else replaced. Unlike [`coalesce`],
/// a `null` in `over` is kept: in values handed to helm it tells helm to drop the key.
pub fn merge_into(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge_into(existing, value)
                    }
                    _ => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, over) => *base = over.clone(),
    }
}

/// Marks the dotted `key` as present in `tree` (its value does not matter here).
pub fn set_path(tree: &mut Value, key: &str) {
    let mut node = tree;
    for part in key.split('.') {
        if !node.is_object() {
            *node = Value::Object(Default::default());
        }
        node = node
            .as_object_mut()
            .expect("made an object above")
            .entry(part.to_string())
            .or_insert(Value::Bool(true));
    }
}

/// `null` for each key of `previous` that `present` lacks, recursing into maps both have: what
/// helm must forget so a slot's new block does not inherit the old one's keys.
pub fn removed_keys(previous: &Value, present: &Value) -> Option<Value> {
    let (Value::Object(old), Value::Object(new)) = (previous, present) else {
        return None;
    };
    let mut removed = serde_json::Map::new();
    for (key, old_value) in old {
        match new.get(key) {
            None if !old_value.is_null() => {
                removed.insert(key.clone(), Value::Null);
            }
            None => {}
            Some(new_value) => {
                if let Some(inner) = removed_keys(old_value, new_value) {
                    removed.insert(key.clone(), inner);
                }
            }
        }
    }
    (!removed.is_empty()).then_some(Value::Object(removed))
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReleaseValues {
    pub production: Slot,
    pub slots: PerSlot<SlotValues>,
    /// Workers and CronJobs, which follow production.
    pub workloads: Workloads,
    pub autoscaling: bool,
    pub ingress_host: Option<String>,
    pub ingress_stage_host: Option<String>,
    pub ingress_tls: bool,
    pub service_port: u64,
}

impl ReleaseValues {
    pub fn slot(&self, slot: Slot) -> &SlotValues {
        &self.slots[slot]
    }

    /// A slot whose values leave the tag empty runs the chart's appVersion, which values do not
    /// carry: take the image its Deployment really runs.
    pub fn fill_running_images(&mut self, running: impl Fn(Slot) -> Option<String>) {
        for slot in Slot::ALL {
            let v = &mut self.slots[slot];
            if !v.tag.is_empty() {
                continue;
            }
            if let Some(image) = running(slot).and_then(|i| i.parse::<ImageRef>().ok()) {
                v.repository = image.repository;
                v.tag = image.tag.map(|t| t.to_string()).unwrap_or_default();
                v.digest = image.digest.map(|d| d.to_string());
            }
        }
    }

    /// These values after `slot` was enabled with `image`, staged small or not (what a deploy
    /// writes).
    pub fn with_staged(mut self, slot: Slot, image: &ImageRef, preview: bool) -> ReleaseValues {
        let v = &mut self.slots[slot];
        v.enabled = true;
        v.preview = preview;
        v.repository = image.repository.clone();
        v.tag = image
            .tag
            .as_ref()
            .map(|t| t.to_string())
            .unwrap_or_default();
        v.digest = image.digest.as_ref().map(|d| d.to_string());
        self
    }

    pub fn stage(&self) -> Slot {
        self.production.other()
    }

    /// The slot with `role`.
    pub fn slot_of(&self, role: Role) -> Slot {
        role.slot(self.production)
    }

    /// Where the Service with `role` can be reached: its ingress host when set, else the
    /// in-cluster DNS name of `service` and its port (`port`, else the chart's `service.port`).
    pub fn url(&self, role: Role, service: &str, namespace: &str, port: Option<u16>) -> String {
        let host = match role {
            Role::Production => &self.ingress_host,
            Role::Stage => &self.ingress_stage_host,
        };
        match host {
            Some(host) => format!(
                "{}://{host}/",
                if self.ingress_tls { "https" } else { "http" }
            ),
            None => format!(
                "http://{service}.{namespace}.svc.cluster.local:{}/",
                port.map(u64::from).unwrap_or(self.service_port)
            ),
        }
    }

    /// Reads computed values (`helm get values --all -o json`) of the release `release`.
    pub fn from_json(release: &str, all: &Value) -> Result<ReleaseValues, Refusal> {
        let production = match all.get("productionSlot") {
            None | Some(Value::Null) => {
                return Err(Refusal::new(
                    format!("release {release} was not made from a bgslot chart: its values have no productionSlot"),
                    "bgslot only drives releases of the bgslot chart (or a chart with the same values); \
                     use helm directly for this release",
                ))
            }
            Some(Value::String(s)) => s.parse::<Slot>().map_err(|_| {
                Refusal::new(
                    format!("release {release} has productionSlot '{s}' in its live values; only blue or green is allowed"),
                    format!("fix it with `helm upgrade {release} ... --reuse-values --set productionSlot=blue` (or green) after checking which slot really serves"),
                )
            })?,
            Some(other) => {
                return Err(Refusal::new(
                    format!("release {release} has productionSlot {other} in its live values; only blue or green is allowed"),
                    format!("fix it with `helm upgrade {release} ... --reuse-values --set productionSlot=blue` (or green)"),
                ))
            }
        };
        let shared_repo = str_at(all, &["image", "repository"]).unwrap_or_default();
        let shared_tag = str_at(all, &["image", "tag"]).unwrap_or_default();
        let shared_digest = str_at(all, &["image", "digest"]).filter(|d| !d.is_empty());
        let shared_replicas = all.get("replicaCount").and_then(Value::as_u64);
        let slot = |slot: Slot| -> Result<SlotValues, Refusal> {
            let v = all.get(slot.as_str());
            let enabled = match v.and_then(|v| v.get("enabled")) {
                None | Some(Value::Null) => slot == Slot::Blue,
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(Refusal::new(
                        format!(
                        "release {release} has {slot}.enabled = {other}; it must be true or false"
                    ),
                        format!("fix it with `--set {slot}.enabled=true` (or false)"),
                    ))
                }
            };
            let non_empty =
                |path: &[&str]| v.and_then(|v| str_at(v, path)).filter(|s| !s.is_empty());
            Ok(SlotValues {
                enabled,
                repository: non_empty(&["image", "repository"])
                    .unwrap_or_else(|| shared_repo.clone()),
                tag: non_empty(&["image", "tag"]).unwrap_or_else(|| shared_tag.clone()),
                digest: non_empty(&["image", "digest"]).or_else(|| shared_digest.clone()),
                replicas: v
                    .and_then(|v| v.get("replicaCount"))
                    .and_then(Value::as_u64)
                    .or(shared_replicas),
                preview: v
                    .and_then(|v| v.get("preview"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            })
        };
        let slots = PerSlot {
            blue: slot(Slot::Blue)?,
            green: slot(Slot::Green)?,
        };
        let ingress_enabled = all
            .pointer("/ingress/enabled")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let host = |key: &str| {
            ingress_enabled
                .then(|| {
                    all.pointer(&format!("/ingress/{key}"))
                        .and_then(Value::as_str)
                })
                .flatten()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Ok(ReleaseValues {
            production,
            slots,
            workloads: Workloads::from_values(all),
            autoscaling: all
                .pointer("/autoscaling/enabled")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            ingress_host: host("host"),
            ingress_stage_host: host("stageHost"),
            ingress_tls: all
                .pointer("/ingress/tls")
                .map(|t| !t.is_null() && t != &Value::Bool(false) && t != &Value::Array(vec![]))
                .unwrap_or(false),
            service_port: all
                .pointer("/service/port")
                .and_then(Value::as_u64)
                .unwrap_or(80),
        })
    }
}

fn str_at(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    match cur {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values() -> Value {
        json!({
            "productionSlot": "blue",
            "image": {"repository": "ghcr.io/acme/web", "tag": "v1"},
            "replicaCount": 3,
            "blue": {"enabled": true, "image": {"repository": "", "tag": "v6"}, "replicaCount": null},
            "green": {"enabled": false, "image": {"repository": "", "tag": ""}, "replicaCount": 2},
            "service": {"port": 8080},
            "ingress": {"enabled": true, "host": "web.example.com", "stageHost": "stage.web.example.com", "tls": []}
        })
    }

    #[test]
    fn merge_into_merges_maps_and_keeps_nulls_for_helm() {
        let mut base = json!({"env": {"A": "1", "B": "2"}, "args": ["x"], "replicaCount": 3});
        merge_into(
            &mut base,
            &json!({"env": {"B": null, "C": "3"}, "args": ["y"], "replicaCount": null}),
        );
        assert_eq!(
            base,
            json!({"env": {"A": "1", "B": null, "C": "3"}, "args": ["y"], "replicaCount": null})
        );
    }

    #[test]
    fn removed_keys_nulls_what_the_previous_block_set_and_the_new_one_lacks() {
        let previous = json!({
            "enabled": true,
            "image": {"tag": "v1", "digest": "sha256:abc"},
            "env": {"OLD": "1", "KEPT": "2"},
            "replicaCount": null,
        });
        let mut present = json!({"enabled": true, "image": {"tag": "v2"}});
        set_path(&mut present, "env.KEPT");
        assert_eq!(
            removed_keys(&previous, &present),
            Some(json!({"image": {"digest": null}, "env": {"OLD": null}}))
        );
        assert_eq!(removed_keys(&present, &present), None);
    }

    #[test]
    fn set_path_marks_nested_keys_through_scalars() {
        let mut tree = json!({"env": "not a map"});
        set_path(&mut tree, "env.A.b");
        assert_eq!(tree, json!({"env": {"A": {"b": true}}}));
    }

    #[test]
    fn slots_fall_back_to_shared_values() {
        let v = ReleaseValues::from_json("web", &values()).unwrap();
        assert_eq!(v.production, Slot::Blue);
        assert_eq!(v.slots.blue.image(), "ghcr.io/acme/web:v6");
        assert_eq!(v.slots.blue.replicas, Some(3));
        assert_eq!(v.slots.green.image(), "ghcr.io/acme/web:v1");
        assert_eq!(v.slots.green.replicas, Some(2));
        assert!(!v.slots.green.enabled);
        assert_eq!(
            v.ingress_stage_host.as_deref(),
            Some("stage.web.example.com")
        );
        assert!(!v.ingress_tls);
        assert_eq!(v.service_port, 8080);
    }

    #[test]
    fn an_empty_tag_is_read_from_the_running_deployment() {
        let mut raw = values();
        raw["blue"]["image"]["tag"] = json!("");
        raw["image"]["tag"] = json!("");
        let mut v = ReleaseValues::from_json("web", &raw).unwrap();
        v.fill_running_images(|slot| {
            (slot == Slot::Blue).then(|| "ghcr.io/acme/web:1.27".to_string())
        });
        assert_eq!(v.slots.blue.image(), "ghcr.io/acme/web:1.27");
        assert_eq!(v.slots.green.tag, "");
    }

    #[test]
    fn user_values_coalesce_over_defaults_as_helm_does() {
        let defaults = json!({"image": {"repository": "nginx", "tag": "1.27"}, "green": {"enabled": false, "env": {"A": "1"}}, "replicaCount": 2});
        let user = json!({"image": {"tag": "v2"}, "green": {"enabled": true, "env": {"A": null, "B": "2"}}, "replicaCount": null, "extra": {"x": null, "y": 1}});
        assert_eq!(
            coalesce(&defaults, &user),
            json!({"image": {"repository": "nginx", "tag": "v2"}, "green": {"enabled": true, "env": {"B": "2"}}, "extra": {"y": 1}})
        );
        assert_eq!(coalesce(&defaults, &Value::Null), defaults);
    }

    #[test]
    fn a_digest_pins_the_slot_image() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let mut raw = values();
        raw["green"]["image"]["digest"] = json!(digest);
        let v = ReleaseValues::from_json("web", &raw).unwrap();
        assert_eq!(
            v.slots.green.image(),
            format!("ghcr.io/acme/web:v1@{digest}")
        );
        assert_eq!(v.slots.blue.digest, None);
    }

    #[test]
    fn foreign_chart_is_refused() {
        let err = ReleaseValues::from_json("web", &json!({"image": {}})).unwrap_err();
        assert!(
            err.reason.contains("not made from a bgslot chart"),
            "{err:?}"
        );
    }

    #[test]
    fn unknown_slot_is_refused() {
        let mut v = values();
        v["productionSlot"] = json!("purple");
        let err = ReleaseValues::from_json("web", &v).unwrap_err();
        assert!(err.reason.contains("'purple'"), "{err:?}");
        v["productionSlot"] = json!(3);
        assert!(ReleaseValues::from_json("web", &v).is_err());
    }

    #[test]
    fn wrong_type_for_enabled_is_refused() {
        let mut v = values();
        v["green"]["enabled"] = json!("yes");
        let err = ReleaseValues::from_json("web", &v).unwrap_err();
        assert!(err.reason.contains("green.enabled"), "{err:?}");
    }
}
