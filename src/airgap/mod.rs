//! Air-gap delivery: the image tarball of one `image` entry delivered as a tarball. It is an OCI
//! image layout in a tar archive holding only the linux/riscv64 image (manifest, config, layers),
//! its index.json naming it as pods ask for it (`io.containerd.image.name`, which containerd's
//! import uses for the image name). The bytes depend only on that name and the image: entries
//! in a fixed order, blobs sorted by digest, mtime 0, uid/gid 0, no user names; so a rebuild gives
//! the same file and the same content-addressed name on the nodes.
//!
//! Built tarballs are cached in the local content-addressed store (`render::cache_path`), found
//! again through a key made of the image name and its manifest digest, so a re-plan reads no blob.
//! Owns building and caching; never touches a host (the network only through a docker:// source).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::registry::LoadedImage;
use crate::registry::client::BlobOpener;
use crate::registry::oci;
use crate::render::airgap::{Tarball, file_name};
use crate::spec::reference::ImageRef;

/// Bumped when the tarball format changes (a new key: nothing stale is reused).
const FORMAT: &str = "rvcluster-airgap-v1";

/// Counts and hashes what passes through a writer.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    n: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Counts and hashes what is read through it (a blob checked against its digest).
struct Checked<R> {
    inner: R,
    hash: Sha256,
    n: u64,
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

/// Why an image's tarball could not be written or stored.
#[derive(Debug, thiserror::Error)]
pub enum AirgapError {
    #[error("tar entry {path}: {source}")]
    Entry { path: String, source: std::io::Error },
    #[error("writing the tarball of {image} ({what}): {source}")]
    Write { image: String, what: String, source: std::io::Error },
    #[error("{image}: unsupported digest {digest}")]
    Digest { image: String, digest: String },
    #[error("{image}: {source}")]
    Blob { image: String, source: crate::registry::RegistryError },
    #[error("{image}: blob {digest} from {from} is {got_size} bytes with digest {got} (expected {size} bytes): the source is corrupted")]
    Corrupted { image: String, digest: String, from: String, got_size: u64, got: String, size: u64 },
    #[error("no parent directory")]
    NoParent,
    #[error("creating {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Persist { path: PathBuf, source: tempfile::PersistError },
}

fn header(path: &str, size: u64, dir: bool) -> Result<tar::Header, AirgapError> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).map_err(|e| AirgapError::Entry { path: path.to_string(), source: e })?;
    h.set_size(size);
    h.set_mode(if dir { 0o755 } else { 0o644 });
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(if dir { tar::EntryType::Directory } else { tar::EntryType::Regular });
    h.set_cksum();
    Ok(h)
}

/// index.json of the layout: one manifest, named as pods ask for the image.
pub fn index_json(name: &ImageRef, img: &LoadedImage) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("strings serialize");
    let mut annotations = format!("{}:{}", q("io.containerd.image.name"), q(&name.to_string()));
    if let Some(tag) = &name.tag {
        annotations.push_str(&format!(",{}:{}", q("org.opencontainers.image.ref.name"), q(tag)));
    }
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":{},"digest":{},"size":{},"platform":{{"architecture":"riscv64","os":"linux"}},"annotations":{{{annotations}}}}}]}}"#,
        oci::OCI_INDEX,
        q(&img.manifest_media_type),
        q(&img.manifest_digest),
        img.manifest.len(),
    )
}

