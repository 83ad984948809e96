//! Converge: compare each host's rendered desired state with its facts and run the difference.
//! Plan and apply are one code path: every step is computed the same way and only executed when
//! `wet` (k0sctl's dry/wet phases), so they cannot disagree. Servers converge before agents (an
//! agent needs the server's token).
//! Owns the order of operations on a host; must not build shell strings by hand except through
//! `transport::cmd::quote`, and never prints a secret.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::profile::{OsProfile, Profiles};
use crate::render::{self, Content, HostState, Secrets};
use crate::spec::{Cluster, Node, Role};
use crate::transport::cmd::quote;
use crate::transport::{FactsQuery, FileFact, Host, HostKeyPolicy, RemoteFile, SshConfig, SshHost, TargetSpec};

/// Where rvcluster keeps its own bookkeeping on a host.
pub const STATE_DIR: &str = "/var/lib/rvcluster";
pub const LOCK_DIR: &str = "/var/lib/rvcluster/apply.lock";

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Change {
    CreateFile { path: String, mode: String, detail: String },
    UpdateFile { path: String, mode: String, diff: String },
    FixMode { path: String, from: String, to: String },
    Symlink { path: String, target: String },
    Step { name: String },
    DaemonReload,
    Enable { unit: String },
    Start { unit: String },
    Restart { unit: String, because: Vec<String> },
    /// A file rvcluster wrote on an earlier apply that cluster.kdl no longer asks for.
    RemoveFile { path: String },
    /// A fresh agent whose old node object must go before it can rejoin (k3s-facts: re-joining).
    ForgetNode { node: String },
}

