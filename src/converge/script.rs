//! The apply script: one POSIX sh script per host that carries out every change the phases
//! planned, in order, sent on the held facts command's stdin after the streamed uploads (so the
//! whole apply is one remote command). Each change is a numbered fragment; the script reports
//! `@@rv do N` before it and stops at the first failing fragment with `@@rv fail N STATUS`, so
//! the client knows exactly what was done. Pure: building and parsing only.

use crate::transport::cmd::{self, quote};

/// Fragments in order; a fragment belongs to the change of the same index, or to bookkeeping.
#[derive(Debug, Default, Clone)]
pub struct Script {
    parts: Vec<(Option<usize>, Body)>,
    texts: usize,
}

#[derive(Debug, Clone)]
enum Body {
    Shell(String),
    /// A text write ([`cmd::text_stage`]): consecutive ones share one hash pass.
    Text(cmd::TextStage),
}

impl Script {
    /// The commands that carry out change number `change`.
    pub fn change(&mut self, change: usize, commands: impl Into<String>) {
        self.parts.push((Some(change), Body::Shell(commands.into())));
    }

    /// Commands that belong to no change (the managed-file record): run only when the script
    /// runs at all, their failure still stops it.
    pub fn bookkeeping(&mut self, commands: impl Into<String>) {
        self.parts.push((None, Body::Shell(commands.into())));
    }

    /// Bookkeeping that must run before every change (keeping what the host had).
    pub fn bookkeeping_first(&mut self, commands: impl Into<String>) {
        self.parts.insert(0, (None, Body::Shell(commands.into())));
    }

    /// Change `change` (or bookkeeping, `None`) writes `content` to `copies`, as
    /// [`cmd::text_stage`] describes; consecutive text writes are staged and hashed together.
    pub fn text(&mut self, change: Option<usize>, copies: &[cmd::TextCopy], content: &str, sha256: &str) {
        self.texts += 1;
        let stage = cmd::text_stage(&format!("x{}_", self.texts), copies, content, sha256);
        self.parts.push((change, Body::Text(stage)));
    }

    /// [`Script::text`] before every other part (generation 0's manifest).
    pub fn text_first(&mut self, change: Option<usize>, copies: &[cmd::TextCopy], content: &str, sha256: &str) {
        self.text(change, copies, content, sha256);
        let last = self.parts.pop().expect("just added");
        self.parts.insert(0, last);
    }

