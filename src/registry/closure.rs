//! The closure check: for every image the cluster will pull, resolve it exactly as containerd on
//! a board will (mirror endpoints in order with rewrites, then upstream) and say whether it is
//! provided by cluster.kdl, present in our registry, available upstream for linux/riscv64,
//! missing (every place answered, none has it) or unknown (some place could not be asked).
//! Report types are pure; `check` does manifest GETs only.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::Serialize;

use super::client::{ClientOptions, RegistryClient};
use super::error::RegistryError;
use super::oci::{self, Kind};
use super::resolve::{self, Attempt, MirrorConfig};
use crate::spec::reference::ImageRef;

/// Who needs an image (for the error message and the suggested fix).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum NeededBy {
    /// A packaged k3s addon (traefik, coredns, ...): can be disabled.
    Addon(String),
    /// The pause (sandbox) image: every pod needs it.
    Pause,
    /// A custom manifest file.
    Manifest(String),
    /// An `image` entry of cluster.kdl.
    ImageEntry(String),
}

impl std::fmt::Display for NeededBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NeededBy::Addon(a) => write!(f, "addon {a}"),
            NeededBy::Pause => write!(f, "every pod (pause image)"),
            NeededBy::Manifest(m) => write!(f, "manifest {m}"),
            NeededBy::ImageEntry(i) => write!(f, "image entry {i}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Need {
    pub image: ImageRef,
    pub needed_by: Vec<NeededBy>,
}

/// What one place answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Has a linux/riscv64 manifest with this digest.
    Found { digest: String, index_digest: Option<String> },
    NotFound,
    /// Has the image but not for linux/riscv64: containerd stops here and fails.
    NoRiscv64 { platforms: Vec<String> },
    Unreachable { reason: String },
    Unauthorized { reason: String },
    Error { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tried {
    pub attempt: Attempt,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    ProvidedByCluster { source: String },
    PresentInRegistry { at: String, digest: String },
    AvailableUpstream { at: String, digest: String },
    Missing { tried: Vec<Tried> },
    Unknown { tried: Vec<Tried> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub image: String,
    pub needed_by: Vec<NeededBy>,
    #[serde(flatten)]
    pub status: Status,
    /// For a missing image: a known linux/riscv64 source (profiles/substitutes.kdl).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub substitute: Option<Offer>,
}

/// A known linux/riscv64 source for a missing image, and what its registry answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Offer {
    /// The image to copy (normalized reference); None when the data knows no source.
    pub with: Option<String>,
    /// How the data entry was verified (from the data).
    pub checked: String,
    /// Why there is no source and what to do (entries without `with`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// What the substitute's registry answered now (None: not asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<Outcome>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClosureReport {
    pub entries: Vec<Entry>,
    /// How a ported image would reach the nodes (decides the fix suggested for a missing one).
    pub delivery: FixDelivery,
}

/// Where an `image` entry added to cluster.kdl would go: the fix must fit the cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FixDelivery {
    /// Pushed to the cluster's registry.
    #[default]
    Registry,
    /// No registry: delivered as a tarball to every node.
    Tarball,
}

fn describe_tried(t: &Tried) -> String {
    let what = match &t.outcome {
        Outcome::Found { digest, .. } => format!("found {digest}"),
        Outcome::NotFound => "not found".into(),
        Outcome::NoRiscv64 { platforms } => format!("no linux/riscv64 (has {})", platforms.join(", ")),
        Outcome::Unreachable { reason } => format!("unreachable: {reason}"),
        Outcome::Unauthorized { reason } => format!("unauthorized: {reason}"),
        Outcome::Error { reason } => format!("error: {reason}"),
    };
    let place = if t.attempt.upstream { " (upstream)" } else { " (mirror)" };
    format!("{}{place}: {what}", t.attempt.display())
}

