//! The container runtime part of the simulated kubelet: starts a pod's main container as a real
//! `testenv pod-app` process, learns where it listens, signals it, and makes sure no app outlives
//! the kubelet (a parent-death signal, plus a registry the kubelet kills on SIGTERM).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::spec::AppSpec;
use crate::podnet::local_ip;

/// How long an app may take from exec to listening before the start counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Pids of the apps this kubelet runs, so a stopping kubelet can kill them all.
pub static RUNNING: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

fn register(pid: i32) {
    RUNNING
        .lock()
        .unwrap()
        .get_or_insert_with(HashSet::new)
        .insert(pid);
}

fn unregister(pid: i32) {
    if let Some(set) = RUNNING.lock().unwrap().as_mut() {
        set.remove(&pid);
    }
}

/// Kills every app still running (the kubelet is stopping).
pub fn kill_all() {
    let pids: Vec<i32> = RUNNING.lock().unwrap().iter().flatten().copied().collect();
    for pid in pids {
        signal(pid, libc::SIGKILL);
    }
}

pub fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is an unreaped child of ours.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// A running app.
pub struct App {
    child: Child,
    pub pid: i32,
    /// Each container port and the local address it really listens on.
    pub ports: Vec<(u16, SocketAddr)>,
    /// Held open: the app must not get SIGPIPE should it ever print again.
    _stdout: Lines<BufReader<ChildStdout>>,
}

pub enum Started {
    Running(Box<App>),
    /// The process ended before it listened (a crash on start-up).
    Exited(ExitStatus),
}

/// What makes this start of the app different from a plain one.
pub struct Behaviour {
    /// How long the app answers 503 after start.
    pub warmup: Duration,
    pub never_ready: bool,
    pub crash: bool,
}

impl App {
    /// Starts the main container of pod `pod` (NAMESPACE/NAME) at `pod_ip`.
    pub async fn start(
        env_dir: &Path,
        pod: &str,
        pod_ip: Ipv4Addr,
        spec: &AppSpec,
        behaviour: &Behaviour,
    ) -> Result<Started> {
        // The running kubelet's own executable, even if a rebuild has replaced the file since.
        let exe = Path::new("/proc/self/exe");
        let mut cmd = Command::new(exe);
        cmd.arg("pod-app")
            .arg("--env-dir")
            .arg(env_dir)
            .args([
                "--pod",
                pod,
                "--slot",
                &spec.slot,
                "--version",
                &spec.version,
            ])
            .arg("--ip")
            .arg(IpAddr::V4(local_ip(pod_ip)).to_string())
            .arg(format!("--warmup={}ms", behaviour.warmup.as_millis()));
        for port in &spec.ports {
            cmd.arg("--port").arg(port.to_string());
        }
        if let Some(age) = spec.max_connection_age {
            cmd.arg(format!("--max-connection-age={}ms", age.as_millis()));
        }
        if behaviour.never_ready {
            cmd.arg("--never-ready");
        }
        if behaviour.crash {
            cmd.arg("--crash");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        // SAFETY: prctl(2) and getppid(2) are async-signal-safe; nothing else runs here.
        let parent = std::process::id() as i32;
        unsafe {
            cmd.pre_exec(move || {
                // The app dies with the kubelet, even when the kubelet is SIGKILLed.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().context("starting pod-app")?;
        let pid = child.id().context("pod-app exited at once")? as i32;
        register(pid);
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut ports = Vec::new();
        let handshake = async {
            while let Some(line) = lines.next_line().await? {
                match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                    ["listening", port, addr] => ports.push((port.parse()?, addr.parse()?)),
                    ["started"] => return Ok(true),
                    _ => bail!("pod-app said {line:?}"),
                }
            }
            Ok::<bool, anyhow::Error>(false)
        };
        let listening = match tokio::time::timeout(START_TIMEOUT, handshake).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                let _ = child.kill().await;
                unregister(pid);
                return Err(e.context(format!("starting the app of {pod}")));
            }
            Err(_) => {
                let _ = child.kill().await;
                unregister(pid);
                bail!("the app of {pod} did not listen within {START_TIMEOUT:?}");
            }
        };
        if !listening {
            let status = child.wait().await?;
            unregister(pid);
            return Ok(Started::Exited(status));
        }
        Ok(Started::Running(Box::new(App {
            child,
            pid,
            ports,
            _stdout: lines,
        })))
    }

    /// The local address of container port `port`.
    pub fn local(&self, port: u16) -> Option<SocketAddr> {
        self.ports.iter().find(|(p, _)| *p == port).map(|(_, a)| *a)
    }

    /// Waits until the process ends. Cancel-safe.
    pub async fn wait(&mut self) -> ExitStatus {
        let status = self
            .child
            .wait()
            .await
            .unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(0));
        unregister(self.pid);
        status
    }

    pub fn signal(&self, sig: libc::c_int) {
        signal(self.pid, sig);
    }
}
