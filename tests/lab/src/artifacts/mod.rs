//! Locating (and if needed building) workspace binaries the lab runs: the simulated k3s from
//! tests/k3s-sim (which rvcluster installs on the boards as "the k3s binary") and rvcluster
//! itself (for `lab demo`). Owns no files; may run `cargo build`, and then says so on stderr
//! (a line before, cargo's own progress, a line after): on a fresh machine that takes minutes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use crate::error::{LabError, Result};

/// The profile directory of the running executable (`<target>/debug` for `<target>/debug/deps/x`).
fn target_profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map(Path::to_path_buf)
    } else {
        Some(dir.to_path_buf())
    }
}

/// `cargo build` arguments for one binary of the workspace into `target`.
pub fn build_args(
    package: &str,
    bin: &str,
    manifest: &Path,
    target: &Path,
    release: bool,
) -> Vec<String> {
    let mut v: Vec<String> = [
        "build",
        "-p",
        package,
        "--bin",
        bin,
        "--manifest-path",
    ]
    .map(String::from)
    .into();
    v.push(manifest.display().to_string());
    v.push("--target-dir".into());
    v.push(target.display().to_string());
    if release {
        v.push("--release".into());
    }
    v
}

/// Variables cargo sets for the program it runs (`cargo run`, a test binary): the package's name,
/// version and manifest dir. A build script that declares `rerun-if-env-changed` on them (ring
/// does) would rerun in a child cargo that inherits them, and so rebuild everything that depends
/// on it, once now and again at the user's next plain `cargo build`. The child does not get them.
fn is_cargo_run_var(name: &str) -> bool {
    ["CARGO_PKG_", "CARGO_BIN_EXE_", "CARGO_CFG_"].iter().any(|p| name.starts_with(p))
        || [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_MANIFEST_LINKS",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
            "OUT_DIR",
        ]
        .contains(&name)
}

/// Builds binary `bin` of package `package` of the workspace `manifest` into the profile
/// directory `dir` (`<target>/debug` or `<target>/release`), saying on `log` what it builds
/// before and how long it took after; cargo's own progress goes to this process's stderr in
/// between.
pub fn build(manifest: &Path, package: &str, bin: &str, dir: &Path, log: &mut dyn Write) -> std::result::Result<PathBuf, String> {
    let path = dir.join(bin);
    let target = dir.parent().ok_or("cannot locate the target directory")?;
    let release = dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let _ = writeln!(
        log,
        "lab: building {bin} (cargo build -p {package} --bin {bin}{}); the first build on a fresh machine takes a few minutes",
        if release { " --release" } else { "" }
    );
    let _ = log.flush();
    let t0 = Instant::now();
    let mut cmd = Command::new(cargo);
    cmd.args(build_args(package, bin, manifest, target, release));
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(is_cargo_run_var) {
            cmd.env_remove(k);
        }
    }
    let st = cmd.status().map_err(|e| format!("running cargo: {e}"))?;
    if !st.success() || !path.exists() {
        let _ = writeln!(log, "lab: building {bin} failed ({st})");
        return Err(format!("`cargo build -p {package} --bin {bin}` failed ({st})"));
    }
    let _ = writeln!(log, "lab: built {bin} in {:.0}s ({})", t0.elapsed().as_secs_f64(), path.display());
    Ok(path)
}

/// Binary `bin` of workspace package `package`: `$env_var` if set, else next to the running
/// executable, else built there with cargo (once per process).
pub fn workspace_binary(package: &str, bin: &str, env_var: &str) -> Result<PathBuf> {
    static BUILT: Mutex<BTreeMap<String, std::result::Result<PathBuf, String>>> =
        Mutex::new(BTreeMap::new());
    if let Some(p) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(p));
    }
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let r = built
        .entry(bin.to_string())
        .or_insert_with(|| {
            let dir = target_profile_dir().ok_or("cannot locate the target directory")?;
            let path = dir.join(bin);
            if path.exists() {
                return Ok(path);
            }
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
            build(&manifest, package, bin, &dir, &mut std::io::stderr())
        })
        .clone();
    r.map_err(|e| LabError::Missing {
        what: format!("the `{bin}` binary: {e}"),
        fix: format!("cargo build -p {package} --bin {bin}, or set {env_var}"),
    })
}

/// The simulated `k3s` (`$RVLAB_K3S_BIN` overrides).
pub fn k3s_sim_binary() -> Result<PathBuf> {
    workspace_binary("k3s-sim", "k3s", "RVLAB_K3S_BIN")
}

