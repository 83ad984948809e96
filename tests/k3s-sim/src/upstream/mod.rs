//! Deterministic tiny images (real OCI / Docker media types, gzip layers built deterministically)
//! described by fixtures/upstream/images.txt, and their push over the Distribution HTTP API to a
//! registry endpoint (the lab's "docker.io"). Owns the image bytes; touches no node files.
use crate::pull::{MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_OCI_INDEX, MT_OCI_MANIFEST, do_request, http_agent};
use crate::util::{digest_of, sha256_hex};
use serde_json::{Value, json};
use std::io::Write;

pub const IMAGES_TXT: &str = include_str!("../../../../fixtures/upstream/images.txt");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(s: &str) -> Result<Platform, String> {
        let mut it = s.split('/');
        let os = it.next().filter(|x| !x.is_empty()).ok_or(format!("bad platform {s:?}"))?;
        let arch = it.next().ok_or(format!("bad platform {s:?}"))?;
        Ok(Platform { os: os.into(), arch: arch.into(), variant: it.next().map(str::to_string) })
    }
    pub fn label(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{}", self.os, self.arch, v),
            None => format!("{}/{}", self.os, self.arch),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    DockerList,
    OciIndex,
    DockerSingle,
    OciSingle,
}

#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub repository: String,
    pub tag: String,
    pub format: Format,
    pub platforms: Vec<Platform>,
}

impl ImageSpec {
    pub fn has_platform(&self, os: &str, arch: &str) -> bool {
        self.platforms.iter().any(|p| p.os == os && p.arch == arch)
    }
}

pub fn parse_catalog(text: &str) -> Result<Vec<ImageSpec>, String> {
    let mut out = Vec::new();
    for (no, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut f = line.split_whitespace();
        let name = f.next().unwrap_or_default();
        let (repository, tag) = name.rsplit_once(':').ok_or(format!("line {}: {name:?} has no tag", no + 1))?;
        let format = match f.next() {
            Some("docker-list") => Format::DockerList,
            Some("oci-index") => Format::OciIndex,
            Some("docker-single") => Format::DockerSingle,
            Some("oci-single") => Format::OciSingle,
            other => return Err(format!("line {}: unknown format {other:?}", no + 1)),
        };
        let platforms = f.map(Platform::parse).collect::<Result<Vec<_>, _>>()?;
        if platforms.is_empty() || (matches!(format, Format::DockerSingle | Format::OciSingle) && platforms.len() != 1) {
            return Err(format!("line {}: wrong number of platforms", no + 1));
        }
        out.push(ImageSpec { repository: repository.into(), tag: tag.into(), format, platforms });
    }
    Ok(out)
}

/// The built-in catalog (fixtures/upstream/images.txt).
pub fn catalog() -> Vec<ImageSpec> {
    parse_catalog(IMAGES_TXT).expect("fixtures/upstream/images.txt is valid")
}

/// A blob or manifest to push.
#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: String,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub spec: ImageSpec,
    pub blobs: Vec<Blob>,
    /// (digest, media type, bytes) of each platform manifest
    pub manifests: Vec<(String, String, Vec<u8>)>,
    /// the bytes pushed under the tag, and their media type
    pub top: (String, Vec<u8>),
    pub top_digest: String,
}

fn ustar(name: &str, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let put = |h: &mut [u8; 512], off: usize, len: usize, s: String| h[off..off + s.len().min(len)].copy_from_slice(&s.as_bytes()[..s.len().min(len)]);
    put(&mut h, 100, 8, "0000644\0".into());
    put(&mut h, 108, 8, "0000000\0".into());
    put(&mut h, 116, 8, "0000000\0".into());
    put(&mut h, 124, 12, format!("{:011o}\0", data.len()));
    put(&mut h, 136, 12, "00000000000\0".into());
    h[148..156].copy_from_slice(b"        ");
    h[156] = b'0';
    put(&mut h, 257, 8, "ustar\u{0}00".into());
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    put(&mut h, 148, 8, format!("{sum:06o}\0 "));
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// A deterministic layer: a tar with one file naming the image and platform, gzip with mtime 0.
pub fn layer(image: &str, p: &Platform) -> (Vec<u8>, String) {
    let content = format!("rvlab image {image} for {}\n", p.label());
    let mut tar = ustar("etc/rvlab-image", content.as_bytes());
    tar.extend_from_slice(&[0u8; 1024]);
    let diff_id = digest_of(&tar);
    let mut gz = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&tar).expect("in-memory gzip");
    (gz.finish().expect("in-memory gzip"), diff_id)
}

fn canonical(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("json")
}

