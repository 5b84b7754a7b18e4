//! The pod app is what the zero-downtime figures stand on: if it did not drain or close aged
//! connections the way it says, a benchmark could count no failure for the wrong reason. These
//! tests run it as the kubelet does and talk HTTP to it over TCP, no control plane needed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `testenv pod-app`, killed when dropped (also when a test panics).
struct PodApp {
    child: Child,
    addr: SocketAddr,
}

impl PodApp {
    fn start(extra: &[&str]) -> PodApp {
        let env_dir =
            std::env::temp_dir().join(format!("bgslot-pod-app-test-{}", std::process::id()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_testenv"))
            .arg("pod-app")
            .arg("--env-dir")
            .arg(&env_dir)
            .args(["--pod", "test/app-1", "--slot", "blue", "--version", "1.0"])
            .args(["--ip", "127.0.0.1", "--port", "80"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting testenv pod-app");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("listening 80 ") {
                addr = Some(rest.parse().unwrap());
            }
            if line == "started" {
                break;
            }
        }
        PodApp {
            child,
            addr: addr.expect("pod-app printed no `listening 80 ADDR` line before `started`"),
        }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    }

    fn sigterm(&self) {
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) },
            0
        );
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pod-app still runs after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PodApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One answer: its status, whether it said `Connection: close`, and its body.
#[derive(Debug)]
struct Answer {
    status: u16,
    close: bool,
    body: String,
}

/// Sends one keep-alive GET on `stream` and reads the answer.
fn get(stream: &mut TcpStream) -> Answer {
    send(stream, "/");
    read_answer(stream)
}

fn send(stream: &mut TcpStream, target: &str) {
    stream
        .write_all(format!("GET {target} HTTP/1.1\r\nHost: app\r\nAccept: */*\r\n\r\n").as_bytes())
        .unwrap();
}

fn read_answer(stream: &mut TcpStream) -> Answer {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "connection closed mid-answer"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let length: usize = header("content-length").unwrap().parse().unwrap();
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    Answer {
        status,
        close: header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")),
        body: String::from_utf8(body).unwrap(),
    }
}

/// Whether the server closed `stream` (a read sees end of file).
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    matches!(stream.read_to_end(&mut rest), Ok(0))
}

#[test]
fn answers_with_its_slot_and_version() {
    let app = PodApp::start(&[]);
    let answer = get(&mut app.connect());
    assert_eq!(answer.status, 200);
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["slot"], "blue");
    assert_eq!(body["version"], "1.0");
    assert_eq!(body["pod"], "test/app-1");
}

#[test]
fn a_connection_older_than_its_max_age_is_closed_after_the_next_answer() {
    let app = PodApp::start(&["--max-connection-age=400ms"]);
    let mut conn = app.connect();
    assert!(!get(&mut conn).close, "a young connection is kept alive");
    std::thread::sleep(Duration::from_millis(600));
    let aged = get(&mut conn);
    assert_eq!(
        aged.status, 200,
        "the aged connection's request is still answered"
    );
    assert!(
        aged.close,
        "the answer on an aged connection says Connection: close"
    );
    assert!(closed_by_server(&mut conn));
}

#[test]
fn without_a_max_age_an_old_connection_stays_open() {
    // The control for the test above: the same timing keeps the connection.
    let app = PodApp::start(&[]);
    let mut conn = app.connect();
    get(&mut conn);
    std::thread::sleep(Duration::from_millis(600));
    assert!(!get(&mut conn).close);
    assert_eq!(get(&mut conn).status, 200, "the connection still serves");
}

#[test]
fn sigterm_refuses_new_connections_finishes_requests_in_flight_with_close_then_exits() {
    let mut app = PodApp::start(&[]);
    let mut in_flight = app.connect();
    // An answer first proves the app accepted this connection: one still queued in the listen
    // backlog when SIGTERM closes the listener is reset by the kernel, as with any server.
    assert!(!get(&mut in_flight).close);
    send(&mut in_flight, "/?delay=1500ms");
    app.sigterm();
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(app.addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "new connections still accepted after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let last = read_answer(&mut in_flight);
    assert_eq!(last.status, 200, "the request in flight is answered");
    assert!(
        last.close,
        "while draining, the answer closes the connection"
    );
    assert!(closed_by_server(&mut in_flight));
    assert!(app.wait_exit(Duration::from_secs(5)).success());
}

#[test]
fn a_stop_delay_keeps_the_app_running_that_long_after_sigterm_while_it_drains() {
    let mut app = PodApp::start(&["--stop-delay=1500ms"]);
    let mut in_flight = app.connect();
    assert!(!get(&mut in_flight).close);
    send(&mut in_flight, "/?delay=300ms");
    let term = Instant::now();
    app.sigterm();
    let deadline = Instant::now() + Duration::from_secs(1);
    while TcpStream::connect(app.addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "new connections still accepted after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let last = read_answer(&mut in_flight);
    assert_eq!(last.status, 200, "the request in flight is answered");
    assert!(last.close);
    assert!(closed_by_server(&mut in_flight));
    // Drained by now, yet still running until its stop delay is over.
    std::thread::sleep(Duration::from_millis(1000).saturating_sub(term.elapsed()));
    assert!(
        app.child.try_wait().unwrap().is_none(),
        "exited {:?} after SIGTERM, before its stop delay of 1.5s",
        term.elapsed()
    );
    assert!(app.wait_exit(Duration::from_secs(5)).success());
    let lived = term.elapsed();
    assert!(
        lived >= Duration::from_millis(1500) && lived < Duration::from_millis(2500),
        "exited {lived:?} after SIGTERM; its stop delay is 1.5s"
    );
}
