//! Phase: kernel modules and sysctls. The profile's modules-load.d and sysctl.d files are plain
//! managed files (files phase) and the k3s unit modprobes br_netfilter and overlay at every
//! start; what this phase adds is that a changed sysctl drop-in takes effect now, not only at the
//! next boot, after loading the modules (the bridge keys exist only once br_netfilter is loaded;
//! docs/k3s-behaviour.md §10.1, §10.2).
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
            // As the unit's `ExecStartPre=-/sbin/modprobe`: a module built in or absent is not
            // fatal; one already loaded (/sys/module/NAME, docs/k3s-behaviour.md §10.3) needs no
            // modprobe process at all.
            let mut s: String = want
                .st
                .kernel_modules
                .iter()
                .map(|m| format!("[ -d {} ] || modprobe {} 2>/dev/null; ", quote(&format!("/sys/module/{m}")), quote(m)))
                .collect();
            s.push_str(&format!("sysctl -p {} >/dev/null 2>&1; true", quote(path)));
            acts.script.change(i, s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::converge::testutil::state;
    use crate::spec::Role;
    use crate::transport::stub;

    #[test]
    fn only_modules_not_loaded_get_a_modprobe() {
        // A module this machine has loaded (any directory of /sys/module) and one nobody has.
        let loaded = std::fs::read_dir("/sys/module").unwrap().flatten().next().unwrap().file_name().to_string_lossy().into_owned();
        let mut st = state();
        st.kernel_modules = vec![loaded.clone(), "rvcluster_no_such_module".into()];
        let want = Desired::new(&st, Role::Server);
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls");
        // modprobe and sysctl that only record their arguments.
        for tool in ["modprobe", "sysctl"] {
            stub::tool(dir.path(), tool, &format!("echo \"{tool} $*\" >> '{}'\n", calls.display()));
        }
        let mut acts = Actions::default();
        Kernel.apply(&want, &Observed::default(), 0, &Change::Sysctl { path: "/etc/sysctl.d/90-k3s.conf".into() }, &mut acts);
        let out = std::process::Command::new("sh").arg("-c").arg(acts.script.render()).env("PATH", stub::path_first(dir.path())).output().unwrap();
        assert!(out.status.success());
        let log = std::fs::read_to_string(&calls).unwrap();
        assert_eq!(log, "modprobe rvcluster_no_such_module\nsysctl -p /etc/sysctl.d/90-k3s.conf\n", "{loaded} is loaded");
    }
}
