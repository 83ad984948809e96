//! The private registry deployed on the lab's registry host: TLS with a generated CA, htpasswd
//! auth, an image pushed through the mirror's rewrite, all checked with real skopeo; re-apply
//! changes nothing; the nodes get the CA and an https endpoint.

#[path = "../fixtures/images/gen.rs"]
mod images;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use rvlab::{Lab, Role};

#[path = "support/e2e.rs"]
mod e2e;

use e2e::rv;

use e2e::sha256;

#[test]
fn tls_and_auth_registry_is_deployed_pushed_to_and_verified_with_skopeo() {
    let lab = Lab::builder().board("server1", Role::Server).registry_host("mac").start().expect("lab starts");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k3s = rvlab::artifacts::k3s_sim_binary().unwrap();
    let mac = lab.board("mac").unwrap();
    let srv = lab.board("server1").unwrap();
    std::fs::write(d.join("registry.pass"), "s3cret-registry-pw\n").unwrap();
    std::fs::set_permissions(d.join("registry.pass"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let written = images::oci_archive(&d.join("work"), &d.join("lpp.tar"), &["amd64", "riscv64"], &[images::Layer::gz("lpp", 8192, 7)]);
    let key = lab.client_key().display().to_string();
    let reg = Path::new("/usr/bin/docker-registry");
    let kdl = format!(
        "cluster \"tls\"\nk3s version=\"v1.33.4+k3s1\" {{\n    binary \"{k3s}\" sha256=\"{ks}\"\n}}\n\
         registry \"mac\" address=\"{ma}\" port=6443 {{\n    ssh user=\"root\" identity=\"{key}\"\n    tls #true\n    auth user=\"rv\" password-file=\"registry.pass\"\n    binary \"{reg}\" sha256=\"{rs}\"\n    mirror \"docker.io\" {{\n        rewrite \"^rancher/(.*)\" \"riscv64/$1\"\n    }}\n}}\n\
         node \"server1\" address=\"{sa}\" role=\"server\" {{\n    ssh user=\"root\" identity=\"{key}\"\n}}\n\
         image \"docker.io/rancher/local-path-provisioner:v0.0.31\" from=\"oci-archive:lpp.tar\"\n",
        k3s = k3s.display(),
        ks = sha256(&k3s),
        ma = mac.address(),
        sa = srv.address(),
        reg = reg.display(),
        rs = sha256(reg),
    );
    std::fs::write(d.join("cluster.kdl"), kdl).unwrap();
    std::fs::write(d.join("known_hosts"), format!("{}\n{}\n", mac.known_hosts_line(), srv.known_hosts_line())).unwrap();

    let out = rv(d, &["apply", "cluster.kdl", "--on", "mac", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    for (f, mode) in [("registry-ca-key.pem", 0o600), ("registry-key.pem", 0o600), ("registry-ca.pem", 0o644)] {
        let m = std::fs::metadata(d.join(".rvcluster").join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, mode, "{f}");
    }
    let htpasswd = std::fs::read_to_string(mac.path("/etc/rvcluster/registry/htpasswd")).unwrap();
    assert!(htpasswd.starts_with("rv:$2") && !htpasswd.contains("s3cret"), "bcrypt, never the password");
    assert_eq!(std::fs::metadata(mac.path("/etc/rvcluster/registry/htpasswd")).unwrap().permissions().mode() & 0o777, 0o600);

    // skopeo, trusting only the generated CA, sees the riscv64 manifest where the rewrite sends containerd.
    let certs = d.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(d.join(".rvcluster/registry-ca.pem"), certs.join("ca.crt")).unwrap();
    let url = format!("docker://{}:6443/riscv64/local-path-provisioner:v0.0.31", mac.address());
    let inspect = |creds: Option<&str>| {
        let mut c = Command::new("skopeo");
        c.args(["inspect", "--raw", "--cert-dir"]).arg(&certs);
        if let Some(cr) = creds {
            c.args(["--creds", cr]);
        }
        c.arg(&url).output().unwrap()
    };
    let ok = inspect(Some("rv:s3cret-registry-pw"));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let digest = format!("sha256:{}", rvcluster::render::sha256_hex(&ok.stdout));
    assert_eq!(digest, written.manifest("riscv64"), "the riscv64 manifest, byte for byte");
    let lock = std::fs::read_to_string(d.join("cluster.lock")).unwrap();
    assert!(lock.contains(&format!("manifest=\"{digest}\"")), "{lock}");
    let anon = inspect(None);
    assert!(!anon.status.success(), "anonymous access is refused");
    assert!(String::from_utf8_lossy(&anon.stderr).to_lowercase().contains("unauthorized"));

    // Re-apply: nothing changes, the registry is not restarted.
    let starts = mac.service_starts("rvcluster-registry.service").len();
    let out = rv(d, &["apply", "cluster.kdl", "--on", "mac", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no changes"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("images: 0 pushed, 1 already in the registry"), "nothing re-sent");
    assert_eq!(lab.board("mac").unwrap().service_starts("rvcluster-registry.service").len(), starts);

    // cluster.lock pins the image: an archive rebuilt with other content (same tag) is refused by
    // --locked before anything is touched; the registry still serves the locked manifest.
    let rebuilt = images::oci_archive(&d.join("work2"), &d.join("lpp.tar"), &["amd64", "riscv64"], &[images::Layer::gz("lpp", 8192, 8)]);
    assert_ne!(rebuilt.manifest("riscv64"), digest, "a different riscv64 manifest");
    let lock_before = std::fs::read_to_string(d.join("cluster.lock")).unwrap();
    let out = rv(d, &["apply", "cluster.kdl", "--on", "mac", "--locked", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "image docker.io/rancher/local-path-provisioner:v0.0.31: locked {digest} in riscv64/local-path-provisioner, now {} in riscv64/local-path-provisioner",
            rebuilt.manifest("riscv64")
        )),
        "names the image and both digests:\n{stderr}"
    );
    assert!(!stderr.contains("pushed"), "nothing pushed:\n{stderr}");
    let now = inspect(Some("rv:s3cret-registry-pw"));
    assert_eq!(format!("sha256:{}", rvcluster::render::sha256_hex(&now.stdout)), digest, "the registry still has the locked manifest");
    assert_eq!(std::fs::read_to_string(d.join("cluster.lock")).unwrap(), lock_before, "the lock is not rewritten");
    assert_eq!(lab.board("mac").unwrap().service_starts("rvcluster-registry.service").len(), starts, "the registry host is untouched");
    // Without --locked the new image is pushed and the lock follows.
    let out = rv(d, &["apply", "cluster.kdl", "--on", "mac", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    let now = inspect(Some("rv:s3cret-registry-pw"));
    assert_eq!(format!("sha256:{}", rvcluster::render::sha256_hex(&now.stdout)), rebuilt.manifest("riscv64"));
    assert!(std::fs::read_to_string(d.join("cluster.lock")).unwrap().contains(rebuilt.manifest("riscv64")));

    // The node trusts the CA and uses https.
    let out = rv(d, &["apply", "cluster.kdl", "--on", "server1", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    let ca_on_node = std::fs::read_to_string(srv.path("/etc/rancher/k3s/rvcluster-registry-ca.pem")).unwrap();
    assert_eq!(ca_on_node, std::fs::read_to_string(d.join(".rvcluster/registry-ca.pem")).unwrap());
    let regs = std::fs::read_to_string(srv.path("/etc/rancher/k3s/registries.yaml")).unwrap();
    assert!(regs.contains(&format!("\"https://{}:6443\"", mac.address())), "{regs}");
    assert!(regs.contains("\"ca_file\": \"/etc/rancher/k3s/rvcluster-registry-ca.pem\""), "{regs}");
    assert!(regs.contains("\"password\": \"s3cret-registry-pw\""));
    assert_eq!(std::fs::metadata(srv.path("/etc/rancher/k3s/registries.yaml")).unwrap().permissions().mode() & 0o777, 0o600);
}
