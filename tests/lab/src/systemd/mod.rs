//! The lab's support files: systemctl/journalctl emulation, uname/arch/modprobe wrappers and the
//! board init script (all shell, embedded here and written to `<lab>/support` at start), plus
//! parsing of the service start records the emulation leaves on every board. Owns `<lab>/support`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::error::{IoContext, Result};

pub const SYSTEMCTL: &str = include_str!("../../support/systemctl.sh");
pub const UNAME: &str = include_str!("../../support/uname.sh");
pub const ARCH: &str = include_str!("../../support/arch.sh");
pub const MODPROBE: &str = include_str!("../../support/modprobe.sh");
pub const SYSCTL: &str = include_str!("../../support/sysctl.sh");
pub const BOARD_INIT: &str = include_str!("../../support/board-init.sh");
pub const SSH_EXEC: &str = include_str!("../../support/ssh-exec.sh");
pub const IP: &str = include_str!("../../support/ip.sh");
pub const IPTABLES: &str = include_str!("../../support/iptables.sh");

/// Writes the support tree: `usr-bin/` and `usr-sbin/` are overlaid over the board's /usr/bin and
/// /usr/sbin, `board-init.sh` is each board's pid 1.
pub fn install_support(dir: &Path, flavour: &crate::flavour::Flavour) -> Result<()> {
    let files: [(&str, &str); 16] = [
        ("usr-bin/systemctl", SYSTEMCTL),
        ("usr-bin/journalctl", SYSTEMCTL),
        ("usr-bin/uname", UNAME),
        ("usr-bin/arch", ARCH),
        ("usr-sbin/modprobe", MODPROBE),
        ("usr-sbin/sysctl", SYSCTL),
        ("usr-sbin/rvlab-ssh-exec", SSH_EXEC),
        // boards share the host's network namespace: links and rules are emulated per board
        ("usr-sbin/ip", IP),
        ("usr-bin/ip", IP),
        ("usr-sbin/iptables", IPTABLES),
        ("usr-sbin/iptables-save", IPTABLES),
        ("usr-sbin/iptables-restore", IPTABLES),
        ("usr-sbin/ip6tables", IPTABLES),
        ("usr-sbin/ip6tables-save", IPTABLES),
        ("usr-sbin/ip6tables-restore", IPTABLES),
        ("board-init.sh", BOARD_INIT),
    ];
    let extra = flavour
        .commands
        .iter()
        .map(|(n, t)| (format!("usr-{n}"), t.as_str()));
    let files = files.iter().map(|(r, t)| (r.to_string(), *t)).chain(extra);
    for (rel, text) in files {
        let p = dir.join(&rel);
        std::fs::create_dir_all(p.parent().unwrap())
            .ctx(|| format!("creating {}", dir.display()))?;
        std::fs::write(&p, text).ctx(|| format!("writing {}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
            .ctx(|| format!("chmod {}", p.display()))?;
    }
    Ok(())
}

/// `k3s` -> `k3s.service`; names with a unit suffix stay.
pub fn unit_name(u: &str) -> String {
    const SUFFIXES: [&str; 7] = [
        ".service", ".target", ".socket", ".timer", ".mount", ".path", ".slice",
    ];
    if SUFFIXES.iter().any(|s| u.ends_with(s)) {
        u.to_string()
    } else {
        format!("{u}.service")
    }
}

/// Why a service's main process was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartKind {
    /// `systemctl start` or `enable --now`.
    Start,
    /// `systemctl restart`.
    Restart,
    /// `Restart=` after the main process exited.
    AutoRestart,
}

/// One start of a service's main process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStart {
    /// 1-based sequence number on this flash of the board.
    pub seq: u32,
    pub at: SystemTime,
    pub kind: StartKind,
    /// pid inside the board's pid namespace.
    pub pid: u32,
}

/// Parses the lines `<seq> <epoch-ns> <kind> <pid>` of a start record.
pub fn parse_starts(text: &str) -> Vec<ServiceStart> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let seq = it.next()?.parse().ok()?;
            let ns: u64 = it.next()?.parse().ok()?;
            let kind = match it.next()? {
                "start" => StartKind::Start,
                "restart" => StartKind::Restart,
                "auto-restart" => StartKind::AutoRestart,
                _ => return None,
            };
            let pid = it.next()?.parse().ok()?;
            Some(ServiceStart {
                seq,
                at: SystemTime::UNIX_EPOCH + Duration::from_nanos(ns),
                kind,
                pid,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_get_service_suffix() {
        assert_eq!(unit_name("k3s"), "k3s.service");
        assert_eq!(unit_name("k3s-agent.service"), "k3s-agent.service");
        assert_eq!(unit_name("multi-user.target"), "multi-user.target");
    }

    #[test]
    fn start_records_parse() {
        let v = parse_starts(
            "1 1700000000000000000 start 12\n2 1700000001000000000 auto-restart 19\nbad line\n",
        );
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].kind, StartKind::Start);
        assert_eq!(v[1].kind, StartKind::AutoRestart);
        assert_eq!(v[1].pid, 19);
        assert_eq!(
            v[1].at.duration_since(v[0].at).unwrap(),
            Duration::from_secs(1)
        );
    }
}