impl Entry {
    /// The fix to suggest for a missing image, for a cluster whose images go where `d` says: a
    /// verified substitute first, else port it.
    pub fn fix(&self, d: FixDelivery) -> String {
        let how = match d {
            FixDelivery::Registry => String::new(),
            FixDelivery::Tarball => " (there is no registry: it is delivered as a tarball to every node)".to_string(),
        };
        let add = |with: &str| format!("add `image \"{}\" from=\"docker://{with}\"` to cluster.kdl{how}", self.image);
        let mut fixes = match &self.substitute {
            Some(Offer { with: Some(w), answer: Some(Outcome::Found { digest, .. }), .. }) => {
                vec![format!("available for linux/riscv64 as {w} ({digest}): {}", add(w))]
            }
            Some(Offer { with: Some(w), answer: Some(a @ (Outcome::Unreachable { .. } | Outcome::Unauthorized { .. } | Outcome::Error { .. })), .. }) => {
                let why = match a {
                    Outcome::Unreachable { reason } | Outcome::Unauthorized { reason } | Outcome::Error { reason } => reason.as_str(),
                    _ => "",
                };
                vec![format!(
                    "probably available for linux/riscv64 as {w} (profiles/substitutes.kdl; its registry could not be asked: {why}): {}, or port it to linux/riscv64 and add `image \"{}\" from=\"oci-archive:PATH\"` (or a build block)",
                    add(w),
                    self.image
                )]
            }
            _ => vec![format!(
                "port it to linux/riscv64 and add `image \"{}\" from=\"oci-archive:PATH\"` (or a build block) to cluster.kdl{how}",
                self.image
            )],
        };
        for n in &self.needed_by {
            if let NeededBy::Addon(a) = n {
                fixes.push(format!("or disable the addon `{a}`"));
            }
        }
        fixes.join(" ")
    }

    /// What the substitutes data says beyond the fix (no known source, or the known one failed).
    pub fn substitute_note(&self) -> Option<String> {
        let o = self.substitute.as_ref()?;
        match (&o.with, &o.answer) {
            (None, _) => o.note.clone().map(|n| format!("no known linux/riscv64 source: {n}")),
            (Some(w), Some(Outcome::NotFound)) => Some(format!("the known substitute {w} was not found upstream")),
            (Some(w), Some(Outcome::NoRiscv64 { platforms })) => {
                Some(format!("the known substitute {w} has no linux/riscv64 upstream (has {})", platforms.join(", ")))
            }
            _ => None,
        }
    }
}

/// "needed by" for an image that is not a release image, in no manifest and no `image` entry.
pub const UNLISTED: &str = "a pod; not a k3s release image, in no manifest and no `image` entry of cluster.kdl";

impl ClosureReport {
    pub fn missing(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| matches!(e.status, Status::Missing { .. }))
    }
    pub fn unknown(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| matches!(e.status, Status::Unknown { .. }))
    }
    /// No missing image (unknown ones are warnings).
    pub fn is_ok(&self) -> bool {
        self.missing().next().is_none()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for e in &self.entries {
            let by: Vec<String> = e.needed_by.iter().map(|n| n.to_string()).collect();
            // An image no part of cluster.kdl asks for (a pod started by hand, a Helm chart's
            // own image): say so rather than naming nobody.
            let by = if by.is_empty() { UNLISTED.to_string() } else { by.join(", ") };
            match &e.status {
                Status::ProvidedByCluster { source } => out.push_str(&format!("ok       {} (provided by cluster.kdl from {source}; needed by {by})\n", e.image)),
                Status::PresentInRegistry { at, digest } => out.push_str(&format!("ok       {} (in registry at {at} {digest}; needed by {by})\n", e.image)),
                Status::AvailableUpstream { at, digest } => out.push_str(&format!("ok       {} (upstream {at} has linux/riscv64 {digest}; needed by {by})\n", e.image)),
                Status::Missing { tried } => {
                    out.push_str(&format!("MISSING  {} (needed by {by}): no linux/riscv64 image anywhere containerd looks\n", e.image));
                    for t in tried {
                        out.push_str(&format!("           tried {}\n", describe_tried(t)));
                    }
                    if let Some(n) = e.substitute_note() {
                        out.push_str(&format!("           note: {n}\n"));
                    }
                    out.push_str(&format!("           fix: {}\n", e.fix(self.delivery)));
                }
                Status::Unknown { tried } => {
                    out.push_str(&format!("UNKNOWN  {} (needed by {by}): could not ask every place\n", e.image));
                    for t in tried {
                        out.push_str(&format!("           tried {}\n", describe_tried(t)));
                    }
                }
            }
        }
        out
    }
}

