//! `helm bgslot ...`: the Helm plugin in `plugin/`, installed into Helm 3 and Helm 4, hands helm's
//! own flags (-n, --kube-context, --kubeconfig) to bgslot and passes its exit codes back.

use crate::common;

use common::cli::{Env, Run};

with_both_helms!(helm_plugin_runs_bgslot_with_helms_flags);

async fn helm_plugin_runs_bgslot_with_helms_flags(major: u32) {
    let env = Env::new(major, "plugin").await;
    let data = tempfile::tempdir().unwrap();
    // Installed from a copy: helm links a local plugin directory, and the install hook writes the
    // manual pages into it.
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugin");
    let copy = tempfile::tempdir().unwrap();
    let plugin = copy.path().join("bgslot");
    std::fs::create_dir(&plugin).unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), plugin.join(entry.file_name())).unwrap();
    }
    let helm = |args: &[&str]| {
        let mut cmd = env.helm.command();
        cmd.env("HELM_DATA_HOME", data.path())
            .env("BGSLOT_BIN", env!("CARGO_BIN_EXE_bgslot"))
            .env_remove("HELM_NAMESPACE")
            .args(args);
        Run::from(cmd.output().unwrap())
    };
    helm(&["plugin", "install", plugin.to_str().unwrap()]).must_succeed();
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
    .must_succeed();
    let status = helm(&[
        "bgslot",
        "--namespace",
        &env.ns,
        "status",
        "web",
        "-o",
        "json",
    ])
    .must_succeed()
    .json();
    assert_eq!(status["namespace"], env.ns.as_str());
    assert_eq!(
        status["helm_version"].as_str().unwrap().chars().nth(1),
        char::from_digit(major, 10),
        "HELM_BIN is the helm that ran the plugin"
    );
    // The install hook wrote the manual pages, and they render without a warning.
    let plugin_dir = helm(&["env", "HELM_PLUGINS"])
        .must_succeed()
        .stdout
        .trim()
        .to_string();
    let page = std::path::Path::new(&plugin_dir).join("bgslot/man/man1/bgslot-deploy.1");
    let rendered = std::process::Command::new("groff")
        .args(["-man", "-Tutf8", "-P-bcou", "-ww"])
        .arg(&page)
        .output()
        .unwrap_or_else(|e| panic!("groff runs (testenv/prepare.sh installs groff-base): {e}"));
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(
        rendered.status.success() && rendered.stderr.is_empty(),
        "{page:?} renders cleanly: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    assert!(text.contains("--slot-values"), "{text}");
    // A refusal keeps its exit code through helm.
    helm(&["bgslot", "-n", &env.ns, "swap", "web"])
        .must_exit(3)
        .must_say("nothing is staged");
    env.done().await;
}
