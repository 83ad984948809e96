//! Test fixture: a real Distribution registry (/usr/bin/docker-registry) on its own loopback
//! address (127.224-254.x.y, derived from the test process id and a counter, never shared) with a
//! temp storage directory; optional htpasswd auth (bcrypt, `htpasswd -B`) and optional TLS (a CA
//! and a server certificate for the IP made with the openssl CLI). Killed on Drop. Also a tiny
//! TCP proxy that can cut a connection once after N bytes, and skopeo helpers.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use rvcluster::registry::{ClientOptions, Credentials};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A loopback address no other test process uses: 127.(224 + (pid>>10)%31).(pid>>2).((pid&3)*64 + n).
pub fn unique_ip() -> String {
    let pid = std::process::id();
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    assert!(n < 64, "more than 64 loopback addresses in one test process");
    let a = 224 + ((pid >> 10) % 31);
    let b = (pid >> 2) & 0xff;
    let c = ((pid & 3) * 64) + n;
    format!("127.{a}.{b}.{c}")
}

#[derive(Debug, Clone, Default)]
pub struct Opts {
    /// htpasswd (bcrypt) basic auth.
    pub auth: bool,
    pub tls: bool,
    /// Token auth instead: the registry answers `WWW-Authenticate: Bearer` and trusts JWTs (RS256,
    /// x5c) from a small token server of this fixture that checks the same basic credentials.
    pub token: bool,
    /// With `token`: like Docker Hub, anonymous callers get pull-only tokens.
    pub anonymous_pull: bool,
}

