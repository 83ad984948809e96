//! Image sources: `oci-archive:PATH`, `oci:DIR`, `docker-archive:PATH` (legacy `docker save`
//! converted to an OCI manifest; Docker >= 25 archives read through their OCI index) and
//! `docker://REF` (another registry). Loading reads only the small JSON documents and indexes
//! archive members; blobs are streamed later straight from the file (or the source registry).
//!
//! Platform: the linux/riscv64 manifest is selected; the source's index (if any) is recorded by
//! digest but not pushed: pushing an index would require every other platform's blobs too.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::client::{BlobOpener, ClientOptions, RegistryClient};
use super::digest;
use super::error::{RegistryError, Result};
use super::oci::{self, Descriptor, Kind};
use crate::spec::reference::ImageRef;

const SMALL_LIMIT: u64 = 8 * 1024 * 1024;

/// Why an image source string was refused.
#[derive(Debug, thiserror::Error)]
pub enum SourceParseError {
    #[error(transparent)]
    Reference(#[from] crate::spec::reference::RefError),
    #[error("unknown image source `{0}`: expected oci-archive:PATH, oci:DIR, docker-archive:PATH or docker://REF")]
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    OciArchive(PathBuf),
    OciDir(PathBuf),
    DockerArchive(PathBuf),
    Docker(ImageRef),
}

impl Source {
    /// Parses `oci-archive:PATH`, `oci:DIR`, `docker-archive:PATH` or `docker://REF`.
    pub fn parse(s: &str) -> std::result::Result<Source, SourceParseError> {
        if let Some(p) = s.strip_prefix("oci-archive:") {
            Ok(Source::OciArchive(p.into()))
        } else if let Some(p) = s.strip_prefix("oci:") {
            Ok(Source::OciDir(p.into()))
        } else if let Some(p) = s.strip_prefix("docker-archive:") {
            Ok(Source::DockerArchive(p.into()))
        } else if let Some(r) = s.strip_prefix("docker://") {
            Ok(Source::Docker(ImageRef::parse(r)?))
        } else {
            Err(SourceParseError::Unknown(s.to_string()))
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Source::OciArchive(p) => format!("oci-archive:{}", p.display()),
            Source::OciDir(p) => format!("oci:{}", p.display()),
            Source::DockerArchive(p) => format!("docker-archive:{}", p.display()),
            Source::Docker(r) => format!("docker://{r}"),
        }
    }
}

/// Where `docker://` sources really are and how to authenticate to them.
#[derive(Debug, Clone, Default)]
pub struct RemoteSources {
    /// Registry name -> endpoint URL (as `MirrorConfig::upstream_overrides`).
    pub upstream_overrides: BTreeMap<String, String>,
    /// Registry name -> client options (credentials, CA).
    pub options: BTreeMap<String, ClientOptions>,
}

#[derive(Debug)]
enum Store {
    Dir(PathBuf),
    /// digest -> (offset, size) of the member inside the tar file.
    Tar { path: PathBuf, members: HashMap<String, (u64, u64)> },
    Remote { client: Box<RegistryClient>, repo: String },
}

/// The linux/riscv64 image of a source, ready to push.
#[derive(Debug)]
pub struct LoadedImage {
    pub source: String,
    /// Digest of the source's image index when it has one (recorded, not pushed).
    pub index_digest: Option<String>,
    /// The platform manifest's original bytes (pushed as is).
    pub manifest: Vec<u8>,
    pub manifest_media_type: String,
    pub manifest_digest: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// Platforms the source offers (for information).
    pub platforms: Vec<String>,
    store: Store,
}

impl LoadedImage {
    /// Config then layers, each digest once.
    pub fn blobs(&self) -> Vec<Descriptor> {
        let mut out: Vec<Descriptor> = Vec::new();
        for d in std::iter::once(&self.config).chain(self.layers.iter()) {
            if !out.iter().any(|o| o.digest == d.digest) {
                out.push(d.clone());
            }
        }
        out
    }

    pub fn total_size(&self) -> u64 {
        self.blobs().iter().map(|d| d.size).sum()
    }
}

impl BlobOpener for LoadedImage {
    fn open_blob(&self, digest: &str, offset: u64) -> Result<Box<dyn Read + Send + '_>> {
        open_in(&self.store, &self.source, digest, offset)
    }
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Io { path: path.to_path_buf(), reason: e.to_string() }
}

