//! registries.yaml as k3s reads it (docs/k3s-behaviour.md §4 registries.yaml), and the pure resolution of
//! an image to the ordered list of endpoints containerd tries. Owns no I/O besides reading the
//! file once; never touches the network.
use crate::image::ImageRef;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Registries {
    pub mirrors: BTreeMap<String, Mirror>,
    pub configs: BTreeMap<String, RegistryConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Mirror {
    pub endpoint: Vec<String>,
    /// Go regexp -> replacement; applied to the repository only, first changing pattern wins.
    pub rewrite: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RegistryConfig {
    pub auth: Option<Auth>,
    pub tls: Option<Tls>,
}

#[derive(Clone, Default, Deserialize)]
#[serde(default)]
pub struct Auth {
    pub username: Option<String>,
    pub password: Option<String>,
    /// base64 of `user:pass`
    pub auth: Option<String>,
    pub identity_token: Option<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never print secrets
        f.debug_struct("Auth").field("username", &self.username).finish_non_exhaustive()
    }
}

impl Auth {
    /// (user, pass) for HTTP basic auth.
    pub fn basic(&self) -> Option<(String, String)> {
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            return Some((u.clone(), p.clone()));
        }
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD.decode(self.auth.as_deref()?.trim()).ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (u, p) = s.split_once(':')?;
        Some((u.to_string(), p.to_string()))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Tls {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub insecure_skip_verify: bool,
}

impl Registries {
    pub fn parse(text: &str) -> Result<Registries, String> {
        if text.trim().is_empty() {
            return Ok(Registries::default());
        }
        serde_saphyr::from_str::<Registries>(text).map_err(|e| e.to_string())
    }
}

/// One place containerd will try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// scheme://authority/path-prefix (the path normally `/v2`)
    pub base: String,
    pub scheme: String,
    pub authority: String,
    /// the repository to ask for at this endpoint (rewritten for mirrors)
    pub repository: String,
    pub is_default: bool,
}

pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost" || h.parse::<std::net::Ipv4Addr>().map(|a| a.is_loopback()).unwrap_or(false) || h == "::1"
}

fn split_port(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[')
        && let Some((h, p)) = rest.split_once(']') {
            return (h, p.strip_prefix(':'));
        }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h, Some(p)),
        _ => (authority, None),
    }
}

/// Parse an endpoint as k3s does: no scheme = https, except loopback on a non-443 port (http);
/// empty path means `/v2`.
pub fn normalize_endpoint(raw: &str) -> Result<(String, String, String), String> {
    let raw = raw.trim();
    let (scheme, rest) = match raw.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => {
            let authority = raw.split('/').next().unwrap_or("");
            let (host, port) = split_port(authority);
            let http = is_loopback_host(host) && port.is_some_and(|p| p != "443");
            ((if http { "http" } else { "https" }).to_string(), raw)
        }
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!("unsupported scheme {scheme:?} in endpoint {raw:?}"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(format!("endpoint {raw:?} has no host"));
    }
    let path = path.trim_end_matches('/');
    let path = if path.is_empty() { "/v2".to_string() } else { path.to_string() };
    Ok((scheme, authority.to_string(), path))
}

/// The default (upstream) endpoint of a registry name.
pub fn default_endpoint(registry: &str) -> String {
    if registry == "docker.io" { "https://registry-1.docker.io/v2".into() } else { registry.to_string() }
}

/// Apply rewrites to a repository: first pattern (in map order) that matches wins.
pub fn rewrite_repository(rewrite: &BTreeMap<String, String>, repo: &str) -> Result<String, String> {
    for (pat, rep) in rewrite {
        let re = regex::Regex::new(pat).map_err(|e| format!("invalid rewrite pattern {pat:?}: {e}"))?;
        if re.is_match(repo) {
            return Ok(re.replace(repo, rep.as_str()).into_owned());
        }
    }
    Ok(repo.to_string())
}

/// The ordered endpoints containerd (configured by k3s from registries.yaml) tries for an image.
pub fn endpoints_for(reg: &Registries, image: &ImageRef, disable_default: bool) -> Result<Vec<Endpoint>, String> {
    let mirror = reg.mirrors.get(&image.registry).or_else(|| reg.mirrors.get("*"));
    let mut out = Vec::new();
    if let Some(m) = mirror {
        let repo = rewrite_repository(&m.rewrite, &image.repository)?;
        for e in &m.endpoint {
            let (scheme, authority, path) = normalize_endpoint(e)?;
            out.push(Endpoint {
                base: format!("{scheme}://{authority}{path}"),
                scheme,
                authority,
                repository: repo.clone(),
                is_default: false,
            });
        }
    }
    if !disable_default || out.is_empty() {
        let (scheme, authority, path) = normalize_endpoint(&default_endpoint(&image.registry))?;
        let base = format!("{scheme}://{authority}{path}");
        if !out.iter().any(|e| e.base == base && e.repository == image.repository) {
            out.push(Endpoint { base, scheme, authority, repository: image.repository.clone(), is_default: true });
        }
    }
    Ok(out)
}

