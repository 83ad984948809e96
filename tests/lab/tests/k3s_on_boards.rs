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

/// The unit install.sh writes (k3s-facts.md), for `server` or `agent`.
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

#[test]
fn k3s_server_and_agent_run_as_services_on_boards() {
    let lab = Lab::builder()
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
    install_k3s(&lab, "agent1");
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

    let token = std::fs::read_to_string(lab.b("server1").path("/var/lib/rancher/k3s/server/token"))
        .unwrap();
    let env = format!(
        "K3S_URL=https://{}:6443\nK3S_TOKEN={}\n",
        lab.b("server1").address(),
        token.trim()
    );
    std::fs::write(
        lab.b("agent1")
            .path("/etc/systemd/system/k3s-agent.service.env"),
        env,
    )
    .unwrap();
    std::fs::write(
        lab.b("agent1")
            .path("/etc/systemd/system/k3s-agent.service"),
        unit("agent"),
    )
    .unwrap();
    ssh_ok(&lab, "agent1", "systemctl enable --now k3s-agent");
    wait_for("both nodes in `kubectl get nodes`", || {
        let (code, out, _) = ssh(&lab, "server1", "k3s kubectl get nodes");
        code == 0 && out.contains("server1") && out.contains("agent1")
    });
    // Nothing restarted along the way.
    assert_eq!(lab.b("server1").service_starts("k3s").len(), 1);
    assert_eq!(lab.b("agent1").service_starts("k3s-agent").len(), 1);
}
