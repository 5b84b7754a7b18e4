//! The node's record of every app's life: `DIR/pod-events.jsonl`, beside `services.json`, one JSON
//! object per line, appended by the kubelet as it acts and written whole per line (one `write(2)`
//! on a file opened for appending), so a test can read it while things run. Tests use it to prove
//! what the node really did to a process: that it got SIGTERM, how long it had, whether it was
//! SIGKILLed, and when two pods' processes overlapped.
//!
//! Every line has these fields:
//!
//! - `t`: when, as RFC 3339 in UTC with exactly 6 fraction digits
//!   (`2025-01-31T09:15:02.123456Z`), from the machine's real-time clock (the clock of the unix
//!   times in `proxy-events.jsonl`). The fixed width makes comparing two `t` strings compare the
//!   times. Each `t` is read while the record is locked, so lines are in the order of their `t`.
//! - `event`: `started`, `sigterm`, `sigkill` or `exited`.
//! - `pod`: NAMESPACE/NAME; `uid`: the pod's uid; `pid`: the app's process id (a restarted
//!   container is a new `started` with a new pid).
//!
//! and by `event`:
//!
//! - `started`: `labels`, the pod's labels. `t` is read just before the process is created, so
//!   from `started` to `exited` covers the whole life of the process.
//! - `sigterm`: `grace_period_s`, the pod's grace period (counted from when its deletion began, as
//!   a kubelet counts it, `--max-grace` applied), and `kill_after_s`, how long after this SIGTERM
//!   the kubelet sends SIGKILL if the app still runs (less than the grace period after a preStop
//!   hook; 2 s when the hook used it all). Both in seconds, to the millisecond.
//! - `sigkill`: `reason`: `grace_period_over`, `pod_vanished` (the pod object went away without
//!   a graceful deletion, or during one), `kubelet_stopping` (the kubelet got SIGTERM or SIGINT,
//!   `testenv down`; it ends without waiting for its apps, and no line about them follows), or
//!   `start_failed` (the app did not listen in time).
//! - `exited`: `code` (the exit code, or `null`) and `signal` (`"SIGKILL"`, `"SIGTERM"`, …, or
//!   `null`): what ended the process. `t` is read once the kubelet has reaped it.
//!
//! ```text
//! {"t":"2025-01-31T09:15:02.123456Z","event":"started","pod":"shop/web-blue-5d9f-x7k2p","uid":"0b6e…","pid":4242,"labels":{"bgslot/slot":"blue"}}
//! {"t":"2025-01-31T09:15:09.500000Z","event":"sigterm","pod":"shop/web-blue-5d9f-x7k2p","uid":"0b6e…","pid":4242,"grace_period_s":30.0,"kill_after_s":25.0}
//! {"t":"2025-01-31T09:15:11.502000Z","event":"exited","pod":"shop/web-blue-5d9f-x7k2p","uid":"0b6e…","pid":4242,"code":0,"signal":null}
//! {"t":"2025-01-31T09:15:12.000000Z","event":"sigkill","pod":"shop/worker-1","uid":"7c1d…","pid":4250,"reason":"grace_period_over"}
//! ```
//!
//! Every line parses into [`PodEvent`] (a reader outside this crate copies that struct: each
//! field but the common five may be absent). Pods that run to completion (Jobs) have no process
//! here, so no lines; a kubelet that is itself SIGKILLed writes nothing for the apps that die with
//! it. `testenv pod-events` prints the record.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The record's file name in the environment's directory.
pub const EVENTS_FILE: &str = "pod-events.jsonl";

/// Why the kubelet SIGKILLed an app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillReason {
    GracePeriodOver,
    PodVanished,
    KubeletStopping,
    StartFailed,
}

/// Which app an event is about.
#[derive(Clone, Debug)]
pub struct Subject {
    /// NAMESPACE/NAME.
    pub pod: String,
    pub uid: String,
    pub pid: i32,
}

/// What happened, with what only that event has.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum What {
    Started {
        labels: BTreeMap<String, String>,
    },
    Sigterm {
        grace_period_s: f64,
        kill_after_s: f64,
    },
    Sigkill {
        reason: KillReason,
    },
    Exited {
        code: Option<i32>,
        signal: Option<String>,
    },
}

