//! What differs between two generations of a host, as a unified diff: text files line by line
//! (secrets hidden), binaries by digest, modes, owners, symlinks, the unit and the k3s version.
//! Pure: the contents come from the store, fetched by [`fetch_command`].

use std::collections::{BTreeMap, BTreeSet};

use super::{FileEntry, Manifest, store_path};
use crate::transport::cmd::quote;

/// The store entries whose content the diff shows (text, not secret, differing).
pub fn wanted(a: &Manifest, b: &Manifest) -> Vec<String> {
    let old: BTreeMap<&str, &FileEntry> = a.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut out = BTreeSet::new();
    for f in &b.files {
        let o = old.get(f.path.as_str());
        if o.is_some_and(|o| o.sha256 == f.sha256) {
            continue;
        }
        for e in std::iter::once(f).chain(o.copied()) {
            if !e.binary && !e.secret {
                out.insert(e.sha256.clone());
            }
        }
    }
    for f in &a.files {
        if !b.files.iter().any(|g| g.path == f.path) && !f.binary && !f.secret {
            out.insert(f.sha256.clone());
        }
    }
    out.into_iter().collect()
}

/// Prints each wanted store entry as `@@rv blob SHA HEX`.
pub fn fetch_command(shas: &[String]) -> String {
    let mut s = String::from("true");
    for h in shas {
        s.push_str(&format!(
            "; if [ -f {p} ]; then printf '@@rv blob %s ' {h}; od -An -v -tx1 < {p} | tr -d ' \\n'; echo; fi",
            p = quote(&store_path(h)),
            h = quote(h)
        ));
    }
    s
}

pub fn parse_blobs(out: &str) -> BTreeMap<String, Vec<u8>> {
    out.lines()
        .filter_map(|l| l.strip_prefix("@@rv blob "))
        .filter_map(|r| {
            let (h, x) = r.split_once(' ').unwrap_or((r, ""));
            Some((h.to_string(), hex::decode(x.trim()).ok()?))
        })
        .collect()
}

fn text_of(blobs: &BTreeMap<String, Vec<u8>>, f: &FileEntry) -> String {
    blobs.get(&f.sha256).map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default()
}

/// The diff from `a` to `b`.
pub fn render(a: &Manifest, b: &Manifest, blobs: &BTreeMap<String, Vec<u8>>) -> String {
    let mut out = Vec::new();
    if a.k3s != b.k3s {
        out.push(format!("k3s: {} -> {}", a.k3s.as_deref().unwrap_or("none"), b.k3s.as_deref().unwrap_or("none")));
    }
    if a.unit != b.unit {
        let show = |m: &Manifest| {
            m.unit.as_ref().map(|u| format!("{} ({}, {})", u.name, if u.enabled { "enabled" } else { "disabled" }, if u.active { "active" } else { "inactive" })).unwrap_or_else(|| "no unit".into())
        };
        out.push(format!("unit: {} -> {}", show(a), show(b)));
    }
    let old: BTreeMap<&str, &FileEntry> = a.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let new: BTreeMap<&str, &FileEntry> = b.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let paths: BTreeSet<&str> = old.keys().chain(new.keys()).copied().collect();
    for p in paths {
        match (old.get(p), new.get(p)) {
            (Some(o), Some(n)) => {
                if o.mode != n.mode || o.owner != n.owner {
                    out.push(format!("~ {p}: {:04o} {} -> {:04o} {}", o.mode, o.owner, n.mode, n.owner));
                }
                if o.sha256 != n.sha256 {
                    out.push(format!("~ {p}"));
                    out.push(body(Some(o), Some(n), blobs, p));
                }
            }
            (None, Some(n)) => {
                out.push(format!("+ {p} ({:04o} {})", n.mode, n.owner));
                out.push(body(None, Some(n), blobs, p));
            }
            (Some(o), None) => {
                out.push(format!("- {p}"));
                out.push(body(Some(o), None, blobs, p));
            }
            (None, None) => {}
        }
    }
    let links = |m: &Manifest| m.symlinks.iter().map(|l| (l.path.clone(), l.target.clone())).collect::<BTreeMap<_, _>>();
    let (la, lb) = (links(a), links(b));
    for (p, t) in &lb {
        if la.get(p) != Some(t) {
            out.push(format!("+ {p} -> {t}"));
        }
    }
    for (p, t) in &la {
        if !lb.contains_key(p) {
            out.push(format!("- {p} -> {t}"));
        }
    }
    out.retain(|l| !l.is_empty());
    if out.is_empty() {
        return "no differences\n".into();
    }
    out.join("\n") + "\n"
}

fn body(o: Option<&FileEntry>, n: Option<&FileEntry>, blobs: &BTreeMap<String, Vec<u8>>, path: &str) -> String {
    if o.is_some_and(|f| f.secret) || n.is_some_and(|f| f.secret) {
        return "    (content hidden: holds a secret)".into();
    }
    if o.is_some_and(|f| f.binary) || n.is_some_and(|f| f.binary) {
        let short = |f: Option<&FileEntry>| f.map(|f| format!("sha256:{}", &f.sha256[..16.min(f.sha256.len())])).unwrap_or_else(|| "none".into());
        return format!("    {} -> {}", short(o), short(n));
    }
    let old = o.map(|f| text_of(blobs, f)).unwrap_or_default();
    let new = n.map(|f| text_of(blobs, f)).unwrap_or_default();
    crate::converge::unified_diff(&old, &new, path)
}
