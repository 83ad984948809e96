//! The lab: a set of boards, an optional registry host board and an optional upstream registry,
//! sharing one loopback block, one client key and one known_hosts file, all torn down on drop.
//! Owns the lab directory `<root>/<127.A.B>`; must not touch other labs' directories.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::addr::AddrBlock;
use crate::board::{Board, BoardSetup, Role, run};
use crate::error::{IoContext, LabError, Result};
use crate::flavour::Flavour;
use crate::ns::Lifeline;
use crate::registry::{DOCKER_REGISTRY, Upstream};
pub use k3s_sim::upstream::SeededImage;

/// Port of the upstream registry.
pub const UPSTREAM_PORT: u16 = 5000;
/// Host part of the upstream registry's address in the lab's block.
pub const UPSTREAM_HOST: u8 = 2;
/// Host part of the first board's address.
pub const FIRST_BOARD_HOST: u8 = 10;

/// Root of all labs' directories: `$RVLAB_ROOT` or /tmp/rvlab.
pub fn default_root() -> PathBuf {
    std::env::var_os("RVLAB_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/rvlab"))
}

/// Lines of /etc/rvlab/upstream.conf: `<registry-host> <endpoint-url>`.
pub fn upstream_conf(hosts: &[String], url: &str) -> String {
    hosts.iter().map(|h| format!("{h} {url}\n")).collect()
}

/// /etc/rvlab/sim.conf for a board (k3s-sim's knobs, see tests/k3s-sim/src/simconf).
pub fn sim_conf(
    ready_delay_ms: u64,
    node_ip: Ipv4Addr,
    arch: &str,
    extra: &[(String, String)],
) -> String {
    let mut s = format!("ready-delay-ms {ready_delay_ms}\nnode-ip {node_ip}\narch {arch}\n");
    for (k, v) in extra {
        s.push_str(&format!("{k} {v}\n"));
    }
    s
}

/// Checks that a board name is a valid hostname label.
pub fn valid_board_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !n.starts_with('-')
        && !n.ends_with('-')
}

/// What the machine lacks to run a lab, each with the exact fix.
pub fn preflight(need_registry: bool) -> Vec<LabError> {
    let mut v = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        v.push(LabError::Missing {
            what: "the lab needs root (it creates mount, pid and uts namespaces and runs sshd)"
                .into(),
            fix: "run as root, e.g. `sudo -E env PATH=$PATH cargo test -p rvlab` (CI runs as root)"
                .into(),
        });
    }
    let tools = [
        ("/usr/sbin/sshd", "apt-get install openssh-server"),
        ("/usr/bin/ssh-keygen", "apt-get install openssh-client"),
        ("/usr/bin/unshare", "apt-get install util-linux"),
        ("/usr/bin/nsenter", "apt-get install util-linux"),
        ("/usr/bin/flock", "apt-get install util-linux"),
        ("/usr/bin/socat", "apt-get install socat"),
    ];
    for (p, fix) in tools {
        if !Path::new(p).exists() {
            v.push(LabError::Missing {
                what: format!("{p} not found"),
                fix: fix.into(),
            });
        }
    }
    if need_registry && !Path::new(DOCKER_REGISTRY).exists() {
        v.push(LabError::Missing {
            what: format!("{DOCKER_REGISTRY} not found"),
            fix: "apt-get install docker-registry".into(),
        });
    }
    v
}

/// Builder of a [`Lab`].
#[derive(Debug, Clone)]
pub struct LabBuilder {
    boards: Vec<(String, Role)>,
    /// Boards that look like another OS than `flavour` (a mixed cluster).
    board_flavours: Vec<(String, Flavour)>,
    upstream: bool,
    flavour: Flavour,
    ready_delay_ms: u64,
    upstream_hosts: Vec<String>,
    sim_extra: Vec<(String, String)>,
    root: PathBuf,
    keep: bool,
    seed: bool,
    sudo_user: Option<String>,
    sudo_password: Option<String>,
}

