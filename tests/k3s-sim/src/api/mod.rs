//! The server's HTTPS endpoint on <node-ip>:6443 and the clients that talk to it (agents,
//! `k3s kubectl`): a cluster CA kept in server/tls (so the token's CA hash stays valid across
//! restarts), a serving certificate for the node's addresses, a tiny HTTP/1.1 server, and
//! JSON helpers. Owns server/tls; knows nothing about cluster semantics.
use crate::paths::Paths;
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

fn ca_params(cn: &str) -> Result<CertificateParams, String> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign];
    Ok(p)
}

pub struct ServerTls {
    pub ca_pem: String,
    pub config: Arc<rustls::ServerConfig>,
}

/// Load (or create once) the cluster CA, then issue a serving cert for `sans`.
pub fn server_tls(paths: &Paths, sans: &[String]) -> Result<ServerTls, String> {
    let dir = paths.tls_dir();
    let (crt, key, cnf) = (dir.join("server-ca.crt"), dir.join("server-ca.key"), dir.join("server-ca.cn"));
    if !crt.exists() || !key.exists() || !cnf.exists() {
        let cn = format!("k3s-server-ca@{}", crate::util::now_ms() / 1000);
        let k = KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = ca_params(&cn)?.self_signed(&k).map_err(|e| e.to_string())?;
        crate::util::write_file(&key, k.serialize_pem().as_bytes(), 0o600).map_err(|e| e.to_string())?;
        crate::util::write_file(&crt, cert.pem().as_bytes(), 0o644).map_err(|e| e.to_string())?;
        crate::util::write_file(&cnf, cn.as_bytes(), 0o644).map_err(|e| e.to_string())?;
    }
    let ca_pem = std::fs::read_to_string(&crt).map_err(|e| e.to_string())?;
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(&key).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let cn = std::fs::read_to_string(&cnf).map_err(|e| e.to_string())?;
    let issuer = Issuer::new(ca_params(cn.trim())?, ca_key);
    let leaf_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut lp = CertificateParams::new(sans.to_vec()).map_err(|e| e.to_string())?;
    lp.distinguished_name.push(DnType::CommonName, "k3s");
    let leaf = lp.signed_by(&leaf_key, &issuer).map_err(|e| e.to_string())?;
    let ca_der = ureq::tls::Certificate::from_pem(ca_pem.as_bytes()).map_err(|e| e.to_string())?.der().to_vec();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone(), CertificateDer::from(ca_der)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .map_err(|e| e.to_string())?;
    Ok(ServerTls { ca_pem, config: Arc::new(config) })
}

/// The CA hash an agent token pins: sha256 of the CA bundle as served at /cacerts.
pub fn ca_hash(ca_pem: &str) -> String {
    crate::util::sha256_hex(ca_pem.as_bytes())
}

#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| e.to_string())
    }
}

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, v: &Value) -> Response {
        Response { status, content_type: "application/json", body: serde_json::to_vec(v).unwrap_or_default() }
    }
    pub fn text(status: u16, s: &str) -> Response {
        Response { status, content_type: "text/plain", body: s.as_bytes().to_vec() }
    }
}

fn read_request<S: Read>(s: S) -> Result<Request, String> {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    let mut parts = line.split_whitespace();
    let method = parts.next().ok_or("empty request")?.to_string();
    let target = parts.next().ok_or("no target")?.to_string();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).map_err(|e| e.to_string())?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")).and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    if len > 64 << 20 {
        return Err("body too large".into());
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok(Request { method, path, query, headers, body })
}

pub type Handler = Arc<dyn Fn(Request) -> Response + Send + Sync>;

fn handle_conn(tcp: TcpStream, cfg: Arc<rustls::ServerConfig>, handler: Handler) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(conn) = rustls::ServerConnection::new(cfg) else { return };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let req = match read_request(&mut tls) {
        Ok(r) => r,
        Err(_) => return,
    };
    let resp = handler(req);
    let reason = match resp.status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        resp.status,
        resp.content_type,
        resp.body.len()
    );
    let _ = tls.write_all(head.as_bytes());
    let _ = tls.write_all(&resp.body);
    let _ = tls.flush();
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

/// Serve HTTPS on `listener` forever, one thread per connection.
pub fn serve(listener: TcpListener, cfg: Arc<rustls::ServerConfig>, handler: Handler) {
    for stream in listener.incoming() {
        let Ok(s) = stream else { continue };
        let (c, h) = (cfg.clone(), handler.clone());
        std::thread::spawn(move || handle_conn(s, c, h));
    }
}

/// A client of the server API, verifying the server against the cluster CA.
pub struct Client {
    pub base: String,
    agent: ureq::Agent,
    authorization: String,
}

impl Client {
    pub fn new(base: &str, ca_pem: &[u8], authorization: String) -> Result<Client, String> {
        let tls = crate::pull::tls_with_roots(ca_pem)?;
        Ok(Client { base: base.trim_end_matches('/').to_string(), agent: crate::pull::http_agent(tls), authorization })
    }
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Vec<u8>), String> {
        let data = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let r = crate::pull::do_request(
            &self.agent,
            method,
            &format!("{}{path}", self.base),
            &[("Authorization", self.authorization.clone()), ("Content-Type", "application/json".into())],
            data.as_deref(),
        )?;
        Ok((r.status, r.body))
    }
}

/// Fetch /cacerts without verification (the agent checks it against the token's CA hash).
pub fn fetch_cacerts(base: &str) -> Result<String, String> {
    let agent = crate::pull::http_agent(ureq::tls::TlsConfig::builder().disable_verification(true).build());
    let r = crate::pull::do_request(&agent, "GET", &format!("{}/cacerts", base.trim_end_matches('/')), &[], None)?;
    if r.status != 200 {
        return Err(format!("{}/cacerts: {} ", base, r.status));
    }
    String::from_utf8(r.body).map_err(|e| e.to_string())
}
