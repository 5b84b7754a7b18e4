//! What the kubelet reads from a pod spec to run its main container as a real process: the ports
//! to serve, the identity it answers with, its probes and its preStop hook. Pure functions, so the
//! reading of Kubernetes' fields is tested without a cluster.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::status::image_tag;

/// The pod label that names a bgslot slot.
pub const SLOT_LABEL: &str = "bgslot/slot";
/// Pod annotation making the app keep running this long after SIGTERM before it exits on its
/// own (e.g. `3s`), as a worker finishing the job in hand does.
pub const STOP_DELAY_ANNOTATION: &str = "sim.bgslot.dev/stop-delay";
/// The port an app serves when its container declares none and no probe names one.
const DEFAULT_PORT: u16 = 80;

/// How to run a pod's main container (its first one; sidecars and init containers stay simulated).
#[derive(Clone, Debug, PartialEq)]
pub struct AppSpec {
    /// Container ports to serve (declared TCP ports, then ports only a probe names).
    pub ports: Vec<u16>,
    pub slot: String,
    pub version: String,
    pub startup: Option<ProbeSpec>,
    /// The readiness check: the container's readinessProbe, else a GET / on its first port.
    pub readiness: ProbeSpec,
    pub pre_stop: PreStop,
    /// The container's `MAX_CONNECTION_AGE` (a literal value): the app closes a keep-alive
    /// connection this old after its next answer, as servers with a connection lifetime do.
    pub max_connection_age: Option<Duration>,
    /// The pod's [`STOP_DELAY_ANNOTATION`]: how long the app keeps running after SIGTERM.
    pub stop_delay: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProbeSpec {
    pub action: ProbeAction,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ProbeAction {
    Http {
        port: u16,
        path: String,
    },
    Tcp {
        port: u16,
    },
    /// A port name the container does not declare: the probe fails, as on a real kubelet.
    UnknownPort(String),
    /// exec and grpc probes: nothing to run them in, so they pass.
    Pass,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PreStop {
    None,
    /// `exec` of `sleep N` (also through `sh -c`), or the native `sleep` action.
    Sleep(Duration),
    HttpGet {
        port: u16,
        path: String,
    },
    /// An exec command the simulation cannot run; it returns at once.
    Unsupported(String),
}

pub fn main_container(pod: &Pod) -> Option<&Container> {
    pod.spec.as_ref()?.containers.first()
}

/// The run spec of `pod`'s main container, or `None` for a pod with no containers.
pub fn app_spec(pod: &Pod) -> Option<AppSpec> {
    let c = main_container(pod)?;
    let declared: Vec<u16> = c
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect();
    let startup = c.startup_probe.as_ref().map(|p| probe_spec(c, p));
    let readiness = c.readiness_probe.as_ref().map(|p| probe_spec(c, p));
    let mut ports = declared;
    for probe in startup.iter().chain(readiness.iter()) {
        if let ProbeAction::Http { port, .. } | ProbeAction::Tcp { port } = probe.action {
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
    }
    if ports.is_empty() {
        ports.push(DEFAULT_PORT);
    }
    let readiness = readiness.unwrap_or_else(|| ProbeSpec {
        action: ProbeAction::Http {
            port: ports[0],
            path: "/".into(),
        },
        ..probe_spec(c, &Probe::default())
    });
    let slot = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SLOT_LABEL))
        .cloned()
        .unwrap_or_default();
    Some(AppSpec {
        ports,
        slot,
        version: version_of(c.image.as_deref().unwrap_or("")),
        startup,
        readiness,
        pre_stop: pre_stop(c),
        max_connection_age: env_value(c, MAX_CONNECTION_AGE_ENV)
            .and_then(|v| bgslot::duration::parse_duration(v).ok()),
        stop_delay: pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(STOP_DELAY_ANNOTATION))
            .and_then(|v| bgslot::duration::parse_duration(v).ok()),
    })
}

/// The container variable that gives the app a connection lifetime.
pub const MAX_CONNECTION_AGE_ENV: &str = "MAX_CONNECTION_AGE";

/// The literal value of the container's variable `name` (the last one wins, as in Kubernetes).
fn env_value<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    c.env
        .iter()
        .flatten()
        .rev()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

/// The version an image runs: its tag, else its digest (`repo@sha256:…`), else `latest`.
pub fn version_of(image: &str) -> String {
    let tag = image_tag(image);
    if !tag.is_empty() {
        return tag.to_string();
    }
    match image.split_once('@') {
        Some((_, digest)) => digest.to_string(),
        None => "latest".into(),
    }
}

fn seconds(value: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(value.map_or(default, |v| v.max(0) as u64))
}

/// Kubernetes' probe defaults: no initial delay, every 10 s, 1 s timeout, 1 success, 3 failures.
fn probe_spec(c: &Container, p: &Probe) -> ProbeSpec {
    let action = if let Some(http) = &p.http_get {
        match resolve_port(c, &http.port) {
            Ok(port) => ProbeAction::Http {
                port,
                path: http.path.clone().unwrap_or_else(|| "/".into()),
            },
            Err(name) => ProbeAction::UnknownPort(name),
        }
    } else if let Some(tcp) = &p.tcp_socket {
        match resolve_port(c, &tcp.port) {
            Ok(port) => ProbeAction::Tcp { port },
            Err(name) => ProbeAction::UnknownPort(name),
        }
    } else {
        ProbeAction::Pass
    };
    ProbeSpec {
        action,
        initial_delay: seconds(p.initial_delay_seconds, 0),
        period: seconds(p.period_seconds, 10),
        timeout: seconds(p.timeout_seconds, 1),
        success_threshold: p.success_threshold.map_or(1, |v| v.max(1) as u32),
        failure_threshold: p.failure_threshold.map_or(3, |v| v.max(1) as u32),
    }
}

/// A port given by number, or by the name of one of the container's ports.
fn resolve_port(c: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| n.to_string()),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| name.clone())
        }
    }
}

