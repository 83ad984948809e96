//! Pushing every kind of image source to a real docker-registry, confirmed by skopeo; second push
//! sends nothing; cross-repository mounts; bad inputs (no riscv64, corrupted, unreachable).

#[path = "../fixtures/images/gen.rs"]
mod images;
#[path = "support/registry.rs"]
mod support;

use std::path::Path;
use std::sync::mpsc;

use images::Layer;
use rvcluster::registry::push::{self, BlobAction, PushEvent};
use rvcluster::registry::{ClientOptions, PushItem, RegistryClient, RegistryError, RemoteSources, Source, load};
use support::{Opts, TestRegistry};

fn layers() -> Vec<Layer> {
    vec![Layer::new("base", 300_000, 1), Layer::gz("app", 70_000, 2)]
}

fn item(src: &Source, repo: &str, tag: &str) -> PushItem {
    PushItem {
        name: format!("{repo}:{tag}"),
        image: load(src, &RemoteSources::default()).unwrap_or_else(|e| panic!("load {}: {e}", src.describe())),
        repository: repo.into(),
        tag: Some(tag.into()),
        locked_manifest_digest: None,
    }
}

fn push_items(reg: &TestRegistry, items: &[PushItem], known: &[String]) -> (push::PushPlan, push::PushReport, Vec<PushEvent>) {
    let client = RegistryClient::new(&reg.endpoint(), reg.client_options()).unwrap();
    let (tx, rx) = mpsc::channel();
    let (plan, report) = push::plan_and_push(&client, items, known, &tx).unwrap_or_else(|e| panic!("push: {e}\n{}", reg.log()));
    drop(tx);
    (plan, report, rx.iter().collect())
}

/// The test image (3 layers, linux/riscv64) as an OCI archive under `work`, and its source.
fn riscv64_image(work: &std::path::Path) -> (images::Written, Source) {
    let tar = work.join("img.tar");
    let w = images::oci_archive(work, &tar, &["riscv64"], &layers());
    (w, Source::OciArchive(tar))
}

/// The HTTP status of a HEAD request, as curl reports it (`accept`: an Accept header).
fn head_status(url: &str, accept: Option<&str>) -> String {
    let mut c = std::process::Command::new("curl");
    c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-I"]);
    if let Some(a) = accept {
        c.args(["-H", &format!("Accept: {a}")]);
    }
    String::from_utf8_lossy(&c.arg(url).output().unwrap().stdout).into_owned()
}

/// skopeo sees exactly the digest we recorded, for linux/riscv64.
fn confirm(reg: &TestRegistry, repo: &str, tag: &str, digest: &str) {
    let v = reg.skopeo_inspect(repo, tag).unwrap_or_else(|e| panic!("skopeo inspect {repo}:{tag}: {e}"));
    assert_eq!(v["Digest"], digest, "{v}");
    assert_eq!(v["Architecture"], "riscv64");
    assert_eq!(v["Os"], "linux");
}

#[test]
fn oci_archive_push_is_confirmed_by_skopeo_and_second_push_sends_nothing() {
    let reg = TestRegistry::start(Opts::default());
    let work = tempfile::tempdir().unwrap();
    let (w, src) = riscv64_image(work.path());
    let items = [item(&src, "riscv64/app", "1.0")];
    assert_eq!(items[0].image.manifest_digest, w.manifest("riscv64"));
    let (plan, report, events) = push_items(&reg, &items, &[]);
    assert_eq!(plan.images[0].blobs.len(), 3);
    assert!(plan.images[0].blobs.iter().all(|b| b.action == BlobAction::Upload));
    let blob_total: u64 = items[0].image.blobs().iter().map(|b| b.size).sum();
    assert_eq!(plan.bytes_to_send(), blob_total);
    assert_eq!(report.bytes_sent(), blob_total + items[0].image.manifest.len() as u64);
    assert!(events.iter().any(|e| matches!(e, PushEvent::Verified { digest, .. } if digest == w.manifest("riscv64"))));
    confirm(&reg, "riscv64/app", "1.0", w.manifest("riscv64"));

    // Second push: everything is there, nothing travels, the plan says so.
    let items = [item(&src, "riscv64/app", "1.0")];
    let (plan, report, _) = push_items(&reg, &items, &[]);
    assert!(plan.is_noop(), "{}", plan.render());
    assert!(plan.render().contains("up to date"));
    assert_eq!(report.bytes_sent(), 0);
}

