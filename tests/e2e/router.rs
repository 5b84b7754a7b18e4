//! Router mode end to end, with Helm 3 and Helm 4: the user's chart is made with `helm create` at
//! test time (the chart most teams started from), plus small variants of it written here to hit
//! each refusal. Every refusal exits 3 and leaves the router, both slot releases and every object
//! as they were.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::cli::{Env, Run};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, ListParams};
use serde_json::Value;

with_both_helms!(
    a_helm_create_chart_goes_through_the_whole_cycle,
    every_preflight_refusal_changes_nothing,
    refusals_of_a_running_router_change_nothing,
    release_leftovers_and_recover,
    accepted_risks_run_and_show_as_warnings,
    dry_runs_and_the_lock_change_nothing,
);

/// `helm create NAME` with this test's helm, in `dir`.
pub fn helm_create(env: &Env, dir: &Path, name: &str) -> PathBuf {
    let out = env
        .helm
        .command()
        .args(["create", name])
        .current_dir(dir)
        .output()
        .expect("run helm create");
    assert!(
        out.status.success(),
        "helm create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join(name)
}

/// A copy of `base` named `name` in its directory, with each (file, from, to) edit made (the
/// text must be there) and each (file, content) added.
pub fn variant(
    base: &Path,
    name: &str,
    edits: &[(&str, &str, &str)],
    adds: &[(&str, &str)],
) -> PathBuf {
    let to = base.parent().unwrap().join(name);
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(base)
        .arg(&to)
        .status()
        .unwrap();
    assert!(status.success());
    for (file, from, with) in edits {
        let path = to.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}:\n{text}");
        std::fs::write(&path, text.replacen(from, with, 1)).unwrap();
    }
    for (file, content) in adds {
        std::fs::write(to.join(file), content).unwrap();
    }
    to
}

/// Everything a refused command must leave alone: each helm release's latest revision and status
/// (from helm's own records), each Service's selector and annotations, each Deployment's
/// generation, image and replicas.
pub type Labels = BTreeMap<String, String>;

#[derive(Debug, PartialEq, Eq)]
pub struct World {
    pub releases: BTreeMap<String, (u64, String)>,
    /// Name -> (selector, annotations).
    pub services: BTreeMap<String, (Labels, Labels)>,
    pub deployments: BTreeMap<String, (i64, String, i32)>,
}

pub async fn world(env: &Env) -> World {
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let mut releases = BTreeMap::new();
    for s in secrets
        .list_metadata(&ListParams::default().labels("owner=helm"))
        .await
        .unwrap()
        .items
    {
        let l = s.metadata.labels.unwrap_or_default();
        let version: u64 = l["version"].parse().unwrap();
        let entry = releases
            .entry(l["name"].clone())
            .or_insert((0, String::new()));
        if version > entry.0 {
            *entry = (version, l["status"].clone());
        }
    }
    let services: Api<Service> = Api::namespaced(env.client.clone(), &env.ns);
    let services = services
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| {
            (
                s.metadata.name.clone().unwrap(),
                (
                    s.spec.and_then(|s| s.selector).unwrap_or_default(),
                    s.metadata.annotations.unwrap_or_default(),
                ),
            )
        })
        .collect();
    let deployments = env
        .deployments()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|d| {
            let spec = d.spec.unwrap();
            (
                d.metadata.name.unwrap(),
                (
                    d.metadata.generation.unwrap_or(0),
                    spec.template.spec.unwrap().containers[0]
                        .image
                        .clone()
                        .unwrap_or_default(),
                    spec.replicas.unwrap_or(0),
                ),
            )
        })
        .collect();
    World {
        releases,
        services,
        deployments,
    }
}

/// Runs bgslot expecting a refusal that says `says` and changes nothing.
async fn refused(env: &Env, args: &[&str], says: &str) -> Run {
    let before = world(env).await;
    let run = env
        .bgslot(args)
        .await
        .must_exit(3)
        .must_say(says)
        .must_say("nothing was changed");
    assert_eq!(world(env).await, before, "{args:?} changed something");
    run
}

fn json(run: Run) -> Value {
    run.json()
}

async fn pods_of(env: &Env, selector: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    pods.list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
}

