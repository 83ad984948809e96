//! The transport against the emulated boards of the lab (real sshd in namespaces, openEuler
//! riscv64 look-alikes): facts from every board in one round trip each, in parallel; an
//! upload shows up in the next facts; a re-flashed board is refused until `trust --replace`;
//! a non-root login with `sudo -n`.

use rvcluster::transport::facts::FileKind;
use rvcluster::transport::{
    AuthConfig, Become, FactsQuery, FileFact, Host, HostKeyPolicy, RemoteFile, SshHost, Summary,
    Target, TransportError, TrustOutcome, run_parallel, trust_with,
};
use rvlab::{Lab, Role};

fn auth() -> AuthConfig {
    AuthConfig {
        home: None,
        agent_socket: None,
        passphrase: None,
        prompt: false,
        ..AuthConfig::default()
    }
}

fn target(lab: &Lab, name: &str) -> Target {
    let b = lab.b(name);
    let mut t = Target::new(name, b.address().to_string());
    t.port = b.ssh_port();
    t.identity_files = vec![lab.client_key().to_path_buf()];
    t
}

fn policy(kh: &std::path::Path) -> HostKeyPolicy {
    HostKeyPolicy {
        project_known_hosts: Some(kh.to_path_buf()),
        user_known_hosts: None,
        accept_new: false,
    }
}

#[test]
fn ssh_lab_facts_upload_reflash_sudo() {
    let mut lab = Lab::builder()
        .boards([
            ("server1", Role::Server),
            ("agent1", Role::Agent),
            ("agent2", Role::Agent),
        ])
        .sudo_user("euler")
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("known_hosts");
    std::fs::copy(lab.known_hosts(), &kh).unwrap();
    let names = ["server1", "agent1", "agent2"];
    let targets: Vec<Target> = names.iter().map(|n| target(&lab, n)).collect();
    let q = FactsQuery {
        paths: vec!["/usr/local/bin/k3s".into(), "/etc/os-release".into()],
        services: vec!["k3s.service".into()],
        ..Default::default()
    };
    let pol = policy(&kh);
    let out = run_parallel(&targets, 3, None, |t, _| {
        SshHost::connect_with(t, &pol, &auth())?.facts(&q)
    });
    assert!(Summary::of(&out).all_ok(), "{}", Summary::of(&out));
    for (o, name) in out.iter().zip(names) {
        let f = o.result.as_ref().unwrap();
        assert_eq!(f.arch, "riscv64");
        assert_eq!(f.os_id(), Some("openEuler"));
        assert_eq!(
            f.os_release.get("VERSION_ID").map(String::as_str),
            Some("24.03")
        );
        assert_eq!(f.hostname, name);
        assert_eq!(f.files["/usr/local/bin/k3s"], FileFact::Absent);
        assert!(matches!(
            &f.files["/etc/os-release"],
            FileFact::Present {
                kind: FileKind::Regular,
                ..
            }
        ));
        assert_eq!(f.services["k3s.service"].active, "inactive");
        assert_eq!(f.k3s_version, None);
    }

    // An upload is visible in the next facts, on that board only.
    let mut h = SshHost::connect_with(&targets[1], &pol, &auth()).unwrap();
    let bin = dir.path().join("k3s");
    std::fs::write(&bin, "#!/bin/sh\necho 'k3s version v1.31.4+k3s1 (lab)'\n").unwrap();
    let up = h
        .upload(
            &bin,
            &RemoteFile::new("/usr/local/bin/k3s", 0o755).owned_by("root:root"),
        )
        .unwrap();
    let f = h.facts(&q).unwrap();
    let FileFact::Present {
        sha256,
        mode,
        owner,
        ..
    } = &f.files["/usr/local/bin/k3s"]
    else {
        panic!()
    };
    assert_eq!(
        (sha256.as_deref(), *mode, owner.as_str()),
        (Some(up.sha256()), 0o755, "root")
    );
    assert_eq!(
        f.k3s_version.as_deref(),
        Some("k3s version v1.31.4+k3s1 (lab)")
    );
    assert!(lab.b("agent1").path("/usr/local/bin/k3s").exists());
    assert!(!lab.b("agent2").path("/usr/local/bin/k3s").exists());
    drop(h);

    // Re-flashed: refused loudly until the key is replaced on purpose.
    lab.reflash("agent2").unwrap();
    let err = SshHost::connect_with(&targets[2], &pol, &auth()).unwrap_err();
    assert!(
        matches!(err, TransportError::ChangedHostKey { .. }),
        "{err}"
    );
    let t = trust_with(&targets[2], &pol, &auth(), &kh, true).unwrap();
    assert!(matches!(t, TrustOutcome::Replaced { .. }), "{t:?}");
    let mut h = SshHost::connect_with(&targets[2], &pol, &auth()).unwrap();
    assert_eq!(
        h.facts(&q).unwrap().files["/usr/local/bin/k3s"],
        FileFact::Absent
    );

    // A non-root login through `sudo -n`.
    let mut t = target(&lab, "server1");
    t.user = "euler".into();
    t.privilege = Become::Sudo;
    let mut h = SshHost::connect_with(&t, &pol, &auth()).unwrap();
    assert_eq!(
        h.exec_raw("id -un", &mut &b""[..], None)
            .unwrap()
            .stdout_str(),
        "euler\n"
    );
    assert_eq!(h.exec("id -u", None, None).unwrap().stdout_str(), "0\n");
    assert!(
        !h.set_become_password("unused").unwrap(),
        "passwordless sudo needs no password"
    );
}
