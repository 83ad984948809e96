//! Pure builders of the shell commands the transport sends. Nothing here does I/O; every value
//! that reaches a shell goes through [`quote`]. Unit tests pin the exact strings.

use super::target::Become;

/// Quote one word for a POSIX shell. Safe words stay as they are (readable logs); anything
/// else is single-quoted with embedded quotes as `'\''`. The empty string becomes `''`.
pub fn quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Join words into one command line, quoting each.
pub fn join(words: &[&str]) -> String {
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

/// Wrap a command so it runs with the wanted privilege. `sudo -n` never prompts: when sudo
/// wants a password it fails, and the caller turns that into a clear error.
pub fn with_become(become_: &Become, command: &str) -> String {
    match become_ {
        Become::None => command.to_string(),
        Become::Sudo => format!("sudo -n -- sh -c {}", quote(command)),
    }
}

/// Make the host itself stop a command a little after the caller's deadline (which reports the
/// timeout first): `timeout -s KILL` kills the command's whole process group, so a timed-out
/// command does not linger on the board. Hosts without `timeout` run the command as is.
pub fn with_host_timeout(command: &str, timeout: std::time::Duration) -> String {
    let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0) + 2;
    let q = quote(command);
    format!(
        "if command -v timeout >/dev/null 2>&1; then exec timeout -s KILL {secs} sh -c {q}; \
         else exec sh -c {q}; fi"
    )
}

/// First stdin line after the password when a become password is used.
pub const BECOME_MARK: &str = "RVCLUSTER-BECOME";
/// Exit status of the [`with_sudo_password`] wrapper when sudo did not consume the password.
pub const BECOME_NOT_ASKED_STATUS: i32 = 97;

/// `sudo -S` wrapper for a become password. stdin must start with the password line, then
/// [`BECOME_MARK`]; `-k` makes sudo always ask. If sudo did not read the password, the wrapper
/// finds it instead of the marker and exits [`BECOME_NOT_ASKED_STATUS`] without running
/// the command, so the password never reaches it.
pub fn with_sudo_password(command: &str) -> String {
    format!(
        "sudo -S -k -p '' -- sh -c {} rvcluster-become {}",
        quote(&format!(
            "IFS= read -r l; [ \"$l\" = {BECOME_MARK} ] || exit {BECOME_NOT_ASKED_STATUS}; exec sh -c \"$1\""
        )),
        quote(command)
    )
}

/// Checks a become password: stdin is the password line only.
pub fn sudo_password_check() -> String {
    "sudo -S -k -p '' -- true".to_string()
}

/// Does this stderr (with exit status) say that `sudo -n` needed a password?
pub fn is_sudo_password_error(status: i32, stderr: &str) -> bool {
    status == 1
        && stderr.contains("sudo")
        && (stderr.contains("password is required") || stderr.contains("a terminal is required"))
}

/// Defines `rv_sha` (sha256 of stdin, hex first on its line): `openssl dgst` when the host has
/// it (uses SHA extensions, about 4x less CPU than coreutils on a large file), else `sha256sum`;
/// `rv_shs`, the same for a small file: `sha256sum` first (it starts in a third of the time
/// `openssl` takes to load its configuration, which is all a few hundred bytes cost); and
/// `rv_check FILE...`, true when each file hashes to its sha256 in `$rv_w` (space-separated, in
/// the same order), in ONE `sha256sum` for all of them (one line per file in argument order; a
/// name with a newline or backslash is escaped on its line, which then starts with `\`), one
/// `rv_sha` per file where there is no `sha256sum`;
/// `rv_umask`, which reads the shell's umask into `rv_um` once (one fork per script), for
/// [`text_stage`] to put back after each temp file it creates under another;
/// `rv_mvall MARK TEMP...`, which renames each `DIR/MARKNAME` to `DIR/NAME`, in order, with ONE
/// util-linux `rename MARK '' TEMP...` where the host has it (`rename.ul` on Debian; a `rename`
/// that says util-linux), else one `mv -f` each (docs/converge.md §3.6); and `rv_mkdirs
/// DIR...`, which makes them all with ONE `mkdir -p` when any is missing (never fails: the
/// write that needs a directory still made none tries again and reports it).
pub const SHA_FN: &str = "if command -v openssl >/dev/null 2>&1; then rv_sha() { openssl dgst -sha256 -r; }; \
                          else rv_sha() { sha256sum; }; fi; \
                          if command -v sha256sum >/dev/null 2>&1; then rv_shs() { sha256sum; }; rv_shm() { sha256sum -- \"$@\"; }; \
                          else rv_shs() { rv_sha; }; rv_shm() { for rv_f; do rv_sha < \"$rv_f\" || return 1; done; }; fi; \
                          rv_check() { [ $# -gt 0 ] || { [ -z \"$rv_w\" ]; return; }; rv_l=$(rv_shm \"$@\") || return 1; set -- $rv_w; \
                          while IFS= read -r rv_h; do rv_h=${rv_h#\\\\}; [ $# -gt 0 ] && [ \"${rv_h%% *}\" = \"$1\" ] || return 1; shift; done <<RV_SUMS\n$rv_l\nRV_SUMS\n\
                          [ $# = 0 ]; }\n\
                          rv_umask() { [ -n \"${rv_um:-}\" ] || rv_um=$(umask); }\n\
                          rv_mvall() { rv_x=$1; shift; [ $# -gt 0 ] || return 0; if [ -z \"${rv_rn+x}\" ]; then rv_rn=''; \
                          if command -v rename.ul >/dev/null 2>&1; then rv_rn=rename.ul; elif command -v rename >/dev/null 2>&1; then \
                          case $(rename --version 2>/dev/null) in *util-linux*) rv_rn=rename;; esac; fi; fi; \
                          if [ -n \"$rv_rn\" ] && [ $# -gt 1 ]; then \"$rv_rn\" -- \"$rv_x\" '' \"$@\" >/dev/null; return; fi; \
                          for rv_f; do rv_b=${rv_f##*/}; mv -f \"$rv_f\" \"${rv_f%/*}/${rv_b#\"$rv_x\"}\" || return 1; done; }\n\
                          rv_mkdirs() { for rv_f; do [ -d \"$rv_f\" ] || { mkdir -p -- \"$@\" 2>/dev/null; return 0; }; done; }\n";

