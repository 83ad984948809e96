//! `rvcluster trust NODE [--replace]`: fetch a node's host key, show its fingerprint and record it
//! in the known_hosts beside cluster.kdl. The only way a changed key is ever accepted.

use clap::Args;

use super::{EXIT_FAILED, EXIT_INVALID, EXIT_OK, Global, Target, load_cluster};
use crate::output::Output;

#[derive(Args, Debug)]
pub struct TrustArgs {
    /// The node (or registry) name whose key to record.
    pub node: String,
    #[command(flatten)]
    pub target: Target,
    /// Replace a recorded key that changed (a re-flashed board).
    #[arg(long)]
    pub replace: bool,
}

pub fn run(global: &Global, a: &TrustArgs, out: &Output) -> i32 {
    let (_profiles, cluster, _) = match load_cluster(global, &a.target, out) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let Some(node) = cluster.node(&a.node) else {
        let names: Vec<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
        out.error(&format!("no node `{}` in {} (nodes: {})", a.node, a.target.file.display(), names.join(", ")));
        return EXIT_INVALID;
    };
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_default();
    let config = crate::transport::SshConfig::load_user_default().unwrap_or_else(|_| crate::transport::SshConfig::parse(""));
    let mut spec = crate::transport::TargetSpec::new(node.name.clone(), node.address.clone());
    spec.port = node.ssh.port;
    spec.user = node.ssh.user.clone();
    spec.proxy_jump = node.ssh.proxy_jump.clone();
    let target = match spec.resolve(&config, &home) {
        Ok(t) => t,
        Err(e) => {
            out.error(&e.to_string());
            return EXIT_FAILED;
        }
    };
    let kh = crate::converge::known_hosts_path(&cluster);
    let policy = crate::transport::HostKeyPolicy::new(Some(kh.clone()));
    match crate::transport::trust(&target, &policy, &kh, a.replace) {
        Ok(outcome) => {
            println!("{outcome}");
            EXIT_OK
        }
        Err(e) => {
            out.error(&e.to_string());
            EXIT_FAILED
        }
    }
}
