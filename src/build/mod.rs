//! Image builds: the `build` block of an `image` entry turned into a linux/riscv64 OCI archive the
//! way Nix's dockerTools builds images: declared inputs -> one normalized tar+gzip layer
//! ([`layer`]) on the base's layers -> config and manifest with a fixed `created`, as canonical
//! JSON ([`config`]) -> an OCI archive ([`archive`]). The same inputs give the same manifest
//! digest on any machine, umask, checkout path and file mtimes. Archives are cached beside
//! cluster.kdl under `.rvcluster/images/<sha256 of the inputs>.tar`; the image entry then pushes
//! like an `oci-archive:` one.
//!
//! Owns: reading the declared files, fetching the base image and the `config-from` config
//! (through registry::source), writing archives. Must not touch hosts, push anything (images and
//! registry do) or parse cluster.kdl (spec::build does).

pub mod archive;
pub mod config;
pub mod layer;

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::registry::client::BlobOpener;
use crate::registry::oci::Descriptor;
use crate::registry::source::{self, RemoteSources, Source};
use crate::registry::{digest, oci};
use crate::spec::reference::ImageRef;
use crate::spec::{Build, Cluster, Image, ImageSource};

/// The builder's identity, hashed into every build's inputs: bump it whenever the bytes a build
/// writes change for the same inputs, so no stale cache entry is used.
pub const BUILDER: &str = "rvcluster-image-build/1 tar=gnu gzip=flate2-miniz_oxide-6 json=canonical";

/// What went wrong inside one build step (collecting the inputs, writing the layer, the config
/// or the archive); `BuildError` adds which image.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("writing {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Blob(#[from] crate::registry::RegistryError),
    #[error("blob {digest} arrived as {got} ({n} of {size} bytes): the source is corrupted")]
    BlobCorrupted { digest: String, got: String, n: u64, size: u64 },
    #[error("{} is not a regular file", path.display())]
    NotRegular { path: PathBuf },
    #[error("/{up} is a file (from {by}) but /{inside} is inside it")]
    FileAsParent { up: String, by: String, inside: String },
    #[error("/{path} is written twice (by {first} and by {second})")]
    WrittenTwice { path: String, first: String, second: String },
    #[error("{}: the name {name:?} is not UTF-8", dir.display())]
    NameNotUtf8 { dir: PathBuf, name: std::ffi::OsString },
    #[error("{}: the link target is not UTF-8", path.display())]
    LinkNotUtf8 { path: PathBuf },
    #[error("{} is a socket, FIFO or device: only files, directories and symlinks go in an image", path.display())]
    Special { path: PathBuf },
    #[error("{} changed while the image was being built", path.display())]
    Changed { path: PathBuf },
    #[error("the base image's config is not a JSON object")]
    BaseConfigNotObject,
    #[error("config-from: invalid image config: {0}")]
    ConfigFrom(serde_json::Error),
    #[error("the base image's config has invalid rootfs.diff_ids")]
    BadDiffIds,
    #[error("the base image's config has no rootfs.diff_ids")]
    NoDiffIds,
    #[error("base layer media type `{0}` is not supported (foreign or unknown layer)")]
    LayerType(String),
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("image {image}: {reason}")]
    Input { image: String, reason: StepError },
    #[error("image {image}: base {base}: {reason}")]
    Base { image: String, base: String, reason: String },
    #[error("image {image}: config-from {from}: {reason}")]
    ConfigFrom { image: String, from: String, reason: String },
    #[error("image {image}: {reason}")]
    Write { image: String, reason: StepError },
    #[error("SOURCE_DATE_EPOCH=`{0}` is not a whole number of seconds since 1970 (unset it, or set source-date-epoch= on the build block)")]
    Epoch(String),
    #[error("image {0} has no build block")]
    NotBuilt(String),
}

/// A built image: its archive and manifest digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub image: String,
    pub archive: PathBuf,
    pub manifest_digest: String,
    /// sha256 (hex) of the inputs: the archive's name in the cache.
    pub inputs: String,
    /// Taken from the cache (not built now).
    pub cached: bool,
}

pub struct Options<'a> {
    /// Where `docker://` base and config-from images are fetched from.
    pub remote: &'a RemoteSources,
    /// Build even when the cache has the inputs' archive (apply --locked, image build --rebuild).
    pub rebuild: bool,
}

/// `.rvcluster/images` beside cluster.kdl.
pub fn cache_dir(base_dir: &Path) -> PathBuf {
    base_dir.join(".rvcluster").join("images")
}

/// The build's epoch: `source-date-epoch=` on the block, else $SOURCE_DATE_EPOCH, else 0.
pub fn epoch(b: &Build) -> Result<u64, BuildError> {
    if let Some(e) = b.epoch {
        return Ok(e);
    }
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v.parse::<u64>().ok().filter(|e| *e <= 253_402_300_799).ok_or(BuildError::Epoch(v)),
        _ => Ok(0),
    }
}

