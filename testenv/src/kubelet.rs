//! A simulated kubelet: there is no container runtime on the test machines, so this plays the node.
//! It registers a Ready Node and keeps it alive, binds every unscheduled pod to it (there is no
//! scheduler either), reports pod statuses the way a real kubelet would (including injected faults,
//! see [`status`]) and finishes pod deletions, so Deployments, ReplicaSets, Endpoints and Helm's
//! waits behave as on a real cluster.

pub mod status;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher::Event;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::{sleep, Instant};

use status::{Facts, Fault, Stage};

/// How often the Node status and its Lease are renewed (the node lifecycle controller's grace
/// period is 40 s).
const HEARTBEAT: Duration = Duration::from_secs(10);
/// Time between restarts of a crash-looping container.
const CRASH_INTERVAL: Duration = Duration::from_secs(3);
/// Time between `ErrImagePull` and `ImagePullBackOff`, and between later pull attempts.
const PULL_INTERVAL: Duration = Duration::from_secs(3);
/// The node's address; pods get theirs from `POD_NETWORK`.
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 10);
/// 10.244.0.0/16, the usual pod network; never loopback, which Endpoints reject.
const POD_NETWORK: u32 = u32::from_be_bytes([10, 244, 0, 0]);

macro_rules! log {
    ($($arg:tt)*) => {
        eprintln!("{} {}", Timestamp::now().strftime("%H:%M:%S%.3f"), format_args!($($arg)*))
    };
}

#[derive(Clone, Debug)]
pub struct Options {
    pub kubeconfig: PathBuf,
    pub node_name: String,
    pub startup_delay: Duration,
    pub max_grace: Duration,
}

struct Kubelet {
    client: Client,
    opts: Options,
    ips: Mutex<PodIps>,
}

pub async fn run(opts: Options) -> Result<()> {
    let client = crate::client_for(&opts.kubeconfig).await?;
    log!(
        "simulated kubelet for node {} (startup delay {:?}, max grace {:?})",
        opts.node_name,
        opts.startup_delay,
        opts.max_grace
    );
    let kubelet = Arc::new(Kubelet {
        client,
        opts,
        ips: Mutex::new(PodIps::default()),
    });
    tokio::spawn(kubelet.clone().heartbeat());
    kubelet.watch_pods().await
}

impl Kubelet {
    fn node_name(&self) -> &str {
        &self.opts.node_name
    }

    // --- the node ---------------------------------------------------------------------------

    async fn heartbeat(self: Arc<Self>) {
        let since = Timestamp::now();
        let mut registered = false;
        loop {
            if !registered {
                match self.register_node(since).await {
                    Ok(()) => {
                        registered = true;
                        log!("node {} registered", self.node_name());
                    }
                    Err(e) => log!("registering node: {e:#}"),
                }
            }
            if registered {
                if let Err(e) = self.report_node_status(since).await {
                    log!("node status: {e:#}");
                    if is_status(&e, 404) {
                        registered = false;
                    }
                }
                if let Err(e) = self.renew_lease().await {
                    log!("node lease: {e:#}");
                }
            }
            sleep(if registered {
                HEARTBEAT
            } else {
                Duration::from_secs(1)
            })
            .await;
        }
    }

