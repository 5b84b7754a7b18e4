//! The CI pipelines of `examples/ci/` are run, not just shown: `bgslot-release.sh`, the one script
//! every example pipeline runs, releases on the control plane with the real bgslot and the real
//! helm (both majors), through a passing release, a failing stage check, a failing production
//! check, a refusal, a held lock and a cancelled job; `pipeline.sh` builds (a recording `docker`)
//! and releases the commit; the GitHub Actions and GitLab files parse and call the script.
//!
//! Only the network is stood in for: the test machine has no cluster DNS, so the smoke checks get
//! `SMOKE_STAGE_URL`/`SMOKE_PRODUCTION_URL` pointing at [`DataPlane`], a local HTTP server that
//! answers for a Service the way its pods would: it follows the Service's ready Endpoints to a pod
//! and answers with that pod's slot and version. The real `curl` makes the requests, behind a
//! `curl` on PATH that records what each call was made with (bgslot's BGSLOT_* variables).

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::cli::{Env, Run};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Pod};
use kube::api::{Api, DeleteParams};
use kube::Client;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const CI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ci");

fn ci_file(name: &str) -> PathBuf {
    Path::new(CI).join(name)
}

/// The app's data plane as the smoke check sees it: `GET /SERVICE/...` is answered by a ready
/// endpoint of that Service: 200 with `{"service","slot","version"}`, or 503 when the Service has
/// no ready endpoint. A version whose tag ends in `-broken` answers 500 everywhere; one ending in
/// `-broken-in-production` answers 503 through the production Service only.
struct DataPlane {
    port: u16,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl DataPlane {
    async fn start(client: Client, ns: String) -> DataPlane {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, client.clone(), ns.clone()));
            }
        });
        DataPlane { port, server }
    }

    fn url(&self, service: &str) -> String {
        format!("http://127.0.0.1:{}/{service}", self.port)
    }
}

async fn serve(mut sock: tokio::net::TcpStream, client: Client, ns: String) {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let service = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let (status, body) = answer(&client, &ns, service).await;
    let reason = match status {
        200 => "OK",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(response.as_bytes()).await;
    let _ = sock.shutdown().await;
}

async fn answer(client: &Client, ns: &str, service: &str) -> (u16, String) {
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let ready_pod = endpoints
        .get_opt(service)
        .await
        .ok()
        .flatten()
        .and_then(|ep| ep.subsets)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|s| s.addresses.unwrap_or_default())
        .find_map(|a| a.target_ref.and_then(|r| r.name));
    let Some(pod) = ready_pod else {
        return (503, format!("{service}: no ready endpoint\n"));
    };
    let Ok(pod) = pods.get(&pod).await else {
        return (503, format!("{service}: pod {pod} is gone\n"));
    };
    let slot = pod
        .metadata
        .labels
        .and_then(|l| l.get("bgslot/slot").cloned())
        .unwrap_or_default();
    let image = pod.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default();
    let version = image_tag(&image).to_string();
    if version.ends_with("-broken") {
        return (500, format!("{version} is broken\n"));
    }
    if version.ends_with("-broken-in-production") && !service.ends_with("-stage") {
        return (503, format!("{version} fails under production traffic\n"));
    }
    let body = json!({"service": service, "slot": slot, "version": version});
    (200, format!("{body}\n"))
}

/// `registry:5000/app:v1@sha256:…` → `v1`.
fn image_tag(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split_once(':').map(|(_, tag)| tag).unwrap_or("")
}

/// One call the smoke check made to `curl`, with what bgslot told the verify command.
#[derive(Debug, PartialEq, Eq)]
struct Check {
    target: String,
    slot: String,
    tag: String,
    service: String,
    namespace: String,
    /// BGSLOT_URL as bgslot passed it.
    bgslot_url: String,
    /// curl's command line.
    curl: String,
}

/// A CI runner for one test: its work directory (the `curl` recorder, reports), the data plane,
/// and the environment a pipeline would give the script: nothing from the test's own environment
/// but PATH, HOME and the cluster.
struct Runner<'a> {
    env: &'a Env,
    dir: tempfile::TempDir,
    plane: DataPlane,
}

