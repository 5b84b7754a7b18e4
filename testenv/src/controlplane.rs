//! Starting and stopping a throwaway control plane (etcd, kube-apiserver, kube-controller-manager
//! and the simulated kubelet) in a directory of its own, so tests run against the real API server
//! and leave nothing behind. Every process is recorded in `DIR/pids` as soon as it starts, which is
//! what lets `down` stop exactly those processes, even after an interrupted `up`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use bgslot::names::shell_words;
use k8s_openapi::api::core::v1::{Node, Secret, ServiceAccount};
use kube::{Api, Client};

use crate::pki;

/// Marks a directory as made by `up`, so `down` never deletes anything else.
const MARKER: &str = ".bgslot-testenv";
pub const NODE_NAME: &str = "bgslot-sim";
/// The kubeconfig context (and cluster) of an environment, unless `--context` names another: a
/// second environment beside it needs its own, so that one kubeconfig can hold both.
pub const CONTEXT: &str = "bgslot-testenv";
/// Where `up --clusters N` puts the control planes after the first: `DIR/clusters/2`, ...; `down`
/// of the first stops them too.
const CLUSTERS: &str = "clusters";

#[derive(Clone, Debug)]
pub struct UpOptions {
    pub dir: Option<PathBuf>,
    /// The kubeconfig context and cluster name of the (first) control plane.
    pub context: String,
    /// How many control planes, side by side; the others in `DIR/clusters/K`.
    pub clusters: usize,
    pub startup_delay: Duration,
    pub max_grace: Option<Duration>,
    pub max_probe_period: Duration,
    pub proxy_lag: Duration,
}

/// The binaries `prepare` cached, read from its `env` file.
struct Binaries {
    etcd: PathBuf,
    apiserver: PathBuf,
    controller_manager: PathBuf,
    /// `BGSLOT_HELM*` lines, handed on to the tests.
    helm: BTreeMap<String, String>,
}

fn cache_env_file() -> PathBuf {
    if let Some(dir) = std::env::var_os("BGSLOT_TESTENV_CACHE") {
        return PathBuf::from(dir).join("env");
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    cache.join("bgslot-testenv").join("env")
}

impl Binaries {
    fn from_cache() -> Result<Self> {
        let file = cache_env_file();
        let text = fs::read_to_string(&file).map_err(|e| {
            anyhow!(
                "cannot read {} ({e}): run `testenv prepare` first",
                file.display()
            )
        })?;
        let vars: BTreeMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let binary = |key: &str| -> Result<PathBuf> {
            let path = vars
                .get(key)
                .map(PathBuf::from)
                .ok_or_else(|| anyhow!("{} has no {key}: run `testenv prepare`", file.display()))?;
            if !path.is_file() {
                bail!(
                    "{key}={} does not exist: run `testenv prepare`",
                    path.display()
                );
            }
            Ok(path)
        };
        Ok(Binaries {
            etcd: binary("BGSLOT_ETCD")?,
            apiserver: binary("BGSLOT_KUBE_APISERVER")?,
            controller_manager: binary("BGSLOT_KUBE_CONTROLLER_MANAGER")?,
            helm: vars
                .into_iter()
                .filter(|(k, _)| k.starts_with("BGSLOT_HELM"))
                .collect(),
        })
    }
}

/// Creates the environment's directory: `requested`, or a fresh one under /dev/shm (etcd's fsyncs
/// are what make a control plane slow on disk) or the system temp dir. Returns whether it was
/// created here, i.e. whether a failed `up` may remove it.
pub fn make_dir(requested: Option<&Path>) -> Result<(PathBuf, bool)> {
    if let Some(dir) = requested {
        if running(dir) {
            bail!(
                "{} already holds a running environment: testenv down {0} first",
                dir.display()
            );
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let dir = fs::canonicalize(dir)?;
        File::create(dir.join(MARKER))?;
        return Ok((dir, false));
    }
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() && access_ok(shm) {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    for _ in 0..10 {
        let dir = base.join(format!("bgslot-testenv-{}", random_hex(4)?));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                let dir = fs::canonicalize(dir)?;
                File::create(dir.join(MARKER))?;
                return Ok((dir, true));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!("could not create a directory under {}", base.display())
}

fn access_ok(dir: &Path) -> bool {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: access(2) only reads the NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Free loopback ports, distinct from each other (all are held until every one is chosen).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()?)
}

/// What `up` made, for the caller to print or export.
pub struct Started {
    pub kubeconfig: PathBuf,
    /// The variables written to `DIR/env`, in order.
    pub env: Vec<(String, String)>,
}

/// Starts `program` in a session of its own, output to `log`. The session keeps it alive after
/// `up` exits and out of reach of the terminal's Ctrl-C; `down` stops it by pid.
fn spawn_detached(program: &Path, args: &[String], dir: &Path, log: File) -> Result<Child> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid(2) is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd.spawn()?)
}

fn record_pid(dir: &Path, name: &str, pid: u32) -> Result<()> {
    let mut pids = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("pids"))?;
    writeln!(pids, "{name} {pid}")?;
    Ok(())
}

