//! The kinds of outcome bgslot distinguishes, because each maps to its own exit code.
//!
//! Anything not classified here is a plain failure (exit 1). The kinds travel inside
//! `anyhow::Error`, so context (release, namespace, slot, a signal that arrived) can be added on
//! the way up without losing them: a refusal stays 3 and a held lock stays 4 whatever wraps them.

use std::fmt;

use crate::vocab::Op;

/// How a run of bgslot ended; the one place exit codes are defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitStatus {
    /// 0: done.
    Done,
    /// 1: failed (helm error, timeout, verification failed, unknown release, unreachable cluster).
    Failed,
    /// 2: the command line makes no sense.
    Usage,
    /// 3: a safety check refused; nothing was changed (a check that refuses after the command
    /// already wrote is a failure, [`AfterWrites`]).
    Refused,
    /// 4: another bgslot holds the release lock (or took it over while this one ran).
    Locked,
    /// 5: a run across several clusters left them on different versions (a swap-back failed,
    /// or a second signal stopped it), or `status --check` found them so.
    Mixed,
}

impl ExitStatus {
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Done => 0,
            ExitStatus::Failed => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Refused => 3,
            ExitStatus::Locked => 4,
            ExitStatus::Mixed => 5,
        }
    }

    /// The word `-o json` reports as `kind`.
    pub fn kind(self) -> &'static str {
        match self {
            ExitStatus::Done => "done",
            ExitStatus::Failed => "failed",
            ExitStatus::Usage => "usage",
            ExitStatus::Refused => "refused",
            ExitStatus::Locked => "locked",
            ExitStatus::Mixed => "mixed",
        }
    }

    /// The outcome an error stands for: a refusal or a held lock anywhere in its chain wins over
    /// whatever happened around it; then a usage error; else a plain failure.
    pub fn of(err: &anyhow::Error) -> ExitStatus {
        if let Some(across) = find::<Across>(err) {
            across.status
        } else if carries::<AfterWrites>(err) {
            ExitStatus::Failed
        } else if carries::<Refusal>(err) {
            ExitStatus::Refused
        } else if carries::<LockHeld>(err) || carries::<LockLost>(err) {
            ExitStatus::Locked
        } else if carries::<UsageError>(err) {
            ExitStatus::Usage
        } else {
            ExitStatus::Failed
        }
    }
}

/// Whether `T` is anywhere in the error: as the root, as a context layer, or as a source.
fn carries<T: std::error::Error + fmt::Display + Send + Sync + 'static>(
    err: &anyhow::Error,
) -> bool {
    err.downcast_ref::<T>().is_some() || err.chain().any(|c| c.is::<T>())
}

/// `T` wherever it is in the error.
fn find<T: std::error::Error + Send + Sync + 'static>(err: &anyhow::Error) -> Option<&T> {
    err.downcast_ref::<T>()
        .or_else(|| err.chain().find_map(|c| c.downcast_ref::<T>()))
}

/// How a run across several clusters ended, when not well: its verdict decided from every
/// target's outcome (a refusal anywhere is 3, a lock 4, a mix 5...), what to say first, each
/// target's cause, and a hint. (What every target was left as travels beside it, in the error
/// of `fleet`, which the printer shows.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Across {
    pub status: ExitStatus,
    pub error: String,
    pub caused_by: Vec<String>,
    pub hint: Option<String>,
    /// The run's ID.
    pub run: String,
}

impl fmt::Display for Across {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.error)
    }
}

impl std::error::Error for Across {}

/// The outcome of a run across several clusters in `err`, if it is one.
pub fn across(err: &anyhow::Error) -> Option<&Across> {
    find::<Across>(err)
}

/// A safety check said no. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What is wrong, naming the release and slot.
    pub reason: String,
    /// What to do about it.
    pub hint: String,
}

impl Refusal {
    pub fn new(reason: impl Into<String>, hint: impl Into<String>) -> Self {
        Refusal {
            reason: reason.into(),
            hint: hint.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reason)
    }
}

impl std::error::Error for Refusal {}

/// Another bgslot holds the release lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHeld {
    pub lease: String,
    pub namespace: String,
    pub holder: String,
    pub since: String,
}

impl fmt::Display for LockHeld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "release is locked by another bgslot: {} (since {}; Lease {}/{})",
            self.holder, self.since, self.namespace, self.lease
        )
    }
}

impl std::error::Error for LockHeld {}

/// The release lock was taken over while the command ran: it stopped before its next write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockLost {
    pub lease: String,
    pub namespace: String,
    /// Who holds the Lease now, when it could be read.
    pub holder: Option<String>,
    /// The writes the command had made, in order.
    pub done: Vec<String>,
    /// The write it was about to make and did not.
    pub not_done: String,
}

impl fmt::Display for LockLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "lost the release lock (Lease {}/{}",
            self.namespace, self.lease
        )?;
        match &self.holder {
            Some(holder) => write!(f, ", now held by {holder})")?,
            None => write!(f, ", taken over or deleted)")?,
        }
        write!(f, "; stopped before: {}", self.not_done)?;
        if self.done.is_empty() {
            write!(f, "; nothing was changed before that")
        } else {
            write!(f, "; already done: {}", self.done.join(", then "))
        }
    }
}

impl std::error::Error for LockLost {}

/// A safety check refused after the command had already written (`release`: its deploy wrote,
/// then the swap refused): not "nothing was changed" but a failure that says what was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterWrites {
    /// The writes the command had made, in order.
    pub done: Vec<String>,
}

