//! The few image archives kept in git (fixtures/blog-lab/images/, fixtures/invalid/images/) are
//! tiny and written by fixtures/images/gen.rs: `check` reads local archives (linux/riscv64 must be
//! inside), so the fixture cluster files need real ones. This test regenerates each and requires
//! the committed bytes to be identical; `RVCLUSTER_WRITE_FIXTURES=1` rewrites them instead.

#[path = "../fixtures/images/gen.rs"]
mod images;

use std::io::Write;
use std::path::{Path, PathBuf};

use images::Layer;

/// (path under fixtures/, writer into a work directory).
type Gen = (&'static str, fn(&Path, &Path));

const ARCHIVES: &[Gen] = &[
    ("blog-lab/images/lpp-riscv64.tar", |w, out| {
        images::oci_archive(w, out, &["riscv64"], &[Layer::new("local-path-provisioner", 64, 31)]);
    }),
    ("blog-lab/images/redis-riscv64.tar", |w, out| {
        images::docker_archive_legacy(w, out, "riscv64", &[Layer::new("redis", 64, 11)]);
    }),
    ("blog-lab/images/nginx-riscv64.tar", |w, out| {
        images::docker_archive_v25(w, out, "riscv64", &[Layer::new("nginx", 64, 12)]);
    }),
    // An image ported for the wrong platforms: `check` names what it has.
    ("invalid/images/redis-amd64-arm64.tar", |w, out| {
        images::oci_archive(w, out, &["amd64", "arm64"], &[Layer::new("redis", 64, 11)]);
    }),
    // A compressed archive (what `docker save | gzip` gives): refused with the fix.
    ("invalid/images/redis-riscv64.tar.gz", |w, out| {
        let tar = w.join("plain.tar");
        images::docker_archive_legacy(w, &tar, "riscv64", &[Layer::new("redis", 64, 11)]);
        let mut gz = flate2::GzBuilder::new().mtime(0).write(std::fs::File::create(out).unwrap(), flate2::Compression::best());
        gz.write_all(&std::fs::read(&tar).unwrap()).unwrap();
        gz.finish().unwrap().flush().unwrap();
    }),
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

#[test]
fn committed_archives_are_what_gen_rs_writes() {
    let write = std::env::var_os("RVCLUSTER_WRITE_FIXTURES").is_some();
    let mut stale = Vec::new();
    for (rel, generate) in ARCHIVES {
        let work = tempfile::tempdir().unwrap();
        let out = work.path().join("out");
        generate(work.path(), &out);
        let fresh = std::fs::read(&out).unwrap();
        assert!(fresh.len() < 64 * 1024, "{rel}: fixture archives stay tiny ({} bytes)", fresh.len());
        let committed = fixtures().join(rel);
        if write {
            std::fs::create_dir_all(committed.parent().unwrap()).unwrap();
            std::fs::write(&committed, &fresh).unwrap();
        } else if std::fs::read(&committed).ok().as_deref() != Some(fresh.as_slice()) {
            stale.push(*rel);
        }
    }
    assert!(
        stale.is_empty(),
        "{stale:?} differ from what gen.rs writes: RVCLUSTER_WRITE_FIXTURES=1 cargo nextest run --test fixture_archives"
    );
}

#[test]
fn blog_lab_archives_hold_linux_riscv64() {
    use rvcluster::registry::{RemoteSources, Source, load};
    let dir = fixtures().join("blog-lab/images");
    for s in [
        Source::OciArchive(dir.join("lpp-riscv64.tar")),
        Source::DockerArchive(dir.join("redis-riscv64.tar")),
        Source::DockerArchive(dir.join("nginx-riscv64.tar")),
    ] {
        let img = load(&s, &RemoteSources::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(img.platforms, ["linux/riscv64"], "{}", s.describe());
    }
}
