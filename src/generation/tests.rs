use super::*;
use crate::converge::testutil::{facts_with, state};

fn meta() -> Meta {
    Meta { time: 1, user: "me@here".into(), reason: "apply".into(), source: Some("ab".repeat(32)) }
}

#[test]
fn generation_zero_keeps_what_existed_and_names_what_did_not() {
    let st = state();
    let cfg = &st.files[1];
    let mut facts = facts_with(&[(&cfg.path, "cd")]).facts;
    facts.k3s_version = Some("k3s version v1.30.1+k3s1 (abc)".into());
    let m = found(&st, &facts, &meta());
    assert_eq!(m.number, 0);
    assert_eq!(m.files.len(), 1);
    assert_eq!(m.files[0].path, cfg.path);
    assert_eq!(m.files[0].sha256, "cd");
    assert_eq!(m.absent.len(), st.files.len() - 1 + st.symlinks.len());
    assert_eq!(m.k3s.as_deref(), Some("v1.30.1+k3s1"));
}

#[test]
fn next_generation_round_trips_and_back_to_a_state() {
    let st = state();
    let m = next(&st, 4, &meta());
    let text = serde_json::to_string(&m).unwrap();
    let back: Manifest = serde_json::from_str(&text).unwrap();
    assert_eq!(back, m);
    let again = to_state(&m, &st);
    assert_eq!(again.files.len(), st.files.len());
    for (a, b) in again.files.iter().zip(m.files.iter()) {
        assert_eq!(a.sha256(), b.sha256);
        assert!(matches!(a.content, Content::Stored { .. }));
    }
    // The state of a generation makes the same generation again.
    let m2 = next(&again, 4, &meta());
    assert_eq!(m2.files, m.files);
}

#[test]
fn history_parses_and_finds_previous() {
    let st = state();
    let g: Vec<String> = [0u64, 1, 2].iter().map(|n| serde_json::to_string_pretty(&next(&st, *n, &meta())).unwrap()).collect();
    let out = format!("@@rv gen\n{}\n@@rv gen\n{}\n@@rv gen\n{}\n@@rv current\n{}\n@@rv store\n1234\n", g[2], g[0], g[1], g[2]);
    let h = parse_all(&out).unwrap();
    assert_eq!(h.generations.iter().map(|m| m.number).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(h.current, Some(2));
    assert_eq!(h.previous().map(|m| m.number), Some(1));
    assert_eq!(h.store_kib, 1234);
    assert!(parse_all("@@rv gen\n{not json\n").is_err());
}

#[test]
fn summary_and_diff_name_what_changed_and_hide_secrets() {
    let st = state();
    let a = next(&st, 1, &meta());
    let mut b = a.clone();
    b.number = 2;
    b.k3s = Some("v9.9.9+k3s1".into());
    let text_i = b.files.iter().position(|f| !f.binary && !f.secret).unwrap();
    b.files[text_i].sha256 = "11".repeat(32);
    let secret_i = b.files.iter().position(|f| f.secret);
    if let Some(i) = secret_i {
        b.files[i].sha256 = "22".repeat(32);
    }
    let s = summary(Some(&a), &b);
    assert!(s.contains("k3s") && s.contains("changed"), "{s}");
    let want = diff::wanted(&a, &b);
    assert!(want.contains(&"11".repeat(32)));
    assert!(!want.contains(&"22".repeat(32)), "secrets are never fetched");
    let mut blobs = BTreeMap::new();
    blobs.insert(a.files[text_i].sha256.clone(), b"old line\n".to_vec());
    blobs.insert("11".repeat(32), b"new line\n".to_vec());
    let d = diff::render(&a, &b, &blobs);
    assert!(d.contains("-old line") && d.contains("+new line"), "{d}");
    if secret_i.is_some() {
        assert!(d.contains("content hidden"), "{d}");
    }
    assert_eq!(diff::render(&a, &a, &blobs), "no differences\n");
}

#[test]
fn minor_versions() {
    assert_eq!(minor_of("v1.33.4+k3s1"), Some((1, 33)));
    assert_eq!(minor_of("1.34.0"), Some((1, 34)));
    assert_eq!(minor_of("latest"), None);
}

/// The record as an apply script carries it, run in `sh` with its state directory moved under `root`.
fn run_record(m: &Manifest, root: &std::path::Path) -> std::process::Output {
    let mut script = crate::converge::script::Script::default();
    add_record(&mut script, m, 3, true);
    let text = script.render().replace(crate::converge::STATE_DIR, &root.display().to_string());
    std::process::Command::new("/bin/sh").arg("-c").arg(text).output().unwrap()
}

#[test]
fn a_file_the_store_cannot_keep_stops_the_record_before_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let file = dir.path().join("conf");
    std::fs::write(&file, "a = 1\n").unwrap();
    let mut m = next(&state(), 1, &meta());
    m.files.truncate(1);
    m.files[0].path = file.display().to_string();
    m.files[0].sha256 = crate::render::sha256_hex(b"a = 1\n");
    m.files[0].binary = false;
    let current = root.join("generations/current.json");
    // The file on disk is not what the manifest says: the store refuses it, nothing is recorded.
    std::fs::write(&file, "changed behind our back\n").unwrap();
    let out = run_record(&m, &root);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!current.exists() && !root.join("generations/1/manifest.json").exists(), "no manifest without its files");
    // As the manifest says: kept, then the manifest and current.json, the same bytes.
    std::fs::write(&file, "a = 1\n").unwrap();
    let out = run_record(&m, &root);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(root.join("store").join(&m.files[0].sha256)).unwrap(), b"a = 1\n");
    assert_eq!(std::fs::read_to_string(&current).unwrap(), manifest_text(&m));
    assert_eq!(std::fs::read(root.join("generations/1/manifest.json")).unwrap(), std::fs::read(&current).unwrap());
}

