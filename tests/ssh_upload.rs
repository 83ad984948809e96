//! Uploads over real sshd: 100 MiB streamed in constant memory, atomic replacement, skipped
//! when the host has the same sha256, a corrupted transfer leaves the old file in place.

#[path = "support/sshd.rs"]
mod sshd;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rvcluster::transport::{Host, LocalHost, RemoteFile, SshHost, TransportError, UploadOutcome};
use sha2::Digest;
use sshd::{Sshd, auth_files_only, client_key, trusted};

const MIB: u64 = 1 << 20;

fn big_file(dir: &Path, size: u64, seed: u64) -> std::path::PathBuf {
    let p = dir.join(format!("big-{seed}"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut buf = vec![0u8; MIB as usize];
    for _ in 0..size / MIB {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        f.write_all(&buf).unwrap();
    }
    f.flush().unwrap();
    p
}

fn sha_file(p: &Path) -> String {
    rvcluster::transport::host::sha256_reader(std::fs::File::open(p).unwrap())
        .unwrap()
        .0
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("rvcluster-tmp"))
        .collect()
}

fn peak_rss_mib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        / 1024
}

fn connect(sshd: &Sshd, key: &sshd::ClientKey) -> (SshHost, tempfile::TempDir) {
    let (dir, policy) = trusted(sshd, "ed25519");
    let h = SshHost::connect_with(&sshd.target("b1", key), &policy, &auth_files_only())
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    (h, dir)
}

/// A real sshd whose sessions get `PATH=path` (commands taken away or put in front), and a
/// host connected to it.
fn connect_with_path(path: &str) -> (Sshd, SshHost, tempfile::TempDir) {
    let key = client_key("ed25519", None);
    let sshd = Sshd::start(sshd::SshdOptions {
        authorized_keys: vec![key.public.clone()],
        extra_config: format!("SetEnv PATH={path}\n"),
        ..Default::default()
    });
    let (h, dir) = connect(&sshd, &key);
    (sshd, h, dir)
}

/// 100 MiB, streamed: the destination only ever holds the complete old or the complete new
/// file, mode and owner are set, no temp file stays behind, memory stays bounded, and a
/// second upload is skipped.
fn upload_100mib_atomic_then_skip(h: &mut dyn Host) {
    let src = tempfile::tempdir().unwrap();
    let local = big_file(src.path(), 100 * MIB, 1);
    let remote = tempfile::tempdir().unwrap();
    let dest = remote.path().join("k3s");
    std::fs::write(&dest, b"old k3s").unwrap();
    let dest_s = dest.display().to_string();

    let done = AtomicBool::new(false);
    let rss_before = peak_rss_mib();
    let outcome = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut seen = std::collections::BTreeSet::new();
            while !done.load(Ordering::SeqCst) {
                if let Ok(m) = std::fs::metadata(&dest) {
                    seen.insert(m.len());
                }
            }
            seen
        });
        let o = h
            .upload(
                &local,
                &RemoteFile::new(dest_s.clone(), 0o755).owned_by("root:root"),
            )
            .unwrap();
        done.store(true, Ordering::SeqCst);
        let seen = watcher.join().unwrap();
        assert!(
            seen.iter().all(|&l| l == 7 || l == 100 * MIB),
            "dest was seen half-written: sizes {seen:?}"
        );
        o
    });
    let rss_growth = peak_rss_mib().saturating_sub(rss_before);
    assert!(
        rss_growth < 64,
        "peak RSS grew by {rss_growth} MiB while uploading 100 MiB"
    );
    assert_eq!(
        outcome,
        UploadOutcome::Uploaded {
            sha256: sha_file(&local),
            bytes: 100 * MIB
        }
    );
    assert_eq!(sha_file(&dest), sha_file(&local));
    let meta = std::fs::metadata(&dest).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    assert!(
        leftovers(remote.path()).is_empty(),
        "{:?}",
        leftovers(remote.path())
    );

    // Same content again: nothing is sent; a drifted mode is put back.
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ino = meta.ino();
    let again = h
        .upload(&local, &RemoteFile::new(dest_s.clone(), 0o755))
        .unwrap();
    assert_eq!(
        again,
        UploadOutcome::Unchanged {
            sha256: sha_file(&local)
        }
    );
    let meta = std::fs::metadata(&dest).unwrap();
    assert_eq!(meta.ino(), ino, "an unchanged file must not be rewritten");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
}

#[test]
fn ssh_upload_100mib_atomic_then_skip() {
    let key = client_key("ed25519", None);
    let sshd = Sshd::with_key(&key);
    let (mut h, _d) = connect(&sshd, &key);
    upload_100mib_atomic_then_skip(&mut h);
}

