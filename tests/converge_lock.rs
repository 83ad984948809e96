//! The board lock lives exactly as long as the apply's own remote command: rvcluster killed with
//! SIGKILL in the middle of a first apply (lock taken, binary upload under way) leaves no lock,
//! no half-written file and no temp file, and the next apply finishes the job with no manual step.

use std::path::Path;
use std::time::Duration;

use rvlab::{Lab, Role};

#[path = "support/e2e.rs"]
mod e2e;

fn write_cluster(lab: &Lab, dir: &Path) {
    e2e::write_lab_cluster(lab, dir, "lock", "");
}

fn lock_is_free(lab: &Lab) -> bool {
    let out = lab.b("server1").exec_inside("flock -n /var/lib/rvcluster/apply.lock true").unwrap();
    out.status.success()
}

#[test]
fn a_killed_apply_leaves_no_lock_and_no_half_written_file() {
    let lab = Lab::builder().board("server1", Role::Server).ready_delay_ms(200).start().expect("lab starts");
    let dir = tempfile::tempdir().unwrap();
    write_cluster(&lab, dir.path());
    let board = lab.b("server1");
    let owner = board.path("/var/lib/rvcluster/apply.owner");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rvcluster"))
        .args(["-q", "apply", "cluster.kdl", "--no-wait", "--skip-closure-check"])
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env_remove("SSH_AUTH_SOCK")
        .spawn()
        .unwrap();
    // The lock is taken (its owner written) before anything else happens on the board.
    let mut held = false;
    for _ in 0..600 {
        if owner.exists() {
            held = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(held, "apply took the board lock");
    assert!(!lock_is_free(&lab), "the lock is held while apply runs");
    child.kill().unwrap(); // SIGKILL: no cleanup of any kind on the client side
    let _ = child.wait();
    // sshd sees the connection drop, the held command's stdin ends, its shell exits: lock gone.
    let mut freed = false;
    for _ in 0..300 {
        if lock_is_free(&lab) {
            freed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(freed, "the lock was released without any manual step");
    let tmp = board.exec_inside("find /usr/local/bin /etc/rancher /etc/systemd/system /var/lib/rvcluster -name '*.rvcluster-tmp*'").unwrap();
    assert_eq!(String::from_utf8_lossy(&tmp.stdout), "", "no temp file left behind");
    // Whatever got written is whole: the binary is absent or exactly the pinned one.
    let k3s = rvlab::k3s_sim_binary().unwrap();
    let on_board = board.path("/usr/local/bin/k3s");
    if on_board.exists() {
        assert_eq!(e2e::sha256(&on_board), e2e::sha256(&k3s), "never a half-written binary");
    }
    // The next apply finishes the job.
    let out = e2e::rv(dir.path(), &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(e2e::sha256(&on_board), e2e::sha256(&k3s));
    let out = e2e::rv(dir.path(), &["plan", "cluster.kdl", "--skip-closure-check", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "converged: nothing pending");
}

/// Ctrl-C (SIGINT) in the middle of a first apply on a server and two agents: rvcluster starts
/// no new work, finishes what is in flight, says which hosts are done, half done and untouched,
/// exits 130; every board lock is free, nothing is half-written, and the next apply converges.
#[test]
fn ctrl_c_stops_cleanly_reports_each_host_and_exits_130() {
    let lab = e2e::server_and_agents(2);
    let dir = tempfile::tempdir().unwrap();
    e2e::write_lab_cluster(&lab, dir.path(), "ctrlc", "");
    let owner = lab.b("server1").path("/var/lib/rvcluster/apply.owner");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_rvcluster"))
        .args(["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"])
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env_remove("SSH_AUTH_SOCK")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if owner.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(owner.exists(), "apply took the server's lock");
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted") && err.contains("half done:") && err.contains("untouched:"), "{err}");
    assert!(err.contains("server1"), "the server is named: {err}");
    for b in lab.boards() {
        let free = b.exec_inside("[ ! -e /var/lib/rvcluster/apply.lock ] || flock -n /var/lib/rvcluster/apply.lock true").unwrap();
        assert!(free.status.success(), "{}: lock free", b.name());
        let tmp = b.exec_inside("find /usr/local/bin /etc/rancher /etc/systemd/system /var/lib/rvcluster -name '*.rvcluster-tmp*'").unwrap();
        assert_eq!(String::from_utf8_lossy(&tmp.stdout), "", "{}: no temp file", b.name());
    }
    let out = e2e::rv(dir.path(), &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0), "the next apply finishes the job");
    let out = e2e::rv(dir.path(), &["plan", "cluster.kdl", "--skip-closure-check", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "converged");
}