fn bad(source: &str, reason: impl std::fmt::Display) -> RegistryError {
    RegistryError::BadSource { source_desc: source.to_string(), reason: reason.to_string() }
}

fn open_in<'a>(store: &'a Store, source: &str, d: &str, offset: u64) -> Result<Box<dyn Read + Send + 'a>> {
    if !digest::is_valid(d) {
        return Err(bad(source, format!("unsupported digest `{d}` (only sha256)")));
    }
    match store {
        Store::Dir(dir) => {
            let p = dir.join("blobs/sha256").join(digest::hex_part(d));
            let mut f = File::open(&p).map_err(|e| bad(source, format!("blob {d} is missing ({}: {e})", p.display())))?;
            f.seek(SeekFrom::Start(offset)).map_err(|e| io_err(&p, e))?;
            Ok(Box::new(f))
        }
        Store::Tar { path, members } => {
            let (off, size) = *members.get(d).ok_or_else(|| bad(source, format!("blob {d} is not in the archive")))?;
            let mut f = File::open(path).map_err(|e| io_err(path, e))?;
            f.seek(SeekFrom::Start(off + offset.min(size))).map_err(|e| io_err(path, e))?;
            Ok(Box::new(f.take(size.saturating_sub(offset))))
        }
        Store::Remote { client, repo } => client.get_blob(repo, d, offset),
    }
}

fn read_small(store: &Store, source: &str, d: &Descriptor, what: &str) -> Result<Vec<u8>> {
    if d.size > SMALL_LIMIT {
        return Err(bad(source, format!("{what} {} is implausibly large ({} bytes)", d.digest, d.size)));
    }
    let mut buf = Vec::new();
    open_in(store, source, &d.digest, 0)?
        .take(SMALL_LIMIT + 1)
        .read_to_end(&mut buf)
        .map_err(|e| bad(source, format!("reading {what} {}: {e}", d.digest)))?;
    let actual = digest::sha256(&buf);
    if actual != d.digest {
        return Err(RegistryError::DigestMismatch {
            source_desc: source.to_string(),
            what: what.to_string(),
            expected: d.digest.clone(),
            actual,
        });
    }
    Ok(buf)
}

/// A tar file's members: normalized path -> (data offset, size), symlinks and hardlinks resolved.
struct TarIndex {
    path: PathBuf,
    files: HashMap<String, (u64, u64)>,
}

fn norm(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

impl TarIndex {
    fn open(path: &Path, source: &str) -> Result<TarIndex> {
        let mut f = File::open(path).map_err(|e| io_err(path, e))?;
        let mut magic = [0u8; 2];
        if f.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b] {
            return Err(bad(source, "the archive is gzip-compressed; decompress it first (gunzip)"));
        }
        f.seek(SeekFrom::Start(0)).map_err(|e| io_err(path, e))?;
        let mut ar = tar::Archive::new(f);
        let mut files = HashMap::new();
        let mut links: HashMap<String, String> = HashMap::new();
        for entry in ar.entries_with_seek().map_err(|e| bad(source, format!("not a tar archive: {e}")))? {
            let entry = entry.map_err(|e| bad(source, format!("broken tar archive: {e}")))?;
            let name = norm(&entry.path().map_err(|e| bad(source, e.to_string()))?.to_string_lossy());
            let et = entry.header().entry_type();
            if et.is_symlink() || et.is_hard_link() {
                if let Ok(Some(target)) = entry.link_name() {
                    let t = target.to_string_lossy().to_string();
                    let resolved = if et.is_symlink() && !t.starts_with('/') {
                        let parent = name.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
                        norm(&format!("{parent}/{t}"))
                    } else {
                        norm(&t)
                    };
                    links.insert(name, resolved);
                }
            } else if et.is_file() {
                files.insert(name, (entry.raw_file_position(), entry.size()));
            }
        }
        for (name, target) in &links {
            let mut t = target.clone();
            for _ in 0..8 {
                if let Some(m) = files.get(&t) {
                    let m = *m;
                    files.insert(name.clone(), m);
                    break;
                }
                match links.get(&t) {
                    Some(n) => t = n.clone(),
                    None => break,
                }
            }
        }
        Ok(TarIndex { path: path.to_path_buf(), files })
    }

    fn read_file(&self, name: &str, source: &str) -> Result<Vec<u8>> {
        let (off, size) = *self.files.get(name).ok_or_else(|| bad(source, format!("`{name}` is not in the archive")))?;
        if size > SMALL_LIMIT {
            return Err(bad(source, format!("`{name}` is implausibly large")));
        }
        let mut f = File::open(&self.path).map_err(|e| io_err(&self.path, e))?;
        f.seek(SeekFrom::Start(off)).map_err(|e| io_err(&self.path, e))?;
        let mut buf = vec![0; size as usize];
        f.read_exact(&mut buf).map_err(|e| io_err(&self.path, e))?;
        Ok(buf)
    }

    /// Store keyed by digest for an OCI layout inside the tar.
    fn layout_store(&self) -> Store {
        let members = self
            .files
            .iter()
            .filter_map(|(n, m)| n.strip_prefix("blobs/sha256/").map(|h| (format!("sha256:{h}"), *m)))
            .collect();
        Store::Tar { path: self.path.clone(), members }
    }
}

