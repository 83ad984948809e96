//! Local content-addressed cache for downloaded artifacts (a k3s binary given by `url=`): each is
//! fetched once, streamed to a temp file while hashed, checked against the sha256 from
//! cluster.kdl, then renamed to `<cache>/sha256/<digest>`. Never touches a board.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::render::cache_path;

/// Why an artifact could not be fetched into the cache.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("creating {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("temp file in {}: {source}", dir.display())]
    TempFile { dir: PathBuf, source: std::io::Error },
    #[error("{url}: {source}")]
    Open { url: String, source: std::io::Error },
    #[error("downloading {url}: {source}")]
    Request { url: String, source: Box<ureq::Error> },
    #[error("downloading {url}: {source}")]
    Read { url: String, source: std::io::Error },
    #[error("writing the cache: {0}")]
    WriteCache(std::io::Error),
    #[error("{url}: sha256 is {got}, cluster.kdl says {want}; nothing was cached")]
    Mismatch { url: String, got: String, want: String },
    #[error("caching {}: {source}", path.display())]
    Persist { path: PathBuf, source: tempfile::PersistError },
}

/// The cached file for `sha256`, downloading `url` first when it is not cached yet.
pub fn fetch(url: &str, sha256: &str) -> Result<PathBuf, ArtifactError> {
    let dest = cache_path(sha256);
    if dest.is_file() && file_sha256(&dest).ok().as_deref() == Some(sha256) {
        return Ok(dest);
    }
    let dir = dest.parent().expect("cache paths have a parent");
    std::fs::create_dir_all(dir).map_err(|e| ArtifactError::CreateDir { path: dir.to_path_buf(), source: e })?;
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| ArtifactError::TempFile { dir: dir.to_path_buf(), source: e })?;
    let mut reader: Box<dyn Read> = if let Some(p) = url.strip_prefix("file://") {
        Box::new(std::fs::File::open(p).map_err(|e| ArtifactError::Open { url: url.to_string(), source: e })?)
    } else {
        let resp = ureq::get(url).call().map_err(|e| ArtifactError::Request { url: url.to_string(), source: Box::new(e) })?;
        Box::new(resp.into_body().into_reader())
    };
    let mut hasher = sha2::Sha256::new();
    let mut out = std::io::BufWriter::new(tmp.as_file());
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut buf).map_err(|e| ArtifactError::Read { url: url.to_string(), source: e })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(ArtifactError::WriteCache)?;
    }
    out.flush().map_err(ArtifactError::WriteCache)?;
    drop(out);
    let got = hex::encode(hasher.finalize());
    if got != sha256 {
        return Err(ArtifactError::Mismatch { url: url.to_string(), got, want: sha256.to_string() });
    }
    tmp.persist(&dest).map_err(|e| ArtifactError::Persist { path: dest.clone(), source: e })?;
    Ok(dest)
}

/// The `codec`-compressed form of the local file `local` (sha256 `sha256`), made once and kept
/// beside the cache entries as `<sha256>.zst` / `.gz` (written to a temp file, then renamed).
/// Compression is deterministic for given bytes, level and library version.
pub fn compressed(local: &Path, sha256: &str, codec: crate::transport::cmd::Codec) -> std::io::Result<PathBuf> {
    use crate::transport::cmd::Codec;
    let dest = cache_path(sha256).with_extension(codec.extension());
    if dest.is_file() {
        return Ok(dest);
    }
    let dir = dest.parent().expect("cache paths have a parent");
    std::fs::create_dir_all(dir)?;
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    let mut input = std::io::BufReader::new(std::fs::File::open(local)?);
    let out = std::io::BufWriter::new(tmp.as_file());
    match codec {
        Codec::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(out, 3)?;
            let threads = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
            if threads > 1 {
                enc.multithread(threads)?;
            }
            std::io::copy(&mut input, &mut enc)?;
            enc.finish()?.flush()?;
        }
        Codec::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::new(6));
            std::io::copy(&mut input, &mut enc)?;
            enc.finish()?.flush()?;
        }
    }
    tmp.persist(&dest).map_err(|e| e.error)?;
    Ok(dest)
}

pub fn file_sha256(p: &Path) -> std::io::Result<String> {
    crate::transport::host::sha256_reader(std::io::BufReader::new(std::fs::File::open(p)?)).map(|(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_once_verifies_and_refuses_a_wrong_digest() {
        let home = tempfile::tempdir().unwrap();
        // SAFETY: tests in this module are the only ones touching XDG_CACHE_HOME.
        unsafe { std::env::set_var("XDG_CACHE_HOME", home.path()) };
        let src = home.path().join("k3s");
        std::fs::write(&src, b"k3s-binary-bytes").unwrap();
        let sha = file_sha256(&src).unwrap();
        // A one-shot HTTP server on loopback.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req);
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\nConnection: close\r\n\r\nk3s-binary-bytes").unwrap();
        });
        let url = format!("http://127.0.0.1:{port}/k3s");
        let p = fetch(&url, &sha).unwrap();
        server.join().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"k3s-binary-bytes");
        // Cached: no server is listening any more, yet it succeeds.
        assert_eq!(fetch(&url, &sha).unwrap(), p);
        let wrong = "0".repeat(64);
        let err = fetch(&format!("file://{}", src.display()), &wrong).unwrap_err();
        assert!(matches!(err, ArtifactError::Mismatch { .. }) && err.to_string().contains("cluster.kdl says"), "{err}");
        assert!(!cache_path(&wrong).exists(), "a wrong download is never cached");
    }
}
