//! Generations and rollback on the lab (real sshd boards, simulated k3s): every apply that changes
//! a board records a generation whose files live in the board's store; rollback restores a
//! generation's files exactly (sha256 by sha256) as a NEW generation, restarting k3s once; a
//! rollback of a rollback goes forward again; generation 0 keeps what the board had; GC keeps
//! the last N.

use std::collections::BTreeSet;
use std::path::Path;

use rvlab::Role;
use serde_json::Value;

#[path = "support/e2e.rs"]
mod e2e;

fn manifest(b: &rvlab::Board, n: u64) -> Value {
    let p = b.path(&format!("/var/lib/rvcluster/generations/{n}/manifest.json"));
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn current(b: &rvlab::Board) -> u64 {
    let v: Value = serde_json::from_slice(&std::fs::read(b.path("/var/lib/rvcluster/generations/current.json")).unwrap()).unwrap();
    v["number"].as_u64().unwrap()
}

/// Every file of generation `n` on the board has the sha256 the manifest records.
fn assert_files_are(b: &rvlab::Board, n: u64) {
    let m = manifest(b, n);
    for f in m["files"].as_array().unwrap() {
        let path = f["path"].as_str().unwrap();
        assert_eq!(e2e::sha256(&b.path(path)), f["sha256"].as_str().unwrap(), "{}: {path} is generation {n}'s", b.name());
    }
}

fn unit(b: &rvlab::Board) -> &'static str {
    if b.role() == Role::Server { "k3s" } else { "k3s-agent" }
}