/// Loads the linux/riscv64 image of a source.
pub fn load(source: &Source, remote: &RemoteSources) -> Result<LoadedImage> {
    load_pinned(source, remote, None)
}

/// As `load`, with the riscv64 manifest digest the lock file pinned: a `docker://` source is then
/// fetched by that digest (a moved tag upstream changes nothing); a local source must contain
/// exactly that manifest (checked by `push::plan` through `PushItem::locked_manifest_digest`).
pub fn load_pinned(source: &Source, remote: &RemoteSources, pinned_manifest: Option<&str>) -> Result<LoadedImage> {
    let desc = source.describe();
    if let (Source::Docker(r), Some(pin)) = (source, pinned_manifest) {
        if !digest::is_valid(pin) {
            return Err(bad(&desc, format!("pinned digest `{pin}` is not a sha256 digest")));
        }
        let pinned = ImageRef { tag: None, digest: Some(pin.to_string()), ..r.clone() };
        return from_registry(desc, &pinned, remote);
    }
    match source {
        Source::OciDir(dir) => {
            let idx = std::fs::read(dir.join("index.json")).map_err(|e| bad(&desc, format!("no index.json ({e}); is this an OCI layout directory?")))?;
            from_layout(desc, &idx, Store::Dir(dir.clone()))
        }
        Source::OciArchive(path) => {
            let t = TarIndex::open(path, &desc)?;
            let idx = t.read_file("index.json", &desc).map_err(|_| bad(&desc, "no index.json: not an OCI archive"))?;
            from_layout(desc, &idx, t.layout_store())
        }
        Source::DockerArchive(path) => {
            let t = TarIndex::open(path, &desc)?;
            if t.files.contains_key("index.json") && t.files.contains_key("oci-layout") {
                // Docker >= 25 writes an OCI layout (plus a legacy manifest.json): use the index.
                let idx = t.read_file("index.json", &desc)?;
                from_layout(desc, &idx, t.layout_store())
            } else {
                from_legacy_docker(desc, &t)
            }
        }
        Source::Docker(r) => from_registry(desc, r, remote),
    }
}

/// Checks a manifest's config for linux/riscv64, returning (config platform string, is riscv64).
fn config_platform(store: &Store, source: &str, manifest: &oci::Manifest) -> Result<oci::Platform> {
    let cfg = read_small(store, source, &manifest.config, "image config")?;
    let p: oci::ConfigPlatform = serde_json::from_slice(&cfg).map_err(|e| bad(source, format!("invalid image config: {e}")))?;
    Ok(p.platform())
}

