//! The registry fails in the middle of a push, for real: the managed registry on the lab's
//! registry host is stopped (`systemctl stop`) while the big blob goes up, or its storage is a
//! 16 MiB tmpfs that fills up. apply fails naming the image and the blob; no tag points at a
//! missing manifest; the re-run (registry started again / space freed) pushes only what is
//! missing: the blobs that were complete are not sent again, counted from the registry's own
//! access log (one finished upload, `PUT ...?digest=`, per blob over both runs).

#[path = "../fixtures/images/gen.rs"]
mod images;

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/faults.rs"]
mod faults;

use std::fs::File;
use std::process::{Command, Stdio};

use rvlab::{Lab, Role};

const MIB: u64 = 1024 * 1024;
const IMAGE: &str = "docker.io/rvfault/big:1";
const STORAGE: &str = "/var/lib/rvcluster/registry";

struct Setup {
    lab: Lab,
    dir: tempfile::TempDir,
    written: images::Written,
}

fn setup() -> Setup {
    let lab = Lab::builder().board("server1", Role::Server).registry_host("mac").start().expect("lab starts (needs root, sshd, docker-registry)");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let written = images::oci_archive(&d.join("work"), &d.join("big.tar"), &["riscv64"], &[images::Layer::new("small", 4096, 11), images::Layer::new("big", 48 * MIB, 12)]);
    let extra = format!("{}image \"{IMAGE}\" from=\"oci-archive:big.tar\"\n", e2e::lab_registry_block(&lab, ""));
    e2e::write_lab_cluster_with(&lab, d, "regfault", "", &extra);
    Setup { lab, dir, written }
}

fn apply_args() -> [&'static str; 6] {
    ["apply", "cluster.kdl", "--on", "mac", "--no-wait", "--skip-closure-check"]
}

/// Finished blob uploads (`PUT .../blobs/uploads/...digest=sha256:HEX`, answered 201) of `digest`
/// in the registry's access log.
fn finished_uploads(lab: &Lab, digest: &str) -> usize {
    let hex = digest.trim_start_matches("sha256:");
    let log = lab.registry_host().unwrap().journal("rvcluster-registry.service");
    log.lines().filter(|l| l.contains("\"PUT /v2/") && l.contains("/blobs/uploads/") && l.contains(hex) && l.contains("\" 201 ")).count()
}

/// Blob uploads of any digest the registry has finished (answered 201) in its access log.
fn finished_blob_puts(lab: &Lab) -> usize {
    let log = lab.registry_host().unwrap().journal("rvcluster-registry.service");
    log.lines().filter(|l| l.contains("\"PUT /v2/") && l.contains("/blobs/uploads/") && l.contains("digest=sha256") && l.contains("\" 201 ")).count()
}

