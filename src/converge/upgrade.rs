//! Orchestrated upgrades (k0sctl's order, docs/upgrades.md): the version rules checked before
//! anything is touched (no skipped minor version, no downgrade without --allow-downgrade, no agent
//! newer than the server), and how an agent whose k3s restarts is taken out of service: at most
//! `--max-unavailable` agents at once, each cordoned and drained on the server before its restart
//! and uncordoned once the health gate saw it Ready with the new version.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::spec::Role;
use crate::transport::cmd::quote;

/// `(major, minor, patch, k3s build)` of `v1.33.4+k3s1`.
pub fn parse(v: &str) -> Option<(u32, u32, u32, u32)> {
    let v = v.trim().trim_start_matches('v');
    let (core, build) = v.split_once('+').unwrap_or((v, "k3s0"));
    let mut it = core.split('.');
    let n = |s: Option<&str>| s.and_then(|s| s.parse().ok());
    let (a, b, c) = (n(it.next())?, n(it.next())?, n(it.next())?);
    let k = build.trim_start_matches("k3s").parse().unwrap_or(0);
    Some((a, b, c, k))
}

/// What a node runs now (None: no k3s installed).
#[derive(Debug, Clone)]
pub struct Running {
    pub node: String,
    pub role: Role,
    pub version: Option<String>,
    /// This run changes it (selected by --on).
    pub selected: bool,
}

/// Every rule the move to `target` breaks, one line each (empty: allowed).
pub fn check(target: &str, nodes: &[Running], allow_downgrade: bool) -> Vec<String> {
    let Some(t) = parse(target) else { return vec![] };
    let mut out = Vec::new();
    for n in nodes.iter().filter(|n| n.selected) {
        let Some(v) = n.version.as_deref() else { continue };
        let Some(f) = parse(v) else { continue };
        if (t.0, t.1) > (f.0, f.1 + 1) {
            out.push(format!(
                "{}: {v} -> {target} skips a minor version; k3s upgrades one minor at a time: set version=\"v{}.{}.x\" (a release in profiles/k3s/), apply, then {target}",
                n.node,
                f.0,
                f.1 + 1
            ));
        } else if t < f {
            if !allow_downgrade {
                out.push(format!(
                    "{}: {v} -> {target} is a downgrade; refused without --allow-downgrade (across a minor version use `rvcluster rollback`, which restores the datastore)",
                    n.node
                ));
            } else if (t.0, t.1) != (f.0, f.1) {
                out.push(format!(
                    "{}: {v} -> {target} goes back a minor version: k3s needs the datastore of {target}'s minor; use `rvcluster rollback` to a generation that ran it",
                    n.node
                ));
            }
        }
    }
    // Agents never newer than the server: an agent upgraded while the server stays behind.
    let server = nodes.iter().find(|n| n.role == Role::Server);
    let server_after = server.and_then(|s| if s.selected { Some(target.to_string()) } else { s.version.clone() });
    if let Some(sv) = server_after.as_deref().and_then(parse) {
        for a in nodes.iter().filter(|n| n.role == Role::Agent && n.selected) {
            if (t.0, t.1) > (sv.0, sv.1) {
                out.push(format!(
                    "{}: would run {target}, newer than the server ({}); upgrade the server first (include it in --on)",
                    a.node,
                    server_after.as_deref().unwrap_or("?")
                ));
            }
        }
    }
    out
}

/// The command that prints what a node runs: the current generation's manifest and the binary's
/// own `--version` (either may be missing).
pub fn running_command(k3s: &str) -> String {
    format!(
        "cat {} 2>/dev/null; echo; echo '@@rv version'; {} --version 2>/dev/null | head -n 1; true",
        quote(crate::generation::CURRENT),
        quote(k3s)
    )
}

pub fn parse_running(out: &str) -> Option<String> {
    let (_, bin) = out.split_once("@@rv version").unwrap_or(("", out));
    crate::generation::version_word(bin.trim()).or_else(|| {
        let (json, _) = out.split_once("@@rv version").unwrap_or((out, ""));
        serde_json::from_str::<crate::generation::Manifest>(json.trim()).ok().and_then(|m| m.k3s)
    })
}

/// A `--max-unavailable` value that is neither N nor N%.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaxUnavailableError {
    #[error("`{0}` is not N or N%")]
    NotANumber(String),
    #[error("`{0}`: a percentage is 1%..100%")]
    Percentage(String),
}