/// Octal text of a file mode (`0644`).
pub fn mode_str(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// `dest` as its directory (with the trailing `/`; empty for a bare name) and its name.
fn split_dir(dest: &str) -> (&str, &str) {
    match dest.rfind('/') {
        Some(i) => (&dest[..=i], &dest[i + 1..]),
        None => ("", dest),
    }
}

/// Temp name beside `dest`: same directory, so the final `mv -f` is an atomic rename.
pub fn temp_path_for(dest: &str, suffix: &str) -> String {
    let (dir, base) = split_dir(dest);
    format!("{dir}.{base}.rvcluster-tmp.{suffix}")
}

/// Removes temp files of `dest` that an earlier write left behind, `$t` too when a recycled pid
/// named one the same (it is not made yet): a board rebooted or a script SIGKILLed mid-write
/// runs no cleanup (tests/faults_reboot.rs). Then `$t` is always created fresh.
fn stale_temps(dest: &str) -> String {
    format!("for o in {}*; do [ ! -e \"$o\" ] || rm -f \"$o\"; done; ", quote(&temp_path_for(dest, "")))
}

/// `dir` made when missing (`[ -d ]` first: no process when it is there); a `private` one is
/// made mode 0700 by `mkdir -m` itself (POSIX: the mode of the directory it makes; missing
/// parents get the default), one process; an existing one is left as it is.
pub fn ensure_dir(dir: &str, private: bool) -> String {
    let d = quote(dir);
    if private {
        format!("{{ [ -d {d} ] || mkdir -p -m 700 {d}; }}")
    } else {
        format!("{{ [ -d {d} ] || mkdir -p {d}; }}")
    }
}

/// `dest`'s directory made when missing, then `&&`.
fn mkdir_parent(dest: &str) -> String {
    parent_dir(dest).map(|p| format!("{} && ", ensure_dir(p, false))).unwrap_or_default()
}

fn parent_dir(dest: &str) -> Option<&str> {
    match dest.rfind('/') {
        Some(0) => None,
        Some(i) => Some(&dest[..i]),
        None => None,
    }
}

/// Set the file's mode and owner, starting no process where nothing would change: a temp file
/// `created` with known permission bits (just made under a umask, after any stale one of the
/// same name was removed) needs no `chmod` when those are the mode, and a file the `test`
/// builtin finds owned by the effective user and group while `/` is too (`-O`, `-G`) is
/// root:root already.
fn chmod_chown(target_var: &str, mode: u32, owner: Option<&str>, created: Option<u32>) -> String {
    let mut parts = vec![];
    if created != Some(mode & 0o7777) {
        parts.push(format!("chmod {} \"${target_var}\"", mode_str(mode)));
    }
    match owner {
        Some("root:root") => parts.push(format!(
            "{{ {{ [ -O / ] && [ -G / ] && [ -O \"${target_var}\" ] && [ -G \"${target_var}\" ]; }} || chown root:root \"${target_var}\"; }}"
        )),
        Some(owner) => parts.push(format!("chown {} \"${target_var}\"", quote(owner))),
        None => {}
    }
    if parts.is_empty() { ":".to_string() } else { parts.join(" && ") }
}

/// The umask under which the shell creates a file (`> f`, bits 0666 at most) with `mode`'s
/// permission bits, and the bits it is created with: `mode` itself when it has no bit outside
/// 0666, else 0600 (umask 077), which `chmod_chown` then changes. A temp file is never more
/// open than the file it becomes.
fn create_umask(mode: u32) -> (u32, Option<u32>) {
    let mode = mode & 0o7777;
    if mode & !0o666 == 0 { (!mode & 0o777, Some(mode)) } else { (0o077, Some(0o600)) }
}

/// `present`-check shared by [`upload_check`] and [`upload_stream`]: when `$d` is a regular
/// file with that sha256, fix its mode/owner, print `present` and exit 0. The hasher reads
/// stdin so that hostile file names never appear in its output.
fn present_check(sha256: &str, mode: u32, owner: Option<&str>, drain: bool) -> String {
    format!(
        "if [ -f \"$d\" ] && [ ! -L \"$d\" ]; then h=$(rv_sha < \"$d\") || exit 1; h=${{h%% *}}; \
         if [ \"$h\" = {sha} ]; then {fix} || exit 1; {drain}echo present; exit 0; fi; fi; ",
        sha = quote(sha256),
        fix = chmod_chown("d", mode, owner, None),
        drain = if drain { "cat >/dev/null; " } else { "" },
    )
}

/// Check only: prints `present` (and makes mode/owner right) when `dest` is a regular file with
/// that sha256, otherwise `absent`.
pub fn upload_check(dest: &str, sha256: &str, mode: u32, owner: Option<&str>) -> String {
    format!(
        "{SHA_FN}d={}; {}echo absent",
        quote(dest),
        present_check(sha256, mode, owner, false)
    )
}

/// Exit status of [`upload_stream`] when the received bytes do not hash to the expected sha256.
pub const SHA_MISMATCH_STATUS: i32 = 86;
/// Prefix of the stderr line [`upload_stream`] prints on a mismatch, followed by the actual hash.
pub const SHA_MISMATCH_MARK: &str = "rvcluster-sha-mismatch ";

/// The whole upload in one round trip. When `dest` already has that sha256: fix mode/owner,
/// print `present`, exit without reading stdin. Otherwise write stdin to a temp file beside
/// `dest` (mode 0600 while in flight), hash the file, verify the sha256, set mode/owner, then
/// rename it over `dest` atomically. The writer's own status says whether it was written whole
/// (a full disk fails it); the hash is of the bytes on the host, read back from the file. On
/// any failure the temp file is removed and `dest` is untouched.
pub fn upload_stream(dest: &str, tmp: &str, sha256: &str, mode: u32, owner: Option<&str>) -> String {
    upload_stream_kept(dest, tmp, sha256, mode, owner, None, None)
}

/// A compression the host can undo while receiving (checked in its facts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Zstd,
    Gzip,
}

