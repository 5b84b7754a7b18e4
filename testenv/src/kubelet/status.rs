//! What a real kubelet would report for a pod at each point of its life, as pure functions, so the
//! statuses the tests and bgslot rely on can be checked without a cluster.

use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Pod annotation choosing a fault; it wins over the image tag.
pub const FAULT_ANNOTATION: &str = "sim.bgslot.dev/fault";
/// Pod annotation setting how long the pod takes to become ready (e.g. `10s`).
pub const START_DELAY_ANNOTATION: &str = "sim.bgslot.dev/start-delay";
/// How long a `slow-start` pod takes to become ready unless its annotation says otherwise.
pub const SLOW_START_DEFAULT: Duration = Duration::from_secs(10);

/// A misbehaviour the simulated kubelet can act out for a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Containers run but never pass readiness.
    NeverReady,
    /// The container exits with code 1 over and over (`CrashLoopBackOff`).
    CrashLoop,
    /// The image cannot be pulled (`ErrImagePull`, then `ImagePullBackOff`).
    ImagePull,
    /// Readiness comes late.
    SlowStart,
}

impl Fault {
    const ALL: [(&'static str, Fault); 4] = [
        ("never-ready", Fault::NeverReady),
        ("crash-loop", Fault::CrashLoop),
        ("image-pull", Fault::ImagePull),
        ("slow-start", Fault::SlowStart),
    ];

    fn named(word: &str) -> Option<Fault> {
        Self::ALL
            .iter()
            .find(|(name, _)| *name == word)
            .map(|(_, f)| *f)
    }

    fn in_tag(tag: &str) -> Option<Fault> {
        Self::ALL
            .iter()
            .find(|(name, _)| tag.contains(name))
            .map(|(_, f)| *f)
    }
}

/// The fault a pod asks for: its annotation (any other value, e.g. `none`, means no fault), else
/// the first container image whose tag contains a fault's name (`app:v2-crash-loop`).
pub fn fault_of(pod: &Pod) -> Option<Fault> {
    if let Some(value) = annotation(pod, FAULT_ANNOTATION) {
        return Fault::named(value.trim());
    }
    containers(pod).find_map(|c| Fault::in_tag(image_tag(c.image.as_deref().unwrap_or(""))))
}

/// The tag of an image reference: `app:v1` → `v1`, `reg:5000/app:v1@sha256:…` → `v1`, `app` → ``.
pub fn image_tag(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split_once(':').map(|(_, tag)| tag).unwrap_or("")
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn containers(pod: &Pod) -> impl Iterator<Item = &k8s_openapi::api::core::v1::Container> {
    pod.spec.iter().flat_map(|s| s.containers.iter())
}

/// When the pod's containers start and when they become ready, counted from the pod's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub run_after: Duration,
    pub ready_after: Duration,
}

pub fn timing_of(pod: &Pod, fault: Option<Fault>, startup_delay: Duration) -> Timing {
    let annotated = annotation(pod, START_DELAY_ANNOTATION)
        .and_then(|v| bgslot::duration::parse_duration(v).ok());
    let ready_after = match (annotated, fault) {
        (Some(d), _) => d,
        (None, Some(Fault::SlowStart)) => SLOW_START_DEFAULT.max(startup_delay),
        (None, _) => startup_delay,
    };
    Timing {
        run_after: startup_delay.min(ready_after),
        ready_after,
    }
}

/// Whether the pod's containers are restarted when they exit (`Always`, the default).
pub fn restarts_always(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .is_none_or(|p| p == "Always")
}

/// Whether a failed container is restarted (`Always` or `OnFailure`).
pub fn restarts_on_failure(pod: &Pod) -> bool {
    restarts_always(pod)
        || pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("OnFailure")
}

/// Where a pod is in its simulated life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Bound, sandbox being set up, containers not started yet.
    Creating,
    /// Containers running; `ready` says whether they pass readiness.
    Running { ready: bool },
    /// The container keeps exiting with code 1 and waits to be restarted.
    CrashLoop { restarts: i32 },
    /// The image cannot be pulled; `backoff` once the kubelet has started backing off.
    ImagePull { backoff: bool },
    /// All containers exited 0 and are not restarted.
    Succeeded,
    /// A container exited 1 and is not restarted.
    Failed,
}

