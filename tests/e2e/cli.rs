//! End-to-end tests of the bgslot binary on a real control plane, each with Helm 3 and Helm 4.
//!
//! Every test works in its own namespace, so they run in parallel. "Nothing changed" is checked
//! against the helm revision list, the Services' live selectors and the Deployments' generations.

use crate::common;

use common::cli::Env;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

with_both_helms!(
    full_cycle_alternates_slots,
    rollback_returns_to_the_previous_slot,
    refusals_change_nothing,
    never_ready_deploy_times_out_and_leaves_production,
);

async fn full_cycle_alternates_slots(major: u32) {
    let env = Env::new(major, "cycle").await;
    let r = env
        .bgslot(&[
            "deploy",
            "web",
            "--image",
            "registry.local:5000/acme/web:v1",
            "--replicas",
            "2",
            "-o",
            "json",
        ])
        .await
        .must_succeed();
    let j = r.json();
    assert_eq!(
        (
            j["operation"].as_str(),
            j["slot"].as_str(),
            j["ready"].as_i64()
        ),
        (Some("install"), Some("blue"), Some(2))
    );
    env.await_endpoints("web", "blue", 2).await;

    let mut production = "blue";
    for (round, tag) in ["v2", "v3"].iter().enumerate() {
        let stage = if production == "blue" {
            "green"
        } else {
            "blue"
        };
        let r = env
            .bgslot(&["deploy", "web", "--tag", tag])
            .await
            .must_succeed()
            .must_say(&format!("{stage}: 2/2 ready"));
        assert!(
            r.stdout
                .contains(&format!("next: bgslot swap web --expect-tag {tag}")),
            "{r:?}"
        );
        env.await_endpoints("web-stage", stage, 2).await;
        env.await_endpoints("web", production, 2).await;

        let status = env
            .bgslot(&["status", "web", "-o", "json"])
            .await
            .must_succeed()
            .json();
        assert_eq!(status["production_slot"], production);
        assert_eq!(status["stage_slot"], stage);
        let staged = status["slots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["slot"] == stage)
            .unwrap()
            .clone();
        // --tag keeps the repository production runs.
        assert_eq!(
            staged["image"],
            format!("registry.local:5000/acme/web:{tag}")
        );
        assert_eq!(
            (
                staged["ready"].as_i64(),
                staged["fully_available"].as_bool()
            ),
            (Some(2), Some(true))
        );
        assert_eq!(status["drift"], json!([]));

        let before = env.fingerprint("web").await;
        let swapped = env
            .bgslot(&["swap", "web", "--expect-tag", tag, "-o", "json"])
            .await
            .must_succeed()
            .json();
        assert_eq!(
            (swapped["from"].as_str(), swapped["to"].as_str()),
            (Some(production), Some(stage))
        );
        let after = env.fingerprint("web").await;
        assert_eq!(
            after.revision,
            before.revision + 1,
            "a swap is exactly one helm write"
        );
        assert_eq!(
            after.deployments, before.deployments,
            "a swap restarts no pods"
        );
        assert_eq!(after.selectors["web"], stage);
        env.await_endpoints("web", stage, 2).await;
        env.await_endpoints("web-stage", production, 2).await;

        env.bgslot(&["clean", "web"])
            .await
            .must_exit(3)
            .must_say("drain delay is 30s");
        assert_eq!(env.fingerprint("web").await, after);
        let cleaned = env
            .bgslot(&["clean", "web", "--min-age", "0s", "-o", "json"])
            .await
            .must_succeed()
            .json();
        assert_eq!(
            (cleaned["slot"].as_str(), cleaned["changed"].as_bool()),
            (Some(production), Some(true))
        );
        let deps = env.fingerprint("web").await.deployments;
        assert_eq!(
            deps.keys().cloned().collect::<Vec<_>>(),
            [format!("web-{stage}")],
            "round {round}"
        );
        production = stage;
    }
    assert_eq!(
        production, "blue",
        "two swaps bring production back to blue"
    );

    let history = env
        .bgslot(&["history", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    let descriptions: Vec<&str> = history["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["description"].as_str().unwrap())
        .collect();
    assert_eq!(
        descriptions,
        [
            "bgslot install blue v1",
            "bgslot deploy green v2",
            "bgslot swap blue->green",
            "bgslot clean blue",
            "bgslot deploy blue v3",
            "bgslot swap green->blue",
            "bgslot clean green"
        ]
    );
    let text = env.bgslot(&["history", "web"]).await.must_succeed();
    assert!(
        text.stdout
            .contains("bgslot swap: production blue -> green"),
        "{text:?}"
    );
    env.done().await;
}

async fn rollback_returns_to_the_previous_slot(major: u32) {
    let env = Env::new(major, "rollback").await;
    env.bgslot(&["deploy", "web", "--tag", "v1", "--replicas", "2"])
        .await
        .must_succeed();
    env.bgslot(&["deploy", "web", "--tag", "v2"])
        .await
        .must_succeed();
    env.bgslot(&["swap", "web"]).await.must_succeed();
    env.await_endpoints("web", "green", 2).await;
    let r = env
        .bgslot(&["rollback", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert_eq!(
        (
            r["operation"].as_str(),
            r["from"].as_str(),
            r["to"].as_str()
        ),
        (Some("rollback"), Some("green"), Some("blue"))
    );
    env.await_endpoints("web", "blue", 2).await;
    let status = env
        .bgslot(&["status", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert_eq!(status["production_slot"], "blue");
    assert_eq!(status["description"], "bgslot rollback green->blue");

    // Once the other slot is cleaned there is nothing to roll back to: say how helm can. The
    // revision to restore is the one with production on green (3, the swap), not the one before
    // the swap (2, production on blue, which is where production already is).
    env.bgslot(&["clean", "web", "--min-age", "0s"])
        .await
        .must_succeed();
    let before = env.fingerprint("web").await;
    env.bgslot(&["rollback", "web"])
        .await
        .must_exit(3)
        .must_say("previous slot green is gone")
        .must_say("`helm rollback web 3` restores revision 3");
    assert_eq!(env.fingerprint("web").await, before);
    // And the hint is right: that helm rollback brings production back to green.
    env.helm.run(&["rollback", "web", "3", "-n", &env.ns]);
    env.await_endpoints("web", "green", 2).await;
    let status = env
        .bgslot(&["status", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert_eq!(
        (
            status["production_slot"].as_str(),
            status["description"].as_str()
        ),
        (Some("green"), Some("Rollback to 3"))
    );
    env.done().await;
}

async fn refusals_change_nothing(major: u32) {
    let env = Env::new(major, "refuse").await;
    env.bgslot(&["deploy", "web", "--tag", "v1", "--replicas", "2"])
        .await
        .must_succeed();

    let before = env.fingerprint("web").await;
    env.bgslot(&["swap", "web"])
        .await
        .must_exit(3)
        .must_say("nothing is staged");
    env.bgslot(&["rollback", "web"])
        .await
        .must_exit(3)
        .must_say("previous slot green is gone");
    assert_eq!(env.fingerprint("web").await, before);

    env.bgslot(&["deploy", "web", "--tag", "v2"])
        .await
        .must_succeed();
    let before = env.fingerprint("web").await;
    env.bgslot(&["deploy", "web", "--tag", "v3"])
        .await
        .must_exit(3)
        .must_say("already runs a staged version (nginx:v2)");
    env.bgslot(&["swap", "web", "--expect-tag", "v9"])
        .await
        .must_exit(3)
        .must_say("runs tag v2 but --expect-tag is v9");
    let json = env
        .bgslot(&["swap", "web", "--expect-tag", "v9", "-o", "json"])
        .await
        .must_exit(3)
        .json();
    assert_eq!(
        (json["kind"].as_str(), json["exit_code"].as_i64()),
        (Some("refused"), Some(3))
    );
    assert!(
        json["hint"].as_str().unwrap().contains("--replace"),
        "{json}"
    );
    env.bgslot(&["clean", "web", "--min-age", "1h"])
        .await
        .must_exit(3)
        .must_say("drain delay is 3600s");
    assert_eq!(env.fingerprint("web").await, before);

    // --replace stages a new version over the old staged one.
    env.bgslot(&["deploy", "web", "--tag", "v3", "--replace"])
        .await
        .must_succeed();
    let status = env
        .bgslot(&["status", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert_eq!(status["slots"][1]["image"], "nginx:v3");

    // A hand-edited Service selector is drift: deploy and swap refuse unless --force (a write
    // would put the selector back: Helm 3 merges it back, Helm 4 conflicts with the editor).
    let services: Api<Service> = Api::namespaced(env.client.clone(), &env.ns);
    let hand_edit = || async {
        services
            .patch(
                "web-stage",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"selector": {"bgslot/slot": "blue"}}})),
            )
            .await
            .unwrap();
    };
    hand_edit().await;
    let before = env.fingerprint("web").await;
    env.bgslot(&["deploy", "web", "--tag", "v4", "--replace"])
        .await
        .must_exit(3)
        .must_say("Service web-stage (stage) selects blue but the values say green")
        .must_say("--force");
    assert_eq!(env.fingerprint("web").await, before);
    env.bgslot(&["deploy", "web", "--tag", "v4", "--replace", "--force"])
        .await
        .must_succeed();
    env.await_endpoints("web-stage", "green", 2).await;
    let status = env
        .bgslot(&["status", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert_eq!(
        status["drift"],
        json!([]),
        "deploy --force took the selector back"
    );
    assert_eq!(status["slots"][1]["image"], "nginx:v4");

    hand_edit().await;
    let before = env.fingerprint("web").await;
    env.bgslot(&["swap", "web"])
        .await
        .must_exit(3)
        .must_say("Service web-stage (stage) selects blue but the values say green");
    let status = env
        .bgslot(&["status", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert_eq!(status["drift"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(env.fingerprint("web").await, before);
    env.bgslot(&["swap", "web", "--force"]).await.must_succeed();
    env.await_endpoints("web", "green", 2).await;
    env.await_endpoints("web-stage", "blue", 2).await;
    let status = env
        .bgslot(&["status", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    // The values now want web-stage on blue, where the hand edit put it: the selectors agree,
    // but the edit still co-owns the field, which only Helm 4 (server-side apply) cares about.
    let owned = if major >= 4 {
        json!(["the slot selector of Service web-stage was last written by unknown, not helm"])
    } else {
        json!([])
    };
    assert_eq!(status["drift"], owned);
    env.done().await;
}

async fn never_ready_deploy_times_out_and_leaves_production(major: u32) {
    let env = Env::new(major, "neverready").await;
    env.bgslot(&["deploy", "web", "--tag", "v1", "--replicas", "2"])
        .await
        .must_succeed();
    env.await_endpoints("web", "blue", 2).await;
    let r = env
        .bgslot(&[
            "deploy",
            "web",
            "--tag",
            "v2-never-ready",
            "--timeout",
            "8s",
        ])
        .await
        .must_exit(1);
    let r = r
        .must_say("timed out after 8s waiting for the green slot")
        .must_say("readiness probe failing")
        .must_say("production is unchanged");
    assert!(r.stderr.contains("pod web-green-"), "names the pods: {r:?}");
    let status = env
        .bgslot(&["status", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert_eq!(status["production_slot"], "blue");
    env.await_endpoints("web", "blue", 2).await;
    // The broken version cannot be swapped in.
    let before = env.fingerprint("web").await;
    env.bgslot(&["swap", "web"])
        .await
        .must_exit(3)
        .must_say("green slot is not fully available (0/2 ready");
    assert_eq!(env.fingerprint("web").await, before);

    let r = env
        .bgslot(&[
            "deploy",
            "web",
            "--tag",
            "v3-image-pull",
            "--replace",
            "--timeout",
            "15s",
        ])
        .await
        .must_exit(1);
    r.must_say("ImagePullBackOff");
    let r = env
        .bgslot(&[
            "deploy",
            "web",
            "--tag",
            "v4-crash-loop",
            "--replace",
            "--timeout",
            "6s",
        ])
        .await
        .must_exit(1);
    r.must_say("CrashLoopBackOff");
    env.await_endpoints("web", "blue", 2).await;
    env.done().await;
}

/// Every file under `dir`, relative path -> bytes.
fn tree(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(
        root: &std::path::Path,
        dir: &std::path::Path,
        out: &mut std::collections::BTreeMap<String, Vec<u8>>,
    ) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[tokio::test]
async fn chart_export_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("bgslot");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bgslot"))
        .args(["chart", "export", target.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported = tree(&target);
    assert_eq!(
        exported,
        tree(&common::chart_dir()),
        "the exported chart differs from chart/"
    );
    assert!(exported.contains_key("Chart.yaml") && exported.contains_key("values.schema.json"));
    // A second export into the same, now non-empty directory is refused and changes nothing.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_bgslot"))
        .args(["chart", "export", target.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"));
    assert_eq!(tree(&target), exported);
}

with_both_helms!(a_chart_path_that_does_not_exist_changes_nothing);

/// A `--chart` naming a local path that is not there is a usage error for every command, found
/// before anything connects or runs helm: `recover --force` used to ignore it (and write), `status`
/// to read on, `deploy` to hand it to helm.
async fn a_chart_path_that_does_not_exist_changes_nothing(major: u32) {
    let env = Env::new(major, "chartpath").await;
    env.bgslot(&["deploy", "web", "--tag", "v1", "--replicas", "1"])
        .await
        .must_succeed();
    let history_len = || env.helm_json(&["history", "web"]).as_array().unwrap().len();
    let (before, len_before) = (env.fingerprint("web").await, history_len());
    let says = |path: &str| {
        format!("error: --chart {path}: no such directory or chart archive: pass a chart directory, a .tgz, REPO/NAME or oci://...")
    };
    env.bgslot(&["recover", "web", "--force", "--chart", "/nonexistent/chart"])
        .await
        .must_exit(2)
        .must_say(&says("/nonexistent/chart"));
    env.bgslot(&["status", "web", "--chart", "./no-such-chart"])
        .await
        .must_exit(2)
        .must_say(&says("./no-such-chart"));
    let json = env
        .bgslot(&[
            "deploy", "web", "--tag", "v1", "--chart", "/x/chart", "-o", "json",
        ])
        .await
        .must_exit(2)
        .json();
    assert_eq!(
        (
            json["kind"].as_str(),
            json["exit_code"].as_i64(),
            json["error"].as_str()
        ),
        (
            Some("usage"),
            Some(2),
            Some(says("/x/chart").trim_start_matches("error: "))
        ),
        "{json}"
    );
    assert_eq!(history_len(), len_before, "no helm write");
    assert_eq!(env.fingerprint("web").await, before);
    env.done().await;
}

with_both_helms!(a_new_chart_version_applies_its_defaults);

async fn a_new_chart_version_applies_its_defaults(major: u32) {
    let env = Env::new(major, "chartup").await;
    env.bgslot(&["deploy", "web", "--tag", "v1", "--replicas", "1"])
        .await
        .must_succeed();
    // The same chart, one version on, with a changed default.
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("bgslot");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bgslot"))
        .args(["chart", "export", chart.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let meta = std::fs::read_to_string(chart.join("Chart.yaml")).unwrap();
    let bumped = meta
        .lines()
        .map(|l| {
            if l.starts_with("version:") {
                "version: 9.9.9"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(chart.join("Chart.yaml"), bumped + "\n").unwrap();
    let values = std::fs::read_to_string(chart.join("values.yaml")).unwrap();
    assert!(
        values.contains("preStopSleepSeconds: 5"),
        "the default this test changes"
    );
    std::fs::write(
        chart.join("values.yaml"),
        values.replace("preStopSleepSeconds: 5", "preStopSleepSeconds: 7"),
    )
    .unwrap();

    let run = env
        .bgslot(&[
            "--chart",
            chart.to_str().unwrap(),
            "-v",
            "deploy",
            "web",
            "--tag",
            "v2",
        ])
        .await
        .must_succeed();
    assert!(run.stderr.contains("--reset-then-reuse-values"), "{run:?}");
    let status = env
        .bgslot(&["status", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert_eq!(status["chart"], "bgslot-9.9.9");
    let green = env.deployments().get("web-green").await.unwrap();
    let pre_stop =
        serde_json::to_value(&green.spec.unwrap().template.spec.unwrap().containers[0].lifecycle)
            .unwrap();
    assert_eq!(
        pre_stop["preStop"]["exec"]["command"],
        json!(["sleep", "7"]),
        "the new default applies"
    );
    // Values set earlier survive the reset: blue keeps its tag and stays production.
    assert_eq!(status["production_slot"], "blue");
    assert_eq!(status["slots"][0]["image"], "nginx:v1");
    // The same chart again: plain --reuse-values.
    let run = env
        .bgslot(&["--chart", chart.to_str().unwrap(), "-v", "swap", "web"])
        .await
        .must_succeed();
    assert!(
        run.stderr.contains("--reuse-values") && !run.stderr.contains("--reset-then-reuse-values"),
        "{run:?}"
    );
    env.done().await;
}

with_both_helms!(release_verifies_stage_then_production);

async fn release_verifies_stage_then_production(major: u32) {
    let env = Env::new(major, "release").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("verify.log");
    let verify = |fail_on: &str| {
        format!(
            "sh -c 'echo verifying $BGSLOT_URL; echo \"$BGSLOT_TARGET $BGSLOT_SLOT $BGSLOT_TAG $BGSLOT_SERVICE\" >> {}; test -n \"$BGSLOT_URL\" && test \"$BGSLOT_TARGET\" != {fail_on}'",
            log.display()
        )
    };
    // First release installs; verification runs against production.
    env.bgslot(&[
        "release",
        "web",
        "--tag",
        "v1",
        "--replicas",
        "2",
        "--verify-cmd",
        &verify("none"),
    ])
    .await
    .must_succeed();
    // A full release: deploy, verify stage, swap, verify production, clean after the drain delay.
    let r = env
        .bgslot(&[
            "release",
            "web",
            "--tag",
            "v2",
            "--verify-cmd",
            &verify("none"),
            "--clean",
            "--min-age",
            "1s",
            "-o",
            "json",
        ])
        .await
        .must_succeed()
        .json();
    let ops: Vec<&str> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["deploy", "swap", "clean"]);
    env.await_endpoints("web", "green", 2).await;
    assert_eq!(
        env.fingerprint("web").await.deployments.len(),
        1,
        "the old slot was cleaned"
    );

    // Stage verification fails: production is untouched and the new version stays staged.
    let before = env.fingerprint("web").await;
    env.bgslot(&[
        "release",
        "web",
        "--tag",
        "v3",
        "--verify-cmd",
        &verify("stage"),
    ])
    .await
    .must_exit(1)
    .must_say("production is unchanged");
    let after = env.fingerprint("web").await;
    assert_eq!(after.selectors, before.selectors);
    env.bgslot(&["clean", "web", "--force"])
        .await
        .must_succeed();

    // Production verification fails after the swap: bgslot swaps back.
    env.bgslot(&[
        "release",
        "web",
        "--tag",
        "v4",
        "--verify-cmd",
        &verify("production"),
    ])
    .await
    .must_exit(1)
    .must_say("swapped back to green");
    env.await_endpoints("web", "green", 2).await;
    let status = env
        .bgslot(&["status", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert_eq!(status["production_slot"], "green");
    assert_eq!(status["description"], "bgslot rollback blue->green");

    let calls = std::fs::read_to_string(&log).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(
        calls,
        [
            "production blue v1 web",
            "stage green v2 web-stage",
            "production green v2 web",
            "stage blue v3 web-stage",
            "stage blue v4 web-stage",
            "production blue v4 web",
        ]
    );
    env.done().await;
}

with_both_helms!(production_never_loses_its_endpoints);

/// Zero downtime as the Service sees it: from the install on, through deploy, swap and clean
/// twice over, every state of the production Endpoints has ready addresses, all of one slot.
async fn production_never_loses_its_endpoints(major: u32) {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Endpoints;
    use kube::runtime::{watcher, WatchStreamExt};

    let env = Env::new(major, "zerodown").await;
    env.bgslot(&["deploy", "web", "--tag", "v1", "--replicas", "2"])
        .await
        .must_succeed();
    env.await_endpoints("web", "blue", 2).await;

    let api: Api<Endpoints> = Api::namespaced(env.client.clone(), &env.ns);
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let recorder = tokio::spawn(async move {
        let mut states: Vec<Vec<String>> = Vec::new();
        let stream =
            watcher(api, watcher::Config::default().fields("metadata.name=web")).applied_objects();
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = &mut stopped => return states,
                ep = stream.next() => {
                    let Some(Ok(ep)) = ep else { continue };
                    let ready: Vec<String> = ep.subsets.unwrap_or_default().into_iter()
                        .flat_map(|s| s.addresses.unwrap_or_default())
                        .filter_map(|a| a.target_ref.and_then(|r| r.name))
                        .collect();
                    states.push(ready);
                }
            }
        }
    });
    for (tag, from, to) in [("v2", "blue", "green"), ("v3", "green", "blue")] {
        env.bgslot(&["deploy", "web", "--tag", tag])
            .await
            .must_succeed();
        env.bgslot(&["swap", "web", "--expect-tag", tag])
            .await
            .must_succeed();
        env.await_endpoints("web", to, 2).await;
        env.bgslot(&["clean", "web", "--min-age", "0s"])
            .await
            .must_succeed();
        common::eventually(&format!("the {from} pods are gone"), || async {
            !env.fingerprint("web")
                .await
                .deployments
                .contains_key(&format!("web-{from}"))
        })
        .await;
    }
    env.await_endpoints("web", "blue", 2).await;
    stop.send(()).unwrap();
    let states = recorder.await.unwrap();
    assert!(states.len() >= 3, "the watch saw the swaps: {states:?}");
    for state in &states {
        let slots: std::collections::BTreeSet<&str> = state
            .iter()
            .map(|pod| {
                if pod.starts_with("web-blue-") {
                    "blue"
                } else {
                    "green"
                }
            })
            .collect();
        assert!(
            !state.is_empty(),
            "production had no ready endpoint: {states:?}"
        );
        assert_eq!(
            slots.len(),
            1,
            "production routed to both slots at once: {states:?}"
        );
    }
    env.done().await;
}

with_both_helms!(create_namespace_on_first_deploy);

async fn create_namespace_on_first_deploy(major: u32) {
    let env = Env::new(major, "createns").await;
    let fresh = format!("{}-new", env.ns);
    let _cleanup = common::NamespaceGuard(fresh.clone());
    let args = [
        "-n",
        fresh.as_str(),
        "deploy",
        "web",
        "--tag",
        "v1",
        "--replicas",
        "1",
    ];
    env.bgslot(&args)
        .await
        .must_exit(1)
        .must_say(&format!("namespace {fresh} does not exist"));
    let mut with_flag = args.to_vec();
    with_flag.push("--create-namespace");
    env.bgslot(&with_flag)
        .await
        .must_succeed()
        .must_say(&format!("created namespace {fresh}"));
    env.bgslot(&["-n", &fresh, "status", "web"])
        .await
        .must_succeed();
    env.done().await;
}
