//! Image pulls against real docker-registry instances seeded over the Distribution API:
//! mirror order, rewrite on mirrors only, fallback to the default upstream, riscv64 selection,
//! containerd's no-match message, auth from `configs`.
mod common;
use common::*;
use k3s_sim::image::ImageRef;
use k3s_sim::paths::Paths;
use k3s_sim::pull::Puller;
use k3s_sim::registries::Registries;
use k3s_sim::simconf::UpstreamConf;
use k3s_sim::upstream::{self, Format, ImageSpec, Platform};

fn puller(registries_yaml: &str, upstream: &Registry) -> Puller {
    Puller {
        registries: Registries::parse(registries_yaml).unwrap(),
        upstream: UpstreamConf::parse(&format!("docker.io {}\n", upstream.url())),
        disable_default_endpoint: false,
        arch: "riscv64".into(),
        paths: Paths::at("/"),
    }
}

fn riscv_copy(repo: &str, tag: &str) -> ImageSpec {
    ImageSpec {
        repository: repo.into(),
        tag: tag.into(),
        format: Format::DockerList,
        platforms: vec![Platform::parse("linux/amd64").unwrap(), Platform::parse("linux/riscv64").unwrap()],
    }
}

#[test]
fn seeding_is_deterministic_and_reproduces_the_blog_image_pull_failures() {
    let up = Registry::start();
    let first = upstream::seed(&up.url()).unwrap();
    let again = upstream::seed(&up.url()).unwrap();
    assert_eq!(first.iter().map(|i| &i.digest).collect::<Vec<_>>(), again.iter().map(|i| &i.digest).collect::<Vec<_>>());
    let p = puller("", &up);
    // riscv64 picked from an index
    let ok = p.pull(&ImageRef::parse("rancher/local-path-provisioner:v0.0.32").unwrap()).unwrap();
    let seeded = first.iter().find(|i| i.name == "rancher/local-path-provisioner:v0.0.32").unwrap();
    assert_eq!(ok.image_id, format!("docker.io/rancher/local-path-provisioner@{}", seeded.digest));
    assert_ne!(ok.manifest_digest, seeded.digest, "the riscv64 manifest, not the index");
    // single-arch riscv64 manifest
    assert!(p.pull(&ImageRef::parse("riscv64/redis").unwrap()).is_ok());
    // no riscv64 in the index: containerd's message
    for img in ["rancher/mirrored-pause:3.6", "rancher/klipper-helm:v0.9.8-build20250709", "redis", "nginx:latest"] {
        let r = ImageRef::parse(img).unwrap();
        let e = p.pull(&r).unwrap_err();
        assert_eq!(e.message, format!("failed to pull and unpack image \"{r}\": no match for platform in manifest: not found"));
        assert_eq!(e.code, "NotFound");
    }
    // single-arch manifest whose config says amd64 also fails
    let e = p.pull(&ImageRef::parse("amd64/nginx").unwrap()).unwrap_err();
    assert!(e.message.ends_with("no match for platform in manifest: not found"), "{}", e.message);
    // a missing tag
    let e = p.pull(&ImageRef::parse("rancher/mirrored-pause:9.9").unwrap()).unwrap_err();
    assert_eq!(
        e.message,
        "failed to pull and unpack image \"docker.io/rancher/mirrored-pause:9.9\": failed to resolve reference \"docker.io/rancher/mirrored-pause:9.9\": docker.io/rancher/mirrored-pause:9.9: not found"
    );
    // a registry the lab does not provide is unreachable
    let e = p.pull(&ImageRef::parse("quay.io/x/y:1").unwrap()).unwrap_err();
    assert!(e.message.contains("dial tcp: lookup quay.io: no such host"), "{}", e.message);
}

