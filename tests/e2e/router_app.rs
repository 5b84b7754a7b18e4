//! A whole app in its own chart, through router mode with Helm 3 and Helm 4: `examples/shop` (a
//! web and a streaming Deployment each behind its own Service, a headless Service, a queue
//! consumer, a nightly CronJob, a pre-install and a pre-upgrade hook Job, a library-chart
//! dependency built at test time). Every step is read back from the cluster: the workers' pods in
//! each slot, each CronJob's `suspend`, the hook Jobs that ran (labelled with the version whose
//! deploy ran them), and both routes asked through the data plane, production and stage, so a route
//! that answered with the wrong version would fail the test.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::cli::{Env, Run};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

with_both_helms!(
    a_whole_app_follows_production_through_every_step,
    each_refusal_of_a_whole_app_changes_nothing,
    a_release_whose_production_check_fails_moves_the_workers_back,
);

/// Copies the directory `from` into the directory `into` (`cp -r`).
fn copy_into(from: &Path, into: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(into)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -r {} {}",
        from.display(),
        into.display()
    );
}

/// `examples/shop` and its library chart copied into `dir`, its dependency built by this
/// test's helm, as a team would (`helm dependency build`).
fn shop_chart(env: &Env, dir: &Path) -> PathBuf {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for chart in ["shop", "shop-common"] {
        copy_into(&examples.join(chart), dir);
    }
    let shop = dir.join("shop");
    let _ = std::fs::remove_dir_all(shop.join("charts"));
    let out = env
        .helm
        .command()
        .args(["dependency", "build"])
        .arg(&shop)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm dependency build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lint = env
        .helm
        .command()
        .args(["lint", "--strict"])
        .arg(&shop)
        .output()
        .unwrap();
    assert!(
        lint.status.success(),
        "helm lint --strict: {}",
        String::from_utf8_lossy(&lint.stdout)
    );
    shop
}

/// The flags that name the app's routes and its worker.
const APP: [&str; 6] = [
    "--service",
    "{release}",
    "--service",
    "{release}-streaming",
    "--worker",
    "{release}-sidekiq",
];

/// The running (not terminating) pods of the worker in `slot`, and its Deployment's replicas.
async fn worker(env: &Env, slot: &str) -> (usize, Option<i32>) {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let selector =
        format!("app.kubernetes.io/instance=shop-{slot},app.kubernetes.io/component=sidekiq");
    let running = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count();
    let replicas = env
        .deployments()
        .get_opt(&format!("shop-{slot}-sidekiq"))
        .await
        .unwrap()
        .and_then(|d| d.spec?.replicas);
    (running, replicas)
}

/// Each slot's nightly CronJob: `Some(suspended)`, or `None` when it does not exist.
async fn suspended(env: &Env) -> BTreeMap<String, Option<bool>> {
    let (api, _) = env.api_of("batch", "CronJob").await;
    let mut out = BTreeMap::new();
    for slot in ["blue", "green"] {
        let found = api.get_opt(&format!("shop-{slot}-nightly")).await.unwrap();
        out.insert(
            slot.to_string(),
            found.map(|c| c.data["spec"]["suspend"].as_bool().unwrap_or(false)),
        );
    }
    out
}

/// The hook Jobs the cluster ran: name -> the version whose deploy ran it last.
async fn hook_jobs(env: &Env) -> BTreeMap<String, String> {
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), &env.ns);
    jobs.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|j| {
            let version = j.metadata.labels?.get("shop.example.com/version")?.clone();
            Some((j.metadata.name?, version))
        })
        .collect()
}

