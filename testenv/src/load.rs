//! A load generator for the data plane: a constant request rate through a Service, split between
//! clients that open a connection per request and clients that keep connections alive, with every
//! request recorded (when, how long, what went wrong, which version answered). Nothing retries: a
//! request that fails counts, which is what a zero-downtime claim has to survive.
//!
//! Keep-alive clients behave like a well-behaved HTTP client pool: a connection the server
//! answered with `Connection: close`, or has already closed while idle, is replaced before the
//! next request instead of failing it.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::http1;
use crate::proxy::{now_unix, Rejection, EVENTS_FILE};

#[derive(Clone, Debug)]
pub struct Options {
    pub target: SocketAddr,
    /// Requests per second, all clients together.
    pub rate: f64,
    /// The part of the rate sent by keep-alive clients (0 to 1).
    pub keepalive_share: f64,
    /// How many keep-alive connections share that part.
    pub keepalive_conns: usize,
    /// A request without a full response by then fails as a timeout.
    pub timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// Opens a connection for each request (`Connection: close`).
    PerRequest,
    /// Sends many requests on one connection.
    KeepAlive,
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// The connection was refused (by the kernel, or by the proxy because the pod refused it).
    Refused,
    /// The connection was reset or closed before a full response.
    Reset,
    /// No full response within the timeout.
    Timeout,
    /// The proxy had no ready endpoint for the Service.
    NoEndpoint,
    /// A response, but not a 2xx one.
    Non2xx,
    /// Any other error (e.g. no local port left).
    Other,
}

impl Outcome {
    pub const FAILURES: [Outcome; 6] = [
        Outcome::Refused,
        Outcome::Reset,
        Outcome::Timeout,
        Outcome::NoEndpoint,
        Outcome::Non2xx,
        Outcome::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Reset => "reset",
            Outcome::Timeout => "timeout",
            Outcome::NoEndpoint => "no_endpoint",
            Outcome::Non2xx => "non_2xx",
            Outcome::Other => "other",
        }
    }
}

/// One request as the load generator saw it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// When it was due to be sent (unix seconds).
    pub t: f64,
    /// From due time to full response or failure.
    pub latency_ms: f64,
    pub client: ClientKind,
    pub outcome: Outcome,
    /// Who answered (from the pod app's response).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The client's end of the connection, to match the proxy's rejections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<SocketAddr>,
    /// The first request on its connection.
    pub fresh: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Record {
    /// When the response (or the failure) came.
    pub fn done(&self) -> f64 {
        self.t + self.latency_ms / 1000.0
    }
}

/// Load being sent; [`Load::stop`] ends it and returns what happened.
pub struct Load {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    records: Arc<Mutex<Vec<Record>>>,
}

/// Converts tokio instants to unix time, from one reading of both clocks.
#[derive(Clone, Copy)]
struct Clock {
    base: Instant,
    base_unix: f64,
}

impl Clock {
    fn now() -> Clock {
        Clock {
            base: Instant::now(),
            base_unix: now_unix(),
        }
    }

    fn unix(&self, at: Instant) -> f64 {
        self.base_unix + at.saturating_duration_since(self.base).as_secs_f64()
    }
}

impl Load {
    pub fn start(opts: Options) -> Load {
        let (stop, stopped) = watch::channel(false);
        let records = Arc::new(Mutex::new(Vec::new()));
        let clock = Clock::now();
        let mut tasks = JoinSet::new();
        let share = opts.keepalive_share.clamp(0.0, 1.0);
        let per_request_rate = opts.rate * (1.0 - share);
        if per_request_rate > 0.0 {
            tasks.spawn(per_request_client(
                opts.clone(),
                per_request_rate,
                clock,
                stopped.clone(),
                records.clone(),
            ));
        }
        let conns = opts.keepalive_conns.max(1);
        let conn_rate = opts.rate * share / conns as f64;
        if conn_rate > 0.0 {
            for i in 0..conns {
                let period = Duration::from_secs_f64(1.0 / conn_rate);
                let offset = period.mul_f64(i as f64 / conns as f64);
                tasks.spawn(keepalive_client(
                    opts.clone(),
                    period,
                    offset,
                    clock,
                    stopped.clone(),
                    records.clone(),
                ));
            }
        }
        Load {
            stop,
            tasks,
            records,
        }
    }

