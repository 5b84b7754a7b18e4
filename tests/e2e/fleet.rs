//! Runs across several clusters, on two real control planes side by side (see
//! `common::clusters`) and both helms: a release moves both clusters or neither; a failed stage
//! check changes no production; a failed production check swaps the first cluster back while
//! each cluster's production Endpoints, watched through the whole run, are never empty and never
//! hold two versions (with a negative control showing the watch sees both); a swap-back that
//! cannot happen (an API server stopped) exits 5 and names the command that ends the mix, which
//! then does; a Lease held in one cluster exits 4 and releases the other; two runs listing the
//! targets in opposite orders both finish; a mixed start, an unreachable target and a bad targets
//! file change nothing; a bundled release and a router release move together; a signal stops the
//! waves and swaps back.
//!
//! Needs testenv's simulated node (the data plane is checked with requests through each cluster's
//! proxy).

use crate::common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use common::cli::{Env, Run};
use common::clusters::{self, Plane};
use common::dataplane::{testenv_bin, version_behind};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::{json, Value};

with_both_helms!(
    a_release_moves_every_cluster_in_lockstep,
    a_failed_stage_check_on_the_second_target_touches_no_production,
    a_failed_production_check_swaps_back_and_production_never_breaks,
    a_swap_back_that_cannot_happen_exits_5_naming_the_command_that_ends_the_mix,
    a_lease_held_in_one_cluster_exits_4_and_releases_the_other,
    opposite_orders_both_finish_without_a_deadlock,
    a_mixed_start_an_unreachable_target_and_a_bad_file_change_nothing,
    a_first_install_that_fails_on_one_target_is_a_mix_the_run_again_ends,
    a_bundled_and_a_router_release_move_together,
);

