//! What bgslot does for an application with more than one container image: per-slot values that
//! a new version does not inherit from its slot's previous occupant, migrations that gate the
//! swap, an autoscaled production matched before the swap, and extra Services that move with it.
//! On the real control plane, with Helm 3 and Helm 4.

use crate::common;

use common::cli::Env;
use k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

with_both_helms!(
    a_new_version_never_inherits_its_slot_s_old_values,
    migrations_gate_the_swap_and_rerun_on_replace,
    an_autoscaled_production_is_matched_before_the_swap,
    extra_services_move_with_the_swap,
);

/// Writes `text` to a file in `dir` and returns its path.
fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// The main container's environment of a Deployment, as NAME=value (or NAME=<from>).
async fn env_of(env: &Env, deployment: &str) -> Vec<String> {
    let d = env.deployments().get(deployment).await.unwrap();
    let container = d.spec.unwrap().template.spec.unwrap().containers[0].clone();
    container
        .env
        .unwrap_or_default()
        .into_iter()
        .map(|e| format!("{}={}", e.name, e.value.unwrap_or_else(|| "<from>".into())))
        .collect()
}

async fn a_new_version_never_inherits_its_slot_s_old_values(major: u32) {
    let env = Env::new(major, "slotvalues").await;
    let dir = tempfile::tempdir().unwrap();
    let v1 = file(
        &dir,
        "v1.yaml",
        "env:\n  FEATURE_OLD: \"on\"\ncommand: [\"/app/v1\"]\n",
    );
    env.bgslot(&[
        "deploy",
        "web",
        "--tag",
        "v1",
        "--replicas",
        "2",
        "--slot-values",
        &v1,
    ])
    .await
    .must_succeed();
    assert_eq!(env_of(&env, "web-blue").await, ["FEATURE_OLD=on"]);

    // v2 into green with values of its own, given for "whichever slot is idle".
    let v2 = file(&dir, "v2.yaml", "env:\n  FEATURE_NEW: \"on\"\n");
    env.bgslot(&[
        "deploy",
        "web",
        "--tag",
        "v2",
        "--slot-values",
        &v2,
        "--slot-set",
        "env.LEVEL=debug",
    ])
    .await
    .must_succeed();
    assert_eq!(
        env_of(&env, "web-green").await,
        ["FEATURE_NEW=on", "LEVEL=debug"]
    );
    let blue_before = env.deployments().get("web-blue").await.unwrap();
    env.bgslot(&["swap", "web", "--expect-tag", "v2"])
        .await
        .must_succeed();
    env.bgslot(&["clean", "web", "--min-age", "0s"])
        .await
        .must_succeed();

    // v3 goes to blue, where v1 lived with FEATURE_OLD and its own command: none of it remains.
    let plan = env
        .bgslot(&["deploy", "web", "--tag", "v3", "--dry-run"])
        .await
        .must_succeed()
        .must_say("blue.env: {\"FEATURE_OLD\":\"on\"} -> {}")
        .must_say("blue.command: [\"/app/v1\"] -> (unset)");
    assert!(
        plan.stdout.contains("--reset-then-reuse-values"),
        "{plan:?}"
    );
    env.bgslot(&["deploy", "web", "--tag", "v3"])
        .await
        .must_succeed();
    assert_eq!(env_of(&env, "web-blue").await, Vec::<String>::new());
    let blue = env.deployments().get("web-blue").await.unwrap();
    let container = &blue
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    assert_eq!(container.command, None, "the old command is gone");
    assert_ne!(
        blue.metadata.uid, blue_before.metadata.uid,
        "clean removed v1's Deployment"
    );
    let values = env.helm_json(&["get", "values", "web"]);
    assert_eq!(values["blue"].get("env"), None, "{values}");
    assert_eq!(
        values["green"]["env"],
        json!({"FEATURE_NEW": "on", "LEVEL": "debug"})
    );
    // Production (green) was not touched by any of it.
    assert_eq!(
        env_of(&env, "web-green").await,
        ["FEATURE_NEW=on", "LEVEL=debug"]
    );
    env.done().await;
}

