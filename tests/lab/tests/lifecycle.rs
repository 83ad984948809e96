//! Lab lifecycle: re-flash, parallel labs, teardown on drop (also on panic), registries.

mod common;
use common::*;
use rvlab::registry::http_status;
use rvlab::{Lab, Role};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

/// Host pids of every process in the same pid namespace as `pid`.
fn processes_in_ns_of(pid: u32) -> (String, Vec<u32>) {
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid"))
        .unwrap()
        .to_string_lossy()
        .into_owned();
    (ns.clone(), processes_in_ns(&ns))
}

fn processes_in_ns(ns: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{pid}/ns/pid"))
            .is_ok_and(|l| l.to_string_lossy() == ns)
            && rvlab::ns::is_running(pid)
        {
            v.push(pid);
        }
    }
    v
}

fn refused(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).is_err()
}

#[test]
fn reflash_wipes_state_and_changes_host_key_only() {
    let mut lab = Lab::builder()
        .boards([("s1", Role::Server), ("a1", Role::Agent)])
        .start()
        .unwrap();
    ssh_ok(
        &lab,
        "a1",
        "mkdir -p /etc/rancher/node && echo pw > /etc/rancher/node/password && echo k > /usr/local/bin/k3s",
    );
    std::fs::write(
        lab.b("a1").path("/etc/systemd/system/idle.service"),
        "[Service]\nExecStart=/bin/sleep 100000\n",
    )
    .unwrap();
    ssh_ok(&lab, "a1", "systemctl start idle");
    ssh_ok(&lab, "s1", "echo keep > /root/keep");
    let old_key = lab.b("a1").host_public_key().to_string();
    let old_id = ssh_ok(&lab, "a1", "cat /etc/machine-id");
    assert_eq!(old_id.trim().len(), 32);
    assert_ne!(old_id, ssh_ok(&lab, "s1", "cat /etc/machine-id"));
    let addr = lab.b("a1").address();
    let old_pid1 = lab.b("a1").pid1().unwrap();

    lab.reflash("a1").unwrap();

    let b = lab.b("a1");
    assert_ne!(b.host_public_key(), old_key);
    assert_eq!(b.address(), addr);
    assert_eq!(b.generation(), 2);
    assert!(!rvlab::ns::is_running(old_pid1));
    assert!(!b.path("/etc/rancher/node/password").exists());
    assert!(!b.path("/usr/local/bin/k3s").exists());
    assert!(b.service_starts("idle").is_empty());
    // The lab's known_hosts still has the old key: strict ssh refuses, as for a real re-flashed board.
    let (code, _, err) = ssh(&lab, "a1", "true");
    assert_eq!(code, 255);
    assert!(
        err.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{err}"
    );
    lab.trust_current_host_keys().unwrap();
    assert_eq!(ssh_ok(&lab, "a1", "hostname"), "a1\n");
    assert_ne!(ssh_ok(&lab, "a1", "cat /etc/machine-id"), old_id);
    assert_eq!(
        ssh_ok(
            &lab,
            "a1",
            "ls -A /usr/local/bin; systemctl is-active idle || true"
        ),
        "inactive\n"
    );
    assert_eq!(ssh_ok(&lab, "a1", "uname -m"), "riscv64\n");
    // The other board is untouched.
    assert_eq!(ssh_ok(&lab, "s1", "cat /root/keep"), "keep\n");
}

#[test]
fn two_labs_in_parallel_do_not_collide() {
    let t = std::thread::spawn(|| {
        Lab::builder()
            .board("server1", Role::Server)
            .start()
            .unwrap()
    });
    let lab1 = Lab::builder()
        .board("server1", Role::Server)
        .start()
        .unwrap();
    let lab2 = t.join().unwrap();
    assert_ne!(lab1.block(), lab2.block());
    assert_ne!(lab1.b("server1").address(), lab2.b("server1").address());
    assert_ne!(lab1.dir(), lab2.dir());
    ssh_ok(&lab1, "server1", "echo one > /etc/which");
    ssh_ok(&lab2, "server1", "echo two > /etc/which");
    assert_eq!(ssh_ok(&lab1, "server1", "cat /etc/which"), "one\n");
    assert_eq!(ssh_ok(&lab2, "server1", "cat /etc/which"), "two\n");
    // Each lab's client key only opens its own boards.
    let cross = lab1.ssh_command("server1").unwrap();
    let args: Vec<String> = cross
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let idx = args.iter().position(|a| a == "-i").unwrap();
    let mut c = std::process::Command::new("ssh");
    let mut args2 = args.clone();
    args2[idx + 1] = lab2.client_key().display().to_string();
    c.args(&args2).arg("true");
    let out = c.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(255),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
}