/// Every image entry of the cluster with a build block.
pub fn buildable(c: &Cluster) -> impl Iterator<Item = (&Image, &Build)> {
    c.images.iter().filter_map(|i| match &i.source {
        ImageSource::Build(b) => Some((i, b.as_ref())),
        _ => None,
    })
}

/// Builds one image entry of the cluster (or takes it from the cache).
pub fn build(c: &Cluster, image: &Image, opts: &Options) -> Result<Built, BuildError> {
    let ImageSource::Build(b) = &image.source else { return Err(BuildError::NotBuilt(image.reference.to_string())) };
    build_spec(&cache_dir(&c.base_dir), &image.reference, b, opts)
}

/// The hash (hex) of everything the build's bytes depend on. No absolute path and no file
/// metadata but the declared or normalized mode enter it.
pub fn inputs_hash(reference: &ImageRef, b: &Build, epoch: u64, entries: &[layer::Entry]) -> String {
    let mut lines = vec![
        BUILDER.to_string(),
        format!("image {reference}"),
        format!("epoch {epoch}"),
        format!("base {}", b.base.as_ref().map(|r| r.to_string()).unwrap_or_else(|| "scratch".into())),
    ];
    if let Some(cf) = &b.config_from {
        lines.push(format!("config-from {} {}", cf.image, cf.platform.as_deref().unwrap_or("-")));
    }
    let c = &b.config;
    lines.push(format!("config {}", serde_json::json!({
        "entrypoint": c.entrypoint, "cmd": c.cmd, "env": c.env, "user": c.user,
        "workdir": c.workdir, "expose": c.expose, "labels": c.labels,
    })));
    lines.extend(entries.iter().map(layer::Entry::fingerprint));
    let mut h = Sha256::new();
    for l in &lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// The manifest digest of an archive in the cache (None when it is missing or unreadable).
fn cached_digest(path: &Path) -> Option<String> {
    if !path.is_file() {
        return None;
    }
    source::load(&Source::OciArchive(path.to_path_buf()), &RemoteSources::default()).ok().map(|i| i.manifest_digest)
}

/// Builds `b` as `reference` into `cache` (or takes it from there).
pub fn build_spec(cache: &Path, reference: &ImageRef, b: &Build, opts: &Options) -> Result<Built, BuildError> {
    let image = reference.to_string();
    let epoch = epoch(b)?;
    let entries = layer::collect(&b.inputs).map_err(|reason| BuildError::Input { image: image.clone(), reason })?;
    let inputs = inputs_hash(reference, b, epoch, &entries);
    let archive = cache.join(format!("{inputs}.tar"));
    if !opts.rebuild
        && let Some(manifest_digest) = cached_digest(&archive)
    {
        return Ok(Built { image, archive, manifest_digest, inputs, cached: true });
    }
    let write_err = |reason: StepError| BuildError::Write { image: image.clone(), reason };
    std::fs::create_dir_all(cache).map_err(|e| write_err(StepError::Io { path: cache.to_path_buf(), source: e }))?;

    // The base's linux/riscv64 image and its config.
    let base = match &b.base {
        None => None,
        Some(r) => {
            let berr = |reason: String| BuildError::Base { image: image.clone(), base: r.to_string(), reason };
            let loaded = source::load(&Source::Docker(r.clone()), opts.remote).map_err(|e| berr(e.to_string()))?;
            let mut cfg = Vec::new();
            loaded
                .open_blob(&loaded.config.digest, 0)
                .and_then(|rd| rd.take(8 << 20).read_to_end(&mut cfg).map_err(|e| crate::registry::RegistryError::Io { path: PathBuf::from(&loaded.source), reason: e.to_string() }))
                .map_err(|e| berr(e.to_string()))?;
            if digest::sha256(&cfg) != loaded.config.digest {
                return Err(berr(format!("its config does not match its digest {}", loaded.config.digest)));
            }
            Some((loaded, cfg))
        }
    };
    let from = match &b.config_from {
        None => None,
        Some(cf) => {
            let (_, cfg) = source::other_platform_config(&cf.image, opts.remote, cf.platform.as_deref()).map_err(|e| {
                BuildError::ConfigFrom { image: image.clone(), from: cf.image.to_string(), reason: e.to_string() }
            })?;
            Some(cfg)
        }
    };

    // Our layer, in a temp file beside the cache entry.
    let tmp = |what: &str| cache.join(format!(".{inputs}.{what}.{}.tmp", std::process::id()));
    let layer_path = tmp("layer");
    let added = if entries.is_empty() {
        None
    } else {
        Some(layer::write(&entries, epoch, &layer_path).map_err(|e| {
            let _ = std::fs::remove_file(&layer_path);
            write_err(e)
        })?)
    };
    let result = (|| {
        let mut layers: Vec<Descriptor> = Vec::new();
        let mut blobs: Vec<archive::Blob> = Vec::new();
        if let Some((loaded, _)) = &base {
            for l in &loaded.layers {
                let media_type = config::oci_layer_type(&l.media_type)?.to_string();
                layers.push(Descriptor { media_type, digest: l.digest.clone(), size: l.size, platform: None });
                blobs.push(archive::Blob { digest: l.digest.clone(), size: l.size, data: archive::Data::Opener(loaded) });
            }
        }
        if let Some(l) = &added {
            layers.push(Descriptor { media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(), digest: l.digest.clone(), size: l.size, platform: None });
            blobs.push(archive::Blob { digest: l.digest.clone(), size: l.size, data: archive::Data::File(l.path.clone()) });
        }
        let cfg = config::image_config(&config::Parts {
            base: base.as_ref().map(|(_, c)| c.as_slice()),
            from: from.as_deref(),
            declared: &b.config,
            epoch,
            added: added.as_ref().map(|l| l.diff_id.as_str()),
        })?;
        let cfg_desc = Descriptor { media_type: oci::OCI_CONFIG.into(), digest: digest::sha256(&cfg), size: cfg.len() as u64, platform: None };
        let manifest = config::manifest(&cfg_desc, &layers);
        let m_desc = Descriptor { media_type: oci::OCI_MANIFEST.into(), digest: digest::sha256(&manifest), size: manifest.len() as u64, platform: None };
        blobs.push(archive::Blob { digest: cfg_desc.digest.clone(), size: cfg_desc.size, data: archive::Data::Bytes(cfg) });
        blobs.push(archive::Blob { digest: m_desc.digest.clone(), size: m_desc.size, data: archive::Data::Bytes(manifest) });
        let index = archive::index_json(&m_desc, reference);
        let out = tmp("archive");
        if let Err(e) = archive::write(&out, &index, blobs, epoch) {
            let _ = std::fs::remove_file(&out);
            return Err(e);
        }
        std::fs::rename(&out, &archive).map_err(|e| StepError::Io { path: archive.clone(), source: e })?;
        Ok(m_desc.digest)
    })();
    let _ = std::fs::remove_file(&layer_path);
    let manifest_digest = result.map_err(write_err)?;
    Ok(Built { image, archive, manifest_digest, inputs, cached: false })
}

/// A file name for a built image's archive in an output directory: the reference with `/` and
/// `:` made `_` (`docker.io_rancher_mirrored-pause_3.6.tar`).
pub fn archive_name(reference: &ImageRef) -> String {
    let s: String = reference.to_string().chars().map(|c| if c == '/' || c == ':' || c == '@' { '_' } else { c }).collect();
    format!("{s}.tar")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{BuildConfig, BuildInput, BuildInputKind};

    fn spec(dir: &Path) -> Build {
        std::fs::write(dir.join("hello"), "hello riscv64\n").unwrap();
        Build {
            base: None,
            inputs: vec![BuildInput { kind: BuildInputKind::File { mode: Some(0o755) }, source: dir.join("hello"), dest: "/hello".into(), span: (0, 0).into() }],
            config: BuildConfig { entrypoint: Some(vec!["/hello".into()]), ..Default::default() },
            config_from: None,
            epoch: Some(0),
            span: (0, 0).into(),
        }
    }

    #[test]
    fn a_scratch_build_is_a_riscv64_archive_and_is_cached_by_its_inputs() {
        let d = tempfile::tempdir().unwrap();
        let r = ImageRef::parse("example.org/hello:1").unwrap();
        let b = spec(d.path());
        let remote = RemoteSources::default();
        let cache = d.path().join("cache");
        let first = build_spec(&cache, &r, &b, &Options { remote: &remote, rebuild: false }).unwrap();
        assert!(!first.cached);
        let loaded = source::load(&Source::OciArchive(first.archive.clone()), &remote).unwrap();
        assert_eq!(loaded.manifest_digest, first.manifest_digest);
        assert_eq!(loaded.layers.len(), 1);
        let again = build_spec(&cache, &r, &b, &Options { remote: &remote, rebuild: false }).unwrap();
        assert!(again.cached);
        assert_eq!(again.manifest_digest, first.manifest_digest);
        let rebuilt = build_spec(&cache, &r, &b, &Options { remote: &remote, rebuild: true }).unwrap();
        assert!(!rebuilt.cached);
        assert_eq!(rebuilt.manifest_digest, first.manifest_digest, "same inputs, same digest");
        let leftovers: Vec<_> = std::fs::read_dir(&cache).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".tmp")).collect();
        assert!(leftovers.is_empty(), "no temp file left behind");
        // Another epoch is another input.
        let later = Build { epoch: Some(1_700_000_000), ..b };
        let other = build_spec(&cache, &r, &later, &Options { remote: &remote, rebuild: false }).unwrap();
        assert_ne!(other.inputs, first.inputs);
        assert_ne!(other.manifest_digest, first.manifest_digest);
    }

    #[test]
    fn archive_names_are_flat() {
        assert_eq!(archive_name(&ImageRef::parse("rancher/mirrored-pause:3.6").unwrap()), "docker.io_rancher_mirrored-pause_3.6.tar");
    }
}
