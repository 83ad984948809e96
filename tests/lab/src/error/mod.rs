//! Errors of the lab. Owns the error type only; every other module returns it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A prerequisite of the machine is missing; `fix` says exactly what to install or run.
    #[error("{what}\n  fix: {fix}")]
    Missing { what: String, fix: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{what} did not become ready: {detail}")]
    NotReady { what: String, detail: String },
    #[error("no free loopback block for a lab (all candidates locked or in use)")]
    NoAddress,
    #[error("invalid lab setup: {0}")]
    Invalid(String),
    #[error("unknown board `{0}`")]
    UnknownBoard(String),
    #[error("lab state directory {0} has no running lab")]
    NoLab(PathBuf),
}

pub type Result<T, E = LabError> = std::result::Result<T, E>;

/// Attaches a context string to an io::Error.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| LabError::Io {
            context: context(),
            source,
        })
    }
}