#[test]
fn mirror_with_rewrite_first_then_fallback_to_upstream_without_rewrite() {
    let up = Registry::start();
    let mirror = Registry::start();
    upstream::seed(&up.url()).unwrap();
    // the mirror holds riscv64 ports under riscv/<repo>; it lacks busybox entirely
    for (repo, tag) in [("riscv/rancher/mirrored-pause", "3.6"), ("riscv/rancher/klipper-helm", "v0.9.8-build20250709")] {
        let spec = riscv_copy(repo, tag);
        upstream::push(&mirror.url(), repo, &upstream::build(&spec)).unwrap();
    }
    let yaml = format!(
        "mirrors:\n  docker.io:\n    endpoint:\n      - \"http://{}\"\n    rewrite:\n      \"^rancher/(.*)\": \"riscv/rancher/$1\"\n",
        mirror.authority()
    );
    let p = puller(&yaml, &up);
    let got = p.pull(&ImageRef::parse("rancher/mirrored-pause:3.6").unwrap()).unwrap();
    assert_eq!(got.endpoint, format!("http://{}/v2", mirror.authority()));
    assert_eq!(got.repository, "riscv/rancher/mirrored-pause");
    assert_eq!(got.image, "docker.io/rancher/mirrored-pause:3.6");
    // not on the mirror: falls back to the default endpoint, with the original repository
    let got = p.pull(&ImageRef::parse("rancher/mirrored-library-busybox:1.37.0").unwrap()).unwrap();
    assert_eq!(got.endpoint, "https://registry-1.docker.io/v2");
    assert_eq!(got.repository, "rancher/mirrored-library-busybox");
    // with the default endpoint disabled there is no fallback
    let mut p2 = puller(&yaml, &up);
    p2.disable_default_endpoint = true;
    let e = p2.pull(&ImageRef::parse("rancher/mirrored-library-busybox:1.37.0").unwrap()).unwrap_err();
    assert!(e.message.contains(": not found"), "{}", e.message);
    // an unreachable first mirror is skipped
    let yaml = format!("mirrors:\n  docker.io:\n    endpoint:\n      - \"http://127.0.0.2:9\"\n      - \"{}\"\n", mirror.authority());
    let p3 = puller(&yaml, &up);
    let e = p3.pull(&ImageRef::parse("rancher/mirrored-pause:3.6").unwrap()).unwrap_err();
    // the mirror without rewrite has no rancher/mirrored-pause; upstream has no riscv64
    assert!(e.message.ends_with("no match for platform in manifest: not found"), "{}", e.message);
    // nowhere to be found: containerd reports the first non-404 error (the dead mirror)
    let e = p3.pull(&ImageRef::parse("rancher/nothing-here:1").unwrap()).unwrap_err();
    assert!(e.message.contains("failed to do request: Head \"http://127.0.0.2:9/v2/rancher/nothing-here/manifests/1\""), "{}", e.message);
}

#[test]
fn basic_auth_from_configs() {
    let dir = temp_dir("htpasswd");
    let htpasswd = dir.join("htpasswd");
    let st = std::process::Command::new("htpasswd").args(["-Bbc"]).arg(&htpasswd).args(["lab", "s3cret"]).output().unwrap();
    assert!(st.status.success(), "htpasswd (apache2-utils) works");
    let up = Registry::start();
    let private = Registry::start_with(Some(&htpasswd));
    let spec = riscv_copy("library/redis", "7.2.4");
    // push needs auth too: push via a no-auth twin, then copy the storage dir
    let plain = Registry::start();
    upstream::push(&plain.url(), "library/redis", &upstream::build(&spec)).unwrap();
    plain_copy(&plain, &private);
    let base = format!("mirrors:\n  docker.io:\n    endpoint: [\"http://{}\"]\n", private.authority());
    let p = puller(&base, &up);
    let e = p.pull(&ImageRef::parse("redis:7.2.4").unwrap()).unwrap_err();
    // the upstream has no such tag either: the mirror's 401 is the error containerd reports
    assert!(e.message.contains("401 Unauthorized"), "{}", e.message);
    assert!(!e.message.contains("s3cret"));
    let with_auth = format!("{base}configs:\n  \"{}\":\n    auth:\n      username: lab\n      password: s3cret\n", private.authority());
    let ok = puller(&with_auth, &up).pull(&ImageRef::parse("redis:7.2.4").unwrap()).unwrap();
    assert_eq!(ok.endpoint, format!("http://{}/v2", private.authority()));
    let _ = std::fs::remove_dir_all(dir);
}