/// Holds the second plane for a test: shared, or alone (the test that stops its API server).
#[allow(dead_code)]
enum Gate {
    Shared(tokio::sync::RwLockReadGuard<'static, ()>),
    Exclusive(tokio::sync::RwLockWriteGuard<'static, ()>),
}

/// One release, `web`, in a namespace of the same name on each of two clusters: target `a` on
/// the first, `b` on the second.
struct Pair {
    a: Env,
    b: Env,
    planes: [Plane; 2],
    dir: tempfile::TempDir,
    _gate: Gate,
}

impl Pair {
    async fn new(major: u32, prefix: &str, exclusive: bool) -> Pair {
        let gate = if exclusive {
            Gate::Exclusive(clusters::exclusive().await)
        } else {
            Gate::Shared(clusters::shared().await)
        };
        let (first, second) = (clusters::first(), clusters::second().await);
        let a = Env::new(major, prefix).await;
        let b = a
            .same_namespace_on(second.client().await, &second.kubeconfig_str())
            .await;
        Pair {
            a,
            b,
            planes: [first, second],
            dir: tempfile::tempdir().unwrap(),
            _gate: gate,
        }
    }

    fn env(&self, name: &str) -> &Env {
        if name == "a" {
            &self.a
        } else {
            &self.b
        }
    }

    fn plane(&self, name: &str) -> &Plane {
        &self.planes[if name == "a" { 0 } else { 1 }]
    }

    /// A targets file listing `order`, each target with its own kubeconfig (as a CI job with one
    /// secret per cluster has them).
    fn targets(&self, order: &[&str]) -> String {
        let mut text = format!("namespace: {}\ntargets:\n", self.a.ns);
        for name in order {
            let plane = self.plane(name);
            text.push_str(&format!(
                "  - name: {name}\n    context: {}\n    kubeconfig: {}\n",
                plane.context,
                plane.kubeconfig().display()
            ));
        }
        let path = self
            .dir
            .path()
            .join(format!("targets-{}.yaml", order.join("")));
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// One KUBECONFIG listing both clusters, for `--target NAME=CONTEXT`.
    fn kubeconfigs(&self) -> String {
        format!(
            "{}:{}",
            self.planes[0].kubeconfig().display(),
            self.planes[1].kubeconfig().display()
        )
    }

    async fn bgslot(&self, args: &[&str]) -> Run {
        self.a.bgslot(args).await
    }

    /// The first release: v1 installed on both, through the run across them.
    async fn install(&self, replicas: &str) {
        let file = self.targets(&["a", "b"]);
        self.bgslot(&[
            "release",
            "web",
            "--tag",
            "v1",
            "--replicas",
            replicas,
            "--targets",
            &file,
        ])
        .await
        .must_succeed();
    }

    /// The version each cluster's production serves, from its own `status`.
    async fn versions(&self) -> [String; 2] {
        let mut out = [String::new(), String::new()];
        for (i, env) in [&self.a, &self.b].into_iter().enumerate() {
            let status = env
                .bgslot(&["status", "web", "-o", "json"])
                .await
                .must_succeed()
                .json();
            let production = status["production_slot"].clone();
            let slot = status["slots"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["slot"] == production)
                .unwrap()
                .clone();
            out[i] = format!(
                "{} {}",
                production.as_str().unwrap(),
                slot["tag"].as_str().unwrap()
            );
        }
        out
    }

    /// Waits until the data plane of every cluster answers requests to production with `version`.
    async fn serving(&self, version: &str) {
        for name in ["a", "b"] {
            let (dir, service) = (&self.plane(name).dir, format!("{}/web", self.env(name).ns));
            common::eventually(
                &format!("cluster {name}'s proxy sends production traffic to {version}"),
                || async { version_behind(dir, &service).await.as_deref() == Some(version) },
            )
            .await;
        }
    }
}

/// Every state the production Endpoints `web` of one cluster went through, as the slots of its
/// ready addresses.
struct EndpointsLog {
    states: Arc<Mutex<Vec<Vec<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EndpointsLog {
    async fn start(env: &Env) -> EndpointsLog {
        let api: Api<Endpoints> = Api::namespaced(env.client.clone(), &env.ns);
        let config = watcher::Config::default().fields("metadata.name=web");
        let states = Arc::new(Mutex::new(Vec::new()));
        let seen = states.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut stream = std::pin::pin!(watcher(api, config));
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                match event {
                    watcher::Event::Apply(ep) | watcher::Event::InitApply(ep) => {
                        let mut slots: Vec<String> = ep
                            .subsets
                            .unwrap_or_default()
                            .into_iter()
                            .flat_map(|s| s.addresses.unwrap_or_default())
                            .map(|a| {
                                let pod = a.target_ref.and_then(|r| r.name).unwrap_or_default();
                                ["blue", "green"]
                                    .into_iter()
                                    .find(|slot| pod.starts_with(&format!("web-{slot}-")))
                                    .unwrap_or("?")
                                    .to_string()
                            })
                            .collect();
                        slots.sort();
                        seen.lock().unwrap().push(slots);
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
        EndpointsLog { states, task }
    }

    fn stop(self) -> Vec<Vec<String>> {
        self.task.abort();
        self.states.lock().unwrap().clone()
    }
}

/// What is wrong with the states a watch saw: a moment with no ready endpoint, or with pods of
/// both slots (two versions at once).
fn violations(states: &[Vec<String>]) -> Vec<String> {
    states
        .iter()
        .filter_map(|state| {
            let slots: BTreeSet<&String> = state.iter().collect();
            if state.is_empty() {
                Some("no ready endpoint".to_string())
            } else if slots.len() > 1 {
                Some(format!("two versions at once: {state:?}"))
            } else {
                None
            }
        })
        .collect()
}

fn target<'v>(report: &'v Value, name: &str) -> &'v Value {
    report["targets"]
        .as_array()
        .unwrap_or_else(|| panic!("no targets[]: {report}"))
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no target {name}: {report}"))
}

async fn a_release_moves_every_cluster_in_lockstep(major: u32) {
    let p = Pair::new(major, "fleet", false).await;
    let file = p.targets(&["a", "b"]);
    p.install("1").await;
    assert_eq!(p.versions().await, ["blue v1", "blue v1"]);

    let log = p.dir.path().join("verify.log");
    let verify = format!(
        "sh -c 'echo \"$BGSLOT_CLUSTER $BGSLOT_TARGET $BGSLOT_TAG\" >> {}'",
        log.display()
    );
    let released = p
        .bgslot(&[
            "release",
            "web",
            "--tag",
            "v2",
            "--targets",
            &file,
            "--verify-cmd",
            &verify,
            "-o",
            "json",
        ])
        .await
        .must_succeed()
        .json();
    let run = released["run"].as_str().unwrap().to_string();
    assert_eq!(released["consistent"], true, "{released}");
    for name in ["a", "b"] {
        let t = target(&released, name);
        assert_eq!(
            (
                &t["phase"],
                &t["version"],
                &t["production_slot"],
                &t["swapped_back"],
                &t["error"]
            ),
            (
                &json!("done"),
                &json!("v2"),
                &json!("green"),
                &json!(false),
                &Value::Null
            ),
            "{t}"
        );
        let steps: Vec<&Value> = t["report"]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| &s["operation"])
            .collect();
        assert_eq!(steps, [&json!("deploy"), &json!("swap")], "{t}");
    }
    // Every stage was verified before the first swap; then each production, in listed order.
    let calls = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        [
            "a stage v2",
            "b stage v2",
            "a production v2",
            "b production v2"
        ]
    );
    // One run ID in every revision the run wrote, in both clusters' helm history.
    for env in [&p.a, &p.b] {
        let history = env.helm_json(&["history", "web"]);
        let written: Vec<&str> = history.as_array().unwrap()[1..]
            .iter()
            .map(|r| r["description"].as_str().unwrap())
            .collect();
        assert_eq!(
            written,
            [
                format!("bgslot deploy green v2 run={run}"),
                format!("bgslot swap blue->green run={run}")
            ]
        );
    }
    // Each cluster's data plane serves the new version.
    p.serving("v2").await;
    assert_eq!(p.versions().await, ["green v2", "green v2"]);

    let history = p
        .bgslot(&["history", "web", "--targets", &file])
        .await
        .must_succeed();
    assert_eq!(
        history.stdout.matches(&format!("(run {run})")).count(),
        4,
        "{history:?}"
    );
    let status = p
        .bgslot(&["status", "web", "--targets", &file])
        .await
        .must_succeed();
    assert!(status.stdout.contains("consistent: yes"), "{status:?}");
    assert_eq!(status.stdout.matches("green v2").count(), 2, "{status:?}");

    // All at once, the targets named by flags and one KUBECONFIG listing both clusters.
    let together =
        p.a.bgslot_env(
            &[
                "release",
                "web",
                "--tag",
                "v3",
                "--replace",
                "--swap",
                "together",
                "--target",
                "a=bgslot-testenv",
                "--target",
                "b=bgslot-testenv-2",
                "-o",
                "json",
            ],
            &[("KUBECONFIG", &p.kubeconfigs())],
        )
        .await
        .must_succeed()
        .json();
    for name in ["a", "b"] {
        assert_eq!(target(&together, name)["version"], "v3", "{together}");
    }
    p.serving("v3").await;
    assert_eq!(p.versions().await, ["blue v3", "blue v3"]);
}

async fn a_failed_stage_check_on_the_second_target_touches_no_production(major: u32) {
    let p = Pair::new(major, "fleet-stage", false).await;
    let file = p.targets(&["a", "b"]);
    p.install("1").await;
    let before = [p.a.fingerprint("web").await, p.b.fingerprint("web").await];
    let failed = p
        .bgslot(&[
            "release",
            "web",
            "--tag",
            "v2",
            "--targets",
            &file,
            "-o",
            "json",
            "--verify-cmd",
            "sh -c 'test \"$BGSLOT_CLUSTER-$BGSLOT_TARGET\" != b-stage'",
        ])
        .await
        .must_exit(1)
        .json();
    assert_eq!(failed["kind"], "failed");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("verification against stage failed on b")
            && error.contains("production is untouched everywhere"),
        "{failed}"
    );
    assert_eq!(target(&failed, "b")["phase"], "verify-stage");
    let after = [p.a.fingerprint("web").await, p.b.fingerprint("web").await];
    for (before, after) in before.iter().zip(&after) {
        assert_eq!(
            after.selectors, before.selectors,
            "no Service selector changed"
        );
        assert_eq!(
            after.deployments["web-green"].1, "nginx:v2",
            "the new version stays staged"
        );
    }
    assert_eq!(p.versions().await, ["blue v1", "blue v1"]);

    // A SIGTERM during the first wave's production check: the second target is never swapped and
    // the first goes back (exit 1, both on v1).
    let signal = "sh -c 'if [ \"$BGSLOT_CLUSTER-$BGSLOT_TARGET\" = a-production ]; then kill -TERM $PPID; sleep 1; fi'";
    let stopped = p
        .bgslot(&[
            "release",
            "web",
            "--tag",
            "v3",
            "--replace",
            "--targets",
            &file,
            "--verify-cmd",
            signal,
        ])
        .await
        .must_exit(1)
        .must_say("stopped by a signal before the swap of b")
        .must_say("swapped back: a");
    assert!(!stopped.stderr.contains("[b] swap web"), "{stopped:?}");
    assert_eq!(p.versions().await, ["blue v1", "blue v1"]);
}

async fn a_failed_production_check_swaps_back_and_production_never_breaks(major: u32) {
    let p = Pair::new(major, "fleet-prod", false).await;
    let file = p.targets(&["a", "b"]);
    p.install("2").await;
    p.a.await_endpoints("web", "blue", 2).await;
    p.b.await_endpoints("web", "blue", 2).await;
    let watches = [
        EndpointsLog::start(&p.a).await,
        EndpointsLog::start(&p.b).await,
    ];
    let failed = p
        .bgslot(&[
            "release",
            "web",
            "--tag",
            "v2",
            "--targets",
            &file,
            "-o",
            "json",
            "--verify-cmd",
            "sh -c 'test \"$BGSLOT_CLUSTER-$BGSLOT_TARGET\" != b-production'",
        ])
        .await
        .must_exit(1)
        .json();
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("verification against production failed on b")
            && error.contains("swapped back: a, b"),
        "{failed}"
    );
    for name in ["a", "b"] {
        let t = target(&failed, name);
        assert_eq!(
            (&t["swapped_back"], &t["version"], &t["production_slot"]),
            (&json!(true), &json!("v1"), &json!("blue")),
            "{t}"
        );
    }
    p.a.await_endpoints("web", "blue", 2).await;
    p.b.await_endpoints("web", "blue", 2).await;
    for (name, watch) in ["a", "b"].into_iter().zip(watches) {
        let states = watch.stop();
        assert_eq!(
            violations(&states),
            Vec::<String>::new(),
            "cluster {name}: {states:?}"
        );
        assert!(
            states.iter().any(|s| s.contains(&"green".to_string())),
            "cluster {name}'s production went to green and back: {states:?}"
        );
    }
    p.serving("v1").await;

