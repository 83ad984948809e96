//! The registry where the user has it, on the emulated lab. The boards cannot reach docker.io
//! (the lab's upstream plays it for rvcluster only), so a Ready pod proves its images came the
//! way cluster.kdl says:
//! 1. an external registry (a real docker-registry this test starts, like the blog's Mac running
//!    `docker run registry:2`): apply checks /v2/, pushes into it, every pod gets Ready, and no
//!    SSH connection to its address is ever attempted (an sshd listening there logs none);
//! 2. the same cluster switched to air-gap (no registry block) and back: tarballs added and
//!    removed, registries.yaml removed and written, k3s restarted once each time;
//! 3. a fresh air-gap cluster: every image a tarball, every pod Ready, `status` shows each
//!    tarball imported on each node, a re-apply uploads nothing, a dropped image's tarball goes
//!    away without a restart.

#[path = "../fixtures/images/gen.rs"]
mod images;
#[path = "support/registry.rs"]
mod registry;
#[path = "support/sshd.rs"]
mod sshd;

use std::path::PathBuf;
use std::process::Output;

use rvlab::{Lab, Role};

#[path = "support/e2e.rs"]
mod e2e;

use e2e::sha256;

const IMAGES_DIR: &str = "/var/lib/rancher/k3s/agent/images";

const REDIS: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: redis\n  namespace: default\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: redis\n  template:\n    metadata:\n      labels:\n        app: redis\n    spec:\n      containers:\n        - name: redis\n          image: riscv64/redis:1.1\n";

struct Env {
    lab: Lab,
    dir: tempfile::TempDir,
}

impl Env {
    fn rv(&self, args: &[&str]) -> Output {
        e2e::rv(self.dir.path(), args)
    }
    fn write(&self, kdl: &str) {
        std::fs::write(self.dir.path().join("cluster.kdl"), kdl).unwrap();
    }
    /// rvcluster tarballs on a board.
    fn tarballs(&self, board: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.lab.b(board).path(IMAGES_DIR))
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().to_string()).filter(|n| n.starts_with("rvcluster-")).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
    fn starts(&self, board: &str) -> usize {
        let unit = if board == "server1" { "k3s.service" } else { "k3s-agent.service" };
        self.lab.b(board).service_starts(unit).len()
    }
    /// Starts of k3s on both boards once the restarts apply asked for (`systemctl restart
    /// --no-block`) have happened: waits until both reach `want` (or stop changing), then reads.
    fn starts_after(&self, want: (usize, usize)) -> (usize, usize) {
        for _ in 0..150 {
            let now = (self.starts("server1"), self.starts("agent1"));
            if now.0 >= want.0 && now.1 >= want.1 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        // A second, unwanted restart would show up here too.
        std::thread::sleep(std::time::Duration::from_millis(500));
        (self.starts("server1"), self.starts("agent1"))
    }
}

/// The apply asked for exactly one restart of each node's k3s.
fn one_restart_each(out: &Output) {
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("~ restart k3s.service").count(), 1, "{text}");
    assert_eq!(text.matches("~ restart k3s-agent.service").count(), 1, "{text}");
}

/// A server and an agent that cannot reach docker.io; the seeded upstream is for rvcluster only.
fn start() -> Env {
    let lab = Lab::builder()
        .board("server1", Role::Server)
        .board("agent1", Role::Agent)
        .seed_upstream(true)
        .upstream_hosts(Vec::<String>::new())
        .start()
        .expect("lab starts (needs root, sshd, docker-registry)");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("manifests")).unwrap();
    std::fs::write(d.join("manifests/redis.yaml"), REDIS).unwrap();
    std::fs::create_dir_all(d.join("ported")).unwrap();
    // The blog's hand-built redis for riscv64, and an image no pod uses.
    images::oci_archive(&d.join("w1"), &d.join("ported/redis.tar"), &["riscv64"], &[images::Layer::gz("redis", 30_000, 5)]);
    images::oci_archive(&d.join("w2"), &d.join("ported/nginx.tar"), &["amd64", "riscv64"], &[images::Layer::gz("nginx", 20_000, 6)]);
    let mut known = String::new();
    for b in lab.boards() {
        known.push_str(&b.known_hosts_line());
        known.push('\n');
    }
    std::fs::write(d.join("known_hosts"), known).unwrap();
    Env { lab, dir }
}

