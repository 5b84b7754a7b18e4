//! `testenv run` must hand the command a working environment, pass its exit code on, and leave no
//! process or directory behind, or interrupted and failed CI runs would pile up control planes.

use std::path::{Path, PathBuf};
use std::process::Command;

fn cache_env() -> PathBuf {
    if let Some(dir) = std::env::var_os("BGSLOT_TESTENV_CACHE") {
        return PathBuf::from(dir).join("env");
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
    cache.join("bgslot-testenv/env")
}

/// Whether a live (non-zombie) process has `dir` on its command line.
fn processes_mentioning(dir: &Path) -> Vec<String> {
    let needle = dir.as_os_str().as_encoded_bytes();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let proc_dir = entry.path();
        let Ok(cmdline) = std::fs::read(proc_dir.join("cmdline")) else {
            continue;
        };
        let zombie = std::fs::read_to_string(proc_dir.join("stat"))
            .map(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie && cmdline.windows(needle.len()).any(|w| w == needle) {
            found.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
        }
    }
    found
}

#[test]
fn run_gives_a_working_cluster_passes_the_exit_code_on_and_cleans_up() {
    // This test starts a control plane of its own, so it needs the prepared binaries.
    assert!(
        cache_env().exists(),
        "no testenv cache ({}): run `testenv prepare` (scripts/test does) to test the environment's lifecycle",
        cache_env().display()
    );
    let out = std::env::temp_dir().join(format!("testenv-lifecycle-{}", std::process::id()));
    let script = format!(
        r#"set -e
echo "$BGSLOT_TESTENV_DIR" > {out}
test -s "$KUBECONFIG"
grep -q '^KUBECONFIG=' "$BGSLOT_TESTENV_DIR/env"
test "$(wc -l < "$BGSLOT_TESTENV_DIR/pids")" -eq 4
exit 5"#,
        out = out.display()
    );
    let status = Command::new(env!("CARGO_BIN_EXE_testenv"))
        .args(["run", "--", "sh", "-c", &script])
        .env_remove("BGSLOT_TESTENV_DIR")
        .status()
        .expect("running testenv");
    let dir = PathBuf::from(
        std::fs::read_to_string(&out)
            .expect("the command ran")
            .trim(),
    );
    let _ = std::fs::remove_file(&out);
    assert_eq!(status.code(), Some(5), "the command's exit code, passed on");
    assert!(!dir.exists(), "{} was not removed", dir.display());
    let left = processes_mentioning(&dir);
    assert!(left.is_empty(), "still running: {left:#?}");
}

/// Pod apps of `dir`: the processes the kubelet started for its pods.
fn pod_apps(dir: &Path) -> Vec<String> {
    processes_mentioning(dir)
        .into_iter()
        .filter(|cmdline| cmdline.contains(" pod-app "))
        .collect()
}

fn testenv(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_testenv"))
        .args(args)
        .env_remove("BGSLOT_TESTENV_DIR")
        .output()
        .expect("running testenv");
    assert!(
        out.status.success(),
        "testenv {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts an environment in `dir` and a Deployment of `replicas` pods in it, and waits until
/// each pod's app process runs.
async fn up_with_pods(dir: &Path, replicas: usize) {
    testenv(&["up", "--dir", dir.to_str().unwrap()]);
    let kubeconfig = kube::config::Kubeconfig::read_from(dir.join("kubeconfig")).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let deployment: k8s_openapi::api::apps::v1::Deployment =
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web" },
            "spec": {
                "replicas": replicas,
                "selector": { "matchLabels": { "app": "web" } },
                "template": {
                    "metadata": { "labels": { "app": "web" } },
                    "spec": { "containers": [{ "name": "app", "image": "app:v1", "ports": [{ "containerPort": 8080 }] }] },
                },
            },
        }))
        .unwrap();
    kube::Api::default_namespaced(client)
        .create(&Default::default(), &deployment)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while pod_apps(dir).len() < replicas {
        assert!(
            std::time::Instant::now() < deadline,
            "no {replicas} pod apps after 60s: {:#?}",
            pod_apps(dir)
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn fresh_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("testenv-{name}-{}", std::process::id()))
}

#[tokio::test]
async fn down_stops_the_pod_apps_too() {
    assert!(
        cache_env().exists(),
        "no testenv cache: run `testenv prepare`"
    );
    let dir = fresh_dir("apps-down");
    up_with_pods(&dir, 2).await;
    testenv(&["down", dir.to_str().unwrap()]);
    assert!(!dir.exists(), "{} was not removed", dir.display());
    let left = processes_mentioning(&dir);
    assert!(left.is_empty(), "still running: {left:#?}");
}

#[tokio::test]
async fn pod_apps_die_with_a_killed_kubelet() {
    assert!(
        cache_env().exists(),
        "no testenv cache: run `testenv prepare`"
    );
    let dir = fresh_dir("apps-kill");
    up_with_pods(&dir, 2).await;
    let pids = std::fs::read_to_string(dir.join("pids")).unwrap();
    let kubelet: i32 = pids
        .lines()
        .find_map(|l| l.strip_prefix("kubelet "))
        .expect("a kubelet in DIR/pids")
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) on the kubelet this test started.
    unsafe { libc::kill(kubelet, libc::SIGKILL) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !pod_apps(&dir).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "pod apps outlived their SIGKILLed kubelet: {:#?}",
            pod_apps(&dir)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    testenv(&["down", dir.to_str().unwrap()]);
    assert!(processes_mentioning(&dir).is_empty());
}

/// `run --clusters 2`: two control planes side by side, both handed over (one KUBECONFIG with
/// both contexts, the second's directory), the second's API server stopped and started on demand
/// while the first runs on, and both stopped and removed at the end.
#[test]
fn run_with_two_clusters_hands_both_over_and_stops_both() {
    assert!(
        cache_env().exists(),
        "no testenv cache: run `testenv prepare`"
    );
    let out = std::env::temp_dir().join(format!("testenv-clusters-{}", std::process::id()));
    let testenv = env!("CARGO_BIN_EXE_testenv");
    let script = format!(
        r#"set -e
echo "$BGSLOT_TESTENV_DIR" > {out}
test "$BGSLOT_TESTENV_DIR_2" = "$BGSLOT_TESTENV_DIR/clusters/2"
test "$KUBECONFIG" = "$BGSLOT_TESTENV_DIR/kubeconfig:$BGSLOT_TESTENV_DIR_2/kubeconfig"
grep -q '^current-context: bgslot-testenv$' "$BGSLOT_TESTENV_DIR/kubeconfig"
grep -q '^current-context: bgslot-testenv-2$' "$BGSLOT_TESTENV_DIR_2/kubeconfig"
test "$(wc -l < "$BGSLOT_TESTENV_DIR_2/pids")" -eq 4
{testenv} stop-apiserver "$BGSLOT_TESTENV_DIR_2"
if {testenv} stop-apiserver "$BGSLOT_TESTENV_DIR_2" 2>/dev/null; then exit 7; fi
{testenv} start-apiserver "$BGSLOT_TESTENV_DIR_2"
exit 0"#,
        out = out.display()
    );
    let status = Command::new(testenv)
        .args(["run", "--clusters", "2", "--", "sh", "-c", &script])
        .env_remove("BGSLOT_TESTENV_DIR")
        .env_remove("BGSLOT_TESTENV_DIR_2")
        .status()
        .expect("running testenv");
    let dir = PathBuf::from(
        std::fs::read_to_string(&out)
            .expect("the command ran")
            .trim(),
    );
    let _ = std::fs::remove_file(&out);
    assert_eq!(status.code(), Some(0), "the checks of the command passed");
    assert!(!dir.exists(), "{} was not removed", dir.display());
    let left = processes_mentioning(&dir);
    assert!(left.is_empty(), "still running: {left:#?}");
}
