//! Decoding cluster.kdl into the typed model, and every check that needs nothing but the file, the
//! files it names and the profiles. No host is contacted here.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use kdl::{KdlDocument, KdlError, KdlNode};
use miette::SourceSpan;
use regex::Regex;

use super::diag::{Problem, Problems, SpecError};
use super::kdl::{Entries, children, no_children, type_name, unknown_node};
use super::model::*;
use super::reference::ImageRef;
use super::values;
use crate::profile::Profiles;

/// k3s `--disable` names (docs/k3s-behaviour.md §5.3 --disable).
pub const DISABLE_NAMES: &[&str] = &["coredns", "servicelb", "traefik", "local-storage", "metrics-server", "runtimes"];

/// config.yaml keys rvcluster writes itself, with where to say it instead.
const MANAGED_KEYS: &[(&str, &str)] = &[
    ("disable", "use `disable` inside the `k3s` block"),
    ("server", "rvcluster points agents at the server node itself"),
    ("node-name", "the node name is the `node` name"),
    ("node-ip", "the node IP is the node's `address`"),
    ("token-file", "rvcluster manages the cluster token"),
];
/// Keys whose value is a secret: never inline in cluster.kdl.
const SECRET_KEYS: &[&str] = &["token", "agent-token", "datastore-endpoint", "etcd-s3-secret-key", "etcd-s3-access-key"];

const TOP: &[&str] = &["cluster", "k3s", "registry", "node", "image", "upstream", "generations"];

static RFC1123: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").unwrap());
static VERSION: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^v\d+\.\d+\.\d+(-rc\d+)?\+k3s\d+$").unwrap());
static HEX64: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[0-9a-f]{64}$").unwrap());
static CONFIG_KEY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-z][a-z0-9-]*$").unwrap());
static HOSTNAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*$").unwrap()
});

/// Reads and validates a cluster file.
// SpecError carries the file text for the report; it is built once, on the error path.
#[allow(clippy::result_large_err)]
pub fn load(path: &Path, profiles: &Profiles) -> Result<Cluster, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        SpecError::new(
            path,
            "",
            vec![Problem {
                span: (0, 0).into(),
                message: format!("cannot read {}: {e}", path.display()),
                label: String::new(),
                help: None,
            }],
        )
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
    parse(path, &text, &base, profiles)
}

/// Validates cluster text; `base_dir` resolves relative paths. Never panics, whatever the input.
#[allow(clippy::result_large_err)]
pub fn parse(file: &Path, text: &str, base_dir: &Path, profiles: &Profiles) -> Result<Cluster, SpecError> {
    let doc = KdlDocument::parse_v2(text).map_err(|e| kdl_error(file, text, e))?;
    let mut d = Decoder { p: Problems::default(), base: base_dir.to_path_buf(), profiles };
    let cluster = d.document(file, &doc);
    if d.p.is_empty()
        && let Some(c) = cluster
    {
        return Ok(c);
    }
    let shown = super::diag::redacted(text, &d.p.1);
    Err(SpecError::new(file, &shown, d.p.0))
}

/// A KDL syntax error as our diagnostic (same file:line:col form).
pub fn kdl_error(file: &Path, text: &str, e: KdlError) -> SpecError {
    let problems = e
        .diagnostics
        .into_iter()
        .map(|d| Problem {
            span: d.span,
            message: format!("KDL syntax error: {}", d.message.unwrap_or_else(|| "unexpected input".into())),
            label: d.label.unwrap_or_else(|| "here".into()),
            help: d.help.or_else(|| Some("cluster.kdl is KDL v2 (https://kdl.dev): strings in double quotes, booleans #true/#false".into())),
        })
        .collect();
    SpecError::new(file, text, problems)
}

struct Decoder<'a> {
    p: Problems,
    base: PathBuf,
    profiles: &'a Profiles,
}

