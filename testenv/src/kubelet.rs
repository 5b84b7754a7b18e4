//! A simulated kubelet: there is no container runtime on the test machines, so this plays the node.
//! It registers a Ready Node and keeps it alive, binds every unscheduled pod to it (there is no
//! scheduler either), reports pod statuses the way a real kubelet would (including injected faults,
//! see [`status`]) and finishes pod deletions, so Deployments, ReplicaSets, Endpoints and Helm's
//! waits behave as on a real cluster.
//!
//! The main container of every long-running pod is a real process ([`app`], `testenv pod-app`):
//! readiness comes from probing it, a crash is a process that exits, and a deletion runs the
//! preStop hook, sends SIGTERM and SIGKILLs at the grace period. The node's kube-proxy
//! ([`crate::proxy`]) runs in this process too, so traffic follows Endpoints as on a real node.
//! Pods that run to completion (restartPolicy Never/OnFailure) stay simulated without a process.
//! What the node did to each app (started, SIGTERM, SIGKILL, exited, with times) is appended to
//! `DIR/pod-events.jsonl` ([`events`]).

pub mod app;
pub mod events;
pub mod spec;
pub mod status;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitStatus;
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
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::time::{sleep, Instant};

use crate::http1;
use crate::podnet::PodNet;
use app::{App, Behaviour, Started};
use events::{KillReason, PodEvents};
use spec::{AppSpec, PreStop, ProbeAction, ProbeSpec};
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
/// What a kubelet allows past the grace period when the preStop hook used all of it.
const AFTER_PRE_STOP: Duration = Duration::from_secs(2);

macro_rules! log {
    ($($arg:tt)*) => {
        eprintln!("{} {}", Timestamp::now().strftime("%H:%M:%S%.3f"), format_args!($($arg)*))
    };
}

#[derive(Clone, Debug)]
pub struct Options {
    pub kubeconfig: PathBuf,
    /// The environment's directory: app command lines name it, and the pod and service tables
    /// are written there.
    pub dir: PathBuf,
    pub node_name: String,
    pub startup_delay: Duration,
    /// Upper bound on a deleted pod's grace period; `None` honours the pod's own.
    pub max_grace: Option<Duration>,
    /// Upper bound on probe periods and initial delays, so pods become ready quickly in tests.
    pub max_probe_period: Duration,
    /// How long an Endpoints change takes to reach the service proxy's routing table.
    pub proxy_lag: Duration,
}

struct Kubelet {
    client: Client,
    opts: Options,
    ips: Mutex<PodIps>,
    net: Arc<PodNet>,
    events: Arc<PodEvents>,
}

