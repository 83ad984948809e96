//! Errors of the registry client. Messages never contain credentials or tokens.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach registry {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The connection broke mid-request (retried by uploads before surfacing).
    #[error("connection to {url} failed during {what}: {reason}")]
    Transport { url: String, what: String, reason: String },
    #[error("registry {url} refused {what} (HTTP {status}): {hint}")]
    Unauthorized { url: String, what: String, status: u16, hint: String },
    #[error("registry {url} answered HTTP {status} to {what}: {body}")]
    Http { url: String, what: String, status: u16, body: String },
    #[error("TLS setup for {url}: {reason}")]
    Tls { url: String, reason: String },
    #[error("cannot read {}: {reason}", path.display())]
    Io { path: PathBuf, reason: String },
    #[error("{source_desc}: {reason}")]
    BadSource { source_desc: String, reason: String },
    #[error("{source_desc} has no linux/riscv64 image; it has: {}", if platforms.is_empty() { "no platform information".to_string() } else { platforms.join(", ") })]
    NoRiscv64 { source_desc: String, platforms: Vec<String> },
    #[error("{what} in {source_desc} does not match its digest {expected} (got {actual}): the source is corrupted")]
    DigestMismatch { source_desc: String, what: String, expected: String, actual: String },
    #[error("{image}: the registry rejected blob {digest} because its content does not match the digest: the source is corrupted")]
    BlobRejected { image: String, digest: String },
    #[error("{image}: read back manifest digest {actual}, expected {expected}")]
    VerifyFailed { image: String, expected: String, actual: String },
    #[error("{image}: the source's linux/riscv64 manifest is {actual} but the lock file pins {expected}")]
    LockMismatch { image: String, expected: String, actual: String },
    /// Any failure while one blob of an image goes up (registry down, disk full): which image
    /// and which blob, then why.
    #[error("{image}: blob {digest}: {source}")]
    InBlob { image: String, digest: String, source: Box<RegistryError> },
    /// More than one blob of an image failed while going up together (a full disk or a registry
    /// gone fails every upload under way): each with its own cause, in the image's blob order.
    #[error("{first}{}", others.iter().map(|e| format!("\n  and {e}")).collect::<String>())]
    Blobs { first: Box<RegistryError>, others: Vec<RegistryError> },
    #[error("gave up on blob {digest} after {attempts} attempts: {last}")]
    RetriesExhausted { digest: String, attempts: u32, last: String },
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
