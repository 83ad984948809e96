//! Air-gap tarballs on one node, as `rvcluster status` shows them: which rvcluster tarballs are in
//! /var/lib/rancher/k3s/agent/images/, which image each holds (read from its index.json, the
//! second member of the archive, so only its first few KiB travel) and whether k3s imported it
//! (`k3s ctr -n k8s.io images ls` lists that name with that digest). The script and the parsing
//! are pure; `probe` runs them over one SSH command.

use serde::Serialize;

use crate::render::airgap::{IMAGES_DIR, PREFIX};

const TAR: &str = "@@rv-tar ";
const CTR: &str = "@@rv-ctr";
const RC: &str = "@@rv-rc ";
/// Bytes of each tarball read: oci-layout and index.json are its first two members.
const HEAD: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TarballState {
    pub file: String,
    /// The image the tarball names (io.containerd.image.name), when its index.json could be read.
    pub image: Option<String>,
    pub manifest: Option<String>,
    /// containerd lists that image with that digest; None when k3s could not be asked.
    pub imported: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeTarballs {
    pub tarballs: Vec<TarballState>,
    /// Why containerd could not be asked (k3s not running...).
    pub ctr_error: Option<String>,
    /// Why the node could not be read at all (SSH).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl NodeTarballs {
    pub fn unreadable(error: String) -> NodeTarballs {
        NodeTarballs { tarballs: Vec::new(), ctr_error: None, error: Some(error) }
    }
}

/// One POSIX sh script: each rvcluster tarball's name and first bytes (base64), then containerd's
/// image list with its exit status.
pub fn script(k3s: &str) -> String {
    format!(
        "for f in {dir}/{PREFIX}*.tar; do [ -f \"$f\" ] || continue; echo \"{TAR}${{f##*/}}\"; \
         head -c {HEAD} \"$f\" | base64 | tr -d '\\n'; echo; done; echo {CTR}; \
         {k3s} ctr -n k8s.io images ls 2>&1; echo \"{RC}$?\"",
        dir = IMAGES_DIR,
        k3s = crate::transport::cmd::quote(k3s),
    )
}

/// (image name, manifest digest) from the start of a tarball rvcluster built.
pub fn index_of(head: &[u8]) -> Option<(String, String)> {
    let mut ar = tar::Archive::new(head);
    for entry in ar.entries().ok()? {
        let mut entry = entry.ok()?;
        if entry.path().ok()?.to_string_lossy() == "index.json" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            let m = &v["manifests"][0];
            let name = m["annotations"]["io.containerd.image.name"].as_str()?;
            return Some((name.to_string(), m["digest"].as_str()?.to_string()));
        }
    }
    None
}

/// The parsed output of [`script`].
pub fn parse(out: &str) -> NodeTarballs {
    use base64::Engine as _;
    let mut tarballs = Vec::new();
    let mut lines = out.lines();
    let mut ctr = Vec::new();
    let mut rc = None;
    let mut in_ctr = false;
    while let Some(l) = lines.next() {
        if let Some(file) = l.strip_prefix(TAR) {
            let head = lines.next().and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok()).unwrap_or_default();
            let idx = index_of(&head);
            tarballs.push(TarballState {
                file: file.to_string(),
                image: idx.as_ref().map(|i| i.0.clone()),
                manifest: idx.map(|i| i.1),
                imported: None,
            });
        } else if l == CTR {
            in_ctr = true;
        } else if let Some(code) = l.strip_prefix(RC) {
            rc = code.trim().parse::<i32>().ok();
        } else if in_ctr {
            ctr.push(l);
        }
    }
    let ctr_error = match rc {
        Some(0) => None,
        _ => Some(ctr.iter().rev().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_string()).unwrap_or_else(|| "no answer".into())),
    };
    if ctr_error.is_none() {
        // REF TYPE DIGEST SIZE PLATFORMS LABELS (SIZE itself may hold a space, e.g. "3.2 MiB").
        let listed: Vec<(&str, &str)> = ctr
            .iter()
            .skip(1)
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w.len() >= 3).then(|| (w[0], w[2]))
            })
            .collect();
        for t in &mut tarballs {
            if let (Some(i), Some(m)) = (&t.image, &t.manifest) {
                t.imported = Some(listed.iter().any(|(r, d)| r == i && d == m));
            }
        }
    }
    NodeTarballs { tarballs, ctr_error, error: None }
}

/// Reads one node's tarballs and containerd's images (read only).
pub fn probe(host: &mut dyn crate::transport::Host, k3s: &str) -> Result<NodeTarballs, crate::transport::TransportError> {
    let out = host.exec(&script(k3s), None, Some(std::time::Duration::from_secs(60)))?;
    Ok(parse(&out.stdout_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(name: &str, digest: &str) -> String {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_path(path).unwrap();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, data).unwrap();
        };
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        let idx = format!(r#"{{"schemaVersion":2,"manifests":[{{"digest":"{digest}","size":1,"annotations":{{"io.containerd.image.name":"{name}"}}}}]}}"#);
        add("index.json", idx.as_bytes());
        add("blobs/sha256/aa", &[7u8; 20000]);
        let all = b.into_inner().unwrap();
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&all[..HEAD])
    }

    #[test]
    fn names_each_tarball_and_whether_containerd_has_it() {
        let d1 = format!("sha256:{}", "1".repeat(64));
        let d2 = format!("sha256:{}", "2".repeat(64));
        let out = format!(
            "{TAR}rvcluster-pause_3.6-aaaa.tar\n{}\n{TAR}rvcluster-redis_1.1-bbbb.tar\n{}\n{TAR}rvcluster-broken-cccc.tar\n\n{CTR}\n\
             REF                                   TYPE                                                 DIGEST  SIZE     PLATFORMS     LABELS\n\
             docker.io/rancher/mirrored-pause:3.6  application/vnd.oci.image.manifest.v1+json  {d1}  291.6 KiB  linux/riscv64  io.cri-containerd.image=managed\n\
             docker.io/riscv64/redis:1.1  application/vnd.oci.image.manifest.v1+json  {d1}  1.0 MiB  linux/riscv64  -\n{RC}0\n",
            head_of("docker.io/rancher/mirrored-pause:3.6", &d1),
            head_of("docker.io/riscv64/redis:1.1", &d2),
        );
        let n = parse(&out);
        assert_eq!(n.ctr_error, None);
        assert_eq!(n.tarballs.len(), 3);
        assert_eq!(n.tarballs[0].image.as_deref(), Some("docker.io/rancher/mirrored-pause:3.6"));
        assert_eq!(n.tarballs[0].imported, Some(true));
        assert_eq!(n.tarballs[1].imported, Some(false), "listed, but with another digest");
        assert_eq!(n.tarballs[2].image, None);
        assert_eq!(n.tarballs[2].imported, None);
    }

    #[test]
    fn k3s_not_running_is_unknown_not_missing() {
        let out = format!("{TAR}rvcluster-x-aaaa.tar\n{}\n{CTR}\nctr: failed to dial \"/run/k3s/containerd/containerd.sock\": connection refused\n{RC}1\n", head_of("docker.io/library/x:1", "sha256:ab"));
        let n = parse(&out);
        assert!(n.ctr_error.as_deref().unwrap().contains("connection refused"));
        assert_eq!(n.tarballs[0].imported, None);
        assert!(script("/usr/local/bin/k3s").contains("/var/lib/rancher/k3s/agent/images/rvcluster-*.tar"));
    }
}
