//! The phase contract (k0sctl's phases, batched): a phase declares what it must know from the
//! host as probe fragments of the ONE facts command, turns facts + desired state into changes
//! with a pure function, and carries its changes out as fragments of the ONE apply script (or as
//! streamed uploads, for large binaries). Whether anything runs (plan or apply) is decided once,
//! by the host driver, never inside a phase.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::render::HostState;
use crate::spec::Role;
use crate::transport::{Facts, FactsQuery, RemoteFile};

use super::change::Change;
use super::error::Cause;
use super::script::Script;

/// What every phase sees of the host: the facts, and the status of each probe by its command.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub facts: Facts,
    pub probes: BTreeMap<String, i32>,
    /// For a fresh agent: whether the server still knows a node of its name (filled by the
    /// driver from the server; `None` when not asked).
    pub server_knows_node: Option<bool>,
}

impl Observed {
    pub fn new(q: &FactsQuery, facts: Facts) -> Observed {
        let probes = q.probes.iter().cloned().zip(facts.probes.iter().copied()).collect();
        Observed { facts, probes, server_knows_node: None }
    }
    /// Exit status of a probe command (`None` if it was not asked).
    pub fn probe(&self, command: &str) -> Option<i32> {
        self.probes.get(command).copied()
    }
}

/// What a host must become, with its role (forget-node and the token depend on it).
pub struct Desired<'a> {
    pub st: &'a HostState,
    pub role: Role,
    /// `<unit>.service`.
    pub unit_file: String,
}

impl<'a> Desired<'a> {
    pub fn new(st: &'a HostState, role: Role) -> Desired<'a> {
        Desired { st, role, unit_file: format!("{}.service", st.service.unit) }
    }
}

/// A large local file streamed before the script runs (a request on the held command's stdin).
#[derive(Debug, Clone)]
pub struct Upload {
    pub change: usize,
    pub local: PathBuf,
    pub sha256: String,
    pub dest: RemoteFile,
    /// Sent compressed when the host can decompress (its facts say which tool it has).
    pub codec: Option<crate::transport::cmd::Codec>,
}

/// What the phases ask the driver to do, wet.
#[derive(Debug, Default)]
pub struct Actions {
    pub uploads: Vec<Upload>,
    pub script: Script,
    /// Nodes to delete on the server (a re-flashed agent), before this host's script runs.
    pub on_server: Vec<(usize, String)>,
}

pub trait Phase: Sync {
    fn name(&self) -> &'static str;
    /// Add what this phase must know to the facts query.
    fn probe(&self, _want: &Desired, _q: &mut FactsQuery) {}
    /// Pure: the changes this phase needs, given what the earlier phases planned (`prior`).
    fn plan(&self, want: &Desired, seen: &Observed, prior: &[Change]) -> Result<Vec<Change>, Cause>;
    /// Carry out `changes[i]` (one of this phase's) into `acts`.
    fn apply(&self, want: &Desired, seen: &Observed, i: usize, change: &Change, acts: &mut Actions);
}

pub fn add_path(q: &mut FactsQuery, p: &str) {
    if !q.paths.iter().any(|x| x == p) {
        q.paths.push(p.to_string());
    }
}

/// Unit `unit` among the services the facts ask about (one `systemctl show` for all); its index.
pub fn add_service(q: &mut FactsQuery, unit: &str) -> usize {
    match q.services.iter().position(|u| u == unit) {
        Some(i) => i,
        None => {
            q.services.push(unit.to_string());
            q.services.len() - 1
        }
    }
}

pub fn add_probe(q: &mut FactsQuery, cmd: &str) -> usize {
    match q.probes.iter().position(|x| x == cmd) {
        Some(i) => {
            // Also asked unguarded: it must run whatever its guard says.
            q.guards.remove(&i);
            i
        }
        None => {
            q.probes.push(cmd.to_string());
            q.probes.len() - 1
        }
    }
}

/// A probe whose answer matters only when probe `guard` exited 0 (a step's `check` after its
/// `when`): the facts script does not run it otherwise. Asked twice with different guards (or
/// once unguarded), it runs unconditionally.
pub fn add_guarded_probe(q: &mut FactsQuery, cmd: &str, guard: usize) {
    match q.probes.iter().position(|x| x == cmd) {
        Some(i) if q.guards.get(&i) == Some(&guard) => {}
        Some(i) => {
            q.guards.remove(&i);
        }
        None => {
            q.probes.push(cmd.to_string());
            q.guards.insert(q.probes.len() - 1, guard);
        }
    }
}

/// The probe that tells whether the host's os-release satisfies an OS profile's rule: the file
/// sourced in the probe's own subshell (os-release(5): shell-compatible assignments; the same
/// file the facts read), each key compared with the profile's values. `None` when there is no
/// rule, or a key is not a plain variable name.
pub fn os_guard(detect: &[(String, Vec<String>)]) -> Option<String> {
    let plain = |k: &str| !k.is_empty() && !k.starts_with(|c: char| c.is_ascii_digit()) && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if detect.is_empty() || !detect.iter().all(|(k, vals)| plain(k) && !vals.is_empty()) {
        return None;
    }
    let keys: Vec<&str> = detect.iter().map(|(k, _)| k.as_str()).collect();
    let mut s = format!(
        "unset {}; for rv_f in /etc/os-release /usr/lib/os-release; do if [ -r \"$rv_f\" ]; then . \"$rv_f\"; break; fi; done",
        keys.join(" ")
    );
    for (k, vals) in detect {
        let alts: Vec<String> = vals.iter().map(|v| crate::transport::cmd::quote(v)).collect();
        s.push_str(&format!("; case \"${{{k}-}}\" in {}) ;; *) exit 1;; esac", alts.join("|")));
    }
    Some(s)
}

/// Adds one candidate's probes (`mine`: commands and their guards, by index into them) to `q`,
/// each guarded by its own guard or else by `base` (the candidate's [`os_guard`] probe). A
/// command `q` has already, under another guard or none, runs unconditionally.
pub fn merge_probes(q: &mut FactsQuery, mine: (Vec<String>, BTreeMap<usize, usize>), base: Option<usize>) {
    let (probes, guards) = mine;
    let mut at: Vec<usize> = Vec::with_capacity(probes.len());
    for (i, cmd) in probes.iter().enumerate() {
        let guard = guards.get(&i).and_then(|w| at.get(*w).copied()).or(base);
        let j = match q.probes.iter().position(|x| x == cmd) {
            Some(j) => {
                if q.guards.get(&j).copied() != guard {
                    q.guards.remove(&j);
                }
                j
            }
            None => {
                q.probes.push(cmd.clone());
                if let Some(g) = guard {
                    q.guards.insert(q.probes.len() - 1, g);
                }
                q.probes.len() - 1
            }
        };
        at.push(j);
    }
}

pub fn add_read(q: &mut FactsQuery, p: &str) {
    if !q.reads.iter().any(|x| x == p) {
        q.reads.push(p.to_string());
    }
}

/// The phases in the order they run on a host.
pub fn all() -> Vec<&'static dyn Phase> {
    vec![
        &super::version::Version,
        &super::forget::Forget,
        &super::files::Files,
        &super::removed::Removed,
        &super::symlinks::Symlinks,
        &super::kernel::Kernel,
        &super::steps::Steps,
        &super::service::ServicePhase,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cmd: &str) -> i32 {
        std::process::Command::new("sh").arg("-c").arg(cmd).status().unwrap().code().unwrap_or(-1)
    }

