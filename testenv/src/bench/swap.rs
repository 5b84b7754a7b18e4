//! The swap-cost benchmark (`testenv swap-bench`, run by `scripts/bench`): what a full safe
//! `bgslot swap` costs next to a bare `helm upgrade --reuse-values` of the same change and next to
//! patching the two Services' selectors by hand, how soon after each the node's proxy routes only
//! to the new slot, how late `bgslot deploy` returns after its Deployment became available, and
//! how many helm commands one swap runs; what `bgslot status` costs next to `helm status` (and how
//! many helm commands it runs), and how soon `bgslot status --watch` redraws after a change it
//! watches. Each helm measures a release of bgslot's chart (`mode: bundled`) and a router whose
//! slots are releases of a `helm create` chart (`mode: router`), in the same rounds and with the
//! same keys. Helms and modes run one after the other so their timings do not disturb each other.
//! Figures only, no asserts.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{helm_version, median};
use crate::proxy::{self, now_unix, EVENTS_FILE};

const RELEASE: &str = "web";
/// The Services flip without the node's propagation lag, so a flip measures the control plane
/// (API, endpoints controller, watch) and not the lag every way of swapping pays alike.
const NO_LAG: &str = r"service.annotations.sim\.bgslot\.dev/proxy-lag=0s";
/// Replicas per slot, as in a small production.
const REPLICAS: &str = "3";
/// The goal for `bgslot swap` against a bare `helm upgrade --reuse-values`.
const GOAL_RATIO: f64 = 1.1;
/// The goal for a `status --watch` redraw after a change, in ms.
const GOAL_REDRAW_MS: f64 = 100.0;

