//! Phase: the installed k3s binary is the pinned one but reports another release. The addon
//! images the closure check used (`profiles/k3s/<version>.kdl`) would then be the wrong ones.

use crate::render::Content;
use crate::transport::{FactsQuery, FileFact};

use super::change::Change;
use super::error::Cause;
use super::phase::{Actions, Desired, Observed, Phase, add_path};

pub struct Version;

impl Phase for Version {
    fn name(&self) -> &'static str {
        "version"
    }
    fn probe(&self, want: &Desired, q: &mut FactsQuery) {
        if let Some(b) = pinned_binary(want) {
            add_path(q, &b.path);
            q.k3s_binary = b.path.clone();
        }
    }
    fn plan(&self, want: &Desired, seen: &Observed, _prior: &[Change]) -> Result<Vec<Change>, Cause> {
        let (Some(v), Some(got), Some(b)) = (&want.st.k3s_version, &seen.facts.k3s_version, pinned_binary(want)) else {
            return Ok(vec![]);
        };
        let same = matches!(seen.facts.files.get(&b.path), Some(FileFact::Present { sha256: Some(h), .. }) if *h == b.sha256());
        if same && !got.split_whitespace().any(|w| w == v) {
            return Err(Cause::VersionMismatch { got: got.clone(), want: v.clone() });
        }
        // Another release on the board: say so (the binary itself is the files phase's).
        match crate::generation::version_word(got) {
            Some(from) if !same && from != *v => Ok(vec![Change::Upgrade { from, to: v.clone() }]),
            _ => Ok(vec![]),
        }
    }
    fn apply(&self, _: &Desired, _: &Observed, _: usize, _: &Change, _: &mut Actions) {}
}

fn pinned_binary<'a>(want: &'a Desired) -> Option<&'a crate::render::DesiredFile> {
    want.st.k3s_version.as_ref()?;
    want.st.files.iter().find(|f| f.path.ends_with("/k3s") && matches!(f.content, Content::Local { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::converge::testutil::{facts_with, state};

    #[test]
    fn the_pinned_binary_reporting_another_version_is_an_error() {
        let st = state();
        let want = Desired::new(&st, crate::spec::Role::Server);
        let bin = st.files.iter().find(|f| f.path.ends_with("/k3s")).unwrap();
        let mut seen = facts_with(&[(&bin.path, &bin.sha256())]);
        seen.facts.k3s_version = Some("k3s version v1.30.0+k3s1 (x)".into());
        assert!(matches!(Version.plan(&want, &seen, &[]), Err(Cause::VersionMismatch { .. })));
        seen.facts.k3s_version = Some(format!("k3s version {} (x)", st.k3s_version.clone().unwrap()));
        assert!(Version.plan(&want, &seen, &[]).unwrap().is_empty());
        // Another binary on the board: it is about to be replaced; the plan says which release moves.
        let mut other = facts_with(&[(&bin.path, "ab")]);
        other.facts.k3s_version = Some("k3s version v1.30.0+k3s1".into());
        let up = Version.plan(&want, &other, &[]).unwrap();
        assert_eq!(up, vec![Change::Upgrade { from: "v1.30.0+k3s1".into(), to: "v1.33.4+k3s1".into() }]);
    }
}
