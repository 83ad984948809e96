//! Image builds (`image "..." { build { ... } }`, `rvcluster image build`): the fixture's pause
//! image is the same archive wherever, however and whenever it is built (and matches a pinned
//! digest); real skopeo reads it as linux/riscv64 with the declared entrypoint; `base` and
//! `config-from` fetch from a real registry playing docker.io; the closure check offers a known
//! substitute from profiles/substitutes.kdl after checking it upstream.

#[path = "../fixtures/images/gen.rs"]
mod images;
#[path = "support/registry.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use support::{Opts, TestRegistry};

/// The manifest digest of fixtures/image-build's pause image. It changes only when the builder's
/// output changes (tar, gzip, JSON, layout) or the fixture does: update it deliberately, with a
/// note in the commit, and bump build::BUILDER when the same inputs now give other bytes.
const PAUSE_DIGEST: &str = "sha256:1adc10e256d12a29bc25cbb682b8f4a2a059de6bc4a2cf11945684a3b1bbf83b";
const PAUSE: &str = "docker.io/rancher/mirrored-pause:3.6";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs rvcluster in `dir` with this umask and extra environment (SOURCE_DATE_EPOCH unset unless given).
fn rv(dir: &Path, umask: u32, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rvcluster"));
    cmd.args(["--color", "never"]).args(args).current_dir(dir).env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    // SAFETY: umask(2) is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(umask as libc::mode_t);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    eprintln!("$ rvcluster {}\n{}{}", args.join(" "), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

/// A copy of the fixture (and the k3s stub it names) under `root`, with these file modes (as a
/// checkout under another umask gives) and this mtime on every file.
fn checkout(root: &Path, exec_mode: u32, file_mode: u32, mtime: SystemTime) -> PathBuf {
    let files = [
        ("fixtures/image-build/cluster.kdl", "image-build/cluster.kdl", file_mode),
        ("fixtures/image-build/pause/pause", "image-build/pause/pause", exec_mode),
        ("fixtures/image-build/pause/pause.s", "image-build/pause/pause.s", file_mode),
        ("fixtures/image-build/pause/build.sh", "image-build/pause/build.sh", exec_mode),
        ("fixtures/blog-lab/artifacts/k3s-riscv64", "blog-lab/artifacts/k3s-riscv64", file_mode),
    ];
    for (from, to, mode) in files {
        let dst = root.join(to);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(repo().join(from), &dst).unwrap();
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::File::options().write(true).open(&dst).unwrap().set_modified(mtime).unwrap();
    }
    root.join("image-build")
}

/// `IMAGE DIGEST PATH` lines of `image build`.
fn built(out: &Output) -> Vec<(String, String, PathBuf)> {
    assert_eq!(out.status.code(), Some(0), "image build failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 3, "{l}");
            (f[0].to_string(), f[1].to_string(), PathBuf::from(f[2]))
        })
        .collect()
}

fn sha256_file(p: &Path) -> String {
    images::sha256(&std::fs::read(p).unwrap())
}

fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo").args(args).output().expect("run skopeo");
    assert!(out.status.success(), "skopeo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn the_fixture_builds_to_the_same_archive_whatever_the_umask_mtimes_and_path() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let deep = b.path().join("some/other/checkout");
    let dir_a = checkout(a.path(), 0o775, 0o664, SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000));
    let dir_b = checkout(&deep, 0o700, 0o600, SystemTime::now());
    let out_a = a.path().join("out");
    let out_b = b.path().join("out");
    let first = built(&rv(&dir_a, 0o002, &[], &["image", "build", "cluster.kdl", "-o", out_a.to_str().unwrap()]));
    let second = built(&rv(&dir_b, 0o077, &[], &["image", "build", "cluster.kdl", PAUSE, "-o", out_b.to_str().unwrap()]));
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0, PAUSE);
    assert_eq!(first[0].2, out_a.join("docker.io_rancher_mirrored-pause_3.6.tar"));
    assert_eq!(first[0].1, second[0].1, "same digest in both checkouts");
    assert_eq!(sha256_file(&first[0].2), sha256_file(&second[0].2), "byte-identical archives");
    assert_eq!(first[0].1, PAUSE_DIGEST, "the builder's output changed: see PAUSE_DIGEST");
    // Real skopeo computes the same digest from the archive.
    let raw = skopeo(&["inspect", "--raw", &format!("oci-archive:{}", first[0].2.display())]);
    assert_eq!(images::sha256(&raw), PAUSE_DIGEST);

    // Built once, then taken from the cache beside cluster.kdl; --rebuild gives the same bytes.
    let cache: Vec<_> = std::fs::read_dir(dir_a.join(".rvcluster/images")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(cache.len(), 1, "{cache:?}");
    let again = rv(&dir_a, 0o002, &[], &["-v", "image", "build", "cluster.kdl"]);
    let (image, digest, path) = built(&again).remove(0);
    assert_eq!((image.as_str(), digest.as_str()), (PAUSE, PAUSE_DIGEST));
    assert_eq!(std::fs::canonicalize(dir_a.join(path)).unwrap(), std::fs::canonicalize(&cache[0]).unwrap(), "the cached archive");
    assert!(String::from_utf8_lossy(&again.stderr).contains("(cached)"));
    let rebuilt = rv(&dir_a, 0o002, &[], &["-v", "image", "build", "cluster.kdl", "--rebuild"]);
    assert_eq!(built(&rebuilt)[0].1, PAUSE_DIGEST);
    assert!(!String::from_utf8_lossy(&rebuilt.stderr).contains("(cached)"));

    // A changed input is another image.
    let mut pause = std::fs::read(dir_b.join("pause/pause")).unwrap();
    pause.push(0);
    std::fs::write(dir_b.join("pause/pause"), pause).unwrap();
    let changed = built(&rv(&dir_b, 0o077, &[], &["image", "build", "cluster.kdl"]));
    assert_ne!(changed[0].1, PAUSE_DIGEST);
}