/// Folds the answers of the attempts (in order) into a status, the way containerd walks them:
/// the first place that has the manifest decides; places that fail to answer are skipped.
pub fn decide(tried: Vec<Tried>) -> Status {
    for t in &tried {
        match &t.outcome {
            Outcome::Found { digest, .. } => {
                let at = t.attempt.display();
                let digest = digest.clone();
                return if t.attempt.upstream {
                    Status::AvailableUpstream { at, digest }
                } else {
                    Status::PresentInRegistry { at, digest }
                };
            }
            Outcome::NoRiscv64 { .. } => return Status::Missing { tried },
            _ => {}
        }
    }
    let definitive = tried.iter().all(|t| matches!(t.outcome, Outcome::NotFound));
    if definitive { Status::Missing { tried } } else { Status::Unknown { tried } }
}

/// How to reach each endpoint (credentials, CA); endpoints not listed use defaults.
pub type EndpointOptions = BTreeMap<String, ClientOptions>;

/// Asks one place for the image and checks for linux/riscv64.
pub fn probe(client: &RegistryClient, attempt: &Attempt) -> Outcome {
    let classify = |e: RegistryError| match e {
        RegistryError::Unreachable { reason, .. } | RegistryError::Transport { reason, .. } => Outcome::Unreachable { reason },
        RegistryError::Tls { reason, .. } => Outcome::Unreachable { reason },
        e @ RegistryError::Unauthorized { .. } => Outcome::Unauthorized { reason: e.to_string() },
        e => Outcome::Error { reason: e.to_string() },
    };
    let top = match client.get_manifest(&attempt.repository, &attempt.reference) {
        Ok(Some(m)) => m,
        Ok(None) => return Outcome::NotFound,
        // Distribution answers an unknown repository with 401 on some hubs when anonymous: treat
        // that as "could not ask", never as missing.
        Err(e) => return classify(e),
    };
    match oci::kind_of(&top.bytes, Some(&top.media_type)) {
        Ok(Kind::Index) => match oci::parse_index(&top.bytes) {
            Ok(idx) => match oci::select_riscv64(&idx) {
                Ok(d) => Outcome::Found { digest: d.digest.clone(), index_digest: Some(top.digest) },
                Err(platforms) => Outcome::NoRiscv64 { platforms },
            },
            Err(e) => Outcome::Error { reason: e.to_string() },
        },
        Ok(Kind::Manifest) => {
            // A single-platform image: the config says which.
            let m = match oci::parse_manifest(&top.bytes) {
                Ok(m) => m,
                Err(e) => return Outcome::Error { reason: e.to_string() },
            };
            let mut buf = Vec::new();
            let read = client
                .get_blob(&attempt.repository, &m.config.digest, 0)
                .and_then(|r| {
                    std::io::Read::read_to_end(&mut std::io::Read::take(r, 8 * 1024 * 1024), &mut buf)
                        .map_err(|e| RegistryError::Transport { url: attempt.endpoint.clone(), what: "config".into(), reason: e.to_string() })
                });
            if let Err(e) = read {
                return classify(e);
            }
            match serde_json::from_slice::<oci::ConfigPlatform>(&buf) {
                Ok(c) if c.platform().is_riscv64() => Outcome::Found { digest: top.digest, index_digest: None },
                Ok(c) => Outcome::NoRiscv64 { platforms: vec![c.platform().to_string()] },
                Err(e) => Outcome::Error { reason: format!("invalid image config: {e}") },
            }
        }
        Err(e) => Outcome::Error { reason: e.to_string() },
    }
}

/// Images probed at the same time by `check`.
const PARALLEL: usize = 8;

/// Walks the attempts for one image as containerd would, stopping at the first place that has it.
fn resolve_one(image: &ImageRef, mirrors: &MirrorConfig, options: &EndpointOptions, dead: &Mutex<HashMap<String, String>>) -> Status {
    // One client per endpoint for this image: bearer tokens are per repository scope.
    let mut clients: HashMap<String, Result<RegistryClient, RegistryError>> = HashMap::new();
    let mut tried = Vec::new();
    for a in resolve::attempts(mirrors, image) {
        let known_dead = dead.lock().unwrap_or_else(|p| p.into_inner()).get(&a.endpoint).cloned();
        let outcome = if let Some(reason) = known_dead {
            Outcome::Unreachable { reason }
        } else {
            let client = clients.entry(a.endpoint.clone()).or_insert_with(|| {
                let opts = options.get(&a.endpoint).cloned().unwrap_or_default();
                RegistryClient::new(&a.endpoint, opts)
            });
            let o = match client {
                Ok(c) => probe(c, &a),
                Err(e) => Outcome::Error { reason: e.to_string() },
            };
            if let Outcome::Unreachable { reason } = &o {
                dead.lock().unwrap_or_else(|p| p.into_inner()).insert(a.endpoint.clone(), reason.clone());
            }
            o
        };
        let stop = matches!(outcome, Outcome::Found { .. } | Outcome::NoRiscv64 { .. });
        tried.push(Tried { attempt: a, outcome });
        if stop {
            break;
        }
    }
    decide(tried)
}