impl Codec {
    /// The host command that decompresses stdin into the file named by the shell variable `t`,
    /// which must not exist yet. zstd writes it itself (`-o`: no pipe to a writer process) and,
    /// where it knows `--no-asyncio` (1.5.4 and later), without its two extra I/O threads, which
    /// gain nothing here (about a fifth of zstd's CPU time). An older zstd rejects the option
    /// before it reads a byte or makes the file (its argument parser exits 1 on an unknown one),
    /// so a failure is followed by a plain `zstd -dq` on the same stdin: no process spent asking
    /// first. A zstd that fails for another reason removes
    /// what it wrote; the second one then fails too (its input starts mid-stream) and the upload
    /// is refused as before.
    pub fn decompress(self) -> &'static str {
        match self {
            Codec::Zstd => "{ zstd --no-asyncio -dq -o \"$t\" 2>/dev/null || zstd -dq -o \"$t\"; }",
            Codec::Gzip => "gzip -dc > \"$t\"",
        }
    }
    /// The probe that says whether the host has it.
    pub fn probe(self) -> &'static str {
        match self {
            Codec::Zstd => "command -v zstd",
            Codec::Gzip => "command -v gzip",
        }
    }
    pub fn extension(self) -> &'static str {
        match self {
            Codec::Zstd => "zst",
            Codec::Gzip => "gz",
        }
    }
}

/// [`upload_stream`], receiving compressed bytes when `codec` is given (undone on the host as
/// the file is written, so the sha256 checked is still the uncompressed file's: a corrupt stream
/// fails the check and leaves `dest` untouched), and keeping a copy at `keep`
/// (`RemoteFile::keep`) when given, unless a file is there already: once the file's sha256 is
/// verified, it is copied (`cp`: an in-kernel copy where the filesystem can) to a temp file
/// beside the copy (0600 under the command's umask, its directory made 0700 when missing),
/// renamed into place after the destination.
pub fn upload_stream_kept(
    dest: &str,
    tmp: &str,
    sha256: &str,
    mode: u32,
    owner: Option<&str>,
    codec: Option<Codec>,
    keep: Option<&str>,
) -> String {
    format!("{SHA_FN}{}", upload_stream_body(dest, tmp, sha256, mode, owner, codec, keep, false))
}

/// [`upload_stream_kept`] without the [`SHA_FN`] definitions it needs (for a shell that has
/// them already: the held lock+facts command, src/converge/session.rs). One line unless a path
/// holds a newline. `drain`: a file already there still reads its stdin to the end (the held
/// command's stream must be left at the next request; on success every other path reads it all,
/// the decompressor or `cat` to its end).
#[allow(clippy::too_many_arguments)]
pub fn upload_stream_body(
    dest: &str,
    tmp: &str,
    sha256: &str,
    mode: u32,
    owner: Option<&str>,
    codec: Option<Codec>,
    keep: Option<&str>,
    drain: bool,
) -> String {
    let write = match codec {
        Some(c) => c.decompress(),
        None => "cat > \"$t\"",
    };
    let mkdir = match parent_dir(dest) {
        Some(p) => format!("{} || exit 1; ", ensure_dir(p, false)),
        None => String::new(),
    };
    let (kept_tmp, keep_it) = match keep {
        None => (String::new(), String::new()),
        Some(k) => {
            let dir = ensure_dir(parent_dir(k).unwrap_or("/"), true);
            (
                format!(
                    "if [ ! -f {k} ] && {dir}; then kt={kt}.$$; fi; ",
                    k = quote(k),
                    kt = quote(&temp_path_for(k, "up")),
                ),
                format!(" if [ -n \"$kt\" ]; then mv -f \"$kt\" {} || exit 1; fi;", quote(k)),
            )
        }
    };
    format!(
        "umask 077; d={d}; t={t}; kt=''; {stale}{check}trap 'rm -f \"$t\" ${{kt:+\"$kt\"}}' EXIT; {mkdir}\
         {kept_tmp}{write} || exit 1; h=$(rv_sha < \"$t\") || exit 1; h=${{h%% *}}; if [ \"$h\" != {sha} ]; then echo \"{mark}$h\" >&2; exit {status}; fi; \
         {{ [ -z \"$kt\" ] || cp \"$t\" \"$kt\"; }} || exit 1; {fix} && mv -f \"$t\" \"$d\" || exit 1;{keep_it} trap - EXIT",
        d = quote(dest),
        t = quote(tmp),
        check = present_check(sha256, mode, owner, drain),
        stale = stale_temps(dest),
        sha = quote(sha256),
        mark = SHA_MISMATCH_MARK,
        status = SHA_MISMATCH_STATUS,
        fix = chmod_chown("t", mode, owner, Some(0o600)),
    )
}

