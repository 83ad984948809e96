//! Profiles: data about the world that is not the user's cluster. OS families (how to recognise a
//! board, where things live, how to prepare it) and k3s releases (system images per addon). Read
//! from KDL files: the built-in ones under profiles/ (embedded at build time) and any directory the
//! user adds, so a new board OS or k3s release is a new file, never new code.
//! Owns parsing profile files; must not touch hosts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kdl::KdlDocument;

use crate::spec::diag::{Problems, SpecError};
use crate::spec::kdl::{Entries, children, no_children, unknown_node};
use crate::spec::reference::ImageRef;

mod builtin {
    include!(concat!(env!("OUT_DIR"), "/profiles.rs"));
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct OsProfile {
    pub name: String,
    pub description: String,
    /// os-release key -> accepted values.
    pub detect_os_release: Vec<(String, Vec<String>)>,
    /// accepted `uname -m` values.
    pub detect_arch: Vec<String>,
    pub package_manager: String,
    pub service_manager: String,
    pub paths: BTreeMap<String, String>,
    pub kernel_modules: Vec<String>,
    pub sysctls: Vec<(String, String)>,
    pub steps: Vec<Step>,
    pub registry_binary: Option<String>,
    /// Where the profile was read from (`builtin:os/x.kdl` or a path).
    pub origin: String,
}

/// An idempotent preparation step: runs `run` when `when` succeeds (or is absent) and `check` fails.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub name: String,
    pub when: Option<String>,
    pub check: String,
    pub run: String,
}

impl OsProfile {
    /// Does a board with this os-release and `uname -m` belong to this family?
    pub fn matches(&self, os_release: &BTreeMap<String, String>, arch: &str) -> bool {
        self.detect_arch.iter().any(|a| a == arch)
            && self
                .detect_os_release
                .iter()
                .all(|(k, vals)| os_release.get(k).is_some_and(|v| vals.iter().any(|x| x == v)))
    }

