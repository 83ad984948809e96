//! The `lab` command for humans: up, down, and its message without root.

use std::process::Command;

const LAB: &str = env!("CARGO_BIN_EXE_lab");

fn state_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("rvlab-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Runs `lab down` on drop, so a failing assertion does not leave the background lab running.
struct Down(std::path::PathBuf);
impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(LAB)
            .args(["down", "--state"])
            .arg(&self.0)
            .output();
    }
}

#[test]
fn lab_up_writes_cluster_kdl_and_lab_down_removes_everything() {
    let state = state_dir("up");
    let _guard = Down(state.clone());
    let out = Command::new(LAB)
        .args(["up", "--boards", "2", "--no-upstream", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("server1    server"), "{text}");
    assert!(text.contains("agent1     agent"), "{text}");
    assert!(text.contains("mac        registry"), "{text}");
    let kdl = std::fs::read_to_string(state.join("cluster.kdl")).unwrap();
    assert!(kdl.contains("node \"server1\""), "{kdl}");
    assert!(kdl.contains("registry \"mac\""), "{kdl}");
    let lab_dir = std::fs::read_to_string(state.join("lab-dir")).unwrap();
    // The printed ssh command works with strict host key checking.
    let try_line = text.lines().find(|l| l.starts_with("try:")).unwrap();
    let args: Vec<&str> = try_line
        .trim_start_matches("try:")
        .split_whitespace()
        .collect();
    let ssh = Command::new(args[0])
        .args(["-o", "BatchMode=yes"])
        .args(&args[1..])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ssh.stdout),
        "riscv64\n",
        "{}",
        String::from_utf8_lossy(&ssh.stderr)
    );
    // A second `up` on the same state dir is refused.
    let again = Command::new(LAB)
        .args(["up", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already up"));

    let down = Command::new(LAB)
        .args(["down", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(!std::path::Path::new(lab_dir.trim()).exists());
    let again = Command::new(LAB)
        .args(["down", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(!again.status.success());
    std::fs::remove_dir_all(&state).unwrap();
}

#[test]
fn without_root_lab_says_what_to_run() {
    let state = state_dir("noroot");
    // A copy that user nobody can execute wherever the target directory lives.
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let lab = state.join("lab");
    std::fs::copy(LAB, &lab).unwrap();
    std::fs::set_permissions(&lab, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(&lab)
        .args(["up", "--state"])
        .arg(state.join("state"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the lab needs root"), "{err}");
    assert!(err.contains("run as root"), "{err}");
    std::fs::remove_dir_all(&state).unwrap();
}

/// The demo's numbered step whose header starts with `start`: from its header (printed after a
/// blank line, as `\n\n== N. ...`) to the next such header or the end.
fn section<'a>(text: &'a str, start: &str) -> &'a str {
    let i = text
        .find(&format!("\n\n== {start}"))
        .unwrap_or_else(|| panic!("no step `== {start}` in:\n{text}"));
    let rest = &text[i + 2..];
    match rest.find("\n\n== ") {
        Some(j) => &rest[..j + 1],
        None => rest,
    }
}

#[test]
fn lab_demo_brings_the_blog_cluster_to_every_pod_ready_and_tears_down() {
    // The demo finds rvcluster and k3s next to `lab` (built here when missing).
    rvlab::rvcluster_binary().unwrap();
    rvlab::k3s_sim_binary().unwrap();
    let out = Command::new(LAB).arg("demo").output().unwrap();
    // The demo copies rvcluster's stdout and stderr to its own; the story is in stdout's order
    // for the lab's lines and rvcluster's stdout, so read the two streams one by one.
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let text = format!("{stdout}{stderr}");
    assert!(out.status.success(), "{text}");
    assert!(text.contains("server1 riscv64 openEuler 24.03"), "{text}");
    assert!(text.contains("registry \"mac\""), "{text}");

    // 1. The first attempt: plan names the missing images and fails, apply fails with a
    //    diagnosis per stuck pod naming where containerd looked.
    let first = section(&stdout, "1. the blog's first attempt");
    assert!(
        first.contains("    mirror \"docker.io\" {\n    }\n"),
        "no mirror rewrite yet:\n{first}"
    );
    assert!(
        !first.contains("    disable \""),
        "nothing disabled yet:\n{first}"
    );
    assert!(
        first.contains("$ rvcluster plan cluster.kdl\n")
            && first.contains("$ rvcluster apply cluster.kdl --skip-closure-check --timeout 300\n"),
        "{first}"
    );
    for missing in [
        "klipper-helm",
        "mirrored-metrics-server",
        "mirrored-coredns-coredns",
        "local-path-provisioner:v0.0.31",
    ] {
        assert!(
            first
                .lines()
                .any(|l| l.starts_with("  MISSING") && l.contains(missing)),
            "{missing} reported MISSING by plan:\n{first}"
        );
    }
    assert_eq!(
        first.matches("-> exit 1 ").count(),
        2,
        "plan and apply both exit 1:\n{first}"
    );
    let mac = text
        .lines()
        .find_map(|l| l.strip_prefix("mac        registry  "))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    for pod in [
        "helm-install-traefik-",
        "helm-install-traefik-crd-",
        "local-path-provisioner-",
        "metrics-server-",
        "coredns-",
    ] {
        assert!(
            stderr.lines().any(|l| l.starts_with("pod kube-system/")
                && l.contains(pod)
                && (l.contains("ImagePullBackOff") || l.contains("ErrImagePull"))
                && l.contains("no match for platform in manifest")),
            "{pod} diagnosed as an image pull failure:\n{stderr}"
        );
    }
    assert!(
        stderr.contains(&format!("tried {mac}:5000/rancher/klipper-helm")),
        "the diagnosis names the mirror endpoint containerd tried:\n{stderr}"
    );

    // 2. The final cluster: every pod Ready, pods listed from the server.
    let last = section(&stdout, "2. the blog's final cluster");
    assert!(
        last.contains("        rewrite \"^rancher/(.*)\" \"riscv64/$1\"\n"),
        "{last}"
    );
    assert!(
        last.contains("    disable \"local-storage\" \"coredns\"\n"),
        "{last}"
    );
    assert!(
        last.contains("    manifest \"manifests/custom-local-storage.yaml\"\n"),
        "{last}"
    );
    assert!(
        last.contains("image \"riscv64/busybox:1\" from=\"docker://docker.io/riscv64/busybox:1\""),
        "{last}"
    );
    assert!(
        text.contains("every node and pod is Ready (3 nodes"),
        "{text}"
    );
    assert!(last.contains("default       redis-"), "{last}");
    assert!(last.contains("traefik-"), "{last}");
    assert!(!last.contains("coredns-"), "coredns disabled:\n{last}");

    // 3. Again: every host says "no changes", the plan is empty.
    let again = section(&stdout, "3. apply again");
    let (apply, plan) = again
        .split_once("-- and the plan is empty")
        .unwrap_or_else(|| panic!("no plan after the repeated apply:\n{again}"));
    assert_eq!(apply.matches("\n  no changes\n").count(), 4, "{again}");
    assert!(plan.contains("total to send: 0 B"), "{plan}");
    assert!(
        stderr.contains("4 hosts, 0 changes made, 0 failed"),
        "{stderr}"
    );
    assert!(
        again.contains("$ rvcluster plan cluster.kdl --detailed-exitcode\n"),
        "{again}"
    );
    assert!(!again.contains("-> exit 1 "), "{again}");

    // 4. Re-flash: refused, trusted on purpose, rejoined, every pod Ready again.
    let reflash = section(&stdout, "4. re-flash agent1");
    assert!(
        reflash.contains("HOST KEY HAS CHANGED"),
        "apply refuses the new key:\n{reflash}"
    );
    assert!(
        reflash.contains("$ rvcluster trust agent1 cluster.kdl --replace\nagent1 ("),
        "{reflash}"
    );
    assert!(reflash.contains(": replaced SHA256:"), "{reflash}");
    assert!(
        reflash.contains("delete node agent1 and its node-password secret"),
        "the re-flashed agent rejoins as a new node:\n{reflash}"
    );
    let agent1 = reflash
        .lines()
        .find(|l| l.starts_with("agent1 ") && l.contains("v1.33.4+k3s1"))
        .unwrap_or_else(|| panic!("agent1 in kubectl get nodes:\n{reflash}"));
    assert!(agent1.contains(" Ready "), "{agent1}");
    assert!(
        stderr
            .matches("every node and pod is Ready (3 nodes")
            .count()
            >= 3,
        "Ready after the final apply, the repeat and the rejoin:\n{stderr}"
    );
    // 5. A bad change rolled back by the health gate; the generations show it; Ready again.
    let bad = section(&stdout, "5. a bad change");
    assert!(bad.contains("config { bind-address \"10.99.99.99\" }"), "{bad}");
    assert!(
        bad.contains("-> exit 1 ") && stderr.contains("rolled back to generation"),
        "the gate rolled server1 back:\n{bad}\n{stderr}"
    );
    assert!(bad.contains("rollback to "), "generations lists the rollback:\n{bad}");
    assert!(
        stderr
            .matches("every node and pod is Ready (3 nodes")
            .count()
            >= 4,
        "Ready again after the rollback:\n{stderr}"
    );
    assert!(
        text.contains("== the whole story behaved as expected"),
        "{text}"
    );

    let dir = text
        .lines()
        .find_map(|l| l.strip_prefix("== cluster.kdl ("))
        .unwrap()
        .trim_end_matches(')');
    let lab_dir = std::path::Path::new(dir).parent().unwrap();
    assert!(!lab_dir.exists(), "{} left behind", lab_dir.display());
}
