//! A pure parser for the subset of ~/.ssh/config users already rely on: `Include`, `Host` blocks with
//! patterns (`*`, `?`, `!negation`), `HostName`, `User`, `Port`, `IdentityFile`, `ProxyJump`.
//! As in OpenSSH, the first value found for a keyword wins (IdentityFile accumulates), keywords
//! are case-insensitive, `Keyword=value` and quoted values are accepted. `Match` blocks and
//! unknown keywords are skipped. No I/O here except the convenience loader.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshConfig {
    blocks: Vec<Block>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Block {
    /// `None` for the implicit block before the first `Host` (applies to every host);
    /// for a `Match` block: `Some(vec![])`, which matches nothing.
    patterns: Option<Vec<String>>,
    options: Vec<(String, String)>,
}

/// What the config says about one host alias.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<String>,
    pub proxy_jump: Option<String>,
}

/// One hop of a `ProxyJump` value: `[user@]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpHop {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl SshConfig {
    /// Load a config file; a missing file is an empty config.
    /// `Include` arguments are expanded (`~/`, relative to the file's directory, `*`/`?` in the
    /// last component, sorted); missing included files are skipped as OpenSSH does.
    pub fn load(path: &Path) -> std::io::Result<SshConfig> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SshConfig::default()),
            Err(e) => return Err(e),
        };
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        Ok(SshConfig::parse_with_includes(&text, &|arg| {
            include_files(arg, &base, &home)
                .iter()
                .filter_map(|p| std::fs::read_to_string(p).ok())
                .collect()
        }))
    }

    /// Parse with `Include` support: `include` maps one Include argument to the texts of the
    /// files it names (in order). Included lines are spliced in place (depth limit 16).
    pub fn parse_with_includes(text: &str, include: &dyn Fn(&str) -> Vec<String>) -> SshConfig {
        let mut lines = vec![];
        splice(text, include, 0, &mut lines);
        SshConfig::parse(&lines.join("\n"))
    }

    /// `$HOME/.ssh/config`, or empty when HOME is unset or the file is missing.
    pub fn load_user_default() -> std::io::Result<SshConfig> {
        match std::env::var_os("HOME") {
            Some(home) => SshConfig::load(&PathBuf::from(home).join(".ssh/config")),
            None => Ok(SshConfig::default()),
        }
    }

    pub fn parse(text: &str) -> SshConfig {
        let mut blocks = vec![Block::default()];
        for raw in text.lines() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, rest)) = split_keyword(line) else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            let args = split_args(rest);
            match key.as_str() {
                "host" => blocks.push(Block {
                    patterns: Some(args),
                    options: vec![],
                }),
                "match" => blocks.push(Block {
                    patterns: Some(vec![]),
                    options: vec![],
                }),
                _ => {
                    if let Some(first) = args.into_iter().next()
                        && let Some(block) = blocks.last_mut()
                    {
                        block.options.push((key, first));
                    }
                }
            }
        }
        SshConfig { blocks }
    }

    /// The same config with every ProxyJump removed.
    pub fn without_proxy_jump(&self) -> SshConfig {
        let mut c = self.clone();
        for b in &mut c.blocks {
            b.options.retain(|(k, _)| k != "proxyjump");
        }
        c
    }

    /// Settings for `alias`, OpenSSH style: blocks in file order, first value wins.
    pub fn resolve(&self, alias: &str) -> HostConfig {
        let mut hc = HostConfig::default();
        for block in &self.blocks {
            let applies = match &block.patterns {
                None => true,
                Some(p) => patterns_match(p, alias),
            };
            if !applies {
                continue;
            }
            for (key, value) in &block.options {
                match key.as_str() {
                    "hostname" if hc.hostname.is_none() => {
                        hc.hostname = Some(value.replace("%h", alias))
                    }
                    "user" if hc.user.is_none() => hc.user = Some(value.clone()),
                    "port" if hc.port.is_none() => hc.port = value.parse().ok(),
                    "identityfile" => hc.identity_files.push(value.clone()),
                    "proxyjump" if hc.proxy_jump.is_none() => hc.proxy_jump = Some(value.clone()),
                    _ => {}
                }
            }
        }
        if hc
            .proxy_jump
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case("none"))
        {
            hc.proxy_jump = None;
        }
        hc
    }
}

