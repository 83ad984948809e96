//! Test fixture: a real OpenSSH sshd (/usr/sbin/sshd) on its own loopback address
//! (127.192-223.x.y, derived from the test process id and a counter, never shared), with its own
//! temp host keys, authorized_keys and port. Killed on Drop. Also client key generation with
//! ssh-keygen. Needs root (CI runs as root).
#![allow(dead_code)]

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rvcluster::transport::{AuthConfig, Become, HostKeyPolicy, Target};

static COUNTER: AtomicU32 = AtomicU32::new(0);
static START_LOCK: Mutex<()> = Mutex::new(());

/// A loopback address no other test process uses: 127.(192 + pid>>10).(pid>>2).((pid&3)*64 + n).
pub fn unique_ip() -> String {
    let pid = std::process::id();
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    assert!(
        n < 64,
        "more than 64 loopback addresses in one test process"
    );
    let a = 192 + ((pid >> 10) % 32);
    let b = (pid >> 2) & 0xff;
    let c = ((pid & 3) * 64) + n;
    format!("127.{a}.{b}.{c}")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client key pair made by ssh-keygen (OpenSSH format).
pub struct ClientKey {
    _dir: tempfile::TempDir,
    pub private: PathBuf,
    /// `type base64 comment`
    pub public: String,
}

/// `kind`: ed25519, rsa, ecdsa. With a passphrase the private key is encrypted.
pub fn client_key(kind: &str, passphrase: Option<&str>) -> ClientKey {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join(format!("id_{kind}"));
    let mut cmd = Command::new("ssh-keygen");
    cmd.args([
        "-q",
        "-t",
        kind,
        "-C",
        "rvcluster-test",
        "-N",
        passphrase.unwrap_or(""),
        "-f",
    ])
    .arg(&private);
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    run(&mut cmd);
    let public = std::fs::read_to_string(private.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string();
    ClientKey {
        _dir: dir,
        private,
        public,
    }
}

pub struct SshdOptions {
    /// Host key types: ed25519, rsa, ecdsa.
    pub host_key_types: Vec<&'static str>,
    pub authorized_keys: Vec<String>,
    pub extra_config: String,
}

impl Default for SshdOptions {
    fn default() -> Self {
        SshdOptions {
            host_key_types: vec!["ed25519"],
            authorized_keys: vec![],
            extra_config: String::new(),
        }
    }
}

pub struct Sshd {
    pub ip: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    opts_types: Vec<&'static str>,
    extra: String,
}

impl Sshd {
    /// An sshd with one ed25519 host key that accepts `key` for root.
    pub fn with_key(key: &ClientKey) -> Sshd {
        Sshd::start(SshdOptions {
            authorized_keys: vec![key.public.clone()],
            ..Default::default()
        })
    }

    pub fn start(opts: SshdOptions) -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        for t in &opts.host_key_types {
            gen_host_key(dir.path(), t);
        }
        std::fs::write(
            dir.path().join("authorized_keys"),
            opts.authorized_keys.join("\n") + "\n",
        )
        .unwrap();
        let ip = unique_ip();
        let mut sshd = Sshd {
            ip,
            port: 0,
            dir,
            child: None,
            opts_types: opts.host_key_types.clone(),
            extra: opts.extra_config,
        };
        let extra = sshd.extra.clone();
        sshd.spawn(&extra, None);
        sshd
    }

    /// An sshd on a given address and port (e.g. port 22 of an address where something else
    /// runs, to see whether anything tries SSH there: `extra_config` "LogLevel VERBOSE" logs
    /// every connection as `Connection from ...`).
    pub fn start_at(ip: &str, port: u16, opts: SshdOptions) -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        for t in &opts.host_key_types {
            gen_host_key(dir.path(), t);
        }
        std::fs::write(dir.path().join("authorized_keys"), opts.authorized_keys.join("\n") + "\n").unwrap();
        let mut sshd = Sshd { ip: ip.to_string(), port, dir, child: None, opts_types: opts.host_key_types.clone(), extra: opts.extra_config };
        let extra = sshd.extra.clone();
        sshd.spawn(&extra, Some(port));
        sshd
    }

    fn spawn(&mut self, extra: &str, fixed_port: Option<u16>) {
        let _guard = START_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let port = fixed_port.unwrap_or_else(|| {
                TcpListener::bind((self.ip.as_str(), 0))
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            });
            let d = self.dir.path();
            // sshd keeps the first value of a keyword: the test's extra lines come first.
            let mut cfg = extra.to_string();
            cfg += &format!(
                "ListenAddress {ip}:{port}\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 UsePAM no\nStrictModes no\nPubkeyAuthentication yes\nAllowTcpForwarding yes\n\
                 LogLevel ERROR\nMaxStartups 100:30:200\nSubsystem sftp /usr/lib/openssh/sftp-server\n",
                ip = self.ip,
                d = d.display()
            );
            for t in &self.opts_types {
                cfg.push_str(&format!("HostKey {}/ssh_host_{t}_key\n", d.display()));
            }
            std::fs::write(d.join("sshd_config"), cfg).unwrap();
            let log = std::fs::File::create(d.join("sshd.log")).unwrap();
            let mut child = Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(d.join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start /usr/sbin/sshd");
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect((self.ip.as_str(), port)).is_ok() {
                    self.port = port;
                    self.child = Some(child);
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let log = std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default();
            assert!(
                Instant::now() < deadline && fixed_port.is_none(),
                "sshd did not start: {log}"
            );
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Simulate a re-flashed board: new host keys, same address and port.
    pub fn reflash(&mut self) {
        self.stop();
        for t in self.opts_types.clone() {
            let _ = std::fs::remove_file(self.dir.path().join(format!("ssh_host_{t}_key")));
            let _ = std::fs::remove_file(self.dir.path().join(format!("ssh_host_{t}_key.pub")));
            gen_host_key(self.dir.path(), t);
        }
        let (port, extra) = (self.port, self.extra.clone());
        self.spawn(&extra, Some(port));
    }

    /// `ssh-ed25519 AAAA...` of one of the host keys.
    pub fn host_key(&self, kind: &str) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join(format!("ssh_host_{kind}_key.pub")))
                .unwrap();
        let mut w = text.split_whitespace();
        format!("{} {}", w.next().unwrap(), w.next().unwrap())
    }

    /// The fingerprint `ssh-keygen -lf` prints for one of the host keys.
    pub fn fingerprint(&self, kind: &str) -> String {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.dir.path().join(format!("ssh_host_{kind}_key.pub")))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    }

    /// A known_hosts line for one of the host keys.
    pub fn known_hosts_line(&self, kind: &str) -> String {
        format!("[{}]:{} {}\n", self.ip, self.port, self.host_key(kind))
    }

    /// A root target with `key`, 5 s connect timeout.
    pub fn target(&self, name: &str, key: &ClientKey) -> Target {
        let mut t = Target::new(name, self.ip.clone());
        t.port = self.port;
        t.identity_files = vec![key.private.clone()];
        t.connect_timeout = Duration::from_secs(5);
        t.privilege = Become::None;
        t
    }

    /// The sshd's log (for assertion messages).
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("sshd.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn gen_host_key(dir: &Path, kind: &str) {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", "", "-C", "", "-f"])
        .arg(dir.join(format!("ssh_host_{kind}_key")));
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    run(&mut cmd);
}