#[test]
fn skopeo_sees_linux_riscv64_with_the_declared_entrypoint_and_a_normalized_layer() {
    let t = tempfile::tempdir().unwrap();
    let dir = checkout(t.path(), 0o755, 0o644, SystemTime::now());
    let out = built(&rv(&dir, 0o022, &[], &["image", "build", "cluster.kdl", "-o", "out"]));
    let archive = dir.join(&out[0].2);
    let src = format!("oci-archive:{}", archive.display());
    let inspect: Value = serde_json::from_slice(&skopeo(&["--override-arch", "riscv64", "--override-os", "linux", "inspect", &src])).unwrap();
    assert_eq!(inspect["Architecture"], "riscv64");
    assert_eq!(inspect["Os"], "linux");
    assert_eq!(inspect["Digest"], PAUSE_DIGEST);
    let config: Value = serde_json::from_slice(&skopeo(&["inspect", "--config", &src])).unwrap();
    assert_eq!(config["config"]["Entrypoint"], json!(["/pause"]));
    assert_eq!(config["config"]["User"], "65535:65535");
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");
    // skopeo copies it (checking every blob against its digest) into an OCI layout.
    let layout = t.path().join("layout");
    skopeo(&["copy", "-q", &src, &format!("oci:{}:3.6", layout.display())]);
    let manifest: Value = serde_json::from_slice(&skopeo(&["inspect", "--raw", &format!("oci:{}:3.6", layout.display())])).unwrap();
    let layer = &manifest["layers"][0];
    assert_eq!(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    let blob = layout.join("blobs/sha256").join(layer["digest"].as_str().unwrap().trim_start_matches("sha256:"));
    // GNU tar lists one file: /pause, 0755, root, epoch 0, the fixture's bytes.
    let list = Command::new("tar").args(["--numeric-owner", "--full-time", "-tvzf"]).arg(&blob).env("TZ", "UTC").output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert_eq!(list.split_whitespace().collect::<Vec<_>>(), ["-rwxr-xr-x", "0/0", "712", "1970-01-01", "00:00:00", "pause"], "{list}");
    let x = t.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    assert!(Command::new("tar").arg("-xzf").arg(&blob).arg("-C").arg(&x).status().unwrap().success());
    assert_eq!(std::fs::read(x.join("pause")).unwrap(), std::fs::read(repo().join("fixtures/image-build/pause/pause")).unwrap());
}

#[test]
fn source_date_epoch_sets_the_dates_and_is_an_input() {
    let t = tempfile::tempdir().unwrap();
    let dir = checkout(t.path(), 0o755, 0o644, SystemTime::now());
    let out = built(&rv(&dir, 0o022, &[("SOURCE_DATE_EPOCH", "1700000000")], &["image", "build", "cluster.kdl", "-o", "out"]));
    assert_ne!(out[0].1, PAUSE_DIGEST);
    let src = format!("oci-archive:{}", dir.join(&out[0].2).display());
    let config: Value = serde_json::from_slice(&skopeo(&["inspect", "--config", &src])).unwrap();
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(config["history"][0]["created"], "2023-11-14T22:13:20Z");
    // Not a number: refused, nothing built.
    let bad = rv(&dir, 0o022, &[("SOURCE_DATE_EPOCH", "yesterday")], &["image", "build", "cluster.kdl"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("SOURCE_DATE_EPOCH=`yesterday`"));
}

#[test]
fn image_build_names_what_it_cannot_build() {
    let t = tempfile::tempdir().unwrap();
    let dir = checkout(t.path(), 0o755, 0o644, SystemTime::now());
    let out = rv(&dir, 0o022, &[], &["image", "build", "cluster.kdl", "docker.io/library/redis:7"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("docker.io/library/redis:7 is not an image of cluster.kdl (images with a build block: docker.io/rancher/mirrored-pause:3.6)"), "{err}");
    assert!(!dir.join(".rvcluster").exists(), "nothing built");
}

/// A cluster file whose docker.io is `upstream`, with these image entries.
fn cluster_with(dir: &Path, upstream: &TestRegistry, images: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(repo().join("fixtures/image-build/pause/pause"), dir.join("pause")).unwrap();
    let k3s = repo().join("fixtures/blog-lab/artifacts/k3s-riscv64");
    let kdl = format!(
        "cluster \"b\"\nk3s version=\"v1.33.4+k3s1\" {{\n    binary \"{}\" sha256=\"{}\"\n}}\n\
         registry \"r\" address=\"127.0.0.1\" port=9 {{\n    mirror \"docker.io\"\n}}\n\
         node \"s\" address=\"127.0.0.2\" role=\"server\"\n\
         upstream \"docker.io\" endpoint=\"{}\"\n{images}",
        k3s.display(),
        sha256_file(&k3s).trim_start_matches("sha256:"),
        upstream.endpoint()
    );
    std::fs::write(dir.join("cluster.kdl"), kdl).unwrap();
}

/// Pushes (with skopeo) a two-platform image (amd64, arm64; no riscv64) whose configs differ in
/// every field config-from copies, and returns them.
fn push_webapp(reg: &TestRegistry, work: &Path) -> (Value, Value) {
    let layout = work.join("webapp");
    let cfg = |arch: &str, diff_id: &str| {
        json!({
            "architecture": arch, "os": "linux",
            "config": {
                "Entrypoint": ["/docker-entrypoint.sh"],
                "Cmd": [format!("/usr/sbin/webapp-{arch}"), "-g", "daemon off;"],
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", format!("WEBAPP_ARCH={arch}")],
                "User": if arch == "amd64" { "101:101" } else { "102:102" },
                "WorkingDir": format!("/srv/{arch}"),
                "ExposedPorts": { "80/tcp": {}, "443/tcp": {} },
                "Labels": { "maintainer": "not copied" },
                "StopSignal": "SIGQUIT",
            },
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        })
    };
    let mut entries = Vec::new();
    let mut configs = Vec::new();
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        let layer = images::put_layer(&layout, &images::Layer::gz(&format!("webapp-{arch}"), 1024, i as u64 + 40));
        let config = cfg(arch, &layer.diff_id);
        let (cd, cs) = images::put_blob(&layout, &serde_json::to_vec(&config).unwrap());
        let manifest = json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs },
            "layers": [{ "mediaType": layer.media_type, "digest": layer.digest, "size": layer.size }],
        });
        let (md, ms) = images::put_blob(&layout, &serde_json::to_vec(&manifest).unwrap());
        entries.push(json!({ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms, "platform": { "architecture": arch, "os": "linux" } }));
        configs.push(config);
    }
    let index = json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries });
    let (id, is) = images::put_blob(&layout, &serde_json::to_vec(&index).unwrap());
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&json!({ "schemaVersion": 2, "manifests": [{ "mediaType": "application/vnd.oci.image.index.v1+json", "digest": id, "size": is }] })).unwrap(),
    )
    .unwrap();
    reg.skopeo_copy_all(&format!("oci:{}", layout.display()), "library/webapp", "1.0");
    (configs.remove(0), configs.remove(0))
}