impl<'a> Runner<'a> {
    async fn new(env: &'a Env) -> Runner<'a> {
        let dir = tempfile::tempdir().unwrap();
        let real_curl = which::which("curl").expect("the CI pipeline tests need curl on PATH");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let log = dir.path().join("checks.log");
        write_executable(
            &bin.join("curl"),
            &format!(
                "#!/bin/sh\nprintf '%s\\t%s\\t%s\\t%s\\t%s\\t%s\\t%s\\n' \"$BGSLOT_TARGET\" \"$BGSLOT_SLOT\" \"$BGSLOT_TAG\" \"$BGSLOT_SERVICE\" \"$BGSLOT_NAMESPACE\" \"$BGSLOT_URL\" \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
                log.display(),
                real_curl.display()
            ),
        );
        let plane = DataPlane::start(env.client.clone(), env.ns.clone()).await;
        Runner { env, dir, plane }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `sh SCRIPT ARGS` with the runner's environment plus `vars`.
    fn command(
        &self,
        script: &str,
        args: &[&str],
        vars: &[(&str, &str)],
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg(ci_file(script)).args(args).env_clear();
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap()
        );
        let kubeconfig = match &self.env.kubeconfig {
            Some(k) => PathBuf::from(k),
            None => common::kubeconfig(),
        };
        for (k, v) in self.env.helm.command().get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        cmd.env("PATH", path)
            .env("HOME", std::env::var("HOME").unwrap())
            .env("USER", "ci")
            .env("KUBECONFIG", kubeconfig)
            .env("HELM_BIN", &self.env.helm.path)
            .env("NO_COLOR", "1")
            .env("BGSLOT", env!("CARGO_BIN_EXE_bgslot"))
            .env("RELEASE_NAME", "web")
            .env("RELEASE_NAMESPACE", &self.env.ns)
            .env("SMOKE_STAGE_URL", self.plane.url("web-stage"))
            .env("SMOKE_PRODUCTION_URL", self.plane.url("web"))
            .env("SMOKE_PATH", "healthz")
            .env("SMOKE_EXPECT_TAG", "true")
            .env("SMOKE_ATTEMPTS", "2")
            .env("SMOKE_INTERVAL", "0");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
        cmd
    }

    /// Runs `bgslot-release.sh` with `vars`, its report going to `reports/LABEL.json`.
    async fn release(&self, label: &str, args: &[&str], vars: &[(&str, &str)]) -> Run {
        let report = self.report_path(label);
        let mut all = vars.to_vec();
        let report = report.to_str().unwrap().to_string();
        all.push(("RELEASE_REPORT", &report));
        let out = self
            .command("bgslot-release.sh", args, &all)
            .output()
            .await
            .unwrap();
        Run::from(out)
    }

    fn report_path(&self, label: &str) -> PathBuf {
        self.path("reports").join(format!("{label}.json"))
    }

    fn report(&self, label: &str) -> Value {
        let path = self.report_path(label);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("no report at {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("report is not JSON ({e}): {text}"))
    }

    /// Every `curl` call of the smoke checks so far, in order.
    fn checks(&self) -> Vec<Check> {
        let text = std::fs::read_to_string(self.path("checks.log")).unwrap_or_default();
        text.lines()
            .map(|line| {
                let f: Vec<&str> = line.split('\t').collect();
                assert_eq!(f.len(), 7, "a checks.log line: {line}");
                Check {
                    target: f[0].into(),
                    slot: f[1].into(),
                    tag: f[2].into(),
                    service: f[3].into(),
                    namespace: f[4].into(),
                    bgslot_url: f[5].into(),
                    curl: f[6].into(),
                }
            })
            .collect()
    }

    /// The call a smoke check against `target` makes when bgslot points it at `slot` running
    /// `tag`: bgslot's in-cluster URL, and curl fetching the stand-in for it.
    fn check(&self, target: &str, slot: &str, tag: &str) -> Check {
        let service = if target == "stage" {
            "web-stage"
        } else {
            "web"
        };
        Check {
            target: target.into(),
            slot: slot.into(),
            tag: tag.into(),
            service: service.into(),
            namespace: self.env.ns.clone(),
            bgslot_url: format!("http://{service}.{}.svc.cluster.local:80/", self.env.ns),
            curl: format!("-fsS --max-time 5 {}/healthz", self.plane.url(service)),
        }
    }

    /// The first release of `web` (v1, two replicas) through the script.
    async fn install(&self) {
        self.release("install", &["--replicas", "2"], &[("RELEASE_TAG", "v1")])
            .await
            .must_succeed();
        self.env.await_endpoints("web", "blue", 2).await;
    }
}

fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The names of the steps in a release report.
fn step_operations(report: &Value) -> Vec<String> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["operation"].as_str().unwrap().to_string())
        .collect()
}

#[track_caller]
fn assert_lines(run: &Run, lines: &[&str]) {
    for line in lines {
        assert!(
            run.stdout.lines().any(|l| l == *line),
            "the summary has the line {line:?}: {run:?}"
        );
    }
}

with_both_helms!(
    first_release_installs_then_a_release_verifies_swaps_and_cleans,
    failing_stage_check_leaves_production_and_the_next_pipeline_is_refused,
    failing_production_check_swaps_back,
    held_lock_exits_4_and_changes_nothing,
    cancelled_job_stops_bgslot_cleanly,
    plain_pipeline_builds_and_releases_the_commit,
);

