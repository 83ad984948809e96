//! The closure check and `docker://` sources against real registries: one docker-registry stands
//! in for docker.io (upstream override, as in the lab), another is the private mirror with a
//! rewrite rule.

#[path = "../fixtures/images/gen.rs"]
mod images;
#[path = "support/registry.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::mpsc;

use images::Layer;
use rvcluster::registry::closure::{self, Need, NeededBy, Outcome, Status};
use rvcluster::registry::push;
use rvcluster::registry::resolve::{self, MirrorConfig, MirrorEntry, Rewrite};
use rvcluster::registry::{ClientOptions, PushItem, RegistryClient, RegistryError, RemoteSources, Source, load};
use rvcluster::spec::reference::ImageRef;
use support::{Opts, TestRegistry};

fn r(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap()
}

struct World {
    upstream: TestRegistry,
    private: TestRegistry,
    _work: tempfile::TempDir,
    local_path_index: String,
    local_path_riscv: String,
}

fn mirrors(w: &World, upstream_endpoint: &str) -> MirrorConfig {
    let mut upstream_overrides = BTreeMap::new();
    upstream_overrides.insert("docker.io".to_string(), upstream_endpoint.to_string());
    MirrorConfig {
        mirrors: vec![MirrorEntry {
            registry: "docker.io".into(),
            endpoints: vec![w.private.endpoint()],
            rewrites: vec![Rewrite::new("^rancher/mirrored-(.*)$", "riscv64/$1").unwrap()],
        }],
        upstream_overrides,
        disable_default_endpoint: false,
    }
}

fn push_one(reg: &TestRegistry, src: Source, repo: &str, tag: &str) -> String {
    let image = load(&src, &RemoteSources::default()).unwrap();
    let items = [PushItem { name: repo.into(), image, repository: repo.into(), tag: Some(tag.into()), locked_manifest_digest: None }];
    let client = RegistryClient::new(&reg.endpoint(), reg.client_options()).unwrap();
    let (tx, _rx) = mpsc::channel();
    let (_, rep) = push::plan_and_push(&client, &items, &[], &tx).unwrap();
    rep.images[0].manifest_digest.clone()
}

fn world() -> World {
    let upstream = TestRegistry::start(Opts::default());
    let private = TestRegistry::start(Opts::default());
    let work = tempfile::tempdir().unwrap();
    let l = |n: &str, s| vec![Layer::new(n, 20_000, s)];
    // Upstream: local-path-provisioner has riscv64 (multi-arch index), klipper-lb does not.
    let lp = work.path().join("lp");
    let wl = images::oci_layout(&lp, &["amd64", "riscv64"], &l("lp", 1));
    upstream.skopeo_copy_all(&format!("oci:{}", lp.display()), "rancher/local-path-provisioner", "v0.0.32");
    let kl = work.path().join("kl");
    images::oci_layout(&kl, &["amd64", "arm64"], &l("kl", 2));
    upstream.skopeo_copy_all(&format!("oci:{}", kl.display()), "rancher/klipper-lb", "v0.4.13");
    // A single-platform riscv64 image upstream (no index).
    let app = work.path().join("app");
    images::oci_layout(&app, &["riscv64"], &l("app", 3));
    push_one(&upstream, Source::OciDir(app), "library/app", "1");
    // Private registry: the ported pause image under the rewritten name.
    let pause = work.path().join("pause");
    images::oci_layout(&pause, &["riscv64"], &l("pause", 4));
    push_one(&private, Source::OciDir(pause), "riscv64/pause", "3.6");
    World {
        upstream,
        private,
        _work: work,
        local_path_index: wl.index_digest.clone().unwrap(),
        local_path_riscv: wl.manifest("riscv64").to_string(),
    }
}

