//! Host-key verification against real sshd: unknown keys are refused before authenticating
//! (with the fingerprint ssh-keygen prints), changed keys are refused loudly, pinned keys work,
//! `trust` records and (only with replace) replaces, several key types never cause a false
//! mismatch, hashed and user known_hosts files are honoured.

#[path = "support/sshd.rs"]
mod sshd;

use std::path::PathBuf;

use rvcluster::transport::known_hosts::HostKeyPolicy;
use rvcluster::transport::{SshHost, TransportError, TrustOutcome, trust_with};
use sshd::{ClientKey, Sshd, SshdOptions, auth_files_only, client_key, policy_with};

fn kh_dir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("known_hosts");
    (d, p)
}

fn connect(
    sshd: &Sshd,
    key: &ClientKey,
    policy: &HostKeyPolicy,
) -> Result<SshHost, TransportError> {
    SshHost::connect_with(&sshd.target("b1", key), policy, &auth_files_only())
}

#[test]
fn ssh_unknown_key_refused_with_fingerprint_before_auth() {
    let key = client_key("ed25519", None);
    let sshd = Sshd::with_key(&key);
    let (_d, kh) = kh_dir();
    // No usable identity at all: had authentication been attempted, this would be an Auth error.
    let mut t = sshd.target("b1", &key);
    t.identity_files = vec![PathBuf::from("/nonexistent/key")];
    let err = SshHost::connect_with(&t, &policy_with(&kh), &auth_files_only()).unwrap_err();
    let TransportError::UnknownHostKey {
        fingerprint,
        key_type,
        ..
    } = &err
    else {
        panic!("unexpected {err}")
    };
    assert_eq!(fingerprint, &sshd.fingerprint("ed25519"));
    assert_eq!(key_type, "ssh-ed25519");
    let msg = err.to_string();
    assert!(msg.contains(&sshd.fingerprint("ed25519")), "{msg}");
    assert!(msg.contains("rvcluster trust b1"), "{msg}");
    assert!(msg.contains("--accept-new"), "{msg}");
    assert!(!kh.exists(), "nothing may be recorded silently");
}