impl fmt::Display for AfterWrites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stopped after writing; already done: {}",
            self.done.join(", then ")
        )
    }
}

impl std::error::Error for AfterWrites {}

/// Whether the release lock was lost somewhere in `err`: no further write may be tried.
pub fn lost_lock(err: &anyhow::Error) -> bool {
    carries::<LockLost>(err)
}

/// `err` as it ends a command that made the writes `done`: a refusal after a write is no longer
/// "nothing was changed" (exit 3) but a failure naming what was done; anything else as it is.
pub fn after_writes(err: anyhow::Error, done: Vec<String>) -> anyhow::Error {
    if done.is_empty() || !carries::<Refusal>(&err) || carries::<LockLost>(&err) {
        return err;
    }
    err.context(AfterWrites { done })
}

/// The command line asks for something that makes no sense (exit 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The command that failed, as the outermost context of its error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub op: Op,
    pub release: String,
    pub namespace: String,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bgslot {} {} in namespace {} failed",
            self.op, self.release, self.namespace
        )
    }
}

/// The hint attached to a refusal anywhere in the chain.
pub fn hint(err: &anyhow::Error) -> Option<String> {
    if carries::<LockLost>(err) {
        return Some(
            "another bgslot (or a person) took the release over while this one ran; see what it did with `bgslot status` before you run this again"
                .into(),
        );
    }
    err.downcast_ref::<Refusal>()
        .or_else(|| err.chain().find_map(|c| c.downcast_ref::<Refusal>()))
        .map(|r| r.hint.clone())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn classified_errors_keep_their_code_through_context() {
        let err = Err::<(), _>(Refusal::new("no", "do this"))
            .context("swap web in shop")
            .unwrap_err();
        assert_eq!(ExitStatus::of(&err), ExitStatus::Refused);
        assert_eq!(hint(&err).as_deref(), Some("do this"));
        let err = anyhow::anyhow!("helm failed");
        assert_eq!(ExitStatus::of(&err), ExitStatus::Failed);
        let err = anyhow::Error::new(UsageError("bad".into()));
        assert_eq!(ExitStatus::of(&err).code(), 2);
    }

    #[test]
    fn a_run_across_clusters_carries_its_own_verdict() {
        let mixed = Across {
            status: ExitStatus::Mixed,
            error: "release web across 2 targets left them on different versions".into(),
            caused_by: vec![],
            hint: None,
            run: "r".into(),
        };
        // A refusal or a lock inside it does not change the verdict.
        let err = anyhow::Error::new(mixed.clone()).context(Refusal::new("no", ""));
        assert_eq!(ExitStatus::of(&err), ExitStatus::Mixed);
        assert_eq!(
            (ExitStatus::Mixed.code(), ExitStatus::Mixed.kind()),
            (5, "mixed")
        );
        assert_eq!(across(&err), Some(&mixed));
        assert!(across(&anyhow::anyhow!("x")).is_none());
    }

    #[test]
    fn a_refusal_after_a_write_is_a_failure_that_names_the_writes() {
        let refused =
            || anyhow::Error::new(Refusal::new("production is not fully available", "wait"));
        let untouched = after_writes(refused(), Vec::new());
        assert_eq!(ExitStatus::of(&untouched), ExitStatus::Refused);
        let done = vec!["`bgslot deploy: v2 staged in green` (helm upgrade of web)".to_string()];
        let err = after_writes(refused(), done.clone());
        assert_eq!(ExitStatus::of(&err), ExitStatus::Failed);
        assert_eq!(hint(&err).as_deref(), Some("wait"));
        assert!(
            err.to_string()
                .contains("already done: `bgslot deploy: v2 staged in green`"),
            "{err}"
        );
        // A plain failure, or a lost lock (which says what was done itself), stays as it is.
        assert_eq!(
            ExitStatus::of(&after_writes(anyhow::anyhow!("helm failed"), done.clone())),
            ExitStatus::Failed
        );
        assert!(after_writes(anyhow::anyhow!("helm failed"), done)
            .downcast_ref::<AfterWrites>()
            .is_none());
    }

    #[test]
    fn a_refusal_or_lock_survives_a_signal_wrapped_around_it() {
        let held = LockHeld {
            lease: "bgslot-lock-web".into(),
            namespace: "shop".into(),
            holder: "alice".into(),
            since: "now".into(),
        };
        let err = anyhow::Error::new(held)
            .context("swap of web stopped by SIGTERM")
            .context(UsageError("ignored".into()));
        assert_eq!(ExitStatus::of(&err), ExitStatus::Locked);
        let err = anyhow::Error::new(Refusal::new("no", ""))
            .context("stopped by SIGINT; the lock could not be released");
        assert_eq!(ExitStatus::of(&err).code(), 3);
        let lost = LockLost {
            lease: "bgslot-lock-web".into(),
            namespace: "shop".into(),
            holder: Some("bob@ci pid 7 (swap)".into()),
            done: vec!["bgslot deploy green v2 (revision 2)".into()],
            not_done: "bgslot swap blue->green".into(),
        };
        assert_eq!(
            lost.to_string(),
            "lost the release lock (Lease shop/bgslot-lock-web, now held by bob@ci pid 7 (swap)); stopped before: bgslot swap blue->green; already done: bgslot deploy green v2 (revision 2)"
        );
        let err = anyhow::Error::new(lost).context("release web");
        assert_eq!(ExitStatus::of(&err), ExitStatus::Locked);
        assert!(hint(&err).unwrap().contains("bgslot status"));
    }
}
