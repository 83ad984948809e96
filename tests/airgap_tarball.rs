//! Air-gap image tarballs built from image sources: only linux/riscv64, named as pods ask for the
//! image, byte for byte the same whatever the source format and however often they are built,
//! readable by real skopeo as an OCI archive and imported by the simulated k3s, cached locally,
//! and a corrupted source is refused.

#[path = "../fixtures/images/gen.rs"]
mod images;

use std::process::Command;

use rvcluster::registry::source::{self, RemoteSources, Source};
use rvcluster::spec::reference::ImageRef;

fn build(name: &str, src: &Source) -> (Vec<u8>, String) {
    let img = source::load(src, &RemoteSources::default()).unwrap();
    let mut out = Vec::new();
    let (sha, size) = rvcluster::airgap::write_tarball(&ImageRef::parse(name).unwrap(), &img, &mut out).unwrap();
    assert_eq!(size, out.len() as u64);
    assert_eq!(sha, rvcluster::render::sha256_hex(&out));
    (out, img.manifest_digest)
}

fn members(tar: &[u8]) -> Vec<(String, u64, u64, u64)> {
    let mut ar = tar::Archive::new(tar);
    ar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (e.path().unwrap().to_string_lossy().to_string(), h.mtime().unwrap(), h.uid().unwrap(), e.size())
        })
        .collect()
}

#[test]
fn tarball_holds_only_the_riscv64_image_and_is_the_same_from_any_source() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let layers = [images::Layer::gz("app", 20_000, 3), images::Layer::new("data", 3000, 4)];
    let written = images::oci_archive(&d.join("w1"), &d.join("multi.tar"), &["amd64", "riscv64", "arm64"], &layers);
    images::oci_layout(&d.join("layout"), &["amd64", "riscv64", "arm64"], &layers);

    let name = "docker.io/riscv64/redis:1.1";
    let (a, manifest) = build(name, &Source::OciArchive(d.join("multi.tar")));
    let (b, _) = build(name, &Source::OciArchive(d.join("multi.tar")));
    let (c, _) = build(name, &Source::OciDir(d.join("layout")));
    assert_eq!(manifest, written.manifest("riscv64"));
    assert!(a == b, "a rebuild gives the same bytes");
    assert!(a == c, "an OCI archive and an OCI directory of one image give the same tarball");
    let (other, _) = build("docker.io/riscv64/redis:1.2", &Source::OciArchive(d.join("multi.tar")));
    assert!(a != other, "the name pods ask for is part of the tarball");

    // Deterministic headers; exactly the riscv64 manifest, its config and its layers.
    let m = members(&a);
    assert_eq!(m[0].0, "oci-layout");
    assert_eq!(m[1].0, "index.json");
    assert!(m.iter().all(|(_, mtime, uid, _)| *mtime == 0 && *uid == 0), "{m:?}");
    let blobs: Vec<String> = m.iter().filter_map(|(p, ..)| p.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty())).map(|h| format!("sha256:{h}")).collect();
    let mut want: Vec<String> = written.layers_of("riscv64").to_vec();
    want.push(written.manifest("riscv64").to_string());
    for arch in ["amd64", "arm64"] {
        assert!(!blobs.contains(&written.manifest(arch).to_string()), "no {arch} manifest");
    }
    assert!(written.index_digest.as_ref().is_some_and(|i| !blobs.contains(i)), "the source's index is not carried");
    for w in &want {
        assert!(blobs.contains(w), "{w} in {blobs:?}");
    }
    assert_eq!(blobs.len(), want.len() + 1, "manifest, config and layers: {blobs:?}");

    // Real skopeo reads it as an OCI archive: the riscv64 manifest, byte for byte.
    std::fs::write(d.join("airgap.tar"), &a).unwrap();
    let raw = Command::new("skopeo").args(["inspect", "--raw"]).arg(format!("oci-archive:{}", d.join("airgap.tar").display())).output().unwrap();
    assert!(raw.status.success(), "{}", String::from_utf8_lossy(&raw.stderr));
    assert_eq!(format!("sha256:{}", rvcluster::render::sha256_hex(&raw.stdout)), written.manifest("riscv64"));
    let cfg = Command::new("skopeo").args(["inspect", "--config"]).arg(format!("oci-archive:{}", d.join("airgap.tar").display())).output().unwrap();
    let cfg: serde_json::Value = serde_json::from_slice(&cfg.stdout).unwrap();
    assert_eq!(cfg["architecture"], "riscv64");

    // What k3s does with it (the simulator's import, as containerd names images on import).
    let imported = k3s_sim::airgap::import_archive("airgap.tar", &a, "riscv64");
    assert_eq!(imported.len(), 1);
    let (n, res) = &imported[0];
    assert_eq!(n, name);
    assert_eq!(res.as_ref().unwrap().manifest_digest, written.manifest("riscv64"));
}

