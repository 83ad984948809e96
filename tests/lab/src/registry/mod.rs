//! The "upstream" registry playing docker.io: Debian's docker-registry (Distribution) on its own
//! loopback address with storage in the lab directory, killed with the lab. Owns
//! `<lab>/upstream`; seeding it with images is the k3s-sim crate's job.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{IoContext, LabError, Result};
use crate::ns::{Lifeline, NsProcess};

pub const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";

/// A running upstream registry.
#[derive(Debug)]
pub struct Upstream {
    addr: Ipv4Addr,
    port: u16,
    dir: PathBuf,
    proc: NsProcess,
}

/// docker-registry's config for plain HTTP on `addr:port` with storage in `root`.
pub fn registry_config(addr: Ipv4Addr, port: u16, root: &Path) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: {addr}:{port}\n",
        root.display()
    )
}

/// HTTP status code of `GET path` on `addr`, if it answered.
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).ok()?;
    std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()
}

impl Upstream {
    pub(crate) fn start(
        addr: Ipv4Addr,
        port: u16,
        dir: PathBuf,
        lifeline: &Lifeline,
    ) -> Result<Self> {
        if !Path::new(DOCKER_REGISTRY).exists() {
            return Err(LabError::Missing {
                what: format!(
                    "{DOCKER_REGISTRY} not found (the upstream registry and the registry host need it)"
                ),
                fix: "apt-get install docker-registry".into(),
            });
        }
        let data = dir.join("data");
        std::fs::create_dir_all(&data).ctx(|| format!("creating {}", data.display()))?;
        let cfg = dir.join("config.yml");
        std::fs::write(&cfg, registry_config(addr, port, &data))
            .ctx(|| format!("writing {}", cfg.display()))?;
        let script =
            format!("{DOCKER_REGISTRY} serve \"$1\" 3<&- </dev/null & read -r -u 3 _ || true");
        let cfg_s = cfg.to_string_lossy().into_owned();
        let proc = NsProcess::spawn(
            &["--mount", "--pid", "--fork", "--mount-proc", "--kill-child"],
            &["/bin/bash", "-c", &script, "rvlab-upstream", &cfg_s],
            &[],
            lifeline,
            &dir.join("registry.log"),
        )?;
        let mut up = Upstream {
            addr,
            port,
            dir,
            proc,
        };
        let sa = SocketAddr::from((addr, port));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if http_status(sa, "/v2/") == Some(200) {
                return Ok(up);
            }
            if !up.proc.alive() || Instant::now() > deadline {
                let log = std::fs::read_to_string(up.dir.join("registry.log")).unwrap_or_default();
                return Err(LabError::NotReady {
                    what: format!("upstream registry on {sa}"),
                    detail: log,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn address(&self) -> Ipv4Addr {
        self.addr
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    /// `127.a.b.c:5000`
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.addr, self.port)
    }
    /// `http://127.a.b.c:5000`
    pub fn url(&self) -> String {
        format!("http://{}", self.host_port())
    }
    /// The registry's storage root on the host.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_serves_plain_http_on_the_given_address() {
        let c = registry_config(Ipv4Addr::new(127, 170, 1, 2), 5000, Path::new("/L/up/data"));
        assert!(c.contains("  addr: 127.170.1.2:5000\n"));
        assert!(c.contains("    rootdirectory: /L/up/data\n"));
        assert!(!c.contains("tls"));
    }
}
