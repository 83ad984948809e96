//! The environment path end to end (one test in this binary, because it sets process-wide
//! variables): HOME's ~/.ssh/config, ~/.ssh/known_hosts and default identity, an encrypted
//! key unlocked by RVCLUSTER_SSH_PASSPHRASE, through `SshHost::connect` and `trust`.

#[path = "support/sshd.rs"]
mod sshd;

use rvcluster::transport::{Host, HostKeyPolicy, SshConfig, SshHost, TargetSpec, TransportError};
use sshd::{Sshd, client_key};

#[test]
fn ssh_env_home_config_known_hosts_and_passphrase() {
    let key = client_key("ed25519", Some("env secret"));
    let sshd = Sshd::with_key(&key);
    let home = tempfile::tempdir().unwrap();
    let ssh = home.path().join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    std::fs::copy(&key.private, ssh.join("id_ed25519")).unwrap();
    std::fs::write(
        ssh.join("config"),
        format!("Host board\n  HostName {}\n  Port {}\n", sshd.ip, sshd.port),
    )
    .unwrap();
    // SAFETY: the only test in this binary; no other thread reads the environment.
    unsafe {
        std::env::set_var("HOME", home.path());
        std::env::remove_var("SSH_AUTH_SOCK");
        std::env::remove_var("RVCLUSTER_SSH_PASSPHRASE");
    }
    let config = SshConfig::load_user_default().unwrap();
    let target = TargetSpec::new("board", "board")
        .resolve(&config, home.path())
        .unwrap();
    assert_eq!(
        (target.host.as_str(), target.port, target.user.as_str()),
        (sshd.ip.as_str(), sshd.port, "root")
    );
    let policy = HostKeyPolicy::new(None);
    assert_eq!(
        policy.user_known_hosts.as_deref(),
        Some(ssh.join("known_hosts").as_path())
    );

    // Unknown in ~/.ssh/known_hosts: refused.
    let err = SshHost::connect(&target, &policy).unwrap_err();
    assert!(
        matches!(err, TransportError::UnknownHostKey { .. }),
        "{err}"
    );
    std::fs::write(ssh.join("known_hosts"), sshd.known_hosts_line("ed25519")).unwrap();

    // Known, but the default identity is encrypted and there is no passphrase (and no terminal).
    let err = SshHost::connect(&target, &policy).unwrap_err();
    assert!(
        err.to_string().contains("RVCLUSTER_SSH_PASSPHRASE"),
        "{err}"
    );

    unsafe { std::env::set_var("RVCLUSTER_SSH_PASSPHRASE", "env secret") };
    let mut h = SshHost::connect(&target, &policy).unwrap();
    assert_eq!(
        h.exec("echo via env", None, None).unwrap().stdout_str(),
        "via env\n"
    );
}