#[test]
fn docker_archives_give_importable_tarballs_too() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (f, legacy) in [("legacy.tar", true), ("v25.tar", false)] {
        let layers = [images::Layer::new("bin", 5000, 9)];
        if legacy {
            images::docker_archive_legacy(&d.join(format!("w-{f}")), &d.join(f), "riscv64", &layers);
        } else {
            images::docker_archive_v25(&d.join(format!("w-{f}")), &d.join(f), "riscv64", &layers);
        }
        let (t, manifest) = build("riscv64/nginx:1.1", &Source::DockerArchive(d.join(f)));
        let r = k3s_sim::airgap::import_archive(f, &t, "riscv64");
        assert_eq!(r[0].0, "docker.io/riscv64/nginx:1.1", "{f}");
        assert_eq!(r[0].1.as_ref().unwrap().manifest_digest, manifest, "{f}");
    }
}

#[test]
fn a_corrupted_source_is_refused_and_the_cache_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // One process per test (nextest): this test owns the cache location.
    unsafe { std::env::set_var("XDG_CACHE_HOME", d.join("cache")) };
    let w = images::oci_layout(&d.join("good"), &["riscv64"], &[images::Layer::gz("x", 10_000, 1)]);
    let name = ImageRef::parse("docker.io/rancher/mirrored-pause:3.6").unwrap();
    let img = source::load(&Source::OciDir(d.join("good")), &RemoteSources::default()).unwrap();
    let (t1, o1) = rvcluster::airgap::tarball(&name, &img).unwrap();
    assert_eq!(o1, rvcluster::airgap::Origin::Built);
    assert!(t1.local.starts_with(d.join("cache/rvcluster/sha256")), "{}", t1.local.display());
    assert_eq!(rvcluster::render::sha256_hex(&std::fs::read(&t1.local).unwrap()), t1.sha256);
    assert!(t1.file_name.starts_with("rvcluster-mirrored-pause_3.6-") && t1.file_name.ends_with(".tar"), "{}", t1.file_name);
    let (t2, o2) = rvcluster::airgap::tarball(&name, &img).unwrap();
    assert_eq!(o2, rvcluster::airgap::Origin::Cached);
    assert_eq!(t1, t2);

    // A layer whose bytes no longer match its digest: no tarball, and nothing cached.
    images::oci_layout(&d.join("bad"), &["riscv64"], &[images::Layer::gz("y", 10_000, 2)]);
    let bad = source::load(&Source::OciDir(d.join("bad")), &RemoteSources::default()).unwrap();
    images::corrupt_blob(&d.join("bad"), &bad.layers[0].digest);
    let err = rvcluster::airgap::tarball(&name, &bad).unwrap_err().to_string();
    assert!(err.contains("corrupted") && err.contains(&bad.layers[0].digest), "{err}");
    let stored: Vec<_> = std::fs::read_dir(d.join("cache/rvcluster/sha256")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(stored.len(), 1, "only the good tarball is in the store: {stored:?}");
    assert_eq!(img.manifest_digest, w.manifest("riscv64"));
}
