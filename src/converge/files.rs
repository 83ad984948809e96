//! Phase: managed files (binaries, units, config, manifests). A file is created when absent,
//! updated when its sha256 differs (with a diff of text content, secrets hidden), or only has
//! its mode/owner fixed. Text content is written by the apply script (temp file, sha256
//! verified, rename); local binaries stream with the same atomic rules, as requests on the held
//! lock+facts command's stdin before the script (src/converge/session.rs).

use crate::render::{Content, DesiredFile};
use crate::transport::cmd::{self, quote};
use crate::transport::{FactsQuery, FileFact, RemoteFile};

use super::change::{Change, mode_str, unified_diff};
use super::error::Cause;
use super::phase::{Actions, Desired, Observed, Phase, Upload, add_path, add_probe};
use crate::transport::cmd::Codec;

/// Local files at least this big travel compressed when the host can decompress.
pub const COMPRESS_FROM: u64 = 1 << 20;

/// The compression to send `local` with: zstd, else gzip, when the host has the tool.
pub fn codec_for(local: &std::path::Path, seen: &Observed) -> Option<Codec> {
    let big = std::fs::metadata(local).map(|m| m.len() >= COMPRESS_FROM).unwrap_or(false);
    if !big {
        return None;
    }
    [Codec::Zstd, Codec::Gzip].into_iter().find(|c| seen.probe(c.probe()) == Some(0))
}

pub struct Files;

impl Phase for Files {
    fn name(&self) -> &'static str {
        "files"
    }
    fn probe(&self, want: &Desired, q: &mut FactsQuery) {
        if want.st.files.iter().any(|f| matches!(f.content, Content::Local { .. })) {
            add_probe(q, Codec::Zstd.probe());
            add_probe(q, Codec::Gzip.probe());
        }
        for f in &want.st.files {
            add_path(q, &f.path);
            // The old content of a changed text file comes with the facts, for the diff.
            if let Content::Stored { sha256, binary: false } = &f.content
                && !f.secret
            {
                // A rollback's diff: the stored content it goes back to.
                super::phase::add_read(q, &crate::generation::store_path(sha256));
            }
            if let Content::Text(_) | Content::Stored { binary: false, .. } = f.content
                && !f.secret
                && !q.reads_unless.iter().any(|(p, _)| *p == f.path)
            {
                q.reads_unless.push((f.path.clone(), f.sha256()));
            }
        }
    }
    fn plan(&self, want: &Desired, seen: &Observed, _prior: &[Change]) -> Result<Vec<Change>, Cause> {
        Ok(want.st.files.iter().filter_map(|f| file_change(f, seen)).collect())
    }
    fn apply(&self, want: &Desired, seen: &Observed, i: usize, change: &Change, acts: &mut Actions) {
        let path = match change {
            Change::CreateFile { path, .. } | Change::UpdateFile { path, .. } | Change::FixMode { path, .. } => path,
            _ => return,
        };
        let Some(f) = want.st.files.iter().find(|f| f.path == *path) else { return };
        if let Change::FixMode { .. } = change {
            acts.script.change(i, format!("chmod {} {p} && chown {} {p}", cmd::mode_str(f.mode), quote(&f.owner), p = quote(&f.path)));
            return;
        }
        match &f.content {
            Content::Text(t) => {
                // The generation this apply records keeps the text too: written from the same
                // content, checked by the same hash pass, not copied back afterwards.
                let store = crate::generation::store_path(&f.sha256());
                let copies = [
                    cmd::TextCopy { dest: &f.path, mode: f.mode, owner: Some(&f.owner), kept: false },
                    cmd::TextCopy { dest: &store, mode: 0o600, owner: None, kept: true },
                ];
                acts.script.text(Some(i), &copies, t, &f.sha256());
            }
            Content::Stored { sha256, .. } => {
                let tmp = cmd::temp_path_for(&f.path, &format!("{}.{i}", std::process::id()));
                let src = crate::generation::store_path(sha256);
                acts.script.change(i, cmd::copy_verified(&src, &f.path, &tmp, sha256, f.mode, Some(&f.owner)));
            }
            Content::Local { path: local, sha256 } => acts.uploads.push(Upload {
                change: i,
                local: local.clone(),
                sha256: sha256.clone(),
                // The generation this apply records keeps the binary: taken from the same
                // stream, not copied and hashed again afterwards (docs/generations.md §2).
                dest: RemoteFile::new(f.path.clone(), f.mode).owned_by(f.owner.clone()).kept_at(crate::generation::store_path(sha256)),
                codec: codec_for(local, seen),
            }),
        }
    }
}

