//! Rules several commands share (helm's own failure states, drift between values and Services,
//! the next step to suggest, when production last moved) and the plan a `--dry-run` prints.
//!
//! Everything here is pure, so each rule is unit-tested without a cluster; each command's own
//! decision lives in its module under `commands/`.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::cluster::{GitOpsMarks, Observed, Role, ServiceState};
use crate::error::Refusal;
use crate::helm::{is_secret_key, Revision, SetValue, Write};
use crate::values::{ReleaseValues, Slot};

/// Refuses to act on a release whose latest helm revision is not settled.
pub fn check_helm_state(release: &str, history: &[Revision]) -> Result<(), Refusal> {
    let Some(latest) = history.last() else {
        return Ok(());
    };
    let status = latest.status.as_str();
    let recover = match last_good(history) {
        Some(good) => format!(
            "if no helm or bgslot command is still running on it, run `bgslot recover {release}` to return to revision {} (what `helm rollback {release} {}` does)",
            good.revision, good.revision
        ),
        None => format!("the release was never deployed; remove it with `helm uninstall {release}` and deploy again"),
    };
    if let Some(op) = status.strip_prefix("pending-") {
        return Err(Refusal::new(
            format!(
                "release {release} is in state {status} (revision {}, {}): a helm {op} started and has not finished, or was killed",
                latest.revision, latest.updated
            ),
            recover,
        ));
    }
    if status == "failed" {
        return Err(Refusal::new(
            format!(
                "release {release} is in state failed (revision {}: {}): its values may not match what runs",
                latest.revision,
                if latest.description.is_empty() { "no description" } else { &latest.description }
            ),
            recover,
        ));
    }
    Ok(())
}

/// The newest revision that was deployed successfully.
pub fn last_good(history: &[Revision]) -> Option<&Revision> {
    history
        .iter()
        .rev()
        .find(|r| r.status == "deployed" || r.status == "superseded")
}

/// Which services disagree with the values: human-readable lines, empty when consistent.
pub fn drift(release: &str, values: &ReleaseValues, observed: &Observed) -> Vec<String> {
    let mut lines = Vec::new();
    let mut check = |svc: Option<&ServiceState>, role: Role, want: Slot| match svc {
        None => lines.push(format!(
            "the {} Service of {release} does not exist",
            role.as_str()
        )),
        Some(svc) if svc.selects != Some(want) => lines.push(format!(
            "Service {} ({}) selects {} but the values say {want}",
            svc.name,
            role.as_str(),
            svc.selector_slot.as_deref().unwrap_or("no slot")
        )),
        Some(_) => {}
    };
    for role in [Role::Production, Role::Stage] {
        check(observed.service(role), role, values.slot_of(role));
    }
    for extra in &observed.extra_services {
        check(Some(&extra.state), extra.role, values.slot_of(extra.role));
    }
    lines
}

/// Services that select the slot the values say, but whose slot selector a manager other than
/// helm owns (a hand edit undone by hand): one sentence each. A Service that selects another slot
/// is drift, reported by [`drift`].
pub fn foreign_selector_owners(values: &ReleaseValues, observed: &Observed) -> Vec<String> {
    let main = [Role::Production, Role::Stage]
        .into_iter()
        .filter_map(|role| observed.service(role).map(|svc| (role, svc)));
    let extra = observed.extra_services.iter().map(|e| (e.role, &e.state));
    main.chain(extra)
        .filter(|(role, svc)| svc.selects == Some(values.slot_of(*role)))
        .filter_map(|(_, svc)| {
            svc.selector_owner.as_ref().map(|owner| {
                format!(
                    "the slot selector of Service {} was last written by {owner}, not helm",
                    svc.name
                )
            })
        })
        .collect()
}

/// What to do instead of changing a release a GitOps controller owns (its Git source wins).
pub fn gitops_instead(release: &str, marks: &GitOpsMarks) -> (String, String) {
    match marks {
        GitOpsMarks::Flux { namespace, name } => (
            format!(
                "release {release} is managed by Flux (HelmRelease {namespace}/{name}): its helm-controller would undo this change at its next reconcile"
            ),
            format!(
                "change productionSlot or the slot's values in the HelmRelease's spec.values (in Git) and let Flux apply it; \
                 --force changes it anyway (suspend it first: `flux suspend helmrelease {name} -n {namespace}`)"
            ),
        ),
        GitOpsMarks::ArgoCd { application } => (
            format!(
                "release {release} is managed by Argo CD (Application {application}): it would undo this change at its next sync"
            ),
            format!(
                "change productionSlot or the slot's values in the Application's helm values (in Git) and let Argo CD sync it; \
                 --force changes it anyway (turn off auto-sync of {application} first)"
            ),
        ),
    }
}

