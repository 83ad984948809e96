//! [`SshHost`]: the ssh2 (libssh2) backend. Connect (directly or through ProxyJump hops over
//! direct-tcpip channels), verify the host key *before* authenticating, authenticate (agent,
//! key files, encrypted keys), and run commands on non-blocking channels so stdout, stderr and
//! stdin flow together with a deadline. Blocking code, one thread per host.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ssh2::{BlockDirections, Channel, MethodType, Session};

use super::error::{Result, TransportError};
use super::host::{ExecOutput, Host};
use super::known_hosts::{self, HostKeyPolicy, PublicKey, Verdict};
use super::target::{Become, Target};

/// Environment variable holding the passphrase of encrypted identity files.
pub const PASSPHRASE_ENV: &str = "RVCLUSTER_SSH_PASSPHRASE";
/// Keepalive interval (seconds) while a command runs.
pub const KEEPALIVE_SECS: u32 = 15;

const CIPHERS: &[&str] = &[
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
    "chacha20-poly1305@openssh.com",
];

/// A connected, verified and authenticated SSH host.
pub struct SshHost {
    name: String,
    address: String,
    user: String,
    privilege: Become,
    // Field order matters: the session is dropped before the tunnel it runs through.
    session: Session,
    fd: RawFd,
    _tunnel: Option<Tunnel>,
    become_password: Option<String>,
    accepted_new_key: Option<String>,
}

impl std::fmt::Debug for SshHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshHost")
            .field("name", &self.name)
            .field("address", &self.address)
            .finish()
    }
}

/// Where credentials come from. [`AuthConfig::from_env`] reads HOME, SSH_AUTH_SOCK and
/// RVCLUSTER_SSH_PASSPHRASE; tests build one explicitly.
#[derive(Clone, Default)]
pub struct AuthConfig {
    /// For the default identity files (~/.ssh/id_ed25519, id_ecdsa, id_rsa).
    pub home: Option<PathBuf>,
    /// ssh-agent socket to try keys from (SSH_AUTH_SOCK).
    pub agent_socket: Option<PathBuf>,
    /// Passphrase for encrypted identity files. Never printed.
    pub passphrase: Option<String>,
    /// Ask on the terminal for a passphrase when none is given (only when stdin/stderr are terminals).
    pub prompt: bool,
    /// Passphrases asked on the terminal, once per key, shared by the clones of this config (one
    /// run's connections), never written anywhere.
    pub asked: Arc<Mutex<HashMap<PathBuf, String>>>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("home", &self.home)
            .field("agent_socket", &self.agent_socket)
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .field("prompt", &self.prompt)
            .finish()
    }
}

impl AuthConfig {
    pub fn from_env() -> AuthConfig {
        AuthConfig {
            home: std::env::var_os("HOME").map(PathBuf::from),
            agent_socket: std::env::var_os("SSH_AUTH_SOCK")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            passphrase: std::env::var(PASSPHRASE_ENV).ok(),
            prompt: true,
            asked: Arc::default(),
        }
    }
}

impl SshHost {
    /// Connect with credentials from the environment ([`AuthConfig::from_env`]).
    pub fn connect(target: &Target, policy: &HostKeyPolicy) -> Result<SshHost> {
        SshHost::connect_with(target, policy, &AuthConfig::from_env())
    }