    pub fn path(&self, key: &str) -> Option<&str> {
        self.paths.get(key).map(String::as_str)
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct K3sRelease {
    pub version: String,
    pub pause: ImageRef,
    pub addons: Vec<Addon>,
    pub origin: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Addon {
    pub name: String,
    pub images: Vec<ImageRef>,
}

impl K3sRelease {
    /// Every image the release pulls with these addons disabled, pause first, each with the addon needing it.
    pub fn images(&self, disabled: &[&str]) -> Vec<(ImageRef, String)> {
        let mut out = vec![(self.pause.clone(), "pause (every pod's sandbox)".to_string())];
        for a in &self.addons {
            if disabled.contains(&a.name.as_str()) {
                continue;
            }
            out.extend(a.images.iter().map(|i| (i.clone(), format!("addon {}", a.name))));
        }
        out
    }
}

/// A known linux/riscv64 source for an image that lacks linux/riscv64 under its own name
/// (profiles/substitutes.kdl), offered by the closure check for a MISSING image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Substitute {
    pub image: ImageRef,
    /// The image that has linux/riscv64; None when no source is known (`note` says what to do).
    pub with: Option<ImageRef>,
    /// How the entry was verified, or why it could not be.
    pub checked: String,
    pub note: Option<String>,
    pub origin: String,
}

#[derive(Debug, Clone, Default)]
pub struct Profiles {
    pub os: Vec<OsProfile>,
    pub k3s: Vec<K3sRelease>,
    pub substitutes: Vec<Substitute>,
}

impl Profiles {
    /// The built-in profiles plus every `*.kdl` under the given directories (later ones override
    /// earlier ones of the same name).
    pub fn load(extra_dirs: &[PathBuf]) -> Result<Profiles, Vec<SpecError>> {
        let mut profiles = Profiles::default();
        let mut errors = Vec::new();
        for (rel, text) in builtin::BUILTIN {
            if let Err(e) = profiles.add_file(Path::new(&format!("profiles/{rel}")), text, &format!("builtin:{rel}")) {
                errors.push(e);
            }
        }
        for dir in extra_dirs {
            let mut files = Vec::new();
            collect_kdl(dir, &mut files);
            for f in files {
                match std::fs::read_to_string(&f) {
                    Ok(text) => {
                        if let Err(e) = profiles.add_file(&f, &text, &f.display().to_string()) {
                            errors.push(e);
                        }
                    }
                    Err(e) => errors.push(SpecError::new(&f, "", vec![io_problem(&e)])),
                }
            }
        }
        if errors.is_empty() { Ok(profiles) } else { Err(errors) }
    }

    pub fn builtin() -> Profiles {
        Profiles::load(&[]).expect("built-in profiles are valid (checked by tests)")
    }

    pub fn os(&self, name: &str) -> Option<&OsProfile> {
        self.os.iter().find(|o| o.name == name)
    }

    pub fn release(&self, version: &str) -> Option<&K3sRelease> {
        self.k3s.iter().find(|r| r.version == version)
    }

    /// The known substitute for an image, if profiles/ lists one.
    pub fn substitute(&self, image: &ImageRef) -> Option<&Substitute> {
        self.substitutes.iter().find(|s| s.image == *image)
    }

    /// The OS family a board's facts match, if exactly one does.
    pub fn detect(&self, os_release: &BTreeMap<String, String>, arch: &str) -> Vec<&OsProfile> {
        self.os.iter().filter(|o| o.matches(os_release, arch)).collect()
    }

    #[allow(clippy::result_large_err)] // SpecError carries the file text, built once on error
    fn add_file(&mut self, file: &Path, text: &str, origin: &str) -> Result<(), SpecError> {
        let doc = KdlDocument::parse_v2(text).map_err(|e| crate::spec::load::kdl_error(file, text, e))?;
        let mut p = Problems::default();
        for node in doc.nodes() {
            match node.name().value() {
                "os" => {
                    if let Some(o) = decode_os(node, origin, &mut p) {
                        self.os.retain(|x| x.name != o.name);
                        self.os.push(o);
                    }
                }
                "k3s-release" => {
                    if let Some(r) = decode_release(node, origin, &mut p) {
                        self.k3s.retain(|x| x.version != r.version);
                        self.k3s.push(r);
                    }
                }
                "substitute" => {
                    if let Some(sub) = decode_substitute(node, origin, &mut p) {
                        self.substitutes.retain(|x| x.image != sub.image);
                        self.substitutes.push(sub);
                    }
                }
                _ => unknown_node(node, &["os", "k3s-release", "substitute"], "at the top of a profile", &mut p),
            }
        }
        if p.is_empty() { Ok(()) } else { Err(SpecError::new(file, text, p.0)) }
    }
}

fn io_problem(e: &std::io::Error) -> crate::spec::diag::Problem {
    crate::spec::diag::Problem {
        span: (0, 0).into(),
        message: format!("cannot read profile: {e}"),
        label: String::new(),
        help: None,
    }
}

fn collect_kdl(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    v.sort();
    for p in v {
        if p.is_dir() {
            collect_kdl(&p, out);
        } else if p.extension().is_some_and(|e| e == "kdl") {
            out.push(p);
        }
    }
}

fn one_str(node: &kdl::KdlNode, what: &str, p: &mut Problems) -> Option<String> {
    let e = Entries::new(node, &[], p);
    no_children(node, p);
    if !e.expect_args(1, 1, what, p) {
        return None;
    }
    e.arg_str(0, what, p).map(|(s, _)| s)
}

fn decode_os(node: &kdl::KdlNode, origin: &str, p: &mut Problems) -> Option<OsProfile> {
    let e = Entries::new(node, &[], p);
    e.expect_args(1, 1, "a profile name", p);
    let (name, _) = e.arg_str(0, "the name", p)?;
    let mut o = OsProfile {
        name,
        description: String::new(),
        detect_os_release: Vec::new(),
        detect_arch: Vec::new(),
        package_manager: String::new(),
        service_manager: String::new(),
        paths: BTreeMap::new(),
        kernel_modules: Vec::new(),
        sysctls: Vec::new(),
        steps: Vec::new(),
        registry_binary: None,
        origin: origin.to_string(),
    };
    let allowed = [
        "description",
        "detect",
        "package-manager",
        "service-manager",
        "paths",
        "kernel-module",
        "sysctl",
        "step",
        "registry-binary",
    ];
    for c in children(node, &allowed, p) {
        match c.name().value() {
            "description" => o.description = one_str(c, "a description", p).unwrap_or_default(),
            "package-manager" => o.package_manager = one_str(c, "a package manager name", p).unwrap_or_default(),
            "service-manager" => o.service_manager = one_str(c, "a service manager name", p).unwrap_or_default(),
            "registry-binary" => o.registry_binary = one_str(c, "an absolute path", p),
            "kernel-module" => {
                let e = Entries::new(c, &[], p);
                o.kernel_modules.extend(e.arg_strs("a module", p).into_iter().map(|(s, _)| s));
            }
            "sysctl" => {
                let e = Entries::new(c, &[], p);
                if e.expect_args(2, 2, "a key and a value", p)
                    && let (Some((k, _)), Some((v, _))) = (e.arg_str(0, "the key", p), e.arg_str(1, "the value", p))
                {
                    o.sysctls.push((k, v));
                }
            }
            "paths" => {
                if let Some(doc) = c.children() {
                    for pn in doc.nodes() {
                        if let Some(v) = one_str(pn, "a path", p) {
                            o.paths.insert(pn.name().value().to_string(), v);
                        }
                    }
                }
            }
            "detect" => {
                for d in children(c, &["os-release", "arch"], p) {
                    let e = Entries::new(d, &[], p);
                    let vals: Vec<String> = e.arg_strs("a value", p).into_iter().map(|(s, _)| s).collect();
                    if d.name().value() == "arch" {
                        o.detect_arch.extend(vals);
                    } else if vals.len() < 2 {
                        p.push(d.span(), "`os-release` needs a key and at least one value", "expected KEY VALUE...");
                    } else {
                        o.detect_os_release.push((vals[0].clone(), vals[1..].to_vec()));
                    }
                }
            }
            "step" => {
                let e = Entries::new(c, &[], p);
                let Some((name, _)) = e.arg_str(0, "the step name", p) else { continue };
                let mut step = Step { name, when: None, check: String::new(), run: String::new() };
                for s in children(c, &["when", "check", "run"], p) {
                    let v = one_str(s, "a shell command", p).unwrap_or_default();
                    match s.name().value() {
                        "when" => step.when = Some(v),
                        "check" => step.check = v,
                        _ => step.run = v,
                    }
                }
                if step.check.is_empty() || step.run.is_empty() {
                    p.push(c.name().span(), "a `step` needs both `check` and `run`", "incomplete step");
                }
                o.steps.push(step);
            }
            _ => {}
        }
    }
    if o.detect_arch.is_empty() {
        p.push(node.name().span(), format!("OS profile `{}` has no `detect {{ arch ... }}`", o.name), "cannot be detected");
    }
    Some(o)
}

fn decode_release(node: &kdl::KdlNode, origin: &str, p: &mut Problems) -> Option<K3sRelease> {
    let e = Entries::new(node, &[], p);
    e.expect_args(1, 1, "a k3s version", p);
    let (version, _) = e.arg_str(0, "the version", p)?;
    let mut pause = None;
    let mut addons = Vec::new();
    let parse_img = |c: &kdl::KdlNode, p: &mut Problems| -> Option<ImageRef> {
        let s = one_str(c, "an image reference", p)?;
        match ImageRef::parse(&s) {
            Ok(r) => Some(r),
            Err(err) => {
                p.push(c.span(), format!("invalid image reference `{s}`: {err}"), "invalid reference");
                None
            }
        }
    };
    for c in children(node, &["pause", "addon"], p) {
        if c.name().value() == "pause" {
            pause = parse_img(c, p);
            continue;
        }
        let e = Entries::new(c, &[], p);
        let Some((name, _)) = e.arg_str(0, "the addon name", p) else { continue };
        let images = children(c, &["image"], p).into_iter().filter_map(|i| parse_img(i, p)).collect();
        addons.push(Addon { name, images });
    }
    let Some(pause) = pause else {
        p.push(node.name().span(), format!("k3s release `{version}` has no `pause` image"), "missing pause");
        return None;
    };
    Some(K3sRelease { version, pause, addons, origin: origin.to_string() })
}

/// `substitute "IMAGE" { use "IMAGE"; checked "..." }` or `substitute "IMAGE" { none "..."; checked "..." }`.
fn decode_substitute(node: &kdl::KdlNode, origin: &str, p: &mut Problems) -> Option<Substitute> {
    let e = Entries::new(node, &[], p);
    e.expect_args(1, 1, "the image that lacks linux/riscv64", p);
    let parse = |s: &str, span: miette::SourceSpan, p: &mut Problems| match ImageRef::parse(s) {
        Ok(r) => Some(r),
        Err(err) => {
            p.push(span, format!("invalid image reference `{s}`: {err}"), "invalid reference");
            None
        }
    };
    let (name, span) = e.arg_str(0, "the image", p)?;
    let image = parse(&name, span, p)?;
    let mut with = None;
    let mut checked = None;
    let mut note = None;
    for c in children(node, &["use", "none", "checked"], p) {
        let ce = Entries::new(c, &[], p);
        no_children(c, p);
        if !ce.expect_args(1, 1, "one string", p) {
            continue;
        }
        let Some((v, vspan)) = ce.arg_str(0, "the value", p) else { continue };
        match c.name().value() {
            "use" => with = parse(&v, vspan, p),
            "none" => note = Some(v),
            _ => checked = Some(v),
        }
    }
    if with.is_none() == note.is_none() {
        p.push(node.name().span(), format!("substitute `{name}` needs exactly one of `use` (the image to use) or `none` (why there is none)"), "use or none");
        return None;
    }
    let Some(checked) = checked else {
        p.push(node.name().span(), format!("substitute `{name}` needs `checked`: how it was verified, or that it was not"), "missing checked");
        return None;
    };
    Some(Substitute { image, with, checked, note, origin: origin.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_profiles_load_and_detect_openeuler() {
        let p = Profiles::builtin();
        let mut osr = BTreeMap::new();
        osr.insert("ID".to_string(), "openEuler".to_string());
        let found: Vec<_> = p.detect(&osr, "riscv64").iter().map(|o| o.name.clone()).collect();
        assert_eq!(found, vec!["openeuler-riscv64"]);
        assert!(p.detect(&osr, "x86_64").is_empty());
        let r = p.release("v1.34.3+k3s1").expect("release");
        assert_eq!(r.pause.to_string(), "docker.io/rancher/mirrored-pause:3.6");
        let imgs: Vec<String> = r.images(&["traefik", "coredns"]).iter().map(|(i, _)| i.to_string()).collect();
        assert!(imgs.contains(&"docker.io/rancher/local-path-provisioner:v0.0.32".to_string()));
        assert!(!imgs.iter().any(|i| i.contains("klipper-helm") || i.contains("coredns")));
    }

    #[test]
    fn every_builtin_family_is_told_apart() {
        let p = Profiles::builtin();
        for (id, arch, want) in [
            ("openEuler", "riscv64", "openeuler-riscv64"),
            ("debian", "riscv64", "debian-riscv64"),
            ("debian", "x86_64", "debian-host"),
        ] {
            let mut osr = BTreeMap::new();
            osr.insert("ID".to_string(), id.to_string());
            let found: Vec<_> = p.detect(&osr, arch).iter().map(|o| o.name.clone()).collect();
            assert_eq!(found, vec![want.to_string()], "{id} {arch}");
        }
    }

    #[test]
    fn a_new_os_family_is_a_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("alpine.kdl"),
            "os \"alpine-riscv64\" {\n detect { os-release \"ID\" \"alpine\"; arch \"riscv64\" }\n package-manager \"apk\"\n service-manager \"openrc\"\n}\n",
        )
        .unwrap();
        let p = Profiles::load(&[dir.path().to_path_buf()]).unwrap();
        let mut osr = BTreeMap::new();
        osr.insert("ID".to_string(), "alpine".to_string());
        assert_eq!(p.detect(&osr, "riscv64")[0].name, "alpine-riscv64");
    }

    #[test]
    fn a_broken_profile_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.kdl"), "k3s-release \"v9\" {\n addon \"x\"\n}\n").unwrap();
        let errs = Profiles::load(&[dir.path().to_path_buf()]).unwrap_err();
        let lines = errs[0].lines();
        assert!(lines[0].contains("bad.kdl:1:1"), "{lines:?}");
        assert!(lines[0].contains("no `pause` image"), "{lines:?}");
    }
}
