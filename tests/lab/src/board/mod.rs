//! One emulated board: a real sshd on its own loopback address inside its own mount, pid and uts
//! namespace, with a private, host-inspectable filesystem view (overlays over /etc, /var, /root,
//! /opt, /srv; per-board /usr/local, /run, /tmp) and the flavour's os-release and `uname -m`.
//! Owns the board's directory on the host; must not touch other boards or the host's own files.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::error::{IoContext, LabError, Result};
use crate::flavour::Flavour;
use crate::ns::{Lifeline, NsProcess, unshare_args};
use crate::systemd::ServiceStart;

/// Files and directories k3s-uninstall.sh removes (plus the binary and its links).
pub const K3S_PATHS: &[&str] = &[
    "/usr/local/bin/k3s",
    "/usr/local/bin/kubectl",
    "/usr/local/bin/crictl",
    "/usr/local/bin/ctr",
    "/etc/rancher/k3s",
    "/var/lib/rancher/k3s",
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/run/k3s",
    "/run/flannel",
];

/// What k3s leaves behind on a board (Board::k3s_leftovers).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct K3sLeftovers {
    /// (pid, command line) of processes whose argv[0] is `containerd-shim*` (not zombies)
    pub processes: Vec<(u32, String)>,
    /// mount points under /run/k3s, /var/lib/kubelet/pods, /var/lib/kubelet/plugins, /run/netns/cni-
    pub mounts: Vec<String>,
    /// emulated network links (/run/rvlab/net/links; `lo` is not listed)
    pub links: Vec<String>,
    /// iptables-save lines naming KUBE-, CNI- or flannel (the ones k3s-killall.sh filters out)
    pub iptables_rules: Vec<String>,
    /// which of [`K3S_PATHS`] still exist (/var/lib/kubelet: when not empty)
    pub paths: Vec<String>,
}

impl K3sLeftovers {
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty() && self.mounts.is_empty() && self.links.is_empty() && self.iptables_rules.is_empty() && self.paths.is_empty()
    }
}

/// Directories of the host shown through a per-board overlay (writes land in `upper/<dir>`).
pub const OVERLAYS: &[&str] = &["etc", "var", "opt", "srv"];
/// Directories that start empty on a board (a fresh image's /root and /home), kept in `upper/<dir>`.
pub const FRESH: &[&str] = &["root", "home"];
/// State directories that start empty and are plain bind mounts of `state/<dir>` (not overlay),
/// so that tests may also write them from the host through [`Board::path`] at any time.
pub const STATE: &[&str] = &[
    "etc/rancher",
    "etc/systemd/system",
    "etc/rvlab",
    "etc/docker",
    "var/lib/rancher",
    "var/lib/rvcluster",
    "var/lib/kubelet",
    "var/lib/docker-registry",
];

/// What a board is for in the cluster the lab stands in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Agent,
    /// The host on which rvcluster deploys the private registry (the blog's Mac).
    Registry,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
            Role::Registry => "registry",
        }
    }
}

/// Everything a board needs from its lab to (re)start.
#[derive(Debug, Clone)]
pub(crate) struct BoardSetup {
    pub name: String,
    pub role: Role,
    pub addr: Ipv4Addr,
    pub port: u16,
    pub dir: PathBuf,
    pub flavour: Flavour,
    pub support: PathBuf,
    pub client_pubkey: String,
    /// Files written into the board at every (re)flash: (absolute board path, content).
    pub lab_files: Vec<(String, String)>,
    /// A non-root login user with passwordless `sudo -n`, if any.
    pub sudo_user: Option<String>,
    /// With it, the user's password hash (crypt SHA-512): sudo asks for the password.
    pub sudo_password_hash: Option<String>,
}

/// A running emulated board.
#[derive(Debug)]
pub struct Board {
    setup: BoardSetup,
    proc: Option<NsProcess>,
    host_key: String,
    generation: u32,
}

/// sshd_config of a board.
pub fn sshd_config(addr: Ipv4Addr, port: u16) -> String {
    format!(
        "# rvlab board sshd\n\
         ListenAddress {addr}:{port}\n\
         HostKey /etc/ssh/ssh_host_ed25519_key\n\
         PidFile /run/sshd.pid\n\
         PermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\n\
         AuthorizedKeysFile .ssh/authorized_keys\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         UseDNS no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         MaxStartups 200:30:400\n\
         MaxSessions 100\n\
         AcceptEnv LANG LC_*\n\
         ForceCommand /usr/sbin/rvlab-ssh-exec\n\
         Subsystem sftp /usr/lib/openssh/sftp-server\n"
    )
}