#[test]
fn local_upload_100mib_atomic_then_skip() {
    upload_100mib_atomic_then_skip(&mut LocalHost::new("local"));
}

fn sha_mismatch_leaves_old_file(h: &mut dyn Host) {
    let remote = tempfile::tempdir().unwrap();
    let dest = remote.path().join("registries.yaml");
    std::fs::write(&dest, b"old content\n").unwrap();
    let wrong = "0".repeat(64);
    let mut data: &[u8] = b"new content that does not hash to zeros\n";
    let err = h
        .upload_verified(
            &mut data,
            &wrong,
            &RemoteFile::new(dest.display().to_string(), 0o600),
        )
        .unwrap_err();
    let TransportError::ShaMismatch {
        expected, actual, ..
    } = &err
    else {
        panic!("unexpected {err}")
    };
    assert_eq!(expected, &wrong);
    assert_eq!(
        actual,
        &hex::encode(sha2::Sha256::digest(
            b"new content that does not hash to zeros\n"
        ))
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"old content\n");
    assert!(
        leftovers(remote.path()).is_empty(),
        "{:?}",
        leftovers(remote.path())
    );
}

#[test]
fn ssh_sha_mismatch_leaves_old_file() {
    let key = client_key("ed25519", None);
    let sshd = Sshd::with_key(&key);
    let (mut h, _d) = connect(&sshd, &key);
    sha_mismatch_leaves_old_file(&mut h);
}

#[test]
fn local_sha_mismatch_leaves_old_file() {
    sha_mismatch_leaves_old_file(&mut LocalHost::new("local"));
}