impl What {
    fn name(&self) -> &'static str {
        match self {
            What::Started { .. } => "started",
            What::Sigterm { .. } => "sigterm",
            What::Sigkill { .. } => "sigkill",
            What::Exited { .. } => "exited",
        }
    }

    pub fn sigterm(grace: Duration, kill_after: Duration) -> What {
        // To the millisecond: the microseconds between the deadline's start and this SIGTERM
        // are noise to a reader.
        let ms = |d: Duration| (d.as_secs_f64() * 1000.0).round() / 1000.0;
        What::Sigterm {
            grace_period_s: ms(grace),
            kill_after_s: ms(kill_after),
        }
    }

    pub fn exited(status: std::process::ExitStatus) -> What {
        use std::os::unix::process::ExitStatusExt;
        What::Exited {
            code: status.code(),
            signal: status.signal().map(signal_name),
        }
    }
}

/// One line as written.
#[derive(Serialize)]
struct Line<'a> {
    t: String,
    event: &'static str,
    pod: &'a str,
    uid: &'a str,
    pid: i32,
    #[serde(flatten)]
    what: &'a What,
}

/// One line as read back: the shape to copy for reading the record.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct PodEvent {
    /// RFC 3339, UTC, 6 fraction digits.
    pub t: String,
    /// `started`, `sigterm`, `sigkill` or `exited`.
    pub event: String,
    /// NAMESPACE/NAME.
    pub pod: String,
    pub uid: String,
    pub pid: i32,
    /// `started`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `sigterm`.
    pub grace_period_s: Option<f64>,
    /// `sigterm`.
    pub kill_after_s: Option<f64>,
    /// `sigkill`: `grace_period_over`, `pod_vanished`, `kubelet_stopping` or `start_failed`.
    pub reason: Option<String>,
    /// `exited`.
    pub code: Option<i32>,
    /// `exited`.
    pub signal: Option<String>,
}

/// `t`'s format: RFC 3339, UTC, always 6 fraction digits.
pub fn format_time(t: Timestamp) -> String {
    format!("{t:.6}")
}

/// The usual name of signal `sig` (`SIG<n>` for the unusual ones).
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => return format!("SIG{sig}"),
    };
    name.to_string()
}

/// The open record.
pub struct PodEvents {
    file: Mutex<File>,
}

impl PodEvents {
    /// Opens `DIR/pod-events.jsonl` for appending (a restarted kubelet carries on the record).
    pub fn open(dir: &Path) -> Result<PodEvents> {
        let path = dir.join(EVENTS_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(PodEvents {
            file: Mutex::new(file),
        })
    }

    /// Reads the clock, does `act` (sending a signal, creating a process) and records the event
    /// `act` returns, all under the record's lock: the time is taken just before the act, and
    /// the lines stay in the order of their times. `act` must be quick; it returns `None` (and
    /// nothing is recorded) when it did not happen.
    pub fn around<R>(&self, act: impl FnOnce() -> (R, Option<(Subject, What)>)) -> R {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let t = Timestamp::now();
        let (result, event) = act();
        if let Some((subject, what)) = event {
            let line = line(t, &subject, &what);
            if let Err(e) = file.write_all(line.as_bytes()) {
                eprintln!("kubelet: writing {EVENTS_FILE}: {e}");
            }
        }
        result
    }

    /// Records `what` happening to `subject` now.
    pub fn record(&self, subject: &Subject, what: What) {
        self.around(|| ((), Some((subject.clone(), what))));
    }
}

/// The JSON line, with its newline.
fn line(t: Timestamp, subject: &Subject, what: &What) -> String {
    let mut line = serde_json::to_string(&Line {
        t: format_time(t),
        event: what.name(),
        pod: &subject.pod,
        uid: &subject.uid,
        pid: subject.pid,
        what,
    })
    .expect("an event serializes");
    line.push('\n');
    line
}

/// Reads every line of `DIR/pod-events.jsonl` (none when the file is missing), as written and
/// parsed.
pub fn read(dir: &Path) -> Result<Vec<(String, PodEvent)>> {
    let path = dir.join(EVENTS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let event = serde_json::from_str(l)
                .with_context(|| format!("{}, line {}: {l}", path.display(), i + 1))?;
            Ok((l.to_string(), event))
        })
        .collect()
}