impl Stage {
    pub fn ready(self) -> bool {
        self == Stage::Running { ready: true }
    }

    fn phase(self) -> &'static str {
        match self {
            Stage::Creating | Stage::ImagePull { .. } => "Pending",
            Stage::Running { .. } | Stage::CrashLoop { .. } => "Running",
            Stage::Succeeded => "Succeeded",
            Stage::Failed => "Failed",
        }
    }
}

/// Everything about a pod's status that is not decided by its stage.
#[derive(Clone, Debug)]
pub struct Facts {
    pub host_ip: String,
    pub pod_ip: String,
    /// When the kubelet took the pod on.
    pub start_time: Timestamp,
    /// When the containers (last) started.
    pub containers_started: Timestamp,
    /// When readiness last changed.
    pub ready_changed: Timestamp,
    pub now: Timestamp,
}

/// The full status a kubelet would report for `pod` in `stage`.
pub fn status_for(pod: &Pod, stage: Stage, facts: &Facts) -> PodStatus {
    let spec = pod.spec.as_ref();
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    let pod_ref = format!(
        "{}_{}({uid})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or("")
    );
    let time = |t: Timestamp| Some(Time(t));

    let container_statuses: Vec<ContainerStatus> = containers(pod)
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            let started = ContainerStatus {
                name: c.name.clone(),
                image_id: image_id(&image),
                container_id: Some(container_id(uid, &c.name, 0)),
                image: image.clone(),
                ..Default::default()
            };
            match stage {
                Stage::Creating => ContainerStatus {
                    image_id: String::new(),
                    container_id: None,
                    started: Some(false),
                    state: Some(waiting("ContainerCreating", None)),
                    ..started
                },
                Stage::ImagePull { backoff } => {
                    let (reason, message) = if backoff {
                        ("ImagePullBackOff", format!("Back-off pulling image \"{image}\""))
                    } else {
                        (
                            "ErrImagePull",
                            format!(
                                "rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": not found"
                            ),
                        )
                    };
                    ContainerStatus {
                        image_id: String::new(),
                        container_id: None,
                        started: Some(false),
                        state: Some(waiting(reason, Some(message))),
                        ..started
                    }
                }
                Stage::Running { ready } => ContainerStatus {
                    ready,
                    started: Some(true),
                    state: Some(ContainerState {
                        running: Some(ContainerStateRunning {
                            started_at: time(facts.containers_started),
                        }),
                        ..Default::default()
                    }),
                    ..started
                },
                Stage::CrashLoop { restarts } => ContainerStatus {
                    container_id: Some(container_id(uid, &c.name, restarts)),
                    restart_count: restarts,
                    started: Some(false),
                    state: Some(waiting(
                        "CrashLoopBackOff",
                        Some(format!(
                            "back-off 10s restarting failed container={} pod={pod_ref}",
                            c.name
                        )),
                    )),
                    last_state: Some(terminated(
                        1,
                        "Error",
                        container_id(uid, &c.name, restarts),
                        facts.containers_started,
                        facts.now,
                    )),
                    ..started
                },
                Stage::Succeeded | Stage::Failed => {
                    let (code, reason) = if stage == Stage::Succeeded {
                        (0, "Completed")
                    } else {
                        (1, "Error")
                    };
                    ContainerStatus {
                        started: Some(false),
                        state: Some(terminated(
                            code,
                            reason,
                            container_id(uid, &c.name, 0),
                            facts.containers_started,
                            facts.now,
                        )),
                        ..started
                    }
                }
            }
        })
        .collect();

    let init_container_statuses: Vec<ContainerStatus> = spec
        .and_then(|s| s.init_containers.as_ref())
        .into_iter()
        .flatten()
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            let id = container_id(uid, &c.name, 0);
            if stage == Stage::Creating {
                ContainerStatus {
                    name: c.name.clone(),
                    image,
                    started: Some(false),
                    state: Some(waiting("PodInitializing", None)),
                    ..Default::default()
                }
            } else {
                ContainerStatus {
                    name: c.name.clone(),
                    image_id: image_id(&image),
                    image,
                    container_id: Some(id.clone()),
                    started: Some(false),
                    state: Some(terminated(
                        0,
                        "Completed",
                        id,
                        facts.start_time,
                        facts.start_time,
                    )),
                    ..Default::default()
                }
            }
        })
        .collect();

    let initialized = stage != Stage::Creating || init_container_statuses.is_empty();
    let unready: Vec<&str> = container_statuses
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let (ready_status, ready_reason, ready_message) = if stage.ready() {
        ("True", None, None)
    } else if stage == Stage::Succeeded {
        ("False", Some("PodCompleted"), None)
    } else {
        (
            "False",
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let condition = |type_: &str,
                     status: &str,
                     reason: Option<&str>,
                     message: Option<String>,
                     since: Timestamp| {
        PodCondition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.map(str::to_string),
            message,
            last_transition_time: time(since),
            ..Default::default()
        }
    };
    let conditions = vec![
        condition(
            "Initialized",
            if initialized { "True" } else { "False" },
            (!initialized).then_some("ContainersNotInitialized"),
            None,
            facts.start_time,
        ),
        condition(
            "Ready",
            ready_status,
            ready_reason,
            ready_message.clone(),
            facts.ready_changed,
        ),
        condition(
            "ContainersReady",
            ready_status,
            ready_reason,
            ready_message,
            facts.ready_changed,
        ),
        condition("PodScheduled", "True", None, None, facts.start_time),
    ];

    PodStatus {
        phase: Some(stage.phase().to_string()),
        host_ip: Some(facts.host_ip.clone()),
        host_ips: Some(vec![HostIP {
            ip: facts.host_ip.clone(),
        }]),
        pod_ip: Some(facts.pod_ip.clone()),
        pod_ips: Some(vec![PodIP {
            ip: facts.pod_ip.clone(),
        }]),
        start_time: time(facts.start_time),
        conditions: Some(conditions),
        container_statuses: Some(container_statuses),
        init_container_statuses: (!init_container_statuses.is_empty())
            .then_some(init_container_statuses),
        ..Default::default()
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message,
        }),
        ..Default::default()
    }
}

