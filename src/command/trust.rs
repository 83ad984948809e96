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
    let spec = match (cluster.node(&a.node), cluster.registry.as_ref().filter(|r| r.name == a.node)) {
        (Some(n), _) => crate::converge::target_spec(&n.name, &n.address, &n.ssh),
        (None, Some(r)) if r.external => {
            out.error(&format!(
                "registry {} is external (external=#true): rvcluster never connects to it over SSH, so it has no host key to trust",
                r.name
            ));
            return EXIT_INVALID;
        }
        (None, Some(r)) => crate::converge::target_spec(&r.name, &r.address, &r.ssh),
        (None, None) => {
            let mut names: Vec<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
            names.extend(cluster.registry.iter().map(|r| r.name.as_str()));
            out.error(&format!("no node `{}` in {} (hosts: {})", a.node, a.target.file.display(), names.join(", ")));
            return EXIT_INVALID;
        }
    };
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_default();
    let config = crate::transport::SshConfig::load_user_default().unwrap_or_else(|_| crate::transport::SshConfig::parse(""));
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
