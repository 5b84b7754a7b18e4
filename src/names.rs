//! The names and image references a user types, parsed into types at the command line.
//!
//! Helm and the API server would reject most bad input too, but later and without naming the
//! flag; parsing in clap's value parsers makes every malformed value a usage error (exit 2) that
//! names the flag, before anything connects or changes.

use std::fmt;
use std::str::FromStr;

/// A helm release name: a DNS-1123 subdomain of at most 53 characters (helm's rule).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct ReleaseName(String);

impl FromStr for ReleaseName {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        if name.is_empty() {
            return Err("the release name is empty".into());
        }
        if name.len() > 53 {
            return Err(format!(
                "release name '{name}' is {} characters long; helm allows at most 53",
                name.len()
            ));
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !name.split('.').all(label_ok) {
            return Err(format!(
                "release name '{name}' is invalid: use lowercase letters, digits and '-', starting and ending with a letter or digit"
            ));
        }
        Ok(ReleaseName(name.to_string()))
    }
}

/// The name of a target of a run across several clusters (`eu`, `us-east`): a label in output
/// and JSON and `BGSLOT_CLUSTER` for a verify command. 1 to 40 letters, digits, `-`, `_` or `.`,
/// starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct TargetName(String);

impl FromStr for TargetName {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        let ok = (1..=40).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(TargetName(name.to_string()))
        } else {
            Err(format!(
                "target name '{name}' is invalid: 1 to 40 letters, digits, '-', '_' or '.', starting with a letter or digit"
            ))
        }
    }
}

impl TargetName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TargetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An OCI image tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Tag(String);

impl FromStr for Tag {
    type Err = String;

    fn from_str(tag: &str) -> Result<Self, String> {
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && !tag.starts_with(['.', '-'])
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !valid {
            return Err(format!(
                "image tag '{tag}' is invalid: a tag is 1 to 128 of letters, digits, '_', '.' and '-', not starting with '.' or '-'"
            ));
        }
        Ok(Tag(tag.to_string()))
    }
}

/// A content digest as registries name it: `sha256:` and 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Digest(String);

impl FromStr for Digest {
    type Err = String;

    fn from_str(digest: &str) -> Result<Self, String> {
        let hex = digest.strip_prefix("sha256:");
        let valid = hex.is_some_and(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if !valid {
            return Err(format!(
                "digest '{digest}' is invalid: expected sha256: followed by 64 lowercase hex digits"
            ));
        }
        Ok(Digest(digest.to_string()))
    }
}

/// An image reference: `REPOSITORY:TAG`, `REPOSITORY@sha256:...` or `REPOSITORY:TAG@sha256:...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub repository: String,
    pub tag: Option<Tag>,
    pub digest: Option<Digest>,
}

impl FromStr for ImageRef {
    type Err = String;

