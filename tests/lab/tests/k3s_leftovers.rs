//! What the simulated k3s leaves on a board, as real k3s does (its units have KillMode=process):
//! containerd-shim processes per pod sandbox that outlive the k3s process and are adopted again
//! on restart, tmpfs mounts under /run/k3s and /var/lib/kubelet/pods, the CNI links and
//! KUBE-/FLANNEL- iptables rules in the board's emulated network; and that removing them the way
//! k3s-killall.sh / k3s-uninstall.sh do leaves nothing (`Board::k3s_leftovers`).

mod common;
use common::*;
use rvlab::{Lab, Role};
use std::os::unix::fs::PermissionsExt;

const UNIT: &str = "[Unit]\nDescription=Lightweight Kubernetes\n[Install]\nWantedBy=multi-user.target\n[Service]\nType=notify\n\
EnvironmentFile=-/etc/systemd/system/%N.service.env\nKillMode=process\nDelegate=yes\nTimeoutStartSec=0\nRestart=always\nRestartSec=5s\n";

fn install(lab: &Lab, board: &str, unit: &str, args: &str, env: &str) {
    let b = lab.b(board);
    let dst = b.path("/usr/local/bin/k3s");
    std::fs::copy(rvlab::k3s_sim_binary().unwrap(), &dst).unwrap();
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(b.path(&format!("/etc/systemd/system/{unit}.service.env")), env).unwrap();
    std::fs::write(b.path(&format!("/etc/systemd/system/{unit}.service")), format!("{UNIT}ExecStart=/usr/local/bin/k3s {args}\n")).unwrap();
    ssh_ok(lab, board, &format!("systemctl daemon-reload && systemctl enable --now {unit}"));
}

fn shim_pids(lab: &Lab, board: &str) -> Vec<u32> {
    let mut p: Vec<u32> = lab.b(board).k3s_leftovers().unwrap().processes.iter().map(|(pid, _)| *pid).collect();
    p.sort();
    p
}

