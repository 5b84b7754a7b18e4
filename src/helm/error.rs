//! A failed helm run as a value: the command, its exit code, its stderr, and what kind of failure
//! it is. The kind is read from stderr here, once, so no decision elsewhere matches helm's text.

use std::fmt;

/// What kind of failure a helm run was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelmErrorKind {
    /// The release does not exist (`Error: release: not found`).
    NotFound,
    /// Another helm operation holds the release (`another operation (install/upgrade/rollback)
    /// is in progress`).
    PendingOperation,
    /// An object belongs to another release or field manager: Helm 3's ownership check
    /// (`invalid ownership metadata`) or a Helm 4 server-side apply conflict.
    OwnershipConflict,
    /// The chart cannot be rendered for this cluster: a template's `required` or `fail`, a
    /// values schema, the chart's kubeVersion, a template or YAML that does not parse, a kind the
    /// cluster does not serve.
    RenderFailed,
    /// The chart names dependencies that are not under its `charts/` directory.
    MissingDependencies,
    /// Anything else; stderr says what.
    Other,
}

impl HelmErrorKind {
    /// Reads the kind from helm's stderr.
    pub fn of(stderr: &str) -> HelmErrorKind {
        if stderr.contains("release: not found") {
            HelmErrorKind::NotFound
        } else if stderr.contains("another operation (install/upgrade/rollback) is in progress") {
            HelmErrorKind::PendingOperation
        } else if stderr.contains("invalid ownership metadata")
            || stderr.contains("cannot be imported into the current release")
            || (stderr.contains("Apply failed with") && stderr.contains("conflict"))
        {
            HelmErrorKind::OwnershipConflict
        } else if stderr.contains("missing in charts/ directory") {
            HelmErrorKind::MissingDependencies
        } else if [
            "execution error at (",
            "values don't meet the specifications of the schema",
            "which is incompatible with Kubernetes",
            "parse error at (",
            "YAML parse error on",
            "error converting YAML to JSON",
            "unable to build kubernetes objects from",
            "template: ",
            "executing \"",
        ]
        .iter()
        .any(|p| stderr.contains(p))
        {
            HelmErrorKind::RenderFailed
        } else {
            HelmErrorKind::Other
        }
    }
}

/// A helm run that did not succeed.
#[derive(Debug, Clone)]
pub struct HelmError {
    /// The command as printed (program, then arguments, secrets redacted).
    pub argv: Vec<String>,
    /// The exit code; `None` when a signal ended helm.
    pub code: Option<i32>,
    pub stderr: HelmStderr,
    pub kind: HelmErrorKind,
}

impl HelmError {
    /// The failure of a command run with `reference` as its chart, naming the chart `shown`
    /// instead: the embedded chart's temporary directory is gone by the time the error is read,
    /// so it is shown as a plan shows it (`<embedded bgslot-0.3.0>`).
    pub fn naming_chart(err: anyhow::Error, reference: &str, shown: &str) -> anyhow::Error {
        match err.downcast::<HelmError>() {
            Ok(mut helm) => {
                for arg in helm.argv.iter_mut().filter(|arg| *arg == reference) {
                    *arg = shown.to_string();
                }
                helm.into()
            }
            Err(other) => other,
        }
    }

    pub fn new(argv: Vec<String>, code: Option<i32>, stderr: &str) -> HelmError {
        HelmError {
            argv,
            code,
            kind: HelmErrorKind::of(stderr),
            stderr: HelmStderr(stderr.trim().to_string()),
        }
    }

    /// Whether `err` carries a helm failure of `kind` anywhere in its chain.
    pub fn is(err: &anyhow::Error, kind: HelmErrorKind) -> bool {
        err.chain().any(|c| {
            c.downcast_ref::<HelmError>()
                .is_some_and(|h| h.kind == kind)
        })
    }
}

impl fmt::Display for HelmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The subcommand, release and chart say which run failed; stderr is the source.
        let sub = self
            .argv
            .iter()
            .skip(1)
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join(" ");
        match self.code {
            Some(code) => write!(f, "`helm {sub}` failed (exit {code})"),
            None => write!(f, "`helm {sub}` was ended by a signal"),
        }
    }
}

impl std::error::Error for HelmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.stderr)
    }
}

/// What helm printed on stderr, shown as the cause of a [`HelmError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelmStderr(pub String);

impl fmt::Display for HelmStderr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("(helm printed nothing on stderr)")
        } else {
            f.write_str(&self.0)
        }
    }
}

