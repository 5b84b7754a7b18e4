//! `bgslot post-render` (hidden): what helm runs as the post-renderer of a slot release written
//! as stage, never a person. It reads the rendered manifests on stdin and prints them with the
//! workers at the stage's replicas and every CronJob suspended; a failure fails helm's write
//! before anything is applied.

use std::io::{Read, Write};

use anyhow::{Context, Result};

use super::Invocation;
use crate::helm::AsStage;
use crate::slots::router::as_stage::post_render;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The replicas each worker runs in the stage slot
    #[arg(long, value_name = "N")]
    pub replicas: u64,
    /// A worker Deployment, by name
    #[arg(long = "worker", value_name = "NAME")]
    pub workers: Vec<String>,
}

impl Args {
    pub async fn run(&self, _run: &Invocation<'_>) -> Result<()> {
        let mut manifest = String::new();
        std::io::stdin()
            .read_to_string(&mut manifest)
            .context("reading the rendered manifests helm passed on stdin")?;
        let as_stage = AsStage {
            workers: self.workers.clone(),
            replicas: self.replicas,
        };
        let out = post_render(&manifest, &as_stage).map_err(anyhow::Error::msg)?;
        std::io::stdout()
            .write_all(out.as_bytes())
            .context("writing the manifests back to helm")
    }
}