#[test]
fn oci_dir_multi_arch_pushes_the_riscv64_manifest_and_records_the_index() {
    let reg = TestRegistry::start(Opts::default());
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("layout");
    let w = images::oci_layout(&dir, &["amd64", "riscv64", "arm64"], &layers());
    let items = [item(&Source::OciDir(dir.clone()), "library/multi", "2")];
    assert_eq!(items[0].image.index_digest.as_deref(), w.index_digest.as_deref());
    assert_eq!(items[0].image.platforms, vec!["linux/amd64", "linux/arm64", "linux/riscv64"]);
    let (_, report, _) = push_items(&reg, &items, &[]);
    assert_eq!(report.images[0].manifest_digest, w.manifest("riscv64"));
    assert_eq!(report.images[0].index_digest, w.index_digest);
    confirm(&reg, "library/multi", "2", w.manifest("riscv64"));
    // Only riscv64 blobs travelled: amd64 layers are not in the registry.
    let client = RegistryClient::new(&reg.endpoint(), ClientOptions::default()).unwrap();
    for d in w.layers_of("amd64") {
        assert_eq!(client.blob_size("library/multi", d).unwrap(), None);
    }
    for d in w.layers_of("riscv64") {
        assert!(client.blob_size("library/multi", d).unwrap().is_some());
    }
}

#[test]
fn docker_archives_old_and_docker25_formats() {
    let reg = TestRegistry::start(Opts::default());
    let work = tempfile::tempdir().unwrap();
    let legacy = work.path().join("legacy.tar");
    let wl = images::docker_archive_legacy(work.path(), &legacy, "riscv64", &layers());
    let v25 = work.path().join("v25.tar");
    let wv = images::docker_archive_v25(work.path(), &v25, "riscv64", &[Layer::new("other", 5000, 9)]);
    let items = [
        item(&Source::DockerArchive(legacy.clone()), "riscv64/legacy", "1"),
        item(&Source::DockerArchive(v25.clone()), "riscv64/v25", "1"),
    ];
    // Legacy: converted to an OCI manifest whose layers are the diff_ids; stable across loads.
    let layer_digests: Vec<String> = items[0].image.layers.iter().map(|l| l.digest.clone()).collect();
    assert_eq!(layer_digests, wl.layers_of("riscv64"));
    let again = load(&Source::DockerArchive(legacy.clone()), &RemoteSources::default()).unwrap();
    assert_eq!(again.manifest_digest, items[0].image.manifest_digest);
    // Docker 25: the OCI index inside is used as is.
    assert_eq!(items[1].image.manifest_digest, wv.manifest("riscv64"));
    let (_, report, _) = push_items(&reg, &items, &[]);
    confirm(&reg, "riscv64/legacy", "1", &report.images[0].manifest_digest);
    confirm(&reg, "riscv64/v25", "1", wv.manifest("riscv64"));
}

