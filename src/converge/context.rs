//! The context every phase and host job shares: the cluster, the profiles, plan-or-apply, the
//! progress channel and the secrets read once at the start (become password, registry
//! password). Passed by reference; nothing here lives in a static.

use std::path::PathBuf;
use std::sync::mpsc::Sender;

use crate::profile::Profiles;
use crate::spec::{Cluster, Node};
use crate::transport::{Event, EventKind, HostKeyPolicy, SshConfig, SshHost, TargetSpec};

use super::error::Cause;

pub struct Ctx<'a> {
    pub cluster: &'a Cluster,
    pub profiles: &'a Profiles,
    /// Apply (true) or plan (false): decided here, once.
    pub wet: bool,
    pub accept_new: bool,
    pub parallel: usize,
    /// Progress events, drawn by src/output.
    pub events: Option<Sender<Event>>,
    /// `--ask-become-pass`: the sudo password for non-root logins, memory only.
    pub become_password: Option<String>,
    /// The registry password (auth), memory only.
    pub registry_password: Option<String>,
    /// Who is applying (written beside the board lock).
    pub owner: String,
    /// Air-gap image tarballs every node gets (built beforehand by `images::tarballs`).
    pub tarballs: Vec<crate::render::airgap::Tarball>,
    /// Credentials for every connection of this run (key passphrases asked once, kept here).
    pub auth: crate::transport::AuthConfig,
    /// Why the generations this run records are made (`apply`, `rollback to N`).
    pub reason: String,
    /// sha256 of cluster.kdl + cluster.lock, recorded in each generation.
    pub source: Option<String>,
    /// Generations kept per host (plus generation 0).
    pub keep: u32,
    /// `rvcluster rollback`: per node, the generation it goes back to (its files from the store).
    pub rollback: std::collections::BTreeMap<String, crate::generation::Rollback>,
    /// The health gate after a (re)start: how long a node has to come back (None: no gate).
    pub confirm: Option<std::time::Duration>,
    /// Set by the first host that failed its health gate: no further host is changed.
    halt: std::sync::Mutex<Option<String>>,
    /// Agents whose k3s restarts are cordoned and drained first (None: `--no-drain`).
    pub drain: Option<super::upgrade::Drain>,
    /// At most this many agents out of service at once (`--max-unavailable`).
    pub slots: super::upgrade::Slots,
}

impl<'a> Ctx<'a> {
    pub fn new(cluster: &'a Cluster, profiles: &'a Profiles, wet: bool) -> Ctx<'a> {
        Ctx {
            cluster,
            profiles,
            wet,
            accept_new: false,
            parallel: 32,
            events: None,
            become_password: None,
            registry_password: None,
            owner: super::session::owner_line(),
            tarballs: Vec::new(),
            auth: crate::transport::AuthConfig::from_env(),
            reason: "apply".into(),
            source: crate::generation::source_digest(&cluster.file, &crate::lock::path_for(cluster)),
            keep: cluster.generations_keep,
            rollback: Default::default(),
            confirm: None,
            halt: std::sync::Mutex::new(None),
            drain: None,
            slots: super::upgrade::Slots::new(1),
        }
    }

    /// A host failed its health gate: apply stops before the hosts not yet changed.
    pub fn halt(&self, host: &str) {
        let mut g = self.halt.lock().unwrap_or_else(|p| p.into_inner());
        g.get_or_insert_with(|| host.to_string());
    }

    /// Run one read-only command on each node at once (no lock); `None` where the node could not
    /// be reached or the command not run. For questions asked before anything is touched.
    pub fn ask_nodes(&self, nodes: &[&Node], command: &str) -> Vec<Option<crate::transport::ExecOutput>> {
        use crate::transport::Host;
        crate::transport::pool(nodes, self.parallel, |n| {
            self.connect(n).ok().and_then(|mut h| h.exec(command, None, Some(std::time::Duration::from_secs(60))).ok())
        })
    }

    pub fn halted_by(&self) -> Option<String> {
        self.halt.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn event(&self, host: &str, kind: EventKind) {
        if let Some(tx) = &self.events {
            let _ = tx.send(Event { host: host.to_string(), kind });
        }
    }

    /// Connect to a node.
    pub fn connect(&self, node: &Node) -> Result<SshHost, Cause> {
        self.connect_to(&node.name, &node.address, &node.ssh)
    }

    /// Connect to a host named in cluster.kdl: its ssh settings over ~/.ssh/config, host keys
    /// beside cluster.kdl, the become password when one was given.
    pub fn connect_to(&self, name: &str, address: &str, ssh: &crate::spec::Ssh) -> Result<SshHost, Cause> {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
        let config = SshConfig::load_user_default().unwrap_or_else(|_| SshConfig::parse(""));
        let spec = target_spec(name, address, ssh);
        let target = spec.resolve(&config, &home)?;
        let mut policy = HostKeyPolicy::new(Some(known_hosts_path(self.cluster)));
        policy.accept_new = self.accept_new;
        let mut host = SshHost::connect_with(&target, &policy, &self.auth)?;
        if let Some(key) = host.accepted_new_key() {
            self.event(name, EventKind::Note(format!("recorded new host key {key}")));
        }
        if let Some(pw) = &self.become_password {
            host.set_become_password(pw)?;
        }
        Ok(host)
    }
}

/// The target for a host named in cluster.kdl (a node or the registry host).
pub fn target_spec(name: &str, address: &str, ssh: &crate::spec::Ssh) -> TargetSpec {
    let mut spec = TargetSpec::new(name.to_string(), address.to_string());
    spec.port = ssh.port;
    spec.user = ssh.user.clone();
    spec.host_key = ssh.host_key.clone();
    spec.proxy_jump = ssh.proxy_jump.clone();
    spec.identity_files = ssh.identity.iter().cloned().collect();
    spec
}

pub fn known_hosts_path(c: &Cluster) -> PathBuf {
    c.base_dir.join("known_hosts")
}