    #[test]
    fn the_os_guard_holds_only_where_os_release_matches() {
        // This machine's own os-release, read the way the facts read it.
        let text = std::fs::read_to_string("/etc/os-release").or_else(|_| std::fs::read_to_string("/usr/lib/os-release")).unwrap();
        let id = text.lines().find_map(|l| l.strip_prefix("ID=")).unwrap().trim_matches(|c| c == '"' || c == '\'').to_string();
        let rule = |vals: &[&str]| vec![("ID".to_string(), vals.iter().map(|v| v.to_string()).collect())];
        assert_eq!(run(&os_guard(&rule(&[&id])).unwrap()), 0);
        assert_eq!(run(&os_guard(&rule(&["not-this-os", &id])).unwrap()), 0);
        assert_ne!(run(&os_guard(&rule(&["not-this-os"])).unwrap()), 0);
        // An ID set in the environment does not count: only the file does.
        assert_ne!(run(&format!("ID=not-this-os; export ID; {}", os_guard(&rule(&["not-this-os"])).unwrap())), 0);
        assert!(os_guard(&[]).is_none());
        assert!(os_guard(&[("ID; rm -rf x".into(), vec!["a".into()])]).is_none());
    }

    #[test]
    fn merged_probes_are_guarded_by_their_profile_unless_another_asks_too() {
        let mut q = FactsQuery::default();
        // Profile A: a shared probe, a `when` and its `check`, a probe of its own.
        let ga = add_probe(&mut q, "guard-a");
        let a = (vec!["shared".to_string(), "when-a".into(), "check-a".into(), "own-a".into()], BTreeMap::from([(2, 1)]));
        merge_probes(&mut q, a, Some(ga));
        let at = |q: &FactsQuery, c: &str| q.probes.iter().position(|p| p == c).unwrap();
        assert_eq!(q.guards.get(&at(&q, "shared")), Some(&ga));
        assert_eq!(q.guards.get(&at(&q, "when-a")), Some(&ga));
        assert_eq!(q.guards.get(&at(&q, "check-a")), Some(&at(&q, "when-a")));
        assert_eq!(q.guards.get(&at(&q, "own-a")), Some(&ga));
        // Profile B asks the shared probe too: it now runs whatever either guard says.
        let gb = add_probe(&mut q, "guard-b");
        merge_probes(&mut q, (vec!["shared".to_string(), "own-b".into()], BTreeMap::new()), Some(gb));
        assert_eq!(q.guards.get(&at(&q, "shared")), None);
        assert_eq!(q.guards.get(&at(&q, "own-b")), Some(&gb));
        assert_eq!(q.guards.get(&at(&q, "own-a")), Some(&ga));
        // Every guard comes before the probe it guards (the facts script needs that).
        assert!(q.guards.iter().all(|(i, g)| g < i));
        // A profile with the same rule (the same guard): its shared probe stays guarded.
        merge_probes(&mut q, (vec!["own-a".to_string()], BTreeMap::new()), Some(ga));
        assert_eq!(q.guards.get(&at(&q, "own-a")), Some(&ga));
    }
}
