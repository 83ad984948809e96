//! Phase: the k3s (or registry) unit. daemon-reload only when the unit file changed; enable when
//! not enabled; start when not running, else restart once when a file it reads changed. Start
//! and restart use --no-block (a Type=notify agent the server rejects never signals READY and
//! TimeoutStartSec=0 would block for ever); readiness is the verify step's job (docs/k3s-behaviour.md §3.1-§3.3). A server started
//! or restarted here prints its token once written, for the agents (docs/k3s-behaviour.md §7.1).
//! Every (re)start records the sha256 of the files the unit reads (`started-with-<unit>.list`):
//! files already right on disk but newer than the running service (an apply interrupted
//! between writing them and the restart, tests/faults_interrupt.rs) still get their restart.

use crate::render::SERVER_TOKEN;
use crate::spec::Role;
use crate::transport::FactsQuery;
use crate::transport::cmd::quote;

use super::change::Change;
use super::session::STATE_DIR;
use super::error::Cause;
use super::phase::{Actions, Desired, Observed, Phase, add_service};
use super::removed::removal_restarts;
use super::script::wait_and_print;

pub struct ServicePhase;

impl Phase for ServicePhase {
    fn name(&self) -> &'static str {
        "service"
    }
    fn probe(&self, want: &Desired, q: &mut FactsQuery) {
        add_service(q, &want.unit_file);
        let rec = started_with_path(want);
        if !q.reads.contains(&rec) {
            q.reads.push(rec);
        }
    }
    fn plan(&self, want: &Desired, seen: &Observed, prior: &[Change]) -> Result<Vec<Change>, Cause> {
        let st = want.st;
        let mut because = Vec::new();
        let mut unit_changed = false;
        for c in prior {
            match c {
                Change::CreateFile { path, .. } | Change::UpdateFile { path, .. } => {
                    let f = st.files.iter().find(|f| f.path == *path);
                    if f.and_then(|f| f.restarts.as_deref()) == Some(st.service.unit.as_str()) {
                        because.push(path.clone());
                    }
                    unit_changed |= *path == st.service.unit_path;
                }
                Change::RemoveFile { path } if removal_restarts(path) => because.push(path.clone()),
                _ => {}
            }
        }
        let UnitState { enabled, active, .. } = unit_state(want, seen);
        // What the running service was last (re)started with, when an apply recorded it: a
        // difference is a restart (and, for the unit, a daemon-reload) an interrupted apply lost.
        if let Some(rec) = seen.facts.contents.get(&started_with_path(want)) {
            let rec = String::from_utf8_lossy(rec);
            for line in started_with_text(want).lines().filter(|l| !rec.lines().any(|r| r == *l)) {
                let path = line.split_once(' ').map(|(_, p)| p).unwrap_or(line).to_string();
                unit_changed |= path == st.service.unit_path;
                if !because.contains(&path) {
                    because.push(path);
                }
            }
        }
        let mut out = Vec::new();
        if unit_changed {
            out.push(Change::DaemonReload);
        }
        if !enabled {
            out.push(Change::Enable { unit: want.unit_file.clone() });
        }
        if !active {
            out.push(Change::Start { unit: want.unit_file.clone() });
        } else if !because.is_empty() {
            out.push(Change::Restart { unit: want.unit_file.clone(), because });
        }
        Ok(out)
    }
    fn apply(&self, want: &Desired, seen: &Observed, i: usize, change: &Change, acts: &mut Actions) {
        let u = quote(&want.unit_file);
        // Enabling a unit that is not running plans its start too (`plan`): one
        // `systemctl enable --now` does both, and the start's own fragment has nothing left.
        // The health gate tells the new main process from the old one. A start of a unit the
        // facts (taken under the board lock) found inactive, failed or unknown has no old one;
        // one still stopping (deactivating) has, and is started on its own, after its main
        // process is recorded.
        let UnitState { enabled, active, stopped } = unit_state(want, seen);
        let now = !enabled && !active && stopped;
        let text = match change {
            // `systemctl enable` reloads the manager itself (unless --no-reload), after linking
            // and before --now starts: planned here only when the unit is not enabled, the
            // enable right after it does the reload (docs/k3s-behaviour.md §3.5 enable reloads).
            Change::DaemonReload if !enabled => ": reloaded by the enable".to_string(),
            Change::DaemonReload => "systemctl daemon-reload".to_string(),
            Change::Enable { .. } if now => format!("systemctl enable --now --no-block {u}"),
            Change::Enable { .. } => format!("systemctl enable {u}"),
            Change::Start { .. } if now => ": started by enable --now".to_string(),
            Change::Start { .. } => format!("systemctl start --no-block {u}"),
            Change::Restart { .. } => format!("systemctl restart --no-block {u}"),
            _ => return,
        };
        if matches!(change, Change::Restart { .. }) || (matches!(change, Change::Start { .. }) && !stopped) {
            acts.script.bookkeeping(super::confirm::mainpid_fragment(&want.unit_file));
        }
        acts.script.change(i, text);
        if matches!(change, Change::Start { .. } | Change::Restart { .. }) {
            let (path, text) = (started_with_path(want), started_with_text(want));
            let sha = crate::render::sha256_hex(text.as_bytes());
            let copy = crate::transport::cmd::TextCopy { dest: &path, mode: 0o600, owner: None, kept: false };
            acts.script.text(None, &[copy], &text, &sha);
        }
        if want.role == Role::Server && want.st.k3s_version.is_some() && matches!(change, Change::Start { .. } | Change::Restart { .. }) {
            acts.script.bookkeeping(wait_and_print("token", SERVER_TOKEN, 120));
        }
    }
}

