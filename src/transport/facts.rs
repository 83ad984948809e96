//! Facts in one round trip: [`script`] builds one POSIX sh script (pure) that prints the arch,
//! hostname, /etc/os-release, for every managed path its kind, mode, owner, group, sha256 and
//! link target, the state of every service, and the installed k3s version; [`parse`] turns its
//! output back into [`Facts`] (pure). Paths and services are referred to by index in the
//! output, so hostile names never need to be parsed back.

use std::collections::BTreeMap;

use super::cmd::quote;

pub const DEFAULT_K3S_BINARY: &str = "/usr/local/bin/k3s";
const MARK: &str = "@@rv ";

/// What to ask a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactsQuery {
    pub paths: Vec<String>,
    /// Unit names, e.g. `k3s.service`.
    pub services: Vec<String>,
    pub k3s_binary: String,
    /// Files whose whole content comes back ([`Facts::contents`]); absent files are left out.
    pub reads: Vec<String>,
    /// Files whose content comes back only when their sha256 is not the given one (to show a
    /// diff of what will change, without a second round trip).
    pub reads_unless: Vec<(String, String)>,
    /// Shell commands run with no stdin and output discarded; their exit status comes back
    /// ([`Facts::probes`], same order). A syntax error fails only that probe.
    pub probes: Vec<String>,
    /// Guarded probes: probe I (key) runs only when the earlier probe G (value) exited 0;
    /// otherwise it is not run and answers G's status (a step's `check` after its `when`).
    pub guards: BTreeMap<usize, usize>,
    /// A file on the host remembering each regular file's sha256 by its stat stamp (device,
    /// inode, size, mtime and ctime in ns: any write or rename changes one), so an unchanged
    /// file is not hashed again; `true` to add what was hashed (apply, under the board lock).
    pub hash_cache: Option<(String, bool)>,
}