    /// Connect (through ProxyJump hops), verify the host key with `policy` before anything is
    /// sent, then authenticate with `auth`.
    pub fn connect_with(
        target: &Target,
        policy: &HostKeyPolicy,
        auth: &AuthConfig,
    ) -> Result<SshHost> {
        let exp = policy.expectation(target)?;
        let algorithms = exp.algorithms();
        let (session, fd, tunnel) = open_transport(target, policy, auth, &algorithms)?;
        let key = presented_key(&session, target)?;
        let mut accepted = None;
        match known_hosts::judge(&exp, &key) {
            Verdict::Trusted => {}
            Verdict::Unknown if policy.accept_new && policy.write_path().is_some() => {
                let path = policy.write_path().expect("checked");
                accepted = Some(format!(
                    "{} {} (recorded in {})",
                    key.key_type,
                    key.fingerprint(),
                    path.display()
                ));
                known_hosts::write_entry(
                    path,
                    &known_hosts::lookup_name(&target.host, target.port),
                    &key,
                    false,
                )?;
            }
            Verdict::Unknown => {
                return Err(TransportError::UnknownHostKey {
                    host: target.name.clone(),
                    address: target.address(),
                    key_type: key.key_type.clone(),
                    fingerprint: key.fingerprint(),
                });
            }
            Verdict::Changed {
                recorded_in,
                recorded_fingerprint,
            } => {
                return Err(TransportError::ChangedHostKey {
                    host: target.name.clone(),
                    address: target.address(),
                    fingerprint: format!("{} {}", key.key_type, key.fingerprint()),
                    recorded_in,
                    recorded_fingerprint,
                });
            }
            Verdict::Revoked { recorded_in } => {
                return Err(TransportError::RevokedHostKey {
                    host: target.name.clone(),
                    address: target.address(),
                    fingerprint: key.fingerprint(),
                    recorded_in,
                });
            }
        }
        authenticate(&session, target, auth)?;
        session.set_keepalive(true, KEEPALIVE_SECS);
        Ok(SshHost {
            name: target.name.clone(),
            address: target.address(),
            user: target.user.clone(),
            privilege: target.privilege,
            session,
            fd,
            _tunnel: tunnel,
            become_password: None,
            accepted_new_key: accepted,
        })
    }

    /// `--ask-become-pass`: when this host's privilege is sudo and `sudo -n` is refused, check
    /// `password` with sudo once and use it for every later command (fed on stdin, never on a
    /// command line). Returns whether the password is in use (false: root login or NOPASSWD).
    pub fn set_become_password(&mut self, password: &str) -> Result<bool> {
        self.become_password = None;
        if self.privilege != Become::Sudo {
            return Ok(false);
        }
        let mut none: &[u8] = &[];
        let probe = self.exec_raw("sudo -n true", &mut none, Some(Duration::from_secs(60)))?;
        if probe.success() {
            return Ok(false);
        }
        let mut line = format!("{password}\n").into_bytes();
        let check = self.exec_raw(
            &super::cmd::sudo_password_check(),
            &mut &line[..],
            Some(Duration::from_secs(60)),
        )?;
        line.iter_mut().for_each(|b| *b = 0);
        if !check.success() {
            return Err(TransportError::BecomePasswordRejected {
                host: self.name.clone(),
                user: self.user.clone(),
            });
        }
        self.become_password = Some(password.to_string());
        Ok(true)
    }

    /// With `accept_new`: the key that was unknown and got recorded by this connection
    /// (`type SHA256:... (recorded in PATH)`), for the caller to show.
    pub fn accepted_new_key(&self) -> Option<&str> {
        self.accepted_new_key.as_deref()
    }

    /// The underlying session (for callers needing SFTP or port forwarding).
    pub fn session(&self) -> &Session {
        &self.session
    }

    fn session_err(&self, what: &str, e: impl std::fmt::Display) -> TransportError {
        TransportError::Session {
            host: self.name.clone(),
            what: what.into(),
            cause: e.to_string(),
        }
    }
}

impl Drop for SshHost {
    fn drop(&mut self) {
        self.session.set_blocking(true);
        self.session.set_timeout(2000);
        let _ = self.session.disconnect(None, "rvcluster done", None);
    }
}

/// Fetch the host key a target presents, without authenticating. ProxyJump hops are verified
/// with `policy` as usual.
pub fn fetch_host_key(
    target: &Target,
    policy: &HostKeyPolicy,
    auth: &AuthConfig,
    algorithms: &[&str],
) -> Result<PublicKey> {
    let (session, _fd, _tunnel) = open_transport(target, policy, auth, algorithms)?;
    let key = presented_key(&session, target)?;
    let _ = session.disconnect(None, "rvcluster trust", None);
    Ok(key)
}

