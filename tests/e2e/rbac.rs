//! bgslot run as a ServiceAccount limited to `examples/rbac.yaml`: the documented Role is enough
//! for the whole release cycle, and nothing outside its namespace is reachable.

use crate::common;

use common::cli::Env;
use serde_json::json;

with_both_helms!(runs_the_release_cycle_with_the_example_role);

async fn runs_the_release_cycle_with_the_example_role(major: u32) {
    let admin = Env::new(major, "rbac").await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = common::rbac::service_account(&admin, dir.path(), &[]).await;
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