/// cluster.kdl: k3s (traefik, metrics-server and servicelb disabled: coredns, local-path-provisioner
/// and redis stay), the nodes, `registry` as given, and the ported images.
fn cluster_kdl(env: &Env, registry: &str, extra_images: &str) -> String {
    let k3s: PathBuf = rvlab::k3s_sim_binary().expect("the simulated k3s binary");
    let key = env.lab.client_key().display().to_string();
    let mut kdl = format!(
        "cluster \"modes\"\nupstream \"docker.io\" endpoint=\"{up}\"\n\
         k3s version=\"v1.33.4+k3s1\" {{\n    binary \"{k}\" sha256=\"{ks}\"\n    disable \"traefik\" \"metrics-server\" \"servicelb\"\n    manifest \"manifests/redis.yaml\"\n}}\n{registry}",
        up = env.lab.upstream().unwrap().url(),
        k = k3s.display(),
        ks = sha256(&k3s),
    );
    for b in env.lab.boards() {
        let role = if b.role() == Role::Server { "server" } else { "agent" };
        kdl.push_str(&format!(
            "node \"{}\" address=\"{}\" role=\"{role}\" {{\n    ssh user=\"root\" identity=\"{key}\"\n}}\n",
            b.name(),
            b.address()
        ));
    }
    kdl.push_str(
        "image \"docker.io/rancher/mirrored-pause:3.6\" from=\"docker://docker.io/rvlabports/mirrored-pause:3.6\"\n\
         image \"docker.io/rancher/mirrored-coredns-coredns:1.12.3\" from=\"docker://docker.io/rvlabports/mirrored-coredns-coredns:1.12.3\"\n\
         image \"docker.io/rancher/local-path-provisioner:v0.0.31\" from=\"docker://docker.io/rvlabports/local-path-provisioner:v0.0.31\"\n\
         image \"riscv64/redis:1.1\" from=\"oci-archive:ported/redis.tar\"\n",
    );
    kdl.push_str(extra_images);
    kdl
}

fn ready(out: &Output) -> bool {
    String::from_utf8_lossy(&out.stderr).contains("every node and pod is Ready")
}

