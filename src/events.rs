//! The event sink: how the lower layers (helm, the cluster, the lock, the waits) say what is
//! happening without knowing who shows it or how. The printer implements [`Events`] (a live bar
//! per slot on a terminal, a line per event in a log); the lower layers are handed one and never
//! call the printer, so every import points down.

use crate::vocab::Slot;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// A step of the operation worth a line of its own: "swap web: production blue -> green".
    Step(&'a str),
    /// A helm command line as run, secrets redacted (shown with `-v`).
    Command(&'a str),
    /// Something went wrong that does not stop the command (yet).
    Warning(&'a str),
    /// A slot's rollout changed.
    Rollout(&'a Rollout),
    /// A slot is fully available: its wait is over.
    RolloutDone(&'a Rollout),
}

/// Where a slot's rollout stands, as a wait saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// The target it runs in, when one run acts on several clusters.
    pub target: Option<String>,
    pub slot: Slot,
    /// A worker's name; `None` for the slot's web pods.
    pub worker: Option<String>,
    pub ready: i32,
    pub desired: i32,
    /// What besides the ready count is worth saying (old pods, why pods are not ready), starting
    /// with ", " or " (" as it follows the count; empty when there is nothing.
    pub detail: String,
}

impl Rollout {
    /// What is rolling out: `green`, or `green consumer` for a worker.
    pub fn label(&self) -> String {
        let label = match &self.worker {
            Some(worker) => format!("{} {worker}", self.slot),
            None => self.slot.to_string(),
        };
        match &self.target {
            Some(target) => format!("[{target}] {label}"),
            None => label,
        }
    }

    /// The rollout as one line: `green: 2/3 ready, 1 old pods (readiness probe failing)`.
    pub fn line(&self) -> String {
        format!(
            "{}: {}/{} ready{}",
            self.label(),
            self.ready.min(self.desired),
            self.desired,
            self.detail
        )
    }
}

/// Receives events; implemented by the printer (and by tests that collect them).
pub trait Events: Send + Sync {
    fn event(&self, event: Event<'_>);

    fn step(&self, line: &str) {
        self.event(Event::Step(line));
    }

    fn warning(&self, line: &str) {
        self.event(Event::Warning(line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollout_reads_as_one_line() {
        let mut rollout = Rollout {
            target: None,
            slot: Slot::Green,
            worker: None,
            ready: 4,
            desired: 3,
            detail: " (readiness probe failing)".into(),
        };
        assert_eq!(rollout.line(), "green: 3/3 ready (readiness probe failing)");
        rollout.worker = Some("consumer".into());
        assert_eq!(
            rollout.line(),
            "green consumer: 3/3 ready (readiness probe failing)"
        );
        rollout.target = Some("eu".into());
        assert_eq!(
            rollout.line(),
            "[eu] green consumer: 3/3 ready (readiness probe failing)"
        );
    }
}
