//! Boards: real ssh into an emulated board and what it looks like from inside.

mod common;
use common::*;
use rvlab::{Lab, Role};

#[test]
fn ssh_into_board_sees_openeuler_riscv64_with_own_hostname() {
    let lab = Lab::builder()
        .boards([("server1", Role::Server), ("agent1", Role::Agent)])
        .start()
        .unwrap();
    assert_eq!(ssh_ok(&lab, "server1", "uname -m"), "riscv64\n");
    assert_eq!(ssh_ok(&lab, "server1", "arch"), "riscv64\n");
    assert_eq!(ssh_ok(&lab, "agent1", "hostname"), "agent1\n");
    assert_eq!(ssh_ok(&lab, "server1", "hostname"), "server1\n");
    let osr = ssh_ok(&lab, "server1", "cat /etc/os-release");
    assert!(osr.contains("ID=\"openEuler\""), "{osr}");
    assert!(osr.contains("VERSION_ID=\"24.03\""), "{osr}");
    let all = ssh_ok(&lab, "server1", "uname -a");
    assert!(
        all.starts_with("Linux server1 ")
            && all
                .trim_end()
                .ends_with("riscv64 riscv64 riscv64 GNU/Linux"),
        "{all}"
    );
    assert_eq!(ssh_ok(&lab, "server1", "uname -s"), "Linux\n");
    // The nodename is the board's, the release the running kernel's.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(ssh_ok(&lab, "server1", "uname -nr"), format!("server1 {release}"));
    // Routes are the shared namespace's IPv4 table, as iproute2 starts its lines
    // ("default via GW dev DEV"; the emulation omits proto/src).
    let host = std::process::Command::new("ip").args(["-4", "route", "show", "default"]).output().unwrap();
    let start = |l: &str| l.split_whitespace().take(5).collect::<Vec<_>>().join(" ");
    let host: Vec<String> = String::from_utf8_lossy(&host.stdout).lines().map(start).collect();
    let board: Vec<String> = ssh_ok(&lab, "server1", "ip route show default").lines().map(start).collect();
    assert_eq!(board, host, "ip route show default");
    let all = ssh_ok(&lab, "server1", "ip route");
    assert!(all.lines().filter(|l| !l.starts_with("default")).all(|l| l.contains("/") && l.contains(" scope link")), "{all}");
    assert_eq!(ssh_ok(&lab, "server1", "whoami"), "root\n");
    // openEuler's own tools that Debian lacks.
    ssh_ok(
        &lab,
        "server1",
        "printf 'X' > /etc/pki/ca-trust/source/anchors/lab.crt && update-ca-trust extract",
    );
    let bundle = ssh_ok(
        &lab,
        "server1",
        "tail -c 2 /etc/pki/tls/certs/ca-bundle.crt",
    );
    assert_eq!(bundle, "X\n");
    // firewalld runs, as on a fresh openEuler install; the k3s profile's step works against it.
    wait_for("firewalld at boot", || {
        ssh(&lab, "server1", "systemctl is-active --quiet firewalld").0 == 0
    });
    let query = "firewall-cmd --query-port=6443/tcp && firewall-cmd --zone=trusted --query-source=10.42.0.0/16";
    assert_eq!(
        ssh(&lab, "server1", query),
        (1, "no\n".to_string(), String::new())
    );
    let add = "firewall-cmd --permanent --add-port=6443/tcp --add-port=8472/udp && firewall-cmd --permanent --zone=trusted --add-source=10.42.0.0/16 --add-source=10.43.0.0/16";
    assert_eq!(ssh_ok(&lab, "server1", add), "success\nsuccess\n");
    assert_eq!(
        ssh(&lab, "server1", query).0,
        1,
        "permanent only: not in the runtime config before --reload"
    );
    assert_eq!(
        ssh_ok(
            &lab,
            "server1",
            &format!("firewall-cmd --reload && {query}")
        ),
        "success\nyes\nyes\n"
    );
    // Every zone at once, as firewalld 2.1 prints them: the default one marked, each zone's
    // runtime ports and sources on indented lines.
    let all = ssh_ok(&lab, "server1", "firewall-cmd --list-all-zones");
    assert!(all.contains("\npublic (default, active)\n  target: default\n"), "{all}");
    assert!(all.contains("  ports: 6443/tcp 8472/udp\n"), "{all}");
    assert!(all.contains("\ntrusted (active)\n  target: ACCEPT\n"), "{all}");
    assert!(all.contains("  sources: 10.42.0.0/16 10.43.0.0/16\n"), "{all}");
    assert!(all.starts_with("block\n"), "{all}");
    assert_eq!(ssh_ok(&lab, "server1", "firewall-cmd --get-default-zone"), "public\n");
    assert_eq!(
        ssh(&lab, "agent1", "firewall-cmd --query-port=6443/tcp").0,
        1
    );
    ssh_ok(&lab, "agent1", "systemctl disable --now firewalld");
    assert_eq!(
        ssh(&lab, "agent1", "firewall-cmd --state"),
        (252, "not running\n".to_string(), String::new())
    );
    // The host's own view is untouched.
    let host_m = std::process::Command::new("uname")
        .arg("-m")
        .output()
        .unwrap()
        .stdout;
    assert_ne!(String::from_utf8_lossy(&host_m), "riscv64\n");
}