/// A fragment that writes `content` to `dest` atomically: into a temp file beside it, sha256
/// verified, mode and owner set, then renamed over `dest`. On any failure the temp file is
/// removed, `dest` is untouched, and the fragment's status is non-zero. `printf` is a shell
/// builtin, so the content is not bound by ARG_MAX. Needs [`SHA_FN`] defined earlier. Tests
/// only: the apply script writes text through `Script::text` (src/converge/script.rs), which
/// runs the same [`text_stage`] parts.
#[cfg(test)]
pub fn write_inline(dest: &str, content: &str, sha256: &str, mode: u32, owner: Option<&str>) -> String {
    write_text(&[TextCopy { dest, mode, owner, kept: false }], content, sha256)
}

/// One place a text write ([`text_stage`]) puts the text.
#[derive(Debug, Clone)]
pub struct TextCopy<'a> {
    /// Its temp file is beside it ([`TEXT_MARK`]), so the rename is atomic.
    pub dest: &'a str,
    pub mode: u32,
    pub owner: Option<&'a str>,
    /// A content-addressed copy (the generation store): written only when `dest` is not there
    /// yet (its name is its content), its directory made 0700 when missing.
    pub kept: bool,
}

/// [`write_inline`] to several places at once (a file and its generation-store copy, a
/// manifest and current.json): each copy into its own temp file, created under the umask that
/// gives its mode (no `chmod` for 0644 or 0600), ONE `sha256sum` over all of them
/// (`rv_check`), mode and owner set, then each renamed over its destination, in order. On any
/// failure every temp file is removed and no destination changed, unless a rename itself failed
/// (the copies before it are in place, whole). One `{ }` group: safe to chain with `&&`. The
/// single-write form of [`text_stage`], as the apply script's run of one write does it; tests
/// only (the script composes runs itself, src/converge/script.rs).
#[cfg(test)]
pub fn write_text(copies: &[TextCopy], content: &str, sha256: &str) -> String {
    let w = text_stage("", copies, content, sha256);
    format!(
        "{{ {assign}set --; rv_w=''; {{ {stage} && rv_check \"$@\" && {fix} && rv_mvall {TEXT_MARK} \"$@\"; }} || {{ rm -f {temps}; false; }}; }}",
        assign = w.assign,
        stage = w.stage,
        fix = w.fix,
        temps = w.temps.join(" "),
    )
}

/// What a text write's temp file has before the name it becomes, in the same directory:
/// `DIR/.rvcluster-tmp.PID.NAME`, PID the writing shell's (`$$`, expanded there). One mark for
/// every temp file of a script, so ONE `rename` renames them all (`rv_mvall`, [`SHA_FN`]).
pub const TEXT_MARK: &str = "\".rvcluster-tmp.$$.\"";

/// The temp file of `dest` as a shell word: [`TEXT_MARK`] before its name.
fn text_temp(dest: &str) -> String {
    let (dir, base) = split_dir(dest);
    format!("{}{TEXT_MARK}{}", quote_dir(dir), quote(base))
}

/// A directory part from [`split_dir`] as a shell word ahead of a name (nothing for none).
fn quote_dir(dir: &str) -> String {
    if dir.is_empty() { String::new() } else { quote(dir) }
}

/// Removes text temp files of `dest` an earlier write left behind (both namings: this one's,
/// and the upload's, [`temp_path_for`], which earlier versions used for text too).
fn stale_text_temps(dest: &str) -> String {
    let (dir, base) = split_dir(dest);
    format!(
        "for o in {}.rvcluster-tmp.*.{} {}*; do [ ! -e \"$o\" ] || rm -f \"$o\"; done; ",
        quote_dir(dir),
        quote(base),
        quote(&temp_path_for(dest, ""))
    )
}

