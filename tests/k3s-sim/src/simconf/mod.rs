//! The lab's side files, written only by the lab (never by rvcluster):
//! `/etc/rvlab/sim.conf` (knobs of the simulation) and `/etc/rvlab/upstream.conf` (where the
//! public registries "really" are). Owns their parsing; touches nothing else.
//!
//! sim.conf, one `key value` per line, `#` comments:
//!   ready-delay-ms N      containers become Ready N ms after they start (default 2000)
//!   sync-ms N             kubelet/controller loop period (default 1000)
//!   backoff-ms N          first image pull back-off (default 10000, doubles up to 300000)
//!   node-ip A             this node's address when config.yaml has no node-ip/bind-address
//!   arch A                the platform architecture pulls must match (default riscv64)
//!   k3s-version V         version this binary reports (overrides the stamped/built-in one)
//!   node-grace-ms N       a node without heartbeat for N ms turns NotReady (default 40000)
//!
//! upstream.conf, one `<registry-host> <endpoint-url>` per line, e.g.
//!   docker.io http://127.0.9.1:5000
//! Any registry host not listed (and not a loopback address itself) is unreachable.
use crate::paths::Paths;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct SimConf {
    pub ready_delay_ms: u64,
    pub sync_ms: u64,
    pub backoff_ms: u64,
    pub node_ip: Option<String>,
    pub arch: String,
    pub version: Option<String>,
    pub node_grace_ms: u64,
}

impl Default for SimConf {
    fn default() -> Self {
        SimConf {
            ready_delay_ms: 2000,
            sync_ms: 1000,
            backoff_ms: 10_000,
            node_ip: None,
            arch: "riscv64".into(),
            version: None,
            node_grace_ms: 40_000,
        }
    }
}

fn kv_lines(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|l| {
        let l = l.split('#').next().unwrap_or("").trim();
        if l.is_empty() {
            return None;
        }
        let mut it = l.splitn(2, char::is_whitespace);
        Some((it.next()?, it.next().unwrap_or("").trim()))
    })
}

impl SimConf {
    pub fn parse(text: &str) -> SimConf {
        let mut c = SimConf::default();
        for (k, v) in kv_lines(text) {
            let num = v.parse::<u64>().ok();
            match (k, num) {
                ("ready-delay-ms", Some(n)) => c.ready_delay_ms = n,
                ("sync-ms", Some(n)) => c.sync_ms = n.max(10),
                ("backoff-ms", Some(n)) => c.backoff_ms = n.max(10),
                ("node-grace-ms", Some(n)) => c.node_grace_ms = n,
                ("node-ip", _) => c.node_ip = Some(v.to_string()),
                ("arch", _) => c.arch = v.to_string(),
                ("k3s-version", _) => c.version = Some(v.to_string()),
                _ => {}
            }
        }
        c
    }
    pub fn load(paths: &Paths) -> SimConf {
        SimConf::parse(&std::fs::read_to_string(paths.sim_conf()).unwrap_or_default())
    }
}

#[derive(Debug, Clone, Default)]
pub struct UpstreamConf {
    pub map: BTreeMap<String, String>,
}

impl UpstreamConf {
    pub fn parse(text: &str) -> UpstreamConf {
        UpstreamConf {
            map: kv_lines(text)
                .map(|(k, v)| (k.to_string(), v.trim_end_matches('/').to_string()))
                .collect(),
        }
    }
    pub fn load(paths: &Paths) -> UpstreamConf {
        UpstreamConf::parse(&std::fs::read_to_string(paths.upstream_conf()).unwrap_or_default())
    }
    /// Where a registry host really is, if the lab provides it. docker.io's API host
    /// (registry-1.docker.io, index.docker.io) is the same registry.
    pub fn lookup(&self, authority: &str) -> Option<&str> {
        let alias = match authority {
            "registry-1.docker.io" | "index.docker.io" | "registry-1.docker.io:443" => "docker.io",
            a => a,
        };
        self.map
            .get(authority)
            .or_else(|| self.map.get(alias))
            .or_else(|| self.map.get(authority.strip_suffix(":443").unwrap_or(authority)))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parse_sim_conf() {
        let c = SimConf::parse("# x\nready-delay-ms 150\nnode-ip 127.0.3.1\nbogus\nsync-ms 50\n");
        assert_eq!(c.ready_delay_ms, 150);
        assert_eq!(c.sync_ms, 50);
        assert_eq!(c.node_ip.as_deref(), Some("127.0.3.1"));
        assert_eq!(c.arch, "riscv64");
    }
    #[test]
    fn upstream_aliases_docker_hub() {
        let u = UpstreamConf::parse("docker.io http://127.0.9.1:5000/\n");
        assert_eq!(u.lookup("registry-1.docker.io"), Some("http://127.0.9.1:5000"));
        assert_eq!(u.lookup("docker.io"), Some("http://127.0.9.1:5000"));
        assert_eq!(u.lookup("quay.io"), None);
    }
}
