//! bgslot: boring, safe blue/green releases on Kubernetes with Helm.
//!
//! The crate is built in floors, each importing only from the floors below it (ARCHITECTURE.md
//! names them and where a new piece goes; a test checks every `use crate::` line against it):
//! the words bgslot speaks and the terminal; the adapters to helm, the cluster and the lock; the
//! release as one command sees it (observe, rules, waits); the commands; the printer and the
//! command line.

// Floor 0: vocabulary and terminal.
pub mod duration;
pub mod error;
pub mod events;
pub mod names;
pub mod record;
pub mod signals;
pub mod term;
pub mod vocab;

// Floor 1: adapters.
pub mod chart;
pub mod cluster;
pub mod helm;
pub mod lock;

// Floor 2: the release.
pub mod context;
pub mod observe;
pub mod planned;
pub mod rules;
pub mod slots;
pub mod values;
pub mod wait;
pub mod workers;

// Floor 3: the commands, and the same commands across several clusters.
pub mod commands;
pub mod fleet;

// Floor 4: the surface.
pub mod cli;
pub mod output;
#[cfg(test)]
mod readme;

#[cfg(test)]
mod fixtures;
