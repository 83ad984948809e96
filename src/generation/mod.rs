//! Generations (NixOS's idea, per host): every apply that changes a host records what the host
//! became under /var/lib/rvcluster/generations/N/manifest.json (managed files with mode, owner and
//! sha256, symlinks, unit state, k3s version, the digest of the cluster.kdl + cluster.lock that
//! made it, time, user), the file contents in a content-addressed store
//! (`/var/lib/rvcluster/store/<sha256>`, shared by generations), and the current one's manifest as
//! generations/current.json. Generation 0 is the board as rvcluster found it.
//!
//! Owns the manifest format, the shell fragments that record and collect generations (they run
//! inside the one apply script, under the board lock), reading them back, and what changed
//! between two. Pure, except [`read_all`] (one remote command).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::render::{Content, DesiredFile, HostState, Symlink};
use crate::converge::script::Script;
use crate::transport::cmd::{self, quote};
use crate::transport::{Facts, FileFact};

pub mod diff;

pub const GEN_DIR: &str = "/var/lib/rvcluster/generations";
pub const STORE_DIR: &str = "/var/lib/rvcluster/store";
/// The current generation's manifest (a copy, replaced atomically): the facts read it.
pub const CURRENT: &str = "/var/lib/rvcluster/generations/current.json";
/// Generations kept per host (plus generation 0) when cluster.kdl does not say.
pub const DEFAULT_KEEP: u32 = 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub number: u64,
    /// Unix time, seconds.
    pub time: u64,
    /// Who ran it (user@machine, pid).
    pub user: String,
    /// `apply`, `found` (generation 0), `rollback to N`.
    pub reason: String,
    /// sha256 of cluster.kdl followed by cluster.lock, as read when it was made.
    #[serde(default)]
    pub source: Option<String>,
    /// The k3s version the node runs in this generation.
    #[serde(default)]
    pub k3s: Option<String>,
    #[serde(default)]
    pub unit: Option<UnitEntry>,
    #[serde(default)]
    pub files: Vec<FileEntry>,
    /// Paths rvcluster manages that did not exist (generation 0).
    #[serde(default)]
    pub absent: Vec<String>,
    #[serde(default)]
    pub symlinks: Vec<LinkEntry>,
    /// The server's datastore as it was under the previous generation's k3s, saved before this
    /// generation changed the k3s minor version (a rollback across it restores this).
    #[serde(default)]
    pub datastore: Option<Snapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitEntry {
    /// `k3s.service`.
    pub name: String,
    pub enabled: bool,
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub mode: u32,
    /// `user:group`.
    pub owner: String,
    pub sha256: String,
    /// Not text (the k3s binary, an image tarball): never diffed.
    #[serde(default)]
    pub binary: bool,
    /// Holds a secret: never shown.
    #[serde(default)]
    pub secret: bool,
    #[serde(default)]
    pub restarts: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkEntry {
    pub path: String,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Where the tar of /var/lib/rancher/k3s/server/db lives on the host (inside the generation's
    /// directory: collected with it).
    pub file: String,
    /// The k3s version that wrote it.
    pub k3s: String,
}

/// The server's datastore directory (sqlite: state.db and its -wal/-shm; docs/generations.md).
pub const DATASTORE: &str = "/var/lib/rancher/k3s/server/db";

pub fn snapshot_path(n: u64) -> String {
    format!("{GEN_DIR}/{n}/datastore.tar")
}

/// Before k3s changes minor version on the server: stop it (sqlite is only consistent at rest)
/// and keep its datastore in generation `n`'s directory. The restart that follows starts it.
pub fn snapshot_fragment(unit: &str, n: u64) -> String {
    let file = snapshot_path(n);
    format!(
        "if [ -d {db} ]; then systemctl stop {u} && mkdir -p {dir} && rv_t={file}.tmp.$$ && \
         tar -C {parent} -cf \"$rv_t\" db && chmod 600 \"$rv_t\" && mv -f \"$rv_t\" {file} || {{ rm -f \"$rv_t\"; false; }}; fi",
        db = quote(DATASTORE),
        u = quote(unit),
        dir = quote(&format!("{GEN_DIR}/{n}")),
        file = quote(&file),
        parent = quote(DATASTORE.trim_end_matches("/db")),
    )
}

/// A rollback across a minor version: stop k3s and put back the datastore saved at `file`
/// (the old one is moved aside, then removed once the new one is in place).
pub fn restore_fragment(unit: &str, file: &str) -> String {
    format!(
        "[ -f {file} ] || {{ echo 'rvcluster: the datastore snapshot {shown} is gone' >&2; false; }} && systemctl stop {u} && \
         rm -rf {parent}/db.restore && mkdir -p {parent}/db.restore && tar -C {parent}/db.restore -xf {file} && \
         {{ [ ! -d {db} ] || mv {db} {parent}/db.before-rollback.$$; }} && mv {parent}/db.restore/db {db} && \
         rm -rf {parent}/db.restore {parent}/db.before-rollback.$$",
        file = quote(file),
        shown = file.replace(['\'', '"', '\\', '$', '`'], "_"),
        u = quote(unit),
        parent = quote(DATASTORE.trim_end_matches("/db")),
        db = quote(DATASTORE),
    )
}

/// Whether going from k3s `from` to `to` changes the minor version.
pub fn crosses_minor(from: Option<&str>, to: Option<&str>) -> bool {
    match (from.and_then(minor_of), to.and_then(minor_of)) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}

/// For a rollback from the current generation to `to`: the datastore snapshot to restore, when
/// the k3s minor version differs (the one taken when the cluster first left `to`'s minor).
pub fn snapshot_for(history: &History, to: &Manifest) -> Option<String> {
    let cur = history.current.and_then(|n| history.get(n))?;
    if !crosses_minor(cur.k3s.as_deref(), to.k3s.as_deref()) {
        return None;
    }
    let want = to.k3s.as_deref().and_then(minor_of);
    history
        .generations
        .iter()
        .filter(|m| m.number > to.number)
        .filter_map(|m| m.datastore.as_ref())
        .find(|s| minor_of(&s.k3s) == want)
        .map(|s| s.file.clone())
}

/// A rollback of one host: the generation it goes back to, from the one that was current when
/// the rollback was planned (under the lock, another current one stops it).
#[derive(Debug, Clone)]
pub struct Rollback {
    pub to: Manifest,
    pub from: u64,
    /// The datastore snapshot to put back (a rollback across a k3s minor version; server only).
    pub restore: Option<String>,
}

/// What every generation made by one run shares.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub time: u64,
    pub user: String,
    pub reason: String,
    pub source: Option<String>,
}

impl Meta {
    pub fn now(user: &str, reason: &str, source: Option<String>) -> Meta {
        let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Meta { time, user: user.to_string(), reason: reason.to_string(), source }
    }
}

/// The digest that names the inputs of a run: sha256 of cluster.kdl then cluster.lock (when
/// there is one).
pub fn source_digest(kdl: &std::path::Path, lock: &std::path::Path) -> Option<String> {
    let mut bytes = std::fs::read(kdl).ok()?;
    if let Ok(l) = std::fs::read(lock) {
        bytes.extend_from_slice(&l);
    }
    Some(crate::render::sha256_hex(&bytes))
}

pub fn store_path(sha256: &str) -> String {
    format!("{STORE_DIR}/{sha256}")
}

pub fn manifest_path(n: u64) -> String {
    format!("{GEN_DIR}/{n}/manifest.json")
}

/// The current generation, from the facts (None: the host has none yet).
pub fn current(facts: &Facts) -> Option<Manifest> {
    facts.contents.get(CURRENT).and_then(|b| serde_json::from_slice(b).ok())
}

fn entry(f: &DesiredFile) -> FileEntry {
    FileEntry {
        path: f.path.clone(),
        mode: f.mode,
        owner: f.owner.clone(),
        sha256: f.sha256(),
        binary: match &f.content {
            Content::Text(_) => false,
            Content::Local { .. } => true,
            Content::Stored { binary, .. } => *binary,
        },
        secret: f.secret,
        restarts: f.restarts.clone(),
    }
}

/// The generation a host becomes once `st` is applied.
pub fn next(st: &HostState, number: u64, meta: &Meta) -> Manifest {
    let mut files: Vec<FileEntry> = st.files.iter().map(entry).collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut symlinks: Vec<LinkEntry> = st.symlinks.iter().map(|l| LinkEntry { path: l.path.clone(), target: l.target.clone() }).collect();
    symlinks.sort_by(|a, b| a.path.cmp(&b.path));
    Manifest {
        number,
        time: meta.time,
        user: meta.user.clone(),
        reason: meta.reason.clone(),
        source: meta.source.clone(),
        k3s: st.k3s_version.clone(),
        unit: Some(UnitEntry { name: format!("{}.service", st.service.unit), enabled: true, active: true }),
        files,
        absent: vec![],
        symlinks,
        datastore: None,
    }
}

/// Generation 0: what the host had, before this first apply, at every path `st` manages.
pub fn found(st: &HostState, facts: &Facts, meta: &Meta) -> Manifest {
    let mut m = Manifest {
        number: 0,
        time: meta.time,
        user: meta.user.clone(),
        reason: "found".into(),
        source: None,
        k3s: facts.k3s_version.as_deref().and_then(version_word),
        unit: None,
        files: vec![],
        absent: vec![],
        symlinks: vec![],
        datastore: None,
    };
    for f in &st.files {
        match facts.files.get(&f.path) {
            Some(FileFact::Present { kind: crate::transport::facts::FileKind::Regular, mode, owner, group, sha256: Some(h), .. }) => {
                let mut e = entry(f);
                e.mode = *mode;
                e.owner = format!("{owner}:{group}");
                e.sha256 = h.clone();
                m.files.push(e);
            }
            Some(FileFact::Present { .. }) => {}
            _ => m.absent.push(f.path.clone()),
        }
    }
    for l in &st.symlinks {
        match facts.files.get(&l.path) {
            Some(FileFact::Present { link_target: Some(t), .. }) => m.symlinks.push(LinkEntry { path: l.path.clone(), target: t.clone() }),
            Some(FileFact::Present { .. }) => {}
            _ => m.absent.push(l.path.clone()),
        }
    }
    let unit = format!("{}.service", st.service.unit);
    if let Some(s) = facts.services.get(&unit)
        && s.enabled != "unknown"
        && !s.enabled.is_empty()
        && s.enabled != "not-found"
    {
        m.unit = Some(UnitEntry { name: unit, enabled: s.enabled == "enabled", active: s.active == "active" || s.active == "activating" });
    }
    m.files.sort_by(|a, b| a.path.cmp(&b.path));
    m.absent.sort();
    m
}

/// `v1.33.4+k3s1` out of `k3s version v1.33.4+k3s1 (abc)`.
pub fn version_word(line: &str) -> Option<String> {
    line.split_whitespace().find(|w| w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit())).map(str::to_string)
}

