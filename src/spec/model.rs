//! The typed cluster description. Every element keeps the span it came from so that later stages
//! (closure check, plan) can point at the line in cluster.kdl that caused a problem.

use std::path::PathBuf;

use miette::SourceSpan;

use super::reference::ImageRef;

#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    /// Path of cluster.kdl as given by the user.
    pub file: PathBuf,
    /// Directory that relative paths in the file are resolved against.
    pub base_dir: PathBuf,
    pub k3s: K3s,
    pub registry: Option<Registry>,
    pub nodes: Vec<Node>,
    pub images: Vec<Image>,
    /// Where rvcluster itself (not the boards) reaches an upstream registry, for the closure check.
    pub upstreams: Vec<Upstream>,
    /// Generations each host keeps besides generation 0 (`generations keep=N`).
    pub generations_keep: u32,
}

#[derive(Debug, Clone)]
pub struct K3s {
    pub version: String,
    pub binary: Binary,
    pub disable: Vec<Spanned<String>>,
    pub manifests: Vec<Spanned<PathBuf>>,
    /// Extra config.yaml keys, in file order.
    pub config: Vec<ConfigEntry>,
    pub span: SourceSpan,
}

#[derive(Debug, Clone)]
pub struct Binary {
    pub source: BinarySource,
    /// Lowercase hex sha256 of the binary.
    pub sha256: String,
    pub span: SourceSpan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinarySource {
    /// Absolute path (resolved against the cluster file's directory).
    File(PathBuf),
    Url(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConfigValue {
    String(String),
    Integer(i64),
    Bool(bool),
    List(Vec<ConfigValue>),
}

#[derive(Debug, Clone)]
pub struct ConfigEntry {
    pub key: String,
    pub value: ConfigValue,
    pub span: SourceSpan,
}

#[derive(Debug, Clone)]
pub struct Registry {
    pub name: String,
    pub address: String,
    pub port: u16,
    /// `external=#true`: a registry the user already runs (a Mac with Docker, Harbor, a NAS).
    /// rvcluster never connects to it over SSH and never deploys it: it checks `/v2/`, pushes the
    /// images and points the nodes at it. `ssh`, `storage` and `binary` are refused there.
    pub external: bool,
    pub ssh: Ssh,
    pub tls: Tls,
    pub auth: Option<Auth>,
    /// Directory on the registry host where blobs are stored.
    pub storage: String,
    pub mirrors: Vec<Mirror>,
    /// Registry binary pinned by sha256 to upload; None = the host profile's packaged binary.
    pub binary: Option<Binary>,
    pub span: SourceSpan,
}

impl Registry {
    /// `host:port` as it appears in image references and registries.yaml `configs`.
    pub fn host_port(&self) -> String {
        if self.address.contains(':') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }

    /// The endpoint URL the boards use, with an explicit scheme (plain HTTP needs `http://`:
    /// docs/k3s-behaviour.md §4.5 endpoint scheme).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.enabled { "https" } else { "http" };
        format!("{scheme}://{}", self.host_port())
    }
}

#[derive(Debug, Clone, Default)]
pub struct Tls {
    pub enabled: bool,
    /// CA certificate; None with `enabled` = rvcluster generates a CA beside cluster.kdl.
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Auth {
    pub user: String,
    pub password: Secret,
    pub span: SourceSpan,
}

/// A secret is never stored in cluster.kdl itself: it is read from a file or the environment at apply time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    File(PathBuf),
    Env(String),
}

/// Why a secret could not be read; never carries the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read secret file {}: {source}", path.display())]
    File { path: PathBuf, source: std::io::Error },
    #[error("environment variable {0} is not set")]
    Unset(String),
}

impl Secret {
    /// Reads the secret value (trailing newline stripped). Errors never include the value.
    pub fn read(&self) -> Result<String, SecretError> {
        match self {
            Secret::File(p) => std::fs::read_to_string(p)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| SecretError::File { path: p.clone(), source: e }),
            Secret::Env(v) => std::env::var(v).map_err(|_| SecretError::Unset(v.clone())),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Mirror {
    /// The registry whose pulls are redirected, e.g. `docker.io`.
    pub registry: String,
    /// Extra endpoints tried after the private registry, in order.
    pub extra_endpoints: Vec<String>,
    /// (Go regexp, replacement) applied to the repository path.
    pub rewrites: Vec<Rewrite>,
    pub span: SourceSpan,
}

#[derive(Debug, Clone)]
pub struct Rewrite {
    pub pattern: String,
    pub replacement: String,
    pub span: SourceSpan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Server,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Ssh {
    pub user: Option<String>,
    pub port: Option<u16>,
    /// Pinned host key, `ssh-ed25519 AAAA...`.
    pub host_key: Option<String>,
    pub identity: Option<PathBuf>,
    /// `user@host:port` of a jump host.
    pub proxy_jump: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub address: String,
    pub role: Role,
    /// OS profile name; None = detected from facts.
    pub profile: Option<Spanned<String>>,
    pub ssh: Ssh,
    pub tags: Vec<String>,
    /// Per-node extra config.yaml keys (after the cluster-wide ones).
    pub config: Vec<ConfigEntry>,
    pub span: SourceSpan,
}

#[derive(Debug, Clone)]
pub struct Image {
    /// The reference pods ask for, normalized.
    pub reference: ImageRef,
    pub source: ImageSource,
    /// How the image reaches the nodes: pushed to the registry, or as a tarball on every node.
    /// Defaults to the registry when there is a `registry` block, else to a tarball.
    pub deliver: Deliver,
    pub span: SourceSpan,
}

/// How an `image` entry reaches the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Deliver {
    /// Pushed to the registry, where the mirror makes containerd look.
    Registry,
    /// An OCI layout tarball (linux/riscv64 only) in /var/lib/rancher/k3s/agent/images/ on every
    /// node, which k3s imports into containerd (air-gap).
    Tarball,
}

impl Deliver {
    pub fn as_str(self) -> &'static str {
        match self {
            Deliver::Registry => "registry",
            Deliver::Tarball => "tarball",
        }
    }
}

/// Where the cluster's registry is, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryMode {
    /// rvcluster deploys it over SSH on a Linux host with systemd.
    Managed,
    /// The user runs it; rvcluster only talks HTTP to it.
    External,
    /// No registry: images are delivered as tarballs (k3s air-gap).
    None,
}

impl RegistryMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryMode::Managed => "managed",
            RegistryMode::External => "external",
            RegistryMode::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    OciArchive(PathBuf),
    OciDir(PathBuf),
    DockerArchive(PathBuf),
    /// `docker://REF`: copied from another registry (linux/riscv64 only).
    Docker(ImageRef),
    /// A `build` block: built by rvcluster from declared inputs (src/build).
    Build(Box<Build>),
}

