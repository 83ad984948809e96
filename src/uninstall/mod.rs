//! Uninstall: take k3s (or the managed registry) off one host, as k3s's own k3s-killall.sh and
//! k3s-uninstall.sh do (docs/k3s-day2.md, "What k3s leaves behind"), then give back the files the
//! user had before rvcluster (generation 0) and remove rvcluster's own state (/var/lib/rvcluster).
//!
//! ONE remote command per host, shaped like an apply (converge::session): it takes the board lock
//! (`flock` on /var/lib/rvcluster/apply.lock, so it never races an apply), prints generation 0's
//! manifest and which of the paths it removes exist, then runs the uninstall script sent on its
//! stdin (sha256 first). The script is our own POSIX sh; it keeps going past a step that fails and
//! says which failed. Also owns removing a node from the cluster on the server (drain, delete the
//! node and its node-password secret) for `apply --prune`. Builds shell text only through
//! `transport::cmd::quote`; never prints a secret.

use std::time::Duration;

use serde::Serialize;

use crate::converge::session::{self, LockState};
use crate::generation::{self, Manifest};
use crate::transport::cmd::{self, quote};
use crate::transport::{ExecOutput, Facts, FactsQuery, FileFact, Host};

/// How long the lock+facts head may take.
const HEAD_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the uninstall script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(900);

/// k3s's data directory (install.sh: `K3S_DATA_DIR`, default).
pub const DATA_DIR: &str = "/var/lib/rancher/k3s";
/// Mount points below these are unmounted (deepest first), as k3s-killall.sh does.
pub const MOUNT_PREFIXES: &[&str] = &["/run/k3s", "/var/lib/kubelet/pods", "/var/lib/kubelet/plugins", "/run/netns/cni-"];
/// Links k3s-killall.sh deletes after the veths whose master is cni0.
pub const LINKS: &[&str] = &["cni0", "flannel.1", "flannel-v6.1", "kube-ipvs0", "flannel-wg", "flannel-wg-v6"];
/// Directories removed from a node (the data dir keeps nothing: rvcluster never puts user data there).
pub const NODE_DIRS: &[&str] = &["/etc/rancher/k3s", "/etc/rancher/node", DATA_DIR, "/var/lib/kubelet", "/var/lib/cni", "/run/k3s", "/run/flannel"];
/// The k3s units: both are removed whatever the role (a node whose role changed may have both).
pub const NODE_UNITS: &[&str] = &["k3s", "k3s-agent"];

/// What a host is, for its uninstall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Server,
    Agent,
    /// The managed registry host: its data directory goes only with `purge`.
    Registry { storage: String, purge: bool },
}

/// One host's uninstall.
#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    pub name: String,
    pub kind: Kind,
    /// Where the units live (the OS profile's `systemd-units`).
    pub units_dir: String,
    /// The k3s binary (the OS profile's `k3s-binary`).
    pub k3s: String,
}

impl Spec {
    pub fn node(name: &str, role: crate::spec::Role, os: Option<&crate::profile::OsProfile>) -> Spec {
        let mut s = Spec {
            name: name.to_string(),
            kind: if role == crate::spec::Role::Server { Kind::Server } else { Kind::Agent },
            units_dir: "/etc/systemd/system".into(),
            k3s: crate::render::K3S_BIN.into(),
        };
        if let Some(os) = os {
            s.use_profile(os);
        }
        s
    }

    /// The managed registry host `name` whose data lives in `storage`.
    pub fn registry(name: &str, storage: &str, purge: bool) -> Spec {
        Spec {
            name: name.to_string(),
            kind: Kind::Registry { storage: storage.to_string(), purge },
            units_dir: "/etc/systemd/system".into(),
            k3s: String::new(),
        }
    }

    /// Paths from the board's OS profile (known once its facts are in, when not declared).
    pub fn use_profile(&mut self, os: &crate::profile::OsProfile) {
        if let Some(d) = os.path("systemd-units") {
            self.units_dir = d.to_string();
        }
        if !matches!(self.kind, Kind::Registry { .. })
            && let Some(b) = os.path("k3s-binary")
        {
            self.k3s = b.to_string();
        }
    }

    fn bin_dir(&self) -> &str {
        self.k3s.rsplit_once('/').map(|(d, _)| d).filter(|d| !d.is_empty()).unwrap_or("/usr/local/bin")
    }

    fn units(&self) -> Vec<&str> {
        match self.kind {
            Kind::Registry { .. } => vec![crate::render::registry::UNIT],
            _ => NODE_UNITS.to_vec(),
        }
    }