    async fn register_node(&self, since: Timestamp) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let name = self.node_name();
        let node: Node = serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "beta.kubernetes.io/os": "linux",
                    "beta.kubernetes.io/arch": "amd64",
                },
            },
            "spec": {},
            "status": self.node_status(since),
        }))?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        self.report_node_status(since).await
    }

    fn node_status(&self, since: Timestamp) -> serde_json::Value {
        let now = Timestamp::now().to_string();
        let since = since.to_string();
        let condition = |type_: &str, status: &str, reason: &str, message: &str| {
            json!({
                "type": type_, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": since,
            })
        };
        let resources = json!({
            "cpu": "8", "memory": "32Gi", "pods": "250", "ephemeral-storage": "100Gi",
        });
        json!({
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": NODE_IP.to_string()},
                {"type": "Hostname", "address": self.node_name()},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": "", "osImage": "bgslot simulated node",
                "containerRuntimeVersion": "sim://1.0", "kubeletVersion": "v1.20.2",
                "kubeProxyVersion": "v1.20.2", "operatingSystem": "linux", "architecture": "amd64",
            },
        })
    }

    async fn report_node_status(&self, since: Timestamp) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let patch = json!({ "status": self.node_status(since) });
        nodes
            .patch_status(
                self.node_name(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        Ok(())
    }

    async fn renew_lease(&self) -> Result<()> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        let now = serde_json::to_value(MicroTime(Timestamp::now()))?;
        let patch = json!({ "spec": { "holderIdentity": self.node_name(), "renewTime": now } });
        match leases
            .patch(
                self.node_name(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                let lease: Lease = serde_json::from_value(json!({
                    "metadata": { "name": self.node_name(), "namespace": "kube-node-lease" },
                    "spec": {
                        "holderIdentity": self.node_name(),
                        "leaseDurationSeconds": 40,
                        "renewTime": now,
                    },
                }))?;
                leases.create(&PostParams::default(), &lease).await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    // --- pods -------------------------------------------------------------------------------

    /// Follows every pod in the cluster: binds the unscheduled ones and hands each pod on this
    /// node to its own task, which receives the pod's latest version through a watch channel.
    async fn watch_pods(self: Arc<Self>) -> Result<()> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let mut events = watcher(pods, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut tasks: HashMap<String, watch::Sender<Pod>> = HashMap::new();
        let mut listed: HashSet<String> = HashSet::new();
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => listed.clear(),
                Ok(Event::InitApply(pod)) => {
                    listed.insert(uid(&pod));
                    self.observe(pod, &mut tasks);
                }
                Ok(Event::InitDone) => {
                    // Pods deleted while the watch was down never get a Delete event.
                    tasks.retain(|uid, _| listed.contains(uid));
                }
                Ok(Event::Apply(pod)) => self.observe(pod, &mut tasks),
                Ok(Event::Delete(pod)) => {
                    tasks.remove(&uid(&pod));
                }
                Err(e) => log!("pod watch: {e}"),
            }
        }
        anyhow::bail!("pod watch ended")
    }

    fn observe(self: &Arc<Self>, pod: Pod, tasks: &mut HashMap<String, watch::Sender<Pod>>) {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        match node {
            None if pod.metadata.deletion_timestamp.is_none() && !terminal(&pod) => {
                tokio::spawn(self.clone().bind(pod));
            }
            Some(node) if node == self.node_name() => {
                let uid = uid(&pod);
                if let Some(tx) = tasks.get(&uid) {
                    // The task may have finished (pod deleted); its Delete event will follow.
                    let _ = tx.send(pod);
                } else {
                    let (tx, rx) = watch::channel(pod);
                    tasks.insert(uid, tx);
                    tokio::spawn(self.clone().drive(rx));
                }
            }
            _ => {}
        }
    }

    async fn bind(self: Arc<Self>, pod: Pod) {
        let (ns, name) = key(&pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": { "name": name, "namespace": ns, "uid": pod.metadata.uid },
            "target": { "apiVersion": "v1", "kind": "Node", "name": self.node_name() },
        });
        for attempt in 1..=10 {
            match api
                .create_subresource::<_, serde_json::Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await
            {
                Ok(_) => {
                    log!("bound {ns}/{name} to {}", self.node_name());
                    return;
                }
                // Already bound (a duplicate event) or gone.
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => return,
                Err(e) => {
                    log!("binding {ns}/{name} (attempt {attempt}): {e}");
                    sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Plays one pod's life on this node, from creation to deletion.
    async fn drive(self: Arc<Self>, rx: watch::Receiver<Pod>) {
        let pod = rx.borrow().clone();
        let (ns, name) = key(&pod);
        let ip = self.ips.lock().unwrap().take(&pod);
        let mut life = PodLife::new(self.clone(), rx, ip);
        match life.live().await {
            Interrupted::Deleting => life.finish_deletion().await,
            Interrupted::Gone => {}
        }
        self.ips.lock().unwrap().release(ip);
        log!("{ns}/{name} gone");
    }

    async fn delete_now(&self, pod: &Pod) -> Result<(), kube::Error> {
        let (ns, name) = key(pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        api.delete(&name, &params).await.map(|_| ())
    }
}

/// Why a pod's simulated life stopped before its end.
enum Interrupted {
    /// The pod got a deletionTimestamp.
    Deleting,
    /// The pod no longer exists.
    Gone,
}

struct PodLife {
    kubelet: Arc<Kubelet>,
    rx: watch::Receiver<Pod>,
    facts: Facts,
    ready: bool,
    /// Set when the pod had already been started by an earlier run of this kubelet.
    resumed_at: Option<Duration>,
}

impl PodLife {
    fn new(kubelet: Arc<Kubelet>, rx: watch::Receiver<Pod>, ip: Ipv4Addr) -> Self {
        let pod = rx.borrow().clone();
        let now = Timestamp::now();
        let status = pod.status.as_ref();
        let start_time = status.and_then(|s| s.start_time.as_ref()).map(|t| t.0);
        let resumed_at = start_time
            .filter(|_| status.and_then(|s| s.container_statuses.as_ref()).is_some())
            .map(|t| Duration::try_from(now.duration_since(t)).unwrap_or_default());
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let start_time = start_time.unwrap_or(now);
        PodLife {
            kubelet,
            rx,
            facts: Facts {
                host_ip: NODE_IP.to_string(),
                pod_ip: ip.to_string(),
                start_time,
                containers_started: start_time,
                ready_changed: start_time,
                now,
            },
            ready,
            resumed_at,
        }
    }

    fn pod(&self) -> Pod {
        self.rx.borrow().clone()
    }

    async fn live(&mut self) -> Interrupted {
        match self.stages().await {
            Ok(never) => match never {},
            Err(i) => i,
        }
    }

    async fn stages(&mut self) -> Result<std::convert::Infallible, Interrupted> {
        let pod = self.pod();
        if terminal(&pod) {
            return self.idle().await;
        }
        let fault = status::fault_of(&pod);
        let timing = status::timing_of(&pod, fault, self.kubelet.opts.startup_delay);
        let elapsed = self.resumed_at.unwrap_or_default();
        let run_after = timing.run_after.saturating_sub(elapsed);
        let ready_after = timing
            .ready_after
            .saturating_sub(elapsed.max(timing.run_after));

        if self.resumed_at.is_none() {
            self.report(Stage::Creating).await?;
        }
        self.pause(run_after).await?;
        self.facts.containers_started = Timestamp::now();

        let restarts_always = status::restarts_always(&pod);
        match fault {
            Some(Fault::ImagePull) => loop {
                self.report(Stage::ImagePull { backoff: false }).await?;
                self.pause(PULL_INTERVAL).await?;
                self.report(Stage::ImagePull { backoff: true }).await?;
                self.pause(PULL_INTERVAL * 4).await?;
            },
            Some(Fault::CrashLoop) if status::restarts_on_failure(&pod) => {
                let mut restarts = 1;
                loop {
                    self.report(Stage::CrashLoop { restarts }).await?;
                    self.pause(CRASH_INTERVAL).await?;
                    self.facts.containers_started = Timestamp::now();
                    restarts += 1;
                }
            }
            Some(Fault::CrashLoop) => self.report(Stage::Failed).await?,
            Some(Fault::NeverReady) => self.report(Stage::Running { ready: false }).await?,
            None | Some(Fault::SlowStart) => {
                if !ready_after.is_zero() || !restarts_always {
                    self.report(Stage::Running { ready: false }).await?;
                    self.pause(ready_after).await?;
                }
                if restarts_always {
                    self.report(Stage::Running { ready: true }).await?;
                } else {
                    self.report(Stage::Succeeded).await?;
                }
            }
        }
        self.idle().await
    }

    /// Publishes the status for `stage`, retrying while the API server is unreachable.
    async fn report(&mut self, stage: Stage) -> Result<(), Interrupted> {
        let now = Timestamp::now();
        if stage.ready() != self.ready {
            self.ready = stage.ready();
            self.facts.ready_changed = now;
        }
        self.facts.now = now;
        loop {
            let pod = self.pod();
            if pod.metadata.deletion_timestamp.is_some() {
                return Err(Interrupted::Deleting);
            }
            let (ns, name) = key(&pod);
            let status = status::status_for(&pod, stage, &self.facts);
            let api: Api<Pod> = Api::namespaced(self.kubelet.client.clone(), &ns);
            let patch = json!({ "status": status });
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    log!("{ns}/{name}: {stage:?}");
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.code == 404 => return Err(Interrupted::Gone),
                Err(e) => {
                    log!("{ns}/{name}: status update failed: {e}");
                    self.pause(Duration::from_secs(1)).await?;
                }
            }
        }
    }

    fn check_not_deleting(&mut self) -> Result<(), Interrupted> {
        match self.rx.borrow_and_update().metadata.deletion_timestamp {
            Some(_) => Err(Interrupted::Deleting),
            None => Ok(()),
        }
    }

    /// Waits `d`, returning early when the pod is being deleted or is gone.
    async fn pause(&mut self, d: Duration) -> Result<(), Interrupted> {
        let deadline = Instant::now() + d;
        loop {
            self.check_not_deleting()?;
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(()),
                changed = self.rx.changed() => if changed.is_err() { return Err(Interrupted::Gone) },
            }
        }
    }

    async fn idle(&mut self) -> Result<std::convert::Infallible, Interrupted> {
        loop {
            self.check_not_deleting()?;
            if self.rx.changed().await.is_err() {
                return Err(Interrupted::Gone);
            }
        }
    }

    /// What a kubelet does once a pod is marked for deletion: stop its containers within the
    /// grace period (capped for tests), then remove the pod object for good.
    async fn finish_deletion(&mut self) {
        let pod = self.pod();
        let (ns, name) = key(&pod);
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64))
            .unwrap_or(Duration::from_secs(30))
            .min(self.kubelet.opts.max_grace);
        let deadline = Instant::now() + grace;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                changed = self.rx.changed() => if changed.is_err() { return },
            }
        }
        for attempt in 1..=30 {
            match self.kubelet.delete_now(&pod).await {
                Ok(()) => {
                    log!("{ns}/{name}: deleted after {grace:?}");
                    return;
                }
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => return,
                Err(e) => {
                    log!("{ns}/{name}: delete failed (attempt {attempt}): {e}");
                    tokio::select! {
                        _ = sleep(Duration::from_secs(1)) => {}
                        changed = self.rx.changed() => if changed.is_err() { return },
                    }
                }
            }
        }
    }
}

