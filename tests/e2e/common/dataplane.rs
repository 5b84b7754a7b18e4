//! Traffic through testenv's data plane, for tests that make claims about requests: the Service's
//! loopback address and routing table (from `$BGSLOT_TESTENV_DIR/services.json`, written by the
//! simulated node's service proxy) and a load generator (`testenv load`) to start and stop.
//!
//! These need testenv's simulated node (pods are local processes there); on another cluster they
//! fail saying so.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// The environment `testenv run`/`up` made; its service proxy writes the files read here.
pub fn testenv_dir() -> PathBuf {
    let dir = std::env::var_os("BGSLOT_TESTENV_DIR").unwrap_or_else(|| {
        panic!("BGSLOT_TESTENV_DIR is not set: traffic tests need testenv's simulated node and service proxy (scripts/test, or `eval \"$(testenv up)\"`)")
    });
    PathBuf::from(dir)
}

/// The `testenv` binary built beside the test binaries.
pub fn testenv_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("testenv");
    assert!(
        bin.is_file(),
        "{} is missing: build the workspace (scripts/test does)",
        bin.display()
    );
    bin
}

/// A Service port as the proxy routes it now.
#[derive(Debug, Deserialize)]
pub struct RoutedPort {
    pub backends: Vec<Backend>,
}

/// A pod behind a Service port.
#[derive(Debug, Deserialize)]
pub struct Backend {
    pub pod: String,
}

/// A Service as the proxy routes it now.
#[derive(Debug, Deserialize)]
pub struct Routed {
    pub ports: Vec<RoutedPort>,
    /// Connections the proxy turned away, by cause (`no_endpoint`, `refused`, `unreachable`).
    pub rejected: BTreeMap<String, u64>,
}

/// The proxy's current view of `service` (NAMESPACE/NAME), if it has one.
pub fn routed(service: &str) -> Option<Routed> {
    let path = testenv_dir().join("services.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut table: BTreeMap<String, Routed> =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    table.remove(service)
}

/// How many connections to `service` the proxy has rejected so far.
pub fn rejected(service: &str) -> u64 {
    routed(service).map_or(0, |r| r.rejected.values().sum())
}

/// Waits until the proxy routes new connections to `service` only to `count` pods whose names
/// start with `pod_prefix` (e.g. `web-green-`).
pub async fn await_routes(service: &str, pod_prefix: &str, count: usize) {
    super::eventually(
        &format!("the proxy routes {service} to {count} {pod_prefix}* pods"),
        || async {
            routed(service).is_some_and(|r| {
                r.ports.first().is_some_and(|p| {
                    p.backends.len() == count
                        && p.backends.iter().all(|b| b.pod.starts_with(pod_prefix))
                })
            })
        },
    )
    .await;
}

/// What `testenv load` reported.
#[derive(Debug, Deserialize)]
pub struct LoadSummary {
    pub requests: u64,
    pub failed: u64,
    pub failed_by_kind: BTreeMap<String, u64>,
    pub by_version: BTreeMap<String, u64>,
    pub by_client: BTreeMap<String, ClientSummary>,
    /// The first failed requests, as recorded.
    pub failures: Vec<Value>,
}

#[derive(Debug, Deserialize)]
pub struct ClientSummary {
    pub requests: u64,
    pub connections: u64,
}

/// Load sent through a Service by a `testenv load` process until [`Load::stop`].
pub struct Load {
    child: tokio::process::Child,
}

impl Load {
    /// Starts `rate` requests per second through `service` (NAMESPACE/NAME), half of them on
    /// kept-alive connections, and returns once they flow.
    pub async fn start(service: &str, rate: f64) -> Load {
        let mut child = tokio::process::Command::new(testenv_bin())
            .args(["load", service, "--rate", &rate.to_string()])
            .args([
                "--keepalive-conns",
                "4",
                "--timeout",
                "5s",
                "--max-duration",
                "15m",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting testenv load");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let started = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.starts_with("load: started") {
                    return Ok(());
                }
                eprintln!("{line}");
            }
            Err("testenv load exited before it started")
        })
        .await;
        match started {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => panic!("testenv load did not start within 60s"),
        }
        // Keep draining its stderr so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Load { child }
    }

    /// Stops the load (SIGINT), waits for the requests in flight and returns the summary.
    pub async fn stop(mut self) -> LoadSummary {
        let pid = self.child.id().expect("testenv load is running") as i32;
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .await
            .unwrap();
        let status = self.child.wait().await.unwrap();
        assert!(status.success(), "testenv load failed ({status}): {stdout}");
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("testenv load printed no summary ({e}): {stdout}"))
    }
}

/// One line of the node's record of every app's life (`pod-events.jsonl`, see testenv's
/// `kubelet/events.rs`): what the simulated kubelet really did to a pod's process.
#[derive(Debug, Clone, Deserialize)]
pub struct PodEvent {
    /// RFC 3339 with a fixed width: comparing two strings compares the times.
    pub t: String,
    /// `started`, `sigterm`, `sigkill` or `exited`.
    pub event: String,
    /// NAMESPACE/NAME.
    pub pod: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub grace_period_s: Option<f64>,
    pub code: Option<i32>,
    pub signal: Option<String>,
}

/// The node's record of every app's life so far, in time order.
pub fn pod_events() -> Vec<PodEvent> {
    let path = testenv_dir().join("pod-events.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("a line of {}: {e}: {l}", path.display()))
        })
        .collect()
}

/// The version that answers a request sent now to `service` (NAMESPACE/NAME) through the node's
/// proxy of the environment in `dir`; `None` when no pod answered.
pub async fn version_behind(dir: &std::path::Path, service: &str) -> Option<String> {
    use tokio::io::AsyncWriteExt;
    let out = tokio::process::Command::new(testenv_bin())
        .args(["service-addr", service, "--dir"])
        .arg(dir)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "testenv service-addr {service}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addr = String::from_utf8(out.stdout).unwrap();
    let ask = async {
        let mut sock = tokio::net::TcpStream::connect(addr.trim()).await.ok()?;
        sock.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = String::new();
        sock.read_to_string(&mut answer).await.ok()?;
        let body = answer.split_once("\r\n\r\n")?.1;
        let body: Value = serde_json::from_str(body.trim()).ok()?;
        body["version"].as_str().map(str::to_string)
    };
    tokio::time::timeout(Duration::from_secs(5), ask)
        .await
        .ok()
        .flatten()
}