async fn first_release_installs_then_a_release_verifies_swaps_and_cleans(major: u32) {
    let env = Env::new(major, "ci-pass").await;
    let runner = Runner::new(&env).await;

    // (a) The first pipeline installs: production = blue, checked once, against production.
    let run = runner
        .release("install", &["--replicas", "2"], &[("RELEASE_TAG", "v1")])
        .await
        .must_succeed();
    assert_lines(
        &run,
        &[
            &format!(
                "bgslot-release: web installed: production (blue) runs nginx:v1, revision 1, namespace {}",
                env.ns
            ),
            "  verified against: production",
            "  steps: install",
        ],
    );
    let report = runner.report("install");
    assert_eq!(
        (
            report["operation"].as_str(),
            report["production_slot"].as_str(),
            report["image"].as_str(),
        ),
        (Some("release"), Some("blue"), Some("nginx:v1")),
        "the install report names production blue running v1: {report}"
    );
    assert_eq!(step_operations(&report), ["install"]);
    assert_eq!(runner.checks(), [runner.check("production", "blue", "v1")]);
    env.await_endpoints("web", "blue", 2).await;

    // (b) A release with --clean: deploy to green, check stage, swap, check production, clean.
    let summary = runner.path("step-summary.md");
    let run = runner
        .release(
            "v2",
            &[],
            &[
                ("RELEASE_TAG", "v2"),
                ("RELEASE_CLEAN", "true"),
                ("RELEASE_MIN_AGE", "1s"),
                ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(run.code, 0, "a verified release exits 0: {run:?}");
    let report = runner.report("v2");
    assert_eq!(
        (
            report["release"].as_str(),
            report["namespace"].as_str(),
            report["production_slot"].as_str(),
            report["stage_slot"].as_str(),
            report["image"].as_str(),
        ),
        (
            Some("web"),
            Some(env.ns.as_str()),
            Some("green"),
            Some("blue"),
            Some("nginx:v2")
        ),
        "the report says production is green running v2: {report}"
    );
    assert_eq!(report["verified"], json!(["stage", "production"]));
    assert_eq!(step_operations(&report), ["deploy", "swap", "clean"]);
    assert_eq!(
        (
            report["steps"][2]["slot"].as_str(),
            report["steps"][2]["image"].as_str()
        ),
        (Some("blue"), Some("nginx:v1")),
        "the clean disabled blue, which ran v1: {report}"
    );
    let revision = report["revision"].as_u64().unwrap();
    assert_eq!(revision, 4, "install, deploy, swap, clean: {report}");
    assert_eq!(
        runner.checks()[1..],
        [
            runner.check("stage", "green", "v2"),
            runner.check("production", "green", "v2"),
        ],
        "stage is checked on green before the swap, production on green after it"
    );
    assert_lines(
        &run,
        &[
            &format!(
                "bgslot-release: web released: production (green) runs nginx:v2, revision 4, namespace {}",
                env.ns
            ),
            "  verified against: stage production",
            "  steps: deploy swap clean",
            "  next: bgslot deploy web --tag NEW_TAG",
            &format!("  report: {}", runner.report_path("v2").display()),
        ],
    );
    let step_summary = std::fs::read_to_string(&summary).unwrap();
    assert!(
        step_summary.starts_with("### bgslot release web\n\n```\nbgslot-release: web released:"),
        "the GitHub step summary gets the summary: {step_summary}"
    );
    env.await_endpoints("web", "green", 2).await;
    let fp = env.fingerprint("web").await;
    assert_eq!(
        fp.deployments.keys().collect::<Vec<_>>(),
        ["web-green"],
        "the old slot was cleaned: {fp:?}"
    );
    env.done().await;
}

async fn failing_stage_check_leaves_production_and_the_next_pipeline_is_refused(major: u32) {
    let env = Env::new(major, "ci-stage").await;
    let runner = Runner::new(&env).await;
    runner.install().await;
    let before = env.fingerprint("web").await;

    // (c) v2-broken answers 500: the stage check fails (twice: SMOKE_ATTEMPTS=2), no swap.
    let run = runner
        .release("broken", &[], &[("RELEASE_TAG", "v2-broken")])
        .await;
    assert_eq!(run.code, 1, "a failed stage check exits 1: {run:?}");
    assert_eq!(
        runner.checks()[1..],
        [
            runner.check("stage", "green", "v2-broken"),
            runner.check("stage", "green", "v2-broken"),
        ],
        "only stage was checked, twice, and never production"
    );
    let after = env.fingerprint("web").await;
    assert_eq!(
        after.selectors, before.selectors,
        "the Services select what they selected"
    );
    assert_eq!(
        after.revision,
        before.revision + 1,
        "the deploy is the only helm write"
    );
    assert_eq!(
        after.deployments.get("web-blue"),
        before.deployments.get("web-blue"),
        "the production Deployment is untouched"
    );
    assert_eq!(
        after.deployments.get("web-green").map(|d| d.1.as_str()),
        Some("nginx:v2-broken"),
        "the new version stays staged in green"
    );
    env.await_endpoints("web", "blue", 2).await;
    let report = runner.report("broken");
    assert_eq!(
        (report["exit_code"].as_i64(), report["kind"].as_str()),
        (Some(1), Some("failed")),
        "the report is bgslot's error document: {report}"
    );
    let stage_failed =
        "verification against stage failed; production is unchanged (the new version stays staged)";
    assert!(
        report["caused_by"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == stage_failed),
        "the report says production is unchanged: {report}"
    );
    assert_lines(
        &run,
        &[
            "bgslot-release: web NOT released: exit 1 (failed)",
            &format!("  caused by: {stage_failed}"),
        ],
    );
    assert!(
        run.stderr.contains(
            "smoke-check: stage (web-stage -> green, version v2-broken): FAILED after 2 tries"
        ),
        "the smoke check's own output is in the job log: {run:?}"
    );

    // The next pipeline finds v2-broken staged: refused (exit 3), nothing changed, no check ran.
    let run = runner
        .release("refused", &[], &[("RELEASE_TAG", "v3")])
        .await;
    assert_eq!(run.code, 3, "a refusal exits 3: {run:?}");
    assert_eq!(
        env.fingerprint("web").await,
        after,
        "the refused release changed nothing"
    );
    assert_eq!(runner.checks().len(), 3, "a refused release checks nothing");
    let report = runner.report("refused");
    assert_eq!(
        (report["exit_code"].as_i64(), report["kind"].as_str()),
        (Some(3), Some("refused")),
        "the report says refused: {report}"
    );
    assert_lines(
        &run,
        &[
            "bgslot-release: web NOT released: exit 3 (refused)",
            "  exit 3: refused by a safety check; nothing was changed",
        ],
    );
    assert!(
        run.stdout.contains("  hint: swap to it (`bgslot swap web`), remove it (`bgslot clean web`), or pass --replace to overwrite it"),
        "the summary carries bgslot's hint: {run:?}"
    );

    // With RELEASE_REPLACE=true the next pipeline replaces the staged version and releases.
    let run = runner
        .release(
            "replace",
            &[],
            &[("RELEASE_TAG", "v3"), ("RELEASE_REPLACE", "true")],
        )
        .await;
    assert_eq!(run.code, 0, "RELEASE_REPLACE releases over it: {run:?}");
    assert_eq!(
        runner.checks()[3..],
        [
            runner.check("stage", "green", "v3"),
            runner.check("production", "green", "v3"),
        ]
    );
    env.await_endpoints("web", "green", 2).await;
    env.done().await;
}

async fn failing_production_check_swaps_back(major: u32) {
    let env = Env::new(major, "ci-prod").await;
    let runner = Runner::new(&env).await;
    runner.install().await;
    let before = env.fingerprint("web").await;

    // (d) Stage answers, production does not: bgslot swaps back to blue.
    let run = runner
        .release("broken", &[], &[("RELEASE_TAG", "v2-broken-in-production")])
        .await;
    assert_eq!(run.code, 1, "a failed production check exits 1: {run:?}");
    assert_eq!(
        runner.checks()[1..],
        [
            runner.check("stage", "green", "v2-broken-in-production"),
            runner.check("production", "green", "v2-broken-in-production"),
            runner.check("production", "green", "v2-broken-in-production"),
        ],
        "stage passed at once; production was checked on green twice"
    );
    env.await_endpoints("web", "blue", 2).await;
    let after = env.fingerprint("web").await;
    assert_eq!(
        after.selectors, before.selectors,
        "production selects blue again"
    );
    assert_eq!(
        after.revision,
        before.revision + 3,
        "deploy, swap, swap back: {after:?}"
    );
    let status = env
        .bgslot(&["status", "web", "-o", "json"])
        .await
        .must_succeed()
        .json();
    assert_eq!(
        status["description"], "bgslot rollback green->blue",
        "the last helm write is the swap back: {status}"
    );
    let swapped_back =
        "verification against production failed; production was swapped back to blue";
    let report = runner.report("broken");
    assert_eq!(
        (report["exit_code"].as_i64(), report["kind"].as_str()),
        (Some(1), Some("failed")),
        "the report is bgslot's error document: {report}"
    );
    assert!(
        report["caused_by"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == swapped_back),
        "the report says production was swapped back: {report}"
    );
    assert_lines(
        &run,
        &[
            "bgslot-release: web NOT released: exit 1 (failed)",
            &format!("  caused by: {swapped_back}"),
        ],
    );
    env.done().await;
}

async fn held_lock_exits_4_and_changes_nothing(major: u32) {
    let env = Env::new(major, "ci-lock").await;
    let runner = Runner::new(&env).await;
    env.hold_lock("web", "ci@other-runner pid 7 (release)")
        .await;
    let run = runner
        .release("locked", &[], &[("RELEASE_TAG", "v1")])
        .await;
    assert_eq!(run.code, 4, "a held lock exits 4: {run:?}");
    let report = runner.report("locked");
    assert_eq!(
        (report["exit_code"].as_i64(), report["kind"].as_str()),
        (Some(4), Some("locked")),
        "the report says locked: {report}"
    );
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("ci@other-runner pid 7 (release)"),
        "the report names the holder: {report}"
    );
    assert_lines(
        &run,
        &["  exit 4: another bgslot holds the release lock (another pipeline or a person is releasing web); nothing was changed"],
    );
    assert_eq!(
        env.helm_json(&["list"]),
        json!([]),
        "no release was installed"
    );
    assert_eq!(runner.checks(), [], "no check ran");
    env.done().await;
}

async fn cancelled_job_stops_bgslot_cleanly(major: u32) {
    let env = Env::new(major, "ci-cancel").await;
    let runner = Runner::new(&env).await;
    runner.install().await;
    let before = env.fingerprint("web").await;
    let report = runner.report_path("cancelled");
    let child = runner
        .command(
            "bgslot-release.sh",
            &[],
            &[
                ("RELEASE_TAG", "v2-never-ready"),
                ("RELEASE_REPORT", report.to_str().unwrap()),
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::eventually("the release waits for green", || async {
        env.is_waiting_on_green().await
    })
    .await;
    // The runner signals the job's script only (not its process group): the script passes it on.
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    let run = Run::from(child.wait_with_output().await.unwrap());
    assert_eq!(run.code, 1, "bgslot stopped by SIGTERM exits 1: {run:?}");
    let report = runner.report("cancelled");
    assert!(
        report["caused_by"][0]
            .as_str()
            .unwrap()
            .contains("stopped by SIGTERM"),
        "the report says bgslot was stopped by SIGTERM: {report}"
    );
    assert_lines(&run, &["bgslot-release: web NOT released: exit 1 (failed)"]);
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    assert!(
        leases.get_opt("bgslot-lock-web").await.unwrap().is_none(),
        "bgslot released the lock"
    );
    assert_eq!(
        env.fingerprint("web").await.selectors,
        before.selectors,
        "production is untouched"
    );
    assert_eq!(runner.checks().len(), 1, "no check ran after the install");
    env.done().await;
}

async fn plain_pipeline_builds_and_releases_the_commit(major: u32) {
    let env = Env::new(major, "ci-shell").await;
    let runner = Runner::new(&env).await;
    // An application checkout with one commit, and a docker that records what it is asked.
    let repo = runner.path("app");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join("Dockerfile"), "FROM nginx:1.27\n").unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=ci", "-c", "user.email=ci@example.com"])
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    git(&["init", "-q"]);
    git(&["add", "Dockerfile"]);
    git(&["commit", "-q", "-m", "first"]);
    let sha = git(&["rev-parse", "HEAD"]).trim().to_string();
    let docker_log = runner.path("docker.log");
    write_executable(
        &runner.path("bin").join("docker"),
        &format!("#!/bin/sh\necho \"$*\" >> '{}'\n", docker_log.display()),
    );
    // Another bgslot holds the lock when the pipeline starts: pipeline.sh waits for it.
    env.hold_lock("web", "ci@other-runner pid 7 (release)")
        .await;
    let mut child = runner
        .command(
            "pipeline.sh",
            &["--replicas", "2"],
            &[("IMAGE", "registry.local:5000/acme/web")],
        )
        .current_dir(&repo)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let reader = {
        let stderr = stderr.clone();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut all = stderr.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        })
    };
    common::eventually("the pipeline waits for the release lock", || async {
        stderr
            .lock()
            .unwrap()
            .contains("waiting for the release lock: ")
    })
    .await;
    Api::<Lease>::namespaced(env.client.clone(), &env.ns)
        .delete("bgslot-lock-web", &DeleteParams::default())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    reader.await.unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: stderr.lock().unwrap().clone(),
    };
    assert_eq!(
        run.code, 0,
        "the pipeline released once the lock was free: {run:?}"
    );
    let image = format!("registry.local:5000/acme/web:{sha}");
    assert_eq!(
        std::fs::read_to_string(&docker_log).unwrap(),
        format!("build -t {image} .\npush {image}\n"),
        "docker built and pushed the commit's image"
    );
    let report_path = repo.join(format!("bgslot-report-{sha}.json"));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(
        (report["production_slot"].as_str(), report["image"].as_str()),
        (Some("blue"), Some(image.as_str())),
        "the commit's image was installed as production: {report}"
    );
    assert_eq!(
        runner.checks(),
        [Check {
            tag: sha.clone(),
            ..runner.check("production", "blue", "")
        }],
        "production was checked for the commit's version"
    );
    env.await_endpoints("web", "blue", 2).await;
    env.done().await;
}

