//! Phase: the OS profile's preparation steps (firewalld ports, default route...). Each step's
//! `when` and `check` run inside the facts command as probes; a step whose `when` holds and whose
//! `check` fails runs its `run` in the apply script.

use crate::transport::FactsQuery;

use super::change::Change;
use super::error::Cause;
use super::phase::{Actions, Desired, Observed, Phase, add_guarded_probe, add_probe};

pub struct Steps;

impl Phase for Steps {
    fn name(&self) -> &'static str {
        "steps"
    }
    fn probe(&self, want: &Desired, q: &mut FactsQuery) {
        for s in &want.st.steps {
            match &s.when {
                Some(w) => {
                    let g = add_probe(q, w);
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
        Ok(want
            .st
            .steps
            .iter()
            .filter(|s| s.when.as_deref().is_none_or(ok) && !ok(&s.check))
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
}