#[test]
fn everything_is_gone_after_drop() {
    let lab = Lab::builder()
        .boards([("s1", Role::Server), ("a1", Role::Agent)])
        .upstream(true)
        .start()
        .unwrap();
    std::fs::write(
        lab.b("s1").path("/etc/systemd/system/idle.service"),
        "[Service]\nExecStart=/bin/sleep 100000\n",
    )
    .unwrap();
    ssh_ok(&lab, "s1", "systemctl start idle");
    let dir = lab.dir().to_path_buf();
    let mut namespaces = Vec::new();
    for b in lab.boards() {
        let (ns, procs) = processes_in_ns_of(b.pid1().unwrap());
        assert!(procs.len() >= 2, "pid 1 and sshd at least: {procs:?}");
        namespaces.push(ns);
    }
    let ssh_addrs: Vec<SocketAddr> = lab
        .boards()
        .iter()
        .map(|b| SocketAddr::from((b.address(), 22)))
        .collect();
    let up = SocketAddr::from((
        lab.upstream().unwrap().address(),
        lab.upstream().unwrap().port(),
    ));
    assert_eq!(http_status(up, "/v2/"), Some(200));

    drop(lab);

    for ns in &namespaces {
        assert_eq!(
            processes_in_ns(ns),
            Vec::<u32>::new(),
            "processes left in {ns}"
        );
    }
    for a in ssh_addrs {
        assert!(refused(a), "{a} still accepts");
    }
    assert!(refused(up));
    assert!(!dir.exists(), "{} left behind", dir.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&dir.display().to_string()));
}

#[test]
fn a_panicking_test_still_tears_the_lab_down() {
    let (tx, rx) = std::sync::mpsc::channel();
    let r = std::thread::spawn(move || {
        let lab = Lab::builder().board("s1", Role::Server).start().unwrap();
        tx.send((lab.dir().to_path_buf(), lab.b("s1").pid1().unwrap()))
            .unwrap();
        panic!("test failure inside a lab");
    })
    .join();
    assert!(r.is_err());
    let (dir, pid1) = rx.recv().unwrap();
    assert!(!rvlab::ns::is_running(pid1));
    assert!(!Path::new(&dir).exists());
}

#[test]
fn upstream_registry_answers_and_boards_know_where_docker_io_is() {
    let lab = Lab::builder()
        .boards([("s1", Role::Server)])
        .registry_host("mac")
        .upstream(true)
        .start()
        .unwrap();
    let up = lab.upstream().unwrap();
    let conf = std::fs::read_to_string(lab.b("s1").path("/etc/rvlab/upstream.conf")).unwrap();
    assert_eq!(conf, format!("docker.io {}\n", up.url()));
    let sim = std::fs::read_to_string(lab.b("s1").path("/etc/rvlab/sim.conf")).unwrap();
    assert!(
        sim.contains(&format!("node-ip {}\n", lab.b("s1").address())),
        "{sim}"
    );
    // Reachable from inside a board with real curl.
    let body = ssh_ok(&lab, "s1", &format!("curl -sf {}/v2/_catalog", up.url()));
    assert_eq!(body.trim(), r#"{"repositories":[]}"#);
}

#[test]
fn registry_host_board_runs_debian_docker_registry_as_a_service() {
    let mut lab = Lab::builder().registry_host("mac").start().unwrap();
    let mac = lab.registry_host().unwrap();
    assert_eq!(mac.role(), Role::Registry);
    let addr = mac.address();
    let cfg = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/docker-registry\nhttp:\n  addr: {addr}:6000\n"
    );
    std::fs::create_dir_all(mac.path("/etc/docker/registry")).unwrap();
    std::fs::write(mac.path("/etc/docker/registry/config.yml"), cfg).unwrap();
    std::fs::write(
        mac.path("/etc/systemd/system/docker-registry.service"),
        "[Unit]\nDescription=Docker registry\n[Service]\nExecStart=/usr/bin/docker-registry serve /etc/docker/registry/config.yml\nRestart=always\n[Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    ssh_ok(
        &lab,
        "mac",
        "mkdir -p /var/lib/docker-registry && systemctl enable --now docker-registry",
    );
    let sa = SocketAddr::from((addr, 6000));
    wait_for("registry on the registry host", || {
        http_status(sa, "/v2/") == Some(200)
    });
    lab.reflash("mac").unwrap();
    assert!(refused(sa), "the re-flashed board's registry must be gone");
}

#[test]
fn reboot_keeps_state_and_starts_enabled_units() {
    let mut lab = Lab::builder().board("s1", Role::Server).start().unwrap();
    for name in ["on", "off"] {
        std::fs::write(
            lab.b("s1")
                .path(&format!("/etc/systemd/system/{name}.service")),
            "[Service]\nExecStart=/bin/sleep 100000\n[Install]\nWantedBy=multi-user.target\n",
        )
        .unwrap();
    }
    ssh_ok(
        &lab,
        "s1",
        "systemctl enable --now on && systemctl start off && echo x > /etc/kept && echo y > /run/gone",
    );
    let key = lab.b("s1").host_public_key().to_string();
    lab.reboot("s1").unwrap();
    assert_eq!(lab.b("s1").host_public_key(), key);
    assert_eq!(lab.b("s1").generation(), 1);
    // The lab's known_hosts is still valid: same host key.
    assert_eq!(
        ssh_ok(
            &lab,
            "s1",
            "cat /etc/kept; test -e /run/gone || echo no-run"
        ),
        "x\nno-run\n"
    );
    wait_for("the enabled unit to start at boot", || {
        lab.b("s1").service_starts("on").len() == 1
    });
    assert_eq!(ssh(&lab, "s1", "systemctl is-active on").1, "active\n");
    assert_eq!(ssh(&lab, "s1", "systemctl is-active off").1, "inactive\n");
}
