//! What the cluster really runs for a release: the label contract (`labels`), the state built
//! from API objects by pure functions (`state`; where the Services route in `services`; workers
//! and CronJobs in `workloads`), GitOps controllers' marks (`gitops`), and the reads and the few
//! writes helm cannot make (`api`).

pub mod api;
pub mod followers;
pub mod gitops;
pub mod labels;
pub mod observed;
pub mod services;
pub mod state;
pub mod workloads;

pub use api::Cluster;
pub use followers::{FollowerKind, Followers, LivePod, Named};
pub use gitops::GitOpsMarks;
pub use observed::Observed;
pub use services::{PodSlots, RoutedService};
pub use state::{DeploymentLive, MigrationPhase, MigrationState, PodState, SlotState, Totals};
pub use workloads::{ConfigRef, CronJobState, WorkerState};