/// `sh bgslot-release.sh` with only `vars` (and PATH): for the checks that stop before bgslot.
fn script_alone(script: &str, vars: &[(&str, &str)]) -> Run {
    let out = std::process::Command::new("sh")
        .arg(ci_file(script))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .envs(vars.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    Run::from(out)
}

#[test]
fn release_script_rejects_a_bad_configuration_with_exit_2() {
    let bgslot = env!("CARGO_BIN_EXE_bgslot");
    let cases: [(&[(&str, &str)], &str); 5] = [
        (
            &[("BGSLOT", bgslot), ("RELEASE_TAG", "v1")],
            "RELEASE_NAME is not set",
        ),
        (
            &[("BGSLOT", bgslot), ("RELEASE_NAME", "web")],
            "RELEASE_TAG (or RELEASE_IMAGE) is not set",
        ),
        (
            &[
                ("BGSLOT", bgslot),
                ("RELEASE_NAME", "web"),
                ("RELEASE_TAG", "v1"),
                ("RELEASE_IMAGE", "nginx:v1"),
            ],
            "set RELEASE_TAG or RELEASE_IMAGE, not both",
        ),
        (
            &[
                ("BGSLOT", bgslot),
                ("RELEASE_NAME", "web"),
                ("RELEASE_TAG", "v1"),
                ("RELEASE_CLEAN", "maybe"),
            ],
            "RELEASE_CLEAN is true or false, not 'maybe'",
        ),
        (
            &[
                ("BGSLOT", "/nonexistent/bgslot"),
                ("RELEASE_NAME", "web"),
                ("RELEASE_TAG", "v1"),
            ],
            "bgslot not found: '/nonexistent/bgslot'",
        ),
    ];
    for (vars, message) in cases {
        let run = script_alone("bgslot-release.sh", vars);
        assert_eq!(run.code, 2, "{vars:?} is a usage error: {run:?}");
        assert!(
            run.stderr.contains(message),
            "{vars:?} says {message:?}: {run:?}"
        );
    }
}

#[test]
fn release_script_passes_on_bgslots_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let run = script_alone(
        "bgslot-release.sh",
        &[
            ("BGSLOT", env!("CARGO_BIN_EXE_bgslot")),
            ("RELEASE_NAME", "web"),
            ("RELEASE_TAG", "v1;rm"),
            ("RELEASE_REPORT", report.to_str().unwrap()),
        ],
    );
    assert_eq!(
        run.code, 2,
        "bgslot's usage error comes out as exit 2: {run:?}"
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["kind"], "usage", "the report is bgslot's: {report}");
    assert!(
        run.stdout
            .contains("  exit 2: bgslot rejected its command line: check the RELEASE_* variables and the arguments"),
        "{run:?}"
    );
}

