//! The flags that say what a deploy stages and how (shared with `release`), a router's among them,
//! each value parsed and checked on the command line so a malformed one is a usage error naming
//! the flag.

use std::path::PathBuf;


use crate::names::{ImageRef, SetArg, Tag};
use crate::slots::router::app::ServiceArg;
use crate::slots::router::{AppChanges, Risk};
use crate::workers::Handover;
use crate::slots::{DeployRequest, Version};

/// The new version and how to stage it; shared with `release`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImageArgs {
    /// Image tag for the new version (the repository stays as production runs it)
    #[arg(
        long,
        value_name = "TAG",
        required_unless_present = "image",
        conflicts_with = "image"
    )]
    pub tag: Option<Tag>,

    /// Full image reference for the new version: REPOSITORY:TAG, REPOSITORY@sha256:DIGEST or
    /// REPOSITORY:TAG@sha256:DIGEST
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<ImageRef>,

    /// Replicas for the new slot [default: what production runs now]
    #[arg(long, value_name = "N", value_parser = parse_replicas, allow_negative_numbers = true)]
    pub replicas: Option<u32>,

    /// Stage the new version small, on N pods (no HPA while staged); `swap` first brings it to
    /// production's capacity, then flips
    #[arg(long, value_name = "N", value_parser = parse_replicas, allow_negative_numbers = true, conflicts_with = "replicas")]
    pub preview_replicas: Option<u32>,

    /// Values file passed to helm
    #[arg(short = 'f', long = "values", value_name = "FILE", value_parser = readable_file)]
    pub values_files: Vec<PathBuf>,

    /// A value passed to helm
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<SetArg>,

    /// Values for the slot being deployed, whichever slot that is: a YAML file of the slot's own
    /// keys (env, extraEnv, envFrom, command, args, resources, podAnnotations, config, secretEnv)
    #[arg(long = "slot-values", value_name = "FILE", value_parser = parse_slot_values)]
    pub slot_values: Vec<SlotValuesFile>,

    /// A value for the slot being deployed, whichever slot that is: KEY=VALUE under the slot
    /// (e.g. env.LOG_LEVEL=debug)
    #[arg(long = "slot-set", value_name = "KEY=VALUE")]
    pub slot_set: Vec<SetArg>,

    /// Replace a version already staged in the idle slot (a failed migration Job runs again)
    #[arg(long)]
    pub replace: bool,

    /// Create the namespace if it does not exist (as `helm install --create-namespace` does)
    #[arg(long)]
    pub create_namespace: bool,

    #[command(flatten)]
    pub app: AppArgs,
}

fn parse_replicas(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(0) => Err(
            "0 would stage a slot that can never take production traffic: give at least 1".into(),
        ),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "'{text}' is not a whole number of replicas (1 or more)"
        )),
    }
}

/// A `--slot-values` file, read and parsed on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotValuesFile {
    pub path: PathBuf,
    pub values: serde_json::Value,
}

fn parse_slot_values(text: &str) -> Result<SlotValuesFile, String> {
    let path = readable_file(text)?;
    let yaml = std::fs::read_to_string(&path).map_err(|e| format!("{text} cannot be read: {e}"))?;
    let values: Option<serde_json::Value> =
        serde_saphyr::from_str(&yaml).map_err(|e| format!("{text} is not YAML: {e}"))?;
    match values {
        Some(values @ serde_json::Value::Object(_)) => Ok(SlotValuesFile { path, values }),
        None => Ok(SlotValuesFile {
            path,
            values: serde_json::Value::Object(Default::default()),
        }),
        Some(_) => Err(format!(
            "{text} must hold a map of the slot's keys (env:, config:, ...)"
        )),
    }
}

fn readable_file(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    match std::fs::File::open(&path) {
        Ok(_) if path.is_file() => Ok(path),
        Ok(_) => Err(format!("{text} is not a file")),
        Err(err) => Err(format!("{text} cannot be read: {err}")),
    }
}

