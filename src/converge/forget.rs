//! Phase: a re-flashed agent (no unit, no node password on the board) whose name the server still
//! knows must have its node object and node-password secret deleted on the server before it can
//! rejoin (docs/k3s-behaviour.md, re-joining). The driver asks the server only for such a fresh
//! agent; the deletion runs on the server before the agent's script.

use crate::spec::Role;
use crate::transport::cmd::quote;
use crate::transport::{FactsQuery, FileFact};

use super::change::Change;
use super::error::Cause;
use super::phase::{Actions, Desired, Observed, Phase, add_path};

pub const NODE_PASSWORD: &str = "/etc/rancher/node/password";

pub struct Forget;

/// An agent with neither its unit nor a node password: a new or re-flashed board.
pub fn is_fresh(want: &Desired, seen: &Observed) -> bool {
    let absent = |p: &str| matches!(seen.facts.files.get(p), None | Some(FileFact::Absent));
    want.role == Role::Agent && absent(&want.st.service.unit_path) && absent(NODE_PASSWORD)
}

/// The server-side command that says whether the server knows `node` (prints something if so).
pub fn known_probe(k3s: &str, node: &str) -> String {
    format!(
        "{k} kubectl get node {n} -o name 2>/dev/null || {k} kubectl -n kube-system get secret {s} -o name 2>/dev/null",
        k = quote(k3s),
        n = quote(node),
        s = quote(&format!("{node}.node-password.k3s"))
    )
}

pub fn delete_command(k3s: &str, node: &str) -> String {
    format!(
        "{k} kubectl delete node {n} --ignore-not-found && {k} kubectl -n kube-system delete secret {s} --ignore-not-found",
        k = quote(k3s),
        n = quote(node),
        s = quote(&format!("{node}.node-password.k3s"))
    )
}

impl Phase for Forget {
    fn name(&self) -> &'static str {
        "forget-node"
    }
    fn probe(&self, want: &Desired, q: &mut FactsQuery) {
        if want.role == Role::Agent {
            add_path(q, &want.st.service.unit_path);
            add_path(q, NODE_PASSWORD);
        }
    }
    fn plan(&self, want: &Desired, seen: &Observed, _prior: &[Change]) -> Result<Vec<Change>, Cause> {
        Ok(if is_fresh(want, seen) && seen.server_knows_node == Some(true) {
            vec![Change::ForgetNode { node: want.st.node.clone() }]
        } else {
            vec![]
        })
    }
    fn apply(&self, want: &Desired, _seen: &Observed, i: usize, change: &Change, acts: &mut Actions) {
        let _ = want;
        if let Change::ForgetNode { node } = change {
            acts.on_server.push((i, node.clone()));
        }
    }
}
