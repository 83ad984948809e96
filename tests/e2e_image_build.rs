//! A built pause image on the emulated lab: the cluster's sandbox image is built from
//! fixtures/image-build (no archive, no Docker), plan and apply build it and push it to the
//! registry host, the simulated k3s pulls it (upstream's mirrored-pause has no linux/riscv64, so
//! only the built one can work) and the pod gets Ready; cluster.lock records its digest;
//! `apply --locked` rebuilds it (never trusting the cache) and refuses one that differs.

use std::path::Path;

use rvlab::{Lab, Role};

#[path = "support/e2e.rs"]
mod e2e;

use e2e::{rv, sha256};

/// The digest tests/image_build.rs pins for the fixture's pause image.
const PAUSE_DIGEST: &str = "sha256:1adc10e256d12a29bc25cbb682b8f4a2a059de6bc4a2cf11945684a3b1bbf83b";

/// The fixture's `image ... { build { ... } }` entry, verbatim.
fn fixture_image_block() -> String {
    let kdl = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/image-build/cluster.kdl")).unwrap();
    let at = kdl.find("image \"docker.io/rancher/mirrored-pause:3.6\" {").expect("the fixture's pause entry");
    kdl[at..].to_string()
}

#[test]
fn a_built_pause_image_is_pushed_pulled_by_k3s_and_its_pod_gets_ready() {
    let lab = Lab::builder()
        .board("server1", Role::Server)
        .registry_host("mac")
        .seed_upstream(true)
        .ready_delay_ms(300)
        .start()
        .expect("lab starts (needs root, sshd, docker-registry)");
    let k3s = rvlab::k3s_sim_binary().expect("the simulated k3s binary");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("pause")).unwrap();
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/image-build/pause/pause"), d.join("pause/pause")).unwrap();
    std::fs::create_dir_all(d.join("manifests")).unwrap();
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/e2e/manifests/hello.yaml"), d.join("manifests/hello.yaml")).unwrap();
    std::fs::write(d.join("registry.pass"), "image-build-pw\n").unwrap();
    let mac = lab.board("mac").unwrap();
    let srv = lab.board("server1").unwrap();
    let key = lab.client_key().display().to_string();
    let reg = Path::new("/usr/bin/docker-registry");
    let kdl = format!(
        "cluster \"built\"\nupstream \"docker.io\" endpoint=\"{up}\"\n\
         k3s version=\"v1.33.4+k3s1\" {{\n    binary \"{k}\" sha256=\"{ks}\"\n    disable \"coredns\" \"local-storage\" \"metrics-server\" \"traefik\" \"servicelb\"\n    manifest \"manifests/hello.yaml\"\n}}\n\
         registry \"mac\" address=\"{ma}\" port=6000 {{\n    ssh user=\"root\" identity=\"{key}\"\n    auth user=\"rv\" password-file=\"registry.pass\"\n    binary \"{reg}\" sha256=\"{rs}\"\n    mirror \"docker.io\"\n}}\n\
         node \"server1\" address=\"{sa}\" role=\"server\" {{\n    ssh user=\"root\" identity=\"{key}\"\n}}\n{image}",
        up = lab.upstream().unwrap().url(),
        k = k3s.display(),
        ks = sha256(&k3s),
        ma = mac.address(),
        sa = srv.address(),
        reg = reg.display(),
        rs = sha256(reg),
        image = fixture_image_block(),
    );
    std::fs::write(d.join("cluster.kdl"), kdl).unwrap();
    std::fs::write(d.join("known_hosts"), format!("{}\n{}\n", mac.known_hosts_line(), srv.known_hosts_line())).unwrap();

    // plan builds the image and counts it as provided: the closure check passes.
    let out = rv(d, &["plan", "cluster.kdl"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "plan");
    assert!(err.contains(&format!("built docker.io/rancher/mirrored-pause:3.6 {PAUSE_DIGEST}")), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.contains("ok") && l.contains("mirrored-pause:3.6") && l.contains("provided by cluster.kdl from build (from scratch)")),
        "{text}"
    );

    // apply pushes it; the simulated k3s pulls it through the mirror; the pod is Ready.
    let out = rv(d, &["apply", "cluster.kdl", "--timeout", "300"]);
    assert_eq!(out.status.code(), Some(0), "apply");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("every node and pod is Ready"), "{err}");
    assert!(err.contains(&format!("pushed docker.io/rancher/mirrored-pause:3.6 ({PAUSE_DIGEST})")), "{err}");
    let ls = lab.ssh("server1", "k3s ctr -n k8s.io images ls").unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.lines().any(|l| l.starts_with("docker.io/rancher/mirrored-pause:3.6 ") && l.contains(PAUSE_DIGEST)),
        "the node holds the built pause image:\n{ls}"
    );
    // Real skopeo reads it back from the registry host, byte for byte.
    let raw = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", "--creds", "rv:image-build-pw"])
        .arg(format!("docker://{}:6000/rancher/mirrored-pause:3.6", mac.address()))
        .output()
        .unwrap();
    assert!(raw.status.success(), "{}", String::from_utf8_lossy(&raw.stderr));
    assert_eq!(format!("sha256:{}", rvcluster::render::sha256_hex(&raw.stdout)), PAUSE_DIGEST);
    let lock = std::fs::read_to_string(d.join("cluster.lock")).unwrap();
    assert!(
        lock.contains(&format!("image \"docker.io/rancher/mirrored-pause:3.6\" manifest=\"{PAUSE_DIGEST}\"")),
        "{lock}"
    );

    // --locked rebuilds (the cache is gone: nothing to trust) and finds the locked digest.
    std::fs::remove_dir_all(d.join(".rvcluster/images")).unwrap();
    let out = rv(d, &["apply", "cluster.kdl", "--locked", "--no-wait"]);
    assert_eq!(out.status.code(), Some(0), "apply --locked");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("built docker.io/rancher/mirrored-pause:3.6 {PAUSE_DIGEST}\n")));

    // A changed input gives another digest: --locked refuses before touching any host.
    let mut pause = std::fs::read(d.join("pause/pause")).unwrap();
    pause.push(0);
    std::fs::write(d.join("pause/pause"), pause).unwrap();
    let starts = lab.board("mac").unwrap().service_starts("rvcluster-registry.service").len();
    let out = rv(d, &["apply", "cluster.kdl", "--locked", "--no-wait"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--locked: resolution differs"), "{err}");
    assert!(err.contains(&format!("image docker.io/rancher/mirrored-pause:3.6: locked {PAUSE_DIGEST} in rancher/mirrored-pause, now sha256:")), "{err}");
    assert_eq!(lab.board("mac").unwrap().service_starts("rvcluster-registry.service").len(), starts);
}