async fn migrations_gate_the_swap_and_rerun_on_replace(major: u32) {
    let env = Env::new(major, "migrations").await;
    let dir = tempfile::tempdir().unwrap();
    let values = file(
        &dir,
        "migrate.yaml",
        "migrations:\n  enabled: true\n  command: [\"/app/migrate\"]\n  backoffLimit: 0\n",
    );
    let install = env
        .bgslot(&[
            "deploy",
            "web",
            "--tag",
            "v1",
            "--replicas",
            "2",
            "-f",
            &values,
        ])
        .await
        .must_succeed();
    install
        .must_say("blue: migration web-blue-migrate-")
        .must_say("succeeded");

    // The simulated kubelet fails a pod whose image tag names the fault: the migration fails.
    let failed = env
        .bgslot(&[
            "deploy",
            "web",
            "--tag",
            "v2-crash-loop",
            "--timeout",
            "60s",
        ])
        .await
        .must_exit(1)
        .must_say("the migration Job web-green-migrate-")
        .must_say("of the green slot failed")
        .must_say("production is unchanged");
    assert!(
        failed.stderr.contains("pod web-green-migrate-"),
        "names the pod: {failed:?}"
    );
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), &env.ns);
    let green_jobs =
        ListParams::default().labels("bgslot/slot=green,app.kubernetes.io/component=migration");
    let first = jobs.list(&green_jobs).await.unwrap().items;
    assert_eq!(first.len(), 1);
    let status = env
        .bgslot(&["status", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert_eq!(
        status["slots"][1]["migration"]["phase"], "failed",
        "{status}"
    );
    let before = env.fingerprint("web").await;
    env.bgslot(&["swap", "web"])
        .await
        .must_exit(3)
        .must_say("the green slot's migration Job web-green-migrate-")
        .must_say("has not succeeded (failed");
    assert_eq!(env.fingerprint("web").await, before);

    // --replace with the same version deletes the failed Job, so the write runs it again.
    env.bgslot(&[
        "deploy",
        "web",
        "--tag",
        "v2-crash-loop",
        "--replace",
        "--timeout",
        "60s",
    ])
    .await
    .must_exit(1)
    .must_say("deleting the failed migration Job");
    let second = jobs.list(&green_jobs).await.unwrap().items;
    assert_eq!(second.len(), 1);
    assert_eq!(
        second[0].metadata.name, first[0].metadata.name,
        "same version, same Job"
    );
    assert_ne!(second[0].metadata.uid, first[0].metadata.uid, "a new run");

    // A working version: its own Job succeeds, the swap is allowed, and the swap reruns nothing.
    env.bgslot(&["deploy", "web", "--tag", "v3", "--replace"])
        .await
        .must_succeed()
        .must_say("succeeded");
    let third = jobs.list(&green_jobs).await.unwrap().items;
    env.bgslot(&["swap", "web", "--expect-tag", "v3"])
        .await
        .must_succeed();
    assert_eq!(
        jobs.list(&green_jobs)
            .await
            .unwrap()
            .items
            .iter()
            .map(|j| &j.metadata.uid)
            .collect::<Vec<_>>(),
        third.iter().map(|j| &j.metadata.uid).collect::<Vec<_>>(),
        "a flip creates no Job"
    );
    // Cleaning a slot removes its Job with it.
    env.bgslot(&["clean", "web", "--min-age", "0s"])
        .await
        .must_succeed();
    let blue_jobs =
        ListParams::default().labels("bgslot/slot=blue,app.kubernetes.io/component=migration");
    common::eventually("blue's migration Job is gone with blue", || async {
        jobs.list(&blue_jobs).await.unwrap().items.is_empty()
    })
    .await;
    env.done().await;
}

async fn an_autoscaled_production_is_matched_before_the_swap(major: u32) {
    let env = Env::new(major, "hpa").await;
    let dir = tempfile::tempdir().unwrap();
    let values = file(
        &dir,
        "hpa.yaml",
        "autoscaling:\n  enabled: true\n  minReplicas: 1\n  maxReplicas: 6\n",
    );
    env.bgslot(&["deploy", "web", "--tag", "v1", "-f", &values])
        .await
        .must_succeed();
    // An HPA grew production to 4: it does so through the scale subresource.
    let scale = json!({"spec": {"replicas": 4}});
    env.deployments()
        .patch_scale("web-blue", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .unwrap();
    common::eventually("production runs 4 pods", || async {
        let d = env.deployments().get("web-blue").await.unwrap();
        d.status.and_then(|s| s.available_replicas) == Some(4)
    })
    .await;

    let staged = env
        .bgslot(&["deploy", "web", "--tag", "v2", "-o", "json"])
        .await
        .must_succeed()
        .must_say("scaling web-green to 4 replicas");
    let staged = staged.json();
    assert_eq!(
        (staged["ready"].as_i64(), staged["desired"].as_i64()),
        (Some(4), Some(4))
    );
    let values = env.helm_json(&["get", "values", "web"]);
    assert_eq!(
        values["green"].get("replicaCount"),
        None,
        "helm does not own replicas: {values}"
    );
    env.bgslot(&["swap", "web", "--expect-tag", "v2"])
        .await
        .must_succeed();
    // The helm write of the swap left the HPA's replicas alone.
    let green = env.deployments().get("web-green").await.unwrap();
    assert_eq!(green.spec.unwrap().replicas, Some(4));
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(env.client.clone(), &env.ns);
    let hpa = hpas.get("web-green").await.unwrap();
    assert_eq!(
        hpa.spec.unwrap().scale_target_ref.name,
        "web-green",
        "the HPA manages green"
    );
    env.done().await;
}

async fn extra_services_move_with_the_swap(major: u32) {
    let env = Env::new(major, "extrasvc").await;
    let dir = tempfile::tempdir().unwrap();
    let values = file(
        &dir,
        "admin.yaml",
        "extraPorts:\n  - {name: admin, containerPort: 9000}\nextraServices:\n  admin:\n    ports:\n      - {name: admin, port: 9000, targetPort: admin}\n",
    );
    env.bgslot(&[
        "deploy",
        "web",
        "--tag",
        "v1",
        "--replicas",
        "2",
        "-f",
        &values,
    ])
    .await
    .must_succeed();
    env.bgslot(&["deploy", "web", "--tag", "v2"])
        .await
        .must_succeed();
    let status = env
        .bgslot(&["status", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    let services: Vec<(String, String, String)> = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["service"].as_str().unwrap().to_string(),
                s["selects"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = |v: &[(&str, &str, &str)]| {
        v.iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        services,
        expect(&[
            ("web", "main", "blue"),
            ("web-stage", "main", "green"),
            ("web-admin", "admin", "blue"),
            ("web-admin-stage", "admin", "green"),
        ])
    );

    // A hand-edited extra Service is drift like the main one.
    let svc: Api<Service> = Api::namespaced(env.client.clone(), &env.ns);
    let point = |slot: &'static str| {
        let svc = svc.clone();
        async move {
            svc.patch(
                "web-admin-stage",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"selector": {"bgslot/slot": slot}}})),
            )
            .await
            .unwrap();
        }
    };
    point("blue").await;
    env.bgslot(&["swap", "web"])
        .await
        .must_exit(3)
        .must_say("Service web-admin-stage (stage) selects blue but the values say green");
    point("green").await;
    // Back as the values say, but the hand edit still owns the field: Helm 4 (server-side apply)
    // could not move it, so bgslot says so before writing; --force takes it back. Helm 3 merges
    // client-side and takes it back by itself.
    let swap = ["swap", "web", "--expect-tag", "v2"];
    if major >= 4 {
        let before = env.fingerprint("web").await;
        env.bgslot(&swap)
            .await
            .must_exit(3)
            .must_say("the slot selector of Service web-admin-stage was last written by");
        assert_eq!(env.fingerprint("web").await, before);
        env.bgslot(&["swap", "web", "--expect-tag", "v2", "--force"])
            .await
            .must_succeed();
    } else {
        env.bgslot(&swap).await.must_succeed();
    }
    let status = env
        .bgslot(&["status", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert_eq!(
        status["drift"],
        json!([]),
        "the swap took the field back: {status}"
    );

    // The swap moved every production Service, and confirmed it did.
    let selects = |name: &'static str| {
        let svc = svc.clone();
        async move {
            svc.get(name).await.unwrap().spec.unwrap().selector.unwrap()["bgslot/slot"].clone()
        }
    };
    assert_eq!(
        (
            selects("web").await,
            selects("web-admin").await,
            selects("web-admin-stage").await
        ),
        ("green".to_string(), "green".to_string(), "blue".to_string())
    );
    env.await_endpoints("web-admin", "green", 2).await;
    env.done().await;
}
