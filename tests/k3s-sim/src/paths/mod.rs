//! Well-known file locations of a k3s node, all under one root ("/" on a board). The root can
//! only be moved by the test-only environment variable `RVLAB_SIM_TEST_ROOT`, so integration
//! tests can run several nodes on one machine without namespaces. Owns path names only.
use std::path::{Path, PathBuf};

/// Test-only: relocates every path below this directory.
pub const TEST_ROOT_ENV: &str = "RVLAB_SIM_TEST_ROOT";

#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
}

impl Paths {
    pub fn from_env() -> Paths {
        match std::env::var_os(TEST_ROOT_ENV) {
            Some(r) if !r.is_empty() => Paths { root: PathBuf::from(r) },
            _ => Paths { root: PathBuf::from("/") },
        }
    }
    pub fn at(root: impl Into<PathBuf>) -> Paths {
        Paths { root: root.into() }
    }
    pub fn p(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }
    pub fn config_yaml(&self) -> PathBuf {
        self.p("/etc/rancher/k3s/config.yaml")
    }
    pub fn config_d(&self) -> PathBuf {
        self.p("/etc/rancher/k3s/config.yaml.d")
    }
    pub fn registries_yaml(&self) -> PathBuf {
        self.p("/etc/rancher/k3s/registries.yaml")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.p("/etc/rancher/k3s/k3s.yaml")
    }
    pub fn node_password(&self) -> PathBuf {
        self.p("/etc/rancher/node/password")
    }
    pub fn server_dir(&self) -> PathBuf {
        self.p("/var/lib/rancher/k3s/server")
    }
    pub fn manifests(&self) -> PathBuf {
        self.p("/var/lib/rancher/k3s/server/manifests")
    }
    pub fn token(&self) -> PathBuf {
        self.p("/var/lib/rancher/k3s/server/token")
    }
    pub fn node_token(&self) -> PathBuf {
        self.p("/var/lib/rancher/k3s/server/node-token")
    }
    pub fn tls_dir(&self) -> PathBuf {
        self.p("/var/lib/rancher/k3s/server/tls")
    }
    pub fn state_db(&self) -> PathBuf {
        self.p("/var/lib/rancher/k3s/server/db/rvlab-state.json")
    }
    /// The simulator's API audit log (one JSON object per line).
    pub fn audit_log(&self) -> PathBuf {
        self.p("/var/lib/rancher/k3s/server/logs/audit.log")
    }
    pub fn admin_token(&self) -> PathBuf {
        self.p("/var/lib/rancher/k3s/server/cred/rvlab-admin.token")
    }
    pub fn agent_images(&self) -> PathBuf {
        self.p("/var/lib/rancher/k3s/agent/images")
    }
    /// What containerd has in its content store (persisted across restarts, like the real one).
    pub fn image_store(&self) -> PathBuf {
        self.p("/var/lib/rancher/k3s/agent/containerd/rvlab-images.json")
    }
    /// What the running containerd was configured with (the sim's stand-in for its socket).
    pub fn containerd_runtime(&self) -> PathBuf {
        self.p("/run/k3s/containerd/rvlab-runtime.json")
    }
    pub fn certs_d(&self) -> PathBuf {
        self.p("/var/lib/rancher/k3s/agent/etc/containerd/certs.d")
    }
    pub fn sim_conf(&self) -> PathBuf {
        self.p("/etc/rvlab/sim.conf")
    }
    pub fn upstream_conf(&self) -> PathBuf {
        self.p("/etc/rvlab/upstream.conf")
    }
    pub fn os_release(&self) -> PathBuf {
        self.p("/etc/os-release")
    }
    /// Resolve a path the user wrote in a config file (absolute on the board).
    pub fn user_path(&self, p: &str) -> PathBuf {
        if Path::new(p).is_absolute() { self.p(p) } else { PathBuf::from(p) }
    }
}
