//! Validation of the names and image references a user types, before anything is run.
//!
//! Helm and the API server would reject most of these too, but later, with messages that do not
//! say which flag was wrong; checking first keeps "bad input changes nothing" trivially true.

use anyhow::{bail, Result};

/// Helm's rule for release names: a DNS-1123 subdomain of at most 53 characters.
pub fn validate_release(name: &str) -> Result<()> {
    if name.is_empty() {
        bail!("release name is empty");
    }
    if name.len() > 53 {
        bail!(
            "release name '{name}' is {} characters long; helm allows at most 53",
            name.len()
        );
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !name.split('.').all(label_ok) {
        bail!(
            "release name '{name}' is invalid: use lowercase letters, digits and '-', starting and ending with a letter or digit"
        );
    }
    Ok(())
}

/// An OCI image tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn validate_tag(tag: &str) -> Result<()> {
    let valid = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !valid {
        bail!(
            "image tag '{tag}' is invalid: a tag is 1 to 128 of letters, digits, '_', '.' and '-', not starting with '.' or '-'"
        );
    }
    Ok(())
}

/// Splits `REPOSITORY:TAG` into its parts, validating both.
pub fn split_image(image: &str) -> Result<(String, String)> {
    if image.contains('@') {
        bail!("image '{image}' names a digest; bgslot deploys by tag: use --image REPOSITORY:TAG");
    }
    let slash = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    let Some(colon) = image[slash..].rfind(':').map(|i| i + slash) else {
        bail!("image '{image}' has no tag: use --image REPOSITORY:TAG (or --tag TAG to keep the repository)");
    };
    let (repo, tag) = (&image[..colon], &image[colon + 1..]);
    validate_repository(repo)?;
    validate_tag(tag)?;
    Ok((repo.to_string(), tag.to_string()))
}

fn validate_repository(repo: &str) -> Result<()> {
    let path_ok = |part: &str| {
        !part.is_empty()
            && part.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
    };
    // The first component may be a registry host with a numeric port (`localhost:5000`).
    let host_ok = |part: &str| match part.split_once(':') {
        Some((host, port)) => {
            path_ok(host) && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
        }
        None => path_ok(part),
    };
    let valid = !repo.is_empty()
        && repo.len() <= 255
        && repo
            .split('/')
            .enumerate()
            .all(|(i, part)| if i == 0 { host_ok(part) } else { path_ok(part) });
    if !valid {
        bail!("image repository '{repo}' is invalid: use lowercase path components like ghcr.io/acme/web");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_names() {
        for ok in ["web", "web-1", "a.b", "x"] {
            validate_release(ok).unwrap();
        }
        for bad in ["", "Web", "-web", "web-", "web_1", "a..b", &"a".repeat(54)] {
            assert!(validate_release(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn tags() {
        for ok in ["v1", "1.2.3", "sha-abc_DEF", &"a".repeat(128)] {
            validate_tag(ok).unwrap();
        }
        for bad in [
            "",
            ".v1",
            "-v1",
            "v1/2",
            "v 1",
            "v1:2",
            "v1;rm",
            &"a".repeat(129),
        ] {
            assert!(validate_tag(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn images() {
        assert_eq!(
            split_image("nginx:1.27").unwrap(),
            ("nginx".into(), "1.27".into())
        );
        assert_eq!(
            split_image("localhost:5000/acme/web:v2").unwrap(),
            ("localhost:5000/acme/web".into(), "v2".into())
        );
        assert!(split_image("localhost:5000/acme/web").is_err());
        assert!(split_image("nginx").is_err());
        assert!(split_image("nginx@sha256:abc").is_err());
        assert!(split_image("Nginx/App:v1").is_err());
        assert!(split_image(":v1").is_err());
        assert!(split_image("nginx:v3:v4").is_err());
        assert!(split_image("localhost:http/web:v1").is_err());
    }
}