/// Refuses to change a release a GitOps controller owns, unless forced.
pub fn check_gitops(release: &str, observed: &Observed, force: bool) -> Result<(), Refusal> {
    match &observed.gitops {
        Some(marks) if !force => {
            let (reason, hint) = gitops_instead(release, marks);
            Err(Refusal::new(reason, hint))
        }
        _ => Ok(()),
    }
}

/// Refuses a write over drift unless forced: a write would put the Services back as the values
/// say (Helm 3 merges them back silently; Helm 4 conflicts with the hand-edit's field manager),
/// moving traffic someone moved by hand.
pub fn check_drift(
    release: &str,
    values: &ReleaseValues,
    observed: &Observed,
    force: bool,
) -> Result<Vec<String>, Refusal> {
    let drifted = drift(release, values, observed);
    if !drifted.is_empty() && !force {
        return Err(Refusal::new(
            format!(
                "the Services do not match the release values: {}",
                drifted.join("; ")
            ),
            "someone changed them outside helm; inspect with `bgslot status`, then re-apply the values \
             with `helm upgrade --reuse-values`, or pass --force to let this write put them back as the values say"
                .to_string(),
        ));
    }
    Ok(drifted)
}

/// Whether a revision moved production from one slot to the other. `helm rollback` (and
/// `bgslot recover`) may move production too, so they count.
pub fn moved_production(revision: &Revision) -> bool {
    ["bgslot swap", "bgslot rollback", "Rollback to"]
        .iter()
        .any(|p| revision.description.starts_with(p))
}

/// When production last changed slots, from the helm history.
pub fn last_swap(history: &[Revision]) -> Option<&Revision> {
    history.iter().rev().find(|r| moved_production(r))
}

/// The command a person most likely wants next.
pub fn next_step(
    release: &str,
    values: &ReleaseValues,
    observed: &Observed,
    latest: &Revision,
) -> String {
    let stage = values.stage();
    let staged = values.slot(stage);
    if !staged.enabled {
        return format!("bgslot deploy {release} --tag NEW_TAG");
    }
    if moved_production(latest) {
        return format!("bgslot clean {release}   (or: bgslot rollback {release})");
    }
    if observed.slot(stage).fully_available() {
        format!("bgslot swap {release} --expect-tag {}", staged.tag)
    } else {
        format!("bgslot status {release}   ({stage} is not ready yet; or: bgslot deploy {release} --tag TAG --replace)")
    }
}

/// What `--dry-run` prints: the helm commands a run would make, the values each changes, and
/// what it would wait for. Nothing was changed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Plan {
    pub operation: &'static str,
    pub release: String,
    pub namespace: String,
    /// The release's current revision (`None` before an install).
    pub revision: Option<u64>,
    pub production_slot: Option<Slot>,
    pub stage_slot: Option<Slot>,
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
    pub fn new(operation: &'static str, release: &str, namespace: &str) -> Plan {
        Plan {
            operation,
            release: release.to_string(),
            namespace: namespace.to_string(),
            revision: None,
            production_slot: None,
            stage_slot: None,
            dry_run: true,
            steps: Vec::new(),
        }
    }

    /// The plan of a release as it stands now.
    pub fn of(
        operation: &'static str,
        values: &ReleaseValues,
        release: &str,
        namespace: &str,
        revision: u64,
    ) -> Plan {
        Plan {
            revision: Some(revision),
            production_slot: Some(values.production),
            stage_slot: Some(values.stage()),
            ..Plan::new(operation, release, namespace)
        }
    }

    pub fn step(mut self, step: PlannedStep) -> Plan {
        self.steps.push(step);
        self
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let revision = self
            .revision
            .map(|r| format!("revision {r}"))
            .unwrap_or_else(|| "not installed".into());
        writeln!(
            f,
            "dry run: bgslot {} {} in namespace {} ({revision}); nothing was changed",
            self.operation, self.release, self.namespace
        )?;
        for step in &self.steps {
            writeln!(f, "\n  {}", step.action)?;
            if !step.helm.is_empty() {
                writeln!(f, "    {}", crate::names::shell_words(&step.helm))?;
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
        add(set.key.clone(), literal(&set.value));
    }
    for (key, value) in &write.sets {
        let new = match value {
            SetValue::Str(s) => Value::String(s.clone()),
            SetValue::Literal(s) => literal(s),
        };
        add(key.clone(), new);
    }
    changes
}

/// A `--set` value as helm types it: booleans, null and numbers are literals, the rest strings.
fn literal(text: &str) -> Value {
    match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" => Value::Null,
        _ => text
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(text.to_string())),
    }
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