async fn a_helm_create_chart_goes_through_the_whole_cycle(major: u32) {
    let env = Env::new(major, "router").await;
    let dir = tempfile::tempdir().unwrap();
    let chart = helm_create(&env, dir.path(), "myapp");
    let chart = chart.to_str().unwrap();

    let installed = json(
        env.bgslot(&[
            "deploy",
            "web",
            "--app-chart",
            chart,
            "--tag",
            "v1",
            "--replicas",
            "2",
            "-o",
            "json",
        ])
        .await
        .must_succeed(),
    );
    for (key, want) in [
        ("operation", "install"),
        ("mode", "router"),
        ("slot", "blue"),
        ("role", "production"),
        ("slot_release", "web-blue"),
        ("chart", "myapp-0.1.0"),
        ("image", "nginx:v1"),
    ] {
        assert_eq!(installed[key], want, "{key}: {installed}");
    }
    assert_eq!(
        (installed["ready"].as_i64(), installed["desired"].as_i64()),
        (Some(2), Some(2))
    );
    // The router runs no workload; its Services select the slot release's pods by the selector
    // of the chart's own Service, and the empty stage slot selects nothing.
    let w = world(&env).await;
    assert_eq!(w.deployments.keys().collect::<Vec<_>>(), ["web-blue-myapp"]);
    let selector = |release: &str| {
        BTreeMap::from([
            (
                "app.kubernetes.io/instance".to_string(),
                release.to_string(),
            ),
            ("app.kubernetes.io/name".to_string(), "myapp".to_string()),
        ])
    };
    assert_eq!(w.services["web"].0, selector("web-blue"));
    assert_eq!(w.services["web"].1["bgslot/routes-to"], "blue");
    assert_eq!(
        w.services["web-stage"].0,
        BTreeMap::from([("bgslot/slot".to_string(), "none".to_string())])
    );
    env.await_endpoints("web", "?", 2).await;

    // `status --watch` follows the slot releases: a frame shows green staged once it is.
    let mut watch = env
        .command(&["status", "web", "--watch", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let frames = tokio::io::BufReader::new(watch.stdout.take().unwrap());
    let staged = json(
        env.bgslot(&["deploy", "web", "--tag", "v2", "-o", "json"])
            .await
            .must_succeed(),
    );
    let seen_staged = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        use tokio::io::AsyncBufReadExt;
        let mut lines = frames.lines();
        while let Some(line) = lines.next_line().await.unwrap() {
            let frame: Value = serde_json::from_str(&line).unwrap();
            if frame["slots"][1]["state"] == "deployed"
                && frame["slots"][1]["fully_available"] == true
            {
                return true;
            }
        }
        false
    })
    .await;
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(watch.id().unwrap() as i32, libc::SIGINT) };
    assert_eq!(watch.wait().await.unwrap().code(), Some(0));
    assert_eq!(
        seen_staged,
        Ok(true),
        "status --watch never showed green staged"
    );
    assert_eq!(
        (staged["slot"].as_str(), staged["slot_release"].as_str()),
        (Some("green"), Some("web-green"))
    );
    assert_eq!(
        (staged["desired"].as_i64(), staged["next"].as_str()),
        (Some(2), Some("bgslot swap web --expect-tag v2"))
    );
    // The router and its slot releases are read from helm's storage: no helm process.
    let status = env
        .bgslot(&["-v", "status", "web", "-o", "json"])
        .await
        .must_succeed();
    assert_eq!(
        status.helm_commands(),
        Vec::<String>::new(),
        "{}",
        status.stderr
    );
    let status = json(status);
    assert_eq!(status["mode"], "router");
    let green = &status["slots"][1];
    for (key, want) in [
        ("release", "web-green"),
        ("state", "deployed"),
        ("status", "deployed"),
        ("chart", "myapp-0.1.0"),
        ("app_version", "1.16.0"),
        ("image", "nginx:v2"),
    ] {
        assert_eq!(green[key], want, "{key}: {status}");
    }
    assert_eq!(
        (green["ready"].as_i64(), green["fully_available"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(status["services"][1]["selects"], "green");
    assert_eq!(status["drift"], serde_json::json!([]));
    let text = env.bgslot(&["status", "web"]).await.must_succeed();
    assert!(text.stdout.contains("router of "), "{text:?}");

    // A swap writes the router only: no slot release changes, no pod restarts.
    let before = world(&env).await;
    let swapped = env
        .bgslot(&["-v", "swap", "web", "--expect-tag", "v2", "-o", "json"])
        .await
        .must_succeed();
    assert_eq!(swapped.helm_commands(), ["upgrade"], "{}", swapped.stderr);
    let swapped = json(swapped);
    assert_eq!(
        (swapped["to"].as_str(), swapped["ready_endpoints"].as_u64()),
        (Some("green"), Some(2))
    );
    let after = world(&env).await;
    assert_eq!(after.deployments, before.deployments);
    assert_eq!(after.releases["web-green"], before.releases["web-green"]);
    assert_eq!(after.releases["web"].0, before.releases["web"].0 + 1);
    assert_eq!(after.services["web"].0, selector("web-green"));

    // clean uninstalls the old slot release, keeping its history, and waits for its pods.
    let cleaned = json(
        env.bgslot(&["clean", "web", "--min-age", "0s", "-o", "json"])
            .await
            .must_succeed(),
    );
    assert_eq!(
        (
            cleaned["slot_release"].as_str(),
            cleaned["changed"].as_bool()
        ),
        (Some("web-blue"), Some(true))
    );
    // Helm 4's uninstall may outlast the pods (it waits for what it deletes); either way none is
    // left when clean returns.
    assert!(cleaned["stopped_pods"].as_u64().unwrap() <= 2, "{cleaned}");
    assert!(pods_of(&env, "app.kubernetes.io/instance=web-blue")
        .await
        .is_empty());
    let history = env.helm_json(&["history", "web-blue"]);
    assert_eq!(history[0]["status"], "uninstalled");
    assert_eq!(history[0]["description"], "bgslot clean blue");
    assert_eq!(
        world(&env).await.services["web-stage"].0["bgslot/slot"],
        "none"
    );

    // After clean there is nothing to roll back to: the refusal says how to bring v1 back.
    let back = refused(&env, &["rollback", "web"], "the previous slot blue is gone").await;
    assert!(
        back.stderr
            .contains("`bgslot deploy web --tag v1` then `bgslot swap web`"),
        "{back:?}"
    );

    // The name is installed again over its kept history.
    let again = json(
        env.bgslot(&["deploy", "web", "--tag", "v3", "-o", "json"])
            .await
            .must_succeed(),
    );
    assert_eq!(
        (
            again["slot_release"].as_str(),
            again["slot_revision"].as_u64()
        ),
        (Some("web-blue"), Some(2))
    );
    env.bgslot(&["swap", "web", "--expect-tag", "v3"])
        .await
        .must_succeed();
    env.bgslot(&["rollback", "web"]).await.must_succeed();
    let ops: Vec<String> = json(
        env.bgslot(&["history", "web", "-o", "json"])
            .await
            .must_succeed(),
    )["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["operation"].as_str().unwrap_or("-").to_string())
        .collect();
    assert_eq!(
        ops,
        ["install", "deploy", "swap", "clean", "deploy", "swap", "rollback"]
    );
    env.done().await;
}

async fn every_preflight_refusal_changes_nothing(major: u32) {
    let env = Env::new(major, "rtrefuse").await;
    let dir = tempfile::tempdir().unwrap();
    let base = helm_create(&env, dir.path(), "myapp");
    let app = |chart: &Path| chart.to_str().unwrap().to_string();
    let deploy = |chart: &Path, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["deploy", "web", "--app-chart", &app(chart), "--tag", "v1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    async fn refuse(env: &Env, args: Vec<String>, says: &str) -> Run {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(env, &args, says).await
    }
    let ns = env.ns.clone();

    // 1. The chart cannot be rendered: helm's message and the versions.
    let required = variant(
        &base,
        "required",
        &[],
        &[(
            "templates/db.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ include \"myapp.fullname\" . }}-db\ndata:\n  host: {{ required \"dbHost is required\" .Values.dbHost | quote }}\n",
        )],
    );
    let run = refuse(&env, deploy(&required, &[]), "dbHost is required").await;
    run.must_say("cannot be rendered")
        .must_say("Kubernetes v1.20");
    let kube = variant(
        &base,
        "kube",
        &[(
            "Chart.yaml",
            "version: 0.1.0",
            "version: 0.1.0\nkubeVersion: \">=1.25.0-0\"",
        )],
        &[],
    );
    refuse(&env, deploy(&kube, &[]), "incompatible with Kubernetes").await;

    // 2. Two renders share a name, or a live object belongs to another release.
    refuse(
        &env,
        deploy(&base, &["--set", "fullnameOverride=shop"]),
        &format!("web-blue and web-green would both render Service {ns}/shop, ServiceAccount {ns}/shop, Deployment {ns}/shop"),
    )
    .await;
    refuse(
        &env,
        deploy(&base, &["--set", "serviceAccount.name=fixed"]),
        &format!("would both render ServiceAccount {ns}/fixed"),
    )
    .await;
    let squatter = dir.path().join("squatter");
    std::fs::create_dir_all(squatter.join("templates")).unwrap();
    std::fs::write(
        squatter.join("Chart.yaml"),
        "apiVersion: v2\nname: squatter\nversion: 1.0.0\n",
    )
    .unwrap();
    std::fs::write(
        squatter.join("templates/sa.yaml"),
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: web-blue-myapp\n",
    )
    .unwrap();
    env.helm
        .run(&["install", "squatter", squatter.to_str().unwrap(), "-n", &ns]);
    refuse(
        &env,
        deploy(&base, &[]),
        "would take over an object another release owns",
    )
    .await;
    env.helm.run(&["uninstall", "squatter", "-n", &ns]);

    // 3. A fixed node port, a host port, a host another release serves.
    let nodeport = variant(
        &base,
        "nodeport",
        &[(
            "templates/service.yaml",
            "      name: http",
            "      name: http\n      nodePort: 30080",
        )],
        &[],
    );
    refuse(
        &env,
        deploy(&nodeport, &["--set", "service.type=NodePort"]),
        "sets nodePort 30080",
    )
    .await;
    let hostport = variant(
        &base,
        "hostport",
        &[(
            "templates/deployment.yaml",
            "containerPort: {{ .Values.service.port }}",
            "containerPort: {{ .Values.service.port }}\n              hostPort: 8080",
        )],
        &[],
    );
    refuse(&env, deploy(&hostport, &[]), "hostPort 8080").await;
    refuse(
        &env,
        deploy(&base, &["--set", "ingress.enabled=true"]),
        "claims host chart-example.local, which the other slot's release web-green serves too",
    )
    .await;
    let ownhost = variant(
        &base,
        "ownhost",
        &[(
            "templates/ingress.yaml",
            "{{ .host | quote }}",
            "{{ printf \"%s.example.com\" $.Release.Name | quote }}",
        )],
        &[],
    );
    refuse(
        &env,
        deploy(
            &ownhost,
            &[
                "--set",
                "ingress.enabled=true",
                "--router-set",
                "ingress.enabled=true",
                "--router-set",
                "ingress.host=web-blue.example.com",
            ],
        ),
        "claims host web-blue.example.com, which the router web serves too",
    )
    .await;

    // 4. The Service to mirror: missing, ambiguous, selecting nothing of the slot, shared with
    // the other slot, or sending traffic to a port name no container has.
    refuse(
        &env,
        deploy(&base, &["--service", "{release}-nope"]),
        "renders no Service named web-blue-nope",
    )
    .await;
    let two = variant(
        &base,
        "two",
        &[],
        &[(
            "templates/metrics.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ include \"myapp.fullname\" . }}-metrics\nspec:\n  ports: [{port: 9090, targetPort: http, protocol: TCP, name: metrics}]\n  selector:\n    {{- include \"myapp.selectorLabels\" . | nindent 4 }}\n",
        )],
    );
    let run = refuse(
        &env,
        deploy(&two, &[]),
        "renders 2 Services that select its Deployments",
    )
    .await;
    run.must_say("--service '{release}-myapp'");
    let db = variant(&base, "db", &[], &[("templates/db.yaml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}-db\nspec:\n  ports: [{port: 5432, protocol: TCP}]\n  selector: {app: db}\n")]);
    refuse(
        &env,
        deploy(&db, &["--service", "{release}-db"]),
        "which no Deployment of web-blue carries",
    )
    .await;
    let shared = variant(
        &base,
        "shared",
        &[(
            "templates/service.yaml",
            "{{- include \"myapp.selectorLabels\" . | nindent 4 }}",
            "app.kubernetes.io/name: {{ include \"myapp.name\" . }}",
        )],
        &[],
    );
    refuse(
        &env,
        deploy(&shared, &[]),
        "which the pods of web-green carry too",
    )
    .await;
    let target = variant(
        &base,
        "target",
        &[(
            "templates/service.yaml",
            "targetPort: http",
            "targetPort: web",
        )],
        &[],
    );
    refuse(
        &env,
        deploy(&target, &[]),
        "to the port named web, which no container",
    )
    .await;

    // 5. What is unsafe twice side by side, unless accepted by name.
    let risky = variant(
        &base,
        "risky",
        &[],
        &[
            ("templates/clusterrole.yaml", "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {{ .Release.Namespace }}-{{ .Release.Name }}-reader\nrules: []\n"),
            ("templates/pvc.yaml", "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {{ .Release.Name }}-data\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 1Gi}}\n"),
            ("templates/job.yaml", "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{ .Release.Name }}-report\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: report, image: busybox}]\n"),
            ("templates/ds.yaml", "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: {{ .Release.Name }}-agent\nspec:\n  selector: {matchLabels: {agent: {{ .Release.Name }}}}\n  template:\n    metadata: {labels: {agent: {{ .Release.Name }}}}\n    spec: {containers: [{name: agent, image: busybox}]}\n"),
            ("templates/predelete.yaml", "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{ .Release.Name }}-goodbye\n  annotations: {\"helm.sh/hook\": pre-delete}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: bye, image: busybox}]\n"),
        ],
    );
    let run = refuse(
        &env,
        deploy(&risky, &[]),
        "web-blue renders what is unsafe to run twice side by side",
    )
    .await;
    run.must_say("cluster-scoped")
        .must_say("stateful")
        .must_say("jobs")
        .must_say("daemonset")
        .must_say("delete-hooks")
        .must_say("--accept cluster-scoped --accept stateful --accept jobs --accept daemonset --accept delete-hooks");
    refuse(
        &env,
        deploy(&risky, &["--accept", "jobs", "--accept", "stateful"]),
        "cluster-scoped",
    )
    .await;
    let before = world(&env).await;
    env.bgslot(
        &{
            let mut a = deploy(&risky, &["--dry-run"]);
            for r in [
                "cluster-scoped",
                "stateful",
                "jobs",
                "daemonset",
                "delete-hooks",
            ] {
                a.extend(["--accept".to_string(), r.to_string()]);
            }
            a
        }
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    )
    .await
    .must_succeed();
    assert_eq!(world(&env).await, before);

    // 6. The tag must reach the routed image, and no digest bgslot did not ask for may pin it.
    refuse(
        &env,
        deploy(&base, &["--tag-key", "image.version"]),
        "the tag v1 did not reach the routed image",
    )
    .await;
    let digest = format!("sha256:{}", "a".repeat(64));
    let pinned = variant(
        &base,
        "pinned",
        &[("templates/deployment.yaml", "{{ .Values.image.tag | default .Chart.AppVersion }}\"", "{{ .Values.image.tag | default .Chart.AppVersion }}{{ with .Values.image.digest }}@{{ . }}{{ end }}\"")],
        &[],
    );
    let set_digest = format!("image.digest={digest}");
    refuse(
        &env,
        deploy(&pinned, &["--set", &set_digest]),
        "which bgslot did not ask for",
    )
    .await;
    let before = world(&env).await;
    let args = deploy(
        &pinned,
        &[
            "--set",
            &set_digest,
            "--digest-key",
            "image.digest",
            "--dry-run",
        ],
    );
    env.bgslot(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await
        .must_succeed();
    assert_eq!(world(&env).await, before);

    // 7. A release that is not a router, a slot release the router does not record, a name too
    // long for its slot releases.
    env.bgslot(&["deploy", "plain", "--tag", "v1", "--replicas", "1"])
        .await
        .must_succeed();
    refuse(
        &env,
        ["deploy", "plain", "--app-chart", &app(&base), "--tag", "v1"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        "release plain exists and is not a bgslot router",
    )
    .await;
    env.helm
        .run(&["install", "web-blue", &app(&base), "-n", &ns]);
    let run = refuse(
        &env,
        deploy(&base, &[]),
        "release web-blue exists (deployed, revision 1), but the router web does not record it",
    )
    .await;
    run.must_say(&format!("helm uninstall web-blue -n {ns}"));
    env.helm.run(&["uninstall", "web-blue", "-n", &ns]);
    let long = "a".repeat(48);
    refuse(
        &env,
        ["deploy", &long, "--app-chart", &app(&base), "--tag", "v1"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        "is 48 characters long",
    )
    .await;
    // Router flags on a release that is not a router are a usage error.
    env.bgslot(&["deploy", "plain", "--tag", "v2", "--tag-key", "image.tag"])
        .await
        .must_exit(2)
        .must_say("are for a router");

    // And after all that, the chart as `helm create` made it installs.
    let args = deploy(&base, &[]);
    env.bgslot(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await
        .must_succeed();
    // A bundled chart's flag on a router deploy is a usage error, and changes nothing.
    let before = env.fingerprint("web").await;
    let mut preview = deploy(&base, &["--preview-replicas", "1"]);
    preview[5] = "v9".into();
    env.bgslot(&preview.iter().map(String::as_str).collect::<Vec<_>>())
        .await
        .must_exit(2)
        .must_say("--preview-replicas is the bundled chart's");
    assert_eq!(env.fingerprint("web").await, before);
    env.done().await;
}

async fn refusals_of_a_running_router_change_nothing(major: u32) {
    let env = Env::new(major, "rtrun").await;
    let dir = tempfile::tempdir().unwrap();
    let base = helm_create(&env, dir.path(), "myapp");
    let chart = base.to_str().unwrap();
    env.bgslot(&["deploy", "web", "--app-chart", chart, "--tag", "v1"])
        .await
        .must_succeed();
    refused(&env, &["swap", "web"], "nothing is staged").await;
    env.bgslot(&["deploy", "web", "--tag", "v2"])
        .await
        .must_succeed();
    refused(
        &env,
        &["deploy", "web", "--tag", "v3"],
        "the idle slot green already runs a staged version (nginx:v2, release web-green)",
    )
    .await;
    refused(
        &env,
        &["swap", "web", "--expect-tag", "v9"],
        "the green slot runs nginx:v2 but --expect-tag is v9",
    )
    .await;
    refused(&env, &["rollback", "web"], "not the previous production").await;
    // A new chart version whose Service selects by the app's name only: it would take the other
    // slot's pods too.
    let shared = variant(
        &base,
        "shared",
        &[(
            "templates/service.yaml",
            "{{- include \"myapp.selectorLabels\" . | nindent 4 }}",
            "app.kubernetes.io/name: {{ include \"myapp.name\" . }}",
        )],
        &[],
    );
    refused(
        &env,
        &[
            "deploy",
            "web",
            "--app-chart",
            shared.to_str().unwrap(),
            "--tag",
            "v3",
            "--replace",
        ],
        "which the pods of web-blue carry too",
    )
    .await;
    // Someone moves the stage Service by hand: drift, refused until --force takes it back.
    let services: Api<Service> = Api::namespaced(env.client.clone(), &env.ns);
    let patch = serde_json::json!({"spec": {"selector": {"app.kubernetes.io/instance": "web-blue", "app.kubernetes.io/name": "myapp"}}});
    services
        .patch(
            "web-stage",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let status = json(
        env.bgslot(&["status", "web", "-o", "json"])
            .await
            .must_succeed(),
    );
    assert!(
        status["drift"][0]
            .as_str()
            .unwrap()
            .contains("Service web-stage (stage) selects"),
        "{status}"
    );
    refused(&env, &["swap", "web"], "do not match its record").await;
    refused(
        &env,
        &["deploy", "web", "--tag", "v3", "--replace"],
        "do not match its record",
    )
    .await;
    env.bgslot(&["swap", "web", "--force"]).await.must_succeed();
    env.bgslot(&["rollback", "web", "--force"])
        .await
        .must_succeed();
    let status = json(
        env.bgslot(&["status", "web", "-o", "json"])
            .await
            .must_succeed(),
    );
    assert_eq!(status["drift"], serde_json::json!([]), "{status}");
    // clean waits for the drain delay and for a fully available production.
    refused(&env, &["clean", "web"], "the drain delay is 30s").await;
    // A router whose Services carry a GitOps controller's marks is changed in Git, not by bgslot.
    let flux = serde_json::json!({"metadata": {"labels": {"helm.toolkit.fluxcd.io/name": "web", "helm.toolkit.fluxcd.io/namespace": "flux-system"}}});
    services
        .patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&flux),
        )
        .await
        .unwrap();
    refused(
        &env,
        &["swap", "web"],
        "managed by Flux (HelmRelease flux-system/web)",
    )
    .await;
    refused(
        &env,
        &["deploy", "web", "--tag", "v3", "--replace"],
        "managed by Flux",
    )
    .await;
    let status = json(
        env.bgslot(&["status", "web", "-o", "json"])
            .await
            .must_succeed(),
    );
    assert_eq!(status["owner"]["tool"], "flux", "{status}");
    env.done().await;
}

async fn release_leftovers_and_recover(major: u32) {
    let env = Env::new(major, "rtrel").await;
    let dir = tempfile::tempdir().unwrap();
    let base = helm_create(&env, dir.path(), "myapp");
    let chart = base.to_str().unwrap();
    let installed = json(
        env.bgslot(&[
            "release",
            "web",
            "--app-chart",
            chart,
            "--tag",
            "v1",
            "--verify-cmd",
            "true",
            "-o",
            "json",
        ])
        .await
        .must_succeed(),
    );
    assert_eq!(
        (installed["operation"].as_str(), installed["mode"].as_str()),
        (Some("release"), Some("router"))
    );
    assert_eq!(installed["verified"], serde_json::json!(["production"]));
    let released = json(
        env.bgslot(&[
            "release",
            "web",
            "--tag",
            "v2",
            "--verify-cmd",
            "true",
            "--clean",
            "--min-age",
            "0s",
            "-o",
            "json",
        ])
        .await
        .must_succeed(),
    );
    let ops: Vec<&str> = released["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["deploy", "swap", "clean"]);
    assert_eq!(
        (
            released["production_slot"].as_str(),
            released["image"].as_str()
        ),
        (Some("green"), Some("nginx:v2"))
    );
    // A failing production check swaps back.
    env.bgslot(&[
        "release",
        "web",
        "--tag",
        "v3",
        "--verify-cmd",
        "sh -c 'test $BGSLOT_TARGET = stage'",
    ])
    .await
    .must_exit(1)
    .must_say("production was swapped back to green");

    // A deploy that never becomes ready stays recorded as staged, as in bgslot's own chart: the
    // router records the slot before it waits, status shows it not ready, swap refuses, and only
    // --replace (or clean) overwrites it.
    env.bgslot(&["clean", "web", "--force"])
        .await
        .must_succeed();
    env.bgslot(&[
        "deploy",
        "web",
        "--tag",
        "v4-never-ready",
        "--timeout",
        "8s",
    ])
    .await
    .must_exit(1)
    .must_say("The version stays staged in blue");
    let status = json(
        env.bgslot(&["status", "web", "-o", "json"])
            .await
            .must_succeed(),
    );
    let blue = &status["slots"][0];
    assert_eq!(
        (
            blue["state"].as_str(),
            blue["fully_available"].as_bool(),
            blue["tag"].as_str()
        ),
        (Some("deployed"), Some(false), Some("v4-never-ready")),
        "{status}"
    );
    assert_eq!(status["warnings"], serde_json::json!([]), "{status}");
    refused(&env, &["swap", "web"], "is not fully available").await;
    refused(
        &env,
        &["deploy", "web", "--tag", "v5"],
        "the idle slot blue already runs a staged version (nginx:v4-never-ready, release web-blue)",
    )
    .await;
    env.bgslot(&["deploy", "web", "--tag", "v5", "--replace"])
        .await
        .must_succeed();

    // A --replace whose chart hook fails leaves the staged release failed: swap refuses, recover
    // rolls it back, and a redeploy stages again.
    let hooked = variant(
        &base,
        "hooked",
        &[],
        &[(
            "templates/check.yaml",
            "{{- if .Values.failCheck }}\napiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{ .Release.Name }}-check\n  annotations: {\"helm.sh/hook\": pre-upgrade, \"helm.sh/hook-delete-policy\": before-hook-creation}\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: check, image: \"busybox:crash-loop\"}]\n{{- end }}\n",
        )],
    );
    env.bgslot(&[
        "deploy",
        "web",
        "--app-chart",
        hooked.to_str().unwrap(),
        "--tag",
        "v6",
        "--replace",
        "--set",
        "failCheck=true",
    ])
    .await
    .must_exit(1);
    let status = json(
        env.bgslot(&["status", "web", "-o", "json"])
            .await
            .must_succeed(),
    );
    assert!(
        status["drift"].to_string().contains("web-blue (blue) is"),
        "{status}"
    );
    refused(
        &env,
        &["swap", "web"],
        "release web-blue of the blue slot is in state failed",
    )
    .await;
    let recovered = json(
        env.bgslot(&["recover", "web", "-o", "json"])
            .await
            .must_succeed(),
    );
    assert_eq!(recovered["mode"], "router");
    assert_eq!(
        (
            recovered["recovered"][0]["release"].as_str(),
            recovered["recovered"][0]["action"].as_str()
        ),
        (Some("web-blue"), Some("rollback"))
    );
    env.bgslot(&["deploy", "web", "--tag", "v7", "--replace"])
        .await
        .must_succeed();
    env.bgslot(&["swap", "web", "--expect-tag", "v7"])
        .await
        .must_succeed();
    let nothing = env
        .bgslot(&["-v", "recover", "web", "-o", "json"])
        .await
        .must_succeed();
    assert_eq!(
        nothing.helm_commands(),
        Vec::<String>::new(),
        "recover reads the router and its slots from helm's storage: {}",
        nothing.stderr
    );
    assert_eq!(json(nothing)["changed"], false);
    env.done().await;
}

async fn accepted_risks_run_and_show_as_warnings(major: u32) {
    let env = Env::new(major, "rtrisk").await;
    let dir = tempfile::tempdir().unwrap();
    let base = helm_create(&env, dir.path(), "myapp");
    let risky = variant(
        &base,
        "risky",
        &[],
        &[
            ("templates/job.yaml", "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{ .Release.Name }}-report\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: report, image: busybox}]\n"),
            ("templates/predelete.yaml", "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{ .Release.Name }}-goodbye\n  annotations: {\"helm.sh/hook\": pre-delete}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: bye, image: busybox}]\n"),
        ],
    );
    let chart = risky.to_str().unwrap();
    env.bgslot(&[
        "deploy",
        "web",
        "--app-chart",
        chart,
        "--tag",
        "v1",
        "--accept",
        "jobs",
        "--accept",
        "delete-hooks",
    ])
    .await
    .must_succeed()
    .must_say("accepted risks: jobs, delete-hooks");
    // Recorded: the next deploy needs no --accept.
    env.bgslot(&["deploy", "web", "--tag", "v2"])
        .await
        .must_succeed();
    let status = json(
        env.bgslot(&["status", "web", "-o", "json"])
            .await
            .must_succeed(),
    );
    assert_eq!(
        status["app"]["accept"],
        serde_json::json!(["jobs", "delete-hooks"])
    );
    assert_eq!(status["warnings"].as_array().unwrap().len(), 2, "{status}");
    env.bgslot(&["status", "web"])
        .await
        .must_succeed()
        .must_say("warning: green (web-green) runs with accepted risks: jobs, delete-hooks");
    // `--accept none` takes them back: the next deploy is refused again.
    env.bgslot(&["swap", "web"]).await.must_succeed();
    env.bgslot(&["clean", "web", "--min-age", "0s"])
        .await
        .must_succeed();
    refused(
        &env,
        &["deploy", "web", "--tag", "v3", "--accept", "none"],
        "jobs (each slot runs them",
    )
    .await;
    env.done().await;
}

async fn dry_runs_and_the_lock_change_nothing(major: u32) {
    let env = Env::new(major, "rtdry").await;
    let dir = tempfile::tempdir().unwrap();
    let base = helm_create(&env, dir.path(), "myapp");
    let chart = base.to_str().unwrap();
    let planned = json(
        env.bgslot(&[
            "deploy",
            "web",
            "--app-chart",
            chart,
            "--tag",
            "v1",
            "--dry-run",
            "-o",
            "json",
        ])
        .await
        .must_succeed(),
    );
    assert_eq!(
        (
            planned["dry_run"].as_bool(),
            planned["steps"].as_array().unwrap().len()
        ),
        (Some(true), 2)
    );
    assert!(
        planned["steps"][0]["helm"]
            .to_string()
            .contains("--reset-values"),
        "{planned}"
    );
    assert_eq!(world(&env).await.releases.len(), 0);
    // The release lock of the router covers its slot releases.
    let _held = env.hold_lock("web", "someone-else").await;
    env.bgslot(&["deploy", "web", "--app-chart", chart, "--tag", "v1"])
        .await
        .must_exit(4);
    assert_eq!(world(&env).await.releases.len(), 0);
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(env.client.clone(), &env.ns);
    leases
        .delete("bgslot-lock-web", &Default::default())
        .await
        .unwrap();
    env.bgslot(&["deploy", "web", "--app-chart", chart, "--tag", "v1"])
        .await
        .must_succeed();
    env.bgslot(&["deploy", "web", "--tag", "v2"])
        .await
        .must_succeed();
    let before = world(&env).await;
    for args in [
        &["deploy", "web", "--tag", "v3", "--replace", "--dry-run"][..],
        &["swap", "web", "--dry-run"],
        &["clean", "web", "--dry-run", "--force"],
        &[
            "release",
            "web",
            "--tag",
            "v3",
            "--replace",
            "--clean",
            "--dry-run",
        ],
    ] {
        env.bgslot(args).await.must_succeed().must_say("dry run");
    }
    // A dry run works while another bgslot holds the lock.
    let _held = env.hold_lock("web", "someone-else").await;
    env.bgslot(&["swap", "web", "--dry-run"])
        .await
        .must_succeed();
    assert_eq!(world(&env).await, before);
    env.bgslot(&["recover", "web", "--dry-run"])
        .await
        .must_succeed()
        .must_say("nothing to recover");
    env.done().await;
}
