//! Reset and prune on the lab (real sshd boards, simulated k3s that leaves what real k3s leaves:
//! containerd-shim processes surviving `systemctl stop`, tmpfs mounts, CNI links, KUBE-/FLANNEL-
//! iptables rules). `rvcluster reset` takes all of it off every board and gives back the file the
//! user had before rvcluster; `apply --prune` drains and deletes a node cluster.kdl no longer
//! lists and uninstalls k3s from its board.

use std::path::Path;

use rvlab::{Lab, Role};

#[path = "support/e2e.rs"]
mod e2e;

const DS: &str = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: ds\nspec:\n  template:\n    metadata:\n      labels:\n        app: ds\n    spec:\n      containers:\n      - name: c\n        image: rancher/mirrored-pause:3.6\n";

fn lab() -> Lab {
    Lab::builder()
        .boards([("server1", Role::Server), ("agent1", Role::Agent), ("agent2", Role::Agent)])
        .seed_upstream(true)
        .ready_delay_ms(100)
        .sim_conf("arch", "amd64") // the seeded rancher/* images have amd64: every pod starts
        .start()
        .expect("lab starts (needs root, sshd)")
}

fn ssh(lab: &Lab, board: &str, cmd: &str) -> (i32, String) {
    let out = lab.ssh(board, cmd).unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}

