//! Shared by the lab end-to-end tests: run the rvcluster binary in a cluster directory (HOME
//! pointed there, no ssh-agent) and echo what it printed, so a failing assertion has the story.

use std::path::Path;
use std::process::Output;

#[allow(dead_code)]
pub fn rv(dir: &Path, args: &[&str]) -> Output {
    let t0 = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rvcluster"))
        .args(["--color", "never", "-v"])
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    eprintln!(
        "$ rvcluster {} [{:?}]\n{}{}",
        args.join(" "),
        t0.elapsed(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn sha256(p: &Path) -> String {
    rvcluster::render::sha256_hex(&std::fs::read(p).unwrap())
}

/// cluster.kdl for every board of `lab` (server and agents, root with the lab key), the
/// simulated k3s pinned, traefik and metrics-server disabled, `extra_config` lines inside the
/// k3s `config` block; the boards' host keys in the known_hosts beside it.
#[allow(dead_code)]
pub fn write_lab_cluster(lab: &rvlab::Lab, dir: &Path, name: &str, extra_config: &str) {
    write_lab_cluster_with(lab, dir, name, extra_config, "");
}

/// [`write_lab_cluster`] with `extra` KDL appended (a `registry` block, `image` entries); the
/// lab's registry host (Role::Registry) is never a node, only in known_hosts.
#[allow(dead_code)]
pub fn write_lab_cluster_with(lab: &rvlab::Lab, dir: &Path, name: &str, extra_config: &str, extra: &str) {
    let k3s = rvlab::k3s_sim_binary().expect("the simulated k3s binary");
    let mut kdl = format!(
        "cluster \"{name}\"\nk3s version=\"v1.33.4+k3s1\" {{\n    binary \"{}\" sha256=\"{}\"\n    disable \"traefik\" \"metrics-server\"\n    config {{\n        write-kubeconfig-mode \"0600\"\n{extra_config}    }}\n}}\n",
        k3s.display(),
        sha256(&k3s)
    );
    let mut known = String::new();
    for b in lab.boards() {
        known.push_str(&b.known_hosts_line());
        known.push('\n');
        if b.role() == rvlab::Role::Registry {
            continue;
        }
        let role = if b.role() == rvlab::Role::Server { "server" } else { "agent" };
        kdl.push_str(&format!(
            "node \"{}\" address=\"{}\" role=\"{role}\" {{\n    ssh user=\"root\" identity=\"{}\"\n}}\n",
            b.name(),
            b.address(),
            lab.client_key().display()
        ));
    }
    kdl.push_str(extra);
    std::fs::write(dir.join("cluster.kdl"), kdl).unwrap();
    std::fs::write(dir.join("known_hosts"), known).unwrap();
}

/// A managed registry block for the lab's registry host: the pinned Debian docker-registry,
/// port 5000, a docker.io mirror, and `inner` lines (auth, tls, storage) inside.
#[allow(dead_code)]
pub fn lab_registry_block(lab: &rvlab::Lab, inner: &str) -> String {
    let mac = lab.registry_host().expect("the lab has a registry host");
    let reg = Path::new("/usr/bin/docker-registry");
    format!(
        "registry \"{}\" address=\"{}\" port=5000 {{\n    ssh user=\"root\" identity=\"{}\"\n    binary \"{}\" sha256=\"{}\"\n{inner}    mirror \"docker.io\"\n}}\n",
        mac.name(),
        mac.address(),
        lab.client_key().display(),
        reg.display(),
        sha256(reg)
    )
}

/// A started lab of `server1` and `agent1`..`agentN`, each node Ready 200 ms after its k3s
/// starts: the cluster most lab tests run on.
#[allow(dead_code)]
pub fn server_and_agents(agents: usize) -> rvlab::Lab {
    let mut b = rvlab::Lab::builder().board("server1", rvlab::Role::Server);
    for i in 1..=agents {
        b = b.board(format!("agent{i}"), rvlab::Role::Agent);
    }
    b.ready_delay_ms(200).start().expect("lab starts (needs root, sshd)")
}
