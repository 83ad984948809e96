//! Image pulls the way containerd does them under k3s: endpoints from registries.yaml in order
//! (rewrite on mirrors only), then the default upstream; resolve the manifest over the real
//! Distribution HTTP API; pick linux/<arch> from an index; fetch and verify config and layers.
//! Error texts follow containerd's. Where a registry host "really" is comes from the lab's
//! upstream.conf; only loopback addresses are ever contacted. Owns no files.
use crate::image::ImageRef;
use crate::paths::Paths;
use crate::registries::{self, Endpoint, Registries, is_loopback_host};
use crate::simconf::UpstreamConf;
use crate::util::{digest_of, sha256_hex};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*";

/// A successful pull.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Pulled {
    /// normalized reference, e.g. docker.io/library/redis:7
    pub image: String,
    /// repo digest as kubelet reports it: docker.io/library/redis@sha256:<top-level digest>
    pub image_id: String,
    /// the endpoint the manifest came from (logical URL, as configured)
    pub endpoint: String,
    /// the repository asked for at that endpoint (after rewrite)
    pub repository: String,
    /// digest of the platform manifest actually used
    pub manifest_digest: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PullError {
    /// containerd's message: `failed to pull and unpack image "<ref>": <cause>`
    pub message: String,
    /// gRPC code kubelet shows: NotFound or Unknown
    pub code: &'static str,
}

impl std::fmt::Display for PullError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What kubelet prints: `rpc error: code = NotFound desc = failed to pull and unpack image ...`
impl PullError {
    pub fn rpc(&self) -> String {
        format!("rpc error: code = {} desc = {}", self.code, self.message)
    }
}

enum Cause {
    NotFound(String),
    Other(String),
}

/// Build a blocking HTTP client: no proxy from the environment, statuses returned not raised.
pub fn http_agent(tls: ureq::tls::TlsConfig) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_global(Some(Duration::from_secs(60)))
        .max_redirects(0)
        .tls_config(tls)
        .build()
        .into()
}

pub fn tls_with_roots(pem: &[u8]) -> Result<ureq::tls::TlsConfig, String> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        if let Ok(ureq::tls::PemItem::Certificate(c)) = item {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        return Err("no certificate found in CA file".into());
    }
    Ok(ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs))).build())
}

pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub www_authenticate: Option<String>,
    pub location: Option<String>,
    pub body: Vec<u8>,
}

pub fn do_request(agent: &ureq::Agent, method: &str, url: &str, headers: &[(&str, String)], body: Option<&[u8]>) -> Result<Resp, String> {
    let mut b = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, v.as_str());
    }
    let req = b.body(body.map(|b| b.to_vec()).unwrap_or_default()).map_err(|e| e.to_string())?;
    let mut resp = agent.run(req).map_err(|e| e.to_string())?;
    let h = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let content_type = h("content-type").unwrap_or_default();
    let www_authenticate = h("www-authenticate");
    let location = h("location");
    let status = resp.status().as_u16();
    let body = if method == "HEAD" {
        Vec::new()
    } else {
        resp.body_mut().with_config().limit(256 << 20).read_to_vec().map_err(|e| e.to_string())?
    };
    Ok(Resp { status, content_type, www_authenticate, location, body })
}

/// Parse `Bearer realm="...",service="...",scope="..."`.
fn parse_challenge(h: &str) -> (String, Vec<(String, String)>) {
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = Vec::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some((k, after)) = s.split_once('=') else { break };
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (&q[..end], q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.push((k.trim().to_ascii_lowercase(), v.to_string()));
        s = next.trim_start_matches(',').trim();
    }
    (scheme.to_ascii_lowercase(), params)
}

pub struct Puller {
    pub registries: Registries,
    pub upstream: UpstreamConf,
    pub disable_default_endpoint: bool,
    pub arch: String,
    pub paths: Paths,
}

/// One endpoint session: logical base (for messages) and physical base (to connect to).
struct Session {
    logical: String,
    physical: String,
    agent: ureq::Agent,
    auth: Option<registries::Auth>,
    bearer: Option<String>,
}

