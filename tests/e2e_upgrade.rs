//! Orchestrated k3s upgrades on the lab (real sshd boards, simulated k3s that records every
//! cordon, eviction, uncordon and node status change in its API audit log): v1.33.4 -> v1.34.3 on
//! three boards follows the order k0sctl and the k3s docs give, asserted from what the boards
//! (systemd start records) and the simulated API (audit log) recorded; skipping a minor version
//! and downgrading are refused at plan time with exit 2, before any host is touched.

use std::path::Path;
use std::time::UNIX_EPOCH;

use rvlab::{Lab, Role};
use serde_json::Value;

#[path = "support/e2e.rs"]
mod e2e;

/// Unix ms of `2026-11-30T20:31:07.239Z`.
fn ms(t: &str) -> u64 {
    let (date, time) = t.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let h: Vec<u64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    // days from civil (Howard Hinnant)
    let (y, m) = if d[1] <= 2 { (d[0] - 1, d[1] + 9) } else { (d[0], d[1] - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe - 719_468) as u64;
    let frac_ms: u64 = format!("{:0<3}", &frac[..frac.len().min(3)]).parse().unwrap();
    ((days * 86_400 + h[0] * 3600 + h[1] * 60 + h[2]) * 1000) + frac_ms
}

fn audit(lab: &Lab) -> Vec<Value> {
    std::fs::read_to_string(lab.b("server1").path("/var/lib/rancher/k3s/server/logs/audit.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn starts(b: &rvlab::Board) -> Vec<rvlab::ServiceStart> {
    b.service_starts(if b.role() == Role::Server { "k3s" } else { "k3s-agent" })
}

/// The first start of the board's k3s after `skip` earlier ones (the upgrade's restart), in unix ms.
fn restart_ms(b: &rvlab::Board, skip: usize) -> u64 {
    let s = starts(b);
    let first = s.get(skip).unwrap_or_else(|| panic!("{}: no restart during the upgrade: {s:?}", b.name()));
    first.at.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn stamp(dir: &Path, version: &str) -> std::path::PathBuf {
    let p = dir.join(format!("k3s-{version}"));
    k3s_sim::release::stamp_version(&rvlab::k3s_sim_binary().unwrap(), &p, version).unwrap();
    p
}

/// cluster.kdl at `version` with `binary`.
fn retarget(dir: &Path, version: &str, binary: &Path) {
    let path = dir.join("cluster.kdl");
    let kdl = std::fs::read_to_string(&path).unwrap();
    let mut out = String::new();
    for l in kdl.lines() {
        if l.starts_with("k3s version=") {
            out.push_str(&format!("k3s version=\"{version}\" {{\n"));
        } else if l.trim_start().starts_with("binary ") {
            out.push_str(&format!("    binary \"{}\" sha256=\"{}\"\n", binary.display(), e2e::sha256(binary)));
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    std::fs::write(path, out).unwrap();
}

/// First index in `log` at or after `from` matching `f`.
fn find(log: &[Value], from: usize, what: &str, f: impl Fn(&Value) -> bool) -> usize {
    log.iter().skip(from).position(f).map(|i| i + from).unwrap_or_else(|| panic!("no {what} after entry {from} in the audit log:\n{}", show(log)))
}

fn show(log: &[Value]) -> String {
    log.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("\n")
}

#[test]
fn a_three_board_upgrade_goes_server_first_then_each_agent_cordoned_drained_restarted_ready_uncordoned() {
    let lab = e2e::server_and_agents(2);
    let dir = tempfile::tempdir().unwrap();
    e2e::write_lab_cluster(&lab, dir.path(), "up", "");
    let args = ["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"];
    let out = e2e::rv(dir.path(), &args);
    assert_eq!(out.status.code(), Some(0));
    // The first apply sends the server's binary first: every agent's stream ends after it (the
    // agents need the server's token, which exists only once the server's k3s started).
    let log = String::from_utf8_lossy(&out.stderr);
    let at = |needle: &str| log.find(needle).unwrap_or_else(|| panic!("no `{needle}` in the log:\n{log}"));
    let server_sent = at("upload(s) host=\"server1\" phase=\"files\"");
    for a in ["agent1", "agent2"] {
        assert!(at(&format!("binaries streamed before the plan host=\"{a}\"")) > server_sent, "{a} streamed before the server's upload ended:\n{log}");
    }

    // A workload with a replica on each agent (pods the drains must move).
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: default\nspec:\n  replicas: 4\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: docker.io/library/nginx:1\n";
    let server = lab.b("server1");
    server.exec_inside(&format!("printf '%s' '{deploy}' > /var/lib/rancher/k3s/server/manifests/web.yaml")).unwrap();

    let new = stamp(dir.path(), "v1.34.3+k3s1");
    retarget(dir.path(), "v1.34.3+k3s1", &new);
    let out = e2e::rv(dir.path(), &["plan", "cluster.kdl", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    let plan = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(plan.matches("~ upgrade k3s v1.33.4+k3s1 -> v1.34.3+k3s1").count(), 3, "{plan}");
    assert!(plan.contains("1. server1: restart") && plan.contains("cordon, drain, restart"), "{plan}");
    let out = e2e::rv(dir.path(), &["plan", "cluster.kdl", "--skip-closure-check", "--json"]);
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["order"].as_array().unwrap().len(), 2, "{j}");
    for h in j["hosts"].as_array().unwrap() {
        assert!(h["changes"].as_array().unwrap().iter().any(|c| c["action"] == "upgrade" && c["to"] == "v1.34.3+k3s1"), "{h}");
    }

    let before = audit(&lab).len();
    let earlier: Vec<usize> = lab.boards().iter().map(|b| starts(b).len()).collect();
    let out = e2e::rv(dir.path(), &args);
    assert_eq!(out.status.code(), Some(0));
    let log = audit(&lab);
    let log = &log[before..];

    // The server: restarted, then Ready on v1.34.3 before anything happens to an agent.
    let server_up = find(log, 0, "server1 Ready on v1.34.3", |v| {
        v["verb"] == "status" && v["node"] == "server1" && v["ready"] == true && v["kubeletVersion"] == "v1.34.3+k3s1"
    });
    // (The board's start record and the API's status line race by a few ms: the restart is
    // ordered against what comes a health-gate poll later, the first cordon.)
    let server_restart = restart_ms(server, earlier[0]);
    let first_cordon = find(log, 0, "a cordon", |v| v["verb"] == "cordon");
    assert!(
        server_restart < ms(log[first_cordon]["time"].as_str().unwrap()),
        "server restarted ({server_restart}) before any agent was cordoned: {:?}\n{}",
        starts(server),
        show(log)
    );
    assert!(server_up < first_cordon, "the server was Ready on the new version before any agent was cordoned:\n{}", show(log));

    // Each agent: cordon -> evictions -> its restart -> Ready on v1.34.3 -> uncordon, one at a
    // time (--max-unavailable defaults to 10%, at least 1).
    let mut at = first_cordon;
    let mut order = Vec::new();
    for _ in 0..2 {
        let c = find(log, at, "a cordon", |v| v["verb"] == "cordon");
        let node = log[c]["name"].as_str().unwrap().to_string();
        let evicted: Vec<usize> = (c..log.len()).filter(|i| log[*i]["verb"] == "evict" && log[*i]["node"] == node.as_str()).collect();
        let ready = find(log, c, "the agent Ready on v1.34.3", |v| {
            v["verb"] == "status" && v["node"] == node.as_str() && v["ready"] == true && v["kubeletVersion"] == "v1.34.3+k3s1"
        });
        let u = find(log, c, "its uncordon", |v| v["verb"] == "uncordon" && v["name"] == node.as_str());
        assert!(!evicted.is_empty(), "{node}: its web pod was evicted:\n{}", show(log));
        assert!(evicted.iter().all(|e| *e < ready), "{node}: drained before it came back");
        let i = lab.boards().iter().position(|b| b.name() == node).unwrap();
        let restart = restart_ms(lab.b(&node), earlier[i]);
        assert!(ms(log[*evicted.last().unwrap()]["time"].as_str().unwrap()) <= restart, "{node}: restarted after its drain");
        assert!(restart < ms(log[u]["time"].as_str().unwrap()), "{node}: uncordoned after its restart");
        assert!(ready < u, "{node}: uncordoned after it was Ready on the new version");
        order.push((node, c, u));
        at = u;
    }
    assert_ne!(order[0].0, order[1].0, "both agents upgraded");
    assert!(order[0].2 < order[1].1, "one agent out of service at a time:\n{}", show(log));
    for b in lab.boards() {
        let v = b.exec_inside("k3s --version").unwrap();
        assert!(String::from_utf8_lossy(&v.stdout).contains("v1.34.3+k3s1"), "{}", b.name());
    }
    let nodes = server.exec_inside("k3s kubectl get nodes").unwrap();
    let nodes = String::from_utf8_lossy(&nodes.stdout).into_owned();
    assert!(!nodes.contains("SchedulingDisabled"), "every node uncordoned:\n{nodes}");
    assert_eq!(nodes.matches("v1.34.3+k3s1").count(), 3, "{nodes}");
}

#[test]
fn skipping_a_minor_version_or_downgrading_is_refused_at_plan_time_with_exit_2() {
    let lab = e2e::server_and_agents(1);
    let dir = tempfile::tempdir().unwrap();
    let sums = |lab: &Lab| lab.boards().iter().map(|b| e2e::sha256(&b.path("/usr/local/bin/k3s"))).collect::<Vec<_>>();
    // The boards already run k3s v1.32, installed by hand before rvcluster.
    let v132 = stamp(dir.path(), "v1.32.9+k3s1");
    for b in lab.boards() {
        b.exec_inside("mkdir -p /usr/local/bin").unwrap();
        std::fs::copy(&v132, b.path("/usr/local/bin/k3s")).unwrap();
    }
    e2e::write_lab_cluster(&lab, dir.path(), "rules", "");
    let new = stamp(dir.path(), "v1.34.3+k3s1");
    retarget(dir.path(), "v1.34.3+k3s1", &new);
    let before = sums(&lab);
    for args in [&["plan", "cluster.kdl", "--skip-closure-check"][..], &["apply", "cluster.kdl", "--skip-closure-check", "--no-wait"][..]] {
        let out = e2e::rv(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains("v1.32.9+k3s1 -> v1.34.3+k3s1 skips a minor version") && err.contains("v1.33.x"), "{err}");
        assert_eq!(err.matches("skips a minor version").count(), 2, "both nodes named: {err}");
        assert!(err.contains("nothing was touched"), "{err}");
    }
    assert_eq!(sums(&lab), before, "no board was touched");

    // Through v1.33, then v1.34: allowed.
    let args = ["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"];
    retarget(dir.path(), "v1.33.4+k3s1", &rvlab::k3s_sim_binary().unwrap());
    assert_eq!(e2e::rv(dir.path(), &args).status.code(), Some(0));
    retarget(dir.path(), "v1.34.3+k3s1", &new);
    assert_eq!(e2e::rv(dir.path(), &args).status.code(), Some(0));

    // Downgrade v1.34 -> v1.33: refused, exit 2, nothing touched.
    retarget(dir.path(), "v1.33.4+k3s1", &rvlab::k3s_sim_binary().unwrap());
    let before = sums(&lab);
    for args in [&["plan", "cluster.kdl", "--skip-closure-check"][..], &["apply", "cluster.kdl", "--skip-closure-check", "--no-wait"][..]] {
        let out = e2e::rv(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains("is a downgrade") && err.contains("--allow-downgrade") && err.contains("nothing was touched"), "{err}");
    }
    // Even with --allow-downgrade: across a minor version only a rollback (it has the datastore).
    let out = e2e::rv(dir.path(), &["plan", "cluster.kdl", "--skip-closure-check", "--allow-downgrade"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rvcluster rollback"));
    assert_eq!(sums(&lab), before, "no board was touched");
}
