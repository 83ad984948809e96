//! One board unreachable (its sshd gone): the others converge, the summary names the failed host
//! and why, exit 1; the server unreachable: the agents are not changed (they could not join), and
//! they say so.

use rvlab::Lab;

#[path = "support/e2e.rs"]
mod e2e;

fn lab() -> Lab {
    e2e::server_and_agents(2)
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn an_unreachable_agent_fails_alone_and_an_unreachable_server_stops_the_agents() {
    let lab = lab();
    let dir = tempfile::tempdir().unwrap();
    e2e::write_lab_cluster(&lab, dir.path(), "down", "");
    let args = ["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"];
    // agent2's sshd is gone: nothing listens on its address.
    lab.b("agent2").exec_inside("pkill -x sshd; true").unwrap();
    let out = e2e::rv(dir.path(), &args);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(t.contains("3 hosts") && t.contains("1 failed"), "{t}");
    let failed: Vec<&str> = t.lines().filter(|l| l.contains("failed:")).collect();
    assert_eq!(failed.len(), 1, "{t}");
    assert!(t.contains("applied agent2") && failed[0].contains("connect"), "agent2 named with why: {t}");
    for b in ["server1", "agent1"] {
        assert!(lab.b(b).path("/usr/local/bin/k3s").exists(), "{b} converged");
        assert!(lab.b(b).path("/var/lib/rvcluster/generations/current.json").exists(), "{b} recorded its generation");
    }
    assert!(!lab.b("agent2").path("/usr/local/bin/k3s").exists());

    // A fresh cluster whose server is unreachable: no agent is changed beyond its early binary.
    let lab = self::lab();
    let dir = tempfile::tempdir().unwrap();
    e2e::write_lab_cluster(&lab, dir.path(), "down2", "");
    lab.b("server1").exec_inside("pkill -x sshd; true").unwrap();
    let out = e2e::rv(dir.path(), &args);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(t.contains("3 hosts") && t.contains("3 failed"), "{t}");
    assert_eq!(t.matches("the server server1 failed, so no agent can join it").count(), 2 * 2, "each agent says why (host list and progress line): {t}");
    for b in ["agent1", "agent2"] {
        assert!(!lab.b(b).path("/etc/systemd/system/k3s-agent.service").exists(), "{b}: no unit written");
        assert!(!lab.b(b).path("/var/lib/rvcluster/generations/current.json").exists(), "{b}: no generation");
    }
}
