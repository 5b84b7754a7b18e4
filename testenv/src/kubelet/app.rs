//! The container runtime part of the simulated kubelet: starts a pod's main container as a real
//! `testenv pod-app` process, learns where it listens, signals it, and makes sure no app outlives
//! the kubelet (a parent-death signal, plus a registry the kubelet kills on SIGTERM). Every start,
//! signal and exit goes into the node's record ([`super::events`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::events::{KillReason, PodEvents, Subject, What};
use super::spec::AppSpec;
use crate::podnet::local_ip;

/// How long an app may take from exec to listening before the start counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The apps this kubelet runs, by pid, so a stopping kubelet can kill them all.
static RUNNING: Mutex<Option<HashMap<i32, Subject>>> = Mutex::new(None);
/// Set once the kubelet is stopping: it has killed every app, and no pod task may start, signal
/// or record one after that.
static STOPPING: AtomicBool = AtomicBool::new(false);

fn register(subject: &Subject) {
    if STOPPING.load(Ordering::SeqCst) {
        // Started as the kubelet stopped: it dies with the kubelet (parent-death signal).
        return;
    }
    RUNNING
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(subject.pid, subject.clone());
}

fn unregister(pid: i32) {
    if let Some(running) = RUNNING.lock().unwrap().as_mut() {
        running.remove(&pid);
    }
}

/// Kills every app still running (the kubelet is stopping) and records it.
pub fn kill_all(events: &PodEvents) {
    let running: Vec<Subject> = {
        let running = RUNNING.lock().unwrap();
        STOPPING.store(true, Ordering::SeqCst);
        running.iter().flat_map(|r| r.values()).cloned().collect()
    };
    for subject in running {
        events.around(|| {
            signal(subject.pid, libc::SIGKILL);
            let what = What::Sigkill {
                reason: KillReason::KubeletStopping,
            };
            ((), Some((subject, what)))
        });
    }
}

fn signal(pid: i32, sig: libc::c_int) {
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
    subject: Subject,
    events: Arc<PodEvents>,
    /// Its status once reaped.
    exited: Option<ExitStatus>,
    /// Held open: the app must not get SIGPIPE should it ever print again.
    _stdout: Option<Lines<BufReader<ChildStdout>>>,
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
    /// Starts the main container of `pod` at `pod_ip`.
    pub async fn start(
        env_dir: &Path,
        events: &Arc<PodEvents>,
        pod: &Pod,
        pod_ip: Ipv4Addr,
        spec: &AppSpec,
        behaviour: &Behaviour,
    ) -> Result<Started> {
        let key = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or(""),
            pod.metadata.name.as_deref().unwrap_or("")
        );
        // The running kubelet's own executable, even if a rebuild has replaced the file since.
        let exe = Path::new("/proc/self/exe");
        let mut cmd = Command::new(exe);
        cmd.arg("pod-app")
            .arg("--env-dir")
            .arg(env_dir)
            .args([
                "--pod",
                &key,
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
        if let Some(delay) = spec.stop_delay {
            cmd.arg(format!("--stop-delay={}ms", delay.as_millis()));
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
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        // Recorded with the time read just before the process exists.
        let spawned = events.around(|| match cmd.spawn() {
            Ok(child) => {
                let subject = child.id().map(|pid| Subject {
                    pod: key.clone(),
                    uid: uid.clone(),
                    pid: pid as i32,
                });
                let started = subject.clone().map(|s| {
                    (
                        s,
                        What::Started {
                            labels: labels.clone(),
                        },
                    )
                });
                (Ok((child, subject)), started)
            }
            Err(e) => (Err(e), None),
        });
        let (mut child, subject) = spawned.context("starting pod-app")?;
        let subject = subject.context("pod-app exited at once")?;
        register(&subject);
        let stdout = child.stdout.take().expect("piped stdout");
        let mut app = App {
            child,
            pid: subject.pid,
            ports: Vec::new(),
            subject,
            events: events.clone(),
            exited: None,
            _stdout: None,
        };
        let mut lines = BufReader::new(stdout).lines();
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
                app.kill(KillReason::StartFailed);
                app.wait().await;
                return Err(e.context(format!("starting the app of {key}")));
            }
            Err(_) => {
                app.kill(KillReason::StartFailed);
                app.wait().await;
                bail!("the app of {key} did not listen within {START_TIMEOUT:?}");
            }
        };
        if !listening {
            return Ok(Started::Exited(app.wait().await));
        }
        app.ports = ports;
        app._stdout = Some(lines);
        Ok(Started::Running(Box::new(app)))
    }

    /// The local address of container port `port`.
    pub fn local(&self, port: u16) -> Option<SocketAddr> {
        self.ports.iter().find(|(p, _)| *p == port).map(|(_, a)| *a)
    }

    /// Waits until the process ends, and records how it ended. Cancel-safe.
    pub async fn wait(&mut self) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        let status = self
            .child
            .wait()
            .await
            .unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(0));
        unregister(self.pid);
        self.exited = Some(status);
        if !STOPPING.load(Ordering::SeqCst) {
            self.events.record(&self.subject, What::exited(status));
        }
        status
    }

    /// Sends SIGTERM and records it with the pod's grace period and how long the app has from
    /// now until SIGKILL.
    pub fn terminate(&self, grace: Duration, kill_after: Duration) {
        self.send(libc::SIGTERM, What::sigterm(grace, kill_after));
    }

    /// Sends SIGKILL and records why.
    pub fn kill(&self, reason: KillReason) {
        self.send(libc::SIGKILL, What::Sigkill { reason });
    }

    fn send(&self, sig: libc::c_int, what: What) {
        if self.exited.is_some() {
            // Reaped: the pid may belong to another process by now.
            return;
        }
        if STOPPING.load(Ordering::SeqCst) {
            // The kubelet killed it already, and recorded so.
            return;
        }
        self.events.around(|| {
            signal(self.pid, sig);
            ((), Some((self.subject.clone(), what)))
        });
    }
}