impl Default for FactsQuery {
    fn default() -> Self {
        FactsQuery {
            paths: vec![],
            services: vec![],
            k3s_binary: DEFAULT_K3S_BINARY.into(),
            reads: vec![],
            reads_unless: vec![],
            probes: vec![],
            guards: BTreeMap::new(),
            hash_cache: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileFact {
    Absent,
    Present {
        kind: FileKind,
        /// Permission bits, e.g. 0o755 (with setuid etc. when set).
        mode: u32,
        owner: String,
        group: String,
        /// Regular files only; `None` when unreadable.
        sha256: Option<String>,
        /// Symlinks only.
        link_target: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFact {
    /// `systemctl is-active`: active, inactive, failed, activating, ... or `unknown`.
    pub active: String,
    /// `systemctl is-enabled`: enabled, disabled, static, masked, ... or `unknown`.
    pub enabled: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub arch: String,
    pub hostname: String,
    pub os_release: BTreeMap<String, String>,
    pub files: BTreeMap<String, FileFact>,
    pub services: BTreeMap<String, ServiceFact>,
    /// First line of `k3s --version`, when the binary is installed and runs.
    pub k3s_version: Option<String>,
    /// Contents of [`FactsQuery::reads`] and of changed [`FactsQuery::reads_unless`] files.
    pub contents: BTreeMap<String, Vec<u8>>,
    /// Exit status of each [`FactsQuery::probes`] command.
    pub probes: Vec<i32>,
}

impl Facts {
    /// `ID` from os-release (e.g. `openEuler`).
    pub fn os_id(&self) -> Option<&str> {
        self.os_release.get("ID").map(String::as_str)
    }
}

/// A probe of a form that needs no subshell, as code that sets `rv_r` to its status in the
/// facts command's own shell: `command -v NAME` (a builtin lookup), and the unit-state test the
/// steps phase writes for `systemctl is-active --quiet UNIT` (src/converge/steps.rs
/// `active_probe`: `case "$rv_saI" in STATES) ;; *) exit 3;; esac`). Anything else runs in a
/// subshell (it may `exit`, `cd` or set variables).
fn inline_probe(cmd: &str) -> Option<String> {
    let word = |w: &str, extra: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c));
    if let Some(name) = cmd.strip_prefix("command -v ")
        && word(name, "._+-")
    {
        return Some(format!("command -v {name} >/dev/null 2>&1; rv_r=$?"));
    }
    let rest = cmd.strip_prefix("case \"$rv_sa")?;
    let (n, rest) = rest.split_once("\" in ")?;
    let states = rest.strip_suffix(") ;; *) exit 3;; esac")?;
    (word(n, "") && n.chars().all(|c| c.is_ascii_digit()) && states.split('|').all(|st| word(st, "-")))
        .then(|| format!("case \"$rv_sa{n}\" in {states}) rv_r=0;; *) rv_r=3;; esac"))
}

/// The facts script for a query. Few processes: on a slow board each fork and exec costs
/// milliseconds, so builtins do what they can (hostname and os-release are read with `read`),
/// ONE `stat` answers for every managed path, a file already hashed at the same stat stamp is not
/// hashed again, a `reads_unless` file that is also a managed path reuses that hash, and a
/// guarded probe (a step's `check`) runs only when its guard (the step's `when`) held; probes
/// of a few forms run without a subshell (`inline_probe`).
pub fn script(q: &FactsQuery) -> String {
    let mut s = String::new();
    s.push_str("export LC_ALL=C\n");
    // The machine as uname(2) has it (docs/converge.md §4.6) and the hostname, each read
    // without a process where the kernel shows it.
    s.push_str(&read_or("arch", "/proc/sys/kernel/arch", "uname -m"));
    s.push_str(&read_or("hostname", "/proc/sys/kernel/hostname", "hostname"));
    s.push_str(concat!(
        "echo '@@rv os-release'; for rv_f in /etc/os-release /usr/lib/os-release; do if [ -r \"$rv_f\" ]; then ",
        "while IFS= read -r rv_l || [ -n \"$rv_l\" ]; do printf '%s\\n' \"$rv_l\"; done <\"$rv_f\"; break; fi; done; echo\n",
    ));
    s.push_str("echo '@@rv end-os-release'\n");
    // The cache: lines `h KEY STAMP SHA256` and `v KEY STAMP =VERSION-LINE` or `v KEY STAMP
    // VERSION-HEX` ([`version_entry`]; KEY: the path in hex), loaded once; new lines are
    // written at the end (apply only).
    match &q.hash_cache {
        // (no `cat` when there is none yet: a board's first apply)
        Some((p, _)) => s.push_str(&format!("rv_hc=''; [ ! -f {p} ] || rv_hc=$(cat {p} 2>/dev/null); rv_new=''\n", p = quote(p))),
        None => s.push_str("rv_hc=''; rv_new=''\n"),
    }
    let needs_sha = !q.paths.is_empty() || !q.reads_unless.is_empty();
    if needs_sha {
        s.push_str(super::cmd::SHA_FN);
        s.push('\n');
    }
    if !q.paths.is_empty() {
        paths_fragment(q, &mut s);
    }
    if !q.services.is_empty() {
        // ONE `systemctl show` for every unit: it prints each unit's properties in the order
        // the units were named, a blank line between two units, `Id` first in each
        // (docs/converge.md §5.3): a unit's block ends at a blank line or at the next `Id=`.
        // Unit I's ActiveState is also left in `rv_saI`, for probes (a step's `when`).
        let units: Vec<String> = q.services.iter().map(|u| quote(u)).collect();
        s.push_str(&format!(
            "rv_sv=$(systemctl show -p Id,ActiveState,UnitFileState {units} 2>/dev/null); i=0; a=unknown; e=unknown; o=''\n\
             rv_fl() {{ if [ -n \"$o\" ]; then if [ $i -lt {n} ]; then echo \"@@rv svc $i $a $e\"; eval \"rv_sa$i=\\$a\"; fi; i=$((i+1)); fi; a=unknown; e=unknown; o=''; }}\n\
             while IFS= read -r l; do case $l in '') rv_fl;; Id=*) rv_fl; o=1;; \
             ActiveState=?*) a=${{l#*=}};; UnitFileState=?*) e=${{l#*=}};; esac; done <<RV_SVC\n$rv_sv\nRV_SVC\n\
             rv_fl; while [ $i -lt {n} ]; do echo \"@@rv svc $i unknown unknown\"; eval \"rv_sa$i=unknown\"; i=$((i+1)); done\n",
            units = units.join(" "),
            n = q.services.len(),
        ));
    }
    if !q.reads.is_empty() || !q.reads_unless.is_empty() {
        // The content follows its marker line as `od` prints it (the reader drops the blanks).
        s.push_str(concat!(
            "c() { if [ -f \"$2\" ]; then echo \"@@rv content $1\"; od -An -v -tx1 <\"$2\"; fi; }\n",
            "cu() { if [ -f \"$2\" ]; then if [ -n \"$4\" ] && eval \"[ -n \\\"\\${rv_h$4+x}\\\" ]\"; then eval \"h=\\$rv_h$4\"; ",
            "else h=$(rv_sha <\"$2\" 2>/dev/null) || h=''; h=${h%% *}; fi; [ \"$h\" = \"$3\" ] || c \"$1\" \"$2\"; fi; }\n",
        ));
        for (i, p) in q.reads.iter().enumerate() {
            s.push_str(&format!("c {i} {}\n", quote(p)));
        }
        for (i, (p, sha)) in q.reads_unless.iter().enumerate() {
            let known = q.paths.iter().position(|x| x == p).map(|j| j.to_string()).unwrap_or_default();
            s.push_str(&format!("cu {} {} {} '{known}'\n", q.reads.len() + i, quote(p), quote(sha)));
        }
    }
    if !q.probes.is_empty() {
        // `p I CMD [G]`: a guarded probe whose guard G failed is not run and answers G's status.
        // `p I CMD G [INLINE]`: INLINE, when given, is the same test as CMD written to run in
        // this shell and set `rv_r` (no subshell: a fork saved per probe of that form).
        s.push_str(concat!(
            "p() { if [ -n \"$3\" ] && eval \"[ \\\"\\$rv_p$3\\\" != 0 ]\"; then eval \"rv_r=\\$rv_p$3\"; ",
            "elif [ -n \"${4:-}\" ]; then eval \"$4\"; else ( eval \"$2\" ) </dev/null >/dev/null 2>&1; rv_r=$?; fi; ",
            "eval \"rv_p$1=$rv_r\"; echo \"@@rv probe $1 $rv_r\"; }\n",
        ));
        for (i, c) in q.probes.iter().enumerate() {
            let guard = q.guards.get(&i).filter(|g| **g < i).map(|g| g.to_string()).unwrap_or_default();
            match inline_probe(c) {
                Some(code) => s.push_str(&format!("p {i} {} '{guard}' {}\n", quote(c), quote(&code))),
                None => s.push_str(&format!("p {i} {} '{guard}'\n", quote(c))),
            }
        }
    }
    // The k3s binary's stamp: from the stat of the managed paths when it is one of them.
    let k3s_stamp = match q.paths.iter().position(|p| *p == q.k3s_binary) {
        Some(j) => format!("st=${{rv_s{j}:--}}"),
        None => format!("st=$(stat -c '%d:%i:%s:%.9Y:%.9Z' {} 2>/dev/null) || st=-", quote(&q.k3s_binary)),
    };
    if q.hash_cache.is_some() {
        // `k3s --version` starts a large Go binary: asked once per binary stamp.
        s.push_str(&format!(
            "echo '@@rv k3s'; if [ -x {b} ]; then {k3s_stamp}; \
             case \"$rv_hc\" in *\"v {k} $st \"*) v=${{rv_hc#*\"v {k} $st \"}}; \
             case $v in =*) v=${{v%%\"\n\"*}}; printf '%s\\n' \"${{v#=}}\";; *) echo \"@@rv k3s-hex ${{v%%[!0-9a-f]*}}\";; esac;; \
             *) l=$({b} --version 2>/dev/null | head -n 1); printf '%s\\n' \"$l\"; [ -z \"$l\" ] || [ \"$st\" = - ] || \
             {entry};; esac; fi\n",
            b = quote(&q.k3s_binary),
            k = hex::encode(q.k3s_binary.as_bytes()),
            entry = version_entry(&hex::encode(q.k3s_binary.as_bytes()), "$st"),
        ));
    } else {
        s.push_str(&format!(
            "echo '@@rv k3s'; if [ -x {b} ]; then {b} --version 2>/dev/null | head -n 1; fi\n",
            b = quote(&q.k3s_binary)
        ));
    }
    if let Some((p, true)) = &q.hash_cache {
        // Kept small: a cache past 256 KiB starts over.
        s.push_str(&format!(
            "if [ -n \"$rv_new\" ]; then c={p}; [ \"$(wc -c < \"$c\" 2>/dev/null || echo 0)\" -lt 262144 ] || : > \"$c\"; \
             (umask 077; printf '%b' \"$rv_new\" >> \"$c\"); fi\n",
            p = quote(p)
        ));
    }
    s.push_str("echo '@@rv end'\n");
    s
}

/// The facts section `@@rv LABEL`: the first line of `file` read with the `read` builtin, or
/// what `command` prints where the file is missing or empty.
fn read_or(label: &str, file: &str, command: &str) -> String {
    format!("echo '@@rv {label}'; if IFS= read -r rv_l <{file}; then printf '%s\\n' \"$rv_l\"; else {command}; fi 2>/dev/null\n")
}

/// The hash cache's entry for the k3s binary's `--version` line in `$l`, appended to `$rv_new`:
/// the facts command's, and the apply's after it wrote the binary ([`cache_record`]). A line of
/// plain characters (what k3s prints: `k3s version v1.31.4+k3s1 (a562d090)`) is kept as it is,
/// `v KEY STAMP =LINE`, and read back to the end of its line; any other in hex, `v KEY STAMP
/// HEX` (`od`, `tr`: two processes more), read back as `@@rv k3s-hex`. The plain set has no
/// backslash (the entries are written with `printf '%b'`) and no newline (one entry a line).
fn version_entry(key: &str, stamp: &str) -> String {
    format!(
        "{}; rv_new=\"${{rv_new}}v {key} {stamp} $rv_v\\n\"",
        plain_or_hex("l", "rv_v", "*[!A-Za-z0-9\\ .+:/\\(\\)_-]*")
    )
}

/// Sets shell variable `dst` to the value of `src` as `=VALUE`, or in hex (`od`, `tr`: two
/// processes, only then) when the value matches the case pattern `unplain` (what may not travel
/// as it is: the symlink targets of the facts, the k3s version line of the hash cache).
fn plain_or_hex(src: &str, dst: &str, unplain: &str) -> String {
    format!("case ${src} in {unplain}) {dst}=$(printf '%s' \"${src}\" | od -An -v -tx1 | tr -d ' \\n');; *) {dst}=\"=${src}\";; esac")
}

/// Apply script bookkeeping: record in the hash cache `cache` the files this apply just wrote
/// (`(path, sha256)`, regular files) at their new stat stamps, and, when `k3s` names one of them,
/// what that binary answers to `--version`: the plans that follow find them hashed (no `rv_sha`
/// over a large binary, no `k3s --version`) instead of hashing again until the next apply's
/// facts. ONE `stat` for all; never fails (the cache is only a shortcut: a file that cannot be
/// stat'ed records nothing, and the facts hash it as before).
pub fn cache_record<P: AsRef<str>, H: AsRef<str>>(cache: &str, files: &[(P, H)], k3s: Option<&str>) -> String {
    if files.is_empty() {
        return ":".to_string();
    }
    let paths: Vec<String> = files.iter().map(|(p, _)| quote(p.as_ref())).collect();
    let keys: Vec<String> = files.iter().map(|(p, h)| format!("{} {}", hex::encode(p.as_ref().as_bytes()), quote(h.as_ref()))).collect();
    let version = match k3s.filter(|b| files.iter().any(|(p, _)| p.as_ref() == *b)) {
        Some(b) => format!(
            "if [ \"$1\" = {k} ]; then l=$({b} --version 2>/dev/null); l=${{l%%\"\n\"*}}; [ -z \"$l\" ] || {entry}; fi; ",
            k = hex::encode(b.as_bytes()),
            b = quote(b),
            entry = version_entry("$1", "$rv_l"),
        ),
        None => String::new(),
    };
    format!(
        "{{ if rv_st=$(stat -c '%d:%i:%s:%.9Y:%.9Z' -- {paths} 2>/dev/null); then rv_new=''; set -- {keys}; \
         while IFS= read -r rv_l; do rv_new=\"${{rv_new}}h $1 $rv_l $2\\n\"; {version}shift 2; done <<RV_CST\n$rv_st\nRV_CST\n\
         rv_umask && umask 077 && printf '%b' \"$rv_new\" >> {c}; umask \"$rv_um\"; fi; true; }}",
        paths = paths.join(" "),
        keys = keys.join(" "),
        c = quote(cache),
    )
}

/// The managed paths: which exist is asked with the `test` builtin, then ONE `stat` prints a
/// line per existing path (raw mode, permissions, owner, group, stamp; no name, so no name is
/// ever parsed back), each read by `rv_one`. If that `stat` fails (a path vanished in between),
/// each path is asked on its own, with the same format and the same reader. A regular file's sha256 comes from the cache when its stamp is there. Each answer
/// leaves `rv_hI` (sha256) and `rv_sI` (stamp) for the later parts of the script.
fn paths_fragment(q: &FactsQuery, s: &mut String) {
    s.push_str(concat!(
        // rv_reg I PATH KEY STAMP "MODE OWNER GROUP": a regular file's line.
        "rv_reg() { case \"$rv_hc\" in *\"h $3 $4 \"*) h=${rv_hc#*\"h $3 $4 \"}; h=${h%%[!0-9a-f]*};; ",
        "*) h=$(rv_sha <\"$2\" 2>/dev/null) || h=''; h=${h%% *}; ",
        "[ -z \"$h\" ] || [ \"$4\" = - ] || rv_new=\"${rv_new}h $3 $4 $h\\n\";; esac; ",
        "eval \"rv_h$1=\\$h; rv_s$1=\\$4\"; echo \"@@rv file $1 regular $5 ${h:--} -\"; }\n",
        // Symlinks are answered after the `stat`: their targets from ONE `readlink` for all
        // of them (a line each), or one `readlink` each when the lines do not add up (a
        // target holding a newline, a link gone, a readlink that takes one operand).
        "rv_lk=''; rv_link() { rv_lk=\"$rv_lk $1\"; eval \"rv_lp$1=\\$2; rv_lo$1=\\$3\"; }\n",
    ));
    // A target of plain characters comes as `=TARGET`; any other (an empty one too) in hex.
    s.push_str(&format!(
        "rv_lout() {{ {}; eval \"o=\\$rv_lo$1\"; echo \"@@rv file $1 link $o - ${{l:--}}\"; }}\n",
        plain_or_hex("2", "l", "''|*[!A-Za-z0-9/._+@:,~-]*")
    ));
    s.push_str(concat!(
        "rv_links() { [ -n \"$rv_lk\" ] || return 0; set --; n=0; for i in $rv_lk; do eval \"set -- \\\"\\$@\\\" \\\"\\$rv_lp$i\\\"\"; n=$((n+1)); done; ",
        "k=0; if rv_lt=$(readlink -- \"$@\" 2>/dev/null); then while IFS= read -r t; do k=$((k+1)); done <<RV_LT\n$rv_lt\nRV_LT\nfi\n",
        "if [ \"$k\" = \"$n\" ]; then set -- $rv_lk; while IFS= read -r t; do rv_lout \"$1\" \"$t\"; shift; done <<RV_LT\n$rv_lt\nRV_LT\n",
        "else for i in $rv_lk; do eval \"t=\\$(readlink \\\"\\$rv_lp$i\\\")\"; rv_lout \"$i\" \"$t\"; done; fi; }\n",
        // rv_one I PATH KEY RAWMODE MODE OWNER GROUP STAMP: one line of `stat -c` (below).
        "rv_one() { case $(( 0x$4 & 61440 )) in\n",
        "  32768) rv_reg \"$1\" \"$2\" \"$3\" \"$8\" \"$5 $6 $7\" ;;\n",
        "  40960) rv_link \"$1\" \"$2\" \"$5 $6 $7\" ;;\n",
        "  16384) echo \"@@rv file $1 dir $5 $6 $7 - -\" ;;\n",
        "  *) echo \"@@rv file $1 other $5 $6 $7 - -\" ;;\n",
        "esac; }\n",
        "set --; rv_ix=''\n",
    ));
    for (i, p) in q.paths.iter().enumerate() {
        s.push_str(&format!(
            "if [ -e {p} ] || [ -L {p} ]; then set -- \"$@\" {p}; rv_ix=\"${{rv_ix}}{i}:{k} \"; else echo '@@rv file {i} absent'; fi\n",
            p = quote(p),
            k = hex::encode(p.as_bytes())
        ));
    }
    s.push_str(concat!(
        "rv_fmt='%f %a %U %G %d:%i:%s:%.9Y:%.9Z'\n",
        "if [ $# -gt 0 ] && rv_st=$(stat -c \"$rv_fmt\" -- \"$@\" 2>/dev/null); then\n",
        "while read -r rv_ft m u g st; do\n",
        "  e=${rv_ix%% *}; rv_ix=${rv_ix#* }; rv_one \"${e%%:*}\" \"$1\" \"${e#*:}\" \"$rv_ft\" \"$m\" \"$u\" \"$g\" \"$st\"; shift\n",
        "done <<RV_STAT\n",
        "$rv_st\n",
        "RV_STAT\n",
        "else\n",
        // One path at a time: a path that vanished since its test is absent.
        "for e in $rv_ix; do if l=$(stat -c \"$rv_fmt\" -- \"$1\" 2>/dev/null); then rv_one \"${e%%:*}\" \"$1\" \"${e#*:}\" $l; ",
        "else echo \"@@rv file ${e%%:*} absent\"; fi; shift; done\n",
        "fi\n",
        "rv_links\n",
    ));
}

/// Why the facts script's output could not be read (a line quoted as the host sent it).
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error("unexpected first line `{0}`")]
    UnexpectedFirstLine(String),
    #[error("bad index in `{line}`")]
    BadIndex { line: String },
    #[error("bad content for #{index}")]
    BadContent { index: usize },
    #[error("bad probe line `{line}`")]
    BadProbe { line: String },
    #[error("probe #{index} out of order")]
    ProbeOrder { index: usize },
    #[error("bad k3s version in `{line}`")]
    BadK3sVersion { line: String },
    #[error("unexpected marker `{0}`")]
    UnexpectedMarker(String),
    #[error("the facts script did not finish (output truncated)")]
    Truncated,
    #[error("no architecture in the output (uname -m failed)")]
    NoArch,
    #[error("no answer for path #{0}")]
    NoPathAnswer(usize),
    #[error("no answer for service #{0}")]
    NoServiceAnswer(usize),
    #[error("no answer for probe #{0}")]
    NoProbeAnswer(usize),
    #[error("malformed file line `{line}`")]
    MalformedFile { line: String },
    #[error("unknown file kind `{0}`")]
    UnknownKind(String),
    #[error("bad mode in `{line}`")]
    BadMode { line: String },
    #[error("bad link target in `{line}`")]
    BadLinkTarget { line: String },
}

/// Parse the script's output for the same query.
pub fn parse(q: &FactsQuery, out: &str) -> Result<Facts, FactsError> {
    let mut f = Facts::default();
    let mut section = "";
    let mut os_text = String::new();
    let mut saw_end = false;
    let mut content: Option<(usize, String)> = None;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix(MARK) {
            if let Some((idx, hex_text)) = content.take() {
                add_content(q, &mut f, idx, &hex_text)?;
            }
            let mut words = rest.split(' ');
            match words.next().unwrap_or("") {
                "file" => {
                    let idx = parse_index(words.next(), q.paths.len(), line)?;
                    let fact = parse_file(&words.collect::<Vec<_>>(), line)?;
                    f.files.insert(q.paths[idx].clone(), fact);
                    section = "";
                }
                "svc" => {
                    let idx = parse_index(words.next(), q.services.len(), line)?;
                    let active = words.next().unwrap_or("unknown").to_string();
                    let enabled = words.next().unwrap_or("unknown").to_string();
                    f.services
                        .insert(q.services[idx].clone(), ServiceFact { active, enabled });
                    section = "";
                }
                "content" => {
                    let idx = parse_index(words.next(), q.reads.len() + q.reads_unless.len(), line)?;
                    // The hex follows on this line or on the next ones, as `od` printed it.
                    content = Some((idx, words.collect::<String>()));
                    section = "content";
                    continue;
                }
                "probe" => {
                    let idx = parse_index(words.next(), q.probes.len(), line)?;
                    let status = words.next().and_then(|w| w.parse::<i32>().ok()).ok_or_else(|| FactsError::BadProbe { line: line.to_string() })?;
                    if f.probes.len() != idx {
                        return Err(FactsError::ProbeOrder { index: idx });
                    }
                    f.probes.push(status);
                    section = "";
                }
                "end" => {
                    saw_end = true;
                    section = "";
                }
                "end-os-release" => section = "",
                "k3s-hex" => {
                    let text = hex::decode(words.next().unwrap_or("")).map_err(|_| FactsError::BadK3sVersion { line: line.to_string() })?;
                    let v = String::from_utf8_lossy(&text).trim().to_string();
                    f.k3s_version = Some(v).filter(|v| !v.is_empty());
                    section = "";
                }
                s @ ("arch" | "hostname" | "os-release" | "k3s") => section = s,
                other => return Err(FactsError::UnexpectedMarker(other.to_string())),
            }
            continue;
        }
        match section {
            "content" => {
                if let Some((_, hex_text)) = content.as_mut() {
                    hex_text.extend(line.chars().filter(|c| !c.is_whitespace()));
                }
            }
            "arch" if f.arch.is_empty() => f.arch = line.trim().to_string(),
            "hostname" if f.hostname.is_empty() => f.hostname = line.trim().to_string(),
            "os-release" => {
                os_text.push_str(line);
                os_text.push('\n');
            }
            "k3s" if f.k3s_version.is_none() && !line.trim().is_empty() => {
                f.k3s_version = Some(line.trim().to_string())
            }
            _ => {}
        }
    }
    if !saw_end {
        return Err(FactsError::Truncated);
    }
    if f.arch.is_empty() {
        return Err(FactsError::NoArch);
    }
    for (i, p) in q.paths.iter().enumerate() {
        if !f.files.contains_key(p) {
            return Err(FactsError::NoPathAnswer(i));
        }
    }
    for (i, u) in q.services.iter().enumerate() {
        if !f.services.contains_key(u) {
            return Err(FactsError::NoServiceAnswer(i));
        }
    }
    if f.probes.len() != q.probes.len() {
        return Err(FactsError::NoProbeAnswer(f.probes.len()));
    }
    f.os_release = parse_os_release(&os_text);
    Ok(f)
}