/// `restart --no-block` returns before the restart is recorded: wait for it to land.
fn starts_after(b: &rvlab::Board, n: usize) -> usize {
    for _ in 0..300 {
        if b.service_starts(unit(b)).len() > n {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // A second restart would land right behind the first one; give it the same chance.
    std::thread::sleep(std::time::Duration::from_millis(500));
    b.service_starts(unit(b)).len()
}

fn generations(dir: &Path) -> Value {
    let out = e2e::rv(dir, &["generations", "cluster.kdl", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn numbers(g: &Value, node: &str) -> Vec<u64> {
    let h = g.as_array().unwrap().iter().find(|h| h["node"] == node).unwrap();
    h["generations"].as_array().unwrap().iter().map(|l| l["number"].as_u64().unwrap()).collect()
}

#[test]
fn apply_records_generations_and_rollback_restores_them_as_new_ones() {
    let lab = e2e::server_and_agents(1);
    let dir = tempfile::tempdir().unwrap();
    let server = lab.b("server1");
    let agent = lab.b("agent1");
    // The user had a config.yaml of their own before rvcluster.
    let mine = "# mine: written by hand before rvcluster\nnode-label:\n  - by=hand\n";
    server.exec_inside(&format!("mkdir -p /etc/rancher/k3s && printf '%s' '{mine}' > /etc/rancher/k3s/config.yaml")).unwrap();
    // The agent has a state directory open to all (an older tool, or made by hand): the facts
    // see its mode and the first generation record closes it.
    agent.exec_inside("mkdir -p -m 755 /var/lib/rvcluster").unwrap();

    // A: the first apply makes generation 0 (what was there) and 1.
    e2e::write_lab_cluster(&lab, dir.path(), "gen", "");
    let out = e2e::rv(dir.path(), &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    let g0 = manifest(server, 0);
    assert_eq!(g0["reason"], "found");
    let kept = g0["files"].as_array().unwrap();
    assert_eq!(kept.len(), 1, "only config.yaml existed: {g0}");
    let sha_mine = rvcluster::render::sha256_hex(mine.as_bytes());
    assert_eq!(kept[0]["sha256"], sha_mine.as_str());
    assert_eq!(std::fs::read_to_string(server.path(&format!("/var/lib/rvcluster/store/{sha_mine}"))).unwrap(), mine);
    assert!(g0["absent"].as_array().unwrap().iter().any(|p| p == "/usr/local/bin/k3s"));
    assert_eq!((current(server), current(agent)), (1, 1));
    let mode = |b: &rvlab::Board| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(b.path("/var/lib/rvcluster")).unwrap().permissions().mode() & 0o777
    };
    assert_eq!((mode(server), mode(agent)), (0o700, 0o700), "state directories");
    assert_files_are(server, 1);
    assert_files_are(agent, 1);

    // A no-op apply records nothing.
    let out = e2e::rv(dir.path(), &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!((current(server), current(agent)), (1, 1));

    // B: one config key more: generation 2.
    e2e::write_lab_cluster(&lab, dir.path(), "gen", "        node-label \"zone=b\"\n");
    let out = e2e::rv(dir.path(), &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!((current(server), current(agent)), (2, 2));
    let g = generations(dir.path());
    assert_eq!(numbers(&g, "server1"), vec![0, 1, 2]);
    assert_eq!(numbers(&g, "agent1"), vec![0, 1, 2]);
    let text = String::from_utf8_lossy(&e2e::rv(dir.path(), &["generations", "cluster.kdl"]).stdout).into_owned();
    assert!(text.contains("* ") && text.contains("1 changed"), "{text}");

    // diff 1 2: the config line, and the agent's token-bearing file hidden.
    let out = e2e::rv(dir.path(), &["diff", "cluster.kdl", "--on", "server1", "1", "2"]);
    assert_eq!(out.status.code(), Some(0));
    let d = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(d.contains("~ /etc/rancher/k3s/config.yaml") && d.contains("+") && d.contains("zone=b"), "{d}");
    let token = std::fs::read_to_string(server.path("/var/lib/rancher/k3s/server/token")).unwrap();
    let out = e2e::rv(dir.path(), &["diff", "cluster.kdl", "--on", "agent1", "0", "2"]);
    let d = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!d.contains(token.trim()) && d.contains("content hidden"), "{d}");

    // Rollback (to the previous generation, 1): every managed file is generation 1's again, k3s
    // restarted once per host, recorded as generation 3.
    let before: Vec<usize> = [server, agent].iter().map(|b| b.service_starts(unit(b)).len()).collect();
    let out = e2e::rv(dir.path(), &["rollback", "cluster.kdl", "--yes", "--no-wait"]);
    assert_eq!(out.status.code(), Some(0));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("generation 2 -> 1"), "{said}");
    for (b, n) in [server, agent].iter().zip(before) {
        assert_files_are(b, 1);
        assert_eq!(current(b), 3);
        assert_eq!(manifest(b, 3)["reason"], "rollback to 1");
        assert_eq!(starts_after(b, n), n + 1, "{}: restarted exactly once", b.name());
    }
    // cluster.lock still records generation 2: --locked refuses the moved boards, touching nothing.
    let out = e2e::rv(dir.path(), &["apply", "cluster.kdl", "--locked", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("locked generation 2 but the board is at generation 3") && err.contains("nothing was touched"), "{err}");
    assert_eq!((current(server), current(agent)), (3, 3));
    // plan now shows the drift from cluster.kdl (which still says zone=b).
    let out = e2e::rv(dir.path(), &["plan", "cluster.kdl", "--skip-closure-check", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("zone=b"));

    // A rollback of the rollback: back to 2 (the one before 3), as generation 4.
    let out = e2e::rv(dir.path(), &["rollback", "cluster.kdl", "--yes", "--no-wait"]);
    assert_eq!(out.status.code(), Some(0));
    for b in [server, agent] {
        assert_files_are(b, 2);
        assert_eq!(current(b), 4);
    }
    // Nothing left to converge: cluster.kdl is generation 2.
    let out = e2e::rv(dir.path(), &["plan", "cluster.kdl", "--skip-closure-check", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0));

    // Without a terminal and without --yes nothing happens; an unknown generation is exit 2.
    let out = e2e::rv(dir.path(), &["rollback", "cluster.kdl", "--to", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(current(server), 4);
    let out = e2e::rv(dir.path(), &["rollback", "cluster.kdl", "--to", "99", "--yes"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no generation 99"));

    // GC: keep=2 keeps 0 and the last two; the store holds exactly what they name.
    let kdl = std::fs::read_to_string(dir.path().join("cluster.kdl")).unwrap();
    std::fs::write(dir.path().join("cluster.kdl"), kdl.replace("node-label \"zone=b\"", "node-label \"zone=c\"") + "generations keep=2\n").unwrap();
    let out = e2e::rv(dir.path(), &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    let g = generations(dir.path());
    for b in [server, agent] {
        assert_eq!(numbers(&g, b.name()), vec![0, 4, 5]);
        let mut named = BTreeSet::new();
        for n in [0, 4, 5] {
            for f in manifest(b, n)["files"].as_array().unwrap() {
                named.insert(f["sha256"].as_str().unwrap().to_string());
            }
        }
        let stored: BTreeSet<String> =
            std::fs::read_dir(b.path("/var/lib/rvcluster/store")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(stored, named, "{}: the store holds exactly what kept generations name", b.name());
    }
    assert!(server.path(&format!("/var/lib/rvcluster/store/{sha_mine}")).exists(), "generation 0's file survives GC");
}

/// The health gate: a change that makes k3s exit (a bind-address that is not on the board) is
/// rolled back on the server by itself; the agents are not touched, apply exits 1 naming the
/// host, what failed and the generation now active, and the cluster stays Ready.
#[test]
fn a_change_that_makes_k3s_exit_is_rolled_back_automatically() {
    let lab = e2e::server_and_agents(1);
    let dir = tempfile::tempdir().unwrap();
    let (server, agent) = (lab.b("server1"), lab.b("agent1"));
    e2e::write_lab_cluster(&lab, dir.path(), "gate", "");
    let out = e2e::rv(dir.path(), &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!said.contains("confirming"), "a first apply has nothing to go back to: no gate: {said}");
    assert_eq!((current(server), current(agent)), (1, 1));
    let agent_files: Vec<(String, String)> = manifest(agent, 1)["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap().to_string(), e2e::sha256(&agent.path(f["path"].as_str().unwrap()))))
        .collect();

    e2e::write_lab_cluster(&lab, dir.path(), "gate", "        bind-address \"10.99.99.99\"\n");
    let out = e2e::rv(dir.path(), &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check", "--confirm-timeout", "15s"]);
    assert_eq!(out.status.code(), Some(1));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("confirming the node came back"), "the gate ran: {said}");
    assert!(said.contains("server1") && said.contains("did not come back"), "{said}");
    assert!(said.contains("rolled back to generation 1") && said.contains("recorded as generation 3"), "{said}");
    assert!(said.contains("10.99.99.99"), "the last k3s log lines say why: {said}");
    // The server: generation 2 was the bad one, 3 is generation 1 again.
    assert_eq!(current(server), 3);
    assert_eq!(manifest(server, 3)["reason"], "rollback to 1");
    assert_files_are(server, 1);
    // The agent was never changed.
    assert_eq!(current(agent), 1);
    for (p, sha) in &agent_files {
        assert_eq!(&e2e::sha256(&agent.path(p)), sha, "agent1 {p} untouched");
    }
    // Still Ready: every node (the lab has no images here, so pods are not the question).
    let out = e2e::rv(dir.path(), &["status", "cluster.kdl", "--json", "--no-drift"]);
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = st["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{st}");
    assert!(nodes.iter().all(|n| n["ready"] == true), "{st}");
}

/// k3s can only go back a minor version with the datastore of that version: upgrading the
/// server v1.33 -> v1.34 keeps its datastore (k3s stopped, server/db saved in the generation),
/// and a rollback to the v1.33 generation puts it back before k3s starts again.
#[test]
fn a_rollback_across_a_minor_version_restores_the_datastore() {
    let lab = e2e::server_and_agents(0);
    let dir = tempfile::tempdir().unwrap();
    let server = lab.b("server1");
    e2e::write_lab_cluster(&lab, dir.path(), "dst", "");
    let args = ["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"];
    assert_eq!(e2e::rv(dir.path(), &args).status.code(), Some(0));
    // Something only the v1.33 datastore has.
    server.exec_inside("echo written-by-1.33 > /var/lib/rancher/k3s/server/db/marker").unwrap();

    let old = rvlab::k3s_sim_binary().unwrap();
    let new = dir.path().join("k3s-v1.34.3");
    k3s_sim::release::stamp_version(&old, &new, "v1.34.3+k3s1").unwrap();
    let kdl = std::fs::read_to_string(dir.path().join("cluster.kdl")).unwrap();
    let kdl = kdl
        .replace("v1.33.4+k3s1", "v1.34.3+k3s1")
        .replace(&old.display().to_string(), &new.display().to_string())
        .replace(&e2e::sha256(&old), &e2e::sha256(&new));
    std::fs::write(dir.path().join("cluster.kdl"), kdl).unwrap();
    assert_eq!(e2e::rv(dir.path(), &args).status.code(), Some(0));
    let g2 = manifest(server, 2);
    assert_eq!(g2["k3s"], "v1.34.3+k3s1");
    assert_eq!(g2["datastore"]["k3s"], "v1.33.4+k3s1", "{g2}");
    assert!(server.path("/var/lib/rvcluster/generations/2/datastore.tar").exists());
    // v1.34 changes its datastore (here: the marker goes).
    server.exec_inside("rm /var/lib/rancher/k3s/server/db/marker").unwrap();

    let out = e2e::rv(dir.path(), &["rollback", "cluster.kdl", "--yes", "--no-wait"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("restore the datastore"));
    assert_eq!(std::fs::read_to_string(server.path("/var/lib/rancher/k3s/server/db/marker")).unwrap(), "written-by-1.33\n");
    assert_files_are(server, 1);
    assert_eq!(manifest(server, 3)["k3s"], "v1.33.4+k3s1");
    let out = server.exec_inside("k3s --version").unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("v1.33.4+k3s1"));
}

/// A change that is the apply script's last text write (a server manifest: no restart, the
/// managed-file list unchanged) is recorded: the generation's store copies are taken after it.
#[test]
fn a_manifest_changed_alone_is_applied_and_recorded() {
    let lab = e2e::server_and_agents(0);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let with_manifest = |text: &str| {
        std::fs::write(d.join("app.yaml"), text).unwrap();
        e2e::write_lab_cluster(&lab, d, "gen", "");
        let kdl = std::fs::read_to_string(d.join("cluster.kdl")).unwrap();
        let kdl = kdl.replacen("    disable \"traefik\"", "    manifest \"app.yaml\"\n    disable \"traefik\"", 1);
        std::fs::write(d.join("cluster.kdl"), kdl).unwrap();
    };
    with_manifest("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  v: \"1\"\n");
    let out = e2e::rv(d, &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let server = lab.b("server1");
    assert_eq!(current(server), 1);
    let v2 = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  v: \"2\"\n";
    with_manifest(v2);
    let out = e2e::rv(d, &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("~ update /var/lib/rancher/k3s/server/manifests/app.yaml") && !text.contains("restart"), "{text}");
    assert_eq!(current(server), 2);
    let sha = rvcluster::render::sha256_hex(v2.as_bytes());
    assert_eq!(std::fs::read_to_string(server.path(&format!("/var/lib/rvcluster/store/{sha}"))).unwrap(), v2);
    assert_files_are(server, 2);
}
