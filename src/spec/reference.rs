//! Image references in the Docker reference grammar (distribution/reference), normalized the way
//! containerd under k3s reads them: no registry means `docker.io`, a one-word name on docker.io
//! gets `library/`, no tag and no digest means `latest`.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    /// Registry host (with port), normalized: `docker.io` for Docker Hub.
    pub registry: String,
    /// Repository path inside the registry, e.g. `library/redis`.
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error("an image reference cannot be empty")]
    Empty,
    #[error("`{0}` is not a valid registry host (expected host, host:port or [ipv6]:port)")]
    BadRegistry(String),
    #[error(
        "path component `{0}` is invalid: only lowercase letters, digits and single `.`, `_`, `__` or `-` between them are allowed"
    )]
    BadPath(String),
    #[error("tag `{0}` is invalid: 1-128 characters of letters, digits, `_`, `.`, `-`, not starting with `.` or `-`")]
    BadTag(String),
    #[error("digest `{0}` is invalid: expected sha256: followed by 64 lowercase hex digits")]
    BadDigest(String),
    #[error("repository name is longer than 255 characters")]
    TooLong,
}

static PATH_COMPONENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$").unwrap());
static TAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[\w][\w.-]{0,127}$").unwrap());
static DIGEST: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^sha256:[a-f0-9]{64}$").unwrap());
static DOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$",
    )
    .unwrap()
});

pub const DOCKER_HUB: &str = "docker.io";

impl ImageRef {
    /// Parses and normalizes a reference such as `redis`, `riscv64/redis:1.1`,
    /// `192.168.173.76:6000/riscv64/busybox:1` or `docker.io/rancher/mirrored-pause@sha256:...`.
    pub fn parse(input: &str) -> Result<ImageRef, RefError> {
        if input.is_empty() {
            return Err(RefError::Empty);
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                if !DIGEST.is_match(d) {
                    return Err(RefError::BadDigest(d.to_string()));
                }
                (r, Some(d.to_string()))
            }
            None => (input, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let t = &rest[last_slash + i + 1..];
                if !TAG.is_match(t) {
                    return Err(RefError::BadTag(t.to_string()));
                }
                (&rest[..last_slash + i], Some(t.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(RefError::Empty);
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('[') =>
            {
                if !DOMAIN.is_match(first) {
                    return Err(RefError::BadRegistry(first.to_string()));
                }
                (first.to_string(), remainder.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        for component in path.split('/') {
            if !PATH_COMPONENT.is_match(component) {
                return Err(RefError::BadPath(component.to_string()));
            }
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if repository.len() > 255 {
            return Err(RefError::TooLong);
        }
        let tag = if tag.is_none() && digest.is_none() { Some("latest".to_string()) } else { tag };
        Ok(ImageRef { registry, repository, tag, digest })
    }

    /// What goes after `/manifests/` in the registry API: the digest when pinned, else the tag.
    pub fn api_reference(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }

    /// The same image under another repository (a mirror rewrite), same tag and digest.
    pub fn with_repository(&self, repository: &str) -> ImageRef {
        ImageRef { repository: repository.to_string(), ..self.clone() }
    }
}

impl serde::Serialize for ImageRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        ImageRef::parse(s).map(|r| r.to_string()).unwrap_or_else(|e| format!("ERR {e}"))
    }

    #[test]
    fn normalizes_like_containerd() {
        assert_eq!(p("redis"), "docker.io/library/redis:latest");
        assert_eq!(p("riscv64/redis:1.1"), "docker.io/riscv64/redis:1.1");
        assert_eq!(p("docker.io/rancher/local-path-provisioner:v0.0.31"), "docker.io/rancher/local-path-provisioner:v0.0.31");
        assert_eq!(p("index.docker.io/library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(p("192.168.173.76:6000/riscv64/busybox:1"), "192.168.173.76:6000/riscv64/busybox:1");
        assert_eq!(p("localhost/foo"), "localhost/foo:latest");
        assert_eq!(p("quay.io/a/b/c:v1"), "quay.io/a/b/c:v1");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(p(&format!("busybox@{d}")), format!("docker.io/library/busybox@{d}"));
        assert_eq!(p(&format!("busybox:1@{d}")), format!("docker.io/library/busybox:1@{d}"));
    }

    #[test]
    fn rejects_what_the_grammar_rejects() {
        assert!(p("").starts_with("ERR"));
        assert!(p("Redis").starts_with("ERR"), "uppercase repository");
        assert!(p("redis:").starts_with("ERR"));
        assert!(p("redis:.bad").starts_with("ERR"));
        assert!(p("a//b").starts_with("ERR"));
        assert!(p("a/-b").starts_with("ERR"));
        assert!(p("busybox@sha256:abc").starts_with("ERR"));
        assert!(p("bad_host.io:x/a").starts_with("ERR"));
        assert!(p(&format!("redis:{}", "a".repeat(129))).starts_with("ERR"));
        assert!(p("my image").starts_with("ERR"));
    }

    #[test]
    fn api_reference_prefers_digest() {
        let d = format!("sha256:{}", "b".repeat(64));
        assert_eq!(ImageRef::parse(&format!("x:1@{d}")).unwrap().api_reference(), d);
        assert_eq!(ImageRef::parse("x:1").unwrap().api_reference(), "1");
    }
}
