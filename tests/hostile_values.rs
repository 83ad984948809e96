//! Hostile values (spaces, quotes, `$()`, backticks, newlines, globs, non-ASCII) through every
//! builder of remote commands and of the files rvcluster writes, run for real: each command goes
//! through `sh -c` on this machine (with `sudo` and `timeout` where the wrapper uses them), in an
//! empty directory, with harmless payloads. The value must arrive intact, byte for byte, and
//! nothing it contains may run: the fragments include `touch pwned` in every form of command
//! substitution and separator, and the directory must not hold a `pwned` file afterwards.
//!
//! Builders whose program is fixed (`k3s kubectl ...`) are run with that program replaced by
//! `printf '%s\0'`, or by a stand-in at a hostile path that prints its argv, so the test sees the
//! exact argv the shell would hand it. Not run here: converge's held session command (it takes
//! the lock under /var/lib/rvcluster of the machine it runs on); its words go through `quote`
//! and its facts part is `facts::script`, both driven below.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use proptest::prelude::*;
use rvcluster::transport::Become;
use rvcluster::transport::cmd;

/// Pieces that break naive quoting, or run something when they do.
const FRAGMENTS: &[&str] = &[
    " ", "'", "\"", "\\", "$(touch pwned)", "`touch pwned`", "; touch pwned", "&& touch pwned", "| touch pwned",
    "\n touch pwned\n", "$HOME", "${IFS}", "*", "?", "[a]", "~", "!", "#", "%s", "%n", "\t", "-", "--x", "é", "日本",
    "\u{202e}", "'\\''", "\"$(touch pwned)\"", ">pwned", "<x", "{a,b}", "=", ":", "@", "abc", "Z9",
];

fn hostile() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 1..8).prop_map(|v| v.concat())
}

/// A hostile file name: as above, without `/` (which only makes directories) and never `.`/`..`.
fn hostile_name() -> impl Strategy<Value = String> {
    hostile().prop_map(|s| format!("f{s}"))
}

struct Run {
    stdout: Vec<u8>,
    stderr: String,
    ok: bool,
}

/// `sh -c CMD` in `dir` with `stdin`.
fn sh(dir: &Path, command: &str, stdin: &[u8]) -> Run {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command may exit without reading stdin (that is fine).
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    Run { stdout: out.stdout, stderr: String::from_utf8_lossy(&out.stderr).into(), ok: out.status.success() }
}

/// Nothing ran: the work directory holds only what the test put there.
fn nothing_ran(dir: &Path, expected: &[&Path]) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        assert!(expected.iter().any(|x| p == *x || x.starts_with(&p)), "unexpected {:?} in the work directory", p);
    }
    assert!(!dir.join("pwned").exists());
}

fn work() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// The argv a command built for `prefix ...` would get: `prefix` replaced by a NUL-separated printer.
fn argv_of(command: &str, prefix: &str, dir: &Path) -> Vec<String> {
    let rest = command.strip_prefix(prefix).unwrap_or_else(|| panic!("{command} starts with {prefix}"));
    let r = sh(dir, &format!("printf '%s\\0' {rest}"), b"");
    assert!(r.ok, "{}", r.stderr);
    let mut v: Vec<String> = String::from_utf8(r.stdout).unwrap().split('\0').map(str::to_string).collect();
    v.pop();
    v
}

fn sha256_hex(b: &[u8]) -> String {
    rvcluster::render::sha256_hex(b)
}

