//! The `build` block of an `image` entry, decoded and checked with nothing but the file and the
//! files it names: the base is `scratch` or pinned by digest, local inputs exist, paths in the
//! image are absolute and normalized, config values are well formed. Building is src/build's job.

use std::path::Path;
use std::sync::LazyLock;

use kdl::{KdlNode, KdlValue};
use miette::SourceSpan;
use regex::Regex;

use super::diag::Problems;
use super::kdl::{Entries, children, entry_str, no_children, type_name};
use super::model::{Build, BuildConfig, BuildInput, BuildInputKind, ConfigFrom};
use super::reference::ImageRef;

const CHILDREN: &[&str] =
    &["base", "file", "dir", "entrypoint", "cmd", "env", "user", "workdir", "expose", "label", "config-from"];

static ENV_KEY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*$").unwrap());
static PLATFORM: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$").unwrap());

/// Decodes `build { ... }`; every problem is recorded, None when the block cannot be used.
pub(super) fn decode(node: &KdlNode, base_dir: &Path, p: &mut Problems) -> Option<Build> {
    let e = Entries::new(node, &["source-date-epoch"], p);
    e.expect_args(0, 0, "no arguments", p);
    let epoch = e.prop("source-date-epoch").and_then(|en| match en.value() {
        // Up to the end of year 9999, the last time RFC 3339 can write.
        KdlValue::Integer(i) if (0..=253_402_300_799).contains(i) => Some(*i as u64),
        v => {
            p.push(en.span(), format!("`source-date-epoch` must be a number of seconds since 1970, found {}", describe(v)), "expected an integer");
            None
        }
    });
    let mut ok = true;
    let mut base: Option<Option<ImageRef>> = None;
    let mut inputs: Vec<BuildInput> = Vec::new();
    let mut config = BuildConfig::default();
    let mut config_from = None;
    let mut seen: Vec<(&str, SourceSpan)> = Vec::new();
    for c in children(node, CHILDREN, p) {
        let name = c.name().value();
        if matches!(name, "base" | "entrypoint" | "cmd" | "user" | "workdir" | "config-from") {
            if seen.iter().any(|(n, _)| *n == name) {
                p.push(c.name().span(), format!("`{name}` is given twice in `build`"), "second one");
                ok = false;
                continue;
            }
            seen.push((name, c.name().span()));
        }
        match name {
            "base" => match decode_base(c, p) {
                Some(b) => base = Some(b),
                None => ok = false,
            },
            "file" | "dir" => match decode_input(c, base_dir, p) {
                Some(i) => {
                    // Two trees may share a destination (they merge); a file may not.
                    if inputs.iter().any(|x| x.dest == i.dest && (x.kind != BuildInputKind::Dir || i.kind != BuildInputKind::Dir)) {
                        p.push(i.span, format!("`{}` is written twice in the image", i.dest), "same path as an earlier input");
                        ok = false;
                    } else {
                        inputs.push(i);
                    }
                }
                None => ok = false,
            },
            "entrypoint" | "cmd" => {
                let e = Entries::new(c, &[], p);
                no_children(c, p);
                let args = e.arg_strs("an argument", p);
                if args.len() != e.args.len() {
                    ok = false;
                    continue;
                }
                let v = Some(args.into_iter().map(|(s, _)| s).collect());
                if name == "cmd" { config.cmd = v } else { config.entrypoint = v }
            }
            "env" => {
                let e = Entries::new(c, &[], p);
                no_children(c, p);
                if !e.expect_args(1, usize::MAX, "at least one KEY=VALUE", p) {
                    ok = false;
                }
                for (kv, span) in e.arg_strs("a KEY=VALUE", p) {
                    match kv.split_once('=') {
                        Some((k, v)) if ENV_KEY.is_match(k) => {
                            config.env.retain(|(x, _)| x != k);
                            config.env.push((k.to_string(), v.to_string()));
                        }
                        _ => {
                            p.push_help(span, format!("`{kv}` is not KEY=VALUE"), "expected KEY=VALUE", "e.g. env \"PATH=/usr/bin:/bin\"");
                            ok = false;
                        }
                    }
                }
            }
            "user" => match one(c, "a user (NAME, UID or UID:GID)", p) {
                Some((u, span)) if u.is_empty() || u.contains(char::is_whitespace) => {
                    let what = if u.is_empty() { "the user cannot be empty".to_string() } else { format!("`{u}` is not a user") };
                    p.push(span, what, "expected NAME, UID, NAME:GROUP or UID:GID");
                    ok = false;
                }
                Some((u, _)) => config.user = Some(u),
                None => ok = false,
            },
            "workdir" => match one(c, "an absolute directory", p) {
                Some((w, span)) => match image_path(&w) {
                    Ok(w) => config.workdir = Some(w),
                    Err(why) => {
                        p.push(span, format!("workdir `{w}` {why}"), "expected an absolute path");
                        ok = false;
                    }
                },
                None => ok = false,
            },
            "expose" => {
                let e = Entries::new(c, &[], p);
                no_children(c, p);
                if !e.expect_args(1, usize::MAX, "at least one port (80 or \"53/udp\")", p) {
                    ok = false;
                }
                for a in &e.args {
                    match port(a.value()) {
                        Ok(port) => {
                            if !config.expose.contains(&port) {
                                config.expose.push(port);
                            }
                        }
                        Err(why) => {
                            p.push(a.span(), why.to_string(), "expected PORT or \"PORT/tcp|udp|sctp\"");
                            ok = false;
                        }
                    }
                }
            }
            "label" => {
                let e = Entries::new(c, &[], p);
                no_children(c, p);
                if !e.expect_args(2, 2, "a key and a value", p) {
                    ok = false;
                    continue;
                }
                match (e.arg_str(0, "the key", p), e.arg_str(1, "the value", p)) {
                    (Some((k, span)), Some((v, _))) => {
                        if k.is_empty() {
                            p.push(span, "a label key cannot be empty", "empty key");
                            ok = false;
                        } else {
                            config.labels.retain(|(x, _)| *x != k);
                            config.labels.push((k, v));
                        }
                    }
                    _ => ok = false,
                }
            }
            _ => match decode_config_from(c, p) {
                Some(cf) => config_from = Some(cf),
                None => ok = false,
            },
        }
    }
    let Some(base) = base else {
        if !seen.iter().any(|(n, _)| *n == "base") {
            p.push_help(
                node.name().span(),
                "`build` needs a `base`",
                "no base",
                "base \"scratch\" for an empty image, or base \"REGISTRY/REPO:TAG@sha256:...\" (pinned by digest)",
            );
        }
        return None;
    };
    if base.is_none() && inputs.is_empty() && ok {
        p.push_help(
            node.name().span(),
            "a build from scratch needs at least one `file` or `dir`",
            "empty image",
            "add: file \"PATH\" \"/PATH/IN/IMAGE\" mode=0o755",
        );
        return None;
    }
    if !ok {
        return None;
    }
    Some(Build { base, inputs, config, config_from, epoch, span: node.span() })
}