/// Pure: what one desired file needs, given the facts.
pub fn file_change(f: &DesiredFile, seen: &Observed) -> Option<Change> {
    let want_sha = f.sha256();
    let want_owner = f.owner.split(':').next().unwrap_or("root");
    match seen.facts.files.get(&f.path) {
        None | Some(FileFact::Absent) => Some(Change::CreateFile {
            path: f.path.clone(),
            mode: mode_str(f.mode),
            detail: match &f.content {
                Content::Local { path, sha256 } => {
                    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                    format!("{size} bytes, sha256:{}", &sha256[..16.min(sha256.len())])
                }
                Content::Text(t) if f.secret => format!("{} lines, content hidden (secret)", t.lines().count()),
                Content::Text(t) => format!("{} lines", t.lines().count()),
                Content::Stored { sha256, .. } => format!("from the generation store, sha256:{}", &sha256[..16.min(sha256.len())]),
            },
        }),
        Some(FileFact::Present { sha256, mode, owner, .. }) => {
            if sha256.as_deref() != Some(want_sha.as_str()) {
                let diff = match &f.content {
                    Content::Text(_) if f.secret => "    (content hidden: holds a secret)".to_string(),
                    Content::Text(t) => {
                        let old = seen.facts.contents.get(&f.path).map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
                        unified_diff(&old, t, &f.path)
                    }
                    Content::Stored { sha256: new, binary: false } => {
                        let text = |p: &str| seen.facts.contents.get(p).map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
                        unified_diff(&text(&f.path), &text(&crate::generation::store_path(new)), &f.path)
                    }
                    Content::Local { sha256: new, .. } | Content::Stored { sha256: new, .. } => format!(
                        "    sha256:{} -> sha256:{}",
                        sha256.as_deref().map(|s| &s[..16.min(s.len())]).unwrap_or("?"),
                        &new[..16.min(new.len())]
                    ),
                };
                Some(Change::UpdateFile { path: f.path.clone(), mode: mode_str(f.mode), diff })
            } else if *mode != f.mode || owner != want_owner {
                Some(Change::FixMode { path: f.path.clone(), from: mode_str(*mode), to: mode_str(f.mode) })
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::converge::testutil::{facts_with, state};

    #[test]
    fn absent_changed_and_mode_only() {
        let st = state();
        let want = Desired::new(&st, crate::spec::Role::Server);
        let cfg = st.files.iter().find(|f| f.path == crate::render::CONFIG).unwrap();
        // Everything absent: one create per file.
        let none = facts_with(&[]);
        let ch = Files.plan(&want, &none, &[]).unwrap();
        assert_eq!(ch.len(), st.files.len());
        assert!(ch.iter().all(|c| matches!(c, Change::CreateFile { .. })));
        // All present and equal: nothing.
        let all: Vec<(&str, String)> = st.files.iter().map(|f| (f.path.as_str(), f.sha256())).collect();
        let refs: Vec<(&str, &str)> = all.iter().map(|(p, h)| (*p, h.as_str())).collect();
        let mut same = facts_with(&refs);
        assert!(Files.plan(&want, &same, &[]).unwrap().is_empty());
        // config.yaml edited by hand: an update whose diff shows the old line.
        same.facts.files.insert(cfg.path.clone(), crate::converge::testutil::present("00", cfg.mode));
        same.facts.contents.insert(cfg.path.clone(), b"node-name: someone-else\n".to_vec());
        let ch = Files.plan(&want, &same, &[]).unwrap();
        let [Change::UpdateFile { diff, .. }] = ch.as_slice() else { panic!("{ch:?}") };
        assert!(diff.contains("-node-name: someone-else"), "{diff}");
        // Only the mode differs.
        same.facts.files.insert(cfg.path.clone(), crate::converge::testutil::present(&cfg.sha256(), 0o644));
        let ch = Files.plan(&want, &same, &[]).unwrap();
        assert!(matches!(ch.as_slice(), [Change::FixMode { from, to, .. }] if from == "0644" && to == "0600"), "{ch:?}");
    }

    #[test]
    fn secrets_are_never_diffed_nor_read() {
        let st = state();
        let want = Desired::new(&st, crate::spec::Role::Agent);
        let mut q = FactsQuery::default();
        Files.probe(&want, &mut q);
        for f in st.files.iter().filter(|f| f.secret) {
            assert!(!q.reads_unless.iter().any(|(p, _)| *p == f.path), "{} is read", f.path);
        }
    }
}
