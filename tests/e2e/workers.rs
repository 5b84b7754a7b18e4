//! Workers and CronJobs follow production, on the real control plane with Helm 3 and Helm 4:
//! at every step of deploy → swap → rollback → swap → clean exactly the production slot's workers
//! run (and the stage's `stageReplicas`) and exactly one slot's CronJob is active; a `stop-first`
//! handover never runs both slots' workers at once (seen by a pod watch, with an `overlap` swap as
//! the control that shows the watch can see it); a slot staged small is brought to production's
//! capacity before the flip, and production never routes to fewer ready pods than it had (seen by
//! an Endpoints watch and by traffic through the node's proxy, with a hand-made flip as the
//! control), and a preview as large as production still ends at the swap (its HPA rendered);
//! workers that do not start fail the swap (exit 1) and `release` moves back.

use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::cli::Env;
use common::dataplane::Load;
use futures::StreamExt;
use k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Endpoints, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::json;

with_both_helms!(
    workers_and_cron_jobs_follow_production_through_every_step,
    stop_first_never_runs_two_versions_of_a_worker,
    a_slot_staged_small_is_promoted_before_the_flip,
    a_preview_as_large_as_production_ends_at_the_swap,
    workers_that_do_not_start_fail_the_swap_and_release_moves_back,
    a_worker_that_cannot_run_refuses_the_swap,
);