/// The processes started so far; each is appended to `DIR/pids` as it starts.
struct Procs {
    dir: PathBuf,
    children: Vec<(String, Child)>,
}

impl Procs {
    fn spawn(&mut self, name: &str, program: &Path, args: &[String]) -> Result<()> {
        let log = self.dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = spawn_detached(program, args, &self.dir, out)
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        record_pid(&self.dir, name, child.id())?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    /// Fails naming the first process that has exited.
    fn check_alive(&mut self) -> Result<()> {
        for (name, child) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                return Err(component_failed(
                    &self.dir,
                    name,
                    &format!("exited ({status})"),
                ));
            }
        }
        Ok(())
    }

    /// Polls `probe` until it answers true, failing if any process dies or `timeout` passes
    /// (then blaming `component`).
    async fn wait_for<F, Fut>(
        &mut self,
        component: &str,
        what: &str,
        timeout: Duration,
        mut probe: F,
    ) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            if probe().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(component_failed(
                    &self.dir,
                    component,
                    &format!("did not get {what} within {timeout:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn component_failed(dir: &Path, name: &str, what: &str) -> anyhow::Error {
    let log = dir.join(format!("{name}.log"));
    let tail = fs::read_to_string(&log)
        .map(|text| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        })
        .unwrap_or_else(|e| format!("(cannot read log: {e})"));
    anyhow!("{name} {what}; last lines of its log ({name}.log):\n{tail}")
}

/// Starts the control plane in `dir` and waits until it can run pods.
pub async fn start(dir: &Path, opts: &UpOptions) -> Result<Started> {
    let began = Instant::now();
    let bin = Binaries::from_cache()?;
    let pki = pki::generate(&dir.join("certs"))?;
    let token = random_hex(16)?;
    let tokens = dir.join("tokens.csv");
    write_private(&tokens, &format!("{token},admin,admin,system:masters\n"))?;
    let [etcd_port, peer_port, api_port]: [u16; 3] = free_ports(3)?.try_into().unwrap();
    let p = |path: &Path| path.display().to_string();
    let d = |sub: &str| dir.join(sub).display().to_string();

    let kubeconfig = dir.join("kubeconfig");
    write_private(
        &kubeconfig,
        &kubeconfig_yaml(&opts.context, api_port, &pki.ca_cert_pem, &token),
    )?;

    let mut procs = Procs {
        dir: dir.to_path_buf(),
        children: Vec::new(),
    };
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    procs.spawn(
        "etcd",
        &bin.etcd,
        &[
            format!("--data-dir={}", d("etcd")),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
        ],
    )?;
    procs.spawn(
        "kube-apiserver",
        &bin.apiserver,
        &[
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            "--insecure-port=0".into(),
            format!("--cert-dir={}", d("certs")),
            format!("--tls-cert-file={}", p(&pki.serving_cert)),
            format!("--tls-private-key-file={}", p(&pki.serving_key)),
            format!("--client-ca-file={}", p(&pki.ca_cert)),
            format!("--token-auth-file={}", p(&tokens)),
            "--authorization-mode=RBAC".into(),
            format!("--service-account-key-file={}", p(&pki.sa_public_key)),
            format!(
                "--service-account-signing-key-file={}",
                p(&pki.sa_private_key)
            ),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
        ],
    )?;

    let client = crate::client_for(&kubeconfig).await?;
    procs
        .wait_for(
            "kube-apiserver",
            "/readyz ok",
            Duration::from_secs(90),
            || readyz(&client),
        )
        .await?;
    eprintln!(
        "testenv: kube-apiserver ready after {:.1?}",
        began.elapsed()
    );

    // The controller manager gives up if the API server is not healthy within 10 s, so it
    // starts only now.
    procs.spawn(
        "kube-controller-manager",
        &bin.controller_manager,
        &[
            format!("--kubeconfig={}", p(&kubeconfig)),
            "--controllers=*".into(),
            format!("--root-ca-file={}", p(&pki.ca_cert)),
            format!(
                "--service-account-private-key-file={}",
                p(&pki.sa_private_key)
            ),
            "--leader-elect=false".into(),
            "--port=0".into(),
            "--secure-port=0".into(),
            "--profiling=false".into(),
        ],
    )?;
    let exe = std::env::current_exe().context("locating the testenv binary")?;
    let mut kubelet_args = vec![
        "kubelet".into(),
        format!("--kubeconfig={}", p(&kubeconfig)),
        format!("--dir={}", p(dir)),
        format!("--node-name={NODE_NAME}"),
        format!("--startup-delay={}ms", opts.startup_delay.as_millis()),
        format!("--max-probe-period={}ms", opts.max_probe_period.as_millis()),
        format!("--proxy-lag={}ms", opts.proxy_lag.as_millis()),
    ];
    if let Some(max) = opts.max_grace {
        kubelet_args.push(format!("--max-grace={}ms", max.as_millis()));
    }
    procs.spawn("kubelet", &exe, &kubelet_args)?;

    // ServiceAccount admission in 1.20 rejects pods until the namespace's default
    // ServiceAccount has its token secret.
    procs
        .wait_for(
            "kube-controller-manager",
            "the default ServiceAccount's token",
            Duration::from_secs(60),
            || default_token_ready(&client, "default"),
        )
        .await?;
    procs
        .wait_for("kubelet", "a Ready node", Duration::from_secs(30), || {
            node_ready(&client)
        })
        .await?;

    let mut env = vec![
        ("KUBECONFIG".to_string(), p(&kubeconfig)),
        ("BGSLOT_TESTENV_DIR".to_string(), p(dir)),
    ];
    env.extend(bin.helm);
    let text: String = env
        .iter()
        .map(|(k, v)| format!("{k}={}\n", shell_words(&[v])))
        .collect();
    fs::write(dir.join("env"), text)?;
    eprintln!(
        "testenv: control plane up in {:.1?} in {}",
        began.elapsed(),
        dir.display()
    );
    Ok(Started { kubeconfig, env })
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

/// A kubeconfig whose cluster, user and context are named after `name` (the first environment's
/// user is `admin`, as it always was): kubeconfigs merged in KUBECONFIG keep the first file's
/// entry of a name, so two environments must not share one.
fn kubeconfig_yaml(name: &str, port: u16, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let user = if name == CONTEXT {
        "admin".to_string()
    } else {
        format!("admin@{name}")
    };
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {name}
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: {name}
  context:
    cluster: {name}
    user: {user}
    namespace: default
current-context: {name}
"
    )
}

/// Starts `opts.clusters` control planes side by side, at once: the first in `dir`, the others in
/// `dir/clusters/K` with the context `CONTEXT-K`. What the command of `run` gets: KUBECONFIG
/// listing every kubeconfig (the first's context is the current one), BGSLOT_TESTENV_DIR (the
/// first) and BGSLOT_TESTENV_DIR_K for the others.
pub async fn start_all(dir: &Path, opts: &UpOptions) -> Result<Started> {
    if opts.clusters <= 1 {
        return start(dir, opts).await;
    }
    let mut others = Vec::new();
    for k in 2..=opts.clusters {
        let (sub, _) = make_dir(Some(&dir.join(CLUSTERS).join(k.to_string())))?;
        let sub_opts = UpOptions {
            dir: Some(sub.clone()),
            context: format!("{}-{k}", opts.context),
            clusters: 1,
            ..opts.clone()
        };
        others.push((k, sub, sub_opts));
    }
    let first = start(dir, opts);
    let rest = futures::future::try_join_all(others.iter().map(|(_, sub, o)| start(sub, o)));
    let (first, rest) = tokio::try_join!(first, rest)?;
    let kubeconfigs: Vec<String> = std::iter::once(&first)
        .chain(&rest)
        .map(|s| s.kubeconfig.display().to_string())
        .collect();
    let mut env: Vec<(String, String)> = first
        .env
        .into_iter()
        .map(|(k, v)| {
            if k == "KUBECONFIG" {
                (k, kubeconfigs.join(":"))
            } else {
                (k, v)
            }
        })
        .collect();
    for (k, sub, _) in &others {
        env.push((format!("BGSLOT_TESTENV_DIR_{k}"), sub.display().to_string()));
    }
    let text: String = env
        .iter()
        .map(|(k, v)| format!("{k}={}\n", shell_words(&[v])))
        .collect();
    fs::write(dir.join("env"), text)?;
    Ok(Started {
        kubeconfig: first.kubeconfig,
        env,
    })
}

pub async fn readyz(client: &Client) -> bool {
    let request = http::Request::get("/readyz").body(Vec::new()).unwrap();
    matches!(client.request_text(request).await, Ok(body) if body.trim() == "ok")
}

/// Whether `namespace`'s default ServiceAccount exists with its token secret.
pub async fn default_token_ready(client: &Client, namespace: &str) -> bool {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let Ok(Some(sa)) = sas.get_opt("default").await else {
        return false;
    };
    for reference in sa.secrets.into_iter().flatten() {
        if let Some(name) = reference.name {
            if let Ok(Some(_)) = secrets.get_opt(&name).await {
                return true;
            }
        }
    }
    false
}

async fn node_ready(client: &Client) -> bool {
    let nodes: Api<Node> = Api::all(client.clone());
    let Ok(Some(node)) = nodes.get_opt(NODE_NAME).await else {
        return false;
    };
    node.status
        .and_then(|s| s.conditions)
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

// --- stopping --------------------------------------------------------------------------------

/// Whether `dir` has a process from `DIR/pids` still running.
fn running(dir: &Path) -> bool {
    read_pids(dir).iter().any(|(_, pid)| alive(*pid, dir))
}

fn read_pids(dir: &Path) -> Vec<(String, i32)> {
    fs::read_to_string(dir.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (name, pid) = l.split_once(' ')?;
            Some((name.to_string(), pid.trim().parse().ok()?))
        })
        .collect()
}

/// Whether `pid` is still running (not a zombie) and is the process `up` started for `dir`.
fn alive(pid: i32, dir: &Path) -> bool {
    let zombie = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| rest.starts_with('Z'))
        });
    zombie == Some(false) && owned(pid, dir)
}

