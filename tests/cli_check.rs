//! `rvcluster check` on the blog fixture, and the CLI conventions (exit codes, completions, man page).

use std::path::Path;

use assert_cmd::Command;

fn rv() -> Command {
    let mut c = Command::cargo_bin("rvcluster").unwrap();
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

#[test]
fn blog_lab_passes_check_with_the_blog_facts() {
    let out = rv().args(["check", "fixtures/blog-lab.kdl", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cluster"], "blog-lab");
    assert_eq!(v["registry"]["endpoint"], "http://192.168.173.76:6000");
    assert_eq!(v["k3s"]["disable"], serde_json::json!(["local-storage", "coredns"]));
    assert_eq!(v["nodes"][0]["name"], "openeuler-riscv64");
    assert_eq!(v["nodes"][0]["role"], "server");
    let images: Vec<&str> = v["images"].as_array().unwrap().iter().map(|i| i["reference"].as_str().unwrap()).collect();
    for want in ["docker.io/riscv64/redis:1.1", "docker.io/riscv64/nginx:1.1", "docker.io/rancher/local-path-provisioner:v0.0.31"] {
        assert!(images.contains(&want), "{want} in {images:?}");
    }
    let pulled: Vec<&str> =
        v["release_images"].as_array().unwrap().iter().map(|i| i["image"].as_str().unwrap()).collect();
    assert!(pulled.contains(&"docker.io/rancher/mirrored-pause:3.6"));
    assert!(!pulled.iter().any(|i| i.contains("coredns") || i.contains("local-path")), "disabled addons: {pulled:?}");
}

#[test]
fn text_summary_names_roles_and_release() {
    let out = rv().args(["--color", "never", "check", "fixtures/blog-lab.kdl"]).output().unwrap();
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("servers (1)") && s.contains("agents (0)"), "{s}");
    assert!(s.contains("k3s v1.34.3+k3s1"), "{s}");
    assert!(!s.contains('\u{1b}'), "no colour codes with --color never");
}

#[test]
fn on_filter_selects_and_rejects_unknown_names() {
    let out = rv().args(["check", "fixtures/blog-lab.kdl", "--json", "--on", "@lpi4a"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["nodes"].as_array().unwrap().len(), 1);
    let out = rv().args(["check", "fixtures/blog-lab.kdl", "--on", "nosuch"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch matched no node"));
}

#[test]
fn missing_file_and_bad_flags_are_status_2() {
    let out = rv().args(["check", "does-not-exist.kdl"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does-not-exist.kdl"));
    assert_eq!(rv().args(["check", "--bogus"]).output().unwrap().status.code(), Some(2));
}

#[test]
fn completions_and_man_page() {
    let out = rv().args(["completions", "bash"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("rvcluster"));
    let out = rv().arg("man").output().unwrap();
    let man = String::from_utf8_lossy(&out.stdout);
    assert!(man.contains(".TH rvcluster"), "{man}");
}

#[test]
fn no_color_env_is_honoured() {
    let f = Path::new("fixtures/invalid/07-invalid-role.kdl");
    let out = rv().env("NO_COLOR", "1").arg("check").arg(f).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains('\u{1b}'));
    let out = rv().args(["--color", "always", "check"]).arg(f).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains('\u{1b}'), "colour when forced");
}

#[test]
fn apply_timeout_takes_durations_as_kubectl_does() {
    // An accepted value gets past the flags to the cluster file (rejected here: status 2, no flag error).
    for t in ["90", "90s", "5m", "1h30m", "1.5h"] {
        let out = rv().args(["apply", "fixtures/invalid/07-invalid-role.kdl", "--timeout", t]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr.contains("not a valid cluster description") && !stderr.contains("--timeout"), "{t}: {stderr}");
    }
    for t in ["5x", "60 s", "-1m", "m", "1.5"] {
        let out = rv().args(["apply", "fixtures/invalid/07-invalid-role.kdl", &format!("--timeout={t}")]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{t}");
        assert!(stderr.contains("--timeout") && stderr.contains(&format!("`{t}` is not a duration")), "{t}: {stderr}");
        assert!(stderr.contains("90 (seconds), 90s, 5m or 1h30m"), "says what is accepted: {stderr}");
        assert!(!stderr.contains("not a valid cluster description"), "the file is not read: {stderr}");
    }
}
