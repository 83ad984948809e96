//! Air-gap image tarballs as files of a node's desired state: one OCI layout archive per image
//! delivered as a tarball, in k3s' images directory, under a content-addressed name. Pure: the
//! tarballs themselves are built (and cached) by `crate::airgap` before rendering.
//!
//! k3s imports every tarball of /var/lib/rancher/k3s/agent/images/ at start and, since
//! v1.29.13 / v1.30.9 / v1.31.5 / v1.32.0, a file that appears while it runs (docs/registry-modes.md).
//! A content-addressed name means a changed image is a new file (imported on appearance) and the
//! old one a removed file; removing a tarball never removes the image from containerd.

use std::path::PathBuf;

use serde::Serialize;

use super::{Content, DesiredFile};

/// k3s' agent images directory (k3s-io/k3s pkg/agent/config: `<data-dir>/agent/images`).
pub const IMAGES_DIR: &str = "/var/lib/rancher/k3s/agent/images";
/// Prefix of the files rvcluster manages there (other files in the directory are left alone).
pub const PREFIX: &str = "rvcluster-";

/// One image's tarball, built locally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tarball {
    /// The reference pods ask for (normalized), as the tarball names it.
    pub image: String,
    /// The linux/riscv64 manifest digest inside.
    pub manifest: String,
    /// File name in [`IMAGES_DIR`].
    pub file_name: String,
    /// The built tarball in the local cache.
    pub local: PathBuf,
    pub sha256: String,
    pub size: u64,
}

impl Tarball {
    pub fn remote_path(&self) -> String {
        format!("{IMAGES_DIR}/{}", self.file_name)
    }
}

/// `rvcluster-<repository's last part>_<tag>-<first 16 hex of the tarball's sha256>.tar`: readable
/// on the board, and a new name whenever the content changes.
pub fn file_name(image: &crate::spec::reference::ImageRef, sha256: &str) -> String {
    let last = image.repository.rsplit('/').next().unwrap_or("image");
    let tag = image.tag.as_deref().unwrap_or("digest");
    let slug: String = format!("{last}_{tag}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .take(80)
        .collect();
    format!("{PREFIX}{slug}-{}.tar", &sha256[..16.min(sha256.len())])
}

/// Does this k3s release import a tarball that appears while it runs? (k3s-io/k3s#10973,
/// backported as #11556-#11559: v1.29.13, v1.30.9, v1.31.5, v1.32.0.) Older ones only import at
/// start, so a new tarball needs a restart there.
pub fn imports_at_runtime(version: &str) -> bool {
    let core = version.trim_start_matches('v').split(['+', '-']).next().unwrap_or("");
    let n: Vec<u32> = core.split('.').filter_map(|x| x.parse().ok()).collect();
    let [major, minor, patch] = n[..] else { return false };
    match (major, minor) {
        (m, _) if m > 1 => true,
        (1, m) if m >= 32 => true,
        (1, 31) => patch >= 5,
        (1, 30) => patch >= 9,
        (1, 29) => patch >= 13,
        _ => false,
    }
}

/// The tarball files of one node whose k3s `unit` runs release `version`.
pub fn files(tarballs: &[Tarball], version: &str, unit: &str) -> Vec<DesiredFile> {
    let restarts = if imports_at_runtime(version) { None } else { Some(unit.to_string()) };
    tarballs
        .iter()
        .map(|t| DesiredFile {
            path: t.remote_path(),
            content: Content::Local { path: t.local.clone(), sha256: t.sha256.clone() },
            mode: 0o644,
            owner: "root:root".into(),
            secret: false,
            restarts: restarts.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::reference::ImageRef;

    #[test]
    fn runtime_import_follows_the_backports() {
        for (v, want) in [
            ("v1.33.4+k3s1", true),
            ("v1.32.0+k3s1", true),
            ("v1.31.5+k3s1", true),
            ("v1.31.4+k3s1", false),
            ("v1.30.9+k3s1", true),
            ("v1.30.8+k3s1", false),
            ("v1.29.13+k3s1", true),
            ("v1.29.12+k3s1", false),
            ("v1.28.15+k3s1", false),
            ("v1.34.3-rc1+k3s1", true),
            ("garbage", false),
        ] {
            assert_eq!(imports_at_runtime(v), want, "{v}");
        }
    }

    #[test]
    fn names_are_readable_and_content_addressed() {
        let r = ImageRef::parse("docker.io/rancher/mirrored-pause:3.6").unwrap();
        let sha = "0123456789abcdef".repeat(4);
        assert_eq!(file_name(&r, &sha), "rvcluster-mirrored-pause_3.6-0123456789abcdef.tar");
        let t = Tarball {
            image: r.to_string(),
            manifest: "sha256:x".into(),
            file_name: file_name(&r, &sha),
            local: "/cache/x.tar".into(),
            sha256: sha.clone(),
            size: 1,
        };
        let f = files(std::slice::from_ref(&t), "v1.33.4+k3s1", "k3s");
        assert_eq!(f[0].path, "/var/lib/rancher/k3s/agent/images/rvcluster-mirrored-pause_3.6-0123456789abcdef.tar");
        assert_eq!(f[0].restarts, None, "imported when it appears");
        assert_eq!(f[0].sha256(), sha);
        assert_eq!(files(&[t], "v1.28.15+k3s1", "k3s-agent")[0].restarts.as_deref(), Some("k3s-agent"));
    }
}
