//! The flags that say what a deploy stages and how (shared with `release`), each value parsed and
//! checked on the command line so a malformed one is a usage error naming the flag.

use std::path::PathBuf;

use super::decide::{DeployRequest, Version};
use crate::names::{ImageRef, SetArg, Tag};

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
    pub app: crate::commands::router::AppArgs,
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
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_never_zero() {
        assert!(parse_replicas("0").unwrap_err().contains("at least 1"));
        assert!(parse_replicas("-1").is_err());
        assert_eq!(parse_replicas("4"), Ok(4));
    }
}
