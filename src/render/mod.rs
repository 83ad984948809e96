//! Rendering: a pure function from (cluster, OS profile, node, server token) to the state a host
//! must converge to: files with content, mode and owner, symlinks, services, preparation steps.
//! It reads local files named by cluster.kdl (manifests, secrets) but never a host or the network.

pub mod airgap;
pub mod registry;
pub mod yaml;

use std::path::PathBuf;

use crate::profile::{OsProfile, Step};
use crate::spec::{BinarySource, Cluster, ConfigEntry, ConfigValue, Node, Role};
use yaml::Yaml;

/// Why a host's desired state could not be rendered: a local input (CA, manifest, certificate,
/// registry binary) is missing or unreadable, or a secret was not read. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot read CA {}: {source}", path.display())]
    ReadCa { path: PathBuf, source: std::io::Error },
    #[error("cannot read manifest {}: {source}", path.display())]
    ReadManifest { path: PathBuf, source: std::io::Error },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the registry password was not read")]
    NoPassword,
    #[error("the registry host's OS profile `{profile}` has no packaged registry: pin one with `binary \"PATH\" sha256=...` in the registry block")]
    NoRegistryBinary { profile: String },
    #[error("a registry binary must be a local file")]
    RegistryBinaryNotLocal,
    #[error("bcrypt: {0}")]
    Bcrypt(#[from] bcrypt::BcryptError),
}

