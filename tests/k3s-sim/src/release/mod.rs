//! Which k3s version this binary is and what that release packages (data in releases.txt).
//! The version comes from, in order: `k3s-version` in /etc/rvlab/sim.conf, a stamp appended
//! to the executable by the lab (`stamp_version`), the built-in DEFAULT_VERSION.
//! Owns release data only; reads the executable's tail, writes nothing except in `stamp_version`.
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

pub const RELEASES_TXT: &str = include_str!("releases.txt");
const STAMP_PREFIX: &str = "\n#rvlab-k3s-version=";

#[derive(Debug, Clone)]
pub struct Release {
    pub version: String,
    pub data: BTreeMap<String, String>,
}

impl Release {
    pub fn get(&self, key: &str) -> &str {
        self.data.get(key).map(String::as_str).unwrap_or("")
    }
    pub fn kubelet_version(&self) -> String {
        self.version.clone()
    }
}

fn parse_version(v: &str) -> (u32, u32, u32) {
    let core = v.trim_start_matches('v').split(['+', '-']).next().unwrap_or("");
    let mut it = core.split('.').map(|x| x.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0), it.next().unwrap_or(0))
}

pub fn all() -> Vec<Release> {
    let mut map: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for line in RELEASES_TXT.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split_whitespace();
        if let (Some(v), Some(k), Some(val)) = (f.next(), f.next(), f.next()) {
            map.entry(v.into()).or_default().insert(k.into(), val.into());
        }
    }
    map.into_iter().map(|(version, data)| Release { version, data }).collect()
}

/// The data for `version`: exact, else the newest known release not newer than it (with the
/// version strings replaced), else the oldest. Pause is 3.10.2 from v1.37 on.
pub fn for_version(version: &str) -> Release {
    let rels = all();
    let want = parse_version(version);
    let mut r = rels
        .iter()
        .find(|r| r.version == version)
        .or_else(|| rels.iter().filter(|r| parse_version(&r.version) <= want).max_by_key(|r| parse_version(&r.version)))
        .unwrap_or(&rels[0])
        .clone();
    if r.version != version {
        r.version = version.to_string();
        r.data.insert("kubernetes".into(), version.to_string());
        if want >= (1, 37, 0) {
            r.data.insert("pause".into(), "rancher/mirrored-pause:3.10.2".into());
        }
    }
    r
}

/// Read a version stamp appended to an executable by `stamp_version`.
pub fn read_stamp(exe: &Path) -> Option<String> {
    let mut f = std::fs::File::open(exe).ok()?;
    let len = f.metadata().ok()?.len();
    let n = len.min(128);
    f.seek(SeekFrom::Start(len - n)).ok()?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).ok()?;
    let s = String::from_utf8_lossy(&tail);
    let i = s.rfind(STAMP_PREFIX)?;
    let v = s[i + STAMP_PREFIX.len()..].trim();
    (!v.is_empty() && v.len() < 64).then(|| v.to_string())
}

/// For the lab: copy the k3s-sim binary to `dst` with `version` stamped at its end, so each
/// "k3s release binary" is a distinct file (distinct sha256) reporting its own version.
pub fn stamp_version(src: &Path, dst: &Path, version: &str) -> std::io::Result<()> {
    let mut data = std::fs::read(src)?;
    if let Some(i) = String::from_utf8_lossy(&data[data.len().saturating_sub(128)..]).rfind(STAMP_PREFIX) {
        let cut = data.len().saturating_sub(128) + i;
        data.truncate(cut);
    }
    data.extend_from_slice(format!("{STAMP_PREFIX}{version}\n").as_bytes());
    std::fs::write(dst, data)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o755))
}

/// The version this process reports.
pub fn effective_version(sim: &crate::simconf::SimConf) -> String {
    if let Some(v) = &sim.version {
        return v.clone();
    }
    if let Some(v) = std::env::current_exe().ok().and_then(|p| read_stamp(&p)) {
        return v;
    }
    crate::DEFAULT_VERSION.to_string()
}

/// `k3s --version` output, like the real one.
pub fn version_text(version: &str) -> String {
    let r = for_version(version);
    let hash = &crate::util::sha256_hex(version.as_bytes())[..8];
    format!("k3s version {version} ({hash})\ngo version {}\n", r.get("go"))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn known_and_unknown_versions() {
        let r = for_version("v1.34.3+k3s1");
        assert_eq!(r.get("local-storage"), "rancher/local-path-provisioner:v0.0.32");
        let r = for_version("v1.34.9+k3s1");
        assert_eq!(r.get("coredns"), "rancher/mirrored-coredns-coredns:1.13.1");
        assert_eq!(r.get("kubernetes"), "v1.34.9+k3s1");
        assert_eq!(for_version("v1.37.1+k3s1").get("pause"), "rancher/mirrored-pause:3.10.2");
        assert!(version_text("v1.33.4+k3s1").starts_with("k3s version v1.33.4+k3s1 ("));
    }
    #[test]
    fn stamp_roundtrip() {
        let d = std::env::temp_dir().join(format!("k3s-sim-stamp-{}", std::process::id()));
        std::fs::write(&d, b"\x7fELF....binary").unwrap();
        let out = d.with_extension("out");
        stamp_version(&d, &out, "v1.34.3+k3s1").unwrap();
        assert_eq!(read_stamp(&out).as_deref(), Some("v1.34.3+k3s1"));
        stamp_version(&out, &out.with_extension("2"), "v1.33.4+k3s1").unwrap();
        assert_eq!(read_stamp(&out.with_extension("2")).as_deref(), Some("v1.33.4+k3s1"));
        assert_eq!(std::fs::read(out.with_extension("2")).unwrap().len(), std::fs::read(&out).unwrap().len());
        for p in [d.clone(), out.clone(), out.with_extension("2")] {
            let _ = std::fs::remove_file(p);
        }
    }
}
