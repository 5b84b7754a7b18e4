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
}