fn needs() -> Vec<Need> {
    vec![
        Need { image: r("rancher/mirrored-pause:3.6"), needed_by: vec![NeededBy::Pause] },
        Need { image: r("rancher/local-path-provisioner:v0.0.32"), needed_by: vec![NeededBy::Addon("local-storage".into())] },
        Need { image: r("rancher/klipper-lb:v0.4.13"), needed_by: vec![NeededBy::Addon("servicelb".into())] },
        Need { image: r("rancher/mirrored-library-traefik:3.5.1"), needed_by: vec![NeededBy::Addon("traefik".into())] },
        Need { image: r("library/app:1"), needed_by: vec![NeededBy::Manifest("app.yaml".into())] },
        Need { image: r("redis:7"), needed_by: vec![NeededBy::Manifest("app.yaml".into())] },
        Need { image: r("redis:7"), needed_by: vec![NeededBy::ImageEntry("redis".into())] },
    ]
}

#[test]
fn closure_says_provided_present_upstream_missing_and_unknown() {
    let w = world();
    let mut provided = BTreeMap::new();
    provided.insert("docker.io/library/redis:7".to_string(), "oci-archive:redis.tar".to_string());
    let report = closure::check(&needs(), &provided, &mirrors(&w, &w.upstream.endpoint()), &BTreeMap::new());
    let status = |img: &str| &report.entries.iter().find(|e| e.image == img).unwrap_or_else(|| panic!("{img}")).status;

    assert_eq!(report.entries.len(), 6, "redis merged into one entry");
    let redis = report.entries.iter().find(|e| e.image == "docker.io/library/redis:7").unwrap();
    assert_eq!(redis.needed_by, vec![NeededBy::Manifest("app.yaml".into()), NeededBy::ImageEntry("redis".into())]);
    assert!(matches!(status("docker.io/library/redis:7"), Status::ProvidedByCluster { .. }));

    let private = w.private.host_port();
    let upstream = w.upstream.host_port();
    match status("docker.io/rancher/mirrored-pause:3.6") {
        Status::PresentInRegistry { at, .. } => assert_eq!(*at, format!("{private}/riscv64/pause:3.6")),
        s => panic!("{s:?}"),
    }
    match status("docker.io/rancher/local-path-provisioner:v0.0.32") {
        Status::AvailableUpstream { at, digest } => {
            assert_eq!(*at, format!("{upstream}/rancher/local-path-provisioner:v0.0.32"));
            assert_eq!(*digest, w.local_path_riscv);
        }
        s => panic!("{s:?}"),
    }
    assert!(matches!(status("docker.io/library/app:1"), Status::AvailableUpstream { .. }));
    match status("docker.io/rancher/klipper-lb:v0.4.13") {
        Status::Missing { tried } => {
            assert_eq!(tried.len(), 2);
            assert_eq!(tried[0].outcome, Outcome::NotFound);
            assert_eq!(tried[1].outcome, Outcome::NoRiscv64 { platforms: vec!["linux/amd64".into(), "linux/arm64".into()] });
        }
        s => panic!("{s:?}"),
    }
    match status("docker.io/rancher/mirrored-library-traefik:3.5.1") {
        Status::Missing { tried } => {
            // The mirror was asked under the rewritten name, upstream under the original one.
            assert_eq!(tried[0].attempt.display(), format!("{private}/riscv64/library-traefik:3.5.1"));
            assert_eq!(tried[1].attempt.display(), format!("{upstream}/rancher/mirrored-library-traefik:3.5.1"));
        }
        s => panic!("{s:?}"),
    }
    assert!(!report.is_ok());
    let text = report.render();
    assert!(text.contains("MISSING  docker.io/rancher/klipper-lb:v0.4.13 (needed by addon servicelb)"), "{text}");
    assert!(text.contains("or disable the addon `servicelb`"), "{text}");
}

