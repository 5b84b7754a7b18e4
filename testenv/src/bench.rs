//! The zero-downtime benchmark (`testenv zero-downtime`, run by `scripts/bench`): constant load
//! through a release's production Service across deploy/swap/clean cycles run with the bgslot
//! binary as a user runs it, then the figures: failed requests by kind, how long the old version
//! was still served after `swap` and after `clean` returned, when the proxy flipped, latency
//! during cycles against steady state. Two more scenarios put the defaults in context: a negative
//! control (preStop 0, `clean --force` right after `swap`) that must drop requests, and a prompt
//! clean (the default preStop, `clean --force` right after `swap`). Figures only, no asserts.

pub mod fleet;
mod plot;
pub mod swap;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::load::{self, ClientKind, Latency, Outcome, Record};
use crate::proxy::{self, now_unix, EVENTS_FILE};

/// The drain delay `bgslot clean` enforces by default.
const MIN_AGE: Duration = Duration::from_secs(30);
const RELEASE: &str = "web";

#[derive(clap::Args, Clone, Debug)]
pub struct Options {
    /// The bgslot binary to benchmark.
    #[arg(long)]
    pub bgslot: PathBuf,
    /// A helm binary; repeat for each (they run side by side, each in its own namespaces).
    #[arg(long = "helm", required = true)]
    pub helms: Vec<PathBuf>,
    /// Deploy/swap/clean cycles with the defaults, per helm.
    #[arg(long, default_value_t = 100)]
    pub cycles: usize,
    /// Cycles of the negative control and of the prompt clean, per helm.
    #[arg(long, default_value_t = 5)]
    pub control_cycles: usize,
    /// Requests per second through the production Service, per scenario.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Steady load before the first cycle, for the steady-state latency.
    #[arg(long, default_value = "10s", value_parser = bgslot::duration::parse_duration)]
    pub steady: Duration,
    /// The production Service's propagation lag with the defaults (default: the node's,
    /// `testenv up --proxy-lag`, 1 s).
    #[arg(long, value_parser = bgslot::duration::parse_duration)]
    pub proxy_lag: Option<Duration>,
    /// The propagation lag in the scenarios that clean right after the swap. Longer than the
    /// node's: at 1 s, bgslot's own clean on a busy machine outlasts the window in which a
    /// stopped slot still gets new connections, and the control could not show a drop.
    #[arg(long, default_value = "10s", value_parser = bgslot::duration::parse_duration)]
    pub control_lag: Duration,
    /// Where zero-downtime.json and zero-downtime.svg go.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// The directory `up` printed (default: $BGSLOT_TESTENV_DIR).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// What a user gets: preStop 5 s, `clean` once the 30 s drain delay has passed.
    Defaults,
    /// No preStop and `clean --force` right after `swap`: must drop requests.
    Control,
    /// The default preStop, but `clean --force` right after `swap`.
    PromptClean,
    /// The defaults, with an app that closes keep-alive connections once they are 10 s old.
    ConnectionAge,
}

impl Scenario {
    /// The Services' propagation lag in this scenario; `None` is the node's.
    fn lag(self, opts: &Options) -> Option<Duration> {
        match self {
            Scenario::Defaults | Scenario::ConnectionAge => opts.proxy_lag,
            Scenario::Control | Scenario::PromptClean => Some(opts.control_lag),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Scenario::Defaults => "defaults (preStop 5s, clean after 30s)",
            Scenario::Control => "control (preStop 0, clean --force at once)",
            Scenario::PromptClean => "prompt clean (preStop 5s, clean --force at once)",
            Scenario::ConnectionAge => "defaults, app closes connections at 10s of age",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Scenario::Defaults => "zd",
            Scenario::Control => "zdctl",
            Scenario::PromptClean => "zdprompt",
            Scenario::ConnectionAge => "zdage",
        }
    }
}

/// Unix times (seconds) of one cycle's steps.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Cycle {
    pub tag: String,
    pub old_tag: String,
    pub from: String,
    pub to: String,
    pub deploy: f64,
    pub deployed: f64,
    pub swap: f64,
    pub swapped: f64,
    pub clean: f64,
    pub cleaned: f64,
    pub old_gone: f64,
    /// When the proxy first routed new connections only to the new slot.
    pub flip: Option<f64>,
}

