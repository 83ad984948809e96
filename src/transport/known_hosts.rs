//! Host-key verification: the pinned key, the project known_hosts file (beside cluster.kdl),
//! then ~/.ssh/known_hosts. The first source that knows the host decides. Unknown keys stop the
//! connection before authentication; changed keys stop it loudly; only [`trust`] (explicitly,
//! with `replace`) or `accept_new` (explicitly) ever writes a key. Parsing and matching are
//! pure; file writes are atomic (temp + rename) and serialised within the process.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::error::TransportError;
use super::target::Target;

/// OpenSSH-style fingerprint of a public key blob: `SHA256:` + unpadded base64 of its sha256.
pub fn fingerprint_sha256(blob: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(blob)))
}

/// The key type named inside a public key blob (`ssh-ed25519`, `ssh-rsa`, `ecdsa-sha2-nistp256`, ...).
pub fn blob_key_type(blob: &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    let name = blob.get(4..4 + len)?;
    String::from_utf8(name.to_vec()).ok()
}

/// The name known_hosts uses for a host: `host` on port 22, `[host]:port` otherwise.
pub fn lookup_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Host-key algorithms to offer for a recorded key type (rsa keys sign with sha2 nowadays).
pub fn algorithms_for(key_type: &str) -> Vec<&'static str> {
    match key_type {
        "ssh-ed25519" => vec!["ssh-ed25519"],
        "ecdsa-sha2-nistp256" => vec!["ecdsa-sha2-nistp256"],
        "ecdsa-sha2-nistp384" => vec!["ecdsa-sha2-nistp384"],
        "ecdsa-sha2-nistp521" => vec!["ecdsa-sha2-nistp521"],
        "ssh-rsa" => vec!["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
        _ => vec![],
    }
}

/// Preference when nothing is on record (same order as OpenSSH).
pub const DEFAULT_HOST_KEY_ALGORITHMS: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
];

/// Why a public key text was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyParseError {
    #[error("empty host key")]
    Empty,
    #[error("host key `{key_type}` has no base64 part")]
    NoBase64 { key_type: String },
    #[error("host key is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("host key says `{declared}` but its data is a `{actual}` key")]
    TypeMismatch { declared: String, actual: String },
    #[error("host key data is truncated")]
    Truncated,
}

/// One public key: its type and raw blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub key_type: String,
    pub blob: Vec<u8>,
}

impl PublicKey {
    /// Parse `"ssh-ed25519 AAAA... [comment]"`.
    pub fn parse(text: &str) -> Result<PublicKey, KeyParseError> {
        let mut it = text.split_whitespace();
        let key_type = it.next().ok_or(KeyParseError::Empty)?.to_string();
        let b64 = it
            .next()
            .ok_or_else(|| KeyParseError::NoBase64 { key_type: key_type.clone() })?;
        let blob = STANDARD
            .decode(b64)?;
        match blob_key_type(&blob) {
            Some(t) if t == key_type => Ok(PublicKey { key_type, blob }),
            Some(t) => Err(KeyParseError::TypeMismatch { declared: key_type, actual: t.to_string() }),
            None => Err(KeyParseError::Truncated),
        }
    }

    pub fn fingerprint(&self) -> String {
        fingerprint_sha256(&self.blob)
    }

    /// `type base64` as written in known_hosts and authorized_keys.
    pub fn to_openssh(&self) -> String {
        format!("{} {}", self.key_type, STANDARD.encode(&self.blob))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    None,
    Revoked,
    CertAuthority,
}

/// One parsed known_hosts line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub line: usize,
    pub marker: Marker,
    pub hosts: String,
    pub key: PublicKey,
}

impl Entry {
    pub fn matches(&self, lookup: &str) -> bool {
        host_field_matches(&self.hosts, lookup)
    }
}

/// Parse known_hosts text. Malformed lines are skipped (as OpenSSH does).
pub fn parse(text: &str) -> Vec<Entry> {
    let mut out = vec![];
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let Some(mut first) = fields.next() else {
            continue;
        };
        let marker = match first {
            "@revoked" => Marker::Revoked,
            "@cert-authority" => Marker::CertAuthority,
            m if m.starts_with('@') => continue,
            _ => Marker::None,
        };
        if marker != Marker::None {
            match fields.next() {
                Some(f) => first = f,
                None => continue,
            }
        }
        let (Some(kt), Some(b64)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Ok(key) = PublicKey::parse(&format!("{kt} {b64}")) else {
            continue;
        };
        out.push(Entry {
            line: i + 1,
            marker,
            hosts: first.to_string(),
            key,
        });
    }
    out
}