impl ImageArgs {
    pub fn request(&self, force: bool) -> DeployRequest {
        let version = match (&self.image, &self.tag) {
            (Some(image), _) => Version::Image(image.clone()),
            (None, Some(tag)) => Version::Tag(tag.clone()),
            (None, None) => unreachable!("clap requires --tag or --image"),
        };
        DeployRequest {
            version,
            replicas: self.replicas,
            preview_replicas: self.preview_replicas,
            replace: self.replace,
            force,
            values_files: self.values_files.clone(),
            user_sets: self.set.clone(),
            slot_values: self.slot_values.iter().map(|f| f.values.clone()).collect(),
            slot_sets: self.slot_set.clone(),
            app: self.app.changes(),
        }
    }
}


/// The flags of `deploy` (and `release`) that only router mode reads. They are recorded in the
/// router at its first deploy; later ones repeat a flag only to change it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AppArgs {
    /// Router mode: the chart each slot is a release of (a path, REPO/NAME or oci://...). The
    /// first deploy of a release with it makes the release a router; later deploys use it anyway
    #[arg(long, value_name = "PATH|REF", value_parser = app_chart_arg, help_heading = "Your own chart (router mode)")]
    pub app_chart: Option<String>,
    /// The version of --app-chart to install (a repository or OCI chart) [default: the version the
    /// first deploy resolved, recorded in the router]
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
    /// A Service of the chart to route, {release} standing for the slot release (e.g.
    /// '{release}-web'); repeat it for each public Service: the first is the main route (RELEASE,
    /// RELEASE-stage), each further one a pair of its own (RELEASE-ROUTE, RELEASE-ROUTE-stage),
    /// ROUTE from its name or given as NAME=ROUTE [default: the one Service that selects a
    /// Deployment]
    #[arg(long, value_name = "NAME[=ROUTE]", value_parser = service_arg, help_heading = "Your own chart (router mode)")]
    pub service: Vec<ServiceArg>,
    /// A Deployment of the chart that pulls work (a queue consumer), {release} as for --service;
    /// repeat it. It runs in production only: in the stage slot at --worker-stage-replicas, and a
    /// swap moves it with the Services
    #[arg(long, value_name = "NAME", help_heading = "Your own chart (router mode)")]
    pub worker: Vec<String>,
    /// The pods each worker runs in the stage slot [default: 0]
    #[arg(long, value_name = "N", help_heading = "Your own chart (router mode)")]
    pub worker_stage_replicas: Option<u64>,
    /// How workers change hands at a swap: overlap (the new start, then the old stop) or
    /// stop-first (the old stop, then the new start: never two versions at once) [default: overlap]
    #[arg(long, value_name = "HOW", value_parser = handover_arg, help_heading = "Your own chart (router mode)")]
    pub handover: Option<Handover>,
    /// Run a chart that renders what is unsafe twice side by side, by name: cluster-scoped,
    /// stateful, jobs, daemonset, delete-hooks (repeat it; `none` accepts nothing again)
    #[arg(long = "accept", value_name = "RISK", value_parser = accept_arg, help_heading = "Your own chart (router mode)")]
    pub accept: Vec<Accept>,
    /// A values file for the router release itself (bgslot's chart: ingress, service, extraServices, ...)
    #[arg(long = "router-values", value_name = "FILE", value_parser = readable_file, help_heading = "Your own chart (router mode)")]
    pub router_values: Vec<PathBuf>,
    /// A value for the router release itself (e.g. ingress.host=web.example.com)
    #[arg(
        long = "router-set",
        value_name = "KEY=VALUE",
        help_heading = "Your own chart (router mode)"
    )]
    pub router_set: Vec<SetArg>,
    /// Start the slot release from the chart's defaults and this deploy's -f/--set alone, not from
    /// production's values (what a CI job that passes its full values file every time wants)
    #[arg(long, help_heading = "Your own chart (router mode)")]
    pub reset_values: bool,
}

