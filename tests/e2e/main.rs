//! bgslot's end-to-end tests, one module per area, in one binary: real `helm` binaries (Helm 3
//! and Helm 4) against a real Kubernetes control plane that `scripts/test` starts (`KUBECONFIG`,
//! `BGSLOT_HELM3`, `BGSLOT_HELM4`). A test that needs them and does not find them fails, saying
//! how to provide them: nothing here skips. `architecture` checks the layering of `src/`.

#[macro_use]
mod common;

mod architecture;
mod chart_install;
mod chart_render;
mod ci_pipeline;
mod cli;
mod direct_read;
mod dry_run;
mod fleet;
mod gitops;
mod helm_storage;
mod plugin;
mod rbac;
mod real_app;
mod reports;
mod router;
mod router_app;
mod router_render;
mod router_traffic;
mod safety;
mod terminal;
mod upgrade;
mod workers;
mod zero_downtime;
