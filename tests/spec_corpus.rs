//! The corpus of invalid cluster files: each must give exactly the errors written beside it, and
//! the command line must reject each with exit status 2, naming file:line:col.

use std::path::{Path, PathBuf};

use rvcluster::profile::Profiles;

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/invalid");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "kdl"))
        .collect();
    v.sort();
    v
}

#[test]
fn corpus_has_at_least_thirty_files() {
    assert!(corpus().len() >= 30, "only {} invalid fixtures", corpus().len());
}

#[test]
fn every_invalid_file_gives_exactly_its_expected_errors() {
    let profiles = Profiles::builtin();
    let mut failures = Vec::new();
    for f in corpus() {
        let expected = std::fs::read_to_string(f.with_extension("expected"))
            .unwrap_or_else(|_| panic!("{} has no .expected file", f.display()));
        let expected: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
        let got = match rvcluster::spec::load(&f, &profiles) {
            Ok(_) => vec!["<accepted>".to_string()],
            Err(e) => {
                let prefix = format!("{}:", f.display());
                e.lines().iter().map(|l| l.strip_prefix(&prefix).unwrap_or(l).to_string()).collect()
            }
        };
        if got != expected {
            failures.push(format!("{}:\n  expected {expected:#?}\n  got      {got:#?}", f.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn cli_rejects_each_with_status_2_and_a_location() {
    for f in corpus() {
        let out = assert_cmd::Command::cargo_bin("rvcluster")
            .unwrap()
            .args(["--color", "never", "check"])
            .arg(&f)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", f.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = std::fs::read_to_string(f.with_extension("expected")).unwrap();
        let (line, col) = {
            let mut it = first.lines().next().unwrap().split(':');
            (it.next().unwrap().to_string(), it.next().unwrap().to_string())
        };
        let name = f.file_name().unwrap().to_string_lossy();
        assert!(
            stderr.contains(&format!("{name}:{line}:{col}")),
            "{name}: stderr does not name {line}:{col}:\n{stderr}"
        );
        assert!(out.stdout.is_empty(), "{name}: nothing on stdout for a rejected file");
    }
}

#[test]
fn secrets_never_echoed_in_errors() {
    for (file, secret) in [
        ("26-inline-registry-password.kdl", "hunter2"),
        ("28-inline-token-config.kdl", "K10abc::server:secret"),
        ("40-ssh-password.kdl", "=\"x\""),
    ] {
        let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/invalid").join(file);
        assert!(std::fs::read_to_string(&f).unwrap().contains(secret), "fixture {file} holds the secret");
        let out = assert_cmd::Command::cargo_bin("rvcluster").unwrap().arg("check").arg(&f).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains(secret), "{file}: secret shown in the error:\n{stderr}");
        assert!(stderr.contains("***"), "{file}: the secret's place is masked:\n{stderr}");
    }
}

/// What `check` rejects by reading local files (a binary whose sha256 is not the one written, an
/// image archive without linux/riscv64) stops plan and apply the same way, before any host is
/// contacted, and the closure check never calls such an image provided.
#[test]
fn plan_and_apply_reject_local_input_errors_before_any_host() {
    for (file, says) in [
        ("41-sha256-mismatch.kdl", &["has sha256", "bf4e2dbaf8165b58064967a0bd45da6f17302b2e240cf4496e80229c9173409f"][..]),
        ("42-image-no-riscv64.kdl", &["no linux/riscv64 image", "linux/amd64", "linux/arm64"]),
    ] {
        let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/invalid").join(file);
        let line_col = std::fs::read_to_string(f.with_extension("expected")).unwrap();
        let line_col: Vec<&str> = line_col.split(':').take(2).collect();
        for cmd in ["check", "plan", "apply"] {
            let out = assert_cmd::Command::cargo_bin("rvcluster")
                .unwrap()
                .args(["--color", "never", cmd])
                .arg(&f)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd} {file}:\n{stderr}");
            assert!(stderr.contains(&format!("{file}:{}:{}", line_col[0], line_col[1])), "{cmd} {file}:\n{stderr}");
            assert!(says.iter().all(|w| stderr.contains(w)), "{cmd} {file} says {says:?}:\n{stderr}");
            assert!(out.stdout.is_empty(), "{cmd} {file}: no plan, no closure report:\n{}", String::from_utf8_lossy(&out.stdout));
            assert!(!stderr.contains("provided by cluster.kdl"), "{stderr}");
        }
    }
}

/// Hostile names, addresses, labels, tags, users and URLs are refused one by one, each saying
/// what is allowed there (the help line under the located error).
#[test]
fn hostile_values_are_refused_saying_what_is_allowed() {
    for (file, problems, allowed) in [
        ("44-hostile-node-names.kdl", 4, "lowercase letters, digits, `-` and `.`, at most 63 characters"),
        ("45-hostile-addresses.kdl", 4, "an IPv4 or IPv6 address, or a host name: ASCII letters, digits and `-`"),
        ("46-hostile-labels.kdl", 7, "Kubernetes label syntax"),
        ("47-hostile-tags.kdl", 5, "a tag is ASCII letters, digits, `.`, `_` and `-`"),
        ("48-hostile-ssh.kdl", 4, "a user name is ASCII letters, digits, `.`, `_` and `-`"),
        ("49-hostile-registry.kdl", 7, "a registry user is printable ASCII without spaces or `:`"),
    ] {
        let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/invalid").join(file);
        let out = assert_cmd::Command::cargo_bin("rvcluster").unwrap().args(["--color", "never", "check"]).arg(&f).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        // miette wraps long lines: compare with runs of whitespace (and the margin) collapsed.
        let flat = stderr.split_whitespace().filter(|w| *w != "|" && *w != "│").collect::<Vec<_>>().join(" ");
        assert!(flat.contains(&format!("({problems} problems)")), "{file}:\n{stderr}");
        assert!(flat.contains(&format!("help: {allowed}")), "{file} says what is allowed ({allowed}):\n{stderr}");
        assert!(!stderr.contains("rm -rf") || file == "45-hostile-addresses.kdl", "{stderr}");
    }
}
