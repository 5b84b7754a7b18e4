//! A release installed with chart 0.2.0 (the last published shape, vendored in
//! `tests/fixtures/chart-0.2.0`) upgrades in place to the embedded chart with bgslot's next
//! write, and keeps serving: traffic through the production Service across the upgrade and a
//! whole cycle after it drops no request, and no pod is restarted by the upgrade itself.

use crate::common;

use std::collections::BTreeSet;

use common::cli::Env;
use common::dataplane::{self, Load};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

with_both_helms!(a_release_on_chart_0_2_0_upgrades_in_place_and_keeps_serving);

fn chart_0_2_0() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/chart-0.2.0")
        .to_str()
        .unwrap()
        .to_string()
}

/// The uids of the release's web pods.
async fn web_pods(env: &Env) -> BTreeSet<String> {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    pods.list(
        &ListParams::default()
            .labels("app.kubernetes.io/name=bgslot,app.kubernetes.io/instance=web"),
    )
    .await
    .unwrap()
    .items
    .into_iter()
    .filter(|p| p.metadata.deletion_timestamp.is_none())
    .filter_map(|p| p.metadata.uid)
    .collect()
}

async fn a_release_on_chart_0_2_0_upgrades_in_place_and_keeps_serving(major: u32) {
    let env = Env::new(major, "upgrade").await;
    let old = chart_0_2_0();
    env.bgslot(&[
        "deploy",
        "web",
        "--tag",
        "v1",
        "--replicas",
        "2",
        "--chart",
        &old,
    ])
    .await
    .must_succeed();
    env.bgslot(&["deploy", "web", "--tag", "v2", "--chart", &old])
        .await
        .must_succeed();
    let status = env
        .bgslot(&["status", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert_eq!(status["chart"], "bgslot-0.2.0");
    let pods_before = web_pods(&env).await;
    let service = format!("{}/web", env.ns);
    let load = Load::start(&service, 40.0).await;

    // The swap is bgslot's first write with the embedded chart: it upgrades the release in place
    // (new chart defaults, --reset-then-reuse-values) in the same write that flips production.
    env.bgslot(&["swap", "web", "--expect-tag", "v2"])
        .await
        .must_succeed();
    dataplane::await_routes(&service, "web-green-", 2).await;
    let status = env
        .bgslot(&["status", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert_eq!(status["chart"], bgslot::chart::embedded_id());
    assert_eq!(status["drift"], serde_json::json!([]));
    assert_eq!(
        web_pods(&env).await,
        pods_before,
        "the upgrade restarted no pod"
    );

    // And the next cycle runs on the new chart.
    env.bgslot(&["clean", "web", "--min-age", "0s"])
        .await
        .must_succeed();
    env.bgslot(&["deploy", "web", "--tag", "v3"])
        .await
        .must_succeed();
    env.bgslot(&["swap", "web", "--expect-tag", "v3"])
        .await
        .must_succeed();
    dataplane::await_routes(&service, "web-blue-", 2).await;
    let summary = load.stop().await;
    assert!(summary.requests > 100, "{summary:?}");
    assert_eq!(
        summary.failed, 0,
        "requests failed through the upgrade: {summary:?}"
    );
    env.done().await;
}