#[test]
fn external_registry_is_pushed_to_and_never_reached_over_ssh_then_air_gap_and_back() {
    let env = start();
    let reg = registry::TestRegistry::start(registry::Opts::default());
    // A tripwire: a real sshd on port 22 of the registry's address, logging every connection.
    let trip = sshd::Sshd::start_at(&reg.ip, 22, sshd::SshdOptions { extra_config: "LogLevel VERBOSE\n".into(), ..Default::default() });
    let connections = || trip.log().matches("Connection from").count();
    // The fixture's own check that sshd listens is one connection; wait until it is logged.
    let wait_for = |n: usize| {
        for _ in 0..200 {
            if connections() >= n {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    wait_for(1);
    let baseline = connections();
    let external = format!(
        "registry \"mac\" address=\"{}\" port={} external=#true {{\n    tls #false\n    mirror \"docker.io\"\n}}\n",
        reg.ip, reg.port
    );
    let with_registry = cluster_kdl(&env, &external, "");
    env.write(&with_registry);

    let out = env.rv(&["check", "cluster.kdl"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("mode       external"), "check prints the mode");
    let out = env.rv(&["plan", "cluster.kdl"]);
    assert_eq!(out.status.code(), Some(0), "every image is accounted for");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("GET http://{}:{}/v2/: ok", reg.ip, reg.port)), "{text}");
    assert!(!text.contains("host mac"), "no host plan for the registry: {text}");

    let out = env.rv(&["apply", "cluster.kdl", "--timeout", "300"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(ready(&out), "every pod Ready with images pulled from the external registry");
    assert!(String::from_utf8_lossy(&out.stderr).contains("images: 4 pushed"));
    let v = reg.skopeo_inspect("riscv64/redis", "1.1").unwrap();
    assert_eq!(v["Architecture"], "riscv64");
    for b in ["server1", "agent1"] {
        let regs = std::fs::read_to_string(env.lab.b(b).path("/etc/rancher/k3s/registries.yaml")).unwrap();
        assert!(regs.contains(&format!("\"http://{}:{}\"", reg.ip, reg.port)), "{regs}");
        assert!(env.tarballs(b).is_empty());
    }
    let lock = std::fs::read_to_string(env.dir.path().join("cluster.lock")).unwrap();
    assert!(lock.contains("repository=\"riscv64/redis\""), "{lock}");

    // Re-apply: nothing changes, nothing is sent.
    let out = env.rv(&["apply", "cluster.kdl", "--timeout", "300"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches("no changes").count(), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("images: 0 pushed, 4 already in the registry"));

    // `trust` refuses the external registry: it has no SSH side.
    let out = env.rv(&["trust", "mac", "cluster.kdl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("never connects to it over SSH"));

    // Not one SSH connection to the registry's address in all of that...
    assert_eq!(connections(), baseline, "rvcluster connected to the registry host:\n{}", trip.log());
    // ...and the tripwire does see a connection when there is one.
    let scan = std::process::Command::new("ssh-keyscan").args(["-p", "22", "-T", "10", &reg.ip]).output().unwrap();
    assert!(scan.status.success(), "{}", String::from_utf8_lossy(&scan.stderr));
    wait_for(baseline + 1);
    assert!(connections() > baseline, "the tripwire logs connections: {}", trip.log());
    std::thread::sleep(std::time::Duration::from_millis(500));
    let after_scan = connections();

    // 2. Air-gap: the registry block goes away; every image becomes a tarball on every node.
    let (s0, a0) = (env.starts("server1"), env.starts("agent1"));
    let air = cluster_kdl(&env, "", "");
    env.write(&air);
    let out = env.rv(&["check", "cluster.kdl"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("mode       none (air-gap image tarballs)"));
    let out = env.rv(&["apply", "cluster.kdl", "--timeout", "300"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(ready(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("- remove /etc/rancher/k3s/registries.yaml"), "{stdout}");
    for b in ["server1", "agent1"] {
        assert!(!env.lab.b(b).path("/etc/rancher/k3s/registries.yaml").exists(), "{b}");
        assert_eq!(env.tarballs(b).len(), 4, "{b}: {:?}", env.tarballs(b));
    }
    one_restart_each(&out);
    assert_eq!(env.starts_after((s0 + 1, a0 + 1)), (s0 + 1, a0 + 1), "k3s restarted once on each node");
    let lock = std::fs::read_to_string(env.dir.path().join("cluster.lock")).unwrap();
    assert!(lock.contains("deliver=\"tarball\""), "{lock}");

    // 3. Back to the external registry: tarballs removed, registries.yaml written, one restart.
    env.write(&with_registry);
    let out = env.rv(&["apply", "cluster.kdl", "--timeout", "300"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(ready(&out));
    for b in ["server1", "agent1"] {
        assert!(env.lab.b(b).path("/etc/rancher/k3s/registries.yaml").exists(), "{b}");
        assert!(env.tarballs(b).is_empty(), "{b}: {:?}", env.tarballs(b));
    }
    one_restart_each(&out);
    assert_eq!(env.starts_after((s0 + 2, a0 + 2)), (s0 + 2, a0 + 2), "k3s restarted once more on each node");
    assert!(String::from_utf8_lossy(&out.stderr).contains("images: 0 pushed, 4 already in the registry"));
    let out = env.rv(&["plan", "cluster.kdl", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "converged");
    // The sshd saw the keyscan only.
    assert_eq!(connections(), after_scan, "{}", trip.log());
}

#[test]
fn air_gap_cluster_gets_every_image_as_a_tarball() {
    let env = start();
    let nginx = "image \"riscv64/nginx:1.1\" from=\"oci-archive:ported/nginx.tar\"\n";
    env.write(&cluster_kdl(&env, "", nginx));

    let out = env.rv(&["check", "cluster.kdl", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["registry_mode"], "none");
    assert!(s["images"].as_array().unwrap().iter().all(|i| i["deliver"] == "tarball"), "{s}");

    let out = env.rv(&["plan", "cluster.kdl", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(3), "changes pending");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("delivered as a tarball to every node"), "the closure check counts tarballs as provided: {text}");
    assert!(text.contains("image tarballs (every node)") && text.contains("built now"), "{text}");

    let out = env.rv(&["apply", "cluster.kdl", "--timeout", "300"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(ready(&out), "every pod Ready from tarballs alone");
    let names = env.tarballs("server1");
    assert_eq!(names.len(), 5, "{names:?}");
    assert_eq!(env.tarballs("agent1"), names, "the same content-addressed names on every node");
    for n in &names {
        let bytes = std::fs::read(env.lab.b("agent1").path(&format!("{IMAGES_DIR}/{n}"))).unwrap();
        let sha = rvcluster::render::sha256_hex(&bytes);
        assert!(n.ends_with(&format!("-{}.tar", &sha[..16])), "{n} is named by its content");
    }
    // The agent runs no pod here: its import shows in its journal (k3s logs each imported image).
    let imported = || env.lab.b("agent1").journal("k3s-agent.service").contains("Imported docker.io/rancher/mirrored-pause:3.6");
    for _ in 0..150 {
        if imported() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(imported(), "{}", env.lab.b("agent1").journal("k3s-agent.service"));

    // status: each node's tarballs, each imported by k3s.
    let out = env.rv(&["status", "cluster.kdl", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["registry_mode"], "none");
    assert_eq!(st["drift"], serde_json::json!([]), "{st}");
    for b in ["server1", "agent1"] {
        let t = st["tarballs"][b]["tarballs"].as_array().unwrap_or_else(|| panic!("{st}"));
        assert_eq!(t.len(), 5);
        assert!(t.iter().all(|x| x["imported"] == true), "{b}: {t:?}");
        assert!(t.iter().any(|x| x["image"] == "docker.io/riscv64/redis:1.1"));
    }
    let out = env.rv(&["status", "cluster.kdl"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().filter(|l| l.trim_end().ends_with(" imported") && !l.contains("NOT imported")).count(), 10, "{text}");

    // Again: no upload, no restart.
    let (s0, a0) = (env.starts("server1"), env.starts("agent1"));
    let mtime = |b: &str| {
        names.iter().map(|n| std::fs::metadata(env.lab.b(b).path(&format!("{IMAGES_DIR}/{n}"))).unwrap().modified().unwrap()).collect::<Vec<_>>()
    };
    let before = mtime("agent1");
    let out = env.rv(&["apply", "cluster.kdl", "--timeout", "300"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches("no changes").count(), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cached"), "built once, then from the cache");
    assert_eq!(mtime("agent1"), before, "nothing uploaded again");

    // An image dropped from cluster.kdl: its tarball is removed, and k3s is not restarted for it.
    env.write(&cluster_kdl(&env, "", ""));
    let out = env.rv(&["apply", "cluster.kdl", "--timeout", "300"]);
    assert_eq!(out.status.code(), Some(0));
    let nginx_file = names.iter().find(|n| n.starts_with("rvcluster-nginx_1.1-")).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("- remove {IMAGES_DIR}/{nginx_file}")));
    for b in ["server1", "agent1"] {
        assert_eq!(env.tarballs(b).len(), 4, "{b}");
    }
    assert!(!String::from_utf8_lossy(&out.stdout).contains("~ restart"), "no restart asked for");
    assert_eq!(env.starts_after((s0, a0)), (s0, a0), "no restart");
}
