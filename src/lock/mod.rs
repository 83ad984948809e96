//! cluster.lock: what every name in cluster.kdl resolved to (the k3s binary's digest and source,
//! each image's riscv64 manifest and index digests and the repository it is pushed to), so a
//! later apply on a fresh board installs bit-for-bit the same thing. Small, sorted, KDL, meant to
//! be committed. Owns reading, writing and comparing locks; never touches a host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kdl::KdlDocument;

use crate::spec::{BinarySource, Cluster};

/// Why cluster.lock could not be read. The texts name the file and the entry at fault.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("not valid KDL: {0:?}")]
    Kdl(kdl::KdlError),
    #[error("{entry} entry without {what}")]
    Missing { entry: &'static str, what: &'static str },
    #[error("host entry with a port outside 1-65535")]
    PortRange,
    #[error("negative generation")]
    NegativeGeneration,
    #[error("unknown entry `{0}`")]
    UnknownEntry(String),
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    In { path: PathBuf, source: Box<LockError> },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lock {
    pub k3s: Option<LockedK3s>,
    /// Keyed by the normalized image reference.
    pub images: BTreeMap<String, LockedImage>,
    /// Each host's current generation after the last apply (host name -> generation).
    pub hosts: BTreeMap<String, LockedHost>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedHost {
    pub generation: u64,
    /// sha256 of the generation's manifest (the board's /var/lib/rvcluster/generations/current.json).
    pub manifest: String,
    /// How to reach the host once cluster.kdl no longer lists it (`apply --prune`): its address,
    /// ssh user and port as apply last used them, and its role. Older locks lack them.
    pub address: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// `server`, `agent` or `registry`.
    pub role: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedK3s {
    pub version: String,
    pub sha256: String,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedImage {
    pub manifest: String,
    pub index: Option<String>,
    pub repository: String,
    pub source: String,
}

pub fn path_for(c: &Cluster) -> PathBuf {
    let stem = c.file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "cluster".into());
    c.base_dir.join(format!("{stem}.lock"))
}

fn q(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

impl Lock {
    /// The k3s entry as cluster.kdl says it now (the binary is named by digest in the file itself).
    pub fn k3s_from(c: &Cluster) -> LockedK3s {
        let source = match &c.k3s.binary.source {
            BinarySource::File(p) => {
                let rel = p.strip_prefix(&c.base_dir).unwrap_or(p);
                format!("file:{}", rel.display())
            }
            BinarySource::Url(u) => u.clone(),
        };
        LockedK3s { version: c.k3s.version.clone(), sha256: c.k3s.binary.sha256.clone(), source }
    }

    pub fn to_kdl(&self) -> String {
        let mut s = String::from(
            "// cluster.lock: what cluster.kdl resolved to. Written by `rvcluster apply`; commit it.\n\
             // `rvcluster apply --locked` refuses to install anything that differs from it.\n",
        );
        if let Some(k) = &self.k3s {
            s.push_str(&format!("k3s {} sha256={} source={}\n", q(&k.version), q(&k.sha256), q(&k.source)));
        }
        for (name, i) in &self.images {
            s.push_str(&format!("image {} manifest={} ", q(name), q(&i.manifest)));
            if let Some(ix) = &i.index {
                s.push_str(&format!("index={} ", q(ix)));
            }
            if i.repository.is_empty() {
                // Delivered as a tarball: it is in no registry.
                s.push_str(&format!("deliver=\"tarball\" source={}\n", q(&i.source)));
            } else {
                s.push_str(&format!("repository={} source={}\n", q(&i.repository), q(&i.source)));
            }
        }
        for (name, h) in &self.hosts {
            s.push_str(&format!("host {} generation={} manifest={}", q(name), h.generation, q(&h.manifest)));
            if let Some(r) = &h.role {
                s.push_str(&format!(" role={}", q(r)));
            }
            if let Some(a) = &h.address {
                s.push_str(&format!(" address={}", q(a)));
            }
            if let Some(u) = &h.user {
                s.push_str(&format!(" user={}", q(u)));
            }
            if let Some(p) = h.port {
                s.push_str(&format!(" port={p}"));
            }
            s.push('\n');
        }
        s
    }

    pub fn parse(text: &str) -> Result<Lock, LockError> {
        let doc = KdlDocument::parse_v2(text).map_err(LockError::Kdl)?;
        let mut lock = Lock::default();
        let prop = |n: &kdl::KdlNode, k: &str| n.get(k).and_then(|v| v.as_string()).map(str::to_string);
        for n in doc.nodes() {
            let arg = n.entry(0).and_then(|e| e.value().as_string()).map(str::to_string);
            match n.name().value() {
                "k3s" => {
                    lock.k3s = Some(LockedK3s {
                        version: arg.ok_or(LockError::Missing { entry: "k3s", what: "a version" })?,
                        sha256: prop(n, "sha256").ok_or(LockError::Missing { entry: "k3s", what: "sha256" })?,
                        source: prop(n, "source").unwrap_or_default(),
                    })
                }
                "image" => {
                    let name = arg.ok_or(LockError::Missing { entry: "image", what: "a name" })?;
                    lock.images.insert(
                        name,
                        LockedImage {
                            manifest: prop(n, "manifest").ok_or(LockError::Missing { entry: "image", what: "manifest" })?,
                            index: prop(n, "index"),
                            repository: prop(n, "repository").unwrap_or_default(),
                            source: prop(n, "source").unwrap_or_default(),
                        },
                    );
                }
                "host" => {
                    let name = arg.ok_or(LockError::Missing { entry: "host", what: "a name" })?;
                    let generation = n.get("generation").and_then(|v| v.as_integer()).ok_or(LockError::Missing { entry: "host", what: "generation=" })?;
                    let manifest = prop(n, "manifest").ok_or(LockError::Missing { entry: "host", what: "manifest=" })?;
                    let port = match n.get("port").and_then(|v| v.as_integer()) {
                        Some(p) => Some(u16::try_from(p).map_err(|_| LockError::PortRange)?),
                        None => None,
                    };
                    lock.hosts.insert(
                        name,
                        LockedHost {
                            generation: u64::try_from(generation).map_err(|_| LockError::NegativeGeneration)?,
                            manifest,
                            address: prop(n, "address"),
                            user: prop(n, "user"),
                            port,
                            role: prop(n, "role"),
                        },
                    );
                }
                other => return Err(LockError::UnknownEntry(other.to_string())),
            }
        }
        Ok(lock)
    }

    pub fn read(path: &Path) -> Result<Option<Lock>, LockError> {
        match std::fs::read_to_string(path) {
            Ok(t) => Lock::parse(&t).map(Some).map_err(|e| LockError::In { path: path.to_path_buf(), source: Box::new(e) }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LockError::Read { path: path.to_path_buf(), source: e }),
        }
    }

    /// Writes atomically (temp file, rename); unchanged content is not rewritten.
    pub fn write(&self, path: &Path) -> std::io::Result<bool> {
        let text = self.to_kdl();
        if std::fs::read_to_string(path).ok().as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        let tmp = path.with_extension("lock.tmp");
        std::fs::write(&tmp, &text)?;
        std::fs::rename(&tmp, path)?;
        Ok(true)
    }

    /// Hosts whose current generation (read from the boards: name -> manifest sha256, None when
    /// the board has none) is not the one this lock recorded.
    pub fn moved_hosts(&self, now: &BTreeMap<String, Option<(u64, String)>>) -> Vec<String> {
        let mut d = Vec::new();
        for (name, want) in &self.hosts {
            match now.get(name) {
                Some(Some((_, sha))) if *sha == want.manifest => {}
                Some(Some((n, _))) => d.push(format!(
                    "host {name}: locked generation {} but the board is at generation {n} (someone changed it)",
                    want.generation
                )),
                Some(None) => d.push(format!("host {name}: locked generation {} but the board has no generation (re-flashed?)", want.generation)),
                None => {}
            }
        }
        d
    }

    /// What differs between this (the lock on disk) and `now` (what resolution gives today).
    pub fn differences(&self, now: &Lock) -> Vec<String> {
        let mut d = Vec::new();
        match (&self.k3s, &now.k3s) {
            (Some(a), Some(b)) if a != b => d.push(format!(
                "k3s: locked {} sha256:{} ({}), now {} sha256:{} ({})",
                a.version, a.sha256, a.source, b.version, b.sha256, b.source
            )),
            (None, Some(b)) => d.push(format!("k3s: not in the lock, now {} sha256:{}", b.version, b.sha256)),
            _ => {}
        }
        for (name, b) in &now.images {
            match self.images.get(name) {
                None => d.push(format!("image {name}: not in the lock")),
                Some(a) if a.manifest != b.manifest || a.repository != b.repository => {
                    let at = |r: &str| if r.is_empty() { "a tarball".to_string() } else { r.to_string() };
                    d.push(format!(
                        "image {name}: locked {} in {}, now {} in {}",
                        a.manifest,
                        at(&a.repository),
                        b.manifest,
                        at(&b.repository)
                    ))
                }
                _ => {}
            }
        }
        for name in self.images.keys().filter(|n| !now.images.contains_key(*n)) {
            d.push(format!("image {name}: locked but no longer in cluster.kdl"));
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Lock {
        let mut l = Lock {
            k3s: Some(LockedK3s { version: "v1.34.3+k3s1".into(), sha256: "a".repeat(64), source: "file:k3s".into() }),
            images: BTreeMap::new(),
            hosts: BTreeMap::new(),
        };
        l.hosts.insert(
            "server1".into(),
            LockedHost { generation: 3, manifest: "d".repeat(64), address: Some("10.0.0.1".into()), user: Some("root".into()), port: Some(2222), role: Some("server".into()) },
        );
        l.hosts.insert("old".into(), LockedHost { generation: 1, manifest: "e".repeat(64), address: None, user: None, port: None, role: None });
        l.images.insert(
            "docker.io/riscv64/redis:1.1".into(),
            LockedImage {
                manifest: format!("sha256:{}", "b".repeat(64)),
                index: Some(format!("sha256:{}", "c".repeat(64))),
                repository: "riscv64/redis".into(),
                source: "docker-archive:images/redis.tar".into(),
            },
        );
        l
    }

    #[test]
    fn round_trips_and_is_stable() {
        let l = sample();
        let text = l.to_kdl();
        assert_eq!(Lock::parse(&text).unwrap(), l);
        assert_eq!(Lock::parse(&text).unwrap().to_kdl(), text);
        assert!(text.contains("image \"docker.io/riscv64/redis:1.1\" manifest=\"sha256:bbbb"));
    }

    #[test]
    fn hosts_record_how_to_reach_them_and_old_locks_still_parse() {
        let text = sample().to_kdl();
        assert!(text.contains("host \"server1\" generation=3 manifest=\"dddd") && text.contains(" role=\"server\" address=\"10.0.0.1\" user=\"root\" port=2222\n"), "{text}");
        let old = format!("host \"server1\" generation=3 manifest=\"{}\"\n", "d".repeat(64));
        let h = &Lock::parse(&old).unwrap().hosts["server1"];
        assert_eq!((h.generation, h.address.as_deref(), h.port), (3, None, None));
    }

    #[test]
    fn a_tarball_image_has_no_repository() {
        let mut l = sample();
        l.images.get_mut("docker.io/riscv64/redis:1.1").unwrap().repository = String::new();
        let text = l.to_kdl();
        assert!(text.contains("deliver=\"tarball\" source=") && !text.contains("repository="), "{text}");
        assert_eq!(Lock::parse(&text).unwrap(), l);
        assert!(sample().differences(&l)[0].contains("now sha256:bbbb"));
        assert!(sample().differences(&l)[0].ends_with("in a tarball"));
    }

    #[test]
    fn differences_name_what_moved() {
        let a = sample();
        let mut b = sample();
        assert!(a.differences(&b).is_empty());
        b.images.get_mut("docker.io/riscv64/redis:1.1").unwrap().manifest = format!("sha256:{}", "d".repeat(64));
        b.k3s.as_mut().unwrap().sha256 = "e".repeat(64);
        let d = a.differences(&b);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].starts_with("k3s: locked"));
        assert!(d[1].contains("redis") && d[1].contains("dddd"));
    }

    #[test]
    fn a_host_at_another_generation_is_named() {
        let l = sample();
        let mut now = BTreeMap::new();
        now.insert("server1".to_string(), Some((3, "d".repeat(64))));
        assert!(l.moved_hosts(&now).is_empty());
        now.insert("server1".to_string(), Some((4, "e".repeat(64))));
        let d = l.moved_hosts(&now);
        assert!(d[0].contains("locked generation 3") && d[0].contains("generation 4"), "{d:?}");
        now.insert("server1".to_string(), None);
        assert!(l.moved_hosts(&now)[0].contains("re-flashed"));
    }
}
