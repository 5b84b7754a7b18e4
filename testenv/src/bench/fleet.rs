//! The benchmark of runs across several clusters (`testenv fleet-bench`, run by `scripts/bench`
//! with two control planes side by side): what `deploy` to two targets costs next to a deploy to
//! one (the targets deploy in parallel), what a wave `swap` of two targets costs next to a swap of
//! one cluster, and how far apart the two clusters' production flips land in a `release --swap
//! together`, measured from each cluster's Endpoints as a watch in this process sees them. The
//! goals: at most 1.3x, at most 2.2x, at most 500 ms. Figures only, no asserts.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Namespace};
use kube::api::DeleteParams;
use kube::runtime::watcher;
use kube::{Api, Client};
use serde::Serialize;
use serde_json::json;

use super::{helm_version, median};

const RELEASE: &str = "web";
/// Replicas per slot, as in a small production.
const REPLICAS: &str = "3";
/// The Services flip without the node's propagation lag: the skew is the control planes'.
const NO_LAG: &str = r"service.annotations.sim\.bgslot\.dev/proxy-lag=0s";
const GOAL_DEPLOY_RATIO: f64 = 1.3;
const GOAL_WAVE_RATIO: f64 = 2.2;
const GOAL_SKEW_MS: f64 = 500.0;

#[derive(clap::Args, Clone, Debug)]
pub struct Options {
    /// The bgslot binary to benchmark.
    #[arg(long)]
    pub bgslot: PathBuf,
    /// A helm binary; repeat for each (they run one after the other).
    #[arg(long = "helm", required = true)]
    pub helms: Vec<PathBuf>,
    /// Timed rounds per helm.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Where fleet.json goes.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// The first environment (default: $BGSLOT_TESTENV_DIR).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The second environment (default: $BGSLOT_TESTENV_DIR_2, as `testenv run --clusters 2`
    /// sets it).
    #[arg(long)]
    pub dir2: Option<PathBuf>,
}

