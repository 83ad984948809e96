//! Authentication and reaching hosts, against real sshd: key types, encrypted keys with a
//! passphrase, default identity files, ssh-agent, ~/.ssh/config aliases, ProxyJump through a
//! second sshd (direct-tcpip), and failures that name what was tried without leaking secrets.

#[path = "support/sshd.rs"]
mod sshd;

use std::path::Path;

use rvcluster::transport::{AuthConfig, Host, SshConfig, SshHost, TargetSpec, TransportError};
use sshd::{Sshd, SshdOptions, auth_files_only, client_key, policy_with, trusted};

fn echo(h: &mut SshHost) -> String {
    h.exec("echo hi", None, None).unwrap().stdout_str()
}

#[test]
fn ssh_rsa_and_ecdsa_client_keys() {
    for kind in ["rsa", "ecdsa"] {
        let key = client_key(kind, None);
        let sshd = Sshd::with_key(&key);
        let (_d, policy) = trusted(&sshd, "ed25519");
        let mut h = SshHost::connect_with(&sshd.target("b1", &key), &policy, &auth_files_only())
            .unwrap_or_else(|e| panic!("{kind}: {e}\n{}", sshd.log()));
        assert_eq!(echo(&mut h), "hi\n");
    }
}

#[test]
fn ssh_encrypted_key_with_passphrase() {
    let secret = "correct horse $(battery) 'staple'";
    let key = client_key("ed25519", Some(secret));
    assert!(rvcluster::transport::ssh::key_is_encrypted(
        &std::fs::read_to_string(&key.private).unwrap()
    ));
    let sshd = Sshd::with_key(&key);
    let (_d, policy) = trusted(&sshd, "ed25519");
    let t = sshd.target("b1", &key);

    let auth = AuthConfig {
        passphrase: Some(secret.into()),
        ..auth_files_only()
    };
    let mut h = SshHost::connect_with(&t, &policy, &auth).unwrap();
    assert_eq!(echo(&mut h), "hi\n");

    // No passphrase and no terminal: a clear error naming the env variable.
    let err = SshHost::connect_with(&t, &policy, &auth_files_only()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TransportError::Auth { .. }), "{msg}");
    assert!(
        msg.contains("RVCLUSTER_SSH_PASSPHRASE")
            && msg.contains(&key.private.display().to_string()),
        "{msg}"
    );

    // A wrong passphrase fails, and the message never contains it.
    let wrong = "wrong-passphrase-xyzzy";
    let auth = AuthConfig {
        passphrase: Some(wrong.into()),
        ..auth_files_only()
    };
    let err = SshHost::connect_with(&t, &policy, &auth).unwrap_err();
    assert!(matches!(err, TransportError::Auth { .. }), "{err}");
    assert!(!err.to_string().contains(wrong), "{err}");
    assert!(!format!("{auth:?}").contains(wrong));
}

#[test]
fn ssh_default_identity_files_from_home() {
    let key = client_key("ecdsa", None);
    let sshd = Sshd::with_key(&key);
    let (_d, policy) = trusted(&sshd, "ed25519");
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    std::fs::copy(&key.private, home.path().join(".ssh/id_ecdsa")).unwrap();
    let mut t = sshd.target("b1", &key);
    t.identity_files.clear();
    let auth = AuthConfig {
        home: Some(home.path().to_path_buf()),
        ..auth_files_only()
    };
    let mut h = SshHost::connect_with(&t, &policy, &auth).unwrap();
    assert_eq!(echo(&mut h), "hi\n");
    // Without a home there is nothing to try, and the error says so.
    let err = SshHost::connect_with(&t, &policy, &auth_files_only()).unwrap_err();
    assert!(
        err.to_string()
            .contains("no ssh-agent and no identity file"),
        "{err}"
    );
}

#[test]
fn ssh_agent_keys() {
    let key = client_key("ed25519", None);
    let sshd = Sshd::with_key(&key);
    let (_d, policy) = trusted(&sshd, "ed25519");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .spawn()
        .unwrap();
    while !sock.exists() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let add = std::process::Command::new("ssh-add")
        .arg(&key.private)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let mut t = sshd.target("b1", &key);
    t.identity_files = vec![Path::new("/nonexistent").to_path_buf()];
    let auth = AuthConfig {
        agent_socket: Some(sock.clone()),
        ..auth_files_only()
    };
    let r = SshHost::connect_with(&t, &policy, &auth).map(|mut h| echo(&mut h));
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(r.unwrap(), "hi\n");
}

#[test]
fn ssh_wrong_key_is_auth_error_naming_user_and_key() {
    let key = client_key("ed25519", None);
    let other = client_key("ed25519", None);
    let sshd = Sshd::with_key(&key);
    let (_d, policy) = trusted(&sshd, "ed25519");
    let err =
        SshHost::connect_with(&sshd.target("b1", &other), &policy, &auth_files_only()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TransportError::Auth { .. }), "{msg}");
    assert!(
        msg.contains("as root") && msg.contains(&other.private.display().to_string()),
        "{msg}"
    );
}

