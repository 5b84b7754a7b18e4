//! Release safety on the real control plane, with Helm 3 and Helm 4: the per-release lock under
//! concurrency, helm killed mid-upgrade, signals, and a table of bad inputs that must each fail
//! clearly and change nothing.

use crate::common;

use common::cli::{Env, Run};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;

with_both_helms!(
    concurrent_swaps_take_turns,
    a_killed_bgslot_leaves_a_lock_that_expires,
    sigterm_during_deploy_reports_state_and_releases_the_lock,
    helm_killed_mid_upgrade_is_recovered,
    a_recover_with_a_bad_chart_changes_nothing,
    a_lock_taken_over_mid_release_stops_it_before_the_swap,
    bad_inputs_fail_clearly_and_change_nothing,
);

async fn two_slots(env: &Env) {
    env.bgslot(&["deploy", "web", "--tag", "v1", "--replicas", "2"])
        .await
        .must_succeed();
    env.bgslot(&["deploy", "web", "--tag", "v2"])
        .await
        .must_succeed();
}

async fn run_many(env: &Env, n: usize, args: &[&str]) -> Vec<Run> {
    let children: Vec<_> = (0..n).map(|_| env.command(args).output()).collect();
    futures::future::join_all(children)
        .await
        .into_iter()
        .map(|o| Run::from(o.expect("run bgslot")))
        .collect()
}

