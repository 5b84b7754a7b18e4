//! Zero downtime at the request level: real requests (per-request and keep-alive clients) flow
//! through the production Service across deploy/swap/clean cycles run with the defaults a user
//! gets, and not one may fail. A negative control (no preStop, `clean --force` right after the
//! swap) must drop requests, or this test could not see a drop at all.
//!
//! Needs testenv's simulated node: pods are local processes behind its service proxy, which
//! applies Endpoints changes late as kube-proxy does. Both tests give the Services a 10 s
//! propagation lag (a slow kube-proxy sync, or a cloud load balancer deregistering targets): the
//! defaults must tolerate it, and the control drops requests under it however loaded the machine
//! is (with the node's 1 s lag, or even 5 s, a busy CI machine's slower `clean` missed the
//! window). Not timed:
//! the 30 s drain delay of `clean` is waited out for real (the Helm 3 and Helm 4 variants of each
//! test run side by side).

use crate::common;

use std::time::Duration;

use common::cli::Env;
use common::dataplane::{self, Load};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

/// Requests per second per test: four of these tests run at once next to the rest of the suite.
const RATE: f64 = 50.0;
/// The Services' propagation lag, as the chart's `service.annotations` pass it to testenv's proxy.
const LAG: &str = r"service.annotations.sim\.bgslot\.dev/proxy-lag=10s";

with_both_helms!(
    two_cycles_with_the_defaults_drop_no_request,
    the_negative_control_drops_requests,
);

/// `bgslot clean` as a user runs it with the defaults: refused (exit 3) until the drain delay
/// has passed since the swap, then done.
async fn clean_after_the_drain_delay(env: &Env) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let run = env.bgslot(&["clean", "web"]).await;
        match run.code {
            0 => return,
            3 if run.stderr.contains("drain") || run.stdout.contains("drain") => {}
            _ => panic!("clean failed: {run:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "clean still refused 120s after the swap: {run:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits until no pod of `slot` is left, terminating ones included (their drain is over).
async fn await_slot_gone(env: &Env, slot: &str) {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let selector = ListParams::default().labels(&format!("bgslot/slot={slot}"));
    common::eventually(&format!("the {slot} pods are gone"), || async {
        pods.list(&selector).await.unwrap().items.is_empty()
    })
    .await;
}

async fn two_cycles_with_the_defaults_drop_no_request(major: u32) {
    let env = Env::new(major, "zd").await;
    let service = format!("{}/web", env.ns);
    // The chart's defaults: 2 replicas, preStop sleep 5 s, grace period 30 s.
    env.bgslot(&["deploy", "web", "--tag", "v1", "--set", LAG])
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
        clean_after_the_drain_delay(&env).await;
        // clean returns once the old pods have stopped: none answers anyone after it.
        let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
        let left = pods
            .list(&ListParams::default().labels(&format!("bgslot/slot={from}")))
            .await
            .unwrap();
        assert!(
            left.items.is_empty(),
            "{from} pods left after clean: {left:?}"
        );
        dataplane::await_routes(&service, &format!("web-{to}-"), 2).await;
    }

    let summary = load.stop().await;
    assert_eq!(
        summary.failed, 0,
        "requests failed across two cycles with the defaults: {:?}; first failures: {:#?}",
        summary.failed_by_kind, summary.failures
    );
    for version in ["v1", "v2", "v3"] {
        assert!(
            summary.by_version.get(version).copied().unwrap_or(0) > 0,
            "{version} never answered: {:?}",
            summary.by_version
        );
    }
    let kept = &summary.by_client["keep_alive"];
    assert!(
        kept.connections < kept.requests / 4,
        "keep-alive clients reused their connections: {kept:?}"
    );
    assert!(summary.requests as f64 > RATE * 40.0, "{summary:?}");
}

async fn the_negative_control_drops_requests(major: u32) {
    let env = Env::new(major, "zdctl").await;
    let service = format!("{}/web", env.ns);
    env.bgslot(&[
        "deploy",
        "web",
        "--tag",
        "v1",
        "--set",
        "preStopSleepSeconds=0",
        "--set",
        LAG,
    ])
    .await
    .must_succeed();
    dataplane::await_routes(&service, "web-blue-", 2).await;
    let load = Load::start(&service, RATE).await;

    // The old slot stops while the proxy still routes new connections to it (the lag); should a
    // cycle miss that window anyway, the next ones will not.
    let mut slots = ["blue", "green"].iter().cycle();
    let mut cleans = Vec::new();
    for version in 2..=4 {
        let from = slots.next().unwrap();
        let tag = format!("v{version}");
        env.bgslot(&["deploy", "web", "--tag", &tag])
            .await
            .must_succeed();
        env.bgslot(&["swap", "web"]).await.must_succeed();
        let began = std::time::Instant::now();
        env.bgslot(&["clean", "web", "--force"])
            .await
            .must_succeed();
        await_slot_gone(&env, from).await;
        cleans.push(began.elapsed());
        if dataplane::rejected(&service) > 0 {
            break;
        }
    }

    let summary = load.stop().await;
    assert!(
        summary.failed > 0,
        "no request failed with preStop 0 and clean right after swap: the test cannot see drops (clean --force to old pods gone: {cleans:?}; {summary:?})"
    );
    assert!(
        summary.failed_by_kind["refused"] + summary.failed_by_kind["no_endpoint"] > 0,
        "the drops are connections to a stopped slot: {:?}",
        summary.failed_by_kind
    );
}
