//! The node's kube-proxy, on loopback: each TCP port of each Service with a cluster IP gets a
//! listener on 127.100.x.y (x.y from the cluster IP, the port chosen by the kernel), and every new
//! connection is sent to one ready endpoint chosen at random, as iptables mode does. Endpoints
//! changes reach the routing table only after the propagation lag (kube-proxy's minimum sync
//! period; a Service's annotation `sim.bgslot.dev/proxy-lag` sets its own, e.g. to stand for a
//! cloud load balancer's slower deregistration); a connection keeps its pod until one side closes
//! it (conntrack); with no endpoint the connection is rejected with a reset.
//!
//! What tests and benchmarks read, under the environment's directory:
//! - `services.json`: each Service's local address, current backends, when they last changed,
//!   and how many connections were rejected and why (rewritten as it changes);
//! - `proxy-events.jsonl`: every routing change applied and every rejection, one JSON per line,
//!   with unix times in seconds, so a flip's latency and a failed request's cause can be found.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::podnet::{write_atomically, PodNet};

/// Service annotation setting that Service's propagation lag (e.g. `5s`).
pub const LAG_ANNOTATION: &str = "sim.bgslot.dev/proxy-lag";
/// How long the proxy tries to reach a pod before it gives up on the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The least time between two rewrites of `services.json` for rejection counts alone.
const COUNTS_EVERY: Duration = Duration::from_millis(100);

pub const SERVICES_FILE: &str = "services.json";
pub const EVENTS_FILE: &str = "proxy-events.jsonl";

/// Why the proxy turned a connection away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// The routing table has no ready endpoint for the Service port.
    NoEndpoint,
    /// The chosen pod refused the connection (nothing listens there any more).
    Refused,
    /// The chosen pod did not answer the connection attempt in time.
    Unreachable,
}

/// One ready endpoint: the pod IP and port from the Endpoints object, and the pod's name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Backend {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub pod: String,
}

/// A Service port as `services.json` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PortState {
    pub name: String,
    pub port: u16,
    pub local: SocketAddr,
    pub backends: Vec<Backend>,
}

/// A Service as `services.json` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceState {
    pub cluster_ip: Ipv4Addr,
    /// When the routing table last changed for this Service (unix seconds).
    pub changed_t: f64,
    pub ports: Vec<PortState>,
    pub rejected: BTreeMap<Rejection, u64>,
}

/// What the watches say a Service should route to.
#[derive(Clone, Debug, PartialEq)]
struct Desired {
    cluster_ip: Ipv4Addr,
    /// (port name, port, backends)
    ports: Vec<(String, u16, Vec<Backend>)>,
}

/// A change seen by the watches, due to reach the table at `at`.
struct Pending {
    at: Instant,
    observed_t: f64,
    desired: Option<Desired>,
}

/// A port's number, local address and backends, as applied.
type PortSnapshot = (u16, SocketAddr, Vec<Backend>);

struct Route {
    state: PortState,
    accept: AbortHandle,
}

struct Applied {
    cluster_ip: Ipv4Addr,
    changed_t: f64,
    ports: Vec<Route>,
}

pub struct Proxy {
    net: Arc<PodNet>,
    lag: Duration,
    dir: PathBuf,
    routes: RwLock<HashMap<String, Applied>>,
    rejected: Mutex<HashMap<String, BTreeMap<Rejection, u64>>>,
    events: Mutex<File>,
    counts_changed: Notify,
    seed: AtomicU64,
}

pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The loopback address a Service is reached at: cluster IP a.b.x.y -> 127.100.x.y.
pub fn local_ip(cluster_ip: Ipv4Addr) -> Ipv4Addr {
    let [_, _, x, y] = cluster_ip.octets();
    Ipv4Addr::new(127, 100, x, y)
}

impl Proxy {
    pub fn new(dir: &Path, net: Arc<PodNet>, lag: Duration) -> Result<Arc<Proxy>> {
        let path = dir.join(EVENTS_FILE);
        let events = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let proxy = Arc::new(Proxy {
            net,
            lag,
            dir: dir.to_path_buf(),
            routes: RwLock::new(HashMap::new()),
            rejected: Mutex::new(HashMap::new()),
            events: Mutex::new(events),
            counts_changed: Notify::new(),
            seed: AtomicU64::new(u64::from(std::process::id()) | 1),
        });
        proxy.write_services();
        Ok(proxy)
    }