    // The negative control: the same watch sees a production Service that selects both slots
    // (v1 and the staged v2 run) and one that selects nothing.
    let control = EndpointsLog::start(&p.a).await;
    let services: Api<Service> = Api::namespaced(p.a.client.clone(), &p.a.ns);
    let select = |slot: Value| {
        let services = services.clone();
        async move {
            services
                .patch(
                    "web",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"selector": {"bgslot/slot": slot}}})),
                )
                .await
                .unwrap();
        }
    };
    select(Value::Null).await;
    common::eventually("production lists both slots", || async {
        p.a.endpoint_slots("web")
            .await
            .iter()
            .collect::<BTreeSet<_>>()
            .len()
            == 2
    })
    .await;
    select(json!("none")).await;
    common::eventually("production lists no endpoint", || async {
        p.a.endpoint_slots("web").await.is_empty()
    })
    .await;
    let seen = violations(&control.stop());
    assert!(
        seen.iter().any(|v| v.starts_with("two versions"))
            && seen.iter().any(|v| v == "no ready endpoint"),
        "the watch sees both faults: {seen:?}"
    );
}

/// Starts the second plane's API server again if the test stopped it (also when it fails).
struct Restart(Plane);

impl Drop for Restart {
    fn drop(&mut self) {
        let _ = std::process::Command::new(testenv_bin())
            .arg("start-apiserver")
            .arg(&self.0.dir)
            .output();
    }
}