/// [`gc_commands`] run in `sh` with its state directory moved under `root`; the store's entries after.
fn run_gc(root: &std::path::Path, current: u64, keep: u32, sweep: Sweep) -> std::collections::BTreeSet<String> {
    let text = gc_commands(current, keep, sweep).replace(crate::converge::STATE_DIR, &root.display().to_string());
    let out = std::process::Command::new("/bin/sh").arg("-c").arg(text).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::read_dir(root.join("store")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn an_apply_sweeps_the_store_only_when_it_deleted_a_generation_and_gc_always_does() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let sha = |c: &str| c.repeat(64);
    for (n, c) in [(0, "a"), (1, "b"), (2, "c")] {
        std::fs::create_dir_all(root.join(format!("generations/{n}"))).unwrap();
        std::fs::write(root.join(format!("generations/{n}/manifest.json")), format!("{{\"sha256\": \"{}\"}}", sha(c))).unwrap();
    }
    std::fs::copy(root.join("generations/2/manifest.json"), root.join("generations/current.json")).unwrap();
    std::fs::create_dir_all(root.join("store")).unwrap();
    for c in ["a", "b", "c", "d"] {
        std::fs::write(root.join("store").join(sha(c)), c).unwrap();
    }
    let all: std::collections::BTreeSet<String> = ["a", "b", "c", "d"].iter().map(|c| sha(c)).collect();
    // Nothing to delete (keep 3 of 0..2): an apply leaves the store alone, even `d` that no manifest names.
    assert_eq!(run_gc(root, 2, 3, Sweep::OnlyAfterRemoval), all);
    // `rvcluster gc` sweeps it.
    let mut want = all.clone();
    want.remove(&sha("d"));
    assert_eq!(run_gc(root, 2, 3, Sweep::Always), want);
    // keep=1 deletes generation 1: the apply's sweep drops its file, generation 0's stays.
    std::fs::write(root.join("store").join(sha("d")), "d").unwrap();
    let left = run_gc(root, 2, 1, Sweep::OnlyAfterRemoval);
    assert!(!root.join("generations/1").exists());
    assert_eq!(left, [sha("a"), sha("c")].into_iter().collect());
}

#[test]
fn the_records_an_apply_ends_with_and_its_manifest_share_one_hash_pass() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let bin = tempfile::tempdir().unwrap();
    let calls = bin.path().join("calls");
    crate::transport::stub::counting(bin.path(), &calls, "sha256sum", true);
    let mut m = next(&state(), 1, &meta());
    m.files.clear();
    let mut script = crate::converge::script::Script::default();
    // What the service phase and the managed-file record add last, then the generation record.
    let rec = format!("{}/started-with-k3s.list", crate::converge::STATE_DIR);
    let copy = crate::transport::cmd::TextCopy { dest: &rec, mode: 0o600, owner: None, kept: false };
    script.text(None, &[copy], "x\n", &crate::render::sha256_hex(b"x\n"));
    add_record(&mut script, &m, 3, false);
    let text = script.render().replace(crate::converge::STATE_DIR, &root.display().to_string());
    std::fs::create_dir_all(&root).unwrap();
    let out = std::process::Command::new("sh").arg("-c").arg(text).env("PATH", crate::transport::stub::path_first(bin.path())).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&calls).unwrap().lines().count(), 1, "one pass for the record and both manifest copies");
    assert_eq!(std::fs::read_to_string(root.join("generations/current.json")).unwrap(), manifest_text(&m));
    assert_eq!(std::fs::read_to_string(root.join("started-with-k3s.list")).unwrap(), "x\n");
}