/// The unit as the facts found it.
struct UnitState {
    enabled: bool,
    /// Running: active or activating.
    active: bool,
    /// No process at all: inactive, failed or unknown (not deactivating).
    stopped: bool,
}

fn unit_state(want: &Desired, seen: &Observed) -> UnitState {
    let svc = seen.facts.services.get(&want.unit_file);
    let state = svc.map_or("", |s| s.active.as_str());
    UnitState {
        enabled: svc.is_some_and(|s| s.enabled == "enabled"),
        active: matches!(state, "active" | "activating"),
        stopped: matches!(state, "inactive" | "failed" | "unknown" | ""),
    }
}

/// The record of what the unit was last (re)started with.
pub fn started_with_path(want: &Desired) -> String {
    format!("{STATE_DIR}/started-with-{}.list", want.st.service.unit)
}

/// `SHA256 PATH` of the unit file and of every file that restarts the unit, sorted.
pub fn started_with_text(want: &Desired) -> String {
    let st = want.st;
    let mut lines: Vec<String> = st
        .files
        .iter()
        .filter(|f| f.restarts.as_deref() == Some(st.service.unit.as_str()) || f.path == st.service.unit_path)
        .map(|f| format!("{} {}\n", f.sha256(), f.path))
        .collect();
    lines.sort();
    lines.concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::converge::testutil::state;
    use crate::converge::phase::Actions;
    use crate::transport::ServiceFact;

    fn seen(active: &str, enabled: &str) -> Observed {
        let mut o = Observed::default();
        o.facts.services.insert("k3s.service".into(), ServiceFact { active: active.into(), enabled: enabled.into() });
        o
    }

    #[test]
    fn restart_once_only_when_a_read_file_changed_and_reload_only_for_the_unit() {
        let st = state();
        let want = Desired::new(&st, Role::Server);
        let upd = |p: &str| Change::UpdateFile { path: p.into(), mode: "0600".into(), diff: String::new() };
        // Running, config changed: one restart, no daemon-reload.
        let ch = ServicePhase.plan(&want, &seen("active", "enabled"), &[upd(crate::render::CONFIG)]).unwrap();
        assert_eq!(ch, vec![Change::Restart { unit: "k3s.service".into(), because: vec![crate::render::CONFIG.into()] }]);
        // The unit changed: daemon-reload then restart.
        let ch = ServicePhase.plan(&want, &seen("active", "enabled"), &[upd(&st.service.unit_path)]).unwrap();
        assert!(matches!(ch.as_slice(), [Change::DaemonReload, Change::Restart { .. }]), "{ch:?}");
        // A manifest (restarts: none): nothing.
        let ch = ServicePhase.plan(&want, &seen("active", "enabled"), &[upd("/var/lib/rancher/k3s/server/manifests/x.yaml")]).unwrap();
        assert!(ch.is_empty());
        // Not running: enable and start, never restart.
        let ch = ServicePhase.plan(&want, &seen("inactive", "disabled"), &[upd(crate::render::CONFIG)]).unwrap();
        assert!(matches!(ch.as_slice(), [Change::Enable { .. }, Change::Start { .. }]), "{ch:?}");
    }

    #[test]
    fn a_first_start_is_one_enable_now_and_asks_no_main_pid() {
        let st = state();
        let want = Desired::new(&st, Role::Server);
        let fragments = |seen: &Observed, ch: &[Change]| {
            let mut acts = Actions::default();
            for (i, c) in ch.iter().enumerate() {
                ServicePhase.apply(&want, seen, i, c, &mut acts);
            }
            acts.script.render()
        };
        let off = seen("inactive", "disabled");
        let ch = ServicePhase.plan(&want, &off, &[]).unwrap();
        let s = fragments(&off, &ch);
        assert_eq!(s.matches("systemctl ").count(), 1, "{s}");
        assert!(s.contains("systemctl enable --now --no-block k3s.service"), "{s}");
        assert!(!s.contains("MainPID"), "{s}");
        // A new unit file: the enable reloads the manager, no daemon-reload of its own.
        let unit = Change::CreateFile { path: st.service.unit_path.clone(), mode: "0644".into(), detail: String::new() };
        let ch = ServicePhase.plan(&want, &off, std::slice::from_ref(&unit)).unwrap();
        assert!(matches!(ch.as_slice(), [Change::DaemonReload, Change::Enable { .. }, Change::Start { .. }]), "{ch:?}");
        let s = fragments(&off, &ch);
        assert_eq!(s.matches("systemctl ").count(), 1, "{s}");
        assert!(!s.contains("daemon-reload") && s.contains("reloaded by the enable"), "{s}");
        // An enabled unit whose file changed keeps its daemon-reload.
        let on = seen("active", "enabled");
        let s = fragments(&on, &ServicePhase.plan(&want, &on, &[unit]).unwrap());
        assert!(s.contains("systemctl daemon-reload"), "{s}");
        // Enabled but stopped: a plain start. Running, disabled: a plain enable.
        let s = fragments(&seen("inactive", "enabled"), &[Change::Start { unit: "k3s.service".into() }]);
        assert!(s.contains("systemctl start --no-block k3s.service") && !s.contains("enable"), "{s}");
        let s = fragments(&seen("active", "disabled"), &[Change::Enable { unit: "k3s.service".into() }]);
        assert!(s.contains("systemctl enable k3s.service") && !s.contains("--now"), "{s}");
        // A unit still stopping has a main process: its start records it first, and is not
        // folded into the enable.
        let stopping = seen("deactivating", "disabled");
        let s = fragments(&stopping, &ServicePhase.plan(&want, &stopping, &[]).unwrap());
        assert!(s.contains("systemctl enable k3s.service") && !s.contains("--now"), "{s}");
        assert!(s.find("MainPID").unwrap() < s.find("systemctl start --no-block").unwrap(), "{s}");
        // A restart still records the main process it replaces.
        let s = fragments(&seen("active", "enabled"), &[Change::Restart { unit: "k3s.service".into(), because: vec![] }]);
        assert!(s.contains("MainPID") && s.contains("systemctl restart --no-block k3s.service"), "{s}");
    }

    #[test]
    fn a_restart_lost_by_an_interrupted_apply_is_planned_from_the_started_with_record() {
        let st = state();
        let want = Desired::new(&st, Role::Server);
        let mut o = seen("active", "enabled");
        // Recorded as started with exactly what is wanted: nothing to do.
        o.facts.contents.insert(started_with_path(&want), started_with_text(&want).into_bytes());
        assert!(ServicePhase.plan(&want, &o, &[]).unwrap().is_empty());
        // Started with another config.yaml (the files are right on disk, no file change planned).
        let other = started_with_text(&want).lines().map(|l| if l.ends_with(crate::render::CONFIG) { format!("{} {}\n", "0".repeat(64), crate::render::CONFIG) } else { format!("{l}\n") }).collect::<String>();
        o.facts.contents.insert(started_with_path(&want), other.into_bytes());
        let ch = ServicePhase.plan(&want, &o, &[]).unwrap();
        assert_eq!(ch, vec![Change::Restart { unit: "k3s.service".into(), because: vec![crate::render::CONFIG.into()] }]);
        // No record (a cluster from before the record existed): no restart.
        assert!(ServicePhase.plan(&want, &seen("active", "enabled"), &[]).unwrap().is_empty());
    }
}