async fn a_swap_back_that_cannot_happen_exits_5_naming_the_command_that_ends_the_mix(major: u32) {
    let p = Pair::new(major, "fleet-mix", true).await;
    p.install("1").await;
    // b is the first wave; a's production check stops b's API server, then fails: a goes back,
    // b cannot.
    let file = p.targets(&["b", "a"]);
    let restart = Restart(p.planes[1].clone());
    let verify = format!(
        "sh -c 'if [ \"$BGSLOT_CLUSTER-$BGSLOT_TARGET\" = a-production ]; then {} stop-apiserver {} || exit 9; exit 1; fi'",
        testenv_bin().display(),
        p.planes[1].dir.display()
    );
    let mixed = p
        .bgslot(&[
            "release",
            "web",
            "--tag",
            "v2",
            "--targets",
            &file,
            "--verify-cmd",
            &verify,
            "-o",
            "json",
        ])
        .await
        .must_exit(5)
        .json();
    // A target that cannot be read has no version to differ: status says it does not know.
    let blind = p
        .bgslot(&["status", "web", "--targets", &file])
        .await
        .must_exit(1);
    assert!(
        format!("{}{}", blind.stdout, blind.stderr)
            .contains("consistent: unknown (b could not be read)"),
        "{blind:?}"
    );
    p.planes[1].testenv(&["start-apiserver"]);
    drop(restart);
    assert_eq!(
        (&mixed["kind"], &mixed["exit_code"]),
        (&json!("mixed"), &json!(5)),
        "{mixed}"
    );
    let command = format!(
        "bgslot rollback web --kube-context bgslot-testenv-2 -n {} --kubeconfig {}",
        p.b.ns,
        p.planes[1].kubeconfig().display()
    );
    let b = target(&mixed, "b");
    assert_eq!(
        (
            &b["version"],
            &b["production_slot"],
            &b["swapped_back"],
            &b["command"]
        ),
        (
            &json!("v2"),
            &json!("green"),
            &json!(false),
            &json!(command)
        ),
        "{b}"
    );
    let a = target(&mixed, "a");
    assert_eq!(
        (&a["version"], &a["swapped_back"], &a["command"]),
        (&json!("v1"), &json!(true), &Value::Null),
        "{a}"
    );
    assert!(
        mixed["error"]
            .as_str()
            .unwrap()
            .contains("b serves v2, a serves v1")
            && mixed["hint"]
                .as_str()
                .unwrap()
                .contains(&format!("on b: `{command}`")),
        "{mixed}"
    );
    // The one command ends the mix (once the dead run's Lease expires).
    let words: Vec<&str> = command
        .split_whitespace()
        .skip(1)
        .chain(["--wait-for-lock=1m"])
        .collect();
    p.b.bgslot(&words).await.must_succeed();
    assert_eq!(p.versions().await, ["blue v1", "blue v1"]);
    let status = p
        .bgslot(&["status", "web", "--targets", &file, "--check"])
        .await
        .must_succeed();
    assert!(status.stdout.contains("consistent: yes"), "{status:?}");
}