fn pre_stop(c: &Container) -> PreStop {
    let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) else {
        return PreStop::None;
    };
    handler_action(c, handler)
}

fn handler_action(c: &Container, h: &LifecycleHandler) -> PreStop {
    if let Some(sleep) = &h.sleep {
        return PreStop::Sleep(Duration::from_secs(sleep.seconds.max(0) as u64));
    }
    if let Some(http) = &h.http_get {
        return match resolve_port(c, &http.port) {
            Ok(port) => PreStop::HttpGet {
                port,
                path: http.path.clone().unwrap_or_else(|| "/".into()),
            },
            Err(name) => PreStop::Unsupported(format!("httpGet on unknown port {name}")),
        };
    }
    let command = h
        .exec
        .as_ref()
        .and_then(|e| e.command.clone())
        .unwrap_or_default();
    match sleep_command(&command) {
        Some(d) => PreStop::Sleep(d),
        None if command.is_empty() && h.tcp_socket.is_none() => PreStop::None,
        None => PreStop::Unsupported(command.join(" ")),
    }
}

/// `sleep N`, `/bin/sleep N`, or a shell running just `sleep N` (`sh -c "sleep 5"`).
fn sleep_command(argv: &[String]) -> Option<Duration> {
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
    match argv {
        [cmd, n] if base(cmd) == "sleep" => bgslot::duration::parse_duration(n).ok(),
        [sh, flag, script]
            if matches!(base(sh).as_str(), "sh" | "bash" | "dash") && flag == "-c" =>
        {
            let words: Vec<&str> = script.split_whitespace().collect();
            match words.as_slice() {
                ["sleep", n] | ["exec", "sleep", n] => bgslot::duration::parse_duration(n).ok(),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(container: serde_json::Value, labels: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": "web-1", "labels": labels },
            "spec": { "containers": [container, { "name": "sidecar", "image": "side:v9" }] },
        }))
        .unwrap()
    }

    #[test]
    fn the_charts_container_serves_its_named_port_with_its_probes() {
        let p = pod(
            json!({
                "name": "bgslot", "image": "ghcr.io/acme/web:v7",
                "ports": [{ "name": "http", "containerPort": 80, "protocol": "TCP" }],
                "lifecycle": { "preStop": { "exec": { "command": ["sleep", "5"] } } },
                "startupProbe": { "httpGet": { "path": "/", "port": "http" }, "periodSeconds": 2, "failureThreshold": 30 },
                "readinessProbe": { "httpGet": { "path": "/ready", "port": "http" } },
            }),
            json!({ "bgslot/slot": "green" }),
        );
        let spec = app_spec(&p).unwrap();
        assert_eq!(spec.ports, vec![80]);
        assert_eq!(spec.slot, "green");
        assert_eq!(spec.version, "v7");
        assert_eq!(spec.pre_stop, PreStop::Sleep(Duration::from_secs(5)));
        let startup = spec.startup.unwrap();
        assert_eq!(startup.period, Duration::from_secs(2));
        assert_eq!(startup.failure_threshold, 30);
        assert_eq!(
            spec.readiness.action,
            ProbeAction::Http {
                port: 80,
                path: "/ready".into()
            }
        );
        assert_eq!(spec.readiness.period, Duration::from_secs(10));
        assert_eq!(spec.readiness.failure_threshold, 3);
    }

    #[test]
    fn without_a_readiness_probe_the_first_port_is_checked() {
        let p = pod(
            json!({ "name": "app", "image": "app:v1", "ports": [{ "containerPort": 8080 }, { "containerPort": 53, "protocol": "UDP" }] }),
            json!({}),
        );
        let spec = app_spec(&p).unwrap();
        assert_eq!(spec.ports, vec![8080]);
        assert_eq!(spec.slot, "");
        assert_eq!(
            spec.readiness.action,
            ProbeAction::Http {
                port: 8080,
                path: "/".into()
            }
        );
        assert_eq!(spec.pre_stop, PreStop::None);
        let bare = pod(json!({ "name": "app", "image": "app" }), json!({}));
        assert_eq!(app_spec(&bare).unwrap().ports, vec![DEFAULT_PORT]);
    }

    #[test]
    fn probes_may_name_undeclared_or_unknown_ports() {
        let p = pod(
            json!({
                "name": "app", "image": "app:v1", "ports": [{ "containerPort": 80 }],
                "startupProbe": { "tcpSocket": { "port": 9000 } },
                "readinessProbe": { "httpGet": { "port": "metrics" } },
            }),
            json!({}),
        );
        let spec = app_spec(&p).unwrap();
        assert_eq!(spec.ports, vec![80, 9000]);
        assert_eq!(
            spec.startup.unwrap().action,
            ProbeAction::Tcp { port: 9000 }
        );
        assert_eq!(
            spec.readiness.action,
            ProbeAction::UnknownPort("metrics".into())
        );
    }

    #[test]
    fn a_connection_lifetime_comes_from_the_containers_env() {
        let with_env = |env: serde_json::Value| {
            app_spec(&pod(
                json!({ "name": "app", "image": "app:v1", "env": env }),
                json!({}),
            ))
            .unwrap()
            .max_connection_age
        };
        assert_eq!(
            with_env(
                json!([{ "name": "MAX_CONNECTION_AGE", "value": "1m" }, { "name": "MAX_CONNECTION_AGE", "value": "10s" }])
            ),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            with_env(
                json!([{ "name": "MAX_CONNECTION_AGE", "valueFrom": { "fieldRef": { "fieldPath": "x" } } }])
            ),
            None
        );
        assert_eq!(with_env(json!([])), None);
    }

    #[test]
    fn a_stop_delay_comes_from_the_pods_annotation() {
        let with = |annotations: serde_json::Value| {
            let mut p = pod(json!({ "name": "worker", "image": "app:v1" }), json!({}));
            p.metadata.annotations = serde_json::from_value(annotations).unwrap();
            app_spec(&p).unwrap().stop_delay
        };
        assert_eq!(
            with(json!({ "sim.bgslot.dev/stop-delay": "3s" })),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            with(json!({ "sim.bgslot.dev/stop-delay": "1500ms" })),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(with(json!({ "sim.bgslot.dev/stop-delay": "soon" })), None);
        assert_eq!(with(json!({})), None);
        assert_eq!(with(json!(null)), None);
    }

    #[test]
    fn a_worker_without_ports_or_probes_serves_the_default_port_and_is_checked_there() {
        // The chart's worker Deployments: a command, no port, no probe. A real kubelet counts
        // such a container ready once it runs; here the app's answer on the default port does.
        let p = pod(
            json!({ "name": "consumer", "image": "nginx:1.27", "command": ["sh", "-c", "consume"] }),
            json!({ "bgslot/slot": "blue", "bgslot/workload": "worker" }),
        );
        let spec = app_spec(&p).unwrap();
        assert_eq!(spec.ports, vec![DEFAULT_PORT]);
        assert_eq!(spec.slot, "blue");
        assert_eq!(
            spec.readiness.action,
            ProbeAction::Http {
                port: DEFAULT_PORT,
                path: "/".into()
            }
        );
        assert_eq!(spec.startup, None);
        assert_eq!(spec.pre_stop, PreStop::None);
    }

    #[test]
    fn versions_come_from_tags_or_digests() {
        assert_eq!(version_of("app:v1"), "v1");
        assert_eq!(version_of("reg:5000/app:v2@sha256:abc"), "v2");
        assert_eq!(version_of("reg:5000/app@sha256:abc"), "sha256:abc");
        assert_eq!(version_of("nginx"), "latest");
    }

    #[test]
    fn pre_stop_sleeps_in_their_usual_spellings() {
        let sleep =
            |argv: &[&str]| sleep_command(&argv.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(sleep(&["sleep", "5"]), Some(Duration::from_secs(5)));
        assert_eq!(sleep(&["/bin/sleep", "2s"]), Some(Duration::from_secs(2)));
        assert_eq!(
            sleep(&["sh", "-c", "sleep 7"]),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            sleep(&["/bin/sh", "-c", " exec sleep 3 "]),
            Some(Duration::from_secs(3))
        );
        assert_eq!(sleep(&["sh", "-c", "sleep 3 && curl x"]), None);
        assert_eq!(sleep(&["nginx", "-s", "quit"]), None);

        let c: Container = serde_json::from_value(json!({
            "name": "app", "ports": [{ "name": "http", "containerPort": 80 }],
            "lifecycle": { "preStop": { "httpGet": { "path": "/drain", "port": "http" } } },
        }))
        .unwrap();
        assert_eq!(
            pre_stop(&c),
            PreStop::HttpGet {
                port: 80,
                path: "/drain".into()
            }
        );
        let c: Container = serde_json::from_value(json!({
            "name": "app", "lifecycle": { "preStop": { "sleep": { "seconds": 4 } } },
        }))
        .unwrap();
        assert_eq!(pre_stop(&c), PreStop::Sleep(Duration::from_secs(4)));
        let c: Container = serde_json::from_value(json!({
            "name": "app", "lifecycle": { "preStop": { "exec": { "command": ["nginx", "-s", "quit"] } } },
        }))
        .unwrap();
        assert_eq!(pre_stop(&c), PreStop::Unsupported("nginx -s quit".into()));
    }
}