/// Whether `pid`'s command line names `dir`, which a recycled pid's would not.
fn owned(pid: i32, dir: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let dir = dir.as_os_str().as_encoded_bytes();
    !dir.is_empty() && cmdline.windows(dir.len()).any(|w| w == dir)
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Where `stop_apiserver` keeps the stopped API server's command line for `start_apiserver`.
const APISERVER_ARGV: &str = "kube-apiserver.argv";

/// Kills the running kube-apiserver of `dir` (SIGKILL: clients must survive an API server that
/// vanishes mid-request) and keeps its command line, so `start_apiserver` can start it again.
/// Everything else of the environment keeps running. Returns the pid it killed.
pub fn stop_apiserver(dir: &Path) -> Result<i32> {
    let dir =
        fs::canonicalize(dir).with_context(|| format!("no environment at {}", dir.display()))?;
    let (_, pid) = read_pids(&dir)
        .into_iter()
        .rev()
        .find(|(name, pid)| name == "kube-apiserver" && alive(*pid, &dir))
        .with_context(|| format!("no running kube-apiserver in {}", dir.display()))?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
        .context("reading the kube-apiserver command line")?;
    write_private_bytes(&dir.join(APISERVER_ARGV), &cmdline)?;
    signal(pid, libc::SIGKILL);
    if !wait_gone(pid, &dir, Duration::from_secs(10)) {
        bail!("kube-apiserver (pid {pid}) did not exit after SIGKILL");
    }
    Ok(pid)
}

/// Starts the kube-apiserver `stop_apiserver` stopped, with the same command line; returns its
/// pid (not waiting until it is ready).
pub fn start_apiserver(dir: &Path) -> Result<i32> {
    let dir =
        fs::canonicalize(dir).with_context(|| format!("no environment at {}", dir.display()))?;
    if let Some((_, pid)) = read_pids(&dir)
        .into_iter()
        .find(|(name, pid)| name == "kube-apiserver" && alive(*pid, &dir))
    {
        bail!(
            "kube-apiserver (pid {pid}) of {} is running already",
            dir.display()
        );
    }
    let cmdline = fs::read(dir.join(APISERVER_ARGV)).with_context(|| {
        format!(
            "no stopped kube-apiserver in {} (testenv stop-apiserver stops one)",
            dir.display()
        )
    })?;
    let mut argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let program = PathBuf::from(argv.remove(0));
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("kube-apiserver.log"))?;
    let child = spawn_detached(&program, &argv, &dir, log)
        .with_context(|| format!("restarting {}", program.display()))?;
    record_pid(&dir, "kube-apiserver", child.id())?;
    Ok(child.id() as i32)
}