pub async fn run(opts: Options) -> Result<()> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let client = crate::client_for(&opts.kubeconfig).await?;
    log!(
        "simulated kubelet for node {} (startup delay {:?}, max grace {:?}, max probe period {:?}, proxy lag {:?})",
        opts.node_name,
        opts.startup_delay,
        opts.max_grace,
        opts.max_probe_period,
        opts.proxy_lag
    );
    let events = Arc::new(PodEvents::open(&opts.dir)?);
    let net = Arc::new(PodNet::new(&opts.dir));
    let proxy = crate::proxy::Proxy::new(&opts.dir, net.clone(), opts.proxy_lag)?;
    tokio::spawn(proxy.run(client.clone()));
    let kubelet = Arc::new(Kubelet {
        client,
        opts,
        ips: Mutex::new(PodIps::default()),
        net,
        events: events.clone(),
    });
    tokio::spawn(kubelet.clone().heartbeat());
    let watch = kubelet.watch_pods();
    tokio::pin!(watch);
    let outcome = tokio::select! {
        r = &mut watch => r,
        _ = sigterm.recv() => Ok(()),
        _ = sigint.recv() => Ok(()),
    };
    // Apps also die with this process (parent-death signal); killing them here is immediate.
    // The watch is still alive (pinned until this returns): its end would tell every pod task
    // that its pod vanished, and they would say so in the record.
    app::kill_all(&events);
    log!("kubelet stopping; its apps were killed");
    outcome
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
        if let Some(mut app) = life.app.take() {
            // Removed from the API without a graceful deletion (e.g. a forced delete).
            app.kill(KillReason::PodVanished);
            app.wait().await;
        }
        self.net.remove(ip);
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
    ip: Ipv4Addr,
    facts: Facts,
    ready: bool,
    /// Set when the pod had already been started by an earlier run of this kubelet.
    resumed_at: Option<Duration>,
    /// The main container's process and how it runs, while it runs.
    app: Option<App>,
    spec: Option<AppSpec>,
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
            ip,
            app: None,
            spec: None,
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
            _ if restarts_always => {
                return self.run_app(fault, ready_after).await;
            }
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

    /// Runs the main container as a process for good: restarts it whenever it exits (reporting
    /// CrashLoopBackOff in between, as today's simulation did) and reports readiness from probes.
    async fn run_app(
        &mut self,
        fault: Option<Fault>,
        warmup: Duration,
    ) -> Result<std::convert::Infallible, Interrupted> {
        let pod = self.pod();
        let (ns, name) = key(&pod);
        let Some(spec) = spec::app_spec(&pod) else {
            return self.idle().await;
        };
        self.spec = Some(spec.clone());
        let behaviour = Behaviour {
            warmup,
            never_ready: fault == Some(Fault::NeverReady),
            crash: fault == Some(Fault::CrashLoop),
        };
        let pod_key = format!("{ns}/{name}");
        let mut restarts = 0;
        loop {
            self.check_not_deleting()?;
            self.facts.containers_started = Timestamp::now();
            let env_dir = self.kubelet.opts.dir.clone();
            let events = &self.kubelet.events;
            match App::start(&env_dir, events, &pod, self.ip, &spec, &behaviour).await {
                Ok(Started::Running(app)) => {
                    log!("{pod_key}: app pid {} serving {:?}", app.pid, app.ports);
                    self.kubelet.net.set(self.ip, &pod_key, &app.ports);
                    // The container runs from now on; readiness follows from the probes.
                    if let Err(i) = self.report(Stage::Running { ready: false }).await {
                        self.app = Some(*app);
                        return Err(i);
                    }
                    let status = self.probe_until_exit(*app, &spec).await?;
                    self.kubelet.net.remove(self.ip);
                    log!("{pod_key}: app exited ({status})");
                }
                Ok(Started::Exited(status)) => {
                    log!("{pod_key}: app exited during start-up ({status})")
                }
                Err(e) => log!("{pod_key}: {e:#}"),
            }
            restarts += 1;
            self.report(Stage::CrashLoop { restarts }).await?;
            self.pause(CRASH_INTERVAL).await?;
        }
    }

    /// Probes the running app as a kubelet does and reports readiness changes, until the app
    /// exits (returns its status) or the pod is deleted (the app is kept for the deletion).
    async fn probe_until_exit(
        &mut self,
        mut app: App,
        spec: &AppSpec,
    ) -> Result<ExitStatus, Interrupted> {
        let cap = self.kubelet.opts.max_probe_period;
        let mut started = spec.startup.is_none();
        let first = spec.startup.as_ref().unwrap_or(&spec.readiness);
        let mut next = Instant::now() + first.initial_delay.min(cap);
        let (mut ready, mut successes, mut failures) = (false, 0u32, 0u32);
        loop {
            enum Wake {
                Probe,
                Exited(ExitStatus),
                Changed(bool),
            }
            let wake = tokio::select! {
                _ = tokio::time::sleep_until(next) => Wake::Probe,
                status = app.wait() => Wake::Exited(status),
                changed = self.rx.changed() => Wake::Changed(changed.is_ok()),
            };
            match wake {
                Wake::Exited(status) => return Ok(status),
                Wake::Changed(false) => {
                    self.app = Some(app);
                    return Err(Interrupted::Gone);
                }
                Wake::Changed(true) => {
                    if let Err(i) = self.check_not_deleting() {
                        self.app = Some(app);
                        return Err(i);
                    }
                }
                Wake::Probe => {
                    let probe = match (&spec.startup, started) {
                        (Some(startup), false) => startup,
                        _ => &spec.readiness,
                    };
                    let ok = run_probe(&app, self.ip, probe).await;
                    if !started {
                        // Readiness is probed only once the startup probe has passed.
                        started = ok;
                        next = Instant::now()
                            + if ok {
                                spec.readiness.initial_delay.min(cap)
                            } else {
                                probe.period.min(cap)
                            };
                    } else {
                        if ok {
                            successes += 1;
                            failures = 0;
                            ready |= successes >= probe.success_threshold;
                        } else {
                            failures += 1;
                            successes = 0;
                            ready &= failures < probe.failure_threshold;
                        }
                        next = Instant::now() + probe.period.min(cap);
                    }
                    if ready != self.ready {
                        if let Err(i) = self.report(Stage::Running { ready }).await {
                            self.app = Some(app);
                            return Err(i);
                        }
                    }
                }
            }
        }
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

    /// What a kubelet does once a pod is marked for deletion: stop its running app within the
    /// grace period (preStop hook, SIGTERM, SIGKILL at the deadline), then remove the pod object
    /// for good. A pod with nothing running goes at once.
    async fn finish_deletion(&mut self) {
        let pod = self.pod();
        let (ns, name) = key(&pod);
        let began = Instant::now();
        if let Some(app) = self.app.take() {
            let grace = grace_of(&pod, self.kubelet.opts.max_grace);
            let pre_stop = self
                .spec
                .as_ref()
                .map_or(PreStop::None, |s| s.pre_stop.clone());
            if !self.stop_app(app, grace, &pre_stop).await {
                return;
            }
            self.kubelet.net.remove(self.ip);
        }
        let took = began.elapsed();
        for attempt in 1..=30 {
            match self.kubelet.delete_now(&pod).await {
                Ok(()) => {
                    log!("{ns}/{name}: deleted after {took:.1?}");
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

impl PodLife {
    /// Stops `app` as a kubelet stops a container: the preStop hook (the app keeps serving), then
    /// SIGTERM, then SIGKILL once `grace` has passed since the deletion began (at least
    /// [`AFTER_PRE_STOP`] after a hook that used it all). `false` when the pod object vanished
    /// meanwhile (the app is killed then).
    async fn stop_app(&mut self, mut app: App, grace: Duration, pre_stop: &PreStop) -> bool {
        let pod = self.pod();
        let (ns, name) = key(&pod);
        let began = Instant::now();
        let mut deadline = began + grace;
        log!(
            "{ns}/{name}: stopping app pid {} (preStop {pre_stop:?}, grace {grace:?})",
            app.pid
        );
        let ip = self.ip;
        let hook_addr = match pre_stop {
            PreStop::HttpGet { port, .. } => app.local(*port),
            _ => None,
        };
        let hook = async {
            match pre_stop {
                PreStop::None => {}
                PreStop::Sleep(d) => sleep(*d).await,
                PreStop::HttpGet { port, path } => {
                    if let Some(addr) = hook_addr {
                        http1::probe(addr, path, &format!("{ip}:{port}"), grace).await;
                    }
                }
                PreStop::Unsupported(command) => {
                    log!("{ns}/{name}: preStop `{command}` cannot run here; skipped")
                }
            }
        };
        let rx = &mut self.rx;
        let gone = async move { while rx.changed().await.is_ok() {} };
        tokio::pin!(gone);
        let exited_early = tokio::select! {
            _ = hook => false,
            _ = tokio::time::sleep_until(deadline) => false,
            status = app.wait() => {
                log!("{ns}/{name}: app exited during preStop ({status})");
                true
            }
            _ = &mut gone => {
                app.kill(KillReason::PodVanished);
                app.wait().await;
                return false;
            }
        };
        if !exited_early {
            if Instant::now() >= deadline {
                deadline = Instant::now() + AFTER_PRE_STOP;
            }
            let term_sent = Instant::now();
            app.terminate(grace, deadline.saturating_duration_since(term_sent));
            tokio::select! {
                status = app.wait() => {
                    log!("{ns}/{name}: app exited {:.1?} after SIGTERM ({status})", term_sent.elapsed());
                }
                _ = tokio::time::sleep_until(deadline) => {
                    log!("{ns}/{name}: app still running at the end of its grace period; SIGKILL");
                    app.kill(KillReason::GracePeriodOver);
                    app.wait().await;
                }
                _ = &mut gone => {
                    app.kill(KillReason::PodVanished);
                    app.wait().await;
                    return false;
                }
            }
        }
        true
    }
}

/// The grace period of a pod being deleted (30 s unless set), capped at `max`.
fn grace_of(pod: &Pod, max: Option<Duration>) -> Duration {
    let grace = pod
        .metadata
        .deletion_grace_period_seconds
        .map(|s| Duration::from_secs(s.max(0) as u64))
        .unwrap_or(Duration::from_secs(30));
    max.map_or(grace, |m| grace.min(m))
}

/// One probe of the app; a port the app does not serve fails, as a closed port would.
async fn run_probe(app: &App, pod_ip: Ipv4Addr, probe: &ProbeSpec) -> bool {
    match &probe.action {
        ProbeAction::Http { port, path } => match app.local(*port) {
            Some(addr) => {
                http1::probe(addr, path, &format!("{pod_ip}:{port}"), probe.timeout).await
            }
            None => false,
        },
        ProbeAction::Tcp { port } => match app.local(*port) {
            Some(addr) => matches!(
                tokio::time::timeout(probe.timeout, tokio::net::TcpStream::connect(addr)).await,
                Ok(Ok(_))
            ),
            None => false,
        },
        ProbeAction::UnknownPort(_) => false,
        ProbeAction::Pass => true,
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