    /// Every path the uninstall removes (for the question asked before, and the facts).
    pub fn removes(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for u in self.units() {
            v.push(format!("{}/{u}.service", self.units_dir));
            if !matches!(self.kind, Kind::Registry { .. }) {
                v.push(format!("{}/{u}.service.env", self.units_dir));
            }
        }
        match &self.kind {
            Kind::Registry { storage, purge } => {
                v.push(crate::render::registry::ETC.to_string());
                v.push(crate::render::registry::UPLOADED_BINARY.to_string());
                if *purge {
                    v.push(storage.clone());
                }
            }
            _ => {
                v.push(self.k3s.clone());
                for l in ["kubectl", "crictl", "ctr"] {
                    v.push(format!("{}/{l}", self.bin_dir()));
                }
                v.extend(NODE_DIRS.iter().map(|d| d.to_string()));
            }
        }
        v.push(session::STATE_DIR.to_string());
        v
    }

    /// What is kept (said before asking).
    pub fn keeps(&self) -> Option<String> {
        match &self.kind {
            Kind::Registry { storage, purge: false } => Some(format!("the registry's data {storage} (--purge-registry deletes it)")),
            _ => None,
        }
    }

    /// The facts the held command prints: which removed paths exist, generation 0.
    pub fn query(&self) -> FactsQuery {
        let mut q = FactsQuery { paths: self.removes(), ..FactsQuery::default() };
        if !self.k3s.is_empty() {
            q.k3s_binary = self.k3s.clone();
        }
        q.reads.push(generation::manifest_path(0));
        q.reads.push(generation::CURRENT.to_string());
        q
    }

    /// The uninstall script (POSIX sh). `current`: the generation the board is at (every file
    /// rvcluster manages there: those generation 0 did not have are removed); `gen0`: the board
    /// as rvcluster found it, restored last.
    pub fn script(&self, gen0: Option<&Manifest>, current: Option<&Manifest>) -> String {
        let mut s = String::from("export LC_ALL=C\nset -u\n");
        s.push_str(cmd::SHA_FN);
        s.push('\n');
        s.push_str(HELPERS);
        // 1. Stop and disable the units (k3s-uninstall.sh: disable, reset-failed, daemon-reload).
        for u in self.units() {
            let unit = quote(&format!("{u}.service"));
            let file = quote(&format!("{}/{u}.service", self.units_dir));
            s.push_str(&format!(
                "if [ -f {file} ] || systemctl is-active --quiet {unit} 2>/dev/null; then\n  \
                 systemctl stop {unit} 2>/dev/null; systemctl disable {unit} >/dev/null 2>&1; systemctl reset-failed {unit} >/dev/null 2>&1\n  \
                 rv_did stopped {unit}\nfi\n"
            ));
        }
        if !matches!(self.kind, Kind::Registry { .. }) {
            s.push_str(&self.node_part());
        }
        // The unit and env files, then daemon-reload.
        for u in self.units() {
            for suffix in [".service", ".service.env"] {
                s.push_str(&format!("rv_rm {}\n", quote(&format!("{}/{u}{suffix}", self.units_dir))));
            }
        }
        if let Kind::Registry { storage, purge } = &self.kind {
            s.push_str(&format!("rv_rm {}\n", quote(crate::render::registry::ETC)));
            s.push_str("rmdir /etc/rvcluster 2>/dev/null; true\n");
            s.push_str(&format!("rv_rm {}\n", quote(crate::render::registry::UPLOADED_BINARY)));
            if *purge {
                s.push_str(&format!("rv_rm {}\n", quote(storage)));
            }
        }
        // Every other file and link rvcluster manages here (modules-load, sysctl, manifests...)
        // that was not there before it.
        if let Some(cur) = current {
            let had = |p: &str| gen0.is_some_and(|g| g.files.iter().any(|f| f.path == p) || g.symlinks.iter().any(|l| l.path == p));
            for p in cur.files.iter().map(|f| &f.path).chain(cur.symlinks.iter().map(|l| &l.path)) {
                if !had(p) {
                    s.push_str(&format!("rv_rm {}\n", quote(p)));
                }
            }
        }
        s.push_str("command -v systemctl >/dev/null 2>&1 && systemctl daemon-reload\n");
        // Generation 0: the user's own files come back (temp, sha256 verified, rename).
        if let Some(m) = gen0 {
            s.push_str(&restore_part(m));
        }
        // rvcluster's own state last (the store held generation 0's files); a registry's data
        // inside it stays unless purged.
        s.push_str(&self.state_part());
        s.push_str("if [ \"$rv_failed\" -ne 0 ]; then echo '@@rv end-reset failed'; exit 1; fi\necho '@@rv end-reset ok'\n");
        s
    }

