//! Writing a built image as an OCI archive: a tar of an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/<hex>`), what `skopeo copy ... oci-archive:` and
//! `docker buildx --output type=oci` write. Entries sorted, fixed mtime, uid/gid 0, so the
//! archive's bytes depend only on the image. Every blob is checked against its digest on the way
//! in.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

use super::StepError;
use super::config::canonical;
use super::layer::HashWriter;
use crate::registry::client::BlobOpener;
use crate::registry::oci::{self, Descriptor};
use crate::spec::reference::ImageRef;

/// Where a blob's bytes come from.
pub enum Data<'a> {
    Bytes(Vec<u8>),
    File(PathBuf),
    /// Streamed from the base image's source (a registry).
    Opener(&'a dyn BlobOpener),
}

pub struct Blob<'a> {
    pub digest: String,
    pub size: u64,
    pub data: Data<'a>,
}

/// `index.json` of the layout: one linux/riscv64 manifest, named for containerd's import
/// (`io.containerd.image.name`, the full reference) and for skopeo (`org.opencontainers.image.ref.name`, the tag).
pub fn index_json(manifest: &Descriptor, reference: &ImageRef) -> Vec<u8> {
    let mut annotations = serde_json::Map::new();
    annotations.insert("io.containerd.image.name".into(), json!(reference.to_string()));
    if let Some(t) = &reference.tag {
        annotations.insert("org.opencontainers.image.ref.name".into(), json!(t));
    }
    canonical(&json!({
        "schemaVersion": 2,
        "mediaType": oci::OCI_INDEX,
        "manifests": [{
            "mediaType": oci::OCI_MANIFEST,
            "digest": manifest.digest,
            "size": manifest.size,
            "platform": { "architecture": "riscv64", "os": "linux" },
            "annotations": annotations,
        }],
    }))
}

fn header(size: u64, mtime: u64, dir: bool) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(size);
    if dir {
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
    } else {
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
    }
    h
}

/// Writes the archive to `out` (the caller renames it into place). Blobs are written once each,
/// sorted by digest.
pub fn write(out: &Path, index: &[u8], blobs: Vec<Blob>, mtime: u64) -> Result<(), StepError> {
    let io_err = |e: io::Error| StepError::Write { path: out.to_path_buf(), source: e };
    let file = File::create(out).map_err(io_err)?;
    let mut tar = tar::Builder::new(io::BufWriter::new(file));
    let mut blobs = blobs;
    blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
    blobs.dedup_by(|a, b| a.digest == b.digest);
    for d in ["blobs/", "blobs/sha256/"] {
        tar.append_data(&mut header(0, mtime, true), d, io::empty()).map_err(io_err)?;
    }
    for b in blobs {
        let name = format!("blobs/sha256/{}", crate::registry::digest::hex_part(&b.digest));
        let mut h = header(b.size, mtime, false);
        let reader: Box<dyn Read + '_> = match &b.data {
            Data::Bytes(v) => Box::new(io::Cursor::new(v.clone())),
            Data::File(p) => Box::new(File::open(p).map_err(|e| StepError::Io { path: p.clone(), source: e })?),
            Data::Opener(o) => o.open_blob(&b.digest, 0)?,
        };
        let mut counted = Counted { inner: reader.take(b.size), hash: HashWriter::new(io::sink()) };
        tar.append_data(&mut h, &name, &mut counted).map_err(io_err)?;
        let (got, n, _) = counted.hash.finish();
        if got != b.digest || n != b.size {
            return Err(StepError::BlobCorrupted { digest: b.digest.clone(), got, n, size: b.size });
        }
    }
    tar.append_data(&mut header(index.len() as u64, mtime, false), "index.json", index).map_err(io_err)?;
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    tar.append_data(&mut header(layout.len() as u64, mtime, false), "oci-layout", &layout[..]).map_err(io_err)?;
    let mut w = tar.into_inner().map_err(io_err)?;
    w.flush().map_err(io_err)?;
    w.into_inner().map_err(|e| io_err(e.into_error()))?.sync_all().map_err(io_err)?;
    Ok(())
}

/// A reader that hashes what is read through it.
struct Counted<R> {
    inner: R,
    hash: HashWriter<io::Sink>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.write_all(&buf[..n])?;
        Ok(n)
    }
}