fn port_nginx(mirror: &Registry) {
    // push over TLS is not needed: copy a plain registry's storage into the TLS one
    let plain = Registry::start();
    upstream::push(&plain.url(), "library/nginx", &upstream::build(&riscv_copy("library/nginx", "latest"))).unwrap();
    plain_copy(&plain, mirror);
}

fn plain_copy(from: &Registry, to: &Registry) {
    let _ = std::fs::remove_dir_all(to.dir.join("data"));
    let st = std::process::Command::new("cp").arg("-a").arg(from.dir.join("data")).arg(&to.dir).status().unwrap();
    assert!(st.success());
}

#[test]
fn https_mirror_is_verified_with_ca_file_from_configs() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = temp_dir("tls");
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let ip = unique_ip();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![ip.clone()]).unwrap().signed_by(&leaf_key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("server.key"), leaf_key.serialize_pem()).unwrap();
    let up = Registry::start();
    let mirror = Registry::start_full(ip, None, Some((&dir.join("server.pem"), &dir.join("server.key"))));
    let base = format!("mirrors:\n  docker.io:\n    endpoint: [\"https://{}\"]\n", mirror.authority());
    let e = puller(&base, &up).pull(&ImageRef::parse("nginx").unwrap()).unwrap_err();
    assert!(e.message.contains(&format!("https://{}/v2", mirror.authority())), "unverified TLS fails at the mirror: {}", e.message);
    let with_ca = format!("{base}configs:\n  \"{}\":\n    tls:\n      ca_file: {}\n", mirror.authority(), dir.join("ca.pem").display());
    let e = puller(&with_ca, &up).pull(&ImageRef::parse("nginx").unwrap()).unwrap_err();
    // verified TLS reaches the (empty) mirror: 404 there and at the (empty) upstream
    assert!(e.message.ends_with("docker.io/library/nginx:latest: not found"), "{}", e.message);
    port_nginx(&mirror);
    let ok = puller(&with_ca, &up).pull(&ImageRef::parse("nginx").unwrap()).unwrap();
    assert_eq!(ok.endpoint, format!("https://{}/v2", mirror.authority()));
    let skip = format!("{base}configs:\n  \"{}\":\n    tls:\n      insecure_skip_verify: true\n", mirror.authority());
    assert!(puller(&skip, &up).pull(&ImageRef::parse("nginx").unwrap()).is_ok(), "insecure_skip_verify accepts the unknown CA");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn content_missing_on_the_mirror_is_fetched_from_the_next_endpoint_like_containerds_fetcher() {
    let up = Registry::start();
    let mirror = Registry::start();
    let spec = riscv_copy("rancher/klipper-lb", "v0.4.13");
    let built = upstream::build(&spec);
    upstream::push(&up.url(), "rancher/klipper-lb", &built).unwrap();
    upstream::push(&mirror.url(), "rancher/klipper-lb", &built).unwrap();
    let agent = k3s_sim::pull::http_agent(ureq::tls::TlsConfig::builder().build());
    let layer = &built.blobs[3].digest; // riscv64's layer (blobs: cfg, layer per platform)
    let del = |r: &Registry| {
        let resp = k3s_sim::pull::do_request(&agent, "DELETE", &format!("{}/v2/rancher/klipper-lb/blobs/{layer}", r.url()), &[], None).unwrap();
        assert_eq!(resp.status, 202, "{}", String::from_utf8_lossy(&resp.body));
    };
    del(&mirror);
    let yaml = format!("mirrors:\n  docker.io:\n    endpoint: [\"http://{}\"]\n", mirror.authority());
    let p = puller(&yaml, &up);
    let ok = p.pull(&ImageRef::parse("rancher/klipper-lb:v0.4.13").unwrap()).unwrap();
    assert_eq!(ok.endpoint, format!("http://{}/v2", mirror.authority()), "resolved at the mirror");
    del(&up);
    let e = p.pull(&ImageRef::parse("rancher/klipper-lb:v0.4.13").unwrap()).unwrap_err();
    assert!(e.message.ends_with(&format!("{layer}: not found")), "{}", e.message);
}
