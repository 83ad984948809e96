//! One normalized layer from local files and directory trees: entries sorted by path, parents
//! made explicit, mtime fixed, uid/gid 0 with no user or group names, modes 0755/0644 unless
//! declared, no xattrs or other metadata of the machine it is built on; then gzip with fixed
//! parameters. The same declared inputs give the same bytes on any machine, umask or checkout.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::StepError;
use crate::spec::{BuildInput, BuildInputKind};

/// Gzip level of every built layer (part of the builder's identity: changing it changes digests).
pub const GZIP_LEVEL: u32 = 6;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File { source: PathBuf, size: u64, sha256: String },
    Symlink { target: String },
}

/// One tar entry: `path` is relative to the image root (`usr/bin/x`), never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub mode: u32,
    pub kind: Kind,
}

impl Entry {
    /// The line this entry contributes to the hash of the build's inputs.
    pub fn fingerprint(&self) -> String {
        match &self.kind {
            Kind::Dir => format!("dir {:o} {}", self.mode, self.path),
            Kind::File { sha256, size, .. } => format!("file {:o} {size} {sha256} {}", self.mode, self.path),
            Kind::Symlink { target } => format!("symlink {} -> {target}", self.path),
        }
    }
}

/// The mode a file gets when none is declared: 0755 if any execute bit is set, else 0644. Only
/// the execute bit survives a git checkout; the rest depends on the umask.
fn normal_mode(meta: &std::fs::Metadata) -> u32 {
    if meta.permissions().mode() & 0o111 != 0 { 0o755 } else { 0o644 }
}

fn sha256_file(p: &Path) -> io::Result<(String, u64)> {
    let f = File::open(p)?;
    crate::registry::digest::sha256_reader(f)
}

/// Every entry the inputs put in the layer, sorted by path (byte order), with the parent
/// directories of each made explicit (0755). Err names the input and the problem.
pub fn collect(inputs: &[BuildInput]) -> Result<Vec<Entry>, StepError> {
    let mut out: BTreeMap<String, (Entry, String)> = BTreeMap::new();
    for input in inputs {
        let from = input.source.display().to_string();
        let dest = input.dest.trim_start_matches('/').to_string();
        match &input.kind {
            BuildInputKind::File { mode } => {
                let io = |e| StepError::Io { path: input.source.clone(), source: e };
                let meta = std::fs::metadata(&input.source).map_err(io)?;
                if !meta.is_file() {
                    return Err(StepError::NotRegular { path: input.source.clone() });
                }
                let (sha256, size) = sha256_file(&input.source).map_err(io)?;
                let mode = mode.unwrap_or_else(|| normal_mode(&meta));
                let kind = Kind::File { source: input.source.clone(), size, sha256 };
                add(&mut out, Entry { path: dest, mode, kind }, &from)?;
            }
            BuildInputKind::Dir => walk(&input.source, &dest, &mut out)?,
        }
    }
    // Parents, so the directories' metadata is ours, not whatever the runtime would invent.
    let paths: Vec<String> = out.keys().cloned().collect();
    for p in paths {
        let mut parent = p.as_str();
        while let Some((up, _)) = parent.rsplit_once('/') {
            match out.get(up) {
                Some((e, by)) if e.kind != Kind::Dir => {
                    return Err(StepError::FileAsParent { up: up.to_string(), by: by.clone(), inside: p.clone() });
                }
                Some(_) => {}
                None => {
                    let e = Entry { path: up.to_string(), mode: 0o755, kind: Kind::Dir };
                    out.insert(up.to_string(), (e, "a parent directory".into()));
                }
            }
            parent = up;
        }
    }
    Ok(out.into_values().map(|(e, _)| e).collect())
}

fn add(out: &mut BTreeMap<String, (Entry, String)>, e: Entry, by: &str) -> Result<(), StepError> {
    if e.path.is_empty() {
        return Ok(()); // the image root itself: never an entry
    }
    match out.get(&e.path) {
        Some((prev, _)) if prev.kind == Kind::Dir && e.kind == Kind::Dir => Ok(()),
        Some((_, prev_by)) => Err(StepError::WrittenTwice { path: e.path.clone(), first: prev_by.clone(), second: by.to_string() }),
        None => {
            out.insert(e.path.clone(), (e, by.to_string()));
            Ok(())
        }
    }
}

fn walk(dir: &Path, dest: &str, out: &mut BTreeMap<String, (Entry, String)>) -> Result<(), StepError> {
    let by = dir.display().to_string();
    add(out, Entry { path: dest.to_string(), mode: 0o755, kind: Kind::Dir }, &by)?;
    let dir_err = |e| StepError::Io { path: dir.to_path_buf(), source: e };
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(dir_err)?
        .map(|r| r.map(|d| d.file_name()))
        .collect::<io::Result<_>>()
        .map_err(dir_err)?;
    names.sort();
    for name in names {
        let Some(n) = name.to_str() else {
            return Err(StepError::NameNotUtf8 { dir: dir.to_path_buf(), name });
        };
        let src = dir.join(n);
        let path = if dest.is_empty() { n.to_string() } else { format!("{dest}/{n}") };
        let from = src.display().to_string();
        let io = |e| StepError::Io { path: src.clone(), source: e };
        let meta = std::fs::symlink_metadata(&src).map_err(io)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            walk(&src, &path, out)?;
        } else if ft.is_symlink() {
            let t = std::fs::read_link(&src).map_err(io)?;
            let target = t.to_str().ok_or_else(|| StepError::LinkNotUtf8 { path: src.clone() })?.to_string();
            add(out, Entry { path, mode: 0o777, kind: Kind::Symlink { target } }, &from)?;
        } else if ft.is_file() {
            let (sha256, size) = sha256_file(&src).map_err(io)?;
            let kind = Kind::File { source: src.clone(), size, sha256 };
            add(out, Entry { path, mode: normal_mode(&meta), kind }, &from)?;
        } else {
            return Err(StepError::Special { path: src.clone() });
        }
    }
    Ok(())
}

