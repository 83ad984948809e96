//! Where and how to reach one host: [`TargetSpec`] is what the caller knows (cluster.kdl values,
//! all optional), [`Target`] is the fully resolved result after ~/.ssh/config and defaults.
//! cluster.kdl values always override ~/.ssh/config.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::TransportError;
use super::ssh_config::{SshConfig, expand_path, parse_proxy_jump};

/// How commands that need root are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Become {
    /// Run as the login user (root logins).
    #[default]
    None,
    /// Wrap in `sudo -n` (never prompts; a password request is a clear error).
    Sudo,
}

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_USER: &str = "root";

/// A fully resolved SSH target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The node's name in cluster.kdl (used in messages and `rvcluster trust NAME`).
    pub name: String,
    /// Address or DNS name to connect to.
    pub host: String,
    pub port: u16,
    pub user: String,
    /// `"ssh-ed25519 AAAA..."` (an optional trailing comment is ignored).
    pub pinned_host_key: Option<String>,
    /// Explicit identity files; when empty the usual defaults (~/.ssh/id_ed25519, id_ecdsa, id_rsa) are tried.
    pub identity_files: Vec<PathBuf>,
    /// The hop to tunnel through (its own proxy_jump chains further).
    pub proxy_jump: Option<Box<Target>>,
    pub connect_timeout: Duration,
    pub privilege: Become,
}

impl Target {
    /// A target with defaults: port 22, user root, no privilege wrapper.
    pub fn new(name: impl Into<String>, host: impl Into<String>) -> Target {
        Target {
            name: name.into(),
            host: host.into(),
            port: 22,
            user: DEFAULT_USER.into(),
            pinned_host_key: None,
            identity_files: vec![],
            proxy_jump: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            privilege: Become::None,
        }
    }

    /// `host:port` for messages (`[v6]:port` for IPv6 literals).
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// What the caller knows about a host; `None` means "ask ~/.ssh/config, then defaults".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetSpec {
    pub name: String,
    /// An address, a DNS name, or a ~/.ssh/config alias.
    pub host: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub identity_files: Vec<PathBuf>,
    /// `[user@]host[:port][,...]` like OpenSSH's ProxyJump; hops are resolved through ~/.ssh/config.
    pub proxy_jump: Option<String>,
    pub host_key: Option<String>,
    /// `None`: root logins run directly, other users through `sudo -n`.
    pub privilege: Option<Become>,
    pub connect_timeout: Option<Duration>,
}

impl TargetSpec {
    pub fn new(name: impl Into<String>, host: impl Into<String>) -> TargetSpec {
        TargetSpec {
            name: name.into(),
            host: host.into(),
            ..Default::default()
        }
    }

    /// Resolve against an ssh config. `home` expands `~` in IdentityFile.
    pub fn resolve(&self, config: &SshConfig, home: &Path) -> Result<Target, TransportError> {
        self.resolve_depth(config, home, 0)
    }

