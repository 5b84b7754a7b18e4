//! A slot release written as stage holds back what follows production: bgslot, run by helm as
//! its post-renderer, sets each worker Deployment to the stage's replicas and suspends every
//! CronJob in the render before helm applies it. So no worker pod and no CronJob run of the new
//! version starts before the swap (a scale after the write would leave a moment in which they
//! do), and what helm records of the slot release is what runs. Pure: text in, text out.

use serde_json::Value;

use crate::helm::AsStage;

/// The manifest stream `helm` passes a post-renderer, with the workers and CronJobs held back.
/// Every other document goes through as it came; a changed one is written back as JSON (which
/// is YAML), after its comments.
pub fn post_render(manifest: &str, as_stage: &AsStage) -> Result<String, String> {
    let mut out = String::with_capacity(manifest.len());
    for doc in documents(manifest) {
        match held_back(doc, as_stage)? {
            Some(changed) => {
                out.push_str("---\n");
                for comment in doc.lines().filter(|l| l.starts_with('#')) {
                    out.push_str(comment);
                    out.push('\n');
                }
                out.push_str(&changed);
                out.push('\n');
            }
            None if doc.trim().is_empty() => {}
            None => {
                out.push_str("---\n");
                out.push_str(doc.trim_end_matches('\n'));
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// The YAML documents of a stream, each without its `---` line.
fn documents(stream: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut at = 0;
    for line in stream.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if bare == "---" || bare.starts_with("--- ") {
            docs.push(&stream[start..at]);
            start = at + line.len();
        }
        at += line.len();
    }
    docs.push(&stream[start..]);
    docs
}

/// The document as JSON once held back, or `None` when it is not a worker or a CronJob.
fn held_back(doc: &str, as_stage: &AsStage) -> Result<Option<String>, String> {
    if !doc.contains("kind:") && !doc.contains("\"kind\"") {
        return Ok(None);
    }
    let Ok(mut value) = serde_saphyr::from_str::<Value>(doc) else {
        // Not one document bgslot can read: helm reads it, and says what is wrong.
        return Ok(None);
    };
    let kind = value["kind"].as_str().unwrap_or_default().to_string();
    let name = value["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (kind, name) = (kind.as_str(), name.as_str());
    let spec = match kind {
        "Deployment" if as_stage.workers.iter().any(|w| w == name) => {
            let spec = spec_of(&mut value, kind, name)?;
            spec.insert("replicas".into(), Value::from(as_stage.replicas));
            true
        }
        "CronJob" => {
            let spec = spec_of(&mut value, kind, name)?;
            spec.insert("suspend".into(), Value::Bool(true));
            true
        }
        _ => false,
    };
    if !spec {
        return Ok(None);
    }
    serde_json::to_string(&value)
        .map(Some)
        .map_err(|e| format!("writing {kind} {name} back: {e}"))
}

fn spec_of<'a>(
    value: &'a mut Value,
    kind: &str,
    name: &str,
) -> Result<&'a mut serde_json::Map<String, Value>, String> {
    value
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| format!("{kind} {name} has no spec to hold back"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::router::manifest::parse;

    const RENDERED: &str = "---
# Source: shop/templates/web.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web-green-web
spec:
  replicas: 2
  template: {}
---
# Source: shop/templates/sidekiq.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web-green-sidekiq
spec:
  replicas: 3
  template: {}
---
# Source: shop/templates/cron.yaml
apiVersion: batch/v1
kind: CronJob
metadata:
  name: web-green-nightly
spec:
  schedule: \"0 3 * * *\"
  suspend: false
  jobTemplate: {}
";

    #[test]
    fn workers_go_to_the_stage_replicas_and_cron_jobs_are_suspended_the_rest_as_it_came() {
        let as_stage = AsStage {
            workers: vec!["web-green-sidekiq".into()],
            replicas: 0,
        };
        let out = post_render(RENDERED, &as_stage).unwrap();
        let objects = parse(&out).unwrap();
        assert_eq!(objects.len(), 3);
        assert_eq!(objects[0].doc["spec"]["replicas"], 2, "not a worker");
        assert_eq!(objects[1].doc["spec"]["replicas"], 0);
        assert_eq!(objects[2].doc["spec"]["suspend"], true);
        assert_eq!(objects[2].doc["spec"]["schedule"], "0 3 * * *");
        assert!(
            out.contains("# Source: shop/templates/sidekiq.yaml\n{"),
            "{out}"
        );
        assert!(
            out.starts_with("---\n# Source: shop/templates/web.yaml\napiVersion: apps/v1\n"),
            "{out}"
        );
        let one = post_render(
            RENDERED,
            &AsStage {
                workers: Vec::new(),
                replicas: 1,
            },
        )
        .unwrap();
        assert_eq!(parse(&one).unwrap()[1].doc["spec"]["replicas"], 3);
    }
}