fn built_config(dir: &Path, image: &str) -> (Value, Value) {
    let out = built(&rv(dir, 0o022, &[], &["image", "build", "cluster.kdl", image, "-o", "out"]));
    let src = format!("oci-archive:{}", dir.join(&out[0].2).display());
    let config: Value = serde_json::from_slice(&skopeo(&["inspect", "--config", &src])).unwrap();
    let manifest: Value = serde_json::from_slice(&skopeo(&["inspect", "--raw", &src])).unwrap();
    (config, manifest)
}

#[test]
fn config_from_copies_the_other_platforms_config() {
    let upstream = TestRegistry::start(Opts::default());
    let t = tempfile::tempdir().unwrap();
    let (amd64, arm64) = push_webapp(&upstream, t.path());
    let dir = t.path().join("c");
    cluster_with(
        &dir,
        &upstream,
        "image \"docker.io/library/webapp:1.0\" {\n    build {\n        base \"scratch\"\n        file \"pause\" \"/usr/sbin/webapp-amd64\" mode=0o755\n        config-from \"docker://docker.io/library/webapp:1.0\"\n    }\n}\n\
         image \"docker.io/library/webapp:1.0-arm\" {\n    build {\n        base \"scratch\"\n        file \"pause\" \"/usr/sbin/webapp-arm64\"\n        config-from \"docker://docker.io/library/webapp:1.0\" platform=\"linux/arm64\"\n        env \"WEBAPP_ARCH=riscv64\"\n        label \"org.opencontainers.image.title\" \"webapp\"\n    }\n}\n",
    );
    let (config, _) = built_config(&dir, "docker.io/library/webapp:1.0");
    assert_eq!(config["architecture"], "riscv64");
    for k in ["Entrypoint", "Cmd", "Env", "User", "WorkingDir", "ExposedPorts"] {
        assert_eq!(config["config"][k], amd64["config"][k], "{k} copied from linux/amd64 (the default)");
    }
    for k in ["Labels", "StopSignal"] {
        assert!(config["config"].get(k).is_none(), "{k} is not copied");
    }
    let (config, _) = built_config(&dir, "docker.io/library/webapp:1.0-arm");
    for k in ["Entrypoint", "Cmd", "User", "WorkingDir", "ExposedPorts"] {
        assert_eq!(config["config"][k], arm64["config"][k], "{k} copied from linux/arm64");
    }
    assert_eq!(
        config["config"]["Env"],
        json!([arm64["config"]["Env"][0], "WEBAPP_ARCH=riscv64"]),
        "the declared env replaces the copied value"
    );
    assert_eq!(config["config"]["Labels"], json!({"org.opencontainers.image.title": "webapp"}));

    // A platform the image does not have: a clear error naming what it has.
    cluster_with(
        &dir,
        &upstream,
        "image \"docker.io/library/webapp:1.0\" {\n    build {\n        base \"scratch\"\n        file \"pause\" \"/x\"\n        config-from \"docker://docker.io/library/webapp:1.0\" platform=\"linux/s390x\"\n    }\n}\n",
    );
    let out = rv(&dir, 0o022, &[], &["image", "build", "cluster.kdl"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config-from docker.io/library/webapp:1.0") && err.contains("has no linux/s390x image (it has linux/amd64, linux/arm64)"), "{err}");
}

#[test]
fn a_base_pinned_by_digest_gives_its_riscv64_layers_under_ours() {
    let upstream = TestRegistry::start(Opts::default());
    let t = tempfile::tempdir().unwrap();
    let w = images::oci_layout(&t.path().join("busybox"), &["amd64", "riscv64"], &[images::Layer::gz("busybox", 4096, 9)]);
    upstream.skopeo_copy_all(&format!("oci:{}", t.path().join("busybox").display()), "library/busybox", "1.37.0");
    let index = w.index_digest.clone().unwrap();
    let dir = t.path().join("c");
    let entry = |base: &str| {
        format!(
            "image \"docker.io/library/tools:1\" {{\n    build {{\n        base \"docker.io/library/busybox:1.37.0@{base}\"\n        file \"pause\" \"/usr/local/bin/pause\"\n        cmd \"/usr/local/bin/pause\"\n    }}\n}}\n"
        )
    };
    cluster_with(&dir, &upstream, &entry(&index));
    let (config, manifest) = built_config(&dir, "docker.io/library/tools:1");
    let base_layers = w.layers_of("riscv64");
    let layers: Vec<&str> = manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap()).collect();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0], base_layers[0], "the base's linux/riscv64 layer first");
    assert_eq!(config["config"]["Cmd"], json!(["/usr/local/bin/pause"]));
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    // skopeo copies it: every blob (the base's included) matches its digest.
    let out = dir.join("out/docker.io_library_tools_1.tar");
    skopeo(&["copy", "-q", &format!("oci-archive:{}", out.display()), &format!("oci:{}:1", t.path().join("copy").display())]);

    // A digest the registry does not have: the base is named in the error.
    let missing = format!("sha256:{}", "0".repeat(64));
    cluster_with(&dir, &upstream, &entry(&missing));
    let out = rv(&dir, 0o022, &[], &["image", "build", "cluster.kdl"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("base docker.io/library/busybox:1.37.0@{missing}")) && err.contains("not found"), "{err}");
}

