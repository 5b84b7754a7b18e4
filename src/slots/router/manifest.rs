//! What a release renders, as objects: read from helm's manifest (the YAML stream `helm status`
//! and a dry run print) and its hooks, with the few accessors the preflight looks at (pod
//! templates, selectors, labels). Pure.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::helm::ReleaseRecord;

/// One rendered object.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// As rendered; `None` leaves it to the release's namespace (or the object is cluster-scoped).
    pub namespace: Option<String>,
    pub doc: Value,
}

impl Object {
    fn of(doc: Value) -> Option<Object> {
        let text = |v: &Value| v.as_str().map(str::to_string);
        Some(Object {
            api_version: text(&doc["apiVersion"])?,
            kind: text(&doc["kind"])?,
            name: text(&doc["metadata"]["name"]).unwrap_or_default(),
            namespace: text(&doc["metadata"]["namespace"]).filter(|n| !n.is_empty()),
            doc,
        })
    }

    /// The API group (`""` for the core group).
    pub fn group(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map(|(g, _)| g)
            .unwrap_or("")
    }

    /// `Kind namespace/name` (or `Kind name`), as messages name objects.
    pub fn describe(&self, namespace: &str) -> String {
        format!(
            "{} {}/{}",
            self.kind,
            self.namespace.as_deref().unwrap_or(namespace),
            self.name
        )
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        string_map(&self.doc["metadata"]["labels"])
    }

    /// The pod template of a workload (the object itself for a Pod), if it has one.
    pub fn pod_template(&self) -> Option<&Value> {
        let t = match self.kind.as_str() {
            "Deployment"
            | "StatefulSet"
            | "DaemonSet"
            | "ReplicaSet"
            | "Job"
            | "ReplicationController" => &self.doc["spec"]["template"],
            "CronJob" => &self.doc["spec"]["jobTemplate"]["spec"]["template"],
            "Pod" => &self.doc,
            _ => return None,
        };
        (!t.is_null()).then_some(t)
    }

    /// The labels of the pods a workload makes.
    pub fn pod_labels(&self) -> BTreeMap<String, String> {
        self.pod_template()
            .map(|t| string_map(&t["metadata"]["labels"]))
            .unwrap_or_default()
    }

    /// Every container of the pod template, init containers included.
    pub fn containers(&self) -> Vec<&Value> {
        let Some(spec) = self.pod_template().map(|t| &t["spec"]) else {
            return Vec::new();
        };
        ["initContainers", "containers"]
            .iter()
            .filter_map(|k| spec[k].as_array())
            .flatten()
            .collect()
    }

    /// The app containers of the pod template (no init containers).
    pub fn app_containers(&self) -> Vec<&Value> {
        self.pod_template()
            .and_then(|t| t["spec"]["containers"].as_array())
            .map(|list| list.iter().collect())
            .unwrap_or_default()
    }

    /// A Service's selector (empty when it has none).
    pub fn selector(&self) -> BTreeMap<String, String> {
        string_map(&self.doc["spec"]["selector"])
    }
}

/// A map of strings (labels, a selector); other values are skipped.
pub fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether pods with `labels` are selected by `selector` (a non-empty one).
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A hook: its object and the events it runs at (`pre-install`, `pre-delete`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    pub events: Vec<String>,
    pub object: Object,
}

/// What one release renders.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rendered {
    pub release: String,
    pub objects: Vec<Object>,
    pub hooks: Vec<Hook>,
}

impl Rendered {
    /// The objects of `record`'s manifest and hooks.
    pub fn of(record: &ReleaseRecord) -> Result<Rendered, String> {
        let mut hooks = Vec::new();
        for hook in &record.hooks {
            for object in parse(&hook.manifest)? {
                hooks.push(Hook {
                    events: hook.events.clone(),
                    object,
                });
            }
        }
        Ok(Rendered {
            release: record.name.clone(),
            objects: parse(&record.manifest)?,
            hooks,
        })
    }