#[derive(Debug, Default, Serialize)]
pub struct Samples {
    pub deploy_one_ms: Vec<f64>,
    pub deploy_two_targets_ms: Vec<f64>,
    pub swap_one_ms: Vec<f64>,
    pub wave_swap_two_targets_ms: Vec<f64>,
    pub release_together_ms: Vec<f64>,
    pub lockstep_flip_skew_ms: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub struct HelmRun {
    pub helm: String,
    pub deploy_one_ms_median: Option<f64>,
    pub deploy_two_targets_ms_median: Option<f64>,
    pub deploy_two_targets_ratio: Option<f64>,
    pub swap_one_ms_median: Option<f64>,
    pub wave_swap_two_targets_ms_median: Option<f64>,
    pub wave_swap_two_targets_ratio: Option<f64>,
    pub release_together_ms_median: Option<f64>,
    pub lockstep_flip_skew_ms: Option<f64>,
    pub lockstep_flip_skew_ms_max: Option<f64>,
    pub samples: Samples,
}

/// One control plane of the two.
struct Plane {
    dir: PathBuf,
    context: &'static str,
    client: Client,
}

pub async fn run(opts: Options) -> Result<()> {
    let dir = crate::env_dir(opts.dir.clone())?;
    let dir2 = opts
        .dir2
        .clone()
        .or_else(|| std::env::var_os("BGSLOT_TESTENV_DIR_2").map(PathBuf::from))
        .context(
            "which second environment? pass --dir2, or run under `testenv run --clusters 2`",
        )?;
    let planes = [
        Plane {
            client: crate::client_for(&dir.join("kubeconfig")).await?,
            dir,
            context: "bgslot-testenv",
        },
        Plane {
            client: crate::client_for(&dir2.join("kubeconfig")).await?,
            dir: dir2,
            context: "bgslot-testenv-2",
        },
    ];
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let mut runs = Vec::new();
    for helm in &opts.helms {
        let version = helm_version(helm).await?;
        let bench = FleetBench {
            opts: &opts,
            planes: &planes,
            helm,
            ns: format!(
                "fleetbench-{}",
                version.trim_start_matches('v').replace('.', "-")
            ),
        };
        runs.push(bench.run(version).await?);
    }
    print!("{}", table(&runs, opts.rounds));
    let worst =
        |pick: fn(&HelmRun) -> Option<f64>| runs.iter().filter_map(pick).max_by(f64::total_cmp);
    let doc = json!({
        "rounds": opts.rounds,
        "replicas_per_slot": 3,
        "targets": 2,
        // The worst helm's figure for each goal.
        "deploy_two_targets_ratio": worst(|r| r.deploy_two_targets_ratio),
        "wave_swap_two_targets_ratio": worst(|r| r.wave_swap_two_targets_ratio),
        "lockstep_flip_skew_ms": worst(|r| r.lockstep_flip_skew_ms),
        "goals": {
            "deploy_two_targets_ratio": GOAL_DEPLOY_RATIO,
            "wave_swap_two_targets_ratio": GOAL_WAVE_RATIO,
            "lockstep_flip_skew_ms": GOAL_SKEW_MS,
        },
        "runs": runs,
    });
    let path = opts.out.join("fleet.json");
    std::fs::write(&path, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

struct FleetBench<'a> {
    opts: &'a Options,
    planes: &'a [Plane; 2],
    helm: &'a Path,
    ns: String,
}

impl FleetBench<'_> {
    fn progress(&self, text: &str) {
        eprintln!("fleet-bench {}: {text}", self.ns);
    }

    /// The targets file naming both planes, in this order.
    fn targets_file(&self) -> Result<PathBuf> {
        let mut text = format!("namespace: {}\ntargets:\n", self.ns);
        for (name, plane) in ["a", "b"].iter().zip(self.planes.iter()) {
            text.push_str(&format!(
                "  - name: {name}\n    context: {}\n    kubeconfig: {}\n",
                plane.context,
                plane.dir.join("kubeconfig").display()
            ));
        }
        let path = self.planes[0].dir.join(format!("{}-targets.yaml", self.ns));
        std::fs::write(&path, text)?;
        Ok(path)
    }

    async fn run(&self, version: String) -> Result<HelmRun> {
        for plane in self.planes {
            delete_namespace(&plane.client, &self.ns).await?;
        }
        let file = self.targets_file()?;
        let targets = ["--targets", file.to_str().unwrap()];
        let one = ["--kubeconfig", "", "--kube-context", self.planes[0].context];
        let kubeconfig = self.planes[0].dir.join("kubeconfig");
        let one: Vec<&str> = one
            .iter()
            .map(|a| {
                if a.is_empty() {
                    kubeconfig.to_str().unwrap()
                } else {
                    a
                }
            })
            .collect();
        let with = |base: &[&str], extra: &[&str]| -> Vec<String> {
            base.iter().chain(extra).map(|s| s.to_string()).collect()
        };
        self.bgslot(&with(
            &[
                "release",
                RELEASE,
                "--tag",
                "v1",
                "--replicas",
                REPLICAS,
                "--create-namespace",
                "--set",
                NO_LAG,
            ],
            &targets,
        ))
        .await?;
        let mut s = Samples::default();
        let mut tag = 1;
        for round in 1..=self.opts.rounds {
            // Both clusters flip at once: how far apart their Endpoints show it.
            tag += 1;
            let watches = [
                FlipWatch::start(&self.planes[0].client, &self.ns).await?,
                FlipWatch::start(&self.planes[1].client, &self.ns).await?,
            ];
            let v = format!("v{tag}");
            let began = Instant::now();
            self.bgslot(&with(
                &[
                    "release",
                    RELEASE,
                    "--tag",
                    &v,
                    "--replace",
                    "--swap",
                    "together",
                ],
                &targets,
            ))
            .await?;
            s.release_together_ms.push(ms(began));
            let [a, b] = watches;
            let (a, b) = (a.flipped().await?, b.flipped().await?);
            let skew = if a > b { a - b } else { b - a };
            s.lockstep_flip_skew_ms.push(skew.as_secs_f64() * 1000.0);

            // A deploy to one cluster, then to both at once.
            tag += 1;
            let v = format!("v{tag}");
            s.deploy_one_ms.push(
                self.timed(&with(
                    &["deploy", RELEASE, "--tag", &v, "--replace", "-n", &self.ns],
                    &one,
                ))
                .await?,
            );
            tag += 1;
            let v = format!("v{tag}");
            s.deploy_two_targets_ms.push(
                self.timed(&with(
                    &["deploy", RELEASE, "--tag", &v, "--replace"],
                    &targets,
                ))
                .await?,
            );

            // A swap of one cluster (and back, untimed), then a wave swap of both.
            s.swap_one_ms.push(
                self.timed(&with(&["swap", RELEASE, "-n", &self.ns], &one))
                    .await?,
            );
            self.bgslot(&with(&["swap", RELEASE, "-n", &self.ns], &one))
                .await?;
            s.wave_swap_two_targets_ms
                .push(self.timed(&with(&["swap", RELEASE], &targets)).await?);
            self.progress(&format!(
                "round {round}/{}: release --swap together {:.0} ms (flip skew {:.0} ms), deploy to one {:.0} ms, to two {:.0} ms, swap of one {:.0} ms, wave swap of two {:.0} ms",
                self.opts.rounds,
                s.release_together_ms.last().unwrap(),
                s.lockstep_flip_skew_ms.last().unwrap(),
                s.deploy_one_ms.last().unwrap(),
                s.deploy_two_targets_ms.last().unwrap(),
                s.swap_one_ms.last().unwrap(),
                s.wave_swap_two_targets_ms.last().unwrap(),
            ));
        }
        for plane in self.planes {
            delete_namespace(&plane.client, &self.ns).await?;
        }
        let ratio = |a: &[f64], b: &[f64]| match (median(a.to_vec()), median(b.to_vec())) {
            (Some(a), Some(b)) if b > 0.0 => Some((a / b * 100.0).round() / 100.0),
            _ => None,
        };
        Ok(HelmRun {
            helm: version,
            deploy_one_ms_median: median(s.deploy_one_ms.clone()),
            deploy_two_targets_ms_median: median(s.deploy_two_targets_ms.clone()),
            deploy_two_targets_ratio: ratio(&s.deploy_two_targets_ms, &s.deploy_one_ms),
            swap_one_ms_median: median(s.swap_one_ms.clone()),
            wave_swap_two_targets_ms_median: median(s.wave_swap_two_targets_ms.clone()),
            wave_swap_two_targets_ratio: ratio(&s.wave_swap_two_targets_ms, &s.swap_one_ms),
            release_together_ms_median: median(s.release_together_ms.clone()),
            lockstep_flip_skew_ms: median(s.lockstep_flip_skew_ms.clone()),
            lockstep_flip_skew_ms_max: s
                .lockstep_flip_skew_ms
                .iter()
                .copied()
                .max_by(f64::total_cmp),
            samples: s,
        })
    }

    async fn timed(&self, args: &[String]) -> Result<f64> {
        let began = Instant::now();
        self.bgslot(args).await?;
        Ok(ms(began))
    }

    async fn bgslot(&self, args: &[String]) -> Result<()> {
        let out = tokio::process::Command::new(&self.opts.bgslot)
            .args(args)
            .env("HELM_BIN", self.helm)
            .env("NO_COLOR", "1")
            .env_remove("HELM_NAMESPACE")
            .env_remove("HELM_KUBECONTEXT")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .with_context(|| format!("running {}", self.opts.bgslot.display()))?;
        if !out.status.success() {
            bail!(
                "bgslot {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(())
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// When one cluster's production Endpoints first list only pods of another slot than when the
/// watch started: its flip, as this process sees it.
struct FlipWatch {
    flipped: tokio::sync::oneshot::Receiver<Instant>,
    task: tokio::task::JoinHandle<()>,
}

impl FlipWatch {
    async fn start(client: &Client, ns: &str) -> Result<FlipWatch> {
        let api: Api<Endpoints> = Api::namespaced(client.clone(), ns);
        let config = watcher::Config::default().fields(&format!("metadata.name={RELEASE}"));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (flip_tx, flipped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let (mut ready_tx, mut flip_tx) = (Some(ready_tx), Some(flip_tx));
            let mut before: Option<String> = None;
            let mut stream = std::pin::pin!(watcher(api, config));
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                let ep = match event {
                    watcher::Event::Apply(ep) | watcher::Event::InitApply(ep) => ep,
                    watcher::Event::InitDone => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                        continue;
                    }
                    _ => continue,
                };
                let Some(slot) = only_slot(&ep) else { continue };
                match &before {
                    None => before = Some(slot),
                    Some(old) if *old != slot => {
                        if let Some(tx) = flip_tx.take() {
                            let _ = tx.send(Instant::now());
                        }
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .context("the Endpoints watch did not start within 30s")??;
        Ok(FlipWatch { flipped, task })
    }

    async fn flipped(self) -> Result<Instant> {
        let at = tokio::time::timeout(Duration::from_secs(60), self.flipped)
            .await
            .context("production did not flip within 60s")??;
        self.task.abort();
        Ok(at)
    }
}

/// The slot of every ready address, when they are all of one.
fn only_slot(ep: &Endpoints) -> Option<String> {
    let slots: std::collections::BTreeSet<String> = ep
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter_map(|a| a.target_ref.as_ref()?.name.clone())
        .map(|pod| {
            ["blue", "green"]
                .into_iter()
                .find(|slot| pod.starts_with(&format!("{RELEASE}-{slot}-")))
                .unwrap_or("?")
                .to_string()
        })
        .collect();
    (slots.len() == 1).then(|| slots.into_iter().next().unwrap())
}

async fn delete_namespace(client: &Client, name: &str) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
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

fn table(runs: &[HelmRun], rounds: usize) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} ms"));
    let x = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}x"));
    let mut out = format!(
        "\nacross two clusters: {rounds} rounds per helm, {REPLICAS} replicas per slot, medians (goals: deploy to two <= {GOAL_DEPLOY_RATIO}x one, wave swap of two <= {GOAL_WAVE_RATIO}x one, flip skew <= {GOAL_SKEW_MS:.0} ms)\n\n"
    );
    out += &format!(
        "  {:<8} {:>10} {:>10} {:>7} {:>10} {:>12} {:>7} {:>16} {:>10} {:>10}\n",
        "helm",
        "deploy 1",
        "deploy 2",
        "ratio",
        "swap 1",
        "wave swap 2",
        "ratio",
        "release together",
        "flip skew",
        "skew max"
    );
    for r in runs {
        out += &format!(
            "  {:<8} {:>10} {:>10} {:>7} {:>10} {:>12} {:>7} {:>16} {:>10} {:>10}\n",
            r.helm,
            ms(r.deploy_one_ms_median),
            ms(r.deploy_two_targets_ms_median),
            x(r.deploy_two_targets_ratio),
            ms(r.swap_one_ms_median),
            ms(r.wave_swap_two_targets_ms_median),
            x(r.wave_swap_two_targets_ratio),
            ms(r.release_together_ms_median),
            ms(r.lockstep_flip_skew_ms),
            ms(r.lockstep_flip_skew_ms_max),
        );
    }
    out
}
