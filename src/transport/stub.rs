//! Test support: stand-in tools searched first in `PATH` when a shell fragment runs in `sh`
//! (counting wrappers around the real tool, tools that answer or fail on purpose).

use std::path::Path;

/// Writes the executable `dir/name`: `#!/bin/sh`, then `body`.
pub fn tool(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// Writes the counting wrapper `dir/name`: it appends its name to `calls` as a line, then runs
/// the real tool (`pass_through`) or does nothing more.
pub fn counting(dir: &Path, calls: &Path, name: &str, pass_through: bool) {
    let run = if pass_through { format!("exec {} \"$@\"\n", real(name)) } else { String::new() };
    tool(dir, name, &format!("echo {name} >> '{}'\n{run}", calls.display()));
}

/// Where the real `name` is (`command -v`), for a wrapper to `exec`.
pub fn real(name: &str) -> String {
    let out = std::process::Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `PATH` with `dir` searched first.
pub fn path_first(dir: &Path) -> String {
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default())
}
