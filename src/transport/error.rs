//! Errors of the transport. Every variant names the host (and address where it matters) and
//! never carries a secret: no passphrases, no command text, no file contents.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum TransportError {
    #[error("{host} ({address}): cannot connect: {cause}")]
    #[diagnostic(code(rvcluster::ssh::unreachable))]
    Unreachable {
        host: String,
        address: String,
        cause: String,
    },

    #[error("{host} ({address}): SSH handshake failed: {cause}")]
    #[diagnostic(code(rvcluster::ssh::handshake))]
    Handshake {
        host: String,
        address: String,
        cause: String,
    },

    #[error(
        "{host} ({address}): host key is not known\n  {key_type} key fingerprint is {fingerprint}\n  \
         nothing was sent to this host; if the fingerprint is right, record it with:\n    \
         rvcluster trust {host}\n  (or pass --accept-new to apply)"
    )]
    #[diagnostic(
        code(rvcluster::ssh::unknown_host_key),
        help(
            "compare the fingerprint with `ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` on the board's console"
        )
    )]
    UnknownHostKey {
        host: String,
        address: String,
        key_type: String,
        fingerprint: String,
    },

    #[error(
        "{host} ({address}): HOST KEY HAS CHANGED (possible man-in-the-middle, or a re-flashed board)\n  \
         the host offered {fingerprint}\n  recorded in {recorded_in}: {recorded_fingerprint}\n  \
         refusing to connect; if the board was re-flashed, replace the entry with:\n    \
         rvcluster trust {host} --replace"
    )]
    #[diagnostic(code(rvcluster::ssh::changed_host_key))]
    ChangedHostKey {
        host: String,
        address: String,
        /// `type SHA256:...` of the key the host presented.
        fingerprint: String,
        recorded_in: String,
        recorded_fingerprint: String,
    },

    #[error("{host} ({address}): host key {fingerprint} is marked @revoked in {recorded_in}")]
    #[diagnostic(code(rvcluster::ssh::revoked_host_key))]
    RevokedHostKey {
        host: String,
        address: String,
        fingerprint: String,
        recorded_in: String,
    },

    #[error("{host} ({address}): authentication as {user} failed; tried: {tried}")]
    #[diagnostic(
        code(rvcluster::ssh::auth),
        help(
            "set `user` and `identity` for the node, load the key into ssh-agent, or set RVCLUSTER_SSH_PASSPHRASE for an encrypted key"
        )
    )]
    Auth {
        host: String,
        address: String,
        user: String,
        tried: String,
    },

    #[error("{host}: sudo on the host asks for a password (user {user})")]
    #[diagnostic(
        code(rvcluster::ssh::sudo_password),
        help(
            "log in as root, allow the user `NOPASSWD` sudo (e.g. `{user} ALL=(ALL) NOPASSWD: ALL` in /etc/sudoers.d/), or pass --ask-become-pass"
        )
    )]
    SudoPasswordRequired { host: String, user: String },

    #[error("{host}: sudo rejected the become password for {user}")]
    #[diagnostic(code(rvcluster::ssh::sudo_password_rejected))]
    BecomePasswordRejected { host: String, user: String },

    #[error("{host}: {what} timed out after {after:?}")]
    #[diagnostic(code(rvcluster::ssh::timeout))]
    Timeout {
        host: String,
        what: String,
        after: Duration,
    },

    #[error("{host}: {what} failed: {cause}")]
    #[diagnostic(code(rvcluster::ssh::session))]
    Session {
        host: String,
        what: String,
        cause: String,
    },

    #[error("{host}: {what} exited with status {status}: {stderr}")]
    #[diagnostic(code(rvcluster::ssh::command_failed))]
    CommandFailed {
        host: String,
        what: String,
        status: i32,
        stderr: String,
    },

    #[error(
        "{host}: upload to {dest} arrived corrupted (sha256 on the host {actual}, expected {expected}); the old file was left in place"
    )]
    #[diagnostic(code(rvcluster::ssh::sha_mismatch))]
    ShaMismatch {
        host: String,
        dest: String,
        expected: String,
        actual: String,
    },

    #[error("{context}: {source}")]
    #[diagnostic(code(rvcluster::ssh::io))]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: {detail}")]
    #[diagnostic(code(rvcluster::ssh::known_hosts))]
    KnownHosts { path: PathBuf, detail: String },

    #[error("{what}: {detail}")]
    #[diagnostic(code(rvcluster::ssh::config))]
    Config { what: String, detail: String },

    #[error("{host}: cannot read facts: {detail}")]
    #[diagnostic(code(rvcluster::ssh::facts))]
    Facts { host: String, detail: String },

    #[error("{host}: {detail}")]
    #[diagnostic(code(rvcluster::ssh::failed))]
    Other { host: String, detail: String },
}

impl TransportError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        TransportError::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = TransportError> = std::result::Result<T, E>;
