//! Shared plumbing for the tests that run real `helm` binaries against a real control plane.
//!
//! The README's test command (`scripts/test`) prepares the binaries, starts the local control plane
//! and exports `KUBECONFIG`, `BGSLOT_HELM3` and `BGSLOT_HELM4`. A test that needs one of them and does
//! not find it fails with a message saying how to provide it: nothing here skips.

pub mod cli;
pub mod clusters;
pub mod dataplane;
pub mod postgres;
pub mod rbac;

/// Runs each named `async fn NAME(helm_major: u32)` once with Helm 3 and once with Helm 4.
#[allow(unused_macros)]
macro_rules! with_both_helms {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn helm3() { super::$name(3).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn helm4() { super::$name(4).await }
        }
    )*};
}

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::Client;

/// One real helm binary the tests run against.
#[derive(Debug, Clone)]
pub struct Helm {
    pub major: u32,
    pub path: PathBuf,
}

impl Helm {
    /// A `helm` command isolated from the user's own helm config, cache and plugins.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.path);
        let home = helm_home(self.major);
        cmd.env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_DATA_HOME", home.join("data"));
        cmd
    }

    /// Runs helm with `args`, panicking with helm's stderr when it fails; returns stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("run helm");
        assert!(
            out.status.success(),
            "helm {} {:?} failed: {}",
            self.major,
            args,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("helm prints UTF-8")
    }

    pub fn name(&self) -> String {
        format!("helm{}", self.major)
    }
}

fn helm_home(major: u32) -> PathBuf {
    std::env::temp_dir().join(format!("bgslot-tests-helm{major}"))
}

/// Where `testenv/prepare.sh` caches binaries and writes the `env` file naming them.
pub fn testenv_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("BGSLOT_TESTENV_CACHE") {
        return dir.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache")
        });
    base.join("bgslot-testenv")
}

fn from_env_or_cache(var: &str) -> Option<String> {
    if let Ok(v) = std::env::var(var) {
        return Some(v);
    }
    let env = std::fs::read_to_string(testenv_cache().join("env")).ok()?;
    env.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| *k == var)
        .map(|(_, v)| v.to_string())
}

/// Helm 3 and Helm 4, both required.
pub fn helms() -> Vec<Helm> {
    [(3, "BGSLOT_HELM3"), (4, "BGSLOT_HELM4")]
        .into_iter()
        .map(|(major, var)| {
            let path = from_env_or_cache(var).unwrap_or_else(|| {
                panic!("{var} is not set and no testenv cache names it: run testenv/prepare.sh (or scripts/test)")
            });
            let path = PathBuf::from(path);
            assert!(path.is_file(), "{var} points at {} which does not exist", path.display());
            Helm { major, path }
        })
        .collect()
}

pub fn helm(major: u32) -> Helm {
    helms()
        .into_iter()
        .find(|h| h.major == major)
        .expect("helm major 3 or 4")
}

/// The kubeconfig of the control plane under test; fails loudly when there is none.
pub fn kubeconfig() -> PathBuf {
    let path = std::env::var_os("KUBECONFIG").unwrap_or_else(|| {
        panic!("KUBECONFIG is not set: start the local control plane with scripts/test (or `testenv up`) or point it at a cluster")
    });
    PathBuf::from(path)
}

pub async fn client() -> Client {
    let _ = kubeconfig();
    Client::try_default()
        .await
        .expect("kube client from KUBECONFIG")
}

/// A fresh namespace per test so tests run in parallel without seeing each other.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    create_namespace(client, &name).await;
    name
}

/// Creates the test namespace `name`.
pub async fn create_namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "labels": { "bgslot-test": "true" } }
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create test namespace");
}

pub async fn delete_namespace(client: &Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::background())
        .await;
}

/// A namespace a test made outside an [`cli::Env`], deleted when dropped (also on panic).
pub struct NamespaceGuard(pub String);

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        delete_namespace_blocking(&self.0, None);
    }
}

/// Deletes a namespace from synchronous code (a `Drop`, possibly while a test panics): on a
/// thread of its own with its own runtime and client, so it works whatever state the test's
/// runtime is in. `kubeconfig` names another cluster than KUBECONFIG's.
pub fn delete_namespace_blocking(name: &str, kubeconfig: Option<&str>) {
    let owned = name.to_string();
    let kubeconfig = kubeconfig.map(str::to_string);
    let deleted = std::thread::spawn(move || {
        let name = owned;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the namespace cleanup");
        runtime.block_on(async {
            let client = match kubeconfig {
                Some(path) => {
                    let kc = kube::config::Kubeconfig::read_from(&path).ok()?;
                    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                        .await
                        .ok()?;
                    Client::try_from(config).ok()?
                }
                None => Client::try_default().await.ok()?,
            };
            delete_namespace(&client, &name).await;
            Some(())
        })
    })
    .join();
    if !matches!(deleted, Ok(Some(()))) {
        eprintln!("warning: could not delete test namespace {name}");
    }
}

/// The chart directory in this checkout.
pub fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("chart")
}

/// Polls `check` until it holds, failing after 60 s with `what`.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
