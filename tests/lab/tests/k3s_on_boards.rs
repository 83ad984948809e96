//! The simulated k3s (tests/k3s-sim) installed on lab boards the way install.sh would, run by
//! the board's systemctl emulation: Type=notify start, server + agent join, kubectl over ssh.

mod common;
use common::*;
use rvlab::{Lab, Role};
use std::os::unix::fs::PermissionsExt;

fn install_k3s(lab: &Lab, board: &str) {
    let bin = rvlab::k3s_sim_binary().unwrap();
    let dst = lab.b(board).path("/usr/local/bin/k3s");
    std::fs::copy(&bin, &dst).unwrap();
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The unit install.sh writes (docs/k3s-behaviour.md §2 systemd unit), for `server` or `agent`.
fn unit(kind: &str) -> String {
    let name = if kind == "server" { "k3s" } else { "k3s-agent" };
    format!(
        "[Unit]\nDescription=Lightweight Kubernetes\n[Install]\nWantedBy=multi-user.target\n[Service]\nType=notify\n\
         EnvironmentFile=-/etc/default/%N\nEnvironmentFile=-/etc/systemd/system/{name}.service.env\nKillMode=process\n\
         Delegate=yes\nLimitNOFILE=1048576\nTimeoutStartSec=0\nRestart=always\nRestartSec=5s\n\
         ExecStartPre=-/sbin/modprobe br_netfilter\nExecStartPre=-/sbin/modprobe overlay\n\
         ExecStart=/usr/local/bin/k3s \\\n    {kind} \\\n"
    )
}

/// Installs k3s-agent on `agent` and runs `start` (a systemctl command line) there; its exit status.
fn join_agent(lab: &Lab, agent: &str, start: &str) -> i32 {
    install_k3s(lab, agent);
    let token = std::fs::read_to_string(lab.b("server1").path("/var/lib/rancher/k3s/server/token"))
        .unwrap();
    let env = format!(
        "K3S_URL=https://{}:6443\nK3S_TOKEN={}\n",
        lab.b("server1").address(),
        token.trim()
    );
    std::fs::write(
        lab.b(agent)
            .path("/etc/systemd/system/k3s-agent.service.env"),
        env,
    )
    .unwrap();
    std::fs::write(
        lab.b(agent).path("/etc/systemd/system/k3s-agent.service"),
        unit("agent"),
    )
    .unwrap();
    ssh(lab, agent, start).0
}

#[test]
fn k3s_server_and_agent_run_as_services_on_boards() {
    let mut lab = Lab::builder()
        .boards([("server1", Role::Server), ("agent1", Role::Agent)])
        .seed_upstream(true)
        .ready_delay_ms(100)
        .start()
        .unwrap();
    assert!(
        lab.seeded()
            .iter()
            .any(|i| i.name.starts_with("rancher/mirrored-pause:"))
    );
    install_k3s(&lab, "server1");
    std::fs::write(
        lab.b("server1").path("/etc/systemd/system/k3s.service"),
        unit("server"),
    )
    .unwrap();
    ssh_ok(
        &lab,
        "server1",
        "systemctl daemon-reload && systemctl enable --now k3s",
    );
    // Type=notify: when start returns, the server has written its token and kubeconfig.
    assert!(
        lab.b("server1")
            .path("/var/lib/rancher/k3s/server/token")
            .exists()
    );
    assert!(lab.b("server1").path("/etc/rancher/k3s/k3s.yaml").exists());
    assert_eq!(
        ssh_ok(&lab, "server1", "systemctl is-active k3s"),
        "active\n"
    );
    assert!(ssh_ok(&lab, "server1", "cat /run/rvlab/modprobe.log").contains("br_netfilter"));
    let v = ssh_ok(&lab, "server1", "k3s --version");
    assert!(v.starts_with("k3s version v1."), "{v}");

    assert_eq!(
        join_agent(&lab, "agent1", "systemctl enable --now k3s-agent"),
        0
    );
    wait_for("both nodes in `kubectl get nodes`", || {
        let (code, out, _) = ssh(&lab, "server1", "k3s kubectl get nodes");
        code == 0 && out.contains("server1") && out.contains("agent1")
    });
    // Nothing restarted along the way.
    assert_eq!(lab.b("server1").service_starts("k3s").len(), 1);
    assert_eq!(lab.b("agent1").service_starts("k3s-agent").len(), 1);

    // Re-flash agent1: same hostname, new node password -> rejected until the server forgets it.
    lab.reflash("agent1").unwrap();
    lab.trust_current_host_keys().unwrap();
    // The rejected agent retries and never reports READY=1: a blocking start would wait for
    // ever (TimeoutStartSec=0, as with real systemd), so start without blocking.
    let start = "systemctl enable k3s-agent && systemctl start --no-block k3s-agent";
    assert_eq!(join_agent(&lab, "agent1", start), 0);
    assert_eq!(
        ssh(&lab, "agent1", "systemctl is-active k3s-agent").1,
        "activating\n"
    );
    wait_for("the node-password rejection in the agent's journal", || {
        ssh_ok(&lab, "agent1", "journalctl -u k3s-agent -o cat").contains("Node password rejected")
    });
    ssh_ok(
        &lab,
        "server1",
        "k3s kubectl delete node agent1 && k3s kubectl -n kube-system delete secret agent1.node-password.k3s",
    );
    wait_for("agent1 to rejoin", || {
        let (code, out, _) = ssh(&lab, "server1", "k3s kubectl get nodes");
        code == 0
            && out
                .lines()
                .any(|l| l.starts_with("agent1 ") && l.contains(" Ready"))
    });
}