/// What a managed file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Text(String),
    /// A local file streamed as is (the k3s binary), known by digest.
    Local { path: PathBuf, sha256: String },
    /// Already on the host, in the generation store (a rollback): copied from there, verified.
    Stored { sha256: String, binary: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredFile {
    pub path: String,
    pub content: Content,
    pub mode: u32,
    pub owner: String,
    /// Holds a secret: never shown in a diff, always mode 0600.
    pub secret: bool,
    /// The unit that must restart when this file changes (k3s reads it only at start).
    pub restarts: Option<String>,
}

impl DesiredFile {
    pub fn sha256(&self) -> String {
        match &self.content {
            Content::Text(t) => crate::render::sha256_hex(t.as_bytes()),
            Content::Local { sha256, .. } | Content::Stored { sha256, .. } => sha256.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symlink {
    pub path: String,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub unit: String,
    pub unit_path: String,
}

/// Everything one host must have.
#[derive(Debug, Clone)]
pub struct HostState {
    pub node: String,
    pub files: Vec<DesiredFile>,
    pub symlinks: Vec<Symlink>,
    pub service: Service,
    pub steps: Vec<Step>,
    pub kernel_modules: Vec<String>,
    /// The version the installed k3s binary must report (nodes only).
    pub k3s_version: Option<String>,
    /// The os-release rule of the OS profile this state was rendered for (empty: none). When a
    /// node could have several profiles, each one's probes run only where its rule holds.
    pub detect: Vec<(String, Vec<String>)>,
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

pub const K3S_BIN: &str = "/usr/local/bin/k3s";
pub const CONFIG: &str = "/etc/rancher/k3s/config.yaml";
pub const REGISTRIES: &str = "/etc/rancher/k3s/registries.yaml";
pub const REGISTRY_CA: &str = "/etc/rancher/k3s/rvcluster-registry-ca.pem";
pub const MANIFESTS: &str = "/var/lib/rancher/k3s/server/manifests";
pub const SERVER_TOKEN: &str = "/var/lib/rancher/k3s/server/token";

/// Unit name for a role, as install.sh names it.
pub fn unit_name(role: Role) -> &'static str {
    match role {
        Role::Server => "k3s",
        Role::Agent => "k3s-agent",
    }
}

/// Inputs that are not in cluster.kdl: secrets read at apply time.
pub struct Secrets<'a> {
    /// The server's token (agents only); None renders a placeholder that plan shows as unknown.
    pub token: Option<&'a str>,
    /// The registry password, when `auth` is set.
    pub registry_password: Option<&'a str>,
}

/// The desired state of one node. Errors are problems reading local inputs (manifests, CA).
pub fn node_state(c: &Cluster, os: &OsProfile, node: &Node, secrets: &Secrets) -> Result<HostState, RenderError> {
    let unit = unit_name(node.role);
    let units_dir = os.path("systemd-units").unwrap_or("/etc/systemd/system");
    let unit_path = format!("{units_dir}/{unit}.service");
    let env_path = format!("{unit_path}.env");
    let restart = Some(unit.to_string());
    let mut files = Vec::new();

    let (bin_path, bin_sha) = match &c.k3s.binary.source {
        BinarySource::File(p) => (p.clone(), c.k3s.binary.sha256.clone()),
        // A URL is fetched once into the local cache, named by digest (converge does the download).
        BinarySource::Url(_) => (crate::render::cache_path(&c.k3s.binary.sha256), c.k3s.binary.sha256.clone()),
    };
    files.push(DesiredFile {
        path: os.path("k3s-binary").unwrap_or(K3S_BIN).to_string(),
        content: Content::Local { path: bin_path, sha256: bin_sha },
        mode: 0o755,
        owner: "root:root".into(),
        secret: false,
        restarts: restart.clone(),
    });
    files.push(text_file(&unit_path, unit_file(node.role, os), 0o644, false, restart.clone()));
    files.push(text_file(&env_path, env_file(c, node, secrets), 0o600, true, restart.clone()));
    files.push(text_file(CONFIG, yaml::to_string(&config_yaml(c, node)), 0o600, false, restart.clone()));
    if let Some(reg) = registries_yaml(c, secrets)? {
        files.push(text_file(REGISTRIES, reg, 0o600, c.registry.as_ref().is_some_and(|r| r.auth.is_some()), restart.clone()));
    }
    if let Some(ca) = c.registry.as_ref().and_then(|r| r.tls.ca.as_ref()) {
        let pem = std::fs::read_to_string(ca).map_err(|e| RenderError::ReadCa { path: ca.clone(), source: e })?;
        files.push(text_file(REGISTRY_CA, pem, 0o644, false, restart.clone()));
    }
    if node.role == Role::Server {
        for m in &c.k3s.manifests {
            let text = std::fs::read_to_string(&m.value)
                .map_err(|e| RenderError::ReadManifest { path: m.value.clone(), source: e })?;
            let name = m.value.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default();
            // k3s applies manifests whenever they change: no restart (docs/k3s-behaviour.md §6.1 manifests).
            files.push(text_file(&format!("{MANIFESTS}/{name}"), text, 0o600, false, None));
        }
    }
    if !os.kernel_modules.is_empty()
        && let Some(p) = os.path("modules-load")
    {
        files.push(text_file(p, lines(&os.kernel_modules), 0o644, false, None));
    }
    if !os.sysctls.is_empty()
        && let Some(p) = os.path("sysctl")
    {
        let body: Vec<String> = os.sysctls.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        files.push(text_file(p, lines(&body), 0o644, false, None));
    }
    let bin = os.path("k3s-binary").unwrap_or(K3S_BIN);
    let dir = bin.rsplit_once('/').map(|(d, _)| d).unwrap_or("/usr/local/bin");
    let symlinks = ["kubectl", "crictl", "ctr"]
        .iter()
        .map(|n| Symlink { path: format!("{dir}/{n}"), target: bin.to_string() })
        .collect();
    Ok(HostState {
        node: node.name.clone(),
        files,
        symlinks,
        service: Service { unit: unit.to_string(), unit_path },
        steps: os.steps.clone(),
        kernel_modules: os.kernel_modules.clone(),
        k3s_version: Some(c.k3s.version.clone()),
        detect: os.detect_os_release.clone(),
    })
}

/// Where a downloaded artifact lives in the local content-addressed cache.
pub fn cache_path(sha256: &str) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("rvcluster").join("sha256").join(sha256)
}

pub(crate) fn text_file(path: &str, text: String, mode: u32, secret: bool, restarts: Option<String>) -> DesiredFile {
    DesiredFile {
        path: path.to_string(),
        content: Content::Text(text),
        mode: if secret { 0o600 } else { mode },
        owner: "root:root".into(),
        secret,
        restarts,
    }
}

fn lines(items: &[String]) -> String {
    let mut s = String::from("# managed by rvcluster\n");
    for i in items {
        s.push_str(i);
        s.push('\n');
    }
    s
}

/// The systemd unit exactly as install.sh writes it (docs/k3s-behaviour.md §2 systemd unit).
pub fn unit_file(role: Role, os: &OsProfile) -> String {
    let unit = unit_name(role);
    let units_dir = os.path("systemd-units").unwrap_or("/etc/systemd/system");
    let bin = os.path("k3s-binary").unwrap_or(K3S_BIN);
    let after = match role {
        Role::Server => "network-online.target",
        Role::Agent => "network-online.target",
    };
    format!(
        "[Unit]
Description=Lightweight Kubernetes
Documentation=https://k3s.io
Wants=network-online.target
After={after}

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-{units_dir}/{unit}.service.env
KillMode=process
Delegate=yes
User=root
# Having non-zero Limit*s causes performance problems due to accounting overhead
# in the kernel. We recommend using cgroups to do container-local accounting.
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart={bin} {role}
",
        role = role.as_str()
    )
}

/// The unit's environment file (mode 0600): agents get K3S_URL (https only) and K3S_TOKEN.
pub fn env_file(c: &Cluster, node: &Node, secrets: &Secrets) -> String {
    let mut s = String::from("# managed by rvcluster\n");
    if node.role == Role::Agent
        && let Some(server) = c.servers().next()
    {
        s.push_str(&format!("K3S_URL=https://{}:6443\n", url_host(&server.address)));
        s.push_str(&format!("K3S_TOKEN={}\n", secrets.token.unwrap_or("<read from the server at apply>")));
    }
    s
}

fn url_host(addr: &str) -> String {
    if addr.contains(':') { format!("[{addr}]") } else { addr.to_string() }
}

fn config_value(v: &ConfigValue) -> Yaml {
    match v {
        ConfigValue::String(s) => Yaml::str(s.clone()),
        ConfigValue::Integer(i) => Yaml::Int(*i),
        ConfigValue::Bool(b) => Yaml::Bool(*b),
        ConfigValue::List(l) => Yaml::List(l.iter().map(config_value).collect()),
    }
}

/// /etc/rancher/k3s/config.yaml: what rvcluster manages first, then the cluster's and the node's keys.
pub fn config_yaml(c: &Cluster, node: &Node) -> Yaml {
    let mut m: Vec<(String, Yaml)> = vec![("node-name".into(), Yaml::str(node.name.clone()))];
    if node.address.parse::<std::net::IpAddr>().is_ok() {
        m.push(("node-ip".into(), Yaml::str(node.address.clone())));
    }
    if node.role == Role::Server {
        m.push(("tls-san".into(), Yaml::List(vec![Yaml::str(node.address.clone())])));
        if !c.k3s.disable.is_empty() {
            m.push(("disable".into(), Yaml::List(c.k3s.disable.iter().map(|d| Yaml::str(d.value.clone())).collect())));
        }
    }
    let mut extra: Vec<&ConfigEntry> = c.k3s.config.iter().collect();
    extra.extend(node.config.iter());
    for e in extra {
        match m.iter_mut().find(|(k, _)| *k == e.key) {
            // A node key after a cluster key of the same name: lists append, scalars override.
            Some((_, existing)) => match (existing, config_value(&e.value)) {
                (Yaml::List(a), Yaml::List(b)) => a.extend(b),
                (Yaml::List(a), v) => a.push(v),
                (slot, v) => *slot = v,
            },
            None => m.push((e.key.clone(), config_value(&e.value))),
        }
    }
    Yaml::Map(m)
}

/// /etc/rancher/k3s/registries.yaml from the registry block (docs/k3s-behaviour.md §4 registries.yaml): the
/// mirror's first endpoint is the private registry with an explicit scheme, rewrites as given, and
/// the registry's own host:port mirrored to itself so `host:port/repo` references resolve too.
pub fn registries_yaml(c: &Cluster, secrets: &Secrets) -> Result<Option<String>, RenderError> {
    let Some(r) = &c.registry else { return Ok(None) };
    let endpoint = r.endpoint();
    let mut mirrors = Vec::new();
    for m in &r.mirrors {
        let mut endpoints = vec![Yaml::str(endpoint.clone())];
        endpoints.extend(m.extra_endpoints.iter().map(|e| Yaml::str(e.clone())));
        let mut entry = vec![("endpoint".to_string(), Yaml::List(endpoints))];
        if !m.rewrites.is_empty() {
            entry.push((
                "rewrite".into(),
                Yaml::Map(m.rewrites.iter().map(|w| (w.pattern.clone(), Yaml::str(w.replacement.clone()))).collect()),
            ));
        }
        mirrors.push((m.registry.clone(), Yaml::Map(entry)));
    }
    if !r.mirrors.iter().any(|m| m.registry == r.host_port()) {
        mirrors.push((r.host_port(), Yaml::Map(vec![("endpoint".into(), Yaml::List(vec![Yaml::str(endpoint.clone())]))])));
    }
    let mut config = Vec::new();
    if let Some(a) = &r.auth {
        let pw = secrets.registry_password.ok_or(RenderError::NoPassword)?;
        config.push((
            "auth".to_string(),
            Yaml::Map(vec![("username".into(), Yaml::str(a.user.clone())), ("password".into(), Yaml::str(pw))]),
        ));
    }
    // A CA file when one is given or generated; an external registry without ca= is trusted
    // through the system's CAs (its certificate is public).
    if r.tls.enabled && (r.tls.ca.is_some() || (r.tls.cert.is_none() && !r.external)) {
        config.push(("tls".to_string(), Yaml::Map(vec![("ca_file".into(), Yaml::str(REGISTRY_CA))])));
    }
    let mut doc = vec![("mirrors".to_string(), Yaml::Map(mirrors))];
    if !config.is_empty() {
        doc.push(("configs".into(), Yaml::Map(vec![(r.host_port(), Yaml::Map(config))])));
    }
    Ok(Some(format!("# managed by rvcluster\n{}", yaml::to_string(&Yaml::Map(doc)))))
}
