//! Shared by the lab end-to-end tests: run the rvcluster binary in a cluster directory (HOME
//! pointed there, no ssh-agent) and echo what it printed, so a failing assertion has the story.

use std::path::Path;
use std::process::Output;

pub fn rv(dir: &Path, args: &[&str]) -> Output {
    let t0 = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rvcluster"))
        .args(["--color", "never", "-v"])
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    eprintln!(
        "$ rvcluster {} [{:?}]\n{}{}",
        args.join(" "),
        t0.elapsed(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn sha256(p: &Path) -> String {
    rvcluster::render::sha256_hex(&std::fs::read(p).unwrap())
}