/// The API server URL of a kubeconfig testenv wrote.
fn server_of(plane: &Plane) -> String {
    let text = std::fs::read_to_string(plane.kubeconfig()).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_string()
}

async fn a_lease_held_in_one_cluster_exits_4_and_releases_the_other(major: u32) {
    let p = Pair::new(major, "fleet-lock", false).await;
    let file = p.targets(&["a", "b"]);
    p.install("1").await;
    // The Lease of the target locked last in the canonical order is held: the other one is taken
    // first, then must be released.
    let (held, other) = if server_of(&p.planes[0]) > server_of(&p.planes[1]) {
        ("a", "b")
    } else {
        ("b", "a")
    };
    p.env(held)
        .hold_lock("web", "someone@elsewhere pid 1 (swap)")
        .await;
    let before = [p.a.fingerprint("web").await, p.b.fingerprint("web").await];
    p.bgslot(&["release", "web", "--tag", "v2", "--targets", &file])
        .await
        .must_exit(4)
        .must_say("someone@elsewhere pid 1 (swap)")
        .must_say(&format!("released the locks taken: {other}"));
    let leases: Api<Lease> = Api::namespaced(p.env(other).client.clone(), &p.env(other).ns);
    assert!(
        leases.get_opt("bgslot-lock-web").await.unwrap().is_none(),
        "{other}'s Lease was released"
    );
    let after = [p.a.fingerprint("web").await, p.b.fingerprint("web").await];
    assert_eq!(after, before, "nothing changed");
}

