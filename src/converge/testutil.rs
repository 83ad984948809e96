//! Test helpers for the phase unit tests: a typical server state and facts built by hand.

use crate::render::{Content, DesiredFile, HostState, Service, Symlink, text_file};
use crate::transport::{FileFact, facts::FileKind};

use super::phase::Observed;

pub fn state() -> HostState {
    let unit = Some("k3s".to_string());
    HostState {
        node: "server1".into(),
        files: vec![
            DesiredFile {
                path: "/usr/local/bin/k3s".into(),
                content: Content::Local { path: "/nonexistent/k3s".into(), sha256: "ab".repeat(32) },
                mode: 0o755,
                owner: "root:root".into(),
                secret: false,
                restarts: unit.clone(),
            },
            text_file("/etc/systemd/system/k3s.service", "[Unit]\n".into(), 0o644, false, unit.clone()),
            text_file("/etc/systemd/system/k3s.service.env", "K3S_TOKEN=x\n".into(), 0o600, true, unit.clone()),
            text_file(crate::render::CONFIG, "node-name: server1\n".into(), 0o600, false, unit.clone()),
            text_file("/etc/sysctl.d/90-k3s.conf", "net.ipv4.ip_forward = 1\n".into(), 0o644, false, None),
        ],
        symlinks: vec![Symlink { path: "/usr/local/bin/kubectl".into(), target: "/usr/local/bin/k3s".into() }],
        service: Service { unit: "k3s".into(), unit_path: "/etc/systemd/system/k3s.service".into() },
        steps: vec![],
        kernel_modules: vec!["br_netfilter".into()],
        k3s_version: Some("v1.33.4+k3s1".into()),
        detect: vec![],
    }
}

pub fn present(sha: &str, mode: u32) -> FileFact {
    FileFact::Present { kind: FileKind::Regular, mode, owner: "root".into(), group: "root".into(), sha256: Some(sha.into()), link_target: None }
}

/// Facts where exactly the given paths exist with the given sha256 (and their wanted mode).
pub fn facts_with(files: &[(&str, &str)]) -> Observed {
    let st = state();
    let mut o = Observed::default();
    for (p, h) in files {
        let mode = st.files.iter().find(|f| f.path == *p).map(|f| f.mode).unwrap_or(0o644);
        o.facts.files.insert(p.to_string(), present(h, mode));
    }
    o
}
