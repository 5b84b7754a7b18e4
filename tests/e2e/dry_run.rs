//! `--dry-run` on every mutating command, on the real control plane with Helm 3 and Helm 4: it
//! observes and decides for real (a refusal still exits 3), prints the plan, and changes nothing:
//! not the helm history, not any object, and not the release lock.

use crate::common;

use common::cli::Env;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;

with_both_helms!(dry_runs_change_nothing_and_take_no_lock);

async fn dry_runs_change_nothing_and_take_no_lock(major: u32) {
    let env = Env::new(major, "dryrun").await;

    // Before the release exists: the install is planned, nothing is installed.
    let plan = env
        .bgslot(&[
            "deploy",
            "web",
            "--tag",
            "v1",
            "--replicas",
            "2",
            "--dry-run",
            "-o",
            "json",
        ])
        .await
        .must_succeed()
        .json();
    assert_eq!(plan["steps"][0]["helm"][1], "install", "{plan}");
    assert_eq!(plan["revision"], json!(null));
    env.bgslot(&["status", "web"])
        .await
        .must_exit(1)
        .must_say("release web not found");

    env.bgslot(&["deploy", "web", "--tag", "v1", "--replicas", "2"])
        .await
        .must_succeed();
    env.bgslot(&["deploy", "web", "--tag", "v2"])
        .await
        .must_succeed();
    let before = env.fingerprint("web").await;

    // Someone else holds the release lock: any command that takes it would stop with exit 4.
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    let lease = env
        .hold_lock("web", "someone@elsewhere pid 1 (deploy)")
        .await;
    env.bgslot(&["swap", "web"])
        .await
        .must_exit(4)
        .must_say("someone@elsewhere");

    let swap = env
        .bgslot(&["swap", "web", "--expect-tag", "v2", "--dry-run"])
        .await
        .must_succeed()
        .must_say("dry run: bgslot swap web")
        .must_say("productionSlot: blue -> green")
        .must_say("nothing was changed");
    assert!(
        swap.stdout.contains("--set-string productionSlot=green"),
        "{swap:?}"
    );
    let deploy = env
        .bgslot(&[
            "deploy",
            "web",
            "--tag",
            "v3",
            "--replace",
            "--set",
            "db.password=hunter2",
            "--dry-run",
        ])
        .await
        .must_succeed()
        .must_say("green.image.tag: v2 -> v3");
    assert!(
        !deploy.stdout.contains("hunter2") && deploy.stdout.contains("db.password=***"),
        "secrets are redacted in the plan: {deploy:?}"
    );
    env.bgslot(&["rollback", "web", "--dry-run"])
        .await
        .must_exit(3)
        .must_say("refused to rollback web")
        .must_say("nothing was changed");
    env.bgslot(&["clean", "web", "--force", "--dry-run"])
        .await
        .must_succeed()
        .must_say("green.enabled: true -> false");
    let release = env
        .bgslot(&[
            "release",
            "web",
            "--tag",
            "v3",
            "--replace",
            "--clean",
            "--verify-cmd",
            "true",
            "--dry-run",
            "-o",
            "json",
        ])
        .await
        .must_succeed()
        .json();
    let actions: Vec<&str> = release["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "stage v3 in green",
            "verify against stage: true",
            "swap: production blue -> green",
            "verify against production (on failure: swap back): true",
            "after the drain delay (30s), clean: disable blue",
        ]
    );
    env.bgslot(&["recover", "web", "--dry-run"])
        .await
        .must_succeed()
        .must_say("nothing to recover");
    // A refusal is decided for real.
    env.bgslot(&["deploy", "web", "--tag", "v3", "--dry-run"])
        .await
        .must_exit(3)
        .must_say("already runs a staged version");

    assert_eq!(
        env.fingerprint("web").await,
        before,
        "a dry run changed the release"
    );
    let after = leases.get("bgslot-lock-web").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, lease.metadata.resource_version,
        "a dry run touched the lock"
    );
    env.done().await;
}