/// Host path of board path `p` for a board whose directory is `dir` (`/etc/x` -> `dir/upper/etc/x`,
/// `/etc/rancher/x` -> `dir/state/etc/rancher/x`). Paths the board shares with the host (/usr
/// except /usr/local) map to themselves.
pub fn host_path(dir: &Path, p: &str) -> PathBuf {
    let rel = p.trim_start_matches('/');
    for st in STATE {
        if rel == *st {
            return dir.join("state").join(st);
        }
        if let Some(rest) = rel.strip_prefix(st).and_then(|r| r.strip_prefix('/')) {
            return dir.join("state").join(st).join(rest);
        }
    }
    let (first, rest) = rel.split_once('/').unwrap_or((rel, ""));
    let join = |base: PathBuf, rest: &str| {
        if rest.is_empty() {
            base
        } else {
            base.join(rest)
        }
    };
    match first {
        "var" if rest == "run" || rest.starts_with("run/") => join(
            dir.join("run"),
            rest.trim_start_matches("run").trim_start_matches('/'),
        ),
        "run" => join(dir.join("run"), rest),
        "tmp" => join(dir.join("tmp"), rest),
        "usr" if rest == "local" || rest.starts_with("local/") => join(
            dir.join("usr-local"),
            rest.trim_start_matches("local").trim_start_matches('/'),
        ),
        f if OVERLAYS.contains(&f) || FRESH.contains(&f) => join(dir.join("upper").join(f), rest),
        _ => PathBuf::from("/").join(rel),
    }
}

fn write_file(path: &Path, content: &str, mode: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, content).ctx(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .ctx(|| format!("chmod {}", path.display()))
}

fn mkdir_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::create_dir_all(path).ctx(|| format!("creating {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .ctx(|| format!("chmod {}", path.display()))
}

/// The first uid >= 1000 that the host's /etc/passwd does not use.
pub fn free_uid(passwd: &str) -> u32 {
    let used: Vec<u32> = passwd
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect();
    (1000..60000).find(|u| !used.contains(u)).unwrap_or(60000)
}

/// The lines that add login user `user` (uid = gid = `uid`): (passwd, group, shadow, sudoers).
pub fn user_lines(user: &str, uid: u32) -> [String; 4] {
    [
        format!("{user}:x:{uid}:{uid}:rvlab user:/home/{user}:/bin/bash\n"),
        format!("{user}:x:{uid}:\n"),
        // `*`: no password, but not locked (sshd refuses `!` accounts for key logins too).
        format!("{user}:*:19000:0:99999:7:::\n"),
        format!("{user} ALL=(ALL) NOPASSWD: ALL\n"),
    ]
}

/// Copies a host file of /etc into the board's upper dir with the same mode and owner, plus `extra`.
fn extend_etc_file(d: &Path, name: &str, extra: &str, mode: Option<u32>) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let host = Path::new("/etc").join(name);
    let text = std::fs::read_to_string(&host).unwrap_or_default();
    let meta = std::fs::metadata(&host).ok();
    let dst = d.join("upper/etc").join(name);
    let m = mode
        .or(meta.as_ref().map(|m| m.mode() & 0o7777))
        .unwrap_or(0o644);
    write_file(&dst, &format!("{text}{extra}"), m)?;
    if let Some(meta) = meta {
        std::os::unix::fs::chown(&dst, Some(meta.uid()), Some(meta.gid()))
            .ctx(|| format!("chown {}", dst.display()))?;
    }
    Ok(())
}