    /// Watches Services and Endpoints for good and applies each change after the lag.
    pub async fn run(self: Arc<Self>, client: Client) {
        // One queue per Service: its changes apply in order, and a Service with a long lag
        // never holds up another's.
        let mut queues: HashMap<String, mpsc::UnboundedSender<Pending>> = HashMap::new();
        tokio::spawn(self.clone().write_counts());
        let services = watcher::watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .map(|e| e.map(|e| Change::Service(Box::new(e))))
        .boxed();
        let endpoints = watcher::watcher(Api::<Endpoints>::all(client), watcher::Config::default())
            .default_backoff()
            .map(|e| e.map(|e| Change::Endpoints(Box::new(e))))
            .boxed();
        let mut changes = futures::stream::select(services, endpoints);
        let mut observed = Observed::default();
        while let Some(change) = changes.next().await {
            let change = match change {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("proxy: watch: {e}");
                    continue;
                }
            };
            for key in observed.record(change) {
                let desired = observed.desired(&key);
                let lag = observed.lag(&key).unwrap_or(self.lag);
                let queue = queues.entry(key.clone()).or_insert_with(|| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(self.clone().apply_changes(key.clone(), rx));
                    tx
                });
                let _ = queue.send(Pending {
                    at: Instant::now() + lag,
                    observed_t: now_unix(),
                    desired,
                });
            }
        }
    }

    async fn apply_changes(self: Arc<Self>, key: String, mut rx: mpsc::UnboundedReceiver<Pending>) {
        while let Some(change) = rx.recv().await {
            tokio::time::sleep_until(change.at).await;
            if let Err(e) = self.apply(&key, change.desired, change.observed_t).await {
                eprintln!("proxy: {key}: {e:#}");
            }
        }
    }

    async fn apply(
        self: &Arc<Self>,
        key: &str,
        desired: Option<Desired>,
        observed_t: f64,
    ) -> Result<()> {
        let current: Option<(Ipv4Addr, Vec<PortSnapshot>)> =
            self.routes.read().unwrap().get(key).map(|a| {
                (
                    a.cluster_ip,
                    a.ports
                        .iter()
                        .map(|r| (r.state.port, r.state.local, r.state.backends.clone()))
                        .collect(),
                )
            });
        let Some(desired) = desired else {
            // Its own statement: the write guard must be gone before write_services reads.
            let removed = self.routes.write().unwrap().remove(key);
            if let Some(applied) = removed {
                for route in applied.ports {
                    route.accept.abort();
                }
                self.event(json!({"event": "removed", "service": key, "observed_t": observed_t}));
                self.write_services();
            }
            return Ok(());
        };
        let unchanged = current.as_ref().is_some_and(|(ip, ports)| {
            *ip == desired.cluster_ip
                && ports.len() == desired.ports.len()
                && ports
                    .iter()
                    .zip(&desired.ports)
                    .all(|((p, _, b), (_, dp, db))| p == dp && b == db)
        });
        if unchanged {
            return Ok(());
        }
        // Listeners for new ports are bound before the table is touched (no lock across await).
        let mut fresh: HashMap<u16, (SocketAddr, AbortHandle)> = HashMap::new();
        for (_, port, _) in &desired.ports {
            let exists = current.as_ref().is_some_and(|(ip, ports)| {
                *ip == desired.cluster_ip && ports.iter().any(|(p, _, _)| p == port)
            });
            if !exists {
                let listener = TcpListener::bind((local_ip(desired.cluster_ip), 0))
                    .await
                    .with_context(|| format!("listening for {key} port {port}"))?;
                let local = listener.local_addr()?;
                let task = tokio::spawn(self.clone().accept(listener, key.to_string(), *port));
                fresh.insert(*port, (local, task.abort_handle()));
            }
        }
        let changed_t = now_unix();
        {
            let mut routes = self.routes.write().unwrap();
            let mut old = routes.remove(key);
            if old
                .as_ref()
                .is_some_and(|o| o.cluster_ip != desired.cluster_ip)
            {
                for r in old.take().unwrap().ports {
                    r.accept.abort();
                }
            }
            let mut old_ports: HashMap<u16, Route> = old
                .map(|o| o.ports.into_iter().map(|r| (r.state.port, r)).collect())
                .unwrap_or_default();
            let mut ports = Vec::new();
            for (name, port, backends) in &desired.ports {
                let (local, accept) = match old_ports.remove(port) {
                    Some(r) => (r.state.local, r.accept),
                    None => fresh.remove(port).expect("bound above"),
                };
                ports.push(Route {
                    state: PortState {
                        name: name.clone(),
                        port: *port,
                        local,
                        backends: backends.clone(),
                    },
                    accept,
                });
            }
            for (_, gone) in old_ports {
                gone.accept.abort();
            }
            for route in &ports {
                self.event(json!({
                    "event": "routes", "service": key, "port": route.state.port,
                    "local": route.state.local, "backends": route.state.backends,
                    "observed_t": observed_t,
                }));
            }
            routes.insert(
                key.to_string(),
                Applied {
                    cluster_ip: desired.cluster_ip,
                    changed_t,
                    ports,
                },
            );
        }
        self.write_services();
        Ok(())
    }

    async fn accept(self: Arc<Self>, listener: TcpListener, key: String, port: u16) {
        loop {
            match listener.accept().await {
                Ok((client, peer)) => {
                    tokio::spawn(self.clone().forward(client, peer, key.clone(), port));
                }
                Err(e) => {
                    eprintln!("proxy: {key} port {port}: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Sends one client connection to a pod, or rejects it.
    async fn forward(self: Arc<Self>, client: TcpStream, peer: SocketAddr, key: String, port: u16) {
        let backend = {
            let routes = self.routes.read().unwrap();
            let backends = routes
                .get(&key)
                .and_then(|a| a.ports.iter().find(|r| r.state.port == port))
                .map(|r| r.state.backends.clone())
                .unwrap_or_default();
            (!backends.is_empty()).then(|| backends[self.random(backends.len())].clone())
        };
        let Some(backend) = backend else {
            return self.reject(client, peer, &key, port, Rejection::NoEndpoint, None);
        };
        let Some(local) = self.net.resolve(backend.ip, backend.port) else {
            return self.reject(client, peer, &key, port, Rejection::Refused, Some(&backend));
        };
        let mut upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(local))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return self.reject(client, peer, &key, port, Rejection::Refused, Some(&backend));
            }
            _ => {
                return self.reject(
                    client,
                    peer,
                    &key,
                    port,
                    Rejection::Unreachable,
                    Some(&backend),
                );
            }
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let mut client = client;
        if tokio::io::copy_bidirectional(&mut client, &mut upstream)
            .await
            .is_err()
        {
            // One side reset: pass the reset on rather than a clean close.
            let _ = client.set_zero_linger();
            let _ = upstream.set_zero_linger();
        }
    }

    fn reject(
        &self,
        client: TcpStream,
        peer: SocketAddr,
        key: &str,
        port: u16,
        cause: Rejection,
        backend: Option<&Backend>,
    ) {
        let _ = client.set_zero_linger();
        drop(client);
        *self
            .rejected
            .lock()
            .unwrap()
            .entry(key.to_string())
            .or_default()
            .entry(cause)
            .or_default() += 1;
        self.event(json!({
            "event": "reject", "service": key, "port": port, "client": peer,
            "cause": cause, "pod": backend.map(|b| &b.pod),
        }));
        self.counts_changed.notify_one();
    }

    fn random(&self, n: usize) -> usize {
        // xorshift64: enough to spread connections like iptables' random probabilities.
        let mut x = self.seed.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.store(x, Ordering::Relaxed);
        (x % n as u64) as usize
    }

    fn event(&self, mut value: serde_json::Value) {
        value["t"] = json!(now_unix());
        let mut line = value.to_string();
        line.push('\n');
        if let Err(e) = self.events.lock().unwrap().write_all(line.as_bytes()) {
            eprintln!("proxy: writing {EVENTS_FILE}: {e}");
        }
    }

    async fn write_counts(self: Arc<Self>) {
        loop {
            self.counts_changed.notified().await;
            tokio::time::sleep(COUNTS_EVERY).await;
            self.write_services();
        }
    }

    fn write_services(&self) {
        let rejected = self.rejected.lock().unwrap().clone();
        let table: BTreeMap<String, ServiceState> = self
            .routes
            .read()
            .unwrap()
            .iter()
            .map(|(key, a)| {
                (
                    key.clone(),
                    ServiceState {
                        cluster_ip: a.cluster_ip,
                        changed_t: a.changed_t,
                        ports: a.ports.iter().map(|r| r.state.clone()).collect(),
                        rejected: rejected.get(key).cloned().unwrap_or_default(),
                    },
                )
            })
            .collect();
        let path = self.dir.join(SERVICES_FILE);
        if let Err(e) = write_atomically(&path, &serde_json::to_vec_pretty(&table).unwrap()) {
            eprintln!("proxy: writing {}: {e}", path.display());
        }
    }
}

enum Change {
    Service(Box<Event<Service>>),
    Endpoints(Box<Event<Endpoints>>),
}

/// The Services and Endpoints the watches have shown, and the relisted keys during a relist.
#[derive(Default)]
struct Observed {
    services: HashMap<String, Service>,
    endpoints: HashMap<String, Endpoints>,
    relisted_services: Option<HashSet<String>>,
    relisted_endpoints: Option<HashSet<String>>,
}

fn object_key(meta: &kube::api::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

impl Observed {
    /// Takes in one watch event; returns the Service keys whose routing may have changed.
    fn record(&mut self, change: Change) -> Vec<String> {
        match change {
            Change::Service(event) => match *event {
                Event::Init => {
                    self.relisted_services = Some(HashSet::new());
                    vec![]
                }
                Event::InitApply(s) => {
                    let key = object_key(&s.metadata);
                    if let Some(seen) = &mut self.relisted_services {
                        seen.insert(key.clone());
                    }
                    self.services.insert(key.clone(), s);
                    vec![key]
                }
                Event::Apply(s) => {
                    let key = object_key(&s.metadata);
                    self.services.insert(key.clone(), s);
                    vec![key]
                }
                Event::Delete(s) => {
                    let key = object_key(&s.metadata);
                    self.services.remove(&key);
                    vec![key]
                }
                Event::InitDone => {
                    let seen = self.relisted_services.take().unwrap_or_default();
                    let gone: Vec<String> = self
                        .services
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for k in &gone {
                        self.services.remove(k);
                    }
                    gone
                }
            },
            Change::Endpoints(event) => match *event {
                Event::Init => {
                    self.relisted_endpoints = Some(HashSet::new());
                    vec![]
                }
                Event::InitApply(e) => {
                    let key = object_key(&e.metadata);
                    if let Some(seen) = &mut self.relisted_endpoints {
                        seen.insert(key.clone());
                    }
                    self.endpoints.insert(key.clone(), e);
                    vec![key]
                }
                Event::Apply(e) => {
                    let key = object_key(&e.metadata);
                    self.endpoints.insert(key.clone(), e);
                    vec![key]
                }
                Event::Delete(e) => {
                    let key = object_key(&e.metadata);
                    self.endpoints.remove(&key);
                    vec![key]
                }
                Event::InitDone => {
                    let seen = self.relisted_endpoints.take().unwrap_or_default();
                    let gone: Vec<String> = self
                        .endpoints
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for k in &gone {
                        self.endpoints.remove(k);
                    }
                    gone
                }
            },
        }
    }

    fn desired(&self, key: &str) -> Option<Desired> {
        desired(self.services.get(key)?, self.endpoints.get(key))
    }

    /// The Service's own propagation lag, when its annotation sets one.
    fn lag(&self, key: &str) -> Option<Duration> {
        let value = self
            .services
            .get(key)?
            .metadata
            .annotations
            .as_ref()?
            .get(LAG_ANNOTATION)?;
        bgslot::duration::parse_duration(value).ok()
    }
}

/// What a Service routes to: for each TCP port, the ready addresses of the Endpoints subsets
/// that carry that port (matched by name, as the endpoints controller names them). `None` for a
/// Service without a cluster IP (headless or ExternalName), which kube-proxy leaves alone.
fn desired(service: &Service, endpoints: Option<&Endpoints>) -> Option<Desired> {
    let spec = service.spec.as_ref()?;
    let cluster_ip: Ipv4Addr = spec.cluster_ip.as_deref()?.parse().ok()?;
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
        .filter_map(|p| {
            let port = u16::try_from(p.port).ok()?;
            let name = p.name.clone().unwrap_or_default();
            let mut backends: Vec<Backend> = endpoints
                .and_then(|e| e.subsets.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|subset| {
                    let ep_port = subset
                        .ports
                        .iter()
                        .flatten()
                        .find(|ep| ep.name.clone().unwrap_or_default() == name)?;
                    let ep_port = u16::try_from(ep_port.port).ok()?;
                    Some(subset.addresses.iter().flatten().filter_map(move |a| {
                        Some(Backend {
                            ip: a.ip.parse().ok()?,
                            port: ep_port,
                            pod: a
                                .target_ref
                                .as_ref()
                                .and_then(|r| r.name.clone())
                                .unwrap_or_default(),
                        })
                    }))
                })
                .flatten()
                .collect();
            backends.sort();
            Some((name, port, backends))
        })
        .collect();
    Some(Desired { cluster_ip, ports })
}

/// Reads `DIR/services.json`.
pub fn read_services(dir: &Path) -> Result<BTreeMap<String, ServiceState>> {
    let path = dir.join(SERVICES_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The local address of `namespace/name`'s `port` (its only port when `None`), waiting up to
/// `timeout` for the proxy to have it.
pub async fn service_addr(
    dir: &Path,
    service: &str,
    port: Option<u16>,
    timeout: Duration,
) -> Result<SocketAddr> {
    let deadline = Instant::now() + timeout;
    loop {
        let services = read_services(dir)?;
        if let Some(s) = services.get(service) {
            let found = match port {
                Some(p) => s.ports.iter().find(|x| x.port == p),
                None => s.ports.first(),
            };
            if let Some(found) = found {
                return Ok(found.local);
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the service proxy of {} has no Service {service}{} after {timeout:?}: is the Service created (namespace/name)?",
            dir.display(),
            port.map(|p| format!(" port {p}")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(ports: serde_json::Value, cluster_ip: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": { "name": "web", "namespace": "ns" },
            "spec": { "clusterIP": cluster_ip, "ports": ports },
        }))
        .unwrap()
    }

    fn endpoints(subsets: serde_json::Value) -> Endpoints {
        serde_json::from_value(json!({
            "metadata": { "name": "web", "namespace": "ns" },
            "subsets": subsets,
        }))
        .unwrap()
    }

    #[test]
    fn ready_addresses_of_the_matching_port_are_the_backends() {
        let svc = service(
            json!([{ "name": "http", "port": 80, "targetPort": "http" }, { "name": "dns", "port": 53, "protocol": "UDP" }]),
            "10.0.0.12",
        );
        let eps = endpoints(json!([{
            "addresses": [
                { "ip": "10.244.0.9", "targetRef": { "kind": "Pod", "name": "web-green-b" } },
                { "ip": "10.244.0.8", "targetRef": { "kind": "Pod", "name": "web-green-a" } },
            ],
            "notReadyAddresses": [{ "ip": "10.244.0.7" }],
            "ports": [{ "name": "http", "port": 8080 }],
        }]));
        let d = desired(&svc, Some(&eps)).unwrap();
        assert_eq!(d.cluster_ip, Ipv4Addr::new(10, 0, 0, 12));
        assert_eq!(d.ports.len(), 1, "UDP is not proxied");
        let (name, port, backends) = &d.ports[0];
        assert_eq!((name.as_str(), *port), ("http", 80));
        let pods: Vec<&str> = backends.iter().map(|b| b.pod.as_str()).collect();
        assert_eq!(pods, ["web-green-a", "web-green-b"]);
        assert!(backends.iter().all(|b| b.port == 8080));
    }

    #[test]
    fn no_endpoints_means_no_backends_and_headless_means_no_route() {
        let svc = service(json!([{ "port": 80 }]), "10.0.0.3");
        let d = desired(&svc, None).unwrap();
        assert_eq!(d.ports, vec![(String::new(), 80, vec![])]);
        let headless = service(json!([{ "port": 80 }]), "None");
        assert!(desired(&headless, None).is_none());
    }

    #[test]
    fn services_are_reached_on_loopback() {
        assert_eq!(
            local_ip(Ipv4Addr::new(10, 0, 0, 12)),
            Ipv4Addr::new(127, 100, 0, 12)
        );
    }
}