/// Kills the running kube-apiserver of `dir`, keeps it down for `down_for`, and starts it again
/// with the same command line (for tests of clients that must survive an API server restart).
pub fn restart_apiserver(dir: &Path, down_for: Duration) -> Result<i32> {
    stop_apiserver(dir)?;
    std::thread::sleep(down_for);
    start_apiserver(dir)
}

fn write_private_bytes(path: &Path, contents: &[u8]) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents)?;
    Ok(())
}

/// Stops every process recorded in `DIR/pids` (SIGTERM, then SIGKILL after 10 s) and removes
/// the directory. Quiet and successful when it is already gone.
pub fn down(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let dir = fs::canonicalize(dir)?;
    if !dir.join(MARKER).exists() {
        bail!(
            "{} was not made by testenv up; not touching it",
            dir.display()
        );
    }
    stop(&dir);
    fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))
}

/// Stops the processes of `dir` one by one, newest first (the API server needs etcd to shut down
/// cleanly), leaving the directory in place; then any pod app of `dir` that survived its kubelet.
/// The environments started beside it in `dir/clusters/` (by `up --clusters`, or by a test that
/// needed a second cluster) are stopped first.
pub fn stop(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir.join(CLUSTERS)) {
        for entry in entries.flatten() {
            let sub = entry.path();
            if sub.join(MARKER).exists() {
                stop(&sub);
            }
        }
    }
    for (name, pid) in read_pids(dir).into_iter().rev() {
        if !alive(pid, dir) {
            continue;
        }
        signal(pid, libc::SIGTERM);
        if wait_gone(pid, dir, Duration::from_secs(10)) {
            continue;
        }
        eprintln!("testenv: {name} (pid {pid}) ignored SIGTERM for 10s; killing it");
        signal(pid, libc::SIGKILL);
        wait_gone(pid, dir, Duration::from_secs(5));
    }
    for pid in pod_apps(dir) {
        eprintln!("testenv: pod app (pid {pid}) outlived its kubelet; killing it");
        signal(pid, libc::SIGKILL);
        wait_gone(pid, dir, Duration::from_secs(5));
    }
}