#[test]
fn blobs_pushed_to_another_repository_are_mounted_not_sent() {
    let reg = TestRegistry::start(Opts::default());
    let work = tempfile::tempdir().unwrap();
    let (w, src) = riscv64_image(work.path());
    push_items(&reg, &[item(&src, "first/app", "1")], &[]);
    // Same image under a rewritten name: every blob is in first/app, which rvcluster pushed.
    let items = [item(&src, "riscv64/app", "1")];
    let (plan, report, events) = push_items(&reg, &items, &["first/app".to_string()]);
    assert!(plan.images[0].blobs.iter().all(|b| b.action == BlobAction::Mount { from: "first/app".into() }), "{plan:?}");
    assert_eq!(plan.bytes_to_send(), 0);
    assert_eq!(report.images[0].mounted, 3);
    assert_eq!(report.bytes_sent(), items[0].image.manifest.len() as u64, "only the manifest travels");
    assert!(events.iter().any(|e| matches!(e, PushEvent::Blob { state: push::BlobState::Mounted { .. }, .. })));
    confirm(&reg, "riscv64/app", "1", w.manifest("riscv64"));
    // Within one push, a blob shared by two images is uploaded once and mounted for the second.
    let work2 = tempfile::tempdir().unwrap();
    let t2 = work2.path().join("b.tar");
    images::oci_archive(work2.path(), &t2, &["riscv64"], &[Layer::new("z", 1000, 77)]);
    let src2 = Source::OciArchive(t2);
    let items = [item(&src2, "x/one", "1"), item(&src2, "x/two", "1")];
    let (plan, _, _) = push_items(&reg, &items, &[]);
    assert!(plan.images[1].blobs.iter().all(|b| b.action == BlobAction::Mount { from: "x/one".into() }));
    confirm(&reg, "x/two", "1", &items[1].image.manifest_digest);
}

#[test]
fn image_without_riscv64_is_refused_naming_its_platforms() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("layout");
    images::oci_layout(&dir, &["amd64", "arm64"], &layers());
    let err = load(&Source::OciDir(dir), &RemoteSources::default()).unwrap_err();
    assert!(matches!(&err, RegistryError::NoRiscv64 { platforms, .. } if platforms == &["linux/amd64", "linux/arm64"]), "{err}");
    assert!(err.to_string().contains("has no linux/riscv64 image; it has: linux/amd64, linux/arm64"), "{err}");
    // Single-platform archives say which platform they are.
    let tar = work.path().join("amd.tar");
    images::docker_archive_legacy(work.path(), &tar, "amd64", &layers());
    let err = load(&Source::DockerArchive(tar), &RemoteSources::default()).unwrap_err();
    assert!(err.to_string().ends_with("it has: linux/amd64"), "{err}");
}

fn corrupted_layout(work: &Path) -> (std::path::PathBuf, images::Written) {
    let dir = work.join("layout");
    let w = images::oci_layout(&dir, &["riscv64"], &layers());
    images::corrupt_blob(&dir, &w.layers_of("riscv64")[0]);
    (dir, w)
}

#[test]
fn corrupted_layer_is_refused_and_leaves_no_tag() {
    let reg = TestRegistry::start(Opts::default());
    let work = tempfile::tempdir().unwrap();
    let (dir, w) = corrupted_layout(work.path());
    // Also as an archive.
    let tar = work.path().join("bad.tar");
    images::tar_dir(&dir, &tar);
    for src in [Source::OciDir(dir.clone()), Source::OciArchive(tar)] {
        let items = [item(&src, "riscv64/bad", "1")];
        let client = RegistryClient::new(&reg.endpoint(), ClientOptions::default()).unwrap();
        let (tx, _rx) = mpsc::channel();
        let err = push::plan_and_push(&client, &items, &[], &tx).unwrap_err();
        assert!(matches!(err, RegistryError::BlobRejected { ref digest, .. } if *digest == w.layers_of("riscv64")[0]), "{err}");
        assert!(err.to_string().contains("corrupted"), "{err}");
        assert_eq!(client.manifest_digest("riscv64/bad", "1").unwrap(), None, "no tag left behind");
        assert!(reg.skopeo_inspect("riscv64/bad", "1").is_err());
    }
    // A corrupted manifest is caught before anything is sent.
    let w2 = images::oci_layout(&work.path().join("l2"), &["riscv64"], &layers());
    images::corrupt_blob(&work.path().join("l2"), w2.manifest("riscv64"));
    let err = load(&Source::OciDir(work.path().join("l2")), &RemoteSources::default()).unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
}

