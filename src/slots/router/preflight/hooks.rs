//! The hooks a slot release's write runs, and those it does not. helm runs a release's install
//! hooks when it installs it and its upgrade hooks when it upgrades it; a slot release is
//! installed at its first deploy and again after `clean` uninstalled it, where a team's single
//! release would have been upgraded. So a migration marked only `pre-upgrade` would silently not
//! run: refused before any write, unless accepted (`--accept skipped-hooks`).

use serde::Serialize;

use super::Checks;
use crate::error::Refusal;
use crate::slots::router::manifest::Rendered;
use crate::slots::router::values::Risk;

/// One hook: its kind and name, and the phases it runs at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookRun {
    pub kind: String,
    pub name: String,
    pub phases: Vec<String>,
}

/// The hooks of a write: whether it installs or upgrades the slot release, the hooks it runs,
/// and the install or upgrade hooks of the chart it does not run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Hooks {
    /// `install` or `upgrade`.
    pub path: String,
    pub runs: Vec<HookRun>,
    pub skipped: Vec<HookRun>,
}

const INSTALL: [&str; 2] = ["pre-install", "post-install"];
const UPGRADE: [&str; 2] = ["pre-upgrade", "post-upgrade"];

/// Sorts the render's install and upgrade hooks by whether a write that installs (or upgrades)
/// runs them. Test hooks and delete or rollback hooks belong to neither path.
pub fn hooks(slot: &Rendered, install: bool) -> Hooks {
    let (path, other) = if install {
        (INSTALL, UPGRADE)
    } else {
        (UPGRADE, INSTALL)
    };
    let mut out = Hooks {
        path: if install { "install" } else { "upgrade" }.into(),
        ..Hooks::default()
    };
    for hook in &slot.hooks {
        let run = HookRun {
            kind: hook.object.kind.clone(),
            name: hook.object.name.clone(),
            phases: hook.events.clone(),
        };
        if hook.events.iter().any(|e| path.contains(&e.as_str())) {
            out.runs.push(run);
        } else if hook.events.iter().any(|e| other.contains(&e.as_str())) {
            out.skipped.push(run);
        }
    }
    out
}

impl Hooks {
    /// One line for a report: `runs Job web-green-migrate (pre-upgrade); does not run ...`.
    pub fn describe(&self) -> String {
        let list = |runs: &[HookRun]| {
            runs.iter()
                .map(|h| format!("{} {} ({})", h.kind, h.name, h.phases.join(", ")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match (self.runs.is_empty(), self.skipped.is_empty()) {
            (true, true) => format!("the {} runs no hook", self.path),
            (false, true) => format!("the {} runs {}", self.path, list(&self.runs)),
            (true, false) => format!(
                "the {} runs no hook; not {}",
                self.path,
                list(&self.skipped)
            ),
            (false, false) => format!(
                "the {} runs {}; not {}",
                self.path,
                list(&self.runs),
                list(&self.skipped)
            ),
        }
    }
}

/// A slot release installed beside a running production whose install runs no hook Job while
/// its upgrade would (a migration marked only `pre-upgrade`): the migration would not run.
/// Refused unless accepted; the first deploy of an app is an install, as with helm.
pub(super) fn skipped_migrations(
    slot: &Rendered,
    hooks: &Hooks,
    c: &Checks,
) -> Result<Option<Risk>, Refusal> {
    let job = |h: &&HookRun| h.kind == "Job";
    if !c.install || c.first || hooks.runs.iter().any(|h| job(&h)) {
        return Ok(None);
    }
    let skipped: Vec<String> = hooks
        .skipped
        .iter()
        .filter(job)
        .map(|h| format!("Job {} ({})", h.name, h.phases.join(", ")))
        .collect();
    if skipped.is_empty() {
        return Ok(None);
    }
    if c.app.accept.contains(&Risk::SkippedHooks) {
        return Ok(Some(Risk::SkippedHooks));
    }
    Err(Refusal::new(
        format!(
            "{} is installed beside production (its slot holds no release: a first deploy there, or one after clean), and an install runs no hook Job, while an upgrade of your app would run {}: that migration would not run",
            slot.release,
            skipped.join(", ")
        ),
        "mark the hook to run at install too (helm.sh/hook: pre-install,pre-upgrade), as a chart that runs `db:prepare` at install and migrates at upgrade does; or run it yourself and deploy with --accept skipped-hooks",
    ))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    const MIGRATE: &str = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: web-green-migrate\n  annotations: {helm.sh/hook: pre-upgrade}\nspec: {template: {spec: {restartPolicy: Never, containers: [{name: m, image: \"nginx:v2\"}]}}}";

    fn with_hook(events: &str) -> Case {
        let doc = MIGRATE.replace("pre-upgrade", events);
        let mut case = Case::new();
        case.slot.hooks.push(crate::slots::router::manifest::Hook {
            events: events.split(',').map(str::to_string).collect(),
            object: crate::slots::router::manifest::parse(&doc)
                .unwrap()
                .remove(0),
        });
        case
    }

    #[test]
    fn a_pre_upgrade_only_migration_is_refused_at_an_install_beside_production() {
        let mut case = with_hook("pre-upgrade");
        case.install = true;
        let err = case.refusal();
        assert!(
            err.reason
                .contains("an upgrade of your app would run Job web-green-migrate (pre-upgrade)"),
            "{err:?}"
        );
        assert!(err.hint.contains("--accept skipped-hooks"), "{}", err.hint);
        case.app.accept = vec![Risk::SkippedHooks];
        let a = case.run().unwrap();
        assert!(a.accepted.contains(&Risk::SkippedHooks));
        assert_eq!(a.hooks.skipped[0].name, "web-green-migrate");
        // An upgrade runs it; the first deploy of an app is an install, as with helm; a hook at
        // both phases runs either way.
        let mut upgrade = with_hook("pre-upgrade");
        upgrade.install = false;
        assert_eq!(upgrade.run().unwrap().hooks.runs[0].phases, ["pre-upgrade"]);
        let mut first = with_hook("pre-upgrade");
        (first.install, first.first) = (true, true);
        assert!(first.run().is_ok());
        let mut both = with_hook("pre-install,pre-upgrade");
        both.install = true;
        let a = both.run().unwrap();
        assert_eq!((a.hooks.path.as_str(), a.hooks.runs.len()), ("install", 1));
        assert_eq!(
            a.hooks.describe(),
            "the install runs Job web-green-migrate (pre-install, pre-upgrade)"
        );
    }
}