/// `(major, minor)` of `v1.33.4+k3s1`.
pub fn minor_of(version: &str) -> Option<(u32, u32)> {
    let mut it = version.trim_start_matches('v').split(['.', '+', '-']);
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Commands that copy `path` into the store as `sha256` unless it is there already (temp file,
/// sha256 verified, rename: a cut copy never takes the name).
pub fn store_fragment(path: &str, sha256: &str, binary: bool) -> String {
    format!(
        "[ -f {dst} ] || {{ {dir} && rv_t={store}/.in.$$ && cp {src} \"$rv_t\" && \
         h=$({hasher} < \"$rv_t\") && [ \"${{h%% *}}\" = {sha} ] && chmod 600 \"$rv_t\" && mv -f \"$rv_t\" {dst} || \
         {{ rm -f \"$rv_t\"; echo \"rvcluster: cannot keep {shown} in the generation store\" >&2; false; }}; }}",
        dst = quote(&store_path(sha256)),
        store = quote(STORE_DIR),
        dir = cmd::ensure_dir(STORE_DIR, true),
        src = quote(path),
        sha = quote(sha256),
        hasher = if binary { "rv_sha" } else { "rv_shs" },
        shown = path.replace(['"', '\\', '$', '`'], "_"),
    )
}

/// The manifest's file text (what current.json holds; its sha256 is what cluster.lock records).
pub fn manifest_text(m: &Manifest) -> String {
    serde_json::to_string_pretty(m).expect("manifest serializes") + "\n"
}

/// Adds the text write of manifest `m` to `script` (at its start when `first`): its directory,
/// then `current.json` when `make_current` (consecutive text writes of the script share one
/// hash pass, src/converge/script.rs).
fn add_manifest(script: &mut Script, m: &Manifest, make_current: bool, first: bool) {
    let text = manifest_text(m);
    let sha = crate::render::sha256_hex(text.as_bytes());
    let path = manifest_path(m.number);
    let dests: &[&str] = if make_current { &[&path, CURRENT] } else { &[&path] };
    let copies: Vec<cmd::TextCopy> =
        dests.iter().map(|d| cmd::TextCopy { dest: d, mode: 0o600, owner: Some("root:root"), kept: false }).collect();
    if first { script.text_first(None, &copies, &text, &sha) } else { script.text(None, &copies, &text, &sha) }
}

/// Before any change of the first apply: keep what the host had (generation 0), at the start
/// of `script`: its files into the store, then its manifest (which joins the run of text writes
/// that follows, one hash pass for all).
pub fn add_found(script: &mut Script, m: &Manifest) {
    add_manifest(script, m, false, true);
    let keeps: Vec<String> = m.files.iter().map(|f| store_fragment(&f.path, &f.sha256, f.binary)).collect();
    if !keeps.is_empty() {
        script.bookkeeping_first(keeps.join(" && \\\n"));
    }
}

/// After every change: keep the new generation's files (before the records the script writes
/// last, so that its manifest joins their run of text writes), write its manifest, make it
/// current, and collect what no kept generation needs (the last `keep` generations and
/// generation 0). A file the store cannot keep stops the script before the manifest.
/// `close_state_dir`: the state directory is not 0700 yet, as the facts found it.
pub fn add_record(script: &mut Script, m: &Manifest, keep: u32, close_state_dir: bool) {
    // Temp files a killed copy or upload left in the store.
    let mut parts: Vec<String> = vec![format!("for o in {s}/.in.* {s}/.*.rvcluster-tmp.* {s}/.rvcluster-tmp.*; do [ ! -e \"$o\" ] || rm -f \"$o\"; done; true", s = quote(STORE_DIR))];
    if close_state_dir {
        // Made 0700 by the facts command when missing; one made before that is closed here.
        parts.push(format!("{{ chmod 700 {} 2>/dev/null; true; }}", quote(crate::converge::STATE_DIR)));
    }
    parts.extend(m.files.iter().map(|f| store_fragment(&f.path, &f.sha256, f.binary)));
    script.bookkeeping_before_trailing_texts(parts.join(" && \\\n"));
    add_manifest(script, m, true, false);
    script.bookkeeping(gc_commands(m.number, keep, Sweep::OnlyAfterRemoval));
}

/// Delete generations older than the last `keep` (never 0, never `current`) and store entries no
/// remaining manifest names. `sweep`: Always sweeps the store (`rvcluster gc`); OnlyAfterRemoval
/// (every apply's record) sweeps only when a generation was deleted just now, since until then
/// every store entry is named by a kept manifest, except what an interrupted apply left, which
/// waits for the next removal or `rvcluster gc`. The sweep starts six processes; a first apply
/// needs none of them.
pub fn gc_commands(current: u64, keep: u32, sweep: Sweep) -> String {
    let oldest_kept = current.saturating_sub(u64::from(keep.max(1)) - 1);
    let (init, gone, when) = match sweep {
        Sweep::Always => ("", "", ""),
        Sweep::OnlyAfterRemoval => ("rv_gone=''; ", " rv_gone=1;", "[ -z \"$rv_gone\" ] || "),
    };
    format!(
        "{{ {init}cd {gen} && {{ for d in [0-9]*; do case \"$d\" in 0|*[!0-9]*) continue;; esac; \
         if [ \"$d\" -lt {oldest_kept} ]; then rm -rf \"./$d\";{gone} fi; done; \
         {when}{{ cat ./[0-9]*/manifest.json ./current.json 2>/dev/null | grep -o '[0-9a-f]\\{{64\\}}' | sort -u > ./.keep.$$; \
         if [ -d {store} ]; then ls {store} | grep -vxFf ./.keep.$$ | while IFS= read -r f; do rm -f {store}/\"$f\"; done; fi; \
         rm -f ./.keep.$$; }}; }}; }}",
        gen = quote(GEN_DIR),
        store = quote(STORE_DIR),
    )
}

/// When [`gc_commands`] sweeps the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    Always,
    OnlyAfterRemoval,
}

/// `rvcluster gc` on its own: the same collection, under the board lock (an apply running
/// now makes it stop with status 75).
pub fn gc_held_command(current: u64, keep: u32) -> String {
    format!(
        "mkdir -p {dir} && exec 9>>{lock} && {{ flock -n 9 || {{ echo 'an apply holds the board lock; try again when it is done' >&2; exit 75; }}; }} && {}",
        gc_commands(current, keep, Sweep::Always),
        dir = quote(crate::converge::STATE_DIR),
        lock = quote(crate::converge::LOCK_FILE),
    )
}

/// The state generation `m` describes, to converge a host back to it: every file's content
/// comes from the store; steps and kernel modules are not part of a generation.
pub fn to_state(m: &Manifest, base: &HostState) -> HostState {
    let files = m
        .files
        .iter()
        .map(|f| DesiredFile {
            path: f.path.clone(),
            content: Content::Stored { sha256: f.sha256.clone(), binary: f.binary },
            mode: f.mode,
            owner: f.owner.clone(),
            secret: f.secret,
            restarts: f.restarts.clone(),
        })
        .collect();
    HostState {
        node: base.node.clone(),
        files,
        symlinks: m.symlinks.iter().map(|l| Symlink { path: l.path.clone(), target: l.target.clone() }).collect(),
        service: base.service.clone(),
        steps: vec![],
        kernel_modules: vec![],
        k3s_version: m.k3s.clone(),
        detect: base.detect.clone(),
    }
}

/// Every generation of a host, read in one command.
#[derive(Debug, Clone, Default, Serialize)]
pub struct History {
    pub generations: Vec<Manifest>,
    pub current: Option<u64>,
    /// Disk used by the store, KiB.
    pub store_kib: u64,
}

impl History {
    pub fn get(&self, n: u64) -> Option<&Manifest> {
        self.generations.iter().find(|m| m.number == n)
    }
    /// The generation before the current one (what a rollback goes back to).
    pub fn previous(&self) -> Option<&Manifest> {
        let cur = self.current?;
        self.generations.iter().filter(|m| m.number < cur).max_by_key(|m| m.number)
    }
}

/// The command that prints every manifest of a host (read only, no lock).
pub fn read_all_command() -> String {
    format!(
        "for m in {gen}/[0-9]*/manifest.json; do [ -f \"$m\" ] || continue; echo '@@rv gen'; cat \"$m\"; done; \
         echo '@@rv current'; cat {cur} 2>/dev/null; echo '@@rv store'; du -sk {store} 2>/dev/null | cut -f1; true",
        gen = quote(GEN_DIR),
        cur = quote(CURRENT),
        store = quote(STORE_DIR),
    )
}

/// Why a host's generations could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    #[error("a generation manifest does not parse: {0}")]
    Manifest(serde_json::Error),
    #[error("current.json does not parse: {0}")]
    Current(serde_json::Error),
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    #[error("reading generations failed: {stderr}")]
    ReadFailed { stderr: String },
}

