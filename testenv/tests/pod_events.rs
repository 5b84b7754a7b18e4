//! The node's record, `$BGSLOT_TESTENV_DIR/pod-events.jsonl`, is what end-to-end tests stand on
//! to claim that a worker got its SIGTERM and its grace period, or that two slots' workers never
//! ran at once: it must show what the node really did, in the order it did it. These tests run
//! against the environment in KUBECONFIG/BGSLOT_TESTENV_DIR (`testenv run`), each in a namespace
//! of its own, and read only their own pods' lines from the shared record.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde::Deserialize;
use serde_json::json;

use common::{available, create_pod, in_namespace, pod_ready, wait_for, DEADLINE};

/// One line of the record, as testenv's `kubelet::events` documents it.
#[derive(Clone, Debug, Deserialize)]
struct PodEvent {
    t: String,
    event: String,
    pod: String,
    uid: String,
    pid: i32,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    grace_period_s: Option<f64>,
    kill_after_s: Option<f64>,
    reason: Option<String>,
    code: Option<i32>,
    signal: Option<String>,
}

impl PodEvent {
    fn at(&self) -> Timestamp {
        self.t
            .parse()
            .unwrap_or_else(|e| panic!("t of {self:?}: {e}"))
    }
}

/// Seconds from `a` to `b`.
fn secs(a: &PodEvent, b: &PodEvent) -> f64 {
    b.at().duration_since(a.at()).as_secs_f64()
}

fn record_path() -> PathBuf {
    let dir = std::env::var_os("BGSLOT_TESTENV_DIR").unwrap_or_else(|| {
        panic!("BGSLOT_TESTENV_DIR is not set: the node's record needs testenv's simulated node (testenv run / scripts/test)")
    });
    PathBuf::from(dir).join("pod-events.jsonl")
}

/// Every line of the record so far.
fn record() -> Vec<PodEvent> {
    let path = record_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    // A line being written may be cut short; only whole lines count.
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("parsing {l:?}: {e}")))
        .collect()
}

/// The events of pods of namespace `ns` whose name starts with `name`, in the record's order.
fn events_of(ns: &str, name: &str) -> Vec<PodEvent> {
    let prefix = format!("{ns}/{name}");
    record()
        .into_iter()
        .filter(|e| e.pod.starts_with(&prefix))
        .collect()
}

fn names(events: &[PodEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

/// Waits until `ns/name*`'s events satisfy `done`, and returns them.
async fn await_events(
    ns: &str,
    name: &str,
    what: &str,
    done: impl Fn(&[PodEvent]) -> bool,
) -> Vec<PodEvent> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let events = events_of(ns, name);
        if done(&events) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{ns}/{name}: no {what} in the record within {DEADLINE:?}; its lines: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until an `exited` line follows every `started` one of `ns/name*` (`count` processes).
async fn await_exits(ns: &str, name: &str, count: usize) -> Vec<PodEvent> {
    await_events(ns, name, &format!("{count} exits"), |events| {
        let count_of = |n: &str| events.iter().filter(|e| e.event == n).count();
        count_of("started") == count && count_of("exited") == count
    })
    .await
}

/// A pod like the chart's queue workers: a command, no port, no probe.
fn worker(name: &str, grace: i64, annotations: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "role": "worker" }, "annotations": annotations },
        "spec": {
            "terminationGracePeriodSeconds": grace,
            "containers": [{ "name": "worker", "image": "app:v1", "command": ["sh", "-c", "consume"] }],
        },
    }))
    .unwrap()
}

async fn start_ready(pods: &Api<Pod>, pod: Pod) -> Pod {
    let name = pod.metadata.name.clone().unwrap();
    create_pod(pods, &pod).await;
    wait_for(pods, &name, "Ready", |p| p.is_some_and(pod_ready)).await
}

#[tokio::test]
async fn a_stop_delay_within_the_grace_period_ends_in_an_exit_not_a_sigkill() {
    in_namespace("stop-delay", |client, ns| async move {
        let pods: Api<Pod> = Api::namespaced(client, &ns);
        let annotations = json!({ "sim.bgslot.dev/stop-delay": "2s" });
        let pod = start_ready(&pods, worker("worker", 30, annotations)).await;
        pods.delete("worker", &DeleteParams::default())
            .await
            .unwrap();
        let events = await_exits(&ns, "worker", 1).await;

        assert_eq!(
            names(&events),
            ["started", "sigterm", "exited"],
            "{events:#?}"
        );
        let [started, sigterm, exited] = &events[..] else {
            unreachable!()
        };
        assert_eq!(Some(&started.uid), pod.metadata.uid.as_ref());
        assert_eq!(
            started.labels.get("role").map(String::as_str),
            Some("worker")
        );
        assert!(started.pid > 0);
        assert!(events
            .iter()
            .all(|e| e.pid == started.pid && e.uid == started.uid));
        assert_eq!(sigterm.grace_period_s, Some(30.0));
        let kill_after = sigterm.kill_after_s.unwrap();
        assert!(kill_after > 29.0 && kill_after <= 30.0, "{sigterm:?}");
        assert_eq!((exited.code, exited.signal.as_deref()), (Some(0), None));
        let stopping = secs(sigterm, exited);
        assert!(
            (1.9..4.0).contains(&stopping),
            "exited {stopping:.3}s after SIGTERM; its stop delay is 2s"
        );
    })
    .await;
}

