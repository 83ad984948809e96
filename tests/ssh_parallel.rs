//! Many hosts against real sshd: bounded parallelism, one unreachable and one silent host are
//! reported (name, address, cause) and never hold up the others.

#[path = "support/sshd.rs"]
mod sshd;

use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use rvcluster::transport::{
    EventKind, FactsQuery, Host, SshHost, Summary, Target, TransportError, run_parallel,
};
use sshd::{Sshd, auth_files_only, client_key, policy_with, unique_ip};

#[test]
fn ssh_unreachable_and_silent_hosts_do_not_stall_others() {
    let key = client_key("ed25519", None);
    let boards: Vec<Sshd> = (0..4).map(|_| Sshd::with_key(&key)).collect();
    let d = tempfile::tempdir().unwrap();
    let kh = d.path().join("known_hosts");
    std::fs::write(
        &kh,
        boards
            .iter()
            .map(|b| b.known_hosts_line("ed25519"))
            .collect::<String>(),
    )
    .unwrap();
    let policy = policy_with(&kh);

    // Accepts TCP (kernel backlog) but never says a word: the SSH greeting never comes.
    let silent_ip = unique_ip();
    let silent_listener = TcpListener::bind((silent_ip.as_str(), 0)).unwrap();
    let mut silent = Target::new("silent", silent_ip.clone());
    silent.port = silent_listener.local_addr().unwrap().port();
    silent.connect_timeout = Duration::from_secs(3);
    silent.identity_files = vec![key.private.clone()];
    // Nothing listens here: connection refused.
    let refused_ip = unique_ip();
    let refused_port = TcpListener::bind((refused_ip.as_str(), 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut refused = Target::new("refused", refused_ip.clone());
    refused.port = refused_port;

    let mut targets = vec![silent.clone()];
    targets.extend(
        boards
            .iter()
            .enumerate()
            .map(|(i, b)| b.target(&format!("b{i}"), &key)),
    );
    targets.push(refused.clone());

    let (tx, rx) = mpsc::channel();
    let q = FactsQuery::default();
    let outcomes = run_parallel(&targets, 2, Some(tx), |t, r| {
        let mut h = SshHost::connect_with(t, &policy, &auth_files_only())?;
        r.step("gathering facts");
        h.facts(&q)
    });
    let events: Vec<_> = rx.iter().collect();

    assert_eq!(outcomes.len(), 6);
    for o in &outcomes[1..5] {
        let f = o
            .result
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {e}", o.name));
        assert_eq!(f.arch, std::env::consts::ARCH);
    }
    let silent_err = outcomes[0].result.as_ref().unwrap_err();
    assert!(
        matches!(silent_err, TransportError::Handshake { .. }),
        "{silent_err}"
    );
    assert!(
        silent_err.to_string().contains("no SSH greeting"),
        "{silent_err}"
    );
    let refused_err = outcomes[5].result.as_ref().unwrap_err();
    assert!(
        matches!(refused_err, TransportError::Unreachable { .. }),
        "{refused_err}"
    );
    assert!(
        refused_err
            .to_string()
            .contains(&format!("refused ({refused_ip}:{refused_port})")),
        "{refused_err}"
    );

    // Every good board finished while the silent one was still waiting for its greeting.
    let silent_failed = events
        .iter()
        .position(|e| e.host == "silent" && matches!(e.kind, EventKind::Failed(_)))
        .expect("a Failed event for the silent host");
    for i in 0..4 {
        let done = events
            .iter()
            .position(|e| e.host == format!("b{i}") && matches!(e.kind, EventKind::Done(_)))
            .expect("a Done event");
        assert!(
            done < silent_failed,
            "b{i} waited for the silent host: {events:?}"
        );
    }

    let summary = Summary::of(&outcomes);
    assert_eq!(summary.ok, ["b0", "b1", "b2", "b3"]);
    let text = summary.to_string();
    assert!(text.starts_with("4 host(s) ok, 2 failed"), "{text}");
    assert!(
        text.contains(&format!("silent ({silent_ip}:{})", silent.port)),
        "{text}"
    );
    assert!(
        text.contains(&format!("refused ({refused_ip}:{refused_port})")),
        "{text}"
    );
    drop(silent_listener);
}