#[test]
fn ssh_changed_key_refused_loudly() {
    let key = client_key("ed25519", None);
    let mut sshd = Sshd::with_key(&key);
    let (_d, kh) = kh_dir();
    std::fs::write(&kh, sshd.known_hosts_line("ed25519")).unwrap();
    let old_fp = sshd.fingerprint("ed25519");
    connect(&sshd, &key, &policy_with(&kh)).unwrap();
    sshd.reflash();
    let mut policy = policy_with(&kh);
    policy.accept_new = true; // accept-new never accepts a *changed* key
    let err = connect(&sshd, &key, &policy).unwrap_err();
    let TransportError::ChangedHostKey {
        fingerprint,
        recorded_fingerprint,
        recorded_in,
        ..
    } = &err
    else {
        panic!("unexpected {err}")
    };
    assert_eq!(
        fingerprint,
        &format!("ssh-ed25519 {}", sshd.fingerprint("ed25519"))
    );
    assert_eq!(recorded_fingerprint, &format!("ssh-ed25519 {old_fp}"));
    assert_eq!(recorded_in, &kh.display().to_string());
    let msg = err.to_string();
    assert!(
        msg.contains("HOST KEY HAS CHANGED") && msg.contains("rvcluster trust b1 --replace"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_to_string(&kh).unwrap().lines().count(),
        1,
        "the file is untouched"
    );
}

#[test]
fn ssh_pinned_key_first() {
    let key = client_key("ed25519", None);
    let sshd = Sshd::with_key(&key);
    let other = Sshd::with_key(&key);
    let (_d, kh) = kh_dir();
    // The project file holds a wrong key for this address; the pinned key decides.
    std::fs::write(
        &kh,
        format!(
            "[{}]:{} {}\n",
            sshd.ip,
            sshd.port,
            other.host_key("ed25519")
        ),
    )
    .unwrap();
    let mut t = sshd.target("b1", &key);
    t.pinned_host_key = Some(format!("{} root@board", sshd.host_key("ed25519")));
    let mut h = SshHost::connect_with(&t, &policy_with(&kh), &auth_files_only()).unwrap();
    use rvcluster::transport::Host;
    assert_eq!(h.exec("echo ok", None, None).unwrap().stdout_str(), "ok\n");

    // A wrong pin is a changed key, whatever the files say.
    let (_d2, empty) = kh_dir();
    t.pinned_host_key = Some(other.host_key("ed25519"));
    let err = SshHost::connect_with(&t, &policy_with(&empty), &auth_files_only()).unwrap_err();
    assert!(
        matches!(&err, TransportError::ChangedHostKey { recorded_in, .. } if recorded_in == "pinned host-key"),
        "{err}"
    );
    // A malformed pin is a config error, not a connection.
    t.pinned_host_key = Some("ssh-ed25519 not-base64!".into());
    let err = SshHost::connect_with(&t, &policy_with(&empty), &auth_files_only()).unwrap_err();
    assert!(matches!(err, TransportError::Config { .. }), "{err}");
}

#[test]
fn ssh_trust_then_replace_after_reflash() {
    let key = client_key("ed25519", None);
    let mut sshd = Sshd::with_key(&key);
    let (_d, kh) = kh_dir();
    let policy = policy_with(&kh);
    let t = sshd.target("b1", &key);
    let out = trust_with(&t, &policy, &auth_files_only(), &kh, false).unwrap();
    let TrustOutcome::Added { fingerprint, .. } = &out else {
        panic!("{out:?}")
    };
    assert_eq!(fingerprint, &sshd.fingerprint("ed25519"));
    assert!(out.to_string().contains(&sshd.fingerprint("ed25519")));
    assert_eq!(
        std::fs::read_to_string(&kh).unwrap(),
        sshd.known_hosts_line("ed25519")
    );
    connect(&sshd, &key, &policy).unwrap();
    assert!(matches!(
        trust_with(&t, &policy, &auth_files_only(), &kh, false).unwrap(),
        TrustOutcome::AlreadyTrusted { .. }
    ));

    let old_fp = sshd.fingerprint("ed25519");
    sshd.reflash();
    let err = trust_with(&t, &policy, &auth_files_only(), &kh, false).unwrap_err();
    assert!(
        matches!(err, TransportError::ChangedHostKey { .. }),
        "{err}"
    );
    let out = trust_with(&t, &policy, &auth_files_only(), &kh, true).unwrap();
    let TrustOutcome::Replaced {
        fingerprint,
        old_fingerprints,
        ..
    } = &out
    else {
        panic!("{out:?}")
    };
    assert_eq!(fingerprint, &sshd.fingerprint("ed25519"));
    assert_eq!(old_fingerprints, &vec![old_fp]);
    assert_eq!(
        std::fs::read_to_string(&kh).unwrap(),
        sshd.known_hosts_line("ed25519")
    );
    connect(&sshd, &key, &policy).unwrap();
}

#[test]
fn ssh_several_host_key_types_no_false_mismatch() {
    let key = client_key("ed25519", None);
    let sshd = Sshd::start(SshdOptions {
        host_key_types: vec!["ed25519", "ecdsa", "rsa"],
        authorized_keys: vec![key.public.clone()],
        ..Default::default()
    });
    // Only one type on record each time; the host would prefer ed25519 if we let it.
    for kind in ["rsa", "ecdsa", "ed25519"] {
        let (_d, kh) = kh_dir();
        std::fs::write(&kh, sshd.known_hosts_line(kind)).unwrap();
        connect(&sshd, &key, &policy_with(&kh)).unwrap_or_else(|e| panic!("{kind}: {e}"));
    }
    // Two types on record, one of them stale: the other still proves identity.
    let other = Sshd::with_key(&key);
    let (_d, kh) = kh_dir();
    let stale = format!(
        "[{}]:{} {}\n",
        sshd.ip,
        sshd.port,
        other.host_key("ed25519")
    );
    std::fs::write(&kh, stale + &sshd.known_hosts_line("rsa")).unwrap();
    // ed25519 is preferred and stale: that is a real change and must be refused.
    let err = connect(&sshd, &key, &policy_with(&kh)).unwrap_err();
    assert!(
        matches!(err, TransportError::ChangedHostKey { .. }),
        "{err}"
    );
}

#[test]
fn ssh_hashed_known_hosts_entry() {
    let key = client_key("ed25519", None);
    let sshd = Sshd::with_key(&key);
    let (_d, kh) = kh_dir();
    std::fs::write(&kh, sshd.known_hosts_line("ed25519")).unwrap();
    let st = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&kh)
        .output()
        .unwrap();
    assert!(st.status.success());
    assert!(std::fs::read_to_string(&kh).unwrap().starts_with("|1|"));
    connect(&sshd, &key, &policy_with(&kh)).unwrap();
}

