//! Image references normalized the way containerd/docker do it (docker.io default registry,
//! `library/` for one-word names, `latest` default tag). Pure; no I/O.
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    /// `:tag` or `@sha256:...`
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, String> {
        let s = s.trim();
        if s.is_empty() || s.contains(char::is_whitespace) {
            return Err(format!("invalid reference format: {s:?}"));
        }
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d.to_string())),
            None => (s, None),
        };
        // tag: after the last ':' that follows the last '/'
        let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (&name[..last_slash + i], Some(name[last_slash + i + 1..].to_string())),
            None => (name, None),
        };
        let (registry, repo) = match name.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (first.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let repository = if registry == "docker.io" && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo
        };
        if repository.is_empty() || repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(format!("invalid reference format: repository name must be lowercase: {s:?}"));
        }
        let tag = if tag.is_none() && digest.is_none() { Some("latest".into()) } else { tag };
        Ok(ImageRef { registry, repository, tag, digest })
    }

    /// The manifest reference to ask the registry for (digest wins over tag).
    pub fn reference(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }

    /// `docker.io/library/redis` (no tag)
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
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
    fn n(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }
    #[test]
    fn normalizes_like_containerd() {
        assert_eq!(n("redis"), "docker.io/library/redis:latest");
        assert_eq!(n("riscv64/redis:1.1"), "docker.io/riscv64/redis:1.1");
        assert_eq!(n("rancher/mirrored-pause:3.6"), "docker.io/rancher/mirrored-pause:3.6");
        assert_eq!(n("127.0.5.1:5000/riscv64/redis:1.1"), "127.0.5.1:5000/riscv64/redis:1.1");
        assert_eq!(n("localhost/x"), "localhost/x:latest");
        assert_eq!(n("quay.io/a/b@sha256:00"), "quay.io/a/b@sha256:00");
        assert_eq!(n("docker.io/nginx:1.27"), "docker.io/library/nginx:1.27");
        assert!(ImageRef::parse("Bad/Name").is_err());
    }
}
