//! Pushing loaded images: a `PushPlan` computed with read-only requests (what is already there,
//! what can be mounted from another repository we pushed, what must be uploaded), then executed
//! with progress events over an mpsc channel. Manifests are pushed as their original bytes and
//! read back to verify the digest.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use super::client::{Mount, RegistryClient, UploadProgress};
use super::oci::Descriptor;
use super::error::{RegistryError, Result};
use super::source::LoadedImage;

/// One image to push: the loaded source and the repository/tag containerd will look up
/// (see `resolve::destination`).
#[derive(Debug)]
pub struct PushItem {
    /// What the user calls it (the reference pods ask for), for messages.
    pub name: String,
    pub image: LoadedImage,
    pub repository: String,
    /// Tag to set; None pushes by digest only.
    pub tag: Option<String>,
    /// Digest of the riscv64 manifest pinned by the lock file, if any: anything else is refused.
    pub locked_manifest_digest: Option<String>,
}

impl PushItem {
    pub fn reference(&self) -> String {
        self.tag.clone().unwrap_or_else(|| self.image.manifest_digest.clone())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum BlobAction {
    /// The destination repository already has it.
    Present,
    /// Another repository of the registry has it: cross-repository mount, no bytes sent.
    Mount { from: String },
    Upload,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlobPlan {
    pub digest: String,
    pub size: u64,
    #[serde(flatten)]
    pub action: BlobAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImagePlan {
    pub name: String,
    pub source: String,
    pub repository: String,
    pub reference: String,
    pub manifest_digest: String,
    pub index_digest: Option<String>,
    /// The reference already points at exactly this manifest.
    pub manifest_present: bool,
    pub blobs: Vec<BlobPlan>,
}

impl ImagePlan {
    pub fn bytes_to_send(&self) -> u64 {
        self.blobs.iter().filter(|b| b.action == BlobAction::Upload).map(|b| b.size).sum()
    }
    pub fn is_noop(&self) -> bool {
        self.manifest_present && self.blobs.iter().all(|b| b.action == BlobAction::Present)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushPlan {
    pub registry: String,
    pub images: Vec<ImagePlan>,
}

fn human(n: u64) -> String {
    const U: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < 3 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{n} B") } else { format!("{v:.1} {}", U[i]) }
}

impl PushPlan {
    pub fn bytes_to_send(&self) -> u64 {
        self.images.iter().map(ImagePlan::bytes_to_send).sum()
    }

    pub fn is_noop(&self) -> bool {
        self.images.iter().all(ImagePlan::is_noop)
    }

    /// Human-readable plan, one block per image.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for i in &self.images {
            let host = self.registry.split_once("://").map(|(_, h)| h).unwrap_or(&self.registry);
            let count = |a: fn(&BlobAction) -> bool| i.blobs.iter().filter(|b| a(&b.action)).count();
            let up = count(|a| *a == BlobAction::Upload);
            let mount = count(|a| matches!(a, BlobAction::Mount { .. }));
            let present = count(|a| *a == BlobAction::Present);
            let state = if i.is_noop() { "up to date" } else if i.manifest_present { "blobs missing" } else { "push" };
            out.push_str(&format!(
                "{} <- {}\n  {host}/{}:{} {} ({state})\n  blobs: {up} to upload ({}), {mount} to mount, {present} present\n",
                i.name,
                i.source,
                i.repository,
                i.reference,
                i.manifest_digest,
                human(i.bytes_to_send())
            ));
            if !i.is_noop() {
                for b in &i.blobs {
                    let what = match &b.action {
                        BlobAction::Upload => "upload".to_string(),
                        BlobAction::Present => "present".to_string(),
                        BlobAction::Mount { from } => format!("mount from {from}"),
                    };
                    out.push_str(&format!("    {:<12} {:>10}  {what}\n", short(&b.digest), human(b.size)));
                }
            }
        }
        out.push_str(&format!("total to send: {}\n", human(self.bytes_to_send())));
        out
    }
}

/// Computes what `push` would do, with HEAD requests only. `known_repos` are other repositories
/// rvcluster pushed earlier (e.g. from the lock file): blobs found there are mounted.
pub fn plan(client: &RegistryClient, items: &[PushItem], known_repos: &[String]) -> Result<PushPlan> {
    let mut images = Vec::new();
    // digest -> repository that will have it once earlier images of this plan are pushed.
    let mut will_have: HashMap<String, String> = HashMap::new();
    for item in items {
        if let Some(locked) = &item.locked_manifest_digest
            && *locked != item.image.manifest_digest
        {
            return Err(RegistryError::LockMismatch {
                image: item.name.clone(),
                expected: locked.clone(),
                actual: item.image.manifest_digest.clone(),
            });
        }
        let mut blobs = Vec::new();
        for d in item.image.blobs() {
            let action = if client.blob_size(&item.repository, &d.digest)?.is_some() {
                BlobAction::Present
            } else if let Some(repo) = will_have.get(&d.digest) {
                if *repo == item.repository { BlobAction::Present } else { BlobAction::Mount { from: repo.clone() } }
            } else {
                let mut found = None;
                for r in known_repos.iter().filter(|r| **r != item.repository) {
                    if client.blob_size(r, &d.digest)?.is_some() {
                        found = Some(r.clone());
                        break;
                    }
                }
                match found {
                    Some(from) => BlobAction::Mount { from },
                    None => BlobAction::Upload,
                }
            };
            will_have.entry(d.digest.clone()).or_insert_with(|| item.repository.clone());
            blobs.push(BlobPlan { digest: d.digest.clone(), size: d.size, action });
        }
        let reference = item.reference();
        let manifest_present =
            client.manifest_digest(&item.repository, &reference)?.as_deref() == Some(item.image.manifest_digest.as_str());
        images.push(ImagePlan {
            name: item.name.clone(),
            source: item.image.source.clone(),
            repository: item.repository.clone(),
            reference,
            manifest_digest: item.image.manifest_digest.clone(),
            index_digest: item.image.index_digest.clone(),
            manifest_present,
            blobs,
        });
    }
    Ok(PushPlan { registry: client.endpoint().to_string(), images })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobState {
    Present,
    Mounted { from: String },
    /// Bytes of the blob on the registry side so far.
    Progress { done: u64 },
    Retrying { attempt: u32, reason: String, resume_at: u64 },
    Uploaded { sent: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushEvent {
    Blob { image: String, digest: String, size: u64, state: BlobState },
    ManifestPushed { image: String, digest: String },
    ManifestPresent { image: String, digest: String },
    Verified { image: String, digest: String },
}

fn short(d: &str) -> &str {
    d.strip_prefix("sha256:").map(|h| &h[..h.len().min(12)]).unwrap_or(d)
}

/// One line per event, for plain (non-interactive) progress output.
impl std::fmt::Display for PushEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PushEvent::Blob { image, digest, size, state } => {
                let d = short(digest);
                match state {
                    BlobState::Present => write!(f, "{image}: blob {d} already present"),
                    BlobState::Mounted { from } => write!(f, "{image}: blob {d} mounted from {from}"),
                    BlobState::Progress { done } => write!(f, "{image}: blob {d} {} / {}", human(*done), human(*size)),
                    BlobState::Retrying { attempt, reason, resume_at } => {
                        write!(f, "{image}: blob {d} connection lost ({reason}), retry {attempt} from {}", human(*resume_at))
                    }
                    BlobState::Uploaded { sent } => write!(f, "{image}: blob {d} uploaded ({})", human(*sent)),
                }
            }
            PushEvent::ManifestPushed { image, digest } => write!(f, "{image}: manifest {digest} pushed"),
            PushEvent::ManifestPresent { image, digest } => write!(f, "{image}: manifest {digest} already tagged"),
            PushEvent::Verified { image, digest } => write!(f, "{image}: verified {digest}"),
        }
    }
}

/// What a push did, per image; the digests are what the lock file records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushedImage {
    pub name: String,
    pub repository: String,
    pub reference: String,
    pub manifest_digest: String,
    pub index_digest: Option<String>,
    pub bytes_sent: u64,
    pub uploaded: usize,
    pub mounted: usize,
    pub present: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushReport {
    pub images: Vec<PushedImage>,
}

impl PushReport {
    pub fn bytes_sent(&self) -> u64 {
        self.images.iter().map(|i| i.bytes_sent).sum()
    }
}

/// Blobs of one image uploaded at the same time.
const PARALLEL_BLOBS: usize = 3;

enum BlobDone {
    Present,
    Mounted,
    Uploaded(u64),
}

/// One blob of a plan: skip, mount (falling back to an upload) or upload.
fn push_blob(client: &RegistryClient, item: &PushItem, bp: &BlobPlan, desc: &Descriptor, events: &dyn crate::event::PushSink) -> Result<BlobDone> {
    push_blob_inner(client, item, bp, desc, events).map_err(|e| match e {
        e @ RegistryError::BlobRejected { .. } => e,
        e => RegistryError::InBlob { image: item.name.clone(), digest: desc.digest.clone(), source: Box::new(e) },
    })
}

fn push_blob_inner(client: &RegistryClient, item: &PushItem, bp: &BlobPlan, desc: &Descriptor, events: &dyn crate::event::PushSink) -> Result<BlobDone> {
    let blob_event = |state: BlobState| {
        events.push_event(PushEvent::Blob { image: item.name.clone(), digest: desc.digest.clone(), size: desc.size, state });
    };
    let mut session = None;
    match &bp.action {
        BlobAction::Present => {
            blob_event(BlobState::Present);
            return Ok(BlobDone::Present);
        }
        BlobAction::Mount { from } => match client.mount_blob(&item.repository, &desc.digest, from)? {
            Mount::Mounted => {
                blob_event(BlobState::Mounted { from: from.clone() });
                return Ok(BlobDone::Mounted);
            }
            Mount::Upload(s) => session = Some(s),
        },
        BlobAction::Upload => {
            // An earlier image of this push may have uploaded it in the meantime.
            if client.blob_size(&item.repository, &desc.digest)?.is_some() {
                blob_event(BlobState::Present);
                return Ok(BlobDone::Present);
            }
        }
    }
    let mut progress = |p: UploadProgress| match p {
        UploadProgress::Offset(done) => blob_event(BlobState::Progress { done }),
        UploadProgress::Retrying { attempt, reason, resume_at } => blob_event(BlobState::Retrying { attempt, reason, resume_at }),
    };
    let sent = client.upload_blob(&item.repository, desc, &item.image, session, &mut progress).map_err(|e| match e {
        RegistryError::BlobRejected { digest, .. } => {
            RegistryError::BlobRejected { image: format!("{} ({})", item.name, item.image.source), digest }
        }
        e => e,
    })?;
    blob_event(BlobState::Uploaded { sent });
    Ok(BlobDone::Uploaded(sent))
}

/// The error of an image whose blobs in `failed` did not go up: none, the one, or all of them
/// (the user sees every blob the registry lacks and why, not only the first).
fn blobs_failed(mut failed: Vec<RegistryError>) -> Option<RegistryError> {
    match failed.len() {
        0 => None,
        1 => failed.pop(),
        _ => {
            let first = Box::new(failed.remove(0));
            Some(RegistryError::Blobs { first, others: failed })
        }
    }
}

/// Executes a plan made by `plan` for the same items (in the same order).
pub fn push(client: &RegistryClient, items: &[PushItem], plan: &PushPlan, events: &dyn crate::event::PushSink) -> Result<PushReport> {
    let mut report = Vec::new();
    for (item, ip) in items.iter().zip(&plan.images) {
        let name = &item.name;
        let emit = |e: PushEvent| {
            events.push_event(e);
        };
        let mut done = PushedImage {
            name: name.clone(),
            repository: item.repository.clone(),
            reference: ip.reference.clone(),
            manifest_digest: item.image.manifest_digest.clone(),
            index_digest: item.image.index_digest.clone(),
            bytes_sent: 0,
            uploaded: 0,
            mounted: 0,
            present: 0,
        };
        let descs = item.image.blobs();
        let work: Vec<(&BlobPlan, &Descriptor)> =
            ip.blobs.iter().filter_map(|bp| descs.iter().find(|d| d.digest == bp.digest).map(|d| (bp, d))).collect();
        // Blobs of one image go up a few at a time (the registry hashes and stores each in
        // parallel); a worker takes the next blob as soon as its own is done. After a failure no
        // blob is started (the registry down or its disk full fails them all, each after its
        // retries); the ones under way finish or fail, and every failure is reported.
        let stop = AtomicBool::new(false);
        let results = crate::transport::pool_or(
            &work,
            PARALLEL_BLOBS,
            |(bp, desc)| {
                if stop.load(Ordering::SeqCst) {
                    return None;
                }
                let r = push_blob(client, item, bp, desc, events);
                if r.is_err() {
                    stop.store(true, Ordering::SeqCst);
                }
                Some(r)
            },
            |_| {
                stop.store(true, Ordering::SeqCst);
                Some(Err(RegistryError::BadSource { source_desc: item.image.source.clone(), reason: "upload thread panicked".into() }))
            },
        );
        let mut failed = Vec::new();
        for r in results.into_iter().flatten() {
            match r {
                Ok(BlobDone::Present) => done.present += 1,
                Ok(BlobDone::Mounted) => done.mounted += 1,
                Ok(BlobDone::Uploaded(sent)) => {
                    done.uploaded += 1;
                    done.bytes_sent += sent;
                }
                Err(e) => failed.push(e),
            }
        }
        if let Some(e) = blobs_failed(failed) {
            return Err(e);
        }
        let reference = ip.reference.clone();
        let registry_has = client.manifest_digest(&item.repository, &reference)?;
        if registry_has.as_deref() == Some(item.image.manifest_digest.as_str()) {
            emit(PushEvent::ManifestPresent { image: name.clone(), digest: item.image.manifest_digest.clone() });
        } else {
            client.put_manifest(&item.repository, &reference, &item.image.manifest, &item.image.manifest_media_type)?;
            done.bytes_sent += item.image.manifest.len() as u64;
            emit(PushEvent::ManifestPushed { image: name.clone(), digest: item.image.manifest_digest.clone() });
        }
        // Read back: the bytes under the reference must hash to the digest we recorded.
        let back = client.get_manifest(&item.repository, &reference)?;
        let actual = back.map(|m| m.digest).unwrap_or_else(|| "nothing".to_string());
        if actual != item.image.manifest_digest {
            return Err(RegistryError::VerifyFailed {
                image: name.clone(),
                expected: item.image.manifest_digest.clone(),
                actual,
            });
        }
        emit(PushEvent::Verified { image: name.clone(), digest: actual });
        report.push(done);
    }
    Ok(PushReport { images: report })
}

/// Plans and pushes in one go (for callers that do not show the plan first).
pub fn plan_and_push(
    client: &RegistryClient,
    items: &[PushItem],
    known_repos: &[String],
    events: &dyn crate::event::PushSink,
) -> Result<(PushPlan, PushReport)> {
    let p = plan(client, items, known_repos)?;
    let r = push(client, items, &p, events)?;
    Ok((p, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_totals_and_rendering() {
        let p = PushPlan {
            registry: "http://127.0.0.1:5000".into(),
            images: vec![ImagePlan {
                name: "docker.io/library/redis:7".into(),
                source: "oci-archive:redis.tar".into(),
                repository: "riscv64/redis".into(),
                reference: "7".into(),
                manifest_digest: "sha256:m".into(),
                index_digest: None,
                manifest_present: false,
                blobs: vec![
                    BlobPlan { digest: "sha256:a".into(), size: 2048, action: BlobAction::Upload },
                    BlobPlan { digest: "sha256:b".into(), size: 10, action: BlobAction::Present },
                    BlobPlan { digest: "sha256:c".into(), size: 10, action: BlobAction::Mount { from: "x/y".into() } },
                ],
            }],
        };
        assert_eq!(p.bytes_to_send(), 2048);
        assert!(!p.is_noop());
        assert_eq!(
            p.render(),
            "docker.io/library/redis:7 <- oci-archive:redis.tar\n  127.0.0.1:5000/riscv64/redis:7 sha256:m (push)\n  blobs: 1 to upload (2.0 KiB), 1 to mount, 1 present\n    a               2.0 KiB  upload\n    b                  10 B  present\n    c                  10 B  mount from x/y\ntotal to send: 2.0 KiB\n"
        );
        let e = PushEvent::Blob {
            image: "redis".into(),
            digest: format!("sha256:{}", "ab".repeat(32)),
            size: 3 * 1024 * 1024,
            state: BlobState::Retrying { attempt: 1, reason: "Peer disconnected".into(), resume_at: 1024 * 1024 },
        };
        assert_eq!(e.to_string(), "redis: blob abababababab connection lost (Peer disconnected), retry 1 from 1.0 MiB");
        let j = serde_json::to_value(&p).unwrap();
        assert_eq!(j["images"][0]["blobs"][2]["action"], "mount");
        assert_eq!(j["images"][0]["blobs"][2]["from"], "x/y");
    }

    #[test]
    fn every_failed_blob_of_an_image_is_named_with_its_cause() {
        let in_blob = |digest: &str, body: &str| RegistryError::InBlob {
            image: "docker.io/x/big:1".into(),
            digest: digest.into(),
            source: Box::new(RegistryError::Http { url: "http://r:5000".into(), what: "start upload in x/big".into(), status: 500, body: body.into() }),
        };
        assert!(blobs_failed(vec![]).is_none());
        let one = blobs_failed(vec![in_blob("sha256:a", "full")]).unwrap();
        assert_eq!(one.to_string(), "docker.io/x/big:1: blob sha256:a: registry http://r:5000 answered HTTP 500 to start upload in x/big: full");
        let two = blobs_failed(vec![in_blob("sha256:a", "full"), in_blob("sha256:b", "also full")]).unwrap();
        assert_eq!(
            two.to_string(),
            "docker.io/x/big:1: blob sha256:a: registry http://r:5000 answered HTTP 500 to start upload in x/big: full\n  \
             and docker.io/x/big:1: blob sha256:b: registry http://r:5000 answered HTTP 500 to start upload in x/big: also full"
        );
    }
}
