//! The one place bgslot runs `helm`: which helm (`version`), the command lines (`argv`, pure),
//! what it prints (`json`), how it fails (`error`), and the runner that executes it (`runner`);
//! and where bgslot reads helm's release records instead: one record's format
//! (`release_record`, pure), finding them in the cluster (`storage`), and the read with its
//! fallback to the runner (`records`).

pub mod argv;
pub mod error;
pub mod json;
pub mod records;
pub mod release_record;
pub mod runner;
pub mod storage;
pub mod version;

pub use argv::{is_secret_key, AsStage, SetValue, SlotWrite, Target, Write};
pub use error::{HelmError, HelmErrorKind};
pub use json::{ReleaseRecord, Revision, Status};
pub use records::{Latest, Records};
pub use runner::HelmRunner;
pub use version::{locate, HelmVersion};
