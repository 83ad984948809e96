//! The apply script: one POSIX sh script per host that carries out every change the phases
//! planned, in order, sent on the held facts command's stdin (so the whole apply is one remote
//! command plus the streamed uploads). Each change is a numbered fragment; the script reports
//! `@@rv do N` before it and stops at the first failing fragment with `@@rv fail N STATUS`, so
//! the client knows exactly what was done. Pure: building and parsing only.

use crate::transport::cmd::{self, quote};

/// Fragments in order; a fragment belongs to the change of the same index, or to bookkeeping.
#[derive(Debug, Default, Clone)]
pub struct Script {
    parts: Vec<(Option<usize>, String)>,
}

impl Script {
    /// The commands that carry out change number `change`.
    pub fn change(&mut self, change: usize, commands: impl Into<String>) {
        self.parts.push((Some(change), commands.into()));
    }

    /// Commands that belong to no change (the managed-file record): run only when the script
    /// runs at all, their failure still stops it.
    pub fn bookkeeping(&mut self, commands: impl Into<String>) {
        self.parts.push((None, commands.into()));
    }

    /// Bookkeeping that must run before every change (keeping what the host had).
    pub fn bookkeeping_first(&mut self, commands: impl Into<String>) {
        self.parts.insert(0, (None, commands.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    pub fn has_changes(&self) -> bool {
        self.parts.iter().any(|(c, _)| c.is_some())
    }

    /// The whole script text.
    pub fn render(&self) -> String {
        let mut s = String::from("export LC_ALL=C\n");
        s.push_str(cmd::SHA_FN);
        s.push('\n');
        s.push_str("rv_fail() { rv_s=$?; echo \"@@rv fail $1 $rv_s\"; exit 1; }\n");
        for (i, (change, text)) in self.parts.iter().enumerate() {
            let id = match change {
                Some(c) => c.to_string(),
                None => format!("b{i}"),
            };
            s.push_str(&format!("echo '@@rv do {id}'\n{{ {text}\n}} || rv_fail {id}\n"));
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
/// empty, waiting up to `tries` half seconds (the server writes its token a moment after start;
/// asked every tenth of a second: the agents wait for it).
pub fn wait_and_print(name: &str, path: &str, tries: u32) -> String {
    let tries = tries.saturating_mul(5);
    format!(
        "rv_i=0; while [ ! -s {p} ] && [ $rv_i -lt {tries} ]; do sleep 0.1; rv_i=$((rv_i+1)); done; \
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
