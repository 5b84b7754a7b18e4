//! bgslot reads a release from helm's own storage, on the real control plane with Helm 3 and
//! Helm 4: `status`, `history`, `recover` and a refusal run no helm process and a swap runs one
//! (its write); a release Helm 3 wrote is read and swapped by bgslot with Helm 4; where the
//! records are not in the Kubernetes API (helm's SQL driver) or may not be listed, bgslot goes
//! through helm and says so once at `-v`.

use crate::common;

use common::cli::Env;
use common::postgres::Postgres;
use serde_json::json;

with_both_helms!(
    reads_and_refusals_run_no_helm_and_a_swap_one,
    the_sql_driver_works_through_helm,
    without_the_right_to_list_secrets,
);

/// A team moving to Helm 4: a release Helm 3 installed and staged is read, swapped, cleaned and
/// deployed again by bgslot driving Helm 4, and its history reads as one audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_helm_3_wrote_is_read_and_swapped_with_helm_4() {
    let mut env = Env::new(3, "helm3to4").await;
    env.bgslot(&["deploy", "web", "--tag", "v1", "--replicas", "2"])
        .await
        .must_succeed();
    env.bgslot(&["deploy", "web", "--tag", "v2"])
        .await
        .must_succeed();
    env.helm = common::helm(4);
    let status = env
        .bgslot(&["status", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert_eq!(
        (
            status["revision"].as_u64(),
            status["helm_version"].as_str().map(|v| v.starts_with("v4"))
        ),
        (Some(2), Some(true))
    );
    assert_eq!(status["next"], "bgslot swap web --expect-tag v2");
    let swap = env
        .bgslot(&["-v", "swap", "web", "--expect-tag", "v2"])
        .await
        .must_succeed();
    assert_eq!(swap.helm_commands(), ["upgrade"]);
    env.await_endpoints("web", "green", 2).await;
    env.bgslot(&["clean", "web", "--min-age", "0s"])
        .await
        .must_succeed();
    env.bgslot(&["deploy", "web", "--tag", "v3"])
        .await
        .must_succeed();
    env.bgslot(&["swap", "web"]).await.must_succeed();
    env.await_endpoints("web", "blue", 2).await;
    let history = env
        .bgslot(&["history", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    let steps: Vec<&str> = history["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["operation"].as_str())
        .collect();
    assert_eq!(
        steps,
        ["install", "deploy", "swap", "clean", "deploy", "swap"]
    );
    assert_eq!(env.fingerprint("web").await.selectors["web"], "blue");
    env.done().await;
}

async fn reads_and_refusals_run_no_helm_and_a_swap_one(major: u32) {
    let env = Env::new(major, "direct").await;
    env.bgslot(&["deploy", "web", "--tag", "v1", "--replicas", "2"])
        .await
        .must_succeed();
    env.bgslot(&["deploy", "web", "--tag", "v2"])
        .await
        .must_succeed();
    let status = env
        .bgslot(&["-v", "status", "web", "-o", "json"])
        .await
        .must_succeed();
    assert_eq!(
        status.helm_commands(),
        Vec::<String>::new(),
        "status runs no helm: {}",
        status.stderr
    );
    let json = status.json();
    assert_eq!(
        (json["revision"].as_u64(), json["chart"].as_str()),
        (Some(2), Some(bgslot::chart::embedded_id().as_str()))
    );
    let history = env.bgslot(&["-v", "history", "web"]).await.must_succeed();
    assert_eq!(
        history.helm_commands(),
        Vec::<String>::new(),
        "history runs no helm"
    );
    let refused = env
        .bgslot(&["-v", "swap", "web", "--expect-tag", "v9"])
        .await
        .must_exit(3);
    assert_eq!(
        refused.helm_commands(),
        Vec::<String>::new(),
        "a refusal runs no helm: {}",
        refused.stderr
    );
    let recover = env.bgslot(&["-v", "recover", "web"]).await.must_succeed();
    assert_eq!(
        recover.helm_commands(),
        Vec::<String>::new(),
        "recover of a healthy release runs no helm: {}",
        recover.stderr
    );
    let swap = env.bgslot(&["-v", "swap", "web"]).await.must_succeed();
    assert_eq!(
        swap.helm_commands(),
        ["upgrade"],
        "a swap runs its write and nothing else: {}",
        swap.stderr
    );
    env.done().await;
}

/// helm's SQL driver keeps releases in PostgreSQL, out of bgslot's reach: every read goes through
/// helm, and `-v` says why once.
async fn the_sql_driver_works_through_helm(major: u32) {
    let env = Env::new(major, "sql").await;
    let db = Postgres::start();
    let sql = [
        ("HELM_DRIVER", "sql"),
        ("HELM_DRIVER_SQL_CONNECTION_STRING", db.url.as_str()),
    ];
    env.bgslot_env(&["deploy", "web", "--tag", "v1", "--replicas", "2"], &sql)
        .await
        .must_succeed();
    env.bgslot_env(&["deploy", "web", "--tag", "v2"], &sql)
        .await
        .must_succeed();
    let status = env
        .bgslot_env(&["-v", "status", "web", "-o", "json"], &sql)
        .await
        .must_succeed();
    let note = "reading release records with helm instead: HELM_DRIVER=sql keeps helm's releases where bgslot does not read them";
    assert_eq!(
        status.stderr.matches(note).count(),
        1,
        "said once: {}",
        status.stderr
    );
    assert_eq!(status.helm_commands(), ["status"]);
    assert_eq!(status.json()["revision"], 2);
    env.bgslot_env(&["swap", "web", "--expect-tag", "v2"], &sql)
        .await
        .must_succeed();
    env.await_endpoints("web", "green", 2).await;
    let history = env
        .bgslot_env(&["history", "web", "-o", "json"], &sql)
        .await
        .must_succeed()
        .json();
    let steps: Vec<&str> = history["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["operation"].as_str())
        .collect();
    assert_eq!(steps, ["install", "deploy", "swap"]);
    // No release record in the namespace: helm kept them in PostgreSQL.
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(env.client.clone(), &env.ns);
    let records = secrets
        .list(&kube::api::ListParams::default().labels("owner=helm"))
        .await
        .unwrap();
    assert!(records.items.is_empty());
    env.done().await;
}

/// A ServiceAccount with `examples/rbac.yaml`'s Role minus its secrets rule: with helm's
/// ConfigMap driver bgslot reads the records it may list and runs the whole cycle; with the
/// Secret driver it goes through helm, which may not list them either, and its error is shown.
async fn without_the_right_to_list_secrets(major: u32) {
    let admin = Env::new(major, "no-secrets").await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = common::rbac::service_account(&admin, dir.path(), &["secrets"]).await;
    let env = admin.with_user(kubeconfig);
    let configmaps = [("HELM_DRIVER", "configmap")];
    env.bgslot_env(
        &["deploy", "web", "--tag", "v1", "--replicas", "2"],
        &configmaps,
    )
    .await
    .must_succeed();
    env.bgslot_env(&["deploy", "web", "--tag", "v2"], &configmaps)
        .await
        .must_succeed();
    let status = env
        .bgslot_env(&["-v", "status", "web"], &configmaps)
        .await
        .must_succeed();
    assert_eq!(
        status.helm_commands(),
        Vec::<String>::new(),
        "read directly: {}",
        status.stderr
    );
    env.bgslot_env(&["swap", "web"], &configmaps)
        .await
        .must_succeed();
    env.await_endpoints("web", "green", 2).await;

    let secret_driver = env.bgslot(&["-v", "status", "other"]).await.must_exit(1);
    assert!(
        secret_driver
            .stderr
            .contains("reading release records with helm instead: not allowed to list secrets"),
        "the fallback is said: {}",
        secret_driver.stderr
    );
    assert_eq!(secret_driver.helm_commands(), ["status"]);
    secret_driver.must_say("forbidden");
    let json = env
        .bgslot_env(&["status", "web", "-o", "json"], &configmaps)
        .await
        .must_succeed()
        .json();
    assert_eq!(
        (json["production_slot"].clone(), json["drift"].clone()),
        (json!("green"), json!([]))
    );
    env.done().await;
}