pub fn parse_all(out: &str) -> Result<History, GenerationError> {
    let mut h = History::default();
    let mut section = "";
    let mut buf = String::new();
    let flush = |section: &str, buf: &mut String, h: &mut History| -> Result<(), GenerationError> {
        let text = std::mem::take(buf);
        match section {
            "gen" => h.generations.push(serde_json::from_str(&text).map_err(GenerationError::Manifest)?),
            "current" if !text.trim().is_empty() => {
                let m: Manifest = serde_json::from_str(&text).map_err(GenerationError::Current)?;
                h.current = Some(m.number);
            }
            "store" => h.store_kib = text.trim().parse().unwrap_or(0),
            _ => {}
        }
        Ok(())
    };
    for line in out.lines() {
        if let Some(s) = line.strip_prefix("@@rv ") {
            flush(section, &mut buf, &mut h)?;
            section = match s {
                "gen" => "gen",
                "current" => "current",
                "store" => "store",
                _ => "",
            };
            continue;
        }
        buf.push_str(line);
        buf.push('\n');
    }
    flush(section, &mut buf, &mut h)?;
    h.generations.sort_by_key(|m| m.number);
    Ok(h)
}

/// Read a host's generations (one remote command).
pub fn read_all(host: &mut dyn crate::transport::Host) -> Result<History, GenerationError> {
    let out = host.exec(&read_all_command(), None, Some(std::time::Duration::from_secs(120)))?;
    if !out.success() {
        return Err(GenerationError::ReadFailed { stderr: out.stderr_str().trim().to_string() });
    }
    parse_all(&out.stdout_str())
}