/// A policy that only consults the given project file (never the real ~/.ssh/known_hosts).
pub fn policy_with(known_hosts: &Path) -> HostKeyPolicy {
    HostKeyPolicy {
        project_known_hosts: Some(known_hosts.to_path_buf()),
        user_known_hosts: None,
        accept_new: false,
    }
}

/// A project known_hosts file in a temp dir that trusts `sshd`'s `kind` key.
pub fn trusted(sshd: &Sshd, kind: &str) -> (tempfile::TempDir, HostKeyPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("known_hosts");
    std::fs::write(&kh, sshd.known_hosts_line(kind)).unwrap();
    let p = policy_with(&kh);
    (dir, p)
}

/// Credentials from nothing but the target's identity files (no agent, no HOME, no prompt).
pub fn auth_files_only() -> AuthConfig {
    AuthConfig {
        home: None,
        agent_socket: None,
        passphrase: None,
        prompt: false,
        ..AuthConfig::default()
    }
}

/// A real non-root login user whose sudo rule wants a password, for privilege tests:
/// `rvcluster-sudo` (home created), password [`SUDO_USER_PASSWORD`], sudoers
/// `rvcluster-sudo ALL=(ALL:ALL) ALL`. Idempotent and safe across test processes (file lock).
/// Login is by key only (the fixture's sshd never allows passwords).
pub const SUDO_USER: &str = "rvcluster-sudo";
pub const SUDO_USER_PASSWORD: &str = "rv-become-Pa55 'word' $(x)";

pub fn ensure_sudo_user() {
    let lock = std::fs::File::create("/tmp/rvcluster-sudo-user.lock").unwrap();
    lock.lock().unwrap();
    let exists = Command::new("id")
        .arg(SUDO_USER)
        .output()
        .unwrap()
        .status
        .success();
    if !exists {
        run(Command::new("useradd").args(["-m", "-s", "/bin/sh", SUDO_USER]));
    }
    let mut chpasswd = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        chpasswd.stdin.as_mut().unwrap(),
        format!("{SUDO_USER}:{SUDO_USER_PASSWORD}\n").as_bytes(),
    )
    .unwrap();
    drop(chpasswd.stdin.take());
    assert!(chpasswd.wait().unwrap().success());
    let rule = "/etc/sudoers.d/rvcluster-sudo";
    let tmp = format!("{rule}.tmp{}", std::process::id());
    std::fs::write(&tmp, format!("{SUDO_USER} ALL=(ALL:ALL) ALL\n")).unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o440)).unwrap();
    run(Command::new("visudo").args(["-c", "-q", "-f", &tmp]));
    std::fs::rename(&tmp, rule).unwrap();
    lock.unlock().unwrap();
}
