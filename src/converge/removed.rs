//! Phase: files an earlier apply wrote that cluster.kdl no longer asks for (a removed manifest,
//! registries.yaml after the registry block went away) are removed, and k3s restarted if it read
//! them. The record of managed files (`/var/lib/rvcluster/managed-<unit>.list`) comes with the
//! facts and is rewritten by the script whenever it changes.

use crate::render::MANIFESTS;
use crate::transport::cmd::{self, quote};
use crate::transport::FactsQuery;

use super::change::Change;
use super::error::Cause;
use super::phase::{Actions, Desired, Observed, Phase, add_read};
use super::session::STATE_DIR;

pub struct Removed;

pub fn record_path(want: &Desired) -> String {
    format!("{STATE_DIR}/managed-{}.list", want.st.service.unit)
}

fn wanted<'a>(want: &Desired<'a>) -> Vec<&'a str> {
    want.st.files.iter().map(|f| f.path.as_str()).chain(want.st.symlinks.iter().map(|l| l.path.as_str())).collect()
}

/// The record's new text (sorted paths, one per line).
pub fn record_text(want: &Desired) -> String {
    let mut listed = wanted(want);
    listed.sort();
    listed.iter().map(|p| format!("{p}\n")).collect()
}

fn previous(want: &Desired, seen: &Observed) -> String {
    seen.facts.contents.get(&record_path(want)).map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default()
}

impl Phase for Removed {
    fn name(&self) -> &'static str {
        "removed-files"
    }
    fn probe(&self, want: &Desired, q: &mut FactsQuery) {
        add_read(q, &record_path(want));
    }
    fn plan(&self, want: &Desired, seen: &Observed, _prior: &[Change]) -> Result<Vec<Change>, Cause> {
        let keep = wanted(want);
        Ok(previous(want, seen)
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with('/') && !keep.contains(l))
            .map(|l| Change::RemoveFile { path: l.to_string() })
            .collect())
    }
    fn apply(&self, _want: &Desired, _seen: &Observed, i: usize, change: &Change, acts: &mut Actions) {
        if let Change::RemoveFile { path } = change {
            acts.script.change(i, format!("rm -f {}", quote(path)));
        }
    }
}

/// Bookkeeping after every phase: the record, when it changed (a text write of the script).
/// Whether it was added.
pub fn add_record(want: &Desired, seen: &Observed, script: &mut super::script::Script) -> bool {
    let text = record_text(want);
    if previous(want, seen) == text {
        return false;
    }
    let path = record_path(want);
    let copy = cmd::TextCopy { dest: &path, mode: 0o600, owner: Some("root:root"), kept: false };
    script.text(None, &[copy], &text, &crate::render::sha256_hex(text.as_bytes()));
    true
}

/// Whether removing `path` needs k3s restarted: neither a removed manifest nor a removed
/// image tarball is read again by k3s (docs/k3s-behaviour.md §6.1, docs/registry-modes.md).
pub fn removal_restarts(path: &str) -> bool {
    !path.starts_with(MANIFESTS) && !path.starts_with(crate::render::airgap::IMAGES_DIR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::converge::testutil::{facts_with, state};

    #[test]
    fn files_dropped_from_the_record_are_removed() {
        let st = state();
        let want = Desired::new(&st, crate::spec::Role::Server);
        let mut seen = facts_with(&[]);
        let mut old = record_text(&want);
        old.push_str("/etc/rancher/k3s/registries.yaml\n");
        seen.facts.contents.insert(record_path(&want), old.into_bytes());
        let ch = Removed.plan(&want, &seen, &[]).unwrap();
        assert_eq!(ch, vec![Change::RemoveFile { path: "/etc/rancher/k3s/registries.yaml".into() }]);
        assert!(add_record(&want, &seen, &mut Default::default()));
        seen.facts.contents.insert(record_path(&want), record_text(&want).into_bytes());
        assert!(Removed.plan(&want, &seen, &[]).unwrap().is_empty());
        assert!(!add_record(&want, &seen, &mut Default::default()));
    }
}