fn splice(text: &str, include: &dyn Fn(&str) -> Vec<String>, depth: usize, out: &mut Vec<String>) {
    for raw in text.lines() {
        let line = raw.trim();
        if let Some((key, rest)) = split_keyword(line)
            && key.eq_ignore_ascii_case("include")
        {
            if depth < 16 {
                for arg in split_args(rest) {
                    for t in include(&arg) {
                        splice(&t, include, depth + 1, out);
                    }
                }
            }
            continue;
        }
        out.push(raw.to_string());
    }
}

/// Files named by one Include argument (pure apart from listing a directory for globs).
fn include_files(arg: &str, base: &Path, home: &Path) -> Vec<PathBuf> {
    let p = if let Some(rest) = arg.strip_prefix("~/") {
        home.join(rest)
    } else if arg.starts_with('/') {
        PathBuf::from(arg)
    } else {
        base.join(arg)
    };
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return vec![p];
    }
    let dir = p.parent().unwrap_or(Path::new("/"));
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| glob(name.as_bytes(), e.file_name().to_string_lossy().as_bytes()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// Expand `~/`, `%d` (home), `%u` (local user), `%h` (host), `%r` (remote user), `%%`.
pub fn expand_path(
    value: &str,
    home: &Path,
    local_user: &str,
    host: &str,
    remote_user: &str,
) -> PathBuf {
    let home_s = home.to_string_lossy();
    let v = if let Some(rest) = value.strip_prefix("~/") {
        format!("{home_s}/{rest}")
    } else if value == "~" {
        home_s.to_string()
    } else {
        value.to_string()
    };
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&home_s),
            Some('u') => out.push_str(local_user),
            Some('h') => out.push_str(host),
            Some('r') => out.push_str(remote_user),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    PathBuf::from(out)
}

/// Why a ProxyJump value was refused; each names the hop as written.
#[derive(Debug, thiserror::Error)]
pub enum ProxyJumpError {
    #[error("unclosed `[` in ProxyJump hop `{hop}`")]
    Unclosed { hop: String },
    #[error("bad port in ProxyJump hop `{hop}`")]
    BadPort { hop: String },
    #[error("unexpected `{after}` in ProxyJump hop `{hop}`")]
    Unexpected { after: String, hop: String },
    #[error("empty host in ProxyJump hop `{hop}`")]
    EmptyHost { hop: String },
}

/// Parse a ProxyJump value into hops, nearest-to-us first. `none` gives no hops.
pub fn parse_proxy_jump(value: &str) -> Result<Vec<JumpHop>, ProxyJumpError> {
    let value = value.trim();
    if value.is_empty() || value.eq_ignore_ascii_case("none") {
        return Ok(vec![]);
    }
    value.split(',').map(|hop| parse_hop(hop.trim())).collect()
}

fn parse_hop(hop: &str) -> Result<JumpHop, ProxyJumpError> {
    let hop = hop.strip_prefix("ssh://").unwrap_or(hop);
    let (user, rest) = match hop.rsplit_once('@') {
        Some((u, r)) => (Some(u.to_string()), r),
        None => (None, hop),
    };
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (h, after) = inner
            .split_once(']')
            .ok_or_else(|| ProxyJumpError::Unclosed { hop: hop.to_string() })?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| ProxyJumpError::BadPort { hop: hop.to_string() })?,
            ),
            None if after.is_empty() => None,
            None => return Err(ProxyJumpError::Unexpected { after: after.to_string(), hop: hop.to_string() }),
        };
        (h.to_string(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (
                h.to_string(),
                Some(
                    p.parse::<u16>()
                        .map_err(|_| ProxyJumpError::BadPort { hop: hop.to_string() })?,
                ),
            ),
            _ => (rest.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(ProxyJumpError::EmptyHost { hop: hop.to_string() });
    }
    Ok(JumpHop { user, host, port })
}

fn split_keyword(line: &str) -> Option<(&str, &str)> {
    let end = line.find(|c: char| c.is_whitespace() || c == '=')?;
    let key = &line[..end];
    let mut rest = line[end..].trim_start();
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start();
    }
    Some((key, rest))
}