/// What answers a request through `service` of this namespace, as the simulated node's proxy
/// routes it: the version and pod in the app's reply, or the error (a proxy that has not caught
/// up with a new Service yet turns the connection away).
async fn ask(env: &Env, service: &str) -> Value {
    let out = tokio::process::Command::new(common::dataplane::testenv_bin())
        .args(["service-addr", &format!("{}/{service}", env.ns)])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "service-addr {service}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addr = String::from_utf8(out.stdout).unwrap();
    let reply = async {
        let mut stream = tokio::net::TcpStream::connect(addr.trim()).await?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n")
            .await?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    match reply.await {
        Ok(reply) => {
            let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
            serde_json::from_str(body).unwrap_or_else(|_| json!({"error": reply}))
        }
        Err(e) => json!({"error": e.to_string()}),
    }
}

/// Waits until every request through `service` is answered by `version` (the proxy follows an
/// Endpoints change a moment late, as kube-proxy does), and says which pod answered.
async fn answers(env: &Env, service: &str, version: &str) -> String {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let mut replies = Vec::new();
        for _ in 0..3 {
            replies.push(ask(env, service).await);
        }
        if replies.iter().all(|r| r["version"] == version) {
            return replies[2]["pod"].as_str().unwrap().to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{service} does not answer with {version} only: {replies:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Production's routes answer with `production`, the stage's with `stage` (when one is staged),
/// each from the pods of its own Deployment.
async fn routes(env: &Env, production: &str, stage: Option<&str>) {
    let web = answers(env, "shop", production).await;
    let streaming = answers(env, "shop-streaming", production).await;
    assert!(
        !web.contains("streaming") && streaming.contains("-streaming-"),
        "{web} / {streaming}"
    );
    if let Some(stage) = stage {
        answers(env, "shop-stage", stage).await;
        answers(env, "shop-streaming-stage", stage).await;
    }
}

async fn a_whole_app_follows_production_through_every_step(major: u32) {
    let env = Env::new(major, "app").await;
    let dir = tempfile::tempdir().unwrap();
    let chart = shop_chart(&env, dir.path());
    let chart = chart.to_str().unwrap();

    // 1. The first deploy installs blue as production: the install runs db-prepare, not migrate.
    let mut args = vec![
        "deploy",
        "shop",
        "--app-chart",
        chart,
        "--tag",
        "1.27.3",
        "-o",
        "json",
    ];
    args.extend(APP);
    let installed = env.bgslot(&args).await.must_succeed().json();
    assert_eq!(installed["hooks"]["path"], "install", "{installed}");
    assert_eq!(
        installed["hooks"]["runs"],
        json!([{"kind": "Job", "name": "shop-blue-db-prepare", "phases": ["pre-install"]}])
    );
    assert_eq!(
        installed["hooks"]["skipped"][0]["name"],
        "shop-blue-migrate"
    );
    assert_eq!(worker(&env, "blue").await, (2, Some(2)));
    assert_eq!(
        hook_jobs(&env).await,
        BTreeMap::from([("shop-blue-db-prepare".into(), "1.27.3".into())])
    );
    routes(&env, "1.27.3", None).await;

    // 2. The next stages green: its worker at 0 pods and its CronJob suspended from the start.
    env.bgslot(&["deploy", "shop", "--tag", "1.27.4"])
        .await
        .must_succeed();
    assert_eq!(worker(&env, "green").await, (0, Some(0)));
    assert_eq!(worker(&env, "blue").await, (2, Some(2)));
    assert_eq!(
        suspended(&env).await,
        BTreeMap::from([("blue".into(), Some(false)), ("green".into(), Some(true))])
    );
    routes(&env, "1.27.3", Some("1.27.4")).await;
    let status = env
        .bgslot(&["status", "shop", "-o", "json"])
        .await
        .must_succeed()
        .json();
    let services: Vec<&str> = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        services,
        [
            "shop",
            "shop-stage",
            "shop-streaming",
            "shop-streaming-stage"
        ],
        "{status}"
    );

    // 3-5. Swap, rollback, swap: the worker and the CronJob move with both routes each time.
    for (op, production, stage) in [
        ("swap", "green", "blue"),
        ("rollback", "blue", "green"),
        ("swap", "green", "blue"),
    ] {
        let moved = env
            .bgslot(&[op, "shop", "-o", "json"])
            .await
            .must_succeed()
            .json();
        assert_eq!(moved["to"], production, "{moved}");
        assert_eq!(worker(&env, production).await, (2, Some(2)), "{op}");
        assert_eq!(worker(&env, stage).await, (0, Some(0)), "{op}");
        assert_eq!(
            suspended(&env).await,
            BTreeMap::from([(production.into(), Some(false)), (stage.into(), Some(true))]),
            "{op}"
        );
        let (now, before) = if production == "green" {
            ("1.27.4", "1.27.3")
        } else {
            ("1.27.3", "1.27.4")
        };
        routes(&env, now, Some(before)).await;
    }

    // 6. Clean: the old slot's worker and CronJob go with its release.
    env.bgslot(&["clean", "shop", "--min-age", "0s"])
        .await
        .must_succeed();
    assert_eq!(worker(&env, "blue").await, (0, None));
    assert_eq!(suspended(&env).await["blue"], None);

    // 7. A deploy after clean installs blue again: its install hook runs again, and
    // the worker runs the stage's replicas asked for.
    let staged = env
        .bgslot(&[
            "deploy",
            "shop",
            "--tag",
            "1.27.5",
            "--worker-stage-replicas",
            "1",
            "-o",
            "json",
        ])
        .await
        .must_succeed()
        .json();
    assert_eq!(staged["hooks"]["path"], "install", "{staged}");
    assert_eq!(hook_jobs(&env).await["shop-blue-db-prepare"], "1.27.5");
    assert_eq!(worker(&env, "blue").await, (1, Some(1)));
    assert_eq!(suspended(&env).await["blue"], Some(true));
    routes(&env, "1.27.4", Some("1.27.5")).await;

    // 8. A deploy into a staged slot upgrades it: the migration runs, the install hook does not.
    let upgraded = env
        .bgslot(&[
            "deploy",
            "shop",
            "--tag",
            "1.27.6",
            "--replace",
            "-o",
            "json",
        ])
        .await
        .must_succeed()
        .json();
    assert_eq!(upgraded["hooks"]["path"], "upgrade", "{upgraded}");
    let jobs = hook_jobs(&env).await;
    assert_eq!(
        (
            jobs["shop-blue-migrate"].as_str(),
            jobs["shop-blue-db-prepare"].as_str()
        ),
        ("1.27.6", "1.27.5")
    );
    assert_eq!(
        worker(&env, "blue").await,
        (1, Some(1)),
        "the stage's replicas are recorded"
    );
    routes(&env, "1.27.4", Some("1.27.6")).await;

    // 9. A move interrupted after the router's write is seen and settled.
    env.deployments()
        .patch_scale(
            "shop-green-sidekiq",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    env.bgslot(&["status", "shop"])
        .await
        .must_succeed()
        .must_say("worker sidekiq in green runs 0 replicas, not 2")
        .must_say("`bgslot recover shop` settles them");
    let recovered = env
        .bgslot(&["recover", "shop", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert_eq!(recovered["settled"][0]["action"], "scale", "{recovered}");
    common::eventually("the green worker runs 2 pods again", || async {
        worker(&env, "green").await == (2, Some(2))
    })
    .await;
    env.done().await;
}

/// Runs bgslot expecting a refusal that says `says`: exit 3, and every release, Service,
/// Deployment, CronJob and Job of the namespace as it was.
async fn refused(env: &Env, args: &[&str], says: &str) -> Run {
    let before = (
        crate::router::world(env).await,
        suspended(env).await,
        hook_jobs(env).await,
    );
    let run = env
        .bgslot(args)
        .await
        .must_exit(3)
        .must_say(says)
        .must_say("nothing was changed");
    let after = (
        crate::router::world(env).await,
        suspended(env).await,
        hook_jobs(env).await,
    );
    assert_eq!(after, before, "{args:?} changed something");
    run
}

async fn each_refusal_of_a_whole_app_changes_nothing(major: u32) {
    let env = Env::new(major, "app-refusals").await;
    let dir = tempfile::tempdir().unwrap();
    let shop = shop_chart(&env, dir.path());
    let chart = shop.to_str().unwrap();
    let with = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["deploy", "shop", "--app-chart", chart, "--tag", "1.27.3"]
            .map(String::from)
            .to_vec();
        args.extend(APP.map(String::from));
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    fn run(args: &[String]) -> Vec<&str> {
        args.iter().map(String::as_str).collect()
    }

    // Before the first install, into a namespace that does not exist yet: not even it is made.
    let fresh = format!("{}-new", env.ns);
    let lb = with(&[
        "--set",
        "service.type=LoadBalancer",
        "--create-namespace",
        "-n",
        &fresh,
    ]);
    env.bgslot(&run(&lb))
        .await
        .must_exit(3)
        .must_say("load-balancer (each slot gets its own public address")
        .must_say("--accept load-balancer");
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    assert!(
        namespaces.get_opt(&fresh).await.unwrap().is_none(),
        "the namespace was created"
    );

    refused(
        &env,
        &run(&with(&["--set", "namespaceOverride=elsewhere"])),
        "renders into another namespace than",
    )
    .await;
    let headless = with(&["--service", "{release}-headless"]);
    refused(&env, &run(&headless), "is headless (clusterIP: None)").await;
    let extra = |name: &str, objects: Value| {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            serde_json::to_string(&json!({"extraObjects": objects})).unwrap(),
        )
        .unwrap();
        path.to_str().unwrap().to_string()
    };
    let svc = |spec: Value| json!([{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "{{ .Release.Name }}-extra"}, "spec": spec}]);
    let ports = json!([{"port": 81, "protocol": "TCP"}]);
    let lb_ip = extra(
        "lb-ip",
        svc(json!({"type": "ClusterIP", "ports": ports, "loadBalancerIP": "10.0.0.7"})),
    );
    refused(
        &env,
        &run(&with(&["-f", &lb_ip])),
        "asks for loadBalancerIP 10.0.0.7",
    )
    .await;
    let external = extra(
        "external",
        svc(json!({"ports": ports, "externalIPs": ["192.0.2.1"]})),
    );
    refused(
        &env,
        &run(&with(&["-f", &external])),
        "claims externalIPs 192.0.2.1",
    )
    .await;
    let host = extra(
        "host-network",
        json!([{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "{{ .Release.Name }}-agent"}, "spec": {
        "selector": {"matchLabels": {"agent": "{{ .Release.Name }}"}},
        "template": {"metadata": {"labels": {"agent": "{{ .Release.Name }}"}}, "spec": {"hostNetwork": true, "containers": [{"name": "agent", "image": "nginx:1.27.3"}]}}}}]),
    );
    refused(
        &env,
        &run(&with(&["-f", &host])),
        "runs its pods with hostNetwork",
    )
    .await;
    let hpa = extra(
        "hpa",
        json!([{"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "{{ .Release.Name }}-sidekiq"}, "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "{{ .Release.Name }}-sidekiq"}, "minReplicas": 1, "maxReplicas": 3}}]),
    );
    refused(
        &env,
        &run(&with(&["-f", &hpa, "--worker-stage-replicas", "1"])),
        "the HPA would size it there too",
    )
    .await;

    // Dependencies named but not fetched: helm's own message, and how to fetch them.
    let bare = dir.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(&shop)
        .arg(&bare)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_dir_all(bare.join("shop/charts")).unwrap();
    let mut args = with(&[]);
    args[3] = bare.join("shop").to_str().unwrap().to_string();
    refused(
        &env,
        &run(&args),
        "missing in charts/ directory: shop-common",
    )
    .await
    .must_say("helm dependency build");

    // The chart vendored as a directory under charts/ (no dependency named) works as with helm.
    let vendored = dir.path().join("vendored");
    std::fs::create_dir(&vendored).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(&shop)
        .arg(&vendored)
        .status()
        .unwrap();
    assert!(status.success());
    let vendored = vendored.join("shop");
    std::fs::remove_dir_all(vendored.join("charts")).unwrap();
    std::fs::create_dir(vendored.join("charts")).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(dir.path().join("shop-common"))
        .arg(vendored.join("charts"))
        .status()
        .unwrap();
    assert!(status.success());
    let chart_yaml = std::fs::read_to_string(vendored.join("Chart.yaml")).unwrap();
    let without = chart_yaml
        .split("dependencies:")
        .next()
        .unwrap()
        .to_string();
    std::fs::write(vendored.join("Chart.yaml"), without).unwrap();
    let mut args = with(&[]);
    args[3] = vendored.to_str().unwrap().to_string();
    env.bgslot(&run(&args)).await.must_succeed();

    // A pod of the namespace that is not the new slot's carries the labels its route selects.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let stranger: Pod = serde_json::from_value(json!({
        "metadata": {"name": "debug-shop-green", "labels": {
            "app.kubernetes.io/name": "shop", "app.kubernetes.io/instance": "shop-green", "app.kubernetes.io/component": "web"}},
        "spec": {"containers": [{"name": "debug", "image": "nginx:1.27.3", "ports": [{"containerPort": 80}]}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &stranger)
        .await
        .unwrap();
    refused(
        &env,
        &["deploy", "shop", "--tag", "1.27.4"],
        "pods of the namespace that are not shop-green's carry already: debug-shop-green",
    )
    .await;
    pods.delete("debug-shop-green", &Default::default())
        .await
        .unwrap();
    common::eventually("the stranger pod is gone", || async {
        pods.get_opt("debug-shop-green").await.unwrap().is_none()
    })
    .await;

    // A chart whose install runs no hook Job while its upgrade would migrate: the first install
    // is as with helm; one beside production would skip the migration, unless accepted.
    let upgrade_only = crate::router::variant(
        &vendored,
        "upgrade-only",
        &[(
            "templates/migrations.yaml",
            "(dict \"name\" \"db-prepare\" \"phase\" \"pre-install\" \"task\" \"db:prepare\") ",
            "",
        )],
        &[],
    );
    let upgrade_only = upgrade_only.to_str().unwrap();
    refused(
        &env,
        &["deploy", "shop", "--tag", "1.27.4", "--app-chart", upgrade_only],
        "an upgrade of your app would run Job shop-green-migrate (pre-upgrade): that migration would not run",
    )
    .await
    .must_say("--accept skipped-hooks");
    let accepted = env
        .bgslot(&[
            "deploy",
            "shop",
            "--tag",
            "1.27.4",
            "--app-chart",
            upgrade_only,
            "--accept",
            "skipped-hooks",
            "-o",
            "json",
        ])
        .await
        .must_succeed()
        .json();
    assert_eq!(
        accepted["hooks"]["skipped"][0]["name"], "shop-green-migrate",
        "{accepted}"
    );
    assert_eq!(accepted["accepted"], json!(["skipped-hooks"]));
    assert!(!hook_jobs(&env).await.contains_key("shop-green-migrate"));
    env.done().await;
}

async fn a_release_whose_production_check_fails_moves_the_workers_back(major: u32) {
    let env = Env::new(major, "app-release").await;
    let dir = tempfile::tempdir().unwrap();
    let chart = shop_chart(&env, dir.path());
    let mut args = vec![
        "deploy",
        "shop",
        "--app-chart",
        chart.to_str().unwrap(),
        "--tag",
        "1.27.3",
    ];
    args.extend(APP);
    env.bgslot(&args).await.must_succeed();
    let released = env
        .bgslot(&[
            "release",
            "shop",
            "--tag",
            "1.27.4",
            "--verify-cmd",
            "sh -c 'test \"$BGSLOT_TARGET\" = stage'",
        ])
        .await
        .must_exit(1)
        .must_say("swapped back");
    drop(released);
    assert_eq!(worker(&env, "blue").await, (2, Some(2)));
    assert_eq!(worker(&env, "green").await, (0, Some(0)));
    assert_eq!(
        suspended(&env).await,
        BTreeMap::from([("blue".into(), Some(false)), ("green".into(), Some(true))])
    );
    routes(&env, "1.27.3", Some("1.27.4")).await;
    // The negative control: a route steered to the other slot by hand answers with the other
    // version through the same probe, and status calls it drift.
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(env.client.clone(), &env.ns);
    let to_green = json!({"spec": {"selector": {"app.kubernetes.io/instance": "shop-green"}}});
    services
        .patch(
            "shop-streaming",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&to_green),
        )
        .await
        .unwrap();
    answers(&env, "shop-streaming", "1.27.4").await;
    env.bgslot(&["status", "shop"])
        .await
        .must_succeed()
        .must_say("shop-streaming");
    env.done().await;
}
