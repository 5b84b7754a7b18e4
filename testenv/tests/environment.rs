//! The test environment itself, checked against the cluster in KUBECONFIG: workloads must behave
//! as on a real cluster (Deployments become Available, Services get Endpoints, deletions finish)
//! and each injected fault must look the way a real kubelet reports it, or every other end-to-end
//! test built on top would be testing the simulation's mistakes.

mod common;

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ContainerStatus, Endpoints, Node, Pod, Service};
use kube::api::{DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use serde_json::json;

use common::{available, client, create_pod, in_namespace, pod_ready, wait_for, DEADLINE};

/// Watches one pod, handing every version to `seen` until it returns true.
async fn watch_pod(api: &Api<Pod>, name: &str, what: &str, mut seen: impl FnMut(&Pod) -> bool) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut pods = watcher(api.clone(), config).applied_objects().boxed();
    let deadline = Instant::now() + DEADLINE;
    let mut last = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, pods.try_next()).await {
            Ok(Ok(Some(pod))) => {
                if seen(&pod) {
                    return;
                }
                last = Some(pod);
            }
            Ok(Ok(None)) => panic!("watch on {name} ended while waiting for {what}"),
            Ok(Err(e)) => panic!("watching {name} for {what}: {e}"),
            Err(_) => panic!(
                "{name}: no {what} within {DEADLINE:?}; last status: {:#?}",
                last.and_then(|p| p.status)
            ),
        }
    }
}

fn deployment(
    name: &str,
    replicas: i32,
    image: &str,
    annotations: serde_json::Value,
) -> Deployment {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name, "tier": "web" }, "annotations": annotations },
                "spec": { "containers": [{ "name": "app", "image": image, "ports": [{ "containerPort": 8080 }] }] },
            },
        },
    }))
    .unwrap()
}

fn service(name: &str, selector: serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": { "selector": selector, "ports": [{ "port": 80, "targetPort": 8080 }] },
    }))
    .unwrap()
}

fn pod(name: &str, image: &str, restart_policy: &str, annotations: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": name, "annotations": annotations },
        "spec": {
            "restartPolicy": restart_policy,
            "containers": [{ "name": "app", "image": image }],
        },
    }))
    .unwrap()
}

fn addresses(e: &Endpoints) -> (Vec<String>, Vec<String>) {
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    for subset in e.subsets.iter().flatten() {
        ready.extend(subset.addresses.iter().flatten().map(|a| a.ip.clone()));
        not_ready.extend(
            subset
                .not_ready_addresses
                .iter()
                .flatten()
                .map(|a| a.ip.clone()),
        );
    }
    (ready, not_ready)
}

fn container(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status.as_ref()?.container_statuses.as_ref()?.first()
}

