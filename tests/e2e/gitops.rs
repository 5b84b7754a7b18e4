//! Releases a GitOps controller owns, on the real control plane with Helm 3 and Helm 4: the marks
//! Flux and Argo CD leave on the objects are put there as they would, and bgslot must say who owns
//! the release, refuse to change it behind the controller's back (exit 3, nothing changed), and
//! change it anyway with --force.

use crate::common;

use common::cli::Env;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::Discovery;
use serde_json::{json, Value};

with_both_helms!(
    a_release_flux_owns_is_refused_unless_forced,
    objects_argo_cd_applied_without_helm_are_explained
);

/// Puts Flux helm-controller's labels on every Service of the release, as its post-renderer does.
async fn mark_as_flux(env: &Env) {
    let services: Api<Service> = Api::namespaced(env.client.clone(), &env.ns);
    let list = services
        .list(&ListParams::default().labels("app.kubernetes.io/instance=web"))
        .await
        .unwrap();
    let labels = json!({"metadata": {"labels": {
        "helm.toolkit.fluxcd.io/name": "web",
        "helm.toolkit.fluxcd.io/namespace": "flux-system",
    }}});
    for svc in list.items {
        services
            .patch(
                &svc.metadata.name.unwrap(),
                &PatchParams::default(),
                &Patch::Merge(&labels),
            )
            .await
            .unwrap();
    }
}

async fn a_release_flux_owns_is_refused_unless_forced(major: u32) {
    let env = Env::new(major, "flux").await;
    env.bgslot(&["deploy", "web", "--tag", "v1", "--replicas", "2"])
        .await
        .must_succeed();
    env.bgslot(&["deploy", "web", "--tag", "v2"])
        .await
        .must_succeed();
    mark_as_flux(&env).await;

    let status = env
        .bgslot(&["status", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert_eq!(
        status["owner"],
        json!({"tool": "flux", "namespace": "flux-system", "name": "web"})
    );
    assert!(
        status["next"]
            .as_str()
            .unwrap()
            .contains("HelmRelease's spec.values"),
        "{status}"
    );
    env.bgslot(&["status", "web"])
        .await
        .must_succeed()
        .must_say("owner: Flux HelmRelease flux-system/web");

    let before = env.fingerprint("web").await;
    for args in [
        &["swap", "web"][..],
        &["deploy", "web", "--tag", "v3", "--replace"],
        &["clean", "web"],
        &["rollback", "web"],
        &["recover", "web"],
        &["release", "web", "--tag", "v3", "--replace"],
    ] {
        env.bgslot(args)
            .await
            .must_exit(3)
            .must_say("is managed by Flux (HelmRelease flux-system/web)")
            .must_say("flux suspend helmrelease web -n flux-system")
            .must_say("nothing was changed");
    }
    assert_eq!(env.fingerprint("web").await, before);

    env.bgslot(&["swap", "web", "--expect-tag", "v2", "--force"])
        .await
        .must_succeed();
    env.await_endpoints("web", "green", 2).await;
    env.done().await;
}

/// Renders the chart as Argo CD does (`helm template`, no release) and creates its objects with
/// Argo CD's tracking annotation (or, with `annotate` false, the instance label alone).
async fn apply_without_helm(env: &Env, annotate: bool) {
    let chart = common::chart_dir();
    // Argo CD renders for the cluster's Kubernetes version, as helm itself would.
    let server = env.client.apiserver_version().await.unwrap().git_version;
    let rendered = env.helm.run(&[
        "template",
        "web",
        chart.to_str().unwrap(),
        "-n",
        &env.ns,
        "--kube-version",
        &server,
        "--set",
        "replicaCount=1",
    ]);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&rendered).unwrap();
    let discovery = Discovery::new(env.client.clone()).run().await.unwrap();
    for mut doc in docs.into_iter().filter(|d| d.is_object()) {
        if doc["metadata"]["annotations"]["helm.sh/hook"].is_string() {
            continue; // Argo CD runs hooks as sync hooks; they do not matter here
        }
        if annotate {
            let kind = doc["kind"].as_str().unwrap().to_string();
            let name = doc["metadata"]["name"].as_str().unwrap().to_string();
            doc["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"] =
                json!(format!("shop-web:/{kind}:{}/{name}", env.ns));
        }
        let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
        let gvk = kube::api::GroupVersionKind::try_from(obj.types.as_ref().unwrap()).unwrap();
        let (resource, _) = discovery.resolve_gvk(&gvk).unwrap();
        let api: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), &env.ns, &resource);
        api.create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("creating {doc}: {e}"));
    }
}

async fn objects_argo_cd_applied_without_helm_are_explained(major: u32) {
    let env = Env::new(major, "argocd").await;
    apply_without_helm(&env, true).await;

    env.bgslot(&["status", "web"])
        .await
        .must_exit(1)
        .must_say("web has no helm release, but its objects exist, managed by Argo CD (Application shop-web)")
        .must_say("the Application's helm values");
    env.bgslot(&["swap", "web"])
        .await
        .must_exit(3)
        .must_say("managed by Argo CD (Application shop-web)");
    // Not an install over the Application's objects.
    env.bgslot(&["deploy", "web", "--tag", "v2"])
        .await
        .must_exit(3)
        .must_say("has no helm release, but its objects exist");
    let releases = env.helm_json(&["list"]);
    assert_eq!(releases, json!([]), "no helm release was made");

    // Label tracking leaves only app.kubernetes.io/instance, which the chart sets too.
    let env = Env::new(major, "argolabel").await;
    apply_without_helm(&env, false).await;
    env.bgslot(&["swap", "web"]).await.must_exit(3).must_say(
        "a tool that renders the chart without helm, such as Argo CD with label tracking",
    );
    env.done().await;
}
