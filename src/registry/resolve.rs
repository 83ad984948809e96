//! Where containerd on a board will look for an image: mirror endpoints in order with the
//! registry's rewrites applied to the repository path, then the default upstream endpoint without
//! rewrites (docs/k3s-behaviour.md §4.2 endpoint, §4.3 rewrite, §4.4 `"*"` wildcard).
//! Pure: no network.

use std::collections::BTreeMap;

use regex::Regex;
use serde::Serialize;

use crate::spec::reference::ImageRef;

/// One `rewrite` rule: a Go/RE2 regexp and its `$1`-style replacement (same syntax in Rust's regex).
#[derive(Debug, Clone)]
pub struct Rewrite {
    pub pattern: Regex,
    pub replacement: String,
}

impl Rewrite {
    pub fn new(pattern: &str, replacement: &str) -> Result<Rewrite, regex::Error> {
        Ok(Rewrite { pattern: Regex::new(pattern)?, replacement: replacement.to_string() })
    }
}

/// `mirrors.<registry>` of registries.yaml.
#[derive(Debug, Clone)]
pub struct MirrorEntry {
    /// `docker.io`, `registry.k8s.io`, or `*` (used only when no specific entry matches).
    pub registry: String,
    /// Endpoint URLs in order (`http://127.0.0.1:5000`); scheme-less ones are normalized.
    pub endpoints: Vec<String>,
    /// Tried in order; the first that changes the repository wins.
    pub rewrites: Vec<Rewrite>,
}

#[derive(Debug, Clone, Default)]
pub struct MirrorConfig {
    pub mirrors: Vec<MirrorEntry>,
    /// Registry name -> where its upstream really is (the lab points docker.io at a loopback
    /// registry). Without an entry: docker.io -> <https://registry-1.docker.io>, else `https://<name>`.
    pub upstream_overrides: BTreeMap<String, String>,
    /// k3s `--disable-default-registry-endpoint`: no upstream attempt at all.
    pub disable_default_endpoint: bool,
}

/// One place containerd will try, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// Base URL with scheme, no trailing `/v2`: `http://127.0.0.1:5000`.
    pub endpoint: String,
    pub repository: String,
    /// Tag or digest asked for (rewrites never touch it).
    pub reference: String,
    /// True for the default upstream endpoint.
    pub upstream: bool,
}

impl Attempt {
    /// `host:port/repository:tag` (or `@digest`) as shown to users.
    pub fn display(&self) -> String {
        let host = self.endpoint.split_once("://").map(|(_, h)| h).unwrap_or(&self.endpoint);
        let sep = if self.reference.starts_with("sha256:") { '@' } else { ':' };
        format!("{host}/{}{sep}{}", self.repository, self.reference)
    }
}

/// Applies the first rewrite that changes `repository`.
pub fn rewrite(rewrites: &[Rewrite], repository: &str) -> String {
    for r in rewrites {
        let out = r.pattern.replace_all(repository, r.replacement.as_str());
        if out != repository {
            return out.into_owned();
        }
    }
    repository.to_string()
}

fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost" || h == "::1" || h.starts_with("127.")
}

/// Splits `host:port` / `[v6]:port` into (host, port).
fn host_port(hp: &str) -> (&str, Option<&str>) {
    if let Some(rest) = hp.strip_prefix('[')
        && let Some((h, p)) = rest.split_once(']')
    {
        return (h, p.strip_prefix(':'));
    }
    match hp.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (hp, None),
    }
}

/// Endpoint URL as containerd will use it: an explicit scheme is kept; without one it is https,
/// except loopback on a port other than 443, which is http (docs/k3s-behaviour.md §4.5 endpoint scheme).
/// Trailing `/` and `/v2` dropped.
pub fn normalize_endpoint(e: &str) -> String {
    let e = e.trim().trim_end_matches('/');
    let e = e.strip_suffix("/v2").unwrap_or(e);
    if e.starts_with("http://") || e.starts_with("https://") {
        return e.to_string();
    }
    let (host, port) = host_port(e);
    if is_loopback_host(host) && port.is_some_and(|p| p != "443") {
        format!("http://{e}")
    } else {
        format!("https://{e}")
    }
}

/// The default endpoint of a registry name.
pub fn upstream_endpoint(cfg: &MirrorConfig, registry: &str) -> String {
    if let Some(o) = cfg.upstream_overrides.get(registry) {
        return normalize_endpoint(o);
    }
    if registry == "docker.io" {
        return "https://registry-1.docker.io".to_string();
    }
    normalize_endpoint(registry)
}

/// The ordered list of places containerd will try for `image`.
pub fn attempts(cfg: &MirrorConfig, image: &ImageRef) -> Vec<Attempt> {
    let reference = image.api_reference().to_string();
    let entry = cfg
        .mirrors
        .iter()
        .find(|m| m.registry == image.registry)
        .or_else(|| cfg.mirrors.iter().find(|m| m.registry == "*"));
    let mut out = Vec::new();
    if let Some(m) = entry {
        let repository = rewrite(&m.rewrites, &image.repository);
        for e in &m.endpoints {
            out.push(Attempt {
                endpoint: normalize_endpoint(e),
                repository: repository.clone(),
                reference: reference.clone(),
                upstream: false,
            });
        }
    }
    if !cfg.disable_default_endpoint {
        let endpoint = upstream_endpoint(cfg, &image.registry);
        // containerd does not try the same host twice when a mirror lists the upstream itself.
        if !out.iter().any(|a| a.endpoint == endpoint && a.repository == image.repository) {
            out.push(Attempt { endpoint, repository: image.repository.clone(), reference, upstream: true });
        }
    }
    out
}

