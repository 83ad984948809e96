//! A blocking Distribution (OCI) API client over ureq: blobs (HEAD, GET, mount, chunked resumable
//! upload), manifests (HEAD, GET, PUT of the original bytes), basic auth and the bearer token flow,
//! http or https with a custom CA file.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use ureq::http::{Request, Response};
use ureq::tls::{PemItem, RootCerts, TlsConfig};
use ureq::{Body, SendBody};

use super::digest;
use super::error::{RegistryError, Result};
use super::oci;

/// Registry credentials. Debug never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ username: {:?}, password: <redacted> }}", self.username)
    }
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// PEM CA bundle trusted for https (instead of the built-in web roots).
    pub ca_file: Option<PathBuf>,
    pub credentials: Option<Credentials>,
    /// Bytes per PATCH request; memory use does not depend on it (bodies are streamed).
    pub chunk_size: u64,
    /// Consecutive failed chunks tolerated per blob before giving up.
    pub max_retries: u32,
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            ca_file: None,
            credentials: None,
            chunk_size: 64 * 1024 * 1024,
            max_retries: 5,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// A manifest as fetched: the exact bytes, their media type and digest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: String,
}

/// Result of a cross-repository mount request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    Mounted,
    /// The registry could not mount and opened an upload session instead (its URL).
    Upload(String),
}

/// Something that can stream a blob from a byte offset (a file, an archive member, another registry).
pub trait BlobOpener {
    fn open_blob(&self, digest: &str, offset: u64) -> Result<Box<dyn Read + Send + '_>>;
}

/// Progress of one blob upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadProgress {
    /// Bytes of the blob now on the registry side (may go back after a restart).
    Offset(u64),
    Retrying { attempt: u32, reason: String, resume_at: u64 },
}

enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    Stream { reader: &'a mut dyn Read, len: u64 },
}

pub struct RegistryClient {
    agent: ureq::Agent,
    base: String,
    creds: Option<Credentials>,
    /// Authorization header values that worked: bearer tokens per repository (their scope),
    /// a basic header under `*` for every request.
    auth: Mutex<HashMap<String, String>>,
    opts: ClientOptions,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient").field("base", &self.base).field("creds", &self.creds).finish()
    }
}

fn reason_of(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

fn is_connect_failure(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => true,
        ureq::Error::Timeout(t) => matches!(t, ureq::Timeout::Connect | ureq::Timeout::Resolve),
        ureq::Error::Io(io) => matches!(
            io.kind(),
            io::ErrorKind::ConnectionRefused | io::ErrorKind::AddrNotAvailable | io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable
        ),
        _ => false,
    }
}

/// Percent-encodes a query value.
fn qenc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~:/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses `Bearer realm="..",service="..",scope=".."` into (scheme, params).
pub fn parse_challenge(h: &str) -> (String, Vec<(String, String)>) {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = Vec::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((k, v)) = rest.split_once('=') else { break };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let v = v.trim_start();
        let (val, remaining) = if let Some(q) = v.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_string(), &q[end + 1..]),
                None => (q.to_string(), ""),
            }
        } else {
            match v.find(',') {
                Some(end) => (v[..end].trim().to_string(), &v[end..]),
                None => (v.trim().to_string(), ""),
            }
        };
        params.push((k, val));
        rest = remaining.trim_start_matches([',', ' ']);
    }
    (scheme.to_ascii_lowercase(), params)
}

/// Bytes counted as they go through, remembering whether the *source* failed (as opposed to
/// the network), so a corrupt or truncated source is not retried.
struct Counting<'a> {
    inner: Box<dyn Read + Send + 'a>,
    n: u64,
    want: u64,
    source_error: Option<String>,
    tick: &'a mut dyn FnMut(u64),
    since_tick: u64,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(0) if self.n < self.want => {
                self.source_error = Some(format!("source ended after {} of {} bytes", self.n, self.want));
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "source ended early"))
            }
            Ok(k) => {
                self.n += k as u64;
                self.since_tick += k as u64;
                if self.since_tick >= 4 * 1024 * 1024 {
                    self.since_tick = 0;
                    (self.tick)(self.n);
                }
                Ok(k)
            }
            Err(e) => {
                self.source_error = Some(e.to_string());
                Err(e)
            }
        }
    }
}