impl Puller {
    /// The puller of the running k3s on this node (what `crictl pull` talks to): registries.yaml
    /// as read at k3s' start. Errors like crictl when k3s (containerd) is not running.
    pub fn from_runtime(paths: &Paths) -> Result<Puller, String> {
        let down = "validate service connection: validate CRI v1 image API for endpoint \"unix:///run/k3s/containerd/containerd.sock\": rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial unix /run/k3s/containerd/containerd.sock: connect: no such file or directory\"".to_string();
        let v: Value = std::fs::read(paths.containerd_runtime()).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or(down.clone())?;
        let pid = v["pid"].as_u64().unwrap_or(0);
        if pid == 0 || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Err(down);
        }
        Ok(Puller {
            registries: Registries::parse(v["registries_yaml"].as_str().unwrap_or("")).map_err(|e| format!("registries: {e}"))?,
            upstream: UpstreamConf::load(paths),
            disable_default_endpoint: v["disable_default_endpoint"].as_bool().unwrap_or(false),
            arch: v["arch"].as_str().unwrap_or("riscv64").to_string(),
            paths: paths.clone(),
        })
    }

    /// Map an endpoint to where the lab really serves it. Only loopback is ever contacted.
    fn physical_base(&self, scheme: &str, authority: &str, path: &str) -> Result<String, String> {
        if let Some(real) = self.upstream.lookup(authority) {
            return Ok(format!("{real}{path}"));
        }
        let host = authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority);
        let host = if authority.starts_with('[') { authority } else { host };
        if is_loopback_host(host) {
            return Ok(format!("{scheme}://{authority}{path}"));
        }
        Err(format!("dial tcp: lookup {host}: no such host"))
    }

    fn session(&self, ep: &Endpoint) -> Result<Session, String> {
        let path = &ep.base[ep.scheme.len() + 3 + ep.authority.len()..];
        let physical = self.physical_base(&ep.scheme, &ep.authority, path)?;
        let cfg = registries::config_for(&self.registries, ep);
        let mut tls = ureq::tls::TlsConfig::builder().build();
        if let Some(t) = cfg.and_then(|c| c.tls.as_ref()) {
            if let Some(ca) = &t.ca_file {
                let pem = std::fs::read(self.paths.user_path(ca)).map_err(|e| format!("failed to read ca_file {ca}: {e}"))?;
                tls = tls_with_roots(&pem)?;
            }
            if t.insecure_skip_verify {
                tls = ureq::tls::TlsConfig::builder().disable_verification(true).build();
            }
        }
        Ok(Session {
            logical: ep.base.clone(),
            physical,
            agent: http_agent(tls),
            auth: cfg.and_then(|c| c.auth.clone()),
            bearer: None,
        })
    }

    /// GET with the registry auth dance (Basic, or Bearer token from the realm).
    fn get(&self, s: &mut Session, rel: &str, accept: &str) -> Result<Resp, String> {
        let url = format!("{}{}", s.physical, rel);
        let mut headers = vec![("Accept", accept.to_string())];
        if let Some(b) = &s.bearer {
            headers.push(("Authorization", format!("Bearer {b}")));
        }
        let r = do_request(&s.agent, "GET", &url, &headers, None)?;
        if r.status != 401 {
            return Ok(r);
        }
        let Some(ch) = r.www_authenticate.clone() else { return Ok(r) };
        let (scheme, params) = parse_challenge(&ch);
        let basic = s.auth.as_ref().and_then(|a| a.basic());
        use base64::Engine;
        let b64 = |u: &str, p: &str| base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        let authz = match scheme.as_str() {
            "basic" => match &basic {
                Some((u, p)) => format!("Basic {}", b64(u, p)),
                None => return Ok(r),
            },
            "bearer" => {
                let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                let realm = get("realm").ok_or("bearer challenge without realm")?;
                let (rs, rest) = realm.split_once("://").ok_or("bad realm")?;
                let (auth, rpath) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                let realm_phys = self.physical_base(rs, auth, rpath)?;
                let mut q = Vec::new();
                if let Some(sv) = get("service") {
                    q.push(format!("service={sv}"));
                }
                if let Some(sc) = get("scope") {
                    q.push(format!("scope={sc}"));
                }
                let turl = format!("{realm_phys}?{}", q.join("&"));
                let mut th = Vec::new();
                if let Some((u, p)) = &basic {
                    th.push(("Authorization", format!("Basic {}", b64(u, p))));
                }
                let tr = do_request(&s.agent, "GET", &turl, &th, None)?;
                if tr.status != 200 {
                    return Ok(r);
                }
                let v: Value = serde_json::from_slice(&tr.body).map_err(|e| e.to_string())?;
                let tok = v.get("token").or(v.get("access_token")).and_then(Value::as_str).ok_or("no token")?;
                s.bearer = Some(tok.to_string());
                format!("Bearer {tok}")
            }
            _ => return Ok(r),
        };
        do_request(&s.agent, "GET", &url, &[("Accept", accept.to_string()), ("Authorization", authz)], None)
    }

    pub fn pull(&self, image: &ImageRef) -> Result<Pulled, PullError> {
        let name = image.to_string();
        let fail = |c: Cause| match c {
            Cause::NotFound(m) => PullError { message: format!("failed to pull and unpack image \"{name}\": {m}"), code: "NotFound" },
            Cause::Other(m) => PullError { message: format!("failed to pull and unpack image \"{name}\": {m}"), code: "Unknown" },
        };
        let eps = registries::endpoints_for(&self.registries, image, self.disable_default_endpoint)
            .map_err(|e| fail(Cause::Other(e)))?;
        let reference = image.reference().to_string();
        // containerd keeps the first non-404 error (docker resolver: firstErr)
        let mut first_err: Option<String> = None;
        let mut sessions: Vec<Result<Session, String>> = eps.iter().map(|ep| self.session(ep)).collect();
        for (i, ep) in eps.iter().enumerate() {
            let s = match &mut sessions[i] {
                Ok(s) => s,
                Err(e) => {
                    first_err = first_err.or(Some(format!(
                        "failed to do request: Head \"{}/{}/manifests/{}\": {e}",
                        ep.base, ep.repository, reference
                    )));
                    continue;
                }
            };
            let rel = format!("/{}/manifests/{}", ep.repository, reference);
            let logical_url = format!("{}{}", s.logical, rel);
            let r = match self.get(s, &rel, ACCEPT) {
                Ok(r) => r,
                Err(e) => {
                    first_err = first_err.or(Some(format!("failed to do request: Head \"{logical_url}\": {e}")));
                    continue;
                }
            };
            match r.status {
                200 => {}
                404 => continue,
                401 => {
                    first_err = first_err.or(Some(format!(
                        "pull access denied, repository does not exist or may require authorization: server message: unauthorized: authentication required (HEAD {logical_url}: 401 Unauthorized)"
                    )));
                    continue;
                }
                st => {
                    first_err = first_err.or(Some(format!("unexpected status from HEAD request to {logical_url}: {st}")));
                    continue;
                }
            }
            // Resolved at this endpoint: containerd does not fall back after this point.
            return self.fetch_resolved(image, &eps, &mut sessions, i, r).map_err(fail);
        }
        let cause = match first_err {
            Some(e) => Cause::Other(format!("failed to resolve reference \"{name}\": {e}")),
            None => Cause::NotFound(format!("failed to resolve reference \"{name}\": {name}: not found")),
        };
        Err(fail(cause))
    }

    fn fetch_resolved(&self, image: &ImageRef, eps: &[Endpoint], sessions: &mut [Result<Session, String>], at: usize, top: Resp) -> Result<Pulled, Cause> {
        let top_digest = digest_of(&top.body);
        if let Some(d) = &image.digest
            && d != &top_digest
        {
            return Err(Cause::Other(format!("manifest digest mismatch: expected {d}, got {top_digest}")));
        }
        let v: Value = serde_json::from_slice(&top.body).map_err(|e| Cause::Other(format!("failed to parse manifest: {e}")))?;
        let mt = media_type(&top.content_type, &v);
        let no_match = || Cause::NotFound("no match for platform in manifest: not found".to_string());
        let (manifest, manifest_digest) = if mt == MT_OCI_INDEX || mt == MT_DOCKER_LIST {
            let pick = v["manifests"].as_array().into_iter().flatten().find(|m| {
                m["platform"]["os"].as_str() == Some("linux") && m["platform"]["architecture"].as_str() == Some(self.arch.as_str())
            });
            let Some(desc) = pick else { return Err(no_match()) };
            let d = desc["digest"].as_str().unwrap_or_default().to_string();
            let body = self.fetch_digest(eps, sessions, "manifests", &d, ACCEPT)?;
            let m: Value = serde_json::from_slice(&body).map_err(|e| Cause::Other(e.to_string()))?;
            (m, d)
        } else if mt == MT_OCI_MANIFEST || mt == MT_DOCKER_MANIFEST {
            (v.clone(), top_digest.clone())
        } else {
            return Err(Cause::NotFound(format!("unexpected media type {mt} for {top_digest}: not found")));
        };
        let cfg_digest = manifest["config"]["digest"].as_str().unwrap_or_default().to_string();
        let cfg = self.fetch_digest(eps, sessions, "blobs", &cfg_digest, "*/*")?;
        let cv: Value = serde_json::from_slice(&cfg).map_err(|e| Cause::Other(format!("failed to parse image config: {e}")))?;
        if cv["architecture"].as_str() != Some(self.arch.as_str()) || cv["os"].as_str() != Some("linux") {
            return Err(no_match());
        }
        let mut size = cfg.len() as u64;
        for layer in manifest["layers"].as_array().into_iter().flatten() {
            let d = layer["digest"].as_str().unwrap_or_default();
            size += self.fetch_digest(eps, sessions, "blobs", d, "*/*")?.len() as u64;
        }
        let ep = &eps[at];
        Ok(Pulled {
            image: image.to_string(),
            image_id: format!("{}@{}", image.name(), top_digest),
            endpoint: ep.base.clone(),
            repository: ep.repository.clone(),
            manifest_digest,
            size,
        })
    }

    /// Fetch content by digest as containerd's fetcher does: every endpoint in order (each with
    /// its own repository name), first one serving verified bytes wins.
    fn fetch_digest(&self, eps: &[Endpoint], sessions: &mut [Result<Session, String>], kind: &str, digest: &str, accept: &str) -> Result<Vec<u8>, Cause> {
        let mut first_err: Option<String> = None;
        for (ep, s) in eps.iter().zip(sessions.iter_mut()) {
            let rel = format!("/{}/{kind}/{digest}", ep.repository);
            let Ok(s) = s else { continue };
            match self.get(s, &rel, accept) {
                Ok(r) if r.status == 200 => {
                    if format!("sha256:{}", sha256_hex(&r.body)) == digest {
                        return Ok(r.body);
                    }
                    first_err = first_err.or(Some(format!("failed to verify {digest} from {}{rel}: digest mismatch", s.logical)));
                }
                Ok(r) if r.status == 404 => {}
                Ok(r) => first_err = first_err.or(Some(format!("unexpected status from GET request to {}{rel}: {}", s.logical, r.status))),
                Err(e) => first_err = first_err.or(Some(format!("failed to do request: Get \"{}{rel}\": {e}", s.logical))),
            }
        }
        Err(match first_err {
            Some(e) => Cause::Other(e),
            None => Cause::NotFound(format!("{digest}: not found")),
        })
    }
}