/// An app with a queue consumer (2 in production, none in stage) that takes 2 s to finish the
/// job in hand after SIGTERM (the node's `stop-delay`) within its 30 s grace period, and a
/// nightly CronJob.
fn values(dir: &std::path::Path, handover: &str) -> String {
    let path = dir.join("workers.yaml");
    std::fs::write(
        &path,
        format!(
            "workers:\n  consumer:\n    command: [bin/consume]\n    replicas: 2\n    terminationGracePeriodSeconds: 30\n    handover: {handover}\n    podAnnotations:\n      sim.bgslot.dev/stop-delay: 2s\ncronJobs:\n  nightly:\n    schedule: \"0 3 * * *\"\n    command: [bin/report]\n"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

/// What the node did to the processes of the `slot` consumer pods it stopped since `since` (a
/// `t`): for each pod, its events after its SIGTERM.
fn stopped_consumers(
    env: &Env,
    slot: &str,
    since: &str,
) -> BTreeMap<String, Vec<common::dataplane::PodEvent>> {
    let events = common::dataplane::pod_events();
    let mine: std::collections::BTreeSet<String> = events
        .iter()
        .filter(|e| e.event == "started" && e.pod.starts_with(&format!("{}/", env.ns)))
        .filter(|e| e.labels.get("bgslot/slot").map(String::as_str) == Some(slot))
        .filter(|e| {
            e.labels
                .get("app.kubernetes.io/component")
                .map(String::as_str)
                == Some("consumer")
        })
        .map(|e| e.pod.clone())
        .collect();
    let mut by_pod: BTreeMap<String, Vec<common::dataplane::PodEvent>> = BTreeMap::new();
    for e in events
        .into_iter()
        .filter(|e| mine.contains(&e.pod) && e.t.as_str() >= since && e.event != "started")
    {
        by_pod.entry(e.pod.clone()).or_default().push(e);
    }
    by_pod
}

/// The time now as the node's record writes it (RFC 3339, 6 fraction digits, UTC).
fn record_time() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// The consumer's pods in `slot` that run (Running and not terminating).
async fn consumers(env: &Env, slot: &str) -> usize {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let selector = format!(
        "app.kubernetes.io/instance=web,bgslot/slot={slot},bgslot/workload=worker,app.kubernetes.io/component=consumer"
    );
    pods.list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count()
}

/// The slots whose nightly CronJob is active (not suspended).
async fn active_cron_jobs(env: &Env) -> Vec<String> {
    let (api, _) = env.api_of("batch", "CronJob").await;
    let mut active: Vec<String> = api
        .list(
            &ListParams::default().labels("app.kubernetes.io/instance=web,bgslot/workload=cronjob"),
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|c| c.data["spec"]["suspend"] == json!(false))
        .filter_map(|c| c.metadata.labels?.get("bgslot/slot").cloned())
        .collect();
    active.sort();
    active
}

/// Asserts what runs now: the consumer pods per slot and where the CronJob is active.
#[track_caller]
fn expect(step: &str, seen: (usize, usize, Vec<String>), blue: usize, green: usize, cron: &[&str]) {
    assert_eq!(
        seen,
        (
            blue,
            green,
            cron.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        ),
        "after {step}: (blue consumers, green consumers, active CronJob slots)"
    );
}

async fn seen(env: &Env) -> (usize, usize, Vec<String>) {
    (
        consumers(env, "blue").await,
        consumers(env, "green").await,
        active_cron_jobs(env).await,
    )
}

async fn workers_and_cron_jobs_follow_production_through_every_step(major: u32) {
    let env = Env::new(major, "workers").await;
    let dir = tempfile::tempdir().unwrap();
    let file = values(dir.path(), "overlap");
    let installed = env
        .bgslot(&[
            "deploy",
            "web",
            "--tag",
            "v1",
            "--replicas",
            "2",
            "-f",
            &file,
            "-o",
            "json",
        ])
        .await
        .must_succeed()
        .json();
    assert_eq!(
        installed["workers"],
        json!([{"name": "consumer", "ready": 2, "desired": 2}])
    );
    expect("install", seen(&env).await, 2, 0, &["blue"]);

    let staged = env
        .bgslot(&["deploy", "web", "--tag", "v2", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert_eq!(
        staged["workers"],
        json!([{"name": "consumer", "ready": 0, "desired": 0}]),
        "stage consumes nothing"
    );
    expect("deploy", seen(&env).await, 2, 0, &["blue"]);
    let status = env.bgslot(&["status", "web"]).await.must_succeed();
    assert!(
        status.stdout.contains("consumer") && status.stdout.contains("2/2 consuming"),
        "{}",
        status.stdout
    );

    let planned = env
        .bgslot(&["swap", "web", "--dry-run"])
        .await
        .must_succeed();
    for effect in [
        "worker consumer (green) replicas: 0 -> 2",
        "worker consumer (blue) replicas: 2 -> 0",
        "CronJob nightly (green) suspend: true -> false",
        "CronJob nightly (blue) suspend: false -> true",
    ] {
        assert!(
            planned.stdout.contains(effect),
            "{effect} in {}",
            planned.stdout
        );
    }
    let before_swap = record_time();
    let swapped = env
        .bgslot(&["swap", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    // The node's record: each blue consumer got SIGTERM with its 30 s grace period, finished its
    // job in hand (2 s) and exited on its own, no SIGKILL.
    let stopped = stopped_consumers(&env, "blue", &before_swap);
    assert_eq!(
        stopped.len(),
        2,
        "both blue consumers were stopped: {stopped:#?}"
    );
    for (pod, events) in &stopped {
        let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(kinds, ["sigterm", "exited"], "{pod}: {events:#?}");
        assert_eq!(events[0].grace_period_s, Some(30.0), "{pod}");
        assert_eq!(
            (events[1].code, events[1].signal.as_deref()),
            (Some(0), None),
            "{pod} exited on its own"
        );
        let at =
            |e: &common::dataplane::PodEvent| e.t.parse::<k8s_openapi::jiff::Timestamp>().unwrap();
        let took = at(&events[1]).duration_since(at(&events[0]));
        assert!(
            took.as_secs_f64() >= 1.9,
            "{pod} had its time to finish: {took:?}"
        );
    }
    assert_eq!(
        (
            &swapped["workers"][0]["production"],
            &swapped["workers"][0]["stage"]
        ),
        (
            &json!({"slot": "green", "ready": 2, "desired": 2}),
            &json!({"slot": "blue", "ready": 0, "desired": 0})
        )
    );
    assert_eq!(
        swapped["cron_jobs"],
        json!([{"name": "nightly", "runs_in": "green"}])
    );
    expect("swap", seen(&env).await, 0, 2, &["green"]);

    env.bgslot(&["rollback", "web"]).await.must_succeed();
    expect("rollback", seen(&env).await, 2, 0, &["blue"]);
    env.bgslot(&["swap", "web"]).await.must_succeed();
    expect("the second swap", seen(&env).await, 0, 2, &["green"]);
    env.bgslot(&["clean", "web", "--min-age", "0s"])
        .await
        .must_succeed();
    expect("clean", seen(&env).await, 0, 2, &["green"]);
    let (api, _) = env.api_of("batch", "CronJob").await;
    let left = api
        .list(&ListParams::default().labels("bgslot/slot=blue"))
        .await
        .unwrap()
        .items;
    assert!(
        left.is_empty(),
        "clean removes the old slot's CronJob: {left:?}"
    );
    env.done().await;
}

/// Records, from a watch on the release's worker pods, whether the two slots ever had a worker
/// pod at once: a pod counts from the moment it runs until its object is gone (a terminating pod
/// may still be finishing its job).
struct Overlap {
    both_at_once: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Overlap {
    async fn watch(env: &Env) -> Overlap {
        let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
        let config = watcher::Config::default()
            .labels("app.kubernetes.io/instance=web,bgslot/workload=worker");
        let both_at_once = Arc::new(Mutex::new(Vec::new()));
        let seen = both_at_once.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut running: BTreeMap<String, String> = BTreeMap::new();
            let mut stream = std::pin::pin!(watcher(pods, config));
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                let mut note = |pod: &Pod| {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    let slot = pod
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("bgslot/slot"))
                        .cloned()
                        .unwrap_or_default();
                    let runs =
                        pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                    if runs {
                        running.insert(name, slot);
                    }
                };
                match event {
                    watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => note(&pod),
                    watcher::Event::Delete(pod) => {
                        running.remove(&pod.metadata.name.clone().unwrap_or_default());
                    }
                    watcher::Event::Init => running.clear(),
                    watcher::Event::InitDone => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }
                let slots: std::collections::BTreeSet<&String> = running.values().collect();
                if slots.len() > 1 {
                    seen.lock().unwrap().push(format!("{running:?}"));
                }
            }
        });
        ready_rx.await.expect("the pod watch started");
        Overlap { both_at_once, task }
    }

    fn stop(self) -> Vec<String> {
        self.task.abort();
        self.both_at_once.lock().unwrap().clone()
    }
}

async fn stop_first_never_runs_two_versions_of_a_worker(major: u32) {
    let env = Env::new(major, "stop-first").await;
    let dir = tempfile::tempdir().unwrap();
    let file = values(dir.path(), "stop-first");
    env.bgslot(&[
        "deploy",
        "web",
        "--tag",
        "v1",
        "--replicas",
        "2",
        "-f",
        &file,
    ])
    .await
    .must_succeed();
    env.bgslot(&["deploy", "web", "--tag", "v2"])
        .await
        .must_succeed();
    let watch = Overlap::watch(&env).await;
    let swapped = env
        .bgslot(&["swap", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    let overlaps = watch.stop();
    assert!(
        overlaps.is_empty(),
        "stop-first ran both slots' workers at once: {overlaps:?}"
    );
    assert_eq!(swapped["workers"][0]["handover"], "stop-first");
    assert!(
        swapped["workers"][0]["gap_ms"].as_u64().is_some(),
        "the gap is reported: {swapped}"
    );
    assert_eq!(
        swapped["revision"], 4,
        "two writes: the flip holding the worker, then its start"
    );
    let history = env
        .bgslot(&["history", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    let steps: Vec<&str> = history["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["operation"].as_str())
        .collect();
    assert_eq!(steps, ["install", "deploy", "swap", "start-workers"]);
    expect("a stop-first swap", seen(&env).await, 0, 2, &["green"]);

    // The control: the same watch sees an overlap swap run both slots' workers for a moment.
    env.helm.run(&[
        "upgrade",
        "web",
        common::chart_dir().to_str().unwrap(),
        "-n",
        &env.ns,
        "--reuse-values",
        "--set",
        "workers.consumer.handover=overlap",
    ]);
    let watch = Overlap::watch(&env).await;
    env.bgslot(&["rollback", "web"]).await.must_succeed();
    assert!(
        !watch.stop().is_empty(),
        "an overlap handover runs both for a moment, and the watch sees it"
    );
    env.done().await;
}

/// The lowest number of ready endpoints the production Service `web` had while it was watched.
struct FewestEndpoints {
    fewest: Arc<Mutex<Option<usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FewestEndpoints {
    async fn watch(env: &Env) -> FewestEndpoints {
        let eps: Api<Endpoints> = Api::namespaced(env.client.clone(), &env.ns);
        let config = watcher::Config::default().fields("metadata.name=web");
        let fewest = Arc::new(Mutex::new(None::<usize>));
        let seen = fewest.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut stream = std::pin::pin!(watcher(eps, config));
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                let count = |ep: &Endpoints| {
                    ep.subsets
                        .iter()
                        .flatten()
                        .map(|s| s.addresses.as_ref().map(Vec::len).unwrap_or(0))
                        .sum::<usize>()
                };
                match event {
                    watcher::Event::Apply(ep) | watcher::Event::InitApply(ep) => {
                        let n = count(&ep);
                        let mut f = seen.lock().unwrap();
                        *f = Some(f.map_or(n, |m| m.min(n)));
                    }
                    watcher::Event::InitDone => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    _ => {}
                }
            }
        });
        ready_rx.await.expect("the endpoints watch started");
        FewestEndpoints { fewest, task }
    }

    fn stop(self) -> usize {
        self.task.abort();
        self.fewest
            .lock()
            .unwrap()
            .expect("the endpoints were seen")
    }
}

async fn a_slot_staged_small_is_promoted_before_the_flip(major: u32) {
    let env = Env::new(major, "preview").await;
    env.bgslot(&["deploy", "web", "--tag", "v1", "--replicas", "3"])
        .await
        .must_succeed();
    let staged = env
        .bgslot(&[
            "deploy",
            "web",
            "--tag",
            "v2",
            "--preview-replicas",
            "1",
            "-o",
            "json",
        ])
        .await
        .must_succeed()
        .json();
    assert_eq!(
        (staged["preview"].as_bool(), staged["ready"].as_i64()),
        (Some(true), Some(1))
    );
    let status = env
        .bgslot(&["status", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert_eq!(status["slots"][1]["preview"], true);
    let planned = env
        .bgslot(&["swap", "web", "--dry-run"])
        .await
        .must_succeed();
    assert!(
        planned
            .stdout
            .contains("promote: bring green from 1 to 3 pods"),
        "{}",
        planned.stdout
    );

    let load = Load::start(&format!("{}/web", env.ns), 40.0).await;
    let watch = FewestEndpoints::watch(&env).await;
    let swapped = env
        .bgslot(&["swap", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    common::dataplane::await_routes(&format!("{}/web", env.ns), "web-green-", 3).await;
    let fewest = watch.stop();
    let summary = load.stop().await;
    assert_eq!(swapped["promoted"], json!({"from": 1, "to": 3}));
    assert_eq!(swapped["ready_endpoints"], 3);
    assert!(
        fewest >= 3,
        "production routed to {fewest} ready pods during the swap"
    );
    assert_eq!(summary.failed, 0, "{summary:?}");
    assert!(summary.requests > 0);
    let history = env
        .bgslot(&["history", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    let steps: Vec<&str> = history["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["operation"].as_str())
        .collect();
    assert_eq!(steps, ["install", "deploy", "promote", "swap"]);

    // The control: a flip made by hand, without the promotion, and the watch sees production fall
    // to the small slot's one pod.
    env.bgslot(&["clean", "web", "--min-age", "0s"])
        .await
        .must_succeed();
    env.bgslot(&["deploy", "web", "--tag", "v3", "--preview-replicas", "1"])
        .await
        .must_succeed();
    let watch = FewestEndpoints::watch(&env).await;
    env.helm.run(&[
        "upgrade",
        "web",
        common::chart_dir().to_str().unwrap(),
        "-n",
        &env.ns,
        "--reuse-values",
        "--set-string",
        "productionSlot=blue",
    ]);
    env.await_endpoints("web", "blue", 1).await;
    assert_eq!(
        watch.stop(),
        1,
        "a hand-made flip to the small slot leaves production one pod"
    );
    env.done().await;
}

/// The autoscalers of the release's slots, by name.
async fn autoscalers(env: &Env) -> Vec<String> {
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(env.client.clone(), &env.ns);
    let mut names: Vec<String> = api
        .list(&ListParams::default())
        .await
        .expect("list HPAs")
        .items
        .into_iter()
        .filter_map(|h| h.metadata.name)
        .collect();
    names.sort();
    names
}

/// A preview that already has production's size is still a preview: the swap ends it, so the new
/// production slot gets its HPA back instead of serving at the preview's fixed size.
async fn a_preview_as_large_as_production_ends_at_the_swap(major: u32) {
    let env = Env::new(major, "preview-full").await;
    env.bgslot(&[
        "deploy",
        "web",
        "--tag",
        "v1",
        "--set",
        "autoscaling.enabled=true",
    ])
    .await
    .must_succeed();
    env.bgslot(&["deploy", "web", "--tag", "v2", "--preview-replicas", "2"])
        .await
        .must_succeed();
    assert_eq!(
        autoscalers(&env).await,
        ["web-blue"],
        "a preview runs without an HPA"
    );
    let swap = env
        .bgslot(&["swap", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert_eq!(swap["promoted"], json!({"from": 2, "to": 2}), "{swap}");
    let status = env
        .bgslot(&["status", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    let green = status["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slot"] == "green")
        .unwrap();
    assert_eq!(
        (&green["role"], &green["preview"], &green["desired"]),
        (&json!("production"), &json!(false), &json!(2)),
        "{status}"
    );
    assert_eq!(autoscalers(&env).await, ["web-blue", "web-green"]);
    env.done().await;
}

async fn workers_that_do_not_start_fail_the_swap_and_release_moves_back(major: u32) {
    let env = Env::new(major, "workers-fail").await;
    let dir = tempfile::tempdir().unwrap();
    let file = values(dir.path(), "overlap");
    env.bgslot(&[
        "deploy",
        "web",
        "--tag",
        "v1",
        "--replicas",
        "2",
        "-f",
        &file,
    ])
    .await
    .must_succeed();
    // The new version's consumer never becomes ready; stage runs none, so only the swap finds out.
    let never = r"workers.consumer.podAnnotations.sim\.bgslot\.dev/fault=never-ready";
    env.bgslot(&["deploy", "web", "--tag", "v2", "--slot-set", never])
        .await
        .must_succeed();
    let failed = env
        .bgslot(&["swap", "web", "--timeout", "20s"])
        .await
        .must_exit(1)
        .must_say("the workers of green did not all become available")
        .must_say("pod web-green-consumer-")
        .must_say("`bgslot rollback web` moves everything back");
    drop(failed);
    env.bgslot(&["rollback", "web"]).await.must_succeed();
    expect(
        "rollback of a failed swap",
        seen(&env).await,
        2,
        0,
        &["blue"],
    );

    // release moves everything back on its own.
    env.bgslot(&["clean", "web", "--min-age", "0s", "--force"])
        .await
        .must_succeed();
    env.bgslot(&[
        "release",
        "web",
        "--tag",
        "v3",
        "--slot-set",
        never,
        "--timeout",
        "20s",
    ])
    .await
    .must_exit(1)
    .must_say("production was swapped back to blue");
    let fp = env.fingerprint("web").await;
    assert_eq!(fp.selectors["web"], "blue");
    expect(
        "a release whose workers did not start",
        seen(&env).await,
        2,
        0,
        &["blue"],
    );
    env.done().await;
}

/// A staged worker runs no pods, so nothing shows it cannot run until production moves: swap
/// refuses one whose own extraEnv names a ConfigMap that does not exist, and, once that exists,
/// one left on another image.
async fn a_worker_that_cannot_run_refuses_the_swap(major: u32) {
    let env = Env::new(major, "workers-image").await;
    let dir = tempfile::tempdir().unwrap();
    let file = values(dir.path(), "overlap");
    env.bgslot(&[
        "deploy",
        "web",
        "--tag",
        "v1",
        "--replicas",
        "2",
        "-f",
        &file,
    ])
    .await
    .must_succeed();
    // The staged consumer's own extraEnv names a ConfigMap nobody created.
    env.bgslot(&[
        "deploy",
        "web",
        "--tag",
        "v2",
        "--slot-set",
        "workers.consumer.extraEnv[0].name=QUEUE_URL",
        "--slot-set",
        "workers.consumer.extraEnv[0].valueFrom.configMapKeyRef.name=queues",
        "--slot-set",
        "workers.consumer.extraEnv[0].valueFrom.configMapKeyRef.key=url",
    ])
    .await
    .must_succeed();
    let before = env.fingerprint("web").await;
    env.bgslot(&["swap", "web"]).await.must_exit(3).must_say(
        "the green slot's worker consumer needs ConfigMap queues, which does not exist in the namespace",
    );
    assert_eq!(env.fingerprint("web").await, before);
    let queues: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "queues"}, "data": {"url": "amqp://mq/orders"}}),
    )
    .unwrap();
    Api::namespaced(env.client.clone(), &env.ns)
        .create(&Default::default(), &queues)
        .await
        .unwrap();

    // With the ConfigMap there, someone points the staged consumer at another image by hand.
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "consumer", "image": "nginx:v1"}]}}}});
    env.deployments()
        .patch(
            "web-green-consumer",
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
        .unwrap();
    let before = env.fingerprint("web").await;
    env.bgslot(&["swap", "web"]).await.must_exit(3).must_say(
        "the green slot's worker consumer would run nginx:v1, not what its web pods run (nginx:v2)",
    );
    assert_eq!(env.fingerprint("web").await, before);

    // Redeployed with --force (Helm 4: the hand-edited image belongs to another field manager
    // until taken back), the slot can run and goes live.
    env.bgslot(&["deploy", "web", "--tag", "v3", "--replace", "--force"])
        .await
        .must_succeed();
    env.bgslot(&["swap", "web", "--expect-tag", "v3"])
        .await
        .must_succeed()
        .must_say("worker consumer: green 2/2 ready");
    env.done().await;
}