/// The repository a request URL is about (`/v2/<repo>/blobs/...`), the key for cached bearer
/// tokens; empty for `/v2/` itself and for URLs of other hosts.
fn auth_key(url: &str) -> String {
    let path = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let path = path.split_once('/').map(|(_, p)| p).unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    let Some(rest) = path.strip_prefix("v2/") else { return String::new() };
    for marker in ["/blobs/", "/manifests/", "/tags/"] {
        if let Some(i) = rest.find(marker) {
            return rest[..i].to_string();
        }
    }
    String::new()
}

/// Parses the end of a `Range: 0-N` header into the next offset (N+1).
fn next_offset(resp: &Response<Body>) -> Option<u64> {
    let r = resp.headers().get("range")?.to_str().ok()?;
    let r = r.strip_prefix("bytes=").unwrap_or(r);
    let (_, end) = r.split_once('-')?;
    end.trim().parse::<u64>().ok().map(|e| e + 1)
}

impl RegistryClient {
    /// `endpoint` is a base URL with scheme (`http://127.0.0.1:5000`); see `resolve::normalize_endpoint`.
    pub fn new(endpoint: &str, opts: ClientOptions) -> Result<RegistryClient> {
        let base = super::resolve::normalize_endpoint(endpoint);
        let mut cfg = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(opts.connect_timeout))
            .accept_encoding("identity")
            .user_agent(concat!("rvcluster/", env!("CARGO_PKG_VERSION")))
            .max_idle_connections_per_host(8);
        if let Some(ca) = &opts.ca_file {
            let pem = std::fs::read(ca).map_err(|e| RegistryError::Io { path: ca.clone(), reason: e.to_string() })?;
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                match item {
                    Ok(PemItem::Certificate(c)) => certs.push(c),
                    Ok(_) => {}
                    Err(e) => {
                        return Err(RegistryError::Tls { url: base.clone(), reason: format!("{}: {e}", ca.display()) });
                    }
                }
            }
            if certs.is_empty() {
                return Err(RegistryError::Tls {
                    url: base.clone(),
                    reason: format!("{} holds no PEM certificate", ca.display()),
                });
            }
            cfg = cfg.tls_config(TlsConfig::builder().root_certs(RootCerts::Specific(Arc::new(certs))).build());
        }
        let agent: ureq::Agent = cfg.build().into();
        let creds = opts.credentials.clone();
        Ok(RegistryClient { agent, base, creds, auth: Mutex::new(HashMap::new()), opts })
    }

    pub fn endpoint(&self) -> &str {
        &self.base
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Upload URLs come back relative or absolute.
    fn absolute(&self, loc: &str) -> String {
        if loc.starts_with("http://") || loc.starts_with("https://") { loc.to_string() } else { self.url(loc) }
    }

    fn location(&self, resp: &Response<Body>, what: &str) -> Result<String> {
        resp.headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| self.absolute(l))
            .ok_or_else(|| RegistryError::Http {
                url: self.base.clone(),
                what: what.to_string(),
                status: resp.status().as_u16(),
                body: "response has no Location header".into(),
            })
    }

    fn map_err(&self, e: ureq::Error, what: &str) -> RegistryError {
        let tls = match &e {
            ureq::Error::Rustls(_) | ureq::Error::Tls(_) | ureq::Error::TlsRequired => true,
            ureq::Error::Io(io) => io.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()),
            _ => false,
        };
        if tls {
            let hint = if self.opts.ca_file.is_none() {
                " (is the registry's CA configured? a self-signed registry needs its CA file)"
            } else {
                ""
            };
            return RegistryError::Tls { url: self.base.clone(), reason: format!("{}{hint}", reason_of(&e)) };
        }
        if is_connect_failure(&e) {
            RegistryError::Unreachable { url: self.base.clone(), reason: reason_of(&e) }
        } else {
            RegistryError::Transport { url: self.base.clone(), what: what.to_string(), reason: reason_of(&e) }
        }
    }

    fn http_error(&self, mut resp: Response<Body>, what: &str) -> RegistryError {
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            let hint = if self.creds.is_some() {
                "the configured credentials were not accepted".to_string()
            } else {
                "authentication required and no credentials are configured".to_string()
            };
            return RegistryError::Unauthorized { url: self.base.clone(), what: what.to_string(), status, hint };
        }
        let mut body = resp.body_mut().with_config().limit(64 * 1024).read_to_string().unwrap_or_default();
        // Distribution's filesystem driver reports a failed write with the raw errno: 28 is ENOSPC.
        if body.contains("\"Err\":28") {
            body = format!("the registry's storage is full (no space left on device); {body}");
        }
        if body.len() > 400 {
            let mut cut = 400;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
            body.push('…');
        }
        RegistryError::Http { url: self.base.clone(), what: what.to_string(), status, body: body.trim().to_string() }
    }

    fn run(&self, method: &str, url: &str, headers: &[(&str, String)], payload: &mut Payload<'_>) -> Result<Response<Body>, ureq::Error> {
        let mut b = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, v.as_str());
        }
        let cached = {
            let auth = self.auth.lock().unwrap_or_else(|p| p.into_inner());
            auth.get(&auth_key(url)).or_else(|| auth.get("*")).cloned()
        };
        if let Some(a) = cached {
            b = b.header("authorization", a);
        }
        match payload {
            Payload::Empty => {
                let req = b.body(SendBody::none()).map_err(ureq::Error::Http)?;
                self.agent.run(req)
            }
            Payload::Bytes(bytes) => {
                let req = b.header("content-length", bytes.len().to_string()).body(*bytes).map_err(ureq::Error::Http)?;
                self.agent.run(req)
            }
            Payload::Stream { reader, len } => {
                let req = b
                    .header("content-length", len.to_string())
                    .body(SendBody::from_reader(*reader))
                    .map_err(ureq::Error::Http)?;
                self.agent.run(req)
            }
        }
    }

    /// Sends a request; on 401 negotiates auth from WWW-Authenticate (basic, or a bearer token)
    /// and replays it when the body allows.
    fn send(&self, method: &str, url: &str, headers: &[(&str, String)], mut payload: Payload<'_>, what: &str) -> Result<Response<Body>> {
        let resp = self.run_replaying(method, url, headers, &mut payload, what)?;
        if resp.status().as_u16() != 401 || matches!(payload, Payload::Stream { .. }) {
            return Ok(resp);
        }
        let challenge = resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(String::from);
        let Some(challenge) = challenge else { return Ok(resp) };
        let Some(header) = self.negotiate(&challenge, what)? else { return Ok(resp) };
        let key = if header.starts_with("Basic ") { "*".to_string() } else { auth_key(url) };
        self.auth.lock().unwrap_or_else(|p| p.into_inner()).insert(key, header);
        self.run_replaying(method, url, headers, &mut payload, what)
    }

    /// Runs a request; one whose body can be replayed is retried twice after a broken connection
    /// (not after a refused one: that registry is down, and saying so quickly is better).
    fn run_replaying(&self, method: &str, url: &str, headers: &[(&str, String)], payload: &mut Payload<'_>, what: &str) -> Result<Response<Body>> {
        let mut attempt = 0u64;
        loop {
            match self.run(method, url, headers, payload) {
                Ok(r) => return Ok(r),
                Err(e) => {
                    let err = self.map_err(e, what);
                    let replayable = !matches!(payload, Payload::Stream { .. });
                    if attempt < 2 && replayable && matches!(err, RegistryError::Transport { .. }) {
                        attempt += 1;
                        std::thread::sleep(Duration::from_millis(100 * attempt));
                        continue;
                    }
                    return Err(err);
                }
            }
        }
    }

    /// The Authorization header answering a challenge, None when we have nothing to offer.
    fn negotiate(&self, challenge: &str, what: &str) -> Result<Option<String>> {
        let (scheme, params) = parse_challenge(challenge);
        let basic = self.creds.as_ref().map(|c| {
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password)))
        });
        match scheme.as_str() {
            "basic" => Ok(basic),
            "bearer" => {
                let get = |k: &str| params.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.clone());
                let Some(realm) = get("realm") else { return Ok(None) };
                let mut q = Vec::new();
                if let Some(s) = get("service") {
                    q.push(format!("service={}", qenc(&s)));
                }
                if let Some(s) = get("scope") {
                    for part in s.split(' ') {
                        q.push(format!("scope={}", qenc(part)));
                    }
                }
                let url = if q.is_empty() { realm.clone() } else { format!("{realm}?{}", q.join("&")) };
                let mut b = Request::builder().method("GET").uri(&url);
                if let Some(bh) = &basic {
                    b = b.header("authorization", bh.as_str());
                }
                let req = b.body(SendBody::none()).map_err(|e| self.map_err(ureq::Error::Http(e), what))?;
                let mut resp = self.agent.run(req).map_err(|e| self.map_err(e, "token request"))?;
                if !resp.status().is_success() {
                    return Err(self.http_error(resp, &format!("token request for {what}")));
                }
                let v: serde_json::Value = resp
                    .body_mut()
                    .read_to_vec()
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
                    .map_err(|e| RegistryError::Http {
                        url: realm.clone(),
                        what: "token request".into(),
                        status: 200,
                        body: format!("invalid token response: {e}"),
                    })?;
                let token = v.get("token").or_else(|| v.get("access_token")).and_then(|t| t.as_str());
                Ok(token.map(|t| format!("Bearer {t}")))
            }
            _ => Ok(None),
        }
    }

    /// GET /v2/: reachable, and credentials (if any) accepted.
    pub fn ping(&self) -> Result<()> {
        let resp = self.send("GET", &self.url("/v2/"), &[], Payload::Empty, "GET /v2/")?;
        if resp.status().is_success() { Ok(()) } else { Err(self.http_error(resp, "GET /v2/")) }
    }

    /// Size of a blob when the repository has it whole. A server error (5xx) counts as "not
    /// there": a registry killed while committing a blob can leave its link file empty, and
    /// then answers every HEAD of it with 500 (distribution/distribution#4489; docs/registry-modes.md);
    /// uploading the blob again rewrites the link. A registry that is really down fails that
    /// upload with its own error.
    pub fn blob_size(&self, repo: &str, digest: &str) -> Result<Option<u64>> {
        let what = format!("HEAD blob {digest} in {repo}");
        let resp = self.send("HEAD", &self.url(&format!("/v2/{repo}/blobs/{digest}")), &[], Payload::Empty, &what)?;
        match resp.status().as_u16() {
            200 => Ok(Some(
                resp.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0),
            )),
            404 | 500..=599 => Ok(None),
            _ => Err(self.http_error(resp, &what)),
        }
    }

    /// Digest the registry holds under a tag or digest (HEAD), None when absent. A 5xx counts
    /// as absent, as for a blob ([`RegistryClient::blob_size`]): a registry killed while
    /// writing a tag leaves its link file empty and answers 500 for it
    /// (distribution/distribution#4489), and putting the manifest again rewrites the link; a
    /// registry that is really failing fails that put, or the read-back, with its own error.
    /// Only the push asks (whether to put the manifest).
    pub fn manifest_digest(&self, repo: &str, reference: &str) -> Result<Option<String>> {
        let what = format!("HEAD manifest {repo}:{reference}");
        let h = [("accept", oci::MANIFEST_ACCEPT.to_string())];
        let resp = self.send("HEAD", &self.url(&format!("/v2/{repo}/manifests/{reference}")), &h, Payload::Empty, &what)?;
        match resp.status().as_u16() {
            200 => {
                let d = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(String::from);
                match d {
                    Some(d) => Ok(Some(d)),
                    // No header: fetch the bytes and hash them.
                    None => Ok(self.get_manifest(repo, reference)?.map(|m| m.digest)),
                }
            }
            404 | 500..=599 => Ok(None),
            _ => Err(self.http_error(resp, &what)),
        }
    }

    /// GET a manifest or index; the digest is computed from the bytes (and checked when the
    /// reference is a digest).
    pub fn get_manifest(&self, repo: &str, reference: &str) -> Result<Option<FetchedManifest>> {
        let what = format!("GET manifest {repo}:{reference}");
        let h = [("accept", oci::MANIFEST_ACCEPT.to_string())];
        let mut resp = self.send("GET", &self.url(&format!("/v2/{repo}/manifests/{reference}")), &h, Payload::Empty, &what)?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            _ => return Err(self.http_error(resp, &what)),
        }
        let declared = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(String::from);
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(8 * 1024 * 1024)
            .read_to_vec()
            .map_err(|e| self.map_err(e, &what))?;
        let digest = digest::sha256(&bytes);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(RegistryError::DigestMismatch {
                source_desc: format!("{}/{repo}", self.base),
                what: "manifest".into(),
                expected: reference.to_string(),
                actual: digest,
            });
        }
        let kind = oci::kind_of(&bytes, declared.as_deref()).map_err(|e| RegistryError::BadSource {
            source_desc: format!("{}/{repo}:{reference}", self.base),
            reason: e.to_string(),
        })?;
        let media_type = match declared {
            Some(d) if d != "application/json" && !d.is_empty() => d,
            _ => oci::media_type_of(&bytes, kind),
        };
        Ok(Some(FetchedManifest { bytes, media_type, digest }))
    }

    /// PUT the exact manifest bytes; returns the digest the registry reports.
    pub fn put_manifest(&self, repo: &str, reference: &str, bytes: &[u8], media_type: &str) -> Result<String> {
        let what = format!("PUT manifest {repo}:{reference}");
        let h = [("content-type", media_type.to_string())];
        let resp = self.send("PUT", &self.url(&format!("/v2/{repo}/manifests/{reference}")), &h, Payload::Bytes(bytes), &what)?;
        if resp.status().as_u16() != 201 {
            return Err(self.http_error(resp, &what));
        }
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(String::from)
            .unwrap_or_else(|| digest::sha256(bytes)))
    }

    /// Streams a blob from `offset` (Range request when non-zero).
    pub fn get_blob(&self, repo: &str, digest: &str, offset: u64) -> Result<Box<dyn Read + Send + 'static>> {
        let what = format!("GET blob {digest} from {repo}");
        let mut h = Vec::new();
        if offset > 0 {
            h.push(("range", format!("bytes={offset}-")));
        }
        let resp = self.send("GET", &self.url(&format!("/v2/{repo}/blobs/{digest}")), &h, Payload::Empty, &what)?;
        match (resp.status().as_u16(), offset) {
            (200, 0) | (206, _) => Ok(Box::new(resp.into_body().into_reader())),
            (200, _) => {
                // Range ignored: skip the prefix ourselves.
                let mut r = resp.into_body().into_reader();
                io::copy(&mut (&mut r).take(offset), &mut io::sink()).map_err(|e| RegistryError::Transport {
                    url: self.base.clone(),
                    what,
                    reason: e.to_string(),
                })?;
                Ok(Box::new(r))
            }
            _ => Err(self.http_error(resp, &what)),
        }
    }

    /// POST ?mount=&from=: link a blob another repository of this registry already has.
    pub fn mount_blob(&self, repo: &str, digest: &str, from: &str) -> Result<Mount> {
        let what = format!("mount {digest} from {from} into {repo}");
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/?mount={}&from={}", qenc(digest), qenc(from)));
        let resp = self.send("POST", &url, &[], Payload::Empty, &what)?;
        match resp.status().as_u16() {
            201 => Ok(Mount::Mounted),
            202 => Ok(Mount::Upload(self.location(&resp, &what)?)),
            _ => Err(self.http_error(resp, &what)),
        }
    }

    /// POST an upload session; returns its URL.
    pub fn start_upload(&self, repo: &str) -> Result<String> {
        let what = format!("start upload in {repo}");
        let resp = self.send("POST", &self.url(&format!("/v2/{repo}/blobs/uploads/")), &[], Payload::Empty, &what)?;
        if resp.status().as_u16() != 202 {
            return Err(self.http_error(resp, &what));
        }
        self.location(&resp, &what)
    }

    /// GET on an upload URL: (fresh upload URL, next offset). Err when the session is gone.
    pub fn upload_status(&self, location: &str) -> Result<(String, u64)> {
        let what = "upload status".to_string();
        let resp = self.send("GET", location, &[], Payload::Empty, &what)?;
        if resp.status().as_u16() != 204 {
            return Err(self.http_error(resp, &what));
        }
        let next = next_offset(&resp).unwrap_or(0);
        let loc = self.location(&resp, &what).unwrap_or_else(|_| location.to_string());
        Ok((loc, next))
    }

    fn cancel_upload(&self, location: &str) {
        let _ = self.send("DELETE", location, &[], Payload::Empty, "cancel upload");
    }

    /// After a failed chunk: back off, ask the registry where the upload stands, or start over.
    #[allow(clippy::too_many_arguments)]
    fn recover(
        &self,
        repo: &str,
        desc: &oci::Descriptor,
        loc: &mut String,
        offset: &mut u64,
        failures: &mut u32,
        reason: String,
        progress: &mut dyn FnMut(UploadProgress),
    ) -> Result<()> {
        *failures += 1;
        if *failures > self.opts.max_retries {
            return Err(RegistryError::RetriesExhausted { digest: desc.digest.clone(), attempts: *failures, last: reason });
        }
        std::thread::sleep(Duration::from_millis(100u64 << (*failures).min(4)));
        // Distribution 2.8 keeps the bytes of a half-sent chunk but then refuses the session
        // (BLOB_UPLOAD_INVALID, offset mismatch): the blob starts over in a new session. A drop
        // between chunks resumes at the reported Range.
        match self.upload_status(loc) {
            Ok((l, next)) if next <= desc.size => {
                *loc = l;
                *offset = next;
            }
            _ => {
                *loc = self.start_upload(repo)?;
                *offset = 0;
            }
        }
        progress(UploadProgress::Retrying { attempt: *failures, reason, resume_at: *offset });
        Ok(())
    }

    /// Uploads one blob in chunks of `chunk_size`, streaming from `opener` (constant memory).
    /// After a dropped connection it asks the registry where the upload stands and continues
    /// from there, or starts a fresh session if the registry dropped it. Returns bytes sent
    /// (including any re-sent after failures).
    pub fn upload_blob(
        &self,
        repo: &str,
        desc: &oci::Descriptor,
        opener: &dyn BlobOpener,
        session: Option<String>,
        progress: &mut dyn FnMut(UploadProgress),
    ) -> Result<u64> {
        let size = desc.size;
        let mut loc = match session {
            Some(s) => s,
            None => self.start_upload(repo)?,
        };
        let mut offset = 0u64;
        let mut sent = 0u64;
        let mut failures = 0u32;
        loop {
            if offset >= size {
                // Finish: PUT with the digest; the registry verifies the content against it.
                let sep = if loc.contains('?') { '&' } else { '?' };
                let url = format!("{loc}{sep}digest={}", qenc(&desc.digest));
                let what = format!("finish upload of {}", desc.digest);
                match self.send("PUT", &url, &[], Payload::Bytes(&[]), &what) {
                    Ok(resp) if resp.status().as_u16() == 201 => return Ok(sent),
                    Ok(resp) if resp.status().as_u16() == 400 => {
                        let e = self.http_error(resp, &what);
                        self.cancel_upload(&loc);
                        if e.to_string().contains("DIGEST_INVALID") || e.to_string().contains("SIZE_INVALID") {
                            return Err(RegistryError::BlobRejected { image: repo.to_string(), digest: desc.digest.clone() });
                        }
                        return Err(e);
                    }
                    Ok(resp) => return Err(self.http_error(resp, &what)),
                    Err(RegistryError::Transport { reason, .. }) => {
                        if self.blob_size(repo, &desc.digest)?.is_some() {
                            return Ok(sent);
                        }
                        self.recover(repo, desc, &mut loc, &mut offset, &mut failures, reason, progress)?;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let len = (size - offset).min(self.opts.chunk_size.max(1));
            let inner = opener.open_blob(&desc.digest, offset)?;
            let base_offset = offset;
            let mut tick = |n: u64| progress(UploadProgress::Offset(base_offset + n));
            let mut counting = Counting { inner: Box::new(inner.take(len)), n: 0, want: len, source_error: None, tick: &mut tick, since_tick: 0 };
            let headers = [
                ("content-type", "application/octet-stream".to_string()),
                ("content-range", format!("{}-{}", offset, offset + len - 1)),
            ];
            let what = format!("upload of {} at {offset}", desc.digest);
            let res = self.send("PATCH", &loc, &headers, Payload::Stream { reader: &mut counting, len }, &what);
            sent += counting.n;
            let source_error = counting.source_error.take();
            drop(counting);
            if let Some(reason) = source_error {
                self.cancel_upload(&loc);
                return Err(RegistryError::BadSource { source_desc: format!("blob {}", desc.digest), reason });
            }
            match res {
                Ok(resp) if resp.status().as_u16() == 202 => {
                    let next = next_offset(&resp).unwrap_or(offset + len);
                    loc = self.location(&resp, &what)?;
                    offset = next;
                    failures = 0;
                    progress(UploadProgress::Offset(offset));
                }
                Ok(resp) if resp.status().as_u16() == 416 => {
                    let reason = format!("registry rejected range at {offset}");
                    drop(resp);
                    self.recover(repo, desc, &mut loc, &mut offset, &mut failures, reason, progress)?;
                }
                Ok(resp) => return Err(self.http_error(resp, &what)),
                Err(RegistryError::Transport { reason, .. }) => {
                    self.recover(repo, desc, &mut loc, &mut offset, &mut failures, reason, progress)?;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/redis:pull""#,
        );
        assert_eq!(s, "bearer");
        assert_eq!(
            p,
            vec![
                ("realm".into(), "https://auth.docker.io/token".into()),
                ("service".into(), "registry.docker.io".into()),
                ("scope".into(), "repository:library/redis:pull".into()),
            ]
        );
        let (s, p) = parse_challenge(r#"Basic realm="basic-realm""#);
        assert_eq!(s, "basic");
        assert_eq!(p, vec![("realm".into(), "basic-realm".into())]);
    }

    #[test]
    fn credentials_debug_hides_password() {
        let c = Credentials { username: "u".into(), password: "hunter2".into() };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn auth_key_is_the_repository() {
        assert_eq!(auth_key("http://h:5000/v2/riscv64/pause/blobs/uploads/?mount=x&from=y"), "riscv64/pause");
        assert_eq!(auth_key("https://h/v2/a/b/c/manifests/1"), "a/b/c");
        assert_eq!(auth_key("http://h:5000/v2/"), "");
    }

    #[test]
    fn query_encoding() {
        assert_eq!(qenc("repository:a/b:pull,push"), "repository:a/b:pull%2Cpush");
        assert_eq!(qenc("a b"), "a%20b");
    }
}
