//! What bgslot reads from helm's JSON output (`helm history -o json`, `helm status -o json`):
//! the few fields it uses, typed; Helm 3 and Helm 4 print the same ones.

use serde::Deserialize;
use serde_json::Value;

use crate::record::Recorded;

/// One entry of `helm history -o json`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct Revision {
    pub revision: u64,
    pub updated: String,
    pub status: String,
    pub chart: String,
    #[serde(default)]
    pub app_version: String,
    #[serde(default)]
    pub description: String,
}

impl Revision {
    pub fn updated_at(&self) -> Option<k8s_openapi::jiff::Timestamp> {
        self.updated.parse().ok()
    }

    /// What bgslot (or `helm rollback`) recorded in this revision; `None` for any other writer.
    pub fn recorded(&self) -> Option<Recorded> {
        self.description.parse().ok()
    }

    /// Deployed successfully at some point (the latest one, or one a later revision replaced).
    pub fn is_settled(&self) -> bool {
        matches!(self.status.as_str(), "deployed" | "superseded")
    }
}

/// `helm status -o json`, the parts bgslot reads.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Status {
    /// The revision number.
    pub version: u64,
    pub info: StatusInfo,
    /// The values the user supplied (what `helm get values` prints).
    #[serde(default)]
    pub config: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct StatusInfo {
    pub status: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub last_deployed: String,
}

impl Status {
    /// The latest revision as `helm history` would list it; the chart is named by the caller.
    pub fn revision(&self, chart: String) -> Revision {
        Revision {
            revision: self.version,
            updated: self.info.last_deployed.clone(),
            status: self.info.status.clone(),
            chart,
            app_version: String::new(),
            description: self.info.description.clone(),
        }
    }
}

/// A whole release as `helm status -o json` and `helm upgrade --install -o json` (a dry run
/// included) print it: what a router reads of a slot release, to know what it renders.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ReleaseRecord {
    pub name: String,
    /// The revision number.
    pub version: u64,
    pub info: StatusInfo,
    /// The values the user supplied.
    #[serde(default)]
    pub config: Option<Value>,
    /// The rendered objects, as one YAML stream.
    #[serde(default)]
    pub manifest: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub hooks: Vec<HookRecord>,
    /// The chart's metadata (`helm status` leaves the chart out).
    #[serde(default)]
    pub chart: Option<ChartRecord>,
}

/// One hook of a release: its object and the events it runs at.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct HookRecord {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub manifest: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub events: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ChartRecord {
    pub metadata: ChartMetadata,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ChartMetadata {
    pub name: String,
    #[serde(default)]
    pub version: String,
    #[serde(default, rename = "appVersion")]
    pub app_version: String,
}

impl ReleaseRecord {
    /// The user values, `{}` when there are none.
    pub fn user_values(&self) -> Value {
        self.config
            .clone()
            .filter(|v| !v.is_null())
            .unwrap_or_else(|| Value::Object(Default::default()))
    }

    /// `NAME-VERSION` of the chart, as `helm history` names it, when the record carries it.
    pub fn chart_id(&self) -> Option<String> {
        self.chart
            .as_ref()
            .map(|c| format!("{}-{}", c.metadata.name, c.metadata.version))
    }
}

fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// Parses `helm history -o json`, oldest first.
pub fn parse_history(json: &str) -> serde_json::Result<Vec<Revision>> {
    let mut revisions: Vec<Revision> = serde_json::from_str(json)?;
    revisions.sort_by_key(|r| r.revision);
    Ok(revisions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_and_status_read_as_helm_prints_them() {
        let history = parse_history(
            r#"[{"revision":2,"updated":"2026-01-01T00:01:00.5+00:00","status":"deployed","chart":"bgslot-0.2.0","app_version":"1.27","description":"bgslot swap blue->green"},
                {"revision":1,"updated":"2026-01-01T00:00:00Z","status":"superseded","chart":"bgslot-0.2.0","app_version":"1.27","description":"Install complete"}]"#,
        )
        .unwrap();
        assert_eq!(
            history.iter().map(|r| r.revision).collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(history[1].recorded().unwrap().moves_production());
        assert_eq!(history[0].recorded(), None);
        assert!(history[1].updated_at().is_some() && history[1].is_settled());
        let status: Status = serde_json::from_str(
            r#"{"name":"web","version":2,"info":{"status":"deployed","description":"d","last_deployed":"t"},"config":{"a":1},"manifest":"..."}"#,
        )
        .unwrap();
        let latest = status.revision("bgslot-0.2.0".into());
        assert_eq!(
            (
                latest.revision,
                latest.status.as_str(),
                latest.chart.as_str()
            ),
            (2, "deployed", "bgslot-0.2.0")
        );
    }

    #[test]
    fn a_whole_release_reads_with_its_manifest_hooks_and_chart() {
        let record: ReleaseRecord = serde_json::from_str(
            r#"{"name":"web-green","version":3,"info":{"status":"pending-install","description":"Dry run complete"},
                "config":null,"manifest":"---\nkind: Service\n","hooks":[{"name":"t","kind":"Pod","path":"p","manifest":"kind: Pod","events":["test"]}],
                "chart":{"metadata":{"name":"myapp","version":"0.1.0","appVersion":"1.16.0"},"templates":[]},"namespace":"shop"}"#,
        )
        .unwrap();
        assert_eq!(
            (record.version, record.info.status.as_str()),
            (3, "pending-install")
        );
        assert_eq!(record.hooks[0].events, ["test"]);
        assert_eq!(record.chart_id().as_deref(), Some("myapp-0.1.0"));
        assert_eq!(record.user_values(), serde_json::json!({}));
        let bare: ReleaseRecord = serde_json::from_str(
            r#"{"name":"web","version":1,"info":{"status":"deployed"},"hooks":null}"#,
        )
        .unwrap();
        assert!(bare.hooks.is_empty() && bare.chart_id().is_none() && bare.manifest.is_empty());
    }
}