/// `rvcluster` (`$RVLAB_RVCLUSTER_BIN` overrides).
pub fn rvcluster_binary() -> Result<PathBuf> {
    workspace_binary("rvcluster", "rvcluster", "RVLAB_RVCLUSTER_BIN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_args_name_package_bin_and_target() {
        let a = build_args(
            "k3s-sim",
            "k3s",
            Path::new("/w/Cargo.toml"),
            Path::new("/t"),
            false,
        );
        assert_eq!(
            a.join(" "),
            "build -p k3s-sim --bin k3s --manifest-path /w/Cargo.toml --target-dir /t"
        );
        assert!(
            build_args(
                "rvcluster",
                "rvcluster",
                Path::new("/w/Cargo.toml"),
                Path::new("/t"),
                true
            )
            .ends_with(&["--release".to_string()])
        );
    }

    /// A throwaway workspace: package `hello` with a binary and a build script that, like ring's,
    /// reruns when CARGO_PKG_NAME changes and counts its runs in `runs`.
    fn hello_workspace(dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(
            dir.join("Cargo.toml"),
            "[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[workspace]\n",
        )
        .unwrap();
        std::fs::write(dir.join("src/main.rs"), "fn main() { println!(\"hello\"); }\n").unwrap();
        std::fs::write(
            dir.join("build.rs"),
            format!(
                "use std::io::Write;\nfn main() {{\n    println!(\"cargo:rerun-if-env-changed=CARGO_PKG_NAME\");\n    \
                 let mut f = std::fs::OpenOptions::new().create(true).append(true).open({:?}).unwrap();\n    \
                 writeln!(f, \"run\").unwrap();\n}}\n",
                dir.join("runs")
            ),
        )
        .unwrap();
        dir.join("Cargo.toml")
    }

    /// What `lab demo` shows on a fresh machine while it builds rvcluster: a line naming what it
    /// builds before cargo runs, and one after (with a real cargo build of a small package).
    #[test]
    fn building_says_what_and_how_long() {
        let work = tempfile_dir("says");
        let manifest = hello_workspace(&work);
        let dir = work.join("target/debug");
        let mut log = Vec::new();
        let path = build(&manifest, "hello", "hello", &dir, &mut log).expect("hello builds");
        assert_eq!(Command::new(&path).output().unwrap().stdout, b"hello\n");
        let text = String::from_utf8(log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("lab: building hello (cargo build -p hello --bin hello)"), "{text}");
        assert!(lines[0].contains("takes a few minutes"), "{text}");
        assert!(lines[1].starts_with("lab: built hello in ") && lines[1].contains(&path.display().to_string()), "{text}");
        let mut log = Vec::new();
        assert!(build(&manifest, "hello", "no-such-bin", &dir, &mut log).is_err());
        assert!(String::from_utf8(log).unwrap().contains("lab: building no-such-bin failed"));
        let _ = std::fs::remove_dir_all(&work);
    }

    /// The build started from inside `cargo run`/a test (which set CARGO_PKG_NAME and friends)
    /// finds what a plain `cargo build` built up to date: no build script reruns.
    #[test]
    fn building_from_inside_cargo_does_not_rebuild_a_plain_build() {
        assert!(std::env::var_os("CARGO_PKG_NAME").is_some(), "cargo runs this test with CARGO_PKG_NAME set");
        let work = tempfile_dir("env");
        let manifest = hello_workspace(&work);
        let mut plain = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        plain.args(["build", "--quiet", "--manifest-path"]).arg(&manifest);
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(is_cargo_run_var) {
                plain.env_remove(k);
            }
        }
        // The same target directory `build` uses (work/target), whatever the caller's
        // CARGO_TARGET_DIR says (a suite run with one set must not see a second build).
        plain.arg("--target-dir").arg(work.join("target"));
        assert!(plain.status().unwrap().success());
        assert_eq!(std::fs::read_to_string(work.join("runs")).unwrap().lines().count(), 1);
        build(&manifest, "hello", "hello", &work.join("target/debug"), &mut Vec::new()).unwrap();
        assert_eq!(
            std::fs::read_to_string(work.join("runs")).unwrap().lines().count(),
            1,
            "the build script did not rerun"
        );
        let _ = std::fs::remove_dir_all(&work);
    }

    fn tempfile_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rvlab-build-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
