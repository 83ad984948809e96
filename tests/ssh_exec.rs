//! Running commands over real sshd (and the same through LocalHost): exit codes, stderr,
//! stdin, timeouts, hostile quoting, large interleaved output, privilege, facts.

#[path = "support/sshd.rs"]
mod sshd;

use std::time::{Duration, Instant};

use rvcluster::transport::cmd::join;
use rvcluster::transport::facts::FileKind;
use rvcluster::transport::{
    Become, FactsQuery, FileFact, Host, LocalHost, SshHost, TransportError,
};
use sshd::{Sshd, auth_files_only, client_key, trusted};

fn connect() -> (Sshd, SshHost, tempfile::TempDir) {
    let key = client_key("ed25519", None);
    let sshd = Sshd::with_key(&key);
    let (dir, policy) = trusted(&sshd, "ed25519");
    let host = SshHost::connect_with(&sshd.target("b1", &key), &policy, &auth_files_only())
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    (sshd, host, dir)
}

fn exit_codes_and_streams(h: &mut dyn Host) {
    let out = h
        .exec("echo out; echo err >&2; exit 3", None, None)
        .unwrap();
    assert_eq!(out.status, 3);
    assert_eq!(out.stdout_str(), "out\n");
    assert_eq!(out.stderr_str(), "err\n");
    let out = h.exec("true", None, None).unwrap();
    assert!(out.success());
    let out = h
        .exec("cat; printf done", Some(b"from stdin\n"), None)
        .unwrap();
    assert_eq!(out.stdout_str(), "from stdin\ndone");
    let err = h
        .exec_ok("a failing step", "echo nope >&2; exit 7", None, None)
        .unwrap_err();
    match err {
        TransportError::CommandFailed {
            status,
            stderr,
            what,
            ..
        } => {
            assert_eq!(
                (status, stderr.as_str(), what.as_str()),
                (7, "nope", "a failing step")
            )
        }
        e => panic!("unexpected {e}"),
    }
}

#[test]
fn ssh_exec_exit_codes_stdout_stderr_stdin() {
    let (_s, mut h, _d) = connect();
    exit_codes_and_streams(&mut h);
}

#[test]
fn local_exec_exit_codes_stdout_stderr_stdin() {
    exit_codes_and_streams(&mut LocalHost::new("local"));
}

fn times_out(h: &mut dyn Host) {
    let start = Instant::now();
    let err = h
        .exec("sleep 60", None, Some(Duration::from_millis(500)))
        .unwrap_err();
    assert!(matches!(err, TransportError::Timeout { .. }), "{err}");
    // It gave up instead of waiting for the command to end.
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
    // The host stays usable after a timeout.
    assert_eq!(
        h.exec("echo still here", None, None).unwrap().stdout_str(),
        "still here\n"
    );
}

