//! Ctrl-C and SIGTERM handling: remembered, forwarded to a running helm, and noticed by waits.
//!
//! bgslot must not vanish in the middle of a helm write: it forwards the signal to helm, waits for
//! helm to finish, releases the lock and reports the state the release was left in.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use tokio::sync::watch;

/// How many SIGINT/SIGTERM arrived: a run across several clusters stops forward progress at the
/// first and stops at once at the second.
static COUNT: AtomicUsize = AtomicUsize::new(0);

fn channel() -> &'static watch::Sender<Option<i32>> {
    static CHANNEL: OnceLock<watch::Sender<Option<i32>>> = OnceLock::new();
    CHANNEL.get_or_init(|| watch::channel(None).0)
}

/// Starts listening for SIGINT and SIGTERM. Call once from inside the runtime.
pub fn install() {
    use tokio::signal::unix::{signal, SignalKind};
    for kind in [SignalKind::interrupt(), SignalKind::terminate()] {
        let Ok(mut stream) = signal(kind) else {
            continue;
        };
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                COUNT.fetch_add(1, Ordering::SeqCst);
                channel().send_replace(Some(kind.as_raw_value()));
            }
        });
    }
}

/// The signal received so far, if any.
pub fn received() -> Option<i32> {
    *channel().borrow()
}

/// How many signals arrived so far.
pub fn count() -> usize {
    COUNT.load(Ordering::SeqCst)
}

pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

pub struct Subscription(watch::Receiver<Option<i32>>);

pub fn subscribe() -> Subscription {
    let mut rx = channel().subscribe();
    rx.mark_unchanged();
    Subscription(rx)
}

impl Subscription {
    /// Resolves at the next signal (or at once if one arrived since subscribing).
    pub async fn changed_to_signal(&mut self) -> i32 {
        loop {
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            if let Some(sig) = *self.0.borrow_and_update() {
                return sig;
            }
        }
    }
}

/// Sends `sig` to a child process.
pub fn forward(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; a stale pid only yields ESRCH.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}