/// crypt(3) SHA-512 hash of `password` (`openssl passwd -6`), for /etc/shadow.
pub fn password_hash(password: &str) -> Result<String> {
    use std::io::Write;
    let mut c = Command::new("openssl")
        .args(["passwd", "-6", "-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ctx(|| "running openssl passwd".into())?;
    c.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).ctx(|| "openssl passwd stdin".into())?;
    let out = c.wait_with_output().ctx(|| "openssl passwd".into())?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn add_sudo_user(d: &Path, user: &str, pubkey: &str, hash: Option<&str>) -> Result<()> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let uid = free_uid(&passwd);
    let [p, g, mut sh, mut su] = user_lines(user, uid);
    if let Some(h) = hash {
        sh = format!("{user}:{h}:19000:0:99999:7:::\n");
        su = format!("{user} ALL=(ALL) ALL\n");
    }
    extend_etc_file(d, "passwd", &p, None)?;
    extend_etc_file(d, "group", &g, None)?;
    extend_etc_file(d, "shadow", &sh, None)?;
    write_file(&d.join("upper/etc/sudoers.d/90-rvlab-user"), &su, 0o440)?;
    let home = d.join("upper/home").join(user);
    mkdir_mode(&home.join(".ssh"), 0o700)?;
    write_file(
        &home.join(".ssh/authorized_keys"),
        &format!("{}\n", pubkey.trim()),
        0o600,
    )?;
    for f in [".bashrc", ".profile"] {
        if let Ok(t) = std::fs::read_to_string(Path::new("/etc/skel").join(f)) {
            write_file(&home.join(f), &t, 0o644)?;
        }
    }
    for p in [
        home.clone(),
        home.join(".ssh"),
        home.join(".ssh/authorized_keys"),
        home.join(".bashrc"),
        home.join(".profile"),
    ] {
        if p.exists() {
            std::os::unix::fs::chown(&p, Some(uid), Some(uid))
                .ctx(|| format!("chown {}", p.display()))?;
        }
    }
    Ok(())
}

pub(crate) fn run(cmd: &mut Command) -> Result<Output> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            LabError::Missing {
                what: format!("{shown}: program not found"),
                fix: "apt-get install openssh-client openssh-server util-linux".into(),
            }
        } else {
            LabError::Io {
                context: shown.clone(),
                source: e,
            }
        }
    })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: shown,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(out)
}

impl Board {
    pub(crate) fn start(setup: BoardSetup, lifeline: &Lifeline) -> Result<Self> {
        let mut b = Board {
            setup,
            proc: None,
            host_key: String::new(),
            generation: 0,
        };
        b.flash()?;
        b.boot(lifeline)?;
        Ok(b)
    }

