//! kill -9 of rvcluster, and a dropped connection, at K points of a fresh apply (a registry host,
//! a server, an agent, one image): during the k3s binary upload (half of it written), before
//! the text files' one rename (all staged as temp files), before the k3s start, during an image push (a blob half uploaded). Each
//! point is reached exactly, without sleeps: the board's fault hook pauses the command there
//! (tests/support/faults.rs), or the registry's upload directory shows the blob in flight and
//! the registry is stopped (SIGSTOP) while the fault is injected. After each fault: no board
//! lock is held, no temp file is left, every managed file present is whole (the sha256 the
//! converged cluster has), every registry tag resolves to a complete image (skopeo copy); the
//! re-run apply converges (exit 0, then a no-op plan) and every managed file is what a clean
//! apply on freshly flashed boards writes. The test counts the points that passed: K/K.

#[path = "../fixtures/images/gen.rs"]
mod images;

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/faults.rs"]
mod faults;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use rvlab::{Board, Lab, Role};

const MIB: u64 = 1024 * 1024;
const BOARDS: [&str; 3] = ["mac", "server1", "agent1"];
/// Where rvcluster writes on a board (for the snapshot taken right after a fault).
const ROOTS: &str = "/usr/local/bin /etc/rancher /etc/systemd/system /etc/rvcluster /etc/sysctl.d /etc/modules-load.d";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// SIGKILL of rvcluster: no cleanup of any kind on the client side.
    Kill9,
    /// The connection goes: the board's sshd session processes (or, for the push, the registry
    /// process) are killed; rvcluster itself runs on.
    Drop,
}

#[derive(Debug, Clone, Copy)]
enum Point {
    /// The hook `cmd` on `board`: `nth` call matching `pattern`, paused `when`.
    Hook { what: &'static str, board: &'static str, cmd: &'static str, nth: u32, when: &'static str, pattern: &'static str },
    /// A blob of the image half uploaded to the registry.
    Push,
}

impl Point {
    fn what(&self) -> &'static str {
        match self {
            Point::Hook { what, .. } => what,
            Point::Push => "during the image push (a blob half uploaded)",
        }
    }
}

const POINTS: [Point; 4] = [
    Point::Hook { what: "during the k3s binary upload (zstd paused after 1 MiB of the compressed stream)", board: "server1", cmd: "zstd", nth: 1, when: "1048576", pattern: "*/usr/local/bin/.k3s.rvcluster-tmp*" },
    Point::Hook { what: "before the text files' one rename (config.yaml and the rest staged as temp files)", board: "server1", cmd: "rename.ul", nth: 1, when: "before", pattern: "*/etc/rancher/k3s/*" },
    Point::Hook { what: "before the k3s start (enable --now)", board: "server1", cmd: "systemctl", nth: 1, when: "before", pattern: "* enable --now *k3s*" },
    Point::Push,
];

fn spawn_apply(dir: &Path, log: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rvcluster"))
        .args(["--color", "never", "-v", "apply", "cluster.kdl", "--no-wait", "--skip-closure-check"])
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("SSH_AUTH_SOCK")
        .stdout(Stdio::from(File::create(dir.join(format!("{log}.out"))).unwrap()))
        .stderr(Stdio::from(File::create(dir.join(format!("{log}.err"))).unwrap()))
        .spawn()
        .unwrap()
}

fn server_token(lab: &Lab) -> Option<String> {
    std::fs::read_to_string(lab.b("server1").path("/var/lib/rancher/k3s/server/token")).ok().map(|t| t.trim().to_string())
}

/// Managed files of every board, with the server's token (new on every flash) masked so two
/// fresh clusters compare equal.
fn managed(lab: &Lab) -> BTreeMap<String, String> {
    let token = server_token(lab);
    let mut all = BTreeMap::new();
    for b in lab.boards() {
        for (p, state) in faults::managed_files(b) {
            let state = match (&token, state.starts_with("sha256:")) {
                (Some(t), true) => {
                    let text = std::fs::read(b.path(&p)).unwrap();
                    let masked = String::from_utf8_lossy(&text).replace(t.as_str(), "<token>");
                    if masked.as_bytes() == text.as_slice() { state } else { format!("masked:{}", rvcluster::render::sha256_hex(masked.as_bytes())) }
                }
                _ => state,
            };
            all.insert(format!("{}:{p}", b.name()), state);
        }
    }
    all
}

/// Every file and symlink under ROOTS on `b` (path -> state), right after a fault.
fn snapshot(b: &Board) -> BTreeMap<String, String> {
    let out = b.sh(&format!("find {ROOTS} \\( -type f -o -type l \\) 2>/dev/null || true")).unwrap();
    out.lines().map(|p| (p.to_string(), faults::file_state(b, p))).collect()
}

fn registry_hostport(lab: &Lab) -> String {
    format!("{}:5000", lab.registry_host().unwrap().address())
}

fn registry_pid(lab: &Lab) -> u32 {
    let mac = lab.registry_host().unwrap();
    mac.sh("systemctl show -p MainPID --value rvcluster-registry.service").unwrap().trim().parse().unwrap()
}

