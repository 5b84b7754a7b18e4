//! Installs the chart on the local control plane with Helm 3 and Helm 4, swaps the production slot
//! with `helm upgrade --reuse-values`, and follows the Services' Endpoints to the right pods.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::Helm;
use futures::FutureExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Pod};
use kube::api::{Api, ListParams};
use kube::Client;

const REL: &str = "web";
const DEADLINE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread")]
async fn helm3_install_and_swap_moves_production_endpoints() {
    install_and_swap(common::helm(3)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn helm4_install_and_swap_moves_production_endpoints() {
    install_and_swap(common::helm(4)).await;
}

async fn install_and_swap(helm: Helm) {
    let client = common::client().await;
    let ns = common::namespace(&client, &format!("chart-{}", helm.name())).await;
    // The namespace goes away whether the scenario passes or panics.
    let outcome = std::panic::AssertUnwindSafe(scenario(&helm, &client, &ns))
        .catch_unwind()
        .await;
    common::delete_namespace(&client, &ns).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn scenario(helm: &Helm, client: &Client, ns: &str) {
    let chart = common::chart_dir();
    let chart = chart.to_str().expect("UTF-8 chart path");

    helm.run(&[
        "install",
        REL,
        chart,
        "-n",
        ns,
        "--set",
        "blue.enabled=true,green.enabled=true,replicaCount=2",
    ]);

    wait_for_routing(client, ns, "blue", "green", &helm.name()).await;
    let blue_before = slot_pods(client, ns, "blue").await;
    let blue_generation = deployment_generation(client, ns, "web-blue").await;

    helm.run(&[
        "upgrade",
        REL,
        chart,
        "-n",
        ns,
        "--reuse-values",
        "--set",
        "productionSlot=green",
    ]);

    wait_for_routing(client, ns, "green", "blue", &helm.name()).await;
    let blue_after = slot_pods(client, ns, "blue").await;
    assert_eq!(
        identities(&blue_before),
        identities(&blue_after),
        "{}: the swap restarted blue's pods",
        helm.name()
    );
    assert_eq!(
        blue_generation,
        deployment_generation(client, ns, "web-blue").await,
        "{}: the swap changed blue's Deployment",
        helm.name()
    );

    helm.run(&["test", REL, "-n", ns, "--timeout", "2m"]);
}

/// Live (not terminating) pods of one slot of the release.
async fn slot_pods(client: &Client, ns: &str, slot: &str) -> Vec<Pod> {
    let selector = format!("app.kubernetes.io/instance={REL},bgslot/slot={slot}");
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn identities(pods: &[Pod]) -> BTreeSet<(String, String)> {
    pods.iter()
        .map(|p| {
            (
                p.metadata.name.clone().unwrap_or_default(),
                p.metadata.uid.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn pod_ips(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect()
}

async fn ready_endpoint_ips(client: &Client, ns: &str, service: &str) -> BTreeSet<String> {
    let Some(endpoints) = Api::<Endpoints>::namespaced(client.clone(), ns)
        .get_opt(service)
        .await
        .expect("get endpoints")
    else {
        return BTreeSet::new();
    };
    endpoints
        .subsets
        .unwrap_or_default()
        .into_iter()
        .flat_map(|s| s.addresses.unwrap_or_default())
        .map(|a| a.ip)
        .collect()
}

async fn deployment_generation(client: &Client, ns: &str, name: &str) -> Option<i64> {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("get deployment")
        .metadata
        .generation
}

/// Waits until the production Service's ready endpoints are exactly the `production` slot's pods
/// and the stage Service's are exactly the `stage` slot's pods (two each).
async fn wait_for_routing(client: &Client, ns: &str, production: &str, stage: &str, who: &str) {
    let start = Instant::now();
    loop {
        let prod_ips = pod_ips(&slot_pods(client, ns, production).await);
        let stage_ips = pod_ips(&slot_pods(client, ns, stage).await);
        let prod_eps = ready_endpoint_ips(client, ns, REL).await;
        let stage_eps = ready_endpoint_ips(client, ns, &format!("{REL}-stage")).await;
        let settled = prod_ips.len() == 2
            && stage_ips.len() == 2
            && prod_eps == prod_ips
            && stage_eps == stage_ips;
        if settled {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{who}: after {DEADLINE:?} production ({production}) pods {prod_ips:?} vs endpoints \
             {prod_eps:?}; stage ({stage}) pods {stage_ips:?} vs endpoints {stage_eps:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
