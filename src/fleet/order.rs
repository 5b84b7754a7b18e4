//! The one total order in which a run across several clusters takes its Leases: by the canonical
//! key of each target (API server URL, namespace, release), never by the user's labels or the
//! listed order. Two runs that list the same clusters in opposite orders then take their Leases in
//! the same order, so the second waits for the first instead of each holding what the other
//! needs.

use std::fmt;

/// What makes two targets the same release: where the API server is, the namespace, the release.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// The API server URL, normalised (lower case scheme and host, no default port, no
    /// trailing `/`).
    pub server: String,
    pub namespace: String,
    pub release: String,
}

impl Key {
    pub fn new(server: &str, namespace: &str, release: &str) -> Key {
        Key {
            server: normalise(server),
            namespace: namespace.to_string(),
            release: release.to_string(),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.server, self.namespace, self.release)
    }
}

/// `HTTPS://Api.Example:443/` and `https://api.example` are one server.
fn normalise(server: &str) -> String {
    let server = server.trim().trim_end_matches('/');
    let (scheme, rest) = match server.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => ("https".to_string(), server),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let authority = authority.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => "",
    };
    let authority = match authority.strip_suffix(default_port) {
        Some(host) if !default_port.is_empty() => host.to_string(),
        _ => authority,
    };
    format!("{scheme}://{authority}{path}")
}

/// The indexes of `keys` in the order their Leases are taken.
pub fn lock_order(keys: &[Key]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_compared_as_one_url() {
        assert_eq!(
            Key::new("HTTPS://Api.Example:443/", "shop", "web"),
            Key::new("https://api.example", "shop", "web")
        );
        assert_eq!(normalise("http://10.0.0.1:80/"), "http://10.0.0.1");
        assert_eq!(normalise("https://10.0.0.1:6443"), "https://10.0.0.1:6443");
        assert_eq!(
            normalise("https://lb.example/k8s/prod/"),
            "https://lb.example/k8s/prod"
        );
        assert_ne!(
            Key::new("https://a.example", "shop", "web"),
            Key::new("https://a.example", "shop-us", "web")
        );
    }

    #[test]
    fn the_lock_order_is_the_keys_whatever_order_the_targets_are_listed_in() {
        let eu = Key::new("https://127.0.0.1:40001", "shop", "web");
        let us = Key::new("https://127.0.0.1:39999", "shop", "web");
        let ap = Key::new("https://127.0.0.1:40001", "other", "web");
        // Listed eu, us, ap and ap, us, eu: the same Leases in the same order.
        let listed = [eu.clone(), us.clone(), ap.clone()];
        let reversed = [ap.clone(), us.clone(), eu.clone()];
        let taken = |keys: &[Key]| -> Vec<Key> {
            lock_order(keys)
                .into_iter()
                .map(|i| keys[i].clone())
                .collect()
        };
        assert_eq!(taken(&listed), taken(&reversed));
        assert_eq!(taken(&listed), [us, ap, eu]);
        // Labels play no part: only the key is compared.
        assert_eq!(lock_order(&[]), Vec::<usize>::new());
    }
}
