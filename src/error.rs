//! The kinds of failure bgslot distinguishes, because each maps to its own exit code.
//!
//! Anything not listed here is a plain failure (exit 1). The kinds travel inside `anyhow::Error`
//! so that context (release, namespace, slot) can be added on the way up without losing them.

use std::fmt;

/// Exit codes, one meaning each (documented in the README and `--help`).
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const REFUSED: i32 = 3;
    pub const LOCKED: i32 = 4;
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
    pub op: &'static str,
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

/// The exit code an error stands for: the first classified kind in its chain, else 1.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.is::<Refusal>() {
            return exit::REFUSED;
        }
        if cause.is::<LockHeld>() {
            return exit::LOCKED;
        }
        if cause.is::<UsageError>() {
            return exit::USAGE;
        }
    }
    exit::FAILED
}

/// The hint attached to a refusal anywhere in the chain.
pub fn hint(err: &anyhow::Error) -> Option<String> {
    err.chain()
        .find_map(|c| c.downcast_ref::<Refusal>())
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
        assert_eq!(exit_code(&err), exit::REFUSED);
        assert_eq!(hint(&err).as_deref(), Some("do this"));
        let err = anyhow::anyhow!("helm failed");
        assert_eq!(exit_code(&err), exit::FAILED);
        let err = anyhow::Error::new(UsageError("bad".into()));
        assert_eq!(exit_code(&err), exit::USAGE);
    }
}