/// A text write in parts: each copy into its own temp file, created under the umask that gives
/// its mode (no `chmod` for 0644 or 0600), ONE `sha256sum` over all temp files (`rv_check`),
/// mode and owner set, then all renamed over their destinations, in order; several writes can
/// share the one hash pass and the one rename (the apply script's consecutive text writes,
/// src/converge/script.rs). Run in order: `assign` (names and the removal of stale temp files;
/// always succeeds), `stage` (writes this write's temp files, adding each to `"$@"` and its
/// sha256 to `$rv_w`; `set --; rv_w=''` once before the first), `rv_check "$@"`, `fix` (mode,
/// owner), then `rv_mvall TEXT_MARK "$@"` once for all. `temps` are this write's temp files as
/// shell words, to remove when anything fails. Variable names carry `tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextStage {
    pub assign: String,
    pub stage: String,
    pub fix: String,
    pub temps: Vec<String>,
    /// The directories of its plain copies (not the private store's), as shell words: a run
    /// makes the missing ones with ONE `rv_mkdirs` before its writes (each write still makes
    /// its own when that failed, so the error names the write).
    pub dirs: Vec<String>,
}

pub fn text_stage(tag: &str, copies: &[TextCopy], content: &str, sha256: &str) -> TextStage {
    let c = quote(content);
    let sha = quote(sha256);
    let mut assign = String::new();
    let mut make = vec![];
    let (mut fix, mut temps, mut dirs) = (vec![], vec![], vec![]);
    for (i, cp) in copies.iter().enumerate() {
        if let Some(p) = parent_dir(cp.dest).filter(|_| !cp.kept) {
            dirs.push(quote(p));
        }
        let (d, t, k) = (format!("rv_d{tag}{i}"), format!("rv_t{tag}{i}"), format!("rv_k{tag}{i}"));
        assign.push_str(&format!("{d}={}; {t}={}; {}", quote(cp.dest), text_temp(cp.dest), stale_text_temps(cp.dest)));
        let dir = parent_dir(cp.dest).map(|p| format!("{} && ", ensure_dir(p, cp.kept))).unwrap_or_default();
        let (umask, created) = create_umask(cp.mode);
        // The umask set and put back in this shell (the caller's, read once per script by
        // `rv_umask`): a `( )` subshell would fork once per copy.
        let write = format!(
            "{dir}rv_umask && umask {umask:03o} && {{ printf '%s' {c} > \"${t}\"; rv_e=$?; umask \"$rv_um\"; [ \"$rv_e\" = 0 ]; }} && set -- \"$@\" \"${t}\" && rv_w=\"$rv_w \"{sha}"
        );
        let f = chmod_chown(&t, cp.mode, cp.owner, created);
        if cp.kept {
            make.push(format!("{{ [ -f \"${d}\" ] || {{ {write} && {k}=1; }}; }}"));
            assign.push_str(&format!("{k}=''; "));
            if f != ":" {
                fix.push(format!("{{ [ -z \"${k}\" ] || {{ {f}; }}; }}"));
            }
        } else {
            make.push(write);
            if f != ":" {
                fix.push(f);
            }
        }
        temps.push(format!("\"${t}\""));
    }
    let fix = if fix.is_empty() { ":".to_string() } else { fix.join(" && ") };
    TextStage { assign, stage: make.join(" && "), fix, temps, dirs }
}

/// Commands that copy `src` (a file already on the host) to `dest` the same atomic way: temp file
/// beside `dest`, sha256 verified, mode and owner fixed, rename.
pub fn copy_verified(src: &str, dest: &str, tmp: &str, sha256: &str, mode: u32, owner: Option<&str>) -> String {
    let mkdir = mkdir_parent(dest);
    format!(
        "d={d}; t={t}; {mkdir}cp {s} \"$t\" && h=$(rv_sha < \"$t\") && \
         [ \"${{h%% *}}\" = {sha} ] && {fix} && mv -f \"$t\" \"$d\" || {{ rm -f \"$t\"; false; }}",
        d = quote(dest),
        t = quote(tmp),
        s = quote(src),
        sha = quote(sha256),
        fix = chmod_chown("t", mode, owner, None),
    )
}

/// A remote command as logged: its first line, at most 160 characters, with anything that looks
/// like a secret assignment masked (`K3S_TOKEN=…`, `password: …`, `--token …`).
pub fn redact_command(cmd: &str) -> String {
    let first: String = cmd.lines().find(|l| !l.trim().is_empty()).unwrap_or("").chars().take(160).collect();
    mask_secrets(&first)
}

pub fn mask_secrets(text: &str) -> String {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r#"(?i)((?:token|password|passwd|secret)[a-z_]*\s*[=:]\s*|--(?:token|password)[= ])("[^"]*"|'[^']*'|\S+)"#)
            .expect("valid regex")
    });
    re.replace_all(text, "${1}<redacted>").into_owned()
}

