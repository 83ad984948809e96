//! The blog posts' story on the emulated lab (issue: verify the cluster):
//! 1. the first attempt (a registry with only pause and redis ported, nothing else): the closure
//!    check names every missing image up front; applied anyway, apply waits, sees the blog's
//!    ImagePullBackOff pods stuck, and prints a diagnosis per pod naming the mirror and upstream;
//! 2. the blog's final cluster (mirror rewrite, ported images, coredns and local-storage disabled,
//!    custom local-storage manifest): apply converges and every node and pod is Ready;
//! 3. apply again: nothing changes;
//! 4. an agent is re-flashed: refused until trusted, then it rejoins and every pod is Ready again.

#[path = "../fixtures/images/gen.rs"]
mod images;

use std::path::{Path, PathBuf};
use std::process::Output;

use rvlab::{Lab, Role};

#[path = "support/e2e.rs"]
mod e2e;

struct Env {
    lab: Lab,
    dir: tempfile::TempDir,
}

impl Env {
    fn rv(&self, args: &[&str]) -> Output {
        e2e::rv(self.dir.path(), args)
    }
}

use e2e::sha256;

/// A hand-ported linux/riscv64 image (what the blog built with `docker build --platform linux/riscv64`).
fn port(dir: &Path, name: &str, seed: u64) -> String {
    let out = dir.join("ported").join(format!("{name}.tar"));
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    images::oci_archive(&dir.join("work"), &out, &["riscv64"], &[images::Layer::gz(name, 4096, seed)]);
    format!("oci-archive:ported/{name}.tar")
}

const REDIS: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: redis\n  namespace: default\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: redis\n  template:\n    metadata:\n      labels:\n        app: redis\n    spec:\n      containers:\n        - name: redis\n          image: riscv64/redis:1.1\n";

fn header(env: &Env, k3s: &Path) -> String {
    let mut kdl = format!(
        "cluster \"blog\"\nupstream \"docker.io\" endpoint=\"{}\"\n",
        env.lab.upstream().unwrap().url()
    );
    let _ = k3s;
    let mut known = String::new();
    for b in env.lab.boards() {
        known.push_str(&b.known_hosts_line());
        known.push('\n');
        let key = env.lab.client_key().display();
        match b.role() {
            Role::Registry => {}
            r => kdl.push_str(&format!(
                "node \"{}\" address=\"{}\" role=\"{}\" {{\n    ssh user=\"root\" identity=\"{key}\"\n}}\n",
                b.name(),
                b.address(),
                if r == Role::Server { "server" } else { "agent" }
            )),
        }
    }
    std::fs::write(env.dir.path().join("known_hosts"), known).unwrap();
    kdl
}

fn registry_block(env: &Env, rewrite: bool) -> String {
    let mac = env.lab.boards().iter().find(|b| b.role() == Role::Registry).unwrap();
    let reg = Path::new("/usr/bin/docker-registry");
    format!(
        "registry \"mac\" address=\"{}\" port=6000 {{\n    ssh user=\"root\" identity=\"{}\"\n    tls #false\n    auth user=\"rv\" password-file=\"registry.pass\"\n    binary \"{}\" sha256=\"{}\"\n    mirror \"docker.io\" {{\n{}    }}\n}}\n",
        mac.address(),
        env.lab.client_key().display(),
        reg.display(),
        sha256(reg),
        if rewrite { "        rewrite \"^rancher/(.*)\" \"riscv64/$1\"\n" } else { "" }
    )
}

fn start() -> Env {
    let lab = Lab::builder()
        .board("openeuler-riscv64", Role::Server)
        .board("board2", Role::Agent)
        .board("board3", Role::Agent)
        .registry_host("mac")
        .seed_upstream(true)
        .start()
        .expect("lab starts (needs root, sshd, docker-registry)");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("registry.pass"), "blog-secret-pw\n").unwrap();
    std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
    std::fs::write(dir.path().join("manifests/redis.yaml"), REDIS).unwrap();
    let custom = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/blog-lab/manifests/custom-local-storage.yaml"),
    )
    .unwrap();
    std::fs::write(dir.path().join("manifests/custom-local-storage.yaml"), custom).unwrap();
    Env { lab, dir }
}

fn k3s_block(k3s: &Path, extra: &str) -> String {
    format!(
        "k3s version=\"v1.33.4+k3s1\" {{\n    binary \"{}\" sha256=\"{}\"\n    manifest \"manifests/redis.yaml\"\n{extra}}}\n",
        k3s.display(),
        sha256(k3s)
    )
}