fn presented_key(session: &Session, target: &Target) -> Result<PublicKey> {
    let (blob, _) = session
        .host_key()
        .ok_or_else(|| TransportError::Handshake {
            host: target.name.clone(),
            address: target.address(),
            cause: "the host presented no host key".into(),
        })?;
    let key_type = known_hosts::blob_key_type(blob).ok_or_else(|| TransportError::Handshake {
        host: target.name.clone(),
        address: target.address(),
        cause: "the host key is malformed".into(),
    })?;
    Ok(PublicKey {
        key_type,
        blob: blob.to_vec(),
    })
}

fn supported(session: &Session, kind: MethodType, wanted: &[&str]) -> Vec<String> {
    let have = session.supported_algs(kind).unwrap_or_default();
    wanted
        .iter()
        .filter(|w| have.contains(w))
        .map(|w| w.to_string())
        .collect()
}

/// TCP (or tunnel) + SSH handshake offering exactly `host_key_algorithms`.
fn open_transport(
    target: &Target,
    policy: &HostKeyPolicy,
    auth: &AuthConfig,
    host_key_algorithms: &[&str],
) -> Result<(Session, RawFd, Option<Tunnel>)> {
    let unreachable = |cause: String| TransportError::Unreachable {
        host: target.name.clone(),
        address: target.address(),
        cause,
    };
    let mut session = Session::new().map_err(|e| unreachable(e.to_string()))?;
    let (fd, tunnel) = if let Some(jump) = &target.proxy_jump {
        let jump_host = SshHost::connect_with(jump, policy, auth).map_err(|e| {
            unreachable(format!(
                "through ProxyJump {} ({}): {e}",
                jump.name,
                jump.address()
            ))
        })?;
        let (stream, tunnel) = Tunnel::open(jump_host, &target.host, target.port)
            .map_err(|e| unreachable(format!("through ProxyJump {}: {e}", jump.address())))?;
        let fd = stream.as_raw_fd();
        session.set_tcp_stream(stream);
        (fd, Some(tunnel))
    } else {
        let addrs: Vec<_> = (target.host.as_str(), target.port)
            .to_socket_addrs()
            .map_err(|e| unreachable(format!("cannot resolve: {e}")))?
            .collect();
        let mut last = None;
        let mut stream = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, target.connect_timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = stream.ok_or_else(|| {
            unreachable(match last {
                Some(e) if e.kind() == ErrorKind::TimedOut => {
                    format!("no answer within {:?}", target.connect_timeout)
                }
                Some(e) => e.to_string(),
                None => "the name resolved to no address".into(),
            })
        })?;
        let _ = stream.set_nodelay(true);
        let fd = stream.as_raw_fd();
        session.set_tcp_stream(stream);
        (fd, None)
    };
    let handshake_err = |cause: String| TransportError::Handshake {
        host: target.name.clone(),
        address: target.address(),
        cause,
    };
    let hk = supported(&session, MethodType::HostKey, host_key_algorithms);
    if hk.is_empty() {
        return Err(handshake_err(format!(
            "none of the host-key types on record ({}) is supported",
            host_key_algorithms.join(", ")
        )));
    }
    session
        .method_pref(MethodType::HostKey, &hk.join(","))
        .map_err(|e| handshake_err(e.to_string()))?;
    for kind in [MethodType::CryptCs, MethodType::CryptSc] {
        let c = supported(&session, kind, CIPHERS);
        if !c.is_empty() {
            let _ = session.method_pref(kind, &c.join(","));
        }
    }
    let ms = target
        .connect_timeout
        .as_millis()
        .clamp(1, u32::MAX as u128) as u32;
    session.set_timeout(ms);
    session.handshake().map_err(|e| {
        let mut cause = e.to_string();
        let recorded = host_key_algorithms != known_hosts::DEFAULT_HOST_KEY_ALGORITHMS;
        match e.code() {
            // LIBSSH2_ERROR_KEX_FAILURE: no common algorithm, typically the host-key type.
            ssh2::ErrorCode::Session(-5) if recorded => {
                cause = format!(
                    "{cause}; the host offers none of the host-key types on record ({}); if the board \
                     was re-flashed, run `rvcluster trust {} --replace`",
                    hk.join(", "),
                    target.name
                );
            }
            // LIBSSH2_ERROR_TIMEOUT
            ssh2::ErrorCode::Session(-9) => {
                cause = format!("no SSH greeting within {:?}", target.connect_timeout);
            }
            _ => {}
        }
        handshake_err(cause)
    })?;
    Ok((session, fd, tunnel))
}

