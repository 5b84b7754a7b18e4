//! Zero downtime in router mode, measured with requests: constant load (per-request and
//! keep-alive clients) through the router's production Service across two deploy → swap → clean
//! cycles of a `helm create` chart, as a user runs them (the chart has no preStop; the drain delay
//! of `clean` is waited out). Not one request may fail, each version must have answered, and after
//! each clean the old version answers no one (a fresh load reaches only the new one). The negative
//! control (`clean --force` right after the swap, under a propagation lag) must drop requests.
//!
//! Needs testenv's simulated node: pods are local processes behind its service proxy.

use crate::common;

use std::time::Duration;

use common::cli::Env;
use common::dataplane::{self, Load};

use super::router::helm_create;

const RATE: f64 = 50.0;
/// The router Service's propagation lag, as bgslot's chart passes it to testenv's proxy.
const LAG: &str = r"service.annotations.sim\.bgslot\.dev/proxy-lag=10s";

with_both_helms!(
    two_router_cycles_drop_no_request,
    the_router_negative_control_drops_requests,
);

async fn clean_after_the_drain_delay(env: &Env) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let run = env.bgslot(&["clean", "web"]).await;
        match run.code {
            0 => return,
            3 if run.stderr.contains("drain") => {}
            _ => panic!("clean failed: {run:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "clean still refused: {run:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn two_router_cycles_drop_no_request(major: u32) {
    let env = Env::new(major, "rtzd").await;
    let dir = tempfile::tempdir().unwrap();
    let chart = helm_create(&env, dir.path(), "myapp");
    let service = format!("{}/web", env.ns);
    env.bgslot(&[
        "deploy",
        "web",
        "--app-chart",
        chart.to_str().unwrap(),
        "--tag",
        "v1",
        "--replicas",
        "2",
        "--router-set",
        LAG,
    ])
    .await
    .must_succeed();
    dataplane::await_routes(&service, "web-blue-", 2).await;
    let load = Load::start(&service, RATE).await;

    for (tag, from, to) in [("v2", "blue", "green"), ("v3", "green", "blue")] {
        env.bgslot(&["deploy", "web", "--tag", tag])
            .await
            .must_succeed();
        env.bgslot(&["swap", "web", "--expect-tag", tag])
            .await
            .must_succeed();
        // New connections reach the new version once the proxy applied the swap.
        dataplane::await_routes(&service, &format!("web-{to}-"), 2).await;
        clean_after_the_drain_delay(&env).await;
        // clean returned once the old slot release's pods had stopped.
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(env.client.clone(), &env.ns);
        let left = pods
            .list(
                &kube::api::ListParams::default()
                    .labels(&format!("app.kubernetes.io/instance=web-{from}")),
            )
            .await
            .unwrap();
        assert!(
            left.items.is_empty(),
            "web-{from} pods left after clean: {left:?}"
        );
        dataplane::await_routes(&service, &format!("web-{to}-"), 2).await;
    }
    let summary = load.stop().await;
    assert_eq!(
        summary.failed, 0,
        "requests failed across two router cycles: {:?}; first failures: {:#?}",
        summary.failed_by_kind, summary.failures
    );
    for version in ["v1", "v2", "v3"] {
        assert!(
            summary.by_version.get(version).copied().unwrap_or(0) > 0,
            "{version} never answered: {:?}",
            summary.by_version
        );
    }
    assert!(summary.requests as f64 > RATE * 40.0, "{summary:?}");
    // After the last clean, the new version serves everyone: fresh clients reach only v3.
    let fresh = Load::start(&service, RATE).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fresh = fresh.stop().await;
    assert_eq!(fresh.failed, 0, "{fresh:?}");
    assert_eq!(
        fresh.by_version.keys().collect::<Vec<_>>(),
        ["v3"],
        "{:?}",
        fresh.by_version
    );
    env.done().await;
}

async fn the_router_negative_control_drops_requests(major: u32) {
    let env = Env::new(major, "rtzdctl").await;
    let dir = tempfile::tempdir().unwrap();
    let chart = helm_create(&env, dir.path(), "myapp");
    let service = format!("{}/web", env.ns);
    env.bgslot(&[
        "deploy",
        "web",
        "--app-chart",
        chart.to_str().unwrap(),
        "--tag",
        "v1",
        "--replicas",
        "2",
        "--router-set",
        LAG,
    ])
    .await
    .must_succeed();
    dataplane::await_routes(&service, "web-blue-", 2).await;
    let load = Load::start(&service, RATE).await;
    // The old slot release is uninstalled while the proxy still routes new connections to it.
    for version in 2..=4 {
        let tag = format!("v{version}");
        env.bgslot(&["deploy", "web", "--tag", &tag])
            .await
            .must_succeed();
        env.bgslot(&["swap", "web"]).await.must_succeed();
        env.bgslot(&["clean", "web", "--force"])
            .await
            .must_succeed();
        if dataplane::rejected(&service) > 0 {
            break;
        }
    }
    let summary = load.stop().await;
    assert!(
        summary.failed > 0,
        "no request failed with clean --force right after the swap: the test cannot see drops ({summary:?})"
    );
    env.done().await;
}