#[derive(clap::Args, Clone, Debug)]
pub struct Options {
    /// The bgslot binary to benchmark.
    #[arg(long)]
    pub bgslot: PathBuf,
    /// A helm binary; repeat for each (they run one after the other).
    #[arg(long = "helm", required = true)]
    pub helms: Vec<PathBuf>,
    /// Timed swaps (and bare upgrades, selector patches and deploys) per helm.
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// Where swap.json goes.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// The directory `up` printed (default: $BGSLOT_TESTENV_DIR).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// One helm's samples, in milliseconds.
#[derive(Debug, Default, Serialize)]
pub struct Samples {
    pub bgslot_swap_ms: Vec<f64>,
    pub bare_upgrade_ms: Vec<f64>,
    pub selector_patch_ms: Vec<f64>,
    pub flip_ms: Vec<f64>,
    pub bare_upgrade_flip_ms: Vec<f64>,
    pub selector_patch_flip_ms: Vec<f64>,
    pub ready_noticed_ms: Vec<f64>,
    pub status_ms: Vec<f64>,
    pub helm_status_ms: Vec<f64>,
    pub watch_redraw_ms: Vec<f64>,
}

/// One helm's figures in one mode, as swap.json has them.
#[derive(Debug, Serialize)]
pub struct HelmRun {
    pub helm: String,
    /// `bundled` (a release of bgslot's chart) or `router` (slots that are releases of another chart).
    pub mode: &'static str,
    pub bgslot_swap_ms_median: Option<f64>,
    pub bare_upgrade_ms_median: Option<f64>,
    pub selector_patch_ms_median: Option<f64>,
    pub swap_to_bare_ratio: Option<f64>,
    pub helm_commands_per_swap: usize,
    pub helm_commands: Vec<String>,
    pub ready_noticed_ms_median: Option<f64>,
    pub flip_ms_median: Option<f64>,
    pub bare_upgrade_flip_ms_median: Option<f64>,
    pub selector_patch_flip_ms_median: Option<f64>,
    /// `bgslot status` of the release, and `helm status` of the same release.
    pub status_ms_median: Option<f64>,
    pub helm_status_ms_median: Option<f64>,
    pub helm_commands_per_status: usize,
    /// From a change of a Service's selector to the `status --watch` frame that shows it.
    pub watch_redraw_ms_median: Option<f64>,
    pub samples: Samples,
}

pub async fn run(opts: Options) -> Result<()> {
    let dir = crate::env_dir(opts.dir.clone())?;
    let client = crate::client_for(&dir.join("kubeconfig")).await?;
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let chart = dir.join("swap-bench-chart");
    let exported = tokio::process::Command::new(&opts.bgslot)
        .args(["chart", "export"])
        .arg(&chart)
        .output()
        .await
        .with_context(|| format!("running {}", opts.bgslot.display()))?;
    if !exported.status.success() {
        bail!(
            "bgslot chart export failed: {}",
            String::from_utf8_lossy(&exported.stderr)
        );
    }
    let mut runs = Vec::new();
    for helm in &opts.helms {
        let version = helm_version(helm).await?;
        let major = version
            .trim_start_matches('v')
            .split('.')
            .next()
            .unwrap_or("x")
            .to_string();
        // The chart most teams started from, as this helm makes it.
        let apps = dir.join(format!("swap-bench-app-h{major}"));
        let _ = std::fs::remove_dir_all(&apps);
        std::fs::create_dir_all(&apps).with_context(|| format!("creating {}", apps.display()))?;
        let created = tokio::process::Command::new(helm)
            .args(["create", "myapp"])
            .current_dir(&apps)
            .output()
            .await
            .with_context(|| format!("running {} create", helm.display()))?;
        if !created.status.success() {
            bail!(
                "helm create failed: {}",
                String::from_utf8_lossy(&created.stderr)
            );
        }
        let app = apps.join("myapp");
        for mode in [Mode::Bundled, Mode::Router { chart: &app }] {
            let bench = SwapBench {
                mode,
                opts: &opts,
                dir: &dir,
                client: &client,
                helm,
                chart: &chart,
                major: major.clone(),
            };
            runs.push(bench.run(version.clone()).await?);
        }
    }
    print!("{}", table(&runs, opts.rounds));
    let path = opts.out.join("swap.json");
    let doc = json!({ "rounds": opts.rounds, "replicas_per_slot": 3, "runs": runs });
    std::fs::write(&path, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// What a bench round swaps: a release of bgslot's chart, or a router whose slots are releases
/// of `chart` (made with `helm create myapp`).
#[derive(Clone, Copy)]
enum Mode<'a> {
    Bundled,
    Router { chart: &'a Path },
}

impl Mode<'_> {
    fn name(self) -> &'static str {
        match self {
            Mode::Bundled => "bundled",
            Mode::Router { .. } => "router",
        }
    }
}

struct SwapBench<'a> {
    mode: Mode<'a>,
    opts: &'a Options,
    dir: &'a Path,
    client: &'a Client,
    helm: &'a Path,
    chart: &'a Path,
    major: String,
}

