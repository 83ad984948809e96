//! Phase: the OS profile's preparation steps (firewalld ports, default route...). Each step's
//! `when` and `check` run inside the facts command as probes; a step whose `when` holds and whose
//! `check` fails runs its `run` in the apply script. A `when` that only asks whether a unit is
//! active (`systemctl is-active --quiet UNIT`) is answered by the facts' one `systemctl show`
//! of every unit instead of a `systemctl` of its own (docs/converge.md §5.3).

use crate::transport::FactsQuery;

use super::change::Change;
use super::error::Cause;
use super::phase::{Actions, Desired, Observed, Phase, add_guarded_probe, add_probe, add_service};

pub struct Steps;

impl Phase for Steps {
    fn name(&self) -> &'static str {
        "steps"
    }
    fn probe(&self, want: &Desired, q: &mut FactsQuery) {
        for s in &want.st.steps {
            match &s.when {
                Some(w) => {
                    let g = match active_unit(w) {
                        Some(unit) => {
                            let i = add_service(q, &unit);
                            add_probe(q, &active_probe(i))
                        }
                        None => add_probe(q, w),
                    };
                    add_guarded_probe(q, &s.check, g);
                }
                None => {
                    add_probe(q, &s.check);
                }
            }
        }
    }
    fn plan(&self, want: &Desired, seen: &Observed, _prior: &[Change]) -> Result<Vec<Change>, Cause> {
        let ok = |cmd: &str| seen.probe(cmd) == Some(0);
        let holds = |w: &str| match active_unit(w) {
            Some(unit) => seen.facts.services.get(&unit).is_some_and(|s| is_active(&s.active)),
            None => ok(w),
        };
        Ok(want
            .st
            .steps
            .iter()
            .filter(|s| s.when.as_deref().is_none_or(holds) && !ok(&s.check))
            .map(|s| Change::Step { name: s.name.clone() })
            .collect())
    }
    fn apply(&self, want: &Desired, _seen: &Observed, i: usize, change: &Change, acts: &mut Actions) {
        if let Change::Step { name } = change
            && let Some(s) = want.st.steps.iter().find(|s| s.name == *name)
        {
            acts.script.change(i, format!("( {}\n) </dev/null", s.run));
        }
    }
}

/// The unit a `when` of the form `systemctl is-active --quiet UNIT` (or `-q`) asks about, with
/// the `.service` systemctl adds to a name without a unit suffix.
pub fn active_unit(when: &str) -> Option<String> {
    let mut w = when.split_ascii_whitespace();
    let (Some("systemctl"), Some("is-active"), Some("--quiet" | "-q"), Some(unit), None) = (w.next(), w.next(), w.next(), w.next(), w.next()) else {
        return None;
    };
    if unit.starts_with('-') || !unit.chars().all(|c| c.is_ascii_alphanumeric() || "@._:-".contains(c)) {
        return None;
    }
    const SUFFIXES: [&str; 6] = [".service", ".socket", ".target", ".timer", ".mount", ".path"];
    Some(if SUFFIXES.iter().any(|s| unit.ends_with(s)) { unit.to_string() } else { format!("{unit}.service") })
}

/// The states `systemctl is-active` exits 0 for (systemctl(1); src/systemctl/systemctl-is-active.c).
const IS_ACTIVE: [&str; 3] = ["active", "reloading", "refreshing"];

fn is_active(state: &str) -> bool {
    IS_ACTIVE.contains(&state)
}

/// The probe that stands for `systemctl is-active --quiet` of unit `i` of the facts' services
/// (its state left in `rv_saI` by the facts command): a guard for the step's `check`.
fn active_probe(i: usize) -> String {
    format!("case \"$rv_sa{i}\" in {}) ;; *) exit 3;; esac", IS_ACTIVE.join("|"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::converge::testutil::state;
    use crate::profile::Step;

    #[test]
    fn a_step_runs_when_its_condition_holds_and_its_check_fails() {
        let mut st = state();
        st.steps = vec![
            Step { name: "a".into(), when: None, check: "ca".into(), run: "ra".into() },
            Step { name: "b".into(), when: Some("wb".into()), check: "cb".into(), run: "rb".into() },
            Step { name: "c".into(), when: Some("wc".into()), check: "cc".into(), run: "rc".into() },
        ];
        let want = Desired::new(&st, crate::spec::Role::Server);
        let mut q = FactsQuery::default();
        Steps.probe(&want, &mut q);
        assert_eq!(q.probes, ["ca", "wb", "cb", "wc", "cc"]);
        // Each check runs only when its step's `when` held.
        assert_eq!(q.guards, [(2, 1), (4, 3)].into_iter().collect());
        let facts = crate::transport::Facts { probes: vec![1, 0, 1, 1, 1], ..Default::default() };
        let seen = Observed::new(&q, facts);
        let ch = Steps.plan(&want, &seen, &[]).unwrap();
        assert_eq!(ch, vec![Change::Step { name: "a".into() }, Change::Step { name: "b".into() }]);
    }

    #[test]
    fn a_when_that_asks_if_a_unit_is_active_comes_from_the_one_systemctl_show() {
        assert_eq!(active_unit("systemctl is-active --quiet firewalld").as_deref(), Some("firewalld.service"));
        assert_eq!(active_unit("systemctl  is-active -q nftables.service").as_deref(), Some("nftables.service"));
        for other in ["systemctl is-active firewalld", "systemctl is-active --quiet a b", "systemctl is-active --quiet nftables && nft list ruleset", "systemctl is-active --quiet $(x)"] {
            assert_eq!(active_unit(other), None, "{other}");
        }
        let mut st = state();
        st.steps = vec![Step { name: "fw".into(), when: Some("systemctl is-active --quiet firewalld".into()), check: "chk".into(), run: "r".into() }];
        let want = Desired::new(&st, crate::spec::Role::Server);
        let mut q = FactsQuery::default();
        Steps.probe(&want, &mut q);
        // No systemctl of its own: the unit joins the services, its check is guarded by its state.
        assert_eq!(q.services, ["firewalld.service"]);
        assert!(!q.probes.iter().any(|p| p.contains("systemctl")), "{:?}", q.probes);
        assert_eq!(q.guards, [(1, 0)].into_iter().collect());
        let plan = |active: &str, check: i32| {
            let mut f = crate::transport::Facts { probes: vec![if active == "active" { 0 } else { 3 }, check], ..Default::default() };
            f.services.insert("firewalld.service".into(), crate::transport::ServiceFact { active: active.into(), enabled: "enabled".into() });
            Steps.plan(&want, &Observed::new(&q, f), &[]).unwrap().len()
        };
        assert_eq!(plan("active", 1), 1, "running firewalld, check failed: the step runs");
        assert_eq!(plan("active", 0), 0);
        assert_eq!(plan("inactive", 3), 0, "no firewalld: nothing to do");
        // The guard probe itself, run as the facts command runs probes (`rv_sa0` set by it).
        for (state, code) in [("active", 0), ("reloading", 0), ("activating", 3), ("inactive", 3)] {
            let out = std::process::Command::new("sh").arg("-c").arg(format!("rv_sa0={state}; ( eval '{}' )", active_probe(0))).status().unwrap();
            assert_eq!(out.code(), Some(code), "{state}");
        }
    }
}