#[test]
fn board_state_dirs_are_private_and_readable_from_the_host() {
    let lab = Lab::builder()
        .boards([("s1", Role::Server), ("a1", Role::Agent)])
        .start()
        .unwrap();
    // A fresh board has an empty /usr/local/bin, whatever the host has there.
    assert_eq!(ssh_ok(&lab, "s1", "ls -A /usr/local/bin"), "");
    ssh_ok(
        &lab,
        "s1",
        "mkdir -p /etc/rancher/k3s /var/lib/rancher/k3s && echo 'node-name: s1' > /etc/rancher/k3s/config.yaml \
         && printf '#!/bin/sh\\necho fake\\n' > /usr/local/bin/k3s && chmod 755 /usr/local/bin/k3s \
         && echo x > /run/marker && echo y > /tmp/t",
    );
    assert_eq!(ssh_ok(&lab, "s1", "k3s"), "fake\n");
    // Visible from the host through path(), with the same inode and mtime as inside.
    let host = lab.b("s1").path("/etc/rancher/k3s/config.yaml");
    assert_eq!(std::fs::read_to_string(&host).unwrap(), "node-name: s1\n");
    let inside = ssh_ok(&lab, "s1", "stat -c '%i %Y' /etc/rancher/k3s/config.yaml");
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&host).unwrap();
    assert_eq!(inside.trim(), format!("{} {}", m.ino(), m.mtime()));
    assert!(lab.b("s1").path("/usr/local/bin/k3s").exists());
    assert!(lab.b("s1").path("/run/marker").exists());
    // Not on the other board, not on the host.
    assert_eq!(ssh(&lab, "a1", "test -e /etc/rancher/k3s/config.yaml").0, 1);
    assert_eq!(ssh(&lab, "a1", "test -e /usr/local/bin/k3s").0, 1);
    assert!(!std::path::Path::new("/etc/rancher/k3s/config.yaml").exists());
    assert!(!std::path::Path::new("/usr/local/bin/k3s").exists());
    // /usr is the host's.
    assert_eq!(
        ssh(
            &lab,
            "a1",
            "test -x /usr/sbin/sshd && test -x /usr/bin/docker-registry"
        )
        .0,
        0
    );
    // exec_inside runs in the board's namespaces.
    let out = lab.b("s1").sh("hostname; cat /run/marker").unwrap();
    assert_eq!(out, "s1\nx\n");
}

#[test]
fn unknown_host_key_is_refused_by_strict_ssh() {
    let lab = Lab::builder().board("b1", Role::Agent).start().unwrap();
    std::fs::write(lab.known_hosts(), "").unwrap();
    let (code, _, err) = ssh(&lab, "b1", "true");
    assert_eq!(code, 255);
    assert!(err.contains("Host key verification failed"), "{err}");
}

