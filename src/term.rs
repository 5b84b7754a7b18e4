//! The terminal floor: writing to stdout and stderr, where a reader that went away (`bgslot
//! history web | head -1`) ends the output quietly instead of panicking or failing. Imports only
//! std; the printer (`output`) is built on it, and reports lay out their tables with it.

use std::io::{self, Write};

/// Writes `text` and flushes; a closed pipe is not an error.
pub fn write_quietly(out: &mut impl Write, text: &str) -> io::Result<()> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// A line on stderr (stdout carries the result). A closed stderr loses the line only.
pub fn stderr_line(line: &str) {
    let _ = write_quietly(&mut io::stderr().lock(), &format!("{line}\n"));
}

/// Text on stdout; a closed stdout is not an error.
pub fn stdout(text: &str) -> io::Result<()> {
    write_quietly(&mut io::stdout().lock(), text)
}

/// Text on stdout, exactly as given; returns whether the reader is still there, so a watch can
/// end when it goes away.
pub fn stdout_while_read(text: &str) -> io::Result<bool> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(err) => Err(err),
    }
}

/// Whether stderr is a terminal that can draw (not `TERM=dumb`).
pub fn stderr_draws() -> bool {
    use std::io::IsTerminal;
    let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
    io::stderr().is_terminal() && !dumb
}

/// Whether stdout is a terminal (a watch redraws in place there).
pub fn stdout_is_terminal() -> bool {
    use std::io::IsTerminal;
    io::stdout().is_terminal()
}

/// Lays rows out in aligned columns, as `kubectl get` does.
pub fn table<R: AsRef<[String]>>(rows: &[R], indent: &str) -> String {
    let columns = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.as_ref().get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .as_ref()
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