impl Change {
    pub fn describe(&self) -> String {
        match self {
            Change::CreateFile { path, mode, detail } => format!("+ create {path} ({mode}) {detail}"),
            Change::UpdateFile { path, mode, diff } => format!("~ update {path} ({mode})\n{diff}"),
            Change::FixMode { path, from, to } => format!("~ mode {path} {from} -> {to}"),
            Change::Symlink { path, target } => format!("+ link {path} -> {target}"),
            Change::Step { name } => format!("+ step: {name}"),
            Change::DaemonReload => "~ systemctl daemon-reload".into(),
            Change::Enable { unit } => format!("+ enable {unit}"),
            Change::Start { unit } => format!("+ start {unit}"),
            Change::Restart { unit, because } => format!("~ restart {unit} (changed: {})", because.join(", ")),
            Change::RemoveFile { path } => format!("- remove {path} (managed by rvcluster, no longer wanted)"),
            Change::ForgetNode { node } => {
                format!("- delete node {node} and its node-password secret on the server (re-flashed board rejoins)")
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HostPlan {
    pub node: String,
    pub address: String,
    pub role: &'static str,
    pub changes: Vec<Change>,
    /// Why this host could not be planned or applied.
    pub error: Option<String>,
}

pub struct Options {
    pub wet: bool,
    pub accept_new: bool,
    pub parallel: usize,
    /// Progress events (one line per host), drawn by `transport::render_progress`.
    pub events: Option<std::sync::mpsc::Sender<crate::transport::Event>>,
    /// Air-gap image tarballs every node gets (built beforehand by `images::tarballs`).
    pub tarballs: Vec<render::airgap::Tarball>,
}

impl Options {
    fn event(&self, host: &str, kind: crate::transport::EventKind) {
        if let Some(tx) = &self.events {
            let _ = tx.send(crate::transport::Event { host: host.to_string(), kind });
        }
    }
}

/// How to reach a node: the spec's ssh settings over ~/.ssh/config, host keys beside cluster.kdl.
pub fn connect(c: &Cluster, node: &Node, accept_new: bool) -> Result<SshHost, String> {
    connect_to(c, &node.name, &node.address, &node.ssh, accept_new)
}

/// The target for a host named in cluster.kdl (a node or the registry host).
pub fn target_spec(name: &str, address: &str, ssh: &crate::spec::Ssh) -> TargetSpec {
    let mut spec = TargetSpec::new(name.to_string(), address.to_string());
    spec.port = ssh.port;
    spec.user = ssh.user.clone();
    spec.host_key = ssh.host_key.clone();
    spec.proxy_jump = ssh.proxy_jump.clone();
    spec.identity_files = ssh.identity.iter().cloned().collect();
    spec
}

static BECOME_PASSWORD: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The sudo password for non-root logins (`--ask-become-pass`), kept in memory only.
pub fn set_become_password(pw: String) {
    let _ = BECOME_PASSWORD.set(pw);
}

pub fn connect_to(c: &Cluster, name: &str, address: &str, ssh: &crate::spec::Ssh, accept_new: bool) -> Result<SshHost, String> {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    let config = SshConfig::load_user_default().unwrap_or_else(|_| SshConfig::parse(""));
    let spec = target_spec(name, address, ssh);
    let target = spec.resolve(&config, &home).map_err(|e| e.to_string())?;
    let mut policy = HostKeyPolicy::new(Some(known_hosts_path(c)));
    policy.accept_new = accept_new;
    let mut host = SshHost::connect(&target, &policy).map_err(|e| e.to_string())?;
    if let Some(key) = host.accepted_new_key() {
        eprintln!("{name} ({address}): recorded new host key {key} in {}", known_hosts_path(c).display());
    }
    if let Some(pw) = BECOME_PASSWORD.get() {
        host.set_become_password(pw).map_err(|e| e.to_string())?;
    }
    Ok(host)
}

pub fn known_hosts_path(c: &Cluster) -> PathBuf {
    c.base_dir.join("known_hosts")
}

fn mode_str(m: u32) -> String {
    format!("{m:04o}")
}

/// Plan (dry) or apply (wet) one host whose desired state is `st`.
pub fn converge_host(
    host: &mut dyn Host,
    st: &HostState,
    role: Role,
    wet: bool,
    server: Option<&mut dyn Host>,
) -> Result<Vec<Change>, String> {
    let e = |x: crate::transport::TransportError| x.to_string();
    let unit_file = format!("{}.service", st.service.unit);
    let mut paths: Vec<String> = st.files.iter().map(|f| f.path.clone()).collect();
    paths.extend(st.symlinks.iter().map(|s| s.path.clone()));
    paths.push("/etc/rancher/node/password".into());
    let q = FactsQuery { paths, services: vec![unit_file.clone()], ..FactsQuery::default() };
    let facts = host.facts(&q).map_err(e)?;
    if wet {
        let lock = format!(
            "mkdir -p {state} && mkdir {lock} 2>/dev/null && echo \"$$ $(date -u +%FT%TZ)\" > {lock}/owner",
            state = quote(STATE_DIR),
            lock = quote(LOCK_DIR)
        );
        let out = host.exec(&lock, None, None).map_err(e)?;
        if !out.success() {
            let who = host
                .exec(&format!("cat {}/owner 2>/dev/null", quote(LOCK_DIR)), None, None)
                .map(|o| o.stdout_str().trim().to_string())
                .unwrap_or_default();
            return Err(format!(
                "another rvcluster apply holds the lock {LOCK_DIR} on this host (pid and start: {who}); \
                 wait for it, or remove the directory if that apply is dead"
            ));
        }
    }
    let result = converge_locked(host, st, role, wet, server, &facts, &unit_file);
    if wet {
        let _ = host.exec(&format!("rm -rf {}", quote(LOCK_DIR)), None, None);
    }
    result
}

fn converge_locked(
    host: &mut dyn Host,
    st: &HostState,
    role: Role,
    wet: bool,
    server: Option<&mut dyn Host>,
    facts: &crate::transport::Facts,
    unit_file: &str,
) -> Result<Vec<Change>, String> {
    let e = |x: crate::transport::TransportError| x.to_string();
    let mut changes = Vec::new();
    let mut restart_because = Vec::new();
    let mut unit_changed = false;
    // The installed binary is the pinned one but reports another release: the addon images the
    // closure check used (profiles/k3s/<version>.kdl) would be the wrong ones.
    if let (Some(want), Some(got)) = (&st.k3s_version, &facts.k3s_version) {
        let bin = st.files.iter().find(|f| f.path.ends_with("/k3s") && matches!(f.content, Content::Local { .. }));
        let same_binary = bin.is_some_and(|b| {
            matches!(facts.files.get(&b.path), Some(FileFact::Present { sha256: Some(h), .. }) if *h == b.sha256())
        });
        if same_binary && !got.split_whitespace().any(|w| w == want) {
            return Err(format!(
                "the pinned k3s binary reports `{got}` but cluster.kdl says version=\"{want}\"; set version= to what the binary is (its system images come from profiles/k3s/<version>.kdl)"
            ));
        }
    }
    let fresh = matches!(facts.files.get(&st.service.unit_path), None | Some(FileFact::Absent));
    // A re-flashed agent: its node password is gone, the server still holds the old one.
    if role == Role::Agent && fresh && matches!(facts.files.get("/etc/rancher/node/password"), None | Some(FileFact::Absent))
        && let Some(server) = server {
            let probe = format!(
                "/usr/local/bin/k3s kubectl get node {n} -o name 2>/dev/null || \
                 /usr/local/bin/k3s kubectl -n kube-system get secret {s} -o name 2>/dev/null",
                n = quote(&st.node),
                s = quote(&format!("{}.node-password.k3s", st.node))
            );
            let known = server.exec(&probe, None, None).map(|o| !o.stdout_str().trim().is_empty()).unwrap_or(false);
            if known {
                changes.push(Change::ForgetNode { node: st.node.clone() });
                if wet {
                    let del = format!(
                        "/usr/local/bin/k3s kubectl delete node {n} --ignore-not-found && \
                         /usr/local/bin/k3s kubectl -n kube-system delete secret {s} --ignore-not-found",
                        n = quote(&st.node),
                        s = quote(&format!("{}.node-password.k3s", st.node))
                    );
                    server.exec_ok("forgetting the re-flashed node", &del, None, None).map_err(e)?;
                }
            }
        }
    for f in &st.files {
        let want_sha = f.sha256();
        let want_owner = f.owner.split(':').next().unwrap_or("root");
        let change = match facts.files.get(&f.path) {
            None | Some(FileFact::Absent) => Some(Change::CreateFile {
                path: f.path.clone(),
                mode: mode_str(f.mode),
                detail: match &f.content {
                    Content::Local { path, sha256 } => {
                        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                        format!("{size} bytes, sha256:{}", &sha256[..16])
                    }
                    Content::Text(t) if f.secret => format!("{} lines, content hidden (secret)", t.lines().count()),
                    Content::Text(t) => format!("{} lines", t.lines().count()),
                },
            }),
            Some(FileFact::Present { sha256, mode, owner, .. }) => {
                if sha256.as_deref() != Some(want_sha.as_str()) {
                    let diff = match &f.content {
                        Content::Text(_) if f.secret => "    (content hidden: holds a secret)".to_string(),
                        Content::Text(t) => {
                            let old = host
                                .exec(&format!("cat {}", quote(&f.path)), None, None)
                                .map(|o| o.stdout_str())
                                .unwrap_or_default();
                            unified_diff(&old, t, &f.path)
                        }
                        Content::Local { sha256: new, .. } => format!(
                            "    sha256:{} -> sha256:{}",
                            sha256.as_deref().map(|s| &s[..16.min(s.len())]).unwrap_or("?"),
                            &new[..16]
                        ),
                    };
                    Some(Change::UpdateFile { path: f.path.clone(), mode: mode_str(f.mode), diff })
                } else if *mode != f.mode || owner != want_owner {
                    Some(Change::FixMode { path: f.path.clone(), from: mode_str(*mode), to: mode_str(f.mode) })
                } else {
                    None
                }
            }
        };
        let Some(change) = change else { continue };
        let content_changed = !matches!(change, Change::FixMode { .. });
        if content_changed {
            if let Some(u) = &f.restarts
                && *u == st.service.unit {
                    restart_because.push(f.path.clone());
                }
            if f.path == st.service.unit_path {
                unit_changed = true;
            }
        }
        changes.push(change);
        if wet {
            let dest = RemoteFile::new(f.path.clone(), f.mode).owned_by(f.owner.clone());
            match &f.content {
                Content::Text(t) => host.write(t.as_bytes(), &dest).map_err(e)?,
                Content::Local { path, .. } => host.upload(path, &dest).map_err(e)?,
            };
        }
    }
    // Files an earlier apply wrote that are no longer wanted (a removed manifest, registries.yaml
    // after the registry block went away): removed, and k3s restarted if it read them.
    let record = format!("{STATE_DIR}/managed-{}.list", st.service.unit);
    let wanted: Vec<&str> = st.files.iter().map(|f| f.path.as_str()).chain(st.symlinks.iter().map(|l| l.path.as_str())).collect();
    let previous = host.exec(&format!("cat {} 2>/dev/null", quote(&record)), None, None).map(|o| o.stdout_str()).unwrap_or_default();
    for old in previous.lines().map(str::trim).filter(|l| l.starts_with('/') && !wanted.contains(l)) {
        changes.push(Change::RemoveFile { path: old.to_string() });
        // Neither a removed manifest nor a removed image tarball is read again by k3s.
        if !old.starts_with(render::MANIFESTS) && !old.starts_with(render::airgap::IMAGES_DIR) {
            restart_because.push(old.to_string());
        }
        if wet {
            host.exec_ok("removing a file no longer managed", &format!("rm -f {}", quote(old)), None, None).map_err(e)?;
        }
    }
    let mut listed: Vec<&str> = wanted.clone();
    listed.sort();
    let list = listed.iter().map(|p| format!("{p}\n")).collect::<String>();
    if wet && list != previous {
        host.write(list.as_bytes(), &RemoteFile::new(record.clone(), 0o600).owned_by("root:root")).map_err(e)?;
    }
    for l in &st.symlinks {
        let ok = matches!(facts.files.get(&l.path), Some(FileFact::Present { link_target: Some(t), .. }) if *t == l.target);
        if !ok {
            changes.push(Change::Symlink { path: l.path.clone(), target: l.target.clone() });
            if wet {
                host.exec_ok("linking", &format!("ln -sfn {} {}", quote(&l.target), quote(&l.path)), None, None)
                    .map_err(e)?;
            }
        }
    }
    for m in &st.kernel_modules {
        if wet {
            // As the unit's `ExecStartPre=-/sbin/modprobe`: a module that is built in or absent is not fatal.
            let _ = host.exec(&format!("modprobe {} 2>/dev/null", quote(m)), None, Some(Duration::from_secs(30)));
        }
    }
    // A changed sysctl drop-in takes effect now, not only at the next boot (after the modules, as
    // the bridge keys exist only once br_netfilter is loaded).
    if wet {
        for c in &changes {
            if let Change::CreateFile { path, .. } | Change::UpdateFile { path, .. } = c
                && path.starts_with("/etc/sysctl.d/")
            {
                let _ = host.exec(&format!("sysctl -p {} >/dev/null 2>&1", quote(path)), None, Some(Duration::from_secs(30)));
            }
        }
    }
    for s in &st.steps {
        let when_ok = match &s.when {
            None => true,
            Some(w) => host.exec(w, None, None).map_err(e)?.success(),
        };
        if when_ok && !host.exec(&s.check, None, None).map_err(e)?.success() {
            changes.push(Change::Step { name: s.name.clone() });
            if wet {
                host.exec_ok(&s.name, &s.run, None, None).map_err(e)?;
            }
        }
    }
    let svc = facts.services.get(unit_file);
    let enabled = svc.is_some_and(|s| s.enabled == "enabled");
    let active = svc.is_some_and(|s| s.active == "active" || s.active == "activating");
    if unit_changed {
        changes.push(Change::DaemonReload);
        if wet {
            host.exec_ok("systemctl daemon-reload", "systemctl daemon-reload", None, None).map_err(e)?;
        }
    }
    if !enabled {
        changes.push(Change::Enable { unit: unit_file.to_string() });
        if wet {
            host.exec_ok("enabling k3s", &format!("systemctl enable {}", quote(unit_file)), None, None).map_err(e)?;
        }
    }
    if !active {
        changes.push(Change::Start { unit: unit_file.to_string() });
        if wet {
            // --no-block: a Type=notify k3s agent that the server rejects never signals READY, and
            // with TimeoutStartSec=0 a blocking start would wait forever; readiness is what the
            // verify step waits for, with a diagnosis.
            host.exec_ok("starting the service", &format!("systemctl start --no-block {}", quote(unit_file)), None, None).map_err(e)?;
        }
    } else if !restart_because.is_empty() {
        changes.push(Change::Restart { unit: unit_file.to_string(), because: restart_because });
        if wet {
            host.exec_ok("restarting the service", &format!("systemctl restart --no-block {}", quote(unit_file)), None, None).map_err(e)?;
        }
    }
    Ok(changes)
}

/// A unified diff of text content (for plan output).
pub fn unified_diff(old: &str, new: &str, path: &str) -> String {
    let d = similar::TextDiff::from_lines(old, new);
    let text = d.unified_diff().context_radius(2).header(&format!("a{path}"), &format!("b{path}")).to_string();
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

/// Which OS profile a node uses: the declared one (checked against the facts) or the one its facts match.
pub fn node_profile<'a>(profiles: &'a Profiles, node: &Node, facts: &crate::transport::Facts) -> Result<&'a OsProfile, String> {
    let detected = profiles.detect(&facts.os_release, &facts.arch);
    match &node.profile {
        Some(p) => {
            let os = profiles.os(&p.value).ok_or_else(|| format!("unknown profile {}", p.value))?;
            if !os.matches(&facts.os_release, &facts.arch) {
                return Err(format!(
                    "node {} declares profile `{}` but the board reports ID={} arch={} (matches: {})",
                    node.name,
                    os.name,
                    facts.os_id().unwrap_or("?"),
                    facts.arch,
                    if detected.is_empty() { "none".into() } else { detected.iter().map(|o| o.name.clone()).collect::<Vec<_>>().join(", ") }
                ));
            }
            Ok(os)
        }
        None => match detected.as_slice() {
            [one] => Ok(one),
            [] => Err(format!(
                "node {}: no OS profile matches ID={} arch={}; add one under profiles/os/ or set profile=",
                node.name,
                facts.os_id().unwrap_or("?"),
                facts.arch
            )),
            many => Err(format!(
                "node {}: several OS profiles match ({}); set profile= on the node",
                node.name,
                many.iter().map(|o| o.name.clone()).collect::<Vec<_>>().join(", ")
            )),
        },
    }
}

/// Plan or apply the registry host: deploy the registry, then (wet) wait until /v2/ answers.
pub fn converge_registry(c: &Cluster, profiles: &Profiles, opts: &Options, password: Option<&str>) -> Option<HostPlan> {
    // Only a managed registry: an external one is never reached over SSH.
    let r = c.managed_registry()?;
    Some(host_plan(&r.name, &r.address, "registry", opts, || {
        let mut host = connect_to(c, &r.name, &r.address, &r.ssh, opts.accept_new)?;
        let facts = host.facts(&FactsQuery::default()).map_err(|e| e.to_string())?;
        let detected = profiles.detect(&facts.os_release, &facts.arch);
        let os = match (detected.as_slice(), &r.binary) {
            ([one, ..], _) => *one,
            ([], Some(_)) => profiles.os("debian-host").ok_or("no fallback OS profile")?,
            ([], None) => {
                return Err(format!(
                    "registry host {}: no OS profile matches ID={} arch={}",
                    r.name,
                    facts.os_id().unwrap_or("?"),
                    facts.arch
                ));
            }
        };
        let existing = if r.auth.is_some() {
            host.exec(&format!("cat {} 2>/dev/null", quote(&render::registry::htpasswd_path())), None, None)
                .map(|o| o.stdout_str())
                .ok()
        } else {
            None
        };
        let st = render::registry::host_state(r, os, password, existing.as_deref())?;
        let changes = converge_host(&mut host, &st, Role::Server, opts.wet, None)?;
        if opts.wet {
            wait_registry_healthy(c, password)?;
        }
        Ok(changes)
    }))
}

/// Runs one host's work and turns it into its plan, with progress events around it.
fn host_plan(
    name: &str,
    address: &str,
    role: &'static str,
    opts: &Options,
    work: impl FnOnce() -> Result<Vec<Change>, String>,
) -> HostPlan {
    use crate::transport::EventKind;
    opts.event(name, EventKind::Started);
    let mut plan = HostPlan { node: name.to_string(), address: address.to_string(), role, changes: vec![], error: None };
    match work() {
        Ok(ch) => {
            let verb = if opts.wet { "made" } else { "pending" };
            opts.event(name, EventKind::Done(format!("{} change(s) {verb}", ch.len())));
            plan.changes = ch;
        }
        Err(e) => {
            opts.event(name, EventKind::Failed(e.lines().next().unwrap_or("").to_string()));
            plan.error = Some(e);
        }
    }
    plan
}

/// GET /v2/ (authenticated, trusting the registry's CA) until the registry answers.
pub fn wait_registry_healthy(c: &Cluster, password: Option<&str>) -> Result<(), String> {
    let client = crate::images::client(c, password)?.ok_or("no registry block")?;
    let mut last = String::new();
    for _ in 0..60 {
        match client.ping() {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(format!("the registry at {} did not become healthy: {last}", client.endpoint()))
}

/// The registry password from its file or environment variable (never printed).
pub fn registry_password(c: &Cluster) -> Result<Option<String>, String> {
    match c.registry.as_ref().and_then(|r| r.auth.as_ref()) {
        Some(a) => a.password.read().map(Some),
        None => Ok(None),
    }
}

/// Plan or apply the nodes: the server first (agents need its token), then agents in parallel.
pub fn run_nodes(
    c: &Cluster,
    profiles: &Profiles,
    selected: &dyn Fn(&Node) -> bool,
    opts: &Options,
    password: Option<String>,
) -> Vec<HostPlan> {
    let mut results = Vec::new();
    if let crate::spec::BinarySource::Url(url) = &c.k3s.binary.source
        && let Err(e) = crate::artifact::fetch(url, &c.k3s.binary.sha256)
    {
        return c
            .nodes
            .iter()
            .filter(|n| selected(n))
            .map(|n| HostPlan { node: n.name.clone(), address: n.address.clone(), role: n.role.as_str(), changes: vec![], error: Some(e.clone()) })
            .collect();
    }
    let mut token: Option<String> = None;
    let server = c.servers().next();
    let agents: Vec<&Node> = c.agents().filter(|n| selected(n)).collect();
    let mut server_host: Option<SshHost> = None;
    if let Some(s) = server {
        let plan = converge_node(c, profiles, s, opts, None, password.as_deref(), None, selected(s));
        let server_failed = plan.as_ref().is_some_and(|p| p.error.is_some());
        // The token (and the server, to forget re-flashed agents) is only needed for agents.
        if !agents.is_empty() && !server_failed {
            match connect(c, s, opts.accept_new) {
                Ok(mut h) => {
                    token = h
                        .exec(&format!("cat {}", quote(render::SERVER_TOKEN)), None, None)
                        .ok()
                        .filter(|o| o.success())
                        .map(|o| o.stdout_str().trim().to_string())
                        .filter(|t| !t.is_empty());
                    // A server started by this apply writes its token a moment later.
                    if opts.wet && token.is_none() && selected(s) {
                        token = wait_for_token(&mut h);
                    }
                    server_host = Some(h);
                }
                Err(err) => {
                    if plan.is_none() {
                        results.push(HostPlan { node: s.name.clone(), address: s.address.clone(), role: "server", changes: vec![], error: Some(err) });
                    }
                }
            }
        }
        results.extend(plan);
    }
    // Agents in parallel, at most `parallel` at a time; a failed agent never stops the others.
    let server_lock = std::sync::Mutex::new(server_host);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<HostPlan>>> = agents.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..opts.parallel.max(1).min(agents.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(a) = agents.get(i) else { break };
                    let plan = converge_node(c, profiles, a, opts, token.as_deref(), password.as_deref(), Some(&server_lock), true);
                    *slots[i].lock().expect("slot") = plan;
                }
            });
        }
    });
    let out: Vec<HostPlan> = slots.into_iter().filter_map(|m| m.into_inner().expect("slot")).collect();
    results.extend(out);
    results
}