fn describe(v: &KdlValue) -> String {
    match v {
        KdlValue::Integer(i) => format!("{i}"),
        v => type_name(v).to_string(),
    }
}

fn one(c: &KdlNode, what: &str, p: &mut Problems) -> Option<(String, SourceSpan)> {
    let e = Entries::new(c, &[], p);
    no_children(c, p);
    if !e.expect_args(1, 1, what, p) {
        return None;
    }
    e.arg_str(0, what, p)
}

fn decode_base(c: &KdlNode, p: &mut Problems) -> Option<Option<ImageRef>> {
    let (b, span) = one(c, "\"scratch\" or an image pinned by digest", p)?;
    if b == "scratch" {
        return Some(None);
    }
    let b = b.strip_prefix("docker://").unwrap_or(&b);
    match ImageRef::parse(b) {
        Err(err) => {
            p.push(span, format!("invalid base image `{b}`: {err}"), "not a Docker reference");
            None
        }
        Ok(r) if r.digest.is_none() => {
            p.push_help(
                span,
                format!("base image `{b}` is not pinned by digest"),
                "a tag can move",
                "a build must give the same image every time: add @sha256:... (skopeo inspect --raw docker://IMAGE | sha256sum)",
            );
            None
        }
        Ok(r) => Some(Some(r)),
    }
}

fn decode_config_from(c: &KdlNode, p: &mut Problems) -> Option<ConfigFrom> {
    let e = Entries::new(c, &["platform"], p);
    no_children(c, p);
    if !e.expect_args(1, 1, "a docker://IMAGE reference", p) {
        return None;
    }
    let (s, span) = e.arg_str(0, "the image", p)?;
    let platform = match e.prop_str("platform", p) {
        Some((pl, pspan)) => {
            if !PLATFORM.is_match(&pl) {
                p.push(pspan, format!("`{pl}` is not a platform"), "expected os/arch or os/arch/variant, e.g. linux/amd64");
                return None;
            }
            if pl == "linux/riscv64" {
                p.push_help(
                    pspan,
                    "`config-from` copies another platform's config, not linux/riscv64's",
                    "linux/riscv64",
                    "use `base` to build on a linux/riscv64 image",
                );
                return None;
            }
            Some(pl)
        }
        None => None,
    };
    let Some(r) = s.strip_prefix("docker://") else {
        p.push(span, format!("config-from `{s}` must be a docker://IMAGE reference"), "expected docker://");
        return None;
    };
    match ImageRef::parse(r) {
        Ok(image) => Some(ConfigFrom { image, platform, span: c.span() }),
        Err(err) => {
            p.push(span, format!("invalid config-from reference `{r}`: {err}"), "not a Docker reference");
            None
        }
    }
}