    /// Stops sending, lets requests in flight finish (each has its timeout), and returns every
    /// request, in the order they were due.
    pub async fn stop(mut self) -> Vec<Record> {
        self.stop.send_replace(true);
        while self.tasks.join_next().await.is_some() {}
        let mut records = std::mem::take(&mut *self.records.lock().unwrap());
        records.sort_by(|a, b| a.t.total_cmp(&b.t));
        records
    }
}

async fn per_request_client(
    opts: Options,
    rate: f64,
    clock: Clock,
    mut stopped: watch::Receiver<bool>,
    records: Arc<Mutex<Vec<Record>>>,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    // Open loop: a slow request never delays the next one.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut in_flight = JoinSet::new();
    loop {
        let due = tokio::select! {
            due = ticks.tick() => due,
            _ = stopped.wait_for(|s| *s) => break,
        };
        let opts = opts.clone();
        let records = records.clone();
        in_flight.spawn(async move {
            let record = one_shot(&opts, due, &clock).await;
            records.lock().unwrap().push(record);
        });
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
}

async fn one_shot(opts: &Options, due: Instant, clock: &Clock) -> Record {
    let mut local = None;
    let attempt = async {
        let stream = connect(opts.target, &mut local).await?;
        let mut reader = http1::Reader::new(stream);
        let request = http1::get("/", "load", "bgslot-load", true);
        http1::exchange(&mut reader, &request).await
    };
    let result = tokio::time::timeout(opts.timeout, attempt).await;
    record(
        ClientKind::PerRequest,
        due,
        clock,
        result,
        local,
        true,
        opts.timeout,
    )
}

async fn keepalive_client(
    opts: Options,
    period: Duration,
    offset: Duration,
    clock: Clock,
    mut stopped: watch::Receiver<bool>,
    records: Arc<Mutex<Vec<Record>>>,
) {
    let mut ticks = tokio::time::interval_at(Instant::now() + offset, period);
    // One connection sends one request at a time: a slow answer delays the next request, and
    // its latency counts from when it was due.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut conn: Option<http1::Reader<TcpStream>> = None;
    loop {
        let due = tokio::select! {
            due = ticks.tick() => due,
            _ = stopped.wait_for(|s| *s) => return,
        };
        if conn.as_ref().is_some_and(|c| !still_open(c)) {
            conn = None;
        }
        let fresh = conn.is_none();
        let mut local = None;
        let attempt = async {
            if conn.is_none() {
                conn = Some(http1::Reader::new(connect(opts.target, &mut local).await?));
            }
            let reader = conn.as_mut().expect("connected above");
            local = reader.get_ref().local_addr().ok();
            let request = http1::get("/", "load", "bgslot-load", false);
            http1::exchange(reader, &request).await
        };
        let result = tokio::time::timeout(opts.timeout, attempt).await;
        let keep = matches!(&result, Ok(Ok(r)) if r.keep_alive);
        if !keep {
            conn = None;
        }
        let r = record(
            ClientKind::KeepAlive,
            due,
            &clock,
            result,
            local,
            fresh,
            opts.timeout,
        );
        records.lock().unwrap().push(r);
    }
}

/// Connects to `target`, noting the local address first: a connection the proxy rejects at once
/// can fail inside connect, and its address is what names the rejection's cause.
async fn connect(target: SocketAddr, local: &mut Option<SocketAddr>) -> io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    let any_port = if target.ip().is_loopback() {
        SocketAddr::from(([127, 0, 0, 1], 0))
    } else {
        SocketAddr::from(([0, 0, 0, 0], 0))
    };
    socket.bind(any_port)?;
    *local = socket.local_addr().ok();
    let stream = socket.connect(target).await?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Whether an idle pooled connection can take another request: the server has not closed it
/// and sent nothing unasked.
fn still_open(conn: &http1::Reader<TcpStream>) -> bool {
    if conn.has_buffered() {
        return false;
    }
    let mut byte = [0u8; 1];
    matches!(conn.get_ref().try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// What the pod app says in its response body.
#[derive(Deserialize)]
struct Answer {
    version: Option<String>,
    slot: Option<String>,
    pod: Option<String>,
}

fn record(
    client: ClientKind,
    due: Instant,
    clock: &Clock,
    result: Result<io::Result<http1::Response>, tokio::time::error::Elapsed>,
    local: Option<SocketAddr>,
    fresh: bool,
    timeout: Duration,
) -> Record {
    let latency_ms = due.elapsed().as_secs_f64() * 1000.0;
    let mut r = Record {
        t: clock.unix(due),
        latency_ms,
        client,
        outcome: Outcome::Ok,
        version: None,
        slot: None,
        pod: None,
        local,
        fresh,
        error: None,
    };
    match result {
        Err(_) => {
            r.outcome = Outcome::Timeout;
            r.error = Some(format!("no response within {timeout:?}"));
        }
        Ok(Err(e)) => {
            r.outcome = match e.kind() {
                io::ErrorKind::ConnectionRefused => Outcome::Refused,
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => Outcome::Reset,
                io::ErrorKind::TimedOut => Outcome::Timeout,
                _ => Outcome::Other,
            };
            r.error = Some(e.to_string());
        }
        Ok(Ok(response)) => {
            if !(200..300).contains(&response.status) {
                r.outcome = Outcome::Non2xx;
                r.error = Some(format!("status {}", response.status));
            }
            if let Ok(answer) = serde_json::from_slice::<Answer>(&response.body) {
                r.version = answer.version;
                r.slot = answer.slot;
                r.pod = answer.pod;
            }
        }
    }
    r
}

/// A connection the proxy turned away, from `proxy-events.jsonl`.
#[derive(Deserialize)]
struct Reject {
    t: f64,
    event: String,
    #[serde(default)]
    service: String,
    client: Option<SocketAddr>,
    cause: Option<Rejection>,
}

/// Names the cause of resets that were the proxy turning a connection away: a reset on a fresh
/// connection whose client address the proxy rejected around that time becomes `no_endpoint`
/// (no ready endpoint) or `refused` (the pod refused it).
pub fn attribute_rejections(records: &mut [Record], env_dir: &Path, service: &str) {
    let path = env_dir.join(EVENTS_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let mut rejects: BTreeMap<SocketAddr, Vec<(f64, Rejection)>> = BTreeMap::new();
    for line in text.lines() {
        let Ok(e) = serde_json::from_str::<Reject>(line) else {
            continue;
        };
        if e.event == "reject" && e.service == service {
            if let (Some(client), Some(cause)) = (e.client, e.cause) {
                rejects.entry(client).or_default().push((e.t, cause));
            }
        }
    }
    for r in records.iter_mut() {
        if r.outcome != Outcome::Reset || !r.fresh {
            continue;
        }
        let Some(local) = r.local else { continue };
        let cause = rejects.get(&local).and_then(|list| {
            list.iter()
                .find(|(t, _)| *t >= r.t - 1.0 && *t <= r.done() + 1.0)
                .map(|(_, c)| *c)
        });
        if let Some(cause) = cause {
            r.outcome = match cause {
                Rejection::NoEndpoint => Outcome::NoEndpoint,
                Rejection::Refused => Outcome::Refused,
                Rejection::Unreachable => Outcome::Timeout,
            };
        }
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    pub fn of<'a>(records: impl Iterator<Item = &'a Record>) -> Latency {
        let mut ms: Vec<f64> = records
            .filter(|r| r.outcome == Outcome::Ok)
            .map(|r| r.latency_ms)
            .collect();
        if ms.is_empty() {
            return Latency::default();
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        Latency {
            p50: at(0.5),
            p99: at(0.99),
            max: ms[ms.len() - 1],
        }
    }
}

/// What `testenv load` prints when it stops.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    pub failed_by_kind: BTreeMap<String, u64>,
    /// Requests answered (2xx) by each version.
    pub by_version: BTreeMap<String, u64>,
    /// Requests and failures per kind of client.
    pub by_client: BTreeMap<String, ClientSummary>,
    pub latency_ms: Latency,
    /// The first failures, for a test's message.
    pub failures: Vec<Record>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClientSummary {
    pub requests: u64,
    pub failed: u64,
    /// Connections opened.
    pub connections: u64,
}

impl Summary {
    pub fn of(records: &[Record]) -> Summary {
        let mut failed_by_kind: BTreeMap<String, u64> = Outcome::FAILURES
            .iter()
            .map(|o| (o.name().to_string(), 0))
            .collect();
        let mut by_version = BTreeMap::new();
        let mut by_client: BTreeMap<String, ClientSummary> = BTreeMap::new();
        for r in records {
            let client = by_client
                .entry(
                    match r.client {
                        ClientKind::PerRequest => "per_request",
                        ClientKind::KeepAlive => "keep_alive",
                    }
                    .to_string(),
                )
                .or_default();
            client.requests += 1;
            client.connections += u64::from(r.fresh);
            if r.outcome == Outcome::Ok {
                *by_version
                    .entry(r.version.clone().unwrap_or_default())
                    .or_insert(0) += 1;
            } else {
                client.failed += 1;
                *failed_by_kind
                    .entry(r.outcome.name().to_string())
                    .or_insert(0) += 1;
            }
        }
        let failures: Vec<Record> = records
            .iter()
            .filter(|r| r.outcome != Outcome::Ok)
            .take(20)
            .cloned()
            .collect();
        let failed = failed_by_kind.values().sum();
        Summary {
            requests: records.len() as u64,
            ok: records.len() as u64 - failed,
            failed,
            failed_by_kind,
            by_version,
            by_client,
            latency_ms: Latency::of(records.iter()),
            failures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: f64, outcome: Outcome, version: Option<&str>, local: Option<&str>) -> Record {
        Record {
            t,
            latency_ms: 2.0,
            client: ClientKind::PerRequest,
            outcome,
            version: version.map(str::to_string),
            slot: None,
            pod: None,
            local: local.map(|l| l.parse().unwrap()),
            fresh: true,
            error: None,
        }
    }

    #[test]
    fn summary_counts_failures_by_kind_and_successes_by_version() {
        let records = vec![
            rec(1.0, Outcome::Ok, Some("v1"), None),
            rec(1.1, Outcome::Ok, Some("v2"), None),
            rec(1.2, Outcome::Reset, None, None),
            rec(1.3, Outcome::Ok, Some("v2"), None),
        ];
        let s = Summary::of(&records);
        assert_eq!((s.requests, s.ok, s.failed), (4, 3, 1));
        assert_eq!(s.failed_by_kind["reset"], 1);
        assert_eq!(s.failed_by_kind["no_endpoint"], 0);
        assert_eq!(s.by_version["v2"], 2);
        assert_eq!(s.by_client["per_request"].connections, 4);
        assert_eq!(s.failures.len(), 1);
        assert_eq!(s.latency_ms.p50, 2.0);
    }

    #[test]
    fn resets_the_proxy_caused_are_named() {
        let dir = std::env::temp_dir().join(format!("load-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(EVENTS_FILE),
            concat!(
                r#"{"t":10.0,"event":"reject","service":"ns/web","port":80,"client":"127.0.0.1:5001","cause":"no_endpoint"}"#,
                "\n",
                r#"{"t":20.0,"event":"reject","service":"ns/web","port":80,"client":"127.0.0.1:5002","cause":"refused"}"#,
                "\n",
                r#"{"t":30.0,"event":"reject","service":"ns/other","port":80,"client":"127.0.0.1:5003","cause":"refused"}"#,
                "\n",
            ),
        )
        .unwrap();
        let mut records = vec![
            rec(10.0, Outcome::Reset, None, Some("127.0.0.1:5001")),
            rec(20.0, Outcome::Reset, None, Some("127.0.0.1:5002")),
            rec(30.0, Outcome::Reset, None, Some("127.0.0.1:5003")),
            rec(50.0, Outcome::Reset, None, Some("127.0.0.1:5001")),
        ];
        attribute_rejections(&mut records, &dir, "ns/web");
        let outcomes: Vec<Outcome> = records.iter().map(|r| r.outcome).collect();
        assert_eq!(
            outcomes,
            [
                Outcome::NoEndpoint,
                Outcome::Refused,
                Outcome::Reset,
                Outcome::Reset
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
