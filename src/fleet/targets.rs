//! The targets of a run across several clusters, from a targets file or `--target NAME=CONTEXT`
//! flags, checked before anything connects: a bad file, a kubeconfig or context that is not there,
//! a name used twice, or two targets that are the same release are usage errors (exit 2) naming
//! the line (or the flag), and nothing is read from any cluster.
//!
//! ```yaml
//! namespace: shop                  # default for every target
//! targets:                         # listed order is the wave order
//!   - name: eu                     # a label in output and JSON; BGSLOT_CLUSTER for --verify-cmd
//!     context: prod-eu
//!     kubeconfig: /ci/kube/eu.yaml # optional; relative paths are the targets file's
//!   - name: us
//!     context: prod-us
//!     namespace: shop-us           # optional per target
//!     values: [values-us.yaml]     # optional per-target -f and --set
//!     set: ["ingress.host=us.shop.example"]
//! ```

use std::path::{Path, PathBuf};

use kube::config::Kubeconfig;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::order::Key;
use crate::commands::{TargetFlag, Targets};
use crate::context::Settings;
use crate::error::UsageError;
use crate::names::{ReleaseName, SetArg, TargetName};

/// One target as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub name: TargetName,
    pub context: String,
    pub kubeconfig: Option<PathBuf>,
    /// The target's own namespace, else the file's default.
    pub namespace: Option<String>,
    /// Its own `-f` files and `--set`s, after the command line's.
    pub values: Vec<PathBuf>,
    pub set: Vec<SetArg>,
    /// Where it was named, for messages.
    pub origin: Origin,
}

/// Where a target was named: a file's lines, or a flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File {
        path: String,
        /// The line of the target's entry, and of its `context` and `kubeconfig` keys.
        entry: usize,
        context: Option<usize>,
        kubeconfig: Option<usize>,
    },
    Flag(String),
}

impl Origin {
    /// `targets.yaml:7` (the line of `key`, else of the entry) or `--target eu=prod-eu`.
    fn at(&self, key: Option<&str>) -> String {
        match self {
            Origin::File {
                path,
                entry,
                context,
                kubeconfig,
            } => {
                let line = match key {
                    Some("context") => context.unwrap_or(*entry),
                    Some("kubeconfig") => kubeconfig.unwrap_or(*entry),
                    _ => *entry,
                };
                format!("{path}:{line}")
            }
            Origin::Flag(flag) => flag.clone(),
        }
    }
}

/// A target resolved against its kubeconfig: what it connects with, and the key that orders its
/// lock among the others.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub spec: TargetSpec,
    pub settings: Settings,
    pub key: Key,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    namespace: Option<Spanned<String>>,
    targets: Option<Vec<Spanned<Entry>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: Spanned<String>,
    context: Option<Spanned<String>>,
    kubeconfig: Option<Spanned<String>>,
    namespace: Option<Spanned<String>>,
    #[serde(default)]
    values: Vec<Spanned<String>>,
    #[serde(default)]
    set: Vec<Spanned<String>>,
}

