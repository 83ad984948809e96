//! What converge would do on a host, one [`Change`] per action, as plan prints it and apply
//! carries it out. Pure data: no host access here.

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Change {
    CreateFile { path: String, mode: String, detail: String },
    UpdateFile { path: String, mode: String, diff: String },
    FixMode { path: String, from: String, to: String },
    Symlink { path: String, target: String },
    Step { name: String },
    /// A changed sysctl drop-in is applied at once (after loading the profile's modules).
    Sysctl { path: String },
    DaemonReload,
    Enable { unit: String },
    Start { unit: String },
    Restart { unit: String, because: Vec<String> },
    /// A file rvcluster wrote on an earlier apply that cluster.kdl no longer asks for.
    RemoveFile { path: String },
    /// A fresh agent whose old node object must go before it can rejoin
    /// (docs/k3s-behaviour.md §8 node password, re-joining).
    ForgetNode { node: String },
    /// The node moves to another k3s release (orchestrated: docs/upgrades.md).
    Upgrade { from: String, to: String },
}

impl Change {
    pub fn describe(&self) -> String {
        match self {
            Change::CreateFile { path, mode, detail } => format!("+ create {path} ({mode}) {detail}"),
            Change::UpdateFile { path, mode, diff } => format!("~ update {path} ({mode})\n{diff}"),
            Change::FixMode { path, from, to } => format!("~ mode {path} {from} -> {to}"),
            Change::Symlink { path, target } => format!("+ link {path} -> {target}"),
            Change::Step { name } => format!("+ step: {name}"),
            Change::Sysctl { path } => format!("~ sysctl -p {path}"),
            Change::DaemonReload => "~ systemctl daemon-reload".into(),
            Change::Enable { unit } => format!("+ enable {unit}"),
            Change::Start { unit } => format!("+ start {unit}"),
            Change::Restart { unit, because } => format!("~ restart {unit} (changed: {})", because.join(", ")),
            Change::RemoveFile { path } => format!("- remove {path} (managed by rvcluster, no longer wanted)"),
            Change::Upgrade { from, to } => format!("~ upgrade k3s {from} -> {to}"),
            Change::ForgetNode { node } => {
                format!("- delete node {node} and its node-password secret on the server (re-flashed board rejoins)")
            }
        }
    }

    /// A short label for progress lines and errors (no diff, no secret).
    pub fn label(&self) -> String {
        self.describe().lines().next().unwrap_or("").to_string()
    }
}

/// A unified diff of text content (for plan output).
pub fn unified_diff(old: &str, new: &str, path: &str) -> String {
    let d = similar::TextDiff::from_lines(old, new);
    let text = d.unified_diff().context_radius(2).header(&format!("a{path}"), &format!("b{path}")).to_string();
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

pub fn mode_str(m: u32) -> String {
    format!("{m:04o}")
}