/// One event as a line for people: time, event, pod, pid and what only that event has.
pub fn describe(e: &PodEvent) -> String {
    let detail = match e.event.as_str() {
        "started" => e
            .labels
            .get(crate::kubelet::spec::SLOT_LABEL)
            .map(|s| format!("slot {s}"))
            .unwrap_or_default(),
        "sigterm" => format!(
            "grace {}s, SIGKILL after {}s",
            e.grace_period_s.unwrap_or_default(),
            e.kill_after_s.unwrap_or_default()
        ),
        "sigkill" => e.reason.clone().unwrap_or_default(),
        "exited" => match (&e.code, &e.signal) {
            (Some(code), _) => format!("code {code}"),
            (None, Some(signal)) => signal.clone(),
            (None, None) => String::new(),
        },
        _ => String::new(),
    };
    format!("{} {:<7} {} pid {} {detail}", e.t, e.event, e.pod, e.pid)
        .trim_end()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> Subject {
        Subject {
            pod: "shop/worker-1".into(),
            uid: "u-1".into(),
            pid: 4242,
        }
    }

    #[test]
    fn times_are_utc_with_six_fraction_digits_and_compare_as_strings() {
        let t: Timestamp = "2025-01-31T09:15:02Z".parse().unwrap();
        assert_eq!(format_time(t), "2025-01-31T09:15:02.000000Z");
        let later: Timestamp = "2025-01-31T09:15:02.1234567Z".parse().unwrap();
        assert_eq!(format_time(later), "2025-01-31T09:15:02.123456Z");
        assert!(format_time(t) < format_time(later));
        let parsed: Timestamp = format_time(later).parse().unwrap();
        assert_eq!(parsed.subsec_microsecond(), 123456);
    }

    #[test]
    fn each_event_is_one_line_in_the_documented_shape() {
        let t: Timestamp = "2025-01-31T09:15:02.5Z".parse().unwrap();
        let labels = BTreeMap::from([("bgslot/slot".to_string(), "blue".to_string())]);
        assert_eq!(
            line(t, &subject(), &What::Started { labels }),
            r#"{"t":"2025-01-31T09:15:02.500000Z","event":"started","pod":"shop/worker-1","uid":"u-1","pid":4242,"labels":{"bgslot/slot":"blue"}}"#.to_string() + "\n"
        );
        assert_eq!(
            line(t, &subject(), &What::sigterm(Duration::from_secs(30), Duration::from_micros(25_499_900))),
            r#"{"t":"2025-01-31T09:15:02.500000Z","event":"sigterm","pod":"shop/worker-1","uid":"u-1","pid":4242,"grace_period_s":30.0,"kill_after_s":25.5}"#.to_string() + "\n"
        );
        assert_eq!(
            line(t, &subject(), &What::Sigkill { reason: KillReason::GracePeriodOver }),
            r#"{"t":"2025-01-31T09:15:02.500000Z","event":"sigkill","pod":"shop/worker-1","uid":"u-1","pid":4242,"reason":"grace_period_over"}"#.to_string() + "\n"
        );
        use std::os::unix::process::ExitStatusExt;
        let killed = std::process::ExitStatus::from_raw(libc::SIGKILL);
        assert_eq!(
            line(t, &subject(), &What::exited(killed)),
            r#"{"t":"2025-01-31T09:15:02.500000Z","event":"exited","pod":"shop/worker-1","uid":"u-1","pid":4242,"code":null,"signal":"SIGKILL"}"#.to_string() + "\n"
        );
        let ok = std::process::ExitStatus::from_raw(3 << 8);
        let exited: PodEvent =
            serde_json::from_str(&line(t, &subject(), &What::exited(ok))).unwrap();
        assert_eq!((exited.code, exited.signal), (Some(3), None));
    }

    #[test]
    fn the_record_reads_back_in_order() {
        let dir = std::env::temp_dir().join(format!("pod-events-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(read(&dir).unwrap().is_empty(), "no file, no events");
        let events = PodEvents::open(&dir).unwrap();
        let pid = events.around(|| {
            let pid = 77;
            let s = Subject { pid, ..subject() };
            (
                pid,
                Some((
                    s,
                    What::Started {
                        labels: BTreeMap::new(),
                    },
                )),
            )
        });
        let s = Subject { pid, ..subject() };
        events.record(
            &s,
            What::sigterm(Duration::from_secs(1), Duration::from_secs(1)),
        );
        events.record(
            &s,
            What::Sigkill {
                reason: KillReason::KubeletStopping,
            },
        );
        events.around(|| ((), None));
        let read: Vec<PodEvent> = read(&dir).unwrap().into_iter().map(|(_, e)| e).collect();
        std::fs::remove_dir_all(&dir).unwrap();
        let names: Vec<&str> = read.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(names, ["started", "sigterm", "sigkill"]);
        assert!(read.windows(2).all(|w| w[0].t <= w[1].t));
        assert_eq!(read[0].pid, 77);
        assert_eq!(read[1].grace_period_s, Some(1.0));
        assert_eq!(read[2].reason.as_deref(), Some("kubelet_stopping"));
        assert_eq!(
            describe(&read[1]),
            format!(
                "{} sigterm shop/worker-1 pid 77 grace 1s, SIGKILL after 1s",
                read[1].t
            )
        );
    }
}