#[test]
fn smoke_check_retries_and_checks_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let tries = dir.path().join("tries");
    // A fetch command that prints what a version endpoint would, and counts its calls.
    let fetch = format!(
        "sh -c 'echo \"$1\" >> {}; echo \"{{\\\"version\\\":\\\"v7\\\"}}\"' fetch",
        tries.display()
    );
    let bgslot_vars = [
        ("BGSLOT_TARGET", "production"),
        ("BGSLOT_URL", "http://web.shop.svc.cluster.local:80/"),
        ("BGSLOT_SERVICE", "web"),
        ("BGSLOT_SLOT", "green"),
        ("SMOKE_CMD", fetch.as_str()),
        ("SMOKE_PATH", "/version"),
        ("SMOKE_EXPECT_TAG", "true"),
        ("SMOKE_ATTEMPTS", "3"),
        ("SMOKE_INTERVAL", "0"),
    ];
    let mut vars = bgslot_vars.to_vec();
    vars.push(("BGSLOT_TAG", "v7"));
    let run = script_alone("smoke-check.sh", &vars);
    assert_eq!(run.code, 0, "the answer names v7: {run:?}");
    assert_eq!(
        std::fs::read_to_string(&tries).unwrap(),
        "http://web.shop.svc.cluster.local:80/version\n",
        "one try, at BGSLOT_URL plus SMOKE_PATH"
    );

    std::fs::remove_file(&tries).unwrap();
    let mut vars = bgslot_vars.to_vec();
    vars.push(("BGSLOT_TAG", "v8"));
    let run = script_alone("smoke-check.sh", &vars);
    assert_eq!(run.code, 1, "an answer without v8 fails: {run:?}");
    assert_eq!(
        std::fs::read_to_string(&tries).unwrap().lines().count(),
        3,
        "it tried SMOKE_ATTEMPTS times"
    );
    assert!(
        run.stdout.contains(
            "smoke-check: production (web -> green, version v8): the answer does not contain 'v8': {\"version\":\"v7\"}"
        ),
        "it says why: {run:?}"
    );

    let run = script_alone("smoke-check.sh", &[("BGSLOT_URL", "http://x/")]);
    assert_eq!(
        run.code, 2,
        "without BGSLOT_TARGET it is not run by bgslot: {run:?}"
    );
}