/// KDL v2 string literal for any text.
fn kdl_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}') => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// `quote` and `join`: one word each, whatever it holds.
    #[test]
    fn quoted_words_arrive_intact(a in hostile(), b in hostile()) {
        let dir = work();
        let r = sh(dir.path(), &format!("printf %s {}", cmd::quote(&a)), b"");
        prop_assert!(r.ok, "{}", r.stderr);
        prop_assert_eq!(String::from_utf8(r.stdout).unwrap(), a.clone());
        let r = sh(dir.path(), &cmd::join(&["printf", "%s\\0", &a, &b]), b"");
        prop_assert_eq!(String::from_utf8(r.stdout).unwrap(), format!("{a}\0{b}\0"));
        nothing_ran(dir.path(), &[]);
    }

    /// The wrappers every remote command goes through: the host-side timeout, `sudo -n`, and the
    /// `sudo -S` password wrapper (stdin: the marker line sudo would leave after the password).
    #[test]
    fn wrapped_commands_keep_their_words(a in hostile()) {
        let dir = work();
        let inner = format!("printf %s {}", cmd::quote(&a));
        let r = sh(dir.path(), &cmd::with_host_timeout(&inner, std::time::Duration::from_secs(30)), b"");
        prop_assert!(r.ok, "{}", r.stderr);
        prop_assert_eq!(String::from_utf8(r.stdout).unwrap(), a.clone());
        if is_root() {
            let r = sh(dir.path(), &cmd::with_become(&Become::Sudo, &inner), b"");
            prop_assert!(r.ok, "sudo -n as root: {}", r.stderr);
            prop_assert_eq!(String::from_utf8(r.stdout).unwrap(), a.clone());
            let r = sh(dir.path(), &cmd::with_sudo_password(&inner), format!("{}\n", cmd::BECOME_MARK).as_bytes());
            prop_assert!(r.ok, "sudo -S as root: {}", r.stderr);
            prop_assert_eq!(String::from_utf8(r.stdout).unwrap(), a.clone());
        }
        nothing_ran(dir.path(), &[]);
    }

    /// The atomic upload to a hostile path, the presence check, and the facts script reading it
    /// back: the bytes land at exactly that path, mode set, no temp file left, nothing run.
    #[test]
    fn uploads_and_facts_use_the_exact_path(d in hostile_name(), f in hostile_name(), payload in prop::collection::vec(any::<u8>(), 0..64)) {
        let dir = work();
        let sub: PathBuf = dir.path().join(&d);
        let dest = sub.join(&f);
        let dest_s = dest.to_str().unwrap().to_string();
        let sha = sha256_hex(&payload);
        let tmp = cmd::temp_path_for(&dest_s, "42");
        let r = sh(dir.path(), &cmd::upload_stream(&dest_s, &tmp, &sha, 0o640, None), &payload);
        prop_assert!(r.ok, "upload: {}", r.stderr);
        prop_assert_eq!(std::fs::read(&dest).unwrap(), payload.clone());
        use std::os::unix::fs::PermissionsExt;
        prop_assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o640);
        let present = sh(dir.path(), &cmd::upload_check(&dest_s, &sha, 0o640, None), b"");
        prop_assert_eq!(String::from_utf8(present.stdout).unwrap().trim().to_string(), "present");
        let absent = sh(dir.path(), &cmd::upload_check(&dest_s, &sha256_hex(b"other"), 0o640, None), b"");
        prop_assert_eq!(String::from_utf8(absent.stdout).unwrap().trim().to_string(), "absent");
        // A wrong digest: refused, the old file kept, the temp file removed.
        let r = sh(dir.path(), &cmd::upload_stream(&dest_s, &tmp, &sha256_hex(b"other"), 0o640, None), b"not it");
        prop_assert!(!r.ok);
        prop_assert_eq!(std::fs::read(&dest).unwrap(), payload.clone());
        prop_assert!(!Path::new(&tmp).exists());

        let missing = sub.join(format!("{f}.missing"));
        let q = rvcluster::transport::FactsQuery {
            paths: vec![dest_s.clone(), missing.to_str().unwrap().to_string()],
            k3s_binary: sub.join(format!("{f}.k3s")).to_str().unwrap().to_string(),
            ..Default::default()
        };
        let r = sh(dir.path(), &rvcluster::transport::facts::script(&q), b"");
        prop_assert!(r.ok, "facts: {}", r.stderr);
        let facts = rvcluster::transport::facts::parse(&q, &String::from_utf8_lossy(&r.stdout)).unwrap();
        match &facts.files[&dest_s] {
            rvcluster::transport::FileFact::Present { sha256, mode, .. } => {
                prop_assert_eq!(sha256.as_deref(), Some(sha.as_str()));
                prop_assert_eq!(*mode, 0o640);
            }
            other => prop_assert!(false, "{:?}", other),
        }
        prop_assert_eq!(&facts.files[missing.to_str().unwrap()], &rvcluster::transport::FileFact::Absent);
        prop_assert_eq!(facts.k3s_version, None);
        nothing_ran(dir.path(), &[&sub]);
    }

    /// `k3s kubectl logs` for names read back from the cluster: each name is one argv word.
    #[test]
    fn kubectl_logs_words(ns in hostile(), pod in hostile(), container in hostile()) {
        let dir = work();
        let c = rvcluster::verify::kubectl_command("/usr/local/bin/k3s", &rvcluster::verify::logs_args(&ns, &pod, &container, 5, true));
        let argv = argv_of(&c, "/usr/local/bin/k3s", dir.path());
        prop_assert_eq!(argv, ["kubectl", "-n", &ns, "logs", &pod, "-c", &container, "--tail", "5", "--previous"]);
        nothing_ran(dir.path(), &[]);
    }

    /// The server-side commands that forget a re-flashed agent, with the k3s binary itself at a
    /// hostile path: a stand-in `k3s` there prints the argv it gets (and fails, so the probe's
    /// `||` runs its second half; succeeds for the deletion's `&&`).
    #[test]
    fn forget_node_commands(d in hostile_name(), node in hostile()) {
        use std::os::unix::fs::PermissionsExt;
        let dir = work();
        let bin = dir.path().join(&d);
        std::fs::create_dir_all(&bin).unwrap();
        let k3s = bin.join("k3s");
        let status = dir.path().join("status");
        std::fs::write(&k3s, format!("#!/bin/sh\nprintf '%s\\0' \"$@\"; printf '\\036'\nexit \"$(cat {})\"\n", cmd::quote(status.to_str().unwrap()))).unwrap();
        std::fs::set_permissions(&k3s, std::fs::Permissions::from_mode(0o755)).unwrap();
        let k = k3s.to_str().unwrap();
        let calls = |out: Vec<u8>| -> Vec<Vec<String>> {
            String::from_utf8(out).unwrap().split_terminator('\u{1e}').map(|l| {
                let mut v: Vec<String> = l.split('\0').map(str::to_string).collect();
                v.pop();
                v
            }).collect()
        };
        let secret = format!("{node}.node-password.k3s");
        std::fs::write(&status, "1").unwrap();
        let r = sh(dir.path(), &rvcluster::converge::forget::known_probe(k, &node), b"");
        prop_assert_eq!(calls(r.stdout), vec![
            vec!["kubectl".to_string(), "get".into(), "node".into(), node.clone(), "-o".into(), "name".into()],
            vec!["kubectl".to_string(), "-n".into(), "kube-system".into(), "get".into(), "secret".into(), secret.clone(), "-o".into(), "name".into()],
        ]);
        std::fs::write(&status, "0").unwrap();
        let r = sh(dir.path(), &rvcluster::converge::forget::delete_command(k, &node), b"");
        prop_assert!(r.ok, "{}", r.stderr);
        prop_assert_eq!(calls(r.stdout), vec![
            vec!["kubectl".to_string(), "delete".into(), "node".into(), node.clone(), "--ignore-not-found".into()],
            vec!["kubectl".to_string(), "-n".into(), "kube-system".into(), "delete".into(), "secret".into(), secret, "--ignore-not-found".into()],
        ]);
        nothing_ran(dir.path(), &[&bin, &status]);
    }

    /// Reading a value back from a file (the server's token): the exact file, hex on one line.
    #[test]
    fn wait_and_print_reads_the_exact_file(f in hostile_name(), content in prop::collection::vec(any::<u8>(), 1..64)) {
        let dir = work();
        let path = dir.path().join(&f);
        std::fs::write(&path, &content).unwrap();
        let r = sh(dir.path(), &rvcluster::converge::script::wait_and_print("token", path.to_str().unwrap(), 2), b"");
        prop_assert!(r.ok, "{}", r.stderr);
        let hex: String = content.iter().map(|b| format!("{b:02x}")).collect();
        prop_assert_eq!(String::from_utf8(r.stdout).unwrap(), format!("@@rv value token {hex}\n"));
        nothing_ran(dir.path(), &[&path]);
    }

    /// The registry host's storage directory: cluster.kdl allows any path without control
    /// characters. The step's check and run make exactly that directory, and config.yml names it.
    #[test]
    fn registry_storage_steps_and_config(d in hostile_name()) {
        let d: String = d.chars().filter(|c| !c.is_control()).collect();
        let dir = work();
        let storage = dir.path().join(&d).join("registry").to_str().unwrap().to_string();
        let kdl = format!(
            "cluster \"c\"\nk3s version=\"v1.34.3+k3s1\" {{\n    binary {} sha256=\"bf4e2dbaf8165b58064967a0bd45da6f17302b2e240cf4496e80229c9173409f\"\n}}\n\
             node \"s1\" address=\"10.0.0.1\" role=\"server\"\nregistry \"r\" address=\"10.0.0.9\" {{\n    storage {}\n    mirror \"docker.io\"\n}}\n",
            kdl_str(&format!("{}/fixtures/blog-lab/artifacts/k3s-riscv64", env!("CARGO_MANIFEST_DIR"))),
            kdl_str(&storage)
        );
        let profiles = rvcluster::profile::Profiles::builtin();
        let c = rvcluster::spec::parse(Path::new("c.kdl"), &kdl, dir.path(), &profiles).map_err(|e| e.lines().join("\n")).unwrap();
        let r = c.registry.as_ref().unwrap();
        prop_assert_eq!(&r.storage, &storage);
        let os = profiles.os("debian-host").unwrap();
        let state = rvcluster::render::registry::host_state(r, os, None, None).unwrap();
        let step = state.steps.iter().find(|s| s.name.starts_with("registry storage")).unwrap();
        prop_assert!(!sh(dir.path(), &step.check, b"").ok, "absent at first");
        let run = sh(dir.path(), &step.run, b"");
        prop_assert!(run.ok, "{}", run.stderr);
        prop_assert!(Path::new(&storage).is_dir());
        prop_assert!(sh(dir.path(), &step.check, b"").ok);
        let yml: serde_json::Value = serde_saphyr::from_str(&rvcluster::render::registry::config_yml(r)).unwrap();
        prop_assert_eq!(yml["storage"]["filesystem"]["rootdirectory"].as_str(), Some(storage.as_str()));
        nothing_ran(dir.path(), &[&dir.path().join(&d)]);
    }

    /// Config values and the registry password land in config.yaml and registries.yaml exactly
    /// as given: YAML reads back the same strings (k3s parses YAML 1.1; every string is quoted).
    #[test]
    fn config_values_and_secrets_survive_yaml(v in hostile(), w in hostile(), pw in hostile()) {
        let dir = work();
        std::fs::write(dir.path().join("pw"), format!("{pw}\n")).unwrap();
        let kdl = format!(
            "cluster \"c\"\nk3s version=\"v1.34.3+k3s1\" {{\n    binary {} sha256=\"bf4e2dbaf8165b58064967a0bd45da6f17302b2e240cf4496e80229c9173409f\"\n    config {{\n        kubelet-arg {}\n        node-label \"board=x\"\n    }}\n}}\n\
             node \"s1\" address=\"10.0.0.1\" role=\"server\" {{\n    config {{ kube-proxy-arg {} ; }}\n}}\n\
             registry \"r\" address=\"10.0.0.9\" {{\n    auth user=\"rv\" password-file=\"pw\"\n    mirror \"docker.io\" {{\n        rewrite \"^rancher/(.*)\" {}\n    }}\n}}\n",
            kdl_str(&format!("{}/fixtures/blog-lab/artifacts/k3s-riscv64", env!("CARGO_MANIFEST_DIR"))),
            kdl_str(&v),
            kdl_str(&w),
            kdl_str(&format!("riscv64/$1{}", w.replace('$', ""))),
        );
        let profiles = rvcluster::profile::Profiles::builtin();
        let c = rvcluster::spec::parse(Path::new("c.kdl"), &kdl, dir.path(), &profiles).map_err(|e| e.lines().join("\n")).unwrap();
        let node = &c.nodes[0];
        let cfg = rvcluster::render::yaml::to_string(&rvcluster::render::config_yaml(&c, node));
        let y: serde_json::Value = serde_saphyr::from_str(&cfg).map_err(|e| format!("{e}\n{cfg}")).unwrap();
        prop_assert_eq!(y["kubelet-arg"].as_str(), Some(v.as_str()), "{}", cfg);
        prop_assert_eq!(y["kube-proxy-arg"].as_str(), Some(w.as_str()), "{}", cfg);
        let pw_read = c.registry.as_ref().unwrap().auth.as_ref().unwrap().password.read().unwrap();
        let secrets = rvcluster::render::Secrets { token: None, registry_password: Some(&pw_read) };
        let regs = rvcluster::render::registries_yaml(&c, &secrets).unwrap().unwrap();
        let y: serde_json::Value = serde_saphyr::from_str(&regs).map_err(|e| format!("{e}\n{regs}")).unwrap();
        prop_assert_eq!(y["configs"]["10.0.0.9:5000"]["auth"]["password"].as_str(), Some(pw.trim_end_matches(['\n', '\r'])));
        let rw = &y["mirrors"]["docker.io"]["rewrite"]["^rancher/(.*)"];
        let want = format!("riscv64/$1{}", w.replace('$', ""));
        prop_assert_eq!(rw.as_str(), Some(want.as_str()));
    }
}

/// sudo is what the wrappers above run as root; the suite needs it (.ci/apt-packages.txt).
#[test]
fn the_sudo_wrappers_were_exercised() {
    assert!(is_root(), "the hostile-value tests run as root (like the lab) so the sudo wrappers run for real");
    let out = Command::new("sudo").args(["-n", "true"]).output().expect("sudo is installed (.ci/apt-packages.txt)");
    assert!(out.status.success(), "sudo -n works as root: {}", String::from_utf8_lossy(&out.stderr));
}