pub struct TestRegistry {
    pub ip: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub tls: bool,
    /// (user, password) when auth is on.
    pub creds: Option<(String, String)>,
    /// CA certificate (TLS only) and a directory holding just it as ca.crt (for skopeo --cert-dir).
    pub ca: Option<PathBuf>,
    pub cert_dir: Option<PathBuf>,
    child: Child,
    token_server: Option<TokenServer>,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn make_tls(dir: &Path, ip: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = dir.join("ca.key");
    let ca = dir.join("ca.crt");
    run(Command::new("openssl").args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]).arg("-keyout").arg(&ca_key).arg("-out").arg(&ca).args([
        "-days",
        "3650",
        "-subj",
        "/CN=rvcluster test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]));
    let key = dir.join("server.key");
    let csr = dir.join("server.csr");
    let crt = dir.join("server.crt");
    run(Command::new("openssl").args(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]).arg("-keyout").arg(&key).arg("-out").arg(&csr).args(["-subj", &format!("/CN={ip}")]));
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        format!("subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    run(Command::new("openssl").args(["x509", "-req", "-days", "365"]).arg("-in").arg(&csr).arg("-CA").arg(&ca).arg("-CAkey").arg(&ca_key).arg("-CAcreateserial").arg("-out").arg(&crt).arg("-extfile").arg(&ext));
    (ca, crt, key)
}

impl TestRegistry {
    pub fn start(opts: Opts) -> TestRegistry {
        let ip = unique_ip();
        let port = 5000;
        let dir = tempfile::Builder::new().prefix("rvc-registry-").tempdir().unwrap();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {ip}:{port}\n  secret: rvcluster-test-secret\n",
            dir.path().join("data").display()
        );
        let (mut ca, mut cert_dir) = (None, None);
        if opts.tls {
            let (c, crt, key) = make_tls(dir.path(), &ip);
            cfg.push_str(&format!("  tls:\n    certificate: {}\n    key: {}\n", crt.display(), key.display()));
            let cd = dir.path().join("certs.d");
            std::fs::create_dir_all(&cd).unwrap();
            std::fs::copy(&c, cd.join("ca.crt")).unwrap();
            ca = Some(c);
            cert_dir = Some(cd);
        }
        let mut creds = None;
        if opts.auth {
            let (u, p) = ("rvc".to_string(), format!("pw-{}-{}", std::process::id(), COUNTER.load(Ordering::SeqCst)));
            let line = run(Command::new("htpasswd").args(["-Bbn", &u, &p]));
            let hp = dir.path().join("htpasswd");
            std::fs::write(&hp, line.trim_end().to_string() + "\n").unwrap();
            cfg.push_str(&format!("auth:\n  htpasswd:\n    realm: rvcluster-test\n    path: {}\n", hp.display()));
            creds = Some((u, p));
        }
        let mut token_server = None;
        if opts.token {
            assert!(!opts.auth, "token and htpasswd auth are exclusive");
            let (u, p) = ("rvc".to_string(), format!("tok-{}-{}", std::process::id(), COUNTER.load(Ordering::SeqCst)));
            let ts = TokenServer::start(dir.path(), u.clone(), p.clone(), opts.anonymous_pull);
            cfg.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: rvcluster-test\n    issuer: rvcluster-test-issuer\n    rootcertbundle: {}\n",
                ts.realm(),
                ts.cert.display()
            ));
            creds = Some((u, p));
            token_server = Some(ts);
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .expect("start /usr/bin/docker-registry");
        let mut r = TestRegistry { ip, port, dir, tls: opts.tls, creds, ca, cert_dir, child, token_server };
        // Wait until it listens (or dies: then show its log).
        loop {
            if let Some(st) = r.child.try_wait().unwrap() {
                panic!("docker-registry exited ({st}): {}", r.log());
            }
            if TcpStream::connect((r.ip.as_str(), r.port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    pub fn host_port(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub fn endpoint(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.host_port())
    }

    pub fn credentials(&self) -> Option<Credentials> {
        self.creds.as_ref().map(|(u, p)| Credentials { username: u.clone(), password: p.clone() })
    }

    /// Options that work for this registry (CA and credentials when configured).
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions { ca_file: self.ca.clone(), credentials: self.credentials(), ..Default::default() }
    }

    fn skopeo_base(&self, cmd: &mut Command) {
        if self.tls {
            cmd.arg(format!("--cert-dir={}", self.cert_dir.as_ref().unwrap().display()));
        } else {
            cmd.arg("--tls-verify=false");
        }
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--creds={u}:{p}"));
        }
    }

    /// `skopeo inspect --override-arch riscv64 docker://HOST/REPO:REF`: the JSON, or stderr on failure.
    pub fn skopeo_inspect(&self, repo: &str, reference: &str) -> Result<serde_json::Value, String> {
        self.skopeo_inspect_with(repo, reference, true)
    }

    pub fn skopeo_inspect_with(&self, repo: &str, reference: &str, with_creds: bool) -> Result<serde_json::Value, String> {
        let mut cmd = Command::new("skopeo");
        cmd.args(["--override-arch", "riscv64", "--override-os", "linux", "inspect"]);
        if with_creds {
            self.skopeo_base(&mut cmd);
        } else if self.tls {
            cmd.arg(format!("--cert-dir={}", self.cert_dir.as_ref().unwrap().display()));
        } else {
            cmd.arg("--tls-verify=false");
        }
        let sep = if reference.starts_with("sha256:") { "@" } else { ":" };
        cmd.arg(format!("docker://{}/{repo}{sep}{reference}", self.host_port()));
        let out = cmd.output().expect("run skopeo");
        if out.status.success() {
            Ok(serde_json::from_slice(&out.stdout).expect("skopeo prints JSON"))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `skopeo copy SRC docker://HOST/REPO:TAG` (for comparisons and for seeding other images).
    pub fn skopeo_copy(&self, src: &str, repo: &str, tag: &str) -> Result<(), String> {
        let mut cmd = Command::new("skopeo");
        cmd.args(["--override-arch", "riscv64", "--override-os", "linux", "copy", "-q"]);
        if self.tls {
            cmd.arg(format!("--dest-cert-dir={}", self.cert_dir.as_ref().unwrap().display()));
        } else {
            cmd.arg("--dest-tls-verify=false");
        }
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        cmd.arg(src).arg(format!("docker://{}/{repo}:{tag}", self.host_port()));
        let out = cmd.output().expect("run skopeo");
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
    }
}

impl TestRegistry {
    /// `skopeo copy --all SRC docker://HOST/REPO:TAG`: every platform, the index kept (seeding
    /// a stand-in for an upstream registry with multi-arch images).
    pub fn skopeo_copy_all(&self, src: &str, repo: &str, tag: &str) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "-q", "--all", "--preserve-digests"]);
        if self.tls {
            cmd.arg(format!("--dest-cert-dir={}", self.cert_dir.as_ref().unwrap().display()));
        } else {
            cmd.arg("--dest-tls-verify=false");
        }
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        cmd.arg(src).arg(format!("docker://{}/{repo}:{tag}", self.host_port()));
        run(&mut cmd);
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal token server (Docker token auth): GET /token?service=..&scope=.. with the right basic
/// credentials returns a JWT granting exactly the requested scopes, signed RS256 by a key whose
/// self-signed certificate is the registry's rootcertbundle (and sent in the x5c header).
pub struct TokenServer {
    pub ip: String,
    pub port: u16,
    pub cert: PathBuf,
    pub issued: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
}

fn b64url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TokenServer {
    fn start(dir: &Path, user: String, password: String, anonymous_pull: bool) -> TokenServer {
        use base64::Engine as _;
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        run(Command::new("openssl").args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=rvcluster token issuer"]).arg("-keyout").arg(&key).arg("-out").arg(&cert));
        let der = Command::new("openssl").args(["x509", "-outform", "DER"]).arg("-in").arg(&cert).output().unwrap().stdout;
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
        let ip = unique_ip();
        let listener = TcpListener::bind((ip.as_str(), 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let issued = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (issued2, stop2) = (issued.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut c) = conn else { continue };
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req).into_owned();
                let target = text.split_whitespace().nth(1).unwrap_or("").to_string();
                let authorized = text.lines().any(|l| {
                    l.split_once(':').is_some_and(|(k, v)| k.eq_ignore_ascii_case("authorization") && v.trim() == expected)
                });
                let response = if !authorized && !anonymous_pull {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                } else {
                    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
                    let mut access = Vec::new();
                    for kv in query.split('&') {
                        if let Some(v) = kv.strip_prefix("scope=") {
                            let v = pct_decode(v);
                            let mut parts = v.splitn(3, ':').collect::<Vec<_>>();
                            if parts.len() == 3 {
                                let actions = parts.pop().unwrap();
                                let name = parts.pop().unwrap();
                                let typ = parts.pop().unwrap();
                                let acts: Vec<String> = actions
                                    .split(',')
                                    .filter(|a| authorized || *a == "pull")
                                    .map(|a| format!("\"{a}\""))
                                    .collect();
                                access.push(format!(r#"{{"type":"{typ}","name":"{name}","actions":[{}]}}"#, acts.join(",")));
                            }
                        }
                    }
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
                    let n = issued2.fetch_add(1, Ordering::SeqCst);
                    let header = format!(r#"{{"alg":"RS256","typ":"JWT","x5c":["{x5c}"]}}"#);
                    let claims = format!(
                        r#"{{"iss":"rvcluster-test-issuer","sub":"{user}","aud":"rvcluster-test","exp":{},"nbf":{},"iat":{},"jti":"t{n}","access":[{}]}}"#,
                        now + 3600,
                        now - 60,
                        now - 60,
                        access.join(",")
                    );
                    let signing_input = format!("{}.{}", b64url(header.as_bytes()), b64url(claims.as_bytes()));
                    let mut sign = Command::new("openssl")
                        .args(["dgst", "-sha256", "-sign"])
                        .arg(&key)
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .spawn()
                        .unwrap();
                    sign.stdin.take().unwrap().write_all(signing_input.as_bytes()).unwrap();
                    let sig = sign.wait_with_output().unwrap().stdout;
                    let body = format!(r#"{{"token":"{signing_input}.{}"}}"#, b64url(&sig));
                    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                };
                let _ = c.write_all(response.as_bytes());
            }
        });
        TokenServer { ip, port, cert, issued, stop }
    }

    pub fn realm(&self) -> String {
        format!("http://{}:{}/token", self.ip, self.port)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect((self.ip.as_str(), self.port));
    }
}

impl TestRegistry {
    /// Tokens issued so far by the token server (token auth only).
    pub fn tokens_issued(&self) -> u32 {
        self.token_server.as_ref().map(|t| t.issued.load(Ordering::SeqCst)).unwrap_or(0)
    }
}

/// When the proxy cuts a connection (once; later traffic passes through).
#[derive(Debug, Clone, Copy)]
pub enum CutAt {
    /// In the middle of whatever is being sent once this many client bytes went through.
    Bytes(u64),
    /// At the start of the first request (nothing of it forwarded) after this many bytes:
    /// an idle keep-alive connection dropped between two requests.
    RequestStartAfter(u64),
    /// As `RequestStartAfter`, but only at a PATCH carrying at least 1 MiB (a chunk of a layer,
    /// not a small request of another upload thread).
    BigUploadStartAfter(u64),
}

/// A request head for `PATCH` with `Content-Length` >= 1 MiB.
fn is_big_patch(head: &[u8]) -> bool {
    if !head.starts_with(b"PATCH ") {
        return false;
    }
    let text = String::from_utf8_lossy(&head[..head.len().min(8192)]).to_ascii_lowercase();
    text.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|len| len >= 1 << 20)
}

/// A TCP proxy on its own loopback address in front of a registry that cuts one client
/// connection (both directions) at the point given by `CutAt`, counting client bytes over all
/// connections.
pub struct CutProxy {
    pub ip: String,
    pub port: u16,
    pub cuts: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
}

impl CutProxy {
    pub fn start(upstream: String, cut: CutAt) -> CutProxy {
        let ip = unique_ip();
        let listener = TcpListener::bind((ip.as_str(), 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let cuts = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let armed = Arc::new(AtomicBool::new(true));
        // Client bytes forwarded over all connections (the client may spread requests over several).
        let forwarded = Arc::new(AtomicU64::new(0));
        let (c2, s2) = (cuts.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                let (armed, cuts, forwarded) = (armed.clone(), c2.clone(), forwarded.clone());
                std::thread::spawn(move || {
                    let (mut cr, mut sw) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let (mut sr, mut cw) = (server, client);
                    let back = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut sr, &mut cw);
                        let _ = cw.shutdown(Shutdown::Both);
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut mine = 0u64;
                    loop {
                        let n = match cr.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let before = forwarded.fetch_add(n as u64, Ordering::SeqCst);
                        mine += n as u64;
                        let hit = match cut {
                            // Only a bulk connection is cut (not a small request racing alongside).
                            CutAt::Bytes(k) => before + n as u64 >= k && mine >= 1 << 20,
                            CutAt::RequestStartAfter(k) => {
                                before >= k && [&b"PATCH "[..], b"PUT ", b"POST ", b"GET ", b"HEAD "].iter().any(|m| buf[..n].starts_with(m))
                            }
                            CutAt::BigUploadStartAfter(k) => before >= k && is_big_patch(&buf[..n]),
                        };
                        if hit && armed.swap(false, Ordering::SeqCst) {
                            cuts.fetch_add(1, Ordering::SeqCst);
                            let _ = cr.shutdown(Shutdown::Both);
                            let _ = sw.shutdown(Shutdown::Both);
                            break;
                        }
                        if sw.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = sw.shutdown(Shutdown::Write);
                    let _ = back.join();
                });
            }
        });
        CutProxy { ip, port, cuts, stop }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.ip, self.port)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect((self.ip.as_str(), self.port));
    }
}

/// Peak resident memory of this process (VmHWM) in bytes.
pub fn vm_hwm() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/self/status");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}
