//! A board rebooted in the middle of an apply (lab `reboot`: every process killed, /run and
//! /tmp emptied, the rest of its state kept, enabled units started at boot): during the k3s
//! binary upload of a fresh apply (half of it in a temp file), and on a converged cluster with
//! a changed config.yaml staged as a temp file, just before the text files' rename (re-run with
//! that config, and with another one). apply reports the host failed (exit 1); the
//! re-run converges (exit 0, then a no-op plan) with no temp file left and k3s running with
//! the new config.

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/faults.rs"]
mod faults;

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use rvlab::{Lab, Role};

fn spawn_apply(dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rvcluster"))
        .args(["--color", "never", "apply", "cluster.kdl", "--no-wait", "--skip-closure-check"])
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("SSH_AUTH_SOCK")
        .stdout(Stdio::from(File::create(dir.join("faulted.out")).unwrap()))
        .stderr(Stdio::from(File::create(dir.join("faulted.err")).unwrap()))
        .spawn()
        .unwrap()
}

/// Reboots server1 at the armed point, checks the run failed naming it, and that the re-run
/// converges leaving no temp file.
fn reboot_at(lab: &mut Lab, d: &Path, cmd: &str, when: &str, pattern: &str) {
    reboot_at_then(lab, d, cmd, when, pattern, None)
}

/// [`reboot_at`], with cluster.kdl's config changed to `then` (extra config lines) before the
/// re-run: what the interrupted apply staged is not written again by it.
fn reboot_at_then(lab: &mut Lab, d: &Path, cmd: &str, when: &str, pattern: &str, then: Option<&str>) {
    faults::arm(lab.b("server1"), cmd, 1, when, pattern);
    let mut child = spawn_apply(d);
    faults::wait_paused(lab.b("server1"), &mut child);
    lab.reboot("server1").unwrap();
    let status = child.wait().unwrap();
    let err = std::fs::read_to_string(d.join("faulted.err")).unwrap();
    eprintln!("apply during the reboot: {status}\n{err}");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("[server1] FAILED"), "names the host: {err}");
    faults::uninstall(lab.b("server1"));
    if let Some(extra) = then {
        e2e::write_lab_cluster(lab, d, "reboot", extra);
    }
    let out = e2e::rv(d, &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0), "the re-run converges");
    let out = e2e::rv(d, &["plan", "cluster.kdl", "--skip-closure-check", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "nothing pending");
    for b in lab.boards() {
        assert_eq!(faults::temp_files(b), "", "{}: no temp file left", b.name());
    }
}

#[test]
fn a_board_rebooted_mid_apply_converges_on_the_rerun() {
    let mut lab = Lab::builder().board("server1", Role::Server).board("agent1", Role::Agent).ready_delay_ms(200).start().expect("lab starts");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    e2e::write_lab_cluster(&lab, d, "reboot", "");

    // 1. Fresh apply, the server reboots with part of the k3s binary in a temp file (zstd paused
    // after 1 MiB of the compressed stream).
    reboot_at(&mut lab, d, "zstd", "1048576", "*/usr/local/bin/.k3s.rvcluster-tmp*");
    let k3s = rvlab::k3s_sim_binary().unwrap();
    assert_eq!(e2e::sha256(&lab.b("server1").path("/usr/local/bin/k3s")), e2e::sha256(&k3s));

    // 2. Converged; a config change; the server reboots with the new config.yaml staged as a
    // temp file, just before the rename (no trap runs: the re-run removes the temp file). k3s
    // is enabled, so it comes back at boot; the re-run converges.
    e2e::write_lab_cluster(&lab, d, "reboot", "        node-label \"zone=after-reboot\"\n");
    reboot_at(&mut lab, d, "rename.ul", "before", "*/etc/rancher/k3s/*config.yaml*");
    let srv = lab.b("server1");
    faults::wait_until("k3s running after the reboot", || srv.sh("systemctl is-active k3s || true").unwrap().trim() == "active", || true);
    let cfg = std::fs::read_to_string(srv.path("/etc/rancher/k3s/config.yaml")).unwrap();
    assert!(cfg.contains("zone=after-reboot"), "{cfg}");
    // The running k3s was started after the config was written (at boot, or by the re-run).
    let last = srv.service_starts("k3s").last().cloned().expect("k3s started");
    let written = std::fs::metadata(srv.path("/etc/rancher/k3s/config.yaml")).unwrap().modified().unwrap();
    assert!(last.at >= written, "k3s runs with the new config");

    // 3. The same point, but the re-run wants yet another config.yaml: the temp files of the
    // interrupted one (config.yaml beside it, its store copy in the generation store) are not
    // written again; the re-run removes them all the same (the store's when it records).
    e2e::write_lab_cluster(&lab, d, "reboot", "        node-label \"zone=staged-only\"\n");
    reboot_at_then(&mut lab, d, "rename.ul", "before", "*/etc/rancher/k3s/*config.yaml*", Some("        node-label \"zone=final\"\n"));
    let cfg = std::fs::read_to_string(lab.b("server1").path("/etc/rancher/k3s/config.yaml")).unwrap();
    assert!(cfg.contains("zone=final") && !cfg.contains("staged-only"), "{cfg}");
}
