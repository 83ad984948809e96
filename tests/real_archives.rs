//! Image archives written by real skopeo, not by fixtures/images/gen.rs: a multi-arch image in a
//! real registry is copied (linux/riscv64 chosen by skopeo) to `docker-archive:` and
//! `oci-archive:`; both are parsed and pushed by apply to the managed registry on the lab's
//! registry host, where skopeo reads back the same image (config and layers). `apply --locked`
//! then refuses an archive re-written from another image: a changed image digest, not only a
//! changed k3s binary.

#[path = "../fixtures/images/gen.rs"]
mod images;
#[path = "support/registry.rs"]
mod support;

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/faults.rs"]
mod faults;

use std::path::Path;
use std::process::Command;

use rvlab::{Lab, Role};
use support::{Opts, TestRegistry};

fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(out.status.success(), "skopeo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// A multi-arch image (amd64, riscv64) seeded into `reg` as `repo:1`, then written by skopeo
/// (riscv64 chosen) as a docker-archive and an oci-archive in `d`.
fn real_archives(reg: &TestRegistry, d: &Path, repo: &str, seed: u64) {
    let work = d.join(format!("gen-{seed}"));
    let src = work.join("multi.tar");
    std::fs::create_dir_all(&work).unwrap();
    images::oci_archive(&work, &src, &["amd64", "riscv64"], &[images::Layer::gz("base", 100_000, seed), images::Layer::gz("app", 3_000_000, seed + 1)]);
    reg.skopeo_copy_all(&format!("oci-archive:{}", src.display()), repo, "1");
    let from = format!("docker://{}/{repo}:1", reg.host_port());
    for (kind, file) in [("docker-archive", "real-docker.tar"), ("oci-archive", "real-oci.tar")] {
        let _ = std::fs::remove_file(d.join(file));
        let dest = if kind == "docker-archive" { format!("{kind}:{}:docker.io/rvreal/app:1", d.join(file).display()) } else { format!("{kind}:{}", d.join(file).display()) };
        skopeo(&["--override-arch", "riscv64", "--override-os", "linux", "copy", "-q", "--src-tls-verify=false", &from, &dest]);
    }
}

fn config_of(src: &str) -> serde_json::Value {
    serde_json::from_slice(&skopeo(&["--override-arch", "riscv64", "--override-os", "linux", "inspect", "--config", "--tls-verify=false", src])).unwrap()
}

#[test]
fn skopeo_written_docker_and_oci_archives_are_pushed_and_locked() {
    let reg = TestRegistry::start(Opts::default());
    let lab = Lab::builder().board("server1", Role::Server).registry_host("mac").start().expect("lab starts");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    real_archives(&reg, d, "rvreal/app", 21);
    let extra = format!(
        "{}image \"docker.io/rvreal/app-docker:1\" from=\"docker-archive:real-docker.tar\"\nimage \"docker.io/rvreal/app-oci:1\" from=\"oci-archive:real-oci.tar\"\n",
        e2e::lab_registry_block(&lab, "")
    );
    e2e::write_lab_cluster_with(&lab, d, "real", "", &extra);
    let out = e2e::rv(d, &["check", "cluster.kdl"]);
    assert_eq!(out.status.code(), Some(0), "both archives pass check");
    let out = e2e::rv(d, &["apply", "cluster.kdl", "--on", "mac", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("images: 2 pushed"));
    let mac = format!("{}:5000", lab.registry_host().unwrap().address());
    // What the registry serves is the riscv64 image skopeo wrote: same config (so same diff_ids).
    let want = config_of(&format!("docker://{}/rvreal/app:1", reg.host_port()));
    assert_eq!(want["architecture"], "riscv64");
    for (archive, repo) in [("docker-archive:real-docker.tar", "rvreal/app-docker"), ("oci-archive:real-oci.tar", "rvreal/app-oci")] {
        let got = config_of(&format!("docker://{mac}/{repo}:1"));
        assert_eq!(got, want, "{archive}: the same image");
        let src = config_of(&archive.replace(":real", &format!(":{}/real", d.display())));
        assert_eq!(src["rootfs"], got["rootfs"], "{archive}");
    }
    // The oci-archive's manifest is pushed byte for byte.
    let src_manifest = skopeo(&["inspect", "--raw", &format!("oci-archive:{}", d.join("real-oci.tar").display())]);
    let pushed = skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{mac}/rvreal/app-oci:1")]);
    assert_eq!(pushed, src_manifest);
    assert_eq!(faults::registry_tags_whole(&mac, None).len(), 2, "both tags whole");

    // Another image behind the same oci-archive name: --locked refuses it, naming both digests.
    let locked = format!("sha256:{}", rvcluster::render::sha256_hex(&src_manifest));
    let lock_before = std::fs::read_to_string(d.join("cluster.lock")).unwrap();
    assert!(lock_before.contains(&locked), "{lock_before}");
    real_archives(&reg, d, "rvreal/app2", 31);
    let new = format!("sha256:{}", rvcluster::render::sha256_hex(&skopeo(&["inspect", "--raw", &format!("oci-archive:{}", d.join("real-oci.tar").display())])));
    assert_ne!(new, locked);
    let out = e2e::rv(d, &["apply", "cluster.kdl", "--on", "mac", "--locked", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(1), "refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("image docker.io/rvreal/app-oci:1: locked") && err.contains(&locked) && err.contains(&new), "names the image and both digests:\n{err}");
    assert_eq!(std::fs::read_to_string(d.join("cluster.lock")).unwrap(), lock_before, "the lock is kept");
    let still = skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{mac}/rvreal/app-oci:1")]);
    assert_eq!(still, src_manifest, "the registry still serves the locked image");
}