async fn opposite_orders_both_finish_without_a_deadlock(major: u32) {
    let p = Pair::new(major, "fleet-order", false).await;
    p.install("1").await;
    let (ab, ba) = (p.targets(&["a", "b"]), p.targets(&["b", "a"]));
    let run = |tag: &'static str, file: String| {
        let mut cmd = p.a.command(&[
            "release",
            "web",
            "--tag",
            tag,
            "--replace",
            "--wait-for-lock=3m",
            "--targets",
            &file,
        ]);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap().wait_with_output()
    };
    let (one, two) = tokio::time::timeout(std::time::Duration::from_secs(300), async {
        tokio::join!(run("v2", ab), run("v3", ba))
    })
    .await
    .expect("both runs finish: no deadlock");
    let (one, two) = (Run::from(one.unwrap()), Run::from(two.unwrap()));
    let one = one.must_succeed();
    let two = two.must_succeed();
    // They met: one waited for the other's Leases, which name the run and its target count.
    let waited = [&one, &two]
        .into_iter()
        .find(|r| r.stderr.contains("waiting for the release lock"));
    let waited =
        waited.unwrap_or_else(|| panic!("neither run waited for the other: {one:?} {two:?}"));
    assert!(waited.stderr.contains("2 targets)"), "{waited:?}");
    let [a, b] = p.versions().await;
    assert_eq!(a, b, "both clusters end on one version");
}

async fn a_first_install_that_fails_on_one_target_is_a_mix_the_run_again_ends(major: u32) {
    let p = Pair::new(major, "fleet-first", false).await;
    // b's first slot never gets ready (the simulated kubelet's fault annotation, from b's own
    // values in the targets file); a's install makes v1 its production.
    let clean = p.targets(&["a", "b"]);
    let healthy = std::fs::read_to_string(&clean).unwrap();
    let file = p.dir.path().join("targets-first.yaml");
    let faulty = healthy.replacen(
        "  - name: b\n",
        "  - name: b\n    set: ['blue.podAnnotations.sim\\.bgslot\\.dev/fault=never-ready']\n",
        1,
    );
    assert_ne!(faulty, healthy);
    std::fs::write(&file, &faulty).unwrap();
    let file = file.to_str().unwrap();
    let mixed = p
        .bgslot(&[
            "release",
            "web",
            "--tag",
            "v1",
            "--replicas",
            "1",
            "--timeout",
            "8s",
            "--targets",
            file,
            "-o",
            "json",
        ])
        .await
        .must_exit(5)
        .json();
    let error = mixed["error"].as_str().unwrap();
    assert!(
        error.contains("the deploy did not finish on every target")
            && error.contains("the targets are left on different versions: a serves v1")
            && !error.contains("untouched"),
        "{mixed}"
    );
    let again = target(&mixed, "b")["command"].as_str().unwrap().to_string();
    assert!(
        again.ends_with(&format!("--targets {file} -o json --allow-mixed")),
        "{again}"
    );
    assert_eq!(target(&mixed, "a")["command"], Value::Null, "{mixed}");
    // The run again, with b healthy now, ends the mix: both serve v1.
    std::fs::write(file, &healthy).unwrap();
    let words: Vec<&str> = again.split_whitespace().skip(1).collect();
    p.bgslot(&words).await.must_succeed();
    assert_eq!(p.versions().await, ["green v1", "green v1"]);
}