#[test]
fn scripts_are_posix_sh() {
    for script in ["bgslot-release.sh", "smoke-check.sh", "pipeline.sh"] {
        let out = std::process::Command::new("sh")
            .arg("-n")
            .arg(ci_file(script))
            .output()
            .unwrap();
        assert!(out.status.success(), "sh -n {script}: {out:?}");
        let text = std::fs::read_to_string(ci_file(script)).unwrap();
        assert!(
            text.starts_with("#!/bin/sh\n") && text.contains("\nset -eu\n"),
            "{script} is a #!/bin/sh script with set -eu"
        );
    }
}

fn yaml(name: &str) -> Value {
    let text = std::fs::read_to_string(ci_file(name)).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name} is not YAML: {e}"))
}

#[test]
fn github_actions_workflow_releases_with_the_script() {
    let wf = yaml("github-actions.yaml");
    assert_eq!(
        wf["on"]["push"]["branches"],
        json!(["main"]),
        "it runs on a push to main: {wf}"
    );
    assert_eq!(
        wf["concurrency"]["cancel-in-progress"],
        json!(false),
        "a queued run never cancels a release in progress"
    );
    assert!(wf["concurrency"]["group"].is_string());
    let release = &wf["jobs"]["release"];
    assert_eq!(
        release["needs"], "build",
        "the release follows the image build"
    );
    let steps = release["steps"].as_array().unwrap();
    let step = steps
        .iter()
        .find(|s| {
            s["run"]
                .as_str()
                .is_some_and(|r| r.contains("bgslot-release.sh"))
        })
        .expect("a step runs bgslot-release.sh");
    assert_eq!(step["env"]["RELEASE_TAG"], "${{ github.sha }}");
    assert_eq!(step["env"]["RELEASE_NAME"], "web");
    let upload = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact@"))
        })
        .expect("a step uploads the report");
    assert_eq!(
        upload["if"], "always()",
        "the report is uploaded when the release failed too"
    );
    assert_eq!(upload["with"]["path"], step["env"]["RELEASE_REPORT"]);
    assert!(
        steps
            .iter()
            .any(|s| s["env"]["KUBECONFIG_DATA"] == "${{ secrets.KUBECONFIG_DATA }}"),
        "the kubeconfig comes from a secret"
    );
}