/// The attempt that lands on `registry_endpoint` (our private registry): the repository to push
/// to so that the board's lookup finds it. None when the mirrors never send this image there.
pub fn destination(cfg: &MirrorConfig, image: &ImageRef, registry_endpoint: &str) -> Option<Attempt> {
    let want = normalize_endpoint(registry_endpoint);
    attempts(cfg, image).into_iter().find(|a| a.endpoint == want)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    fn cfg() -> MirrorConfig {
        MirrorConfig {
            mirrors: vec![MirrorEntry {
                registry: "docker.io".into(),
                endpoints: vec!["http://127.0.0.1:5000".into(), "mirror.example:5443".into()],
                rewrites: vec![
                    Rewrite::new("^rancher/mirrored-(.*)$", "riscv64/$1").unwrap(),
                    Rewrite::new("^rancher/(.*)$", "riscv64/rancher-$1").unwrap(),
                ],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn mirror_endpoints_in_order_with_rewrite_then_upstream_without() {
        let a = attempts(&cfg(), &img("rancher/mirrored-pause:3.6"));
        let shown: Vec<String> = a.iter().map(|a| format!("{} {}", a.endpoint, a.display())).collect();
        assert_eq!(
            shown,
            vec![
                "http://127.0.0.1:5000 127.0.0.1:5000/riscv64/pause:3.6",
                "https://mirror.example:5443 mirror.example:5443/riscv64/pause:3.6",
                "https://registry-1.docker.io registry-1.docker.io/rancher/mirrored-pause:3.6",
            ]
        );
        assert_eq!(a.iter().map(|a| a.upstream).collect::<Vec<_>>(), vec![false, false, true]);
    }

    #[test]
    fn first_rewrite_that_changes_wins_and_tag_is_never_rewritten() {
        let a = attempts(&cfg(), &img("rancher/klipper-lb:v0.4.13"));
        assert_eq!(a[0].repository, "riscv64/rancher-klipper-lb");
        assert_eq!(a[0].reference, "v0.4.13");
        let c = MirrorConfig {
            mirrors: vec![MirrorEntry {
                registry: "docker.io".into(),
                endpoints: vec!["127.0.0.1:5000".into()],
                rewrites: vec![Rewrite::new("^nomatch/(.*)", "x/$1").unwrap(), Rewrite::new("v1", "v2").unwrap()],
            }],
            ..Default::default()
        };
        let a = attempts(&c, &img("library/app-v1:v1"));
        assert_eq!(a[0].display(), "127.0.0.1:5000/library/app-v2:v1");
    }

    #[test]
    fn digest_reference_is_kept() {
        let d = format!("sha256:{}", "a".repeat(64));
        let a = attempts(&cfg(), &img(&format!("busybox@{d}")));
        assert_eq!(a[0].reference, d);
        assert_eq!(a[0].display(), format!("127.0.0.1:5000/library/busybox@{d}"));
    }

    #[test]
    fn unmirrored_registry_goes_upstream_only_and_wildcard_is_a_fallback() {
        let a = attempts(&cfg(), &img("registry.k8s.io/pause:3.9"));
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].endpoint, "https://registry.k8s.io");
        let mut c = cfg();
        c.mirrors.push(MirrorEntry { registry: "*".into(), endpoints: vec!["http://127.0.0.2:6000".into()], rewrites: vec![] });
        let a = attempts(&c, &img("registry.k8s.io/pause:3.9"));
        assert_eq!(a[0].display(), "127.0.0.2:6000/pause:3.9");
        assert_eq!(a[1].endpoint, "https://registry.k8s.io");
        // docker.io has its own entry, so `*` is not used for it.
        assert!(attempts(&c, &img("redis")).iter().all(|a| !a.endpoint.contains("127.0.0.2")));
    }

    #[test]
    fn overrides_and_disabled_default_endpoint() {
        let mut c = cfg();
        c.upstream_overrides.insert("docker.io".into(), "http://127.0.0.9:7000".into());
        let a = attempts(&c, &img("redis:7"));
        assert_eq!(a.last().unwrap().display(), "127.0.0.9:7000/library/redis:7");
        c.disable_default_endpoint = true;
        assert!(attempts(&c, &img("redis:7")).iter().all(|a| !a.upstream));
    }

    #[test]
    fn endpoint_scheme_rules() {
        assert_eq!(normalize_endpoint("127.0.0.1:5000"), "http://127.0.0.1:5000");
        assert_eq!(normalize_endpoint("127.0.0.1:443"), "https://127.0.0.1:443");
        assert_eq!(normalize_endpoint("localhost:5000/v2/"), "http://localhost:5000");
        assert_eq!(normalize_endpoint("[::1]:5000"), "http://[::1]:5000");
        assert_eq!(normalize_endpoint("reg.lan:5000"), "https://reg.lan:5000");
        assert_eq!(normalize_endpoint("https://127.0.0.1:5000"), "https://127.0.0.1:5000");
    }

    #[test]
    fn destination_is_the_rewritten_repository_on_our_registry() {
        let d = destination(&cfg(), &img("rancher/mirrored-pause:3.6"), "127.0.0.1:5000").unwrap();
        assert_eq!(d.repository, "riscv64/pause");
        assert!(destination(&cfg(), &img("quay.io/x/y:1"), "127.0.0.1:5000").is_none());
    }
}