/// Resolves every needed image (up to 8 at a time). `provided` maps normalized references
/// (Display of ImageRef) of cluster.kdl `image` entries to their source description. `options`
/// is keyed by normalized endpoint URL. An endpoint found unreachable is not asked again (a
/// black-holed upstream would otherwise cost a connect timeout per image).
pub fn check(needs: &[Need], provided: &BTreeMap<String, String>, mirrors: &MirrorConfig, options: &EndpointOptions) -> ClosureReport {
    // Merge needs of the same image.
    let mut merged: Vec<(ImageRef, Vec<NeededBy>)> = Vec::new();
    for n in needs {
        match merged.iter_mut().find(|(i, _)| *i == n.image) {
            Some((_, by)) => {
                for b in &n.needed_by {
                    if !by.contains(b) {
                        by.push(b.clone());
                    }
                }
            }
            None => merged.push((n.image.clone(), n.needed_by.clone())),
        }
    }
    let dead = Mutex::new(HashMap::new());
    // A worker takes the next image as soon as it is free (one slow registry holds up one
    // worker, not a batch). A panicking lookup answers Unknown.
    let statuses = crate::transport::pool_or(
        &merged,
        PARALLEL,
        |(image, _)| match provided.get(&image.to_string()) {
            Some(src) => Status::ProvidedByCluster { source: src.clone() },
            None => resolve_one(image, mirrors, options, &dead),
        },
        |_| Status::Unknown { tried: vec![] },
    );
    let entries = merged
        .into_iter()
        .zip(statuses)
        .map(|((image, needed_by), status)| Entry { image: image.to_string(), needed_by, status, substitute: None })
        .collect();
    ClosureReport { entries, delivery: FixDelivery::default() }
}

/// A known linux/riscv64 source for an image, as data (the caller reads profiles/substitutes.kdl).
#[derive(Debug, Clone)]
pub struct Known {
    pub image: ImageRef,
    pub with: Option<ImageRef>,
    pub checked: String,
    pub note: Option<String>,
}