async fn a_mixed_start_an_unreachable_target_and_a_bad_file_change_nothing(major: u32) {
    let p = Pair::new(major, "fleet-start", false).await;
    let file = p.targets(&["a", "b"]);
    p.install("1").await;
    // b moves on alone.
    p.b.bgslot(&["deploy", "web", "--tag", "v2"])
        .await
        .must_succeed();
    p.b.bgslot(&["swap", "web"]).await.must_succeed();
    let before = [p.a.fingerprint("web").await, p.b.fingerprint("web").await];
    let refused = p
        .bgslot(&[
            "release",
            "web",
            "--tag",
            "v3",
            "--replace",
            "--targets",
            &file,
            "-o",
            "json",
        ])
        .await
        .must_exit(3)
        .json();
    assert_eq!(refused["kind"], "refused");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("the targets do not serve one version: a v1, b v2"),
        "{refused}"
    );
    assert!(
        refused["hint"].as_str().unwrap().contains("--allow-mixed"),
        "{refused}"
    );
    assert_eq!(
        [p.a.fingerprint("web").await, p.b.fingerprint("web").await],
        before
    );
    // --allow-mixed lets it through; a dry run shows each target's plan and changes nothing.
    let planned = p
        .bgslot(&[
            "release",
            "web",
            "--tag",
            "v3",
            "--replace",
            "--allow-mixed",
            "--dry-run",
            "--targets",
            &file,
            "-o",
            "json",
        ])
        .await
        .must_succeed()
        .json();
    for name in ["a", "b"] {
        let plan = &target(&planned, name)["report"];
        assert_eq!(plan["dry_run"], true, "{planned}");
        assert!(
            plan["steps"].as_array().unwrap().len() >= 2,
            "stage and swap: {planned}"
        );
    }
    assert_eq!(
        [p.a.fingerprint("web").await, p.b.fingerprint("web").await],
        before
    );

    // A target whose API server does not answer: exit 1 at preflight, nothing changed elsewhere.
    let nowhere = p.dir.path().join("nowhere.yaml");
    std::fs::write(
        &nowhere,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: nowhere\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\nusers:\n- name: nobody\n  user:\n    token: nothing\ncontexts:\n- name: nowhere\n  context:\n    cluster: nowhere\n    user: nobody\ncurrent-context: nowhere\n",
    )
    .unwrap();
    let unreachable = p.dir.path().join("unreachable.yaml");
    std::fs::write(
        &unreachable,
        format!(
            "targets:\n  - name: a\n    context: bgslot-testenv\n    kubeconfig: {}\n  - name: far\n    context: nowhere\n    kubeconfig: {}\n",
            p.planes[0].kubeconfig().display(),
            nowhere.display()
        ),
    )
    .unwrap();
    p.bgslot(&[
        "release",
        "web",
        "--tag",
        "v3",
        "--targets",
        unreachable.to_str().unwrap(),
    ])
    .await
    .must_exit(1)
    .must_say("could not reach every target of release web across 2 targets")
    .must_say("far: cannot reach the Kubernetes API server at https://127.0.0.1:1/");
    assert_eq!(p.a.fingerprint("web").await, before[0]);
    let leases: Api<Lease> = Api::namespaced(p.a.client.clone(), &p.a.ns);
    assert!(
        leases.get_opt("bgslot-lock-web").await.unwrap().is_none(),
        "no Lease was taken"
    );

    // A bad targets file: a usage error naming the line, before anything connects.
    let bad = p.dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "targets:\n  - name: a\n    context: bgslot-testenv\n  - name: b\n    contxt: x\n",
    )
    .unwrap();
    p.bgslot(&["release", "web", "--tag", "v3", "--targets", bad.to_str().unwrap()])
        .await
        .must_exit(2)
        .must_say(&format!(
            "error: {}:5: unknown field `contxt`, expected one of name, context, kubeconfig, namespace, values, set",
            bad.display()
        ));
    assert_eq!(
        [p.a.fingerprint("web").await, p.b.fingerprint("web").await],
        before
    );
}

async fn a_bundled_and_a_router_release_move_together(major: u32) {
    let p = Pair::new(major, "fleet-kinds", false).await;
    let file = p.targets(&["a", "b"]);
    // a runs bgslot's chart; b runs the team's own chart behind a router.
    p.a.bgslot(&["deploy", "web", "--tag", "v1", "--replicas", "1"])
        .await
        .must_succeed();
    let chart: PathBuf = crate::router::helm_create(&p.b, p.dir.path(), "myapp");
    p.b.bgslot(&[
        "deploy",
        "web",
        "--app-chart",
        chart.to_str().unwrap(),
        "--tag",
        "v1",
        "--replicas",
        "1",
    ])
    .await
    .must_succeed();
    let released = p
        .bgslot(&[
            "release",
            "web",
            "--tag",
            "v2",
            "--targets",
            &file,
            "-o",
            "json",
        ])
        .await
        .must_succeed()
        .json();
    assert_eq!(
        target(&released, "a")["report"]["mode"],
        "bundled",
        "{released}"
    );
    assert_eq!(
        target(&released, "b")["report"]["mode"],
        "router",
        "{released}"
    );
    for name in ["a", "b"] {
        assert_eq!(target(&released, name)["version"], "v2", "{released}");
    }
    assert_eq!(
        target(&released, "b")["report"]["steps"][1]["slot_release"],
        "web-green",
        "{released}"
    );
    p.serving("v2").await;
}
