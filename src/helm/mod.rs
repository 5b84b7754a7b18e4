//! The one place bgslot runs `helm`: which helm (`version`), the command lines (`argv`, pure),
//! what it prints (`json`), how it fails (`error`), and the runner that executes it (`runner`).

pub mod argv;
pub mod error;
pub mod json;
pub mod records;
pub mod runner;
pub mod storage;
pub mod version;

pub use argv::{is_secret_key, SetValue, SlotWrite, Target, Write};
pub use error::{HelmError, HelmErrorKind};
pub use json::{ReleaseRecord, Revision, Status};
pub use records::{Latest, Records};
pub use runner::HelmRunner;
pub use version::{locate, HelmVersion};