fn terminated(
    code: i32,
    reason: &str,
    id: String,
    started: Timestamp,
    finished: Timestamp,
) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            reason: Some(reason.to_string()),
            container_id: Some(id),
            started_at: Some(Time(started)),
            finished_at: Some(Time(finished)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A stable fake digest, so the same image always reports the same imageID.
fn image_id(image: &str) -> String {
    let repo = image.split('@').next().unwrap_or(image);
    let repo = match repo.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => repo,
    };
    format!("{repo}@sha256:{}", fake_digest(image))
}

fn container_id(pod_uid: &str, name: &str, attempt: i32) -> String {
    format!(
        "containerd://{}",
        fake_digest(&format!("{pod_uid}/{name}/{attempt}"))
    )
}

/// 64 hex characters derived from `input` (FNV-1a, four lanes); only needs to look like a digest.
fn fake_digest(input: &str) -> String {
    (0u64..4)
        .map(|lane| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ lane;
            for b in input.bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            format!("{h:016x}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use kube::api::ObjectMeta;

    fn pod(images: &[&str], annotations: &[(&str, &str)], restart_policy: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("ns".into()),
                uid: Some("uid-1".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: images
                    .iter()
                    .enumerate()
                    .map(|(i, image)| Container {
                        name: format!("c{i}"),
                        image: Some(image.to_string()),
                        ..Default::default()
                    })
                    .collect(),
                restart_policy: restart_policy.map(str::to_string),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn facts() -> Facts {
        let t: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        Facts {
            host_ip: "10.1.0.10".into(),
            pod_ip: "10.244.0.7".into(),
            start_time: t,
            containers_started: t,
            ready_changed: t,
            now: t,
        }
    }

    fn condition<'a>(status: &'a PodStatus, type_: &str) -> &'a PodCondition {
        status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap()
    }

    fn waiting_reason(status: &PodStatus) -> Option<&str> {
        status.container_statuses.as_ref().unwrap()[0]
            .state
            .as_ref()?
            .waiting
            .as_ref()?
            .reason
            .as_deref()
    }

    #[test]
    fn image_tags() {
        assert_eq!(image_tag("app:v1"), "v1");
        assert_eq!(
            image_tag("registry:5000/team/app:v2-crash-loop"),
            "v2-crash-loop"
        );
        assert_eq!(image_tag("registry:5000/team/app"), "");
        assert_eq!(image_tag("app:v1@sha256:abc"), "v1");
        assert_eq!(image_tag("nginx"), "");
    }

    #[test]
    fn fault_from_image_tag() {
        assert_eq!(fault_of(&pod(&["app:v1"], &[], None)), None);
        assert_eq!(
            fault_of(&pod(&["app:never-ready"], &[], None)),
            Some(Fault::NeverReady)
        );
        assert_eq!(
            fault_of(&pod(&["app:v2-crash-loop"], &[], None)),
            Some(Fault::CrashLoop)
        );
        assert_eq!(
            fault_of(&pod(&["app:image-pull"], &[], None)),
            Some(Fault::ImagePull)
        );
        assert_eq!(
            fault_of(&pod(&["app:slow-start"], &[], None)),
            Some(Fault::SlowStart)
        );
        assert_eq!(
            fault_of(&pod(&["side:v1", "app:slow-start"], &[], None)),
            Some(Fault::SlowStart)
        );
        // The repository name is not the tag.
        assert_eq!(fault_of(&pod(&["crash-loop/app:v1"], &[], None)), None);
    }

    #[test]
    fn annotation_wins_over_image_tag() {
        let p = pod(
            &["app:crash-loop"],
            &[(FAULT_ANNOTATION, "slow-start")],
            None,
        );
        assert_eq!(fault_of(&p), Some(Fault::SlowStart));
        let p = pod(&["app:crash-loop"], &[(FAULT_ANNOTATION, "none")], None);
        assert_eq!(fault_of(&p), None);
    }

    #[test]
    fn timing() {
        let second = Duration::from_secs(1);
        let p = pod(&["app:v1"], &[], None);
        assert_eq!(
            timing_of(&p, None, second),
            Timing {
                run_after: second,
                ready_after: second
            }
        );
        let p = pod(&["app:slow-start"], &[], None);
        assert_eq!(
            timing_of(&p, fault_of(&p), second),
            Timing {
                run_after: second,
                ready_after: SLOW_START_DEFAULT
            }
        );
        let p = pod(&["app:slow-start"], &[(START_DELAY_ANNOTATION, "4s")], None);
        assert_eq!(
            timing_of(&p, fault_of(&p), second).ready_after,
            Duration::from_secs(4)
        );
        let p = pod(&["app:v1"], &[(START_DELAY_ANNOTATION, "0s")], None);
        assert_eq!(
            timing_of(&p, None, second),
            Timing {
                run_after: Duration::ZERO,
                ready_after: Duration::ZERO
            }
        );
    }

    #[test]
    fn restart_policies() {
        assert!(restarts_always(&pod(&["a"], &[], None)));
        assert!(restarts_always(&pod(&["a"], &[], Some("Always"))));
        assert!(!restarts_always(&pod(&["a"], &[], Some("Never"))));
        assert!(restarts_on_failure(&pod(&["a"], &[], Some("OnFailure"))));
        assert!(!restarts_on_failure(&pod(&["a"], &[], Some("Never"))));
    }

    #[test]
    fn running_and_ready() {
        let p = pod(&["app:v1"], &[], None);
        let s = status_for(&p, Stage::Running { ready: true }, &facts());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.244.0.7"));
        assert_eq!(s.pod_ips.as_ref().unwrap()[0].ip, "10.244.0.7");
        assert_eq!(s.host_ip.as_deref(), Some("10.1.0.10"));
        for t in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
            assert_eq!(condition(&s, t).status, "True", "{t}");
            assert!(condition(&s, t).last_transition_time.is_some());
        }
        let c = &s.container_statuses.as_ref().unwrap()[0];
        assert!(c.ready);
        assert_eq!(c.started, Some(true));
        assert_eq!(c.image, "app:v1");
        assert!(c.image_id.starts_with("app@sha256:"));
        assert!(c
            .container_id
            .as_ref()
            .unwrap()
            .starts_with("containerd://"));
        assert!(c
            .state
            .as_ref()
            .unwrap()
            .running
            .as_ref()
            .unwrap()
            .started_at
            .is_some());
    }

    #[test]
    fn running_but_not_ready() {
        let p = pod(&["app:never-ready"], &[], None);
        let s = status_for(&p, Stage::Running { ready: false }, &facts());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let ready = condition(&s, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [c0]")
        );
        assert_eq!(condition(&s, "ContainersReady").status, "False");
        let c = &s.container_statuses.as_ref().unwrap()[0];
        assert!(!c.ready);
        assert!(c.state.as_ref().unwrap().running.is_some());
    }

    fn waiting_message(c: &ContainerStatus) -> &str {
        let waiting = c.state.as_ref().unwrap().waiting.as_ref().unwrap();
        waiting.message.as_deref().unwrap()
    }

    #[test]
    fn crash_loop() {
        let p = pod(&["app:crash-loop"], &[], None);
        let s = status_for(&p, Stage::CrashLoop { restarts: 3 }, &facts());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(waiting_reason(&s), Some("CrashLoopBackOff"));
        let c = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(c.restart_count, 3);
        assert!(!c.ready);
        let message = waiting_message(c);
        assert!(message.starts_with("back-off "), "{message}");
        assert!(
            message.contains("restarting failed container=c0 pod=web-1_ns(uid-1)"),
            "{message}"
        );
        let last = c.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(last.exit_code, 1);
        assert_eq!(last.reason.as_deref(), Some("Error"));
        assert_eq!(condition(&s, "Ready").status, "False");
    }

    #[test]
    fn image_pull() {
        let p = pod(&["registry.example/app:image-pull"], &[], None);
        let s = status_for(&p, Stage::ImagePull { backoff: false }, &facts());
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(waiting_reason(&s), Some("ErrImagePull"));
        let s = status_for(&p, Stage::ImagePull { backoff: true }, &facts());
        assert_eq!(waiting_reason(&s), Some("ImagePullBackOff"));
        let c = &s.container_statuses.as_ref().unwrap()[0];
        let message = waiting_message(c);
        assert!(
            message.contains("\"registry.example/app:image-pull\""),
            "{message}"
        );
        assert!(!c.ready);
        assert_eq!(condition(&s, "Ready").status, "False");
    }

    #[test]
    fn creating() {
        let p = pod(&["app:v1"], &[], None);
        let s = status_for(&p, Stage::Creating, &facts());
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(waiting_reason(&s), Some("ContainerCreating"));
        assert_eq!(condition(&s, "Ready").status, "False");
    }

    #[test]
    fn completed() {
        let p = pod(&["app:v1"], &[], Some("Never"));
        let s = status_for(&p, Stage::Succeeded, &facts());
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        let term = s.container_statuses.as_ref().unwrap()[0]
            .state
            .as_ref()
            .unwrap()
            .terminated
            .clone()
            .unwrap();
        assert_eq!(term.exit_code, 0);
        assert_eq!(term.reason.as_deref(), Some("Completed"));
        assert_eq!(
            condition(&s, "Ready").reason.as_deref(),
            Some("PodCompleted")
        );

        let s = status_for(&p, Stage::Failed, &facts());
        assert_eq!(s.phase.as_deref(), Some("Failed"));
    }

    #[test]
    fn fake_ids_are_stable_and_well_formed() {
        assert_eq!(fake_digest("x"), fake_digest("x"));
        assert_ne!(fake_digest("x"), fake_digest("y"));
        assert_eq!(fake_digest("x").len(), 64);
        assert_eq!(
            image_id("reg:5000/app:v1"),
            format!("reg:5000/app@sha256:{}", fake_digest("reg:5000/app:v1"))
        );
        assert_eq!(
            image_id("reg:5000/app"),
            format!("reg:5000/app@sha256:{}", fake_digest("reg:5000/app"))
        );
    }
}
