//! Two applies at once on the same cluster. The first is held at an exact point (the board's
//! fault hook pauses its `systemctl start k3s`, so it holds every board lock mid-apply); the
//! second is refused on every host, naming the holder (user@machine, pid), with no change
//! planned from facts it could not lock, and nothing on the boards touched by it; a plan meanwhile
//! warns that it may be stale. The first then finishes; the second, run again, sees the first's
//! result: no changes anywhere.

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/faults.rs"]
mod faults;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use rvlab::{Board, Lab, Role};

fn snapshot(b: &Board) -> BTreeMap<String, String> {
    let out = b.sh("find /usr/local/bin /etc/rancher /etc/systemd/system /var/lib/rvcluster \\( -type f -o -type l \\) 2>/dev/null || true").unwrap();
    out.lines().map(|p| (p.to_string(), faults::file_state(b, p))).collect()
}

#[test]
fn a_second_apply_is_refused_naming_the_holder_and_later_sees_the_first_ones_result() {
    let lab = Lab::builder().board("server1", Role::Server).board("agent1", Role::Agent).ready_delay_ms(200).start().expect("lab starts");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    e2e::write_lab_cluster(&lab, d, "twice", "");
    let srv = lab.b("server1");
    faults::arm(srv, "systemctl", 1, "before", "* enable --now *k3s*");
    let mut first = Command::new(env!("CARGO_BIN_EXE_rvcluster"))
        .args(["--color", "never", "apply", "cluster.kdl", "--no-wait", "--skip-closure-check"])
        .current_dir(d)
        .env("HOME", d)
        .env_remove("SSH_AUTH_SOCK")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    faults::wait_paused(srv, &mut first);
    // The agent's lock is taken by the first apply too: it streams its binary once the server's is
    // in, then waits for the server's token. Snapshot it only in that wait (its binary in place,
    // no upload temp left), or the first apply's own upload shows as a change.
    let agent = lab.b("agent1");
    faults::wait_until(
        "the first apply to hold agent1's lock with its binary streamed",
        || {
            // Cheap to poll: names only, read on the host side (no hashing, no process).
            let temp_in = |dir: &str| {
                std::fs::read_dir(agent.path(dir)).map(|r| r.flatten().any(|e| e.file_name().to_string_lossy().contains("rvcluster-tmp"))).unwrap_or(false)
            };
            agent.path("/usr/local/bin/k3s").exists()
                && !temp_in("/usr/local/bin")
                && !temp_in("/var/lib/rvcluster/store")
                && !faults::lock_free(agent)
        },
        || first.try_wait().unwrap().is_none(),
    );
    let before: Vec<_> = lab.boards().iter().map(snapshot).collect();

    let plan = e2e::rv(d, &["plan", "cluster.kdl", "--skip-closure-check"]);
    let text = String::from_utf8_lossy(&plan.stderr);
    assert!(text.contains("an apply is running on this host") && text.contains("this plan may be stale"), "{text}");

    let second = e2e::rv(d, &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    assert_eq!(second.status.code(), Some(1), "refused");
    let all = format!("{}{}", String::from_utf8_lossy(&second.stdout), String::from_utf8_lossy(&second.stderr));
    let holder = format!("pid {},", first.id());
    for b in ["server1", "agent1"] {
        let line = all.lines().find(|l| l.contains(&format!("[{b}] FAILED"))).unwrap_or_else(|| panic!("{b} refused:\n{all}"));
        assert!(line.contains("another rvcluster apply holds the lock") && line.contains(&holder) && line.contains("rvcluster apply by "), "{b}: names the holder: {line}");
    }
    assert!(!all.contains("+ create") && !all.contains("~ update"), "no change planned without the lock:\n{all}");
    let after: Vec<_> = lab.boards().iter().map(snapshot).collect();
    assert_eq!(before, after, "the refused apply touched nothing");

    faults::release(srv);
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "the first apply finishes: {}", String::from_utf8_lossy(&out.stderr));
    faults::uninstall(srv);
    let again = e2e::rv(d, &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    assert_eq!(again.status.code(), Some(0));
    let text = String::from_utf8_lossy(&again.stdout);
    assert_eq!(text.matches("no changes").count(), 2, "the second apply sees the first one's result:\n{text}");
}