/// One line on what changed from `a` to `b` (counts and the k3s version).
pub fn summary(a: Option<&Manifest>, b: &Manifest) -> String {
    let Some(a) = a else { return if b.number == 0 { "as found".into() } else { format!("{} file(s)", b.files.len()) } };
    let old: BTreeMap<&str, &FileEntry> = a.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let new: BTreeMap<&str, &FileEntry> = b.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let added = new.keys().filter(|p| !old.contains_key(*p)).count();
    let removed = old.keys().filter(|p| !new.contains_key(*p)).count();
    let changed = new.iter().filter(|(p, f)| old.get(*p).is_some_and(|o| o.sha256 != f.sha256 || o.mode != f.mode || o.owner != f.owner)).count();
    let mut parts = Vec::new();
    if a.k3s != b.k3s {
        parts.push(format!("k3s {} -> {}", a.k3s.as_deref().unwrap_or("none"), b.k3s.as_deref().unwrap_or("none")));
    }
    for (n, w) in [(changed, "changed"), (added, "added"), (removed, "removed")] {
        if n > 0 {
            parts.push(format!("{n} {w}"));
        }
    }
    if a.symlinks != b.symlinks {
        parts.push("symlinks changed".into());
    }
    if parts.is_empty() { "no file changes".into() } else { parts.join(", ") }
}

#[cfg(test)]
mod tests;