    fn from_str(image: &str) -> Result<Self, String> {
        let (name, digest) = match image.split_once('@') {
            Some((name, digest)) => (name, Some(digest.parse::<Digest>()?)),
            None => (image, None),
        };
        // A colon after the last '/' separates the tag; one before it belongs to a registry port.
        let slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (repository, tag) = match name[slash..].rfind(':').map(|i| i + slash) {
            Some(colon) => (&name[..colon], Some(name[colon + 1..].parse::<Tag>()?)),
            None => (name, None),
        };
        if tag.is_none() && digest.is_none() {
            return Err(format!(
                "image '{image}' has neither a tag nor a digest: use REPOSITORY:TAG or REPOSITORY@sha256:DIGEST (or --tag TAG to keep the repository)"
            ));
        }
        validate_repository(repository)?;
        Ok(ImageRef {
            repository: repository.to_string(),
            tag,
            digest,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn validate_repository(repo: &str) -> Result<(), String> {
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
        return Err(format!(
            "image repository '{repo}' is invalid: use lowercase path components like ghcr.io/acme/web"
        ));
    }
    Ok(())
}

/// One `--set KEY=VALUE` (or `--slot-set`) as helm takes it: the key is checked, the value is
/// helm's to interpret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetArg {
    pub key: String,
    pub value: String,
}

impl FromStr for SetArg {
    type Err = String;

    fn from_str(arg: &str) -> Result<Self, String> {
        match arg.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => Ok(SetArg {
                key: key.to_string(),
                value: value.to_string(),
            }),
            _ => Err(format!("'{arg}' is not KEY=VALUE")),
        }
    }
}

impl fmt::Display for SetArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

macro_rules! string_newtype {
    ($($name:ident),*) => {$(
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<std::ffi::OsStr> for $name {
            fn as_ref(&self) -> &std::ffi::OsStr {
                self.0.as_ref()
            }
        }
    )*};
}

string_newtype!(ReleaseName, Tag, Digest);

/// Quotes words for a POSIX shell, for printing commands a person can copy (never to run them).
pub fn shell_words<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| {
            let w = w.as_ref();
            if !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+%".contains(&b))
            {
                w.to_string()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// An image reference as a chart rendered it, split leniently: `repository[:tag][@digest]`,
/// nothing checked (what a cluster runs is not bgslot's to refuse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageParts {
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

pub fn image_parts(image: &str) -> ImageParts {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest.to_string())),
        None => (image, None),
    };
    let slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    match name[slash..].rfind(':') {
        Some(i) => ImageParts {
            repository: name[..slash + i].to_string(),
            tag: Some(name[slash + i + 1..].to_string()),
            digest,
        },
        None => ImageParts {
            repository: name.to_string(),
            tag: None,
            digest,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_are_labels() {
        for ok in ["eu", "us-east-1", "Primary", "a.b_c"] {
            assert_eq!(ok.parse::<TargetName>().unwrap().as_str(), ok);
        }
        for bad in ["", "-eu", "eu west", "eu=x", &"a".repeat(41)] {
            assert!(bad.parse::<TargetName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_rendered_image_splits_leniently() {
        assert_eq!(
            image_parts("localhost:5000/acme/web:v2@sha256:x"),
            ImageParts {
                repository: "localhost:5000/acme/web".into(),
                tag: Some("v2".into()),
                digest: Some("sha256:x".into())
            }
        );
        assert_eq!(image_parts("nginx").tag, None);
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn release_names() {
        for ok in ["web", "web-1", "a.b", "x"] {
            assert_eq!(ok.parse::<ReleaseName>().unwrap().to_string(), ok);
        }
        for bad in ["", "Web", "-web", "web-", "web_1", "a..b", &"a".repeat(54)] {
            assert!(
                bad.parse::<ReleaseName>().is_err(),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn tags() {
        for ok in ["v1", "1.2.3", "sha-abc_DEF", &"a".repeat(128)] {
            ok.parse::<Tag>().unwrap();
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
            assert!(bad.parse::<Tag>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn images_by_tag_and_by_digest() {
        let image = |s: &str| s.parse::<ImageRef>();
        let by_tag = image("localhost:5000/acme/web:v2").unwrap();
        assert_eq!(
            (by_tag.repository.as_str(), by_tag.tag.as_deref()),
            ("localhost:5000/acme/web", Some("v2"))
        );
        assert_eq!(by_tag.digest, None);
        let pinned = image(&format!("ghcr.io/acme/web@{DIGEST}")).unwrap();
        assert_eq!(
            (
                pinned.repository.as_str(),
                pinned.tag,
                pinned.digest.as_deref()
            ),
            ("ghcr.io/acme/web", None, Some(DIGEST))
        );
        let both = image(&format!("ghcr.io/acme/web:v3@{DIGEST}")).unwrap();
        assert_eq!(both.tag.as_deref(), Some("v3"));
        assert_eq!(both.to_string(), format!("ghcr.io/acme/web:v3@{DIGEST}"));
        for bad in [
            "nginx",
            "localhost:5000/acme/web",
            "nginx@sha256:abc",
            "nginx@md5:0123",
            "Nginx/App:v1",
            ":v1",
            "nginx:v3:v4",
            "localhost:http/web:v1",
            "nginx:.v1",
        ] {
            assert!(image(bad).is_err(), "{bad} should be rejected");
        }
        assert!(image("nginx")
            .unwrap_err()
            .contains("neither a tag nor a digest"));
    }

    #[test]
    fn set_arguments_need_a_key() {
        let set: SetArg = "a.b=c=d".parse().unwrap();
        assert_eq!((set.key.as_str(), set.value.as_str()), ("a.b", "c=d"));
        assert_eq!("k=".parse::<SetArg>().unwrap().value, "");
        assert!("noequals".parse::<SetArg>().is_err());
        assert!("=v".parse::<SetArg>().is_err());
    }

    #[test]
    fn shell_words_quote_only_what_needs_it() {
        assert_eq!(
            shell_words(&[
                "helm",
                "upgrade",
                "--description",
                "bgslot swap blue->green"
            ]),
            "helm upgrade --description 'bgslot swap blue->green'"
        );
        assert_eq!(shell_words(&["it's", ""]), r"'it'\''s' ''");
    }
}
