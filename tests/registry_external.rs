//! An external registry (`external=#true`, the blog's Mac running `registry:2`) is only ever
//! talked to over HTTP: its `/v2/` check against real docker-registry instances says whether it
//! answers, accepts the credentials and speaks what cluster.kdl declares (plain HTTP, or https
//! trusted through ca=), with a fix for each mismatch; the nodes' registries.yaml points at it
//! exactly as at a managed one, and no CA is generated for it.

#[path = "support/registry.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rvcluster::profile::Profiles;
use rvcluster::spec::Cluster;
use support::{Opts, TestRegistry};

const K3S: &str = "fixtures/blog-lab/artifacts/k3s-riscv64";
const K3S_SHA: &str = "bf4e2dbaf8165b58064967a0bd45da6f17302b2e240cf4496e80229c9173409f";

fn cluster(dir: &Path, registry: &str) -> Cluster {
    let k3s = Path::new(env!("CARGO_MANIFEST_DIR")).join(K3S);
    let text = format!(
        "cluster \"ext\"\nk3s version=\"v1.34.3+k3s1\" {{\n    binary \"{}\" sha256=\"{K3S_SHA}\"\n}}\n\
         node \"s1\" address=\"10.0.0.1\" role=\"server\"\n{registry}\n\
         image \"riscv64/redis:1.1\" from=\"docker://docker.io/riscv64/redis:latest\"\n",
        k3s.display()
    );
    let file = dir.join("cluster.kdl");
    std::fs::write(&file, &text).unwrap();
    rvcluster::spec::parse(&file, &text, dir, &Profiles::builtin()).unwrap_or_else(|e| panic!("{}", e.lines().join("\n")))
}

