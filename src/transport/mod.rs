//! transport: how rvcluster reaches a host and what it may do there.
//!
//! Owns: connecting over SSH (ssh2) with host-key verification (pinned key, project
//! known_hosts, ~/.ssh/known_hosts), authentication, the ~/.ssh/config subset, privilege
//! escalation, running commands, atomic uploads, the one-round-trip facts script, and running
//! many hosts in parallel with progress. Every command string sent to a host is built by a
//! pure function in [`cmd`] or [`facts`] with every value shell-quoted.
//!
//! Must not touch: the cluster.kdl model (spec), rendering or planning. Callers map their nodes
//! onto [`TargetSpec`] / [`Target`]; this module knows nothing about k3s beyond the facts it is
//! asked to gather.

pub mod cmd;
pub mod error;
pub mod facts;
pub mod held;
pub mod host;
pub mod known_hosts;
pub mod local;
pub mod parallel;
pub mod ssh;
pub mod ssh_config;
#[cfg(test)]
pub(crate) mod stub;
pub mod target;

pub use error::TransportError;
pub use facts::{Facts, FactsQuery, FileFact, ServiceFact};
pub use held::Held;
pub use host::{ExecOutput, Host, RemoteFile, UploadOutcome};
pub use known_hosts::{HostKeyPolicy, TrustOutcome, fingerprint_sha256, trust, trust_with};
pub use local::LocalHost;
pub use parallel::{Event, EventKind, HostOutcome, Named, Reporter, Summary, pool, pool_or, run_parallel};
pub use ssh::{AuthConfig, SshHost};
pub use ssh_config::SshConfig;
pub use target::{Become, Target, TargetSpec};
