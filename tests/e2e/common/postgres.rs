//! A private PostgreSQL server for one test (helm's SQL storage driver keeps releases there):
//! started on a free loopback port in a temporary directory, stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct Postgres {
    server: Child,
    dir: tempfile::TempDir,
    pub url: String,
}

/// Debian's PostgreSQL binaries (`testenv/prepare.sh` installs them).
fn bin(name: &str) -> PathBuf {
    let root = PathBuf::from("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}: run testenv/prepare.sh (it installs postgresql)",
                root.display()
            )
        })
        .map(|e| e.unwrap().path())
        .collect();
    versions.sort();
    let path = versions
        .last()
        .expect("a PostgreSQL version")
        .join("bin")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: run testenv/prepare.sh",
        path.display()
    );
    path
}

/// Runs `program` as the user that owns the server: `postgres` when this is root (the server
/// refuses to run as root), else the current user.
fn as_owner(program: PathBuf) -> Command {
    if unsafe { libc::geteuid() } == 0 {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        if unsafe { libc::geteuid() } == 0 {
            let chown = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(chown.success(), "chown of the PostgreSQL directory failed");
        }
        let init = as_owner(bin("initdb"))
            .args(["-A", "trust", "-U", "helm", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = as_owner(bin("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "PostgreSQL did not listen within 30s"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Postgres {
            server,
            dir,
            url: format!("postgresql://helm@127.0.0.1:{port}/postgres?sslmode=disable"),
        }
    }
}

impl Drop for Postgres {
    /// SIGINT to the server (its fast shutdown): the process started may be `runuser`, which does
    /// not pass signals on, so the server's own pid comes from its pid file.
    fn drop(&mut self) {
        let pid_file = self.dir.path().join("data/postmaster.pid");
        let pid = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<i32>().ok())
            .unwrap_or(self.server.id() as i32);
        unsafe { libc::kill(pid, libc::SIGINT) };
        let _ = self.server.wait();
    }
}