#[test]
fn ssh_user_known_hosts_is_second() {
    let key = client_key("ed25519", None);
    let sshd = Sshd::with_key(&key);
    let other = Sshd::with_key(&key);
    let (_d, project) = kh_dir();
    let (_d2, user) = kh_dir();
    let wrong = format!(
        "[{}]:{} {}\n",
        sshd.ip,
        sshd.port,
        other.host_key("ed25519")
    );
    let policy = HostKeyPolicy {
        project_known_hosts: Some(project.clone()),
        user_known_hosts: Some(user.clone()),
        accept_new: false,
    };
    // Project file missing: the user file decides.
    std::fs::write(&user, sshd.known_hosts_line("ed25519")).unwrap();
    connect(&sshd, &key, &policy).unwrap();
    // Project file knows the host: it decides, even against the user file.
    std::fs::write(&project, &wrong).unwrap();
    assert!(matches!(
        connect(&sshd, &key, &policy).unwrap_err(),
        TransportError::ChangedHostKey { .. }
    ));
    std::fs::write(&project, sshd.known_hosts_line("ed25519")).unwrap();
    std::fs::write(&user, &wrong).unwrap();
    connect(&sshd, &key, &policy).unwrap();
}

#[test]
fn ssh_accept_new_records_unknown_key() {
    let key = client_key("ed25519", None);
    let sshd = Sshd::with_key(&key);
    let (_d, kh) = kh_dir();
    let mut policy = policy_with(&kh);
    policy.accept_new = true;
    let h = connect(&sshd, &key, &policy).unwrap();
    let shown = h
        .accepted_new_key()
        .expect("the accepted key is reported")
        .to_string();
    assert!(
        shown.starts_with(&format!("ssh-ed25519 {}", sshd.fingerprint("ed25519"))),
        "{shown}"
    );
    assert_eq!(
        std::fs::read_to_string(&kh).unwrap(),
        sshd.known_hosts_line("ed25519")
    );
    policy.accept_new = false;
    assert_eq!(
        connect(&sshd, &key, &policy).unwrap().accepted_new_key(),
        None
    );
}

#[test]
fn ssh_revoked_key_refused() {
    let key = client_key("ed25519", None);
    let sshd = Sshd::with_key(&key);
    let (_d, kh) = kh_dir();
    std::fs::write(
        &kh,
        format!(
            "{}@revoked * {}\n",
            sshd.known_hosts_line("ed25519"),
            sshd.host_key("ed25519")
        ),
    )
    .unwrap();
    let err = connect(&sshd, &key, &policy_with(&kh)).unwrap_err();
    assert!(
        matches!(err, TransportError::RevokedHostKey { .. }),
        "{err}"
    );
}
