//! Image tarballs in /var/lib/rancher/k3s/agent/images/, imported into the node's image store as
//! k3s does (at start and, since 1.29.13/1.30.9/1.31.5/1.32.0, when new files appear). Supported
//! here: OCI layout and docker-archive tarballs, uncompressed (.tar) or gzip (.tar.gz, .tgz);
//! other compressions are logged as unsupported by the simulator. An image without a
//! linux/<arch> manifest (or whose blobs are missing) is not imported. Owns nothing but reads.
use crate::image::ImageRef;
use crate::pull::{MT_DOCKER_LIST, MT_OCI_INDEX, Pulled};
use crate::util::digest_of;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// Entries of a tar archive (regular files only), by normalized path.
pub fn read_tar(data: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    let mut off = 0;
    let mut long_name: Option<String> = None;
    while off + 512 <= data.len() {
        let h = &data[off..off + 512];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        let field = |a: usize, b: usize| String::from_utf8_lossy(&h[a..b]).trim_end_matches('\0').trim().to_string();
        let size = usize::from_str_radix(&field(124, 136), 8).map_err(|_| "corrupt tar header (size)".to_string())?;
        let mut name = field(0, 100);
        let prefix = field(345, 500);
        if &h[257..262] == b"ustar" && !prefix.is_empty() {
            name = format!("{prefix}/{name}");
        }
        let typ = h[156];
        let start = off + 512;
        let end = start + size;
        if end > data.len() {
            return Err("truncated tar archive".into());
        }
        let body = &data[start..end];
        match typ {
            b'L' => long_name = Some(String::from_utf8_lossy(body).trim_end_matches('\0').to_string()),
            b'x' => {
                for rec in String::from_utf8_lossy(body).lines() {
                    if let Some(p) = rec.split_once(" path=").map(|x| x.1) {
                        long_name = Some(p.to_string());
                    }
                }
            }
            b'0' | 0 => {
                let n = long_name.take().unwrap_or(name);
                out.insert(n.trim_start_matches("./").to_string(), body.to_vec());
            }
            _ => {
                long_name = None;
            }
        }
        off = start + size.div_ceil(512) * 512;
    }
    Ok(out)
}

fn blob<'a>(files: &'a BTreeMap<String, Vec<u8>>, digest: &str) -> Result<&'a Vec<u8>, String> {
    let hex = digest.strip_prefix("sha256:").ok_or(format!("unsupported digest {digest}"))?;
    let b = files.get(&format!("blobs/sha256/{hex}")).ok_or(format!("content {digest}: not found"))?;
    if digest_of(b) != digest {
        return Err(format!("content {digest}: digest mismatch"));
    }
    Ok(b)
}

fn check_manifest(files: &BTreeMap<String, Vec<u8>>, m: &Value, arch: &str) -> Result<u64, String> {
    let cfg = blob(files, m["config"]["digest"].as_str().unwrap_or(""))?;
    let cv: Value = serde_json::from_slice(cfg).map_err(|e| e.to_string())?;
    if cv["architecture"].as_str() != Some(arch) || cv["os"].as_str() != Some("linux") {
        return Err("no match for platform in manifest: not found".into());
    }
    let mut size = cfg.len() as u64;
    for l in m["layers"].as_array().into_iter().flatten() {
        size += blob(files, l["digest"].as_str().unwrap_or(""))?.len() as u64;
    }
    Ok(size)
}

