//! A mixed cluster on the lab: an openEuler riscv64 server and a Debian 13 riscv64 agent, each
//! recognised from its own facts (no `profile=`), converges and re-applies as a no-op; a declared
//! profile that contradicts the board is a plan error naming both.

use rvlab::{Flavour, Lab, Role};

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/faults.rs"]
mod faults;
use e2e::{rv, sha256};

#[test]
fn openeuler_server_and_debian_agent_converge_from_data_alone() {
    let lab = Lab::builder()
        .board("server1", Role::Server)
        .board_with("deb1", Role::Agent, Flavour::debian_13_riscv64())
        .start()
        .expect("lab starts");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k3s = rvlab::k3s_sim_binary().unwrap();
    let key = lab.client_key().display().to_string();
    let node = |name: &str, role: &str, profile: &str| {
        let b = lab.board(name).unwrap();
        format!("node \"{name}\" address=\"{}\" role=\"{role}\"{profile} {{\n    ssh user=\"root\" identity=\"{key}\"\n}}\n", b.address())
    };
    let head = format!(
        "cluster \"mixed\"\nk3s version=\"v1.33.4+k3s1\" {{\n    binary \"{}\" sha256=\"{}\"\n}}\n",
        k3s.display(),
        sha256(&k3s)
    );
    let kdl = format!("{head}{}{}", node("server1", "server", ""), node("deb1", "agent", ""));
    std::fs::write(d.join("cluster.kdl"), &kdl).unwrap();
    let known: String = lab.boards().iter().map(|b| b.known_hosts_line() + "\n").collect();
    std::fs::write(d.join("known_hosts"), known).unwrap();
    assert_eq!(lab.b("deb1").sh("grep ^ID= /etc/os-release").unwrap().trim(), "ID=debian");

    let out = rv(d, &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // openEuler runs firewalld: its step ran there; Debian has none, so no step on deb1.
    let deb_part = stdout.split("applied deb1").nth(1).unwrap_or("");
    assert!(!deb_part.contains("step:"), "no firewall step on Debian:\n{stdout}");
    assert!(stdout.contains("+ step: firewalld"), "the openEuler firewalld step ran:\n{stdout}");
    let deb = lab.b("deb1");
    let env_file = std::fs::read_to_string(deb.path("/etc/systemd/system/k3s-agent.service.env")).unwrap();
    assert!(env_file.contains(&format!("K3S_URL=https://{}:6443", lab.b("server1").address())));
    assert!(std::fs::read_to_string(deb.path("/etc/systemd/system/k3s-agent.service")).unwrap().contains("Type=notify"));

    // The agent joins (k3s kubectl on the server sees both nodes Ready).
    let mut ready = 0;
    for _ in 0..120 {
        let o = lab.ssh("server1", "k3s kubectl get nodes -o json").unwrap();
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&o.stdout) {
            ready = v["items"].as_array().map_or(0, |a| {
                a.iter()
                    .filter(|n| n["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")))
                    .count()
            });
            if ready == 2 {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(ready, 2);

    // Re-apply: no changes, no restart, enable not repeated. Each board's facts run only the
    // probes of the profiles its os-release can match: Debian's nftables question is not
    // asked on openEuler (counted by the fault hook in front of systemctl, which never pauses).
    let starts = deb.service_starts("k3s-agent.service").len();
    let srv = lab.b("server1");
    for b in [srv, deb] {
        faults::count(b, "systemctl", "* is-active --quiet nftables *");
    }
    let out = rv(d, &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches("no changes").count(), 2);
    assert_eq!(lab.b("deb1").service_starts("k3s-agent.service").len(), starts);
    assert_eq!((faults::calls(srv, "systemctl"), faults::calls(deb, "systemctl")), (0, 1), "nftables asked on Debian only");
    // ... and openEuler's "is firewalld active" is no systemctl of its own: the one
    // `systemctl show` of the facts answers it with the k3s unit's state, on each board.
    for b in [srv, deb] {
        faults::count(b, "systemctl", "*");
    }
    faults::count(srv, "firewall-cmd", "*");
    let out = rv(d, &["plan", "cluster.kdl", "--skip-closure-check", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(faults::calls(srv, "systemctl"), 1, "openEuler: one systemctl (show)");
    assert_eq!(faults::calls(deb, "systemctl"), 2, "Debian: the show, and nftables' own question");
    // The firewalld check is ONE firewall-cmd (a Python start on a real board): every zone.
    assert_eq!(faults::calls(srv, "firewall-cmd"), 1, "openEuler: one firewall-cmd (--list-all-zones)");
    for b in [srv, deb] {
        faults::uninstall(b);
    }

    // Another default zone (firewalld.conf's DefaultZone=, where --set-default-zone writes it):
    // the ports are looked for, and opened, there; then the plan is a no-op again.
    let fw = |c: &str| srv.sh(c).unwrap_or_else(|e| panic!("{c}: {e}"));
    fw("firewall-cmd --set-default-zone=work >/dev/null");
    let out = rv(d, &["plan", "cluster.kdl", "--skip-closure-check", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(3), "changes pending: the ports are not open in `work`: {}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("step: firewalld"));
    let out = rv(d, &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(fw("firewall-cmd --zone=work --list-ports").trim(), "6443/tcp 8472/udp 10250/tcp");
    let out = rv(d, &["plan", "cluster.kdl", "--skip-closure-check", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));

    // A declared profile that contradicts what the board reports.
    let wrong = format!("{head}{}{}", node("server1", "server", " profile=\"debian-riscv64\""), node("deb1", "agent", ""));
    std::fs::write(d.join("cluster.kdl"), wrong).unwrap();
    let out = rv(d, &["plan", "cluster.kdl", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("declares profile `debian-riscv64` but the board reports ID=openEuler arch=riscv64 (matches: openeuler-riscv64)"),
        "{text}"
    );
}