fn finish(
    source: String,
    store: Store,
    index_digest: Option<String>,
    manifest: Vec<u8>,
    declared: Option<&str>,
    platforms: Vec<String>,
) -> Result<LoadedImage> {
    let m = oci::parse_manifest(&manifest).map_err(|e| bad(&source, e))?;
    let p = config_platform(&store, &source, &m)?;
    if !p.is_riscv64() {
        let mut platforms = platforms;
        if platforms.is_empty() {
            platforms.push(p.to_string());
        }
        return Err(RegistryError::NoRiscv64 { source_desc: source, platforms });
    }
    for l in &m.layers {
        if !digest::is_valid(&l.digest) {
            return Err(bad(&source, format!("unsupported layer digest `{}`", l.digest)));
        }
    }
    let media = match declared.filter(|d| !d.is_empty() && !oci::is_index_type(d)) {
        Some(d) => d.to_string(),
        None => oci::media_type_of(&manifest, Kind::Manifest),
    };
    Ok(LoadedImage {
        manifest_digest: digest::sha256(&manifest),
        manifest,
        manifest_media_type: media,
        index_digest,
        config: m.config,
        layers: m.layers,
        platforms: if platforms.is_empty() { vec![p.to_string()] } else { platforms },
        source,
        store,
    })
}

fn from_layout(source: String, index_json: &[u8], store: Store) -> Result<LoadedImage> {
    let top = oci::parse_index(index_json).map_err(|e| bad(&source, format!("index.json: {e}")))?;
    let mut candidates = top.manifests.clone();
    let mut index_digest = None;
    let nested: Vec<&Descriptor> = candidates.iter().filter(|d| oci::is_index_type(&d.media_type)).collect();
    if !nested.is_empty() {
        if candidates.len() != 1 {
            return Err(bad(&source, "the layout holds several images; keep one image (index) per source"));
        }
        let d = candidates[0].clone();
        let bytes = read_small(&store, &source, &d, "image index")?;
        let idx = oci::parse_index(&bytes).map_err(|e| bad(&source, e))?;
        index_digest = Some(d.digest.clone());
        candidates = idx.manifests;
    }
    if candidates.is_empty() {
        return Err(bad(&source, "the layout holds no image"));
    }
    // With platform fields: select by them (only the chosen manifest is read).
    let as_index = oci::Index { media_type: None, manifests: candidates.clone() };
    let chosen = if candidates.iter().all(|d| d.platform.is_some()) {
        match oci::select_riscv64(&as_index) {
            Ok(d) => d.clone(),
            Err(platforms) => return Err(RegistryError::NoRiscv64 { source_desc: source, platforms }),
        }
    } else if candidates.len() == 1 {
        candidates[0].clone()
    } else {
        // No platform fields (docker save): look into each image's config.
        let mut platforms = Vec::new();
        let mut found = None;
        for d in &candidates {
            let bytes = read_small(&store, &source, d, "image manifest")?;
            let m = oci::parse_manifest(&bytes).map_err(|e| bad(&source, e))?;
            let p = config_platform(&store, &source, &m)?;
            if p.is_riscv64() && found.is_none() {
                found = Some(d.clone());
            }
            platforms.push(p.to_string());
        }
        match found {
            Some(d) => d,
            None => {
                platforms.sort();
                platforms.dedup();
                return Err(RegistryError::NoRiscv64 { source_desc: source, platforms });
            }
        }
    };
    let manifest = read_small(&store, &source, &chosen, "image manifest")?;
    let platforms = oci::platforms_of(&as_index);
    let media = chosen.media_type.clone();
    finish(source, store, index_digest, manifest, Some(&media), platforms)
}

#[derive(Deserialize)]
struct LegacyEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct LegacyConfig {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
    rootfs: LegacyRootfs,
}

#[derive(Deserialize)]
struct LegacyRootfs {
    diff_ids: Vec<String>,
}

