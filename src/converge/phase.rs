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

/// A large local file streamed on its own channel before the script runs.
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
