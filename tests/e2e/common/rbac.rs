//! A ServiceAccount bound to `examples/rbac.yaml`'s Role (or to that Role without some of its
//! rules), and a kubeconfig that acts as it: what a CI runner with the documented permissions uses.

use std::path::Path;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, PostParams};
use serde_json::{json, Value};

use super::cli::Env;

/// Applies `examples/rbac.yaml` in the test's namespace, leaving out every rule of the Role that
/// names one of `without` (resources such as `secrets`), and returns the path of a kubeconfig for
/// its ServiceAccount (same cluster and CA as the admin's; only the user changes).
pub async fn service_account(env: &Env, dir: &Path, without: &[&str]) -> String {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rbac.yaml"))
            .unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("examples/rbac.yaml is YAML");
    let pp = PostParams::default();
    for mut doc in docs.into_iter().filter(|d| d.is_object()) {
        match doc["kind"].as_str().unwrap() {
            "ServiceAccount" => {
                let sa: ServiceAccount = serde_json::from_value(doc).unwrap();
                Api::<ServiceAccount>::namespaced(env.client.clone(), &env.ns)
                    .create(&pp, &sa)
                    .await
                    .unwrap();
            }
            "Role" => {
                let rules = doc["rules"].as_array_mut().unwrap();
                let before = rules.len();
                rules.retain(|r| {
                    let resources = r["resources"].as_array().unwrap();
                    !without.iter().any(|w| resources.contains(&json!(w)))
                });
                assert_eq!(
                    before - rules.len(),
                    without.len(),
                    "one rule each for {without:?} in the example Role"
                );
                let role: Role = serde_json::from_value(doc).unwrap();
                Api::<Role>::namespaced(env.client.clone(), &env.ns)
                    .create(&pp, &role)
                    .await
                    .unwrap();
            }
            "RoleBinding" => {
                doc["subjects"][0]["namespace"] = json!(env.ns);
                let binding: RoleBinding = serde_json::from_value(doc).unwrap();
                Api::<RoleBinding>::namespaced(env.client.clone(), &env.ns)
                    .create(&pp, &binding)
                    .await
                    .unwrap();
            }
            other => panic!("unexpected {other} in examples/rbac.yaml"),
        }
    }
    // A token Secret works on every version (1.24+ no longer creates one by itself); the admin
    // makes and reads it.
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let token: Secret = serde_json::from_value(json!({
        "metadata": {"name": "bgslot-token", "annotations": {"kubernetes.io/service-account.name": "bgslot"}},
        "type": "kubernetes.io/service-account-token"
    }))
    .unwrap();
    secrets.create(&pp, &token).await.unwrap();
    let read_token = || async {
        let secret = secrets.get("bgslot-token").await.ok()?;
        let token = secret.data?.get("token")?.0.clone();
        Some(String::from_utf8(token).unwrap())
    };
    super::eventually("the ServiceAccount token is issued", || async {
        read_token().await.is_some()
    })
    .await;
    let token = read_token().await.unwrap();
    let admin: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(super::kubeconfig()).unwrap()).unwrap();
    let current = admin["current-context"].as_str().unwrap().to_string();
    let context = admin["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == current.as_str())
        .unwrap();
    let cluster = admin["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == context["context"]["cluster"])
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