/// Apply the lab's cluster, then a DaemonSet so every board runs a pod sandbox (a shim, mounts, a veth).
fn apply_with_pods(lab: &Lab, dir: &Path, nodes: usize) {
    e2e::write_lab_cluster(lab, dir, "reset", "");
    let out = e2e::rv(dir, &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    std::fs::write(lab.b("server1").path("/var/lib/rancher/k3s/server/manifests/ds.yaml"), DS).unwrap();
    wait_for("a ds pod Running on every node", || {
        let (_, pods) = ssh(lab, "server1", "k3s kubectl get pods -o wide");
        pods.lines().filter(|l| l.starts_with("ds-") && l.contains(" Running ")).count() == nodes
    });
}

fn lock_hosts(dir: &Path) -> Vec<String> {
    let lock = rvcluster::lock::Lock::read(&dir.join("cluster.lock")).unwrap().unwrap();
    lock.hosts.keys().cloned().collect()
}

/// Nothing of k3s or rvcluster on the board; `users`: the k3s paths that hold only the user's own
/// files (generation 0 put them back).
fn assert_gone(b: &rvlab::Board, users: &[&str]) {
    let mut left = b.k3s_leftovers().unwrap();
    left.paths.retain(|p| !users.contains(&p.as_str()));
    assert!(left.is_empty(), "{}: {left:?}", b.name());
    for p in ["/etc/systemd/system/k3s.service", "/etc/systemd/system/k3s-agent.service", "/etc/systemd/system/k3s-agent.service.env", "/usr/local/bin/k3s", "/var/lib/rancher/k3s"] {
        assert!(std::fs::symlink_metadata(b.path(p)).is_err(), "{}: {p} is still there", b.name());
    }
    let code = b.exec_inside("systemctl is-enabled k3s k3s-agent").unwrap().status.code();
    assert_ne!(code, Some(0), "{}: a k3s unit is still enabled", b.name());
    let state: Vec<_> = std::fs::read_dir(b.path("/var/lib/rvcluster")).unwrap().collect();
    assert!(state.is_empty(), "{}: /var/lib/rvcluster keeps {state:?}", b.name());
}

#[test]
fn reset_takes_k3s_off_every_board_and_gives_back_the_users_file() {
    let lab = lab();
    let dir = tempfile::tempdir().unwrap();
    // The user's own config.yaml on agent1, before rvcluster ever ran.
    let mine = "# mine, by hand\nnode-label:\n  - by=hand\n";
    let a1 = lab.b("agent1");
    a1.exec_inside(&format!("mkdir -p /etc/rancher/k3s && printf '%s' '{mine}' > /etc/rancher/k3s/config.yaml && chmod 640 /etc/rancher/k3s/config.yaml")).unwrap();
    apply_with_pods(&lab, dir.path(), 3);
    assert_ne!(std::fs::read_to_string(a1.path("/etc/rancher/k3s/config.yaml")).unwrap(), mine, "apply wrote its own");
    assert_eq!(lock_hosts(dir.path()), vec!["agent1", "agent2", "server1"]);
    for b in lab.boards() {
        let l = b.k3s_leftovers().unwrap();
        assert!(!l.processes.is_empty() && !l.mounts.is_empty() && !l.links.is_empty() && !l.iptables_rules.is_empty(), "{}: k3s left its things: {l:?}", b.name());
    }

    // No terminal, no --yes: refused with status 2, nothing touched.
    let out = e2e::rv(dir.path(), &["reset", "cluster.kdl"]);
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(said.contains("reset agent1") && said.contains("/var/lib/rancher/k3s") && said.contains("--yes"), "{said}");
    for b in lab.boards() {
        let unit = if b.role() == Role::Server { "k3s" } else { "k3s-agent" };
        assert_eq!(b.sh(&format!("systemctl is-active {unit}")).unwrap().trim(), "active", "{}", b.name());
    }
    assert_eq!(lock_hosts(dir.path()).len(), 3);

    let out = e2e::rv(dir.path(), &["reset", "cluster.kdl", "--yes"]);
    assert_eq!(out.status.code(), Some(0));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("restored /etc/rancher/k3s/config.yaml") && said.contains("containerd-shim"), "{said}");
    for b in lab.boards() {
        assert_gone(b, if b.name() == "agent1" { &["/etc/rancher/k3s"] } else { &[] });
    }
    assert_eq!(std::fs::read_to_string(a1.path("/etc/rancher/k3s/config.yaml")).unwrap(), mine, "the user's file is back, byte for byte");
    let only: Vec<_> = std::fs::read_dir(a1.path("/etc/rancher/k3s")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(only, vec![std::ffi::OsString::from("config.yaml")]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(a1.path("/etc/rancher/k3s/config.yaml")).unwrap().permissions().mode() & 0o777, 0o640);
    assert!(!lab.b("server1").path("/etc/rancher/k3s").exists() && !lab.b("agent2").path("/etc/rancher/k3s").exists());
    assert!(lock_hosts(dir.path()).is_empty(), "cluster.lock forgets the reset hosts");

    // Again: nothing to do, still a success.
    let out = e2e::rv(dir.path(), &["reset", "cluster.kdl", "--yes", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for h in v.as_array().unwrap() {
        assert!(h["error"].is_null(), "{h}");
        let did: Vec<&str> = h["outcome"]["did"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
        assert!(did.iter().all(|d| *d == "removed /var/lib/rvcluster"), "{}: {did:?}", h["node"]);
    }
    for b in lab.boards() {
        assert_gone(b, if b.name() == "agent1" { &["/etc/rancher/k3s"] } else { &[] });
    }
    assert_eq!(std::fs::read_to_string(a1.path("/etc/rancher/k3s/config.yaml")).unwrap(), mine);
}

#[test]
fn apply_prune_removes_a_node_cluster_kdl_no_longer_lists() {
    let lab = lab();
    let dir = tempfile::tempdir().unwrap();
    apply_with_pods(&lab, dir.path(), 3);
    let lock = std::fs::read_to_string(dir.path().join("cluster.lock")).unwrap();
    let a2 = lab.b("agent2");
    assert!(lock.contains("host \"agent2\"") && lock.contains(&format!("address=\"{}\" user=\"root\"", a2.address())), "{lock}");

    // agent2 leaves cluster.kdl.
    let kdl = std::fs::read_to_string(dir.path().join("cluster.kdl")).unwrap();
    let start = kdl.find("node \"agent2\"").unwrap();
    let end = start + kdl[start..].find("}\n").unwrap() + 2;
    std::fs::write(dir.path().join("cluster.kdl"), format!("{}{}", &kdl[..start], &kdl[end..])).unwrap();

    let out = e2e::rv(dir.path(), &["plan", "cluster.kdl", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("remove node agent2 (drain, delete the node and its node-password secret, uninstall k3s from the board)"));

    // Plain apply warns and leaves it.
    let out = e2e::rv(dir.path(), &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--prune"));
    assert!(ssh(&lab, "server1", "k3s kubectl get nodes").1.contains("agent2"));
    assert!(lock_hosts(dir.path()).contains(&"agent2".to_string()));
    assert!(!a2.k3s_leftovers().unwrap().is_empty());

    let out = e2e::rv(dir.path(), &["apply", "cluster.kdl", "--prune", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    let (_, nodes) = ssh(&lab, "server1", "k3s kubectl get nodes");
    assert!(!nodes.contains("agent2") && nodes.contains("agent1"), "{nodes}");
    let (code, _) = ssh(&lab, "server1", "k3s kubectl -n kube-system get secret agent2.node-password.k3s");
    assert_ne!(code, 0, "the node-password secret is gone");
    // the drain went through the API before the delete
    let audit = std::fs::read_to_string(lab.b("server1").path("/var/lib/rancher/k3s/server/logs/audit.log")).unwrap();
    let cordon = audit.lines().position(|l| l.contains("\"verb\":\"cordon\"") && l.contains("\"agent2\""));
    let delete = audit.lines().position(|l| l.contains("\"verb\":\"delete\"") && l.contains("\"kind\":\"Node\"") && l.contains("\"agent2\""));
    assert!(matches!((cordon, delete), (Some(c), Some(d)) if c < d), "cordon (drain) then delete: {cordon:?} {delete:?}");
    assert_gone(a2, &[]);
    assert_eq!(lock_hosts(dir.path()), vec!["agent1", "server1"]);
    // the others are untouched
    assert_eq!(lab.b("agent1").sh("systemctl is-active k3s-agent").unwrap().trim(), "active");

    // Nothing left to prune.
    let out = e2e::rv(dir.path(), &["plan", "cluster.kdl", "--skip-closure-check"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("remove node"));
}
