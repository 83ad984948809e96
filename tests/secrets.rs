//! Secrets never reach an output channel, on a real run holding all three: a registry password
//! (htpasswd registry on the registry host, an image pushed with it), the k3s token (the agent
//! joins with it) and a sudo password (non-root logins whose sudo asks for it, given with
//! --ask-become-pass). plan, apply, --json, -v/-vv, --log-format json, status, and a failing
//! apply's error output: stdout and stderr of every run are searched for each secret.

#[path = "../fixtures/images/gen.rs"]
mod images;

#[path = "support/e2e.rs"]
mod e2e;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use rvlab::{Lab, Role};

const SUDO_PW: &str = "sudo-Pa55 'w' $(x)";
const REGISTRY_PW: &str = "reg-S3cret-pw-4711";

/// rvcluster with --ask-become-pass, the sudo password on its stdin; (status, stdout+stderr).
fn rv(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rvcluster"))
        .args(["--color", "never", "--ask-become-pass"])
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(format!("{SUDO_PW}\n").as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("$ rvcluster {} -> {:?}\n{text}", args.join(" "), out.status.code());
    (out.status.code(), text)
}

#[test]
fn registry_password_token_and_sudo_password_appear_in_no_output() {
    let lab = Lab::builder()
        .board("server1", Role::Server)
        .board("agent1", Role::Agent)
        .registry_host("mac")
        .sudo_user("euler")
        .sudo_password(SUDO_PW)
        .ready_delay_ms(200)
        .start()
        .expect("lab starts (needs root, sshd, sudo, docker-registry)");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("registry.pass"), format!("{REGISTRY_PW}\n")).unwrap();
    std::fs::set_permissions(d.join("registry.pass"), std::fs::Permissions::from_mode(0o600)).unwrap();
    images::oci_archive(&d.join("work"), &d.join("img.tar"), &["riscv64"], &[images::Layer::new("s", 4096, 3)]);
    let write = |extra_config: &str| {
        let extra = format!(
            "{}image \"docker.io/rvsecret/img:1\" from=\"oci-archive:img.tar\"\n",
            e2e::lab_registry_block(&lab, "    auth user=\"rv\" password-file=\"registry.pass\"\n")
        );
        e2e::write_lab_cluster_with(&lab, d, "secrets", extra_config, &extra);
        let kdl = std::fs::read_to_string(d.join("cluster.kdl")).unwrap();
        std::fs::write(d.join("cluster.kdl"), kdl.replace("user=\"root\"", "user=\"euler\"")).unwrap();
    };
    write("");
    // sudo really wants the password on the boards.
    let mut c = lab.ssh_command_as("server1", "euler").unwrap();
    assert!(!c.arg("sudo -n true").status().unwrap().success(), "sudo -n is refused: a password is needed");
    let mut c = lab.ssh_command_as("server1", "euler").unwrap();
    let o = c.arg(format!("printf '%s\\n' {} | sudo -S -k -p '' id -u", rvcluster::transport::cmd::quote(SUDO_PW))).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "0", "sudo takes the password: {}", String::from_utf8_lossy(&o.stderr));

    let mut outputs = Vec::new();
    let mut run = |args: &[&str], want: Option<i32>| {
        let (code, text) = rv(d, args);
        assert_eq!(code, want, "{args:?}");
        outputs.push((args.join(" "), text));
    };
    run(&["-v", "plan", "cluster.kdl", "--skip-closure-check"], Some(0));
    run(&["-vv", "apply", "cluster.kdl", "--no-wait", "--skip-closure-check"], Some(0));
    write("        node-label \"zone=s\"\n");
    run(&["-vv", "plan", "cluster.kdl", "--skip-closure-check", "--json"], Some(0));
    run(&["-vv", "--log-format", "json", "apply", "cluster.kdl", "--no-wait", "--skip-closure-check", "--json"], Some(0));
    run(&["-vv", "--log-format", "json", "plan", "cluster.kdl", "--skip-closure-check", "--detailed-exitcode"], Some(0));
    run(&["-vv", "status", "cluster.kdl", "--json"], Some(0));
    // Error output: the registry is down and a new image must be pushed.
    lab.registry_host().unwrap().sh("systemctl stop rvcluster-registry.service").unwrap();
    images::oci_archive(&d.join("work2"), &d.join("img.tar"), &["riscv64"], &[images::Layer::new("s", 4096, 4)]);
    run(&["-vv", "apply", "cluster.kdl", "--no-wait", "--skip-closure-check", "--on", "server1"], Some(1));

    // The secrets were real and in use.
    let srv = lab.b("server1");
    let token = std::fs::read_to_string(srv.path("/var/lib/rancher/k3s/server/token")).unwrap().trim().to_string();
    assert!(token.len() > 20, "{token:?}");
    let agent_env = std::fs::read_to_string(lab.b("agent1").path("/etc/systemd/system/k3s-agent.service.env")).unwrap();
    assert!(agent_env.contains(&token), "the agent joined with the token");
    let regs = std::fs::read_to_string(srv.path("/etc/rancher/k3s/registries.yaml")).unwrap();
    assert!(regs.contains(REGISTRY_PW), "the nodes pull with the registry password");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(srv.path("/usr/local/bin/k3s")).unwrap().uid(), 0, "written as root through sudo with the password");
    // The generation store keeps the secret files' contents: its directories are 0700 and every
    // copy of a secret 0600, on every board.
    let mode = |p: std::path::PathBuf| std::fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777;
    for b in [srv, lab.b("agent1")] {
        assert_eq!(mode(b.path("/var/lib/rvcluster")), 0o700, "{}: state directory", b.name());
        assert_eq!(mode(b.path("/var/lib/rvcluster/store")), 0o700, "{}: store", b.name());
        let env = if b.name() == "agent1" { "/etc/systemd/system/k3s-agent.service.env" } else { "/etc/rancher/k3s/registries.yaml" };
        let sha = rvcluster::render::sha256_hex(&std::fs::read(b.path(env)).unwrap());
        assert_eq!(mode(b.path(&format!("/var/lib/rvcluster/store/{sha}"))), 0o600, "{}: the kept copy of {env}", b.name());
    }
    let token_secret = token.rsplit(':').next().unwrap().to_string();
    let (_, last) = outputs.last().unwrap();
    assert!(last.contains("error: pushing images: cannot reach registry"), "the failing run ends in an error:\n{last}");
    for (args, text) in &outputs {
        for (what, secret) in [("registry password", REGISTRY_PW), ("k3s token", token.as_str()), ("token secret", token_secret.as_str()), ("sudo password", SUDO_PW)] {
            assert!(!text.contains(secret), "`rvcluster {args}` printed the {what}:\n{text}");
        }
    }
    assert!(outputs[1].1.contains("remote command"), "-vv was on");
    assert!(outputs[3].1.lines().any(|l| l.starts_with('{') && l.contains("\"level\"")), "json log lines");
}