impl Decoder<'_> {
    fn document(&mut self, file: &Path, doc: &KdlDocument) -> Option<Cluster> {
        let mut name = None;
        let mut k3s = None;
        let mut registry: Option<Registry> = None;
        let mut nodes = Vec::new();
        let mut images: Vec<(Image, Option<SourceSpan>)> = Vec::new();
        let mut upstreams = Vec::new();
        let mut keep = crate::generation::DEFAULT_KEEP;
        let mut declared_nodes = 0;
        let mut seen: HashMap<&str, SourceSpan> = HashMap::new();
        for node in doc.nodes() {
            let kind = node.name().value();
            if !TOP.contains(&kind) {
                unknown_node(node, TOP, "at the top level", &mut self.p);
                continue;
            }
            if matches!(kind, "cluster" | "k3s" | "registry" | "generations") {
                if let Some(first) = seen.get(kind) {
                    let (l, _) = (first.offset(), 0);
                    let _ = l;
                    self.p.push_help(
                        node.name().span(),
                        format!("`{kind}` is given twice"),
                        "second one",
                        "a cluster has exactly one of these; merge the two blocks",
                    );
                    continue;
                }
                seen.insert(kind, node.name().span());
            }
            match kind {
                "cluster" => name = self.cluster_name(node),
                "k3s" => k3s = self.k3s(node),
                "registry" => registry = self.registry(node),
                "node" => {
                    declared_nodes += 1;
                    nodes.extend(self.node(node));
                }
                "image" => images.extend(self.image(node)),
                "generations" => keep = self.generations(node).unwrap_or(keep),
                _ => upstreams.extend(self.upstream(node)),
            }
        }
        let whole: SourceSpan = (0, 0).into();
        if !seen.contains_key("cluster") {
            self.p.push_help(whole, "no `cluster` node", "missing cluster name", "start the file with: cluster \"NAME\"");
        }
        if !seen.contains_key("k3s") {
            self.p.push_help(
                whole,
                "no `k3s` block",
                "missing k3s",
                "add: k3s version=\"v1.34.3+k3s1\" { binary \"PATH\" sha256=\"...\" }",
            );
        }
        let images = self.deliveries(images, registry.as_ref());
        self.cross_checks(&nodes, declared_nodes, &images, registry.as_ref());
        Some(Cluster {
            name: name?,
            file: file.to_path_buf(),
            base_dir: self.base.clone(),
            k3s: k3s?,
            registry,
            nodes,
            images,
            upstreams,
            generations_keep: keep,
        })
    }

    /// `generations keep=10`: how many generations each host keeps (plus generation 0).
    fn generations(&mut self, node: &KdlNode) -> Option<u32> {
        let e = Entries::new(node, &["keep"], &mut self.p);
        no_children(node, &mut self.p);
        e.expect_args(0, 0, "no arguments", &mut self.p);
        e.prop_count("keep", 1..=1000, "a number of generations", &mut self.p)
    }

    fn cluster_name(&mut self, node: &KdlNode) -> Option<String> {
        let e = Entries::new(node, &[], &mut self.p);
        no_children(node, &mut self.p);
        if !e.expect_args(1, 1, "a name", &mut self.p) {
            return None;
        }
        let (name, span) = e.arg_str(0, "the name", &mut self.p)?;
        if !RFC1123.is_match(&name) || name.len() > 63 {
            self.p.push(span, format!("cluster name `{}` is not a valid name", values::shown(&name)), "expected lowercase letters, digits and `-`");
        }
        Some(name)
    }

    fn k3s(&mut self, node: &KdlNode) -> Option<K3s> {
        let e = Entries::new(node, &["version"], &mut self.p);
        e.expect_args(0, 0, "no arguments", &mut self.p);
        let version = e.required_prop_str("version", "the k3s release, e.g. v1.34.3+k3s1", &mut self.p);
        if let Some((v, span)) = &version {
            if !VERSION.is_match(v) {
                self.p.push(*span, format!("`{v}` is not a k3s version"), "expected vMAJOR.MINOR.PATCH+k3sN");
            } else if self.profiles.release(v).is_none() {
                let known: Vec<&str> = self.profiles.k3s.iter().map(|r| r.version.as_str()).collect();
                self.p.push_help(
                    *span,
                    format!("k3s release `{v}` is not known to rvcluster"),
                    "unknown release",
                    format!(
                        "known releases: {}; add profiles/k3s/{v}.kdl (its system images) to use another one",
                        known.join(", ")
                    ),
                );
            }
        }
        let mut binary = None;
        let mut binary_seen = false;
        let mut disable: Vec<Spanned<String>> = Vec::new();
        let mut manifests: Vec<Spanned<PathBuf>> = Vec::new();
        let mut config = Vec::new();
        for c in children(node, &["binary", "disable", "manifest", "config"], &mut self.p) {
            match c.name().value() {
                "binary" => {
                    if binary_seen {
                        self.p.push(c.name().span(), "`binary` is given twice", "second one");
                    }
                    binary_seen = true;
                    binary = self.binary(c, true);
                }
                "disable" => {
                    let e = Entries::new(c, &[], &mut self.p);
                    no_children(c, &mut self.p);
                    e.expect_args(1, usize::MAX, "at least one addon name", &mut self.p);
                    for (name, span) in e.arg_strs("an addon name", &mut self.p) {
                        if !DISABLE_NAMES.contains(&name.as_str()) {
                            let help = super::diag::did_you_mean(&name, DISABLE_NAMES)
                                .map(|h| format!("{h} "))
                                .unwrap_or_default();
                            self.p.push_help(
                                span,
                                format!("k3s cannot disable `{name}`"),
                                "unknown addon",
                                format!("{help}(k3s accepts: {})", DISABLE_NAMES.join(", ")),
                            );
                        } else if disable.iter().any(|d| d.value == name) {
                            self.p.push(span, format!("`{name}` is disabled twice"), "duplicate");
                        } else {
                            disable.push(Spanned { value: name, span });
                        }
                    }
                }
                "manifest" => {
                    let e = Entries::new(c, &[], &mut self.p);
                    no_children(c, &mut self.p);
                    if e.expect_args(1, 1, "a manifest file path", &mut self.p)
                        && let Some((path, span)) = e.arg_str(0, "the path", &mut self.p)
                        && let Some(abs) = self.existing_file(&path, span, "manifest")
                    {
                        self.manifest_name(&abs, span, &manifests);
                        manifests.push(Spanned { value: abs, span });
                    }
                }
                _ => config.extend(self.config(c)),
            }
        }
        let Some(binary) = binary else {
            if binary_seen {
                return None;
            }
            self.p.push_help(
                node.name().span(),
                "the `k3s` block needs a `binary`",
                "no k3s binary",
                "k3s ships no riscv64 release: add binary \"PATH\" sha256=\"...\" (or url=\"...\" sha256=\"...\")",
            );
            return None;
        };
        Some(K3s { version: version?.0, binary, disable, manifests, config, span: node.span() })
    }

    /// `binary "PATH" sha256=".."` or `binary url=".." sha256=".."`.
    fn binary(&mut self, c: &KdlNode, allow_url: bool) -> Option<Binary> {
        let props: &[&str] = if allow_url { &["sha256", "url"] } else { &["sha256"] };
        let e = Entries::new(c, props, &mut self.p);
        no_children(c, &mut self.p);
        let url = e.prop_str("url", &mut self.p);
        let path = if url.is_some() {
            e.expect_args(0, 0, "no path when url= is given", &mut self.p);
            None
        } else if e.expect_args(1, 1, "a file path (or url=)", &mut self.p) {
            e.arg_str(0, "the path", &mut self.p)
        } else {
            None
        };
        let sha = e.required_prop_str("sha256", "64 lowercase hex digits", &mut self.p);
        let sha_value = e.prop("sha256").map(value_span);
        let sha = sha.and_then(|(s, span)| {
            if HEX64.is_match(&s) {
                Some((s, sha_value.unwrap_or(span)))
            } else {
                self.p.push_help(
                    span,
                    format!("sha256 must be 64 lowercase hex digits, found {} characters", s.chars().count()),
                    "not a sha256",
                    "compute it with: sha256sum FILE",
                );
                None
            }
        });
        let source = match (url, path) {
            (Some((u, span)), _) => {
                if !(u.starts_with("https://") || u.starts_with("http://") || u.starts_with("file://")) {
                    self.p.push(span, format!("`{u}` is not a URL"), "expected https://...");
                    return None;
                }
                BinarySource::Url(u)
            }
            (None, Some((path, span))) => BinarySource::File(self.existing_file(&path, span, "binary")?),
            _ => return None,
        };
        let (sha, sha_span) = sha?;
        // A local file is checked now: `check` catches a wrong digest, not the upload on the board.
        // (A url= binary is checked when it is downloaded.)
        if let BinarySource::File(p) = &source {
            let written = e.args.first().and_then(|a| a.value().as_string()).unwrap_or_default();
            match crate::artifact::file_sha256(p) {
                Ok(actual) if actual == sha => {}
                Ok(actual) => {
                    self.p.push_help(
                        sha_span,
                        format!("sha256 does not match the file: `{written}` has sha256 {actual}"),
                        "not the file's sha256",
                        "if this is the file you mean, write its sha256 here (sha256sum FILE); otherwise fix the path",
                    );
                    return None;
                }
                Err(err) => {
                    self.p.push(sha_span, format!("cannot read {} to check its sha256: {err}", p.display()), "unreadable file");
                    return None;
                }
            }
        }
        Some(Binary { source, sha256: sha, span: c.span() })
    }

    fn manifest_name(&mut self, path: &Path, span: SourceSpan, earlier: &[Spanned<PathBuf>]) {
        let file = path.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default();
        let Some(stem) = file.strip_suffix(".yaml").or_else(|| file.strip_suffix(".yml")).or_else(|| file.strip_suffix(".json"))
        else {
            self.p.push(span, format!("manifest `{file}` must end in .yaml, .yml or .json"), "k3s only applies those");
            return;
        };
        if !RFC1123.is_match(stem) {
            self.p.push_help(
                span,
                format!("manifest name `{stem}` is not a valid Kubernetes name"),
                "invalid AddOn name",
                "k3s names an AddOn after the file's basename: lowercase letters, digits, `-` and `.`",
            );
        }
        if earlier.iter().any(|m| m.value.file_name() == path.file_name()) {
            self.p.push(span, format!("two manifests are both named `{file}` on the server"), "duplicate file name");
        }
    }

    fn config(&mut self, c: &KdlNode) -> Vec<ConfigEntry> {
        let _ = Entries::new(c, &[], &mut self.p);
        let mut out: Vec<ConfigEntry> = Vec::new();
        let Some(doc) = c.children() else { return out };
        for kv in doc.nodes() {
            let key = kv.name().value().to_string();
            let span = kv.name().span();
            if !CONFIG_KEY.is_match(&key) {
                self.p.push(span, format!("`{key}` is not a k3s option name"), "expected lowercase-with-dashes");
                continue;
            }
            if let Some((_, why)) = MANAGED_KEYS.iter().find(|(k, _)| *k == key) {
                self.p.push_help(span, format!("`{key}` is managed by rvcluster"), "not allowed here", *why);
                continue;
            }
            if SECRET_KEYS.contains(&key.as_str()) {
                for a in kv.entries() {
                    self.p.redact(a.span());
                }
                self.p.push_help(
                    span,
                    format!("`{key}` is a secret and must not be written in cluster.kdl"),
                    "secret given inline",
                    "rvcluster generates and distributes the cluster token itself; keep other secrets in files",
                );
                continue;
            }
            let e = Entries::new(kv, &[], &mut self.p);
            no_children(kv, &mut self.p);
            let mut vals = Vec::new();
            let problems_before = self.p.0.len();
            for a in &e.args {
                match a.value() {
                    kdl::KdlValue::String(s) if matches!(key.as_str(), "node-label" | "node-taint") => {
                        let check = if key == "node-label" { values::node_label(s) } else { values::node_taint(s) };
                        match check {
                            Ok(()) => vals.push(ConfigValue::String(s.clone())),
                            Err(why) => self.p.push_help(
                                a.span(),
                                format!("`{}` is not a valid {key}: {why}", values::shown(s)),
                                "invalid label",
                                "Kubernetes label syntax (k3s refuses to register the node otherwise): key = [DNS-subdomain/]name, \
                                 name and value up to 63 ASCII letters, digits, `-`, `_`, `.`, starting and ending alphanumeric",
                            ),
                        }
                    }
                    kdl::KdlValue::String(s) => vals.push(ConfigValue::String(s.clone())),
                    kdl::KdlValue::Bool(b) => vals.push(ConfigValue::Bool(*b)),
                    kdl::KdlValue::Integer(i) if i64::try_from(*i).is_ok() => vals.push(ConfigValue::Integer(*i as i64)),
                    v => self.p.push(a.span(), format!("`{key}` value cannot be {}", type_name(v)), "expected a string, integer or boolean"),
                }
            }
            let value = match vals.len() {
                0 if self.p.0.len() > problems_before => continue,
                0 => {
                    self.p.push(span, format!("`{key}` needs a value"), "no value");
                    continue;
                }
                1 => vals.pop().unwrap(),
                _ => ConfigValue::List(vals),
            };
            // A repeated key appends, as a repeated CLI flag does.
            if let Some(prev) = out.iter_mut().find(|x| x.key == key) {
                let mut list = match std::mem::replace(&mut prev.value, ConfigValue::List(vec![])) {
                    ConfigValue::List(l) => l,
                    v => vec![v],
                };
                match value {
                    ConfigValue::List(l) => list.extend(l),
                    v => list.push(v),
                }
                prev.value = ConfigValue::List(list);
            } else {
                out.push(ConfigEntry { key, value, span: kv.span() });
            }
        }
        out
    }

    fn ssh(&mut self, c: &KdlNode) -> Ssh {
        let e = Entries::new(c, &["user", "port", "host-key", "identity", "proxy-jump", "password"], &mut self.p);
        no_children(c, &mut self.p);
        e.expect_args(0, 0, "no arguments (use properties: user=, port=, host-key=...)", &mut self.p);
        if let Some(pw) = e.prop("password") {
            self.p.redact(value_span(pw));
            self.p.push_help(
                pw.span(),
                "SSH passwords are not accepted in cluster.kdl",
                "secret given inline",
                "use key authentication (ssh-agent or identity=\"PATH\")",
            );
        }
        let host_key = e.prop_str("host-key", &mut self.p).and_then(|(k, span)| {
            let mut parts = k.split_whitespace();
            let kind = parts.next().unwrap_or("");
            let body = parts.next().unwrap_or("");
            let known = ["ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"];
            use base64::Engine;
            if !known.contains(&kind) || base64::engine::general_purpose::STANDARD.decode(body).is_err() {
                self.p.push_help(
                    span,
                    "host-key is not an OpenSSH public key",
                    "expected `TYPE BASE64`",
                    "copy it from the board's /etc/ssh/ssh_host_ed25519_key.pub, or run `rvcluster trust NODE`",
                );
                None
            } else {
                Some(format!("{kind} {body}"))
            }
        });
        let identity = e.prop_str("identity", &mut self.p).map(|(p, _)| expand_home(&p, &self.base));
        let user = e.prop_str("user", &mut self.p).and_then(|(u, span)| match values::ssh_user(&u) {
            Ok(()) => Some(u),
            Err(allowed) => {
                self.p.push_help(span, format!("`{}` is not a user name", values::shown(&u)), "invalid user", allowed.to_string());
                None
            }
        });
        let proxy_jump = e.prop_str("proxy-jump", &mut self.p).and_then(|(j, span)| match self.proxy_jump(&j) {
            Ok(()) => Some(j),
            Err(why) => {
                self.p.push_help(
                    span,
                    format!("proxy-jump `{}`: {why}", values::shown(&j)),
                    "invalid proxy-jump",
                    "hops are `user@host:port`, comma-separated, as OpenSSH's ProxyJump",
                );
                None
            }
        });
        Ssh { user, port: e.prop_port("port", &mut self.p), host_key, identity, proxy_jump }
    }

    fn address(&mut self, e: &Entries, what: &str) -> Option<String> {
        let (a, span) = e.required_prop_str("address", what, &mut self.p)?;
        if !is_host(&a) {
            self.p.push_help(
                span,
                format!("`{}` is not an IP address or host name", values::shown(&a)),
                "invalid address",
                "an IPv4 or IPv6 address, or a host name: ASCII letters, digits and `-`, labels separated by `.` (no port: use `ssh port=`)",
            );
            return None;
        }
        Some(a)
    }

    /// Each hop of a ProxyJump: a valid user (if given) and host.
    fn proxy_jump(&self, j: &str) -> Result<(), JumpError> {
        let hops = crate::transport::ssh_config::parse_proxy_jump(j)?;
        if hops.is_empty() {
            return Err(JumpError::NoHop);
        }
        for h in hops {
            if let Some(u) = &h.user {
                values::ssh_user(u).map_err(|allowed| JumpError::User { user: u.clone(), allowed })?;
            }
            if !is_host(&h.host) {
                return Err(JumpError::Host(h.host));
            }
        }
        Ok(())
    }

    /// The entry's one argument as an RFC 1123 name of at most 63 characters; otherwise a
    /// located problem saying `message` (given the name as shown) with `help`.
    fn name_arg(&mut self, e: &Entries, message: impl Fn(&str) -> String, help: &str) -> Option<String> {
        e.arg_str(0, "the name", &mut self.p).and_then(|(n, span)| {
            if RFC1123.is_match(&n) && n.len() <= 63 {
                Some(n)
            } else {
                self.p.push_help(span, message(&values::shown(&n)), "invalid name", help);
                None
            }
        })
    }

    fn registry(&mut self, node: &KdlNode) -> Option<Registry> {
        let e = Entries::new(node, &["address", "port", "external"], &mut self.p);
        e.expect_args(1, 1, "a name", &mut self.p);
        let name = self.name_arg(
            &e,
            |n| format!("registry name `{n}` is not a valid name"),
            "lowercase letters, digits, `-` and `.`, at most 63 characters (it names the registry host in --on and in output)",
        );
        let address = self.address(&e, "where the nodes reach the registry");
        let port = e.prop_port("port", &mut self.p).unwrap_or(5000);
        let external = e.prop_bool("external", &mut self.p).unwrap_or(false);
        let mut reg = Registry {
            name: name.clone().unwrap_or_default(),
            address: address.clone().unwrap_or_default(),
            port,
            external,
            ssh: Ssh::default(),
            tls: Tls::default(),
            auth: None,
            storage: "/var/lib/rvcluster/registry".to_string(),
            mirrors: Vec::new(),
            binary: None,
            span: node.span(),
        };
        let allowed = ["ssh", "tls", "auth", "mirror", "storage", "binary"];
        for c in children(node, &allowed, &mut self.p) {
            if external && let Some(why) = external_refuses(c.name().value()) {
                self.p.push_help(
                    c.name().span(),
                    format!("`{}` has no place in an external registry", c.name().value()),
                    "not with external=#true",
                    why,
                );
                continue;
            }
            match c.name().value() {
                "ssh" => reg.ssh = self.ssh(c),
                "binary" => reg.binary = self.binary(c, false),
                "storage" => {
                    let e = Entries::new(c, &[], &mut self.p);
                    if e.expect_args(1, 1, "an absolute directory", &mut self.p)
                        && let Some((s, span)) = e.arg_str(0, "the directory", &mut self.p)
                    {
                        if let Err(why) = values::host_path(&s) {
                            self.p.push(span, format!("storage `{}`: {why}", values::shown(&s)), "invalid path");
                        } else if s.starts_with('/') {
                            reg.storage = s;
                        } else {
                            self.p.push(span, "storage must be an absolute path on the registry host", "expected /...");
                        }
                    }
                }
                "tls" => {
                    let e = Entries::new(c, &["ca", "cert", "key"], &mut self.p);
                    no_children(c, &mut self.p);
                    if e.expect_args(1, 1, "#true or #false", &mut self.p) {
                        match e.args[0].value() {
                            kdl::KdlValue::Bool(b) => reg.tls.enabled = *b,
                            v => self.p.push_help(
                                e.args[0].span(),
                                format!("`tls` must be #true or #false, found {}", type_name(v)),
                                "expected a boolean",
                                "KDL v2 booleans are written #true and #false",
                            ),
                        }
                    }
                    for k in ["ca", "cert", "key"] {
                        if let Some((path, span)) = e.prop_str(k, &mut self.p) {
                            let f = self.existing_file(&path, span, "TLS file");
                            match k {
                                "ca" => reg.tls.ca = f,
                                "cert" => reg.tls.cert = f,
                                _ => reg.tls.key = f,
                            }
                        }
                    }
                    if reg.tls.cert.is_some() != reg.tls.key.is_some() {
                        self.p.push(c.span(), "`cert=` and `key=` go together", "give both or neither");
                    }
                    if external {
                        for k in ["cert", "key"] {
                            if let Some(entry) = e.prop(k) {
                                self.p.push_help(
                                    entry.span(),
                                    format!("`{k}=` has no place in an external registry"),
                                    "not with external=#true",
                                    "an external registry serves its own certificate: give only ca=\"PATH\" (the CA that \
                                     signed it), or nothing to trust the system's CAs",
                                );
                            }
                        }
                        reg.tls.cert = None;
                        reg.tls.key = None;
                    }
                }
                "auth" => reg.auth = self.auth(c),
                _ => reg.mirrors.extend(self.mirror(c, &reg)),
            }
        }
        let mut seen_mirror: Vec<&str> = Vec::new();
        for m in &reg.mirrors {
            if seen_mirror.contains(&m.registry.as_str()) {
                self.p.push(m.span, format!("mirror `{}` is given twice", m.registry), "duplicate mirror");
            }
            seen_mirror.push(&m.registry);
        }
        name?;
        address?;
        Some(reg)
    }

    fn auth(&mut self, c: &KdlNode) -> Option<Auth> {
        let e = Entries::new(c, &["user", "password-file", "password-env", "password"], &mut self.p);
        no_children(c, &mut self.p);
        if let Some(pw) = e.prop("password") {
            self.p.redact(value_span(pw));
            self.p.push_help(
                pw.span(),
                "the registry password must not be written in cluster.kdl",
                "secret given inline",
                "use password-file=\"secrets/registry.pass\" (mode 0600) or password-env=\"VAR\"",
            );
            return None;
        }
        let user = e.required_prop_str("user", "the registry user name", &mut self.p).and_then(|(u, span)| {
            match values::htpasswd_user(&u) {
                Ok(()) => Some((u, span)),
                Err(allowed) => {
                    self.p.push_help(span, format!("`{}` cannot be a registry user", values::shown(&u)), "invalid user", allowed.to_string());
                    None
                }
            }
        });
        let file = e.prop_str("password-file", &mut self.p);
        let env = e.prop_str("password-env", &mut self.p).and_then(|(v, span)| match values::env_name(&v) {
            Ok(()) => Some((v, span)),
            Err(allowed) => {
                self.p.push_help(span, format!("`{}` is not an environment variable name", values::shown(&v)), "invalid name", allowed.to_string());
                None
            }
        });
        let password = match (file, env) {
            (Some((f, span)), None) => Secret::File(self.existing_file(&f, span, "password file")?),
            (None, Some((v, _))) => Secret::Env(v),
            (Some(_), Some((_, span))) => {
                self.p.push(span, "give `password-file=` or `password-env=`, not both", "second password source");
                return None;
            }
            (None, None) if e.prop("password-file").is_some() || e.prop("password-env").is_some() => return None,
            (None, None) => {
                self.p.push(c.name().span(), "`auth` needs `password-file=` or `password-env=`", "no password source");
                return None;
            }
        };
        Some(Auth { user: user?.0, password, span: c.span() })
    }

    fn mirror(&mut self, c: &KdlNode, _reg: &Registry) -> Option<Mirror> {
        let e = Entries::new(c, &[], &mut self.p);
        if !e.expect_args(1, 1, "the registry it mirrors, e.g. \"docker.io\"", &mut self.p) {
            return None;
        }
        let (registry, span) = e.arg_str(0, "the registry", &mut self.p)?;
        if registry != "*" && ImageRef::parse(&format!("{registry}/x/y")).map(|r| r.registry != registry).unwrap_or(true)
        {
            self.p.push(span, format!("`{registry}` is not a registry host"), "expected e.g. docker.io, quay.io or \"*\"");
        }
        let mut m = Mirror { registry, extra_endpoints: Vec::new(), rewrites: Vec::new(), span: c.span() };
        for ch in children(c, &["rewrite", "endpoint"], &mut self.p) {
            let e = Entries::new(ch, &[], &mut self.p);
            no_children(ch, &mut self.p);
            if ch.name().value() == "endpoint" {
                for (u, span) in e.arg_strs("an endpoint URL", &mut self.p) {
                    if u.starts_with("http://") || u.starts_with("https://") {
                        match values::url(&u) {
                            Ok(()) => m.extra_endpoints.push(u),
                            Err(why) => self.p.push(span, format!("endpoint `{}` is not a URL: {why}", values::shown(&u)), "invalid URL"),
                        }
                    } else {
                        self.p.push_help(
                            span,
                            format!("endpoint `{u}` has no scheme"),
                            "expected http:// or https://",
                            "k3s treats a scheme-less endpoint as https (except loopback); say which you mean",
                        );
                    }
                }
                continue;
            }
            if !e.expect_args(2, 2, "a pattern and a replacement", &mut self.p) {
                continue;
            }
            let (Some((pat, pspan)), Some((rep, rspan))) =
                (e.arg_str(0, "the pattern", &mut self.p), e.arg_str(1, "the replacement", &mut self.p))
            else {
                continue;
            };
            match Regex::new(&pat) {
                Err(err) => {
                    let msg = err.to_string();
                    let last = msg.lines().last().unwrap_or("").trim().trim_start_matches("error: ").to_string();
                    self.p.push(pspan, format!("rewrite pattern does not compile: {last}"), "invalid RE2 regexp");
                    continue;
                }
                Ok(re) => {
                    let groups = re.captures_len() - 1;
                    if let Some(n) = max_group_ref(&rep)
                        && n > groups
                    {
                        self.p.push(
                            rspan,
                            format!("replacement uses ${n} but the pattern has {groups} group{}", if groups == 1 { "" } else { "s" }),
                            "no such group",
                        );
                    }
                    for prev in &m.rewrites {
                        if patterns_overlap(&prev.pattern, &pat) {
                            self.p.push_help(
                                pspan,
                                format!("rewrite `{pat}` overlaps `{}`", prev.pattern),
                                "overlapping pattern",
                                "k3s applies rewrites in unspecified order: make the patterns disjoint",
                            );
                        }
                    }
                }
            }
            m.rewrites.push(Rewrite { pattern: pat, replacement: rep, span: ch.span() });
        }
        Some(m)
    }

    fn node(&mut self, node: &KdlNode) -> Option<Node> {
        let e = Entries::new(node, &["address", "role", "profile"], &mut self.p);
        e.expect_args(1, 1, "a node name", &mut self.p);
        let name = self.name_arg(
            &e,
            |n| format!("node name `{n}` is not a valid Kubernetes node name"),
            "lowercase letters, digits, `-` and `.`, at most 63 characters",
        );
        let address = self.address(&e, "the board's IP or host name");
        let role = match e.required_prop_str("role", "\"server\" or \"agent\"", &mut self.p) {
            Some((r, _)) if r == "server" => Some(Role::Server),
            Some((r, _)) if r == "agent" => Some(Role::Agent),
            Some((r, span)) => {
                self.p.push(span, format!("role `{r}` is not a k3s role"), "expected \"server\" or \"agent\"");
                None
            }
            None => None,
        };
        let profile = e.prop_str("profile", &mut self.p).and_then(|(pr, span)| {
            if self.profiles.os(&pr).is_none() {
                let names: Vec<&str> = self.profiles.os.iter().map(|o| o.name.as_str()).collect();
                let hint = super::diag::did_you_mean(&pr, &names).map(|h| format!("{h} ")).unwrap_or_default();
                self.p.push_help(
                    span,
                    format!("unknown OS profile `{pr}`"),
                    "unknown profile",
                    format!("{hint}(known: {}; or leave `profile` out to detect it)", names.join(", ")),
                );
                None
            } else {
                Some(Spanned { value: pr, span })
            }
        });
        let mut ssh = Ssh::default();
        let mut tags = Vec::new();
        let mut config = Vec::new();
        for c in children(node, &["ssh", "tags", "config"], &mut self.p) {
            match c.name().value() {
                "ssh" => ssh = self.ssh(c),
                "tags" => {
                    let e = Entries::new(c, &[], &mut self.p);
                    for (t, span) in e.arg_strs("a tag", &mut self.p) {
                        match values::tag(&t) {
                            Ok(()) => tags.push(t),
                            Err(allowed) => self.p.push_help(span, format!("tag `{}` cannot be used in --on filters", values::shown(&t)), "invalid tag", allowed.to_string()),
                        }
                    }
                }
                _ => config.extend(self.config(c)),
            }
        }
        Some(Node { name: name?, address: address?, role: role?, profile, ssh, tags, config, span: node.span() })
    }

    fn image(&mut self, node: &KdlNode) -> Option<(Image, Option<SourceSpan>)> {
        let e = Entries::new(node, &["from", "deliver"], &mut self.p);
        let builds = children(node, &["build"], &mut self.p);
        e.expect_args(1, 1, "the image reference pods ask for", &mut self.p);
        let reference = e.arg_str(0, "the reference", &mut self.p).and_then(|(r, span)| match ImageRef::parse(&r) {
            Ok(r) => Some(r),
            Err(err) => {
                self.p.push(span, format!("invalid image reference `{r}`: {err}"), "not a Docker reference");
                None
            }
        });
        let deliver = match e.prop_str("deliver", &mut self.p) {
            Some((d, span)) if d == "registry" => Some((Deliver::Registry, span)),
            Some((d, span)) if d == "tarball" => Some((Deliver::Tarball, span)),
            Some((d, span)) => {
                self.p.push_help(
                    span,
                    format!("unknown delivery `{d}`"),
                    "expected \"registry\" or \"tarball\"",
                    "registry: pushed to the registry block's registry; tarball: an image tarball on every node (k3s air-gap import)",
                );
                return None;
            }
            None => None,
        };
        if let Some(b) = builds.first() {
            // A built image: `image "REF" { build { ... } }` (src/spec/build.rs).
            for extra in builds.iter().skip(1) {
                self.p.push(extra.name().span(), "`build` is given twice", "second one");
            }
            if let Some(f) = e.prop("from") {
                self.p.push_help(f.span(), "an image is either imported (from=) or built (build block), not both", "from= and build", "remove from= to build it, or the build block to import it");
                return None;
            }
            if let Some(r) = &reference
                && r.digest.is_some()
            {
                self.p.push_help(
                    e.args[0].span(),
                    format!("a built image cannot be named by digest (`{r}`)"),
                    "named by digest",
                    "name it by tag: its digest is whatever the build gives (cluster.lock records it)",
                );
                return None;
            }
            let build = super::build::decode(b, &self.base, &mut self.p)?;
            let image = Image { reference: reference?, source: ImageSource::Build(Box::new(build)), deliver: deliver.map(|d| d.0).unwrap_or(Deliver::Tarball), span: node.span() };
            return Some((image, deliver.map(|d| d.1)));
        }
        let (from, span) = e.required_prop_str(
            "from",
            "where the riscv64 image comes from: oci-archive:, oci:, docker-archive: or docker://, or a `build` block",
            &mut self.p,
        )?;
        let source = if let Some(p) = from.strip_prefix("oci-archive:") {
            ImageSource::OciArchive(self.existing_file(p, span, "image archive")?)
        } else if let Some(p) = from.strip_prefix("oci:") {
            let abs = self.base.join(p);
            if !abs.join("index.json").is_file() {
                self.p.push(span, format!("`{}` is not an OCI layout directory (no index.json)", abs.display()), "not found");
                return None;
            }
            ImageSource::OciDir(abs)
        } else if let Some(p) = from.strip_prefix("docker-archive:") {
            ImageSource::DockerArchive(self.existing_file(p, span, "image archive")?)
        } else if let Some(r) = from.strip_prefix("docker://") {
            match ImageRef::parse(r) {
                Ok(r) => ImageSource::Docker(r),
                Err(err) => {
                    self.p.push(span, format!("invalid source reference `{r}`: {err}"), "not a Docker reference");
                    return None;
                }
            }
        } else {
            self.p.push(span, format!("unknown image source `{from}`"), "expected oci-archive:, oci:, docker-archive: or docker://");
            return None;
        };
        self.local_image(&from, span, &source)?;
        // Without an explicit `deliver=` the document decides (registry block or not).
        let image = Image {
            reference: reference?,
            source,
            deliver: deliver.map(|d| d.0).unwrap_or(Deliver::Tarball),
            span: node.span(),
        };
        Some((image, deliver.map(|d| d.1)))
    }

    /// A local image source (archive or layout directory) is read now: it must hold a
    /// linux/riscv64 image. Only the index, manifests and configs are read, never the layers.
    /// `docker://` sources are remote and are checked by plan and apply.
    fn local_image(&mut self, from: &str, span: SourceSpan, source: &ImageSource) -> Option<()> {
        use crate::registry::RegistryError;
        use crate::registry::source::{self, RemoteSources, Source};
        let src = match source {
            ImageSource::OciArchive(p) => Source::OciArchive(p.clone()),
            ImageSource::OciDir(p) => Source::OciDir(p.clone()),
            ImageSource::DockerArchive(p) => Source::DockerArchive(p.clone()),
            ImageSource::Docker(_) | ImageSource::Build(_) => return Some(()),
        };
        match source::load(&src, &RemoteSources::default()) {
            Ok(_) => Some(()),
            Err(RegistryError::NoRiscv64 { platforms, .. }) => {
                let has = if platforms.is_empty() { "no platform information".to_string() } else { platforms.join(", ") };
                self.p.push_help(
                    span,
                    format!("`{from}` has no linux/riscv64 image; it has: {has}"),
                    "no linux/riscv64 inside",
                    "the boards can only run linux/riscv64 images: build or port one (e.g. docker buildx build \
                     --platform linux/riscv64 --output type=oci,dest=FILE.tar) and point `from` at it",
                );
                None
            }
            Err(RegistryError::BadSource { reason, .. }) => {
                self.p.push(span, format!("`{from}` cannot be read as an image: {reason}"), "not a usable image");
                None
            }
            Err(e) => {
                self.p.push(span, format!("`{from}` cannot be read as an image: {e}"), "not a usable image");
                None
            }
        }
    }

    fn upstream(&mut self, node: &KdlNode) -> Option<Upstream> {
        let e = Entries::new(node, &["endpoint"], &mut self.p);
        no_children(node, &mut self.p);
        e.expect_args(1, 1, "the registry name, e.g. \"docker.io\"", &mut self.p);
        let (registry, _) = e.arg_str(0, "the registry", &mut self.p)?;
        let (endpoint, span) = e.required_prop_str("endpoint", "an http:// or https:// URL", &mut self.p)?;
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            self.p.push(span, format!("`{endpoint}` is not an http(s) URL"), "expected http:// or https://");
            return None;
        }
        if let Err(why) = values::url(&endpoint) {
            self.p.push(span, format!("`{}` is not a URL: {why}", values::shown(&endpoint)), "invalid URL");
            return None;
        }
        Some(Upstream { registry, endpoint, span: node.span() })
    }

    fn existing_file(&mut self, rel: &str, span: SourceSpan, what: &str) -> Option<PathBuf> {
        let abs = expand_home(rel, &self.base);
        if abs.is_file() {
            Some(abs)
        } else {
            self.p.push_help(
                span,
                format!("{what} `{rel}` does not exist"),
                "file not found",
                format!("looked for {} (paths are relative to the cluster file)", abs.display()),
            );
            None
        }
    }

    /// `declared` counts every `node` in the file, rejected ones included (those already have a
    /// problem of their own: no "no server" or "no node" on top).
    fn cross_checks(&mut self, nodes: &[Node], declared: usize, images: &[Image], registry: Option<&Registry>) {
        let mut names: BTreeMap<&str, SourceSpan> = BTreeMap::new();
        let mut addrs: BTreeMap<(&str, u16), &str> = BTreeMap::new();
        for n in nodes {
            if names.insert(&n.name, n.span).is_some() {
                self.p.push(n.span, format!("node `{}` is declared twice", n.name), "duplicate name");
            }
            let port = n.ssh.port.unwrap_or(22);
            if let Some(other) = addrs.insert((&n.address, port), &n.name) {
                self.p.push(n.span, format!("node `{}` has the same address as `{other}` ({})", n.name, n.address), "duplicate address");
            }
        }
        let servers = nodes.iter().filter(|n| n.role == Role::Server).count();
        if servers == 0 && !nodes.is_empty() && declared == nodes.len() {
            self.p.push_help(
                nodes[0].span,
                "no node has role=\"server\"",
                "no server",
                "a k3s cluster needs one server node",
            );
        } else if declared == 0 {
            self.p.push_help((0, 0).into(), "no `node` is declared", "no nodes", "add: node \"NAME\" address=\"IP\" role=\"server\"");
        }
        if servers > 1 {
            for n in nodes.iter().filter(|n| n.role == Role::Server).skip(1) {
                self.p.push_help(
                    n.span,
                    format!("node `{}` is a second server", n.name),
                    "second server",
                    "rvcluster supports one server (embedded etcd HA is not supported yet)",
                );
            }
        }
        let mut seen: BTreeMap<String, SourceSpan> = BTreeMap::new();
        for i in images {
            if seen.insert(i.reference.to_string(), i.span).is_some() {
                self.p.push(i.span, format!("image `{}` is declared twice", i.reference), "duplicate image");
            }
        }
        if let Some(r) = registry
            && images.iter().any(|i| !matches!(i.source, ImageSource::Docker(_)))
            && r.address.is_empty()
        {
            self.p.push(r.span, "the registry needs an address", "no address");
        }
    }

    /// Each image's delivery: as written, else to the registry when there is one, else as a
    /// tarball. `deliver="registry"` without a registry block is a problem at that value.
    fn deliveries(&mut self, images: Vec<(Image, Option<SourceSpan>)>, registry: Option<&Registry>) -> Vec<Image> {
        images
            .into_iter()
            .map(|(mut i, explicit)| {
                match explicit {
                    None => i.deliver = if registry.is_some() { Deliver::Registry } else { Deliver::Tarball },
                    Some(span) if i.deliver == Deliver::Registry && registry.is_none() => self.p.push_help(
                        span,
                        "`deliver=\"registry\"` needs a `registry` block to push to",
                        "no registry",
                        "add: registry \"NAME\" address=\"IP\" port=5000 { mirror \"docker.io\" }, or leave deliver= out: \
                         without a registry every image is delivered as a tarball to each node",
                    ),
                    Some(_) => {}
                }
                i
            })
            .collect()
    }
}

