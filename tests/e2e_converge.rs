//! Converge end to end on the emulated board lab (real sshd boards, the simulated k3s): a fresh
//! three-board cluster converges, a second apply changes nothing (same inodes and mtimes, no
//! restart), plan is then empty, and a re-flashed agent is refused until trusted, then rejoins.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use rvlab::{Lab, Role};

#[path = "support/e2e.rs"]
mod e2e;

/// The simulated k3s binary (built by `cargo build --workspace` / nextest as k3s-sim's `k3s`).
/// The simulated k3s binary, built on demand by the lab (also under `cargo test -p rvcluster`).
fn k3s_binary() -> PathBuf {
    rvlab::k3s_sim_binary().expect("the simulated k3s binary")
}

use e2e::sha256;

struct Env {
    lab: Lab,
    dir: tempfile::TempDir,
}

impl Env {
    fn rv(&self, args: &[&str]) -> Output {
        e2e::rv(self.dir.path(), args)
    }
}

fn write_cluster(lab: &Lab, dir: &Path) {
    let k3s = k3s_binary();
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/e2e/manifests/hello.yaml"),
        dir.join("manifests/hello.yaml"),
    )
    .unwrap();
    let mut kdl = format!(
        "cluster \"e2e\"\nk3s version=\"v1.33.4+k3s1\" {{\n    binary \"{}\" sha256=\"{}\"\n    disable \"traefik\" \"metrics-server\"\n    manifest \"manifests/hello.yaml\"\n}}\n",
        k3s.display(),
        sha256(&k3s)
    );
    if let Some(up) = lab.upstream() {
        kdl.push_str(&format!("upstream \"docker.io\" endpoint=\"{}\"\n", up.url()));
    }
    let mut known = String::new();
    for b in lab.boards() {
        let role = if b.role() == Role::Server { "server" } else { "agent" };
        kdl.push_str(&format!(
            "node \"{}\" address=\"{}\" role=\"{role}\" {{\n    ssh user=\"root\" identity=\"{}\"\n}}\n",
            b.name(),
            b.address(),
            lab.client_key().display()
        ));
        known.push_str(&b.known_hosts_line());
        known.push('\n');
    }
    std::fs::write(dir.join("cluster.kdl"), kdl).unwrap();
    std::fs::write(dir.join("known_hosts"), known).unwrap();
}

fn start() -> Env {
    let lab = Lab::builder()
        .board("server1", Role::Server)
        .board("agent1", Role::Agent)
        .board("agent2", Role::Agent)
        .upstream(true)
        .ready_delay_ms(300)
        .start()
        .expect("lab starts (needs root, sshd, docker-registry)");
    k3s_sim::upstream::seed(&lab.upstream().unwrap().url()).expect("seed the upstream registry");
    let dir = tempfile::tempdir().unwrap();
    write_cluster(&lab, dir.path());
    Env { lab, dir }
}

/// (inode, mtime) of every managed file on a board.
fn stamps(lab: &Lab, board: &str, paths: &[&str]) -> Vec<(String, u64, i64)> {
    let b = lab.board(board).unwrap();
    paths
        .iter()
        .map(|p| {
            let m = std::fs::metadata(b.path(p)).unwrap_or_else(|e| panic!("{board}:{p}: {e}"));
            (p.to_string(), m.ino(), m.mtime_nsec() + m.mtime() * 1_000_000_000)
        })
        .collect()
}