    /// For a host where neither k3s (or the registry) nor a generation is found: only the board
    /// lock's own directory, made by this very command, goes (a second reset touches nothing else,
    /// not the user's files generation 0 gave back).
    pub fn idle_script(&self) -> String {
        format!("export LC_ALL=C\nset -u\n{HELPERS}{}echo '@@rv end-reset ok'\n", self.state_part())
    }

    /// Remove /var/lib/rvcluster (a registry's data inside it stays unless purged).
    fn state_part(&self) -> String {
        let keep = match &self.kind {
            Kind::Registry { storage, purge: false } => storage.strip_prefix(&format!("{}/", session::STATE_DIR)).map(|r| r.split('/').next().unwrap_or(r).to_string()),
            _ => None,
        };
        match keep {
            Some(top) => format!(
                "for e in {dir}/* {dir}/.[!.]* {dir}/..?*; do [ -e \"$e\" ] || [ -L \"$e\" ] || continue; [ \"$e\" = {dir}/{top} ] && continue; rv_rm \"$e\"; done\n",
                dir = quote(session::STATE_DIR),
                top = quote(&top),
            ),
            None => format!("rv_rm {}\n", quote(session::STATE_DIR)),
        }
    }

    /// Whether anything of k3s (or the registry) or of rvcluster is on the host, from the facts.
    fn installed(&self, facts: &Facts, gen0: Option<&Manifest>, current: Option<&Manifest>) -> bool {
        let present = |p: &str| matches!(facts.files.get(p), Some(FileFact::Present { .. }));
        gen0.is_some()
            || current.is_some()
            || self.removes().iter().filter(|p| *p != session::STATE_DIR && !NODE_DIRS.contains(&p.as_str()) && !p.starts_with("/etc/rancher")).any(|p| present(p))
            || present(DATA_DIR)
    }

    /// killall + uninstall for k3s: processes, mounts, network, files.
    fn node_part(&self) -> String {
        let mut s = String::new();
        // 2. The process trees of the containerd shims k3s started (KillMode=process leaves them).
        s.push_str(&format!(
            "rv_shims=$(ps -e -o pid= -o args= 2>/dev/null | awk -v d={data} '{{ if (index($2, d) == 1 && $2 ~ /\\/bin\\/containerd-shim/) print $1 }}')\n\
             if [ -n \"$rv_shims\" ]; then rv_pids=$(rv_tree $rv_shims); kill -9 $rv_pids 2>/dev/null; rv_did killed \"$(echo $rv_shims | wc -w) containerd-shim process(es)\"; fi\n",
            data = quote(&format!("{DATA_DIR}/data/")),
        ));
        // 3. Mounts under the kubelet/containerd directories, deepest first.
        for p in MOUNT_PREFIXES {
            s.push_str(&format!("rv_umount_under {}\n", quote(p)));
        }
        // 4. CNI network namespaces and links, then the KUBE-/CNI-/flannel rules.
        s.push_str(
            "if command -v ip >/dev/null 2>&1; then\n  \
             for n in $(ip netns show 2>/dev/null | awk '$1 ~ /^cni-/ {print $1}'); do ip netns delete \"$n\" && rv_did deleted \"netns $n\"; done\n  \
             for d in $(ip link show 2>/dev/null | awk '/ master cni0 / { n = $2; sub(/:$/, \"\", n); sub(/@.*/, \"\", n); print n }'); do\n    \
             ip link delete \"$d\" && rv_did deleted \"link $d\" || rv_fail \"deleting link $d\"\n  done\n",
        );
        for l in LINKS {
            s.push_str(&format!(
                "  if ip link show {l} >/dev/null 2>&1; then ip link delete {l} && rv_did deleted \"link \"{l} || rv_fail \"deleting link \"{l}; fi\n",
                l = quote(l)
            ));
        }
        s.push_str("fi\n");
        s.push_str(
            "for t in iptables ip6tables; do\n  \
             command -v \"$t-save\" >/dev/null 2>&1 && command -v \"$t-restore\" >/dev/null 2>&1 || continue\n  \
             rv_rules=$(\"$t-save\" 2>/dev/null) || continue\n  \
             rv_n=$(printf '%s\\n' \"$rv_rules\" | grep -c -i -e KUBE- -e CNI- -e flannel)\n  \
             [ \"$rv_n\" -gt 0 ] || continue\n  \
             printf '%s\\n' \"$rv_rules\" | grep -v KUBE- | grep -v CNI- | grep -iv flannel | \"$t-restore\" && rv_did removed \"$rv_n $t rule(s)\" || rv_fail \"rewriting $t rules\"\n\
             done\n",
        );
        // 5. The links to k3s (only those that point to it), the binary, the directories.
        for l in ["kubectl", "crictl", "ctr"] {
            let p = format!("{}/{l}", self.bin_dir());
            s.push_str(&format!(
                "if [ -L {p} ]; then case \"$(readlink {p})\" in k3s|{k}) rv_rm {p};; esac; fi\n",
                p = quote(&p),
                k = quote(&self.k3s),
            ));
        }
        s.push_str(&format!("rv_rm {}\n", quote(&self.k3s)));
        for d in NODE_DIRS {
            s.push_str(&format!("rv_rm {}\n", quote(d)));
        }
        s
    }
}