impl std::error::Error for HelmStderr {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_names_the_embedded_chart_as_a_plan_does() {
        let argv = [
            "helm",
            "upgrade",
            "web",
            "/tmp/bgslot-chart-x/bgslot",
            "--reuse-values",
        ];
        let failed = HelmError::new(
            argv.iter().map(|a| a.to_string()).collect(),
            Some(1),
            "Error: UPGRADE FAILED: context canceled",
        );
        let err = HelmError::naming_chart(
            failed.into(),
            "/tmp/bgslot-chart-x/bgslot",
            "<embedded bgslot-0.3.0>",
        );
        assert_eq!(
            err.to_string(),
            "`helm upgrade web <embedded bgslot-0.3.0>` failed (exit 1)"
        );
        assert!(HelmError::is(&err, HelmErrorKind::Other));
        let other = HelmError::naming_chart(anyhow::anyhow!("lock lost"), "x", "y");
        assert_eq!(other.to_string(), "lock lost");
    }

    #[test]
    fn kinds_are_read_from_what_helm_3_and_4_print() {
        assert_eq!(
            HelmErrorKind::of("Error: release: not found"),
            HelmErrorKind::NotFound
        );
        assert_eq!(
            HelmErrorKind::of("Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress"),
            HelmErrorKind::PendingOperation
        );
        assert_eq!(
            HelmErrorKind::of("Error: INSTALLATION FAILED: Unable to continue with install: Service \"web\" in namespace \"shop\" exists and cannot be imported into the current release: invalid ownership metadata; annotation validation error: key \"meta.helm.sh/release-name\" must equal \"web-green\": current value is \"web\""),
            HelmErrorKind::OwnershipConflict
        );
        assert_eq!(
            HelmErrorKind::of("Error: UPGRADE FAILED: conflict occurred while applying object shop/web /v1, Kind=Service: Apply failed with 1 conflict: conflict with \"kubectl-patch\" using v1: .spec.selector.bgslot/slot"),
            HelmErrorKind::OwnershipConflict
        );
        assert_eq!(
            HelmErrorKind::of("Error: UPGRADE FAILED: timed out"),
            HelmErrorKind::Other
        );
        for render in [
            "Error: execution error at (req/templates/a.yaml:3:20): db.host is required",
            "Error: values don't meet the specifications of the schema(s) in the following chart(s):\nschema:\n- at '/x': got number, want string",
            "Error: chart requires kubeVersion: >=1.25.0-0 which is incompatible with Kubernetes v1.20.2",
            "Error: parse error at (parse/templates/a.yaml:1): missing value for if",
            "Error: YAML parse error on yaml/templates/a.yaml: error converting YAML to JSON: yaml: line 3",
            "Error: unable to build kubernetes objects from release manifest: resource mapping not found for name: \"a\" namespace: \"\" from \"\": no matches for kind \"ServiceMonitor\" in version \"monitoring.coreos.com/v1\"",
            "Error: UPGRADE FAILED: template: web/templates/a.yaml:3:4: executing \"web/templates/a.yaml\" at <.Values.x.y>: nil pointer evaluating interface {}.y",
            "Error: myapp/templates/db.yaml:6:49\n  executing \"myapp/templates/db.yaml\" at <.Values.db.host>:\n    nil pointer evaluating interface {}.host",
        ] {
            assert_eq!(HelmErrorKind::of(render), HelmErrorKind::RenderFailed, "{render}");
        }
        assert_eq!(
            HelmErrorKind::of("Error: repo bad not found"),
            HelmErrorKind::Other
        );
        assert_eq!(
            HelmErrorKind::of("Error: an error occurred while checking for chart dependencies. You may need to run `helm dependency build` to fetch missing dependencies: found in Chart.yaml, but missing in charts/ directory: common"),
            HelmErrorKind::MissingDependencies
        );
    }

    #[test]
    fn a_failure_names_the_command_and_keeps_stderr_as_its_cause() {
        let err = HelmError::new(
            vec![
                "/usr/bin/helm".into(),
                "upgrade".into(),
                "web".into(),
                "/tmp/chart".into(),
            ],
            Some(1),
            "Error: UPGRADE FAILED: boom\n",
        );
        assert_eq!(
            err.to_string(),
            "`helm upgrade web /tmp/chart` failed (exit 1)"
        );
        let err = anyhow::Error::new(err).context("swap of web");
        let chain: Vec<String> = err.chain().map(ToString::to_string).collect();
        assert_eq!(
            chain,
            [
                "swap of web",
                "`helm upgrade web /tmp/chart` failed (exit 1)",
                "Error: UPGRADE FAILED: boom"
            ]
        );
        assert!(!HelmError::is(&err, HelmErrorKind::NotFound));
        let silent = HelmError::new(vec!["helm".into(), "status".into(), "web".into()], None, "");
        assert_eq!(
            silent.stderr.to_string(),
            "(helm printed nothing on stderr)"
        );
    }
}