fn wait_for_token(h: &mut SshHost) -> Option<String> {
    for _ in 0..120 {
        if let Ok(o) = h.exec(&format!("cat {}", quote(render::SERVER_TOKEN)), None, None)
            && o.success()
            && !o.stdout_str().trim().is_empty()
        {
            return Some(o.stdout_str().trim().to_string());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    None
}

#[allow(clippy::too_many_arguments)]
fn converge_node(
    c: &Cluster,
    profiles: &Profiles,
    node: &Node,
    opts: &Options,
    token: Option<&str>,
    password: Option<&str>,
    server: Option<&std::sync::Mutex<Option<SshHost>>>,
    selected: bool,
) -> Option<HostPlan> {
    if !selected {
        return None;
    }
    use crate::transport::EventKind;
    Some(host_plan(&node.name, &node.address, node.role.as_str(), opts, || {
        opts.event(&node.name, EventKind::Step("connecting".into()));
        let mut host = connect(c, node, opts.accept_new)?;
        opts.event(&node.name, EventKind::Step(if opts.wet { "converging".into() } else { "planning".into() }));
        let facts = host.facts(&FactsQuery::default()).map_err(|e| e.to_string())?;
        let os = node_profile(profiles, node, &facts)?;
        let mut st = render::node_state(c, os, node, &Secrets { token, registry_password: password })?;
        st.files.extend(render::airgap::files(&opts.tarballs, &c.k3s.version, &st.service.unit));
        match server {
            Some(m) => {
                let mut guard = m.lock().map_err(|_| "server connection poisoned".to_string())?;
                let srv = guard.as_mut().map(|h| h as &mut dyn Host);
                converge_host(&mut host, &st, node.role, opts.wet, srv)
            }
            None => converge_host(&mut host, &st, node.role, opts.wet, None),
        }
    }))
}

/// Per-host counts for the summary line.
pub fn totals(plans: &[HostPlan]) -> BTreeMap<&'static str, usize> {
    let mut t = BTreeMap::new();
    t.insert("hosts", plans.len());
    t.insert("changes", plans.iter().map(|p| p.changes.len()).sum());
    t.insert("failed", plans.iter().filter(|p| p.error.is_some()).count());
    t
}