/// Shell functions every uninstall script starts with.
const HELPERS: &str = r#"rv_failed=0
rv_did() { echo "@@rv did $*"; }
rv_fail() { echo "@@rv failed $*"; rv_failed=1; }
rv_tree() { for p in "$@"; do echo "$p"; rv_tree $(ps -e -o ppid= -o pid= 2>/dev/null | awk -v p="$p" '$1 == p {print $2}'); done; }
rv_is_mnt() { awk -v p="$1" '$2 == p {f = 1} END {exit !f}' /proc/self/mounts 2>/dev/null; }
rv_mnt_below() { awk -v p="$1/" 'index($2, p) == 1 {f = 1} END {exit !f}' /proc/self/mounts 2>/dev/null; }
rv_umount_under() {
  for m in $(awk -v p="$1" 'index($2, p) == 1 {print $2}' /proc/self/mounts 2>/dev/null | sort -r); do
    if umount "$m" 2>/dev/null || umount -f "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; then rm -rf "$m" 2>/dev/null; rv_did unmounted "$m"; else rv_fail "unmounting $m"; fi
  done
}
rv_clear() {
  for e in "$1"/* "$1"/.[!.]* "$1"/..?*; do [ -e "$e" ] || [ -L "$e" ] || continue; rv_rm_quiet "$e"; done
}
rv_rm_quiet() {
  if [ -d "$1" ] && [ ! -L "$1" ] && { rv_is_mnt "$1" || rv_mnt_below "$1"; }; then
    rv_clear "$1"; rv_is_mnt "$1" || rmdir "$1" 2>/dev/null || true
  else
    rm -rf "$1" 2>/dev/null
  fi
}
rv_rm() {
  [ -e "$1" ] || [ -L "$1" ] || return 0
  if [ ! -L "$1" ] && rv_is_mnt "$1" && [ -z "$(ls -A "$1" 2>/dev/null)" ]; then return 0; fi
  rv_rm_quiet "$1"
  if [ ! -e "$1" ] && [ ! -L "$1" ]; then rv_did removed "$1"
  elif [ ! -L "$1" ] && rv_is_mnt "$1" && [ -z "$(ls -A "$1" 2>/dev/null)" ]; then rv_did removed "$1"
  else rv_fail "removing $1 (still there)"; fi
}
"#;

/// Copy generation 0's files back from the store and re-make its symlinks.
fn restore_part(m: &Manifest) -> String {
    let mut s = String::new();
    let tag = format!("{}.reset", std::process::id());
    for f in &m.files {
        let src = generation::store_path(&f.sha256);
        s.push_str(&format!(
            "if [ -f {src} ]; then {{ {copy}; }} && rv_did restored {p} || rv_fail \"restoring \"{p}; else rv_fail \"restoring \"{p}\" (not in the store)\"; fi\n",
            src = quote(&src),
            copy = cmd::copy_verified(&src, &f.path, &cmd::temp_path_for(&f.path, &tag), &f.sha256, f.mode, Some(&f.owner)),
            p = quote(&f.path),
        ));
    }
    for l in &m.symlinks {
        s.push_str(&format!(
            "mkdir -p \"$(dirname {p})\" && ln -sfn {t} {p} && rv_did restored {p} || rv_fail \"restoring \"{p}\n",
            p = quote(&l.path),
            t = quote(&l.target),
        ));
    }
    s
}

/// What an uninstall did on one host.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    /// Paths it removes that existed before.
    pub existed: Vec<String>,
    /// What the script did (`removed /usr/local/bin/k3s`, `killed 2 containerd-shim process(es)`...).
    pub did: Vec<String>,
    /// Generation 0's files put back.
    pub restored: Vec<String>,
    /// Steps that failed (the script went on past them).
    pub failed: Vec<String>,
}

impl Outcome {
    /// Nothing of k3s or rvcluster was there.
    /// (The board lock itself lives in /var/lib/rvcluster, made again by this very command.)
    pub fn was_clean(&self) -> bool {
        self.did.iter().all(|d| *d == format!("removed {}", session::STATE_DIR)) && self.restored.is_empty()
    }
}

/// Why an uninstall did not run to its end on a host.
#[derive(Debug, thiserror::Error)]
pub enum UninstallError {
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    /// The host's first answer (lock state and facts) could not be read.
    #[error(transparent)]
    Head(Box<crate::converge::Cause>),
    #[error("the command stopped before its facts (status {status}): {tail}")]
    StoppedBeforeFacts { status: i32, tail: String },
    #[error("an apply holds the board lock ({owner}); nothing was touched: try again when it is done")]
    Locked { owner: String },
    #[error("the board has no flock (util-linux): rvcluster never applied here; nothing was touched")]
    NoFlock,
    #[error("the uninstall script arrived cut (connection lost?); nothing ran: reset again")]
    Truncated,
    #[error("the uninstall script stopped (status {status}): {tail}")]
    ScriptStopped { status: i32, tail: String },
}

/// Uninstall from one host: one held command (lock, facts, then the script on its stdin).
/// `refine` adjusts the spec once the board's facts are in (its OS profile's paths).
pub fn run(host: &mut dyn Host, spec: &Spec, owner: &str, refine: &dyn Fn(&Facts, &mut Spec)) -> Result<Outcome, UninstallError> {
    let q = spec.query();
    let held = host.exec_held(&session::command(true, owner, &q), session::HEAD_END, Some(HEAD_TIMEOUT))?;
    if held.ended() {
        let out = held.finish(b"", Some(HEAD_TIMEOUT))?;
        host.check_sudo(&out)?;
        return Err(UninstallError::StoppedBeforeFacts { status: out.status, tail: tail(&out) });
    }
    let head = String::from_utf8_lossy(held.head()).into_owned();
    let (lock, facts) = session::parse_head(&q, &head).map_err(|e| UninstallError::Head(Box::new(e)))?;
    let release = |held: Box<dyn crate::transport::Held>| {
        let _ = held.finish(b"", Some(Duration::from_secs(30)));
    };
    let facts = match (lock, facts) {
        (LockState::Locked(who), _) => {
            release(held);
            return Err(UninstallError::Locked { owner: who });
        }
        (LockState::NoFlock, _) | (_, None) => {
            release(held);
            return Err(UninstallError::NoFlock);
        }
        (_, Some(f)) => f,
    };
    let mut spec = spec.clone();
    refine(&facts, &mut spec);
    let gen0: Option<Manifest> = facts.contents.get(&generation::manifest_path(0)).and_then(|b| serde_json::from_slice(b).ok());
    let existed = spec
        .removes()
        .into_iter()
        .filter(|p| matches!(facts.files.get(p), Some(FileFact::Present { .. })))
        .collect();
    let current: Option<Manifest> = generation::current(&facts);
    let script = if spec.installed(&facts, gen0.as_ref(), current.as_ref()) { spec.script(gen0.as_ref(), current.as_ref()) } else { spec.idle_script() };
    let out = held.finish(&session::script_input(&script), Some(SCRIPT_TIMEOUT))?;
    host.check_sudo(&out)?;
    let stdout = out.stdout_str();
    if stdout.lines().any(|l| l == "@@rv truncated") {
        return Err(UninstallError::Truncated);
    }
    let mut o = Outcome { existed, ..Outcome::default() };
    for l in stdout.lines() {
        if let Some(r) = l.strip_prefix("@@rv did restored ") {
            o.restored.push(r.to_string());
        } else if let Some(d) = l.strip_prefix("@@rv did ") {
            o.did.push(d.to_string());
        } else if let Some(f) = l.strip_prefix("@@rv failed ") {
            o.failed.push(f.to_string());
        }
    }
    if !stdout.lines().any(|l| l.starts_with("@@rv end-reset")) {
        return Err(UninstallError::ScriptStopped { status: out.status, tail: tail(&out) });
    }
    Ok(o)
}

fn tail(out: &ExecOutput) -> String {
    let e = out.stderr_str();
    let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

/// How a node leaves the cluster, asked on the server: the same drain as an upgrade's.
pub use crate::converge::upgrade::{Drain, drain_command};

/// Whether the server knows `node` (prints its name if so).
pub fn node_known_command(k3s: &str, node: &str) -> String {
    format!("{} kubectl get node {} -o name 2>/dev/null; true", quote(k3s), quote(node))
}

#[cfg(test)]
mod tests;