#[tokio::test]
async fn a_stop_delay_beyond_the_grace_period_ends_in_a_sigkill() {
    // The negative control of the test above: the same worker with a grace period of 1 s.
    in_namespace("stop-delay-kill", |client, ns| async move {
        let pods: Api<Pod> = Api::namespaced(client, &ns);
        let annotations = json!({ "sim.bgslot.dev/stop-delay": "2s" });
        start_ready(&pods, worker("worker", 1, annotations)).await;
        pods.delete("worker", &DeleteParams::default())
            .await
            .unwrap();
        let events = await_exits(&ns, "worker", 1).await;

        assert_eq!(
            names(&events),
            ["started", "sigterm", "sigkill", "exited"],
            "{events:#?}"
        );
        let [_, sigterm, sigkill, exited] = &events[..] else {
            unreachable!()
        };
        assert_eq!(sigterm.grace_period_s, Some(1.0));
        assert_eq!(sigkill.reason.as_deref(), Some("grace_period_over"));
        let granted = secs(sigterm, sigkill);
        assert!(
            (0.9..2.0).contains(&granted),
            "SIGKILL {granted:.3}s after SIGTERM; the grace period is 1s"
        );
        assert_eq!(
            (exited.code, exited.signal.as_deref()),
            (None, Some("SIGKILL"))
        );
    })
    .await;
}