/// Is this private key file encrypted? (OpenSSH format: cipher name != none; PEM: ENCRYPTED.)
pub fn key_is_encrypted(text: &str) -> bool {
    use base64::Engine;
    if let Some(body) = text
        .split("-----BEGIN OPENSSH PRIVATE KEY-----")
        .nth(1)
        .and_then(|r| r.split("-----END OPENSSH PRIVATE KEY-----").next())
    {
        let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            return false;
        };
        let magic = b"openssh-key-v1\0";
        let Some(rest) = raw.strip_prefix(&magic[..]) else {
            return false;
        };
        let Some(len) = rest
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        else {
            return false;
        };
        return rest.get(4..4 + len).is_some_and(|c| c != b"none");
    }
    text.contains("ENCRYPTED")
}

/// Passphrase for an encrypted key: the configured one, else a prompt on the terminal (once per key).
fn passphrase_for(path: &Path, auth: &AuthConfig) -> Option<String> {
    if let Some(p) = &auth.passphrase {
        return Some(p.clone());
    }
    if !auth.prompt {
        return None;
    }
    let mut map = auth.asked.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = map.get(path) {
        return Some(p.clone());
    }
    let term = console::Term::stderr();
    if !term.is_term() || !console::Term::stdout().is_term() {
        return None;
    }
    let _ = term.write_str(&format!("Passphrase for {}: ", path.display()));
    let p = term.read_secure_line().ok()?;
    map.insert(path.to_path_buf(), p.clone());
    Some(p)
}

fn default_identity_files(home: Option<&Path>) -> Vec<PathBuf> {
    let Some(home) = home else { return vec![] };
    let ssh = home.join(".ssh");
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|n| ssh.join(n))
        .filter(|p| p.exists())
        .collect()
}

fn authenticate(session: &Session, target: &Target, auth: &AuthConfig) -> Result<()> {
    let user = target.user.as_str();
    let mut tried: Vec<String> = vec![];
    if let Some(sock) = &auth.agent_socket
        && let Ok(mut agent) = session.agent()
        && agent.set_identity_path(sock).is_ok()
        && agent.connect().is_ok()
    {
        let _ = agent.list_identities();
        let ids = agent.identities().unwrap_or_default();
        for id in &ids {
            if agent.userauth(user, id).is_ok() && session.authenticated() {
                let _ = agent.disconnect();
                return Ok(());
            }
        }
        let _ = agent.disconnect();
        tried.push(format!("ssh-agent ({} keys)", ids.len()));
    }
    let files = if target.identity_files.is_empty() {
        default_identity_files(auth.home.as_deref())
    } else {
        target.identity_files.clone()
    };
    for f in &files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                tried.push(format!("{} ({})", f.display(), e.kind()));
                continue;
            }
        };
        let passphrase = if key_is_encrypted(&text) {
            match passphrase_for(f, auth) {
                Some(p) => Some(p),
                None => {
                    tried.push(format!("{} (encrypted; set {PASSPHRASE_ENV})", f.display()));
                    continue;
                }
            }
        } else {
            None
        };
        match session.userauth_pubkey_file(user, None, f, passphrase.as_deref()) {
            Ok(()) if session.authenticated() => return Ok(()),
            Ok(()) => tried.push(format!("{} (more authentication required)", f.display())),
            Err(e) => tried.push(format!("{} ({})", f.display(), e.message())),
        }
    }
    if files.is_empty() && tried.is_empty() {
        tried
            .push("no ssh-agent and no identity file (~/.ssh/id_ed25519, id_ecdsa, id_rsa)".into());
    }
    Err(TransportError::Auth {
        host: target.name.clone(),
        address: target.address(),
        user: user.to_string(),
        tried: tried.join("; "),
    })
}

