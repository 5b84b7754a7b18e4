//! What `--dry-run` prints: the helm commands a run would make, the values each changes (old ->
//! new, secrets hidden), and what it would wait for. Each command builds its plan from the same
//! decision it would act on.

use std::fmt;

use serde::Serialize;

use super::Header;
use crate::observe::Observation;
pub use crate::planned::{changes, Change, Effect, PlannedStep};
use crate::vocab::Op;

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
            write!(f, "{step}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    use crate::planned::Effect;
    use crate::vocab::Slot;
    use serde_json::json;

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