/// A writer that hashes and counts what passes through it.
pub struct HashWriter<W> {
    inner: W,
    hash: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter { inner, hash: Sha256::new(), count: 0 }
    }
    /// (`sha256:<hex>`, bytes, the inner writer).
    pub fn finish(self) -> (String, u64, W) {
        (format!("sha256:{}", hex::encode(self.hash.finalize())), self.count, self.inner)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A built layer blob, written to a file.
#[derive(Debug, Clone)]
pub struct Layer {
    pub path: PathBuf,
    /// Digest and size of the gzip blob.
    pub digest: String,
    pub size: u64,
    /// Digest of the uncompressed tar (the config's diff_id).
    pub diff_id: String,
}

/// Writes the entries as tar+gzip to `path`. A file that changed since `collect` is an error.
pub fn write(entries: &[Entry], mtime: u64, path: &Path) -> Result<Layer, StepError> {
    let file = File::create(path).map_err(|e| StepError::Io { path: path.to_path_buf(), source: e })?;
    let gz = flate2::GzBuilder::new().mtime(0).write(HashWriter::new(io::BufWriter::new(file)), flate2::Compression::new(GZIP_LEVEL));
    let mut tar = tar::Builder::new(HashWriter::new(gz));
    let io_err = |e: io::Error| StepError::Write { path: path.to_path_buf(), source: e };
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mode(e.mode);
        match &e.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                tar.append_data(&mut h, format!("{}/", e.path), io::empty()).map_err(io_err)?;
            }
            Kind::Symlink { target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                tar.append_link(&mut h, &e.path, target).map_err(io_err)?;
            }
            Kind::File { source, size, sha256 } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(*size);
                let f = File::open(source).map_err(|er| StepError::Io { path: source.clone(), source: er })?;
                let mut r = HashReader { inner: f.take(*size), hash: Sha256::new(), count: 0 };
                tar.append_data(&mut h, &e.path, &mut r).map_err(io_err)?;
                let got = format!("sha256:{}", hex::encode(r.hash.finalize()));
                if got != *sha256 || r.count != *size {
                    return Err(StepError::Changed { path: source.clone() });
                }
            }
        }
    }
    let tar_hash = tar.into_inner().map_err(io_err)?;
    let (diff_id, _, gz) = tar_hash.finish();
    let gz_hash = gz.finish().map_err(io_err)?;
    let (digest, size, mut file) = gz_hash.finish();
    file.flush().map_err(io_err)?;
    Ok(Layer { path: path.to_path_buf(), digest, size, diff_id })
}

struct HashReader<R> {
    inner: R,
    hash: Sha256,
    count: u64,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(kind: BuildInputKind, source: &Path, dest: &str) -> BuildInput {
        BuildInput { kind, source: source.to_path_buf(), dest: dest.into(), span: (0, 0).into() }
    }

    #[test]
    fn entries_are_sorted_with_explicit_parents_and_normal_modes() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("tree");
        std::fs::create_dir_all(root.join("etc/ssl")).unwrap();
        std::fs::write(root.join("etc/ssl/ca.pem"), "ca").unwrap();
        std::fs::write(root.join("etc/run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(root.join("etc/run.sh"), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(root.join("etc/ssl/ca.pem"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink("run.sh", root.join("etc/start")).unwrap();
        std::fs::write(d.path().join("pause"), "x").unwrap();
        let got = collect(&[
            input(BuildInputKind::File { mode: Some(0o4755) }, &d.path().join("pause"), "/usr/bin/pause"),
            input(BuildInputKind::Dir, &root, "/"),
        ])
        .unwrap();
        let lines: Vec<String> = got.iter().map(|e| format!("{} {:o}", e.path, e.mode)).collect();
        assert_eq!(
            lines,
            ["etc 755", "etc/run.sh 755", "etc/ssl 755", "etc/ssl/ca.pem 644", "etc/start 777", "usr 755", "usr/bin 755", "usr/bin/pause 4755"]
        );
    }

    #[test]
    fn a_path_written_twice_or_under_a_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), "a").unwrap();
        let a = d.path().join("a");
        let e = collect(&[input(BuildInputKind::File { mode: None }, &a, "/x"), input(BuildInputKind::File { mode: None }, &a, "/x/y")])
            .unwrap_err();
        assert!(e.to_string().contains("/x is a file"), "{e}");
    }
}