fn would_block(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::WouldBlock
}

/// Wait until the socket may make progress in the directions libssh2 is blocked on.
fn wait_socket(session: &Session, fd: RawFd, extra: Option<(RawFd, i16)>, max: Duration) {
    let mut events: i16 = 0;
    match session.block_directions() {
        BlockDirections::Inbound => events |= libc::POLLIN,
        BlockDirections::Outbound => events |= libc::POLLOUT,
        BlockDirections::Both => events |= libc::POLLIN | libc::POLLOUT,
        BlockDirections::None => events |= libc::POLLIN,
    }
    let mut fds = vec![libc::pollfd {
        fd,
        events,
        revents: 0,
    }];
    if let Some((xfd, xev)) = extra {
        fds.push(libc::pollfd {
            fd: xfd,
            events: xev,
            revents: 0,
        });
    }
    let ms = max.as_millis().clamp(1, 1000) as i32;
    // SAFETY: fds is a valid array of pollfd for the duration of the call.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
}

impl Host for SshHost {
    fn name(&self) -> &str {
        &self.name
    }

    fn address(&self) -> String {
        self.address.clone()
    }

    fn privilege(&self) -> Become {
        self.privilege
    }

    fn login_user(&self) -> String {
        self.user.clone()
    }

    fn become_password(&self) -> Option<&str> {
        self.become_password.as_deref()
    }

    fn exec_held_raw(
        &mut self,
        command: &str,
        prefix: &[u8],
        marker: &str,
        timeout: Option<Duration>,
    ) -> Result<Box<dyn super::held::Held>> {
        self.start_held(command, prefix, marker, timeout)
    }

