//! Locating (and if needed building) the simulated k3s binary from tests/k3s-sim, which
//! rvcluster installs on the boards as "the k3s binary". Owns no files; may run `cargo build`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::error::{LabError, Result};

/// The cargo target directory of the running executable (`<target>/debug/deps/x` or `<target>/debug/x`).
fn target_profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    if dir.file_name().is_some_and(|n| n == "deps") { dir.parent().map(Path::to_path_buf) } else { Some(dir.to_path_buf()) }
}

/// Path of the simulated `k3s` binary: `$RVLAB_K3S_BIN`, else `k3s` in the running executable's
/// target directory, else built there with `cargo build -p k3s-sim --bin k3s` (once per process).
pub fn k3s_sim_binary() -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    if let Some(p) = std::env::var_os("RVLAB_K3S_BIN") {
        return Ok(PathBuf::from(p));
    }
    BUILT
        .get_or_init(|| {
            let dir = target_profile_dir().ok_or("cannot locate the target directory")?;
            let bin = dir.join("k3s");
            if bin.exists() {
                return Ok(bin);
            }
            let target = dir.parent().ok_or("cannot locate the target directory")?;
            let release = dir.file_name().is_some_and(|n| n == "release");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../k3s-sim/Cargo.toml");
            let mut c = Command::new(cargo);
            c.args(["build", "--quiet", "--bin", "k3s", "--manifest-path"]).arg(&manifest).arg("--target-dir").arg(target);
            if release {
                c.arg("--release");
            }
            let st = c.status().map_err(|e| format!("running cargo: {e}"))?;
            if !st.success() || !bin.exists() {
                return Err(format!("`cargo build -p k3s-sim --bin k3s` failed ({st})"));
            }
            Ok(bin)
        })
        .clone()
        .map_err(|e| LabError::Missing { what: format!("the simulated k3s binary: {e}"), fix: "cargo build -p k3s-sim --bin k3s, or set RVLAB_K3S_BIN".into() })
}