/// The targets a file lists, in order; `path` as the user wrote it names it in messages, and
/// relative paths in it are taken from its directory.
pub fn parse_file(path: &str, text: &str) -> Result<Vec<TargetSpec>, UsageError> {
    let usage = |line: usize, what: String| UsageError(format!("{path}:{line}: {what}"));
    if text.trim().is_empty() {
        return Err(UsageError(format!(
            "{path} is empty: it lists the targets under `targets:`, each with a name and a context"
        )));
    }
    let file: File = serde_saphyr::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line() as usize).unwrap_or(1);
        usage(line, first_line_of(&e.to_string()))
    })?;
    let dir = Path::new(path).parent().unwrap_or(Path::new(""));
    let relative = |p: &str| -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.join(p)
        }
    };
    let default_namespace = file.namespace.map(|n| n.value);
    let entries = file.targets.unwrap_or_default();
    if entries.is_empty() {
        return Err(UsageError(format!(
            "{path} lists no targets: add them under `targets:`, each with a name and a context"
        )));
    }
    let mut specs: Vec<TargetSpec> = Vec::new();
    for entry in entries {
        let line = entry.referenced.line() as usize;
        let e = entry.value;
        let name: TargetName = e
            .name
            .value
            .parse()
            .map_err(|err: String| usage(e.name.referenced.line() as usize, err))?;
        let Some(context) = e.context.as_ref().filter(|c| !c.value.is_empty()) else {
            return Err(usage(
                line,
                format!(
                    "target {name} has no context: give the kubeconfig context it is reached with"
                ),
            ));
        };
        let set = e
            .set
            .iter()
            .map(|s| {
                s.value.parse::<SetArg>().map_err(|err| {
                    usage(
                        s.referenced.line() as usize,
                        format!("target {name}: set: {err}"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let spec = TargetSpec {
            context: context.value.clone(),
            kubeconfig: e.kubeconfig.as_ref().map(|k| relative(&k.value)),
            namespace: e
                .namespace
                .map(|n| n.value)
                .or_else(|| default_namespace.clone()),
            values: e.values.iter().map(|v| relative(&v.value)).collect(),
            set,
            origin: Origin::File {
                path: path.to_string(),
                entry: line,
                context: Some(context.referenced.line() as usize),
                kubeconfig: e.kubeconfig.as_ref().map(|k| k.referenced.line() as usize),
            },
            name,
        };
        if let Some(first) = specs.iter().find(|s| s.name == spec.name) {
            return Err(UsageError(format!(
                "{}: the target name {} is used twice (first at {})",
                spec.origin.at(None),
                spec.name,
                first.origin.at(None)
            )));
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// serde-saphyr's message without its location prefix and source snippet.
fn first_line_of(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message);
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match first.split_once(": ") {
        Some((at, rest)) if at.starts_with("line ") => rest.to_string(),
        _ => first.to_string(),
    }
}

/// The targets `--target NAME=CONTEXT` flags name, in order.
pub fn from_flags(flags: &[TargetFlag]) -> Result<Vec<TargetSpec>, UsageError> {
    let mut specs: Vec<TargetSpec> = Vec::new();
    for flag in flags {
        let origin = Origin::Flag(format!("--target {}={}", flag.name, flag.context));
        if let Some(first) = specs.iter().find(|s| s.name == flag.name) {
            return Err(UsageError(format!(
                "{}: the target name {} is used twice (first at {})",
                origin.at(None),
                flag.name,
                first.origin.at(None)
            )));
        }
        specs.push(TargetSpec {
            name: flag.name.clone(),
            context: flag.context.clone(),
            kubeconfig: None,
            namespace: None,
            values: Vec::new(),
            set: Vec::new(),
            origin,
        });
    }
    Ok(specs)
}

/// Where a target's kubeconfig comes from, as messages name it.
fn source_of(path: Option<&Path>) -> String {
    match path {
        Some(path) => format!("kubeconfig {}", path.display()),
        None => match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
            Some(v) => format!("the kubeconfig ($KUBECONFIG={})", v.to_string_lossy()),
            None => "the kubeconfig (~/.kube/config)".into(),
        },
    }
}

/// Resolves every target against its kubeconfig (`load` reads one: a path, or `None` for
/// KUBECONFIG / ~/.kube/config) into the settings it connects with (`base` with its context,
/// kubeconfig and namespace) and its canonical key; two targets with one key are refused.
pub fn resolve(
    specs: Vec<TargetSpec>,
    release: &ReleaseName,
    base: &Settings,
    load: &mut dyn FnMut(Option<&Path>) -> Result<Kubeconfig, String>,
) -> Result<Vec<Resolved>, UsageError> {
    let mut resolved: Vec<Resolved> = Vec::new();
    for spec in specs {
        let name = &spec.name;
        let path = spec.kubeconfig.clone().or_else(|| base.kubeconfig.clone());
        let key_of_path = if spec.kubeconfig.is_some() {
            Some("kubeconfig")
        } else {
            Some("context")
        };
        let kubeconfig = load(path.as_deref()).map_err(|err| {
            UsageError(format!(
                "{}: target {name}: {} cannot be read: {err}",
                spec.origin.at(key_of_path),
                source_of(path.as_deref())
            ))
        })?;
        let (server, context_namespace) =
            server_of(&kubeconfig, &spec.context).map_err(|what| {
                UsageError(format!(
                    "{}: target {name}: {what} in {}",
                    spec.origin.at(Some("context")),
                    source_of(path.as_deref())
                ))
            })?;
        for values in &spec.values {
            std::fs::File::open(values).map_err(|err| {
                UsageError(format!(
                    "{}: target {name}: values file {} cannot be read: {err}",
                    spec.origin.at(None),
                    values.display()
                ))
            })?;
        }
        let namespace = spec.namespace.clone().or_else(|| base.namespace.clone());
        let key = Key::new(
            &server,
            namespace
                .as_deref()
                .or(context_namespace.as_deref())
                .unwrap_or("default"),
            release,
        );
        if let Some(same) = resolved.iter().find(|r| r.key == key) {
            return Err(UsageError(format!(
                "{}: target {name} is the same release as target {} ({}): {release} in namespace {} at {}",
                spec.origin.at(None),
                same.spec.name,
                same.spec.origin.at(None),
                key.namespace,
                key.server
            )));
        }
        let settings = Settings {
            namespace,
            kube_context: Some(spec.context.clone()),
            kubeconfig: path,
            ..base.clone()
        };
        resolved.push(Resolved {
            spec,
            settings,
            key,
        });
    }
    Ok(resolved)
}

/// The API server a context reaches and its namespace, or what is missing.
fn server_of(kubeconfig: &Kubeconfig, context: &str) -> Result<(String, Option<String>), String> {
    let found = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context)
        .ok_or_else(|| format!("context {context} is not"))?;
    let ctx = found
        .context
        .as_ref()
        .ok_or_else(|| format!("context {context} is empty"))?;
    let server = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .ok_or_else(|| {
            format!(
                "context {context} names cluster {}, whose server is not",
                ctx.cluster
            )
        })?;
    Ok((server, ctx.namespace.clone()))
}

/// The targets the flags name, resolved: the file read (or the `--target`s taken) and every
/// kubeconfig loaded from disk. `--kube-context` would name a single cluster: refused with them.
pub fn load(
    targets: &Targets,
    release: &ReleaseName,
    base: &Settings,
) -> Result<Vec<Resolved>, UsageError> {
    if base.kube_context.is_some() {
        return Err(UsageError(
            "--kube-context (HELM_KUBECONTEXT) names one cluster: with --targets or --target each target names its own context".into(),
        ));
    }
    let specs = match &targets.targets {
        Some(path) => {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| UsageError(format!("--targets {shown}: cannot be read: {e}")))?;
            parse_file(&shown, &text)?
        }
        None => from_flags(&targets.target)?,
    };
    let mut load = |path: Option<&Path>| -> Result<Kubeconfig, String> {
        match path {
            Some(path) => Kubeconfig::read_from(path).map_err(|e| error_text(&e)),
            None => Kubeconfig::read().map_err(|e| error_text(&e)),
        }
    };
    resolve(specs, release, base, &mut load)
}

/// A kubeconfig error with its causes, on one line.
fn error_text(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn base() -> Settings {
        Settings {
            namespace: None,
            kube_context: None,
            kubeconfig: None,
            helm: None,
            verbose: false,
            timeout: Duration::from_secs(300),
            chart: None,
            wait_for_lock: None,
            run: None,
        }
    }

    fn kubeconfig(contexts: &[(&str, &str, Option<&str>)]) -> Kubeconfig {
        let mut text = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
        for (name, server, _) in contexts {
            text.push_str(&format!(
                "- name: {name}\n  cluster:\n    server: {server}\n"
            ));
        }
        text.push_str("contexts:\n");
        for (name, _, ns) in contexts {
            text.push_str(&format!(
                "- name: {name}\n  context:\n    cluster: {name}\n    user: u\n"
            ));
            if let Some(ns) = ns {
                text.push_str(&format!("    namespace: {ns}\n"));
            }
        }
        Kubeconfig::from_yaml(&text).unwrap()
    }

    fn release() -> ReleaseName {
        "web".parse().unwrap()
    }

    const FILE: &str = "\
namespace: shop
targets:
  - name: eu
    context: prod-eu
    kubeconfig: /ci/kube/eu.yaml
  - name: us
    context: prod-us
    namespace: shop-us
    values: [values-us.yaml]
    set: [\"ingress.host=us.shop.example\"]
";

    #[test]
    fn a_file_lists_targets_in_order_with_their_own_values() {
        let specs = parse_file("ci/targets.yaml", FILE).unwrap();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["eu", "us"]);
        assert_eq!(specs[0].kubeconfig, Some(PathBuf::from("/ci/kube/eu.yaml")));
        assert_eq!(specs[0].namespace.as_deref(), Some("shop"));
        assert_eq!(specs[1].namespace.as_deref(), Some("shop-us"));
        // Relative paths are the file's.
        assert_eq!(specs[1].values, [PathBuf::from("ci/values-us.yaml")]);
        assert_eq!(specs[1].set[0].to_string(), "ingress.host=us.shop.example");
        assert_eq!(specs[1].origin.at(None), "ci/targets.yaml:6");
        assert_eq!(specs[0].origin.at(Some("kubeconfig")), "ci/targets.yaml:5");
    }

    #[test]
    fn bad_files_are_usage_errors_naming_the_line() {
        for (text, message) in [
            (
                "targets:\n  - name: eu\n    context: a\n  - name: us\n    contxt: b\n",
                "t.yaml:5: unknown field `contxt`, expected one of name, context, kubeconfig, namespace, values, set",
            ),
            (
                "namespce: shop\ntargets: []\n",
                "t.yaml:1: unknown field `namespce`, expected one of namespace, targets",
            ),
            (
                "targets:\n  - name: eu\n    context: a\n  - name: us\n",
                "t.yaml:4: target us has no context: give the kubeconfig context it is reached with",
            ),
            (
                "targets:\n  - name: eu\n    context: a\n  - name: eu\n    context: b\n",
                "t.yaml:4: the target name eu is used twice (first at t.yaml:2)",
            ),
            (
                "targets:\n  - name: eu west\n    context: a\n",
                "t.yaml:2: target name 'eu west' is invalid: 1 to 40 letters, digits, '-', '_' or '.', starting with a letter or digit",
            ),
            (
                "targets:\n  - name: eu\n    context: a\n    values: x.yaml\n",
                "t.yaml:4: expected sequence start",
            ),
            (
                "targets:\n  - name: eu\n    context: a\n    set: [\"novalue\"]\n",
                "t.yaml:4: target eu: set: 'novalue' is not KEY=VALUE",
            ),
            (
                "namespace: shop\n",
                "t.yaml lists no targets: add them under `targets:`, each with a name and a context",
            ),
            (
                "\n",
                "t.yaml is empty: it lists the targets under `targets:`, each with a name and a context",
            ),
        ] {
            let err = parse_file("t.yaml", text).unwrap_err();
            assert_eq!(err.0, message, "{text}");
        }
    }

    #[test]
    fn flags_name_targets_in_order_and_once() {
        let flag = |s: &str| {
            let (name, context) = s.split_once('=').unwrap();
            TargetFlag {
                name: name.parse().unwrap(),
                context: context.into(),
            }
        };
        let specs = from_flags(&[flag("eu=prod-eu"), flag("us=prod-us")]).unwrap();
        assert_eq!(specs[1].context, "prod-us");
        assert_eq!(specs[1].origin.at(Some("context")), "--target us=prod-us");
        let err = from_flags(&[flag("eu=a"), flag("eu=b")]).unwrap_err();
        assert_eq!(
            err.0,
            "--target eu=b: the target name eu is used twice (first at --target eu=a)"
        );
    }

    fn resolve_with(
        specs: Vec<TargetSpec>,
        base: &Settings,
        configs: &[(Option<&str>, Kubeconfig)],
    ) -> Result<Vec<Resolved>, UsageError> {
        let mut load = |path: Option<&Path>| -> Result<Kubeconfig, String> {
            configs
                .iter()
                .find(|(p, _)| p.map(Path::new) == path)
                .map(|(_, k)| k.clone())
                .ok_or_else(|| "No such file or directory (os error 2)".to_string())
        };
        resolve(specs, &release(), base, &mut load)
    }

    #[test]
    fn targets_resolve_to_their_server_namespace_and_settings() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("values-us.yaml"), "a: 1\n").unwrap();
        let path = dir.path().join("targets.yaml");
        let specs = parse_file(path.to_str().unwrap(), FILE).unwrap();
        let configs = [
            (
                Some("/ci/kube/eu.yaml"),
                kubeconfig(&[("prod-eu", "https://eu.example:6443/", None)]),
            ),
            (
                None,
                kubeconfig(&[("prod-us", "https://us.example:6443", Some("other"))]),
            ),
        ];
        let resolved = resolve_with(specs, &base(), &configs).unwrap();
        let eu = &resolved[0];
        assert_eq!(eu.settings.kube_context.as_deref(), Some("prod-eu"));
        assert_eq!(
            eu.settings.kubeconfig,
            Some(PathBuf::from("/ci/kube/eu.yaml"))
        );
        assert_eq!(eu.settings.namespace.as_deref(), Some("shop"));
        assert_eq!(eu.key, Key::new("https://eu.example:6443", "shop", "web"));
        let us = &resolved[1];
        assert_eq!(us.settings.kubeconfig, None);
        assert_eq!(us.key.namespace, "shop-us");
        // Without a namespace anywhere, the context's, else default.
        let flags = from_flags(&[TargetFlag {
            name: "us".parse().unwrap(),
            context: "prod-us".into(),
        }])
        .unwrap();
        let resolved = resolve_with(flags, &base(), &configs).unwrap();
        assert_eq!(resolved[0].key.namespace, "other");
        assert_eq!(resolved[0].settings.namespace, None);
    }

    #[test]
    fn a_missing_kubeconfig_or_context_or_values_file_or_the_same_release_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.yaml");
        let path = path.to_str().unwrap();
        let one = kubeconfig(&[
            ("a", "https://one.example", Some("shop")),
            ("b", "https://ONE.example:443/", None),
        ]);
        let none: [(Option<&str>, Kubeconfig); 0] = [];
        type Configs<'a> = Vec<(Option<&'a str>, Kubeconfig)>;
        let cases: Vec<(String, Configs, String)> = vec![
            (
                "targets:\n  - name: eu\n    context: a\n    kubeconfig: /nowhere/eu.yaml\n".into(),
                none.to_vec(),
                format!("{path}:4: target eu: kubeconfig /nowhere/eu.yaml cannot be read: No such file or directory (os error 2)"),
            ),
            (
                "targets:\n  - name: eu\n    context: nope\n".into(),
                vec![(None, one.clone())],
                format!("{path}:3: target eu: context nope is not in {}", source_of(None)),
            ),
            (
                "targets:\n  - name: eu\n    context: a\n    values: [missing.yaml]\n".into(),
                vec![(None, one.clone())],
                format!(
                    "{path}:2: target eu: values file {} cannot be read: No such file or directory (os error 2)",
                    dir.path().join("missing.yaml").display()
                ),
            ),
            (
                "namespace: shop\ntargets:\n  - name: eu\n    context: a\n  - name: us\n    context: b\n".into(),
                vec![(None, one.clone())],
                format!("{path}:5: target us is the same release as target eu ({path}:3): web in namespace shop at https://one.example"),
            ),
        ];
        for (text, configs, message) in cases {
            let specs = parse_file(path, &text).unwrap();
            let err = resolve_with(specs, &base(), &configs).unwrap_err();
            assert_eq!(err.0, message, "{text}");
        }
        // Another namespace is another release.
        let specs = parse_file(
            path,
            "targets:\n  - name: eu\n    context: a\n  - name: us\n    context: b\n    namespace: shop-us\n",
        )
        .unwrap();
        assert_eq!(
            resolve_with(specs, &base(), &[(None, one)]).unwrap().len(),
            2
        );
    }

    #[test]
    fn kube_context_names_one_cluster_and_is_refused_with_targets() {
        let targets = Targets {
            targets: None,
            target: vec![TargetFlag {
                name: "eu".parse().unwrap(),
                context: "a".into(),
            }],
        };
        let settings = Settings {
            kube_context: Some("prod".into()),
            ..base()
        };
        let err = load(&targets, &release(), &settings).unwrap_err();
        assert!(
            err.0
                .starts_with("--kube-context (HELM_KUBECONTEXT) names one cluster"),
            "{err}"
        );
        let targets = Targets {
            targets: Some("/nonexistent/targets.yaml".into()),
            target: vec![],
        };
        let err = load(&targets, &release(), &base()).unwrap_err();
        assert_eq!(
            err.0,
            "--targets /nonexistent/targets.yaml: cannot be read: No such file or directory (os error 2)"
        );
    }
}
