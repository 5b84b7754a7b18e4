//! bgslot: boring, safe blue/green releases on Kubernetes with Helm.
//!
//! `cli` parses, `plan` decides, `helm` and `cluster` do the I/O, `ops` strings them together per
//! command. `run` is the single entry point the binary calls.

pub mod chart;
pub mod cli;
pub mod cluster;
pub mod context;
pub mod duration;
pub mod error;
pub mod helm;
pub mod lock;
pub mod names;
pub mod ops;
pub mod plan;
pub mod signals;
pub mod values;
pub mod wait;

use anyhow::{Context, Result};
use clap::CommandFactory;
use serde_json::json;

use crate::cli::{ChartCommand, Cli, Command};
use crate::context::Ctx;
use crate::ops::Outcome;

/// Runs one command and prints its outcome; errors are printed by the caller.
pub async fn run(mut cli: Cli) -> Result<()> {
    signals::install();
    cli.global = cli.global.without_empty_values();
    let outcome = dispatch(&cli).await?;
    match cli.global.output {
        cli::OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&outcome.json)?),
        cli::OutputFormat::Text => print!("{}", outcome.text),
    }
    Ok(())
}

fn release_name(name: &str) -> Result<&str> {
    names::validate_release(name)?;
    Ok(name)
}

async fn dispatch(cli: &Cli) -> Result<Outcome> {
    let global = &cli.global;
    match &cli.command {
        Command::Version => Ok(Outcome {
            json: json!({"bgslot": env!("CARGO_PKG_VERSION"), "chart": chart::embedded_id()}),
            text: format!(
                "bgslot {} (chart {})\n",
                env!("CARGO_PKG_VERSION"),
                chart::embedded_id()
            ),
        }),
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "bgslot", &mut buf);
            let text = String::from_utf8(buf).context("completions are UTF-8")?;
            Ok(Outcome {
                json: json!({"shell": shell.to_string(), "script": text}),
                text,
            })
        }
        Command::Chart(ChartCommand::Export { dir }) => {
            let count = chart::export(dir)
                .with_context(|| format!("exporting the chart to {}", dir.display()))?;
            Ok(Outcome {
                json: json!({"chart": chart::embedded_id(), "dir": dir, "files": count}),
                text: format!(
                    "wrote chart {} ({count} files) to {}\n",
                    chart::embedded_id(),
                    dir.display()
                ),
            })
        }
        Command::Status(a) => {
            let release = release_name(&a.release)?;
            let ctx = Ctx::connect(global).await?;
            ops::status(&ctx, release)
                .await
                .with_context(|| in_ns("status", release, &ctx))
        }
        Command::History(a) => {
            let release = release_name(&a.release)?;
            let ctx = Ctx::connect(global).await?;
            ops::history(&ctx, release)
                .await
                .with_context(|| in_ns("history", release, &ctx))
        }
        Command::Deploy(a) => {
            release_name(&a.release)?;
            ops::deploy_request(&a.image)?;
            let ctx = Ctx::connect(global).await?;
            ops::deploy(&ctx, a)
                .await
                .with_context(|| in_ns("deploy", &a.release, &ctx))
        }
        Command::Swap(a) => {
            release_name(&a.release)?;
            if let Some(tag) = &a.expect_tag {
                names::validate_tag(tag).context("--expect-tag")?;
            }
            let ctx = Ctx::connect(global).await?;
            ops::swap(&ctx, a)
                .await
                .with_context(|| in_ns("swap", &a.release, &ctx))
        }
        Command::Clean(a) => {
            release_name(&a.release)?;
            let ctx = Ctx::connect(global).await?;
            ops::clean(&ctx, a)
                .await
                .with_context(|| in_ns("clean", &a.release, &ctx))
        }
        Command::Rollback(a) => {
            release_name(&a.release)?;
            let ctx = Ctx::connect(global).await?;
            ops::rollback(&ctx, a)
                .await
                .with_context(|| in_ns("rollback", &a.release, &ctx))
        }
        Command::Release(a) => {
            release_name(&a.release)?;
            ops::deploy_request(&a.image)?;
            ops::verify_argv(a.verify_cmd.as_deref())?;
            let ctx = Ctx::connect(global).await?;
            ops::release(&ctx, a)
                .await
                .with_context(|| in_ns("release", &a.release, &ctx))
        }
        Command::Recover(a) => {
            let release = release_name(&a.release)?;
            let ctx = Ctx::connect(global).await?;
            ops::recover(&ctx, a)
                .await
                .with_context(|| in_ns("recover", release, &ctx))
        }
    }
}

fn in_ns(op: &'static str, release: &str, ctx: &Ctx) -> error::Operation {
    error::Operation {
        op,
        release: release.to_string(),
        namespace: ctx.namespace.clone(),
    }
}

/// The error chain as `render_error` shows it. kube's API errors repeat themselves
/// (`ApiError: msg: Reason (Status {..})`, then the Status as their source): keep the source only.
fn chain_kinds(err: &anyhow::Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    err.chain()
        .filter(|c| !matches!(c.downcast_ref::<kube::Error>(), Some(kube::Error::Api(_))))
}

/// Renders an error as `error: ...` followed by `caused by:` lines and a hint, or as JSON.
pub fn render_error(err: &anyhow::Error, json_output: bool) -> String {
    let code = error::exit_code(err);
    let chain: Vec<String> = chain_kinds(err).map(|c| c.to_string()).collect();
    // A refusal or lock message says what happened and leads, prefixed with the operation it
    // stopped; other errors lead with the operation and list their causes.
    let (lead, rest) = match chain_kinds(err)
        .position(|c| c.is::<error::Refusal>() || c.is::<error::LockHeld>())
    {
        Some(i) => {
            let op = err.downcast_ref::<error::Operation>();
            let verb = if code == error::exit::LOCKED {
                "cannot"
            } else {
                "refused to"
            };
            let lead = match op {
                Some(op) => format!(
                    "{verb} {} {} in namespace {}: {}",
                    op.op, op.release, op.namespace, chain[i]
                ),
                None => chain[i].clone(),
            };
            let skip_first = op.is_some();
            let others = chain
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i && !(skip_first && *j == 0))
                .map(|(_, c)| c.clone())
                .collect();
            (lead, others)
        }
        None => (chain[0].clone(), chain[1..].to_vec()),
    };
    let hint = error::hint(err);
    if json_output {
        return serde_json::to_string_pretty(&json!({
            "error": lead, "caused_by": rest, "hint": hint, "exit_code": code,
            "kind": match code { 3 => "refused", 4 => "locked", 2 => "usage", _ => "failed" },
        }))
        .unwrap_or_default();
    }
    let mut out = format!("error: {lead}\n");
    for cause in rest {
        for (i, line) in cause.lines().enumerate() {
            if i == 0 {
                out.push_str(&format!("  caused by: {line}\n"));
            } else {
                out.push_str(&format!("             {line}\n"));
            }
        }
    }
    if let Some(hint) = hint {
        out.push_str(&format!("  hint: {hint}\n"));
    }
    if code == error::exit::REFUSED {
        out.push_str("  nothing was changed\n");
    }
    out
}