/// Does a known_hosts host field (`a,b,[c]:2222`, `*.lan`, `!x`, or `|1|salt|hash`) match?
pub fn host_field_matches(field: &str, lookup: &str) -> bool {
    if let Some(hashed) = field.strip_prefix("|1|") {
        return hashed_matches(hashed, lookup);
    }
    let mut matched = false;
    for pat in field.split(',') {
        if let Some(neg) = pat.strip_prefix('!') {
            if super::ssh_config::glob(neg.as_bytes(), lookup.as_bytes()) {
                return false;
            }
        } else if super::ssh_config::glob(pat.as_bytes(), lookup.as_bytes()) {
            matched = true;
        }
    }
    matched
}

fn hashed_matches(hashed: &str, lookup: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(lookup.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// Where the decision about a host's key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// "pinned host-key" or a file path.
    pub source: String,
    /// Acceptable keys (empty: the host is unknown).
    pub keys: Vec<PublicKey>,
    /// Keys marked @revoked in any file.
    pub revoked: Vec<PublicKey>,
}

impl Expectation {
    /// Host-key algorithms to negotiate: exactly the types on record, so libssh2 never compares
    /// the host's ed25519 key against a recorded rsa key (a false "changed").
    pub fn algorithms(&self) -> Vec<&'static str> {
        if self.keys.is_empty() {
            return DEFAULT_HOST_KEY_ALGORITHMS.to_vec();
        }
        let mut out: Vec<&'static str> = vec![];
        // Keep OpenSSH's order of preference among the recorded types.
        for kt in [
            "ssh-ed25519",
            "ecdsa-sha2-nistp256",
            "ecdsa-sha2-nistp384",
            "ecdsa-sha2-nistp521",
            "ssh-rsa",
        ] {
            if self.keys.iter().any(|k| k.key_type == kt) {
                out.extend(algorithms_for(kt));
            }
        }
        out
    }
}

/// Verdict on the key a host presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Trusted,
    Unknown,
    Changed {
        recorded_in: String,
        recorded_fingerprint: String,
    },
    Revoked {
        recorded_in: String,
    },
}

/// Pure decision: compare the presented key with the expectation.
pub fn judge(exp: &Expectation, presented: &PublicKey) -> Verdict {
    if exp.revoked.iter().any(|k| k.blob == presented.blob) {
        return Verdict::Revoked {
            recorded_in: exp.source.clone(),
        };
    }
    if exp.keys.iter().any(|k| k.blob == presented.blob) {
        return Verdict::Trusted;
    }
    if exp.keys.is_empty() {
        return Verdict::Unknown;
    }
    let recorded = exp
        .keys
        .iter()
        .find(|k| k.key_type == presented.key_type)
        .unwrap_or(&exp.keys[0]);
    Verdict::Changed {
        recorded_in: exp.source.clone(),
        recorded_fingerprint: format!("{} {}", recorded.key_type, recorded.fingerprint()),
    }
}

/// Which files to consult and whether unknown keys may be recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostKeyPolicy {
    /// The known_hosts kept beside cluster.kdl; consulted first, written by trust/accept-new.
    pub project_known_hosts: Option<PathBuf>,
    /// Usually ~/.ssh/known_hosts; consulted second, never written.
    pub user_known_hosts: Option<PathBuf>,
    /// Record a host's key when it is unknown (never when it changed). Off by default.
    pub accept_new: bool,
}

