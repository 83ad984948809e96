//! Phase: the kubectl/crictl/ctr links to the k3s binary, as install.sh makes them.

use crate::transport::cmd::quote;
use crate::transport::{FactsQuery, FileFact};

use super::change::Change;
use super::error::Cause;
use super::phase::{Actions, Desired, Observed, Phase, add_path};

pub struct Symlinks;

impl Phase for Symlinks {
    fn name(&self) -> &'static str {
        "symlinks"
    }
    fn probe(&self, want: &Desired, q: &mut FactsQuery) {
        for l in &want.st.symlinks {
            add_path(q, &l.path);
        }
    }
    fn plan(&self, want: &Desired, seen: &Observed, _prior: &[Change]) -> Result<Vec<Change>, Cause> {
        Ok(want
            .st
            .symlinks
            .iter()
            .filter(|l| !matches!(seen.facts.files.get(&l.path), Some(FileFact::Present { link_target: Some(t), .. }) if *t == l.target))
            .map(|l| Change::Symlink { path: l.path.clone(), target: l.target.clone() })
            .collect())
    }
    fn apply(&self, _want: &Desired, _seen: &Observed, i: usize, change: &Change, acts: &mut Actions) {
        if let Change::Symlink { path, target } = change {
            acts.script.change(i, format!("ln -sfn {} {}", quote(target), quote(path)));
        }
    }
}
