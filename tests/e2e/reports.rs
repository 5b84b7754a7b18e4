//! Every command's `-o json` parsed into the shape the README documents, on the real control
//! plane with Helm 3 and Helm 4. The shapes below are strict: a field the README does not name,
//! or a documented field that is missing, fails the test.

// The shapes' fields are read by deserializing into them, which is the check; not all are
// asserted on afterwards.
#![allow(dead_code)]

use crate::common;

use common::cli::Env;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A documented field that may be `null` but must be present.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Option::<T>::deserialize(d)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Version {
    bgslot: String,
    chart: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Export {
    chart: String,
    dir: String,
    files: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Completions {
    shell: String,
    script: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Deploy {
    operation: String,
    release: String,
    namespace: String,
    revision: u64,
    production_slot: String,
    stage_slot: String,
    mode: String,
    slot: String,
    role: String,
    image: String,
    ready: i64,
    desired: i64,
    #[serde(deserialize_with = "nullable")]
    service: Option<String>,
    url: String,
    preview: bool,
    workers: Vec<DeployedWorker>,
    #[serde(deserialize_with = "nullable")]
    slot_release: Option<String>,
    #[serde(deserialize_with = "nullable")]
    slot_revision: Option<u64>,
    #[serde(deserialize_with = "nullable")]
    chart: Option<String>,
    accepted: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    hooks: Option<Hooks>,
    next: String,
}

/// The hooks a router's slot write ran (`path`: install or upgrade), and those it did not.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hooks {
    path: String,
    runs: Vec<Hook>,
    skipped: Vec<Hook>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hook {
    kind: String,
    name: String,
    phases: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployedWorker {
    name: String,
    ready: i64,
    desired: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Swap {
    operation: String,
    release: String,
    namespace: String,
    revision: u64,
    production_slot: String,
    stage_slot: String,
    mode: String,
    from: String,
    to: String,
    image: String,
    previous_image: String,
    service: String,
    ready_endpoints: u64,
    url: String,
    #[serde(deserialize_with = "nullable")]
    promoted: Option<Promotion>,
    workers: Vec<WorkerMove>,
    cron_jobs: Vec<CronJobMove>,
    #[serde(deserialize_with = "nullable")]
    slot_release: Option<String>,
    #[serde(deserialize_with = "nullable")]
    previous_release: Option<String>,
    next: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Promotion {
    from: u64,
    to: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkerMove {
    name: String,
    handover: String,
    production: WorkerCount,
    stage: WorkerCount,
    #[serde(deserialize_with = "nullable")]
    gap_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkerCount {
    slot: String,
    ready: i64,
    desired: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CronJobMove {
    name: String,
    #[serde(deserialize_with = "nullable")]
    runs_in: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Clean {
    operation: String,
    release: String,
    namespace: String,
    revision: u64,
    production_slot: String,
    stage_slot: String,
    mode: String,
    slot: String,
    changed: bool,
    image: String,
    stopped_pods: usize,
    stop_ms: u64,
    #[serde(deserialize_with = "nullable")]
    slot_release: Option<String>,
    next: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Release {
    operation: String,
    release: String,
    namespace: String,
    revision: u64,
    production_slot: String,
    stage_slot: String,
    mode: String,
    image: String,
    verified: Vec<String>,
    steps: Vec<Value>,
    next: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Recover {
    operation: String,
    release: String,
    namespace: String,
    mode: String,
    changed: bool,
    revision: u64,
    status: String,
    #[serde(deserialize_with = "nullable")]
    from_revision: Option<u64>,
    #[serde(deserialize_with = "nullable")]
    to_revision: Option<u64>,
    #[serde(deserialize_with = "nullable")]
    production_slot: Option<String>,
    #[serde(deserialize_with = "nullable")]
    stage_slot: Option<String>,
    #[serde(deserialize_with = "nullable")]
    production_ready: Option<i64>,
    #[serde(deserialize_with = "nullable")]
    production_desired: Option<i64>,
    recovered: Vec<Recovered>,
    settled: Vec<Settled>,
    next: String,
}

/// A router's worker scaled, or CronJob suspended or resumed, where the record says.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settled {
    action: String,
    slot: String,
    worker: Option<String>,
    deployment: Option<String>,
    from: Option<i64>,
    to: Option<u64>,
    name: Option<String>,
    cron_job: Option<String>,
    suspend: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Recovered {
    release: String,
    status: String,
    from_revision: u64,
    action: String,
    #[serde(deserialize_with = "nullable")]
    to_revision: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct History {
    release: String,
    namespace: String,
    mode: String,
    revision: u64,
    revisions: Vec<HistoryEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryEntry {
    revision: u64,
    updated: String,
    status: String,
    chart: String,
    app_version: String,
    description: String,
    #[serde(deserialize_with = "nullable")]
    operation: Option<String>,
    #[serde(deserialize_with = "nullable")]
    slot: Option<String>,
    #[serde(deserialize_with = "nullable")]
    from: Option<String>,
    #[serde(deserialize_with = "nullable")]
    tag: Option<String>,
    summary: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Status {
    release: String,
    namespace: String,
    revision: u64,
    helm_status: String,
    chart: String,
    helm_version: String,
    description: String,
    production_slot: String,
    stage_slot: String,
    mode: String,
    #[serde(deserialize_with = "nullable")]
    app: Option<App>,
    slots: Vec<SlotStatus>,
    services: Vec<ServiceStatus>,
    drift: Vec<String>,
    warnings: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    owner: Option<Value>,
    #[serde(deserialize_with = "nullable")]
    problem: Option<Problem>,
    #[serde(deserialize_with = "nullable")]
    lock: Option<Lock>,
    next: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct App {
    chart: String,
    version: String,
    tag_key: String,
    repository_key: String,
    digest_key: String,
    replicas_key: String,
    service: String,
    accept: Vec<String>,
    /// Further routes (`--service NAME=ROUTE`), workers (`--worker`) and how they move.
    routes: Vec<Route>,
    workers: Vec<String>,
    worker_stage_replicas: u64,
    handover: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Route {
    service: String,
    route: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotStatus {
    slot: String,
    role: String,
    enabled: bool,
    #[serde(deserialize_with = "nullable")]
    release: Option<String>,
    #[serde(deserialize_with = "nullable")]
    state: Option<String>,
    #[serde(deserialize_with = "nullable")]
    revision: Option<u64>,
    #[serde(deserialize_with = "nullable")]
    status: Option<String>,
    #[serde(deserialize_with = "nullable")]
    chart: Option<String>,
    #[serde(deserialize_with = "nullable")]
    app_version: Option<String>,
    tag: String,
    image: String,
    #[serde(deserialize_with = "nullable")]
    deployment: Option<String>,
    ready: i64,
    available: i64,
    desired: i64,
    fully_available: bool,
    #[serde(deserialize_with = "nullable")]
    age_seconds: Option<i64>,
    deployments: Vec<DeploymentStatus>,
    #[serde(deserialize_with = "nullable")]
    migration: Option<Migration>,
    preview: bool,
    workers: Vec<WorkerStatus>,
    cron_jobs: Vec<CronJobStatus>,
    accepted: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentStatus {
    name: String,
    ready: i64,
    available: i64,
    desired: i64,
    routed: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkerStatus {
    name: String,
    #[serde(deserialize_with = "nullable")]
    deployment: Option<String>,
    ready: i64,
    desired: i64,
    consuming: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CronJobStatus {
    name: String,
    cron_job: String,
    schedule: String,
    suspended: bool,
    #[serde(deserialize_with = "nullable")]
    last_schedule_seconds: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Migration {
    job: String,
    phase: String,
    #[serde(deserialize_with = "nullable")]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceStatus {
    #[serde(deserialize_with = "nullable")]
    name: Option<String>,
    service: String,
    role: String,
    #[serde(deserialize_with = "nullable")]
    routes_to: Option<String>,
    #[serde(deserialize_with = "nullable")]
    selects: Option<String>,
    ready_endpoints: u64,
    not_ready_endpoints: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Problem {
    reason: String,
    hint: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Lock {
    holder: String,
    since: String,
    lease: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DryRunPlan {
    operation: String,
    release: String,
    namespace: String,
    #[serde(deserialize_with = "nullable")]
    revision: Option<u64>,
    #[serde(deserialize_with = "nullable")]
    production_slot: Option<String>,
    #[serde(deserialize_with = "nullable")]
    stage_slot: Option<String>,
    dry_run: bool,
    steps: Vec<PlannedStep>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlannedStep {
    action: String,
    helm: Vec<String>,
    changes: Vec<Change>,
    effects: Vec<Effect>,
    then: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Effect {
    object: String,
    field: String,
    old: String,
    new: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    key: String,
    old: Value,
    new: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorDoc {
    error: String,
    caused_by: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    hint: Option<String>,
    exit_code: i64,
    kind: String,
}

/// Runs bgslot with `-o json`, expects `code`, and parses stdout as `T`.
async fn json<T: DeserializeOwned>(env: &Env, args: &[&str], code: i32) -> T {
    let mut full = args.to_vec();
    full.extend(["-o", "json"]);
    let run = env.bgslot(&full).await.must_exit(code);
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: stdout is not the documented shape ({e}): {run:?}"))
}

with_both_helms!(every_command_prints_its_documented_json);

async fn every_command_prints_its_documented_json(major: u32) {
    let env = Env::new(major, "reports").await;
    let dir = tempfile::tempdir().unwrap();
    let export_dir = dir.path().join("chart");

    let version: Version = json(&env, &["version"], 0).await;
    assert!(version.chart.starts_with("bgslot-"), "{version:?}");
    assert_eq!(version.bgslot, env!("CARGO_PKG_VERSION"));
    let export: Export = json(&env, &["chart", "export", export_dir.to_str().unwrap()], 0).await;
    assert_eq!(
        (export.chart, export.dir.as_str()),
        (version.chart.clone(), export_dir.to_str().unwrap())
    );
    assert!(export.files >= 5);
    let completions: Completions = json(&env, &["completions", "bash"], 0).await;
    assert!(completions.script.contains("bgslot") && completions.shell == "bash");

    let planned: DryRunPlan = json(
        &env,
        &[
            "deploy",
            "web",
            "--tag",
            "v1",
            "--replicas",
            "2",
            "--dry-run",
        ],
        0,
    )
    .await;
    assert_eq!(
        (
            planned.operation.as_str(),
            planned.revision,
            planned.dry_run
        ),
        ("deploy", None, true)
    );
    assert_eq!(planned.steps.len(), 1);
    // A worker and a CronJob, so their parts of every document are read too.
    let workers = dir.path().join("workers.yaml");
    std::fs::write(
        &workers,
        "workers:\n  consumer:\n    command: [bin/consume]\n    replicas: 1\ncronJobs:\n  nightly:\n    schedule: \"0 3 * * *\"\n    command: [bin/report]\n",
    )
    .unwrap();
    let installed: Deploy = json(
        &env,
        &[
            "deploy",
            "web",
            "--tag",
            "v1",
            "--replicas",
            "2",
            "-f",
            workers.to_str().unwrap(),
        ],
        0,
    )
    .await;
    assert!(
        installed.hooks.is_none(),
        "bgslot's chart: its hooks are the migration"
    );
    assert_eq!(
        (
            installed.workers[0].name.as_str(),
            installed.workers[0].ready,
            installed.preview
        ),
        ("consumer", 1, false)
    );
    assert_eq!(
        (
            installed.operation.as_str(),
            installed.slot.as_str(),
            installed.role.as_str(),
            installed.revision
        ),
        ("install", "blue", "production", 1)
    );
    assert_eq!(
        (installed.release.as_str(), installed.namespace.as_str()),
        ("web", env.ns.as_str())
    );
    assert_eq!(
        (
            installed.mode.as_str(),
            installed.slot_release.as_deref(),
            installed.chart.as_deref()
        ),
        ("bundled", None, None)
    );
    assert_eq!(
        (
            installed.ready,
            installed.desired,
            installed.service.as_deref()
        ),
        (2, 2, Some("web"))
    );
    let deployed: Deploy = json(&env, &["deploy", "web", "--tag", "v2"], 0).await;
    assert_eq!(
        (
            deployed.operation.as_str(),
            deployed.slot.as_str(),
            deployed.production_slot.as_str(),
            deployed.stage_slot.as_str()
        ),
        ("deploy", "green", "blue", "green")
    );
    assert_eq!(
        (deployed.image.as_str(), deployed.revision),
        ("nginx:v2", 2)
    );
    assert_eq!(deployed.next, "bgslot swap web --expect-tag v2");
    assert!(
        deployed.url.starts_with("http://web-stage."),
        "{deployed:?}"
    );

    let status: Status = json(&env, &["status", "web"], 0).await;
    assert_eq!(
        (status.revision, status.helm_status.as_str()),
        (2, "deployed")
    );
    assert_eq!(
        (status.production_slot.as_str(), status.stage_slot.as_str()),
        ("blue", "green")
    );
    assert_eq!(status.slots.len(), 2);
    assert!(status
        .slots
        .iter()
        .all(|s| s.fully_available && s.enabled && s.age_seconds.is_some()));
    assert_eq!(status.services[0].selects.as_deref(), Some("blue"));
    assert_eq!(status.services[0].routes_to.as_deref(), Some("blue"));
    assert!(status.mode == "bundled" && status.app.is_none() && status.warnings.is_empty());
    assert!(status
        .slots
        .iter()
        .all(|s| s.release.is_none() && s.deployments.len() == 1));
    assert!(status.problem.is_none() && status.lock.is_none() && status.drift.is_empty());
    assert!(status.owner.is_none());
    assert!(
        status.helm_version.starts_with(&format!("v{major}.")),
        "{status:?}"
    );
    assert_eq!(status.chart, version.chart);
    let blue = &status.slots[0];
    assert_eq!(
        (blue.workers[0].consuming, blue.cron_jobs[0].suspended),
        (true, false)
    );
    assert_eq!(
        (
            status.slots[1].workers[0].desired,
            status.slots[1].cron_jobs[0].suspended
        ),
        (0, true)
    );

    let planned: DryRunPlan = json(&env, &["swap", "web", "--dry-run"], 0).await;
    assert_eq!(planned.revision, Some(2));
    let change = &planned.steps[0].changes[0];
    assert_eq!(
        (change.key.as_str(), &change.old, &change.new),
        (
            "productionSlot",
            &Value::from("blue"),
            &Value::from("green")
        )
    );
    assert!(planned.steps[0]
        .effects
        .iter()
        .any(|e| e.object == "worker consumer (green)" && e.new == "1"));
    let swapped: Swap = json(&env, &["swap", "web", "--expect-tag", "v2"], 0).await;
    assert_eq!(
        (
            swapped.workers[0].production.slot.as_str(),
            swapped.workers[0].production.ready,
            swapped.workers[0].stage.desired
        ),
        ("green", 1, 0)
    );
    assert_eq!(swapped.cron_jobs[0].runs_in.as_deref(), Some("green"));
    assert!(swapped.promoted.is_none());
    assert_eq!(
        (
            swapped.operation.as_str(),
            swapped.from.as_str(),
            swapped.to.as_str(),
            swapped.revision
        ),
        ("swap", "blue", "green", 3)
    );
    assert_eq!(
        (swapped.image.as_str(), swapped.previous_image.as_str()),
        ("nginx:v2", "nginx:v1")
    );
    assert_eq!(swapped.ready_endpoints, 2);
    assert_eq!(
        (swapped.mode.as_str(), swapped.slot_release.as_deref()),
        ("bundled", None)
    );
    let back: Swap = json(&env, &["rollback", "web"], 0).await;
    assert_eq!(
        (back.operation.as_str(), back.to.as_str()),
        ("rollback", "blue")
    );
    let _: Swap = json(&env, &["swap", "web"], 0).await;

    let _: DryRunPlan = json(&env, &["clean", "web", "--min-age", "0s", "--dry-run"], 0).await;
    let cleaned: Clean = json(&env, &["clean", "web", "--min-age", "0s"], 0).await;
    assert_eq!(
        (
            cleaned.slot.as_str(),
            cleaned.changed,
            cleaned.image.as_str()
        ),
        ("blue", true, "nginx:v1")
    );
    // Done means stopped: not one blue pod is left, terminating or not.
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(env.client.clone(), &env.ns);
    let left = pods
        .list(&kube::api::ListParams::default().labels("bgslot/slot=blue"))
        .await
        .unwrap();
    assert!(
        left.items.is_empty(),
        "blue pods left after clean: {left:?}"
    );
    assert!(cleaned.stopped_pods > 0, "{cleaned:?}");
    let again: Clean = json(&env, &["clean", "web", "--min-age", "0s"], 0).await;
    assert!(!again.changed);

    let released: Release = json(
        &env,
        &[
            "release",
            "web",
            "--tag",
            "v3",
            "--verify-cmd",
            "true",
            "--clean",
            "--min-age",
            "0s",
        ],
        0,
    )
    .await;
    let ops: Vec<&str> = released
        .steps
        .iter()
        .map(|s| s["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["deploy", "swap", "clean"]);
    assert_eq!(released.verified, ["stage", "production"]);
    assert_eq!(
        (released.production_slot.as_str(), released.image.as_str()),
        ("blue", "nginx:v3")
    );
    let step_deploy: Deploy = serde_json::from_value(released.steps[0].clone()).unwrap();
    let step_swap: Swap = serde_json::from_value(released.steps[1].clone()).unwrap();
    let step_clean: Clean = serde_json::from_value(released.steps[2].clone()).unwrap();
    assert_eq!(
        (
            step_deploy.slot.as_str(),
            step_swap.to.as_str(),
            step_clean.slot.as_str()
        ),
        ("blue", "blue", "green")
    );
    let _: DryRunPlan = json(
        &env,
        &["release", "web", "--tag", "v4", "--clean", "--dry-run"],
        0,
    )
    .await;

    let recovered: Recover = json(&env, &["recover", "web"], 0).await;
    assert_eq!((recovered.changed, recovered.to_revision), (false, None));
    assert_eq!(recovered.mode, "bundled");
    let history: History = json(&env, &["history", "web"], 0).await;
    assert_eq!(history.mode, "bundled");
    assert_eq!(history.revision, history.revisions.last().unwrap().revision);
    let swaps = history
        .revisions
        .iter()
        .filter(|r| r.operation.as_deref() == Some("swap"))
        .count();
    assert_eq!(swaps, 3);
    assert_eq!(
        history.revisions[0].summary,
        "bgslot install: v1 in blue (production)"
    );

    let refused: ErrorDoc = json(&env, &["swap", "web"], 3).await;
    assert_eq!((refused.kind.as_str(), refused.exit_code), ("refused", 3));
    assert!(
        refused.error.contains("nothing is staged") && refused.hint.is_some(),
        "{refused:?}"
    );
    env.done().await;
}

// Router mode: the same commands on a router release print the same shapes, with `mode:
// "router"` and the slot releases named.

with_both_helms!(every_router_command_prints_its_documented_json);

async fn every_router_command_prints_its_documented_json(major: u32) {
    let env = Env::new(major, "rtreports").await;
    let dir = tempfile::tempdir().unwrap();
    let chart = crate::router::helm_create(&env, dir.path(), "myapp");
    let chart = chart.to_str().unwrap();

    let planned: DryRunPlan = json(
        &env,
        &[
            "deploy",
            "web",
            "--app-chart",
            chart,
            "--tag",
            "v1",
            "--dry-run",
        ],
        0,
    )
    .await;
    assert_eq!((planned.revision, planned.steps.len()), (None, 2));
    let installed: Deploy = json(
        &env,
        &["deploy", "web", "--app-chart", chart, "--tag", "v1"],
        0,
    )
    .await;
    assert_eq!(
        (
            installed.operation.as_str(),
            installed.mode.as_str(),
            installed.slot_release.as_deref()
        ),
        ("install", "router", Some("web-blue"))
    );
    assert_eq!(
        (
            installed.slot_revision,
            installed.chart.as_deref(),
            installed.preview
        ),
        (Some(1), Some("myapp-0.1.0"), false)
    );
    // helm create's chart has a test hook only: the install runs none, skips none.
    let hooks = installed
        .hooks
        .as_ref()
        .expect("a router's deploy names its hooks");
    assert_eq!(
        (hooks.path.as_str(), hooks.runs.len(), hooks.skipped.len()),
        ("install", 0, 0)
    );
    let deployed: Deploy = json(&env, &["deploy", "web", "--tag", "v2"], 0).await;
    assert_eq!(
        (deployed.slot.as_str(), deployed.role.as_str()),
        ("green", "stage")
    );
    assert_eq!(deployed.service.as_deref(), Some("web-stage"));
    let status: Status = json(&env, &["status", "web"], 0).await;
    assert_eq!(
        (
            status.mode.as_str(),
            status.slots.len(),
            status.services.len()
        ),
        ("router", 2, 2)
    );
    assert!(status
        .slots
        .iter()
        .all(|s| s.fully_available && s.deployments.len() == 1 && s.release.is_some()));
    assert_eq!(
        status.app.as_ref().map(|a| a.tag_key.as_str()),
        Some("image.tag")
    );
    assert_eq!(status.slots[1].state.as_deref(), Some("deployed"));
    let _: DryRunPlan = json(&env, &["swap", "web", "--dry-run"], 0).await;
    let swapped: Swap = json(&env, &["swap", "web", "--expect-tag", "v2"], 0).await;
    assert_eq!(
        (
            swapped.to.as_str(),
            swapped.slot_release.as_deref(),
            swapped.previous_release.as_deref()
        ),
        ("green", Some("web-green"), Some("web-blue"))
    );
    assert!(swapped.mode == "router" && swapped.workers.is_empty() && swapped.promoted.is_none());
    let back: Swap = json(&env, &["rollback", "web"], 0).await;
    assert_eq!(back.operation, "rollback");
    let _: Swap = json(&env, &["swap", "web"], 0).await;
    let _: DryRunPlan = json(&env, &["clean", "web", "--min-age", "0s", "--dry-run"], 0).await;
    let cleaned: Clean = json(&env, &["clean", "web", "--min-age", "0s"], 0).await;
    assert_eq!((cleaned.slot.as_str(), cleaned.changed), ("blue", true));
    assert_eq!(cleaned.slot_release.as_deref(), Some("web-blue"));
    let again: Clean = json(&env, &["clean", "web", "--min-age", "0s"], 0).await;
    assert!(!again.changed);
    let released: Release = json(
        &env,
        &[
            "release",
            "web",
            "--tag",
            "v3",
            "--verify-cmd",
            "true",
            "--clean",
            "--min-age",
            "0s",
        ],
        0,
    )
    .await;
    let step_deploy: Deploy = serde_json::from_value(released.steps[0].clone()).unwrap();
    let step_swap: Swap = serde_json::from_value(released.steps[1].clone()).unwrap();
    let step_clean: Clean = serde_json::from_value(released.steps[2].clone()).unwrap();
    assert_eq!(
        (
            step_deploy.slot.as_str(),
            step_swap.to.as_str(),
            step_clean.slot.as_str()
        ),
        ("blue", "blue", "green")
    );
    let _: DryRunPlan = json(&env, &["release", "web", "--tag", "v4", "--dry-run"], 0).await;
    let recovered: Recover = json(&env, &["recover", "web"], 0).await;
    assert!(!recovered.changed && recovered.recovered.is_empty());
    let history: History = json(&env, &["history", "web"], 0).await;
    assert_eq!(history.mode, "router");
    assert_eq!(
        history.revisions[0].summary,
        "bgslot install: v1 in blue (production)"
    );
    let refused: ErrorDoc = json(&env, &["rollback", "web"], 3).await;
    assert!(refused.error.contains("is gone (cleaned"), "{refused:?}");
    env.done().await;
}