/// The OCI manifest for a legacy `docker save` image: uncompressed layers, whose digests are the
/// config's diff_ids. Written field by field so its bytes (and digest) are stable.
pub fn legacy_manifest(config: &Descriptor, layers: &[Descriptor]) -> Vec<u8> {
    let layers: Vec<String> = layers
        .iter()
        .map(|l| format!(r#"{{"mediaType":"{}","digest":"{}","size":{}}}"#, oci::OCI_LAYER_TAR, l.digest, l.size))
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":{}}},"layers":[{}]}}"#,
        oci::OCI_MANIFEST,
        oci::OCI_CONFIG,
        config.digest,
        config.size,
        layers.join(",")
    )
    .into_bytes()
}

fn from_legacy_docker(source: String, t: &TarIndex) -> Result<LoadedImage> {
    let mj = t.read_file("manifest.json", &source).map_err(|_| bad(&source, "neither index.json nor manifest.json: not a docker archive"))?;
    let entries: Vec<LegacyEntry> = serde_json::from_slice(&mj).map_err(|e| bad(&source, format!("manifest.json: {e}")))?;
    let mut platforms = Vec::new();
    for e in &entries {
        let cfg_name = norm(&e.config);
        let cfg = t.read_file(&cfg_name, &source)?;
        let c: LegacyConfig = serde_json::from_slice(&cfg).map_err(|er| bad(&source, format!("{cfg_name}: {er}")))?;
        let p = oci::Platform { os: c.os.clone(), architecture: c.architecture.clone(), variant: c.variant.clone() };
        if !p.is_riscv64() {
            platforms.push(p.to_string());
            continue;
        }
        if c.rootfs.diff_ids.len() != e.layers.len() {
            return Err(bad(&source, format!("{cfg_name} lists {} layers, manifest.json {}", c.rootfs.diff_ids.len(), e.layers.len())));
        }
        let config = Descriptor { media_type: oci::OCI_CONFIG.into(), digest: digest::sha256(&cfg), size: cfg.len() as u64, platform: None };
        let mut members = HashMap::new();
        members.insert(config.digest.clone(), *t.files.get(&cfg_name).expect("read above"));
        let mut layers = Vec::new();
        for (path, diff_id) in e.layers.iter().zip(&c.rootfs.diff_ids) {
            if !digest::is_valid(diff_id) {
                return Err(bad(&source, format!("unsupported diff_id `{diff_id}`")));
            }
            let m = *t.files.get(&norm(path)).ok_or_else(|| bad(&source, format!("layer `{path}` is not in the archive")))?;
            members.insert(diff_id.clone(), m);
            layers.push(Descriptor { media_type: oci::OCI_LAYER_TAR.into(), digest: diff_id.clone(), size: m.1, platform: None });
        }
        let manifest = legacy_manifest(&config, &layers);
        let store = Store::Tar { path: t.path.clone(), members };
        return finish(source, store, None, manifest, Some(oci::OCI_MANIFEST), vec![p.to_string()]);
    }
    platforms.sort();
    platforms.dedup();
    Err(RegistryError::NoRiscv64 { source_desc: source, platforms })
}

/// A client for the registry holding `r` (upstream overrides and credentials applied).
fn remote_client(r: &ImageRef, remote: &RemoteSources) -> Result<RegistryClient> {
    let endpoint = match remote.upstream_overrides.get(&r.registry) {
        Some(e) => e.clone(),
        None if r.registry == "docker.io" => "https://registry-1.docker.io".into(),
        None => r.registry.clone(),
    };
    let opts = remote.options.get(&r.registry).cloned().unwrap_or_default();
    RegistryClient::new(&endpoint, opts)
}

/// Another platform's image config of `r` (what `config-from` copies): the platform `want`
/// (`os/arch[/variant]`) or, when None, linux/amd64 if the image has it, else its first platform
/// that is not linux/riscv64. Returns (platform, config bytes, verified against their digest).
pub fn other_platform_config(r: &ImageRef, remote: &RemoteSources, want: Option<&str>) -> Result<(String, Vec<u8>)> {
    let source = format!("docker://{r}");
    let client = remote_client(r, remote)?;
    let top = client
        .get_manifest(&r.repository, r.api_reference())?
        .ok_or_else(|| bad(&source, format!("not found at {}", client.endpoint())))?;
    let manifest = match oci::kind_of(&top.bytes, Some(&top.media_type)).map_err(|e| bad(&source, e))? {
        Kind::Index => {
            let idx = oci::parse_index(&top.bytes).map_err(|e| bad(&source, e))?;
            let candidates: Vec<&Descriptor> =
                idx.manifests.iter().filter(|d| d.platform.as_ref().is_some_and(|p| p.os != "unknown" && !p.is_riscv64())).collect();
            let chosen = match want {
                Some(w) => candidates.iter().find(|d| d.platform.as_ref().is_some_and(|p| p.to_string() == w)),
                None => candidates
                    .iter()
                    .find(|d| d.platform.as_ref().is_some_and(|p| p.to_string() == "linux/amd64"))
                    .or_else(|| candidates.first()),
            };
            let Some(d) = chosen else {
                let has = oci::platforms_of(&idx).join(", ");
                let wanted = want.unwrap_or("platform other than linux/riscv64");
                return Err(bad(&source, format!("has no {wanted} image (it has {has})")));
            };
            let m = client
                .get_manifest(&r.repository, &d.digest)?
                .ok_or_else(|| bad(&source, format!("index entry {} is missing", d.digest)))?;
            if digest::sha256(&m.bytes) != d.digest {
                return Err(RegistryError::DigestMismatch {
                    source_desc: source,
                    what: "image manifest".into(),
                    expected: d.digest.clone(),
                    actual: digest::sha256(&m.bytes),
                });
            }
            m.bytes
        }
        Kind::Manifest => top.bytes,
    };
    let store = Store::Remote { client: Box::new(client), repo: r.repository.clone() };
    let m = oci::parse_manifest(&manifest).map_err(|e| bad(&source, e))?;
    let cfg = read_small(&store, &source, &m.config, "image config")?;
    let p: oci::ConfigPlatform = serde_json::from_slice(&cfg).map_err(|e| bad(&source, format!("invalid image config: {e}")))?;
    let platform = p.platform();
    if want.is_some_and(|w| w != platform.to_string()) || (want.is_none() && platform.is_riscv64()) {
        let wanted = want.unwrap_or("another platform than linux/riscv64");
        return Err(bad(&source, format!("is a single {platform} image, not {wanted}")));
    }
    Ok((platform.to_string(), cfg))
}

fn from_registry(source: String, r: &ImageRef, remote: &RemoteSources) -> Result<LoadedImage> {
    let client = remote_client(r, remote)?;
    let top = client
        .get_manifest(&r.repository, r.api_reference())?
        .ok_or_else(|| bad(&source, format!("not found at {}", client.endpoint())))?;
    let store_repo = r.repository.clone();
    match oci::kind_of(&top.bytes, Some(&top.media_type)).map_err(|e| bad(&source, e))? {
        Kind::Index => {
            let idx = oci::parse_index(&top.bytes).map_err(|e| bad(&source, e))?;
            let d = oci::select_riscv64(&idx)
                .map_err(|platforms| RegistryError::NoRiscv64 { source_desc: source.clone(), platforms })?
                .clone();
            let m = client
                .get_manifest(&r.repository, &d.digest)?
                .ok_or_else(|| bad(&source, format!("index entry {} is missing", d.digest)))?;
            let platforms = oci::platforms_of(&idx);
            let store = Store::Remote { client: Box::new(client), repo: store_repo };
            finish(source, store, Some(top.digest), m.bytes, Some(&m.media_type), platforms)
        }
        Kind::Manifest => {
            let store = Store::Remote { client: Box::new(client), repo: store_repo };
            finish(source, store, None, top.bytes, Some(&top.media_type), vec![])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_source_prefixes() {
        assert_eq!(Source::parse("oci-archive:/a/b.tar").unwrap(), Source::OciArchive("/a/b.tar".into()));
        assert_eq!(Source::parse("oci:dir").unwrap(), Source::OciDir("dir".into()));
        assert_eq!(Source::parse("docker-archive:x.tar").unwrap(), Source::DockerArchive("x.tar".into()));
        assert_eq!(Source::parse("docker://rancher/local-path-provisioner:v0.0.32").unwrap().describe(),
            "docker://docker.io/rancher/local-path-provisioner:v0.0.32");
        assert!(Source::parse("http://x").unwrap_err().to_string().contains("oci-archive:PATH"));
    }

    #[test]
    fn legacy_manifest_bytes_are_stable() {
        let c = Descriptor { media_type: String::new(), digest: "sha256:aa".into(), size: 2, platform: None };
        let l = Descriptor { media_type: String::new(), digest: "sha256:bb".into(), size: 3, platform: None };
        assert_eq!(
            String::from_utf8(legacy_manifest(&c, &[l])).unwrap(),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:aa","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:bb","size":3}]}"#
        );
    }

    #[test]
    fn path_normalization() {
        assert_eq!(norm("./blobs/sha256/ab"), "blobs/sha256/ab");
        assert_eq!(norm("abc/../def/layer.tar"), "def/layer.tar");
    }
}