/// Writes the tarball of `img` named `name` to `out`; every blob is checked against its digest
/// while it streams. Returns the tarball's sha256 (hex) and size.
pub fn write_tarball(name: &ImageRef, img: &LoadedImage, out: impl Write) -> Result<(String, u64), AirgapError> {
    let mut b = tar::Builder::new(Hashing { inner: out, hash: Sha256::new(), n: 0 });
    let e = |what: &str, err: std::io::Error| AirgapError::Write { image: name.to_string(), what: what.to_string(), source: err };
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    b.append(&header("oci-layout", layout.len() as u64, false)?, &layout[..]).map_err(|x| e("oci-layout", x))?;
    let index = index_json(name, img);
    b.append(&header("index.json", index.len() as u64, false)?, index.as_bytes()).map_err(|x| e("index.json", x))?;
    b.append(&header("blobs/", 0, true)?, std::io::empty()).map_err(|x| e("blobs/", x))?;
    b.append(&header("blobs/sha256/", 0, true)?, std::io::empty()).map_err(|x| e("blobs/sha256/", x))?;
    let mut blobs: Vec<(String, u64)> = vec![(img.manifest_digest.clone(), img.manifest.len() as u64)];
    for d in img.blobs() {
        if !blobs.iter().any(|(x, _)| *x == d.digest) {
            blobs.push((d.digest.clone(), d.size));
        }
    }
    blobs.sort();
    for (digest, size) in blobs {
        let hex = digest.strip_prefix("sha256:").ok_or_else(|| AirgapError::Digest { image: name.to_string(), digest: digest.clone() })?;
        let path = format!("blobs/sha256/{hex}");
        let reader: Box<dyn Read + Send + '_> = if digest == img.manifest_digest {
            Box::new(&img.manifest[..])
        } else {
            img.open_blob(&digest, 0).map_err(|x| AirgapError::Blob { image: name.to_string(), source: x })?
        };
        let mut checked = Checked { inner: reader.take(size), hash: Sha256::new(), n: 0 };
        b.append(&header(&path, size, false)?, &mut checked).map_err(|x| e(&path, x))?;
        let got = format!("sha256:{}", hex::encode(checked.hash.finalize()));
        if checked.n != size || got != digest {
            return Err(AirgapError::Corrupted { image: name.to_string(), digest, from: img.source.clone(), got_size: checked.n, got, size });
        }
    }
    let mut w = b.into_inner().map_err(|x| e("end of archive", x))?;
    w.flush().map_err(|x| e("flush", x))?;
    Ok((hex::encode(w.hash.finalize()), w.n))
}

fn store_dir() -> PathBuf {
    crate::render::cache_path("x").parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// Where the key of (name, manifest) records which tarball it built.
fn key_path(name: &ImageRef, manifest_digest: &str) -> PathBuf {
    let key = crate::render::sha256_hex(format!("{FORMAT}\0{name}\0{manifest_digest}").as_bytes());
    store_dir().with_file_name("airgap").join(key)
}

/// The cached tarball for (name, manifest), if its file is still there with the recorded size.
fn cached(name: &ImageRef, manifest_digest: &str) -> Option<(String, u64)> {
    let rec = std::fs::read_to_string(key_path(name, manifest_digest)).ok()?;
    let (sha, size) = rec.trim().split_once(' ')?;
    let size: u64 = size.parse().ok()?;
    let ok = sha.len() == 64 && std::fs::metadata(crate::render::cache_path(sha)).is_ok_and(|m| m.len() == size);
    ok.then(|| (sha.to_string(), size))
}

fn write_atomic(p: &Path, text: &str) -> Result<(), AirgapError> {
    let dir = p.parent().ok_or(AirgapError::NoParent)?;
    std::fs::create_dir_all(dir).map_err(|e| AirgapError::CreateDir { path: dir.to_path_buf(), source: e })?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| AirgapError::Io { path: dir.to_path_buf(), source: e })?;
    tmp.write_all(text.as_bytes()).map_err(|e| AirgapError::Io { path: p.to_path_buf(), source: e })?;
    tmp.persist(p).map_err(|e| AirgapError::Persist { path: p.to_path_buf(), source: e })?;
    Ok(())
}

/// Whether [`tarball`] found the file in the cache or built it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Cached,
    Built,
}

/// The tarball of `img` named `name`: from the cache, or built into it now.
pub fn tarball(name: &ImageRef, img: &LoadedImage) -> Result<(Tarball, Origin), AirgapError> {
    let make = |sha: String, size: u64| Tarball {
        image: name.to_string(),
        manifest: img.manifest_digest.clone(),
        file_name: file_name(name, &sha),
        local: crate::render::cache_path(&sha),
        sha256: sha,
        size,
    };
    if let Some((sha, size)) = cached(name, &img.manifest_digest) {
        return Ok((make(sha, size), Origin::Cached));
    }
    let dir = store_dir();
    std::fs::create_dir_all(&dir).map_err(|e| AirgapError::CreateDir { path: dir.clone(), source: e })?;
    let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(|e| AirgapError::Io { path: dir.clone(), source: e })?;
    let (sha, size) = write_tarball(name, img, std::io::BufWriter::new(tmp.as_file()))?;
    tmp.as_file().sync_all().map_err(|e| AirgapError::Io { path: tmp.path().to_path_buf(), source: e })?;
    let dest = crate::render::cache_path(&sha);
    tmp.persist(&dest).map_err(|e| AirgapError::Persist { path: dest.clone(), source: e })?;
    write_atomic(&key_path(name, &img.manifest_digest), &format!("{sha} {size}\n"))?;
    Ok((make(sha, size), Origin::Built))
}