    fn exec_raw(
        &mut self,
        command: &str,
        stdin: &mut dyn Read,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput> {
        let start = Instant::now();
        let mut ch = self.open_exec(command)?;
        let result = pump_channel(&self.session, self.fd, &mut ch, stdin, timeout, start, None);
        if matches!(result, Err(PumpError::Timeout)) {
            // Ask the host to close the channel and forget it without waiting for the answer.
            let _ = ch.close();
            drop(ch);
            self.session.set_blocking(true);
            return Err(TransportError::Timeout {
                host: self.name.clone(),
                what: "command".into(),
                after: timeout.unwrap_or_default(),
            });
        }
        self.session.set_blocking(true);
        match result {
            Ok((stdout, stderr)) => {
                let _ = ch.wait_close();
                let status = ch.exit_status().unwrap_or(-1);
                let status =
                    if status == 0 && ch.exit_signal().ok().and_then(|s| s.exit_signal).is_some() {
                        -1
                    } else {
                        status
                    };
                Ok(ExecOutput {
                    status,
                    stdout,
                    stderr,
                })
            }
            Err(PumpError::Timeout) => unreachable!("handled above"),
            Err(PumpError::Stdin(e)) => Err(TransportError::io(
                format!("{}: reading the data to send", self.name),
                e,
            )),
            Err(PumpError::Ssh(e)) => Err(self.session_err("running a command", e)),
        }
    }
}

/// A held command on an SSH channel ([`super::held::Held`]).
struct SshHeld {
    name: String,
    session: Session,
    fd: RawFd,
    ch: Channel,
    head: Vec<u8>,
    stderr: Vec<u8>,
    ended: bool,
}

impl super::held::Held for SshHeld {
    fn head(&self) -> &[u8] {
        &self.head
    }
    fn ended(&self) -> bool {
        self.ended
    }
    fn exchange(&mut self, input: &mut dyn Read, marker: &str, timeout: Option<Duration>) -> Result<(Vec<u8>, Vec<u8>)> {
        let start = Instant::now();
        self.session.set_blocking(false);
        let result = pump_channel(&self.session, self.fd, &mut self.ch, input, timeout, start, Some(marker));
        self.session.set_blocking(true);
        match result {
            Ok((stdout, stderr)) => {
                self.stderr.extend_from_slice(&stderr);
                if super::held::head_end(&stdout, marker).is_none() {
                    self.ended = true;
                    return Err(TransportError::Session {
                        host: self.name.clone(),
                        what: "a request to the held command".into(),
                        cause: format!("it ended before answering: {}", String::from_utf8_lossy(&self.stderr).trim()),
                    });
                }
                Ok((stdout, stderr))
            }
            Err(PumpError::Timeout) => Err(TransportError::Timeout { host: self.name.clone(), what: "a request to the held command".into(), after: timeout.unwrap_or_default() }),
            Err(PumpError::Stdin(e)) => Err(TransportError::io(format!("{}: reading the data to send", self.name), e)),
            Err(PumpError::Ssh(e)) => Err(TransportError::Session { host: self.name.clone(), what: "a request to the held command".into(), cause: e.to_string() }),
        }
    }
    fn finish(mut self: Box<Self>, input: &[u8], timeout: Option<Duration>) -> Result<ExecOutput> {
        let start = Instant::now();
        let err = |what: &str, e: &dyn std::fmt::Display| TransportError::Session {
            host: self.name.clone(),
            what: what.into(),
            cause: e.to_string(),
        };
        self.session.set_blocking(false);
        let mut input = input;
        let result = pump_channel(&self.session, self.fd, &mut self.ch, &mut input, timeout, start, None);
        self.session.set_blocking(true);
        match result {
            Ok((stdout, stderr)) => {
                let _ = self.ch.wait_close();
                let status = self.ch.exit_status().unwrap_or(-1);
                let signalled = self.ch.exit_signal().ok().and_then(|s| s.exit_signal).is_some();
                let mut all_err = std::mem::take(&mut self.stderr);
                all_err.extend_from_slice(&stderr);
                Ok(ExecOutput {
                    status: if status == 0 && signalled { -1 } else { status },
                    stdout,
                    stderr: all_err,
                })
            }
            Err(PumpError::Timeout) => {
                let _ = self.ch.close();
                Err(TransportError::Timeout {
                    host: self.name.clone(),
                    what: "command".into(),
                    after: timeout.unwrap_or_default(),
                })
            }
            Err(PumpError::Stdin(e)) | Err(PumpError::Ssh(e)) => Err(err("running a command", &e)),
        }
    }
}

impl SshHost {
    /// A new channel running `command`, the session left non-blocking for pumping.
    fn open_exec(&mut self, command: &str) -> Result<Channel> {
        self.session.set_blocking(true);
        self.session.set_timeout(60_000);
        let mut ch = self
            .session
            .channel_session()
            .map_err(|e| self.session_err("opening a channel", e))?;
        ch.exec(command)
            .map_err(|e| self.session_err("starting a command", e))?;
        self.session.set_blocking(false);
        Ok(ch)
    }

