//! `helm bgslot ...`: the Helm plugin in `plugin/`, installed into Helm 3 and Helm 4, hands helm's
//! own flags (-n, --kube-context, --kubeconfig) to bgslot and passes its exit codes back.

#[macro_use]
mod common;

use common::cli::{Env, Run};

with_both_helms!(helm_plugin_runs_bgslot_with_helms_flags);

async fn helm_plugin_runs_bgslot_with_helms_flags(major: u32) {
    let env = Env::new(major, "plugin").await;
    let data = tempfile::tempdir().unwrap();
    let plugin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugin");
    let helm = |args: &[&str]| {
        let mut cmd = env.helm.command();
        cmd.env("HELM_DATA_HOME", data.path())
            .env("BGSLOT_BIN", env!("CARGO_BIN_EXE_bgslot"))
            .env_remove("HELM_NAMESPACE")
            .args(args);
        Run::from(cmd.output().unwrap())
    };
    helm(&["plugin", "install", plugin.to_str().unwrap()]).ok();
    let kubeconfig = common::kubeconfig();
    let kubeconfig = kubeconfig.to_str().unwrap();

    helm(&[
        "bgslot",
        "-n",
        &env.ns,
        "--kubeconfig",
        kubeconfig,
        "deploy",
        "web",
        "--tag",
        "v1",
        "--replicas",
        "1",
    ])
    .ok();
    let status = helm(&[
        "bgslot",
        "--namespace",
        &env.ns,
        "status",
        "web",
        "-o",
        "json",
    ])
    .ok()
    .json();
    assert_eq!(status["namespace"], env.ns.as_str());
    assert_eq!(
        status["helm_version"].as_str().unwrap().chars().nth(1),
        char::from_digit(major, 10),
        "HELM_BIN is the helm that ran the plugin"
    );
    // A refusal keeps its exit code through helm.
    helm(&["bgslot", "-n", &env.ns, "swap", "web"])
        .code(3)
        .says("nothing is staged");
    env.done().await;
}