/// Shared test fixtures: a release's values, what the cluster shows, helm revisions.
#[cfg(test)]
pub mod fixtures {
    use std::collections::BTreeMap;

    use crate::cluster::{Observed, ServiceState, SlotState};
    use crate::helm::{Revision, SetValue, Write};
    use crate::values::{ReleaseValues, Slot, SlotValues};

    pub fn values(production: Slot, green_enabled: bool) -> ReleaseValues {
        let slot = |enabled, tag: &str| SlotValues {
            enabled,
            repository: "web".into(),
            tag: tag.into(),
            digest: None,
            replicas: Some(3),
        };
        ReleaseValues {
            production,
            blue: slot(true, "v1"),
            green: slot(green_enabled, "v2"),
            autoscaling: false,
            ingress_host: None,
            ingress_stage_host: None,
            ingress_tls: false,
            service_port: 80,
        }
    }

    pub fn ready(n: i32) -> SlotState {
        SlotState {
            deployment: Some("d".into()),
            desired: n,
            ready: n,
            available: n,
            updated: n,
            total: n,
            observed: true,
            image: None,
            created: None,
        }
    }

    pub fn service(name: &str, slot: Slot, n: usize) -> ServiceState {
        ServiceState {
            name: name.into(),
            selects: Some(slot),
            selector_slot: Some(slot.to_string()),
            ready_by_slot: BTreeMap::from([(slot.to_string(), n)]),
            ready: n,
            not_ready: 0,
            selector_owner: None,
        }
    }

    /// Blue in production with `blue` ready pods; green staged with `green` (0: not deployed).
    pub fn observed(blue: i32, green: i32) -> Observed {
        Observed {
            blue: ready(blue),
            green: if green > 0 {
                ready(green)
            } else {
                SlotState::default()
            },
            production_service: Some(service("web", Slot::Blue, blue as usize)),
            stage_service: Some(service("web-stage", Slot::Green, green.max(0) as usize)),
            chart: Some("bgslot-0.1.0".into()),
            ..Observed::default()
        }
    }

    pub fn rev(n: u64, status: &str, description: &str, updated: &str) -> Revision {
        Revision {
            revision: n,
            updated: updated.into(),
            status: status.into(),
            chart: "bgslot-0.1.0".into(),
            app_version: String::new(),
            description: description.into(),
        }
    }

    /// A release as a command would observe it.
    pub fn observation(
        values: ReleaseValues,
        cluster: Observed,
        history: Vec<Revision>,
    ) -> crate::observe::Observation {
        let slot = |v: &crate::values::SlotValues| serde_json::json!({"enabled": v.enabled, "image": {"repository": v.repository, "tag": v.tag}, "replicaCount": v.replicas});
        let all_values = serde_json::json!({
            "productionSlot": values.production,
            "blue": slot(&values.blue),
            "green": slot(&values.green),
        });
        crate::observe::Observation {
            release: "web".parse().unwrap(),
            namespace: "shop".into(),
            helm_major: 4,
            history,
            user_values: all_values.clone(),
            values,
            all_values,
            cluster,
        }
    }

