//! Installs the chart on the local control plane with Helm 3 and Helm 4: swaps the production slot
//! with `helm upgrade --reuse-values` and follows the Services' Endpoints to the right pods, runs the
//! example web app through bgslot's deploy → swap → clean, and checks what only a real API server
//! shows: schema errors at install, which Deployments a config change restarts, who owns `replicas`
//! under autoscaling, that a failed migration Job reruns once deleted, and that workers and
//! CronJobs follow production (batch/v1beta1 CronJobs on this 1.20 server).

use crate::common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::cli::Env;
use common::Helm;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Pod, Secret, Service};
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

const REL: &str = "web";
const DEADLINE: Duration = Duration::from_secs(90);

/// Deletes a test namespace when dropped, also while a failing test unwinds.
struct NamespaceGuard(String);

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        let ns = self.0.clone();
        // Drop cannot await and may run while the test's runtime unwinds: delete from a thread
        // with a runtime and a client of its own.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the namespace cleanup")
                .block_on(async {
                    let client = common::client().await;
                    common::delete_namespace(&client, &ns).await;
                })
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn helm3_install_and_swap_moves_production_endpoints() {
    install_and_swap(common::helm(3)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn helm4_install_and_swap_moves_production_endpoints() {
    install_and_swap(common::helm(4)).await;
}

async fn install_and_swap(helm: Helm) {
    let client = common::client().await;
    let ns = common::namespace(&client, &format!("chart-{}", helm.name())).await;
    let _cleanup = NamespaceGuard(ns.clone());
    let ns = ns.as_str();
    let chart = common::chart_dir();
    let chart = chart.to_str().expect("UTF-8 chart path");

    helm.run(&[
        "install",
        REL,
        chart,
        "-n",
        ns,
        "--set",
        "blue.enabled=true,green.enabled=true,replicaCount=2",
    ]);

    wait_for_routing(&client, ns, "blue", "green", &helm.name()).await;
    let blue_before = slot_pods(&client, ns, REL, "blue").await;
    let blue_generation = deployment_generation(&client, ns, "web-blue").await;

    helm.run(&[
        "upgrade",
        REL,
        chart,
        "-n",
        ns,
        "--reuse-values",
        "--set",
        "productionSlot=green",
    ]);

    wait_for_routing(&client, ns, "green", "blue", &helm.name()).await;
    let blue_after = slot_pods(&client, ns, REL, "blue").await;
    assert_eq!(
        identities(&blue_before),
        identities(&blue_after),
        "{}: the swap restarted blue's pods",
        helm.name()
    );
    assert_eq!(
        blue_generation,
        deployment_generation(&client, ns, "web-blue").await,
        "{}: the swap changed blue's Deployment",
        helm.name()
    );

    helm.run(&["test", REL, "-n", ns, "--timeout", "2m"]);
}

/// The web pods of one slot: migration, worker and CronJob pods carry the slot too, but are not
/// the slot's servers (web pods carry no bgslot/workload, which `notin` matches).
const WEB_PODS: &str =
    "app.kubernetes.io/component!=migration,bgslot/workload notin (worker,cronjob)";

/// Live (not terminating) web pods of one slot.
async fn slot_pods(client: &Client, ns: &str, release: &str, slot: &str) -> Vec<Pod> {
    let selector = format!("app.kubernetes.io/instance={release},bgslot/slot={slot},{WEB_PODS}");
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn identities(pods: &[Pod]) -> BTreeSet<(String, String)> {
    pods.iter()
        .map(|p| {
            (
                p.metadata.name.clone().unwrap_or_default(),
                p.metadata.uid.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn pod_ips(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect()
}

async fn ready_endpoint_ips(client: &Client, ns: &str, service: &str) -> BTreeSet<String> {
    let Some(endpoints) = Api::<Endpoints>::namespaced(client.clone(), ns)
        .get_opt(service)
        .await
        .expect("get endpoints")
    else {
        return BTreeSet::new();
    };
    endpoints
        .subsets
        .unwrap_or_default()
        .into_iter()
        .flat_map(|s| s.addresses.unwrap_or_default())
        .map(|a| a.ip)
        .collect()
}

async fn deployment_generation(client: &Client, ns: &str, name: &str) -> Option<i64> {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("get deployment")
        .metadata
        .generation
}

/// Waits until the production Service's ready endpoints are exactly the `production` slot's pods
/// and the stage Service's are exactly the `stage` slot's pods (two each).
async fn wait_for_routing(client: &Client, ns: &str, production: &str, stage: &str, who: &str) {
    let start = Instant::now();
    loop {
        let prod_ips = pod_ips(&slot_pods(client, ns, REL, production).await);
        let stage_ips = pod_ips(&slot_pods(client, ns, REL, stage).await);
        let prod_eps = ready_endpoint_ips(client, ns, REL).await;
        let stage_eps = ready_endpoint_ips(client, ns, &format!("{REL}-stage")).await;
        let settled = prod_ips.len() == 2
            && stage_ips.len() == 2
            && prod_eps == prod_ips
            && stage_eps == stage_ips;
        if settled {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{who}: after {DEADLINE:?} production ({production}) pods {prod_ips:?} vs endpoints \
             {prod_eps:?}; stage ({stage}) pods {stage_ips:?} vs endpoints {stage_eps:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

with_both_helms!(
    example_app_runs_deploy_swap_clean,
    a_typo_in_values_fails_the_install_naming_the_key,
    a_stage_config_change_restarts_only_the_stage_slot,
    autoscaled_replicas_belong_to_the_autoscaler,
    a_failed_migration_runs_again_once_its_job_is_deleted,
    workers_and_cron_jobs_follow_production,
    an_upgrade_from_chart_0_2_0_restarts_no_web_pod,
);

fn example_app() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/web-app.yaml")
}

fn chart() -> String {
    common::chart_dir()
        .to_str()
        .expect("UTF-8 chart path")
        .to_string()
}

/// A test namespace with bgslot and helm pointed at it, deleted when the test ends however it ends.
async fn env(major: u32, prefix: &str) -> (Env, NamespaceGuard) {
    let env = Env::new(major, prefix).await;
    let guard = NamespaceGuard(env.ns.clone());
    (env, guard)
}

/// Runs helm in the test's namespace, panicking with its stderr when it fails.
fn helm(env: &Env, args: &[&str]) -> String {
    let mut full = args.to_vec();
    full.extend(["-n", &env.ns]);
    env.helm.run(&full)
}

/// Polls `check` every 250 ms until it returns Ok, failing after `DEADLINE` with what it last saw.
async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(done) => return done,
            Err(seen) => assert!(
                start.elapsed() < DEADLINE,
                "timed out after {DEADLINE:?} waiting until {what}; last seen: {seen}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The Deployment once its rollout is complete with at least `at_least` available replicas.
async fn settled(env: &Env, name: &str, at_least: i32) -> Deployment {
    until(
        &format!("{name} is rolled out with at least {at_least} available"),
        || async {
            let d = env
                .deployments()
                .get(name)
                .await
                .map_err(|e| e.to_string())?;
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let s = d.status.clone().unwrap_or_default();
            let done = s.observed_generation == d.metadata.generation
                && s.updated_replicas.unwrap_or(0) == want
                && s.available_replicas.unwrap_or(0) == want
                && s.replicas.unwrap_or(0) == want
                && want >= at_least;
            if done {
                Ok(d)
            } else {
                Err(format!("spec.replicas {want}, status {s:?}"))
            }
        },
    )
    .await
}

fn jobs(env: &Env) -> Api<Job> {
    Api::namespaced(env.client.clone(), &env.ns)
}

/// The migration Jobs of one slot of `release`, found by label as bgslot finds them.
async fn slot_jobs(env: &Env, release: &str, slot: &str) -> Vec<Job> {
    let selector = format!(
        "app.kubernetes.io/instance={release},bgslot/slot={slot},app.kubernetes.io/component=migration"
    );
    jobs(env)
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("list jobs")
        .items
}

/// The slot's one migration Job once it has finished (succeeded or failed).
async fn finished_job(env: &Env, release: &str, slot: &str) -> Job {
    until(
        &format!("the {slot} migration of {release} finishes"),
        || async {
            let jobs = slot_jobs(env, release, slot).await;
            match jobs.as_slice() {
                [job] => {
                    let s = job.status.clone().unwrap_or_default();
                    if s.succeeded.unwrap_or(0) > 0 || job_failed(job) {
                        Ok(job.clone())
                    } else {
                        Err(format!("{:?}: {s:?}", job.metadata.name))
                    }
                }
                other => Err(format!("{} Jobs", other.len())),
            }
        },
    )
    .await
}

fn job_failed(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Failed" && c.status == "True"))
}

fn succeeded(job: &Job) -> bool {
    job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) > 0
}

fn uid(meta: &kube::api::ObjectMeta) -> String {
    meta.uid.clone().unwrap_or_default()
}

/// Names of the objects of `kind` in group `group` labelled `selector`, in whatever version the
/// server serves.
async fn names_of(env: &Env, group: &str, kind: &str, selector: &str) -> Vec<String> {
    let (api, _) = env.api_of(group, kind).await;
    let mut names: Vec<String> = api
        .list(&ListParams::default().labels(selector))
        .await
        .expect("list")
        .items
        .into_iter()
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .filter_map(|o| o.metadata.name)
        .collect();
    names.sort();
    names
}

/// Everything of `slot` the example app renders, by kind.
async fn slot_objects(env: &Env, release: &str, slot: &str) -> Vec<String> {
    let selector = format!("app.kubernetes.io/instance={release},bgslot/slot={slot}");
    let mut all = Vec::new();
    for (group, kind) in [
        ("apps", "Deployment"),
        ("batch", "Job"),
        ("", "ConfigMap"),
        ("", "Secret"),
        ("autoscaling", "HorizontalPodAutoscaler"),
        ("policy", "PodDisruptionBudget"),
        ("batch", "CronJob"),
    ] {
        for name in names_of(env, group, kind, &selector).await {
            all.push(format!("{kind}/{name}"));
        }
    }
    all
}

/// Service name -> the slot its live selector picks, for every Service of `release` with `role`.
async fn selectors_of_role(
    env: &Env,
    release: &str,
    role: &str,
) -> std::collections::BTreeMap<String, String> {
    Api::<Service>::namespaced(env.client.clone(), &env.ns)
        .list(&ListParams::default().labels(&format!(
            "app.kubernetes.io/instance={release},bgslot/role={role}"
        )))
        .await
        .expect("list services")
        .items
        .into_iter()
        .map(|s| {
            let slot = s
                .spec
                .and_then(|s| s.selector)
                .and_then(|s| s.get("bgslot/slot").cloned())
                .unwrap_or_default();
            (s.metadata.name.unwrap_or_default(), slot)
        })
        .collect()
}

/// The example web app through bgslot's whole cycle: config objects, Secret env, sidecar, init
/// container, a migration per version, two ports, HPA, PDB, Ingress with TLS and a second
/// Service pair, on the API server as it is.
async fn example_app_runs_deploy_swap_clean(major: u32) {
    let (env, _cleanup) = env(major, "example").await;
    let who = env.helm.name();
    let rel = "shop";
    // The database URL comes from a Secret the example expects to exist.
    let db: Secret = serde_json::from_value(json!({
        "metadata": {"name": "shop-db"},
        "stringData": {"url": "postgres://shop@db/shop"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), &env.ns)
        .create(&PostParams::default(), &db)
        .await
        .expect("create shop-db");

    let session_key = "session-key-that-must-stay-secret";
    let example = example_app();
    let set = format!("secretEnv.SESSION_KEY={session_key}");
    let r = env
        .bgslot(&[
            "deploy",
            rel,
            "--tag",
            "v1",
            "-f",
            example.to_str().unwrap(),
            "--set",
            &set,
        ])
        .await
        .must_succeed();
    assert!(
        !r.stdout.contains(session_key) && !r.stderr.contains(session_key),
        "{who}: bgslot printed a secret value: {r:?}"
    );
    let notes = helm(&env, &["get", "notes", rel]);
    assert!(
        !notes.contains(session_key),
        "{who}: NOTES show a secret value: {notes}"
    );
    let stored = Api::<Secret>::namespaced(env.client.clone(), &env.ns)
        .get("shop-blue-secret-env")
        .await
        .expect("blue's Secret");
    assert_eq!(
        stored.data.unwrap_or_default().get("SESSION_KEY"),
        Some(&ByteString(session_key.as_bytes().to_vec())),
        "{who}"
    );
    let blue_job = finished_job(&env, rel, "blue").await;
    assert!(
        succeeded(&blue_job),
        "{who}: blue's migration failed: {:?}",
        blue_job.status
    );
    // The HPA raises the new Deployment (created without replicas) to its minimum of 2.
    settled(&env, "shop-blue", 2).await;
    // The queue consumer runs its 2 pods in production.
    settled(&env, "shop-blue-consumer", 2).await;
    let blue_objects = slot_objects(&env, rel, "blue").await;
    let blue_job_name = blue_job.metadata.name.clone().unwrap();
    assert_eq!(
        blue_objects,
        [
            "Deployment/shop-blue".to_string(),
            "Deployment/shop-blue-consumer".into(),
            format!("Job/{blue_job_name}"),
            "ConfigMap/shop-blue-config-env".into(),
            "ConfigMap/shop-blue-config-files".into(),
            "Secret/shop-blue-secret-env".into(),
            "HorizontalPodAutoscaler/shop-blue".into(),
            "PodDisruptionBudget/shop-blue".into(),
            "PodDisruptionBudget/shop-blue-consumer".into(),
            "CronJob/shop-blue-nightly-report".into(),
        ],
        "{who}"
    );
    let ingresses = names_of(
        &env,
        "networking.k8s.io",
        "Ingress",
        &format!("app.kubernetes.io/instance={rel}"),
    )
    .await;
    assert_eq!(ingresses, ["shop"], "{who}");

    // v2 goes to green, with its own migration; production stays on blue.
    env.bgslot(&["deploy", rel, "--tag", "v2"])
        .await
        .must_succeed();
    let green_job = finished_job(&env, rel, "green").await;
    assert!(
        succeeded(&green_job),
        "{who}: green's migration failed: {:?}",
        green_job.status
    );
    assert_ne!(green_job.metadata.name, blue_job.metadata.name, "{who}");
    let blue = settled(&env, "shop-blue", 2).await;
    let blue_replicas = blue.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    settled(&env, "shop-green", blue_replicas).await;
    // The staged version consumes nothing and runs no schedule.
    assert_eq!(
        replicas_of(&env, "shop-green-consumer").await,
        Some(0),
        "{who}"
    );
    assert_eq!(
        replicas_of(&env, "shop-blue-consumer").await,
        Some(2),
        "{who}"
    );
    assert_eq!(
        cron_suspend(&env, "shop-green-nightly-report").await,
        Some(true),
        "{who}"
    );
    assert_eq!(
        cron_suspend(&env, "shop-blue-nightly-report").await,
        Some(false),
        "{who}"
    );
    assert_eq!(
        selectors_of_role(&env, rel, "production").await,
        [
            ("shop".to_string(), "blue".to_string()),
            ("shop-internal".into(), "blue".into())
        ]
        .into(),
        "{who}"
    );
    let blue_pods = identities(&slot_pods(&env.client, &env.ns, rel, "blue").await);

    env.bgslot(&["swap", rel, "--expect-tag", "v2"])
        .await
        .must_succeed();
    assert_eq!(
        selectors_of_role(&env, rel, "production").await,
        [
            ("shop".to_string(), "green".to_string()),
            ("shop-internal".into(), "green".into())
        ]
        .into(),
        "{who}: every production Service moved"
    );
    assert_eq!(
        selectors_of_role(&env, rel, "stage").await,
        [
            ("shop-internal-stage".to_string(), "blue".to_string()),
            ("shop-stage".into(), "blue".into())
        ]
        .into(),
        "{who}"
    );
    env.await_endpoints("shop", "green", blue_replicas as usize)
        .await;
    env.await_endpoints("shop-internal", "green", blue_replicas as usize)
        .await;
    // The consumer and the nightly report moved with production.
    settled(&env, "shop-green-consumer", 2).await;
    assert_eq!(
        replicas_of(&env, "shop-blue-consumer").await,
        Some(0),
        "{who}"
    );
    assert_eq!(
        cron_suspend(&env, "shop-green-nightly-report").await,
        Some(false),
        "{who}"
    );
    assert_eq!(
        cron_suspend(&env, "shop-blue-nightly-report").await,
        Some(true),
        "{who}"
    );
    // The swap restarted nothing and reran no migration.
    assert_eq!(
        identities(&slot_pods(&env.client, &env.ns, rel, "blue").await),
        blue_pods,
        "{who}"
    );
    assert_eq!(
        env.deployments()
            .get("shop-blue")
            .await
            .unwrap()
            .metadata
            .generation,
        blue.metadata.generation,
        "{who}"
    );
    for (slot, before) in [("blue", &blue_job), ("green", &green_job)] {
        let now: Vec<String> = slot_jobs(&env, rel, slot)
            .await
            .iter()
            .map(|j| uid(&j.metadata))
            .collect();
        assert_eq!(
            now,
            [uid(&before.metadata)],
            "{who}: the swap touched {slot}'s migration Job"
        );
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    env.bgslot(&["clean", rel, "--min-age", "1s"])
        .await
        .must_succeed();
    until(
        &format!("{who}: clean removes every blue object"),
        || async {
            let left = slot_objects(&env, rel, "blue").await;
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    )
    .await;
    let green_objects = slot_objects(&env, rel, "green").await;
    assert_eq!(green_objects.len(), 10, "{who}: {green_objects:?}");
}

async fn a_typo_in_values_fails_the_install_naming_the_key(major: u32) {
    let (env, _cleanup) = env(major, "typo").await;
    let who = env.helm.name();
    let out = env
        .helm
        .command()
        .args([
            "install",
            REL,
            &chart(),
            "-n",
            &env.ns,
            "--set",
            "replicaCont=3",
        ])
        .output()
        .expect("run helm");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{who}: a typo installed: {stderr}");
    assert!(
        stderr.contains("schema") && stderr.contains("replicaCont"),
        "{who}: {stderr}"
    );
    // Through bgslot the same error reaches the user, and nothing is installed either way.
    env.bgslot(&["deploy", REL, "--tag", "v1", "--set", "blue.replicaCont=3"])
        .await
        .must_exit(1)
        .must_say("replicaCont");
    // Helm keeps every revision, failed ones included, in a Secret labelled owner=helm.
    let records = names_of(&env, "", "Secret", "owner=helm").await;
    assert_eq!(
        records,
        Vec::<String>::new(),
        "{who}: a release was recorded"
    );
}

/// The pod template checksum of a Deployment.
fn checksum(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get("checksum/config")
        .cloned()
}

async fn a_stage_config_change_restarts_only_the_stage_slot(major: u32) {
    let (env, _cleanup) = env(major, "config").await;
    let who = env.helm.name();
    let chart = chart();
    helm(
        &env,
        &[
            "install",
            REL,
            &chart,
            "--set",
            "green.enabled=true,config.env.MODE=one",
            "--set",
            "config.files.app\\.conf=one",
        ],
    );
    let blue = settled(&env, "web-blue", 2).await;
    let green = settled(&env, "web-green", 2).await;
    let blue_pods = identities(&slot_pods(&env.client, &env.ns, REL, "blue").await);
    assert!(
        checksum(&blue).is_some() && checksum(&green).is_some(),
        "{who}"
    );

    // green is the stage slot: a new file for it only.
    helm(
        &env,
        &[
            "upgrade",
            REL,
            &chart,
            "--reuse-values",
            "--set",
            "green.config.files.app\\.conf=two",
        ],
    );
    let green_after = until(
        &format!("{who}: green rolls out its new config"),
        || async {
            let d = env
                .deployments()
                .get("web-green")
                .await
                .map_err(|e| e.to_string())?;
            if d.metadata.generation > green.metadata.generation {
                Ok(d)
            } else {
                Err(format!("generation {:?}", d.metadata.generation))
            }
        },
    )
    .await;
    assert_ne!(
        checksum(&green_after),
        checksum(&green),
        "{who}: green's checksum"
    );
    settled(&env, "web-green", 2).await;
    let blue_after = env.deployments().get("web-blue").await.unwrap();
    assert_eq!(
        blue_after.metadata.generation, blue.metadata.generation,
        "{who}: blue was changed"
    );
    assert_eq!(
        checksum(&blue_after),
        checksum(&blue),
        "{who}: blue's checksum"
    );
    assert_eq!(
        identities(&slot_pods(&env.client, &env.ns, REL, "blue").await),
        blue_pods,
        "{who}: blue's pods restarted"
    );
    let configmaps: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.ns);
    let file = |cm: ConfigMap| cm.data.unwrap_or_default().get("app.conf").cloned();
    assert_eq!(
        file(configmaps.get("web-green-config-files").await.unwrap()).as_deref(),
        Some("two"),
        "{who}"
    );
    assert_eq!(
        file(configmaps.get("web-blue-config-files").await.unwrap()).as_deref(),
        Some("one"),
        "{who}"
    );

    // A flip restarts nothing.
    let green_generation = env
        .deployments()
        .get("web-green")
        .await
        .unwrap()
        .metadata
        .generation;
    helm(
        &env,
        &[
            "upgrade",
            REL,
            &chart,
            "--reuse-values",
            "--set",
            "productionSlot=green",
        ],
    );
    for (name, generation) in [
        ("web-blue", blue.metadata.generation),
        ("web-green", green_generation),
    ] {
        assert_eq!(
            env.deployments()
                .get(name)
                .await
                .unwrap()
                .metadata
                .generation,
            generation,
            "{who}: the flip changed {name}"
        );
    }
}

/// The server-side appliers (Helm 4) that own `spec.replicas` of the Deployment. An owner by apply
/// would take the field back, or conflict with the scaler, at its next apply. Helm 3 writes with
/// create and patch, which own fields without ever conflicting, so there the replica count itself
/// is the evidence.
fn appliers_owning_replicas(d: &Deployment) -> Vec<String> {
    d.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.operation.as_deref() == Some("Apply"))
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
        })
        .map(|m| format!("{:?} {:?}", m.manager, m.operation))
        .collect()
}

async fn autoscaled_replicas_belong_to_the_autoscaler(major: u32) {
    let (env, _cleanup) = env(major, "hpa").await;
    let who = env.helm.name();
    let chart = chart();
    helm(
        &env,
        &[
            "install",
            REL,
            &chart,
            "--set",
            "green.enabled=true,autoscaling.enabled=true",
        ],
    );
    settled(&env, "web-blue", 2).await;
    let green = settled(&env, "web-green", 2).await;
    if major == 4 {
        let appliers: Vec<_> = green
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter(|m| m.operation.as_deref() == Some("Apply"))
            .collect();
        assert!(
            !appliers.is_empty(),
            "{who}: Helm 4 is expected to apply server-side"
        );
    }
    assert_eq!(
        appliers_owning_replicas(&green),
        Vec::<String>::new(),
        "{who}"
    );

    // What bgslot does to size a new slot: the scale subresource, as an HPA does.
    env.deployments()
        .patch_scale(
            "web-green",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .expect("scale web-green");
    settled(&env, "web-green", 4).await;

    for (what, set) in [
        ("a flip", "productionSlot=green"),
        ("a pod template change", "green.env.CHANGED=yes"),
    ] {
        helm(
            &env,
            &["upgrade", REL, &chart, "--reuse-values", "--set", set],
        );
        let d = settled(&env, "web-green", 4).await;
        assert_eq!(
            d.spec.as_ref().and_then(|s| s.replicas),
            Some(4),
            "{who}: {what} reset the autoscaled replicas"
        );
        assert_eq!(
            appliers_owning_replicas(&d),
            Vec::<String>::new(),
            "{who}: after {what}"
        );
    }
}

async fn a_failed_migration_runs_again_once_its_job_is_deleted(major: u32) {
    let (env, _cleanup) = env(major, "migrate").await;
    let who = env.helm.name();
    let chart = chart();
    let install = [
        "install",
        REL,
        &chart,
        "--set",
        "migrations.enabled=true,migrations.command[0]=migrate,migrations.backoffLimit=0",
        // The simulated kubelet fails a pod with this annotation (only the Job's pod has it).
        "--set-string",
        "migrations.podAnnotations.sim\\.bgslot\\.dev/fault=crash-loop",
    ];
    helm(&env, &install);
    let failed = finished_job(&env, REL, "blue").await;
    assert!(job_failed(&failed), "{who}: {:?}", failed.status);
    // The slot's Deployment is untouched by its migration's failure.
    settled(&env, "web-blue", 2).await;

    // An upgrade that changes nothing keeps the failed Job: the slot's version did not change.
    helm(&env, &["upgrade", REL, &chart, "--reuse-values"]);
    let kept = slot_jobs(&env, REL, "blue").await;
    assert_eq!(kept.len(), 1, "{who}");
    assert_eq!(uid(&kept[0].metadata), uid(&failed.metadata), "{who}");

    // What `deploy --replace` does: delete the failed Job (with its pods), write again.
    jobs(&env)
        .delete(
            failed.metadata.name.as_deref().unwrap(),
            &DeleteParams::background(),
        )
        .await
        .expect("delete the failed Job");
    until(&format!("{who}: the failed Job is gone"), || async {
        match slot_jobs(&env, REL, "blue").await.len() {
            0 => Ok(()),
            n => Err(format!("{n} Jobs")),
        }
    })
    .await;
    helm(&env, &["upgrade", REL, &chart, "--reuse-values"]);
    let rerun = finished_job(&env, REL, "blue").await;
    assert_eq!(
        rerun.metadata.name, failed.metadata.name,
        "{who}: same version, same name"
    );
    assert_ne!(
        uid(&rerun.metadata),
        uid(&failed.metadata),
        "{who}: a new run"
    );
}

/// `spec.replicas` of a Deployment.
async fn replicas_of(env: &Env, name: &str) -> Option<i32> {
    env.deployments()
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("get {name}: {e}"))
        .spec
        .and_then(|s| s.replicas)
}

/// The CronJobs API this server serves (batch/v1beta1 on 1.20, batch/v1 from 1.21).
async fn cron_jobs(env: &Env) -> (Api<DynamicObject>, String) {
    env.api_of("batch", "CronJob").await
}

/// `spec.suspend` of a CronJob.
async fn cron_suspend(env: &Env, name: &str) -> Option<bool> {
    let (api, _) = cron_jobs(env).await;
    api.get(name)
        .await
        .unwrap_or_else(|e| panic!("get CronJob {name}: {e}"))
        .data["spec"]["suspend"]
        .as_bool()
}

/// Waits until the worker Deployment `name` runs exactly `want` available pods (0: none left,
/// terminating ones included).
async fn worker_runs(env: &Env, name: &str, want: i32) {
    until(&format!("{name} runs {want} pod(s)"), || async {
        let d = env
            .deployments()
            .get(name)
            .await
            .map_err(|e| e.to_string())?;
        let spec = d.spec.as_ref().and_then(|s| s.replicas);
        let s = d.status.clone().unwrap_or_default();
        let selector = format!(
            "app.kubernetes.io/instance={REL},bgslot/workload=worker,app.kubernetes.io/component=consumer,bgslot/slot={}",
            d.metadata.labels.as_ref().and_then(|l| l.get("bgslot/slot")).cloned().unwrap_or_default()
        );
        let pods = Api::<Pod>::namespaced(env.client.clone(), &env.ns)
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| e.to_string())?
            .items
            .len() as i32;
        let done = spec == Some(want)
            && s.observed_generation == d.metadata.generation
            && s.available_replicas.unwrap_or(0) == want
            && s.ready_replicas.unwrap_or(0) == want
            && pods == want;
        if done {
            Ok(())
        } else {
            Err(format!("spec.replicas {spec:?}, {pods} pod(s), status {s:?}"))
        }
    })
    .await;
}

/// The pod template of a Deployment and the revision its controller gave it: a template change
/// makes a new revision (and new pods); a scale does not.
async fn template_and_revision(env: &Env, name: &str) -> (serde_json::Value, Option<String>) {
    let d = env.deployments().get(name).await.unwrap();
    let revision = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("deployment.kubernetes.io/revision").cloned());
    (
        serde_json::to_value(&d.spec.unwrap().template).unwrap(),
        revision,
    )
}

/// One worker and one CronJob on the real API server, with helm alone: the production slot's
/// worker runs `replicas`, the stage slot's none; a flip moves the replicas and the CronJobs'
/// suspend and restarts no web pod (nor changes a worker's pod template); a stop-first handover
/// (heldWorkers with the flip, then without) runs no consumer in between.
async fn workers_and_cron_jobs_follow_production(major: u32) {
    let (env, _cleanup) = env(major, "workers").await;
    let who = env.helm.name();
    let chart = chart();
    let values = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(
        values.path(),
        "green: {enabled: true}\n\
         config: {env: {MODE: fast}}\n\
         workers:\n  consumer:\n    command: [bundle, exec, sidekiq]\n    replicas: 2\n    terminationGracePeriodSeconds: 5\n\
         cronJobs:\n  nightly-report:\n    schedule: \"0 3 * * *\"\n    command: [bin/rails, reports:nightly]\n",
    )
    .unwrap();
    helm(
        &env,
        &[
            "install",
            REL,
            &chart,
            "-f",
            values.path().to_str().unwrap(),
        ],
    );
    let blue = settled(&env, "web-blue", 2).await;
    let green = settled(&env, "web-green", 2).await;
    worker_runs(&env, "web-blue-consumer", 2).await;
    worker_runs(&env, "web-green-consumer", 0).await;
    let (api, version) = cron_jobs(&env).await;
    assert_eq!(version, "batch/v1beta1", "{who}: this 1.20 server");
    let mut crons: Vec<String> = api
        .list(&ListParams::default().labels(&format!(
            "app.kubernetes.io/instance={REL},bgslot/workload=cronjob"
        )))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    crons.sort();
    assert_eq!(
        crons,
        ["web-blue-nightly-report", "web-green-nightly-report"],
        "{who}"
    );
    assert_eq!(
        cron_suspend(&env, "web-blue-nightly-report").await,
        Some(false),
        "{who}"
    );
    assert_eq!(
        cron_suspend(&env, "web-green-nightly-report").await,
        Some(true),
        "{who}"
    );
    let notes = helm(&env, &["get", "notes", REL]);
    for line in [
        "Workers (they run in the production slot; the stage slot runs none unless stageReplicas > 0):",
        "  consumer: blue (production) 2 replica(s), green (stage) 0 replica(s)",
        "  nightly-report: cronjob/web-blue-nightly-report \"0 3 * * *\"",
    ] {
        assert!(notes.lines().any(|l| l == line), "{who}: NOTES lack {line:?}:\n{notes}");
    }
    // The web Services' endpoints are the web pods only.
    let prod_eps = ready_endpoint_ips(&env.client, &env.ns, REL).await;
    assert_eq!(
        prod_eps,
        pod_ips(&slot_pods(&env.client, &env.ns, REL, "blue").await),
        "{who}: the production Service reaches a worker"
    );
    let web_pods = [
        identities(&slot_pods(&env.client, &env.ns, REL, "blue").await),
        identities(&slot_pods(&env.client, &env.ns, REL, "green").await),
    ];
    let templates = [
        template_and_revision(&env, "web-blue-consumer").await,
        template_and_revision(&env, "web-green-consumer").await,
    ];

    // The flip: one write moves the Services, the workers and the schedule.
    helm(
        &env,
        &[
            "upgrade",
            REL,
            &chart,
            "--reuse-values",
            "--set",
            "productionSlot=green",
        ],
    );
    worker_runs(&env, "web-green-consumer", 2).await;
    worker_runs(&env, "web-blue-consumer", 0).await;
    assert_eq!(
        cron_suspend(&env, "web-green-nightly-report").await,
        Some(false),
        "{who}"
    );
    assert_eq!(
        cron_suspend(&env, "web-blue-nightly-report").await,
        Some(true),
        "{who}"
    );
    for (name, before) in [("web-blue", &blue), ("web-green", &green)] {
        assert_eq!(
            env.deployments()
                .get(name)
                .await
                .unwrap()
                .metadata
                .generation,
            before.metadata.generation,
            "{who}: the flip changed {name}"
        );
    }
    assert_eq!(
        [
            identities(&slot_pods(&env.client, &env.ns, REL, "blue").await),
            identities(&slot_pods(&env.client, &env.ns, REL, "green").await),
        ],
        web_pods,
        "{who}: the flip restarted web pods"
    );
    assert_eq!(
        [
            template_and_revision(&env, "web-blue-consumer").await,
            template_and_revision(&env, "web-green-consumer").await,
        ],
        templates,
        "{who}: the flip changed a worker's pod template"
    );

    // stop-first back to blue: hold the worker with the flip, then release it.
    helm(
        &env,
        &[
            "upgrade",
            REL,
            &chart,
            "--reuse-values",
            "--set",
            "productionSlot=blue,heldWorkers[0]=consumer",
        ],
    );
    worker_runs(&env, "web-green-consumer", 0).await;
    worker_runs(&env, "web-blue-consumer", 0).await;
    assert_eq!(
        cron_suspend(&env, "web-blue-nightly-report").await,
        Some(false),
        "{who}"
    );
    helm(
        &env,
        &[
            "upgrade",
            REL,
            &chart,
            "--reuse-values",
            "--set-json",
            "heldWorkers=[]",
        ],
    );
    worker_runs(&env, "web-blue-consumer", 2).await;
    assert_eq!(
        replicas_of(&env, "web-green-consumer").await,
        Some(0),
        "{who}"
    );
    assert_eq!(
        env.deployments()
            .get("web-blue")
            .await
            .unwrap()
            .metadata
            .generation,
        blue.metadata.generation,
        "{who}: the handover changed web-blue"
    );
}

/// Chart 0.2.0 (as vendored from commit 2e49d32) installed, then upgraded to this chart the way
/// bgslot upgrades a chart (`--reset-then-reuse-values`) with a worker added: the web Deployments
/// keep their generation and their pods, and the worker runs.
async fn an_upgrade_from_chart_0_2_0_restarts_no_web_pod(major: u32) {
    let (env, _cleanup) = env(major, "upgrade").await;
    let who = env.helm.name();
    let old = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chart-0.2.0");
    helm(
        &env,
        &[
            "install",
            REL,
            old.to_str().unwrap(),
            "--set",
            "green.enabled=true,env.MODE=fast,config.env.LEVEL=3",
        ],
    );
    let blue = settled(&env, "web-blue", 2).await;
    let green = settled(&env, "web-green", 2).await;
    let pods = [
        identities(&slot_pods(&env.client, &env.ns, REL, "blue").await),
        identities(&slot_pods(&env.client, &env.ns, REL, "green").await),
    ];
    helm(
        &env,
        &[
            "upgrade",
            REL,
            &chart(),
            "--reset-then-reuse-values",
            "--set",
            "workers.consumer.command[0]=consume",
        ],
    );
    worker_runs(&env, "web-blue-consumer", 1).await;
    for (name, before) in [("web-blue", &blue), ("web-green", &green)] {
        let now = env.deployments().get(name).await.unwrap();
        assert_eq!(
            now.metadata.generation, before.metadata.generation,
            "{who}: the upgrade changed {name}'s spec"
        );
        assert_eq!(
            now.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("helm.sh/chart"))
                .map(String::as_str),
            Some("bgslot-0.3.0"),
            "{who}: {name} was upgraded"
        );
    }
    assert_eq!(
        [
            identities(&slot_pods(&env.client, &env.ns, REL, "blue").await),
            identities(&slot_pods(&env.client, &env.ns, REL, "green").await),
        ],
        pods,
        "{who}: the upgrade restarted web pods"
    );
}