fn waiting_reason(pod: &Pod) -> Option<&str> {
    container(pod)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .as_deref()
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

#[tokio::test]
async fn deployment_becomes_available_and_its_service_lists_every_replica() {
    in_namespace("available", |client, ns| async move {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let services: Api<Service> = Api::namespaced(client.clone(), &ns);
        let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
        let pp = PostParams::default();
        services
            .create(&pp, &service("web", json!({ "app": "web" })))
            .await
            .unwrap();
        deployments
            .create(
                &pp,
                &deployment("web", 3, "registry.example/web:v1", json!({})),
            )
            .await
            .unwrap();

        wait_for(&deployments, "web", "3 available replicas", |d| {
            available(d, 3)
        })
        .await;
        let e = wait_for(&endpoints, "web", "3 ready addresses", |e| {
            e.is_some_and(|e| addresses(e).0.len() == 3)
        })
        .await;
        let (mut ready, not_ready) = addresses(&e);
        assert!(not_ready.is_empty(), "{not_ready:?}");
        for ip in &ready {
            let ip: std::net::Ipv4Addr = ip.parse().unwrap();
            assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
        }
        ready.sort();
        ready.dedup();
        assert_eq!(ready.len(), 3, "pod IPs must be distinct: {ready:?}");
    })
    .await;
}

#[tokio::test]
async fn never_ready_pod_stays_out_of_endpoints_and_keeps_its_deployment_unavailable() {
    in_namespace("never-ready", |client, ns| async move {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let services: Api<Service> = Api::namespaced(client.clone(), &ns);
        let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let pp = PostParams::default();
        // One Service over a healthy Deployment and a never-ready one.
        services
            .create(&pp, &service("web", json!({ "tier": "web" })))
            .await
            .unwrap();
        deployments
            .create(&pp, &deployment("good", 1, "app:v1", json!({})))
            .await
            .unwrap();
        deployments
            .create(&pp, &deployment("bad", 1, "app:never-ready", json!({})))
            .await
            .unwrap();

        wait_for(&deployments, "good", "1 available replica", |d| {
            available(d, 1)
        })
        .await;
        let e = wait_for(&endpoints, "web", "1 ready and 1 not-ready address", |e| {
            e.is_some_and(|e| {
                let (ready, not_ready) = addresses(e);
                ready.len() == 1 && not_ready.len() == 1
            })
        })
        .await;

        let bad = pods
            .list(&ListParams::default().labels("app=bad"))
            .await
            .unwrap()
            .items;
        assert_eq!(bad.len(), 1);
        // Its app starts on its own schedule: wait for the container to run.
        let name = bad[0].metadata.name.clone().unwrap();
        watch_pod(&pods, &name, "phase Running", |p| {
            phase(p) == Some("Running")
        })
        .await;
        let bad = &pods.get(&name).await.unwrap();
        let c = container(bad).unwrap();
        assert!(c.state.as_ref().unwrap().running.is_some(), "{c:?}");
        assert!(!c.ready);
        let ready = bad
            .status
            .as_ref()
            .unwrap()
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
        let bad_ip = bad.status.as_ref().unwrap().pod_ip.clone().unwrap();
        let (ready_ips, not_ready_ips) = addresses(&e);
        assert_eq!(not_ready_ips, vec![bad_ip.clone()]);
        assert!(!ready_ips.contains(&bad_ip));

        let d = wait_for(&deployments, "bad", "the Available condition", |d| {
            d.and_then(|d| d.status.as_ref())
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Available"))
        })
        .await;
        let status = d.status.unwrap();
        let condition = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Available")
            .unwrap();
        assert_eq!(condition.status, "False", "{condition:?}");
        assert_eq!(
            condition.reason.as_deref(),
            Some("MinimumReplicasUnavailable")
        );
        assert_eq!(status.available_replicas.unwrap_or(0), 0);
        assert_eq!(status.unavailable_replicas, Some(1));
    })
    .await;
}

#[tokio::test]
async fn deleted_deployments_pods_are_gone_after_the_grace_period() {
    in_namespace("delete", |client, ns| async move {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        deployments
            .create(
                &PostParams::default(),
                &deployment("web", 2, "app:v1", json!({})),
            )
            .await
            .unwrap();
        wait_for(&deployments, "web", "2 available replicas", |d| {
            available(d, 2)
        })
        .await;
        let selector = ListParams::default().labels("app=web");
        assert_eq!(pods.list(&selector).await.unwrap().items.len(), 2);

        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            ..Default::default()
        };
        deployments.delete("web", &dp).await.unwrap();
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = pods.list(&selector).await.unwrap().items;
            if left.is_empty() && deployments.get_opt("web").await.unwrap().is_none() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "pods still there after {DEADLINE:?}: {:?}",
                left.iter()
                    .map(|p| (&p.metadata.name, &p.metadata.deletion_timestamp))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn crash_loop_shows_back_off_and_a_rising_restart_count() {
    in_namespace("crash-loop", |client, ns| async move {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        create_pod(
            &pods,
            &pod("crash", "app:v2-crash-loop", "Always", json!({})),
        )
        .await;
        let mut first = None;
        watch_pod(
            &pods,
            "crash",
            "CrashLoopBackOff with a rising restartCount",
            |p| {
                if waiting_reason(p) != Some("CrashLoopBackOff") {
                    return false;
                }
                assert_eq!(phase(p), Some("Running"));
                assert!(!pod_ready(p));
                let c = container(p).unwrap();
                assert!(!c.ready);
                let message = waiting_message(c);
                assert!(
                    message.starts_with("back-off ")
                        && message.contains("restarting failed container=app"),
                    "{message}"
                );
                let last = c.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
                assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
                let first = *first.get_or_insert(c.restart_count);
                c.restart_count >= first + 2
            },
        )
        .await;
    })
    .await;
}

fn waiting_message(c: &ContainerStatus) -> String {
    c.state
        .as_ref()
        .unwrap()
        .waiting
        .as_ref()
        .unwrap()
        .message
        .clone()
        .unwrap()
}

#[tokio::test]
async fn image_pull_failure_shows_err_image_pull_then_back_off() {
    in_namespace("image-pull", |client, ns| async move {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        // Chosen by annotation; the image tag says nothing.
        let annotations = json!({ "sim.bgslot.dev/fault": "image-pull" });
        create_pod(
            &pods,
            &pod("pull", "registry.example/app:v1", "Always", annotations),
        )
        .await;
        let mut seen_err = false;
        watch_pod(&pods, "pull", "ErrImagePull then ImagePullBackOff", |p| {
            let reason = waiting_reason(p);
            if matches!(reason, Some("ErrImagePull" | "ImagePullBackOff")) {
                assert_eq!(phase(p), Some("Pending"));
                assert!(!pod_ready(p));
                let c = container(p).unwrap();
                assert!(!c.ready);
                let message = waiting_message(c);
                assert!(message.contains("\"registry.example/app:v1\""), "{message}");
            }
            seen_err |= reason == Some("ErrImagePull");
            seen_err && reason == Some("ImagePullBackOff")
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn slow_start_is_running_but_unready_before_it_becomes_ready() {
    in_namespace("slow-start", |client, ns| async move {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let annotations = json!({ "sim.bgslot.dev/start-delay": "5s" });
        create_pod(&pods, &pod("slow", "app:slow-start", "Always", annotations)).await;
        let created = Instant::now();
        let mut seen_unready_running = false;
        watch_pod(
            &pods,
            "slow",
            "Ready after a running-but-unready phase",
            |p| {
                let running = container(p)
                    .is_some_and(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()));
                if running && !pod_ready(p) {
                    seen_unready_running = true;
                }
                pod_ready(p)
            },
        )
        .await;
        assert!(
            seen_unready_running,
            "the pod was never running-but-unready"
        );
        assert!(
            created.elapsed() >= Duration::from_secs(4),
            "ready too early: {:?}",
            created.elapsed()
        );
    })
    .await;
}

#[tokio::test]
async fn restart_never_pod_succeeds() {
    in_namespace("succeeds", |client, ns| async move {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        create_pod(&pods, &pod("once", "app:v1", "Never", json!({}))).await;
        let p = wait_for(&pods, "once", "phase Succeeded", |p| {
            p.is_some_and(|p| phase(p) == Some("Succeeded"))
        })
        .await;
        let terminated = container(&p)
            .unwrap()
            .state
            .as_ref()
            .unwrap()
            .terminated
            .clone()
            .unwrap();
        assert_eq!(terminated.exit_code, 0);
        assert_eq!(terminated.reason.as_deref(), Some("Completed"));
        assert!(p.status.unwrap().pod_ip.is_some());
    })
    .await;
}

#[tokio::test]
async fn the_node_is_ready_untainted_and_its_lease_is_fresh() {
    let client = client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes.list(&ListParams::default()).await.unwrap().items;
    if !list
        .iter()
        .any(|n| n.metadata.name.as_deref() == Some("bgslot-sim"))
    {
        // A real cluster: its nodes are its own business, but one must be Ready.
        assert!(
            list.iter().any(|n| node_ready(Some(n))),
            "no Ready node: {list:#?}"
        );
        return;
    }
    // The not-ready taint set at registration is lifted by the node lifecycle controller.
    wait_for(&nodes, "bgslot-sim", "Ready without taints", |n| {
        node_ready(n)
            && n.and_then(|n| n.spec.as_ref()?.taints.as_ref())
                .is_none_or(|t| t.is_empty())
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let lease = leases.get("bgslot-sim").await.unwrap();
    let renewed = lease.spec.unwrap().renew_time.unwrap().0;
    let age = k8s_openapi::jiff::Timestamp::now().duration_since(renewed);
    assert!(age.as_secs() < 30, "lease renewed {age:?} ago");
}

fn node_ready(n: Option<&Node>) -> bool {
    n.and_then(|n| n.status.as_ref()?.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The kubeconfig's `server:` and `token:` values (testenv writes one of each).
fn server_and_token() -> (String, String) {
    let text = std::fs::read_to_string(std::env::var_os("KUBECONFIG").unwrap()).unwrap();
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no `{key}` in KUBECONFIG"))
    };
    (value("server:"), value("token:"))
}

#[tokio::test]
async fn a_plain_curl_get_leaves_the_api_server_able_to_bind_pods() {
    // A Kubernetes 1.20 API server built with Go 1.18+ and its vendored reflect2 v1.0.1 corrupts
    // its memory on the first such request, and every pod binding after it fails: prepare.sh
    // builds it with reflect2 v1.0.2. Users of `testenv up` reach the API with kubectl and curl.
    let (server, token) = server_and_token();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail", "-k", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("{server}/api/v1/namespaces/default"))
        .output()
        .expect("running curl (testenv prepare installs it)");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    in_namespace("after-curl", |client, ns| async move {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        create_pod(&pods, &pod("bound", "app:v1", "Never", json!({}))).await;
        wait_for(&pods, "bound", "bound to the node", |p| {
            p.and_then(|p| p.spec.as_ref()?.node_name.as_deref()) == Some("bgslot-sim")
        })
        .await;
    })
    .await;
}
