//! Phase: kernel modules and sysctls. The profile's modules-load.d and sysctl.d files are plain
//! managed files (files phase) and the k3s unit modprobes br_netfilter and overlay at every
//! start; what this phase adds is that a changed sysctl drop-in takes effect now, not only at the
//! next boot, after loading the modules (the bridge keys exist only once br_netfilter is loaded).
//! Nothing here runs on a host whose drop-in is unchanged, so a no-op apply stays a no-op.

use crate::transport::cmd::quote;

use super::change::Change;
use super::error::Cause;
use super::phase::{Actions, Desired, Observed, Phase};

pub struct Kernel;

impl Phase for Kernel {
    fn name(&self) -> &'static str {
        "kernel"
    }
    fn plan(&self, _want: &Desired, _seen: &Observed, prior: &[Change]) -> Result<Vec<Change>, Cause> {
        Ok(prior
            .iter()
            .filter_map(|c| match c {
                Change::CreateFile { path, .. } | Change::UpdateFile { path, .. } if path.starts_with("/etc/sysctl.d/") => {
                    Some(Change::Sysctl { path: path.clone() })
                }
                _ => None,
            })
            .collect())
    }
    fn apply(&self, want: &Desired, _seen: &Observed, i: usize, change: &Change, acts: &mut Actions) {
        if let Change::Sysctl { path } = change {
            // As the unit's `ExecStartPre=-/sbin/modprobe`: a module built in or absent is not fatal.
            let mut s: String = want.st.kernel_modules.iter().map(|m| format!("modprobe {} 2>/dev/null; ", quote(m))).collect();
            s.push_str(&format!("sysctl -p {} >/dev/null 2>&1; true", quote(path)));
            acts.script.change(i, s);
        }
    }
}