impl Default for LabBuilder {
    fn default() -> Self {
        LabBuilder {
            boards: Vec::new(),
            upstream: false,
            flavour: Flavour::default(),
            board_flavours: Vec::new(),
            ready_delay_ms: 300,
            upstream_hosts: vec!["docker.io".into()],
            sim_extra: Vec::new(),
            root: default_root(),
            keep: std::env::var_os("RVLAB_KEEP").is_some(),
            seed: false,
            sudo_user: None,
            sudo_password: None,
        }
    }
}

impl LabBuilder {
    /// Adds boards, e.g. `[("server1", Role::Server), ("agent1", Role::Agent)]`.
    pub fn boards<I, S>(mut self, boards: I) -> Self
    where
        I: IntoIterator<Item = (S, Role)>,
        S: Into<String>,
    {
        self.boards
            .extend(boards.into_iter().map(|(n, r)| (n.into(), r)));
        self
    }
    /// Adds one board.
    pub fn board(mut self, name: impl Into<String>, role: Role) -> Self {
        self.boards.push((name.into(), role));
        self
    }
    /// Adds the registry host board (the blog's Mac), e.g. `"mac"`.
    pub fn registry_host(self, name: impl Into<String>) -> Self {
        self.board(name, Role::Registry)
    }
    /// Starts the upstream registry playing docker.io.
    pub fn upstream(mut self, on: bool) -> Self {
        self.upstream = on;
        self
    }
    /// Starts the upstream registry and pushes k3s-sim's deterministic images into it
    /// (fixtures/upstream/images.txt: k3s system images, some without linux/riscv64).
    pub fn seed_upstream(mut self, on: bool) -> Self {
        self.seed = on;
        if on {
            self.upstream = true;
        }
        self
    }
    /// Also create login user `name` on every board, with the lab key and passwordless `sudo -n`.
    pub fn sudo_user(mut self, name: impl Into<String>) -> Self {
        self.sudo_user = Some(name.into());
        self
    }
    /// The sudo user's password: `sudo` then asks for it (no NOPASSWD rule), as on a board whose
    /// admin account needs `--ask-become-pass`. Needs `sudo_user`.
    pub fn sudo_password(mut self, password: impl Into<String>) -> Self {
        self.sudo_password = Some(password.into());
        self
    }
    /// Adds one board that looks like `flavour` instead of the lab's default (mixed clusters).
    pub fn board_with(mut self, name: impl Into<String>, role: Role, flavour: Flavour) -> Self {
        let name = name.into();
        self.board_flavours.push((name.clone(), flavour));
        self.board(name, role)
    }
    /// The flavour of every board (default openEuler 24.03 riscv64).
    pub fn flavour(mut self, f: Flavour) -> Self {
        self.flavour = f;
        self
    }
    /// `ready-delay-ms` in every board's /etc/rvlab/sim.conf (default 300).
    pub fn ready_delay_ms(mut self, ms: u64) -> Self {
        self.ready_delay_ms = ms;
        self
    }
    /// A further `key value` line of every board's sim.conf.
    pub fn sim_conf(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.sim_extra.push((key.into(), value.into()));
        self
    }
    /// Registry hosts that the upstream registry plays (default `["docker.io"]`).
    pub fn upstream_hosts<I: IntoIterator<Item = S>, S: Into<String>>(mut self, hosts: I) -> Self {
        self.upstream_hosts = hosts.into_iter().map(Into::into).collect();
        self
    }
    /// Directory that holds the labs (default [`default_root`]).
    pub fn root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.root = dir.into();
        self
    }
    /// Keep the lab directory after drop (also `RVLAB_KEEP=1`).
    pub fn keep(mut self, keep: bool) -> Self {
        self.keep = keep;
        self
    }

    /// Starts everything; on error nothing is left running.
    pub fn start(self) -> Result<Lab> {
        let need_registry = self.upstream || self.boards.iter().any(|(_, r)| *r == Role::Registry);
        if let Some(e) = preflight(need_registry).into_iter().next() {
            return Err(e);
        }
        let mut seen = std::collections::BTreeSet::new();
        for (n, _) in &self.boards {
            if !valid_board_name(n) {
                return Err(LabError::Invalid(format!(
                    "board name `{n}` is not a hostname (a-z, 0-9, -)"
                )));
            }
            if !seen.insert(n.clone()) {
                return Err(LabError::Invalid(format!("board `{n}` given twice")));
            }
        }
        if let Some(u) = &self.sudo_user {
            if !valid_board_name(u) || u == "root" {
                return Err(LabError::Invalid(format!(
                    "user name `{u}` must be a-z, 0-9, - and not root"
                )));
            }
            if !Path::new("/usr/bin/sudo").exists() {
                return Err(LabError::Missing {
                    what: "/usr/bin/sudo not found (needed for the sudo user)".into(),
                    fix: "apt-get install sudo".into(),
                });
            }
        }
        if self.boards.len() > 200 {
            return Err(LabError::Invalid("at most 200 boards per lab".into()));
        }
        std::fs::create_dir_all(&self.root).ctx(|| format!("creating {}", self.root.display()))?;
        crate::addr::sweep_stale(&self.root);
        let block = AddrBlock::claim(&self.root)?;
        let dir = self.root.join(block.prefix());
        if dir.exists() {
            // A lab of a process that died: its boards died with it (lifeline), only files remain.
            std::fs::remove_dir_all(&dir).ctx(|| format!("removing stale {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        let mut lab = Lab {
            dir: dir.clone(),
            boards: Vec::new(),
            upstream: None,
            client_key: dir.join("client/id_ed25519"),
            known_hosts: dir.join("client/known_hosts"),
            keep: self.keep,
            seeded: Vec::new(),
            lifeline: Lifeline::new()?,
            block,
        };
        // One support tree (systemctl, uname, the flavour's commands) per flavour in use.
        let flavour_of = |name: &str| {
            self.board_flavours.iter().find(|(n, _)| n == name).map(|(_, f)| f).unwrap_or(&self.flavour)
        };
        let mut flavours: Vec<&Flavour> = vec![&self.flavour];
        for (_, f) in &self.board_flavours {
            if !flavours.iter().any(|x| x.name == f.name) {
                flavours.push(f);
            }
        }
        for f in &flavours {
            crate::systemd::install_support(&dir.join("support").join(&f.name), f)?;
        }
        std::fs::create_dir_all(dir.join("client")).ctx(|| "creating client dir".into())?;
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "rvlab-client", "-f"])
            .arg(&lab.client_key))?;
        let client_pubkey = std::fs::read_to_string(lab.client_key.with_extension("pub"))
            .ctx(|| "reading client key".into())?;
        if self.upstream {
            let addr = lab.block.addr(UPSTREAM_HOST);
            let up = Upstream::start(addr, UPSTREAM_PORT, dir.join("upstream"), &lab.lifeline)?;
            if self.seed {
                lab.seeded = k3s_sim::upstream::seed(&up.url()).map_err(|e| {
                    LabError::Invalid(format!("seeding the upstream registry: {e}"))
                })?;
            }
            lab.upstream = Some(up);
        }
        let sudo_hash = match &self.sudo_password {
            None => None,
            Some(pw) => Some(crate::board::password_hash(pw)?),
        };
        let mut setups = Vec::new();
        for (i, (name, role)) in self.boards.iter().enumerate() {
            let addr = lab.block.addr(FIRST_BOARD_HOST + i as u8);
            let mut lab_files = vec![(
                "/etc/rvlab/sim.conf".to_string(),
                sim_conf(
                    self.ready_delay_ms,
                    addr,
                    &flavour_of(name).arch,
                    &self.sim_extra,
                ),
            )];
            if let Some(up) = &lab.upstream {
                lab_files.push((
                    "/etc/rvlab/upstream.conf".into(),
                    upstream_conf(&self.upstream_hosts, &up.url()),
                ));
            }
            let setup = BoardSetup {
                name: name.clone(),
                role: *role,
                addr,
                port: 22,
                dir: dir.join("boards").join(name),
                flavour: flavour_of(name).clone(),
                support: dir.join("support").join(&flavour_of(name).name),
                client_pubkey: client_pubkey.clone(),
                lab_files,
                sudo_user: self.sudo_user.clone(),
                sudo_password_hash: sudo_hash.clone(),
            };
            setups.push(setup);
        }
        // Boards boot in parallel (one thread each); on any error the started ones are dropped.
        let lifeline = &lab.lifeline;
        let started: Vec<Result<Board>> = std::thread::scope(|sc| {
            let handles: Vec<_> = setups
                .into_iter()
                .map(|st| sc.spawn(move || Board::start(st, lifeline)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(LabError::Invalid("a board's start thread panicked".into()))
                    })
                })
                .collect()
        });
        for b in started {
            lab.boards.push(b?);
        }
        lab.trust_current_host_keys()?;
        Ok(lab)
    }
}