/// `--max-unavailable N` or `N%` of `agents` (at least 1).
pub fn max_unavailable(spec: &str, agents: usize) -> Result<usize, MaxUnavailableError> {
    let bad = || MaxUnavailableError::NotANumber(spec.to_string());
    let n = match spec.strip_suffix('%') {
        Some(p) => {
            let p: usize = p.trim().parse().map_err(|_| bad())?;
            if p == 0 || p > 100 {
                return Err(MaxUnavailableError::Percentage(spec.to_string()));
            }
            agents * p / 100
        }
        None => spec.trim().parse().map_err(|_| bad())?,
    };
    Ok(n.max(1))
}

/// How agents are taken out of service while k3s restarts on them.
#[derive(Debug, Clone)]
pub struct Drain {
    pub timeout: Duration,
    /// `--force-drain`: pods without a controller are deleted too.
    pub force: bool,
}

pub fn drain_command(k3s: &str, node: &str, d: &Drain) -> String {
    format!(
        "{} kubectl drain {} --ignore-daemonsets --delete-emptydir-data --timeout={}s{}",
        quote(k3s),
        quote(node),
        d.timeout.as_secs().max(1),
        if d.force { " --force" } else { "" }
    )
}

pub fn uncordon_command(k3s: &str, node: &str) -> String {
    format!("{} kubectl uncordon {}", quote(k3s), quote(node))
}

/// At most N agents out of service at once (a counting semaphore).
pub struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Slots {
    pub fn new(n: usize) -> Slots {
        Slots { free: Mutex::new(n.max(1)), cv: Condvar::new() }
    }
    pub fn take(&self) -> SlotGuard<'_> {
        let mut g = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *g == 0 {
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        *g -= 1;
        SlotGuard { slots: self }
    }
}

pub struct SlotGuard<'a> {
    slots: &'a Slots,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let mut g = self.slots.free.lock().unwrap_or_else(|p| p.into_inner());
        *g += 1;
        self.slots.cv.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, role: Role, v: Option<&str>, selected: bool) -> Running {
        Running { node: name.into(), role, version: v.map(str::to_string), selected }
    }

    #[test]
    fn skipping_a_minor_and_downgrades_are_refused() {
        let cl = |v: &str| vec![node("s", Role::Server, Some(v), true), node("a", Role::Agent, Some(v), true)];
        assert!(check("v1.34.3+k3s1", &cl("v1.33.4+k3s1"), false).is_empty());
        let skip = check("v1.34.3+k3s1", &cl("v1.32.9+k3s1"), false);
        assert_eq!(skip.len(), 2, "{skip:?}");
        assert!(skip[0].contains("skips a minor version") && skip[0].contains("v1.33.x"), "{skip:?}");
        let down = check("v1.33.4+k3s1", &cl("v1.34.3+k3s1"), false);
        assert!(down[0].contains("downgrade") && down[0].contains("--allow-downgrade"), "{down:?}");
        // Allowed within a minor, never across one.
        assert!(check("v1.33.3+k3s1", &cl("v1.33.4+k3s1"), true).is_empty());
        assert!(check("v1.33.4+k3s1", &cl("v1.34.3+k3s1"), true)[0].contains("rollback"));
        // Fresh boards: nothing to compare.
        assert!(check("v1.34.3+k3s1", &[node("s", Role::Server, None, true)], false).is_empty());
    }

    #[test]
    fn an_agent_never_gets_ahead_of_the_server() {
        let nodes = [node("s", Role::Server, Some("v1.33.4+k3s1"), false), node("a", Role::Agent, Some("v1.33.4+k3s1"), true)];
        let v = check("v1.34.3+k3s1", &nodes, false);
        assert!(v.len() == 1 && v[0].contains("newer than the server"), "{v:?}");
        let both = [node("s", Role::Server, Some("v1.33.4+k3s1"), true), node("a", Role::Agent, Some("v1.33.4+k3s1"), true)];
        assert!(check("v1.34.3+k3s1", &both, false).is_empty());
    }

    #[test]
    fn max_unavailable_is_n_or_a_percentage_and_at_least_one() {
        assert_eq!(max_unavailable("10%", 2), Ok(1));
        assert_eq!(max_unavailable("50%", 10), Ok(5));
        assert_eq!(max_unavailable("3", 10), Ok(3));
        assert!(max_unavailable("x", 3).is_err());
        assert!(max_unavailable("0%", 3).is_err());
        assert_eq!(parse_running("{}\n@@rv version\nk3s version v1.33.4+k3s1 (abc)\n").as_deref(), Some("v1.33.4+k3s1"));
    }
}
