//! Drift: a managed file edited by hand on a board shows in `status` and `plan`; apply restores
//! it and restarts k3s exactly once. daemon-reload is asserted directly from the board's
//! systemctl record: a first apply reloads the manager once (the enable's own reload), a
//! hand-edited unit file costs exactly one daemon-reload (and one restart), a config-only change
//! none.

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/faults.rs"]
mod faults;

use rvlab::{Board, Lab, Role};

const CONFIG: &str = "/etc/rancher/k3s/config.yaml";
const UNIT: &str = "/etc/systemd/system/k3s.service";

fn restarted_once_more(b: &Board, before: usize) {
    faults::wait_until("the restart to land", || b.service_starts("k3s").len() > before, || true);
    assert_eq!(b.service_starts("k3s").len(), before + 1, "exactly one restart");
}

#[test]
fn a_hand_edited_file_shows_as_drift_and_apply_restores_it_with_one_restart_and_reloads_only_for_the_unit() {
    let lab = Lab::builder().board("server1", Role::Server).ready_delay_ms(200).start().expect("lab starts");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let srv = lab.b("server1");
    e2e::write_lab_cluster(&lab, d, "drift", "");
    let reloads = srv.daemon_reloads();
    assert_eq!(e2e::rv(d, &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]).status.code(), Some(0));
    // The first apply writes and enables the unit: the enable's own reload is the only one.
    assert_eq!(srv.daemon_reloads(), reloads + 1, "a first apply reloads the manager once (by the enable)");
    let clean_cfg = std::fs::read(srv.path(CONFIG)).unwrap();
    let clean_unit = std::fs::read(srv.path(UNIT)).unwrap();

    // 1. config.yaml edited by hand.
    let mut edited = clean_cfg.clone();
    edited.extend_from_slice(b"node-label:\n  - \"edited=by-hand\"\n");
    std::fs::write(srv.path(CONFIG), &edited).unwrap();
    let out = e2e::rv(d, &["status", "cluster.kdl"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("drift") && text.contains(CONFIG) && !text.contains("drift none"), "status shows the drift:\n{text}");
    let out = e2e::rv(d, &["plan", "cluster.kdl", "--skip-closure-check", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(3), "plan: changes pending");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("~ update {CONFIG}")) && text.contains("-  - \"edited=by-hand\""), "plan shows the file and the diff:\n{text}");
    let (starts, reloads) = (srv.service_starts("k3s").len(), srv.daemon_reloads());
    let out = e2e::rv(d, &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(std::fs::read(srv.path(CONFIG)).unwrap(), clean_cfg, "restored byte for byte");
    restarted_once_more(srv, starts);
    let out = e2e::rv(d, &["plan", "cluster.kdl", "--skip-closure-check", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "converged");
    assert_eq!(srv.service_starts("k3s").len(), starts + 1, "still exactly one restart");
    assert_eq!(srv.daemon_reloads(), reloads, "a config-only change: no daemon-reload");

    // 2. The unit file edited by hand: one daemon-reload, one restart.
    let text = String::from_utf8(clean_unit.clone()).unwrap().replace("[Service]\n", "[Service]\nEnvironment=EDITED=1\n");
    std::fs::write(srv.path(UNIT), text).unwrap();
    let out = e2e::rv(d, &["plan", "cluster.kdl", "--skip-closure-check", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("~ update {UNIT}")));
    let (starts, reloads) = (srv.service_starts("k3s").len(), srv.daemon_reloads());
    let out = e2e::rv(d, &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(std::fs::read(srv.path(UNIT)).unwrap(), clean_unit, "restored");
    restarted_once_more(srv, starts);
    assert_eq!(srv.daemon_reloads(), reloads + 1, "the unit changed: exactly one daemon-reload");
    let out = e2e::rv(d, &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no changes"), "a no-op");
    assert_eq!(srv.daemon_reloads(), reloads + 1, "no further daemon-reload");
    assert_eq!(srv.service_starts("k3s").len(), starts + 1, "no further restart");
    let show = srv.sh("systemctl show -p NeedDaemonReload --value k3s.service").unwrap();
    assert_eq!(show.trim(), "no", "systemd runs the unit on disk");
}
