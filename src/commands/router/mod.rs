//! The router variant of each command (router mode: the slots are releases of the user's own
//! chart, see `crate::router`). Each command's own module dispatches here in a line or two once
//! its observation shows a router (for `deploy`, also when `--app-chart` is given and the release
//! does not exist), and returns what this variant reports as [`Mode::Router`].

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::Outcome;
use crate::error::{Refusal, UsageError};
use crate::names::SetArg;
use crate::observe::Observation;
use crate::router::{AppSettings, Risk, RouterValues};

/// `mode` in every router report.
pub const MODE: &str = "router";

pub mod clean;
pub mod deploy;
pub mod recover;
pub mod release;
pub mod status;
pub mod swap;

/// A command's report, from its bundled-chart variant or its router variant.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Mode<B, R> {
    Bundled(B),
    Router(R),
}

impl<B: fmt::Display, R: fmt::Display> fmt::Display for Mode<B, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Bundled(b) => b.fmt(f),
            Mode::Router(r) => r.fmt(f),
        }
    }
}

/// A router variant's outcome as the command's own.
pub fn routed<B, R>(outcome: Outcome<R>) -> Outcome<Mode<B, R>> {
    match outcome {
        Outcome::Done(report) => Outcome::Done(Mode::Router(report)),
        Outcome::Planned(plan) => Outcome::Planned(plan),
    }
}

/// The bundled variant's outcome as the command's own.
pub fn bundled<B, R>(outcome: Outcome<B>) -> Outcome<Mode<B, R>> {
    match outcome {
        Outcome::Done(report) => Outcome::Done(Mode::Bundled(report)),
        Outcome::Planned(plan) => Outcome::Planned(plan),
    }
}

/// The router's record in `seen`'s values, when `seen` is a router.
pub fn router_of(seen: &Observation) -> Result<Option<RouterValues>, Refusal> {
    RouterValues::of(&seen.release, &seen.all_values)
}

/// The flags of `deploy` (and `release`) that only router mode reads. They are recorded in the
/// router at its first deploy; later ones repeat a flag only to change it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AppArgs {
    /// Router mode: the chart each slot is a release of (a path, REPO/NAME or oci://...). The
    /// first deploy of a release with it makes the release a router; later deploys use it anyway
    #[arg(
        long,
        value_name = "PATH|REF",
        help_heading = "Your own chart (router mode)"
    )]
    pub app_chart: Option<String>,
    /// The version of --app-chart to install (a repository or OCI chart)
    #[arg(
        long,
        value_name = "VERSION",
        help_heading = "Your own chart (router mode)"
    )]
    pub app_chart_version: Option<String>,
    /// The value the chart reads its image tag from [default: image.tag]
    #[arg(long, value_name = "KEY", value_parser = value_key, help_heading = "Your own chart (router mode)")]
    pub tag_key: Option<String>,
    /// The value the chart reads its image repository from, set by --image ('' for none)
    #[arg(long, value_name = "KEY", value_parser = optional_value_key, help_heading = "Your own chart (router mode)")]
    pub repository_key: Option<String>,
    /// The value the chart reads an image digest from: set by --image, cleared by --tag ('' for none)
    #[arg(long, value_name = "KEY", value_parser = optional_value_key, help_heading = "Your own chart (router mode)")]
    pub digest_key: Option<String>,
    /// The value the chart reads its replica count from; '' lets bgslot scale the slot's
    /// Deployments itself [default: replicaCount]
    #[arg(long, value_name = "KEY", value_parser = optional_value_key, help_heading = "Your own chart (router mode)")]
    pub replicas_key: Option<String>,
    /// The chart's Service whose selector and ports the router copies, {release} standing for the
    /// slot release (e.g. '{release}-podinfo') [default: the one Service that selects a Deployment]
    #[arg(
        long,
        value_name = "NAME",
        help_heading = "Your own chart (router mode)"
    )]
    pub service: Option<String>,
    /// Run a chart that renders what is unsafe twice side by side, by name: cluster-scoped,
    /// stateful, jobs, daemonset, delete-hooks (repeat it; `none` accepts nothing again)
    #[arg(long = "accept", value_name = "RISK", value_parser = accept_arg, help_heading = "Your own chart (router mode)")]
    pub accept: Vec<Accept>,
    /// A values file for the router release itself (bgslot's chart: ingress, service, extraServices, ...)
    #[arg(long = "router-values", value_name = "FILE", value_parser = readable, help_heading = "Your own chart (router mode)")]
    pub router_values: Vec<PathBuf>,
    /// A value for the router release itself (e.g. ingress.host=web.example.com)
    #[arg(
        long = "router-set",
        value_name = "KEY=VALUE",
        help_heading = "Your own chart (router mode)"
    )]
    pub router_set: Vec<SetArg>,
}

/// One `--accept`: a risk, or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    Risk(Risk),
    None,
}

fn accept_arg(text: &str) -> Result<Accept, String> {
    if text == "none" {
        return Ok(Accept::None);
    }
    text.parse().map(Accept::Risk)
}

