//! The files rendered for the blog's cluster, byte for byte against reviewed expected files under
//! fixtures/expected/blog-lab/ (the file name is the board path with `/` replaced by `_`).
//! Set RVCLUSTER_BLESS=1 to rewrite them after a reviewed change.

use std::path::Path;

use rvcluster::profile::Profiles;
use rvcluster::render::{Content, Secrets, node_state};

#[test]
fn blog_lab_server_files_match_the_reviewed_ones() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let profiles = Profiles::builtin();
    let c = rvcluster::spec::load(&root.join("fixtures/blog-lab.kdl"), &profiles).unwrap();
    let node = &c.nodes[0];
    let os = profiles.os("openeuler-riscv64").unwrap();
    let pw = "not-a-real-password";
    let st = node_state(&c, os, node, &Secrets { token: None, registry_password: Some(pw) }).unwrap();
    let dir = root.join("fixtures/expected/blog-lab");
    let bless = std::env::var_os("RVCLUSTER_BLESS").is_some();
    let mut checked = 0;
    for f in &st.files {
        let Content::Text(text) = &f.content else {
            assert_eq!(f.path, "/usr/local/bin/k3s");
            assert_eq!(f.mode, 0o755);
            continue;
        };
        let name = f.path.trim_start_matches('/').replace('/', "_");
        let expected_path = dir.join(&name);
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&expected_path, text).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| panic!("missing {}", expected_path.display()));
        assert_eq!(text, &expected, "{}", f.path);
        checked += 1;
    }
    assert!(checked >= 6, "config, registries, unit, env, manifests, modules, sysctl");
    let reg = st.files.iter().find(|f| f.path == "/etc/rancher/k3s/registries.yaml").unwrap();
    assert!(reg.secret && reg.mode == 0o600, "registries.yaml holds the registry password");
    let env = st.files.iter().find(|f| f.path.ends_with("k3s.service.env")).unwrap();
    assert_eq!(env.mode, 0o600);
    assert_eq!(st.symlinks.len(), 3);
}