fn add_content(q: &FactsQuery, f: &mut Facts, idx: usize, hex_text: &str) -> Result<(), FactsError> {
    let path = q.reads.get(idx).unwrap_or_else(|| &q.reads_unless[idx - q.reads.len()].0);
    let bytes = hex::decode(hex_text).map_err(|_| FactsError::BadContent { index: idx })?;
    f.contents.insert(path.clone(), bytes);
    Ok(())
}

fn parse_index(word: Option<&str>, len: usize, line: &str) -> Result<usize, FactsError> {
    word.and_then(|w| w.parse::<usize>().ok())
        .filter(|i| *i < len)
        .ok_or_else(|| FactsError::BadIndex { line: line.to_string() })
}

fn parse_file(words: &[&str], line: &str) -> Result<FileFact, FactsError> {
    if words.first() == Some(&"absent") {
        return Ok(FileFact::Absent);
    }
    let [kind, mode, owner, group, sha, link] = words else {
        return Err(FactsError::MalformedFile { line: line.to_string() });
    };
    let kind = match *kind {
        "regular" => FileKind::Regular,
        "dir" => FileKind::Directory,
        "link" => FileKind::Symlink,
        "other" => FileKind::Other,
        k => return Err(FactsError::UnknownKind(k.to_string())),
    };
    let mode = if *mode == "-" {
        0
    } else {
        u32::from_str_radix(mode, 8).map_err(|_| FactsError::BadMode { line: line.to_string() })?
    };
    let sha256 = (*sha != "-").then(|| sha.to_string());
    let link_target = if *link == "-" {
        None
    } else if let Some(raw) = link.strip_prefix('=') {
        Some(raw.to_string())
    } else {
        let bytes = hex::decode(link).map_err(|_| FactsError::BadLinkTarget { line: line.to_string() })?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    };
    Ok(FileFact::Present {
        kind,
        mode,
        owner: owner.to_string(),
        group: group.to_string(),
        sha256,
        link_target,
    })
}