#[test]
fn gitlab_job_releases_with_the_script() {
    let ci = yaml("gitlab-ci.yaml");
    let job = &ci["release"];
    assert_eq!(job["stage"], "release");
    assert!(
        job["resource_group"].is_string(),
        "one release at a time: {job}"
    );
    assert_eq!(job["interruptible"], json!(false));
    assert!(
        job["script"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains("bgslot-release.sh"))),
        "the job runs bgslot-release.sh: {job}"
    );
    assert_eq!(job["variables"]["RELEASE_TAG"], "$CI_COMMIT_SHA");
    assert_eq!(
        job["artifacts"]["when"], "always",
        "the report is kept when it failed too"
    );
    assert_eq!(
        job["artifacts"]["paths"],
        json!([job["variables"]["RELEASE_REPORT"]])
    );
    assert_eq!(ci["stages"], json!(["build", "release"]));
}

#[test]
fn github_actions_clusters_workflow_releases_every_cluster_with_one_secret_each() {
    let wf = yaml("github-actions-clusters.yaml");
    assert_eq!(wf["on"]["push"]["branches"], json!(["main"]));
    assert_eq!(wf["concurrency"]["cancel-in-progress"], json!(false));
    let release = &wf["jobs"]["release"];
    assert_eq!(release["needs"], "build");
    let steps = release["steps"].as_array().unwrap();
    let kube = steps
        .iter()
        .find(|s| s["env"]["KUBECONFIG_EU"].is_string())
        .expect("a step writes the kubeconfigs");
    assert_eq!(
        (&kube["env"]["KUBECONFIG_EU"], &kube["env"]["KUBECONFIG_US"]),
        (
            &json!("${{ secrets.KUBECONFIG_EU }}"),
            &json!("${{ secrets.KUBECONFIG_US }}")
        ),
        "one secret per cluster"
    );
    let step = steps
        .iter()
        .find(|s| {
            s["run"]
                .as_str()
                .is_some_and(|r| r.contains("bgslot-release.sh --targets deploy/targets.yaml"))
        })
        .expect("a step runs bgslot-release.sh across the targets");
    assert_eq!(step["env"]["RELEASE_TAG"], "${{ github.sha }}");
    let upload = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact@"))
        })
        .expect("a step uploads the report");
    assert_eq!(upload["if"], "always()");
    // The example targets file names the kubeconfigs where the job writes them.
    let targets = yaml("targets.yaml");
    for (i, name) in ["eu", "us"].into_iter().enumerate() {
        assert_eq!(targets["targets"][i]["name"], name);
        assert_eq!(
            targets["targets"][i]["kubeconfig"],
            format!("kube/{name}.yaml")
        );
        assert!(kube["run"]
            .as_str()
            .unwrap()
            .contains(&format!("> deploy/kube/{name}.yaml")));
    }
}

with_both_helms!(the_clusters_workflow_runs_its_steps_on_two_control_planes);