impl HostKeyPolicy {
    /// Project file as given, user file from `$HOME/.ssh/known_hosts`, accept_new off.
    pub fn new(project_known_hosts: Option<PathBuf>) -> HostKeyPolicy {
        HostKeyPolicy {
            project_known_hosts,
            user_known_hosts: std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".ssh/known_hosts")),
            accept_new: false,
        }
    }

    /// Where accepted keys are written.
    pub fn write_path(&self) -> Option<&Path> {
        self.project_known_hosts
            .as_deref()
            .or(self.user_known_hosts.as_deref())
    }

    /// Build the expectation for a target (reads the files; missing files are empty).
    pub fn expectation(&self, target: &Target) -> Result<Expectation, TransportError> {
        let lookup = lookup_name(&target.host, target.port);
        let mut revoked = vec![];
        let mut found: Option<(String, Vec<PublicKey>)> = None;
        for path in [&self.project_known_hosts, &self.user_known_hosts]
            .into_iter()
            .flatten()
        {
            let entries = parse(&read_or_empty(path)?);
            let mine: Vec<&Entry> = entries.iter().filter(|e| e.matches(&lookup)).collect();
            revoked.extend(
                mine.iter()
                    .filter(|e| e.marker == Marker::Revoked)
                    .map(|e| e.key.clone()),
            );
            let keys: Vec<PublicKey> = mine
                .iter()
                .filter(|e| e.marker == Marker::None)
                .map(|e| e.key.clone())
                .collect();
            if found.is_none() && !keys.is_empty() {
                found = Some((path.display().to_string(), keys));
            }
        }
        if let Some(pinned) = &target.pinned_host_key {
            let key = PublicKey::parse(pinned).map_err(|e| TransportError::Config {
                what: format!("host-key of {}", target.name),
                detail: e.to_string(),
            })?;
            return Ok(Expectation {
                source: "pinned host-key".into(),
                keys: vec![key],
                revoked,
            });
        }
        let (source, keys) = found.unwrap_or_else(|| (String::new(), vec![]));
        Ok(Expectation {
            source,
            keys,
            revoked,
        })
    }
}

fn read_or_empty(path: &Path) -> Result<String, TransportError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(TransportError::io(format!("reading {}", path.display()), e)),
    }
}

static WRITE_LOCK: Mutex<()> = Mutex::new(());

/// Pure: new file text with `key` recorded for `lookup`. With `replace`, every other plain entry
/// matching `lookup` is dropped first (hashed entries too). Returns (text, removed keys).
pub fn record(
    text: &str,
    lookup: &str,
    key: &PublicKey,
    replace: bool,
) -> (String, Vec<PublicKey>) {
    let mut removed = vec![];
    let mut out = String::new();
    let parsed = parse(text);
    for (i, raw) in text.lines().enumerate() {
        let drop = replace
            && parsed.iter().any(|e| {
                e.line == i + 1
                    && e.marker == Marker::None
                    && e.matches(lookup)
                    && e.key.blob != key.blob
            });
        if drop {
            if let Some(e) = parsed.iter().find(|e| e.line == i + 1) {
                removed.push(e.key.clone());
            }
            continue;
        }
        out.push_str(raw);
        out.push('\n');
    }
    let already = parsed
        .iter()
        .any(|e| e.marker == Marker::None && e.matches(lookup) && e.key.blob == key.blob);
    if !already {
        out.push_str(&format!("{lookup} {}\n", key.to_openssh()));
    }
    (out, removed)
}

/// Record a key in a known_hosts file (atomic rewrite). Returns the keys it replaced.
pub fn write_entry(
    path: &Path,
    lookup: &str,
    key: &PublicKey,
    replace: bool,
) -> Result<Vec<PublicKey>, TransportError> {
    let _guard = WRITE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let old = read_or_empty(path)?;
    let (new, removed) = record(&old, lookup, key, replace);
    if new == old {
        return Ok(removed);
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| TransportError::io(format!("creating {}", dir.display()), e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| TransportError::io(format!("writing {}", path.display()), e))?;
    std::io::Write::write_all(&mut tmp, new.as_bytes())
        .map_err(|e| TransportError::io(format!("writing {}", path.display()), e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644));
    }
    tmp.persist(path)
        .map_err(|e| TransportError::io(format!("writing {}", path.display()), e.error))?;
    Ok(removed)
}

/// What `rvcluster trust NODE` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustOutcome {
    Added {
        name: String,
        lookup: String,
        key_type: String,
        fingerprint: String,
        path: PathBuf,
    },
    AlreadyTrusted {
        name: String,
        lookup: String,
        key_type: String,
        fingerprint: String,
        path: PathBuf,
    },
    Replaced {
        name: String,
        lookup: String,
        key_type: String,
        fingerprint: String,
        path: PathBuf,
        old_fingerprints: Vec<String>,
    },
}

impl std::fmt::Display for TrustOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrustOutcome::Added {
                name,
                lookup,
                key_type,
                fingerprint,
                path,
            } => {
                write!(
                    f,
                    "{name} ({lookup}): recorded {key_type} key {fingerprint} in {}",
                    path.display()
                )
            }
            TrustOutcome::AlreadyTrusted {
                name,
                lookup,
                key_type,
                fingerprint,
                path,
            } => {
                write!(
                    f,
                    "{name} ({lookup}): {key_type} key {fingerprint} is already in {}",
                    path.display()
                )
            }
            TrustOutcome::Replaced {
                name,
                lookup,
                key_type,
                fingerprint,
                path,
                old_fingerprints,
            } => write!(
                f,
                "{name} ({lookup}): replaced {} with {key_type} key {fingerprint} in {}",
                old_fingerprints.join(", "),
                path.display()
            ),
        }
    }
}