    /// Bookkeeping placed before the bookkeeping text writes the script ends with (records, so
    /// that a text write added after it joins their run), never before a change: it runs after
    /// every change.
    pub fn bookkeeping_before_trailing_texts(&mut self, commands: impl Into<String>) {
        let at = self.parts.iter().rposition(|(c, b)| c.is_some() || !matches!(b, Body::Text(_))).map_or(0, |i| i + 1);
        self.parts.insert(at, (None, Body::Shell(commands.into())));
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    pub fn has_changes(&self) -> bool {
        self.parts.iter().any(|(c, _)| c.is_some())
    }

    /// The whole script text. A run of consecutive text writes becomes: the first one's
    /// fragment writes every temp file of the run, checks them all with ONE `sha256sum` and
    /// renames them all, in order (one `rename` where the host has util-linux's); each later
    /// one has nothing left to do. A failure removes the temp files and names the write it
    /// happened in.
    pub fn render(&self) -> String {
        let mut s = String::from("export LC_ALL=C\n");
        s.push_str(cmd::SHA_FN);
        s.push('\n');
        s.push_str("rv_fail() { rv_s=${2:-$?}; echo \"@@rv fail $1 $rv_s\"; exit 1; }\n");
        let id = |i: usize| match self.parts[i].0 {
            Some(c) => c.to_string(),
            None => format!("b{i}"),
        };
        let mut i = 0;
        while i < self.parts.len() {
            let run: Vec<&cmd::TextStage> =
                self.parts[i..].iter().map_while(|(_, b)| if let Body::Text(t) = b { Some(t) } else { None }).collect();
            if run.is_empty() {
                if let Body::Shell(text) = &self.parts[i].1 {
                    let id = id(i);
                    s.push_str(&format!("echo '@@rv do {id}'\n{{ {text}\n}} || rv_fail {id}\n"));
                }
                i += 1;
                continue;
            }
            let ids: Vec<String> = (i..i + run.len()).map(id).collect();
            let temps = run.iter().flat_map(|t| t.temps.iter().cloned()).collect::<Vec<_>>().join(" ");
            let mut assign: String = run.iter().map(|t| t.assign.as_str()).collect();
            // Two directories or more: the missing ones made by ONE `mkdir -p` (a first apply
            // makes /etc/rancher/k3s and a generation's directory in one run).
            let mut dirs: Vec<&str> = run.iter().flat_map(|t| t.dirs.iter().map(String::as_str)).collect();
            dirs.sort_unstable();
            dirs.dedup();
            if dirs.len() > 1 {
                assign.push_str(&format!("rv_mkdirs {}; ", dirs.join(" ")));
            }
            let stage = run.iter().zip(&ids).map(|(t, id)| format!("rv_cur={id} && {}", t.stage)).collect::<Vec<_>>().join(" && ");
            // The first write's fragment stages, checks and renames the whole run (ONE rename
            // where the host has util-linux's, cmd::SHA_FN `rv_mvall`): no temp file waits for
            // a later fragment, and a failure removes every one.
            // Mode and owner of every temp file before any rename (a failure there changes no
            // destination), each named by its write.
            let fix: String = run.iter().zip(&ids).filter(|(t, _)| t.fix != ":").map(|(t, id)| format!("rv_cur={id} && {} && ", t.fix)).collect();
            // A hang-up (the connection lost: sshd's SIGHUP, or SIGPIPE on the next output
            // line) removes the temp files as a failure does.
            s.push_str(&format!(
                "echo '@@rv do {id}'\n{{ {assign}trap 'rm -f {temps}; exit 1' HUP INT TERM PIPE; set --; rv_w=''; {stage} && rv_cur={id} && \
                 rv_check \"$@\" && {fix}rv_cur={id} && rv_mvall {mark} \"$@\" && trap - HUP INT TERM PIPE\n}} || \
                 {{ rv_s=$?; rm -f {temps}; trap - HUP INT TERM PIPE; rv_fail \"$rv_cur\" $rv_s; }}\n",
                id = ids[0],
                mark = cmd::TEXT_MARK,
            ));
            for id in &ids[1..] {
                s.push_str(&format!("echo '@@rv do {id}'\n{{ : written with {first}\n}} || rv_fail {id}\n", first = ids[0]));
            }
            i += run.len();
        }
        s.push_str("echo '@@rv done'\n");
        s
    }
}

/// What the host said while running the script.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScriptResult {
    /// Changes started (the last one may have failed).
    pub started: Vec<usize>,
    /// `(fragment id, exit status)` of the fragment that failed.
    pub failed: Option<(String, i32)>,
    pub finished: bool,
    /// Values the script printed as `@@rv value NAME HEX` (the server token).
    pub values: Vec<(String, Vec<u8>)>,
}

pub fn parse(out: &str) -> ScriptResult {
    let mut r = ScriptResult::default();
    for line in out.lines() {
        let Some(rest) = line.strip_prefix("@@rv ") else { continue };
        let mut w = rest.split(' ');
        match w.next() {
            Some("do") => {
                if let Some(n) = w.next().and_then(|n| n.parse().ok()) {
                    r.started.push(n);
                }
            }
            Some("fail") => {
                let id = w.next().unwrap_or("").to_string();
                let status = w.next().and_then(|s| s.parse().ok()).unwrap_or(-1);
                r.failed = Some((id, status));
            }
            Some("done") => r.finished = true,
            Some("value") => {
                if let (Some(name), Some(hex_text)) = (w.next(), w.next())
                    && let Ok(bytes) = hex::decode(hex_text)
                {
                    r.values.push((name.to_string(), bytes));
                }
            }
            _ => {}
        }
    }
    r
}