    /// Writes a fresh board state (as if the SD card was just flashed).
    fn flash(&mut self) -> Result<()> {
        let s = &self.setup;
        let d = &s.dir;
        for sub in ["upper", "work", "state", "usr-local", "run", "tmp"] {
            let p = d.join(sub);
            if p.exists() {
                std::fs::remove_dir_all(&p).ctx(|| format!("wiping {}", p.display()))?;
            }
        }
        for o in OVERLAYS {
            mkdir_mode(&d.join("work").join(o), 0o755)?;
            let mode = match std::fs::metadata(format!("/{o}")) {
                Ok(m) => m.permissions().mode() & 0o7777,
                Err(_) => 0o755,
            };
            mkdir_mode(&d.join("upper").join(o), mode)?;
        }
        for st in STATE {
            mkdir_mode(&d.join("state").join(st), 0o755)?;
        }
        mkdir_mode(&d.join("upper/root"), 0o700)?;
        mkdir_mode(&d.join("upper/home"), 0o755)?;
        for skel in [".bashrc", ".profile"] {
            if let Ok(text) = std::fs::read_to_string(Path::new("/etc/skel").join(skel)) {
                write_file(&d.join("upper/root").join(skel), &text, 0o644)?;
            }
        }
        for sub in ["bin", "sbin", "lib", "share", "etc", "include", "src"] {
            mkdir_mode(&d.join("usr-local").join(sub), 0o755)?;
        }
        mkdir_mode(&d.join("run"), 0o755)?;
        mkdir_mode(&d.join("tmp"), 0o1777)?;
        let up = |p: &str| host_path(d, p);
        let key = up("/etc/ssh/ssh_host_ed25519_key");
        std::fs::create_dir_all(key.parent().unwrap()).ctx(|| "creating etc/ssh".into())?;
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(format!("root@{}", s.name))
            .arg("-f")
            .arg(&key))?;
        let pubkey =
            std::fs::read_to_string(key.with_extension("pub")).ctx(|| "reading host key".into())?;
        self.host_key = pubkey
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        write_file(
            &up("/etc/ssh/sshd_config"),
            &sshd_config(s.addr, s.port),
            0o644,
        )?;
        write_file(&up("/etc/os-release"), &s.flavour.os_release, 0o644)?;
        for (p, c) in &s.flavour.extra_files {
            write_file(&up(p), c, 0o644)?;
        }
        write_file(&up("/etc/hostname"), &format!("{}\n", s.name), 0o644)?;
        // Every flash gets its own machine id, as a freshly installed system does.
        let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
            .ctx(|| "reading a random uuid".into())?;
        write_file(
            &up("/etc/machine-id"),
            &format!("{}\n", uuid.trim().replace('-', "")),
            0o444,
        )?;
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        write_file(
            &up("/etc/hosts"),
            &format!("{hosts}{} {}\n", s.addr, s.name),
            0o644,
        )?;
        write_file(
            &up("/etc/rvlab/arch"),
            &format!("{}\n", s.flavour.arch),
            0o644,
        )?;
        for (p, c) in &s.lab_files {
            write_file(&up(p), c, 0o644)?;
        }
        mkdir_mode(&up("/root/.ssh"), 0o700)?;
        write_file(
            &up("/root/.ssh/authorized_keys"),
            &format!("{}\n", s.client_pubkey.trim()),
            0o600,
        )?;
        mkdir_mode(&up("/etc/systemd/system"), 0o755)?;
        for u in &s.flavour.enabled_units {
            let wants = up("/etc/systemd/system/multi-user.target.wants");
            std::fs::create_dir_all(&wants).ctx(|| format!("creating {}", wants.display()))?;
            std::os::unix::fs::symlink(format!("/etc/systemd/system/{u}"), wants.join(u))
                .ctx(|| format!("enabling {u}"))?;
        }
        if let Some(u) = &s.sudo_user {
            add_sudo_user(d, u, &s.client_pubkey, s.sudo_password_hash.as_deref())?;
        }
        self.generation += 1;
        Ok(())
    }

    fn boot(&mut self, lifeline: &Lifeline) -> Result<()> {
        let s = &self.setup;
        let init = s.support.join("board-init.sh");
        let init = init.to_string_lossy().into_owned();
        let envs = [
            ("RVLAB_BOARD_DIR", s.dir.to_string_lossy().into_owned()),
            (
                "RVLAB_SUPPORT_DIR",
                s.support.to_string_lossy().into_owned(),
            ),
            ("RVLAB_HOSTNAME", s.name.clone()),
            ("RVLAB_OVERLAYS", OVERLAYS.join(" ")),
            ("RVLAB_FRESH", FRESH.join(" ")),
            ("RVLAB_STATE", STATE.join(" ")),
        ];
        let proc = NsProcess::spawn(
            &unshare_args(true),
            &["/bin/bash", &init],
            &envs,
            lifeline,
            &s.dir.join("console.log"),
        )?;
        self.proc = Some(proc);
        self.wait_ssh()
    }

    fn wait_ssh(&mut self) -> Result<()> {
        let addr = SocketAddr::from((self.setup.addr, self.setup.port));
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = [0u8; 8];
                if s.read_exact(&mut buf).is_ok() && &buf == b"SSH-2.0-" {
                    return Ok(());
                }
            }
            let alive = self.proc.as_mut().is_some_and(|p| p.alive());
            if !alive || Instant::now() > deadline {
                let console =
                    std::fs::read_to_string(self.setup.dir.join("console.log")).unwrap_or_default();
                let sshd = std::fs::read_to_string(self.path("/var/log/rvlab/sshd.log"))
                    .unwrap_or_default();
                return Err(LabError::NotReady {
                    what: format!("board {} (sshd on {addr})", self.setup.name),
                    detail: format!(
                        "{}\nconsole:\n{console}\nsshd:\n{sshd}",
                        if alive { "timed out" } else { "board exited" }
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn name(&self) -> &str {
        &self.setup.name
    }
    pub fn role(&self) -> Role {
        self.setup.role
    }
    pub fn address(&self) -> Ipv4Addr {
        self.setup.addr
    }
    pub fn ssh_port(&self) -> u16 {
        self.setup.port
    }
    pub fn flavour(&self) -> &Flavour {
        &self.setup.flavour
    }
    /// `ssh-ed25519 AAAA...` of the current flash.
    pub fn host_public_key(&self) -> &str {
        &self.host_key
    }
    /// A known_hosts line for this board (`[addr]:port` when the port is not 22).
    pub fn known_hosts_line(&self) -> String {
        let host = if self.setup.port == 22 {
            self.setup.addr.to_string()
        } else {
            format!("[{}]:{}", self.setup.addr, self.setup.port)
        };
        format!("{host} {}", self.host_key)
    }
    /// The non-root login user with passwordless `sudo -n`, if the lab made one.
    pub fn sudo_user(&self) -> Option<&str> {
        self.setup.sudo_user.as_deref()
    }
    /// How many times the board was flashed (1 after start, +1 per reflash).
    pub fn generation(&self) -> u32 {
        self.generation
    }
    /// The board's directory on the host.
    pub fn dir(&self) -> &Path {
        &self.setup.dir
    }
    /// Host path of the board's file `p` (writes of the board land there; see [`host_path`]).
    pub fn path(&self, p: &str) -> PathBuf {
        host_path(&self.setup.dir, p)
    }
    /// Host pid of the board's pid 1.
    pub fn pid1(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.pid1())
    }

    /// The command that runs `sh -c cmd` inside the board (as root, via nsenter), for assertions.
    pub fn command_inside(&self, cmd: &str) -> Command {
        let pid = self.pid1().unwrap_or(0).to_string();
        let mut c = Command::new("nsenter");
        c.args(["-t", &pid, "-m", "-u", "-p", "--", "/usr/bin/env", "-i"])
            .args([
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/root",
                "LANG=C.UTF-8",
            ])
            .args(["/bin/sh", "-c", cmd])
            .current_dir("/")
            .stdin(Stdio::null());
        c
    }

    /// Runs `sh -c cmd` inside the board and returns its output whatever the exit status.
    pub fn exec_inside(&self, cmd: &str) -> Result<Output> {
        self.command_inside(cmd)
            .output()
            .ctx(|| format!("nsenter into {}", self.setup.name))
    }

    /// Runs `sh -c cmd` inside the board; its stdout, or an error when it exits non-zero.
    pub fn sh(&self, cmd: &str) -> Result<String> {
        let out = run(&mut self.command_inside(cmd))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Every start of `unit`'s main process recorded by the board's systemctl.
    /// Every command clients ran over SSH since boot, one line each (`time user command...`),
    /// recorded by the board's sshd ForceCommand (support/ssh-exec.sh).
    pub fn remote_commands(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("/run/rvlab/ssh-exec.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// What k3s left on the board that k3s-killall.sh / k3s-uninstall.sh remove (see
    /// [`K3sLeftovers`]); empty after a complete uninstall.
    pub fn k3s_leftovers(&self) -> Result<K3sLeftovers> {
        let script = r#"for p in /proc/[0-9]*; do
  st=$(sed 's/.*) //' "$p/stat" 2>/dev/null | cut -d' ' -f1); [ "$st" = Z ] && continue
  a0=$(tr '\0' '\n' < "$p/cmdline" 2>/dev/null | head -n1)
  case ${a0##*/} in containerd-shim*) echo "P ${p#/proc/} $(tr '\0' ' ' < "$p/cmdline")";; esac
done
while read -r _ mp _; do
  case $mp in /run/k3s*|/var/lib/kubelet/pods*|/var/lib/kubelet/plugins*|/run/netns/cni-*) echo "M $mp";; esac
done < /proc/self/mounts"#;
        let out = self.sh(script)?;
        let mut l = K3sLeftovers::default();
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("P ") {
                let (pid, args) = rest.split_once(' ').unwrap_or((rest, ""));
                l.processes.push((pid.parse().unwrap_or(0), args.trim_end().to_string()));
            } else if let Some(m) = line.strip_prefix("M ") {
                l.mounts.push(m.to_string());
            }
        }
        if let Ok(rd) = std::fs::read_dir(self.path("/run/rvlab/net/links")) {
            l.links = rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            l.links.sort();
        }
        l.iptables_rules = std::fs::read_to_string(self.path("/run/rvlab/net/iptables.rules"))
            .unwrap_or_default()
            .lines()
            .filter(|r| r.contains("KUBE-") || r.contains("CNI-") || r.to_lowercase().contains("flannel"))
            .map(str::to_string)
            .collect();
        for p in K3S_PATHS {
            let hp = self.path(p);
            // /var/lib/kubelet is a bind mount on a board: it counts only when not empty
            let left = if *p == "/var/lib/kubelet" {
                std::fs::read_dir(&hp).map(|mut d| d.next().is_some()).unwrap_or(false)
            } else {
                std::fs::symlink_metadata(&hp).is_ok()
            };
            if left {
                l.paths.push(p.to_string());
            }
        }
        Ok(l)
    }

    pub fn service_starts(&self, unit: &str) -> Vec<ServiceStart> {
        let unit = crate::systemd::unit_name(unit);
        let text = std::fs::read_to_string(self.path(&format!("/run/rvlab/systemd/starts/{unit}")))
            .unwrap_or_default();
        crate::systemd::parse_starts(&text)
    }

    /// How many times the board's manager reloaded its configuration since boot: each
    /// `systemctl daemon-reload`, and the reload `systemctl enable`/`disable` do without
    /// `--no-reload` (recorded by the board's systemctl in /run/rvlab/systemd/daemon-reloads).
    pub fn daemon_reloads(&self) -> usize {
        std::fs::read_to_string(self.path("/run/rvlab/systemd/daemon-reloads"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    /// The journal of `unit` as `journalctl -u unit` shows it.
    pub fn journal(&self, unit: &str) -> String {
        let unit = crate::systemd::unit_name(unit);
        std::fs::read_to_string(self.path(&format!("/var/log/rvlab-journal/{unit}.log")))
            .unwrap_or_default()
    }

    /// Re-flash: kills everything on the board, wipes its state, new host key; same address and
    /// hostname. The lab's known_hosts file is NOT updated (as on a real LAN).
    pub fn reflash(&mut self, lifeline: &Lifeline) -> Result<()> {
        self.shutdown();
        self.flash()?;
        self.boot(lifeline)
    }

    /// Reboot: kills every process, empties /run and /tmp, keeps everything else (and the host
    /// key), boots again; units enabled for multi-user.target start as at boot.
    pub fn reboot(&mut self, lifeline: &Lifeline) -> Result<()> {
        self.shutdown();
        for (sub, mode) in [("run", 0o755), ("tmp", 0o1777)] {
            let p = self.setup.dir.join(sub);
            std::fs::remove_dir_all(&p).ctx(|| format!("wiping {}", p.display()))?;
            mkdir_mode(&p, mode)?;
        }
        self.boot(lifeline)
    }

    /// Kills every process of the board (mounts go with its namespace).
    pub fn shutdown(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_map_into_the_board_dir() {
        let d = Path::new("/L/b");
        assert_eq!(
            host_path(d, "/etc/rancher/k3s/config.yaml"),
            Path::new("/L/b/state/etc/rancher/k3s/config.yaml")
        );
        assert_eq!(
            host_path(d, "/var/lib/rancher"),
            Path::new("/L/b/state/var/lib/rancher")
        );
        assert_eq!(host_path(d, "/var/run/x"), Path::new("/L/b/run/x"));
        assert_eq!(host_path(d, "/run/k3s"), Path::new("/L/b/run/k3s"));
        assert_eq!(
            host_path(d, "/usr/local/bin/k3s"),
            Path::new("/L/b/usr-local/bin/k3s")
        );
        assert_eq!(host_path(d, "/usr/local"), Path::new("/L/b/usr-local"));
        assert_eq!(host_path(d, "/usr/bin/ls"), Path::new("/usr/bin/ls"));
        assert_eq!(host_path(d, "/tmp"), Path::new("/L/b/tmp"));
        assert_eq!(
            host_path(d, "/root/.ssh/authorized_keys"),
            Path::new("/L/b/upper/root/.ssh/authorized_keys")
        );
        assert_eq!(
            host_path(d, "/etc/rancherx"),
            Path::new("/L/b/upper/etc/rancherx")
        );
        assert_eq!(
            host_path(d, "/etc/systemd/system/k3s.service"),
            Path::new("/L/b/state/etc/systemd/system/k3s.service")
        );
    }

    #[test]
    fn sudo_user_lines_and_free_uid() {
        assert_eq!(
            free_uid("root:x:0:0::/root:/bin/bash\na:x:1000:1000::/h:/bin/sh\n"),
            1001
        );
        let [p, g, s, su] = user_lines("euler", 1001);
        assert_eq!(p, "euler:x:1001:1001:rvlab user:/home/euler:/bin/bash\n");
        assert_eq!(g, "euler:x:1001:\n");
        assert!(s.starts_with("euler:*:"));
        assert_eq!(su, "euler ALL=(ALL) NOPASSWD: ALL\n");
    }

    #[test]
    fn sshd_config_listens_on_the_board_address_only() {
        let c = sshd_config(Ipv4Addr::new(127, 160, 3, 10), 22);
        assert!(c.contains("ListenAddress 127.160.3.10:22\n"));
        assert!(c.contains("PasswordAuthentication no\n"));
        assert!(c.contains("HostKey /etc/ssh/ssh_host_ed25519_key\n"));
    }
}