/// Why a child of `registry` is refused when the registry is external (None: allowed).
fn external_refuses(child: &str) -> Option<&'static str> {
    match child {
        "ssh" => Some(
            "rvcluster never connects to an external registry over SSH; remove `ssh`, or drop external=#true to have \
             rvcluster deploy the registry on that host",
        ),
        "storage" => Some("an external registry keeps its blobs where its owner configured it; remove `storage`"),
        "binary" => Some("rvcluster deploys no binary on an external registry; remove `binary`"),
        _ => None,
    }
}

/// The span of a property's value (after `=`), for redaction.
fn value_span(e: &kdl::KdlEntry) -> SourceSpan {
    let len = e.span().len();
    let name_len = e.name().map(|n| n.value().len() + 1).unwrap_or(0).min(len);
    (e.span().offset() + name_len, len - name_len).into()
}

/// An IP address, or a host name (ASCII letters, digits, `-`, dot-separated labels).
fn is_host(a: &str) -> bool {
    a.parse::<std::net::IpAddr>().is_ok() || (HOSTNAME.is_match(a) && a.len() <= 253)
}

pub(super) fn expand_home(p: &str, base: &Path) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    base.join(p)
}

/// Highest `$N` / `${N}` group referenced by a Go-style replacement.
fn max_group_ref(rep: &str) -> Option<usize> {
    static R: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\$\{?([0-9]+)\}?").unwrap());
    R.captures_iter(rep).filter_map(|c| c[1].parse().ok()).max()
}

