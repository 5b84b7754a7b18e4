//! The one printer: every command returns a typed report that serializes as JSON and displays as
//! text, and this module chooses between them, so the two forms can never disagree. It is also
//! the event sink the lower layers report progress to (a live bar per slot on a terminal, a line
//! per event in a log), and it renders errors, once, in either form.

use std::collections::BTreeMap;
use std::fmt::{self, Display};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use serde::Serialize;

use crate::commands::{Report, Ui};
use crate::error::{self, ExitStatus, LockHeld, LockLost, Operation, Refusal};
use crate::events::{Event, Events, Rollout};
use crate::fleet::{self, report::TargetRow};
use crate::term;
use crate::vocab::Slot;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// Prints reports on stdout and progress on stderr.
pub struct Printer {
    format: OutputFormat,
    progress: Arc<Progress>,
    /// A watch has printed a frame already.
    framed: AtomicBool,
}

impl Printer {
    pub fn new(format: OutputFormat) -> Printer {
        Printer {
            format,
            progress: Arc::new(Progress::on_stderr()),
            framed: AtomicBool::new(false),
        }
    }

    /// Leaves unfinished bars as they last were (a wait that ended early), before the final
    /// report or error is printed.
    pub fn finish(&self) {
        self.progress.abandon();
    }

    fn text(&self, report: &dyn Report, pretty: bool) -> Result<String> {
        Ok(match self.format {
            OutputFormat::Json => report.json(pretty)? + "\n",
            OutputFormat::Text => report.to_string(),
        })
    }
}

impl Ui for Printer {
    fn events(&self) -> Arc<dyn Events> {
        self.progress.clone()
    }

    fn print(&self, report: &dyn Report) -> Result<()> {
        self.finish();
        term::stdout(&self.text(report, true)?)?;
        Ok(())
    }

    /// A terminal shows the latest frame only (home and clear, then the frame); a log gets one
    /// frame after another, text frames separated by a blank line, JSON one document per line.
    fn frame(&self, report: &dyn Report) -> Result<bool> {
        let text = self.text(report, false)?;
        let first = !self.framed.swap(true, Ordering::Relaxed);
        let frame = match self.format {
            OutputFormat::Text if term::stdout_is_terminal() => format!("\x1b[H\x1b[2J{text}"),
            OutputFormat::Text if !first => format!("\n{text}"),
            _ => text,
        };
        Ok(term::stdout_while_read(&frame)?)
    }
}

/// Progress on stderr: on a terminal, a live bar per slot that ends in one line; in a log (not a
/// terminal, or `TERM=dumb`), a plain line per change.
struct Progress {
    bars: Option<Mutex<Bars>>,
}

struct Bars {
    multi: indicatif::MultiProgress,
    /// A bar per slot's web pods and per slot's worker (of each target, across clusters).
    by_slot: BTreeMap<(Option<String>, Slot, Option<String>), indicatif::ProgressBar>,
}

impl Progress {
    fn on_stderr() -> Progress {
        let bars = term::stderr_draws().then(|| {
            Mutex::new(Bars {
                multi: indicatif::MultiProgress::with_draw_target(
                    indicatif::ProgressDrawTarget::stderr(),
                ),
                by_slot: BTreeMap::new(),
            })
        });
        Progress { bars }
    }

    fn line(&self, text: &str) {
        match &self.bars {
            Some(bars) => {
                let bars = bars.lock().expect("progress bars");
                if bars.by_slot.is_empty() {
                    term::stderr_line(text);
                } else {
                    let _ = bars.multi.println(text);
                }
            }
            None => term::stderr_line(text),
        }
    }

    fn abandon(&self) {
        if let Some(bars) = &self.bars {
            let mut bars = bars.lock().expect("progress bars");
            for bar in bars.by_slot.values().filter(|b| !b.is_finished()) {
                bar.abandon();
            }
            bars.by_slot.clear();
        }
    }
}

impl Bars {
    fn bar(&mut self, rollout: &Rollout) -> &indicatif::ProgressBar {
        let multi = &self.multi;
        let label = rollout.label();
        self.by_slot
            .entry((rollout.target.clone(), rollout.slot, rollout.worker.clone()))
            .or_insert_with(|| {
                // No colour: the bar reads the same with NO_COLOR, in any terminal.
                let style = indicatif::ProgressStyle::with_template(
                    "{prefix:<6} ▕{bar:20}▏ {pos}/{len} ready  {elapsed:>4}{msg}",
                )
                .expect("a valid template")
                .progress_chars("█▉▊▋▌▍▎▏ ");
                let bar = multi.add(indicatif::ProgressBar::new(0));
                bar.set_style(style);
                bar.set_prefix(label);
                bar.enable_steady_tick(std::time::Duration::from_millis(250));
                bar
            })
    }