    /// The objects of `kind` (not hooks).
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Object> + 'a {
        self.objects.iter().filter(move |o| o.kind == kind)
    }

    /// What a release owns by name: its objects, and its hooks but test hooks (`helm test`
    /// runs them on demand) and those named by the API server (`generateName`), which two
    /// releases cannot share.
    pub fn named(&self) -> impl Iterator<Item = &Object> {
        let test = |h: &&Hook| h.events.iter().any(|e| e.starts_with("test"));
        self.objects
            .iter()
            .chain(
                self.hooks
                    .iter()
                    .filter(move |h| !test(h))
                    .map(|h| &h.object),
            )
            .filter(|o| !o.name.is_empty())
    }

    /// Every object, hooks included.
    pub fn all(&self) -> impl Iterator<Item = &Object> {
        self.objects
            .iter()
            .chain(self.hooks.iter().map(|h| &h.object))
    }

    pub fn deployments(&self) -> impl Iterator<Item = &Object> {
        self.of_kind("Deployment")
    }

    /// The workloads whose pods `selector` selects (hooks included: a hook's pods carry labels
    /// too).
    pub fn selected_by<'a>(
        &'a self,
        selector: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a Object> + 'a {
        self.all()
            .filter(move |o| o.pod_template().is_some() && selects(selector, &o.pod_labels()))
    }
}

/// The objects of a YAML stream as helm prints it (`---` separated, `# Source:` comments); a
/// `List` contributes its items.
pub fn parse(manifest: &str) -> Result<Vec<Object>, String> {
    if manifest.trim().is_empty() {
        return Ok(Vec::new());
    }
    let docs: Vec<Value> = serde_saphyr::from_multiple(manifest)
        .map_err(|e| format!("the rendered manifest is not YAML: {e}"))?;
    let mut out = Vec::new();
    for doc in docs.into_iter().filter(|d| d.is_object()) {
        if doc["kind"] == "List" {
            out.extend(
                doc["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .cloned()
                    .filter_map(Object::of),
            );
        } else if let Some(object) = Object::of(doc) {
            out.push(object);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helm::json::{HookRecord, StatusInfo};

    pub const DEPLOYMENT: &str = "---
# Source: myapp/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web-green-myapp
  labels: {app.kubernetes.io/instance: web-green}
spec:
  template:
    metadata:
      labels: {app.kubernetes.io/name: myapp, app.kubernetes.io/instance: web-green}
    spec:
      initContainers: [{name: init, image: busybox}]
      containers: [{name: myapp, image: nginx:v2}]
---
# Source: myapp/templates/empty.yaml
---
apiVersion: v1
kind: List
items:
  - {apiVersion: v1, kind: ConfigMap, metadata: {name: a, namespace: other}}
";

    #[test]
    fn a_manifest_reads_as_objects_with_their_pod_templates() {
        let record = ReleaseRecord {
            name: "web-green".into(),
            version: 1,
            info: StatusInfo {
                status: "pending-install".into(),
                description: String::new(),
                last_deployed: String::new(),
            },
            config: None,
            manifest: DEPLOYMENT.into(),
            hooks: vec![HookRecord {
                name: "t".into(),
                kind: "Job".into(),
                manifest: "apiVersion: batch/v1\nkind: Job\nmetadata: {name: migrate}\nspec: {template: {metadata: {labels: {app.kubernetes.io/name: myapp}}, spec: {containers: [{name: m}]}}}\n".into(),
                events: vec!["pre-upgrade".into()],
            }],
            chart: None,
        };
        let rendered = Rendered::of(&record).unwrap();
        assert_eq!(rendered.objects.len(), 2);
        let deployment = rendered.deployments().next().unwrap();
        assert_eq!(
            (deployment.group(), deployment.name.as_str()),
            ("apps", "web-green-myapp")
        );
        assert_eq!(deployment.containers().len(), 2);
        assert_eq!(deployment.app_containers().len(), 1);
        assert_eq!(
            deployment.describe("shop"),
            "Deployment shop/web-green-myapp"
        );
        let cm = &rendered.objects[1];
        assert_eq!((cm.group(), cm.namespace.as_deref()), ("", Some("other")));
        assert_eq!(rendered.hooks[0].events, ["pre-upgrade"]);
        let selector =
            BTreeMap::from([("app.kubernetes.io/name".to_string(), "myapp".to_string())]);
        let selected: Vec<&str> = rendered
            .selected_by(&selector)
            .map(|o| o.name.as_str())
            .collect();
        assert_eq!(selected, ["web-green-myapp", "migrate"]);
        assert!(!selects(&BTreeMap::new(), &deployment.pod_labels()));
        assert!(parse("not: [yaml").is_err());
        assert_eq!(parse("  \n").unwrap(), vec![]);
    }
}