    pub fn sets(write: &Write) -> Vec<String> {
        write
            .sets
            .iter()
            .map(|(k, v)| match v {
                SetValue::Str(s) | SetValue::Literal(s) => format!("{k}={s}"),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn pending_and_failed_releases_are_refused_with_a_recovery() {
        let history = [
            rev(1, "superseded", "", "t"),
            rev(2, "deployed", "", "t"),
            rev(3, "pending-upgrade", "", "t"),
        ];
        let err = check_helm_state("web", &history).unwrap_err();
        assert!(err.reason.contains("pending-upgrade"), "{err:?}");
        assert!(
            err.hint.contains("bgslot recover web") && err.hint.contains("revision 2"),
            "{}",
            err.hint
        );
        let history = [rev(1, "failed", "Install failed", "t")];
        let err = check_helm_state("web", &history).unwrap_err();
        assert!(err.hint.contains("helm uninstall web"), "{}", err.hint);
        assert!(check_helm_state("web", &[rev(1, "deployed", "", "t")]).is_ok());
    }

    #[test]
    fn drift_is_refused_unless_forced() {
        let v = values(Slot::Blue, true);
        let mut obs = observed(3, 3);
        assert_eq!(check_drift("web", &v, &obs, false), Ok(vec![]));
        obs.production_service = Some(service("web", Slot::Green, 3));
        let err = check_drift("web", &v, &obs, false).unwrap_err();
        assert!(
            err.reason
                .contains("Service web (production) selects green but the values say blue"),
            "{err:?}"
        );
        assert!(err.hint.contains("--force"), "{}", err.hint);
        assert_eq!(check_drift("web", &v, &obs, true).unwrap().len(), 1);
        obs.stage_service = None;
        assert!(
            drift("web", &v, &obs).contains(&"the stage Service of web does not exist".to_string())
        );
    }

    #[test]
    fn a_release_a_gitops_controller_owns_is_refused_unless_forced() {
        let mut obs = observed(3, 3);
        assert!(check_gitops("web", &obs, false).is_ok());
        obs.gitops = Some(GitOpsMarks::Flux {
            namespace: "flux-system".into(),
            name: "web".into(),
        });
        let err = check_gitops("web", &obs, false).unwrap_err();
        assert!(
            err.reason
                .contains("managed by Flux (HelmRelease flux-system/web)"),
            "{err:?}"
        );
        assert!(
            err.hint.contains("spec.values")
                && err
                    .hint
                    .contains("flux suspend helmrelease web -n flux-system"),
            "{}",
            err.hint
        );
        assert!(check_gitops("web", &obs, true).is_ok());
        obs.gitops = Some(GitOpsMarks::ArgoCd {
            application: "shop-web".into(),
        });
        let err = check_gitops("web", &obs, false).unwrap_err();
        assert!(
            err.reason.contains("Argo CD (Application shop-web)"),
            "{err:?}"
        );
    }

    #[test]
    fn next_steps() {
        let latest = rev(2, "deployed", "bgslot deploy green v2", "t");
        assert_eq!(
            next_step("web", &values(Slot::Blue, false), &observed(3, 0), &latest),
            "bgslot deploy web --tag NEW_TAG"
        );
        assert_eq!(
            next_step("web", &values(Slot::Blue, true), &observed(3, 3), &latest),
            "bgslot swap web --expect-tag v2"
        );
        let swapped = rev(3, "deployed", "bgslot swap blue->green", "t");
        assert!(
            next_step("web", &values(Slot::Green, true), &observed(3, 3), &swapped)
                .starts_with("bgslot clean web")
        );
        let mut starting = observed(3, 3);
        starting.green.ready = 1;
        starting.green.available = 1;
        assert!(
            next_step("web", &values(Slot::Blue, true), &starting, &latest)
                .contains("green is not ready yet")
        );
    }

    #[test]
    fn last_swap_counts_rollbacks_of_any_kind() {
        let history = [
            rev(1, "superseded", "bgslot install blue v1", "t"),
            rev(2, "superseded", "bgslot swap blue->green", "t"),
            rev(3, "superseded", "Rollback to 1", "t"),
            rev(4, "deployed", "bgslot deploy green v3", "t"),
        ];
        assert_eq!(last_swap(&history).map(|r| r.revision), Some(3));
        assert_eq!(last_swap(&history[..1]), None);
    }

    #[test]
    fn changes_show_old_and_new_and_hide_secrets() {
        let all = json!({"productionSlot": "blue", "green": {"enabled": false}, "db": {"password": "hunter2"}});
        let mut write = Write::upgrade("x")
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
        let plan =
            Plan::of("swap", &values(Slot::Blue, true), "web", "shop", 7).step(PlannedStep {
                action: "flip production blue -> green".into(),
                helm: vec![
                    "helm".into(),
                    "upgrade".into(),
                    "--description".into(),
                    "bgslot swap blue->green".into(),
                ],
                changes: vec![Change {
                    key: "productionSlot".into(),
                    old: json!("blue"),
                    new: json!("green"),
                }],
                then: vec!["the production Service routes only to green".into()],
            });
        assert_eq!(
            plan.to_string(),
            "dry run: bgslot swap web in namespace shop (revision 7); nothing was changed\n\n  flip production blue -> green\n    helm upgrade --description 'bgslot swap blue->green'\n    productionSlot: blue -> green\n    then: the production Service routes only to green\n"
        );
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(
            (json["dry_run"].as_bool(), json["production_slot"].as_str()),
            (Some(true), Some("blue"))
        );
    }
}