/// Parse os-release (`KEY=value`, values optionally in single or double quotes with `\` escapes).
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        let v = if let Some(inner) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            let mut s = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        s.push(n);
                    }
                } else {
                    s.push(c);
                }
            }
            s
        } else if let Some(inner) = v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            inner.to_string()
        } else {
            v.to_string()
        };
        out.insert(k.to_string(), v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> FactsQuery {
        FactsQuery {
            paths: vec![
                "/usr/local/bin/k3s".into(),
                "/etc/a b/$(x)\n'y'".into(),
                "/l".into(),
                "/d".into(),
            ],
            services: vec!["k3s.service".into()],
            ..FactsQuery::default()
        }
    }

    /// Run the facts script with `sh`, `PATH` first searching `bin` (None: as it is).
    fn run_sh(q: &FactsQuery, bin: Option<&std::path::Path>) -> Facts {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c").arg(script(q));
        if let Some(b) = bin {
            cmd.env("PATH", super::super::stub::path_first(b));
        }
        let out = cmd.output().unwrap();
        parse(q, &String::from_utf8_lossy(&out.stdout)).unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&out.stdout)))
    }

    #[test]
    fn every_symlink_target_comes_from_one_readlink_unless_a_target_spans_lines() {
        let dir = tempfile::tempdir().unwrap();
        let d = |n: &str| dir.path().join(n).display().to_string();
        for (n, t) in [("kubectl", "/usr/local/bin/k3s"), ("crictl", "/usr/local/bin/k3s"), ("odd", "/a b")] {
            std::os::unix::fs::symlink(t, d(n)).unwrap();
        }
        let bin = tempfile::tempdir().unwrap();
        let calls = bin.path().join("calls");
        super::super::stub::counting(bin.path(), &calls, "readlink", true);
        let q = FactsQuery { paths: vec![d("kubectl"), d("plain"), d("crictl"), d("odd")], ..FactsQuery::default() };
        std::fs::write(d("plain"), "x").unwrap();
        let target = |f: &Facts, p: &str| match &f.files[p] {
            FileFact::Present { kind: FileKind::Symlink, link_target, .. } => link_target.clone().unwrap(),
            other => panic!("{p}: {other:?}"),
        };
        let f = run_sh(&q, Some(bin.path()));
        assert_eq!((target(&f, &d("kubectl")), target(&f, &d("crictl")), target(&f, &d("odd"))), ("/usr/local/bin/k3s".into(), "/usr/local/bin/k3s".into(), "/a b".into()));
        assert_eq!(std::fs::read_to_string(&calls).unwrap().lines().count(), 1, "one readlink for three links");
        // A target with a newline makes the lines not add up: each link is asked alone.
        std::fs::remove_file(d("odd")).unwrap();
        std::os::unix::fs::symlink("/x\ny", d("odd")).unwrap();
        std::fs::remove_file(&calls).unwrap();
        let f = run_sh(&q, Some(bin.path()));
        assert_eq!((target(&f, &d("kubectl")), target(&f, &d("odd"))), ("/usr/local/bin/k3s".into(), "/x\ny".into()));
        assert_eq!(std::fs::read_to_string(&calls).unwrap().lines().count(), 4, "the one, then one each");
    }

    #[test]
    fn the_machine_is_read_from_the_kernel_and_uname_asked_only_where_it_is_not_shown() {
        // A `uname` that says something else and counts its calls.
        let bin = tempfile::tempdir().unwrap();
        let calls = bin.path().join("calls");
        crate::transport::stub::tool(bin.path(), "uname", &format!("echo \"$*\" >> '{}'\necho from-uname\n", calls.display()));
        let q = FactsQuery::default();
        let arch = |shell: &str| {
            let out = std::process::Command::new("sh").arg("-c").arg(shell).env("PATH", crate::transport::stub::path_first(bin.path())).output().unwrap();
            parse(&q, &String::from_utf8_lossy(&out.stdout)).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr))).arch
        };
        let kernel = std::fs::read_to_string("/proc/sys/kernel/arch").map(|s| s.trim().to_string());
        match &kernel {
            Ok(k) => {
                assert_eq!(&arch(&script(&q)), k);
                assert!(!calls.exists(), "no uname where the kernel shows the machine");
            }
            Err(_) => assert_eq!(arch(&script(&q)), "from-uname", "a kernel before 6.1"),
        }
        // Where the file says nothing (here: /dev/null bound over it, in a mount namespace of
        // its own; root only), `uname -m` answers.
        if kernel.is_ok() && unsafe { libc::geteuid() } == 0 {
            let inner = format!("mount --bind /dev/null /proc/sys/kernel/arch && {}", script(&q));
            let wrapped = format!("exec unshare --mount sh -c {}", crate::transport::cmd::quote(&inner));
            assert_eq!(arch(&wrapped), "from-uname");
            assert_eq!(std::fs::read_to_string(&calls).unwrap(), "-m\n");
        }
    }

    #[test]
    fn every_unit_comes_from_one_systemctl_show() {
        // systemctl stand-in: what `systemctl show -p ActiveState,UnitFileState a b c` prints
        // (a blank line between units; c's block cut short, as when systemctl stops early), and
        // a count of its calls.
        let bin = tempfile::tempdir().unwrap();
        let calls = bin.path().join("calls");
        crate::transport::stub::tool(
            bin.path(),
            "systemctl",
            &format!("echo \"$*\" >> '{}'\nprintf 'Id=a.service\\nActiveState=active\\nUnitFileState=enabled\\n\\nId=b.service\\nUnitFileState=\\nActiveState=inactive\\n'\n", calls.display()),
        );
        let q = FactsQuery {
            services: vec!["a.service".into(), "b.service".into(), "c.service".into()],
            probes: vec!["[ \"$rv_sa0\" = active ] && [ \"$rv_sa1\" = inactive ] && [ \"$rv_sa2\" = unknown ]".into()],
            ..FactsQuery::default()
        };
        let out = std::process::Command::new("sh").arg("-c").arg(script(&q)).env("PATH", crate::transport::stub::path_first(bin.path())).output().unwrap();
        let f = parse(&q, &String::from_utf8_lossy(&out.stdout)).unwrap();
        let st = |u: &str| (f.services[u].active.clone(), f.services[u].enabled.clone());
        assert_eq!(st("a.service"), ("active".into(), "enabled".into()));
        assert_eq!(st("b.service"), ("inactive".into(), "unknown".into()));
        assert_eq!(st("c.service"), ("unknown".into(), "unknown".into()));
        assert_eq!(f.probes, vec![0], "each unit's state is left for probes");
        assert_eq!(std::fs::read_to_string(&calls).unwrap(), "show -p Id,ActiveState,UnitFileState a.service b.service c.service\n");
        // Without the blank line between units, the next `Id=` still ends a unit's block.
        crate::transport::stub::tool(bin.path(), "systemctl", "printf 'Id=a.service\\nActiveState=inactive\\nId=b.service\\nActiveState=active\\nUnitFileState=disabled\\n'\n");
        let out = std::process::Command::new("sh").arg("-c").arg(script(&q)).env("PATH", crate::transport::stub::path_first(bin.path())).output().unwrap();
        let f = parse(&q, &String::from_utf8_lossy(&out.stdout)).unwrap();
        assert_eq!((f.services["a.service"].active.as_str(), f.services["b.service"].active.as_str()), ("inactive", "active"));
        assert_eq!(f.services["b.service"].enabled, "disabled");
    }

    #[test]
    fn one_stat_answers_for_every_kind_of_path_and_hostile_names_stay_opaque() {
        let dir = tempfile::tempdir().unwrap();
        let d = |n: &str| dir.path().join(n).display().to_string();
        let hostile = d("a b $(touch pwned) 'q'\nline2");
        std::fs::write(&hostile, "hostile").unwrap();
        std::fs::write(d("plain"), "plain").unwrap();
        std::os::unix::fs::symlink("/target with space", d("link")).unwrap();
        std::os::unix::fs::symlink("/usr/local/bin/k3s", d("plain-link")).unwrap();
        std::fs::create_dir(d("dir")).unwrap();
        std::fs::set_permissions(d("dir"), std::os::unix::fs::PermissionsExt::from_mode(0o710)).unwrap();
        let q = FactsQuery { paths: vec![d("missing"), hostile.clone(), d("link"), d("dir"), d("plain"), "/dev/null".into(), d("plain-link")], ..FactsQuery::default() };
        let f = run_sh(&q, None);
        assert!(!std::path::Path::new(&d("pwned")).exists() && !std::path::Path::new("pwned").exists());
        assert_eq!(f.files[&d("missing")], FileFact::Absent);
        let sha = |p: &str| match &f.files[p] {
            FileFact::Present { kind: FileKind::Regular, sha256, .. } => sha256.clone().unwrap(),
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(sha(&hostile), crate::render::sha256_hex(b"hostile"));
        assert_eq!(sha(&d("plain")), crate::render::sha256_hex(b"plain"));
        assert!(matches!(&f.files[&d("link")], FileFact::Present { kind: FileKind::Symlink, link_target: Some(t), .. } if t == "/target with space"));
        assert!(matches!(&f.files[&d("plain-link")], FileFact::Present { kind: FileKind::Symlink, link_target: Some(t), .. } if t == "/usr/local/bin/k3s"));
        assert!(matches!(&f.files[&d("dir")], FileFact::Present { kind: FileKind::Directory, mode: 0o710, .. }));
        assert!(matches!(&f.files["/dev/null"], FileFact::Present { kind: FileKind::Other, .. }));
        // When the one `stat` fails (a path vanished after the test), each path is asked alone,
        // with the same answers: a `stat` that refuses several operands forces that path.
        let bin = tempfile::tempdir().unwrap();
        super::super::stub::tool(bin.path(), "stat", &format!("[ $# -le 4 ] || exit 1\nexec {} \"$@\"\n", super::super::stub::real("stat")));
        assert_eq!(run_sh(&q, Some(bin.path())).files, f.files);
    }

    #[test]
    fn a_guarded_probe_runs_only_when_its_guard_held_and_a_known_hash_is_not_computed_again() {
        let dir = tempfile::tempdir().unwrap();
        let marks = dir.path().join("ran");
        let mark = |n: &str| format!("echo {n} >> '{}'", marks.display());
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, "a: 1\n").unwrap();
        let path = file.display().to_string();
        let q = FactsQuery {
            paths: vec![path.clone()],
            probes: vec!["exit 4".into(), mark("skipped"), "true".into(), format!("{}; exit 7", mark("ran"))],
            guards: [(1, 0), (3, 2)].into_iter().collect(),
            reads_unless: vec![(path.clone(), crate::render::sha256_hex(b"a: 1\n"))],
            ..FactsQuery::default()
        };
        let f = run_sh(&q, None);
        assert_eq!(f.probes, [4, 4, 0, 7], "a skipped probe answers its guard's status");
        assert_eq!(std::fs::read_to_string(&marks).unwrap(), "ran\n");
        assert!(f.contents.is_empty(), "same sha256: no content");
        // `reads_unless` reuses the managed path's hash: the sha256 tools (counting wrappers
        // first in PATH) run once for the path and not again for the read.
        let bin = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls");
        for tool in ["openssl", "sha256sum"] {
            super::super::stub::tool(bin.path(), tool, &format!("echo x >> '{}'\nexec /usr/bin/sha256sum\n", calls.display()));
        }
        let ncalls = || std::fs::read_to_string(&calls).unwrap_or_default().lines().count();
        let f = run_sh(&q, Some(bin.path()));
        assert!(f.contents.is_empty());
        assert_eq!(ncalls(), 1, "hashed once, for the managed path");
        let q = FactsQuery { paths: vec![], reads_unless: vec![(path.clone(), "0".repeat(64))], ..q };
        let f = run_sh(&q, Some(bin.path()));
        assert_eq!(f.contents[&path], b"a: 1\n", "another sha256: the content comes back");
        assert_eq!(ncalls(), 2, "without the managed path, the read hashes it itself");
    }

    #[test]
    fn script_without_paths_has_no_helpers() {
        let s = script(&FactsQuery::default());
        assert!(!s.contains("f()"));
        assert!(!s.contains("s()"));
    }

    const OUT: &str = "@@rv arch\nriscv64\n@@rv hostname\nlichee-1\n@@rv os-release\n\
NAME=\"openEuler\"\nVERSION=\"24.03 (LTS-SP1)\"\nID=openEuler\nPRETTY_NAME='openEuler 24.03'\n# c\nQ=\"a \\\"b\\\"\"\n\n\
@@rv end-os-release\n\
@@rv file 0 regular 755 root root 5e2b3c0c8f4d5f8ab4a3b1c1e2d3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1 -\n\
@@rv file 1 absent\n@@rv file 2 link 777 root root - 2f7573722f6c6f63616c2f62696e2f6b3373\n\
@@rv file 3 dir 700 root wheel - -\n@@rv svc 0 active enabled\n\
@@rv k3s\nk3s version v1.31.4+k3s1 (a562d090)\ngo version go1.22.9\n@@rv end\n";

    #[test]
    fn parses_everything() {
        let f = parse(&query(), OUT).unwrap();
        assert_eq!(f.arch, "riscv64");
        assert_eq!(f.hostname, "lichee-1");
        assert_eq!(f.os_id(), Some("openEuler"));
        assert_eq!(f.os_release["VERSION"], "24.03 (LTS-SP1)");
        assert_eq!(f.os_release["PRETTY_NAME"], "openEuler 24.03");
        assert_eq!(f.os_release["Q"], "a \"b\"");
        assert_eq!(
            f.files["/usr/local/bin/k3s"],
            FileFact::Present {
                kind: FileKind::Regular,
                mode: 0o755,
                owner: "root".into(),
                group: "root".into(),
                sha256: Some(
                    "5e2b3c0c8f4d5f8ab4a3b1c1e2d3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1".into()
                ),
                link_target: None,
            }
        );
        assert_eq!(f.files["/etc/a b/$(x)\n'y'"], FileFact::Absent);
        let FileFact::Present {
            kind, link_target, ..
        } = &f.files["/l"]
        else {
            panic!()
        };
        assert_eq!(
            (*kind, link_target.as_deref()),
            (FileKind::Symlink, Some("/usr/local/bin/k3s"))
        );
        let FileFact::Present {
            kind, mode, group, ..
        } = &f.files["/d"]
        else {
            panic!()
        };
        assert_eq!(
            (*kind, *mode, group.as_str()),
            (FileKind::Directory, 0o700, "wheel")
        );
        assert_eq!(
            f.services["k3s.service"],
            ServiceFact {
                active: "active".into(),
                enabled: "enabled".into()
            }
        );
        assert_eq!(
            f.k3s_version.as_deref(),
            Some("k3s version v1.31.4+k3s1 (a562d090)")
        );
    }

    #[test]
    fn truncated_output_is_an_error() {
        let cut = &OUT[..OUT.find("@@rv k3s").unwrap()];
        assert!(parse(&query(), cut).unwrap_err().to_string().contains("did not finish"));
    }

    #[test]
    fn missing_path_answer_is_an_error() {
        let out = OUT.replace("@@rv file 1 absent\n", "");
        assert!(parse(&query(), &out).unwrap_err().to_string().contains("path #1"));
    }

    #[test]
    fn bad_index_is_an_error() {
        let out = OUT.replace("@@rv file 1 absent", "@@rv file 9 absent");
        assert!(parse(&query(), &out).is_err());
    }

    #[test]
    fn contents_and_probes_run_through_a_real_shell() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a b");
        std::fs::write(&a, "x\n'$(y)'\n").unwrap();
        let same = dir.path().join("same");
        std::fs::write(&same, "s").unwrap();
        let q = FactsQuery {
            reads: vec![a.display().to_string(), dir.path().join("missing").display().to_string()],
            reads_unless: vec![
                (same.display().to_string(), crate::render::sha256_hex(b"s")),
                (a.display().to_string(), "0".repeat(64)),
            ],
            probes: vec!["true".into(), "exit 3".into(), "read x".into(), "if then".into()],
            ..FactsQuery::default()
        };
        let out = std::process::Command::new("sh").arg("-c").arg(script(&q)).output().unwrap();
        let f = parse(&q, &String::from_utf8_lossy(&out.stdout)).unwrap();
        assert_eq!(f.contents.len(), 1, "{:?}", f.contents.keys());
        assert_eq!(f.contents[&a.display().to_string()], b"x\n'$(y)'\n");
        assert_eq!(f.probes[..3], [0, 3, 1]);
        assert_ne!(f.probes[3], 0);
    }

    #[test]
    fn probes_of_the_inline_forms_answer_as_in_a_subshell_without_one() {
        // rv_sa0 as the services part leaves it (a unit that is active, one that is not).
        let active = |i: usize| format!("case \"$rv_sa{i}\" in active|reloading|refreshing) ;; *) exit 3;; esac");
        let probes = vec!["command -v sh".to_string(), "command -v rvcluster-no-such-tool".into(), active(0), active(1), "exit 5".into(), "command -v sh; exit 4".into()];
        for p in &probes[..4] {
            assert!(inline_probe(p).is_some(), "{p}");
        }
        for p in ["exit 5", "command -v sh; exit 4", "command -v $(id)", "case \"$rv_sa0\" in a) ;; *) rm -rf x;; esac"] {
            assert_eq!(inline_probe(p), None, "{p}");
        }
        let q = FactsQuery { probes: probes.clone(), ..FactsQuery::default() };
        let run = |prelude: &str| {
            let out = std::process::Command::new("sh").arg("-c").arg(format!("{prelude}{}", script(&q))).output().unwrap();
            parse(&q, &String::from_utf8_lossy(&out.stdout)).unwrap().probes
        };
        let inline = run("rv_sa0=active; rv_sa1=inactive\n");
        // (a missing command: 1 in bash, 127 in dash)
        assert_eq!((inline[0], inline[1] != 0, &inline[2..]), (0, true, &[0, 3, 5, 4][..]));
        // The same commands each in a subshell (p's 4th argument dropped) answer the same.
        let plain = {
            let text = script(&q).lines().map(|l| if l.starts_with("p ") && l.matches('\'').count() > 2 { l.rsplit_once(" '").map(|(a, _)| a).unwrap_or(l).to_string() } else { l.to_string() }).collect::<Vec<_>>().join("\n");
            let out = std::process::Command::new("sh").arg("-c").arg(format!("rv_sa0=active; rv_sa1=inactive\n{text}\n")).output().unwrap();
            parse(&q, &String::from_utf8_lossy(&out.stdout)).unwrap().probes
        };
        assert_eq!(plain, inline);
    }

    #[test]
    fn files_an_apply_records_are_not_hashed_nor_asked_their_version_by_the_plans_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls");
        // The "k3s binary": says its version, and that it was asked.
        let k3s = dir.path().join("k3s");
        std::fs::write(&k3s, format!("#!/bin/sh\necho k3s >> '{}'\necho 'k3s version v1.33.4+k3s1 (abc)'\necho 'go version go1.24.5'\n", calls.display())).unwrap();
        std::fs::set_permissions(&k3s, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let conf = dir.path().join("config.yaml");
        std::fs::write(&conf, "a: 1\n").unwrap();
        let cache = dir.path().join("cache").display().to_string();
        let (kp, cp) = (k3s.display().to_string(), conf.display().to_string());
        let sha = |p: &std::path::Path| crate::render::sha256_hex(&std::fs::read(p).unwrap());
        let (ks, cs) = (sha(&k3s), sha(&conf));
        // What the end of an apply script runs (cmd::SHA_FN defines rv_umask).
        let rec = format!("{}\n{}\n", crate::transport::cmd::SHA_FN, cache_record(&cache, &[(&kp, &ks), (&cp, &cs)], Some(&kp)));
        let out = std::process::Command::new("sh").arg("-c").arg(&rec).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::read_to_string(&calls).unwrap().lines().count(), 1, "asked once, by the apply");
        // A plan: every hasher counted, none may run; the binary is not asked again.
        let bin = tempfile::tempdir().unwrap();
        for h in ["openssl", "sha256sum"] {
            crate::transport::stub::counting(bin.path(), &calls, h, true);
        }
        let q = FactsQuery { paths: vec![kp.clone(), cp.clone()], k3s_binary: kp.clone(), hash_cache: Some((cache.clone(), false)), ..FactsQuery::default() };
        let out = std::process::Command::new("sh").arg("-c").arg(script(&q)).env("PATH", crate::transport::stub::path_first(bin.path())).output().unwrap();
        let f = parse(&q, &String::from_utf8_lossy(&out.stdout)).unwrap();
        let sha_of = |p: &str| match &f.files[p] {
            FileFact::Present { sha256, .. } => sha256.clone().unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!((sha_of(&kp), sha_of(&cp)), (ks, cs));
        assert_eq!(f.k3s_version.as_deref(), Some("k3s version v1.33.4+k3s1 (abc)"));
        assert_eq!(std::fs::read_to_string(&calls).unwrap().lines().collect::<Vec<_>>(), ["k3s"], "no hashing, no second --version");
        // Nothing written (an empty list) or a path that is gone: no line, no failure.
        assert_eq!(cache_record::<&str, &str>(&cache, &[], None), ":");
        let gone = format!("{}\n{}\n", crate::transport::cmd::SHA_FN, cache_record(&cache, &[("/nonexistent/rv", &"0".repeat(64))], None));
        let before = std::fs::read_to_string(&cache).unwrap();
        assert!(std::process::Command::new("sh").arg("-c").arg(&gone).status().unwrap().success());
        assert_eq!(std::fs::read_to_string(&cache).unwrap(), before);
    }

    #[test]
    fn the_hash_cache_answers_for_unchanged_files_and_never_for_changed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bin");
        std::fs::write(&f, "one").unwrap();
        let cache = dir.path().join("cache").display().to_string();
        let q = |write: bool| FactsQuery {
            paths: vec![f.display().to_string()],
            hash_cache: Some((cache.clone(), write)),
            ..FactsQuery::default()
        };
        let run = |q: &FactsQuery| {
            let out = std::process::Command::new("sh").arg("-c").arg(script(q)).output().unwrap();
            match parse(q, &String::from_utf8_lossy(&out.stdout)).unwrap().files.remove(&f.display().to_string()) {
                Some(FileFact::Present { sha256, .. }) => sha256.unwrap(),
                other => panic!("{other:?}"),
            }
        };
        let one = crate::render::sha256_hex(b"one");
        assert_eq!(run(&q(false)), one);
        assert!(!std::path::Path::new(&cache).exists(), "a plan never writes the cache");
        assert_eq!(run(&q(true)), one);
        let text = std::fs::read_to_string(&cache).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        // A forged entry for the current stamp is believed: proof that the cache answered.
        let forged = text.replace(&one, &"ab".repeat(32));
        std::fs::write(&cache, &forged).unwrap();
        assert_eq!(run(&q(false)), "ab".repeat(32));
        // Rewriting the file changes its stamp (ctime at least): hashed again, truly.
        std::fs::write(&f, "two").unwrap();
        assert_eq!(run(&q(false)), crate::render::sha256_hex(b"two"));
    }

    #[test]
    fn k3s_version_is_asked_once_per_binary_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("k3s");
        let calls = dir.path().join("calls");
        let fake_k3s = |v: &str| format!("#!/bin/sh\necho x >> '{}'\nprintf '%s\\n' 'k3s version {v} (abc)' 'go version go1.24'\n", calls.display());
        std::fs::write(&bin, fake_k3s("v1.33.4+k3s1")).unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let cache = dir.path().join("cache").display().to_string();
        let q = |write: bool| FactsQuery { k3s_binary: bin.display().to_string(), hash_cache: Some((cache.clone(), write)), ..FactsQuery::default() };
        let run = |q: &FactsQuery| {
            let out = std::process::Command::new("sh").arg("-c").arg(script(q)).output().unwrap();
            parse(q, &String::from_utf8_lossy(&out.stdout)).unwrap().k3s_version
        };
        let ncalls = || std::fs::read_to_string(&calls).unwrap_or_default().lines().count();
        assert_eq!(run(&q(true)).as_deref(), Some("k3s version v1.33.4+k3s1 (abc)"));
        assert_eq!(ncalls(), 1);
        assert_eq!(run(&q(false)).as_deref(), Some("k3s version v1.33.4+k3s1 (abc)"), "from the cache");
        assert_eq!(ncalls(), 1, "the binary was not started again");
        // Another binary in place (new stamp): asked again, never the stale answer.
        std::fs::write(&bin, fake_k3s("v1.34.3+k3s1")).unwrap();
        assert_eq!(run(&q(false)).as_deref(), Some("k3s version v1.34.3+k3s1 (abc)"));
        assert_eq!(ncalls(), 2);
        // A line of plain characters is kept as it is (no od, no tr); one with a backslash
        // (which the cache's printf '%b' would turn into something else) in hex. Both come
        // back from the cache exactly as the binary said them.
        assert!(std::fs::read_to_string(&cache).unwrap().contains(" =k3s version v1.33.4+k3s1 (abc)\n"));
        std::fs::write(&bin, fake_k3s("v1.35.0\\t+x")).unwrap();
        assert_eq!(run(&q(true)).as_deref(), Some("k3s version v1.35.0\\t+x (abc)"));
        assert_eq!(ncalls(), 3);
        assert!(!std::fs::read_to_string(&cache).unwrap().contains("=k3s version v1.35"));
        assert_eq!(run(&q(false)).as_deref(), Some("k3s version v1.35.0\\t+x (abc)"), "from the cache, in hex");
        assert_eq!(ncalls(), 3);
    }

    #[test]
    fn no_k3s_is_none() {
        let out = OUT.replace(
            "k3s version v1.31.4+k3s1 (a562d090)\ngo version go1.22.9\n",
            "",
        );
        assert_eq!(parse(&query(), &out).unwrap().k3s_version, None);
    }
}