/// An `--app-chart` as it is recorded: a local chart (a directory or an archive that exists) by its
/// absolute path, so that a deploy from another directory finds it; a path that does not exist
/// is an error here; a reference (`repo/name`, `oci://...`) as given.
fn app_chart_arg(text: &str) -> Result<String, String> {
    let path = std::path::Path::new(text);
    crate::chart::check_chart_ref("--app-chart", text, path.exists()).map_err(|e| e.0)?;
    if !path.exists() {
        return Ok(text.to_string());
    }
    std::fs::canonicalize(path)
        .map(|p| p.display().to_string())
        .map_err(|e| format!("{text} cannot be read: {e}"))
}

/// One `--service NAME[=ROUTE]`.
fn service_arg(text: &str) -> Result<ServiceArg, String> {
    let (service, route) = match text.split_once('=') {
        Some((service, route)) => (service, Some(route)),
        None => (text, None),
    };
    if service.is_empty() {
        return Err(format!("'{text}' names no Service: use NAME or NAME=ROUTE"));
    }
    if let Some(route) = route {
        let label = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if route.is_empty() || !route.chars().all(label) || route.starts_with('-') || route.ends_with('-') {
            return Err(format!(
                "route '{route}' must be a DNS label (lower-case letters, digits and '-'): it names the router's Services RELEASE-{route}"
            ));
        }
    }
    Ok(ServiceArg {
        service: service.to_string(),
        route: route.map(str::to_string),
    })
}

fn handover_arg(text: &str) -> Result<Handover, String> {
    match text {
        "overlap" => Ok(Handover::Overlap),
        "stop-first" => Ok(Handover::StopFirst),
        other => Err(format!("'{other}' is not a handover: use overlap or stop-first")),
    }
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

impl AppArgs {
    /// The app settings these flags change, as plain values.
    pub fn changes(&self) -> AppChanges {
        AppChanges {
            chart: self.app_chart.clone(),
            version: self.app_chart_version.clone(),
            tag_key: self.tag_key.clone(),
            repository_key: self.repository_key.clone(),
            digest_key: self.digest_key.clone(),
            replicas_key: self.replicas_key.clone(),
            services: (!self.service.is_empty()).then(|| self.service.clone()),
            workers: (!self.worker.is_empty()).then(|| self.worker.clone()),
            worker_stage_replicas: self.worker_stage_replicas,
            handover: self.handover,
            accept: (!self.accept.is_empty()).then(|| {
                self.accept
                    .iter()
                    .filter_map(|a| match a {
                        Accept::Risk(r) => Some(*r),
                        Accept::None => None,
                    })
                    .collect()
            }),
            router_values: self.router_values.clone(),
            router_set: self.router_set.clone(),
            reset_values: self.reset_values,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_paths_are_checked_on_the_command_line() {
        assert_eq!(value_key("image.tag"), Ok("image.tag".into()));
        for bad in ["", "a=b", "a,b", ".a", "a.", "a b"] {
            assert!(value_key(bad).is_err(), "{bad}");
        }
        assert_eq!(optional_value_key(""), Ok(String::new()));
        assert_eq!(accept_arg("none"), Ok(Accept::None));
        assert!(accept_arg("pvc").unwrap_err().contains("cluster-scoped"));
        let none = AppArgs {
            accept: vec![Accept::None],
            ..AppArgs::default()
        };
        assert_eq!(none.changes().accept, Some(Vec::new()));
        assert_eq!(AppArgs::default().changes(), AppChanges::default());
    }

    #[test]
    fn replicas_are_never_zero() {
        assert!(parse_replicas("0").unwrap_err().contains("at least 1"));
        assert!(parse_replicas("-1").is_err());
        assert_eq!(parse_replicas("4"), Ok(4));
    }
}