/// The `configs` entry for an endpoint (keyed by host[:port]; docker.io's API host also by name).
pub fn config_for<'a>(reg: &'a Registries, ep: &Endpoint) -> Option<&'a RegistryConfig> {
    reg.configs.get(&ep.authority).or_else(|| {
        if ep.authority == "registry-1.docker.io" { reg.configs.get("docker.io") } else { None }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    const BLOG: &str = r#"
mirrors:
  docker.io:
    endpoint:
      - "http://192.168.173.76:6000"
      - "docker.1ms.run"
    rewrite:
      "^riscv64/(.*)": "riscv64/$1"
  "127.0.5.1:5000":
    endpoint:
      - "127.0.5.1:5000"
configs:
  "192.168.173.76:6000":
    auth:
      username: u
      password: p
    token: ignored-unknown-key
"#;
    #[test]
    fn blog_registries_resolve_in_order_with_default_last() {
        let r = Registries::parse(BLOG).unwrap();
        let img = ImageRef::parse("riscv64/redis:1.1").unwrap();
        let eps = endpoints_for(&r, &img, false).unwrap();
        let bases: Vec<_> = eps.iter().map(|e| (e.base.as_str(), e.repository.as_str())).collect();
        assert_eq!(
            bases,
            vec![
                ("http://192.168.173.76:6000/v2", "riscv64/redis"),
                ("https://docker.1ms.run/v2", "riscv64/redis"),
                ("https://registry-1.docker.io/v2", "riscv64/redis"),
            ]
        );
        assert!(config_for(&r, &eps[0]).unwrap().auth.as_ref().unwrap().basic().is_some());
    }
    #[test]
    fn rewrite_applies_to_mirrors_only() {
        let r = Registries::parse(
            "mirrors:\n  docker.io:\n    endpoint: [\"http://127.0.5.1:5000\"]\n    rewrite:\n      \"^rancher/(.*)\": \"riscv/rancher/$1\"\n",
        )
        .unwrap();
        let eps = endpoints_for(&r, &ImageRef::parse("rancher/mirrored-pause:3.6").unwrap(), false).unwrap();
        assert_eq!(eps[0].repository, "riscv/rancher/mirrored-pause");
        assert_eq!(eps[1].repository, "rancher/mirrored-pause");
        assert!(eps[1].is_default);
        let eps = endpoints_for(&r, &ImageRef::parse("rancher/mirrored-pause:3.6").unwrap(), true).unwrap();
        assert_eq!(eps.len(), 1);
    }
    #[test]
    fn scheme_rules() {
        assert_eq!(normalize_endpoint("127.0.5.1:5000").unwrap().0, "http");
        assert_eq!(normalize_endpoint("127.0.5.1:443").unwrap().0, "https");
        assert_eq!(normalize_endpoint("127.0.5.1").unwrap().0, "https");
        assert_eq!(normalize_endpoint("mirror.example:5000").unwrap().0, "https");
        assert_eq!(normalize_endpoint("http://mirror.example:5000/").unwrap().2, "/v2");
        assert_eq!(normalize_endpoint("https://m.example/custom/v2").unwrap().2, "/custom/v2");
    }
    #[test]
    fn wildcard_only_when_no_specific_entry() {
        let r = Registries::parse(
            "mirrors:\n  \"*\":\n    endpoint: [\"http://127.0.5.1:5000\"]\n  quay.io:\n    endpoint: [\"http://127.0.6.1:5000\"]\n",
        )
        .unwrap();
        let a = endpoints_for(&r, &ImageRef::parse("redis").unwrap(), false).unwrap();
        assert_eq!(a[0].base, "http://127.0.5.1:5000/v2");
        let b = endpoints_for(&r, &ImageRef::parse("quay.io/x/y:1").unwrap(), false).unwrap();
        assert_eq!(b[0].base, "http://127.0.6.1:5000/v2");
        assert_eq!(b[1].base, "https://quay.io/v2");
    }
}