/// Attaches the known substitutes to the missing entries of `report`, asking each substitute's
/// upstream registry (the same endpoint containerd's default would be) whether it really has
/// linux/riscv64: the offer then says so with the digest, or that it could not be checked.
pub fn offer_substitutes(report: &mut ClosureReport, known: &[Known], mirrors: &MirrorConfig, options: &EndpointOptions) {
    for e in report.entries.iter_mut().filter(|e| matches!(e.status, Status::Missing { .. })) {
        let Some(k) = known.iter().find(|k| k.image.to_string() == e.image) else { continue };
        let answer = k.with.as_ref().map(|w| {
            let endpoint = resolve::upstream_endpoint(mirrors, &w.registry);
            let attempt =
                Attempt { endpoint: endpoint.clone(), repository: w.repository.clone(), reference: w.api_reference().to_string(), upstream: true };
            match RegistryClient::new(&endpoint, options.get(&endpoint).cloned().unwrap_or_default()) {
                Ok(client) => probe(&client, &attempt),
                Err(err) => Outcome::Error { reason: err.to_string() },
            }
        });
        e.substitute = Some(Offer {
            with: k.with.as_ref().map(|w| w.to_string()),
            checked: k.checked.clone(),
            note: k.note.clone(),
            answer,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(ep: &str, upstream: bool) -> Attempt {
        Attempt { endpoint: ep.into(), repository: "rancher/klipper-lb".into(), reference: "v0.4.13".into(), upstream }
    }

    fn t(ep: &str, upstream: bool, outcome: Outcome) -> Tried {
        Tried { attempt: att(ep, upstream), outcome }
    }

    #[test]
    fn first_answer_decides_and_unreachable_is_unknown_not_missing() {
        let found = Outcome::Found { digest: "sha256:d".into(), index_digest: None };
        assert_eq!(
            decide(vec![t("http://127.0.0.1:5000", false, Outcome::NotFound), t("https://registry-1.docker.io", true, found.clone())]),
            Status::AvailableUpstream { at: "registry-1.docker.io/rancher/klipper-lb:v0.4.13".into(), digest: "sha256:d".into() }
        );
        assert!(matches!(
            decide(vec![t("http://127.0.0.1:5000", false, found)]),
            Status::PresentInRegistry { .. }
        ));
        assert!(matches!(
            decide(vec![
                t("http://127.0.0.1:5000", false, Outcome::NotFound),
                t("https://registry-1.docker.io", true, Outcome::Unreachable { reason: "refused".into() })
            ]),
            Status::Unknown { .. }
        ));
        assert!(matches!(
            decide(vec![t("http://127.0.0.1:5000", false, Outcome::NotFound), t("https://registry-1.docker.io", true, Outcome::NotFound)]),
            Status::Missing { .. }
        ));
        // A place that has the image without riscv64 ends the search: containerd fails there.
        assert!(matches!(
            decide(vec![
                t("https://registry-1.docker.io", true, Outcome::NoRiscv64 { platforms: vec!["linux/amd64".into()] }),
            ]),
            Status::Missing { .. }
        ));
    }

    #[test]
    fn missing_rendering_names_need_places_and_fix() {
        let r = ClosureReport {
            entries: vec![Entry {
                image: "docker.io/rancher/klipper-lb:v0.4.13".into(),
                needed_by: vec![NeededBy::Addon("servicelb".into())],
                status: Status::Missing {
                    tried: vec![
                        t("http://127.0.0.1:5000", false, Outcome::NotFound),
                        t("https://registry-1.docker.io", true, Outcome::NoRiscv64 { platforms: vec!["linux/amd64".into(), "linux/arm64".into()] }),
                    ],
                },
                substitute: None,
            }],
            delivery: FixDelivery::Registry,
        };
        assert!(!r.is_ok());
        let text = r.render();
        assert_eq!(
            text,
            "MISSING  docker.io/rancher/klipper-lb:v0.4.13 (needed by addon servicelb): no linux/riscv64 image anywhere containerd looks\n           tried 127.0.0.1:5000/rancher/klipper-lb:v0.4.13 (mirror): not found\n           tried registry-1.docker.io/rancher/klipper-lb:v0.4.13 (upstream): no linux/riscv64 (has linux/amd64, linux/arm64)\n           fix: port it to linux/riscv64 and add `image \"docker.io/rancher/klipper-lb:v0.4.13\" from=\"oci-archive:PATH\"` (or a build block) to cluster.kdl or disable the addon `servicelb`\n"
        );
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["entries"][0]["status"], "missing");
        // Without a registry the fix says where the ported image goes, and never "push".
        let air = ClosureReport { delivery: FixDelivery::Tarball, ..r.clone() };
        let fix = air.render().lines().find(|l| l.contains("fix:")).unwrap().to_string();
        assert!(fix.contains("delivered as a tarball to every node") && !fix.contains("push"), "{fix}");
        assert_eq!(j["entries"][0]["tried"][1]["outcome"], "no_riscv64");
    }

    #[test]
    fn an_image_cluster_kdl_does_not_name_is_needed_by_a_pod_not_by_nobody() {
        let entry = |status| Entry { image: "docker.io/someone/tool:1".into(), needed_by: vec![], status, substitute: None };
        let r = ClosureReport {
            entries: vec![
                entry(Status::Missing { tried: vec![t("http://127.0.0.1:5000", false, Outcome::NotFound)] }),
                entry(Status::Unknown { tried: vec![t("https://registry-1.docker.io", true, Outcome::Unreachable { reason: "refused".into() })] }),
                entry(Status::PresentInRegistry { at: "127.0.0.1:5000/someone/tool:1".into(), digest: "sha256:d".into() }),
            ],
            delivery: FixDelivery::Registry,
        };
        let text = r.render();
        assert!(!text.contains("needed by )") && !text.contains("needed by :"), "{text}");
        assert_eq!(text.matches(&format!("needed by {UNLISTED}")).count(), 3, "{text}");
        assert!(text.starts_with(
            "MISSING  docker.io/someone/tool:1 (needed by a pod; not a k3s release image, in no manifest and no `image` entry of cluster.kdl): no linux/riscv64"
        ), "{text}");
    }
}