#[test]
fn unreachable_upstream_is_unknown_not_missing() {
    let w = world();
    let dead = format!("http://{}:5000", support::unique_ip());
    let report = closure::check(&needs(), &BTreeMap::new(), &mirrors(&w, &dead), &BTreeMap::new());
    let status = |img: &str| report.entries.iter().find(|e| e.image == img).unwrap().status.clone();
    // Found in the private registry first: upstream is never needed.
    assert!(matches!(status("docker.io/rancher/mirrored-pause:3.6"), Status::PresentInRegistry { .. }));
    match status("docker.io/rancher/klipper-lb:v0.4.13") {
        Status::Unknown { tried } => assert!(matches!(tried[1].outcome, Outcome::Unreachable { .. }), "{tried:?}"),
        s => panic!("{s:?}"),
    }
    assert!(report.is_ok(), "unknown is not missing");
    assert_eq!(report.unknown().count(), 5, "all but the pause image");
    assert!(report.render().contains("UNKNOWN  docker.io/library/redis:7"));
}

#[test]
fn docker_source_copies_the_riscv64_image_from_another_registry() {
    let w = world();
    let mut remote = RemoteSources::default();
    remote.upstream_overrides.insert("docker.io".into(), w.upstream.endpoint());
    let src = Source::Docker(r("rancher/local-path-provisioner:v0.0.32"));
    let image = load(&src, &remote).unwrap();
    assert_eq!(image.index_digest.as_deref(), Some(w.local_path_index.as_str()));
    assert_eq!(image.manifest_digest, w.local_path_riscv);
    // Destination: where the board's containerd will look (no rewrite matches this name).
    let dest = resolve::destination(&mirrors(&w, &w.upstream.endpoint()), &r("rancher/local-path-provisioner:v0.0.32"), &w.private.endpoint()).unwrap();
    let items = [PushItem { name: "local-path".into(), image, repository: dest.repository.clone(), tag: Some(dest.reference.clone()), locked_manifest_digest: None }];
    let client = RegistryClient::new(&w.private.endpoint(), ClientOptions::default()).unwrap();
    let (tx, _rx) = mpsc::channel();
    let (plan, report) = push::plan_and_push(&client, &items, &[], &tx).unwrap();
    assert!(plan.bytes_to_send() > 0);
    assert_eq!(report.images[0].index_digest.as_deref(), Some(w.local_path_index.as_str()));
    let v = w.private.skopeo_inspect("rancher/local-path-provisioner", "v0.0.32").unwrap();
    assert_eq!(v["Digest"], w.local_path_riscv.as_str());

    // Pinned by the lock file: fetched by digest, whatever the tag points at now.
    let pinned = rvcluster::registry::source::load_pinned(&src, &remote, Some(&w.local_path_riscv)).unwrap();
    assert_eq!(pinned.manifest_digest, w.local_path_riscv);
    let bogus = format!("sha256:{}", "0".repeat(64));
    let err = rvcluster::registry::source::load_pinned(&src, &remote, Some(&bogus)).unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");

    // An upstream image without riscv64 is refused with its platforms.
    let err = load(&Source::Docker(r("rancher/klipper-lb:v0.4.13")), &remote).unwrap_err();
    assert!(matches!(&err, RegistryError::NoRiscv64 { platforms, .. } if platforms == &["linux/amd64", "linux/arm64"]), "{err}");
}

