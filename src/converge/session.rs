//! The lock+facts phase: ONE remote command per host (docs/converge.md §1, §2). It takes the
//! board lock (apply only: `flock` on /var/lib/rvcluster/apply.lock held by this command's shell), prints the facts
//! every phase asked for, then waits on stdin for the apply script ([`script_input`]), checks
//! it arrived whole and runs it. Before the script it answers upload requests:
//! the large files stream on this same command (src/transport/host.rs `upload_held`). The lock lives exactly as long as this command:
//! a finished apply, a lost connection, a kill -9 or Ctrl-C of rvcluster all release it, and no
//! stale lock is ever left to remove by hand. Plan sends nothing: the command ends at once.

use crate::transport::cmd::{self, quote};
use crate::transport::held::{UPLOAD_END, UPLOAD_REQUEST, UPLOAD_STATUS};
use crate::transport::facts::{self, Facts, FactsQuery};

use super::error::Cause;

pub const STATE_DIR: &str = "/var/lib/rvcluster";
pub const LOCK_FILE: &str = "/var/lib/rvcluster/apply.lock";
pub const OWNER_FILE: &str = "/var/lib/rvcluster/apply.owner";
/// The line that ends the facts: the client plans after reading it.
pub const HEAD_END: &str = "@@rv end";

/// What the lock line said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    /// Apply: this command holds the lock.
    Held,
    /// Plan: nobody holds it.
    Free,
    /// Plan: an apply holds it (who).
    Busy(String),
    /// Apply: another apply holds it (who); no facts follow.
    Locked(String),
    NoFlock,
}

/// The held command for a host: lock (when `wet`), facts, then wait for the script.
/// `owner` (who is applying: user@machine, pid, time) is written beside the lock for others.
pub fn command(wet: bool, owner: &str, q: &FactsQuery) -> String {
    let mut s = String::from("export LC_ALL=C\n");
    s.push_str(cmd::SHA_FN);
    s.push('\n');
    let owner_hex = "od -An -v -tx1 < {o} 2>/dev/null | tr -d ' \\n'";
    let owner_hex = owner_hex.replace("{o}", &quote(OWNER_FILE));
    if wet {
        // A new board: its generation store made in the same `mkdir` (both 0700: `-m` applies
        // to every directory named), so the upload that follows needs none.
        // Asked of the store, the inner one: a state directory emptied by hand still gets its
        // store here (`-m` touches only the directories mkdir makes).
        let mkdir = format!("{{ [ -d {s} ] || mkdir -p -m 700 {d} {s}; }}", d = quote(STATE_DIR), s = quote(crate::generation::STORE_DIR));
        s.push_str(&format!(
            "command -v flock >/dev/null 2>&1 || {{ echo '@@rv lock noflock'; echo '{HEAD_END}'; exit 0; }}\n\
             {mkdir} || exit 1\n\
             exec 9>>{lock} || exit 1\n\
             if ! flock -n 9; then echo \"@@rv lock locked $({owner_hex})\"; echo '{HEAD_END}'; exit 0; fi\n\
             printf '%s\\n' {owner} > {of}\n\
             echo '@@rv lock held'\n",
            lock = quote(LOCK_FILE),
            owner = quote(owner),
            of = quote(OWNER_FILE),
        ));
    } else {
        s.push_str(&format!(
            "if [ -e {lock} ] && command -v flock >/dev/null 2>&1 && ! flock -n {lock} true; \
             then echo \"@@rv lock busy $({owner_hex})\"; else echo '@@rv lock free'; fi\n",
            lock = quote(LOCK_FILE),
        ));
    }
    // The facts never read stdin: it carries the script.
    s.push_str("{\n");
    s.push_str(&facts::script(q));
    s.push_str("} </dev/null\n");
    // Requests before the script: `@@rv upload N`, a one-line command, then N bytes that are
    // its stdin (a streamed upload on this same command: no second login shell). The client
    // sends nothing more until the answer (the command's output, its status, UPLOAD_END), so
    // `head -c` never finds bytes beyond the N it must pass on. A command that succeeds reads
    // all of them (one that finds the file there already drains them itself,
    // cmd::upload_stream_body); after a failure `cat` drains the rest: either way the next
    // request starts clean.
    s.push_str(&format!(
        "while IFS= read -r rv_want || exit 0; do\n\
         case $rv_want in\n\
         '{UPLOAD_REQUEST}'*) IFS= read -r rv_c || exit 0\n\
         head -c \"${{rv_want#'{UPLOAD_REQUEST}'}}\" | ( ( eval \"$rv_c\" ); rv_s=$?; [ $rv_s = 0 ] || cat >/dev/null; exit $rv_s ) 2>&1\n\
         echo \"{UPLOAD_STATUS}$?\"; echo '{UPLOAD_END}' ;;\n\
         *) break ;;\n\
         esac\n\
         done\n\
         [ -n \"$rv_want\" ] || exit 0\n\
         case $rv_want in '{INLINE}'*) rv_x=${{rv_want#'{INLINE}'}}; rv_s=$(cat) || exit 1\n\
         case $rv_s in *\"\n{END}$rv_x\") exec sh -c \"$rv_s\" ;; esac\n\
         echo '@@rv truncated'; exit 1 ;; esac\n\
         rv_t={dir}/.apply-script.$$\n\
         (umask 077; cat > \"$rv_t\") || exit 1\n\
         h=$(rv_shs < \"$rv_t\"); if [ \"${{h%% *}}\" != \"$rv_want\" ]; then rm -f \"$rv_t\"; echo '@@rv truncated'; exit 1; fi\n\
         sh \"$rv_t\"; rv_s=$?; rm -f \"$rv_t\"; exit $rv_s\n",
        dir = quote(STATE_DIR),
        INLINE = SCRIPT_INLINE,
        END = SCRIPT_END,
    ));
    s
}