fn password_file(dir: &Path, pw: &str) -> PathBuf {
    let p = dir.join("registry.pass");
    std::fs::write(&p, format!("{pw}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn check(c: &Cluster) -> Result<String, String> {
    let pw = rvcluster::converge::registry_password(c).unwrap();
    rvcluster::images::check_external(c, pw.as_deref()).map_err(|e| e.to_string())
}

#[test]
fn plain_http_registry_like_the_blogs_mac() {
    let reg = TestRegistry::start(Opts::default());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let block = |tls: &str| {
        format!(
            "registry \"mac\" address=\"{}\" port={} external=#true {{\n    tls {tls}\n    mirror \"docker.io\"\n}}",
            reg.ip, reg.port
        )
    };
    let mut c = cluster(d, &block("#false"));
    assert_eq!(c.registry_mode().as_str(), "external");
    assert!(c.managed_registry().is_none());
    assert_eq!(c.images[0].deliver.as_str(), "registry", "a registry block makes pushing the default");
    let ok = check(&c).unwrap();
    assert!(ok.contains(&format!("GET http://{}:{}/v2/: ok", reg.ip, reg.port)) && ok.contains("plain HTTP"), "{ok}");

    // registries.yaml: the same mirror as for a managed registry, plain http, no CA.
    let regs = rvcluster::render::registries_yaml(&c, &rvcluster::render::Secrets { token: None, registry_password: None }).unwrap().unwrap();
    assert!(regs.contains(&format!("\"http://{}:{}\"", reg.ip, reg.port)), "{regs}");
    assert!(!regs.contains("ca_file"), "{regs}");

    // Declared https, but the registry speaks plain HTTP.
    let c2 = cluster(d, &block("#true"));
    let err = check(&c2).unwrap_err();
    eprintln!("{err}");
    assert!(err.contains(&format!("GET https://{}:{}/v2/", reg.ip, reg.port)) && err.contains("write `tls #false`"), "{err}");
    // No CA is generated for a registry rvcluster does not run.
    assert!(rvcluster::pki::ensure_registry_tls(&mut c).unwrap().is_none());
    let mut c3 = cluster(d, &block("#true"));
    assert!(rvcluster::pki::ensure_registry_tls(&mut c3).unwrap().is_none());
    assert!(!d.join(".rvcluster").exists(), "nothing generated beside cluster.kdl");
    let regs = rvcluster::render::registries_yaml(&c3, &rvcluster::render::Secrets { token: None, registry_password: None }).unwrap().unwrap();
    assert!(regs.contains("\"https://") && !regs.contains("ca_file"), "trusted through the system's CAs: {regs}");

    // Nothing listening there.
    drop(reg);
    let err = check(&c).unwrap_err();
    eprintln!("{err}");
    assert!(err.contains("cannot reach"), "{err}");
}

#[test]
fn https_registry_with_auth_like_a_harbor() {
    let reg = TestRegistry::start(Opts { tls: true, auth: true, ..Default::default() });
    let (user, pw) = reg.creds.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = reg.ca.clone().unwrap();
    let block = |tls: &str, auth: &str| {
        format!(
            "registry \"harbor\" address=\"{}\" port={} external=#true {{\n    tls {tls}\n    {auth}\n    mirror \"docker.io\"\n}}",
            reg.ip, reg.port
        )
    };
    let pwf = password_file(d, &pw);
    let auth = format!("auth user=\"{user}\" password-file=\"{}\"", pwf.display());
    let tls = format!("#true ca=\"{}\"", ca.display());

    let c = cluster(d, &block(&tls, &auth));
    let ok = check(&c).unwrap();
    assert!(ok.contains("https trusting") && ok.contains(&format!("credentials of `{user}` accepted")), "{ok}");
    let regs = rvcluster::render::registries_yaml(&c, &rvcluster::render::Secrets { token: None, registry_password: Some(&pw) }).unwrap().unwrap();
    assert!(regs.contains(&format!("\"https://{}:{}\"", reg.ip, reg.port)) && regs.contains("ca_file") && regs.contains("\"username\": \"rvc\""), "{regs}");

    // Wrong password: refused, and the password is never shown.
    std::fs::write(&pwf, "not-the-password\n").unwrap();
    let err = check(&c).unwrap_err();
    eprintln!("{err}");
    assert!(err.contains(&format!("refused the credentials of `{user}`")) && !err.contains("not-the-password"), "{err}");
    // No auth declared: says what to add.
    let err = check(&cluster(d, &block(&tls, ""))).unwrap_err();
    eprintln!("{err}");
    assert!(err.contains("wants credentials") && err.contains("auth user="), "{err}");
    // Declared plain HTTP: the registry speaks https.
    std::fs::write(&pwf, format!("{pw}\n")).unwrap();
    let err = check(&cluster(d, &block("#false", &auth))).unwrap_err();
    eprintln!("{err}");
    assert!(err.contains("speaks https") && err.contains("tls #true"), "{err}");
    // https without the CA: the system's CAs do not trust it.
    let err = check(&cluster(d, &block("#true", &auth))).unwrap_err();
    eprintln!("{err}");
    assert!(err.contains("system's CAs") && err.to_lowercase().contains("tls"), "{err}");
}

#[test]
fn the_blogs_cluster_with_the_macs_own_registry() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/blog-lab-external.kdl");
    let c = rvcluster::spec::load(&f, &Profiles::builtin()).unwrap_or_else(|e| panic!("{}", e.lines().join("\n")));
    assert_eq!(c.registry_mode().as_str(), "external");
    let delivery: Vec<(String, &str)> = c.images.iter().map(|i| (i.reference.to_string(), i.deliver.as_str())).collect();
    assert_eq!(delivery[0], ("docker.io/rancher/local-path-provisioner:v0.0.31".to_string(), "registry"));
    assert_eq!(delivery[2], ("docker.io/riscv64/nginx:1.1".to_string(), "tarball"));
    // The registries.yaml the blog wrote by hand: docker.io mirrored to the Mac over plain HTTP
    // with the rewrite, and the Mac's own host:port mirrored to itself.
    let regs = rvcluster::render::registries_yaml(&c, &rvcluster::render::Secrets { token: None, registry_password: None }).unwrap().unwrap();
    assert_eq!(
        regs,
        "# managed by rvcluster\n\"mirrors\":\n  \"docker.io\":\n    \"endpoint\":\n      - \"http://192.168.173.76:6000\"\n    \"rewrite\":\n      \"^rancher/(.*)\": \"riscv64/$1\"\n  \"192.168.173.76:6000\":\n    \"endpoint\":\n      - \"http://192.168.173.76:6000\"\n"
    );
}
