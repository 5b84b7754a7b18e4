//! The application every simulated pod really runs (`testenv pod-app`, started by the kubelet):
//! a small HTTP/1.1 server that says which slot, version and pod answered, so tests can send real
//! requests through a release and see who served them, and that shuts down the way a well-behaved
//! server does, so what a drain costs is measured rather than assumed.
//!
//! Shutdown on SIGTERM: the listeners close at once (new connections are refused, and one still
//! queued in the listen backlog is reset, as with any server that closes its listener), requests in
//! flight finish, a request that arrives on an open keep-alive connection is answered with
//! `Connection: close` and the connection closed, a connection left idle for [`DRAIN_IDLE`] is
//! closed, and the process exits when no connection is left and its stop delay (`--stop-delay`,
//! none by default: a worker finishing the job in hand) has passed since SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::http1;

/// How long a draining server leaves a keep-alive connection open without a request before it
/// closes it. Closing an idle connection races with a client that sends at that moment, so a
/// draining server waits for the next request and answers it with `Connection: close` instead,
/// unless the client stays quiet this long.
pub const DRAIN_IDLE: Duration = Duration::from_secs(1);
/// How long a crash-looping app lives before it exits with code 1.
const CRASH_AFTER: Duration = Duration::from_millis(100);
/// Upper bound on the `delay` a request may ask for.
const MAX_DELAY: Duration = Duration::from_secs(60);

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// The environment directory (named so `testenv down` recognises its processes).
    #[arg(long)]
    pub env_dir: PathBuf,
    /// NAMESPACE/NAME of the pod.
    #[arg(long)]
    pub pod: String,
    /// The pod's `bgslot/slot` label (empty when it has none).
    #[arg(long, default_value = "")]
    pub slot: String,
    /// The version the pod runs: its image tag, or digest.
    #[arg(long, default_value = "")]
    pub version: String,
    /// The loopback address to listen on (every port gets a free port number on it).
    #[arg(long)]
    pub ip: IpAddr,
    /// A container port to serve; repeatable.
    #[arg(long = "port", required = true)]
    pub ports: Vec<u16>,
    /// Answer 503 until this long after start (a slow start).
    #[arg(long, default_value = "0s", value_parser = bgslot::duration::parse_duration)]
    pub warmup: Duration,
    /// Answer 503 forever (up, but never ready).
    #[arg(long)]
    pub never_ready: bool,
    /// Exit with code 1 right after start, before listening (a crash loop).
    #[arg(long)]
    pub crash: bool,
    /// Close a keep-alive connection once it is this old, with `Connection: close` on its next
    /// answer (nginx's `keepalive_time`, Envoy's `max_connection_duration`, gRPC's
    /// `MaxConnectionAge`): clients reconnect, and so follow the Service's current endpoints.
    #[arg(long, value_parser = bgslot::duration::parse_duration)]
    pub max_connection_age: Option<Duration>,
    /// Keep running this long after SIGTERM before exiting on its own, as a worker finishing the
    /// job in hand does (connections drain meanwhile, as without it).
    #[arg(long, value_parser = bgslot::duration::parse_duration)]
    pub stop_delay: Option<Duration>,
}

/// What every response says about who answered.
struct Identity {
    pod: String,
    slot: String,
    version: String,
    started: Instant,
    warmup: Duration,
    never_ready: bool,
    max_connection_age: Option<Duration>,
}

impl Identity {
    fn ready(&self) -> bool {
        !self.never_ready && self.started.elapsed() >= self.warmup
    }
}

macro_rules! log {
    ($pod:expr, $($arg:tt)*) => {
        eprintln!("{} pod-app {}: {}", k8s_openapi::jiff::Timestamp::now().strftime("%H:%M:%S%.3f"), $pod, format_args!($($arg)*))
    };
}

