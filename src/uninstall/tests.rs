use super::*;
use crate::generation::{FileEntry, LinkEntry};

fn manifest(n: u64, files: &[(&str, &str)], links: &[(&str, &str)]) -> Manifest {
    Manifest {
        number: n,
        time: 0,
        user: "t".into(),
        reason: "found".into(),
        source: None,
        k3s: None,
        unit: None,
        files: files
            .iter()
            .map(|(p, sha)| FileEntry { path: p.to_string(), mode: 0o640, owner: "root:root".into(), sha256: sha.to_string(), binary: false, secret: false, restarts: None })
            .collect(),
        absent: vec![],
        symlinks: links.iter().map(|(p, t)| LinkEntry { path: p.to_string(), target: t.to_string() }).collect(),
        datastore: None,
    }
}

fn sh_ok(script: &str) -> std::process::Output {
    std::process::Command::new("sh").arg("-c").arg(script).output().unwrap()
}

#[test]
fn scripts_are_valid_sh() {
    let g0 = manifest(0, &[("/etc/rancher/k3s/config.yaml", &"a".repeat(64))], &[]);
    let cur = manifest(3, &[("/etc/rancher/k3s/config.yaml", &"b".repeat(64)), ("/etc/modules-load.d/k3s.conf", &"c".repeat(64))], &[("/usr/local/bin/kubectl", "/usr/local/bin/k3s")]);
    let r = "/var/lib/rvcluster/registry";
    for spec in [Spec::node("s", crate::spec::Role::Server, None), Spec::registry("mac", r, false), Spec::registry("mac", r, true)] {
        let text = spec.script(Some(&g0), Some(&cur));
        let out = std::process::Command::new("sh").arg("-n").arg("-c").arg(&text).output().unwrap();
        assert!(out.status.success(), "{}: {}", spec.name, String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn a_node_script_does_what_killall_and_uninstall_do_then_gives_back_generation_0() {
    let g0 = manifest(0, &[("/etc/rancher/k3s/config.yaml", &"a".repeat(64))], &[]);
    let cur = manifest(3, &[("/etc/rancher/k3s/config.yaml", &"b".repeat(64)), ("/etc/modules-load.d/k3s.conf", &"c".repeat(64))], &[]);
    let s = Spec::node("a1", crate::spec::Role::Agent, None).script(Some(&g0), Some(&cur)).replace('\'', "");
    let at = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle} missing:\n{s}"));
    // order: stop, kill shims, unmount, links, rules, files, reload, restore, state
    let order = [
        "systemctl stop k3s-agent.service",
        "containerd-shim",
        "rv_umount_under /run/k3s",
        "rv_umount_under /var/lib/kubelet/pods",
        "master cni0",
        "ip link delete flannel.1",
        "grep -v KUBE- | grep -v CNI- | grep -iv flannel",
        "rv_rm /usr/local/bin/k3s",
        "rv_rm /var/lib/rancher/k3s",
        "rv_rm /etc/systemd/system/k3s-agent.service.env",
        "rv_rm /etc/modules-load.d/k3s.conf",
        "systemctl daemon-reload",
        "/var/lib/rvcluster/store/aaaa",
        "rv_rm /var/lib/rvcluster\n",
    ];
    let pos: Vec<usize> = order.iter().map(|n| at(n)).collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{order:?} at {pos:?}");
    // the user's config.yaml is not removed as a managed file: it is restored from the store
    assert!(!s.contains("rv_rm /etc/rancher/k3s/config.yaml"));
    assert!(s.contains("chmod 0640"), "mode from the manifest");
}

#[test]
fn the_registry_keeps_its_data_unless_purged() {
    let r = "/var/lib/rvcluster/registry";
    let keep = Spec::registry("mac", r, false).script(None, None).replace('\'', "");
    assert!(keep.contains("systemctl stop rvcluster-registry.service"));
    assert!(!keep.contains("rv_rm /var/lib/rvcluster/registry") && !keep.contains("rv_rm /var/lib/rvcluster\n"), "{keep}");
    assert!(keep.contains("[ \"$e\" = /var/lib/rvcluster/registry ] && continue"), "{keep}");
    assert!(!keep.contains("containerd-shim") && !keep.contains("/usr/local/bin/k3s"));
    let purge = Spec::registry("mac", r, true).script(None, None).replace('\'', "");
    assert!(purge.contains("rv_rm /var/lib/rvcluster/registry") && purge.contains("rv_rm /var/lib/rvcluster\n"));
    assert!(Spec::registry("mac", r, false).keeps().unwrap().contains("/var/lib/rvcluster/registry"));
}

/// rv_rm on a real directory tree: files, links, dot files go; what is gone is reported once.
#[test]
fn rv_rm_removes_trees_and_says_so() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("x");
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::write(root.join("a/b/.hidden"), "h").unwrap();
    std::os::unix::fs::symlink("/nonexistent", root.join("dangling")).unwrap();
    let q = |p: &std::path::Path| quote(&p.to_string_lossy());
    let script = format!("{HELPERS}rv_rm {x}\nrv_rm {x}\nrv_rm {l}\necho status=$rv_failed\n", x = q(&root), l = q(&d.path().join("nothing")));
    let out = sh_ok(&script);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("@@rv did removed").count(), 1, "{text}");
    assert!(text.contains("status=0") && !root.exists(), "{text}");
}

#[test]
fn generation_0_comes_back_verified() {
    let d = tempfile::tempdir().unwrap();
    let content = "mine\n";
    let sha = crate::render::sha256_hex(content.as_bytes());
    let store = d.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(store.join(&sha), content).unwrap();
    let dest = d.path().join("etc/conf.yaml");
    let m = manifest(0, &[(&dest.to_string_lossy(), &sha)], &[(&d.path().join("link").to_string_lossy(), "conf.yaml")]);
    let text = restore_part(&m).replace(&generation::store_path(&sha), &store.join(&sha).to_string_lossy());
    // chown to root works only as root: the lab tests run as root; here check mode and content
    let text = if crate::transport::cmd::whoami() == "root" { text } else { text.replace(" && chown 'root:root' \"$t\"", "") };
    let out = sh_ok(&format!("{}\n{HELPERS}{text}echo status=$rv_failed\n", cmd::SHA_FN));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("status=0"), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), content);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o640);
    assert_eq!(std::fs::read_link(d.path().join("link")).unwrap().to_string_lossy(), "conf.yaml");
    // a store entry with other bytes is refused: the file is not replaced
    std::fs::write(store.join(&sha), "tampered\n").unwrap();
    std::fs::write(&dest, "other\n").unwrap();
    let out = sh_ok(&format!("{}\n{HELPERS}{text}echo status=$rv_failed\n", cmd::SHA_FN));
    assert!(String::from_utf8_lossy(&out.stdout).contains("status=1"));
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "other\n");
}

#[test]
fn drain_says_what_kubectl_needs() {
    let d = Drain { timeout: Duration::from_secs(300), force: false };
    assert_eq!(drain_command("/usr/local/bin/k3s", "agent2", &d), "/usr/local/bin/k3s kubectl drain agent2 --ignore-daemonsets --delete-emptydir-data --timeout=300s");
    assert!(drain_command("k3s", "a", &Drain { force: true, ..d }).ends_with(" --force"));
}