/// A jump host (which allows forwarding, logging each direct-tcpip request) and a board.
fn jump_pair(key: &sshd::ClientKey, jump_forwarding: bool) -> (Sshd, Sshd) {
    let jump = Sshd::start(SshdOptions {
        authorized_keys: vec![key.public.clone()],
        extra_config: format!(
            "LogLevel DEBUG1\nAllowTcpForwarding {}\n",
            if jump_forwarding { "yes" } else { "no" }
        ),
        ..Default::default()
    });
    let board = Sshd::with_key(key);
    (jump, board)
}

fn both_known(jump: &Sshd, board: &Sshd) -> (tempfile::TempDir, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let kh = d.path().join("known_hosts");
    std::fs::write(
        &kh,
        jump.known_hosts_line("ed25519") + &board.known_hosts_line("ed25519"),
    )
    .unwrap();
    (d, kh)
}

#[test]
fn ssh_proxy_jump_through_second_sshd() {
    let key = client_key("ed25519", None);
    let (jump, board) = jump_pair(&key, true);
    let (_d, kh) = both_known(&jump, &board);
    let mut t = board.target("b1", &key);
    t.proxy_jump = Some(Box::new(jump.target("bastion", &key)));
    let mut h = SshHost::connect_with(&t, &policy_with(&kh), &auth_files_only())
        .unwrap_or_else(|e| panic!("{e}\n{}", jump.log()));
    assert_eq!(echo(&mut h), "hi\n");
    // Bulk data through the tunnel in both directions.
    let big: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 % 256) as u8).collect();
    assert!(h.exec("cat", Some(&big), None).unwrap().stdout == big);
    drop(h);
    let log = jump.log();
    assert!(
        log.contains(&format!("target {} port {}", board.ip, board.port)),
        "the jump host did not forward to the board:\n{log}"
    );
}

#[test]
fn ssh_proxy_jump_failures_are_named() {
    let key = client_key("ed25519", None);
    // The jump host refuses forwarding.
    let (jump, board) = jump_pair(&key, false);
    let (_d, kh) = both_known(&jump, &board);
    let mut t = board.target("b1", &key);
    t.proxy_jump = Some(Box::new(jump.target("bastion", &key)));
    let err = SshHost::connect_with(&t, &policy_with(&kh), &auth_files_only()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{msg}");
    assert!(
        msg.contains("ProxyJump") && msg.contains("direct-tcpip"),
        "{msg}"
    );

    // The jump host's own key is verified too.
    let (jump, board) = jump_pair(&key, true);
    let d = tempfile::tempdir().unwrap();
    let kh = d.path().join("known_hosts");
    std::fs::write(&kh, board.known_hosts_line("ed25519")).unwrap();
    let mut t = board.target("b1", &key);
    t.proxy_jump = Some(Box::new(jump.target("bastion", &key)));
    let err = SshHost::connect_with(&t, &policy_with(&kh), &auth_files_only()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("host key is not known") && msg.contains(&jump.fingerprint("ed25519")),
        "{msg}"
    );
}

#[test]
fn ssh_config_alias_hostname_port_user_identity_and_proxyjump() {
    let key = client_key("ed25519", None);
    let (jump, board) = jump_pair(&key, true);
    let (_d, kh) = both_known(&jump, &board);
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    std::fs::copy(&key.private, home.path().join(".ssh/boards")).unwrap();
    let config_text = format!(
        "Host bastion\n  HostName {jip}\n  Port {jport}\n  User root\n  IdentityFile ~/.ssh/boards\n\n\
         Host lichee-*\n  HostName {bip}\n  Port {bport}\n  User nobody-overridden\n  IdentityFile ~/.ssh/boards\n  ProxyJump bastion\n",
        jip = jump.ip,
        jport = jump.port,
        bip = board.ip,
        bport = board.port
    );
    std::fs::write(home.path().join(".ssh/config"), &config_text).unwrap();
    let config = SshConfig::load(&home.path().join(".ssh/config")).unwrap();
    let mut spec = TargetSpec::new("lichee-1", "lichee-1");
    spec.user = Some("root".into()); // cluster.kdl overrides the config's User
    let t = spec.resolve(&config, home.path()).unwrap();
    assert_eq!(
        (t.host.as_str(), t.port, t.user.as_str()),
        (board.ip.as_str(), board.port, "root")
    );
    assert_eq!(t.identity_files, vec![home.path().join(".ssh/boards")]);
    let hop = t.proxy_jump.as_ref().expect("ProxyJump from the config");
    assert_eq!((hop.host.as_str(), hop.port), (jump.ip.as_str(), jump.port));
    let mut h = SshHost::connect_with(&t, &policy_with(&kh), &auth_files_only()).unwrap();
    assert_eq!(echo(&mut h), "hi\n");
    drop(h);
    assert!(
        jump.log()
            .contains(&format!("target {} port {}", board.ip, board.port))
    );
}