pub fn build(spec: &ImageSpec) -> BuiltImage {
    let name = format!("{}:{}", spec.repository, spec.tag);
    let oci = matches!(spec.format, Format::OciIndex | Format::OciSingle);
    let (mt_manifest, mt_config, mt_layer) = if oci {
        (MT_OCI_MANIFEST, "application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar+gzip")
    } else {
        (MT_DOCKER_MANIFEST, "application/vnd.docker.container.image.v1+json", "application/vnd.docker.image.rootfs.diff.tar.gzip")
    };
    let mut blobs = Vec::new();
    let mut manifests = Vec::new();
    let mut descs = Vec::new();
    for p in &spec.platforms {
        let (gz, diff_id) = layer(&name, p);
        let mut cfg = json!({
            "architecture": p.arch,
            "os": p.os,
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/true"]},
            "created": "2025-01-01T00:00:00Z",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": "2025-01-01T00:00:00Z", "created_by": format!("rvlab seed {name}")}],
        });
        if let Some(v) = &p.variant {
            cfg["variant"] = json!(v);
        }
        let cfg_bytes = canonical(&cfg);
        let cfg_d = digest_of(&cfg_bytes);
        let layer_d = digest_of(&gz);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": mt_manifest,
            "config": {"mediaType": mt_config, "digest": cfg_d, "size": cfg_bytes.len()},
            "layers": [{"mediaType": mt_layer, "digest": layer_d, "size": gz.len()}],
        });
        let mbytes = canonical(&manifest);
        let md = digest_of(&mbytes);
        let mut platform = json!({"architecture": p.arch, "os": p.os});
        if let Some(v) = &p.variant {
            platform["variant"] = json!(v);
        }
        descs.push(json!({"mediaType": mt_manifest, "digest": md, "size": mbytes.len(), "platform": platform}));
        blobs.push(Blob { digest: cfg_d, data: cfg_bytes });
        blobs.push(Blob { digest: layer_d, data: gz });
        manifests.push((md, mt_manifest.to_string(), mbytes));
    }
    let top = match spec.format {
        Format::DockerList => (MT_DOCKER_LIST.to_string(), canonical(&json!({"schemaVersion": 2, "mediaType": MT_DOCKER_LIST, "manifests": descs}))),
        Format::OciIndex => (MT_OCI_INDEX.to_string(), canonical(&json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": descs}))),
        Format::DockerSingle | Format::OciSingle => (manifests[0].1.clone(), manifests[0].2.clone()),
    };
    let top_digest = digest_of(&top.1);
    BuiltImage { spec: spec.clone(), blobs, manifests, top, top_digest }
}

#[derive(Debug, Clone)]
pub struct SeededImage {
    /// e.g. rancher/mirrored-pause:3.6 (on docker.io)
    pub name: String,
    pub digest: String,
    pub platforms: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot reach registry {endpoint}: {message}")]
    Unreachable { endpoint: String, message: String },
    #[error("registry {endpoint} refused {what}: HTTP {status}: {body}")]
    Refused { endpoint: String, what: String, status: u16, body: String },
    #[error("invalid seed description: {0}")]
    Catalog(String),
}

/// Push one built image to `endpoint` (e.g. `http://127.0.9.1:5000`), under `repository`.
pub fn push(endpoint: &str, repository: &str, img: &BuiltImage) -> Result<(), SeedError> {
    let base = endpoint.trim_end_matches('/');
    let agent = http_agent(ureq::tls::TlsConfig::builder().build());
    let unreachable = |m: String| SeedError::Unreachable { endpoint: base.to_string(), message: m };
    for b in &img.blobs {
        let head = do_request(&agent, "HEAD", &format!("{base}/v2/{repository}/blobs/{}", b.digest), &[], None).map_err(unreachable)?;
        if head.status == 200 {
            continue;
        }
        let start = do_request(&agent, "POST", &format!("{base}/v2/{repository}/blobs/uploads/"), &[], Some(&[])).map_err(unreachable)?;
        if start.status != 202 {
            return Err(SeedError::Refused { endpoint: base.into(), what: format!("upload start for {repository}"), status: start.status, body: String::from_utf8_lossy(&start.body).into() });
        }
        let loc = match start.location.as_deref() {
            Some(l) if l.starts_with("http://") || l.starts_with("https://") => l.to_string(),
            Some(l) => format!("{base}{l}"),
            None => return Err(SeedError::Refused { endpoint: base.into(), what: "upload without Location".into(), status: start.status, body: String::new() }),
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = do_request(
            &agent,
            "PUT",
            &format!("{loc}{sep}digest={}", b.digest),
            &[("Content-Type", "application/octet-stream".into())],
            Some(&b.data),
        )
        .map_err(unreachable)?;
        if put.status != 201 {
            return Err(SeedError::Refused { endpoint: base.into(), what: format!("blob {}", b.digest), status: put.status, body: String::from_utf8_lossy(&put.body).into() });
        }
    }
    let put_manifest = |reference: &str, mt: &str, data: &[u8]| -> Result<(), SeedError> {
        let r = do_request(&agent, "PUT", &format!("{base}/v2/{repository}/manifests/{reference}"), &[("Content-Type", mt.to_string())], Some(data))
            .map_err(unreachable)?;
        if r.status != 201 {
            return Err(SeedError::Refused { endpoint: base.into(), what: format!("manifest {repository}:{reference}"), status: r.status, body: String::from_utf8_lossy(&r.body).into() });
        }
        Ok(())
    };
    if img.manifests.len() > 1 || matches!(img.spec.format, Format::DockerList | Format::OciIndex) {
        for (d, mt, data) in &img.manifests {
            put_manifest(d, mt, data)?;
        }
    }
    put_manifest(&img.spec.tag, &img.top.0, &img.top.1)
}

/// An OCI image layout as an uncompressed tar (what `ctr images export` / `skopeo copy
/// oci-archive:` produce), naming the image `docker.io/<repository>:<tag>` with the
/// `io.containerd.image.name` annotation: the format k3s imports from agent/images/.
pub fn oci_archive(img: &BuiltImage) -> Vec<u8> {
    let mut entries: Vec<(String, Vec<u8>)> = vec![("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec())];
    let mut seen = std::collections::BTreeSet::new();
    let mut add = |d: &str, data: &[u8], entries: &mut Vec<(String, Vec<u8>)>| {
        if seen.insert(d.to_string()) {
            entries.push((format!("blobs/sha256/{}", d.trim_start_matches("sha256:")), data.to_vec()));
        }
    };
    for b in &img.blobs {
        add(&b.digest, &b.data, &mut entries);
    }
    for (d, _, m) in &img.manifests {
        add(d, m, &mut entries);
    }
    add(&img.top_digest, &img.top.1, &mut entries);
    let name = format!("docker.io/{}:{}", img.spec.repository, img.spec.tag);
    let index = json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [{
        "mediaType": img.top.0, "digest": img.top_digest, "size": img.top.1.len(),
        "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": img.spec.tag},
    }]});
    entries.push(("index.json".into(), canonical(&index)));
    let mut out = Vec::new();
    for (n, d) in &entries {
        out.extend(ustar(n, d));
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// Seed the whole built-in catalog into the registry at `endpoint_url` (plays docker.io).
pub fn seed(endpoint_url: &str) -> Result<Vec<SeededImage>, SeedError> {
    seed_catalog(endpoint_url, &catalog())
}

pub fn seed_catalog(endpoint_url: &str, specs: &[ImageSpec]) -> Result<Vec<SeededImage>, SeedError> {
    // a few pushes in parallel: the registry's upload path is latency-bound
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<SeededImage, SeedError>>>> = specs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..6 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(spec) = specs.get(i) else { break };
                let img = build(spec);
                let r = push(endpoint_url, &spec.repository, &img).map(|_| SeededImage {
                    name: format!("{}:{}", spec.repository, spec.tag),
                    digest: img.top_digest.clone(),
                    platforms: spec.platforms.iter().map(Platform::label).collect(),
                });
                *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            });
        }
    });
    results.into_iter().map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()).expect("every image was pushed")).collect()
}

