//! The one printer: every command returns a typed report that serializes as JSON and displays as
//! text, and this module chooses between them, so the two forms can never disagree. Errors are
//! rendered here too, once, in either form.
//!
//! Output to a closed pipe (`bgslot history web | head -1`) ends quietly instead of panicking.

use std::fmt::{self, Display};
use std::io::{self, Write};

use serde::Serialize;

use crate::cli::OutputFormat;
use crate::error::{self, ExitStatus, LockHeld, Operation, Refusal};

/// Prints `report` on stdout in `format`. A reader that went away is not an error.
pub fn print<R: Serialize + Display>(report: &R, format: OutputFormat) -> anyhow::Result<()> {
    let text = match format {
        OutputFormat::Json => serde_json::to_string_pretty(report)? + "\n",
        OutputFormat::Text => report.to_string(),
    };
    write_quietly(&mut io::stdout().lock(), &text)?;
    Ok(())
}

/// Text exactly as given on stdout (a frame of `status --watch`). Returns whether the reader is
/// still there, so a watch can end when it goes away.
pub fn print_raw(text: &str) -> anyhow::Result<bool> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// A progress line on stderr (stdout carries the result). A closed stderr loses the line only.
pub fn progress(line: &str) {
    let _ = write_quietly(&mut io::stderr().lock(), &format!("{line}\n"));
}

fn write_quietly(out: &mut impl Write, text: &str) -> io::Result<()> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// How waiting is shown on stderr: on a terminal, a live bar per slot that ends in one line; in
/// a log (not a terminal, or `TERM=dumb`), a plain line per change.
pub struct Waiting {
    bars: Option<Bars>,
}

struct Bars {
    multi: indicatif::MultiProgress,
    by_slot: std::collections::BTreeMap<crate::values::Slot, indicatif::ProgressBar>,
}

impl Waiting {
    pub fn on_stderr() -> Waiting {
        use std::io::IsTerminal;
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        let bars = (io::stderr().is_terminal() && !dumb).then(|| Bars {
            multi: indicatif::MultiProgress::with_draw_target(
                indicatif::ProgressDrawTarget::stderr(),
            ),
            by_slot: Default::default(),
        });
        Waiting { bars }
    }

    fn bar(bars: &mut Bars, slot: crate::values::Slot) -> &indicatif::ProgressBar {
        bars.by_slot.entry(slot).or_insert_with(|| {
            // No colour: the bar reads the same with NO_COLOR, in any terminal.
            let style = indicatif::ProgressStyle::with_template(
                "{prefix:<6} ▕{bar:20}▏ {pos}/{len} ready  {elapsed:>4}{msg}",
            )
            .expect("a valid template")
            .progress_chars("█▉▊▋▌▍▎▏ ");
            let bar = bars.multi.add(indicatif::ProgressBar::new(0));
            bar.set_style(style);
            bar.set_prefix(slot.to_string());
            bar.enable_steady_tick(std::time::Duration::from_millis(250));
            bar
        })
    }
}

impl crate::wait::Reporter for Waiting {
    fn slot(
        &mut self,
        slot: crate::values::Slot,
        state: &crate::cluster::SlotState,
        reasons: &[String],
    ) {
        match &mut self.bars {
            Some(bars) => {
                let bar = Self::bar(bars, slot);
                bar.set_length(state.desired.max(0) as u64);
                bar.set_position(state.ready.clamp(0, state.desired.max(0)) as u64);
                bar.set_message(crate::wait::rollout_detail(state, reasons));
            }
            None => progress(&crate::wait::progress_line(slot, state, reasons)),
        }
    }

    fn done(&mut self, slot: crate::values::Slot, state: &crate::cluster::SlotState) {
        if let Some(bars) = &mut self.bars {
            let bar = Self::bar(bars, slot);
            bar.set_length(state.desired.max(0) as u64);
            bar.set_position(state.desired.max(0) as u64);
            bar.finish_with_message("");
        }
    }

    fn note(&mut self, text: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.multi.println(text);
            }
            None => progress(text),
        }
    }
}

impl Drop for Waiting {
    /// A wait that ended early (a timeout, a signal) leaves its bars as they last were.
    fn drop(&mut self) {
        for bar in self.bars.iter().flat_map(|b| b.by_slot.values()) {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}

/// An error as `-o json` reports it; its `Display` is the text form.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorReport {
    pub error: String,
    pub caused_by: Vec<String>,
    pub hint: Option<String>,
    pub exit_code: i32,
    pub kind: &'static str,
}

impl ErrorReport {
    pub fn new(err: &anyhow::Error) -> ErrorReport {
        let status = ExitStatus::of(err);
        let chain: Vec<String> = chain_kinds(err).map(|c| c.to_string()).collect();
        // A refusal or a held lock says what happened and leads, prefixed with the operation it
        // stopped; other errors lead with the operation and list their causes.
        let lead_at = chain_kinds(err).position(|c| c.is::<Refusal>() || c.is::<LockHeld>());
        let (lead, rest) = match lead_at {
            Some(i) => {
                let op = err.downcast_ref::<Operation>();
                let verb = if status == ExitStatus::Locked {
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
            writeln!(f, "  nothing was changed")?;
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
            let _ = write_quietly(&mut io::stdout().lock(), &(json + "\n"));
        }
        OutputFormat::Text => {
            let _ = write_quietly(&mut io::stderr().lock(), &report.to_string());
        }
    }
}

/// The error chain as shown. kube's API errors repeat themselves (`ApiError: msg: Reason
/// (Status {..})`, then the Status as their source): keep the source only.
fn chain_kinds(err: &anyhow::Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    err.chain()
        .filter(|c| !matches!(c.downcast_ref::<kube::Error>(), Some(kube::Error::Api(_))))
}

/// Lays rows out in aligned columns, as `kubectl get` does.
pub fn table<const N: usize>(rows: &[[String; N]], indent: &str) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(indent);
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn a_refusal_leads_with_the_operation_and_keeps_its_hint() {
        let err = Err::<(), _>(Refusal::new("nothing is staged", "deploy first"))
            .context(Operation {
                op: "swap",
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

    #[test]
    fn a_closed_pipe_is_not_an_error() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        assert!(write_quietly(&mut Closed, "REV  UPDATED\n").is_ok());
    }

    #[test]
    fn tables_align() {
        let rows = [["A".to_string(), "BB".into()], ["ccc".into(), "d".into()]];
        assert_eq!(table(&rows, "  "), "  A    BB\n  ccc  d\n");
    }
}
