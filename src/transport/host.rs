//! The backend-neutral [`Host`] trait. A backend implements only [`Host::exec_raw`] (run one
//! command line as the login user, streaming stdin, with a timeout); privilege, uploads, file
//! writes and facts are built on it here, so every backend behaves identically.

use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::cmd;
use super::error::{Result, TransportError};
use super::facts::{self, Facts, FactsQuery};
use super::held::{self, Held};
use super::target::Become;

/// Result of one command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status; `-1` when the command died from a signal or none was reported.
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.status == 0
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Where and how a file should end up on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub path: String,
    pub mode: u32,
    /// `user` or `user:group`; `None` leaves the login user's ownership.
    pub owner: Option<String>,
    /// Also keep a copy at this path (mode 0600, its directory made 0700 when missing), written
    /// from the same stream and verified by the same sha256, unless a file is there already.
    /// The generation store takes an uploaded binary this way instead of copying and hashing it
    /// again afterwards.
    pub keep: Option<String>,
}

impl RemoteFile {
    pub fn new(path: impl Into<String>, mode: u32) -> RemoteFile {
        RemoteFile {
            path: path.into(),
            mode,
            owner: None,
            keep: None,
        }
    }
    pub fn kept_at(mut self, path: impl Into<String>) -> RemoteFile {
        self.keep = Some(path.into());
        self
    }
    pub fn owned_by(mut self, owner: impl Into<String>) -> RemoteFile {
        self.owner = Some(owner.into());
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadOutcome {
    /// The host already had this content (mode and owner were made right).
    Unchanged {
        sha256: String,
    },
    Uploaded {
        sha256: String,
        bytes: u64,
    },
}

impl UploadOutcome {
    pub fn sha256(&self) -> &str {
        match self {
            UploadOutcome::Unchanged { sha256 } | UploadOutcome::Uploaded { sha256, .. } => sha256,
        }
    }
    pub fn changed(&self) -> bool {
        matches!(self, UploadOutcome::Uploaded { .. })
    }
}

/// Hex sha256 of a reader, in constant memory.
pub fn sha256_reader(mut r: impl Read) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n_total = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        n_total += n as u64;
    }
    Ok((hex::encode(h.finalize()), n_total))
}

fn temp_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// One host rvcluster can act on.
pub trait Host: Send {
    /// The node's name (for messages).
    fn name(&self) -> &str;
    /// `host:port` or a description of the backend (for messages).
    fn address(&self) -> String;
    /// How commands needing root are wrapped.
    fn privilege(&self) -> Become;

