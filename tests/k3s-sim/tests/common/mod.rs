//! Shared test helpers: a real Debian docker-registry on a unique loopback address, unique
//! temp dirs, and waiting. Parallel tests never collide: addresses come from pid + counter.
#![allow(dead_code)]
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A loopback address no other test process uses (k3s-sim's block is 127.100-163):
/// 127.(100 + (pid>>10)%64).(pid>>2 & 255).((pid&3)*64 + n + 1), injective for pid mod 65536.
pub fn unique_ip() -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    assert!(n < 63, "more than 63 loopback addresses in one test process");
    let pid = std::process::id();
    format!("127.{}.{}.{}", 100 + ((pid >> 10) % 64), (pid >> 2) & 0xff, (pid & 3) * 64 + n + 1)
}

static DIRS: AtomicU32 = AtomicU32::new(0);

pub fn temp_dir(tag: &str) -> PathBuf {
    let n = DIRS.fetch_add(1, Ordering::SeqCst);
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
        Self::start_full(unique_ip(), htpasswd, None)
    }
    /// `tls`: (certificate, key) PEM files to serve HTTPS.
    pub fn start_full(ip: String, htpasswd: Option<&Path>, tls: Option<(&Path, &Path)>) -> Registry {
        let port = 5000;
        let dir = temp_dir("registry");
        let auth = match htpasswd {
            Some(p) => format!("auth:\n  htpasswd:\n    realm: rvlab\n    path: {}\n", p.display()),
            None => String::new(),
        };
        let tls = match tls {
            Some((c, k)) => format!("  tls:\n    certificate: {}\n    key: {}\n", c.display(), k.display()),
            None => String::new(),
        };
        let cfg = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {ip}:{port}\n{tls}{auth}",
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

/// One simulated board: a private root directory (the test-only RVLAB_SIM_TEST_ROOT), its own
/// loopback address, and the k3s binary running as server or agent.
pub struct SimNode {
    pub name: String,
    pub ip: String,
    pub root: PathBuf,
    child: Option<Child>,
    runs: u32,
    /// the k3s executable to run (another "release" made by `stamp_version`); default K3S
    pub bin: Option<PathBuf>,
}

pub const K3S: &str = env!("CARGO_BIN_EXE_k3s");

impl SimNode {
    pub fn new(name: &str, upstream: &Registry) -> SimNode {
        let ip = unique_ip();
        let root = temp_dir(&format!("node-{name}"));
        let n = SimNode { name: name.into(), ip: ip.clone(), root, child: None, runs: 0, bin: None };
        n.write("/etc/rvlab/sim.conf", &format!("ready-delay-ms 200\nsync-ms 100\nbackoff-ms 300\nnode-grace-ms 5000\nnode-ip {ip}\n"));
        n.write("/etc/rvlab/upstream.conf", &format!("docker.io {}\n", upstream.url()));
        n.write("/etc/os-release", "NAME=\"openEuler\"\nVERSION=\"24.03 (LTS)\"\nID=\"openEuler\"\nPRETTY_NAME=\"openEuler 24.03 (LTS)\"\n");
        n
    }
    pub fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }
    pub fn write(&self, abs: &str, content: &str) {
        let p = self.path(abs);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    pub fn read(&self, abs: &str) -> String {
        std::fs::read_to_string(self.path(abs)).unwrap_or_default()
    }
    fn spawn(&mut self, args: &[&str], env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "already running");
        self.runs += 1;
        let log = std::fs::File::create(self.root.join(format!("k3s-{}.log", self.runs))).unwrap();
        let mut cmd = Command::new(self.bin.clone().unwrap_or(PathBuf::from(K3S)));
        cmd.args(args).env("RVLAB_SIM_TEST_ROOT", &self.root).env_remove("NOTIFY_SOCKET").stdout(Stdio::null()).stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().unwrap());
    }
    pub fn start_server(&mut self, args: &[&str]) {
        let name = self.name.clone();
        let mut a = vec!["server", "--node-name", name.as_str()];
        a.extend_from_slice(args);
        self.spawn(&a, &[]);
        let kc = self.path("/etc/rancher/k3s/k3s.yaml");
        wait_until("k3s server to write its kubeconfig and answer", Duration::from_secs(60), || {
            (kc.exists() && self.kubectl(&["get", "nodes"]).0 == 0).then_some(())
        });
    }
    pub fn start_agent(&mut self, env: &[(&str, &str)]) {
        let name = self.name.clone();
        self.spawn(&["agent", "--node-name", &name], env);
    }
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    pub fn restart_server(&mut self, args: &[&str]) {
        self.stop();
        self.start_server(args);
    }
    /// Wait for the process to exit on its own; its exit code.
    pub fn wait_exit(&mut self) -> i32 {
        let mut c = self.child.take().expect("running");
        c.wait().unwrap().code().unwrap_or(-1)
    }
    pub fn log(&self) -> String {
        (1..=self.runs).map(|i| std::fs::read_to_string(self.root.join(format!("k3s-{i}.log"))).unwrap_or_default()).collect()
    }
    pub fn kubectl(&self, args: &[&str]) -> (i32, String, String) {
        let o = Command::new(K3S).arg("kubectl").args(args).env("RVLAB_SIM_TEST_ROOT", &self.root).env_remove("KUBECONFIG").output().unwrap();
        (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
    }
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let (code, out, err) = self.kubectl(&a);
        assert_eq!(code, 0, "kubectl {a:?} failed: {err}");
        serde_json::from_str(&out).unwrap()
    }
    pub fn pods(&self) -> Vec<serde_json::Value> {
        self.json(&["get", "pods", "-A"])["items"].as_array().cloned().unwrap_or_default()
    }
    pub fn token(&self) -> String {
        self.read("/var/lib/rancher/k3s/server/token").trim().to_string()
    }
    pub fn url(&self) -> String {
        format!("https://{}:6443", self.ip)
    }
}

impl Drop for SimNode {
    fn drop(&mut self) {
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.root);
        } else {
            eprintln!("--- log of {} ({}) ---\n{}", self.name, self.root.display(), self.log());
        }
    }
}

pub fn pod_named<'a>(pods: &'a [serde_json::Value], prefix: &str) -> Option<&'a serde_json::Value> {
    pods.iter().find(|p| p["metadata"]["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
}

pub fn waiting_reason(pod: &serde_json::Value) -> Option<String> {
    pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].as_str().map(str::to_string)
}

pub fn is_ready(pod: &serde_json::Value) -> bool {
    pod["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Push riscv64-capable copies of catalog images to a mirror (under `prefix` + repository).
pub fn port_to_riscv(mirror: &Registry, images: &[&str], prefix: &str) {
    use k3s_sim::upstream::{self, Format, ImageSpec, Platform};
    for img in images {
        let (repo, tag) = img.rsplit_once(':').unwrap();
        let spec = ImageSpec {
            repository: format!("{prefix}{repo}"),
            tag: tag.into(),
            format: Format::OciIndex,
            platforms: vec![Platform::parse("linux/riscv64").unwrap()],
        };
        upstream::push(&mirror.url(), &spec.repository, &upstream::build(&spec)).unwrap();
    }
}