/// A blob upload in flight: an `_uploads/<id>/data` with bytes in the registry's storage.
fn upload_in_flight(lab: &Lab) -> bool {
    let root = lab.registry_host().unwrap().path("/var/lib/rvcluster/registry/docker/registry/v2/repositories");
    fn walk(p: &Path) -> bool {
        let Ok(rd) = std::fs::read_dir(p) else { return false };
        for e in rd.flatten() {
            let path = e.path();
            if path.file_name().is_some_and(|n| n == "data") && path.parent().and_then(|d| d.parent()).is_some_and(|d| d.ends_with("_uploads")) {
                if std::fs::metadata(&path).map(|m| m.len() > 0).unwrap_or(false) {
                    return true;
                }
            } else if e.file_type().map(|t| t.is_dir()).unwrap_or(false) && walk(&path) {
                return true;
            }
        }
        false
    }
    walk(&root)
}

fn registry_answers(lab: &Lab) -> bool {
    Command::new("curl").args(["-sf", "-o", "/dev/null"]).arg(format!("http://{}/v2/", registry_hostport(lab))).status().unwrap().success()
}

fn reflash_all(lab: &mut Lab, dir: &Path, kdl_extra: &str) {
    for n in BOARDS {
        lab.reflash(n).unwrap();
    }
    e2e::write_lab_cluster_with(lab, dir, "faults", "", kdl_extra);
}

/// One fault at one point on freshly flashed boards; Err says what did not hold.
fn one_case(lab: &mut Lab, dir: &Path, kdl_extra: &str, point: Point, fault: Fault, reference: &BTreeMap<String, String>) -> Result<(), String> {
    reflash_all(lab, dir, kdl_extra);
    let log = format!("{point:?}-{fault:?}").split_whitespace().next().unwrap().replace(['{', ','], "");
    let mut child;
    match point {
        Point::Hook { board, cmd, nth, when, pattern, .. } => {
            faults::arm(lab.b(board), cmd, nth, when, pattern);
            child = spawn_apply(dir, &log);
            let pid = faults::wait_paused(lab.b(board), &mut child);
            match fault {
                Fault::Kill9 => {
                    child.kill().unwrap();
                }
                Fault::Drop => {
                    faults::drop_connection(lab.b(board), pid);
                }
            }
            faults::release(lab.b(board));
        }
        Point::Push => {
            child = spawn_apply(dir, &log);
            faults::wait_until("a blob upload in flight", || upload_in_flight(lab), || child.try_wait().unwrap().is_none());
            let mac = lab.registry_host().unwrap();
            let pid = registry_pid(lab);
            match fault {
                Fault::Kill9 => {
                    // Stopped, the registry can take no further byte: the push is mid-blob when rvcluster dies.
                    mac.sh(&format!("kill -STOP {pid}")).unwrap();
                    child.kill().unwrap();
                    mac.sh(&format!("kill -CONT {pid}")).unwrap();
                }
                Fault::Drop => {
                    mac.sh(&format!("kill -KILL {pid}")).unwrap();
                }
            }
        }
    }
    let status = child.wait().unwrap();
    let err = std::fs::read_to_string(dir.join(format!("{log}.err"))).unwrap_or_default();
    eprintln!("--- {} / {fault:?}: rvcluster ended with {status}\n{err}", point.what());
    if fault == Fault::Drop && status.success() && !matches!(point, Point::Push) {
        return Err(format!("a dropped connection was not reported (exit {status})"));
    }
    faults::wait_locks_free(lab.boards());
    for b in lab.boards() {
        faults::wait_remote_commands_gone(b);
    }
    for b in lab.boards() {
        let tmp = faults::temp_files(b);
        if !tmp.is_empty() {
            return Err(format!("{}: temp files left after the fault:\n{tmp}", b.name()));
        }
    }
    let after_fault: Vec<(String, BTreeMap<String, String>)> = lab.boards().iter().map(|b| (b.name().to_string(), snapshot(b))).collect();
    faults::wait_until("the registry to answer", || registry_answers(lab), || true);
    let tags = faults::registry_tags_whole(&registry_hostport(lab), None);
    eprintln!("tags after the fault: {tags:?}");

    for b in lab.boards() {
        faults::uninstall(b);
    }
    let out = e2e::rv(dir, &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    if out.status.code() != Some(0) {
        return Err(format!("the re-run apply did not converge: {:?}", out.status));
    }
    let out = e2e::rv(dir, &["plan", "cluster.kdl", "--skip-closure-check", "--detailed-exitcode"]);
    if out.status.code() != Some(0) {
        return Err(format!("changes pending after the re-run: {:?}", out.status));
    }
    // Whole files only: what the fault left is either absent or already the converged content.
    for (name, snap) in &after_fault {
        let b = lab.b(name);
        for (p, now) in faults::managed_files(b) {
            if let Some(then) = snap.get(&p)
                && *then != now
                && !p.ends_with(".env")
            {
                return Err(format!("{name}:{p} after the fault was {then}, converged {now}: half-written or wrong"));
            }
        }
    }
    let now = managed(lab);
    if &now != reference {
        return Err(format!("managed files differ from a clean apply:\nclean: {reference:#?}\nnow: {now:#?}"));
    }
    let tags = faults::registry_tags_whole(&registry_hostport(lab), None);
    if tags != ["rvfault/big:1"] {
        return Err(format!("registry tags after the re-run: {tags:?}"));
    }
    Ok(())
}

#[test]
fn kill_9_and_a_dropped_connection_at_every_point_of_a_fresh_apply_converge_on_rerun() {
    let mut lab = Lab::builder()
        .board("server1", Role::Server)
        .board("agent1", Role::Agent)
        .registry_host("mac")
        .ready_delay_ms(200)
        .start()
        .expect("lab starts (needs root, sshd, docker-registry)");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    images::oci_archive(&d.join("work"), &d.join("big.tar"), &["riscv64"], &[images::Layer::new("small", 4096, 1), images::Layer::new("big", 48 * MIB, 2)]);
    let extra = format!("{}image \"docker.io/rvfault/big:1\" from=\"oci-archive:big.tar\"\n", e2e::lab_registry_block(&lab, ""));
    // The reference: a clean apply on freshly flashed boards.
    e2e::write_lab_cluster_with(&lab, d, "faults", "", &extra);
    let out = e2e::rv(d, &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0), "a clean apply");
    let reference = managed(&lab);
    assert!(reference.keys().any(|k| k.ends_with("/usr/local/bin/k3s")), "{reference:#?}");
    assert!(reference.keys().any(|k| k.starts_with("mac:")), "the registry host's files: {reference:#?}");

    let mut passed = Vec::new();
    let mut failed = Vec::new();
    for point in POINTS {
        for fault in [Fault::Kill9, Fault::Drop] {
            match one_case(&mut lab, d, &extra, point, fault, &reference) {
                Ok(()) => passed.push(format!("{} / {fault:?}", point.what())),
                Err(e) => failed.push(format!("{} / {fault:?}: {e}", point.what())),
            }
        }
    }
    let k = POINTS.len() * 2;
    eprintln!("converged on re-run: {}/{k}\n{}", passed.len(), passed.join("\n"));
    assert!(failed.is_empty(), "{}/{k} converged; failed:\n{}", passed.len(), failed.join("\n\n"));
    assert_eq!(passed.len(), k);
}