#[test]
fn shims_mounts_links_and_rules_outlive_k3s_and_go_with_a_killall_style_cleanup() {
    let lab = Lab::builder()
        .boards([("server1", Role::Server), ("agent1", Role::Agent)])
        .seed_upstream(true)
        .ready_delay_ms(100)
        .sim_conf("arch", "amd64") // the seeded rancher/* images have amd64, so every pod starts
        .start()
        .unwrap();
    let s = lab.b("server1");
    std::fs::create_dir_all(s.path("/etc/rancher/k3s")).unwrap();
    std::fs::write(s.path("/etc/rancher/k3s/config.yaml"), "disable: [traefik, metrics-server, local-storage, coredns, servicelb]\n").unwrap();
    let before = lab.b("agent1").k3s_leftovers().unwrap();
    assert!(before.is_empty(), "a fresh board has nothing of k3s: {before:?}");
    assert_eq!(ssh_ok(&lab, "agent1", "iptables-save"), "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n");
    install(&lab, "server1", "k3s", "server", "");
    let token = std::fs::read_to_string(s.path("/var/lib/rancher/k3s/server/token")).unwrap();
    install(&lab, "agent1", "k3s-agent", "agent", &format!("K3S_URL=https://{}:6443\nK3S_TOKEN={}\n", s.address(), token.trim()));
    wait_for("agent1 Ready", || ssh(&lab, "server1", "k3s kubectl get nodes agent1").1.contains(" Ready "));
    let ds = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: ds\nspec:\n  template:\n    metadata:\n      labels:\n        app: ds\n    spec:\n      containers:\n      - name: c\n        image: rancher/mirrored-pause:3.6\n";
    std::fs::write(s.path("/var/lib/rancher/k3s/server/manifests/ds.yaml"), ds).unwrap();
    wait_for("a ds pod Running on each node", || {
        let out = ssh(&lab, "server1", "k3s kubectl get pods -o wide").1;
        out.lines().filter(|l| l.contains(" Running ")).count() == 2
    });

    let l = lab.b("agent1").k3s_leftovers().unwrap();
    assert_eq!(l.processes.len(), 1, "one shim per pod sandbox: {l:?}");
    let (shim_pid, args) = &l.processes[0];
    assert!(args.starts_with("/var/lib/rancher/k3s/data/") && args.contains("/bin/containerd-shim-runc-v2 -namespace k8s.io -id "), "{args}");
    assert_eq!(l.mounts.len(), 3, "{:?}", l.mounts);
    assert!(l.mounts.iter().any(|m| m.starts_with("/run/k3s/containerd/io.containerd.grpc.v1.cri/sandboxes/") && m.ends_with("/shm")));
    assert!(l.mounts.iter().any(|m| m.starts_with("/var/lib/kubelet/pods/") && m.contains("/volumes/kubernetes.io~projected/kube-api-access-")));
    assert!(l.links.contains(&"cni0".to_string()) && l.links.contains(&"flannel.1".to_string()) && l.links.iter().any(|d| d.starts_with("veth")), "{:?}", l.links);
    assert!(l.iptables_rules.iter().any(|r| r.contains("KUBE-")) && l.iptables_rules.iter().any(|r| r.contains("flanneld")));
    // the emulated `ip` shows what k3s-killall.sh looks for
    let links = ssh_ok(&lab, "agent1", "ip link show");
    assert!(links.lines().any(|x| x.contains("master cni0") && x.contains("@if2:")), "{links}");
    assert!(links.contains(": flannel.1: ") && links.starts_with("1: lo: "), "{links}");
    let (code, _, err) = ssh(&lab, "agent1", "ip link delete nosuch0");
    assert_eq!((code, err.as_str()), (1, "Cannot find device \"nosuch0\"\n"));
    let (code, _, _) = ssh(&lab, "agent1", "ip addr add 10.9.9.9/32 dev lo");
    assert_eq!(code, 2, "nothing reaches the host's network namespace");
    // the tmpfs mounts are the board's own: the host does not see them
    let host_mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!l.mounts.iter().any(|m| host_mounts.contains(&format!(" {m} "))));

    // KillMode=process: stopping the unit leaves the shim and mounts; a new k3s adopts them
    ssh_ok(&lab, "agent1", "systemctl stop k3s-agent");
    let after_stop = lab.b("agent1").k3s_leftovers().unwrap();
    assert_eq!(after_stop.processes, l.processes, "the shim outlives k3s");
    assert_eq!(after_stop.mounts.len(), 3);
    ssh_ok(&lab, "agent1", "systemctl start k3s-agent");
    wait_for("agent1 Ready again", || ssh(&lab, "server1", "k3s kubectl get nodes agent1").1.contains(" Ready "));
    std::thread::sleep(std::time::Duration::from_millis(1500)); // a few kubelet syncs
    assert_eq!(shim_pids(&lab, "agent1"), vec![*shim_pid], "the running shim is adopted, not duplicated");
    assert_eq!(lab.b("agent1").k3s_leftovers().unwrap().mounts.len(), 3);

    // a killall/uninstall-style cleanup (written for this test) leaves nothing behind
    ssh_ok(&lab, "agent1", "systemctl stop k3s-agent && systemctl disable k3s-agent");
    let cleanup = r#"set -e
for pid in $(ps -e -o pid= -o args= | awk '$2 ~ /rancher\/k3s\/data\/[^\/]*\/bin\/containerd-shim/ {print $1}'); do kill -9 "$pid"; done
awk '$2 ~ "^(/run/k3s|/var/lib/kubelet/pods|/var/lib/kubelet/plugins)" {print $2}' /proc/self/mounts | sort -r | xargs -r -n1 umount
for dev in $(ip link show | awk '/master cni0/ {sub(/@.*/, "", $2); print $2}'); do ip link delete "$dev"; done
ip link delete cni0; ip link delete flannel.1
iptables-save | grep -v KUBE- | grep -v CNI- | grep -iv flannel | iptables-restore
rm -rf /etc/rancher/k3s /var/lib/rancher/k3s /var/lib/cni /run/k3s /run/flannel /var/lib/kubelet/*
rm -f /usr/local/bin/k3s /etc/systemd/system/k3s-agent.service /etc/systemd/system/k3s-agent.service.env"#;
    ssh_ok(&lab, "agent1", cleanup);
    wait_for("the killed shim to be gone", || shim_pids(&lab, "agent1").is_empty());
    let left = lab.b("agent1").k3s_leftovers().unwrap();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(ssh_ok(&lab, "agent1", "iptables -S"), "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n-P PREROUTING ACCEPT\n-P INPUT ACCEPT\n-P OUTPUT ACCEPT\n-P POSTROUTING ACCEPT\n");
    // the server board still has its own
    assert!(!lab.b("server1").k3s_leftovers().unwrap().processes.is_empty());
}
