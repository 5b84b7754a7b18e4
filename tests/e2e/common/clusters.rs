//! Two control planes for the tests of runs across several clusters: the one `scripts/test` starts
//! (`$BGSLOT_TESTENV_DIR`, context `bgslot-testenv`) and a second one beside it (context
//! `bgslot-testenv-2`). The second is the one `testenv run --clusters 2` started
//! (`$BGSLOT_TESTENV_DIR_2`), else the first test that needs it starts it in
//! `$BGSLOT_TESTENV_DIR/clusters/2`, where every other multi-cluster test finds it and where the
//! `testenv down` of the first stops it: only these tests pay for it, once.
//!
//! One test stops the second plane's API server on purpose; it takes [`exclusive`], every other
//! multi-cluster test [`shared`], so none of them meets that outage.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use kube::Client;

use super::dataplane::{testenv_bin, testenv_dir};

/// One control plane: its testenv directory, kubeconfig and context.
#[derive(Debug, Clone)]
pub struct Plane {
    pub dir: PathBuf,
    pub context: String,
}

impl Plane {
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    pub fn kubeconfig_str(&self) -> String {
        self.kubeconfig().to_str().unwrap().to_string()
    }

    /// A client of this plane (one per test: a client belongs to the runtime that made it).
    pub async fn client(&self) -> Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.kubeconfig()).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        Client::try_from(config).unwrap()
    }

    /// Runs `testenv ARGS DIR`, failing with its stderr.
    pub fn testenv(&self, args: &[&str]) {
        let out = std::process::Command::new(testenv_bin())
            .args(args)
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "testenv {args:?} {} failed: {}",
            self.dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The plane `scripts/test` started.
pub fn first() -> Plane {
    Plane {
        dir: testenv_dir(),
        context: "bgslot-testenv".into(),
    }
}

/// The second plane, started once for every multi-cluster test of this run.
pub async fn second() -> Plane {
    tokio::task::spawn_blocking(second_blocking).await.unwrap()
}

fn second_blocking() -> Plane {
    static SECOND: Mutex<Option<Plane>> = Mutex::new(None);
    let mut second = SECOND.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(plane) = second.as_ref() {
        return plane.clone();
    }
    let context = "bgslot-testenv-2".to_string();
    let plane = match std::env::var_os("BGSLOT_TESTENV_DIR_2").filter(|d| !d.is_empty()) {
        Some(dir) => Plane {
            dir: dir.into(),
            context,
        },
        None => {
            let dir = testenv_dir().join("clusters").join("2");
            if !dir.join("kubeconfig").is_file() {
                start(&dir, &context);
            }
            Plane { dir, context }
        }
    };
    *second = Some(plane.clone());
    plane
}

/// `testenv up` of a second plane beside the first.
fn start(dir: &Path, context: &str) {
    let out = std::process::Command::new(testenv_bin())
        .args(["up", "--dir"])
        .arg(dir)
        .args(["--context", context])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the second control plane did not start (testenv up --dir {}): {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn gate() -> &'static tokio::sync::RwLock<()> {
    static GATE: OnceLock<tokio::sync::RwLock<()>> = OnceLock::new();
    GATE.get_or_init(|| tokio::sync::RwLock::new(()))
}

/// Held by a multi-cluster test while it uses the second plane.
pub async fn shared() -> tokio::sync::RwLockReadGuard<'static, ()> {
    gate().read().await
}

/// Held by the test that stops the second plane's API server.
pub async fn exclusive() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    gate().write().await
}