/// Commands that print a file's content as `@@rv value NAME HEX` once it exists and is not
/// empty, waiting up to about `tries` half seconds (the server writes its token a moment after
/// start, and the agents wait for it): asked every 20 ms for the first fifth of a second (a
/// server that starts quickly is not kept waiting for a tenth of a second), then every tenth
/// of a second (a `sleep` process each time: a slow board starting k3s for half a minute is not
/// kept busy with them).
pub fn wait_and_print(name: &str, path: &str, tries: u32) -> String {
    let tries = tries.saturating_mul(5) + 10;
    format!(
        "rv_i=0; while [ ! -s {p} ] && [ $rv_i -lt {tries} ]; do if [ $rv_i -lt 10 ]; then sleep 0.02; else sleep 0.1; fi; rv_i=$((rv_i+1)); done; \
         if [ -s {p} ]; then printf '@@rv value {name} '; od -An -v -tx1 < {p} | tr -d ' \\n'; echo; fi",
        p = quote(path)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(script: &Script) -> (i32, String) {
        let out = std::process::Command::new("sh").arg("-c").arg(script.render()).output().unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
    }

    #[test]
    fn runs_in_order_and_stops_at_the_first_failure() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("log");
        let log = |s: &str| format!("echo {s} >> {}", quote(f.to_str().unwrap()));
        let mut s = Script::default();
        s.change(0, log("a"));
        s.change(1, format!("{}; (exit 7)", log("b")));
        s.change(2, log("c"));
        let (status, out) = run(&s);
        assert_eq!(status, 1);
        let r = parse(&out);
        assert_eq!(r.started, vec![0, 1]);
        assert_eq!(r.failed, Some(("1".into(), 7)));
        assert!(!r.finished);
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "a\nb\n");
    }

    fn copy(dest: &str, owner: Option<&'static str>) -> cmd::TextCopy<'static> {
        let dest: &'static str = Box::leak(dest.to_string().into_boxed_str());
        cmd::TextCopy { dest, mode: 0o640, owner, kept: false }
    }

    fn leftovers(dir: &std::path::Path) -> Vec<String> {
        let out = std::process::Command::new("find").arg(dir).args(["-name", "*rvcluster-tmp*"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
    }

    #[test]
    fn consecutive_text_writes_share_one_sha256sum() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let bin = tempfile::tempdir().unwrap();
        let calls = bin.path().join("calls");
        crate::transport::stub::counting(bin.path(), &calls, "sha256sum", true);
        let dirs = bin.path().join("mkdirs");
        crate::transport::stub::counting(bin.path(), &dirs, "mkdir", true);
        let mut s = Script::default();
        let sha = |t: &str| crate::render::sha256_hex(t.as_bytes());
        s.text(Some(0), &[copy(&format!("{d}/a/one"), None)], "one\n", &sha("one\n"));
        let store = format!("{d}/store/{}", sha("two\n"));
        let two = [copy(&format!("{d}/b/two"), Some("root:root")), cmd::TextCopy { kept: true, mode: 0o600, ..copy(&store, None) }];
        s.text(Some(1), &two, "two\n", &sha("two\n"));
        s.change(2, "true");
        s.text(None, &[copy(&format!("{d}/three"), None)], "three\n", &sha("three\n"));
        let out = std::process::Command::new("sh").arg("-c").arg(s.render()).env("PATH", crate::transport::stub::path_first(bin.path())).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
        let r = parse(&text);
        assert!(r.finished && r.failed.is_none());
        assert_eq!(r.started, vec![0, 1, 2]);
        // One pass for the run of two writes (three files), one for the write after the shell change.
        assert_eq!(std::fs::read_to_string(&calls).unwrap().lines().count(), 2);
        // a/ and b/ made by one mkdir for the run; the private store by its own (0700).
        assert_eq!(std::fs::read_to_string(&dirs).unwrap().lines().count(), 2);
        assert_eq!(std::fs::metadata(format!("{d}/store")).unwrap().permissions().mode() & 0o777, 0o700);
        for (p, want) in [(format!("{d}/a/one"), "one\n"), (format!("{d}/b/two"), "two\n"), (store.clone(), "two\n"), (format!("{d}/three"), "three\n")] {
            assert_eq!(std::fs::read_to_string(&p).unwrap(), want, "{p}");
        }
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(format!("{d}/a/one")).unwrap().permissions().mode() & 0o777, 0o640);
        assert_eq!(std::fs::metadata(&store).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_run_is_renamed_by_one_util_linux_rename_else_by_one_mv_per_file() {
        use crate::transport::stub;
        let sha = |t: &str| crate::render::sha256_hex(t.as_bytes());
        // A bin directory with only the tools the script needs (the host's rename.ul hidden),
        // mv counted, plus `extra` stand-ins.
        let check = |extra: &dyn Fn(&std::path::Path, &std::path::Path), want: &[&str]| {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path().to_str().unwrap();
            let bin = tempfile::tempdir().unwrap();
            let calls = bin.path().join("calls");
            for t in ["sha256sum", "mkdir", "chmod", "chown", "rm", "cat"] {
                std::os::unix::fs::symlink(stub::real(t), bin.path().join(t)).unwrap();
            }
            stub::counting(bin.path(), &calls, "mv", true);
            extra(bin.path(), &calls);
            let mut s = Script::default();
            s.text(Some(0), &[copy(&format!("{d}/a/one"), None)], "one\n", &sha("one\n"));
            let store = format!("{d}/store/{}", sha("two\n"));
            let two = [copy(&format!("{d}/b/two"), None), cmd::TextCopy { kept: true, mode: 0o600, ..copy(&store, None) }];
            s.text(Some(1), &two, "two\n", &sha("two\n"));
            s.text(None, &[copy(&format!("{d}/three"), None)], "three\n", &sha("three\n"));
            let out = std::process::Command::new("/bin/sh").arg("-c").arg(s.render()).env("PATH", bin.path()).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(parse(&text).started, vec![0, 1]);
            for (p, c) in [(format!("{d}/a/one"), "one\n"), (format!("{d}/b/two"), "two\n"), (store, "two\n"), (format!("{d}/three"), "three\n")] {
                assert_eq!(std::fs::read_to_string(&p).unwrap(), c, "{p}");
            }
            assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));
            let calls = std::fs::read_to_string(&calls).unwrap_or_default();
            assert_eq!(calls.lines().collect::<Vec<_>>(), want, "{calls}");
        };
        let real_ul = stub::real("rename.ul");
        // Debian: rename.ul renames the four files at once.
        check(&|bin, calls| stub::counting(bin, calls, "rename.ul", true), &["rename.ul"]);
        // Fedora, openEuler: util-linux's is `rename`, and says so.
        let ul = format!("case \"$1\" in --version) echo 'rename from util-linux 2.39.1'; exit 0;; esac\necho rename >> \"${{0%/*}}/calls\"\nexec {real_ul} \"$@\"\n");
        check(&|bin, _| stub::tool(bin, "rename", &ul), &["rename"]);
        // A `rename` that is another program (Perl's File::Rename): not used, one mv per file.
        check(&|bin, _| stub::tool(bin, "rename", "case \"$1\" in --version) echo '/usr/bin/rename using File::Rename version 2.01';; esac\nexit 9\n"), &["mv"; 4]);
    }

    #[test]
    fn a_failing_write_of_a_run_is_named_and_leaves_no_temp_file() {
        // Staging fails (the second file's directory is a regular file): nothing renamed.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        std::fs::write(format!("{d}/blocked"), "a file, not a directory").unwrap();
        std::fs::write(format!("{d}/one"), "old\n").unwrap();
        let sha = |t: &str| crate::render::sha256_hex(t.as_bytes());
        let mut s = Script::default();
        s.text(Some(0), &[copy(&format!("{d}/one"), None)], "new\n", &sha("new\n"));
        s.text(Some(1), &[copy(&format!("{d}/blocked/two"), None)], "two\n", &sha("two\n"));
        s.text(Some(2), &[copy(&format!("{d}/three"), None)], "three\n", &sha("three\n"));
        let (status, out) = run(&s);
        assert_eq!(status, 1);
        assert_eq!(parse(&out).failed.map(|f| f.0), Some("1".to_string()), "{out}");
        assert_eq!(std::fs::read_to_string(format!("{d}/one")).unwrap(), "old\n");
        assert!(!std::path::Path::new(&format!("{d}/three")).exists());
        assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));

        // A failure setting an owner (the second file's does not exist): named by its write, and
        // no destination changed (modes and owners are set before any rename).
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let mut s = Script::default();
        s.text(Some(0), &[copy(&format!("{d}/one"), None)], "new\n", &sha("new\n"));
        s.text(Some(1), &[copy(&format!("{d}/two"), Some("rvcluster-no-such-user:rvcluster-no-such-group"))], "two\n", &sha("two\n"));
        s.text(Some(2), &[copy(&format!("{d}/three"), None)], "three\n", &sha("three\n"));
        let (status, out) = run(&s);
        assert_eq!(status, 1);
        let r = parse(&out);
        assert_eq!(r.failed.map(|f| f.0), Some("1".to_string()), "{out}");
        assert_eq!(r.started, vec![0]);
        for f in ["one", "two", "three"] {
            assert!(!std::path::Path::new(&format!("{d}/{f}")).exists(), "{f}");
        }
        assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));
    }

    #[test]
    fn a_lost_connection_in_the_middle_of_a_run_leaves_no_temp_file() {
        // The script is hung up on while the second write's owner is set (its `chown`, here a
        // stand-in that sends SIGHUP to the script as sshd's hang-up would).
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let bin = tempfile::tempdir().unwrap();
        crate::transport::stub::tool(bin.path(), "chown", "kill -HUP $PPID\nsleep 0.1\n");
        let sha = |t: &str| crate::render::sha256_hex(t.as_bytes());
        let mut s = Script::default();
        s.text(Some(0), &[copy(&format!("{d}/one"), None)], "one\n", &sha("one\n"));
        s.text(Some(1), &[copy(&format!("{d}/two"), Some("nobody"))], "two\n", &sha("two\n"));
        s.text(Some(2), &[copy(&format!("{d}/three"), None)], "three\n", &sha("three\n"));
        let out = std::process::Command::new("sh").arg("-c").arg(s.render()).env("PATH", crate::transport::stub::path_first(bin.path())).output().unwrap();
        assert!(!out.status.success());
        assert!(!String::from_utf8_lossy(&out.stdout).contains("@@rv done"));
        // Before the run's one rename: no destination changed, no temp file left.
        assert!(!std::path::Path::new(&format!("{d}/one")).exists());
        assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));
    }

    #[test]
    fn bookkeeping_before_the_trailing_records_still_runs_after_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let d = dir.path().to_str().unwrap();
        let sha = |t: &str| crate::render::sha256_hex(t.as_bytes());
        let order = |s: &Script| {
            let _ = std::fs::remove_file(&log);
            let (status, out) = run(s);
            assert_eq!(status, 0, "{out}");
            std::fs::read_to_string(&log).unwrap()
        };
        let keep = format!("cat {d}/file >> {}", log.display());
        // The script ends with a change's text write: the bookkeeping comes after it.
        let mut s = Script::default();
        s.text(Some(0), &[copy(&format!("{d}/file"), None)], "new\n", &sha("new\n"));
        s.bookkeeping_before_trailing_texts(&keep);
        assert_eq!(order(&s), "new\n");
        // It ends with records: the bookkeeping goes before them, still after the change.
        let mut s = Script::default();
        s.text(Some(0), &[copy(&format!("{d}/file"), None)], "newer\n", &sha("newer\n"));
        s.change(1, "true");
        s.text(None, &[copy(&format!("{d}/record"), None)], "r\n", &sha("r\n"));
        s.bookkeeping_before_trailing_texts(format!("{keep}; [ ! -e {d}/record ]"));
        assert_eq!(order(&s), "newer\n");
        assert_eq!(std::fs::read_to_string(format!("{d}/record")).unwrap(), "r\n");
    }

    #[test]
    fn a_whole_run_reports_done_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("token");
        std::fs::write(&tok, "K10::secret\n").unwrap();
        let mut s = Script::default();
        s.change(0, "true");
        s.bookkeeping(wait_and_print("token", tok.to_str().unwrap(), 2));
        let (status, out) = run(&s);
        assert_eq!(status, 0);
        let r = parse(&out);
        assert!(r.finished && r.failed.is_none());
        assert_eq!(r.values, vec![("token".to_string(), b"K10::secret\n".to_vec())]);
    }
}