/// An apply that changes a config key, killed (kill -9, and a dropped connection) after
/// config.yaml is renamed into place and before `systemctl restart`: the board's script dies
/// at its next line (its output has nowhere to go), so the restart never happens. The re-run
/// sees config.yaml already right; it must still restart k3s, exactly once, so that the
/// running k3s has read the new config.
#[test]
fn a_restart_lost_to_an_interrupted_apply_happens_on_the_rerun() {
    let lab = Lab::builder().board("server1", Role::Server).ready_delay_ms(200).start().expect("lab starts");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let srv = lab.b("server1");
    e2e::write_lab_cluster(&lab, d, "lost", "");
    assert_eq!(e2e::rv(d, &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]).status.code(), Some(0));
    for (n, fault) in [Fault::Kill9, Fault::Drop].into_iter().enumerate() {
        e2e::write_lab_cluster(&lab, d, "lost", &format!("        node-label \"zone=z{n}\"\n"));
        faults::wait_until("k3s running", || srv.sh("systemctl is-active k3s || true").unwrap().trim() == "active", || true);
        let starts = srv.service_starts("k3s").len();
        faults::arm(srv, "rename.ul", 1, "after", "*/etc/rancher/k3s/*config.yaml*");
        let mut child = spawn_apply(d, &format!("lost{n}"));
        let pid = faults::wait_paused(srv, &mut child);
        match fault {
            Fault::Kill9 => child.kill().unwrap(),
            Fault::Drop => {
                faults::drop_connection(srv, pid);
            }
        }
        let _ = child.wait();
        faults::release(srv);
        faults::wait_locks_free(lab.boards());
        faults::wait_remote_commands_gone(srv);
        faults::uninstall(srv);
        let cfg = std::fs::read_to_string(srv.path("/etc/rancher/k3s/config.yaml")).unwrap();
        assert!(cfg.contains(&format!("zone=z{n}")), "{fault:?}: config.yaml was written before the fault");
        assert_eq!(srv.service_starts("k3s").len(), starts, "{fault:?}: the fault came before the restart");
        let out = e2e::rv(d, &["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("~ restart k3s.service"), "{fault:?}: the re-run restarts k3s:\n{text}");
        faults::wait_until("the restart to land", || srv.service_starts("k3s").len() > starts, || true);
        let out = e2e::rv(d, &["plan", "cluster.kdl", "--skip-closure-check", "--detailed-exitcode"]);
        assert_eq!(out.status.code(), Some(0), "{fault:?}: converged");
        assert_eq!(srv.service_starts("k3s").len(), starts + 1, "{fault:?}: restarted exactly once");
    }
}