/// A running lab. Dropping it kills every board and registry and removes its directory.
#[derive(Debug)]
pub struct Lab {
    dir: PathBuf,
    boards: Vec<Board>,
    upstream: Option<Upstream>,
    client_key: PathBuf,
    known_hosts: PathBuf,
    keep: bool,
    seeded: Vec<SeededImage>,
    lifeline: Lifeline,
    block: AddrBlock,
}

impl Lab {
    pub fn builder() -> LabBuilder {
        LabBuilder::default()
    }

    /// The lab directory on the host.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// `127.A.B`: the loopback block of this lab.
    pub fn block(&self) -> String {
        self.block.prefix()
    }
    pub fn boards(&self) -> &[Board] {
        &self.boards
    }
    pub fn board(&self, name: &str) -> Option<&Board> {
        self.boards.iter().find(|b| b.name() == name)
    }
    /// The board named `name`; panics with the known names when there is none (for tests).
    pub fn b(&self, name: &str) -> &Board {
        self.board(name).unwrap_or_else(|| {
            panic!(
                "no board `{name}` in lab (have {:?})",
                self.boards.iter().map(|b| b.name()).collect::<Vec<_>>()
            )
        })
    }
    pub fn boards_with(&self, role: Role) -> impl Iterator<Item = &Board> {
        self.boards.iter().filter(move |b| b.role() == role)
    }
    pub fn registry_host(&self) -> Option<&Board> {
        self.boards_with(Role::Registry).next()
    }
    pub fn upstream(&self) -> Option<&Upstream> {
        self.upstream.as_ref()
    }
    /// Pushes tiny linux/riscv64-only images into the upstream registry under `refs`
    /// (`repository:tag`, e.g. `riscv64/mirrored-pause:3.6`): the hand ports of the blog posts.
    pub fn push_riscv64_ports(&self, refs: &[&str]) -> Result<Vec<SeededImage>> {
        use k3s_sim::upstream::{Format, ImageSpec, Platform};
        let up = self
            .upstream
            .as_ref()
            .ok_or_else(|| LabError::Invalid("the lab has no upstream registry".into()))?;
        let specs = refs
            .iter()
            .map(|r| {
                let (repo, tag) = r
                    .rsplit_once(':')
                    .ok_or_else(|| LabError::Invalid(format!("`{r}` has no tag")))?;
                Ok(ImageSpec {
                    repository: repo.into(),
                    tag: tag.into(),
                    format: Format::OciIndex,
                    platforms: vec![Platform {
                        os: "linux".into(),
                        arch: "riscv64".into(),
                        variant: None,
                    }],
                })
            })
            .collect::<Result<Vec<_>>>()?;
        k3s_sim::upstream::seed_catalog(&up.url(), &specs)
            .map_err(|e| LabError::Invalid(format!("pushing riscv64 ports: {e}")))
    }