/// After a timeout the command does not linger on the host: it is gone long before it would
/// have ended by itself.
fn timed_out_command_is_killed_on_the_host(h: &mut dyn Host) {
    let token = format!("rvcluster-timeout-{}-{}", std::process::id(), h.name());
    let cmd = format!("sleep 40; echo {token}");
    let err = h
        .exec(&cmd, None, Some(Duration::from_millis(300)))
        .unwrap_err();
    assert!(matches!(err, TransportError::Timeout { .. }), "{err}");
    let start = Instant::now();
    loop {
        let out = h
            // `[r]` keeps pgrep from matching the shell that runs it.
            .exec(
                &format!("pgrep -f '[r]{}' || true", &token[1..]),
                None,
                None,
            )
            .unwrap();
        if out.stdout.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "still running: {}",
            out.stdout_str()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ssh_timed_out_command_is_killed_on_the_host() {
    let (_s, mut h, _d) = connect();
    timed_out_command_is_killed_on_the_host(&mut h);
}

#[test]
fn local_timed_out_command_is_killed() {
    timed_out_command_is_killed_on_the_host(&mut LocalHost::new("local"));
}

#[test]
fn ssh_exec_timeout() {
    let (_s, mut h, _d) = connect();
    times_out(&mut h);
}

#[test]
fn local_exec_timeout() {
    times_out(&mut LocalHost::new("local"));
}

const HOSTILE: &[&str] = &[
    "plain",
    "with space",
    "it's quoted",
    "double \"quotes\"",
    "$(touch /tmp/rvcluster-pwned)",
    "`id`",
    "new\nline",
    "semi;colon&amp|pipe",
    "*",
    "~root",
    "-n",
    "",
    "back\\slash",
    "tab\there",
    "ünïcödé",
];

fn hostile_round_trip(h: &mut dyn Host) {
    let mut words = vec!["printf", "[%s]"];
    words.extend_from_slice(HOSTILE);
    let out = h.exec(&join(&words), None, None).unwrap();
    let want: String = HOSTILE.iter().map(|w| format!("[{w}]")).collect();
    assert_eq!(out.stdout_str(), want);
    // And as file names through the upload path.
    let dir = tempfile::tempdir().unwrap();
    for (i, w) in HOSTILE
        .iter()
        .enumerate()
        .filter(|(_, w)| !w.is_empty() && !w.contains('/'))
    {
        let dest = format!("{}/{w}", dir.path().display());
        h.write(
            format!("content {i}").as_bytes(),
            &rvcluster::transport::RemoteFile::new(dest.clone(), 0o640),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&dest).unwrap(),
            format!("content {i}"),
            "{w:?}"
        );
    }
    assert!(!std::path::Path::new("/tmp/rvcluster-pwned").exists());
}

#[test]
fn ssh_hostile_quoting_round_trip() {
    let (_s, mut h, _d) = connect();
    hostile_round_trip(&mut h);
}

#[test]
fn local_hostile_quoting_round_trip() {
    hostile_round_trip(&mut LocalHost::new("local"));
}

#[test]
fn ssh_large_interleaved_output_does_not_deadlock() {
    let (_s, mut h, _d) = connect();
    // 8 MiB on each stream, interleaved: a reader that drains only stdout would stall on a full window.
    let out = h
        .exec("i=0; while [ $i -lt 64 ]; do head -c 131072 /dev/zero; head -c 131072 /dev/zero >&2; i=$((i+1)); done", None, None)
        .unwrap();
    assert_eq!(out.stdout.len(), 8 << 20);
    assert_eq!(out.stderr.len(), 8 << 20);
    // 16 MiB through stdin and back.
    let big: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
    let out = h.exec("cat", Some(&big), None).unwrap();
    assert!(out.stdout == big, "stdin round trip differs");
}

#[test]
fn ssh_sudo_wrapper_runs_as_root() {
    if !std::path::Path::new("/usr/bin/sudo").exists() {
        // sudo is part of the CI apt list; without it there is nothing to wrap with.
        panic!("sudo is not installed (apt-get install sudo)");
    }
    let key = client_key("ed25519", None);
    let sshd = Sshd::with_key(&key);
    let (_d, policy) = trusted(&sshd, "ed25519");
    let mut t = sshd.target("b1", &key);
    t.privilege = Become::Sudo;
    let mut h = SshHost::connect_with(&t, &policy, &auth_files_only()).unwrap();
    let out = h.exec("id -u; echo \"$0\"", None, None).unwrap();
    assert_eq!(out.stdout_str(), "0\nsh\n");
}

/// A real user whose sudo wants a password, logging in by key.
fn sudo_user_host() -> (
    Sshd,
    rvcluster::transport::Target,
    tempfile::TempDir,
    rvcluster::transport::HostKeyPolicy,
    sshd::ClientKey,
) {
    sshd::ensure_sudo_user();
    let key = client_key("ed25519", None);
    let sshd = Sshd::with_key(&key);
    let (d, policy) = trusted(&sshd, "ed25519");
    let mut t = sshd.target("b1", &key);
    t.user = sshd::SUDO_USER.into();
    t.privilege = Become::Sudo;
    (sshd, t, d, policy, key)
}

#[test]
fn ssh_sudo_password_prompt_is_a_clear_error() {
    let (_s, t, _d, policy, _k) = sudo_user_host();
    let mut h = SshHost::connect_with(&t, &policy, &auth_files_only()).unwrap();
    assert_eq!(
        h.exec_raw("id -un", &mut &b""[..], None)
            .unwrap()
            .stdout_str(),
        "rvcluster-sudo\n"
    );
    let err = h.exec("true", None, None).unwrap_err();
    assert!(
        matches!(err, TransportError::SudoPasswordRequired { .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "b1: sudo on the host asks for a password (user rvcluster-sudo)"
    );
}

#[test]
fn ssh_ask_become_pass_runs_as_root_and_keeps_stdin_intact() {
    let (_s, t, _d, policy, _k) = sudo_user_host();
    let mut h = SshHost::connect_with(&t, &policy, &auth_files_only()).unwrap();
    assert!(h.set_become_password(sshd::SUDO_USER_PASSWORD).unwrap());
    assert_eq!(h.exec("id -u", None, None).unwrap().stdout_str(), "0\n");
    // stdin reaches the command byte for byte, without the password line.
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 253) as u8).collect();
    assert!(h.exec("cat", Some(&data), None).unwrap().stdout == data);
    let out = h.exec("head -c 100", Some(b"line\n"), None).unwrap();
    assert_eq!(out.stdout_str(), "line\n");
    // Uploads go through the same path: a root-owned file written by a non-root login.
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("sub/registries.yaml");
    let f = rvcluster::transport::RemoteFile::new(dest.display().to_string(), 0o600)
        .owned_by("root:root");
    assert!(h.write(b"mirrors: {}\n", &f).unwrap().changed());
    assert_eq!(std::fs::read(&dest).unwrap(), b"mirrors: {}\n");
    let q = FactsQuery {
        paths: vec![dest.display().to_string()],
        ..Default::default()
    };
    let FileFact::Present { owner, mode, .. } =
        &h.facts(&q).unwrap().files[&dest.display().to_string()]
    else {
        panic!()
    };
    assert_eq!((owner.as_str(), *mode), ("root", 0o600));
    // The password appears in no output.
    let out = h.exec("cat /proc/self/cmdline; env", None, None).unwrap();
    assert!(
        !out.stdout_str().contains("rv-become-Pa55"),
        "{}",
        out.stdout_str()
    );
}

#[test]
fn ssh_ask_become_pass_wrong_password_and_not_needed() {
    let (sshd, t, _d, policy, _k) = sudo_user_host();
    let mut h = SshHost::connect_with(&t, &policy, &auth_files_only()).unwrap();
    let err = h.set_become_password("wrong").unwrap_err();
    assert!(
        matches!(err, TransportError::BecomePasswordRejected { .. }),
        "{err}"
    );
    assert!(!err.to_string().contains("wrong"));
    // root with sudo never needs it: the password is not used.
    let key = client_key("ed25519", None);
    let root = Sshd::with_key(&key);
    let (_d2, policy2) = trusted(&root, "ed25519");
    let mut t2 = root.target("r", &key);
    t2.privilege = Become::Sudo;
    let mut h2 = SshHost::connect_with(&t2, &policy2, &auth_files_only()).unwrap();
    assert!(!h2.set_become_password("anything").unwrap());
    assert_eq!(h2.exec("id -u", None, None).unwrap().stdout_str(), "0\n");
    drop(sshd);
}

fn facts_of(h: &mut dyn Host) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let file = format!("{d}/a file $(x)");
    std::fs::write(&file, b"hello\n").unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("/usr/local/bin/k3s", format!("{d}/kubectl")).unwrap();
    let q = FactsQuery {
        paths: vec![
            file.clone(),
            format!("{d}/missing"),
            format!("{d}/kubectl"),
            d.clone(),
        ],
        services: vec!["rvcluster-test-nonexistent.service".into()],
        k3s_binary: format!("{d}/k3s"),
        ..FactsQuery::default()
    };
    let k3s = format!("{d}/k3s");
    std::fs::write(
        &k3s,
        "#!/bin/sh\necho 'k3s version v1.31.4+k3s1 (a562d090)'\necho 'go version go1.22'\n",
    )
    .unwrap();
    std::fs::set_permissions(&k3s, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let f = h.facts(&q).unwrap();
    assert_eq!(f.arch, std::env::consts::ARCH);
    assert!(!f.hostname.is_empty());
    assert!(f.os_id().is_some(), "{:?}", f.os_release);
    assert_eq!(
        f.files[&file],
        FileFact::Present {
            kind: FileKind::Regular,
            mode: 0o640,
            owner: "root".into(),
            group: "root".into(),
            // sha256 of "hello\n"
            sha256: Some("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03".into()),
            link_target: None,
        }
    );
    assert_eq!(f.files[&format!("{d}/missing")], FileFact::Absent);
    let FileFact::Present {
        kind, link_target, ..
    } = &f.files[&format!("{d}/kubectl")]
    else {
        panic!()
    };
    assert_eq!(
        (*kind, link_target.as_deref()),
        (FileKind::Symlink, Some("/usr/local/bin/k3s"))
    );
    let FileFact::Present { kind, .. } = &f.files[&d] else {
        panic!()
    };
    assert_eq!(*kind, FileKind::Directory);
    let svc = &f.services["rvcluster-test-nonexistent.service"];
    assert!(
        svc.active == "inactive" || svc.active == "unknown",
        "{svc:?}"
    );
    assert_eq!(
        f.k3s_version.as_deref(),
        Some("k3s version v1.31.4+k3s1 (a562d090)")
    );
}

#[test]
fn ssh_facts_one_round_trip() {
    let (_s, mut h, _d) = connect();
    facts_of(&mut h);
}

#[test]
fn local_facts() {
    facts_of(&mut LocalHost::new("local"));
}