    fn show(&mut self, rollout: &Rollout, done: bool) {
        let desired = rollout.desired.max(0) as u64;
        let bar = self.bar(rollout);
        bar.set_length(desired);
        if done {
            bar.set_position(desired);
            bar.finish_with_message("");
        } else {
            bar.set_position((rollout.ready.max(0) as u64).min(desired));
            bar.set_message(rollout.detail.clone());
        }
    }
}

impl Events for Progress {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Step(text) | Event::Command(text) => self.line(text),
            Event::Warning(text) => self.line(&format!("warning: {text}")),
            Event::Rollout(rollout) => match &self.bars {
                Some(bars) => bars.lock().expect("progress bars").show(rollout, false),
                None => term::stderr_line(&rollout.line()),
            },
            Event::RolloutDone(rollout) => {
                if let Some(bars) = &self.bars {
                    bars.lock().expect("progress bars").show(rollout, true);
                }
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// An error as `-o json` reports it; its `Display` is the text form.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorReport {
    pub error: String,
    pub caused_by: Vec<String>,
    pub hint: Option<String>,
    pub exit_code: i32,
    pub kind: &'static str,
    /// A run across several clusters: its ID (absent for a run on one release).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// A run across several clusters: what each target was left as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<TargetRow>>,
    /// The same as a table, for the text form.
    #[serde(skip)]
    pub table: Option<String>,
}

impl ErrorReport {
    pub fn new(err: &anyhow::Error) -> ErrorReport {
        if let Some(failed) = err.downcast_ref::<fleet::report::Failed>() {
            let across = &failed.across;
            return ErrorReport {
                error: across.error.clone(),
                caused_by: across.caused_by.clone(),
                hint: across.hint.clone(),
                exit_code: across.status.code(),
                kind: across.status.kind(),
                run: Some(across.run.clone()),
                targets: Some(failed.rows.clone()),
                table: Some(failed.table.clone()),
            };
        }
        let status = ExitStatus::of(err);
        let chain: Vec<String> = chain_kinds(err).map(|c| c.to_string()).collect();
        // A refusal or a lock taken by another says what happened and leads, prefixed with the
        // operation it stopped; other errors lead with the operation and list their causes.
        let lead_at = chain_kinds(err)
            .position(|c| c.is::<Refusal>() || c.is::<LockHeld>() || c.is::<LockLost>());
        let (lead, rest) = match lead_at {
            Some(i) => {
                let op = err.downcast_ref::<Operation>();
                let lead = match (op, status) {
                    // A refusal after a write: the command stopped part way.
                    (Some(op), ExitStatus::Failed) => format!(
                        "{} {} in namespace {} stopped: {}",
                        op.op, op.release, op.namespace, chain[i]
                    ),
                    (Some(op), _) => format!(
                        "{} {} {} in namespace {}: {}",
                        if status == ExitStatus::Locked {
                            "cannot"
                        } else {
                            "refused to"
                        },
                        op.op,
                        op.release,
                        op.namespace,
                        chain[i]
                    ),
                    (None, _) => chain[i].clone(),
                };
                let rest = chain
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i && !(op.is_some() && *j == 0))
                    .map(|(_, c)| c.clone())
                    .collect();
                (lead, rest)
            }
            None => (chain[0].clone(), chain[1..].to_vec()),
        };
        ErrorReport {
            error: lead,
            caused_by: rest,
            hint: error::hint(err),
            exit_code: status.code(),
            kind: status.kind(),
            run: None,
            targets: None,
            table: None,
        }
    }

    /// A command line clap rejected, for `-o json` readers.
    pub fn usage(message: &str) -> ErrorReport {
        let first = message
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("invalid command line");
        ErrorReport {
            error: first.trim_start_matches("error: ").to_string(),
            caused_by: Vec::new(),
            hint: Some("run with --help to see the usage".into()),
            exit_code: ExitStatus::Usage.code(),
            kind: ExitStatus::Usage.kind(),
            run: None,
            targets: None,
            table: None,
        }
    }
}