/// The sha256 (hex) of everything the seed would push, to prove determinism cheaply.
pub fn fingerprint() -> String {
    let mut all = String::new();
    for s in catalog() {
        all.push_str(&build(&s).top_digest);
    }
    sha256_hex(all.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn builds_are_deterministic_and_valid() {
        let specs = catalog();
        assert!(specs.len() >= 20);
        let a = build(&specs[0]);
        let b = build(&specs[0]);
        assert_eq!(a.top_digest, b.top_digest);
        assert_eq!(a.top.0, MT_DOCKER_LIST);
        for blob in &a.blobs {
            assert_eq!(digest_of(&blob.data), blob.digest);
        }
        // the gzip layer unpacks to a tar whose digest is the config's diff_id
        let (gz, diff) = layer("x:1", &Platform::parse("linux/riscv64").unwrap());
        let mut tar = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut tar).unwrap();
        assert_eq!(digest_of(&tar), diff);
        assert_eq!(&tar[257..262], b"ustar");
    }
    #[test]
    fn catalog_matches_reality_for_riscv64() {
        let c = catalog();
        let has = |n: &str| c.iter().find(|s| format!("{}:{}", s.repository, s.tag) == n).unwrap().has_platform("linux", "riscv64");
        assert!(!has("rancher/mirrored-pause:3.6"));
        assert!(!has("rancher/klipper-helm:v0.9.8-build20250709"));
        assert!(!has("rancher/klipper-lb:v0.4.13"));
        assert!(!has("rancher/mirrored-coredns-coredns:1.12.3"));
        assert!(has("rancher/local-path-provisioner:v0.0.32"));
        assert!(has("riscv64/redis:latest"));
        assert!(!has("library/redis:latest"));
        assert!(has("library/busybox:1.37.0"));
        // every system image of every known release has a riscv64 community port
        for r in crate::release::all() {
            for k in ["pause", "coredns", "local-storage", "local-storage-helper", "metrics-server", "helm", "traefik", "servicelb"] {
                let port = r.get(k).replacen("rancher/", "rvlabports/", 1);
                assert!(has(&port), "{port}");
            }
        }
    }
}