fn media_type(content_type: &str, v: &Value) -> String {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    if !ct.is_empty() && ct != "application/json" && ct != "application/octet-stream" {
        return ct.to_string();
    }
    if let Some(m) = v["mediaType"].as_str() {
        return m.to_string();
    }
    if v.get("manifests").is_some() { MT_OCI_INDEX.into() } else { MT_OCI_MANIFEST.into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn challenge_parsing() {
        let (s, p) = parse_challenge(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/redis:pull""#);
        assert_eq!(s, "bearer");
        assert_eq!(p[0], ("realm".into(), "https://auth.docker.io/token".into()));
        assert_eq!(p[2].1, "repository:library/redis:pull");
    }
    #[test]
    fn only_loopback_or_listed_hosts_are_contacted() {
        let p = Puller {
            registries: Registries::default(),
            upstream: UpstreamConf::parse("docker.io http://127.0.9.1:5000"),
            disable_default_endpoint: false,
            arch: "riscv64".into(),
            paths: Paths::at("/nonexistent"),
        };
        assert_eq!(p.physical_base("https", "registry-1.docker.io", "/v2").unwrap(), "http://127.0.9.1:5000/v2");
        assert_eq!(p.physical_base("http", "127.0.5.1:5000", "/v2").unwrap(), "http://127.0.5.1:5000/v2");
        assert_eq!(p.physical_base("https", "quay.io", "/v2").unwrap_err(), "dial tcp: lookup quay.io: no such host");
        assert!(p.physical_base("http", "10.0.0.1:5000", "/v2").is_err());
    }
}