fn nodes_ready(env: &Env) -> usize {
    for _ in 0..120 {
        let out = env.lab.ssh("server1", "k3s kubectl get nodes -o json").unwrap();
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            let ready = v["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| {
                    n["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
                .count();
            if ready == 3 {
                return ready;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    0
}

const SERVER_FILES: &[&str] = &[
    "/usr/local/bin/k3s",
    "/etc/systemd/system/k3s.service",
    "/etc/systemd/system/k3s.service.env",
    "/etc/rancher/k3s/config.yaml",
    "/var/lib/rancher/k3s/server/manifests/hello.yaml",
];
const AGENT_FILES: &[&str] = &[
    "/usr/local/bin/k3s",
    "/etc/systemd/system/k3s-agent.service",
    "/etc/systemd/system/k3s-agent.service.env",
    "/etc/rancher/k3s/config.yaml",
];

#[test]
fn fresh_cluster_converges_then_reapply_is_a_noop_and_a_reflashed_agent_rejoins() {
    let mut env = start();

    // Plan on fresh boards: changes pending, nothing written.
    let out = env.rv(&["plan", "cluster.kdl", "--detailed-exitcode", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(3), "changes pending");
    assert!(!env.lab.board("server1").unwrap().path("/usr/local/bin/k3s").exists(), "plan wrote nothing");

    let out = env.rv(&["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(nodes_ready(&env), 3, "both agents joined the server");

    // What k3s reads is what k3s documents.
    let server = env.lab.board("server1").unwrap();
    let sip = server.address().to_string();
    let config = std::fs::read_to_string(server.path("/etc/rancher/k3s/config.yaml")).unwrap();
    assert_eq!(
        config,
        format!(
            "\"node-name\": \"server1\"\n\"node-ip\": \"{sip}\"\n\"tls-san\":\n  - \"{sip}\"\n\"disable\":\n  - \"traefik\"\n  - \"metrics-server\"\n"
        )
    );
    let agent = env.lab.board("agent1").unwrap();
    let env_file = agent.path("/etc/systemd/system/k3s-agent.service.env");
    let text = std::fs::read_to_string(&env_file).unwrap();
    assert!(text.contains(&format!("K3S_URL=https://{sip}:6443\n")), "{text}");
    let token = std::fs::read_to_string(server.path("/var/lib/rancher/k3s/server/token")).unwrap();
    assert!(text.contains(&format!("K3S_TOKEN={}\n", token.trim())));
    assert_eq!(std::fs::metadata(&env_file).unwrap().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(agent.path("/usr/local/bin/k3s")).unwrap().mode() & 0o777, 0o755);
    assert_eq!(std::fs::read_link(agent.path("/usr/local/bin/kubectl")).unwrap(), Path::new("/usr/local/bin/k3s"));

    // A second apply writes nothing and restarts nothing.
    let before_s = stamps(&env.lab, "server1", SERVER_FILES);
    let before_a = stamps(&env.lab, "agent1", AGENT_FILES);
    let starts_s = server.service_starts("k3s.service").len();
    let starts_a = agent.service_starts("k3s-agent.service").len();
    assert!(starts_s >= 1 && starts_a >= 1);
    let out = env.rv(&["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("no changes").count(), 3, "{stdout}");
    assert_eq!(stamps(&env.lab, "server1", SERVER_FILES), before_s, "server files untouched");
    assert_eq!(stamps(&env.lab, "agent1", AGENT_FILES), before_a, "agent files untouched");
    assert_eq!(env.lab.board("server1").unwrap().service_starts("k3s.service").len(), starts_s, "no restart");
    assert_eq!(env.lab.board("agent1").unwrap().service_starts("k3s-agent.service").len(), starts_a, "no restart");
    let out = env.rv(&["plan", "cluster.kdl", "--detailed-exitcode", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0), "plan is empty after apply");

    // status: three Ready nodes with their k3s version, and no drift.
    let out = env.rv(&["status", "cluster.kdl", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = st["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert!(nodes.iter().all(|n| n["ready"] == true && n["kubelet_version"] == "v1.33.4+k3s1"), "{st}");
    assert_eq!(st["drift"], serde_json::json!([]), "no drift after apply");
    let out = env.rv(&["status", "cluster.kdl"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("drift none: a plan would change nothing"));

    // kubeconfig: the server's k3s.yaml, its address and the cluster's name, merged at 0600.
    let out = env.rv(&["kubeconfig", "cluster.kdl"]);
    assert_eq!(out.status.code(), Some(0));
    let kc = String::from_utf8_lossy(&out.stdout);
    assert!(kc.contains(&format!("https://{sip}:6443")), "{kc}");
    assert!(kc.contains("current-context: e2e"), "{kc}");
    let out = env.rv(&["kubeconfig", "cluster.kdl", "--merge"]);
    assert_eq!(out.status.code(), Some(0));
    let merged = env.dir.path().join(".kube/config");
    assert_eq!(std::fs::metadata(&merged).unwrap().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(&merged).unwrap().contains(&format!("https://{sip}:6443")));

    // Two applies never interleave on a board: a held lock stops the second with a clear message.
    // The lock is a flock held by the other apply's command for as long as it runs.
    let agent2 = env.lab.board("agent2").unwrap();
    std::fs::write(agent2.path("/var/lib/rvcluster/apply.owner"), "rvcluster apply by someone, pid 4242\n").unwrap();
    let mut holder = agent2
        .command_inside("exec flock /var/lib/rvcluster/apply.lock sh -c 'echo held; read x'")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "held");
    let out = env.rv(&["apply", "cluster.kdl", "--no-wait", "--skip-closure-check", "--on", "agent2"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("another rvcluster apply holds the lock") && text.contains("4242"), "{text}");
    drop(holder.stdin.take()); // the holder's `read` ends: its lock goes with it
    let _ = holder.wait();

    // A manifest dropped from cluster.kdl is removed from the server (k3s keeps its objects), and
    // since k3s watches that directory, nothing restarts.
    let kdl = std::fs::read_to_string(env.dir.path().join("cluster.kdl")).unwrap();
    std::fs::write(env.dir.path().join("cluster.kdl"), kdl.replace("    manifest \"manifests/hello.yaml\"\n", "")).unwrap();
    let out = env.rv(&["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("- remove /var/lib/rancher/k3s/server/manifests/hello.yaml"));
    assert!(!env.lab.board("server1").unwrap().path("/var/lib/rancher/k3s/server/manifests/hello.yaml").exists());
    assert_eq!(env.lab.board("server1").unwrap().service_starts("k3s.service").len(), starts_s, "no restart for a manifest");
    std::fs::write(env.dir.path().join("cluster.kdl"), &kdl).unwrap();
    let out = env.rv(&["apply", "cluster.kdl", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(0));
    let before_s = stamps(&env.lab, "server1", SERVER_FILES);

    // cluster.lock pins the k3s binary: a different binary is refused by --locked, nothing touched.
    let lock = std::fs::read_to_string(env.dir.path().join("cluster.lock")).unwrap();
    let k3s = k3s_binary();
    assert!(lock.contains(&format!("sha256=\"{}\"", sha256(&k3s))), "{lock}");
    let other = env.dir.path().join("k3s-other");
    let mut bytes = std::fs::read(&k3s).unwrap();
    bytes.extend_from_slice(b"\n");
    std::fs::write(&other, &bytes).unwrap();
    let kdl = std::fs::read_to_string(env.dir.path().join("cluster.kdl")).unwrap();
    let changed = kdl
        .replace(&k3s.display().to_string(), &other.display().to_string())
        .replace(&sha256(&k3s), &sha256(&other));
    std::fs::write(env.dir.path().join("cluster.kdl"), &changed).unwrap();
    let out = env.rv(&["apply", "cluster.kdl", "--locked", "--no-wait", "--skip-closure-check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("k3s: locked v1.33.4+k3s1"), "names what moved");
    assert_eq!(stamps(&env.lab, "server1", SERVER_FILES), before_s, "--locked refused before touching anything");
    std::fs::write(env.dir.path().join("cluster.kdl"), &kdl).unwrap();

    // The binary is what cluster.kdl pins, but it is not the release cluster.kdl names.
    std::fs::write(env.dir.path().join("cluster.kdl"), kdl.replace("v1.33.4+k3s1", "v1.34.3+k3s1")).unwrap();
    let out = env.rv(&["plan", "cluster.kdl", "--skip-closure-check", "--on", "server1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("reports `k3s version v1.33.4+k3s1"), "version mismatch named");
    std::fs::write(env.dir.path().join("cluster.kdl"), &kdl).unwrap();

    // Re-flash agent1: new host key, empty state. apply stops on the changed key.
    env.lab.reflash("agent1").unwrap();
    let out = env.rv(&["apply", "cluster.kdl", "--no-wait", "--skip-closure-check", "--on", "agent1"]);
    assert_eq!(out.status.code(), Some(1));
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(all.contains("SHA256:"), "fingerprint shown: {all}");
    assert!(all.contains("rvcluster trust agent1 --replace"), "the command that accepts it: {all}");
    assert!(!env.lab.board("agent1").unwrap().path("/usr/local/bin/k3s").exists(), "nothing written");

    let out = env.rv(&["trust", "agent1", "cluster.kdl", "--replace"]);
    assert_eq!(out.status.code(), Some(0));
    let out = env.rv(&["apply", "cluster.kdl", "--no-wait", "--skip-closure-check", "--on", "agent1"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "agent journal:\n{}\nserver journal:\n{}",
        env.lab.board("agent1").unwrap().journal("k3s-agent.service"),
        env.lab.board("server1").unwrap().journal("k3s.service")
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("delete node agent1"), "old node forgotten on the server");
    assert_eq!(nodes_ready(&env), 3, "the re-flashed agent rejoined");
    let _ = &mut env;
}