fn split_args(rest: &str) -> Vec<String> {
    let mut args = vec![];
    let mut cur = String::new();
    let mut in_quote = false;
    let mut has = false;
    for c in rest.chars() {
        match c {
            '"' => {
                in_quote = !in_quote;
                has = true;
            }
            c if c.is_whitespace() && !in_quote => {
                if has {
                    args.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            '#' if !in_quote && !has => break,
            c => {
                cur.push(c);
                has = true;
            }
        }
    }
    if has {
        args.push(cur);
    }
    args
}

fn patterns_match(patterns: &[String], host: &str) -> bool {
    let mut matched = false;
    for p in patterns {
        for p in p.split(',') {
            if let Some(neg) = p.strip_prefix('!') {
                if glob(neg.as_bytes(), host.as_bytes()) {
                    return false;
                }
            } else if glob(p.as_bytes(), host.as_bytes()) {
                matched = true;
            }
        }
    }
    matched
}

/// `*` and `?` glob, case-insensitive like OpenSSH host patterns.
pub(crate) fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while i < s.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p].eq_ignore_ascii_case(&s[i])) {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some(p);
            mark = i;
            p += 1;
        } else if let Some(sp) = star {
            p = sp + 1;
            mark += 1;
            i = mark;
        } else {
            return false;
        }
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
# global defaults come after specific blocks in real configs, but may come first too
User fallback

Host lichee-* !lichee-bad
    HostName %h.lan
    Port 2222
    IdentityFile ~/.ssh/boards_ed25519

Host lichee-1
    # too late: HostName already set by the block above
    HostName ignored.example
    IdentityFile "/keys/with space"

Host vf2 visionfive
  Hostname=10.0.0.7
  User   root
  ProxyJump admin@bastion:2200

Match host foo
  User matched-should-not-apply

Host *
  Port 22
  IdentityFile ~/.ssh/id_ed25519
  ProxyJump none