#[test]
fn ssh_write_creates_parent_dirs_with_mode_and_is_idempotent() {
    let key = client_key("ed25519", None);
    let sshd = Sshd::with_key(&key);
    let (mut h, _d) = connect(&sshd, &key);
    let remote = tempfile::tempdir().unwrap();
    let dest = remote.path().join("etc/rancher/k3s/config.yaml");
    let f = RemoteFile::new(dest.display().to_string(), 0o600).owned_by("root");
    let o = h.write(b"token: s3cret\n", &f).unwrap();
    assert!(o.changed());
    assert_eq!(std::fs::read(&dest).unwrap(), b"token: s3cret\n");
    assert_eq!(
        std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    assert!(!h.write(b"token: s3cret\n", &f).unwrap().changed());
    assert!(h.write(b"token: other\n", &f).unwrap().changed());
    assert_eq!(std::fs::read(&dest).unwrap(), b"token: other\n");
}

#[test]
fn ssh_upload_missing_local_file_names_it() {
    let key = client_key("ed25519", None);
    let sshd = Sshd::with_key(&key);
    let (mut h, _d) = connect(&sshd, &key);
    let err = h
        .upload(
            Path::new("/nonexistent/k3s-riscv64"),
            &RemoteFile::new("/tmp/x", 0o755),
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/k3s-riscv64"),
        "{err}"
    );
}

#[test]
fn ssh_upload_pinned_verifies_on_the_host() {
    let key = client_key("ed25519", None);
    let sshd = Sshd::with_key(&key);
    let (mut h, _d) = connect(&sshd, &key);
    let src = tempfile::tempdir().unwrap();
    let local = big_file(src.path(), 3 * MIB, 7);
    let sha = sha_file(&local);
    let remote = tempfile::tempdir().unwrap();
    let dest = RemoteFile::new(remote.path().join("k3s").display().to_string(), 0o755);
    // Upper-case digests from a lock file are accepted.
    let o = h.upload_pinned(&local, &sha.to_uppercase(), &dest).unwrap();
    assert_eq!(
        o,
        UploadOutcome::Uploaded {
            sha256: sha.clone(),
            bytes: 3 * MIB
        }
    );
    assert!(!h.upload_pinned(&local, &sha, &dest).unwrap().changed());
    // The cache entry got corrupted: the host notices, the installed file stays.
    let other = big_file(src.path(), MIB, 8);
    let err = h
        .upload_pinned(&other, &sha.replace(&sha[..4], "ffff"), &dest)
        .unwrap_err();
    assert!(matches!(err, TransportError::ShaMismatch { .. }), "{err}");
    assert_eq!(sha_file(&remote.path().join("k3s")), sha);
    assert!(leftovers(remote.path()).is_empty());
}

#[test]
fn ssh_upload_into_unwritable_place_fails_cleanly() {
    let key = client_key("ed25519", None);
    let sshd = Sshd::with_key(&key);
    let (mut h, _d) = connect(&sshd, &key);
    // /proc does not take new files: the temp file cannot be made.
    let err = h
        .write(b"x", &RemoteFile::new("/proc/rvcluster-test-file", 0o644))
        .unwrap_err();
    assert!(matches!(err, TransportError::CommandFailed { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("uploading /proc/rvcluster-test-file"),
        "{err}"
    );
}

#[test]
fn ssh_upload_on_a_host_without_openssl_uses_sha256sum() {
    // PATH holds every command of /usr/bin and /bin except openssl.
    let bin = tempfile::tempdir().unwrap();
    for dir in ["/usr/bin", "/bin"] {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name();
            if name != "openssl" && !bin.path().join(&name).exists() {
                std::os::unix::fs::symlink(e.path(), bin.path().join(&name)).unwrap();
            }
        }
    }
    let (_sshd, mut h, _d) = connect_with_path(&bin.path().display().to_string());
    assert!(
        !h.exec("command -v openssl", None, None).unwrap().success(),
        "openssl still on PATH"
    );
    let remote = tempfile::tempdir().unwrap();
    let dest = RemoteFile::new(remote.path().join("f").display().to_string(), 0o644);
    assert!(h.write(b"no openssl here\n", &dest).unwrap().changed());
    assert!(!h.write(b"no openssl here\n", &dest).unwrap().changed());
    let mut data: &[u8] = b"x";
    let err = h
        .upload_verified(&mut data, &"0".repeat(64), &dest)
        .unwrap_err();
    assert!(matches!(err, TransportError::ShaMismatch { .. }), "{err}");
    assert_eq!(
        std::fs::read(remote.path().join("f")).unwrap(),
        b"no openssl here\n"
    );
}

/// A compressed upload: fewer bytes cross the wire, the host decompresses while receiving and
/// verifies the uncompressed sha256; a stream that decompresses to other bytes is refused and
/// the installed file stays.
#[test]
fn ssh_upload_compressed_sends_fewer_bytes_and_verifies_the_uncompressed_file() {
    use rvcluster::transport::cmd::Codec;
    let key = client_key("ed25519", None);
    let sshd = Sshd::with_key(&key);
    let (mut h, _d) = connect(&sshd, &key);
    let src = tempfile::tempdir().unwrap();
    // Compressible like a binary: repeated text with some variation.
    let local = src.path().join("k3s");
    let text: String = (0..200_000).map(|i| format!("symbol_{}_{}\n", i % 977, i % 13)).collect();
    std::fs::write(&local, &text).unwrap();
    let sha = sha_file(&local);
    // SAFETY: this test binary's tests do not read XDG_CACHE_HOME concurrently.
    unsafe { std::env::set_var("XDG_CACHE_HOME", src.path().join("cache")) };
    for codec in [Codec::Zstd, Codec::Gzip] {
        let packed = rvcluster::artifact::compressed(&local, &sha, codec).unwrap();
        let remote = tempfile::tempdir().unwrap();
        let dest = RemoteFile::new(remote.path().join("bin/k3s").display().to_string(), 0o755);
        let o = h.upload_compressed(&packed, codec, &sha, &dest).unwrap();
        let UploadOutcome::Uploaded { bytes, .. } = o else { panic!("{o:?}") };
        assert!(bytes * 4 < text.len() as u64, "{codec:?}: sent {bytes} of {}", text.len());
        assert_eq!(sha_file(&remote.path().join("bin/k3s")), sha);
        assert_eq!(std::fs::metadata(remote.path().join("bin/k3s")).unwrap().permissions().mode() & 0o777, 0o755);
        // Another file's compressed form under this digest: refused, nothing replaced.
        let other = src.path().join("other");
        std::fs::write(&other, "not the same\n").unwrap();
        let other_sha = sha_file(&other);
        let wrong = rvcluster::artifact::compressed(&other, &other_sha, codec).unwrap();
        let dest2 = RemoteFile::new(remote.path().join("bin/k3s").display().to_string(), 0o755);
        std::fs::write(remote.path().join("bin/k3s"), "old").unwrap();
        let err = h.upload_compressed(&wrong, codec, &sha, &dest2).unwrap_err();
        assert!(matches!(err, TransportError::ShaMismatch { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(remote.path().join("bin/k3s")).unwrap(), "old");
        assert!(leftovers(&remote.path().join("bin")).is_empty());
    }
}

/// zstd decompresses without its I/O threads where it knows `--no-asyncio` (1.5.4 and later),
/// and a zstd from before the option (here: the real one behind a front that refuses it, as an
/// old zstd's argument parser does) still receives the upload.
#[test]
fn ssh_upload_compressed_uses_no_asyncio_only_where_zstd_knows_it() {
    use rvcluster::transport::cmd::Codec;
    let real = String::from_utf8(std::process::Command::new("sh").args(["-c", "command -v zstd"]).output().unwrap().stdout).unwrap();
    let src = tempfile::tempdir().unwrap();
    let local = src.path().join("k3s");
    let text: String = (0..100_000).map(|i| format!("symbol_{}\n", i % 977)).collect();
    std::fs::write(&local, &text).unwrap();
    let sha = sha_file(&local);
    // SAFETY: this test binary's tests do not read XDG_CACHE_HOME concurrently.
    unsafe { std::env::set_var("XDG_CACHE_HOME", src.path().join("cache")) };
    let packed = rvcluster::artifact::compressed(&local, &sha, Codec::Zstd).unwrap();
    for old in [false, true] {
        let front = tempfile::tempdir().unwrap();
        let log = front.path().join("calls");
        let refuse = if old { "case \" $* \" in *' --no-asyncio '*) echo 'Incorrect parameter: --no-asyncio' >&2; exit 1;; esac\n" } else { "" };
        let script = format!("#!/bin/sh\necho \"$*\" >> '{}'\n{refuse}exec {} \"$@\"\n", log.display(), real.trim());
        std::fs::write(front.path().join("zstd"), script).unwrap();
        std::fs::set_permissions(front.path().join("zstd"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let (_sshd, mut h, _d) = connect_with_path(&format!("{}:/usr/bin:/bin", front.path().display()));
        let remote = tempfile::tempdir().unwrap();
        let dest = RemoteFile::new(remote.path().join("k3s").display().to_string(), 0o755);
        h.upload_compressed(&packed, Codec::Zstd, &sha, &dest).unwrap();
        assert_eq!(sha_file(&remote.path().join("k3s")), sha, "old zstd: {old}");
        let calls = std::fs::read_to_string(&log).unwrap();
        // No call only to ask: the new zstd decompresses on the first; the old one refuses
        // the option (reading nothing) and the plain call gets the whole stream.
        let decompress: Vec<&str> = calls.lines().collect();
        assert!(decompress.iter().all(|l| l.contains("-dq -o ")), "{calls}");
        assert!(decompress[0].contains("--no-asyncio"), "{calls}");
        assert_eq!(decompress.len(), if old { 2 } else { 1 }, "{calls}");
        if old {
            assert!(!decompress[1].contains("--no-asyncio"), "{calls}");
        }
    }
}

/// Uploads as requests on the held lock+facts command (src/converge/session.rs answers them):
/// a new file, the same again (the command exits without reading, the rest is drained), another
/// file's bytes under the digest (refused, the old file stays), one whose directory cannot be
/// made (fails before reading), an uncompressed one: each request finds the stream where the one
/// before left it.
fn held_uploads_then_the_script(h: &mut dyn Host) {
    use rvcluster::converge::session;
    use rvcluster::transport::cmd::Codec;
    use rvcluster::transport::host::upload_held;
    let src = tempfile::tempdir().unwrap();
    // Incompressible and far larger than a pipe's buffer: a request whose command stops reading
    // early leaves most of it in the stream unless the shell drains it.
    let local = big_file(src.path(), 4 * MIB, 7);
    let sha = sha_file(&local);
    let packed = rvcluster::artifact::compressed(&local, &sha, Codec::Zstd).unwrap();
    let remote = tempfile::tempdir().unwrap();
    let path = remote.path().join("bin/k3s");
    let dest = RemoteFile::new(path.display().to_string(), 0o755);
    let q = rvcluster::transport::FactsQuery { paths: vec![path.display().to_string()], ..Default::default() };
    // Plan mode (no lock under /var/lib/rvcluster on this machine): the same request loop.
    let mut held = h.exec_held(&session::command(false, "test", &q), session::HEAD_END, None).unwrap();
    assert!(!held.ended());
    let name = h.name().to_string();

    let o = upload_held(held.as_mut(), &name, &packed, Some(Codec::Zstd), &sha, &dest).unwrap().unwrap();
    assert!(matches!(o, UploadOutcome::Uploaded { bytes, .. } if bytes == std::fs::metadata(&packed).unwrap().len()), "{o:?}");
    assert_eq!(sha_file(&path), sha);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o755);
    let o = upload_held(held.as_mut(), &name, &packed, Some(Codec::Zstd), &sha, &dest).unwrap().unwrap();
    assert!(matches!(o, UploadOutcome::Unchanged { .. }), "{o:?}");

    let other = src.path().join("other");
    std::fs::write(&other, "not the same\n".repeat(5000)).unwrap();
    let wrong = rvcluster::artifact::compressed(&other, &sha_file(&other), Codec::Zstd).unwrap();
    std::fs::write(&path, "old").unwrap();
    let err = upload_held(held.as_mut(), &name, &wrong, Some(Codec::Zstd), &sha, &dest).unwrap().unwrap_err();
    assert!(matches!(err, TransportError::ShaMismatch { .. }), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
    assert!(leftovers(&remote.path().join("bin")).is_empty());

    // A command that fails before reading (its directory cannot be made): the shell drains.
    std::fs::write(remote.path().join("blocker"), "a file").unwrap();
    let blocked = RemoteFile::new(remote.path().join("blocker/k3s").display().to_string(), 0o755);
    let err = upload_held(held.as_mut(), &name, &packed, Some(Codec::Zstd), &sha, &blocked).unwrap().unwrap_err();
    assert!(matches!(err, TransportError::CommandFailed { .. }), "{err}");

    let plain = RemoteFile::new(remote.path().join("plain").display().to_string(), 0o600);
    let o = upload_held(held.as_mut(), &name, &other, None, &sha_file(&other), &plain).unwrap().unwrap();
    assert!(matches!(o, UploadOutcome::Uploaded { .. }), "{o:?}");
    assert_eq!(std::fs::read(remote.path().join("plain")).unwrap(), std::fs::read(&other).unwrap());

    // (The script after the uploads: every e2e apply; plan mode has no state directory for it.)
    let out = held.finish(b"", None).unwrap();
    assert_eq!(out.status, 0, "{}", out.stderr_str());
    script_runs_only_whole(h, &q, remote.path());
}

/// A script sent inline (session::script_input) runs when it arrived whole and not at all when
/// the stream was cut anywhere, even right before or inside its last line.
fn script_runs_only_whole(h: &mut dyn Host, q: &rvcluster::transport::facts::FactsQuery, dir: &std::path::Path) {
    use rvcluster::converge::session;
    let ran = dir.join("ran");
    let script = format!("printf x >> '{}'\necho '@@rv from the script'\nexit 7\n", ran.display());
    let input = session::script_input(&script);
    let text = String::from_utf8(input.clone()).unwrap();
    assert!(text.ends_with('\n') && text.lines().count() == 5, "{text}");
    let body = text.find('\n').unwrap() + 1;
    let last = text[..text.len() - 1].rfind('\n').unwrap() + 1;
    for cut in [body, body + 10, last - 1, last, last + 5, text.len() - 2, text.len() - 1, text.len()] {
        let held = h.exec_held(&session::command(false, "test", q), session::HEAD_END, None).unwrap();
        let out = held.finish(&input[..cut], None).unwrap();
        let whole = cut >= text.len() - 1; // (only the last newline missing: all of it is there)
        let times = std::fs::read_to_string(&ran).map(|t| t.len()).unwrap_or(0);
        if whole {
            assert_eq!((out.status, times), (7, 1), "cut at {cut}: {}", out.stderr_str());
            assert!(out.stdout_str().contains("@@rv from the script"));
            std::fs::remove_file(&ran).unwrap();
        } else {
            assert_eq!((out.status, times), (1, 0), "cut at {cut}: {}", out.stderr_str());
            assert!(out.stdout_str().lines().any(|l| l == "@@rv truncated"), "cut at {cut}: {}", out.stdout_str());
        }
    }
    // Past the inline limit: the first line is the bare sha256 (the state directory's file).
    let big = format!("#{}\n", "x".repeat(session::INLINE_MAX));
    assert!(String::from_utf8(session::script_input(&big)).unwrap().starts_with(&rvcluster::render::sha256_hex(big.as_bytes())));
}

#[test]
fn held_uploads_over_ssh_and_locally_keep_the_stream_in_step() {
    let src = tempfile::tempdir().unwrap();
    // SAFETY: this test binary's tests do not read XDG_CACHE_HOME concurrently.
    unsafe { std::env::set_var("XDG_CACHE_HOME", src.path().join("cache")) };
    let key = client_key("ed25519", None);
    let sshd = Sshd::with_key(&key);
    let (mut h, _d) = connect(&sshd, &key);
    held_uploads_then_the_script(&mut h);
    held_uploads_then_the_script(&mut LocalHost::new("local"));
}