#[test]
fn kernel_settings_of_a_board_never_reach_the_host() {
    let lab = Lab::builder().board("s1", Role::Server).start().unwrap();
    let host_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let other = if host_before.trim() == "1" { "0" } else { "1" };
    std::fs::create_dir_all(lab.b("s1").path("/etc/sysctl.d")).unwrap();
    std::fs::write(
        lab.b("s1").path("/etc/sysctl.d/90-k3s.conf"),
        format!("net.ipv4.ip_forward = {other}\n# comment\nnet.bridge.bridge-nf-call-iptables=1\n"),
    )
    .unwrap();
    // Without br_netfilter (in the host kernel or "loaded" by the board's modprobe) the bridge
    // keys do not exist, as on a real kernel.
    if !std::path::Path::new("/proc/sys/net/bridge").exists() {
        let out = ssh(&lab, "s1", "sysctl --system");
        assert_eq!(out.0, 255);
        assert!(
            out.2
                .contains("cannot stat /proc/sys/net/bridge/bridge-nf-call-iptables"),
            "{}",
            out.2
        );
    }
    assert_eq!(ssh(&lab, "s1", "sysctl -n net.nonexistent.key").0, 255);
    ssh_ok(&lab, "s1", "modprobe br_netfilter");
    let out = ssh(&lab, "s1", "sysctl --system");
    assert_eq!(out.0, 0, "{}", out.2);
    assert!(
        out.1.contains("net.bridge.bridge-nf-call-iptables = 1\n"),
        "{}",
        out.1
    );
    assert!(
        out.1.contains("* Applying /etc/sysctl.d/90-k3s.conf ..."),
        "{}",
        out.1
    );
    assert!(
        out.1.contains(&format!("net.ipv4.ip_forward = {other}\n")),
        "{}",
        out.1
    );
    assert_eq!(
        ssh_ok(&lab, "s1", "sysctl -n net.ipv4.ip_forward"),
        format!("{other}\n")
    );
    assert_eq!(
        ssh(&lab, "s1", "echo 1 > /proc/sys/net/ipv4/ip_forward").0,
        1,
        "/proc/sys is read-only on a board"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_before
    );
}

#[test]
fn non_root_user_logs_in_and_has_passwordless_sudo() {
    let lab = Lab::builder()
        .board("s1", Role::Server)
        .sudo_user("euler")
        .start()
        .unwrap();
    assert_eq!(lab.b("s1").sudo_user(), Some("euler"));
    let out = lab
        .ssh_command_as("s1", "euler")
        .unwrap()
        .arg("id -un; sudo -n id -u; sudo -n cat /etc/rvlab/arch")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "euler\n0\nriscv64\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The user exists only on the board.
    assert!(
        !std::fs::read_to_string("/etc/passwd")
            .unwrap()
            .contains("euler:")
    );
}

#[test]
fn flavour_is_data_a_debian_riscv64_board_is_just_another_value() {
    let lab = Lab::builder()
        .board("d1", Role::Agent)
        .flavour(rvlab::Flavour::debian_13_riscv64())
        .start()
        .unwrap();
    assert_eq!(
        ssh_ok(
            &lab,
            "d1",
            ". /etc/os-release; echo $ID $VERSION_ID; uname -m; [ ! -e /proc/sys/kernel/arch ] || cat /proc/sys/kernel/arch"
        ),
        if std::path::Path::new("/proc/sys/kernel/arch").exists() { "debian 13\nriscv64\nriscv64\n" } else { "debian 13\nriscv64\n" }
    );
    assert!(lab.b("d1").path("/etc/debian_version").exists());
    assert!(!lab.b("d1").path("/etc/openEuler-release").exists());
    let sim = std::fs::read_to_string(lab.b("d1").path("/etc/rvlab/sim.conf")).unwrap();
    assert!(sim.contains("arch riscv64\n"), "{sim}");
}