"#;

    #[test]
    fn aliases_patterns_first_value_wins() {
        let c = SshConfig::parse(CONFIG);
        let h = c.resolve("lichee-1");
        assert_eq!(h.hostname.as_deref(), Some("lichee-1.lan"));
        assert_eq!(h.port, Some(2222));
        assert_eq!(h.user.as_deref(), Some("fallback"));
        assert_eq!(
            h.identity_files,
            vec![
                "~/.ssh/boards_ed25519",
                "/keys/with space",
                "~/.ssh/id_ed25519"
            ]
        );
        assert_eq!(h.proxy_jump, None);
    }

    #[test]
    fn negated_pattern_excludes() {
        let c = SshConfig::parse(CONFIG);
        let h = c.resolve("lichee-bad");
        assert_eq!(h.hostname, None);
        assert_eq!(h.port, Some(22));
    }

    #[test]
    fn equals_syntax_case_insensitive_and_proxyjump() {
        let c = SshConfig::parse(CONFIG);
        let h = c.resolve("visionfive");
        assert_eq!(h.hostname.as_deref(), Some("10.0.0.7"));
        assert_eq!(
            h.user.as_deref(),
            Some("fallback"),
            "the implicit global block comes first"
        );
        assert_eq!(h.proxy_jump.as_deref(), Some("admin@bastion:2200"));
        assert_eq!(c.resolve("VF2").hostname.as_deref(), Some("10.0.0.7"));
    }

    #[test]
    fn match_blocks_are_skipped() {
        let c = SshConfig::parse("Match host foo\n  User m\nHost foo\n  User f\n");
        assert_eq!(c.resolve("foo").user.as_deref(), Some("f"));
    }

    #[test]
    fn unknown_host_gets_wildcard_only() {
        let c = SshConfig::parse(CONFIG);
        let h = c.resolve("other");
        assert_eq!(h.hostname, None);
        assert_eq!(h.port, Some(22));
        assert_eq!(h.identity_files, vec!["~/.ssh/id_ed25519"]);
    }

    #[test]
    fn empty_and_comment_only() {
        assert_eq!(SshConfig::parse("").resolve("x"), HostConfig::default());
        assert_eq!(
            SshConfig::parse("# nothing\n\n").resolve("x"),
            HostConfig::default()
        );
    }

    #[test]
    fn include_splices_files_in_place() {
        let main = "Include boards.conf\nHost *\n  User fallback\n";
        let c = SshConfig::parse_with_includes(main, &|arg| match arg {
            "boards.conf" => vec!["Host b1\n  HostName 10.0.0.1\n  Include nested\n".into()],
            "nested" => vec!["  Port 2201\n".into()],
            _ => vec![],
        });
        let h = c.resolve("b1");
        assert_eq!(h.hostname.as_deref(), Some("10.0.0.1"));
        assert_eq!(h.port, Some(2201));
        assert_eq!(h.user.as_deref(), Some("fallback"));
    }

    #[test]
    fn include_recursion_is_bounded() {
        let c = SshConfig::parse_with_includes("Include self\nHost x\n User u\n", &|_| {
            vec!["Include self\n".into()]
        });
        assert_eq!(c.resolve("x").user.as_deref(), Some("u"));
    }

    #[test]
    fn load_follows_include_globs() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("config.d")).unwrap();
        std::fs::write(
            d.path().join("config.d/10-a.conf"),
            "Host a\n HostName 10.0.0.10\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("config.d/20-b.conf"),
            "Host b\n HostName 10.0.0.20\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("config.d/ignored.txt"),
            "Host a\n HostName wrong\n",
        )
        .unwrap();
        std::fs::write(d.path().join("config"), "Include config.d/*.conf\n").unwrap();
        let c = SshConfig::load(&d.path().join("config")).unwrap();
        assert_eq!(c.resolve("a").hostname.as_deref(), Some("10.0.0.10"));
        assert_eq!(c.resolve("b").hostname.as_deref(), Some("10.0.0.20"));
        assert_eq!(
            SshConfig::load(&d.path().join("missing")).unwrap(),
            SshConfig::default()
        );
    }

    #[test]
    fn glob_works() {
        assert!(glob(b"*", b"anything"));
        assert!(glob(b"10.0.0.?", b"10.0.0.7"));
        assert!(!glob(b"10.0.0.?", b"10.0.0.17"));
        assert!(glob(b"*.lan", b"a.b.LAN"));
        assert!(!glob(b"a*b", b"acbd"));
        assert!(glob(b"a*b*", b"acbd"));
    }

    #[test]
    fn proxy_jump_hops() {
        assert_eq!(
            parse_proxy_jump("admin@bastion:2200,[::1]:23,plain").unwrap(),
            vec![
                JumpHop {
                    user: Some("admin".into()),
                    host: "bastion".into(),
                    port: Some(2200)
                },
                JumpHop {
                    user: None,
                    host: "::1".into(),
                    port: Some(23)
                },
                JumpHop {
                    user: None,
                    host: "plain".into(),
                    port: None
                },
            ]
        );
        assert_eq!(parse_proxy_jump("none").unwrap(), vec![]);
        assert!(parse_proxy_jump("host:notaport").is_err());
        assert!(parse_proxy_jump("u@").is_err());
    }

    #[test]
    fn path_expansion() {
        let p = expand_path(
            "~/.ssh/id_%r@%h%%",
            Path::new("/home/me"),
            "me",
            "b1",
            "root",
        );
        assert_eq!(p, PathBuf::from("/home/me/.ssh/id_root@b1%"));
        assert_eq!(
            expand_path("%d/k", Path::new("/h"), "u", "h", "r"),
            PathBuf::from("/h/k")
        );
    }
}