/// `file "SRC" "DEST" mode=0o755` or `dir "SRC" "DEST"` (DEST defaults to `/` for a dir).
fn decode_input(c: &KdlNode, base_dir: &Path, p: &mut Problems) -> Option<BuildInput> {
    let is_file = c.name().value() == "file";
    let e = Entries::new(c, if is_file { &["mode"] } else { &[] }, p);
    no_children(c, p);
    let what = if is_file { "a local file and its path in the image" } else { "a local directory (and where it goes in the image)" };
    if !e.expect_args(if is_file { 2 } else { 1 }, 2, what, p) {
        return None;
    }
    let (src, sspan) = e.arg_str(0, "the local path", p)?;
    let (dest, dspan) = match e.args.get(1) {
        Some(a) => entry_str(a, "the path in the image", p)?,
        None => ("/".to_string(), sspan),
    };
    let mode = match e.prop("mode") {
        None => None,
        Some(m) => match m.value() {
            KdlValue::Integer(i) if (0..=0o7777).contains(i) => Some(*i as u32),
            KdlValue::String(s) if s.len() <= 5 && !s.is_empty() && s.bytes().all(|b| (b'0'..=b'7').contains(&b)) => {
                Some(u32::from_str_radix(s, 8).expect("octal digits"))
            }
            v => {
                let found = match v {
                    KdlValue::String(s) => format!("\"{s}\""),
                    v => describe(v),
                };
                p.push_help(
                    m.span(),
                    format!("`mode` must be an octal file mode, found {found}"),
                    "expected e.g. 0o755",
                    "write it as a KDL octal integer (mode=0o755) or an octal string (mode=\"0755\")",
                );
                return None;
            }
        },
    };
    let source = expand(&src, base_dir);
    let exists = if is_file { source.is_file() } else { source.is_dir() };
    if !exists {
        p.push_help(
            sspan,
            format!("{} `{src}` does not exist", if is_file { "file" } else { "directory" }),
            if is_file { "file not found" } else { "directory not found" },
            format!("looked for {} (paths are relative to the cluster file)", source.display()),
        );
        return None;
    }
    let dest = match image_path(&dest) {
        Ok(d) if is_file && d == "/" => {
            p.push(dspan, "a file cannot be written at `/`", "expected a file path in the image");
            return None;
        }
        Ok(d) => d,
        Err(why) => {
            p.push(dspan, format!("image path `{dest}` {why}"), "expected an absolute path in the image");
            return None;
        }
    };
    let kind = if is_file { BuildInputKind::File { mode } } else { BuildInputKind::Dir };
    Some(BuildInput { kind, source, dest, span: c.span() })
}

fn expand(p: &str, base: &Path) -> std::path::PathBuf {
    super::load::expand_home(p, base)
}

/// An absolute path in the image, normalized (`/usr//bin/` -> `/usr/bin`); Err says why not.
pub fn image_path(p: &str) -> Result<String, &'static str> {
    if !p.starts_with('/') {
        return Err("is not absolute");
    }
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("contains `..`"),
            c if c.contains('\0') => return Err("contains a NUL byte"),
            c => parts.push(c),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Why an `expose` port was refused (the text of the located problem).
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("`{0}` is not a port")]
    NotAPort(String),
    #[error("a port must be a number or \"PORT/PROTO\", found {0}")]
    WrongType(&'static str),
    #[error("port {0} is out of range")]
    OutOfRange(i128),
    #[error("protocol `{0}` is not tcp, udp or sctp")]
    Protocol(String),
}

fn port(v: &KdlValue) -> Result<String, PortError> {
    let (num, proto) = match v {
        KdlValue::Integer(i) => (*i, "tcp".to_string()),
        KdlValue::String(s) => {
            let (n, pr) = s.split_once('/').unwrap_or((s.as_str(), "tcp"));
            let n: i128 = n.parse().map_err(|_| PortError::NotAPort(s.clone()))?;
            (n, pr.to_string())
        }
        v => return Err(PortError::WrongType(type_name(v))),
    };
    if !(1..=65535).contains(&num) {
        return Err(PortError::OutOfRange(num));
    }
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(PortError::Protocol(proto));
    }
    Ok(format!("{num}/{proto}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_paths_are_absolute_and_normalized() {
        assert_eq!(image_path("/usr//local/./bin/").unwrap(), "/usr/local/bin");
        assert_eq!(image_path("/").unwrap(), "/");
        assert!(image_path("pause").is_err());
        assert!(image_path("/a/../etc").is_err());
    }

    #[test]
    fn ports_default_to_tcp() {
        assert_eq!(port(&KdlValue::Integer(80)).unwrap(), "80/tcp");
        assert_eq!(port(&KdlValue::String("53/udp".into())).unwrap(), "53/udp");
        assert!(port(&KdlValue::String("53/icmp".into())).is_err());
        assert!(port(&KdlValue::Integer(0)).is_err());
    }
}