#[test]
fn the_closure_check_offers_a_known_riscv64_source_checked_upstream() {
    let upstream = TestRegistry::start(Opts::default());
    k3s_sim::upstream::seed(&upstream.endpoint()).expect("seed the lab's docker.io");
    let private = TestRegistry::start(Opts::default());
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("c");
    cluster_with(&dir, &upstream, "");
    let kdl = std::fs::read_to_string(dir.join("cluster.kdl")).unwrap().replace(
        "registry \"r\" address=\"127.0.0.1\" port=9",
        &format!("registry \"r\" address=\"{}\" port={}", private.ip, private.port),
    );
    std::fs::write(dir.join("cluster.kdl"), kdl).unwrap();
    let profiles = rvcluster::profile::Profiles::builtin();
    let cluster = rvcluster::spec::load(&dir.join("cluster.kdl"), &profiles).unwrap();
    let report = rvcluster::images::closure(&cluster, &profiles, None);
    let text = report.render();
    eprintln!("{text}");
    // What skopeo says the substitute's linux/riscv64 manifest is.
    let raw = skopeo(&[
        "--override-arch",
        "riscv64",
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/coredns/coredns:1.12.3", upstream.host_port()),
    ]);
    let index: Value = serde_json::from_slice(&raw).unwrap();
    let riscv = index["manifests"].as_array().unwrap().iter().find(|m| m["platform"]["architecture"] == "riscv64").unwrap();
    let digest = riscv["digest"].as_str().unwrap();
    let coredns = "docker.io/rancher/mirrored-coredns-coredns:1.12.3";
    assert!(
        text.contains(&format!(
            "fix: available for linux/riscv64 as docker.io/coredns/coredns:1.12.3 ({digest}): add `image \"{coredns}\" from=\"docker://docker.io/coredns/coredns:1.12.3\"` to cluster.kdl or disable the addon `coredns`"
        )),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("MISSING") && l.contains(coredns)), "still missing until added:\n{text}");
    // No known source: the data says why.
    assert!(text.contains("note: no known linux/riscv64 source: kubernetes-sigs/metrics-server is built for"), "{text}");
    let json = serde_json::to_value(&report).unwrap();
    let e = json["entries"].as_array().unwrap().iter().find(|e| e["image"] == coredns).unwrap();
    assert_eq!(e["substitute"]["answer"]["outcome"], "found");
    assert!(e["substitute"]["checked"].as_str().unwrap().contains("not checked against the live index"));

    // Taking the offer: the image is now provided by cluster.kdl.
    let mut kdl = std::fs::read_to_string(dir.join("cluster.kdl")).unwrap();
    kdl.push_str(&format!("image \"{coredns}\" from=\"docker://docker.io/coredns/coredns:1.12.3\"\n"));
    std::fs::write(dir.join("cluster.kdl"), kdl).unwrap();
    let cluster = rvcluster::spec::load(&dir.join("cluster.kdl"), &profiles).unwrap();
    let text = rvcluster::images::closure(&cluster, &profiles, None).render();
    assert!(text.lines().any(|l| l.starts_with("ok") && l.contains(coredns) && l.contains("provided by cluster.kdl")), "{text}");
    let items = rvcluster::images::push_items(&cluster, &Default::default()).unwrap();
    assert_eq!(items.iter().find(|i| i.name == coredns).unwrap().image.manifest_digest, digest);
}

