//! Converge errors: which host, in which phase, and why. Transport errors keep their miette
//! code and help; nothing here ever carries a secret or a file's content.

use crate::transport::TransportError;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{phase}: {cause}")]
pub struct ConvergeError {
    pub host: String,
    pub phase: &'static str,
    #[source]
    #[diagnostic_source]
    pub cause: Cause,
}

impl ConvergeError {
    pub fn new(host: &str, phase: &'static str, cause: impl Into<Cause>) -> ConvergeError {
        ConvergeError { host: host.to_string(), phase, cause: cause.into() }
    }
}

impl serde::Serialize for ConvergeError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("phase", self.phase)?;
        m.serialize_entry("message", &self.cause.to_string())?;
        m.serialize_entry("code", &miette::Diagnostic::code(&self.cause).map(|c| c.to_string()))?;
        m.end()
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Cause {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Transport(#[from] TransportError),

    /// A local input (a manifest, a CA file, a downloaded binary) could not be used.
    #[error("{0}")]
    #[diagnostic(code(rvcluster::converge::input))]
    Input(String),

    /// The k3s binary named by `url=` could not be fetched into the local cache (shared by
    /// every host the failure stops).
    #[error(transparent)]
    #[diagnostic(code(rvcluster::converge::input))]
    Artifact(std::sync::Arc<crate::artifact::ArtifactError>),

    /// The registry client for the registry host could not be made.
    #[error(transparent)]
    #[diagnostic(code(rvcluster::converge::input))]
    Images(#[from] crate::images::ImagesError),

    /// A host's desired state could not be rendered from local inputs.
    #[error(transparent)]
    #[diagnostic(code(rvcluster::converge::input))]
    Render(#[from] crate::render::RenderError),

    #[error("{0}")]
    #[diagnostic(code(rvcluster::converge::profile), help("set profile= on the node, or add an OS profile under profiles/os/"))]
    Profile(String),

    #[error("another rvcluster apply holds the lock on this host ({owner}); it is released when that apply ends or its connection drops")]
    #[diagnostic(code(rvcluster::converge::locked), help("wait for the other apply to finish, then run again"))]
    Locked { owner: String },

    #[error("`flock` (util-linux) is missing on the host; rvcluster needs it for the board lock")]
    #[diagnostic(code(rvcluster::converge::no_flock))]
    NoFlock,

    #[error(
        "the pinned k3s binary reports `{got}` but cluster.kdl says version=\"{want}\"; set version= to what the binary is (its system images come from profiles/k3s/<version>.kdl)"
    )]
    #[diagnostic(code(rvcluster::converge::version_mismatch))]
    VersionMismatch { got: String, want: String },

    #[error("{what} failed (exit status {status}){}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    #[diagnostic(code(rvcluster::converge::step_failed))]
    StepFailed { what: String, status: i32, stderr: String },

    #[error("the host's answer could not be read: {0}")]
    #[diagnostic(code(rvcluster::converge::facts))]
    Facts(crate::transport::facts::FactsError),

    #[error("the apply script did not arrive whole (connection lost?); nothing of it was run")]
    #[diagnostic(code(rvcluster::converge::script_truncated))]
    ScriptTruncated,

    #[error("the server {} failed, so no agent can join it", .0.server)]
    #[diagnostic(code(rvcluster::converge::server_failed))]
    ServerFailed(super::driver::ServerDown),

    #[error("the server's token did not appear within 60 s of starting k3s (see `journalctl -u k3s` on the server)")]
    #[diagnostic(code(rvcluster::converge::no_token))]
    NoToken,

    #[error("interrupted: {}", if *partial { "half done (what was written is whole; apply again to finish)" } else { "untouched" })]
    #[diagnostic(code(rvcluster::converge::interrupted), help("apply again: it finishes the job, no manual step is needed"))]
    Interrupted { partial: bool },

    #[error("the node did not come back after the change: {reason}; {rolled_back}{}", if logs.is_empty() { String::new() } else { format!("\n  last log lines:\n{}", logs.lines().map(|l| format!("    | {l}")).collect::<Vec<_>>().join("\n")) })]
    #[diagnostic(code(rvcluster::converge::not_confirmed), help("`rvcluster generations` lists what each host has; fix cluster.kdl and apply again (--no-rollback keeps a failing change for debugging)"))]
    NotConfirmed { reason: super::confirm::NotHealthy, logs: String, rolled_back: String },

    #[error("drain of {node} failed, so k3s was not restarted on it (it is uncordoned again):\n{output}")]
    #[diagnostic(code(rvcluster::converge::drain_failed), help("pods without a controller stop a drain: delete them, or --force-drain; --no-drain restarts without draining"))]
    DrainFailed { node: String, output: String },

    #[error("not changed: {by} failed its health gate, so apply stopped before this host")]
    #[diagnostic(code(rvcluster::converge::halted))]
    Halted { by: String },

    #[error("the registry at {endpoint} did not become healthy: {last}")]
    #[diagnostic(code(rvcluster::converge::registry_unhealthy))]
    RegistryUnhealthy { endpoint: String, last: String },
}