pub async fn run(opts: Options) -> Result<()> {
    if opts.crash {
        tokio::time::sleep(CRASH_AFTER).await;
        log!(opts.pod, "crashing (fault crash-loop)");
        std::process::exit(1);
    }
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let identity = std::sync::Arc::new(Identity {
        pod: opts.pod.clone(),
        slot: opts.slot.clone(),
        version: opts.version.clone(),
        started: Instant::now(),
        warmup: opts.warmup,
        never_ready: opts.never_ready,
        max_connection_age: opts.max_connection_age,
    });

    let mut listeners = Vec::new();
    let mut stdout = tokio::io::stdout();
    for port in &opts.ports {
        let listener = TcpListener::bind(SocketAddr::new(opts.ip, 0))
            .await
            .with_context(|| format!("listening on {} for container port {port}", opts.ip))?;
        let local = listener.local_addr()?;
        // The kubelet reads these lines to learn where the container ports really are.
        stdout
            .write_all(format!("listening {port} {local}\n").as_bytes())
            .await?;
        listeners.push(listener);
    }
    stdout.write_all(b"started\n").await?;
    stdout.flush().await?;

    let (draining_tx, draining) = watch::channel(false);
    // Every task holds a sender; the receiver ends when the last connection is gone.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    for listener in listeners {
        tokio::spawn(accept(
            listener,
            identity.clone(),
            draining.clone(),
            alive.clone(),
        ));
    }
    drop(alive);

    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
    }
    log!(opts.pod, "SIGTERM: no new connections; draining open ones");
    draining_tx.send_replace(true);
    let began = Instant::now();
    let _ = all_closed.recv().await;
    match opts.stop_delay {
        None => log!(opts.pod, "drained in {:.1?}; exiting", began.elapsed()),
        Some(delay) => {
            log!(
                opts.pod,
                "drained in {:.1?}; running on to {delay:?} after SIGTERM (stop delay)",
                began.elapsed()
            );
            tokio::time::sleep_until(began + delay).await;
            log!(opts.pod, "stop delay over; exiting");
        }
    }
    Ok(())
}

async fn accept(
    listener: TcpListener,
    identity: std::sync::Arc<Identity>,
    draining: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    let mut stop = draining.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream, identity.clone(), draining.clone(), alive.clone()));
                }
                Err(e) => log!(identity.pod, "accept: {e}"),
            },
            // Returning drops the listener: new connections are refused from then on.
            _ = stop.wait_for(|d| *d) => return,
        }
    }
}

/// Serves one connection until the client closes it, asks to close it, or the server drains.
async fn serve(
    stream: TcpStream,
    identity: std::sync::Arc<Identity>,
    mut draining: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
) {
    let _ = stream.set_nodelay(true);
    let opened = Instant::now();
    let (read_half, mut writer) = stream.into_split();
    let mut reader = http1::Reader::new(read_half);
    loop {
        // Wait for the next request; a draining server gives an idle client DRAIN_IDLE to send.
        let drain_idle = async {
            let _ = draining.wait_for(|d| *d).await;
            tokio::time::sleep(DRAIN_IDLE).await;
        };
        tokio::select! {
            readable = reader.wait_readable() => match readable {
                Ok(true) => {}
                _ => return,
            },
            _ = drain_idle => return,
        }
        let head = match reader.read_head().await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(e) => {
                let body = json!({ "error": e.to_string() }).to_string();
                let _ = writer
                    .write_all(&http1::response(400, "Bad Request", &body, true))
                    .await;
                return;
            }
        };
        if reader.read_body(&head).await.is_err() {
            return;
        }
        if let Some(delay) = requested_delay(&head.start[1]) {
            tokio::time::sleep(delay).await;
        }
        let too_old = identity
            .max_connection_age
            .is_some_and(|age| opened.elapsed() >= age);
        let close = !head.keeps_alive(&head.start[2]) || *draining.borrow() || too_old;
        let ready = identity.ready();
        let body = json!({
            "pod": identity.pod,
            "slot": identity.slot,
            "version": identity.version,
            "ready": ready,
        })
        .to_string();
        let (status, reason) = if ready {
            (200, "OK")
        } else {
            (503, "Service Unavailable")
        };
        let response = http1::response(status, reason, &body, close);
        if writer.write_all(&response).await.is_err() || close {
            return;
        }
    }
}

/// `?delay=300ms` in the target makes the request take that long (to have requests in flight).
fn requested_delay(target: &str) -> Option<Duration> {
    let query = target.split_once('?')?.1;
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("delay="))?;
    bgslot::duration::parse_duration(value)
        .ok()
        .map(|d| d.min(MAX_DELAY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_comes_from_the_query() {
        assert_eq!(
            requested_delay("/?delay=300ms"),
            Some(Duration::from_millis(300))
        );
        assert_eq!(
            requested_delay("/x?a=1&delay=2s"),
            Some(Duration::from_secs(2))
        );
        assert_eq!(requested_delay("/"), None);
        assert_eq!(requested_delay("/?delay=soon"), None);
        assert_eq!(requested_delay("/?delay=-1s"), None);
        assert_eq!(requested_delay("/?delay=5m"), Some(MAX_DELAY));
        assert_eq!(requested_delay("/?delay=1h"), Some(MAX_DELAY));
    }
}