/// One cycle's figures.
#[derive(Clone, Debug, Serialize)]
pub struct CycleFigures {
    #[serde(flatten)]
    pub times: Cycle,
    pub requests: u64,
    pub failed: u64,
    pub failed_by_kind: BTreeMap<String, u64>,
    /// Seconds the old version still answered after `swap` returned, per client kind.
    pub old_after_swap_s: BTreeMap<String, f64>,
    /// Seconds the old version still answered after `clean` returned (negative: it had stopped
    /// answering before).
    pub old_after_clean_s: f64,
    /// Seconds from the start of `swap` to the proxy routing only to the new slot.
    pub flip_s: Option<f64>,
}

/// One scenario on one helm.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioRun {
    pub helm: String,
    pub scenario: Scenario,
    /// The Services' propagation lag (seconds; `None`: the node's).
    pub proxy_lag_s: Option<f64>,
    pub cycles: Vec<CycleFigures>,
    pub requests: u64,
    pub failed: u64,
    pub failed_by_kind: BTreeMap<String, u64>,
    pub latency_steady_ms: Latency,
    pub latency_cycles_ms: Latency,
    #[serde(skip)]
    pub records: Vec<Record>,
}

/// Runs the whole benchmark and writes its JSON and SVG.
pub async fn run(opts: Options) -> Result<()> {
    let dir = crate::env_dir(opts.dir.clone())?;
    let kubeconfig = dir.join("kubeconfig");
    let client = crate::client_for(&kubeconfig).await?;
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let mut per_helm = Vec::new();
    for helm in &opts.helms {
        let version = helm_version(helm).await?;
        let (opts, dir, client) = (opts.clone(), dir.clone(), client.clone());
        let helm = helm.clone();
        per_helm.push(tokio::spawn(async move {
            let mut runs = Vec::new();
            for (scenario, cycles) in [
                (Scenario::Defaults, opts.cycles),
                (Scenario::Control, opts.control_cycles),
                (Scenario::PromptClean, opts.control_cycles),
                (Scenario::ConnectionAge, opts.control_cycles),
            ] {
                if cycles == 0 {
                    continue;
                }
                let bench = Bench {
                    opts: &opts,
                    dir: &dir,
                    client: &client,
                    helm: &helm,
                    helm_version: &version,
                    scenario,
                };
                runs.push(bench.run(cycles).await?);
            }
            Ok::<_, anyhow::Error>(runs)
        }));
    }
    let mut runs = Vec::new();
    for handle in per_helm {
        runs.extend(handle.await??);
    }
    let report = Report::of(&runs, &opts);
    print!("{}", report.table(&runs));
    let json_path = opts.out.join("zero-downtime.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report.json)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let svg_path = opts.out.join("zero-downtime.svg");
    plot::draw(&svg_path, &runs).with_context(|| format!("drawing {}", svg_path.display()))?;
    println!("wrote {} and {}", json_path.display(), svg_path.display());
    Ok(())
}

async fn helm_version(helm: &Path) -> Result<String> {
    let out = tokio::process::Command::new(helm)
        .args(["version", "--template", "{{.Version}}"])
        .output()
        .await
        .with_context(|| format!("running {}", helm.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

struct Bench<'a> {
    opts: &'a Options,
    dir: &'a Path,
    client: &'a Client,
    helm: &'a Path,
    helm_version: &'a str,
    scenario: Scenario,
}

/// What one bgslot run returned.
struct Ran {
    code: i32,
    output: String,
}

impl Bench<'_> {
    fn namespace(&self) -> String {
        let major = self.helm_version.trim_start_matches('v');
        let major = major.split('.').next().unwrap_or("x");
        format!("{}-h{major}", self.scenario.short())
    }

    fn service(&self) -> String {
        format!("{}/{RELEASE}", self.namespace())
    }

    fn progress(&self, text: &str) {
        eprintln!(
            "bench {} {:?}: {text}",
            self.helm_version,
            self.scenario.short()
        );
    }

    async fn bgslot(&self, args: &[&str]) -> Result<Ran> {
        let out = tokio::process::Command::new(&self.opts.bgslot)
            .args(args)
            .env("HELM_BIN", self.helm)
            .env("HELM_NAMESPACE", self.namespace())
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .with_context(|| format!("running {}", self.opts.bgslot.display()))?;
        Ok(Ran {
            code: out.status.code().unwrap_or(-1),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        })
    }

    async fn bgslot_ok(&self, args: &[&str]) -> Result<()> {
        let ran = self.bgslot(args).await?;
        if ran.code != 0 {
            bail!(
                "bgslot {} failed ({}): {}",
                args.join(" "),
                ran.code,
                ran.output
            );
        }
        Ok(())
    }

    async fn run(&self, cycles: usize) -> Result<ScenarioRun> {
        let ns = self.namespace();
        self.delete_namespace().await?;
        let mut install = vec!["deploy", RELEASE, "--tag", "v1", "--create-namespace"];
        match self.scenario {
            Scenario::Control => install.extend(["--set", "preStopSleepSeconds=0"]),
            Scenario::ConnectionAge => install.extend(["--set", "env.MAX_CONNECTION_AGE=10s"]),
            _ => {}
        }
        let lag = self.scenario.lag(self.opts).map(|d| {
            format!(
                r"service.annotations.sim\.bgslot\.dev/proxy-lag={}ms",
                d.as_millis()
            )
        });
        if let Some(lag) = &lag {
            install.extend(["--set", lag]);
        }
        self.bgslot_ok(&install).await?;
        self.await_routes("blue").await?;
        let target =
            proxy::service_addr(self.dir, &self.service(), None, Duration::from_secs(30)).await?;
        let running = load::Load::start(load::Options {
            target,
            rate: self.opts.rate,
            keepalive_share: 0.5,
            keepalive_conns: 8,
            timeout: Duration::from_secs(2),
        });
        self.progress(&format!(
            "{} req/s to {} ({target})",
            self.opts.rate,
            self.service()
        ));
        tokio::time::sleep(self.opts.steady).await;

        let mut times = Vec::new();
        let slots = ["blue", "green"];
        for i in 0..cycles {
            let (from, to) = (slots[i % 2], slots[(i + 1) % 2]);
            let c = self.cycle(i + 2, from, to).await?;
            self.progress(&format!(
                "cycle {}/{cycles}: {} -> {}, swap {:.2}s, clean returned {:.1}s after swap, old pods gone {:.1}s after clean",
                i + 1,
                c.old_tag,
                c.tag,
                c.swapped - c.swap,
                c.cleaned - c.swapped,
                c.old_gone - c.cleaned
            ));
            times.push(c);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut records = running.stop().await;
        load::attribute_rejections(&mut records, self.dir, &self.service());
        let flips = self.flips()?;
        for c in &mut times {
            c.flip = flips
                .iter()
                .find(|(t, pods)| {
                    *t >= c.swap
                        && !pods.is_empty()
                        && pods
                            .iter()
                            .all(|p| p.starts_with(&format!("{RELEASE}-{}-", c.to)))
                })
                .map(|(t, _)| *t);
        }
        self.delete_namespace().await?;
        self.progress(&format!("done ({ns} deleted)"));
        let mut run = figures(
            self.helm_version,
            self.scenario,
            times,
            records,
            self.opts.steady,
        );
        run.proxy_lag_s = self.scenario.lag(self.opts).map(|d| d.as_secs_f64());
        Ok(run)
    }

    async fn cycle(&self, version: usize, from: &str, to: &str) -> Result<Cycle> {
        let tag = format!("v{version}");
        let mut c = Cycle {
            old_tag: format!("v{}", version - 1),
            tag: tag.clone(),
            from: from.into(),
            to: to.into(),
            ..Default::default()
        };
        c.deploy = now_unix();
        self.bgslot_ok(&["deploy", RELEASE, "--tag", &tag]).await?;
        c.deployed = now_unix();
        c.swap = now_unix();
        self.bgslot_ok(&["swap", RELEASE, "--expect-tag", &tag])
            .await?;
        c.swapped = now_unix();
        match self.scenario {
            Scenario::Defaults | Scenario::ConnectionAge => {
                // As a user with a timer would: wait out the drain delay, then clean, retrying
                // while bgslot still refuses (exit 3).
                tokio::time::sleep(MIN_AGE).await;
                c.clean = now_unix();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                loop {
                    let ran = self.bgslot(&["clean", RELEASE]).await?;
                    match ran.code {
                        0 => break,
                        3 if tokio::time::Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_secs(1)).await
                        }
                        code => bail!("bgslot clean failed ({code}): {}", ran.output),
                    }
                }
            }
            Scenario::Control | Scenario::PromptClean => {
                c.clean = now_unix();
                self.bgslot_ok(&["clean", RELEASE, "--force"]).await?;
            }
        }
        c.cleaned = now_unix();
        self.await_pods_gone(from).await?;
        c.old_gone = now_unix();
        self.await_routes(to).await?;
        Ok(c)
    }

    async fn await_pods_gone(&self, slot: &str) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace());
        let selector = ListParams::default().labels(&format!("bgslot/slot={slot}"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while !pods.list(&selector).await?.items.is_empty() {
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the {slot} pods of {} are still there after 120s",
                    self.service()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Waits until the proxy routes the production Service to `slot`'s pods only.
    async fn await_routes(&self, slot: &str) -> Result<()> {
        let prefix = format!("{RELEASE}-{slot}-");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let routed = proxy::read_services(self.dir)?
                .get(&self.service())
                .and_then(|s| s.ports.first().map(|p| p.backends.clone()))
                .unwrap_or_default();
            if !routed.is_empty() && routed.iter().all(|b| b.pod.starts_with(&prefix)) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the proxy does not route {} to {slot} after 60s",
                    self.service()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The proxy's routing changes for the Service: (when, pods routed to).
    fn flips(&self) -> Result<Vec<(f64, Vec<String>)>> {
        #[derive(Deserialize)]
        struct Routes {
            t: f64,
            event: String,
            #[serde(default)]
            service: String,
            #[serde(default)]
            backends: Vec<proxy::Backend>,
        }
        let path = self.dir.join(EVENTS_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str::<Routes>(l).ok())
            .filter(|e| e.event == "routes" && e.service == self.service())
            .map(|e| (e.t, e.backends.into_iter().map(|b| b.pod).collect()))
            .collect())
    }

    async fn delete_namespace(&self) -> Result<()> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let name = self.namespace();
        let _ = namespaces.delete(&name, &DeleteParams::background()).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while namespaces.get_opt(&name).await?.is_some() {
            if tokio::time::Instant::now() > deadline {
                bail!("namespace {name} still exists 120s after its deletion");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(())
    }
}

fn client_name(kind: ClientKind) -> &'static str {
    match kind {
        ClientKind::PerRequest => "per_request",
        ClientKind::KeepAlive => "keep_alive",
    }
}

fn failures_by_kind<'a>(records: impl Iterator<Item = &'a Record>) -> BTreeMap<String, u64> {
    let mut by_kind: BTreeMap<String, u64> = Outcome::FAILURES
        .iter()
        .map(|o| (o.name().to_string(), 0))
        .collect();
    for r in records.filter(|r| r.outcome != Outcome::Ok) {
        *by_kind.entry(r.outcome.name().to_string()).or_default() += 1;
    }
    by_kind
}

fn figures(
    helm: &str,
    scenario: Scenario,
    times: Vec<Cycle>,
    records: Vec<Record>,
    steady: Duration,
) -> ScenarioRun {
    let first = times.first().map_or(f64::MAX, |c| c.deploy);
    let last = times.last().map_or(f64::MAX, |c| c.old_gone);
    let load_start = records.first().map_or(0.0, |r| r.t);
    let steady_from = load_start + 1.0_f64.min(steady.as_secs_f64() / 2.0);
    let mut cycles = Vec::new();
    for (i, c) in times.iter().enumerate() {
        let end = times.get(i + 1).map_or(f64::MAX, |n| n.deploy);
        let window: Vec<&Record> = records
            .iter()
            .filter(|r| r.t >= c.deploy && r.t < end)
            .collect();
        let old: Vec<&&Record> = window
            .iter()
            .filter(|r| r.outcome == Outcome::Ok && r.version.as_deref() == Some(&c.old_tag))
            .collect();
        let last_old = |kind: Option<ClientKind>| {
            old.iter()
                .filter(|r| kind.is_none_or(|k| r.client == k))
                .map(|r| r.done())
                .fold(f64::MIN, f64::max)
        };
        let old_after_swap_s = [ClientKind::PerRequest, ClientKind::KeepAlive]
            .into_iter()
            .map(|k| {
                (
                    client_name(k).to_string(),
                    (last_old(Some(k)) - c.swapped).max(0.0),
                )
            })
            .collect();
        let failed_by_kind = failures_by_kind(window.iter().copied());
        cycles.push(CycleFigures {
            requests: window.len() as u64,
            failed: failed_by_kind.values().sum(),
            failed_by_kind,
            old_after_swap_s,
            old_after_clean_s: last_old(None) - c.cleaned,
            flip_s: c.flip.map(|f| f - c.swap),
            times: c.clone(),
        });
    }
    let failed_by_kind = failures_by_kind(records.iter());
    ScenarioRun {
        helm: helm.to_string(),
        scenario,
        proxy_lag_s: None,
        requests: records.len() as u64,
        failed: failed_by_kind.values().sum(),
        failed_by_kind,
        latency_steady_ms: Latency::of(
            records.iter().filter(|r| r.t >= steady_from && r.t < first),
        ),
        latency_cycles_ms: Latency::of(records.iter().filter(|r| r.t >= first && r.t < last)),
        cycles,
        records,
    }
}

fn max_of(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, f64::max)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

/// Figures of one scenario across helms.
fn summary(runs: &[&ScenarioRun]) -> serde_json::Value {
    let cycles: Vec<&CycleFigures> = runs.iter().flat_map(|r| r.cycles.iter()).collect();
    let mut failed_by_kind: BTreeMap<String, u64> = BTreeMap::new();
    for r in runs {
        for (k, v) in &r.failed_by_kind {
            *failed_by_kind.entry(k.clone()).or_default() += v;
        }
    }
    let old_by_client = |client: &str| max_of(cycles.iter().map(|c| c.old_after_swap_s[client]));
    let all_records = runs.iter().flat_map(|r| {
        let first = r.cycles.first().map_or(f64::MAX, |c| c.times.deploy);
        let last = r.cycles.last().map_or(f64::MAX, |c| c.times.old_gone);
        r.records.iter().filter(move |x| x.t >= first && x.t < last)
    });
    json!({
        // Totals over every helm, like the request counts; `by_helm` has each helm's own.
        "cycles": cycles.len(),
        "cycles_per_helm": runs.first().map_or(0, |r| r.cycles.len()),
        "requests": runs.iter().map(|r| r.requests).sum::<u64>(),
        "failed": runs.iter().map(|r| r.failed).sum::<u64>(),
        "failed_by_kind": failed_by_kind,
        "cycles_with_failures": cycles.iter().filter(|c| c.failed > 0).count(),
        "old_version_after_swap_s": old_by_client("per_request").max(old_by_client("keep_alive")),
        "old_version_after_swap_s_by_client": {
            "per_request": old_by_client("per_request"),
            "keep_alive": old_by_client("keep_alive"),
        },
        "old_version_after_clean_s": max_of(cycles.iter().map(|c| c.old_after_clean_s)),
        "flip_s_median": median(cycles.iter().filter_map(|c| c.flip_s).collect()),
        "swap_s_median": median(cycles.iter().map(|c| c.times.swapped - c.times.swap).collect()),
        "clean_after_swap_s_median": median(cycles.iter().map(|c| c.times.cleaned - c.times.swapped).collect()),
        "latency_ms_cycles": Latency::of(all_records),
    })
}

struct Report {
    json: serde_json::Value,
}

impl Report {
    fn of(runs: &[ScenarioRun], opts: &Options) -> Report {
        let of = |s: Scenario| -> Vec<&ScenarioRun> {
            runs.iter().filter(|r| r.scenario == s).collect()
        };
        let defaults = summary(&of(Scenario::Defaults));
        let control = summary(&of(Scenario::Control));
        let prompt = summary(&of(Scenario::PromptClean));
        let connection_age = summary(&of(Scenario::ConnectionAge));
        let steady = Latency::of(of(Scenario::Defaults).iter().flat_map(|r| {
            let first = r.cycles.first().map_or(f64::MAX, |c| c.times.deploy);
            r.records.iter().filter(move |x| x.t < first)
        }));
        let control_failed = control["failed"].as_u64().unwrap_or(0);
        let mut json = defaults.clone();
        let by_helm: BTreeMap<String, BTreeMap<Scenario, &ScenarioRun>> =
            runs.iter().fold(BTreeMap::new(), |mut acc, r| {
                acc.entry(r.helm.clone()).or_default().insert(r.scenario, r);
                acc
            });
        let extra = json!({
            "helms": by_helm.keys().collect::<Vec<_>>(),
            "rate_per_s": opts.rate,
            "keepalive_share": 0.5,
            "proxy_lag_s": opts.proxy_lag.map_or(1.0, |d| d.as_secs_f64()),
            "control_proxy_lag_s": opts.control_lag.as_secs_f64(),
            "defaults": { "pre_stop_sleep_s": 5, "clean_min_age_s": MIN_AGE.as_secs(), "termination_grace_period_s": 30 },
            "latency_ms_steady": steady,
            "control_cycles": control["cycles"],
            "control_requests": control["requests"],
            "control_failed": control_failed,
            "control_failed_by_kind": control["failed_by_kind"],
            "control": control,
            "prompt_clean": prompt,
            "connection_age_10s": connection_age,
            "cannot_see_drops": opts.control_cycles > 0 && control_failed == 0,
            "by_helm": by_helm,
        });
        for (k, v) in extra.as_object().unwrap() {
            json[k] = v.clone();
        }
        Report { json }
    }

    fn table(&self, runs: &[ScenarioRun]) -> String {
        let mut out = String::new();
        let j = &self.json;
        out.push_str(&format!(
            "\nzero downtime: {} req/s per scenario (half on keep-alive connections), helm {}\n\n",
            j["rate_per_s"],
            j["helms"]
                .as_array()
                .map(|h| h
                    .iter()
                    .map(|v| v.as_str().unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join(" and "))
                .unwrap_or_default()
        ));
        out.push_str(&format!(
            "  {:<62} {:>6} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>6}\n",
            "scenario (helm, proxy lag)",
            "cycles",
            "requests",
            "failed",
            "refused",
            "reset",
            "timeout",
            "no_ep",
            "non2xx",
            "old+swap",
            "old+swap",
            "old+cln",
            "flip"
        ));
        out.push_str(&format!(
            "  {:<62} {:>6} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>6}\n",
            "", "", "", "", "", "", "", "", "", "per-req", "keepal.", "", "median"
        ));
        for r in runs {
            let k = |name: &str| r.failed_by_kind.get(name).copied().unwrap_or(0);
            let old = |client: &str| max_of(r.cycles.iter().map(|c| c.old_after_swap_s[client]));
            let flip = median(r.cycles.iter().filter_map(|c| c.flip_s).collect());
            out.push_str(&format!(
                "  {:<62} {:>6} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7.1}s {:>7.1}s {:>7.1}s {:>5}\n",
                format!("{} ({}, {}s)", r.scenario.label(), r.helm, r.proxy_lag_s.unwrap_or(1.0)),
                r.cycles.len(),
                r.requests,
                r.failed,
                k("refused"),
                k("reset"),
                k("timeout"),
                k("no_endpoint"),
                k("non_2xx"),
                old("per_request"),
                old("keep_alive"),
                max_of(r.cycles.iter().map(|c| c.old_after_clean_s)),
                flip.map_or("-".into(), |f| format!("{f:.2}s")),
            ));
        }
        let lat = |v: &serde_json::Value| {
            format!(
                "p50 {:.1} ms, p99 {:.1} ms",
                v["p50"].as_f64().unwrap_or(0.0),
                v["p99"].as_f64().unwrap_or(0.0)
            )
        };
        out.push_str(&format!(
            "\n  latency with the defaults: steady {}; during cycles {}\n",
            lat(&j["latency_ms_steady"]),
            lat(&j["latency_ms_cycles"])
        ));
        out.push_str(
            "  old+swap: the longest the old version still answered after `swap` returned; old+cln: after `clean` returned\n",
        );
        if j["cannot_see_drops"].as_bool() == Some(true) {
            out.push_str("\n  WARNING: the negative control dropped no request: this run cannot see drops, so its zeros prove nothing\n");
        }
        out.push('\n');
        out
    }
}
