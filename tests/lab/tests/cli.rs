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

#[test]
fn lab_demo_brings_the_blog_cluster_to_every_pod_ready_and_tears_down() {
    // The demo finds rvcluster and k3s next to `lab` (built here when missing).
    rvlab::rvcluster_binary().unwrap();
    rvlab::k3s_sim_binary().unwrap();
    let out = Command::new(LAB).arg("demo").output().unwrap();
    // rvcluster reports progress on stderr, the lab on stdout: read both.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("server1 riscv64 openEuler 24.03"), "{text}");
    assert!(text.contains("registry \"mac\""), "{text}");
    assert!(
        text.contains("every node and pod is Ready (3 nodes"),
        "{text}"
    );
    assert!(text.contains("coredns-"), "{text}");
    let dir = text
        .lines()
        .find_map(|l| l.strip_prefix("== cluster.kdl ("))
        .unwrap()
        .trim_end_matches(')');
    let lab_dir = std::path::Path::new(dir).parent().unwrap();
    assert!(!lab_dir.exists(), "{} left behind", lab_dir.display());
}