impl Display for ErrorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.error)?;
        for cause in &self.caused_by {
            for (i, line) in cause.lines().enumerate() {
                let lead = if i == 0 {
                    "  caused by: "
                } else {
                    "             "
                };
                writeln!(f, "{lead}{line}")?;
            }
        }
        if let Some(hint) = &self.hint {
            writeln!(f, "  hint: {hint}")?;
        }
        if self.exit_code == ExitStatus::Refused.code() {
            let anywhere = if self.targets.is_some() {
                " anywhere"
            } else {
                ""
            };
            writeln!(f, "  nothing was changed{anywhere}")?;
        }
        if let Some(table) = &self.table {
            write!(f, "{table}")?;
        }
        Ok(())
    }
}

/// Prints an error once: as JSON on stdout for `-o json` (so a pipeline always gets a document),
/// else as text on stderr.
pub fn print_error(report: &ErrorReport, format: OutputFormat) {
    match format {
        OutputFormat::Json => {
            let json = serde_json::to_string_pretty(report).unwrap_or_default();
            let _ = term::stdout(&(json + "\n"));
        }
        OutputFormat::Text => {
            let _ = term::write_quietly(&mut io::stderr().lock(), &report.to_string());
        }
    }
}

/// The error chain as shown. kube's API errors repeat themselves (`ApiError: msg: Reason
/// (Status {..})`, then the Status as their source): keep the source only.
fn chain_kinds(err: &anyhow::Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    err.chain()
        .filter(|c| !matches!(c.downcast_ref::<kube::Error>(), Some(kube::Error::Api(_))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::Op;
    use anyhow::Context;

    #[test]
    fn a_refusal_leads_with_the_operation_and_keeps_its_hint() {
        let err = Err::<(), _>(Refusal::new("nothing is staged", "deploy first"))
            .context(Operation {
                op: Op::Swap,
                release: "web".into(),
                namespace: "shop".into(),
            })
            .unwrap_err();
        let report = ErrorReport::new(&err);
        assert_eq!(
            report.error,
            "refused to swap web in namespace shop: nothing is staged"
        );
        assert_eq!(report.caused_by, Vec::<String>::new());
        assert_eq!((report.exit_code, report.kind), (3, "refused"));
        assert_eq!(
            report.to_string(),
            "error: refused to swap web in namespace shop: nothing is staged\n  hint: deploy first\n  nothing was changed\n"
        );
    }

    #[test]
    fn a_refusal_after_a_write_says_the_command_stopped_and_what_it_did() {
        let err = error::after_writes(
            Refusal::new("production (green) is not fully available", "wait for it").into(),
            vec!["`bgslot swap: production blue -> green` (helm upgrade of web)".into()],
        )
        .context(Operation {
            op: Op::Release,
            release: "web".into(),
            namespace: "shop".into(),
        });
        let report = ErrorReport::new(&err);
        assert_eq!((report.exit_code, report.kind), (1, "failed"));
        assert_eq!(
            report.to_string(),
            "error: release web in namespace shop stopped: production (green) is not fully available\n  caused by: stopped after writing; already done: `bgslot swap: production blue -> green` (helm upgrade of web)\n  hint: wait for it\n"
        );
    }

    #[test]
    fn a_lost_lock_leads_with_what_was_done_and_what_was_not() {
        let lost = LockLost {
            lease: "bgslot-lock-web".into(),
            namespace: "shop".into(),
            holder: Some("bob@ci pid 7 (swap)".into()),
            done: vec!["`bgslot deploy green v2` (helm upgrade of web)".into()],
            not_done: "`bgslot swap blue->green` (helm upgrade of web)".into(),
        };
        let err = anyhow::Error::new(lost).context(Operation {
            op: Op::Release,
            release: "web".into(),
            namespace: "shop".into(),
        });
        let report = ErrorReport::new(&err);
        assert_eq!((report.exit_code, report.kind), (4, "locked"));
        assert_eq!(
            report.error,
            "cannot release web in namespace shop: lost the release lock (Lease shop/bgslot-lock-web, now held by bob@ci pid 7 (swap)); stopped before: `bgslot swap blue->green` (helm upgrade of web); already done: `bgslot deploy green v2` (helm upgrade of web)"
        );
    }

    #[test]
    fn a_failure_lists_its_causes_line_by_line() {
        let err = anyhow::anyhow!("Error: UPGRADE FAILED\nsecond line")
            .context("`helm upgrade web` failed (exit 1)");
        let report = ErrorReport::new(&err);
        assert_eq!(report.kind, "failed");
        assert_eq!(
            report.to_string(),
            "error: `helm upgrade web` failed (exit 1)\n  caused by: Error: UPGRADE FAILED\n             second line\n"
        );
    }
}