#[test]
fn unreachable_registry_gives_a_clear_error() {
    // Nothing listens on this address.
    let ip = support::unique_ip();
    let client = RegistryClient::new(&format!("http://{ip}:5000"), ClientOptions::default()).unwrap();
    let err = client.ping().unwrap_err();
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().starts_with(&format!("cannot reach registry http://{ip}:5000: ")), "{err}");
    let work = tempfile::tempdir().unwrap();
    let (_, src) = riscv64_image(work.path());
    let items = [item(&src, "a/b", "1")];
    let err = push::plan(&client, &items, &[]).unwrap_err();
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err}");
}

#[test]
fn locked_digest_is_enforced() {
    let reg = TestRegistry::start(Opts::default());
    let work = tempfile::tempdir().unwrap();
    let (_, src) = riscv64_image(work.path());
    let mut it = item(&src, "a/b", "1");
    it.locked_manifest_digest = Some(images::sha256(b"something else"));
    let client = RegistryClient::new(&reg.endpoint(), ClientOptions::default()).unwrap();
    let err = push::plan(&client, &[it], &[]).unwrap_err();
    assert!(matches!(err, RegistryError::LockMismatch { .. }), "{err}");
}

#[test]
fn generated_images_are_byte_for_byte_deterministic() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fn multi(w: &Path, o: &Path) {
        images::oci_archive(w, o, &["amd64", "riscv64"], &layers());
    }
    fn legacy(w: &Path, o: &Path) {
        images::docker_archive_legacy(w, o, "riscv64", &layers());
    }
    fn v25(w: &Path, o: &Path) {
        images::docker_archive_v25(w, o, "riscv64", &[Layer::new("x", 1000, 1)]);
    }
    type Make = fn(&Path, &Path);
    let makers: [(Make, &str); 3] = [(multi, "multi.tar"), (legacy, "legacy.tar"), (v25, "v25.tar")];
    for (make, name) in makers {
        make(a.path(), &a.path().join(name));
        make(b.path(), &b.path().join(name));
        let (x, y) = (std::fs::read(a.path().join(name)).unwrap(), std::fs::read(b.path().join(name)).unwrap());
        assert_eq!(images::sha256(&x), images::sha256(&y), "{name}");
    }
}

/// A registry killed while committing a blob can leave the blob's link file empty: it then
/// answers HEAD of it with 500 (distribution/distribution#4489). The next push uploads that
/// blob again, which repairs the link, and skopeo sees the image whole.
#[test]
fn a_blob_whose_link_the_registry_lost_is_uploaded_again() {
    let reg = TestRegistry::start(Opts::default());
    let work = tempfile::tempdir().unwrap();
    let (w, src) = riscv64_image(work.path());
    push_items(&reg, &[item(&src, "riscv64/lost", "1")], &[]);
    let layer = w.layers_of("riscv64")[0].trim_start_matches("sha256:").to_string();
    let link = reg.dir.path().join(format!("data/docker/registry/v2/repositories/riscv64/lost/_layers/sha256/{layer}/link"));
    std::fs::write(&link, "").unwrap();
    let head = |digest: &str| head_status(&format!("{}/v2/riscv64/lost/blobs/sha256:{digest}", reg.endpoint()), None);
    assert_eq!(head(&layer), "500", "the real registry's answer for an empty link file");
    let (plan, report, _) = push_items(&reg, &[item(&src, "riscv64/lost", "1")], &[]);
    let again: Vec<_> = plan.images[0].blobs.iter().filter(|b| b.action == BlobAction::Upload).map(|b| b.digest.clone()).collect();
    assert_eq!(again, vec![format!("sha256:{layer}")], "only the blob with the lost link goes up again");
    assert!(report.bytes_sent() > 0);
    assert_eq!(head(&layer), "200", "the upload rewrote the link");
    confirm(&reg, "riscv64/lost", "1", w.manifest("riscv64"));
}