/// Hands out pod IPs from [`POD_NETWORK`], each to one live pod at a time.
#[derive(Default)]
struct PodIps {
    next: u32,
    used: HashSet<Ipv4Addr>,
}

impl PodIps {
    /// The pod's existing IP when it already has one from this network, else a free one.
    fn take(&mut self, pod: &Pod) -> Ipv4Addr {
        let existing = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            .filter(|ip| u32::from(*ip) & 0xffff_0000 == POD_NETWORK && !self.used.contains(ip));
        let ip = existing.unwrap_or_else(|| loop {
            // Skip .0 and .255 host parts, which look odd even if they are valid in a /16.
            self.next = (self.next + 1) % 0x1_0000;
            let host = self.next & 0xff;
            let ip = Ipv4Addr::from(POD_NETWORK | self.next);
            if host != 0 && host != 255 && !self.used.contains(&ip) {
                break ip;
            }
        });
        self.used.insert(ip);
        ip
    }

    fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&ip);
    }
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn key(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn is_status(e: &anyhow::Error, code: u16) -> bool {
    matches!(e.downcast_ref::<kube::Error>(), Some(kube::Error::Api(s)) if s.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ips_are_unique_and_never_loopback() {
        let mut ips = PodIps::default();
        let pod = Pod::default();
        let a = ips.take(&pod);
        let b = ips.take(&pod);
        assert_ne!(a, b);
        assert_eq!(a.octets()[..2], [10, 244]);
        assert!(!a.is_loopback());
        ips.release(a);
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            let ip = ips.take(&pod);
            assert!(seen.insert(ip));
            assert_ne!(ip.octets()[3], 0);
            assert_ne!(ip.octets()[3], 255);
        }
    }

    #[test]
    fn pod_ips_keep_an_existing_address() {
        let mut ips = PodIps::default();
        let pod = Pod {
            status: Some(k8s_openapi::api::core::v1::PodStatus {
                pod_ip: Some("10.244.3.4".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(ips.take(&pod), Ipv4Addr::new(10, 244, 3, 4));
        // A second claim on the same address gets a fresh one.
        assert_ne!(ips.take(&pod), Ipv4Addr::new(10, 244, 3, 4));
    }
}
