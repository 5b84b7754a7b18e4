//! A step of what `--dry-run` prints: what the step does in words, the helm command line it runs,
//! the values it changes (old -> new, secrets hidden), what else it changes, and what a run
//! would wait for after it. Each kind of slot describes its own writes with these; the command's
//! plan (`commands::preview`) lists them.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::helm::{is_secret_key, SetValue, Write};
use crate::names::shell_words;
pub use crate::workers::Effect;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlannedStep {
    /// What the step does, in words.
    pub action: String,
    /// The helm command line, secrets redacted (empty for a step that runs no helm).
    pub helm: Vec<String>,
    pub changes: Vec<Change>,
    /// What the write changes in the cluster besides values: workers' replicas, CronJobs' suspend.
    pub effects: Vec<Effect>,
    /// What the run would wait for or check after the command.
    pub then: Vec<String>,
}

/// One value a write changes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Change {
    pub key: String,
    pub old: Value,
    pub new: Value,
}

impl PlannedStep {
    /// A step that runs no helm (an API write, a verification), until `write` says otherwise.
    pub fn action(action: impl Into<String>) -> PlannedStep {
        PlannedStep {
            action: action.into(),
            helm: Vec::new(),
            changes: Vec::new(),
            effects: Vec::new(),
            then: Vec::new(),
        }
    }

    /// The helm command the step runs and the values it changes.
    pub fn write(mut self, helm: Vec<String>, changes: Vec<Change>) -> PlannedStep {
        self.helm = helm;
        self.changes = changes;
        self
    }

    pub fn effects(mut self, effects: Vec<Effect>) -> PlannedStep {
        self.effects = effects;
        self
    }

    pub fn then(mut self, then: impl IntoIterator<Item = String>) -> PlannedStep {
        self.then.extend(then);
        self
    }
}

impl fmt::Display for PlannedStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\n  {}", self.action)?;
        if !self.helm.is_empty() {
            writeln!(f, "    {}", shell_words(&self.helm))?;
        }
        for change in &self.changes {
            writeln!(
                f,
                "    {}: {} -> {}",
                change.key,
                show_value(&change.old),
                show_value(&change.new)
            )?;
        }
        for effect in &self.effects {
            writeln!(
                f,
                "    {} {}: {} -> {}",
                effect.object, effect.field, effect.old, effect.new
            )?;
        }
        for then in &self.then {
            writeln!(f, "    then: {then}")?;
        }
        Ok(())
    }
}

fn show_value(value: &Value) -> String {
    match value {
        Value::Null => "(unset)".into(),
        Value::String(s) if s.is_empty() => "\"\"".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The values `write` changes, old (from the computed values) -> new; secret values hidden. A key
/// the write removes shows what takes its place: the chart's default, when `defaults` are known.
pub fn changes(
    write: &Write,
    all_values: &Value,
    files: &[(String, Value)],
    defaults: Option<&Value>,
) -> Vec<Change> {
    let mut changes: Vec<Change> = Vec::new();
    let mut add = |key: String, new: Value| {
        let old = lookup(all_values, &key).cloned().unwrap_or(Value::Null);
        let new = match (new, defaults) {
            (Value::Null, Some(defaults)) => lookup(defaults, &key).cloned().unwrap_or(Value::Null),
            (new, _) => new,
        };
        if old == new {
            return;
        }
        let hide = |v: Value| {
            if is_secret_key(&key) && !v.is_null() {
                Value::String("***".into())
            } else {
                v
            }
        };
        let (old, new) = (hide(old), hide(new));
        changes.retain(|c| c.key != key);
        changes.push(Change { key, old, new });
    };
    // In helm's order: values files (the user's, then bgslot's), then --set, then bgslot's keys.
    for values in files.iter().map(|(_, v)| v).chain(&write.generated) {
        for (key, value) in leaves(values, String::new()) {
            add(key, value);
        }
    }
    for set in &write.user_sets {
        add(
            set.key.clone(),
            SetValue::Literal(set.value.clone()).as_value(),
        );
    }
    for (key, value) in &write.sets {
        add(key.clone(), value.as_value());
    }
    changes
}

fn lookup<'a>(values: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(values, |v, key| v.get(key))
}

fn leaves(value: &Value, prefix: String) -> Vec<(String, Value)> {
    match value {
        Value::Object(map) if !map.is_empty() => map
            .iter()
            .flat_map(|(k, v)| {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(v, key)
            })
            .collect(),
        other => vec![(prefix, other.clone())],
    }
}

/// The values files a write passes, read as helm will read them (for what they change).
pub fn read_values_files(files: &[std::path::PathBuf]) -> anyhow::Result<Vec<(String, Value)>> {
    use anyhow::Context;
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading values file {}", path.display()))?;
            let values: Option<Value> = serde_saphyr::from_str(&text)
                .with_context(|| format!("values file {} is not YAML", path.display()))?;
            Ok((path.display().to_string(), values.unwrap_or(Value::Null)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Recorded;
    use crate::vocab::Slot;
    use serde_json::json;

    #[test]
    fn changes_show_old_and_new_and_hide_secrets() {
        let all = json!({"productionSlot": "blue", "green": {"enabled": false}, "db": {"password": "hunter2"}});
        let mut write = Write::upgrade(Recorded::Swap {
            from: Slot::Blue,
            to: Slot::Green,
        })
        .set("productionSlot", SetValue::Str("green".into()))
        .set("green.enabled", SetValue::Literal("true".into()))
        .set("green.replicaCount", SetValue::Literal("3".into()));
        write.user_sets = vec!["db.password=s3cret".parse().unwrap()];
        let files = vec![(
            "f.yaml".to_string(),
            json!({"green": {"env": {"A": "1"}}, "productionSlot": "blue"}),
        )];
        let got = changes(&write, &all, &files, None);
        let shown: Vec<(String, Value, Value)> =
            got.into_iter().map(|c| (c.key, c.old, c.new)).collect();
        assert_eq!(
            shown,
            [
                ("green.env.A".to_string(), Value::Null, json!("1")),
                ("db.password".to_string(), json!("***"), json!("***")),
                ("productionSlot".to_string(), json!("blue"), json!("green")),
                ("green.enabled".to_string(), json!(false), json!(true)),
                ("green.replicaCount".to_string(), Value::Null, json!(3)),
            ]
        );
    }
}