#[test]
fn the_blogs_cluster_from_image_pull_backoff_to_every_pod_ready() {
    let env = start();
    let k3s: PathBuf = rvlab::artifacts::k3s_sim_binary().expect("the simulated k3s binary");
    let d = env.dir.path();

    // 1. First attempt: only pause and redis ported, no rewrite, nothing disabled.
    let mut kdl = header(&env, &k3s);
    kdl.push_str(&k3s_block(&k3s, ""));
    kdl.push_str(&registry_block(&env, false));
    kdl.push_str(&format!("image \"docker.io/rancher/mirrored-pause:3.6\" from=\"{}\"\n", port(d, "pause", 1)));
    kdl.push_str(&format!("image \"riscv64/redis:1.1\" from=\"{}\"\n", port(d, "redis", 2)));
    std::fs::write(d.join("cluster.kdl"), &kdl).unwrap();

    let out = env.rv(&["plan", "cluster.kdl"]);
    assert_eq!(out.status.code(), Some(1), "the closure check fails the plan");
    let text = String::from_utf8_lossy(&out.stdout);
    for missing in ["klipper-helm", "mirrored-metrics-server", "mirrored-coredns-coredns", "local-path-provisioner:v0.0.31"] {
        assert!(text.lines().any(|l| l.contains("MISSING") && l.contains(missing)), "{missing} reported missing:\n{text}");
    }
    assert!(text.contains("no linux/riscv64 (has linux/amd64"), "says what upstream has:\n{text}");

    let out = env.rv(&["apply", "cluster.kdl", "--skip-closure-check", "--timeout", "300"]);
    assert_eq!(out.status.code(), Some(1), "pods never become Ready");
    let err = String::from_utf8_lossy(&out.stderr);
    for pod in ["helm-install-traefik-", "helm-install-traefik-crd-", "local-path-provisioner-", "metrics-server-", "coredns-"] {
        assert!(
            // kubectl alternates ErrImagePull and ImagePullBackOff for the same failure.
            err.lines().any(|l| l.starts_with("pod kube-system/")
                && l.contains(pod)
                && (l.contains("ImagePullBackOff") || l.contains("ErrImagePull"))
                && l.contains("no match for platform in manifest")),
            "{pod} diagnosed as an image pull failure:\n{err}"
        );
    }
    let mac = env.lab.boards().iter().find(|b| b.role() == Role::Registry).unwrap().address().to_string();
    assert!(err.contains(&format!("tried {mac}:6000/rancher/klipper-helm")), "the mirror endpoint tried:\n{err}");
    assert!(err.contains("fix: port it to linux/riscv64"), "the fix:\n{err}");
    assert!(!err.contains("pod default/redis"), "redis (ported) is Ready:\n{err}");
    assert!(!err.contains("blog-secret-pw"), "the registry password never appears");

    // 2. The blog's final cluster.
    let mut kdl = header(&env, &k3s);
    kdl.push_str(&k3s_block(
        &k3s,
        "    disable \"local-storage\" \"coredns\"\n    manifest \"manifests/custom-local-storage.yaml\"\n",
    ));
    kdl.push_str(&registry_block(&env, true));
    for (i, (img, name)) in [
        ("docker.io/rancher/mirrored-pause:3.6", "pause"),
        ("docker.io/rancher/klipper-helm:v0.9.8-build20250709", "klipper-helm"),
        ("docker.io/rancher/mirrored-library-traefik:3.3.6", "traefik"),
        ("docker.io/rancher/mirrored-metrics-server:v0.8.0", "metrics-server"),
        ("docker.io/rancher/klipper-lb:v0.4.13", "klipper-lb"),
        ("docker.io/rancher/local-path-provisioner:v0.0.31", "local-path-provisioner"),
        ("riscv64/busybox:1", "busybox"),
        ("riscv64/redis:1.1", "redis"),
    ]
    .iter()
    .enumerate()
    {
        kdl.push_str(&format!("image \"{img}\" from=\"{}\"\n", port(d, name, 10 + i as u64)));
    }
    std::fs::write(d.join("cluster.kdl"), &kdl).unwrap();
    let out = env.rv(&["plan", "cluster.kdl"]);
    assert_eq!(out.status.code(), Some(0), "every image is accounted for");
    let out = env.rv(&["apply", "cluster.kdl", "--timeout", "300"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("every node and pod is Ready"));
    let reg_files = std::fs::read_to_string(
        env.lab.board("openeuler-riscv64").unwrap().path("/etc/rancher/k3s/registries.yaml"),
    )
    .unwrap();
    assert!(reg_files.contains("\"^rancher/(.*)\": \"riscv64/$1\""), "{reg_files}");
    assert!(reg_files.contains(&format!("\"http://{mac}:6000\"")), "{reg_files}");

    // 3. Again: nothing changes.
    let out = env.rv(&["apply", "cluster.kdl", "--timeout", "300"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches("no changes").count(), 4, "registry host and three nodes");
    let out = env.rv(&["plan", "cluster.kdl", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "plan is empty, images included");

    // 4. Re-flash an agent.
    let mut env = env;
    env.lab.reflash("board2").unwrap();
    let out = env.rv(&["apply", "cluster.kdl", "--on", "board2"]);
    assert_eq!(out.status.code(), Some(1), "changed host key refused");
    let out = env.rv(&["trust", "board2", "cluster.kdl", "--replace"]);
    assert_eq!(out.status.code(), Some(0));
    let out = env.rv(&["apply", "cluster.kdl", "--timeout", "300"]);
    assert_eq!(out.status.code(), Some(0), "rejoined and every pod Ready again");
    assert!(String::from_utf8_lossy(&out.stderr).contains("every node and pod is Ready"));
}
