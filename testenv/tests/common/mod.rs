//! What the tests against the cluster in KUBECONFIG share: a client, a fresh namespace per test,
//! creating pods while ServiceAccount admission catches up, and waiting for a condition.

// Each test binary uses its own part of this.
#![allow(dead_code)]

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;

pub const DEADLINE: Duration = Duration::from_secs(60);

pub async fn client() -> Client {
    if std::env::var_os("KUBECONFIG").is_none() {
        panic!("KUBECONFIG is not set: start the control plane: testenv up / scripts/test");
    }
    Client::try_default()
        .await
        .expect("a client for the cluster in KUBECONFIG")
}

/// Runs `body` in a fresh namespace (ready for pods), and deletes the namespace afterwards,
/// also when `body` panics.
pub async fn in_namespace<F, Fut>(prefix: &str, body: F)
where
    F: FnOnce(Client, String) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let client = client().await;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("env-{prefix}-{:x}{nanos:x}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");

    let outcome = tokio::spawn({
        let client = client.clone();
        let name = name.clone();
        async move {
            wait_for_default_token(&client, &name).await;
            body(client, name).await
        }
    })
    .await;

    let _ = namespaces.delete(&name, &DeleteParams::background()).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// ServiceAccount admission rejects pods until the namespace's default ServiceAccount has its
/// token secret (Kubernetes 1.20); controllers retry, but pods created directly must wait.
pub async fn wait_for_default_token(client: &Client, ns: &str) {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let has_token = |sa: Option<&ServiceAccount>| {
        sa.is_some_and(|sa| sa.secrets.as_ref().is_some_and(|s| !s.is_empty()))
    };
    wait_for(
        &sas,
        "default",
        "the default ServiceAccount with its token",
        has_token,
    )
    .await;
}

/// Creates a pod, retrying while ServiceAccount admission has not yet seen the namespace's token
/// (its informer can lag the ServiceAccount itself by a moment).
pub async fn create_pod(pods: &Api<Pod>, pod: &Pod) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match pods.create(&PostParams::default(), pod).await {
            Ok(_) => return,
            Err(kube::Error::Api(s))
                if (s.message.contains("service account")
                    || s.message.contains("serviceaccount"))
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => panic!("creating pod: {e}"),
        }
    }
}

/// Waits until `cond` holds for the named object, failing with its last state after DEADLINE.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    cond: impl Fn(Option<&K>) -> bool,
) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    match tokio::time::timeout(DEADLINE, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(Some(object))) => object,
        Ok(Ok(None)) => panic!("{name} does not exist; waited for {what}"),
        Ok(Err(e)) => panic!("watching {name} for {what}: {e}"),
        Err(_) => {
            let last = api.get_opt(name).await;
            panic!("{name}: no {what} within {DEADLINE:?}; last state: {last:#?}")
        }
    }
}

pub fn available(d: Option<&Deployment>, replicas: i32) -> bool {
    let Some(status) = d.and_then(|d| d.status.as_ref()) else {
        return false;
    };
    status.available_replicas == Some(replicas)
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Available" && c.status == "True")
}

pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}
