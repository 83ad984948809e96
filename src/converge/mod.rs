//! Converge: bring each host to its rendered desired state, as named phases that batch into ONE
//! remote command per host (k0sctl's phases, with pyinfra's facts): the lock+facts command
//! ([`session`]) gathers what every phase probes; each phase ([`version`], [`forget`],
//! [`files`], [`removed`], [`symlinks`], [`kernel`], [`steps`], [`service`]) turns facts +
//! desired state into [`Change`]s with a pure function and contributes fragments to the one
//! apply [`script`]; the [`driver`] decides once whether anything runs (plan = apply run dry,
//! the same code). [`run`] orders hosts: registry host, server, then agents in parallel.
//! Owns the order of operations on a host; builds shell text only through
//! `transport::cmd::quote`, and never prints a secret.

// ConvergeError carries the transport error with its miette help (a few hundred bytes); it is
// built once per failed host, never in a loop.
#![allow(clippy::result_large_err)]

pub mod change;
pub mod confirm;
pub mod context;
pub mod driver;
pub mod error;
pub mod files;
pub mod forget;
pub mod interrupt;
pub mod kernel;
pub mod phase;
pub mod removed;
pub mod run;
pub mod script;
pub mod service;
pub mod session;
pub mod steps;
pub mod symlinks;
pub mod upgrade;
pub mod version;
#[cfg(test)]
pub(crate) mod testutil;

pub use change::{Change, unified_diff};
pub use context::{Ctx, known_hosts_path, target_spec};
pub use error::{Cause, ConvergeError};
pub use run::{HostGeneration, HostPlan, HostRole, converge_registry, k3s_on, node_profile, run_nodes, totals, wait_registry_healthy};
pub use session::{LOCK_FILE, STATE_DIR};

/// The registry password from its file or environment variable (never printed).
pub fn registry_password(c: &crate::spec::Cluster) -> Result<Option<String>, crate::spec::SecretError> {
    match c.registry.as_ref().and_then(|r| r.auth.as_ref()) {
        Some(a) => a.password.read().map(Some),
        None => Ok(None),
    }
}