async fn assert_consistent(env: &Env) {
    let status = env
        .bgslot(&["status", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert_eq!(status["helm_status"], "deployed", "{status}");
    assert_eq!(status["drift"], json!([]), "{status}");
    let production = status["production_slot"].as_str().unwrap().to_string();
    let fp = env.fingerprint("web").await;
    assert_eq!(fp.selectors["web"], production);
}

async fn concurrent_swaps_take_turns(major: u32) {
    let env = Env::new(major, "concurrent").await;
    two_slots(&env).await;
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);

    // While another bgslot holds the lock, every swap that does not wait stops with exit 4,
    // naming the holder, and changes nothing.
    let holder = env
        .command(&["deploy", "web", "--tag", "v3-slow-start", "--replace"])
        .spawn()
        .unwrap();
    common::eventually("the deploy holds the lock", || async {
        leases.get_opt("bgslot-lock-web").await.unwrap().is_some()
    })
    .await;
    let before = env.fingerprint("web").await.revision;
    let runs = run_many(&env, 8, &["swap", "web"]).await;
    for r in &runs {
        assert_eq!(r.code, 4, "{r:?}");
        assert!(
            r.stderr.contains("locked by another bgslot") && r.stderr.contains("(deploy)"),
            "{r:?}"
        );
    }
    let holder = Run::from(holder.wait_with_output().await.unwrap()).must_succeed();
    drop(holder);
    assert_eq!(
        env.fingerprint("web").await.revision,
        before + 1,
        "only the deploy wrote: {runs:#?}"
    );
    assert_consistent(&env).await;

    // Waiting: all eight run, one at a time, each one helm write.
    let before = env.fingerprint("web").await.revision;
    let runs = run_many(&env, 8, &["swap", "web", "--wait-for-lock=120s"]).await;
    assert!(runs.iter().all(|r| r.code == 0), "{runs:#?}");
    let history = env.helm_json(&["history", "web"]);
    let revisions = history.as_array().unwrap();
    assert_eq!(env.fingerprint("web").await.revision, before + 8);
    assert!(
        revisions
            .iter()
            .all(|r| r["status"] == "deployed" || r["status"] == "superseded"),
        "{history}"
    );
    assert_consistent(&env).await;
    assert!(
        leases.get_opt("bgslot-lock-web").await.unwrap().is_none(),
        "the lock is released at exit"
    );
    env.done().await;
}

async fn a_killed_bgslot_leaves_a_lock_that_expires(major: u32) {
    let env = Env::new(major, "killed").await;
    env.bgslot(&["deploy", "web", "--tag", "v1", "--replicas", "2"])
        .await
        .must_succeed();
    // A slow-starting version keeps the deploy waiting; kill it there, holding the lock.
    let mut child = env
        .command(&["deploy", "web", "--tag", "v2-slow-start"])
        .spawn()
        .unwrap();
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    common::eventually("the deploy holds the lock", || async {
        leases.get_opt("bgslot-lock-web").await.unwrap().is_some()
    })
    .await;
    common::eventually("the deploy wrote the release and waits", || async {
        env.is_waiting_on_green().await
    })
    .await;
    let pid = child.id().expect("the deploy is running");
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    env.bgslot(&["swap", "web"])
        .await
        .must_exit(4)
        .must_say("locked by another bgslot")
        .must_say(&format!("pid {pid} (deploy)"))
        .must_say("bgslot-lock-web");
    let json = env
        .bgslot(&["swap", "web", "-o", "json"])
        .await
        .must_exit(4)
        .json();
    assert_eq!(json["kind"], "locked");
    // The abandoned lease expires and the next bgslot takes over.
    let r = env
        .bgslot(&["swap", "web", "--wait-for-lock=90s"])
        .await
        .must_succeed();
    r.must_say("waiting for the release lock");
    assert_consistent(&env).await;
    env.done().await;
}

async fn sigterm_during_deploy_reports_state_and_releases_the_lock(major: u32) {
    let env = Env::new(major, "sigterm").await;
    env.bgslot(&["deploy", "web", "--tag", "v1", "--replicas", "2"])
        .await
        .must_succeed();
    let child = env
        .command(&["deploy", "web", "--tag", "v2-never-ready"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    common::eventually("the deploy is waiting", || async {
        env.is_waiting_on_green().await
    })
    .await;
    // The Lease is valid for 15 s; the waiting deploy keeps it past that: it renews.
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    common::eventually("the lock was renewed past its 15 s duration", || async {
        let spec = leases.get("bgslot-lock-web").await.unwrap().spec.unwrap();
        let (acquired, renewed) = (spec.acquire_time.unwrap().0, spec.renew_time.unwrap().0);
        renewed.duration_since(acquired).as_secs() > 15
    })
    .await;
    env.bgslot(&["swap", "web"])
        .await
        .must_exit(4)
        .must_say("(deploy)");
    let status = env
        .bgslot(&["status", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert!(
        status["lock"]["holder"]
            .as_str()
            .unwrap()
            .ends_with("(deploy)"),
        "status names the holder: {status}"
    );
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let run = Run::from(child.wait_with_output().await.unwrap());
    let run = run
        .must_exit(1)
        .must_say("stopped by SIGTERM")
        .must_say("was left as: revision 2 is deployed");
    drop(run);
    assert!(
        leases.get_opt("bgslot-lock-web").await.unwrap().is_none(),
        "the lock is released on SIGTERM"
    );
    env.bgslot(&["status", "web"]).await.must_succeed();
    env.bgslot(&["clean", "web", "--force"])
        .await
        .must_succeed();
    env.done().await;
}

/// Leaves `web` in pending-upgrade the way a killed helm does: a helm upgrade that waits on a
/// never-ready version is killed with SIGKILL, so it cannot record an outcome.
async fn kill_helm_mid_upgrade(env: &Env) {
    let chart = common::chart_dir();
    let wait = if env.helm.major >= 4 {
        "--wait=watcher"
    } else {
        "--wait"
    };
    let mut helm = env.helm.command();
    helm.args([
        "upgrade",
        "web",
        chart.to_str().unwrap(),
        "-n",
        &env.ns,
        "--reuse-values",
        wait,
        "--timeout",
        "5m",
    ])
    .args([
        "--set",
        "green.enabled=true",
        "--set-string",
        "green.image.tag=never-ready",
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let mut helm = helm.spawn().unwrap();
    common::eventually("helm marks the release pending-upgrade", || async {
        env.fingerprint("web").await.latest_status == "pending-upgrade"
    })
    .await;
    helm.kill().unwrap();
    helm.wait().unwrap();
}

async fn helm_killed_mid_upgrade_is_recovered(major: u32) {
    let env = Env::new(major, "pending").await;
    env.bgslot(&["deploy", "web", "--tag", "v1", "--replicas", "2"])
        .await
        .must_succeed();
    kill_helm_mid_upgrade(&env).await;

    let before = env.fingerprint("web").await;
    assert_eq!(before.latest_status, "pending-upgrade");
    for args in [
        &["swap", "web"][..],
        &["deploy", "web", "--tag", "v3", "--replace"],
        &["clean", "web", "--force"],
    ] {
        env.bgslot(args)
            .await
            .must_exit(3)
            .must_say("pending-upgrade")
            .must_say("bgslot recover web");
    }
    let status = env
        .bgslot(&["status", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert_eq!(status["next"], "bgslot recover web");
    assert_eq!(env.fingerprint("web").await, before);

    // The pending revision is seconds old: a helm could still be running, so recover waits to be
    // told it is gone.
    env.bgslot(&["recover", "web"])
        .await
        .must_exit(3)
        .must_say("a helm may still be working on it")
        .must_say("--force");
    assert_eq!(env.fingerprint("web").await, before);
    let r = env
        .bgslot(&["recover", "web", "--force", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert_eq!(
        (
            r["changed"].as_bool(),
            r["to_revision"].as_u64(),
            r["status"].as_str()
        ),
        (Some(true), Some(1), Some("deployed"))
    );
    env.bgslot(&["recover", "web"])
        .await
        .must_succeed()
        .must_say("nothing to recover");
    env.bgslot(&["deploy", "web", "--tag", "v2"])
        .await
        .must_succeed();
    env.bgslot(&["swap", "web", "--expect-tag", "v2"])
        .await
        .must_succeed();
    env.await_endpoints("web", "green", 2).await;
    env.done().await;
}

/// Every input is checked before the first write: a `--chart` that cannot be used fails a
/// recover before its `helm rollback` runs (it used to roll back first, then fail with exit 1).
async fn a_recover_with_a_bad_chart_changes_nothing(major: u32) {
    let env = Env::new(major, "recover-chart").await;
    env.bgslot(&["deploy", "web", "--tag", "v1", "--replicas", "2"])
        .await
        .must_succeed();
    kill_helm_mid_upgrade(&env).await;
    let before = env.fingerprint("web").await;
    let empty = tempfile::tempdir().unwrap();
    let chart = empty.path().to_str().unwrap();
    env.bgslot(&["recover", "web", "--force", "--chart", chart])
        .await
        .must_exit(1)
        .must_say("without a readable Chart.yaml");
    assert_eq!(
        env.fingerprint("web").await,
        before,
        "nothing was rolled back"
    );
    assert_eq!(before.latest_status, "pending-upgrade");
    env.done().await;
}

/// Another holder takes the release Lease while `release` waits for its deploy: bgslot stops
/// before its next write (the swap), exits 4, and says what it had written and what it had not.
async fn a_lock_taken_over_mid_release_stops_it_before_the_swap(major: u32) {
    let env = Env::new(major, "lock-lost").await;
    env.bgslot(&["deploy", "web", "--tag", "v1", "--replicas", "2"])
        .await
        .must_succeed();
    let release = env
        .command(&["release", "web", "--tag", "v2-slow-start"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::eventually("the release's deploy is waiting on green", || async {
        env.is_waiting_on_green().await
    })
    .await;
    // Taken over as a bgslot that found it expired would take it: a replace with a new holder.
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    let mut lease = leases.get("bgslot-lock-web").await.unwrap();
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    );
    let spec = lease.spec.as_mut().unwrap();
    spec.holder_identity = Some("thief@ci pid 7 (swap)".into());
    spec.lease_duration_seconds = Some(3600);
    spec.acquire_time = Some(now.clone());
    spec.renew_time = Some(now);
    leases
        .replace("bgslot-lock-web", &Default::default(), &lease)
        .await
        .unwrap();

    let run = Run::from(release.wait_with_output().await.unwrap());
    run.must_exit(4)
        .must_say("lost the release lock (Lease")
        .must_say("now held by thief@ci pid 7 (swap)")
        .must_say("stopped before: `bgslot swap blue->green`")
        .must_say("already done: `bgslot deploy green v2-slow-start`");
    let fp = env.fingerprint("web").await;
    assert_eq!(
        (fp.revision, fp.selectors["web"].as_str()),
        (2, "blue"),
        "production was not swapped"
    );
    let holder = leases
        .get("bgslot-lock-web")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_eq!(
        holder.as_deref(),
        Some("thief@ci pid 7 (swap)"),
        "the new holder's lock is left alone"
    );
    env.done().await;
}

async fn bad_inputs_fail_clearly_and_change_nothing(major: u32) {
    let env = Env::new(major, "badinput").await;
    two_slots(&env).await;
    let before = env.fingerprint("web").await;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();

    std::fs::write(path("bad-types.yaml"), "replicaCount: three\n").unwrap();
    std::fs::write(path("bad-slot.yaml"), "productionSlot: purple\n").unwrap();
    std::fs::write(path("garbage-kubeconfig"), "this: [is not a kubeconfig\n").unwrap();
    std::fs::write(path("unreachable-kubeconfig"), UNREACHABLE_KUBECONFIG).unwrap();
    std::fs::write(path("old-helm"), "#!/bin/sh\necho v3.10.0\n").unwrap();
    std::fs::write(path("not-helm"), "#!/bin/sh\necho hello\n").unwrap();
    for f in ["old-helm", "not-helm"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // A release of another chart whose values happen to carry an unknown slot.
    // Releases of other charts: one whose values happen to carry an unknown slot, one without.
    env.install_foreign(dir.path(), "purple", "productionSlot: purple\n");
    env.install_foreign(dir.path(), "plain", "{}\n");
    let foreign_before = (
        env.fingerprint("purple").await,
        env.fingerprint("plain").await,
    );

    let long = "a".repeat(54);
    let long_tag = "t".repeat(129);
    let (bad_types, bad_slot, garbage, unreachable, old_helm, not_helm) = (
        path("bad-types.yaml"),
        path("bad-slot.yaml"),
        path("garbage-kubeconfig"),
        path("unreachable-kubeconfig"),
        path("old-helm"),
        path("not-helm"),
    );
    let digest = format!("sha256:{}", "0".repeat(64));
    let digest_image = format!("nginx@{digest}");
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        // release names: usage errors naming the argument
        (
            vec!["status", "Web"],
            2,
            "invalid value 'Web' for '<RELEASE>': release name 'Web' is invalid",
        ),
        (vec!["swap", "web_1"], 2, "release name 'web_1' is invalid"),
        (
            vec!["deploy", "-web", "--tag", "v3"],
            2,
            "unexpected argument '-w' found",
        ),
        (
            vec!["deploy", "web-", "--tag", "v3"],
            2,
            "release name 'web-' is invalid",
        ),
        (vec!["clean", &long], 2, "helm allows at most 53"),
        (
            vec!["swap", "nosuch"],
            1,
            "release nosuch not found in namespace",
        ),
        (vec!["history", "nosuch"], 1, "release nosuch not found"),
        // tags and image references: usage errors naming the flag
        (
            vec!["deploy", "web", "--tag", "v3;rm -rf /", "--replace"],
            2,
            "for '--tag <TAG>': image tag 'v3;rm -rf /' is invalid",
        ),
        (
            vec!["deploy", "web", "--tag", ".hidden", "--replace"],
            2,
            "image tag '.hidden' is invalid",
        ),
        (
            vec!["deploy", "web", "--tag", &long_tag, "--replace"],
            2,
            "is invalid: a tag is 1 to 128",
        ),
        (
            vec!["deploy", "web", "--tag", "", "--replace"],
            2,
            "image tag '' is invalid",
        ),
        (
            vec!["deploy", "web", "--image", "nginx", "--replace"],
            2,
            "for '--image <IMAGE>': image 'nginx' has neither a tag nor a digest",
        ),
        (
            vec!["deploy", "web", "--image", "nginx@sha256:abcd", "--replace"],
            2,
            "digest 'sha256:abcd' is invalid",
        ),
        (
            vec!["deploy", "web", "--image", "Nginx/Web:v3", "--replace"],
            2,
            "image repository 'Nginx/Web' is invalid",
        ),
        (
            vec!["deploy", "web", "--image", "nginx:v3:v4", "--replace"],
            2,
            "image repository 'nginx:v3' is invalid",
        ),
        (
            vec!["swap", "web", "--expect-tag", "v2 v3"],
            2,
            "for '--expect-tag <TAG>': image tag 'v2 v3' is invalid",
        ),
        // live values and foreign releases
        (vec!["swap", "purple"], 3, "productionSlot 'purple'"),
        (vec!["status", "purple"], 3, "only blue or green is allowed"),
        (
            vec!["deploy", "plain", "--tag", "v2"],
            3,
            "was not made from a bgslot chart",
        ),
        (
            vec!["deploy", "plain", "--image", &digest_image, "--dry-run"],
            3,
            "was not made from a bgslot chart",
        ),
        // values files with wrong types (helm's schema check; helm's message is shown)
        (
            vec![
                "deploy",
                "web",
                "--tag",
                "v3",
                "--replace",
                "-f",
                &bad_types,
            ],
            1,
            "replicaCount",
        ),
        (
            vec!["deploy", "web", "--tag", "v3", "--replace", "-f", &bad_slot],
            1,
            "productionSlot",
        ),
        (
            vec![
                "deploy",
                "web",
                "--tag",
                "v3",
                "--replace",
                "-f",
                "/nonexistent/values.yaml",
            ],
            2,
            "for '--values <FILE>': /nonexistent/values.yaml cannot be read",
        ),
        (
            vec![
                "deploy",
                "web",
                "--tag",
                "v3",
                "--replace",
                "--set",
                "noequals",
            ],
            2,
            "for '--set <KEY=VALUE>': 'noequals' is not KEY=VALUE",
        ),
        // helm
        (
            vec!["--helm", "/nonexistent/helm", "status", "web"],
            1,
            "helm not found at /nonexistent/helm",
        ),
        (
            vec!["--helm", &old_helm, "swap", "web"],
            1,
            "is too old: bgslot needs Helm 3.14 or newer",
        ),
        (
            vec!["--helm", &not_helm, "swap", "web"],
            1,
            "could not read the helm version",
        ),
        // cluster access
        (
            vec!["--kube-context", "nosuch-context", "swap", "web"],
            1,
            "kube context 'nosuch-context' could not be loaded",
        ),
        (
            vec!["--kubeconfig", &garbage, "swap", "web"],
            1,
            "garbage-kubeconfig",
        ),
        (
            vec!["--kubeconfig", "/nonexistent/kubeconfig", "swap", "web"],
            1,
            "reading kubeconfig /nonexistent/kubeconfig",
        ),
        (
            vec!["--kubeconfig", &unreachable, "swap", "web"],
            1,
            "cannot reach the Kubernetes API server at https://127.0.0.1:1",
        ),
        (
            vec!["-n", "nosuch-namespace", "deploy", "web", "--tag", "v3"],
            1,
            "namespace nosuch-namespace does not exist",
        ),
        (
            vec!["-n", "nosuch-namespace", "status", "web"],
            1,
            "release web not found in namespace nosuch-namespace",
        ),
        // flag combinations and values that make no sense
        (
            vec!["deploy", "web", "--tag", "v3", "--image", "nginx:v3"],
            2,
            "cannot be used with",
        ),
        (vec!["deploy", "web"], 2, "--tag <TAG>"),
        (
            vec![
                "deploy",
                "web",
                "--tag",
                "v3",
                "--replace",
                "--replicas",
                "0",
            ],
            2,
            "for '--replicas <N>': 0 would stage a slot that can never take production traffic",
        ),
        (
            vec!["deploy", "web", "--tag", "v3", "--replicas", "-1"],
            2,
            "'-1' is not a whole number of replicas",
        ),
        (
            vec!["clean", "web", "--min-age", "soon"],
            2,
            "for '--min-age <DURATION>': invalid duration 'soon'",
        ),
        (
            vec!["swap", "web", "--wait-for-lock=forever"],
            2,
            "invalid duration 'forever'",
        ),
        (vec!["swap", "web", "-o", "yaml"], 2, "invalid value 'yaml'"),
        (
            vec![
                "release",
                "web",
                "--tag",
                "v3",
                "--verify-cmd",
                "curl 'unterminated",
            ],
            2,
            "for '--verify-cmd <CMD>': 'curl 'unterminated' cannot be split",
        ),
        (vec!["swap"], 2, "<RELEASE>"),
    ];
    assert_eq!(cases.len(), 42, "the README counts the cases");
    for (args, code, text) in &cases {
        let run = env.bgslot(args).await;
        assert_eq!(run.code, *code, "{args:?}: {run:?}");
        assert!(
            run.stderr.contains(text),
            "{args:?} should say '{text}': {run:?}"
        );
        let error_lines = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count();
        assert_eq!(error_lines, 1, "{args:?} prints exactly one error: {run:?}");
    }
    // With -o json a usage error is a JSON document on stdout too, so a pipeline always parses.
    let run = env
        .bgslot(&["swap", "web", "--expect-tag", "v2 v3", "-o", "json"])
        .await
        .must_exit(2);
    let doc = run.json();
    assert_eq!(
        (doc["kind"].as_str(), doc["exit_code"].as_i64()),
        (Some("usage"), Some(2)),
        "{run:?}"
    );
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("invalid value 'v2 v3' for '--expect-tag <TAG>'"),
        "{doc}"
    );
    assert_eq!(
        env.fingerprint("web").await,
        before,
        "no bad input changed the release"
    );
    assert_eq!(
        (
            env.fingerprint("purple").await,
            env.fingerprint("plain").await
        ),
        foreign_before
    );
    env.done().await;
}

const UNREACHABLE_KUBECONFIG: &str = "apiVersion: v1
kind: Config
clusters:
- name: nowhere
  cluster:
    server: https://127.0.0.1:1
    insecure-skip-tls-verify: true
users:
- name: nobody
  user:
    token: nothing
contexts:
- name: nowhere
  context:
    cluster: nowhere
    user: nobody
current-context: nowhere
";

/// Runs `testenv ARGS`, failing with its stderr.
fn testenv(args: &[&str]) {
    let out = std::process::Command::new(common::dataplane::testenv_bin())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "testenv {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A control plane of this test's own: restarting the shared API server would disturb every
/// other test running in parallel.
struct PrivatePlane {
    dir: tempfile::TempDir,
}

impl PrivatePlane {
    fn start() -> PrivatePlane {
        let dir = tempfile::Builder::new()
            .prefix("bgslot-restart-")
            .tempdir()
            .unwrap();
        testenv(&[
            "up",
            "--dir",
            dir.path().to_str().unwrap(),
            "--startup-delay",
            "3s",
        ]);
        PrivatePlane { dir }
    }

    fn kubeconfig(&self) -> String {
        self.dir
            .path()
            .join("kubeconfig")
            .to_str()
            .unwrap()
            .to_string()
    }
}

impl Drop for PrivatePlane {
    fn drop(&mut self) {
        let _ = std::process::Command::new(common::dataplane::testenv_bin())
            .args(["down", self.dir.path().to_str().unwrap()])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_restart_during_deploy_wait() {
    let plane = tokio::task::spawn_blocking(PrivatePlane::start)
        .await
        .unwrap();
    let kubeconfig = plane.kubeconfig();
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    for major in [3, 4] {
        let env = Env::on_cluster(major, "restart", client.clone(), &kubeconfig).await;
        env.bgslot(&["deploy", "web", "--tag", "v1", "--replicas", "2"])
            .await
            .must_succeed();
        let mut deploy =
            env.command(&["deploy", "web", "--tag", "v2-slow-start", "--timeout", "3m"]);
        deploy.stderr(std::process::Stdio::piped());
        let deploy = deploy.spawn().unwrap();
        common::eventually("the deploy is waiting on green", || async {
            env.is_waiting_on_green().await
        })
        .await;
        testenv(&[
            "restart-apiserver",
            plane.dir.path().to_str().unwrap(),
            "--down-for",
            "3s",
        ]);
        let run = Run::from(deploy.wait_with_output().await.unwrap());
        // The wait saw the outage, kept going, and finished once the slot was ready.
        run.must_succeed()
            .must_say("watch interrupted")
            .must_say("green: 2/2 ready");
        let fp = env.fingerprint("web").await;
        assert_eq!(fp.selectors["web"], "blue", "production untouched");
        assert_eq!(fp.latest_status, "deployed");
        env.bgslot(&["swap", "web", "--expect-tag", "v2-slow-start"])
            .await
            .must_succeed();
    }
}

with_both_helms!(a_signal_while_waiting_for_the_lock_stays_locked);

/// Ctrl-C while waiting for a lock another bgslot holds: the wait ends at once, and the outcome is
/// still "locked" (exit 4), not a generic failure.
async fn a_signal_while_waiting_for_the_lock_stays_locked(major: u32) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let env = Env::new(major, "lockwait").await;
    two_slots(&env).await;
    env.hold_lock("web", "someone@elsewhere pid 1 (swap)").await;
    let before = env.fingerprint("web").await;
    let mut child = env
        .command(&["swap", "web", "--wait-for-lock=5m"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        let waiting = line.starts_with("waiting for the release lock");
        seen.push(line);
        if waiting {
            break;
        }
    }
    assert!(
        seen.last().is_some_and(|l| l.contains("someone@elsewhere")),
        "{seen:?}"
    );
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGINT) };
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .expect("the wait ends at the signal")
        .unwrap();
    while let Some(line) = lines.next_line().await.unwrap() {
        seen.push(line);
    }
    assert_eq!(status.code(), Some(4), "{seen:?}");
    let text = seen.join("\n");
    assert!(
        text.contains("interrupted by SIGINT while waiting for the release lock")
            && text.contains("locked by another bgslot"),
        "{text}"
    );
    assert_eq!(env.fingerprint("web").await, before);
    env.done().await;
}

with_both_helms!(a_closed_pipe_ends_quietly);

/// `bgslot history web | head -1`: the reader goes away before bgslot writes; bgslot must end
/// quietly (exit 0), not panic.
async fn a_closed_pipe_ends_quietly(major: u32) {
    let env = Env::new(major, "pipe").await;
    two_slots(&env).await;
    for args in [
        &["history", "web"][..],
        &["status", "web", "-o", "json"],
        &["completions", "bash"],
    ] {
        let mut child = env
            .command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let run = Run::from(child.wait_with_output().await.unwrap());
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        assert!(!run.stderr.contains("panicked"), "{args:?}: {run:?}");
    }
    env.done().await;
}

with_both_helms!(sigterm_during_the_helm_write_reaches_helm);

/// bgslot forwards SIGTERM to the helm it is running and reports the state helm left. A helm
/// wrapper adds `--wait` to the upgrade so that the write itself takes long enough to interrupt.
async fn sigterm_during_the_helm_write_reaches_helm(major: u32) {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(major, "sigwrite").await;
    env.bgslot(&["deploy", "web", "--tag", "v1", "--replicas", "1"])
        .await
        .must_succeed();
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("helm");
    let wait = if major >= 4 {
        "--wait=watcher"
    } else {
        "--wait"
    };
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = upgrade ]; then exec {real} \"$@\" {wait} --timeout 5m; fi\nexec {real} \"$@\"\n",
            real = env.helm.path.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut cmd = env.command(&[
        "--helm",
        wrapper.to_str().unwrap(),
        "deploy",
        "web",
        "--tag",
        "v2-never-ready",
    ]);
    let child = cmd.stderr(std::process::Stdio::piped()).spawn().unwrap();
    common::eventually("helm is writing (pending-upgrade)", || async {
        env.fingerprint("web").await.latest_status == "pending-upgrade"
    })
    .await;
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    let run = Run::from(child.wait_with_output().await.unwrap());
    let left = env.fingerprint("web").await;
    assert_ne!(
        left.latest_status, "pending-upgrade",
        "helm got the signal and recorded an outcome: {run:?}"
    );
    run.must_exit(1)
        .must_say("stopped by SIGTERM")
        .must_say(&format!(
            "was left as: revision 2 is {}",
            left.latest_status
        ));
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    assert!(
        leases.get_opt("bgslot-lock-web").await.unwrap().is_none(),
        "the lock is released"
    );
    if left.latest_status == "failed" {
        env.bgslot(&["swap", "web"])
            .await
            .must_exit(3)
            .must_say("state failed")
            .must_say("bgslot recover web");
        env.bgslot(&["recover", "web"]).await.must_succeed();
    }
    env.bgslot(&["status", "web"]).await.must_succeed();
    env.done().await;
}