fn blob_committed(lab: &Lab, digest: &str) -> bool {
    let hex = digest.trim_start_matches("sha256:");
    lab.registry_host().unwrap().path(&format!("{STORAGE}/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2])).exists()
}

/// How many blobs the registry has stored whole (`blobs/sha256/XX/HEX/data`).
fn committed_blobs(lab: &Lab) -> usize {
    let root = lab.registry_host().unwrap().path(&format!("{STORAGE}/docker/registry/v2/blobs/sha256"));
    std::fs::read_dir(root).into_iter().flatten().flatten().flat_map(|p| std::fs::read_dir(p.path()).into_iter().flatten().flatten()).filter(|e| e.path().join("data").exists()).count()
}

fn upload_bytes_in_flight(lab: &Lab) -> u64 {
    let root = lab.registry_host().unwrap().path(&format!("{STORAGE}/docker/registry/v2/repositories/rvfault/big/_uploads"));
    std::fs::read_dir(root).into_iter().flatten().flatten().filter_map(|e| std::fs::metadata(e.path().join("data")).ok()).map(|m| m.len()).max().unwrap_or(0)
}

fn rerun_args() -> [&'static str; 7] {
    ["apply", "cluster.kdl", "--on", "mac", "--no-wait", "--skip-closure-check", "--json"]
}

/// The re-run's --json report: `missing` of the image's `blobs` blobs uploaded, the rest found
/// present; the bytes sent are the big blob's once (48 MiB and, with a small blob, a little).
fn the_rerun_sent_only_what_was_missing(out: &std::process::Output, missing: usize, blobs: usize) {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let img = &v["images"]["images"][0];
    assert_eq!(img["uploaded"], missing, "{img}");
    assert_eq!(img["present"], blobs - missing, "what the repository had after the first run is present: {img}");
    let sent = img["bytes_sent"].as_u64().unwrap();
    assert!((48 * MIB..49 * MIB).contains(&sent), "sent {sent} bytes: the big blob once");
}

fn hostport(lab: &Lab) -> String {
    format!("{}:5000", lab.registry_host().unwrap().address())
}

#[test]
fn registry_stopped_mid_push_names_image_and_blob_and_the_rerun_sends_only_the_rest() {
    let s = setup();
    let (lab, d) = (&s.lab, s.dir.path());
    let small = s.written.layers_of("riscv64")[0].clone();
    let big = s.written.layers_of("riscv64")[1].clone();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rvcluster"))
        .args(["--color", "never"])
        .args(apply_args())
        .current_dir(d)
        .env("HOME", d)
        .env_remove("SSH_AUTH_SOCK")
        .stdout(Stdio::from(File::create(d.join("first.out")).unwrap()))
        .stderr(Stdio::from(File::create(d.join("first.err")).unwrap()))
        .spawn()
        .unwrap();
    // The small layer and the config are in (two blobs stored whole: the error can only be
    // the big one's, and the re-run finds both present), the big one is on its way: then the
    // registry goes down. Waiting for the small layer alone raced with the config's upload
    // on a busy machine; and a blob's data on disk is not yet its answer to the client (the
    // registry writes the data, then the repository's link, then answers 201): the access
    // log's 201 for both PUTs says the client has its answers.
    faults::wait_until(
        "the small layer and the config committed (both answered 201) and the big one in flight",
        || blob_committed(lab, &small) && committed_blobs(lab) == 2 && finished_blob_puts(lab) == 2 && upload_bytes_in_flight(lab) > MIB,
        || child.try_wait().unwrap().is_none(),
    );
    // The client is frozen (SIGSTOP, all its threads) while the registry is stopped, then let
    // go: on a busy machine the emulated `systemctl stop` took long enough for the big blob to
    // finish first, and the registry then went down under the manifest instead.
    let signal = |sig: &str| assert!(Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success());
    signal("-STOP");
    let mac = lab.registry_host().unwrap();
    mac.sh("systemctl stop rvcluster-registry.service").unwrap();
    signal("-CONT");
    let status = child.wait().unwrap();
    let err = std::fs::read_to_string(d.join("first.err")).unwrap();
    eprintln!("first apply: {status}\n{}{err}", std::fs::read_to_string(d.join("first.out")).unwrap());
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{IMAGE}: blob {big}")), "the error names the image and the blob:\n{err}");
    assert!(!blob_committed(lab, &big), "the big blob never completed");

    // The re-run starts the registry again (its unit is enabled, not running) and resumes.
    let out = e2e::rv(d, &rerun_args());
    assert_eq!(out.status.code(), Some(0));
    // Config and small layer present, the big one sent.
    the_rerun_sent_only_what_was_missing(&out, 1, 3);
    assert_eq!(finished_uploads(lab, &small), 1, "the small layer was uploaded once over both runs");
    assert_eq!(finished_uploads(lab, &big), 1, "the big layer finished once, in the re-run");
    let tags = faults::registry_tags_whole(&hostport(lab), None);
    assert_eq!(tags, ["rvfault/big:1"]);
}

#[test]
fn registry_disk_full_names_image_and_blob_and_the_rerun_sends_only_the_rest() {
    let s = setup();
    let (lab, d) = (&s.lab, s.dir.path());
    let small = s.written.layers_of("riscv64")[0].clone();
    let big = s.written.layers_of("riscv64")[1].clone();
    let mac = lab.registry_host().unwrap();
    // The registry's storage: a 16 MiB filesystem of its own, inside the registry host.
    mac.sh(&format!("mkdir -p {STORAGE} && mount -t tmpfs -o size=16m,mode=0755 rvfull {STORAGE}")).unwrap();
    let out = e2e::rv(d, &apply_args());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("no space left on device"), "says the disk is full:\n{err}");
    let df = mac.sh(&format!("df -k {STORAGE} | tail -1")).unwrap();
    eprintln!("storage after the failure: {df}");
    assert!(faults::registry_tags_whole(&hostport(lab), None).is_empty(), "no tag without its image");
    // What the repository has. The big blob never fits. The config and the small layer go up in
    // parallel with it: mostly they are in before it fills the storage, but on a busy machine the
    // big one can fill it before either has started or before the registry has linked one into
    // the repository, and then their uploads fail too. Either way the error names the image and
    // every blob the repository does not have (each failed while going up beside the others),
    // and no other.
    let linked = linked_blobs(mac);
    assert!(!linked.contains(&big), "the big blob cannot have been linked: {linked:?}");
    assert!(linked.len() <= 2, "{linked:?}");
    let named: Vec<&str> = err.split(&format!("{IMAGE}: blob ")).skip(1).filter_map(|rest| rest.get(..71)).collect();
    assert_eq!(named.len(), 3 - linked.len(), "one cause per blob the repository lacks ({linked:?}):\n{err}");
    assert!(named.contains(&big.as_str()), "{err}");
    assert!(named.iter().all(|d| d.starts_with("sha256:") && !linked.iter().any(|l| l == d)), "names only blobs it lacks ({linked:?}):\n{err}");

    // Space freed: the re-run sends only what the repository did not have.
    mac.sh(&format!("mount -o remount,size=256m {STORAGE}")).unwrap();
    let out = e2e::rv(d, &rerun_args());
    assert_eq!(out.status.code(), Some(0));
    the_rerun_sent_only_what_was_missing(&out, 3 - linked.len(), 3);
    assert_eq!(finished_blob_puts(lab), 3, "each of the three blobs finished once over both runs");
    assert_eq!(finished_uploads(lab, &small), 1, "the small layer was uploaded once over both runs");
    assert_eq!(finished_uploads(lab, &big), 1);
    assert_eq!(faults::registry_tags_whole(&hostport(lab), None), ["rvfault/big:1"]);
}

/// The digests of the blobs the registry on `mac` serves in the image's repository: linked into
/// it (`repositories/rvfault/big/_layers/sha256/HEX/link`), the last thing the registry writes
/// before it answers 201 to a finished upload (a blob whose data it moved into the blob store but
/// whose link it could not write is not in the repository). Read inside the registry host: its
/// storage is a mount of its own.
fn linked_blobs(mac: &rvlab::Board) -> Vec<String> {
    let list = mac.sh(&format!("cd {STORAGE}/docker/registry/v2/repositories/rvfault/big/_layers/sha256 2>/dev/null && for f in */link; do [ -s \"$f\" ] && echo \"$f\"; done; true")).unwrap();
    list.lines().filter_map(|l| l.split('/').next()).map(|hex| format!("sha256:{hex}")).collect()
}