    fn resolve_depth(
        &self,
        config: &SshConfig,
        home: &Path,
        depth: usize,
    ) -> Result<Target, TransportError> {
        if depth > 8 {
            return Err(TransportError::Config {
                what: format!("ProxyJump for {}", self.name),
                detail: "more than 8 hops (a loop in ~/.ssh/config?)".into(),
            });
        }
        let hc = config.resolve(&self.host);
        let host = hc.hostname.clone().unwrap_or_else(|| self.host.clone());
        let port = self.port.or(hc.port).unwrap_or(22);
        let user = self
            .user
            .clone()
            .or(hc.user.clone())
            .unwrap_or_else(|| DEFAULT_USER.into());
        let local_user = std::env::var("USER").unwrap_or_default();
        let identity_files = if self.identity_files.is_empty() {
            hc.identity_files
                .iter()
                .map(|f| expand_path(f, home, &local_user, &host, &user))
                .collect()
        } else {
            self.identity_files
                .iter()
                .map(|f| expand_path(&f.to_string_lossy(), home, &local_user, &host, &user))
                .collect()
        };
        let jump_value = self.proxy_jump.clone().or(hc.proxy_jump.clone());
        let mut proxy_jump: Option<Box<Target>> = None;
        if let Some(value) = jump_value {
            let hops = parse_proxy_jump(&value).map_err(|e| TransportError::Config {
                what: format!("ProxyJump for {}", self.name),
                detail: e.to_string(),
            })?;
            for hop in hops {
                let spec = TargetSpec {
                    name: format!("{} (jump {})", self.name, hop.host),
                    host: hop.host.clone(),
                    port: hop.port,
                    user: hop.user.clone(),
                    connect_timeout: self.connect_timeout,
                    ..Default::default()
                };
                // The hop's own ProxyJump from the config is ignored when chaining explicitly.
                let mut t = spec.resolve_depth(&strip_jumps(config), home, depth + 1)?;
                t.proxy_jump = proxy_jump.take();
                proxy_jump = Some(Box::new(t));
            }
        }
        let privilege = self.privilege.unwrap_or(if user == "root" {
            Become::None
        } else {
            Become::Sudo
        });
        Ok(Target {
            name: self.name.clone(),
            host,
            port,
            user,
            pinned_host_key: self.host_key.clone(),
            identity_files,
            proxy_jump,
            connect_timeout: self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            privilege,
        })
    }
}

fn strip_jumps(config: &SshConfig) -> SshConfig {
    // A hop listed in a ProxyJump chain is reached through the previous hop, never through
    // its own ProxyJump setting (OpenSSH does the same for explicit chains).
    config.without_proxy_jump()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdl_values_override_config() {
        let cfg = SshConfig::parse(
            "Host b1\n HostName 127.0.0.9\n User pi\n Port 2200\n IdentityFile ~/.ssh/k\n",
        );
        let mut spec = TargetSpec::new("b1", "b1");
        let t = spec.resolve(&cfg, Path::new("/home/me")).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.user.as_str()),
            ("127.0.0.9", 2200, "pi")
        );
        assert_eq!(t.identity_files, vec![PathBuf::from("/home/me/.ssh/k")]);
        assert_eq!(t.privilege, Become::Sudo);
        spec.user = Some("root".into());
        spec.port = Some(22);
        spec.identity_files = vec![PathBuf::from("~/other")];
        let t = spec.resolve(&cfg, Path::new("/home/me")).unwrap();
        assert_eq!((t.port, t.user.as_str()), (22, "root"));
        assert_eq!(t.identity_files, vec![PathBuf::from("/home/me/other")]);
        assert_eq!(t.privilege, Become::None);
    }

    #[test]
    fn proxy_jump_chain_resolves_hops_through_config() {
        let cfg = SshConfig::parse(
            "Host bastion\n HostName 127.0.0.5\n User jump\nHost b2\n ProxyJump a@127.0.0.4:2201,bastion\n",
        );
        let t = TargetSpec::new("b2", "b2")
            .resolve(&cfg, Path::new("/h"))
            .unwrap();
        let hop = t.proxy_jump.as_ref().unwrap();
        assert_eq!(
            (hop.host.as_str(), hop.port, hop.user.as_str()),
            ("127.0.0.5", 22, "jump")
        );
        let first = hop.proxy_jump.as_ref().unwrap();
        assert_eq!(
            (first.host.as_str(), first.port, first.user.as_str()),
            ("127.0.0.4", 2201, "a")
        );
        assert!(first.proxy_jump.is_none());
    }

    #[test]
    fn address_formats_ipv6() {
        let mut t = Target::new("n", "::1");
        t.port = 2222;
        assert_eq!(t.address(), "[::1]:2222");
        assert_eq!(Target::new("n", "127.0.0.1").address(), "127.0.0.1:22");
    }
}