impl ImageSource {
    pub fn describe(&self) -> String {
        match self {
            ImageSource::OciArchive(p) => format!("oci-archive:{}", p.display()),
            ImageSource::OciDir(p) => format!("oci:{}", p.display()),
            ImageSource::DockerArchive(p) => format!("docker-archive:{}", p.display()),
            ImageSource::Docker(r) => format!("docker://{r}"),
            ImageSource::Build(b) => match &b.base {
                None => "build (from scratch)".to_string(),
                Some(r) => format!("build (on {r})"),
            },
        }
    }
}

/// `image "REF" { build { ... } }`: a linux/riscv64 image built from declared inputs, the same
/// bytes (and manifest digest) for the same inputs on any machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// None = `scratch`; else an image pinned by digest (its linux/riscv64 variant is used).
    pub base: Option<ImageRef>,
    /// Files and directory trees, all in one layer on top of the base's layers.
    pub inputs: Vec<BuildInput>,
    pub config: BuildConfig,
    /// Copy Entrypoint/Cmd/Env/User/WorkingDir/ExposedPorts from another platform's image.
    pub config_from: Option<ConfigFrom>,
    /// `source-date-epoch=N`: mtimes and `created`; None = $SOURCE_DATE_EPOCH, else 0.
    pub epoch: Option<u64>,
    pub span: SourceSpan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildInputKind {
    /// A local file at `dest`; `mode` None = 0755 when the file is executable, else 0644.
    File { mode: Option<u32> },
    /// A local directory tree copied under `dest` (files 0755/0644 by their executable bit,
    /// directories 0755, symlinks kept).
    Dir,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInput {
    pub kind: BuildInputKind,
    /// Absolute local path (resolved against the cluster file's directory).
    pub source: PathBuf,
    /// Absolute, normalized path in the image (`/` for the root).
    pub dest: String,
    pub span: SourceSpan,
}

/// Image config fields declared in the build block (the OCI config's `config` object).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// (KEY, VALUE) in file order.
    pub env: Vec<(String, String)>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// `PORT/PROTO` (tcp, udp or sctp).
    pub expose: Vec<String>,
    pub labels: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFrom {
    pub image: ImageRef,
    /// `os/arch[/variant]`; None = linux/amd64 when the image has it, else its first other platform.
    pub platform: Option<String>,
    pub span: SourceSpan,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub registry: String,
    pub endpoint: String,
    pub span: SourceSpan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    pub value: T,
    pub span: SourceSpan,
}

impl Cluster {
    pub fn servers(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Server)
    }
    pub fn agents(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Agent)
    }
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }
    pub fn registry_mode(&self) -> RegistryMode {
        match &self.registry {
            None => RegistryMode::None,
            Some(r) if r.external => RegistryMode::External,
            Some(_) => RegistryMode::Managed,
        }
    }
    /// The registry rvcluster deploys over SSH (None for an external one or none at all).
    pub fn managed_registry(&self) -> Option<&Registry> {
        self.registry.as_ref().filter(|r| !r.external)
    }
    /// `image` entries pushed to the registry.
    pub fn pushed_images(&self) -> impl Iterator<Item = &Image> {
        self.images.iter().filter(|i| i.deliver == Deliver::Registry)
    }
    /// `image` entries delivered as tarballs to every node.
    pub fn tarball_images(&self) -> impl Iterator<Item = &Image> {
        self.images.iter().filter(|i| i.deliver == Deliver::Tarball)
    }
}