/// Pod apps started for `dir`: live processes whose command line is `… pod-app --env-dir DIR …`.
fn pod_apps(dir: &Path) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return vec![];
    };
    let dir = dir.as_os_str().as_encoded_bytes();
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.get(1) == Some(&&b"pod-app"[..])
                && args.windows(2).any(|w| w[0] == b"--env-dir" && w[1] == dir)
        })
        .filter(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            !stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
        .collect()
}

fn wait_gone(pid: i32, dir: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(pid, dir) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct() {
        let ports = free_ports(3).unwrap();
        assert_ne!(ports[0], ports[1]);
        assert_ne!(ports[1], ports[2]);
        assert_ne!(ports[0], ports[2]);
    }

    #[test]
    fn a_second_environment_names_its_cluster_user_and_context_apart() {
        let first = kubeconfig_yaml(CONTEXT, 1, "ca", "t");
        assert!(
            first.contains("- name: admin\n")
                && first.contains("current-context: bgslot-testenv\n")
        );
        let second = kubeconfig_yaml("bgslot-testenv-2", 2, "ca", "t");
        for line in [
            "- name: bgslot-testenv-2\n  cluster:",
            "- name: admin@bgslot-testenv-2\n",
            "    cluster: bgslot-testenv-2\n    user: admin@bgslot-testenv-2\n",
            "current-context: bgslot-testenv-2\n",
        ] {
            assert!(second.contains(line), "{line} in {second}");
        }
    }

    #[test]
    fn pid_guard_checks_the_command_line() {
        let me = std::process::id() as i32;
        let exe = std::env::current_exe().unwrap();
        assert!(owned(me, exe.parent().unwrap()));
        assert!(alive(me, exe.parent().unwrap()));
        assert!(!owned(me, Path::new("/nonexistent/bgslot-testenv-x")));
        assert!(!owned(i32::MAX, exe.parent().unwrap()));
    }

    #[test]
    fn down_refuses_foreign_directories_and_ignores_missing_ones() {
        down(Path::new("/nonexistent/bgslot-testenv-x")).unwrap();
        let foreign = std::env::temp_dir().join(format!("testenv-foreign-{}", std::process::id()));
        fs::create_dir_all(&foreign).unwrap();
        assert!(down(&foreign).is_err());
        assert!(foreign.exists());
        fs::remove_dir_all(&foreign).unwrap();
    }
}