impl SwapBench<'_> {
    fn ns(&self) -> String {
        match self.mode {
            Mode::Bundled => format!("swapbench-h{}", self.major),
            Mode::Router { .. } => format!("swapbench-h{}-router", self.major),
        }
    }

    /// A second release only ever flipped by hand: bgslot never meets the hand edit.
    fn patch_ns(&self) -> String {
        format!("{}-patch", self.ns())
    }

    fn progress(&self, text: &str) {
        eprintln!(
            "swap-bench helm {} {}: {text}",
            self.major,
            self.mode.name()
        );
    }

    /// The install of the release, as the mode has it.
    fn install_args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "deploy",
            RELEASE,
            "--tag",
            "v1",
            "--replicas",
            REPLICAS,
            "--create-namespace",
        ]
        .map(String::from)
        .to_vec();
        match self.mode {
            Mode::Bundled => args.extend(["--set".into(), NO_LAG.into()]),
            Mode::Router { chart } => args.extend([
                "--app-chart".into(),
                chart.display().to_string(),
                "--router-set".into(),
                NO_LAG.into(),
            ]),
        }
        args
    }

    /// The Deployment that serves `slot`.
    fn deployment(&self, slot: &str) -> String {
        match self.mode {
            Mode::Bundled => format!("{RELEASE}-{slot}"),
            Mode::Router { .. } => format!("{RELEASE}-{slot}-myapp"),
        }
    }

    async fn run(&self, version: String) -> Result<HelmRun> {
        let (ns, patch_ns) = (self.ns(), self.patch_ns());
        for ns in [&ns, &patch_ns] {
            self.delete_namespace(ns).await?;
            let install = self.install_args();
            self.bgslot_ok(ns, &install.iter().map(String::as_str).collect::<Vec<_>>())
                .await?;
            self.bgslot_ok(ns, &["deploy", RELEASE, "--tag", "v2"])
                .await?;
            self.await_routes(ns, "blue").await?;
        }
        let mut s = Samples::default();
        // Each round swaps to the idle slot and back, then deploys a new version to it again.
        let (production, idle) = ("blue", "green");
        for round in 1..=self.opts.rounds {
            // A bgslot swap and a bare helm upgrade of the same change, one moving production to
            // the idle slot and the other moving it back. They take turns going first, so neither
            // always runs right after the previous round's deploy, whose old pods are still
            // stopping: the two are timed under the same conditions.
            let swap_first = round % 2 == 1;
            let (swap_to, bare_to) = if swap_first {
                (idle, production)
            } else {
                (production, idle)
            };
            let swap = self.timed_flip(&ns, swap_to, async {
                self.bgslot_ok(&ns, &["swap", RELEASE]).await
            });
            let set = format!("productionSlot={bare_to}");
            let bare = self.timed_flip(&ns, bare_to, async {
                self.helm_ok(&[
                    "upgrade",
                    RELEASE,
                    &self.chart.display().to_string(),
                    "--namespace",
                    &ns,
                    "--reuse-values",
                    "--set-string",
                    &set,
                ])
                .await
            });
            let ((ms, flip), (bare_ms, bare_flip)) = if swap_first {
                let swapped = swap.await?;
                (swapped, bare.await?)
            } else {
                let bared = bare.await?;
                (swap.await?, bared)
            };
            s.bgslot_swap_ms.push(ms);
            s.flip_ms.push(flip);
            s.bare_upgrade_ms.push(bare_ms);
            s.bare_upgrade_flip_ms.push(bare_flip);
            // The two selectors patched by hand, on the other release.
            let patched_to = if round % 2 == 1 { "green" } else { "blue" };
            let (ms, flip) = self
                .timed_flip(&patch_ns, patched_to, async {
                    self.patch_selectors(&patch_ns, patched_to).await
                })
                .await?;
            s.selector_patch_ms.push(ms);
            s.selector_patch_flip_ms.push(flip);
            // What status costs, with bgslot and with helm, and how soon a watch shows a change.
            s.status_ms.push(
                self.timed(self.bgslot_ok(&ns, &["status", RELEASE]))
                    .await?,
            );
            s.helm_status_ms.push(
                self.timed(self.helm_ok(&["status", RELEASE, "--namespace", &ns, "-o", "json"]))
                    .await?,
            );
            s.watch_redraw_ms
                .push(self.watch_redraw(&patch_ns, other(patched_to)).await?);
            // Back as the round left it, so the next round's patch is a change again.
            self.patch_selectors(&patch_ns, patched_to).await?;
            self.await_routes(&patch_ns, patched_to).await?;
            // A deploy to the idle slot: how late bgslot returns after it is available.
            let tag = format!("v{}", round + 2);
            s.ready_noticed_ms
                .push(self.ready_noticed(&ns, idle, &tag).await?);
            self.progress(&format!(
                "round {round}/{}: swap {:.0} ms (flip {:.0} ms), bare upgrade {:.0} ms (flip {:.0} ms), selector patch {:.0} ms (flip {:.0} ms), deploy returned {:.0} ms after available, status {:.0} ms (helm {:.0} ms), watch redrew {:.0} ms after a change",
                self.opts.rounds,
                s.bgslot_swap_ms.last().unwrap(),
                s.flip_ms.last().unwrap(),
                s.bare_upgrade_ms.last().unwrap(),
                s.bare_upgrade_flip_ms.last().unwrap(),
                s.selector_patch_ms.last().unwrap(),
                s.selector_patch_flip_ms.last().unwrap(),
                s.ready_noticed_ms.last().unwrap(),
                s.status_ms.last().unwrap(),
                s.helm_status_ms.last().unwrap(),
                s.watch_redraw_ms.last().unwrap(),
            ));
        }
        let helm_commands = self.helm_commands(&ns, &["swap", RELEASE]).await?;
        let status_commands = self.helm_commands(&ns, &["status", RELEASE]).await?;
        for ns in [&ns, &patch_ns] {
            self.delete_namespace(ns).await?;
        }
        let ratio = match (
            median(s.bgslot_swap_ms.clone()),
            median(s.bare_upgrade_ms.clone()),
        ) {
            (Some(a), Some(b)) if b > 0.0 => Some((a / b * 100.0).round() / 100.0),
            _ => None,
        };
        Ok(HelmRun {
            helm: version,
            mode: self.mode.name(),
            bgslot_swap_ms_median: median(s.bgslot_swap_ms.clone()),
            bare_upgrade_ms_median: median(s.bare_upgrade_ms.clone()),
            selector_patch_ms_median: median(s.selector_patch_ms.clone()),
            swap_to_bare_ratio: ratio,
            helm_commands_per_swap: helm_commands.len(),
            helm_commands,
            ready_noticed_ms_median: median(s.ready_noticed_ms.clone()),
            flip_ms_median: median(s.flip_ms.clone()),
            bare_upgrade_flip_ms_median: median(s.bare_upgrade_flip_ms.clone()),
            selector_patch_flip_ms_median: median(s.selector_patch_flip_ms.clone()),
            status_ms_median: median(s.status_ms.clone()),
            helm_status_ms_median: median(s.helm_status_ms.clone()),
            helm_commands_per_status: status_commands.len(),
            watch_redraw_ms_median: median(s.watch_redraw_ms.clone()),
            samples: s,
        })
    }

    /// Runs `step`, which moves production of `ns` to `to`; returns its wall time and the time
    /// from its start to the proxy routing only to `to`'s pods (both in ms). Waits for that flip,
    /// so the next step starts from a settled routing table.
    async fn timed_flip(
        &self,
        ns: &str,
        to: &str,
        step: impl std::future::Future<Output = Result<()>>,
    ) -> Result<(f64, f64)> {
        let began_unix = now_unix();
        let began = Instant::now();
        step.await?;
        let took = began.elapsed().as_secs_f64() * 1000.0;
        let service = format!("{ns}/{RELEASE}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let events = std::fs::read_to_string(self.dir.join(EVENTS_FILE))
                .with_context(|| format!("reading {EVENTS_FILE}"))?;
            if let Some(t) = first_flip(&events, &service, to, began_unix) {
                return Ok((took, (t - began_unix) * 1000.0));
            }
            if Instant::now() > deadline {
                bail!("the proxy did not route {service} to {to} within 60s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Deploys `tag` to `slot` (idle) and returns how long after the Deployment became fully
    /// available `bgslot deploy` exited, in ms: an upper bound of how late bgslot noticed, since it
    /// includes printing the report and the process's exit.
    async fn ready_noticed(&self, ns: &str, slot: &str, tag: &str) -> Result<f64> {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        let name = self.deployment(slot);
        let before = deployments
            .get(&name)
            .await
            .with_context(|| format!("reading Deployment {ns}/{name}"))?
            .metadata
            .generation
            .unwrap_or(0);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let (watching, watch_started) = tokio::sync::oneshot::channel();
        let available = tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(deployments, config)
                .default_backoff()
                .touched_objects());
            let mut watching = Some(watching);
            while let Some(event) = stream.next().await {
                let Ok(d) = event else { continue };
                if let Some(started) = watching.take() {
                    let _ = started.send(());
                }
                // The rollout this deploy starts: a newer generation, fully available.
                if d.metadata.generation.unwrap_or(0) > before && fully_available(&d) {
                    return Some(now_unix());
                }
            }
            None
        });
        tokio::time::timeout(Duration::from_secs(30), watch_started)
            .await
            .context("the watch on the Deployment did not start within 30s")??;
        self.bgslot_ok(ns, &["deploy", RELEASE, "--tag", tag, "--replace"])
            .await?;
        let exited = now_unix();
        let available = tokio::time::timeout(Duration::from_secs(30), available)
            .await
            .ok()
            .and_then(|joined| joined.ok().flatten())
            .with_context(|| format!("the watch never saw Deployment {ns}/{name} available"))?;
        Ok((exited - available) * 1000.0)
    }

    /// The wall time of `step`, in ms.
    async fn timed(&self, step: impl std::future::Future<Output = Result<()>>) -> Result<f64> {
        let began = Instant::now();
        step.await?;
        Ok(began.elapsed().as_secs_f64() * 1000.0)
    }

    /// Starts `bgslot status --watch -o json` on `ns`, patches the Services' selectors to
    /// `production` once its first frame is out, and returns how long after the patch the frame
    /// showing it arrived, in ms.
    async fn watch_redraw(&self, ns: &str, production: &str) -> Result<f64> {
        use tokio::io::AsyncBufReadExt;
        let mut watch = tokio::process::Command::new(&self.opts.bgslot)
            .args([
                "status",
                RELEASE,
                "--watch",
                "-o",
                "json",
                "--namespace",
                ns,
            ])
            .env("HELM_BIN", self.helm)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("running {}", self.opts.bgslot.display()))?;
        let mut frames =
            tokio::io::BufReader::new(watch.stdout.take().context("the watch's stdout")?).lines();
        let selects = |line: &str| -> Option<String> {
            let frame: serde_json::Value = serde_json::from_str(line).ok()?;
            let main = frame["services"]
                .as_array()?
                .iter()
                .find(|s| s["service"] == "main" && s["role"] == "production")?;
            main["selects"].as_str().map(str::to_string)
        };
        let wait = Duration::from_secs(30);
        tokio::time::timeout(wait, frames.next_line())
            .await
            .context("no first frame from the watch within 30s")??;
        let began = Instant::now();
        self.patch_selectors(ns, production).await?;
        loop {
            let line = tokio::time::timeout(wait, frames.next_line())
                .await
                .context("the watch drew no frame with the change within 30s")??
                .context("the watch ended")?;
            if selects(&line).as_deref() == Some(production) {
                let took = began.elapsed().as_secs_f64() * 1000.0;
                let _ = watch.start_kill();
                return Ok(took);
            }
        }
    }

    /// Which helm commands one bgslot command runs (from `bgslot -v`), on a run of its own.
    async fn helm_commands(&self, ns: &str, command: &[&str]) -> Result<Vec<String>> {
        let mut args = vec!["-v"];
        args.extend(command);
        let out = self.bgslot(ns, &args).await?;
        if !out.status.success() {
            bail!(
                "bgslot -v {} failed: {}",
                command.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter_map(|l| l.strip_prefix("+ "))
            .map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                // `helm status`, `helm upgrade`: the binary's path says nothing.
                words
                    .get(1..3)
                    .map(|w| format!("helm {}", w.join(" ")))
                    .unwrap_or_default()
            })
            .collect())
    }

    async fn patch_selectors(&self, ns: &str, production: &str) -> Result<()> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), ns);
        for (name, slot) in [
            (RELEASE.to_string(), production),
            (format!("{RELEASE}-stage"), other(production)),
        ] {
            let patch = match self.mode {
                Mode::Bundled => json!({ "spec": { "selector": { "bgslot/slot": slot } } }),
                // A router's Services select a slot release's pods by its instance label.
                Mode::Router { .. } => json!({ "spec": { "selector": {
                    "app.kubernetes.io/instance": format!("{RELEASE}-{slot}")
                } } }),
            };
            services
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| format!("patching the selector of Service {ns}/{name}"))?;
        }
        Ok(())
    }

    async fn bgslot(&self, ns: &str, args: &[&str]) -> Result<std::process::Output> {
        tokio::process::Command::new(&self.opts.bgslot)
            .args(args)
            .args(["--namespace", ns])
            .env("HELM_BIN", self.helm)
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .with_context(|| format!("running {}", self.opts.bgslot.display()))
    }

    async fn bgslot_ok(&self, ns: &str, args: &[&str]) -> Result<()> {
        let out = self.bgslot(ns, args).await?;
        if !out.status.success() {
            bail!(
                "bgslot {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    async fn helm_ok(&self, args: &[&str]) -> Result<()> {
        let out = tokio::process::Command::new(self.helm)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .with_context(|| format!("running {}", self.helm.display()))?;
        if !out.status.success() {
            bail!(
                "helm {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    async fn await_routes(&self, ns: &str, slot: &str) -> Result<()> {
        let service = format!("{ns}/{RELEASE}");
        let prefix = format!("{RELEASE}-{slot}-");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let routed = proxy::read_services(self.dir)?
                .get(&service)
                .and_then(|s| s.ports.first().map(|p| p.backends.clone()))
                .unwrap_or_default();
            if !routed.is_empty() && routed.iter().all(|b| b.pod.starts_with(&prefix)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the proxy does not route {service} to {slot} after 60s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn delete_namespace(&self, name: &str) -> Result<()> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let _ = namespaces.delete(name, &DeleteParams::background()).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        while namespaces.get_opt(name).await?.is_some() {
            if Instant::now() > deadline {
                bail!("namespace {name} still exists 120s after its deletion");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(())
    }
}

fn other(slot: &str) -> &'static str {
    if slot == "blue" {
        "green"
    } else {
        "blue"
    }
}

/// Whether the Deployment's current rollout is complete and available.
fn fully_available(d: &Deployment) -> bool {
    let (Some(spec), Some(status)) = (&d.spec, &d.status) else {
        return false;
    };
    let want = spec.replicas.unwrap_or(1);
    let observed = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let available = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Available" && c.status == "True");
    observed
        && available
        && status.updated_replicas.unwrap_or(0) == want
        && status.ready_replicas.unwrap_or(0) == want
        && status.available_replicas.unwrap_or(0) == want
        && status.replicas.unwrap_or(0) == want
}

/// The first routing change of `service` at or after `since` (unix s) that routes only to pods of
/// `slot`: when the proxy applied it.
fn first_flip(events: &str, service: &str, slot: &str, since: f64) -> Option<f64> {
    #[derive(Deserialize)]
    struct Routes {
        t: f64,
        event: String,
        #[serde(default)]
        service: String,
        #[serde(default)]
        backends: Vec<proxy::Backend>,
    }
    let prefix = format!("{RELEASE}-{slot}-");
    events
        .lines()
        .filter_map(|l| serde_json::from_str::<Routes>(l).ok())
        .find(|e| {
            e.event == "routes"
                && e.service == service
                && e.t >= since
                && !e.backends.is_empty()
                && e.backends.iter().all(|b| b.pod.starts_with(&prefix))
        })
        .map(|e| e.t)
}

fn table(runs: &[HelmRun], rounds: usize) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} ms"));
    let mut out = format!(
        "\nswap cost: {rounds} rounds per helm, {REPLICAS} replicas per slot, medians (flip: from the start to the proxy routing only to the new slot, without propagation lag)\n\n"
    );
    out += &format!(
        "  {:<8} {:<8} {:>12} {:>12} {:>12} {:>7} {:>10} {:>12} {:>12} {:>12} {:>14}\n",
        "helm",
        "mode",
        "bgslot swap",
        "bare upgrade",
        "sel. patch",
        "ratio",
        "helm cmds",
        "swap flip",
        "upgrade flip",
        "patch flip",
        "ready noticed"
    );
    for r in runs {
        let ratio = r
            .swap_to_bare_ratio
            .map_or("-".to_string(), |x| format!("{x:.2}x"));
        out += &format!(
            "  {:<8} {:<8} {:>12} {:>12} {:>12} {:>7} {:>10} {:>12} {:>12} {:>12} {:>14}\n",
            r.helm,
            r.mode,
            ms(r.bgslot_swap_ms_median),
            ms(r.bare_upgrade_ms_median),
            ms(r.selector_patch_ms_median),
            ratio,
            r.helm_commands_per_swap,
            ms(r.flip_ms_median),
            ms(r.bare_upgrade_flip_ms_median),
            ms(r.selector_patch_flip_ms_median),
            ms(r.ready_noticed_ms_median),
        );
    }
    out += &format!(
        "\n  {:<8} {:<9} {:>14} {:>14} {:>18} {:>16}\n",
        "helm", "mode", "bgslot status", "helm status", "helm cmds/status", "watch redraw"
    );
    for r in runs {
        out += &format!(
            "  {:<8} {:<9} {:>14} {:>14} {:>18} {:>16}\n",
            r.helm,
            r.mode,
            ms(r.status_ms_median),
            ms(r.helm_status_ms_median),
            r.helm_commands_per_status,
            ms(r.watch_redraw_ms_median),
        );
    }
    for r in runs {
        let redraw = r
            .watch_redraw_ms_median
            .is_some_and(|x| x <= GOAL_REDRAW_MS);
        let faster =
            matches!((r.status_ms_median, r.helm_status_ms_median), (Some(a), Some(b)) if a < b);
        out += &format!(
            "\n  {} {}: status {} helm status (goal: faster, with no helm process: {}); a watch redraw {} the {GOAL_REDRAW_MS} ms goal",
            r.helm,
            r.mode,
            if faster { "is faster than" } else { "is not faster than" },
            r.helm_commands_per_status,
            if redraw { "meets" } else { "misses" }
        );
    }
    for r in runs {
        let met = r.swap_to_bare_ratio.is_some_and(|x| x <= GOAL_RATIO);
        out += &format!(
            "\n  {} {}: one swap runs {} ({}); swap/bare {} the {GOAL_RATIO}x goal",
            r.helm,
            r.mode,
            r.helm_commands.join(", "),
            r.helm_commands_per_swap,
            if met { "meets" } else { "misses" }
        );
    }
    out += "\n  ready noticed: `bgslot deploy` exit minus the moment a watch saw the Deployment fully available (an upper bound: it includes the report and the exit)\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flip_is_the_first_routing_to_the_new_slot_only() {
        let events = [
            r#"{"event":"routes","service":"ns/web","t":10.0,"backends":[{"ip":"10.244.0.1","port":80,"pod":"web-blue-a"}]}"#,
            r#"{"event":"reject","service":"ns/web","t":10.5}"#,
            r#"{"event":"routes","service":"ns/web","t":11.0,"backends":[{"ip":"10.244.0.1","port":80,"pod":"web-blue-a"},{"ip":"10.244.0.2","port":80,"pod":"web-green-b"}]}"#,
            r#"{"event":"routes","service":"ns/web-stage","t":11.5,"backends":[{"ip":"10.244.0.2","port":80,"pod":"web-green-b"}]}"#,
            r#"{"event":"routes","service":"ns/web","t":12.0,"backends":[]}"#,
            r#"{"event":"routes","service":"ns/web","t":12.5,"backends":[{"ip":"10.244.0.2","port":80,"pod":"web-green-b"}]}"#,
        ]
        .join("\n");
        assert_eq!(first_flip(&events, "ns/web", "green", 9.0), Some(12.5));
        assert_eq!(first_flip(&events, "ns/web", "blue", 9.0), Some(10.0));
        assert_eq!(first_flip(&events, "ns/web", "blue", 10.1), None);
        assert_eq!(first_flip(&events, "ns/other", "green", 0.0), None);
    }

    #[test]
    fn available_means_the_whole_current_rollout() {
        let deployment = |generation: i64, observed: i64, ready: i32| -> Deployment {
            serde_json::from_value(json!({
                "metadata": { "name": "web-green", "generation": generation },
                "spec": { "replicas": 3, "selector": {}, "template": {} },
                "status": {
                    "observedGeneration": observed, "replicas": 3, "updatedReplicas": 3,
                    "readyReplicas": ready, "availableReplicas": ready,
                    "conditions": [{ "type": "Available", "status": "True" }],
                },
            }))
            .unwrap()
        };
        assert!(fully_available(&deployment(2, 2, 3)));
        assert!(
            !fully_available(&deployment(2, 1, 3)),
            "an older generation's status"
        );
        assert!(!fully_available(&deployment(2, 2, 2)));
    }
}
