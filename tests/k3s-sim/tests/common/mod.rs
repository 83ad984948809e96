//! Shared test helpers: a real Debian docker-registry on a unique loopback address, unique
//! temp dirs, and waiting. Parallel tests never collide: addresses come from pid + counter.
#![allow(dead_code)]
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique loopback address for this test process: 127.77.<pid-derived>.<counter>.
pub fn unique_ip() -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    format!("127.{}.{}.{}", 100 + (pid / 62500) % 100, (pid / 250) % 250, 1 + (pid % 250 + n * 7) % 250)
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let d = std::env::temp_dir().join(format!("k3s-sim-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn wait_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A real docker-registry (Distribution 2.8) serving plain HTTP on a loopback address.
pub struct Registry {
    pub ip: String,
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
}

impl Registry {
    pub fn start() -> Registry {
        Self::start_with(None)
    }
    /// `htpasswd`: path of an htpasswd file to require basic auth.
    pub fn start_with(htpasswd: Option<&Path>) -> Registry {
        let ip = unique_ip();
        let port = 5000;
        let dir = temp_dir("registry");
        let auth = match htpasswd {
            Some(p) => format!("auth:\n  htpasswd:\n    realm: rvlab\n    path: {}\n", p.display()),
            None => String::new(),
        };
        let cfg = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {ip}:{port}\n{auth}",
            dir.join("data").display()
        );
        std::fs::write(dir.join("config.yml"), cfg).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry is installed (Debian package docker-registry)");
        let r = Registry { ip, port, dir, child };
        let addr = format!("{}:{}", r.ip, r.port);
        wait_until("docker-registry to listen", Duration::from_secs(30), || TcpStream::connect(&addr).ok());
        r
    }
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.ip, self.port)
    }
    pub fn authority(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
