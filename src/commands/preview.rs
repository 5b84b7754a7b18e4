//! What `--dry-run` prints: the helm commands a run would make, the values each changes (old ->
//! new, secrets hidden), and what it would wait for. Each command builds its plan from the same
//! decision it would act on.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::Header;
use crate::helm::{is_secret_key, SetValue, Write};
use crate::names::shell_words;
use crate::observe::Observation;
use crate::vocab::Op;
pub use crate::workers::Effect;

/// What `--dry-run` prints: the helm commands a run would make, the values each changes, and
/// what it would wait for. Nothing was changed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Plan {
    /// The release as it stands (no revision before an install).
    #[serde(flatten)]
    pub header: Header,
    pub dry_run: bool,
    pub steps: Vec<PlannedStep>,
}

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

impl Plan {
    /// The plan for a release that does not exist yet.
    pub fn new(operation: Op, release: &str, namespace: &str) -> Plan {
        Plan {
            header: Header::new(operation, release, namespace),
            dry_run: true,
            steps: Vec::new(),
        }
    }

    /// The plan of a release as it stands now.
    pub fn of(operation: Op, seen: &Observation) -> Plan {
        Plan {
            header: Header::of(operation, seen),
            dry_run: true,
            steps: Vec::new(),
        }
    }

    pub fn step(mut self, step: PlannedStep) -> Plan {
        self.steps.push(step);
        self
    }
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

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        let revision = h
            .revision
            .map(|r| format!("revision {r}"))
            .unwrap_or_else(|| "not installed".into());
        writeln!(
            f,
            "dry run: bgslot {} {} in namespace {} ({revision}); nothing was changed",
            h.operation, h.release, h.namespace
        )?;
        for step in &self.steps {
            writeln!(f, "\n  {}", step.action)?;
            if !step.helm.is_empty() {
                writeln!(f, "    {}", shell_words(&step.helm))?;
            }
            for change in &step.changes {
                writeln!(
                    f,
                    "    {}: {} -> {}",
                    change.key,
                    show_value(&change.old),
                    show_value(&change.new)
                )?;
            }
            for effect in &step.effects {
                writeln!(
                    f,
                    "    {} {}: {} -> {}",
                    effect.object, effect.field, effect.old, effect.new
                )?;
            }
            for then in &step.then {
                writeln!(f, "    then: {then}")?;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
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

    #[test]
    fn a_plan_reads_as_commands_and_changes() {
        let seen = observation(
            values(Slot::Blue, true),
            observed(3, 3),
            vec![rev(7, "deployed", "", "t")],
        );
        let plan = Plan::of(Op::Swap, &seen).step(
            PlannedStep::action("flip production blue -> green")
                .write(
                    [
                        "helm",
                        "upgrade",
                        "--description",
                        "bgslot swap blue->green",
                    ]
                    .map(String::from)
                    .to_vec(),
                    vec![Change {
                        key: "productionSlot".into(),
                        old: json!("blue"),
                        new: json!("green"),
                    }],
                )
                .effects(vec![Effect {
                    object: "worker consumer (green)".into(),
                    field: "replicas".into(),
                    old: "0".into(),
                    new: "2".into(),
                }])
                .then(["the production Service routes only to green".to_string()]),
        );
        assert_eq!(
            plan.to_string(),
            "dry run: bgslot swap web in namespace shop (revision 7); nothing was changed\n\n  flip production blue -> green\n    helm upgrade --description 'bgslot swap blue->green'\n    productionSlot: blue -> green\n    worker consumer (green) replicas: 0 -> 2\n    then: the production Service routes only to green\n"
        );
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(
            (json["dry_run"].as_bool(), json["production_slot"].as_str()),
            (Some(true), Some("blue"))
        );
    }
}