    /// Images pushed by [`LabBuilder::seed_upstream`] (name, digest, platforms).
    pub fn seeded(&self) -> &[SeededImage] {
        &self.seeded
    }
    /// Private key (0600) whose public half is in every board's /root/.ssh/authorized_keys.
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }
    /// known_hosts with every board's host key as of start (or the last `trust_current_host_keys`).
    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }

    /// Rewrites the lab's known_hosts with the boards' current host keys (after a re-flash, this
    /// is the user accepting the new key on purpose).
    pub fn trust_current_host_keys(&self) -> Result<()> {
        let text: String = self
            .boards
            .iter()
            .map(|b| b.known_hosts_line() + "\n")
            .collect();
        std::fs::write(&self.known_hosts, text)
            .ctx(|| format!("writing {}", self.known_hosts.display()))
    }

    /// Re-flashes board `name` (wipe, new host key, same address and hostname).
    pub fn reflash(&mut self, name: &str) -> Result<()> {
        let lifeline = &self.lifeline;
        let b = self
            .boards
            .iter_mut()
            .find(|b| b.name() == name)
            .ok_or_else(|| LabError::UnknownBoard(name.into()))?;
        b.reflash(lifeline)
    }

    /// Reboots board `name` (state kept, /run and /tmp emptied, enabled units started at boot).
    pub fn reboot(&mut self, name: &str) -> Result<()> {
        let lifeline = &self.lifeline;
        let b = self
            .boards
            .iter_mut()
            .find(|b| b.name() == name)
            .ok_or_else(|| LabError::UnknownBoard(name.into()))?;
        b.reboot(lifeline)
    }

    /// Real `ssh` to the board as root, host key checked against the lab's known_hosts, no
    /// prompts; append the remote command with `.arg(...)`.
    pub fn ssh_command(&self, name: &str) -> Result<Command> {
        self.ssh_command_as(name, "root")
    }

    /// [`Lab::ssh_command`] as login user `user` (root or the lab's sudo user).
    pub fn ssh_command_as(&self, name: &str, user: &str) -> Result<Command> {
        let b = self
            .board(name)
            .ok_or_else(|| LabError::UnknownBoard(name.into()))?;
        let mut c = Command::new("ssh");
        c.arg("-F")
            .arg("/dev/null")
            .arg("-i")
            .arg(&self.client_key)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
            ])
            .args([
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=30",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg("-p")
            .arg(b.ssh_port().to_string())
            .arg(format!("{user}@{}", b.address()))
            .stdin(Stdio::null());
        Ok(c)
    }

    /// cluster.kdl describing this lab (boards as nodes with pinned host keys, the registry host,
    /// the upstream registry as `upstream "docker.io"`).
    pub fn cluster_kdl(&self, cf: &crate::clusterfile::ClusterFile) -> String {
        let hosts: Vec<crate::clusterfile::Host> = self
            .boards
            .iter()
            .map(|b| crate::clusterfile::Host {
                name: b.name().to_string(),
                address: b.address().to_string(),
                port: b.ssh_port(),
                role: b.role().as_str().to_string(),
                host_key: b.host_public_key().to_string(),
            })
            .collect();
        let up = self.upstream.as_ref().map(|u| u.url());
        crate::clusterfile::render(
            cf,
            &hosts,
            &self.client_key.display().to_string(),
            up.as_deref(),
        )
    }

    /// Runs `cmd` on the board over real ssh; output whatever the exit status.
    pub fn ssh(&self, name: &str, cmd: &str) -> Result<Output> {
        self.ssh_command(name)?
            .arg(cmd)
            .output()
            .ctx(|| format!("ssh to {name}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for b in &mut self.boards {
            b.shutdown();
        }
        self.upstream = None;
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_conf_lists_each_host() {
        let hosts = vec!["docker.io".to_string(), "ghcr.io".to_string()];
        assert_eq!(
            upstream_conf(&hosts, "http://127.170.3.2:5000"),
            "docker.io http://127.170.3.2:5000\nghcr.io http://127.170.3.2:5000\n"
        );
    }

    #[test]
    fn sim_conf_has_delay_node_ip_and_arch() {
        let s = sim_conf(
            250,
            Ipv4Addr::new(127, 170, 3, 10),
            "riscv64",
            &[("sync-ms".into(), "100".into())],
        );
        assert_eq!(
            s,
            "ready-delay-ms 250\nnode-ip 127.170.3.10\narch riscv64\nsync-ms 100\n"
        );
    }

    #[test]
    fn board_names_must_be_hostnames() {
        assert!(valid_board_name("server1"));
        assert!(valid_board_name("lpi4a-2"));
        assert!(!valid_board_name("Server"));
        assert!(!valid_board_name("a b"));
        assert!(!valid_board_name("-x"));
        assert!(!valid_board_name(""));
    }
}