/// A value path as helm's `--set` takes it: dotted, without `=` or `,`.
fn value_key(text: &str) -> Result<String, String> {
    if text.is_empty()
        || text.contains(['=', ',', ' '])
        || text.starts_with('.')
        || text.ends_with('.')
    {
        return Err(format!(
            "'{text}' is not a value path: use dotted keys as --set takes them (e.g. image.tag)"
        ));
    }
    Ok(text.to_string())
}

fn optional_value_key(text: &str) -> Result<String, String> {
    if text.is_empty() {
        Ok(String::new())
    } else {
        value_key(text)
    }
}

fn readable(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    match std::fs::File::open(&path) {
        Ok(_) if path.is_file() => Ok(path),
        Ok(_) => Err(format!("{text} is not a file")),
        Err(err) => Err(format!("{text} cannot be read: {err}")),
    }
}

impl AppArgs {
    /// Whether any flag besides --app-chart was given.
    fn tunes(&self) -> bool {
        self.app_chart_version.is_some()
            || self.tag_key.is_some()
            || self.repository_key.is_some()
            || self.digest_key.is_some()
            || self.replicas_key.is_some()
            || self.service.is_some()
            || !self.accept.is_empty()
            || !self.router_values.is_empty()
            || !self.router_set.is_empty()
    }

    /// Refuses router-mode flags on a command that does not run in router mode (exit 2).
    pub fn only_for_routers(&self) -> Result<(), UsageError> {
        if self.tunes() || self.app_chart.is_some() {
            return Err(UsageError(
                "--app-chart-version, --tag-key, --repository-key, --digest-key, --replicas-key, --service, --accept, --router-values and --router-set are for a router: a release first deployed with --app-chart".into(),
            ));
        }
        Ok(())
    }

    /// The settings a deploy uses: these flags over what the router recorded (or the defaults).
    pub fn settings(&self, recorded: Option<&AppSettings>) -> AppSettings {
        let mut app = recorded.cloned().unwrap_or_default();
        if let Some(chart) = &self.app_chart {
            if chart != &app.chart && self.app_chart_version.is_none() {
                // Another chart: a version recorded for the old one does not apply.
                app.version = String::new();
            }
            app.chart = chart.clone();
        }
        let set = |field: &mut String, flag: &Option<String>| {
            if let Some(value) = flag {
                *field = value.clone();
            }
        };
        set(&mut app.version, &self.app_chart_version);
        set(&mut app.tag_key, &self.tag_key);
        set(&mut app.repository_key, &self.repository_key);
        set(&mut app.digest_key, &self.digest_key);
        set(&mut app.replicas_key, &self.replicas_key);
        set(&mut app.service, &self.service);
        if !self.accept.is_empty() {
            let mut accept: Vec<Risk> = self
                .accept
                .iter()
                .filter_map(|a| match a {
                    Accept::Risk(r) => Some(*r),
                    Accept::None => None,
                })
                .collect();
            accept.sort();
            accept.dedup();
            app.accept = accept;
        }
        app
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_change_what_the_router_recorded_and_nothing_else() {
        let recorded = AppSettings {
            chart: "bitnami/nginx".into(),
            version: "18.1.0".into(),
            digest_key: "image.digest".into(),
            accept: vec![Risk::Jobs],
            ..AppSettings::default()
        };
        let none = AppArgs::default();
        assert_eq!(none.settings(Some(&recorded)), recorded);
        let upgrade = AppArgs {
            app_chart_version: Some("18.2.0".into()),
            accept: vec![
                Accept::Risk(Risk::Stateful),
                Accept::Risk(Risk::Jobs),
                Accept::Risk(Risk::Stateful),
            ],
            ..AppArgs::default()
        };
        let app = upgrade.settings(Some(&recorded));
        assert_eq!(
            (app.chart.as_str(), app.version.as_str()),
            ("bitnami/nginx", "18.2.0")
        );
        assert_eq!(app.accept, [Risk::Stateful, Risk::Jobs]);
        let other = AppArgs {
            app_chart: Some("./charts/web".into()),
            accept: vec![Accept::None],
            ..AppArgs::default()
        };
        let app = other.settings(Some(&recorded));
        assert_eq!(
            (app.chart.as_str(), app.version.as_str()),
            ("./charts/web", "")
        );
        assert!(app.accept.is_empty());
        assert_eq!(app.digest_key, "image.digest");
        let fresh = AppArgs {
            app_chart: Some("./myapp".into()),
            ..AppArgs::default()
        }
        .settings(None);
        assert_eq!(
            (fresh.tag_key.as_str(), fresh.replicas_key.as_str()),
            ("image.tag", "replicaCount")
        );
    }

    #[test]
    fn value_paths_are_checked_on_the_command_line() {
        assert_eq!(value_key("image.tag"), Ok("image.tag".into()));
        for bad in ["", "a=b", "a,b", ".a", "a.", "a b"] {
            assert!(value_key(bad).is_err(), "{bad}");
        }
        assert_eq!(optional_value_key(""), Ok(String::new()));
        assert_eq!(accept_arg("none"), Ok(Accept::None));
        assert!(accept_arg("pvc").unwrap_err().contains("cluster-scoped"));
        assert!(AppArgs {
            tag_key: Some("x".into()),
            ..AppArgs::default()
        }
        .only_for_routers()
        .is_err());
        assert!(AppArgs::default().only_for_routers().is_ok());
    }
}