/// The login user's name, and whether it is root (one short round trip).
pub fn whoami() -> String {
    "id -un; id -u".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_leaves_safe_words() {
        assert_eq!(quote("/usr/local/bin/k3s"), "/usr/local/bin/k3s");
        assert_eq!(quote("root:root"), "root:root");
        assert_eq!(quote("a-b_c.d=e,f@g%h+i"), "a-b_c.d=e,f@g%h+i");
    }

    #[test]
    fn quote_hostile_words() {
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(quote("`id`"), "'`id`'");
        assert_eq!(quote("a\nb"), "'a\nb'");
        assert_eq!(quote("*"), "'*'");
        assert_eq!(quote("~root"), "'~root'");
        assert_eq!(quote("x;y&z|w"), "'x;y&z|w'");
        assert_eq!(quote("'"), r"''\'''");
    }

    #[test]
    fn join_quotes_each_word() {
        assert_eq!(
            join(&["printf", "%s\n", "a b", "$HOME"]),
            "printf '%s\n' 'a b' '$HOME'"
        );
    }

    #[test]
    fn become_wraps_with_sudo_n() {
        assert_eq!(with_become(&Become::None, "id -u"), "id -u");
        assert_eq!(
            with_become(&Become::Sudo, "id -u"),
            "sudo -n -- sh -c 'id -u'"
        );
        assert_eq!(
            with_become(&Become::Sudo, "echo 'x'"),
            r"sudo -n -- sh -c 'echo '\''x'\'''"
        );
    }

    #[test]
    fn host_timeout_wrapper() {
        assert_eq!(
            with_host_timeout("sleep 9; echo 'x'", std::time::Duration::from_millis(1500)),
            r#"if command -v timeout >/dev/null 2>&1; then exec timeout -s KILL 4 sh -c 'sleep 9; echo '\''x'\'''; else exec sh -c 'sleep 9; echo '\''x'\'''; fi"#
        );
        assert!(with_host_timeout("true", std::time::Duration::from_secs(3)).contains("KILL 5 sh"));
    }

    #[test]
    fn sudo_password_wrapper() {
        assert_eq!(
            with_sudo_password("cat > '/a b'"),
            r#"sudo -S -k -p '' -- sh -c 'IFS= read -r l; [ "$l" = RVCLUSTER-BECOME ] || exit 97; exec sh -c "$1"' rvcluster-become 'cat > '\''/a b'\'''"#
        );
        assert_eq!(sudo_password_check(), "sudo -S -k -p '' -- true");
    }

    #[test]
    fn sudo_password_error_is_recognised() {
        assert!(is_sudo_password_error(1, "sudo: a password is required\n"));
        assert!(is_sudo_password_error(
            1,
            "sudo: a terminal is required to read the password"
        ));
        assert!(!is_sudo_password_error(1, "cat: x: No such file"));
        assert!(!is_sudo_password_error(0, "sudo: a password is required"));
    }

    #[test]
    fn temp_path_is_beside_dest() {
        assert_eq!(
            temp_path_for("/usr/local/bin/k3s", "42"),
            "/usr/local/bin/.k3s.rvcluster-tmp.42"
        );
        assert_eq!(temp_path_for("k3s", "1"), ".k3s.rvcluster-tmp.1");
        assert_eq!(temp_path_for("/a b/c'd", "1"), "/a b/.c'd.rvcluster-tmp.1");
    }

    #[test]
    fn mode_is_octal() {
        assert_eq!(mode_str(0o755), "0755");
        assert_eq!(mode_str(0o600), "0600");
        assert_eq!(mode_str(0o100644), "0644");
    }

    #[test]
    fn upload_check_fixes_the_mode_of_a_present_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a b");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let sha = crate::render::sha256_hex(b"x");
        let run = |sha: &str| std::process::Command::new("sh").arg("-c").arg(upload_check(&f.display().to_string(), sha, 0o644, None)).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&run(&"0".repeat(64)).stdout).trim(), "absent");
        assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600, "not touched when absent");
        assert_eq!(String::from_utf8_lossy(&run(&sha).stdout).trim(), "present");
        assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o644);
    }

    #[test]
    fn mode_and_owner_start_a_process_only_when_something_changes() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let calls = dir.path().join("calls");
        for tool in ["chmod", "chown"] {
            super::super::stub::counting(&bin, &calls, tool, false);
        }
        let t = dir.path().join("t");
        std::fs::write(&t, "x").unwrap();
        let run = |fix: String| {
            let _ = std::fs::remove_file(&calls);
            let path = super::super::stub::path_first(&bin);
            let st = std::process::Command::new("sh").arg("-c").arg(format!("t='{}'; {fix}", t.display())).env("PATH", path).status().unwrap();
            assert!(st.success());
            std::fs::read_to_string(&calls).unwrap_or_default()
        };
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0 && unsafe { libc::getegid() } == 0;
        let fresh = run(chmod_chown("t", 0o600, Some("root:root"), Some(0o600)));
        assert_eq!(fresh, if root { "" } else { "chown\n" }, "a fresh 0600 temp owned by root needs nothing");
        assert_eq!(run(chmod_chown("t", 0o644, Some("root:root"), Some(0o600))), if root { "chmod\n" } else { "chmod\nchown\n" });
        assert_eq!(run(chmod_chown("t", 0o644, Some("root:root"), Some(0o644))), if root { "" } else { "chown\n" }, "created 0644");
        assert_eq!(run(chmod_chown("t", 0o600, Some("root:root"), None)), if root { "chmod\n" } else { "chmod\nchown\n" }, "not fresh: its mode is unknown");
        assert_eq!(run(chmod_chown("t", 0o600, Some("app:app"), Some(0o600))), "chown\n");
        assert_eq!(run(chmod_chown("t", 0o600, None, Some(0o600))), "");
    }

    /// Run an upload command in `sh` with `input` on stdin: (status, stderr).
    fn run_upload(cmd: &str, input: &[u8]) -> (i32, String) {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    #[test]
    fn an_upload_lands_whole_and_keeps_a_verified_copy_only_when_asked_and_missing() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("bin/k3s").display().to_string();
        let store = dir.path().join("store");
        let keep = store.join("kept").display().to_string();
        let bytes = b"k3s binary bytes".repeat(1000);
        let sha = crate::render::sha256_hex(&bytes);
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let leftovers = |d: &std::path::Path| std::fs::read_dir(d).map(|r| r.filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().contains("rvcluster-tmp")).count()).unwrap_or(0);
        // A wrong sha256: neither the destination nor the copy appears, no temp file is left.
        let (status, err) = run_upload(&upload_stream_kept(&dest, &temp_path_for(&dest, "1"), &"0".repeat(64), 0o755, None, None, Some(&keep)), &bytes);
        assert_eq!(status, SHA_MISMATCH_STATUS, "{err}");
        assert!(!std::path::Path::new(&dest).exists() && !std::path::Path::new(&keep).exists());
        assert_eq!(leftovers(&dir.path().join("bin")) + leftovers(&store), 0);
        // The right one: both, the copy 0600 in a 0700 directory.
        let (status, err) = run_upload(&upload_stream_kept(&dest, &temp_path_for(&dest, "2"), &sha, 0o755, None, None, Some(&keep)), &bytes);
        assert_eq!(status, 0, "{err}");
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);
        assert_eq!(std::fs::read(&keep).unwrap(), bytes);
        assert_eq!((mode(std::path::Path::new(&dest)), mode(std::path::Path::new(&keep)), mode(&store)), (0o755, 0o600, 0o700));
        assert_eq!(leftovers(&dir.path().join("bin")) + leftovers(&store), 0);
        // A copy already kept is not written again (another upload of other bytes leaves it).
        std::fs::remove_file(&dest).unwrap();
        std::fs::write(&keep, b"kept before").unwrap();
        let (status, _) = run_upload(&upload_stream_kept(&dest, &temp_path_for(&dest, "3"), &sha, 0o755, None, None, Some(&keep)), &bytes);
        assert_eq!(status, 0);
        assert_eq!(std::fs::read(&keep).unwrap(), b"kept before");
        // Without `keep`, only the destination.
        let plain = dir.path().join("plain").display().to_string();
        let (status, _) = run_upload(&upload_stream(&plain, &temp_path_for(&plain, "4"), &sha, 0o600, None), &bytes);
        assert_eq!((status, std::fs::read(&plain).unwrap()), (0, bytes.clone()));
        assert_eq!(std::fs::read_dir(&store).unwrap().count(), 1);
    }

    #[test]
    fn upload_stream_quotes_hostile_dest() {
        let s = upload_stream(
            "/tmp/$(touch pwned)/a'b\nc",
            "/tmp/t",
            "abc",
            0o600,
            Some("a b"),
        );
        assert!(s.contains("d='/tmp/$(touch pwned)/a'\\''b\nc'"), "{s}");
        assert!(s.contains("mkdir -p '/tmp/$(touch pwned)'"), "{s}");
        assert!(s.contains("chown 'a b' \"$t\""), "{s}");
    }

    #[test]
    fn write_inline_writes_exact_bytes_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a b").join("it's $(x).conf");
        let dest = dest.to_str().unwrap();
        let parent = std::path::Path::new(dest).parent().unwrap().to_path_buf();
        let temps = || std::fs::read_dir(&parent).map(|r| r.flatten().filter(|e| e.file_name().to_string_lossy().contains("rvcluster-tmp")).count()).unwrap_or(0);
        for content in ["x\n'$(touch pwned)'\n`id`", "no newline at end", ""] {
            let sha = crate::render::sha256_hex(content.as_bytes());
            let script = format!("{SHA_FN}\n{}", write_inline(dest, content, &sha, 0o640, None));
            let out = std::process::Command::new("sh").arg("-c").arg(&script).current_dir(dir.path()).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(std::fs::read_to_string(dest).unwrap(), content);
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(dest).unwrap().permissions().mode() & 0o777, 0o640);
            assert_eq!(temps(), 0, "no temp file left");
        }
        assert!(!dir.path().join("pwned").exists());
        // A wrong sha256 leaves the destination as it was and no temp file behind.
        let script = format!("{SHA_FN}\n{}", write_inline(dest, "new", &"0".repeat(64), 0o640, None));
        let out = std::process::Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert!(!out.status.success());
        assert_eq!(std::fs::read_to_string(dest).unwrap(), "");
        assert_eq!(temps(), 0, "no temp file left");
        // Temp files left by earlier, killed writes (either naming) are removed by the next one.
        let (dir, name) = split_dir(dest);
        let stale = [temp_path_for(dest, "999.1"), format!("{dir}.rvcluster-tmp.999.{name}")];
        for f in &stale {
            std::fs::write(f, "half").unwrap();
        }
        let script = format!("{SHA_FN}\n{}", write_inline(dest, "", &crate::render::sha256_hex(b""), 0o640, None));
        assert!(std::process::Command::new("sh").arg("-c").arg(&script).status().unwrap().success());
        assert_eq!(temps(), 0, "stale temps removed: {stale:?}");
    }

    /// `sh -c script` with `PATH` = `path`: (success, stderr).
    fn sh_with_path(script: &str, path: &str) -> (bool, String) {
        let out = std::process::Command::new("/bin/sh").arg("-c").arg(script).env("PATH", path).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    #[test]
    fn write_text_writes_every_copy_with_one_hash_and_keeps_only_what_is_missing() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        // Counting wrappers: every sha256sum and chmod the fragment starts.
        let calls = dir.path().join("calls");
        for tool in ["sha256sum", "chmod"] {
            super::super::stub::counting(&bin, &calls, tool, true);
        }
        let path = super::super::stub::path_first(&bin);
        let dest = dir.path().join("etc/a b\nc.conf").display().to_string();
        let store = dir.path().join("store");
        let content = "x = '$(touch pwned)'\n";
        let sha = crate::render::sha256_hex(content.as_bytes());
        let kept = store.join(&sha).display().to_string();
        let copies = |mode| {
            vec![
                TextCopy { dest: &dest, mode, owner: None, kept: false },
                TextCopy { dest: &kept, mode: 0o600, owner: None, kept: true },
            ]
        };
        let mode = |p: &str| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let temps = || {
            let mut n = 0;
            for d in [dir.path().join("etc"), store.clone()] {
                n += std::fs::read_dir(d).map(|r| r.flatten().filter(|e| e.file_name().to_string_lossy().contains("rvcluster-tmp")).count()).unwrap_or(0);
            }
            n
        };
        // A wrong sha256: nothing appears, no temp file stays.
        let (ok, _) = sh_with_path(&format!("{SHA_FN}{}", write_text(&copies(0o644), content, &"0".repeat(64))), &path);
        assert!(!ok);
        assert!(!std::path::Path::new(&dest).exists() && !std::path::Path::new(&kept).exists());
        assert_eq!(temps(), 0);
        // Both copies, whole, with their modes: one sha256sum for the two, no chmod (0644 and
        // 0600 are made by the umask).
        let _ = std::fs::remove_file(&calls);
        let (ok, err) = sh_with_path(&format!("{SHA_FN}{}", write_text(&copies(0o644), content, &sha)), &path);
        assert!(ok, "{err}");
        assert_eq!((std::fs::read_to_string(&dest).unwrap(), std::fs::read_to_string(&kept).unwrap()), (content.to_string(), content.to_string()));
        assert_eq!((mode(&dest), mode(&kept), mode(store.to_str().unwrap())), (0o644, 0o600, 0o700));
        assert_eq!(std::fs::read_to_string(&calls).unwrap(), "sha256sum\n");
        assert_eq!(temps(), 0);
        assert!(!dir.path().join("pwned").exists());
        // The kept copy is there: not written again; a mode the umask cannot make takes a chmod.
        std::fs::write(&kept, "kept before").unwrap();
        let _ = std::fs::remove_file(&calls);
        let (ok, err) = sh_with_path(&format!("{SHA_FN}{}", write_text(&copies(0o755), content, &sha)), &path);
        assert!(ok, "{err}");
        assert_eq!(std::fs::read_to_string(&kept).unwrap(), "kept before");
        assert_eq!(mode(&dest), 0o755);
        assert_eq!(std::fs::read_to_string(&calls).unwrap(), "sha256sum\nchmod\n");
        // A host without sha256sum: one rv_sha per copy, same result.
        let nosum = dir.path().join("nosum");
        std::fs::create_dir(&nosum).unwrap();
        for tool in ["openssl", "mv", "rm", "mkdir", "chmod"] {
            std::os::unix::fs::symlink(super::super::stub::real(tool), nosum.join(tool)).unwrap();
        }
        std::fs::remove_file(&kept).unwrap();
        std::fs::remove_file(&dest).unwrap();
        let (ok, err) = sh_with_path(&format!("{SHA_FN}{}", write_text(&copies(0o640), content, &sha)), nosum.to_str().unwrap());
        assert!(ok, "{err}");
        assert_eq!((std::fs::read_to_string(&kept).unwrap(), mode(&dest)), (content.to_string(), 0o640));
        let (ok, _) = sh_with_path(&format!("{SHA_FN}{}", write_text(&copies(0o640), "other", &sha)), nosum.to_str().unwrap());
        assert!(!ok, "a wrong hash fails there too");
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), content);
        assert_eq!(temps(), 0);
    }

    #[test]
    fn write_text_puts_the_callers_umask_back_after_each_copy_and_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.conf").display().to_string();
        let copies = [TextCopy { dest: &dest, mode: 0o600, owner: None, kept: false }];
        let good = write_text(&copies, "a\n", &crate::render::sha256_hex(b"a\n"));
        let bad = write_text(&copies, "a\n", &"0".repeat(64));
        let script = format!("{SHA_FN}umask 027; {good} && echo \"ok $(umask)\"; {bad} || echo \"failed $(umask)\"; umask 002; {good} && echo \"ok $(umask)\"");
        let out = std::process::Command::new("/bin/sh").arg("-c").arg(script).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        // The umask read once is the one in force at the first write; a later change of the
        // caller's is not seen (an apply script never changes its own).
        assert_eq!(text, "ok 0027\nfailed 0027\nok 0027\n", "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&dest).unwrap().permissions()) & 0o777, 0o600);
    }

    #[test]
    fn upload_to_root_dir_has_no_mkdir() {
        let cmd = upload_stream("/x", "/.x.t", "abc", 0o600, None);
        assert!(!cmd.strip_prefix(SHA_FN).unwrap().contains("mkdir"), "{cmd}");
    }
}