/// The request line of a script sent inline (its sha256 follows), and the start of its last
/// line (the same sha256 follows). See [`script_input`].
const SCRIPT_INLINE: &str = "@@rv script ";
const SCRIPT_END: &str = "# rvcluster script end ";
/// The largest script sent inline: it becomes ONE argument of `sh -c`, and Linux takes at
/// most 32 pages (128 KiB with the NUL, MAX_ARG_STRLEN) for one argument.
pub const INLINE_MAX: usize = 120 * 1024;

/// The bytes to send on stdin for `script`; a cut stream is never run. Up to [`INLINE_MAX`]:
/// a request line with its sha256, the script, and a last line with the same sha256; the shell
/// reads it all into a variable (`$(cat)`), checks with a `case` that it ends with that line (a
/// cut stream cannot: the line's sha256 is of the text before it, so it appears nowhere else
/// in it) and `exec`s `sh -c` with it: one `cat` and the `sh`, no file, no hasher, no `rm`.
/// A larger script: its sha256 alone on the first line, then the script, which the shell puts
/// in a 0600 file in the state directory, hashes, runs with `sh` and removes.
pub fn script_input(script: &str) -> Vec<u8> {
    let sha = crate::render::sha256_hex(script.as_bytes());
    if script.len() <= INLINE_MAX {
        let nl = if script.ends_with('\n') { "" } else { "\n" };
        format!("{SCRIPT_INLINE}{sha}\n{script}{nl}{SCRIPT_END}{sha}\n").into_bytes()
    } else {
        format!("{sha}\n{script}").into_bytes()
    }
}

/// Split the head into the lock state and the facts.
pub fn parse_head(q: &FactsQuery, head: &str) -> Result<(LockState, Option<Facts>), Cause> {
    let (first, rest) = head.split_once('\n').unwrap_or((head, ""));
    let word = |w: &str| first.strip_prefix("@@rv lock ").and_then(|r| r.strip_prefix(w)).map(str::trim);
    let owner = |hex_text: &str| {
        let t = String::from_utf8_lossy(&hex::decode(hex_text).unwrap_or_default()).trim().to_string();
        if t.is_empty() { "owner unknown".to_string() } else { t }
    };
    let lock = if word("held").is_some() {
        LockState::Held
    } else if word("free").is_some() {
        LockState::Free
    } else if let Some(o) = word("busy") {
        LockState::Busy(owner(o))
    } else if let Some(o) = word("locked") {
        return Ok((LockState::Locked(owner(o)), None));
    } else if word("noflock").is_some() {
        return Ok((LockState::NoFlock, None));
    } else {
        return Err(Cause::Facts(facts::FactsError::UnexpectedFirstLine(first.chars().take(80).collect::<String>())));
    };
    let f = facts::parse(q, rest).map_err(Cause::Facts)?;
    Ok((lock, Some(f)))
}

/// Who is applying, for the owner file: `user@machine pid N since TIME`.
pub fn owner_line() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| user_name(unsafe { libc::getuid() }))
        .unwrap_or_else(|| format!("uid {}", unsafe { libc::getuid() }));
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "?".into());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("rvcluster apply by {user}@{machine}, pid {}, since unix time {now}", std::process::id())
}

/// The account name of `uid` (getpwuid_r: /etc/passwd, or whatever NSS answers), when it has one.
/// A cron job or a CI runner often has neither USER nor LOGNAME set.
fn user_name(uid: libc::uid_t) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: all-zero bytes are a valid `passwd` (null pointers, zero ids); getpwuid_r fills it.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives every use of `pw`'s strings.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() || pw.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name points into `buf`, NUL-terminated by getpwuid_r.
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
    Some(name.to_string_lossy().into_owned()).filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> FactsQuery {
        FactsQuery { paths: vec!["/etc/hostname".into()], ..FactsQuery::default() }
    }

    #[test]
    fn plan_head_parses_lock_and_facts() {
        let out = std::process::Command::new("sh").arg("-c").arg(command(false, "me", &q())).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let (lock, facts) = parse_head(&q(), &text).unwrap();
        assert_eq!(lock, LockState::Free);
        assert!(facts.unwrap().files.contains_key("/etc/hostname"));
    }

    #[test]
    fn locked_head_has_no_facts_and_names_the_owner() {
        let head = format!("@@rv lock locked {}\n{HEAD_END}\n", hex::encode("rvcluster apply by a@b\n"));
        let (lock, facts) = parse_head(&q(), &head).unwrap();
        assert_eq!(lock, LockState::Locked("rvcluster apply by a@b".into()));
        assert!(facts.is_none());
    }

    #[test]
    fn a_uid_is_named_from_the_password_database() {
        // uid 0 is root on every Linux; an id nobody has gets no name.
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(user_name(4_000_000_000), None);
    }

    #[test]
    fn garbage_is_a_facts_error() {
        assert!(matches!(parse_head(&q(), "Welcome to my board\n"), Err(Cause::Facts(_))));
    }
}
