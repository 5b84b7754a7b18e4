//! bgslot run as a ServiceAccount limited to `examples/rbac.yaml`: the documented Role is enough
//! for the whole release cycle, and nothing outside its namespace is reachable.

use crate::common;

use common::cli::Env;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, PostParams};
use kube::discovery::{ApiResource, Discovery};
use serde_json::{json, Value};

with_both_helms!(runs_the_release_cycle_with_the_example_role);

/// Applies `examples/rbac.yaml` in the namespace and returns a kubeconfig for its ServiceAccount.
async fn service_account_kubeconfig(env: &Env, dir: &std::path::Path) -> String {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rbac.yaml"),
    )
    .unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("examples/rbac.yaml is YAML");
    let discovery = Discovery::new(env.client.clone()).run().await.unwrap();
    for mut doc in docs.into_iter().filter(|d| d.is_object()) {
        if doc["kind"] == "RoleBinding" {
            doc["subjects"][0]["namespace"] = json!(env.ns);
        }
        let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
        let gvk = obj
            .types
            .as_ref()
            .map(|t| kube::api::GroupVersionKind::try_from(t).unwrap())
            .unwrap();
        let (resource, _): (ApiResource, _) = discovery.resolve_gvk(&gvk).unwrap();
        let api: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), &env.ns, &resource);
        api.create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("creating {doc}: {e}"));
    }
    // A token Secret works on every version (1.24+ no longer creates one by itself).
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "bgslot-token", "annotations": {"kubernetes.io/service-account.name": "bgslot"}},
        "type": "kubernetes.io/service-account-token"
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let read_token = || async {
        let secret = secrets.get("bgslot-token").await.ok()?;
        let token = secret.data?.get("token")?.0.clone();
        Some(String::from_utf8(token).unwrap())
    };
    common::eventually("the ServiceAccount token is issued", || async {
        read_token().await.is_some()
    })
    .await;
    let token = read_token().await.unwrap();
    // Same cluster and CA as the admin kubeconfig; only the user changes.
    let admin: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(common::kubeconfig()).unwrap()).unwrap();
    let current = admin["current-context"].as_str().unwrap().to_string();
    let context = admin["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == current.as_str())
        .unwrap();
    let cluster_name = context["context"]["cluster"].as_str().unwrap();
    let cluster = admin["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == cluster_name)
        .unwrap();
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster["cluster"]}],
        "users": [{"name": "bgslot", "user": {"token": token}}],
        "contexts": [{"name": "bgslot", "context": {"cluster": "c", "user": "bgslot", "namespace": env.ns}}],
        "current-context": "bgslot",
    });
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    path.to_str().unwrap().to_string()
}

async fn runs_the_release_cycle_with_the_example_role(major: u32) {
    let admin = Env::new(major, "rbac").await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = service_account_kubeconfig(&admin, dir.path()).await;
    let env = admin.with_user(kubeconfig);

    env.bgslot(&["deploy", "web", "--tag", "v1", "--replicas", "2"])
        .await
        .must_succeed();
    env.bgslot(&["deploy", "web", "--tag", "v2"])
        .await
        .must_succeed();
    env.bgslot(&["status", "web"])
        .await
        .must_succeed()
        .must_say("web-stage");
    env.bgslot(&["swap", "web", "--expect-tag", "v2"])
        .await
        .must_succeed();
    env.await_endpoints("web", "green", 2).await;
    env.bgslot(&["rollback", "web"]).await.must_succeed();
    env.bgslot(&["swap", "web"]).await.must_succeed();
    env.bgslot(&["clean", "web", "--min-age", "0s"])
        .await
        .must_succeed();
    env.bgslot(&["history", "web"]).await.must_succeed();
    let status = env
        .bgslot(&["status", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert_eq!(status["production_slot"], "green");
    assert_eq!(status["drift"], json!([]));
    // The Role is namespaced: another namespace is out of reach.
    env.bgslot(&["-n", "default", "status", "web"])
        .await
        .must_exit(1)
        .must_say("forbidden");
    env.helm.run(&[
        "test",
        "web",
        "-n",
        &env.ns,
        "--kubeconfig",
        env.kubeconfig.as_deref().unwrap(),
    ]);
    env.done().await;
}