/// Fetch the key `target` presents and record it in `known_hosts`. ProxyJump hops are verified
/// with `policy` and authenticated with `auth`; the target itself is never authenticated to and
/// no command runs on it. A different recorded key is an error unless `replace`.
pub fn trust(
    target: &Target,
    policy: &HostKeyPolicy,
    known_hosts: &Path,
    replace: bool,
) -> Result<TrustOutcome, TransportError> {
    trust_with(
        target,
        policy,
        &super::ssh::AuthConfig::from_env(),
        known_hosts,
        replace,
    )
}

/// [`trust`] with explicit credentials for the ProxyJump hops.
pub fn trust_with(
    target: &Target,
    policy: &HostKeyPolicy,
    auth: &super::ssh::AuthConfig,
    known_hosts: &Path,
    replace: bool,
) -> Result<TrustOutcome, TransportError> {
    let existing = parse(&read_or_empty(known_hosts)?);
    let lookup = lookup_name(&target.host, target.port);
    let recorded: Vec<PublicKey> = existing
        .iter()
        .filter(|e| e.marker == Marker::None && e.matches(&lookup))
        .map(|e| e.key.clone())
        .collect();
    // Ask for a type we already have on record first, so a re-run finds the same key.
    let exp = Expectation {
        source: known_hosts.display().to_string(),
        keys: recorded.clone(),
        revoked: vec![],
    };
    let mut algorithms = if recorded.is_empty() {
        vec![]
    } else {
        exp.algorithms()
    };
    for a in DEFAULT_HOST_KEY_ALGORITHMS {
        if !algorithms.contains(a) {
            algorithms.push(a);
        }
    }
    let key = super::ssh::fetch_host_key(target, policy, auth, &algorithms)?;
    let fingerprint = key.fingerprint();
    let path = known_hosts.to_path_buf();
    let name = target.name.clone();
    if recorded.iter().any(|k| k.blob == key.blob) {
        return Ok(TrustOutcome::AlreadyTrusted {
            name,
            lookup,
            key_type: key.key_type,
            fingerprint,
            path,
        });
    }
    if !recorded.is_empty() && !replace {
        let Verdict::Changed {
            recorded_in,
            recorded_fingerprint,
        } = judge(&exp, &key)
        else {
            unreachable!("a key not on record while others are is a change")
        };
        return Err(TransportError::ChangedHostKey {
            host: target.name.clone(),
            address: target.address(),
            fingerprint: format!("{} {fingerprint}", key.key_type),
            recorded_in,
            recorded_fingerprint,
        });
    }
    let removed = write_entry(known_hosts, &lookup, &key, replace)?;
    if removed.is_empty() {
        Ok(TrustOutcome::Added {
            name,
            lookup,
            key_type: key.key_type,
            fingerprint,
            path,
        })
    } else {
        Ok(TrustOutcome::Replaced {
            name,
            lookup,
            key_type: key.key_type,
            fingerprint,
            path,
            old_fingerprints: removed.iter().map(|k| k.fingerprint()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real ed25519 host key (generated by ssh-keygen for this test) and its fingerprint
    // as printed by `ssh-keygen -lf`.
    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAdHS+Penrwey6ljyCWG6NRm3D6zhJbN/mjxQ2kUiXzv";
    const ED2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPzI7TVHxOGYVRDR4oNpEVHf0Rsra2wTRU37H5xvRWJa";

    fn key(s: &str) -> PublicKey {
        PublicKey::parse(s).unwrap()
    }

    #[test]
    fn parses_key_and_type_from_blob() {
        let k = key(&format!("{ED} comment here"));
        assert_eq!(k.key_type, "ssh-ed25519");
        assert_eq!(k.to_openssh(), ED);
        assert!(
            PublicKey::parse(
                "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C8okWpuHpD1bBEJH"
            )
            .is_err()
        );
        assert!(PublicKey::parse("ssh-ed25519 !!!").is_err());
        assert!(PublicKey::parse("").is_err());
    }

    #[test]
    fn lookup_names() {
        assert_eq!(lookup_name("10.0.0.1", 22), "10.0.0.1");
        assert_eq!(lookup_name("10.0.0.1", 2222), "[10.0.0.1]:2222");
    }

    #[test]
    fn host_fields_match() {
        assert!(host_field_matches("a,b,[c]:2222", "b"));
        assert!(host_field_matches("a,b,[c]:2222", "[c]:2222"));
        assert!(!host_field_matches("a,b,[c]:2222", "c"));
        assert!(host_field_matches("*.lan,!bad.lan", "x.lan"));
        assert!(!host_field_matches("*.lan,!bad.lan", "bad.lan"));
    }

    #[test]
    fn hashed_hosts_match() {
        // The `|1|salt|hash` form `ssh-keygen -H` writes: HMAC-SHA1 keyed by the salt.
        let field = hashed_field_for("board1", b"0123456789abcdefghij");
        assert!(host_field_matches(&field, "board1"));
        assert!(!host_field_matches(&field, "board2"));
        assert!(!host_field_matches("|1|bad|data", "board1"));
        // A line `ssh-keygen -H` wrote for "board1".
        let real = "|1|hL1Dc2otdVfUtwAkApHcbpvaOwU=|mYFzMGjP2D6qzkffkh1M8Sx6BEw=";
        assert!(host_field_matches(real, "board1"));
        assert!(!host_field_matches(real, "board10"));
    }

    fn hashed_field_for(host: &str, salt: &[u8]) -> String {
        let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(salt).unwrap();
        mac.update(host.as_bytes());
        format!(
            "|1|{}|{}",
            STANDARD.encode(salt),
            STANDARD.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn parse_markers_and_skip_garbage() {
        let text = format!("# c\n\n@revoked * {ED}\nhost {ED2} cmt\nbroken line\n@weird x {ED}\n");
        let e = parse(&text);
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].line, e[0].marker), (3, Marker::Revoked));
        assert_eq!(
            (e[1].line, e[1].marker, e[1].hosts.as_str()),
            (4, Marker::None, "host")
        );
    }

    #[test]
    fn judge_verdicts() {
        let exp = Expectation {
            source: "kh".into(),
            keys: vec![key(ED)],
            revoked: vec![],
        };
        assert_eq!(judge(&exp, &key(ED)), Verdict::Trusted);
        assert!(matches!(judge(&exp, &key(ED2)), Verdict::Changed { .. }));
        let none = Expectation {
            source: "".into(),
            keys: vec![],
            revoked: vec![],
        };
        assert_eq!(judge(&none, &key(ED)), Verdict::Unknown);
        let rev = Expectation {
            source: "kh".into(),
            keys: vec![key(ED)],
            revoked: vec![key(ED)],
        };
        assert!(matches!(judge(&rev, &key(ED)), Verdict::Revoked { .. }));
    }

    #[test]
    fn algorithms_follow_recorded_types() {
        let exp = Expectation {
            source: "kh".into(),
            keys: vec![key(ED)],
            revoked: vec![],
        };
        assert_eq!(exp.algorithms(), vec!["ssh-ed25519"]);
        let none = Expectation {
            source: "".into(),
            keys: vec![],
            revoked: vec![],
        };
        assert_eq!(none.algorithms(), DEFAULT_HOST_KEY_ALGORITHMS.to_vec());
    }

    #[test]
    fn record_appends_and_replaces() {
        let (t, removed) = record("", "[h]:2222", &key(ED), false);
        assert_eq!(t, format!("[h]:2222 {ED}\n"));
        assert!(removed.is_empty());
        let (t2, _) = record(&t, "[h]:2222", &key(ED), false);
        assert_eq!(t2, t, "idempotent");
        let other = format!("other {ED2}\n{t}");
        let (t3, removed) = record(&other, "[h]:2222", &key(ED2), true);
        assert_eq!(t3, format!("other {ED2}\n[h]:2222 {ED2}\n"));
        assert_eq!(removed, vec![key(ED)]);
        let (t4, removed) = record(&other, "[h]:2222", &key(ED2), false);
        assert_eq!(t4, format!("{other}[h]:2222 {ED2}\n"));
        assert!(removed.is_empty());
    }

    #[test]
    fn fingerprint_format() {
        // `ssh-keygen -lf` on the ED key prints exactly this.
        assert_eq!(
            fingerprint_sha256(&key(ED).blob),
            "SHA256:CMGN3hoqLJG0t2RaMaaenaJUwPTjJrsJTlEx2TUtris"
        );
    }
}