/// Import every image of one archive: (image name, result).
pub fn import_archive(display: &str, data: &[u8], arch: &str) -> Vec<(String, Result<Pulled, String>)> {
    let raw = if data.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        if let Err(e) = flate2::read::GzDecoder::new(data).read_to_end(&mut out) {
            return vec![(display.to_string(), Err(format!("gzip: {e}")))];
        }
        out
    } else {
        data.to_vec()
    };
    let files = match read_tar(&raw) {
        Ok(f) => f,
        Err(e) => return vec![(display.to_string(), Err(e))],
    };
    let mut out = Vec::new();
    if let Some(idx) = files.get("index.json") {
        let idx: Value = serde_json::from_slice(idx).unwrap_or(Value::Null);
        for d in idx["manifests"].as_array().into_iter().flatten() {
            let ann = &d["annotations"];
            let name = ann["io.containerd.image.name"].as_str().or(ann["org.opencontainers.image.ref.name"].as_str().filter(|n| n.contains('/') || n.contains('.')));
            let Some(name) = name.and_then(|n| ImageRef::parse(n).ok()) else { continue };
            let top = d["digest"].as_str().unwrap_or("").to_string();
            let res = (|| {
                let b = blob(&files, &top)?;
                let v: Value = serde_json::from_slice(b).map_err(|e| e.to_string())?;
                let mt = v["mediaType"].as_str().or(d["mediaType"].as_str()).unwrap_or("");
                let (m, md) = if mt == MT_OCI_INDEX || mt == MT_DOCKER_LIST || v.get("manifests").is_some() {
                    let pick = v["manifests"].as_array().into_iter().flatten().find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch).ok_or("no match for platform in manifest: not found")?;
                    let md = pick["digest"].as_str().unwrap_or("").to_string();
                    (serde_json::from_slice::<Value>(blob(&files, &md)?).map_err(|e| e.to_string())?, md)
                } else {
                    (v, top.clone())
                };
                let size = check_manifest(&files, &m, arch)?;
                Ok(Pulled { image: name.to_string(), image_id: format!("{}@{top}", name.name()), endpoint: format!("import:{display}"), repository: name.repository.clone(), manifest_digest: md, size })
            })();
            out.push((name.to_string(), res));
        }
    } else if let Some(mj) = files.get("manifest.json") {
        let list: Vec<Value> = serde_json::from_slice(mj).unwrap_or_default();
        for e in list {
            let cfg_path = e["Config"].as_str().unwrap_or("").to_string();
            for tag in e["RepoTags"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                let Ok(name) = ImageRef::parse(tag) else { continue };
                let res = (|| {
                    let cfg = files.get(&cfg_path).ok_or(format!("{cfg_path}: not found in archive"))?;
                    let cv: Value = serde_json::from_slice(cfg).map_err(|e| e.to_string())?;
                    if cv["architecture"].as_str() != Some(arch) {
                        return Err("no match for platform in manifest: not found".to_string());
                    }
                    let mut size = cfg.len() as u64;
                    for l in e["Layers"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                        size += files.get(l).ok_or(format!("{l}: not found in archive"))?.len() as u64;
                    }
                    let id = digest_of(cfg);
                    Ok(Pulled { image: name.to_string(), image_id: format!("{}@{id}", name.name()), endpoint: format!("import:{display}"), repository: name.repository.clone(), manifest_digest: id, size })
                })();
                out.push((name.to_string(), res));
            }
        }
    } else {
        out.push((display.to_string(), Err("neither an OCI layout (index.json) nor a docker archive (manifest.json)".into())));
    }
    out
}

/// Files of the images dir with a stable fingerprint (name, size, mtime) to import once each.
pub fn scan(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let Ok(md) = e.metadata() else { continue };
        if !md.is_file() {
            continue;
        }
        let name = e.file_name().to_string_lossy().to_string();
        let mtime = md.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
        out.push((name.clone(), format!("{name}:{}:{mtime}", md.len())));
    }
    out.sort();
    out
}

pub const SUPPORTED: &[&str] = &[".tar", ".tar.gz", ".tgz"];
pub const KNOWN: &[&str] = &[".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst", ".tar.lz4", ".tar.bz2"];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::{Format, ImageSpec, Platform, build};

    fn oci_layout(name: &str, platforms: &[&str]) -> Vec<u8> {
        let (repo, tag) = name.rsplit_once(':').unwrap();
        let spec = ImageSpec { repository: repo.into(), tag: tag.into(), format: Format::OciIndex, platforms: platforms.iter().map(|p| Platform::parse(p).unwrap()).collect() };
        crate::upstream::oci_archive(&build(&spec))
    }

    #[test]
    fn imports_riscv64_images_from_oci_layouts_plain_and_gzip() {
        let data = oci_layout("rancher/mirrored-pause:3.6", &["linux/amd64", "linux/riscv64"]);
        let r = import_archive("pause.tar", &data, "riscv64");
        assert_eq!(r.len(), 1);
        let p = r[0].1.as_ref().unwrap();
        assert_eq!(p.image, "docker.io/rancher/mirrored-pause:3.6");
        assert!(p.image_id.starts_with("docker.io/rancher/mirrored-pause@sha256:"));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &data).unwrap();
        let r = import_archive("pause.tar.gz", &gz.finish().unwrap(), "riscv64");
        assert!(r[0].1.is_ok());
        let amd = oci_layout("library/redis:7", &["linux/amd64"]);
        let r = import_archive("redis.tar", &amd, "riscv64");
        assert_eq!(r[0].1.as_ref().unwrap_err(), "no match for platform in manifest: not found");
    }
}