/// Could two rewrite patterns both match one repository? Probes each pattern with strings built
/// from the literal prefixes of both; a probe both match is an overlap. (A heuristic: exact regex
/// intersection is not decidable cheaply, but this catches the real mistakes: same or nested prefixes.)
pub fn patterns_overlap(a: &str, b: &str) -> bool {
    let (Ok(ra), Ok(rb)) = (Regex::new(a), Regex::new(b)) else { return false };
    let la = literal_prefix(a);
    let lb = literal_prefix(b);
    let probes = [
        format!("{la}x"),
        format!("{lb}x"),
        format!("{la}{lb}x"),
        format!("{lb}{la}x"),
        format!("{la}x/y"),
        format!("{lb}x/y"),
        la.clone(),
        lb.clone(),
    ];
    probes.iter().any(|s| ra.is_match(s) && rb.is_match(s))
}

fn literal_prefix(p: &str) -> String {
    let p = p.strip_prefix('^').unwrap_or(p);
    let mut out = String::new();
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) if !n.is_alphanumeric() => out.push(n),
                _ => break,
            },
            '.' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' | '$' | '^' => break,
            c => out.push(c),
        }
    }
    out
}

/// Why a `proxy-jump` value is refused (the text of the located problem).
#[derive(Debug, thiserror::Error)]
enum JumpError {
    #[error(transparent)]
    Syntax(#[from] crate::transport::ssh_config::ProxyJumpError),
    #[error("no hop")]
    NoHop,
    #[error("user `{}`: {allowed}", values::shown(.user))]
    User { user: String, allowed: values::ValueError },
    #[error("`{}` is not an IP address or host name", values::shown(.0))]
    Host(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_detection() {
        assert!(patterns_overlap("^rancher/(.*)", "^rancher/mirrored-(.*)"));
        assert!(patterns_overlap("^rancher/(.*)", "^rancher/(.*)"));
        assert!(!patterns_overlap("^rancher/(.*)", "^library/(.*)"));
        assert!(patterns_overlap("(.*)", "^library/(.*)"));
    }

    #[test]
    fn group_refs() {
        assert_eq!(max_group_ref("riscv64/$1"), Some(1));
        assert_eq!(max_group_ref("a/${2}b"), Some(2));
        assert_eq!(max_group_ref("plain"), None);
    }
}