#[tokio::test]
async fn events_of_two_pods_are_in_time_order() {
    in_namespace("order", |client, ns| async move {
        let pods: Api<Pod> = Api::namespaced(client, &ns);
        let quick = json!({ "sim.bgslot.dev/stop-delay": "500ms" });
        let slow = json!({ "sim.bgslot.dev/stop-delay": "2500ms" });
        start_ready(&pods, worker("quick", 30, quick)).await;
        start_ready(&pods, worker("slow", 30, slow)).await;
        let dp = DeleteParams::default();
        let (a, b) = tokio::join!(pods.delete("quick", &dp), pods.delete("slow", &dp));
        a.unwrap();
        b.unwrap();
        let quick = await_exits(&ns, "quick", 1).await;
        let slow = await_exits(&ns, "slow", 1).await;
        // A pod started after both ended.
        start_ready(&pods, worker("next", 30, json!({}))).await;
        let next = await_events(&ns, "next", "a start", |e| !e.is_empty()).await;

        let of = |events: &[PodEvent], name: &str| {
            events.iter().find(|e| e.event == name).cloned().unwrap()
        };
        let (quick_term, quick_exit) = (of(&quick, "sigterm"), of(&quick, "exited"));
        let (slow_term, slow_exit) = (of(&slow, "sigterm"), of(&slow, "exited"));
        for term in [&quick_term, &slow_term] {
            for exit in [&quick_exit, &slow_exit] {
                assert!(term.at() < exit.at(), "{term:?} not before {exit:?}");
            }
        }
        let apart = secs(&quick_exit, &slow_exit);
        assert!(
            apart > 1.0,
            "the quick worker exited {apart:.3}s before the slow one; their stop delays are 2s apart"
        );
        assert!(slow_exit.at() < next[0].at(), "{slow_exit:?} / {next:?}");

        // The whole record, every test's pods included, is in the order of its times, and its
        // times compare as strings.
        let all = record();
        for pair in all.windows(2) {
            assert!(pair[0].at() <= pair[1].at(), "out of order: {pair:#?}");
            assert!(pair[0].t <= pair[1].t, "{pair:#?}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_chart_like_worker_deployment_becomes_available_and_stops_gracefully_when_scaled_down() {
    // The chart's worker Deployments: no port, no probe, a command, 60 s to stop; a swap scales
    // the old slot's to zero.
    in_namespace("worker", |client, ns| async move {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let labels = json!({ "bgslot/slot": "blue", "bgslot/workload": "worker", "app.kubernetes.io/component": "consumer" });
        let d: Deployment = serde_json::from_value(json!({
            "metadata": { "name": "rel-blue-consumer" },
            "spec": {
                "replicas": 2,
                "selector": { "matchLabels": labels },
                "template": {
                    "metadata": { "labels": labels },
                    "spec": {
                        "terminationGracePeriodSeconds": 60,
                        "containers": [{
                            "name": "consumer", "image": "nginx:1.27", "imagePullPolicy": "IfNotPresent",
                            "command": ["sh", "-c", "consume"],
                        }],
                    },
                },
            },
        }))
        .unwrap();
        deployments.create(&PostParams::default(), &d).await.unwrap();
        wait_for(&deployments, "rel-blue-consumer", "2 available replicas", |d| {
            available(d, 2)
        })
        .await;
        let started = await_events(&ns, "rel-blue-consumer-", "2 starts", |e| e.len() >= 2).await;
        for e in &started {
            assert_eq!(e.event, "started");
            assert_eq!(e.labels.get("bgslot/slot").map(String::as_str), Some("blue"));
        }

        let scale = json!({ "spec": { "replicas": 0 } });
        deployments
            .patch("rel-blue-consumer", &PatchParams::default(), &Patch::Merge(&scale))
            .await
            .unwrap();
        let events = await_exits(&ns, "rel-blue-consumer-", 2).await;
        assert!(
            events.iter().all(|e| e.event != "sigkill"),
            "{events:#?}"
        );
        for e in events.iter().filter(|e| e.event == "sigterm") {
            assert_eq!(e.grace_period_s, Some(60.0), "{e:?}");
        }
        for e in events.iter().filter(|e| e.event == "exited") {
            assert_eq!((e.code, e.signal.as_deref()), (Some(0), None), "{e:?}");
        }
        assert_eq!(events.iter().filter(|e| e.event == "sigterm").count(), 2);
    })
    .await;
}

fn helm(args: &[&str], dir: &std::path::Path) {
    let helm =
        std::env::var_os("BGSLOT_HELM3").expect("BGSLOT_HELM3 is not set: testenv run sets it");
    let out = std::process::Command::new(&helm)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running helm");
    assert!(
        out.status.success(),
        "helm {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn helm_creates_default_chart_installs_serves_and_uninstalls_gracefully() {
    // nginx on port 80 named `http`, liveness and readiness `httpGet /` on it, a Service.
    in_namespace("helm-create", |client, ns| async move {
        let work = std::env::temp_dir().join(format!("testenv-helm-create-{ns}"));
        std::fs::create_dir_all(&work).unwrap();
        helm(&["create", "demo"], &work);
        helm(
            &[
                "install",
                "demo",
                "./demo",
                "-n",
                &ns,
                "--wait",
                "--timeout",
                "90s",
            ],
            &work,
        );
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        wait_for(&deployments, "demo", "1 available replica", |d| {
            available(d, 1)
        })
        .await;

        // It serves through its Service, as the chart's NOTES say.
        let addr = std::process::Command::new(env!("CARGO_BIN_EXE_testenv"))
            .args(["service-addr", &format!("{ns}/demo")])
            .output()
            .expect("running testenv service-addr");
        assert!(addr.status.success(), "{addr:?}");
        let addr = String::from_utf8(addr.stdout).unwrap();
        let body = get(addr.trim());
        assert!(body.contains(&format!("\"pod\":\"{ns}/demo-")), "{body}");

        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let pod_names: Vec<String> = pods
            .list(&ListParams::default().labels("app.kubernetes.io/instance=demo"))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        assert_eq!(pod_names.len(), 1, "{pod_names:?}");
        helm(&["uninstall", "demo", "-n", &ns, "--wait"], &work);
        let _ = std::fs::remove_dir_all(&work);
        let events = await_exits(&ns, &pod_names[0], 1).await;
        assert_eq!(
            names(&events),
            ["started", "sigterm", "exited"],
            "{events:#?}"
        );
        assert_eq!(events[1].grace_period_s, Some(30.0));
        assert_eq!(
            (events[2].code, events[2].signal.as_deref()),
            (Some(0), None)
        );
    })
    .await;
}

/// The body of a `GET /` to `addr`, retried for a few seconds while the proxy has no endpoint.
fn get(addr: &str) -> String {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut answer = String::new();
        let sent = std::net::TcpStream::connect(addr).and_then(|mut stream| {
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")?;
            stream.read_to_string(&mut answer)
        });
        if sent.is_ok() && answer.starts_with("HTTP/1.1 200 ") {
            return answer.split_once("\r\n\r\n").unwrap().1.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "GET / through {addr}: {sent:?} {answer}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