    /// Run `command` with `sh -c` semantics as the login user (no privilege wrapper), feeding
    /// `stdin` until it ends, collecting stdout and stderr. `timeout` bounds the whole command.
    fn exec_raw(
        &mut self,
        command: &str,
        stdin: &mut dyn Read,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput>;

    /// Run `command` with privilege (see [`Host::privilege`]). A non-zero status is not an
    /// error here, except that `sudo -n` asking for a password is.
    fn exec(
        &mut self,
        command: &str,
        stdin: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput> {
        let mut input: &[u8] = stdin.unwrap_or(&[]);
        self.exec_become(command, &mut input, timeout)
    }

    /// [`Host::exec`] with streamed stdin. With a `timeout`, the host also kills the command
    /// shortly after the deadline ([`cmd::with_host_timeout`]). With a become password, `sudo -S` reads it (and a
    /// marker line) ahead of `stdin`; the marker guarantees the password never reaches the
    /// command even if sudo did not ask for it.
    fn exec_become(
        &mut self,
        command: &str,
        stdin: &mut dyn Read,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput> {
        let limited;
        let command = match timeout {
            Some(t) => {
                limited = cmd::with_host_timeout(command, t);
                limited.as_str()
            }
            None => command,
        };
        let t0 = std::time::Instant::now();
        let logged = cmd::redact_command(command);
        let out = match (self.privilege(), self.become_password()) {
            (Become::Sudo, Some(pw)) => {
                let prefix = format!("{pw}\n{}\n", cmd::BECOME_MARK).into_bytes();
                let mut input = std::io::Read::chain(&prefix[..], stdin);
                let out = self.exec_raw(&cmd::with_sudo_password(command), &mut input, timeout)?;
                if out.status == cmd::BECOME_NOT_ASKED_STATUS && out.stdout.is_empty() {
                    return Err(TransportError::Other {
                        host: self.name().to_string(),
                        detail: "sudo did not ask for the become password (sudoers changed?); \
                                 run again without --ask-become-pass"
                            .into(),
                    });
                }
                out
            }
            (privilege, _) => {
                self.exec_raw(&cmd::with_become(&privilege, command), stdin, timeout)?
            }
        };
        tracing::debug!(host = self.name(), status = out.status, ms = t0.elapsed().as_millis() as u64, cmd = %logged, "remote command");
        self.check_sudo(&out)?;
        Ok(out)
    }

    /// Start `command` with privilege as a held command ([`Held`]): returns once its stdout
    /// printed the line `marker` (or it ended), with the channel kept open and stdin not closed.
    /// `timeout` bounds the time to reach the marker.
    fn exec_held(
        &mut self,
        command: &str,
        marker: &str,
        timeout: Option<Duration>,
    ) -> Result<Box<dyn Held>> {
        tracing::debug!(host = self.name(), cmd = %cmd::redact_command(command), "remote command (held: lock+facts, then the apply script on its stdin)");
        match (self.privilege(), self.become_password()) {
            (Become::Sudo, Some(pw)) => {
                let prefix = format!("{pw}\n{}\n", cmd::BECOME_MARK).into_bytes();
                self.exec_held_raw(&cmd::with_sudo_password(command), &prefix, marker, timeout)
            }
            (privilege, _) => self.exec_held_raw(&cmd::with_become(&privilege, command), &[], marker, timeout),
        }
    }

    /// Backend part of [`Host::exec_held`]: run `command` as is, write `prefix` to its stdin.
    fn exec_held_raw(
        &mut self,
        command: &str,
        prefix: &[u8],
        marker: &str,
        timeout: Option<Duration>,
    ) -> Result<Box<dyn Held>>;

    /// The sudo password set with `--ask-become-pass` (see `SshHost::set_become_password`).
    fn become_password(&self) -> Option<&str> {
        None
    }

    /// Like [`Host::exec`] but a non-zero status is [`TransportError::CommandFailed`], named `what`.
    fn exec_ok(
        &mut self,
        what: &str,
        command: &str,
        stdin: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput> {
        let out = self.exec(command, stdin, timeout)?;
        if !out.success() {
            return Err(TransportError::CommandFailed {
                host: self.name().to_string(),
                what: what.to_string(),
                status: out.status,
                stderr: out.stderr_str().trim().to_string(),
            });
        }
        Ok(out)
    }

    #[doc(hidden)]
    fn check_sudo(&self, out: &ExecOutput) -> Result<()> {
        if self.privilege() == Become::Sudo
            && cmd::is_sudo_password_error(out.status, &out.stderr_str())
        {
            return Err(TransportError::SudoPasswordRequired {
                host: self.name().to_string(),
                user: self.login_user(),
            });
        }
        Ok(())
    }

    /// The user commands run as before privilege (for messages).
    fn login_user(&self) -> String {
        String::new()
    }

    /// Upload a local file: skipped when the host has the same sha256 (mode/owner still fixed),
    /// otherwise streamed to a temp name beside the destination, verified, chmod/chown'ed and
    /// renamed over the destination. Constant memory.
    fn upload(&mut self, local: &Path, dest: &RemoteFile) -> Result<UploadOutcome> {
        let open = || {
            std::fs::File::open(local)
                .map_err(|e| TransportError::io(format!("reading {}", local.display()), e))
        };
        let (sha, _) = sha256_reader(BufReader::new(open()?))
            .map_err(|e| TransportError::io(format!("reading {}", local.display()), e))?;
        let mut file = open()?;
        self.upload_verified(&mut file, &sha, dest)
    }

    /// Upload a local file whose sha256 the caller already knows (a pinned, content-addressed
    /// artifact): no local hashing pass; the host verifies the bytes it received against
    /// `sha256`, so a corrupted cache entry fails with [`TransportError::ShaMismatch`].
    fn upload_pinned(
        &mut self,
        local: &Path,
        sha256: &str,
        dest: &RemoteFile,
    ) -> Result<UploadOutcome> {
        let mut file = std::fs::File::open(local)
            .map_err(|e| TransportError::io(format!("reading {}", local.display()), e))?;
        self.upload_verified(&mut file, &sha256.to_ascii_lowercase(), dest)
    }

    /// Upload `compressed`, the `codec`-compressed form of a file whose sha256 is `sha256`: the
    /// host decompresses while receiving and verifies the uncompressed bytes (same atomic rules).
    fn upload_compressed(
        &mut self,
        compressed: &Path,
        codec: cmd::Codec,
        sha256: &str,
        dest: &RemoteFile,
    ) -> Result<UploadOutcome> {
        let mut file = std::fs::File::open(compressed)
            .map_err(|e| TransportError::io(format!("reading {}", compressed.display()), e))?;
        self.upload_verified_via(&mut file, &sha256.to_ascii_lowercase(), dest, Some(codec))
    }

    /// Write bytes (a rendered file) with the same atomic rules as [`Host::upload`].
    fn write(&mut self, bytes: &[u8], dest: &RemoteFile) -> Result<UploadOutcome> {
        let sha = hex::encode(Sha256::digest(bytes));
        let mut r: &[u8] = bytes;
        self.upload_verified(&mut r, &sha, dest)
    }

    /// Stream `content`, which must hash to `sha256`, to `dest`. The host checks the hash; on a
    /// mismatch the destination is untouched and [`TransportError::ShaMismatch`] is returned.
    fn upload_verified(
        &mut self,
        content: &mut dyn Read,
        sha256: &str,
        dest: &RemoteFile,
    ) -> Result<UploadOutcome> {
        self.upload_verified_via(content, sha256, dest, None)
    }

    #[doc(hidden)]
    fn upload_verified_via(
        &mut self,
        content: &mut dyn Read,
        sha256: &str,
        dest: &RemoteFile,
        codec: Option<cmd::Codec>,
    ) -> Result<UploadOutcome> {
        let owner = dest.owner.as_deref();
        let tmp = cmd::temp_path_for(&dest.path, &temp_suffix());
        let script = cmd::upload_stream_kept(&dest.path, &tmp, sha256, dest.mode, owner, codec, dest.keep.as_deref());
        let mut counting = CountingReader {
            inner: content,
            n: 0,
        };
        let out = self.exec_become(&script, &mut counting, None)?;
        let n = counting.n;
        upload_outcome(self.name(), &out, sha256, dest, n)
    }

    /// Gather facts in one round trip (run with privilege, so root-only files are readable).
    fn facts(&mut self, query: &FactsQuery) -> Result<Facts> {
        let out = self.exec_ok("gathering facts", &facts::script(query), None, None)?;
        facts::parse(query, &out.stdout_str()).map_err(|e| TransportError::Facts {
            host: self.name().to_string(),
            detail: e.to_string(),
        })
    }
}

/// What an upload command's answer means: the sha256 mismatch (its exit status and stderr line),
/// another failure, the file already there (`present`), or `bytes` sent.
fn upload_outcome(host: &str, out: &ExecOutput, sha256: &str, dest: &RemoteFile, bytes: u64) -> Result<UploadOutcome> {
    let stderr = out.stderr_str();
    if out.status == cmd::SHA_MISMATCH_STATUS
        && let Some(actual) = stderr.lines().find_map(|l| l.strip_prefix(cmd::SHA_MISMATCH_MARK))
    {
        return Err(TransportError::ShaMismatch {
            host: host.to_string(),
            dest: dest.path.clone(),
            expected: sha256.to_string(),
            actual: actual.trim().to_string(),
        });
    }
    if !out.success() {
        return Err(TransportError::CommandFailed {
            host: host.to_string(),
            what: format!("uploading {}", dest.path),
            status: out.status,
            stderr: stderr.trim().to_string(),
        });
    }
    if out.stdout_str().trim() == "present" {
        // The host had it already and never read the data (the rest was drained or never sent).
        return Ok(UploadOutcome::Unchanged { sha256: sha256.to_string() });
    }
    Ok(UploadOutcome::Uploaded { sha256: sha256.to_string(), bytes })
}

/// [`Host::upload_compressed`] (`codec` given) or [`Host::upload_pinned`] as a request on a held
/// command ([`Held::exchange`], answered by the lock+facts command, src/converge/session.rs):
/// the same command, run by the shell that already holds the board lock, with privilege, so no
/// second channel or login shell. `local` (the file to send: the compressed form when `codec`)
/// must be `len` bytes; the host verifies the uncompressed sha256 as ever. `None` when the
/// command cannot travel as one line (a path with a newline): the caller uploads on its own
/// channel instead.
pub fn upload_held(
    held: &mut dyn Held,
    host: &str,
    local: &Path,
    codec: Option<cmd::Codec>,
    sha256: &str,
    dest: &RemoteFile,
) -> Option<Result<UploadOutcome>> {
    let sha256 = sha256.to_ascii_lowercase();
    let tmp = cmd::temp_path_for(&dest.path, &temp_suffix());
    let command = cmd::upload_stream_body(&dest.path, &tmp, &sha256, dest.mode, dest.owner.as_deref(), codec, dest.keep.as_deref(), true);
    if command.contains('\n') {
        return None;
    }
    Some((|| {
        let read_err = |e| TransportError::io(format!("reading {}", local.display()), e);
        let file = std::fs::File::open(local).map_err(read_err)?;
        let len = file.metadata().map_err(read_err)?.len();
        let head = format!("{}{len}\n{command}\n", held::UPLOAD_REQUEST);
        // Exactly `len` bytes whatever happens to the file meanwhile (the host reads that many
        // before the next request): short is padded, and the hash check fails.
        let data = Exact { inner: file.take(len), left: len };
        let mut input = std::io::Read::chain(head.as_bytes(), data);
        let t0 = std::time::Instant::now();
        let (stdout, stderr) = held.exchange(&mut input, held::UPLOAD_END, None)?;
        let text = String::from_utf8_lossy(&stdout);
        let mut status = -1;
        let mut said = String::new();
        for line in text.lines() {
            if let Some(s) = line.strip_prefix(held::UPLOAD_STATUS) {
                status = s.trim().parse().unwrap_or(-1);
            } else if line != held::UPLOAD_END {
                said.push_str(line);
                said.push('\n');
            }
        }
        said.push_str(&String::from_utf8_lossy(&stderr));
        // The command's stdout and stderr arrive as one stream: both are looked at.
        let out = ExecOutput { status, stdout: said.clone().into_bytes(), stderr: said.into_bytes() };
        tracing::debug!(host, status, ms = t0.elapsed().as_millis() as u64, bytes = len, cmd = %cmd::redact_command(&command), "remote command (upload, a request on the held command)");
        upload_outcome(host, &out, &sha256, dest, len)
    })())
}

/// A reader that yields exactly `left` bytes: the inner reader's, then zeros if it ends early.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left as usize);
        let n = match self.inner.read(&mut buf[..want])? {
            0 => {
                buf[..want].fill(0);
                want
            }
            n => n,
        };
        self.left -= n as u64;
        Ok(n)
    }
}

struct CountingReader<'a> {
    inner: &'a mut dyn Read,
    n: u64,
}

impl Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}