    pub(super) fn start_held(&mut self, command: &str, prefix: &[u8], marker: &str, timeout: Option<Duration>) -> Result<Box<dyn super::held::Held>> {
        let start = Instant::now();
        let mut ch = self.open_exec(command)?;
        let mut input = prefix;
        let result = pump_channel(&self.session, self.fd, &mut ch, &mut input, timeout, start, Some(marker));
        self.session.set_blocking(true);
        match result {
            Ok((stdout, stderr)) => {
                let ended = super::held::head_end(&stdout, marker).is_none();
                Ok(Box::new(SshHeld {
                    name: self.name.clone(),
                    session: self.session.clone(),
                    fd: self.fd,
                    ch,
                    head: stdout,
                    stderr,
                    ended,
                }))
            }
            Err(PumpError::Timeout) => {
                let _ = ch.close();
                Err(TransportError::Timeout {
                    host: self.name.clone(),
                    what: "reading facts".into(),
                    after: timeout.unwrap_or_default(),
                })
            }
            Err(PumpError::Stdin(e)) => Err(TransportError::io(format!("{}: reading the data to send", self.name), e)),
            Err(PumpError::Ssh(e)) => Err(self.session_err("running a command", e)),
        }
    }
}

enum PumpError {
    Timeout,
    Stdin(std::io::Error),
    Ssh(std::io::Error),
}

/// Move stdin to the channel and stdout/stderr from it until the remote closes, on a
/// non-blocking session.
fn pump_channel(
    session: &Session,
    fd: RawFd,
    ch: &mut Channel,
    stdin: &mut dyn Read,
    timeout: Option<Duration>,
    start: Instant,
    hold: Option<&str>,
) -> std::result::Result<(Vec<u8>, Vec<u8>), PumpError> {
    let mut stdout = vec![];
    let mut stderr = vec![];
    let mut inbuf = vec![0u8; 256 * 1024];
    let (mut pos, mut len) = (0usize, 0usize);
    let mut stdin_done = false;
    let mut eof_sent = false;
    let mut rbuf = vec![0u8; 64 * 1024];
    let mut last_keepalive = Instant::now();
    loop {
        let mut progressed = false;
        if !eof_sent {
            if pos == len && !stdin_done {
                match stdin.read(&mut inbuf) {
                    Ok(0) => stdin_done = true,
                    Ok(n) => (pos, len) = (0, n),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(PumpError::Stdin(e)),
                }
                progressed = true;
            }
            while pos < len {
                match ch.write(&inbuf[pos..len]) {
                    Ok(0) => break,
                    Ok(n) => {
                        pos += n;
                        progressed = true;
                    }
                    Err(e) if would_block(&e) => break,
                    // The remote stopped reading (closed its stdin): drop the rest.
                    Err(_) => {
                        stdin_done = true;
                        pos = len;
                    }
                }
            }
            if stdin_done && pos == len && hold.is_none() {
                match ch.send_eof() {
                    Ok(()) => eof_sent = true,
                    Err(e) if e.code() == ssh2::ErrorCode::Session(-37) => {}
                    Err(_) => eof_sent = true,
                }
            }
        }
        let mut data_seen = false;
        loop {
            match ch.read(&mut rbuf) {
                Ok(0) => break,
                Ok(n) => {
                    stdout.extend_from_slice(&rbuf[..n]);
                    data_seen = true;
                }
                Err(e) if would_block(&e) => break,
                Err(e) => return Err(PumpError::Ssh(e)),
            }
        }
        loop {
            match ch.stderr().read(&mut rbuf) {
                Ok(0) => break,
                Ok(n) => {
                    stderr.extend_from_slice(&rbuf[..n]);
                    data_seen = true;
                }
                Err(e) if would_block(&e) => break,
                Err(e) => return Err(PumpError::Ssh(e)),
            }
        }
        progressed |= data_seen;
        if !data_seen && ch.eof() {
            return Ok((stdout, stderr));
        }
        // A held command: its head is complete, it now waits for input we send later.
        if let Some(marker) = hold
            && stdin_done
            && pos == len
            && super::held::head_end(&stdout, marker).is_some()
        {
            return Ok((stdout, stderr));
        }
        let remaining = match timeout {
            Some(t) => {
                let el = start.elapsed();
                if el >= t {
                    return Err(PumpError::Timeout);
                }
                t - el
            }
            None => Duration::from_secs(1),
        };
        if last_keepalive.elapsed() >= Duration::from_secs(KEEPALIVE_SECS as u64) {
            let _ = session.keepalive_send();
            last_keepalive = Instant::now();
        }
        if !progressed {
            wait_socket(session, fd, None, remaining);
        }
    }
}

/// A direct-tcpip channel on a jump host, bridged to a Unix socket the inner session uses as
/// its transport. A pump thread owns the jump session; dropping the tunnel stops it.
struct Tunnel {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Tunnel {
    fn open(jump: SshHost, host: &str, port: u16) -> std::io::Result<(UnixStream, Tunnel)> {
        jump.session.set_blocking(true);
        let ch = jump
            .session
            .channel_direct_tcpip(host, port, None)
            .map_err(|e| {
                std::io::Error::other(format!(
                    "direct-tcpip to {host}:{port} refused: {}",
                    e.message()
                ))
            })?;
        let (ours, theirs) = UnixStream::pair()?;
        theirs.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("rvcluster-jump-{}", jump.name))
            .spawn(move || tunnel_pump(jump, ch, theirs, stop2))?;
        Ok((
            ours,
            Tunnel {
                stop,
                thread: Some(thread),
            },
        ))
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn tunnel_pump(jump: SshHost, mut ch: Channel, mut local: UnixStream, stop: Arc<AtomicBool>) {
    jump.session.set_blocking(false);
    let mut up = vec![0u8; 64 * 1024];
    let (mut up_pos, mut up_len) = (0usize, 0usize);
    let mut down = vec![0u8; 64 * 1024];
    let (mut down_pos, mut down_len) = (0usize, 0usize);
    let (mut local_eof, mut remote_eof, mut eof_sent) = (false, false, false);
    let lfd = local.as_raw_fd();
    let mut last_keepalive = Instant::now();
    let mut stopping: Option<Instant> = None;
    loop {
        if stop.load(Ordering::SeqCst) {
            // The inner session is gone: finish forwarding what it wrote, but never hang.
            let since = *stopping.get_or_insert_with(Instant::now);
            if local_eof || remote_eof || since.elapsed() > Duration::from_secs(2) {
                break;
            }
        }
        let mut progressed = false;
        // local -> remote
        if up_pos == up_len && !local_eof {
            match local.read(&mut up) {
                Ok(0) => local_eof = true,
                Ok(n) => {
                    (up_pos, up_len) = (0, n);
                    progressed = true;
                }
                Err(e) if would_block(&e) => {}
                Err(_) => local_eof = true,
            }
        }
        while up_pos < up_len {
            match ch.write(&up[up_pos..up_len]) {
                Ok(0) => break,
                Ok(n) => {
                    up_pos += n;
                    progressed = true;
                }
                Err(e) if would_block(&e) => break,
                Err(_) => {
                    remote_eof = true;
                    up_pos = up_len;
                }
            }
        }
        if local_eof && up_pos == up_len && !eof_sent && ch.send_eof().is_ok() {
            eof_sent = true;
        }
        // remote -> local
        if down_pos == down_len && !remote_eof {
            match ch.read(&mut down) {
                Ok(0) => {
                    if ch.eof() {
                        remote_eof = true;
                        let _ = local.shutdown(std::net::Shutdown::Write);
                    }
                }
                Ok(n) => {
                    (down_pos, down_len) = (0, n);
                    progressed = true;
                }
                Err(e) if would_block(&e) => {}
                Err(_) => remote_eof = true,
            }
        }
        while down_pos < down_len {
            match local.write(&down[down_pos..down_len]) {
                Ok(0) => break,
                Ok(n) => {
                    down_pos += n;
                    progressed = true;
                }
                Err(e) if would_block(&e) => break,
                Err(_) => {
                    local_eof = true;
                    down_pos = down_len;
                }
            }
        }
        if local_eof && remote_eof {
            break;
        }
        if last_keepalive.elapsed() >= Duration::from_secs(KEEPALIVE_SECS as u64) {
            let _ = jump.session.keepalive_send();
            last_keepalive = Instant::now();
        }
        if !progressed {
            let mut lev: i16 = 0;
            if up_pos == up_len && !local_eof {
                lev |= libc::POLLIN;
            }
            if down_pos < down_len {
                lev |= libc::POLLOUT;
            }
            wait_socket(
                &jump.session,
                jump.fd,
                Some((lfd, lev)),
                Duration::from_millis(200),
            );
        }
    }
    jump.session.set_blocking(true);
    jump.session.set_timeout(2000);
    let _ = ch.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_encrypted_openssh_keys() {
        // Headers of real `ssh-keygen -t ed25519` outputs, without and with -N passphrase
        // (only the header fields matter: magic, cipher name).
        use base64::Engine;
        let enc = |cipher: &str| {
            let mut raw = b"openssh-key-v1\0".to_vec();
            raw.extend_from_slice(&(cipher.len() as u32).to_be_bytes());
            raw.extend_from_slice(cipher.as_bytes());
            format!(
                "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        };
        assert!(!key_is_encrypted(&enc("none")));
        assert!(key_is_encrypted(&enc("aes256-ctr")));
        assert!(key_is_encrypted(
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n"
        ));
        assert!(!key_is_encrypted("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n"));
    }
}
