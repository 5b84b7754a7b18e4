//! `testenv`: the local Kubernetes environment bgslot's end-to-end tests and demo run against — a
//! real etcd, kube-apiserver and kube-controller-manager plus a simulated kubelet, started on free
//! loopback ports in a directory of their own and stopped without leaving anything behind. Pods
//! run as real local HTTP processes behind a kube-proxy-like service proxy, so claims about
//! traffic are tested with traffic (`testenv load`).

mod bench;
mod controlplane;
mod http1;
mod kubelet;
mod load;
mod pki;
mod podapp;
mod podnet;
mod proxy;

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::signal::unix::{signal, SignalKind};

use controlplane::UpOptions;

#[derive(Parser)]
#[command(
    name = "testenv",
    version,
    about = "Local Kubernetes control plane for bgslot's tests"
)]
struct Cli {
    #[command(subcommand)]
    command: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Install and build etcd, kube-apiserver, kube-controller-manager and Helm 3/4 into the
    /// cache (idempotent).
    Prepare,
    /// Start a control plane and print how to use it.
    Up(UpArgs),
    /// Stop a control plane started by `up` and remove its directory.
    Down {
        /// The directory `up` printed (default: $BGSLOT_TESTENV_DIR).
        dir: Option<PathBuf>,
    },
    /// Start a control plane, run a command against it, and stop it whatever happens.
    Run {
        #[command(flatten)]
        up: UpArgs,
        /// The command, after `--`; it gets KUBECONFIG, BGSLOT_TESTENV_DIR and BGSLOT_HELM3/4.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Kill the API server of an environment and keep it down (everything else keeps running),
    /// until `start-apiserver`.
    StopApiserver {
        /// The directory `up` printed (default: $BGSLOT_TESTENV_DIR).
        dir: Option<PathBuf>,
    },
    /// Start the API server `stop-apiserver` stopped, and wait until it is ready.
    StartApiserver {
        /// The directory `up` printed (default: $BGSLOT_TESTENV_DIR).
        dir: Option<PathBuf>,
    },
    /// Kill the API server of an environment, keep it down for a while, and start it again.
    RestartApiserver {
        /// The directory `up` printed (default: $BGSLOT_TESTENV_DIR).
        dir: Option<PathBuf>,
        /// How long the API server stays down.
        #[arg(long, default_value = "2s", value_parser = bgslot::duration::parse_duration)]
        down_for: Duration,
    },
    /// Run the simulated kubelet and the node's service proxy (started by `up`).
    Kubelet {
        #[arg(long)]
        kubeconfig: PathBuf,
        /// The environment's directory.
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = controlplane::NODE_NAME)]
        node_name: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// The application every simulated pod runs (started by the kubelet).
    #[command(hide = true)]
    PodApp(podapp::Options),
    /// Send constant load through a Service until interrupted (or --max-duration), then print a
    /// JSON summary: requests, failures by kind, who answered, latency.
    Load(LoadArgs),
    /// The zero-downtime benchmark (scripts/bench runs it): deploy/swap/clean cycles under load,
    /// with a negative control; writes zero-downtime.json and zero-downtime.svg.
    ZeroDowntime(bench::Options),
    /// The swap-cost benchmark (scripts/bench runs it): `bgslot swap` against a bare helm upgrade
    /// and a bare selector patch, flip latency, readiness noticed; writes swap.json.
    SwapBench(bench::swap::Options),
    /// The benchmark across two clusters (scripts/bench runs it under `run --clusters 2`): a
    /// deploy to two targets against one, a wave swap of two against one, the flip skew of
    /// `release --swap together`; writes fleet.json.
    FleetBench(bench::fleet::Options),
    /// Print what the node did to pods' apps (started, SIGTERM, SIGKILL, exited), from
    /// DIR/pod-events.jsonl, oldest first.
    PodEvents {
        /// Only pods of this namespace.
        #[arg(long, short)]
        namespace: Option<String>,
        /// Print the JSON lines as recorded.
        #[arg(long)]
        json: bool,
        /// The directory `up` printed (default: $BGSLOT_TESTENV_DIR).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Print the local address at which the service proxy serves a Service.
    ServiceAddr {
        /// NAMESPACE/NAME of the Service.
        service: String,
        /// The Service port (default: its first).
        #[arg(long)]
        port: Option<u16>,
        /// The directory `up` printed (default: $BGSLOT_TESTENV_DIR).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// How long to wait for the proxy to have the Service.
        #[arg(long, default_value = "10s", value_parser = bgslot::duration::parse_duration)]
        wait: Duration,
    },
}

#[derive(Args, Clone, Debug)]
struct LoadArgs {
    /// NAMESPACE/NAME of the Service.
    service: String,
    /// The Service port (default: its first).
    #[arg(long)]
    port: Option<u16>,
    /// The directory `up` printed (default: $BGSLOT_TESTENV_DIR).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Requests per second, all clients together.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// The part of the rate sent on kept-alive connections (0 to 1); the rest opens a
    /// connection per request.
    #[arg(long, default_value_t = 0.5)]
    keepalive_share: f64,
    /// How many kept-alive connections share their part of the rate.
    #[arg(long, default_value_t = 8)]
    keepalive_conns: usize,
    /// A request without a full response by then fails as a timeout.
    #[arg(long, default_value = "2s", value_parser = bgslot::duration::parse_duration)]
    timeout: Duration,
    /// Stop by itself after this long.
    #[arg(long, default_value = "10m", value_parser = bgslot::duration::parse_duration)]
    max_duration: Duration,
    /// Also write every request as a JSON line to this file.
    #[arg(long)]
    records: Option<PathBuf>,
}

/// How the simulated node behaves.
#[derive(Args, Clone, Debug)]
struct NodeArgs {
    /// How long pods take to start (their app starts then, and is probed for readiness).
    #[arg(long, default_value = "1s", value_parser = bgslot::duration::parse_duration)]
    startup_delay: Duration,
    /// Upper bound on a deleted pod's grace period (default: the pod's own, preStop included).
    #[arg(long, value_parser = bgslot::duration::parse_duration)]
    max_grace: Option<Duration>,
    /// Upper bound on probe periods and initial delays (pods' own are used up to this).
    #[arg(long, default_value = "500ms", value_parser = bgslot::duration::parse_duration)]
    max_probe_period: Duration,
    /// How long an Endpoints change takes to reach the service proxy's routing table.
    #[arg(long, default_value = "1s", value_parser = bgslot::duration::parse_duration)]
    proxy_lag: Duration,
}

#[derive(Args, Clone)]
struct UpArgs {
    /// Directory for the environment (default: a fresh one under /dev/shm or the temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The kubeconfig context (and cluster) name of the control plane.
    #[arg(long, default_value = controlplane::CONTEXT)]
    context: String,
    /// Control planes side by side, each on its own free ports with its own node: the others in
    /// DIR/clusters/K with the context CONTEXT-K; KUBECONFIG lists every kubeconfig, and
    /// BGSLOT_TESTENV_DIR_K names each other's directory.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=5))]
    clusters: u16,
    #[command(flatten)]
    node: NodeArgs,
}

impl From<UpArgs> for UpOptions {
    fn from(a: UpArgs) -> Self {
        UpOptions {
            dir: a.dir,
            context: a.context,
            clusters: a.clusters as usize,
            startup_delay: a.node.startup_delay,
            max_grace: a.node.max_grace,
            max_probe_period: a.node.max_probe_period,
            proxy_lag: a.node.proxy_lag,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Verb::Prepare => prepare(),
        Verb::Up(args) => up(args.into()).await,
        Verb::Down { dir } => down(dir),
        Verb::RestartApiserver { dir, down_for } => restart_apiserver(dir, down_for).await,
        Verb::StopApiserver { dir } => stop_apiserver(dir),
        Verb::StartApiserver { dir } => start_apiserver(dir).await,
        Verb::Run { up, command } => run(up.into(), &command).await,
        Verb::Kubelet {
            kubeconfig,
            dir,
            node_name,
            node,
        } => kubelet::run(kubelet::Options {
            kubeconfig,
            dir,
            node_name,
            startup_delay: node.startup_delay,
            max_grace: node.max_grace,
            max_probe_period: node.max_probe_period,
            proxy_lag: node.proxy_lag,
        })
        .await
        .map(|()| ExitCode::SUCCESS),
        Verb::PodApp(opts) => podapp::run(opts).await.map(|()| ExitCode::SUCCESS),
        Verb::Load(args) => load(args).await,
        Verb::ZeroDowntime(opts) => bench::run(opts).await.map(|()| ExitCode::SUCCESS),
        Verb::SwapBench(opts) => bench::swap::run(opts).await.map(|()| ExitCode::SUCCESS),
        Verb::FleetBench(opts) => bench::fleet::run(opts).await.map(|()| ExitCode::SUCCESS),
        Verb::ServiceAddr {
            service,
            port,
            dir,
            wait,
        } => service_addr(dir, &service, port, wait).await,
        Verb::PodEvents {
            namespace,
            json,
            dir,
        } => pod_events(dir, namespace.as_deref(), json),
    };
    result.unwrap_or_else(|e| {
        eprintln!("testenv: error: {e:#}");
        ExitCode::FAILURE
    })
}

fn prepare() -> Result<ExitCode> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/prepare.sh");
    let err = std::process::Command::new("bash").arg(script).exec();
    Err(err).with_context(|| format!("running {script}"))
}

fn env_dir(dir: Option<PathBuf>) -> Result<PathBuf> {
    dir.or_else(|| {
        std::env::var_os("BGSLOT_TESTENV_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
    })
    .context(
        "which environment? pass the directory `testenv up` printed, or set BGSLOT_TESTENV_DIR",
    )
}

async fn service_addr(
    dir: Option<PathBuf>,
    service: &str,
    port: Option<u16>,
    wait: Duration,
) -> Result<ExitCode> {
    let addr = proxy::service_addr(&env_dir(dir)?, service, port, wait).await?;
    println!("{addr}");
    Ok(ExitCode::SUCCESS)
}

fn pod_events(dir: Option<PathBuf>, namespace: Option<&str>, json: bool) -> Result<ExitCode> {
    let events = kubelet::events::read(&env_dir(dir)?)?;
    let prefix = namespace.map(|ns| format!("{ns}/"));
    for (line, e) in &events {
        if prefix.as_ref().is_some_and(|p| !e.pod.starts_with(p)) {
            continue;
        }
        if json {
            println!("{line}");
        } else {
            println!("{}", kubelet::events::describe(e));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn load(args: LoadArgs) -> Result<ExitCode> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let dir = env_dir(args.dir)?;
    let target =
        proxy::service_addr(&dir, &args.service, args.port, Duration::from_secs(30)).await?;
    let running = load::Load::start(load::Options {
        target,
        rate: args.rate,
        keepalive_share: args.keepalive_share,
        keepalive_conns: args.keepalive_conns,
        timeout: args.timeout,
    });
    eprintln!(
        "load: started: {}/s to {} at {target}",
        args.rate, args.service
    );
    tokio::select! {
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
        _ = tokio::time::sleep(args.max_duration) => {}
    }
    let mut records = running.stop().await;
    load::attribute_rejections(&mut records, &dir, &args.service);
    if let Some(path) = &args.records {
        let lines: String = records
            .iter()
            .map(|r| serde_json::to_string(r).map(|l| l + "\n"))
            .collect::<Result<_, _>>()?;
        std::fs::write(path, lines).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&load::Summary::of(&records))?
    );
    Ok(ExitCode::SUCCESS)
}

fn down(dir: Option<PathBuf>) -> Result<ExitCode> {
    controlplane::down(&env_dir(dir)?)?;
    Ok(ExitCode::SUCCESS)
}

fn stop_apiserver(dir: Option<PathBuf>) -> Result<ExitCode> {
    let pid = controlplane::stop_apiserver(&env_dir(dir)?)?;
    eprintln!(
        "testenv: kube-apiserver (pid {pid}) stopped; `testenv start-apiserver` starts it again"
    );
    Ok(ExitCode::SUCCESS)
}

async fn start_apiserver(dir: Option<PathBuf>) -> Result<ExitCode> {
    let dir = env_dir(dir)?;
    let pid = controlplane::start_apiserver(&dir)?;
    await_apiserver(&dir, pid).await?;
    eprintln!("testenv: kube-apiserver started (pid {pid})");
    Ok(ExitCode::SUCCESS)
}

async fn restart_apiserver(dir: Option<PathBuf>, down_for: Duration) -> Result<ExitCode> {
    let dir = env_dir(dir)?;
    let pid = controlplane::restart_apiserver(&dir, down_for)?;
    await_apiserver(&dir, pid).await?;
    eprintln!("testenv: kube-apiserver restarted (pid {pid})");
    Ok(ExitCode::SUCCESS)
}

/// Waits until the API server `pid` of `dir` answers /readyz.
async fn await_apiserver(dir: &Path, pid: i32) -> Result<()> {
    let client = client_for(&dir.join("kubeconfig")).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !controlplane::readyz(&client).await {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "kube-apiserver (pid {pid}) not ready 60s after its restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn up(opts: UpOptions) -> Result<ExitCode> {
    let (dir, created) = controlplane::make_dir(opts.dir.as_deref())?;
    match controlplane::start_all(&dir, &opts).await {
        Ok(started) => {
            for (key, value) in &started.env {
                if key == "KUBECONFIG" || key.starts_with("BGSLOT_TESTENV_DIR") {
                    println!("export {key}={}", bgslot::names::shell_words(&[value]));
                }
            }
            eprintln!("testenv: stop it with: testenv down {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            give_up(&dir, created);
            Err(e)
        }
    }
}

/// Undoes a failed or interrupted `up`: stops what it started, removes the directory unless the
/// caller chose it (its logs stay for inspection then).
fn give_up(dir: &Path, created: bool) {
    if created {
        let _ = controlplane::down(dir);
    } else {
        controlplane::stop(dir);
        eprintln!("testenv: logs kept in {}", dir.display());
    }
}

async fn run(opts: UpOptions, command: &[String]) -> Result<ExitCode> {
    // Registered first: from here on SIGINT/SIGTERM cannot end testenv before it cleans up.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let (dir, created) = controlplane::make_dir(opts.dir.as_deref())?;

    let started = tokio::select! {
        r = controlplane::start_all(&dir, &opts) => r,
        _ = sigint.recv() => return Ok(interrupted_while_starting(&dir, created, libc::SIGINT)),
        _ = sigterm.recv() => return Ok(interrupted_while_starting(&dir, created, libc::SIGTERM)),
    };
    let started = match started {
        Ok(s) => s,
        Err(e) => {
            give_up(&dir, created);
            return Err(e);
        }
    };

    let outcome = run_command(command, &started.env, &mut sigint, &mut sigterm).await;
    let stopped = controlplane::down(&dir);
    let code = outcome?;
    stopped?;
    Ok(code)
}

fn interrupted_while_starting(dir: &Path, created: bool, sig: libc::c_int) -> ExitCode {
    give_up(dir, created);
    eprintln!("testenv: interrupted while starting; stopped everything");
    ExitCode::from(128 + sig as u8)
}

/// Runs `command` with `env` in a process group of its own. On SIGINT/SIGTERM the signal goes to
/// that whole group, and whatever the command left behind in it is stopped when it ends.
async fn run_command(
    command: &[String],
    env: &[(String, String)],
    sigint: &mut tokio::signal::unix::Signal,
    sigterm: &mut tokio::signal::unix::Signal,
) -> Result<ExitCode> {
    let mut child = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", command[0]))?;
    let group = child.id().context("command exited before it started")? as i32;
    let signal_group = |sig: libc::c_int| {
        // SAFETY: kill(2) has no memory-safety preconditions. The kernel does not hand out a
        // pid that is still some process group's id, so this reaches the command's group only.
        unsafe { libc::kill(-group, sig) };
    };
    let forwarded = tokio::select! {
        status = child.wait() => {
            signal_group(libc::SIGTERM);
            return Ok(exit_code(status?));
        }
        _ = sigint.recv() => libc::SIGINT,
        _ = sigterm.recv() => libc::SIGTERM,
    };
    signal_group(forwarded);
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        eprintln!(
            "testenv: {} did not stop within 10s; killing it",
            command[0]
        );
        signal_group(libc::SIGKILL);
        let _ = child.wait().await;
    }
    signal_group(libc::SIGKILL);
    Ok(ExitCode::from(128 + forwarded as u8))
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(code as u8),
        (None, Some(sig)) => ExitCode::from(128 + sig as u8),
        _ => ExitCode::FAILURE,
    }
}

/// A client for the cluster in `kubeconfig`, built as bgslot builds its own (TCP_NODELAY), so the
/// benchmarks' own API calls do not carry a delayed-ACK stall that bgslot's do not.
async fn client_for(kubeconfig: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    bgslot::context::kube_client(config)
}