/// The release job of `github-actions-clusters.yaml`, run: its kubeconfig step (with the two
/// control planes' kubeconfigs as the secrets) and its release step, in a checkout laid out as
/// the workflow expects (`ci/`, `deploy/targets.yaml` from the example, its contexts and
/// namespace made these planes'), first installing, then releasing across both.
async fn the_clusters_workflow_runs_its_steps_on_two_control_planes(major: u32) {
    use common::clusters;
    let _gate = clusters::shared().await;
    let (first, second) = (clusters::first(), clusters::second().await);
    let eu = Env::new(major, "ci-clusters").await;
    let us = eu
        .same_namespace_on(second.client().await, &second.kubeconfig_str())
        .await;
    let wf = yaml("github-actions-clusters.yaml");
    let steps = wf["jobs"]["release"]["steps"].as_array().unwrap().clone();
    let kube = steps
        .iter()
        .find(|s| s["env"]["KUBECONFIG_EU"].is_string())
        .unwrap();
    let release = steps
        .iter()
        .find(|s| {
            s["run"]
                .as_str()
                .is_some_and(|r| r.contains("bgslot-release.sh"))
        })
        .unwrap();

    let checkout = tempfile::tempdir().unwrap();
    let at = |p: &str| checkout.path().join(p);
    std::fs::create_dir_all(at("ci")).unwrap();
    std::fs::create_dir_all(at("deploy")).unwrap();
    for script in ["bgslot-release.sh", "smoke-check.sh"] {
        std::fs::copy(ci_file(script), at(&format!("ci/{script}"))).unwrap();
    }
    let targets = std::fs::read_to_string(ci_file("targets.yaml"))
        .unwrap()
        .replace("context: prod-eu", &format!("context: {}", first.context))
        .replace("context: prod-us", &format!("context: {}", second.context))
        .replace("namespace: shop", &format!("namespace: {}", eu.ns));
    std::fs::write(at("deploy/targets.yaml"), targets).unwrap();
    std::fs::write(at("deploy/values.yaml"), "replicaCount: 1\n").unwrap();
    let log = at("verify.log");
    let verify = at("verify.sh");
    write_executable(
        &verify,
        &format!(
            "#!/bin/sh\necho \"$BGSLOT_CLUSTER $BGSLOT_TARGET $BGSLOT_TAG\" >> '{}'\n",
            log.display()
        ),
    );

    // Runs one step's `run:` as the runner would: in the checkout, with the step's env.
    let step = |step: &Value, extra: Vec<(&str, String)>| {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(step["run"].as_str().unwrap())
            .current_dir(checkout.path())
            .env_clear();
        for (k, v) in eu.helm.command().get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        cmd.env("PATH", std::env::var("PATH").unwrap())
            .env("HOME", std::env::var("HOME").unwrap())
            .env("USER", "ci")
            .env("HELM_BIN", &eu.helm.path)
            .env("NO_COLOR", "1")
            .env("BGSLOT", env!("CARGO_BIN_EXE_bgslot"));
        for (k, v) in step["env"].as_object().into_iter().flatten() {
            cmd.env(k, v.as_str().unwrap_or_default());
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
        cmd
    };
    let secret = |plane: &clusters::Plane| std::fs::read_to_string(plane.kubeconfig()).unwrap();
    let wrote = step(
        kube,
        vec![
            ("KUBECONFIG_EU", secret(&first)),
            ("KUBECONFIG_US", secret(&second)),
        ],
    )
    .output()
    .await
    .unwrap();
    assert!(wrote.status.success(), "the kubeconfig step: {wrote:?}");

    let released = |tag: &str| {
        step(
            release,
            vec![
                ("RELEASE_TAG", tag.to_string()),
                ("RELEASE_MIN_AGE", "1s".to_string()),
                ("VERIFY_CMD", verify.display().to_string()),
            ],
        )
        .output()
    };
    let run = Run::from(released("v1").await.unwrap()).must_succeed();
    assert!(
        run.stdout
            .contains("bgslot-release: web released across clusters (run "),
        "{run:?}"
    );
    let run = Run::from(released("v2").await.unwrap()).must_succeed();
    assert_lines(
        &run,
        &[
            "  eu: production (green) runs v2, reached done",
            "  us: production (green) runs v2, reached done",
        ],
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(at("bgslot-report.json")).unwrap()).unwrap();
    assert_eq!(report["consistent"], true, "{report}");
    let calls = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        [
            "eu production v1",
            "us production v1",
            "eu stage v2",
            "us stage v2",
            "eu production v2",
            "us production v2",
        ],
        "each cluster's checks, told apart by BGSLOT_CLUSTER"
    );
    for (env, plane) in [(&eu, &first), (&us, &second)] {
        let service = format!("{}/web", env.ns);
        common::eventually("each cluster's proxy serves v2", || async {
            common::dataplane::version_behind(&plane.dir, &service)
                .await
                .as_deref()
                == Some("v2")
        })
        .await;
        // RELEASE_CLEAN: the old slot was cleaned everywhere.
        assert_eq!(
            env.fingerprint("web")
                .await
                .deployments
                .keys()
                .collect::<Vec<_>>(),
            ["web-green"]
        );
    }
}