/// Waits until the process sleeps in rt_sigtimedwait (before that, a signal would meet the
/// default action: the program has not blocked it yet).
fn waiting_for_a_signal(pid: u32) {
    for _ in 0..1200 {
        let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        if wchan.contains("sigtimedwait") {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("pid {pid} never waited for a signal");
}

/// The committed pause binary is its source's code (same .text as pause.s assembled now) and
/// behaves as Kubernetes' pause under qemu-riscv64: SIGTERM and SIGINT end it with status 0,
/// SIGCHLD (a child reaped) does not.
#[test]
fn the_committed_pause_is_built_from_its_source_and_behaves_like_pause() {
    let fixture = repo().join("fixtures/image-build/pause");
    let t = tempfile::tempdir().unwrap();
    for f in ["pause.s", "build.sh"] {
        std::fs::copy(fixture.join(f), t.path().join(f)).unwrap();
    }
    let out = Command::new("sh").arg(t.path().join("build.sh")).output().unwrap();
    assert!(out.status.success(), "build.sh: {}", String::from_utf8_lossy(&out.stderr));
    let text = |bin: &Path| {
        let dst = t.path().join(format!("{}.text", bin.file_name().unwrap().to_string_lossy().replace('/', "_")));
        let st = Command::new("riscv64-linux-gnu-objcopy").args(["-O", "binary", "--only-section=.text"]).arg(bin).arg(&dst).status().unwrap();
        assert!(st.success());
        std::fs::read(dst).unwrap()
    };
    let committed = t.path().join("committed");
    std::fs::copy(fixture.join("pause"), &committed).unwrap();
    let code = text(&committed);
    assert!(code.len() > 50, "a program, not an empty section");
    assert_eq!(code, text(&t.path().join("pause")), "the committed binary's code is pause.s assembled");

    for (signals, want) in [(&["TERM"][..], Some(0)), (&["INT"][..], Some(0)), (&["CHLD", "TERM"][..], Some(0))] {
        let mut child = Command::new("qemu-riscv64").arg(fixture.join("pause")).spawn().expect("qemu-riscv64 (Debian qemu-user)");
        for (i, s) in signals.iter().enumerate() {
            waiting_for_a_signal(child.id());
            assert!(Command::new("kill").arg(format!("-{s}")).arg(child.id().to_string()).status().unwrap().success());
            if i + 1 < signals.len() {
                // Given time to handle it, it is back in rt_sigtimedwait: it did not exit.
                std::thread::sleep(Duration::from_millis(300));
                waiting_for_a_signal(child.id());
                assert!(child.try_wait().unwrap().is_none(), "still running after SIG{s}");
            }
        }
        assert_eq!(child.wait().unwrap().code(), want, "after {signals:?}");
    }
}
