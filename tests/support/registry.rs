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
    pub auth: bool,
    pub tls: bool,
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
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .expect("start /usr/bin/docker-registry");
        let mut r = TestRegistry { ip, port, dir, tls: opts.tls, creds, ca, cert_dir, child };
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

/// When the proxy cuts a connection (once; later traffic passes through).
#[derive(Debug, Clone, Copy)]
pub enum CutAt {
    /// In the middle of whatever is being sent once this many client bytes went through.
    Bytes(u64),
    /// At the start of the first request (nothing of it forwarded) after this many bytes:
    /// an idle keep-alive connection dropped between two requests.
    RequestStartAfter(u64),
}

/// A TCP proxy on its own loopback address in front of a registry that cuts one client
/// connection (both directions) at the point given by `CutAt`.
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
        let (c2, s2) = (cuts.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                let (armed, cuts) = (armed.clone(), c2.clone());
                std::thread::spawn(move || {
                    let (mut cr, mut sw) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let (mut sr, mut cw) = (server, client);
                    let back = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut sr, &mut cw);
                        let _ = cw.shutdown(Shutdown::Both);
                    });
                    let forwarded = AtomicU64::new(0);
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match cr.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let before = forwarded.fetch_add(n as u64, Ordering::SeqCst);
                        let hit = match cut {
                            CutAt::Bytes(k) => before + n as u64 >= k,
                            CutAt::RequestStartAfter(k) => {
                                before >= k && [&b"PATCH "[..], b"PUT ", b"POST ", b"GET ", b"HEAD "].iter().any(|m| buf[..n].starts_with(m))
                            }
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