#[test]
fn anonymous_bearer_upstream_like_docker_hub() {
    // Upstream with token auth that hands anonymous callers pull-only tokens (Docker Hub's model).
    let upstream = TestRegistry::start(Opts { token: true, anonymous_pull: true, ..Default::default() });
    let private = TestRegistry::start(Opts::default());
    let work = tempfile::tempdir().unwrap();
    let lp = work.path().join("lp");
    let w = images::oci_layout(&lp, &["arm64", "riscv64"], &[Layer::new("lp", 10_000, 8)]);
    upstream.skopeo_copy_all(&format!("oci:{}", lp.display()), "rancher/local-path-provisioner", "v0.0.32");

    let mut overrides = BTreeMap::new();
    overrides.insert("docker.io".to_string(), upstream.endpoint());
    let cfg = MirrorConfig {
        mirrors: vec![MirrorEntry { registry: "docker.io".into(), endpoints: vec![private.endpoint()], rewrites: vec![] }],
        upstream_overrides: overrides.clone(),
        disable_default_endpoint: false,
    };
    let needs = [Need { image: r("rancher/local-path-provisioner:v0.0.32"), needed_by: vec![NeededBy::Addon("local-storage".into())] }];
    let report = closure::check(&needs, &BTreeMap::new(), &cfg, &BTreeMap::new());
    match &report.entries[0].status {
        Status::AvailableUpstream { digest, .. } => assert_eq!(*digest, w.manifest("riscv64")),
        s => panic!("{s:?}"),
    }
    // docker:// from it, anonymously, then pushed to the private registry.
    let remote = RemoteSources { upstream_overrides: overrides, options: BTreeMap::new() };
    let image = load(&Source::Docker(r("rancher/local-path-provisioner:v0.0.32")), &remote).unwrap();
    assert_eq!(image.manifest_digest, w.manifest("riscv64"));
    let d = push_one_loaded(&private, image, "rancher/local-path-provisioner", "v0.0.32");
    assert_eq!(d, w.manifest("riscv64"));
    // Anonymous push to the token registry is refused (pull-only token).
    let anon = RegistryClient::new(&upstream.endpoint(), ClientOptions::default()).unwrap();
    let err = anon.start_upload("rancher/other").unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
}

fn push_one_loaded(reg: &TestRegistry, image: rvcluster::registry::LoadedImage, repo: &str, tag: &str) -> String {
    let items = [PushItem { name: repo.into(), image, repository: repo.into(), tag: Some(tag.into()), locked_manifest_digest: None }];
    let client = RegistryClient::new(&reg.endpoint(), reg.client_options()).unwrap();
    let (tx, _rx) = mpsc::channel();
    let (_, rep) = push::plan_and_push(&client, &items, &[], &tx).unwrap();
    assert_eq!(reg.skopeo_inspect(repo, tag).unwrap()["Digest"], rep.images[0].manifest_digest.as_str());
    rep.images[0].manifest_digest.clone()
}

/// The diagnosis of a pod's image pull, worded for an image cluster.kdl does not name (a pod
/// started by hand): who needs it is "a pod", never an empty "(needed by )"; a release image still
/// names its addon.
#[test]
fn explain_words_an_image_cluster_kdl_does_not_name() {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let k3s = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/blog-lab/artifacts/k3s-riscv64");
    let kdl = format!(
        "cluster \"c\"\nk3s version=\"v1.34.3+k3s1\" {{\n    binary \"{}\" sha256=\"bf4e2dbaf8165b58064967a0bd45da6f17302b2e240cf4496e80229c9173409f\"\n}}\n\
         node \"s1\" address=\"10.0.0.1\" role=\"server\"\n\
         registry \"r\" address=\"{}\" port={} {{\n    mirror \"docker.io\" {{\n        rewrite \"^rancher/mirrored-(.*)$\" \"riscv64/$1\"\n    }}\n}}\n\
         upstream \"docker.io\" endpoint=\"{}\"\n",
        k3s.display(),
        w.private.ip,
        w.private.port,
        w.upstream.endpoint()
    );
    let file = dir.path().join("cluster.kdl");
    std::fs::write(&file, kdl).unwrap();
    let profiles = rvcluster::profile::Profiles::builtin();
    let c = rvcluster::spec::load(&file, &profiles).unwrap();
    let text = rvcluster::images::explain(&c, &profiles, None, "someone/tool:1");
    assert!(!text.contains("(needed by )"), "{text}");
    assert!(
        text.starts_with(&format!("MISSING  docker.io/someone/tool:1 (needed by {}): ", closure::UNLISTED)),
        "{text}"
    );
    assert!(text.contains(&format!("tried {}/someone/tool:1 (mirror): not found", w.private.host_port())), "{text}");
    assert!(text.contains(&format!("tried {}/someone/tool:1 (upstream): not found", w.upstream.host_port())), "{text}");
    let text = rvcluster::images::explain(&c, &profiles, None, "rancher/klipper-lb:v0.4.13");
    assert!(text.contains("(needed by addon servicelb)") && text.contains("or disable the addon `servicelb`"), "{text}");
}
