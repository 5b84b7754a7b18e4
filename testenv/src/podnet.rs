//! The pod network, on loopback: pods keep their 10.244.x.y IPs in the API (Endpoints reject
//! loopback addresses), and this table says where each (pod IP, container port) really listens:
//! 127.244.x.y on a port the kernel chose, so environments running side by side never collide.
//! The kubelet fills it as apps start and stop, the service proxy reads it, and it is mirrored to
//! `DIR/pods.json` for people and tools.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::Serialize;

/// Where one container port of one pod really listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Backend {
    pub local: SocketAddr,
    /// NAMESPACE/NAME of the pod.
    pub pod: String,
}

pub struct PodNet {
    table: RwLock<BTreeMap<(Ipv4Addr, u16), Backend>>,
    file: PathBuf,
}

/// The loopback address standing in for `pod_ip`: 10.244.x.y -> 127.244.x.y.
pub fn local_ip(pod_ip: Ipv4Addr) -> Ipv4Addr {
    let [_, b, c, d] = pod_ip.octets();
    Ipv4Addr::new(127, b, c, d)
}

impl PodNet {
    pub fn new(dir: &Path) -> Self {
        let net = PodNet {
            table: RwLock::new(BTreeMap::new()),
            file: dir.join("pods.json"),
        };
        net.mirror();
        net
    }

    /// Records where `pod` (at `pod_ip`) serves each of its container ports.
    pub fn set(&self, pod_ip: Ipv4Addr, pod: &str, ports: &[(u16, SocketAddr)]) {
        {
            let mut table = self.table.write().unwrap();
            table.retain(|(ip, _), _| *ip != pod_ip);
            for (port, local) in ports {
                table.insert(
                    (pod_ip, *port),
                    Backend {
                        local: *local,
                        pod: pod.to_string(),
                    },
                );
            }
        }
        self.mirror();
    }

    /// Forgets `pod_ip`: its app is gone.
    pub fn remove(&self, pod_ip: Ipv4Addr) {
        self.table
            .write()
            .unwrap()
            .retain(|(ip, _), _| *ip != pod_ip);
        self.mirror();
    }

    pub fn resolve(&self, pod_ip: Ipv4Addr, port: u16) -> Option<SocketAddr> {
        self.table
            .read()
            .unwrap()
            .get(&(pod_ip, port))
            .map(|b| b.local)
    }

    fn mirror(&self) {
        let entries: BTreeMap<String, Backend> = self
            .table
            .read()
            .unwrap()
            .iter()
            .map(|((ip, port), b)| (format!("{ip}:{port}"), b.clone()))
            .collect();
        if let Err(e) = write_atomically(&self.file, &serde_json::to_vec_pretty(&entries).unwrap())
        {
            eprintln!("podnet: writing {}: {e}", self.file.display());
        }
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers never see half.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // A temporary file of each write's own: two threads rewriting the same file at once (the
    // proxy's routes and its rejection counts) must not write into one temporary file and rename
    // a mix of both.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp.{}.{n}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ips_map_into_loopback() {
        assert_eq!(
            local_ip(Ipv4Addr::new(10, 244, 3, 7)),
            Ipv4Addr::new(127, 244, 3, 7)
        );
        assert!(local_ip(Ipv4Addr::new(10, 244, 0, 1)).is_loopback());
    }

    #[test]
    fn a_pod_is_replaced_and_removed_whole() {
        let dir = std::env::temp_dir().join(format!("podnet-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let net = PodNet::new(&dir);
        let ip = Ipv4Addr::new(10, 244, 0, 5);
        let a: SocketAddr = "127.244.0.5:40001".parse().unwrap();
        let b: SocketAddr = "127.244.0.5:40002".parse().unwrap();
        net.set(ip, "ns/web-1", &[(80, a), (9090, b)]);
        assert_eq!(net.resolve(ip, 80), Some(a));
        assert_eq!(net.resolve(ip, 9090), Some(b));
        net.set(ip, "ns/web-1", &[(80, b)]);
        assert_eq!(net.resolve(ip, 9090), None);
        let mirrored = std::fs::read_to_string(dir.join("pods.json")).unwrap();
        assert!(mirrored.contains("10.244.0.5:80"), "{mirrored}");
        net.remove(ip);
        assert_eq!(net.resolve(ip, 80), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_writers_never_leave_a_mix() {
        let dir = std::env::temp_dir().join(format!("podnet-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("services.json");
        write_atomically(&path, b"[]").unwrap();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let doc =
                            serde_json::to_vec(&vec![w * 1000 + i; 50 + (i % 7) * 40]).unwrap();
                        write_atomically(&path, &doc).unwrap();
                    }
                })
            })
            .collect();
        for _ in 0..400 {
            let text = std::fs::read(&path).unwrap();
            serde_json::from_slice::<Vec<u64>>(&text).expect("a whole document");
        }
        for w in writers {
            w.join().unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