/// The same for a tag: a registry killed while writing a tag leaves its link file empty and
/// answers 500 for it (distribution/distribution#4489); the next push puts the manifest again,
/// which rewrites the link.
#[test]
fn a_tag_whose_link_the_registry_lost_is_pushed_again() {
    let reg = TestRegistry::start(Opts::default());
    let work = tempfile::tempdir().unwrap();
    let (w, src) = riscv64_image(work.path());
    push_items(&reg, &[item(&src, "riscv64/lost", "1")], &[]);
    let link = reg.dir.path().join("data/docker/registry/v2/repositories/riscv64/lost/_manifests/tags/1/current/link");
    std::fs::write(&link, "").unwrap();
    let oci = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json";
    let head = || head_status(&format!("{}/v2/riscv64/lost/manifests/1", reg.endpoint()), Some(oci));
    assert_eq!(head(), "500", "the real registry's answer for an empty tag link file");
    let (_plan, report, _) = push_items(&reg, &[item(&src, "riscv64/lost", "1")], &[]);
    assert_eq!((report.images[0].uploaded, report.images[0].present), (0, 3), "no blob goes up again: {report:?}");
    assert!(report.bytes_sent() > 0, "the manifest is put again: {report:?}");
    assert_eq!(head(), "200", "the manifest put again rewrote the link");
    confirm(&reg, "riscv64/lost", "1", w.manifest("riscv64"));
}

/// A registry that cannot store anything in the repository (its directory is a plain file: every
/// upload fails at once with HTTP 500). Blobs go up three at a time; after the first failures no
/// further blob is started, and the error names each blob that was tried, with its cause.
#[test]
fn after_a_failed_blob_no_more_are_started_and_every_failure_is_named() {
    let reg = TestRegistry::start(Opts::default());
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("seven.tar");
    let seven: Vec<Layer> = (0..7).map(|i| Layer::new(&format!("l{i}"), 20_000 + i * 1000, 40 + i)).collect();
    let w = images::oci_archive(work.path(), &tar, &["riscv64"], &seven);
    let repos = reg.dir.path().join("data/docker/registry/v2/repositories/riscv64");
    std::fs::create_dir_all(&repos).unwrap();
    std::fs::write(repos.join("full"), "").unwrap();
    let items = [item(&Source::OciArchive(tar), "riscv64/full", "1")];
    let client = RegistryClient::new(&reg.endpoint(), reg.client_options()).unwrap();
    let plan = push::plan(&client, &items, &[]).unwrap_or_else(|e| panic!("plan: {e}\n{}", reg.log()));
    assert_eq!(plan.images[0].blobs.len(), 8, "seven layers and the config to upload");
    let (tx, _rx) = mpsc::channel();
    let err = push::push(&client, &items, &plan, &tx).unwrap_err();
    let RegistryError::Blobs { first, others } = &err else { panic!("every failed blob is reported: {err:?}") };
    let mut named: Vec<String> = std::iter::once(first.as_ref()).chain(others).map(|e| match e {
        RegistryError::InBlob { image, digest, source } => {
            assert_eq!(image, "riscv64/full:1");
            assert!(matches!(source.as_ref(), RegistryError::Http { status: 500, .. }), "{source}");
            digest.clone()
        }
        e => panic!("not a blob's error: {e}"),
    }).collect();
    named.sort();
    named.dedup();
    assert_eq!(named.len(), 3, "the three blobs under way failed, no fourth was started: {err}");
    let layers = w.layers_of("riscv64");
    assert!(named.iter().filter(|d| layers.contains(d)).count() >= 2, "{named:?}");
    assert_eq!(err.to_string().matches("\n  and riscv64/full:1: blob sha256:").count(), 2, "{err}");
}
